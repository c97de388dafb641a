#define _GNU_SOURCE
#include "runc-log.h"
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

void rfc3339_now(char out[RFC3339_LEN])
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	/* gmtime_r, unlike localtime, never reads the time zone files. */
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, RFC3339_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
	long ns = ts.tv_nsec;
	char *p = out + n;
	*p++ = '.';
	for (int i = 8; i >= 0; i--) {
		p[i] = (char)('0' + ns % 10);
		ns /= 10;
	}
	p += 9;
	*p++ = 'Z';
	*p = '\0';
}

void runclog_append(const char *path, int json, const char *level, const char *msg)
{
	char storage[1024], ts[RFC3339_LEN];
	struct sbuf b;

	rfc3339_now(ts);
	sb_init(&b, storage, sizeof(storage));
	if (json) {
		/* Field order and names as logrus writes them; the shim decodes level, msg, time. */
		sb_puts(&b, "{\"level\":");
		sb_json_str(&b, level);
		sb_puts(&b, ",\"msg\":");
		sb_json_str(&b, msg);
		sb_puts(&b, ",\"time\":");
		sb_json_str(&b, ts);
		sb_puts(&b, "}\n");
	} else {
		sb_puts(&b, "time=\"");
		sb_puts(&b, ts);
		sb_puts(&b, "\" level=");
		sb_puts(&b, level);
		sb_puts(&b, " msg=\"");
		sb_text_str(&b, msg);
		sb_puts(&b, "\"\n");
	}
	if (!b.oom) {
		/* runc opens its log the same way; one write keeps the line whole under O_APPEND. */
		int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (fd >= 0) {
			(void)write_all(fd, b.p, b.len);
			close(fd);
		}
	}
	sb_free(&b);
}

void runclog_report(const char *path, int json, const char *level, const char *msg)
{
	char storage[1024];
	struct sbuf b;

	sb_init(&b, storage, sizeof(storage));
	sb_puts(&b, msg);
	sb_put(&b, "\n", 1);
	if (!b.oom)
		(void)write_all(2, b.p, b.len);
	sb_free(&b);
	if (path)
		runclog_append(path, json, level, msg);
}
