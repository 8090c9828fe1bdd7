/* chat.h: the conversation to classify, and the three input formats it is read from.
 *
 * A Conversation is what Hugging Face's apply_chat_template receives as `messages`: turns that
 * alternate user / assistant starting with the user. template.c renders it; this file only reads.
 *
 * Input formats (chat_parse; the default is text, CHAT_AUTO picks one only when asked for; see
 * chat.c for the exact rules):
 *   text        the whole input is one user message.
 *   transcript  lines starting `User:` / `Agent:` / `Assistant:` (any case) open a turn; other
 *               lines continue the previous turn (joined with "\n").
 *   json        [{"role": ..., "content": ...}, ...] or {"messages": [...]}; content is a string
 *               or a list of {"type": "text", "text": ...} parts. Roles: "user", "assistant",
 *               and "agent" as a synonym of "assistant".
 * A message keeps its text parts separately because the Llama Guard 3 1B template renders each
 * part as its own `Role: part.strip()` turn line (template.c mirrors that for every version).
 *
 * Errors: 0 / -1 with a one-line message in err[ERRLEN] naming the line (text formats), the JSON
 * line and column (syntax) or the message index (structure). Nothing here prints or exits.
 */
#ifndef GUARD_CHAT_H
#define GUARD_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "json.h"

/* Limits that keep memory proportional to a bounded input whatever the input is.
 * CHAT_MAX_BYTES is 32 bytes per token of the largest Llama Guard context (131072 tokens), where
 * real text averages 3-5 bytes per token (about 12 for emoji written as JSON escapes), so any
 * conversation that can fit is accepted. It is not larger because hostile text costs up to ~60
 * bytes of memory per input byte to tokenize before the context limit can reject it (measured:
 * 16 MiB of invalid UTF-8 took 940 MB and 20 s with the Llama 3 tokenizer; 4 MiB takes 257 MB, 3 s). */
#define CHAT_MAX_BYTES (4u << 20) /* input size, and total content bytes of a Conversation */
#define CHAT_MAX_MESSAGES 4096
#define CHAT_MAX_PARTS 65536       /* text parts over the whole conversation */

enum { ROLE_USER = 1, ROLE_ASSISTANT = 2 };
enum { CHAT_AUTO = 0, CHAT_TEXT = 1, CHAT_TRANSCRIPT = 2, CHAT_JSON = 3, CHAT_FORMAT_MASK = 0xFF };
/* A flag or'ed into the format: leading "system"/"developer" JSON messages are left out (the
 * application's instruction, not judged) instead of being an error. */
enum { CHAT_DROP_SYSTEM = 0x100 };

typedef struct {
    char *text; /* [len] bytes, owned, NUL-terminated (may contain NULs: len is authoritative) */
    size_t len;
} ChatPart;

typedef struct {
    int role;        /* ROLE_USER / ROLE_ASSISTANT */
    ChatPart *parts; /* [n_parts], owned; n_parts >= 1 */
    int n_parts;
} Message;

typedef struct {
    Message *msgs;   /* [n], owned */
    int n, cap;
    int n_parts;     /* over all messages (CHAT_MAX_PARTS) */
    uint64_t bytes;  /* content bytes over all parts (CHAT_MAX_BYTES) */
} Conversation;

void chat_init(Conversation *c);
void chat_free(Conversation *c);

/* Append a message with one text part (copied). Enforces the limits above; does not check
 * alternation (template_render and the parsers do). */
int chat_append(Conversation *c, int role, const char *text, size_t len, char *err);
/* Append another text part (copied) to the last message. */
int chat_append_part(Conversation *c, const char *text, size_t len, char *err);

/* Parse data[0..len) in the given CHAT_* format into c (initialised here; freed on error). */
int chat_parse(Conversation *c, const char *data, size_t len, int format, char *err);
/* Read a file ("-" = stdin, at most CHAT_MAX_BYTES) and parse it; err is prefixed with the path. */
int chat_read_file(Conversation *c, const char *path, int format, char *err);
/* The messages of a parsed JSON document: node is the array of messages or an object holding
 * "messages" (e.g. one line of a batch file). c is initialised here; freed on error. */
int chat_from_json(Conversation *c, const Json *j, const JsonNode *node, char *err);

/* chat_from_json with flags (CHAT_DROP_SYSTEM). */
int chat_from_json_flags(Conversation *c, const Json *j, const JsonNode *node, int flags, char *err);
/* The format when none is chosen: CHAT_JSON for a file named *.json, else CHAT_TEXT (one user
 * message). Message text never selects a format. */
int chat_default_format(const char *path);
/* "auto" | "text" | "transcript" | "json" -> CHAT_*. */
int chat_parse_format(const char *name, int *format, char *err);
const char *chat_role_name(int role); /* "user" / "assistant" */

#endif
