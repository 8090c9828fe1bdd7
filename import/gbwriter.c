/* import/gbwriter.c: the guard.bin writer (export only; the reader is guardbin.c, the layout
 * FORMAT.md). Tensors and sections are laid out at 64-byte aligned offsets after the tables;
 * tensor bytes are produced one at a time by a callback, so export never holds two converted
 * tensors at once; the file appears atomically (AtomicFile) or not at all. The callback
 * writes rows in order (quantized: row-major blocks, GGUF's order); the writer stores a
 * quantized tensor in the tile order the kernels read (quant.h tile_rows), so every importer
 * gets it without knowing of it.
 */
#include "build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The header's config fields, in guardbin.c get_config's order. */
static void put_config(Buf *b, const Config *c) {
    buf_u32(b, 1); /* architecture: llama */
    buf_u32(b, c->dim); buf_u32(b, c->n_layers); buf_u32(b, c->n_heads); buf_u32(b, c->n_kv_heads);
    buf_u32(b, c->head_dim); buf_u32(b, c->hidden_dim); buf_u32(b, c->vocab_size); buf_u32(b, c->max_seq_len);
    buf_f32(b, c->norm_eps); buf_f32(b, c->rope_theta); buf_u32(b, c->rope_type);
    buf_f32(b, c->rope_factor); buf_f32(b, c->rope_low_freq_factor); buf_f32(b, c->rope_high_freq_factor);
    buf_u32(b, c->rope_orig_max_pos); buf_u32(b, c->tied); buf_u32(b, c->source); buf_u32(b, c->dtype);
    buf_u32(b, c->rope_style); buf_u32(b, c->qk_norm); buf_u32(b, c->attn_temperature_tuning);
    buf_f32(b, c->floor_scale); buf_f32(b, c->attn_scale); buf_u32(b, c->attn_chunk); buf_u32(b, 0);
    for (int i = 0; i < GB_NOPE_LAYERS / 32; i++) buf_u32(b, c->nope[i]);
}

void gbw_init(GbWriter *w, const Config *c) {
    memset(w, 0, sizeof *w);
    w->cfg = *c;
}

void gbw_free(GbWriter *w) {
    free(w->tensors);
    free(w->sections);
    free(w->section_data);
    memset(w, 0, sizeof *w);
}

int gbw_add_tensor(GbWriter *w, const char *name, uint32_t dtype, uint32_t ndim, const uint64_t *shape, char *err) {
    if (strlen(name) >= GB_NAME_MAX || !name[0]) return errf(err, "tensor name '%.64s' empty or longer than %d bytes", name, GB_NAME_MAX - 1);
    for (const char *q = name; *q; q++)
        if (*q < 0x21 || *q > 0x7E) return errf(err, "tensor name has byte 0x%02x (names are printable ASCII)", (unsigned char)*q);
    if (ndim < 1 || ndim > 4) return errf(err, "tensor '%s': %u dimensions", name, ndim);
    if (w->n_tensors == GB_MAX_TENSORS) return errf(err, "too many tensors");
    if (w->n_tensors == w->cap_tensors) {
        uint32_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
        GbTensor *t = realloc(w->tensors, cap * sizeof *t);
        if (!t) return errf(err, "out of memory");
        w->tensors = t;
        w->cap_tensors = cap;
    }
    GbTensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    strcpy(t->name, name);
    t->dtype = dtype;
    t->ndim = ndim;
    uint64_t rows = 1;
    for (uint32_t d = 0; d < 4; d++) {
        t->shape[d] = d < ndim ? shape[d] : 1;
        if (t->shape[d] == 0) return errf(err, "tensor '%s' has a zero dimension", name);
        if (d + 1 < ndim && !mul_u64(rows, t->shape[d], &rows)) return errf(err, "tensor '%s' shape overflows", name);
    }
    uint64_t rb = dtype_row_bytes(dtype, t->shape[ndim - 1]);
    if (rb == 0) return errf(err, "tensor '%s': %llu columns cannot be stored as %s", name, (unsigned long long)t->shape[ndim - 1], dtype_name(dtype) ? dtype_name(dtype) : "?");
    uint64_t row_major;
    if (!mul_u64(rb, rows, &row_major) || !(t->size = tensor_bytes(dtype, rows, t->shape[ndim - 1])))
        return errf(err, "tensor '%s' too large", name);
    w->n_tensors++;
    return 0;
}

