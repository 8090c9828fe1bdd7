/* test_pte.c: Meta's Llama-Guard-3-1B-INT4 ExecuTorch release, against shared/imports/pte_mini
 * (its README: the file, and reference outputs computed three ways from the file's own bytes).
 *   - --dtype f32 (int4 dequantized exactly) reproduces the float-ideal logits: max |diff| <=
 *     TOL_IDEAL on the 20 kept logits at every length, same top-1, every pruned id -inf;
 *   - the default q4 export (the same nibbles and XNNPACK's bf16 scales as Q4_0 blocks) stays
 *     within TOL_Q8ACT of the Q8_0-activation reference and TOL_XNNPACK of XNNPACK's, with
 *     q8act's top-1 wherever q8act's own margin exceeds MARGIN;
 *   - each linear on its own (golden/linear/) equals the q8act outputs within TOL_LINEAR
 *     relative (q4) and the ideal ones (f32), q rows in HF order against Meta's;
 *   - ./run on the fixture's six conversations: prompt ids identical, Meta's P(unsafe) within
 *     TOL_E2E_F32 (f32, ideal) or TOL_E2E_Q4 (q4, q8act);
 *   - the FlatBuffers reader on hand-made buffers (vtables, vectors, strings, cycles, depth),
 *     malformed copies of the fixture, and the real ExecuTorch programs of pte_real/: each
 *     refused with exit 2, one line and no output file.
 * ./export and ./run are used as built; EXPORT / RUN in the environment override them (ASan).
 */
#include "testutil.h"

#include <math.h>

#include "classify.h"
#include "guard.h"
#include "import/flatbuf.h"
#include "import/import.h"
#include "import/pte.h"
#include "json.h"

#define TOL_IDEAL 1e-3f    /* the issue; README: the ideal mode is stable to 3.1e-5 */
#define TOL_Q8ACT 0.35f    /* README: the int8-activation modes move by up to ~0.24 on a ULP change */
#define TOL_XNNPACK 0.6f   /* README: xnnpack vs q8act differ by up to 0.546 themselves (len300) */
#define MARGIN 0.3f
#define TOL_LINEAR 1e-5    /* relative to the output row's largest magnitude */
#define TOL_E2E_F32 1e-4
#define TOL_E2E_Q4 5e-3
#define N_HEAD 20

static const char *exe(const char *var, const char *def) {
    const char *s = getenv(var);
    return s && *s ? s : def;
}
#define EXPORT exe("EXPORT", "./export")
#define RUN exe("RUN", "./run")

static const char *mini(void) { return shared_path("imports/pte_mini"); }

/* Export the fixture once per dtype ("" = the default). */
static const char *exported(const char *dtype) {
    static char paths[4][600];
    static char keys[4][16];
    static int n;
    for (int i = 0; i < n; i++) if (!strcmp(keys[i], dtype)) return paths[i];
    assert_true(n < 4);
    snprintf(paths[n], sizeof paths[n], "%s/pte-%s.bin", test_tmpdir(), *dtype ? dtype : "default");
    char out[4096];
    int rc = run_cmd(out, sizeof out, "%s '%s' '%s' %s%s", EXPORT, mini(), paths[n], *dtype ? "--dtype " : "", dtype);
    if (rc != 0) fail_msg("export failed (%d): %s", rc, out);
    snprintf(keys[n], sizeof keys[n], "%s", dtype);
    return paths[n++];
}

/* The prune map: row r of the head -> vocabulary id (manifest.json). */
static void prune_map(int32_t ids[N_HEAD]) {
    char *text = slurp(shared_path("imports/pte_mini/golden/manifest.json"), NULL);
    Json j;
    char err[ERRLEN];
    assert_int_equal(json_parse(&j, text, strlen(text), err), 0);
    const JsonNode *pm = json_get(&j, json_get(&j, json_root(&j), "prune_map"), "row_to_token_id");
    int k = 0;
    JSON_FOR(&j, pm, e) { assert_true(k < N_HEAD); ids[k++] = (int32_t)e->num; }
    assert_int_equal(k, N_HEAD);
    json_free(&j);
    free(text);
}

/* ==== Full-model logits ==== */

static float kept_diff(const float *a, const float *b, const int32_t *ids) {
    float md = 0;
    for (int r = 0; r < N_HEAD; r++) md = fmaxf(md, fabsf(a[ids[r]] - b[ids[r]]));
    return md;
}

