/* import/import.c: the parts of reading a checkpoint that every format shares: owning mapped
 * files, the tensor list, decoding one logical row of a source tensor (un-permuting
 * interleaved RoPE rows, then dispatching on the stored encoding), and choosing the importer
 * from what the path is. Non-goal: guessing a format from anything but its files. */
#include "import.h"

#include <math.h>
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
    if (s->n >= SRC_MAX_TENSORS) return errf(err, "%s: more than %d tensors (not a Llama checkpoint)", t->file, SRC_MAX_TENSORS);
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
    [ST_F32] = { .name = "F32", .row_f32 = row_float },
    [ST_F16] = { .name = "F16", .row_f32 = row_float },
    [ST_BF16] = { .name = "BF16", .row_f32 = row_float },
    [ST_Q4_0] = { .name = "Q4_0", .row_f32 = gguf_row_f32, .copy_dt = DT_Q4_0 },
    [ST_Q4_1] = { .name = "Q4_1", .row_f32 = gguf_row_f32 },
    [ST_Q5_0] = { .name = "Q5_0", .row_f32 = gguf_row_f32 },
    [ST_Q5_1] = { .name = "Q5_1", .row_f32 = gguf_row_f32 },
    [ST_Q8_0] = { .name = "Q8_0", .row_f32 = gguf_row_f32, .copy_dt = DT_Q8_0 },
    [ST_Q4_K] = { .name = "Q4_K", .row_f32 = gguf_row_f32 },
    [ST_Q5_K] = { .name = "Q5_K", .row_f32 = gguf_row_f32 },
    [ST_Q6_K] = { .name = "Q6_K", .row_f32 = gguf_row_f32 },
    [ST_AWQ] = { .name = "AWQ", .row_f32 = hfq_row_awq },
    [ST_BNB_INT8] = { .name = "bnb-int8", .row_f32 = hfq_row_bnb },
    [ST_PTE_Q4] = { .name = "ExecuTorch int4 g256", .row_f32 = pte_row_q4_f32, .native_dt = DT_Q4_0, .row_native = pte_row_q4_native },
    [ST_PTE_EMB4] = { .name = "ExecuTorch int4 g32 embedding", .row_f32 = pte_row_emb4_f32, .native_dt = DT_Q4_0, .row_native = pte_row_emb4_native },
};

uint64_t src_stored_row(const SrcTensor *t, uint64_t r) {
    if (!t->interleaved_heads) return r;
    /* GGUF/Meta row h*hd + 2j + k holds HF row h*hd + k*hd/2 + j (imports/README.md fact 1). */
    uint64_t hd = src_rows(t) / t->interleaved_heads, h = r / hd, rem = r % hd, k = rem / (hd / 2), j = rem % (hd / 2);
    return h * hd + 2 * j + k;
}

int src_row_f32(const SrcTensor *t, uint64_t r, float *out, char *err) {
    if (t->type >= ST_TYPE_COUNT || !src_types[t->type].row_f32) return errf(err, "%s: tensor '%s' has an unknown encoding", t->file, t->name);
    return src_types[t->type].row_f32(t, src_stored_row(t, r), out, err);
}

const uint8_t *src_raw_row(const SrcTensor *t, uint32_t dt, uint64_t r) {
    if (t->type >= ST_TYPE_COUNT || dt == DT_F32 || src_types[t->type].copy_dt != dt) return NULL;
    /* row-addressable encodings hold rows * row_bytes bytes; the guard dtype must agree exactly */
    uint64_t rows = src_rows(t), rb = t->bytes / rows;
    if (rb * rows != t->bytes || rb != dtype_row_bytes(dt, src_cols(t))) return NULL;
    return t->data + src_stored_row(t, r) * rb;
}

int src_row_native(const SrcTensor *t, uint32_t dt, uint64_t r, uint8_t *dst, char *err) {
    if (t->type >= ST_TYPE_COUNT || !src_types[t->type].row_native || src_types[t->type].native_dt != dt) return 1;
    return src_types[t->type].row_native(t, src_stored_row(t, r), dst, err);
}

/* ==== Llama 3 RoPE scaling from frequency divisors ==== */

#define RF_LOW 1.0
#define RF_HIGH 4.0
#define RF_ORIG 8192.0
#define RF_TOL 2e-6 /* relative: f32 divisors are within ~2e-7 of the f64 formula */

/* llama-models apply_scaling (and HF's _compute_llama3_parameters), as a divisor. */
static double llama3_divisor(double inv_freq, double factor) {
    double wavelen = 2 * M_PI / inv_freq, lo_wl = RF_ORIG / RF_LOW, hi_wl = RF_ORIG / RF_HIGH;
    if (wavelen < hi_wl) return 1;
    if (wavelen > lo_wl) return factor;
    double smooth = (RF_ORIG / wavelen - RF_LOW) / (RF_HIGH - RF_LOW);
    return 1 / ((1 - smooth) / factor + smooth);
}

