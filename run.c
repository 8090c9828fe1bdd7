/* run.c: the command line. Parses options, calls the library, prints, and owns the exit status
 * (0 safe / ok, 1 unsafe, 2 error). The only file besides export.c that prints or exits.
 *
 *   ./run guard.bin -i chat.txt          the verdict, exactly as the model says it
 *   ./run guard.bin -i chat.json --json  one JSON object with probabilities and timings
 * and audit modes (--show-prompt, --show-tokens, --tokenize, --info, --ids ...): see usage().
 */
#include "classify.h"
#include "guard.h"
#include "report.h"
#include "server.h"

#include <errno.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *source_name(uint32_t s) {
    static const char *names[] = { "?", "Hugging Face safetensors", "GGUF", "AutoAWQ", "bitsandbytes int8", "Meta original", "random (bench)",
                                    "ExecuTorch .pte" };
    return s < sizeof names / sizeof names[0] ? names[s] : "?";
}

static void print_info(const Model *m, const char *cache) {
    const Config *c = &m->cfg;
    printf("file          %s\n", m->file.path);
    printf("version       llama-guard.c %s, guard.bin version %d\n", GUARD_VERSION, GB_VERSION);
    printf("source        %s\n", source_name(c->source));
    uint64_t pl;
    const uint8_t *pb = gb_section(&m->file, SEC_PROMPT, &pl);
    PromptFormat pf = { 0 };
    char err[ERRLEN];
    if (!pb) printf("guard         ? (no prompt section)\n");
    else if (template_load(&pf, pb, pl, err)) printf("guard         ? (prompt section: %s)\n", err);
    else {
        printf("guard         %s (%s), %d categories\n", template_guard_title(pf.version), template_guard_name(pf.version), pf.n_cats);
        for (int i = 0; i < pf.n_cats; i++) {
            size_t nl;
            const char *nm = template_category_name(&pf.cats[i], &nl);
            printf("  %-12s %.*s\n", pf.cats[i].code, (int)nl, nm);
        }
        template_free(&pf);
    }
    printf("prefix cache  %s\n", cache);
    printf("dim           %u\nlayers        %u\nheads         %u\nkv_heads      %u\nhead_dim      %u\n", c->dim, c->n_layers, c->n_heads,
           c->n_kv_heads, c->head_dim);
    printf("ffn           %u\nvocab         %u\ncontext       %u\nnorm_eps      %g\nrope_theta    %g\n", c->hidden_dim, c->vocab_size,
           c->max_seq_len, (double)c->norm_eps, (double)c->rope_theta);
    if (c->rope_type == ROPE_LLAMA3)
        printf("rope_scaling  llama3 factor %g low %g high %g original_max %u\n", (double)c->rope_factor, (double)c->rope_low_freq_factor,
               (double)c->rope_high_freq_factor, c->rope_orig_max_pos);
    else
        printf("rope_scaling  none\n");
    if (c->rope_style == ROPE_ADJACENT) { /* Llama 4 */
        printf("rope_pairs    adjacent (Llama 4)\nnope_layers  ");
        int any = 0;
        for (uint32_t l = 0; l < c->n_layers; l++)
            if (!config_layer_rope(c, l)) printf("%s%u", any++ ? "," : " ", l);
        printf("%s\nqk_norm       %s\n", any ? "" : " none", c->qk_norm ? "yes" : "no");
        if (c->attn_temperature_tuning) printf("attn_temp     floor_scale %g attn_scale %g\n", (double)c->floor_scale, (double)c->attn_scale);
        if (c->attn_chunk) printf("attn_chunk    %u\n", c->attn_chunk);
    }
    printf("tied          %s\ndtype         %s\n", c->tied ? "yes" : "no", dtype_name(c->dtype));
    if (m->w.n_head) printf("output head   pruned: %u rows, every other logit -inf\n", m->w.n_head);
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
            "codes (e.g. S1,S10), as the model says it. Exit status: 0 safe, 1 unsafe, 2 error (nothing\n"
            "judged: bad input, corrupt weights, a failed write), 3 --batch/--eval finished but a line\n"
            "failed or there was none (README \"Failure behaviour\").\n"
            "\n"
            "input (-i FILE, '-' or no -i: standard input), --format text|transcript|json|auto:\n"
            "  text        the whole input is one user message (the default, whatever the text looks\n"
            "              like; a file named *.json is read as json)\n"
            "  transcript  lines starting 'User:' / 'Agent:' (or 'Assistant:') open a turn;\n"
            "              other lines continue the previous turn\n"
            "  json        [{\"role\":\"user\",\"content\":\"...\"}, ...] or {\"messages\":[...]}; content is a\n"
            "              string or a list of {\"type\":\"text\",\"text\":\"...\"} parts\n"
            "  auto        trusted files only: json if the input starts with '[' or '{', transcript if\n"
            "              its first line starts with a role prefix, else text\n"
            "  Turns must alternate, starting with the user. Roles: user, assistant (or agent).\n"
            "  --system error|drop    a JSON \"system\"/\"developer\" message (the application's own\n"
            "                         instruction) is an error (default), or left out when it comes before\n"
            "                         the first user message; \"tool\" messages and tool_calls are errors\n"
            "\n"
            "classification:\n"
            "  --threshold P          unsafe when P(unsafe) >= P (default 0.5). P(unsafe) is Meta's:\n"
            "                         softmax over the whole vocabulary at the first label token;\n"
            "                         P(unsafe) if 'unsafe' is the most likely token, else 1 - P(safe)\n"
            "  --categories FILE      replace the categories: one 'CODE: text' per line\n"
            "  --exclude S6,S8        drop categories by code (no renumbering)\n"
            "  --json                 print one JSON object: verdict, p_unsafe, categories [{code, name}],\n"
            "                         prompt_tokens, timings\n"
            "  --ctx N                refuse conversations longer than N tokens, 1..the model's context\n"
            "                         (the default; --info shows it)\n"
            "\n"
            "many conversations:\n"
            "  --batch IN.jsonl       one conversation per line: {\"id\":..., \"messages\":[...]} with optional\n"
            "                         \"categories\" ({\"S1\":\"text\",...}) and \"exclude\" (\"S6,S8\" or [\"S6\"]);\n"
            "                         one JSON result per line, same order, id passed through; '-' reads\n"
            "                         stdin; every line (blank ones too) gets one reply: a bad line gives\n"
            "                         {\"id\":...,\"line\":N,\"error\":...}, the run goes on and exits 3\n"
            "  -o OUT.jsonl           write results there (complete file only) instead of stdout\n"
            "  --eval IN.jsonl        lines also carry \"label\": \"safe\"|\"unsafe\" and optionally\n"
            "                         \"categories\": [\"S1\",...] (the true codes); prints precision, recall,\n"
            "                         F1, false-positive rate, AUPRC, the confusion matrix and per-category\n"
            "                         recall (--json for one JSON object)\n"
            "\n"
            "prefix cache (every prompt starts with the same policy text; its KV is computed once):\n"
            "  --cache FILE           where to keep it across runs (default: $XDG_CACHE_HOME/llama-guard/,\n"
            "                         else ~/.cache/llama-guard/); used only if it and its directory are\n"
            "                         yours and writable by no one else; a corrupt or stale file is ignored\n"
            "  --cache-max MB         bound on the cache files in that directory (default 2048; oldest go)\n"
            "  --no-cache             neither read, reuse nor write cached prefixes\n"
            "\n"
            "audit (no model run):\n"
            "  --show-prompt          print the exact rendered prompt\n"
            "  --show-tokens          print its token ids\n"
            "  --tokenize             print the ids of the input as plain text (no BOS)\n"
            "  --detokenize           print the text of the input ids\n"
            "  --info                 print the Llama Guard version, its categories, the cache location,\n"
            "                         the config and the tensor table\n"
            "  --verify               recompute the whole-file data checksum (--batch/--eval always do;\n"
            "                         a single conversation once per file version)\n"
            "  --version              print the version\n"
            "  --ids \"1 2 3\"          run these token ids (no BOS added), then:\n"
            "    --logits OUT.bin     write the last position's logits (little-endian f32, vocab values)\n"
            "    --top K              print the K highest logits (id and value)\n"
            "\n"
            "common:\n"
            "  -t N                   threads (default and maximum: the online CPUs); results are identical\n"
            "                         for any N\n"
            "  --prepack, --no-prepack  f32 weights: arrange them into kernel tiles once at start (default\n"
            "                         with --batch/--eval) or pack tile chunks as each matmul needs them;\n"
            "                         q8/q4 weights are stored in tile order and never packed;\n"
            "                         results are identical either way\n"
            "  -v                     verbose: kernels chosen, timings on stderr\n"
            "\n"
            "server (README \"Server\"; the classification options above are the request defaults):\n"
            "  --serve                an OpenAI-compatible HTTP server: /v1/moderations, /v1/chat/completions,\n"
            "                         /v1/classify (the --json object), /v1/models, /v1/categories, /health\n"
            "  --host H --port P      where to listen (default 127.0.0.1 8080; port 0 picks a free one)\n"
            "  --api-key KEY          require 'Authorization: Bearer KEY' on /v1/... (default:\n"
            "                         $LLAMA_GUARD_API_KEY when set, which keeps it out of the process list)\n"
            "  --max-connections N    open connections (64); --queue N requests waiting for the model (16;\n"
            "                         a full queue answers 503); --read-timeout S (10), --idle-timeout S (30)\n"
            "  --prefix-mem MIB       K/V of recent prompts kept for reuse (256)\n"
            "  -q                     no log line per request\n");
}

