/* guardbin.c: reading guard.bin, the one flat file `run` maps (layout in FORMAT.md).
 *
 * The reader treats the file as hostile (../shared/style.md lesson 8, SQLite's "corrupt input is an
 * ordinary error"): every count, size and offset is checked in 64-bit arithmetic against the
 * file size before any pointer into the mapping is formed, and the header checksum covers
 * the header and both tables. Loading costs O(tables), never O(weights): the data checksum
 * is only recomputed by gb_verify (./run --verify). The writer is export's: import/gbwriter.c.
 */
#include "guard.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== Config checks shared by the reader and export ==== */

int config_validate(const Config *c, char *err) {
    /* Bounds are far beyond any Llama (405B has dim 16384, 126 layers, vocab 128256) yet keep
     * every derived size well inside 64 bits and every per-row size inside 32 bits. */
    if (c->dim == 0 || c->dim > 65536) return errf(err, "hidden_size %u out of range (1..65536)", c->dim);
    if (c->n_layers == 0 || c->n_layers > 1024) return errf(err, "num_hidden_layers %u out of range (1..1024)", c->n_layers);
    if (c->n_heads == 0 || c->n_heads > 1024) return errf(err, "num_attention_heads %u out of range (1..1024)", c->n_heads);
    if (c->n_kv_heads == 0 || c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        return errf(err, "num_key_value_heads %u must divide num_attention_heads %u", c->n_kv_heads, c->n_heads);
    if (c->head_dim == 0 || c->head_dim > 1024 || c->head_dim % 2)
        return errf(err, "head_dim %u must be even and in 2..1024", c->head_dim);
    if (c->hidden_dim == 0 || c->hidden_dim > 1048576) return errf(err, "intermediate_size %u out of range", c->hidden_dim);
    if (c->vocab_size == 0 || c->vocab_size > 4194304) return errf(err, "vocab_size %u out of range", c->vocab_size);
    if (c->max_seq_len == 0 || c->max_seq_len > 16777216)
        return errf(err, "max_position_embeddings %u out of range", c->max_seq_len);
    if (!(c->norm_eps > 0 && c->norm_eps < 1)) return errf(err, "rms_norm_eps %g out of range (0, 1)", (double)c->norm_eps);
    if (!(c->rope_theta >= 1 && c->rope_theta < 1e12f)) return errf(err, "rope_theta %g out of range", (double)c->rope_theta);
    if (c->rope_type == ROPE_LLAMA3) {
        if (!(c->rope_factor >= 1 && c->rope_factor <= 1e6f)) return errf(err, "rope_scaling.factor %g out of range", (double)c->rope_factor);
        /* low == high (Llama 4 Scout's 1/1): an empty smoothing band, see rope_inv_freq */
        if (!(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor >= c->rope_low_freq_factor && c->rope_high_freq_factor < 1e6f))
            return errf(err, "rope_scaling low/high_freq_factor %g/%g invalid (need 0 < low <= high)",
                        (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor);
        if (c->rope_orig_max_pos == 0) return errf(err, "rope_scaling.original_max_position_embeddings is 0");
    } else if (c->rope_type != ROPE_NONE) return errf(err, "unknown rope type %u", c->rope_type);
    if (c->tied > 1) return errf(err, "tie flag %u is not 0 or 1", c->tied);
    if (c->source < SRC_HF || c->source > SRC_PTE) return errf(err, "unknown source format %u", c->source);
    if (!dtype_name(c->dtype)) return errf(err, "unknown weight dtype %u", c->dtype);
    /* Llama 4 fields */
    if (c->rope_style > ROPE_ADJACENT) return errf(err, "unknown rope style %u", c->rope_style);
    for (uint32_t l = c->n_layers; l < GB_NOPE_LAYERS; l++)
        if (!config_layer_rope(c, l)) return errf(err, "no_rope flag set for layer %u of %u", l, c->n_layers);
    if (c->qk_norm > 1 || c->attn_temperature_tuning > 1) return errf(err, "use_qk_norm / attn_temperature_tuning flag is not 0 or 1");
    if (c->attn_temperature_tuning && !(c->floor_scale >= 1 && c->floor_scale <= 1e9f))
        return errf(err, "floor_scale %g out of range (1..1e9)", (double)c->floor_scale);
    if (!(c->attn_scale > -1e6f && c->attn_scale < 1e6f) || !(c->floor_scale >= 0 && c->floor_scale <= 1e9f))
        return errf(err, "attn_scale %g / floor_scale %g out of range", (double)c->attn_scale, (double)c->floor_scale);
    if (c->attn_chunk > c->max_seq_len) return errf(err, "attention_chunk_size %u exceeds the context %u", c->attn_chunk, c->max_seq_len);
    return 0;
}

/* ==== Header fields (import/gbwriter.c put_config writes them in this order) ==== */

static uint32_t get_config(Reader *r, Config *c) {
    uint32_t arch = rd_u32(r);
    c->dim = rd_u32(r); c->n_layers = rd_u32(r); c->n_heads = rd_u32(r); c->n_kv_heads = rd_u32(r);
    c->head_dim = rd_u32(r); c->hidden_dim = rd_u32(r); c->vocab_size = rd_u32(r); c->max_seq_len = rd_u32(r);
    c->norm_eps = rd_f32(r); c->rope_theta = rd_f32(r); c->rope_type = rd_u32(r);
    c->rope_factor = rd_f32(r); c->rope_low_freq_factor = rd_f32(r); c->rope_high_freq_factor = rd_f32(r);
    c->rope_orig_max_pos = rd_u32(r); c->tied = rd_u32(r); c->source = rd_u32(r); c->dtype = rd_u32(r);
    c->rope_style = rd_u32(r); c->qk_norm = rd_u32(r); c->attn_temperature_tuning = rd_u32(r);
    c->floor_scale = rd_f32(r); c->attn_scale = rd_f32(r); c->attn_chunk = rd_u32(r);
    if (rd_u32(r)) arch = 0; /* reserved word 156: must be zero */
    for (int i = 0; i < GB_NOPE_LAYERS / 32; i++) c->nope[i] = rd_u32(r);
    return arch;
}

/* ==== Reader ==== */

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const GbTensor *const *)a)->name, (*(const GbTensor *const *)b)->name);
}

