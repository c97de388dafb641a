#define _GNU_SOURCE
#include "spool.h"
#include "json.h"
#include "runc-log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path[PATH_MAX];

static int mkdir_p(char *dir)
{
	for (char *p = dir + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		/* 0700: records name containers and bundles; only root reads them. */
		int rc = mkdir(dir, 0700);
		*p = c;
		if (rc < 0 && errno != EEXIST)
			return -1;
		if (c == '\0')
			return 0;
	}
}

int spool_fail_open(const char *spool_dir, const char *id, const char *bundle, const char *reason,
		    const char **path_out)
{
	char storage[2048], ts[RFC3339_LEN];
	struct sbuf b;

	int n = snprintf(path, sizeof(path), "%s", spool_dir);
	*path_out = spool_dir;
	if (n <= 0 || (size_t)n + sizeof(SPOOL_FAIL_OPEN_FILE) + 1 >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (mkdir_p(path) < 0)
		return -1;
	snprintf(path + n, sizeof(path) - (size_t)n, "/%s", SPOOL_FAIL_OPEN_FILE);
	*path_out = path;

	rfc3339_now(ts);
	sb_init(&b, storage, sizeof(storage));
	sb_puts(&b, "{\"ts\":");
	sb_json_str(&b, ts);
	sb_puts(&b, ",\"type\":\"agent\",\"action\":\"fail-open\",\"container_id\":");
	sb_json_str(&b, id);
	sb_puts(&b, ",\"bundle\":");
	sb_json_str(&b, bundle);
	sb_puts(&b, ",\"reason\":");
	sb_json_str(&b, reason);
	sb_puts(&b, "}\n");
	if (b.oom) {
		errno = ENOMEM;
		return -1;
	}

	int rc = -1;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		/* One write under O_APPEND: concurrent creates cannot interleave a line. */
		rc = write_all(fd, b.p, b.len);
		int e = errno;
		close(fd);
		errno = e;
	}
	sb_free(&b);
	return rc;
}
