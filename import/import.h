/* import/import.h: every checkpoint format export reads is turned into one Source: a Config,
 * a list of source tensors under their Hugging Face names in HF orientation ([out, in]), the
 * tokenizer and the chat template. export.c then writes any Source the same way, so each
 * importer only has to describe where the bytes are and how to decode one row of them.
 * Importers: hf.c (+ hfquant.c for AWQ / bitsandbytes), gguf.c, meta.c, pte.c (ExecuTorch, with
 * flatbuf.c); source_open picks one.
 *
 * Ownership: a Source owns its mappings, tensor list, tokenizer and template string; tensor
 * data points into the mappings (or into buffers the Source owns) until source_free.
 */
#ifndef GUARD_IMPORT_H
#define GUARD_IMPORT_H

#include "../guard.h"
#include "../json.h"
#include "../tokenizer.h"
#include "build.h"

#define SRC_MAX_FILES 256
/* Llama 3.1 405B has 1137 tensors, an AWQ one three per linear: this bounds the (quadratic)
 * duplicate-name checks without limiting any real checkpoint. */
#define SRC_MAX_TENSORS 16384

/* How a source tensor's bytes encode its values (decoded a row at a time by src_row_f32). */
enum {
    ST_F32 = 1,
    ST_F16,
    ST_BF16,
    /* ggml blocks (gguf.c): a row is ne0/block consecutive blocks, laid out as ggml-common.h */
    ST_Q4_0,
    ST_Q4_1,
    ST_Q5_0,
    ST_Q5_1,
    ST_Q8_0,
    ST_Q4_K,
    ST_Q5_K,
    ST_Q6_K,
    /* quantized Hugging Face linears (hfquant.c), assembled from several safetensors entries */
    ST_AWQ,      /* data = qweight I32 [in, out/8], aux[0] = qzeros I32 [in/g, out/8], aux[1] = scales F16 [in/g, out] */
    ST_BNB_INT8, /* data = CB I8 [out, in], aux[0] = SCB F32 [out] */
    /* ExecuTorch INT4 release (pte.c); q = nibble - 8 in both */
    ST_PTE_Q4,   /* XNNPACK linear: data [out, in/2], byte j = k 2j (low nibble), 2j+1 (high); aux[0] = F32 scales [out, in/256] */
    ST_PTE_EMB4, /* embedding: data [vocab, dim/2], byte j = 2j (HIGH nibble), 2j+1 (low); aux[0] = F16 scales [vocab, dim/32] */
    /* raw integer safetensors entries: only ever parts of the two above, never decoded alone */
    ST_I32,
    ST_I8,
    ST_U8,
    ST_TYPE_COUNT = 64
};

typedef struct {
    char name[GB_NAME_MAX]; /* Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight */
    uint32_t type;          /* ST_* */
    uint32_t ndim;
    uint64_t shape[4];      /* logical HF shape, outermost first */
    const uint8_t *data;    /* stored bytes */
    uint64_t bytes;
    const uint8_t *aux[2];  /* per-format side data (e.g. scales, zero points) */
    uint64_t aux_bytes[2];
    /* > 0: rows are stored with RoPE pairs interleaved per head (GGUF, Meta) for this many
     * heads; src_row_f32 un-permutes so callers always see HF's rotate_half order. */
    uint32_t interleaved_heads;
    const char *file;       /* for messages; owned by the Source */
} SrcTensor;

typedef struct {
    Config cfg;
    SrcTensor *t;           /* [n] */
    int n, cap;
    MappedFile maps[SRC_MAX_FILES];
    char *paths[SRC_MAX_FILES];
    int n_maps;
    Tokenizer *tok;         /* owned; NULL until the importer builds it */
    char *chat_template;    /* owned, NUL-terminated; NULL if the checkpoint has none */
    const char *origin;     /* what was read, for messages (borrowed) */
    char warning[ERRLEN];   /* non-empty: an assumption the user should hear about (export prints it) */
    /* A pruned output head (the INT4 release): lm_head.weight has n_head_ids rows, row r giving
     * the logit of vocabulary id head_ids[r]; 0 = a full head. */
    uint32_t n_head_ids;
    int32_t head_ids[GB_HEAD_MAX];
    const char *guard_hint; /* the Llama Guard version the format implies (--guard spelling), or NULL */
} Source;

/* Choices the checkpoint itself cannot make. */
typedef struct {
    double rope_factor;     /* > 0: the llama3 RoPE factor for a Meta original checkpoint (--rope-factor) */
} ImportOptions;

