/* quant.c: weight dtypes, conversion, the matmul and attention kernels, and the thread pool.
 *
 * What it does: converts rows between f32 and the storage dtypes (f32, bf16, f16, Q8_0, Q4_0),
 * computes y[T, rows] = x[T, cols] @ W^T for every dtype, causal attention for blocks of
 * queries that share a kv head, and SwiGLU's silu(gate) * up. Each has one scalar reference
 * (the spec, see quant.h "The matmul contract", "The attention contract" and silu_mul) plus
 * SIMD kernels that reproduce it bit
 * for bit: AVX2/FMA/F16C and AVX512-VNNI on x86-64, NEON (optionally dotprod) on aarch64.
 *
 * What it mirrors: the block formats are ggml's block_q8_0 / block_q4_0 and the quantizers are
 * ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref, so GGUF tensors import bit for bit.
 * The GEMM follows llamafile's tinyBLAS idea (a register tile of RM rows x RN tokens, the ISA
 * read once into a table of function pointers) with one twist: every tile stores W transposed
 * so that vector lanes hold 8 (avx512: 16) output ROWS and x is broadcast one token at a time.
 * Each output element then accumulates in its own lane in plain k (or block) order, so no
 * horizontal sums are needed, no k tail exists, and the result is identical for any tile
 * shape, SIMD width or thread split. Q4_0 tiles keep the nibbles (unpacked in registers).
 * Model weights are packed once at load (tensor_prepack) and streamed from then on; a tensor
 * without prepacked tiles is packed per call, k-chunk by k-chunk, and at T = 1 (decode) read
 * in place with the same lanes instead. Attention follows the usual blocked layout (several keys x several
 * queries per step, flash-attention style loads) but keeps every output's operation order.
 *
 * Non-goals: no K-quants / AWQ / bitsandbytes yet (dtype codes reserved, see quant.h; each
 * needs a table entry and a tile packer), no GPU, no -march=native builds, no fast-math.
 * Activations of quantized matmuls are quantized to 8 bits per block of 32 on the fly (as
 * ggml does for Q8_0/Q4_0); everything else stays f32.
 */
#include "quant.h"
#include "util.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Every kernel reproduces its scalar reference operation for operation, so a*b + c written in
 * C must stay two roundings: GCC does not contract under -std=c11 (the Makefile's), clang has
 * to be told. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

#if defined(__x86_64__) || defined(__i386__)
#define QUANT_X86 1
#include <cpuid.h>
#include <immintrin.h>
#elif defined(__aarch64__)
#define QUANT_NEON 1
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

/* Fully unroll the small constant-trip loops of the register tiles so every accumulator
 * stays in a register (GCC and clang both accept this spelling). */
#define UNROLL _Pragma("GCC unroll 16")

/* ==== Activation blocks and tiles: the internal layouts ==== */

/* One block of 32 quantized activations. q is int8 except for the x86 VNNI kernels, which
 * store q + 128 as a byte (vpdpbusd multiplies unsigned by signed bytes); the tile's corr
 * field removes the offset again. */
typedef struct {
    float d; /* f32 scale: finer than GGUF's f16 activation scale, at no cost */
    int8_t q[QK];
} ActQ8;

#define TR 8 /* rows per tile group: the lanes of a 256-bit vector, or two NEON vectors (avx512: 16) */

/* A quantized tile group: 8 rows x one block of 32, transposed so that q[s] (32 bytes) holds
 * elements 4s..4s+3 of each of the 8 rows, row-major within the vector. Q8_0 (and later
 * bitsandbytes int8 rows) unpack to this; Q4_0 keeps its nibbles in TileQ4 below. */
typedef struct {
    int8_t q[QK / 4][TR][4];
    float d[TR];       /* row scales as f32 (exact f16 -> f32) */
    int32_t corr[TR];  /* 128 * sum(q) per row: the VNNI activation-offset correction */
} TileQ;
static_assert(sizeof(TileQ) == 320, "TileQ must stay a multiple of 64 bytes");

/* The avx512 set's tile group: the same with 16 rows, one zmm register of lanes. */
typedef struct {
    int8_t q[QK / 4][16][4];
    float d[16];
    int32_t corr[16];
} TileQ16;
static_assert(sizeof(TileQ16) == 640, "TileQ16 must stay a multiple of 64 bytes");

/* A Q4_0 tile group keeps the nibbles: byte [s][r][i] is byte 4s+i of row r's quants, whose
 * low nibble is element 4s+i and high nibble element 16+4s+i (each + 8). So step s of the
 * 16-byte row is TileQ's steps s and s+4 at once; kernels unpack (v & 15) - 8 and (v >> 4) - 8.
 * 24 bytes per row and block against Q4_0's 18, where TileQ would take 40. */
typedef struct {
    uint8_t q[QK / 8][TR][4];
    float d[TR];
    int32_t corr[TR];  /* as TileQ's, of the signed values */
} TileQ4;
typedef struct {
    uint8_t q[QK / 8][16][4];
    float d[16];
    int32_t corr[16];
} TileQ4x16;
static_assert(sizeof(TileQ4) == 192 && sizeof(TileQ4x16) == 384, "Q4 tiles must stay a multiple of 64 bytes");

/* A float tile group is float[cols][TR] (avx512: [cols][16]): element k of its rows, contiguous. */

/* Per-thread scratch, grown on demand and kept: tiles live on the worker that packs them,
 * activation blocks on the thread that calls matmul, attention scores on the thread that runs
 * the block. Workers free theirs when the pool shuts down. */
typedef struct { void *p; size_t cap; } Scratch;
static _Thread_local Scratch tls_tile, tls_act, tls_att;

static void *scratch(Scratch *s, size_t bytes) {
    if (bytes > s->cap) {
        free(s->p);
        s->cap = (bytes + 63) / 64 * 64;
        s->p = aligned_alloc(64, s->cap);
        if (!s->p) s->cap = 0;
    }
    return s->p;
}

static void scratch_release(void) {
    free(tls_tile.p);
    free(tls_act.p);
    free(tls_att.p);
    tls_tile = tls_act = tls_att = (Scratch){ 0 };
}

/* ==== DType table ==== */

typedef struct {
    const char *name;
    uint32_t block, block_bytes;
    int quantized; /* x goes through ActQ8 blocks */
    float (*dot_ref)(const uint8_t *wrow, const void *x, uint64_t cols); /* the spec, one output */
    void (*dequant)(const uint8_t *row, float *out, uint64_t cols);
    void (*quant)(const float *src, uint8_t *dst, uint64_t cols);
} DTypeInfo;

static const DTypeInfo dtypes[DT_COUNT]; /* filled after the reference functions below */

const char *dtype_name(uint32_t dt) { return dt < DT_COUNT ? dtypes[dt].name : NULL; }

int dtype_from_name(const char *name) {
    static const struct { const char *alias; int dt; } aliases[] = { { "q8", DT_Q8_0 }, { "q4", DT_Q4_0 } };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(aliases[i].alias, name) == 0) return aliases[i].dt;
    for (int i = 0; i < DT_COUNT; i++)
        if (dtypes[i].name && strcmp(dtypes[i].name, name) == 0) return i;
    return -1;
}

uint64_t dtype_row_bytes(uint32_t dt, uint64_t cols) {
    if (dt >= DT_COUNT || !dtypes[dt].name || cols % dtypes[dt].block) return 0;
    uint64_t r;
    return mul_u64(cols / dtypes[dt].block, dtypes[dt].block_bytes, &r) ? r : 0;
}

/* ==== Conversion and the scalar reference (the spec) ==== */

static inline float elem_f(uint32_t dt, const uint8_t *row, uint64_t k) {
    switch (dt) {
    case DT_F32: return ld_f32(row + 4 * k);
    case DT_BF16: return bf16_to_f32(ld_u16(row + 2 * k));
    default: return f16_to_f32(ld_u16(row + 2 * k));
    }
}

/* The 32 integer values and the scale of one Q8_0 / Q4_0 block, in element order. */
static inline float qblock_values(uint32_t dt, const uint8_t *blk, int8_t v[QK]) {
    if (dt == DT_Q8_0) {
        memcpy(v, blk + 2, QK);
    } else {
        for (int j = 0; j < QK / 2; j++) {
            v[j] = (int8_t)((blk[2 + j] & 0x0F) - 8);
            v[j + QK / 2] = (int8_t)((blk[2 + j] >> 4) - 8);
        }
    }
    return f16_to_f32(ld_u16(blk));
}

/* The scale an activation block keeps: amax/127 rounded to f16 as ggml's Q8_0 stores it (so a
 * q4/q8 linear computes what ggml's Q4_0/Q8_0 x Q8_0 dot products do, and the INT4 release's
 * q8act reference), except where f16 has no such value: above its range (no made-up inf) and
 * where it would round to 0 (a block of tiny values keeps them); there the f32 value stays.
 * The codes are nearbyint(x / f32 scale) either way. */
static inline float act_scale(float d) {
    float h = f16_to_f32(f32_to_f16(d));
    return h > 0 && h <= 65504.0f ? h : d;
}

/* Quantize one block of activations (quant.h: "activation blocks"). */
static void act_block_ref(const float *x, ActQ8 *a) {
    float amax = 0.0f;
    int finite = 1;
    for (int i = 0; i < QK; i++) {
        float v = fabsf(x[i]);
        if (!(v < INFINITY)) finite = 0;
        if (v > amax) amax = v;
    }
    float d = amax / 127.0f;
    if (!finite || !(d >= FLT_MIN)) {
        a->d = finite ? 0.0f : NAN;
        memset(a->q, 0, QK);
        return;
    }
    float id = 1.0f / d;
    a->d = act_scale(d);
    for (int i = 0; i < QK; i++) a->q[i] = (int8_t)nearbyintf(x[i] * id);
}

static void act_row_ref(const float *x, ActQ8 *a, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++) act_block_ref(x + b * QK, a + b);
}

/* Q4_0 rows [0, nr) into nibble tile groups of tr rows (TileQ4 or TileQ4x16 layout; rows
 * past nr get q = 0 and d = 0). It only moves whole bytes, so one portable packer serves every
 * set. */
static void pack_q4_nibbles(int tr, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, uint8_t *t) {
    const size_t qbytes = (size_t)QK / 8 * (size_t)tr * 4, step = qbytes + 8 * (size_t)tr;
    for (uint64_t b = 0; b < cols / QK; b++, t += step) {
        for (int r = 0; r < tr; r++) {
            const uint8_t *qs = w + (uint64_t)r * rb + b * sizeof(BlockQ4_0) + 2;
            float d = 0.0f;
            int32_t sum = 0;
            if (r < nr) {
                d = f16_to_f32(ld_u16(qs - 2));
                for (int i = 0; i < QK / 2; i++) sum += (qs[i] & 0x0F) + (qs[i] >> 4) - 16;
            }
            for (int st = 0; st < QK / 8; st++) {
                if (r < nr) memcpy(t + ((size_t)st * tr + r) * 4, qs + 4 * st, 4);
                else memset(t + ((size_t)st * tr + r) * 4, 0x88, 4);
            }
            memcpy(t + qbytes + 4 * (size_t)r, &d, 4);
            const int32_t corr = 128 * sum;
            memcpy(t + qbytes + 4 * (size_t)tr + 4 * (size_t)r, &corr, 4);
        }
    }
}
static void pack_q4_tr8(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile) { pack_q4_nibbles(TR, w, rb, nr, cols, tile); }
#if defined(QUANT_X86)
static void pack_q4_tr16(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile) { pack_q4_nibbles(16, w, rb, nr, cols, tile); }
#endif

/* acc += (d_w * d_a) * isum, as one fused step: the per-block rule every kernel follows. */
static inline float fold_block(float acc, float dw, float da, int32_t isum) {
    float s = dw * da;
    return fmaf(s, (float)isum, acc);
}

static float dot_f_ref(uint32_t dt, const uint8_t *w, const float *x, uint64_t cols) {
    float acc = 0.0f;
    for (uint64_t k = 0; k < cols; k++) acc = fmaf(elem_f(dt, w, k), x[k], acc);
    return acc;
}
static float dot_f32_scalar(const uint8_t *w, const void *x, uint64_t n) { return dot_f_ref(DT_F32, w, x, n); }
static float dot_bf16_scalar(const uint8_t *w, const void *x, uint64_t n) { return dot_f_ref(DT_BF16, w, x, n); }
static float dot_f16_scalar(const uint8_t *w, const void *x, uint64_t n) { return dot_f_ref(DT_F16, w, x, n); }

static float dot_q_ref(uint32_t dt, const uint8_t *w, const ActQ8 *a, uint64_t cols) {
    const uint64_t bytes = dt == DT_Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0);
    float acc = 0.0f;
    for (uint64_t b = 0; b < cols / QK; b++) {
        int8_t v[QK];
        float dw = qblock_values(dt, w + b * bytes, v);
        int32_t isum = 0;
        for (int i = 0; i < QK; i++) isum += v[i] * a[b].q[i];
        acc = fold_block(acc, dw, a[b].d, isum);
    }
    return acc;
}
static float dot_q8_scalar(const uint8_t *w, const void *a, uint64_t n) { return dot_q_ref(DT_Q8_0, w, a, n); }
static float dot_q4_scalar(const uint8_t *w, const void *a, uint64_t n) { return dot_q_ref(DT_Q4_0, w, a, n); }

static void dequant_f32(const uint8_t *p, float *out, uint64_t n) { memcpy(out, p, n * sizeof(float)); }
static void dequant_bf16(const uint8_t *p, float *out, uint64_t n) { for (uint64_t i = 0; i < n; i++) out[i] = elem_f(DT_BF16, p, i); }
static void dequant_f16(const uint8_t *p, float *out, uint64_t n) { for (uint64_t i = 0; i < n; i++) out[i] = elem_f(DT_F16, p, i); }
static void dequant_q(uint32_t dt, const uint8_t *p, float *out, uint64_t n) {
    for (uint64_t b = 0; b < n / QK; b++) {
        int8_t v[QK];
        float d = qblock_values(dt, p + b * dtypes[dt].block_bytes, v);
        for (int i = 0; i < QK; i++) out[b * QK + i] = d * (float)v[i];
    }
}
static void dequant_q8(const uint8_t *p, float *out, uint64_t n) { dequant_q(DT_Q8_0, p, out, n); }
static void dequant_q4(const uint8_t *p, float *out, uint64_t n) { dequant_q(DT_Q4_0, p, out, n); }

static void quant_f32(const float *s, uint8_t *d, uint64_t n) { memcpy(d, s, n * sizeof(float)); }
static void quant_bf16(const float *s, uint8_t *d, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) { uint16_t h = f32_to_bf16(s[i]); memcpy(d + 2 * i, &h, 2); }
}
static void quant_f16(const float *s, uint8_t *d, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) { uint16_t h = f32_to_f16(s[i]); memcpy(d + 2 * i, &h, 2); }
}

/* ggml quantize_row_q8_0_ref: d = amax/127, q = roundf(x * id) (ties away from zero). */
static void quant_q8(const float *x, uint8_t *dst, uint64_t n) {
    for (uint64_t b = 0; b < n / QK; b++, x += QK) {
        BlockQ8_0 blk;
        float amax = 0.0f;
        for (int i = 0; i < QK; i++) amax = fmaxf(amax, fabsf(x[i]));
        const float d = amax / 127.0f;
        const float id = d ? 1.0f / d : 0.0f;
        blk.d = f32_to_f16(d);
        for (int i = 0; i < QK; i++) blk.qs[i] = (int8_t)roundf(x[i] * id);
        memcpy(dst + b * sizeof blk, &blk, sizeof blk);
    }
}

/* ggml quantize_row_q4_0_ref: the signed value of largest magnitude maps to -8, so d may be
 * negative; nibbles are q + 8, split layout (quant.h). */
static void quant_q4(const float *x, uint8_t *dst, uint64_t n) {
    for (uint64_t b = 0; b < n / QK; b++, x += QK) {
        BlockQ4_0 blk;
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < QK; i++)
            if (amax < fabsf(x[i])) { amax = fabsf(x[i]); max = x[i]; }
        const float d = max / -8.0f;
        const float id = d ? 1.0f / d : 0.0f;
        blk.d = f32_to_f16(d);
        for (int j = 0; j < QK / 2; j++) {
            int lo = (int)(int8_t)(x[j] * id + 8.5f), hi = (int)(int8_t)(x[j + QK / 2] * id + 8.5f);
            lo = lo < 15 ? lo : 15;
            hi = hi < 15 ? hi : 15;
            blk.qs[j] = (uint8_t)(lo | hi << 4);
        }
        memcpy(dst + b * sizeof blk, &blk, sizeof blk);
    }
}

