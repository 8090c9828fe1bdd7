/* util.c: checked file, checksum and number-format helpers (see util.h for the contracts).
 * This is the only file that touches mmap/open/rename/mkstemp, so a Windows port replaces one file. */
#define _POSIX_C_SOURCE 200809L
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int errf(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, ERRLEN, fmt, ap);
        va_end(ap);
        /* Messages quote names and values from hostile files; keep every message one line
         * (and free of terminal escapes) here, once, rather than at each call site. */
        for (char *p = err; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7F) *p = '?';
    }
    return -1;
}

/* ==== files ==== */

int map_file(MappedFile *m, const char *path, char *err) {
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return errf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return errf(err, "%s: not a regular file", path);
    }
    m->size = (uint64_t)st.st_size;
    m->dev = (uint64_t)st.st_dev;
    m->ino = (uint64_t)st.st_ino;
    m->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (m->size > 0) {
        void *p = mmap(NULL, (size_t)m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return errf(err, "%s: mmap failed: %s", path, strerror(errno));
        }
        m->data = p;
    }
    close(fd);
    return 0;
}

void unmap_file(MappedFile *m) {
    if (m->data) munmap((void *)m->data, (size_t)m->size);
    m->data = NULL;
    m->size = 0;
}

void map_drop(const MappedFile *m, const void *p, uint64_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo = (uintptr_t)p, base = (uintptr_t)m->data;
    if (!m->data || lo < base || n > m->size || lo - base > m->size - n) return;
    const uintptr_t a = (lo + page - 1) / page * page, b = (lo + (uintptr_t)n) / page * page;
    if (b > a) madvise((void *)a, (size_t)(b - a), MADV_DONTNEED);
}

#define BIG_ALIGN ((size_t)2 << 20)

void *big_alloc(size_t n) {
    if (n == 0 || n > SIZE_MAX - 2 * BIG_ALIGN) return NULL;
    const size_t len = (n + BIG_ALIGN - 1) / BIG_ALIGN * BIG_ALIGN;
    uint8_t *raw = mmap(NULL, len + BIG_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uint8_t *p = (uint8_t *)(((uintptr_t)raw + BIG_ALIGN - 1) / BIG_ALIGN * BIG_ALIGN);
    if (p > raw) munmap(raw, (size_t)(p - raw));
    if (p + len < raw + len + BIG_ALIGN) munmap(p + len, (size_t)(raw + len + BIG_ALIGN - (p + len)));
#ifdef MADV_HUGEPAGE
    madvise(p, len, MADV_HUGEPAGE); /* advice only: without THP the pages are just small */
#endif
    return p;
}

uint64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    if (f) fclose(f);
    if (kb) return (uint64_t)kb * 1024;
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size / 2 : 0;
}

void big_free(void *p, size_t n) {
    if (p) munmap(p, (n + BIG_ALIGN - 1) / BIG_ALIGN * BIG_ALIGN);
}

int read_text_file(const char *path, uint64_t max, char **buf, uint64_t *len, char *err) {
    *buf = NULL;
    *len = 0;
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) return errf(err, "%s: cannot open: %s", path, strerror(errno));
    uint64_t cap = 1 << 16, n = 0;
    char *p = malloc(cap + 1);
    if (!p) goto oom;
    for (;;) {
        if (n == cap) {
            if (cap >= max + 1) break;
            cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *q = realloc(p, cap + 1);
            if (!q) goto oom;
            p = q;
        }
        size_t got = fread(p + n, 1, (size_t)(cap - n), f);
        n += got;
        if (got == 0) break;
    }
    int rerr = ferror(f);
    if (f != stdin) fclose(f);
    if (rerr) {
        free(p);
        return errf(err, "%s: read error", path);
    }
    if (n > max) {
        free(p);
        return errf(err, "%s: file too large (limit %llu bytes)", path, (unsigned long long)max);
    }
    p[n] = 0;
    *buf = p;
    *len = n;
    return 0;
