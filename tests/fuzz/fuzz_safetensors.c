/* tests/fuzz/fuzz_safetensors.c: the Hugging Face checkpoint reader (hf_open: config.json,
 * safetensors headers and data ranges, sharded index, AWQ/bitsandbytes assembly, tokenizer and
 * chat template) on a scratch folder written from the input. The input is split at FUZZ_SEP
 * lines into files, in this order:
 *   0 model.safetensors   1 config.json   2 tokenizer.json   3 tokenizer_config.json
 *   4 model.safetensors.index.json   5 model-00001-of-00002.safetensors   6 model-00002-of-00002.safetensors
 * A part that is missing gets a small valid default (config.json, tokenizer.json) or no file; a
 * part that is present but empty means no file.
 * Invariants for an accepted checkpoint: names are unique and NUL-terminated, every tensor's
 * bytes lie inside one of the Source's mappings and match its shape, and every row decodes. */
#include "fuzz.h"
#include "import/import.h"

static const char *const st_names[7] = { "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
                                         "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                                         "model-00002-of-00002.safetensors" };
static Buf st_default[7];

static const char st_config[] =
    "{\"model_type\":\"llama\",\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
    "\"num_key_value_heads\":1,\"intermediate_size\":16,\"vocab_size\":256,\"max_position_embeddings\":64,"
    "\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,\"tie_word_embeddings\":false}";

/* GPT-2 bytes_to_unicode(): the code point byte b is written as in a byte-level vocabulary. */
static uint32_t st_byte_cp(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    uint32_t k = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) k++;
    return 0x100 + k;
}

/* A minimal Llama 3 tokenizer.json: the 256 byte tokens, "ab", "<|eot_id|>", one merge. */
static void st_make_tokenizer(Buf *b) {
    static const char head[] =
        "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":257,\"content\":\"<|eot_id|>\",\"special\":true}],"
        "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
        "{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}"
        "\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]},"
        "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"ignore_merges\":true,"
        "\"byte_fallback\":false,\"vocab\":{";
    buf_put(b, head, sizeof head - 1);
    for (int i = 0; i < 256; i++) {
        uint32_t cp = st_byte_cp(i);
        char item[32];
        int n;
        if (cp == '"' || cp == '\\') n = snprintf(item, sizeof item, "\"\\%c\":%d,", (char)cp, i);
        else if (cp < 0x80) n = snprintf(item, sizeof item, "\"%c\":%d,", (char)cp, i);
        else n = snprintf(item, sizeof item, "\"%c%c\":%d,", (char)(0xC0 | cp >> 6), (char)(0x80 | (cp & 0x3F)), i);
        buf_put(b, item, (uint64_t)n);
    }
    static const char tail[] = "\"ab\":256,\"<|eot_id|>\":257},\"merges\":[\"a b\"]}}";
    buf_put(b, tail, sizeof tail - 1);
}

static int st_init(void) {
    buf_put(&st_default[1], st_config, sizeof st_config - 1);
    st_make_tokenizer(&st_default[2]);
    return st_default[1].oom || st_default[2].oom ? -1 : 0;
}

static void st_check(const Source *s) {
    uint64_t budget = 1u << 18; /* floats decoded per input */
    for (int i = 0; i < s->n; i++) {
        const SrcTensor *t = &s->t[i];
        FUZZ_CHECK(memchr(t->name, 0, GB_NAME_MAX) != NULL, "name not terminated");
        FUZZ_CHECK(source_find(s, t->name) == t, "duplicate name %s", t->name);
        int inside = 0;
        for (int m = 0; m < s->n_maps; m++)
            inside |= t->data >= s->maps[m].data && t->bytes <= s->maps[m].size &&
                      t->data <= s->maps[m].data + s->maps[m].size - t->bytes;
        FUZZ_CHECK(inside || t->bytes == 0, "tensor %s points outside every mapping", t->name);
        FUZZ_CHECK(t->ndim <= 4, "ndim %u", t->ndim);
        if (t->type == ST_I32 || t->type == ST_I8 || t->type == ST_U8) continue; /* parts only */
        fuzz_decode_rows(t, &budget);
    }
}

static int st_one(const uint8_t *data, size_t size) {
    FuzzPart part[7];
    int np = fuzz_split(data, size, part, 7);
    const char *dir = fuzz_dir();
    for (int k = 0; k < 7; k++) {
        const void *p = NULL;
        size_t n = 0;
        if (k < np) p = part[k].n ? part[k].p : NULL, n = part[k].n;
        else if (st_default[k].len) p = st_default[k].p, n = (size_t)st_default[k].len;
        fuzz_put_file(dir, st_names[k], p, n);
    }
    Source s;
    char err[ERRLEN];
    if (hf_open(&s, dir, err)) {
        fuzz_check_err(err);
        FUZZ_CHECK(s.n == 0 && s.n_maps == 0 && s.tok == NULL, "source not freed on error");
        return 0;
    }
    st_check(&s);
    source_free(&s);
    return 1;
}

FUZZ_TARGET(st_init, st_one)
