/* import/gguf.c: a GGUF file (v2/v3, little-endian) as llama.cpp's convert_hf_to_gguf.py and
 * llama-quantize write it and Ollama stores it (~/.ollama/models/blobs/sha256-...), read into a
 * Source: the llama.* hyperparameters, the tokenizer.ggml.* vocabulary, the chat template and
 * the tensors under their Hugging Face names.
 *
 * Mirrors: the GGUF spec (ggml docs/gguf.md) for the container; ggml-quants.c
 * dequantize_row_* for the block formats (same f32 operations in the same order, so a row
 * decodes bit for bit like gguf-py's dequantize); llama.cpp's llama-model.cpp for which keys
 * mean what (rope_freqs divisors, tied output when output.weight is absent).
 *
 * Reading happens in two passes. The structural pass walks every key/value and tensor record,
 * checking each length, count, type and offset against the file before anything is allocated
 * from it; the semantic pass then reads the keys a Llama needs.
 * Non-goals: other architectures, big-endian files, the IQ, TQ, MXFP4, Q2_K and Q3_K types (refused by
 * name), splitting multi-file GGUFs, and keys llama.cpp itself would ignore for Llama.
 */
#include "import.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== ggml tensor types ==== */

/* Indexed by the ggml type id stored in the file. st == 0: known but not read here. */
static const struct {
    const char *name;
    uint32_t block, bytes; /* elements per block, bytes per block */
    uint32_t st;
} ggml_types[] = {
    [0] = { "F32", 1, 4, ST_F32 },        [1] = { "F16", 1, 2, ST_F16 },         [2] = { "Q4_0", 32, 18, ST_Q4_0 },
    [3] = { "Q4_1", 32, 20, ST_Q4_1 },    [6] = { "Q5_0", 32, 22, ST_Q5_0 },     [7] = { "Q5_1", 32, 24, ST_Q5_1 },
    [8] = { "Q8_0", 32, 34, ST_Q8_0 },    [9] = { "Q8_1", 32, 36, 0 },           [10] = { "Q2_K", 256, 84, 0 },
    [11] = { "Q3_K", 256, 110, 0 },       [12] = { "Q4_K", 256, 144, ST_Q4_K },  [13] = { "Q5_K", 256, 176, ST_Q5_K },
    [14] = { "Q6_K", 256, 210, ST_Q6_K }, [15] = { "Q8_K", 256, 292, 0 },        [16] = { "IQ2_XXS", 0, 0, 0 },
    [17] = { "IQ2_XS", 0, 0, 0 },         [18] = { "IQ3_XXS", 0, 0, 0 },         [19] = { "IQ1_S", 0, 0, 0 },
    [20] = { "IQ4_NL", 0, 0, 0 },         [21] = { "IQ3_S", 0, 0, 0 },           [22] = { "IQ2_S", 0, 0, 0 },
    [23] = { "IQ4_XS", 0, 0, 0 },         [24] = { "I8", 0, 0, 0 },              [25] = { "I16", 0, 0, 0 },
    [26] = { "I32", 0, 0, 0 },            [27] = { "I64", 0, 0, 0 },             [28] = { "F64", 0, 0, 0 },
    [29] = { "IQ1_M", 0, 0, 0 },          [30] = { "BF16", 1, 2, ST_BF16 },      [34] = { "TQ1_0", 0, 0, 0 },
    [35] = { "TQ2_0", 0, 0, 0 },          [39] = { "MXFP4", 0, 0, 0 },
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

/* ==== Block decoders: ggml-quants.c dequantize_row_*, one block at a time ====
 * Where ggml writes `a*b - c` in one expression, the product is a separate statement here so a
 * compiler allowed to contract (clang's default -ffp-contract=on) cannot fuse it into an FMA and
 * change the last bit. */

static void deq_q4_0(const uint8_t *b, float *y) { /* f16 d, 16 bytes: lo nibbles -> 0..15, hi -> 16..31 */
    float d = f16_to_f32(ld_u16(b));
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b[2 + j] & 0x0F) - 8) * d;
        y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
    }
}

static void deq_q4_1(const uint8_t *b, float *y) { /* f16 d, f16 m, 16 bytes; x*d + m */
    float d = f16_to_f32(ld_u16(b)), m = f16_to_f32(ld_u16(b + 2));
    for (int j = 0; j < 16; j++) {
        float v0 = (float)(b[4 + j] & 0x0F) * d, v1 = (float)(b[4 + j] >> 4) * d;
        y[j] = v0 + m;
        y[j + 16] = v1 + m;
    }
}

/* Q5: the fifth bit of element j is bit j of the little-endian u32 qh. */
static void deq_q5(const uint8_t *qs, uint32_t qh, float d, const float *m, float *y) {
    for (int j = 0; j < 16; j++) {
        int x0 = (qs[j] & 0x0F) | (int)(((qh >> j) << 4) & 0x10);
        int x1 = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
        if (m) { /* Q5_1: x*d + m */
            float v0 = (float)x0 * d, v1 = (float)x1 * d;
            y[j] = v0 + *m;
            y[j + 16] = v1 + *m;
        } else { /* Q5_0: (x - 16)*d */
            y[j] = (float)(x0 - 16) * d;
            y[j + 16] = (float)(x1 - 16) * d;
        }
    }
}
static void deq_q5_0(const uint8_t *b, float *y) { deq_q5(b + 6, ld_u32(b + 2), f16_to_f32(ld_u16(b)), NULL, y); }
static void deq_q5_1(const uint8_t *b, float *y) {
    float m = f16_to_f32(ld_u16(b + 2));
    deq_q5(b + 8, ld_u32(b + 4), f16_to_f32(ld_u16(b)), &m, y);
}

