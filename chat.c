/* chat.c: read the conversation to classify from plain text, a User:/Agent: transcript or JSON.
 *
 * Mirrors the `messages` argument of Hugging Face apply_chat_template as the Llama Guard
 * templates consume it: roles alternate user/assistant starting with the user (the templates'
 * raise_exception rule, checked here early so the error can name a line), and a content list of
 * text parts is kept part by part because the Llama Guard 3 1B template renders each text part
 * as its own "Role: text.strip()" turn (so two parts give two "User: ..." lines with one role word).
 *
 * Decisions where HF has no rule (documented for users in chat.h):
 *  - A leading UTF-8 byte-order mark is skipped in every format.
 *  - Text formats read CRLF line endings as LF: a file's line-ending convention is not part of
 *    the message. JSON strings are taken exactly as decoded (an escaped "\r\n" stays).
 *  - The default (chat_default_format) is one user message, whatever the text looks like; only a
 *    caller's choice gives structure: --format transcript|json, or an input file named *.json.
 *    Message text never chooses (a guard fails closed, style.md lesson 17).
 *  - CHAT_AUTO (only when asked for by name, for trusted files): JSON if the first non-blank byte
 *    is '[' or '{'; else a transcript if the first non-blank line starts with a role prefix; else
 *    plain text. chat_read_file also treats a ".json" file name as JSON.
 *  - Transcript prefixes are `User:`, `Agent:`, `Assistant:` in any letter case at the very start
 *    of a line; an indented prefix is ordinary text. Anything after the colon (minus leading
 *    blanks) starts the turn. Empty turns are allowed (HF renders "User: ").
 *  - Plain text or a transcript with no non-blank byte at all is an error (almost certainly the
 *    wrong file); a JSON message whose content is "" or whitespace is accepted, as HF does.
 *  - JSON roles: "user", "assistant", and "agent" (the Llama Guard word for the assistant).
 *    "system"/"developer" messages are errors, or left out with CHAT_DROP_SYSTEM when they come
 *    before the first user message; "tool" roles and tool calls are errors; other roles ("User")
 *    are errors rather than guesses. Other message keys
 *    are ignored. Content parts of type "image"/"image_url" are errors (text-only runtime: dropping
 *    an image would classify a different conversation); a content list without text is an error.
 * Non-goals: multimodal input, JSON Lines (a batch reader calls chat_from_json per line).
 */
#include "chat.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ==== Conversation building ==== */

void chat_init(Conversation *c) { memset(c, 0, sizeof *c); }

void chat_free(Conversation *c) {
    for (int i = 0; i < c->n; i++) {
        for (int k = 0; k < c->msgs[i].n_parts; k++) free(c->msgs[i].parts[k].text);
        free(c->msgs[i].parts);
    }
    free(c->msgs);
    chat_init(c);
}

const char *chat_role_name(int role) { return role == ROLE_USER ? "user" : role == ROLE_ASSISTANT ? "assistant" : "?"; }

/* Copy text into a new part of m; the limits are checked against the whole conversation. */
static int add_part(Conversation *c, Message *m, const char *text, size_t len, char *err) {
    if (c->n_parts >= CHAT_MAX_PARTS) return errf(err, "too many text parts (limit %d)", CHAT_MAX_PARTS);
    if (len > CHAT_MAX_BYTES - c->bytes)
        return errf(err, "conversation text exceeds the limit of %u bytes", (unsigned)CHAT_MAX_BYTES);
    int n = m->n_parts;
    if (n == 0 || (n >= 4 && (n & (n - 1)) == 0)) { /* capacity is implicitly max(4, next power of two) */
        ChatPart *q = realloc(m->parts, (size_t)(n ? 2 * n : 4) * sizeof *q);
        if (!q) return errf(err, "out of memory");
        m->parts = q;
    }
    ChatPart *parts = m->parts;
    char *t = malloc(len + 1);
    if (!t) return errf(err, "out of memory");
    if (len) memcpy(t, text, len);
    t[len] = 0;
    parts[m->n_parts].text = t;
    parts[m->n_parts].len = len;
    m->n_parts++;
    c->n_parts++;
    c->bytes += len;
    return 0;
}

int chat_append(Conversation *c, int role, const char *text, size_t len, char *err) {
    if (role != ROLE_USER && role != ROLE_ASSISTANT) return errf(err, "invalid role %d", role);
    if (c->n >= CHAT_MAX_MESSAGES) return errf(err, "too many messages (limit %d)", CHAT_MAX_MESSAGES);
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 8;
        Message *q = realloc(c->msgs, (size_t)cap * sizeof *q);
        if (!q) return errf(err, "out of memory");
        c->msgs = q;
        c->cap = cap;
    }
    Message *m = &c->msgs[c->n];
    memset(m, 0, sizeof *m);
    m->role = role;
    if (add_part(c, m, text, len, err)) {
        free(m->parts);
        return -1;
    }
    c->n++;
    return 0;
}

