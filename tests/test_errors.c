/* test_errors.c: bad input to ./export and ./run gives exit status 2, one line on stderr naming
 * the file and the problem, and never a partial output file. Checkpoints are built in a temp
 * dir from the l2 fixture (config edits, hand-made safetensors headers); guard.bin files are
 * corrupted field by field, with the header checksum recomputed where the test wants the loader
 * to get past it. */
#include "testutil.h"

#include <dirent.h>

#include "guard.h"

static char dir[600], out[700];

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void write_str(const char *path, const char *s) { write_file(path, s, strlen(s)); }

/* A fresh checkpoint dir holding the l2 fixture's files (copied: tests edit them). */
static void fresh_ckpt(void) {
    snprintf(dir, sizeof dir, "%s/ckpt", test_tmpdir());
    snprintf(out, sizeof out, "%s/out.bin", test_tmpdir());
    run_cmd(NULL, 0, "rm -rf '%s' '%s'; mkdir -p '%s'", dir, out, dir);
    const char *src = shared_path("fixtures/l2"), *tok = shared_path("tokenizer/llama2/tokenizer.json");
    assert_int_equal(run_cmd(NULL, 0, "cp '%s/config.json' '%s/model.safetensors' '%s/tokenizer_config.json' '%s' '%s/'", src, src, src, tok, dir), 0);
}

/* No output and no temp file may remain in the output's directory. */
static void assert_no_output(void) {
    assert_false(file_exists(out));
    DIR *d = opendir(test_tmpdir());
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) fail_msg("temporary file %s left behind", e->d_name);
    closedir(d);
}

/* Run export on dir; expect status 2, a single line mentioning `what`. */
static void expect_export_error(const char *what) {
    char o[4096];
    int rc = run_cmd(o, sizeof o, "./export '%s' '%s' 2>&1 >/dev/null", dir, out);
    if (rc != 2 || !strstr(o, what)) fail_msg("expected exit 2 and '%s', got %d: %s", what, rc, o);
    char *nl = strchr(o, '\n');
    assert_true(nl == NULL || nl[1] == 0); /* one line */
    assert_no_output();
}

static void edit_config(const char *from, const char *to) {
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *s = slurp(path, NULL), *p = strstr(s, from);
    if (!p) fail_msg("config has no '%s'", from);
    char buf[8192];
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
    write_str(path, buf);
    free(s);
}

static void test_missing_files(void **st) {
    (void)st;
    fresh_ckpt();
    run_cmd(NULL, 0, "rm '%s/config.json'", dir);
    expect_export_error("config.json: cannot open");
    fresh_ckpt();
    run_cmd(NULL, 0, "rm '%s/model.safetensors'", dir);
    expect_export_error("no model.safetensors");
}