oom:
    free(p);
    if (f != stdin) fclose(f);
    return errf(err, "%s: out of memory", path);
}

int afile_create(AtomicFile *a, const char *path, unsigned mode, char *err) {
    memset(a, 0, sizeof *a);
    size_t n = strlen(path) + 16;
    a->tmp = malloc(n);
    a->path = strdup(path);
    if (!a->tmp || !a->path) {
        afile_abort(a);
        return errf(err, "%s: out of memory", path);
    }
    /* rename replaces whatever node is at path: a device, FIFO or socket, or a symbolic link such
     * as /dev/stdout (-> /proc/self/fd/1), which as root would be destroyed for every process */
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        afile_abort(a);
        return errf(err, "%s: not a regular file (%s); write to pipes and devices through the shell instead", path,
                    S_ISLNK(st.st_mode) ? "a symbolic link" : "a device, FIFO or socket");
    }
    /* mkstemp: a fresh name in the target's own directory (so rename is atomic), created with
     * O_CREAT|O_EXCL, so a planted file or symbolic link at that name is never opened. */
    snprintf(a->tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(a->tmp);
    if (fd < 0) {
        int e = errno;
        free(a->tmp);
        a->tmp = NULL;
        afile_abort(a);
        return errf(err, "%s: cannot create: %s", path, strerror(e));
    }
    mode_t mask = umask(0); /* mkstemp makes 0600; outputs get the usual mode minus the umask */
    umask(mask);
    if (fchmod(fd, (mode_t)mode & ~mask) != 0 || !(a->fp = fdopen(fd, "wb"))) {
        int e = errno;
        close(fd);
        afile_abort(a);
        return errf(err, "%s: cannot create: %s", path, strerror(e));
    }
    return 0;
}

int afile_open(AtomicFile *a, const char *path, char *err) { return afile_create(a, path, 0666, err); }

void afile_write(AtomicFile *a, const void *p, size_t n) {
    if (a->failed || n == 0) return;
    if (fwrite(p, 1, n, (FILE *)a->fp) != n) a->failed = 1;
}

uint64_t afile_tell(const AtomicFile *a) {
    long long t = ftello((FILE *)a->fp);
    return t < 0 ? 0 : (uint64_t)t;
}

int afile_commit(AtomicFile *a, char *err) {
    FILE *f = a->fp;
    int bad = a->failed || fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    a->fp = NULL;
    if (bad || rename(a->tmp, a->path) != 0) {
        errf(err, "%s: write failed: %s", a->path, strerror(errno ? errno : EIO));
        afile_abort(a);
        return -1;
    }
    free(a->tmp);
    free(a->path);
    memset(a, 0, sizeof *a);
    return 0;
}

void afile_abort(AtomicFile *a) {
    if (a->fp) fclose((FILE *)a->fp);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    memset(a, 0, sizeof *a);
}

/* ==== state files ==== */

int state_open(StateFile *f, const char *path, char *err) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    /* never blocks on a FIFO or device, never follows a planted link; the checks use the opened file */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT) return 1;
        return errf(err, "%s: %s", path, errno == ELOOP ? "is a symbolic link" : strerror(errno));
    }
    struct stat st;
    const char *why = fstat(fd, &st) != 0 ? "cannot stat" : !S_ISREG(st.st_mode) ? "not a regular file"
                    : st.st_uid != geteuid() ? "not owned by you" : (st.st_mode & 022) ? "writable by group or others" : NULL;
    if (why) {
        close(fd);
        return errf(err, "%s: %s", path, why);
    }
    f->fd = fd;
    f->size = (uint64_t)st.st_size;
    return 0;
}

void state_close(StateFile *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
}

int state_pread(const StateFile *f, uint64_t off, void *p, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t k = pread(f->fd, (char *)p + done, n - done, (off_t)(off + done));
        if (k <= 0) return -1;
        done += (size_t)k;
    }
    return 0;
}

