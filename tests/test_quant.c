/* tests/test_quant.c: dtype formats, quantizers, the matmul and attention kernels and the
 * thread pool.
 *
 * Every SIMD kernel set this CPU supports is forced in turn and compared bit for bit with the
 * scalar reference (quant.h "The matmul contract", "The attention contract") at odd shapes,
 * with outputs pre-filled with NaN: matmul for T = 1 (the matrix-vector path) and T > 1 (the
 * tiles), dot_f32, exp_f32 and attention (head_dim 64, 128 and odd sizes, 1-8 queries of equal
 * or staggered lengths). Every matmul check runs twice where the dtype allows: tiles packed per
 * call, and tiles prepacked once (tensor_prepack). matmul must also be bit-identical for 1, 2, 3,
 * 4 and 7 threads. Every set's tile packers must write the same bytes as the portable C
 * packers (pack_tile_ref), the SIMD ones included.
 *
 * Built with cmocka by the Makefile. Built with -DQUANT_TEST_PLAIN (quant.mk's test-neon, for
 * cross targets without an arm64 libcmocka) it uses the small stand-in below and prints
 * "N passed, N failed".
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"
#include "util.h"

#ifdef QUANT_TEST_PLAIN
#include <setjmp.h>
static jmp_buf plain_jmp;
#define fail_msg(...)                                                 \
    do {                                                              \
        fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__);        \
        fprintf(stderr, __VA_ARGS__);                                 \
        fprintf(stderr, "\n");                                        \
        longjmp(plain_jmp, 1);                                        \
    } while (0)
#define assert_true(c) do { if (!(c)) fail_msg("%s", #c); } while (0)
#define assert_false(c) assert_true(!(c))
#define assert_int_equal(a, b)                                                            \
    do {                                                                                  \
        long long a_ = (long long)(a), b_ = (long long)(b);                               \
        if (a_ != b_) fail_msg("%s == %s: %lld != %lld", #a, #b, a_, b_);                  \
    } while (0)
#define assert_non_null(p) assert_true((p) != NULL)
#define assert_null(p) assert_true((p) == NULL)
#define assert_string_equal(a, b) assert_true(strcmp((a), (b)) == 0)
struct CMUnitTest { const char *name; void (*fn)(void **); };
#define cmocka_unit_test(f) { #f, f }
static int plain_run(const struct CMUnitTest *t, size_t n) {
    volatile int passed = 0, failed = 0; /* live across longjmp */
    for (volatile size_t i = 0; i < n; i++) {
        if (setjmp(plain_jmp) == 0) {
            t[i].fn(NULL);
            passed++;
            printf("[       OK ] %s\n", t[i].name);
        } else {
            failed++;
            printf("[  FAILED  ] %s\n", t[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
#define cmocka_run_group_tests(t, s, d) plain_run(t, sizeof(t) / sizeof((t)[0]))
#else
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#endif

/* ==== helpers ==== */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float frand(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; } /* [-1, 1) */
static float grand(void) { return frand() + frand() + frand(); }                  /* bell-ish */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static void fill_nan(float *y, size_t n) { for (size_t i = 0; i < n; i++) y[i] = NAN; }

/* A [rows, cols] tensor of dtype dt made from f32 values, quantized ones in tile order as
 * export writes them (freed with free_tensor). */
static Tensor make_tensor(uint32_t dt, const float *w, uint64_t rows, uint64_t cols) {
    uint64_t rb = dtype_row_bytes(dt, cols);
    assert_true(rb != 0);
    uint8_t *data = xmalloc(rows * rb);
    for (uint64_t r = 0; r < rows; r++) quantize_row(dt, w + r * cols, data + r * rb, cols);
    if (dtype_tiled(dt)) {
        uint8_t *tiles = xmalloc(tensor_bytes(dt, rows, cols));
        tile_rows(dt, rows, cols, data, tiles);
        free(data);
        data = tiles;
    }
    Tensor t = { dt, rows, cols, data, NULL };
    return t;
}
static void free_tensor(Tensor *t) { free((void *)t->data); }

static const char *best_kernels(void) {
    const char *const *av = kernels_available();
    int n = 0;
    while (av[n]) n++;
    return av[n - 1];
}

static const uint32_t all_dtypes[] = { DT_F32, DT_BF16, DT_F16, DT_Q8_0, DT_Q4_0 };
#define N_DTYPES (sizeof all_dtypes / sizeof all_dtypes[0])

/* ==== dtype table ==== */

static void test_dtype_table(void **state) {
    (void)state;
    assert_string_equal(dtype_name(DT_F32), "f32");
    assert_string_equal(dtype_name(DT_BF16), "bf16");
    assert_string_equal(dtype_name(DT_Q8_0), "q8_0");
    assert_string_equal(dtype_name(DT_Q4_0), "q4_0");
    assert_null(dtype_name(3));
    assert_null(dtype_name(DT_COUNT));
    assert_int_equal(dtype_from_name("q8"), DT_Q8_0);
    assert_int_equal(dtype_from_name("q4"), DT_Q4_0);
    assert_int_equal(dtype_from_name("q4_0"), DT_Q4_0);
    assert_int_equal(dtype_from_name("bf16"), DT_BF16);
    assert_int_equal(dtype_from_name("q5"), -1);
    assert_int_equal(dtype_row_bytes(DT_F32, 7), 28);
    assert_int_equal(dtype_row_bytes(DT_BF16, 7), 14);
    assert_int_equal(dtype_row_bytes(DT_Q8_0, 64), 68);
    assert_int_equal(dtype_row_bytes(DT_Q4_0, 64), 36);
    assert_int_equal(dtype_row_bytes(DT_Q8_0, 48), 0); /* not a whole number of blocks */
    assert_int_equal(dtype_row_bytes(12, 64), 0);      /* reserved code */
    assert_int_equal(dtype_row_bytes(DT_F32, UINT64_MAX / 2), 0); /* overflow */
}

/* ==== block formats and quantizers ==== */

static void test_q8_layout_and_rounding(void **state) {
    (void)state;
    float x[QK];
    for (int i = 0; i < QK; i++) x[i] = (float)(i - 16);
    x[0] = 127.0f;  /* amax 127: d = 1 exactly */
    x[1] = 0.5f;    /* roundf: ties away from zero, as ggml */
    x[2] = -2.5f;
    x[3] = 1.49f;
    BlockQ8_0 b;
    quantize_row(DT_Q8_0, x, &b, QK);
    assert_int_equal(b.d, 0x3C00); /* f16 1.0 */
    assert_int_equal(b.qs[0], 127);
    assert_int_equal(b.qs[1], 1);
    assert_int_equal(b.qs[2], -3);
    assert_int_equal(b.qs[3], 1);
    for (int i = 4; i < QK; i++) assert_int_equal(b.qs[i], i - 16);
    float back[QK];
    Tensor t = { DT_Q8_0, 1, QK, &b, NULL };
    dequantize_row(t.dtype, t.data, back, t.cols);
    assert_true(back[0] == 127.0f && back[2] == -3.0f && back[31] == 15.0f);
}

static void test_q4_nibble_order(void **state) {
    (void)state;
    float x[QK];
    for (int j = 0; j < 16; j++) {
        x[j] = (float)(j - 8);       /* nibble j in the low half of byte j */
        x[16 + j] = (float)(7 - j);  /* nibble 15 - j in the high half */
    }
    /* the first element of largest magnitude is x[0] = -8: d = -8 / -8 = 1 */
    BlockQ4_0 b;
    quantize_row(DT_Q4_0, x, &b, QK);
    assert_int_equal(b.d, 0x3C00);
    for (int j = 0; j < 16; j++) assert_int_equal(b.qs[j], j | (15 - j) << 4);
    float back[QK];
    Tensor t = { DT_Q4_0, 1, QK, &b, NULL };
    dequantize_row(t.dtype, t.data, back, t.cols);
    for (int i = 0; i < QK; i++) assert_true(back[i] == x[i]);

    /* positive extreme: d = 8 / -8 = -1 (negative scale, as ggml), 0.5 rounds half up */
    for (int i = 0; i < QK; i++) x[i] = 0.0f;
    x[5] = 8.0f;
    x[20] = -0.5f; /* * id(-1) = 0.5, + 8.5 = 9.0 -> nibble 9 -> value -1 * 1 = -1 */
    quantize_row(DT_Q4_0, x, &b, QK);
    assert_int_equal(b.d, 0xBC00); /* f16 -1.0 */
    assert_int_equal(b.qs[5] & 0x0F, 0);
    assert_int_equal(b.qs[4] >> 4, 9);
    assert_int_equal(b.qs[0], 0x88);
}

static void test_zero_groups(void **state) {
    (void)state;
    float x[2 * QK] = { 0 };
    x[QK + 3] = -0.0f;
    BlockQ8_0 q8[2];
    BlockQ4_0 q4[2];
    quantize_row(DT_Q8_0, x, q8, 2 * QK);
    quantize_row(DT_Q4_0, x, q4, 2 * QK);
    for (int b = 0; b < 2; b++) {
        assert_int_equal(q8[b].d, 0);
        assert_int_equal(q4[b].d, 0x8000); /* ggml: d = max / -8 = 0 / -8 = -0 */
        for (int i = 0; i < QK; i++) assert_int_equal(q8[b].qs[i], 0);
        for (int i = 0; i < QK / 2; i++) assert_int_equal(q4[b].qs[i], 0x88);
    }
    float back[2 * QK];
    Tensor t8 = { DT_Q8_0, 1, 2 * QK, q8, NULL }, t4 = { DT_Q4_0, 1, 2 * QK, q4, NULL };
    dequantize_row(t8.dtype, t8.data, back, t8.cols);
    for (int i = 0; i < 2 * QK; i++) assert_true(back[i] == 0.0f);
    dequantize_row(t4.dtype, t4.data, back, t4.cols);
    for (int i = 0; i < 2 * QK; i++) assert_true(back[i] == 0.0f);
}

/* |x - dequant(quant(x))| per block: Q8 <= |d|/2, Q4 <= |d| (the positive side clamps at
 * nibble 15), plus |q| times the f16 rounding of d (relative 2^-11, absolute 2^-25 when
 * subnormal). */
static float f16_err(float d) { return d / 2048.0f + 2.98023224e-08f; }
static void test_roundtrip_bounds(void **state) {
    (void)state;
    const float scales[] = { 1e-3f, 0.02f, 1.0f, 300.0f };
    enum { N = 32 * QK };
    float x[N], back[N];
    BlockQ8_0 q8[N / QK];
    BlockQ4_0 q4[N / QK];
    for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
        for (int i = 0; i < N; i++) x[i] = grand() * scales[s];
        quantize_row(DT_Q8_0, x, q8, N);
        Tensor t8 = { DT_Q8_0, 1, N, q8, NULL };
        dequantize_row(t8.dtype, t8.data, back, t8.cols);
        for (int i = 0; i < N; i++) {
            float d = fabsf(f16_to_f32(q8[i / QK].d));
            if (fabsf(x[i] - back[i]) > 0.5f * d + 127.0f * f16_err(d)) fail_msg("q8 %d: %g vs %g (d %g)", i, x[i], back[i], d);
        }
        quantize_row(DT_Q4_0, x, q4, N);
        Tensor t4 = { DT_Q4_0, 1, N, q4, NULL };
        dequantize_row(t4.dtype, t4.data, back, t4.cols);
        for (int i = 0; i < N; i++) {
            float d = fabsf(f16_to_f32(q4[i / QK].d));
            if (fabsf(x[i] - back[i]) > d + 8.0f * f16_err(d)) fail_msg("q4 %d: %g vs %g (d %g)", i, x[i], back[i], d);
        }
    }
}

/* GGUF property: quantizing a dequantized row gives back the same bytes, including blocks
 * with f16-subnormal scales, negative Q4 scales and all-zero blocks. */
static void test_requantize_reproduces_blocks(void **state) {
    (void)state;
    enum { NB = 64, N = NB * QK };
    float x[N], back[N];
    for (int b = 0; b < NB; b++) {
        float scale = b % 8 == 0 ? 0.0f : b % 8 == 1 ? 2e-4f : b % 8 == 2 ? 5e-6f : powf(10.0f, (float)(b % 5) - 2.0f);
        for (int i = 0; i < QK; i++) x[b * QK + i] = grand() * scale;
    }
    for (int k = 0; k < 2; k++) {
        uint32_t dt = k ? DT_Q4_0 : DT_Q8_0;
        uint64_t rb = dtype_row_bytes(dt, N);
        uint8_t *a = xmalloc(rb), *c = xmalloc(rb);
        quantize_row(dt, x, a, N);
        Tensor t = { dt, 1, N, a, NULL };
        dequantize_row(t.dtype, t.data, back, t.cols);
        quantize_row(dt, back, c, N);
        if (memcmp(a, c, rb) != 0) {
            for (uint64_t i = 0; i < rb; i++)
                if (a[i] != c[i]) fail_msg("%s: byte %llu differs (%02x vs %02x)", dtype_name(dt), (unsigned long long)i, a[i], c[i]);
        }
        free(a);
        free(c);
    }
}

static void test_f16_scale_edges(void **state) {
    (void)state;
    float x[QK];
    BlockQ8_0 b;
    /* d = amax/127 beyond f16 range: +inf scale, as ggml (exporters must reject such rows) */
    for (int i = 0; i < QK; i++) x[i] = i == 7 ? 1e7f : 1.0f;
    quantize_row(DT_Q8_0, x, &b, QK);
    assert_int_equal(b.d, 0x7C00);
    /* largest finite scale still round-trips */
    for (int i = 0; i < QK; i++) x[i] = i == 7 ? 65504.0f * 127.0f : 0.0f;
    quantize_row(DT_Q8_0, x, &b, QK);
    assert_int_equal(b.d, 0x7BFF);
    assert_int_equal(b.qs[7], 127);
    /* scale below half the smallest f16 subnormal: stored as 0, the block decodes to zeros */
    for (int i = 0; i < QK; i++) x[i] = i == 3 ? 1e-9f : 0.0f;
    quantize_row(DT_Q8_0, x, &b, QK);
    assert_int_equal(b.d, 0);
    assert_int_equal(b.qs[3], 127);
    float back[QK];
    Tensor t = { DT_Q8_0, 1, QK, &b, NULL };
    dequantize_row(t.dtype, t.data, back, t.cols);
    assert_true(back[3] == 0.0f);
    /* subnormal f16 scale: decodes exactly as d * q */
    for (int i = 0; i < QK; i++) x[i] = (float)(i - 16) * 1e-6f;
    quantize_row(DT_Q8_0, x, &b, QK);
    assert_true(b.d > 0 && b.d < 0x0400);
    dequantize_row(t.dtype, t.data, back, t.cols);
    for (int i = 0; i < QK; i++) assert_true(back[i] == f16_to_f32(b.d) * (float)b.qs[i]);
}

static void test_float_rows(void **state) {
    (void)state;
    float x[5] = { 1.0f, -2.5f, 3.140625f, 65504.0f, -0.0f }, back[5];
    uint16_t h[5];
    quantize_row(DT_BF16, x, h, 5);
    assert_int_equal(h[0], 0x3F80);
    Tensor t = { DT_BF16, 1, 5, h, NULL };
    dequant_row(&t, 0, back);
    assert_true(back[1] == -2.5f && back[2] == 3.140625f);
    quantize_row(DT_F16, x, h, 5);
    t.dtype = DT_F16;
    dequant_row(&t, 0, back);
    for (int i = 0; i < 5; i++) assert_true(back[i] == x[i]);
    assert_true(signbit(back[4]));
}

/* ==== matmul kernels ==== */

/* y = x @ W^T for W made of `w` stored as dt, with the named kernels forced. */
static void run_matmul(const char *kern, Pool *p, uint32_t dt, const Tensor *t, const float *x, int64_t T, float *y) {
    assert_non_null(kernels_force(kern));
    fill_nan(y, (size_t)T * t->rows);
    matmul(p, y, x, t, T);
    (void)dt;
}

/* Weights and activations with the cases kernels get wrong: a zero weight row, a zero
 * activation token, a token with one outlier, large and tiny magnitudes. */
static void fill_case(float *w, uint64_t rows, uint64_t cols, float *x, int64_t T) {
    for (uint64_t i = 0; i < rows * cols; i++) w[i] = grand() * 0.05f;
    for (int64_t i = 0; i < T * (int64_t)cols; i++) x[i] = grand();
    if (rows > 2) memset(w + 2 * cols, 0, cols * sizeof(float));
    if (T > 1) memset(x + cols, 0, cols * sizeof(float));
    if (T > 2) x[2 * cols + cols / 2] = 1e4f;
    if (T > 3) for (uint64_t k = 0; k < cols; k++) x[3 * cols + k] *= 1e-20f;
}

static void check_same(const float *a, const float *b, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++) {
        uint32_t ua, ub;
        memcpy(&ua, &a[i], 4);
        memcpy(&ub, &b[i], 4);
        if (ua != ub) fail_msg("%s: element %zu: %.9g (0x%08x) vs reference %.9g (0x%08x)", what, i, a[i], ua, b[i], ub);
    }
}

static int prepacked_checks;

/* Set kern on t as stored, then on t prepacked for kern (tensor_prepack, where its dtype has
 * a prepacked layout), each compared bit for bit with the reference yr. */
static void check_set(const char *kern, Pool *p, const Tensor *t, const float *x, int64_t T, float *ys, const float *yr,
                      const char *what) {
    run_matmul(kern, p, t->dtype, t, x, T, ys);
    check_same(ys, yr, (size_t)T * t->rows, what);
    Tensor tp = *t;
    if (!tensor_prepack(p, &tp)) return;
    assert_non_null(tp.packed);
    char w2[200];
    snprintf(w2, sizeof w2, "%s, prepacked", what);
    run_matmul(kern, p, t->dtype, &tp, x, T, ys);
    check_same(ys, yr, (size_t)T * t->rows, w2);
    tensor_unpack(&tp);
    assert_null(tp.packed);
    prepacked_checks++;
}

static void test_kernels_match_scalar(void **state) {
    (void)state;
    const uint64_t rows_list[] = { 1, 5, 8, 9, 16, 17, 23, 40 };
    const int64_t t_list[] = { 1, 2, 3, 5, 7, 13, 25 };
    const uint64_t fcols[] = { 1, 3, 8, 9, 31, 100 }, qcols[] = { 32, 96, 160 };
    const char *const *av = kernels_available();
    float *w = xmalloc(40 * 160 * sizeof(float)), *x = xmalloc(25 * 160 * sizeof(float));
    float *yr = xmalloc(25 * 40 * sizeof(float)), *ys = xmalloc(25 * 40 * sizeof(float));
    int checked = 0;
    for (size_t d = 0; d < N_DTYPES; d++) {
        const uint32_t dt = all_dtypes[d];
        const int q = dt == DT_Q8_0 || dt == DT_Q4_0;
        const uint64_t *cl = q ? qcols : fcols;
        const size_t ncl = q ? 3 : 6;
        for (size_t ci = 0; ci < ncl; ci++)
            for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++)
                for (size_t ti = 0; ti < sizeof t_list / sizeof t_list[0]; ti++) {
                    const uint64_t cols = cl[ci], rows = rows_list[ri];
                    const int64_t T = t_list[ti];
                    fill_case(w, rows, cols, x, T);
                    Tensor t = make_tensor(dt, w, rows, cols);
                    run_matmul("scalar", NULL, dt, &t, x, T, yr);
                    for (int k = 1; av[k]; k++) {
                        char what[128];
                        snprintf(what, sizeof what, "%s %s rows %llu T %lld cols %llu", av[k], dtype_name(dt),
                                 (unsigned long long)rows, (long long)T, (unsigned long long)cols);
                        check_set(av[k], NULL, &t, x, T, ys, yr, what);
                        checked++;
                    }
                    free_tensor(&t);
                }
    }
    /* long rows (the real model's widths) through every set, as prefill (T = 9) and as decode
     * (T = 1: the matrix-vector kernels, whose row blocks of 8, 16 and 32 leave tails here) */
    const uint64_t long_rows[] = { 19, 37 }, long_cols[] = { 2048, 8192 };
    float *w2 = xmalloc(37 * 8192 * sizeof(float)), *x2 = xmalloc(9 * 8192 * sizeof(float));
    float *yr2 = xmalloc(9 * 37 * sizeof(float)), *ys2 = xmalloc(9 * 37 * sizeof(float));
    for (size_t li = 0; li < 4; li++) {
        const uint64_t rows = long_rows[li % 2], cols = long_cols[li / 2];
        fill_case(w2, rows, cols, x2, 9);
        for (size_t d = 0; d < N_DTYPES; d++) {
            Tensor t = make_tensor(all_dtypes[d], w2, rows, cols);
            for (int64_t T = 1; T <= 9; T += 8) {
                run_matmul("scalar", NULL, all_dtypes[d], &t, x2, T, yr2);
                for (int k = 1; av[k]; k++) {
                    char what[128];
                    snprintf(what, sizeof what, "%s %s rows %llu T %lld cols %llu", av[k], dtype_name(all_dtypes[d]),
                             (unsigned long long)rows, (long long)T, (unsigned long long)cols);
                    check_set(av[k], NULL, &t, x2, T, ys2, yr2, what);
                }
            }
            free_tensor(&t);
        }
    }
    /* tiles prepacked by one set are ignored by another (their layout differs): the result
     * is still the reference */
    for (int k = 1; av[k]; k++)
        for (size_t d = 0; d < N_DTYPES; d++) {
            const uint64_t rows = 19, cols = 2048;
            Tensor t = make_tensor(all_dtypes[d], w2, rows, cols);
            run_matmul("scalar", NULL, all_dtypes[d], &t, x2, 9, yr2);
            assert_non_null(kernels_force(av[k]));
            Tensor tp = t;
            if (tensor_prepack(NULL, &tp))
                for (int o = 0; av[o]; o++) {
                    run_matmul(av[o], NULL, all_dtypes[d], &tp, x2, 9, ys2);
                    check_same(ys2, yr2, 9 * rows, "tiles prepacked by another set");
                }
            tensor_unpack(&tp);
            free_tensor(&t);
        }
    free(yr2), free(ys2);
    printf("    %d kernel/shape combinations matched the scalar reference bit for bit, %d of them also prepacked (sets:",
           checked, prepacked_checks);
    for (int k = 0; av[k]; k++) printf(" %s", av[k]);
    printf(")\n");
    /* every SIMD set prepacks f32 (quantized tensors are stored in tile order) */
    if (av[1]) assert_true(prepacked_checks > 0);
    kernels_force(best_kernels());
    free(w), free(x), free(yr), free(ys), free(w2), free(x2);
}

/* Spec corner: an activation block holding Inf/NaN must poison its outputs, not vanish, in
 * the tiles (T = 3) and in the matrix-vector path (T = 1). */
static void test_nonfinite_activations(void **state) {
    (void)state;
    const uint64_t rows = 11, cols = 64;
    const int64_t T = 3;
    float w[11 * 64], x[3 * 64], y[3 * 11];
    fill_case(w, rows, cols, x, T);
    x[64 + 40] = INFINITY;
    x[128 + 3] = NAN;
    const char *const *av = kernels_available();
    for (int k = 0; av[k]; k++)
        for (size_t d = 0; d < N_DTYPES; d++) {
            Tensor t = make_tensor(all_dtypes[d], w, rows, cols);
            run_matmul(av[k], NULL, all_dtypes[d], &t, x, T, y);
            for (uint64_t r = 0; r < rows; r++) {
                assert_true(isfinite(y[r]));
                if (r != 2) assert_true(isnan(y[2 * rows + r])); /* row 2 of w is zero: 0*NaN */
            }
            run_matmul(av[k], NULL, all_dtypes[d], &t, x + 2 * cols, 1, y);
            for (uint64_t r = 0; r < rows; r++)
                if (r != 2) assert_true(isnan(y[r]));
            free_tensor(&t);
        }
    kernels_force(best_kernels());
}

/* Quantized matmul against a double-precision product of the dequantized weights: the only
 * error left is activation rounding, at most d/2 per element, and the scale's rounding to f16
 * (ggml's Q8_0 scale, quant.h): 2^-11 of each element, or 2^-25 of the scale's step among f16
 * subnormals. */
static void test_quantized_accuracy(void **state) {
    (void)state;
    const uint64_t rows = 37, cols = 512;
    const int64_t T = 6;
    float *w = xmalloc(rows * cols * 4), *x = xmalloc(T * cols * 4), *wd = xmalloc(rows * cols * 4), *y = xmalloc(T * rows * 4);
    fill_case(w, rows, cols, x, T);
    for (int k = 0; k < 2; k++) {
        uint32_t dt = k ? DT_Q4_0 : DT_Q8_0;
        Tensor t = make_tensor(dt, w, rows, cols);
        for (uint64_t r = 0; r < rows; r++) dequant_row(&t, r, wd + r * cols);
        run_matmul(best_kernels(), NULL, dt, &t, x, T, y);
        for (int64_t tt = 0; tt < T; tt++)
            for (uint64_t r = 0; r < rows; r++) {
                double ref = 0, bound = 0;
                for (uint64_t b = 0; b < cols / QK; b++) {
                    float amax = 0;
                    for (int i = 0; i < QK; i++) amax = fmaxf(amax, fabsf(x[tt * cols + b * QK + i]));
                    for (int i = 0; i < QK; i++) {
                        uint64_t kk = b * QK + i;
                        ref += (double)wd[r * cols + kk] * x[tt * cols + kk];
                        double d = amax / 127.0, sub = d >= 0x1p-25 && d < 0x1p-14 ? 0x1p-25 * 128 : 0; /* f16 subnormal steps */
                        bound += fabs(wd[r * cols + kk]) * (d * 0.5 + fabs(x[tt * cols + kk]) * (0x1p-11 + 1e-6) + sub);
                    }
                }
                if (fabs(y[tt * rows + r] - ref) > bound + 1e-30)
                    fail_msg("%s t %lld r %llu: %g vs %g (bound %g)", dtype_name(dt), (long long)tt, (unsigned long long)r, y[tt * rows + r], ref, bound);
            }
        free_tensor(&t);
    }
    free(w), free(x), free(wd), free(y);
}

static void test_threads_bit_identical(void **state) {
    (void)state;
    const int nthreads[] = { 1, 2, 3, 4, 7 };
    const uint64_t rows = 203, fcols = 200, qcols = 256;
    const int64_t T = 37;
    float *w = xmalloc(rows * qcols * 4), *x = xmalloc(T * qcols * 4);
    float *y0 = xmalloc(T * rows * 4), *y1 = xmalloc(T * rows * 4);
    const char *sets[] = { "scalar", best_kernels() };
    for (size_t d = 0; d < N_DTYPES; d++) {
        const uint64_t cols = all_dtypes[d] >= DT_Q8_0 ? qcols : fcols;
        fill_case(w, rows, cols, x, T);
        Tensor t = make_tensor(all_dtypes[d], w, rows, cols);
        run_matmul("scalar", NULL, all_dtypes[d], &t, x, T, y0);
        for (size_t s = 0; s < 2; s++)
            for (size_t i = 0; i < sizeof nthreads / sizeof nthreads[0]; i++) {
                Pool *p = pool_create(nthreads[i]);
                assert_non_null(p);
                assert_int_equal(pool_threads(p), nthreads[i]);
                for (int rep = 0; rep < 2; rep++) check_set(sets[s], p, &t, x, rep ? 1 : T, y1, y0, sets[s]);
                pool_free(p);
            }
        free_tensor(&t);
    }
    kernels_force(best_kernels());
    free(w), free(x), free(y0), free(y1);
}

/* ==== tile order (quant.h) ==== */

/* tile_rows is a lossless permutation: every row's blocks come back byte for byte through the
 * index map (tensor_row_blocks) and dequant_row, padding rows are zero, the tile is exactly its
 * 16 blocks (34 / 18 bytes per row and block), at row counts around the 16-row groups. */
static void test_tile_order(void **state) {
    (void)state;
    const uint64_t rows_list[] = { 1, 7, 15, 16, 17, 33, 48 }, cols_list[] = { 32, 96, 160 };
    int checked = 0;
    for (int k = 0; k < 2; k++) {
        const uint32_t dt = k ? DT_Q4_0 : DT_Q8_0;
        assert_true(dtype_tiled(dt));
        assert_int_equal(qtile_bytes(dt), (dt == DT_Q8_0 ? 34 : 18) * QROWS);
        for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++)
            for (size_t ci = 0; ci < sizeof cols_list / sizeof cols_list[0]; ci++) {
                const uint64_t rows = rows_list[ri], cols = cols_list[ci], rb = dtype_row_bytes(dt, cols);
                const uint64_t padded = (rows + QROWS - 1) / QROWS * QROWS;
                assert_int_equal(tensor_bytes(dt, rows, cols), padded * rb);
                float *w = xmalloc(rows * cols * 4), *back = xmalloc(cols * 4), *want = xmalloc(cols * 4);
                for (uint64_t i = 0; i < rows * cols; i++) w[i] = grand();
                uint8_t *blocks = xmalloc(rows * rb), *got = xmalloc(rb);
                for (uint64_t r = 0; r < rows; r++) quantize_row(dt, w + r * cols, blocks + r * rb, cols);
                Tensor t = make_tensor(dt, w, rows, cols);
                for (uint64_t r = 0; r < rows; r++) {
                    tensor_row_blocks(&t, r, got);
                    if (memcmp(got, blocks + r * rb, (size_t)rb)) fail_msg("%s rows %llu cols %llu: row %llu blocks differ", dtype_name(dt),
                                                                          (unsigned long long)rows, (unsigned long long)cols, (unsigned long long)r);
                    dequant_row(&t, r, back);
                    dequantize_row(dt, blocks + r * rb, want, cols);
                    check_same(back, want, cols, "dequant_row through the tiles");
                    checked++;
                }
                Tensor pad = t;
                pad.rows = padded; /* the padding rows read as zeros */
                for (uint64_t r = rows; r < padded; r++) {
                    dequant_row(&pad, r, back);
                    for (uint64_t c = 0; c < cols; c++) assert_true(back[c] == 0.0f);
                }
                free_tensor(&t);
                free(w), free(back), free(want), free(blocks), free(got);
            }
    }
    printf("    %d rows round-tripped through the tile order\n", checked);
}

