/* test_http.c: the HTTP/1.1 request parser (http.h) against hand-written requests: what curl and
 * Node's fetch send, pipelining, byte-at-a-time arrival, and every refusal with its status. */
#include "testutil.h"

#include "http.h"
#include "util.h"

static int parse(const char *s, uint64_t max_body, HttpRequest *r) { return http_parse(s, strlen(s), max_body, r); }

static void test_curl_post(void **st) {
    (void)st;
    const char *req = "POST /v1/moderations?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
                      "Content-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"input\":\"hello\"}";
    HttpRequest r;
    assert_int_equal(parse(req, 1 << 20, &r), HTTP_DONE);
    assert_string_equal(r.method, "POST");
    assert_int_equal(r.path_len, strlen("/v1/moderations"));
    assert_memory_equal(r.path, "/v1/moderations", r.path_len);
    assert_int_equal(r.query_len, 3);
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.keep_alive, 1);
    assert_int_equal(r.content_length, 17);
    assert_memory_equal(r.body, "{\"input\":\"hello\"}", 17);
    assert_int_equal(r.head_len + r.content_length, strlen(req));
    const HttpHeader *h = http_header(&r, "content-TYPE");
    assert_non_null(h);
    assert_int_equal(h->value_len, strlen("application/json"));
    assert_null(http_header(&r, "authorization"));
    /* every shorter prefix asks for more; the head is known complete once its empty line is in */
    for (size_t k = 0; k < strlen(req); k++) {
        HttpRequest p;
        assert_int_equal(http_parse(req, k, 1 << 20, &p), HTTP_MORE);
        assert_true(p.head_len == 0 || k >= r.head_len);
    }
}

static void test_keep_alive_rules(void **st) {
    (void)st;
    HttpRequest r;
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n", 0, &r), HTTP_DONE);
    assert_int_equal(r.keep_alive, 0);
    assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n", 0, &r), HTTP_DONE);
    assert_int_equal(r.keep_alive, 0);
    assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, &r), HTTP_DONE);
    assert_int_equal(r.keep_alive, 1);
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", 10, &r), HTTP_MORE);
    assert_int_equal(r.expect_continue, 1);
    assert_true(r.head_len > 0);
    /* pipelined: the first request ends where the second starts */
    const char *two = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_int_equal(parse(two, 0, &r), HTTP_DONE);
    assert_int_equal(r.head_len, strlen(two) / 2);
    assert_int_equal(parse(two + r.head_len, 0, &r), HTTP_DONE);
    assert_memory_equal(r.path, "/b", 2);
}

static void test_refusals(void **st) {
    (void)st;
    static const struct { const char *req; int status; } cases[] = {
        { "GET / HTTP/1.1\nHost: h\n\n", 400 },
        { "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400 },
        { "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
        { "GET http://x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
        { "GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400 },
        { "GET / HTTX/1.1\r\nHost: h\r\n\r\n", 400 },
        { "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505 },
        { "GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505 },
        { "GET / HTTP/1.1\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01" "b\r\n\r\n", 400 },
        { "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", 400 },
        { "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400 },
        { "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400 },
        { "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\nx", 400 },
        { "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", 411 },
        { "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n", 413 },
        { "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 413 },
        { "GETTINGVERYLONGMETHOD / HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        HttpRequest r;
        int rc = parse(cases[i].req, 100, &r);
        if (rc != cases[i].status) fail_msg("case %zu: status %d, want %d", i, rc, cases[i].status);
        assert_non_null(r.why);
    }
}

static void test_limits(void **st) {
    (void)st;
    HttpRequest r;
    /* 431: too many fields, and a head that does not end within HTTP_MAX_HEAD bytes */
    Buf b = { 0 };
    buf_put(&b, "GET / HTTP/1.1\r\nHost: h\r\n", 25);
    for (int i = 0; i < HTTP_MAX_HEADERS; i++) buf_put(&b, "X-Y: z\r\n", 8);
    buf_put(&b, "\r\n", 2);
    assert_int_equal(http_parse((const char *)b.p, (size_t)b.len, 0, &r), 431);
    buf_free(&b);
    size_t n = HTTP_MAX_HEAD + 10;
    char *big = malloc(n);
    assert_non_null(big);
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', n - 5);
    assert_int_equal(http_parse(big, n, 0, &r), 431);
    assert_int_equal(http_parse(big, HTTP_MAX_HEAD - 1, 0, &r), HTTP_MORE);
    free(big);
    /* exactly the maximum number of fields is fine */
    Buf ok = { 0 };
    buf_put(&ok, "GET / HTTP/1.1\r\n", 16);
    buf_put(&ok, "Host: h\r\n", 9);
    for (int i = 1; i < HTTP_MAX_HEADERS; i++) buf_put(&ok, "X-Y: z\r\n", 8);
    buf_put(&ok, "\r\n", 2);
    assert_int_equal(http_parse((const char *)ok.p, (size_t)ok.len, 0, &r), HTTP_DONE);
    assert_int_equal(r.n_headers, HTTP_MAX_HEADERS);
    buf_free(&ok);
    /* a body up to the limit is accepted; bytes after it belong to the next request */
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET", 3, &r), HTTP_DONE);
    assert_memory_equal(r.body, "abc", 3);
    assert_string_equal(http_reason(431), "Request Header Fields Too Large");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curl_post),
        cmocka_unit_test(test_keep_alive_rules),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
