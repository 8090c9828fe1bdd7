/* server.c: `./run MODEL.bin --serve`, Llama Guard behind an OpenAI-compatible HTTP/1.1 API.
 *
 * Endpoints (README "Server" has the shapes and examples):
 *   GET  /health               200 once the model is loaded and its data checksum verified, else 503
 *   GET  /v1/models            the one model, as OpenAI's model list
 *   GET  /v1/categories        code -> name (and full text) of the default categories
 *   POST /v1/moderations       OpenAI's moderation shape; category keys are Llama Guard's codes
 *   POST /v1/chat/completions  the conversation classified; the reply is what ./run prints
 *   POST /v1/classify          {"messages":[...]} (+ categories, exclude, threshold): ./run --json
 *
 * Threads and ownership:
 *   acceptor    accepts; one connection thread per connection, at most max_conns (more get 503)
 *   connection  reads and parses requests (http.c), parses JSON, queues a Job, waits, writes the
 *               answer. Its timeouts bound what a slow or silent client can hold: itself only.
 *   worker      the process's main thread, the only one that touches the Guard (model,
 *               tokenizer, prefix store) and its RunState: it loads and verifies the model, then
 *               runs queued Jobs one at a time (the compute pool parallelizes each forward). The
 *               queue is bounded; a full queue answers 503 at once. (The main thread, because
 *               the kernels keep per-thread scratch that lives as long as the thread.)
 * Requests never name files: categories come inline as JSON, and the only files touched are
 * the model and the cache file given on the command line.
 * Shutdown: SIGINT/SIGTERM write to a pipe every thread polls. The listener closes, idle and
 * half-received connections close, queued and running requests finish and are answered
 * ("Connection: close"), the worker saves the policy prefixes (never message text) to the cache
 * file, and serve() returns 0.
 */
#include "server.h"

#include "classify.h"
#include "http.h"
#include "report.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY ((uint64_t)CHAT_MAX_BYTES + (64u << 10)) /* a maximal conversation plus JSON overhead */
#define MAX_INPUTS 64 /* moderation inputs per request */
/* After a request longer than this many positions the worker's KV cache is released rather than
 * kept at that size (a 100k-token request must not pin gigabytes; --ctx bounds a request). */
#define KEEP_POSITIONS 4096
#define SERVER_NAME "llama-guard.c/" GUARD_VERSION

enum { JOB_MODERATION, JOB_CHAT, JOB_CLASSIFY };

/* One queued request: the conversations to classify and, once done, their results. The
 * connection thread owns it and waits on cv; the worker fills it. */
typedef struct {
    int kind;
    Conversation *convs; /* [n] */
    int n;
    PromptFormat pf;
    float threshold;
    Decision *d;         /* [n] */
    double *scores;      /* [n * pf.n_cats], moderation only */
    int64_t completion_tokens; /* chat: tokens of the reply text */
    int status;          /* 0 ok, else the HTTP status of err */
    char err[ERRLEN];
    int done;
    pthread_cond_t cv;
} Job;

typedef struct {
    const ServeOptions *o;
    const char *api_key;       /* --api-key, else $LLAMA_GUARD_API_KEY (kept off the command line), or NULL */
    long max_conns, queue_cap, read_ms, idle_ms;
    uint64_t prefix_bytes;
    int listen_fd;
    int stop_rd;               /* readable once SIGINT/SIGTERM arrived (or loading failed) */
    char model_id[64];
    char cache_path[4096];     /* the prefix cache file, "" for none */
    /* the model, loaded by the worker; read-only for other threads once `ready` */
    Guard g;
    PromptFormat base;         /* the request defaults: the file's categories + --categories/--exclude */
    int ready, failed;         /* atomics */
    char load_err[ERRLEN];
    /* the queue and connection count, under mu */
    pthread_mutex_t mu;
    pthread_cond_t work, conns_cv;
    Job **q;                   /* ring [queue_cap] */
    long q_head, q_len, n_conns;
    int quit;                  /* worker: stop once the queue is empty */
    unsigned long long next_id;
} Server;

static int stop_pipe[2] = { -1, -1 };

static void on_signal(int sig) {
    (void)sig;
    int saved = errno;
    if (write(stop_pipe[1], "x", 1) < 0) { /* nothing to do: the pipe already holds a byte */ }
    errno = saved;
}

static int stopping(const Server *sv) {
    struct pollfd p = { sv->stop_rd, POLLIN, 0 };
    return poll(&p, 1, 0) > 0;
}

