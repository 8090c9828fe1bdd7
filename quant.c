/* quant.c: weight dtypes, conversion, every scalar reference (the spec), the matmul driver and
 * prepacking. The SIMD kernels that reproduce the references live in kernels_x86.c (avx2,
 * avx512) and kernels_neon.c (neon, neon-dotprod); the thread pool in pool.c; the layouts they
 * share in kernels.h.
 *
 * What it does: converts rows between f32 and the storage dtypes (f32, bf16, f16, Q8_0, Q4_0),
 * computes y[T, rows] = x[T, cols] @ W^T for every dtype, causal attention for blocks of
 * queries that share a kv head, and SwiGLU's silu(gate) * up. Each has one scalar reference
 * here (see quant.h "The matmul contract", "The attention contract" and silu_mul) that every
 * SIMD kernel reproduces bit for bit, and the kernel table picks the set for this CPU once.
 *
 * What it mirrors: the block formats are ggml's block_q8_0 / block_q4_0 and the quantizers are
 * ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref, so GGUF tensors import bit for bit.
 * The GEMM follows llamafile's tinyBLAS idea (a register tile of RM rows x RN tokens, the ISA
 * read once into a table of function pointers) with one twist: every tile stores W transposed
 * so that vector lanes hold 8 (avx512: 16) output ROWS and x is broadcast one token at a time.
 * Each output element then accumulates in its own lane in plain k (or block) order, so no
 * horizontal sums are needed, no k tail exists, and the result is identical for any tile
 * shape, SIMD width or thread split. Quantized matrices are STORED that way (quant.h "Tile
 * order", written by export through tile_rows), so every kernel set streams them straight
 * from the mmap, prefill and decode alike, and no process packs or copies a quantized weight.
 * Float matrices are packed per call, k-chunk by k-chunk (or prepacked once, f32 only), and
 * read in place row by row at T = 1 (decode). Attention follows the usual blocked layout
 * (several keys x several queries per step, flash-attention style loads) but keeps every
 * output's operation order.
 *
 * Non-goals: no K-quants / AWQ / bitsandbytes yet (dtype codes reserved, see quant.h; each
 * needs a table entry, a tile order and its kernels), no GPU, no -march=native builds, no fast-math.
 * Activations of quantized matmuls are quantized to 8 bits per block of 32 on the fly (as
 * ggml does for Q8_0/Q4_0); everything else stays f32.
 */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "util.h"

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
    static const struct { const char *alias; int dt; } aliases[] = { { .alias = "q8", .dt = DT_Q8_0 }, { .alias = "q4", .dt = DT_Q4_0 } };
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

int dtype_tiled(uint32_t dt) { return dt < DT_COUNT && dtypes[dt].quantized; }

uint64_t tensor_bytes(uint32_t dt, uint64_t rows, uint64_t cols) {
    const uint64_t rb = dtype_row_bytes(dt, cols);
    if (!rb || rows > UINT64_MAX - QROWS) return 0;
    const uint64_t stored = dtypes[dt].quantized ? (rows + QROWS - 1) / QROWS * QROWS : rows;
    uint64_t r;
    return mul_u64(stored, rb, &r) ? r : 0;
}

/* ==== Conversion and the scalar reference (the spec) ==== */

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

/* Quantize one block of activations (quant.h: "activation blocks"): the twin of every act kernel. */
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

void act_sums(ActQ8 *a, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++) {
        int32_t s = 0;
        for (int i = 0; i < QK; i++) s += a[b].q[i];
        a[b].sum = s;
    }
}

static void act_row_ref(const float *x, ActQ8 *a, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++) act_block_ref(x + b * QK, a + b);
    act_sums(a, nb);
}

/* ==== Tile order (quant.h): the index map between row-major blocks and the stored tiles ====
 * Block b of row r lives in tile (r / QROWS) * nb + b: its scale at d[r % QROWS], its quant
 * bytes 4s..4s+3 at q[s][r % QROWS] (Q8_0: 8 steps of 4 int8; Q4_0: 4 steps of 4 nibble bytes). */
