/* quant.h: weight storage types, conversion, and the matrix kernels every forward pass uses.
 *
 * A Tensor is a read-only [rows, cols] row-major matrix in one of the DTypes below, usually
 * pointing into the mmap'd guard.bin. For a linear layer rows = out_features, cols = in_features
 * (nn.Linear layout), so y = x @ W^T. Kernels are chosen at start-up in quant.c only.
 */
#ifndef GUARD_QUANT_H
#define GUARD_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* On-disk dtype codes (guard.bin tensor table). Never renumber: files carry these values. */
enum {
    DT_F32 = 0,
    DT_BF16 = 1,
    DT_F16 = 2,
    DT_Q8_0 = 8, /* blocks of 32: f16 scale + 32 x int8 (GGUF Q8_0 bit layout) */
    DT_Q4_0 = 9, /* blocks of 32: f16 scale + 16 bytes, q = nibble - 8 (GGUF Q4_0 bit layout) */
    DT_COUNT = 16
};

typedef struct {
    uint32_t dtype;
    uint64_t rows, cols;
    const void *data; /* rows * dtype_row_bytes(dtype, cols) bytes */
} Tensor;

const char *dtype_name(uint32_t dt);          /* "f32", "bf16", ...; NULL if unknown */
int dtype_from_name(const char *name);        /* -1 if unknown */
/* Bytes of one row of `cols` elements; 0 if the dtype is unknown or cols is not a multiple
 * of its block size. */
uint64_t dtype_row_bytes(uint32_t dt, uint64_t cols);

/* out[cols] = row `row` of w as f32 (embedding lookups, tests). */
void dequant_row(const Tensor *w, uint64_t row, float *out);
/* Convert one f32 row to dtype dt (export); dst holds dtype_row_bytes(dt, cols) bytes. */
void quantize_row(uint32_t dt, const float *src, void *dst, uint64_t cols);

/* ---- threads ---- */
/* A fixed pool of workers. pool_for splits [0, n) into contiguous chunks; fn must compute each
 * index independently of how the range is split, which is what makes results bit-identical for
 * any thread count. pool may be NULL (run on the caller's thread). */
typedef struct Pool Pool;
Pool *pool_create(int n_threads);
void pool_free(Pool *p);
int pool_threads(const Pool *p);
void pool_for(Pool *p, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);

/* y[T, w->rows] = x[T, w->cols] @ w^T. Prefill passes the whole chunk (T > 1): matrix-matrix. */
void matmul(Pool *p, float *y, const float *x, const Tensor *w, int64_t T);

/* Choose SIMD kernels for this CPU (idempotent); returns a short description for -v. */
const char *kernels_init(void);

#endif
