/* model.c: the Llama forward pass, read top to bottom beside Hugging Face's modeling_llama.py
 * (transformers 4.44: LlamaRMSNorm, LlamaRotaryEmbedding with rope_type "llama3",
 * LlamaAttention with repeat_kv, LlamaMLP, LlamaDecoderLayer).
 *
 * One forward() serves prefill and decode: it takes a chunk of tokens, runs every projection
 * as a matrix-matrix product over the chunk (quant.c), appends K/V to the cache, and computes
 * logits only for the last position (the classifier reads one position at a time), so the
 * last layer runs past its K/V for that position alone (forward_chunk's one shortcut step).
 * Activations, the KV cache and all arithmetic outside the matmul kernels are f32.
 * Non-goals: sampling, batching several conversations in one call, GPU.
 */
#include "guard.h"

#include <math.h>
#include <stdatomic.h>
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
    *t = (Tensor){ .dtype = g->dtype, .rows = rows, .cols = cols, .data = gb_data(&m->file, g) };
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
            { .t = &L->wq, .suffix = "self_attn.q_proj", .rows = q_dim, .cols = c->dim },
            { .t = &L->wk, .suffix = "self_attn.k_proj", .rows = kv_dim, .cols = c->dim },
            { .t = &L->wv, .suffix = "self_attn.v_proj", .rows = kv_dim, .cols = c->dim },
            { .t = &L->wo, .suffix = "self_attn.o_proj", .rows = c->dim, .cols = q_dim },
            { .t = &L->w_gate, .suffix = "mlp.gate_proj", .rows = c->hidden_dim, .cols = c->dim },
            { .t = &L->w_up, .suffix = "mlp.up_proj", .rows = c->hidden_dim, .cols = c->dim },
            { .t = &L->w_down, .suffix = "mlp.down_proj", .rows = c->dim, .cols = c->hidden_dim },
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
    int64_t ch = s->chunk = DEFAULT_CHUNK;
    s->x = malloc((size_t)(ch * c->dim) * sizeof(float));
    s->xb = malloc((size_t)(ch * c->dim) * sizeof(float));
    s->xb2 = malloc((size_t)(ch * c->dim) * sizeof(float));
    s->q = malloc((size_t)(ch * q_dim) * sizeof(float));
    s->k = malloc((size_t)(ch * kv_dim) * sizeof(float));
    s->v = malloc((size_t)(ch * kv_dim) * sizeof(float));
    s->att = malloc((size_t)(ch * q_dim) * sizeof(float));
    s->hb = malloc((size_t)(ch * c->hidden_dim) * sizeof(float));
    s->hb2 = malloc((size_t)(ch * c->hidden_dim) * sizeof(float));
    if (!s->x || !s->xb || !s->xb2 || !s->q || !s->k || !s->v || !s->att || !s->hb || !s->hb2) {
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
    free(s->x); free(s->xb); free(s->xb2); free(s->q); free(s->k); free(s->v); free(s->att);
    free(s->hb); free(s->hb2); free(s->key_cache); free(s->value_cache); free(s->ids);
    memset(s, 0, sizeof *s);
}

/* ==== The blocks of a decoder layer ==== */

/* LlamaRMSNorm, row by row over [n, dim]:
 *   variance = hidden_states.pow(2).mean(-1, keepdim=True)
 *   hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
 *   return self.weight * hidden_states.to(input_dtype) */
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

/* apply_rotary_pos_emb, in place:
 *   q_embed = (q * cos) + (rotate_half(q) * sin)      rotate_half(x) = cat(-x2, x1)
 * so dimension i pairs with i + head_dim/2 (HF weight layout), at angle pos * inv_freq[i]
 * (LlamaRotaryEmbedding: freqs = inv_freq @ position_ids; emb = cat(freqs, freqs)).
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
    atomic_int failed;         /* attention() could not get its score buffer */
} AttnJob;

/* item = (token block, kv head, head slice); the last tokens see the most positions, so items
 * run from the last token block to the first and the pool ends evenly. */