static const DTypeInfo dtypes[DT_COUNT] = {
    [DT_F32] = { "f32", 1, 4, 0, dot_f32_scalar, dequant_f32, quant_f32 },
    [DT_BF16] = { "bf16", 1, 2, 0, dot_bf16_scalar, dequant_bf16, quant_bf16 },
    [DT_F16] = { "f16", 1, 2, 0, dot_f16_scalar, dequant_f16, quant_f16 },
    [DT_Q8_0] = { "q8_0", QK, sizeof(BlockQ8_0), 1, dot_q8_scalar, dequant_q8, quant_q8 },
    [DT_Q4_0] = { "q4_0", QK, sizeof(BlockQ4_0), 1, dot_q4_scalar, dequant_q4, quant_q4 },
};

void dequant_row(const Tensor *w, uint64_t row, float *out) {
    assert(w->dtype < DT_COUNT && dtypes[w->dtype].dequant && row < w->rows);
    uint64_t rb = dtype_row_bytes(w->dtype, w->cols);
    dtypes[w->dtype].dequant((const uint8_t *)w->data + row * rb, out, w->cols);
}

void quantize_row(uint32_t dt, const float *src, void *dst, uint64_t cols) {
    assert(dt < DT_COUNT && dtypes[dt].quant && dtype_row_bytes(dt, cols) != 0);
    dtypes[dt].quant(src, dst, cols);
}

/* ==== Attention: the spec (quant.h "The attention contract") ==== */

/* exp_f32 constants. The reduction x = k*ln2 + r, |r| <= ln2/2, uses a two-part ln2 whose high
 * part has 15 significant bits, so k*LN2_HI is exact for |k| <= 2^8. k is rounded to nearest
 * even by adding and subtracting 1.5*2^23 (exact for |x*log2e| < 2^22), which also leaves k in
 * the low mantissa bits of the sum: the bits of 2^k are (bits(sum) + 127) << 23 (mod 2^32).
 * e^r = 1 + r + r^2*P(r), P a degree-4 minimax fit (relative error 3e-9 before rounding). */
#define EXP_LO (-87.33654f)        /* ~ln(FLT_MIN): below it the result is flushed to 0 */
#define EXP_HI 88.0f               /* keeps 2^k finite; above it the result is +inf */
#define EXP_SHIFTER 12582912.0f    /* 1.5 * 2^23 */
#define EXP_LOG2E 1.44269504f
#define EXP_LN2_HI 0x1.62e4p-1f
#define EXP_LN2_LO 0x1.7f7d1cp-20f
#define EXP_C2 0x1.fffffcp-2f
#define EXP_C3 0x1.555492p-3f
#define EXP_C4 0x1.5558f2p-5f
#define EXP_C5 0x1.1239e2p-7f
#define EXP_C6 0x1.6a2434p-10f

/* The reference, one IEEE operation per line so every SIMD version can follow it step by step
 * (a ? b : c forms are written the way maxps/minps/blend behave, NaN included). */
static float exp_ref(float x) {
    float xc = EXP_LO > x ? EXP_LO : x;
    xc = EXP_HI < xc ? EXP_HI : xc;
    const float kb = xc * EXP_LOG2E + EXP_SHIFTER;
    const float kf = kb - EXP_SHIFTER;
    float r = xc - kf * EXP_LN2_HI;
    r = r - kf * EXP_LN2_LO;
    float p = EXP_C6;
    p = p * r + EXP_C5;
    p = p * r + EXP_C4;
    p = p * r + EXP_C3;
    p = p * r + EXP_C2;
    const float r2 = r * r;
    float y = p * r2 + r;
    y = y + 1.0f;
    uint32_t kbits, sbits;
    memcpy(&kbits, &kb, 4);
    sbits = (kbits + 127u) << 23;
    float s2k;
    memcpy(&s2k, &sbits, 4);
    y = y * s2k;
    y = x < EXP_LO ? 0.0f : y;
    y = x > EXP_HI ? INFINITY : y;
    return y;
}

/* SwiGLU's gate (quant.h silu_mul): -g is a sign flip, then one IEEE operation per step. */
static void silu_mul_ref(float *h, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float g = h[i], d = 1.0f + exp_ref(-g);
        h[i] = g / d * u[i];
    }
}

static float dot_f32_ref(const float *a, const float *b, int64_t n) {
    float acc[8] = { 0 };
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    for (int k = 0; i < n; i++, k++) acc[k] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Query by query, as the contract reads. Scores are kept in a per-thread buffer; without one
 * they are recomputed in each pass (the same bits, three times the work). */
static void attn_ref(const AttnBlock *b) {
    int64_t maxlen = 0;
    for (int j = 0; j < b->nq; j++) maxlen = b->len[j] > maxlen ? b->len[j] : maxlen;
    float *s = scratch(&tls_att, (size_t)maxlen * sizeof(float));
    for (int j = 0; j < b->nq; j++) {
        const float *q = b->q[j];
        float *o = b->o[j];
        const int64_t len = b->len[j], hd = b->head_dim;
        float m = -INFINITY, sum = 0.0f;
        for (int64_t p = 0; p < len; p++) {
            const float x = dot_f32_ref(q, b->k + p * b->kv_stride, hd) * b->scale;
            if (s) s[p] = x;
            m = x > m ? x : m;
        }
        for (int64_t p = 0; p < len; p++) {
            const float x = s ? s[p] : dot_f32_ref(q, b->k + p * b->kv_stride, hd) * b->scale;
            const float e = exp_ref(x - m);
            if (s) s[p] = e;
            sum += e;
        }
        const float inv = 1.0f / sum;
        for (int64_t i = 0; i < hd; i++) o[i] = 0.0f;
        for (int64_t p = 0; p < len; p++) {
            const float e = s ? s[p] : exp_ref(dot_f32_ref(q, b->k + p * b->kv_stride, hd) * b->scale - m);
            const float a = e * inv, *v = b->v + p * b->kv_stride;
            for (int64_t i = 0; i < hd; i++) o[i] += a * v[i];
        }
    }
}

/* ==== Kernel table ==== */

typedef void (*PackFn)(const uint8_t *w, uint64_t row_bytes, int nr, uint64_t cols, void *tile);

/* One call of a register tile: out[j*ldo + g*tr + r] (+)= row g*tr+r of the rv-group tile .
 * token j, for j < rn. The tile covers kn columns (float) or kn blocks (quantized); group g's
 * steps start gs steps after group g-1's (gs = kn for a tile packed per call, the whole row
 * length for a prepacked tensor). Token j's slice starts at x + j*ldx (float) or a + j*ldx
 * (activation blocks). accumulate: continue the sums already in out (the next k-chunk)
 * instead of starting from 0. */
typedef struct {
    const void *tile;
    uint64_t kn, gs;
    const float *x;
    const ActQ8 *a;
    uint64_t ldx;
    float *out;
    uint64_t ldo;
    int accumulate;
} TileCall;

/* One T = 1 product: y[r] = row r of w . x (x: float[cols]; quantized dtypes read a instead,
 * signed activation blocks, with asum[b] the sum of block b's q). */
typedef struct {
    const uint8_t *w;
    uint64_t rb, cols;
    const float *x;
    const ActQ8 *a;
    const int32_t *asum;
    float *y;
} Gemv;
typedef void (*GemvFn)(const Gemv *g, uint64_t r0, uint64_t r1);

typedef struct {
    const char *name, *desc;
    int (*supported)(void);
    int tr;           /* rows per tile group: 8 (TileQ, float[k][8]) or 16 (TileQ16, float[k][16]) */
    int rv_f, rn_f;   /* float tiles: rv groups of tr rows x up to rn tokens per kernel call */
    int rv_q, rn_q;   /* quantized tiles */
    /* quantize one token row into nb activation blocks (the encoding this set's kernel wants) */
    void (*act)(const float *x, ActQ8 *a, uint64_t nb);
    /* pack rows [0, nr) (nr <= tr; the rest zero) of a row-major W slice into one tile group */
    PackFn pack[DT_COUNT];
    /* one register-tile sweep over rn <= rn_f / rn_q tokens (see TileCall) */
    void (*gemm_f)(int rn, const TileCall *c);
    void (*gemm_q)(int rn, const TileCall *c);   /* TileQ / TileQ16 (Q8_0) */
    void (*gemm_q4)(int rn, const TileCall *c);  /* TileQ4 / TileQ4x16 (Q4_0) */
    /* T = 1 (decode): rows [r0, r1) read in place, no packing; act_gemv quantizes x with
     * signed q (any set's act gives the same values; only the encoding differs) */
    GemvFn gemv[DT_COUNT];
    void (*act_gemv)(const float *x, ActQ8 *a, uint64_t nb);
    float (*dot)(const float *a, const float *b, int64_t n); /* dot_f32 */
    void (*attn)(const AttnBlock *b);                          /* attention */
    void (*silu_mul)(float *h, const float *u, int64_t n);     /* silu_mul */
} Kernels;

#define RN_MAX 12
#define RV_MAX 4

/* Expand C(n) for n = 1..N: the dispatchers instantiate one register tile per token count. */
#define RN_CASES_4(C) C(1) C(2) C(3) C(4)
#define RN_CASES_6(C) RN_CASES_4(C) C(5) C(6)
#define RN_CASES_8(C) RN_CASES_6(C) C(7) C(8)
#define RN_CASES_12(C) RN_CASES_8(C) C(9) C(10) C(11) C(12)

static int always(void) { return 1; }

/* ==== x86-64: AVX2 + FMA + F16C, and AVX512-VNNI ==== */
#if defined(QUANT_X86)

/* avx2: Intel Haswell (2013) and later, AMD Zen 1 and later; the baseline of every x86 kernel.
 * avx512: Intel Ice Lake / Sapphire Rapids and later, AMD Zen 4 and later: vpdpbusd does 32
 * int8 multiply-adds per instruction, and 32 vector registers allow larger register tiles. */
#define X86_BASE "avx2,fma,f16c"
#define X86_512 "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
#define INLINE_X86 static inline __attribute__((always_inline, target(X86_BASE)))
#define AVX512_INLINE static inline __attribute__((always_inline, target(X86_512)))

static int have_avx2(void) {
    unsigned a, b, c, d; /* F16C: CPUID.1:ECX bit 29 (clang's __builtin_cpu_supports lacks "f16c") */
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __get_cpuid(1, &a, &b, &c, &d) &&
           (c >> 29 & 1);
}
static int have_avx512(void) {
    return have_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

/* ---- activations: same rounding as act_block_ref (cvtps2dq rounds to nearest even) ---- */
INLINE_X86 void act_row_x86(const float *x, ActQ8 *a, uint64_t nb, int offset) {
    const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps(INFINITY);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i bias = _mm256_set1_epi8(offset ? (char)0x80 : 0);
    for (uint64_t b = 0; b < nb; b++, x += QK) {
        __m256 v[4], m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(x + 8 * i);
            __m256 av = _mm256_andnot_ps(sign, v[i]);
            m = _mm256_max_ps(m, av);
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(av, inf, _CMP_NLT_UQ));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float d = _mm_cvtss_f32(h) / 127.0f;
        const int finite = !_mm256_movemask_ps(bad);
        if (!finite || !(d >= FLT_MIN)) {
            a[b].d = finite ? 0.0f : NAN;
            _mm256_storeu_si256((__m256i *)a[b].q, bias);
            continue;
        }
        const __m256 id = _mm256_set1_ps(1.0f / d);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v[0], id)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v[1], id));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v[2], id)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v[3], id));
        __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        q = _mm256_permutevar8x32_epi32(q, order); /* undo the per-lane interleave of packs */
        a[b].d = act_scale(d);
        _mm256_storeu_si256((__m256i *)a[b].q, _mm256_xor_si256(q, bias));
    }
}
__attribute__((target(X86_BASE))) static void act_avx2(const float *x, ActQ8 *a, uint64_t nb) { act_row_x86(x, a, nb, 0); }
__attribute__((target(X86_BASE))) static void act_vnni(const float *x, ActQ8 *a, uint64_t nb) { act_row_x86(x, a, nb, 1); }

/* ---- tile packers (shared by both x86 sets) ---- */

INLINE_X86 __m256i tail_mask_x86(int64_t n) { /* lanes [0, n) */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}


#define PREFETCH_AHEAD 1024

/* In-register transpose of an 8x8 matrix of 32-bit elements (rows in, columns out). */
INLINE_X86 void transpose8x32(__m256i r[8]) {
    __m256i t[8], u[8];
    UNROLL for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    UNROLL for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    UNROLL for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

/* The avx512 version: 16 rows x 8 columns, rows i and i+8 sharing a zmm (two halves), so one
 * pass of 24 shuffles transposes twice the data. */
AVX512_INLINE void transpose16x8_512(__m512i r[8]) { /* r[i] = [row i | row i+8], 8 columns each */
    __m512i t[8], u[8];
    UNROLL for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    UNROLL for (int i = 0; i < 8; i += 4) {
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    UNROLL for (int i = 0; i < 4; i++) { /* column i: rows 0-7 | rows 8-15 */
        r[i] = _mm512_permutex2var_epi64(u[i], lo, u[i + 4]);
        r[i + 4] = _mm512_permutex2var_epi64(u[i], hi, u[i + 4]);
    }
}

/* 8 consecutive elements of a float-family row as f32 (exact conversions). */
INLINE_X86 __m256i load8_f_x86(uint32_t dt, const uint8_t *p) {
    if (dt == DT_F32) return _mm256_loadu_si256((const __m256i *)p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (dt == DT_BF16) return _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    return _mm256_castps_si256(_mm256_cvtph_ps(h));
}

INLINE_X86 void pack_f_x86(uint32_t dt, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, float *t) {
    const uint64_t es = dt == DT_F32 ? 4 : 2;
    uint64_t k = 0;
    for (; k + 8 <= cols; k += 8) {
        __m256i r[8];
        UNROLL for (int i = 0; i < 8; i++) {
            if (i < nr) _mm_prefetch((const char *)w + i * rb + k * es + PREFETCH_AHEAD, _MM_HINT_T0);
            r[i] = i < nr ? load8_f_x86(dt, w + i * rb + k * es) : _mm256_setzero_si256();
        }
        transpose8x32(r);
        UNROLL for (int i = 0; i < 8; i++) _mm256_store_si256((__m256i *)(t + (k + i) * TR), r[i]);
    }
    for (; k < cols; k++)
        for (int i = 0; i < TR; i++) t[k * TR + i] = i < nr ? elem_f(dt, w + i * rb, k) : 0.0f;
}

/* The 32 int8 values of one Q8_0 block. */
INLINE_X86 __m256i load_q8_x86(const uint8_t *blk) { return _mm256_loadu_si256((const __m256i *)(blk + 2)); }

INLINE_X86 void pack_q_x86(uint32_t dt, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, TileQ *t) {
    const uint64_t bytes = dtypes[dt].block_bytes;
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (uint64_t b = 0; b < cols / QK; b++) {
        __m256i r[8];
        uint16_t h[8];
        UNROLL for (int i = 0; i < 8; i++) {
            const uint8_t *blk = w + i * rb + b * bytes;
            /* 8 strided row streams defeat the hardware prefetchers: fetch ~1 KiB ahead */
            if (i < nr) _mm_prefetch((const char *)blk + PREFETCH_AHEAD, _MM_HINT_T0);
            r[i] = i < nr ? load_q8_x86(blk) : _mm256_setzero_si256();
            h[i] = i < nr ? ld_u16(blk) : 0;
        }
        transpose8x32(r);
        __m256i s16 = _mm256_setzero_si256();
        UNROLL for (int s = 0; s < 8; s++) {
            _mm256_store_si256((__m256i *)t[b].q[s], r[s]);
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(ones8, r[s]));
        }
        _mm256_store_si256((__m256i *)t[b].corr, _mm256_slli_epi32(_mm256_madd_epi16(s16, ones16), 7));
        _mm256_store_ps(t[b].d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)));
    }
}

