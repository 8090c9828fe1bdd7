/* run.c: the command line. Parses options, calls the library, prints, and owns the exit status
 * (0 safe / ok, 1 unsafe, 2 error). The only file besides export.c that prints or exits.
 *
 *   ./run guard.bin -i chat.txt          the verdict, exactly as the model says it
 *   ./run guard.bin -i chat.json --json  one JSON object with probabilities and timings
 * and audit modes (--show-prompt, --show-tokens, --tokenize, --info, --ids ...): see usage().
 */
#include "classify.h"
#include "guard.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *source_name(uint32_t s) {
    static const char *names[] = { "?", "Hugging Face safetensors", "GGUF", "AutoAWQ", "bitsandbytes int8", "Meta original", "random (bench)" };
    return s < sizeof names / sizeof names[0] ? names[s] : "?";
}

static void print_info(const Model *m) {
    const Config *c = &m->cfg;
    printf("file          %s\n", m->file.path);
    printf("source        %s\n", source_name(c->source));
    printf("dim           %u\nlayers        %u\nheads         %u\nkv_heads      %u\nhead_dim      %u\n", c->dim, c->n_layers, c->n_heads,
           c->n_kv_heads, c->head_dim);
    printf("ffn           %u\nvocab         %u\ncontext       %u\nnorm_eps      %g\nrope_theta    %g\n", c->hidden_dim, c->vocab_size,
           c->max_seq_len, (double)c->norm_eps, (double)c->rope_theta);
    if (c->rope_type == ROPE_LLAMA3)
        printf("rope_scaling  llama3 factor %g low %g high %g original_max %u\n", (double)c->rope_factor, (double)c->rope_low_freq_factor,
               (double)c->rope_high_freq_factor, c->rope_orig_max_pos);
    else
        printf("rope_scaling  none\n");
    printf("tied          %s\ndtype         %s\n", c->tied ? "yes" : "no", dtype_name(c->dtype));
    printf("tensors       %u\n", m->file.n_tensors);
    for (uint32_t i = 0; i < m->file.n_tensors; i++) {
        const GbTensor *t = &m->file.tensors[i];
        printf("  %-52s %-5s [", t->name, dtype_name(t->dtype));
        for (uint32_t d = 0; d < t->ndim; d++) printf(d ? ", %llu" : "%llu", (unsigned long long)t->shape[d]);
        printf("] @%llu +%llu\n", (unsigned long long)t->offset, (unsigned long long)t->size);
    }
}

/* Parse "1 2 3" (spaces, commas or newlines) into ids. */
static int parse_ids(const char *s, int32_t **ids, int64_t *n, char *err) {
    int64_t cap = 64, k = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    if (!v) return errf(err, "out of memory");
    while (*s) {
        if (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t' || *s == '\r') { s++; continue; }
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (end == s || errno || x < 0 || x > INT32_MAX) { free(v); return errf(err, "--ids: '%.20s' is not a token id", s); }
        if (k == cap) {
            int32_t *q = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!q) { free(v); return errf(err, "out of memory"); }
            v = q;
        }
        v[k++] = (int32_t)x;
        s = end;
    }
    if (k == 0) { free(v); return errf(err, "--ids: no token ids given"); }
    *ids = v;
    *n = k;
    return 0;
}

static int write_floats(const char *path, const float *x, uint64_t n, char *err) {
    AtomicFile f;
    if (afile_open(&f, path, err)) return -1;
    afile_write(&f, x, (size_t)(n * sizeof(float))); /* little-endian hosts only (x86-64, aarch64) */
    return afile_commit(&f, err);
}

static void print_top(const float *logits, uint32_t vocab, int k) {
    int best[64];
    if (k > 64) k = 64;
    for (int i = 0; i < k; i++) {
        int b = -1;
        for (uint32_t v = 0; v < vocab; v++) {
            int taken = 0;
            for (int j = 0; j < i; j++) taken |= best[j] == (int)v;
            if (!taken && (b < 0 || logits[v] > logits[b])) b = (int)v;
        }
        best[i] = b;
        printf("%d %.6f\n", b, (double)logits[b]);
    }
}

