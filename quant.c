/* quant.c: weight dtypes, conversion, the matmul kernels and the thread pool.
 *
 * What it does: converts rows between f32 and the storage dtypes (f32, bf16, f16, Q8_0, Q4_0),
 * and computes y[T, rows] = x[T, cols] @ W^T for every dtype with one scalar reference per
 * dtype (the spec, see quant.h "The matmul contract") plus SIMD kernels that reproduce it bit
 * for bit: AVX2/FMA/F16C and AVX512-VNNI on x86-64, NEON (optionally dotprod) on aarch64.
 *
 * What it mirrors: the block formats are ggml's block_q8_0 / block_q4_0 and the quantizers are
 * ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref, so GGUF tensors import bit for bit.
 * The GEMM follows llamafile's tinyBLAS idea (a register tile of RM rows x RN tokens, the ISA
 * read once into a table of function pointers) with one twist: every tile stores W transposed
 * so that vector lanes hold 8 output ROWS and x is broadcast one token at a time. Each output
 * element then accumulates in its own lane in plain k (or block) order, so no horizontal sums
 * are needed, no k tail exists, and the result is identical for any tile shape, SIMD width or
 * thread split.
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

#define TR 8 /* rows per tile group: the lanes of a 256-bit vector, or two NEON vectors */

/* A quantized tile group: 8 rows x one block of 32, transposed so that q[s] (32 bytes) holds
 * elements 4s..4s+3 of each of the 8 rows, row-major within the vector. Q8_0 and Q4_0 (and
 * later AWQ or bitsandbytes rows) all unpack to this, so one kernel serves them. */
typedef struct {
    int8_t q[QK / 4][TR][4];
    float d[TR];       /* row scales as f32 (exact f16 -> f32) */
    int32_t corr[TR];  /* 128 * sum(q) per row: the VNNI activation-offset correction */
} TileQ;
static_assert(sizeof(TileQ) == 320, "TileQ must stay a multiple of 64 bytes");

/* A float tile group is float[cols][TR]: element k of the 8 rows, contiguous. */

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
    a->d = d;
    for (int i = 0; i < QK; i++) a->q[i] = (int8_t)nearbyintf(x[i] * id);
}

static void act_row_ref(const float *x, ActQ8 *a, uint64_t nb) {
    for (uint64_t b = 0; b < nb; b++) act_block_ref(x + b * QK, a + b);
}

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

/* ==== Kernel table ==== */

typedef void (*PackFn)(const uint8_t *w, uint64_t row_bytes, int nr, uint64_t cols, void *tile);

typedef struct {
    const char *name, *desc;
    int (*supported)(void);
    int rv_f, rn_f;   /* float tiles: rv groups of 8 rows x up to rn tokens per kernel call */
    int rv_q, rn_q;   /* quantized tiles */
    /* quantize one token row into nb activation blocks (the encoding this set's kernel wants) */
    void (*act)(const float *x, ActQ8 *a, uint64_t nb);
    /* pack rows [0, nr) (nr <= 8; the rest zero) of a row-major W slice into one tile group */
    PackFn pack[DT_COUNT];
    /* out[j][g*8 + r] (+)= row g*8+r of the rv-group tile . token j, for j < rn; the tile
     * covers kn columns (float) or kn blocks (quantized) and token j's slice starts at
     * x + j*ldx. accumulate: continue the sums in out (the next k-chunk) instead of from 0. */
    void (*gemm_f)(int rn, const float *tile, uint64_t kn, const float *x, uint64_t ldx, float *out, int accumulate);
    void (*gemm_q)(int rn, const TileQ *tile, uint64_t kn, const ActQ8 *a, uint64_t lda, float *out, int accumulate);
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
        a[b].d = d;
        _mm256_storeu_si256((__m256i *)a[b].q, _mm256_xor_si256(q, bias));
    }
}
__attribute__((target(X86_BASE))) static void act_avx2(const float *x, ActQ8 *a, uint64_t nb) { act_row_x86(x, a, nb, 0); }
__attribute__((target(X86_BASE))) static void act_vnni(const float *x, ActQ8 *a, uint64_t nb) { act_row_x86(x, a, nb, 1); }

