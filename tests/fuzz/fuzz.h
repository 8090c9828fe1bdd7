/* tests/fuzz/fuzz.h: what the fuzz targets in tests/fuzz/fuzz_*.c share.
 *
 * Each target file defines `static int NAME_one(const uint8_t *data, size_t size)` (returns 1 when
 * the parser accepted the input, 0 when it rejected it cleanly; a broken invariant aborts) and
 * optionally `static int NAME_init(void)`, then ends with FUZZ_TARGET(NAME_init, NAME_one).
 *   - Built with clang -fsanitize=fuzzer (make fuzz), FUZZ_TARGET defines libFuzzer's entry points.
 *   - Included by tests/test_regressions.c with FUZZ_REGRESSION defined, it defines nothing, and
 *     that cmocka test feeds every file of tests/fuzz/corpus/NAME and tests/fuzz/regressions/NAME
 *     through NAME_one in the normal `make test` (and under `make sanitize`).
 * So every file a target owns must be prefixed with its name: all targets share one translation
 * unit in the regression test.
 */
#ifndef GUARD_FUZZ_H
#define GUARD_FUZZ_H

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "import/import.h"
#include "util.h"

/* An invariant of the code under test failed: print and abort (libFuzzer saves the input). */
#define FUZZ_CHECK(cond, ...)                                                     \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "FUZZ INVARIANT FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                         \
            fprintf(stderr, "\n");                                                \
            abort();                                                              \
        }                                                                         \
    } while (0)

/* Known bugs: inputs that trigger a reported, not yet fixed bug in code this project's hardening
 * work may not edit are skipped by the target's *_known_bug() predicate (so fuzzing can go on
 * finding other bugs), and one such input is kept in tests/fuzz/pending/NAME/, which
 * test_regressions runs with this flag cleared in a child process and reports as still open or
 * fixed (name it leak-* or ub-* when only a sanitizer notices it). When the bug is fixed: delete
 * the predicate, move the input to tests/fuzz/regressions/NAME/. */
static int fuzz_skip_known_bugs __attribute__((unused)) = 0; /* no open bugs: every reported one is fixed */

/* Every error message must be one non-empty, NUL-terminated line shorter than ERRLEN. */
static inline void fuzz_check_err(const char *err) {
    size_t n = strnlen(err, ERRLEN);
    FUZZ_CHECK(n > 0 && n < ERRLEN, "error message empty or unterminated");
    FUZZ_CHECK(memchr(err, '\n', n) == NULL, "error message has a newline: %s", err);
}

/* Decode every row of an accepted tensor while *budget (floats, shared by the input's tensors)
 * lasts: the values may be anything, but decoding must stay in bounds, and a refusal must be
 * a proper message. */
static inline void fuzz_decode_rows(const SrcTensor *t, uint64_t *budget) {
    char err[ERRLEN];
    uint64_t rows = src_rows(t), c1 = src_cols(t) + 1; /* zero columns still decode (a row of nothing) */
    if (rows == 0 || c1 > *budget || rows > *budget / c1) return;
    *budget -= rows * c1;
    float *row = malloc((size_t)c1 * sizeof *row);
    FUZZ_CHECK(row, "oom");
    for (uint64_t r = 0; r < rows; r++)
        if (src_row_f32(t, r, row, err)) {
            fuzz_check_err(err);
            break;
        }
    free(row);
}

#ifdef FUZZ_REGRESSION
#define FUZZ_TARGET(init, one)
#else
#define FUZZ_TARGET(init, one)                                                        \
    int LLVMFuzzerInitialize(int *argc, char ***argv);                                \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                     \
    int LLVMFuzzerInitialize(int *argc, char ***argv) {                               \
        (void)argc, (void)argv;                                                       \
        int (*f)(void) = init;                                                        \
        if (f && f() != 0) { fprintf(stderr, "fuzz target initialisation failed\n"); exit(1); } \
        return 0;                                                                     \
    }                                                                                 \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {                    \
        one(data, size);                                                              \
        return 0;                                                                     \
    }
#endif

/* ==== Files from memory ==== */

/* A file whose contents are replaced per input: a memfd (no disk traffic), named by its
 * /proc/self/fd path so path-based loaders (map_file) read it like any regular file. */
typedef struct {
    int fd;
    char path[64];
} FuzzFile;

static inline int fuzz_file_open(FuzzFile *f, const char *name) {
    f->fd = memfd_create(name, 0);
    if (f->fd < 0) return -1;
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
    return 0;
}

