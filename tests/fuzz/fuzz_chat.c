/* tests/fuzz/fuzz_chat.c: chat_parse in every format (first byte: low bits 0 auto, 1 text,
 * 2 transcript, 3 json; bit 2 adds CHAT_DROP_SYSTEM; the rest is the file), then template_render
 * of the result with every guard version.
 * Invariants: an accepted conversation is non-empty, alternates user/assistant from the user,
 * respects the CHAT_MAX_* limits and its byte count; every message renders; the prompt's spans
 * concatenate to its text; message content never adds a SPECIAL span (LG3 prompts have exactly
 * six, LG1/LG2 none). */
#include "chat.h"
#include "fuzz.h"
#include "template.h"

static PromptFormat chat_pf[4];

static int chat_init_target(void) {
    char err[ERRLEN];
    for (int v = 1; v <= 4; v++)
        if (template_default(&chat_pf[v - 1], v, err)) {
            fprintf(stderr, "template_default: %s\n", err);
            return -1;
        }
    return 0;
}

/* Render c with pf and check the prompt's structure. */
static void chat_check_render(const PromptFormat *pf, const Conversation *c) {
    Prompt p;
    char err[ERRLEN];
    FUZZ_CHECK(template_render(pf, c, &p, err) == 0, "a parsed conversation does not render: %s", err);
    FUZZ_CHECK(p.n >= 1 && p.n <= PROMPT_MAX_SPANS, "%d spans", p.n);
    size_t off = 0;
    int specials = 0;
    for (int i = 0; i < p.n; i++) {
        FUZZ_CHECK(p.spans[i].text == (const char *)p.text.p + off, "span %d not contiguous", i);
        FUZZ_CHECK(p.spans[i].len > 0, "empty span %d", i);
        off += p.spans[i].len;
        specials += p.spans[i].special;
    }
    FUZZ_CHECK(off == p.text.len && p.text.p[p.text.len] == 0, "spans do not cover the text");
    int want = pf->version == GUARD_LG3_8B || pf->version == GUARD_LG3_1B ? 6 : 0;
    FUZZ_CHECK(specials == want, "%d special spans for guard version %d", specials, pf->version);
    prompt_free(&p);
}

static int chat_one(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    int format = data[0] & 3, flags = data[0] & 4 ? CHAT_DROP_SYSTEM : 0;
    Conversation c;
    char err[ERRLEN];
    if (chat_parse(&c, (const char *)data + 1, size - 1, format | flags, err)) {
        fuzz_check_err(err);
        FUZZ_CHECK(c.n == 0 && c.msgs == NULL, "conversation not freed on error");
        return 0;
    }
    FUZZ_CHECK(c.n >= 1 && c.n <= CHAT_MAX_MESSAGES, "%d messages", c.n);
    uint64_t bytes = 0;
    int parts = 0;
    for (int i = 0; i < c.n; i++) {
        const Message *m = &c.msgs[i];
        FUZZ_CHECK(m->role == (i % 2 == 0 ? ROLE_USER : ROLE_ASSISTANT), "message %d has role %d", i, m->role);
        FUZZ_CHECK(m->n_parts >= 1, "message %d has no parts", i);
        for (int k = 0; k < m->n_parts; k++) {
            FUZZ_CHECK(m->parts[k].text && m->parts[k].text[m->parts[k].len] == 0, "part not terminated");
            bytes += m->parts[k].len;
        }
        parts += m->n_parts;
    }
    FUZZ_CHECK(bytes == c.bytes && bytes <= CHAT_MAX_BYTES, "byte count %llu vs %llu", (unsigned long long)bytes,
               (unsigned long long)c.bytes);
    FUZZ_CHECK(parts == c.n_parts && parts <= CHAT_MAX_PARTS, "part count");
    if (format == CHAT_TEXT) FUZZ_CHECK(c.n == 1 && c.msgs[0].n_parts == 1, "text format gave %d messages", c.n);
    for (int v = 0; v < 4; v++) chat_check_render(&chat_pf[v], &c);
    chat_free(&c);
    return 1;
}

FUZZ_TARGET(chat_init_target, chat_one)
