/* Node settings: environment first, then the KEY=VALUE file, then defaults. */
#ifndef CGFENCE_RUNC_CONFIG_H
#define CGFENCE_RUNC_CONFIG_H

#include <stddef.h>

#define CFG_SOCKET    (1u << 0)
#define CFG_RUNC      (1u << 1)
#define CFG_FAIL_MODE (1u << 2)
#define CFG_SPOOL_DIR (1u << 3)
#define CFG_NODE_HINT (1u << 4)
#define CFG_ALL	      (CFG_SOCKET | CFG_RUNC | CFG_FAIL_MODE | CFG_SPOOL_DIR | CFG_NODE_HINT)

#define CFG_MAX_FILE 65536

#define CFG_DEFAULT_FILE   "/etc/cgfence/runc.conf"
#define CFG_DEFAULT_SOCKET "/run/cgfence/cgfence.sock"
#define CFG_DEFAULT_SPOOL  "/run/cgfence/spool"
/* Written by the daemon at start: whether the node has a defaultProfile (see docs/launcher.md). */
#define CFG_DEFAULT_NODE_HINT "/var/lib/cgfence/launcher-node.conf"

struct config {
	const char *socket;
	const char *runc;      /* NULL: search PATH */
	const char *fail_mode; /* "closed" or "open" after config_load; anything else is an error */
	const char *spool_dir;
	const char *node_hint;
	const char *file; /* the file consulted (or that would have been) */
	char error[512];  /* why the file is unusable; "" if read (or absent) and valid */
};

/* Parses text[0..n) (n < CFG_MAX_FILE + 1 bytes, text writable, one spare byte) into the
 * settings named in missing. Returns -1 with c->error set on the first bad line. */
int config_parse(struct config *c, char *text, size_t n, unsigned missing);

/*
 * Fills the settings named in want. The file is read only when the
 * environment leaves one of them open, so a pass-through with
 * CGFENCE_REAL_RUNC set costs no file system access at all.
 */
void config_load(struct config *c, unsigned want);

#endif