static long now_ms(void) { return (long)(now_sec() * 1e3); }

/* ==== Options ==== */

static int opt_num(const char *s, const char *name, long lo, long hi, long def, long *out, char *err) {
    if (!s) { *out = def; return 0; }
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (end == s || *end || errno || x < lo || x > hi) return errf(err, "%s: '%s' is not a number in %ld..%ld", name, s, lo, hi);
    *out = x;
    return 0;
}

/* ==== Writing answers ==== */

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int send_response(int fd, int status, const char *body, size_t len, int keep_alive, const char *extra) {
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nServer: " SERVER_NAME "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: %s\r\n%s\r\n",
                     status, http_reason(status), len, keep_alive ? "keep-alive" : "close", extra ? extra : "");
    return send_all(fd, head, (size_t)n) || send_all(fd, body, len) ? -1 : 0;
}

/* A response body being built (open_memstream). */
typedef struct {
    char *p;
    size_t n;
    FILE *f;
} Out;

static int out_open(Out *o) {
    o->p = NULL;
    o->n = 0;
    o->f = open_memstream(&o->p, &o->n);
    return o->f ? 0 : -1;
}

static void out_close(Out *o) {
    if (o->f) fclose(o->f);
    o->f = NULL;
}

/* OpenAI's error object. */
static void error_body(Out *o, int status, const char *msg) {
    const char *type = status == 401 ? "authentication_error" : status >= 500 ? "server_error" : "invalid_request_error";
    fprintf(o->f, "{\"error\":{\"message\":");
    print_json_str(o->f, msg, strlen(msg));
    fprintf(o->f, ",\"type\":\"%s\",\"param\":null,\"code\":%d}}\n", type, status);
}

/* ==== The worker: the model's only user ==== */

static int load_model(Server *sv, char *err) {
    const ServeOptions *o = sv->o;
    Guard *g = &sv->g;
    if (guard_open(g, o->model, o->threads, err)) return -1;
    /* the data checksum before the first answer: a corrupt file must never say "safe" */
    if (gb_verify(&g->model.file, err)) return -1;
    if (!o->no_prepack) model_prepack(&g->model);
    g->no_prefix_store = o->no_cache;
    if (!o->no_cache) {
        char warn[ERRLEN];
        /* the cache file (policy prefixes only): --cache, else the per-user default; none if untrusted */
        if (guard_cache_locate(&g->model, o->model, o->cache, sv->cache_path, sizeof sv->cache_path, warn)) {
            sv->cache_path[0] = 0;
            fprintf(stderr, "serve: warning: no prefix cache file: %s\n", warn);
        } else if (guard_cache_load(g, sv->cache_path, warn) < 0) {
            fprintf(stderr, "serve: warning: %s\n", warn);
        }
        guard_set_recent_budget(g, sv->prefix_bytes);
    }
    if (template_set_categories(&sv->base, g->pf.cats, g->pf.n_cats, err)) return -1;
    sv->base.version = g->pf.version;
    if (o->categories && template_read_categories(&sv->base, o->categories, err)) return -1;
    if (o->exclude && template_exclude(&sv->base, o->exclude, err)) return -1;
    snprintf(sv->model_id, sizeof sv->model_id, "llama-guard-%s", template_guard_name(g->pf.version));
    return 0;
}

/* Tokens of text (the chat reply's length in tokens for usage). */
static int64_t count_tokens(const Guard *g, const char *text) {
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    char err[ERRLEN];
    int64_t k = tok_encode(g->tok, text, strlen(text), &ids, &n, &cap, err) ? 0 : (int64_t)n;
    free(ids);
    return k;
}