/* JSON string literal for s[0..n) (control characters and quotes escaped; bytes >= 0x80 as is). */
static void print_json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch == '\n') fputs("\\n", f);
        else if (ch == '\r') fputs("\\r", f);
        else if (ch == '\t') fputs("\\t", f);
        else if (ch < 0x20 || ch == 0x7F) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void print_decision_json(const Guard *g, const PromptFormat *pf, const Decision *d, int threads) {
    printf("{\"verdict\":\"%s\",\"p_unsafe\":%.9g,\"p_safe_token\":%.9g,\"p_unsafe_token\":%.9g,\"argmax\":%d,\"categories\":[",
           d->unsafe ? "unsafe" : "safe", (double)d->p_unsafe, (double)d->p_safe, (double)d->p_unsafe_token, d->argmax);
    for (int i = 0; d->unsafe && i < d->verdict.n_codes; i++) {
        const VerdictCode *vc = &d->verdict.codes[i];
        printf("%s{\"code\":", i ? "," : "");
        print_json_str(stdout, vc->code, strlen(vc->code));
        printf(",\"name\":");
        if (vc->cat >= 0) {
            size_t nl;
            const char *nm = template_category_name(&pf->cats[vc->cat], &nl);
            print_json_str(stdout, nm, nl);
        } else printf("null");
        printf("}");
    }
    printf("],\"model_output\":");
    if (d->unsafe) print_json_str(stdout, d->generated, strlen(d->generated));
    else printf("\"safe\"");
    printf(",\"guard\":\"%s\",\"prompt_tokens\":%lld,\"cached_tokens\":%lld,\"threads\":%d,\"prefill_ms\":%.3f,\"decode_ms\":%.3f}\n",
           template_guard_name(g->pf.version), (long long)d->prompt_tokens, (long long)d->reused_tokens, threads, d->t_prefill * 1e3,
           d->t_decode * 1e3);
}

static void print_decision_text(const Decision *d) {
    if (!d->unsafe) { printf("safe\n"); return; }
    printf("unsafe\n");
    for (int i = 0; i < d->verdict.n_codes; i++) printf("%s%s", i ? "," : "", d->verdict.codes[i].code);
    if (d->verdict.n_codes) printf("\n");
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: ./run MODEL.bin [-i FILE|-] [options]\n"
            "Classify a conversation with Llama Guard. Prints 'safe', or 'unsafe' and a line of category\n"
            "codes (e.g. S1,S10), as the model says it. Exit status: 0 safe, 1 unsafe, 2 error.\n"
            "\n"
            "input (-i FILE, '-' or no -i: standard input), --format auto|text|transcript|json:\n"
            "  text        the whole input is one user message\n"
            "  transcript  lines starting 'User:' / 'Agent:' (or 'Assistant:') open a turn;\n"
            "              other lines continue the previous turn\n"
            "  json        [{\"role\":\"user\",\"content\":\"...\"}, ...] or {\"messages\":[...]}; content is a\n"
            "              string or a list of {\"type\":\"text\",\"text\":\"...\"} parts\n"
            "  auto        json if the input starts with '[' or '{', transcript if its first line\n"
            "              starts with a role prefix, else text (default)\n"
            "  Turns must alternate, starting with the user. Roles: user, assistant (or agent).\n"
            "\n"
            "classification:\n"
            "  --threshold P          unsafe when P(unsafe) >= P (default 0.5). P(unsafe) is Meta's:\n"
            "                         softmax over the whole vocabulary at the first label token;\n"
            "                         P(unsafe) if 'unsafe' is the most likely token, else 1 - P(safe)\n"
            "  --categories FILE      replace the categories: one 'CODE: text' per line\n"
            "  --exclude S6,S8        drop categories by code (no renumbering)\n"
            "  --json                 print one JSON object: verdict, p_unsafe, categories [{code, name}],\n"
            "                         prompt_tokens, timings\n"
            "  --ctx N                refuse conversations longer than N tokens (default: the model's context)\n"
            "\n"
            "audit (no model run):\n"
            "  --show-prompt          print the exact rendered prompt\n"
            "  --show-tokens          print its token ids\n"
            "  --tokenize             print the ids of the input as plain text (no BOS)\n"
            "  --detokenize           print the text of the input ids\n"
            "  --info                 print the config and the tensor table\n"
            "  --verify               recompute the whole-file data checksum\n"
            "  --ids \"1 2 3\"          run these token ids (no BOS added), then:\n"
            "    --logits OUT.bin     write the last position's logits (little-endian f32, vocab values)\n"
            "    --top K              print the K highest logits (id and value)\n"
            "\n"
            "common:\n"
            "  -t N                   threads (default: all cores); results are identical for any N\n"
            "  -v                     verbose: kernels chosen, timings on stderr\n");
}