#define DEF_PACK_X86(NAME, CALL)                                                                  \
    __attribute__((target(X86_BASE))) static void NAME(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile) { \
        CALL;                                                                                         \
    }
DEF_PACK_X86(pack_f32_x86, pack_f_x86(DT_F32, w, rb, nr, cols, tile))
DEF_PACK_X86(pack_bf16_x86, pack_f_x86(DT_BF16, w, rb, nr, cols, tile))
DEF_PACK_X86(pack_f16_x86, pack_f_x86(DT_F16, w, rb, nr, cols, tile))
DEF_PACK_X86(pack_q8_x86, pack_q_x86(DT_Q8_0, w, rb, nr, cols, tile))

/* avx512: 16-row tile groups (zmm lanes) in one pass: rows i and i+8 are loaded into the two
 * halves of one zmm, and one 16x8 transpose yields 8 whole 64-byte tile lines. */
#define ROW16(i) (w + (uint64_t)(i) * rb)
AVX512_INLINE __m512i two_rows_512(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

AVX512_INLINE void pack_f16_512(uint32_t dt, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, float *t) {
    const uint64_t es = dt == DT_F32 ? 4 : 2;
    uint64_t k = 0;
    for (; k + 8 <= cols; k += 8) {
        __m512i r[8];
        UNROLL for (int i = 0; i < 8; i++) {
            if (i < nr) _mm_prefetch((const char *)ROW16(i) + k * es + PREFETCH_AHEAD, _MM_HINT_T0);
            if (i + 8 < nr) _mm_prefetch((const char *)ROW16(i + 8) + k * es + PREFETCH_AHEAD, _MM_HINT_T0);
            r[i] = two_rows_512(i < nr ? load8_f_x86(dt, ROW16(i) + k * es) : _mm256_setzero_si256(),
                                i + 8 < nr ? load8_f_x86(dt, ROW16(i + 8) + k * es) : _mm256_setzero_si256());
        }
        transpose16x8_512(r);
        UNROLL for (int i = 0; i < 8; i++) _mm512_store_si512(t + (k + i) * 16, r[i]);
    }
    for (; k < cols; k++)
        for (int i = 0; i < 16; i++) t[k * 16 + i] = i < nr ? elem_f(dt, ROW16(i), k) : 0.0f;
}

/* corr = 128 * sum(q) per row straight from vpdpbusd with bytes of 128; the f16 scales of the
 * 16 rows come from one masked gather (rows >= nr: all zero). */
AVX512_INLINE void pack_q16_512(uint32_t dt, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, TileQ16 *t) {
    const uint64_t bytes = dtypes[dt].block_bytes;
    const __m512i c128 = _mm512_set1_epi8((char)0x80);
    const __m512i offs = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32((int)rb));
    const __mmask16 live = (__mmask16)((1u << nr) - 1);
    for (uint64_t b = 0; b < cols / QK; b++) {
        __m512i r[8];
        UNROLL for (int i = 0; i < 8; i++) {
            const uint8_t *lo = ROW16(i) + b * bytes, *hi = ROW16(i + 8) + b * bytes;
            if (i < nr) _mm_prefetch((const char *)lo + PREFETCH_AHEAD, _MM_HINT_T0);
            if (i + 8 < nr) _mm_prefetch((const char *)hi + PREFETCH_AHEAD, _MM_HINT_T0);
            r[i] = two_rows_512(i < nr ? load_q8_x86(lo) : _mm256_setzero_si256(),
                                i + 8 < nr ? load_q8_x86(hi) : _mm256_setzero_si256());
        }
        transpose16x8_512(r);
        __m512i corr = _mm512_setzero_si512();
        UNROLL for (int s = 0; s < 8; s++) {
            _mm512_store_si512(t[b].q[s], r[s]);
            corr = _mm512_dpbusd_epi32(corr, c128, r[s]);
        }
        _mm512_store_si512(t[b].corr, corr);
        const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, offs, w + b * bytes, 1);
        _mm512_store_ps(t[b].d, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g))); /* vpmovdw keeps the low 16 bits: d */
    }
}
#undef ROW16

#define DEF_PACK_512(NAME, CALL) \
    __attribute__((target(X86_512))) static void NAME(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile) { CALL; }
DEF_PACK_512(pack_f32_16, pack_f16_512(DT_F32, w, rb, nr, cols, tile))
DEF_PACK_512(pack_bf16_16, pack_f16_512(DT_BF16, w, rb, nr, cols, tile))
DEF_PACK_512(pack_f16_16, pack_f16_512(DT_F16, w, rb, nr, cols, tile))
DEF_PACK_512(pack_q8_16, pack_q16_512(DT_Q8_0, w, rb, nr, cols, tile))

/* ---- float register tile: RV groups of 8 rows x RN tokens, one fma per (row lane, token, k) ---- */
INLINE_X86 void gemm_f_x86(const int RV, const int RN, const TileCall *c) {
    const float *tile = c->tile, *x = c->x;
    const uint64_t kn = c->kn, gs = c->gs, ldx = c->ldx, ldo = c->ldo;
    float *out = c->out;
    __m256 acc[RV_MAX][RN_MAX];
    UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++)
        acc[g][j] = c->accumulate ? _mm256_loadu_ps(out + j * ldo + g * TR) : _mm256_setzero_ps();
    for (uint64_t k = 0; k < kn; k++) {
        __m256 w[RV_MAX];
        UNROLL for (int g = 0; g < RV; g++) w[g] = _mm256_load_ps(tile + (g * gs + k) * TR);
        UNROLL for (int j = 0; j < RN; j++) {
            const __m256 xb = _mm256_broadcast_ss(x + j * ldx + k);
            UNROLL for (int g = 0; g < RV; g++) acc[g][j] = _mm256_fmadd_ps(w[g], xb, acc[g][j]);
        }
    }
    UNROLL for (int j = 0; j < RN; j++) UNROLL for (int g = 0; g < RV; g++) _mm256_storeu_ps(out + j * ldo + g * TR, acc[g][j]);
}

/* ---- int8 register tile (avx2): RV groups of 8 rows x RN tokens, per block of 32 an exact
 * int32 dot per lane, then one fma of the block scales (the contract's fold). AVX2 has no
 * signed x signed byte product: |w| * (x * sign(w)) with vpmaddubsw (pairs stay below
 * 2*128*127, no saturation), then vpmaddwd by 1 to widen. NIB: the tile is TileQ4 (Q4_0
 * nibbles, two steps per load) instead of TileQ. ---- */
INLINE_X86 void gemm_q_avx2_t(const int RV, const int RN, const int NIB, const TileCall *c) {
    const size_t step = NIB ? sizeof(TileQ4) : sizeof(TileQ), dofs = NIB ? offsetof(TileQ4, d) : offsetof(TileQ, d);
    const uint8_t *tile = c->tile;
    const ActQ8 *a = c->a;
    const uint64_t nb = c->kn, gs = c->gs, lda = c->ldx, ldo = c->ldo;
    float *out = c->out;
    const __m256i ones16 = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
    __m256 acc[RV_MAX][RN_MAX];
    UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++)
        acc[g][j] = c->accumulate ? _mm256_loadu_ps(out + j * ldo + g * TR) : _mm256_setzero_ps();
    for (uint64_t b = 0; b < nb; b++) {
        const uint8_t *tb[RV_MAX];
        UNROLL for (int g = 0; g < RV; g++) tb[g] = tile + (g * gs + b) * step;
        __m256i ia[RV_MAX][RN_MAX];
        UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++) ia[g][j] = _mm256_setzero_si256();
        UNROLL for (int s = 0; s < QK / 4; s++) {
            if (NIB && s >= QK / 8) break; /* a nibble load holds steps s and s + 4 */
            __m256i w[2][RV_MAX], wabs[2][RV_MAX];
            UNROLL for (int g = 0; g < RV; g++) {
                const __m256i v = _mm256_load_si256((const __m256i *)(tb[g] + 32 * s));
                if (NIB) {
                    w[0][g] = _mm256_sub_epi8(_mm256_and_si256(v, low4), eight);
                    w[1][g] = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), low4), eight);
                } else {
                    w[0][g] = v;
                }
                UNROLL for (int h = 0; h <= NIB; h++) wabs[h][g] = _mm256_abs_epi8(w[h][g]);
            }
            UNROLL for (int h = 0; h <= NIB; h++) UNROLL for (int j = 0; j < RN; j++) {
                int32_t a4;
                memcpy(&a4, a[j * lda + b].q + 4 * (s + 4 * h), 4);
                const __m256i x4 = _mm256_set1_epi32(a4);
                UNROLL for (int g = 0; g < RV; g++)
                    ia[g][j] = _mm256_add_epi32(ia[g][j], _mm256_madd_epi16(_mm256_maddubs_epi16(wabs[h][g], _mm256_sign_epi8(x4, w[h][g])), ones16));
            }
        }
        UNROLL for (int g = 0; g < RV; g++) {
            const __m256 dw = _mm256_load_ps((const float *)(const void *)(tb[g] + dofs));
            UNROLL for (int j = 0; j < RN; j++)
                acc[g][j] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a[j * lda + b].d)), _mm256_cvtepi32_ps(ia[g][j]), acc[g][j]);
        }
    }
    UNROLL for (int j = 0; j < RN; j++) UNROLL for (int g = 0; g < RV; g++) _mm256_storeu_ps(out + j * ldo + g * TR, acc[g][j]);
}

/* ---- avx512 register tiles: 16 rows per zmm, RV groups x RN tokens ----
 * Same arithmetic as the 8-row tiles (one fma per lane and k, or per lane and block), twice
 * the lanes per instruction. */
AVX512_INLINE void gemm_f_zmm_t(const int RV, const int RN, const TileCall *c) {
    const float *tile = c->tile, *x = c->x;
    const uint64_t kn = c->kn, gs = c->gs, ldx = c->ldx, ldo = c->ldo;
    float *out = c->out;
    __m512 acc[RV_MAX][RN_MAX];
    UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++)
        acc[g][j] = c->accumulate ? _mm512_loadu_ps(out + j * ldo + g * 16) : _mm512_setzero_ps();
    for (uint64_t k = 0; k < kn; k++) {
        __m512 w[RV_MAX];
        UNROLL for (int g = 0; g < RV; g++) w[g] = _mm512_load_ps(tile + (g * gs + k) * 16);
        UNROLL for (int j = 0; j < RN; j++) {
            const __m512 xb = _mm512_set1_ps(x[j * ldx + k]);
            UNROLL for (int g = 0; g < RV; g++) acc[g][j] = _mm512_fmadd_ps(w[g], xb, acc[g][j]);
        }
    }
    UNROLL for (int j = 0; j < RN; j++) UNROLL for (int g = 0; g < RV; g++) _mm512_storeu_ps(out + j * ldo + g * 16, acc[g][j]);
}

/* int8: activations hold q + 128 (act_vnni); each block's sums start from -corr, so they end
 * at the exact isum without a correction step. NIB: TileQ4x16 instead of TileQ16. */
AVX512_INLINE void gemm_q_zmm_t(const int RV, const int RN, const int NIB, const TileCall *c) {
    const size_t step = NIB ? sizeof(TileQ4x16) : sizeof(TileQ16), dofs = NIB ? offsetof(TileQ4x16, d) : offsetof(TileQ16, d);
    const uint8_t *tile = c->tile;
    const ActQ8 *a = c->a;
    const uint64_t nb = c->kn, gs = c->gs, lda = c->ldx, ldo = c->ldo;
    float *out = c->out;
    const __m512i low4 = _mm512_set1_epi8(0x0F), eight = _mm512_set1_epi8(8);
    __m512 acc[RV_MAX][RN_MAX];
    UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++)
        acc[g][j] = c->accumulate ? _mm512_loadu_ps(out + j * ldo + g * 16) : _mm512_setzero_ps();
    for (uint64_t b = 0; b < nb; b++) {
        const uint8_t *tb[RV_MAX];
        UNROLL for (int g = 0; g < RV; g++) tb[g] = tile + (g * gs + b) * step;
        __m512i ia[RV_MAX][RN_MAX];
        UNROLL for (int g = 0; g < RV; g++) {
            const __m512i nc = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_load_si512(tb[g] + dofs + 64));
            UNROLL for (int j = 0; j < RN; j++) ia[g][j] = nc;
        }
        UNROLL for (int s = 0; s < QK / 4; s++) {
            if (NIB && s >= QK / 8) break; /* a nibble load holds steps s and s + 4 */
            __m512i w[2][RV_MAX];
            UNROLL for (int g = 0; g < RV; g++) {
                const __m512i v = _mm512_load_si512(tb[g] + 64 * s);
                if (NIB) {
                    w[0][g] = _mm512_sub_epi8(_mm512_and_si512(v, low4), eight);
                    w[1][g] = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4), eight);
                } else {
                    w[0][g] = v;
                }
            }
            UNROLL for (int h = 0; h <= NIB; h++) UNROLL for (int j = 0; j < RN; j++) {
                int32_t a4;
                memcpy(&a4, a[j * lda + b].q + 4 * (s + 4 * h), 4);
                const __m512i x4 = _mm512_set1_epi32(a4);
                UNROLL for (int g = 0; g < RV; g++) ia[g][j] = _mm512_dpbusd_epi32(ia[g][j], x4, w[h][g]);
            }
        }
        UNROLL for (int g = 0; g < RV; g++) {
            const __m512 dw = _mm512_load_ps(tb[g] + dofs);
            UNROLL for (int j = 0; j < RN; j++)
                acc[g][j] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a[j * lda + b].d)), _mm512_cvtepi32_ps(ia[g][j]), acc[g][j]);
        }
    }
    UNROLL for (int j = 0; j < RN; j++) UNROLL for (int g = 0; g < RV; g++) _mm512_storeu_ps(out + j * ldo + g * 16, acc[g][j]);
}

/* ---- matrix-vector (T = 1: decode, the logits row): W read in place, no tile ----
 * Eight rows sit in the lanes, as in the tiles, so every output follows the same sequential
 * chain as the GEMM (quant.h "The matmul contract") and prefill and decode agree bit for bit.
 * What the packer did once per call happens in registers: quantized rows give exact int32
 * block sums (the horizontal adds are exact), float rows are transposed 8x8. */

/* Lane i = the int32 sum of the 8 lanes of p[i] (exact, so the order is free). */
INLINE_X86 __m256i hsum8x8_epi32(const __m256i p[8]) {
    const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
    /* a = [rows 0-3, low-half sums | rows 0-3, high-half sums], b the same for rows 4-7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

/* The f16 scales of one block in 8 rows (offs: byte offsets of the rows from row 0; the
 * gather reads 4 bytes, d and the first two quants, always inside the block). */
INLINE_X86 __m256 scales8_x86(const uint8_t *blk0, __m256i offs) {
    const __m256i g = _mm256_and_si256(_mm256_i32gather_epi32((const int *)(const void *)blk0, offs, 1), _mm256_set1_epi32(0xFFFF));
    return _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(g), _mm256_extracti128_si256(g, 1)));
}

/* Q4_0 nibbles as unsigned bytes q + 8, in element order (low nibbles, then high). */
INLINE_X86 __m256i q4_unsigned_x86(const uint8_t *blk) {
    const __m128i b = _mm_loadu_si128((const __m128i *)(blk + 2)), m = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
}

/* Eight int32 partial sums of one block of a row against signed activations a; offset: what
 * the unsigned side adds (Q4: nibble = q + 8; VNNI Q8: w + 128), removed per block below. */
INLINE_X86 __m256i qdot_avx2(uint32_t dt, const uint8_t *blk, __m256i a) {
    const __m256i ones = _mm256_set1_epi16(1);
    if (dt == DT_Q4_0) return _mm256_madd_epi16(_mm256_maddubs_epi16(q4_unsigned_x86(blk), a), ones);
    const __m256i w = _mm256_loadu_si256((const __m256i *)(blk + 2)); /* |w| * (a sign w): no saturation */
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(a, w)), ones);
}
#define QOFF_AVX2(dt) ((dt) == DT_Q4_0 ? 8 : 0)
static inline __attribute__((always_inline, target(X86_512))) __m256i qdot_vnni(uint32_t dt, const uint8_t *blk, __m256i a) {
    const __m256i u = dt == DT_Q4_0 ? q4_unsigned_x86(blk)
                                    : _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), _mm256_set1_epi8((char)0x80));
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a);
}
#define QOFF_VNNI(dt) ((dt) == DT_Q4_0 ? 8 : 128)

