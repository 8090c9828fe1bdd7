/* tests/fuzz/fuzz_tokjson.c: tok_from_hf, the Hugging Face tokenizer.json reader. The input is
 * tokenizer.json, optionally followed by a FUZZ_SEP line and a tokenizer_config.json (bos/eos).
 * Invariants for an accepted tokenizer: its guard.bin section loads back and serializes to the
 * same bytes; encoding gives only NORMAL/BYTE ids; Llama 3 BPE round-trips valid text. */
#include "fuzz.h"
#include "import/build.h"
#include "tokenizer.h"

static FuzzFile tokjson_json, tokjson_cfg;

static int tokjson_init(void) {
    return fuzz_file_open(&tokjson_json, "tokenizer.json") || fuzz_file_open(&tokjson_cfg, "tokenizer_config.json");
}

static void tokjson_check(const Tokenizer *t) {
    char err[ERRLEN];
    uint8_t *blob, *blob2;
    uint64_t n, n2;
    FUZZ_CHECK(tok_serialize(t, &blob, &n, err) == 0, "serialize: %s", err);
    Tokenizer *back;
    FUZZ_CHECK(tok_load(&back, blob, n, err) == 0, "a built tokenizer's section does not load: %s", err);
    FUZZ_CHECK(tok_serialize(back, &blob2, &n2, err) == 0, "serialize: %s", err);
    FUZZ_CHECK(n == n2 && memcmp(blob, blob2, n) == 0, "section round trip differs");
    free(blob);
    free(blob2);
    tok_free(back);
    static const char *texts[] = { "Hello world", "ab abab a", " \n\t x", "<|eot_id|></s>", "caf\xC3\xA9 \xF0\x9F\x98\x80 1234" };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids = NULL;
        size_t k = 0, cap = 0;
        FUZZ_CHECK(tok_encode(t, texts[i], strlen(texts[i]), &ids, &k, &cap, err) == 0, "encode: %s", err);
        for (size_t j = 0; j < k; j++)
            FUZZ_CHECK(tok_kind(t, ids[j]) == TOKK_NORMAL || tok_kind(t, ids[j]) == TOKK_BYTE, "special id %d", ids[j]);
        Buf out = { 0 };
        FUZZ_CHECK(tok_decode_ids(t, ids, k, &out) == 0, "decode");
        if (tok_type(t) == TOK_LLAMA3_BPE)
            FUZZ_CHECK(out.len == strlen(texts[i]) && memcmp(out.p, texts[i], out.len) == 0, "round trip of \"%s\"", texts[i]);
        buf_free(&out);
        free(ids);
    }
}

static int tokjson_one(const uint8_t *data, size_t size) {
    FuzzPart part[2];
    int np = fuzz_split(data, size, part, 2);
    FUZZ_CHECK(fuzz_file_set(&tokjson_json, part[0].p, part[0].n) == 0, "memfd write");
    if (np > 1) FUZZ_CHECK(fuzz_file_set(&tokjson_cfg, part[1].p, part[1].n) == 0, "memfd write");
    Tokenizer *t = NULL;
    char err[ERRLEN];
    if (tok_from_hf(&t, tokjson_json.path, np > 1 ? tokjson_cfg.path : NULL, err)) {
        fuzz_check_err(err);
        FUZZ_CHECK(t == NULL, "tokenizer left after an error");
        return 0;
    }
    tokjson_check(t);
    tok_free(t);
    return 1;
}

FUZZ_TARGET(tokjson_init, tokjson_one)
