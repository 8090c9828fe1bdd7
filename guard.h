/* guard.h: the structures shared by run.c, export.c, model.c and the tests:
 * the model Config, the guard.bin file (reader and writer, format in FORMAT.md), the
 * Weights that point into it, the RunState, and the forward pass.
 */
#ifndef GUARD_H
#define GUARD_H

#include <stdint.h>

#include "quant.h"
#include "util.h"

/* The release, printed by ./run --version (the one place it is defined). */
#define GUARD_VERSION "0.2.0"

/* ==== Config: every hyperparameter the forward pass needs, all from the checkpoint ==== */

enum { ROPE_NONE = 0, ROPE_LLAMA3 = 1 };
/* Which dimensions of a head RoPE rotates together: HF Llama's rotate_half pairs i with
 * i + head_dim/2; Llama 4's complex form (apply_rotary_emb, view_as_complex) pairs 2j with 2j+1. */
enum { ROPE_ROTATE_HALF = 0, ROPE_ADJACENT = 1 };
/* Layers that may be NoPE: the header holds one bit per layer for the first GB_NOPE_LAYERS. */
#define GB_NOPE_LAYERS 256
enum { SRC_HF = 1, SRC_GGUF = 2, SRC_AWQ = 3, SRC_BNB = 4, SRC_META = 5, SRC_RANDOM = 6, SRC_PTE = 7 };

typedef struct {
    uint32_t dim;         /* hidden_size */
    uint32_t n_layers;    /* num_hidden_layers */
    uint32_t n_heads;     /* num_attention_heads */
    uint32_t n_kv_heads;  /* num_key_value_heads (== n_heads for MHA) */
    uint32_t head_dim;    /* head_dim, default hidden_size / num_attention_heads */
    uint32_t hidden_dim;  /* intermediate_size */
    uint32_t vocab_size;
    uint32_t max_seq_len; /* max_position_embeddings */
    float norm_eps;       /* rms_norm_eps */
    float rope_theta;
    uint32_t rope_type;   /* ROPE_NONE / ROPE_LLAMA3 */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    uint32_t rope_orig_max_pos;
    uint32_t tied;        /* lm_head is the embedding matrix */
    uint32_t source;      /* SRC_*: what export read */
    uint32_t dtype;       /* the main weight dtype (DT_*) */
    /* Llama 4 (Llama4TextConfig); all zero for Llama 2/3, which leaves their forward pass as it was */
    uint32_t rope_style;  /* ROPE_ROTATE_HALF / ROPE_ADJACENT */
    uint32_t nope[GB_NOPE_LAYERS / 32]; /* bit l set: layer l has no RoPE (no_rope_layers[l] == 0) */
    uint32_t qk_norm;     /* use_qk_norm: weightless RMS norm (eps rms_norm_eps) of q, k heads on RoPE layers */
    uint32_t attn_temperature_tuning; /* NoPE layers: q *= log(floor((pos+1)/floor_scale)+1)*attn_scale+1 */
    float floor_scale, attn_scale;
    uint32_t attn_chunk;  /* attention_chunk_size: RoPE layers see only their chunk; 0 = null */
} Config;

/* Layer l applies RoPE (HF Llama4TextAttention.use_rope). */
static inline int config_layer_rope(const Config *c, uint32_t l) {
    return l >= GB_NOPE_LAYERS || !(c->nope[l / 32] >> (l % 32) & 1);
}

/* Check a Config for values the forward pass cannot use; names the bad field in err. */
int config_validate(const Config *c, char *err);

/* ==== guard.bin ==== */

#define GB_MAGIC "GUARDBIN"
/* 2: quantized matrices in tile order (quant.h), the Llama 4 header fields (bytes 132..191),
 * the "output ids" section (a pruned lm_head) and source 7 (ExecuTorch .pte). A reader refuses
 * every other version; version 1 files are re-exported. */
#define GB_VERSION 2
#define GB_ALIGN 64
#define GB_NAME_MAX 64
/* Fixed header: 256 bytes at offset 0, then the section and tensor tables (FORMAT.md). */
#define GB_HEADER_BYTES 256
#define GB_SECTION_BYTES 24
#define GB_TENSOR_BYTES 128
#define GB_ENDIAN_MARK 0x0A0B0C0Du
#define GB_MAX_TENSORS 100000u
#define GB_MAX_SECTIONS 64u
#define GB_OFF_HEADER_CRC 48
#define GB_HEAD_MAX 256 /* rows of a pruned output head (FORMAT.md, section "output ids") */
enum { SEC_TOKENIZER = 1, SEC_PROMPT = 2, SEC_HEAD_IDS = 3 };

typedef struct {
    char name[GB_NAME_MAX]; /* NUL-terminated */
    uint32_t dtype, ndim;
    uint64_t shape[4];      /* shape[0] outermost; unused dims are 1 */
    uint64_t offset, size;  /* absolute byte offset in the file, byte count */
} GbTensor;

typedef struct {
    uint32_t kind;
    uint64_t offset, size;
} GbSection;

typedef struct {
    MappedFile map;
    const char *path;     /* borrowed */
    Config cfg;
    uint32_t n_tensors, n_sections;
    GbTensor *tensors;    /* [n_tensors], owned */
    GbSection *sections;  /* [n_sections], owned */
    uint32_t data_crc;    /* as recorded by export */
    uint64_t data_offset;
} GuardFile;

