/* model.c: the Llama forward pass, read top to bottom beside Hugging Face's modeling_llama.py
 * (transformers 4.44: LlamaRMSNorm, LlamaRotaryEmbedding with rope_type "llama3",
 * LlamaAttention with repeat_kv, LlamaMLP, LlamaDecoderLayer).
 *
 * One forward() serves prefill and decode: it takes a chunk of tokens, runs every projection
 * as a matrix-matrix product over the chunk (quant.c), appends K/V to the cache, and computes
 * logits only for the last position (the classifier reads one position at a time), so the
 * last layer runs past its K/V projections for that position alone.
 * Activations, the KV cache and all arithmetic outside the matmul kernels are f32.
 * Non-goals: sampling, batching several conversations in one call, GPU.
 */
#include "guard.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== RoPE frequencies ==== */

void rope_inv_freq(const Config *c, float *out) {
    /* _compute_default_rope_parameters: 1 / base ** (arange(0, d, 2).float() / d), in f32. */
    uint32_t half = c->head_dim / 2;
    for (uint32_t i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)c->head_dim;
        out[i] = 1.0f / powf(c->rope_theta, e);
    }
    if (c->rope_type != ROPE_LLAMA3) return;
    /* _compute_llama3_parameters: long wavelengths are divided by `factor`, short ones kept,
     * the band between interpolated. Python-float constants meet f32 tensors as f32. */
    float factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    float old_ctx = (float)c->rope_orig_max_pos;
    float low_freq_wavelen = (float)((double)c->rope_orig_max_pos / (double)lo);
    float high_freq_wavelen = (float)((double)c->rope_orig_max_pos / (double)hi);
    float band = (float)((double)hi - (double)lo);
    for (uint32_t i = 0; i < half; i++) {
        float f = out[i];
        float wavelen = (float)(2 * M_PI) / f;
        float scaled = wavelen > low_freq_wavelen ? f / factor : f;
        if (!(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen)) {
            float smooth = (old_ctx / wavelen - lo) / band;
            scaled = (1 - smooth) * scaled / factor + smooth * scaled;
        }
        out[i] = scaled;
    }
}

/* ==== Loading: bind named tensors of guard.bin to the Weights, checking every shape ==== */

static int bind(const Model *m, Tensor *t, const char *name, uint64_t rows, uint64_t cols, char *err) {
    const GbTensor *g = gb_find(&m->file, name);
    if (!g) return errf(err, "%s: missing tensor '%s'", m->file.path, name);
    uint64_t grows = g->ndim == 1 ? 1 : g->shape[0];
    if (g->ndim > 2 || grows != rows || g->shape[g->ndim - 1] != cols)
        return errf(err, "%s: tensor '%s' has shape [%llu, %llu], expected [%llu, %llu]", m->file.path, name,
                    (unsigned long long)grows, (unsigned long long)g->shape[g->ndim - 1], (unsigned long long)rows,
                    (unsigned long long)cols);
    *t = (Tensor){ g->dtype, rows, cols, gb_data(&m->file, g), NULL };
    return 0;
}

/* Norm weights are always stored as f32 (export converts them): they are tiny and on the hot path. */
static int bind_norm(const Model *m, const float **out, const char *name, uint64_t dim, char *err) {
    Tensor t;
    if (bind(m, &t, name, 1, dim, err)) return -1;
    if (t.dtype != DT_F32) return errf(err, "%s: norm tensor '%s' must be f32", m->file.path, name);
    *out = t.data;
    return 0;
}

/* The seven matrices of a layer, for what is done to each alike. */
#define LAYER_MATS 7
static void layer_mats(LayerWeights *L, Tensor *out[LAYER_MATS]) {
    Tensor *all[LAYER_MATS] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down };
    memcpy(out, all, sizeof all);
}

static void prepack(Model *m, Tensor *t) {
    const uint64_t bytes = tensor_prepack(m->pool, t);
    if (!bytes) return;
    m->packed_bytes += bytes;
    map_drop(&m->file.map, t->data, t->rows * dtype_row_bytes(t->dtype, t->cols));
}