static void deq_q8_0(const uint8_t *b, float *y) { /* f16 d, 32 x int8 */
    float d = f16_to_f32(ld_u16(b));
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* K-quants: 6-bit scale and min j (0..7) packed in 12 bytes (ggml get_scale_min_k4). */
static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *mn = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K (144 bytes): f16 d, f16 dmin, scales[12], qs[128]; Q5_K (176): the same plus qh[32]
 * before qs, bit (2*(j/64) + half) of qh[l] adding 16. Eight sub-blocks of 32. */
static void deq_k45(const uint8_t *b, float *y, int five) {
    float d = f16_to_f32(ld_u16(b)), dmin = f16_to_f32(ld_u16(b + 2));
    const uint8_t *scales = b + 4, *qh = b + 16, *q = five ? b + 48 : b + 16;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
        uint8_t sc, mn;
        scale_min_k4(is, scales, &sc, &mn);
        float d1 = d * (float)sc, m1 = dmin * (float)mn;
        scale_min_k4(is + 1, scales, &sc, &mn);
        float d2 = d * (float)sc, m2 = dmin * (float)mn;
        uint8_t u1 = (uint8_t)(1u << is), u2 = (uint8_t)(2u << is);
        for (int l = 0; l < 32; l++) {
            int x = (q[l] & 0x0F) + (five && (qh[l] & u1) ? 16 : 0);
            float v = d1 * (float)x;
            *y++ = v - m1;
        }
        for (int l = 0; l < 32; l++) {
            int x = (q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0);
            float v = d2 * (float)x;
            *y++ = v - m2;
        }
    }
}
static void deq_q4_k(const uint8_t *b, float *y) { deq_k45(b, y, 0); }
static void deq_q5_k(const uint8_t *b, float *y) { deq_k45(b, y, 1); }

/* Q6_K (210 bytes): ql[128] low nibbles, qh[64] 2-bit highs, int8 scales[16], f16 d; value =
 * d * scale * (q - 32), evaluated (d * scale) * q as ggml does. */
static void deq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16_to_f32(ld_u16(b + 208));
    for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

static const struct {
    uint32_t block, bytes;
    void (*deq)(const uint8_t *b, float *y);
} block_types[ST_TYPE_COUNT] = {
    [ST_Q4_0] = { 32, 18, deq_q4_0 }, [ST_Q4_1] = { 32, 20, deq_q4_1 },   [ST_Q5_0] = { 32, 22, deq_q5_0 },
    [ST_Q5_1] = { 32, 24, deq_q5_1 }, [ST_Q8_0] = { 32, 34, deq_q8_0 },   [ST_Q4_K] = { 256, 144, deq_q4_k },
    [ST_Q5_K] = { 256, 176, deq_q5_k }, [ST_Q6_K] = { 256, 210, deq_q6_k },
};

int gguf_row_f32(const SrcTensor *t, uint64_t r, float *out, char *err) {
    if (t->type >= ST_TYPE_COUNT || !block_types[t->type].deq) return errf(err, "%s: tensor '%s' is not ggml blocks", t->file, t->name);
    uint64_t nb = src_cols(t) / block_types[t->type].block, bytes = block_types[t->type].bytes;
    const uint8_t *p = t->data + r * nb * bytes;
    for (uint64_t i = 0; i < nb; i++) block_types[t->type].deq(p + i * bytes, out + i * block_types[t->type].block);
    return 0;
}

/* ==== Structural pass: header, key/values, tensor records ==== */

#define GGUF_MAX_KV 4096

enum { GV_U8, GV_I8, GV_U16, GV_I16, GV_U32, GV_I32, GV_F32, GV_BOOL, GV_STRING, GV_ARRAY, GV_U64, GV_I64, GV_F64, GV_COUNT };
static const uint8_t gv_size[GV_COUNT] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
static const char *const gv_name[GV_COUNT] = { "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64" };

typedef struct {
    const char *key;      /* not NUL-terminated: keylen bytes */
    uint64_t keylen;
    uint32_t type;        /* GV_* */
    uint32_t arr_type;    /* GV_ARRAY: element type */
    uint64_t arr_n;       /* GV_ARRAY: element count */
    const uint8_t *val;   /* the value (for arrays: the first element) */
} Kv;

typedef struct {
    char name[GB_NAME_MAX];
    uint32_t ndim, ggml;
    uint64_t ne[2];
    uint64_t offset, bytes; /* offset relative to the data section */
} TensorRec;

typedef struct {
    const char *path;
    const uint8_t *base;
    uint64_t size;
    Kv *kv;
    uint64_t n_kv;
    TensorRec *tr;
    uint64_t n_tr;
    uint64_t data_off;
} Gguf;

static void gguf_free(Gguf *g) {
    free(g->kv);
    free(g->tr);
}