static uint8_t *tile_of(uint32_t dt, const uint8_t *data, uint64_t cols, uint64_t r, uint64_t b) {
    return (uint8_t *)data + ((r / QROWS) * (cols / QK) + b) * qtile_bytes(dt);
}

/* Block b of row r (r < the padded row count), copied out as its GGUF bytes. */
static void tile_get_block(uint32_t dt, const uint8_t *data, uint64_t cols, uint64_t r, uint64_t b, uint8_t *blk) {
    const uint8_t *t = tile_of(dt, data, cols, r, b);
    const size_t lane = (size_t)(r % QROWS), steps = qtile_qbytes(dt) / (4 * QROWS);
    memcpy(blk, t + qtile_qbytes(dt) + 2 * lane, 2);
    for (size_t s = 0; s < steps; s++) memcpy(blk + 2 + 4 * s, t + (s * QROWS + lane) * 4, 4);
}

void tile_rows(uint32_t dt, uint64_t rows, uint64_t cols, const void *src, void *dst) {
    assert(dtypes[dt].quantized && dtype_row_bytes(dt, cols) != 0);
    const uint64_t rb = dtype_row_bytes(dt, cols), bb = dtypes[dt].block_bytes, padded = (rows + QROWS - 1) / QROWS * QROWS;
    const size_t lane_bytes = qtile_qbytes(dt) / QROWS;
    uint8_t pad[sizeof(BlockQ8_0)] = { 0 }; /* a padding row's block: scale 0, values 0 (Q4_0 nibbles 8) */
    if (dt == DT_Q4_0) memset(pad + 2, 0x88, sizeof pad - 2);
    for (uint64_t r = 0; r < padded; r++)
        for (uint64_t b = 0; b < cols / QK; b++) {
            const uint8_t *blk = r < rows ? (const uint8_t *)src + r * rb + b * bb : pad;
            uint8_t *t = tile_of(dt, dst, cols, r, b);
            const size_t lane = (size_t)(r % QROWS);
            memcpy(t + qtile_qbytes(dt) + 2 * lane, blk, 2);
            for (size_t s = 0; s < lane_bytes / 4; s++) memcpy(t + (s * QROWS + lane) * 4, blk + 2 + 4 * s, 4);
        }
}

void tensor_row_blocks(const Tensor *w, uint64_t row, void *blocks) {
    assert(dtypes[w->dtype].quantized && row < w->rows);
    for (uint64_t b = 0; b < w->cols / QK; b++)
        tile_get_block(w->dtype, w->data, w->cols, row, b, (uint8_t *)blocks + b * dtypes[w->dtype].block_bytes);
}

/* ==== The portable float tile packers ====
 * Rows [0, nr) of a row-major W slice (row stride rb bytes, cols columns) into one tile group
 * of tr = 8 or 16 rows (kernels.h layouts); rows past nr get zeros. These are the twins of
 * every SIMD packer (test_quant compares them byte for byte); the neon sets use them as they
 * are. Quantized weights need none: they are stored in tile order. */

/* f32 / bf16 / f16: float[cols][tr], converted exactly. */
static void pack_f_ref(uint32_t dt, int tr, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, float *t) {
    for (int i = 0; i < tr; i++)
        for (uint64_t k = 0; k < cols; k++) t[k * (uint64_t)tr + (uint64_t)i] = i < nr ? elem_f(dt, w + (uint64_t)i * rb, k) : 0.0f;
}

void pack_tile_ref(uint32_t dt, int tr, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile) {
    assert(!dtypes[dt].quantized);
    pack_f_ref(dt, tr, w, rb, nr, cols, tile);
}

/* The table entries (kernels.h): tr = 8. */
#define DEF_PACK_C(NAME, DT, TR_) \
    void NAME(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile) { pack_tile_ref(DT, TR_, w, rb, nr, cols, tile); }
DEF_PACK_C(pack_f32_c, DT_F32, TR)
DEF_PACK_C(pack_bf16_c, DT_BF16, TR)
DEF_PACK_C(pack_f16_c, DT_F16, TR)