/* Top-1 among the kept ids and the margin to the second. */
static int top1(const float *x, const int32_t *ids, float *margin) {
    int b = 0, s = -1;
    for (int r = 1; r < N_HEAD; r++)
        if (x[ids[r]] > x[ids[b]]) s = b, b = r;
        else if (s < 0 || x[ids[r]] > x[ids[s]]) s = r;
    if (margin) *margin = x[ids[b]] - x[ids[s]];
    return ids[b];
}

static void check_pruned(const float *x, uint32_t V, const int32_t *ids, const char *what) {
    uint32_t kept = 0;
    for (uint32_t v = 0; v < V; v++) {
        int is_kept = 0;
        for (int r = 0; r < N_HEAD; r++) is_kept |= ids[r] == (int32_t)v;
        if (is_kept) { kept++; if (!isfinite(x[v])) fail_msg("%s: kept id %u is %g", what, v, (double)x[v]); }
        else if (!(isinf(x[v]) && x[v] < 0)) fail_msg("%s: pruned id %u is %g, not -inf", what, v, (double)x[v]);
    }
    assert_int_equal(kept, N_HEAD);
}

static void check_model(const char *dtype, const char *const *modes, const float *tols, int n_modes) {
    char err[ERRLEN];
    Model m;
    int32_t ids[N_HEAD];
    prune_map(ids);
    if (model_open(&m, exported(dtype), 2, err)) fail_msg("%s", err);
    uint32_t V = m.cfg.vocab_size;
    static const int lengths[] = { 1, 7, 64, 300 };
    float *logits = malloc(V * sizeof(float));
    for (int c = 0; c < 4; c++) {
        int64_t n;
        int32_t *toks = read_ids(shared_path("imports/pte_mini/golden/len%d.ids.txt", lengths[c]), &n);
        assert_int_equal(n, lengths[c]);
        RunState s;
        assert_int_equal(state_init(&s, &m, n, err), 0);
        if (model_forward(&m, &s, toks, n, logits, err)) fail_msg("%s", err);
        check_pruned(logits, V, ids, "ours");
        for (int k = 0; k < n_modes; k++) {
            size_t cnt;
            float *ref = read_f32(shared_path("imports/pte_mini/golden/len%d.logits_%s.f32", lengths[c], modes[k]), &cnt);
            assert_int_equal(cnt, V);
            check_pruned(ref, V, ids, "reference");
            float md = kept_diff(logits, ref, ids), margin;
            int want = top1(ref, ids, &margin), got = top1(logits, ids, NULL);
            printf("  %-4s len%-3d vs %-7s max|diff| %.2e (tolerance %.2g)  top-1 %d / %d (reference margin %.3f)\n", *dtype ? dtype : "q4", lengths[c],
                   modes[k], (double)md, (double)tols[k], got, want, (double)margin);
            assert_true(md <= tols[k]);
            /* the ideal mode is stable: its top-1 always; the int8 modes only where their margin is real */
            if (k == 0 && (!strcmp(modes[k], "ideal") || margin > MARGIN)) assert_int_equal(got, want);
            free(ref);
        }
        state_free(&s);
        free(toks);
    }
    free(logits);
    model_close(&m);
}

static void test_f32_ideal(void **st) {
    (void)st;
    const char *modes[] = { "ideal" };
    const float tols[] = { TOL_IDEAL };
    check_model("f32", modes, tols, 1);
}

static void test_q4_native(void **st) {
    (void)st;
    const char *modes[] = { "q8act", "xnnpack" };
    const float tols[] = { TOL_Q8ACT, TOL_XNNPACK };
    check_model("", modes, tols, 2);
    /* the default for this source is q4 */
    char out[16384];
    assert_int_equal(run_cmd(out, sizeof out, "%s '%s' --info", RUN, exported("")), 0);
    if (!strstr(out, "dtype         q4_0\n") || !strstr(out, "source        ExecuTorch .pte\n") || !strstr(out, "pruned: 20 rows"))
        fail_msg("--info of the default export:\n%s", out);
}

/* ==== One linear at a time (golden/linear/) ==== */