int model_open(Model *m, const char *path, int n_threads, char *err) {
    memset(m, 0, sizeof *m);
    if (gb_open(&m->file, path, err)) return -1;
    const Config *c = &m->cfg;
    m->cfg = m->file.cfg;
    uint64_t q_dim = (uint64_t)c->n_heads * c->head_dim, kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
    Weights *w = &m->w;
    w->layers = calloc(c->n_layers, sizeof *w->layers);
    m->inv_freq = malloc(c->head_dim / 2 * sizeof(float));
    if (!w->layers || !m->inv_freq) { model_close(m); return errf(err, "%s: out of memory", path); }
    char name[GB_NAME_MAX];
    int rc = bind(m, &w->embed, "model.embed_tokens.weight", c->vocab_size, c->dim, err);
    rc = rc ? rc : bind_norm(m, &w->norm, "model.norm.weight", c->dim, err);
    if (rc == 0 && c->tied) w->lm_head = w->embed;
    else if (rc == 0) rc = bind(m, &w->lm_head, "lm_head.weight", c->vocab_size, c->dim, err);
    for (uint32_t l = 0; l < c->n_layers && rc == 0; l++) {
        LayerWeights *L = &w->layers[l];
        const struct { Tensor *t; const char *suffix; uint64_t rows, cols; } mats[] = {
            { &L->wq, "self_attn.q_proj", q_dim, c->dim },       { &L->wk, "self_attn.k_proj", kv_dim, c->dim },
            { &L->wv, "self_attn.v_proj", kv_dim, c->dim },      { &L->wo, "self_attn.o_proj", c->dim, q_dim },
            { &L->w_gate, "mlp.gate_proj", c->hidden_dim, c->dim }, { &L->w_up, "mlp.up_proj", c->hidden_dim, c->dim },
            { &L->w_down, "mlp.down_proj", c->dim, c->hidden_dim },
        };
        for (size_t i = 0; i < sizeof mats / sizeof mats[0] && rc == 0; i++) {
            snprintf(name, sizeof name, "model.layers.%u.%s.weight", l, mats[i].suffix);
            rc = bind(m, mats[i].t, name, mats[i].rows, mats[i].cols, err);
        }
        snprintf(name, sizeof name, "model.layers.%u.input_layernorm.weight", l);
        rc = rc ? rc : bind_norm(m, &L->attn_norm, name, c->dim, err);
        snprintf(name, sizeof name, "model.layers.%u.post_attention_layernorm.weight", l);
        rc = rc ? rc : bind_norm(m, &L->ffn_norm, name, c->dim, err);
    }
    if (rc) { model_close(m); return -1; }
    rope_inv_freq(c, m->inv_freq);
    kernels_init();
    m->pool = pool_create(n_threads);
    if (!m->pool) { model_close(m); return errf(err, "cannot start worker threads"); }
    m->n_threads = pool_threads(m->pool);
    return 0;
}

uint64_t model_prepack(Model *m) {
    /* The mapped rows a tensor was packed from are dropped right away, so the process holds
     * one copy. The embedding is not packed (lookups read rows in place); tied, its pages come
     * back as rows are looked up. Tiles cannot be paged out as file pages can, so a model
     * whose tiles would not fit in 3/4 of the available memory is left as it is. */
    const Config *c = &m->cfg;
    Weights *w = &m->w;
    if (m->packed_bytes) return m->packed_bytes;
    uint64_t need = tensor_prepack_bytes(&w->lm_head);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        Tensor *mats[LAYER_MATS];
        layer_mats(&w->layers[l], mats);
        for (int i = 0; i < LAYER_MATS; i++) need += tensor_prepack_bytes(mats[i]);
    }
    if (need > mem_available() / 4 * 3) return 0;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        Tensor *mats[LAYER_MATS];
        layer_mats(&w->layers[l], mats);
        for (int i = 0; i < LAYER_MATS; i++) prepack(m, mats[i]);
    }
    prepack(m, &w->lm_head);
    return m->packed_bytes;
}

void model_close(Model *m) {
    for (uint32_t l = 0; m->w.layers && l < m->cfg.n_layers; l++) {
        Tensor *mats[LAYER_MATS];
        layer_mats(&m->w.layers[l], mats);
        for (int i = 0; i < LAYER_MATS; i++) tensor_unpack(mats[i]);
    }
    tensor_unpack(&m->w.lm_head);
    pool_free(m->pool);
    free(m->w.layers);
    free(m->inv_freq);
    gb_close(&m->file);
    memset(m, 0, sizeof *m);
}

/* ==== RunState ==== */

#define DEFAULT_CHUNK 512

