/* tokenizer.c: exact Llama 3, Llama 4 and Llama 2 tokenization, loaded from the guard.bin tokenizer
 * section. Building that section (from a tokenizer.json, or from the raw arrays of the GGUF,
 * tiktoken and SentencePiece importers) is export's job: import/tokbuild.c.
 *
 * Mirrors:
 *  - Llama 4: the same byte-level BPE (tiktoken's, for Meta's Llama 4 rank file) behind the o200k
 *    regex (written out above pretok_end_o200k(), which implements it by hand; import/tokbuild.c
 *    recognises it in a tokenizer.json), letters split by General_Category, marks counted with
 *    them (unicode_tables.c's second table). Checked against Python's regex module on 14k random
 *    strings of every class, beside the fixture goldens (tests/test_lg4.c).
 *  - Llama 3: Hugging Face tokenizers' BPE model with ignore_merges, behind the Split pre-tokenizer
 *    regex and the ByteLevel pre-tokenizer (= tiktoken's encoder for Meta's rank file). The
 *    regex
 *      (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *      \s*[\r\n]+|\s+(?!\S)|\s+
 *    is implemented by hand in pretok_end(), alternative by alternative, with Oniguruma's
 *    backtracking and case folding worked out (\s is Unicode White_Space; "'ſ" is a contraction).
 *    Checked against libonig 6.9.8 (the engine HF tokenizers uses) on 300k random strings.
 *    Classes come from unicode_tables.c.
 *  - Llama 2: SentencePiece BPE, as HF's tokenizer.json for Llama 2 states it: prepend U+2581,
 *    spaces to U+2581, no pre-tokenization, characters missing from the vocabulary fall back to
 *    <0xXX> byte pieces.
 *  All run lowest-rank-first BPE (ties: leftmost pair first) with a binary heap over adjacent
 *  pairs and a linked list of symbols, so a word of n symbols costs O(n log n).
 *
 * Non-goals: parsing special-token text in the input (tok_encode is plain text only; the prompt
 * template asks for special ids by name); Unicode normalization (neither model has any);
 * SentencePiece without byte fallback, user-defined or unused pieces; BPE dropout; other
 * tokenizer.json layouts, e.g. Llama 2 converted with legacy=false (a Metaspace pre-tokenizer,
 * which differs from SentencePiece on leading spaces): refused with an error naming the field,
 * never guessed. Decoding gives bytes, not validated text; special tokens decode to their text.
 *
 * ==== The SEC_TOKENIZER section of guard.bin (all integers little-endian, no padding) ====
 *
 *   offset  size          field
 *   0       8             magic "GUARDTOK"
 *   8       4             version = 1
 *   12      4             type: 1 = TOK_LLAMA3_BPE, 2 = TOK_SPM_BPE
 *   16      4             flags: bit 0 = ignore_merges, bit 1 = o200k pre-tokenizer (Llama 4);
 *                         both Llama 3 BPE only; other bits must be 0
 *   20      4             n_tokens (vocabulary size including special tokens), >= 1
 *   24      4             n_merges
 *   28      4             bos id (int32, -1 = none)
 *   32      4             eos id (int32, -1 = none)
 *   36      4             CRC-32 (zlib) of the whole section with these 4 bytes taken as 0
 *   40      8             text_bytes = sum of all token lengths
 *   48      4*n_tokens    len[i]: byte length of token i, >= 1
 *   ..      n_tokens      kind[i]: 0 NORMAL, 1 SPECIAL, 2 BYTE (SPM only; len 1, the raw byte)
 *   ..      text_bytes    token bytes back to back, in id order: raw bytes (Llama 3), U+2581
 *                         pieces (SPM), literal text (SPECIAL)
 *   ..      12*n_merges   (left id, right id, rank) per merge, ranks non-decreasing; equal
 *                         ranks are ties broken by position (SentencePiece scores)
 *   The section is exactly this long. tok_load checks every field: magic, version, then the
 *   CRC (a flipped bit would silently change tokenization, and a safety classifier must not
 *   run on that); sizes in 64-bit arithmetic against the section size; kinds; NORMAL tokens
 *   unique and SPECIAL texts unique; all 256 single bytes present (one-byte NORMAL tokens for
 *   Llama 3, BYTE tokens for SPM); bos/eos in range; every merge joins two NORMAL tokens whose
 *   concatenation is a NORMAL token (the result is recomputed, not stored), no pair repeated.
 *   Every allocation is proportional to the section size.
 */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strtab.h"

/* One array, so spm_char can tell the space it substituted by its address. */
static const char SPM_SPACE[] = TOK_SPM_SPACE;

/* ==== Hash tables (StrTab, the string -> id table, is in strtab.h) ==== */

/* (left, right) -> (rank, result). Ids are < 2^31, so key ~0 marks an empty slot. */
typedef struct {
    uint64_t key;
    uint32_t rank, result;
} MergeSlot;

typedef struct {
    MergeSlot *slot;
    uint64_t mask;
    int shift;
} MergeTab;

static inline uint64_t pair_key(int32_t l, int32_t r) { return (uint64_t)(uint32_t)l << 32 | (uint32_t)r; }
static inline uint64_t pair_hash(const MergeTab *m, uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) >> m->shift; }

