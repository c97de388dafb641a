/* The daemon's one-line answer to prepare and attach: {"ok":true,...} or {"ok":false,"error":"..."}. */
#ifndef CGFENCE_RUNC_REPLY_H
#define CGFENCE_RUNC_REPLY_H

#include <stddef.h>

enum reply_kind { REPLY_OK, REPLY_REFUSED, REPLY_MALFORMED };

/*
 * Reads line[0..n) as one strict JSON object (any key order, other members ignored). On
 * REPLY_REFUSED msg holds the daemon's reason (cut to msgn with "..." only for display); on
 * REPLY_MALFORMED it says what is wrong with the reply.
 */
enum reply_kind reply_parse(const char *line, size_t n, char *msg, size_t msgn);

/* reply_parse, and on REPLY_OK *no_fence = 1 when the reply says "fence":false (prepare's
 * "nothing to fence"), else 0. no_fence may be NULL. */
enum reply_kind reply_parse_fence(const char *line, size_t n, char *msg, size_t msgn, int *no_fence);

/* What a reply says besides yes or no. */
struct reply_info {
	int no_fence;	  /* prepare: "fence":false, nothing to attach */
	int push_offered; /* prepare: "push":true, the attach's outcome will come unasked */
	int pushed;	  /* "pushed":"attach": this line is that outcome, not a reply to a request */
	long pid;	  /* with pushed and ok: the init pid the daemon fenced (0 when absent or bad) */
};

/* reply_parse_fence, filling *info (which may be NULL). */
enum reply_kind reply_parse_info(const char *line, size_t n, char *msg, size_t msgn, struct reply_info *info);

#endif
