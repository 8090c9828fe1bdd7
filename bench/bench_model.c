/* bench/bench_model.c: whole-model prefill and decode speed at the Llama-Guard-3-1B shape.
 *
 * Writes a random-weight guard.bin (dim 2048, 16 layers, 32/8 heads, ffn 8192, vocab 128256,
 * tied embeddings) straight from the writer API into a temporary file, then times
 * model_forward like llama-bench does: "pp N" = one forward of N prompt tokens from an empty
 * cache (logits for the last token only), "tg N" = N single-token forwards. Weight values
 * do not change the speed, so the file repeats a small pool of random rows.
 *
 * usage: bench_model [-d q8_0,q4_0] [-t 2] [-p 64,256,512] [-n 16] [-r 3] [-k kernels] [-o dir]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guard.h"

enum { POOL_ROWS = 61 }; /* prime, so consecutive rows of a tensor differ */

typedef struct {
    const GbWriter *w;
    uint8_t *pool[DT_COUNT];  /* POOL_ROWS random rows of the widest width, per dtype */
    uint64_t width;
} Gen;

static int produce(void *ctx, uint32_t index, uint8_t *dst, uint64_t size, char *err) {
    const Gen *g = ctx;
    const GbTensor *t = &g->w->tensors[index];
    uint64_t cols = t->shape[t->ndim - 1], rb = dtype_row_bytes(t->dtype, cols);
    if (!rb || size % rb) return errf(err, "tensor %s: bad row size", t->name);
    if (t->ndim == 1) { /* norm weights: ones */
        for (uint64_t i = 0; i < cols; i++) memcpy(dst + 4 * i, &(float){ 1.0f }, 4);
        return 0;
    }
    const uint64_t pool_rb = dtype_row_bytes(t->dtype, g->width);
    for (uint64_t r = 0; r < size / rb; r++) memcpy(dst + r * rb, g->pool[t->dtype] + (r % POOL_ROWS) * pool_rb, rb);
    return 0;
}

static int write_model(const char *path, uint32_t dtype, char *err) {
    Config c = { .dim = 2048, .n_layers = 16, .n_heads = 32, .n_kv_heads = 8, .head_dim = 64, .hidden_dim = 8192,
                 .vocab_size = 128256, .max_seq_len = 131072, .norm_eps = 1e-5f, .rope_theta = 500000.0f,
                 .rope_type = ROPE_LLAMA3, .rope_factor = 32.0f, .rope_low_freq_factor = 1.0f,
                 .rope_high_freq_factor = 4.0f, .rope_orig_max_pos = 8192, .tied = 1, .source = SRC_RANDOM,
                 .dtype = dtype };
    GbWriter w;
    gbw_init(&w, &c);
    char name[GB_NAME_MAX];
    int rc = gbw_add_tensor(&w, "model.embed_tokens.weight", dtype, 2, (uint64_t[]){ c.vocab_size, c.dim }, err);
    rc = rc ? rc : gbw_add_tensor(&w, "model.norm.weight", DT_F32, 1, (uint64_t[]){ c.dim }, err);
    const struct { const char *suffix; uint64_t rows, cols; } mats[] = {
        { "self_attn.q_proj", 2048, 2048 }, { "self_attn.k_proj", 512, 2048 }, { "self_attn.v_proj", 512, 2048 },
        { "self_attn.o_proj", 2048, 2048 }, { "mlp.gate_proj", 8192, 2048 }, { "mlp.up_proj", 8192, 2048 },
        { "mlp.down_proj", 2048, 8192 },
    };
    for (uint32_t l = 0; l < c.n_layers && rc == 0; l++) {
        for (size_t i = 0; i < sizeof mats / sizeof mats[0] && rc == 0; i++) {
            snprintf(name, sizeof name, "model.layers.%u.%s.weight", l, mats[i].suffix);
            rc = gbw_add_tensor(&w, name, dtype, 2, (uint64_t[]){ mats[i].rows, mats[i].cols }, err);
        }
        snprintf(name, sizeof name, "model.layers.%u.input_layernorm.weight", l);
        rc = rc ? rc : gbw_add_tensor(&w, name, DT_F32, 1, (uint64_t[]){ c.dim }, err);
        snprintf(name, sizeof name, "model.layers.%u.post_attention_layernorm.weight", l);
        rc = rc ? rc : gbw_add_tensor(&w, name, DT_F32, 1, (uint64_t[]){ c.dim }, err);
    }
    Gen g = { &w, { 0 }, 8192 };
    float *row = malloc(g.width * sizeof(float));
    g.pool[dtype] = malloc(POOL_ROWS * dtype_row_bytes(dtype, g.width));
    if (!row || !g.pool[dtype]) rc = errf(err, "out of memory");
    uint64_t s = 0x2545F4914F6CDD1Dull;
    for (int r = 0; rc == 0 && r < POOL_ROWS; r++) {
        for (uint64_t k = 0; k < g.width; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            row[k] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.04f;
        }
        quantize_row(dtype, row, g.pool[dtype] + r * dtype_row_bytes(dtype, g.width), g.width);
    }
    rc = rc ? rc : gbw_write(&w, path, produce, &g, err);
    free(row);
    free(g.pool[dtype]);
    gbw_free(&w);
    return rc;
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    for (; *s && n < max; s += *s == ',') {
        out[n++] = atoi(s);
        while (*s && *s != ',') s++;
    }
    return n;
}