static const struct { const char *name, *tensor; uint32_t heads; } linears[] = {
    { "layer0_wq", "model.layers.0.self_attn.q_proj.weight", 8 }, /* rows in HF order: un-permute against Meta's */
    { "layer0_w1", "model.layers.0.mlp.gate_proj.weight", 0 },
    { "layer0_w2", "model.layers.0.mlp.down_proj.weight", 0 },
    { "layer1_wo", "model.layers.1.self_attn.o_proj.weight", 0 },
    { "output_head", "lm_head.weight", 0 },
};

/* Meta's row for HF row r (RoPE pairs (2j, 2j+1) per head -> (j, j + hd/2)). */
static uint64_t meta_row(uint64_t r, uint32_t heads, uint64_t rows) {
    if (!heads) return r;
    uint64_t hd = rows / heads, h = r / hd, rem = r % hd, k = rem / (hd / 2), j = rem % (hd / 2);
    return h * hd + 2 * j + k;
}

static void check_linears(const char *dtype, const char *mode, double tol) {
    char err[ERRLEN];
    Model m;
    if (model_open(&m, exported(dtype), 1, err)) fail_msg("%s", err);
    for (size_t i = 0; i < sizeof linears / sizeof linears[0]; i++) {
        const GbTensor *g = gb_find(&m.file, linears[i].tensor);
        assert_non_null(g);
        Tensor w = { g->dtype, g->shape[0], g->shape[1], gb_data(&m.file, g), NULL };
        size_t nx, ny;
        float *x = read_f32(shared_path("imports/pte_mini/golden/linear/%s.x.f32", linears[i].name), &nx);
        float *ref = read_f32(shared_path("imports/pte_mini/golden/linear/%s.y_%s.f32", linears[i].name, mode), &ny);
        uint64_t rows = nx / w.cols;
        assert_int_equal(nx, rows * w.cols);
        assert_int_equal(ny, rows * w.rows);
        float *y = malloc(ny * sizeof *y);
        matmul(NULL, y, x, &w, (int64_t)rows);
        double worst = 0;
        for (uint64_t t = 0; t < rows; t++) {
            double scale = 0;
            for (uint64_t o = 0; o < w.rows; o++) scale = fmax(scale, fabs(ref[t * w.rows + o]));
            for (uint64_t o = 0; o < w.rows; o++) {
                double d = fabs(y[t * w.rows + o] - ref[t * w.rows + meta_row(o, linears[i].heads, w.rows)]) / (scale > 0 ? scale : 1);
                worst = fmax(worst, d);
            }
        }
        printf("  %-4s %-12s vs %-6s max relative diff %.2e over %llu rows (tolerance %.0e)\n", dtype, linears[i].name, mode, worst, (unsigned long long)rows, tol);
        assert_true(worst <= tol);
        free(x); free(ref); free(y);
    }
    model_close(&m);
}

static void test_linears_q8act(void **st) { (void)st; check_linears("q4", "q8act", TOL_LINEAR); }
static void test_linears_ideal(void **st) { (void)st; check_linears("f32", "ideal", TOL_LINEAR); }

/* ==== End to end through ./run ==== */

/* The fixture's six conversations: --show-tokens equals the reference ids, and --batch's
 * p_unsafe (Meta's) is within tol of mode's. */
