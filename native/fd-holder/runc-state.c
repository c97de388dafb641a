#define _GNU_SOURCE
#include "runc-state.h"
#include "../cgfence-runc/strict-json.h"

#include <limits.h>
#include <string.h>

int runc_state_parse(const char *s, size_t n, char *key, size_t keyn, int *pid, const char **why)
{
	struct json_object *v;
	if (n > RUNC_STATE_MAX)
		return *why = "the state is larger than 1 MiB", -1;
	switch (strict_json_parse(s, n, 64, 0, &v, why)) {
	case SJ_INCOMPLETE: return 0;
	case SJ_INVALID: return -1;
	case SJ_OK: break;
	}
	int rc = -1;
	struct json_object *meta = strict_json_member(v, "metadata", 0, NULL);
	struct json_object *p = strict_json_member(v, "pid", 0, NULL);
	if (!json_object_is_type(v, json_type_object)) {
		*why = "not a JSON object";
	} else if (!json_object_is_type(meta, json_type_string)) {
		*why = "\"metadata\" is missing or not a string";
	} else if (!json_object_is_type(p, json_type_int)) {
		*why = "\"pid\" is missing or not an integer";
	} else {
		size_t len = (size_t)json_object_get_string_len(meta);
		const char *m = json_object_get_string(meta);
		int64_t pv = json_object_get_int64(p);
		if (len == 0) {
			*why = "\"metadata\" is empty";
		} else if (len >= keyn) {
			*why = "\"metadata\" is longer than a container key may be";
		} else if (memchr(m, '\0', len)) {
			*why = "\"metadata\" contains a NUL";
		} else if (pv < 1 || pv > INT_MAX) {
			*why = "\"pid\" is out of range";
		} else {
			memcpy(key, m, len);
			key[len] = '\0';
			*pid = (int)pv;
			rc = 1;
		}
	}
	json_object_put(v);
	return rc;
}
