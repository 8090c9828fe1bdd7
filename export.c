/* export.c: turn a checkpoint into one guard.bin.
 *
 *   ./export CHECKPOINT OUT.bin [--dtype f32|bf16|f16|q8|q4] [--guard lg1|lg2|lg3-8b|lg3-1b] [--force] [--rope-factor F]
 *
 * An importer (import/) reads the checkpoint into a Source: Config, tensors under their
 * Hugging Face names, tokenizer, chat template. This file decides the Llama Guard version,
 * checks that every tensor the forward pass needs is present with the right shape (and that
 * nothing unexpected is), converts each tensor to the requested dtype one row at a time, and
 * writes header, tokenizer section, prompt section and tensors to a temporary file that is
 * renamed only when complete.
 * Exit status: 0 ok, 2 any error (one line on stderr naming the file and the problem).
 */
#include "guard.h"
#include "import/import.h"
#include "template.h"
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== Tensor plan: what the forward pass needs, in file order ==== */

typedef struct {
    const SrcTensor **src; /* [n_tensors], parallel to the writer's table */
    const GbWriter *w;
} Job;

/* Each output tensor is one source tensor in a new dtype, converted a row at a time. */
static int produce(void *ctx, uint32_t i, uint8_t *dst, uint64_t size, char *err) {
    const Job *job = ctx;
    const GbTensor *t = &job->w->tensors[i];
    const SrcTensor *s = job->src[i];
    uint64_t cols = t->shape[t->ndim - 1], rb = dtype_row_bytes(t->dtype, cols), rows = size / rb;
    /* GGUF Q8_0 -> q8 and Q4_0 -> q4 store identical blocks: copy them (rows un-permuted) bit for
     * bit rather than dequantize and requantize, which could move a scale by one ulp */
    if (src_raw_row(s, t->dtype, 0)) {
        for (uint64_t r = 0; r < rows; r++) memcpy(dst + r * rb, src_raw_row(s, t->dtype, r), (size_t)rb);
        return 0;
    }
    float *row = malloc((size_t)cols * sizeof(float));
    if (!row) return errf(err, "out of memory converting '%s'", t->name);
    int rc = 0;
    for (uint64_t r = 0; r < rows && rc == 0; r++) {
        rc = src_row_f32(s, r, row, err);
        if (rc == 0) quantize_row(t->dtype, row, dst + r * rb, cols);
    }
    free(row);
    return rc;
}

static int add_tensor(GbWriter *w, const Source *src, const SrcTensor **plan, const char *name, uint64_t rows, uint64_t cols,
                      uint32_t dtype, char *err) {
    const SrcTensor *s = source_find(src, name);
    if (!s) return errf(err, "%s: checkpoint has no tensor '%s'", src->origin, name);
    if (src_rows(s) != rows || src_cols(s) != cols || (rows > 1 && s->ndim != 2))
        return errf(err, "%s: tensor '%s' has the wrong shape for this config (expected [%llu, %llu])", s->file, name,
                    (unsigned long long)rows, (unsigned long long)cols);
    /* A row length the block format cannot hold (e.g. Llama 2's ffn 172 under q8) keeps f32. */
    if (dtype_row_bytes(dtype, cols) == 0) dtype = DT_F32;
    plan[w->n_tensors] = s;
    uint64_t shape[2] = { rows, cols };
    return rows == 1 ? gbw_add_tensor(w, name, dtype, 1, &shape[1], err) : gbw_add_tensor(w, name, dtype, 2, shape, err);
}

static int plan_tensors(GbWriter *w, const Source *src, const SrcTensor **plan, uint32_t dtype, char *err) {
    const Config *c = &src->cfg;
    uint64_t q_dim = (uint64_t)c->n_heads * c->head_dim, kv_dim = (uint64_t)c->n_kv_heads * c->head_dim;
    if (add_tensor(w, src, plan, "model.embed_tokens.weight", c->vocab_size, c->dim, dtype, err) ||
        add_tensor(w, src, plan, "model.norm.weight", 1, c->dim, DT_F32, err) ||
        (!c->tied && add_tensor(w, src, plan, "lm_head.weight", c->vocab_size, c->dim, dtype, err)))
        return -1;
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const struct { const char *suffix; uint64_t rows, cols; int norm; } parts[] = {
            { "input_layernorm", 1, c->dim, 1 },          { "self_attn.q_proj", q_dim, c->dim, 0 },
            { "self_attn.k_proj", kv_dim, c->dim, 0 },     { "self_attn.v_proj", kv_dim, c->dim, 0 },
            { "self_attn.o_proj", c->dim, q_dim, 0 },      { "post_attention_layernorm", 1, c->dim, 1 },
            { "mlp.gate_proj", c->hidden_dim, c->dim, 0 }, { "mlp.up_proj", c->hidden_dim, c->dim, 0 },
            { "mlp.down_proj", c->dim, c->hidden_dim, 0 },
        };
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
            char name[GB_NAME_MAX];
            snprintf(name, sizeof name, "model.layers.%u.%s.weight", l, parts[k].suffix);
            if (add_tensor(w, src, plan, name, parts[k].rows, parts[k].cols, parts[k].norm ? DT_F32 : dtype, err)) return -1;
        }
    }
    /* Anything left over means this is not the plain Llama the config claims (biases, extra
     * heads, adapters): refuse rather than silently drop weights. A tied checkpoint may still
     * carry a copy of lm_head (HF ties it to the embedding, and so do we). */
    for (int i = 0; i < src->n; i++) {
        const SrcTensor *t = &src->t[i];
        int used = (c->tied && strcmp(t->name, "lm_head.weight") == 0) || strstr(t->name, "rotary_emb.inv_freq");
        for (uint32_t k = 0; k < w->n_tensors && !used; k++) used = plan[k] == t;
        if (!used) return errf(err, "%s: unexpected tensor '%s' (not a plain Llama checkpoint?)", t->file, t->name);
    }
    return 0;
}