static void attention_rows(void *ctx, int64_t begin, int64_t end) {
    AttnJob *j = ctx;
    const Config *c = j->c;
    const int64_t hd = c->head_dim, q_dim = (int64_t)c->n_heads * hd, kv_dim = (int64_t)c->n_kv_heads * hd;
    const int64_t group = c->n_heads / c->n_kv_heads;
    for (int64_t item = begin; item < end; item++) {
        const int64_t slice = item % j->hslices, kvh = item / j->hslices % c->n_kv_heads;
        const int64_t t0 = (j->n_tblocks - 1 - item / j->hslices / c->n_kv_heads) * j->tb;
        const int64_t h0 = kvh * group + slice * j->hper, h1 = h0 + j->hper < (kvh + 1) * group ? h0 + j->hper : (kvh + 1) * group;
        AttnBlock b = { .head_dim = hd, .k = j->kc + kvh * hd, .v = j->vc + kvh * hd, .kv_stride = kv_dim,
                        .scale = 1.0f / sqrtf((float)hd) };
        for (int64_t t = t0; t < t0 + j->tb && t < j->n; t++)
            for (int64_t h = h0; h < h1; h++) {
                b.q[b.nq] = j->q + t * q_dim + h * hd;
                b.o[b.nq] = j->out + t * q_dim + h * hd;
                b.len[b.nq++] = j->pos0 + t + 1;
            }
        if (attention(&b)) atomic_store(&j->failed, 1);
    }
}

static int attention_chunk(Pool *pool, AttnJob *j) {
    const int64_t group = j->c->n_heads / j->c->n_kv_heads;
    j->hslices = (group + ATTN_QMAX - 1) / ATTN_QMAX;
    j->hper = (group + j->hslices - 1) / j->hslices;
    j->tb = ATTN_QMAX / j->hper;
    j->n_tblocks = (j->n + j->tb - 1) / j->tb;
    pool_for(pool, j->n_tblocks * j->c->n_kv_heads * j->hslices, attention_rows, j);
    return atomic_load(&j->failed) ? -1 : 0;
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
    SwigluJob j = { .hb = hb, .hb2 = hb2, .count = count };
    pool_for(pool, (count + SWIGLU_SLICE - 1) / SWIGLU_SLICE, swiglu_slices, &j);
}

static void add_inplace(float *x, const float *y, int64_t count) {
    for (int64_t i = 0; i < count; i++) x[i] += y[i];
}

/* ==== forward ==== */

/* One chunk of n tokens at positions [pos0, pos0 + n), through every layer, HF's
 * LlamaModel.forward. keep: how many of the chunk's last rows need the final layer's output
 * (1 for the logits row, 0 when no logits are wanted, n for the test entry). On return those
 * rows' residual streams are s->x rows [0, keep). cap (with keep == n) receives every row's
 * residual stream after layer cap->layer, [n, dim]. -1 when a kernel's scratch could not be had. */
static int forward_chunk(const Model *m, RunState *s, const int32_t *tokens, int64_t n, int64_t keep,
                          const LayerCapture *cap) {
    const Config *c = &m->cfg;
    const Weights *w = &m->w;
    Pool *pool = m->pool;
    const int64_t dim = c->dim, hd = c->head_dim, hidden = c->hidden_dim;
    const int64_t q_dim = (int64_t)c->n_heads * hd, kv_dim = (int64_t)c->n_kv_heads * hd;
    int64_t pos0 = s->n_cached;
    s->n_cached += n;

    /* inputs_embeds = self.embed_tokens(input_ids) */
    for (int64_t t = 0; t < n; t++) dequant_row(&w->embed, (uint64_t)tokens[t], s->x + t * dim);
    memcpy(s->ids + pos0, tokens, (size_t)n * sizeof *tokens);

    for (uint32_t l = 0; l < c->n_layers; l++) {
        const LayerWeights *L = &w->layers[l];
        float *key_cache = s->key_cache + (int64_t)l * s->cap * kv_dim;
        float *value_cache = s->value_cache + (int64_t)l * s->cap * kv_dim;

        /* LlamaDecoderLayer: hidden_states = self.input_layernorm(hidden_states) */
        rmsnorm(s->xb, s->x, L->attn_norm, n, dim, c->norm_eps);

        /* LlamaAttention:
         *   query_states = self.q_proj(hidden_states)
         *   key_states = self.k_proj(hidden_states)
         *   value_states = self.v_proj(hidden_states)
         *   query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
         *   key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx) */
        if (matmul(pool, s->q, s->xb, &L->wq, n) || matmul(pool, s->k, s->xb, &L->wk, n) ||
            matmul(pool, s->v, s->xb, &L->wv, n))
            return -1;
        rope(s->q, n, c->n_heads, hd, pos0, m->inv_freq);
        rope(s->k, n, c->n_kv_heads, hd, pos0, m->inv_freq);
        memcpy(key_cache + pos0 * kv_dim, s->k, (size_t)(n * kv_dim) * sizeof(float));
        memcpy(value_cache + pos0 * kv_dim, s->v, (size_t)(n * kv_dim) * sizeof(float));

        /* The last-layer shortcut (llama.cpp's inp_out_ids): past its K/V, the last layer only
         * matters for the rows whose output is read, the last `keep`. Their q and residual rows
         * move to rows [0, keep) and the layer continues with n = keep. Every step treats each
         * row on its own, so the kept rows get the same bits as without the shortcut. */
        if (l + 1 == c->n_layers && keep < n) {
            if (keep == 0) return 0;
            memmove(s->q, s->q + (n - keep) * q_dim, (size_t)(keep * q_dim) * sizeof(float));
            memmove(s->x, s->x + (n - keep) * dim, (size_t)(keep * dim) * sizeof(float));
            pos0 += n - keep;
            n = keep;
        }

        /*   attn_weights = softmax(query_states @ repeat_kv(key_states).T / sqrt(head_dim) + causal_mask)
         *   attn_output = self.o_proj(attn_weights @ repeat_kv(value_states))
         * LlamaDecoderLayer: hidden_states = residual + hidden_states */
        AttnJob job = { .c = c, .q = s->q, .kc = key_cache, .vc = value_cache, .out = s->att, .n = n, .pos0 = pos0 };
        if (attention_chunk(pool, &job) || matmul(pool, s->xb2, s->att, &L->wo, n)) return -1;
        add_inplace(s->x, s->xb2, n * dim);

        /*   hidden_states = self.post_attention_layernorm(hidden_states)
         * LlamaMLP: down_proj(act_fn(gate_proj(x)) * up_proj(x))
         *   hidden_states = residual + hidden_states */
        rmsnorm(s->xb, s->x, L->ffn_norm, n, dim, c->norm_eps);
        if (matmul(pool, s->hb, s->xb, &L->w_gate, n) || matmul(pool, s->hb2, s->xb, &L->w_up, n)) return -1;
        swiglu(pool, s->hb, s->hb2, n * hidden);
        if (matmul(pool, s->xb2, s->hb, &L->w_down, n)) return -1;
        add_inplace(s->x, s->xb2, n * dim);

        if (cap && cap->layer == l) memcpy(cap->hidden, s->x, (size_t)(n * dim) * sizeof(float));
    }
    return 0;
}