/* Options, parsed once. */
typedef struct {
    const char *model, *input, *format, *categories, *exclude, *ids, *logits_out, *batch, *eval, *output, *cache, *system;
    ServeOptions serve;   /* --serve and its options (server.h) */
    float threshold;
    long long ctx, cache_max_mb;
    int json, show_prompt, show_tokens, tokenize, detokenize, info, verify, top, threads, verbose, no_cache, serving;
    int prepack, no_prepack;
    int chat_flags; /* CHAT_DROP_SYSTEM from --system */
} Opts;

static int parse_opts(int argc, char **argv, Opts *o) {
    memset(o, 0, sizeof *o);
    o->threshold = 0.5f;
    o->cache_max_mb = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        /* options that take a value */
        const char **str = !strcmp(a, "-i") ? &o->input : !strcmp(a, "--format") ? &o->format
                         : !strcmp(a, "--categories") ? &o->categories : !strcmp(a, "--exclude") ? &o->exclude
                         : !strcmp(a, "--ids") ? &o->ids : !strcmp(a, "--logits") ? &o->logits_out
                         : !strcmp(a, "--batch") ? &o->batch : !strcmp(a, "--eval") ? &o->eval
                         : !strcmp(a, "-o") ? &o->output : !strcmp(a, "--cache") ? &o->cache
                         : !strcmp(a, "--system") ? &o->system
                         : !strcmp(a, "--host") ? &o->serve.host : !strcmp(a, "--port") ? &o->serve.port
                         : !strcmp(a, "--api-key") ? &o->serve.api_key : !strcmp(a, "--max-connections") ? &o->serve.max_conns
                         : !strcmp(a, "--queue") ? &o->serve.queue : !strcmp(a, "--read-timeout") ? &o->serve.read_timeout
                         : !strcmp(a, "--idle-timeout") ? &o->serve.idle_timeout : !strcmp(a, "--prefix-mem") ? &o->serve.prefix_mem : NULL;
        int num = !strcmp(a, "--threshold") || !strcmp(a, "--ctx") || !strcmp(a, "--top") || !strcmp(a, "-t") || !strcmp(a, "--cache-max");
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
            else if (!strcmp(a, "--cache-max")) o->cache_max_mb = (long long)x;
            else if (!strcmp(a, "--top")) o->top = (int)x;
            else o->threads = (int)x;
            continue;
        }
        int *flag = !strcmp(a, "--json") ? &o->json : !strcmp(a, "--show-prompt") ? &o->show_prompt
                  : !strcmp(a, "--show-tokens") ? &o->show_tokens : !strcmp(a, "--tokenize") ? &o->tokenize
                  : !strcmp(a, "--detokenize") ? &o->detokenize : !strcmp(a, "--info") ? &o->info
                  : !strcmp(a, "--verify") ? &o->verify : !strcmp(a, "-v") ? &o->verbose
                  : !strcmp(a, "--no-cache") ? &o->no_cache : !strcmp(a, "--prepack") ? &o->prepack
                  : !strcmp(a, "--no-prepack") ? &o->no_prepack : !strcmp(a, "--serve") ? &o->serving
                  : !strcmp(a, "-q") ? &o->serve.quiet : NULL;
        if (flag) { *flag = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        if (!strcmp(a, "--version")) { printf("llama-guard.c %s (guard.bin version %d)\n", GUARD_VERSION, GB_VERSION); exit(fflush(stdout) || ferror(stdout) ? 2 : 0); }
        if (a[0] == '-' && a[1]) { fprintf(stderr, "run: unknown option %s (see --help)\n", a); return -1; }
        if (o->model) { fprintf(stderr, "run: unexpected argument %s\n", a); return -1; }
        o->model = a;
    }
    if (!o->model) { usage(stderr); return -1; }
    if (o->prepack && o->no_prepack) { fprintf(stderr, "run: --prepack and --no-prepack exclude each other\n"); return -1; }
    if (o->system && strcmp(o->system, "error") && strcmp(o->system, "drop")) { fprintf(stderr, "run: --system must be error or drop\n"); return -1; }
    o->chat_flags = o->system && !strcmp(o->system, "drop") ? CHAT_DROP_SYSTEM : 0;
    /* more threads than CPUs only time-slice the same cores (a 0.1 s verdict took 6-99 s at -t 1000) */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1) cpus = 1;
    if (o->threads > cpus) {
        fprintf(stderr, "run: warning: -t %d is more than the %ld online CPUs; using %ld\n", o->threads, cpus, cpus);
        o->threads = (int)cpus;
    }
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
    int format = chat_default_format(o->input);
    if (o->format && chat_parse_format(o->format, &format, err)) return -1;
    format |= o->chat_flags;
    PromptFormat pf = { 0 };
    Conversation conv;
    pf.version = g->pf.version; /* first: which category texts are valid depends on it */
    int rc = template_set_categories(&pf, g->pf.cats, g->pf.n_cats, err);
    if (rc == 0 && o->categories) rc = template_read_categories(&pf, o->categories, err);
    if (rc == 0 && o->exclude) rc = template_exclude(&pf, o->exclude, err);
    if (rc == 0) rc = chat_read_file(&conv, o->input ? o->input : "-", format, err);
    if (rc) {
        template_free(&pf);
        return -1;
    }
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
            if (o->json) print_decision_json(stdout, NULL, NULL, g, &pf, &d);
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

