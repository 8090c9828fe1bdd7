/* tests/fuzz/make_seeds.c: writes the seed corpora of the fuzz targets into tests/fuzz/corpus/
 * (`make fuzz-seeds`; the output is committed). Every seed named ok-* must be accepted by its
 * target: tests/test_regressions.c checks that, so a format change that would silently turn the
 * seeds into rejected noise fails the normal test suite instead.
 *
 * The binary seeds are built with the project's own writers (gbw_*, tok_build, template_serialize)
 * at toy sizes, a few KB each: a guard.bin of a 1-layer dim-8 model with a 263-token byte-level
 * tokenizer (Llama Guard 3 1B prompt) and one of a dim-32 q4_0 model with a SentencePiece
 * tokenizer (Llama Guard 1 prompt); their tokenizer and prompt sections alone; minimal
 * tokenizer.json files; safetensors checkpoints (plain, sharded, AWQ, bitsandbytes); GGUF files
 * (Llama 3 byte-level vocabulary with f16 weights, SentencePiece with q8_0/q4_0/q4_K/q6_K/q4_1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "classify.h"
#include "import/build.h"
#include "fuzz.h"
#include "import/pte.h"

static const char *out_root = "tests/fuzz/corpus";

static void seed(const char *target, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", out_root, target);
    mkdir(out_root, 0777);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/%s/%s", out_root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f)) {
        fprintf(stderr, "make_seeds: cannot write %s\n", path);
        exit(1);
    }
}
static void seed_str(const char *target, const char *name, const char *s) { seed(target, name, s, strlen(s)); }
static void seed_buf(const char *target, const char *name, const Buf *b) { seed(target, name, b->p, (size_t)b->len); }

static void die(const char *what, const char *err) {
    fprintf(stderr, "make_seeds: %s: %s\n", what, err);
    exit(1);
}

/* Deterministic small weights. */
static uint32_t rng = 12345;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return ((float)(rng >> 8) / 16777216.0f - 0.5f) * 0.2f;
}

/* ==== Tokenizers ==== */

/* Llama 3 style: 256 byte tokens, "ab", "\n\n", "safe", "unsafe", then the four LG3 specials. */
static Tokenizer *tiny_l3(void) {
    static char bytes[256];
    const char *text[264];
    uint32_t len[264];
    uint8_t kind[264] = { 0 };
    for (int i = 0; i < 256; i++) bytes[i] = (char)i, text[i] = &bytes[i], len[i] = 1;
    const char *extra[] = { "ab", "\n\n", "safe", "unsafe", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                            "<|eot_id|>" };
    for (int i = 0; i < 8; i++) text[256 + i] = extra[i], len[256 + i] = (uint32_t)strlen(extra[i]), kind[256 + i] = i >= 4;
    uint32_t merges[] = { 'a', 'b' };
    TokSpec s = { .type = TOK_LLAMA3_BPE, .n_tokens = 264, .text = text, .len = len, .kind = kind, .n_merges = 1,
                  .merges = merges, .ignore_merges = 1, .bos = 260, .eos = 263 };
    Tokenizer *t;
    char err[ERRLEN];
    if (tok_build(&t, &s, err)) die("tok_build l3", err);
    return t;
}

/* SentencePiece style: <unk> <s> </s>, 256 byte pieces, the characters of "safe"/"unsafe" and every
 * prefix of "▁safe" and "▁unsafe" (merges come from the scores). */
#define SP "\xE2\x96\x81"
static Tokenizer *tiny_spm(void) {
    static char names[256][8];
    const char *pieces[] = { SP, "s", "a", "f", "e", "u", "n", SP "s", SP "sa", SP "saf", SP "safe", SP "u", SP "un",
                             SP "uns", SP "unsa", SP "unsaf", SP "unsafe" };
    enum { NP = sizeof pieces / sizeof pieces[0], N = 3 + 256 + NP };
    const char *text[N];
    uint32_t len[N];
    uint8_t kind[N] = { 0 };
    float score[N] = { 0 };
    text[0] = "<unk>", text[1] = "<s>", text[2] = "</s>";
    for (int i = 0; i < 3; i++) len[i] = (uint32_t)strlen(text[i]), kind[i] = TOKK_SPECIAL;
    for (int i = 0; i < 256; i++) {
        snprintf(names[i], sizeof names[i], "<0x%02X>", i);
        text[3 + i] = names[i], len[3 + i] = 6, kind[3 + i] = TOKK_BYTE;
    }
    for (int i = 0; i < (int)NP; i++) {
        text[259 + i] = pieces[i], len[259 + i] = (uint32_t)strlen(pieces[i]);
        score[259 + i] = (float)len[259 + i]; /* longer pieces win */
    }
    TokSpec s = { .type = TOK_SPM_BPE, .n_tokens = N, .text = text, .len = len, .kind = kind, .scores = score, .bos = 1, .eos = 2 };
    Tokenizer *t;
    char err[ERRLEN];
    if (tok_build(&t, &s, err)) die("tok_build spm", err);
    return t;
}

/* ==== guard.bin ==== */

