/* Finding and running the real runc. */
#ifndef CGFENCE_RUNC_EXEC_H
#define CGFENCE_RUNC_EXEC_H

#include <signal.h>

/*
 * configured: CGFENCE_REAL_RUNC / runc=, or NULL to search PATH for "runc".
 * Never resolves to this very binary, which would exec itself forever when
 * cgfence-runc is installed under the name runc. Returns NULL with errno
 * (ELOOP when the only candidate is ourselves).
 */
const char *runc_resolve(const char *configured);

/* Replaces this process with runc, argv[0] swapped; returns only on failure. */
void runc_exec(const char *runc, char **argv);

/*
 * vfork + exec + wait. quiet sends stdio to /dev/null. Returns the wait
 * status, or -1 with errno if runc could not be started at all.
 */
int runc_run(const char *runc, char **argv, int quiet);

/* The signal mask runc_run's children get (the caller may block signals meanwhile). */
void runc_child_sigmask(const sigset_t *mask);

/* A wait status as an exit code, the way a shell reports it. */
int exit_code(int status);

#endif