/* ---- tile packers (shared by both x86 sets) ---- */

#define PREFETCH_AHEAD 1024

/* In-register transpose of an 8x8 matrix of 32-bit elements (rows in, columns out). */
INLINE_X86 void transpose8x32(__m256i r[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
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
        for (int i = 0; i < 8; i++) {
            if (i < nr) _mm_prefetch((const char *)w + i * rb + k * es + PREFETCH_AHEAD, _MM_HINT_T0);
            r[i] = i < nr ? load8_f_x86(dt, w + i * rb + k * es) : _mm256_setzero_si256();
        }
        transpose8x32(r);
        for (int i = 0; i < 8; i++) _mm256_store_si256((__m256i *)(t + (k + i) * TR), r[i]);
    }
    for (; k < cols; k++)
        for (int i = 0; i < TR; i++) t[k * TR + i] = i < nr ? elem_f(dt, w + i * rb, k) : 0.0f;
}

/* One Q8_0 / Q4_0 block as 32 int8 values in element order. */
INLINE_X86 __m256i load_qblock_x86(uint32_t dt, const uint8_t *blk) {
    if (dt == DT_Q8_0) return _mm256_loadu_si256((const __m256i *)(blk + 2));
    const __m128i b = _mm_loadu_si128((const __m128i *)(blk + 2)), m = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

INLINE_X86 void pack_q_x86(uint32_t dt, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, TileQ *t) {
    const uint64_t bytes = dtypes[dt].block_bytes;
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (uint64_t b = 0; b < cols / QK; b++) {
        __m256i r[8];
        uint16_t h[8];
        for (int i = 0; i < 8; i++) {
            const uint8_t *blk = w + i * rb + b * bytes;
            /* 8 strided row streams defeat the hardware prefetchers: fetch ~1 KiB ahead */
            if (i < nr) _mm_prefetch((const char *)blk + PREFETCH_AHEAD, _MM_HINT_T0);
            r[i] = i < nr ? load_qblock_x86(dt, blk) : _mm256_setzero_si256();
            h[i] = i < nr ? ld_u16(blk) : 0;
        }
        transpose8x32(r);
        __m256i s16 = _mm256_setzero_si256();
        for (int s = 0; s < 8; s++) {
            _mm256_store_si256((__m256i *)t[b].q[s], r[s]);
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(ones8, r[s]));
        }
        _mm256_store_si256((__m256i *)t[b].corr, _mm256_slli_epi32(_mm256_madd_epi16(s16, ones16), 7));
        _mm256_store_ps(t[b].d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)));
    }
}

#define DEF_PACK_X86(NAME, FAMILY, DT, TILE)                                                   \
    __attribute__((target(X86_BASE))) static void NAME(const uint8_t *w, uint64_t rb, int nr, \
                                                       uint64_t cols, void *tile) {            \
        FAMILY(DT, w, rb, nr, cols, (TILE *)tile);                                             \
    }
DEF_PACK_X86(pack_f32_x86, pack_f_x86, DT_F32, float)
DEF_PACK_X86(pack_bf16_x86, pack_f_x86, DT_BF16, float)
DEF_PACK_X86(pack_f16_x86, pack_f_x86, DT_F16, float)
DEF_PACK_X86(pack_q8_x86, pack_q_x86, DT_Q8_0, TileQ)
DEF_PACK_X86(pack_q4_x86, pack_q_x86, DT_Q4_0, TileQ)

