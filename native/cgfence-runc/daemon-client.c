#define _GNU_SOURCE
#include "daemon-client.h"
#include "reply.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define STR_(x) #x
#define STR(x)	STR_(x)

/* A reply longer than this is an error (drained, not kept); prepare and attach answer in a few hundred bytes. */
static char reply[65536];
static char why[512];
static char refusal[8192];

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
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (plen >= sizeof(sa.sun_path))
		return fail(r, DC_UNREACHABLE, -1, "%s", strerror(ENAMETOOLONG));
	memcpy(sa.sun_path, socket_path, plen);

	/* CLOEXEC: preserved fds and the console socket go to runc, this must not. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(r, DC_BROKEN, -1, "cannot create a socket: %s", strerror(errno));

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
	*fdp = -1;
	r->gone = 0;
	r->no_fence = 0;
	while (len) {
		/* MSG_NOSIGNAL: a daemon that vanishes must give an error, not kill us with SIGPIPE. */
		ssize_t w = send(fd, req, len, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			fail(r, DC_BROKEN, fd, "sending the request failed: %s", err_text(e));
			r->gone = conn_gone(e);
			return DC_BROKEN;
		}
		req += w;
		len -= (size_t)w;
	}

	size_t n = 0;
	int have_line = 0, overflow = 0, got_any = 0;
	for (;;) {
		char sink[4096];
		int full = n == sizeof(reply) - 1;
		char *dst = full ? sink : reply + n;
		size_t room = full ? sizeof(sink) : sizeof(reply) - 1 - n;
		ssize_t got = recv(fd, dst, room, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			fail(r, DC_BROKEN, fd, "reading the reply failed: %s", err_text(e));
			r->gone = !got_any && conn_gone(e);
			return DC_BROKEN;
		}
		if (got == 0)
			break;
		got_any = 1;
		char *nl = memchr(dst, '\n', (size_t)got);
		if (!full)
			n += nl ? (size_t)(nl - dst) : (size_t)got;
		else if (!nl || nl > dst)
			overflow = 1;
		if (nl) {
			have_line = 1;
			break;
		}
	}
	/* Kept for the next request only after a whole line: nothing of this reply is left unread. */
	if (have_line && !overflow)
		*fdp = fd;
	else
		close(fd);
	reply[n] = '\0';
	if (n == 0) {
		fail(r, DC_BROKEN, *fdp, "%s",
		     have_line ? "the reply was empty" : "the daemon closed the connection without replying");
		*fdp = -1;
		r->gone = !got_any;
		return DC_BROKEN;
	}

	if (overflow)
		return fail(r, DC_BROKEN, -1, "the reply is longer than %zu bytes", sizeof(reply) - 1);
	char detail[256];
	switch (reply_parse_fence(reply, n, refusal, sizeof(refusal), &r->no_fence)) {
	case REPLY_OK:
		r->status = DC_OK;
		r->msg = NULL;
		return DC_OK;
	case REPLY_REFUSED:
		r->status = DC_REFUSED;
		r->msg = refusal;
		return DC_REFUSED;
	default:
		snprintf(detail, sizeof(detail), "%.200s", refusal);
		if (n > 200)
			memcpy(reply + 197, "...", 4);
		fail(r, DC_BROKEN, *fdp, "unexpected reply (%s): %.200s", detail, reply);
		*fdp = -1;
		return DC_BROKEN;
	}
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
