/* tokenizer.h: exact Llama 3 / Llama 4 (byte-level BPE) and Llama 2 (SentencePiece BPE) tokenization.
 *
 * Contract: a Tokenizer is immutable after it is built or loaded, so one instance may be used
 * from many threads at once (tok_encode allocates its own scratch). tok_encode treats ALL input
 * as plain text: special tokens (<|eot_id|>, <s>, ...) are only ever produced by the prompt
 * template asking for them by name with tok_special_id. Errors: 0 / -1 with a one-line message
 * in err[ERRLEN] (util.h). The byte layout of the guard.bin section is documented in tokenizer.c.
 */
#ifndef GUARD_TOKENIZER_H
#define GUARD_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef struct Tokenizer Tokenizer;

enum { TOK_LLAMA3_BPE = 1, TOK_SPM_BPE = 2 };
/* Pre-tokenizer of a byte-level BPE: Llama 3's cl100k-style regex, or Llama 4's o200k regex. */
enum { TOK_PRETOK_LLAMA3 = 0, TOK_PRETOK_O200K = 1 };

/* What a vocabulary entry is. NORMAL entries are produced by BPE; SPECIAL entries (added /
 * control tokens) never come out of tok_encode; BYTE entries are SentencePiece's <0xXX>
 * byte-fallback pieces, used only for characters missing from the vocabulary. */
enum { TOKK_NORMAL = 0, TOKK_SPECIAL = 1, TOKK_BYTE = 2 };

/* ==== Building ==== */

/* Parse HF tokenizer.json (+ optional tokenizer_config.json, may be NULL) into a tokenizer.
 * Only the two known layouts are accepted (Llama 3: BPE + Split regex + ByteLevel; Llama 2:
 * BPE + Prepend/Replace normalizer + byte fallback); anything else is refused with an error
 * naming the file and the field. BOS/EOS come from tokenizer_config.json (bos_token,
 * eos_token); without it both are -1. */
int tok_from_hf(Tokenizer **out, const char *tokenizer_json_path, const char *tokenizer_config_path, char *err);

/* Raw arrays for other importers (GGUF vocab arrays, Meta's tiktoken rank file, SentencePiece
 * protos). All arrays are borrowed for the duration of the call.
 *   text/len: token i as the model sees it. TOK_LLAMA3_BPE: the raw bytes (NOT the GPT-2
 *     "Ġ" form; see tok_bytelevel_decode). TOK_SPM_BPE: the piece in UTF-8 with U+2581 for
 *     spaces. SPECIAL: the literal text (e.g. "<|eot_id|>"). BYTE: the name "<0xXX>".
 *   kind: TOKK_* per token, or NULL for all NORMAL.
 *   merges: n_merges (left, right) id pairs, lowest rank first (HF / GGUF merges lists).
 *     Or merges == NULL and scores != NULL: every split of a NORMAL token into two NORMAL
 *     tokens becomes a merge, higher score first, equal scores tied by position. This is
 *     SentencePiece BPE (pieces split at character boundaries), and tiktoken with
 *     scores[i] = -rank and TOK_LLAMA3_BPE (split at byte boundaries).
 *   ignore_merges: a whole pre-token that is itself a NORMAL token is emitted directly
 *     (HF ignore_merges; what tiktoken does). Llama 3 only.
 *   bos, eos: ids or -1. */
typedef struct {
    int type;                  /* TOK_LLAMA3_BPE / TOK_SPM_BPE */
    uint32_t n_tokens;
    const char *const *text;   /* [n_tokens] */
    const uint32_t *len;       /* [n_tokens] byte lengths of text[i] */
    const uint8_t *kind;       /* [n_tokens] TOKK_*, or NULL */
    uint32_t n_merges;
    const uint32_t *merges;    /* [n_merges * 2], or NULL */
    const float *scores;       /* [n_tokens], used only when merges == NULL */
    int ignore_merges;
    int32_t bos, eos;
    int pretok;                /* TOK_PRETOK_*: the Split regex before byte-level BPE (TOK_LLAMA3_BPE only) */
} TokSpec;
int tok_build(Tokenizer **out, const TokSpec *spec, char *err);