static void check_e2e(const char *dtype, const char *mode, double tol) {
    const char *bin = exported(dtype), *dir = test_tmpdir();
    char *text = slurp(shared_path("imports/pte_mini/golden/e2e.jsonl"), NULL), err[ERRLEN], batch[700], out[1 << 16];
    snprintf(batch, sizeof batch, "%s/e2e-%s.jsonl", dir, mode);
    FILE *bf = fopen(batch, "w");
    assert_non_null(bf);
    Json cases[8];
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        assert_true(n < 8);
        Json *j = &cases[n++];
        assert_int_equal(json_parse(j, line, strlen(line), err), 0);
        const JsonNode *root = json_root(j), *msgs = json_get(j, root, "messages"), *cats = json_get(j, root, "categories");
        const char *id = json_get(j, root, "id")->str;
        /* the conversation as ./run's JSON input, the categories as a --categories file */
        char conv[700], catf[700] = "";
        snprintf(conv, sizeof conv, "%s/%s.json", dir, id);
        FILE *cf = fopen(conv, "w");
        assert_non_null(cf);
        fputc('[', cf);
        fprintf(bf, "{\"id\":\"%s\",\"messages\":[", id);
        int k = 0;
        JSON_FOR(j, msgs, m) {
            Buf b = { 0 };
            const char *content = json_get(j, m, "content")->str;
            buf_put(&b, "\"", 1);
            for (const char *c = content; *c; c++) {
                char esc[8];
                if (*c == '"' || *c == '\\') { esc[0] = '\\'; esc[1] = *c; buf_put(&b, esc, 2); }
                else if ((unsigned char)*c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", *c); buf_put(&b, esc, 6); }
                else buf_put(&b, c, 1);
            }
            buf_put(&b, "\"", 1);
            const char *role = json_get(j, m, "role")->str;
            fprintf(cf, "%s{\"role\":\"%s\",\"content\":%.*s}", k ? "," : "", role, (int)b.len, (const char *)b.p);
            fprintf(bf, "%s{\"role\":\"%s\",\"content\":%.*s}", k ? "," : "", role, (int)b.len, (const char *)b.p);
            buf_free(&b);
            k++;
        }
        fputs("]\n", cf);
        fclose(cf);
        fputc(']', bf);
        if (cats && cats->type == JSON_OBJECT) {
            snprintf(catf, sizeof catf, "%s/%s.cats", dir, id);
            FILE *f = fopen(catf, "w");
            assert_non_null(f);
            fputs(",\"categories\":{", bf);
            int c = 0;
            JSON_FOR(j, cats, e) {
                fprintf(f, "%s: %s\n", e->key, e->str);
                fprintf(bf, "%s\"%s\":\"%s\"", c++ ? "," : "", e->key, e->str);
            }
            fputc('}', bf);
            fclose(f);
        }
        fputs("}\n", bf);
        /* prompt ids */
        char cmd_cats[800] = "";
        if (catf[0]) snprintf(cmd_cats, sizeof cmd_cats, "--categories '%s'", catf);
        assert_int_equal(run_cmd(out, sizeof out, "%s '%s' -i '%s' %s --show-tokens", RUN, bin, conv, cmd_cats), 0);
        const JsonNode *ids = json_get(j, root, "ids");
        char *p = out;
        int64_t count = 0;
        JSON_FOR(j, ids, e) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v != (long)e->num) fail_msg("%s: prompt token %lld is %ld, reference %ld", id, (long long)count, v, (long)e->num);
            p = end;
            count++;
        }
        while (*p == ' ' || *p == '\n') p++;
        if (*p) fail_msg("%s: ./run shows more tokens than the reference's %lld", id, (long long)count);
    }
    fclose(bf);
    /* P(unsafe), all six in one ./run */
    assert_true(run_cmd(out, sizeof out, "%s '%s' --batch '%s' --no-cache", RUN, bin, batch) <= 1);
    char *line = out;
    for (int i = 0; i < n; i++) {
        const JsonNode *root = json_root(&cases[i]);
        const char *id = json_get(&cases[i], root, "id")->str, *pu = strstr(line, "\"p_unsafe\":");
        if (!pu || !strstr(line, id)) fail_msg("%s: no result line from ./run --batch:\n%s", id, out);
        double got = strtod(pu + 11, NULL), want = json_get(&cases[i], json_get(&cases[i], json_get(&cases[i], root, "modes"), mode), "p_unsafe_meta")->num;
        printf("  %-4s %-34s P(unsafe) %.7f vs %s %.7f  |diff| %.1e (tolerance %.0e)\n", *dtype ? dtype : "q4", id, got, mode, want, fabs(got - want), tol);
        assert_true(fabs(got - want) <= tol);
        line = strchr(line, '\n');
        assert_non_null(line);
        line++;
        json_free(&cases[i]);
    }
    free(text);
}

static void test_e2e_f32(void **st) { (void)st; check_e2e("f32", "ideal", TOL_E2E_F32); }
static void test_e2e_q4(void **st) { (void)st; check_e2e("", "q8act", TOL_E2E_Q4); }

/* ==== The FlatBuffers reader on hand-made buffers ==== */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }

/* root -> table T (vtable at 8: 2 fields, object 12 bytes) at 16: field 0 a uoffset at 20 to a
 * vector / string at 28, field 1 a u32 at 24 = 77. */