int gbw_add_section(GbWriter *w, uint32_t kind, const uint8_t *data, uint64_t size, char *err) {
    if (w->n_sections == GB_MAX_SECTIONS) return errf(err, "too many sections");
    if (kind != SEC_TOKENIZER && kind != SEC_PROMPT && kind != SEC_HEAD_IDS) return errf(err, "unknown section kind %u", kind);
    for (uint32_t i = 0; i < w->n_sections; i++)
        if (w->sections[i].kind == kind) return errf(err, "section kind %u added twice", kind);
    GbSection *s = realloc(w->sections, (w->n_sections + 1) * sizeof *s);
    if (s) w->sections = s;
    const uint8_t **d = realloc(w->section_data, (w->n_sections + 1) * sizeof *d);
    if (d) w->section_data = d;
    if (!s || !d) return errf(err, "out of memory");
    w->sections[w->n_sections] = (GbSection){ kind, 0, size };
    w->section_data[w->n_sections++] = data;
    return 0;
}

static void put_tables(Buf *b, const GbWriter *w, uint64_t file_size, uint64_t data_off, uint32_t data_crc) {
    buf_put(b, GB_MAGIC, 8);
    buf_u32(b, GB_VERSION);
    buf_u32(b, GB_ENDIAN_MARK);
    buf_u64(b, file_size);
    buf_u64(b, GB_HEADER_BYTES);
    buf_u64(b, data_off);
    buf_u32(b, w->n_tensors);
    buf_u32(b, w->n_sections);
    buf_u32(b, 0); /* header crc, patched below */
    buf_u32(b, data_crc);
    put_config(b, &w->cfg);
    static const uint8_t zeros[GB_HEADER_BYTES];
    if (b->len < GB_HEADER_BYTES) buf_put(b, zeros, GB_HEADER_BYTES - b->len);
    for (uint32_t i = 0; i < w->n_sections; i++) {
        buf_u32(b, w->sections[i].kind);
        buf_u32(b, 0);
        buf_u64(b, w->sections[i].offset);
        buf_u64(b, w->sections[i].size);
    }
    for (uint32_t i = 0; i < w->n_tensors; i++) {
        const GbTensor *t = &w->tensors[i];
        buf_put(b, t->name, GB_NAME_MAX);
        buf_u32(b, t->dtype);
        buf_u32(b, t->ndim);
        for (int d = 0; d < 4; d++) buf_u64(b, t->shape[d]);
        buf_u64(b, t->offset);
        buf_u64(b, t->size);
        buf_put(b, zeros, GB_TENSOR_BYTES - GB_NAME_MAX - 8 - 32 - 16);
    }
    if (b->len < data_off) buf_put(b, zeros, data_off - b->len);
    if (!b->oom) {
        uint32_t crc = crc32_update(0, b->p, (size_t)b->len);
        uint8_t *c = b->p + GB_OFF_HEADER_CRC;
        c[0] = (uint8_t)crc, c[1] = (uint8_t)(crc >> 8), c[2] = (uint8_t)(crc >> 16), c[3] = (uint8_t)(crc >> 24);
    }
}

