/* classify.c: from a conversation to Llama Guard's verdict, as Meta scores it (../shared/spec/SCORING.md).
 *
 * 1. Render the prompt (template.c) and tokenize it span by span: structural special tokens by
 *    id, every text span (user content included) as plain text, so a message can never forge
 *    prompt structure.
 * 2. Prefill. Llama Guard 3's HF prompt ends at the assistant header and the model's first
 *    token is "\n\n" (271): we append it, as third-party scorers do, and read the next position.
 *    Llama Guard 1/2 read right after "[/INST]".
 * 3. Softmax over the full vocabulary at that position. Meta's score: P(unsafe) if the argmax is
 *    the unsafe token, else 1 - P(safe) (llama-recipes parse_logprobs). Unsafe iff
 *    score >= threshold. A pruned output head (the INT4 release, guard.bin "output ids") gives
 *    -inf to every id outside it: that -inf is data, not corruption (exp(-inf) = 0, so the
 *    softmax is over the head's ids, as Meta's forward() defines it, and decoding can only
 *    emit those ids); NaN and +inf remain corruption.
 * 4. Only when unsafe: feed the unsafe token and decode greedily until a stop token or
 *    DECODE_CAP, then parse the category codes the model names.
 * Label tokens are looked up by encoding the label text with the file's own tokenizer, never
 * hard-coded. Llama Guard 2 is the one version whose emitted spelling is unconfirmed ("safe"
 * 19193 vs " safe" 6220, ../shared/spec/PROMPTS.md): it accepts both, summing their probabilities.
 */
#include "classify.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The single token that text encodes to, or -1 if it takes more than one. */
static int32_t single_token(const Tokenizer *t, const char *text) {
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    char err[ERRLEN];
    int32_t id = -1;
    if (tok_encode(t, text, strlen(text), &ids, &n, &cap, err) == 0 && n == 1) id = ids[0];
    free(ids);
    return id;
}

int guard_open(Guard *g, const char *path, int n_threads, char *err) {
    memset(g, 0, sizeof *g);
    if (model_open(&g->model, path, n_threads, err)) return -1;
    uint64_t tl, pl;
    const uint8_t *tb = gb_section(&g->model.file, SEC_TOKENIZER, &tl), *pb = gb_section(&g->model.file, SEC_PROMPT, &pl);
    char sub[ERRLEN];
    if (!tb || !pb) {
        errf(err, "%s: no %s section (export it again with this build's ./export)", path, tb ? "prompt" : "tokenizer");
        goto fail;
    }
    if (tok_load(&g->tok, tb, tl, sub) || template_load(&g->pf, pb, pl, sub)) {
        errf(err, "%s: %s", path, sub);
        goto fail;
    }
    if (tok_vocab_size(g->tok) > g->model.cfg.vocab_size) {
        errf(err, "%s: tokenizer has more tokens (%u) than the model's vocabulary (%u)", path, tok_vocab_size(g->tok), g->model.cfg.vocab_size);
        goto fail;
    }
    int v = g->pf.version;
    if (v == GUARD_LG3_8B || v == GUARD_LG3_1B) {
        int32_t nl = single_token(g->tok, "\n\n");
        if (nl < 0) { errf(err, "%s: tokenizer cannot encode \"\\n\\n\" as one token", path); goto fail; }
        g->decision_prefix[g->n_decision_prefix++] = nl;
    }
    /* SentencePiece adds the dummy prefix itself, so "safe" encodes to "▁safe" there. */
    g->safe_ids[0] = single_token(g->tok, "safe");
    g->unsafe_ids[0] = single_token(g->tok, "unsafe");
    g->n_label_ids = 1;
    if (v == GUARD_LG2) {
        g->safe_ids[1] = single_token(g->tok, " safe");
        g->unsafe_ids[1] = single_token(g->tok, " unsafe");
        g->n_label_ids = 2;
    }
    for (int i = 0; i < g->n_label_ids; i++)
        if (g->safe_ids[i] < 0 || g->unsafe_ids[i] < 0) { errf(err, "%s: tokenizer has no single token for the labels safe/unsafe", path); goto fail; }
    const char *stops[] = { "<|eot_id|>", "<|end_of_text|>", "</s>" };
    for (int i = 0; i < 3; i++) {
        int32_t id = tok_special_id(g->tok, stops[i]);
        if (id >= 0) g->stop_ids[g->n_stop++] = id;
    }
    if (tok_eos(g->tok) >= 0 && g->n_stop < 4) {
        int dup = 0;
        for (int i = 0; i < g->n_stop; i++) dup |= g->stop_ids[i] == tok_eos(g->tok);
        if (!dup) g->stop_ids[g->n_stop++] = tok_eos(g->tok);
    }
    return 0;
fail:
    guard_close(g);
    return -1;
}

