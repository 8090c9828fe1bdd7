/* tests/test_regressions.c: every fuzz target's harness (tests/fuzz/fuzz_*.c, compiled here
 * without libFuzzer) over its committed seed corpus (tests/fuzz/corpus/NAME) and its saved
 * findings (tests/fuzz/regressions/NAME), so each input that once crashed a parser is re-run by
 * every `make test` and `make sanitize`. Seeds named ok-* must be accepted: a format change that
 * turns them into rejected noise fails here rather than silently weakening the fuzzing.
 * Also: message text full of special-token text tokenizes, through the whole prompt path, to
 * exactly the template's own special ids (the tokenizer test covers tok_encode alone). */
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>

#define FUZZ_REGRESSION 1
#include "fuzz/fuzz_chat.c"
#include "fuzz/fuzz_config.c"
#include "fuzz/fuzz_encode.c"
#include "fuzz/fuzz_gguf.c"
#include "fuzz/fuzz_http.c"
#include "fuzz/fuzz_guardbin.c"
#include "fuzz/fuzz_json.c"
#include "fuzz/fuzz_l4tok.c"
#include "fuzz/fuzz_kvcache.c"
#include "fuzz/fuzz_pte.c"
#include "fuzz/fuzz_prompt.c"
#include "fuzz/fuzz_render.c"
#include "fuzz/fuzz_request.c"
#include "fuzz/fuzz_safetensors.c"
#include "fuzz/fuzz_tokjson.c"
#include "fuzz/fuzz_tokload.c"

/* Feed every file of tests/fuzz/{corpus,regressions}/name through one(). */
static void run_inputs(const char *name, int (*one)(const uint8_t *, size_t)) {
    static const char *kinds[] = { "corpus", "regressions" };
    int n = 0, ok = 0;
    for (int k = 0; k < 2; k++) {
        char path[1024];
        snprintf(path, sizeof path, "tests/fuzz/%s/%s", kinds[k], name);
        DIR *d = opendir(path);
        if (!d) {
            if (k == 0) fail_msg("no seed corpus %s (run from the repository root)", path);
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char file[1400];
            snprintf(file, sizeof file, "%s/%s", path, e->d_name);
            size_t len;
            char *data = slurp(file, &len);
            int accepted = one((const uint8_t *)data, len);
            if (strncmp(e->d_name, "ok-", 3) == 0 && !accepted) fail_msg("%s: seed no longer accepted by its parser", file);
            free(data);
            n++;
            ok += accepted;
        }
        closedir(d);
    }
    printf("  %s: %d inputs (%d accepted)\n", name, n, ok);
    assert_true(n > 0);
}

#define TARGET(name, init, one)                                        \
    static void test_##name(void **state) {                            \
        (void)state;                                                   \
        static int ready;                                              \
        int (*f)(void) = init;                                         \
        if (!ready && f) assert_int_equal(f(), 0);                     \
        ready = 1;                                                     \
        run_inputs(#name, one);                                        \
    }
TARGET(json, NULL, json_one)
TARGET(chat, chat_init_target, chat_one)
TARGET(render, NULL, render_one)
TARGET(prompt, NULL, prompt_one)
TARGET(tokload, NULL, tokload_one)
TARGET(tokjson, tokjson_init, tokjson_one)
TARGET(config, config_init, config_one)
TARGET(safetensors, st_init, st_one)
TARGET(guardbin, guardbin_init, guardbin_one)
TARGET(gguf, gguf_init, gguf_one)
TARGET(kvcache, kv_init, kv_one)
TARGET(l4tok, l4tok_init, l4tok_one)
TARGET(pte, NULL, pte_one)
TARGET(http, NULL, http_one)
TARGET(request, request_init, request_one)

/* ==== Pending: inputs of reported, still open bugs (see fuzz.h) ==== */

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_LSAN 1
#endif
#endif
#ifndef UNDER_LSAN
#define UNDER_LSAN 0
#endif

typedef struct {
    const char *name;
    int (*init)(void);
    int (*one)(const uint8_t *, size_t);
} PendingTarget;

/* Each input runs in a child with the known-bug filters off: a crash means the bug is still
 * there (reported, so not a failure here); a clean run means it was fixed and the input should
 * move to regressions/ (and the filter go). Inputs named leak-* or ub-* only fail under the
 * sanitizers, so a plain build does not judge them. */