int main(int argc, char **argv) {
    const char *dts = "q8_0,q4_0", *dir = "/tmp", *kern = NULL;
    int ps[8] = { 64, 256, 512 }, np = 3, ths[4] = { 2 }, nth = 1, ntg = 16, reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-d")) dts = argv[i + 1];
        else if (!strcmp(argv[i], "-p")) np = parse_list(argv[i + 1], ps, 8);
        else if (!strcmp(argv[i], "-t")) nth = parse_list(argv[i + 1], ths, 4);
        else if (!strcmp(argv[i], "-n")) ntg = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-k")) kern = argv[i + 1];
        else if (!strcmp(argv[i], "-o")) dir = argv[i + 1];
        else { fprintf(stderr, "usage: %s [-d dtypes] [-t threads] [-p list] [-n tokens] [-r reps] [-k kernels] [-o dir]\n", argv[0]); return 2; }
    }
    const char *desc = kernels_init();
    if (kern && !(desc = kernels_force(kern))) { fprintf(stderr, "kernels '%s' not available here\n", kern); return 1; }
    printf("kernels: %s\nrandom LG3-1B (1.24B params, tied), tokens/s, mean of %d runs (best in brackets)\n", desc, reps);
    printf("%-6s %4s %8s %20s\n", "dtype", "thr", "test", "t/s");
    char list[128], err[ERRLEN], path[512];
    snprintf(list, sizeof list, "%s", dts);
    int maxp = ntg;
    for (int i = 0; i < np; i++) maxp = ps[i] > maxp ? ps[i] : maxp;
    int32_t *tokens = malloc((size_t)maxp * sizeof *tokens);
    float *logits = malloc(128256 * sizeof(float));
    if (!tokens || !logits) return 1;
    for (int i = 0; i < maxp; i++) tokens[i] = (int32_t)((i * 7919u + 13) % 128000u);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int dt = dtype_from_name(tok);
        if (dt < 0) { fprintf(stderr, "unknown dtype %s\n", tok); return 1; }
        snprintf(path, sizeof path, "%s/guard-bench-%d-%s.bin", dir, (int)getpid(), dtype_name((uint32_t)dt));
        double t0 = now_sec();
        if (write_model(path, (uint32_t)dt, err)) { fprintf(stderr, "%s\n", err); return 1; }
        fprintf(stderr, "(wrote %s in %.1f s)\n", path, now_sec() - t0);
        for (int ti = 0; ti < nth; ti++) {
            Model m;
            RunState s;
            if (model_open(&m, path, ths[ti], err) || state_init(&s, &m, maxp + 1, err)) { fprintf(stderr, "%s\n", err); return 1; }
            for (int pi = 0; pi <= np; pi++) {
                const int tg = pi == np, n = tg ? ntg : ps[pi];
                double sum = 0, best = 1e30;
                for (int r = -1; r < reps; r++) { /* r = -1: warm-up (page-in of the mapping) */
                    s.n_cached = 0;
                    double t = now_sec();
                    if (tg) {
                        for (int i = 0; i < n; i++)
                            if (model_forward(&m, &s, tokens + i, 1, logits, err)) { fprintf(stderr, "%s\n", err); return 1; }
                    } else if (model_forward(&m, &s, tokens, n, logits, err)) { fprintf(stderr, "%s\n", err); return 1; }
                    t = now_sec() - t;
                    if (r >= 0) sum += t, best = t < best ? t : best;
                }
                char name[32];
                snprintf(name, sizeof name, "%s%d", tg ? "tg" : "pp", n);
                printf("%-6s %4d %8s %10.1f (%6.1f)\n", dtype_name((uint32_t)dt), m.n_threads, name, n * reps / sum, n / best);
                fflush(stdout);
            }
            state_free(&s);
            model_close(&m);
        }
        unlink(path);
    }
    free(tokens);
    free(logits);
    return 0;
}