/* ---- float register tile: RV groups of 8 rows x RN tokens, one fma per (row lane, token, k) ---- */
INLINE_X86 void gemm_f_x86(const int RV, const int RN, const float *tile, uint64_t kn, const float *x, uint64_t ldx,
                           float *out, int accumulate) {
    __m256 acc[RV_MAX][RN_MAX];
    UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++)
        acc[g][j] = accumulate ? _mm256_loadu_ps(out + (j * RV + g) * TR) : _mm256_setzero_ps();
    for (uint64_t k = 0; k < kn; k++) {
        __m256 w[RV_MAX];
        UNROLL for (int g = 0; g < RV; g++) w[g] = _mm256_load_ps(tile + (g * kn + k) * TR);
        UNROLL for (int j = 0; j < RN; j++) {
            const __m256 xb = _mm256_broadcast_ss(x + j * ldx + k);
            UNROLL for (int g = 0; g < RV; g++) acc[g][j] = _mm256_fmadd_ps(w[g], xb, acc[g][j]);
        }
    }
    UNROLL for (int j = 0; j < RN; j++) UNROLL for (int g = 0; g < RV; g++) _mm256_storeu_ps(out + (j * RV + g) * TR, acc[g][j]);
}

/* ---- int8 register tile, stamped once per ISA: only the 4-byte dot step and the offset
 * fix-up differ. PREP(w) precomputes what DOT needs per weight vector; DOT(acc, x4, w, wp)
 * adds, per row lane, the products of 4 weight bytes with the broadcast activation bytes x4. */
#define DEF_GEMM_Q_X86(NAME, TARGET, PREP, DOT, FIX)                                                   \
    static inline __attribute__((always_inline, target(TARGET))) void NAME(                            \
        const int RV, const int RN, const TileQ *tile, uint64_t nb, const ActQ8 *a, uint64_t lda,      \
        float *out, int accumulate) {                                                                   \
        const __m256i ones16 = _mm256_set1_epi16(1);                                                    \
        (void)ones16;                                                                                   \
        __m256 acc[RV_MAX][RN_MAX];                                                                     \
        UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++)                         \
            acc[g][j] = accumulate ? _mm256_loadu_ps(out + (j * RV + g) * TR) : _mm256_setzero_ps();    \
        for (uint64_t b = 0; b < nb; b++) {                                                             \
            __m256i ia[RV_MAX][RN_MAX];                                                                 \
            UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++) ia[g][j] = _mm256_setzero_si256(); \
            UNROLL for (int s = 0; s < QK / 4; s++) {                                                   \
                __m256i w[RV_MAX], wp[RV_MAX];                                                          \
                UNROLL for (int g = 0; g < RV; g++) {                                                   \
                    w[g] = _mm256_load_si256((const __m256i *)tile[g * nb + b].q[s]);                   \
                    wp[g] = PREP(w[g]);                                                                 \
                }                                                                                       \
                UNROLL for (int j = 0; j < RN; j++) {                                                   \
                    int32_t a4;                                                                         \
                    memcpy(&a4, a[j * lda + b].q + 4 * s, 4);                                           \
                    const __m256i x4 = _mm256_set1_epi32(a4);                                           \
                    UNROLL for (int g = 0; g < RV; g++) ia[g][j] = DOT(ia[g][j], x4, w[g], wp[g]);      \
                }                                                                                       \
            }                                                                                           \
            UNROLL for (int g = 0; g < RV; g++) {                                                       \
                const TileQ *tb = &tile[g * nb + b];                                                    \
                const __m256 dw = _mm256_load_ps(tb->d);                                                \
                UNROLL for (int j = 0; j < RN; j++) {                                                   \
                    const __m256 s = _mm256_mul_ps(dw, _mm256_set1_ps(a[j * lda + b].d));               \
                    acc[g][j] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(FIX(ia[g][j], tb)), acc[g][j]);   \
                }                                                                                       \
            }                                                                                           \
        }                                                                                               \
        UNROLL for (int j = 0; j < RN; j++) UNROLL for (int g = 0; g < RV; g++)                         \
            _mm256_storeu_ps(out + (j * RV + g) * TR, acc[g][j]);                                       \
    }

