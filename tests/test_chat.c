/* tests/test_chat.c: conversation input (chat.c): plain text, User:/Agent: transcripts and JSON
 * messages, format sniffing, every error path with its location, and the size/count limits.
 * The rendering of what is read here is tested against Hugging Face in test_template.c. */
#include "testutil.h"

#include "chat.h"
#include "util.h"

/* ==== Helpers ==== */

static void parse_ok(Conversation *c, const char *in, size_t len, int format) {
    char err[ERRLEN];
    if (chat_parse(c, in, len, format, err)) fail_msg("unexpected error: %s\ninput: %.200s", err, in);
}

static void parse_fails(const char *in, size_t len, int format, const char *want) {
    char err[ERRLEN] = "";
    Conversation c;
    if (chat_parse(&c, in, len, format, err) != -1) fail_msg("parsed without error: %.200s", in);
    if (!strstr(err, want)) fail_msg("error '%s' lacks '%s'\ninput: %.200s", err, want, in);
    assert_null(c.msgs); /* nothing left to free */
    assert_int_equal(c.n, 0);
    assert_null(strchr(err, '\n')); /* one line */
}

/* Message i has one part with exactly this text. */
static void msg_is(const Conversation *c, int i, int role, const char *text) {
    assert_true(i < c->n);
    assert_int_equal(c->msgs[i].role, role);
    assert_int_equal(c->msgs[i].n_parts, 1);
    const ChatPart *p = &c->msgs[i].parts[0];
    if (p->len != strlen(text) || memcmp(p->text, text, p->len) != 0)
        fail_msg("message %d: got '%.*s' want '%s'", i + 1, (int)p->len, p->text, text);
    assert_int_equal(p->text[p->len], 0);
}

#define OK(c, s, f) parse_ok(c, s, strlen(s), f)
#define FAILS(s, f, want) parse_fails(s, strlen(s), f, want)

/* ==== Plain text ==== */

static void test_plain_text(void **state) {
    (void)state;
    Conversation c;
    OK(&c, "How do I kill a process in Linux?\n", CHAT_TEXT);
    assert_int_equal(c.n, 1);
    msg_is(&c, 0, ROLE_USER, "How do I kill a process in Linux?\n");
    chat_free(&c);
    OK(&c, "\xEF\xBB\xBFline one\r\nline two\r\n\r\nlone\rCR\r\n", CHAT_TEXT); /* BOM skipped, CRLF -> LF */
    msg_is(&c, 0, ROLE_USER, "line one\nline two\n\nlone\rCR\n");
    chat_free(&c);
    OK(&c, "User: this is text, not a transcript", CHAT_TEXT); /* forced format wins */
    msg_is(&c, 0, ROLE_USER, "User: this is text, not a transcript");
    chat_free(&c);
    OK(&c, "[not json", CHAT_TEXT);
    msg_is(&c, 0, ROLE_USER, "[not json");
    chat_free(&c);
    parse_ok(&c, "a\0b", 3, CHAT_TEXT); /* NUL bytes are content; len is authoritative */
    assert_int_equal(c.msgs[0].parts[0].len, 3);
    chat_free(&c);
    FAILS("", CHAT_TEXT, "no text");
    FAILS(" \r\n\t\n", CHAT_TEXT, "no text");
    FAILS("\xEF\xBB\xBF", CHAT_AUTO, "no text");
}

/* ==== Transcripts ==== */

static void test_transcript(void **state) {
    (void)state;
    Conversation c;
    OK(&c, "\n\nUser: hello\nAgent:hi there\ncontinued\n\n  User: indented is text\nuser:  again\n\n", CHAT_AUTO);
    assert_int_equal(c.n, 3);
    msg_is(&c, 0, ROLE_USER, "hello");
    msg_is(&c, 1, ROLE_ASSISTANT, "hi there\ncontinued\n\n  User: indented is text");
    msg_is(&c, 2, ROLE_USER, "again\n"); /* the blank line; rendering strips it */
    chat_free(&c);
    OK(&c, "USER: a\r\nASSISTANT: b\r\n\r\nc\r\nUser:\r\n", CHAT_AUTO);
    assert_int_equal(c.n, 3);
    msg_is(&c, 0, ROLE_USER, "a");
    msg_is(&c, 1, ROLE_ASSISTANT, "b\n\nc");
    msg_is(&c, 2, ROLE_USER, ""); /* an explicit empty turn is allowed */
    chat_free(&c);
    OK(&c, "User: x: y\nAgent : not a prefix\nUsers: nor this", CHAT_TRANSCRIPT);
    assert_int_equal(c.n, 1);
    msg_is(&c, 0, ROLE_USER, "x: y\nAgent : not a prefix\nUsers: nor this");
    chat_free(&c);
    /* Sniffing: a first non-blank line without a prefix means plain text, even if one follows. */
    OK(&c, "Hello\nUser: hi\n", CHAT_AUTO);
    assert_int_equal(c.n, 1);
    msg_is(&c, 0, ROLE_USER, "Hello\nUser: hi\n");
    chat_free(&c);
    OK(&c, "  User: indented first line\n", CHAT_AUTO);
    msg_is(&c, 0, ROLE_USER, "  User: indented first line\n");
    chat_free(&c);
}

