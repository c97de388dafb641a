/*
 * Records that the daemon cannot write itself because it is down. The
 * daemon moves them into the audit log when it comes back, so a fail-open
 * create is never silent.
 */
#ifndef CGFENCE_RUNC_SPOOL_H
#define CGFENCE_RUNC_SPOOL_H

#define SPOOL_FAIL_OPEN_FILE "fail-open.jsonl"

/* Returns 0, or -1 with errno; *path_out names the file for messages. */
int spool_fail_open(const char *spool_dir, const char *id, const char *bundle, const char *reason,
		    const char **path_out);

#endif