/* AVX2 has no signed x signed byte product: |w| * (x * sign(w)) with vpmaddubsw (pairs stay
 * below 2*128*127, no saturation), then vpmaddwd by 1 to widen. */
#define PREP_AVX2(w) _mm256_abs_epi8(w)
#define DOT_AVX2(acc, x4, w, wabs) \
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(x4, w)), ones16))
#define FIX_AVX2(isum, tb) (isum)
DEF_GEMM_Q_X86(gemm_q_avx2_t, X86_BASE, PREP_AVX2, DOT_AVX2, FIX_AVX2)

/* VNNI: x4 holds q + 128 (unsigned), w is signed: sum (q+128)*w - 128*sum(w). */
#define PREP_VNNI(w) (w)
#define DOT_VNNI(acc, x4, w, wp) ((void)(wp), _mm256_dpbusd_epi32(acc, x4, w))
#define FIX_VNNI(isum, tb) _mm256_sub_epi32(isum, _mm256_load_si256((const __m256i *)(tb)->corr))
DEF_GEMM_Q_X86(gemm_q_vnni_t, X86_512, PREP_VNNI, DOT_VNNI, FIX_VNNI)

/* ---- dispatchers: the tile shapes of each set ---- */
#define AVX2_RV_F 2
#define AVX2_RN_F 6
#define AVX2_RV_Q 1
#define AVX2_RN_Q 4
#define V512_RV_F 2
#define V512_RN_F 12
#define V512_RV_Q 2
#define V512_RN_Q 6

__attribute__((target(X86_BASE))) static void gemm_f_avx2(int rn, const float *t, uint64_t kn, const float *x, uint64_t ldx, float *out, int acc) {
#define C(n) case n: gemm_f_x86(AVX2_RV_F, n, t, kn, x, ldx, out, acc); return;
    switch (rn) { RN_CASES_6(C) }
#undef C
}
__attribute__((target(X86_BASE))) static void gemm_q_avx2(int rn, const TileQ *t, uint64_t kn, const ActQ8 *a, uint64_t lda, float *out, int acc) {
#define C(n) case n: gemm_q_avx2_t(AVX2_RV_Q, n, t, kn, a, lda, out, acc); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}
__attribute__((target(X86_512))) static void gemm_f_512(int rn, const float *t, uint64_t kn, const float *x, uint64_t ldx, float *out, int acc) {
#define C(n) case n: gemm_f_x86(V512_RV_F, n, t, kn, x, ldx, out, acc); return;
    switch (rn) { RN_CASES_12(C) }
#undef C
}
__attribute__((target(X86_512))) static void gemm_q_512(int rn, const TileQ *t, uint64_t kn, const ActQ8 *a, uint64_t lda, float *out, int acc) {
#define C(n) case n: gemm_q_vnni_t(V512_RV_Q, n, t, kn, a, lda, out, acc); return;
    switch (rn) { RN_CASES_6(C) }
#undef C
}

#define PACKS_X86 { [DT_F32] = pack_f32_x86, [DT_BF16] = pack_bf16_x86, [DT_F16] = pack_f16_x86, \
                    [DT_Q8_0] = pack_q8_x86, [DT_Q4_0] = pack_q4_x86 }
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
        a[b].d = d;
        for (int i = 0; i < 8; i += 2) {
            int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(v[i], id)), q1 = vcvtnq_s32_f32(vmulq_n_f32(v[i + 1], id));
            int16x8_t q16 = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
            vst1_s8(a[b].q + 4 * i, vqmovn_s16(q16));
        }
    }
}

