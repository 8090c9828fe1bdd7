/* json.c: recursive-descent JSON parser into a flat node array (see json.h).
 * Hostile input: depth is capped, every read is checked against len, sizes are 64-bit,
 * and the arena is sized up front (decoded strings never exceed their source bytes). */
#include "json.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 200
/* Hostile input such as [1,1,1,...] makes a node per two bytes; tokenizer.json (the largest
 * legitimate input, ~6 MB) needs about 1.2 M. Cap memory at ~4 M nodes (~200 MB). */
#define JSON_MAX_NODES 4000000u

typedef struct {
    Json *j;
    const char *s;
    size_t len, pos;
    char *err;
    int failed;
} P;

static int fail(P *p, const char *msg) {
    if (p->failed) return -1;
    p->failed = 1;
    uint64_t line = 1, col = 1;
    for (size_t i = 0; i < p->pos && i < p->len; i++) {
        if (p->s[i] == '\n') line++, col = 1;
        else col++;
    }
    return errf(p->err, "line %llu, column %llu: %s", (unsigned long long)line, (unsigned long long)col, msg);
}

static void skip_ws(P *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int64_t new_node(P *p, uint32_t type) {
    Json *j = p->j;
    if (j->n == j->cap) {
        if (j->cap >= JSON_MAX_NODES) return fail(p, "too many JSON values");
        uint32_t cap = j->cap ? j->cap * 2 : 64;
        if (cap > JSON_MAX_NODES) cap = JSON_MAX_NODES;
        JsonNode *q = realloc(j->nodes, (size_t)cap * sizeof *q);
        if (!q) return fail(p, "out of memory");
        j->nodes = q;
        j->cap = cap;
    }
    memset(&j->nodes[j->n], 0, sizeof(JsonNode));
    j->nodes[j->n].type = type;
    return j->n++;
}

static int hex4(P *p, uint32_t *out) {
    if (p->len - p->pos < 4) return fail(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return fail(p, "bad hex digit in \\u escape");
    }
    *out = v;
    return 0;
}

static char *put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) *o++ = (char)cp;
    else if (cp < 0x800) *o++ = (char)(0xC0 | cp >> 6), *o++ = (char)(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
        *o++ = (char)(0xE0 | cp >> 12), *o++ = (char)(0x80 | ((cp >> 6) & 0x3F)), *o++ = (char)(0x80 | (cp & 0x3F));
    else
        *o++ = (char)(0xF0 | cp >> 18), *o++ = (char)(0x80 | ((cp >> 12) & 0x3F)),
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F)), *o++ = (char)(0x80 | (cp & 0x3F));
    return o;
}

/* Decode the string starting at the opening quote into the arena. Lone surrogates (which
 * Python's json accepts) become U+FFFD: they cannot be represented in UTF-8. */
static int parse_string(P *p, const char **out, uint32_t *outlen) {
    Json *j = p->j;
    p->pos++; /* opening quote */
    char *start = j->arena + j->arena_len, *o = start;
    for (;;) {
        if (p->pos >= p->len) return fail(p, "unterminated string");
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) return fail(p, "control character in string");
        if (c != '\\') { *o++ = (char)c; p->pos++; continue; }
        p->pos++;
        if (p->pos >= p->len) return fail(p, "unterminated escape");
        char e = p->s[p->pos++];
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (hex4(p, &cp)) return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF && p->len - p->pos >= 6 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
                size_t save = p->pos;
                uint32_t lo;
                p->pos += 2;
                if (hex4(p, &lo)) return -1;
                if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else p->pos = save; /* lone high surrogate; the next escape is decoded on its own */
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
            o = put_utf8(o, cp);
            break;
        }
        default: return fail(p, "invalid escape in string");
        }
    }
    size_t n = (size_t)(o - start);
    if (n > 0xFFFFFFFFu) return fail(p, "string too long");
    *o++ = 0;
    j->arena_len += (uint64_t)(o - start);
    *out = start;
    *outlen = (uint32_t)n;
    return 0;
}

static int parse_number(P *p, uint32_t idx) {
    size_t b = p->pos;
    const char *s = p->s;
    if (p->pos < p->len && s[p->pos] == '-') p->pos++;
    if (p->pos >= p->len) return fail(p, "truncated number");
    if (s[p->pos] == '0') p->pos++;
    else if (s[p->pos] >= '1' && s[p->pos] <= '9')
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    else return fail(p, "invalid number");
    if (p->pos < p->len && s[p->pos] == '.') {
        p->pos++;
        if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9') return fail(p, "invalid number");
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (s[p->pos] == '+' || s[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || s[p->pos] < '0' || s[p->pos] > '9') return fail(p, "invalid number");
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    }
    Json *j = p->j;
    char *t = j->arena + j->arena_len;
    size_t n = p->pos - b;
    memcpy(t, s + b, n);
    t[n] = 0;
    j->arena_len += n + 1;
    j->nodes[idx].str = t;
    j->nodes[idx].num = strtod(t, NULL);
    return 0;
}

static int lit(P *p, const char *w) {
    size_t n = strlen(w);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, w, n) != 0) return fail(p, "invalid literal");
    p->pos += n;
    return 0;
}

static int64_t parse_value(P *p, int depth);

typedef struct {
    const char *key;
    uint32_t len;
} Key;

static int by_key(const void *a, const void *b) {
    const Key *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return memcmp(x->key, y->key, x->len);
}

/* A key twice in one object is an error: readers differ on which one wins (Python keeps the last,
 * others the first or refuse), so a duplicate lets two parsers see two different messages.
 * Sorting the member indices is O(n log n), as tokenizer.json's 128K-key vocabulary needs. */