/* The C twin of the SIMD tile kernels (gemm_q_tile_ref: unsigned weight bytes, the offset
 * taken off through the activation sums) gives the scalar reference's bits for every row of
 * every 16-row group, in one call over all blocks and in two k-chunks that accumulate. */
static void test_tile_twin_matches_reference(void **state) {
    (void)state;
    const uint64_t rows = 37, cols = 160, nb = cols / QK;
    const int64_t T = 5;
    float *w = xmalloc(rows * cols * 4), *x = xmalloc(T * cols * 4), *yr = xmalloc(T * rows * 4);
    float *out = xmalloc(T * QROWS * 4);
    ActQ8 *a = xmalloc(T * nb * sizeof(ActQ8));
    fill_case(w, rows, cols, x, T);
    const Kernels *S = kernels_find("scalar");
    assert_non_null(S);
    for (int64_t t = 0; t < T; t++) S->act(x + t * cols, a + t * nb, nb);
    for (int k = 0; k < 2; k++) {
        const uint32_t dt = k ? DT_Q4_0 : DT_Q8_0;
        Tensor t = make_tensor(dt, w, rows, cols);
        run_matmul("scalar", NULL, dt, &t, x, T, yr);
        for (uint64_t g = 0; g * QROWS < rows; g++)
            for (int split = 0; split < 2; split++) {
                const uint8_t *tiles = (const uint8_t *)t.data + g * nb * qtile_bytes(dt);
                fill_nan(out, (size_t)T * QROWS);
                const uint64_t k1 = split ? 2 : nb;
                TileCall c = { .tile = tiles, .kn = k1, .gs = nb, .a = a, .ldx = nb, .out = out, .ldo = QROWS, .nrv = 1 };
                gemm_q_tile_ref(dt, (int)T, &c);
                if (split) {
                    c = (TileCall){ .tile = tiles + k1 * qtile_bytes(dt), .kn = nb - k1, .gs = nb, .a = a + k1, .ldx = nb, .out = out,
                                    .ldo = QROWS, .accumulate = 1, .nrv = 1 };
                    gemm_q_tile_ref(dt, (int)T, &c);
                }
                for (int64_t tt = 0; tt < T; tt++)
                    for (uint64_t r = 0; r < QROWS && g * QROWS + r < rows; r++)
                        check_same(&out[tt * QROWS + r], &yr[tt * rows + g * QROWS + r], 1, dtype_name(dt));
            }
        free_tensor(&t);
    }
    kernels_force(best_kernels());
    free(w), free(x), free(yr), free(out), free(a);
}