/* A byte range [off, off+size) must sit inside the data region, aligned. */
static int check_range(const GuardFile *g, uint64_t off, uint64_t size, const char *what, const char *name, char *err) {
    uint64_t end;
    if (off % GB_ALIGN) return errf(err, "%s: %s '%s' offset %llu is not %d-byte aligned", g->path, what, name, (unsigned long long)off, GB_ALIGN);
    if (off < g->data_offset || !add_u64(off, size, &end) || end > g->map.size)
        return errf(err, "%s: %s '%s' bytes [%llu, +%llu) lie outside the data region (file is %llu bytes)", g->path, what, name,
                    (unsigned long long)off, (unsigned long long)size, (unsigned long long)g->map.size);
    return 0;
}

/* The data region holds exactly the sections and tensors, each at the next 64-byte boundary
 * after the previous one (gbw_write's layout, FORMAT.md): no two ranges overlap (a lying table
 * could alias weights), no unaccounted bytes hide between them, and the file ends with the last
 * one's padding. */
typedef struct {
    uint64_t off, size;
    const char *what, *name;
} Range;

static int cmp_range(const void *a, const void *b) {
    const Range *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off ? 1 : (x->size > y->size) - (x->size < y->size);
}

static int check_layout(const GuardFile *g, char *err) {
    uint64_t n = (uint64_t)g->n_sections + g->n_tensors;
    Range *r = malloc((size_t)n * sizeof *r);
    if (!r) return errf(err, "%s: out of memory", g->path);
    static const char *const sec_names[] = { "?", "tokenizer", "prompt", "output ids" };
    for (uint32_t i = 0; i < g->n_sections; i++)
        r[i] = (Range){ .off = g->sections[i].offset, .size = g->sections[i].size, .what = "section",
                        .name = sec_names[g->sections[i].kind] };
    for (uint32_t i = 0; i < g->n_tensors; i++)
        r[g->n_sections + i] = (Range){ .off = g->tensors[i].offset, .size = g->tensors[i].size, .what = "tensor",
                                        .name = g->tensors[i].name };
    qsort(r, (size_t)n, sizeof *r, cmp_range);
    uint64_t expect = g->data_offset; /* where the next range must start; ends are in range (check_range) */
    int rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        if (r[i].off < expect)
            rc = errf(err, "%s: %s '%s' and %s '%s' overlap", g->path, r[i - 1].what, r[i - 1].name, r[i].what, r[i].name);
        else if (r[i].off > expect)
            rc = errf(err, "%s: %llu unaccounted bytes before %s '%s'", g->path, (unsigned long long)(r[i].off - expect), r[i].what,
                      r[i].name);
        expect = align_up(r[i].off + r[i].size, GB_ALIGN);
    }
    if (rc == 0 && expect != g->map.size)
        rc = errf(err, "%s: %llu unaccounted bytes after the last tensor", g->path, (unsigned long long)(g->map.size - expect));
    free(r);
    return rc;
}