/* ==== Prompt format ==== */

/* The guard version (from --guard or the chat template), and a check that the tokenizer has
 * every special token the prompt uses, so a mismatched tokenizer fails here, not at run time. */
static int plan_prompt(const Source *src, const char *guard_arg, int force, PromptFormat *pf, char *err) {
    int version, detected;
    char sub[ERRLEN];
    if (guard_arg) {
        if (template_parse_guard(guard_arg, &version, err)) return -1;
        /* --guard names what the checkpoint cannot say; it may not overrule what it does say */
        int spm = tok_type(src->tok) == TOK_SPM_BPE, llama3_rope = src->cfg.rope_type == ROPE_LLAMA3;
        sub[0] = 0;
        if (src->chat_template && template_detect(src->chat_template, strlen(src->chat_template), &detected, sub) == 0 && detected != version)
            snprintf(sub, sizeof sub, "its chat template is %s's", template_guard_title(detected));
        else if ((version == GUARD_LG1) != spm)
            snprintf(sub, sizeof sub, "its tokenizer is %s", spm ? "SentencePiece (Llama 2)" : "Llama 3 BPE");
        else if ((version == GUARD_LG3_8B || version == GUARD_LG3_1B) != llama3_rope)
            snprintf(sub, sizeof sub, "its RoPE is %s", llama3_rope ? "Llama 3.1-scaled" : "unscaled");
        else
            sub[0] = 0;
        if (sub[0] && !force)
            return errf(err, "%s: --guard %s contradicts the checkpoint (%s); add --force to export it anyway", src->origin, guard_arg, sub);
    } else if (!src->chat_template) {
        return errf(err, "%s: no chat template in the checkpoint; say which model it is with --guard lg1|lg2|lg3-8b|lg3-1b", src->origin);
    } else if (template_detect(src->chat_template, strlen(src->chat_template), &version, err)) {
        char tmp[ERRLEN];
        memcpy(tmp, err, ERRLEN);
        return errf(err, "%s: %s", src->origin, tmp);
    }
    if (template_default(pf, version, err)) return -1;
    Conversation conv;
    Prompt p;
    chat_init(&conv);
    int rc = chat_append(&conv, ROLE_USER, "x", 1, err);
    if (rc == 0) rc = template_render(pf, &conv, &p, err);
    for (int i = 0; rc == 0 && i < p.n; i++) {
        if (!p.spans[i].special) continue;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)p.spans[i].len, p.spans[i].text);
        if (tok_special_id(src->tok, name) < 0)
            rc = errf(err, "%s: the tokenizer has no special token %s, which the %s prompt needs (wrong --guard?)", src->origin, name,
                      template_guard_title(version));
    }
    if (rc == 0) prompt_free(&p);
    chat_free(&conv);
    if (rc == 0 && tok_vocab_size(src->tok) > src->cfg.vocab_size)
        rc = errf(err, "%s: tokenizer has %u tokens but the model's vocab_size is %u", src->origin, tok_vocab_size(src->tok), src->cfg.vocab_size);
    if (rc) template_free(pf);
    return rc;
}

/* ==== main ==== */

/* The default --dtype keeps the source's precision: the weights' own format when guard.bin has it
 * (Q8_0 and Q4_0 blocks are copied bit for bit), f32 for f32, bf16 for bf16, f16 for f16, and
 * q8 for every other quantized source (GGUF Q4_1/Q5_x/K-quants, AWQ, bitsandbytes int8): 8-bit
 * blocks hold their dequantized values with no visible second rounding, where q4 would add one.
 * Layer 0's q_proj stands for the matrices (GGUF files often keep embeddings at higher precision). */
static uint32_t source_dtype(const Source *src) {
    const SrcTensor *t = source_find(src, "model.layers.0.self_attn.q_proj.weight");
    switch (t ? t->type : ST_F32) {
    case ST_F32: return DT_F32;
    case ST_BF16: return DT_BF16;
    case ST_F16: return DT_F16;
    case ST_Q4_0: return DT_Q4_0;
    default: return DT_Q8_0;
    }
}