/* y[r0, r1): lanes = 8 rows (a short last group repeats its last row and stores fewer). */
#define DEF_GEMV_Q_X86(NAME, TARGET, QDOT, QOFF)                                                         \
    static inline __attribute__((always_inline, target(TARGET))) void NAME(uint32_t dt, const Gemv *g, uint64_t r0, uint64_t r1) { \
        const uint64_t bb = dtypes[dt].block_bytes, nb = g->cols / QK;                                     \
        const int32_t off = QOFF(dt);                                                                      \
        for (uint64_t r = r0; r < r1; r += TR) {                                                          \
            const int nr = r1 - r < TR ? (int)(r1 - r) : TR;                                               \
            const uint8_t *row[TR];                                                                        \
            int32_t offs[TR];                                                                              \
            for (int i = 0; i < TR; i++) {                                                                 \
                row[i] = g->w + (r + (uint64_t)(i < nr ? i : nr - 1)) * g->rb;                             \
                offs[i] = (int32_t)(row[i] - row[0]);                                                      \
            }                                                                                              \
            const __m256i vo = _mm256_loadu_si256((const __m256i *)offs);                                 \
            __m256 acc = _mm256_setzero_ps();                                                              \
            for (uint64_t b = 0; b < nb; b++) {                                                            \
                const __m256i a = _mm256_loadu_si256((const __m256i *)g->a[b].q);                         \
                __m256i p[TR];                                                                             \
                UNROLL for (int i = 0; i < TR; i++) {                                                      \
                    if (!(b & 1)) _mm_prefetch((const char *)row[i] + b * bb + PREFETCH_AHEAD, _MM_HINT_T0); \
                    p[i] = QDOT(dt, row[i] + b * bb, a);                                                   \
                }                                                                                          \
                __m256i isum = hsum8x8_epi32(p);                                                           \
                if (off) isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(off * g->asum[b]));              \
                const __m256 s = _mm256_mul_ps(scales8_x86(row[0] + b * bb, vo), _mm256_set1_ps(g->a[b].d)); \
                acc = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(isum), acc);                                  \
            }                                                                                              \
            _mm256_maskstore_ps(g->y + r, tail_mask_x86(nr), acc);                                         \
        }                                                                                                  \
    }
DEF_GEMV_Q_X86(gemv_q_avx2_t, X86_BASE, qdot_avx2, QOFF_AVX2)
DEF_GEMV_Q_X86(gemv_q_vnni_t, X86_512, qdot_vnni, QOFF_VNNI)

/* Float rows: 8 rows x 8 columns loaded and transposed in registers, then one fma per column
 * in k order. GEMV_FG row groups per step keep that many independent fma chains in flight.
 * Each step eats whole 64-byte lines of its 8 rows: rows of 4 KiB-multiple size all map to
 * one L1 set, so a line must be used up before other rows' loads evict it. Rows are reached
 * by stepping a pointer by rb (row pointers would not fit in registers); a short last group
 * repeats its last row and stores fewer lanes. */
#define GEMV_FG 2
INLINE_X86 void gemv_f_x86(uint32_t dt, const Gemv *g, uint64_t r0, uint64_t r1) {
    const uint64_t es = dt == DT_F32 ? 4 : 2, cols = g->cols, rb = g->rb, kstep = 64 / es;
    for (uint64_t r = r0; r < r1; r += GEMV_FG * TR) {
        const uint64_t left = r1 - r;
        const int ng = (int)((left + TR - 1) / TR < GEMV_FG ? (left + TR - 1) / TR : GEMV_FG);
        const int last_nr = (int)(left - (uint64_t)(ng - 1) * TR < TR ? left - (uint64_t)(ng - 1) * TR : TR);
        const uint8_t *w0 = g->w + r * rb;
        __m256 acc[GEMV_FG];
        UNROLL for (int gi = 0; gi < GEMV_FG; gi++) acc[gi] = _mm256_setzero_ps();
        uint64_t k = 0;
        for (; k + kstep <= cols; k += kstep) {
            UNROLL for (int gi = 0; gi < GEMV_FG; gi++) {
                if (gi >= ng) break;
                const int nr = gi == ng - 1 ? last_nr : TR;
                /* the whole line of every row first (spilled to the stack if need be: that is
                 * another L1 set), then 8 columns at a time */
                __m256i line[4][8];
                const uint8_t *p = w0 + (uint64_t)gi * TR * rb + k * es;
                UNROLL for (int i = 0; i < TR; i++) {
                    UNROLL for (uint64_t k8 = 0; k8 < kstep; k8 += 8) line[k8 / 8][i] = load8_f_x86(dt, p + k8 * es);
                    if (i + 1 < nr) p += rb;
                }
                UNROLL for (uint64_t k8 = 0; k8 < kstep; k8 += 8) {
                    transpose8x32(line[k8 / 8]);
                    UNROLL for (int kk = 0; kk < 8; kk++)
                        acc[gi] = _mm256_fmadd_ps(_mm256_castsi256_ps(line[k8 / 8][kk]), _mm256_broadcast_ss(g->x + k + k8 + kk), acc[gi]);
                }
            }
        }
        for (; k < cols; k++)
            for (int gi = 0; gi < ng; gi++) {
                const int nr = gi == ng - 1 ? last_nr : TR;
                float col[TR];
                for (int i = 0; i < TR; i++) col[i] = elem_f(dt, w0 + ((uint64_t)gi * TR + (uint64_t)(i < nr ? i : nr - 1)) * rb, k);
                acc[gi] = _mm256_fmadd_ps(_mm256_loadu_ps(col), _mm256_broadcast_ss(g->x + k), acc[gi]);
            }
        for (int gi = 0; gi < ng; gi++)
            _mm256_maskstore_ps(g->y + r + (uint64_t)gi * TR, tail_mask_x86(gi == ng - 1 ? last_nr : TR), acc[gi]);
    }
}


/* One whole 64-byte line of each row is loaded at once (16 f32 or 32 bf16/f16 columns), so
 * every line is used up in registers the moment it arrives; 8 rows per group as in
 * gemv_f_x86, two groups per step for two independent fma chains. Whole 16-row blocks only:
 * the rows left over go through gemv_f_x86. */
AVX512_INLINE void gemv_f_512_line(uint32_t dt, const uint8_t *wg, uint64_t rb, const float *x, __m256 *acc) {
    __m512i line[8];
    UNROLL for (int i = 0; i < TR; i++) line[i] = _mm512_loadu_si512(wg + (uint64_t)i * rb);
    UNROLL for (int h = 0; h < 2; h++) { /* bf16/f16: the line's two 16-column halves */
        if (dt == DT_F32 && h) break;
        __m512i t[8];
        UNROLL for (int i = 0; i < TR; i++) {
            const __m256i half = h ? _mm512_extracti64x4_epi64(line[i], 1) : _mm512_castsi512_si256(line[i]);
            t[i] = dt == DT_F32 ? line[i] : dt == DT_BF16 ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16)
                                                          : _mm512_castps_si512(_mm512_cvtph_ps(half));
        }
        transpose16x8_512(t); /* t[kk] = [8 rows at column kk | at column kk + 8] */
        UNROLL for (int kk = 0; kk < 8; kk++)
            *acc = _mm256_fmadd_ps(_mm512_castps512_ps256(_mm512_castsi512_ps(t[kk])), _mm256_broadcast_ss(x + 16 * h + kk), *acc);
        UNROLL for (int kk = 0; kk < 8; kk++)
            *acc = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm512_extracti64x4_epi64(t[kk], 1)), _mm256_broadcast_ss(x + 16 * h + 8 + kk), *acc);
    }
}

AVX512_INLINE void gemv_f_512(uint32_t dt, const Gemv *g, uint64_t r0, uint64_t r1) {
    const uint64_t es = dt == DT_F32 ? 4 : 2, cols = g->cols, rb = g->rb, kstep = 64 / es;
    uint64_t r = r0;
    for (; r + 2 * TR <= r1 && cols >= kstep; r += 2 * TR) {
        const uint8_t *w0 = g->w + r * rb, *w1 = w0 + TR * rb;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        uint64_t k = 0;
        for (; k + kstep <= cols; k += kstep) {
            gemv_f_512_line(dt, w0 + k * es, rb, g->x + k, &a0);
            gemv_f_512_line(dt, w1 + k * es, rb, g->x + k, &a1);
        }
        for (; k < cols; k++) {
            float c0[TR], c1[TR];
            for (int i = 0; i < TR; i++) c0[i] = elem_f(dt, w0 + (uint64_t)i * rb, k), c1[i] = elem_f(dt, w1 + (uint64_t)i * rb, k);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(c0), _mm256_broadcast_ss(g->x + k), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(c1), _mm256_broadcast_ss(g->x + k), a1);
        }
        _mm256_storeu_ps(g->y + r, a0);
        _mm256_storeu_ps(g->y + r + TR, a1);
    }
    if (r < r1) gemv_f_x86(dt, g, r, r1);
}

#define DEF_GEMV_X86(NAME, TARGET, BODY, DT) \
    __attribute__((target(TARGET))) static void NAME(const Gemv *g, uint64_t r0, uint64_t r1) { BODY(DT, g, r0, r1); }
DEF_GEMV_X86(gemv_f32_x86, X86_BASE, gemv_f_x86, DT_F32)
DEF_GEMV_X86(gemv_bf16_x86, X86_BASE, gemv_f_x86, DT_BF16)
DEF_GEMV_X86(gemv_f16_x86, X86_BASE, gemv_f_x86, DT_F16)
DEF_GEMV_X86(gemv_f32_512, X86_512, gemv_f_512, DT_F32)
DEF_GEMV_X86(gemv_bf16_512, X86_512, gemv_f_512, DT_BF16)
DEF_GEMV_X86(gemv_f16_512, X86_512, gemv_f_512, DT_F16)
DEF_GEMV_X86(gemv_q8_avx2, X86_BASE, gemv_q_avx2_t, DT_Q8_0)
DEF_GEMV_X86(gemv_q4_avx2, X86_BASE, gemv_q_avx2_t, DT_Q4_0)
DEF_GEMV_X86(gemv_q8_vnni, X86_512, gemv_q_vnni_t, DT_Q8_0)
DEF_GEMV_X86(gemv_q4_vnni, X86_512, gemv_q_vnni_t, DT_Q4_0)
#define GEMV_F_X86 [DT_F32] = gemv_f32_x86, [DT_BF16] = gemv_bf16_x86, [DT_F16] = gemv_f16_x86
#define GEMVS_AVX2 { GEMV_F_X86, [DT_Q8_0] = gemv_q8_avx2, [DT_Q4_0] = gemv_q4_avx2 }
#define GEMVS_VNNI { [DT_F32] = gemv_f32_512, [DT_BF16] = gemv_bf16_512, [DT_F16] = gemv_f16_512, \
                    [DT_Q8_0] = gemv_q8_vnni, [DT_Q4_0] = gemv_q4_vnni }

/* ---- attention (quant.h "The attention contract"), 4 queries at a time ----
 * Scores go to s[p*4 + j] for the 4 queries j of a group, so the softmax runs with the queries
 * in SIMD lanes (each lane's max and sum stay sequential in p) and P.V broadcasts one weight
 * per query while each value row is loaded once for all 4. */

INLINE_X86 __m256 exp8_x86(__m256 x) {
    const __m256 lo = _mm256_set1_ps(EXP_LO), hi = _mm256_set1_ps(EXP_HI), sh = _mm256_set1_ps(EXP_SHIFTER);
    __m256 xc = _mm256_max_ps(lo, x); /* lo > x ? lo : x */
    xc = _mm256_min_ps(hi, xc);       /* hi < xc ? hi : xc */
    const __m256 kb = _mm256_add_ps(_mm256_mul_ps(xc, _mm256_set1_ps(EXP_LOG2E)), sh);
    const __m256 kf = _mm256_sub_ps(kb, sh);
    __m256 r = _mm256_sub_ps(xc, _mm256_mul_ps(kf, _mm256_set1_ps(EXP_LN2_HI)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(kf, _mm256_set1_ps(EXP_LN2_LO)));
    __m256 p = _mm256_set1_ps(EXP_C6);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_C5));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_C4));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_C3));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_C2));
    __m256 y = _mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    const __m256i s2k = _mm256_slli_epi32(_mm256_add_epi32(_mm256_castps_si256(kb), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(s2k));
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
}

/* silu_mul, 8 lanes at a time (the avx512 set uses it too: exp is not where its time goes) */
__attribute__((target(X86_BASE))) static void silu_mul_avx2(float *h, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(h + i);
        const __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), exp8_x86(_mm256_xor_ps(g, _mm256_set1_ps(-0.0f))));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_div_ps(g, d), _mm256_loadu_ps(u + i)));
    }
    silu_mul_ref(h + i, u + i, n - i);
}

/* Lane m = dot_f32's combination ((l0+l4) + (l1+l5)) + ((l2+l6) + (l3+l7)) of a_m. Eight
 * separate arguments (not an array) keep everything in registers. */
INLINE_X86 __m256 dot8_pair_x86(__m256 a, __m256 b) { /* [b(a) | b(b)], b(x)[l] = x[l] + x[l+4] */
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}
INLINE_X86 __m256 dot8_reduce8_x86(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
    const __m256 w = _mm256_hadd_ps(_mm256_hadd_ps(dot8_pair_x86(a0, a1), dot8_pair_x86(a2, a3)),
                                    _mm256_hadd_ps(dot8_pair_x86(a4, a5), dot8_pair_x86(a6, a7))); /* m0 m2 m4 m6 | m1 m3 m5 m7 */
    return _mm256_permutevar8x32_ps(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

__attribute__((target(X86_BASE))) static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    if (i < n) {
        const __m256i m = tail_mask_x86(n - i);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m)));
    }
    const __m128 h = _mm256_castps256_ps128(acc), l = _mm256_extractf128_ps(acc, 1);
    const __m128 b4 = _mm_add_ps(h, l), p = _mm_hadd_ps(b4, b4); /* (b0+b1), (b2+b3) */
    return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
}

/* s[p*8 + jb + j] = q[j] . k_p * scale for the 4 queries j and p < rows (keys past maxlen
 * repeat the last one: the buffer's padding rows, never used). KB keys x 4 queries of 8-lane
 * partial sums per step. */
INLINE_X86 void attn_scores_x86(const int KB, const AttnBlock *b, const float *const q[4], int64_t maxlen, int64_t rows,
                                float *s) {
    const int64_t hd = b->head_dim, nfull = hd / 8;
    const __m256i tm = tail_mask_x86(hd % 8);
    const __m256 scale = _mm256_set1_ps(b->scale);
    for (int64_t p0 = 0; p0 < rows; p0 += KB) {
        const float *k[4];
        __m256 acc[4][4];
        UNROLL for (int kk = 0; kk < KB; kk++) k[kk] = b->k + (p0 + kk < maxlen ? p0 + kk : maxlen - 1) * b->kv_stride;
        UNROLL for (int j = 0; j < 4; j++) UNROLL for (int kk = 0; kk < KB; kk++) acc[j][kk] = _mm256_setzero_ps();
        for (int64_t c = 0; c < nfull; c++) {
            __m256 kv[4];
            UNROLL for (int kk = 0; kk < KB; kk++) kv[kk] = _mm256_loadu_ps(k[kk] + 8 * c);
            UNROLL for (int j = 0; j < 4; j++) {
                const __m256 qv = _mm256_loadu_ps(q[j] + 8 * c);
                UNROLL for (int kk = 0; kk < KB; kk++) acc[j][kk] = _mm256_add_ps(acc[j][kk], _mm256_mul_ps(qv, kv[kk]));
            }
        }
        if (hd % 8) { /* tail elements go to lanes 0..: zero lanes add +0, which changes nothing */
            __m256 kv[4];
            UNROLL for (int kk = 0; kk < KB; kk++) kv[kk] = _mm256_maskload_ps(k[kk] + 8 * nfull, tm);
            UNROLL for (int j = 0; j < 4; j++) {
                const __m256 qv = _mm256_maskload_ps(q[j] + 8 * nfull, tm);
                UNROLL for (int kk = 0; kk < KB; kk++) acc[j][kk] = _mm256_add_ps(acc[j][kk], _mm256_mul_ps(qv, kv[kk]));
            }
        }
        UNROLL for (int kk = 0; kk < KB; kk += 2) {
            const __m256 r = _mm256_mul_ps(dot8_reduce8_x86(acc[0][kk], acc[1][kk], acc[2][kk], acc[3][kk], acc[0][kk + 1],
                                                            acc[1][kk + 1], acc[2][kk + 1], acc[3][kk + 1]), scale);
            _mm_storeu_ps(s + (p0 + kk) * 8, _mm256_castps256_ps128(r));
            _mm_storeu_ps(s + (p0 + kk + 1) * 8, _mm256_extractf128_ps(r, 1));
        }
    }
}