static void test_transcript_errors(void **state) {
    (void)state;
    FAILS("User: a\nUser: b\n", CHAT_AUTO, "line 2: a User turn where an Agent turn was expected");
    FAILS("Agent: a\n", CHAT_AUTO, "line 1: an Agent turn where a User turn was expected");
    FAILS("User: a\nAgent: b\n\nAssistant: c\n", CHAT_AUTO, "line 4: an Agent turn where a User turn");
    FAILS("\r\npreamble\r\nUser: a\r\n", CHAT_TRANSCRIPT, "line 2: text before the first 'User:' line");
    FAILS("", CHAT_TRANSCRIPT, "no text");
    /* One turn too many. */
    Buf b = { 0 };
    for (int i = 0; i <= CHAT_MAX_MESSAGES; i++) buf_put(&b, i % 2 ? "Agent: x\n" : "User: x\n", i % 2 ? 9 : 8);
    parse_fails((const char *)b.p, b.len, CHAT_AUTO, "line 4097: too many messages (limit 4096)");
    Conversation c;
    parse_ok(&c, (const char *)b.p, b.len - 9, CHAT_AUTO); /* exactly the limit is fine */
    assert_int_equal(c.n, CHAT_MAX_MESSAGES);
    chat_free(&c);
    buf_free(&b);
}

/* ==== JSON ==== */

static void test_json(void **state) {
    (void)state;
    Conversation c;
    OK(&c, "[{\"role\":\"user\",\"content\":\"  hi\\r\\n\"},{\"role\":\"assistant\",\"content\":\"\"}]", CHAT_AUTO);
    assert_int_equal(c.n, 2);
    msg_is(&c, 0, ROLE_USER, "  hi\r\n"); /* JSON strings are exact: no CRLF folding */
    msg_is(&c, 1, ROLE_ASSISTANT, "");
    chat_free(&c);
    OK(&c, "\xEF\xBB\xBF {\"messages\": [{\"role\": \"user\", \"name\": \"ignored\", \"content\": [{\"type\": \"text\", "
           "\"text\": \"one\"}, {\"type\": \"text\", \"text\": \"two\\u0000\"}]}, {\"role\": \"agent\", \"content\": "
           "[{\"text\": \"ok\", \"type\": \"text\"}]}], \"other\": 1}",
       CHAT_AUTO);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.n_parts, 3);
    assert_int_equal(c.msgs[0].n_parts, 2);
    assert_int_equal(c.msgs[0].parts[1].len, 4);
    assert_memory_equal(c.msgs[0].parts[1].text, "two\0", 4);
    msg_is(&c, 1, ROLE_ASSISTANT, "ok");
    chat_free(&c);
    OK(&c, "[{\"role\":\"user\",\"content\":\"\\u00e9\\ud83d\\ude00 <|eot_id|>\"}]", CHAT_JSON);
    msg_is(&c, 0, ROLE_USER, "\xC3\xA9\xF0\x9F\x98\x80 <|eot_id|>");
    chat_free(&c);
}