int state_init(RunState *s, const Model *m, int64_t cap, char *err) {
    memset(s, 0, sizeof *s);
    const Config *c = &m->cfg;
    int64_t q_dim = (int64_t)c->n_heads * c->head_dim, kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t ch = s->chunk = DEFAULT_CHUNK, wide = q_dim > c->dim ? q_dim : c->dim;
    s->x = malloc((size_t)(ch * c->dim) * sizeof(float));
    s->xb = malloc((size_t)(ch * wide) * sizeof(float));
    s->xb2 = malloc((size_t)(ch * c->dim) * sizeof(float));
    s->q = malloc((size_t)(ch * q_dim) * sizeof(float));
    s->k = malloc((size_t)(ch * kv_dim) * sizeof(float));
    s->v = malloc((size_t)(ch * kv_dim) * sizeof(float));
    s->hb = malloc((size_t)(ch * c->hidden_dim) * sizeof(float));
    s->hb2 = malloc((size_t)(ch * c->hidden_dim) * sizeof(float));
    if (!s->x || !s->xb || !s->xb2 || !s->q || !s->k || !s->v || !s->hb || !s->hb2) {
        state_free(s);
        return errf(err, "out of memory for activations");
    }
    if (state_reserve(s, m, cap, err)) {
        state_free(s);
        return -1;
    }
    return 0;
}

int state_reserve(RunState *s, const Model *m, int64_t cap, char *err) {
    const Config *c = &m->cfg;
    if (cap <= s->cap) return 0;
    if (cap > (int64_t)c->max_seq_len)
        return errf(err, "%lld positions exceed the model's context of %u", (long long)cap, c->max_seq_len);
    uint64_t kv_dim = (uint64_t)c->n_kv_heads * c->head_dim, per_layer, total;
    if (!mul_u64((uint64_t)cap, kv_dim, &per_layer) || !mul_u64(per_layer, (uint64_t)c->n_layers * sizeof(float), &total) ||
        total > ((uint64_t)1 << 40))
        return errf(err, "KV cache for %lld positions is too large", (long long)cap);
    float *kc = malloc((size_t)total), *vc = malloc((size_t)total);
    int32_t *ids = realloc(s->ids, (size_t)cap * sizeof *ids);
    if (ids) s->ids = ids;
    if (!kc || !vc || !ids) {
        free(kc);
        free(vc);
        return errf(err, "out of memory for a KV cache of %lld positions (%.1f MiB)", (long long)cap, 2.0 * (double)total / 1048576);
    }
    for (uint32_t l = 0; l < c->n_layers && s->n_cached > 0; l++) {
        size_t keep = (size_t)((uint64_t)s->n_cached * kv_dim) * sizeof(float);
        memcpy(kc + l * per_layer, s->key_cache + l * (uint64_t)s->cap * kv_dim, keep);
        memcpy(vc + l * per_layer, s->value_cache + l * (uint64_t)s->cap * kv_dim, keep);
    }
    free(s->key_cache);
    free(s->value_cache);
    s->key_cache = kc;
    s->value_cache = vc;
    s->cap = cap;
    return 0;
}

void state_free(RunState *s) {
    free(s->x); free(s->xb); free(s->xb2); free(s->q); free(s->k); free(s->v);
    free(s->hb); free(s->hb2); free(s->key_cache); free(s->value_cache); free(s->ids);
    memset(s, 0, sizeof *s);
}

/* ==== The blocks of a decoder layer ==== */

/* LlamaRMSNorm: weight * x / sqrt(mean(x^2) + eps), row by row over [n, dim]. */
static void rmsnorm(float *out, const float *x, const float *weight, int64_t n, int64_t dim, float eps) {
    for (int64_t t = 0; t < n; t++) {
        const float *xt = x + t * dim;
        float *ot = out + t * dim;
        double ss = 0; /* f64 sum: HF's f32 mean differs from the exact value by far less than our tolerance */
        for (int64_t i = 0; i < dim; i++) ss += (double)xt[i] * xt[i];
        float inv = 1.0f / sqrtf((float)(ss / (double)dim) + eps);
        for (int64_t i = 0; i < dim; i++) ot[i] = weight[i] * (xt[i] * inv);
    }
}

/* apply_rotary_pos_emb with rotate_half: dimension i pairs with i + head_dim/2 (HF weight layout).
 * vec is [n, n_heads * head_dim]; token t sits at position pos0 + t. */
static void rope(float *vec, int64_t n, int64_t n_heads, int64_t head_dim, int64_t pos0, const float *inv_freq) {
    int64_t half = head_dim / 2;
    for (int64_t t = 0; t < n; t++) {
        float pos = (float)(pos0 + t);
        for (int64_t i = 0; i < half; i++) {
            float angle = pos * inv_freq[i]; /* f32 product, as HF's inv_freq @ position_ids */
            float c = cosf(angle), s = sinf(angle);
            for (int64_t h = 0; h < n_heads; h++) {
                float *v = vec + (t * n_heads + h) * head_dim;
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * c - x2 * s;
                v[i + half] = x2 * c + x1 * s;
            }
        }
    }
}

