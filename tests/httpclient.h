/* tests/httpclient.h: a minimal HTTP/1.1 client and a way to start `./run --serve` as a child,
 * for the server tests (tests/serverutil.h) and bench/bench_server.c. No cmocka here. Everything
 * connects to 127.0.0.1 only. The server child dies with its parent (PR_SET_PDEATHSIG). */
#ifndef GUARD_HTTPCLIENT_H
#define GUARD_HTTPCLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    pid_t pid;
    int port;
    char log[600]; /* the server's stderr */
} TestServer;

static inline double ts_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One request on a fresh connection: send req[0..len), read until the peer closes or the
 * response's Content-Length is complete (at most timeout_ms in all). Returns the status code, or
 * -1 when nothing parseable came back. out (optional) receives the body, NUL-terminated. */
static inline int ts_raw(int port, const char *req, size_t len, char *out, size_t cap, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) { close(fd); return -1; }
    size_t sent = 0;
    while (sent < len) {
        ssize_t k = send(fd, req + sent, len - sent, MSG_NOSIGNAL);
        if (k <= 0) break; /* the server may refuse before reading everything */
        sent += (size_t)k;
    }
    size_t rcap = 1 << 16, n = 0;
    char *r = malloc(rcap + 1);
    double end = ts_now() + timeout_ms / 1e3;
    int status = -1;
    for (;;) {
        r[n] = 0;
        char *body = strstr(r, "\r\n\r\n");
        if (body) {
            const char *cl = strcasestr(r, "\r\nContent-Length:");
            size_t want = cl ? (size_t)strtoull(cl + 17, NULL, 10) : 0;
            if (cl && n - (size_t)(body + 4 - r) >= want) break;
        }
        int left = (int)((end - ts_now()) * 1e3);
        struct pollfd p = { fd, POLLIN, 0 };
        if (left <= 0 || poll(&p, 1, left) <= 0) break;
        if (n == rcap) break;
        ssize_t k = recv(fd, r + n, rcap - n, 0);
        if (k <= 0) break;
        n += (size_t)k;
    }
    r[n] = 0;
    /* a 100 Continue may come first */
    const char *st = r;
    while (strncmp(st, "HTTP/1.1 100", 12) == 0 && strstr(st, "\r\n\r\n")) st = strstr(st, "\r\n\r\n") + 4;
    if (strncmp(st, "HTTP/1.1 ", 9) == 0) status = atoi(st + 9);
    if (out && cap) {
        const char *b = strstr(st, "\r\n\r\n");
        snprintf(out, cap, "%s", b ? b + 4 : "");
    }
    free(r);
    close(fd);
    return status;
}

/* A JSON request (POST with body, or GET when body is NULL). */
static inline int ts_request(int port, const char *path, const char *body, const char *auth, char *out, size_t cap) {
    size_t bl = body ? strlen(body) : 0, n = bl + 512 + (auth ? strlen(auth) : 0);
    char *req = malloc(n);
    int k = snprintf(req, n, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%sContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     body ? "POST" : "GET", path, auth ? "Authorization: Bearer " : "", auth ? auth : "", auth ? "\r\n" : "", bl, body ? body : "");
    int st = ts_raw(port, req, (size_t)k, out, cap, 60000);
    free(req);
    return st;
}

/* Start `./run MODEL --serve --host 127.0.0.1 --port 0 ARGS` with its stderr in s->log; wait
 * until it prints its port and /health answers 200. 0, or -1 after timeout_s (the child is killed). */
static inline int ts_spawn(TestServer *s, const char *run, const char *model, const char *args, const char *logdir, double timeout_s) {
    snprintf(s->log, sizeof s->log, "%s/server.%d.%ld.log", logdir, (int)getpid(), (long)(ts_now() * 1e6) % 1000000000L);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "exec %s '%s' --serve --host 127.0.0.1 --port 0 %s 2>'%s' >/dev/null", run, model, args, s->log);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    if (pid < 0) return -1;
    s->pid = pid;
    s->port = 0;
    double end = ts_now() + timeout_s;
    while (ts_now() < end && !s->port) {
        FILE *f = fopen(s->log, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            const char *p = strstr(line, "listening on http://127.0.0.1:");
            if (p) s->port = atoi(p + strlen("listening on http://127.0.0.1:"));
        }
        if (f) fclose(f);
        if (!s->port) usleep(20000);
    }
    while (s->port && ts_now() < end && ts_request(s->port, "/health", NULL, NULL, NULL, 0) != 200) usleep(20000);
    if (ts_now() < end && s->port) return 0;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* SIGTERM, then wait (at most 30 s); returns the exit status (-1 if it had to be killed or died by a signal). */
static inline int ts_stop(TestServer *s) {
    kill(s->pid, SIGTERM);
    double end = ts_now() + 30;
    int st = 0;
    while (ts_now() < end) {
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        usleep(20000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    return -1;
}

/* The server's resident set in KiB (/proc/PID/status VmRSS). */
static inline long ts_rss_kib(const TestServer *s) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)s->pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
    if (f) fclose(f);
    return kib;
}

#endif
