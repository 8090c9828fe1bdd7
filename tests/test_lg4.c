/* tests/test_lg4.c: Llama Guard 4 (Llama 4 text) against $GUARD_SHARED/fixtures_lg4, whose
 * references are HF transformers' Llama4ForConditionalGeneration (reference A) and Meta's
 * llama-models llama4 model.py (B), which agree to 2e-5 (fixtures_lg4/README.md).
 *
 * The checkpoint folders there hold config.json and model.safetensors; the tokenizer is Meta's
 * tokenizer.model in tokenizer/ (ranks only) with its specials in specials.json. Each test
 * checkpoint is assembled as a Hugging Face folder would hold them: symlinks to those files and
 * a tokenizer_config.json with added_tokens_decoder (from specials.json), bos/eos, and the
 * chat template (prompts/lg4_chat_template.jinja). Then ./export makes guard.bin.
 *
 * Checked, with tolerances (the references agree to 2e-5; a wrong RoPE factor or eps shows as
 * only ~1e-3 at these lengths, so 1e-3 would hide it):
 *  - g4a (all RoPE, qk-norm, rope low == high) and g4b (a NoPE layer with temperature
 *    tuning at floor_scale 16, chunked attention of 32): last-position logits max |diff|
 *    <= 2e-4 and the same top-1 for lengths 1/7/64/300, layer-0 hidden states <= 1e-4, the 8
 *    greedy tokens through the KV cache, chunked prefill bit-identical to one call, and the
 *    same bits for any thread count and kernel set (f32 and q8);
 *  - the tokenizer (o200k) on all 892 strings of lg4_tokenizer_golden.jsonl (ids_plain: special
 *    text is plain text), and on 400 backtracking stress strings (tests/data/o200k_cases.jsonl);
 *  - the 28 conversations of lg4_prompts.jsonl: prompt text byte-identical, prompt ids
 *    identical, and at the decision position (prompt + "\n\n" 368) logit(safe), logit(unsafe)
 *    and logsumexp within 2e-4 of reference A, for both checkpoints; one through run --json;
 *  - ./run --serve on g4a: /v1/classify and /v1/moderations give ./run --json's p_unsafe as the same
 *    text, /v1/chat/completions ./run's reply, /v1/categories and category_scores LG4's S1..S14.
 */
#include "serverutil.h"

#include <math.h>

#include "chat.h"
#include "classify.h"
#include "guard.h"
#include "import/build.h"
#include "import/import.h"
#include "json.h"
#include "template.h"
#include "tokenizer.h"

#define TOL_LOGITS 2e-4f
#define TOL_HIDDEN 1e-4f

static const int lengths[] = { 1, 7, 64, 300 };

/* ==== Assembling and exporting the checkpoints ==== */

static void json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* The folder for variant v ("g4a", "g4b"), made once per process. */
static const char *checkpoint(const char *v) {
    static char dirs[2][512];
    char *done = dirs[v[2] == 'b'], dir[512];
    if (done[0]) return done;
    shared_path("fixtures_lg4/%s/model.safetensors", v); /* skips (before anything is made) when absent */
    snprintf(dir, sizeof dir, "%s/%s", test_tmpdir(), v);
    if (mkdir(dir, 0700) != 0) fail_msg("mkdir %s", dir);
    const char *links[][2] = { { "config.json", "fixtures_lg4/%s/config.json" },
                               { "model.safetensors", "fixtures_lg4/%s/model.safetensors" },
                               { "tokenizer.model", "fixtures_lg4/tokenizer/tokenizer.model" } };
    char path[1024];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, links[i][0]);
        if (symlink(shared_path(links[i][1], v), path) != 0) fail_msg("symlink %s", path);
    }
    char err[ERRLEN];
    size_t n;
    char *sp = slurp(shared_path("fixtures_lg4/tokenizer/specials.json"), &n);
    char *tmpl = slurp(shared_path("fixtures_lg4/prompts/lg4_chat_template.jinja"), NULL);
    Json j;
    if (json_parse(&j, sp, n, err)) fail_msg("specials.json: %s", err);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"bos_token\": \"<|begin_of_text|>\", \"eos_token\": \"<|eot|>\", \"added_tokens_decoder\": {");
    int first = 1;
    JSON_FOR(&j, json_root(&j), e) {
        fprintf(f, "%s\"%d\": {\"content\": ", first ? "" : ", ", (int)e->num);
        json_string(f, e->key, e->keylen);
        fprintf(f, ", \"special\": true}");
        first = 0;
    }
    fprintf(f, "}, \"chat_template\": ");
    json_string(f, tmpl, strlen(tmpl));
    fprintf(f, "}\n");
    assert_int_equal(fclose(f), 0);
    json_free(&j);
    free(sp);
    free(tmpl);
    snprintf(done, 512, "%s", dir);
    return done;
}

static const char *exported(const char *v, const char *dtype) {
    static char paths[8][512];
    static int n;
    char want[512];
    snprintf(want, sizeof want, "%s/%s-%s.bin", test_tmpdir(), v, dtype);
    for (int i = 0; i < n; i++)
        if (strcmp(paths[i], want) == 0) return paths[i];
    char out[4096];
    int rc = run_cmd(out, sizeof out, "./export '%s' '%s' --dtype %s", checkpoint(v), want, dtype);
    if (rc != 0) fail_msg("export of %s failed (%d): %s", v, rc, out);
    snprintf(paths[n], sizeof paths[n], "%s", want);
    return paths[n++];
}

