/* import/hf.c: a Hugging Face Llama checkpoint directory: config.json (LlamaConfig defaults
 * where HF has them), model.safetensors or the shards named by model.safetensors.index.json
 * (rules as in the safetensors crate), tokenizer.json + tokenizer_config.json (tokenizer and
 * chat template). Every JSON value is type- and range-checked; every tensor's byte range is
 * checked against its file, its dtype and its shape. A quantization_config (AWQ, bitsandbytes)
 * hands the quantized linears to hfquant.c.
 */
#include "import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ST_HEADER (100ull << 20) /* safetensors' own limit */

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

int hf_read_config(const char *path, Config *c, HfQuant *quant, char *err) {
    Json j;
    if (load_json_file(&j, path, err)) return -1;
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
    const JsonNode *qc = json_get(&j, root, "quantization_config");
    if (quant) memset(quant, 0, sizeof *quant);
    if (qc && !quant) {
        errf(err, "%s: a quantization_config is not expected here", path);
        goto done;
    }
    if (qc && hfq_parse(&j, qc, path, quant, err)) goto done;
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
    c->source = quant && quant->method ? (uint32_t)quant->method : SRC_HF;
    char verr[ERRLEN];
    if (config_validate(c, verr)) { errf(err, "%s: %s", path, verr); goto done; }
    rc = 0;
done:
    json_free(&j);
    return rc;
}

/* ==== safetensors ==== */

