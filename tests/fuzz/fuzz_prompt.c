/* tests/fuzz/fuzz_prompt.c: template_load, the guard.bin prompt section reader, on untrusted
 * bytes: as given, and with the trailing checksum recomputed to reach the structural checks.
 * Invariants: a loaded format has a known version and valid categories, serializes back to the
 * exact input bytes (the layout has one encoding), and renders a conversation. */
#include "chat.h"
#include "fuzz.h"
#include "template.h"

static int prompt_load(const uint8_t *p, size_t n) {
    PromptFormat pf;
    char err[ERRLEN];
    if (template_load(&pf, p, n, err)) {
        fuzz_check_err(err);
        FUZZ_CHECK(pf.cats == NULL && pf.n_cats == 0, "format not empty after an error");
        return 0;
    }
    FUZZ_CHECK(pf.version >= GUARD_LG1 && pf.version <= GUARD_LG4, "version %d", pf.version);
    FUZZ_CHECK(pf.n_cats >= 1 && pf.n_cats <= TEMPLATE_MAX_CATS, "%d categories", pf.n_cats);
    Buf b = { 0 };
    FUZZ_CHECK(template_serialize(&pf, &b, err) == 0, "serialize a loaded section: %s", err);
    FUZZ_CHECK(b.len == n && memcmp(b.p, p, n) == 0, "section does not serialize back to its bytes");
    buf_free(&b);
    Conversation c;
    chat_init(&c);
    FUZZ_CHECK(chat_append(&c, ROLE_USER, " hi ", 4, err) == 0, "%s", err);
    Prompt pr;
    FUZZ_CHECK(template_render(&pf, &c, &pr, err) == 0, "render: %s", err);
    prompt_free(&pr);
    chat_free(&c);
    template_free(&pf);
    return 1;
}

static int prompt_one(const uint8_t *data, size_t size) {
    int ok = prompt_load(data, size);
    uint8_t *fixed = fuzz_dup(data, size);
    fuzz_fix_prompt_crc(fixed, size);
    if (size && memcmp(fixed, data, size) != 0) ok |= prompt_load(fixed, size);
    free(fixed);
    return ok;
}

FUZZ_TARGET(NULL, prompt_one)
