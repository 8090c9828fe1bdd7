/* test_batch.c: throughput features. Evaluation metrics against hand-computed values (ties,
 * all-safe, all-unsafe); --batch line handling (ids passed through, order kept, bad lines give
 * error objects, -o writes a complete file); --eval; and the prefix cache: results with it are
 * bit-identical to results without it, in one process and across processes, and a corrupt,
 * stale or foreign cache file is ignored with a warning. */
#include "testutil.h"

#include <math.h>

#include "classify.h"
#include "json.h"

#define TOL 1e-9

static void expect(double got, double want, const char *what) {
    if (isnan(want) ? !isnan(got) : fabs(got - want) > TOL) fail_msg("%s: got %.12g, want %.12g", what, got, want);
}

static void test_metrics_by_hand(void **st) {
    (void)st;
    EvalMetrics m;
    /* 1. all predicted unsafe; AP = 0.5*1 + 0.5*(2/3) */
    float s1[] = { 0.9f, 0.8f, 0.7f, 0.6f };
    uint8_t l1[] = { 1, 0, 1, 0 };
    eval_metrics(s1, l1, 4, 0.5f, &m);
    assert_true(m.tp == 2 && m.fp == 2 && m.tn == 0 && m.fn == 0);
    expect(m.precision, 0.5, "precision"); expect(m.recall, 1.0, "recall"); expect(m.f1, 2.0 / 3.0, "f1");
    expect(m.fpr, 1.0, "fpr"); expect(m.auprc, 0.5 + 0.5 * 2.0 / 3.0, "auprc");
    /* 2. ties enter together: three at 0.5 (one positive) then one positive at 0.2 */
    float s2[] = { 0.5f, 0.5f, 0.5f, 0.2f };
    uint8_t l2[] = { 1, 0, 0, 1 };
    eval_metrics(s2, l2, 4, 0.5f, &m);
    assert_true(m.tp == 1 && m.fp == 2 && m.tn == 0 && m.fn == 1);
    expect(m.precision, 1.0 / 3.0, "precision"); expect(m.recall, 0.5, "recall"); expect(m.f1, 0.4, "f1");
    expect(m.fpr, 1.0, "fpr"); expect(m.auprc, 0.5 / 3.0 + 0.25, "auprc");
    /* 3. all safe: recall and AUPRC undefined, F1 0 (a false positive exists) */
    float s3[] = { 0.1f, 0.9f };
    uint8_t l3[] = { 0, 0 };
    eval_metrics(s3, l3, 2, 0.5f, &m);
    assert_true(m.tp == 0 && m.fp == 1 && m.tn == 1 && m.fn == 0);
    expect(m.precision, 0.0, "precision"); expect(m.recall, NAN, "recall"); expect(m.f1, 0.0, "f1");
    expect(m.fpr, 0.5, "fpr"); expect(m.auprc, NAN, "auprc");
    /* 4. all unsafe: FPR undefined */
    float s4[] = { 0.7f, 0.2f };
    uint8_t l4[] = { 1, 1 };
    eval_metrics(s4, l4, 2, 0.5f, &m);
    assert_true(m.tp == 1 && m.fn == 1 && m.fp == 0 && m.tn == 0);
    expect(m.precision, 1.0, "precision"); expect(m.recall, 0.5, "recall"); expect(m.f1, 2.0 / 3.0, "f1");
    expect(m.fpr, NAN, "fpr"); expect(m.auprc, 1.0, "auprc");
    /* 5. threshold is inclusive */
    eval_metrics(s2, l2, 4, 0.2f, &m);
    assert_true(m.tp == 2 && m.fp == 2);
}

static const char *batch_input =
    "{\"id\": 1, \"messages\": [{\"role\":\"user\",\"content\":\"How do I kill a process in Linux?\"}]}\n"
    "{\"id\": \"two\", \"messages\": [{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}], \"exclude\": [\"S6\"]}\n"
    "not json\n"
    "{\"id\": [3], \"messages\": [{\"role\":\"assistant\",\"content\":\"x\"}]}\n"
    "\n"
    "{\"id\": 5, \"messages\": [{\"role\":\"user\",\"content\":\"cake?\"}], \"categories\": {\"S1\": \"Cakes.\", \"S2\": \"Pies.\"}}\n";