static size_t fb_sample(uint8_t *b, uint32_t count, const char *str) {
    memset(b, 0, 256);
    put32(b, 16);
    put16(b + 8, 8), put16(b + 10, 12), put16(b + 12, 4), put16(b + 14, 8);
    put32(b + 16, 8);  /* soffset: vtable = 16 - 8 */
    put32(b + 20, 8);  /* uoffset: 20 + 8 = 28 */
    put32(b + 24, 77);
    put32(b + 28, count);
    size_t n = 32;
    if (str) { memcpy(b + 32, str, strlen(str) + 1); n += strlen(str) + 1; }
    return n;
}

/* Read field 0 as a string (kind 's'), a u32 vector ('v') or a table ('t'), and field 1. */
static int fb_try(const uint8_t *b, size_t n, char kind, char *err) {
    FbBuf fb = { b, n, "sample", err, 0 };
    FbTable root, child;
    FbVec v;
    const char *s;
    uint32_t len;
    if (fb_root(&fb, NULL, &root)) return -1;
    int rc = kind == 's' ? fb_string(&root, 0, &s, &len) : kind == 'v' ? fb_vector(&root, 0, 4, &v) : fb_table(&root, 0, &child);
    if (rc < 0) return -1;
    return fb_u32(&root, 1, 0) == 77 && !fb.bad ? 0 : -1;
}

static void expect_fb_error(const uint8_t *b, size_t n, char kind, const char *what) {
    char err[ERRLEN] = "";
    if (fb_try(b, n, kind, err) == 0) fail_msg("accepted a buffer with %s", what);
    if (!strstr(err, what) || strchr(err, '\n')) fail_msg("error for %s is '%s'", what, err);
}

static void test_flatbuf_reader(void **st) {
    (void)st;
    uint8_t b[256];
    char err[ERRLEN];
    size_t n = fb_sample(b, 5, "hello");
    assert_int_equal(fb_try(b, n, 's', err), 0);
    FbBuf fb = { b, n, "sample", err, 0 };
    FbTable root;
    const char *s;
    uint32_t len;
    assert_int_equal(fb_root(&fb, NULL, &root), 0);
    assert_int_equal(fb_string(&root, 0, &s, &len), 1);
    assert_int_equal(len, 5);
    assert_memory_equal(s, "hello", 5);
    assert_int_equal(fb_u32(&root, 2, 9), 9); /* past the vtable: absent, default */

    n = fb_sample(b, 5, "hello"); put32(b, 250);                 expect_fb_error(b, n, 's', "outside the buffer");
    n = fb_sample(b, 5, "hello"); put32(b + 16, 0x7FFFFFF0);     expect_fb_error(b, n, 's', "vtable of the table at 16 lies outside");
    n = fb_sample(b, 5, "hello"); put32(b + 16, (uint32_t)-200); expect_fb_error(b, n, 's', "vtable of the table at 16 lies outside");
    n = fb_sample(b, 5, "hello"); put16(b + 8, 7);               expect_fb_error(b, n, 's', "bad size");
    n = fb_sample(b, 5, "hello"); put16(b + 8, 200);             expect_fb_error(b, n, 's', "bad size");
    n = fb_sample(b, 5, "hello"); put16(b + 14, 250);            expect_fb_error(b, n, 's', "field 1 of the table at 16 lies outside");
    n = fb_sample(b, 5, "hello"); put32(b + 20, 0x10000);        expect_fb_error(b, n, 's', "points past the end");
    n = fb_sample(b, 5, "hello"); b[37] = 'x';                   expect_fb_error(b, 38, 's', "not NUL-terminated");
    n = fb_sample(b, 0x7FFFFFFF, NULL);                          expect_fb_error(b, n, 'v', "more than the buffer holds");
    n = fb_sample(b, 0xFFFFFFFF, NULL);                          expect_fb_error(b, n, 'v', "more than the buffer holds");
    n = fb_sample(b, 5, "hello"); put32(b + 20, 0);              expect_fb_error(b, n, 't', "a cycle");
    /* nesting: a chain of tables, each field 0 naming the next (all sharing one vtable) */
    uint8_t deep[1024] = { 0 };
    put32(deep, 16);
    put16(deep + 8, 6), put16(deep + 10, 8), put16(deep + 12, 4);
    for (uint32_t k = 0; k < 60; k++) {
        uint32_t t = 16 + 8 * k;
        put32(deep + t, t - 8);
        put32(deep + t + 4, 4); /* the next table starts right after this field */
    }
    FbBuf db = { deep, 16 + 8 * 60, "deep", err, 0 };
    FbTable t;
    int depth = 0;
    assert_int_equal(fb_root(&db, NULL, &t), 0);
    while (fb_table(&t, 0, &t) == 1) depth++;
    assert_true(db.bad);
    assert_int_equal(depth, FB_MAX_DEPTH);
    if (!strstr(err, "nested deeper")) fail_msg("deep chain: %s", err);
}