/* The text ./run prints for a decision, without its final newline. */
static void decision_text(const Decision *d, char *out, size_t n) {
    size_t k = (size_t)snprintf(out, n, "%s", d->unsafe ? "unsafe" : "safe");
    for (int i = 0; d->unsafe && i < d->verdict.n_codes && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s", i ? "," : "\n", d->verdict.codes[i].code);
}

static void run_job(Server *sv, RunState *s, Job *j) {
    for (int i = 0; i < j->n && !j->status; i++) {
        if (guard_classify(&sv->g, s, &j->pf, &j->convs[i], j->threshold, sv->o->ctx, &j->d[i], j->err))
            j->status = strncmp(j->err, "the conversation needs", 22) == 0 ? 400 : 500;
        else if (j->kind == JOB_MODERATION && guard_category_scores(&sv->g, s, &j->pf, &j->d[i], j->scores + (size_t)i * j->pf.n_cats, j->err))
            j->status = 500;
    }
    if (!j->status && j->kind == JOB_CHAT) {
        char text[512];
        decision_text(&j->d[0], text, sizeof text);
        j->completion_tokens = count_tokens(&sv->g, text);
    }
}

static void worker(Server *sv) {
    RunState s;
    char err[ERRLEN];
    if (load_model(sv, err) || state_init(&s, &sv->g.model, 0, err)) {
        snprintf(sv->load_err, sizeof sv->load_err, "%s", err);
        __atomic_store_n(&sv->failed, 1, __ATOMIC_RELEASE);
        on_signal(0); /* stops the acceptor */
        return;
    }
    __atomic_store_n(&sv->ready, 1, __ATOMIC_RELEASE);
    if (!sv->o->quiet) fprintf(stderr, "serve: %s loaded and verified, ready\n", sv->o->model);
    pthread_mutex_lock(&sv->mu);
    for (;;) {
        while (!sv->q_len && !sv->quit) pthread_cond_wait(&sv->work, &sv->mu);
        if (!sv->q_len) break;
        Job *j = sv->q[sv->q_head];
        sv->q_head = (sv->q_head + 1) % sv->queue_cap;
        sv->q_len--;
        pthread_mutex_unlock(&sv->mu);
        run_job(sv, &s, j);
        RunState fresh; /* swapped in only once allocated: on failure the big one stays */
        if (s.cap > KEEP_POSITIONS && state_init(&fresh, &sv->g.model, 0, err) == 0) {
            state_free(&s);
            s = fresh;
        }
        pthread_mutex_lock(&sv->mu);
        j->done = 1;
        pthread_cond_signal(&j->cv);
    }
    pthread_mutex_unlock(&sv->mu);
    state_free(&s);
}

/* Queue j and wait for it; 503 at once when the queue is full. */
static int submit(Server *sv, Job *j) {
    pthread_mutex_lock(&sv->mu);
    if (sv->q_len == sv->queue_cap) {
        pthread_mutex_unlock(&sv->mu);
        return 503;
    }
    pthread_cond_init(&j->cv, NULL);
    sv->q[(sv->q_head + sv->q_len) % sv->queue_cap] = j;
    sv->q_len++;
    pthread_cond_signal(&sv->work);
    while (!j->done) pthread_cond_wait(&j->cv, &sv->mu);
    pthread_mutex_unlock(&sv->mu);
    pthread_cond_destroy(&j->cv);
    return 0;
}

static void job_free(Job *j) {
    for (int i = 0; i < j->n; i++) chat_free(&j->convs[i]);
    free(j->convs);
    free(j->d);
    free(j->scores);
    template_free(&j->pf);
}

static int job_alloc(Job *j, int kind, int n, char *err) {
    memset(j, 0, sizeof *j);
    j->kind = kind;
    j->convs = calloc((size_t)n, sizeof *j->convs);
    j->d = calloc((size_t)n, sizeof *j->d);
    if (!j->convs || !j->d) return errf(err, "out of memory");
    for (int i = 0; i < n; i++) chat_init(&j->convs[i]);
    j->n = n;
    return 0;
}

/* ==== Endpoints ==== */

typedef struct {
    int status;
    int64_t tokens;
    const char *allow; /* 405: the method the path takes */
} Answer;

/* "threshold" in [0, 1], else the server's default. */
static int get_threshold(const Json *js, const JsonNode *root, float def, float *out, char *err) {
    const JsonNode *t = json_get(js, root, "threshold");
    *out = def;
    if (!t) return 0;
    if (t->type != JSON_NUMBER || !(t->num >= 0 && t->num <= 1)) return errf(err, "\"threshold\" must be a number between 0 and 1");
    *out = (float)t->num;
    return 0;
}

/* Moderation "input": a string, or an array of strings and {"type":"text","text":...} parts. */
static int moderation_inputs(const Json *js, const JsonNode *in, Job *j, char *err) {
    if (!in) return errf(err, "\"input\" is required");
    int n = in->type == JSON_STRING ? 1 : in->type == JSON_ARRAY ? (int)(in->len < MAX_INPUTS + 1 ? in->len : MAX_INPUTS + 1) : 0;
    if (in->type != JSON_STRING && in->type != JSON_ARRAY) return errf(err, "\"input\" must be a string or an array");
    if (n == 0) return errf(err, "\"input\" is an empty array");
    if (n > MAX_INPUTS) return errf(err, "at most %d inputs per request", MAX_INPUTS);
    if (job_alloc(j, JOB_MODERATION, n, err)) return -1;
    const JsonNode *it = in->type == JSON_STRING ? in : json_first(js, in);
    for (int i = 0; i < n; i++, it = in->type == JSON_STRING ? NULL : json_next(js, it)) {
        const JsonNode *text = it->type == JSON_STRING ? it : NULL;
        if (it->type == JSON_OBJECT) {
            const JsonNode *type = json_get(js, it, "type");
            if (!type || type->type != JSON_STRING || strcmp(type->str, "text") != 0)
                return errf(err, "input %d: only {\"type\":\"text\",\"text\":...} parts are accepted", i);
            text = json_get(js, it, "text");
        }
        if (!text || text->type != JSON_STRING) return errf(err, "input %d: expected a string or a text part", i);
        if (chat_append(&j->convs[i], ROLE_USER, text->str, text->len, err)) return -1;
    }
    return 0;
}

static void print_model_output(FILE *f, const Decision *d) {
    if (d->unsafe) print_json_str(f, d->generated, strlen(d->generated));
    else fprintf(f, "\"safe\"");
}

static void moderation_body(Server *sv, const Job *j, Out *o) {
    fprintf(o->f, "{\"id\":\"modr-%llu\",\"model\":\"%s\",\"results\":[", __atomic_add_fetch(&sv->next_id, 1, __ATOMIC_RELAXED),
            sv->model_id);
    for (int i = 0; i < j->n; i++) {
        const Decision *d = &j->d[i];
        fprintf(o->f, "%s{\"flagged\":%s,\"categories\":{", i ? "," : "", d->unsafe ? "true" : "false");
        for (int c = 0; c < j->pf.n_cats; c++) {
            int named = 0;
            for (int k = 0; d->unsafe && k < d->verdict.n_codes; k++) named |= d->verdict.codes[k].cat == c;
            fprintf(o->f, "%s", c ? "," : "");
            print_json_str(o->f, j->pf.cats[c].code, strlen(j->pf.cats[c].code));
            fprintf(o->f, ":%s", named ? "true" : "false");
        }
        fprintf(o->f, "},\"category_scores\":{");
        for (int c = 0; c < j->pf.n_cats; c++) {
            fprintf(o->f, "%s", c ? "," : "");
            print_json_str(o->f, j->pf.cats[c].code, strlen(j->pf.cats[c].code));
            fprintf(o->f, ":%.9g", j->scores[(size_t)i * j->pf.n_cats + c]);
        }
        fprintf(o->f, "},\"p_unsafe\":%.9g,\"model_output\":", (double)d->p_unsafe);
        print_model_output(o->f, d);
        fprintf(o->f, "}");
    }
    fprintf(o->f, "]}\n");
}

/* A label token's logprob entry; p == 0 is written as the log of the smallest float (JSON has no -inf). */
static void logprob_entry(FILE *f, const char *token, double p) {
    fprintf(f, "{\"token\":\"%s\",\"logprob\":%.9g,\"bytes\":[", token, log(p > 1.4e-45 ? p : 1.4e-45));
    for (size_t i = 0; token[i]; i++) fprintf(f, "%s%d", i ? "," : "", (unsigned char)token[i]);
    fprintf(f, "]");
}

static void chat_body(Server *sv, const Job *j, int logprobs, int top, Out *o) {
    const Decision *d = &j->d[0];
    char text[512];
    decision_text(d, text, sizeof text);
    fprintf(o->f, "{\"id\":\"chatcmpl-%llu\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":\"%s\",\"choices\":[{\"index\":0,"
                  "\"message\":{\"role\":\"assistant\",\"content\":",
            __atomic_add_fetch(&sv->next_id, 1, __ATOMIC_RELAXED), (long long)time(NULL), sv->model_id);
    print_json_str(o->f, text, strlen(text));
    fprintf(o->f, "},\"logprobs\":");
    if (!logprobs) fprintf(o->f, "null");
    else {
        /* the decision token: the label the verdict reports, with both labels as alternatives */
        const char *lab[2] = { "safe", "unsafe" };
        double p[2] = { d->p_safe, d->p_unsafe_token };
        int chosen = d->unsafe, first = p[1] > p[0];
        fprintf(o->f, "{\"content\":[");
        logprob_entry(o->f, lab[chosen], p[chosen]);
        fprintf(o->f, ",\"top_logprobs\":[");
        for (int k = 0; k < top && k < 2; k++) {
            int w = k == 0 ? first : !first;
            logprob_entry(o->f, lab[w], p[w]);
            fprintf(o->f, "}%s", k + 1 < top && k + 1 < 2 ? "," : "");
        }
        fprintf(o->f, "]}]}");
    }
    fprintf(o->f, ",\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld}}\n",
            (long long)d->prompt_tokens, (long long)j->completion_tokens, (long long)(d->prompt_tokens + j->completion_tokens));
}

/* POST endpoints: JSON in, a Job through the queue, JSON out. */
static void compute(Server *sv, int kind, const HttpRequest *r, Out *o, Answer *a) {
    char err[ERRLEN];
    Json js;
    Job j;
    int logprobs = 0;
    int64_t top = 0;
    memset(&j, 0, sizeof j);
    a->status = 400;
    if (!__atomic_load_n(&sv->ready, __ATOMIC_ACQUIRE)) { a->status = 503; error_body(o, 503, "the model is still loading"); return; }
    if (json_parse(&js, r->body, (size_t)r->content_length, err)) { error_body(o, 400, err); return; }
    const JsonNode *root = json_root(&js);
    int rc = root->type == JSON_OBJECT ? 0 : errf(err, "the body must be a JSON object");
    if (rc == 0 && kind == JOB_MODERATION) rc = moderation_inputs(&js, json_get(&js, root, "input"), &j, err);
    if (rc == 0 && kind != JOB_MODERATION) {
        const JsonNode *st = json_get(&js, root, "stream"), *lp = json_get(&js, root, "logprobs"), *tl = json_get(&js, root, "top_logprobs");
        if (st && st->type == JSON_TRUE) rc = errf(err, "\"stream\": true is not supported (the verdict is one short reply)");
        logprobs = lp && lp->type == JSON_TRUE;
        if (rc == 0 && tl && json_int(tl, 0, 20, &top)) rc = errf(err, "\"top_logprobs\" must be an integer 0..20");
        if (rc == 0) rc = job_alloc(&j, kind, 1, err);
        if (rc == 0) {
            chat_free(&j.convs[0]);
            rc = chat_from_json_flags(&j.convs[0], &js, root, sv->o->chat_flags, err);
            if (rc) chat_init(&j.convs[0]);
        }
    }
    if (rc == 0) rc = template_from_json(&j.pf, &js, root, &sv->base, kind == JOB_CLASSIFY, err);
    if (rc == 0) rc = get_threshold(&js, root, sv->o->threshold, &j.threshold, err);
    if (rc == 0 && kind == JOB_MODERATION && !(j.scores = calloc((size_t)j.n * (size_t)(j.pf.n_cats ? j.pf.n_cats : 1), sizeof *j.scores)))
        rc = errf(err, "out of memory");
    json_free(&js);
    if (rc) error_body(o, 400, err);
    else if ((a->status = submit(sv, &j)) == 503) error_body(o, 503, "the request queue is full: try again");
    else if ((a->status = j.status ? j.status : 200) != 200) error_body(o, a->status, j.err);
    else if (kind == JOB_MODERATION) moderation_body(sv, &j, o);
    else if (kind == JOB_CHAT) chat_body(sv, &j, logprobs, (int)top, o);
    else print_decision_json(o->f, NULL, NULL, &sv->g, &j.pf, &j.d[0]);
    for (int i = 0; i < j.n && a->status == 200; i++) a->tokens += j.d[i].prompt_tokens;
    job_free(&j);
}

static void categories_body(const Server *sv, Out *o) {
    fprintf(o->f, "{\"object\":\"list\",\"model\":\"%s\",\"data\":[", sv->model_id);
    for (int i = 0; i < sv->base.n_cats; i++) {
        const Category *c = &sv->base.cats[i];
        size_t nl;
        const char *nm = template_category_name(c, &nl);
        fprintf(o->f, "%s{\"code\":", i ? "," : "");
        print_json_str(o->f, c->code, strlen(c->code));
        fprintf(o->f, ",\"name\":");
        print_json_str(o->f, nm, nl);
        fprintf(o->f, ",\"description\":");
        print_json_str(o->f, c->text, strlen(c->text));
        fprintf(o->f, "}");
    }
    fprintf(o->f, "]}\n");
}

static int path_is(const HttpRequest *r, const char *p) { return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0; }

/* Constant-time "Bearer KEY" check. */
static int authorized(const Server *sv, const HttpRequest *r) {
    const char *key = sv->api_key;
    if (!key) return 1;
    const HttpHeader *h = http_header(r, "authorization");
    size_t kl = strlen(key);
    if (!h || h->value_len != kl + 7 || memcmp(h->value, "Bearer ", 7) != 0) return 0;
    unsigned char diff = 0;
    for (size_t i = 0; i < kl; i++) diff |= (unsigned char)(h->value[7 + i] ^ key[i]);
    return diff == 0;
}

static void route(Server *sv, const HttpRequest *r, Out *o, Answer *a) {
    static const struct { const char *path, *method; int kind; } routes[] = {
        { "/health", "GET", -1 },          { "/v1/models", "GET", -2 },
        { "/v1/categories", "GET", -3 },   { "/v1/moderations", "POST", JOB_MODERATION },
        { "/v1/chat/completions", "POST", JOB_CHAT }, { "/v1/classify", "POST", JOB_CLASSIFY },
    };
    int ready = __atomic_load_n(&sv->ready, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (!path_is(r, routes[i].path)) continue;
        if (strcmp(r->method, routes[i].method) != 0) {
            a->status = 405;
            a->allow = routes[i].method;
            error_body(o, 405, "method not allowed on this path");
            return;
        }
        if (routes[i].kind != -1 && !authorized(sv, r)) {
            a->status = 401;
            error_body(o, 401, "missing or wrong API key (Authorization: Bearer KEY)");
            return;
        }
        a->status = 200;
        switch (routes[i].kind) {
        case -1:
            a->status = ready ? 200 : 503;
            fprintf(o->f, "{\"status\":\"%s\"}\n", ready ? "ok" : "loading");
            return;
        case -2:
            if (!ready) break;
            fprintf(o->f, "{\"object\":\"list\",\"data\":[{\"id\":\"%s\",\"object\":\"model\",\"created\":0,\"owned_by\":\"llama-guard\"}]}\n",
                    sv->model_id);
            return;
        case -3:
            if (!ready) break;
            categories_body(sv, o);
            return;
        default: compute(sv, routes[i].kind, r, o, a); return;
        }
        a->status = 503;
        error_body(o, 503, "the model is still loading");
        return;
    }
    a->status = 404;
    error_body(o, 404, "no such endpoint");
}

/* ==== Connections ==== */

typedef struct {
    Server *sv;
    int fd;
} Conn;

static void log_request(const Server *sv, const HttpRequest *r, int status, int64_t tokens, double t0) {
    if (sv->o->quiet) return;
    if (r) fprintf(stderr, "serve: %s %.*s %d %lld tokens %.1f ms\n", r->method, (int)(r->path_len > 200 ? 200 : r->path_len), r->path,
                   status, (long long)tokens, (now_sec() - t0) * 1e3);
    else fprintf(stderr, "serve: - - %d 0 tokens %.1f ms\n", status, (now_sec() - t0) * 1e3);
}

/* Answer with an error and a closed connection (a request we could not read). */
static void refuse(const Server *sv, int fd, int status, const char *why, double t0) {
    Out o;
    if (out_open(&o)) return;
    error_body(&o, status, why);
    out_close(&o);
    send_response(fd, status, o.p, o.n, 0, NULL);
    free(o.p);
    log_request(sv, NULL, status, 0, t0);
}

/* Close a connection whose request was never read. A plain close() with the request still
 * unread makes the kernel answer with a reset, and the client may then lose the reply it has
 * not read yet; so send FIN first and read what the client still sends until it closes, for at
 * most 200 ms (a client that reads the reply closes at once). */
static void close_after_reply(int fd) {
    shutdown(fd, SHUT_WR);
    long end = now_ms() + 200;
    char sink[4096];
    for (long left; (left = end - now_ms()) > 0;) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, (int)left) <= 0) break;
        if (recv(fd, sink, sizeof sink, 0) <= 0) break;
    }
    close(fd);
}

