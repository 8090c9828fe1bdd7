/* kernels_x86.c: the x86-64 kernel sets, avx2 and avx512, each reproducing the scalar
 * references of quant.c bit for bit (quant.h "The matmul contract", "The attention contract",
 * silu_mul). Every function is compiled for its ISA with a target attribute and chosen at run
 * time by quant.c's kernel selection, so one portable binary runs everywhere. Internal layouts
 * (activation blocks, tiles, the Kernels table) are in kernels.h.
 *
 *   AVX2 section:    the avx2 set (AVX2 + FMA + F16C); its helpers serve the avx512 set too.
 *   AVX-512 section: the avx512 set (AVX512F/BW/VL + VNNI): 16-row tiles in zmm registers,
 *                    vpdpbusd int8 dot products.
 * Quantized weights are read in their stored tile order (quant.h "Tile order"): nothing here
 * packs them.
 */
#if defined(__x86_64__) || defined(__i386__)

#include <cpuid.h>
#include <float.h>
#include <immintrin.h>
#include <stdint.h>

#include "kernels.h"

/* Target attributes: X86_BASE for every x86 kernel (the avx2 set's ISA), X86_512 for the
 * avx512 set's own. */
#define X86_BASE "avx2,fma,f16c"
#define X86_512 "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
#define INLINE_X86 static inline __attribute__((always_inline, target(X86_BASE)))
#define AVX512_INLINE static inline __attribute__((always_inline, target(X86_512)))

/* The pause hint of pool.c's spin-wait. */
void cpu_relax(void) { __builtin_ia32_pause(); }

/* ================================================================================================
 * ==== AVX2 + FMA + F16C: the avx2 set ====
 * ================================================================================================ */

static int have_avx2(void) {
    unsigned a, b, c, d; /* F16C: CPUID.1:ECX bit 29 (clang's __builtin_cpu_supports lacks "f16c") */
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __get_cpuid(1, &a, &b, &c, &d) &&
           (c >> 29 & 1);
}

/* ---- activation blocks (twin: act_row_ref, quant.c; cvtps2dq rounds to nearest even, as
 * nearbyintf does); the avx512 set's too ---- */
__attribute__((target(X86_BASE))) static void act_avx2(const float *x, ActQ8 *a, uint64_t nb) {
    ActQ8 *const a0 = a;
    const uint64_t nb0 = nb;
    const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps(INFINITY);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
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
            _mm256_storeu_si256((__m256i *)a[b].q, _mm256_setzero_si256());
            continue;
        }
        const __m256 id = _mm256_set1_ps(1.0f / d);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v[0], id)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v[1], id));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v[2], id)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v[3], id));
        __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        q = _mm256_permutevar8x32_epi32(q, order); /* undo the per-lane interleave of packs */
        a[b].d = act_scale(d);
        _mm256_storeu_si256((__m256i *)a[b].q, q);
    }
    act_sums(a0, nb0);
}

/* ---- tile packers ---- */

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