static int fill(void *ctx, uint32_t i, uint8_t *dst, uint64_t size, char *err) {
    (void)err;
    const GbWriter *w = ctx;
    const GbTensor *t = &w->tensors[i];
    uint64_t cols = t->shape[t->ndim - 1], rows = size / dtype_row_bytes(t->dtype, cols); /* rows in order: the writer tiles them */
    float *row = malloc((size_t)cols * sizeof *row);
    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t c = 0; c < cols; c++) row[c] = strstr(t->name, "norm") ? 1.0f + frand() : frand();
        quantize_row(t->dtype, row, dst + r * (size / rows), cols);
    }
    free(row);
    return 0;
}

static void add(GbWriter *w, const char *name, uint32_t dt, uint64_t rows, uint64_t cols) {
    char err[ERRLEN];
    uint64_t shape[2] = { rows, cols };
    int rc = rows ? gbw_add_tensor(w, name, dt, 2, shape, err) : gbw_add_tensor(w, name, dt, 1, &shape[1], err);
    if (rc) die(name, err);
}

/* A prefix KV cache file for the model just written, by guard_cache_save itself: two entries of
 * a few positions with random K/V. */
static void kvcache_seed(const char *model_path) {
    char err[ERRLEN], kv[64];
    Guard g;
    if (guard_open(&g, model_path, 1, err)) die("kv seed", err);
    const Config *c = &g.model.cfg;
    uint64_t floats = (uint64_t)c->n_kv_heads * c->head_dim * c->n_layers;
    for (int i = 0; i < 2; i++) {
        PrefixEntry *e = &g.prefixes.e[i];
        e->n = 3 + i;
        e->ids = malloc((size_t)e->n * sizeof *e->ids);
        e->k = malloc((size_t)(e->n * floats) * sizeof(float));
        e->v = malloc((size_t)(e->n * floats) * sizeof(float));
        if (!e->ids || !e->k || !e->v) die("kv seed", "out of memory");
        for (int64_t k = 0; k < e->n; k++) e->ids[k] = 256 + (int32_t)k;
        for (uint64_t k = 0; k < (uint64_t)e->n * floats; k++) e->k[k] = frand(), e->v[k] = frand();
        e->used = (uint64_t)i + 1;
    }
    snprintf(kv, sizeof kv, "%s.kv", model_path);
    if (guard_cache_save(&g, kv, err)) die("kv seed", err);
    MappedFile m;
    if (map_file(&m, kv, err)) die("kv seed", err);
    seed("kvcache", "ok-two-entries", m.data, (size_t)m.size);
    unmap_file(&m);
    unlink(kv);
    guard_close(&g);
}

/* n_head > 0: a pruned output head over head[0..n_head) (c must not be tied). */
static void guardbin_seed(const char *name, const Config *c, const Tokenizer *tok, int version, const int32_t *head, uint32_t n_head) {
    char err[ERRLEN];
    GbWriter w;
    gbw_init(&w, c);
    uint64_t q = (uint64_t)c->n_heads * c->head_dim, kv = (uint64_t)c->n_kv_heads * c->head_dim;
    add(&w, "model.embed_tokens.weight", c->dtype, c->vocab_size, c->dim);
    add(&w, "model.norm.weight", DT_F32, 0, c->dim);
    uint8_t ids[4 + 4 * GB_HEAD_MAX];
    if (n_head) {
        add(&w, "lm_head.weight", c->dtype, n_head, c->dim);
        gb_head_ids_encode(ids, head, n_head);
        if (gbw_add_section(&w, SEC_HEAD_IDS, ids, 4 + 4 * (uint64_t)n_head, err)) die("section", err);
    }
    for (uint32_t l = 0; l < c->n_layers; l++) {
        char n[GB_NAME_MAX];
#define L(suffix, dt, r, k) (snprintf(n, sizeof n, "model.layers.%u." suffix, l), add(&w, n, dt, r, k))
        L("self_attn.q_proj.weight", c->dtype, q, c->dim);
        L("self_attn.k_proj.weight", c->dtype, kv, c->dim);
        L("self_attn.v_proj.weight", c->dtype, kv, c->dim);
        L("self_attn.o_proj.weight", c->dtype, c->dim, q);
        L("mlp.gate_proj.weight", c->dtype, c->hidden_dim, c->dim);
        L("mlp.up_proj.weight", c->dtype, c->hidden_dim, c->dim);
        L("mlp.down_proj.weight", c->dtype, c->dim, c->hidden_dim);
        L("input_layernorm.weight", DT_F32, 0, c->dim);
        L("post_attention_layernorm.weight", DT_F32, 0, c->dim);
#undef L
    }
    uint8_t *tb;
    uint64_t tl;
    if (tok_serialize(tok, &tb, &tl, err)) die("tok_serialize", err);
    PromptFormat pf;
    Buf pb = { 0 };
    if (template_default(&pf, version, err) || template_serialize(&pf, &pb, err)) die("prompt", err);
    if (gbw_add_section(&w, SEC_TOKENIZER, tb, tl, err) || gbw_add_section(&w, SEC_PROMPT, pb.p, pb.len, err)) die("section", err);
    char tmp[] = "/tmp/make_seeds.XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0) die("mkstemp", "failed");
    close(fd);
    if (gbw_write(&w, tmp, fill, &w, err)) die("gbw_write", err);
    MappedFile m;
    if (map_file(&m, tmp, err)) die("map", err);
    Guard g;
    if (guard_open(&g, tmp, 1, err)) die(name, err); /* the seed must load */
    guard_close(&g);
    seed("guardbin", name, m.data, (size_t)m.size);
    /* the sections alone seed their own loaders */
    char sname[64];
    snprintf(sname, sizeof sname, "ok-%s", tok_type(tok) == TOK_LLAMA3_BPE ? "l3" : "spm");
    seed("tokload", sname, tb, (size_t)tl);
    if (version == GUARD_LG3_1B && !n_head) kvcache_seed(tmp);
    unmap_file(&m);
    unlink(tmp);
    free(tb);
    buf_free(&pb);
    template_free(&pf);
    gbw_free(&w);
}

