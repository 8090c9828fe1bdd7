/* import/import.h: every checkpoint format export reads is turned into one Source: a Config,
 * a list of source tensors under their Hugging Face names in HF orientation ([out, in]), the
 * tokenizer and the chat template. export.c then writes any Source the same way, so each
 * importer only has to describe where the bytes are and how to decode one row of them.
 *
 * Ownership: a Source owns its mappings, tensor list, tokenizer and template string; tensor
 * data points into the mappings (or into buffers the Source owns) until source_free.
 */
#ifndef GUARD_IMPORT_H
#define GUARD_IMPORT_H

#include "../guard.h"
#include "../json.h"
#include "../tokenizer.h"

#define SRC_MAX_FILES 256

/* How a source tensor's bytes encode its values (decoded a row at a time by src_row_f32). */
enum {
    ST_F32 = 1,
    ST_F16,
    ST_BF16,
    ST_TYPE_COUNT = 64 /* importers add their encodings below this (GGUF blocks, AWQ, bnb) */
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
} Source;

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

/* Per-encoding row decoders, filled by the importers (table in import.c). row_bytes is the
 * stored size of one row, or 0 when the encoding is not row-addressable this simply way. */
typedef struct {
    const char *name;
    int (*row_f32)(const SrcTensor *t, uint64_t stored_row, float *out, char *err);
} SrcType;
extern const SrcType src_types[ST_TYPE_COUNT];

/* A checkpoint file path under dir. Checkouts made without symlink support leave a symlink as a
 * tiny text file holding its relative target: one such hop is followed. */
void ckpt_path(char *out, size_t n, const char *dir, const char *name);
/* Read and parse a JSON file (at most 64 MiB); errors name the file. */
int load_json_file(Json *j, const char *path, char *err);

/* ==== Importers ==== */

/* Hugging Face directory: config.json + safetensors (single or sharded) + tokenizer files. */
int hf_open(Source *s, const char *dir, char *err);

#endif