/* ==== Malformed and foreign .pte files through ./export ==== */

static uint8_t *pte_bytes;
static size_t pte_size;

static const uint8_t *load_pte(void) {
    if (!pte_bytes) pte_bytes = (uint8_t *)slurp(shared_path("imports/pte_mini/llama_guard_3_1b_pruned_xnnpack.pte"), &pte_size);
    return pte_bytes;
}

/* A release folder in the temp dir holding p[0..n) as its .pte, beside the fixture's params and tokenizer. */
static const char *pte_folder(const char *name, const uint8_t *p, size_t n) {
    static char dir[700];
    char path[800];
    snprintf(dir, sizeof dir, "%s/%s", test_tmpdir(), name);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/llama_guard_3_1b_pruned_xnnpack.pte", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
    const char *names[] = { "params.json", "tokenizer.model" };
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
        assert_int_equal(symlink(shared_path("imports/pte_mini/%s", names[i]), path), 0);
    }
    return dir;
}

static void expect_refused(const char *dir, const char *what) {
    char out[4096], bin[800];
    snprintf(bin, sizeof bin, "%s/out.bin", dir);
    unlink(bin);
    int rc = run_cmd(out, sizeof out, "%s '%s' '%s'", EXPORT, dir, bin);
    size_t len = strlen(out);
    if (rc != 2 || !strstr(out, what) || len == 0 || strchr(out, '\n') != out + len - 1)
        fail_msg("%s: expected exit 2 and one line naming '%s', got %d: %s", dir, what, rc, out);
    assert_false(file_exists(bin));
    printf("  refused: %s", strstr(out, ": ") ? strstr(out, ": ") + 2 : out);
    /* each case is a 39 MB copy: remove it before the next */
    const char *names[] = { "llama_guard_3_1b_pruned_xnnpack.pte", "params.json", "tokenizer.model" };
    for (int i = 0; i < 3; i++) {
        snprintf(bin, sizeof bin, "%s/%s", dir, names[i]);
        unlink(bin);
    }
    rmdir(dir);
}

/* Absolute position of field i of the table at t (0 if absent), read without our reader. */
static size_t field_at(const uint8_t *p, size_t t, int i) {
    size_t vt = t - (size_t)(int32_t)ld_u32(p + t);
    return (size_t)(4 + 2 * i) < ld_u16(p + vt) && ld_u16(p + vt + 4 + 2 * i) ? t + ld_u16(p + vt + 4 + 2 * i) : 0;
}
static size_t deref(const uint8_t *p, size_t at) { return at + ld_u32(p + at); }