int chat_append_part(Conversation *c, const char *text, size_t len, char *err) {
    if (c->n == 0) return errf(err, "no message to add a text part to");
    return add_part(c, &c->msgs[c->n - 1], text, len, err);
}

/* The role the n-th message (0-based) must have: the templates' alternation rule. */
static int expected_role(int index) { return index % 2 == 0 ? ROLE_USER : ROLE_ASSISTANT; }

/* ==== Plain text and transcripts ==== */

static int is_sp(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f'; }

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!is_sp(s[i])) return 0;
    return 1;
}

/* Append s[0..n) to b with every CRLF turned into LF. */
static void put_lf(Buf *b, const char *s, size_t n) {
    size_t from = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '\r' && s[i + 1] == '\n') {
            buf_put(b, s + from, i - from);
            from = i + 1; /* the '\n' starts the next run */
        }
    buf_put(b, s + from, n - from);
}

/* If the line opens a turn ("User:", "agent:", ...), its role and the offset just after the colon. */
static int role_prefix(const char *s, size_t n, size_t *after) {
    static const struct { const char *word; int role; } words[] = {
        { "user", ROLE_USER }, { "agent", ROLE_ASSISTANT }, { "assistant", ROLE_ASSISTANT },
    };
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
        size_t k = strlen(words[w].word);
        if (n > k && s[k] == ':' && strncasecmp(s, words[w].word, k) == 0) {
            *after = k + 1;
            return words[w].role;
        }
    }
    return 0;
}

/* One line at a time: [*pos, end of line) without its "\r\n" / "\n"; returns 0 at the end. */
static int next_line(const char *s, size_t len, size_t *pos, const char **line, size_t *n) {
    if (*pos >= len) return 0;
    const char *p = s + *pos, *nl = memchr(p, '\n', len - *pos);
    size_t k = nl ? (size_t)(nl - p) : len - *pos;
    *pos += k + (nl ? 1 : 0);
    if (nl && k && p[k - 1] == '\r') k--; /* CRLF only: a lone CR is content, as in plain text */
    *line = p;
    *n = k;
    return 1;
}

static int parse_text(Conversation *c, const char *s, size_t len, char *err) {
    if (is_blank(s, len)) return errf(err, "input has no text to classify");
    Buf b = { 0 };
    put_lf(&b, s, len);
    int rc = b.oom ? errf(err, "out of memory") : chat_append(c, ROLE_USER, (const char *)b.p, b.len, err);
    buf_free(&b);
    return rc;
}

static int parse_transcript(Conversation *c, const char *s, size_t len, char *err) {
    if (is_blank(s, len)) return errf(err, "input has no text to classify");
    Buf b = { 0 };
    int open = 0, lineno = 0, role = 0, rc = 0;
    size_t pos = 0, n;
    const char *line;
    while (rc == 0 && next_line(s, len, &pos, &line, &n)) {
        lineno++;
        size_t after;
        int r = role_prefix(line, n, &after);
        if (!r) {
            if (open) {
                buf_put(&b, "\n", 1);
                buf_put(&b, line, n);
            } else if (!is_blank(line, n)) {
                rc = errf(err, "line %d: text before the first 'User:' line (a transcript's turns start with "
                               "'User:', 'Agent:' or 'Assistant:')", lineno);
            }
            continue;
        }
        if (open) { /* close the previous turn */
            rc = b.oom ? errf(err, "out of memory") : chat_append(c, role, (const char *)b.p, b.len, err);
            b.len = 0;
            if (rc) break;
        }
        if (c->n >= CHAT_MAX_MESSAGES) {
            rc = errf(err, "line %d: too many messages (limit %d)", lineno, CHAT_MAX_MESSAGES);
            break;
        }
        if (r != expected_role(c->n)) {
            rc = errf(err, "line %d: %s turn where %s turn was expected (turns must alternate User/Agent, "
                           "starting with User)", lineno, r == ROLE_USER ? "a User" : "an Agent",
                      expected_role(c->n) == ROLE_USER ? "a User" : "an Agent");
            break;
        }
        while (after < n && (line[after] == ' ' || line[after] == '\t')) after++;
        buf_put(&b, line + after, n - after);
        role = r;
        open = 1;
    }
    if (rc == 0 && open) rc = b.oom ? errf(err, "out of memory") : chat_append(c, role, (const char *)b.p, b.len, err);
    buf_free(&b);
    return rc;
}

/* ==== JSON ==== */

