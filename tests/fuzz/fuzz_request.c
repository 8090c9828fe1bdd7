/* tests/fuzz/fuzz_request.c: a JSON request body as the server's /v1/classify and --batch lines
 * read it: json_parse, template_from_json (categories, exclude) over a guard version's default
 * categories, chat_from_json, then template_render. The first byte picks the version (low two
 * bits) and whether "categories" may replace the list (bit 2, as /v1/classify and --batch
 * allow, /v1/moderations does not). Invariants: a refusal is one clean line; accepted categories
 * number 1..TEMPLATE_MAX_CATS with unique codes; without the replacement, every code is one of
 * the defaults (exclude only removes) and in their order; an accepted conversation renders. */
#include "chat.h"
#include "fuzz.h"
#include "template.h"

static PromptFormat request_base[4];

static int request_init(void) {
    char err[ERRLEN];
    for (int v = 1; v <= 4; v++)
        if (template_default(&request_base[v - 1], v, err)) {
            fprintf(stderr, "template_default: %s\n", err);
            return -1;
        }
    return 0;
}

static int request_one(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const PromptFormat *base = &request_base[data[0] & 3];
    int allow = (data[0] >> 2) & 1;
    char err[ERRLEN];
    Json j;
    if (json_parse(&j, (const char *)data + 1, size - 1, err)) {
        fuzz_check_err(err);
        return 0;
    }
    const JsonNode *root = json_root(&j);
    int accepted = 0;
    PromptFormat pf = { 0 };
    if (root->type == JSON_OBJECT) {
        if (template_from_json(&pf, &j, root, base, allow, err)) {
            fuzz_check_err(err);
        } else {
            FUZZ_CHECK(pf.version == base->version, "version changed");
            FUZZ_CHECK(pf.n_cats >= 1 && pf.n_cats <= TEMPLATE_MAX_CATS, "%d categories", pf.n_cats);
            int from = 0;
            for (int i = 0; i < pf.n_cats; i++) {
                for (int k = 0; k < i; k++) FUZZ_CHECK(strcmp(pf.cats[k].code, pf.cats[i].code) != 0, "duplicate code %s", pf.cats[i].code);
                if (!allow || !json_get(&j, root, "categories")) { /* only removals: an ordered subset of the defaults */
                    while (from < base->n_cats && strcmp(base->cats[from].code, pf.cats[i].code) != 0) from++;
                    FUZZ_CHECK(from < base->n_cats, "code %s is not a default one, or out of order", pf.cats[i].code);
                    FUZZ_CHECK(!strcmp(base->cats[from].text, pf.cats[i].text), "text of %s changed", pf.cats[i].code);
                    from++;
                }
            }
            Conversation c;
            if (chat_from_json(&c, &j, root, err)) {
                fuzz_check_err(err);
            } else {
                Prompt p;
                FUZZ_CHECK(template_render(&pf, &c, &p, err) == 0, "an accepted request does not render: %s", err);
                prompt_free(&p);
                chat_free(&c);
                accepted = 1;
            }
        }
    }
    template_free(&pf);
    json_free(&j);
    return accepted;
}

FUZZ_TARGET(request_init, request_one)