/* o[j][i0 .. i0 + 8*NV) for 4 queries (masked to hd when `tail`): sum over p of a[p][j]*v_p. */
INLINE_X86 void attn_pv_x86(const int NV, const AttnBlock *b, const float *s, float *const o[4], const int64_t len[4],
                            int64_t minlen, int64_t maxlen, int64_t i0, int tail) {
    const __m256i tm = tail_mask_x86(b->head_dim - i0);
    __m256 acc[4][4];
    UNROLL for (int j = 0; j < 4; j++) UNROLL for (int v = 0; v < NV; v++) acc[j][v] = _mm256_setzero_ps();
    for (int64_t p = 0; p < maxlen; p++) {
        const float *vp = b->v + p * b->kv_stride + i0;
        __m256 vv[4];
        UNROLL for (int v = 0; v < NV; v++) vv[v] = tail ? _mm256_maskload_ps(vp, tm) : _mm256_loadu_ps(vp + 8 * v);
        UNROLL for (int j = 0; j < 4; j++) {
            if (p >= minlen && p >= len[j]) continue; /* the last positions of queries of unequal length */
            const __m256 a = _mm256_broadcast_ss(s + p * 8 + j);
            UNROLL for (int v = 0; v < NV; v++) acc[j][v] = _mm256_add_ps(acc[j][v], _mm256_mul_ps(a, vv[v]));
        }
    }
    UNROLL for (int j = 0; j < 4; j++) {
        if (!o[j]) continue;
        UNROLL for (int v = 0; v < NV; v++) {
            if (tail) _mm256_maskstore_ps(o[j] + i0, tm, acc[j][v]);
            else _mm256_storeu_ps(o[j] + i0 + 8 * v, acc[j][v]);
        }
    }
}

/* The same 64 floats at a time in zmm registers (avx512 set; whole 16-float chunks). */
typedef void (*AttnPvZ)(const AttnBlock *b, const float *s, float *const o[4], const int64_t len[4], int64_t minlen,
                        int64_t maxlen, int64_t i0);
__attribute__((target(X86_512))) static void attn_pv_512(const AttnBlock *b, const float *s, float *const o[4], const int64_t len[4],
                                                          int64_t minlen, int64_t maxlen, int64_t i0) {
    enum { NV = 4 };
    __m512 acc[4][4];
    UNROLL for (int j = 0; j < 4; j++) UNROLL for (int v = 0; v < NV; v++) acc[j][v] = _mm512_setzero_ps();
    for (int64_t p = 0; p < maxlen; p++) {
        const float *vp = b->v + p * b->kv_stride + i0;
        __m512 vv[4];
        UNROLL for (int v = 0; v < NV; v++) vv[v] = _mm512_loadu_ps(vp + 16 * v);
        UNROLL for (int j = 0; j < 4; j++) {
            if (p >= minlen && p >= len[j]) continue;
            const __m512 a = _mm512_set1_ps(s[p * 8 + j]);
            UNROLL for (int v = 0; v < NV; v++) acc[j][v] = _mm512_add_ps(acc[j][v], _mm512_mul_ps(a, vv[v]));
        }
    }
    UNROLL for (int j = 0; j < 4; j++) {
        if (!o[j]) continue;
        UNROLL for (int v = 0; v < NV; v++) _mm512_storeu_ps(o[j] + i0 + 16 * v, acc[j][v]);
    }
}

/* The whole block: scores for 4 queries at a time into s[p*8 + j] (a block holds up to 8;
 * the lanes of missing queries repeat the last one and their outputs are dropped), the
 * softmax with the 8 queries in the lanes (each lane's max and sum run in p order), then
 * P.V for 4 queries at a time. KB: keys per score step; NV: vectors per P.V step; pvz: use
 * the 64-float P.V (avx512). */
INLINE_X86 void attn_x86(const int KB, const int NV, AttnPvZ pvz, const AttnBlock *b) {
    int64_t len[8], maxlen = 0;
    const float *q[8];
    float *o[8];
    for (int j = 0; j < 8; j++) {
        const int jx = j < b->nq ? j : b->nq - 1;
        q[j] = b->q[jx];
        o[j] = j < b->nq ? b->o[jx] : NULL;
        len[j] = b->len[jx];
        maxlen = len[j] > maxlen ? len[j] : maxlen;
    }
    const int64_t rows = (maxlen + KB - 1) / KB * KB, hd = b->head_dim, nquad = b->nq > 4 ? 2 : 1;
    float *s = scratch(&tls_att, (size_t)rows * 8 * sizeof(float));
    if (!s) {
        attn_ref(b);
        return;
    }
    for (int jb = 0; jb < 4 * nquad; jb += 4) attn_scores_x86(KB, b, q + jb, maxlen, rows, s + jb);
    if (nquad == 1) /* lanes 4-7 repeat the last query */
        for (int64_t p = 0; p < maxlen; p++) _mm_storeu_ps(s + p * 8 + 4, _mm_set1_ps(s[p * 8 + 3]));
    for (int j = 0; j < 8; j++) /* positions a query does not see: exp gives exactly +0 there */
        for (int64_t p = len[j]; p < maxlen; p++) s[p * 8 + j] = -INFINITY;
    /* max: x > m ? x : m. Two chains (even, odd p) then combined: the order cannot change the
     * result, as x - m is the same for m = +0 or -0, and a NaN never enters m. */
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0, sum = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + 2 <= maxlen; p += 2) {
        m0 = _mm256_max_ps(_mm256_loadu_ps(s + p * 8), m0);
        m1 = _mm256_max_ps(_mm256_loadu_ps(s + p * 8 + 8), m1);
    }
    if (p < maxlen) m0 = _mm256_max_ps(_mm256_loadu_ps(s + p * 8), m0);
    const __m256 m = _mm256_max_ps(m1, m0);
    for (p = 0; p < maxlen; p++) {
        const __m256 e = exp8_x86(_mm256_sub_ps(_mm256_loadu_ps(s + p * 8), m));
        _mm256_storeu_ps(s + p * 8, e);
        sum = _mm256_add_ps(sum, e);
    }
    const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), sum);
    for (p = 0; p < maxlen; p++) _mm256_storeu_ps(s + p * 8, _mm256_mul_ps(_mm256_loadu_ps(s + p * 8), inv));
    for (int jb = 0; jb < 4 * nquad; jb += 4) {
        int64_t minlen = INT64_MAX, ml = 0;
        for (int j = jb; j < jb + 4; j++) minlen = len[j] < minlen ? len[j] : minlen, ml = len[j] > ml ? len[j] : ml;
        int64_t i0 = 0;
        if (pvz) for (; i0 + 64 <= hd; i0 += 64) pvz(b, s + jb, o + jb, len + jb, minlen, ml, i0);
        for (; i0 + 8 * NV <= hd; i0 += 8 * NV) attn_pv_x86(NV, b, s + jb, o + jb, len + jb, minlen, ml, i0, 0);
        for (; i0 + 8 <= hd; i0 += 8) attn_pv_x86(1, b, s + jb, o + jb, len + jb, minlen, ml, i0, 0);
        if (i0 < hd) attn_pv_x86(1, b, s + jb, o + jb, len + jb, minlen, ml, i0, 1);
    }
}

/* avx2: 16 ymm registers: 2 keys x 4 queries of scores, 2 vectors x 4 queries of P.V.
 * avx512: AVX512VL's 32 registers: 4 keys; P.V in zmm, a 64-float row per step. */
__attribute__((target(X86_BASE))) static void attn_avx2(const AttnBlock *b) { attn_x86(2, 2, NULL, b); }
__attribute__((target(X86_512))) static void attn_512(const AttnBlock *b) { attn_x86(4, 4, attn_pv_512, b); }

/* ---- dispatchers: the tile shapes of each set (rows = RV x 8 or 16, tokens = RN) ----
 * avx512's int8 tile, 32 rows x 4 tokens with 16-block k-chunks (20 KiB of tile), was the
 * best of 16-48 rows x 2-7 tokens tried on Zen 5 at T = 65 and 205 (bench_kernels, best of
 * 5; the runners-up were within ~5%); few tokens per tile also waste less on a short last
 * token group. */
#define AVX2_RV_F 2
#define AVX2_RN_F 6
#define AVX2_RV_Q 1
#define AVX2_RN_Q 4
#define V512_RV_F 2
#define V512_RN_F 12
#define V512_RV_Q 2
#define V512_RN_Q 4

__attribute__((target(X86_BASE))) static void gemm_f_avx2(int rn, const TileCall *c) {
#define C(n) case n: gemm_f_x86(AVX2_RV_F, n, c); return;
    switch (rn) { RN_CASES_6(C) }
#undef C
}
__attribute__((target(X86_BASE))) static void gemm_q_avx2(int rn, const TileCall *c) {
#define C(n) case n: gemm_q_avx2_t(AVX2_RV_Q, n, 0, c); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}
__attribute__((target(X86_BASE))) static void gemm_q4_avx2(int rn, const TileCall *c) {
#define C(n) case n: gemm_q_avx2_t(AVX2_RV_Q, n, 1, c); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}
__attribute__((target(X86_512))) static void gemm_f_512(int rn, const TileCall *c) {
#define C(n) case n: gemm_f_zmm_t(V512_RV_F, n, c); return;
    switch (rn) { RN_CASES_12(C) }
#undef C
}
__attribute__((target(X86_512))) static void gemm_q_512(int rn, const TileCall *c) {
#define C(n) case n: gemm_q_zmm_t(V512_RV_Q, n, 0, c); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}
__attribute__((target(X86_512))) static void gemm_q4_512(int rn, const TileCall *c) {
#define C(n) case n: gemm_q_zmm_t(V512_RV_Q, n, 1, c); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}

#define PACKS_512 { [DT_F32] = pack_f32_16, [DT_BF16] = pack_bf16_16, [DT_F16] = pack_f16_16, \
                   [DT_Q8_0] = pack_q8_16, [DT_Q4_0] = pack_q4_tr16 }
#define PACKS_X86 { [DT_F32] = pack_f32_x86, [DT_BF16] = pack_bf16_x86, [DT_F16] = pack_f16_x86, \
                    [DT_Q8_0] = pack_q8_x86, [DT_Q4_0] = pack_q4_tr8 }
#endif /* QUANT_X86 */

/* ==== aarch64: NEON (baseline) and dotprod ==== */
#if defined(QUANT_NEON)

/* neon: every ARMv8-A core (Cortex-A53/A72, Apple M1 in Rosetta-free builds, Graviton 1).
 * neon-dotprod: ARMv8.2-A cores with SDOT (Cortex-A55/A76 and later, Graviton 2+, Apple M1+).
 * Tiles are packed by the portable C packers below. */

static int have_dotprod(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }

static void act_neon(const float *x, ActQ8 *a, uint64_t nb) {
    const float32x4_t inf = vdupq_n_f32(INFINITY);
    for (uint64_t b = 0; b < nb; b++, x += QK) {
        float32x4_t v[8], m = vdupq_n_f32(0.0f);
        uint32x4_t ok = vdupq_n_u32(~0u);
        for (int i = 0; i < 8; i++) {
            v[i] = vld1q_f32(x + 4 * i);
            float32x4_t av = vabsq_f32(v[i]);
            m = vmaxq_f32(m, av);
            ok = vandq_u32(ok, vcltq_f32(av, inf));
        }
        const float d = vmaxvq_f32(m) / 127.0f;
        const int finite = vminvq_u32(ok) != 0;
        if (!finite || !(d >= FLT_MIN)) {
            a[b].d = finite ? 0.0f : NAN;
            memset(a[b].q, 0, QK);
            continue;
        }
        const float id = 1.0f / d;
        a[b].d = act_scale(d);
        for (int i = 0; i < 8; i += 2) {
            int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(v[i], id)), q1 = vcvtnq_s32_f32(vmulq_n_f32(v[i + 1], id));
            int16x8_t q16 = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
            vst1_s8(a[b].q + 4 * i, vqmovn_s16(q16));
        }
    }
}

static inline __attribute__((always_inline)) void gemm_f_neon_t(const int RV, const int RN, const TileCall *c) {
    const float *tile = c->tile, *x = c->x;
    const uint64_t kn = c->kn, gs = c->gs, ldx = c->ldx, ldo = c->ldo;
    float *out = c->out;
    float32x4_t acc[RV_MAX][2][RN_MAX];
    UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++) {
        acc[g][0][j] = c->accumulate ? vld1q_f32(out + j * ldo + g * TR) : vdupq_n_f32(0.0f);
        acc[g][1][j] = c->accumulate ? vld1q_f32(out + j * ldo + g * TR + 4) : vdupq_n_f32(0.0f);
    }
    for (uint64_t k = 0; k < kn; k++) {
        float32x4_t w[RV_MAX][2];
        UNROLL for (int g = 0; g < RV; g++) {
            w[g][0] = vld1q_f32(tile + (g * gs + k) * TR);
            w[g][1] = vld1q_f32(tile + (g * gs + k) * TR + 4);
        }
        UNROLL for (int j = 0; j < RN; j++) {
            const float xv = x[j * ldx + k];
            UNROLL for (int g = 0; g < RV; g++) {
                acc[g][0][j] = vfmaq_n_f32(acc[g][0][j], w[g][0], xv);
                acc[g][1][j] = vfmaq_n_f32(acc[g][1][j], w[g][1], xv);
            }
        }
    }
    UNROLL for (int j = 0; j < RN; j++) UNROLL for (int g = 0; g < RV; g++) {
        vst1q_f32(out + j * ldo + g * TR, acc[g][0][j]);
        vst1q_f32(out + j * ldo + g * TR + 4, acc[g][1][j]);
    }
}

/* int8 tile, stamped for plain NEON and for dotprod; DOT(acc, w, x4) adds, per row lane, the
 * products of 4 weight bytes (4 rows per vector) with the replicated activation bytes.
 * NIB: TileQ4 (Q4_0 nibbles, steps s and s + 4 in one load) instead of TileQ. */