static int check_unique_keys(P *p, uint32_t obj) {
    const JsonNode *nodes = p->j->nodes;
    uint32_t n = nodes[obj].len, k = 0;
    if (n < 2) return 0;
    Key *keys = malloc((size_t)n * sizeof *keys);
    if (!keys) return fail(p, "out of memory");
    for (uint32_t c = nodes[obj].first; c; c = nodes[c].next) keys[k++] = (Key){ nodes[c].key, nodes[c].keylen };
    qsort(keys, n, sizeof *keys, by_key);
    int rc = 0;
    for (uint32_t i = 1; i < n && rc == 0; i++)
        if (by_key(&keys[i - 1], &keys[i]) == 0) {
            char msg[96], shown[48];
            snprintf(msg, sizeof msg, "duplicate key \"%s\" in an object", shown_text(keys[i].key, keys[i].len, shown));
            rc = fail(p, msg);
        }
    free(keys);
    return rc;
}

static int parse_container(P *p, uint32_t idx, int depth, int is_obj) {
    char close = is_obj ? '}' : ']';
    p->pos++;
    skip_ws(p);
    uint32_t last = 0, count = 0;
    if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return 0; }
    for (;;) {
        const char *key = NULL;
        uint32_t keylen = 0;
        skip_ws(p);
        if (is_obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"') return fail(p, "expected a string key");
            if (parse_string(p, &key, &keylen)) return -1;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') return fail(p, "expected ':'");
            p->pos++;
        }
        int64_t c = parse_value(p, depth + 1);
        if (c < 0) return -1;
        JsonNode *cn = &p->j->nodes[c];
        cn->key = key;
        cn->keylen = keylen;
        if (last) p->j->nodes[last].next = (uint32_t)c;
        else p->j->nodes[idx].first = (uint32_t)c;
        last = (uint32_t)c;
        count++;
        skip_ws(p);
        if (p->pos >= p->len) return fail(p, is_obj ? "unterminated object" : "unterminated array");
        char d = p->s[p->pos++];
        if (d == close) break;
        if (d != ',') return fail(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    p->j->nodes[idx].len = count;
    return is_obj ? check_unique_keys(p, idx) : 0;
}

static int64_t parse_value(P *p, int depth) {
    if (depth > JSON_MAX_DEPTH) return fail(p, "nesting too deep");
    skip_ws(p);
    if (p->pos >= p->len) return fail(p, "unexpected end of input");
    char c = p->s[p->pos];
    int64_t idx;
    switch (c) {
    case '{':
    case '[':
        if ((idx = new_node(p, c == '{' ? JSON_OBJECT : JSON_ARRAY)) < 0) return -1;
        return parse_container(p, (uint32_t)idx, depth, c == '{') ? -1 : idx;
    case '"': {
        if ((idx = new_node(p, JSON_STRING)) < 0) return -1;
        const char *s;
        uint32_t n;
        if (parse_string(p, &s, &n)) return -1;
        p->j->nodes[idx].str = s;
        p->j->nodes[idx].len = n;
        return idx;
    }
    case 't': if ((idx = new_node(p, JSON_TRUE)) < 0) return -1; return lit(p, "true") ? -1 : idx;
    case 'f': if ((idx = new_node(p, JSON_FALSE)) < 0) return -1; return lit(p, "false") ? -1 : idx;
    case 'n': if ((idx = new_node(p, JSON_NULL)) < 0) return -1; return lit(p, "null") ? -1 : idx;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            if ((idx = new_node(p, JSON_NUMBER)) < 0) return -1;
            return parse_number(p, (uint32_t)idx) ? -1 : idx;
        }
        return fail(p, "unexpected character");
    }
}

int json_parse(Json *j, const char *text, size_t len, char *err) {
    memset(j, 0, sizeof *j);
    /* Every decoded string or number (plus its NUL) fits in the bytes it came from, quotes included;
     * a bare number gains at most one byte, so len + 2 bounds the arena. */
    j->arena = malloc(len + 2);
    if (!j->arena) return errf(err, "out of memory (%zu bytes of JSON)", len);
    P p = { .j = j, .s = text, .len = len, .err = err };
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF)
        p.pos = 3; /* UTF-8 byte-order mark */
    int64_t root = parse_value(&p, 0);
    if (root == 0) {
        skip_ws(&p);
        if (p.pos != p.len) fail(&p, "trailing characters after the JSON value");
    }
    if (p.failed || root != 0) {
        json_free(j);
        return -1;
    }
    return 0;
}

void json_free(Json *j) {
    free(j->nodes);
    free(j->arena);
    memset(j, 0, sizeof *j);
}

const JsonNode *json_get(const Json *j, const JsonNode *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    const JsonNode *found = NULL;
    size_t kl = strlen(key);
    JSON_FOR(j, obj, c) if (c->keylen == kl && memcmp(c->key, key, kl) == 0) found = c;
    return found;
}

int json_int(const JsonNode *n, int64_t lo, int64_t hi, int64_t *out) {
    if (!n || n->type != JSON_NUMBER) return -1;
    double v = n->num;
    if (!(v >= (double)lo && v <= (double)hi) || floor(v) != v) return -1;
    /* (double)INT64_MAX rounds up to 2^63, which no int64_t holds: converting it is undefined. */
    if (v >= 9223372036854775808.0) return -1;
    *out = (int64_t)v;
    return 0;
}

int json_str_is(const JsonNode *n, const char *s) {
    return n && n->type == JSON_STRING && n->len == strlen(s) && memcmp(n->str, s, n->len) == 0;
}
