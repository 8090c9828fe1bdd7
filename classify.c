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
 *    score >= threshold. NaN or +Inf there (or while decoding) is an error, never a verdict.
 * 4. Only when unsafe: feed the unsafe token and decode greedily until a stop token or
 *    DECODE_CAP, then parse the category codes the model names.
 * The prefix KV cache file (persisting the policy prefixes across runs) and the one-shot weight
 * verification stamp live here too; their trust rules are util.h's state files.
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

/* A guard fails closed (style.md lesson 17): NaN or +inf in the logits means broken weights (or a
 * forged prefix cache), never a verdict. -inf is a legitimate logit (a pruned output head masks
 * the ids outside it), so only NaN/+inf, or nothing finite at all, is corruption. */
static const char *corrupt_msg = "non-finite logits (NaN/Inf) at the decision position: the weights are likely corrupt; "
                                 "run ./run MODEL --verify (and try --no-cache)";

/* The argmax of logits, or -1 if any logit is NaN/+inf or none is finite. */
static int32_t finite_argmax(const float *logits, uint32_t vocab) {
    int32_t best = -1;
    for (uint32_t i = 0; i < vocab; i++) {
        float x = logits[i];
        if (isnan(x) || x == INFINITY) return -1;
        if (x != -INFINITY && (best < 0 || x > logits[best])) best = (int32_t)i;
    }
    return best;
}

