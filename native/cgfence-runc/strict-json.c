#define _GNU_SOURCE
#include "strict-json.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hex4(const char *s)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		int h = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

static int digit(const char *s, size_t n, size_t j)
{
	return j < n && s[j] >= '0' && s[j] <= '9';
}

/*
 * What json-c's strict mode still lets through, refused before it parses: single-quoted keys,
 * NaN and Infinity, "1.", raw control characters in strings, lone UTF-16 surrogates, and
 * "\u0000" (json-c keeps keys as C strings, so "pid\u0000x" would read as "pid"; nothing
 * cgfence reads has a NUL in it). A token cut off by the end of the input is left to json-c,
 * which calls it incomplete. Returns NULL, or what is wrong.
 */
static const char *lexical_check(const char *s, size_t n, unsigned opts)
{
	static const char *const literals[] = { "true", "false", "null" };
	size_t i = 0;
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"') {
			for (i++;; i++) {
				if (i >= n)
					return NULL;
				c = (unsigned char)s[i];
				if (c == '"')
					break;
				if (c < 0x20)
					return "a control character inside a string";
				if (c != '\\')
					continue;
				if (i + 1 >= n)
					return NULL;
				if (s[i + 1] != 'u') {
					i++;
					continue;
				}
				if (i + 6 > n)
					return NULL;
				int cp = hex4(s + i + 2);
				if (cp < 0)
					return "an invalid \\u escape";
				if (cp == 0)
					return "a NUL character (\\u0000) in a string";
				if (opts & SJ_LONE_SURROGATES) {
					i += 5;
					continue;
				}
				if (cp >= 0xdc00 && cp <= 0xdfff)
					return "a lone UTF-16 surrogate";
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if ((i + 6 < n && s[i + 6] != '\\') || (i + 7 < n && s[i + 7] != 'u'))
						return "a lone UTF-16 surrogate";
					if (i + 12 > n)
						return NULL;
					int lo = hex4(s + i + 8);
					if (lo < 0xdc00 || lo > 0xdfff)
						return "a lone UTF-16 surrogate";
					i += 6;
				}
				i += 5;
			}
			i++;
			continue;
		}
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '{' || c == '}' || c == '[' || c == ']' ||
		    c == ',' || c == ':') {
			i++;
			continue;
		}
		if (c == '-' || (c >= '0' && c <= '9')) {
			/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
			size_t j = i + (c == '-');
			if (j >= n)
				return NULL;
			if (s[j] == '0')
				j++;
			else if (digit(s, n, j))
				while (digit(s, n, j))
					j++;
			else
				return "a malformed number";
			if (j < n && s[j] == '.') {
				if (++j >= n)
					return NULL;
				if (!digit(s, n, j))
					return "a malformed number";
				while (digit(s, n, j))
					j++;
			}
			if (j < n && (s[j] == 'e' || s[j] == 'E')) {
				if (++j < n && (s[j] == '+' || s[j] == '-'))
					j++;
				if (j >= n)
					return NULL;
				if (!digit(s, n, j))
					return "a malformed number";
				while (digit(s, n, j))
					j++;
			}
			if (j < n &&
			    (digit(s, n, j) || s[j] == '.' || s[j] == 'e' || s[j] == 'E' || s[j] == '+' || s[j] == '-'))
				return "a malformed number";
			i = j;
			continue;
		}
		size_t k;
		for (k = 0; k < 3; k++) {
			size_t len = strlen(literals[k]);
			size_t have = n - i < len ? n - i : len;
			if (!strncmp(s + i, literals[k], have)) {
				if (have < len)
					return NULL;
				i += len;
				break;
			}
		}
		if (k == 3)
			return "a character JSON does not allow here";
	}
	return NULL;
}

enum sj_status strict_json_parse(const char *buf, size_t len, int depth, unsigned opts, struct json_object **out,
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
	const char *lex = lexical_check(buf, end, opts);
	if (lex)
		return *err = lex, SJ_INVALID;
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
	json_object_object_foreach(obj, k, val)
	{
		if (strcasecmp(k, key) != 0)
			continue;
		if (found && many)
			*many = 1;
		found = val;
	}
	return found;
}
