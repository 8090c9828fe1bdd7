/* strtab.h: a string -> id hash table over token strings held elsewhere (open addressing,
 * linear probing). Shared by the tokenizer (tokenizer.c: vocabulary lookups while encoding) and
 * the tokenizer builders under import/ (resolving merges named by their strings). Header-only:
 * every function is static inline.
 */
#ifndef GUARD_STRTAB_H
#define GUARD_STRTAB_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Keys are token strings held elsewhere: key(id) = text[id][0..len[id]). */
typedef struct {
    const char *const *text;
    const uint32_t *len;
} Keys;

/* Open addressing; a slot holds (hash high 32 bits << 32) | (id + 1), 0 = empty. The stored
 * hash bits let most probes skip the memcmp. */
typedef struct {
    uint64_t *slot;
    uint64_t mask;
} StrTab;

static inline uint64_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a multiply-xorshift so low bits mix */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

static inline uint64_t table_size(uint64_t n) {
    uint64_t c = 16;
    while (c < 2 * n) c *= 2;
    return c;
}

static inline int strtab_init(StrTab *h, uint64_t n) {
    uint64_t c = table_size(n);
    h->slot = calloc((size_t)c, sizeof *h->slot);
    h->mask = c - 1;
    return h->slot ? 0 : -1;
}

static inline int32_t strtab_find(const StrTab *h, const Keys *k, const void *s, size_t n) {
    uint64_t hv = hash_bytes(s, n), tag = hv >> 32;
    for (uint64_t i = hv & h->mask;; i = (i + 1) & h->mask) {
        uint64_t v = h->slot[i];
        if (!v) return -1;
        uint32_t id = (uint32_t)v - 1;
        if (v >> 32 == tag && k->len[id] == n && memcmp(k->text[id], s, n) == 0) return (int32_t)id;
    }
}

/* Insert id; returns -1 when inserted, or the id already holding the same string. */
static inline int32_t strtab_add(StrTab *h, const Keys *k, uint32_t id) {
    const char *s = k->text[id];
    size_t n = k->len[id];
    uint64_t hv = hash_bytes(s, n), tag = hv >> 32;
    for (uint64_t i = hv & h->mask;; i = (i + 1) & h->mask) {
        uint64_t v = h->slot[i];
        if (!v) {
            h->slot[i] = tag << 32 | (uint64_t)(id + 1);
            return -1;
        }
        uint32_t o = (uint32_t)v - 1;
        if (v >> 32 == tag && k->len[o] == n && memcmp(k->text[o], s, n) == 0) return (int32_t)o;
    }
}

#endif
