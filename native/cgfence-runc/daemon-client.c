#define _GNU_SOURCE
#include "daemon-client.h"
#include "reply.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define STR_(x) #x
#define STR(x)	STR_(x)

/* A reply line longer than this is an error; prepare and attach answer in a few hundred bytes. */
static char reply[65536];
static char why[512];
static char refusal[8192];
/*
 * Bytes read past a reply line: a pushed line may arrive in the same read as a reply. They
 * belong to the connection `pending_fd`; any other fd starts empty.
 */
static size_t pending;
static int pending_fd = -1;


__attribute__((format(printf, 4, 5))) static enum dc_status fail(struct dc_result *r, enum dc_status st, int fd,
								 const char *fmt, ...)
{
	va_list ap;

	if (fd >= 0)
		close(fd);
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	r->status = st;
	r->msg = why;
	return st;
}

static const char *err_text(int e)
{
	/* A timed-out blocking socket reports EAGAIN, whose strerror text misleads. */
	if (e == EAGAIN || e == EWOULDBLOCK)
		return "timed out after " STR(DAEMON_TIMEOUT_SEC) " s";
	return strerror(e);
}

enum dc_status dc_connect(const char *socket_path, int *fdp, struct dc_result *r)
{
	struct sockaddr_un sa;
	size_t plen = strlen(socket_path);

	*fdp = -1;
	r->gone = 0;
	r->no_fence = 0;
	r->push_offered = 0;
	r->pushed = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (plen >= sizeof(sa.sun_path))
		return fail(r, DC_UNREACHABLE, -1, "%s", strerror(ENAMETOOLONG));
	memcpy(sa.sun_path, socket_path, plen);

	/* CLOEXEC: preserved fds and the console socket go to runc, this must not. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(r, DC_BROKEN, -1, "cannot create a socket: %s", strerror(errno));
	/* A new connection on the number of one closed elsewhere: nothing of that one is kept. */
	if (pending_fd == fd)
		pending_fd = -1;

	/* Set before connect: on AF_UNIX the send timeout also bounds a connect to a full backlog. */
	struct timeval tv = { .tv_sec = DAEMON_TIMEOUT_SEC, .tv_usec = 0 };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

	int rc;
	do
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		return fail(r, DC_UNREACHABLE, fd, "%s", err_text(errno));
	*fdp = fd;
	r->status = DC_OK;
	r->msg = NULL;
	return DC_OK;
}

/* A daemon that went away (restarted, say) between two requests on a kept connection. */
static int conn_gone(int e)
{
	return e == EPIPE || e == ECONNRESET;
}

enum dc_status dc_request(int *fdp, const char *req, size_t len, struct dc_result *r)
{
	int fd = *fdp;
	r->gone = 0;
	while (len) {
		/* MSG_NOSIGNAL: a daemon that vanishes must give an error, not kill us with SIGPIPE. */
		ssize_t w = send(fd, req, len, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			*fdp = -1;
			fail(r, DC_BROKEN, fd, "sending the request failed: %s", err_text(e));
			r->gone = conn_gone(e);
			return DC_BROKEN;
		}
		req += w;
		len -= (size_t)w;
	}
	return dc_read(fdp, -1, r);
}

/* Waits up to timeout_ms (< 0: the socket's own timeout) for fd to be readable; 0 when it is not. */
static int readable(int fd, int timeout_ms)
{
	if (timeout_ms < 0)
		return 1;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int rc;
	do
		rc = poll(&p, 1, timeout_ms);
	while (rc < 0 && errno == EINTR);
	return rc != 0; /* an error: let recv report it */
}

enum dc_status dc_read(int *fdp, int timeout_ms, struct dc_result *r)
{
	int fd = *fdp;
	*fdp = -1;
	r->gone = 0;
	r->no_fence = 0;
	r->push_offered = 0;
	r->pushed = 0;
	r->pid = 0;
	if (pending_fd != fd)
		pending = 0;
	pending_fd = -1;

	size_t n = pending;
	char *nl = memchr(reply, '\n', n);
	int got_any = n > 0;
	while (!nl) {
		if (n == sizeof(reply) - 1)
			return fail(r, DC_BROKEN, fd, "the reply is longer than %zu bytes", sizeof(reply) - 2);
		if (!readable(fd, timeout_ms)) {
			/* Nothing yet: the connection stays as it is, bytes included. */
			*fdp = fd;
			pending = n;
			pending_fd = fd;
			r->status = DC_PENDING;
			r->msg = NULL;
			return DC_PENDING;
		}
		ssize_t got = recv(fd, reply + n, sizeof(reply) - 1 - n, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			fail(r, DC_BROKEN, fd, "reading the reply failed: %s", err_text(e));
			r->gone = !got_any && conn_gone(e);
			return DC_BROKEN;
		}
		if (got == 0) {
			fail(r, DC_BROKEN, fd, "%s", "the daemon closed the connection without replying");
			r->gone = !got_any;
			return DC_BROKEN;
		}
		got_any = 1;
		nl = memchr(reply + n, '\n', (size_t)got);
		n += (size_t)got;
	}
	size_t line = (size_t)(nl - reply);
	/* Kept for the next request with whatever followed the line. */
	*fdp = fd;
	pending = n - line - 1;
	pending_fd = fd;

	if (line == 0) {
		*fdp = -1;
		pending_fd = -1;
		return fail(r, DC_BROKEN, fd, "%s", "the reply was empty");
	}
	char detail[256];
	struct reply_info info;
	enum reply_kind k = reply_parse_info(reply, line, refusal, sizeof(refusal), &info);
	r->no_fence = info.no_fence;
	r->push_offered = info.push_offered;
	r->pushed = info.pushed;
	r->pid = info.pid;
	enum dc_status st;
	switch (k) {
	case REPLY_OK:
		r->status = DC_OK;
		r->msg = NULL;
		st = DC_OK;
		break;
	case REPLY_REFUSED:
		r->status = DC_REFUSED;
		r->msg = refusal;
		st = DC_REFUSED;
		break;
	default:
		snprintf(detail, sizeof(detail), "%.200s", refusal);
		reply[line] = '\0';
		if (line > 200)
			memcpy(reply + 197, "...", 4);
		*fdp = -1;
		pending_fd = -1;
		return fail(r, DC_BROKEN, fd, "unexpected reply (%s): %.200s", detail, reply);
	}
	memmove(reply, nl + 1, pending);
	return st;
}

enum dc_status dc_call(const char *socket_path, const char *req, size_t len, struct dc_result *r)
{
	int fd;
	enum dc_status st = dc_connect(socket_path, &fd, r);
	if (st != DC_OK)
		return st;
	st = dc_request(&fd, req, len, r);
	if (fd >= 0)
		close(fd);
	return st;
}