/* Probabilities at the decision position: softmax over all logits (f64 sum of f32 exps). */
static int score(const Guard *g, const float *logits, uint32_t vocab, Decision *d, char *err) {
    int32_t best = finite_argmax(logits, vocab);
    if (best < 0) return errf(err, "%s", corrupt_msg);
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
    /* belt and braces: what reaches a verdict or JSON is a probability */
    if (!(d->p_unsafe >= 0 && d->p_unsafe <= 1 && d->p_safe >= 0 && d->p_safe <= 1 && d->p_unsafe_token >= 0 && d->p_unsafe_token <= 1))
        return errf(err, "%s", corrupt_msg);
    return 0;
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
 * Layout (little-endian), version 2:
 *   magic "GUARDKV1", u32 version 2, u32 n_entries (<= PREFIX_SLOTS),
 *   model identity { u64 file size, u32 data crc, u32 crc32 of bytes [0, data_offset) (the header
 *     and tables: every header field), u32 crc32 of the tokenizer section, u32 crc32 of the
 *     prompt section, u32 n_layers, u32 kv_dim, u32 vocab },
 *   u32 n[PREFIX_SLOTS] (positions per entry; 0 past n_entries), u64 the whole file's size,
 *   then per entry { i32 ids[n], f32 k[n_layers][n][kv_dim], f32 v[same] },
 *   then u32 crc32 of everything before it.
 * The header states every size, so a file is checked against it (and against this model) before
 * anything past the header is read or mapped. A CRC only catches accidents: the defence against
 * a forged file is that it is read only from a directory and file no one else can write
 * (util.h state_open, state_dir), and a forged NaN still cannot give a verdict (score()). */

#define KV_MAGIC "GUARDKV1"
#define KV_VERSION 2
#define KV_IDENT 36
#define KV_HEADER (16 + KV_IDENT + 4 * PREFIX_SLOTS + 8)

static uint32_t section_crc(const Model *m, uint32_t kind) {
    uint64_t n;
    const uint8_t *p = gb_section(&m->file, kind, &n);
    return p ? crc32_update(0, p, (size_t)n) : 0;
}

static void put_identity(Buf *b, const Model *m) {
    const Config *c = &m->cfg;
    buf_u64(b, m->file.map.size);
    buf_u32(b, m->file.data_crc);
    buf_u32(b, crc32_update(0, m->file.map.data, (size_t)m->file.data_offset));
    buf_u32(b, section_crc(m, SEC_TOKENIZER));
    buf_u32(b, section_crc(m, SEC_PROMPT));
    buf_u32(b, c->n_layers);
    buf_u32(b, c->n_kv_heads * c->head_dim);
    buf_u32(b, c->vocab_size);
}

/* Bytes of one entry of n positions. */
static uint64_t kv_entry_bytes(const Config *c, uint64_t n) { return n * (4 + 8 * (uint64_t)c->n_kv_heads * c->head_dim * c->n_layers); }

/* Check the fixed header h[KV_HEADER] against this model; NULL if it matches, else why not.
 * n[] gets the entry lengths, *size the file size the header implies. */
static const char *kv_header(const Model *m, const uint8_t *h, uint32_t *n, uint32_t *n_entries, uint64_t *size) {
    const Config *c = &m->cfg;
    Buf id = { 0 };
    put_identity(&id, m);
    const char *why = NULL;
    *n_entries = ld_u32(h + 12);
    *size = KV_HEADER + 4;
    if (memcmp(h, KV_MAGIC, 8) != 0) why = "not a guard KV cache file";
    else if (ld_u32(h + 8) != KV_VERSION) why = "unsupported version (written by another build)";
    else if (id.oom || id.len != KV_IDENT || memcmp(h + 16, id.p, KV_IDENT) != 0) why = "made for a different model file (stale)";
    else if (*n_entries > PREFIX_SLOTS) why = "too many entries";
    for (uint32_t i = 0; i < PREFIX_SLOTS && !why; i++) {
        n[i] = ld_u32(h + 16 + KV_IDENT + 4 * i);
        if (i < *n_entries ? n[i] == 0 || n[i] > c->max_seq_len : n[i] != 0) why = "bad entry length";
        *size += kv_entry_bytes(c, n[i]);
    }
    if (!why && ld_u64(h + 16 + KV_IDENT + 4 * PREFIX_SLOTS) != *size) why = "its sizes disagree";
    buf_free(&id);
    return why;
}

static void store_free(PrefixStore *ps) {
    for (int i = 0; i < PREFIX_SLOTS; i++) entry_free(&ps->e[i]);
}

int guard_cache_parse(Guard *g, const uint8_t *data, uint64_t size, char *err) {
    const Config *c = &g->model.cfg;
    uint64_t kv_dim = (uint64_t)c->n_kv_heads * c->head_dim, want = 0;
    uint32_t n[PREFIX_SLOTS] = { 0 }, n_entries = 0;
    const char *why = size < KV_HEADER + 4 ? "truncated" : kv_header(&g->model, data, n, &n_entries, &want);
    if (!why && want != size) why = "its size differs from what its header states (truncated or padded)";
    else if (!why && crc32_update(0, data, (size_t)(size - 4)) != ld_u32(data + size - 4)) why = "checksum mismatch (corrupt)";
    PrefixStore loaded = { 0 };
    const uint8_t *p = data + KV_HEADER;
    for (uint32_t i = 0; i < n_entries && !why; i++) {
        uint64_t floats = (uint64_t)n[i] * kv_dim * c->n_layers;
        PrefixEntry *e = &loaded.e[i];
        e->n = n[i];
        e->ids = malloc((size_t)n[i] * 4);
        e->k = malloc((size_t)floats * 4);
        e->v = malloc((size_t)floats * 4);
        if (!e->ids || !e->k || !e->v) { why = "out of memory"; break; }
        for (uint32_t t = 0; t < n[i] && !why; t++) {
            e->ids[t] = (int32_t)ld_u32(p + 4 * t);
            if (e->ids[t] < 0 || (uint32_t)e->ids[t] >= c->vocab_size) why = "token id out of range";
        }
        p += 4 * (uint64_t)n[i];
        memcpy(e->k, p, (size_t)floats * 4);
        memcpy(e->v, p + floats * 4, (size_t)floats * 4);
        p += 8 * floats;
        for (uint64_t k = 0; k < floats && !why; k++)
            if (!isfinite(e->k[k]) || !isfinite(e->v[k])) why = "non-finite keys or values (corrupt or forged)";
        e->used = i + 1;
    }
    if (why) {
        store_free(&loaded);
        return errf(err, "ignoring the KV cache: %s", why);
    }
    store_free(&g->prefixes);
    g->prefixes = loaded;
    g->prefixes.clock = n_entries;
    return 0;
}

int guard_cache_load(Guard *g, const char *path, char *err) {
    StateFile f;
    char sub[ERRLEN];
    int r = state_open(&f, path, sub);
    if (r == 1) return 1;
    if (r < 0) return errf(err, "ignoring the KV cache: %s", sub);
    uint8_t h[KV_HEADER];
    uint32_t n[PREFIX_SLOTS], n_entries;
    uint64_t want = 0, max = g->cache_max_bytes ? g->cache_max_bytes : CACHE_MAX_DEFAULT;
    const char *why = f.size < KV_HEADER + 4 || state_pread(&f, 0, h, KV_HEADER) ? "truncated" : kv_header(&g->model, h, n, &n_entries, &want);
    if (!why && want != f.size) why = "its size differs from what its header states (truncated or padded)";
    else if (!why && f.size > max) why = "larger than the cache size limit (--cache-max)";
    MappedFile m = { 0 };
    if (!why && state_map(&f, &m, sub)) why = "cannot be mapped";
    if (!why) state_touch(&f); /* recently used: eviction goes by modification time */
    state_close(&f);
    if (why) return errf(err, "%s: ignoring the KV cache: %s", path, why);
    r = guard_cache_parse(g, m.data, m.size, sub);
    unmap_file(&m);
    return r ? errf(err, "%s: %s", path, sub) : 0;
}

/* The per-user cache directory (XDG base-directory spec): $XDG_CACHE_HOME/llama-guard when that
 * is an absolute path, else $HOME/.cache/llama-guard. */
static int cache_dir(char *out, size_t n, char *err) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int k = xdg && xdg[0] == '/' ? snprintf(out, n, "%s/llama-guard", xdg)
          : home && home[0] == '/' ? snprintf(out, n, "%s/.cache/llama-guard", home) : -1;
    if (k < 0) return errf(err, "no cache directory ($XDG_CACHE_HOME and $HOME are unset)");
    if ((size_t)k >= n) return errf(err, "cache directory path too long");
    return 0;
}