/* ==== tile packers ==== */

/* Each set's packers against pack_tile_ref, byte for byte, for every row count 1..tr of a
 * tile group (rows past nr must come out zero), at column counts with and without a k tail. */
static void test_packers_match_reference(void **state) {
    (void)state;
    const char *const *av = kernels_available();
    int compared = 0;
    for (int k = 0; av[k]; k++) {
        const Kernels *K = kernels_find(av[k]);
        assert_non_null(K);
        for (size_t d = 0; d < N_DTYPES; d++) {
            const uint32_t dt = all_dtypes[d];
            if (!K->pack[dt]) continue;
            const int quantized = dt == DT_Q8_0 || dt == DT_Q4_0;
            const uint64_t col_cases[] = { quantized ? 3 * QK : 101, quantized ? 5 * QK : 8 };
            for (size_t cc = 0; cc < 2; cc++) {
                const uint64_t cols = col_cases[cc], rows = (uint64_t)K->tr, rb = dtype_row_bytes(dt, cols);
                float *w = xmalloc(rows * cols * sizeof(float));
                for (uint64_t i = 0; i < rows * cols; i++) w[i] = grand();
                Tensor t = make_tensor(dt, w, rows, cols);
                const size_t step = dt == DT_Q4_0 ? (size_t)K->tr * (QK / 2 + 8) : quantized ? (size_t)K->tr * (QK + 8)
                                                                                              : (size_t)K->tr * sizeof(float);
                const size_t bytes = step * (quantized ? cols / QK : cols);
                uint8_t *got = aligned_alloc(64, (bytes + 63) / 64 * 64), *want = aligned_alloc(64, (bytes + 63) / 64 * 64);
                assert_non_null(got);
                assert_non_null(want);
                for (int nr = 1; nr <= K->tr; nr++) {
                    memset(got, 0xA5, bytes);
                    memset(want, 0x5A, bytes);
                    K->pack[dt](t.data, rb, nr, cols, got);
                    pack_tile_ref(dt, K->tr, t.data, rb, nr, cols, want);
                    if (memcmp(got, want, bytes) != 0)
                        fail_msg("%s: %s packer differs from pack_tile_ref (tr %d, nr %d, cols %llu)", av[k], dtype_name(dt),
                                 K->tr, nr, (unsigned long long)cols);
                    compared++;
                }
                free(got);
                free(want);
                free_tensor(&t);
                free(w);
            }
        }
    }
    printf("    %d packer outputs identical to pack_tile_ref\n", compared);
}

