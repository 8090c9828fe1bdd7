/* server.h: `./run MODEL.bin --serve`, an OpenAI-compatible moderation server (see server.c and
 * README "Server"). libc + pthreads only.
 */
#ifndef GUARD_SERVER_H
#define GUARD_SERVER_H

/* The command line's options that shape the server. Numbers given as text are validated by
 * serve() (one message naming the option); NULL means the default. */
typedef struct {
    const char *model;
    const char *host;          /* default 127.0.0.1 (loopback only) */
    const char *port;          /* default 8080; 0 picks a free port (printed on stderr) */
    const char *api_key;       /* required as "Authorization: Bearer KEY" on /v1/... when set; NULL:
                                * $LLAMA_GUARD_API_KEY if set (not visible in the process list) */
    const char *max_conns;     /* open connections (default 64); more are answered 503 and closed */
    const char *queue;         /* requests waiting for the model (default 16); a full queue answers 503 */
    const char *read_timeout;  /* seconds from a request's first byte to its last (default 10): 408 */
    const char *idle_timeout;  /* seconds a kept-alive connection may stay silent (default 30) */
    const char *prefix_mem;    /* MiB of K/V kept for recent prompts (default 256; 0 = policy prefixes only) */
    const char *cache, *categories, *exclude; /* as ./run: the defaults of every request */
    float threshold;
    long long ctx;
    int threads, no_cache, quiet, no_prepack;
    int chat_flags;            /* CHAT_DROP_SYSTEM (--system drop): leading system messages are left out */
} ServeOptions;

/* Load the model in the background (GET /health answers 503 until it is loaded and its data
 * checksum verified), serve until SIGINT or SIGTERM, finish the requests in flight, save the
 * policy prefixes to the cache file, and return 0; -1 with err on a failure to start or load. */
int serve(const ServeOptions *o, char *err);

#endif
