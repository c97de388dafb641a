/*
 * The state runc sends to its seccomp agent with the notify fd: an OCI ContainerProcessState
 * (json.Marshal output), of which the holder needs "metadata" (the container key cgfence put
 * in linux.seccomp.listenerMetadata) and "pid".
 */
#pragma once

#include <stddef.h>

#define RUNC_STATE_MAX (1 << 20) /* a container state is a few KiB */

/*
 * 1: s[0..n) is a complete state, key (NUL-terminated, 1..keyn-1 bytes) and pid (1..INT_MAX)
 * filled; 0: a prefix of one, read more; -1: not a usable state, *why says why. Strict: the
 * JSON and its UTF-8 must be valid, both members present with the right types, the key must
 * fit whole (never cut short) and contain no NUL; nothing may follow the object.
 */
int runc_state_parse(const char *s, size_t n, char *key, size_t keyn, int *pid, const char **why);
