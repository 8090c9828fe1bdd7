/* tests/testutil.h: helpers shared by the cmocka tests.
 * References live in $GUARD_SHARED (default ../shared, set by the Makefile); a test that needs
 * them and cannot find them prints why and calls cmocka's skip(). */
#ifndef GUARD_TESTUTIL_H
#define GUARD_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static inline const char *shared_dir(void) {
    const char *s = getenv("GUARD_SHARED");
    return s && *s ? s : "../shared";
}

/* Path under $GUARD_SHARED in a static rotating buffer; skips the test if it does not exist. */
static inline const char *shared_path(const char *fmt, ...) {
    static char bufs[8][1024];
    static int k;
    char *b = bufs[k++ & 7];
    int n = snprintf(b, 1024, "%s/", shared_dir());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b + n, 1024 - (size_t)n, fmt, ap);
    va_end(ap);
    struct stat st;
    if (stat(b, &st) != 0) {
        fprintf(stderr, "SKIP: reference %s not found (set GUARD_SHARED to the shared/ folder)\n", b);
        skip();
    }
    return b;
}

/* Whole file into malloc'd memory (NUL-terminated); fails the test if unreadable. */
static inline char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    p[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return p;
}

/* A fresh temporary directory per test binary (removed by the OS's tmp cleaning; tests
 * also remove what they create). */
static inline const char *test_tmpdir(void) {
    static char dir[256];
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/guardtest.XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir)) fail_msg("mkdtemp failed");
    }
    return dir;
}

/* Run a shell command; returns its exit status (or -1 if it died from a signal). Output
 * (stdout+stderr) is captured into out (NUL-terminated, truncated) when out != NULL. */
static inline int run_cmd(char *out, size_t outlen, const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[8300];
    snprintf(full, sizeof full, "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) fail_msg("popen failed");
    size_t n = 0;
    char tmp[4096];
    size_t got;
    while ((got = fread(tmp, 1, sizeof tmp, p)) > 0) {
        if (out && n + 1 < outlen) {
            size_t k = got < outlen - 1 - n ? got : outlen - 1 - n;
            memcpy(out + n, tmp, k);
            n += k;
        }
    }
    if (out) out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

#endif