/* A GGUF string: u64 length + bytes. */
static const uint8_t *rd_str(Reader *r, uint64_t *len) {
    *len = rd_u64(r);
    return rd_bytes(r, *len);
}

/* Step over one value of type `type`; arrays of arrays are refused (no Llama key uses them). */
static int skip_value(Reader *r, uint32_t type, uint32_t *arr_type, uint64_t *arr_n) {
    if (type >= GV_COUNT) return -1;
    if (type == GV_STRING) {
        uint64_t n;
        return rd_str(r, &n) ? 0 : -1;
    }
    if (type != GV_ARRAY) return rd_bytes(r, gv_size[type]) ? 0 : -1;
    uint32_t et = rd_u32(r);
    uint64_t n = rd_u64(r);
    if (r->bad || et >= GV_COUNT || et == GV_ARRAY) return -1;
    *arr_type = et;
    *arr_n = n;
    if (et == GV_STRING) {
        if (n > (r->len - r->pos) / 8) return -1; /* each string takes at least its 8-byte length */
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len;
            if (!rd_str(r, &len)) return -1;
        }
        return 0;
    }
    uint64_t bytes;
    return mul_u64(n, gv_size[et], &bytes) && rd_bytes(r, bytes) ? 0 : -1;
}

static const Kv *kv_find(const Gguf *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].keylen == n && memcmp(g->kv[i].key, key, n) == 0) return &g->kv[i];
    return NULL;
}

