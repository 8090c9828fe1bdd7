/* import/hfquant.c: quantized Hugging Face checkpoints, detected from config.json's
 * quantization_config: AutoAWQ GEMM (4-bit, zero points) and bitsandbytes LLM.int8 as
 * transformers serializes them. Each quantized linear is several safetensors entries; they
 * are checked against each other and become one source tensor ([out, in], HF orientation)
 * whose rows decode to exactly what the references compute:
 *   AWQ  W[n, k] = (q[k, n] - z[k/g, n]) * s[k/g, n]   (AutoAWQ dequantize_gemm, in f32)
 *   bnb  W[n, k] = CB[n, k] * SCB[n] / 127             (f32 multiply, then divide)
 * Mirrors: AutoAWQ awq/modules/linear/gemm.py + awq/utils/packing_utils.py; bitsandbytes
 * nn/modules.py Int8Params and transformers' quantizer_bnb_8bit.py (shared/spec/QUANT_FORMATS.md).
 * Non-goals: GPTQ, AWQ GEMV/exllama/marlin packings, bitsandbytes 4-bit (NF4/FP4), and
 * bnb's activation-quantizing matmul (the runtime runs float GEMMs on the dequantized weights).
 */
#include "import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ==== quantization_config ==== */

static int get_int_field(const Json *j, const JsonNode *qc, const char *path, const char *key, int64_t *v, char *err) {
    const JsonNode *n = json_get(j, qc, key);
    if (!n) return errf(err, "%s: quantization_config has no \"%s\"", path, key);
    if (json_int(n, 1, 1 << 20, v)) return errf(err, "%s: quantization_config.%s must be a positive integer", path, key);
    return 0;
}

/* true, false, or absent (def); anything else is an error */
static int get_bool_field(const Json *j, const JsonNode *qc, const char *path, const char *key, int def, int *v, char *err) {
    const JsonNode *n = json_get(j, qc, key);
    if (!n || n->type == JSON_NULL) { *v = def; return 0; }
    if (n->type != JSON_TRUE && n->type != JSON_FALSE) return errf(err, "%s: quantization_config.%s must be true or false", path, key);
    *v = n->type == JSON_TRUE;
    return 0;
}

int hfq_parse(const Json *j, const JsonNode *qc, const char *path, HfQuant *q, char *err) {
    memset(q, 0, sizeof *q);
    if (qc->type != JSON_OBJECT) return errf(err, "%s: quantization_config must be an object", path);
    const JsonNode *m = json_get(j, qc, "quant_method");
    if (!m || m->type != JSON_STRING) return errf(err, "%s: quantization_config has no quant_method", path);
    if (strcmp(m->str, "awq") == 0) {
        int64_t bits, gs;
        int zp = 0;
        if (get_int_field(j, qc, path, "bits", &bits, err) || get_int_field(j, qc, path, "group_size", &gs, err) ||
            get_bool_field(j, qc, path, "zero_point", 1, &zp, err))
            return -1;
        if (bits != 4) return errf(err, "%s: AWQ with %lld bits is not supported (4)", path, (long long)bits);
        if (!zp) return errf(err, "%s: AWQ without zero points is not supported", path);
        const JsonNode *v = json_get(j, qc, "version");
        if (v && (v->type != JSON_STRING || strcasecmp(v->str, "gemm") != 0))
            return errf(err, "%s: AWQ version %s is not supported (only GEMM packing)", path, v->type == JSON_STRING ? v->str : "?");
        q->method = SRC_AWQ;
        q->group_size = (uint32_t)gs;
        return 0;
    }
    if (strcmp(m->str, "bitsandbytes") == 0) {
        int b8 = 0, b4 = 0;
        if (get_bool_field(j, qc, path, "load_in_8bit", 0, &b8, err) || get_bool_field(j, qc, path, "load_in_4bit", 0, &b4, err)) return -1;
        if (b4) return errf(err, "%s: 4-bit bitsandbytes (NF4/FP4) is not supported, only LLM.int8 (load_in_8bit)", path);
        if (!b8) return errf(err, "%s: bitsandbytes config has neither load_in_8bit nor load_in_4bit", path);
        q->method = SRC_BNB;
        return 0;
    }
    return errf(err, "%s: quantization method \"%s\" is not supported (awq, bitsandbytes int8)", path, m->str);
}

