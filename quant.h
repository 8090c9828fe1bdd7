/* quant.h: weight storage types, conversion, and the matrix kernels every forward pass uses.
 *
 * A Tensor is a read-only [rows, cols] row-major matrix in one of the DTypes below, usually
 * pointing into the mmap'd guard.bin. For a linear layer rows = out_features, cols = in_features
 * (nn.Linear layout), so y = x @ W^T. Kernels are chosen at start-up in quant.c only; the SIMD
 * sets live in kernels_x86.c and kernels_neon.c, the thread pool in pool.c.
 *
 * ---- Block formats (little-endian, identical to GGUF, so GGUF blocks import byte for byte) ----
 *
 *   DT_Q8_0: a row is cols/32 blocks of 34 bytes: { f16 d; int8 qs[32]; }
 *            element i of the block = f16_to_f32(d) * qs[i].
 *   DT_Q4_0: a row is cols/32 blocks of 18 bytes: { f16 d; uint8 qs[16]; }
 *            nibbles are SPLIT, not interleaved (ggml's order, which suits SIMD unpacking):
 *              element j      (j = 0..15) = d * ((qs[j] & 0x0F) - 8)   low nibble of byte j
 *              element j + 16 (j = 0..15) = d * ((qs[j] >> 4)  - 8)   high nibble of byte j
 *   The scale is IEEE binary16 (not bf16), stored first; group size 32 along cols, so quantized
 *   tensors need cols % 32 == 0 (dtype_row_bytes returns 0 otherwise).
 *
 * Quantization (quantize_row) follows ggml's reference quantizers exactly, so re-quantizing a
 * GGUF-dequantized row reproduces its blocks:
 *   Q8_0: d = amax/127, q = roundf(x/d) (computed as x * (d ? 1/d : 0)), d stored as f16 RNE.
 *   Q4_0: m = the element of largest |x| (first one on ties), d = m/-8,
 *         q = min(15, (int)(x*(d ? 1/d : 0) + 8.5)), d stored as f16 RNE.
 *   An all-zero group gets d = 0 and all q = 0 (Q4: nibbles 8), never a division by zero.
 *   A group whose d overflows f16 (|x| > ~8.3e6 for Q8_0) gets an infinite scale, as in ggml:
 *   exporters must reject such weights.
 *
 * ---- Tile order: how a quantized MATRIX is stored (guard.bin v2, and every Tensor) ----
 *   The blocks above are what a ROW is made of (quantize_row / dequantize_row, GGUF's order).
 *   A quantized [rows, cols] Tensor keeps exactly these bytes, permuted so that the kernels
 *   read them straight from the mmap: rows go in groups of QROWS = 16 (the last one padded
 *   with zero rows: scale 0, values 0), and group G is nb = cols/32 consecutive tiles, tile b
 *   holding block b of the group's 16 rows:
 *     TileQ8_0 (544 = 16 x 34 bytes): int8 q[8][16][4]: q[s][r][i] = element 4s+i of row r;
 *                                     then f16 d[16]
 *     TileQ4_0 (288 = 16 x 18 bytes): uint8 q[4][16][4]: q[s][r][i] = byte 4s+i of row r's
 *                                     16 nibble bytes (low nibble element 4s+i, high 4s+i+16);
 *                                     then f16 d[16]
 *   So step s is one 64-byte line of 16 rows x 4 quant bytes (a zmm of row lanes, or two ymm /
 *   four NEON registers of 8 / 4 rows), and no byte is added to the blocks: a file is exactly
 *   as large as its GGUF blocks plus the padding rows. tile_rows / tensor_row_blocks convert
 *   between this and row-major blocks; dequant_row reads a row through the same index map.
 *
 * ---- The matmul contract (what every SIMD kernel reproduces bit for bit) ----
 *   f32/bf16/f16 weights:  y[t][r] = fold k = 0..cols-1 of  acc = fmaf(w[r][k], x[t][k], acc)
 *                          starting from acc = +0 (bf16 upcast as (uint32)b << 16, f16 exact).
 *   q8_0/q4_0 weights: each x[t] is first quantized per block of 32 ("activation blocks"):
 *                          amax = max|x|, d = amax/127 (f32), q = nearbyint(x * (1/d)),
 *                          d_a = d rounded to f16 (RNE, subnormals included; ggml's Q8_0 scale),
 *                          or d itself where that f16 would be 0 or above 65504;
 *                          d_a = 0, q = 0 when d < FLT_MIN; d_a = NaN, q = 0 when the block
 *                          holds an Inf/NaN (so it propagates to y instead of vanishing);
 *                      then y[t][r] = fold over blocks b of
 *                          acc = fmaf(d_w[b] * d_a[b], (float)isum_b, acc)
 *                      where isum_b = sum_i q_w[i] * q_a[i] is an exact int32.
 *   The kernels compute isum_b from the tile's bytes read as UNSIGNED where their int8
 *   instruction wants that (vpdpbusd, vpmaddubsw): Q8_0 as q + 128 (q xor 0x80), Q4_0 as the
 *   nibble q + 8 itself, and subtract 128 * sum_b(q_a) or 8 * sum_b(q_a), the activation
 *   block's own sum (ActQ8.sum, kernels.h): sum (q_w + c) q_a - c sum q_a = isum_b, all exact in
 *   int32 (|terms| <= 32 * 255 * 127). The correction lives with the activations, so the tiles
 *   carry nothing beyond the blocks.
 *   Each output element is thus a sequential chain that depends on neither the SIMD width, the
 *   tile shape nor the thread split: results are bit-identical across kernels and thread counts.
 *
 * ---- Kernel selection ----
 *   kernels_init() picks the best set for this CPU once (idempotent, thread-safe). The
 *   environment variable GUARD_KERNELS=<name> (read by kernels_init) or kernels_force(name)
 *   overrides it; names: "scalar" (the reference, everywhere), "avx2" (x86-64 AVX2+FMA+F16C),
 *   "avx512" (AVX512F/BW/VL + VNNI int8 dot products), "neon" (aarch64), "neon-dotprod".
 */
