/* tests/fuzz/fuzz_encode.c: tok_encode on arbitrary bytes with the real Llama 3.1 and Llama 2
 * tokenizers ($GUARD_SHARED/tokenizer/{llama31,llama2}/tokenizer.json, built once) and Llama 4's
 * (o200k: $GUARD_SHARED/fixtures_lg4/tokenizer, Meta's tokenizer.model with specials.json).
 * Invariants: message text never yields a special id (<|eot_id|>, <s>, ...); every id is in
 * range; decode(encode(x)) == x for valid UTF-8 x, and == x with each maximal invalid subpart
 * replaced by U+FFFD otherwise (for Llama 2 also with U+2581 read back as a space, as HF's
 * decoder does). */
#include "fuzz.h"
#include "import/build.h"
#include "tokenizer.h"

static Tokenizer *encode_tok[3]; /* Llama 3.1, Llama 2, Llama 4 */

/* Llama 4: the ranks plus specials.json ({"<|begin_of_text|>": 200000, ...}) handed over as the
 * added_tokens_decoder of a tokenizer_config.json, as an HF folder would hold it. */
static int encode_llama4(const char *shared) {
    char path[1024], err[ERRLEN];
    snprintf(path, sizeof path, "%s/fixtures_lg4/tokenizer/specials.json", shared);
    Json j;
    if (load_json_file(&j, path, err)) return fprintf(stderr, "fuzz_encode: %s\n", err), -1;
    Buf cfg = { 0 };
    buf_put(&cfg, "{\"added_tokens_decoder\": {", 26);
    int first = 1;
    JSON_FOR(&j, json_root(&j), e) {
        char item[160];
        int n = snprintf(item, sizeof item, "%s\"%d\": {\"content\": \"%s\", \"special\": true}", first ? "" : ",", (int)e->num, e->key);
        buf_put(&cfg, item, (uint64_t)n);
        first = 0;
    }
    buf_put(&cfg, "}}", 2);
    json_free(&j);
    FuzzFile f;
    Source s;
    memset(&s, 0, sizeof s);
    int rc = fuzz_file_open(&f, "tokenizer_config.json") || fuzz_file_set(&f, cfg.p, (size_t)cfg.len) ? -1 : 0;
    snprintf(path, sizeof path, "%s/fixtures_lg4/tokenizer/tokenizer.model", shared);
    if (rc == 0 && hf_llama4_tiktoken(&s, path, f.path, err)) rc = -1, fprintf(stderr, "fuzz_encode: %s\n", err);
    encode_tok[2] = s.tok;
    s.tok = NULL;
    source_free(&s);
    buf_free(&cfg);
    return rc;
}

static int encode_init(void) {
    const char *shared = getenv("GUARD_SHARED");
    if (!shared || !*shared) shared = "../shared";
    static const char *dirs[2] = { "llama31", "llama2" };
    for (int i = 0; i < 2; i++) {
        char path[1024], err[ERRLEN];
        snprintf(path, sizeof path, "%s/tokenizer/%s/tokenizer.json", shared, dirs[i]);
        if (tok_from_hf(&encode_tok[i], path, NULL, err)) {
            fprintf(stderr, "fuzz_encode needs the real tokenizers (set GUARD_SHARED): %s\n", err);
            return -1;
        }
    }
    return encode_llama4(shared);
}

static void encode_check(const Tokenizer *t, const uint8_t *s, size_t n) {
    int32_t *ids = NULL;
    size_t k = 0, cap = 0;
    char err[ERRLEN];
    FUZZ_CHECK(tok_encode(t, (const char *)s, n, &ids, &k, &cap, err) == 0, "encode: %s", err);
    FUZZ_CHECK(n == 0 || k > 0, "no ids for %zu bytes", n);
    for (size_t i = 0; i < k; i++) {
        int kind = tok_kind(t, ids[i]);
        FUZZ_CHECK(kind == TOKK_NORMAL || kind == TOKK_BYTE, "message text produced id %d of kind %d", ids[i], kind);
    }
    Buf out = { 0 }, want = { 0 };
    FUZZ_CHECK(tok_decode_ids(t, ids, k, &out) == 0, "decode failed");
    fuzz_utf8_replace(s, n, &want);
    if (tok_type(t) == TOK_SPM_BPE) { /* U+2581 is the space marker: it decodes as ' ' */
        Buf w2 = { 0 };
        for (uint64_t i = 0; i < want.len; i++) {
            if (i + 3 <= want.len && memcmp(want.p + i, "\xE2\x96\x81", 3) == 0) {
                buf_put(&w2, " ", 1);
                i += 2;
            } else {
                buf_put(&w2, want.p + i, 1);
            }
        }
        buf_free(&want);
        want = w2;
    }
    FUZZ_CHECK(out.len == want.len && (want.len == 0 || memcmp(out.p, want.p, want.len) == 0),
               "decode(encode(x)) != x (type %d, %llu vs %llu bytes)", tok_type(t), (unsigned long long)out.len,
               (unsigned long long)want.len);
    if (fuzz_utf8_valid(s, n) && tok_type(t) == TOK_LLAMA3_BPE)
        FUZZ_CHECK(out.len == n && (n == 0 || memcmp(out.p, s, n) == 0), "valid UTF-8 not preserved");
    buf_free(&out);
    buf_free(&want);
    free(ids);
}

static int encode_one(const uint8_t *data, size_t size) {
    encode_check(encode_tok[0], data, size);
    encode_check(encode_tok[1], data, size);
    encode_check(encode_tok[2], data, size);
    return 1;
}

FUZZ_TARGET(encode_init, encode_one)