/* GPT-2 byte-level form ("ĠHello") -> raw bytes (" Hello"). out must hold n bytes (the result is
 * never longer). Returns the byte count, or -1 if a character is not in the byte map. */
int64_t tok_bytelevel_decode(const char *s, size_t n, uint8_t *out);

/* ==== Serialization (the guard.bin SEC_TOKENIZER section) ==== */

/* *blob is malloc'd; the caller frees it. */
int tok_serialize(const Tokenizer *t, uint8_t **blob, uint64_t *len, char *err);
/* blob is untrusted: everything is validated; nothing points into blob afterwards. */
int tok_load(Tokenizer **out, const uint8_t *blob, uint64_t len, char *err);
void tok_free(Tokenizer *t);

/* ==== Queries ==== */

int tok_type(const Tokenizer *t);
int tok_pretok(const Tokenizer *t); /* TOK_PRETOK_* */
uint32_t tok_vocab_size(const Tokenizer *t);
uint32_t tok_n_merges(const Tokenizer *t);
int32_t tok_bos(const Tokenizer *t); /* -1 if none */
int32_t tok_eos(const Tokenizer *t); /* -1 if none */
/* Id of a SPECIAL token given its exact text (e.g. "<|eot_id|>", "<s>"), or -1. */
int32_t tok_special_id(const Tokenizer *t, const char *text);
/* Id of the NORMAL token whose bytes are exactly s[0..n) (as tok_piece gives them), or -1. */
int32_t tok_piece_id(const Tokenizer *t, const void *s, size_t n);
/* TOKK_* of id, or -1 if out of range. */
int tok_kind(const Tokenizer *t, int32_t id);
/* The stored bytes of id (raw bytes / piece / special text / the one byte of a BYTE token);
 * NULL if out of range. */
const uint8_t *tok_piece(const Tokenizer *t, int32_t id, uint32_t *len);

/* ==== Encoding and decoding ==== */

/* Encode text[0..len) as plain text (never special ids), appending to the growable array
 * (*ids)[0..*n) of capacity *cap (all may start as NULL/0; realloc'd as needed). Invalid
 * UTF-8 is replaced by U+FFFD as Python's bytes.decode(errors='replace') does. No BOS. */
int tok_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap, char *err);

/* Bytes of one id as it appears in decoded text, appended to out: raw bytes (Llama 3), the
 * piece with U+2581 turned into ' ' or the fallback byte (SPM), the literal text of a special
 * token. Pieces may be partial UTF-8. -1 for an id out of range or out of memory. */
int tok_decode(const Tokenizer *t, int32_t id, Buf *out);
/* A whole sequence, as HF's decoder chain does it: for SPM the one leading space of the
 * result (the dummy prefix) is removed. decode(encode(x)) == x for valid UTF-8 x. */
int tok_decode_ids(const Tokenizer *t, const int32_t *ids, size_t n, Buf *out);

/* ==== Unicode classes (tables generated by tools/gen_unicode.py into unicode_tables.c) ==== */

enum { UC_OTHER = 0, UC_LETTER = 1, UC_NUMBER = 2, UC_SPACE = 3 };
typedef struct {
    uint32_t lo, hi; /* inclusive code point range */
    uint32_t cls;    /* UC_* */
} UcRange;
extern const UcRange uc_ranges[];
extern const uint32_t uc_n_ranges;
extern const char uc_version[]; /* e.g. "15.0.0" */

/* \p{L} -> UC_LETTER, \p{N} -> UC_NUMBER, White_Space -> UC_SPACE, else UC_OTHER. */
int tok_unicode_class(uint32_t cp);

/* The o200k regex's finer view (Llama 4): letters by General_Category and marks. */
enum { UCS_NONE = 0, UCS_UPPER = 1 /* Lu Lt */, UCS_LOWER = 2 /* Ll */, UCS_LETTER_OTHER = 3 /* Lm Lo */, UCS_MARK = 4 /* M */ };
extern const UcRange uc_sub_ranges[];
extern const uint32_t uc_n_sub_ranges;
/* UCS_* of cp; UCS_NONE for everything that is not a letter or a mark. */
int tok_unicode_subclass(uint32_t cp);

#endif