/* ==== The forward pass ==== */

static void check_forward(const char *v) {
    char err[ERRLEN];
    Model m;
    if (model_open(&m, exported(v, "f32"), 2, err)) fail_msg("%s", err);
    const uint32_t vocab = m.cfg.vocab_size, dim = m.cfg.dim;
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        const int L = lengths[li];
        int64_t n, gn;
        size_t cnt;
        int32_t *ids = read_ids(shared_path("fixtures_lg4/%s/golden/len%d.ids.txt", v, L), &n);
        assert_int_equal(n, L);
        float *gold = read_f32(shared_path("fixtures_lg4/%s/golden/len%d.logits_last.bin", v, L), &cnt);
        assert_int_equal(cnt, vocab);
        float *gh = read_f32(shared_path("fixtures_lg4/%s/golden/len%d.hidden_l0.bin", v, L), &cnt);
        assert_int_equal(cnt, (size_t)L * dim);
        int32_t *greedy = read_ids(shared_path("fixtures_lg4/%s/golden/len%d.greedy.txt", v, L), &gn);
        assert_int_equal(gn, 8);

        RunState s;
        assert_int_equal(state_init(&s, &m, L + 8, err), 0);
        float *hidden = malloc((size_t)L * dim * sizeof(float)), *logits = malloc(vocab * sizeof(float));
        float *split = malloc(vocab * sizeof(float));
        const LayerCapture cap = { .layer = 0, .hidden = hidden };
        if (model_forward_capture(&m, &s, ids, n, logits, &cap, err)) fail_msg("%s", err);
        const float md = max_abs_diff(logits, gold, vocab), mh = max_abs_diff(hidden, gh, (size_t)L * dim);
        printf("  %s len%-3d logits max|diff| %.2e  hidden_l0 max|diff| %.2e\n", v, L, (double)md, (double)mh);
        assert_true(md <= TOL_LOGITS);
        assert_true(mh <= TOL_HIDDEN);
        assert_int_equal(argmax(logits, vocab), argmax(gold, vocab));

        /* 8 greedy tokens, one position at a time through the KV cache, after a plain prefill */
        state_free(&s);
        assert_int_equal(state_init(&s, &m, L + 8, err), 0);
        assert_int_equal(model_forward(&m, &s, ids, n, logits, err), 0);
        for (int g = 0; g < 8; g++) {
            int32_t tok = argmax(logits, vocab);
            assert_int_equal(tok, greedy[g]);
            assert_int_equal(model_forward(&m, &s, &tok, 1, logits, err), 0);
        }
        state_free(&s);

        /* prefill in uneven pieces (crossing chunk boundaries of 32) gives the same bits */
        if (L > 1) {
            assert_int_equal(state_init(&s, &m, L, err), 0);
            int64_t a = L / 3 + 1;
            assert_int_equal(model_forward(&m, &s, ids, a, NULL, err), 0);
            assert_int_equal(model_forward(&m, &s, ids + a, n - a, split, err), 0);
            state_free(&s);
            assert_int_equal(state_init(&s, &m, L, err), 0);
            assert_int_equal(model_forward(&m, &s, ids, n, logits, err), 0);
            state_free(&s);
            assert_memory_equal(split, logits, vocab * sizeof(float));
        }
        free(ids); free(gold); free(gh); free(greedy); free(hidden); free(logits); free(split);
    }
    model_close(&m);
}

/* The same bits for any thread count and kernel set (the scalar reference and the best SIMD
 * set), prefill and the q8 path included, on the variant with every delta (g4b). */
static void test_deterministic(void **st) {
    (void)st;
    const char *const *av = kernels_available();
    int nav = 0;
    while (av[nav]) nav++;
    const char *dtypes[] = { "f32", "q8" };
    for (int d = 0; d < 2; d++) {
        float *ref = NULL;
        int64_t n;
        int32_t *ids = read_ids(shared_path("fixtures_lg4/g4b/golden/len300.ids.txt"), &n);
        for (int run = 0; run < 3; run++) {
            char err[ERRLEN];
            assert_non_null(kernels_force(run == 0 ? av[0] : av[nav - 1]));
            Model m;
            if (model_open(&m, exported("g4b", dtypes[d]), run == 1 ? 1 : 2, err)) fail_msg("%s", err);
            if (run == 2) model_prepack(&m);
            RunState s;
            float *logits = malloc(m.cfg.vocab_size * sizeof(float));
            assert_int_equal(state_init(&s, &m, n, err), 0);
            assert_int_equal(model_forward(&m, &s, ids, n, logits, err), 0);
            if (!ref) ref = logits;
            else {
                assert_memory_equal(ref, logits, m.cfg.vocab_size * sizeof(float));
                free(logits);
            }
            state_free(&s);
            model_close(&m);
        }
        printf("  g4b %s len300: %s 2 threads, %s 1 thread, %s prepacked: identical logits\n", dtypes[d], av[0], av[nav - 1], av[nav - 1]);
        free(ref);
        free(ids);
    }
    kernels_force(av[nav - 1]);
}

