/* kernels_neon.c: the aarch64 kernel sets, neon and neon-dotprod, each reproducing the scalar
 * references of quant.c bit for bit (quant.h "The matmul contract", "The attention contract",
 * silu_mul). NEON is baseline on aarch64; the SDOT kernels are compiled with a target
 * attribute and chosen at run time (getauxval) by quant.c's kernel selection. Float tiles are
 * packed by quant.c's portable packers; quantized weights are read in their stored tile order
 * (quant.h "Tile order"). Internal layouts are in kernels.h; `make test-neon` runs the
 * tests under qemu.
 *
 *   NEON section:     the neon set, every ARMv8-A core.
 *   dotprod section:  the neon-dotprod set: the int8 kernels with SDOT, the rest shared.
 */
#if defined(__aarch64__)

#include <arm_neon.h>
#include <float.h>
#include <stdint.h>
#include <sys/auxv.h>

#include "kernels.h"

#define NEON_HWCAP_ASIMDDP (1 << 20) /* HWCAP_ASIMDDP of <asm/hwcap.h>: SDOT/UDOT */
#define TARGET_DOTPROD , target("arch=armv8.2-a+dotprod")

/* The yield hint of pool.c's spin-wait. */
void cpu_relax(void) { __asm__ __volatile__("yield"); }

/* ================================================================================================
 * ==== NEON: the neon set ====
 * ================================================================================================ */

static int always(void) { return 1; }

/* Twin: act_row_ref (quant.c); vcvtnq rounds to nearest even, as nearbyintf does. */
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
    act_sums(a, nb);
}

/* ---- float register tile: RV groups of 8 rows (two q registers) x RN tokens.
 * Twin: dot_f_ref (quant.c), for every output of the tile ---- */
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

/* The neon float tile: 2 groups of 8 rows x up to 4 tokens. */
enum { NEON_RV_F = 2, NEON_RN_F = 4 };
DEF_TILE_DISPATCH(gemm_f_neon, , RN_CASES_4, gemm_f_neon_t, NEON_RV_F)

/* int8 tile, stamped for plain NEON and for dotprod: 8 rows (one half of each stored 16-row
 * tile, c->half; two registers of 4 rows) x RN tokens. DOT(acc, w, x4) adds, per row lane,
 * the products of 4 weight bytes with the replicated activation bytes. Q8_0 (NIB = 0): signed
 * x signed. Q4_0 (NIB = 1): a nibble is q + 8, in 0..15, a valid signed byte too, so the
 * nibbles go in as they are and each block's sums start from -8 * sum(a).
 * Twins: dot_q_ref, gemm_q_tile_ref (quant.c). */