static void serve_connection(Server *sv, int fd) {
    size_t cap = 8192, len = 0, max = HTTP_MAX_HEAD + MAX_BODY;
    char *buf = malloc(cap);
    if (!buf) return;
    for (;;) {
        /* 1. read one whole request: idle_ms for its first byte, then read_ms for all of it */
        HttpRequest r;
        long deadline = now_ms() + sv->idle_ms;
        double t0 = now_sec();
        int rc, sent_continue = 0, started = len > 0;
        if (started) deadline = now_ms() + sv->read_ms;
        while ((rc = http_parse(buf, len, MAX_BODY, &r)) == HTTP_MORE) {
            if (r.head_len && r.expect_continue && !sent_continue) {
                sent_continue = 1;
                if (send_all(fd, "HTTP/1.1 100 Continue\r\n\r\n", 25)) goto done;
            }
            long left = deadline - now_ms();
            if (left <= 0) {
                if (started) refuse(sv, fd, 408, "request not received in time", t0);
                goto done;
            }
            struct pollfd p[2] = { { fd, POLLIN, 0 }, { sv->stop_rd, POLLIN, 0 } };
            int pr = poll(p, 2, (int)(left < 1000 ? left : 1000));
            if (pr < 0 && errno != EINTR) goto done;
            if (p[1].revents) goto done; /* shutting down: no new requests */
            if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            if (len == cap) {
                size_t nc = cap * 2 < max ? cap * 2 : max;
                char *q = nc > cap ? realloc(buf, nc) : NULL;
                if (!q) { refuse(sv, fd, 413, "request too large", t0); goto done; }
                buf = q;
                cap = nc;
            }
            ssize_t k = recv(fd, buf + len, cap - len, 0);
            if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
            if (k <= 0) goto done;
            if (!started) {
                started = 1;
                t0 = now_sec();
                deadline = now_ms() + sv->read_ms;
            }
            len += (size_t)k;
        }
        if (rc != HTTP_DONE) {
            refuse(sv, fd, rc, r.why, t0);
            goto done;
        }
        /* 2. answer it */
        Out o;
        Answer a = { 0, 0, NULL };
        if (out_open(&o)) goto done;
        route(sv, &r, &o, &a);
        out_close(&o);
        int keep = r.keep_alive && !stopping(sv);
        char extra[64] = "";
        if (a.allow) snprintf(extra, sizeof extra, "Allow: %s\r\n", a.allow);
        int sent = send_response(fd, a.status, o.p, o.n, keep, extra);
        free(o.p);
        log_request(sv, &r, a.status, a.tokens, t0);
        if (sent || !keep) goto done;
        /* 3. keep what followed it (a pipelined request) */
        size_t used = (size_t)(r.head_len + r.content_length);
        memmove(buf, buf + used, len - used);
        len -= used;
    }
done:
    free(buf);
}

