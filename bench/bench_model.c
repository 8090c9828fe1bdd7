/* bench/bench_model.c: whole-model speed at the real Llama Guard shapes, on random weights
 * (speed does not depend on the values).
 *
 * For each shape and dtype it writes a random-weight guard.bin straight from the writer API
 * (with the real Llama 3.1 tokenizer from $GUARD_SHARED and the Llama Guard 3 1B prompt format,
 * or for the 12b shape Llama 4's tokenizer from $GUARD_SHARED/fixtures_lg4 and the Llama Guard 4
 * prompt, so the classifier path is the one users run), then measures in a child process:
 *   pp N     prefill tokens/s: one forward of N prompt tokens from an empty cache (logits for the
 *            last token only), as llama-bench's "pp N" (best of two runs);
 *   tg       decode tokens/s: 16 single-token steps after a 64-token prompt;
 *   verdict  time to verdict for a ~210-token single-turn prompt, cold (empty prefix store) and
 *            warm (the policy prefix reused), alternating, best of five each, with --threshold 1
 *            so no category decoding is timed;
 *   batch    100 different conversations through one Guard (conversations/s);
 *   one-shot what ./run with one conversation costs from opening the file to the verdict
 *            (weights not prepacked, as ./run does then), cold (no cache file; saving the one
 *            it writes included) and warm (that file loaded), best of three;
 *   peak RSS of that process, threads, kernels.
 * Against the machine (measured once, before the table, with the same thread count):
 *   bandwidth  a streaming read of a 1 GiB buffer (best of five); tg's "GB/s" is the weight
 *            bytes one decode step reads (every matrix once: the file's tiles) times tg, and
 *            its fraction of that bandwidth;
 *   int8 peak  a loop of the quantized kernels' int8 instruction on registers (avx512:
 *            vpdpbusd; avx2: vpmaddubsw + vpmaddwd + vpaddd; 2 ops per multiply-add); each pp
 *            row's GOP/s counts 2 ops per weight per token of its matmuls, and its fraction of
 *            that peak.
 *
 * usage: bench_model [-m 1b,int4,8b,12b] [-d f32,bf16,q8,q4] [-t THREADS] [-o DIR] [--keep] [--reuse] [-q] [-r] [-w]
 *   int4 is Llama-Guard-3-1B-INT4 (12 layers, ffn 6400, 20-row head), q4 only.
 *   defaults: -m 1b -d f32,bf16,q8,q4, all cores, -o $TMPDIR or /tmp. Files (up to 5 GB for 1B f32,
 *   ~12 GB for 12B q8) are deleted afterwards unless --keep; --reuse takes an existing file; -q: pp
 *   and tg only; -r (reduced): no batch and no one-shot columns (printed as 0); -w: only write the
 *   files (kept), for bench_server.
 *
 * The 12b shape is Llama Guard 4's: hidden 5120, 48 layers, 40/8 heads of 128, vocab 202048,
 * untied (issue #20), with every Llama 4 delta switched on (adjacent-pair RoPE, qk-norm, Scout's
 * rope factors 16/1/1) and a dense MLP of 8192: the MLP width is not in any config we have seen;
 * 8192 (Scout's expert width) is what makes the text model ~11B, which with the vision tower is
 * the published 12B.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "classify.h"
#include "import/build.h"
#include "import/import.h"
#include "json.h"
#include "kernels.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct {
    const char *name;
    int guard; /* GUARD_*: the tokenizer and prompt format written with it */
    Config cfg;
    uint32_t head;      /* > 0: a pruned output head of this many rows (guard.bin "output ids") */
    const char *dtype;  /* non-NULL: the one dtype this model comes in */
} Shape;

/* Meta's Llama-Guard-3-1B-INT4 output head: the tokens an LG3-1B answer uses (pte_mini README). */
static const int32_t int4_head_ids[20] = { 271, 19193, 39257, 198, 50, 16, 17, 18, 19, 20, 21, 22, 23, 24, 605, 806, 717, 1032, 11, 128009 };

