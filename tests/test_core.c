/* test_core.c: the f32 forward pass against Hugging Face transformers' own outputs.
 * For every fixture (l32: Llama 3.2 shape, tied, llama3 RoPE x32; l31: Llama 3.1, untied, x8;
 * l2: Llama 2, MHA, odd ffn) and every golden length, ./export + model_forward must give
 * last-position logits within 1e-3 (max abs), the same top-5 ids where the golden's gaps
 * exceed our tolerance, layer-0 hidden states within 1e-3, and the same 8 greedy tokens
 * decoded one at a time through the KV cache.
 */
#include "testutil.h"

#include <math.h>

#include "guard.h"
#include "json.h"

#define TOL_LOGITS 1e-3f
#define TOL_HIDDEN 1e-3f

static const char *fixtures[] = { "l32", "l31", "l2" };
static const int lengths[] = { 1, 7, 64, 300 };

/* Export one fixture once per process into the test's temp dir. */
static const char *exported(const char *fx, const char *dtype) {
    static char paths[16][512];
    static int n;
    char want[512];
    snprintf(want, sizeof want, "%s/%s-%s.bin", test_tmpdir(), fx, dtype);
    for (int i = 0; i < n; i++) if (strcmp(paths[i], want) == 0) return paths[i];
    char out[4096];
    int rc = run_cmd(out, sizeof out, "./export '%s' '%s' --dtype %s", shared_path("fixtures/%s", fx), want, dtype);
    if (rc != 0) fail_msg("export of %s failed (%d): %s", fx, rc, out);
    snprintf(paths[n], sizeof paths[n], "%s", want);
    return paths[n++];
}

static void check_fixture(const char *fx) {
    const char *bin = exported(fx, "f32");
    char err[ERRLEN];
    Model m;
    if (model_open(&m, bin, 2, err)) fail_msg("%s", err);
    uint32_t vocab = m.cfg.vocab_size, dim = m.cfg.dim;
    Json man;
    char *mtext = slurp(shared_path("fixtures/%s/golden/manifest.json", fx), NULL);
    assert_int_equal(json_parse(&man, mtext, strlen(mtext), err), 0);
    const JsonNode *cases = json_get(&man, json_root(&man), "cases");
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        int L = lengths[li];
        int64_t n;
        size_t cnt;
        int32_t *ids = read_ids(shared_path("fixtures/%s/golden/len%d.ids.txt", fx, L), &n);
        assert_int_equal(n, L);
        float *gold = read_f32(shared_path("fixtures/%s/golden/len%d.logits_last.bin", fx, L), &cnt);
        assert_int_equal(cnt, vocab);
        float *gh = read_f32(shared_path("fixtures/%s/golden/len%d.hidden_l0.bin", fx, L), &cnt);
        assert_int_equal(cnt, (size_t)L * dim);

        RunState s;
        assert_int_equal(state_init(&s, &m, L + 8, err), 0);
        float *hidden = malloc((size_t)L * dim * sizeof(float)), *logits = malloc(vocab * sizeof(float));
        const LayerCapture cap = { .layer = 0, .hidden = hidden };
        if (model_forward_capture(&m, &s, ids, n, logits, &cap, err)) fail_msg("%s", err);

        const float md = max_abs_diff(logits, gold, vocab), mh = max_abs_diff(hidden, gh, (size_t)L * dim);
        printf("  %s len%-3d logits max|diff| %.2e  hidden_l0 max|diff| %.2e\n", fx, L, (double)md, (double)mh);
        assert_true(md <= TOL_LOGITS);
        assert_true(mh <= TOL_HIDDEN);

        char key[16];
        snprintf(key, sizeof key, "len%d", L);
        const JsonNode *cs = json_get(&man, cases, key);
        assert_non_null(cs);
        /* top-5 ids, compared position by position only where the golden's own gaps exceed twice our tolerance */
        const JsonNode *top = json_get(&man, cs, "top5_ids"), *toplog = json_get(&man, cs, "top5_logits");
        float prev_gap_ok = 1;
        int k = 0;
        float last = 0;
        for (const JsonNode *a = json_first(&man, top), *b = json_first(&man, toplog); a && b; a = json_next(&man, a), b = json_next(&man, b), k++) {
            int best = argmax(logits, vocab);
            float nextv = json_next(&man, b) ? (float)json_next(&man, b)->num : -1e30f;
            int gap_ok = (k == 0 || last - (float)b->num > 2 * TOL_LOGITS) && (float)b->num - nextv > 2 * TOL_LOGITS;
            if (gap_ok && prev_gap_ok) assert_int_equal(best, (int)a->num);
            prev_gap_ok = gap_ok;
            last = (float)b->num;
            logits[best] = -INFINITY; /* next best */
        }
        /* 8 greedy tokens through the KV cache, one position at a time */
        assert_int_equal(model_forward(&m, &s, ids, 0, logits, err), -1); /* an empty run is an error */
        state_free(&s);
        assert_int_equal(state_init(&s, &m, L + 8, err), 0);
        assert_int_equal(model_forward(&m, &s, ids, n, logits, err), 0);
        int64_t gn;
        int32_t *greedy = read_ids(shared_path("fixtures/%s/golden/len%d.greedy.txt", fx, L), &gn);
        assert_int_equal(gn, 8);
        for (int g = 0; g < 8; g++) {
            int32_t tok = argmax(logits, vocab);
            assert_int_equal(tok, greedy[g]);
            assert_int_equal(model_forward(&m, &s, &tok, 1, logits, err), 0);
        }
        state_free(&s);
        free(greedy); free(ids); free(gold); free(gh); free(hidden); free(logits);
    }
    json_free(&man);
    free(mtext);
    model_close(&m);
}