/* ==== Assembling quantized linears ==== */

/* The entry named prefix + suffix, or NULL. */
static SrcTensor *find_part(Source *s, const char *name, size_t prefix_len, const char *suffix) {
    char want[GB_NAME_MAX + 16];
    if (prefix_len + strlen(suffix) >= sizeof want) return NULL;
    snprintf(want, sizeof want, "%.*s%s", (int)prefix_len, name, suffix);
    return (SrcTensor *)source_find(s, want);
}

static int ends_with(const char *s, const char *suffix, size_t *prefix_len) {
    size_t n = strlen(s), k = strlen(suffix);
    *prefix_len = n - k;
    return n > k && strcmp(s + n - k, suffix) == 0;
}

static int is_2d(const SrcTensor *t, uint32_t type, uint64_t rows, uint64_t cols) {
    return t->type == type && t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols;
}

/* qweight I32 [in, out/8] + qzeros I32 [in/g, out/8] + scales F16 [in/g, out] -> weight [out, in]. */
static int assemble_awq(Source *s, SrcTensor *qw, size_t pl, uint32_t group, char *err) {
    SrcTensor *qz = find_part(s, qw->name, pl, ".qzeros"), *sc = find_part(s, qw->name, pl, ".scales");
    if (!qz || !sc) return errf(err, "%s: '%s' has no matching .qzeros and .scales", qw->file, qw->name);
    if (sc->type != ST_F16 || sc->ndim != 2) return errf(err, "%s: '%s' must be F16 [in/%u, out]", sc->file, sc->name, group);
    uint64_t out = sc->shape[1], in = qw->shape[0];
    if (qw->type != ST_I32 || qw->ndim != 2 || out == 0 || in == 0 || out % 8 || qw->shape[1] != out / 8 || in % group)
        return errf(err, "%s: '%s' must be I32 [in, out/8] with in a multiple of %u (scales say out = %llu)", qw->file, qw->name, group,
                    (unsigned long long)out);
    if (!is_2d(sc, ST_F16, in / group, out)) return errf(err, "%s: '%s' must be F16 [%llu, %llu]", sc->file, sc->name, (unsigned long long)(in / group), (unsigned long long)out);
    if (!is_2d(qz, ST_I32, in / group, out / 8)) return errf(err, "%s: '%s' must be I32 [%llu, %llu]", qz->file, qz->name, (unsigned long long)(in / group), (unsigned long long)(out / 8));
    char name[GB_NAME_MAX + 16];
    snprintf(name, sizeof name, "%.*s.weight", (int)pl, qw->name);
    if (strlen(name) >= GB_NAME_MAX) return errf(err, "%s: tensor name '%s' too long", qw->file, name);
    if (source_find(s, name)) return errf(err, "%s: '%s' is both quantized and stored plainly", qw->file, name);
    SrcTensor w = *qw;
    snprintf(w.name, sizeof w.name, "%s", name);
    w.type = ST_AWQ;
    w.shape[0] = out;
    w.shape[1] = in;
    w.aux[0] = qz->data;
    w.aux_bytes[0] = qz->bytes;
    w.aux[1] = sc->data;
    w.aux_bytes[1] = sc->bytes;
    *qw = w;
    qz->type = sc->type = 0; /* consumed: removed below */
    return 0;
}