#ifndef GUARD_QUANT_H
#define GUARD_QUANT_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

/* On-disk dtype codes (guard.bin tensor table). Never renumber: files carry these values.
 * Reserved for the importers (not implemented yet; the dtype table in quant.c is indexed by
 * code, so each slots in as one table entry plus a tile packer):
 *   10 Q4_K (GGUF super-blocks of 256), 11 Q6_K, 12 AWQ 4-bit g128 + zero points,
 *   13 int8 rows with an f32 absmax scale per row (bitsandbytes LLM.int8()). */
enum {
    DT_F32 = 0,
    DT_BF16 = 1,
    DT_F16 = 2,
    DT_Q8_0 = 8, /* blocks of 32: f16 scale + 32 x int8 (GGUF Q8_0 bit layout) */
    DT_Q4_0 = 9, /* blocks of 32: f16 scale + 16 bytes, q = nibble - 8 (GGUF Q4_0 bit layout) */
    DT_COUNT = 16
};

#define QK 32 /* elements per Q8_0 / Q4_0 block */

typedef struct {
    uint16_t d;      /* f16 scale */
    int8_t qs[QK];
} BlockQ8_0;

typedef struct {
    uint16_t d;      /* f16 scale */
    uint8_t qs[QK / 2]; /* byte j: low nibble = element j, high nibble = element j + 16 */
} BlockQ4_0;

static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must match GGUF (34 bytes)");
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must match GGUF (18 bytes)");

/* Tile order (see "Tile order" above): one block of QROWS rows, in the file and in memory. */
#define QROWS 16
typedef struct {
    int8_t q[QK / 4][QROWS][4];
    uint16_t d[QROWS]; /* f16 scales */
} TileQ8_0;
typedef struct {
    uint8_t q[QK / 8][QROWS][4];
    uint16_t d[QROWS];
} TileQ4_0;
static_assert(sizeof(TileQ8_0) == QROWS * sizeof(BlockQ8_0), "a Q8_0 tile is its 16 blocks, no byte more");
static_assert(sizeof(TileQ4_0) == QROWS * sizeof(BlockQ4_0), "a Q4_0 tile is its 16 blocks, no byte more");