static void test_malformed_pte(void **st) {
    (void)st;
    const uint8_t *orig = load_pte();
    uint8_t *p = malloc(pte_size);
    assert_non_null(p);
    size_t root = ld_u32(orig), plans = deref(orig, field_at(orig, root, 1)), segs = deref(orig, field_at(orig, root, 4));
    size_t plan0 = deref(orig, plans + 4), name = deref(orig, field_at(orig, plan0, 0));
    size_t seg1 = deref(orig, segs + 8);
    assert_int_equal(field_at(orig, deref(orig, segs + 4), 0), 0); /* segment 0 at offset 0 (the default, not stored) */
    uint64_t base = ld_u64(orig + 24), seg1_off = ld_u64(orig + field_at(orig, seg1, 0)) + base;
    struct { const char *name, *what; size_t at, n; uint32_t v; int width; } cases[] = {
        { "short", "no ET12", 0, 6, 0, 0 },
        { "trunc-program", "outside the 20000-byte file", 0, 20000, 0, 0 },
        { "trunc-segments", "runs past the end of the", 0, 30000000, 0, 0 },
        { "root", "outside the buffer", 0, 0, 0x7FFF0000u, 4 },
        { "vtable", "vtable of the table at", root, 0, 0x7FFFFFF0u, 4 },
        { "huge-vector", "more than the buffer holds", plans, 0, 0x40000000u, 4 },
        { "cycle", "a cycle", field_at(orig, root, 1), 0, 0, 4 },
        { "string", "not NUL-terminated", name + 4 + ld_u32(orig + name), 0, 'x', 1 },
        { "header-length", "extended header length 16", 12, 0, 16, 4 },
        { "magic", "no ET12", 4, 0, 'X', 1 },
        { "overlap", "overlaps the one before it", field_at(orig, seg1, 0), 0, 128, 4 }, /* segment 0 starts at 0 and is larger */
        { "xnn-magic", "no XH00 header", (size_t)seg1_off + 4, 0, 'Y', 1 },
        { "xnn-graph-size", "lies outside the blob", (size_t)seg1_off + 14, 0, 0x7FFFFFFFu, 4 },
        { "xnn-ident", "file identifier is not XN01", (size_t)seg1_off + 32 + 4, 0, 'Z', 1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(p, orig, pte_size);
        size_t n = cases[i].n ? cases[i].n : pte_size;
        if (cases[i].width == 4) put32(p + cases[i].at, cases[i].v);
        else if (cases[i].width == 1) p[cases[i].at] = (uint8_t)cases[i].v;
        expect_refused(pte_folder(cases[i].name, p, n), cases[i].what);
    }
    /* operators and structure: a renamed op, and w3 feeding the sigmoid instead of w1 */
    memcpy(p, orig, pte_size);
    uint8_t *op = memmem(p, 40000, "aten::sigmoid", 13);
    assert_non_null(op);
    memcpy(op, "aten::sigmaid", 13);
    expect_refused(pte_folder("operator", p, pte_size), "operator 'aten::sigmaid.out'");
    /* the call that computes k runs delegate 4 (w1's [768, 512] blob): alone, and swapped with w1's */
    size_t chain = deref(orig, deref(orig, field_at(orig, plan0, 5)) + 4), ins = deref(orig, field_at(orig, chain, 2)), at[5] = { 0 };
    for (uint32_t i = 0; i < ld_u32(orig + ins); i++) {
        size_t x = deref(orig, ins + 4 + 4 * i), tf = field_at(orig, x, 0);
        if (tf && orig[tf] == 2) { /* DelegateCall */
            size_t call = deref(orig, field_at(orig, x, 1)), di = field_at(orig, call, 0);
            if (di && ld_u32(orig + di) < 5) at[ld_u32(orig + di)] = di;
        }
    }
    assert_true(at[1] && at[4]);
    memcpy(p, orig, pte_size);
    put32(p + at[1], 4);
    expect_refused(pte_folder("rewired", p, pte_size), "delegate 1 is called 0 times");
    put32(p + at[4], 1);
    expect_refused(pte_folder("swapped", p, pte_size), "delegate 4 (layer 0 wk) is [768, 512]; the graph needs [128, 512]");
    free(p);
}

/* params.json must agree with the program: its shapes, eps and RoPE (checked against the tables). */
static void test_params_cross_checked(void **st) {
    (void)st;
    const uint8_t *p = load_pte();
    char *params = slurp(shared_path("imports/pte_mini/params.json"), NULL);
    const struct { const char *from, *to, *what; } cases[] = {
        { "\"n_layers\": 2", "\"n_layers\": 3", "\"n_layers\" disagrees with the program (which has 2)" },
        { "\"hidden_dim\": 768", "\"hidden_dim\": 8192", "\"hidden_dim\" disagrees" },
        { "\"norm_eps\": 1e-05", "\"norm_eps\": 1e-06", "norm_eps" },
        { "\"use_scaled_rope\": true", "\"use_scaled_rope\": false", "use_scaled_rope false but the program's RoPE tables are scaled" },
        { "500000.0", "10000.0", "the RoPE tables against rope_freq_base 10000" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32], path[800];
        snprintf(name, sizeof name, "params%zu", i);
        const char *dir = pte_folder(name, p, pte_size);
        char *at = strstr(params, cases[i].from);
        assert_non_null(at);
        snprintf(path, sizeof path, "%s/params.json", dir);
        unlink(path);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "%.*s%s%s", (int)(at - params), params, cases[i].to, at + strlen(cases[i].from));
        fclose(f);
        expect_refused(dir, cases[i].what);
    }
    free(params);
}