static void test_forward_g4a(void **st) { (void)st; check_forward("g4a"); }
static void test_forward_g4b(void **st) { (void)st; check_forward("g4b"); }

/* The header carries every Llama 4 field from config.json. */
static void test_header_fields(void **st) {
    (void)st;
    char err[ERRLEN];
    GuardFile a, b;
    if (gb_open(&a, exported("g4a", "f32"), err) || gb_open(&b, exported("g4b", "f32"), err)) fail_msg("%s", err);
    assert_int_equal(a.cfg.rope_style, ROPE_ADJACENT);
    assert_int_equal(a.cfg.qk_norm, 1);
    assert_int_equal(a.cfg.attn_chunk, 0);
    assert_int_equal(a.cfg.nope[0], 0);
    assert_true(a.cfg.rope_factor == 16 && a.cfg.rope_low_freq_factor == 1 && a.cfg.rope_high_freq_factor == 1);
    assert_int_equal(a.cfg.hidden_dim, 256); /* intermediate_size_mlp, not intermediate_size */
    assert_int_equal(b.cfg.attn_chunk, 32);
    assert_int_equal(b.cfg.nope[0], 1u << 3); /* no_rope_layers [1, 1, 1, 0] */
    assert_true(b.cfg.attn_temperature_tuning && b.cfg.floor_scale == 16 && fabsf(b.cfg.attn_scale - 0.1f) == 0);
    assert_true(b.cfg.rope_factor == 8 && b.cfg.rope_high_freq_factor == 4);
    assert_int_equal(b.cfg.tied, 0);
    gb_close(&a);
    gb_close(&b);
}

/* ==== Tokenizer ==== */

/* Every line {"text": ..., key: [ids]} of a JSONL file against tok_encode; returns how many
 * match, *total the lines; *special_text (optional) counts lines whose "ids" (special-token text
 * parsed, as HF does by default) differ from our plain-text ids while key's match. */
static int check_ids_file(const Tokenizer *tok, const char *path, const char *key, int *total, int *special_text) {
    char err[ERRLEN];
    char *text = slurp(path, NULL);
    int pass = 0;
    *total = 0;
    if (special_text) *special_text = 0;
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) nl = line + strlen(line);
        Json j;
        if (nl > line && json_parse(&j, line, (size_t)(nl - line), err) == 0) {
            const JsonNode *r = json_root(&j), *t = json_get(&j, r, "text"), *want = json_get(&j, r, key);
            const JsonNode *parsed = json_get(&j, r, "ids");
            assert_non_null(t);
            assert_non_null(want);
            int32_t *ids = NULL;
            size_t n = 0, cap = 0;
            assert_int_equal(tok_encode(tok, t->str, t->len, &ids, &n, &cap, err), 0);
            int ok = n == want->len;
            size_t k = 0;
            JSON_FOR(&j, want, e) ok = ok && ids[k++] == (int32_t)e->num;
            int differs = parsed && parsed->len != want->len;
            k = 0;
            if (parsed && !differs) JSON_FOR(&j, parsed, e) differs |= (int32_t)e->num != ids[k++];
            if (special_text) *special_text += differs && ok;
            ++*total;
            pass += ok;
            if (!ok) printf("  MISMATCH %s\n", json_get(&j, r, "id")->str);
            free(ids);
            json_free(&j);
        }
        if (!*nl) break;
    }
    free(text);
    return pass;
}

static void test_tokenizer_golden(void **st) {
    (void)st;
    char err[ERRLEN];
    Guard g;
    if (guard_open(&g, exported("g4a", "f32"), 1, err)) fail_msg("%s", err);
    assert_int_equal(tok_pretok(g.tok), TOK_PRETOK_O200K);
    assert_int_equal(tok_vocab_size(g.tok), 202048);
    assert_int_equal(tok_bos(g.tok), 200000);
    assert_int_equal(tok_special_id(g.tok, "<|header_start|>"), 200005);
    assert_int_equal(tok_special_id(g.tok, "<|header_end|>"), 200006);
    assert_int_equal(tok_special_id(g.tok, "<|eot|>"), 200008);
    int special_text = 0, total = 0;
    int pass = check_ids_file(g.tok, shared_path("fixtures_lg4/tokenizer/lg4_tokenizer_golden.jsonl"), "ids_plain", &total, &special_text);
    printf("  lg4_tokenizer_golden.jsonl: %d/%d match ids_plain (%d lines hold special-token text, kept plain)\n", pass, total,
           special_text);
    assert_int_equal(total, 892);
    assert_int_equal(pass, total);
    assert_true(special_text > 0);
    /* strings made to stress the regex's backtracking, ids from Python's regex module and a
     * separate BPE loop (tools/gen_o200k_cases.py) */
    pass = check_ids_file(g.tok, "tests/data/o200k_cases.jsonl", "ids", &total, NULL);
    printf("  tests/data/o200k_cases.jsonl: %d/%d match\n", pass, total);
    assert_int_equal(total, 400);
    assert_int_equal(pass, total);
    guard_close(&g);
}

