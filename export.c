/* export.c: turn a Hugging Face Llama checkpoint into one guard.bin.
 *
 *   ./export HF_DIR OUT.bin [--dtype f32|bf16|q8|q4] [--guard lg1|lg2|lg3-8b|lg3-1b]
 *
 * Reads config.json, model.safetensors (or the shards named by model.safetensors.index.json),
 * tokenizer.json and tokenizer_config.json. Mirrors transformers' LlamaConfig defaults and
 * safetensors' header rules. Every input is untrusted: each JSON value is type- and range-checked,
 * each tensor's byte range is checked against its file and its dtype/shape, and the output is
 * written to a temporary file that is renamed only when complete.
 * Exit status: 0 ok, 2 any error (one line on stderr naming the file and the problem).
 */
#include "guard.h"
#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_JSON_BYTES (64ull << 20)   /* config/tokenizer/index files */
#define MAX_ST_HEADER (100ull << 20)   /* safetensors' own limit */
#define MAX_SHARDS 256

/* ==== Checkpoint files ==== */

/* A checkpoint file path. Checkouts made without symlink support (git core.symlinks=false, some
 * archive tools) leave a symlink as a tiny text file holding its relative target; follow one such
 * hop so such checkpoints export as they would with real links. */
static int ckpt_path(char *out, size_t n, const char *dir, const char *name) {
    snprintf(out, n, "%s/%s", dir, name);
    struct stat st;
    if (stat(out, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0 || st.st_size > 1024) return 0;
    FILE *f = fopen(out, "rb");
    if (!f) return 0;
    char target[1100];
    size_t k = fread(target, 1, sizeof target - 1, f);
    fclose(f);
    target[k] = 0;
    if (target[0] == '{' || target[0] == '/' || strchr(target, '\n') || strlen(target) != k) return 0;
    char resolved[4096];
    snprintf(resolved, sizeof resolved, "%s/%s", dir, target);
    if (stat(resolved, &st) == 0 && S_ISREG(st.st_mode)) snprintf(out, n, "%s", resolved);
    return 0;
}

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int load_json(Json *j, const char *path, char *err) {
    char *text;
    uint64_t len;
    if (read_text_file(path, MAX_JSON_BYTES, &text, &len, err)) return -1;
    char jerr[ERRLEN];
    int rc = json_parse(j, text, (size_t)len, jerr);
    free(text);
    return rc ? errf(err, "%s: malformed JSON: %s", path, jerr) : 0;
}

/* ==== config.json -> Config (LlamaConfig defaults where HF has them) ==== */

static int cfg_u32(const Json *j, const char *path, const char *key, int required, uint32_t def, uint32_t *out, char *err) {
    const JsonNode *n = json_get(j, json_root(j), key);
    if (!n || n->type == JSON_NULL) {
        if (required) return errf(err, "%s: missing \"%s\"", path, key);
        *out = def;
        return 0;
    }
    int64_t v;
    if (json_int(n, 1, 0x7FFFFFFF, &v)) return errf(err, "%s: \"%s\" must be a positive integer", path, key);
    *out = (uint32_t)v;
    return 0;
}

static int num_field(const Json *j, const JsonNode *obj, const char *path, const char *key, int required, double def, double *out, char *err) {
    const JsonNode *n = json_get(j, obj, key);
    if (!n || n->type == JSON_NULL) {
        if (required) return errf(err, "%s: missing \"%s\"", path, key);
        *out = def;
        return 0;
    }
    if (n->type != JSON_NUMBER || n->num != n->num) return errf(err, "%s: \"%s\" must be a number", path, key);
    *out = n->num;
    return 0;
}

static int read_config(const char *path, Config *c, char *err) {
    Json j;
    if (load_json(&j, path, err)) return -1;
    const JsonNode *root = json_root(&j), *n;
    int rc = -1;
    memset(c, 0, sizeof *c);
    if (root->type != JSON_OBJECT) { errf(err, "%s: not a JSON object", path); goto done; }
    n = json_get(&j, root, "model_type");
    if (!n || n->type != JSON_STRING || strcmp(n->str, "llama") != 0) {
        errf(err, "%s: model_type must be \"llama\" (got %s)", path, n && n->type == JSON_STRING ? n->str : "none");
        goto done;
    }
    n = json_get(&j, root, "hidden_act");
    if (n && (n->type != JSON_STRING || strcmp(n->str, "silu") != 0)) { errf(err, "%s: hidden_act must be \"silu\"", path); goto done; }
    const char *no_bias[] = { "attention_bias", "mlp_bias" };
    for (int i = 0; i < 2; i++) {
        n = json_get(&j, root, no_bias[i]);
        if (n && n->type != JSON_FALSE && n->type != JSON_NULL) { errf(err, "%s: %s is not supported (Llama has no biases)", path, no_bias[i]); goto done; }
    }
    if (json_get(&j, root, "quantization_config")) {
        errf(err, "%s: quantized checkpoints (quantization_config) are not supported by this exporter", path);
        goto done;
    }
    if (cfg_u32(&j, path, "hidden_size", 1, 0, &c->dim, err) || cfg_u32(&j, path, "num_hidden_layers", 1, 0, &c->n_layers, err) ||
        cfg_u32(&j, path, "num_attention_heads", 1, 0, &c->n_heads, err) ||
        cfg_u32(&j, path, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads, err) ||
        cfg_u32(&j, path, "intermediate_size", 1, 0, &c->hidden_dim, err) ||
        cfg_u32(&j, path, "vocab_size", 1, 0, &c->vocab_size, err) ||
        cfg_u32(&j, path, "max_position_embeddings", 0, 2048, &c->max_seq_len, err))
        goto done;
    if (c->dim % c->n_heads && !json_get(&j, root, "head_dim")) { errf(err, "%s: hidden_size is not a multiple of num_attention_heads", path); goto done; }
    if (cfg_u32(&j, path, "head_dim", 0, c->dim / c->n_heads, &c->head_dim, err)) goto done;
    double eps, theta;
    if (num_field(&j, root, path, "rms_norm_eps", 0, 1e-6, &eps, err) || num_field(&j, root, path, "rope_theta", 0, 10000.0, &theta, err)) goto done;
    c->norm_eps = (float)eps;
    c->rope_theta = (float)theta;
    n = json_get(&j, root, "tie_word_embeddings");
    if (n && n->type != JSON_TRUE && n->type != JSON_FALSE) { errf(err, "%s: tie_word_embeddings must be true or false", path); goto done; }
    c->tied = n && n->type == JSON_TRUE;
    const JsonNode *rs = json_get(&j, root, "rope_scaling");
    c->rope_type = ROPE_NONE;
    if (rs && rs->type != JSON_NULL) {
        if (rs->type != JSON_OBJECT) { errf(err, "%s: rope_scaling must be an object or null", path); goto done; }
        n = json_get(&j, rs, "rope_type");
        if (!n) n = json_get(&j, rs, "type");
        if (!n || n->type != JSON_STRING) { errf(err, "%s: rope_scaling has no rope_type", path); goto done; }
        if (strcmp(n->str, "llama3") == 0) {
            double f, lo, hi, orig;
            if (num_field(&j, rs, path, "factor", 1, 0, &f, err) || num_field(&j, rs, path, "low_freq_factor", 1, 0, &lo, err) ||
                num_field(&j, rs, path, "high_freq_factor", 1, 0, &hi, err) ||
                num_field(&j, rs, path, "original_max_position_embeddings", 1, 0, &orig, err))
                goto done;
            if (!(orig >= 1 && orig <= 16777216) || orig != (double)(uint32_t)orig) {
                errf(err, "%s: rope_scaling.original_max_position_embeddings must be a positive integer", path);
                goto done;
            }
            c->rope_type = ROPE_LLAMA3;
            c->rope_factor = (float)f;
            c->rope_low_freq_factor = (float)lo;
            c->rope_high_freq_factor = (float)hi;
            c->rope_orig_max_pos = (uint32_t)orig;
        } else if (strcmp(n->str, "default") != 0) {
            errf(err, "%s: rope_scaling type \"%s\" is not supported (only llama3)", path, n->str);
            goto done;
        }
    }
    c->source = SRC_HF;
    char verr[ERRLEN];
    if (config_validate(c, verr)) { errf(err, "%s: %s", path, verr); goto done; }
    rc = 0;
done:
    json_free(&j);
    return rc;
}

/* ==== safetensors ==== */

enum { ST_F32, ST_F16, ST_BF16 };

typedef struct {
    char name[GB_NAME_MAX];
    int dtype;                /* ST_* */
    uint32_t ndim;
    uint64_t shape[4];
    const uint8_t *data;      /* into the shard's mapping */
    uint64_t bytes;
    const char *file;         /* shard path, for messages */
} SrcTensor;

typedef struct {
    MappedFile maps[MAX_SHARDS];
    char *paths[MAX_SHARDS];
    int n_maps;
    SrcTensor *t;
    int n, cap;
} Checkpoint;

static int cmp_begin(const void *a, const void *b) {
    const SrcTensor *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* Parse one .safetensors file: 8-byte little-endian header length, JSON header, then data.
 * Rules as in the safetensors crate: offsets relative to the data start, [begin, end) within
 * it, byte count == product(shape) * dtype size, no overlaps. */
static int read_safetensors(Checkpoint *ck, const char *path, char *err) {
    if (ck->n_maps == MAX_SHARDS) return errf(err, "%s: too many shards", path);
    MappedFile *m = &ck->maps[ck->n_maps];
    if (map_file(m, path, err)) return -1;
    ck->paths[ck->n_maps] = strdup(path);
    ck->n_maps++;
    if (m->size < 8) return errf(err, "%s: truncated safetensors file (%llu bytes)", path, (unsigned long long)m->size);
    uint64_t hlen = ld_u64(m->data);
    if (hlen > MAX_ST_HEADER || hlen > m->size - 8) return errf(err, "%s: safetensors header length %llu exceeds the file", path, (unsigned long long)hlen);
    const uint8_t *base = m->data + 8 + hlen;
    uint64_t data_size = m->size - 8 - hlen;
    Json j;
    char jerr[ERRLEN];
    if (json_parse(&j, (const char *)m->data + 8, (size_t)hlen, jerr)) return errf(err, "%s: malformed safetensors header: %s", path, jerr);
    int rc = 0, first = ck->n;
    if (json_root(&j)->type != JSON_OBJECT) rc = errf(err, "%s: safetensors header is not an object", path);
    JSON_FOR(&j, json_root(&j), e) {
        if (rc) break;
        if (strcmp(e->key, "__metadata__") == 0) continue;
        const JsonNode *dt = json_get(&j, e, "dtype"), *sh = json_get(&j, e, "shape"), *off = json_get(&j, e, "data_offsets");
        if (e->type != JSON_OBJECT || !dt || dt->type != JSON_STRING || !sh || sh->type != JSON_ARRAY || !off || off->type != JSON_ARRAY || off->len != 2) {
            rc = errf(err, "%s: tensor '%s' needs dtype, shape and data_offsets", path, e->key);
            break;
        }
        if (e->keylen >= GB_NAME_MAX) { rc = errf(err, "%s: tensor name '%.40s...' too long", path, e->key); break; }
        SrcTensor t = { 0 };
        memcpy(t.name, e->key, e->keylen + 1);
        t.file = ck->paths[ck->n_maps - 1];
        uint64_t esize;
        if (strcmp(dt->str, "F32") == 0) t.dtype = ST_F32, esize = 4;
        else if (strcmp(dt->str, "F16") == 0) t.dtype = ST_F16, esize = 2;
        else if (strcmp(dt->str, "BF16") == 0) t.dtype = ST_BF16, esize = 2;
        else { rc = errf(err, "%s: tensor '%s' has unsupported dtype %s (need F32, F16 or BF16)", path, t.name, dt->str); break; }
        if (sh->len > 4) { rc = errf(err, "%s: tensor '%s' has %u dimensions", path, t.name, sh->len); break; }
        uint64_t count = 1;
        t.ndim = sh->len;
        int d = 0;
        JSON_FOR(&j, sh, s) {
            int64_t v;
            if (json_int(s, 0, INT64_MAX, &v) || !mul_u64(count, (uint64_t)v, &count)) { rc = errf(err, "%s: tensor '%s' has a bad shape", path, t.name); break; }
            t.shape[d++] = (uint64_t)v;
        }
        if (rc) break;
        int64_t b, en;
        const JsonNode *o0 = json_first(&j, off), *o1 = json_next(&j, o0);
        uint64_t bytes;
        if (json_int(o0, 0, INT64_MAX, &b) || json_int(o1, 0, INT64_MAX, &en) || b > en || (uint64_t)en > data_size) {
            rc = errf(err, "%s: tensor '%s' data_offsets lie outside the file's %llu data bytes", path, t.name, (unsigned long long)data_size);
            break;
        }
        if (!mul_u64(count, esize, &bytes) || bytes != (uint64_t)(en - b)) {
            rc = errf(err, "%s: tensor '%s' has %lld bytes but dtype %s and its shape need %llu", path, t.name, (long long)(en - b), dt->str, (unsigned long long)bytes);
            break;
        }
        t.data = base + b;
        t.bytes = bytes;
        if (ck->n == ck->cap) {
            int cap = ck->cap ? ck->cap * 2 : 512;
            SrcTensor *q = realloc(ck->t, (size_t)cap * sizeof *q);
            if (!q) { rc = errf(err, "out of memory"); break; }
            ck->t = q;
            ck->cap = cap;
        }
        ck->t[ck->n++] = t;
    }
    json_free(&j);
    if (rc) return -1;
    /* overlapping ranges would let one tensor's bytes masquerade as another's */
    qsort(ck->t + first, (size_t)(ck->n - first), sizeof *ck->t, cmp_begin);
    for (int i = first + 1; i < ck->n; i++)
        if (ck->t[i - 1].data + ck->t[i - 1].bytes > ck->t[i].data)
            return errf(err, "%s: tensors '%s' and '%s' overlap", path, ck->t[i - 1].name, ck->t[i].name);
    return 0;
}

static int read_checkpoint(Checkpoint *ck, const char *dir, char *err) {
    char path[4096];
    ckpt_path(path, sizeof path, dir, "model.safetensors");
    if (file_exists(path)) return read_safetensors(ck, path, err);
    ckpt_path(path, sizeof path, dir, "model.safetensors.index.json");
    if (!file_exists(path)) return errf(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
    Json j;
    if (load_json(&j, path, err)) return -1;
    const JsonNode *wm = json_get(&j, json_root(&j), "weight_map");
    int rc = 0;
    if (!wm || wm->type != JSON_OBJECT) rc = errf(err, "%s: missing \"weight_map\" object", path);
    /* each distinct shard once, in order of first mention */
    const char *seen[MAX_SHARDS];
    int n_seen = 0;
    JSON_FOR(&j, wm, e) {
        if (rc) break;
        if (e->type != JSON_STRING || e->len == 0 || strchr(e->str, '/') || strstr(e->str, "..") || strlen(e->str) != e->len) {
            rc = errf(err, "%s: weight_map entry for '%s' is not a plain file name", path, e->key);
            break;
        }
        int dup = 0;
        for (int i = 0; i < n_seen; i++) dup |= strcmp(seen[i], e->str) == 0;
        if (dup) continue;
        if (n_seen == MAX_SHARDS) { rc = errf(err, "%s: more than %d shards", path, MAX_SHARDS); break; }
        seen[n_seen++] = e->str;
        char shard[4096];
        ckpt_path(shard, sizeof shard, dir, e->str);
        rc = read_safetensors(ck, shard, err);
    }
    /* every tensor the index names must be in the shard it names */
    JSON_FOR(&j, wm, e) {
        if (rc) break;
        int found = 0;
        for (int i = 0; i < ck->n && !found; i++) found = strcmp(ck->t[i].name, e->key) == 0;
        if (!found) rc = errf(err, "%s: tensor '%s' is listed in the index but missing from %s", path, e->key, e->str);
    }
    json_free(&j);
    return rc;
}

static void free_checkpoint(Checkpoint *ck) {
    for (int i = 0; i < ck->n_maps; i++) {
        unmap_file(&ck->maps[i]);
        free(ck->paths[i]);
    }
    free(ck->t);
}

static const SrcTensor *find_src(const Checkpoint *ck, const char *name) {
    for (int i = 0; i < ck->n; i++)
        if (strcmp(ck->t[i].name, name) == 0) return &ck->t[i];
    return NULL;
}

/* ==== Conversion: each output tensor is one source tensor in a new dtype ==== */

typedef struct {
    const SrcTensor **src; /* [n_tensors], parallel to the writer's table */
    const GbWriter *w;
} Job;

static void src_row_f32(const SrcTensor *s, uint64_t row, uint64_t cols, float *out) {
    const uint8_t *p = s->data + row * cols * (s->dtype == ST_F32 ? 4 : 2);
    for (uint64_t i = 0; i < cols; i++)
        out[i] = s->dtype == ST_F32 ? ld_f32(p + 4 * i) : s->dtype == ST_BF16 ? bf16_to_f32(ld_u16(p + 2 * i)) : f16_to_f32(ld_u16(p + 2 * i));
}

static int produce(void *ctx, uint32_t i, uint8_t *dst, uint64_t size, char *err) {
    const Job *job = ctx;
    const GbTensor *t = &job->w->tensors[i];
    const SrcTensor *s = job->src[i];
    uint64_t cols = t->shape[t->ndim - 1], rows = size / dtype_row_bytes(t->dtype, cols);
    float *row = malloc((size_t)cols * sizeof(float));
    if (!row) return errf(err, "out of memory converting '%s'", t->name);
    for (uint64_t r = 0; r < rows; r++) {
        src_row_f32(s, r, cols, row);
        quantize_row(t->dtype, row, dst + r * dtype_row_bytes(t->dtype, cols), cols);
    }
    free(row);
    return 0;
}

/* ==== main ==== */

static void usage(void) {
    fprintf(stderr,
            "usage: ./export HF_DIR OUT.bin [--dtype f32|bf16|q8|q4]\n"
            "  HF_DIR holds config.json, model.safetensors (or shards + model.safetensors.index.json),\n"
            "  tokenizer.json and tokenizer_config.json of a Llama Guard checkpoint.\n");
}

static int add_matrix(GbWriter *w, const Checkpoint *ck, const SrcTensor **src, const char *name, uint64_t rows, uint64_t cols,
                      uint32_t dtype, const char *dir, char *err) {
    const SrcTensor *s = find_src(ck, name);
    if (!s) return errf(err, "%s: checkpoint has no tensor '%s'", dir, name);
    uint64_t srows = s->ndim == 1 ? 1 : s->shape[0];
    if (s->ndim < 1 || s->ndim > 2 || srows != rows || s->shape[s->ndim - 1] != cols)
        return errf(err, "%s: tensor '%s' has the wrong shape for this config (expected [%llu, %llu])", s->file, name,
                    (unsigned long long)rows, (unsigned long long)cols);
    /* A row length the block format cannot hold keeps full precision rather than failing. */
    if (dtype_row_bytes(dtype, cols) == 0) dtype = DT_F32;
    src[w->n_tensors] = s;
    uint64_t shape[2] = { rows, cols };
    return rows == 1 ? gbw_add_tensor(w, name, dtype, 1, &shape[1], err) : gbw_add_tensor(w, name, dtype, 2, shape, err);
}

int main(int argc, char **argv) {
    const char *dir = NULL, *out = NULL, *dtype_arg = "f32";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) dtype_arg = argv[++i];
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) { usage(); return 0; }
        else if (argv[i][0] == '-') { fprintf(stderr, "export: unknown option %s\n", argv[i]); usage(); return 2; }
        else if (!dir) dir = argv[i];
        else if (!out) out = argv[i];
        else { usage(); return 2; }
    }
    if (!dir || !out) { usage(); return 2; }
    int dtype = strcmp(dtype_arg, "q8") == 0 ? DT_Q8_0 : strcmp(dtype_arg, "q4") == 0 ? DT_Q4_0 : dtype_from_name(dtype_arg);
    if (dtype < 0 || !dtype_name((uint32_t)dtype) || (dtype != DT_F32 && dtype != DT_BF16 && dtype != DT_Q8_0 && dtype != DT_Q4_0)) {
        fprintf(stderr, "export: --dtype %s is not one of f32, bf16, q8, q4\n", dtype_arg);
        return 2;
    }

    char err[ERRLEN], path[4096];
    Config c;
    Checkpoint ck = { 0 };
    GbWriter w;
    const SrcTensor **src = NULL;
    int rc = 2;
    ckpt_path(path, sizeof path, dir, "config.json");
    if (read_config(path, &c, err)) goto fail;
    c.dtype = (uint32_t)dtype;
    if (read_checkpoint(&ck, dir, err)) goto fail;
    /* Tied embeddings: HF drops lm_head.weight from the file. Some tools keep a copy; a
     * checkpoint saying "untied" must have its own. */
    if (!c.tied && !find_src(&ck, "lm_head.weight")) { errf(err, "%s: tie_word_embeddings is false but lm_head.weight is missing", dir); goto fail; }

    gbw_init(&w, &c);
    src = calloc((size_t)c.n_layers * 9 + 3, sizeof *src);
    if (!src) { errf(err, "out of memory"); goto fail_w; }
    uint64_t q_dim = (uint64_t)c.n_heads * c.head_dim, kv_dim = (uint64_t)c.n_kv_heads * c.head_dim;
    if (add_matrix(&w, &ck, src, "model.embed_tokens.weight", c.vocab_size, c.dim, (uint32_t)dtype, dir, err) ||
        add_matrix(&w, &ck, src, "model.norm.weight", 1, c.dim, DT_F32, dir, err) ||
        (!c.tied && add_matrix(&w, &ck, src, "lm_head.weight", c.vocab_size, c.dim, (uint32_t)dtype, dir, err)))
        goto fail_w;
    for (uint32_t l = 0; l < c.n_layers; l++) {
        const struct { const char *suffix; uint64_t rows, cols; int norm; } parts[] = {
            { "input_layernorm", 1, c.dim, 1 },         { "self_attn.q_proj", q_dim, c.dim, 0 },
            { "self_attn.k_proj", kv_dim, c.dim, 0 },    { "self_attn.v_proj", kv_dim, c.dim, 0 },
            { "self_attn.o_proj", c.dim, q_dim, 0 },     { "post_attention_layernorm", 1, c.dim, 1 },
            { "mlp.gate_proj", c.hidden_dim, c.dim, 0 }, { "mlp.up_proj", c.hidden_dim, c.dim, 0 },
            { "mlp.down_proj", c.dim, c.hidden_dim, 0 },
        };
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
            char name[GB_NAME_MAX];
            snprintf(name, sizeof name, "model.layers.%u.%s.weight", l, parts[k].suffix);
            if (add_matrix(&w, &ck, src, name, parts[k].rows, parts[k].cols, parts[k].norm ? DT_F32 : (uint32_t)dtype, dir, err)) goto fail_w;
        }
    }
    /* Anything left over means this is not the plain Llama the config claims (biases, extra
     * heads, adapters): refuse rather than silently drop weights. */
    for (int i = 0; i < ck.n; i++) {
        int used = (c.tied && strcmp(ck.t[i].name, "lm_head.weight") == 0) || strstr(ck.t[i].name, "rotary_emb.inv_freq");
        for (uint32_t k = 0; k < w.n_tensors && !used; k++) used = src[k] == &ck.t[i];
        if (!used) { errf(err, "%s: unexpected tensor '%s' (not a plain Llama checkpoint?)", ck.t[i].file, ck.t[i].name); goto fail_w; }
    }
    Job job = { src, &w };
    if (gbw_write(&w, out, produce, &job, err)) goto fail_w;
    fprintf(stderr, "export: wrote %s (%u layers, dim %u, vocab %u, %s)\n", out, c.n_layers, c.dim, c.vocab_size, dtype_name(c.dtype));
    rc = 0;
fail_w:
    gbw_free(&w);
fail:
    if (rc) fprintf(stderr, "export: %s\n", err);
    free(src);
    free_checkpoint(&ck);
    return rc;
}
