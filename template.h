/* template.h: Llama Guard prompt formats: which guard a checkpoint is, its unsafe-content
 * categories, the byte-exact prompt for a conversation, the guard.bin prompt section, and
 * reading the model's verdict back.
 *
 * The prompt is what Hugging Face apply_chat_template(messages, tokenize=False,
 * add_generation_prompt=True) returns with each version's Llama Guard chat template (see
 * template.c for the quirks kept and the one bug not copied). It is produced as spans so the
 * runtime can tokenize safely: a SPECIAL span is one special token named by its text (mapped to an
 * id by the tokenizer), a TEXT span is tokenized as plain text in one piece. Message content is
 * only ever inside TEXT spans, so "<|eot_id|>" typed by a user stays text.
 *
 * Errors: 0 / -1 with a one-line message in err[ERRLEN]; nothing here prints or exits.
 */
#ifndef GUARD_TEMPLATE_H
#define GUARD_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "util.h"

/* ==== Guard versions ==== */

enum { GUARD_LG1 = 1, GUARD_LG2 = 2, GUARD_LG3_8B = 3, GUARD_LG3_1B = 4 };

/* Identify the version from a Hugging Face chat template (tokenizer_config.json "chat_template",
 * or the GGUF tokenizer.chat_template). Unknown text is an error suggesting --guard. */
int template_detect(const char *tmpl, size_t len, int *version, char *err);
/* --guard names: lg1 | lg2 | lg3-8b | lg3-1b (also lg1-7b, lg2-8b, and '_' for '-'). */
int template_parse_guard(const char *name, int *version, char *err);
const char *template_guard_name(int version);  /* "lg3-8b"; "?" if unknown */
const char *template_guard_title(int version); /* "Llama Guard 3 8B" */

/* ==== Categories ==== */

#define TEMPLATE_MAX_CATS 256
#define CATEGORY_CODE_MAX 16        /* bytes including the NUL: codes are at most 15 characters */
#define CATEGORY_TEXT_MAX (64u << 10)

typedef struct {
    char *code; /* owned, e.g. "S1": letters, digits, '_' or '-' */
    char *text; /* owned; rendered as code + ": " + text + "\n"; may hold newlines (LG1 policies) */
} Category;

typedef struct {
    int version;    /* GUARD_* */
    Category *cats; /* [n_cats], owned, in prompt order */
    int n_cats;
} PromptFormat;

/* The version's categories exactly as its template renders them by default. */
int template_default(PromptFormat *pf, int version, char *err);
void template_free(PromptFormat *pf);
/* Replace the categories with copies of cats[0..n) (validated: codes, no duplicates, no NULs). */
int template_set_categories(PromptFormat *pf, const Category *cats, int n, char *err);
/* Replace the categories from a --categories file's contents (format in template.c); errors
 * name the line. template_read_categories reads the file first and prefixes err with its path. */
int template_parse_categories(PromptFormat *pf, const char *text, size_t len, char *err);
int template_read_categories(PromptFormat *pf, const char *path, char *err);
/* Drop the comma-separated codes (e.g. "S6,S8") without renumbering; an unknown code, or
 * dropping every category, is an error and leaves pf unchanged. */
int template_exclude(PromptFormat *pf, const char *codes, char *err);
/* pf = base's categories, then the request object's optional "categories" ({"S1": "text", ...},
 * replacing them; only when allow_categories) and "exclude" ("S6,S8" or ["S6","S8"]). */
int template_from_json(PromptFormat *pf, const Json *j, const JsonNode *root, const PromptFormat *base, int allow_categories, char *err);
/* A short display name for a category: its text up to the first ". " or newline, without the
 * final '.' ("Violence and Hate", "Spam"). Points into c->text. */
const char *template_category_name(const Category *c, size_t *len);

/* ==== Rendering ==== */

#define PROMPT_MAX_SPANS 12

typedef struct {
    int special;      /* 1: one special token whose text is text[0..len) */
    const char *text; /* points into Prompt.text */
    size_t len;
} Span;

typedef struct {
    Span spans[PROMPT_MAX_SPANS]; /* [n], in order; concatenated they are text */
    int n;
    Buf text;                     /* the whole prompt (specials written as their text), for --show-prompt */
} Prompt;

/* Render the conversation. c must be non-empty and alternate user/assistant from the user. */
int template_render(const PromptFormat *pf, const Conversation *c, Prompt *p, char *err);
void prompt_free(Prompt *p);

/* Python str.strip() on UTF-8 bytes: [*begin, *end) is s without leading/trailing characters
 * for which str.isspace() is true (ASCII \t\n\v\f\r, \x1c-\x1f, space, U+0085, U+00A0, U+1680,
 * U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000). Invalid UTF-8 is never whitespace. */
void py_strip(const char *s, size_t len, size_t *begin, size_t *end);

/* ==== guard.bin prompt section (SEC_PROMPT) ==== */

/* Append the section bytes for pf to out (layout in template.c). */
int template_serialize(const PromptFormat *pf, Buf *out, char *err);
/* Parse untrusted section bytes; every failure is a clean error naming the field. */
int template_load(PromptFormat *pf, const uint8_t *p, uint64_t size, char *err);

/* ==== Verdicts ==== */

#define VERDICT_MAX_CODES 32
enum { VERDICT_UNKNOWN = 0, VERDICT_SAFE = 1, VERDICT_UNSAFE = 2 };

typedef struct {
    char code[CATEGORY_CODE_MAX]; /* as generated (truncated to 15 bytes), NUL-terminated */
    int cat;                      /* index into PromptFormat.cats, or -1 when not a listed code */
} VerdictCode;

typedef struct {
    int label;                    /* VERDICT_* */
    int n_codes;                  /* entries in codes[] */
    int n_dropped;                /* further codes past VERDICT_MAX_CODES */
    VerdictCode codes[VERDICT_MAX_CODES];
} Verdict;

/* Read the generated text ("unsafe\nS1,S10", leading "\n\n" allowed). Never fails: text that
 * is neither "safe" nor "unsafe" on its first line gives VERDICT_UNKNOWN. */
void template_parse_verdict(const PromptFormat *pf, const char *text, size_t len, Verdict *v);

#endif
