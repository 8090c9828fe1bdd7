/* tests/fuzz/fuzz_pte.c: the ExecuTorch .pte reader (import/pte.c on import/flatbuf.c) on
 * untrusted bytes: the header, segments, program walk, metadata methods, forward's values,
 * operators, delegates and instructions, the graph matching, and the XNNPACK blob parser.
 * Input: PROGRAM [FUZZ_SEP BLOB]. PROGRAM is read as a whole file (segments must be inside it)
 * and again with PTE_STRUCTURE_ONLY (segments may lie past its end, as in the seeds, which are
 * the fixture's program without its 37 MB of weights), BLOB as one XNNPACK delegate segment.
 * Invariants: an accepted program has a sane shape, every weight pointer inside the input and a
 * pruned head whose ids are distinct and inside the vocabulary; an accepted blob's weight and
 * scales lie inside it and every row decodes (f32 and Q4_0); every refusal is one line. */
#include "fuzz.h"
#include "import/import.h"
#include "import/pte.h"

static int pte_inside(const uint8_t *p, size_t n, const uint8_t *q, uint64_t len) {
    return q == NULL || (q >= p && len <= n && q <= p + n - len);
}

static void pte_check_linear(const PteLinear *l, const uint8_t *p, size_t n) {
    FUZZ_CHECK(l->n > 0 && l->k > 0 && l->k % 256 == 0 && l->group == 256, "linear [%u, %u] g%u", l->n, l->k, l->group);
    FUZZ_CHECK(pte_inside(p, n, l->w, (uint64_t)l->n * l->k / 2) && pte_inside(p, n, l->scales, (uint64_t)l->n * (l->k / 256) * 4),
               "linear data outside the input");
}

static int pte_program(const uint8_t *data, size_t size, int flags) {
    PteModel m;
    char err[ERRLEN];
    if (pte_read(&m, data, size, "fuzz.pte", flags, err)) {
        fuzz_check_err(err);
        FUZZ_CHECK(m.layers == NULL, "model not freed on error");
        return 0;
    }
    FUZZ_CHECK(m.n_layers > 0 && m.layers && m.dim > 0 && m.head_dim % 2 == 0 && m.n_kv_heads > 0 && m.n_heads % m.n_kv_heads == 0, "bad shape");
    FUZZ_CHECK(m.n_head > 0 && m.n_head <= PTE_HEAD_MAX && m.embed_group == 32, "bad head or embedding");
    for (uint32_t r = 0; r < m.n_head; r++) {
        FUZZ_CHECK(m.head_ids[r] >= 0 && (uint32_t)m.head_ids[r] < m.vocab, "head id %d outside the vocabulary", m.head_ids[r]);
        for (uint32_t k = 0; k < r; k++) FUZZ_CHECK(m.head_ids[k] != m.head_ids[r], "head id %d twice", m.head_ids[r]);
    }
    FUZZ_CHECK(pte_inside(data, size, m.embed, (uint64_t)m.vocab * m.dim / 2) && pte_inside(data, size, m.norm, 4ull * m.dim) &&
                   pte_inside(data, size, m.freqs_cos, 2ull * m.max_seq_len * m.head_dim) && pte_inside(data, size, m.freqs_sin, 2ull * m.max_seq_len * m.head_dim),
               "constant outside the input");
    for (uint32_t l = 0; l < m.n_layers; l++) {
        const PteLayer *L = &m.layers[l];
        const PteLinear *all[] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w3, &L->w2 };
        for (int i = 0; i < 7; i++)
            if (!(flags & PTE_STRUCTURE_ONLY)) pte_check_linear(all[i], data, size);
        FUZZ_CHECK(pte_inside(data, size, L->attn_norm, 4ull * m.dim) && pte_inside(data, size, L->ffn_norm, 4ull * m.dim), "norm outside the input");
    }
    pte_free(&m);
    return 1;
}

static int pte_blob(const uint8_t *data, size_t size) {
    PteLinear l;
    char err[ERRLEN];
    if (pte_read_xnn(&l, data, size, "fuzz blob", err)) {
        fuzz_check_err(err);
        return 0;
    }
    pte_check_linear(&l, data, size);
    /* every row through both row decoders the exporter uses, within a budget */
    SrcTensor t = { .type = ST_PTE_Q4, .ndim = 2, .shape = { l.n, l.k }, .data = l.w, .bytes = (uint64_t)l.n * l.k / 2,
                    .aux = { l.scales }, .aux_bytes = { (uint64_t)l.n * (l.k / 256) * 4 }, .file = "fuzz blob" };
    snprintf(t.name, sizeof t.name, "w");
    uint64_t budget = 1u << 18;
    fuzz_decode_rows(&t, &budget);
    uint8_t *q = malloc(dtype_row_bytes(DT_Q4_0, l.k));
    FUZZ_CHECK(q != NULL, "oom");
    for (uint64_t r = 0; r < l.n && r * l.k < (1u << 18); r++)
        if (src_row_native(&t, DT_Q4_0, r, q, err) < 0) fuzz_check_err(err);
    free(q);
    return 1;
}

static int pte_one(const uint8_t *data, size_t size) {
    FuzzPart parts[2];
    int n = fuzz_split(data, size, parts, 2);
    int ok = pte_program(parts[0].p, parts[0].n, PTE_STRUCTURE_ONLY);
    pte_program(parts[0].p, parts[0].n, 0);
    if (n == 2) ok &= pte_blob(parts[1].p, parts[1].n);
    return ok;
}

FUZZ_TARGET(NULL, pte_one)
