/* test_prefix.c: the in-memory prefix store (classify.h PrefixStore) on the fixture model.
 * Against a Guard that reuses nothing (no_prefix_store), in one process:
 *   - a multi-turn conversation checked turn by turn, interleaved with other conversations, gives
 *     bit-identical decisions, and from turn 3 on reuses more than the policy prefix;
 *   - the recent prompts stay within their byte budget (LRU), and a budget of 0 keeps none;
 *   - the policy prefix length is computed once per prompt shape and cached;
 *   - category scores are the same whatever was reused, and sum to at most P(unsafe);
 *   - the cache file holds the policy prefixes only (its size is exactly theirs: no message text);
 *   - category scores for custom codes, one a token prefix of another (S1 / S1A), against a
 *     code-by-code reference written here (no tree: each code's tokens fed one by one).
 */
#include "serverutil.h"

#include "classify.h"

#include <math.h>

static Guard cold, warm;
static RunState sc, sw;

static int setup(void **st) {
    (void)st;
    char err[ERRLEN];
    if (guard_open(&cold, l32_model(), 1, err) || guard_open(&warm, l32_model(), 1, err)) fail_msg("%s", err);
    cold.no_prefix_store = 1;
    if (state_init(&sc, &cold.model, 0, err) || state_init(&sw, &warm.model, 0, err)) fail_msg("%s", err);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    state_free(&sc);
    state_free(&sw);
    guard_close(&cold);
    guard_close(&warm);
    return 0;
}

static const char *turns[] = { "Hello there, I need advice on a hiking trip.", "Sure. Which region are you thinking of?",
                               "The Alps, in late June.", "Good timing; some passes may still have snow.",
                               "What should I pack?", "Layers, rain gear, sturdy boots and a map." };

static void conv_of(Conversation *c, int n, const char *first) {
    char err[ERRLEN];
    chat_init(c);
    for (int i = 0; i < n; i++) {
        const char *t = i == 0 && first ? first : turns[i];
        if (chat_append(c, i % 2 ? ROLE_ASSISTANT : ROLE_USER, t, strlen(t), err)) fail_msg("%s", err);
    }
}

static void same(const Decision *a, const Decision *b) {
    assert_memory_equal(&a->p_unsafe, &b->p_unsafe, sizeof a->p_unsafe);
    assert_memory_equal(&a->p_safe, &b->p_safe, sizeof a->p_safe);
    assert_memory_equal(&a->p_unsafe_token, &b->p_unsafe_token, sizeof a->p_unsafe_token);
    assert_int_equal(a->argmax, b->argmax);
    assert_string_equal(a->generated, b->generated);
    assert_int_equal(a->prompt_tokens, b->prompt_tokens);
}

static void test_incremental_bit_identical(void **st) {
    (void)st;
    char err[ERRLEN];
    guard_forget_prefixes(&warm);
    guard_set_recent_budget(&warm, 64u << 20);
    int64_t policy = 0;
    for (int n = 1; n <= 6; n++) {
        Conversation c, other;
        Decision dc, dw, dx;
        conv_of(&c, n, NULL);
        conv_of(&other, 1, "Something unrelated in between.");
        assert_int_equal(guard_classify(&cold, &sc, NULL, &c, 0.0f, 0, &dc, err), 0);
        assert_int_equal(guard_classify(&warm, &sw, NULL, &c, 0.0f, 0, &dw, err), 0);
        same(&dc, &dw);
        /* category scores agree bit for bit whatever was reused, and never exceed P(unsafe) in sum */
        double s1[16], s2[16], sum = 0;
        assert_int_equal(guard_category_scores(&cold, &sc, NULL, &dc, s1, err), 0);
        assert_int_equal(guard_category_scores(&warm, &sw, NULL, &dw, s2, err), 0);
        assert_memory_equal(s1, s2, (size_t)cold.pf.n_cats * sizeof(double));
        for (int k = 0; k < cold.pf.n_cats; k++) sum += s1[k];
        assert_true(sum <= dc.p_unsafe * (1 + 1e-9));
        /* another conversation in between: the RunState no longer holds this one */
        assert_int_equal(guard_classify(&warm, &sw, NULL, &other, 1.0f, 0, &dx, err), 0);
        if (n == 1) policy = dx.reused_tokens; /* the user-shape policy prefix */
        printf("  turn %d: %lld of %lld prompt tokens reused\n", n, (long long)dw.reused_tokens, (long long)dw.prompt_tokens);
        if (n >= 3) assert_true(dw.reused_tokens > policy);
        chat_free(&c);
        chat_free(&other);
    }
    assert_true(policy > 0);
}