/* ==== attention kernels ==== */

static int same_or_both_nan(float a, float b) {
    uint32_t ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    return ua == ub || (isnan(a) && isnan(b));
}

/* exp_f32 against long double exp: < 1 ulp over the softmax range, and its special values. */
static void test_exp_f32(void **state) {
    (void)state;
    double worst = 0;
    for (float x = -87.3f; x <= 88.0f; x += 0.0137f) {
        const long double e = expl((long double)x);
        const double ulp = ldexp(1.0, ilogbl(e) - 23), err = (double)fabsl((long double)exp_f32(x) - e) / ulp;
        if (err > worst) worst = err;
    }
    for (uint32_t i = 0; i < 200000; i++) { /* dense near 0, where softmax weights live */
        const float x = -(float)i * 1e-4f;
        const long double e = expl((long double)x);
        const double err = (double)fabsl((long double)exp_f32(x) - e) / ldexp(1.0, ilogbl(e) - 23);
        if (err > worst) worst = err;
    }
    printf("    exp_f32 max error %.3f ulp\n", worst);
    assert_true(worst < 1.0);
    assert_true(exp_f32(0.0f) == 1.0f && exp_f32(-0.0f) == 1.0f);
    assert_true(exp_f32(-INFINITY) == 0.0f && exp_f32(-88.0f) == 0.0f && exp_f32(-1e30f) == 0.0f);
    assert_true(exp_f32(-87.0f) > 0.0f);
    assert_true(isinf(exp_f32(88.5f)) && isinf(exp_f32(INFINITY)));
    assert_true(isnan(exp_f32(NAN)));
}

