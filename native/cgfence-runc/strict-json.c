#define _GNU_SOURCE
#include "strict-json.h"

#include <limits.h>
#include <strings.h>

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * json-c keeps object keys as C strings, so a "\u0000" in a key would cut it short ("pid\u0000x"
 * read as "pid"). Nothing cgfence reads has a NUL in it: such input is refused whole.
 */
static int has_nul_escape(const char *s, size_t n)
{
	int in_string = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"') {
			in_string = !in_string;
		} else if (in_string && s[i] == '\\') {
			if (i + 5 < n && s[i + 1] == 'u' && s[i + 2] == '0' && s[i + 3] == '0' &&
			    s[i + 4] == '0' && s[i + 5] == '0')
				return 1;
			i++;
		}
	}
	return 0;
}

enum sj_status strict_json_parse(const char *buf, size_t len, int depth, struct json_object **out,
				 const char **err)
{
	*out = NULL;
	/* json-c takes an int length; nothing the launcher or holder reads comes near it. */
	if (len > INT_MAX / 2)
		return *err = "input too large", SJ_INVALID;
	size_t end = len;
	while (end > 0 && is_ws(buf[end - 1]))
		end--;
	if (end == 0)
		return *err = "no JSON value", SJ_INCOMPLETE;
	if (has_nul_escape(buf, end))
		return *err = "a NUL character (\\u0000) in a string", SJ_INVALID;
	struct json_tokener *tok = json_tokener_new_ex(depth);
	if (!tok)
		return *err = "out of memory", SJ_INVALID;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	struct json_object *v = json_tokener_parse_ex(tok, buf, (int)end);
	enum json_tokener_error je = json_tokener_get_error(tok);
	size_t used = json_tokener_get_parse_end(tok);
	enum sj_status st = SJ_OK;
	if (je == json_tokener_continue) {
		*err = "incomplete JSON";
		st = SJ_INCOMPLETE;
	} else if (je != json_tokener_success || !v) {
		*err = json_tokener_error_desc(je);
		st = SJ_INVALID;
	} else if (used != end) {
		*err = "bytes after the JSON value";
		st = SJ_INVALID;
	}
	json_tokener_free(tok);
	if (st != SJ_OK) {
		json_object_put(v);
		return st;
	}
	*out = v;
	return SJ_OK;
}

struct json_object *strict_json_member(struct json_object *obj, const char *key, int fold, int *many)
{
	struct json_object *found = NULL;
	if (many)
		*many = 0;
	if (!json_object_is_type(obj, json_type_object))
		return NULL;
	if (!fold)
		return json_object_object_get_ex(obj, key, &found) ? found : NULL;
	json_object_object_foreach(obj, k, val) {
		if (strcasecmp(k, key) != 0)
			continue;
		if (found && many)
			*many = 1;
		found = val;
	}
	return found;
}
