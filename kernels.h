/* kernels.h: what quant.c (the formats, the scalar references, the matmul driver) shares with
 * the SIMD kernel files (kernels_x86.c, kernels_neon.c): the internal layouts of activation
 * blocks and register tiles, the call structs, and the kernel set table every file fills in.
 * Internal to the kernels: the rest of the runtime uses quant.h only.
 *
 * Every SIMD kernel reproduces a scalar reference in quant.c operation for operation, so
 * a*b + c written in C must stay two roundings: the Makefile builds with -ffp-contract=off.
 */
#ifndef GUARD_KERNELS_H
#define GUARD_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "quant.h"
#include "util.h"

/* Fully unroll the small constant-trip loops of the register tiles so every accumulator
 * stays in a register (GCC and clang both accept this spelling). */
#define UNROLL _Pragma("GCC unroll 16")

/* ==== Activation blocks and tiles: the internal layouts ==== */

/* One block of 32 quantized activations, signed for every kernel set. sum is the offset
 * correction of the kernels that read the weight tile as unsigned bytes (quant.h "The matmul
 * contract"): they subtract 128 * sum (Q8_0) or 8 * sum (Q4_0) per block. */
typedef struct {
    float d;     /* the scale, act_scale below */
    int32_t sum; /* sum of q */
    int8_t q[QK];
} ActQ8;
static_assert(sizeof(ActQ8) == 40, "ActQ8: d, sum, 32 quants");

/* The scale an activation block keeps: amax/127 rounded to f16 as ggml's Q8_0 stores it (so a
 * q4/q8 linear computes what ggml's Q4_0/Q8_0 x Q8_0 dot products do, and the INT4 release's
 * Q8_0-activation reference), except where f16 has no such value: above its range (no made-up
 * inf) and where it would round to 0 (a block of tiny values keeps them); there the f32 value
 * stays. The codes are nearbyint(x / f32 scale) either way. Every act kernel calls this. */
static inline float act_scale(float d) {
    float h = f16_to_f32(f32_to_f16(d));
    return h > 0 && h <= 65504.0f ? h : d;
}

#define TR 8 /* rows per lane group: the lanes of a 256-bit vector, or two NEON vectors (avx512: 16) */

/* Quantized weights are read in the tensor's own tile order (quant.h TileQ8_0 / TileQ4_0):
 * step s of a tile is one 64-byte line of QROWS = 16 rows x 4 quant bytes, the f16 scales
 * follow. A 16-lane set reads a whole line per step; an 8-lane set reads one half of it
 * (rows 0-7 at byte 0, rows 8-15 at byte 32; their scales at byte 0 or 16 of d). */
static inline size_t qtile_bytes(uint32_t dt) { return dt == DT_Q4_0 ? sizeof(TileQ4_0) : sizeof(TileQ8_0); }
static inline size_t qtile_qbytes(uint32_t dt) { return dt == DT_Q4_0 ? offsetof(TileQ4_0, d) : offsetof(TileQ8_0, d); }

/* A float tile group is float[cols][TR] (avx512: [cols][16]): element k of its rows, contiguous. */

/* ==== Element access shared with the kernels' scalar tails ==== */

static inline float elem_f(uint32_t dt, const uint8_t *row, uint64_t k) {
    switch (dt) {
    case DT_F32: return ld_f32(row + 4 * k);
    case DT_BF16: return bf16_to_f32(ld_u16(row + 2 * k));
    default: return f16_to_f32(ld_u16(row + 2 * k));
    }
}

/* Bytes of one Q8_0 / Q4_0 block. */
static inline uint64_t q_block_bytes(uint32_t dt) { return dt == DT_Q4_0 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0); }

/* ==== exp_f32 (quant.c exp_ref; the SIMD versions follow it step by step) ==== */

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

/* Attention scores scratch for a block whose longest query sees maxlen positions, in floats:
 * every set's layout fits (8 lanes per position, rows rounded up to the key step). */
#define ATTN_SCRATCH(maxlen) (((size_t)(maxlen) + 4) * 8)

/* ==== The kernel table ==== */

typedef void (*PackFn)(const uint8_t *w, uint64_t row_bytes, int nr, uint64_t cols, void *tile);

/* One call of a register tile: out[j*ldo + g*tr + r] (+)= row g*tr+r of the rv-group tile .
 * token j, for j < rn. The tile covers kn columns (float) or kn blocks (quantized); group g's
 * steps start gs steps after group g-1's (float: gs = kn for a tile packed per call, the whole
 * row length for a prepacked tensor; quantized: gs = nb, the next group of 16 rows). Token j's
 * slice starts at x + j*ldx (float) or a + j*ldx (activation blocks). accumulate: continue
 * the sums already in out (the next k-chunk) instead of starting from 0. Quantized only: nrv
 * (1..rv) groups are present (the last tile of a matrix may have fewer), and an 8-lane set
 * reads rows 8*half .. 8*half+7 of each 16-row tile. */
typedef struct {
    const void *tile;
    uint64_t kn, gs;
    const float *x;
    const ActQ8 *a;
    uint64_t ldx;
    float *out;
    uint64_t ldo;
    int accumulate;
    int nrv, half;
} TileCall;

/* One T = 1 product of float rows: y[r] = row r of w . x (x: float[cols]). */
typedef struct {
    const uint8_t *w;
    uint64_t rb, cols;
    const float *x;
    float *y;
} Gemv;
typedef void (*GemvFn)(const Gemv *g, uint64_t r0, uint64_t r1);

