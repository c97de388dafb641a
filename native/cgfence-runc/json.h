/* Just enough JSON for one-line requests and the daemon's replies. */
#ifndef CGFENCE_RUNC_JSON_H
#define CGFENCE_RUNC_JSON_H

#include <stddef.h>

/* A growable string; on allocation failure it stays valid and sets oom. */
struct sbuf {
	char *p;
	size_t len, cap;
	int oom;
	int heap;   /* p is ours to free */
};

void sb_init(struct sbuf *b, char *storage, size_t cap);  /* storage may be a stack/static buffer */
void sb_put(struct sbuf *b, const char *s, size_t n);
void sb_puts(struct sbuf *b, const char *s);
void sb_putl(struct sbuf *b, long v);
/* Appends s as a quoted JSON string. */
void sb_json_str(struct sbuf *b, const char *s);
/* Appends s escaped as inside a Go %q / logrus text value, without the quotes. */
void sb_text_str(struct sbuf *b, const char *s);
void sb_free(struct sbuf *b);

enum reply_kind { REPLY_OK, REPLY_REFUSED, REPLY_MALFORMED };

/*
 * The daemon answers with JSON.stringify output, which always starts with
 * {"ok":true or {"ok":false,"error":"...". On REPLY_REFUSED *error points
 * to the unescaped message, decoded in place inside line.
 */
enum reply_kind json_parse_reply(char *line, const char **error);

#endif