/* 8 consecutive elements of a float-family row as f32 (exact conversions). */
INLINE_X86 __m256i load8_f_x86(uint32_t dt, const uint8_t *p) {
    if (dt == DT_F32) return _mm256_loadu_si256((const __m256i *)p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (dt == DT_BF16) return _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    return _mm256_castps_si256(_mm256_cvtph_ps(h));
}

/* Twin: pack_tile_ref (quant.c), float dtypes, tr = 8. */
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

#define DEF_PACK_X86(NAME, CALL)                                                                  \
    __attribute__((target(X86_BASE))) static void NAME(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile) { \
        CALL;                                                                                         \
    }
DEF_PACK_X86(pack_f32_x86, pack_f_x86(DT_F32, w, rb, nr, cols, tile))
DEF_PACK_X86(pack_bf16_x86, pack_f_x86(DT_BF16, w, rb, nr, cols, tile))
DEF_PACK_X86(pack_f16_x86, pack_f_x86(DT_F16, w, rb, nr, cols, tile))

/* ---- float register tile: RV groups of 8 rows x RN tokens, one fma per (row lane, token, k).
 * Twin: dot_f_ref (quant.c), for every output of the tile ---- */
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

/* The avx2 float tile: 2 groups of 8 rows x up to 6 tokens (12 accumulators of 16 ymm). */
enum { AVX2_RV_F = 2, AVX2_RN_F = 6 };
DEF_TILE_DISPATCH(gemm_f_avx2, __attribute__((target(X86_BASE))), RN_CASES_6, gemm_f_x86, AVX2_RV_F)

/* ---- int8 register tile (avx2): 8 rows (one half of each stored 16-row tile, c->half) x RN
 * tokens; per block an exact int32 dot per lane, then one fma of the block scales (the
 * contract's fold). Q8_0 (NIB = 0): AVX2 has no signed x signed byte product: |w| * (a *
 * sign(w)) with vpmaddubsw (pairs stay below 2*128*127, no saturation), then vpmaddwd by 1 to
 * widen. Q4_0 (NIB = 1): a nibble is q + 8, unsigned already: nibble * a with vpmaddubsw
 * (pairs below 2*15*128), the sums starting from -8 * sum(a). Twins: dot_q_ref, gemm_q_tile_ref (quant.c) ---- */
INLINE_X86 void gemm_q_avx2_t(const int NIB, const int RN, const TileCall *c) {
    const size_t step = NIB ? sizeof(TileQ4_0) : sizeof(TileQ8_0), dofs = (NIB ? offsetof(TileQ4_0, d) : offsetof(TileQ8_0, d)) + 16 * (size_t)c->half;
    const uint8_t *tile = (const uint8_t *)c->tile + 32 * c->half;
    const ActQ8 *a = c->a;
    const uint64_t nb = c->kn, lda = c->ldx, ldo = c->ldo;
    float *out = c->out;
    const __m256i ones16 = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(0x0F);
    __m256 acc[RN_MAX];
    UNROLL for (int j = 0; j < RN; j++) acc[j] = c->accumulate ? _mm256_loadu_ps(out + j * ldo) : _mm256_setzero_ps();
    for (uint64_t b = 0; b < nb; b++) {
        const uint8_t *tb = tile + b * step;
        __m256i ia[RN_MAX];
        UNROLL for (int j = 0; j < RN; j++) ia[j] = NIB ? _mm256_set1_epi32(-8 * a[j * lda + b].sum) : _mm256_setzero_si256();
        UNROLL for (int s = 0; s < QK / 4; s++) {
            if (NIB && s >= QK / 8) break; /* a nibble load holds steps s and s + 4 */
            const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(tb + 64 * s));
            __m256i w[2], wabs = _mm256_abs_epi8(v);
            w[0] = NIB ? _mm256_and_si256(v, low4) : v;
            w[1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
            UNROLL for (int h = 0; h <= NIB; h++) UNROLL for (int j = 0; j < RN; j++) {
                int32_t a4;
                memcpy(&a4, a[j * lda + b].q + 4 * (s + 4 * h), 4);
                const __m256i x4 = _mm256_set1_epi32(a4);
                const __m256i p = NIB ? _mm256_maddubs_epi16(w[h], x4) : _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(x4, v));
                ia[j] = _mm256_add_epi32(ia[j], _mm256_madd_epi16(p, ones16));
            }
        }
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(tile - 32 * c->half + b * step + dofs)));
        UNROLL for (int j = 0; j < RN; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a[j * lda + b].d)), _mm256_cvtepi32_ps(ia[j]), acc[j]);
    }
    UNROLL for (int j = 0; j < RN; j++) _mm256_storeu_ps(out + j * ldo, acc[j]);
}

/* The avx2 int8 tiles: 8 rows x up to 4 tokens. */
enum { AVX2_RV_Q = 1, AVX2_RN_Q = 4 };
DEF_TILE_DISPATCH(gemm_q_avx2, __attribute__((target(X86_BASE))), RN_CASES_4, gemm_q_avx2_t, 0)
DEF_TILE_DISPATCH(gemm_q4_avx2, __attribute__((target(X86_BASE))), RN_CASES_4, gemm_q_avx2_t, 1)

/* ---- matrix-vector (T = 1: decode, the logits row) of float rows: W read in place, no
 * tile. Eight rows sit in the lanes, as in the tiles, so every output follows the same
 * sequential chain as the GEMM (quant.h "The matmul contract") and prefill and decode agree
 * bit for bit; what the packer did once per call (the 8x8 transpose) happens in registers.
 * Quantized weights need no such path: their stored tiles serve T = 1 as well.
 * Twin: dot_f_ref (quant.c), per output row. */

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