int guard_cache_locate(const Model *m, const char *model_path, const char *chosen, char *out, size_t n, char *err) {
    char dir[4096];
    if (chosen) {
        if ((size_t)snprintf(out, n, "%s", chosen) >= n) return errf(err, "--cache path too long");
        const char *slash = strrchr(chosen, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - chosen) + (slash == chosen) : 1, slash ? chosen : ".");
        return state_dir(dir, 0, err);
    }
    if (cache_dir(dir, sizeof dir, err) || state_dir(dir, 1, err)) return -1;
    const char *base = strrchr(model_path, '/');
    base = base ? base + 1 : model_path;
    if ((size_t)snprintf(out, n, "%s/%s.%08x.kv", dir, base, m->file.data_crc) >= n) return errf(err, "cache path too long");
    return 0;
}

void guard_cache_default_path(const Guard *g, const char *model_path, char *out, size_t n) {
    char err[ERRLEN];
    if (n && guard_cache_locate(&g->model, model_path, NULL, out, n, err)) out[0] = 0;
}

int guard_cache_save(const Guard *g, const char *path, char *err) {
    if (!path[0]) return errf(err, "no cache location (no trusted cache directory)");
    const Config *c = &g->model.cfg;
    uint64_t kv_dim = (uint64_t)c->n_kv_heads * c->head_dim, max = g->cache_max_bytes ? g->cache_max_bytes : CACHE_MAX_DEFAULT;
    /* Entries most recently used first while the file stays within the limit. */
    int keep[PREFIX_SLOTS] = { 0 };
    uint64_t size = KV_HEADER + 4;
    for (int round = 0; round < PREFIX_SLOTS; round++) {
        int best = -1;
        for (int i = 0; i < PREFIX_SLOTS; i++)
            if (!keep[i] && g->prefixes.e[i].n && (best < 0 || g->prefixes.e[i].used > g->prefixes.e[best].used)) best = i;
        if (best < 0 || size + kv_entry_bytes(c, (uint64_t)g->prefixes.e[best].n) > max) break;
        keep[best] = 1;
        size += kv_entry_bytes(c, (uint64_t)g->prefixes.e[best].n);
    }
    if (size == KV_HEADER + 4) return errf(err, "%s: not written: one prefix entry is larger than the cache size limit (--cache-max)", path);
    /* Never replace what is not a cache of ours (a notes file, the model, a device). */
    StateFile f;
    char sub[ERRLEN];
    int r = state_open(&f, path, sub);
    if (r < 0) return errf(err, "not replacing %s", sub);
    if (r == 0) {
        uint8_t magic[8];
        int ours = f.size >= 8 && state_pread(&f, 0, magic, 8) == 0 && memcmp(magic, KV_MAGIC, 8) == 0;
        state_close(&f);
        if (!ours) return errf(err, "%s: not a guard KV cache file, left untouched (choose another --cache)", path);
    }
    Buf b = { 0 };
    uint32_t n_entries = 0;
    for (int i = 0; i < PREFIX_SLOTS; i++) n_entries += keep[i];
    buf_put(&b, KV_MAGIC, 8);
    buf_u32(&b, KV_VERSION);
    buf_u32(&b, n_entries);
    put_identity(&b, &g->model);
    for (int i = 0; i < PREFIX_SLOTS; i++)
        if (keep[i]) buf_u32(&b, (uint32_t)g->prefixes.e[i].n);
    for (uint32_t i = n_entries; i < PREFIX_SLOTS; i++) buf_u32(&b, 0);
    buf_u64(&b, size);
    for (int i = 0; i < PREFIX_SLOTS; i++) {
        const PrefixEntry *e = &g->prefixes.e[i];
        if (!keep[i]) continue;
        for (int64_t k = 0; k < e->n; k++) buf_u32(&b, (uint32_t)e->ids[k]);
        uint64_t floats = (uint64_t)e->n * kv_dim * c->n_layers;
        buf_put(&b, e->k, floats * sizeof(float));
        buf_put(&b, e->v, floats * sizeof(float));
    }
    if (b.oom) { buf_free(&b); return errf(err, "%s: out of memory", path); }
    buf_u32(&b, crc32_update(0, b.p, (size_t)b.len));
    AtomicFile a;
    int rc = afile_create(&a, path, 0600, err);
    if (rc == 0) {
        afile_write(&a, b.p, (size_t)b.len);
        rc = afile_commit(&a, err);
    }
    buf_free(&b);
    /* the per-user directory holds only our files: bound its total (oldest first) */
    char dir[4096];
    size_t dl = strlen(path);
    while (dl && path[dl - 1] != '/') dl--;
    if (rc == 0 && dl > 1 && cache_dir(dir, sizeof dir, sub) == 0 && strlen(dir) == dl - 1 && memcmp(dir, path, dl - 1) == 0)
        state_evict(dir, ".kv", max, path);
    return rc;
}