static int check_tensors(GuardFile *g, char *err) {
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        GbTensor *t = &g->tensors[i];
        const char *nul = memchr(t->name, 0, GB_NAME_MAX);
        if (nul == NULL || t->name[0] == 0)
            return errf(err, "%s: tensor %u has an unterminated or empty name", g->path, i);
        for (const char *q = t->name; q < nul; q++) /* names are quoted in messages: keep them one printable line */
            if (*q < 0x21 || *q > 0x7E)
                return errf(err, "%s: tensor %u has byte 0x%02x in its name (names are printable ASCII)", g->path, i, (unsigned char)*q);
        for (const char *q = nul; q < t->name + GB_NAME_MAX; q++)
            if (*q) return errf(err, "%s: tensor '%s' has bytes after its name's NUL (names are NUL-padded)", g->path, t->name);
        if (!dtype_name(t->dtype)) return errf(err, "%s: tensor '%s' has unknown dtype %u", g->path, t->name, t->dtype);
        if (t->ndim < 1 || t->ndim > 4) return errf(err, "%s: tensor '%s' has %u dimensions (1..4 allowed)", g->path, t->name, t->ndim);
        uint64_t rows = 1;
        for (uint32_t d = 0; d < 4; d++) {
            if (t->shape[d] == 0 || (d >= t->ndim && t->shape[d] != 1))
                return errf(err, "%s: tensor '%s' has a bad shape", g->path, t->name);
            if (d + 1 < t->ndim && !mul_u64(rows, t->shape[d], &rows))
                return errf(err, "%s: tensor '%s' shape overflows", g->path, t->name);
        }
        /* quantized tensors are stored in tile order, rows padded to whole groups (quant.h) */
        const uint64_t bytes = tensor_bytes(t->dtype, rows, t->shape[t->ndim - 1]);
        if (bytes == 0 || bytes != t->size)
            return errf(err, "%s: tensor '%s' is %llu bytes but its dtype %s and shape need %llu", g->path, t->name,
                        (unsigned long long)t->size, dtype_name(t->dtype), (unsigned long long)bytes);
        if (check_range(g, t->offset, t->size, "tensor", t->name, err)) return -1;
    }
    if (check_layout(g, err)) return -1;
    const GbTensor **order = malloc((size_t)g->n_tensors * sizeof *order + 1);
    if (!order) return errf(err, "%s: out of memory", g->path);
    for (uint32_t i = 0; i < g->n_tensors; i++) order[i] = &g->tensors[i];
    int bad = 0;
    /* Names must be unique, or lookups by name would be ambiguous. */
    qsort(order, g->n_tensors, sizeof *order, cmp_name);
    for (uint32_t i = 1; i < g->n_tensors && !bad; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
            errf(err, "%s: tensor name '%s' appears twice", g->path, order[i]->name);
            bad = 1;
        }
    free(order);
    return bad ? -1 : 0;
}