static void usage(FILE *f) {
    fprintf(f, "usage: ./export CHECKPOINT OUT.bin [--dtype f32|bf16|f16|q8|q4] [--guard lg1|lg2|lg3-8b|lg3-1b] [--force] [--rope-factor F]\n"
               "  CHECKPOINT: a Hugging Face folder (config.json, model.safetensors or shards with\n"
               "  model.safetensors.index.json, tokenizer.json, tokenizer_config.json; also AWQ and\n"
               "  bitsandbytes int8 folders), a GGUF file (e.g. an Ollama blob), or Meta's original\n"
               "  folder (params.json, consolidated.00.pth, tokenizer.model, or a repo holding original/).\n"
               "  --dtype   weight format in guard.bin (default: the source's precision: f32, bf16 and f16 as\n"
               "            stored, GGUF Q8_0 / Q4_0 copied as q8 / q4, other quantized formats q8)\n"
               "  --guard   the Llama Guard version, when the chat template does not say\n"
               "  --force   export even when --guard contradicts the checkpoint's chat template or architecture\n"
               "  --rope-factor  llama3 RoPE factor of a Meta original checkpoint without config.json\n");
}

int main(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *dtype_arg = NULL, *guard_arg = NULL;
    int force = 0;
    ImportOptions iopt = { 0 };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) dtype_arg = argv[++i];
        else if (strcmp(argv[i], "--force") == 0) force = 1;
        else if (strcmp(argv[i], "--guard") == 0 && i + 1 < argc) guard_arg = argv[++i];
        else if (strcmp(argv[i], "--rope-factor") == 0 && i + 1 < argc) {
            char *end;
            iopt.rope_factor = strtod(argv[++i], &end);
            if (*end || !(iopt.rope_factor >= 1 && iopt.rope_factor <= 1024)) { fprintf(stderr, "export: --rope-factor %s is not a number in [1, 1024]\n", argv[i]); return 2; }
        }
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { usage(stdout); return 0; }
        else if (argv[i][0] == '-') { fprintf(stderr, "export: unknown or incomplete option %s\n", argv[i]); usage(stderr); return 2; }
        else if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else { usage(stderr); return 2; }
    }
    if (!in || !out) { usage(stderr); return 2; }
    int dtype = !dtype_arg ? -1 : strcmp(dtype_arg, "q8") == 0 ? DT_Q8_0 : strcmp(dtype_arg, "q4") == 0 ? DT_Q4_0 : dtype_from_name(dtype_arg);
    if (dtype_arg && dtype != DT_F32 && dtype != DT_BF16 && dtype != DT_F16 && dtype != DT_Q8_0 && dtype != DT_Q4_0) {
        fprintf(stderr, "export: --dtype %s is not one of f32, bf16, f16, q8, q4\n", dtype_arg);
        return 2;
    }
    /* Never write over an input, by any name (a link, another path to the same file). */
    char err[ERRLEN], which[4200];
    if (same_file_under(out, in, which, sizeof which)) {
        fprintf(stderr, "export: %s: refusing to overwrite an input of the export (%s)\n", out, which);
        return 2;
    }

    Source src;
    PromptFormat pf = { 0 };
    GbWriter w;
    const SrcTensor **plan = NULL;
    uint8_t *tok_blob = NULL;
    uint64_t tok_len = 0;
    Buf prompt_blob = { 0 };
    int rc = 2;
    if (source_open(&src, in, &iopt, err)) goto fail;
    for (int i = 0; i < src.n_maps; i++)
        if (same_file_as(out, &src.maps[i])) {
            errf(err, "%s: refusing to overwrite an input of the export (%s)", out, src.paths[i]);
            goto fail_src;
        }
    if (dtype < 0) dtype = (int)source_dtype(&src);
    src.cfg.dtype = (uint32_t)dtype;
    gbw_init(&w, &src.cfg);
    plan = calloc((size_t)src.cfg.n_layers * 9 + 3, sizeof *plan);
    if (!plan) { errf(err, "out of memory"); goto fail_w; }
    if (plan_prompt(&src, guard_arg, force, &pf, err) || template_serialize(&pf, &prompt_blob, err) ||
        tok_serialize(src.tok, &tok_blob, &tok_len, err) || gbw_add_section(&w, SEC_TOKENIZER, tok_blob, tok_len, err) ||
        gbw_add_section(&w, SEC_PROMPT, prompt_blob.p, prompt_blob.len, err) || plan_tensors(&w, &src, plan, (uint32_t)dtype, err))
        goto fail_w;
    Job job = { plan, &w };
    if (gbw_write(&w, out, produce, &job, err)) goto fail_w;
    fprintf(stderr, "export: wrote %s (%s, %u layers, dim %u, vocab %u, %s)\n", out, template_guard_title(pf.version), src.cfg.n_layers,
            src.cfg.dim, src.cfg.vocab_size, dtype_name(src.cfg.dtype));
    if (src.warning[0]) fprintf(stderr, "export: warning: %s\n", src.warning);
    rc = 0;
fail_w:
    gbw_free(&w);
fail_src:
    source_free(&src);
fail:
    if (rc) fprintf(stderr, "export: %s\n", err);
    template_free(&pf);
    buf_free(&prompt_blob);
    free(tok_blob);
    free(plan);
    return rc;
}