int gbw_write(GbWriter *w, const char *path, GbProduce produce, void *ctx, char *err) {
    if (config_validate(&w->cfg, err)) return -1;
    /* Lay out: header, tables, then sections and tensors at 64-byte aligned offsets. */
    uint64_t off = align_up(GB_HEADER_BYTES + (uint64_t)w->n_sections * GB_SECTION_BYTES + (uint64_t)w->n_tensors * GB_TENSOR_BYTES, GB_ALIGN);
    uint64_t data_off = off;
    for (uint32_t i = 0; i < w->n_sections; i++) {
        w->sections[i].offset = off;
        if (!add_u64(off, w->sections[i].size, &off)) return errf(err, "%s: section too large", path);
        off = align_up(off, GB_ALIGN);
    }
    for (uint32_t i = 0; i < w->n_tensors; i++) {
        w->tensors[i].offset = off;
        if (!add_u64(off, w->tensors[i].size, &off)) return errf(err, "%s: tensors too large", path);
        off = align_up(off, GB_ALIGN);
    }
    uint64_t file_size = off;

    AtomicFile f;
    if (afile_open(&f, path, err)) return -1;
    Buf hdr = { 0 };
    put_tables(&hdr, w, file_size, data_off, 0); /* placeholder; rewritten with the data crc */
    afile_write(&f, hdr.p, (size_t)hdr.len);
    uint32_t crc = 0;
    static const uint8_t zeros[GB_ALIGN];
    uint8_t *buf = NULL, *tiles = NULL; /* the produced rows; a quantized tensor's tile order */
    uint64_t buf_cap = 0, tiles_cap = 0;
    int rc = hdr.oom ? errf(err, "%s: out of memory", path) : 0;
    for (uint32_t i = 0; i < w->n_sections && rc == 0; i++) {
        afile_write(&f, w->section_data[i], (size_t)w->sections[i].size);
        crc = crc32_update(crc, w->section_data[i], (size_t)w->sections[i].size);
        uint64_t pad = align_up(w->sections[i].size, GB_ALIGN) - w->sections[i].size;
        afile_write(&f, zeros, (size_t)pad);
        crc = crc32_update(crc, zeros, (size_t)pad);
    }
    for (uint32_t i = 0; i < w->n_tensors && rc == 0; i++) {
        const GbTensor *t = &w->tensors[i];
        const uint64_t sz = t->size, cols = t->shape[t->ndim - 1], rb = dtype_row_bytes(t->dtype, cols);
        uint64_t rows = 1;
        for (uint32_t d = 0; d + 1 < t->ndim; d++) rows *= t->shape[d]; /* no overflow: gbw_add_tensor checked */
        const int tiled = dtype_tiled(t->dtype);
        if (rows * rb > buf_cap || (tiled && sz > tiles_cap)) {
            free(buf), free(tiles);
            buf = malloc((size_t)(rows * rb));
            tiles = tiled ? malloc((size_t)sz) : NULL;
            buf_cap = buf ? rows * rb : 0;
            tiles_cap = tiles ? sz : 0;
            if (!buf || (tiled && !tiles)) { rc = errf(err, "%s: out of memory for tensor '%s'", path, t->name); break; }
        }
        if (produce(ctx, i, buf, rows * rb, err)) { rc = -1; break; }
        const uint8_t *out = buf;
        if (tiled) {
            tile_rows(t->dtype, rows, cols, buf, tiles);
            out = tiles;
        }
        afile_write(&f, out, (size_t)sz);
        crc = crc32_update(crc, out, (size_t)sz);
        uint64_t pad = align_up(sz, GB_ALIGN) - sz;
        afile_write(&f, zeros, (size_t)pad);
        crc = crc32_update(crc, zeros, (size_t)pad);
    }
    free(buf);
    free(tiles);
    if (rc == 0) {
        buf_free(&hdr);
        put_tables(&hdr, w, file_size, data_off, crc);
        if (hdr.oom || fseeko((FILE *)f.fp, 0, SEEK_SET) != 0) f.failed = 1;
        afile_write(&f, hdr.p, (size_t)hdr.len);
        if (fseeko((FILE *)f.fp, 0, SEEK_END) != 0 || afile_tell(&f) != file_size) f.failed = 1;
        rc = afile_commit(&f, err);
    } else {
        afile_abort(&f);
    }
    buf_free(&hdr);
    return rc;
}

void gb_head_ids_encode(uint8_t *out, const int32_t *ids, uint32_t n) {
    for (int k = 0; k < 4; k++) out[k] = (uint8_t)(n >> 8 * k);
    for (uint32_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) out[4 + 4 * i + (uint32_t)k] = (uint8_t)((uint32_t)ids[i] >> 8 * k);
}