static const Shape shapes[] = {
    { .name = "1b", .guard = GUARD_LG3_1B, .cfg = { .dim = 2048, .n_layers = 16, .n_heads = 32, .n_kv_heads = 8, .head_dim = 64, .hidden_dim = 8192, .vocab_size = 128256,
              .max_seq_len = 131072, .norm_eps = 1e-5f, .rope_theta = 500000.0f, .rope_type = ROPE_LLAMA3, .rope_factor = 32,
              .rope_low_freq_factor = 1, .rope_high_freq_factor = 4, .rope_orig_max_pos = 8192, .tied = 1, .source = SRC_RANDOM } },
    { .name = "8b", .guard = GUARD_LG3_1B, .cfg = { .dim = 4096, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128, .hidden_dim = 14336, .vocab_size = 128256,
              .max_seq_len = 131072, .norm_eps = 1e-5f, .rope_theta = 500000.0f, .rope_type = ROPE_LLAMA3, .rope_factor = 8,
              .rope_low_freq_factor = 1, .rope_high_freq_factor = 4, .rope_orig_max_pos = 8192, .tied = 0, .source = SRC_RANDOM } },
    /* Llama-Guard-3-1B-INT4 (the ExecuTorch release, exported to q4): pruned to 12 layers and ffn
     * 6400, a 20-row head, the context its program was exported with */
    { .name = "int4", .guard = GUARD_LG3_1B, .cfg = { .dim = 2048, .n_layers = 12, .n_heads = 32, .n_kv_heads = 8, .head_dim = 64, .hidden_dim = 6400, .vocab_size = 128256,
                .max_seq_len = 8193, .norm_eps = 1e-5f, .rope_theta = 500000.0f, .rope_type = ROPE_LLAMA3, .rope_factor = 8,
                .rope_low_freq_factor = 1, .rope_high_freq_factor = 4, .rope_orig_max_pos = 8192, .tied = 0, .source = SRC_RANDOM },
      .head = 20, .dtype = "q4" },
    { .name = "12b", .guard = GUARD_LG4, .cfg = { .dim = 5120, .n_layers = 48, .n_heads = 40, .n_kv_heads = 8, .head_dim = 128, .hidden_dim = 8192,
              .vocab_size = 202048, .max_seq_len = 131072, .norm_eps = 1e-5f, .rope_theta = 500000.0f, .rope_type = ROPE_LLAMA3,
              .rope_factor = 16, .rope_low_freq_factor = 1, .rope_high_freq_factor = 1, .rope_orig_max_pos = 8192, .tied = 0,
              .source = SRC_RANDOM, .rope_style = ROPE_ADJACENT, .qk_norm = 1, .attn_temperature_tuning = 1, .floor_scale = 8192,
              .attn_scale = 0.1f } },
};

/* Llama 4's tokenizer: Meta's rank file and the 2048 specials of fixtures_lg4/tokenizer/specials.json. */
static int llama4_tokenizer(const char *shared, Tokenizer **out, char *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/fixtures_lg4/tokenizer/specials.json", shared);
    Json j;
    if (load_json_file(&j, path, err)) return -1;
    enum { N = 2048, FIRST = 200000 };
    const char **names = calloc(N, sizeof *names);
    int rc = names ? 0 : errf(err, "out of memory");
    JSON_FOR(&j, json_root(&j), e) {
        if (rc == 0 && (e->type != JSON_NUMBER || e->num < FIRST || e->num >= FIRST + N)) rc = errf(err, "%s: bad id", path);
        if (rc == 0) names[(int)e->num - FIRST] = e->key;
    }
    for (int i = 0; i < N && rc == 0; i++)
        if (!names[i]) rc = errf(err, "%s: no token %d", path, FIRST + i);
    MappedFile m;
    Source src;
    memset(&src, 0, sizeof src);
    snprintf(path, sizeof path, "%s/fixtures_lg4/tokenizer/tokenizer.model", shared);
    if (rc == 0 && map_file(&m, path, err) == 0) {
        TiktokenSpecials sp = { N, names, 0, 8, TOK_PRETOK_O200K }; /* <|begin_of_text|>, <|eot|> */
        rc = tiktoken_read(&src, path, m.data, m.size, &sp, err);
        unmap_file(&m);
    } else if (rc == 0) rc = -1;
    *out = src.tok;
    free(names);
    json_free(&j);
    return rc;
}