static void test_bad_config(void **st) {
    (void)st;
    static const struct { const char *from, *to, *msg; } cases[] = {
        { "\"hidden_size\": 64", "\"hidden_size\": 0", "hidden_size" },
        { "\"hidden_size\": 64", "\"hidden_size\": -64", "hidden_size" },
        { "\"hidden_size\": 64", "\"hidden_size\": 1e12", "hidden_size" },
        { "\"hidden_size\": 64", "\"hidden_size\": \"64\"", "hidden_size" },
        { "\"hidden_size\": 64,", "", "missing \"hidden_size\"" },
        { "\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3", "num_key_value_heads" },
        { "\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 0", "rms_norm_eps" },
        { "\"rope_theta\": 10000.0", "\"rope_theta\": -1", "rope_theta" },
        { "\"vocab_size\": 32000", "\"vocab_size\": 4000000000", "vocab_size" },
        { "\"model_type\": \"llama\"", "\"model_type\": \"mistral\"", "model_type" },
        { "\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2}", "yarn" },
        { "\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}", "low_freq_factor" },
        { "\"intermediate_size\": 172", "\"intermediate_size\": 170", "wrong shape" },
        { "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": 7", "tie_word_embeddings" },
        { "{", "{{", "malformed JSON" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fresh_ckpt();
        edit_config(cases[i].from, cases[i].to);
        expect_export_error(cases[i].msg);
    }
}

/* Hand-made safetensors: header JSON + data bytes. */
static void write_st(const char *header, size_t data_len, int64_t claimed_len) {
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t hl = strlen(header);
    uint8_t *b = calloc(1, 8 + hl + data_len);
    uint64_t L = claimed_len >= 0 ? (uint64_t)claimed_len : hl;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(L >> (8 * i));
    memcpy(b + 8, header, hl);
    write_file(path, b, 8 + hl + data_len);
    free(b);
}

static void test_bad_safetensors(void **st) {
    (void)st;
    fresh_ckpt();
    write_st("", 0, -1);
    expect_export_error("malformed safetensors header");
    fresh_ckpt();
    write_st("{}", 0, 1000);
    expect_export_error("header length");
    fresh_ckpt();
    write_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, -1);
    expect_export_error("outside the file");
    fresh_ckpt();
    write_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}", 16, -1);
    expect_export_error("need 16");
    fresh_ckpt();
    write_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24, -1);
    expect_export_error("overlap");
    fresh_ckpt();
    write_st("{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, -1);
    expect_export_error("unsupported dtype F64");
    fresh_ckpt();
    write_st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,16]}}", 16, -1);
    expect_export_error("a");
    /* an extra tensor the model does not use (e.g. a bias) is refused, not dropped */
    fresh_ckpt();
    assert_int_equal(run_cmd(NULL, 0, "cp '%s/model.safetensors' '%s/model-00001-of-00002.safetensors' && rm '%s/model.safetensors'", dir, dir, dir), 0);
    write_st("{\"model.layers.0.self_attn.q_proj.bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1);
    {
        char p2[700];
        snprintf(p2, sizeof p2, "%s/model.safetensors", dir);
        char p3[700];
        snprintf(p3, sizeof p3, "%s/model-00002-of-00002.safetensors", dir);
        assert_int_equal(rename(p2, p3), 0);
        snprintf(p2, sizeof p2, "%s/model.safetensors.index.json", dir);
        write_str(p2, "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\", "
                      "\"model.layers.0.self_attn.q_proj.bias\": \"model-00002-of-00002.safetensors\"}}");
    }
    expect_export_error("unexpected tensor 'model.layers.0.self_attn.q_proj.bias'");
    /* an index naming a path outside the checkpoint is refused */
    {
        char p2[700];
        snprintf(p2, sizeof p2, "%s/model.safetensors.index.json", dir);
        write_str(p2, "{\"weight_map\": {\"x\": \"../../etc/passwd\"}}");
    }
    expect_export_error("not a plain file name");
    /* a truncated copy of the real file: offsets now point past the end */
    fresh_ckpt();
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(truncate(path, 1000000), 0);
    expect_export_error("outside the file");
    /* structurally fine file missing a tensor the config needs */
    fresh_ckpt();
    write_st("{\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, -1);
    expect_export_error("wrong shape");
}

/* ---- guard.bin ---- */

static char good[700];

static void make_good(void) {
    snprintf(good, sizeof good, "%s/good.bin", test_tmpdir());
    if (file_exists(good)) return;
    char o[4096];
    if (run_cmd(o, sizeof o, "./export '%s' '%s'", shared_path("fixtures/l2"), good)) fail_msg("%s", o);
}

static uint8_t *load_good(size_t *n) { return (uint8_t *)slurp(good, n); }

static void fix_crc(uint8_t *b) {
    uint64_t data_off = ld_u64(b + 32);
    memset(b + 48, 0, 4);
    uint32_t c = crc32_update(0, b, (size_t)data_off);
    for (int i = 0; i < 4; i++) b[48 + i] = (uint8_t)(c >> (8 * i));
}

static void expect_run_error(const uint8_t *b, size_t n, const char *what) {
    char path[700], o[4096];
    snprintf(path, sizeof path, "%s/bad.bin", test_tmpdir());
    write_file(path, b, n);
    int rc = run_cmd(o, sizeof o, "./run '%s' --info 2>&1 >/dev/null", path);
    if (rc != 2 || !strstr(o, what) || !strstr(o, "bad.bin")) fail_msg("expected exit 2 and '%s', got %d: %s", what, rc, o);
    /* the library path gives the same error without crashing */
    Model m;
    char err[ERRLEN];
    assert_int_equal(model_open(&m, path, 1, err), -1);
}

static void test_bad_guardbin(void **st) {
    (void)st;
    make_good();
    size_t n;
    uint8_t *b = load_good(&n);
    uint64_t first_tensor = 256 + 24 * (uint64_t)ld_u32(b + 44); /* first tensor record */

    expect_run_error(b, 100, "not a guard.bin");
    expect_run_error(b, n - 1, "truncated");
    uint8_t *c = malloc(n);
#define MUTATE(stmt, recrc, what) do { memcpy(c, b, n); stmt; if (recrc) fix_crc(c); expect_run_error(c, n, what); } while (0)
    MUTATE(c[0] = 'X', 0, "not a guard.bin");
    MUTATE(c[8] = 99, 1, "unsupported version");
    MUTATE(c[12] ^= 0xFF, 1, "byte order");
    MUTATE(c[300] ^= 1, 0, "checksum");
    MUTATE(c[40] = 0xFF, 1, "tables do not fit"); /* n_tensors */
    MUTATE(c[56 + 4] = 0, 1, "hidden_size");          /* dim = 0 */
    /* tensor 0 offset (record + 64 name + 8 + 32 shape) pointing past the end */
    MUTATE(for (int i = 0; i < 8; i++) c[first_tensor + 104 + i] = (uint8_t)(0x7FFFFFFFFFFFFFC0ull >> (8 * i)), 1, "outside the data region");
    /* size that disagrees with dtype and shape */
    MUTATE(c[first_tensor + 112] ^= 4, 1, "need");
    /* unknown dtype */
    MUTATE(c[first_tensor + 64] = 7, 1, "unknown dtype");
    /* misaligned offset */
    MUTATE(c[first_tensor + 104] ^= 4, 1, "aligned");
    /* shape with a zero */
    MUTATE(memset(c + first_tensor + 72, 0, 8), 1, "bad shape");
    /* duplicate tensor name: copy tensor 0's name over tensor 1's */
    MUTATE(memcpy(c + first_tensor + 128, c + first_tensor, 64), 1, "appears twice");
    /* data corruption is caught by --verify, not at load */
    memcpy(c, b, n);
    c[n - 100] ^= 1;
    char path[700], o[4096];
    snprintf(path, sizeof path, "%s/bad.bin", test_tmpdir());
    write_file(path, c, n);
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' --verify", path), 2);
    assert_non_null(strstr(o, "data checksum mismatch"));
    assert_int_equal(run_cmd(o, sizeof o, "./run '%s' --verify", good), 0);
    free(c);
    free(b);
}

/* Every truncation and many single-byte corruptions of the tables: never a crash. */
static void test_guardbin_never_crashes(void **st) {
    (void)st;
    make_good();
    size_t n;
    uint8_t *b = load_good(&n);
    char path[700], err[ERRLEN];
    snprintf(path, sizeof path, "%s/fuzz.bin", test_tmpdir());
    uint64_t data_off = ld_u64(b + 32);
    uint8_t *c = malloc(n);
    srand(1);
    for (int iter = 0; iter < 400; iter++) {
        memcpy(c, b, n);
        size_t len = n;
        if (iter < 100) len = (size_t)rand() % (size_t)data_off;
        else {
            for (int k = 0; k < 1 + iter % 4; k++) c[(size_t)rand() % data_off] = (uint8_t)rand();
            if (iter % 2) fix_crc(c);
        }
        write_file(path, c, len);
        Model m;
        if (model_open(&m, path, 1, err) == 0) model_close(&m); /* some flips are harmless (e.g. padding) */
    }
    free(c);
    free(b);
}

/* A failed export into an existing path leaves the old file untouched. */
static void test_failed_export_keeps_old_file(void **st) {
    (void)st;
    fresh_ckpt();
    write_str(out, "old");
    edit_config("\"hidden_size\": 64", "\"hidden_size\": 0");
    char o[4096];
    assert_int_equal(run_cmd(o, sizeof o, "./export '%s' '%s'", dir, out), 2);
    char *s = slurp(out, NULL);
    assert_string_equal(s, "old");
    free(s);
    unlink(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_files),         cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_bad_safetensors),       cmocka_unit_test(test_bad_guardbin),
        cmocka_unit_test(test_guardbin_never_crashes), cmocka_unit_test(test_failed_export_keeps_old_file),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    run_cmd(NULL, 0, "rm -rf '%s'", test_tmpdir());
    return rc;
}
