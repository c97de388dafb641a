/* JSON input through json-c, strictly: RFC 8259 syntax, valid UTF-8, bounded depth, nothing after the value. */
#ifndef CGFENCE_STRICT_JSON_H
#define CGFENCE_STRICT_JSON_H

#include <json-c/json.h>
#include <stddef.h>

enum sj_status { SJ_OK, SJ_INCOMPLETE, SJ_INVALID };

/* Lone UTF-16 surrogates ("\ud800"), which JSON.stringify writes for a string holding one,
 * read as U+FFFD instead of refusing the input: for text that is only shown. */
#define SJ_LONE_SURROGATES 1u

/*
 * Parses buf[0..len) as one JSON value (surrounding whitespace allowed). On SJ_OK *out is
 * the value (json_object_put it); otherwise *err says what is wrong (static text).
 */
enum sj_status strict_json_parse(const char *buf, size_t len, int depth, unsigned opts, struct json_object **out,
				 const char **err);

/* The member named key of obj, or NULL: compared exactly, or ASCII-case-insensitively when fold
 * (Go's encoding/json matches struct fields that way, so runc reads "Annotations" too). With
 * fold and several matches, *many is set. */
struct json_object *strict_json_member(struct json_object *obj, const char *key, int fold, int *many);

#endif