static void test_dot_f32_kernels(void **state) {
    (void)state;
    float a[300], b[300];
    for (int i = 0; i < 300; i++) a[i] = grand(), b[i] = grand() * (i % 7 == 3 ? 1e3f : 1.0f);
    const char *const *av = kernels_available();
    for (int n = 0; n <= 300; n += n < 40 ? 1 : 13) {
        assert_non_null(kernels_force("scalar"));
        const float ref = dot_f32(a, b, n);
        /* the spec spelled out: lane k of 8 takes elements k, k+8, ...; fixed combination */
        float l[8] = { 0 };
        for (int i = 0; i < n; i++) l[i % 8] += a[i] * b[i];
        const float spec = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
        if (!same_or_both_nan(ref, spec)) fail_msg("scalar dot n %d: %.9g vs spec %.9g", n, ref, spec);
        for (int k = 1; av[k]; k++) {
            assert_non_null(kernels_force(av[k]));
            const float got = dot_f32(a, b, n);
            if (!same_or_both_nan(got, ref)) fail_msg("%s dot n %d: %.9g vs %.9g", av[k], n, got, ref);
        }
    }
    kernels_force(best_kernels());
}

/* silu_mul: every kernel set against the scalar reference bit for bit, at every length up to
 * 40 (vector tails) and a long row, over values that reach both exp clamps and the specials;
 * the scalar reference within 3 ulp of g / (1 + exp(-g)) * u computed in long double. */