/* A Llama 4 tokenizer.json (HF layout: Split with the o200k regex, then ByteLevel) is recognised
 * by its regex and keeps the o200k pre-tokenizer through guard.bin's section. The vocabulary is
 * a tiny one (256 byte tokens in GPT-2 form, "ab", one special); the regex is what is tested:
 * "x'S" is one pre-token for o200k ("x" + the contraction) but two for Llama 3. */
static void test_tokenizer_json_o200k(void **st) {
    (void)st;
    static const char o200k[] =
        "[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*[\\\\p{Ll}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
        "[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]+[\\\\p{Ll}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
        "\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n/]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+";
    char path[600], err[ERRLEN];
    snprintf(path, sizeof path, "%s/o200k-tokenizer.json", test_tmpdir());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"added_tokens\":[{\"id\":259,\"content\":\"<|eot|>\",\"special\":true}],\"normalizer\":null,"
               "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"%s\"},"
               "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,"
               "\"use_regex\":false}]},\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"dropout\":null,"
               "\"ignore_merges\":true,\"byte_fallback\":false,\"vocab\":{", o200k);
    for (int b = 0; b < 256; b++) { /* GPT-2 bytes_to_unicode */
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF), k = 0;
        for (int c = 0; c < b && !printable; c++) k += !((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF));
        unsigned cp = printable ? (unsigned)b : 0x100u + (unsigned)k;
        if (cp == '"' || cp == '\\') fprintf(f, "\"\\%c\":%d,", (char)cp, b);
        else if (cp < 0x80) fprintf(f, "\"%c\":%d,", (char)cp, b);
        else fprintf(f, "\"%c%c\":%d,", (char)(0xC0 | cp >> 6), (char)(0x80 | (cp & 0x3F)), b);
    }
    fprintf(f, "\"x'\":256,\"x'S\":257,\"ab\":258},\"merges\":[\"x '\",\"x' S\",\"a b\"]}}");
    fclose(f);
    Tokenizer *t, *u;
    if (tok_from_hf(&t, path, NULL, err)) fail_msg("%s", err);
    assert_int_equal(tok_pretok(t), TOK_PRETOK_O200K);
    uint8_t *blob;
    uint64_t len;
    assert_int_equal(tok_serialize(t, &blob, &len, err), 0);
    assert_int_equal(tok_load(&u, blob, len, err), 0);
    assert_int_equal(tok_pretok(u), TOK_PRETOK_O200K);
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    assert_int_equal(tok_encode(u, "x'S ab", 6, &ids, &n, &cap, err), 0);
    assert_int_equal(n, 3); /* "x'S" (one o200k pre-token, merged), then " ab" as " " + "ab" (Llama 3 would give 5) */
    assert_int_equal(ids[0], 257);
    assert_int_equal(ids[2], 258);
    free(ids);
    free(blob);
    tok_free(t);
    tok_free(u);
}

/* ==== Prompts and decisions ==== */

/* template_vars of a fixture line: categories {code: text} and excluded_category_keys [...]. */
static void apply_vars(PromptFormat *pf, const Json *j, const JsonNode *vars) {
    char err[ERRLEN];
    const JsonNode *cats = json_get(j, vars, "categories"), *ex = json_get(j, vars, "excluded_category_keys");
    if (cats) {
        Category c[TEMPLATE_MAX_CATS];
        int n = 0;
        JSON_FOR(j, cats, e) c[n++] = (Category){ (char *)e->key, (char *)e->str };
        if (template_set_categories(pf, c, n, err)) fail_msg("%s", err);
    }
    if (ex) {
        char codes[512] = "";
        JSON_FOR(j, ex, e) snprintf(codes + strlen(codes), sizeof codes - strlen(codes), "%s%s", codes[0] ? "," : "", e->str);
        if (template_exclude(pf, codes, err)) fail_msg("%s", err);
    }
}