/* ==== --batch and --eval ==== */

#define EVAL_FAILED_SHOWN 100

typedef struct {
    float *scores;
    uint8_t *labels;
    int64_t n, cap;
    /* per-category recall over unsafe lines that name true categories */
    char codes[TEMPLATE_MAX_CATS][CATEGORY_CODE_MAX];
    int64_t cat_total[TEMPLATE_MAX_CATS], cat_hit[TEMPLATE_MAX_CATS];
    int n_codes;
    /* the first failed lines, for --eval --json's "failed" list (all of them go to stderr) */
    int n_failed;
    int64_t failed_line[EVAL_FAILED_SHOWN];
    char failed_msg[EVAL_FAILED_SHOWN][ERRLEN];
} EvalData;

static int eval_add(EvalData *e, const Json *j, const JsonNode *root, const Decision *d, char *err) {
    const JsonNode *lab = json_get(j, root, "label"), *cats = json_get(j, root, "categories");
    int label;
    if (lab && lab->type == JSON_STRING && !strcmp(lab->str, "safe")) label = 0;
    else if (lab && lab->type == JSON_STRING && !strcmp(lab->str, "unsafe")) label = 1;
    else return errf(err, "\"label\" must be \"safe\" or \"unsafe\"");
    if (cats && cats->type != JSON_ARRAY) return errf(err, "\"categories\" must be an array of true category codes");
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 256;
        float *s = realloc(e->scores, (size_t)e->cap * sizeof *s);
        if (s) e->scores = s;
        uint8_t *l = realloc(e->labels, (size_t)e->cap);
        if (l) e->labels = l;
        if (!s || !l) return errf(err, "out of memory");
    }
    e->scores[e->n] = d->p_unsafe;
    e->labels[e->n++] = (uint8_t)label;
    if (!label || !cats) return 0;
    JSON_FOR(j, cats, c) {
        if (c->type != JSON_STRING || c->len == 0 || c->len >= CATEGORY_CODE_MAX) continue;
        int k = 0;
        while (k < e->n_codes && strcmp(e->codes[k], c->str)) k++;
        if (k == e->n_codes) {
            if (k == TEMPLATE_MAX_CATS) continue;
            snprintf(e->codes[e->n_codes++], CATEGORY_CODE_MAX, "%s", c->str);
        }
        e->cat_total[k]++;
        for (int i = 0; d->unsafe && i < d->verdict.n_codes; i++)
            if (!strcmp(d->verdict.codes[i].code, c->str)) { e->cat_hit[k]++; break; }
    }
    return 0;
}

