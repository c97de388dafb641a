/* JSON-line requests and their one-line replies over the daemon's unix socket. */
#ifndef CGFENCE_RUNC_DAEMON_CLIENT_H
#define CGFENCE_RUNC_DAEMON_CLIENT_H

#include <stddef.h>

#define DAEMON_TIMEOUT_SEC 60

enum dc_status {
	DC_OK,
	DC_REFUSED,	/* the daemon said no; msg is its reason */
	DC_UNREACHABLE, /* connect failed: no daemon is listening (fail_mode applies) */
	DC_BROKEN,	/* connected, but no usable answer; msg says why */
	DC_PENDING	/* dc_read with a timeout: no line yet, the connection is kept */
};

struct dc_result {
	enum dc_status status;
	const char *msg;  /* valid until the next call */
	int no_fence;	  /* DC_OK with "fence":false: nothing to attach */
	int gone;	  /* DC_BROKEN because the connection was closed before any reply byte */
	int push_offered; /* prepare's "push":true: the attach's outcome will come unasked */
	int pushed;	  /* this line was that outcome ("pushed":"attach"), not a reply */
	long pid;	  /* with pushed: the init pid the daemon fenced */
};

/* Connects (DC_OK, *fd set) or says why not (DC_UNREACHABLE, DC_BROKEN). */
enum dc_status dc_connect(const char *socket_path, int *fd, struct dc_result *r);

/*
 * One request and its one-line reply on a connected socket, which stays open for the next
 * request (the daemon answers several in sequence). On any failure it is closed (*fd = -1).
 */
enum dc_status dc_request(int *fd, const char *req, size_t len, struct dc_result *r);

/*
 * Reads the next line of a connected socket: a reply, or a line the daemon pushed unasked.
 * timeout_ms < 0 waits as long as the socket's own timeout; otherwise DC_PENDING after
 * timeout_ms with no whole line (the socket stays open, *fd kept).
 */
enum dc_status dc_read(int *fd, int timeout_ms, struct dc_result *r);

/* dc_connect, dc_request, close. */
enum dc_status dc_call(const char *socket_path, const char *req, size_t len, struct dc_result *r);

#endif