int state_map(const StateFile *f, MappedFile *m, char *err) {
    memset(m, 0, sizeof *m);
    if (f->size == 0) return 0;
    void *p = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, f->fd, 0);
    if (p == MAP_FAILED) return errf(err, "mmap failed: %s", strerror(errno));
    m->data = p;
    m->size = f->size;
    return 0;
}

void state_touch(const StateFile *f) { (void)futimens(f->fd, NULL); }

int state_dir(const char *dir, int create, char *err) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path) return errf(err, "%.200s...: path too long", dir);
    for (char *p = path + 1; create && *p; p++) /* mkdir -p, each new directory 0700 */
        if (*p == '/') {
            *p = 0;
            mkdir(path, 0700);
            *p = '/';
        }
    if (create) mkdir(path, 0700);
    struct stat st;
    if (lstat(path, &st) != 0) return errf(err, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return errf(err, "%s: not a directory", path);
    if (st.st_uid != geteuid()) return errf(err, "%s: directory not owned by you", path);
    if (st.st_mode & 022) return errf(err, "%s: directory writable by group or others", path);
    return 0;
}

typedef struct {
    char name[256];
    uint64_t size;
    int64_t mtime_ns;
} Aged;

static int by_age(const void *a, const void *b) {
    int64_t x = ((const Aged *)a)->mtime_ns, y = ((const Aged *)b)->mtime_ns;
    return x < y ? -1 : x > y;
}

void state_evict(const char *dir, const char *suffix, uint64_t max_bytes, const char *keep) {
    DIR *d = opendir(dir);
    if (!d) return;
    Aged *v = NULL;
    size_t n = 0, cap = 0, sl = strlen(suffix);
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        struct stat st;
        if (nl < sl || nl >= sizeof v->name || strcmp(e->d_name + nl - sl, suffix) != 0) continue;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) continue;
        if (n == cap) {
            Aged *q = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof *q);
            if (!q) break;
            v = q;
        }
        snprintf(v[n].name, sizeof v[n].name, "%s", e->d_name);
        v[n].size = (uint64_t)st.st_size;
        v[n].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        total += v[n++].size;
    }
    if (n) qsort(v, n, sizeof *v, by_age);
    const char *kb = keep ? strrchr(keep, '/') : NULL;
    kb = kb ? kb + 1 : keep;
    for (size_t i = 0; i < n && total > max_bytes; i++) {
        if (kb && strcmp(v[i].name, kb) == 0) continue;
        if (unlinkat(dirfd(d), v[i].name, 0) == 0) total -= v[i].size;
    }
    free(v);
    closedir(d);
}

static int scan_same(const char *dir, const struct stat *out, int depth, char *which, size_t n) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[4200];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &st) != 0) continue;
        if (st.st_dev == out->st_dev && st.st_ino == out->st_ino) found = 1, snprintf(which, n, "%s", p);
        else if (S_ISDIR(st.st_mode) && depth > 0) found = scan_same(p, out, depth - 1, which, n);
    }
    closedir(d);
    return found;
}

int same_file_under(const char *path, const char *tree, char *which, size_t n) {
    struct stat out, st;
    if (stat(path, &out) != 0 || stat(tree, &st) != 0) return 0;
    if (st.st_dev == out.st_dev && st.st_ino == out.st_ino) {
        snprintf(which, n, "%s", tree);
        return 1;
    }
    return S_ISDIR(st.st_mode) && scan_same(tree, &out, 1, which, n);
}

int same_file_as(const char *path, const MappedFile *m) {
    struct stat out;
    return m->data && stat(path, &out) == 0 && (uint64_t)out.st_dev == m->dev && (uint64_t)out.st_ino == m->ino;
}

/* ==== checksums ==== */

