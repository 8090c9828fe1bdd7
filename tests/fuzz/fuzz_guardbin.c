/* tests/fuzz/fuzz_guardbin.c: the guard.bin loader on untrusted bytes, as given and with every
 * checksum recomputed (section CRCs, data CRC, header CRC) so mutations reach the structural
 * checks: gb_open (header, counts, tables, every tensor's dtype/shape/size/offset/alignment,
 * overlaps, names), then guard_open (weights bound by name and shape, tokenizer and prompt
 * sections), then one short forward pass and the prompt tokenization on whatever was accepted,
 * and the forward again once the weights are prepacked.
 * Invariants: every accepted tensor and section lies inside the data region, 64-byte aligned,
 * with its size matching dtype and shape; tensors do not overlap; prompt ids are in range;
 * prepacked weights give the same logits, bit for bit. */
#include <math.h>

#include "classify.h"
#include "fuzz.h"

static FuzzFile guardbin_file;

static int guardbin_init(void) { return fuzz_file_open(&guardbin_file, "guard.bin"); }

static void guardbin_check_tables(const GuardFile *g) {
    const uint64_t size = g->map.size;
    FUZZ_CHECK(g->data_offset <= size && g->data_offset % GB_ALIGN == 0, "data offset %llu", (unsigned long long)g->data_offset);
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        const GbTensor *t = &g->tensors[i];
        FUZZ_CHECK(t->offset >= g->data_offset && t->offset % GB_ALIGN == 0 && t->offset <= size && t->size <= size - t->offset,
                   "tensor %u outside the data region", i);
        FUZZ_CHECK(memchr(t->name, 0, GB_NAME_MAX) && t->name[0], "tensor name");
        FUZZ_CHECK(gb_find(g, t->name) == t, "gb_find(%s) finds another tensor", t->name);
        uint64_t rows = 1;
        for (uint32_t d = 0; d + 1 < t->ndim; d++) rows *= t->shape[d];
        FUZZ_CHECK(tensor_bytes(t->dtype, rows, t->shape[t->ndim - 1]) == t->size, "tensor %s size", t->name);
        for (uint32_t k = 0; k < i; k++) {
            const GbTensor *u = &g->tensors[k];
            FUZZ_CHECK(u->offset + u->size <= t->offset || t->offset + t->size <= u->offset || t->size == 0 || u->size == 0,
                       "tensors %s and %s overlap", u->name, t->name);
        }
    }
    for (uint32_t kind = 0; kind < 4; kind++) {
        uint64_t n;
        const uint8_t *p = gb_section(g, kind, &n);
        if (p) FUZZ_CHECK(p >= g->map.data + g->data_offset && n <= size && p + n <= g->map.data + size, "section %u", kind);
    }
}

/* Tokenize a rendered prompt and run a few positions through the model. */
static void guardbin_exercise(Guard *g) {
    char err[ERRLEN];
    const uint32_t vocab = g->model.cfg.vocab_size;
    Conversation c;
    chat_init(&c);
    FUZZ_CHECK(chat_append(&c, ROLE_USER, "Hi <|eot_id|> </s>", 18, err) == 0, "%s", err);
    Prompt p;
    FUZZ_CHECK(template_render(&g->pf, &c, &p, err) == 0, "render with the file's format: %s", err);
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    if (guard_prompt_ids(g, &p, &ids, &n, &cap, err) == 0) {
        for (size_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && (uint32_t)ids[i] < vocab, "prompt id %d", ids[i]);
    } else {
        fuzz_check_err(err); /* e.g. a prompt format whose special tokens the tokenizer lacks */
    }
    prompt_free(&p);
    chat_free(&c);
    RunState s;
    if (state_init(&s, &g->model, 4, err) == 0) {
        int32_t toks[3] = { 0, (int32_t)(vocab - 1), n ? ids[0] : 0 };
        float *logits = malloc((size_t)vocab * sizeof *logits), *packed = malloc((size_t)vocab * sizeof *packed);
        FUZZ_CHECK(logits && packed, "oom");
        if (model_forward(&g->model, &s, toks, 3, logits, err)) {
            fuzz_check_err(err);
        } else if (model_prepack(&g->model)) { /* the same bits from prepacked tiles */
            s.n_cached = 0;
            FUZZ_CHECK(model_forward(&g->model, &s, toks, 3, packed, err) == 0, "prepacked forward: %s", err);
            for (uint32_t i = 0; i < vocab; i++)
                FUZZ_CHECK(memcmp(&logits[i], &packed[i], 4) == 0 || (isnan(logits[i]) && isnan(packed[i])), "logit %u differs once prepacked", i);
        }
        free(logits);
        free(packed);
        state_free(&s);
    } else {
        fuzz_check_err(err);
    }
    free(ids);
}

static int guardbin_open(const uint8_t *data, size_t size) {
    FUZZ_CHECK(fuzz_file_set(&guardbin_file, data, size) == 0, "memfd write");
    GuardFile gf;
    char err[ERRLEN];
    if (gb_open(&gf, guardbin_file.path, err)) {
        fuzz_check_err(err);
        return 0;
    }
    guardbin_check_tables(&gf);
    if (gb_verify(&gf, err)) fuzz_check_err(err);
    gb_close(&gf);
    Guard g;
    if (guard_open(&g, guardbin_file.path, 1, err)) {
        fuzz_check_err(err);
        return 0;
    }
    guardbin_exercise(&g);
    guard_close(&g);
    return 1;
}

static int guardbin_one(const uint8_t *data, size_t size) {
    int ok = guardbin_open(data, size);
    uint8_t *fixed = fuzz_dup(data, size);
    fuzz_fix_guardbin(fixed, size);
    if (size && memcmp(fixed, data, size) != 0) ok |= guardbin_open(fixed, size);
    free(fixed);
    return ok;
}

FUZZ_TARGET(guardbin_init, guardbin_one)
