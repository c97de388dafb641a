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
				u[0] = '\\';
				u[1] = 'u';
				u[2] = '0';
				u[3] = '0';
				u[4] = hex[c >> 4];
				u[5] = hex[c & 15];
				u[6] = '\0';
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
