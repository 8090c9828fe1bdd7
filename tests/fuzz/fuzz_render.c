/* tests/fuzz/fuzz_render.c: the prompt renderer with custom categories. The input is split at
 * FUZZ_SEP lines into: a guard version byte, a --categories file, an exclusion list (--exclude),
 * a conversation (any chat format) and a generated verdict text.
 * Invariants: parsed categories have valid unique codes; a failed exclusion leaves the list
 * unchanged; every remaining category line appears in the prompt; the prompt section written
 * from the categories loads back identical; template_parse_verdict only reports listed codes
 * as known and never stores a control byte. */
#include "chat.h"
#include "fuzz.h"
#include "template.h"

static void render_check_cats(const PromptFormat *pf) {
    FUZZ_CHECK(pf->n_cats >= 1 && pf->n_cats <= TEMPLATE_MAX_CATS, "%d categories", pf->n_cats);
    for (int i = 0; i < pf->n_cats; i++) {
        size_t cl = strlen(pf->cats[i].code);
        FUZZ_CHECK(cl >= 1 && cl < CATEGORY_CODE_MAX, "code length %zu", cl);
        FUZZ_CHECK(strspn(pf->cats[i].code, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == cl,
                   "bad code '%s'", pf->cats[i].code);
        FUZZ_CHECK(strlen(pf->cats[i].text) >= 1 && strlen(pf->cats[i].text) <= CATEGORY_TEXT_MAX, "text length");
        for (int k = 0; k < i; k++) FUZZ_CHECK(strcmp(pf->cats[k].code, pf->cats[i].code) != 0, "duplicate code");
        size_t nl;
        const char *name = template_category_name(&pf->cats[i], &nl);
        FUZZ_CHECK(name >= pf->cats[i].text && name + nl <= pf->cats[i].text + strlen(pf->cats[i].text), "name outside text");
    }
}

/* Serialize and load back: same version, same categories. */
static void render_check_section(const PromptFormat *pf) {
    Buf b = { 0 };
    char err[ERRLEN];
    FUZZ_CHECK(template_serialize(pf, &b, err) == 0, "serialize: %s", err);
    PromptFormat back;
    FUZZ_CHECK(template_load(&back, b.p, b.len, err) == 0, "load of a serialized section: %s", err);
    FUZZ_CHECK(back.version == pf->version && back.n_cats == pf->n_cats, "round trip changed the format");
    for (int i = 0; i < pf->n_cats; i++)
        FUZZ_CHECK(!strcmp(back.cats[i].code, pf->cats[i].code) && !strcmp(back.cats[i].text, pf->cats[i].text),
                   "round trip changed category %d", i);
    template_free(&back);
    buf_free(&b);
}

static int render_one(const uint8_t *data, size_t size) {
    FuzzPart part[5] = { { 0 } };
    int np = fuzz_split(data, size, part, 5);
    char err[ERRLEN];
    int version = (part[0].n ? part[0].p[0] % 4 : 2) + 1;
    PromptFormat pf;
    FUZZ_CHECK(template_default(&pf, version, err) == 0, "template_default: %s", err);
    int accepted = 0;
    if (np > 1 && part[1].n) {
        if (template_parse_categories(&pf, (const char *)part[1].p, part[1].n, err)) {
            fuzz_check_err(err);
            template_free(&pf);
            return 0;
        }
    }
    render_check_cats(&pf);
    if (np > 2) {
        /* the list arrives as a C string (argv or a JSON string without NULs) */
        char *codes = malloc(part[2].n + 1);
        FUZZ_CHECK(codes != NULL, "oom");
        memcpy(codes, part[2].p, part[2].n);
        codes[part[2].n] = 0;
        int before = pf.n_cats;
        Category *cats_before = pf.cats;
        char *first = pf.cats[0].code;
        if (template_exclude(&pf, codes, err)) {
            fuzz_check_err(err);
            FUZZ_CHECK(pf.n_cats == before && pf.cats == cats_before && pf.cats[0].code == first,
                       "failed exclusion changed the list");
        } else {
            FUZZ_CHECK(pf.n_cats >= 1 && pf.n_cats <= before, "exclusion left %d of %d", pf.n_cats, before);
        }
        free(codes);
    }
    render_check_cats(&pf);
    render_check_section(&pf);
    Conversation c;
    chat_init(&c);
    if (np > 3 && chat_parse(&c, (const char *)part[3].p, part[3].n, CHAT_AUTO, err) == 0) {
        Prompt p;
        FUZZ_CHECK(template_render(&pf, &c, &p, err) == 0, "render: %s", err);
        for (int i = 0; i < pf.n_cats; i++) {
            Buf line = { 0 };
            buf_put(&line, pf.cats[i].code, strlen(pf.cats[i].code));
            buf_put(&line, ": ", 2);
            buf_put(&line, pf.cats[i].text, strlen(pf.cats[i].text));
            buf_put(&line, "\n", 1);
            FUZZ_CHECK(memmem(p.text.p, p.text.len, line.p, line.len) != NULL, "category %s missing from the prompt",
                       pf.cats[i].code);
            buf_free(&line);
        }
        prompt_free(&p);
        accepted = 1;
    }
    chat_free(&c);
    if (np > 4) {
        Verdict v;
        template_parse_verdict(&pf, (const char *)part[4].p, part[4].n, &v);
        FUZZ_CHECK(v.label >= VERDICT_UNKNOWN && v.label <= VERDICT_UNSAFE, "label %d", v.label);
        FUZZ_CHECK(v.n_codes >= 0 && v.n_codes <= VERDICT_MAX_CODES, "%d codes", v.n_codes);
        FUZZ_CHECK(v.label == VERDICT_UNSAFE || (v.n_codes == 0 && v.n_dropped == 0), "codes without unsafe");
        for (int i = 0; i < v.n_codes; i++) {
            size_t cl = strnlen(v.codes[i].code, CATEGORY_CODE_MAX);
            FUZZ_CHECK(cl >= 1 && cl < CATEGORY_CODE_MAX, "verdict code length %zu", cl);
            for (size_t k = 0; k < cl; k++)
                FUZZ_CHECK((unsigned char)v.codes[i].code[k] >= 0x20 && v.codes[i].code[k] != 0x7F, "control byte in code");
            FUZZ_CHECK(v.codes[i].cat >= -1 && v.codes[i].cat < pf.n_cats, "cat %d", v.codes[i].cat);
            if (v.codes[i].cat >= 0) FUZZ_CHECK(!strcmp(pf.cats[v.codes[i].cat].code, v.codes[i].code), "wrong category match");
        }
    }
    template_free(&pf);
    return accepted;
}

FUZZ_TARGET(NULL, render_one)
