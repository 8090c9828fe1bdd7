/* bench/bench_kernels.c: matmul GFLOP/s at the Llama-Guard-3-1B layer shapes, and attention.
 *
 * One "layer" = the seven projections of a decoder layer (dim 2048, kv_dim 512, ffn 8192):
 * q, o [2048 x 2048], k, v [512 x 2048], gate, up [8192 x 2048], down [2048 x 8192].
 * For each weight dtype and T tokens it times the layer with 1 and 2 threads and prints
 * 2*T*params / seconds. Random weights: speed does not depend on the values. T = 1 is the
 * decode path (q8/q4: the stored tiles streamed; float: rows read in place); 65 and 205 are
 * the warm and cold verdict prompts of bench_model. Quantized weights are tiled as export
 * stores them (quant.h tile_rows).
 *
 * Then attention for one layer (32 heads, 8 kv heads, head_dim 64): a T-token chunk after
 * pos0 cached positions, in blocks of 2 tokens x 4 heads as model.c forms them; GFLOP/s
 * counts 4*head_dim flops per (query, position) pair (q.k and the weighted sum of v).
 *
 * usage: bench_kernels [-k kernels] [-d f32,bf16,q8_0,q4_0] [-T 1,65,205,512] [-t 1,2] [-s seconds] [-a 0]
 *   -a 0 skips attention.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "util.h"

typedef struct { uint64_t rows, cols; const char *name; } Shape;
static const Shape layer[] = {
    { 2048, 2048, "wq" }, { 512, 2048, "wk" }, { 512, 2048, "wv" }, { 2048, 2048, "wo" },
    { 8192, 2048, "w_gate" }, { 8192, 2048, "w_up" }, { 2048, 8192, "w_down" },
};
#define N_SHAPES (sizeof layer / sizeof layer[0])

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        while (*s && *s != ',') s++;
        if (*s == ',') s++;
    }
    return n;
}

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)(rng >> 40) / 16777216.0f - 0.5f;
}

/* ==== attention ==== */

enum { A_HEADS = 32, A_KV = 8, A_HD = 64, A_GROUP = A_HEADS / A_KV, A_TB = ATTN_QMAX / A_GROUP };

typedef struct {
    const float *q, *kc, *vc;
    float *out;
    int64_t n, pos0, n_tblocks;
} AttnBench;

static void attn_items(void *ctx, int64_t begin, int64_t end) {
    const AttnBench *a = ctx;
    for (int64_t item = begin; item < end; item++) {
        const int64_t kvh = item % A_KV, t0 = (a->n_tblocks - 1 - item / A_KV) * A_TB;
        AttnBlock b = { A_HD, a->kc + kvh * A_HD, a->vc + kvh * A_HD, A_KV * A_HD, 0.125f, 0, { 0 }, { 0 }, { 0 } };
        for (int64_t t = t0; t < t0 + A_TB && t < a->n; t++)
            for (int64_t h = kvh * A_GROUP; h < (kvh + 1) * A_GROUP; h++) {
                b.q[b.nq] = a->q + (t * A_HEADS + h) * A_HD;
                b.o[b.nq] = a->out + (t * A_HEADS + h) * A_HD;
                b.len[b.nq++] = a->pos0 + t + 1;
            }
        attention(&b);
    }
}

static void bench_attention(Pool **pools, const int *ths, int nth, double min_sec) {
    static const struct { int64_t n, pos0; const char *what; } cases[] = {
        { 1, 511, "decode at 512" }, { 65, 140, "warm verdict" }, { 205, 0, "cold verdict" }, { 512, 0, "pp512" },
    };
    const int64_t maxp = 512;
    float *q = malloc((size_t)maxp * A_HEADS * A_HD * sizeof(float)), *out = malloc((size_t)maxp * A_HEADS * A_HD * sizeof(float));
    float *kc = malloc((size_t)maxp * A_KV * A_HD * sizeof(float)), *vc = malloc((size_t)maxp * A_KV * A_HD * sizeof(float));
    if (!q || !out || !kc || !vc) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (size_t i = 0; i < (size_t)maxp * A_HEADS * A_HD; i++) q[i] = frand() * 4.0f;
    for (size_t i = 0; i < (size_t)maxp * A_KV * A_HD; i++) kc[i] = frand() * 4.0f, vc[i] = frand();
    printf("\nattention GFLOP/s, one LG3-1B layer (32 heads, 8 kv heads, head_dim 64)\n%-14s %5s %5s", "case", "T", "pos0");
    for (int i = 0; i < nth; i++) printf("  %4d thr", ths[i]);
    printf("   (ms/layer at %d thr)\n", ths[nth - 1]);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        AttnBench a = { q, kc, vc, out, cases[c].n, cases[c].pos0, (cases[c].n + A_TB - 1) / A_TB };
        double pairs = 0, last = 0;
        for (int64_t t = 0; t < a.n; t++) pairs += (double)(a.pos0 + t + 1) * A_HEADS;
        printf("%-14s %5lld %5lld", cases[c].what, (long long)a.n, (long long)a.pos0);
        for (int pi = 0; pi < nth; pi++) {
            pool_for(pools[pi], a.n_tblocks * A_KV, attn_items, &a); /* warm-up */
            int reps = 0;
            double t0 = now_sec(), el;
            do {
                pool_for(pools[pi], a.n_tblocks * A_KV, attn_items, &a);
                reps++;
                el = now_sec() - t0;
            } while (el < min_sec);
            last = el / reps;
            printf("  %8.1f", 4.0 * A_HD * pairs / last / 1e9);
            fflush(stdout);
        }
        printf("   (%.2f ms)\n", last * 1e3);
    }
    free(q), free(out), free(kc), free(vc);
}

