/* tests/test_tokenizer.c: the tokenizer against ids from the real tokenizers (HF tokenizers,
 * SentencePiece) in $GUARD_SHARED/tokenizer, plus what no reference covers: invalid UTF-8,
 * special-token text as plain text, the guard.bin section round trip and its rejection of
 * corrupt bytes, the raw-array builder, the importer's refusals, and long inputs. */
#include "testutil.h"

#include <math.h>

#include "json.h"
#include "import/build.h"
#include "tokenizer.h"

/* ==== Helpers ==== */

static Tokenizer *g_l3, *g_l2;

static Tokenizer *load_hf(Tokenizer **slot, const char *dir) {
    if (!*slot) {
        char err[ERRLEN];
        const char *tj = shared_path("tokenizer/%s/tokenizer.json", dir);
        const char *tc = shared_path("tokenizer/%s/tokenizer_config.json", dir);
        double t0 = now_sec();
        if (tok_from_hf(slot, tj, tc, err)) fail_msg("tok_from_hf(%s): %s", tj, err);
        printf("loaded %s: %u tokens, %u merges in %.3f s\n", tj, tok_vocab_size(*slot), tok_n_merges(*slot), now_sec() - t0);
    }
    return *slot;
}
static Tokenizer *l3(void) { return load_hf(&g_l3, "llama31"); }
static Tokenizer *l2(void) { return load_hf(&g_l2, "llama2"); }

static int teardown_all(void **state) {
    (void)state;
    tok_free(g_l3);
    tok_free(g_l2);
    rmdir(test_tmpdir()); /* empty by now: the tests that write files remove them */
    return 0;
}

typedef struct {
    int32_t *p;
    size_t n, cap;
} Ids;

static Ids encode(const Tokenizer *t, const void *s, size_t n) {
    Ids v = { 0 };
    char err[ERRLEN];
    if (tok_encode(t, s, n, &v.p, &v.n, &v.cap, err)) fail_msg("tok_encode: %s", err);
    return v;
}

static Buf decode(const Tokenizer *t, const int32_t *ids, size_t n) {
    Buf b = { 0 };
    assert_int_equal(tok_decode_ids(t, ids, n, &b), 0);
    return b;
}

static int json_ids_equal(const Json *j, const JsonNode *arr, const int32_t *ids, size_t n) {
    if (!arr || arr->type != JSON_ARRAY || arr->len != n) return 0;
    size_t k = 0;
    JSON_FOR(j, arr, it) {
        if (it->type != JSON_NUMBER || (int32_t)it->num != ids[k]) return 0;
        k++;
    }
    return 1;
}

static size_t json_ids(const Json *j, const JsonNode *arr, int32_t *out, size_t max) {
    size_t k = 0;
    JSON_FOR(j, arr, it) {
        assert_true(k < max);
        out[k++] = (int32_t)it->num;
    }
    return k;
}

static void assert_ids(const Tokenizer *t, const char *s, const int32_t *want, size_t n);
static Tokenizer *tiny_llama3(void);

static void print_ids(const char *label, const int32_t *ids, size_t n) {
    printf("    %s:", label);
    for (size_t i = 0; i < n && i < 40; i++) printf(" %d", ids[i]);
    printf(n > 40 ? " ...\n" : "\n");
}

/* Calls fn for every line of a JSONL file under $GUARD_SHARED. */
typedef void (*LineFn)(const Json *j, const JsonNode *root, void *ctx);
static int for_each_line(const char *rel, LineFn fn, void *ctx) {
    size_t len;
    char *src = slurp(shared_path("%s", rel), &len);
    int lines = 0;
    for (char *p = src, *end = src + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n) {
            Json j = { 0 };
            char err[ERRLEN];
            if (json_parse(&j, p, n, err)) fail_msg("%s line %d: %s", rel, lines + 1, err);
            fn(&j, json_root(&j), ctx);
            json_free(&j);
            lines++;
        }
        p += n + 1;
    }
    free(src);
    return lines;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static size_t put_utf8(uint8_t *o, uint32_t cp) {
    if (cp < 0x80) return o[0] = (uint8_t)cp, 1;
    if (cp < 0x800) return o[0] = (uint8_t)(0xC0 | cp >> 6), o[1] = (uint8_t)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return o[0] = (uint8_t)(0xE0 | cp >> 12), o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)),
               o[2] = (uint8_t)(0x80 | (cp & 0x3F)), 3;
    return o[0] = (uint8_t)(0xF0 | cp >> 18), o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F)),
           o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (uint8_t)(0x80 | (cp & 0x3F)), 4;
}

/* ==== Golden ids from the reference tokenizers ==== */

typedef struct {
    const Tokenizer *t;
    int pass, fail, total;
    int sens_total, sens_pass, sens_excused; /* unicode_version_sensitive lines */
    int decode_checked, decode_fail;
} Golden;

/* A flagged line may differ only if one of the code points it names ("U+1E4D0") is unassigned
 * (UC_OTHER) in our Unicode tables while the reference, with newer tables, knows it. */
static int excused_by_unicode_version(const char *flag) {
    for (const char *p = flag; (p = strstr(p, "U+")) != NULL; p += 2) {
        uint32_t cp = (uint32_t)strtoul(p + 2, NULL, 16);
        if (tok_unicode_class(cp) == UC_OTHER) return 1;
    }
    return 0;
}

static void golden_line(const Json *j, const JsonNode *r, void *ctx) {
    Golden *g = ctx;
    const JsonNode *id = json_get(j, r, "id"), *text = json_get(j, r, "text");
    const JsonNode *want = json_get(j, r, "ids_plain");
    if (!want) want = json_get(j, r, "ids");
    const JsonNode *sens = json_get(j, r, "unicode_version_sensitive");
    assert_non_null(text);
    assert_non_null(want);
    Ids v = encode(g->t, text->str, text->len);
    int ok = json_ids_equal(j, want, v.p, v.n);
    g->total++;
    if (sens) {
        g->sens_total++;
        if (ok) g->sens_pass++;
        else if (excused_by_unicode_version(sens->str)) g->sens_excused++, ok = 1;
    }
    if (ok) {
        g->pass++;
    } else {
        g->fail++;
        int32_t exp[4096];
        size_t ne = json_ids(j, want, exp, 4096);
        printf("  MISMATCH %s (%s)\n", id ? id->str : "?", json_get(j, r, "category")->str);
        print_ids("want", exp, ne);
        print_ids("got ", v.p, v.n);
    }
    /* decode(encode(text)) == text wherever the reference round-trips too. */
    const JsonNode *rt = json_get(j, r, "roundtrip");
    if (rt && rt->type == JSON_TRUE) {
        Buf b = decode(g->t, v.p, v.n);
        g->decode_checked++;
        if (b.len != text->len || (b.len && memcmp(b.p, text->str, text->len) != 0)) {
            g->decode_fail++;
            printf("  DECODE MISMATCH %s\n", id ? id->str : "?");
        }
        buf_free(&b);
    }
    free(v.p);
}

static void run_golden(const Tokenizer *t, const char *file) {
    Golden g = { .t = t };
    for_each_line(file, golden_line, &g);
    printf("%s: %d/%d lines match (Unicode %s tables)\n", file, g.pass - g.sens_excused, g.total, uc_version);
    printf("  unicode_version_sensitive: %d/%d match, %d differ only on code points unassigned in Unicode %s\n",
           g.sens_pass, g.sens_total, g.sens_excused, uc_version);
    printf("  decode(encode(text)) == text: %d/%d\n", g.decode_checked - g.decode_fail, g.decode_checked);
    assert_true(g.total > 800);
    assert_int_equal(g.fail, 0);
    assert_int_equal(g.decode_fail, 0);
    assert_true(g.decode_checked > 800);
}