static void entry_free(PrefixEntry *e) {
    free(e->ids);
    free(e->k);
    free(e->v);
    memset(e, 0, sizeof *e);
}

void guard_forget_prefixes(Guard *g) {
    for (int i = 0; i < PREFIX_SLOTS; i++) entry_free(&g->prefixes.e[i]);
    g->prefixes.clock = 0;
}

void guard_close(Guard *g) {
    guard_forget_prefixes(g);
    tok_free(g->tok);
    template_free(&g->pf);
    model_close(&g->model);
    memset(g, 0, sizeof *g);
}

int guard_prompt_ids(const Guard *g, const Prompt *p, int32_t **ids, size_t *n, size_t *cap, char *err) {
    for (int i = 0; i < p->n; i++) {
        const Span *sp = &p->spans[i];
        if (!sp->special) {
            if (tok_encode(g->tok, sp->text, sp->len, ids, n, cap, err)) return -1;
            continue;
        }
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)sp->len, sp->text);
        int32_t id = tok_special_id(g->tok, name);
        if (id < 0) return errf(err, "tokenizer has no special token %s", name);
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 256;
            int32_t *q = realloc(*ids, nc * sizeof *q);
            if (!q) return errf(err, "out of memory");
            *ids = q;
            *cap = nc;
        }
        (*ids)[(*n)++] = id;
    }
    return 0;
}

/* Probabilities at the decision position: softmax over all logits (f64 sum of f32 exps). */
static void score(const Guard *g, const float *logits, uint32_t vocab, Decision *d) {
    int32_t best = 0;
    for (uint32_t i = 1; i < vocab; i++) if (logits[i] > logits[best]) best = (int32_t)i;
    double sum = 0;
    for (uint32_t i = 0; i < vocab; i++) sum += exp((double)logits[i] - (double)logits[best]);
    double ps = 0, pu = 0;
    int argmax_unsafe = 0;
    for (int i = 0; i < g->n_label_ids; i++) {
        ps += exp((double)logits[g->safe_ids[i]] - (double)logits[best]) / sum;
        pu += exp((double)logits[g->unsafe_ids[i]] - (double)logits[best]) / sum;
        argmax_unsafe |= best == g->unsafe_ids[i];
    }
    d->argmax = best;
    d->p_safe = (float)ps;
    d->p_unsafe_token = (float)pu;
    d->p_unsafe = (float)(argmax_unsafe ? pu : 1.0 - ps);
}

static int is_stop(const Guard *g, int32_t id) {
    for (int i = 0; i < g->n_stop; i++) if (g->stop_ids[i] == id) return 1;
    return 0;
}

/* ==== Prefix reuse ==== */

static int64_t common_prefix(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    int64_t k = 0;
    while (k < na && k < nb && a[k] == b[k]) k++;
    return k;
}

/* The ids every conversation with this shape and these categories shares: the longest common
 * prefix of two prompts whose messages differ in their first character. Token merges across
 * the boundary are handled by comparing ids, not text. */
static int64_t policy_prefix(const Guard *g, const PromptFormat *pf, const Conversation *c, char *err) {
    int32_t *ids[2] = { NULL, NULL };
    size_t n[2] = { 0, 0 }, cap[2] = { 0, 0 };
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++) {
        Conversation probe;
        chat_init(&probe);
        for (int i = 0; i < c->n && rc == 0; i++) rc = chat_append(&probe, c->msgs[i].role, k ? "b" : "a", 1, err);
        Prompt p;
        if (rc == 0 && (rc = template_render(pf, &probe, &p, err)) == 0) {
            rc = guard_prompt_ids(g, &p, &ids[k], &n[k], &cap[k], err);
            prompt_free(&p);
        }
        chat_free(&probe);
    }
    int64_t k = rc ? -1 : common_prefix(ids[0], (int64_t)n[0], ids[1], (int64_t)n[1]);
    free(ids[0]);
    free(ids[1]);
    return k;
}

/* Make s hold the longest available computed prefix of ids (from its own cache or the store),
 * leaving at least the last token to run. Returns the number of positions reused. */