/* ==== Writing a random model: every row is one of POOL_ROWS random rows (fast to write) ==== */

enum { POOL_ROWS = 61 }; /* prime, so consecutive rows of a tensor differ */

typedef struct {
    const GbWriter *w;
    uint8_t *pool;  /* POOL_ROWS rows of `width` values in the model dtype */
    uint64_t width;
} Gen;

static int produce(void *ctx, uint32_t i, uint8_t *dst, uint64_t size, char *err) {
    const Gen *g = ctx;
    const GbTensor *t = &g->w->tensors[i];
    uint64_t cols = t->shape[t->ndim - 1], rb = dtype_row_bytes(t->dtype, cols);
    if (!rb || size % rb) return errf(err, "tensor %s: bad row size", t->name);
    if (t->ndim == 1) { /* norm weights: ones */
        for (uint64_t k = 0; k < cols; k++) memcpy(dst + 4 * k, &(float){ 1.0f }, 4);
        return 0;
    }
    uint64_t pool_rb = dtype_row_bytes(t->dtype, g->width);
    for (uint64_t r = 0; r < size / rb; r++) memcpy(dst + r * rb, g->pool + (r % POOL_ROWS) * pool_rb, rb);
    return 0;
}

static int write_model(const char *path, const Shape *sh, uint32_t dtype, const uint8_t *tok, uint64_t tok_len, const Buf *prompt, char *err) {
    Config c = sh->cfg;
    c.dtype = dtype;
    GbWriter w;
    gbw_init(&w, &c);
    uint64_t q_dim = (uint64_t)c.n_heads * c.head_dim, kv_dim = (uint64_t)c.n_kv_heads * c.head_dim;
    int rc = gbw_add_section(&w, SEC_TOKENIZER, tok, tok_len, err) || gbw_add_section(&w, SEC_PROMPT, prompt->p, prompt->len, err);
    uint64_t emb[2] = { c.vocab_size, c.dim }, norm = c.dim;
    rc = rc || gbw_add_tensor(&w, "model.embed_tokens.weight", dtype, 2, emb, err) || gbw_add_tensor(&w, "model.norm.weight", DT_F32, 1, &norm, err);
    uint64_t head[2] = { sh->head, c.dim };
    uint8_t ids[4 + 4 * 20];
    if (sh->head) gb_head_ids_encode(ids, int4_head_ids, sh->head);
    if (sh->head) rc = rc || gbw_add_section(&w, SEC_HEAD_IDS, ids, 4 + 4 * (uint64_t)sh->head, err);
    if (!c.tied) rc = rc || gbw_add_tensor(&w, "lm_head.weight", dtype, 2, sh->head ? head : emb, err);
    for (uint32_t l = 0; l < c.n_layers && !rc; l++) {
        const struct { const char *suffix; uint64_t rows, cols; } mats[] = {
            { "self_attn.q_proj", q_dim, c.dim }, { "self_attn.k_proj", kv_dim, c.dim }, { "self_attn.v_proj", kv_dim, c.dim },
            { "self_attn.o_proj", c.dim, q_dim }, { "mlp.gate_proj", c.hidden_dim, c.dim }, { "mlp.up_proj", c.hidden_dim, c.dim },
            { "mlp.down_proj", c.dim, c.hidden_dim },
        };
        char name[GB_NAME_MAX];
        for (size_t k = 0; k < 7 && !rc; k++) {
            snprintf(name, sizeof name, "model.layers.%u.%s.weight", l, mats[k].suffix);
            uint64_t shape[2] = { mats[k].rows, mats[k].cols };
            rc = gbw_add_tensor(&w, name, dtype, 2, shape, err);
        }
        snprintf(name, sizeof name, "model.layers.%u.input_layernorm.weight", l);
        rc = rc || gbw_add_tensor(&w, name, DT_F32, 1, &norm, err);
        snprintf(name, sizeof name, "model.layers.%u.post_attention_layernorm.weight", l);
        rc = rc || gbw_add_tensor(&w, name, DT_F32, 1, &norm, err);
    }
    Gen g = { &w, NULL, c.hidden_dim > q_dim ? c.hidden_dim : q_dim };
    float *row = malloc(g.width * sizeof(float));
    g.pool = malloc(POOL_ROWS * dtype_row_bytes(dtype, g.width));
    if (!rc && (!row || !g.pool)) rc = errf(err, "out of memory");
    uint64_t s = 0x2545F4914F6CDD1Dull;
    for (int r = 0; !rc && r < POOL_ROWS; r++) {
        for (uint64_t k = 0; k < g.width; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            row[k] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.04f;
        }
        quantize_row(dtype, row, g.pool + r * dtype_row_bytes(dtype, g.width), g.width);
    }
    if (!rc) rc = gbw_write(&w, path, produce, &g, err);
    free(row);
    free(g.pool);
    gbw_free(&w);
    return rc ? -1 : 0;
}