/* Pick the importer from what path is: a GGUF file (magic "GGUF", e.g. an Ollama blob, or a
 * *.gguf name), a folder holding Meta's params.json (itself or in original/) and no safetensors,
 * else a Hugging Face folder (plain, AWQ or bitsandbytes by config.json). On failure s is freed. */
int source_open(Source *s, const char *path, const ImportOptions *opt, char *err);

void source_free(Source *s);
/* Map a file into the Source (kept until source_free); *m points at the mapping. */
int source_map(Source *s, const char *path, const MappedFile **m, const char **kept_path, char *err);
/* Append a tensor (copied) after checking name length and that it is not a duplicate. */
int source_add(Source *s, const SrcTensor *t, char *err);
const SrcTensor *source_find(const Source *s, const char *name);

/* Rows of the logical 2-D view ([shape[0], prod(rest)]), and row r decoded to f32. */
uint64_t src_rows(const SrcTensor *t);
uint64_t src_cols(const SrcTensor *t);
int src_row_f32(const SrcTensor *t, uint64_t r, float *out, char *err);
/* The stored row holding logical (HF-order) row r: r itself unless interleaved_heads. */
uint64_t src_stored_row(const SrcTensor *t, uint64_t r);
/* When the stored rows are byte for byte guard.bin dtype dt (GGUF Q8_0 -> DT_Q8_0, Q4_0 ->
 * DT_Q4_0), the bytes of logical row r, so export can copy blocks instead of re-quantizing;
 * NULL otherwise. */
const uint8_t *src_raw_row(const SrcTensor *t, uint32_t dt, uint64_t r);

/* Per-encoding row decoders (table in import.c). copy_dt: the guard.bin dtype whose row layout
 * equals the stored row (0 = none; DT_F32 is never needed this way, float rows decode exactly).
 * row_native: writes stored row r directly as guard.bin dtype native_dt (rearranged, not
 * re-quantized: the values stay exactly what the format's own runtime computes with). */
typedef struct {
    const char *name;
    int (*row_f32)(const SrcTensor *t, uint64_t stored_row, float *out, char *err);
    uint32_t copy_dt;
    uint32_t native_dt;
    int (*row_native)(const SrcTensor *t, uint64_t stored_row, uint8_t *dst, char *err);
} SrcType;
extern const SrcType src_types[ST_TYPE_COUNT];

/* Logical row r written as guard.bin dtype dt without re-quantizing when the encoding has such a
 * path (row_native): 0 done, 1 no such path (convert through f32), -1 error. */
int src_row_native(const SrcTensor *t, uint32_t dt, uint64_t r, uint8_t *dst, char *err);

/* A checkpoint file path under dir. Checkouts made without symlink support leave a symlink as a
 * tiny text file holding its relative target: one such hop is followed. */
void ckpt_path(char *out, size_t n, const char *dir, const char *name);
/* path names a regular file (after following symlinks). */
int ckpt_is_file(const char *path);
/* Read and parse a JSON file (at most 64 MiB); errors name the file. */
int load_json_file(Json *j, const char *path, char *err);

/* ==== Importers ==== */

/* Hugging Face directory: config.json + safetensors (single or sharded) + tokenizer files;
 * AWQ GEMM and bitsandbytes int8 when config.json has a quantization_config; Llama 4 text
 * (Llama Guard 4) when its model_type is llama4 / llama4_text. */
int hf_open(Source *s, const char *dir, char *err);
/* GGUF v2/v3 file (llama.cpp, Ollama blobs): metadata, vocabulary, chat template, tensors. */
int gguf_open(Source *s, const char *path, char *err);
/* Meta's original format: dir holds params.json, consolidated.00.pth and tokenizer.model; an HF
 * repo's config.json and tokenizer_config.json are used when dir is its original/ subfolder. */
int meta_open(Source *s, const char *dir, const ImportOptions *opt, char *err);
/* Meta's ExecuTorch release of Llama Guard 3 1B INT4: dir holds one .pte (XNNPACK, 2024 layout),
 * params.json and tokenizer.model. */
int pte_open(Source *s, const char *dir, char *err);
/* dir holds an ExecuTorch program (*.pte); its path in out. */
int pte_find(const char *dir, char *out, size_t n);

/* ==== Shared between importers ==== */

/* A format's tensor names -> Hugging Face names: global "<from>.weight" -> "<to>.weight", and
 * "<layer_prefix>N.<from>.weight" -> "model.layers.N.<to>.weight". Tables end with { NULL }. */