/* ==== The matmul reference, one output at a time (quant.h "The matmul contract"), and row conversions ==== */

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
    const uint64_t bytes = q_block_bytes(dt);
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

/* The C twin of every SIMD int8 tile kernel (kernels.h gemm_q_tile_ref): 16 row lanes of one
 * stored tile group x rn tokens, the weight bytes read as unsigned u = q + c (Q8_0: q xor 0x80,
 * c = 128; Q4_0: the nibble, c = 8), as vpdpbusd and vpmaddubsw want them, and each block's
 * sum started from -c * sum(q_a), so it ends at the exact isum of the contract; then the same
 * fold as dot_q_ref. Lane r of token j: out[j*ldo + r] (+)= row r . token j over kn blocks. */
void gemm_q_tile_ref(uint32_t dt, int rn, const TileCall *call) {
    const uint8_t *tile = call->tile;
    const int c = dt == DT_Q4_0 ? 8 : 128, steps = (int)(qtile_qbytes(dt) / (4 * QROWS));
    for (int j = 0; j < rn; j++)
        for (int r = 0; r < QROWS; r++) {
            float acc = call->accumulate ? call->out[(uint64_t)j * call->ldo + (uint64_t)r] : 0.0f;
            for (uint64_t b = 0; b < call->kn; b++) {
                const uint8_t *t = tile + b * qtile_bytes(dt);
                const ActQ8 *a = call->a + (uint64_t)j * call->ldx + b;
                int32_t isum = -c * a->sum;
                for (int s = 0; s < steps; s++)
                    for (int i = 0; i < 4; i++) {
                        const uint8_t v = t[((size_t)s * QROWS + (size_t)r) * 4 + (size_t)i];
                        if (dt == DT_Q4_0) isum += (v & 0x0F) * a->q[4 * s + i] + (v >> 4) * a->q[4 * s + i + QK / 2];
                        else isum += (uint8_t)(v ^ 0x80) * a->q[4 * s + i];
                    }
                acc = fold_block(acc, f16_to_f32(ld_u16(t + qtile_qbytes(dt) + 2 * (size_t)r)), a->d, isum);
            }
            call->out[(uint64_t)j * call->ldo + (uint64_t)r] = acc;
        }
}

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
    [DT_F32] = { .name = "f32", .block = 1, .block_bytes = 4, .dot_ref = dot_f32_scalar, .dequant = dequant_f32, .quant = quant_f32 },
    [DT_BF16] = { .name = "bf16", .block = 1, .block_bytes = 2, .dot_ref = dot_bf16_scalar, .dequant = dequant_bf16,
                  .quant = quant_bf16 },
    [DT_F16] = { .name = "f16", .block = 1, .block_bytes = 2, .dot_ref = dot_f16_scalar, .dequant = dequant_f16, .quant = quant_f16 },
    [DT_Q8_0] = { .name = "q8_0", .block = QK, .block_bytes = sizeof(BlockQ8_0), .quantized = 1, .dot_ref = dot_q8_scalar,
                  .dequant = dequant_q8, .quant = quant_q8 },
    [DT_Q4_0] = { .name = "q4_0", .block = QK, .block_bytes = sizeof(BlockQ4_0), .quantized = 1, .dot_ref = dot_q4_scalar,
                  .dequant = dequant_q4, .quant = quant_q4 },
};

void dequant_row(const Tensor *w, uint64_t row, float *out) {
    assert(w->dtype < DT_COUNT && dtypes[w->dtype].dequant && row < w->rows);
    if (dtypes[w->dtype].quantized) { /* one block at a time through the tile index map */
        uint8_t blk[sizeof(BlockQ8_0)];
        for (uint64_t b = 0; b < w->cols / QK; b++) {
            tile_get_block(w->dtype, w->data, w->cols, row, b, blk);
            dtypes[w->dtype].dequant(blk, out + b * QK, QK);
        }
        return;
    }
    uint64_t rb = dtype_row_bytes(w->dtype, w->cols);
    dtypes[w->dtype].dequant((const uint8_t *)w->data + row * rb, out, w->cols);
}

