/* import/hf.c: a Hugging Face Llama checkpoint directory: config.json (LlamaConfig defaults
 * where HF has them), model.safetensors or the shards named by model.safetensors.index.json
 * (rules as in the safetensors crate), tokenizer.json + tokenizer_config.json (tokenizer and
 * chat template). Every JSON value is type- and range-checked; every tensor's byte range is
 * checked against its file, its dtype and its shape. A quantization_config (AWQ, bitsandbytes)
 * hands the quantized linears to hfquant.c.
 * Llama 4 (Llama Guard 4): a Llama4ForConditionalGeneration config.json, whose text_config
 * gives the Llama 4 fields (Llama4TextConfig defaults where HF has them), the text weights
 * under language_model.* (the vision tower skipped), and tokenizer.json or Meta's tiktoken
 * tokenizer.model with the specials of tokenizer_config.json.
 */
#include "import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ST_HEADER (100ull << 20) /* safetensors' own limit */

/* ==== config.json -> Config (LlamaConfig / Llama4TextConfig defaults where HF has them) ==== */

static int cfg_u32(const Json *j, const JsonNode *obj, const char *path, const char *key, int required, uint32_t def, uint32_t *out, char *err) {
    const JsonNode *n = json_get(j, obj, key);
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

/* true/false member, def when absent or null. */
static int bool_field(const Json *j, const JsonNode *obj, const char *path, const char *key, int def, uint32_t *out, char *err) {
    const JsonNode *n = json_get(j, obj, key);
    if (!n || n->type == JSON_NULL) *out = (uint32_t)def;
    else if (n->type == JSON_TRUE || n->type == JSON_FALSE) *out = n->type == JSON_TRUE;
    else return errf(err, "%s: \"%s\" must be true or false", path, key);
    return 0;
}

/* Llama4TextConfig's own fields (transformers configuration_llama4.py; defaults where HF has
 * them): the dense-only check, no_rope_layers, qk-norm, temperature tuning, chunked attention. */
static int llama4_fields(const Json *j, const JsonNode *tc, const char *path, Config *c, char *err) {
    const JsonNode *n;
    /* Scout and Maverick interleave mixture-of-experts layers; Llama Guard 4 has none. */
    const JsonNode *moe = json_get(j, tc, "moe_layers");
    uint32_t step = 0;
    n = json_get(j, tc, "interleave_moe_layer_step");
    if (n && n->type != JSON_NULL) {
        int64_t v;
        if (json_int(n, 0, 0x7FFFFFFF, &v)) return errf(err, "%s: \"interleave_moe_layer_step\" must be an integer >= 0", path);
        step = (uint32_t)v;
    }
    if (moe && moe->type != JSON_NULL && (moe->type != JSON_ARRAY || moe->len != 0))
        return errf(err, "%s: moe_layers is not empty: mixture-of-experts Llama 4 models are not supported (Llama Guard 4 is dense)", path);
    if ((!moe || moe->type == JSON_NULL) && step != 0)
        return errf(err, "%s: interleave_moe_layer_step %u puts experts in the model: mixture-of-experts Llama 4 models are not supported", path, step);
    /* no_rope_layers[l]: 1 = RoPE layer, 0 = NoPE (HF: self.use_rope = config.no_rope_layers[layer_idx]);
     * absent or empty, HF derives it from no_rope_layer_interval (default 4) */
    const JsonNode *nr = json_get(j, tc, "no_rope_layers");
    uint32_t interval;
    if (cfg_u32(j, tc, path, "no_rope_layer_interval", 0, 4, &interval, err)) return -1;
    if (nr && nr->type != JSON_NULL && nr->type != JSON_ARRAY) return errf(err, "%s: no_rope_layers must be a list", path);
    int given = nr && nr->type == JSON_ARRAY && nr->len > 0;
    if (given && nr->len != c->n_layers)
        return errf(err, "%s: no_rope_layers has %u entries for %u layers", path, nr->len, c->n_layers);
    const JsonNode *e = given ? json_first(j, nr) : NULL;
    for (uint32_t l = 0; l < c->n_layers; l++, e = e ? json_next(j, e) : NULL) {
        int64_t rope = (l + 1) % interval != 0;
        if (given && json_int(e, 0, 1, &rope)) return errf(err, "%s: no_rope_layers[%u] must be 0 or 1", path, l);
        if (rope) continue;
        if (l >= GB_NOPE_LAYERS) return errf(err, "%s: NoPE layer %u: at most %d layers can be NoPE layers", path, l, GB_NOPE_LAYERS);
        c->nope[l / 32] |= 1u << (l % 32);
    }
    double floor_scale = 0, attn_scale = 0;
    if (bool_field(j, tc, path, "use_qk_norm", 1, &c->qk_norm, err) ||
        bool_field(j, tc, path, "attn_temperature_tuning", 1, &c->attn_temperature_tuning, err) ||
        num_field(j, tc, path, "floor_scale", 0, 8192, &floor_scale, err) || num_field(j, tc, path, "attn_scale", 0, 0.1, &attn_scale, err))
        return -1;
    c->floor_scale = (float)floor_scale;
    c->attn_scale = (float)attn_scale;
    /* null = no chunking (Llama Guard 4); absent = HF's default 8192 */
    n = json_get(j, tc, "attention_chunk_size");
    if (!n) c->attn_chunk = 8192;
    else if (n->type != JSON_NULL && cfg_u32(j, tc, path, "attention_chunk_size", 1, 0, &c->attn_chunk, err)) return -1;
    c->rope_style = ROPE_ADJACENT;
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
    /* Llama 4: Llama4ForConditionalGeneration keeps the text model's hyperparameters in
     * text_config (its vision_config is not read: text only); a bare llama4_text config has
     * them at the top. */
    const JsonNode *tc = root;
    int llama4 = 0;
    if (n && n->type == JSON_STRING && strcmp(n->str, "llama4") == 0) {
        tc = json_get(&j, root, "text_config");
        if (!tc || tc->type != JSON_OBJECT) { errf(err, "%s: a llama4 config needs a \"text_config\" object", path); goto done; }
        n = json_get(&j, tc, "model_type");
        if (n && (n->type != JSON_STRING || strcmp(n->str, "llama4_text") != 0)) { errf(err, "%s: text_config.model_type must be \"llama4_text\"", path); goto done; }
        llama4 = 1;
    } else if (n && n->type == JSON_STRING && strcmp(n->str, "llama4_text") == 0) {
        llama4 = 1;
    } else if (!n || n->type != JSON_STRING || strcmp(n->str, "llama") != 0) {
        errf(err, "%s: model_type must be \"llama\" or \"llama4\" (got %s)", path, n && n->type == JSON_STRING ? n->str : "none");
        goto done;
    }
    n = json_get(&j, tc, "hidden_act");
    if (n && (n->type != JSON_STRING || strcmp(n->str, "silu") != 0)) { errf(err, "%s: hidden_act must be \"silu\"", path); goto done; }
    const char *no_bias[] = { "attention_bias", "mlp_bias" };
    for (int i = 0; i < 2; i++) {
        n = json_get(&j, tc, no_bias[i]);
        if (n && n->type != JSON_FALSE && n->type != JSON_NULL) { errf(err, "%s: %s is not supported (Llama has no biases)", path, no_bias[i]); goto done; }
    }
    const JsonNode *qc = json_get(&j, root, "quantization_config");
    if (quant) memset(quant, 0, sizeof *quant);
    if (qc && !quant) {
        errf(err, "%s: a quantization_config is not expected here", path);
        goto done;
    }
    if (qc && llama4) { errf(err, "%s: quantized Llama 4 checkpoints are not supported", path); goto done; }
    if (qc && hfq_parse(&j, qc, path, quant, err)) goto done;
    /* Llama 4's dense MLP is intermediate_size_mlp wide (intermediate_size is the experts') */
    if (cfg_u32(&j, tc, path, "hidden_size", 1, 0, &c->dim, err) || cfg_u32(&j, tc, path, "num_hidden_layers", 1, 0, &c->n_layers, err) ||
        cfg_u32(&j, tc, path, "num_attention_heads", 1, 0, &c->n_heads, err) ||
        cfg_u32(&j, tc, path, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads, err) ||
        cfg_u32(&j, tc, path, llama4 ? "intermediate_size_mlp" : "intermediate_size", 1, 0, &c->hidden_dim, err) ||
        cfg_u32(&j, tc, path, "vocab_size", 1, 0, &c->vocab_size, err) ||
        cfg_u32(&j, tc, path, "max_position_embeddings", 0, llama4 ? 4096 * 32 : 2048, &c->max_seq_len, err))
        goto done;
    if (c->dim % c->n_heads && !json_get(&j, tc, "head_dim")) { errf(err, "%s: hidden_size is not a multiple of num_attention_heads", path); goto done; }
    if (cfg_u32(&j, tc, path, "head_dim", 0, c->dim / c->n_heads, &c->head_dim, err)) goto done;
    double eps, theta;
    if (num_field(&j, tc, path, "rms_norm_eps", 0, 1e-6, &eps, err) || num_field(&j, tc, path, "rope_theta", 0, 10000.0, &theta, err)) goto done;
    c->norm_eps = (float)eps;
    c->rope_theta = (float)theta;
    n = json_get(&j, tc, "tie_word_embeddings");
    if (!n && llama4) n = json_get(&j, root, "tie_word_embeddings");
    if (n && n->type != JSON_TRUE && n->type != JSON_FALSE) { errf(err, "%s: tie_word_embeddings must be true or false", path); goto done; }
    c->tied = n && n->type == JSON_TRUE;
    const JsonNode *rs = json_get(&j, tc, "rope_scaling");
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
    if (llama4 && llama4_fields(&j, tc, path, c, err)) goto done;
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

/* Llama 4 names the text model language_model.model.* and language_model.lm_head, and a
 * layer's dense MLP feed_forward; those become the Llama names guard.bin uses (model.*,
 * lm_head, mlp). The vision tower and its projector (vision_model.*, multi_modal_projector.*)
 * are dropped: this runtime is text only. Anything else (experts, routers) keeps its name, so
 * export refuses it as unexpected. */
static int llama4_names(Source *s, char *err) {
    int k = 0;
    for (int i = 0; i < s->n; i++) {
        SrcTensor t = s->t[i];
        if (strncmp(t.name, "vision_model.", 13) == 0 || strncmp(t.name, "multi_modal_projector.", 22) == 0) continue;
        char name[GB_NAME_MAX];
        const char *from = strncmp(t.name, "language_model.", 15) == 0 ? t.name + 15 : t.name, *ff = strstr(from, ".feed_forward.");
        size_t keep = strlen(from); /* names are < GB_NAME_MAX; ".mlp." is shorter than ".feed_forward." */
        if (ff && strncmp(from, "model.layers.", 13) == 0 &&
            (strcmp(ff, ".feed_forward.gate_proj.weight") == 0 || strcmp(ff, ".feed_forward.up_proj.weight") == 0 ||
             strcmp(ff, ".feed_forward.down_proj.weight") == 0))
            keep = (size_t)(ff - from);
        memcpy(name, from, keep);
        name[keep] = 0;
        if (keep < strlen(from)) strcat(strcat(name, ".mlp."), ff + 14);
        for (int q = 0; q < k; q++)
            if (strcmp(s->t[q].name, name) == 0) return errf(err, "%s: tensor '%s' appears twice (as '%s')", t.file, name, t.name);
        memcpy(t.name, name, sizeof t.name);
        s->t[k++] = t;
    }
    s->n = k;
    return 0;
}

/* Llama 4 without tokenizer.json: Meta's tiktoken tokenizer.model holds the ranks only; the
 * special tokens after them (200000.., named as HF names them) come from tokenizer_config.json's
 * added_tokens_decoder ({"200000": {"content": "<|begin_of_text|>", "special": true}, ...}),
 * and BOS/EOS from its bos_token/eos_token. */
int hf_llama4_tiktoken(Source *s, const char *model_path, const char *tcfg, char *err) {
    if (!ckpt_is_file(tcfg)) return errf(err, "%s: a Llama 4 tokenizer.model needs tokenizer_config.json beside it (its special tokens)", model_path);
    Json j;
    if (load_json_file(&j, tcfg, err)) return -1;
    const JsonNode *root = json_root(&j), *atd = json_get(&j, root, "added_tokens_decoder");
    const char **names = NULL;
    int rc = -1;
    uint32_t n = 0;
    int64_t first = -1;
    if (!atd || atd->type != JSON_OBJECT || atd->len == 0 || atd->len > 65536) { errf(err, "%s: no \"added_tokens_decoder\" object (the special tokens)", tcfg); goto done; }
    n = atd->len;
    JSON_FOR(&j, atd, e) { /* ids are decimal keys; the smallest is the first special */
        char *end;
        long long id = strtoll(e->key, &end, 10);
        if (*end || e->key[0] < '0' || e->key[0] > '9' || id < 0 || id > 0x7FFFFFFF) { errf(err, "%s: added_tokens_decoder key '%.20s' is not an id", tcfg, e->key); goto done; }
        if (first < 0 || id < first) first = id;
    }
    names = calloc(n, sizeof *names);
    if (!names) { errf(err, "out of memory"); goto done; }
    JSON_FOR(&j, atd, e) {
        uint64_t off = (uint64_t)(strtoll(e->key, NULL, 10) - first);
        const JsonNode *c = json_get(&j, e, "content"), *sp = json_get(&j, e, "special");
        if (off >= n || names[off]) { errf(err, "%s: added_tokens_decoder ids must run contiguously from %lld", tcfg, (long long)first); goto done; }
        if (e->type != JSON_OBJECT || !c || c->type != JSON_STRING || c->len == 0 || strlen(c->str) != c->len) { errf(err, "%s: added_tokens_decoder[%s] has no content", tcfg, e->key); goto done; }
        if (!sp || sp->type != JSON_TRUE) { errf(err, "%s: added token %s is not special; non-special added tokens are not supported", tcfg, e->key); goto done; }
        names[off] = c->str;
    }
    int32_t be[2] = { -1, -1 };
    const char *keys[2] = { "bos_token", "eos_token" };
    for (int b = 0; b < 2; b++) {
        const JsonNode *t = json_get(&j, root, keys[b]);
        if (t && t->type == JSON_OBJECT) t = json_get(&j, t, "content");
        if (!t || t->type == JSON_NULL) continue;
        if (t->type != JSON_STRING) { errf(err, "%s: %s must be a string", tcfg, keys[b]); goto done; }
        for (uint32_t i = 0; i < n && be[b] < 0; i++)
            if (strcmp(names[i], t->str) == 0) be[b] = (int32_t)i;
        if (be[b] < 0) { errf(err, "%s: %s \"%.40s\" is not one of the special tokens", tcfg, keys[b], t->str); goto done; }
    }
    MappedFile m;
    if (map_file(&m, model_path, err)) goto done;
    TiktokenSpecials sp = { n, names, be[0], be[1], TOK_PRETOK_O200K };
    rc = tiktoken_read(s, model_path, m.data, m.size, &sp, err);
    unmap_file(&m);
    if (rc == 0 && tok_vocab_size(s->tok) != (uint64_t)first + n) {
        rc = errf(err, "%s: %u ranks, but the special tokens of %s start at id %lld", model_path, tok_vocab_size(s->tok) - n, tcfg, (long long)first);
        tok_free(s->tok);
        s->tok = NULL;
    }
done:
    free(names);
    json_free(&j);
    return rc;
}

/* The chat template: tokenizer_config.json's, else the processor's chat_template.jinja (raw
 * text) or chat_template.json ({"chat_template": ...}) that multimodal repos such as Llama
 * Guard 4 carry. */
static int read_any_chat_template(Source *s, const char *dir, const char *tcfg, char *err) {
    char path[4096];
    if (ckpt_is_file(tcfg) && hf_read_chat_template(s, tcfg, err)) return -1;
    if (s->chat_template) return 0;
    ckpt_path(path, sizeof path, dir, "chat_template.jinja");
    if (ckpt_is_file(path)) {
        uint64_t len;
        return read_text_file(path, 16ull << 20, &s->chat_template, &len, err);
    }
    ckpt_path(path, sizeof path, dir, "chat_template.json");
    return ckpt_is_file(path) ? hf_read_chat_template(s, path, err) : 0;
}

int hf_open(Source *s, const char *dir, char *err) {
    memset(s, 0, sizeof *s);
    s->origin = dir;
    char path[4096], tcfg[4096];
    ckpt_path(path, sizeof path, dir, "config.json");
    HfQuant q;
    if (hf_read_config(path, &s->cfg, &q, err) || read_weights(s, dir, err) || hfq_assemble(s, &q, err)) goto fail;
    const int llama4 = s->cfg.rope_style == ROPE_ADJACENT;
    if (llama4 && llama4_names(s, err)) goto fail;
    ckpt_path(tcfg, sizeof tcfg, dir, "tokenizer_config.json");
    ckpt_path(path, sizeof path, dir, "tokenizer.json");
    if (ckpt_is_file(path)) {
        if (tok_from_hf(&s->tok, path, ckpt_is_file(tcfg) ? tcfg : NULL, err)) goto fail;
    } else if (llama4 && (ckpt_path(path, sizeof path, dir, "tokenizer.model"), ckpt_is_file(path))) {
        if (hf_llama4_tiktoken(s, path, tcfg, err)) goto fail;
    } else {
        errf(err, "%s: no tokenizer.json%s", dir, llama4 ? " or tokenizer.model" : "");
        goto fail;
    }
    if (read_any_chat_template(s, dir, tcfg, err)) goto fail;
    return 0;
fail:
    source_free(s);
    return -1;
}