static void test_llama3_golden(void **state) {
    (void)state;
    run_golden(l3(), "tokenizer/llama3_golden.jsonl");
}

static void test_llama2_golden(void **state) {
    (void)state;
    run_golden(l2(), "tokenizer/llama2_golden.jsonl");
}

/* (?i) in Oniguruma (HF's regex engine) is Unicode case folding, so "'ſ" (U+017F) is the
 * contraction 's and the word after it is a pre-token of its own. The goldens cannot see this
 * ('ſ's bytes merge with nothing), but a following ignore_merges-only word can: "cılık" is one
 * token alone and three inside "'ſcılık". ASCII contractions in either case split the same way. */
static void test_contractions(void **state) {
    (void)state;
    const Tokenizer *t = l3();
    static const char *words[] = { "c\xC4\xB1l\xC4\xB1k", "Hello", "x", "re", "ll" };
    static const char *heads[] = { "'\xC5\xBF", "'s", "'S", "'t", "'re", "'RE", "'Ve", "'m", "'ll", "'lL", "'d", "'D" };
    int32_t want[64];
    char buf[64];
    for (size_t h = 0; h < sizeof heads / sizeof heads[0]; h++)
        for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
            Ids a = encode(t, heads[h], strlen(heads[h])), b = encode(t, words[w], strlen(words[w]));
            memcpy(want, a.p, a.n * sizeof *want);
            memcpy(want + a.n, b.p, b.n * sizeof *want);
            snprintf(buf, sizeof buf, "%s%s", heads[h], words[w]);
            assert_ids(t, buf, want, a.n + b.n);
            free(a.p), free(b.p);
        }
    int32_t cilik = tok_piece_id(t, words[0], strlen(words[0]));
    assert_true(cilik >= 0);
    assert_ids(t, words[0], &cilik, 1);
}

/* ==== Invalid UTF-8: Python's errors='replace' ==== */

typedef struct {
    int lines, checked;
} Malformed;

static void malformed_one(const Json *j, const JsonNode *r, const char *model, const Tokenizer *t, const uint8_t *bytes,
                          size_t n, Malformed *m) {
    const JsonNode *ref = json_get(j, json_get(j, json_get(j, r, model), "js_refs_after_whatwg_utf8_replacement"), "hf_tokenizers_js");
    const JsonNode *replaced = json_get(j, json_get(j, json_get(j, r, model), "js_refs_after_whatwg_utf8_replacement"), "replaced_text");
    assert_non_null(ref);
    assert_non_null(replaced);
    /* The JS references parse special-token text; where that happened (m021's <|eot_id|>), take
     * llama.cpp's plain-text ids instead, after checking its replacement was the same. */
    int has_special = 0;
    JSON_FOR(j, ref, it) has_special |= tok_kind(t, (int32_t)it->num) == TOKK_SPECIAL;
    if (has_special) {
        const JsonNode *mr = json_get(j, r, model), *hex = json_get(j, mr, "llama_cpp_raw_bytes_decoded_hex");
        ref = json_get(j, mr, "llama_cpp_raw_bytes");
        assert_true(ref && ref->type == JSON_ARRAY && hex && hex->type == JSON_STRING);
        assert_int_equal(hex->len, 2 * replaced->len);
        for (uint32_t i = 0; i < replaced->len; i++) {
            char h[3];
            snprintf(h, sizeof h, "%02x", (uint8_t)replaced->str[i]);
            assert_memory_equal(h, hex->str + 2 * i, 2);
        }
        printf("  %s %s: reference parsed special text; compared with llama.cpp's plain-text ids\n",
               json_get(j, r, "id")->str, model);
    }
    Ids v = encode(t, bytes, n);
    if (!json_ids_equal(j, ref, v.p, v.n)) {
        int32_t exp[1024];
        size_t ne = json_ids(j, ref, exp, 1024);
        printf("  MISMATCH %s %s\n", json_get(j, r, "id")->str, model);
        print_ids("want", exp, ne);
        print_ids("got ", v.p, v.n);
        fail();
    }
    /* The text we tokenized is exactly the replaced text (Llama 3 decodes losslessly; SPM
     * too, as these inputs hold no U+2581). */
    Buf b = decode(t, v.p, v.n);
    assert_int_equal(b.len, replaced->len);
    assert_memory_equal(b.p, replaced->str, replaced->len);
    buf_free(&b);
    free(v.p);
    m->checked++;
}

static void malformed_line(const Json *j, const JsonNode *r, void *ctx) {
    Malformed *m = ctx;
    const JsonNode *hex = json_get(j, r, "bytes_hex");
    assert_non_null(hex);
    size_t n = hex->len / 2;
    uint8_t *bytes = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex->str + 2 * i, "%2x", &v), 1);
        bytes[i] = (uint8_t)v;
    }
    malformed_one(j, r, "llama3", l3(), bytes, n, m);
    malformed_one(j, r, "llama2", l2(), bytes, n, m);
    free(bytes);
    m->lines++;
}

static void test_malformed_golden(void **state) {
    (void)state;
    Malformed m = { 0 };
    for_each_line("tokenizer/malformed_golden.jsonl", malformed_line, &m);
    printf("malformed_golden.jsonl: %d/%d (line, model) cases match the errors='replace' references\n", m.checked,
           2 * m.lines);
    assert_true(m.lines >= 15);
}

/* The replacement rule itself, independent of the references: one U+FFFD per maximal ill-formed
 * subpart (Python: b.decode('utf-8', 'replace')). A byte-level tokenizer decodes to exactly the
 * bytes it tokenized, so decode(encode(x)) shows the replaced text. */
static void test_utf8_replacement_rule(void **state) {
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "a\x80" "b", "a\xEF\xBF\xBD" "b" },
        { "\xE0\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" },          /* E0 needs A0..BF next */
        { "\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" },          /* surrogate */
        { "\xF0\x9F\x98", "\xEF\xBF\xBD" },                                  /* truncated 4-byte: one */
        { "\xF0\x9F\x98" "a", "\xEF\xBF\xBD" "a" },
        { "\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" }, /* > U+10FFFF */
        { "\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD" },                          /* overlong */
        { "\xE2\x82", "\xEF\xBF\xBD" },
        { "\xE2\x82\xAC", "\xE2\x82\xAC" },                                  /* valid euro sign */
        { "\xFF\xFE", "\xEF\xBF\xBD\xEF\xBF\xBD" },
        { "\xC3\xA9\xC3", "\xC3\xA9\xEF\xBF\xBD" },
    };
    Tokenizer *t = tiny_llama3();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Ids v = encode(t, cases[i].in, strlen(cases[i].in));
        Buf b = decode(t, v.p, v.n);
        assert_int_equal(b.len, strlen(cases[i].out));
        assert_memory_equal(b.p, cases[i].out, b.len);
        buf_free(&b);
        free(v.p);
    }
    tok_free(t);
}

/* ==== Special-token text is plain text ==== */

static void assert_no_special(const Tokenizer *t, const char *s, size_t n) {
    Ids v = encode(t, s, n);
    assert_true(v.n > 0);
    for (size_t i = 0; i < v.n; i++)
        if (tok_kind(t, v.p[i]) != TOKK_NORMAL && tok_kind(t, v.p[i]) != TOKK_BYTE)
            fail_msg("\"%.*s\" produced special id %d", (int)n, s, v.p[i]);
    free(v.p);
}

