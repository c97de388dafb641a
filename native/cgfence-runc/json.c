#define _GNU_SOURCE
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_init(struct sbuf *b, char *storage, size_t cap)
{
	b->p = storage;
	b->len = 0;
	b->cap = cap;
	b->oom = 0;
	b->heap = 0;
	if (cap)
		b->p[0] = '\0';
}

/* Heap memory is used only once the caller's storage is outgrown. */
static int sb_grow(struct sbuf *b, size_t need)
{
	if (b->oom)
		return 0;
	if (b->len + need + 1 <= b->cap)
		return 1;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + need + 1)
		cap *= 2;
	char *p = b->heap ? realloc(b->p, cap) : malloc(cap);
	if (!p) {
		b->oom = 1;
		return 0;
	}
	if (!b->heap) {
		if (b->len)
			memcpy(p, b->p, b->len);
		p[b->len] = '\0';
	}
	b->p = p;
	b->cap = cap;
	b->heap = 1;
	return 1;
}

void sb_put(struct sbuf *b, const char *s, size_t n)
{
	if (!sb_grow(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void sb_puts(struct sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

void sb_putl(struct sbuf *b, long v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%ld", v);
	sb_put(b, tmp, (size_t)n);
}

static void put_escaped(struct sbuf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const char *run = s;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		const char *esc = NULL;
		char u[7];

		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default:
			if (c < 0x20 || c == 0x7f) {
				u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
				u[4] = hex[c >> 4]; u[5] = hex[c & 15]; u[6] = '\0';
				esc = u;
			}
		}
		if (esc) {
			sb_put(b, run, (size_t)(s - run));
			sb_puts(b, esc);
			run = s + 1;
		}
	}
	sb_put(b, run, (size_t)(s - run));
}

void sb_json_str(struct sbuf *b, const char *s)
{
	sb_put(b, "\"", 1);
	put_escaped(b, s);
	sb_put(b, "\"", 1);
}

/* logrus quotes text values with Go's %q; these escapes are a subset Go reads back the same. */
void sb_text_str(struct sbuf *b, const char *s)
{
	put_escaped(b, s);
}

void sb_free(struct sbuf *b)
{
	if (b->heap)
		free(b->p);
	b->heap = 0;
	b->p = NULL;
	b->cap = b->len = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

static long hex4(const char *s)
{
	long v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(s[i]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

static char *put_utf8(char *o, unsigned long cp)
{
	if (cp < 0x80) {
		*o++ = (char)cp;
	} else if (cp < 0x800) {
		*o++ = (char)(0xc0 | (cp >> 6));
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*o++ = (char)(0xe0 | (cp >> 12));
		*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else {
		*o++ = (char)(0xf0 | (cp >> 18));
		*o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
		*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	}
	return o;
}

/*
 * Decodes the JSON string whose body starts at s, in place. Every escape
 * is at least as long as what it decodes to, so the output never overtakes
 * the input. Returns NULL if the string is not terminated or malformed.
 */
static char *unescape_in_place(char *s)
{
	char *o = s;

	for (;;) {
		char c = *s++;
		if (c == '\0')
			return NULL;
		if (c == '"')
			break;
		if (c != '\\') {
			*o++ = c;
			continue;
		}
		c = *s++;
		switch (c) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u': {
			long cp = hex4(s);
			if (cp < 0)
				return NULL;
			s += 4;
			if (cp >= 0xd800 && cp <= 0xdbff && s[0] == '\\' && s[1] == 'u') {
				long lo = hex4(s + 2);
				if (lo >= 0xdc00 && lo <= 0xdfff) {
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					s += 6;
				}
			}
			/* JSON.stringify escapes lone surrogates; they have no UTF-8 form. */
			if (cp >= 0xd800 && cp <= 0xdfff)
				cp = 0xfffd;
			o = put_utf8(o, (unsigned long)cp);
			break;
		}
		default:
			return NULL;
		}
	}
	*o = '\0';
	return o;
}

enum reply_kind json_parse_reply(char *line, const char **error)
{
	static const char ok[] = "{\"ok\":true";
	static const char refused[] = "{\"ok\":false,\"error\":\"";

	if (strncmp(line, ok, sizeof(ok) - 1) == 0 &&
	    (line[sizeof(ok) - 1] == ',' || line[sizeof(ok) - 1] == '}'))
		return REPLY_OK;
	if (strncmp(line, refused, sizeof(refused) - 1) == 0) {
		char *msg = line + sizeof(refused) - 1;
		if (!unescape_in_place(msg))
			return REPLY_MALFORMED;
		*error = msg;
		return REPLY_REFUSED;
	}
	return REPLY_MALFORMED;
}
