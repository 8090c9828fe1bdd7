/* http.c: the HTTP/1.1 request parser (contract and refusals in http.h).
 *
 * Mirrors RFC 9112 sections 2-3 (message format, request line), 5 (field syntax, no obs-fold)
 * and 6.3 (message body length: Content-Length only). The head is walked line by line; a line is
 * complete only at CRLF, and a bare CR or LF anywhere in the head is a 400, so what we accept is
 * exactly what a strict proxy in front of us would forward (no request smuggling by
 * disagreement about where a request ends).
 */
#include "http.h"

#include <string.h>

/* RFC 9110 5.6.2 token characters. */
static int is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Field value bytes: VCHAR, SP, HTAB, obs-text. */
static int is_vchar(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7F); }

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int ieq(const char *a, size_t n, const char *b) {
    if (strlen(b) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
    return 1;
}

static int refuse(HttpRequest *r, int status, const char *why) {
    r->why = why;
    return status;
}

/* The request line s[0..n) (without CRLF). */
static int parse_request_line(const char *s, size_t n, HttpRequest *r) {
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i])) i++;
    if (i == 0 || i >= n || s[i] != ' ') return refuse(r, 400, "malformed request line");
    if (i > HTTP_MAX_METHOD) return refuse(r, 400, "method too long");
    memcpy(r->method, s, i);
    r->method[i] = 0;
    size_t t = ++i;
    while (i < n && s[i] > 0x20 && s[i] < 0x7F) i++;
    if (i == t || s[t] != '/' || i >= n || s[i] != ' ') return refuse(r, 400, "request target must be a path starting with '/'");
    const char *q = memchr(s + t, '?', i - t);
    r->path = s + t;
    r->path_len = q ? (size_t)(q - (s + t)) : i - t;
    r->query = q ? q + 1 : NULL;
    r->query_len = q ? (size_t)(s + i - (q + 1)) : 0;
    i++;
    const char *v = s + i;
    if (n - i != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
        return refuse(r, 400, "malformed HTTP version");
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) return refuse(r, 505, "only HTTP/1.0 and HTTP/1.1 are supported");
    r->minor = v[7] - '0';
    return 0;
}

/* "Connection: a, b" tokens. */
static void parse_connection(const char *v, size_t n, HttpRequest *r) {
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t b = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t') i++;
        if (ieq(v + b, i - b, "close")) r->keep_alive = 0;
        else if (ieq(v + b, i - b, "keep-alive") && r->minor == 0) r->keep_alive = 1;
    }
}

/* One field line s[0..n). */
static int parse_field(const char *s, size_t n, HttpRequest *r, int *have_len, int *have_te, int *have_host) {
    size_t i = 0;
    if (n && (s[0] == ' ' || s[0] == '\t')) return refuse(r, 400, "obsolete line folding");
    while (i < n && is_tchar((unsigned char)s[i])) i++;
    if (i == 0 || i >= n || s[i] != ':') return refuse(r, 400, "malformed header field");
    if (r->n_headers == HTTP_MAX_HEADERS) return refuse(r, 431, "too many header fields");
    HttpHeader *h = &r->headers[r->n_headers++];
    h->name = s;
    h->name_len = i;
    size_t b = i + 1, e = n;
    while (b < e && (s[b] == ' ' || s[b] == '\t')) b++;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) e--;
    for (size_t k = b; k < e; k++)
        if (!is_vchar((unsigned char)s[k])) return refuse(r, 400, "control character in a header value");
    h->value = s + b;
    h->value_len = e - b;
    if (ieq(h->name, h->name_len, "content-length")) {
        if (*have_len) return refuse(r, 400, "repeated Content-Length");
        if (h->value_len == 0) return refuse(r, 400, "empty Content-Length");
        uint64_t x = 0;
        for (size_t k = 0; k < h->value_len; k++) {
            unsigned char c = (unsigned char)h->value[k];
            if (c < '0' || c > '9') return refuse(r, 400, "Content-Length is not a number");
            if (x > (UINT64_MAX - 9) / 10) return refuse(r, 413, "body too large");
            x = x * 10 + (c - '0');
        }
        r->content_length = x;
        *have_len = 1;
    } else if (ieq(h->name, h->name_len, "transfer-encoding")) {
        *have_te = 1;
    } else if (ieq(h->name, h->name_len, "host")) {
        if (*have_host) return refuse(r, 400, "repeated Host");
        *have_host = 1;
    } else if (ieq(h->name, h->name_len, "connection")) {
        parse_connection(h->value, h->value_len, r);
    } else if (ieq(h->name, h->name_len, "expect")) {
        r->expect_continue = ieq(h->value, h->value_len, "100-continue");
    }
    return 0;
}