static void test_json_errors(void **state) {
    (void)state;
    static const struct { const char *in, *want; } cases[] = {
        { "[{\"role\":\"user\",\"content\":\"a\"},\n {\"role\": \"assistant\" \"content\": \"b\"}]", "line 2, column" },
        { "[{\"role\":\"user\",\"content\":\"a\"}", "line 1, column 31: unterminated array" },
        { "{\"messages\": [1,]}", "line 1, column 17" },
        { "[{\"role\":\"user\",\"content\":\"a\"}] x", "trailing characters" },
        { "[]", "empty conversation" },
        { "{\"messages\": []}", "empty conversation" },
        { "{\"msgs\": []}", "no \"messages\" member" },
        { "{\"messages\": {}}", "\"messages\" must be an array" },
        { "[\"hi\"]", "message 1: expected an object" },
        { "[{\"content\":\"a\"}]", "message 1: missing string \"role\"" },
        { "[{\"role\":1,\"content\":\"a\"}]", "message 1: missing string \"role\"" },
        { "[{\"role\":\"system\",\"content\":\"a\"}]", "message 1: role \"system\" is not supported" },
        { "[{\"role\":\"User\",\"content\":\"a\"}]", "message 1: role \"User\" is not supported" },
        { "[{\"role\":\"us\\ner\",\"content\":\"a\"}]", "role \"us?er\" is not supported" },
        { "[{\"role\":\"assistant\",\"content\":\"a\"}]", "message 1: role \"assistant\" where \"user\" was expected" },
        { "[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"}]",
          "message 2: role \"user\" where \"assistant\" was expected" },
        { "[{\"role\":\"user\"}]", "message 1: missing \"content\"" },
        { "[{\"role\":\"user\",\"content\":null}]", "message 1: \"content\" must be a string or a list" },
        { "[{\"role\":\"user\",\"content\":7}]", "message 1: \"content\" must be a string or a list" },
        { "[{\"role\":\"user\",\"content\":[]}]", "message 1: content has no text parts" },
        { "[{\"role\":\"user\",\"content\":[\"text\"]}]", "message 1, part 1: expected {\"type\": \"text\"" },
        { "[{\"role\":\"user\",\"content\":[{\"text\":\"a\"}]}]", "message 1, part 1: expected" },
        { "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"image\"}]}]",
          "message 1, part 2: image content is not supported" },
        { "[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]", "image content is not supported" },
        { "[{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]", "unsupported content type \"audio\"" },
        { "[{\"role\":\"user\",\"content\":[{\"type\":\"text\\u0000x\",\"text\":\"a\"}]}]",
          "unsupported content type \"text?x\"" },
        { "[{\"role\":\"user\\u0000\",\"content\":\"a\"}]", "role \"user?\" is not supported" },
        { "[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]", "a text part needs a string \"text\"" },
        { "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":3}]}]", "a text part needs a string \"text\"" },
        { "\"just a string\"", "expected a JSON array of messages" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) FAILS(cases[i].in, CHAT_JSON, cases[i].want);
    Conversation c; /* ...but sniffing only calls '[' and '{' JSON: a quoted line is text */
    OK(&c, "\"just a string\"", CHAT_AUTO);
    msg_is(&c, 0, ROLE_USER, "\"just a string\"");
    chat_free(&c);
    /* Sniffed JSON says why it was read as JSON. */
    FAILS("[1] is my favourite list", CHAT_AUTO, "read as JSON because the input starts with '['");
    FAILS("{curly}", CHAT_AUTO, "choose the text format for plain text");
    FAILS("   \n", CHAT_JSON, "line 2, column 1");
}

/* ==== Limits ==== */

static void test_limits(void **state) {
    (void)state;
    char err[ERRLEN];
    /* Input size: one byte over is refused before anything is parsed. */
    size_t big = (size_t)CHAT_MAX_BYTES + 1;
    char *p = malloc(big);
    assert_non_null(p);
    memset(p, 'a', big);
    char want[64];
    snprintf(want, sizeof want, "limit is %u bytes", (unsigned)CHAT_MAX_BYTES);
    parse_fails(p, big, CHAT_TEXT, want);
    Conversation c;
    parse_ok(&c, p, big - 1, CHAT_TEXT);
    assert_int_equal(c.bytes, CHAT_MAX_BYTES);
    assert_int_equal(chat_append(&c, ROLE_ASSISTANT, "x", 1, err), -1); /* total content bytes */
    assert_non_null(strstr(err, "exceeds the limit"));
    assert_int_equal(chat_append(&c, ROLE_ASSISTANT, "", 0, err), 0);
    chat_free(&c);
    free(p);

    /* JSON message count is checked before any message is built. */
    Buf b = { 0 };
    buf_put(&b, "[", 1);
    for (int i = 0; i <= CHAT_MAX_MESSAGES; i++) {
        if (i) buf_put(&b, ",", 1);
        const char *m = i % 2 ? "{\"role\":\"assistant\",\"content\":\"x\"}" : "{\"role\":\"user\",\"content\":\"x\"}";
        buf_put(&b, m, strlen(m));
    }
    buf_put(&b, "]", 1);
    parse_fails((const char *)b.p, b.len, CHAT_AUTO, "too many messages: 4097 (limit 4096)");
    buf_free(&b);

    /* Text parts over the whole conversation. */
    chat_init(&c);
    assert_int_equal(chat_append(&c, ROLE_USER, "x", 1, err), 0);
    for (int i = 1; i < CHAT_MAX_PARTS; i++) assert_int_equal(chat_append_part(&c, "y", 1, err), 0);
    assert_int_equal(chat_append_part(&c, "z", 1, err), -1);
    assert_non_null(strstr(err, "too many text parts"));
    assert_int_equal(c.msgs[0].n_parts, CHAT_MAX_PARTS);
    assert_int_equal(chat_append(&c, ROLE_ASSISTANT, "z", 1, err), -1);
    assert_int_equal(c.n, 1);
    chat_free(&c);

    /* Messages, through the builder. */
    chat_init(&c);
    for (int i = 0; i < CHAT_MAX_MESSAGES; i++) assert_int_equal(chat_append(&c, i % 2 ? ROLE_ASSISTANT : ROLE_USER, "", 0, err), 0);
    assert_int_equal(chat_append(&c, ROLE_USER, "", 0, err), -1);
    assert_non_null(strstr(err, "too many messages"));
    chat_free(&c);

    chat_init(&c);
    assert_int_equal(chat_append_part(&c, "x", 1, err), -1); /* no message yet */
    assert_int_equal(chat_append(&c, 3, "x", 1, err), -1);   /* not a role */
    chat_free(&c);
}