static inline __attribute__((always_inline)) void gemm_f_neon_t(const int RV, const int RN, const float *tile, uint64_t kn,
                                                               const float *x, uint64_t ldx, float *out, int accumulate) {
    float32x4_t acc[RV_MAX][2][RN_MAX];
    UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++) {
        acc[g][0][j] = accumulate ? vld1q_f32(out + (j * RV + g) * TR) : vdupq_n_f32(0.0f);
        acc[g][1][j] = accumulate ? vld1q_f32(out + (j * RV + g) * TR + 4) : vdupq_n_f32(0.0f);
    }
    for (uint64_t k = 0; k < kn; k++) {
        float32x4_t w[RV_MAX][2];
        UNROLL for (int g = 0; g < RV; g++) {
            w[g][0] = vld1q_f32(tile + (g * kn + k) * TR);
            w[g][1] = vld1q_f32(tile + (g * kn + k) * TR + 4);
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
        vst1q_f32(out + (j * RV + g) * TR, acc[g][0][j]);
        vst1q_f32(out + (j * RV + g) * TR + 4, acc[g][1][j]);
    }
}

/* int8 tile, stamped for plain NEON and for dotprod; DOT(acc, w, x4) adds, per row lane, the
 * products of 4 weight bytes (4 rows per vector) with the replicated activation bytes. */