#define DEF_GEMM_Q_NEON(NAME, ATTR, DOT)                                                                 \
    static inline __attribute__((always_inline ATTR)) void NAME(const int NIB, const int RN, const TileCall *c) { \
        const size_t step = NIB ? sizeof(TileQ4_0) : sizeof(TileQ8_0);                                   \
        const size_t dofs = (NIB ? offsetof(TileQ4_0, d) : offsetof(TileQ8_0, d)) + 16 * (size_t)c->half; \
        const uint8_t *tile = c->tile;                                                                    \
        const ActQ8 *a = c->a;                                                                            \
        const uint64_t nb = c->kn, lda = c->ldx, ldo = c->ldo;                                            \
        float *out = c->out;                                                                              \
        const uint8x16_t low4 = vdupq_n_u8(0x0F);                                                         \
        float32x4_t acc[2][RN_MAX];                                                                       \
        UNROLL for (int j = 0; j < RN; j++) {                                                             \
            acc[0][j] = c->accumulate ? vld1q_f32(out + j * ldo) : vdupq_n_f32(0.0f);                     \
            acc[1][j] = c->accumulate ? vld1q_f32(out + j * ldo + 4) : vdupq_n_f32(0.0f);                 \
        }                                                                                                 \
        for (uint64_t b = 0; b < nb; b++) {                                                               \
            const uint8_t *tb = tile + b * step;                                                          \
            int32x4_t ia[2][RN_MAX];                                                                      \
            UNROLL for (int j = 0; j < RN; j++)                                                           \
                ia[0][j] = ia[1][j] = vdupq_n_s32(NIB ? -8 * a[j * lda + b].sum : 0);                     \
            UNROLL for (int s = 0; s < QK / 4; s++) {                                                     \
                if (NIB && s >= QK / 8) break;                                                            \
                int8x16_t w[2][2]; /* [step s or s + 4][rows 0-3 or 4-7] */                               \
                UNROLL for (int half = 0; half < 2; half++) {                                             \
                    const uint8x16_t v = vld1q_u8(tb + 64 * s + 32 * c->half + 16 * half);                \
                    if (NIB) {                                                                            \
                        w[0][half] = vreinterpretq_s8_u8(vandq_u8(v, low4));                              \
                        w[1][half] = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));                               \
                    } else {                                                                              \
                        w[0][half] = vreinterpretq_s8_u8(v);                                              \
                    }                                                                                     \
                }                                                                                         \
                UNROLL for (int h = 0; h <= NIB; h++) UNROLL for (int j = 0; j < RN; j++) {               \
                    int32_t a4;                                                                           \
                    memcpy(&a4, a[j * lda + b].q + 4 * (s + 4 * h), 4);                                   \
                    const int8x16_t x4 = vreinterpretq_s8_s32(vdupq_n_s32(a4));                           \
                    ia[0][j] = DOT(ia[0][j], w[h][0], x4);                                                \
                    ia[1][j] = DOT(ia[1][j], w[h][1], x4);                                                \
                }                                                                                         \
            }                                                                                             \
            const uint16x8_t dh = vld1q_u16((const uint16_t *)(const void *)(tb + dofs));                 \
            const float32x4_t d0 = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(dh)));                  \
            const float32x4_t d1 = vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(dh)));                 \
            UNROLL for (int j = 0; j < RN; j++) {                                                         \
                const float da = a[j * lda + b].d;                                                        \
                acc[0][j] = vfmaq_f32(acc[0][j], vmulq_n_f32(d0, da), vcvtq_f32_s32(ia[0][j]));           \
                acc[1][j] = vfmaq_f32(acc[1][j], vmulq_n_f32(d1, da), vcvtq_f32_s32(ia[1][j]));           \
            }                                                                                             \
        }                                                                                                 \
        UNROLL for (int j = 0; j < RN; j++) {                                                             \
            vst1q_f32(out + j * ldo, acc[0][j]);                                                          \
            vst1q_f32(out + j * ldo + 4, acc[1][j]);                                                      \
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
DEF_GEMM_Q_NEON(gemm_q_neon_t, , DOT_NEON)
/* The int8 tiles (both sets): 8 rows x up to 4 tokens. */
enum { NEON_RV_Q = 1, NEON_RN_Q = 4 };
DEF_TILE_DISPATCH(gemm_q_neon, , RN_CASES_4, gemm_q_neon_t, 0)
DEF_TILE_DISPATCH(gemm_q4_neon, , RN_CASES_4, gemm_q_neon_t, 1)

/* ---- attention (quant.h "The attention contract"), 4 queries at a time, as on x86: scores
 * at s[p*4 + j], softmax with the queries in the 4 lanes, P.V sharing each value load. The
 * 8 partial sums of dot_f32 are two float32x4 registers: lanes 0-3 and 4-7. ---- */

/* Twin: exp_ref (quant.c), lane by lane. */
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

/* Twin: silu_mul_ref (quant.c), which also does the tail. */
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

/* Twin: dot_f32_ref (quant.c). */
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

/* Twin: attn_ref (quant.c). s: ATTN_SCRATCH(longest len) floats. */
static void attn_neon(const AttnBlock *b, float *s) {
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

/* ---- matrix-vector (T = 1) of float rows, W read in place: lanes = rows as in the tiles
 * (see the x86 file), rows transposed 4x4 (quantized weights use their stored tiles at T = 1
 * too). Twin: dot_f_ref (quant.c), per output row. ---- */

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

/* What the neon and neon-dotprod sets share: all but the int8 kernels. */
#define NEON_SHARED                                                                                                     \
    .tr = TR, .rv_f = NEON_RV_F, .rn_f = NEON_RN_F, .gemm_f = gemm_f_neon, .rv_q = NEON_RV_Q, .rn_q = NEON_RN_Q,          \
    .act = act_neon, .dot = dot_f32_neon, .attn = attn_neon, .silu_mul = silu_mul_neon,                                 \
    .pack = { [DT_F32] = pack_f32_c, [DT_BF16] = pack_bf16_c, [DT_F16] = pack_f16_c },                                    \
    .gemv[DT_F32] = gemv_f32_neon, .gemv[DT_BF16] = gemv_bf16_neon, .gemv[DT_F16] = gemv_f16_neon

/* ---- the neon set (every ARMv8-A core: Cortex-A53/A72, Graviton 1) ---- */
const Kernels kernels_neon = {
    .name = "neon", .desc = "neon (f32 tile 16x4, int8 tile 8x4)", .supported = always, NEON_SHARED,
    .gemm_q = gemm_q_neon, .gemm_q4 = gemm_q4_neon,
};

/* ================================================================================================
 * ==== dotprod (ARMv8.2-A SDOT): the neon-dotprod set ====
 * ================================================================================================ */

static int have_dotprod(void) { return (getauxval(AT_HWCAP) & NEON_HWCAP_ASIMDDP) != 0; }

/* The int8 register tile with SDOT: four byte products per lane and instruction. Twin: dot_q_ref. */
#define DOT_SDOT(acc, w, x4) vdotq_s32(acc, w, x4)
DEF_GEMM_Q_NEON(gemm_q_sdot_t, TARGET_DOTPROD, DOT_SDOT)
DEF_TILE_DISPATCH(gemm_q_sdot, __attribute__((target("arch=armv8.2-a+dotprod"))), RN_CASES_4, gemm_q_sdot_t, 0)
DEF_TILE_DISPATCH(gemm_q4_sdot, __attribute__((target("arch=armv8.2-a+dotprod"))), RN_CASES_4, gemm_q_sdot_t, 1)

/* ---- the neon-dotprod set (ARMv8.2-A cores with SDOT: Cortex-A55/A76 and later, Graviton 2+,
 * Apple M1+) ---- */
const Kernels kernels_neon_dotprod = {
    .name = "neon-dotprod", .desc = "neon-dotprod (SDOT int8 dot; f32 tile 16x4, int8 tile 8x4)", .supported = have_dotprod,
    NEON_SHARED, .gemm_q = gemm_q_sdot, .gemm_q4 = gemm_q4_sdot,
};

#endif /* aarch64 */