static void print_eval(FILE *f, const EvalData *e, float threshold, int json, int64_t failed) {
    EvalMetrics m;
    eval_metrics(e->scores, e->labels, e->n, threshold, &m);
    if (json) {
        fprintf(f, "{\"n\":%lld,\"errors\":%lld,\"threshold\":%g", (long long)m.n, (long long)failed, (double)threshold);
        const char *keys[] = { "precision", "recall", "f1", "fpr", "auprc" };
        double vals[] = { m.precision, m.recall, m.f1, m.fpr, m.auprc };
        for (int i = 0; i < 5; i++) {
            fprintf(f, ",\"%s\":", keys[i]);
            print_json_num(f, vals[i], "%.6f");
        }
        fprintf(f, ",\"confusion\":{\"tp\":%lld,\"fp\":%lld,\"tn\":%lld,\"fn\":%lld},\"category_recall\":{", (long long)m.tp,
               (long long)m.fp, (long long)m.tn, (long long)m.fn);
        for (int k = 0; k < e->n_codes; k++) {
            fprintf(f, "%s", k ? "," : "");
            print_json_str(f, e->codes[k], strlen(e->codes[k]));
            fprintf(f, ":{\"recall\":");
            print_json_num(f, (double)e->cat_hit[k] / (double)e->cat_total[k], "%.6f");
            fprintf(f, ",\"n\":%lld}", (long long)e->cat_total[k]);
        }
        fprintf(f, "},\"failed\":[");
        for (int k = 0; k < e->n_failed; k++) {
            fprintf(f, "%s{\"line\":%lld,\"error\":", k ? "," : "", (long long)e->failed_line[k]);
            print_json_str(f, e->failed_msg[k], strlen(e->failed_msg[k]));
            fputc('}', f);
        }
        fprintf(f, "]}\n");
        return;
    }
    fprintf(f, "conversations  %lld (threshold %g)\n", (long long)m.n, (double)threshold);
    if (failed) fprintf(f, "failed lines   %lld (not counted)\n", (long long)failed);
    const char *names[] = { "precision", "recall", "f1", "fpr", "auprc" };
    double vals[] = { m.precision, m.recall, m.f1, m.fpr, m.auprc };
    for (int i = 0; i < 5; i++) isnan(vals[i]) ? fprintf(f, "%-14s n/a\n", names[i]) : fprintf(f, "%-14s %.4f\n", names[i], vals[i]);
    fprintf(f, "\n                 predicted\n                 unsafe   safe\n");
    fprintf(f, "actual unsafe  %8lld %6lld\n       safe    %8lld %6lld\n", (long long)m.tp, (long long)m.fn, (long long)m.fp, (long long)m.tn);
    if (e->n_codes) fprintf(f, "\ncategory  recall   n\n");
    for (int k = 0; k < e->n_codes; k++)
        fprintf(f, "%-9s %.4f %4lld\n", e->codes[k], (double)e->cat_hit[k] / (double)e->cat_total[k], (long long)e->cat_total[k]);
}