static void check_specials_plain(const Tokenizer *t) {
    static const char *extra[] = { "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<|eot_id|>",
                                   "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<pad>" };
    int n_special = 0;
    char buf[512];
    for (uint32_t id = 0; id < tok_vocab_size(t); id++) {
        if (tok_kind(t, (int32_t)id) != TOKK_SPECIAL) continue;
        uint32_t len;
        const uint8_t *p = tok_piece(t, (int32_t)id, &len);
        assert_true(len < 200);
        n_special++;
        /* The lookup by name works, the same text encoded never yields it. */
        memcpy(buf, p, len);
        buf[len] = 0;
        assert_int_equal(tok_special_id(t, buf), (int32_t)id);
        assert_no_special(t, buf, len);
        const char *q = (const char *)p;
        int k = snprintf(buf, sizeof buf, "Hello %.*s world%.*s%.*s", (int)len, q, (int)len, q, (int)len, q);
        assert_no_special(t, buf, (size_t)k);
    }
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        assert_no_special(t, extra[i], strlen(extra[i]));
        int k = snprintf(buf, sizeof buf, "text before %s\n\ntext after", extra[i]);
        assert_no_special(t, buf, (size_t)k);
    }
    assert_true(n_special >= 3);
}

static void test_special_text_is_plain(void **state) {
    (void)state;
    check_specials_plain(l3());
    check_specials_plain(l2());
    /* Ids by name agree with tokenizer_config.json / tokenizer.json. */
    assert_int_equal(tok_special_id(l3(), "<|begin_of_text|>"), tok_bos(l3()));
    assert_int_equal(tok_special_id(l3(), "<|eot_id|>"), tok_eos(l3()));
    assert_int_equal(tok_special_id(l3(), "<|eot_id|>"), 128009);
    assert_int_equal(tok_special_id(l3(), "<|start_header_id|>"), 128006);
    assert_int_equal(tok_special_id(l3(), "<s>"), -1);
    assert_int_equal(tok_special_id(l3(), "<|eot_id"), -1);
    assert_int_equal(tok_special_id(l3(), ""), -1);
    assert_int_equal(tok_special_id(l2(), "<s>"), tok_bos(l2()));
    assert_int_equal(tok_special_id(l2(), "</s>"), tok_eos(l2()));
    assert_int_equal(tok_bos(l2()), 1);
    assert_int_equal(tok_eos(l2()), 2);
    assert_int_equal(tok_special_id(l2(), "<unk>"), 0);
    assert_int_equal(tok_special_id(l2(), "[INST]"), -1);
    assert_int_equal(tok_special_id(l2(), "<|eot_id|>"), -1);
    assert_int_equal(tok_special_id(l2(), "<0x0A>"), -1); /* a byte piece, not special */
    assert_int_equal(tok_piece_id(l2(), "\xE2\x96\x81Hello", 8), 15043);
    assert_int_equal(tok_piece_id(l2(), "<s>", 3), -1); /* special, not a piece */
    assert_int_equal(tok_piece_id(l3(), "Hello", 5), 9906);
    assert_int_equal(tok_piece_id(l3(), "<|eot_id|>", 10), -1);
    assert_int_equal(tok_type(l3()), TOK_LLAMA3_BPE);
    assert_int_equal(tok_type(l2()), TOK_SPM_BPE);
    assert_int_equal(tok_vocab_size(l3()), 128256);
    assert_int_equal(tok_vocab_size(l2()), 32000);
}

/* ==== Decoding ==== */

static void test_decode_pieces(void **state) {
    (void)state;
    Buf b = { 0 };
    /* Llama 2: "▁Hello" -> " Hello"; <0x0A> -> "\n"; <s> -> its text; out of range -> error. */
    int32_t hello = 15043, nl = 13;
    assert_int_equal(tok_decode(l2(), hello, &b), 0);
    assert_int_equal(tok_decode(l2(), nl, &b), 0);
    assert_int_equal(tok_decode(l2(), 1, &b), 0);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.p, " Hello\n<s>", 10);
    assert_int_equal(tok_decode(l2(), 32000, &b), -1);
    assert_int_equal(tok_decode(l2(), -1, &b), -1);
    buf_free(&b);
    /* The sequence decoder drops the dummy-prefix space once. */
    int32_t seq[] = { 15043, 3186 }; /* "▁Hello", "▁world" */
    b = decode(l2(), seq, 2);
    assert_int_equal(b.len, 11);
    assert_memory_equal(b.p, "Hello world", 11);
    buf_free(&b);
    /* Llama 3: raw bytes, specials as text. */
    int32_t s3[] = { 9906, 11, 1917, 0, 128009 };
    b = decode(l3(), s3, 5);
    assert_int_equal(b.len, 23);
    assert_memory_equal(b.p, "Hello, world!<|eot_id|>", 23);
    assert_int_equal(tok_decode(l3(), 128256, &b), -1);
    buf_free(&b);
    /* GPT-2 byte-level strings. */
    uint8_t raw[16];
    assert_int_equal(tok_bytelevel_decode("\xC4\xA0Hello", 7, raw), 6); /* "ĠHello" */
    assert_memory_equal(raw, " Hello", 6);
    assert_int_equal(tok_bytelevel_decode("\xC4\x8A", 2, raw), 1); /* "Ċ" */
    assert_int_equal(raw[0], '\n');
    assert_int_equal(tok_bytelevel_decode("\xC4\x80", 2, raw), 1); /* "Ā" = byte 0 */
    assert_int_equal(raw[0], 0);
    assert_int_equal(tok_bytelevel_decode("\xC3\xA9", 2, raw), 1); /* "é" = byte 0xE9 */
    assert_int_equal(raw[0], 0xE9);
    assert_int_equal(tok_bytelevel_decode("\xC5\xBF", 2, raw), -1); /* "ſ" is not in the map */
    assert_int_equal(tok_bytelevel_decode(" ", 1, raw), -1);        /* space is mapped to Ġ */
    assert_int_equal(tok_bytelevel_decode("\xC4", 1, raw), -1);     /* not UTF-8 */
}

/* Random valid UTF-8 drawn from every class the pre-tokenizer distinguishes. */
static size_t random_text(uint8_t *o, size_t max_chars, int allow_2581) {
    static const uint32_t pool[] = { ' ', ' ', ' ', '\n', '\r', '\t', '\'', 's', 'S', 'l', 'L', 'e', 'x', '1', '7', '.', '!',
                                     '"', '<', '|', '>', 0x85, 0xA0, 0x3000, 0x2028, 0xFEFF, 0x180E, 0x17F, 0x212A,
                                     0xE9, 0x300, 0x4E2D, 0x0915, 0x093F, 0x0E20, 0x1F600, 0x1F1FA, 0x200D, 0xFF11,
                                     0xBD, 0x2163, 0x0663, 0xFFFD, 0x2581, 0x10FFFF, 0xE000, 0x1E4D0 };
    size_t n = 0, k = rnd() % (max_chars + 1);
    for (size_t i = 0; i < k; i++) {
        uint32_t cp;
        if (rnd() % 4 == 0) {
            do cp = rnd() % 0x110000;
            while ((cp >= 0xD800 && cp <= 0xDFFF) || cp == 0x2581);
        } else {
            cp = pool[rnd() % (sizeof pool / sizeof pool[0])];
        }
        if (cp == 0x2581 && !allow_2581) cp = 'a';
        n += put_utf8(o + n, cp);
    }
    return n;
}

/* decode(encode(x)) == x for valid UTF-8. SentencePiece cannot round-trip U+2581 itself (it
 * stands for a space), so the SPM strings avoid it. */
static void test_decode_roundtrip_random(void **state) {
    (void)state;
    uint8_t s[64 * 4];
    for (int model = 0; model < 2; model++) {
        const Tokenizer *t = model ? l2() : l3();
        for (int it = 0; it < 3000; it++) {
            size_t n = random_text(s, 64, model == 0);
            Ids v = encode(t, s, n);
            Buf b = decode(t, v.p, v.n);
            if (b.len != n || (n && memcmp(b.p, s, n) != 0)) fail_msg("round trip failed (model %d, iteration %d)", model, it);
            buf_free(&b);
            free(v.p);
        }
    }
}