enum { MAP_ROPE_Q = 1, MAP_ROPE_K = 2 }; /* rows interleaved per head: n_heads (q) or n_kv_heads (k) */
typedef struct {
    const char *from, *to;
    int rope;
} NameMap;
/* hf[GB_NAME_MAX] gets the HF name, or the name itself (callers keep names under GB_NAME_MAX)
 * when nothing matches, so export refuses it as unexpected. Returns the matching entry (and *layer_no for a layer one) or NULL. */
const NameMap *map_tensor_name(const char *name, const char *layer_prefix, const NameMap *global, const NameMap *layer, char *hf,
                               uint32_t *layer_no);

/* SentencePiece piece types (also GGUF's token_type): 1 NORMAL, 2 UNKNOWN, 3 CONTROL,
 * 4 USER_DEFINED, 5 UNUSED, 6 BYTE -> TOKK_*; -1 for anything else (and BYTE unless allow_byte). */
int vocab_kind(int32_t type, int allow_byte);

/* config.json -> Config (source SRC_HF, or SRC_AWQ / SRC_BNB from its quantization_config).
 * quant may be NULL: then a quantization_config is refused. */
typedef struct {
    int method;          /* 0 none, SRC_AWQ, SRC_BNB */
    uint32_t group_size; /* AWQ */
} HfQuant;
int hf_read_config(const char *path, Config *c, HfQuant *quant, char *err);
/* Llama 4 without tokenizer.json: Meta's tiktoken tokenizer.model (ranks) plus the specials of
 * tokenizer_config.json's added_tokens_decoder (ids from the rank count on) and its
 * bos_token/eos_token, into s->tok with the o200k pre-tokenizer. */
int hf_llama4_tiktoken(Source *s, const char *model_path, const char *tokenizer_config_path, char *err);
/* tokenizer_config.json's chat_template into s->chat_template (left NULL when absent). */
int hf_read_chat_template(Source *s, const char *path, char *err);

/* hfquant.c: the quantization_config object of config.json, and turning the quantized
 * linears' safetensors entries into one ST_AWQ / ST_BNB_INT8 tensor each. */
int hfq_parse(const Json *j, const JsonNode *qc, const char *path, HfQuant *q, char *err);
int hfq_assemble(Source *s, const HfQuant *q, char *err);
int hfq_row_awq(const SrcTensor *t, uint64_t r, float *out, char *err);
int hfq_row_bnb(const SrcTensor *t, uint64_t r, float *out, char *err);

/* meta.c: a tiktoken rank file ("<base64> <rank>" lines) plus n special tokens after the ranks
 * (names[i] gets id n_ranks + i; bos/eos are offsets into names, -1 for none), built into
 * s->tok with the pre-tokenizer pretok (TOK_PRETOK_*). */
typedef struct {
    uint32_t n;
    const char *const *names;
    int32_t bos, eos;
    int pretok;
} TiktokenSpecials;
int tiktoken_read(Source *s, const char *path, const uint8_t *p, uint64_t size, const TiktokenSpecials *sp, char *err);
/* meta.c: tokenizer.model (tiktoken ranks, or a SentencePiece protobuf) into s->tok; llama31
 * names the reserved specials as Llama 3.1+ does. */
int meta_read_tokenizer(Source *s, const char *path, int llama31, char *err);

/* Llama 3 RoPE scaling recovered from per-pair frequency divisors (div[i] = unscaled / scaled
 * inverse frequency, head_dim/2 of them, for c->rope_theta and c->head_dim): the factor is
 * solved from the divisors, low/high factor and original context are Meta's constants (1, 4,
 * 8192), and every divisor must then match the formula (relative 2e-6). Sets c->rope_*; all
 * divisors 1 leaves plain RoPE. what names the source in messages. */
int rope_from_divisors(Config *c, const double *div, const char *what, char *err);

/* pte.c: rows of the ExecuTorch int4 encodings, as f32 (exact: q * scale) and as Q4_0 blocks. */
int pte_row_q4_f32(const SrcTensor *t, uint64_t r, float *out, char *err);
int pte_row_q4_native(const SrcTensor *t, uint64_t r, uint8_t *dst, char *err);
int pte_row_emb4_f32(const SrcTensor *t, uint64_t r, float *out, char *err);
int pte_row_emb4_native(const SrcTensor *t, uint64_t r, uint8_t *dst, char *err);

/* gguf.c: one row of ggml blocks (ST_Q*) decoded with ggml's dequantize_row_* arithmetic. */
int gguf_row_f32(const SrcTensor *t, uint64_t r, float *out, char *err);

#endif