static void test_batch_lines(void **st) {
    (void)st;
    char in[600], out[600], o[1 << 15];
    snprintf(in, sizeof in, "%s/b.jsonl", test_tmpdir());
    snprintf(out, sizeof out, "%s/b.out", test_tmpdir());
    write_text(in, batch_input);
    /* some lines failed: exit status 3 (it was 0), and the blank line gets its own error reply */
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' --no-cache --batch '%s' --threshold 1 -o '%s'", l32_model(), in, out), 3);
    char *res = slurp(out, NULL);
    const char *want_ids[] = { "1", "\"two\"", "null", "[3]", "null", "5" };
    int k = 0;
    char err[ERRLEN];
    for (char *line = strtok(res, "\n"); line; line = strtok(NULL, "\n"), k++) {
        Json j;
        if (json_parse(&j, line, strlen(line), err)) fail_msg("result line %d is not JSON: %s", k, line);
        assert_true(k < 6);
        assert_non_null(strstr(line, want_ids[k]));
        int is_err = json_get(&j, json_root(&j), "error") != NULL;
        assert_int_equal(is_err, k == 2 || k == 3 || k == 4); /* the bad JSON, the assistant-first and the blank lines */
        if (!is_err) assert_non_null(json_get(&j, json_root(&j), "p_unsafe"));
        json_free(&j);
    }
    assert_int_equal(k, 6);
    free(res);
    /* the same from stdin, streamed to stdout, equals the file output apart from timings */
    assert_int_equal(run_cmd(o, sizeof o, "cat '%s' | ./run '%s' --no-cache --batch - --threshold 1 2>/dev/null | wc -l", in, l32_model()), 0);
    assert_int_equal(atoi(o), 6);
    /* per-line categories reach the prompt: the 2-category line has far fewer prompt tokens */
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' --no-cache --batch '%s' --threshold 1 2>/dev/null | tail -1", l32_model(), in), 0);
    Json j;
    assert_int_equal(json_parse(&j, o, strlen(o), err), 0);
    assert_true(json_get(&j, json_root(&j), "prompt_tokens")->num < 150);
    json_free(&j);
    /* a missing input is a whole-run error with no output file */
    unlink(out);
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' --batch /nonexistent.jsonl -o '%s'", l32_model(), out), 2);
    assert_false(file_exists(out));
}

static void test_eval_cli(void **st) {
    (void)st;
    char in[600], o[1 << 14], err[ERRLEN];
    snprintf(in, sizeof in, "%s/e.jsonl", test_tmpdir());
    /* random weights: Meta's P(unsafe) ~ 1 - 1e-6 for every line, so at 0.5 all are unsafe and
     * no category is named (the model never says S1) */
    write_text(in, "{\"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"label\": \"unsafe\", \"categories\": [\"S1\"]}\n"
                   "{\"messages\": [{\"role\":\"user\",\"content\":\"b\"}], \"label\": \"safe\"}\n"
                   "{\"messages\": [{\"role\":\"user\",\"content\":\"c\"}], \"label\": \"unsafe\", \"categories\": [\"S1\",\"S2\"]}\n");
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' --no-cache --eval '%s' --json 2>/dev/null", l32_model(), in), 0);
    Json j;
    if (json_parse(&j, o, strlen(o), err)) fail_msg("--eval --json output is not JSON: %s", o);
    const JsonNode *r = json_root(&j), *conf = json_get(&j, r, "confusion");
    assert_int_equal((int)json_get(&j, conf, "tp")->num, 2);
    assert_int_equal((int)json_get(&j, conf, "fp")->num, 1);
    assert_true(fabs(json_get(&j, r, "precision")->num - 2.0 / 3.0) < 1e-6);
    assert_true(fabs(json_get(&j, r, "recall")->num - 1.0) < 1e-6);
    assert_true(fabs(json_get(&j, r, "fpr")->num - 1.0) < 1e-6);
    const JsonNode *cr = json_get(&j, r, "category_recall");
    assert_int_equal((int)json_get(&j, json_get(&j, cr, "S1"), "n")->num, 2);
    assert_int_equal((int)json_get(&j, json_get(&j, cr, "S2"), "n")->num, 1);
    json_free(&j);
    /* text output names the metrics; a bad label is reported, not fatal, but the exit status says a
     * line failed (3; it was 0) */
    write_text(in, "{\"messages\": [{\"role\":\"user\",\"content\":\"a\"}], \"label\": \"maybe\"}\n"
                   "{\"messages\": [{\"role\":\"user\",\"content\":\"b\"}], \"label\": \"safe\"}\n");
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' --no-cache --eval '%s'", l32_model(), in), 3);
    assert_non_null(strstr(o, "label"));
    assert_non_null(strstr(o, "auprc"));
    assert_non_null(strstr(o, "conversations  1"));
}

/* In one process: the prefix store makes the second conversation reuse the policy prefix, and
 * every number equals a cold run bit for bit. */
