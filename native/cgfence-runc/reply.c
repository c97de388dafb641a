#define _GNU_SOURCE
#include "reply.h"
#include "strict-json.h"

#include <stdint.h>
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
	struct reply_info info;
	enum reply_kind k = reply_parse_info(line, n, msg, msgn, &info);
	if (no_fence)
		*no_fence = k == REPLY_OK && info.no_fence;
	return k;
}

/* Only an explicit true counts: anything else is the old protocol (the safe side). */
static int is_true(struct json_object *v, const char *key)
{
	struct json_object *m = strict_json_member(v, key, 0, NULL);
	return json_object_is_type(m, json_type_boolean) && json_object_get_boolean(m);
}

enum reply_kind reply_parse_info(const char *line, size_t n, char *msg, size_t msgn, struct reply_info *info)
{
	struct json_object *v;
	const char *err;
	struct reply_info ignored;

	if (!info)
		info = &ignored;
	memset(info, 0, sizeof(*info));
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
		/* Only an explicit false: anything else keeps the attach (the safe side). */
		struct json_object *f = strict_json_member(v, "fence", 0, NULL);
		info->no_fence = json_object_is_type(f, json_type_boolean) && !json_object_get_boolean(f);
		info->push_offered = is_true(v, "push");
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
	if (k != REPLY_MALFORMED) {
		struct json_object *p = strict_json_member(v, "pushed", 0, NULL);
		info->pushed =
			json_object_is_type(p, json_type_string) && strcmp(json_object_get_string(p), "attach") == 0;
		struct json_object *pid = strict_json_member(v, "pid", 0, NULL);
		if (info->pushed && json_object_is_type(pid, json_type_int)) {
			int64_t x = json_object_get_int64(pid);
			info->pid = x > 0 && x <= INT32_MAX ? (long)x : 0;
		}
	}
	json_object_put(v);
	return k;
}