#define DEF_GEMM_Q_NEON(NAME, ATTR, DOT)                                                                 \
    static inline __attribute__((always_inline ATTR)) void NAME(const int RV, const int RN, const int NIB, const TileCall *c) { \
        const size_t step = NIB ? sizeof(TileQ4) : sizeof(TileQ), dofs = NIB ? offsetof(TileQ4, d) : offsetof(TileQ, d); \
        const uint8_t *tile = c->tile;                                                                    \
        const ActQ8 *a = c->a;                                                                            \
        const uint64_t nb = c->kn, gs = c->gs, lda = c->ldx, ldo = c->ldo;                                \
        float *out = c->out;                                                                              \
        const uint8x16_t low4 = vdupq_n_u8(0x0F);                                                         \
        const int8x16_t eight = vdupq_n_s8(8);                                                            \
        float32x4_t acc[RV_MAX][2][RN_MAX];                                                               \
        UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++) {                         \
            acc[g][0][j] = c->accumulate ? vld1q_f32(out + j * ldo + g * TR) : vdupq_n_f32(0.0f);         \
            acc[g][1][j] = c->accumulate ? vld1q_f32(out + j * ldo + g * TR + 4) : vdupq_n_f32(0.0f);     \
        }                                                                                                 \
        for (uint64_t b = 0; b < nb; b++) {                                                               \
            const uint8_t *tb[RV_MAX];                                                                    \
            UNROLL for (int g = 0; g < RV; g++) tb[g] = tile + (g * gs + b) * step;                       \
            int32x4_t ia[RV_MAX][2][RN_MAX];                                                              \
            UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++)                       \
                ia[g][0][j] = ia[g][1][j] = vdupq_n_s32(0);                                               \
            UNROLL for (int s = 0; s < QK / 4; s++) {                                                     \
                if (NIB && s >= QK / 8) break;                                                            \
                int8x16_t w[2][RV_MAX][2]; /* [step s or s + 4][group][rows 0-3 or 4-7] */                \
                UNROLL for (int g = 0; g < RV; g++) UNROLL for (int half = 0; half < 2; half++) {         \
                    const uint8x16_t v = vld1q_u8(tb[g] + 32 * s + 16 * half);                            \
                    if (NIB) {                                                                            \
                        w[0][g][half] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, low4)), eight);          \
                        w[1][g][half] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);           \
                    } else {                                                                              \
                        w[0][g][half] = vreinterpretq_s8_u8(v);                                           \
                    }                                                                                     \
                }                                                                                         \
                UNROLL for (int h = 0; h <= NIB; h++) UNROLL for (int j = 0; j < RN; j++) {               \
                    int32_t a4;                                                                           \
                    memcpy(&a4, a[j * lda + b].q + 4 * (s + 4 * h), 4);                                   \
                    const int8x16_t x4 = vreinterpretq_s8_s32(vdupq_n_s32(a4));                           \
                    UNROLL for (int g = 0; g < RV; g++) {                                                 \
                        ia[g][0][j] = DOT(ia[g][0][j], w[h][g][0], x4);                                   \
                        ia[g][1][j] = DOT(ia[g][1][j], w[h][g][1], x4);                                   \
                    }                                                                                     \
                }                                                                                         \
            }                                                                                             \
            UNROLL for (int g = 0; g < RV; g++) {                                                         \
                const float *dw = (const float *)(const void *)(tb[g] + dofs);                            \
                const float32x4_t d0 = vld1q_f32(dw), d1 = vld1q_f32(dw + 4);                             \
                UNROLL for (int j = 0; j < RN; j++) {                                                     \
                    const float da = a[j * lda + b].d;                                                    \
                    acc[g][0][j] = vfmaq_f32(acc[g][0][j], vmulq_n_f32(d0, da), vcvtq_f32_s32(ia[g][0][j])); \
                    acc[g][1][j] = vfmaq_f32(acc[g][1][j], vmulq_n_f32(d1, da), vcvtq_f32_s32(ia[g][1][j])); \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        UNROLL for (int j = 0; j < RN; j++) UNROLL for (int g = 0; g < RV; g++) {                         \
            vst1q_f32(out + j * ldo + g * TR, acc[g][0][j]);                                              \
            vst1q_f32(out + j * ldo + g * TR + 4, acc[g][1][j]);                                          \
        }                                                                                                 \
    }

/* Without SDOT: widen products to int16 (|q| <= 127, so pairs never overflow), then pairwise
 * add twice into int32 lanes of 4 rows. */
static inline int32x4_t dot4_neon(int32x4_t acc, int8x16_t w, int8x16_t x4) {
    const int16x8_t p01 = vmull_s8(vget_low_s8(w), vget_low_s8(x4)); /* rows 0, 1 */
    const int16x8_t p23 = vmull_high_s8(w, x4);                        /* rows 2, 3 */
    return vpadalq_s16(acc, vpaddq_s16(p01, p23));
}
#define DOT_NEON(acc, w, x4) dot4_neon(acc, w, x4)
#define DOT_SDOT(acc, w, x4) vdotq_s32(acc, w, x4)
DEF_GEMM_Q_NEON(gemm_q_neon_t, , DOT_NEON)
#define TARGET_DOTPROD , target("arch=armv8.2-a+dotprod")
DEF_GEMM_Q_NEON(gemm_q_sdot_t, TARGET_DOTPROD, DOT_SDOT)

#define NEON_RV_F 2
#define NEON_RN_F 4
#define NEON_RV_Q 1
#define NEON_RN_Q 4

static void gemm_f_neon(int rn, const TileCall *c) {
#define C(n) case n: gemm_f_neon_t(NEON_RV_F, n, c); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}
static void gemm_q_neon(int rn, const TileCall *c) {
#define C(n) case n: gemm_q_neon_t(NEON_RV_Q, n, 0, c); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}
static void gemm_q4_neon(int rn, const TileCall *c) {
#define C(n) case n: gemm_q_neon_t(NEON_RV_Q, n, 1, c); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}
__attribute__((target("arch=armv8.2-a+dotprod"))) static void gemm_q_sdot(int rn, const TileCall *c) {
#define C(n) case n: gemm_q_sdot_t(NEON_RV_Q, n, 0, c); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}
__attribute__((target("arch=armv8.2-a+dotprod"))) static void gemm_q4_sdot(int rn, const TileCall *c) {
#define C(n) case n: gemm_q_sdot_t(NEON_RV_Q, n, 1, c); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}

/* ---- attention (quant.h "The attention contract"), 4 queries at a time, as on x86: scores
 * at s[p*4 + j], softmax with the queries in the 4 lanes, P.V sharing each value load. The
 * 8 partial sums of dot_f32 are two float32x4 registers: lanes 0-3 and 4-7. ---- */

static inline float32x4_t exp4_neon(float32x4_t x) {
    const float32x4_t lo = vdupq_n_f32(EXP_LO), hi = vdupq_n_f32(EXP_HI), sh = vdupq_n_f32(EXP_SHIFTER);
    float32x4_t xc = vmaxq_f32(lo, x); /* a NaN stays NaN (FMAX), as in exp_ref */
    xc = vminq_f32(hi, xc);
    const float32x4_t kb = vaddq_f32(vmulq_f32(xc, vdupq_n_f32(EXP_LOG2E)), sh);
    const float32x4_t kf = vsubq_f32(kb, sh);
    float32x4_t r = vsubq_f32(xc, vmulq_f32(kf, vdupq_n_f32(EXP_LN2_HI)));
    r = vsubq_f32(r, vmulq_f32(kf, vdupq_n_f32(EXP_LN2_LO)));
    float32x4_t p = vdupq_n_f32(EXP_C6);
    p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(EXP_C5));
    p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(EXP_C4));
    p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(EXP_C3));
    p = vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(EXP_C2));
    float32x4_t y = vaddq_f32(vmulq_f32(p, vmulq_f32(r, r)), r);
    y = vaddq_f32(y, vdupq_n_f32(1.0f));
    const uint32x4_t s2k = vshlq_n_u32(vaddq_u32(vreinterpretq_u32_f32(kb), vdupq_n_u32(127)), 23);
    y = vmulq_f32(y, vreinterpretq_f32_u32(s2k));
    y = vbslq_f32(vcltq_f32(x, lo), vdupq_n_f32(0.0f), y);
    return vbslq_f32(vcgtq_f32(x, hi), vdupq_n_f32(INFINITY), y);
}

static void silu_mul_neon(float *h, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t g = vld1q_f32(h + i);
        const float32x4_t d = vaddq_f32(vdupq_n_f32(1.0f), exp4_neon(vnegq_f32(g)));
        vst1q_f32(h + i, vmulq_f32(vdivq_f32(g, d), vld1q_f32(u + i)));
    }
    silu_mul_ref(h + i, u + i, n - i);
}

/* 8 elements from p with lanes [n, 8) zero: the dot_f32 tail. */
static inline void load8_tail_neon(const float *p, int64_t n, float32x4_t v[2]) {
    float buf[8] = { 0 };
    memcpy(buf, p, (size_t)n * sizeof(float));
    v[0] = vld1q_f32(buf);
    v[1] = vld1q_f32(buf + 4);
}

/* ((l0+l4) + (l1+l5)) + ((l2+l6) + (l3+l7)) of four dots, one per lane. */
static inline float32x4_t dot8_reduce4_neon(const float32x4_t lo[4], const float32x4_t hi[4]) {
    float32x4_t b[4];
    for (int i = 0; i < 4; i++) b[i] = vaddq_f32(lo[i], hi[i]);
    return vpaddq_f32(vpaddq_f32(b[0], b[1]), vpaddq_f32(b[2], b[3]));
}

static float dot_f32_neon(const float *a, const float *b, int64_t n) {
    float32x4_t lo = vdupq_n_f32(0.0f), hi = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        lo = vaddq_f32(lo, vmulq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
        hi = vaddq_f32(hi, vmulq_f32(vld1q_f32(a + i + 4), vld1q_f32(b + i + 4)));
    }
    if (i < n) {
        float32x4_t va[2], vb[2];
        load8_tail_neon(a + i, n - i, va);
        load8_tail_neon(b + i, n - i, vb);
        lo = vaddq_f32(lo, vmulq_f32(va[0], vb[0]));
        hi = vaddq_f32(hi, vmulq_f32(va[1], vb[1]));
    }
    const float32x4_t s = vaddq_f32(lo, hi), p = vpaddq_f32(s, s);
    return vgetq_lane_f32(p, 0) + vgetq_lane_f32(p, 1);
}

/* s[p*4 + j] = q[j] . k_p * scale for p < rows (rows even; keys past maxlen repeat the last). */
static void attn_scores_neon(const AttnBlock *b, const float *const q[4], int64_t maxlen, int64_t rows, float *s) {
    const int64_t hd = b->head_dim, nfull = hd / 8;
    const float32x4_t scale = vdupq_n_f32(b->scale);
    for (int64_t p0 = 0; p0 < rows; p0 += 2) {
        const float *k[2];
        float32x4_t lo[2][4], hi[2][4];
        for (int kk = 0; kk < 2; kk++) k[kk] = b->k + (p0 + kk < maxlen ? p0 + kk : maxlen - 1) * b->kv_stride;
        UNROLL for (int kk = 0; kk < 2; kk++) UNROLL for (int j = 0; j < 4; j++) lo[kk][j] = hi[kk][j] = vdupq_n_f32(0.0f);
        for (int64_t c = 0; c <= nfull; c++) {
            float32x4_t kv[2][2], qv[2];
            if (c == nfull) {
                if (!(hd % 8)) break;
                for (int kk = 0; kk < 2; kk++) load8_tail_neon(k[kk] + 8 * c, hd % 8, kv[kk]);
            } else {
                for (int kk = 0; kk < 2; kk++) kv[kk][0] = vld1q_f32(k[kk] + 8 * c), kv[kk][1] = vld1q_f32(k[kk] + 8 * c + 4);
            }
            UNROLL for (int j = 0; j < 4; j++) {
                if (c == nfull) load8_tail_neon(q[j] + 8 * c, hd % 8, qv);
                else qv[0] = vld1q_f32(q[j] + 8 * c), qv[1] = vld1q_f32(q[j] + 8 * c + 4);
                UNROLL for (int kk = 0; kk < 2; kk++) {
                    lo[kk][j] = vaddq_f32(lo[kk][j], vmulq_f32(qv[0], kv[kk][0]));
                    hi[kk][j] = vaddq_f32(hi[kk][j], vmulq_f32(qv[1], kv[kk][1]));
                }
            }
        }
        for (int kk = 0; kk < 2; kk++) vst1q_f32(s + (p0 + kk) * 4, vmulq_f32(dot8_reduce4_neon(lo[kk], hi[kk]), scale));
    }
}

/* o[j][i0 .. i0 + 4*NV) += sum over p of a[p][j]*v_p (masked to hd when `tail`, NV = 1). */
static inline __attribute__((always_inline)) void attn_pv_neon(const int NV, const AttnBlock *b, const float *s, float *const o[4],
                                                              const int64_t len[4], int64_t minlen, int64_t maxlen, int64_t i0, int tail) {
    const int64_t nt = b->head_dim - i0;
    float32x4_t acc[4][4];
    UNROLL for (int j = 0; j < 4; j++) UNROLL for (int v = 0; v < NV; v++) acc[j][v] = vdupq_n_f32(0.0f);
    for (int64_t p = 0; p < maxlen; p++) {
        const float *vp = b->v + p * b->kv_stride + i0;
        float32x4_t vv[4];
        if (tail) {
            float buf[4] = { 0 };
            memcpy(buf, vp, (size_t)nt * sizeof(float));
            vv[0] = vld1q_f32(buf);
        } else {
            UNROLL for (int v = 0; v < NV; v++) vv[v] = vld1q_f32(vp + 4 * v);
        }
        UNROLL for (int j = 0; j < 4; j++) {
            if (p >= minlen && p >= len[j]) continue; /* the last positions of a group with unequal lengths */
            const float32x4_t w = vld1q_dup_f32(s + p * 4 + j);
            UNROLL for (int v = 0; v < NV; v++) acc[j][v] = vaddq_f32(acc[j][v], vmulq_f32(w, vv[v]));
        }
    }
    UNROLL for (int j = 0; j < 4; j++) {
        if (!o[j]) continue;
        if (tail) {
            float buf[4];
            vst1q_f32(buf, acc[j][0]);
            memcpy(o[j] + i0, buf, (size_t)nt * sizeof(float));
        } else {
            UNROLL for (int v = 0; v < NV; v++) vst1q_f32(o[j] + i0 + 4 * v, acc[j][v]);
        }
    }
}

static void attn_neon(const AttnBlock *b) {
    int64_t all = 0;
    for (int j = 0; j < b->nq; j++) all = b->len[j] > all ? b->len[j] : all;
    float *s = scratch(&tls_att, (size_t)(all + 2) * 4 * sizeof(float));
    if (!s) {
        attn_ref(b);
        return;
    }
    const int64_t hd = b->head_dim;
    for (int j0 = 0; j0 < b->nq; j0 += 4) {
        const int n = b->nq - j0 < 4 ? b->nq - j0 : 4;
        const float *q[4];
        float *o[4];
        int64_t len[4], minlen = INT64_MAX, maxlen = 0;
        for (int j = 0; j < 4; j++) {
            const int jx = j0 + (j < n ? j : n - 1);
            q[j] = b->q[jx];
            o[j] = j < n ? b->o[jx] : NULL;
            len[j] = b->len[jx];
            minlen = len[j] < minlen ? len[j] : minlen;
            maxlen = len[j] > maxlen ? len[j] : maxlen;
        }
        const int64_t rows = (maxlen + 1) / 2 * 2;
        attn_scores_neon(b, q, maxlen, rows, s);
        for (int j = 0; j < 4; j++)
            for (int64_t p = len[j]; p < maxlen; p++) s[p * 4 + j] = -INFINITY;
        float32x4_t m = vdupq_n_f32(-INFINITY), sum = vdupq_n_f32(0.0f);
        for (int64_t p = 0; p < maxlen; p++) { /* x > m ? x : m (vmaxq would let a NaN score in) */
            const float32x4_t x = vld1q_f32(s + p * 4);
            m = vbslq_f32(vcgtq_f32(x, m), x, m);
        }
        for (int64_t p = 0; p < maxlen; p++) {
            const float32x4_t e = exp4_neon(vsubq_f32(vld1q_f32(s + p * 4), m));
            vst1q_f32(s + p * 4, e);
            sum = vaddq_f32(sum, e);
        }
        const float32x4_t inv = vdivq_f32(vdupq_n_f32(1.0f), sum);
        for (int64_t p = 0; p < maxlen; p++) vst1q_f32(s + p * 4, vmulq_f32(vld1q_f32(s + p * 4), inv));
        int64_t i0 = 0;
        for (; i0 + 16 <= hd; i0 += 16) attn_pv_neon(4, b, s, o, len, minlen, maxlen, i0, 0);
        for (; i0 + 4 <= hd; i0 += 4) attn_pv_neon(1, b, s, o, len, minlen, maxlen, i0, 0);
        if (i0 < hd) attn_pv_neon(1, b, s, o, len, minlen, maxlen, i0, 1);
    }
}

/* ---- matrix-vector (T = 1), W read in place: lanes = rows as in the tiles (see the x86
 * section); quantized rows give exact int32 block sums, float rows are transposed 4x4. ---- */

/* Two int32x4 partial sums of one block row (q) against the activations (a), per ISA. */
static inline int32x4_t qdot_neon(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
    int16x8_t p = vmull_s8(vget_low_s8(w0), vget_low_s8(a0));
    p = vmlal_s8(p, vget_high_s8(w0), vget_high_s8(a0)); /* |pair| <= 2*128*127: fits int16 */
    int16x8_t r = vmull_s8(vget_low_s8(w1), vget_low_s8(a1));
    r = vmlal_s8(r, vget_high_s8(w1), vget_high_s8(a1));
    return vpadalq_s16(vpaddlq_s16(p), r);
}
__attribute__((target("arch=armv8.2-a+dotprod"))) static inline int32x4_t qdot_sdot(int8x16_t w0, int8x16_t w1, int8x16_t a0, int8x16_t a1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, a0), w1, a1);
}

