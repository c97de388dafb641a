/*
 * Errors in runc's own log format. The runc.v2 shim turns the last
 * level=error entry of the --log file into "OCI runtime create failed:
 * <msg>", so that file, not stderr, is what a ctr or kubelet user sees.
 */
#ifndef CGFENCE_RUNC_LOG_H
#define CGFENCE_RUNC_LOG_H

#include <stddef.h>

#define RFC3339_LEN 40

/* UTC, nanoseconds: 2026-11-25T12:00:00.123456789Z */
void rfc3339_now(char out[RFC3339_LEN]);

/* Appends one entry to path in logrus json or text form; best effort. */
void runclog_append(const char *path, int json, const char *level, const char *msg);

/* msg to stderr, and to the runc log when there is one. */
void runclog_report(const char *path, int json, const char *level, const char *msg);

/* write(2) until done; 0 on success, -1 with errno. */
int write_all(int fd, const char *p, size_t n);

#endif
