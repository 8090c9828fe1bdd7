/* util.h: checked helpers shared by the runtime, the exporter and the tests.
 *
 * Errors: every fallible function here (and in the library files model.c, tokenizer.c,
 * template.c, quant.c, json.c) returns 0 on success or -1 on failure and writes a one-line
 * message into a caller-owned `char err[ERRLEN]`. Only run.c and export.c print and exit
 * (../shared/style.md lesson 9). Sizes and offsets are uint64_t throughout (lesson 8).
 */
#ifndef GUARD_UTIL_H
#define GUARD_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define ERRLEN 512

/* printf into err (truncating) and return -1, so `return errf(err, "...")` reads naturally. */
int errf(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hostile text (argv, JSON, files) shown in a one-line error: s[0..n) as printable ASCII only
 * (others become '?'), cut to 40 bytes + "..."; written to out, which is returned. */
const char *shown_text(const char *s, size_t n, char out[48]);

/* ---- checked 64-bit arithmetic: return 0 on overflow, 1 on success ---- */
static inline int add_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_add_overflow(a, b, r); }
static inline int mul_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_mul_overflow(a, b, r); }
static inline uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* ---- files ---- */
/* A read-only view of a whole file: mmap'd when possible (data owned by the mapping). */
typedef struct {
    const uint8_t *data; /* [size] bytes, read-only; NULL when size == 0 */
    uint64_t size;
} MappedFile;
int map_file(MappedFile *m, const char *path, char *err);
void unmap_file(MappedFile *m);
/* Hand the whole pages inside [p, p + n) of the mapping back to the kernel (they are read
 * again from the file if touched later): for data that has been copied elsewhere. */
void map_drop(const MappedFile *m, const void *p, uint64_t n);

/* Large, long-lived, 64-byte-aligned buffers (prepacked weights): anonymous memory aligned to
 * 2 MiB and offered to the kernel as transparent huge pages, which makes first touch and
 * streaming cheaper (fewer faults and TLB misses). NULL when out of memory. */
void *big_alloc(size_t n);
/* Memory the system can still give without swapping (Linux MemAvailable; else half of RAM). */
uint64_t mem_available(void);
void big_free(void *p, size_t n);

/* Read a whole (small) file into a malloc'd NUL-terminated buffer; refuses files over max bytes. */
int read_text_file(const char *path, uint64_t max, char **buf, uint64_t *len, char *err);

/* Output written to "<path>.tmp.<pid>" and renamed over path only by afile_commit, so a failed
 * run never leaves a partial file behind (DEVELOPERS.md standards). */
typedef struct {
    void *fp;    /* FILE* */
    char *tmp;   /* owned */
    char *path;  /* owned */
    int failed;  /* sticky write error */
} AtomicFile;
int afile_open(AtomicFile *a, const char *path, char *err);
void afile_write(AtomicFile *a, const void *p, size_t n);
void afile_pad(AtomicFile *a, uint64_t alignment); /* zero-pad to a multiple of alignment */
uint64_t afile_tell(const AtomicFile *a);
int afile_commit(AtomicFile *a, char *err); /* flush, fsync, rename; aborts on failure */
void afile_abort(AtomicFile *a);           /* close and unlink the temp file */

/* ---- checksums ---- */
uint32_t crc32_update(uint32_t crc, const void *p, size_t n); /* zlib polynomial; start with 0 */

/* ---- number formats ---- */
static inline float bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = { .u = (uint32_t)h << 16 };
    return v.f;
}
uint16_t f32_to_bf16(float f); /* round to nearest even, NaN stays NaN */
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  /* round to nearest even, overflow to inf */

/* ---- little-endian loads from untrusted bytes (no alignment assumed) ---- */
static inline uint16_t ld_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t ld_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t ld_u64(const uint8_t *p) { return (uint64_t)ld_u32(p) | (uint64_t)ld_u32(p + 4) << 32; }
static inline float ld_f32(const uint8_t *p) {
    union { uint32_t u; float f; } v = { .u = ld_u32(p) };
    return v.f;
}

/* A bounds-checked reader over an untrusted byte range. Any read past the end sets `bad`
 * and returns zeros, so parsers check `bad` once per record instead of after every field. */
typedef struct {
    const uint8_t *p;
    uint64_t len, pos;
    int bad;
} Reader;
static inline Reader reader(const uint8_t *p, uint64_t len) { Reader r = { p, len, 0, 0 }; return r; }
const uint8_t *rd_bytes(Reader *r, uint64_t n); /* NULL (and bad) if fewer than n bytes remain */
uint32_t rd_u32(Reader *r);
uint64_t rd_u64(Reader *r);
float rd_f32(Reader *r);

/* A growable byte buffer for building file sections in memory (little-endian writers). */
typedef struct {
    uint8_t *p;
    uint64_t len, cap;
    int oom;
} Buf;
void buf_put(Buf *b, const void *p, uint64_t n);
void buf_u32(Buf *b, uint32_t v);
void buf_u64(Buf *b, uint64_t v);
void buf_f32(Buf *b, float v);
void buf_free(Buf *b);

/* Monotonic wall clock in seconds. */
double now_sec(void);

#endif