static void test_pending(void **state) {
    (void)state;
    static const PendingTarget targets[] = {
        { "safetensors", st_init, st_one },
        { "guardbin", guardbin_init, guardbin_one },
        { "tokjson", tokjson_init, tokjson_one },
        { "config", config_init, config_one },
        { "gguf", gguf_init, gguf_one },
    };
    int open_bugs = 0, fixed = 0;
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        char path[512];
        snprintf(path, sizeof path, "tests/fuzz/pending/%s", targets[t].name);
        DIR *d = opendir(path);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char file[1100];
            snprintf(file, sizeof file, "%s/%s", path, e->d_name);
            size_t len;
            char *data = slurp(file, &len);
            fflush(NULL);
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0) {
                fuzz_skip_known_bugs = 0;
                int null = open("/dev/null", O_WRONLY); /* the crash report is expected noise */
                if (null >= 0) dup2(null, 1), dup2(null, 2);
                static const int sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGSYS };
                for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) signal(sigs[k], SIG_DFL); /* not cmocka's */
                if (targets[t].init) targets[t].init();
                targets[t].one((const uint8_t *)data, len);
                exit(0); /* not _exit: LeakSanitizer reports at exit */
            }
            int st;
            assert_int_equal(waitpid(pid, &st, 0), pid);
            if ((strncmp(e->d_name, "leak-", 5) == 0 || strncmp(e->d_name, "ub-", 3) == 0) && !UNDER_LSAN) {
                printf("  reported: %s (a leak or undefined behaviour: checked only under make sanitize)\n", file);
            } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
                printf("  FIXED: %s no longer fails: move it to tests/fuzz/regressions/%s/ and delete the target's "
                       "known-bug filter\n", file, targets[t].name);
                fixed++;
            } else {
                printf("  open bug (reported): %s still fails\n", file);
                open_bugs++;
            }
            free(data);
        }
        closedir(d);
    }
    printf("  %d known bugs still open, %d fixed\n", open_bugs, fixed);
}

static void test_encode(void **state) {
    (void)state;
    shared_path("tokenizer/llama31/tokenizer.json"); /* skips without the references */
    shared_path("tokenizer/llama2/tokenizer.json");
    shared_path("fixtures_lg4/tokenizer/tokenizer.model");
    if (!encode_tok[0]) assert_int_equal(encode_init(), 0);
    run_inputs("encode", encode_one);
}

/* ==== guard.bin table checks that only a recomputed checksum lets through ==== */

/* Load the committed guard.bin seed, apply one edit, fix every checksum, and expect gb_open to
 * refuse it with a message containing want (and to be one line). */
static void expect_gb_error(const char *want, void (*edit)(uint8_t **b, size_t *n)) {
    size_t n;
    uint8_t *b = (uint8_t *)slurp("tests/fuzz/corpus/guardbin/ok-lg3-1b-f16", &n);
    edit(&b, &n);
    for (int k = 0; k < 8; k++) b[16 + k] = (uint8_t)((uint64_t)n >> 8 * k); /* recorded file size */
    fuzz_fix_guardbin(b, n);
    char path[600], err[ERRLEN];
    snprintf(path, sizeof path, "%s/edited.bin", test_tmpdir());
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    GuardFile g;
    if (gb_open(&g, path, err) == 0) {
        gb_close(&g);
        fail_msg("edit accepted; expected an error with '%s'", want);
    }
    if (!strstr(err, want) || strchr(err, '\n')) fail_msg("error '%s' should be one line with '%s'", err, want);
    free(b);
}

static uint64_t first_tensor(const uint8_t *b) { return 256 + 24ull * ld_u32(b + 44); }
static void e_header_reserved(uint8_t **b, size_t *n) { (void)n, (*b)[200] = 1; }
static void e_source(uint8_t **b, size_t *n) { (void)n, memset(*b + 124, 0, 4); }
static void e_section_reserved(uint8_t **b, size_t *n) { (void)n, (*b)[256 + 4] = 1; }
static void e_section_kind(uint8_t **b, size_t *n) { (void)n, (*b)[256] = 4; } /* 3 is the output ids section (version 2) */
static void e_section_twice(uint8_t **b, size_t *n) { (void)n, (*b)[256 + 24] = (*b)[256]; }
static void e_name_newline(uint8_t **b, size_t *n) { (void)n, (*b)[first_tensor(*b) + 3] = '\n'; }
static void e_name_padding(uint8_t **b, size_t *n) { (void)n, (*b)[first_tensor(*b) + 63] = 'x'; }
static void e_record_reserved(uint8_t **b, size_t *n) { (void)n, (*b)[first_tensor(*b) + 127] = 1; }
static void e_trailing(uint8_t **b, size_t *n) {
    *b = realloc(*b, *n + 64);
    memset(*b + *n, 0, 64);
    *n += 64;
}
static void e_overlap(uint8_t **b, size_t *n) { /* tensor 1 at tensor 0's offset */
    (void)n;
    uint64_t t = first_tensor(*b);
    memcpy(*b + t + 128 + 104, *b + t + 104, 8);
}

static void test_guardbin_tables(void **state) {
    (void)state;
    expect_gb_error("reserved header bytes", e_header_reserved);
    expect_gb_error("unknown source format", e_source);
    expect_gb_error("non-zero reserved field", e_section_reserved);
    expect_gb_error("unknown kind", e_section_kind);
    expect_gb_error("appears twice", e_section_twice);
    expect_gb_error("printable ASCII", e_name_newline);
    expect_gb_error("NUL-padded", e_name_padding);
    expect_gb_error("non-zero reserved bytes", e_record_reserved);
    expect_gb_error("unaccounted bytes after", e_trailing);
    expect_gb_error("overlap", e_overlap);
    /* json_int: 2^63 is not an int64 (it used to be converted: undefined behaviour) */
    Json j;
    char err[ERRLEN];
    int64_t v;
    const char *big = "[9223372036854775808,-9223372036854775808]";
    assert_int_equal(json_parse(&j, big, strlen(big), err), 0);
    assert_int_equal(json_int(json_first(&j, json_root(&j)), 0, INT64_MAX, &v), -1);
    assert_int_equal(json_int(json_next(&j, json_first(&j, json_root(&j))), INT64_MIN, 0, &v), 0);
    assert_true(v == INT64_MIN);
    json_free(&j);
}