/* Map and validate header, tables and bounds (not the data checksum). */
int gb_open(GuardFile *g, const char *path, char *err);
void gb_close(GuardFile *g);
/* Recompute the data checksum over the whole file (./run --verify). */
int gb_verify(const GuardFile *g, char *err);
const GbTensor *gb_find(const GuardFile *g, const char *name);
const uint8_t *gb_data(const GuardFile *g, const GbTensor *t);
/* Section bytes, or NULL (and *size 0) when absent. */
const uint8_t *gb_section(const GuardFile *g, uint32_t kind, uint64_t *size);
/* The "output ids" section: *n ids (0 when the file has none), each < vocab, all distinct;
 * ids has room for GB_HEAD_MAX. */
int gb_head_ids(const GuardFile *g, int32_t *ids, uint32_t *n, char *err);

/* ==== Weights: typed views into the mapped file ==== */

typedef struct {
    const float *attn_norm; /* [dim] input_layernorm */
    const float *ffn_norm;  /* [dim] post_attention_layernorm */
    Tensor wq;              /* [n_heads*head_dim, dim] */
    Tensor wk, wv;          /* [n_kv_heads*head_dim, dim] */
    Tensor wo;              /* [dim, n_heads*head_dim] */
    Tensor w_gate, w_up;    /* [hidden_dim, dim] */
    Tensor w_down;          /* [dim, hidden_dim] */
} LayerWeights;

typedef struct {
    Tensor embed;           /* [vocab, dim] */
    LayerWeights *layers;   /* [n_layers], owned */
    const float *norm;      /* [dim] final norm */
    Tensor lm_head;         /* [vocab, dim]; == embed when tied; [n_head, dim] when pruned */
    /* A pruned output head (section "output ids"): lm_head row r scores vocabulary id head_ids[r];
     * every other logit is -inf. n_head 0: a full head. */
    uint32_t n_head;
    int32_t *head_ids;      /* [n_head], owned */
} Weights;

/* ==== RunState: activations and the KV cache, owned by one conversation ==== */

typedef struct {
    int64_t chunk;     /* max tokens per forward call (prefill batch) */
    int64_t cap;       /* KV cache capacity in positions */
    int64_t n_cached;  /* positions [0, n_cached) hold valid K/V */
    int32_t *ids;      /* [cap] the token at each cached position (prefix reuse compares these) */
    float *x;          /* [chunk, dim] residual stream */
    float *xb;         /* [chunk, dim] rmsnorm output: input of q/k/v and of gate/up */
    float *xb2;        /* [chunk, dim] o_proj / down_proj output, added to x */
    float *q;          /* [chunk, q_dim] q_dim = n_heads*head_dim */
    float *k, *v;      /* [chunk, kv_dim] this chunk's keys/values before caching */
    float *att;        /* [chunk, q_dim] attention output, input of o_proj */
    float *hb, *hb2;   /* [chunk, hidden_dim] */
    float *key_cache;  /* [n_layers, cap, kv_dim] */
    float *value_cache;/* [n_layers, cap, kv_dim] */
} RunState;

typedef struct {
    GuardFile file;
    Config cfg;       /* == file.cfg */
    Weights w;
    float *inv_freq;  /* [head_dim/2] RoPE inverse frequencies, llama3 scaling applied */
    Pool *pool;
    int n_threads;
    uint64_t packed_bytes; /* f32 weights prepacked into kernel tiles (0: none; q8/q4 are stored as tiles) */
} Model;

/* Open guard.bin, validate, bind the weights (in place, in the mapped file). n_threads <= 0
 * means all available cores. */
int model_open(Model *m, const char *path, int n_threads, char *err);
/* Arrange f32 weights once into the kernel set's register tiles (quant.h tensor_prepack), so
 * every later matmul streams them instead of packing tile chunks per call; it pays off for a
 * process that runs many forwards (batch, eval, benchmarks). q8/q4 weights are stored in tile
 * order by export and read in place, so there is nothing to do for them (and bf16/f16 tiles
 * would double the memory). Results are bit-identical either way. Returns the bytes of
 * tiles; 0 when nothing was packed (those dtypes, or the tiles would not fit in 3/4 of the
 * available memory). Idempotent. */
uint64_t model_prepack(Model *m);
void model_close(Model *m);

int state_init(RunState *s, const Model *m, int64_t cap, char *err);
int state_reserve(RunState *s, const Model *m, int64_t cap, char *err); /* grow, keeping the cache */
void state_free(RunState *s);

/* Run tokens[0..n) at positions [s->n_cached, s->n_cached + n), appending to the KV cache.
 * When logits != NULL it receives the last position's logits [vocab]. */
int model_forward(const Model *m, RunState *s, const int32_t *tokens, int64_t n, float *logits, char *err);

/* Tests: model_forward that also copies every position's residual stream after one layer
 * (HF's output_hidden_states[layer + 1]) into hidden [n, dim], caller-owned. Every row then
 * runs through the last layer (no shortcut); the logits are the same bits. */
typedef struct {
    uint32_t layer;
    float *hidden;
} LayerCapture;
int model_forward_capture(const Model *m, RunState *s, const int32_t *tokens, int64_t n, float *logits,
                          const LayerCapture *cap, char *err);

/* HF's inverse frequencies for this config (rope_type llama3 applied), f32 as transformers computes them. */
void rope_inv_freq(const Config *c, float *out /* [head_dim/2] */);

#endif
