/* http.h: a strict, bounds-checked HTTP/1.1 request parser (RFC 9112) for the server.
 *
 * http_parse is a pure function over the bytes received so far: it never allocates, never
 * writes outside the HttpRequest, and every pointer it returns points into the caller's buffer.
 * Called again with more bytes it re-parses from the start (heads are small; the body is not
 * scanned), so the caller only keeps one buffer per connection.
 *
 * Accepted: "METHOD SP origin-form SP HTTP/1.x CRLF", header fields "name: value CRLF" (name a
 * token, value visible ASCII, obs-text, SP and HTAB), an empty line, then exactly Content-Length
 * body bytes. Refused with the status a server owes the client:
 *   400 malformed request line or header, bare LF, obs-fold, a space before the colon, a bad or
 *       repeated Content-Length or Host, no Host in HTTP/1.1, Transfer-Encoding with Content-Length
 *   411 Transfer-Encoding (chunked bodies) without Content-Length: a body must have a length
 *   413 Content-Length above max_body
 *   431 a head over HTTP_MAX_HEAD bytes, or more than HTTP_MAX_HEADERS fields
 *   505 an HTTP version other than 1.0 and 1.1
 * Non-goals: absolute-form and asterisk-form targets, trailers, chunked request bodies.
 */
#ifndef GUARD_HTTP_H
#define GUARD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEAD (16u << 10)  /* request line + fields + the empty line */
#define HTTP_MAX_HEADERS 64
#define HTTP_MAX_METHOD 15

enum { HTTP_DONE = 0, HTTP_MORE = 1 }; /* other results are HTTP status codes (>= 400) */

typedef struct {
    const char *name, *value; /* into the buffer; value without surrounding whitespace */
    size_t name_len, value_len;
} HttpHeader;

typedef struct {
    char method[HTTP_MAX_METHOD + 1]; /* NUL-terminated copy, case as sent (methods are case-sensitive) */
    const char *path;                 /* the target up to '?' (starts with '/') */
    size_t path_len;
    const char *query;                /* after '?', or NULL */
    size_t query_len;
    int minor;                        /* HTTP/1.minor: 0 or 1 */
    HttpHeader headers[HTTP_MAX_HEADERS];
    int n_headers;
    uint64_t content_length;          /* 0 without the header */
    int keep_alive;                   /* 1.1 unless "Connection: close"; 1.0 only with "keep-alive" */
    int expect_continue;              /* "Expect: 100-continue" */
    uint64_t head_len;                /* bytes of the head (0 until it is complete) */
    const char *body;                 /* [content_length] bytes (HTTP_DONE only) */
    const char *why;                  /* static text: the problem, when refused */
} HttpRequest;

/* Parse buf[0..len). Returns HTTP_DONE (the request occupies head_len + content_length bytes;
 * anything after it is the next pipelined request), HTTP_MORE (incomplete so far; head_len is
 * set once the head is complete, so the caller may send "100 Continue"), or a status >= 400
 * with r->why set. */
int http_parse(const char *buf, size_t len, uint64_t max_body, HttpRequest *r);

/* The header's value (case-insensitive name), or NULL. */
const HttpHeader *http_header(const HttpRequest *r, const char *name);

/* Reason phrase for a status code ("Not Found"); "Unknown" for codes not used here. */
const char *http_reason(int status);

#endif
