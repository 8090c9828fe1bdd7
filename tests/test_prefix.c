/* test_prefix.c: the in-memory prefix store (classify.h PrefixStore) on the fixture model.
 * Against a Guard that reuses nothing (no_prefix_store), in one process:
 *   - a multi-turn conversation checked turn by turn, interleaved with other conversations, gives
 *     bit-identical decisions, and from turn 3 on reuses more than the policy prefix;
 *   - the recent prompts stay within their byte budget (LRU), and a budget of 0 keeps none;
 *   - the policy prefix length is computed once per prompt shape and cached;
 *   - category scores are the same whatever was reused, and sum to at most P(unsafe);
 *   - the cache file holds the policy prefixes only (its size is exactly theirs: no message text).
 */
#include "serverutil.h"

#include "classify.h"

static Guard cold, warm;
static RunState sc, sw;

static int setup(void **st) {
    (void)st;
    char err[ERRLEN];
    if (guard_open(&cold, ts_model(), 1, err) || guard_open(&warm, ts_model(), 1, err)) fail_msg("%s", err);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_incremental_bit_identical),
        cmocka_unit_test(test_budget_and_lru),
        cmocka_unit_test(test_policy_shapes_and_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
