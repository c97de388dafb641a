/* Node settings: environment first, then the KEY=VALUE file, then defaults. */
#ifndef CGFENCE_RUNC_CONFIG_H
#define CGFENCE_RUNC_CONFIG_H

#define CFG_SOCKET    (1u << 0)
#define CFG_RUNC      (1u << 1)
#define CFG_FAIL_MODE (1u << 2)
#define CFG_SPOOL_DIR (1u << 3)
#define CFG_ALL       (CFG_SOCKET | CFG_RUNC | CFG_FAIL_MODE | CFG_SPOOL_DIR)

#define CFG_DEFAULT_FILE   "/etc/cgfence/runc.conf"
#define CFG_DEFAULT_SOCKET "/run/cgfence/cgfence.sock"
#define CFG_DEFAULT_SPOOL  "/run/cgfence/spool"

struct config {
	const char *socket;
	const char *runc;       /* NULL: search PATH */
	const char *fail_mode;  /* "closed" or "open" after config_load; anything else is an error */
	const char *spool_dir;
	const char *file;       /* the file consulted (or that would have been) */
	int file_errno;         /* why the file could not be read; 0 if read or absent */
};

/*
 * Fills the settings named in want. The file is read only when the
 * environment leaves one of them open, so a pass-through with
 * CGFENCE_REAL_RUNC set costs no file system access at all.
 */
void config_load(struct config *c, unsigned want);

#endif