static void *conn_main(void *arg) {
    Conn c = *(Conn *)arg;
    free(arg);
    serve_connection(c.sv, c.fd);
    close_after_reply(c.fd); /* a refused request (413, 431, ...) may still be unread */
    pthread_mutex_lock(&c.sv->mu);
    c.sv->n_conns--;
    pthread_cond_broadcast(&c.sv->conns_cv);
    pthread_mutex_unlock(&c.sv->mu);
    return NULL;
}

/* ==== Listening ==== */

static int open_listener(Server *sv, char *err) {
    const ServeOptions *o = sv->o;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *res;
    const char *host = o->host ? o->host : "127.0.0.1", *port = o->port ? o->port : "8080";
    long pn;
    if (opt_num(port, "--port", 0, 65535, 8080, &pn, err)) return -1;
    int gr = getaddrinfo(host, port, &hints, &res);
    if (gr) return errf(err, "--host %s: %s", host, gai_strerror(gr));
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol), one = 1;
    if (fd < 0) { freeaddrinfo(res); return errf(err, "socket: %s", strerror(errno)); }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 128)) {
        errf(err, "cannot listen on %s port %s: %s", host, port, strerror(errno));
        freeaddrinfo(res);
        close(fd);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char name[INET6_ADDRSTRLEN] = "?", serv[16] = "?";
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) getnameinfo((struct sockaddr *)&ss, sl, name, sizeof name, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV);
    /* always printed (even with -q): scripts that ask for port 0 read the port from here */
    fprintf(stderr, "serve: listening on http://%s:%s\n", name, serv);
    sv->listen_fd = fd;
    return 0;
}

