/* import/tokbuild.c: building a tokenizer, export's side of tokenizer.c. Every builder ends in
 * tok_load (tokenizer.c), so a tokenizer from any source passes the same validation as one read
 * from guard.bin.
 *  - tok_from_hf: Hugging Face tokenizer.json (+ tokenizer_config.json for BOS/EOS). Only the two
 *    layouts tokenizer.c implements are accepted (Llama 3: BPE + the Split regex + ByteLevel;
 *    Llama 2: BPE + Prepend/Replace normalizer + byte fallback); anything else is refused with an
 *    error naming the file and the field.
 *  - tok_build: raw arrays from the GGUF, tiktoken and SentencePiece importers.
 *  - tok_serialize: the SEC_TOKENIZER section (layout in tokenizer.c).
 */
#include "build.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../json.h"
#include "../strtab.h"

/* ==== Serializing ==== */

/* Write the section from parallel arrays (a Tokenizer's own, or a TokSpec being built). On
 * success *blob is malloc'd. */
static int blob_write(int type, uint32_t flags, uint32_t n_tok, const char *const *text, const uint32_t *len,
                      const uint8_t *kind, uint32_t n_merges, const uint32_t *merges3, int32_t bos, int32_t eos,
                      uint8_t **blob, uint64_t *blen, char *err) {
    uint64_t text_len = 0;
    for (uint32_t i = 0; i < n_tok; i++) text_len += len[i];
    Buf b = { 0 };
    buf_put(&b, TOK_MAGIC, 8);
    buf_u32(&b, TOK_VERSION);
    buf_u32(&b, (uint32_t)type);
    buf_u32(&b, flags);
    buf_u32(&b, n_tok);
    buf_u32(&b, n_merges);
    buf_u32(&b, (uint32_t)bos);
    buf_u32(&b, (uint32_t)eos);
    buf_u32(&b, 0); /* crc, filled below */
    buf_u64(&b, text_len);
    for (uint32_t i = 0; i < n_tok; i++) buf_u32(&b, len[i]);
    buf_put(&b, kind, n_tok);
    for (uint32_t i = 0; i < n_tok; i++) buf_put(&b, text[i], len[i]);
    for (uint64_t i = 0; i < 3ull * n_merges; i++) buf_u32(&b, merges3[i]);
    if (b.oom) {
        buf_free(&b);
        return errf(err, "tokenizer: out of memory writing the section");
    }
    uint32_t crc = tok_section_crc(b.p, b.len);
    for (int k = 0; k < 4; k++) b.p[36 + k] = (uint8_t)(crc >> 8 * k);
    *blob = b.p;
    *blen = b.len;
    return 0;
}

/* From the loaded tokenizer's own arrays, through its query functions. */
int tok_serialize(const Tokenizer *t, uint8_t **blob, uint64_t *len, char *err) {
    *blob = NULL;
    *len = 0;
    uint32_t n = tok_vocab_size(t);
    const char **text = malloc((size_t)n * sizeof *text);
    uint32_t *tlen = malloc((size_t)n * sizeof *tlen);
    uint8_t *kind = malloc(n);
    int rc = -1;
    if (!text || !tlen || !kind) {
        errf(err, "tokenizer: out of memory writing the section");
    } else {
        for (uint32_t i = 0; i < n; i++) {
            text[i] = (const char *)tok_piece(t, (int32_t)i, &tlen[i]);
            kind[i] = (uint8_t)tok_kind(t, (int32_t)i);
        }
        rc = blob_write(tok_type(t), tok_ignore_merges(t) ? TOKF_IGNORE_MERGES : 0, n, text, tlen, kind, tok_n_merges(t),
                        tok_merges(t), tok_bos(t), tok_eos(t), blob, len, err);
    }
    free(text);
    free(tlen);
    free(kind);
    return rc;
}

/* ==== Building from raw arrays ==== */

/* "<0xXX>" -> XX, or -1. */
static int parse_byte_piece(const char *s, uint32_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

typedef struct {
    float score;
    uint32_t tok, l, r;
} Cand;

static int cand_cmp(const void *a, const void *b) {
    const Cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->tok != y->tok) return x->tok < y->tok ? -1 : 1;
    return x->l < y->l ? -1 : x->l > y->l;
}

