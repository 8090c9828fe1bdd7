/* tests/fuzz/fuzz_http.c: http_parse over arbitrary bytes (http.h), with a body limit taken from
 * the first byte (0..255 KiB, so 413 is reachable), the rest being what a client sent.
 * Invariants: a refusal is one of the statuses http.h lists, with a reason; an accepted request
 * lies inside the buffer (head_len + content_length <= size), its method is a token, its path
 * starts with '/', every header points inside the head; every shorter prefix of an accepted
 * request is HTTP_MORE (the server may parse as bytes arrive) and a refused input is refused
 * again with the same status when more bytes follow it. */
#include "fuzz.h"
#include "http.h"

static int http_status_known(int rc) {
    return rc == 400 || rc == 411 || rc == 413 || rc == 431 || rc == 505;
}

static int http_one(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    uint64_t max_body = (uint64_t)data[0] << 10;
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    HttpRequest r;
    int rc = http_parse(buf, len, max_body, &r);
    if (rc == HTTP_MORE) return 0;
    if (rc != HTTP_DONE) {
        FUZZ_CHECK(http_status_known(rc), "unexpected status %d", rc);
        FUZZ_CHECK(r.why && *r.why, "refusal without a reason");
        /* more bytes after a refused head do not make it acceptable (body-size refusals stand too) */
        char *more = malloc(len + 4);
        FUZZ_CHECK(more != NULL, "oom");
        memcpy(more, buf, len);
        memcpy(more + len, "\r\n\r\n", 4);
        HttpRequest r2;
        int rc2 = http_parse(more, len + 4, max_body, &r2);
        free(more);
        FUZZ_CHECK(rc2 == rc, "refusal %d became %d with more bytes", rc, rc2);
        return 0;
    }
    FUZZ_CHECK(r.head_len > 0 && r.head_len <= len && r.head_len <= HTTP_MAX_HEAD, "head_len %llu", (unsigned long long)r.head_len);
    FUZZ_CHECK(r.content_length <= len - r.head_len && r.content_length <= max_body, "body outside the buffer");
    FUZZ_CHECK(r.body == buf + r.head_len, "body pointer");
    size_t ml = strlen(r.method);
    FUZZ_CHECK(ml > 0 && ml <= HTTP_MAX_METHOD, "method length %zu", ml);
    FUZZ_CHECK(r.path >= buf && r.path + r.path_len <= buf + r.head_len && r.path_len >= 1 && r.path[0] == '/', "path");
    FUZZ_CHECK(!r.query || (r.query >= buf && r.query + r.query_len <= buf + r.head_len), "query");
    FUZZ_CHECK(r.minor == 0 || r.minor == 1, "minor %d", r.minor);
    FUZZ_CHECK(r.n_headers >= 0 && r.n_headers <= HTTP_MAX_HEADERS, "n_headers");
    for (int i = 0; i < r.n_headers; i++) {
        const HttpHeader *h = &r.headers[i];
        FUZZ_CHECK(h->name >= buf && h->name + h->name_len <= buf + r.head_len && h->name_len > 0, "header name");
        FUZZ_CHECK(h->value >= buf && h->value + h->value_len <= buf + r.head_len, "header value");
        FUZZ_CHECK(!memchr(h->value, '\r', h->value_len) && !memchr(h->value, '\n', h->value_len), "CR/LF inside a value");
    }
    /* prefixes: a few cut points, each must ask for more */
    size_t total = (size_t)(r.head_len + r.content_length);
    for (int k = 1; k <= 8; k++) {
        size_t cut = total * (size_t)k / 9;
        HttpRequest p;
        int prc = http_parse(buf, cut, max_body, &p);
        FUZZ_CHECK(prc == HTTP_MORE, "prefix of %zu/%zu bytes gave %d", cut, total, prc);
    }
    return 1;
}

FUZZ_TARGET(NULL, http_one)