typedef struct Packed Packed; /* quant.c: a tensor's rows arranged in one kernel set's register tiles */

typedef struct {
    uint32_t dtype;
    uint64_t rows, cols;
    const void *data;      /* tensor_bytes(dtype, rows, cols) bytes: rows in order (float dtypes)
                              or in tile order (quantized; see "Tile order") */
    const Packed *packed;  /* float dtypes, optional (tensor_prepack, owned by whoever called it);
                              NULL: matmul packs float tiles from data on every call */
} Tensor;

const char *dtype_name(uint32_t dt);          /* "f32", "bf16", "f16", "q8_0", "q4_0"; NULL if unknown */
int dtype_from_name(const char *name);        /* -1 if unknown; also accepts "q8_0", "q4_0" */
/* Bytes of one row of `cols` elements; 0 if the dtype is unknown or cols is not a multiple
 * of its block size. */
uint64_t dtype_row_bytes(uint32_t dt, uint64_t cols);

/* Bytes of a [rows, cols] Tensor of dtype dt: rows * row bytes, quantized rows rounded up to
 * whole groups of QROWS; 0 if the dtype or cols is invalid or the size overflows. */
uint64_t tensor_bytes(uint32_t dt, uint64_t rows, uint64_t cols);
/* 1 if Tensors of dtype dt are stored in tile order (the quantized ones), else 0. */
int dtype_tiled(uint32_t dt);

/* out[cols] = row `row` of w as f32 (embedding lookups, tests). */
void dequant_row(const Tensor *w, uint64_t row, float *out);
/* Convert one f32 row to dtype dt (export); dst holds dtype_row_bytes(dt, cols) bytes, blocks
 * in GGUF order. dequantize_row is its inverse for such a row. */
void quantize_row(uint32_t dt, const float *src, void *dst, uint64_t cols);
void dequantize_row(uint32_t dt, const void *src, float *out, uint64_t cols);

/* Quantized matrices: src holds rows x dtype_row_bytes(dt, cols) bytes of row-major blocks (as
 * quantize_row writes them, or a GGUF tensor); dst (tensor_bytes(dt, rows, cols)) receives
 * them in tile order. A permutation plus zero padding rows: lossless. The guard.bin writer
 * calls it for every quantized tensor, so every importer gets tile order for free. */
void tile_rows(uint32_t dt, uint64_t rows, uint64_t cols, const void *src, void *dst);
/* The inverse for one row: row `row` of a quantized w as its dtype_row_bytes blocks. */
void tensor_row_blocks(const Tensor *w, uint64_t row, void *blocks);

/* ---- threads ---- */
/* A fixed pool of persistent workers. pool_for splits [0, n) into contiguous chunks handed
 * out dynamically; fn must compute each index independently of how the range is split, which
 * is what makes results bit-identical for any thread count. pool may be NULL (run on the
 * caller's thread). One pool_for at a time per pool: fn must not call pool_for on the same
 * pool, and two threads must not share a pool concurrently. */
typedef struct Pool Pool;
Pool *pool_create(int n_threads); /* n_threads <= 0: the cores this process may run on */
void pool_free(Pool *p);
int pool_threads(const Pool *p);
void pool_for(Pool *p, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);

/* y[T, w->rows] = x[T, w->cols] @ w^T. Quantized weights are read in place, tile by tile, for
 * any T (prefill's whole chunk, decode's one token): they are stored as the kernels read them.
 * Float weights are packed into register tiles per call for T > 1 (or prepacked, below) and
 * read row by row at T = 1, with the same per-output order. y must not overlap x. Follows "The matmul
 * contract" above. Returns 0, or -1 when the kernels' scratch (tiles, activation blocks) cannot
 * be allocated; y is then undefined. */
int matmul(Pool *p, float *y, const float *x, const Tensor *w, int64_t T);

/* Float weights only: arrange w's rows once into the active kernel set's register tiles (heap
 * memory), so every later matmul streams them instead of packing tiles per call. Only where
 * the tiles take no more space than the stored rows (f32), so memory does not double (bf16/f16
 * tiles would be f32; quantized tensors are stored in tile order already); data stays
 * valid (the fallback, and what embedding lookups read). Returns the bytes allocated, 0 when
 * not packed (other dtype, no tile kernels, out of memory, or already packed). Results are
 * bit-identical either way; a matmul after kernels_force to another set ignores the tiles.
 * Free with tensor_unpack. */
