/* tests/fuzz/fuzz_gguf.c: the GGUF importer (gguf_open: header, key/values, tensor records, the
 * llama.* hyperparameters, rope_freqs recovery, the tokenizer.ggml.* vocabulary and merges, the
 * chat template) on untrusted bytes.
 * Invariants for an accepted file: the Config passes config_validate, a tokenizer was built,
 * tensor names are unique, every tensor's bytes lie inside the file, and every row decodes. */
#include "fuzz.h"
#include "import/import.h"

static FuzzFile gguf_file_;

static int gguf_init(void) { return fuzz_file_open(&gguf_file_, "model.gguf"); }

static int gguf_one(const uint8_t *data, size_t size) {
    FUZZ_CHECK(fuzz_file_set(&gguf_file_, data, size) == 0, "memfd write");
    Source s;
    char err[ERRLEN];
    if (gguf_open(&s, gguf_file_.path, err)) {
        fuzz_check_err(err);
        FUZZ_CHECK(s.n == 0 && s.n_maps == 0 && s.tok == NULL, "source not freed on error");
        return 0;
    }
    char e2[ERRLEN];
    FUZZ_CHECK(config_validate(&s.cfg, e2) == 0, "accepted config fails config_validate: %s", e2);
    FUZZ_CHECK(s.tok != NULL, "no tokenizer");
    FUZZ_CHECK(s.n_maps == 1, "%d mappings", s.n_maps);
    uint64_t budget = 1u << 18;
    for (int i = 0; i < s.n; i++) {
        const SrcTensor *t = &s.t[i];
        FUZZ_CHECK(source_find(&s, t->name) == t, "duplicate name %s", t->name);
        FUZZ_CHECK(t->data >= s.maps[0].data && t->bytes <= s.maps[0].size &&
                       t->data <= s.maps[0].data + s.maps[0].size - t->bytes, "tensor %s outside the file", t->name);
        fuzz_decode_rows(t, &budget);
    }
    source_free(&s);
    return 1;
}

FUZZ_TARGET(gguf_init, gguf_one)