int main(int argc, char **argv) {
    const char *dts = "f32,bf16,q8_0,q4_0", *kern = NULL;
    int Ts[16] = { 1, 65, 205, 512 }, nT = 4, ths[8] = { 1, 2 }, nth = 2, attn = 1;
    double min_sec = 0.5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-d")) dts = argv[i + 1];
        else if (!strcmp(argv[i], "-k")) kern = argv[i + 1];
        else if (!strcmp(argv[i], "-T")) nT = parse_list(argv[i + 1], Ts, 16);
        else if (!strcmp(argv[i], "-t")) nth = parse_list(argv[i + 1], ths, 8);
        else if (!strcmp(argv[i], "-s")) min_sec = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-a")) attn = atoi(argv[i + 1]);
        else { fprintf(stderr, "usage: %s [-k kernels] [-d dtypes] [-T list] [-t list] [-s sec] [-a 0|1]\n", argv[0]); return 2; }
    }
    const char *desc = kernels_init();
    if (kern && !(desc = kernels_force(kern))) { fprintf(stderr, "kernels '%s' not available here\n", kern); return 1; }
    printf("kernels: %s\n", desc);

    int maxT = 0;
    for (int i = 0; i < nT; i++) maxT = Ts[i] > maxT ? Ts[i] : maxT;
    float *x = malloc((size_t)maxT * 8192 * sizeof(float)), *y = malloc((size_t)maxT * 8192 * sizeof(float));
    float *row = malloc(8192 * sizeof(float));
    if (!x || !y || !row) { fprintf(stderr, "out of memory\n"); return 1; }
    for (size_t i = 0; i < (size_t)maxT * 8192; i++) x[i] = frand();
    double params = 0;
    for (size_t s = 0; s < N_SHAPES; s++) params += (double)layer[s].rows * layer[s].cols;

    Pool *pools[8];
    for (int i = 0; i < nth; i++) pools[i] = pool_create(ths[i]);

    printf("\nGFLOP/s, one LG3-1B layer (%.1fM params, 7 matmuls)\n", params / 1e6);
    printf("%-6s %5s", "dtype", "T");
    for (int i = 0; i < nth; i++) printf("  %4d thr", ths[i]);
    printf("   (ms/layer at %d thr)\n", ths[nth - 1]);

    char list[128];
    snprintf(list, sizeof list, "%s", dts);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int dt = dtype_from_name(tok);
        if (dt < 0) { fprintf(stderr, "unknown dtype %s\n", tok); return 1; }
        Tensor w[N_SHAPES];
        for (size_t s = 0; s < N_SHAPES; s++) {
            uint64_t rb = dtype_row_bytes((uint32_t)dt, layer[s].cols);
            uint8_t *data = malloc(rb * layer[s].rows);
            if (!data) { fprintf(stderr, "out of memory\n"); return 1; }
            for (uint64_t r = 0; r < layer[s].rows; r++) {
                for (uint64_t k = 0; k < layer[s].cols; k++) row[k] = frand() * 0.1f;
                quantize_row((uint32_t)dt, row, data + r * rb, layer[s].cols);
            }
            if (dtype_tiled((uint32_t)dt)) {
                /* 64-byte aligned, as a tensor in the mapped file is */
                uint8_t *tiles = aligned_alloc(64, (tensor_bytes((uint32_t)dt, layer[s].rows, layer[s].cols) + 63) / 64 * 64);
                if (!tiles) { fprintf(stderr, "out of memory\n"); return 1; }
                tile_rows((uint32_t)dt, layer[s].rows, layer[s].cols, data, tiles);
                free(data);
                data = tiles;
            }
            w[s] = (Tensor){ (uint32_t)dt, layer[s].rows, layer[s].cols, data, NULL };
        }
        for (int ti = 0; ti < nT; ti++) {
            const int64_t T = Ts[ti];
            printf("%-6s %5lld", dtype_name((uint32_t)dt), (long long)T);
            double last = 0;
            for (int pi = 0; pi < nth; pi++) {
                for (size_t s = 0; s < N_SHAPES; s++) matmul(pools[pi], y, x, &w[s], T); /* warm-up */
                int reps = 0;
                double t0 = now_sec(), el;
                do {
                    for (size_t s = 0; s < N_SHAPES; s++) matmul(pools[pi], y, x, &w[s], T);
                    reps++;
                    el = now_sec() - t0;
                } while (el < min_sec);
                last = el / reps;
                printf("  %8.1f", 2.0 * params * (double)T / last / 1e9);
                fflush(stdout);
            }
            printf("   (%.1f ms)\n", last * 1e3);
        }
        for (size_t s = 0; s < N_SHAPES; s++) free((void *)w[s].data);
    }
    if (attn) bench_attention(pools, ths, nth, min_sec);
    for (int i = 0; i < nth; i++) pool_free(pools[i]);
    free(x), free(y), free(row);
    return 0;
}