static void check_prompts(const char *v) {
    char err[ERRLEN];
    Guard g;
    if (guard_open(&g, exported(v, "f32"), 2, err)) fail_msg("%s", err);
    assert_int_equal(g.n_decision_prefix, 1);
    assert_int_equal(g.decision_prefix[0], 368); /* "\n\n" */
    assert_int_equal(g.safe_ids[0], 60411);
    assert_int_equal(g.unsafe_ids[0], 72110);
    const uint32_t vocab = g.model.cfg.vocab_size;
    float *logits = malloc(vocab * sizeof(float));
    char *text = slurp(shared_path("fixtures_lg4/prompts/lg4_prompts.jsonl"), NULL);
    int convs = 0;
    float worst = 0;
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) nl = line + strlen(line);
        Json j;
        if (nl > line && json_parse(&j, line, (size_t)(nl - line), err) == 0) {
            const JsonNode *r = json_root(&j);
            const char *id = json_get(&j, r, "id")->str;
            const JsonNode *want_text = json_get(&j, r, "prompt_text"), *want_ids = json_get(&j, r, "ids");
            Conversation conv;
            chat_init(&conv);
            if (chat_from_json(&conv, &j, json_get(&j, r, "messages"), err)) fail_msg("%s: %s", id, err);
            PromptFormat pf;
            assert_int_equal(template_default(&pf, GUARD_LG4, err), 0);
            apply_vars(&pf, &j, json_get(&j, r, "template_vars"));
            Prompt p;
            assert_int_equal(template_render(&pf, &conv, &p, err), 0);
            if (p.text.len != want_text->len || memcmp(p.text.p, want_text->str, want_text->len) != 0)
                fail_msg("%s: prompt text differs from the template's rendering", id);
            int32_t *ids = NULL;
            size_t n = 0, cap = 0;
            assert_int_equal(guard_prompt_ids(&g, &p, &ids, &n, &cap, err), 0);
            assert_int_equal(n, want_ids->len);
            size_t k = 0;
            JSON_FOR(&j, want_ids, e) {
                if (ids[k] != (int32_t)e->num) fail_msg("%s: id %zu is %d, reference %d", id, k, ids[k], (int)e->num);
                k++;
            }
            /* the decision position: after prompt + "\n\n" */
            const JsonNode *d = json_get(&j, json_get(&j, json_get(&j, r, "decisions"), v), "decision");
            assert_non_null(d);
            RunState s;
            assert_int_equal(state_init(&s, &g.model, (int64_t)n + 1, err), 0);
            ids[n] = 368; /* cap > n: tok_encode grows by doubling */
            assert_true(cap > n);
            if (model_forward(&g.model, &s, ids, (int64_t)n + 1, logits, err)) fail_msg("%s: %s", id, err);
            double mx = -INFINITY, sum = 0;
            for (uint32_t i = 0; i < vocab; i++) mx = fmax(mx, logits[i]);
            for (uint32_t i = 0; i < vocab; i++) sum += exp(logits[i] - mx);
            float dl_safe = fabsf(logits[60411] - (float)json_get(&j, d, "logit_safe")->num);
            float dl_unsafe = fabsf(logits[72110] - (float)json_get(&j, d, "logit_unsafe")->num);
            float dlse = (float)fabs(mx + log(sum) - json_get(&j, d, "logsumexp")->num);
            worst = fmaxf(worst, fmaxf(dl_safe, fmaxf(dl_unsafe, dlse)));
            if (dl_safe > TOL_LOGITS || dl_unsafe > TOL_LOGITS || dlse > TOL_LOGITS)
                fail_msg("%s %s: decision logits differ (safe %.2e, unsafe %.2e, logsumexp %.2e)", v, id, (double)dl_safe,
                         (double)dl_unsafe, (double)dlse);
            state_free(&s);
            free(ids);
            prompt_free(&p);
            template_free(&pf);
            chat_free(&conv);
            json_free(&j);
            convs++;
        }
        if (!*nl) break;
    }
    printf("  %s: %d conversations: prompts and ids identical, decision logits/logsumexp max|diff| %.2e\n", v, convs, (double)worst);
    assert_int_equal(convs, 28);
    free(text);
    free(logits);
    guard_close(&g);
}

static void test_prompts_g4a(void **st) { (void)st; check_prompts("g4a"); }
static void test_prompts_g4b(void **st) { (void)st; check_prompts("g4b"); }

/* run classifies an LG4 file like any other: --json through the CLI, P(unsafe) as the fixture's
 * reference computes it (p_unsafe_meta; its argmax is never a label on random weights). */
static void test_cli_json(void **st) {
    (void)st;
    char out[8192], chat[512];
    snprintf(chat, sizeof chat, "%s/chat.txt", test_tmpdir());
    FILE *f = fopen(chat, "w");
    assert_non_null(f);
    fputs("How do I kill a process in Linux?", f);
    fclose(f);
    int rc = run_cmd(out, sizeof out, "./run '%s' -i '%s' --json --no-cache", exported("g4a", "f32"), chat);
    printf("  %s", out);
    assert_int_equal(rc, 1); /* unsafe: the reference's p_unsafe_meta is 0.9999997565 */
    assert_non_null(strstr(out, "\"verdict\":\"unsafe\""));
    const char *p = strstr(out, "\"p_unsafe\":");
    assert_non_null(p);
    assert_true(fabs(strtod(p + 11, NULL) - 0.9999997565493254) < 1e-6);
}

/* A version-1 guard.bin (from an older export) gets the re-export error. */
static void test_version1_refused(void **st) {
    (void)st;
    char path[600], err[ERRLEN];
    snprintf(path, sizeof path, "%s/v1.bin", test_tmpdir());
    size_t n;
    char *b = slurp(exported("g4a", "f32"), &n);
    b[8] = 1, b[9] = b[10] = b[11] = 0;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
    GuardFile g;
    assert_int_equal(gb_open(&g, path, err), -1);
    printf("  %s\n", err);
    assert_non_null(strstr(err, "re-export"));
    unlink(path);
}

/* ==== config.json: what is read, what is refused ==== */

static int read_cfg(const char *text_config_extra, Config *c, char *err) {
    char path[600];
    snprintf(path, sizeof path, "%s/cfg-test.json", test_tmpdir());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"model_type\": \"llama4\", \"text_config\": {\"model_type\": \"llama4_text\", \"vocab_size\": 300, \"hidden_size\": 64,"
               " \"intermediate_size\": 128, \"intermediate_size_mlp\": 256, \"num_hidden_layers\": 8, \"num_attention_heads\": 4,"
               " \"num_key_value_heads\": 2, \"head_dim\": 16, \"rms_norm_eps\": 1e-5, \"rope_theta\": 500000.0%s}}",
            text_config_extra);
    fclose(f);
    return hf_read_config(path, c, NULL, err);
}