int gb_open(GuardFile *g, const char *path, char *err) {
    memset(g, 0, sizeof *g);
    g->path = path;
    if (map_file(&g->map, path, err)) return -1;
    const uint8_t *p = g->map.data;
    uint64_t fsize = g->map.size;
    if (fsize < GB_HEADER_BYTES || memcmp(p, GB_MAGIC, 8) != 0) {
        gb_close(g);
        return errf(err, "%s: not a guard.bin file (bad magic or shorter than its header)", path);
    }
    Reader r = reader(p, GB_HEADER_BYTES);
    rd_bytes(&r, 8);
    uint32_t version = rd_u32(&r), mark = rd_u32(&r);
    uint64_t file_size = rd_u64(&r), table_off = rd_u64(&r);
    g->data_offset = rd_u64(&r);
    g->n_tensors = rd_u32(&r);
    g->n_sections = rd_u32(&r);
    uint32_t header_crc = rd_u32(&r);
    g->data_crc = rd_u32(&r);
    uint32_t arch = get_config(&r, &g->cfg);
    const char *why = NULL;
    if (mark != GB_ENDIAN_MARK) why = "wrong byte order mark (file written on a big-endian machine or corrupt)";
    else if (version == 1) why = "guard.bin version 1 (weights in row order, before the Llama 4 fields) is no longer read: re-export the checkpoint with this build's ./export (it writes version 2)";
    else if (version != GB_VERSION) why = "unsupported version (re-export it with this build's ./export)";
    else if (file_size != fsize) why = "truncated or extended: size recorded in the header differs from the file size";
    else if (table_off != GB_HEADER_BYTES) why = "bad table offset";
    else if (g->n_tensors == 0 || g->n_tensors > GB_MAX_TENSORS || g->n_sections > GB_MAX_SECTIONS) why = "implausible tensor or section count";
    else if (g->data_offset != align_up(GB_HEADER_BYTES + (uint64_t)g->n_sections * GB_SECTION_BYTES + (uint64_t)g->n_tensors * GB_TENSOR_BYTES, GB_ALIGN) ||
             g->data_offset > fsize) why = "tables do not fit the file";
    else if (arch != 1) why = "unknown architecture (or non-zero reserved header word at 156)";
    for (uint64_t k = r.pos; k < GB_HEADER_BYTES && !why; k++)
        if (p[k]) why = "reserved header bytes (192..255) are not zero";
    if (why) {
        gb_close(g);
        return errf(err, "%s: %s", path, why);
    }
    /* Header checksum: bytes [0, data_offset) with the checksum field itself read as zero. */
    static const uint8_t zero4[4];
    uint32_t crc = crc32_update(0, p, GB_OFF_HEADER_CRC);
    crc = crc32_update(crc, zero4, 4);
    crc = crc32_update(crc, p + GB_OFF_HEADER_CRC + 4, (size_t)(g->data_offset - GB_OFF_HEADER_CRC - 4));
    if (crc != header_crc) {
        gb_close(g);
        return errf(err, "%s: header checksum mismatch (file is corrupt)", path);
    }
    if (config_validate(&g->cfg, err)) {
        char tmp[ERRLEN];
        snprintf(tmp, sizeof tmp, "%s: bad hyperparameter: %s", path, err);
        gb_close(g);
        return errf(err, "%s", tmp);
    }
    g->sections = calloc(g->n_sections + 1, sizeof *g->sections);
    g->tensors = calloc(g->n_tensors, sizeof *g->tensors);
    if (!g->sections || !g->tensors) {
        gb_close(g);
        return errf(err, "%s: out of memory", path);
    }
    r = reader(p + GB_HEADER_BYTES, g->data_offset - GB_HEADER_BYTES);
    for (uint32_t i = 0; i < g->n_sections; i++) {
        GbSection *s = &g->sections[i];
        s->kind = rd_u32(&r);
        uint32_t reserved = rd_u32(&r);
        s->offset = rd_u64(&r);
        s->size = rd_u64(&r);
        char nm[16];
        snprintf(nm, sizeof nm, "%u", s->kind);
        const char *bad = reserved ? "has a non-zero reserved field"
                          : s->kind != SEC_TOKENIZER && s->kind != SEC_PROMPT && s->kind != SEC_HEAD_IDS ? "has an unknown kind (1 tokenizer, 2 prompt, 3 output ids)"
                          : NULL;
        for (uint32_t k = 0; k < i && !bad; k++)
            if (g->sections[k].kind == s->kind) bad = "appears twice";
        if (bad) {
            errf(err, "%s: section %u (kind %s) %s", path, i, nm, bad);
            gb_close(g);
            return -1;
        }
        if (check_range(g, s->offset, s->size, "section", nm, err)) { gb_close(g); return -1; }
    }
    for (uint32_t i = 0; i < g->n_tensors; i++) {
        GbTensor *t = &g->tensors[i];
        memcpy(t->name, rd_bytes(&r, GB_NAME_MAX), GB_NAME_MAX);
        t->dtype = rd_u32(&r);
        t->ndim = rd_u32(&r);
        for (int d = 0; d < 4; d++) t->shape[d] = rd_u64(&r);
        t->offset = rd_u64(&r);
        t->size = rd_u64(&r);
        const uint8_t *pad = rd_bytes(&r, GB_TENSOR_BYTES - GB_NAME_MAX - 8 - 32 - 16);
        if (pad && (ld_u64(pad) != 0)) {
            gb_close(g);
            return errf(err, "%s: tensor record %u has non-zero reserved bytes", path, i);
        }
    }
    if (r.bad) { gb_close(g); return errf(err, "%s: tables truncated", path); }
    if (check_tensors(g, err)) { gb_close(g); return -1; }
    int32_t ids[GB_HEAD_MAX];
    uint32_t n_head;
    if (gb_head_ids(g, ids, &n_head, err)) { gb_close(g); return -1; } /* the output ids section, if any */
    return 0;
}