/* ==== Long and pathological inputs (the BPE must be O(n log n) per word) ==== */

static void check_long(const Tokenizer *t, const char *what, const uint8_t *s, size_t n) {
    double t0 = now_sec();
    Ids v = encode(t, s, n);
    double dt = now_sec() - t0;
    Buf b = decode(t, v.p, v.n);
    assert_int_equal(b.len, n);
    assert_memory_equal(b.p, s, n);
    printf("  %-28s %8zu bytes -> %7zu tokens in %.3f s\n", what, n, v.n, dt);
    /* A quadratic merge loop takes hours here; even sanitizer builds take ~1 s. */
    assert_true(dt < 30.0);
    buf_free(&b);
    free(v.p);
}

static void test_long_inputs(void **state) {
    (void)state;
    size_t n = 1 << 20;
    uint8_t *s = malloc(n);
    const struct {
        const char *name;
        const char *unit;
    } pats[] = { { "1 MiB of 'a'", "a" }, { "1 MiB of spaces", " " }, { "1 MiB of digits", "7" },
                 { "1 MiB of newlines", "\n" }, { "1 MiB of 'ab'", "ab" }, { "1 MiB of '中'", "\xE4\xB8\xAD" },
                 { "1 MiB of \" !\"", " !" }, { "1 MiB of \"'s\"", "'s" } };
    for (int model = 0; model < 2; model++) {
        const Tokenizer *t = model ? l2() : l3();
        printf("%s:\n", model ? "llama2" : "llama3");
        for (size_t p = 0; p < sizeof pats / sizeof pats[0]; p++) {
            size_t u = strlen(pats[p].unit), m = n / u * u;
            for (size_t i = 0; i < m; i += u) memcpy(s + i, pats[p].unit, u);
            check_long(t, pats[p].name, s, m);
        }
    }
    free(s);
}

/* Appending: ids from two calls equal the concatenation; empty input adds nothing. */
static void test_encode_appends(void **state) {
    (void)state;
    for (int model = 0; model < 2; model++) {
        const Tokenizer *t = model ? l2() : l3();
        Ids a = encode(t, "Hello", 5), b = encode(t, " world", 6);
        Ids c = { 0 };
        char err[ERRLEN];
        assert_int_equal(tok_encode(t, "Hello", 5, &c.p, &c.n, &c.cap, err), 0);
        assert_int_equal(tok_encode(t, "", 0, &c.p, &c.n, &c.cap, err), 0);
        assert_int_equal(c.n, a.n);
        assert_int_equal(tok_encode(t, " world", 6, &c.p, &c.n, &c.cap, err), 0);
        assert_int_equal(c.n, a.n + b.n);
        assert_memory_equal(c.p, a.p, a.n * sizeof(int32_t));
        assert_memory_equal(c.p + a.n, b.p, b.n * sizeof(int32_t));
        free(a.p), free(b.p), free(c.p);
    }
}

/* ==== The guard.bin section ==== */

static uint8_t *serialize(const Tokenizer *t, uint64_t *len) {
    uint8_t *blob;
    char err[ERRLEN];
    if (tok_serialize(t, &blob, len, err)) fail_msg("tok_serialize: %s", err);
    return blob;
}

typedef struct {
    const Tokenizer *a, *b;
    int lines;
} Same;

static void same_ids_line(const Json *j, const JsonNode *r, void *ctx) {
    Same *s = ctx;
    const JsonNode *text = json_get(j, r, "text");
    Ids x = encode(s->a, text->str, text->len), y = encode(s->b, text->str, text->len);
    assert_int_equal(x.n, y.n);
    assert_memory_equal(x.p, y.p, x.n * sizeof(int32_t));
    free(x.p), free(y.p);
    s->lines++;
}

static void roundtrip_section(const Tokenizer *t, const char *golden) {
    uint64_t len, len2;
    uint8_t *blob = serialize(t, &len);
    Tokenizer *u;
    char err[ERRLEN];
    double t0 = now_sec();
    if (tok_load(&u, blob, len, err)) fail_msg("tok_load: %s", err);
    printf("%s: section %llu bytes, tok_load %.3f s\n", golden, (unsigned long long)len, now_sec() - t0);
    uint8_t *blob2 = serialize(u, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(blob, blob2, len);
    assert_int_equal(tok_vocab_size(u), tok_vocab_size(t));
    assert_int_equal(tok_bos(u), tok_bos(t));
    assert_int_equal(tok_eos(u), tok_eos(t));
    Same s = { t, u, 0 };
    for_each_line(golden, same_ids_line, &s);
    assert_true(s.lines > 800);
    tok_free(u);
    free(blob);
    free(blob2);
}

static void test_section_roundtrip(void **state) {
    (void)state;
    roundtrip_section(l3(), "tokenizer/llama3_golden.jsonl");
    roundtrip_section(l2(), "tokenizer/llama2_golden.jsonl");
}

/* A small Llama 3-style tokenizer: 256 byte tokens, "ab", " a", "abab", two specials. */
static Tokenizer *tiny_llama3(void) {
    static char bytes[256];
    const char *text[262];
    uint32_t len[262];
    uint8_t kind[262] = { 0 };
    for (int i = 0; i < 256; i++) bytes[i] = (char)i, text[i] = &bytes[i], len[i] = 1;
    text[256] = "ab", len[256] = 2;
    text[257] = " a", len[257] = 2;
    text[258] = "abab", len[258] = 4;
    text[259] = "<|eot_id|>", len[259] = 10, kind[259] = TOKK_SPECIAL;
    text[260] = "<|begin_of_text|>", len[260] = 17, kind[260] = TOKK_SPECIAL;
    text[261] = "xyzzy", len[261] = 5; /* reachable only as a whole word */
    uint32_t merges[] = { 'a', 'b', ' ', 'a', 256, 256 };
    TokSpec s = { .type = TOK_LLAMA3_BPE, .n_tokens = 262, .text = text, .len = len, .kind = kind, .n_merges = 3,
                  .merges = merges, .ignore_merges = 1, .bos = 260, .eos = 259 };
    Tokenizer *t;
    char err[ERRLEN];
    if (tok_build(&t, &s, err)) fail_msg("tok_build: %s", err);
    return t;
}

/* A small SPM tokenizer: <unk> <s> </s>, 256 byte pieces, ▁, a, b, ▁a, ab. */
static Tokenizer *tiny_spm(void) {
    static char names[256][8];
    const char *text[264];
    uint32_t len[264];
    uint8_t kind[264] = { 0 };
    text[0] = "<unk>", text[1] = "<s>", text[2] = "</s>";
    len[0] = 5, len[1] = 3, len[2] = 4;
    kind[0] = kind[1] = kind[2] = TOKK_SPECIAL;
    for (int i = 0; i < 256; i++) {
        snprintf(names[i], sizeof names[i], "<0x%02X>", i);
        text[3 + i] = names[i], len[3 + i] = 6, kind[3 + i] = TOKK_BYTE;
    }
    text[259] = "\xE2\x96\x81", len[259] = 3;
    text[260] = "a", len[260] = 1;
    text[261] = "b", len[261] = 1;
    text[262] = "\xE2\x96\x81" "a", len[262] = 4;
    text[263] = "ab", len[263] = 2;
    uint32_t merges[] = { 259, 260, 260, 261 };
    TokSpec s = { .type = TOK_SPM_BPE, .n_tokens = 264, .text = text, .len = len, .kind = kind, .n_merges = 2,
                  .merges = merges, .bos = 1, .eos = 2 };
    Tokenizer *t;
    char err[ERRLEN];
    if (tok_build(&t, &s, err)) fail_msg("tok_build: %s", err);
    return t;
}

static void assert_ids(const Tokenizer *t, const char *s, const int32_t *want, size_t n) {
    Ids v = encode(t, s, strlen(s));
    if (v.n != n || memcmp(v.p, want, n * sizeof(int32_t)) != 0) {
        print_ids("want", want, n);
        print_ids("got ", v.p, v.n);
        fail_msg("encode(\"%s\")", s);
    }
    free(v.p);
}

static void test_tiny_tokenizers(void **state) {
    (void)state;
    Tokenizer *t = tiny_llama3();
    /* "ab" whole word; " abab": Ġ a b a b -> (a b) twice, then (ab ab); " a" loses. */
    assert_ids(t, "ab abab", (int32_t[]){ 256, ' ', 258 }, 3);
    assert_ids(t, "xyzzy", (int32_t[]){ 261 }, 1); /* ignore_merges */
    assert_ids(t, " a", (int32_t[]){ 257 }, 1);
    assert_ids(t, "<|eot_id|>", (int32_t[]){ '<', '|', 'e', 'o', 't', '_', 'i', 'd', '|', '>' }, 10);
    assert_int_equal(tok_special_id(t, "<|eot_id|>"), 259);
    tok_free(t);
    t = tiny_spm();
    /* "a ab" -> "▁a▁ab": (▁ a) leftmost first, twice; then nothing joins ▁a and b. */
    assert_ids(t, "a ab", (int32_t[]){ 262, 262, 261 }, 3);
    /* "c" is not in the vocabulary: byte fallback <0x63>. */
    assert_ids(t, "c", (int32_t[]){ 259, 3 + 'c' }, 2);
    assert_ids(t, "\xC3\xA9", (int32_t[]){ 259, 3 + 0xC3, 3 + 0xA9 }, 3);
    assert_ids(t, "ab", (int32_t[]){ 262, 261 }, 2); /* (▁ a) outranks (a b) */
    Buf b = { 0 };
    int32_t ids[] = { 262, 3 + 'c', 259, 263, 1 };
    assert_int_equal(tok_decode_ids(t, ids, 5, &b), 0);
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.p, "ac ab<s>", 8);
    buf_free(&b);
    tok_free(t);
}