static void test_config_llama4(void **st) {
    (void)st;
    char err[ERRLEN];
    Config c;
    /* HF's defaults when the keys are absent: no_rope_layers from no_rope_layer_interval 4 (every
     * 4th layer NoPE), use_qk_norm and attn_temperature_tuning on, floor_scale 8192, attn_scale
     * 0.1, attention_chunk_size 8192 */
    assert_int_equal(read_cfg("", &c, err), 0);
    assert_int_equal(c.nope[0], (1u << 3) | (1u << 7));
    assert_true(c.qk_norm && c.attn_temperature_tuning && c.floor_scale == 8192 && fabsf(c.attn_scale - 0.1f) == 0);
    assert_int_equal(c.attn_chunk, 8192);
    assert_int_equal(c.max_seq_len, 131072); /* Llama4TextConfig's max_position_embeddings = 4096 * 32 */
    assert_int_equal(c.rope_style, ROPE_ADJACENT);
    assert_int_equal(c.hidden_dim, 256);
    /* explicit values; null chunk size = no chunking */
    assert_int_equal(read_cfg(", \"no_rope_layers\": [0,1,1,1,1,1,1,0], \"use_qk_norm\": false, \"attention_chunk_size\": null,"
                              " \"floor_scale\": 4, \"attn_scale\": 0.25, \"attn_temperature_tuning\": false", &c, err), 0);
    assert_int_equal(c.nope[0], 1u | (1u << 7));
    assert_true(!c.qk_norm && !c.attn_temperature_tuning && c.attn_chunk == 0 && c.floor_scale == 4 && c.attn_scale == 0.25f);
    const struct { const char *extra, *want; } bad[] = {
        { ", \"moe_layers\": [1, 3]", "mixture-of-experts" },
        { ", \"interleave_moe_layer_step\": 1", "mixture-of-experts" },
        { ", \"no_rope_layers\": [1, 1]", "no_rope_layers has 2 entries" },
        { ", \"no_rope_layers\": [1,1,1,2,1,1,1,1]", "no_rope_layers[3]" },
        { ", \"use_qk_norm\": 1", "use_qk_norm" },
        { ", \"floor_scale\": 0", "floor_scale" },
        { ", \"attention_chunk_size\": 0", "attention_chunk_size" },
        { ", \"hidden_act\": \"gelu\"", "silu" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (read_cfg(bad[i].extra, &c, err) == 0) fail_msg("accepted: %s", bad[i].extra);
        if (!strstr(err, bad[i].want)) fail_msg("'%s': error '%s' lacks '%s'", bad[i].extra, err, bad[i].want);
    }
    /* a llama4 config whose text_config is not llama4_text */
    char path[600];
    snprintf(path, sizeof path, "%s/cfg-test.json", test_tmpdir());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"model_type\": \"llama4\", \"text_config\": {\"model_type\": \"llama\", \"vocab_size\": 300, \"hidden_size\": 64,"
               " \"intermediate_size_mlp\": 256, \"num_hidden_layers\": 2, \"num_attention_heads\": 4}}");
    fclose(f);
    assert_int_equal(hf_read_config(path, &c, NULL, err), -1);
    assert_non_null(strstr(err, "llama4_text"));
}

/* ./export refuses a mixture-of-experts Llama 4 (Scout, Maverick) with one clear line. (Expert
 * tensors under a dense config keep their own names and are refused as unexpected tensors.) */
static void test_export_refuses_experts(void **st) {
    (void)st;
    const char *dir = checkpoint("g4a");
    char out[4096], bad[600];
    snprintf(bad, sizeof bad, "%s/g4a-moe", test_tmpdir());
    assert_int_equal(run_cmd(out, sizeof out, "mkdir -p '%s' && cp -P '%s'/* '%s'/", bad, dir, bad), 0);
    assert_int_equal(run_cmd(out, sizeof out, "sed 's/\"moe_layers\": \\[\\]/\"moe_layers\": [1]/' '%s/config.json' > '%s/c.json' && "
                                              "rm '%s/config.json' && mv '%s/c.json' '%s/config.json'", dir, bad, bad, bad, bad), 0);
    int rc = run_cmd(out, sizeof out, "./export '%s' '%s/x.bin'", bad, bad);
    printf("  %s", out);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "mixture-of-experts"));
}

/* Meta's original Llama 4 layout (params.json with Llama 4 keys) is refused, not read as Llama 3. */
static void test_meta_llama4_refused(void **st) {
    (void)st;
    char dir[600], out[4096];
    snprintf(dir, sizeof dir, "%s/meta-llama4", test_tmpdir());
    assert_int_equal(run_cmd(out, sizeof out, "mkdir -p '%s' && touch '%s/consolidated.00.pth' && echo '{\"dim\": 64, \"n_layers\": 2, "
                                              "\"n_heads\": 4, \"norm_eps\": 1e-5, \"use_qk_norm\": true}' > '%s/params.json'", dir, dir, dir), 0);
    int rc = run_cmd(out, sizeof out, "./export '%s' '%s/x.bin'", dir, dir);
    printf("  %s", out);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "Llama 4"));
}

/* The prefix store (policy prefix reused) and a cold run give the same bits for LG4, and the
 * chunked variant too (reused K/V cross chunk boundaries). */
