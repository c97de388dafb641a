/* What the launcher itself reads from a bundle's config.json (the daemon reads the rest). */
#ifndef CGFENCE_RUNC_BUNDLE_CONFIG_H
#define CGFENCE_RUNC_BUNDLE_CONFIG_H

#include <stddef.h>

#define BUNDLE_MAX_CONFIG (4 << 20)

struct bundle_config {
	int annotated; /* some annotation key starts with cgfence.io/, or looks like a misspelling of it */
	int terminal;  /* process.terminal */
};

/* Parses config.json text. Returns 0, or -1 with why (static text) for anything runc might read
 * differently: invalid JSON or UTF-8, a non-object where runc wants an object, and so on. */
int bundle_config_parse(const char *text, size_t n, struct bundle_config *out, const char **why);

/*
 * Reads and parses BUNDLE/config.json; -1 with errbuf set on failure. With annotated_only the
 * caller wants nothing but `annotated`, and a file whose bytes contain "cgfence.io/" anywhere
 * is reported annotated without being parsed (see bundle-config.c).
 */
int bundle_config_read(const char *bundle, int annotated_only, struct bundle_config *out, char *errbuf, size_t errn);

#endif