int http_parse(const char *buf, size_t len, uint64_t max_body, HttpRequest *r) {
    memset(r, 0, sizeof *r);
    size_t pos = 0;
    /* RFC 9112 2.2: a server SHOULD ignore empty lines received before the request line. */
    while (pos + 1 < len && buf[pos] == '\r' && buf[pos + 1] == '\n' && pos < 8) pos += 2;
    size_t scan = len < (size_t)HTTP_MAX_HEAD ? len : (size_t)HTTP_MAX_HEAD;
    int line = 0, have_len = 0, have_te = 0, have_host = 0;
    for (;;) {
        size_t b = pos;
        while (pos < scan && buf[pos] != '\r' && buf[pos] != '\n') pos++;
        if (pos < scan && buf[pos] == '\n') return refuse(r, 400, "bare LF in the head");
        if (pos + 1 >= scan) {
            /* the line (or its CRLF) is not complete within what we have or may have */
            if (len >= (size_t)HTTP_MAX_HEAD) return refuse(r, 431, "request head too large");
            return HTTP_MORE;
        }
        if (buf[pos + 1] != '\n') return refuse(r, 400, "bare CR in the head");
        const char *s = buf + b;
        size_t n = pos - b;
        pos += 2;
        if (line == 0) {
            if (n == 0) return refuse(r, 400, "empty request line");
            int rc = parse_request_line(s, n, r);
            if (rc) return rc;
            r->keep_alive = r->minor == 1;
        } else if (n == 0) {
            break; /* end of the head */
        } else {
            int rc = parse_field(s, n, r, &have_len, &have_te, &have_host);
            if (rc) return rc;
        }
        line++;
    }
    r->head_len = pos;
    if (have_te && have_len) return refuse(r, 400, "both Transfer-Encoding and Content-Length");
    if (have_te) return refuse(r, 411, "chunked bodies are not accepted: send Content-Length");
    if (r->minor == 1 && !have_host) return refuse(r, 400, "HTTP/1.1 request without Host");
    if (r->content_length > max_body) return refuse(r, 413, "body too large");
    if ((uint64_t)(len - pos) < r->content_length) return HTTP_MORE;
    r->body = buf + pos;
    return HTTP_DONE;
}

const HttpHeader *http_header(const HttpRequest *r, const char *name) {
    for (int i = 0; i < r->n_headers; i++)
        if (ieq(r->headers[i].name, r->headers[i].name_len, name)) return &r->headers[i];
    return NULL;
}

const char *http_reason(int status) {
    static const struct { int code; const char *text; } t[] = {
        { 100, "Continue" }, { 200, "OK" }, { 400, "Bad Request" }, { 401, "Unauthorized" }, { 404, "Not Found" },
        { 405, "Method Not Allowed" }, { 408, "Request Timeout" }, { 411, "Length Required" }, { 413, "Content Too Large" },
        { 431, "Request Header Fields Too Large" }, { 500, "Internal Server Error" }, { 503, "Service Unavailable" },
        { 505, "HTTP Version Not Supported" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (t[i].code == status) return t[i].text;
    return "Unknown";
}