static void progress(int64_t done, int64_t total, double t0) {
    double dt = now_sec() - t0, rate = dt > 0 ? (double)done / dt : 0;
    if (total > 0) {
        int w = 30, fill = (int)(w * done / total);
        double eta = rate > 0 ? (double)(total - done) / rate : 0;
        fprintf(stderr, "\r[%.*s%*s] %lld/%lld  %.2f conv/s  ETA %.0fs ", fill, "##############################", w - fill, "",
                (long long)done, (long long)total, rate, eta);
    } else {
        fprintf(stderr, "\r%lld done  %.2f conv/s ", (long long)done, rate);
    }
}

/* One input line of at most max bytes, without its '\n', into *buf (grown as needed, never past
 * max + 1 bytes). A longer line is read to its end but not stored (*too_long), so a hostile 2 GiB
 * line costs max bytes of memory and the stream goes on. Returns 1 for a line, 0 at the end of the
 * input, -1 on a read error. */
static int read_line(FILE *in, char **buf, size_t *cap, size_t max, size_t *len, int *too_long) {
    size_t n = 0;
    int ch, any = 0;
    *too_long = 0;
    while ((ch = getc_unlocked(in)) != EOF) {
        any = 1;
        if (ch == '\n') break;
        if (n >= max) { *too_long = 1; continue; }
        if (n + 1 >= *cap) {
            size_t nc = *cap ? *cap * 2 : 4096;
            if (nc > max + 1) nc = max + 1;
            char *q = realloc(*buf, nc);
            if (!q) return -1;
            *buf = q;
            *cap = nc;
        }
        (*buf)[n++] = (char)ch;
    }
    if (ferror(in)) return -1;
    *len = n;
    return any;
}