/* Causal attention for the chunk: query t of head h sees cached positions [0, pos0 + t].
 * GQA (repeat_kv): query head h reads kv head h / (n_heads / n_kv_heads). The arithmetic is
 * quant.c's attention() (quant.h "The attention contract": fixed per-query order, so chunked
 * prefill and token-by-token decode give the same bits, which the prefix cache relies on). */
typedef struct {
    const Config *c;
    const float *q;            /* [n, q_dim] */
    const float *kc, *vc;      /* this layer's cache [cap, kv_dim] */
    float *out;                /* [n, q_dim] */
    int64_t n, pos0;
    /* blocks (set by attention_chunk): hper heads of one kv group (a slice of the group when
     * it has more than ATTN_QMAX heads) x tb consecutive tokens, so they share K/V loads */
    int64_t hslices, hper, tb, n_tblocks;
} AttnJob;

/* item = (token block, kv head, head slice); the last tokens see the most positions, so items
 * run from the last token block to the first and the pool ends evenly. */
static void attention_rows(void *ctx, int64_t begin, int64_t end) {
    const AttnJob *j = ctx;
    const Config *c = j->c;
    const int64_t hd = c->head_dim, q_dim = (int64_t)c->n_heads * hd, kv_dim = (int64_t)c->n_kv_heads * hd;
    const int64_t group = c->n_heads / c->n_kv_heads;
    for (int64_t item = begin; item < end; item++) {
        const int64_t slice = item % j->hslices, kvh = item / j->hslices % c->n_kv_heads;
        const int64_t t0 = (j->n_tblocks - 1 - item / j->hslices / c->n_kv_heads) * j->tb;
        const int64_t h0 = kvh * group + slice * j->hper, h1 = h0 + j->hper < (kvh + 1) * group ? h0 + j->hper : (kvh + 1) * group;
        AttnBlock b = { hd, j->kc + kvh * hd, j->vc + kvh * hd, kv_dim, 1.0f / sqrtf((float)hd), 0, { 0 }, { 0 }, { 0 } };
        for (int64_t t = t0; t < t0 + j->tb && t < j->n; t++)
            for (int64_t h = h0; h < h1; h++) {
                b.q[b.nq] = j->q + t * q_dim + h * hd;
                b.o[b.nq] = j->out + t * q_dim + h * hd;
                b.len[b.nq++] = j->pos0 + t + 1;
            }
        attention(&b);
    }
}

static void attention_chunk(Pool *pool, AttnJob *j) {
    const int64_t group = j->c->n_heads / j->c->n_kv_heads;
    j->hslices = (group + ATTN_QMAX - 1) / ATTN_QMAX;
    j->hper = (group + j->hslices - 1) / j->hslices;
    j->tb = ATTN_QMAX / j->hper;
    j->n_tblocks = (j->n + j->tb - 1) / j->tb;
    pool_for(pool, j->n_tblocks * j->c->n_kv_heads * j->hslices, attention_rows, j);
}

/* LlamaMLP: down(silu(gate(x)) * up(x)); hb = silu(hb) * hb2 in place (quant.h silu_mul).
 * The pool shares it out in slices of SWIGLU_SLICE elements (elementwise: the same bits for
 * any split). */
#define SWIGLU_SLICE 4096
typedef struct { float *hb; const float *hb2; int64_t count; } SwigluJob;

static void swiglu_slices(void *ctx, int64_t begin, int64_t end) {
    const SwigluJob *j = ctx;
    const int64_t i0 = begin * SWIGLU_SLICE, i1 = end * SWIGLU_SLICE < j->count ? end * SWIGLU_SLICE : j->count;
    silu_mul(j->hb + i0, j->hb2 + i0, i1 - i0);
}

static void swiglu(Pool *pool, float *hb, const float *hb2, int64_t count) {
    SwigluJob j = { hb, hb2, count };
    pool_for(pool, (count + SWIGLU_SLICE - 1) / SWIGLU_SLICE, swiglu_slices, &j);
}

static void add_inplace(float *x, const float *y, int64_t count) {
    for (int64_t i = 0; i < count; i++) x[i] += y[i];
}

/* ==== forward ==== */

/* keep: how many of the chunk's last rows need the final layer's output (the logits row: 1,
 * or 0). The other rows need only that layer's K and V, for the positions after them; their
 * attention, o_proj and MLP outputs would feed nothing (as llama.cpp's inp_out_ids). Every row
 * is computed on its own in every step, so the kept rows get the same bits either way. */
