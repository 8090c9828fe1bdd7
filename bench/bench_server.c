/* bench/bench_server.c: ./run --serve at a real shape (random weights; speed does not depend on
 * the values). usage: bench_server MODEL.bin [-t THREADS]
 *
 * Prints two tables (make bench runs it on the Llama Guard 3 1B q8 file bench_model writes):
 *   1. requests/s and p50/p99 latency at 1, 4 and 16 concurrent clients, each request a new
 *      single-turn conversation (so only the policy prefix is reused: the prefix cache is warm,
 *      never the message), on POST /v1/classify and on POST /v1/moderations (which adds the
 *      category scores: their cost is the difference). --threshold 1 on the server, so no
 *      category decoding is timed (random weights would make every verdict "unsafe").
 *   2. a 10-turn conversation checked after every turn, as a chat application does, on a
 *      server that keeps recent prompts (the default) and on one that keeps only the policy
 *      prefix (--prefix-mem 0): total time, and the prompt tokens computed.
 *   3. what batching concurrent requests into one forward could gain (the server runs them one
 *      at a time): in this process, one forward of R rows after a 200-token context, R = 1, 4,
 *      16, 64 (best of three). R single-token steps of R requests (category scores, decoding)
 *      cost R one-row forwards today; a batched forward would cost about one R-row forward.
 * Clients connect to 127.0.0.1 only, one connection per request (as most HTTP clients without
 * pooling); every request is bounded by a timeout.
 */
#include <pthread.h>
#include <stdint.h>

#include "../tests/httpclient.h"
#include "classify.h"

static int port;
static int next_req; /* request counter shared by the clients (atomic) */
static const char *endpoint;

typedef struct {
    int n;           /* requests this client makes */
    double *lat;     /* [n] seconds */
    int errors;
} Client;

static const char *topics[] = { "the sea", "a bicycle", "my garden", "the moon", "a job interview", "pancakes", "Hamlet", "vaccines" };