typedef struct {
    const char *name, *desc;
    int (*supported)(void);
    int tr;           /* rows per lane group: 8 or 16 (float tiles float[k][tr]; quantized: see above) */
    int rv_f, rn_f;   /* float tiles: rv groups of tr rows x up to rn tokens per kernel call */
    int rv_q, rn_q;   /* quantized tiles */
    /* quantize one token row into nb activation blocks (act_row_ref's values and sums) */
    void (*act)(const float *x, ActQ8 *a, uint64_t nb);
    /* float dtypes: pack rows [0, nr) (nr <= tr; the rest zero) of a row-major W slice into one
     * tile group */
    PackFn pack[DT_COUNT];
    /* one register-tile sweep over rn <= rn_f / rn_q tokens (see TileCall) */
    void (*gemm_f)(int rn, const TileCall *c);
    void (*gemm_q)(int rn, const TileCall *c);   /* TileQ8_0 tiles, any T */
    void (*gemm_q4)(int rn, const TileCall *c);  /* TileQ4_0 tiles, any T */
    /* T = 1, float dtypes: rows [r0, r1) read in place, no packing */
    GemvFn gemv[DT_COUNT];
    float (*dot)(const float *a, const float *b, int64_t n); /* dot_f32 */
    void (*attn)(const AttnBlock *b, float *scores);           /* attention; scores: ATTN_SCRATCH floats */
    void (*silu_mul)(float *h, const float *u, int64_t n);     /* silu_mul */
} Kernels;

#define RN_MAX 12
#define RV_MAX 4

/* A tile dispatcher: rn -> the register tile TILE(args..., rn, c) instantiated for that token
 * count (1..N, the RN_CASES_N), so the compiler unrolls each shape on its own. */
#define RN_CASES_4(C, ...) C(1, __VA_ARGS__) C(2, __VA_ARGS__) C(3, __VA_ARGS__) C(4, __VA_ARGS__)
#define RN_CASES_6(C, ...) RN_CASES_4(C, __VA_ARGS__) C(5, __VA_ARGS__) C(6, __VA_ARGS__)
#define RN_CASES_8(C, ...) RN_CASES_6(C, __VA_ARGS__) C(7, __VA_ARGS__) C(8, __VA_ARGS__)
#define RN_CASES_12(C, ...) RN_CASES_8(C, __VA_ARGS__) C(9, __VA_ARGS__) C(10, __VA_ARGS__) C(11, __VA_ARGS__) C(12, __VA_ARGS__)
#define TILE_CASE(n, TILE, ...) case n: TILE(__VA_ARGS__, n, c); return;
#define DEF_TILE_DISPATCH(NAME, ATTR, CASES, TILE, ...) \
    ATTR static void NAME(int rn, const TileCall *c) { switch (rn) { CASES(TILE_CASE, TILE, __VA_ARGS__) } }
/* The quantized tiles of a set with rv = 2: a last tile of one group takes the rv = 1 shape. */
#define DEF_QTILE_DISPATCH2(NAME, ATTR, CASES, TILE, ...) \
    ATTR static void NAME(int rn, const TileCall *c) { \
        if (c->nrv == 2) { switch (rn) { CASES(TILE_CASE, TILE, 2, __VA_ARGS__) } } \
        else { switch (rn) { CASES(TILE_CASE, TILE, 1, __VA_ARGS__) } } }

/* ==== What quant.c provides to the kernel files ==== */

/* The portable float tile packers (the C twins of the SIMD packers). pack_tile_ref packs any
 * float dtype for tr = 8 or 16. */
void pack_tile_ref(uint32_t dt, int tr, const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile);
void pack_f32_c(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile);  /* tr = 8 */
void pack_bf16_c(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile);
void pack_f16_c(const uint8_t *w, uint64_t rb, int nr, uint64_t cols, void *tile);
/* The block sums act_row_ref stores (the SIMD act kernels' shared tail): a[b].sum for b < nb. */
void act_sums(ActQ8 *a, uint64_t nb);
/* The C twin of the SIMD int8 tile kernels (quant.c): one stored 16-row tile group (c->tile,
 * c->kn blocks) x rn tokens with the activation-side offset correction, written out step by
 * step; test_quant checks it against dot_q_ref, as every SIMD tile kernel is. */
void gemm_q_tile_ref(uint32_t dt, int rn, const TileCall *c);
/* The scalar silu_mul: the SIMD versions' tail. */
void silu_mul_ref(float *h, const float *u, int64_t n);
/* The set called name, supported here or not; NULL if this build has none (tests). */
const Kernels *kernels_find(const char *name);
/* Frees the calling thread's kernel scratch (pool workers, on exit). */
void kernels_thread_exit(void);

/* ==== The SIMD kernel sets ====
 * kernels_x86.c and kernels_neon.c each define their CPU family's sets and compile to nothing
 * elsewhere. The references are weak, so a set this build lacks is a NULL address, which
 * kernel selection (quant.c) skips. cpu_relax is the spin-wait hint of pool.c (pause, yield). */
extern const Kernels kernels_avx2 __attribute__((weak));
extern const Kernels kernels_avx512 __attribute__((weak));
extern const Kernels kernels_neon __attribute__((weak));
extern const Kernels kernels_neon_dotprod __attribute__((weak));
void cpu_relax(void) __attribute__((weak));

#endif