static void forward_chunk(const Model *m, RunState *s, const int32_t *tokens, int64_t n, int64_t keep) {
    const Config *c = &m->cfg;
    const Weights *w = &m->w;
    Pool *pool = m->pool;
    int64_t dim = c->dim, hd = c->head_dim, kv_dim = (int64_t)c->n_kv_heads * hd, pos0 = s->n_cached;
    int64_t q_dim = (int64_t)c->n_heads * hd, hidden = c->hidden_dim;

    for (int64_t t = 0; t < n; t++) dequant_row(&w->embed, (uint64_t)tokens[t], s->x + t * dim);

    for (uint32_t l = 0; l < c->n_layers; l++) {
        const LayerWeights *L = &w->layers[l];
        float *kc = s->key_cache + (int64_t)l * s->cap * kv_dim, *vc = s->value_cache + (int64_t)l * s->cap * kv_dim;
        /* rows [r, n) carry on past K/V: all of them, except in the last layer (the test hook
         * wants every row of layer 0, which is the last in one-layer models) */
        const int hook = l == 0 && s->debug_hidden_l0;
        const int64_t r = l + 1 == c->n_layers && !hook ? n - keep : 0, nr = n - r;

        /* hidden = input_layernorm(x); q, k, v = projections; RoPE on q and k */
        rmsnorm(s->xb, s->x, L->attn_norm, n, dim, c->norm_eps);
        matmul(pool, s->k, s->xb, &L->wk, n);
        matmul(pool, s->v, s->xb, &L->wv, n);
        rope(s->k, n, c->n_kv_heads, hd, pos0, m->inv_freq);
        memcpy(kc + pos0 * kv_dim, s->k, (size_t)(n * kv_dim) * sizeof(float));
        memcpy(vc + pos0 * kv_dim, s->v, (size_t)(n * kv_dim) * sizeof(float));
        if (l == 0) memcpy(s->ids + pos0, tokens, (size_t)n * sizeof *tokens);
        if (nr == 0) continue;
        float *q = s->q + r * q_dim, *x = s->x + r * dim, *xb = s->xb + r * dim, *att = s->xb + r * q_dim, *xb2 = s->xb2 + r * dim;
        float *hb = s->hb + r * hidden, *hb2 = s->hb2 + r * hidden;
        matmul(pool, q, xb, &L->wq, nr);
        rope(q, nr, c->n_heads, hd, pos0 + r, m->inv_freq);

        /* x = x + o_proj(softmax(q k^T / sqrt(d) + causal mask) v) */
        AttnJob job = { c, q, kc, vc, att, nr, pos0 + r, 0, 0, 0, 0 };
        attention_chunk(pool, &job);
        matmul(pool, xb2, att, &L->wo, nr);
        add_inplace(x, xb2, nr * dim);

        /* x = x + down(silu(gate(h)) * up(h)), h = post_attention_layernorm(x) */
        rmsnorm(xb, x, L->ffn_norm, nr, dim, c->norm_eps);
        matmul(pool, hb, xb, &L->w_gate, nr);
        matmul(pool, hb2, xb, &L->w_up, nr);
        swiglu(pool, hb, hb2, nr * hidden);
        matmul(pool, xb2, hb, &L->w_down, nr);
        add_inplace(x, xb2, nr * dim);

        if (hook) memcpy(s->debug_hidden_l0 + pos0 * dim, s->x, (size_t)(n * dim) * sizeof(float));
    }
    s->n_cached += n;
}

int model_forward(const Model *m, RunState *s, const int32_t *tokens, int64_t n, float *logits, char *err) {
    const Config *c = &m->cfg;
    if (n <= 0) return errf(err, "nothing to run");
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= c->vocab_size)
            return errf(err, "token id %d at index %lld is outside the vocabulary (0..%u)", tokens[i], (long long)i, c->vocab_size - 1);
    if (s->n_cached + n > s->cap && state_reserve(s, m, s->n_cached + n, err)) return -1;
    /* debug_hidden_l0 is indexed by absolute position, so it holds the whole prompt */
    for (int64_t done = 0; done < n; done += s->chunk) {
        int64_t k = n - done < s->chunk ? n - done : s->chunk;
        forward_chunk(m, s, tokens + done, k, logits && done + k == n);
    }
    if (logits) {
        int64_t last = (n - 1) % s->chunk; /* row of the last token in the last chunk */
        float *x = s->x + last * c->dim;
        rmsnorm(s->xb, x, m->w.norm, 1, c->dim, c->norm_eps);
        matmul(m->pool, logits, s->xb, &m->w.lm_head, 1);
    }
    return 0;
}