uint32_t crc32_update(uint32_t crc, const void *p, size_t n) {
    static uint32_t table[8][256];
    static int ready;
    if (!ready) { /* slicing-by-8 tables; benign race: every thread writes identical values */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
            for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
        ready = 1;
    }
    const uint8_t *b = p;
    crc = ~crc;
    while (n >= 8) {
        uint32_t lo = crc ^ ld_u32(b), hi = ld_u32(b + 4);
        crc = table[7][lo & 0xFF] ^ table[6][(lo >> 8) & 0xFF] ^ table[5][(lo >> 16) & 0xFF] ^ table[4][lo >> 24] ^
              table[3][hi & 0xFF] ^ table[2][(hi >> 8) & 0xFF] ^ table[1][(hi >> 16) & 0xFF] ^ table[0][hi >> 24];
        b += 8;
        n -= 8;
    }
    while (n--) crc = table[0][(crc ^ *b++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ==== number formats ==== */

uint16_t f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = { .f = f };
    if ((v.u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
    v.u += 0x7FFFu + ((v.u >> 16) & 1);
    return (uint16_t)(v.u >> 16);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, u;
    if (exp == 0x1F) u = sign | 0x7F800000u | man << 13;
    else if (exp != 0) u = sign | (exp + 112) << 23 | man << 13;
    else if (man == 0) u = sign;
    else { /* subnormal: value = man * 2^-24, exact in f32 */
        union { float f; uint32_t u; } v = { .f = (float)man * 5.9604644775390625e-8f };
        u = sign | v.u;
    }
    union { uint32_t u; float f; } r = { .u = u };
    return r.f;
}

uint16_t f32_to_f16(float f) {
    union { float f; uint32_t u; } v = { .f = f };
    uint16_t sign = (uint16_t)((v.u >> 16) & 0x8000);
    float a = fabsf(f);
    if (a != a) return sign | 0x7E00;
    if (a >= 65520.0f) return sign | 0x7C00; /* rounds to inf */
    if (a < 6.103515625e-05f) {              /* subnormal range: quantum 2^-24 */
        return sign | (uint16_t)lrintf(a * 16777216.0f);
    }
    uint32_t u = v.u & 0x7FFFFFFFu;
    uint32_t exp = (u >> 23) - 112, man = u & 0x7FFFFF;
    uint32_t h = exp << 10 | man >> 13, rem = man & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* carry into exp is correct rounding */
    return sign | (uint16_t)h;
}

/* ==== readers and buffers ==== */

const uint8_t *rd_bytes(Reader *r, uint64_t n) {
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}
uint32_t rd_u32(Reader *r) { const uint8_t *p = rd_bytes(r, 4); return p ? ld_u32(p) : 0; }
uint64_t rd_u64(Reader *r) { const uint8_t *p = rd_bytes(r, 8); return p ? ld_u64(p) : 0; }
float rd_f32(Reader *r) { const uint8_t *p = rd_bytes(r, 4); return p ? ld_f32(p) : 0.0f; }

void buf_put(Buf *b, const void *p, uint64_t n) {
    if (b->oom || n == 0) return;
    if (n > b->cap - b->len) {
        uint64_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) cap *= 2;
        uint8_t *q = realloc(b->p, (size_t)cap);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, (size_t)n);
    b->len += n;
}
void buf_u32(Buf *b, uint32_t v) { uint8_t t[4] = { v, v >> 8, v >> 16, v >> 24 }; buf_put(b, t, 4); }
void buf_u64(Buf *b, uint64_t v) { buf_u32(b, (uint32_t)v); buf_u32(b, (uint32_t)(v >> 32)); }
void buf_f32(Buf *b, float v) { union { float f; uint32_t u; } x = { .f = v }; buf_u32(b, x.u); }
void buf_free(Buf *b) { free(b->p); memset(b, 0, sizeof *b); }

double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *shown_text(const char *s, size_t n, char out[48]) {
    size_t k = 0;
    for (size_t i = 0; i < n && k < 40; i++) out[k++] = s[i] >= 0x20 && s[i] < 0x7F ? s[i] : '?';
    if (n > 40) memcpy(out + k, "...", 3), k += 3;
    out[k] = 0;
    return out;
}
