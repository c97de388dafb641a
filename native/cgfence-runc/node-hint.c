#define _GNU_SOURCE
#include "node-hint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_HINT 4096
#define KEY	 "default_profile="

enum node_hint node_hint_parse(char *text, size_t n, const char **why)
{
	int found = 0;
	enum node_hint h = HINT_UNKNOWN;
	if (memchr(text, '\0', n))
		return *why = "a NUL byte is not text", HINT_UNKNOWN;
	text[n] = '\0';
	for (char *line = text; *line;) {
		char *nl = strchr(line, '\n');
		char *next = nl ? nl + 1 : line + strlen(line);
		if (!nl)
			return *why = "the last line is not complete", HINT_UNKNOWN;
		*nl = '\0';
		if (line[0] != '#' && line[0] != '\0') {
			if (strncmp(line, KEY, sizeof(KEY) - 1))
				return *why = "a line other than default_profile=NAME", HINT_UNKNOWN;
			if (found++)
				return *why = "default_profile is set twice", HINT_UNKNOWN;
			h = line[sizeof(KEY) - 1] ? HINT_DEFAULT_PROFILE : HINT_NO_DEFAULT_PROFILE;
		}
		line = next;
	}
	if (!found)
		return *why = "no default_profile line", HINT_UNKNOWN;
	return h;
}

enum node_hint node_hint_read(const char *path, char *errbuf, size_t errn)
{
	char buf[MAX_HINT + 1];
	const char *why;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(errbuf, errn, "cannot read %s (%s)", path, strerror(errno));
		return HINT_UNKNOWN;
	}
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof(buf) - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(errbuf, errn, "cannot read %s (%s)", path, strerror(errno));
			close(fd);
			return HINT_UNKNOWN;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n == sizeof(buf)) {
			snprintf(errbuf, errn, "%s is larger than %d bytes", path, MAX_HINT - 1);
			close(fd);
			return HINT_UNKNOWN;
		}
	}
	close(fd);
	enum node_hint h = node_hint_parse(buf, n, &why);
	if (h == HINT_UNKNOWN)
		snprintf(errbuf, errn, "%s: %s", path, why);
	return h;
}