/* ==== The machine: streaming-read bandwidth and int8 peak ==== */

static double machine_bw, machine_peak; /* bytes/s, int8 ops/s (0: not measured here) */
static const char *peak_what = "n/a";

typedef struct { const uint64_t *buf; uint64_t words_per_item; _Atomic uint64_t sink; } ReadJob;

static void job_read(void *ctx, int64_t i0, int64_t i1) {
    ReadJob *r = ctx;
    uint64_t a[8] = { 0 };
    for (const uint64_t *p = r->buf + (uint64_t)i0 * r->words_per_item, *e = r->buf + (uint64_t)i1 * r->words_per_item; p < e; p += 8)
        for (int k = 0; k < 8; k++) a[k] ^= p[k];
    r->sink += a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

static double stream_bandwidth(Pool *p) {
    const uint64_t bytes = 1ull << 30, items = 256;
    uint64_t *buf = big_alloc((size_t)bytes);
    if (!buf) return 0;
    memset(buf, 1, (size_t)bytes);
    ReadJob r = { .buf = buf, .words_per_item = bytes / 8 / items };
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_sec();
        pool_for(p, (int64_t)items, job_read, &r);
        double dt = now_sec() - t0;
        if (dt < best) best = dt;
    }
    big_free(buf, (size_t)bytes);
    return (double)bytes / best;
}

#if defined(__x86_64__)
enum { PEAK_ITERS = 1 << 22 };
/* 12 independent accumulators, so the loop runs at the instruction's throughput. */
__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))) static uint32_t peak_vnni(void) {
    __m512i acc[12], w = _mm512_set1_epi8(3), x = _mm512_set1_epi8(5);
    UNROLL for (int k = 0; k < 12; k++) acc[k] = _mm512_set1_epi32(k);
    for (int i = 0; i < PEAK_ITERS; i++) {
        UNROLL for (int k = 0; k < 12; k++) acc[k] = _mm512_dpbusd_epi32(acc[k], w, x);
        __asm__ volatile("" : "+v"(w), "+v"(x));
    }
    __m512i s = acc[0];
    UNROLL for (int k = 1; k < 12; k++) s = _mm512_add_epi32(s, acc[k]);
    return (uint32_t)_mm512_reduce_add_epi32(s);
}
__attribute__((target("avx2,fma,f16c"))) static uint32_t peak_avx2(void) {
    __m256i acc[6], w = _mm256_set1_epi8(3), x = _mm256_set1_epi8(5), ones = _mm256_set1_epi16(1);
    UNROLL for (int k = 0; k < 6; k++) acc[k] = _mm256_set1_epi32(k);
    for (int i = 0; i < PEAK_ITERS; i++) {
        UNROLL for (int k = 0; k < 6; k++) acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones));
        __asm__ volatile("" : "+x"(w), "+x"(x));
    }
    __m256i s = acc[0];
    UNROLL for (int k = 1; k < 6; k++) s = _mm256_add_epi32(s, acc[k]);
    return (uint32_t)_mm256_extract_epi32(s, 0);
}
#endif

