/* tests/fuzz/fuzz_l4tok.c: the Llama 4 tokenizer reader without tokenizer.json
 * (hf_llama4_tiktoken: a tiktoken rank file and tokenizer_config.json's added_tokens_decoder,
 * bos_token, eos_token). The input is split at FUZZ_SEP into tokenizer.model, then
 * tokenizer_config.json.
 * Invariants for an accepted pair: the tokenizer uses the o200k pre-tokenizer, its specials
 * follow the ranks, bos/eos (when set) are special tokens, and encoding text gives only
 * in-range NORMAL ids. */
#include "fuzz.h"
#include "import/import.h"
#include "tokenizer.h"

static FuzzFile l4_model, l4_config;

static int l4tok_init(void) {
    return fuzz_file_open(&l4_model, "tokenizer.model") || fuzz_file_open(&l4_config, "tokenizer_config.json") ? -1 : 0;
}

static int l4tok_one(const uint8_t *data, size_t size) {
    FuzzPart part[2] = { { 0 } };
    int np = fuzz_split(data, size, part, 2);
    FUZZ_CHECK(fuzz_file_set(&l4_model, part[0].p, part[0].n) == 0, "memfd write");
    FUZZ_CHECK(fuzz_file_set(&l4_config, np > 1 ? part[1].p : (const uint8_t *)"", np > 1 ? part[1].n : 0) == 0, "memfd write");
    Source s;
    memset(&s, 0, sizeof s);
    char err[ERRLEN];
    int ok = hf_llama4_tiktoken(&s, l4_model.path, l4_config.path, err) == 0;
    if (!ok) {
        fuzz_check_err(err);
        source_free(&s);
        return 0;
    }
    const Tokenizer *t = s.tok;
    FUZZ_CHECK(t && tok_pretok(t) == TOK_PRETOK_O200K, "not an o200k tokenizer");
    for (int k = 0; k < 2; k++) {
        int32_t id = k ? tok_eos(t) : tok_bos(t);
        FUZZ_CHECK(id < 0 || tok_kind(t, id) == TOKK_SPECIAL, "bos/eos %d is not special", id);
    }
    static const char text[] = "Hello, World! It's 2025 \xE0\xA4\x85\xE0\xA4\xBF\xCC\x81 <|eot|>\r\n\tdone";
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    FUZZ_CHECK(tok_encode(t, text, sizeof text - 1, &ids, &n, &cap, err) == 0, "encode: %s", err);
    for (size_t i = 0; i < n; i++) FUZZ_CHECK(tok_kind(t, ids[i]) == TOKK_NORMAL, "text produced id %d", ids[i]);
    free(ids);
    source_free(&s);
    return 1;
}

FUZZ_TARGET(l4tok_init, l4tok_one)
