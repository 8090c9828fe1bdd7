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
    uint64_t dev, ino;   /* map_file: the file that was mapped (fstat of the opened file) */
    int64_t mtime_ns;
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

/* Output written to a temporary "<path>.tmp.XXXXXX" (mkstemp: O_CREAT|O_EXCL in the target's own
 * directory, so a planted file or link there is never followed) and renamed over path only by
 * afile_commit after fflush and fsync, so a failed run never leaves a partial file behind. */
typedef struct {
    void *fp;    /* FILE* */
    char *tmp;   /* owned */
    char *path;  /* owned */
    int failed;  /* sticky write error */
} AtomicFile;
int afile_open(AtomicFile *a, const char *path, char *err);  /* mode 0666 minus the umask */
int afile_create(AtomicFile *a, const char *path, unsigned mode, char *err); /* e.g. 0600 for state files */
void afile_write(AtomicFile *a, const void *p, size_t n);
uint64_t afile_tell(const AtomicFile *a);
int afile_commit(AtomicFile *a, char *err); /* flush, fsync, rename; aborts on failure */
void afile_abort(AtomicFile *a);           /* close and unlink the temp file */

/* ---- state files (the prefix cache and verification stamps: README "Failure behaviour") ----
 * A state file is trusted only if no other local user can have written it. state_open opens it
 * with O_NONBLOCK|O_NOFOLLOW (a FIFO or device at the path cannot stall the run, a planted
 * link is not followed) and then, on the opened file, requires a regular file owned by this
 * user and writable by nobody else. Returns 0 (fd, size set), 1 if there is no file, -1 if
 * refused (why in err). */
typedef struct {
    int fd;
    uint64_t size;
} StateFile;
int state_open(StateFile *f, const char *path, char *err);
void state_close(StateFile *f);
int state_pread(const StateFile *f, uint64_t off, void *p, size_t n); /* exactly n bytes or -1 */
int state_map(const StateFile *f, MappedFile *m, char *err);         /* unmap_file releases it */
void state_touch(const StateFile *f);                                /* mtime = now (LRU order) */
/* A directory only this user can write to: with create, made (with missing parents) mode 0700;
 * refused if not a directory, not owned by the user, or writable by group or others. */
int state_dir(const char *dir, int create, char *err);
/* Delete the least recently modified of this user's regular files named *suffix in dir, other
 * than keep, until their total size is at most max_bytes. */
void state_evict(const char *dir, const char *suffix, uint64_t max_bytes, const char *keep);

/* Is the existing file at path also `tree`, or an entry of the directory tree or of a directory
 * directly inside it (say original/)? Compared by device and inode, after following links, so
 * no other name for the same file gets past. 1 with the matching name in which, else 0. */
int same_file_under(const char *path, const char *tree, char *which, size_t n);
/* Is the existing file at path the one m maps (device and inode)? */
int same_file_as(const char *path, const MappedFile *m);

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