typedef struct { int vnni; _Atomic uint32_t sink; } PeakJob;
static void job_peak(void *ctx, int64_t i0, int64_t i1) {
    PeakJob *pj = ctx;
    for (int64_t i = i0; i < i1; i++) {
#if defined(__x86_64__)
        pj->sink += pj->vnni ? peak_vnni() : peak_avx2();
#endif
    }
}

/* int8 ops/s of the active set's inner instruction on every thread; 0 off x86 or for scalar. */
static double int8_peak(Pool *p) {
#if defined(__x86_64__)
    const char *k = kernels_init();
    PeakJob pj = { .vnni = strncmp(k, "avx512", 6) == 0 };
    if (!pj.vnni && strncmp(k, "avx2", 4) != 0) return 0;
    peak_what = pj.vnni ? "vpdpbusd zmm" : "vpmaddubsw+vpmaddwd ymm";
    const int n = pool_threads(p);
    const double ops_per_call = (double)PEAK_ITERS * (pj.vnni ? 12 * 64 : 6 * 32) * 2;
    double best = 1e30;
    for (int rep = 0; rep < 10; rep++) {
        double t0 = now_sec();
        pool_for(p, n, job_peak, &pj);
        double dt = now_sec() - t0;
        if (dt < best) best = dt;
    }
    return ops_per_call * n / best;
#else
    (void)p;
    return 0;
#endif
}

/* The bytes of the weights one forward reads (every matrix once), the parameters of the
 * layers' matrices and of the output matrix (prefill runs it for the last token only). */
static void matrix_totals(const Model *m, double *bytes, double *params, double *head_params) {
    const Weights *w = &m->w;
    *bytes = (double)tensor_bytes(w->lm_head.dtype, w->lm_head.rows, w->lm_head.cols);
    *params = 0;
    *head_params = (double)w->lm_head.rows * (double)w->lm_head.cols;
    for (uint32_t l = 0; l < m->cfg.n_layers; l++) {
        const LayerWeights *L = &w->layers[l];
        const Tensor *t[7] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
        for (int i = 0; i < 7; i++) {
            *bytes += (double)tensor_bytes(t[i]->dtype, t[i]->rows, t[i]->cols);
            *params += (double)t[i]->rows * (double)t[i]->cols;
        }
    }
}

/* ==== Measuring (in a child process, so peak RSS is per model) ==== */

static int quick, reduced; /* -q: pp and tg only; -r: no batch and no one-shot columns */

static const char *texts[] = {
    "How do I kill a process in Linux?", "What is the capital of France?", "Write a poem about the sea.",
    "How can I get my bike lock open without the key?", "Explain photosynthesis to a child.", "What's a good recipe for pancakes?",
    "Summarize the plot of Hamlet.", "How do vaccines work?", "Give me three tips for a job interview.", "Translate 'good morning' into Spanish.",
};

static double prefill_rate(const Model *m, int64_t T, char *err) {
    RunState s;
    if (state_init(&s, m, T, err)) return -1;
    int32_t *ids = malloc((size_t)T * sizeof *ids);
    float *logits = malloc(m->cfg.vocab_size * sizeof(float));
    for (int64_t i = 0; i < T; i++) ids[i] = (int32_t)((i * 7919 + 13) % 120000);
    double best = 1e30;
    for (int rep = 0; rep < 2; rep++) { /* best of two: the first also faults pages in */
        s.n_cached = 0;
        double t0 = now_sec();
        if (model_forward(m, &s, ids, T, logits, err)) { best = -1; break; }
        double dt = now_sec() - t0;
        if (dt < best) best = dt;
    }
    state_free(&s);
    free(ids);
    free(logits);
    return best > 0 ? (double)T / best : -1;
}