void dequantize_row(uint32_t dt, const void *src, float *out, uint64_t cols) {
    assert(dt < DT_COUNT && dtypes[dt].dequant && dtype_row_bytes(dt, cols) != 0);
    dtypes[dt].dequant(src, out, cols);
}

void quantize_row(uint32_t dt, const float *src, void *dst, uint64_t cols) {
    assert(dt < DT_COUNT && dtypes[dt].quant && dtype_row_bytes(dt, cols) != 0);
    dtypes[dt].quant(src, dst, cols);
}

/* ==== Attention: the spec (quant.h "The attention contract") ==== */

/* exp_f32: the reduction and the constants are described in kernels.h (EXP_*). */

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
void silu_mul_ref(float *h, const float *u, int64_t n) {
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

/* Query by query, as the contract reads; s: ATTN_SCRATCH(longest len) floats for the scores. */
static void attn_ref(const AttnBlock *b, float *s) {
    for (int j = 0; j < b->nq; j++) {
        const float *q = b->q[j];
        float *o = b->o[j];
        const int64_t len = b->len[j], hd = b->head_dim;
        float m = -INFINITY, sum = 0.0f;
        for (int64_t p = 0; p < len; p++) {
            s[p] = dot_f32_ref(q, b->k + p * b->kv_stride, hd) * b->scale;
            m = s[p] > m ? s[p] : m;
        }
        for (int64_t p = 0; p < len; p++) {
            s[p] = exp_ref(s[p] - m);
            sum += s[p];
        }
        const float inv = 1.0f / sum;
        for (int64_t i = 0; i < hd; i++) o[i] = 0.0f;
        for (int64_t p = 0; p < len; p++) {
            const float a = s[p] * inv, *v = b->v + p * b->kv_stride;
            for (int64_t i = 0; i < hd; i++) o[i] += a * v[i];
        }
    }
}

/* ==== Per-thread scratch ====
 * Grown on demand and kept: tiles live on the worker that packs them, activation blocks on the
 * thread that calls matmul, attention scores on the thread that runs the block. The driver gets
 * it before any kernel runs; when it cannot, matmul and attention return -1 (no kernel
 * allocates, and none has a fallback path). Workers free theirs when the pool shuts down. */
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

void kernels_thread_exit(void) {
    free(tls_tile.p);
    free(tls_act.p);
    free(tls_att.p);
    tls_tile = tls_act = tls_att = (Scratch){ 0 };
}

/* ==== Kernel selection: the only place that chooses an ISA ==== */

static int always(void) { return 1; }

/* The reference set: every matmul goes through job_rows_ref (no packers, no gemv). */
static const Kernels kernels_scalar = {
    .name = "scalar",
    .desc = "scalar reference",
    .supported = always,
    .tr = TR,
    .act = act_row_ref,
    .dot = dot_f32_ref,
    .attn = attn_ref,
    .silu_mul = silu_mul_ref,
};

/* Every set, best last. The SIMD sets come from kernels_x86.c and kernels_neon.c; those of the
 * other CPU family are NULL here (weak references, kernels.h). Each one's supported() reads
 * the CPU once (cpuid, getauxval). */
static const Kernels *const kernel_sets[] = { &kernels_scalar, &kernels_avx2, &kernels_avx512, &kernels_neon,
                                              &kernels_neon_dotprod };
#define N_SETS (sizeof kernel_sets / sizeof kernel_sets[0])

static _Atomic(const Kernels *) active;
static const char *available[N_SETS + 1];
static char init_desc[160];
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static int usable(const Kernels *K) { return K && K->supported(); }

static void init_kernels(void) {
    const Kernels *best = &kernels_scalar;
    int n = 0;
    for (size_t i = 0; i < N_SETS; i++)
        if (usable(kernel_sets[i])) {
            available[n++] = kernel_sets[i]->name;
            best = kernel_sets[i];
        }
    available[n] = NULL;
    const char *want = getenv("GUARD_KERNELS");
    const Kernels *pick = best;
    int ignored = 0;
    if (want && *want) {
        const Kernels *K = kernels_find(want);
        ignored = !usable(K);
        if (!ignored) pick = K;
    }
    snprintf(init_desc, sizeof init_desc, "%s%s%s%s", pick->desc, ignored ? " [GUARD_KERNELS=" : "",
             ignored ? want : "", ignored ? " unavailable here]" : "");
    atomic_store(&active, pick);
}

const char *kernels_init(void) {
    pthread_once(&init_once, init_kernels);
    return init_desc;
}

const Kernels *kernels_find(const char *name) {
    for (size_t i = 0; i < N_SETS; i++)
        if (kernel_sets[i] && strcmp(kernel_sets[i]->name, name) == 0) return kernel_sets[i];
    return NULL;
}

const char *kernels_force(const char *name) {
    kernels_init();
    const Kernels *K = kernels_find(name);
    if (!usable(K)) return NULL;
    atomic_store(&active, K);
    return K->desc;
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

int attention(const AttnBlock *b) {
    kernels_init();
    assert(b->nq >= 1 && b->nq <= ATTN_QMAX && b->head_dim >= 1);
    int64_t maxlen = 0;
    for (int j = 0; j < b->nq; j++) maxlen = b->len[j] > maxlen ? b->len[j] : maxlen;
    float *s = scratch(&tls_att, ATTN_SCRATCH(maxlen) * sizeof(float));
    if (!s) return -1;
    atomic_load(&active)->attn(b, s);
    return 0;
}

/* ==== matmul driver ==== */

/* Prepacked float tiles: group G (rows [G*tr, G*tr + tr)) is nk consecutive steps, one per
 * column (float[tr]), exactly what the packer writes for a tile chunk; groups are padded to
 * whole rv-group tiles with zero rows, so job_tiles reads every tile, the last short one too,
 * in place. */
struct Packed {
    const Kernels *K;  /* the set whose layout this is */
    uint8_t *tiles;    /* [groups][nk][step], bytes long (big_alloc) */
    size_t bytes;
    uint64_t groups, nk;
    size_t step;       /* bytes of one k step (column) of one group */
};

typedef struct {
    const Kernels *K;
    const DTypeInfo *dt;
    const Packed *pk;   /* the tensor's prepacked float tiles for K, or NULL */
    uint32_t dtype;
    const uint8_t *w;   /* float: [rows] rows of rb bytes; quantized: tile order (quant.h) */
    uint64_t rows, cols, rb, nb;
    float *y;           /* [T, rows] */
    const float *x;     /* [T, cols] */
    ActQ8 *a;           /* [T, nb] quantized x (quantized dtypes), else NULL */
    int64_t T;
    atomic_int failed;  /* a worker could not get its scratch: matmul returns -1 */
} Job;

static void job_act(void *ctx, int64_t t0, int64_t t1) {
    Job *j = ctx;
    for (int64_t t = t0; t < t1; t++) j->K->act(j->x + t * j->cols, j->a + t * j->nb, j->nb);
}

/* The reference path (the scalar set, or a float dtype without a packer): one spec dot per
 * output. A quantized row is first gathered from its tiles back into GGUF order. */
static void job_rows_ref(void *ctx, int64_t r0, int64_t r1) {
    Job *j = ctx;
    uint8_t *blocks = NULL;
    if (j->dt->quantized && !(blocks = scratch(&tls_tile, j->rb))) {
        atomic_store(&j->failed, 1);
        return;
    }
    const Tensor w = { .dtype = j->dtype, .rows = j->rows, .cols = j->cols, .data = j->w };
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *wr = j->w + r * j->rb;
        if (blocks) {
            tensor_row_blocks(&w, (uint64_t)r, blocks);
            wr = blocks;
        }
        for (int64_t t = 0; t < j->T; t++) {
            const void *xt = j->dt->quantized ? (const void *)(j->a + t * j->nb) : (const void *)(j->x + t * j->cols);
            j->y[t * j->rows + r] = j->dt->dot_ref(wr, xt, j->cols);
        }
    }
}

/* k-chunk of a tile: small enough that the chunk stays in L1 while every token streams past
 * it (float: columns; quantized: blocks of 32). A float tile packed per call takes longer
 * chunks: its packer then reads each row in longer runs. */
#define KC_F 256
#define KC_Q 16

/* Prefetching the next chunk of tiles. A chunk comes from memory once and is then swept by
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

/* Where the chunk after (tile i, k0) of a thread's tiles [.., i1) starts: *ni, *nk0, *nkn
 * steps; 0 when there is none. */
static int next_chunk(uint64_t i, uint64_t k0, uint64_t kchunk, uint64_t nk, uint64_t i1, uint64_t *ni, uint64_t *nk0, uint64_t *nkn) {
    *ni = i, *nk0 = k0 + kchunk;
    if (*nk0 >= nk) ++*ni, *nk0 = 0;
    if (*ni >= i1) return 0;
    *nkn = nk - *nk0 < kchunk ? nk - *nk0 : kchunk;
    return 1;
}

static Ahead ahead_make(const uint8_t *base, uint64_t group_bytes, uint64_t group_stride, int groups, int64_t T, int rn) {
    const uint64_t calls = ((uint64_t)T + (uint64_t)rn - 1) / (uint64_t)rn;
    return (Ahead){ .base = base, .group_bytes = group_bytes, .group_stride = group_stride, .groups = groups,
                    .per_call = (group_bytes * (uint64_t)groups + 64 * calls - 1) / (64 * calls) * 64 };
}

static inline void ahead_step(Ahead *a) {
    for (uint64_t k = 0; a->base && k < a->per_call && a->g < a->groups; k += 64) {
        __builtin_prefetch(a->base + (uint64_t)a->g * a->group_stride + a->off, 0, 2);
        if ((a->off += 64) >= a->group_bytes) a->off = 0, a->g++;
    }
}

/* Float weights: tile i covers rows [i*rv*tr, ...). For each k-chunk, pack the tile chunk once
 * (or find it prepacked) and sweep all tokens over it; sums continue across chunks in y (or
 * acc for the last, short tile), exact since k order is kept. */
static void job_tiles(void *ctx, int64_t i0, int64_t i1) {
    Job *j = ctx;
    const Kernels *K = j->K;
    const int rv = K->rv_f, rn = K->rn_f, tr = K->tr;
    const uint64_t tile_rows = (uint64_t)rv * tr, kstep_bytes = dtype_row_bytes(j->dtype, 1);
    const size_t step_bytes = (size_t)tr * sizeof(float); /* one column of a group */
    const size_t tile_bytes = j->pk ? 0 : KC_F * step_bytes * (size_t)rv, acc_bytes = (size_t)j->T * tile_rows * sizeof(float);
    uint8_t *tile = scratch(&tls_tile, tile_bytes + acc_bytes);
    if (!tile) {
        atomic_store(&j->failed, 1);
        return;
    }
    float *acc = (float *)(void *)(tile + tile_bytes); /* [T][tile_rows] */
    for (int64_t i = i0; i < i1; i++) {
        const uint64_t r0 = (uint64_t)i * tile_rows;
        const uint64_t nr = j->rows - r0 < tile_rows ? j->rows - r0 : tile_rows;
        const int direct = nr == tile_rows; /* whole tiles write y directly; the last, short one goes through acc */
        for (uint64_t k0 = 0; k0 < j->cols; k0 += KC_F) {
            const uint64_t kn = j->cols - k0 < KC_F ? j->cols - k0 : KC_F;
            const uint8_t *src_tile = tile;
            uint64_t gs = kn, ni, nk0, nkn;
            Ahead ahead = { 0 };
            if (j->pk) {
                src_tile = j->pk->tiles + ((uint64_t)i * rv * j->pk->nk + k0) * step_bytes;
                gs = j->pk->nk;
                if (next_chunk((uint64_t)i, k0, KC_F, j->pk->nk, (uint64_t)i1, &ni, &nk0, &nkn))
                    ahead = ahead_make(j->pk->tiles + (ni * (uint64_t)rv * j->pk->nk + nk0) * step_bytes, nkn * step_bytes,
                                       j->pk->nk * step_bytes, rv, j->T, rn);
            } else {
                for (int g = 0; g < rv; g++) {
                    const int64_t left = (int64_t)nr - g * tr;
                    const uint8_t *src = j->w + (r0 + (left > 0 ? (uint64_t)g * tr : 0)) * j->rb + k0 * kstep_bytes;
                    K->pack[j->dtype](src, j->rb, left < 0 ? 0 : left > tr ? tr : (int)left, kn, tile + g * kn * step_bytes);
                }
            }
            for (int64_t t0 = 0; t0 < j->T; t0 += rn) {
                const int n = j->T - t0 < rn ? (int)(j->T - t0) : rn;
                ahead_step(&ahead);
                const TileCall c = {
                    .tile = src_tile, .kn = kn, .gs = gs, .x = j->x + t0 * j->cols + k0, .ldx = j->cols,
                    .out = direct ? j->y + t0 * j->rows + r0 : acc + t0 * tile_rows, .ldo = direct ? j->rows : tile_rows,
                    .accumulate = k0 > 0,
                };
                K->gemm_f(n, &c);
            }
        }
        for (int64_t t = 0; !direct && t < j->T; t++) memcpy(j->y + t * j->rows + r0, acc + t * tile_rows, nr * sizeof(float));
    }
}

/* Quantized weights, any T: tile i covers rows [i*rv*tr, ...), read in place from the
 * tensor's own tiles (quant.h "Tile order"; a set of 8 lanes takes one half of a 16-row tile
 * per call, a set of 16 lanes rv whole ones). Each k-chunk is swept by every token while it is
 * in L1, sums continuing across chunks in y (or acc for the last tile, whose padding rows are
 * not output), exact since block order is kept; the next chunk is requested meanwhile. With
 * one token group (decode: T = 1) nothing is reused from L1, so the tile is one call over
 * whole rows: rv sequential streams, which the hardware prefetchers follow better than our
 * requests (decode ~20% faster on the project VM than with chunks and Ahead). */
static void job_qtiles(void *ctx, int64_t i0, int64_t i1) {
    Job *j = ctx;
    const Kernels *K = j->K;
    const int rv = K->rv_q, rn = K->rn_q, tr = K->tr;
    assert(tr == QROWS || (tr == QROWS / 2 && rv == 1));
    const uint64_t tile_rows = (uint64_t)rv * tr, nb = j->nb, stored = (j->rows + QROWS - 1) / QROWS * QROWS;
    const size_t step = qtile_bytes(j->dtype), group_bytes = nb * step; /* one tile; one 16-row group */
    void (*gemm)(int, const TileCall *) = j->dtype == DT_Q4_0 ? K->gemm_q4 : K->gemm_q;
    float *acc = scratch(&tls_tile, (size_t)j->T * tile_rows * sizeof(float)); /* [T][tile_rows] */
    if (!acc) {
        atomic_store(&j->failed, 1);
        return;
    }
    for (int64_t i = i0; i < i1; i++) {
        const uint64_t r0 = (uint64_t)i * tile_rows, nr = j->rows - r0 < tile_rows ? j->rows - r0 : tile_rows;
        const uint64_t lanes = stored - r0 < tile_rows ? stored - r0 : tile_rows;
        const int nrv = (int)((lanes + (uint64_t)tr - 1) / (uint64_t)tr), direct = nr == tile_rows;
        const uint8_t *g0 = j->w + r0 / QROWS * group_bytes;
        const uint64_t kchunk = j->T > rn ? KC_Q : nb;
        for (uint64_t k0 = 0; k0 < nb; k0 += kchunk) {
            const uint64_t kn = nb - k0 < kchunk ? nb - k0 : kchunk;
            uint64_t ni, nk0, nkn;
            Ahead ahead = { 0 };
            if (j->T > rn && next_chunk((uint64_t)i, k0, kchunk, nb, (uint64_t)i1, &ni, &nk0, &nkn)) {
                const uint64_t nr0 = ni * tile_rows, nl = stored - nr0 < tile_rows ? stored - nr0 : tile_rows;
                ahead = ahead_make(j->w + nr0 / QROWS * group_bytes + nk0 * step, nkn * step, group_bytes,
                                   (int)((nl + QROWS - 1) / QROWS), j->T, rn);
            }
            for (int64_t t0 = 0; t0 < j->T; t0 += rn) {
                const int n = j->T - t0 < rn ? (int)(j->T - t0) : rn;
                ahead_step(&ahead);
                const TileCall c = {
                    .tile = g0 + k0 * step, .kn = kn, .gs = nb, .a = j->a + t0 * nb + k0, .ldx = nb,
                    .out = direct ? j->y + t0 * j->rows + r0 : acc + t0 * tile_rows, .ldo = direct ? j->rows : tile_rows,
                    .accumulate = k0 > 0, .nrv = nrv, .half = (int)(r0 % QROWS / (uint64_t)tr),
                };
                gemm(n, &c);
            }
        }
        for (int64_t t = 0; !direct && t < j->T; t++) memcpy(j->y + t * j->rows + r0, acc + t * tile_rows, nr * sizeof(float));
    }
}

/* Rows per pool item of the float T = 1 path: 4 groups of 8 (the float kernel's step). */
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

int matmul(Pool *p, float *y, const float *x, const Tensor *w, int64_t T) {
    kernels_init();
    assert(w->dtype < DT_COUNT && dtypes[w->dtype].dot_ref && dtype_row_bytes(w->dtype, w->cols) != 0);
    if (T <= 0 || w->rows == 0) return 0;
    const Kernels *K = atomic_load(&active);
    Job j = { .K = K, .dt = &dtypes[w->dtype], .pk = w->packed && w->packed->K == K ? w->packed : NULL, .dtype = w->dtype,
              .w = w->data, .rows = w->rows, .cols = w->cols, .rb = dtype_row_bytes(w->dtype, w->cols), .nb = w->cols / QK,
              .y = y, .x = x, .T = T };
    if (j.dt->quantized) {
        j.a = scratch(&tls_act, (size_t)T * j.nb * sizeof(ActQ8));
        if (!j.a) return -1;
        pool_for(p, T, job_act, &j);
        const uint64_t tile_rows = (uint64_t)K->rv_q * (uint64_t)K->tr;
        if (K->gemm_q) pool_for(p, (int64_t)((w->rows + tile_rows - 1) / tile_rows), job_qtiles, &j);
        else pool_for(p, (int64_t)w->rows, job_rows_ref, &j);
    } else if (T == 1 && !j.pk && K->gemv[w->dtype] && j.rb <= INT32_MAX / TR) {
        /* prepacked tiles stream faster than the in-place T = 1 kernels read strided rows */
        GemvJob gj = { .g = { .w = j.w, .rb = j.rb, .cols = j.cols, .x = x, .y = y }, .fn = K->gemv[w->dtype], .rows = j.rows };
        pool_for(p, (int64_t)((j.rows + GEMV_ROWS - 1) / GEMV_ROWS), job_gemv, &gj);
    } else if (j.pk || K->pack[w->dtype]) {
        const uint64_t tile_rows = (uint64_t)K->rv_f * (uint64_t)K->tr;
        pool_for(p, (int64_t)((w->rows + tile_rows - 1) / tile_rows), job_tiles, &j);
    } else {
        pool_for(p, (int64_t)w->rows, job_rows_ref, &j);
    }
    return atomic_load(&j.failed) ? -1 : 0;
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
    const uint64_t rb = dtype_row_bytes(w->dtype, w->cols);
    if (!rb || dtypes[w->dtype].quantized) return 0;
    const int rv = K->rv_f;
    const uint64_t tile_rows = (uint64_t)rv * (uint64_t)K->tr;
    *nk = w->cols;
    *step = (size_t)K->tr * sizeof(float);
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
    *pk = (Packed){ .K = K, .tiles = tiles, .bytes = (size_t)bytes, .groups = groups, .nk = nk, .step = step };
    PackJob pj = { .w = w, .K = K, .pk = pk, .rb = rb };
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