static int cmp_begin(const void *a, const void *b) {
    const SrcTensor *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* One .safetensors file: 8-byte little-endian header length, JSON header, then data. Offsets
 * are relative to the data start; [begin, end) must lie within it, hold exactly
 * product(shape) * dtype size bytes, and not overlap another tensor. */
static int read_safetensors(Source *src, const char *path, char *err) {
    const MappedFile *m;
    const char *kept;
    if (source_map(src, path, &m, &kept, err)) return -1;
    if (m->size < 8) return errf(err, "%s: truncated safetensors file (%llu bytes)", path, (unsigned long long)m->size);
    uint64_t hlen = ld_u64(m->data);
    if (hlen > MAX_ST_HEADER || hlen > m->size - 8) return errf(err, "%s: safetensors header length %llu exceeds the file", path, (unsigned long long)hlen);
    const uint8_t *base = m->data + 8 + hlen;
    uint64_t data_size = m->size - 8 - hlen;
    Json j;
    char jerr[ERRLEN];
    if (json_parse(&j, (const char *)m->data + 8, (size_t)hlen, jerr)) return errf(err, "%s: malformed safetensors header: %s", path, jerr);
    int rc = 0, first = src->n;
    if (json_root(&j)->type != JSON_OBJECT) rc = errf(err, "%s: safetensors header is not an object", path);
    JSON_FOR(&j, json_root(&j), e) {
        if (rc) break;
        if (strcmp(e->key, "__metadata__") == 0) continue;
        const JsonNode *dt = json_get(&j, e, "dtype"), *sh = json_get(&j, e, "shape"), *off = json_get(&j, e, "data_offsets");
        if (e->type != JSON_OBJECT || !dt || dt->type != JSON_STRING || !sh || sh->type != JSON_ARRAY || !off || off->type != JSON_ARRAY || off->len != 2) {
            rc = errf(err, "%s: tensor '%s' needs dtype, shape and data_offsets", path, e->key);
            break;
        }
        if (e->keylen >= GB_NAME_MAX || strlen(e->key) != e->keylen) { rc = errf(err, "%s: tensor name '%.40s...' too long", path, e->key); break; }
        SrcTensor t = { 0 };
        memcpy(t.name, e->key, e->keylen + 1);
        t.file = kept;
        uint64_t esize;
        if (strcmp(dt->str, "F32") == 0) t.type = ST_F32, esize = 4;
        else if (strcmp(dt->str, "F16") == 0) t.type = ST_F16, esize = 2;
        else if (strcmp(dt->str, "BF16") == 0) t.type = ST_BF16, esize = 2;
        /* integer parts of quantized linears; hfq_assemble refuses any left over */
        else if (strcmp(dt->str, "I32") == 0) t.type = ST_I32, esize = 4;
        else if (strcmp(dt->str, "I8") == 0) t.type = ST_I8, esize = 1;
        else if (strcmp(dt->str, "U8") == 0) t.type = ST_U8, esize = 1;
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
        rc = source_add(src, &t, err);
    }
    json_free(&j);
    if (rc) return -1;
    if (src->n == first) return 0; /* no tensors in this file: nothing can overlap */
    /* overlapping ranges would let one tensor's bytes masquerade as another's */
    SrcTensor *tmp = malloc((size_t)(src->n - first) * sizeof *tmp + 1);
    if (!tmp) return errf(err, "out of memory");
    memcpy(tmp, src->t + first, (size_t)(src->n - first) * sizeof *tmp);
    qsort(tmp, (size_t)(src->n - first), sizeof *tmp, cmp_begin);
    for (int i = 1; i < src->n - first && rc == 0; i++)
        if (tmp[i - 1].data + tmp[i - 1].bytes > tmp[i].data) rc = errf(err, "%s: tensors '%s' and '%s' overlap", path, tmp[i - 1].name, tmp[i].name);
    free(tmp);
    return rc;
}

static int read_weights(Source *src, const char *dir, char *err) {
    char path[4096];
    ckpt_path(path, sizeof path, dir, "model.safetensors");
    if (ckpt_is_file(path)) return read_safetensors(src, path, err);
    ckpt_path(path, sizeof path, dir, "model.safetensors.index.json");
    if (!ckpt_is_file(path)) return errf(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
    Json j;
    if (load_json_file(&j, path, err)) return -1;
    const JsonNode *wm = json_get(&j, json_root(&j), "weight_map");
    int rc = 0;
    if (!wm || wm->type != JSON_OBJECT) rc = errf(err, "%s: missing \"weight_map\" object", path);
    /* each distinct shard once, in order of first mention */
    const char *seen[SRC_MAX_FILES];
    int n_seen = 0;
    if (rc == 0) JSON_FOR(&j, wm, e) {
        if (rc) break;
        if (e->type != JSON_STRING || e->len == 0 || strchr(e->str, '/') || strstr(e->str, "..") || strlen(e->str) != e->len) {
            rc = errf(err, "%s: weight_map entry for '%s' is not a plain file name", path, e->key);
            break;
        }
        int dup = 0;
        for (int i = 0; i < n_seen; i++) dup |= strcmp(seen[i], e->str) == 0;
        if (dup) continue;
        if (n_seen == SRC_MAX_FILES) { rc = errf(err, "%s: more than %d shards", path, SRC_MAX_FILES); break; }
        seen[n_seen++] = e->str;
        char shard[4096];
        ckpt_path(shard, sizeof shard, dir, e->str);
        rc = read_safetensors(src, shard, err);
    }
    /* every tensor the index names must be in a shard */
    if (rc == 0) JSON_FOR(&j, wm, e) {
        if (rc) break;
        if (!source_find(src, e->key)) rc = errf(err, "%s: tensor '%s' is listed in the index but missing from %s", path, e->key, e->str);
    }
    json_free(&j);
    return rc;
}

/* ==== Tokenizer and chat template ==== */

/* tokenizer_config.json's chat_template: a string, or a list of {"name", "template"} where
 * the one named "default" is the chat template. NULL (no error) when absent. */
int hf_read_chat_template(Source *src, const char *path, char *err) {
    Json j;
    if (load_json_file(&j, path, err)) return -1;
    const JsonNode *t = json_get(&j, json_root(&j), "chat_template");
    if (t && t->type == JSON_ARRAY) {
        const JsonNode *found = NULL;
        JSON_FOR(&j, t, e) {
            const JsonNode *nm = json_get(&j, e, "name"), *tt = json_get(&j, e, "template");
            if (nm && nm->type == JSON_STRING && strcmp(nm->str, "default") == 0 && tt && tt->type == JSON_STRING) found = tt;
        }
        t = found;
    }
    int rc = 0;
    if (t && t->type == JSON_STRING) {
        src->chat_template = malloc((size_t)t->len + 1);
        if (!src->chat_template) rc = errf(err, "out of memory");
        else memcpy(src->chat_template, t->str, (size_t)t->len + 1);
    } else if (t && t->type != JSON_NULL) rc = errf(err, "%s: chat_template must be a string", path);
    json_free(&j);
    return rc;
}

int hf_open(Source *s, const char *dir, char *err) {
    memset(s, 0, sizeof *s);
    s->origin = dir;
    char path[4096], tcfg[4096];
    ckpt_path(path, sizeof path, dir, "config.json");
    HfQuant q;
    if (hf_read_config(path, &s->cfg, &q, err) || read_weights(s, dir, err) || hfq_assemble(s, &q, err)) goto fail;
    ckpt_path(tcfg, sizeof tcfg, dir, "tokenizer_config.json");
    ckpt_path(path, sizeof path, dir, "tokenizer.json");
    if (!ckpt_is_file(path)) { errf(err, "%s: no tokenizer.json", dir); goto fail; }
    if (tok_from_hf(&s->tok, path, ckpt_is_file(tcfg) ? tcfg : NULL, err)) goto fail;
    if (ckpt_is_file(tcfg) && hf_read_chat_template(s, tcfg, err)) goto fail;
    return 0;
fail:
    source_free(s);
    return -1;
}