static void test_silu_mul_kernels(void **state) {
    (void)state;
    enum { N = 4099 };
    static float g[N], u[N], ref[N], got[N];
    const float special[] = { 0.0f, -0.0f, 1e-30f, -1e-30f, 87.0f, -87.0f, 88.5f, -88.5f, 100.0f, -100.0f, INFINITY, -INFINITY, NAN };
    for (int i = 0; i < N; i++) {
        g[i] = i < 13 ? special[i] : grand() * (i % 5 == 0 ? 40.0f : 4.0f);
        u[i] = grand();
    }
    const char *const *av = kernels_available();
    double worst = 0;
    for (int n = 0; n <= N; n += n < 40 ? 1 : N - 40) {
        assert_non_null(kernels_force("scalar"));
        memcpy(ref, g, sizeof g);
        silu_mul(ref, u, n);
        for (int i = 13; i < n; i++) {
            const long double e = (long double)g[i] / (1.0L + expl(-(long double)g[i])) * (long double)u[i];
            /* below g = -87.3 exp_f32 saturates (inf past 88, where libm's expf lasts to 88.7), so
             * silu gives -0 there instead of a value under 1e-36; no ulp to speak of */
            if (g[i] < -87.3f || fabsl(e) < FLT_MIN || !isfinite((double)e)) continue;
            const double err = (double)fabsl((long double)ref[i] - e) / ldexp(1.0, ilogbl(e) - 23);
            if (err > worst) worst = err;
        }
        for (int k = 1; av[k]; k++) {
            assert_non_null(kernels_force(av[k]));
            memcpy(got, g, sizeof g);
            silu_mul(got, u, n);
            for (int i = 0; i < n; i++)
                if (!same_or_both_nan(got[i], ref[i])) fail_msg("%s silu_mul n %d [%d] g=%g: %.9g vs %.9g", av[k], n, i, g[i], got[i], ref[i]);
            for (int i = n; i < N; i++) assert_true(same_or_both_nan(got[i], g[i])); /* nothing past n */
        }
    }
    printf("    silu_mul max error %.3f ulp\n", worst);
    assert_true(worst < 3.0);
    assert_true(isnan(ref[12]));                     /* NaN stays NaN */
    assert_true(ref[10] == INFINITY * u[10] || isnan(ref[10]));
    kernels_force(best_kernels());
}