static int json_role(const JsonNode *r, int *role) {
    static const struct { const char *name; int role; } roles[] = {
        { "user", ROLE_USER }, { "assistant", ROLE_ASSISTANT }, { "agent", ROLE_ASSISTANT },
    };
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (json_str_is(r, roles[i].name)) {
            *role = roles[i].role;
            return 0;
        }
    return -1;
}

/* Start message `no` (1-based) with its first text part, or add a later part; limit errors name it. */
static int json_text(Conversation *c, int role, int first, const JsonNode *s, int no, char *err) {
    char e[ERRLEN];
    if ((first ? chat_append(c, role, s->str, s->len, e) : chat_append_part(c, s->str, s->len, e)) == 0) return 0;
    return errf(err, "message %d: %s", no, e);
}

/* The content of message `no`: a string, or a list of text parts. */
static int json_content(Conversation *c, const Json *j, const JsonNode *content, int role, int no, char *err) {
    if (content->type == JSON_STRING) return json_text(c, role, 1, content, no, err);
    if (content->type != JSON_ARRAY)
        return errf(err, "message %d: \"content\" must be a string or a list of {\"type\": \"text\", \"text\": ...} "
                         "parts", no);
    int k = 0, texts = 0;
    char tmp[48];
    JSON_FOR(j, content, part) {
        k++;
        const JsonNode *type = json_get(j, part, "type");
        if (part->type != JSON_OBJECT || !type || type->type != JSON_STRING)
            return errf(err, "message %d, part %d: expected {\"type\": \"text\", \"text\": ...}", no, k);
        if (!json_str_is(type, "text")) {
            if (json_str_is(type, "image") || json_str_is(type, "image_url"))
                return errf(err, "message %d, part %d: image content is not supported (text-only runtime)", no, k);
            return errf(err, "message %d, part %d: unsupported content type \"%s\"", no, k,
                        shown_text(type->str, type->len, tmp));
        }
        const JsonNode *text = json_get(j, part, "text");
        if (!text || text->type != JSON_STRING)
            return errf(err, "message %d, part %d: a text part needs a string \"text\"", no, k);
        if (json_text(c, role, texts++ == 0, text, no, err)) return -1;
    }
    if (texts == 0) return errf(err, "message %d: content has no text parts", no);
    return 0;
}

/* OpenAI-style arrays carry more than Llama Guard's two roles. The policy (chat.h): "system" and
 * "developer" (the application's own instruction, not a turn to judge) are an error unless
 * CHAT_DROP_SYSTEM, and even then only before the first user message; "tool" messages and
 * "tool_calls" / "function_call" are always errors, because Meta's reference prompt and the HF
 * templates have no place for them and dropping them would judge less than was sent. */
static int is_system(const JsonNode *r) { return json_str_is(r, "system") || json_str_is(r, "developer"); }

int chat_from_json_flags(Conversation *c, const Json *j, const JsonNode *node, int flags, char *err) {
    chat_init(c);
    const JsonNode *msgs = node;
    if (node->type == JSON_OBJECT) {
        msgs = json_get(j, node, "messages");
        if (!msgs) return errf(err, "JSON object has no \"messages\" member");
        if (msgs->type != JSON_ARRAY)
            return errf(err, "\"messages\" must be an array of {\"role\", \"content\"} objects");
    } else if (node->type != JSON_ARRAY) {
        return errf(err, "expected a JSON array of messages or an object with \"messages\"");
    }
    if (msgs->len == 0) return errf(err, "empty conversation (no messages)");
    if (msgs->len > CHAT_MAX_MESSAGES)
        return errf(err, "too many messages: %u (limit %d)", msgs->len, CHAT_MAX_MESSAGES);
    int no = 0;
    char tmp[48];
    JSON_FOR(j, msgs, m) {
        no++;
        if (m->type != JSON_OBJECT) {
            chat_free(c);
            return errf(err, "message %d: expected an object with \"role\" and \"content\"", no);
        }
        const JsonNode *r = json_get(j, m, "role"), *content = json_get(j, m, "content");
        const JsonNode *calls = json_get(j, m, "tool_calls") ? json_get(j, m, "tool_calls") : json_get(j, m, "function_call");
        int role = 0, rc = 0;
        if (!r || r->type != JSON_STRING)
            rc = errf(err, "message %d: missing string \"role\"", no);
        else if (is_system(r) && c->n == 0 && (flags & CHAT_DROP_SYSTEM))
            continue; /* the application's instruction: not judged */
        else if (is_system(r))
            rc = c->n ? errf(err, "message %d: a \"%s\" message after the conversation started cannot be placed in a Llama "
                                  "Guard prompt", no, shown_text(r->str, r->len, tmp))
                      : errf(err, "message %d: role \"%s\" is not supported by Llama Guard's templates (it is not judged); "
                                  "pass --system drop to leave leading system messages out", no, shown_text(r->str, r->len, tmp));
        else if (json_str_is(r, "tool") || json_str_is(r, "function"))
            rc = errf(err, "message %d: role \"%s\" is not supported: Llama Guard judges user and assistant turns only", no,
                      shown_text(r->str, r->len, tmp));
        else if (calls && calls->type != JSON_NULL)
            rc = errf(err, "message %d: tool calls cannot be judged by Llama Guard (send the call as assistant text)", no);
        else if (json_role(r, &role))
            rc = errf(err, "message %d: role \"%s\" is not supported (expected \"user\" or \"assistant\")", no,
                      shown_text(r->str, r->len, tmp));
        else if (role != expected_role(c->n))
            rc = errf(err, "message %d: role \"%s\" where \"%s\" was expected (roles must alternate "
                           "user/assistant/..., starting with user)", no, shown_text(r->str, r->len, tmp),
                      chat_role_name(expected_role(c->n)));
        else if (!content)
            rc = errf(err, "message %d: missing \"content\"", no);
        else
            rc = json_content(c, j, content, role, no, err);
        if (rc) {
            chat_free(c);
            return -1;
        }
    }
    if (c->n == 0) return errf(err, "no user message (only system messages)");
    return 0;
}

