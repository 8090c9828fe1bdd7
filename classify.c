/* classify.c: from a conversation to Llama Guard's verdict, as Meta scores it (SCORING.md).
 *
 * 1. Render the prompt (template.c) and tokenize it span by span: structural special tokens by
 *    id, every text span (user content included) as plain text, so a message can never forge
 *    prompt structure.
 * 2. Prefill. Llama Guard 3's HF prompt ends at the assistant header and the model's first
 *    token is "\n\n" (271): we append it, as third-party scorers do, and read the next position.
 *    Llama Guard 1/2 read right after "[/INST]".
 * 3. Softmax over the full vocabulary at that position. Meta's score: P(unsafe) if the argmax is
 *    the unsafe token, else 1 - P(safe) (llama-recipes parse_logprobs). Unsafe iff
 *    score >= threshold.
 * 4. Only when unsafe: feed the unsafe token and decode greedily until a stop token or
 *    DECODE_CAP, then parse the category codes the model names.
 * Label tokens are looked up by encoding the label text with the file's own tokenizer, never
 * hard-coded. Llama Guard 2 is the one version whose emitted spelling is unconfirmed ("safe"
 * 19193 vs " safe" 6220, PROMPTS.md): it accepts both, summing their probabilities.
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

void guard_close(Guard *g) {
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
        /* Reuse the longest cached prefix; at least one token must run to produce logits. */
        int64_t keep = 0;
        while (keep < s->n_cached && keep < (int64_t)n - 1 && s->ids[keep] == ids[keep]) keep++;
        s->n_cached = keep;
        d->reused_tokens = keep;
        double t0 = now_sec();
        int64_t need = (int64_t)n + DECODE_CAP < limit ? (int64_t)n + DECODE_CAP : limit;
        rc = state_reserve(s, m, need, err);
        if (rc == 0) rc = model_forward(m, s, ids + keep, (int64_t)n - keep, logits, err);
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