static int64_t reuse_prefix(Guard *g, RunState *s, const int32_t *ids, int64_t n) {
    const Config *c = &g->model.cfg;
    int64_t best = common_prefix(s->ids, s->n_cached, ids, n);
    PrefixEntry *from = NULL;
    for (int i = 0; i < PREFIX_SLOTS && !g->no_prefix_store; i++) {
        PrefixEntry *e = &g->prefixes.e[i];
        int64_t k = common_prefix(e->ids, e->n, ids, n);
        if (k > best) best = k, from = e;
    }
    if (best > n - 1) best = n - 1;
    if (from) {
        uint64_t kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
        for (uint32_t l = 0; l < c->n_layers; l++) {
            memcpy(s->key_cache + l * (uint64_t)s->cap * kv_dim, from->k + l * (uint64_t)from->n * kv_dim, (size_t)((uint64_t)best * kv_dim) * sizeof(float));
            memcpy(s->value_cache + l * (uint64_t)s->cap * kv_dim, from->v + l * (uint64_t)from->n * kv_dim, (size_t)((uint64_t)best * kv_dim) * sizeof(float));
        }
        memcpy(s->ids, ids, (size_t)best * sizeof *ids);
        from->used = ++g->prefixes.clock;
    }
    s->n_cached = best;
    return best;
}

/* Record s's first n positions as a prefix entry unless the store has it (LRU eviction). */
static int remember_prefix(Guard *g, const RunState *s, int64_t n, char *err) {
    PrefixStore *ps = &g->prefixes;
    PrefixEntry *slot = &ps->e[0];
    for (int i = 0; i < PREFIX_SLOTS; i++) {
        PrefixEntry *e = &ps->e[i];
        if (e->n == n && memcmp(e->ids, s->ids, (size_t)n * sizeof *e->ids) == 0) { e->used = ++ps->clock; return 0; }
        if (e->used < slot->used) slot = e;
    }
    const Config *c = &g->model.cfg;
    uint64_t kv_dim = (uint64_t)c->n_kv_heads * c->head_dim, per = (uint64_t)n * kv_dim;
    PrefixEntry e = { malloc((size_t)n * sizeof(int32_t)), n, malloc((size_t)(per * c->n_layers) * sizeof(float)),
                      malloc((size_t)(per * c->n_layers) * sizeof(float)), ++ps->clock };
    if (!e.ids || !e.k || !e.v) { entry_free(&e); return errf(err, "out of memory for the prefix cache"); }
    memcpy(e.ids, s->ids, (size_t)n * sizeof *e.ids);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        memcpy(e.k + l * per, s->key_cache + l * (uint64_t)s->cap * kv_dim, (size_t)per * sizeof(float));
        memcpy(e.v + l * per, s->value_cache + l * (uint64_t)s->cap * kv_dim, (size_t)per * sizeof(float));
    }
    entry_free(slot);
    *slot = e;
    ps->dirty = 1;
    return 0;
}

/* ==== The KV cache file ====
 * Layout (little-endian): magic "GUARDKV1", u32 version 1, u32 n_entries (<= PREFIX_SLOTS),
 * model identity { u64 file size, u32 data crc, u32 n_layers, u32 kv_dim, u32 vocab },
 * then per entry { u32 n, i32 ids[n], f32 k[n_layers][n][kv_dim], f32 v[same] },
 * then u32 crc32 of everything before it. */

#define KV_MAGIC "GUARDKV1"

static void put_identity(Buf *b, const Guard *g) {
    const Config *c = &g->model.cfg;
    buf_u64(b, g->model.file.map.size);
    buf_u32(b, g->model.file.data_crc);
    buf_u32(b, c->n_layers);
    buf_u32(b, c->n_kv_heads * c->head_dim);
    buf_u32(b, c->vocab_size);
}

int guard_cache_save(const Guard *g, const char *path, char *err) {
    const Config *c = &g->model.cfg;
    uint64_t kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
    Buf b = { 0 };
    uint32_t n_entries = 0;
    for (int i = 0; i < PREFIX_SLOTS; i++) n_entries += g->prefixes.e[i].n > 0;
    buf_put(&b, KV_MAGIC, 8);
    buf_u32(&b, 1);
    buf_u32(&b, n_entries);
    put_identity(&b, g);
    for (int i = 0; i < PREFIX_SLOTS; i++) {
        const PrefixEntry *e = &g->prefixes.e[i];
        if (!e->n) continue;
        buf_u32(&b, (uint32_t)e->n);
        for (int64_t k = 0; k < e->n; k++) buf_u32(&b, (uint32_t)e->ids[k]);
        uint64_t floats = (uint64_t)e->n * kv_dim * c->n_layers;
        buf_put(&b, e->k, floats * sizeof(float));
        buf_put(&b, e->v, floats * sizeof(float));
    }
    if (b.oom) { buf_free(&b); return errf(err, "%s: out of memory", path); }
    buf_u32(&b, crc32_update(0, b.p, (size_t)b.len));
    AtomicFile f;
    int rc = afile_open(&f, path, err);
    if (rc == 0) {
        afile_write(&f, b.p, (size_t)b.len);
        rc = afile_commit(&f, err);
    }
    buf_free(&b);
    return rc;
}