static int mergetab_init(MergeTab *m, uint64_t n) {
    uint64_t c = table_size(n);
    m->slot = malloc((size_t)c * sizeof *m->slot);
    if (!m->slot) return -1;
    for (uint64_t i = 0; i < c; i++) m->slot[i].key = ~0ull;
    m->mask = c - 1;
    m->shift = 64;
    while ((1ull << (64 - m->shift)) < c) m->shift--;
    return 0;
}

static const MergeSlot *merge_find(const MergeTab *m, int32_t l, int32_t r) {
    uint64_t key = pair_key(l, r);
    for (uint64_t i = pair_hash(m, key);; i = (i + 1) & m->mask) {
        if (m->slot[i].key == key) return &m->slot[i];
        if (m->slot[i].key == ~0ull) return NULL;
    }
}

/* Returns 0 when inserted, -1 when the pair is already present. */
static int merge_add(MergeTab *m, int32_t l, int32_t r, uint32_t rank, uint32_t result) {
    uint64_t key = pair_key(l, r);
    for (uint64_t i = pair_hash(m, key);; i = (i + 1) & m->mask) {
        if (m->slot[i].key == key) return -1;
        if (m->slot[i].key == ~0ull) {
            m->slot[i] = (MergeSlot){ .key = key, .rank = rank, .result = result };
            return 0;
        }
    }
}

/* ==== The Tokenizer ==== */

struct Tokenizer {
    int type;                /* TOK_LLAMA3_BPE / TOK_SPM_BPE */
    uint32_t flags;          /* TOKF_* */
    uint32_t n_tokens, n_merges;
    int32_t bos, eos;
    char *text;              /* [text_len] every token's bytes back to back, owned */
    uint64_t text_len;
    const char **tptr;       /* [n_tokens] token i's bytes, into text */
    uint32_t *tlen;          /* [n_tokens] */
    uint8_t *kind;           /* [n_tokens] TOKK_* */
    uint32_t *merges;        /* [n_merges * 3] left, right, rank: as loaded, for tok_serialize (import/) */
    int32_t byte_tok[256];   /* Llama 3: the one-byte NORMAL token; SPM: the <0xXX> BYTE token */
    int32_t ascii_tok[128];  /* NORMAL token of each ASCII character or -1: SPM symbol lookup */
    int32_t spm_space;       /* NORMAL token "▁" or -1 */
    StrTab normal;           /* NORMAL tokens by bytes: BPE symbols and ignore_merges words */
    StrTab special;          /* SPECIAL tokens by text: tok_special_id */
    MergeTab mt;
};

static inline Keys tok_keys(const Tokenizer *t) { return (Keys){ .text = t->tptr, .len = t->tlen }; }

void tok_free(Tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->tptr);
    free(t->tlen);
    free(t->kind);
    free(t->merges);
    free(t->normal.slot);
    free(t->special.slot);
    free(t->mt.slot);
    free(t);
}

int tok_type(const Tokenizer *t) { return t->type; }
int tok_pretok(const Tokenizer *t) { return t->flags & TOKF_O200K ? TOK_PRETOK_O200K : TOK_PRETOK_LLAMA3; }
uint32_t tok_vocab_size(const Tokenizer *t) { return t->n_tokens; }
uint32_t tok_n_merges(const Tokenizer *t) { return t->n_merges; }
int32_t tok_bos(const Tokenizer *t) { return t->bos; }
int32_t tok_eos(const Tokenizer *t) { return t->eos; }

int32_t tok_special_id(const Tokenizer *t, const char *text) {
    if (!text) return -1;
    Keys k = tok_keys(t);
    return strtab_find(&t->special, &k, text, strlen(text));
}

int32_t tok_piece_id(const Tokenizer *t, const void *s, size_t n) {
    Keys k = tok_keys(t);
    return s || !n ? strtab_find(&t->normal, &k, s, n) : -1;
}

int tok_kind(const Tokenizer *t, int32_t id) {
    return id >= 0 && (uint32_t)id < t->n_tokens ? t->kind[id] : -1;
}

const uint8_t *tok_piece(const Tokenizer *t, int32_t id, uint32_t *len) {
    if (id < 0 || (uint32_t)id >= t->n_tokens) return NULL;
    if (len) *len = t->tlen[id];
    return (const uint8_t *)t->tptr[id];
}

const uint32_t *tok_merges(const Tokenizer *t) { return t->merges; }
int tok_ignore_merges(const Tokenizer *t) { return (t->flags & TOKF_IGNORE_MERGES) != 0; }

/* ==== Loading the section (untrusted bytes) ==== */

uint32_t tok_section_crc(const uint8_t *p, uint64_t len) {
    static const uint8_t zero[4];
    uint32_t c = crc32_update(0, p, 36);
    c = crc32_update(c, zero, 4);
    return crc32_update(c, p + 40, (size_t)(len - 40));
}

static int load_fail(Tokenizer *t, int rc) {
    tok_free(t);
    return rc;
}

