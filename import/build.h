/* import/build.h: what only export needs to make a guard.bin: tokenizers built from a
 * tokenizer.json or from raw arrays, the tokenizer section writer, and the guard.bin writer.
 * None of it links into ./run (make check-boundary); the runtime only reads (tokenizer.h, guard.h).
 */
#ifndef GUARD_IMPORT_BUILD_H
#define GUARD_IMPORT_BUILD_H

#include "../guard.h"
#include "../tokenizer.h"

/* ==== Building a tokenizer (import/tokbuild.c) ==== */

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

/* The tokenizer's SEC_TOKENIZER section; *blob is malloc'd; the caller frees it. */
int tok_serialize(const Tokenizer *t, uint8_t **blob, uint64_t *len, char *err);

/* ==== Writing guard.bin (import/gbwriter.c) ====
 *
 * Describe every tensor and section first, then stream their bytes in the same order.
 * Tensor data is produced by a callback so export converts one tensor at a time. */
typedef int (*GbProduce)(void *ctx, uint32_t index, uint8_t *dst, uint64_t size, char *err);
typedef struct {
    Config cfg;
    GbTensor *tensors; uint32_t n_tensors, cap_tensors;
    GbSection *sections; const uint8_t **section_data; uint32_t n_sections;
} GbWriter;
void gbw_init(GbWriter *w, const Config *c);
int gbw_add_tensor(GbWriter *w, const char *name, uint32_t dtype, uint32_t ndim, const uint64_t *shape, char *err);
/* The bytes are borrowed until gbw_write returns. */
int gbw_add_section(GbWriter *w, uint32_t kind, const uint8_t *data, uint64_t size, char *err);
/* Write everything to path atomically; produce(ctx, i, dst, size) fills tensor i's rows in
 * order (size = rows x row bytes; quantized rows as blocks in GGUF order: the writer tiles them). */
int gbw_write(GbWriter *w, const char *path, GbProduce produce, void *ctx, char *err);
void gbw_free(GbWriter *w);
/* The "output ids" section's bytes (FORMAT.md): u32 n, then n u32 ids; out holds 4 + 4n. */
void gb_head_ids_encode(uint8_t *out, const int32_t *ids, uint32_t n);

#endif