static inline void qblock_neon(uint32_t dt, const uint8_t *blk, int8x16_t *w0, int8x16_t *w1) {
    if (dt == DT_Q8_0) {
        *w0 = vld1q_s8((const int8_t *)blk + 2);
        *w1 = vld1q_s8((const int8_t *)blk + 18);
    } else {
        const uint8x16_t b = vld1q_u8(blk + 2);
        *w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
        *w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(b, 4)), vdupq_n_s8(8));
    }
}

#define DEF_GEMV_Q_NEON(NAME, ATTR, QDOT)                                                                   \
    static inline __attribute__((always_inline ATTR)) void NAME(uint32_t dt, const Gemv *g, uint64_t r0, uint64_t r1) { \
        const uint64_t bb = dtypes[dt].block_bytes, nb = g->cols / QK;                                        \
        for (uint64_t r = r0; r < r1; r += 4) {                                                              \
            const int nr = r1 - r < 4 ? (int)(r1 - r) : 4;                                                   \
            const uint8_t *row[4];                                                                            \
            for (int i = 0; i < 4; i++) row[i] = g->w + (r + (uint64_t)(i < nr ? i : nr - 1)) * g->rb;       \
            float32x4_t acc = vdupq_n_f32(0.0f);                                                              \
            for (uint64_t b = 0; b < nb; b++) {                                                               \
                const int8x16_t a0 = vld1q_s8(g->a[b].q), a1 = vld1q_s8(g->a[b].q + 16);                     \
                int32x4_t p[4];                                                                               \
                uint16_t h[4];                                                                                \
                for (int i = 0; i < 4; i++) {                                                                 \
                    int8x16_t w0, w1;                                                                         \
                    qblock_neon(dt, row[i] + b * bb, &w0, &w1);                                               \
                    p[i] = QDOT(w0, w1, a0, a1);                                                              \
                    h[i] = ld_u16(row[i] + b * bb);                                                           \
                }                                                                                             \
                const int32x4_t isum = vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));           \
                const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));                      \
                acc = vfmaq_f32(acc, vmulq_n_f32(dw, g->a[b].d), vcvtq_f32_s32(isum));                       \
            }                                                                                                 \
            float out[4];                                                                                     \
            vst1q_f32(out, acc);                                                                              \
            memcpy(g->y + r, out, (size_t)nr * sizeof(float));                                                \
        }                                                                                                     \
    }
DEF_GEMV_Q_NEON(gemv_q_neon_t, , qdot_neon)
DEF_GEMV_Q_NEON(gemv_q_sdot_t, TARGET_DOTPROD, qdot_sdot)

/* 4 consecutive elements of a float-family row as f32 (exact conversions). */
static inline float32x4_t load4_f_neon(uint32_t dt, const uint8_t *p) {
    if (dt == DT_F32) return vld1q_f32((const float *)(const void *)p);
    const uint16x4_t h = vld1_u16((const uint16_t *)(const void *)p);
    if (dt == DT_BF16) return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
}

/* Float rows: groups of 4 rows (one register of lanes), 4 groups per step for 4 independent
 * fma chains; 4x4 blocks transposed in registers. */
static inline __attribute__((always_inline)) void gemv_f_neon(uint32_t dt, const Gemv *g, uint64_t r0, uint64_t r1) {
    const uint64_t es = dt == DT_F32 ? 4 : 2, cols = g->cols, rb = g->rb;
    for (uint64_t r = r0; r < r1; r += 16) {
        const uint8_t *row[16];
        const int nr = r1 - r < 16 ? (int)(r1 - r) : 16;
        for (int i = 0; i < 16; i++) row[i] = g->w + (r + (uint64_t)(i < nr ? i : nr - 1)) * rb;
        float32x4_t acc[4] = { vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f) };
        uint64_t k = 0;
        for (; k + 4 <= cols; k += 4) {
            const float32x4_t xv = vld1q_f32(g->x + k);
            UNROLL for (int gi = 0; gi < 4; gi++) {
                const float32x4_t r0v = load4_f_neon(dt, row[4 * gi] + k * es), r1v = load4_f_neon(dt, row[4 * gi + 1] + k * es);
                const float32x4_t r2v = load4_f_neon(dt, row[4 * gi + 2] + k * es), r3v = load4_f_neon(dt, row[4 * gi + 3] + k * es);
                const float32x4_t t0 = vtrn1q_f32(r0v, r1v), t1 = vtrn2q_f32(r0v, r1v);
                const float32x4_t t2 = vtrn1q_f32(r2v, r3v), t3 = vtrn2q_f32(r2v, r3v);
                const float32x4_t c0 = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
                const float32x4_t c1 = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
                const float32x4_t c2 = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
                const float32x4_t c3 = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
                acc[gi] = vfmaq_laneq_f32(acc[gi], c0, xv, 0);
                acc[gi] = vfmaq_laneq_f32(acc[gi], c1, xv, 1);
                acc[gi] = vfmaq_laneq_f32(acc[gi], c2, xv, 2);
                acc[gi] = vfmaq_laneq_f32(acc[gi], c3, xv, 3);
            }
        }
        for (; k < cols; k++)
            for (int gi = 0; gi < 4; gi++) {
                float col[4];
                for (int i = 0; i < 4; i++) col[i] = elem_f(dt, row[4 * gi + i], k);
                acc[gi] = vfmaq_n_f32(acc[gi], vld1q_f32(col), g->x[k]);
            }
        float out[16];
        for (int gi = 0; gi < 4; gi++) vst1q_f32(out + 4 * gi, acc[gi]);
        memcpy(g->y + r, out, (size_t)nr * sizeof(float));
    }
}

#define DEF_GEMV_NEON(NAME, BODY, DT) \
    static void NAME(const Gemv *g, uint64_t r0, uint64_t r1) { BODY(DT, g, r0, r1); }
DEF_GEMV_NEON(gemv_f32_neon, gemv_f_neon, DT_F32)
DEF_GEMV_NEON(gemv_bf16_neon, gemv_f_neon, DT_BF16)
DEF_GEMV_NEON(gemv_f16_neon, gemv_f_neon, DT_F16)
DEF_GEMV_NEON(gemv_q8_neon, gemv_q_neon_t, DT_Q8_0)
DEF_GEMV_NEON(gemv_q4_neon, gemv_q_neon_t, DT_Q4_0)
__attribute__((target("arch=armv8.2-a+dotprod"))) DEF_GEMV_NEON(gemv_q8_sdot, gemv_q_sdot_t, DT_Q8_0)
__attribute__((target("arch=armv8.2-a+dotprod"))) DEF_GEMV_NEON(gemv_q4_sdot, gemv_q_sdot_t, DT_Q4_0)
#define GEMV_F_NEON [DT_F32] = gemv_f32_neon, [DT_BF16] = gemv_bf16_neon, [DT_F16] = gemv_f16_neon
#define GEMVS_NEON { GEMV_F_NEON, [DT_Q8_0] = gemv_q8_neon, [DT_Q4_0] = gemv_q4_neon }
#define GEMVS_SDOT { GEMV_F_NEON, [DT_Q8_0] = gemv_q8_sdot, [DT_Q4_0] = gemv_q4_sdot }

/* ---- portable tile packers ---- */
static void pack_f_c(uint32_t dt, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, float *t) {
    for (int i = 0; i < TR; i++)
        for (uint64_t k = 0; k < cols; k++) t[k * TR + i] = i < nr ? elem_f(dt, w + i * rb, k) : 0.0f;
}
static void pack_q_c(uint32_t dt, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, TileQ *t) {
    for (uint64_t b = 0; b < cols / QK; b++)
        for (int i = 0; i < TR; i++) {
            int8_t v[QK] = { 0 };
            float d = i < nr ? qblock_values(dt, w + i * rb + b * dtypes[dt].block_bytes, v) : 0.0f;
            int32_t sum = 0;
            for (int e = 0; e < QK; e++) {
                t[b].q[e / 4][i][e % 4] = v[e];
                sum += v[e];
            }
            t[b].d[i] = d;
            t[b].corr[i] = 128 * sum;
        }
}
#define DEF_PACK_C(NAME, FAMILY, DT, TILE) \
    static void NAME(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile) { FAMILY(DT, w, rb, nr, cols, (TILE *)tile); }
DEF_PACK_C(pack_f32_c, pack_f_c, DT_F32, float)
DEF_PACK_C(pack_bf16_c, pack_f_c, DT_BF16, float)
DEF_PACK_C(pack_f16_c, pack_f_c, DT_F16, float)
DEF_PACK_C(pack_q8_c, pack_q_c, DT_Q8_0, TileQ)
#define PACKS_C { [DT_F32] = pack_f32_c, [DT_BF16] = pack_bf16_c, [DT_F16] = pack_f16_c, \
                  [DT_Q8_0] = pack_q8_c, [DT_Q4_0] = pack_q4_tr8 }
#endif /* QUANT_NEON */

/* ==== Kernel selection: the only place that looks at the CPU ==== */

static const Kernels kernel_sets[] = {
    { "scalar", "scalar reference", always, TR, 0, 0, 0, 0, act_row_ref, { 0 }, NULL, NULL, NULL, { 0 }, act_row_ref, dot_f32_ref, attn_ref, silu_mul_ref },
#if defined(QUANT_X86)
    { "avx2", "avx2 (AVX2+FMA+F16C; ymm tiles: f32 16x6, int8 8x4)", have_avx2,
      TR, AVX2_RV_F, AVX2_RN_F, AVX2_RV_Q, AVX2_RN_Q, act_avx2, PACKS_X86, gemm_f_avx2, gemm_q_avx2, gemm_q4_avx2, GEMVS_AVX2, act_avx2, dot_f32_avx2, attn_avx2, silu_mul_avx2 },
    { "avx512", "avx512 (AVX512VL+VNNI; zmm tiles: f32 32x12, int8 32x4)", have_avx512,
      16, V512_RV_F, V512_RN_F, V512_RV_Q, V512_RN_Q, act_vnni, PACKS_512, gemm_f_512, gemm_q_512, gemm_q4_512, GEMVS_VNNI, act_avx2, dot_f32_avx2, attn_512, silu_mul_avx2 },
#elif defined(QUANT_NEON)
    { "neon", "neon (f32 tile 16x4, int8 tile 8x4)", always,
      TR, NEON_RV_F, NEON_RN_F, NEON_RV_Q, NEON_RN_Q, act_neon, PACKS_C, gemm_f_neon, gemm_q_neon, gemm_q4_neon, GEMVS_NEON, act_neon, dot_f32_neon, attn_neon, silu_mul_neon },
    { "neon-dotprod", "neon-dotprod (SDOT int8 dot; f32 tile 16x4, int8 tile 8x4)", have_dotprod,
      TR, NEON_RV_F, NEON_RN_F, NEON_RV_Q, NEON_RN_Q, act_neon, PACKS_C, gemm_f_neon, gemm_q_sdot, gemm_q4_sdot, GEMVS_SDOT, act_neon, dot_f32_neon, attn_neon, silu_mul_neon },
#endif
};
#define N_SETS (sizeof kernel_sets / sizeof kernel_sets[0])

static _Atomic(const Kernels *) active;
static const char *available[N_SETS + 1];
static char init_desc[160];
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_kernels(void) {
    const Kernels *best = &kernel_sets[0];
    int n = 0;
    for (size_t i = 0; i < N_SETS; i++)
        if (kernel_sets[i].supported()) {
            available[n++] = kernel_sets[i].name;
            best = &kernel_sets[i];
        }
    available[n] = NULL;
    const char *want = getenv("GUARD_KERNELS");
    const Kernels *pick = best;
    int ignored = 0;
    if (want && *want) {
        ignored = 1;
        for (size_t i = 0; i < N_SETS; i++)
            if (strcmp(kernel_sets[i].name, want) == 0 && kernel_sets[i].supported()) { pick = &kernel_sets[i]; ignored = 0; }
    }
    snprintf(init_desc, sizeof init_desc, "%s%s%s%s", pick->desc, ignored ? " [GUARD_KERNELS=" : "",
             ignored ? want : "", ignored ? " unavailable here]" : "");
    atomic_store(&active, pick);
}

const char *kernels_init(void) {
    pthread_once(&init_once, init_kernels);
    return init_desc;
}

const char *kernels_force(const char *name) {
    kernels_init();
    for (size_t i = 0; i < N_SETS; i++)
        if (strcmp(kernel_sets[i].name, name) == 0 && kernel_sets[i].supported()) {
            atomic_store(&active, &kernel_sets[i]);
            return kernel_sets[i].desc;
        }
    return NULL;
}

const char *const *kernels_available(void) {
    kernels_init();
    return available;
}

float dot_f32(const float *a, const float *b, int64_t n) {
    kernels_init();
    return atomic_load(&active)->dot(a, b, n);
}

float exp_f32(float x) { return exp_ref(x); }

void silu_mul(float *h, const float *u, int64_t n) {
    kernels_init();
    atomic_load(&active)->silu_mul(h, u, n);
}

void attention(const AttnBlock *b) {
    kernels_init();
    assert(b->nq >= 1 && b->nq <= ATTN_QMAX && b->head_dim >= 1);
    atomic_load(&active)->attn(b);
}

/* ==== Thread pool ==== */

/* Workers spin this many rounds before sleeping: the forward pass issues matmuls back to
 * back, so a short spin saves a futex wake per call without burning a core when idle. */
#define POOL_SPIN 20000

static inline void cpu_relax(void) {
#if defined(QUANT_X86)
    __builtin_ia32_pause();
#elif defined(QUANT_NEON)
    __asm__ __volatile__("yield");
#endif
}

struct Pool {
    int n;                      /* threads including the caller */
    int n_workers;              /* started workers: n - 1 */
    pthread_t *th;              /* [n_workers] */
    pthread_mutex_t mu;
    pthread_cond_t wake, idle;
    atomic_uint_fast64_t gen;   /* bumped once per job (and at shutdown) */
    atomic_int stop, busy;      /* busy: workers not yet done with the current job */
    atomic_int_fast64_t next;   /* first unclaimed index of the current job */
    int64_t n_items, grain;
    void (*fn)(void *, int64_t, int64_t);
    void *ctx;
};

static void run_chunks(Pool *p) {
    for (;;) {
        int64_t b = atomic_fetch_add_explicit(&p->next, p->grain, memory_order_relaxed);
        if (b >= p->n_items) return;
        p->fn(p->ctx, b, b + p->grain < p->n_items ? b + p->grain : p->n_items);
    }
}

static void *pool_worker(void *arg) {
    Pool *p = arg;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        for (int i = 0; g == seen && i < POOL_SPIN; i++) {
            cpu_relax();
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen) pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (atomic_load(&p->stop)) break;
        run_chunks(p);
        if (atomic_fetch_sub(&p->busy, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->idle);
            pthread_mutex_unlock(&p->mu);
        }
    }
    scratch_release();
    return NULL;
}

static int cores_available(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

Pool *pool_create(int n_threads) {
    if (n_threads <= 0) n_threads = cores_available();
    Pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->idle, NULL);
    if (n_threads > 1) p->th = calloc((size_t)n_threads - 1, sizeof *p->th);
    for (int i = 0; p->th && i < n_threads - 1; i++) {
        if (pthread_create(&p->th[i], NULL, pool_worker, p) != 0) break;
        p->n_workers++;
    }
    p->n = p->n_workers + 1; /* fewer threads if the system refused some: still correct */
    return p;
}

void pool_free(Pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->idle);
    free(p->th);
    free(p);
}

int pool_threads(const Pool *p) { return p ? p->n : 1; }

