#define _GNU_SOURCE
#include "bundle-config.h"
#include "strict-json.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PREFIX "cgfence.io/"
#define DOMAIN "cgfence.io"

/* Edit distance of two short strings (the caller bounds their length). */
static size_t distance(const char *a, size_t na, const char *b, size_t nb)
{
	size_t row[64 + 1];
	for (size_t j = 0; j <= nb; j++)
		row[j] = j;
	for (size_t i = 1; i <= na; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= nb; j++) {
			size_t up = row[j];
			size_t best = diag + ((a[i - 1] | 0x20) == (b[j - 1] | 0x20) ? 0 : 1);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[nb];
}

/* c, g, f, e (optional), n, c in order, each at most one non-word byte apart; any case. */
static int cgfenc_shape(const char *s, size_t n)
{
	static const char want[] = "cgfenc";
	for (size_t start = 0; start < n; start++) {
		size_t i = start, w = 0;
		while (w < sizeof(want) - 1 && i < n) {
			char c = s[i] | 0x20;
			if (c == want[w]) {
				i++, w++;
				continue;
			}
			if (want[w] == 'e') { /* e is optional */
				w++;
				continue;
			}
			int word = (c >= 'a' && c <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_';
			if (w == 0 || word || (i > 0 && !(((s[i - 1] | 0x20) >= 'a' && (s[i - 1] | 0x20) <= 'z'))))
				break;
			i++; /* one non-word byte between two letters */
		}
		if (w == sizeof(want) - 1)
			return 1;
	}
	return 0;
}

/*
 * A key the daemon would warn about as a misspelt cgfence.io/ key (src/daemon/annotation-typos.ts,
 * same rule): such a container goes to the daemon, which writes the warning record.
 */
static int looks_like_cgfence(const char *key)
{
	const char *sep = strrchr(key, '/');
	if (!sep) {
		const char *dot = strrchr(key, '.'), *us = strrchr(key, '_');
		sep = dot > us ? dot : us;
	}
	size_t n = sep ? (size_t)(sep - key) : strlen(key);
	if (n <= 64 && distance(key, n, DOMAIN, sizeof(DOMAIN) - 1) <= 3)
		return 1;
	return cgfenc_shape(key, n);
}

/*
 * Go's encoding/json, which runc uses, matches member names to its struct fields without
 * regard to case, so "Annotations" are runc's annotations too: every spelling counts, and
 * a container that might be annotated is treated as annotated.
 */
int bundle_config_parse(const char *text, size_t n, struct bundle_config *out, const char **why)
{
	struct json_object *v;
	memset(out, 0, sizeof(*out));
	if (strict_json_parse(text, n, 64, 0, &v, why) != SJ_OK)
		return -1;
	int rc = -1;
	if (!json_object_is_type(v, json_type_object)) {
		*why = "the top level is not an object";
		goto out;
	}
	json_object_object_foreach(v, key, val)
	{
		if (!strcasecmp(key, "annotations")) {
			if (json_object_is_type(val, json_type_null))
				continue;
			if (!json_object_is_type(val, json_type_object)) {
				*why = "annotations is not an object";
				goto out;
			}
			json_object_object_foreach(val, ak, av)
			{
				(void)av;
				if (!strncmp(ak, PREFIX, sizeof(PREFIX) - 1) || looks_like_cgfence(ak))
					out->annotated = 1;
			}
		} else if (!strcasecmp(key, "process")) {
			if (json_object_is_type(val, json_type_null))
				continue;
			if (!json_object_is_type(val, json_type_object)) {
				*why = "process is not an object";
				goto out;
			}
			json_object_object_foreach(val, pk, pv)
			{
				if (strcasecmp(pk, "terminal") || json_object_is_type(pv, json_type_null))
					continue;
				if (!json_object_is_type(pv, json_type_boolean)) {
					*why = "process.terminal is not true or false";
					goto out;
				}
				out->terminal |= json_object_get_boolean(pv);
			}
		}
	}
	rc = 0;
out:
	json_object_put(v);
	return rc;
}

int bundle_config_read(const char *bundle, int annotated_only, struct bundle_config *out, char *errbuf, size_t errn)
{
	char path[PATH_MAX];
	const char *why;
	if ((size_t)snprintf(path, sizeof(path), "%s/config.json", bundle) >= sizeof(path)) {
		snprintf(errbuf, errn, "the bundle path is too long");
		return -1;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(errbuf, errn, "cannot read %s (%s)", path, strerror(errno));
		return -1;
	}
	char *buf = malloc(BUNDLE_MAX_CONFIG + 1);
	size_t len = 0;
	int rc = -1;
	if (!buf) {
		snprintf(errbuf, errn, "out of memory reading %s", path);
		goto out;
	}
	for (;;) {
		ssize_t r = read(fd, buf + len, BUNDLE_MAX_CONFIG + 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(errbuf, errn, "cannot read %s (%s)", path, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > BUNDLE_MAX_CONFIG) {
			snprintf(errbuf, errn, "%s is larger than %d bytes", path, BUNDLE_MAX_CONFIG);
			goto out;
		}
	}
	/*
	 * Such a file goes to the daemon, which reads it itself and decides; whether the text is
	 * even valid JSON is the daemon's to say then. Only the way to the daemon is shortened:
	 * a file without those bytes is parsed as before, so nothing skips the daemon that would
	 * not have. It spares a fenced create the parse, ~0.12 ms of its start (exec-performance.md).
	 */
	if (annotated_only && memmem(buf, len, PREFIX, sizeof(PREFIX) - 1)) {
		memset(out, 0, sizeof(*out));
		out->annotated = 1;
		rc = 0;
		goto out;
	}
	if (bundle_config_parse(buf, len, out, &why) < 0) {
		snprintf(errbuf, errn, "%s: %s", path, why);
		goto out;
	}
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}