int guard_cache_load(Guard *g, const char *path, char *err) {
    MappedFile m;
    char sub[ERRLEN];
    if (map_file(&m, path, sub)) return 1;
    const Config *c = &g->model.cfg;
    uint64_t kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
    Buf id = { 0 };
    put_identity(&id, g);
    Reader r = reader(m.data, m.size);
    const char *why = NULL;
    const uint8_t *magic = rd_bytes(&r, 8);
    uint32_t version = rd_u32(&r), n_entries = rd_u32(&r);
    const uint8_t *ident = rd_bytes(&r, id.len);
    if (r.bad || memcmp(magic, KV_MAGIC, 8) != 0) why = "not a guard KV cache file";
    else if (version != 1) why = "unsupported version";
    else if (m.size < 4 || crc32_update(0, m.data, (size_t)(m.size - 4)) != ld_u32(m.data + m.size - 4)) why = "checksum mismatch (corrupt)";
    else if (id.oom || memcmp(ident, id.p, (size_t)id.len) != 0) why = "made for a different model file (stale)";
    else if (n_entries > PREFIX_SLOTS) why = "too many entries";
    PrefixStore loaded = { 0 };
    for (uint32_t i = 0; i < n_entries && !why; i++) {
        uint32_t n = rd_u32(&r);
        uint64_t floats = (uint64_t)n * kv_dim * c->n_layers;
        const uint8_t *ids = rd_bytes(&r, (uint64_t)n * 4), *k = rd_bytes(&r, floats * 4), *v = rd_bytes(&r, floats * 4);
        if (r.bad || n == 0 || n > c->max_seq_len) { why = "truncated or bad entry"; break; }
        PrefixEntry *e = &loaded.e[i];
        e->n = n;
        e->ids = malloc((size_t)n * 4);
        e->k = malloc((size_t)floats * 4);
        e->v = malloc((size_t)floats * 4);
        if (!e->ids || !e->k || !e->v) { why = "out of memory"; break; }
        for (uint32_t t = 0; t < n && !why; t++) {
            e->ids[t] = (int32_t)ld_u32(ids + 4 * t);
            if (e->ids[t] < 0 || (uint32_t)e->ids[t] >= c->vocab_size) why = "token id out of range";
        }
        memcpy(e->k, k, (size_t)floats * 4);
        memcpy(e->v, v, (size_t)floats * 4);
        e->used = i + 1;
    }
    if (!why && r.pos + 4 != m.size) why = "trailing bytes";
    buf_free(&id);
    unmap_file(&m);
    if (why) {
        for (int i = 0; i < PREFIX_SLOTS; i++) entry_free(&loaded.e[i]);
        errf(err, "%s: ignoring the KV cache: %s", path, why);
        return -1;
    }
    for (int i = 0; i < PREFIX_SLOTS; i++) entry_free(&g->prefixes.e[i]);
    g->prefixes = loaded;
    g->prefixes.clock = n_entries;
    return 0;
}

void guard_cache_default_path(const Guard *g, const char *model_path, char *out, size_t n) {
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && *xdg) {
        const char *base = strrchr(model_path, '/');
        base = base ? base + 1 : model_path;
        snprintf(out, n, "%s/llama-guard/%s.%08x.kv", xdg, base, g->model.file.data_crc);
    } else {
        snprintf(out, n, "%s.kv", model_path);
    }
}

