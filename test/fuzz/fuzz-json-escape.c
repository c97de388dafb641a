/*
 * libFuzzer target: the launcher's JSON string writer (native/cgfence-runc/json.c), checked
 * by reading its output back with the strict reader: valid UTF-8 in, the same bytes out.
 */
#include "../../native/cgfence-runc/json.h"
#include "../../native/cgfence-runc/strict-json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int valid_utf8(const unsigned char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned c = s[i];
		size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
		if (!len || i + len > n)
			return 0;
		unsigned long cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		static const unsigned long min[] = { 0, 0, 0x80, 0x800, 0x10000 };
		if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += len;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	size_t n = strlen(s);
	struct sbuf b;
	sb_init(&b, NULL, 0);
	sb_json_str(&b, s);
	if (b.oom)
		abort();
	if (valid_utf8((const unsigned char *)s, n)) {
		struct json_object *v;
		const char *err;
		if (strict_json_parse(b.p, b.len, 4, 0, &v, &err) != SJ_OK)
			abort();
		if (!json_object_is_type(v, json_type_string) || (size_t)json_object_get_string_len(v) != n ||
		    memcmp(json_object_get_string(v), s, n))
			abort();
		json_object_put(v);
	}
	sb_free(&b);
	free(s);
	return 0;
}