#define DEF_GEMV_X86(NAME, TARGET, BODY, DT) \
    __attribute__((target(TARGET))) static void NAME(const Gemv *g, uint64_t r0, uint64_t r1) { BODY(DT, g, r0, r1); }
DEF_GEMV_X86(gemv_f32_x86, X86_BASE, gemv_f_x86, DT_F32)
DEF_GEMV_X86(gemv_bf16_x86, X86_BASE, gemv_f_x86, DT_BF16)
DEF_GEMV_X86(gemv_f16_x86, X86_BASE, gemv_f_x86, DT_F16)

/* ---- attention (quant.h "The attention contract"), 4 queries at a time ----
 * Scores go to s[p*4 + j] for the 4 queries j of a group, so the softmax runs with the queries
 * in SIMD lanes (each lane's max and sum stay sequential in p) and P.V broadcasts one weight
 * per query while each value row is loaded once for all 4. */

/* Twin: exp_ref (quant.c), lane by lane. */
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

/* Twin: silu_mul_ref (quant.c), 8 lanes at a time; it also does the tail (the avx512 set uses
 * this too: exp is not where its time goes) */
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

/* Twin: dot_f32_ref (quant.c). */
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

/* A wider P.V step (the avx512 set's attn_pv_512), run first over whole 64-float chunks. */
typedef void (*AttnPvZ)(const AttnBlock *b, const float *s, float *const o[4], const int64_t len[4], int64_t minlen,
                        int64_t maxlen, int64_t i0);

/* The whole block: scores for 4 queries at a time into s[p*8 + j] (a block holds up to 8;
 * the lanes of missing queries repeat the last one and their outputs are dropped), the
 * softmax with the 8 queries in the lanes (each lane's max and sum run in p order), then
 * P.V for 4 queries at a time. KB: keys per score step; NV: vectors per P.V step; pvz: use
 * the 64-float P.V (avx512); s: ATTN_SCRATCH(longest len) floats.
 * Twin: attn_ref (quant.c). */