static void test_budget_and_lru(void **st) {
    (void)st;
    char err[ERRLEN];
    const Config *cf = &warm.model.cfg;
    uint64_t per_pos = 2ull * cf->n_layers * cf->n_kv_heads * cf->head_dim * sizeof(float);
    guard_forget_prefixes(&warm);
    guard_set_recent_budget(&warm, 600 * per_pos); /* about three single-turn prompts */
    for (int i = 0; i < 12; i++) {
        char text[128];
        snprintf(text, sizeof text, "Conversation number %d asks about the weather in city %d.", i, i * 7);
        Conversation c;
        Decision d;
        conv_of(&c, 1, text);
        assert_int_equal(guard_classify(&warm, &sw, NULL, &c, 1.0f, 0, &d, err), 0);
        assert_true(warm.prefixes.recent_bytes <= warm.prefixes.recent_budget);
        uint64_t sum = 0;
        for (int k = 0; k < warm.prefixes.n_recent; k++) sum += (uint64_t)warm.prefixes.recent[k].n * per_pos;
        assert_int_equal(sum, warm.prefixes.recent_bytes);
        chat_free(&c);
    }
    printf("  %d recent prompts kept in %llu of %llu bytes\n", warm.prefixes.n_recent, (unsigned long long)warm.prefixes.recent_bytes,
           (unsigned long long)warm.prefixes.recent_budget);
    assert_true(warm.prefixes.n_recent >= 2 && warm.prefixes.n_recent <= 3);
    /* budget 0: none kept */
    guard_forget_prefixes(&warm);
    guard_set_recent_budget(&warm, 0);
    Conversation c;
    Decision d;
    conv_of(&c, 2, NULL);
    assert_int_equal(guard_classify(&warm, &sw, NULL, &c, 1.0f, 0, &d, err), 0);
    assert_int_equal(warm.prefixes.n_recent, 0);
    chat_free(&c);
}