#define DEF_GEMM_Q_NEON(NAME, ATTR, DOT)                                                                 \
    static inline __attribute__((always_inline ATTR)) void NAME(                                         \
        const int RV, const int RN, const TileQ *tile, uint64_t nb, const ActQ8 *a, uint64_t lda,        \
        float *out, int accumulate) {                                                                     \
        float32x4_t acc[RV_MAX][2][RN_MAX];                                                               \
        UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++) {                         \
            acc[g][0][j] = accumulate ? vld1q_f32(out + (j * RV + g) * TR) : vdupq_n_f32(0.0f);           \
            acc[g][1][j] = accumulate ? vld1q_f32(out + (j * RV + g) * TR + 4) : vdupq_n_f32(0.0f);       \
        }                                                                                                 \
        for (uint64_t b = 0; b < nb; b++) {                                                               \
            int32x4_t ia[RV_MAX][2][RN_MAX];                                                              \
            UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++)                       \
                ia[g][0][j] = ia[g][1][j] = vdupq_n_s32(0);                                               \
            UNROLL for (int s = 0; s < QK / 4; s++) {                                                     \
                int8x16_t w[RV_MAX][2];                                                                   \
                UNROLL for (int g = 0; g < RV; g++) {                                                     \
                    w[g][0] = vld1q_s8(tile[g * nb + b].q[s][0]);                                         \
                    w[g][1] = vld1q_s8(tile[g * nb + b].q[s][4]);                                         \
                }                                                                                         \
                UNROLL for (int j = 0; j < RN; j++) {                                                     \
                    int32_t a4;                                                                           \
                    memcpy(&a4, a[j * lda + b].q + 4 * s, 4);                                             \
                    const int8x16_t x4 = vreinterpretq_s8_s32(vdupq_n_s32(a4));                           \
                    UNROLL for (int g = 0; g < RV; g++) {                                                 \
                        ia[g][0][j] = DOT(ia[g][0][j], w[g][0], x4);                                      \
                        ia[g][1][j] = DOT(ia[g][1][j], w[g][1], x4);                                      \
                    }                                                                                     \
                }                                                                                         \
            }                                                                                             \
            UNROLL for (int g = 0; g < RV; g++) {                                                         \
                const TileQ *tb = &tile[g * nb + b];                                                      \
                const float32x4_t d0 = vld1q_f32(tb->d), d1 = vld1q_f32(tb->d + 4);                       \
                UNROLL for (int j = 0; j < RN; j++) {                                                     \
                    const float da = a[j * lda + b].d;                                                    \
                    acc[g][0][j] = vfmaq_f32(acc[g][0][j], vmulq_n_f32(d0, da), vcvtq_f32_s32(ia[g][0][j])); \
                    acc[g][1][j] = vfmaq_f32(acc[g][1][j], vmulq_n_f32(d1, da), vcvtq_f32_s32(ia[g][1][j])); \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        UNROLL for (int j = 0; j < RN; j++) UNROLL for (int g = 0; g < RV; g++) {                         \
            vst1q_f32(out + (j * RV + g) * TR, acc[g][0][j]);                                             \
            vst1q_f32(out + (j * RV + g) * TR + 4, acc[g][1][j]);                                         \
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

static void gemm_f_neon(int rn, const float *t, uint64_t kn, const float *x, uint64_t ldx, float *out, int acc) {
#define C(n) case n: gemm_f_neon_t(NEON_RV_F, n, t, kn, x, ldx, out, acc); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}
static void gemm_q_neon(int rn, const TileQ *t, uint64_t kn, const ActQ8 *a, uint64_t lda, float *out, int acc) {
#define C(n) case n: gemm_q_neon_t(NEON_RV_Q, n, t, kn, a, lda, out, acc); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}
__attribute__((target("arch=armv8.2-a+dotprod"))) static void gemm_q_sdot(int rn, const TileQ *t, uint64_t kn, const ActQ8 *a, uint64_t lda, float *out, int acc) {
#define C(n) case n: gemm_q_sdot_t(NEON_RV_Q, n, t, kn, a, lda, out, acc); return;
    switch (rn) { RN_CASES_4(C) }
#undef C
}

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
DEF_PACK_C(pack_q4_c, pack_q_c, DT_Q4_0, TileQ)
#define PACKS_C { [DT_F32] = pack_f32_c, [DT_BF16] = pack_bf16_c, [DT_F16] = pack_f16_c, \
                  [DT_Q8_0] = pack_q8_c, [DT_Q4_0] = pack_q4_c }
#endif /* QUANT_NEON */

/* ==== Kernel selection: the only place that looks at the CPU ==== */

static const Kernels kernel_sets[] = {
    { "scalar", "scalar reference", always, 0, 0, 0, 0, act_row_ref, { 0 }, NULL, NULL },
#if defined(QUANT_X86)
    { "avx2", "avx2 (AVX2+FMA+F16C; f32 tile 16x6, int8 tile 8x4)", have_avx2,
      AVX2_RV_F, AVX2_RN_F, AVX2_RV_Q, AVX2_RN_Q, act_avx2, PACKS_X86, gemm_f_avx2, gemm_q_avx2 },
    { "avx512", "avx512 (AVX512VL+VNNI int8 dot; f32 tile 16x12, int8 tile 16x6)", have_avx512,
      V512_RV_F, V512_RN_F, V512_RV_Q, V512_RN_Q, act_vnni, PACKS_X86, gemm_f_512, gemm_q_512 },
#elif defined(QUANT_NEON)
    { "neon", "neon (f32 tile 16x4, int8 tile 8x4)", always,
      NEON_RV_F, NEON_RN_F, NEON_RV_Q, NEON_RN_Q, act_neon, PACKS_C, gemm_f_neon, gemm_q_neon },
    { "neon-dotprod", "neon-dotprod (SDOT int8 dot; f32 tile 16x4, int8 tile 8x4)", have_dotprod,
      NEON_RV_F, NEON_RN_F, NEON_RV_Q, NEON_RN_Q, act_neon, PACKS_C, gemm_f_neon, gemm_q_sdot },
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

static void scratch_release(void);

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

/* Per-thread scratch, grown on demand and kept: tiles live on the worker that packs them,
 * activation blocks on the thread that calls matmul. */
typedef struct { void *p; size_t cap; } Scratch;
static _Thread_local Scratch tls_tile, tls_act;

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
    tls_tile = tls_act = (Scratch){ 0 };
}

typedef struct {
    const Kernels *K;
    const DTypeInfo *dt;
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

/* k-chunk of a packed tile: small enough that the tile chunk stays in L1 while every token
 * streams past it (float: columns; quantized: blocks of 32). */
#define KC_F 256
#define KC_Q 32

/* The SIMD path: tile i covers rows [i*rv*8, ...). For each k-chunk, pack the tile chunk once
 * and sweep all tokens over it; sums continue across chunks in acc (exact: k order is kept). */
static void job_tiles(void *ctx, int64_t i0, int64_t i1) {
    Job *j = ctx;
    const Kernels *K = j->K;
    const int q = j->dt->quantized, rv = q ? K->rv_q : K->rv_f, rn = q ? K->rn_q : K->rn_f;
    const uint64_t tile_rows = (uint64_t)rv * TR, kchunk = q ? KC_Q : KC_F, kn_all = q ? j->nb : j->cols;
    const uint64_t kstep_bytes = q ? j->dt->block_bytes : dtype_row_bytes(j->dtype, 1);
    const size_t group_bytes = q ? kchunk * sizeof(TileQ) : kchunk * TR * sizeof(float);
    const size_t tile_bytes = group_bytes * (size_t)rv, acc_bytes = (size_t)j->T * tile_rows * sizeof(float);
    uint8_t *tile = scratch(&tls_tile, tile_bytes + acc_bytes);
    if (!tile) {
        job_rows_ref(ctx, i0 * (int64_t)tile_rows, (int64_t)(i1 * tile_rows < j->rows ? i1 * tile_rows : j->rows));
        return;
    }
    float *acc = (float *)(tile + tile_bytes); /* [T][tile_rows] */
    for (int64_t i = i0; i < i1; i++) {
        const uint64_t r0 = (uint64_t)i * tile_rows;
        const uint64_t nr = j->rows - r0 < tile_rows ? j->rows - r0 : tile_rows;
        for (uint64_t k0 = 0; k0 < kn_all; k0 += kchunk) {
            const uint64_t kn = kn_all - k0 < kchunk ? kn_all - k0 : kchunk;
            for (int g = 0; g < rv; g++) {
                const int64_t left = (int64_t)nr - g * TR;
                const uint8_t *src = j->w + (r0 + (left > 0 ? (uint64_t)g * TR : 0)) * j->rb + k0 * kstep_bytes;
                K->pack[j->dtype](src, j->rb, left < 0 ? 0 : left > TR ? TR : (int)left, kn * (q ? QK : 1),
                                  tile + g * (q ? kn * sizeof(TileQ) : kn * TR * sizeof(float)));
            }
            for (int64_t t0 = 0; t0 < j->T; t0 += rn) {
                const int n = j->T - t0 < rn ? (int)(j->T - t0) : rn;
                float *out = acc + t0 * tile_rows;
                if (q) K->gemm_q(n, (const TileQ *)tile, kn, j->a + t0 * j->nb + k0, j->nb, out, k0 > 0);
                else K->gemm_f(n, (const float *)tile, kn, j->x + t0 * j->cols + k0, j->cols, out, k0 > 0);
            }
        }
        for (int64_t t = 0; t < j->T; t++) memcpy(j->y + t * j->rows + r0, acc + t * tile_rows, nr * sizeof(float));
    }
}

void matmul(Pool *p, float *y, const float *x, const Tensor *w, int64_t T) {
    kernels_init();
    assert(w->dtype < DT_COUNT && dtypes[w->dtype].dot_ref && dtype_row_bytes(w->dtype, w->cols) != 0);
    if (T <= 0 || w->rows == 0) return;
    Job j = { atomic_load(&active), &dtypes[w->dtype], w->dtype, w->data, w->rows, w->cols,
              dtype_row_bytes(w->dtype, w->cols), w->cols / QK, y, x, NULL, T };
    if (j.dt->quantized) {
        j.a = scratch(&tls_act, (size_t)T * j.nb * sizeof(ActQ8));
        if (j.a) pool_for(p, T, job_act, &j);
    }
    if (j.K->pack[w->dtype] && (!j.dt->quantized || j.a)) {
        const uint64_t tile_rows = (uint64_t)(j.dt->quantized ? j.K->rv_q : j.K->rv_f) * TR;
        pool_for(p, (int64_t)((w->rows + tile_rows - 1) / tile_rows), job_tiles, &j);
    } else {
        pool_for(p, (int64_t)w->rows, job_rows_ref, &j);
    }
}