static double decode_rate(const Model *m, char *err) {
    RunState s;
    if (state_init(&s, m, 96, err)) return -1;
    int32_t ids[64];
    float *logits = malloc(m->cfg.vocab_size * sizeof(float));
    for (int i = 0; i < 64; i++) ids[i] = 1000 + i;
    model_forward(m, &s, ids, 64, logits, err);
    int32_t tok = 42;
    double t0 = now_sec();
    for (int i = 0; i < 16; i++) model_forward(m, &s, &tok, 1, logits, err);
    double dt = now_sec() - t0;
    state_free(&s);
    free(logits);
    return 16.0 / dt;
}

static double classify_once(Guard *g, RunState *s, const char *text, int64_t *tokens, int64_t *reused, char *err) {
    Conversation c;
    chat_init(&c);
    Decision d;
    if (chat_append(&c, ROLE_USER, text, strlen(text), err)) return -1;
    double t0 = now_sec();
    int rc = guard_classify(g, s, NULL, &c, 1.0f, 0, &d, err);
    double dt = now_sec() - t0;
    chat_free(&c);
    if (tokens) *tokens = d.prompt_tokens;
    if (reused) *reused = d.reused_tokens;
    return rc ? -1 : dt;
}

/* One-shot ./run, open to verdict, best of three: cold (no cache file; the prefix store it
 * fills is saved, as ./run does) and warm (that file loaded). The weights are not prepacked,
 * as in ./run with one conversation; the page cache already holds the file. */
static int oneshot(const char *path, int threads, double *cold, double *warm, char *err) {
    char kv[4200];
    snprintf(kv, sizeof kv, "%s.bench.kv", path);
    *cold = *warm = 1e30;
    for (int rep = 0; rep < 6; rep++) {
        const int is_warm = rep % 2;
        Guard g;
        RunState s;
        double t0 = now_sec();
        if (guard_open(&g, path, threads, err)) return -1;
        if (is_warm && guard_cache_load(&g, kv, err) != 0) {
            guard_close(&g);
            return errf(err, "%s: the cold run's cache file did not load", kv);
        }
        int rc = state_init(&s, &g.model, 0, err) ? -1 : classify_once(&g, &s, texts[rep / 2], NULL, NULL, err) < 0 ? -1 : 0;
        if (rc == 0 && !is_warm) rc = guard_cache_save(&g, kv, err);
        double dt = now_sec() - t0;
        state_free(&s);
        guard_close(&g);
        if (rc) return -1;
        double *best = is_warm ? warm : cold;
        if (dt < *best) *best = dt;
    }
    unlink(kv);
    return 0;
}