int tok_load(Tokenizer **out, const uint8_t *blob, uint64_t len, char *err) {
    *out = NULL;
    if (!blob || len < TOK_HEADER)
        return errf(err, "tokenizer: %llu bytes, shorter than its %u-byte header", (unsigned long long)len,
                    TOK_HEADER);
    if (memcmp(blob, TOK_MAGIC, 8) != 0) return errf(err, "tokenizer: bad magic (expected \"%s\")", TOK_MAGIC);
    uint32_t version = ld_u32(blob + 8), type = ld_u32(blob + 12), flags = ld_u32(blob + 16);
    uint32_t n_tok = ld_u32(blob + 20), n_merges = ld_u32(blob + 24), crc = ld_u32(blob + 36);
    int32_t bos = (int32_t)ld_u32(blob + 28), eos = (int32_t)ld_u32(blob + 32);
    uint64_t text_len = ld_u64(blob + 40);
    if (version != TOK_VERSION)
        return errf(err, "tokenizer: version %u, this build reads version %u", version, TOK_VERSION);
    if (type != TOK_LLAMA3_BPE && type != TOK_SPM_BPE) return errf(err, "tokenizer: unknown type %u", type);
    if (flags & ~(TOKF_IGNORE_MERGES | TOKF_O200K)) return errf(err, "tokenizer: unknown flags 0x%x", flags);
    if (flags && type != TOK_LLAMA3_BPE)
        return errf(err, "tokenizer: flags ignore_merges and o200k are only defined for Llama 3 BPE");
    if (crc != tok_section_crc(blob, len)) return errf(err, "tokenizer: checksum mismatch (corrupted)");
    if (n_tok == 0 || n_tok > INT32_MAX) return errf(err, "tokenizer: n_tokens %u out of range", n_tok);
    if (n_merges > INT32_MAX) return errf(err, "tokenizer: n_merges %u out of range", n_merges);
    uint64_t need = TOK_HEADER, merge_bytes;
    if (!add_u64(need, (uint64_t)n_tok * 5, &need) || !add_u64(need, text_len, &need) ||
        !mul_u64(n_merges, 12, &merge_bytes) || !add_u64(need, merge_bytes, &need))
        return errf(err, "tokenizer: counts overflow (%u tokens, %llu text bytes, %u merges)", n_tok,
                    (unsigned long long)text_len, n_merges);
    if (need != len)
        return errf(err, "tokenizer: %llu bytes, but its counts (%u tokens, %llu text bytes, %u merges) need %llu",
                    (unsigned long long)len, n_tok, (unsigned long long)text_len, n_merges, (unsigned long long)need);
    if (bos < -1 || bos >= (int64_t)n_tok) return errf(err, "tokenizer: bos id %d out of range", bos);
    if (eos < -1 || eos >= (int64_t)n_tok) return errf(err, "tokenizer: eos id %d out of range", eos);

    const uint8_t *lens = blob + TOK_HEADER, *kinds = lens + (uint64_t)n_tok * 4, *text = kinds + n_tok;
    const uint8_t *mrec = text + text_len;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < n_tok; i++) sum += ld_u32(lens + 4ull * i); /* < 2^32 * 2^31: no overflow */
    if (sum != text_len)
        return errf(err, "tokenizer: token lengths add up to %llu, header says %llu", (unsigned long long)sum,
                    (unsigned long long)text_len);

    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) return errf(err, "tokenizer: out of memory");
    t->type = (int)type;
    t->flags = flags;
    t->n_tokens = n_tok;
    t->n_merges = n_merges;
    t->bos = bos;
    t->eos = eos;
    t->text_len = text_len;
    t->text = malloc((size_t)text_len + 1);
    t->tptr = malloc((size_t)n_tok * sizeof *t->tptr);
    t->tlen = malloc((size_t)n_tok * sizeof *t->tlen);
    t->kind = malloc(n_tok);
    t->merges = malloc((size_t)n_merges * 3 * sizeof *t->merges + 1);
    if (!t->text || !t->tptr || !t->tlen || !t->kind || !t->merges || strtab_init(&t->normal, n_tok) ||
        strtab_init(&t->special, n_tok) || mergetab_init(&t->mt, n_merges))
        return load_fail(t, errf(err, "tokenizer: out of memory"));
    memcpy(t->text, text, (size_t)text_len);
    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;

    Keys keys = tok_keys(t);
    uint64_t off = 0;
    uint32_t max_len = 0;
    for (uint32_t i = 0; i < n_tok; i++) {
        uint32_t n = ld_u32(lens + 4ull * i);
        t->tptr[i] = t->text + off;
        t->tlen[i] = n;
        t->kind[i] = kinds[i];
        off += n;
        if (n > max_len) max_len = n;
        if (n == 0) return load_fail(t, errf(err, "tokenizer: token %u is empty", i));
        int32_t dup = -1;
        switch (kinds[i]) {
        case TOKK_NORMAL:
            dup = strtab_add(&t->normal, &keys, i);
            if (type == TOK_LLAMA3_BPE && n == 1) t->byte_tok[(uint8_t)t->tptr[i][0]] = (int32_t)i;
            break;
        case TOKK_SPECIAL: dup = strtab_add(&t->special, &keys, i); break;
        case TOKK_BYTE: {
            if (type != TOK_SPM_BPE) return load_fail(t, errf(err, "tokenizer: byte token %u in a Llama 3 vocabulary", i));
            if (n != 1) return load_fail(t, errf(err, "tokenizer: byte token %u has %u bytes, not 1", i, n));
            uint8_t b = (uint8_t)t->tptr[i][0];
            if (t->byte_tok[b] >= 0)
                return load_fail(t, errf(err, "tokenizer: byte 0x%02X has two tokens (%d and %u)", b, t->byte_tok[b], i));
            t->byte_tok[b] = (int32_t)i;
            break;
        }
        default: return load_fail(t, errf(err, "tokenizer: token %u has unknown kind %u", i, kinds[i]));
        }
        if (dup >= 0) return load_fail(t, errf(err, "tokenizer: token %u repeats token %d", i, dup));
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        t->ascii_tok[c] = strtab_find(&t->normal, &keys, &ch, 1);
    }
    t->spm_space = strtab_find(&t->normal, &keys, SPM_SPACE, 3);
    for (int b = 0; b < 256; b++)
        if (t->byte_tok[b] < 0)
            return load_fail(t, errf(err, "tokenizer: no %s token for byte 0x%02X",
                                     type == TOK_SPM_BPE ? "<0xXX> fallback" : "single-byte", b));

    /* Merges: the result is recomputed from the two strings instead of being stored, so a
     * section cannot claim a merge that BPE over the vocabulary would not produce. */
    char *cat = malloc(2 * (size_t)max_len);
    if (!cat) return load_fail(t, errf(err, "tokenizer: out of memory"));
    uint32_t prev_rank = 0;
    enum { AHEAD = 16 }; /* the table's slots are random DRAM reads: request them early */
    for (uint32_t i = 0; i < n_merges; i++) {
        if (i + AHEAD < n_merges) {
            const uint8_t *q = mrec + 12ull * (i + AHEAD);
            __builtin_prefetch(&t->mt.slot[pair_hash(&t->mt, pair_key((int32_t)ld_u32(q), (int32_t)ld_u32(q + 4)))], 1);
        }
        const uint8_t *p = mrec + 12ull * i;
        uint32_t l = ld_u32(p), r = ld_u32(p + 4), rank = ld_u32(p + 8);
        const char *why = NULL;
        int32_t res = -1;
        if (l >= n_tok || r >= n_tok) why = "token id out of range";
        else if (t->kind[l] != TOKK_NORMAL || t->kind[r] != TOKK_NORMAL) why = "joins a special or byte token";
        else if (rank < prev_rank) why = "ranks are not in order";
        else {
            memcpy(cat, t->tptr[l], t->tlen[l]);
            memcpy(cat + t->tlen[l], t->tptr[r], t->tlen[r]);
            res = strtab_find(&t->normal, &keys, cat, (size_t)t->tlen[l] + t->tlen[r]);
            if (res < 0) why = "the joined string is not a token";
            else if (merge_add(&t->mt, (int32_t)l, (int32_t)r, rank, (uint32_t)res)) why = "the pair is repeated";
        }
        if (why) {
            free(cat);
            return load_fail(t, errf(err, "tokenizer: merge %u (%u, %u): %s", i, l, r, why));
        }
        t->merges[3 * i] = l, t->merges[3 * i + 1] = r, t->merges[3 * i + 2] = rank;
        prev_rank = rank;
    }
    free(cat);
    *out = t;
    return 0;
}