/* Chunks of s->chunk tokens; the last one keeps its logits row. */
static int forward(const Model *m, RunState *s, const int32_t *tokens, int64_t n, float *logits,
                   const LayerCapture *cap, char *err) {
    const Config *c = &m->cfg;
    if (n <= 0) return errf(err, "nothing to run");
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= c->vocab_size)
            return errf(err, "token id %d at index %lld is outside the vocabulary (0..%u)", tokens[i], (long long)i, c->vocab_size - 1);
    if (s->n_cached + n > s->cap && state_reserve(s, m, s->n_cached + n, err)) return -1;
    const int64_t start = s->n_cached;
    int64_t k = 0, keep = 0;
    for (int64_t done = 0; done < n; done += k) {
        k = n - done < s->chunk ? n - done : s->chunk;
        keep = cap ? k : logits && done + k == n ? 1 : 0;
        LayerCapture chunk_cap = { 0 }; /* cap's rows for this chunk */
        if (cap) chunk_cap = (LayerCapture){ .layer = cap->layer, .hidden = cap->hidden + done * c->dim };
        if (forward_chunk(m, s, tokens + done, k, keep, cap ? &chunk_cap : NULL)) {
            s->n_cached = start; /* the cache keeps only what was complete before this call */
            return errf(err, "out of memory for the kernels' scratch");
        }
    }
    if (logits) {
        /* LlamaModel: hidden_states = self.norm(hidden_states)
         * LlamaForCausalLM: logits = self.lm_head(hidden_states), at the last position only */
        const float *x = s->x + (keep - 1) * c->dim;
        rmsnorm(s->xb, x, m->w.norm, 1, c->dim, c->norm_eps);
        if (matmul(m->pool, logits, s->xb, &m->w.lm_head, 1)) {
            s->n_cached = start;
            return errf(err, "out of memory for the kernels' scratch");
        }
    }
    return 0;
}

int model_forward(const Model *m, RunState *s, const int32_t *tokens, int64_t n, float *logits, char *err) {
    return forward(m, s, tokens, n, logits, NULL, err);
}

int model_forward_capture(const Model *m, RunState *s, const int32_t *tokens, int64_t n, float *logits,
                          const LayerCapture *cap, char *err) {
    if (cap->layer >= m->cfg.n_layers) return errf(err, "layer %u: the model has %u", cap->layer, m->cfg.n_layers);
    return forward(m, s, tokens, n, logits, cap, err);
}