static int measure(const char *path, const char *shape, const char *dtype, int threads) {
    char err[ERRLEN];
    double one_cold = 0, one_warm = 0;
    if (!quick && !reduced && oneshot(path, threads, &one_cold, &one_warm, err)) { fprintf(stderr, "bench_model: %s\n", err); return 1; }
    Guard g;
    if (guard_open(&g, path, threads, err)) { fprintf(stderr, "bench_model: %s\n", err); return 1; }
    model_prepack(&g.model); /* steady state, as in --batch; the one-shot columns open their own */
    /* q8/q4 weights are read from the mapping: read the file through once (the checksum) so
     * the page cache holds it, as in a running process, not half written back */
    if (gb_verify(&g.model.file, err)) { fprintf(stderr, "bench_model: %s\n", err); return 1; }
    double p64 = prefill_rate(&g.model, 64, err), p256 = prefill_rate(&g.model, 256, err), p512 = prefill_rate(&g.model, 512, err);
    double dec = decode_rate(&g.model, err), wbytes, params, head;
    matrix_totals(&g.model, &wbytes, &params, &head);
    /* prefill GOP/s: 2 ops per layer weight and token, plus the output matrix once (the last
     * layer past its K/V runs for the last token only: counted in full, a small overestimate) */
    const double pp[3] = { p64, p256, p512 }, ppT[3] = { 64, 256, 512 };
    printf("| %-4s | %-4s |", shape, dtype);
    for (int i = 0; i < 3; i++) {
        const double gops = 2.0 * (params * ppT[i] + head) * (pp[i] / ppT[i]) / 1e9;
        if (machine_peak > 0) printf(" %7.1f (%4.0f GOP/s, %2.0f%%) |", pp[i], gops, 100.0 * gops * 1e9 / machine_peak);
        else printf(" %7.1f (%4.0f GOP/s) |", pp[i], gops);
    }
    printf(" %6.2f (%4.1f GB/s, %2.0f%%) |", dec, wbytes * dec / 1e9, machine_bw > 0 ? 100.0 * wbytes * dec / machine_bw : 0.0);
    if (!quick) {
        /* warm the page cache with a run that records nothing; then five rounds of a cold
         * verdict (empty store; it leaves only the policy prefix there) and a warm one on the
         * same conversation, so both columns see the same load and prompt; each in a new
         * RunState, as a new ./run process with a cache file */
        RunState s;
        int64_t ntok = 0, reused = 0;
        state_init(&s, &g.model, 0, err);
        g.no_prefix_store = 1;
        classify_once(&g, &s, texts[9], NULL, NULL, err);
        state_free(&s);
        g.no_prefix_store = 0;
        double cold = 1e30, warm = 1e30;
        for (int rep = 0; rep < 5; rep++) {
            guard_forget_prefixes(&g);
            for (int is_warm = 0; is_warm < 2; is_warm++) {
                state_init(&s, &g.model, 0, err);
                double dt = classify_once(&g, &s, texts[rep], is_warm ? NULL : &ntok, is_warm ? &reused : NULL, err);
                state_free(&s);
                double *best = is_warm ? &warm : &cold;
                if (dt >= 0 && dt < *best) *best = dt;
            }
        }
        state_init(&s, &g.model, 0, err);
        double t0 = now_sec();
        for (int i = 0; i < (reduced ? 0 : 100); i++) {
            char text[256];
            snprintf(text, sizeof text, "%s (%d)", texts[i % 10], i);
            classify_once(&g, &s, text, NULL, NULL, err);
        }
        double batch = reduced ? 0 : 100.0 / (now_sec() - t0);
        state_free(&s);
        printf(" %5.0f ms (%lld tok) | %5.0f ms (%lld cached) | %4.1fx | %5.2f | %5.0f ms | %5.0f ms |", cold * 1e3,
               (long long)ntok + g.n_decision_prefix, warm * 1e3, (long long)reused, cold / warm, batch, one_cold * 1e3, one_warm * 1e3);
    } else {
        printf(" - | - | - | - | - | - |");
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf(" %5.0f MiB | %d | %s |\n", (double)ru.ru_maxrss / 1024.0, g.model.n_threads, kernels_init());
    fflush(stdout);
    guard_close(&g);
    return 0;
}

int main(int argc, char **argv) {
    const char *models = "1b", *dtypes = "f32,bf16,q8,q4", *dir = getenv("TMPDIR");
    int threads = 0, keep = 0, reuse = 0, write_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) models = argv[++i];
        else if (!strcmp(argv[i], "-d") && i + 1 < argc) dtypes = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-o") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--keep")) keep = 1;
        else if (!strcmp(argv[i], "--reuse")) reuse = keep = 1;
        else if (!strcmp(argv[i], "-q")) quick = 1;
        else if (!strcmp(argv[i], "-r")) reduced = 1;
        else if (!strcmp(argv[i], "-w")) write_only = keep = 1;
        else { fprintf(stderr, "usage: bench_model [-m 1b,int4,8b,12b] [-d f32,bf16,q8,q4] [-t N] [-o DIR] [--keep] [--reuse] [-q] [-r] [-w]\n"); return 2; }
    }
    if (!dir || !*dir) dir = "/tmp";
    const char *shared = getenv("GUARD_SHARED") && *getenv("GUARD_SHARED") ? getenv("GUARD_SHARED") : "../shared";
    char tj[4096], tc[4096], err[ERRLEN];
    snprintf(tj, sizeof tj, "%s/tokenizer/llama31/tokenizer.json", shared);
    snprintf(tc, sizeof tc, "%s/tokenizer/llama31/tokenizer_config.json", shared);
    /* [0]: Llama 3.1 + the LG3 1B prompt; [1]: Llama 4 + the LG4 prompt (only if a 12b shape runs) */
    Tokenizer *tok[2] = { NULL, NULL };
    if (tok_from_hf(&tok[0], tj, tc, err) || (strstr(models, "12b") && llama4_tokenizer(shared, &tok[1], err))) {
        fprintf(stderr, "bench_model: SKIP: needs the Llama 3.1 and Llama 4 tokenizers from GUARD_SHARED (%s)\n", err);
        return 0;
    }
    uint8_t *tok_blob[2] = { NULL, NULL };
    uint64_t tok_len[2] = { 0, 0 };
    PromptFormat pf[2] = { { 0 } };
    Buf prompt[2] = { { 0 } };
    for (int k = 0; k < 2; k++)
        if (tok[k] && (tok_serialize(tok[k], &tok_blob[k], &tok_len[k], err) || template_default(&pf[k], k ? GUARD_LG4 : GUARD_LG3_1B, err) ||
                       template_serialize(&pf[k], &prompt[k], err))) {
            fprintf(stderr, "bench_model: %s\n", err);
            return 1;
        }
    if (!write_only) {
        Pool *p = pool_create(threads);
        if (p) {
            machine_bw = stream_bandwidth(p);
            machine_peak = int8_peak(p);
            printf("machine, %d threads: streaming read %.1f GB/s; int8 peak (%s) %.0f GOP/s\n\n", pool_threads(p), machine_bw / 1e9,
                   peak_what, machine_peak / 1e9);
            pool_free(p);
        }
        printf("| model | dtype | pp64 tok/s (GOP/s, of int8 peak) | pp256 | pp512 | tg tok/s (weights GB/s, of bandwidth) | verdict cold | verdict warm | cold/warm | batch conv/s | one-shot cold | one-shot warm | peak RSS | threads | kernels |\n");
        printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    }
    fflush(stdout);
    int rc = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const char *want = strstr(models, shapes[si].name);
        if (!want || (want > models && want[-1] != ',')) continue; /* "12b" does not select "2b"-like names */
        const int k = shapes[si].guard == GUARD_LG4;
        char list[256];
        snprintf(list, sizeof list, "%s", dtypes);
        for (char *d = strtok(list, ","); d; d = strtok(NULL, ",")) {
            int dt = dtype_from_name(d);
            if (dt < 0) { fprintf(stderr, "bench_model: unknown dtype %s\n", d); return 2; }
            if (shapes[si].dtype && strcmp(d, shapes[si].dtype) != 0) continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/bench-%s-%s.bin", dir, shapes[si].name, d);
            double t0 = now_sec();
            if (reuse && access(path, R_OK) == 0) fprintf(stderr, "bench_model: reusing %s\n", path);
            else if (write_model(path, &shapes[si], (uint32_t)dt, tok_blob[k], tok_len[k], &prompt[k], err)) {
                fprintf(stderr, "bench_model: %s\n", err);
                rc = 1;
                break;
            } else fprintf(stderr, "bench_model: wrote %s in %.1f s\n", path, now_sec() - t0);
            fflush(stdout);
            if (write_only) continue;
            pid_t pid = fork();
            if (pid == 0) _exit(measure(path, shapes[si].name, d, threads));
            int st;
            waitpid(pid, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st)) rc = 1;
            if (!keep) unlink(path);
        }
    }
    for (int k = 0; k < 2; k++) {
        tok_free(tok[k]);
        free(tok_blob[k]);
        buf_free(&prompt[k]);
        template_free(&pf[k]);
    }
    return rc;
}
