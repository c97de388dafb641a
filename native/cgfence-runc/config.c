#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Values point into this buffer, so settings outlive config_load with no allocation. */
static char file_buf[16384];

static const char *env(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

static char *trim(char *s, char *end)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	*end = '\0';
	return s;
}

static void read_file(struct config *c, unsigned missing)
{
	int fd = open(c->file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		c->file_errno = errno == ENOENT ? 0 : errno;
		return;
	}
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, file_buf + n, sizeof(file_buf) - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			c->file_errno = errno;
			close(fd);
			return;
		}
		if (r == 0 || (n += (size_t)r) == sizeof(file_buf) - 1)
			break;
	}
	close(fd);
	file_buf[n] = '\0';

	for (char *line = file_buf; *line;) {
		char *nl = strchr(line, '\n');
		char *end = nl ? nl : line + strlen(line);
		char *next = nl ? nl + 1 : end;
		char *eq = memchr(line, '=', (size_t)(end - line));
		char *k = line;
		while (*k == ' ' || *k == '\t')
			k++;
		if (eq && *k != '#') {
			char *key = trim(k, eq);
			char *val = trim(eq + 1, end);
			size_t vl = strlen(val);
			/* Tolerate shell-style quoting, since the file looks like one. */
			if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0]) {
				val[vl - 1] = '\0';
				val++;
			}
			/* Unknown keys are ignored so an older launcher accepts a newer file. */
			if ((missing & CFG_SOCKET) && strcmp(key, "socket") == 0)
				c->socket = val;
			else if ((missing & CFG_RUNC) && strcmp(key, "runc") == 0)
				c->runc = val;
			else if ((missing & CFG_FAIL_MODE) && strcmp(key, "fail_mode") == 0)
				c->fail_mode = val;
			else if ((missing & CFG_SPOOL_DIR) && strcmp(key, "spool_dir") == 0)
				c->spool_dir = val;
		}
		line = next;
	}
}

void config_load(struct config *c, unsigned want)
{
	memset(c, 0, sizeof(*c));
	unsigned missing = 0;

	if (want & CFG_SOCKET && !(c->socket = env("CGFENCE_SOCKET")))
		missing |= CFG_SOCKET;
	if (want & CFG_RUNC && !(c->runc = env("CGFENCE_REAL_RUNC")))
		missing |= CFG_RUNC;
	if (want & CFG_FAIL_MODE && !(c->fail_mode = env("CGFENCE_FAIL_MODE")))
		missing |= CFG_FAIL_MODE;
	if (want & CFG_SPOOL_DIR && !(c->spool_dir = env("CGFENCE_SPOOL_DIR")))
		missing |= CFG_SPOOL_DIR;

	c->file = env("CGFENCE_RUNC_CONFIG");
	if (!c->file)
		c->file = CFG_DEFAULT_FILE;
	if (missing)
		read_file(c, missing);

	/* An empty value in the file means "use the default", as in the environment. */
	if (c->socket && !*c->socket)
		c->socket = NULL;
	if (c->runc && !*c->runc)
		c->runc = NULL;
	if (c->fail_mode && !*c->fail_mode)
		c->fail_mode = NULL;
	if (c->spool_dir && !*c->spool_dir)
		c->spool_dir = NULL;

	if (want & CFG_SOCKET && !c->socket)
		c->socket = CFG_DEFAULT_SOCKET;
	if (want & CFG_FAIL_MODE && !c->fail_mode)
		c->fail_mode = "closed";
	if (want & CFG_SPOOL_DIR && !c->spool_dir)
		c->spool_dir = CFG_DEFAULT_SPOOL;
}