int rope_from_divisors(Config *c, const double *div, const char *what, char *err) {
    uint32_t half = c->head_dim / 2;
    /* the factor itself is stored for long wavelengths; only a model too small to have any
     * needs it solved from an interpolated entry: 1/d = (1 - smooth)/factor + smooth */
    double factor = 0, solved = 0;
    int all_one = 1;
    for (uint32_t i = 0; i < half; i++) {
        double d = div[i], inv = pow((double)c->rope_theta, -(double)(2 * i) / (double)c->head_dim);
        if (!(d >= 1 - RF_TOL && d < 1e6)) return errf(err, "%s[%u] = %g is not a frequency divisor", what, i, d);
        all_one &= fabs(d - 1) <= RF_TOL;
        double wavelen = 2 * M_PI / inv, smooth = (RF_ORIG / wavelen - RF_LOW) / (RF_HIGH - RF_LOW);
        if (factor == 0 && wavelen > RF_ORIG / RF_LOW) factor = d;
        else if (solved == 0 && wavelen >= RF_ORIG / RF_HIGH && smooth < 1 && 1 / d - smooth > 0) solved = (1 - smooth) / (1 / d - smooth);
    }
    if (factor == 0) factor = solved;
    if (all_one) return 0; /* scaling leaves every pair alone: plain RoPE */
    if (!(factor > 1 && factor < 1e6)) return errf(err, "%s does not look like llama3 RoPE scaling (no factor found)", what);
    for (uint32_t i = 0; i < half; i++) {
        double d = div[i], want = llama3_divisor(pow((double)c->rope_theta, -(double)(2 * i) / (double)c->head_dim), factor);
        if (fabs(d - want) > RF_TOL * want)
            return errf(err, "%s[%u] = %.9g but llama3 scaling (factor %g, low 1, high 4, original context 8192) gives %.9g", what, i, d, factor, want);
    }
    c->rope_type = ROPE_LLAMA3;
    c->rope_factor = (float)factor;
    c->rope_low_freq_factor = (float)RF_LOW;
    c->rope_high_freq_factor = (float)RF_HIGH;
    c->rope_orig_max_pos = (uint32_t)RF_ORIG;
    return 0;
}

/* ==== Choosing the importer ==== */

static int has_gguf_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[4] = { 0 };
    size_t n = fread(m, 1, 4, f);
    fclose(f);
    return n == 4 && memcmp(m, "GGUF", 4) == 0;
}

int source_open(Source *s, const char *path, const ImportOptions *opt, char *err) {
    memset(s, 0, sizeof *s);
    struct stat st;
    if (stat(path, &st) != 0) return errf(err, "%s: no such file or folder", path);
    size_t n = strlen(path);
    int rc;
    if (!S_ISDIR(st.st_mode)) {
        /* Ollama blobs are named sha256-<hex>, without extension: the magic decides */
        if (!has_gguf_magic(path) && !(n >= 5 && strcmp(path + n - 5, ".gguf") == 0))
            return errf(err, "%s: not a GGUF file (no GGUF magic); other checkpoint formats are folders", path);
        rc = gguf_open(s, path, err);
    } else {
        /* HF repos of Meta models carry both: safetensors win, original/ is the fallback */
        char a[4096], b[4096];
        ckpt_path(a, sizeof a, path, "model.safetensors");
        ckpt_path(b, sizeof b, path, "model.safetensors.index.json");
        int safetensors = ckpt_is_file(a) || ckpt_is_file(b);
        snprintf(a, sizeof a, "%s/original/params.json", path);
        snprintf(b, sizeof b, "%s/params.json", path);
        char pte[4096];
        if (!safetensors && pte_find(path, pte, sizeof pte)) {
            rc = pte_open(s, path, err);
        } else if (!safetensors && ckpt_is_file(a)) {
            snprintf(a, sizeof a, "%s/original", path);
            rc = meta_open(s, a, opt, err);
        } else if (!safetensors && ckpt_is_file(b)) {
            rc = meta_open(s, path, opt, err);
        } else {
            rc = hf_open(s, path, err);
        }
    }
    if (rc) return -1;
    s->origin = path;
    if (opt && opt->rope_factor > 0 && s->cfg.source != SRC_META) {
        source_free(s);
        return errf(err, "%s: --rope-factor is only for Meta original checkpoints (this one records its own RoPE scaling)", path);
    }
    return 0;
}

/* ==== Files ==== */

int ckpt_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

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

/* ==== Tensor names ==== */

const NameMap *map_tensor_name(const char *name, const char *layer_prefix, const NameMap *global, const NameMap *layer, char *hf,
                               uint32_t *layer_no) {
    size_t n = strlen(name), pl = strlen(layer_prefix);
    snprintf(hf, GB_NAME_MAX, "%s", name);
    if (n < 7 || strcmp(name + n - 7, ".weight") != 0) return NULL;
    n -= 7;
    for (const NameMap *m = global; m->from; m++)
        if (strlen(m->from) == n && memcmp(name, m->from, n) == 0) {
            snprintf(hf, GB_NAME_MAX, "%s.weight", m->to);
            return m;
        }
    /* "<prefix>N.<part>": N decimal without leading zeros, so each layer has one spelling */
    if (n <= pl || memcmp(name, layer_prefix, pl) != 0) return NULL;
    const char *p = name + pl, *end = name + n;
    uint64_t l = 0;
    const char *digits = p;
    while (p < end && *p >= '0' && *p <= '9' && l < 1000000) l = l * 10 + (uint64_t)(*p++ - '0');
    if (p == digits || p >= end || *p != '.' || (*digits == '0' && p - digits > 1) || l >= 1000000) return NULL;
    p++;
    for (const NameMap *m = layer; m->from; m++)
        if (strlen(m->from) == (size_t)(end - p) && memcmp(p, m->from, (size_t)(end - p)) == 0) {
            snprintf(hf, GB_NAME_MAX, "model.layers.%u.%s.weight", (unsigned)l, m->to);
            *layer_no = (uint32_t)l;
            return m;
        }
    return NULL;
}

/* ==== Vocabulary ==== */

int vocab_kind(int32_t type, int allow_byte) {
    switch (type) {
    case 1: return TOKK_NORMAL;
    case 2: /* UNKNOWN */
    case 3: /* CONTROL */
    case 4: /* USER_DEFINED: this runtime never matches added tokens in text, so they are specials too */
    case 5: /* UNUSED */
        return TOKK_SPECIAL;
    case 6: return allow_byte ? TOKK_BYTE : -1;
    default: return -1;
    }
}