static int cmp_offset(const void *a, const void *b) {
    const TensorRec *x = *(const TensorRec *const *)a, *y = *(const TensorRec *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int read_tensor_rec(Gguf *g, Reader *r, TensorRec *t, char *err) {
    uint64_t nlen;
    const uint8_t *name = rd_str(r, &nlen);
    if (!name) return errf(err, "%s: truncated tensor record", g->path);
    if (nlen == 0 || nlen >= GB_NAME_MAX || memchr(name, 0, (size_t)nlen))
        return errf(err, "%s: tensor name '%.*s' is empty, too long or has a NUL byte", g->path, (int)(nlen < 64 ? nlen : 64), (const char *)name);
    memcpy(t->name, name, (size_t)nlen);
    t->name[nlen] = 0;
    t->ndim = rd_u32(r);
    if (r->bad) return errf(err, "%s: truncated tensor record '%s'", g->path, t->name);
    if (t->ndim < 1 || t->ndim > 2) return errf(err, "%s: tensor '%s' has %u dimensions (Llama tensors have 1 or 2)", g->path, t->name, t->ndim);
    t->ne[1] = 1;
    uint64_t count = 1;
    for (uint32_t d = 0; d < t->ndim; d++) {
        t->ne[d] = rd_u64(r);
        if (r->bad) return errf(err, "%s: truncated tensor record '%s'", g->path, t->name);
        if (t->ne[d] == 0 || !mul_u64(count, t->ne[d], &count) || count > (1ull << 48))
            return errf(err, "%s: tensor '%s' has an impossible shape", g->path, t->name);
    }
    t->ggml = rd_u32(r);
    t->offset = rd_u64(r);
    if (r->bad) return errf(err, "%s: truncated tensor record '%s'", g->path, t->name);
    if (t->ggml >= N_GGML_TYPES || !ggml_types[t->ggml].name) return errf(err, "%s: tensor '%s' has unknown ggml type %u", g->path, t->name, t->ggml);
    if (!ggml_types[t->ggml].st)
        return errf(err, "%s: tensor '%s' has ggml type %s, which this importer does not read (F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K)",
                    g->path, t->name, ggml_types[t->ggml].name);
    uint32_t block = ggml_types[t->ggml].block;
    if (t->ne[0] % block) return errf(err, "%s: tensor '%s' has rows of %llu, not a multiple of the %s block (%u)", g->path, t->name, (unsigned long long)t->ne[0], ggml_types[t->ggml].name, block);
    t->bytes = count / block * ggml_types[t->ggml].bytes; /* count < 2^48, bytes per block < 2^9 */
    return 0;
}

static int gguf_parse(Gguf *g, const char *path, const MappedFile *m, char *err) {
    memset(g, 0, sizeof *g);
    g->path = path;
    g->base = m->data;
    g->size = m->size;
    Reader r = reader(m->data, m->size);
    const uint8_t *magic = rd_bytes(&r, 4);
    if (!magic || memcmp(magic, "GGUF", 4) != 0) return errf(err, "%s: not a GGUF file (bad magic)", path);
    uint32_t version = rd_u32(&r);
    uint64_t n_tr = rd_u64(&r), n_kv = rd_u64(&r);
    if (r.bad) return errf(err, "%s: truncated GGUF header", path);
    if (version == 0x03000000 || version == 0x02000000) return errf(err, "%s: big-endian GGUF is not supported", path);
    if (version != 2 && version != 3) return errf(err, "%s: GGUF version %u is not supported (2 or 3)", path, version);
    /* every record takes bytes of the file: a key/value at least 8+1+4+1, a tensor at least 8+1+4+8+4+8 */
    uint64_t rest = m->size - r.pos;
    if (n_kv > rest / 14) return errf(err, "%s: key/value count %llu is impossible for a %llu-byte file", path, (unsigned long long)n_kv, (unsigned long long)m->size);
    if (n_tr > rest / 33) return errf(err, "%s: tensor count %llu is impossible for a %llu-byte file", path, (unsigned long long)n_tr, (unsigned long long)m->size);
    /* llama.cpp's Llama files have ~40 keys and 9 tensors a layer; the limits keep the duplicate checks cheap */
    if (n_kv > GGUF_MAX_KV) return errf(err, "%s: key/value count %llu exceeds %d", path, (unsigned long long)n_kv, GGUF_MAX_KV);
    if (n_tr > SRC_MAX_TENSORS) return errf(err, "%s: tensor count %llu exceeds %d", path, (unsigned long long)n_tr, SRC_MAX_TENSORS);
    g->kv = calloc((size_t)n_kv + 1, sizeof *g->kv);
    g->tr = calloc((size_t)n_tr + 1, sizeof *g->tr);
    if (!g->kv || !g->tr) return errf(err, "out of memory");
    for (uint64_t i = 0; i < n_kv; i++) {
        Kv *k = &g->kv[i];
        k->key = (const char *)rd_str(&r, &k->keylen);
        k->type = rd_u32(&r);
        if (r.bad) return errf(err, "%s: truncated key/value %llu", path, (unsigned long long)i);
        if (k->keylen == 0 || k->keylen > 65535 || memchr(k->key, 0, (size_t)k->keylen))
            return errf(err, "%s: key/value %llu has a bad key", path, (unsigned long long)i);
        k->val = r.p + r.pos;
        if (k->type >= GV_COUNT) return errf(err, "%s: key '%.*s' has unknown value type %u", path, (int)k->keylen, k->key, k->type);
        if (skip_value(&r, k->type, &k->arr_type, &k->arr_n))
            return errf(err, "%s: key '%.*s': value runs past the end of the file or is malformed", path, (int)k->keylen, k->key);
        if (k->type == GV_ARRAY) k->val += 12;
        g->n_kv = i + 1;
        for (uint64_t j = 0; j < i; j++)
            if (g->kv[j].keylen == k->keylen && memcmp(g->kv[j].key, k->key, (size_t)k->keylen) == 0)
                return errf(err, "%s: key '%.*s' appears twice", path, (int)k->keylen, k->key);
    }
    uint64_t alignment = 32;
    const Kv *al = kv_find(g, "general.alignment");
    if (al) {
        if (al->type != GV_U32) return errf(err, "%s: general.alignment must be u32", path);
        alignment = ld_u32(al->val);
        if (alignment == 0 || (alignment & (alignment - 1)) || alignment > 65536) return errf(err, "%s: general.alignment %llu is not a power of two", path, (unsigned long long)alignment);
    }
    for (uint64_t i = 0; i < n_tr; i++) {
        if (read_tensor_rec(g, &r, &g->tr[i], err)) return -1;
        g->n_tr = i + 1;
    }
    g->data_off = align_up(r.pos, alignment);
    if (g->data_off > m->size) return errf(err, "%s: file ends before its data section", path);
    uint64_t data_size = m->size - g->data_off;
    for (uint64_t i = 0; i < n_tr; i++) {
        TensorRec *t = &g->tr[i];
        if (t->offset % alignment) return errf(err, "%s: tensor '%s' offset %llu is not aligned to %llu", path, t->name, (unsigned long long)t->offset, (unsigned long long)alignment);
        if (t->offset > data_size || t->bytes > data_size - t->offset)
            return errf(err, "%s: tensor '%s' (%llu bytes at data offset %llu) lies past the end of the file", path, t->name, (unsigned long long)t->bytes, (unsigned long long)t->offset);
    }
    /* overlapping tensors would let one tensor's bytes pass for another's */
    TensorRec **order = malloc(((size_t)n_tr + 1) * sizeof *order);
    if (!order) return errf(err, "out of memory");
    for (uint64_t i = 0; i < n_tr; i++) order[i] = &g->tr[i];
    qsort(order, (size_t)n_tr, sizeof *order, cmp_offset);
    int rc = 0;
    for (uint64_t i = 1; i < n_tr && rc == 0; i++)
        if (order[i - 1]->offset + order[i - 1]->bytes > order[i]->offset) rc = errf(err, "%s: tensors '%s' and '%s' overlap", path, order[i - 1]->name, order[i]->name);
    free(order);
    return rc;
}

/* ==== Typed metadata access ==== */

static int is_int_type(uint32_t t) { return t <= GV_I32 || t == GV_U64 || t == GV_I64; }

/* An integer of any width/sign at p. */
static int64_t ld_int(uint32_t type, const uint8_t *p, int *neg_overflow) {
    *neg_overflow = 0;
    switch (type) {
    case GV_U8: return p[0];
    case GV_I8: return (int8_t)p[0];
    case GV_U16: return ld_u16(p);
    case GV_I16: return (int16_t)ld_u16(p);
    case GV_U32: return ld_u32(p);
    case GV_I32: return (int32_t)ld_u32(p);
    case GV_U64: { uint64_t v = ld_u64(p); if (v > INT64_MAX) { *neg_overflow = 1; return INT64_MAX; } return (int64_t)v; }
    default: return (int64_t)ld_u64(p);
    }
}

/* Integer key in [lo, hi]; def when absent and not required. */
static int get_int(const Gguf *g, const char *key, int required, int64_t def, int64_t lo, int64_t hi, int64_t *out, char *err) {
    const Kv *k = kv_find(g, key);
    if (!k) {
        if (required) return errf(err, "%s: missing metadata key %s", g->path, key);
        *out = def;
        return 0;
    }
    if (!is_int_type(k->type)) return errf(err, "%s: %s must be an integer (is %s)", g->path, key, gv_name[k->type]);
    int ovf;
    int64_t v = ld_int(k->type, k->val, &ovf);
    if (ovf || v < lo || v > hi) return errf(err, "%s: %s = %lld is out of range [%lld, %lld]", g->path, key, (long long)v, (long long)lo, (long long)hi);
    *out = v;
    return 0;
}

static int get_u32(const Gguf *g, const char *key, int required, uint32_t def, uint32_t *out, char *err) {
    int64_t v;
    if (get_int(g, key, required, def, 1, 0x7FFFFFFF, &v, err)) return -1;
    *out = (uint32_t)v;
    return 0;
}

static int get_float(const Gguf *g, const char *key, int required, float def, float *out, char *err) {
    const Kv *k = kv_find(g, key);
    if (!k) {
        if (required) return errf(err, "%s: missing metadata key %s", g->path, key);
        *out = def;
        return 0;
    }
    if (k->type == GV_F32) *out = ld_f32(k->val);
    else if (k->type == GV_F64) {
        union { uint64_t u; double d; } v = { .u = ld_u64(k->val) };
        *out = (float)v.d;
    } else return errf(err, "%s: %s must be a float (is %s)", g->path, key, gv_name[k->type]);
    if (!isfinite(*out)) return errf(err, "%s: %s is not finite", g->path, key);
    return 0;
}

/* String key: *s (not NUL-terminated) and *n, or NULL when absent and not required. */
static int get_str(const Gguf *g, const char *key, int required, const char **s, uint64_t *n, char *err) {
    const Kv *k = kv_find(g, key);
    *s = NULL;
    *n = 0;
    if (!k) return required ? errf(err, "%s: missing metadata key %s", g->path, key) : 0;
    if (k->type != GV_STRING) return errf(err, "%s: %s must be a string (is %s)", g->path, key, gv_name[k->type]);
    *n = ld_u64(k->val);
    *s = (const char *)k->val + 8;
    return 0;
}

static int str_is(const char *s, uint64_t n, const char *want) { return s && n == strlen(want) && memcmp(s, want, (size_t)n) == 0; }

static int get_bool(const Gguf *g, const char *key, int def, int *out, char *err) {
    const Kv *k = kv_find(g, key);
    if (!k) { *out = def; return 0; }
    if (k->type != GV_BOOL || k->val[0] > 1) return errf(err, "%s: %s must be a bool", g->path, key);
    *out = k->val[0];
    return 0;
}

/* An array key of element type et with exactly n elements (n == 0: any count, returned in *n). */
static const Kv *get_array(const Gguf *g, const char *key, uint32_t et, uint64_t *n, char *err) {
    const Kv *k = kv_find(g, key);
    if (!k) { errf(err, "%s: missing metadata key %s", g->path, key); return NULL; }
    if (k->type != GV_ARRAY || k->arr_type != et) { errf(err, "%s: %s must be an array of %s", g->path, key, gv_name[et]); return NULL; }
    if (*n && k->arr_n != *n) { errf(err, "%s: %s has %llu entries, expected %llu", g->path, key, (unsigned long long)k->arr_n, (unsigned long long)*n); return NULL; }
    *n = k->arr_n;
    return k;
}

/* ==== Config ==== */

static int read_config(const Gguf *g, Config *c, char *err) {
    const char *s;
    uint64_t n;
    memset(c, 0, sizeof *c);
    if (get_str(g, "general.architecture", 1, &s, &n, err)) return -1;
    if (!str_is(s, n, "llama")) return errf(err, "%s: general.architecture is '%.*s'; only llama is supported", g->path, (int)(n < 40 ? n : 40), s);
    if (kv_find(g, "llama.attention.head_count") && kv_find(g, "llama.attention.head_count")->type == GV_ARRAY)
        return errf(err, "%s: per-layer head counts are not supported", g->path);
    int64_t experts;
    if (get_int(g, "llama.expert_count", 0, 0, 0, 0, &experts, err)) return errf(err, "%s: mixture-of-experts models are not supported", g->path);
    if (get_u32(g, "llama.embedding_length", 1, 0, &c->dim, err) || get_u32(g, "llama.block_count", 1, 0, &c->n_layers, err) ||
        get_u32(g, "llama.attention.head_count", 1, 0, &c->n_heads, err) ||
        get_u32(g, "llama.attention.head_count_kv", 0, c->n_heads, &c->n_kv_heads, err) ||
        get_u32(g, "llama.feed_forward_length", 1, 0, &c->hidden_dim, err) || get_u32(g, "llama.context_length", 1, 0, &c->max_seq_len, err) ||
        get_float(g, "llama.rope.freq_base", 0, 10000.0f, &c->rope_theta, err) ||
        get_float(g, "llama.attention.layer_norm_rms_epsilon", 1, 0, &c->norm_eps, err))
        return -1;
    if (c->dim % c->n_heads && !kv_find(g, "llama.attention.key_length"))
        return errf(err, "%s: llama.embedding_length is not a multiple of llama.attention.head_count", g->path);
    uint32_t vlen, rdim;
    if (get_u32(g, "llama.attention.key_length", 0, c->dim / c->n_heads, &c->head_dim, err) ||
        get_u32(g, "llama.attention.value_length", 0, c->head_dim, &vlen, err) ||
        get_u32(g, "llama.rope.dimension_count", 0, c->head_dim, &rdim, err))
        return -1;
    if (vlen != c->head_dim) return errf(err, "%s: llama.attention.value_length %u differs from key_length %u", g->path, vlen, c->head_dim);
    if (rdim != c->head_dim) return errf(err, "%s: llama.rope.dimension_count %u differs from the head size %u (partial RoPE is not Llama)", g->path, rdim, c->head_dim);
    if (get_str(g, "llama.rope.scaling.type", 0, &s, &n, err)) return -1;
    if (s && !str_is(s, n, "none")) return errf(err, "%s: llama.rope.scaling.type '%.*s' is not supported", g->path, (int)(n < 40 ? n : 40), s);
    c->source = SRC_GGUF;
    return 0;
}

/* rope_freqs.weight holds per-pair divisors of the RoPE frequency (llama.cpp writes it for
 * Llama 3.1+ from the HF rope_scaling; no llama.rope.scaling.* key says so). The runtime
 * rebuilds the frequencies from Config, so the llama3 parameters are recovered from them
 * (rope_from_divisors, import.c). */
static int recover_rope(const Gguf *g, const TensorRec *t, Config *c, char *err) {
    uint32_t half = c->head_dim / 2;
    if (t->ggml != 0 || t->ndim != 1 || t->ne[0] != half)
        return errf(err, "%s: rope_freqs.weight must be F32 [%u] (head_dim/2)", g->path, half);
    const uint8_t *p = g->base + g->data_off + t->offset;
    double *div = malloc(half * sizeof *div);
    if (!div) return errf(err, "out of memory");
    for (uint32_t i = 0; i < half; i++) div[i] = ld_f32(p + 4 * i);
    char what[300];
    snprintf(what, sizeof what, "%.250s: rope_freqs.weight", g->path);
    int rc = rope_from_divisors(c, div, what, err);
    free(div);
    return rc;
}

/* ==== Tokenizer ==== */

#define LLAMA3_BOS 128000 /* <|begin_of_text|>: first id after Llama 3's 128000 BPE ranks */

/* Token text -> id for the merges list: open addressing over the (byte-level) token strings. */
typedef struct {
    const char *const *text;
    const uint32_t *len;
    int32_t *slot; /* [cap], -1 = empty */
    uint64_t cap;
} TokIndex;

static uint64_t hash_bytes(const char *s, uint64_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int32_t index_find(const TokIndex *ix, const char *s, uint64_t n) {
    for (uint64_t h = hash_bytes(s, n) & (ix->cap - 1);; h = (h + 1) & (ix->cap - 1)) {
        int32_t id = ix->slot[h];
        if (id < 0) return -1;
        if (ix->len[id] == n && memcmp(ix->text[id], s, (size_t)n) == 0) return id;
    }
}

static int read_tokenizer(const Gguf *g, Source *s, char *err) {
    const char *model, *pre;
    uint64_t model_n, pre_n, n = 0, nt;
    if (get_str(g, "tokenizer.ggml.model", 1, &model, &model_n, err) || get_str(g, "tokenizer.ggml.pre", 0, &pre, &pre_n, err)) return -1;
    int spm;
    if (str_is(model, model_n, "gpt2")) {
        /* our pre-tokenizer is Llama 3's regex: any other gpt2-family split would tokenize differently.
         * Files converted before llama.cpp wrote the key (spring 2024) have none: checked below. */
        if (pre && !str_is(pre, pre_n, "llama-bpe") && !str_is(pre, pre_n, "llama3"))
            return errf(err, "%s: tokenizer.ggml.pre is '%.*s'; only Llama 3's (llama-bpe) is supported", g->path, (int)(pre_n < 40 ? pre_n : 40), pre);
        spm = 0;
    } else if (str_is(model, model_n, "llama")) {
        if (pre && !str_is(pre, pre_n, "default")) return errf(err, "%s: tokenizer.ggml.pre '%.*s' is not supported for a SentencePiece vocabulary", g->path, (int)(pre_n < 40 ? pre_n : 40), pre);
        int prefix = 1, collapse = 0;
        if (get_bool(g, "tokenizer.ggml.add_space_prefix", 1, &prefix, err) || get_bool(g, "tokenizer.ggml.remove_extra_whitespaces", 0, &collapse, err)) return -1;
        if (!prefix || collapse) return errf(err, "%s: SentencePiece settings differ from Llama 2's (add_space_prefix / remove_extra_whitespaces)", g->path);
        spm = 1;
    } else {
        return errf(err, "%s: tokenizer.ggml.model '%.*s' is not supported (gpt2 for Llama 3, llama for Llama 2)", g->path, (int)(model_n < 40 ? model_n : 40), model);
    }
    const Kv *tokens = get_array(g, "tokenizer.ggml.tokens", GV_STRING, &n, err);
    if (!tokens) return -1;
    if (n == 0 || n > 0x7FFFFFFF) return errf(err, "%s: tokenizer.ggml.tokens has %llu entries", g->path, (unsigned long long)n);
    nt = n;
    const Kv *types = get_array(g, "tokenizer.ggml.token_type", GV_I32, &nt, err), *scores = NULL;
    if (!types) return -1;
    if (spm && !(scores = get_array(g, "tokenizer.ggml.scores", GV_F32, &nt, err))) return -1;
    int64_t bos, eos;
    if (get_int(g, "tokenizer.ggml.bos_token_id", 0, -1, -1, (int64_t)n - 1, &bos, err) ||
        get_int(g, "tokenizer.ggml.eos_token_id", 0, -1, -1, (int64_t)n - 1, &eos, err))
        return -1;

    int rc = -1;
    const char **raw = malloc(n * sizeof *raw); /* as stored (byte-level form for gpt2) */
    const char **text = malloc(n * sizeof *text);
    uint32_t *raw_len = malloc(n * sizeof *raw_len), *len = malloc(n * sizeof *len), *merges = NULL;
    uint8_t *kind = malloc(n), *arena = NULL;
    float *score = spm ? malloc(n * sizeof *score) : NULL;
    TokIndex ix = { raw, raw_len, NULL, 0 };
    if (!raw || !text || !raw_len || !len || !kind || (spm && !score)) { errf(err, "out of memory"); goto done; }
    Reader r = reader(tokens->val, g->size - (uint64_t)(tokens->val - g->base));
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l;
        raw[i] = (const char *)rd_str(&r, &l); /* the structural pass proved these reads stay inside */
        if (l > 0xFFFFFF) { errf(err, "%s: token %llu is %llu bytes long", g->path, (unsigned long long)i, (unsigned long long)l); goto done; }
        raw_len[i] = (uint32_t)l;
        total += l;
        int k = vocab_kind((int32_t)ld_u32(types->val + 4 * i), spm);
        if (k < 0) { errf(err, "%s: token %llu has token type %d, which a %s vocabulary cannot have", g->path, (unsigned long long)i, (int32_t)ld_u32(types->val + 4 * i), spm ? "SentencePiece" : "gpt2"); goto done; }
        kind[i] = (uint8_t)k;
        if (spm) score[i] = ld_f32(scores->val + 4 * i);
    }
    if (!spm && !pre) {
        if (n <= LLAMA3_BOS || !str_is(raw[LLAMA3_BOS], raw_len[LLAMA3_BOS], "<|begin_of_text|>")) {
            errf(err, "%s: no tokenizer.ggml.pre and the vocabulary is not Llama 3's; cannot tell how to pre-tokenize", g->path);
            goto done;
        }
        snprintf(s->warning, sizeof s->warning, "%.300s: no tokenizer.ggml.pre (converted by an old llama.cpp); using Llama 3's pre-tokenizer, as the vocabulary is Llama 3's", g->path);
    }
    /* gpt2 NORMAL tokens are stored in GPT-2's byte-to-unicode form; the builder wants raw bytes */
    arena = malloc(total + 1);
    if (!arena) { errf(err, "out of memory"); goto done; }
    uint64_t at = 0;
    for (uint64_t i = 0; i < n; i++) {
        text[i] = raw[i];
        len[i] = raw_len[i];
        if (spm || kind[i] != TOKK_NORMAL) continue;
        int64_t k = tok_bytelevel_decode(raw[i], raw_len[i], arena + at);
        if (k < 0) { errf(err, "%s: token %llu is not GPT-2 byte-level text", g->path, (unsigned long long)i); goto done; }
        text[i] = (const char *)arena + at;
        len[i] = (uint32_t)k;
        at += (uint64_t)k;
    }
    uint64_t n_merges = 0;
    if (!spm) {
        const Kv *mk = get_array(g, "tokenizer.ggml.merges", GV_STRING, &n_merges, err);
        if (!mk) goto done;
        for (ix.cap = 16; ix.cap < 2 * n; ix.cap *= 2) {}
        ix.slot = malloc(ix.cap * sizeof *ix.slot);
        merges = malloc((n_merges + 1) * 2 * sizeof *merges);
        if (!ix.slot || !merges) { errf(err, "out of memory"); goto done; }
        memset(ix.slot, 0xFF, ix.cap * sizeof *ix.slot);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t h = hash_bytes(raw[i], raw_len[i]) & (ix.cap - 1);
            while (ix.slot[h] >= 0) h = (h + 1) & (ix.cap - 1);
            ix.slot[h] = (int32_t)i;
        }
        r = reader(mk->val, g->size - (uint64_t)(mk->val - g->base));
        for (uint64_t i = 0; i < n_merges; i++) {
            uint64_t l;
            const char *m = (const char *)rd_str(&r, &l);
            const char *sp = memchr(m, ' ', (size_t)l);
            int32_t a = sp ? index_find(&ix, m, (uint64_t)(sp - m)) : -1;
            int32_t b = sp ? index_find(&ix, sp + 1, l - (uint64_t)(sp - m) - 1) : -1;
            if (a < 0 || b < 0 || kind[a] != TOKK_NORMAL || kind[b] != TOKK_NORMAL) {
                errf(err, "%s: merge %llu ('%.*s') does not name two ordinary tokens", g->path, (unsigned long long)i, (int)(l < 60 ? l : 60), m);
                goto done;
            }
            merges[2 * i] = (uint32_t)a;
            merges[2 * i + 1] = (uint32_t)b;
        }
    }
    TokSpec spec = { spm ? TOK_SPM_BPE : TOK_LLAMA3_BPE, (uint32_t)n, text, len, kind, (uint32_t)n_merges, spm ? NULL : merges, score, !spm,
                     (int32_t)bos, (int32_t)eos, TOK_PRETOK_LLAMA3 };
    char terr[ERRLEN];
    if (tok_build(&s->tok, &spec, terr)) { errf(err, "%s: vocabulary: %s", g->path, terr); goto done; }
    rc = 0;
done:
    free(raw); free(text); free(raw_len); free(len); free(kind); free(score); free(arena); free(ix.slot); free(merges);
    return rc;
}

/* ==== Tensors ==== */

static const NameMap gguf_global[] = {
    { "token_embd", "model.embed_tokens", 0 },
    { "output_norm", "model.norm", 0 },
    { "output", "lm_head", 0 },
    { NULL, NULL, 0 },
};
static const NameMap gguf_layer[] = {
    { "attn_norm", "input_layernorm", 0 },    { "attn_q", "self_attn.q_proj", MAP_ROPE_Q }, { "attn_k", "self_attn.k_proj", MAP_ROPE_K },
    { "attn_v", "self_attn.v_proj", 0 },       { "attn_output", "self_attn.o_proj", 0 },      { "ffn_norm", "post_attention_layernorm", 0 },
    { "ffn_gate", "mlp.gate_proj", 0 },       { "ffn_up", "mlp.up_proj", 0 },                { "ffn_down", "mlp.down_proj", 0 },
    { NULL, NULL, 0 },
};

static int add_tensors(const Gguf *g, Source *s, const char *kept, char *err) {
    Config *c = &s->cfg;
    int have_output = 0;
    for (uint64_t i = 0; i < g->n_tr; i++) {
        const TensorRec *t = &g->tr[i];
        if (strcmp(t->name, "rope_freqs.weight") == 0) {
            if (recover_rope(g, t, c, err)) return -1;
            continue;
        }
        SrcTensor st = { 0 };
        uint32_t layer;
        const NameMap *m = map_tensor_name(t->name, "blk.", gguf_global, gguf_layer, st.name, &layer);
        st.type = ggml_types[t->ggml].st;
        st.ndim = t->ndim;
        st.shape[0] = t->ndim == 2 ? t->ne[1] : t->ne[0];
        st.shape[1] = t->ne[0];
        st.data = g->base + g->data_off + t->offset;
        st.bytes = t->bytes;
        st.file = kept;
        if (m && m->rope) {
            st.interleaved_heads = m->rope == MAP_ROPE_Q ? c->n_heads : c->n_kv_heads;
            if (t->ndim != 2 || st.shape[0] != (uint64_t)st.interleaved_heads * c->head_dim || c->head_dim % 2)
                return errf(err, "%s: tensor '%s' is not [%u heads x %u, in]", g->path, t->name, st.interleaved_heads, c->head_dim);
        }
        have_output |= strcmp(st.name, "lm_head.weight") == 0;
        if (source_add(s, &st, err)) return -1;
    }
    c->tied = !have_output; /* llama.cpp: no output.weight means token_embd is the output matrix */
    return 0;
}

/* ==== Entry point ==== */

int gguf_open(Source *s, const char *path, char *err) {
    memset(s, 0, sizeof *s);
    s->origin = path;
    const MappedFile *m;
    const char *kept;
    Gguf g = { 0 };
    if (source_map(s, path, &m, &kept, err) || gguf_parse(&g, kept, m, err) || read_config(&g, &s->cfg, err) ||
        add_tensors(&g, s, kept, err))
        goto fail;
    /* vocab_size: llama.vocab_size when written, else the token count (what llama.cpp uses) */
    uint64_t n_tok = 0;
    const Kv *tk = kv_find(&g, "tokenizer.ggml.tokens");
    if (tk && tk->type == GV_ARRAY) n_tok = tk->arr_n;
    if (get_u32(&g, "llama.vocab_size", 0, n_tok > 0x7FFFFFFF ? 0 : (uint32_t)n_tok, &s->cfg.vocab_size, err)) goto fail;
    if (read_tokenizer(&g, s, err)) goto fail;
    const char *tmpl;
    uint64_t tn;
    if (get_str(&g, "tokenizer.chat_template", 0, &tmpl, &tn, err)) goto fail;
    if (tmpl) {
        if (memchr(tmpl, 0, (size_t)tn)) { errf(err, "%s: tokenizer.chat_template contains a NUL byte", path); goto fail; }
        s->chat_template = malloc((size_t)tn + 1);
        if (!s->chat_template) { errf(err, "out of memory"); goto fail; }
        memcpy(s->chat_template, tmpl, (size_t)tn);
        s->chat_template[tn] = 0;
    }
    char verr[ERRLEN];
    if (config_validate(&s->cfg, verr)) { errf(err, "%s: %s", path, verr); goto fail; }
    gguf_free(&g);
    return 0;
fail:
    gguf_free(&g);
    source_free(s);
    return -1;
}
