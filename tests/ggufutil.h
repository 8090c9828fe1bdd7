/* tests/ggufutil.h: a tiny GGUF v3 walker for tests that make variants of the fixtures (trusted
 * input), and the Q4_0 GGUF made from the Q8_0 fixture (there is no Q4_0 fixture): header, the
 * key/value records (kept as they are), tensor infos (name, n_dims, dims, type, offset) and the
 * data section at general.alignment (else 32). */
#ifndef GUARD_GGUFUTIL_H
#define GUARD_GGUFUTIL_H

#include "testutil.h"

#include "quant.h"
#include "util.h"

typedef struct {
    uint8_t *p;
    size_t n;
    uint64_t n_tensors, n_kv;
    uint32_t align;          /* general.alignment, else 32 */
    size_t ti_start, ti_end, data_off;
    size_t kv_at[64];        /* start of each key/value record; kv_at[n_kv] == ti_start */
    struct {
        size_t at;           /* record start */
        char name[96];
        uint32_t ndim, type;
        uint64_t ne[4], offset;
        size_t type_at, offset_at;
    } ti[64];
} G;

static inline size_t skip_gv(const uint8_t *p, size_t at, uint32_t type) {
    static const uint8_t size[13] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
    if (type == 8) return at + 8 + (size_t)ld_u64(p + at);
    if (type != 9) return at + size[type];
    uint32_t et = ld_u32(p + at);
    uint64_t cnt = ld_u64(p + at + 4);
    at += 12;
    for (uint64_t i = 0; i < cnt; i++) at = skip_gv(p, at, et);
    return at;
}

static inline void g_load(G *g, const char *path) {
    memset(g, 0, sizeof *g);
    g->p = (uint8_t *)slurp(path, &g->n);
    assert_true(g->n >= 24 && memcmp(g->p, "GGUF", 4) == 0 && ld_u32(g->p + 4) == 3);
    g->n_tensors = ld_u64(g->p + 8);
    g->n_kv = ld_u64(g->p + 16);
    g->align = 32;
    size_t at = 24;
    assert_true(g->n_kv < 64);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        g->kv_at[i] = at;
        uint64_t kl = ld_u64(g->p + at);
        int is_align = kl == 17 && memcmp(g->p + at + 8, "general.alignment", 17) == 0;
        at += 8 + (size_t)kl;
        uint32_t type = ld_u32(g->p + at);
        if (is_align && type == 4) g->align = ld_u32(g->p + at + 4);
        at = skip_gv(g->p, at + 4, type);
    }
    g->ti_start = g->kv_at[g->n_kv] = at;
    assert_true(g->n_tensors <= 64);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        g->ti[i].at = at;
        uint64_t nl = ld_u64(g->p + at);
        snprintf(g->ti[i].name, sizeof g->ti[i].name, "%.*s", (int)nl, (const char *)g->p + at + 8);
        at += 8 + nl;
        g->ti[i].ndim = ld_u32(g->p + at);
        at += 4;
        for (uint32_t d = 0; d < g->ti[i].ndim; d++, at += 8) g->ti[i].ne[d] = ld_u64(g->p + at);
        g->ti[i].type_at = at;
        g->ti[i].type = ld_u32(g->p + at);
        g->ti[i].offset_at = at + 4;
        g->ti[i].offset = ld_u64(g->p + at + 4);
        at += 12;
    }
    g->ti_end = at;
    g->data_off = (at + g->align - 1) / g->align * g->align;
}

/* Bytes of tensor i's data (F32, F16, BF16, Q8_0 and Q4_0: what the fixtures hold). */
static inline uint64_t g_bytes(const G *g, uint64_t i, uint32_t type) {
    uint64_t elems = 1;
    for (uint32_t d = 0; d < g->ti[i].ndim; d++) elems *= g->ti[i].ne[d];
    switch (type) {
    case 0: return elems * 4;
    case 1: case 30: return elems * 2;
    case 8: return elems / 32 * 34;
    case 2: return elems / 32 * 18;
    }
    fail_msg("%s: ggml type %u not handled here", g->ti[i].name, type);
    return 0;
}

/* The GGUF g with every Q8_0 tensor (type 8) re-encoded as Q4_0 (type 2) by the runtime's own
 * quantize_row (ggml's reference rounding), the other tensors as they are, offsets recomputed
 * at g's alignment. Returns the malloc'd file and its length; new_at[i] (if not NULL) gets the
 * file offset of tensor i's data. */
static inline uint8_t *g_to_q4_0(const G *g, size_t *len, uint64_t *new_at) {
    Buf out = { 0 };
    buf_put(&out, g->p, g->ti_start);
    uint64_t off = 0, rel[64];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        uint32_t type = g->ti[i].type == 8 ? 2 : g->ti[i].type;
        buf_put(&out, g->p + g->ti[i].at, g->ti[i].type_at - g->ti[i].at);
        buf_u32(&out, type);
        buf_u64(&out, off);
        rel[i] = off;
        off = (off + g_bytes(g, i, type) + g->align - 1) / g->align * g->align;
    }
    size_t data = (out.len + g->align - 1) / g->align * g->align;
    uint8_t *file = calloc(1, data + off);
    assert_non_null(file);
    memcpy(file, out.p, out.len);
    buf_free(&out);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const uint8_t *src = g->p + g->data_off + g->ti[i].offset;
        uint8_t *dst = file + data + rel[i];
        if (new_at) new_at[i] = data + rel[i];
        if (g->ti[i].type != 8) { memcpy(dst, src, g_bytes(g, i, g->ti[i].type)); continue; }
        for (uint64_t b = 0; b < g_bytes(g, i, 8) / 34; b++) {
            const uint8_t *b8 = src + 34 * b;
            float d = f16_to_f32(ld_u16(b8)), v[QK];
            for (int k = 0; k < QK; k++) v[k] = d * (float)(int8_t)b8[2 + k];
            quantize_row(DT_Q4_0, v, dst + 18 * b, QK);
        }
    }
    *len = data + off;
    return file;
}

#endif