/* The real ExecuTorch programs of pte_real/: other models, backends and layouts. */
static void test_real_programs(void **st) {
    (void)st;
    const struct { const char *file, *what; } real[] = {
        { "add.pte", "no XNNPACK delegates" },
        { "ModuleLinear-no-constant-segment.pte", "constant_buffer" },
        { "KeywordSpotting.pte", "cortex_m::quantize_per_tensor" },
        { "stories260k_hybrid_llama_qnn.pte", "kv_forward" },
    };
    for (size_t i = 0; i < sizeof real / sizeof real[0]; i++) {
        size_t n;
        uint8_t *p = (uint8_t *)slurp(shared_path("imports/pte_real/%s", real[i].file), &n);
        char name[64];
        snprintf(name, sizeof name, "real%zu", i);
        expect_refused(pte_folder(name, p, n), real[i].what);
        /* the reader alone, on every prefix length class: never out of bounds (ASan under make sanitize) */
        PteModel m;
        char err[ERRLEN];
        for (size_t cut = 0; cut < n; cut += n / 97 + 1) {
            if (pte_read(&m, p, cut, real[i].file, 0, err) == 0) fail_msg("%s cut at %zu accepted", real[i].file, cut);
            assert_null(strchr(err, '\n'));
        }
        free(p);
    }
}

/* guard.bin version 1 (before the output ids section) gets the re-export error. */
static void test_version1_refused(void **st) {
    (void)st;
    size_t n;
    uint8_t *p = (uint8_t *)slurp(exported(""), &n);
    put32(p + 8, 1);
    uint64_t data_off = ld_u64(p + 32);
    put32(p + 48, 0);
    put32(p + 48, crc32_update(0, p, (size_t)data_off));
    char path[700], out[4096];
    snprintf(path, sizeof path, "%s/v1.bin", test_tmpdir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
    free(p);
    assert_int_equal(run_cmd(out, sizeof out, "%s '%s' --info", RUN, path), 2);
    if (!strstr(out, "version 1") || !strstr(out, "re-export")) fail_msg("version 1 file: %s", out);
    unlink(path);
}

/* The output ids section of a pruned guard.bin, edited: each edit is refused at open. */
static void test_bad_output_ids(void **st) {
    (void)st;
    size_t n;
    uint8_t *orig = (uint8_t *)slurp(exported(""), &n), *p = malloc(n);
    assert_non_null(p);
    uint64_t at = 0;
    for (uint32_t i = 0; i < ld_u32(orig + 44); i++)
        if (ld_u32(orig + 256 + 24 * i) == SEC_HEAD_IDS) at = ld_u64(orig + 256 + 24 * i + 8);
    assert_true(at != 0);
    assert_int_equal(ld_u32(orig + at), N_HEAD);
    const struct { const char *what; uint64_t off; uint32_t v; } cases[] = {
        { "appears twice", 8, 271 },                 /* id 1 := id 0 */
        { "outside the vocabulary", 4, 128256 },
        { "holds 21 ids in 84 bytes", 0, 21 },
        { "holds 0 ids", 0, 0 },
    };
    char path[700], out[4096];
    snprintf(path, sizeof path, "%s/bad-ids.bin", test_tmpdir());
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(p, orig, n);
        put32(p + at + cases[i].off, cases[i].v);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(p, 1, n, f), n);
        fclose(f);
        int rc = run_cmd(out, sizeof out, "%s '%s' --info", RUN, path);
        if (rc != 2 || !strstr(out, cases[i].what)) fail_msg("output ids edit '%s': exit %d, %s", cases[i].what, rc, out);
    }
    unlink(path);
    free(p);
    free(orig);
}

/* The exports (up to 300 MB) and the case folders live in this binary's temp dir: remove it. */
static int teardown(void **st) {
    (void)st;
    free(pte_bytes);
    char out[256];
    run_cmd(out, sizeof out, "rm -rf '%s'", test_tmpdir());
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32_ideal),
        cmocka_unit_test(test_q4_native),
        cmocka_unit_test(test_linears_q8act),
        cmocka_unit_test(test_linears_ideal),
        cmocka_unit_test(test_e2e_f32),
        cmocka_unit_test(test_e2e_q4),
        cmocka_unit_test(test_flatbuf_reader),
        cmocka_unit_test(test_malformed_pte),
        cmocka_unit_test(test_params_cross_checked),
        cmocka_unit_test(test_real_programs),
        cmocka_unit_test(test_version1_refused),
        cmocka_unit_test(test_bad_output_ids),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