static void guardbin_seeds(void) {
    Tokenizer *l3 = tiny_l3(), *spm = tiny_spm();
    Config c3 = { .dim = 8, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1, .head_dim = 4, .hidden_dim = 16,
                  .vocab_size = tok_vocab_size(l3), .max_seq_len = 4096, .norm_eps = 1e-5f, .rope_theta = 500000.0f,
                  .rope_type = ROPE_LLAMA3, .rope_factor = 32, .rope_low_freq_factor = 1, .rope_high_freq_factor = 4,
                  .rope_orig_max_pos = 8192, .tied = 1, .source = SRC_HF, .dtype = DT_F16 };
    guardbin_seed("ok-lg3-1b-f16", &c3, l3, GUARD_LG3_1B, NULL, 0);
    Config c1 = { .dim = 32, .n_layers = 1, .n_heads = 2, .n_kv_heads = 2, .head_dim = 16, .hidden_dim = 32,
                  .vocab_size = tok_vocab_size(spm), .max_seq_len = 4096, .norm_eps = 1e-6f, .rope_theta = 10000.0f,
                  .rope_type = ROPE_NONE, .tied = 1, .source = SRC_HF, .dtype = DT_Q4_0 };
    guardbin_seed("ok-lg1-q4", &c1, spm, GUARD_LG1, NULL, 0);
    /* the Llama 4 header fields: adjacent-pair RoPE, layer 1 NoPE, qk-norm, temperature tuning, chunks */
    Config c4 = c3;
    c4.n_layers = 2, c4.rope_style = ROPE_ADJACENT, c4.nope[0] = 1u << 1, c4.qk_norm = 1, c4.attn_temperature_tuning = 1;
    c4.floor_scale = 8, c4.attn_scale = 0.1f, c4.attn_chunk = 16, c4.rope_high_freq_factor = 1, c4.dtype = DT_BF16;
    guardbin_seed("ok-llama4-bf16", &c4, l3, GUARD_LG3_8B, NULL, 0);
    /* the INT4 release's shape of head: a few rows, every other logit -inf */
    Config cp = c3;
    cp.tied = 0, cp.source = SRC_PTE, cp.dtype = DT_Q4_0, cp.dim = 32, cp.head_dim = 16, cp.hidden_dim = 32;
    const int32_t head[] = { 3, 1, 4 };
    guardbin_seed("ok-lg3-1b-pruned-q4", &cp, l3, GUARD_LG3_1B, head, 3);
    tok_free(l3);
    tok_free(spm);
}

/* ==== Prompt sections ==== */

static void prompt_seeds(void) {
    static const char *names[] = { NULL, "ok-lg1", "ok-lg2", "ok-lg3-8b", "ok-lg3-1b", "ok-lg4" };
    char err[ERRLEN];
    for (int v = 1; v <= 5; v++) {
        PromptFormat pf;
        Buf b = { 0 };
        if (template_default(&pf, v, err)) die("template_default", err);
        if (v == GUARD_LG3_1B && template_exclude(&pf, "S2,S13", err)) die("exclude", err);
        if (template_serialize(&pf, &b, err)) die("template_serialize", err);
        seed_buf("prompt", names[v], &b);
        buf_free(&b);
        template_free(&pf);
    }
    PromptFormat pf;
    Buf b = { 0 };
    static const char cats[] = "S1: Violent Crimes.\nS2: Spam. Unsolicited advertising.\nX_9-z: multi\\nline \\\\ text\n";
    /* multi-line descriptions are Llama Guard 1's format (refused for the others: issue #15) */
    if (template_default(&pf, GUARD_LG1, err) || template_parse_categories(&pf, cats, sizeof cats - 1, err) ||
        template_serialize(&pf, &b, err))
        die("custom prompt", err);
    seed_buf("prompt", "ok-custom", &b);
    buf_free(&b);
    template_free(&pf);
}

/* ==== tokenizer.json ==== */

static uint32_t byte_cp(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    uint32_t k = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) k++;
    return 0x100 + k;
}

static void put_cp(Buf *b, uint32_t cp) {
    char s[4];
    if (cp < 0x80) s[0] = (char)cp, buf_put(b, s, 1);
    else s[0] = (char)(0xC0 | cp >> 6), s[1] = (char)(0x80 | (cp & 0x3F)), buf_put(b, s, 2);
}