void gb_close(GuardFile *g) {
    unmap_file(&g->map);
    free(g->tensors);
    free(g->sections);
    g->tensors = NULL;
    g->sections = NULL;
}

int gb_verify(const GuardFile *g, char *err) {
    uint32_t crc = crc32_update(0, g->map.data + g->data_offset, (size_t)(g->map.size - g->data_offset));
    if (crc != g->data_crc)
        return errf(err, "%s: data checksum mismatch (recorded %08x, computed %08x): the weights are corrupt", g->path, g->data_crc, crc);
    return 0;
}

const GbTensor *gb_find(const GuardFile *g, const char *name) {
    for (uint32_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

const uint8_t *gb_data(const GuardFile *g, const GbTensor *t) { return g->map.data + t->offset; }

int gb_head_ids(const GuardFile *g, int32_t *ids, uint32_t *n, char *err) {
    uint64_t size;
    const uint8_t *p = gb_section(g, SEC_HEAD_IDS, &size);
    *n = 0;
    if (!p) return 0;
    uint32_t count = size >= 4 ? ld_u32(p) : 0;
    if (count == 0 || count > GB_HEAD_MAX || size != 4 + 4 * (uint64_t)count)
        return errf(err, "%s: the output ids section holds %u ids in %llu bytes (1..%d ids, 4 bytes each after the count)", g->path, count,
                    (unsigned long long)size, GB_HEAD_MAX);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t id = ld_u32(p + 4 + 4 * (uint64_t)i);
        if (id >= g->cfg.vocab_size) return errf(err, "%s: output id %u is outside the vocabulary (%u)", g->path, id, g->cfg.vocab_size);
        for (uint32_t k = 0; k < i; k++)
            if ((uint32_t)ids[k] == id) return errf(err, "%s: output id %u appears twice", g->path, id);
        ids[i] = (int32_t)id;
    }
    *n = count;
    return 0;
}

const uint8_t *gb_section(const GuardFile *g, uint32_t kind, uint64_t *size) {
    for (uint32_t i = 0; i < g->n_sections; i++)
        if (g->sections[i].kind == kind) {
            *size = g->sections[i].size;
            return g->map.data + g->sections[i].offset;
        }
    *size = 0;
    return NULL;
}