static inline int fuzz_file_set(FuzzFile *f, const void *p, size_t n) {
    if (ftruncate(f->fd, 0) != 0) return -1;
    size_t done = 0;
    while (done < n) {
        ssize_t k = pwrite(f->fd, (const char *)p + done, n - done, (off_t)done);
        if (k <= 0) return -1;
        done += (size_t)k;
    }
    return 0;
}

static char fuzz_dir_path[256];
static pid_t fuzz_dir_owner;

/* Remove the scratch directory and its files at exit (only in the process that made it). */
static void fuzz_dir_cleanup(void) {
    if (!fuzz_dir_path[0] || getpid() != fuzz_dir_owner) return;
    DIR *d = opendir(fuzz_dir_path);
    if (d) {
        struct dirent *e;
        char path[600];
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') snprintf(path, sizeof path, "%s/%s", fuzz_dir_path, e->d_name), unlink(path);
        closedir(d);
    }
    rmdir(fuzz_dir_path);
}

/* A scratch directory for loaders that read a whole folder (Hugging Face checkpoints):
 * in /dev/shm when it exists (RAM), else $TMPDIR or /tmp; removed at exit. */
static inline const char *fuzz_dir(void) {
    char *dir = fuzz_dir_path;
    if (!dir[0]) {
        struct stat st;
        const char *t = getenv("TMPDIR");
        const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : t && *t ? t : "/tmp";
        snprintf(dir, sizeof fuzz_dir_path, "%s/guardfuzz.XXXXXX", base);
        if (!mkdtemp(dir)) {
            fprintf(stderr, "fuzz: mkdtemp in %s failed: %s\n", base, strerror(errno));
            abort();
        }
        fuzz_dir_owner = getpid();
        atexit(fuzz_dir_cleanup);
    }
    return dir;
}

/* Write (or, with p == NULL, remove) dir/name. */
static inline void fuzz_put_file(const char *dir, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!p) {
        unlink(path);
        return;
    }
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL, "cannot create %s", path);
    FUZZ_CHECK(n == 0 || fwrite(p, 1, n, f) == n, "cannot write %s", path);
    fclose(f);
}

/* ==== Splitting one input into several files ==== */

/* Parts of data separated by FUZZ_SEP (a line of its own, easy for the fuzzer to copy between
 * inputs). At most max parts; the last part keeps any further separators. */
#define FUZZ_SEP "\n--8<--\n"
typedef struct {
    const uint8_t *p;
    size_t n;
} FuzzPart;

static inline int fuzz_split(const uint8_t *data, size_t size, FuzzPart *parts, int max) {
    int k = 0;
    size_t sl = strlen(FUZZ_SEP);
    while (k < max - 1) {
        const uint8_t *s = size >= sl ? memmem(data, size, FUZZ_SEP, sl) : NULL;
        if (!s) break;
        parts[k].p = data;
        parts[k].n = (size_t)(s - data);
        k++;
        size -= (size_t)(s - data) + sl;
        data = s + sl;
    }
    parts[k].p = data;
    parts[k].n = size;
    return k + 1;
}

/* ==== Checksum repair ====
 * Every binary section carries a CRC-32, so random mutations almost always stop at the checksum.
 * Targets run each input twice: as is (the checksum check itself), and with the checksums
 * recomputed, so the fuzzer reaches the structural checks behind them. */

/* Store crc32 of p[0..n) with bytes [at, at+4) taken as zero, at p + at. */
static inline void fuzz_fix_crc(uint8_t *p, size_t n, size_t at) {
    if (at + 4 > n) return;
    static const uint8_t zero[4];
    uint32_t c = crc32_update(0, p, at);
    c = crc32_update(c, zero, 4);
    c = crc32_update(c, p + at + 4, n - at - 4);
    for (int k = 0; k < 4; k++) p[at + k] = (uint8_t)(c >> 8 * k);
}

/* The tokenizer section (tokenizer.c): CRC of the whole section at offset 36. */
static inline void fuzz_fix_tok_crc(uint8_t *p, size_t n) {
    if (n >= 48 && memcmp(p, "GUARDTOK", 8) == 0) fuzz_fix_crc(p, n, 36);
}

/* The prompt section (template.c): CRC of everything before its last 4 bytes. */
static inline void fuzz_fix_prompt_crc(uint8_t *p, size_t n) {
    if (n < 12 || memcmp(p, "LGPROMPT", 8) != 0) return;
    uint32_t c = crc32_update(0, p, n - 4);
    for (int k = 0; k < 4; k++) p[n - 4 + k] = (uint8_t)(c >> 8 * k);
}