/* One attention block per (head_dim, queries, lengths) case, every kernel set against the
 * scalar reference bit for bit, outputs pre-filled with NaN. The KV rows are strided (as in
 * the cache: kv_stride > head_dim) and lengths differ within a block the way consecutive
 * tokens' do. */
static void run_attention(const char *kern, const AttnBlock *tmpl, float *out, int64_t hd) {
    assert_non_null(kernels_force(kern));
    AttnBlock b = *tmpl;
    for (int j = 0; j < b.nq; j++) {
        b.o[j] = out + j * hd;
        fill_nan(b.o[j], (size_t)hd);
    }
    attention(&b);
}

static void test_attention_kernels_match_scalar(void **state) {
    (void)state;
    const int64_t hds[] = { 64, 128, 1, 3, 7, 8, 9, 17, 33, 100 };
    const int64_t lens[] = { 1, 2, 3, 5, 8, 31, 64, 200 };
    enum { MAXP = 210, MAXHD = 128, STRIDE = 3 * MAXHD + 5 };
    float *kv = xmalloc(2 * MAXP * STRIDE * sizeof(float)), *qs = xmalloc(ATTN_QMAX * MAXHD * sizeof(float));
    float *ref = xmalloc(ATTN_QMAX * MAXHD * sizeof(float)), *got = xmalloc(ATTN_QMAX * MAXHD * sizeof(float));
    const char *const *av = kernels_available();
    int checked = 0;
    for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (int nq = 1; nq <= ATTN_QMAX; nq++)
                for (int spread = 0; spread < 2; spread++) {
                    const int64_t hd = hds[hi];
                    for (size_t i = 0; i < 2 * MAXP * STRIDE; i++) kv[i] = grand();
                    for (int i = 0; i < ATTN_QMAX * MAXHD; i++) qs[i] = grand() * (li % 3 == 2 ? 4.0f : 1.0f);
                    AttnBlock b = { hd, kv + 7, kv + MAXP * STRIDE + 11, STRIDE, 1.0f / sqrtf((float)hd), nq, { 0 }, { 0 }, { 0 } };
                    for (int j = 0; j < nq; j++) {
                        b.q[j] = qs + j * hd;
                        /* spread: query j is token j / 4 of a chunk (lengths grow by one per token) */
                        b.len[j] = lens[li] + (spread ? j / (nq > 4 ? 2 : 1) : 0);
                    }
                    run_attention("scalar", &b, ref, hd);
                    for (int64_t i = 0; i < nq * hd; i++) assert_false(isnan(ref[i]));
                    for (int k = 1; av[k]; k++) {
                        run_attention(av[k], &b, got, hd);
                        for (int64_t i = 0; i < nq * hd; i++)
                            if (!same_or_both_nan(got[i], ref[i]))
                                fail_msg("%s head_dim %lld nq %d len %lld spread %d: out[%lld] %.9g vs reference %.9g", av[k],
                                         (long long)hd, nq, (long long)lens[li], spread, (long long)i, got[i], ref[i]);
                        checked++;
                    }
                }
    printf("    %d attention kernel/shape combinations matched the scalar reference bit for bit\n", checked);
    kernels_force(best_kernels());
    free(kv), free(qs), free(ref), free(got);
}