/* Merges implied by scores: every split of a NORMAL token into two NORMAL tokens, best score
 * first; equal scores share a rank so encoding breaks the tie by position as SentencePiece's
 * agenda does. SPM splits only at character boundaries (its symbols are characters).
 * On success *mout is malloc'd [*nout * 3] (left, right, rank). */
static int merges_from_scores(const TokSpec *s, const uint8_t *kind, const char *const *text, const uint32_t *len,
                              uint32_t **mout, uint32_t *nout, char *err) {
    *mout = NULL;
    *nout = 0;
    Keys keys = { text, len };
    StrTab tab;
    if (strtab_init(&tab, s->n_tokens)) return errf(err, "tokenizer: out of memory");
    uint64_t n_cand = 0;
    for (uint32_t i = 0; i < s->n_tokens; i++) {
        if (kind[i] != TOKK_NORMAL) continue;
        if (isnan(s->scores[i])) {
            free(tab.slot);
            return errf(err, "tokenizer: score of token %u is NaN", i);
        }
        strtab_add(&tab, &keys, i); /* duplicates are reported by tok_load */
        n_cand += len[i] ? len[i] - 1 : 0;
    }
    Cand *c = malloc((size_t)(n_cand ? n_cand : 1) * sizeof *c);
    if (!c) {
        free(tab.slot);
        return errf(err, "tokenizer: out of memory");
    }
    uint64_t m = 0;
    for (uint32_t i = 0; i < s->n_tokens; i++) {
        if (kind[i] != TOKK_NORMAL || strtab_find(&tab, &keys, text[i], len[i]) != (int32_t)i) continue;
        for (uint32_t k = 1; k < len[i]; k++) {
            if (s->type == TOK_SPM_BPE && ((uint8_t)text[i][k] & 0xC0) == 0x80) continue;
            int32_t l = strtab_find(&tab, &keys, text[i], k), r = strtab_find(&tab, &keys, text[i] + k, len[i] - k);
            if (l >= 0 && r >= 0) c[m++] = (Cand){ s->scores[i], i, (uint32_t)l, (uint32_t)r };
        }
    }
    free(tab.slot);
    qsort(c, (size_t)m, sizeof *c, cand_cmp);
    uint32_t *out = m <= INT32_MAX ? malloc((size_t)(m ? m : 1) * 3 * sizeof *out) : NULL;
    if (!out) {
        free(c);
        return errf(err, "tokenizer: out of memory (%llu merges from scores)", (unsigned long long)m);
    }
    uint32_t rank = 0;
    for (uint64_t i = 0; i < m; i++) {
        if (i && c[i].score != c[i - 1].score) rank++;
        out[3 * i] = c[i].l, out[3 * i + 1] = c[i].r, out[3 * i + 2] = rank;
    }
    free(c);
    *mout = out;
    *nout = (uint32_t)m;
    return 0;
}

/* Every builder ends in tok_load, so a tokenizer from any source passes the same validation
 * as one read from guard.bin. */