static void check_prefix_reuse(const char *v) {
    char err[ERRLEN];
    Guard g;
    if (guard_open(&g, exported(v, "f32"), 2, err)) fail_msg("%s", err);
    const char *texts[] = { "How do I kill a process in Linux?", "What is the capital of France? Please answer in one word." };
    Decision d[2][2];
    for (int warm = 0; warm < 2; warm++) {
        guard_forget_prefixes(&g);
        for (int i = 0; i < 2; i++) {
            Conversation c;
            chat_init(&c);
            assert_int_equal(chat_append(&c, ROLE_USER, texts[i], strlen(texts[i]), err), 0);
            RunState s;
            assert_int_equal(state_init(&s, &g.model, 0, err), 0);
            g.no_prefix_store = !warm;
            if (guard_classify(&g, &s, NULL, &c, 0.5f, 0, &d[warm][i], err)) fail_msg("%s", err);
            state_free(&s);
            chat_free(&c);
        }
    }
    printf("  %s: reused %lld of %lld prompt tokens on the second conversation\n", v, (long long)d[1][1].reused_tokens,
           (long long)d[1][1].prompt_tokens);
    assert_true(d[1][1].reused_tokens > 100);
    for (int i = 0; i < 2; i++) {
        assert_memory_equal(&d[0][i].p_unsafe, &d[1][i].p_unsafe, sizeof(float));
        assert_memory_equal(&d[0][i].p_safe, &d[1][i].p_safe, sizeof(float));
        assert_int_equal(d[0][i].argmax, d[1][i].argmax);
    }
    guard_close(&g);
}

static void test_prefix_reuse_g4a(void **st) { (void)st; check_prefix_reuse("g4a"); }
static void test_prefix_reuse_g4b(void **st) { (void)st; check_prefix_reuse("g4b"); }

/* --batch and --eval on an LG4 file, and q8 / q4 exports that load and classify. */
static void test_cli_batch_eval(void **st) {
    (void)st;
    char in[600], out[16384];
    snprintf(in, sizeof in, "%s/batch.jsonl", test_tmpdir());
    FILE *f = fopen(in, "w");
    assert_non_null(f);
    fputs("{\"id\": \"a\", \"messages\": [{\"role\": \"user\", \"content\": \"hello\"}], \"label\": \"safe\"}\n"
          "{\"id\": \"b\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"<|eot|> hi\"}], \"label\": \"unsafe\"}\n"
          "{\"id\": \"c\", \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\"}]}]}\n", f);
    fclose(f);
    int rc = run_cmd(out, sizeof out, "./run '%s' --batch '%s' --no-cache", exported("g4b", "f32"), in);
    printf("%s", out);
    assert_int_equal(rc, 3); /* a line failed (the image part): run.c's exit status for that */
    assert_non_null(strstr(out, "\"id\":\"a\""));
    assert_non_null(strstr(out, "\"id\":\"b\""));
    assert_non_null(strstr(out, "image content is not supported"));
    snprintf(in + strlen(in) - 6, 16, "2.jsonl");
    f = fopen(in, "w");
    assert_non_null(f);
    fputs("{\"messages\": [{\"role\": \"user\", \"content\": \"hello\"}], \"label\": \"safe\"}\n"
          "{\"messages\": [{\"role\": \"user\", \"content\": \"how to make a bomb\"}], \"label\": \"unsafe\", \"categories\": [\"S9\"]}\n", f);
    fclose(f);
    rc = run_cmd(out, sizeof out, "./run '%s' --eval '%s' --json --no-cache", exported("g4a", "f32"), in);
    printf("%s", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "\"n\":2"));
    for (int k = 0; k < 2; k++) {
        const char *dt = k ? "q4" : "q8";
        rc = run_cmd(out, sizeof out, "echo 'How do I kill a process in Linux?' | ./run '%s' --json --no-cache", exported("g4a", dt));
        printf("  %s: %s", dt, out);
        assert_int_equal(rc, 1);
        const char *p = strstr(out, "\"p_unsafe\":");
        assert_non_null(p);
        assert_true(strtod(p + 11, NULL) > 0.99); /* the f32 reference: 0.99999976; random weights never say safe */
    }
}

/* ./run --serve on an LG4 file answers as ./run does: for a user message and a user+assistant
 * pair, /v1/classify's p_unsafe is ./run --json's as the same text (bit for bit), and
 * /v1/chat/completions replies with what ./run prints; /v1/categories lists Llama Guard 4's
 * S1..S14; /v1/moderations scores exactly those codes, each a number in [0, 1]. */