/* Recompute a (possibly truncated or edited) section's CRC so the structural checks behind it
 * are what gets exercised. */
static void fix_crc(uint8_t *p, uint64_t len) {
    if (len < 40) return;
    static const uint8_t zero[4];
    uint32_t c = crc32_update(0, p, 36);
    c = crc32_update(c, zero, 4);
    c = crc32_update(c, p + 40, (size_t)(len - 40));
    for (int k = 0; k < 4; k++) p[36 + k] = (uint8_t)(c >> 8 * k);
}

static void st32(uint8_t *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> 8 * k);
}

/* Load must fail, with a message containing `want` (NULL: any). */
static void expect_reject(const uint8_t *blob, uint64_t len, const char *want) {
    Tokenizer *t = NULL;
    char err[ERRLEN] = "";
    int rc = tok_load(&t, blob, len, err);
    if (rc == 0) {
        tok_free(t);
        fail_msg("a corrupt section (expecting \"%s\") was accepted", want ? want : "any error");
    }
    assert_null(t);
    assert_true(err[0] != 0);
    if (want && !strstr(err, want)) fail_msg("error \"%s\" does not mention \"%s\"", err, want);
}

/* If a corrupted section loads, it must still be a working tokenizer. */
static void load_or_reject(const uint8_t *blob, uint64_t len) {
    Tokenizer *t = NULL;
    char err[ERRLEN];
    if (tok_load(&t, blob, len, err)) {
        assert_null(t);
        return;
    }
    const char *s = "ab abab a b <|eot_id|> xyzzy \xC3\xA9\xE2\x96\x81 12345";
    Ids v = encode(t, s, strlen(s));
    Buf b = { 0 };
    for (size_t i = 0; i < v.n; i++) assert_int_equal(tok_decode(t, v.p[i], &b), 0);
    buf_free(&b);
    free(v.p);
    tok_free(t);
}

static void corrupt_section(Tokenizer *t) {
    uint64_t len;
    uint8_t *blob = serialize(t, &len);
    uint8_t *c = malloc(len);
    uint32_t n_tok = tok_vocab_size(t), n_m = tok_n_merges(t);
    uint64_t kinds = 48 + 4ull * n_tok, text = kinds + n_tok, merges = len - 12ull * n_m;

    /* Every truncation, with the stored CRC and with a recomputed one. */
    for (uint64_t n = 0; n < len; n++) {
        memcpy(c, blob, n);
        expect_reject(c, n, NULL);
        fix_crc(c, n);
        expect_reject(c, n, NULL);
    }
    /* Every single-byte flip is caught (by the CRC if nothing else). */
    for (uint64_t i = 0; i < len; i++) {
        memcpy(c, blob, len);
        c[i] ^= (uint8_t)(1u << (i % 8));
        expect_reject(c, len, NULL);
    }
    /* Random damage behind a valid CRC: rejected cleanly or still a working tokenizer. */
    for (int it = 0; it < 3000; it++) {
        memcpy(c, blob, len);
        int k = 1 + (int)(rnd() % 4);
        for (int f = 0; f < k; f++) {
            uint64_t at = rnd() % len;
            c[at] = (rnd() & 1) ? (uint8_t)rnd() : (uint8_t)(c[at] ^ (1u << (rnd() % 8)));
        }
        if (it % 2) c[48 + 4 * (rnd() % (n_tok + 1))] ^= 0xFF; /* often hits a length or kind */
        fix_crc(c, len);
        load_or_reject(c, len);
    }
#define EDIT(stmt, want)              \
    do {                              \
        memcpy(c, blob, len);         \
        stmt;                         \
        fix_crc(c, len);              \
        expect_reject(c, len, want);  \
    } while (0)
    EDIT(c[0] = 'X', "magic");
    EDIT(st32(c + 8, 2), "version");
    EDIT(st32(c + 12, 3), "type");
    EDIT(st32(c + 16, 4), "flags");
    EDIT(st32(c + 20, 0), "n_tokens");
    EDIT(st32(c + 20, 0xFFFFFFFFu), "n_tokens");
    EDIT(st32(c + 20, n_tok + 1), "need");
    EDIT(st32(c + 24, n_m + 1), "need");
    EDIT(st32(c + 24, 0x7FFFFFFFu), "need");
    EDIT((st32(c + 40, 0), st32(c + 44, 0x80000000u)), "need");
    EDIT((st32(c + 40, 0xFFFFFFFFu), st32(c + 44, 0xFFFFFFFFu)), "overflow");
    EDIT(st32(c + 28, n_tok), "bos");
    EDIT(st32(c + 32, (uint32_t)-2), "eos");
    memcpy(c, blob, len);
    st32(c + 36, ld_u32(c + 36) ^ 1);
    expect_reject(c, len, "checksum");
    EDIT(st32(c + 48, ld_u32(c + 48) + 1), "add up");                         /* one length off */
    EDIT((st32(c + 52, ld_u32(c + 52) + ld_u32(c + 48)), st32(c + 48, 0)), "empty"); /* lengths still sum */
    EDIT(c[kinds] = 7, "kind");
    /* Two neighbouring one-byte NORMAL tokens made equal. */
    uint64_t at = text;
    for (uint32_t i = 0; i + 1 < n_tok; at += ld_u32(blob + 48 + 4 * i), i++)
        if (blob[kinds + i] == TOKK_NORMAL && blob[kinds + i + 1] == TOKK_NORMAL && ld_u32(blob + 48 + 4 * i) == 1 &&
            ld_u32(blob + 52 + 4 * i) == 1)
            break;
    assert_true(at + 1 < merges);
    EDIT(c[at + 1] = c[at], "repeats");
    EDIT(c[kinds + 'q'] = TOKK_SPECIAL, NULL);                                 /* a byte is lost */
    EDIT(st32(c + merges, n_tok), "out of range");
    EDIT(st32(c + merges + 4, 0xFFFFFFFFu), "out of range");
    if (n_m >= 2) {
        EDIT((st32(c + merges + 8, 5), st32(c + merges + 20, 4)), "order");
        EDIT(memcpy(c + merges + 12, c + merges, 8), "repeated");
    }
    EDIT(st32(c + merges + 4, ld_u32(c + merges)), "not a token"); /* (a, b) -> (a, a) */
#undef EDIT
    free(c);
    free(blob);
}