int tok_build(Tokenizer **out, const TokSpec *s, char *err) {
    *out = NULL;
    if (s->type != TOK_LLAMA3_BPE && s->type != TOK_SPM_BPE) return errf(err, "tokenizer: unknown type %d", s->type);
    if (s->n_tokens == 0 || s->n_tokens > INT32_MAX || !s->text || !s->len)
        return errf(err, "tokenizer: empty or oversized vocabulary (%u tokens)", s->n_tokens);
    if (s->ignore_merges && s->type != TOK_LLAMA3_BPE) return errf(err, "tokenizer: ignore_merges is only supported for Llama 3 BPE");
    if (!s->merges && !s->scores && s->n_merges) return errf(err, "tokenizer: n_merges set but no merges array");
    uint8_t *kind = malloc(s->n_tokens);
    if (!kind) return errf(err, "tokenizer: out of memory");
    uint8_t bytes[256];
    for (int i = 0; i < 256; i++) bytes[i] = (uint8_t)i;
    const char **text = malloc((size_t)s->n_tokens * sizeof *text);
    uint32_t *len = malloc((size_t)s->n_tokens * sizeof *len);
    uint32_t *merges = NULL, n_merges = s->n_merges;
    uint8_t *blob = NULL;
    uint64_t blen = 0;
    int rc = -1;
    if (!text || !len) {
        errf(err, "tokenizer: out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < s->n_tokens; i++) {
        kind[i] = s->kind ? s->kind[i] : TOKK_NORMAL;
        text[i] = s->text[i];
        len[i] = s->len[i];
        if (!text[i] && len[i]) {
            errf(err, "tokenizer: token %u has no text", i);
            goto done;
        }
        if (kind[i] == TOKK_BYTE) {
            int v = parse_byte_piece(text[i], len[i]);
            if (v < 0) {
                errf(err, "tokenizer: byte token %u is \"%.*s\", not <0xXX>", i, (int)(len[i] > 32 ? 32 : len[i]), text[i]);
                goto done;
            }
            text[i] = (const char *)&bytes[v];
            len[i] = 1;
        }
    }
    if (!s->merges && s->scores) {
        if (merges_from_scores(s, kind, text, len, &merges, &n_merges, err)) goto done;
    } else if (n_merges) {
        merges = malloc((size_t)n_merges * 3 * sizeof *merges);
        if (!merges) {
            errf(err, "tokenizer: out of memory");
            goto done;
        }
        for (uint32_t i = 0; i < n_merges; i++)
            merges[3 * i] = s->merges[2 * i], merges[3 * i + 1] = s->merges[2 * i + 1], merges[3 * i + 2] = i;
    }
    if (blob_write(s->type, s->ignore_merges ? TOKF_IGNORE_MERGES : 0, s->n_tokens, text, len, kind, n_merges, merges,
                   s->bos, s->eos, &blob, &blen, err))
        goto done;
    rc = tok_load(out, blob, blen, err);
done:
    free(blob);
    free(merges);
    free(len);
    free(text);
    free(kind);
    return rc;
}

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
 * U+0100.. in byte order. This is the inverse, from the code point. */
static int bytelevel_byte(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return (int)cp;
    if (cp < 0x100 || cp >= 0x100 + 68) return -1;
    uint32_t k = cp - 0x100;
    for (int b = 0; b < 256; b++) {
        if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) continue;
        if (k-- == 0) return b;
    }
    return -1;
}

/* Byte-level strings hold only code points below U+0144 (one or two UTF-8 bytes); anything
 * else, well-formed or not, is not in the map. */
int64_t tok_bytelevel_decode(const char *s, size_t n, uint8_t *out) {
    const uint8_t *u = (const uint8_t *)s;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp = u[i++];
        if (cp >= 0x80) {
            if (cp < 0xC2 || cp > 0xDF || i == n || (u[i] & 0xC0) != 0x80) return -1;
            cp = (cp & 0x1F) << 6 | (u[i++] & 0x3F);
        }
        int b = bytelevel_byte(cp);
        if (b < 0) return -1;
        out[m++] = (uint8_t)b;
    }
    return (int64_t)m;
}

/* The Split regex of every Llama 3 / 3.1 / 3.2 tokenizer.json; any other regex is refused. */
static const char LLAMA3_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ==== Importing Hugging Face tokenizer.json ==== */

typedef struct {
    const char *path;
    const Json *j;
    char *err;
} Hf;

static const JsonNode *hf_get(const Hf *h, const JsonNode *obj, const char *key) {
    return obj && obj->type == JSON_OBJECT ? json_get(h->j, obj, key) : NULL;
}

static int hf_is_null(const JsonNode *n) { return !n || n->type == JSON_NULL; }

/* String member or NULL. */
static const char *hf_str(const Hf *h, const JsonNode *obj, const char *key) {
    const JsonNode *n = hf_get(h, obj, key);
    return n && n->type == JSON_STRING ? n->str : NULL;
}

/* Bool member: 1 / 0, or dflt when absent or null, or -1 when of another type. */
static int hf_bool(const Hf *h, const JsonNode *obj, const char *key, int dflt) {
    const JsonNode *n = hf_get(h, obj, key);
    if (hf_is_null(n)) return dflt;
    return n->type == JSON_TRUE ? 1 : n->type == JSON_FALSE ? 0 : -1;
}