static void test_policy_shapes_and_file(void **st) {
    (void)st;
    char err[ERRLEN];
    guard_forget_prefixes(&warm);
    guard_set_recent_budget(&warm, 64u << 20);
    for (int n = 1; n <= 4; n++) {
        for (int rep = 0; rep < 2; rep++) {
            Conversation c;
            Decision d;
            conv_of(&c, n, rep ? "A different first message." : NULL);
            assert_int_equal(guard_classify(&warm, &sw, NULL, &c, 1.0f, 0, &d, err), 0);
            chat_free(&c);
        }
    }
    int shapes = 0;
    for (int i = 0; i < PREFIX_SHAPES; i++) shapes += warm.prefixes.shapes[i].key != NULL;
    assert_int_equal(shapes, 4); /* one per role sequence, not per conversation */
    int policies = 0;
    uint64_t policy_floats = 0;
    const Config *cf = &warm.model.cfg;
    for (int i = 0; i < PREFIX_SLOTS; i++)
        if (warm.prefixes.e[i].n) policies++, policy_floats += (uint64_t)warm.prefixes.e[i].n * cf->n_layers * cf->n_kv_heads * cf->head_dim * 2;
    assert_int_equal(policies, 2); /* the 'User' and the 'Agent' task lines */
    assert_true(warm.prefixes.n_recent > 0);
    /* the cache file stores the policy prefixes only: its size leaves no room for message K/V */
    char path[600];
    snprintf(path, sizeof path, "%s/prefix.kv", test_tmpdir());
    assert_int_equal(guard_cache_save(&warm, path, err), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    uint64_t recent = warm.prefixes.recent_bytes;
    printf("  cache file %lld bytes; policy K/V %llu bytes; recent prompts (not saved) %llu bytes\n", (long long)sb.st_size,
           (unsigned long long)(policy_floats * 4), (unsigned long long)recent);
    assert_true((uint64_t)sb.st_size >= policy_floats * 4 && (uint64_t)sb.st_size < policy_floats * 4 + 64 * 1024);
    unlink(path);
}

/* Softmax probability of each token in want[] at logits (f64, as SCORING.md's softmax). */
static void ref_probs(const float *l, uint32_t v, const int32_t *want, int n, double *out) {
    double mx = l[0], sum = 0;
    for (uint32_t i = 1; i < v; i++) if (l[i] > mx) mx = l[i];
    for (uint32_t i = 0; i < v; i++) sum += exp((double)l[i] - mx);
    for (int k = 0; k < n; k++) out[k] = exp((double)l[want[k]] - mx) / sum;
}

static void test_custom_code_scores(void **st) {
    (void)st;
    char err[ERRLEN];
    PromptFormat pf = { 0 };
    Category cats[] = { { "S1", "Cakes." }, { "S1A", "Apple cakes." }, { "S2", "Pies." }, { "Hate", "Hateful pastry." } };
    pf.version = cold.pf.version;
    assert_int_equal(template_set_categories(&pf, cats, 4, err), 0);
    Conversation c;
    conv_of(&c, 1, "Is this cake recipe safe?");
    Decision d;
    assert_int_equal(guard_classify(&cold, &sc, &pf, &c, 0.0f, 0, &d, err), 0);
    double got[4];
    assert_int_equal(guard_category_scores(&cold, &sc, &pf, &d, got, err), 0);
    /* the reference: each code's tokens "unsafe\n" CODE fed one at a time from the prompt */
    int32_t *seq[4];
    size_t len[4];
    for (int k = 0; k < 4; k++) {
        char text[64];
        size_t cap = 0;
        seq[k] = NULL;
        len[k] = 0;
        snprintf(text, sizeof text, "unsafe\n%s", cats[k].code);
        assert_int_equal(tok_encode(cold.tok, text, strlen(text), &seq[k], &len[k], &cap, err), 0);
    }
    assert_true(len[1] > len[0] && memcmp(seq[0], seq[1], len[0] * sizeof(int32_t)) == 0); /* S1 is a token prefix of S1A */
    int64_t base = d.prompt_tokens + cold.n_decision_prefix;
    float *logits = malloc(cold.model.cfg.vocab_size * sizeof(float));
    for (int k = 0; k < 4; k++) {
        double want = d.p_unsafe, p;
        sc.n_cached = base;
        for (size_t i = 0; i < len[k]; i++) {
            assert_int_equal(model_forward(&cold.model, &sc, &seq[k][i], 1, logits, err), 0);
            if (i + 1 < len[k]) ref_probs(logits, cold.model.cfg.vocab_size, &seq[k][i + 1], 1, &p), want *= p;
        }
        /* the logits after the whole code: take out the mass of continuing into a longer listed code */
        for (int o = 0; o < 4; o++)
            if (len[o] > len[k] && memcmp(seq[o], seq[k], len[k] * sizeof(int32_t)) == 0) {
                ref_probs(logits, cold.model.cfg.vocab_size, &seq[o][len[k]], 1, &p);
                want *= 1.0 - p;
            }
        printf("  %s: %.9g (reference %.9g)\n", cats[k].code, got[k], want);
        if (!(fabs(got[k] - want) <= 1e-12 * want)) fail_msg("%s: %.17g vs reference %.17g", cats[k].code, got[k], want);
    }
    for (int k = 0; k < 4; k++) free(seq[k]);
    free(logits);
    chat_free(&c);
    template_free(&pf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_incremental_bit_identical),
        cmocka_unit_test(test_budget_and_lru),
        cmocka_unit_test(test_policy_shapes_and_file),
        cmocka_unit_test(test_custom_code_scores),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