/* Options, parsed once. */
typedef struct {
    const char *model, *input, *format, *categories, *exclude, *ids, *logits_out;
    float threshold;
    long long ctx;
    int json, show_prompt, show_tokens, tokenize, detokenize, info, verify, top, threads, verbose;
} Opts;

static int parse_opts(int argc, char **argv, Opts *o) {
    memset(o, 0, sizeof *o);
    o->threshold = 0.5f;
    o->format = "auto";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        /* options that take a value */
        const char **str = !strcmp(a, "-i") ? &o->input : !strcmp(a, "--format") ? &o->format
                         : !strcmp(a, "--categories") ? &o->categories : !strcmp(a, "--exclude") ? &o->exclude
                         : !strcmp(a, "--ids") ? &o->ids : !strcmp(a, "--logits") ? &o->logits_out : NULL;
        int num = !strcmp(a, "--threshold") || !strcmp(a, "--ctx") || !strcmp(a, "--top") || !strcmp(a, "-t");
        if (str || num) {
            if (!val) { fprintf(stderr, "run: %s needs a value (see --help)\n", a); return -1; }
            i++;
            if (str) { *str = val; continue; }
            char *end;
            double x = strtod(val, &end);
            if (end == val || *end) { fprintf(stderr, "run: %s: '%s' is not a number\n", a, val); return -1; }
            if (!strcmp(a, "--threshold")) {
                if (!(x >= 0 && x <= 1)) { fprintf(stderr, "run: --threshold must be between 0 and 1\n"); return -1; }
                o->threshold = (float)x;
            } else if (x < (!strcmp(a, "--ctx") ? 1 : 0) || x > 1e9 || x != (double)(long long)x) {
                fprintf(stderr, "run: %s: '%s' is not a valid count\n", a, val);
                return -1;
            } else if (!strcmp(a, "--ctx")) o->ctx = (long long)x;
            else if (!strcmp(a, "--top")) o->top = (int)x;
            else o->threads = (int)x;
            continue;
        }
        int *flag = !strcmp(a, "--json") ? &o->json : !strcmp(a, "--show-prompt") ? &o->show_prompt
                  : !strcmp(a, "--show-tokens") ? &o->show_tokens : !strcmp(a, "--tokenize") ? &o->tokenize
                  : !strcmp(a, "--detokenize") ? &o->detokenize : !strcmp(a, "--info") ? &o->info
                  : !strcmp(a, "--verify") ? &o->verify : !strcmp(a, "-v") ? &o->verbose : NULL;
        if (flag) { *flag = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        if (a[0] == '-' && a[1]) { fprintf(stderr, "run: unknown option %s (see --help)\n", a); return -1; }
        if (o->model) { fprintf(stderr, "run: unexpected argument %s\n", a); return -1; }
        o->model = a;
    }
    if (!o->model) { usage(stderr); return -1; }
    return 0;
}

/* --ids mode: run raw ids, write or print logits. */
static int run_ids(const Model *m, const Opts *o, char *err) {
    int32_t *ids = NULL;
    int64_t n = 0;
    RunState s;
    float *logits = malloc(m->cfg.vocab_size * sizeof(float));
    int rc = !logits ? errf(err, "out of memory") : parse_ids(o->ids, &ids, &n, err);
    if (rc == 0 && (rc = state_init(&s, m, n, err)) == 0) {
        rc = model_forward(m, &s, ids, n, logits, err);
        if (rc == 0 && o->logits_out) rc = write_floats(o->logits_out, logits, m->cfg.vocab_size, err);
        if (rc == 0 && o->top > 0) print_top(logits, m->cfg.vocab_size, o->top);
        state_free(&s);
    }
    free(ids);
    free(logits);
    return rc;
}