static void test_section_rejects_corruption(void **state) {
    (void)state;
    Tokenizer *t = tiny_llama3();
    corrupt_section(t);
    tok_free(t);
    t = tiny_spm();
    corrupt_section(t);
    uint64_t len;
    uint8_t *blob = serialize(t, &len);
    /* SPM-only rule: a byte piece must be one byte; a Llama 3 section may hold none. */
    blob[48 + 4 * 264 + 3] = TOKK_NORMAL; /* <0x00> becomes an ordinary token: byte 0 has no piece */
    fix_crc(blob, len);
    expect_reject(blob, len, "byte 0x00");
    free(blob);
    tok_free(t);
    expect_reject(NULL, 0, "header");
}

/* The real Llama 3 section: truncations and flips are rejected too. */
static void test_real_section_rejects_corruption(void **state) {
    (void)state;
    uint64_t len;
    uint8_t *blob = serialize(l3(), &len);
    uint64_t cuts[] = { 0, 8, 47, 48, 49, 1000, len / 2, len - 12, len - 1 };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) expect_reject(blob, cuts[i], NULL);
    for (int it = 0; it < 20; it++) {
        uint64_t at = rnd() % len;
        blob[at] ^= 0x10;
        expect_reject(blob, len, NULL);
        blob[at] ^= 0x10;
    }
    for (int it = 0; it < 8; it++) { /* behind a valid CRC */
        uint64_t at = rnd() % len;
        uint8_t old = blob[at];
        blob[at] ^= (uint8_t)(1u << (rnd() % 8));
        fix_crc(blob, len);
        load_or_reject(blob, len);
        blob[at] = old;
    }
    free(blob);
}

/* ==== The raw-array builder with scores (tiktoken ranks, SentencePiece scores) ==== */

/* Rebuild t from its pieces and scores, with no merges list. Llama 3: tiktoken's rule, rank =
 * id (Meta's tokenizer.model ranks are the ids). Llama 2: SentencePiece's rule; the real scores
 * sit in a protobuf only the Meta importer reads, so each piece scores minus the rank of the
 * first HF merge that makes it (HF's converter derived those merges from the scores). */
static Tokenizer *rebuild_from_scores(const Tokenizer *t) {
    uint32_t n = tok_vocab_size(t);
    const char **text = malloc(n * sizeof *text);
    uint32_t *len = malloc(n * sizeof *len);
    uint8_t *kind = malloc(n);
    float *scores = malloc(n * sizeof *scores);
    char(*names)[8] = malloc(256 * sizeof *names);
    for (uint32_t i = 0; i < n; i++) {
        kind[i] = (uint8_t)tok_kind(t, (int32_t)i);
        text[i] = (const char *)tok_piece(t, (int32_t)i, &len[i]);
        scores[i] = tok_type(t) == TOK_LLAMA3_BPE ? -(float)i : -1e9f;
        if (kind[i] == TOKK_BYTE) {
            uint8_t b = (uint8_t)text[i][0];
            snprintf(names[b], 8, "<0x%02X>", b);
            text[i] = names[b], len[i] = 6;
        }
    }
    if (tok_type(t) == TOK_SPM_BPE) {
        /* Rank order of the merges = order of the section; find each merge's result by decoding. */
        uint64_t blen;
        uint8_t *blob = serialize(t, &blen);
        uint64_t mrec = blen - 12ull * tok_n_merges(t);
        char cat[256];
        for (uint32_t m = tok_n_merges(t); m-- > 0;) {
            uint32_t l = ld_u32(blob + mrec + 12ull * m), r = ld_u32(blob + mrec + 12ull * m + 4);
            assert_true(len[l] + len[r] < sizeof cat);
            memcpy(cat, text[l], len[l]);
            memcpy(cat + len[l], text[r], len[r]);
            int32_t res = tok_piece_id(t, cat, len[l] + len[r]);
            assert_true(res >= 0);
            scores[res] = -(float)m;
        }
        free(blob);
    }
    TokSpec s = { .type = tok_type(t), .n_tokens = n, .text = text, .len = len, .kind = kind, .scores = scores,
                  .ignore_merges = tok_type(t) == TOK_LLAMA3_BPE, .bos = tok_bos(t), .eos = tok_eos(t) };
    Tokenizer *u;
    char err[ERRLEN];
    if (tok_build(&u, &s, err)) fail_msg("tok_build(scores): %s", err);
    free(text), free(len), free(kind), free(scores), free(names);
    return u;
}

static void test_builder_from_scores(void **state) {
    (void)state;
    Tokenizer *u = rebuild_from_scores(l3());
    printf("llama3 from tiktoken-style ranks: %u merges derived\n", tok_n_merges(u));
    run_golden(u, "tokenizer/llama3_golden.jsonl");
    tok_free(u);
    u = rebuild_from_scores(l2());
    printf("llama2 from SentencePiece-style scores: %u merges derived\n", tok_n_merges(u));
    run_golden(u, "tokenizer/llama2_golden.jsonl");
    tok_free(u);
}

static void test_builder_rejects(void **state) {
    (void)state;
    char err[ERRLEN];
    Tokenizer *t = NULL;
    const char *text[] = { "a", "b", "ab", "<0xZZ>" };
    uint32_t len[] = { 1, 1, 2, 6 };
    uint8_t kind[] = { 0, 0, 0, TOKK_BYTE };
    uint32_t merges[] = { 0, 1 };
    TokSpec s = { .type = TOK_SPM_BPE, .n_tokens = 4, .text = text, .len = len, .kind = kind, .n_merges = 1,
                  .merges = merges, .bos = -1, .eos = -1 };
    assert_int_equal(tok_build(&t, &s, err), -1);
    assert_non_null(strstr(err, "<0xXX>"));
    s.n_tokens = 3;
    assert_int_equal(tok_build(&t, &s, err), -1); /* no byte pieces at all */
    assert_non_null(strstr(err, "byte"));
    s.type = 7;
    assert_int_equal(tok_build(&t, &s, err), -1);
    s.type = TOK_SPM_BPE, s.ignore_merges = 1;
    assert_int_equal(tok_build(&t, &s, err), -1);
    assert_non_null(strstr(err, "ignore_merges"));
    float scores[] = { 0, 0, NAN };
    s.ignore_merges = 0, s.merges = NULL, s.n_merges = 0, s.scores = scores;
    assert_int_equal(tok_build(&t, &s, err), -1);
    assert_non_null(strstr(err, "NaN"));
    assert_null(t);
}

/* ==== tokenizer.json files the importer must refuse ==== */

/* GPT-2 bytes_to_unicode(), written out independently of tokenizer.c. */
static uint32_t gpt2_char(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    uint32_t k = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) k++;
    return 0x100 + k;
}

