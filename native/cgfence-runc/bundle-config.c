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
	json_object_object_foreach(v, key, val) {
		if (!strcasecmp(key, "annotations")) {
			if (json_object_is_type(val, json_type_null))
				continue;
			if (!json_object_is_type(val, json_type_object)) {
				*why = "annotations is not an object";
				goto out;
			}
			json_object_object_foreach(val, ak, av) {
				(void)av;
				if (!strncmp(ak, PREFIX, sizeof(PREFIX) - 1))
					out->annotated = 1;
			}
		} else if (!strcasecmp(key, "process")) {
			if (json_object_is_type(val, json_type_null))
				continue;
			if (!json_object_is_type(val, json_type_object)) {
				*why = "process is not an object";
				goto out;
			}
			json_object_object_foreach(val, pk, pv) {
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

int bundle_config_read(const char *bundle, struct bundle_config *out, char *errbuf, size_t errn)
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
