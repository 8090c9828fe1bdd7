/* report.c: results written as JSON, shared by ./run (--json, --batch, --eval) and anything else
 * that answers in JSON. json.c only reads JSON; this file only writes it.
 */
#include "report.h"

#include <stdio.h>
#include <string.h>

/* JSON string literal for s[0..n) (control characters and quotes escaped; bytes >= 0x80 as is). */
void print_json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch == '\n') fputs("\\n", f);
        else if (ch == '\r') fputs("\\r", f);
        else if (ch == '\t') fputs("\\t", f);
        else if (ch < 0x20 || ch == 0x7F) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

void print_decision_json(FILE *f, const Json *j, const JsonNode *id, const Guard *g, const PromptFormat *pf, const Decision *d) {
    fprintf(f, "{");
    if (j) { fprintf(f, "\"id\":"); print_json_value(f, j, id); fprintf(f, ","); }
    fprintf(f, "\"verdict\":\"%s\",\"p_unsafe\":%.9g,\"p_safe_token\":%.9g,\"p_unsafe_token\":%.9g,\"argmax\":%d,\"categories\":[",
            d->unsafe ? "unsafe" : "safe", (double)d->p_unsafe, (double)d->p_safe, (double)d->p_unsafe_token, d->argmax);
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
    fprintf(f, ",\"guard\":\"%s\",\"prompt_tokens\":%lld,\"cached_tokens\":%lld,\"threads\":%d,\"prefill_ms\":%.3f,\"decode_ms\":%.3f}\n",
            template_guard_name(g->pf.version), (long long)d->prompt_tokens, (long long)d->reused_tokens, g->model.n_threads,
            d->t_prefill * 1e3, d->t_decode * 1e3);
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