/* ==== UTF-8 ==== */

/* Length of the well-formed UTF-8 sequence at s[i..n), or 0 with *bad = the length of its maximal
 * ill-formed prefix, which gets one U+FFFD (Unicode's "maximal subpart" practice, as Python's
 * errors='replace' and the WHATWG decoder do). */
static size_t utf8_seq(const uint8_t *s, size_t n, size_t i, size_t *bad) {
    uint8_t c = s[i];
    if (c < 0x80) return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else {
        *bad = 1;
        return 0;
    }
    size_t k = 1;
    for (; k < need && i + k < n; k++) {
        uint8_t d = s[i + k];
        if (k == 1 ? d < lo || d > hi : d < 0x80 || d > 0xBF) break;
    }
    if (k == need) return need;
    *bad = k;
    return 0;
}

/* text with ill-formed sequences replaced: text itself when already valid, else a malloc'd copy
 * in *owned. NULL only when out of memory. */
static const uint8_t *utf8_sanitize(const uint8_t *s, size_t n, size_t *outn, uint8_t **owned) {
    *owned = NULL;
    *outn = n;
    size_t i = 0, bad;
    while (i < n) {
        size_t k = utf8_seq(s, n, i, &bad);
        if (!k) break;
        i += k;
    }
    if (i == n) return s;
    uint8_t *o = malloc(3 * n); /* one U+FFFD (3 bytes) per bad byte at worst */
    if (!o) return NULL;
    memcpy(o, s, i);
    size_t m = i;
    while (i < n) {
        size_t k = utf8_seq(s, n, i, &bad);
        if (k) {
            memcpy(o + m, s + i, k);
            m += k, i += k;
        } else {
            memcpy(o + m, "\xEF\xBF\xBD", 3);
            m += 3, i += bad;
        }
    }
    *owned = o;
    *outn = m;
    return o;
}

