/* import/import.c: the parts of reading a checkpoint that every format shares: owning mapped
 * files, the tensor list, and decoding one logical row of a source tensor (un-permuting
 * interleaved RoPE rows, then dispatching on the stored encoding). */
#include "import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


void source_free(Source *s) {
    for (int i = 0; i < s->n_maps; i++) {
        unmap_file(&s->maps[i]);
        free(s->paths[i]);
    }
    free(s->t);
    tok_free(s->tok);
    free(s->chat_template);
    memset(s, 0, sizeof *s);
}

int source_map(Source *s, const char *path, const MappedFile **m, const char **kept_path, char *err) {
    if (s->n_maps == SRC_MAX_FILES) return errf(err, "%s: more than %d files", path, SRC_MAX_FILES);
    if (map_file(&s->maps[s->n_maps], path, err)) return -1;
    s->paths[s->n_maps] = strdup(path);
    if (!s->paths[s->n_maps]) {
        unmap_file(&s->maps[s->n_maps]);
        return errf(err, "out of memory");
    }
    *m = &s->maps[s->n_maps];
    if (kept_path) *kept_path = s->paths[s->n_maps];
    s->n_maps++;
    return 0;
}

int source_add(Source *s, const SrcTensor *t, char *err) {
    if (memchr(t->name, 0, GB_NAME_MAX) == NULL) return errf(err, "%s: tensor name too long", t->file);
    if (source_find(s, t->name)) return errf(err, "%s: tensor '%s' appears twice", t->file, t->name);
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 512;
        SrcTensor *q = realloc(s->t, (size_t)cap * sizeof *q);
        if (!q) return errf(err, "out of memory");
        s->t = q;
        s->cap = cap;
    }
    s->t[s->n++] = *t;
    return 0;
}

const SrcTensor *source_find(const Source *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->t[i].name, name) == 0) return &s->t[i];
    return NULL;
}

uint64_t src_rows(const SrcTensor *t) { return t->ndim > 1 ? t->shape[0] : 1; }

uint64_t src_cols(const SrcTensor *t) {
    uint64_t c = 1;
    for (uint32_t d = t->ndim > 1 ? 1 : 0; d < t->ndim; d++) c *= t->shape[d];
    return c;
}

/* ==== Plain float encodings (row-major, row r at r * cols * size) ==== */

static int row_float(const SrcTensor *t, uint64_t r, float *out, char *err) {
    (void)err;
    uint64_t cols = src_cols(t);
    size_t esize = t->type == ST_F32 ? 4 : 2;
    const uint8_t *p = t->data + r * cols * esize;
    for (uint64_t i = 0; i < cols; i++)
        out[i] = t->type == ST_F32 ? ld_f32(p + 4 * i) : t->type == ST_BF16 ? bf16_to_f32(ld_u16(p + 2 * i)) : f16_to_f32(ld_u16(p + 2 * i));
    return 0;
}

const SrcType src_types[ST_TYPE_COUNT] = {
    [ST_F32] = { "F32", row_float },
    [ST_F16] = { "F16", row_float },
    [ST_BF16] = { "BF16", row_float },
};

int src_row_f32(const SrcTensor *t, uint64_t r, float *out, char *err) {
    uint64_t stored = r;
    if (t->interleaved_heads) {
        /* GGUF/Meta row h*hd + 2j + k holds HF row h*hd + k*hd/2 + j (imports/README.md fact 1). */
        uint64_t hd = src_rows(t) / t->interleaved_heads, h = r / hd, rem = r % hd, k = rem / (hd / 2), j = rem % (hd / 2);
        stored = h * hd + 2 * j + k;
    }
    if (t->type >= ST_TYPE_COUNT || !src_types[t->type].row_f32) return errf(err, "%s: tensor '%s' has an unknown encoding", t->file, t->name);
    return src_types[t->type].row_f32(t, stored, out, err);
}

/* ==== Files ==== */

void ckpt_path(char *out, size_t n, const char *dir, const char *name) {
    snprintf(out, n, "%s/%s", dir, name);
    struct stat st;
    if (stat(out, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0 || st.st_size > 1024) return;
    FILE *f = fopen(out, "rb");
    if (!f) return;
    char target[1100];
    size_t k = fread(target, 1, sizeof target - 1, f);
    fclose(f);
    target[k] = 0;
    if (target[0] == '{' || target[0] == '/' || strchr(target, '\n') || strlen(target) != k) return;
    char resolved[4096];
    snprintf(resolved, sizeof resolved, "%s/%s", dir, target);
    if (stat(resolved, &st) == 0 && S_ISREG(st.st_mode)) snprintf(out, n, "%s", resolved);
}

int load_json_file(Json *j, const char *path, char *err) {
    char *text;
    uint64_t len;
    if (read_text_file(path, 64ull << 20, &text, &len, err)) return -1;
    char jerr[ERRLEN];
    int rc = json_parse(j, text, (size_t)len, jerr);
    free(text);
    return rc ? errf(err, "%s: malformed JSON: %s", path, jerr) : 0;
}