void pool_for(Pool *p, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx) {
    if (n <= 0) return;
    if (!p || p->n == 1 || n == 1) {
        fn(ctx, 0, n);
        return;
    }
    /* ~4 chunks per thread: balances a core stolen by another process without many calls */
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n;
    p->grain = (n + 4 * p->n - 1) / (4 * p->n);
    atomic_store(&p->next, 0);
    atomic_store(&p->busy, p->n_workers);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p);
    for (int i = 0; atomic_load(&p->busy) && i < POOL_SPIN; i++) cpu_relax();
    if (atomic_load(&p->busy)) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->busy)) pthread_cond_wait(&p->idle, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

/* ==== matmul driver ==== */

/* Prepacked tiles: group G (rows [G*tr, G*tr + tr)) is nk consecutive steps, one per block
 * (quantized: TileQ / TileQ16) or column (float: float[tr]), exactly what the packer writes
 * for a tile chunk; groups are padded to whole rv-group tiles with zero rows, so job_tiles
 * reads every tile, the last short one too, in place. */
struct Packed {
    const Kernels *K;  /* the set whose layout this is */
    uint8_t *tiles;    /* [groups][nk][step], bytes long (big_alloc) */
    size_t bytes;
    uint64_t groups, nk;
    size_t step;       /* bytes of one k step (column or block) of one group */
};

typedef struct {
    const Kernels *K;
    const DTypeInfo *dt;
    const Packed *pk;   /* the tensor's prepacked tiles for K, or NULL */
    uint32_t dtype;
    const uint8_t *w;   /* [rows] rows of rb bytes */
    uint64_t rows, cols, rb, nb;
    float *y;           /* [T, rows] */
    const float *x;     /* [T, cols] */
    ActQ8 *a;           /* [T, nb] quantized x, or NULL when not quantized or out of memory */
    int64_t T;
} Job;

static void job_act(void *ctx, int64_t t0, int64_t t1) {
    Job *j = ctx;
    for (int64_t t = t0; t < t1; t++) j->K->act(j->x + t * j->cols, j->a + t * j->nb, j->nb);
}

/* The reference path: one spec dot per output (scalar kernels, or a dtype without a packer). */
static void job_rows_ref(void *ctx, int64_t r0, int64_t r1) {
    Job *j = ctx;
    ActQ8 tmp[64];
    for (int64_t t = 0; t < j->T; t++) {
        const float *xt = j->x + t * j->cols;
        const void *xin = xt;
        if (j->dt->quantized) {
            if (j->a) xin = j->a + t * j->nb;
            else { /* no scratch: quantize per 64-block strip on the fly, same values */
                for (int64_t r = r0; r < r1; r++) {
                    float acc = 0.0f;
                    for (uint64_t b0 = 0; b0 < j->nb; b0 += 64) {
                        uint64_t n = j->nb - b0 < 64 ? j->nb - b0 : 64;
                        act_row_ref(xt + b0 * QK, tmp, n);
                        const uint8_t *wr = j->w + r * j->rb + b0 * j->dt->block_bytes;
                        for (uint64_t b = 0; b < n; b++) {
                            int8_t v[QK];
                            float dw = qblock_values(j->dtype, wr + b * j->dt->block_bytes, v);
                            int32_t isum = 0;
                            for (int i = 0; i < QK; i++) isum += v[i] * tmp[b].q[i];
                            acc = fold_block(acc, dw, tmp[b].d, isum);
                        }
                    }
                    j->y[t * j->rows + r] = acc;
                }
                continue;
            }
        }
        for (int64_t r = r0; r < r1; r++) j->y[t * j->rows + r] = j->dt->dot_ref(j->w + r * j->rb, xin, j->cols);
    }
}

/* Bytes of one k step (column, or block of 32) of one tile group of set K. */
static size_t tile_step(const Kernels *K, uint32_t dtype) {
    const size_t tr = (size_t)K->tr;
    return dtype == DT_Q4_0 ? tr * (QK / 2 + 8) : dtypes[dtype].quantized ? tr * (QK + 8) : tr * sizeof(float);
}

/* k-chunk of a packed tile: small enough that the tile chunk stays in L1 while every token
 * streams past it (float: columns; quantized: blocks of 32). A quantized tile packed per call
 * takes longer chunks (80 KiB of tile at 32 rows, in L2): its packer then reads each row in
 * runs of 2 KiB rather than 0.5 KiB, a few percent faster overall. */
#define KC_F 256
#define KC_Q 16
#define KC_Q_CALL 64

/* Prefetching the next prepacked chunk. A chunk comes from memory once and is then swept by
 * every token group from L1. The hardware prefetcher runs only a little ahead of that burst,
 * so each new chunk used to open with a stall on DRAM: at a warm verdict's ~60 tokens that
 * was a tenth of the matmul time. While one chunk is swept, the next chunk of the same
 * thread's range is requested into L2, a share of its lines before each token group so the
 * requests spread over the sweep. Hints only: no result depends on them. */
typedef struct {
    const uint8_t *base;      /* group 0's first byte of the next chunk; NULL: nothing ahead */
    uint64_t group_bytes;     /* bytes of the chunk in one tile group */
    uint64_t group_stride;    /* bytes from one group's steps to the next group's */
    uint64_t per_call;        /* bytes to request before each token group */
    int groups, g;            /* tile groups; the one being requested */
    uint64_t off;             /* next byte of group g to request */
} Ahead;

static Ahead ahead_init(const Job *j, int rv, size_t step_bytes, uint64_t i, uint64_t k0, uint64_t kchunk, uint64_t i1, int rn) {
    Ahead a = { 0 };
    uint64_t ni = i, nk0 = k0 + kchunk;
    if (nk0 >= j->pk->nk) ni++, nk0 = 0;
    if (ni >= i1) return a;
    const uint64_t nkn = j->pk->nk - nk0 < kchunk ? j->pk->nk - nk0 : kchunk, calls = ((uint64_t)j->T + rn - 1) / rn;
    a.base = j->pk->tiles + (ni * (uint64_t)rv * j->pk->nk + nk0) * step_bytes;
    a.group_bytes = nkn * step_bytes;
    a.group_stride = j->pk->nk * step_bytes;
    a.per_call = (a.group_bytes * (uint64_t)rv + 64 * calls - 1) / (64 * calls) * 64;
    a.groups = rv;
    return a;
}

static inline void ahead_step(Ahead *a) {
    for (uint64_t k = 0; k < a->per_call && a->g < a->groups; k += 64) {
        __builtin_prefetch(a->base + (uint64_t)a->g * a->group_stride + a->off, 0, 2);
        if ((a->off += 64) >= a->group_bytes) a->off = 0, a->g++;
    }
}

/* The SIMD path: tile i covers rows [i*rv*tr, ...). For each k-chunk, pack the tile chunk once
 * (or find it prepacked) and sweep all tokens over it; sums continue across chunks in y (or
 * acc for the last, short tile), exact since k order is kept. */
static void job_tiles(void *ctx, int64_t i0, int64_t i1) {
    Job *j = ctx;
    const Kernels *K = j->K;
    const int q = j->dt->quantized, rv = q ? K->rv_q : K->rv_f, rn = q ? K->rn_q : K->rn_f, tr = K->tr;
    const uint64_t tile_rows = (uint64_t)rv * tr, kchunk = !q ? KC_F : j->pk ? KC_Q : KC_Q_CALL, kn_all = q ? j->nb : j->cols;
    const uint64_t kstep_bytes = q ? j->dt->block_bytes : dtype_row_bytes(j->dtype, 1);
    const size_t step_bytes = tile_step(K, j->dtype); /* one k (block) of a group */
    void (*gemm)(int, const TileCall *) = !q ? K->gemm_f : j->dtype == DT_Q4_0 ? K->gemm_q4 : K->gemm_q;
    const size_t tile_bytes = j->pk ? 0 : kchunk * step_bytes * (size_t)rv, acc_bytes = (size_t)j->T * tile_rows * sizeof(float);
    uint8_t *tile = scratch(&tls_tile, tile_bytes + acc_bytes);
    if (!tile) {
        job_rows_ref(ctx, i0 * (int64_t)tile_rows, (int64_t)(i1 * tile_rows < j->rows ? i1 * tile_rows : j->rows));
        return;
    }
    float *acc = (float *)(void *)(tile + tile_bytes); /* [T][tile_rows] */
    for (int64_t i = i0; i < i1; i++) {
        const uint64_t r0 = (uint64_t)i * tile_rows;
        const uint64_t nr = j->rows - r0 < tile_rows ? j->rows - r0 : tile_rows;
        const int direct = nr == tile_rows; /* whole tiles write y directly; the last, short one goes through acc */
        for (uint64_t k0 = 0; k0 < kn_all; k0 += kchunk) {
            const uint64_t kn = kn_all - k0 < kchunk ? kn_all - k0 : kchunk;
            const uint8_t *src_tile = tile;
            uint64_t gs = kn;
            Ahead ahead = { 0 };
            if (j->pk) {
                src_tile = j->pk->tiles + ((uint64_t)i * rv * j->pk->nk + k0) * step_bytes;
                gs = j->pk->nk;
                ahead = ahead_init(j, rv, step_bytes, (uint64_t)i, k0, kchunk, (uint64_t)i1, rn);
            } else {
                for (int g = 0; g < rv; g++) {
                    const int64_t left = (int64_t)nr - g * tr;
                    const uint8_t *src = j->w + (r0 + (left > 0 ? (uint64_t)g * tr : 0)) * j->rb + k0 * kstep_bytes;
                    K->pack[j->dtype](src, j->rb, left < 0 ? 0 : left > tr ? tr : (int)left, kn * (q ? QK : 1), tile + g * kn * step_bytes);
                }
            }
            for (int64_t t0 = 0; t0 < j->T; t0 += rn) {
                const int n = j->T - t0 < rn ? (int)(j->T - t0) : rn;
                ahead_step(&ahead);
                TileCall c = { src_tile, kn, gs, j->x + t0 * j->cols + k0, j->a ? j->a + t0 * j->nb + k0 : NULL, q ? j->nb : j->cols,
                               direct ? j->y + t0 * j->rows + r0 : acc + t0 * tile_rows, direct ? j->rows : tile_rows, k0 > 0 };
                gemm(n, &c);
            }
        }
        for (int64_t t = 0; !direct && t < j->T; t++) memcpy(j->y + t * j->rows + r0, acc + t * tile_rows, nr * sizeof(float));
    }
}

/* Rows per pool item of the T = 1 path: 4 groups of 8 (the float kernel's step). */
#define GEMV_ROWS 32

typedef struct {
    Gemv g;
    GemvFn fn;
    uint64_t rows;
} GemvJob;

static void job_gemv(void *ctx, int64_t i0, int64_t i1) {
    const GemvJob *j = ctx;
    const uint64_t r1 = (uint64_t)i1 * GEMV_ROWS;
    j->fn(&j->g, (uint64_t)i0 * GEMV_ROWS, r1 < j->rows ? r1 : j->rows);
}

/* T = 1 without packing. Returns 0 when the activation scratch cannot be had (the tile path
 * then runs instead, with the same result). */
static int gemv(Pool *p, const Job *j) {
    GemvJob gj = { { j->w, j->rb, j->cols, j->x, NULL, NULL, j->y }, j->K->gemv[j->dtype], j->rows };
    if (j->dt->quantized) {
        uint8_t *buf = scratch(&tls_act, j->nb * (sizeof(ActQ8) + sizeof(int32_t)));
        if (!buf) return 0;
        ActQ8 *a = (ActQ8 *)(void *)buf;
        int32_t *asum = (int32_t *)(void *)(buf + j->nb * sizeof(ActQ8));
        j->K->act_gemv(j->x, a, j->nb);
        for (uint64_t b = 0; b < j->nb; b++) {
            int32_t s = 0;
            for (int i = 0; i < QK; i++) s += a[b].q[i];
            asum[b] = s;
        }
        gj.g.a = a;
        gj.g.asum = asum;
    }
    pool_for(p, (int64_t)((j->rows + GEMV_ROWS - 1) / GEMV_ROWS), job_gemv, &gj);
    return 1;
}

void matmul(Pool *p, float *y, const float *x, const Tensor *w, int64_t T) {
    kernels_init();
    assert(w->dtype < DT_COUNT && dtypes[w->dtype].dot_ref && dtype_row_bytes(w->dtype, w->cols) != 0);
    if (T <= 0 || w->rows == 0) return;
    const Kernels *K = atomic_load(&active);
    Job j = { K, &dtypes[w->dtype], w->packed && w->packed->K == K ? w->packed : NULL, w->dtype, w->data, w->rows, w->cols,
              dtype_row_bytes(w->dtype, w->cols), w->cols / QK, y, x, NULL, T };
    /* prepacked tiles stream faster than the in-place T = 1 kernels read strided rows */
    if (T == 1 && !j.pk && j.K->gemv[w->dtype] && j.rb <= INT32_MAX / TR && gemv(p, &j)) return;
    if (j.dt->quantized) {
        j.a = scratch(&tls_act, (size_t)T * j.nb * sizeof(ActQ8));
        if (j.a) pool_for(p, T, job_act, &j);
    }
    if ((j.pk || j.K->pack[w->dtype]) && (!j.dt->quantized || j.a)) {
        const uint64_t tile_rows = (uint64_t)(j.dt->quantized ? j.K->rv_q : j.K->rv_f) * (uint64_t)j.K->tr;
        pool_for(p, (int64_t)((w->rows + tile_rows - 1) / tile_rows), job_tiles, &j);
    } else {
        pool_for(p, (int64_t)w->rows, job_rows_ref, &j);
    }
}

/* ==== Prepacking (quant.h tensor_prepack) ==== */

typedef struct {
    const Tensor *w;
    const Kernels *K;
    Packed *pk;
    uint64_t rb;
} PackJob;

static void job_prepack(void *ctx, int64_t g0, int64_t g1) {
    const PackJob *pj = ctx;
    const Tensor *w = pj->w;
    const int tr = pj->K->tr;
    for (int64_t g = g0; g < g1; g++) {
        const uint64_t r0 = (uint64_t)g * (uint64_t)tr;
        const int nr = r0 >= w->rows ? 0 : w->rows - r0 < (uint64_t)tr ? (int)(w->rows - r0) : tr;
        const uint8_t *src = (const uint8_t *)w->data + (nr ? r0 : 0) * pj->rb;
        pj->K->pack[w->dtype](src, pj->rb, nr, w->cols, pj->pk->tiles + (uint64_t)g * pj->pk->nk * pj->pk->step);
    }
}

/* The prepacked layout of w for set K: *groups x *nk steps of *step bytes; returns the total
 * bytes, or 0 when w is not to be prepacked. */
static uint64_t prepack_layout(const Kernels *K, const Tensor *w, uint64_t *groups, uint64_t *nk, size_t *step) {
    if (w->dtype >= DT_COUNT || !K->pack[w->dtype] || w->rows == 0) return 0;
    const DTypeInfo *dt = &dtypes[w->dtype];
    const uint64_t rb = dtype_row_bytes(w->dtype, w->cols);
    if (!rb) return 0;
    const int rv = dt->quantized ? K->rv_q : K->rv_f;
    const uint64_t tile_rows = (uint64_t)rv * (uint64_t)K->tr;
    *nk = dt->quantized ? w->cols / QK : w->cols;
    *step = tile_step(K, w->dtype);
    /* tiles per stored row, in bytes: nk * step / tr; keep to at most 3/2 of rb */
    if ((uint64_t)*step / (uint64_t)K->tr * *nk * 2 > rb * 3) return 0;
    *groups = (w->rows + tile_rows - 1) / tile_rows * (uint64_t)rv;
    uint64_t bytes;
    if (!mul_u64(*groups, *nk, &bytes) || !mul_u64(bytes, *step, &bytes) || bytes > SIZE_MAX - 63) return 0;
    return bytes;
}

uint64_t tensor_prepack_bytes(const Tensor *w) {
    kernels_init();
    uint64_t groups, nk;
    size_t step;
    return prepack_layout(atomic_load(&active), w, &groups, &nk, &step);
}

uint64_t tensor_prepack(Pool *p, Tensor *w) {
    kernels_init();
    const Kernels *K = atomic_load(&active);
    uint64_t groups, nk;
    size_t step;
    const uint64_t bytes = w->packed ? 0 : prepack_layout(K, w, &groups, &nk, &step);
    if (!bytes) return 0;
    const uint64_t rb = dtype_row_bytes(w->dtype, w->cols);
    Packed *pk = malloc(sizeof *pk);
    uint8_t *tiles = big_alloc((size_t)bytes);
    if (!pk || !tiles) {
        free(pk);
        big_free(tiles, (size_t)bytes);
        return 0;
    }
    *pk = (Packed){ K, tiles, (size_t)bytes, groups, nk, step };
    PackJob pj = { w, K, pk, rb };
    pool_for(p, (int64_t)groups, job_prepack, &pj);
    w->packed = pk;
    return bytes;
}

void tensor_unpack(Tensor *w) {
    if (!w->packed) return;
    big_free(w->packed->tiles, w->packed->bytes);
    free((void *)w->packed);
    w->packed = NULL;
}