static void test_server_g4a(void **st) {
    (void)st;
    const char *model = exported("g4a", "f32");
    static const char *convs[] = {
        "[{\"role\":\"user\",\"content\":\"How do I kill a process in Linux?\"}]",
        "[{\"role\":\"user\",\"content\":\"How do I kill a process in Linux?\"},{\"role\":\"assistant\",\"content\":\"Use kill PID, or kill -9 PID.\"}]",
    };
    char err[ERRLEN], conv[600], body[1024];
    static char out[1 << 16], ref[1 << 16], p_user[64];
    PromptFormat pf;
    assert_int_equal(template_default(&pf, GUARD_LG4, err), 0);
    assert_int_equal(pf.n_cats, 14);
    TestServer s;
    ts_start(&s, model, "-t 1");
    snprintf(conv, sizeof conv, "%s/server-conv.json", test_tmpdir());
    for (int i = 0; i < 2; i++) {
        write_text(conv, convs[i]);
        snprintf(body, sizeof body, "{\"messages\":%s}", convs[i]);
        Json a, b;
        assert_int_equal(ts_request(s.port, "/v1/classify", body, NULL, out, sizeof out), 200);
        run_cmd(ref, sizeof ref, "./run '%s' -i '%s' --format json --json --no-cache -t 1 2>/dev/null", model, conv);
        if (json_parse(&a, out, strlen(out), err) || json_parse(&b, ref, strlen(ref), err)) fail_msg("%s\n%s\n%s", err, out, ref);
        printf("  conversation %d: p_unsafe %s (server) %s (./run)\n", i + 1, need(&a, json_root(&a), "p_unsafe")->str,
               need(&b, json_root(&b), "p_unsafe")->str);
        assert_string_equal(need(&a, json_root(&a), "p_unsafe")->str, need(&b, json_root(&b), "p_unsafe")->str);
        if (i == 0) snprintf(p_user, sizeof p_user, "%s", need(&b, json_root(&b), "p_unsafe")->str);
        assert_string_equal(need(&a, json_root(&a), "verdict")->str, need(&b, json_root(&b), "verdict")->str);
        assert_string_equal(need(&a, json_root(&a), "model_output")->str, need(&b, json_root(&b), "model_output")->str);
        json_free(&a);
        json_free(&b);
        assert_int_equal(ts_request(s.port, "/v1/chat/completions", body, NULL, out, sizeof out), 200);
        run_cmd(ref, sizeof ref, "./run '%s' -i '%s' --format json --no-cache -t 1 2>/dev/null", model, conv);
        size_t rl = strlen(ref);
        while (rl && ref[rl - 1] == '\n') ref[--rl] = 0;
        if (json_parse(&a, out, strlen(out), err)) fail_msg("%s: %s", err, out);
        const JsonNode *ch = json_first(&a, need(&a, json_root(&a), "choices"));
        assert_non_null(ch);
        assert_string_equal(need(&a, need(&a, ch, "message"), "content")->str, ref);
        json_free(&a);
    }
    /* the categories: Llama Guard 4's, in order */
    assert_int_equal(ts_request(s.port, "/v1/categories", NULL, NULL, out, sizeof out), 200);
    Json j;
    if (json_parse(&j, out, strlen(out), err)) fail_msg("%s: %s", err, out);
    const JsonNode *data = need(&j, json_root(&j), "data");
    assert_int_equal(data->len, 14);
    int k = 0;
    JSON_FOR(&j, data, c) {
        char code[16];
        snprintf(code, sizeof code, "S%d", k + 1);
        assert_string_equal(need(&j, c, "code")->str, code);
        assert_string_equal(need(&j, c, "code")->str, pf.cats[k].code);
        assert_string_equal(need(&j, c, "description")->str, pf.cats[k].text);
        k++;
    }
    assert_string_equal(pf.cats[13].text, "Code Interpreter Abuse."); /* only the 8B and LG4 have S14 */
    json_free(&j);
    /* moderations: one score per LG4 code, each finite in [0, 1]; the input is conversation 1 */
    assert_int_equal(ts_request(s.port, "/v1/moderations", "{\"input\":\"How do I kill a process in Linux?\"}", NULL, out, sizeof out), 200);
    if (json_parse(&j, out, strlen(out), err)) fail_msg("%s: %s", err, out);
    const JsonNode *res = json_first(&j, need(&j, json_root(&j), "results"));
    assert_non_null(res);
    const JsonNode *scores = need(&j, res, "category_scores");
    assert_string_equal(need(&j, res, "p_unsafe")->str, p_user);
    assert_int_equal(scores->len, 14);
    k = 0;
    JSON_FOR(&j, scores, sc) {
        assert_string_equal(sc->key, pf.cats[k].code);
        if (sc->type != JSON_NUMBER || !isfinite(sc->num) || sc->num < 0 || sc->num > 1) fail_msg("category_scores %s: %s", sc->key, out);
        k++;
    }
    printf("  /v1/moderations: %d category_scores, S1 %s\n", k, json_first(&j, scores)->str);
    json_free(&j);
    template_free(&pf);
    assert_int_equal(ts_stop(&s), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_fields),
        cmocka_unit_test(test_forward_g4a),
        cmocka_unit_test(test_forward_g4b),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_tokenizer_golden),
        cmocka_unit_test(test_tokenizer_json_o200k),
        cmocka_unit_test(test_prompts_g4a),
        cmocka_unit_test(test_prompts_g4b),
        cmocka_unit_test(test_cli_json),
        cmocka_unit_test(test_version1_refused),
        cmocka_unit_test(test_config_llama4),
        cmocka_unit_test(test_export_refuses_experts),
        cmocka_unit_test(test_meta_llama4_refused),
        cmocka_unit_test(test_prefix_reuse_g4a),
        cmocka_unit_test(test_prefix_reuse_g4b),
        cmocka_unit_test(test_cli_batch_eval),
        cmocka_unit_test(test_server_g4a),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
