/* JSON output: the one-line requests to the daemon and runc log entries (input: strict-json.h). */
#ifndef CGFENCE_RUNC_JSON_H
#define CGFENCE_RUNC_JSON_H

#include <stddef.h>

/* A growable string; on allocation failure it stays valid and sets oom. */
struct sbuf {
	char *p;
	size_t len, cap;
	int oom;
	int heap; /* p is ours to free */
};

void sb_init(struct sbuf *b, char *storage, size_t cap); /* storage may be a stack/static buffer */
void sb_put(struct sbuf *b, const char *s, size_t n);
void sb_puts(struct sbuf *b, const char *s);
void sb_putl(struct sbuf *b, long v);
/* Appends s as a quoted JSON string. */
void sb_json_str(struct sbuf *b, const char *s);
/* Appends s escaped as inside a Go %q / logrus text value, without the quotes. */
void sb_text_str(struct sbuf *b, const char *s);
void sb_free(struct sbuf *b);

#endif
