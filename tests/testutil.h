/* tests/testutil.h: helpers shared by the cmocka tests.
 * References live in $GUARD_SHARED (default ../shared, set by the Makefile); a test that needs
 * them and cannot find them prints why and calls cmocka's skip(), or fails when
 * GUARD_REQUIRE_SHARED=1 (set by .ci/run: in CI a missing reference is an error, not a pass). */
#ifndef GUARD_TESTUTIL_H
#define GUARD_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* Absolute, so paths stay valid inside temp dirs and symlinks the tests make. */
static inline const char *shared_dir(void) {
    static char abs[4096];
    const char *s = getenv("GUARD_SHARED");
    s = s && *s ? s : "../shared";
    if (!abs[0] && !realpath(s, abs)) snprintf(abs, sizeof abs, "%s", s);
    return abs;
}

/* GUARD_REQUIRE_SHARED set to anything but "" or "0". */
static inline int shared_required(void) {
    const char *r = getenv("GUARD_REQUIRE_SHARED");
    return r && *r && strcmp(r, "0") != 0;
}

/* Path under $GUARD_SHARED in a static rotating buffer; skips the test if it does not exist
 * (fails it under GUARD_REQUIRE_SHARED). */
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
        if (shared_required()) fail_msg("reference %s not found and GUARD_REQUIRE_SHARED is set", b);
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
        /* ./run's prefix cache files go here, not to the shared ~/.cache/llama-guard, where
         * another checkout's build (another guard.bin version) leaves same-named stale files */
        char xdg[300];
        snprintf(xdg, sizeof xdg, "%s/xdg-cache", dir);
        if (mkdir(xdg, 0700) != 0 || setenv("XDG_CACHE_HOME", xdg, 1) != 0) fail_msg("cannot make %s", xdg);
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

/* Whitespace/comma-separated integers in a file (token id lists) into a malloc'd array. */
static inline int32_t *read_ids(const char *path, int64_t *n) {
    size_t len;
    char *s = slurp(path, &len), *p = s;
    int32_t *ids = malloc((len / 2 + 1) * sizeof *ids);
    assert_non_null(ids);
    *n = 0;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) { p++; continue; }
        ids[(*n)++] = (int32_t)v;
        p = end;
    }
    free(s);
    return ids;
}

/* Raw little-endian float32 file. */
static inline float *read_f32(const char *path, size_t *count) {
    size_t len;
    float *f = (float *)slurp(path, &len);
    *count = len / sizeof(float);
    return f;
}

/* max |a[i] - b[i]| over n values (a NaN anywhere makes it NaN, which fails any <= bound). */
static inline float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        m = d > m || d != d ? d : m;
    }
    return m;
}

static inline int argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return (int)b;
}

static inline int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* s as the whole contents of path. */
static inline void write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(s, f);
    assert_int_equal(fclose(f), 0);
}

/* The tiny Llama Guard 3 1B reference checkpoint (fixtures/l32) exported once per test binary,
 * with export's default dtype. */
static inline const char *l32_model(void) {
    static char path[512];
    if (!path[0]) {
        snprintf(path, sizeof path, "%s/l32.bin", test_tmpdir());
        char o[4096];
        if (run_cmd(o, sizeof o, "./export '%s' '%s'", shared_path("fixtures/l32"), path)) fail_msg("%s", o);
    }
    return path;
}

#endif