static void *client_main(void *arg) {
    Client *c = arg;
    for (int i = 0; i < c->n; i++) {
        int k = __atomic_fetch_add(&next_req, 1, __ATOMIC_RELAXED);
        char body[512], out[65536];
        /* a new conversation each time: only the policy prefix can be reused */
        if (!strcmp(endpoint, "/v1/moderations"))
            snprintf(body, sizeof body, "{\"input\":\"Request %d: please write a short poem about %s.\"}", k, topics[k % 8]);
        else
            snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"Request %d: please write a short poem about %s.\"}]}", k,
                     topics[k % 8]);
        double t0 = ts_now();
        int st = ts_request(port, endpoint, body, NULL, out, sizeof out);
        c->lat[i] = ts_now() - t0;
        if (st != 200) c->errors++;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* total requests spread over `clients` threads; prints one table row. */
static int load_row(int clients, int total) {
    Client cl[16];
    pthread_t th[16];
    double *all = malloc((size_t)total * sizeof *all);
    int per = total / clients, errors = 0, n = 0;
    double t0 = ts_now();
    for (int i = 0; i < clients; i++) {
        cl[i] = (Client){ per, malloc((size_t)per * sizeof(double)), 0 };
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    for (int i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        for (int k = 0; k < per; k++) all[n++] = cl[i].lat[k];
        errors += cl[i].errors;
        free(cl[i].lat);
    }
    double wall = ts_now() - t0;
    qsort(all, (size_t)n, sizeof *all, cmp_double);
    printf("| %s | %d | %d | %.2f | %.0f ms | %.0f ms | %d |\n", endpoint, clients, n, n / wall, all[n / 2] * 1e3,
           all[(int)(0.99 * (n - 1))] * 1e3, errors);
    fflush(stdout);
    free(all);
    return errors;
}

/* The 10-turn conversation; returns seconds for all ten checks and the tokens computed. */
static double ten_turns(int p, const char *tag, long *computed, long *prompt) {
    static const char *turns[] = {
        "Hi! I'm planning a trip to Portugal in May.", "Great choice. Lisbon and Porto are lovely then. How long will you stay?",
        "About ten days. Should I rent a car?", "For the cities, no; for the Douro valley or the Algarve, a car helps.",
        "What about trains between Lisbon and Porto?", "The Alfa Pendular takes about three hours and is comfortable.",
        "Any food I must try?", "Pasteis de nata, bacalhau, and francesinha in Porto.",
        "Thanks! Last thing: is tipping expected?", "It is appreciated but modest; rounding up or 5-10% is common.",
    };
    *computed = *prompt = 0;
    double t0 = ts_now();
    for (int n = 1; n <= 10; n++) {
        char body[8192], out[65536];
        int k = snprintf(body, sizeof body, "{\"messages\":[");
        for (int i = 0; i < n; i++)
            k += snprintf(body + k, sizeof body - (size_t)k, "%s{\"role\":\"%s\",\"content\":\"%s%s\"}", i ? "," : "", i % 2 ? "assistant" : "user",
                          i ? "" : tag, turns[i]);
        snprintf(body + k, sizeof body - (size_t)k, "]}");
        if (ts_request(p, "/v1/classify", body, NULL, out, sizeof out) != 200) return -1;
        const char *pt = strstr(out, "\"prompt_tokens\":"), *ct = strstr(out, "\"cached_tokens\":");
        if (!pt || !ct) return -1;
        long a = atol(pt + 16), c = atol(ct + 16);
        *prompt += a;
        *computed += a - c;
    }
    return ts_now() - t0;
}

/* Table 3: the cost of R rows in one forward. */
static int rows_table(const char *path, int threads) {
    Model m;
    RunState s;
    char err[ERRLEN];
    if (model_open(&m, path, threads, err)) { fprintf(stderr, "bench_server: %s\n", err); return 1; }
    model_prepack(&m);
    float *logits = malloc(m.cfg.vocab_size * sizeof(float));
    int32_t toks[264];
    for (int i = 0; i < 264; i++) toks[i] = 1000 + 37 * i;
    int rc = !logits || state_init(&s, &m, 264, err) || model_forward(&m, &s, toks, 200, logits, err);
    printf("\n| rows in one forward (after 200 tokens) | time | per row |\n|---|---|---|\n");
    const int rows[] = { 1, 4, 16, 64 };
    for (int r = 0; r < 4 && !rc; r++) {
        double best = 1e9;
        for (int k = 0; k < 3 && !rc; k++) {
            s.n_cached = 200;
            double t0 = ts_now();
            rc = model_forward(&m, &s, toks + 200, rows[r], logits, err);
            if (ts_now() - t0 < best) best = ts_now() - t0;
        }
        printf("| %d | %.1f ms | %.1f ms |\n", rows[r], best * 1e3, best * 1e3 / rows[r]);
    }
    if (rc) fprintf(stderr, "bench_server: %s\n", err);
    if (s.x) state_free(&s);
    free(logits);
    model_close(&m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: bench_server MODEL.bin [-t THREADS]\n"); return 2; }
    const char *threads = argc > 3 && !strcmp(argv[2], "-t") ? argv[3] : "0";
    const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char args[256];
    TestServer s, cold;
    snprintf(args, sizeof args, "-q --threshold 1 --queue 64 %s%s", strcmp(threads, "0") ? "-t " : "", strcmp(threads, "0") ? threads : "");
    if (ts_spawn(&s, "./run", argv[1], args, tmp, 600)) { fprintf(stderr, "bench_server: the server did not start (log %s)\n", s.log); return 1; }
    port = s.port;
    printf("| endpoint | clients | requests | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|---|\n");
    int errors = 0;
    const char *eps[] = { "/v1/classify", "/v1/moderations" };
    for (int e = 0; e < 2; e++) {
        endpoint = eps[e];
        client_main(&(Client){ 2, (double[2]){ 0 }, 0 }); /* warm: the policy prefix is computed once */
        errors += load_row(1, 8); /* few requests: the bench machine is shared (p99 of 8 is their max) */
        errors += load_row(4, 8);
        errors += load_row(16, 16);
    }
    /* each server first sees another conversation of the same shapes, so both have every policy
     * prefix and neither has this conversation */
    long comp_w, prompt_w, comp_c, prompt_c;
    ten_turns(s.port, "(warm-up) ", &comp_w, &prompt_w);
    double warm = ten_turns(s.port, "", &comp_w, &prompt_w);
    ts_stop(&s); /* one server at a time: the machine's memory is shared */
    snprintf(args + strlen(args), sizeof args - strlen(args), " --prefix-mem 0");
    if (ts_spawn(&cold, "./run", argv[1], args, tmp, 600)) { fprintf(stderr, "bench_server: the second server did not start\n"); return 1; }
    ten_turns(cold.port, "(warm-up) ", &comp_c, &prompt_c);
    double policy_only = ten_turns(cold.port, "", &comp_c, &prompt_c);
    ts_stop(&cold);
    printf("\n| 10-turn conversation, a check after every turn | total | per check | prompt tokens | computed |\n|---|---|---|---|---|\n");
    printf("| recent prompts kept (default) | %.0f ms | %.0f ms | %ld | %ld |\n", warm * 1e3, warm * 1e2, prompt_w, comp_w);
    printf("| policy prefix only (--prefix-mem 0) | %.0f ms | %.0f ms | %ld | %ld |\n", policy_only * 1e3, policy_only * 1e2, prompt_c, comp_c);
    fflush(stdout);
    int rc = rows_table(argv[1], atoi(threads));
    return errors || warm < 0 || policy_only < 0 || rc;
}
