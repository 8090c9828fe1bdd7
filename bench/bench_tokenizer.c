/* bench/bench_tokenizer.c: tokenizer throughput. Encodes ~1 MB and ~4 MB of mixed-language text
 * (the golden test strings repeated) with Llama 3 and Llama 2, to show the rate does not fall
 * with length, then 1 MB pathological inputs (one letter, spaces, digits: each a single huge
 * pre-token or BPE word). Also times loading tokenizer.json and the guard.bin section.
 * Reads $GUARD_SHARED (default ../shared). Prints a table; exits non-zero on any error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "import/build.h"
#include "tokenizer.h"

static const char *shared(void) {
    const char *s = getenv("GUARD_SHARED");
    return s && *s ? s : "../shared";
}

static void die(const char *what, const char *err) {
    fprintf(stderr, "bench_tokenizer: %s: %s\n", what, err);
    exit(1);
}

/* Every "text" of a golden JSONL file, joined by newlines. */
static void golden_corpus(Buf *out, const char *file) {
    char path[1024], err[ERRLEN], *src;
    uint64_t n;
    snprintf(path, sizeof path, "%s/tokenizer/%s", shared(), file);
    if (read_text_file(path, 1 << 26, &src, &n, err)) die("reading the corpus", err);
    for (char *p = src, *end = src + n; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        Json j = { 0 };
        if (len && json_parse(&j, p, len, err) == 0) {
            const JsonNode *t = json_get(&j, json_root(&j), "text");
            if (t && t->type == JSON_STRING) {
                buf_put(out, t->str, t->len);
                buf_put(out, "\n", 1);
            }
        }
        json_free(&j);
        p += len + 1;
    }
    free(src);
}

/* Best of `reps` runs: seconds and token count. */
static double time_encode(const Tokenizer *t, const uint8_t *s, size_t n, int reps, size_t *tokens) {
    double best = 1e30;
    char err[ERRLEN];
    for (int r = 0; r < reps; r++) {
        int32_t *ids = NULL;
        size_t nid = 0, cap = 0;
        double t0 = now_sec();
        if (tok_encode(t, (const char *)s, n, &ids, &nid, &cap, err)) die("tok_encode", err);
        double dt = now_sec() - t0;
        if (dt < best) best = dt;
        *tokens = nid;
        free(ids);
    }
    return best;
}

static void row(const char *model, const char *input, const uint8_t *s, size_t n, const Tokenizer *t, int reps) {
    size_t tokens = 0;
    double dt = time_encode(t, s, n, reps, &tokens);
    printf("| %-7s | %-26s | %9.2f | %9zu | %8.3f | %11.0f | %7.2f |\n", model, input, n / 1048576.0, tokens, dt,
           tokens / dt, n / 1048576.0 / dt);
}

int main(void) {
    char err[ERRLEN], tj[1024], tc[1024];
    const char *dirs[2] = { "llama31", "llama2" }, *names[2] = { "llama3", "llama2" };
    Tokenizer *tok[2];
    printf("| model   | load                            |   seconds |\n"
           "|---------|---------------------------------|-----------|\n");
    for (int m = 0; m < 2; m++) {
        snprintf(tj, sizeof tj, "%s/tokenizer/%s/tokenizer.json", shared(), dirs[m]);
        snprintf(tc, sizeof tc, "%s/tokenizer/%s/tokenizer_config.json", shared(), dirs[m]);
        double t0 = now_sec();
        if (tok_from_hf(&tok[m], tj, tc, err)) die("tok_from_hf", err);
        double t1 = now_sec();
        uint8_t *blob;
        uint64_t blen;
        if (tok_serialize(tok[m], &blob, &blen, err)) die("tok_serialize", err);
        Tokenizer *u;
        double t2 = now_sec();
        if (tok_load(&u, blob, blen, err)) die("tok_load", err);
        double t3 = now_sec();
        char what[64];
        snprintf(what, sizeof what, "tok_from_hf, %u tokens", tok_vocab_size(tok[m]));
        printf("| %-7s | %-31s | %9.3f |\n", names[m], what, t1 - t0);
        snprintf(what, sizeof what, "tok_load, %.1f MiB section", blen / 1048576.0);
        printf("| %-7s | %-31s | %9.3f |\n", names[m], what, t3 - t2);
        tok_free(u);
        free(blob);
    }

    Buf corpus = { 0 };
    golden_corpus(&corpus, "llama3_golden.jsonl");
    if (corpus.oom || corpus.len == 0) die("corpus", "empty");
    size_t n1 = 1 << 20, n4 = 4 << 20;
    uint8_t *text = malloc(n4);
    if (!text) die("malloc", "out of memory");
    for (size_t i = 0; i < n4; i += corpus.len) memcpy(text + i, corpus.p, i + corpus.len <= n4 ? corpus.len : n4 - i);

    printf("\n| model   | input                      |       MiB |    tokens |  seconds |    tokens/s |   MiB/s |\n"
           "|---------|----------------------------|-----------|-----------|----------|-------------|---------|\n");
    for (int m = 0; m < 2; m++) {
        row(names[m], "mixed-language text", text, n1, tok[m], 5);
        row(names[m], "mixed-language text x4", text, n4, tok[m], 3);
    }
    struct {
        const char *name;
        char c;
    } path[] = { { "1 MiB of 'a'", 'a' }, { "1 MiB of spaces", ' ' }, { "1 MiB of digits", '7' } };
    uint8_t *p = malloc(n1);
    if (!p) die("malloc", "out of memory");
    for (int m = 0; m < 2; m++)
        for (size_t k = 0; k < sizeof path / sizeof path[0]; k++) {
            memset(p, path[k].c, n1);
            row(names[m], path[k].name, p, n1, tok[m], 3);
        }
    printf("\nCorpus: the %zu-byte concatenation of llama3_golden.jsonl texts, repeated. Best of 3-5 runs, one thread.\n",
           (size_t)corpus.len);
    free(p);
    free(text);
    buf_free(&corpus);
    tok_free(tok[0]);
    tok_free(tok[1]);
    return 0;
}