/* Classify every line of a JSONL file; eval: also score against labels. Returns 0 when every line
 * gave a result, 3 when some line failed or there was no line at all, -1 on a fatal error. */
static int run_batch(Guard *g, const Opts *o, char *err) {
    int eval = o->eval != NULL;
    const char *in_path = eval ? o->eval : o->batch;
    FILE *in = strcmp(in_path, "-") ? fopen(in_path, "rb") : stdin;
    if (!in) return errf(err, "%s: cannot open: %s", in_path, strerror(errno));
    int64_t total = 0;
    if (in != stdin) { /* count lines for the progress bar; cheap next to the model */
        int ch;
        while ((ch = getc_unlocked(in)) != EOF) total += ch == '\n';
        rewind(in);
    }
    AtomicFile out = { 0 };
    if (o->output && afile_open(&out, o->output, err)) {
        if (in != stdin) fclose(in);
        return -1;
    }
    FILE *out_f = o->output ? out.fp : stdout;
    int tty = isatty(2) && !o->verbose;
    RunState s;
    int rc = state_init(&s, &g->model, 0, err);
    PromptFormat base = { 0 };
    base.version = g->pf.version;
    if (rc == 0) rc = template_set_categories(&base, g->pf.cats, g->pf.n_cats, err);
    if (rc == 0 && o->categories) rc = template_read_categories(&base, o->categories, err);
    if (rc == 0 && o->exclude) rc = template_exclude(&base, o->exclude, err);
    EvalData ed = { 0 };
    char *line = NULL;
    size_t lcap = 0, k;
    int64_t lineno = 0, done = 0, failed = 0;
    double t0 = now_sec();
    int got, too_long;
    while (rc == 0 && (got = read_line(in, &line, &lcap, CHAT_MAX_BYTES, &k, &too_long)) != 0) {
        if (got < 0) { rc = errf(err, "%s: read error after line %lld", in_path, (long long)lineno); break; }
        lineno++;
        while (k && (line[k - 1] == '\r' || line[k - 1] == ' ')) k--;
        if (k == 0 && !too_long && eval) continue; /* eval prints a summary: blank lines are not examples */
        char lerr[ERRLEN];
        Json j;
        const JsonNode *id = NULL;
        PromptFormat pf = { 0 };
        Conversation conv;
        Decision d;
        int ok = 0, parsed = 0, have_conv = 0;
        if (too_long) errf(lerr, "line longer than %u bytes", CHAT_MAX_BYTES);
        else if (k == 0) errf(lerr, "blank line (expected a JSON object with \"messages\")");
        else if (json_parse(&j, line, k, lerr) == 0) {
            parsed = 1;
            const JsonNode *root = json_root(&j);
            id = json_get(&j, root, "id");
            if (root->type != JSON_OBJECT) errf(lerr, "a line must be a JSON object with \"messages\"");
            else if (template_from_json(&pf, &j, root, &base, !eval, lerr) == 0 && chat_from_json_flags(&conv, &j, root, o->chat_flags, lerr) == 0) {
                have_conv = 1;
                ok = guard_classify(g, &s, &pf, &conv, o->threshold, o->ctx, &d, lerr) == 0 && (!eval || eval_add(&ed, &j, root, &d, lerr) == 0);
            }
        }
        failed += !ok;
        if (!eval) {
            if (ok) print_decision_json(out_f, &j, id, g, &pf, &d);
            else print_error_json(out_f, parsed ? &j : NULL, id, lineno, lerr);
            /* a co-process reads one reply per line: flush each, and stop at the first lost write */
            if (fflush(out_f) != 0 || ferror(out_f)) rc = errf(err, "%s: write failed: %s", o->output ? o->output : "standard output", strerror(errno));
        } else if (!ok) {
            fprintf(stderr, "run: %s:%lld: %s\n", in_path, (long long)lineno, lerr);
            if (ed.n_failed < EVAL_FAILED_SHOWN) {
                ed.failed_line[ed.n_failed] = lineno;
                memcpy(ed.failed_msg[ed.n_failed++], lerr, ERRLEN);
            }
        }
        if (have_conv) chat_free(&conv);
        template_free(&pf);
        if (parsed) json_free(&j);
        done++;
        if (tty) progress(done, total, t0);
    }
    if (tty) fprintf(stderr, "\n");
    free(line);
    if (in != stdin) fclose(in);
    if (rc == 0 && eval) print_eval(out_f, &ed, o->threshold, o->json, failed);
    free(ed.scores);
    free(ed.labels);
    template_free(&base);
    if (s.x) state_free(&s);
    if (o->output) {
        if (rc == 0) rc = afile_commit(&out, err);
        else afile_abort(&out);
    }
    if (rc == 0 && (failed || done == 0)) {
        fprintf(stderr, "run: %s: %lld of %lld lines failed%s (exit status 3)\n", in_path, (long long)failed, (long long)done,
                done == 0 ? "; no conversation was evaluated" : "");
        rc = 3;
    }
    return rc;
}

