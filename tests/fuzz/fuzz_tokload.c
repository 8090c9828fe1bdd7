/* tests/fuzz/fuzz_tokload.c: tok_load, the guard.bin tokenizer section reader, on untrusted bytes:
 * as given, and with the section checksum recomputed so mutations reach the checks behind it
 * (counts against the section size, kinds, uniqueness, byte coverage, merges).
 * Invariants for an accepted tokenizer: it serializes back to the exact input; it encodes a few
 * fixed texts and a slice of the input itself without error, producing only in-range NORMAL/BYTE
 * ids; and for Llama 3 BPE (whose merges are checked to be concatenations) decode(encode(x))
 * gives x with invalid UTF-8 replaced. */
#include "fuzz.h"
#include "import/build.h"
#include "tokenizer.h"

static void tokload_check_encode(const Tokenizer *t, const uint8_t *s, size_t n) {
    int32_t *ids = NULL;
    size_t k = 0, cap = 0;
    char err[ERRLEN];
    FUZZ_CHECK(tok_encode(t, (const char *)s, n, &ids, &k, &cap, err) == 0, "encode: %s", err);
    for (size_t i = 0; i < k; i++) {
        int kind = tok_kind(t, ids[i]);
        FUZZ_CHECK(kind == TOKK_NORMAL || kind == TOKK_BYTE, "id %d has kind %d", ids[i], kind);
    }
    Buf out = { 0 }, want = { 0 };
    FUZZ_CHECK(tok_decode_ids(t, ids, k, &out) == 0, "decode failed");
    if (tok_type(t) == TOK_LLAMA3_BPE) {
        fuzz_utf8_replace(s, n, &want);
        FUZZ_CHECK(out.len == want.len && (want.len == 0 || memcmp(out.p, want.p, want.len) == 0),
                   "decode(encode(x)) != x (%llu vs %llu bytes)", (unsigned long long)out.len, (unsigned long long)want.len);
    }
    buf_free(&out);
    buf_free(&want);
    free(ids);
}

static int tokload_load(const uint8_t *p, size_t n, const uint8_t *text, size_t tn) {
    Tokenizer *t = NULL;
    char err[ERRLEN];
    if (tok_load(&t, p, n, err)) {
        fuzz_check_err(err);
        FUZZ_CHECK(t == NULL, "tokenizer left after an error");
        return 0;
    }
    uint8_t *blob;
    uint64_t blen;
    FUZZ_CHECK(tok_serialize(t, &blob, &blen, err) == 0, "serialize: %s", err);
    FUZZ_CHECK(blen == n && memcmp(blob, p, n) == 0, "section does not serialize back to its bytes");
    free(blob);
    FUZZ_CHECK(tok_bos(t) >= -1 && tok_bos(t) < (int32_t)tok_vocab_size(t), "bos");
    FUZZ_CHECK(tok_eos(t) >= -1 && tok_eos(t) < (int32_t)tok_vocab_size(t), "eos");
    static const char *texts[] = { "", "a", "Hello world", "  x\n\n", "<|eot_id|> <s>", "\xE2\x96\x81 \xFF\xC3" };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        tokload_check_encode(t, (const uint8_t *)texts[i], strlen(texts[i]));
    tokload_check_encode(t, text, tn);
    tok_free(t);
    return 1;
}

static int tokload_one(const uint8_t *data, size_t size) {
    size_t tn = size < 256 ? size : 256; /* the section's own first bytes double as text */
    int ok = tokload_load(data, size, data, tn);
    uint8_t *fixed = fuzz_dup(data, size);
    fuzz_fix_tok_crc(fixed, size);
    if (size && memcmp(fixed, data, size) != 0) ok |= tokload_load(fixed, size, data + size - tn, tn);
    free(fixed);
    return ok;
}

FUZZ_TARGET(NULL, tokload_one)