/* Code point at s[i] of well-formed UTF-8; *len gets its byte length. */
static inline uint32_t utf8_cp(const uint8_t *s, size_t i, size_t *len) {
    uint8_t c = s[i];
    if (c < 0x80) return *len = 1, c;
    if (c < 0xE0) return *len = 2, (uint32_t)(c & 0x1F) << 6 | (s[i + 1] & 0x3F);
    if (c < 0xF0) return *len = 3, (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
    return *len = 4, (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[i + 1] & 0x3F) << 12 | (uint32_t)(s[i + 2] & 0x3F) << 6 |
                         (s[i + 3] & 0x3F);
}

/* ==== Unicode classes ==== */

/* The class of cp in a sorted table of disjoint ranges (binary search); dflt when no range holds it. */
static int range_class(const UcRange *r, uint32_t n, uint32_t cp, int dflt) {
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cp > r[mid].hi) lo = mid + 1;
        else if (cp < r[mid].lo) hi = mid;
        else return (int)r[mid].cls;
    }
    return dflt;
}

int tok_unicode_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return UC_LETTER;
        if (cp >= '0' && cp <= '9') return UC_NUMBER;
        return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) ? UC_SPACE : UC_OTHER;
    }
    return range_class(uc_ranges, uc_n_ranges, cp, UC_OTHER);
}

static inline int class_at(const uint8_t *s, size_t i, size_t *len) { return tok_unicode_class(utf8_cp(s, i, len)); }

int tok_unicode_subclass(uint32_t cp) {
    if (cp < 0x80) return cp >= 'A' && cp <= 'Z' ? UCS_UPPER : cp >= 'a' && cp <= 'z' ? UCS_LOWER : UCS_NONE;
    return range_class(uc_sub_ranges, uc_n_sub_ranges, cp, UCS_NONE);
}

/* ==== The Llama 3 pre-tokenizer ==== */

static size_t run_end(const uint8_t *s, size_t n, size_t i, int cls) {
    size_t l;
    while (i < n && class_at(s, i, &l) == cls) i += l;
    return i;
}

static inline uint8_t ascii_lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c; }

/* (?i:'s|'t|'re|'ve|'m|'ll|'d) at i: its end, or i when there is none. ASCII apostrophe only.
 * (?i) is Unicode simple case folding, under which the only non-ASCII character equal to one of
 * these letters is U+017F "ſ" ~ s (CaseFolding.txt), so "'ſ" is a contraction: Oniguruma splits
 * "'ſx" as 'ſ|x. */
static size_t contraction_end(const uint8_t *s, size_t n, size_t i) {
    if (i + 1 >= n || s[i] != '\'') return i;
    size_t e0 = i + 1;
    uint8_t a = ascii_lower(s[e0]), b = e0 + 1 < n ? ascii_lower(s[e0 + 1]) : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return e0 + 1;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return e0 + 2;
    if (s[e0] == 0xC5 && b == 0xBF) return e0 + 2; /* ſ */
    return i;
}

/* \p{N}{1,3} after the first number ending at e: numbers in groups of three from the left. */
static size_t digits_end(const uint8_t *s, size_t n, size_t e) {
    size_t l;
    for (int k = 1; k < 3 && e < n && class_at(s, e, &l) == UC_NUMBER; k++) e += l;
    return e;
}

/* The regexes' common tail \s*[\r\n]+|\s+(?!\S)|\s+ at i, where s[i] is whitespace. */
static size_t space_end(const uint8_t *s, size_t n, size_t i) {
    /* Scan the whole run once. */
    size_t e = i, nl_end = 0, last = i, l;
    while (e < n) {
        uint32_t c = utf8_cp(s, e, &l);
        if (tok_unicode_class(c) != UC_SPACE) break;
        if (c == '\r' || c == '\n') nl_end = e + l;
        last = e;
        e += l;
    }
    /* \s*[\r\n]+ : \s* gives back characters until [\r\n]+ can start, i.e. the match ends just
     * after the run's last CR/LF. */
    if (nl_end) return nl_end;
    /* \s+(?!\S) : the run up to the end of input, or all but its last character (which then
     * leads the next word, e.g. "   x" -> "  ", " x"). Needs at least one character. */
    if (e == n) return e;
    if (last > i) return last;
    /* \s+ : a single space before a non-space that no other alternative took ("1 2"). */
    return e;
}

/* End of the regex match starting at i < n in well-formed UTF-8. The alternatives are tried in
 * the regex's order; each comment gives the alternative and how its backtracking resolves.
 * Every character is a letter, number, space or other, so some alternative always matches. */
