/* One JSON-line request and its one-line reply over the daemon's unix socket. */
#ifndef CGFENCE_RUNC_DAEMON_CLIENT_H
#define CGFENCE_RUNC_DAEMON_CLIENT_H

#include <stddef.h>

#define DAEMON_TIMEOUT_SEC 60

enum dc_status {
	DC_OK,
	DC_REFUSED,      /* the daemon said no; msg is its reason */
	DC_UNREACHABLE,  /* connect failed: no daemon is listening (fail_mode applies) */
	DC_BROKEN        /* connected, but no usable answer; msg says why */
};

struct dc_result {
	enum dc_status status;
	const char *msg;   /* valid until the next dc_call */
};

enum dc_status dc_call(const char *socket_path, const char *req, size_t len, struct dc_result *r);

#endif
