/* quant.c: dtype conversion, matmul kernels and the thread pool.
 * (Initial scalar f32/bf16 version; see quant.h for the contracts.) */
#include "quant.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static const struct { const char *name; uint32_t block, block_bytes; } dtypes[DT_COUNT] = {
    [DT_F32] = { "f32", 1, 4 },
    [DT_BF16] = { "bf16", 1, 2 },
    [DT_F16] = { "f16", 1, 2 },
};

const char *dtype_name(uint32_t dt) { return dt < DT_COUNT ? dtypes[dt].name : NULL; }

int dtype_from_name(const char *name) {
    for (int i = 0; i < DT_COUNT; i++)
        if (dtypes[i].name && strcmp(dtypes[i].name, name) == 0) return i;
    return -1;
}

uint64_t dtype_row_bytes(uint32_t dt, uint64_t cols) {
    if (dt >= DT_COUNT || !dtypes[dt].name || cols % dtypes[dt].block) return 0;
    uint64_t r;
    return mul_u64(cols / dtypes[dt].block, dtypes[dt].block_bytes, &r) ? r : 0;
}

void dequant_row(const Tensor *w, uint64_t row, float *out) {
    const uint8_t *p = (const uint8_t *)w->data + row * dtype_row_bytes(w->dtype, w->cols);
    switch (w->dtype) {
    case DT_F32: memcpy(out, p, w->cols * sizeof(float)); break;
    case DT_BF16: for (uint64_t i = 0; i < w->cols; i++) out[i] = bf16_to_f32(ld_u16(p + 2 * i)); break;
    case DT_F16: for (uint64_t i = 0; i < w->cols; i++) out[i] = f16_to_f32(ld_u16(p + 2 * i)); break;
    }
}

void quantize_row(uint32_t dt, const float *src, void *dst, uint64_t cols) {
    uint16_t *h = dst;
    switch (dt) {
    case DT_F32: memcpy(dst, src, cols * sizeof(float)); break;
    case DT_BF16: for (uint64_t i = 0; i < cols; i++) h[i] = f32_to_bf16(src[i]); break;
    case DT_F16: for (uint64_t i = 0; i < cols; i++) h[i] = f32_to_f16(src[i]); break;
    }
}

struct Pool { int n; };
Pool *pool_create(int n_threads) { Pool *p = calloc(1, sizeof *p); if (p) p->n = n_threads; return p; }
void pool_free(Pool *p) { free(p); }
int pool_threads(const Pool *p) { return p ? p->n : 1; }
void pool_for(Pool *p, int64_t n, void (*fn)(void *, int64_t, int64_t), void *ctx) { (void)p; if (n > 0) fn(ctx, 0, n); }

void matmul(Pool *p, float *y, const float *x, const Tensor *w, int64_t T) {
    (void)p;
    float *row = malloc(w->cols * sizeof(float));
    for (uint64_t r = 0; r < w->rows; r++) {
        dequant_row(w, r, row);
        for (int64_t t = 0; t < T; t++) {
            const float *xt = x + t * w->cols;
            float s = 0;
            for (uint64_t i = 0; i < w->cols; i++) s += row[i] * xt[i];
            y[t * w->rows + r] = s;
        }
    }
    free(row);
}

const char *kernels_init(void) { return "scalar"; }
