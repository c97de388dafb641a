/*
 * The daemon's note to the launcher (STATE_DIR/launcher-node.conf, written at every daemon
 * start): whether the node has a defaultProfile, which fences containers that ask for nothing.
 */
#ifndef CGFENCE_RUNC_NODE_HINT_H
#define CGFENCE_RUNC_NODE_HINT_H

#include <stddef.h>

enum node_hint { HINT_NO_DEFAULT_PROFILE, HINT_DEFAULT_PROFILE, HINT_UNKNOWN };

/* Parses the file's text (writable, n + 1 bytes); HINT_UNKNOWN with why unless exactly one
 * default_profile= line is there. */
enum node_hint node_hint_parse(char *text, size_t n, const char **why);

/* Reads path; HINT_UNKNOWN (missing, unreadable, malformed) with errbuf set. */
enum node_hint node_hint_read(const char *path, char *errbuf, size_t errn);

#endif