INLINE_X86 void attn_x86(const int KB, const int NV, AttnPvZ pvz, const AttnBlock *b, float *s) {
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

/* 16 ymm registers: 2 keys x 4 queries of scores, 2 vectors x 4 queries of P.V. */
__attribute__((target(X86_BASE))) static void attn_avx2(const AttnBlock *b, float *s) { attn_x86(2, 2, NULL, b, s); }

/* ---- the avx2 set (Intel Haswell, 2013, and later; AMD Zen 1 and later) ---- */
const Kernels kernels_avx2 = {
    .name = "avx2", .desc = "avx2 (AVX2+FMA+F16C; ymm tiles: f32 16x6, int8 8x4)", .supported = have_avx2, .tr = TR,
    .rv_f = AVX2_RV_F, .rn_f = AVX2_RN_F, .gemm_f = gemm_f_avx2, .rv_q = AVX2_RV_Q, .rn_q = AVX2_RN_Q, .gemm_q = gemm_q_avx2,
    .gemm_q4 = gemm_q4_avx2, .act = act_avx2, .dot = dot_f32_avx2, .attn = attn_avx2, .silu_mul = silu_mul_avx2,
    .pack = { [DT_F32] = pack_f32_x86, [DT_BF16] = pack_bf16_x86, [DT_F16] = pack_f16_x86 },
    .gemv = { [DT_F32] = gemv_f32_x86, [DT_BF16] = gemv_bf16_x86, [DT_F16] = gemv_f16_x86 },
};

/* ================================================================================================
 * ==== AVX-512 (F/BW/VL + VNNI): the avx512 set ====
 * ================================================================================================ */

static int have_avx512(void) {
    return have_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
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

/* avx512: 16-row tile groups (zmm lanes) in one pass: rows i and i+8 are loaded into the two
 * halves of one zmm, and one 16x8 transpose yields 8 whole 64-byte tile lines. */
#define ROW16(i) (w + (uint64_t)(i) * rb)
AVX512_INLINE __m512i two_rows_512(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

/* Twin: pack_tile_ref (quant.c), float dtypes, tr = 16. */
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

#undef ROW16

#define DEF_PACK_512(NAME, CALL) \
    __attribute__((target(X86_512))) static void NAME(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile) { CALL; }
DEF_PACK_512(pack_f32_16, pack_f16_512(DT_F32, w, rb, nr, cols, tile))
DEF_PACK_512(pack_bf16_16, pack_f16_512(DT_BF16, w, rb, nr, cols, tile))
DEF_PACK_512(pack_f16_16, pack_f16_512(DT_F16, w, rb, nr, cols, tile))

/* ---- avx512 register tiles: 16 rows per zmm, RV groups x RN tokens ----
 * Same arithmetic as the 8-row tiles (one fma per lane and k, or per lane and block), twice
 * the lanes per instruction. Twin: dot_f_ref (quant.c). */
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

/* The avx512 float tile: 2 groups of 16 rows x up to 12 tokens. */
enum { V512_RV_F = 2, V512_RN_F = 12 };
DEF_TILE_DISPATCH(gemm_f_512, __attribute__((target(X86_512))), RN_CASES_12, gemm_f_zmm_t, V512_RV_F)

/* int8: vpdpbusd multiplies unsigned by signed bytes, so the tile's bytes are read as unsigned
 * q + 128 (Q8_0: q xor 0x80) or q + 8 (Q4_0: the nibble as it is) against the signed
 * activations, and each block's sums start from -128 * sum(a) or -8 * sum(a): they end at the
 * exact isum without a correction step. One zmm line per step: the 16 rows of a stored tile.
 * Twins: dot_q_ref, gemm_q_tile_ref (quant.c). */
AVX512_INLINE void gemm_q_zmm_t(const int RV, const int NIB, const int RN, const TileCall *c) {
    const size_t step = NIB ? sizeof(TileQ4_0) : sizeof(TileQ8_0), dofs = NIB ? offsetof(TileQ4_0, d) : offsetof(TileQ8_0, d);
    const uint8_t *tile = c->tile;
    const ActQ8 *a = c->a;
    const uint64_t nb = c->kn, gs = c->gs, lda = c->ldx, ldo = c->ldo;
    float *out = c->out;
    const __m512i low4 = _mm512_set1_epi8(0x0F), flip = _mm512_set1_epi8((char)0x80);
    __m512 acc[RV_MAX][RN_MAX];
    UNROLL for (int g = 0; g < RV; g++) UNROLL for (int j = 0; j < RN; j++)
        acc[g][j] = c->accumulate ? _mm512_loadu_ps(out + j * ldo + g * 16) : _mm512_setzero_ps();
    for (uint64_t b = 0; b < nb; b++) {
        const uint8_t *tb[RV_MAX];
        UNROLL for (int g = 0; g < RV; g++) tb[g] = tile + (g * gs + b) * step;
        /* CH chains per accumulator: with few tokens the 8 (Q4: 8) vpdpbusd of a block would
         * wait on each other's latency; two partial int32 sums added at the end are exact */
        const int CH = RN * RV <= 4 ? 2 : 1;
        __m512i ia[2][RV_MAX][RN_MAX];
        UNROLL for (int j = 0; j < RN; j++) {
            const __m512i nc = _mm512_set1_epi32((NIB ? -8 : -128) * a[j * lda + b].sum);
            UNROLL for (int g = 0; g < RV; g++) {
                ia[0][g][j] = nc;
                if (CH > 1) ia[CH - 1][g][j] = _mm512_setzero_si512();
            }
        }
        UNROLL for (int s = 0; s < QK / 4; s++) {
            if (NIB && s >= QK / 8) break; /* a nibble load holds steps s and s + 4 */
            __m512i w[2][RV_MAX];
            UNROLL for (int g = 0; g < RV; g++) {
                const __m512i v = _mm512_loadu_si512(tb[g] + 64 * s);
                /* decode streams each group's tiles once: ask 1 KiB ahead, so a stream that
                 * crosses a 4 KiB page (where the hardware prefetchers stop) keeps going */
                if (RN == 1) _mm_prefetch((const char *)tb[g] + 64 * s + 1024, _MM_HINT_T0);
                if (NIB) {
                    w[0][g] = _mm512_and_si512(v, low4);
                    w[1][g] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
                } else {
                    w[0][g] = _mm512_xor_si512(v, flip);
                }
            }
            UNROLL for (int h = 0; h <= NIB; h++) UNROLL for (int j = 0; j < RN; j++) {
                int32_t a4;
                memcpy(&a4, a[j * lda + b].q + 4 * (s + 4 * h), 4);
                const __m512i x4 = _mm512_set1_epi32(a4);
                const int ch = CH > 1 ? (s + h) & 1 : 0;
                UNROLL for (int g = 0; g < RV; g++) ia[ch][g][j] = _mm512_dpbusd_epi32(ia[ch][g][j], w[h][g], x4);
            }
        }
        UNROLL for (int g = 0; g < RV; g++) {
            const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(tb[g] + dofs)));
            UNROLL for (int j = 0; j < RN; j++) {
                const __m512i isum = CH > 1 ? _mm512_add_epi32(ia[0][g][j], ia[CH - 1][g][j]) : ia[0][g][j];
                acc[g][j] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(a[j * lda + b].d)), _mm512_cvtepi32_ps(isum), acc[g][j]);
            }
        }
    }
    UNROLL for (int j = 0; j < RN; j++) UNROLL for (int g = 0; g < RV; g++) _mm512_storeu_ps(out + j * ldo + g * 16, acc[g][j]);
}