/* Member key of obj is the string want, exactly (json_str_is). */
static int hf_str_is(const Hf *h, const JsonNode *obj, const char *key, const char *want) {
    return json_str_is(hf_get(h, obj, key), want);
}

/* Absent, null or "": e.g. continuing_subword_prefix, which these models never set. */
static int hf_unset(const Hf *h, const JsonNode *obj, const char *key) {
    const JsonNode *n = hf_get(h, obj, key);
    return hf_is_null(n) || (n->type == JSON_STRING && n->len == 0);
}

static const char *hf_type(const Hf *h, const JsonNode *obj) {
    const char *s = hf_str(h, obj, "type");
    return s ? s : "?";
}

static const JsonNode *hf_elem(const Hf *h, const JsonNode *arr, uint32_t i) {
    if (!arr || arr->type != JSON_ARRAY || i >= arr->len) return NULL;
    const JsonNode *c = json_first(h->j, arr);
    while (i-- && c) c = json_next(h->j, c);
    return c;
}

static int hf_is_pattern_string(const Hf *h, const JsonNode *obj, const char *want) {
    return hf_str_is(h, hf_get(h, obj, "pattern"), "String", want);
}

/* Llama 3: Sequence[Split(regex, Isolated), ByteLevel(no prefix space, no regex)]. */
static int hf_check_llama3(const Hf *h, const JsonNode *root, const JsonNode *model) {
    const JsonNode *pre = hf_get(h, root, "pre_tokenizer");
    const JsonNode *seq = hf_get(h, pre, "pretokenizers");
    const JsonNode *split = hf_elem(h, seq, 0), *bl = hf_elem(h, seq, 1);
    if (!hf_str_is(h, pre, "type", "Sequence") || !seq || seq->len != 2 || !hf_str_is(h, split, "type", "Split") ||
        !hf_str_is(h, bl, "type", "ByteLevel"))
        return errf(h->err, "%s: pre_tokenizer: unsupported (type \"%s\"); expected Sequence[Split, ByteLevel] (Llama 3) "
                            "or null (Llama 2)", h->path, hf_type(h, pre));
    if (!hf_str_is(h, hf_get(h, split, "pattern"), "Regex", LLAMA3_REGEX))
        return errf(h->err, "%s: pre_tokenizer.pretokenizers[0].pattern.Regex: not the Llama 3 regex", h->path);
    if (!hf_str_is(h, split, "behavior", "Isolated") || hf_bool(h, split, "invert", 0) != 0)
        return errf(h->err, "%s: pre_tokenizer.pretokenizers[0]: behavior must be Isolated, invert false", h->path);
    if (hf_bool(h, bl, "add_prefix_space", 1) != 0 || hf_bool(h, bl, "use_regex", 1) != 0) /* HF defaults: true */
        return errf(h->err, "%s: pre_tokenizer.pretokenizers[1]: ByteLevel must have add_prefix_space and use_regex false",
                    h->path);
    const JsonNode *norm = hf_get(h, root, "normalizer");
    if (!hf_is_null(norm))
        return errf(h->err, "%s: normalizer: unsupported (type \"%s\"); Llama 3 has none", h->path, hf_type(h, norm));
    const JsonNode *dec = hf_get(h, root, "decoder");
    if (!hf_str_is(h, dec, "type", "ByteLevel"))
        return errf(h->err, "%s: decoder: unsupported (type \"%s\"); expected ByteLevel", h->path, hf_type(h, dec));
    if (hf_bool(h, model, "byte_fallback", 0) != 0)
        return errf(h->err, "%s: model.byte_fallback: must be false for a ByteLevel tokenizer", h->path);
    if (hf_bool(h, model, "ignore_merges", 0) < 0) return errf(h->err, "%s: model.ignore_merges: not a boolean", h->path);
    return 0;
}

/* Llama 2: normalizer Sequence[Prepend("▁"), Replace(" " -> "▁")], no pre-tokenizer, byte
 * fallback, decoder Sequence[Replace("▁" -> " "), ByteFallback, Fuse, Strip(" ", 1, 0)]. */