static size_t pretok_end(const uint8_t *s, size_t n, size_t i) {
    size_t l0, l;
    uint32_t c0 = utf8_cp(s, i, &l0);
    int k0 = tok_unicode_class(c0);
    size_t e0 = i + l0;

    /* (?i:'s|'t|'re|'ve|'m|'ll|'d) */
    size_t c = contraction_end(s, n, i);
    if (c > i) return c;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ : a letter run, optionally led by one char that is not CR, LF,
     * letter or number (so " word", "\tword", "'word", "$word"). */
    if (k0 == UC_LETTER) return run_end(s, n, e0, UC_LETTER);
    if (k0 != UC_NUMBER && c0 != '\r' && c0 != '\n' && e0 < n && class_at(s, e0, &l) == UC_LETTER)
        return run_end(s, n, e0, UC_LETTER);
    /* \p{N}{1,3}: numbers in groups of three from the left. */
    if (k0 == UC_NUMBER) return digits_end(s, n, e0);
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* : punctuation run, optionally after one ASCII space, then any CR/LF. */
    size_t p = c0 == ' ' ? e0 : i;
    if (p < n && class_at(s, p, &l) == UC_OTHER) {
        size_t e = run_end(s, n, p, UC_OTHER);
        while (e < n && (s[e] == '\r' || s[e] == '\n')) e++;
        return e;
    }
    /* Only whitespace is left (k0 == UC_SPACE). */
    return space_end(s, n, i);
}

/* ==== The Llama 4 (o200k) pre-tokenizer ====
 *
 *   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
 *   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
 *   \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * Call the two bracket sets UP = {Lu, Lt, Lm, Lo, M} and LO = {Ll, Lm, Lo, M}: Lm, Lo and marks
 * are in both, and marks are not \p{L}, so a mark may also be the optional leading character.
 * Backtracking engines (tiktoken's fancy-regex, Python's regex, Oniguruma) try alternatives in
 * order and, inside one, the greedy choices from the longest down; the functions below give the
 * first match that order finds. */

static inline int in_up(int k) { return k == UCS_UPPER || k == UCS_LETTER_OTHER || k == UCS_MARK; }
static inline int in_lo(int k) { return k == UCS_LOWER || k == UCS_LETTER_OTHER || k == UCS_MARK; }

static size_t set_end(const uint8_t *s, size_t n, size_t i, int (*in)(int)) {
    size_t l;
    while (i < n && in(tok_unicode_subclass(utf8_cp(s, i, &l)))) i += l;
    return i;
}

/* UP*LO+ at p: UP* gives back characters from its longest run until LO+ can start (at q), then
 * LO+ runs as far as it can. 0 when no q works (p < any match end, so 0 is never a match). */
static size_t up_lo_end(const uint8_t *s, size_t n, size_t p) {
    size_t l;
    for (size_t q = set_end(s, n, p, in_up);; ) {
        if (q < n && in_lo(tok_unicode_subclass(utf8_cp(s, q, &l)))) return set_end(s, n, q, in_lo);
        if (q == p) return 0;
        do q--; while ((s[q] & 0xC0) == 0x80); /* the previous character */
    }
}

/* UP+LO* at p, or 0. */
static size_t up_plus_end(const uint8_t *s, size_t n, size_t p) {
    size_t u = set_end(s, n, p, in_up);
    return u > p ? set_end(s, n, u, in_lo) : 0;
}

static size_t pretok_end_o200k(const uint8_t *s, size_t n, size_t i) {
    size_t l0, l, e;
    uint32_t c0 = utf8_cp(s, i, &l0);
    int k0 = tok_unicode_class(c0), word = tok_unicode_subclass(c0) != UCS_NONE;
    size_t e0 = i + l0;
    /* Alternatives 1 and 2, each first with c0 as [^\r\n\p{L}\p{N}] (a space, punctuation or a
     * mark), then without it (c0 itself a letter or mark), then the contraction suffix. */
    int lead = k0 != UC_LETTER && k0 != UC_NUMBER && c0 != '\r' && c0 != '\n';
    if ((lead && (e = up_lo_end(s, n, e0))) || (word && (e = up_lo_end(s, n, i))) || (lead && (e = up_plus_end(s, n, e0))) ||
        (word && (e = up_plus_end(s, n, i))))
        return contraction_end(s, n, e);
    /* \p{N}{1,3} */
    if (k0 == UC_NUMBER) return digits_end(s, n, e0);
    /*  ?[^\s\p{L}\p{N}]+[\r\n/]* : UC_OTHER is exactly [^\s\p{L}\p{N}] (marks included) */
    size_t p = c0 == ' ' ? e0 : i;
    if (p < n && class_at(s, p, &l) == UC_OTHER) {
        e = run_end(s, n, p, UC_OTHER);
        while (e < n && (s[e] == '\r' || s[e] == '\n' || s[e] == '/')) e++;
        return e;
    }
    return space_end(s, n, i);
}

/* ==== BPE over one word ==== */

typedef struct {
    uint32_t rank, pos; /* heap order: lowest rank, then leftmost */
    int32_t l, r;       /* the pair's ids when pushed; a changed symbol makes the entry stale */
} HeapEnt;

/* Scratch for one tok_encode call, grown as needed and reused across words. */
typedef struct {
    int32_t *sym;      /* [cap] symbol id; -1 = character missing from the vocabulary (SPM) */
    int32_t *prev, *next;
    size_t cap;
    HeapEnt *heap;
    size_t hn, hcap;
    int32_t **ids;     /* the caller's output array */
    size_t *n, *cap_ids;
} Work;