/* The avx512 int8 tiles, 32 rows x 4 tokens with 16-block k-chunks (17 KiB of tile): the best
 * of 16-48 rows x 2-7 tokens tried on Zen 5 at T = 65 and 205 (bench_kernels, best of 5; the
 * runners-up were within ~5%); few tokens per tile also waste less on a short last token group.
 * A matrix whose last tile holds one 16-row group takes the 16-row shape there. */
enum { V512_RV_Q = 2, V512_RN_Q = 4 };
DEF_QTILE_DISPATCH2(gemm_q_512, __attribute__((target(X86_512))), RN_CASES_4, gemm_q_zmm_t, 0)
DEF_QTILE_DISPATCH2(gemm_q4_512, __attribute__((target(X86_512))), RN_CASES_4, gemm_q_zmm_t, 1)

/* One whole 64-byte line of each row is loaded at once (16 f32 or 32 bf16/f16 columns), so
 * every line is used up in registers the moment it arrives; 8 rows per group as in
 * gemv_f_x86, two groups per step for two independent fma chains. Whole 16-row blocks only:
 * the rows left over go through gemv_f_x86. Twin: dot_f_ref, per output row. */
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
DEF_GEMV_X86(gemv_f32_512, X86_512, gemv_f_512, DT_F32)
DEF_GEMV_X86(gemv_bf16_512, X86_512, gemv_f_512, DT_BF16)
DEF_GEMV_X86(gemv_f16_512, X86_512, gemv_f_512, DT_F16)

/* attn_pv_x86's P.V, 64 floats at a time in zmm registers (avx512 set; whole 16-float chunks);
 * part of attn_512, whose twin is attn_ref. */
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

/* AVX512VL's 32 registers: 4 keys x 4 queries of scores; P.V in zmm, a 64-float row per step. */
__attribute__((target(X86_512))) static void attn_512(const AttnBlock *b, float *s) { attn_x86(4, 4, attn_pv_512, b, s); }

/* ---- the avx512 set (Intel Ice Lake / Sapphire Rapids and later, AMD Zen 4 and later:
 * vpdpbusd does 32 int8 multiply-adds per instruction, and 32 vector registers allow larger
 * register tiles) ---- */
const Kernels kernels_avx512 = {
    .name = "avx512", .desc = "avx512 (AVX512VL+VNNI; zmm tiles: f32 32x12, int8 32x4)", .supported = have_avx512, .tr = 16,
    .rv_f = V512_RV_F, .rn_f = V512_RN_F, .gemm_f = gemm_f_512, .rv_q = V512_RV_Q, .rn_q = V512_RN_Q, .gemm_q = gemm_q_512,
    .gemm_q4 = gemm_q4_512, .act = act_avx2, .dot = dot_f32_avx2, .attn = attn_512, .silu_mul = silu_mul_avx2,
    .pack = { [DT_F32] = pack_f32_16, [DT_BF16] = pack_bf16_16, [DT_F16] = pack_f16_16 },
    .gemv = { [DT_F32] = gemv_f32_512, [DT_BF16] = gemv_bf16_512, [DT_F16] = gemv_f16_512 },
};

#endif /* x86-64 */