static void test_l32(void **st) { (void)st; check_fixture("l32"); }
static void test_l31(void **st) { (void)st; check_fixture("l31"); }
static void test_l2(void **st) { (void)st; check_fixture("l2"); }

/* RoPE inverse frequencies (llama3 scaling included) match what HF computed. */
static void test_rope_inv_freq(void **st) {
    (void)st;
    for (size_t f = 0; f < sizeof fixtures / sizeof fixtures[0]; f++) {
        char err[ERRLEN];
        Model m;
        if (model_open(&m, exported(fixtures[f], "f32"), 1, err)) fail_msg("%s", err);
        Json man;
        char *mtext = slurp(shared_path("fixtures/%s/golden/manifest.json", fixtures[f]), NULL);
        assert_int_equal(json_parse(&man, mtext, strlen(mtext), err), 0);
        const JsonNode *ref = json_get(&man, json_get(&man, json_root(&man), "reference"), "rope_inv_freq");
        assert_non_null(ref);
        assert_int_equal(ref->len, m.cfg.head_dim / 2);
        int i = 0;
        JSON_FOR(&man, ref, v) {
            double rel = fabs(m.inv_freq[i] - v->num) / v->num;
            if (rel > 1e-6) fail_msg("%s inv_freq[%d] = %.9g, HF %.9g", fixtures[f], i, (double)m.inv_freq[i], v->num);
            i++;
        }
        json_free(&man);
        free(mtext);
        model_close(&m);
    }
}

/* Logits of the last of ids[0..n) from a fresh state. */
static void logits_of(const Model *m, const int32_t *ids, int64_t n, float *out) {
    char err[ERRLEN];
    RunState s;
    assert_int_equal(state_init(&s, m, n, err), 0);
    if (model_forward(m, &s, ids, n, out, err)) fail_msg("%s", err);
    state_free(&s);
}

/* Prefill in one call vs. uneven chunks then token-by-token decode: the same bits, for every
 * weight dtype. Each position's numbers must not depend on how many tokens shared its forward
 * call; the prefix cache's "bit-identical with and without" promise rests on this. */
