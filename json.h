/* json.h: a small, strict, bounds-checked JSON reader (RFC 8259) for config.json,
 * tokenizer.json, safetensors headers, chat files and batch lines.
 *
 * The whole document is parsed into one node array; strings are decoded (escapes, \u surrogate
 * pairs) into one arena owned by the Json. Nothing points into the caller's text afterwards.
 * Duplicate keys in an object are an error.
 * Non-goals: writing JSON (callers print it), comments, trailing commas, NaN literals.
 */
#ifndef GUARD_JSON_H
#define GUARD_JSON_H

#include <stddef.h>
#include <stdint.h>

enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

typedef struct {
    uint32_t type;
    uint32_t len;    /* STRING: decoded byte length; ARRAY/OBJECT: number of children */
    uint32_t first;  /* ARRAY/OBJECT: index of the first child, 0 = none (node 0 is the root) */
    uint32_t next;   /* index of the next sibling, 0 = none */
    const char *str; /* STRING: decoded UTF-8, NUL-terminated (may also contain NULs); NUMBER: its text */
    const char *key; /* child of an OBJECT: its decoded key, NUL-terminated; else NULL */
    uint32_t keylen;
    double num;      /* NUMBER */
} JsonNode;

typedef struct {
    JsonNode *nodes; /* [n] */
    uint32_t n, cap;
    char *arena;     /* decoded strings */
    uint64_t arena_len;
} Json;

/* Parse text[0..len). On error returns -1 with "line L, column C: problem" in err. */
int json_parse(Json *j, const char *text, size_t len, char *err);
void json_free(Json *j);

static inline const JsonNode *json_root(const Json *j) { return &j->nodes[0]; }
/* Member `key` of obj; NULL if absent or obj is not an object. Keys are unique: json_parse
 * refuses an object that repeats one (no parser differential over which copy wins). */
const JsonNode *json_get(const Json *j, const JsonNode *obj, const char *key);
static inline const JsonNode *json_first(const Json *j, const JsonNode *p) { return p->first ? &j->nodes[p->first] : NULL; }
static inline const JsonNode *json_next(const Json *j, const JsonNode *c) { return c->next ? &j->nodes[c->next] : NULL; }
#define JSON_FOR(j, parent, it) for (const JsonNode *it = json_first(j, parent); it; it = json_next(j, it))

/* An integral NUMBER in [lo, hi]: 0 and *out set, else -1. */
int json_int(const JsonNode *n, int64_t lo, int64_t hi, int64_t *out);
/* n is a STRING equal to s exactly: JSON strings may hold NULs, so strcmp would accept "text\u0000junk". */
int json_str_is(const JsonNode *n, const char *s);

#endif