static int hf_check_spm(const Hf *h, const JsonNode *root, const JsonNode *model) {
    const JsonNode *norm = hf_get(h, root, "normalizer");
    const JsonNode *ns = hf_get(h, norm, "normalizers");
    const JsonNode *n0 = hf_elem(h, ns, 0), *n1 = hf_elem(h, ns, 1);
    if (!hf_str_is(h, norm, "type", "Sequence") || !ns || ns->len != 2 || !hf_str_is(h, n0, "type", "Prepend") ||
        !hf_str_is(h, n0, "prepend", TOK_SPM_SPACE) || !hf_str_is(h, n1, "type", "Replace") ||
        !hf_is_pattern_string(h, n1, " ") || !hf_str_is(h, n1, "content", TOK_SPM_SPACE))
        return errf(h->err, "%s: normalizer: unsupported (type \"%s\"); with no pre_tokenizer only Llama 2's "
                            "Sequence[Prepend(\"\xE2\x96\x81\"), Replace(\" \", \"\xE2\x96\x81\")] is understood",
                    h->path, hf_type(h, norm));
    const JsonNode *dec = hf_get(h, root, "decoder");
    const JsonNode *ds = hf_get(h, dec, "decoders");
    const JsonNode *d0 = hf_elem(h, ds, 0), *d1 = hf_elem(h, ds, 1), *d2 = hf_elem(h, ds, 2), *d3 = hf_elem(h, ds, 3);
    const JsonNode *d3s = hf_get(h, d3, "start"), *d3e = hf_get(h, d3, "stop");
    int64_t st = -1, sp = -1;
    if (!hf_str_is(h, dec, "type", "Sequence") || !ds || ds->len != 4 || !hf_str_is(h, d0, "type", "Replace") ||
        !hf_is_pattern_string(h, d0, TOK_SPM_SPACE) || !hf_str_is(h, d0, "content", " ") ||
        !hf_str_is(h, d1, "type", "ByteFallback") || !hf_str_is(h, d2, "type", "Fuse") ||
        !hf_str_is(h, d3, "type", "Strip") || !hf_str_is(h, d3, "content", " ") || !d3s || json_int(d3s, 0, 9, &st) ||
        !d3e || json_int(d3e, 0, 9, &sp) || st != 1 || sp != 0)
        return errf(h->err, "%s: decoder: unsupported (type \"%s\"); expected Llama 2's Sequence[Replace, ByteFallback, "
                            "Fuse, Strip]", h->path, hf_type(h, dec));
    if (hf_bool(h, model, "byte_fallback", 0) != 1)
        return errf(h->err, "%s: model.byte_fallback: must be true for a SentencePiece tokenizer", h->path);
    if (hf_bool(h, model, "ignore_merges", 0) != 0)
        return errf(h->err, "%s: model.ignore_merges: only supported for Llama 3 (ByteLevel) tokenizers", h->path);
    return 0;
}

/* Split a merges entry ("a b" or ["a", "b"]) into two strings. */
static int hf_merge_parts(const Hf *h, const JsonNode *m, const char **a, uint32_t *an, const char **b, uint32_t *bn) {
    if (m->type == JSON_ARRAY && m->len == 2) {
        const JsonNode *x = json_first(h->j, m), *y = json_next(h->j, x);
        if (x->type != JSON_STRING || y->type != JSON_STRING) return -1;
        *a = x->str, *an = x->len, *b = y->str, *bn = y->len;
        return 0;
    }
    if (m->type != JSON_STRING) return -1;
    const char *sp = memchr(m->str, ' ', m->len);
    if (!sp || memchr(sp + 1, ' ', m->len - (uint32_t)(sp + 1 - m->str))) return -1;
    *a = m->str, *an = (uint32_t)(sp - m->str), *b = sp + 1, *bn = m->len - *an - 1;
    return 0;
}