/* Weight integrity (README "Failure behaviour"): a long-running process checks the whole data
 * checksum before its first verdict; a one-shot run does it once per file version and remembers
 * that in a stamp in the cache directory (classify.c guard_verify_once). */
static int verify_weights(Guard *g, const Opts *o, char *err) {
    double t0 = now_sec();
    int checked = 1;
    int rc = o->batch || o->eval ? gb_verify(&g->model.file, err) : guard_verify_once(g, &checked, err);
    if (rc) {
        char why[ERRLEN];
        memcpy(why, err, ERRLEN);
        return errf(err, "%.400s (the weights are corrupt: export or download the file again)", why);
    }
    if (o->verbose) {
        if (checked) fprintf(stderr, "run: data checksum verified (%.0f ms)\n", (now_sec() - t0) * 1e3);
        else fprintf(stderr, "run: data checksum verified before for this file version\n");
    }
    return 0;
}

/* The one way out after an error: one line on stderr and, where the caller reads a JSON object
 * (--json for one conversation or --eval), an error object on stdout it cannot take for a result. */
static int fail_exit(const Opts *o, const char *err) {
    fprintf(stderr, "run: %s\n", err);
    if (o->json && !o->batch && !o->info && !o->verify && !o->ids && !o->show_prompt && !o->show_tokens && !o->tokenize && !o->detokenize) {
        print_error_json(stdout, NULL, NULL, 0, err);
        fflush(stdout);
    }
    return 2;
}

