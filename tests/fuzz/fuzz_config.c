/* tests/fuzz/fuzz_config.c: hf_read_config (config.json -> Config, including quantization_config
 * through hfq_parse) and hf_read_chat_template (tokenizer_config.json) on the same bytes.
 * Invariants: an accepted Config passes config_validate (the guard.bin loader's own check), its
 * source is HF/AWQ/bitsandbytes as the quantization method says; an accepted chat template is a
 * NUL-terminated copy. */
#include "fuzz.h"
#include "import/import.h"

static FuzzFile config_file;

static int config_init(void) { return fuzz_file_open(&config_file, "config.json"); }

static int config_one(const uint8_t *data, size_t size) {
    FUZZ_CHECK(fuzz_file_set(&config_file, data, size) == 0, "memfd write");
    Config c;
    HfQuant q;
    char err[ERRLEN];
    int ok = 0;
    if (hf_read_config(config_file.path, &c, &q, err) == 0) {
        char e2[ERRLEN];
        FUZZ_CHECK(config_validate(&c, e2) == 0, "accepted config fails config_validate: %s", e2);
        FUZZ_CHECK(q.method == 0 || q.method == SRC_AWQ || q.method == SRC_BNB, "method %d", q.method);
        FUZZ_CHECK(c.source == (q.method ? (uint32_t)q.method : SRC_HF), "source %u", c.source);
        if (q.method == SRC_AWQ) FUZZ_CHECK(q.group_size >= 1, "AWQ group size 0");
        ok = 1;
    } else {
        fuzz_check_err(err);
    }
    /* without a place for a quantization_config it must be refused, not ignored */
    if (hf_read_config(config_file.path, &c, NULL, err) == 0) FUZZ_CHECK(ok && q.method == 0, "quantization_config ignored");
    Source s;
    memset(&s, 0, sizeof s);
    if (hf_read_chat_template(&s, config_file.path, err) == 0) {
        if (s.chat_template) FUZZ_CHECK(strlen(s.chat_template) <= size, "template longer than its file");
    } else {
        fuzz_check_err(err);
    }
    source_free(&s);
    return ok;
}

FUZZ_TARGET(config_init, config_one)