uint64_t tensor_prepack(Pool *p, Tensor *w);
void tensor_unpack(Tensor *w);
/* Bytes tensor_prepack would allocate for w with the active kernel set; 0 if it would not pack. */
uint64_t tensor_prepack_bytes(const Tensor *w);

/* ---- attention ---- */

/* The attention contract (model.c's causal GQA attention, per query; every kernel set
 * reproduces it bit for bit, so results do not depend on the ISA, the block shape or the
 * thread split, and chunked prefill equals one-shot prefill):
 *   s[p] = dot_f32(q, k_p, head_dim) * scale                          for p < len
 *   m    = -inf;  for p in order: m = s[p] > m ? s[p] : m
 *   sum  = +0;    for p in order: e[p] = exp_f32(s[p] - m); sum += e[p]
 *   inv  = 1 / sum
 *   o[i] = +0;    for p in order: a = e[p] * inv; o[i] += a * v_p[i]    (product rounded, then added)
 * Every step is a single IEEE f32 operation (no fused multiply-add).
 *
 * dot_f32: eight partial sums; lane j accumulates a[i+j]*b[i+j] for i = 0, 8, 16, ... in order
 * (tail elements go to lanes 0, 1, ...), combined as ((l0+l4) + (l1+l5)) + ((l2+l6) + (l3+l7)).
 * exp_f32: our own exp (max error < 1 ulp on [-87.3, 88]; 0 below -87.33654, +inf above 88,
 * NaN stays NaN), written with + - * only so SIMD reproduces it; libm's expf differs between
 * builds (glibc picks an FMA variant at run time) and cannot be vectorized bit for bit. */
float dot_f32(const float *a, const float *b, int64_t n);
float exp_f32(float x);

/* One call's work: up to ATTN_QMAX queries that share a kv head (the GQA group, or several
 * tokens of it), computed together so each key and value row is loaded once for all of them. */
#define ATTN_QMAX 8
typedef struct {
    int64_t head_dim;
    const float *k, *v;       /* position p's key / value: k + p*kv_stride, v + p*kv_stride */
    int64_t kv_stride;
    float scale;              /* 1/sqrt(head_dim) */
    int nq;                   /* 1..ATTN_QMAX */
    const float *q[ATTN_QMAX]; /* [head_dim] each */
    float *o[ATTN_QMAX];       /* [head_dim] each, written (never read); must not overlap q, k, v */
    int64_t len[ATTN_QMAX];    /* query j attends to positions [0, len[j]), len[j] >= 1 */
} AttnBlock;
/* o[j] = softmax(q[j] . k^T * scale) . v over [0, len[j]) for every j, per the contract. Uses a
 * per-thread score buffer (8 floats per position); returns 0, or -1 when it cannot be
 * allocated (the outputs are then undefined). */
int attention(const AttnBlock *b);

/* ---- SwiGLU ---- */

/* LlamaMLP's silu(gate) * up, in place over n elements, one IEEE f32 operation per step:
 *   h[i] = h[i] / (1 + exp_f32(-h[i])) * u[i]        (-h[i]: a sign flip)
 * Every kernel set reproduces it bit for bit; with exp_f32 instead of libm's expf (whose glibc
 * variant is chosen per CPU) the result does not depend on the machine either. */
void silu_mul(float *h, const float *u, int64_t n);

/* Choose SIMD kernels for this CPU (idempotent); returns a short description for -v. */
const char *kernels_init(void);
/* Switch to the named kernel set ("scalar", "avx2", ...; see above) for tests and benchmarks.
 * Returns its description, or NULL (and changes nothing) when unknown or unsupported here.
 * Not to be called while a matmul is running. */
const char *kernels_force(const char *name);
/* Names of the kernel sets this CPU can run, best last, NULL-terminated (tests loop over it). */
const char *const *kernels_available(void);

#endif