/* weight I8 [out, in] + SCB F32 [out] + weight_format U8 [] (0 = row) -> weight [out, in]. */
static int assemble_bnb(Source *s, SrcTensor *scb, size_t pl, char *err) {
    SrcTensor *w = find_part(s, scb->name, pl, ".weight"), *fmt = find_part(s, scb->name, pl, ".weight_format");
    if (!w) return errf(err, "%s: '%s' has no matching int8 .weight", scb->file, scb->name);
    if (w->type != ST_I8 || w->ndim != 2) return errf(err, "%s: '%s' must be I8 [out, in] next to '%s'", w->file, w->name, scb->name);
    if (scb->type != ST_F32 || scb->ndim != 1 || scb->shape[0] != w->shape[0])
        return errf(err, "%s: '%s' must be F32 [%llu] (one scale per row of '%s')", scb->file, scb->name, (unsigned long long)w->shape[0], w->name);
    if (fmt) {
        if (fmt->type != ST_U8 || fmt->bytes != 1) return errf(err, "%s: '%s' must be a U8 scalar", fmt->file, fmt->name);
        if (fmt->data[0] != 0) return errf(err, "%s: '%s' is %u; only 0 (row-major) is supported", fmt->file, fmt->name, fmt->data[0]);
        fmt->type = 0;
    }
    w->type = ST_BNB_INT8;
    w->aux[0] = scb->data;
    w->aux_bytes[0] = scb->bytes;
    scb->type = 0;
    return 0;
}

int hfq_assemble(Source *s, const HfQuant *q, char *err) {
    for (int i = 0; i < s->n; i++) {
        SrcTensor *t = &s->t[i];
        size_t pl;
        if (q->method == SRC_AWQ && ends_with(t->name, ".qweight", &pl) && assemble_awq(s, t, pl, q->group_size, err)) return -1;
        if (q->method == SRC_BNB && ends_with(t->name, ".SCB", &pl) && t->type && assemble_bnb(s, t, pl, err)) return -1;
    }
    int k = 0;
    for (int i = 0; i < s->n; i++) {
        const SrcTensor *t = &s->t[i];
        if (t->type == ST_I32 || t->type == ST_I8 || t->type == ST_U8)
            return errf(err, "%s: tensor '%s' has an integer dtype but is not part of a %s linear layer", t->file, t->name,
                        q->method == SRC_AWQ ? "AWQ" : q->method == SRC_BNB ? "bitsandbytes" : "quantized (config.json has no quantization_config)");
        if (t->type) s->t[k++] = *t;
    }
    s->n = k;
    return 0;
}

/* ==== Row decoders ==== */

/* Output channel n lives in nibble AWQ_NIBBLE[n % 8] of word n / 8 (inverse of the packing order [0,2,4,6,1,3,5,7]). */
static const uint8_t AWQ_NIBBLE[8] = { 0, 4, 1, 5, 2, 6, 3, 7 };

int hfq_row_awq(const SrcTensor *t, uint64_t n, float *out, char *err) {
    (void)err;
    uint64_t n_out = t->shape[0], in = t->shape[1], words = n_out / 8;
    uint64_t groups = t->aux_bytes[1] / (2 * n_out), gs = in / groups; /* shapes checked in assemble_awq */
    unsigned shift = 4u * AWQ_NIBBLE[n % 8];
    uint64_t c = n / 8;
    for (uint64_t g = 0; g < groups; g++) {
        int z = (int)((ld_u32(t->aux[0] + 4 * (g * words + c)) >> shift) & 0xF);
        float s = f16_to_f32(ld_u16(t->aux[1] + 2 * (g * n_out + n)));
        for (uint64_t k = g * gs; k < (g + 1) * gs; k++) {
            int q = (int)((ld_u32(t->data + 4 * (k * words + c)) >> shift) & 0xF);
            out[k] = (float)(q - z) * s;
        }
    }
    return 0;
}

int hfq_row_bnb(const SrcTensor *t, uint64_t n, float *out, char *err) {
    (void)err;
    uint64_t in = t->shape[1];
    float scb = ld_f32(t->aux[0] + 4 * n);
    const int8_t *cb = (const int8_t *)(t->data + n * in);
    for (uint64_t k = 0; k < in; k++) {
        float p = (float)cb[k] * scb;
        out[k] = p / 127.0f;
    }
    return 0;
}