/* bos_token / eos_token of tokenizer_config.json: a string, {"content": ...}, or null. */
static int hf_config_token(const Hf *h, const JsonNode *cfg, const char *key, const char *const *text,
                           const uint32_t *len, const uint8_t *kind, uint32_t n_tok, int32_t *id) {
    *id = -1;
    const JsonNode *n = hf_get(h, cfg, key);
    if (hf_is_null(n)) return 0;
    if (n->type == JSON_OBJECT) n = hf_get(h, n, "content");
    if (!n || n->type != JSON_STRING) return errf(h->err, "%s: %s: expected a string or {\"content\": ...}", h->path, key);
    for (uint32_t i = 0; i < n_tok; i++)
        if (kind[i] == TOKK_SPECIAL && len[i] == n->len && memcmp(text[i], n->str, n->len) == 0) {
            *id = (int32_t)i;
            return 0;
        }
    return errf(h->err, "%s: %s: \"%s\" is not a special token of the tokenizer", h->path, key, n->str);
}

/* Everything tok_from_hf allocates, freed in one place. */
typedef struct {
    Hf h;
    Json j, cj;
    char *src, *csrc;
    int type;
    uint32_t n_vocab, n_tok, n_merges;
    const char **text;  /* [n_tok] token text handed to tok_build */
    uint32_t *len;      /* [n_tok] */
    uint8_t *kind;      /* [n_tok] */
    const char **jtext; /* [n_vocab] vocab keys as written (byte-level form): merges name these */
    uint32_t *jlen;     /* [n_vocab] */
    uint32_t *merges;   /* [n_merges * 2] */
    uint8_t *raw;       /* decoded byte-level strings */
    int32_t bos, eos;
} HfLoad;

/* Vocabulary: model.vocab ids must be exactly 0..n_vocab-1; added tokens (all special)
 * either repeat a vocab entry (Llama 2's <unk>, <s>, </s>) or continue the id range. */
static int hf_vocab(HfLoad *L, const JsonNode *model, const JsonNode *root) {
    const Hf *h = &L->h;
    const JsonNode *vocab = hf_get(h, model, "vocab"), *added = hf_get(h, root, "added_tokens");
    if (!vocab || vocab->type != JSON_OBJECT || vocab->len == 0)
        return errf(h->err, "%s: model.vocab: missing or empty", h->path);
    if (!hf_is_null(added) && added->type != JSON_ARRAY) return errf(h->err, "%s: added_tokens: not an array", h->path);
    uint32_t n_vocab = vocab->len, n_tok = n_vocab, n_added = hf_is_null(added) ? 0 : added->len;
    if (n_added)
        JSON_FOR(&L->j, added, a) {
            int64_t id;
            const JsonNode *idn = hf_get(h, a, "id");
            if (!idn || json_int(idn, 0, INT32_MAX - 1, &id))
                return errf(h->err, "%s: added_tokens: an entry has no valid id", h->path);
            if ((uint64_t)id >= n_tok) n_tok = (uint32_t)id + 1;
        }
    if (n_tok - n_vocab > n_added)
        return errf(h->err, "%s: added_tokens: ids leave gaps after the %u vocab entries (up to id %u)", h->path, n_vocab,
                    n_tok - 1);
    L->n_vocab = n_vocab, L->n_tok = n_tok;
    L->text = calloc(n_tok, sizeof *L->text);
    L->len = calloc(n_tok, sizeof *L->len);
    L->kind = calloc(n_tok, 1);
    if (!L->text || !L->len || !L->kind) return errf(h->err, "%s: out of memory", h->path);
    JSON_FOR(&L->j, vocab, v) {
        int64_t id;
        if (json_int(v, 0, (int64_t)n_vocab - 1, &id))
            return errf(h->err, "%s: model.vocab[\"%s\"]: id is not an integer in [0, %u)", h->path, v->key, n_vocab);
        if (L->text[id]) return errf(h->err, "%s: model.vocab: id %lld appears twice", h->path, (long long)id);
        L->text[id] = v->key, L->len[id] = v->keylen;
    }
    if (n_added)
        JSON_FOR(&L->j, added, a) {
            int64_t id;
            json_int(hf_get(h, a, "id"), 0, INT32_MAX - 1, &id);
            const JsonNode *c = hf_get(h, a, "content");
            if (!c || c->type != JSON_STRING || c->len == 0)
                return errf(h->err, "%s: added_tokens: id %lld has no content", h->path, (long long)id);
            /* HF matches a non-special added token inside plain text; we never do, so refuse. */
            if (hf_bool(h, a, "special", 0) != 1)
                return errf(h->err, "%s: added_tokens: \"%s\" (id %lld) is not special; non-special added tokens are "
                                    "not supported", h->path, c->str, (long long)id);
            if ((uint64_t)id < n_vocab && (L->len[id] != c->len || memcmp(L->text[id], c->str, c->len) != 0))
                return errf(h->err, "%s: added_tokens: \"%s\" (id %lld) differs from model.vocab's entry for that id",
                            h->path, c->str, (long long)id);
            if ((uint64_t)id >= n_vocab && L->text[id])
                return errf(h->err, "%s: added_tokens: id %lld appears twice", h->path, (long long)id);
            L->text[id] = c->str, L->len[id] = c->len, L->kind[id] = TOKK_SPECIAL;
        }
    for (uint32_t i = n_vocab; i < n_tok; i++)
        if (!L->text[i]) return errf(h->err, "%s: added_tokens: no token has id %u (ids must be contiguous)", h->path, i);
    L->jtext = malloc((size_t)n_vocab * sizeof *L->jtext);
    L->jlen = malloc((size_t)n_vocab * sizeof *L->jlen);
    if (!L->jtext || !L->jlen) return errf(h->err, "%s: out of memory", h->path);
    memcpy(L->jtext, L->text, (size_t)n_vocab * sizeof *L->jtext);
    memcpy(L->jlen, L->len, (size_t)n_vocab * sizeof *L->jlen);
    return 0;
}