/* The contract against a double-precision softmax, and its edge cases: one dominant key
 * (weights underflow to 0), equal scores, a single position. */
static void test_attention_accuracy(void **state) {
    (void)state;
    enum { HD = 64, P = 100 };
    float *k = xmalloc(P * HD * sizeof(float)), *v = xmalloc(P * HD * sizeof(float)), q[HD], o[HD];
    const char *const *av = kernels_available();
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < P * HD; i++) k[i] = c == 2 ? 1.0f : grand(), v[i] = grand();
        for (int i = 0; i < HD; i++) q[i] = grand() * (c == 1 ? 30.0f : 1.0f);
        for (int ki = 0; av[ki]; ki++) {
            assert_non_null(kernels_force(av[ki]));
            for (int64_t len = 1; len <= P; len += 33) {
                AttnBlock b = { HD, k, v, HD, 0.125f, 1, { q }, { o }, { len } };
                fill_nan(o, HD);
                attention(&b);
                double sc[P], mx = -INFINITY, sum = 0;
                for (int64_t p = 0; p < len; p++) {
                    sc[p] = 0;
                    for (int i = 0; i < HD; i++) sc[p] += (double)q[i] * k[p * HD + i];
                    sc[p] *= 0.125;
                    mx = sc[p] > mx ? sc[p] : mx;
                }
                for (int64_t p = 0; p < len; p++) sum += sc[p] = exp(sc[p] - mx);
                for (int i = 0; i < HD; i++) {
                    double r = 0;
                    for (int64_t p = 0; p < len; p++) r += sc[p] / sum * v[p * HD + i];
                    if (fabs(o[i] - r) > 1e-5 * (1 + fabs(r)) * (c == 1 ? 30 : 1))
                        fail_msg("%s case %d len %lld: o[%d] %.9g vs %.9g", av[ki], c, (long long)len, i, o[i], r);
                }
            }
        }
    }
    kernels_force(best_kernels());
    free(k), free(v);
}

/* ==== thread pool and kernel selection ==== */

typedef struct { int *hits; } Cover;
static void cover_fn(void *ctx, int64_t b, int64_t e) {
    Cover *c = ctx;
    assert_true(b < e);
    for (int64_t i = b; i < e; i++) __atomic_fetch_add(&c->hits[i], 1, __ATOMIC_RELAXED);
}

static void test_pool_for_covers_once(void **state) {
    (void)state;
    const int nthreads[] = { 1, 2, 3, 7 };
    const int64_t ns[] = { 0, 1, 2, 5, 100, 1001 };
    int *hits = xmalloc(1001 * sizeof(int));
    for (size_t i = 0; i < sizeof nthreads / sizeof nthreads[0] + 1; i++) {
        Pool *p = i < 4 ? pool_create(nthreads[i]) : NULL;
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
            for (int rep = 0; rep < 50; rep++) {
                memset(hits, 0, 1001 * sizeof(int));
                Cover c = { hits };
                pool_for(p, ns[k], cover_fn, &c);
                for (int64_t j = 0; j < ns[k]; j++) assert_int_equal(hits[j], 1);
            }
        pool_free(p);
    }
    Pool *p = pool_create(0);
    assert_true(pool_threads(p) >= 1);
    pool_free(p);
    assert_int_equal(pool_threads(NULL), 1);
    free(hits);
}

static void test_kernel_selection(void **state) {
    (void)state;
    const char *desc = kernels_init();
    assert_non_null(desc);
    assert_true(strlen(desc) > 0);
    const char *const *av = kernels_available();
    assert_string_equal(av[0], "scalar");
    assert_non_null(kernels_force("scalar"));
    assert_null(kernels_force("no-such-isa"));
    for (int k = 0; av[k]; k++) assert_non_null(kernels_force(av[k]));
    printf("    kernels: %s\n", desc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_q8_layout_and_rounding),
        cmocka_unit_test(test_q4_nibble_order),
        cmocka_unit_test(test_zero_groups),
        cmocka_unit_test(test_roundtrip_bounds),
        cmocka_unit_test(test_requantize_reproduces_blocks),
        cmocka_unit_test(test_f16_scale_edges),
        cmocka_unit_test(test_float_rows),
        cmocka_unit_test(test_kernel_selection),
        cmocka_unit_test(test_tile_order),
        cmocka_unit_test(test_tile_twin_matches_reference),
        cmocka_unit_test(test_kernels_match_scalar),
        cmocka_unit_test(test_packers_match_reference),
        cmocka_unit_test(test_nonfinite_activations),
        cmocka_unit_test(test_quantized_accuracy),
        cmocka_unit_test(test_threads_bit_identical),
        cmocka_unit_test(test_exp_f32),
        cmocka_unit_test(test_dot_f32_kernels),
        cmocka_unit_test(test_silu_mul_kernels),
        cmocka_unit_test(test_attention_kernels_match_scalar),
        cmocka_unit_test(test_attention_accuracy),
        cmocka_unit_test(test_pool_for_covers_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