/* --tokenize / --detokenize on the raw input. */
static int run_tokenizer(const Guard *g, const Opts *o, char *err) {
    char *text;
    uint64_t len;
    if (read_text_file(o->input ? o->input : "-", CHAT_MAX_BYTES, &text, &len, err)) return -1;
    int rc = 0;
    if (o->tokenize) {
        int32_t *ids = NULL;
        size_t n = 0, cap = 0;
        rc = tok_encode(g->tok, text, (size_t)len, &ids, &n, &cap, err);
        for (size_t i = 0; rc == 0 && i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        if (rc == 0) printf("\n");
        free(ids);
    } else {
        int32_t *ids = NULL;
        int64_t n = 0;
        Buf out = { 0 };
        rc = parse_ids(text, &ids, &n, err);
        for (int64_t i = 0; rc == 0 && i < n; i++)
            if (ids[i] < 0 || (uint32_t)ids[i] >= tok_vocab_size(g->tok)) rc = errf(err, "id %d is outside the vocabulary", ids[i]);
        if (rc == 0) rc = tok_decode_ids(g->tok, ids, (size_t)n, &out) ? errf(err, "cannot decode") : 0;
        if (rc == 0) fwrite(out.p, 1, (size_t)out.len, stdout);
        buf_free(&out);
        free(ids);
    }
    free(text);
    return rc;
}

/* The main job: classify one conversation. Returns 0 safe, 1 unsafe, -1 error. */
static int run_classify(Guard *g, const Opts *o, char *err) {
    int format;
    if (chat_parse_format(o->format, &format, err)) return -1;
    PromptFormat pf = { 0 };
    Conversation conv;
    int rc = template_set_categories(&pf, g->pf.cats, g->pf.n_cats, err);
    pf.version = g->pf.version;
    if (rc == 0 && o->categories) rc = template_read_categories(&pf, o->categories, err);
    if (rc == 0 && o->exclude) rc = template_exclude(&pf, o->exclude, err);
    if (rc == 0) rc = chat_read_file(&conv, o->input ? o->input : "-", format, err);
    if (rc) { template_free(&pf); return -1; }
    if (o->show_prompt || o->show_tokens) {
        Prompt p;
        rc = template_render(&pf, &conv, &p, err);
        if (rc == 0 && o->show_prompt) fwrite(p.text.p, 1, (size_t)p.text.len, stdout);
        if (rc == 0 && o->show_tokens) {
            int32_t *ids = NULL;
            size_t n = 0, cap = 0;
            rc = guard_prompt_ids(g, &p, &ids, &n, &cap, err);
            if (o->show_prompt && rc == 0) printf("\n");
            for (size_t i = 0; rc == 0 && i < n; i++) printf(i ? " %d" : "%d", ids[i]);
            if (rc == 0) printf("\n");
            free(ids);
        }
        if (rc == 0) prompt_free(&p);
    } else {
        RunState s;
        Decision d;
        rc = state_init(&s, &g->model, 0, err);
        if (rc == 0) {
            rc = guard_classify(g, &s, &pf, &conv, o->threshold, o->ctx, &d, err);
            state_free(&s);
        }
        if (rc == 0) {
            if (o->json) print_decision_json(g, &pf, &d, g->model.n_threads);
            else print_decision_text(&d);
            if (o->verbose)
                fprintf(stderr, "run: %lld prompt tokens, P(unsafe) %.6f, prefill %.1f ms, decode %.1f ms\n", (long long)d.prompt_tokens,
                        (double)d.p_unsafe, d.t_prefill * 1e3, d.t_decode * 1e3);
            rc = d.unsafe ? 1 : 0;
        }
    }
    chat_free(&conv);
    template_free(&pf);
    return rc;
}

int main(int argc, char **argv) {
    Opts o;
    if (parse_opts(argc, argv, &o)) return 2;
    char err[ERRLEN];
    Guard g;
    int audit = o.info || o.verify || o.ids;
    if (audit) { /* audit modes work on any guard.bin, even one without tokenizer/prompt sections */
        if (model_open(&g.model, o.model, o.threads, err)) { fprintf(stderr, "run: %s\n", err); return 2; }
    } else if (guard_open(&g, o.model, o.threads, err)) {
        fprintf(stderr, "run: %s\n", err);
        return 2;
    }
    if (o.verbose) fprintf(stderr, "run: %d threads, kernels: %s\n", g.model.n_threads, kernels_init());
    int rc = 0;
    if (o.info) print_info(&g.model);
    if (o.verify && rc == 0) {
        if (gb_verify(&g.model.file, err)) rc = -1;
        else printf("%s: ok (data checksum %08x)\n", o.model, g.model.file.data_crc);
    }
    if (o.ids && rc == 0) rc = run_ids(&g.model, &o, err);
    if (!audit) rc = o.tokenize || o.detokenize ? run_tokenizer(&g, &o, err) : run_classify(&g, &o, err);
    if (rc < 0) fprintf(stderr, "run: %s\n", err);
    if (audit) model_close(&g.model);
    else guard_close(&g);
    return rc < 0 ? 2 : rc;
}