static void put_s(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static const char L3_PRE[] =
    "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
    "{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}"
    "\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]},"
    "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true},";

static void tokjson_seeds(Buf *l3_out) {
    /* Llama 3: bytes, "ab", " a" (Ġa), "abab", two specials as added tokens; a config part names bos/eos. */
    Buf b = { 0 };
    put_s(&b, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":["
              "{\"id\":259,\"content\":\"<|begin_of_text|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
              "\"normalized\":false,\"special\":true},"
              "{\"id\":260,\"content\":\"<|eot_id|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
              "\"normalized\":false,\"special\":true}],");
    put_s(&b, L3_PRE);
    put_s(&b, "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,"
              "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":true,\"vocab\":{");
    for (int i = 0; i < 256; i++) {
        uint32_t cp = byte_cp(i);
        put_s(&b, "\"");
        if (cp == '"' || cp == '\\') put_s(&b, "\\");
        put_cp(&b, cp);
        char num[16];
        snprintf(num, sizeof num, "\":%d,", i);
        put_s(&b, num);
    }
    put_s(&b, "\"ab\":256,\"\xC4\xA0" "a\":257,\"abab\":258},\"merges\":[\"a b\",[\"\xC4\xA0\",\"a\"],\"ab ab\"]}}");
    Buf with_cfg = { 0 };
    buf_put(&with_cfg, b.p, b.len);
    put_s(&with_cfg, FUZZ_SEP "{\"bos_token\":\"<|begin_of_text|>\",\"eos_token\":{\"content\":\"<|eot_id|>\"}}");
    seed_buf("tokjson", "ok-l3", &b);
    seed_buf("tokjson", "ok-l3-config", &with_cfg);
    buf_free(&with_cfg);
    *l3_out = b;

    /* Llama 2: <unk> <s> </s>, <0xXX> pieces, ▁ a b ▁a ab. */
    Buf s = { 0 };
    put_s(&s, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
              "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
              "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"" SP "\"},"
              "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"" SP "\"}]},\"pre_tokenizer\":null,"
              "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"" SP "\"},"
              "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \","
              "\"start\":1,\"stop\":0}]},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\","
              "\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,");
    for (int i = 0; i < 256; i++) {
        char item[32];
        snprintf(item, sizeof item, "\"<0x%02X>\":%d,", i, 3 + i);
        put_s(&s, item);
    }
    put_s(&s, "\"" SP "\":259,\"a\":260,\"b\":261,\"" SP "a\":262,\"ab\":263},\"merges\":[\"" SP " a\",\"a b\"]}}");
    put_s(&s, FUZZ_SEP "{\"bos_token\":{\"content\":\"<s>\"},\"eos_token\":\"</s>\"}");
    seed_buf("tokjson", "ok-spm-config", &s);
    buf_free(&s);
}

/* ==== safetensors ==== */

typedef struct {
    const char *name, *dtype;
    uint64_t shape[2];
    int ndim;
    uint64_t bytes;
} StEnt;

/* A safetensors file whose data bytes are a deterministic pattern. */
static void st_file(Buf *out, const StEnt *e, int n) {
    Buf h = { 0 };
    uint64_t off = 0;
    put_s(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        char item[256];
        int k = snprintf(item, sizeof item, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e[i].name, e[i].dtype);
        buf_put(&h, item, (uint64_t)k);
        for (int d = 0; d < e[i].ndim; d++) {
            k = snprintf(item, sizeof item, "%s%llu", d ? "," : "", (unsigned long long)e[i].shape[d]);
            buf_put(&h, item, (uint64_t)k);
        }
        k = snprintf(item, sizeof item, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                     (unsigned long long)(off + e[i].bytes));
        buf_put(&h, item, (uint64_t)k);
        off += e[i].bytes;
    }
    put_s(&h, "}");
    while (h.len % 8) put_s(&h, " ");
    buf_u64(out, h.len);
    buf_put(out, h.p, h.len);
    for (int i = 0; i < n; i++)
        for (uint64_t k = 0; k < e[i].bytes; k++) {
            uint8_t v = (uint8_t)(k * 37 + 11);
            if (k % 2) v &= 0x3B;                   /* keep f16/bf16/f32 exponents tame */
            if (!strcmp(e[i].dtype, "U8")) v = 0;  /* bitsandbytes weight_format 0 = row-major */
            buf_put(out, &v, 1);
        }
    buf_free(&h);
}

static const char CFG[] =
    "{\"model_type\":\"llama\",\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
    "\"num_key_value_heads\":1,\"intermediate_size\":16,\"vocab_size\":256,\"max_position_embeddings\":64,"
    "\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,\"tie_word_embeddings\":false%s}";

static void st_seeds(const Buf *tokjson) {
    char cfg[1024];
    Buf b = { 0 };
    const StEnt plain[] = {
        { "model.embed_tokens.weight", "BF16", { 4, 8 }, 2, 64 },
        { "model.norm.weight", "F32", { 8 }, 1, 32 },
        { "model.layers.0.self_attn.q_proj.weight", "F16", { 8, 8 }, 2, 128 },
        { "lm_head.weight", "F32", { 2, 8 }, 2, 64 },
    };
    st_file(&b, plain, 4);
    seed_buf("safetensors", "ok-plain", &b); /* config.json and tokenizer.json: the target's defaults */
    buf_free(&b);

    /* sharded: index + two shards, everything else explicit */
    Buf s = { 0 };
    snprintf(cfg, sizeof cfg, CFG, "");
    put_s(&s, FUZZ_SEP);
    put_s(&s, cfg);
    put_s(&s, FUZZ_SEP);
    buf_put(&s, tokjson->p, tokjson->len);
    put_s(&s, FUZZ_SEP "{\"chat_template\":\"{{ 'Task: Check if there is unsafe content' }}\"}" FUZZ_SEP);
    put_s(&s, "{\"metadata\":{},\"weight_map\":{\"model.norm.weight\":\"model-00001-of-00002.safetensors\","
              "\"lm_head.weight\":\"model-00002-of-00002.safetensors\"}}" FUZZ_SEP);
    st_file(&s, &plain[1], 1);
    put_s(&s, FUZZ_SEP);
    st_file(&s, &plain[3], 1);
    seed_buf("safetensors", "ok-sharded", &s);
    buf_free(&s);

    /* AWQ: one linear [out 8, in 8], group 8: qweight I32 [8, 1], qzeros I32 [1, 1], scales F16 [1, 8] */
    const StEnt awq[] = {
        { "model.layers.0.mlp.up_proj.qweight", "I32", { 8, 1 }, 2, 32 },
        { "model.layers.0.mlp.up_proj.qzeros", "I32", { 1, 1 }, 2, 4 },
        { "model.layers.0.mlp.up_proj.scales", "F16", { 1, 8 }, 2, 16 },
        { "model.norm.weight", "F32", { 8 }, 1, 32 },
    };
    Buf a = { 0 };
    st_file(&a, awq, 4);
    snprintf(cfg, sizeof cfg, CFG,
             ",\"quantization_config\":{\"bits\":4,\"group_size\":8,\"quant_method\":\"awq\",\"version\":\"gemm\",\"zero_point\":true}");
    put_s(&a, FUZZ_SEP);
    put_s(&a, cfg);
    seed_buf("safetensors", "ok-awq", &a);
    buf_free(&a);

    /* bitsandbytes int8: weight I8 [4, 8], SCB F32 [4], weight_format U8 [] */
    const StEnt bnb[] = {
        { "model.layers.0.mlp.down_proj.weight", "I8", { 4, 8 }, 2, 32 },
        { "model.layers.0.mlp.down_proj.SCB", "F32", { 4 }, 1, 16 },
        { "model.layers.0.mlp.down_proj.weight_format", "U8", { 0 }, 0, 1 },
    };
    Buf n8 = { 0 };
    st_file(&n8, bnb, 3);
    snprintf(cfg, sizeof cfg, CFG, ",\"quantization_config\":{\"quant_method\":\"bitsandbytes\",\"load_in_8bit\":true}");
    put_s(&n8, FUZZ_SEP);
    put_s(&n8, cfg);
    seed_buf("safetensors", "ok-bnb", &n8);
    buf_free(&n8);

    /* config.json seeds */
    snprintf(cfg, sizeof cfg, CFG, "");
    seed_str("config", "ok-plain", cfg);
    snprintf(cfg, sizeof cfg, CFG,
             ",\"head_dim\":4,\"rope_scaling\":{\"factor\":32.0,\"high_freq_factor\":4.0,\"low_freq_factor\":1.0,"
             "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},\"hidden_act\":\"silu\","
             "\"attention_bias\":false,\"mlp_bias\":null,\"chat_template\":[{\"name\":\"default\",\"template\":\"x\"}]");
    seed_str("config", "ok-llama3", cfg);
    snprintf(cfg, sizeof cfg, CFG,
             ",\"quantization_config\":{\"bits\":4,\"group_size\":128,\"quant_method\":\"awq\",\"version\":\"gemm\",\"zero_point\":true}");
    seed_str("config", "ok-awq", cfg);
    snprintf(cfg, sizeof cfg, CFG,
             ",\"quantization_config\":{\"quant_method\":\"bitsandbytes\",\"load_in_8bit\":true,\"load_in_4bit\":false}");
    seed_str("config", "ok-bnb", cfg);
    /* Llama 4: Llama4ForConditionalGeneration with its text_config */
    seed_str("config", "ok-llama4",
             "{\"architectures\":[\"Llama4ForConditionalGeneration\"],\"model_type\":\"llama4\",\"tie_word_embeddings\":false,"
             "\"text_config\":{\"model_type\":\"llama4_text\",\"vocab_size\":300,\"hidden_size\":64,\"intermediate_size\":128,"
             "\"intermediate_size_mlp\":256,\"num_hidden_layers\":4,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
             "\"head_dim\":16,\"hidden_act\":\"silu\",\"max_position_embeddings\":8192,\"rms_norm_eps\":1e-05,"
             "\"rope_theta\":500000.0,\"num_local_experts\":0,\"moe_layers\":[],\"interleave_moe_layer_step\":0,"
             "\"use_qk_norm\":true,\"rope_scaling\":{\"factor\":16.0,\"high_freq_factor\":1.0,\"low_freq_factor\":1.0,"
             "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},\"no_rope_layers\":[1,1,1,0],"
             "\"attention_chunk_size\":32,\"attn_temperature_tuning\":true,\"floor_scale\":16,\"attn_scale\":0.1},"
             "\"vision_config\":{\"model_type\":\"llama4_vision_model\"}}");
    seed_str("config", "bad-llama4-moe",
             "{\"model_type\":\"llama4\",\"text_config\":{\"vocab_size\":300,\"hidden_size\":64,\"intermediate_size_mlp\":256,"
             "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_local_experts\":16,\"interleave_moe_layer_step\":1}}");
}

/* ==== GGUF ==== */

enum { G_U32 = 4, G_I32 = 5, G_F32 = 6, G_BOOL = 7, G_STR = 8, G_ARR = 9 };

static void g_str(Buf *b, const char *s, size_t n) {
    buf_u64(b, n);
    buf_put(b, s, n);
}
static void g_key(Buf *b, const char *k, uint32_t type) {
    g_str(b, k, strlen(k));
    buf_u32(b, type);
}
static void g_kv_str(Buf *b, const char *k, const char *v) { g_key(b, k, G_STR), g_str(b, v, strlen(v)); }
static void g_kv_u32(Buf *b, const char *k, uint32_t v) { g_key(b, k, G_U32), buf_u32(b, v); }
static void g_kv_f32(Buf *b, const char *k, float v) { g_key(b, k, G_F32), buf_f32(b, v); }

typedef struct {
    const char *name;
    uint32_t ggml, ne0, ne1; /* ne1 == 0: 1-D */
    uint64_t bytes;
} GgTensor;

/* A GGUF v3 file: the key/values in kv (n_kv of them), then the tensors with patterned data. */
static void gguf_file(Buf *out, const Buf *kv, uint64_t n_kv, const GgTensor *t, int n_t) {
    buf_put(out, "GGUF", 4);
    buf_u32(out, 3);
    buf_u64(out, (uint64_t)n_t);
    buf_u64(out, n_kv);
    buf_put(out, kv->p, kv->len);
    uint64_t off = 0;
    for (int i = 0; i < n_t; i++) {
        g_str(out, t[i].name, strlen(t[i].name));
        buf_u32(out, t[i].ne1 ? 2 : 1);
        buf_u64(out, t[i].ne0);
        if (t[i].ne1) buf_u64(out, t[i].ne1);
        buf_u32(out, t[i].ggml);
        buf_u64(out, off);
        off = align_up(off + t[i].bytes, 32);
    }
    while (out->len % 32) buf_put(out, "", 1);
    for (int i = 0; i < n_t; i++) {
        uint64_t start = out->len;
        for (uint64_t k = 0; k < t[i].bytes; k++) {
            uint8_t v = (uint8_t)(k * 29 + 7);
            if (t[i].ggml == 0 && k % 4 == 3) v = 0x3F; /* f32: around 1.0 */
            if (t[i].ggml != 0 && k % 2) v &= 0x3B;   /* f16 / block scales: tame exponents */
            buf_put(out, &v, 1);
        }
        if (!strcmp(t[i].name, "rope_freqs.weight"))
            for (uint64_t k = 0; k < t[i].bytes / 4; k++) memcpy(out->p + start + 4 * k, &(float){ 1.0f }, 4);
        while (out->len % 32) buf_put(out, "", 1);
    }
}

static void gguf_hparams(Buf *kv, uint64_t *n, uint32_t dim, uint32_t heads) {
    g_kv_str(kv, "general.architecture", "llama");
    g_kv_u32(kv, "llama.embedding_length", dim);
    g_kv_u32(kv, "llama.block_count", 1);
    g_kv_u32(kv, "llama.attention.head_count", heads);
    g_kv_u32(kv, "llama.attention.head_count_kv", heads);
    g_kv_u32(kv, "llama.feed_forward_length", 2 * dim);
    g_kv_u32(kv, "llama.context_length", 256);
    g_kv_f32(kv, "llama.rope.freq_base", 500000.0f);
    g_kv_f32(kv, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    g_kv_u32(kv, "general.alignment", 32);
    *n += 10;
}

static void gguf_seeds(void) {
    /* Llama 3 (gpt2): byte-level tokens, "ab", two controls; f16 weights, dim 8 */
    Buf kv = { 0 }, out = { 0 };
    uint64_t n = 0;
    gguf_hparams(&kv, &n, 8, 2);
    g_kv_str(&kv, "tokenizer.ggml.model", "gpt2");
    g_kv_str(&kv, "tokenizer.ggml.pre", "llama-bpe");
    g_key(&kv, "tokenizer.ggml.tokens", G_ARR);
    buf_u32(&kv, G_STR);
    buf_u64(&kv, 259);
    for (int i = 0; i < 256; i++) {
        Buf t = { 0 };
        put_cp(&t, byte_cp(i));
        g_str(&kv, (const char *)t.p, (size_t)t.len);
        buf_free(&t);
    }
    g_str(&kv, "ab", 2);
    g_str(&kv, "<|begin_of_text|>", 17);
    g_str(&kv, "<|eot_id|>", 10);
    g_key(&kv, "tokenizer.ggml.token_type", G_ARR);
    buf_u32(&kv, G_I32);
    buf_u64(&kv, 259);
    for (int i = 0; i < 259; i++) buf_u32(&kv, i < 257 ? 1 : 3);
    g_key(&kv, "tokenizer.ggml.merges", G_ARR);
    buf_u32(&kv, G_STR);
    buf_u64(&kv, 1);
    g_str(&kv, "a b", 3);
    g_kv_u32(&kv, "tokenizer.ggml.bos_token_id", 257);
    g_kv_u32(&kv, "tokenizer.ggml.eos_token_id", 258);
    g_kv_str(&kv, "tokenizer.chat_template", "{{ 'Task: Check if there is unsafe content in' }}");
    n += 8;
    const GgTensor l3[] = {
        { "token_embd.weight", 1, 8, 259, 8 * 259 * 2 },
        { "output_norm.weight", 0, 8, 0, 32 },
        { "blk.0.attn_q.weight", 1, 8, 8, 128 },
        { "blk.0.attn_k.weight", 0, 8, 8, 256 },
        { "rope_freqs.weight", 0, 2, 0, 8 },
    };
    gguf_file(&out, &kv, n, l3, 5);
    seed_buf("gguf", "ok-llama3-f16", &out);
    buf_free(&kv);
    buf_free(&out);

    /* Llama 2 (llama / SentencePiece): <unk> <s> </s>, byte pieces, ▁ and a; q8_0, q4_0 and q4_k weights */
    n = 0;
    gguf_hparams(&kv, &n, 32, 2);
    g_kv_str(&kv, "tokenizer.ggml.model", "llama");
    g_key(&kv, "tokenizer.ggml.add_space_prefix", G_BOOL);
    buf_put(&kv, "\x01", 1);
    g_key(&kv, "tokenizer.ggml.tokens", G_ARR);
    buf_u32(&kv, G_STR);
    buf_u64(&kv, 261);
    g_str(&kv, "<unk>", 5), g_str(&kv, "<s>", 3), g_str(&kv, "</s>", 4);
    for (int i = 0; i < 256; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "<0x%02X>", i);
        g_str(&kv, nm, 6);
    }
    g_str(&kv, SP, 3), g_str(&kv, SP "a", 4);
    g_key(&kv, "tokenizer.ggml.token_type", G_ARR);
    buf_u32(&kv, G_I32);
    buf_u64(&kv, 261);
    for (int i = 0; i < 261; i++) buf_u32(&kv, i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1);
    g_key(&kv, "tokenizer.ggml.scores", G_ARR);
    buf_u32(&kv, G_F32);
    buf_u64(&kv, 261);
    for (int i = 0; i < 261; i++) buf_f32(&kv, i < 259 ? 0.0f : -(float)(i - 258));
    n += 5;
    const GgTensor l2[] = {
        { "token_embd.weight", 8, 32, 261, 261 * 34 / 1 },
        { "output_norm.weight", 0, 32, 0, 128 },
        { "blk.0.attn_v.weight", 2, 32, 32, 32 * 18 },
        { "blk.0.ffn_down.weight", 12, 256, 1, 144 },
        { "blk.0.ffn_up.weight", 14, 256, 1, 210 },
        { "output.weight", 3, 32, 2, 40 },
    };
    gguf_file(&out, &kv, n, l2, 6);
    seed_buf("gguf", "ok-llama2-q8", &out);
    buf_free(&kv);
    buf_free(&out);
}

/* ==== Text seeds ==== */

static void text_seeds(void) {
    seed_str("json", "ok-object", "{\"a\":[1,-2.5e3,true,false,null,\"x\\u00e9\\ud83d\\ude00\\n\"],\"b\":{},\"c\":[]}");
    seed_str("json", "ok-bom", "\xEF\xBB\xBF [ \"\\\"\\\\\\/\\b\\f\\n\\r\\t\", 0, 1e-7, -0.0 ]");
    seed_str("json", "ok-surrogates", "[\"\\ud800\",\"\\udc00\\ud800x\",\"\\uD83D\\uDE00\"]");
    seed_str("json", "bad-dupkeys", "{\"k\":1,\"k\":2,\"\\u0000\":3}"); /* duplicate keys are refused (issue #15) */
    seed_str("json", "ok-nearkeys", "{\"k\":1,\"K\":2,\"k\\u0000\":3,\"\\u0000\":4,\"o\":{\"k\":5}}");
    seed_str("json", "bad-trailing", "{\"a\":1} x");
    seed_str("json", "bad-deep", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[");
    seed_str("json", "ok-numbers", "[9007199254740993,1e308,1e309,-1e400,123456789012345678901234567890,0.1e-400]");

    seed_str("chat", "ok-text", "\x01Hello, how do I bake bread?\r\n");
    seed_str("chat", "ok-transcript", "\x02User: hi\nthere\r\nAgent: hello\nuser:  again\n");
    seed_str("chat", "ok-json", "\x03[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\" b \"}]}]");
    seed_str("chat", "ok-auto-json", "\x04\xEF\xBB\xBF{\"messages\":[{\"role\":\"user\",\"content\":\"<|eot_id|> [INST]\"},{\"role\":\"agent\",\"content\":\"\"}]}");
    seed_str("chat", "ok-auto-transcript", "\x04\n\nUSER: x\nASSISTANT: y\n  User: indented\n");
    seed_str("chat", "bad-role", "\x03[{\"role\":\"system\",\"content\":\"x\"}]");
    seed_str("chat", "ok-drop-system", "\x07[{\"role\":\"system\",\"content\":\"x\"},{\"role\":\"developer\",\"content\":\"y\"},{\"role\":\"user\",\"content\":\"hi\"}]");
    seed_str("chat", "bad-tool-calls", "\x07[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\",\"tool_calls\":[]}]");
    seed_str("chat", "bad-image", "\x03[{\"role\":\"user\",\"content\":[{\"type\":\"image\"}]}]");

    seed_str("render", "ok-custom", "\x04" FUZZ_SEP "S1: Violent Crimes.\n# comment\n\nS2 : Spam. Ads\\nmore\r\n" FUZZ_SEP
                                    "S2" FUZZ_SEP "User: hi\nAgent:  hello \u3000" FUZZ_SEP "\n\nunsafe\nS1, S2,S99,\x01x");
    seed_str("render", "ok-defaults", "\x03" FUZZ_SEP FUZZ_SEP " S6 , S8 " FUZZ_SEP "[{\"role\":\"user\",\"content\":\" x \"}]" FUZZ_SEP "safe");
    seed_str("render", "ok-lg1", "\x04" FUZZ_SEP FUZZ_SEP FUZZ_SEP "just text" FUZZ_SEP " unsafe\nO1,O6");

    seed_str("encode", "ok-ascii", "Hello, world! It's 12345 apples.\n\n  indented\ttab");
    seed_str("encode", "ok-specials", "<|begin_of_text|><|start_header_id|>user<|end_header_id|> <s>[INST] </s><unk><|eot_id|>"
                                      "<|reserved_special_token_250|><|finetune_right_pad_id|>");
    seed_str("encode", "ok-unicode", "caf\xC3\xA9 \xE2\x96\x81\xE2\x96\x81 \xF0\x9F\x98\x80\xE3\x80\x80\xC2\x85 \xE4\xBD\xA0\xE5\xA5\xBD \xD9\xA3\xD9\xA4");
    seed_str("encode", "ok-invalid", "a\xFF\xC3(\xE0\x80\x80\xED\xA0\x80\xF4\x90\x80\x80\xF0\x9F\x98 end\xE2\x82");
    seed_str("encode", "ok-contractions", "I'M here, you'Ve 'll 'S \xC5\xBF'\xC5\xBF x'd\r\n\r\n   \n");
}

/* pte: the fixture's program (everything before its segments: ~31 KB) alone, and with its
 * smallest delegate blob (the 20-row head, ~6 KB), from $GUARD_SHARED/imports/pte_mini. */
static void pte_seeds(void) {
    const char *sh = getenv("GUARD_SHARED");
    char path[1024], err[ERRLEN];
    snprintf(path, sizeof path, "%s/imports/pte_mini/llama_guard_3_1b_pruned_xnnpack.pte", sh && *sh ? sh : "../shared");
    MappedFile m;
    if (map_file(&m, path, err)) {
        fprintf(stderr, "make_seeds: no pte seeds: %s\n", err);
        return;
    }
    uint64_t base = m.size >= 32 ? ld_u64(m.data + 24) : 0;
    if (base == 0 || base > m.size) die("pte seeds", "the fixture has no segment base");
    seed("pte", "ok-program", m.data, (size_t)base);
    PteModel pm;
    if (pte_read(&pm, m.data, m.size, path, 0, err)) die("pte seeds", err);
    /* the head's blob: from its weight pointer back to the segment start (segments are 128-aligned after base) */
    uint64_t w = (uint64_t)(pm.head.w - m.data), start = base + (w - base) / 128 * 128;
    while (start > base && memcmp(m.data + start + 4, "XH00", 4) != 0) start -= 128;
    uint64_t end = w + (uint64_t)pm.head.n * pm.head.k / 2;
    Buf b = { 0 };
    buf_put(&b, m.data, base);
    buf_put(&b, FUZZ_SEP, strlen(FUZZ_SEP));
    buf_put(&b, m.data + start, end - start);
    seed_buf("pte", "ok-program-and-head", &b);
    buf_free(&b);
    pte_free(&pm);
    unmap_file(&m);
}

int main(int argc, char **argv) {
    if (argc > 1) out_root = argv[1];
    guardbin_seeds();
    prompt_seeds();
    Buf l3 = { 0 };
    tokjson_seeds(&l3);
    st_seeds(&l3);
    buf_free(&l3);
    gguf_seeds();
    text_seeds();
    pte_seeds();
    printf("seeds written to %s\n", out_root);
    return 0;
}