#define SYM_DEAD INT32_MIN

static void work_free(Work *w) {
    free(w->sym);
    free(w->prev);
    free(w->next);
    free(w->heap);
}

static int work_reserve(Work *w, size_t n) {
    if (n <= w->cap) return 0;
    size_t c = w->cap ? w->cap : 64;
    while (c < n) c *= 2;
    int32_t *a = realloc(w->sym, c * sizeof *a);
    if (a) w->sym = a;
    int32_t *b = realloc(w->prev, c * sizeof *b);
    if (b) w->prev = b;
    int32_t *d = realloc(w->next, c * sizeof *d);
    if (d) w->next = d;
    if (!a || !b || !d) return -1;
    w->cap = c;
    return 0;
}

static int push_id(Work *w, int32_t id) {
    if (*w->n == *w->cap_ids) {
        size_t c = *w->cap_ids ? *w->cap_ids * 2 : 256;
        int32_t *p = realloc(*w->ids, c * sizeof *p);
        if (!p) return -1;
        *w->ids = p;
        *w->cap_ids = c;
    }
    (*w->ids)[(*w->n)++] = id;
    return 0;
}

static inline int heap_less(const HeapEnt *a, const HeapEnt *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_down(HeapEnt *h, size_t n, size_t i) {
    HeapEnt x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static int heap_push(Work *w, HeapEnt e) {
    if (w->hn == w->hcap) {
        size_t c = w->hcap ? w->hcap * 2 : 64;
        HeapEnt *p = realloc(w->heap, c * sizeof *p);
        if (!p) return -1;
        w->heap = p;
        w->hcap = c;
    }
    size_t i = w->hn++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&e, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = e;
    return 0;
}

/* Push the pair (a, next[a]) if it is a merge. */
static int try_pair(const Tokenizer *t, Work *w, int32_t a) {
    int32_t b = w->next[a];
    if (b < 0 || w->sym[a] < 0 || w->sym[b] < 0) return 0;
    const MergeSlot *m = merge_find(&t->mt, w->sym[a], w->sym[b]);
    if (!m) return 0;
    return heap_push(w, (HeapEnt){ .rank = m->rank, .pos = (uint32_t)a, .l = w->sym[a], .r = w->sym[b] });
}

/* Merge w->sym[lo..hi) lowest rank first, leftmost first on ties, until no adjacent pair is a
 * merge. A merge keeps the left index and marks the right one SYM_DEAD, so reading the live
 * symbols in index order afterwards gives the result. */
static int bpe_merge(const Tokenizer *t, Work *w, size_t lo, size_t hi) {
    size_t n = hi - lo;
    for (size_t i = lo; i < hi; i++) w->prev[i] = i > lo ? (int32_t)i - 1 : -1, w->next[i] = i + 1 < hi ? (int32_t)i + 1 : -1;
    w->hn = 0;
    if (w->hcap < n) {
        HeapEnt *p = realloc(w->heap, n * sizeof *p);
        if (!p) return -1;
        w->heap = p;
        w->hcap = n;
    }
    for (size_t i = lo; i + 1 < hi; i++) {
        if (w->sym[i] < 0 || w->sym[i + 1] < 0) continue;
        const MergeSlot *m = merge_find(&t->mt, w->sym[i], w->sym[i + 1]);
        if (m) w->heap[w->hn++] = (HeapEnt){ .rank = m->rank, .pos = (uint32_t)i, .l = w->sym[i], .r = w->sym[i + 1] };
    }
    for (size_t i = w->hn / 2; i-- > 0;) heap_down(w->heap, w->hn, i);
    while (w->hn) {
        HeapEnt e = w->heap[0];
        w->heap[0] = w->heap[--w->hn];
        heap_down(w->heap, w->hn, 0);
        int32_t a = (int32_t)e.pos, b = w->next[a];
        if (w->sym[a] != e.l || b < 0 || w->sym[b] != e.r) continue; /* stale */
        const MergeSlot *m = merge_find(&t->mt, e.l, e.r);
        w->sym[a] = (int32_t)m->result;
        w->sym[b] = SYM_DEAD;
        w->next[a] = w->next[b];
        if (w->next[b] >= 0) w->prev[w->next[b]] = a;
        if ((w->prev[a] >= 0 && try_pair(t, w, w->prev[a])) || try_pair(t, w, a)) return -1;
    }
    return 0;
}

/* ==== Encoding ==== */

/* One Llama 3 pre-token: raw bytes. */
static int encode_word_bytes(const Tokenizer *t, Work *w, const uint8_t *s, size_t n) {
    if (n == 1) return push_id(w, t->byte_tok[s[0]]);
    if (t->flags & TOKF_IGNORE_MERGES) {
        Keys k = tok_keys(t);
        int32_t id = strtab_find(&t->normal, &k, s, n);
        if (id >= 0) return push_id(w, id);
    }
    if (work_reserve(w, n)) return -1;
    for (size_t i = 0; i < n; i++) w->sym[i] = t->byte_tok[s[i]];
    if (bpe_merge(t, w, 0, n)) return -1;
    for (size_t i = 0; i < n; i++)
        if (w->sym[i] != SYM_DEAD && push_id(w, w->sym[i])) return -1;
    return 0;
}

static int encode_llama3(const Tokenizer *t, Work *w, const uint8_t *s, size_t n) {
    size_t (*const end_of)(const uint8_t *, size_t, size_t) = t->flags & TOKF_O200K ? pretok_end_o200k : pretok_end;
    for (size_t i = 0; i < n;) {
        size_t e = end_of(s, n, i);
        if (encode_word_bytes(t, w, s + i, e - i)) return -1;
        i = e;
    }
    return 0;
}

/* Merge the pending SPM word w->sym[0..nsym) and emit it. */
static int spm_flush(const Tokenizer *t, Work *w, size_t *nsym) {
    if (!*nsym) return 0;
    if (bpe_merge(t, w, 0, *nsym)) return -1;
    for (size_t i = 0; i < *nsym; i++)
        if (w->sym[i] != SYM_DEAD && push_id(w, w->sym[i])) return -1;
    *nsym = 0;
    return 0;
}

/* One normalized character c[0..l) (SPM_SPACE itself for a space). */
static int spm_char(const Tokenizer *t, Work *w, const uint8_t *c, size_t l, size_t *nsym) {
    Keys k = tok_keys(t);
    int32_t id = c == (const uint8_t *)SPM_SPACE ? t->spm_space : l == 1 ? t->ascii_tok[c[0]] : strtab_find(&t->normal, &k, c, l);
    if (id >= 0) {
        if (work_reserve(w, *nsym + 1)) return -1;
        w->sym[(*nsym)++] = id;
        return 0;
    }
    if (spm_flush(t, w, nsym)) return -1;
    for (size_t j = 0; j < l; j++)
        if (push_id(w, t->byte_tok[c[j]])) return -1;
    return 0;
}

/* SentencePiece: the characters of "▁" + text with ' ' -> "▁", merged as one word, with byte
 * fallback for characters the vocabulary lacks. Such a character can never merge, so it ends
 * the word and the next starts after it: exact (merges on either side commute) and it keeps
 * scratch memory to the longest run between them (usually a line: "\n" is <0x0A>). The
 * normalized text is never built. Empty text gives no tokens (SentencePiece; HF's Prepend
 * normalizer skips empty input). */
static int encode_spm(const Tokenizer *t, Work *w, const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    const uint8_t *sp = (const uint8_t *)SPM_SPACE;
    size_t nsym = 0, l;
    if (spm_char(t, w, sp, 3, &nsym)) return -1; /* the dummy prefix */
    for (size_t i = 0; i < n; i += l) {
        utf8_cp(s, i, &l);
        if (spm_char(t, w, s[i] == ' ' ? sp : s + i, s[i] == ' ' ? 3 : l, &nsym)) return -1;
    }
    return spm_flush(t, w, &nsym);
}

int tok_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap, char *err) {
    if (len && !text) return errf(err, "tok_encode: NULL text");
    /* Symbol indices and offsets are 32-bit; SPM triples spaces. */
    if (len > (size_t)INT32_MAX / 4) return errf(err, "tok_encode: text of %zu bytes is too long (limit %d)", len, INT32_MAX / 4);
    size_t sn;
    uint8_t *owned;
    const uint8_t *s = utf8_sanitize((const uint8_t *)text, len, &sn, &owned);
    if (!s) return errf(err, "tok_encode: out of memory");
    Work w = { 0 };
    w.ids = ids, w.n = n, w.cap_ids = cap;
    int rc = t->type == TOK_LLAMA3_BPE ? encode_llama3(t, &w, s, sn) : encode_spm(t, &w, s, sn);
    work_free(&w);
    free(owned);
    return rc ? errf(err, "tok_encode: out of memory") : 0;
}

/* ==== Decoding ==== */

int tok_decode(const Tokenizer *t, int32_t id, Buf *out) {
    if (id < 0 || (uint32_t)id >= t->n_tokens) return -1;
    const char *p = t->tptr[id];
    uint32_t n = t->tlen[id];
    if (t->type == TOK_SPM_BPE && t->kind[id] == TOKK_NORMAL) {
        uint32_t i = 0, from = 0;
        for (; i + 3 <= n; i++) {
            if (memcmp(p + i, SPM_SPACE, 3) != 0) continue;
            buf_put(out, p + from, i - from);
            buf_put(out, " ", 1);
            from = i + 3;
            i += 2;
        }
        buf_put(out, p + from, n - from);
    } else {
        buf_put(out, p, n);
    }
    return out->oom ? -1 : 0;
}

int tok_decode_ids(const Tokenizer *t, const int32_t *ids, size_t n, Buf *out) {
    uint64_t start = out->len;
    for (size_t i = 0; i < n; i++)
        if (tok_decode(t, ids[i], out)) return -1;
    /* HF's Strip(' ', start=1) decoder step: drop the dummy-prefix space once. */
    if (t->type == TOK_SPM_BPE && out->len > start && out->p[start] == ' ') {
        memmove(out->p + start, out->p + start + 1, (size_t)(out->len - start - 1));
        out->len--;
    }
    return 0;
}