/* ==== Files, sniffing by name, format names ==== */

static void test_files(void **state) {
    (void)state;
    char err[ERRLEN];
    Conversation c;
    assert_int_equal(chat_read_file(&c, "tests/data/chat_plain.txt", CHAT_AUTO, err), 0);
    assert_int_equal(c.n, 1);
    chat_free(&c);
    assert_int_equal(chat_read_file(&c, "tests/data/chat_transcript.txt", CHAT_AUTO, err), 0);
    assert_int_equal(c.n, 3);
    msg_is(&c, 1, ROLE_ASSISTANT,
           "Sure! To kill a process in Linux, you can use the kill command\nfollowed by the process ID (PID) of the "
           "process you want to terminate.\n\n    kill 1234\n");
    chat_free(&c);
    assert_int_equal(chat_read_file(&c, "tests/data/chat_messages.json", CHAT_AUTO, err), 0);
    assert_int_equal(c.n, 2);
    chat_free(&c);

    /* A ".json" name forces JSON even when the content would sniff as text. */
    char path[512];
    snprintf(path, sizeof path, "%s/chat.JSON", test_tmpdir());
    FILE *fp = fopen(path, "wb");
    fputs("  hello", fp);
    fclose(fp);
    assert_int_equal(chat_read_file(&c, path, CHAT_AUTO, err), -1);
    assert_non_null(strstr(err, "chat.JSON: line 1, column 3"));
    assert_int_equal(chat_read_file(&c, path, CHAT_TEXT, err), 0);
    msg_is(&c, 0, ROLE_USER, "  hello");
    chat_free(&c);
    unlink(path);
    assert_int_equal(chat_read_file(&c, "tests/data/no-such-file.txt", CHAT_AUTO, err), -1);
    assert_non_null(strstr(err, "no-such-file.txt"));

    static const struct { const char *name; int f; } names[] = {
        { "auto", CHAT_AUTO }, { "text", CHAT_TEXT }, { "transcript", CHAT_TRANSCRIPT }, { "json", CHAT_JSON },
    };
    for (int i = 0; i < 4; i++) {
        int f = -1;
        assert_int_equal(chat_parse_format(names[i].name, &f, err), 0);
        assert_int_equal(f, names[i].f);
    }
    int f;
    assert_int_equal(chat_parse_format("JSON", &f, err), -1);
    assert_int_equal(chat_parse_format("", &f, err), -1);
    assert_non_null(strstr(err, "expected auto, text, transcript or json"));
    assert_int_equal(chat_parse(&c, "x", 1, 9, err), -1);
    assert_string_equal(chat_role_name(ROLE_USER), "user");
    assert_string_equal(chat_role_name(ROLE_ASSISTANT), "assistant");
}

/* Arbitrary bytes in every format: an error or a conversation, never a crash or a leak (ASan). */
static void test_fuzz(void **state) {
    (void)state;
    static const char *alphabet[] = { "[", "]", "{", "}", "\"role\"", "\"content\"", "\"user\"", "\"assistant\"", ":",
                                      ",", "\"", "\\", "User:", "Agent:", "\n", "\r\n", " ", "x", "\xC2\x85",
                                      "\"type\"", "\"text\"", "\xEF\xBB\xBF", "\0" };
    uint32_t seed = 99;
    char err[ERRLEN];
    for (int t = 0; t < 4000; t++) {
        Buf b = { 0 };
        int n = (int)(seed % 40);
        for (int i = 0; i < n; i++) {
            seed = seed * 1664525u + 1013904223u;
            const char *a = alphabet[(seed >> 16) % (sizeof alphabet / sizeof alphabet[0])];
            buf_put(&b, a, a[0] ? strlen(a) : 1);
        }
        seed = seed * 1664525u + 1013904223u;
        Conversation c;
        if (chat_parse(&c, b.p ? (const char *)b.p : "", b.len, (int)(seed >> 8) % 4, err) == 0) {
            assert_true(c.n >= 1);
            for (int i = 0; i < c.n; i++) assert_int_equal(c.msgs[i].role, i % 2 ? ROLE_ASSISTANT : ROLE_USER);
            chat_free(&c);
        } else {
            assert_null(strchr(err, '\n'));
        }
        buf_free(&b);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_text),
        cmocka_unit_test(test_transcript),
        cmocka_unit_test(test_transcript_errors),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