static void json_key(Buf *o, uint32_t cp) {
    uint8_t u[4];
    size_t n = put_utf8(u, cp);
    buf_put(o, "\"", 1);
    if (cp == '"' || cp == '\\') buf_put(o, "\\", 1);
    buf_put(o, u, n);
    buf_put(o, "\"", 1);
}

typedef struct {
    const char *model_type, *normalizer, *pre_tokenizer, *decoder, *added, *merges, *model_extra, *vocab_extra;
} Parts;

#define L3_REGEX                                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|" \
    "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+"
#define L3_PRE                                                                                                          \
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"" L3_REGEX "\"},"        \
    "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"                \
    "\"trim_offsets\":true,\"use_regex\":false}]}"
#define L3_DEC "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true}"
#define L3_ADDED                                                                                                   \
    "[{\"id\":259,\"content\":\"<|eot_id|>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"            \
    "\"normalized\":false,\"special\":true}]"
#define SPM_NORM                                                                                                   \
    "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"                  \
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]}"
#define SPM_DEC                                                                                                    \
    "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"},"          \
    "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \","      \
    "\"start\":1,\"stop\":0}]}"
#define SPM_ADDED                                                                                                  \
    "[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\",\"special\":true},"            \
    "{\"id\":2,\"content\":\"</s>\",\"special\":true}]"

static const Parts L3_OK = { "BPE", "null", L3_PRE, L3_DEC, L3_ADDED, "[\"a b\",\"\xC4\xA0 a\",\"ab ab\"]",
                             "\"byte_fallback\":false,\"ignore_merges\":true", "" };
static const Parts SPM_OK = { "BPE", SPM_NORM, "null", SPM_DEC, SPM_ADDED, "[\"\xE2\x96\x81 a\",\"a b\"]",
                              "\"byte_fallback\":true,\"fuse_unk\":true", "" };

/* Write a tokenizer.json: Llama 3-like (256 byte-level entries, ids = byte values, then ab,
 * Ġa, abab) or Llama 2-like (<unk> <s> </s>, <0x00>..<0xFF>, ▁ a b ▁a ab). */
static const char *write_json(const char *name, const Parts *p, int spm) {
    static char path[8][512];
    static int k;
    char *out = path[k++ & 7];
    snprintf(out, 512, "%s/%s", test_tmpdir(), name);
    Buf o = { 0 };
    char head[16384];
    int n = snprintf(head, sizeof head,
                     "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":%s,\"normalizer\":%s,"
                     "\"pre_tokenizer\":%s,\"post_processor\":null,\"decoder\":%s,\"model\":{\"type\":\"%s\","
                     "\"dropout\":null,\"unk_token\":%s,\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,"
                     "%s,\"vocab\":{",
                     p->added, p->normalizer, p->pre_tokenizer, p->decoder, p->model_type, spm ? "\"<unk>\"" : "null",
                     p->model_extra);
    buf_put(&o, head, (uint64_t)n);
    char item[64];
    if (!spm) {
        for (int b = 0; b < 256; b++) {
            json_key(&o, gpt2_char(b));
            n = snprintf(item, sizeof item, ":%d,", b);
            buf_put(&o, item, (uint64_t)n);
        }
        const char *rest = "\"ab\":256,\"\xC4\xA0" "a\":257,\"abab\":258";
        buf_put(&o, rest, strlen(rest));
    } else {
        const char *sp = "\"<unk>\":0,\"<s>\":1,\"</s>\":2,";
        buf_put(&o, sp, strlen(sp));
        for (int b = 0; b < 256; b++) {
            n = snprintf(item, sizeof item, "\"<0x%02X>\":%d,", b, 3 + b);
            buf_put(&o, item, (uint64_t)n);
        }
        const char *rest = "\"\xE2\x96\x81\":259,\"a\":260,\"b\":261,\"\xE2\x96\x81" "a\":262,\"ab\":263";
        buf_put(&o, rest, strlen(rest));
    }
    buf_put(&o, p->vocab_extra, strlen(p->vocab_extra));
    n = snprintf(head, sizeof head, "},\"merges\":%s}}", p->merges);
    buf_put(&o, head, (uint64_t)n);
    assert_false(o.oom);
    FILE *f = fopen(out, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(o.p, 1, (size_t)o.len, f), (size_t)o.len);
    fclose(f);
    buf_free(&o);
    return out;
}

static const char *tmp_text(const char *name, const char *s) {
    static char path[4][512];
    static int k;
    char *out = path[k++ & 3];
    snprintf(out, 512, "%s/%s", test_tmpdir(), name);
    write_text(out, s);
    return out;
}

static void remove_tmp_files(void) {
    static const char *names[] = { "l3_ok.json", "l3_cfg.json", "spm_ok.json", "bad.json", "broken.json", "notok.json",
                                   "cfg1.json", "cfg2.json", "cfg3.json" };
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", test_tmpdir(), names[i]);
        unlink(path);
    }
}

static void expect_hf_error(const char *json_path, const char *cfg_path, const char *field) {
    Tokenizer *t = NULL;
    char err[ERRLEN] = "";
    if (tok_from_hf(&t, json_path, cfg_path, err) == 0) {
        tok_free(t);
        fail_msg("%s was accepted; expected an error naming %s", json_path, field);
    }
    assert_null(t);
    if (!strstr(err, field) || !strstr(err, cfg_path && strstr(field, "_token") ? cfg_path : json_path))
        fail_msg("error \"%s\" should name the file and \"%s\"", err, field);
}

static void test_hf_accepts_minimal(void **state) {
    (void)state;
    Tokenizer *t;
    char err[ERRLEN];
    const char *p = write_json("l3_ok.json", &L3_OK, 0);
    const char *cfg = tmp_text("l3_cfg.json", "{\"bos_token\":null,\"eos_token\":{\"content\":\"<|eot_id|>\"}}");
    if (tok_from_hf(&t, p, cfg, err)) fail_msg("%s", err);
    assert_int_equal(tok_type(t), TOK_LLAMA3_BPE);
    assert_int_equal(tok_vocab_size(t), 260);
    assert_int_equal(tok_eos(t), 259);
    assert_int_equal(tok_bos(t), -1);
    assert_ids(t, "ab abab", (int32_t[]){ 256, ' ', 258 }, 3);
    assert_ids(t, "\n", (int32_t[]){ '\n' }, 1);
    tok_free(t);
    p = write_json("spm_ok.json", &SPM_OK, 1);
    if (tok_from_hf(&t, p, NULL, err)) fail_msg("%s", err);
    assert_int_equal(tok_type(t), TOK_SPM_BPE);
    assert_int_equal(tok_bos(t), -1);
    assert_ids(t, "a ab", (int32_t[]){ 262, 262, 261 }, 3);
    assert_ids(t, "c", (int32_t[]){ 259, 3 + 'c' }, 2);
    assert_int_equal(tok_kind(t, 3), TOKK_BYTE);
    tok_free(t);
    remove_tmp_files();
}