int guard_verify_once(Guard *g, int *checked, char *err) {
    const MappedFile *mf = &g->model.file.map;
    char dir[4096], stamp[4200], want[160], sub[ERRLEN];
    int n = snprintf(want, sizeof want, "guard.bin verified: size %llu mtime_ns %lld data_crc %08x\n", (unsigned long long)mf->size,
                     (long long)mf->mtime_ns, g->model.file.data_crc);
    int have_dir = cache_dir(dir, sizeof dir, sub) == 0 && state_dir(dir, 1, sub) == 0;
    if (have_dir) {
        snprintf(stamp, sizeof stamp, "%s/verified.%llx.%llx", dir, (unsigned long long)mf->dev, (unsigned long long)mf->ino);
        StateFile f;
        char got[160];
        if (state_open(&f, stamp, sub) == 0) {
            int ok = f.size == (uint64_t)n && state_pread(&f, 0, got, (size_t)n) == 0 && memcmp(got, want, (size_t)n) == 0;
            state_close(&f);
            if (ok) { *checked = 0; return 0; }
        }
    }
    *checked = 1;
    if (gb_verify(&g->model.file, err)) return -1;
    AtomicFile a;
    if (have_dir && afile_create(&a, stamp, 0600, sub) == 0) { /* a stamp not written means verifying again next time */
        afile_write(&a, want, (size_t)n);
        afile_commit(&a, sub);
    }
    return 0;
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
    if (rc == 0 && (rc = score(g, logits, m->cfg.vocab_size, d, err)) == 0) d->unsafe = d->p_unsafe >= threshold;
    if (rc == 0 && d->unsafe) {
        /* The label is "unsafe" by our threshold even if the argmax disagrees: name the categories
         * the model gives after it. */
        double t0 = now_sec();
        Buf text = { 0 };
        int32_t tok = g->unsafe_ids[0];
        for (int i = 0; i < g->n_label_ids; i++)
            if (logits[g->unsafe_ids[i]] > logits[tok]) tok = g->unsafe_ids[i];
        for (int step = 0; rc == 0 && step < DECODE_CAP && tok >= 0 && !is_stop(g, tok); step++) {
            tok_decode(g->tok, tok, &text);
            if (s->n_cached + 1 > limit) break;
            rc = model_forward(m, s, &tok, 1, logits, err);
            if (rc) break;
            if ((tok = finite_argmax(logits, m->cfg.vocab_size)) < 0) rc = errf(err, "%s", corrupt_msg);
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
        do v[j].label ? tp++ : fp++; /* at least one step: a NaN score (never equal to itself) cannot stall the loop */
        while (++j < n && v[j].score == v[i].score);
        double r = (double)tp / (double)pos;
        ap += (r - prev_recall) * ((double)tp / (double)(tp + fp));
        prev_recall = r;
        i = j;
    }
    m->auprc = ap;
    free(v);
}