/* Accept until told to stop; at most max_conns connections at a time. Then wait for the
 * connections to finish and tell the worker to stop once the queue is empty. */
static void *accept_main(void *arg) {
    Server *sv = arg;
    for (;;) {
        struct pollfd p[2] = { { sv->listen_fd, POLLIN, 0 }, { sv->stop_rd, POLLIN, 0 } };
        if (poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) continue;
        int fd = accept4(sv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        int one = 1;
        struct timeval tv = { sv->read_ms / 1000, (sv->read_ms % 1000) * 1000 };
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* a client that never reads cannot hold us */
        pthread_mutex_lock(&sv->mu);
        int full = sv->n_conns >= sv->max_conns;
        if (!full) sv->n_conns++;
        pthread_mutex_unlock(&sv->mu);
        Conn *c = full ? NULL : malloc(sizeof *c);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256u << 10);
        if (c) *c = (Conn){ sv, fd };
        if (!c || pthread_create(&t, &at, conn_main, c)) {
            if (!full) {
                free(c);
                pthread_mutex_lock(&sv->mu);
                sv->n_conns--;
                pthread_mutex_unlock(&sv->mu);
            }
            refuse(sv, fd, 503, "too many connections", now_sec());
            close_after_reply(fd);
        }
        pthread_attr_destroy(&at);
    }
    close(sv->listen_fd);
    if (!sv->o->quiet && !sv->failed) fprintf(stderr, "serve: stopping: finishing the requests in flight\n");
    pthread_mutex_lock(&sv->mu);
    while (sv->n_conns) pthread_cond_wait(&sv->conns_cv, &sv->mu);
    sv->quit = 1;
    pthread_cond_signal(&sv->work);
    pthread_mutex_unlock(&sv->mu);
    return NULL;
}