static void test_hf_rejects(void **state) {
    (void)state;
    Parts p;
#define REJECT(base, spm, field_, value, want)                      \
    do {                                                            \
        p = base;                                                   \
        p.field_ = value;                                           \
        expect_hf_error(write_json("bad.json", &p, spm), NULL, want); \
    } while (0)
    REJECT(L3_OK, 0, model_type, "Unigram", "model.type");
    REJECT(L3_OK, 0, model_type, "WordPiece", "model.type");
    REJECT(L3_OK, 0, pre_tokenizer, "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\"}",
           "pre_tokenizer");
    REJECT(L3_OK, 0, pre_tokenizer, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}",
           "pre_tokenizer");
    REJECT(L3_OK, 0, pre_tokenizer,
           "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"'s|'t| ?\\\\p{L}+\"},"
           "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
           "\"use_regex\":false}]}",
           "Regex");
    REJECT(L3_OK, 0, pre_tokenizer,
           "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"" L3_REGEX "\"},"
           "\"behavior\":\"Removed\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
           "\"use_regex\":false}]}",
           "behavior");
    REJECT(L3_OK, 0, pre_tokenizer,
           "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"" L3_REGEX "\"},"
           "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
           "\"use_regex\":false}]}",
           "add_prefix_space");
    REJECT(L3_OK, 0, normalizer, "{\"type\":\"NFC\"}", "normalizer");
    REJECT(L3_OK, 0, decoder, "{\"type\":\"WordPiece\",\"prefix\":\"##\"}", "decoder");
    REJECT(L3_OK, 0, added, "[{\"id\":259,\"content\":\"<|eot_id|>\",\"special\":false}]", "added_tokens");
    REJECT(L3_OK, 0, added, "[{\"id\":260,\"content\":\"<|eot_id|>\",\"special\":true}]", "added_tokens"); /* gap */
    REJECT(L3_OK, 0, added, "[{\"id\":1,\"content\":\"<|eot_id|>\",\"special\":true}]", "added_tokens");   /* clash */
    REJECT(L3_OK, 0, model_extra, "\"byte_fallback\":true", "byte_fallback");
    REJECT(L3_OK, 0, model_extra, "\"ignore_merges\":1", "ignore_merges");
    REJECT(L3_OK, 0, merges, "[\"a b\",\"a q\xC5\xBF\"]", "model.merges[1]");
    REJECT(L3_OK, 0, merges, "[\"a b c\"]", "model.merges[0]");
    REJECT(L3_OK, 0, merges, "[\"b a\"]", "not a token"); /* "ba" is not in the vocabulary */
    REJECT(L3_OK, 0, vocab_extra, ",\"zz\":300", "model.vocab");
    REJECT(L3_OK, 0, vocab_extra, ",\"zz\":258", "model.vocab");
    REJECT(SPM_OK, 1, normalizer, "{\"type\":\"Lowercase\"}", "normalizer");
    REJECT(SPM_OK, 1, normalizer, "null", "normalizer");
    REJECT(SPM_OK, 1, pre_tokenizer, "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\"}", "pre_tokenizer");
    REJECT(SPM_OK, 1, decoder, "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\"}", "decoder");
    REJECT(SPM_OK, 1, model_extra, "\"byte_fallback\":false", "byte_fallback");
    REJECT(SPM_OK, 1, model_extra, "\"byte_fallback\":true,\"ignore_merges\":true", "ignore_merges");
    REJECT(SPM_OK, 1, model_extra, "\"byte_fallback\":true,\"dropout\":0.1", "dropout");
    REJECT(SPM_OK, 1, model_type, "Unigram", "model.type");
#undef REJECT
    /* Files that are not tokenizer.json at all. */
    char missing[512];
    snprintf(missing, sizeof missing, "%s/no_such_tokenizer.json", test_tmpdir());
    expect_hf_error(missing, NULL, "no_such_tokenizer.json");
    expect_hf_error(tmp_text("broken.json", "{\"model\": {\"type\": \"BPE\",}"), NULL, "line 1");
    expect_hf_error(tmp_text("notok.json", "{\"version\": \"1.0\"}"), NULL, "model");
    /* tokenizer_config.json naming tokens the tokenizer does not have as special. */
    const char *ok = write_json("l3_ok.json", &L3_OK, 0);
    expect_hf_error(ok, tmp_text("cfg1.json", "{\"bos_token\":\"<|begin_of_text|>\"}"), "bos_token");
    expect_hf_error(ok, tmp_text("cfg2.json", "{\"eos_token\":\"ab\"}"), "eos_token");
    expect_hf_error(ok, tmp_text("cfg3.json", "{\"eos_token\":7}"), "eos_token");
    remove_tmp_files();
}

/* ==== Unicode tables ==== */

static void test_unicode_classes(void **state) {
    (void)state;
    printf("Unicode tables: version %s, %u ranges\n", uc_version, uc_n_ranges);
    for (uint32_t i = 0; i < uc_n_ranges; i++) {
        assert_true(uc_ranges[i].lo <= uc_ranges[i].hi);
        assert_true(uc_ranges[i].hi <= 0x10FFFF);
        assert_true(uc_ranges[i].cls >= UC_LETTER && uc_ranges[i].cls <= UC_SPACE);
        if (i) assert_true(uc_ranges[i - 1].hi < uc_ranges[i].lo);
    }
    static const struct {
        uint32_t cp;
        int cls;
    } cases[] = {
        { 'A', UC_LETTER }, { 'z', UC_LETTER }, { '0', UC_NUMBER }, { ' ', UC_SPACE }, { '\t', UC_SPACE },
        { '\n', UC_SPACE }, { '\v', UC_SPACE }, { '\f', UC_SPACE }, { '\r', UC_SPACE }, { 0x1C, UC_OTHER },
        { '_', UC_OTHER }, { 0x85, UC_SPACE }, { 0xA0, UC_SPACE }, { 0x1680, UC_SPACE }, { 0x2000, UC_SPACE },
        { 0x200A, UC_SPACE }, { 0x200B, UC_OTHER }, { 0x2028, UC_SPACE }, { 0x2029, UC_SPACE }, { 0x202F, UC_SPACE },
        { 0x205F, UC_SPACE }, { 0x3000, UC_SPACE }, { 0xFEFF, UC_OTHER }, { 0x180E, UC_OTHER }, { 0xAA, UC_LETTER },
        { 0xB2, UC_NUMBER }, { 0xBD, UC_NUMBER }, { 0x2163, UC_NUMBER }, { 0x0663, UC_NUMBER }, { 0xFF11, UC_NUMBER },
        { 0x17F, UC_LETTER }, { 0x212A, UC_LETTER }, { 0x4E2D, UC_LETTER }, { 0x9FFF, UC_LETTER }, { 0xAC00, UC_LETTER },
        { 0x0300, UC_OTHER }, { 0x093F, UC_OTHER }, { 0x02B0, UC_LETTER }, { 0x1F600, UC_OTHER }, { 0xE000, UC_OTHER },
        { 0x10FFFF, UC_OTHER }, { 0x20000, UC_LETTER }, { 0x11F04, UC_LETTER } /* Kawi, Unicode 15.0 */,
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (tok_unicode_class(cases[i].cp) != cases[i].cls)
            fail_msg("U+%04X: class %d, expected %d", cases[i].cp, tok_unicode_class(cases[i].cp), cases[i].cls);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unicode_classes),
        cmocka_unit_test(test_tiny_tokenizers),
        cmocka_unit_test(test_builder_rejects),
        cmocka_unit_test(test_hf_accepts_minimal),
        cmocka_unit_test(test_hf_rejects),
        cmocka_unit_test(test_llama3_golden),
        cmocka_unit_test(test_llama2_golden),
        cmocka_unit_test(test_contractions),
        cmocka_unit_test(test_malformed_golden),
        cmocka_unit_test(test_utf8_replacement_rule),
        cmocka_unit_test(test_special_text_is_plain),
        cmocka_unit_test(test_decode_pieces),
        cmocka_unit_test(test_decode_roundtrip_random),
        cmocka_unit_test(test_encode_appends),
        cmocka_unit_test(test_long_inputs),
        cmocka_unit_test(test_section_roundtrip),
        cmocka_unit_test(test_section_rejects_corruption),
        cmocka_unit_test(test_real_section_rejects_corruption),
        cmocka_unit_test(test_builder_from_scores),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_all);
}