/* model.merges, "a b" strings or ["a", "b"] pairs, resolved against the vocab keys. */
static int hf_merges(HfLoad *L, const JsonNode *model) {
    const Hf *h = &L->h;
    const JsonNode *ml = hf_get(h, model, "merges");
    if (!ml || ml->type != JSON_ARRAY) return errf(h->err, "%s: model.merges: missing or not an array", h->path);
    Keys jk = { L->jtext, L->jlen };
    StrTab tab;
    L->merges = malloc((size_t)(ml->len ? ml->len : 1) * 2 * sizeof *L->merges);
    if (!L->merges || strtab_init(&tab, L->n_vocab)) return errf(h->err, "%s: out of memory", h->path);
    for (uint32_t i = 0; i < L->n_vocab; i++) strtab_add(&tab, &jk, i); /* JSON keys: duplicates caught by tok_load */
    uint32_t nm = 0;
    JSON_FOR(&L->j, ml, m) {
        const char *a, *b;
        uint32_t an, bn;
        int32_t l = -1, r = -1;
        if (hf_merge_parts(h, m, &a, &an, &b, &bn) == 0) l = strtab_find(&tab, &jk, a, an), r = strtab_find(&tab, &jk, b, bn);
        if (l < 0 || r < 0) {
            free(tab.slot);
            return errf(h->err, "%s: model.merges[%u]: not a pair of vocab entries", h->path, nm);
        }
        L->merges[2 * nm] = (uint32_t)l, L->merges[2 * nm + 1] = (uint32_t)r;
        nm++;
    }
    free(tab.slot);
    L->n_merges = nm;
    return 0;
}

/* Token text as the engine wants it: byte-level vocab entries become raw bytes; under byte
 * fallback the "<0xXX>" pieces become BYTE tokens. */
static int hf_token_text(HfLoad *L) {
    const Hf *h = &L->h;
    uint64_t raw_len = 0;
    for (uint32_t i = 0; i < L->n_vocab; i++) raw_len += L->len[i];
    L->raw = malloc((size_t)raw_len + 1);
    if (!L->raw) return errf(h->err, "%s: out of memory", h->path);
    uint64_t ro = 0;
    for (uint32_t i = 0; i < L->n_vocab; i++) {
        if (L->kind[i] == TOKK_SPECIAL) continue;
        if (L->type == TOK_LLAMA3_BPE) {
            int64_t k = tok_bytelevel_decode(L->text[i], L->len[i], L->raw + ro);
            if (k <= 0) return errf(h->err, "%s: model.vocab[\"%s\"]: not a byte-level (GPT-2) string", h->path, L->text[i]);
            L->text[i] = (const char *)L->raw + ro, L->len[i] = (uint32_t)k;
            ro += (uint64_t)k;
        } else if (parse_byte_piece(L->text[i], L->len[i]) >= 0 && L->text[i][3] < 'a' && L->text[i][4] < 'a') {
            L->kind[i] = TOKK_BYTE; /* HF looks up format!("<0x{:02X}>"): uppercase only */
        }
    }
    return 0;
}