/* guard.bin (FORMAT.md): each section's own checksum, then the data checksum and the header
 * checksum over [0, data_offset). Only fields inside the buffer are touched. */
static inline void fuzz_fix_guardbin(uint8_t *p, size_t n) {
    if (n < 256) return;
    uint64_t data_off = ld_u64(p + 32);
    uint32_t n_sec = ld_u32(p + 44);
    for (uint32_t i = 0; i < n_sec && i < 64; i++) {
        uint64_t e = 256 + 24ull * i;
        if (e + 24 > n) break;
        uint32_t kind = ld_u32(p + e);
        uint64_t off = ld_u64(p + e + 8), size = ld_u64(p + e + 16);
        if (off > n || size > n - off) continue;
        if (kind == 1) fuzz_fix_tok_crc(p + off, (size_t)size);
        if (kind == 2) fuzz_fix_prompt_crc(p + off, (size_t)size);
    }
    if (data_off <= n && data_off >= 56) {
        uint32_t c = crc32_update(0, p + data_off, n - data_off);
        for (int k = 0; k < 4; k++) p[52 + k] = (uint8_t)(c >> 8 * k);
        fuzz_fix_crc(p, (size_t)data_off, 48);
    }
}

/* A malloc'd copy of data (the caller mutates it). */
static inline uint8_t *fuzz_dup(const uint8_t *data, size_t size) {
    uint8_t *c = malloc(size ? size : 1);
    FUZZ_CHECK(c != NULL, "out of memory");
    if (size) memcpy(c, data, size);
    return c;
}

/* ==== UTF-8 (an independent statement of the rules the tokenizer must follow) ==== */

/* Unicode Table 3-7: a lead byte's sequence length and the range of its second byte. */
typedef struct {
    uint8_t lo0, hi0, lo1, hi1;
    size_t len;
} FuzzUtf8Row;
static const FuzzUtf8Row fuzz_utf8_rows[] = {
    { 0x00, 0x7F, 0, 0, 1 },       { 0xC2, 0xDF, 0x80, 0xBF, 2 }, { 0xE0, 0xE0, 0xA0, 0xBF, 3 },
    { 0xE1, 0xEC, 0x80, 0xBF, 3 }, { 0xED, 0xED, 0x80, 0x9F, 3 }, { 0xEE, 0xEF, 0x80, 0xBF, 3 },
    { 0xF0, 0xF0, 0x90, 0xBF, 4 }, { 0xF1, 0xF3, 0x80, 0xBF, 4 }, { 0xF4, 0xF4, 0x80, 0x8F, 4 },
};

static inline const FuzzUtf8Row *fuzz_utf8_row(uint8_t lead) {
    for (size_t r = 0; r < sizeof fuzz_utf8_rows / sizeof fuzz_utf8_rows[0]; r++)
        if (lead >= fuzz_utf8_rows[r].lo0 && lead <= fuzz_utf8_rows[r].hi0) return &fuzz_utf8_rows[r];
    return NULL;
}

/* How many bytes of s[0..n) (at least 1) follow the pattern of the sequence s[0] starts. */
static inline size_t fuzz_utf8_prefix(const uint8_t *s, size_t n) {
    const FuzzUtf8Row *r = fuzz_utf8_row(s[0]);
    if (!r) return 1;
    size_t k = 1;
    while (k < r->len && k < n && s[k] >= (k == 1 ? r->lo1 : 0x80) && s[k] <= (k == 1 ? r->hi1 : 0xBF)) k++;
    return k;
}

/* Length of the well-formed sequence at s[0..n), or 0. */
static inline size_t fuzz_utf8_len(const uint8_t *s, size_t n) {
    const FuzzUtf8Row *r = fuzz_utf8_row(s[0]);
    return r && fuzz_utf8_prefix(s, n) == r->len ? r->len : 0;
}

static inline int fuzz_utf8_valid(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t k = fuzz_utf8_len(s + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

/* Python's bytes.decode('utf-8', errors='replace') re-encoded: each maximal ill-formed subpart
 * (the longest prefix of a well-formed sequence, at least one byte) becomes U+FFFD. Appends to out. */
static inline void fuzz_utf8_replace(const uint8_t *s, size_t n, Buf *out) {
    for (size_t i = 0; i < n;) {
        size_t k = fuzz_utf8_len(s + i, n - i);
        if (k) {
            buf_put(out, s + i, k);
            i += k;
        } else {
            buf_put(out, "\xEF\xBF\xBD", 3);
            i += fuzz_utf8_prefix(s + i, n - i);
        }
    }
}

#endif