int serve(const ServeOptions *o, char *err) {
    Server *sv = calloc(1, sizeof *sv);
    if (!sv) return errf(err, "out of memory");
    sv->o = o;
    sv->listen_fd = -1;
    sv->api_key = o->api_key ? o->api_key : getenv("LLAMA_GUARD_API_KEY");
    if (sv->api_key && !*sv->api_key) sv->api_key = NULL;
    long mib;
    if (opt_num(o->max_conns, "--max-connections", 1, 4096, 64, &sv->max_conns, err) ||
        opt_num(o->queue, "--queue", 1, 4096, 16, &sv->queue_cap, err) ||
        opt_num(o->read_timeout, "--read-timeout", 1, 3600, 10, &sv->read_ms, err) ||
        opt_num(o->idle_timeout, "--idle-timeout", 1, 3600, 30, &sv->idle_ms, err) ||
        opt_num(o->prefix_mem, "--prefix-mem", 0, 1 << 20, 256, &mib, err)) {
        free(sv);
        return -1;
    }
    sv->read_ms *= 1000;
    sv->idle_ms *= 1000;
    sv->prefix_bytes = (uint64_t)mib << 20;
    sv->q = calloc((size_t)sv->queue_cap, sizeof *sv->q);
    if (!sv->q || pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK)) {
        free(sv->q);
        free(sv);
        return errf(err, "cannot set up the server: %s", strerror(errno));
    }
    sv->stop_rd = stop_pipe[0];
    pthread_mutex_init(&sv->mu, NULL);
    pthread_cond_init(&sv->work, NULL);
    pthread_cond_init(&sv->conns_cv, NULL);
    struct sigaction sa = { 0 };
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t acceptor;
    int rc = open_listener(sv, err);
    if (rc == 0 && pthread_create(&acceptor, NULL, accept_main, sv)) {
        close(sv->listen_fd);
        rc = errf(err, "cannot start the accept thread");
    }
    if (rc == 0) {
        worker(sv);
        pthread_join(acceptor, NULL);
        if (sv->failed) rc = errf(err, "%s", sv->load_err);
    }
    if (rc == 0 && sv->g.prefixes.dirty && sv->cache_path[0]) {
        /* the cache file holds policy prefixes only (classify.h PrefixStore): no request's text */
        char werr[ERRLEN];
        if (guard_cache_save(&sv->g, sv->cache_path, werr) && o->cache) fprintf(stderr, "serve: warning: %s\n", werr);
    }
    if (sv->g.tok) guard_close(&sv->g); /* a failed guard_open left nothing open */
    template_free(&sv->base);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    close(stop_pipe[0]);
    close(stop_pipe[1]);
    pthread_mutex_destroy(&sv->mu);
    pthread_cond_destroy(&sv->work);
    pthread_cond_destroy(&sv->conns_cv);
    free(sv->q);
    free(sv);
    return rc;
}