static int hf_config(HfLoad *L, const char *path) {
    uint64_t n;
    if (read_text_file(path, 64ull << 20, &L->csrc, &n, L->h.err)) return -1;
    if (json_parse(&L->cj, L->csrc, (size_t)n, L->h.err)) {
        char m[ERRLEN];
        snprintf(m, sizeof m, "%s", L->h.err);
        return errf(L->h.err, "%s: %s", path, m);
    }
    Hf hc = { path, &L->cj, L->h.err };
    const JsonNode *root = json_root(&L->cj);
    if (root->type != JSON_OBJECT) return errf(L->h.err, "%s: not a JSON object", path);
    if (hf_config_token(&hc, root, "bos_token", L->text, L->len, L->kind, L->n_tok, &L->bos) ||
        hf_config_token(&hc, root, "eos_token", L->text, L->len, L->kind, L->n_tok, &L->eos))
        return -1;
    return 0;
}

static int hf_parse(HfLoad *L, Tokenizer **out, const char *config_path) {
    const Hf *h = &L->h;
    char *err = h->err;
    uint64_t n;
    if (read_text_file(h->path, 1ull << 30, &L->src, &n, err)) return -1;
    if (json_parse(&L->j, L->src, (size_t)n, err)) {
        char m[ERRLEN];
        snprintf(m, sizeof m, "%s", err);
        return errf(err, "%s: %s", h->path, m);
    }
    const JsonNode *root = json_root(&L->j), *model = hf_get(h, root, "model");
    if (root->type != JSON_OBJECT || !model || model->type != JSON_OBJECT)
        return errf(err, "%s: model: missing (not a Hugging Face tokenizer.json)", h->path);
    if (!hf_str_is(h, model, "type", "BPE"))
        return errf(err, "%s: model.type: \"%s\" is not supported; only BPE (Llama 2 and 3) is", h->path, hf_type(h, model));
    if (!hf_is_null(hf_get(h, model, "dropout")))
        return errf(err, "%s: model.dropout: must be null (BPE dropout is not supported)", h->path);
    if (!hf_unset(h, model, "continuing_subword_prefix") || !hf_unset(h, model, "end_of_word_suffix"))
        return errf(err, "%s: model.continuing_subword_prefix / end_of_word_suffix: must be null", h->path);
    L->type = hf_is_null(hf_get(h, root, "pre_tokenizer")) ? TOK_SPM_BPE : TOK_LLAMA3_BPE;
    if ((L->type == TOK_LLAMA3_BPE ? hf_check_llama3 : hf_check_spm)(h, root, model)) return -1;
    if (hf_vocab(L, model, root) || hf_merges(L, model) || hf_token_text(L)) return -1;
    if (config_path && hf_config(L, config_path)) return -1;
    TokSpec spec = { .type = L->type, .n_tokens = L->n_tok, .text = L->text, .len = L->len, .kind = L->kind,
                     .n_merges = L->n_merges, .merges = L->merges,
                     .ignore_merges = hf_bool(h, model, "ignore_merges", 0) == 1, .bos = L->bos, .eos = L->eos };
    if (tok_build(out, &spec, err)) {
        char m[ERRLEN];
        snprintf(m, sizeof m, "%s", err);
        return errf(err, "%s: %s", h->path, m);
    }
    return 0;
}

int tok_from_hf(Tokenizer **out, const char *tokenizer_json_path, const char *tokenizer_config_path, char *err) {
    *out = NULL;
    HfLoad L = { .h = { tokenizer_json_path, NULL, err }, .bos = -1, .eos = -1 };
    L.h.j = &L.j;
    int rc = hf_parse(&L, out, tokenizer_config_path);
    json_free(&L.j);
    json_free(&L.cj);
    free(L.src);
    free(L.csrc);
    free(L.text);
    free(L.len);
    free(L.kind);
    free(L.jtext);
    free(L.jlen);
    free(L.merges);
    free(L.raw);
    return rc;
}
