/* report.c: results written as JSON, shared by ./run (--json, --batch, --eval) and anything else
 * that answers in JSON. json.c only reads JSON; this file only writes it.
 */
#include "report.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629: no overlongs, no surrogates,
 * at most U+10FFFF), or 0 when s starts an ill-formed one. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (k == 0 || k > n) return 0;
    unsigned char lo = 0x80, hi = 0xBF; /* the second byte's range narrows for E0, ED, F0, F4 */
    if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
    else if (c == 0xF0) lo = 0x90;
    else if (c == 0xF4) hi = 0x8F;
    for (size_t i = 1; i < k; i++) {
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF)) return 0;
    }
    return k;
}

/* JSON string literal for s[0..n): quotes, backslashes and control characters escaped; valid
 * UTF-8 copied; each ill-formed byte written as U+FFFD, so the output is always valid UTF-8. */
void print_json_str(FILE *f, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char ch = u[i];
        size_t k = utf8_seq(u + i, n - i);
        if (k == 0) { fputs("\\ufffd", f); i++; continue; }
        if (k > 1) { fwrite(u + i, 1, k, f); i += k; continue; }
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch == '\n') fputs("\\n", f);
        else if (ch == '\r') fputs("\\r", f);
        else if (ch == '\t') fputs("\\t", f);
        else if (ch < 0x20 || ch == 0x7F) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
        i++;
    }
    fputc('"', f);
}

/* A JSON number; NaN and infinities have no JSON spelling and print as null (the decision path
 * never lets one through: classify.c fails closed first). */
void print_json_num(FILE *f, double x, const char *fmt) {
    if (isfinite(x)) fprintf(f, fmt, x);
    else fputs("null", f);
}

void print_decision_json(FILE *f, const Json *j, const JsonNode *id, const Guard *g, const PromptFormat *pf, const Decision *d) {
    fprintf(f, "{");
    if (j) { fprintf(f, "\"id\":"); print_json_value(f, j, id); fprintf(f, ","); }
    fprintf(f, "\"verdict\":\"%s\",\"p_unsafe\":", d->unsafe ? "unsafe" : "safe");
    print_json_num(f, d->p_unsafe, "%.9g");
    fprintf(f, ",\"p_safe_token\":");
    print_json_num(f, d->p_safe, "%.9g");
    fprintf(f, ",\"p_unsafe_token\":");
    print_json_num(f, d->p_unsafe_token, "%.9g");
    fprintf(f, ",\"argmax\":%d,\"categories\":[", d->argmax);
    for (int i = 0; d->unsafe && i < d->verdict.n_codes; i++) {
        const VerdictCode *vc = &d->verdict.codes[i];
        fprintf(f, "%s{\"code\":", i ? "," : "");
        print_json_str(f, vc->code, strlen(vc->code));
        fprintf(f, ",\"name\":");
        if (vc->cat >= 0) {
            size_t nl;
            const char *nm = template_category_name(&pf->cats[vc->cat], &nl);
            print_json_str(f, nm, nl);
        } else fprintf(f, "null");
        fprintf(f, "}");
    }
    fprintf(f, "],\"model_output\":");
    if (d->unsafe) print_json_str(f, d->generated, strlen(d->generated));
    else fprintf(f, "\"safe\"");
    fprintf(f, ",\"guard\":\"%s\",\"prompt_tokens\":%lld,\"cached_tokens\":%lld,\"threads\":%d,\"prefill_ms\":",
            template_guard_name(g->pf.version), (long long)d->prompt_tokens, (long long)d->reused_tokens, g->model.n_threads);
    print_json_num(f, d->t_prefill * 1e3, "%.3f");
    fprintf(f, ",\"decode_ms\":");
    print_json_num(f, d->t_decode * 1e3, "%.3f");
    fprintf(f, "}\n");
}

/* {"id":ID,"line":N,"error":"..."}: one failed input line (batch, eval, the server). */
void print_error_json(FILE *f, const Json *j, const JsonNode *id, int64_t line, const char *msg) {
    fputc('{', f);
    if (j || line > 0) { /* a batch line: its id (null when the line did not parse) and number */
        fprintf(f, "\"id\":");
        if (j) print_json_value(f, j, id);
        else fputs("null", f);
        if (line > 0) fprintf(f, ",\"line\":%lld", (long long)line);
        fputc(',', f);
    }
    fprintf(f, "\"error\":");
    print_json_str(f, msg, strlen(msg));
    fprintf(f, "}\n");
}

/* A JSON value printed back as JSON (ids are passed through untouched). */
void print_json_value(FILE *f, const Json *j, const JsonNode *n) {
    if (!n) { fprintf(f, "null"); return; }
    switch (n->type) {
    case JSON_NULL: fprintf(f, "null"); break;
    case JSON_TRUE: fprintf(f, "true"); break;
    case JSON_FALSE: fprintf(f, "false"); break;
    case JSON_NUMBER: fprintf(f, "%s", n->str); break;
    case JSON_STRING: print_json_str(f, n->str, n->len); break;
    default: {
        int first = 1;
        fprintf(f, n->type == JSON_ARRAY ? "[" : "{");
        JSON_FOR(j, n, c) {
            if (!first) fprintf(f, ",");
            first = 0;
            if (n->type == JSON_OBJECT) { print_json_str(f, c->key, c->keylen); fprintf(f, ":"); }
            print_json_value(f, j, c);
        }
        fprintf(f, n->type == JSON_ARRAY ? "]" : "}");
    }
    }
}

