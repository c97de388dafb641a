#define _GNU_SOURCE
#include "reply.h"
#include "strict-json.h"

#include <stdio.h>
#include <string.h>

static enum reply_kind bad(char *msg, size_t msgn, const char *why)
{
	snprintf(msg, msgn, "%s", why);
	return REPLY_MALFORMED;
}

enum reply_kind reply_parse(const char *line, size_t n, char *msg, size_t msgn)
{
	return reply_parse_fence(line, n, msg, msgn, NULL);
}

enum reply_kind reply_parse_fence(const char *line, size_t n, char *msg, size_t msgn, int *no_fence)
{
	struct json_object *v;
	const char *err;

	if (no_fence)
		*no_fence = 0;
	if (strict_json_parse(line, n, 8, SJ_LONE_SURROGATES, &v, &err) != SJ_OK)
		return bad(msg, msgn, err);
	enum reply_kind k = REPLY_MALFORMED;
	struct json_object *ok = strict_json_member(v, "ok", 0, NULL);
	if (!json_object_is_type(v, json_type_object)) {
		bad(msg, msgn, "not a JSON object");
	} else if (!json_object_is_type(ok, json_type_boolean)) {
		bad(msg, msgn, "\"ok\" is missing or not true/false");
	} else if (json_object_get_boolean(ok)) {
		k = REPLY_OK;
		if (no_fence) {
			/* Only an explicit false: anything else keeps the attach (the safe side). */
			struct json_object *f = strict_json_member(v, "fence", 0, NULL);
			*no_fence = json_object_is_type(f, json_type_boolean) && !json_object_get_boolean(f);
		}
	} else {
		struct json_object *e = strict_json_member(v, "error", 0, NULL);
		if (!json_object_is_type(e, json_type_string)) {
			bad(msg, msgn, "a refusal without an \"error\" string");
		} else {
			size_t len = (size_t)json_object_get_string_len(e);
			const char *s = json_object_get_string(e);
			if (msgn > 4 && len >= msgn)
				snprintf(msg, msgn, "%.*s...", (int)(msgn - 4), s);
			else
				snprintf(msg, msgn, "%s", s);
			k = REPLY_REFUSED;
		}
	}
	json_object_put(v);
	return k;
}
