/* tests/fuzz/fuzz_json.c: json_parse on arbitrary bytes (config.json, tokenizer.json, safetensors
 * headers, chat files and batch lines all go through it).
 * Invariants on success: the node tree is well formed (every index in range, children after
 * their parent, len = number of children, keys exactly on object members), strings are
 * NUL-terminated at their length, numbers are finite or overflowed to +-inf like strtod, and
 * json_get / json_int never read outside the tree. */
#include <math.h>

#include "fuzz.h"
#include "json.h"

static void json_walk(const Json *j, uint32_t idx, int depth) {
    FUZZ_CHECK(idx < j->n, "node %u out of %u", idx, j->n);
    FUZZ_CHECK(depth <= 202, "depth %d", depth);
    const JsonNode *n = &j->nodes[idx];
    FUZZ_CHECK(n->type <= JSON_OBJECT, "type %u", n->type);
    if (n->type == JSON_STRING) FUZZ_CHECK(n->str && n->str[n->len] == 0, "string not terminated at its length");
    if (n->type == JSON_NUMBER) {
        FUZZ_CHECK(n->str && n->str[0], "number without text");
        int64_t v;
        if (json_int(n, INT64_MIN, INT64_MAX, &v) == 0) FUZZ_CHECK((double)v == n->num, "json_int changed the value");
    }
    if (n->type != JSON_ARRAY && n->type != JSON_OBJECT) {
        FUZZ_CHECK(n->first == 0, "scalar with children");
        return;
    }
    uint32_t count = 0, prev = idx;
    JSON_FOR(j, n, c) {
        uint32_t ci = (uint32_t)(c - j->nodes);
        FUZZ_CHECK(ci > prev, "child %u not after %u", ci, prev);
        FUZZ_CHECK((c->key != NULL) == (n->type == JSON_OBJECT), "key presence wrong");
        if (c->key) {
            FUZZ_CHECK(c->key[c->keylen] == 0, "key not terminated");
            /* keys are unique (duplicates are refused): json_get finds exactly this member */
            if (strlen(c->key) == c->keylen) {
                const JsonNode *g = json_get(j, n, c->key);
                FUZZ_CHECK(g == c, "json_get found another member with key %s", c->key);
            }
        }
        json_walk(j, ci, depth + 1);
        prev = ci;
        count++;
    }
    FUZZ_CHECK(count == n->len, "len %u but %u children", n->len, count);
}

static int json_one(const uint8_t *data, size_t size) {
    Json j;
    char err[ERRLEN];
    if (json_parse(&j, (const char *)data, size, err)) {
        fuzz_check_err(err);
        FUZZ_CHECK(strncmp(err, "line ", 5) == 0 || strncmp(err, "out of memory", 13) == 0, "error without position: %s", err);
        return 0;
    }
    FUZZ_CHECK(j.n >= 1, "no root");
    json_walk(&j, 0, 0);
    FUZZ_CHECK(json_get(&j, json_root(&j), "") == NULL || json_root(&j)->type == JSON_OBJECT, "json_get on non-object");
    json_free(&j);
    return 1;
}

FUZZ_TARGET(NULL, json_one)