/* ==== Special-token text in messages, through render + guard_prompt_ids ==== */

/* Every SPECIAL token's text in one user message and one agent message (alone, glued to words
 * and to each other), plus the other family's specials: the prompt must contain exactly the
 * template's own special ids, in its own places. */
static void check_prompt_specials(const Tokenizer *t, int version, int want_specials, uint32_t want_vocab_specials) {
    Buf msg = { 0 };
    static const char *other[] = { "<s>", "</s>", "<unk>", "<|eot_id|>", "<|begin_of_text|>", "<|start_header_id|>",
                                   "<|end_header_id|>", "[INST]", "[/INST]", "<<SYS>>" };
    uint32_t n_special = 0;
    for (uint32_t id = 0; id < tok_vocab_size(t); id++) {
        if (tok_kind(t, (int32_t)id) != TOKK_SPECIAL) continue;
        uint32_t len;
        const uint8_t *p = tok_piece(t, (int32_t)id, &len);
        buf_put(&msg, "x", 1);
        buf_put(&msg, p, len);
        buf_put(&msg, p, len);
        buf_put(&msg, id % 2 ? " " : "\n", 1);
        n_special++;
    }
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) buf_put(&msg, other[i], strlen(other[i]));
    assert_false(msg.oom);
    assert_int_equal(n_special, want_vocab_specials);
    Conversation c;
    char err[ERRLEN];
    chat_init(&c);
    assert_int_equal(chat_append(&c, ROLE_USER, (const char *)msg.p, (size_t)msg.len, err), 0);
    assert_int_equal(chat_append(&c, ROLE_ASSISTANT, (const char *)msg.p, (size_t)msg.len, err), 0);
    PromptFormat pf;
    assert_int_equal(template_default(&pf, version, err), 0);
    Prompt p;
    if (template_render(&pf, &c, &p, err)) fail_msg("render: %s", err);
    Guard g;
    memset(&g, 0, sizeof g);
    g.tok = (Tokenizer *)t;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    if (guard_prompt_ids(&g, &p, &ids, &n, &cap, err)) fail_msg("guard_prompt_ids: %s", err);
    int found = 0;
    for (size_t i = 0; i < n; i++) found += tok_kind(t, ids[i]) == TOKK_SPECIAL;
    if (found != want_specials) fail_msg("%d special ids in the prompt, the template has %d", found, want_specials);
    printf("  %s: %u special tokens in %llu bytes of message text, prompt of %zu ids has only the template's %d\n",
           template_guard_name(version), n_special, (unsigned long long)msg.len, n, want_specials);
    free(ids);
    prompt_free(&p);
    template_free(&pf);
    chat_free(&c);
    buf_free(&msg);
}

static void test_prompt_specials(void **state) {
    (void)state;
    shared_path("tokenizer/llama31/tokenizer.json");
    if (!encode_tok[0]) assert_int_equal(encode_init(), 0);
    check_prompt_specials(encode_tok[0], GUARD_LG3_1B, 6, 256); /* <|begin_of_text|> ... <|end_header_id|> */
    check_prompt_specials(encode_tok[0], GUARD_LG3_8B, 6, 256);
    check_prompt_specials(encode_tok[1], GUARD_LG1, 0, 3);      /* <unk> <s> </s>; the LG1/LG2 prompt has none */
    check_prompt_specials(encode_tok[0], GUARD_LG2, 0, 256);     /* Llama Guard 2 is Llama 3 based */
}

static int teardown_all(void **state) {
    (void)state;
    tok_free(encode_tok[0]);
    tok_free(encode_tok[1]);
    if (kv_guard.tok) guard_close(&kv_guard);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),     cmocka_unit_test(test_chat),        cmocka_unit_test(test_render),
        cmocka_unit_test(test_prompt),   cmocka_unit_test(test_tokload),     cmocka_unit_test(test_tokjson),
        cmocka_unit_test(test_config),   cmocka_unit_test(test_safetensors), cmocka_unit_test(test_guardbin), cmocka_unit_test(test_gguf), cmocka_unit_test(test_kvcache), cmocka_unit_test(test_l4tok), cmocka_unit_test(test_http), cmocka_unit_test(test_request),
        cmocka_unit_test(test_pte),
        cmocka_unit_test(test_encode),   cmocka_unit_test(test_prompt_specials), cmocka_unit_test(test_pending),
        cmocka_unit_test(test_guardbin_tables),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_all);
}
