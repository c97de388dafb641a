#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Values point into this buffer, so settings outlive config_load with no allocation. */
static char file_buf[CFG_MAX_FILE + 1];

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

__attribute__((format(printf, 2, 3))) static void error(struct config *c, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	vsnprintf(c->error, sizeof(c->error), f, ap);
	va_end(ap);
}

int config_parse(struct config *c, char *text, size_t n, unsigned missing)
{
	static const char *const keys[] = { "socket", "runc", "fail_mode", "spool_dir", "node_hint" };
	static const unsigned bits[] = { CFG_SOCKET, CFG_RUNC, CFG_FAIL_MODE, CFG_SPOOL_DIR, CFG_NODE_HINT };
	const char **slots[] = { &c->socket, &c->runc, &c->fail_mode, &c->spool_dir, &c->node_hint };
	int seen[5] = { 0 };

	if (memchr(text, '\0', n))
		return error(c, "%s: a NUL byte is not text", c->file), -1;
	text[n] = '\0';
	int lineno = 0;
	for (char *line = text; *line;) {
		char *nl = strchr(line, '\n');
		char *end = nl ? nl : line + strlen(line);
		char *next = nl ? nl + 1 : end;
		lineno++;
		char *eq = memchr(line, '=', (size_t)(end - line));
		char *k = line;
		while (*k == ' ' || *k == '\t' || *k == '\r')
			k++;
		if (k == end || *k == '#') {
			line = next;
			continue;
		}
		if (!eq)
			return error(c, "%s line %d: expected KEY=VALUE or a # comment", c->file, lineno), -1;
		char *key = trim(k, eq);
		char *val = trim(eq + 1, end);
		size_t vl = strlen(val);
		/* Shell-style quoting, since the file looks like one; an open quote is an error. */
		if (vl && (val[0] == '"' || val[0] == '\'')) {
			if (vl < 2 || val[vl - 1] != val[0])
				return error(c, "%s line %d: %s has an unterminated quote", c->file, lineno, key), -1;
			val[vl - 1] = '\0';
			val++;
		}
		/* Unknown keys are ignored so an older launcher accepts a newer file. */
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			if (strcmp(key, keys[i]) != 0)
				continue;
			if (seen[i]++)
				return error(c, "%s line %d: %s is set twice", c->file, lineno, key), -1;
			if (missing & bits[i])
				*slots[i] = val;
		}
		line = next;
	}
	return 0;
}

static void read_file(struct config *c, unsigned missing)
{
	int fd = open(c->file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			error(c, "cannot read %s (%s)", c->file, strerror(errno));
		return;
	}
	size_t n = 0;
	for (;;) {
		/* One byte more than allowed: reading it means the file is too large, not cut. */
		ssize_t r = read(fd, file_buf + n, sizeof(file_buf) - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			error(c, "cannot read %s (%s)", c->file, strerror(errno));
			close(fd);
			return;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > CFG_MAX_FILE) {
			close(fd);
			error(c, "%s is larger than %d bytes", c->file, CFG_MAX_FILE);
			return;
		}
	}
	close(fd);
	config_parse(c, file_buf, n, missing);
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
	if (want & CFG_NODE_HINT && !(c->node_hint = env("CGFENCE_NODE_HINT")))
		missing |= CFG_NODE_HINT;

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
	if (c->node_hint && !*c->node_hint)
		c->node_hint = NULL;

	if (want & CFG_SOCKET && !c->socket)
		c->socket = CFG_DEFAULT_SOCKET;
	if (want & CFG_FAIL_MODE && !c->fail_mode)
		c->fail_mode = "closed";
	if (want & CFG_SPOOL_DIR && !c->spool_dir)
		c->spool_dir = CFG_DEFAULT_SPOOL;
	if (want & CFG_NODE_HINT && !c->node_hint)
		c->node_hint = CFG_DEFAULT_NODE_HINT;
}