static void check_chunking_exact(const char *dtype, int prepacked) {
    char err[ERRLEN];
    Model m;
    if (model_open(&m, exported("l31", dtype), 2, err)) fail_msg("%s", err);
    int64_t n;
    int32_t *ids = read_ids(shared_path("fixtures/l31/golden/len64.ids.txt"), &n);
    uint32_t V = m.cfg.vocab_size;
    float *a = malloc(V * sizeof(float)), *b = malloc(V * sizeof(float));
    logits_of(&m, ids, n, a);
    if (prepacked) { /* prepacking changes where the tiles come from, not one bit */
        /* only f32 prepacks: bf16 tiles would be f32, and q8/q4 are stored in tile order already */
        const int packs = strcmp(dtype, "f32") == 0;
        assert_int_equal(model_prepack(&m) > 0, packs);
        logits_of(&m, ids, n, b);
        int differ = memcmp(a, b, V * sizeof(float)) != 0;
        printf("  %s: prepacked vs packed per call: %s%s\n", dtype, differ ? "DIFFERENT" : "bit-identical", packs ? "" : " (nothing to prepack)");
        assert_false(differ);
    }
    RunState s;
    assert_int_equal(state_init(&s, &m, 4, err), 0); /* also exercises state_reserve growth */
    s.chunk = 5;                                      /* uneven chunks: 5,5,5,5 */
    assert_int_equal(model_forward(&m, &s, ids, 20, NULL, err), 0);
    for (int64_t i = 20; i < n; i++) assert_int_equal(model_forward(&m, &s, ids + i, 1, b, err), 0);
    int differ = memcmp(a, b, V * sizeof(float)) != 0;
    printf("  %s%s: one-shot prefill vs chunked+decode: %s\n", dtype, prepacked ? " prepacked" : "", differ ? "DIFFERENT" : "bit-identical");
    assert_false(differ);
    state_free(&s);
    /* bad ids are an error, not a crash */
    int32_t bad = (int32_t)V;
    assert_int_equal(state_init(&s, &m, 4, err), 0);
    assert_int_equal(model_forward(&m, &s, &bad, 1, a, err), -1);
    assert_non_null(strstr(err, "outside the vocabulary"));
    state_free(&s);
    free(a); free(b); free(ids);
    model_close(&m);
}

static void test_prefill_equals_decode(void **st) {
    (void)st;
    const char *dtypes[] = { "f32", "bf16", "q8", "q4" };
    for (int d = 0; d < 4; d++) {
        check_chunking_exact(dtypes[d], 0);
        check_chunking_exact(dtypes[d], 1);
    }
}

/* bf16 export stores the checkpoint's own bf16 values: logits identical to the f32 export. */
static void test_bf16_export_is_exact(void **st) {
    (void)st;
    char err[ERRLEN];
    Model m32, m16;
    if (model_open(&m32, exported("l32", "f32"), 1, err) || model_open(&m16, exported("l32", "bf16"), 1, err)) fail_msg("%s", err);
    int64_t n;
    int32_t *ids = read_ids(shared_path("fixtures/l32/golden/len7.ids.txt"), &n);
    uint32_t V = m32.cfg.vocab_size;
    float *a = malloc(V * sizeof(float)), *b = malloc(V * sizeof(float));
    logits_of(&m32, ids, n, a);
    logits_of(&m16, ids, n, b);
    float md = 0;
    for (uint32_t i = 0; i < V; i++) md = fmaxf(md, fabsf(a[i] - b[i]));
    printf("  bf16 vs f32 export max|diff| %.2e\n", (double)md);
    assert_true(md <= 1e-5f);
    free(a); free(b); free(ids);
    model_close(&m32);
    model_close(&m16);
}

/* The CLI audit path: --ids/--logits writes exactly vocab floats equal to the golden within tolerance. */
static void test_cli_logits(void **st) {
    (void)st;
    char cmd_out[4096], out[600];
    snprintf(out, sizeof out, "%s/cli_logits.bin", test_tmpdir());
    char *ids = slurp(shared_path("fixtures/l2/golden/len7.ids.txt"), NULL);
    assert_int_equal(run_cmd(cmd_out, sizeof cmd_out, "./run '%s' --ids '%s' --logits '%s'", exported("l2", "f32"), ids, out), 0);
    size_t n, g;
    float *a = read_f32(out, &n), *b = read_f32(shared_path("fixtures/l2/golden/len7.logits_last.bin"), &g);
    assert_int_equal(n, g);
    for (size_t i = 0; i < n; i++) assert_true(fabsf(a[i] - b[i]) <= TOL_LOGITS);
    assert_int_equal(run_cmd(cmd_out, sizeof cmd_out, "./run '%s' --ids '%s' --top 5", exported("l2", "f32"), ids), 0);
    int first = atoi(cmd_out);
    assert_int_equal(first, argmax(b, (int64_t)g));
    unlink(out);
    free(a); free(b); free(ids);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_l32),
        cmocka_unit_test(test_l31),
        cmocka_unit_test(test_l2),
        cmocka_unit_test(test_rope_inv_freq),
        cmocka_unit_test(test_prefill_equals_decode),
        cmocka_unit_test(test_bf16_export_is_exact),
        cmocka_unit_test(test_cli_logits),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    run_cmd(NULL, 0, "rm -rf '%s'", test_tmpdir());
    return rc;
}