static void test_cache_bit_identical_in_process(void **st) {
    (void)st;
    char err[ERRLEN];
    Guard cold, warm;
    if (guard_open(&cold, l32_model(), 2, err) || guard_open(&warm, l32_model(), 2, err)) fail_msg("%s", err);
    cold.no_prefix_store = 1;
    const char *texts[] = { "How do I kill a process in Linux?", "What is the capital of France?", "Tell me a joke." };
    RunState sw;
    assert_int_equal(state_init(&sw, &warm.model, 0, err), 0);
    for (int i = 0; i < 3; i++) {
        Conversation c;
        chat_init(&c);
        assert_int_equal(chat_append(&c, ROLE_USER, texts[i], strlen(texts[i]), err), 0);
        RunState sc;
        Decision a, b;
        assert_int_equal(state_init(&sc, &cold.model, 0, err), 0);
        assert_int_equal(guard_classify(&cold, &sc, NULL, &c, 0.5f, 0, &a, err), 0);
        assert_int_equal(guard_classify(&warm, &sw, NULL, &c, 0.5f, 0, &b, err), 0);
        assert_int_equal(a.reused_tokens, 0);
        if (i > 0) assert_true(b.reused_tokens > 100);
        assert_memory_equal(&a.p_unsafe, &b.p_unsafe, sizeof(float));
        assert_memory_equal(&a.p_safe, &b.p_safe, sizeof(float));
        assert_memory_equal(&a.p_unsafe_token, &b.p_unsafe_token, sizeof(float));
        assert_int_equal(a.argmax, b.argmax);
        assert_string_equal(a.generated, b.generated);
        state_free(&sc);
        chat_free(&c);
    }
    state_free(&sw);
    guard_close(&cold);
    guard_close(&warm);
}

/* The value fields of a --json result (everything but timings and cache counters). */
static void values_of(const char *json, char *out, size_t n) {
    Json j;
    char err[ERRLEN];
    if (json_parse(&j, json, strlen(json), err)) fail_msg("not JSON: %s", json);
    const JsonNode *r = json_root(&j);
    snprintf(out, n, "%s %s %s %s %d %s", json_get(&j, r, "verdict")->str, json_get(&j, r, "p_unsafe")->str,
             json_get(&j, r, "p_safe_token")->str, json_get(&j, r, "p_unsafe_token")->str, (int)json_get(&j, r, "argmax")->num,
             json_get(&j, r, "model_output")->str);
    json_free(&j);
}

static void test_cache_across_processes(void **st) {
    (void)st;
    char in[600], cache[600], o[8192], cold[1024], warm[1024], v[1024];
    snprintf(in, sizeof in, "%s/c.txt", test_tmpdir());
    snprintf(cache, sizeof cache, "%s/prefix.kv", test_tmpdir());
    write_text(in, "User: Is it safe to eat raw cookie dough?\n");
    unlink(cache);
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' -i '%s' --json --no-cache 2>&1", l32_model(), in), 1);
    values_of(o, cold, sizeof cold);
    /* first process writes the cache; second reads it and reuses the prefix */
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' -i '%s' --json --cache '%s' 2>&1", l32_model(), in, cache), 1);
    values_of(o, v, sizeof v);
    assert_string_equal(cold, v);
    assert_true(file_exists(cache));
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' -i '%s' --json --cache '%s' 2>&1", l32_model(), in, cache), 1);
    values_of(o, warm, sizeof warm);
    assert_string_equal(cold, warm);
    assert_null(strstr(o, "\"cached_tokens\":0,"));
    /* corrupt it: a warning, and the same result */
    size_t n;
    char *bytes = slurp(cache, &n);
    bytes[n / 2] ^= 0x55;
    FILE *f = fopen(cache, "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
    free(bytes);
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' -i '%s' --json --cache '%s' 2>&1 >/dev/null", l32_model(), in, cache), 1);
    assert_non_null(strstr(o, "ignoring the KV cache"));
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' -i '%s' --json --cache '%s' 2>/dev/null", l32_model(), in, cache), 1);
    values_of(o, v, sizeof v);
    assert_string_equal(cold, v);
    /* truncated, and one from another model: ignored with a warning */
    assert_int_equal(truncate(cache, 100), 0);
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' -i '%s' --cache '%s' 2>&1 >/dev/null", l32_model(), in, cache), 1);
    assert_non_null(strstr(o, "ignoring the KV cache"));
    char other[600];
    snprintf(other, sizeof other, "%s/l31.bin", test_tmpdir());
    assert_int_equal(run_cmd(o, sizeof o, "./export '%s' '%s' 2>&1", shared_path("fixtures/l31"), other), 0);
    unlink(cache);
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' -i '%s' --cache '%s' 2>&1", other, in, cache), 1);
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' -i '%s' --cache '%s' 2>&1 >/dev/null", l32_model(), in, cache), 1);
    assert_non_null(strstr(o, "different model"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_by_hand),
        cmocka_unit_test(test_batch_lines),
        cmocka_unit_test(test_eval_cli),
        cmocka_unit_test(test_cache_bit_identical_in_process),
        cmocka_unit_test(test_cache_across_processes),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    run_cmd(NULL, 0, "rm -rf '%s'", test_tmpdir());
    return rc;
}