int chat_from_json(Conversation *c, const Json *j, const JsonNode *node, char *err) { return chat_from_json_flags(c, j, node, 0, err); }

/* ==== Entry points ==== */

/* CHAT_AUTO: JSON if the first non-blank byte opens an array or object, a transcript if the first
 * non-blank line starts with a role prefix, plain text otherwise. */
static int sniff(const char *s, size_t len) {
    size_t i = 0, n, after;
    while (i < len && is_sp(s[i])) i++;
    if (i < len && (s[i] == '[' || s[i] == '{')) return CHAT_JSON;
    while (i > 0 && s[i - 1] != '\n') i--; /* an indented prefix is not a prefix */
    const char *line;
    return next_line(s, len, &i, &line, &n) && role_prefix(line, n, &after) ? CHAT_TRANSCRIPT : CHAT_TEXT;
}

int chat_parse(Conversation *c, const char *data, size_t len, int format, char *err) {
    chat_init(c);
    int flags = format & ~CHAT_FORMAT_MASK;
    format &= CHAT_FORMAT_MASK;
    if (len > CHAT_MAX_BYTES)
        return errf(err, "input is %zu bytes; the limit is %u bytes", len, (unsigned)CHAT_MAX_BYTES);
    if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) data += 3, len -= 3;
    const char *why = "";
    if (format == CHAT_AUTO) {
        format = sniff(data, len);
        if (format == CHAT_JSON)
            why = " (read as JSON because the input starts with '[' or '{'; choose the text format for plain text)";
    }
    int rc;
    switch (format) {
    case CHAT_TEXT: rc = parse_text(c, data, len, err); break;
    case CHAT_TRANSCRIPT: rc = parse_transcript(c, data, len, err); break;
    case CHAT_JSON: {
        Json j;
        char e[ERRLEN];
        if (json_parse(&j, data, len, e)) return errf(err, "%s%s", e, why);
        rc = chat_from_json_flags(c, &j, json_root(&j), flags, err);
        json_free(&j);
        break;
    }
    default: return errf(err, "unknown conversation format %d", format);
    }
    if (rc) chat_free(c);
    return rc;
}

int chat_read_file(Conversation *c, const char *path, int format, char *err) {
    chat_init(c);
    char *buf, e[ERRLEN];
    uint64_t len;
    if (read_text_file(path, CHAT_MAX_BYTES, &buf, &len, err)) return -1;
    size_t pl = strlen(path);
    if ((format & CHAT_FORMAT_MASK) == CHAT_AUTO && pl >= 5 && strcasecmp(path + pl - 5, ".json") == 0) format = CHAT_JSON | (format & ~CHAT_FORMAT_MASK);
    int rc = chat_parse(c, buf, (size_t)len, format, e);
    free(buf);
    if (rc) return errf(err, "%s: %s", path, e);
    return 0;
}

int chat_default_format(const char *path) {
    size_t pl = path ? strlen(path) : 0;
    return pl >= 5 && strcasecmp(path + pl - 5, ".json") == 0 ? CHAT_JSON : CHAT_TEXT;
}

int chat_parse_format(const char *name, int *format, char *err) {
    static const struct { const char *name; int format; } names[] = {
        { "auto", CHAT_AUTO }, { "text", CHAT_TEXT }, { "transcript", CHAT_TRANSCRIPT }, { "json", CHAT_JSON },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) {
            *format = names[i].format;
            return 0;
        }
    return errf(err, "unknown conversation format '%.40s' (expected auto, text, transcript or json)", name);
}