int guard_classify(Guard *g, RunState *s, const PromptFormat *pf, const Conversation *c, float threshold, int64_t ctx_limit,
                   Decision *d, char *err) {
    const Model *m = &g->model;
    memset(d, 0, sizeof *d);
    Prompt p;
    if (template_render(pf ? pf : &g->pf, c, &p, err)) return -1;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    float *logits = malloc(m->cfg.vocab_size * sizeof(float));
    int rc = logits ? guard_prompt_ids(g, &p, &ids, &n, &cap, err) : errf(err, "out of memory");
    prompt_free(&p);
    d->prompt_tokens = (int64_t)n;
    /* decision prefix joins the prompt for the prefill */
    for (int i = 0; rc == 0 && i < g->n_decision_prefix; i++) {
        if (n == cap) {
            int32_t *q = realloc(ids, (cap = cap * 2 + 8) * sizeof *q);
            if (!q) { rc = errf(err, "out of memory"); break; }
            ids = q;
        }
        ids[n++] = g->decision_prefix[i];
    }
    int64_t limit = ctx_limit > 0 && ctx_limit < (int64_t)m->cfg.max_seq_len ? ctx_limit : (int64_t)m->cfg.max_seq_len;
    if (rc == 0 && (int64_t)n + 1 > limit)
        rc = errf(err, "the conversation needs %lld tokens but the context limit is %lld", (long long)n + 1, (long long)limit);
    if (rc == 0) {
        double t0 = now_sec();
        int64_t need = (int64_t)n + DECODE_CAP < limit ? (int64_t)n + DECODE_CAP : limit;
        int64_t policy = g->no_prefix_store ? 0 : policy_prefix(g, pf ? pf : &g->pf, c, err);
        rc = policy < 0 ? -1 : state_reserve(s, m, need, err);
        if (rc == 0) {
            d->reused_tokens = reuse_prefix(g, s, ids, (int64_t)n);
            rc = model_forward(m, s, ids + d->reused_tokens, (int64_t)n - d->reused_tokens, logits, err);
        }
        if (rc == 0 && policy > 0 && policy < (int64_t)n) rc = remember_prefix(g, s, policy, err);
        d->t_prefill = now_sec() - t0;
    }
    if (rc == 0) {
        score(g, logits, m->cfg.vocab_size, d);
        d->unsafe = d->p_unsafe >= threshold;
    }
    if (rc == 0 && d->unsafe) {
        /* The label is "unsafe" by our threshold even if the argmax disagrees: name the categories
         * the model gives after it. */
        double t0 = now_sec();
        Buf text = { 0 };
        int32_t tok = g->unsafe_ids[0];
        for (int i = 0; i < g->n_label_ids; i++)
            if (logits[g->unsafe_ids[i]] > logits[tok]) tok = g->unsafe_ids[i];
        for (int step = 0; rc == 0 && step < DECODE_CAP && !is_stop(g, tok); step++) {
            tok_decode(g->tok, tok, &text);
            if (s->n_cached + 1 > limit) break;
            rc = model_forward(m, s, &tok, 1, logits, err);
            if (rc) break;
            int32_t best = 0;
            for (uint32_t i = 1; i < m->cfg.vocab_size; i++) if (logits[i] > logits[best]) best = (int32_t)i;
            tok = best;
        }
        size_t k = text.len < sizeof d->generated - 1 ? (size_t)text.len : sizeof d->generated - 1;
        if (k) memcpy(d->generated, text.p, k);
        d->generated[k] = 0;
        template_parse_verdict(pf ? pf : &g->pf, d->generated, k, &d->verdict);
        buf_free(&text);
        d->t_decode = now_sec() - t0;
    }
    free(ids);
    free(logits);
    return rc;
}

/* ==== Evaluation metrics ==== */

typedef struct {
    float score;
    uint8_t label;
} Scored;

static int by_score_desc(const void *a, const void *b) {
    float x = ((const Scored *)a)->score, y = ((const Scored *)b)->score;
    return x > y ? -1 : x < y;
}

static double ratio(int64_t a, int64_t b) { return b ? (double)a / (double)b : NAN; }

void eval_metrics(const float *scores, const uint8_t *labels, int64_t n, float threshold, EvalMetrics *m) {
    memset(m, 0, sizeof *m);
    m->n = n;
    int64_t pos = 0;
    for (int64_t i = 0; i < n; i++) {
        int pred = scores[i] >= threshold;
        pos += labels[i];
        if (labels[i]) pred ? m->tp++ : m->fn++;
        else pred ? m->fp++ : m->tn++;
    }
    m->precision = ratio(m->tp, m->tp + m->fp);
    m->recall = ratio(m->tp, pos);
    m->f1 = m->tp ? 2.0 * m->precision * m->recall / (m->precision + m->recall) : (pos || m->fp ? 0.0 : NAN);
    m->fpr = ratio(m->fp, m->fp + m->tn);
    m->auprc = NAN;
    Scored *v = malloc((size_t)n * sizeof *v + 1);
    if (!v || pos == 0) { free(v); return; }
    for (int64_t i = 0; i < n; i++) v[i] = (Scored){ .score = scores[i], .label = labels[i] };
    qsort(v, (size_t)n, sizeof *v, by_score_desc);
    double ap = 0, prev_recall = 0;
    int64_t tp = 0, fp = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        for (; j < n && v[j].score == v[i].score; j++) v[j].label ? tp++ : fp++;
        double r = (double)tp / (double)pos;
        ap += (r - prev_recall) * ((double)tp / (double)(tp + fp));
        prev_recall = r;
        i = j;
    }
    m->auprc = ap;
    free(v);
}