int main(int argc, char **argv) {
    Opts o;
    if (parse_opts(argc, argv, &o)) return 2;
    char err[ERRLEN];
    if (o.serving) { /* the server takes over (server.c); the classification options become request defaults */
        ServeOptions so = o.serve;
        so.model = o.model, so.cache = o.cache, so.categories = o.categories, so.exclude = o.exclude, so.threshold = o.threshold;
        so.ctx = o.ctx, so.threads = o.threads, so.no_cache = o.no_cache, so.no_prepack = o.no_prepack, so.chat_flags = o.chat_flags;
        if (serve(&so, err)) { fprintf(stderr, "run: %s\n", err); return 2; }
        return 0;
    }
    Guard g;
    int audit = o.info || o.verify || o.ids;
    /* audit modes work on any guard.bin, even one without tokenizer/prompt sections */
    if (audit ? model_open(&g.model, o.model, o.threads, err) : guard_open(&g, o.model, o.threads, err)) return fail_exit(&o, err);
    if (o.ctx > (long long)g.model.cfg.max_seq_len) {
        errf(err, "--ctx %lld is outside the valid range 1..%u (this model's context)", o.ctx, g.model.cfg.max_seq_len);
        if (audit) model_close(&g.model);
        else guard_close(&g);
        return fail_exit(&o, err);
    }
    /* Prepacking pays off over many forwards; one verdict is faster without (guard.h). */
    if (o.prepack || (!o.no_prepack && (o.batch || o.eval))) model_prepack(&g.model);
    if (o.verbose) {
        fprintf(stderr, "run: %d threads, kernels: %s\n", g.model.n_threads, kernels_init());
        if (g.model.packed_bytes) fprintf(stderr, "run: weights prepacked into tiles (%.0f MiB)\n", (double)g.model.packed_bytes / 1048576.0);
        else fprintf(stderr, "run: %s\n", dtype_tiled(g.model.w.lm_head.dtype) ? "weights read in place (stored in tile order)"
                                                                            : "weights packed into tiles per call");
    }
    int rc = 0;
    char cache_path[4096] = "", warn[ERRLEN];
    int classifying = !audit && !o.tokenize && !o.detokenize && !o.show_prompt && !o.show_tokens;
    uint64_t cache_max = o.cache_max_mb >= 0 ? (uint64_t)o.cache_max_mb << 20 : CACHE_MAX_DEFAULT;
    g.no_prefix_store = audit ? 1 : o.no_cache;
    g.cache_max_bytes = cache_max ? cache_max : 1; /* --cache-max 0: nothing fits (0 would mean the default) */
    if ((classifying || o.info) && !o.no_cache) {
        if (guard_cache_locate(&g.model, o.model, o.cache, cache_path, sizeof cache_path, warn)) {
            fprintf(stderr, "run: warning: %s; the prefix cache is off\n", warn);
            cache_path[0] = 0;
        } else if (o.verbose) fprintf(stderr, "run: prefix cache %s (at most %llu MiB in its directory)\n", cache_path, (unsigned long long)(cache_max >> 20));
    }
    if (classifying && rc == 0) rc = verify_weights(&g, &o, err);
    if (classifying && rc == 0 && cache_path[0]) {
        int lr = guard_cache_load(&g, cache_path, warn);
        if (lr < 0) fprintf(stderr, "run: warning: %s\n", warn);
        else if (lr == 0 && o.verbose) fprintf(stderr, "run: loaded prefix cache %s\n", cache_path);
    }
    if (o.info) print_info(&g.model, cache_path[0] ? cache_path : o.no_cache ? "off (--no-cache)" : "off");
    if (o.verify && rc == 0) {
        if (gb_verify(&g.model.file, err)) rc = -1;
        else printf("%s: ok (data checksum %08x)\n", o.model, g.model.file.data_crc);
    }
    if (o.ids && rc == 0) rc = run_ids(&g.model, &o, err);
    if (!audit && rc == 0) rc = o.tokenize || o.detokenize ? run_tokenizer(&g, &o, err) : o.batch || o.eval ? run_batch(&g, &o, err) : run_classify(&g, &o, err);
    if (rc >= 0 && cache_path[0] && g.prefixes.dirty && guard_cache_save(&g, cache_path, warn))
        fprintf(stderr, "run: warning: %s (the next run computes the prefix again)\n", warn);
    /* Every write is checked: a verdict that never reached its reader is an error, not a success. */
    if (rc >= 0 && (fflush(stdout) != 0 || ferror(stdout))) rc = errf(err, "write to standard output failed: %s", strerror(errno ? errno : EIO));
    if (audit) model_close(&g.model);
    else guard_close(&g);
    return rc < 0 ? fail_exit(&o, err) : rc;
}
