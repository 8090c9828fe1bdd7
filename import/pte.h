/* import/pte.h: Meta's Llama-Guard-3-1B-INT4 ExecuTorch release (.pte) read down to located
 * weights, before anything about guard.bin. pte.c walks the program (ExecuTorch schema of
 * 2024-09, spec/executorch/program.fbs), the XNNPACK delegate blobs (xnnpack_schema.fbs) and
 * the forward graph; pte_open (import.h) turns the result into a Source.
 *
 * Ownership: a PteModel points into the bytes it was read from (kept mapped by the caller) and
 * owns only its arrays (pte_free).
 */
#ifndef GUARD_PTE_H
#define GUARD_PTE_H

#include <stdint.h>

#include "flatbuf.h"

#define PTE_HEAD_MAX 64     /* rows of a pruned output head we accept (Meta's has 20) */
#define PTE_MAX_LAYERS 256

/* One XNNPACK-delegated linear: y[N] = x[K] @ W^T with int4 weights in groups of `group`
 * along K, fp32 block scales; byte j of a row holds k = 2j (low nibble) and 2j+1 (high), q =
 * nibble - 8. */
typedef struct {
    uint32_t n, k, group;
    const uint8_t *w;      /* [n, k/2] */
    const uint8_t *scales; /* f32 [n, k/group], little-endian, unaligned */
    uint32_t delegate;     /* index in the program, for messages */
} PteLinear;

typedef struct {
    const uint8_t *attn_norm, *ffn_norm; /* f32 [dim] */
    PteLinear wq, wk, wv, wo, w1, w3, w2; /* Meta's names: w1 gate, w3 up, w2 down */
} PteLayer;

typedef struct {
    /* shapes, from the graph and the metadata methods */
    uint32_t dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, vocab, max_seq_len;
    int64_t bos, eos[4], n_eos_ids;  /* get_bos_id, get_eos_ids */
    /* constants */
    const uint8_t *embed;         /* int4 [vocab, dim/2]: element 2j in the HIGH nibble of byte j, 2j+1 low */
    const uint8_t *embed_scales;  /* f16 [vocab, dim/embed_group] */
    uint32_t embed_group;
    const uint8_t *norm;          /* f32 [dim] final norm */
    const uint8_t *freqs_cos, *freqs_sin; /* f32 [max_seq_len, head_dim/2] */
    float eps;                    /* the RMSNorm eps constant */
    PteLayer *layers;             /* [n_layers], owned */
    PteLinear head;               /* [n_head, dim] */
    uint32_t n_head;
    int32_t head_ids[PTE_HEAD_MAX]; /* row r of the head is vocabulary id head_ids[r] */
} PteModel;

/* flags for pte_read */
enum { PTE_STRUCTURE_ONLY = 1 }; /* fuzzing: segments may extend past the bytes given (not read) */

/* Read a whole .pte (p[0..n)) into m. path names it in messages. On error m is freed. */
int pte_read(PteModel *m, const uint8_t *p, uint64_t n, const char *path, int flags, char *err);
/* One XNNPACK delegate blob (a segment) as a linear; K and N must match what the caller expects
 * unless 0. */
int pte_read_xnn(PteLinear *l, const uint8_t *p, uint64_t n, const char *what, char *err);
void pte_free(PteModel *m);

#endif
