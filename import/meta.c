/* import/meta.c: Meta's original checkpoint format, as llama-models / meta-llama download it and
 * as Hugging Face repos carry it under original/: params.json, consolidated.00.pth (torch.save
 * of the state dict) and tokenizer.model (tiktoken rank file for Llama 3, SentencePiece
 * ModelProto for Llama 2).
 *
 * consolidated.00.pth is a zip of stored (uncompressed) entries: <archive>/data.pkl, a pickle
 * describing the state dict, and <archive>/data/<key>, one raw little-endian storage per key.
 * We read the zip's central directory (zip64 included), check every entry's local header and
 * CRC, and run the pickle on a tiny VM that knows only the opcodes and callables torch.save
 * uses for a dict of tensors; anything else is refused, so no pickle can make us do more than
 * build dicts, tuples and tensor views. Meta's q/k rows pair RoPE dimensions (2i, 2i+1), the
 * same order as GGUF, so they are marked interleaved and un-permuted at export.
 *
 * Mirrors: Python's pickletools opcode table; torch/serialization.py (_save, persistent_id),
 * torch/_utils.py _rebuild_tensor_v2; PKWARE APPNOTE 4.3 (zip, zip64); llama-models
 * llama3/tokenizer.py (tiktoken ranks + 256 specials) and sentencepiece_model.proto.
 * Non-goals: model-parallel shards (consolidated.01.pth ...), compressed zip entries, legacy
 * (pre-1.6, non-zip) torch files, any pickle that is not a plain state dict.
 */
#include "import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== Zip: central directory of stored entries ==== */

typedef struct {
    const char *name; /* not NUL-terminated */
    uint32_t name_len;
    const uint8_t *data;
    uint64_t size;
} ZipEntry;

typedef struct {
    ZipEntry *e; /* [n] */
    uint64_t n;
} Zip;

#define ZIP_EOCD 0x06054b50u
#define ZIP_EOCD64 0x06064b50u
#define ZIP_LOC64 0x07064b50u
#define ZIP_CENTRAL 0x02014b50u
#define ZIP_LOCAL 0x04034b50u

/* The end-of-central-directory record: the last signature whose comment reaches the file end. */
static int64_t find_eocd(const uint8_t *p, uint64_t size) {
    if (size < 22) return -1;
    uint64_t lo = size > 22 + 65535 ? size - 22 - 65535 : 0;
    for (uint64_t i = size - 22 + 1; i-- > lo;)
        if (ld_u32(p + i) == ZIP_EOCD && i + 22 + ld_u16(p + i + 20) == size) return (int64_t)i;
    return -1;
}

/* Zip64 extended information (extra field 0x0001): the 64-bit values of the fields that are
 * 0xFFFFFFFF in the fixed header, in the order size, compressed size, local header offset. */
static int zip64_extra(const uint8_t *x, uint32_t len, uint64_t *usize, uint64_t *csize, uint64_t *off) {
    Reader r = reader(x, len);
    while (r.pos + 4 <= r.len) {
        uint32_t id = ld_u16(x + r.pos), n = ld_u16(x + r.pos + 2);
        r.pos += 4;
        const uint8_t *f = rd_bytes(&r, n);
        if (!f) return -1;
        if (id != 1) continue;
        Reader q = reader(f, n);
        if (*usize == 0xFFFFFFFFu) *usize = rd_u64(&q);
        if (*csize == 0xFFFFFFFFu) *csize = rd_u64(&q);
        if (*off == 0xFFFFFFFFu) *off = rd_u64(&q);
        return q.bad ? -1 : 0;
    }
    return *usize == 0xFFFFFFFFu || *csize == 0xFFFFFFFFu || *off == 0xFFFFFFFFu ? -1 : 0;
}

static int zip_open(Zip *z, const char *path, const uint8_t *p, uint64_t size, char *err) {
    memset(z, 0, sizeof *z);
    int64_t e = find_eocd(p, size);
    if (e < 0) return errf(err, "%s: not a zip archive (no end of central directory; a torch.save file from torch >= 1.6 is)", path);
    uint64_t eocd = (uint64_t)e, n = ld_u16(p + eocd + 10), cd_size = ld_u32(p + eocd + 12), cd_off = ld_u32(p + eocd + 16);
    uint64_t cd_limit = eocd;
    if (ld_u16(p + eocd + 4) != 0 || ld_u16(p + eocd + 6) != 0) return errf(err, "%s: multi-disk zip archives are not supported", path);
    if (n == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
        if (eocd < 20 || ld_u32(p + eocd - 20) != ZIP_LOC64) return errf(err, "%s: zip64 archive without a zip64 locator", path);
        uint64_t e64 = ld_u64(p + eocd - 12);
        if (e64 > eocd - 20 || eocd - 20 - e64 < 56 || ld_u32(p + e64) != ZIP_EOCD64) return errf(err, "%s: bad zip64 end of central directory", path);
        n = ld_u64(p + e64 + 32);
        cd_size = ld_u64(p + e64 + 40);
        cd_off = ld_u64(p + e64 + 48);
        cd_limit = e64;
    }
    if (cd_off > cd_limit || cd_size > cd_limit - cd_off) return errf(err, "%s: zip central directory lies outside the file", path);
    if (n > cd_size / 46) return errf(err, "%s: zip central directory claims %llu entries in %llu bytes", path, (unsigned long long)n, (unsigned long long)cd_size);
    z->e = calloc((size_t)n + 1, sizeof *z->e);
    if (!z->e) return errf(err, "out of memory");
    Reader r = reader(p + cd_off, cd_size);
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *h = rd_bytes(&r, 46);
        if (!h || ld_u32(h) != ZIP_CENTRAL) return errf(err, "%s: zip central directory entry %llu is malformed", path, (unsigned long long)i);
        uint32_t nl = ld_u16(h + 28), xl = ld_u16(h + 30), cl = ld_u16(h + 32);
        const uint8_t *name = rd_bytes(&r, nl), *extra = rd_bytes(&r, xl);
        if (!name || !extra || !rd_bytes(&r, cl)) return errf(err, "%s: zip central directory entry %llu runs past the directory", path, (unsigned long long)i);
        uint64_t usize = ld_u32(h + 24), csize = ld_u32(h + 20), off = ld_u32(h + 42);
        if (zip64_extra(extra, xl, &usize, &csize, &off)) return errf(err, "%s: zip entry '%.*s' has a bad zip64 field", path, (int)nl, name);
        if (ld_u16(h + 8) & 1) return errf(err, "%s: zip entry '%.*s' is encrypted", path, (int)nl, name);
        if (ld_u16(h + 10) != 0 || usize != csize)
            return errf(err, "%s: zip entry '%.*s' is compressed (torch.save stores entries uncompressed)", path, (int)nl, name);
        /* the data follows its local header and precedes the central directory */
        if (off > cd_off || cd_off - off < 30 || ld_u32(p + off) != ZIP_LOCAL) return errf(err, "%s: zip entry '%.*s' has a bad local header offset", path, (int)nl, name);
        uint64_t lnl = ld_u16(p + off + 26), lxl = ld_u16(p + off + 28), data = off + 30 + lnl + lxl;
        if (data > cd_off || usize > cd_off - data) return errf(err, "%s: zip entry '%.*s' lies outside the file", path, (int)nl, name);
        if (lnl != nl || memcmp(p + off + 30, name, nl) != 0) return errf(err, "%s: zip entry '%.*s': local and central names differ", path, (int)nl, name);
        if (crc32_update(0, p + data, (size_t)usize) != ld_u32(h + 16)) return errf(err, "%s: zip entry '%.*s' fails its CRC-32 check", path, (int)nl, name);
        for (uint64_t k = 0; k < i; k++)
            if (z->e[k].name_len == nl && memcmp(z->e[k].name, name, nl) == 0) return errf(err, "%s: zip entry '%.*s' appears twice", path, (int)nl, name);
        z->e[i] = (ZipEntry){ (const char *)name, nl, p + data, usize };
        z->n = i + 1;
    }
    return 0;
}

static const ZipEntry *zip_find(const Zip *z, const char *name, size_t n) {
    for (uint64_t i = 0; i < z->n; i++)
        if (z->e[i].name_len == n && memcmp(z->e[i].name, name, n) == 0) return &z->e[i];
    return NULL;
}

/* ==== Pickle: the subset torch.save writes for a state dict ==== */

enum { PV_MARK, PV_NONE, PV_BOOL, PV_INT, PV_STR, PV_TUPLE, PV_DICT, PV_GLOBAL, PV_STORAGE, PV_TENSOR };

/* What GLOBAL may name. Storage classes carry their element type. */
enum { G_ORDERED_DICT = 1, G_REBUILD_TENSOR, G_STORAGE };
static const struct { const char *module, *name; int what; uint32_t st, esize; } pk_globals[] = {
    { "collections", "OrderedDict", G_ORDERED_DICT, 0, 0 },
    { "torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR, 0, 0 },
    { "torch", "BFloat16Storage", G_STORAGE, ST_BF16, 2 },
    { "torch", "HalfStorage", G_STORAGE, ST_F16, 2 },
    { "torch", "FloatStorage", G_STORAGE, ST_F32, 4 },
};

typedef struct {
    uint8_t kind;      /* PV_* */
    int64_t i;         /* BOOL/INT value; GLOBAL: index into pk_globals; STORAGE: element size */
    const char *s;     /* STR bytes (into data.pkl); STORAGE: key */
    uint32_t n;        /* STR/STORAGE key length; TUPLE/TENSOR: child count */
    uint64_t first;    /* TUPLE: first child in kids[]; TENSOR: its argument tuple; STORAGE: numel */
    uint32_t st;       /* STORAGE: ST_* element encoding */
} PVal;

typedef struct {
    uint64_t dict, key, val; /* handles */
} PItem;

typedef struct {
    const char *path;
    PVal *v; uint64_t nv, cv;        /* every value ever made; handles index this */
    uint64_t *stack; uint64_t ns, cs;
    uint64_t *kids; uint64_t nk, ck;  /* tuple children */
    PItem *items; uint64_t ni, ci;   /* dict entries, in insertion order */
    uint64_t *memo; uint64_t nm;      /* UINT64_MAX = unset */
    uint64_t limit;                   /* no table may grow past this (derived from the pickle size) */
    char *err;
} Pk;

static void pk_free(Pk *k) {
    free(k->v); free(k->stack); free(k->kids); free(k->items); free(k->memo);
}

/* Grow *p (elements of size sz, count *cap) to hold need; bounded by k->limit. */
static int pk_grow(Pk *k, void **p, uint64_t *cap, uint64_t need, size_t sz) {
    if (need <= *cap) return 0;
    if (need > k->limit) return errf(k->err, "%s: data.pkl is malformed (more values than its size allows)", k->path);
    uint64_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    if (c > k->limit) c = k->limit;
    void *q = realloc(*p, (size_t)c * sz);
    if (!q) return errf(k->err, "out of memory");
    *p = q;
    *cap = c;
    return 0;
}

static int pk_new(Pk *k, PVal v, uint64_t *h) {
    if (pk_grow(k, (void **)&k->v, &k->cv, k->nv + 1, sizeof *k->v)) return -1;
    k->v[k->nv] = v;
    *h = k->nv++;
    return 0;
}

static int pk_push(Pk *k, uint64_t h) {
    if (pk_grow(k, (void **)&k->stack, &k->cs, k->ns + 1, sizeof *k->stack)) return -1;
    k->stack[k->ns++] = h;
    return 0;
}

static int pk_push_new(Pk *k, PVal v) {
    uint64_t h;
    return pk_new(k, v, &h) || pk_push(k, h);
}

/* Pop one value that is not a MARK. */
static int pk_pop(Pk *k, uint64_t *h, uint64_t at) {
    if (k->ns == 0 || k->v[k->stack[k->ns - 1]].kind == PV_MARK) return errf(k->err, "%s: data.pkl stack underflow at byte %llu", k->path, (unsigned long long)at);
    *h = k->stack[--k->ns];
    return 0;
}

/* Position of the topmost MARK on the stack. */
static int pk_mark(Pk *k, uint64_t *pos, uint64_t at) {
    for (uint64_t i = k->ns; i-- > 0;)
        if (k->v[k->stack[i]].kind == PV_MARK) {
            *pos = i;
            return 0;
        }
    return errf(k->err, "%s: data.pkl has no MARK for the opcode at byte %llu", k->path, (unsigned long long)at);
}

/* Replace stack[from..ns) by one tuple of those values. */
static int pk_tuple(Pk *k, uint64_t from) {
    uint64_t cnt = k->ns - from;
    if (pk_grow(k, (void **)&k->kids, &k->ck, k->nk + cnt + 1, sizeof *k->kids)) return -1;
    PVal t = { .kind = PV_TUPLE, .n = (uint32_t)cnt, .first = k->nk };
    memcpy(k->kids + k->nk, k->stack + from, (size_t)cnt * sizeof *k->kids);
    k->nk += cnt;
    k->ns = from;
    return pk_push_new(k, t);
}

static const PVal *pk_kid(const Pk *k, const PVal *t, uint32_t i) { return &k->v[k->kids[t->first + i]]; }

static int pk_setitem(Pk *k, uint64_t dict, uint64_t key, uint64_t val, uint64_t at) {
    if (k->v[dict].kind != PV_DICT) return errf(k->err, "%s: data.pkl sets an item on a non-dict at byte %llu", k->path, (unsigned long long)at);
    if (pk_grow(k, (void **)&k->items, &k->ci, k->ni + 1, sizeof *k->items)) return -1;
    k->items[k->ni++] = (PItem){ dict, key, val };
    return 0;
}

/* BINPERSID's id: ('storage', <storage class>, key, location, numel). */
static int pk_persistent(Pk *k, uint64_t pid, uint64_t at) {
    const PVal *t = &k->v[pid];
    if (t->kind != PV_TUPLE || t->n != 5) return errf(k->err, "%s: data.pkl has a persistent id that is not a storage record (byte %llu)", k->path, (unsigned long long)at);
    const PVal *tag = pk_kid(k, t, 0), *cls = pk_kid(k, t, 1), *key = pk_kid(k, t, 2), *loc = pk_kid(k, t, 3), *numel = pk_kid(k, t, 4);
    if (tag->kind != PV_STR || tag->n != 7 || memcmp(tag->s, "storage", 7) != 0 || cls->kind != PV_GLOBAL || pk_globals[cls->i].what != G_STORAGE ||
        key->kind != PV_STR || key->n == 0 || key->n > 64 || memchr(key->s, '/', key->n) || loc->kind != PV_STR || numel->kind != PV_INT || numel->i < 0)
        return errf(k->err, "%s: data.pkl has a malformed storage record (byte %llu)", k->path, (unsigned long long)at);
    PVal s = { .kind = PV_STORAGE, .i = pk_globals[cls->i].esize, .s = key->s, .n = key->n, .first = (uint64_t)numel->i, .st = pk_globals[cls->i].st };
    return pk_push_new(k, s);
}

/* REDUCE: OrderedDict() -> dict; _rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
 * hooks[, metadata]) -> a tensor view (checked when the state dict is read). */
static int pk_reduce(Pk *k, uint64_t fn, uint64_t args, uint64_t at) {
    const PVal *f = &k->v[fn], *a = &k->v[args];
    if (f->kind != PV_GLOBAL || a->kind != PV_TUPLE) return errf(k->err, "%s: data.pkl calls something that is not a known function (byte %llu)", k->path, (unsigned long long)at);
    int what = pk_globals[f->i].what;
    if (what == G_ORDERED_DICT && a->n == 0) return pk_push_new(k, (PVal){ .kind = PV_DICT });
    if (what == G_REBUILD_TENSOR && (a->n == 6 || a->n == 7)) return pk_push_new(k, (PVal){ .kind = PV_TENSOR, .first = args });
    return errf(k->err, "%s: data.pkl calls %s.%s with %u arguments, which a state dict does not (byte %llu)", k->path, pk_globals[f->i].module,
                pk_globals[f->i].name, a->n, (unsigned long long)at);
}

/* GLOBAL "module\nname\n": only the callables in pk_globals. */
static int pk_global(Pk *k, Reader *r, uint64_t at) {
    const char *line[2];
    size_t len[2];
    for (int i = 0; i < 2; i++) {
        const uint8_t *start = r->p + r->pos, *nl = memchr(start, '\n', (size_t)(r->len - r->pos) < 256 ? (size_t)(r->len - r->pos) : 256);
        if (!nl) return errf(k->err, "%s: data.pkl has a malformed GLOBAL at byte %llu", k->path, (unsigned long long)at);
        line[i] = (const char *)start;
        len[i] = (size_t)(nl - start);
        rd_bytes(r, len[i] + 1);
    }
    for (size_t g = 0; g < sizeof pk_globals / sizeof pk_globals[0]; g++)
        if (strlen(pk_globals[g].module) == len[0] && memcmp(pk_globals[g].module, line[0], len[0]) == 0 && strlen(pk_globals[g].name) == len[1] &&
            memcmp(pk_globals[g].name, line[1], len[1]) == 0)
            return pk_push_new(k, (PVal){ .kind = PV_GLOBAL, .i = (int64_t)g });
    return errf(k->err, "%s: data.pkl refers to %.*s.%.*s; only plain state dicts of bf16/f16/f32 tensors are supported", k->path, (int)len[0], line[0],
                (int)len[1], line[1]);
}

static int pk_memo_index(Pk *k, uint64_t idx, int set, uint64_t at) {
    if (idx >= k->limit) return errf(k->err, "%s: data.pkl memo index %llu is out of range (byte %llu)", k->path, (unsigned long long)idx, (unsigned long long)at);
    if (!set) {
        if (idx >= k->nm || k->memo[idx] == UINT64_MAX) return errf(k->err, "%s: data.pkl reads memo %llu before setting it (byte %llu)", k->path, (unsigned long long)idx, (unsigned long long)at);
        return pk_push(k, k->memo[idx]);
    }
    if (k->ns == 0) return errf(k->err, "%s: data.pkl memoizes an empty stack (byte %llu)", k->path, (unsigned long long)at);
    if (idx >= k->nm) {
        uint64_t *m = realloc(k->memo, (size_t)(idx + 1) * sizeof *m);
        if (!m) return errf(k->err, "out of memory");
        for (uint64_t i = k->nm; i <= idx; i++) m[i] = UINT64_MAX;
        k->memo = m;
        k->nm = idx + 1;
    }
    k->memo[idx] = k->stack[k->ns - 1];
    return 0;
}

/* Run data.pkl; *result is the handle of the object STOP returns. */
static int pk_run(Pk *k, const uint8_t *p, uint64_t n, uint64_t *result) {
    Reader r = reader(p, n);
    k->limit = n + 64;
    while (!r.bad) {
        uint64_t at = r.pos, a, b, c;
        const uint8_t *op = rd_bytes(&r, 1);
        if (!op) break;
        int rc = 0;
        switch (*op) {
        case 0x80: { /* PROTO */
            const uint8_t *v = rd_bytes(&r, 1);
            if (v && (*v < 2 || *v > 5)) return errf(k->err, "%s: data.pkl uses pickle protocol %u", k->path, *v);
            break;
        }
        case 0x95: rd_bytes(&r, 8); break; /* FRAME: a length hint only */
        case '}': rc = pk_push_new(k, (PVal){ .kind = PV_DICT }); break;
        case ')': rc = pk_push_new(k, (PVal){ .kind = PV_TUPLE }); break;
        case '(': rc = pk_push_new(k, (PVal){ .kind = PV_MARK }); break;
        case 'N': rc = pk_push_new(k, (PVal){ .kind = PV_NONE }); break;
        case 0x88: case 0x89: rc = pk_push_new(k, (PVal){ .kind = PV_BOOL, .i = *op == 0x88 }); break;
        case 'X': { /* BINUNICODE */
            uint32_t len = rd_u32(&r);
            const uint8_t *s = rd_bytes(&r, len);
            if (s) rc = pk_push_new(k, (PVal){ .kind = PV_STR, .s = (const char *)s, .n = len });
            break;
        }
        case 'J': { uint32_t v = rd_u32(&r); if (!r.bad) rc = pk_push_new(k, (PVal){ .kind = PV_INT, .i = (int32_t)v }); break; }
        case 'K': { const uint8_t *v = rd_bytes(&r, 1); if (v) rc = pk_push_new(k, (PVal){ .kind = PV_INT, .i = *v }); break; }
        case 'M': { const uint8_t *v = rd_bytes(&r, 2); if (v) rc = pk_push_new(k, (PVal){ .kind = PV_INT, .i = ld_u16(v) }); break; }
        case 0x8a: { /* LONG1: n-byte little-endian two's complement */
            const uint8_t *ln = rd_bytes(&r, 1), *v = ln ? rd_bytes(&r, *ln) : NULL;
            if (!v) break;
            if (*ln > 8) return errf(k->err, "%s: data.pkl has an integer wider than 64 bits (byte %llu)", k->path, (unsigned long long)at);
            uint64_t x = 0;
            for (int i = 0; i < *ln; i++) x |= (uint64_t)v[i] << (8 * i);
            if (*ln > 0 && *ln < 8 && (v[*ln - 1] & 0x80)) x |= ~0ull << (8 * *ln);
            rc = pk_push_new(k, (PVal){ .kind = PV_INT, .i = (int64_t)x });
            break;
        }
        case 'c': rc = pk_global(k, &r, at); break;
        case 'q': { const uint8_t *v = rd_bytes(&r, 1); if (v) rc = pk_memo_index(k, *v, 1, at); break; }
        case 'r': { uint32_t v = rd_u32(&r); if (!r.bad) rc = pk_memo_index(k, v, 1, at); break; }
        case 'h': { const uint8_t *v = rd_bytes(&r, 1); if (v) rc = pk_memo_index(k, *v, 0, at); break; }
        case 'j': { uint32_t v = rd_u32(&r); if (!r.bad) rc = pk_memo_index(k, v, 0, at); break; }
        case 't': rc = pk_mark(k, &a, at) || pk_tuple(k, a + 1); if (!rc) { k->stack[a] = k->stack[a + 1]; k->ns = a + 1; } break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
            uint64_t cnt = (uint64_t)(*op - 0x84);
            for (uint64_t i = 0; i < cnt; i++)
                if (k->ns < cnt || k->v[k->stack[k->ns - 1 - i]].kind == PV_MARK) return errf(k->err, "%s: data.pkl stack underflow at byte %llu", k->path, (unsigned long long)at);
            rc = pk_tuple(k, k->ns - cnt);
            break;
        }
        case 'Q': rc = pk_pop(k, &a, at) || pk_persistent(k, a, at); break; /* BINPERSID */
        case 'R': rc = pk_pop(k, &b, at) || pk_pop(k, &a, at) || pk_reduce(k, a, b, at); break;
        case 'b': /* BUILD: only an OrderedDict's attributes (torch's _metadata), which we do not need */
            rc = pk_pop(k, &b, at);
            if (!rc && (k->ns == 0 || k->v[k->stack[k->ns - 1]].kind != PV_DICT))
                rc = errf(k->err, "%s: data.pkl BUILDs something that is not a dict (byte %llu)", k->path, (unsigned long long)at);
            break;
        case 's': /* SETITEM */
            rc = pk_pop(k, &c, at) || pk_pop(k, &b, at);
            if (!rc) rc = k->ns ? pk_setitem(k, k->stack[k->ns - 1], b, c, at) : errf(k->err, "%s: data.pkl stack underflow at byte %llu", k->path, (unsigned long long)at);
            break;
        case 'u': /* SETITEMS */
            rc = pk_mark(k, &a, at);
            if (!rc && (a == 0 || (k->ns - a - 1) % 2)) rc = errf(k->err, "%s: data.pkl SETITEMS without a dict or with an odd count (byte %llu)", k->path, (unsigned long long)at);
            for (uint64_t i = a + 1; !rc && i < k->ns; i += 2) rc = pk_setitem(k, k->stack[a - 1], k->stack[i], k->stack[i + 1], at);
            if (!rc) k->ns = a;
            break;
        case '.': /* STOP */
            if (pk_pop(k, result, at)) return -1;
            if (r.pos != n) return errf(k->err, "%s: data.pkl has %llu bytes after STOP", k->path, (unsigned long long)(n - r.pos));
            return 0;
        default:
            return errf(k->err, "%s: data.pkl has pickle opcode 0x%02x at byte %llu, which torch.save does not write for a state dict", k->path, *op,
                        (unsigned long long)at);
        }
        if (rc) return -1;
    }
    return errf(k->err, "%s: data.pkl is truncated (an opcode's argument or STOP is missing)", k->path);
}

/* ==== State dict -> source tensors ==== */

static const NameMap meta_global[] = {
    { "tok_embeddings", "model.embed_tokens", 0 },
    { "norm", "model.norm", 0 },
    { "output", "lm_head", 0 },
    { NULL, NULL, 0 },
};
static const NameMap meta_layer[] = {
    { "attention.wq", "self_attn.q_proj", MAP_ROPE_Q }, { "attention.wk", "self_attn.k_proj", MAP_ROPE_K },
    { "attention.wv", "self_attn.v_proj", 0 },          { "attention.wo", "self_attn.o_proj", 0 },
    { "feed_forward.w1", "mlp.gate_proj", 0 },          { "feed_forward.w2", "mlp.down_proj", 0 },
    { "feed_forward.w3", "mlp.up_proj", 0 },            { "attention_norm", "input_layernorm", 0 },
    { "ffn_norm", "post_attention_layernorm", 0 },      { NULL, NULL, 0 },
};

/* One _rebuild_tensor_v2 view: a contiguous row-major [size...] slice of its storage entry. */
static int tensor_view(const Pk *k, const Zip *z, const char *prefix, const PVal *tv, const char *name, SrcTensor *t, const char *path, char *err) {
    const PVal *args = &k->v[tv->first], *sto = pk_kid(k, args, 0), *off = pk_kid(k, args, 1), *size = pk_kid(k, args, 2), *stride = pk_kid(k, args, 3);
    if (sto->kind != PV_STORAGE || off->kind != PV_INT || off->i < 0 || size->kind != PV_TUPLE || stride->kind != PV_TUPLE || size->n != stride->n ||
        size->n < 1 || size->n > 2)
        return errf(err, "%s: tensor '%s' is not a 1-D or 2-D view of a storage", path, name);
    uint64_t count = 1, expect = 1;
    for (uint32_t d = size->n; d-- > 0;) {
        const PVal *sz = pk_kid(k, size, d), *st = pk_kid(k, stride, d);
        if (sz->kind != PV_INT || st->kind != PV_INT || sz->i <= 0 || st->i < 0) return errf(err, "%s: tensor '%s' has a bad size or stride", path, name);
        if (sz->i > 1 && (uint64_t)st->i != expect) return errf(err, "%s: tensor '%s' is not contiguous (stride %lld)", path, name, (long long)st->i);
        if (!mul_u64(count, (uint64_t)sz->i, &count) || !mul_u64(expect, (uint64_t)sz->i, &expect)) return errf(err, "%s: tensor '%s' is too large", path, name);
        t->shape[d] = (uint64_t)sz->i;
    }
    char ename[160];
    snprintf(ename, sizeof ename, "%s/data/%.*s", prefix, (int)sto->n, sto->s);
    const ZipEntry *e = zip_find(z, ename, strlen(ename));
    uint64_t bytes, end, sbytes;
    if (!e) return errf(err, "%s: tensor '%s' uses storage '%.*s', which the archive lacks", path, name, (int)sto->n, sto->s);
    if (!mul_u64(sto->first, (uint64_t)sto->i, &sbytes) || sbytes != e->size)
        return errf(err, "%s: storage '%.*s' holds %llu bytes, not the %llu elements its record claims", path, (int)sto->n, sto->s, (unsigned long long)e->size,
                    (unsigned long long)sto->first);
    if (!add_u64((uint64_t)off->i, count, &end) || end > sto->first || !mul_u64(count, (uint64_t)sto->i, &bytes))
        return errf(err, "%s: tensor '%s' (offset %lld, %llu elements) lies outside its storage '%.*s' of %llu elements", path, name, (long long)off->i,
                    (unsigned long long)count, (int)sto->n, sto->s, (unsigned long long)sto->first);
    t->type = sto->st;
    t->ndim = size->n;
    t->data = e->data + (uint64_t)off->i * (uint64_t)sto->i;
    t->bytes = bytes;
    return 0;
}

/* Views a and b are the same slice of the same storage (torch's tied output.weight). */
static int same_view(const Pk *k, const PVal *a, const PVal *b) {
    const PVal *x = &k->v[a->first], *y = &k->v[b->first];
    for (uint32_t i = 0; i < 4; i++) {
        const PVal *p = pk_kid(k, x, i), *q = pk_kid(k, y, i);
        if (p->kind != q->kind) return 0;
        if (p->kind == PV_STORAGE && (p->n != q->n || memcmp(p->s, q->s, p->n) != 0)) return 0;
        if (p->kind == PV_INT && p->i != q->i) return 0;
        if (p->kind == PV_TUPLE) {
            if (p->n != q->n) return 0;
            for (uint32_t d = 0; d < p->n; d++)
                if (pk_kid(k, p, d)->i != pk_kid(k, q, d)->i) return 0;
        }
    }
    return 1;
}

static int read_state_dict(Source *s, const char *path, const Config *c, int *tied, char *err) {
    const MappedFile *m;
    const char *kept;
    if (source_map(s, path, &m, &kept, err)) return -1;
    Zip z;
    Pk k = { .path = kept, .err = err };
    int rc = -1;
    if (zip_open(&z, kept, m->data, m->size, err)) goto done;
    /* <archive>/data.pkl names the archive folder every storage lives in */
    const ZipEntry *pkl = NULL;
    for (uint64_t i = 0; i < z.n; i++) {
        const ZipEntry *e = &z.e[i];
        if (e->name_len > 9 && e->name_len < 80 && memcmp(e->name + e->name_len - 9, "/data.pkl", 9) == 0 && !memchr(e->name, '/', e->name_len - 9)) {
            if (pkl) { errf(err, "%s: archive holds more than one data.pkl", kept); goto done; }
            pkl = e;
        }
    }
    if (!pkl) { errf(err, "%s: archive has no <name>/data.pkl (not a torch.save file)", kept); goto done; }
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%.*s", (int)pkl->name_len - 9, pkl->name);
    char bo[100];
    snprintf(bo, sizeof bo, "%.80s/byteorder", prefix);
    const ZipEntry *order = zip_find(&z, bo, strlen(bo));
    if (order && (order->size != 6 || memcmp(order->data, "little", 6) != 0)) { errf(err, "%s: storages are not little-endian", kept); goto done; }
    uint64_t root;
    if (pk_run(&k, pkl->data, pkl->size, &root)) goto done;
    if (k.v[root].kind != PV_DICT) { errf(err, "%s: data.pkl is not a dict of tensors", kept); goto done; }
    const PVal *embed = NULL, *output = NULL;
    for (uint64_t i = 0; i < k.ni; i++) {
        const PItem *it = &k.items[i];
        if (it->dict != root) continue;
        const PVal *key = &k.v[it->key], *val = &k.v[it->val];
        if (key->kind != PV_STR || val->kind != PV_TENSOR) { errf(err, "%s: data.pkl has an entry that is not name -> tensor", kept); goto done; }
        char name[GB_NAME_MAX];
        if (key->n >= GB_NAME_MAX || memchr(key->s, 0, key->n)) { errf(err, "%s: tensor name '%.*s' is too long", kept, (int)(key->n < 64 ? key->n : 64), key->s); goto done; }
        snprintf(name, sizeof name, "%.*s", (int)key->n, key->s);
        if (strcmp(name, "rope.freqs") == 0) continue; /* Llama 2's unused precomputed frequencies */
        SrcTensor t = { 0 };
        uint32_t layer;
        const NameMap *nm = map_tensor_name(name, "layers.", meta_global, meta_layer, t.name, &layer);
        t.file = kept;
        if (tensor_view(&k, &z, prefix, val, name, &t, kept, err)) goto done;
        if (nm && nm->rope) {
            t.interleaved_heads = nm->rope == MAP_ROPE_Q ? c->n_heads : c->n_kv_heads;
            if (t.ndim != 2 || t.shape[0] != (uint64_t)t.interleaved_heads * c->head_dim) {
                errf(err, "%s: tensor '%s' is not [%u heads x %u, dim]", kept, name, t.interleaved_heads, c->head_dim);
                goto done;
            }
        }
        if (strcmp(t.name, "model.embed_tokens.weight") == 0) embed = val;
        if (strcmp(t.name, "lm_head.weight") == 0) {
            output = val;
            continue; /* added below, unless it is the embedding itself */
        }
        if (source_add(s, &t, err)) goto done;
    }
    *tied = !output || (embed && same_view(&k, embed, output));
    if (output && !*tied) {
        SrcTensor t = { .name = "lm_head.weight", .file = kept };
        if (tensor_view(&k, &z, prefix, output, "output.weight", &t, kept, err) || source_add(s, &t, err)) goto done;
    }
    rc = 0;
done:
    free(z.e);
    pk_free(&k);
    return rc;
}

/* ==== tokenizer.model ==== */

static int b64_value(uint8_t ch) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

/* Standard base64 with padding; returns the decoded length or -1. */
static int64_t b64_decode(const uint8_t *s, uint64_t n, uint8_t *out) {
    if (n == 0 || n % 4) return -1;
    uint64_t o = 0;
    for (uint64_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            v[j] = s[i + j] == '=' && i + 4 == n && j >= 2 ? (pad++, 0) : b64_value(s[i + j]);
            if (v[j] < 0 || (pad && s[i + j] != '=')) return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (uint8_t)(w >> 16);
        if (pad < 2) out[o++] = (uint8_t)(w >> 8);
        if (pad < 1) out[o++] = (uint8_t)w;
    }
    return (int64_t)o;
}

/* Llama 3's 256 special tokens after the ranks, named as the Hugging Face tokenizer.json names
 * them (so guard.bin is the same whichever format it came from): the named ones at fixed
 * offsets, <|reserved_special_token_K|> counting up through the rest. Llama 3.1+ (Llama Guard
 * 3) renamed a few of 3.0's (Llama Guard 2) reserved slots. */
#define LLAMA3_SPECIALS 256
static const struct { uint32_t off; const char *name; int v31; } llama3_named[] = {
    { 0, "<|begin_of_text|>", 2 }, { 1, "<|end_of_text|>", 2 },  { 4, "<|finetune_right_pad_id|>", 1 }, { 6, "<|start_header_id|>", 2 },
    { 7, "<|end_header_id|>", 2 }, { 8, "<|eom_id|>", 1 },      { 9, "<|eot_id|>", 2 },                 { 10, "<|python_tag|>", 1 },
};
#define LLAMA3_EOT_OFFSET 9

/* import.h: ranks 0, 1, 2, ... in order, then the specials. */

int tiktoken_read(Source *s, const char *path, const uint8_t *p, uint64_t size, const TiktokenSpecials *sp, char *err) {
    uint64_t lines = 0;
    for (uint64_t i = 0; i < size; i++) lines += p[i] == '\n';
    if (size && p[size - 1] != '\n') lines++;
    if (lines == 0 || lines > 0x7FFFFFFF - (uint64_t)sp->n) return errf(err, "%s: empty or oversized rank file", path);
    uint64_t n = lines + sp->n;
    const char **text = malloc(n * sizeof *text);
    uint32_t *len = malloc(n * sizeof *len);
    uint8_t *kind = malloc(n), *arena = malloc(size + 1);
    float *score = malloc(n * sizeof *score);
    int rc = -1;
    if (!text || !len || !kind || !arena || !score) { errf(err, "out of memory"); goto done; }
    uint64_t at = 0, pos = 0, base = 0;
    while (pos < size) {
        const uint8_t *line = p + pos, *nl = memchr(line, '\n', (size_t)(size - pos));
        uint64_t ll = nl ? (uint64_t)(nl - line) : size - pos;
        pos += ll + 1;
        if (ll == 0 && pos >= size) break;
        const uint8_t *sp_ = memchr(line, ' ', (size_t)ll);
        char num[16];
        uint64_t nd = sp_ ? ll - (uint64_t)(sp_ - line) - 1 : 0;
        if (!sp_ || nd == 0 || nd >= sizeof num) { errf(err, "%s: line %llu is not '<base64> <rank>'", path, (unsigned long long)base + 1); goto done; }
        memcpy(num, sp_ + 1, (size_t)nd);
        num[nd] = 0;
        char *end;
        unsigned long long rank = strtoull(num, &end, 10);
        int64_t k = b64_decode(line, (uint64_t)(sp_ - line), arena + at);
        if (*end || num[0] < '0' || num[0] > '9' || rank != base) { errf(err, "%s: line %llu has rank '%s', expected %llu (ranks must run 0, 1, 2, ...)", path, (unsigned long long)base + 1, num, (unsigned long long)base); goto done; }
        if (k <= 0) { errf(err, "%s: line %llu is not valid base64", path, (unsigned long long)base + 1); goto done; }
        text[base] = (const char *)arena + at;
        len[base] = (uint32_t)k;
        kind[base] = TOKK_NORMAL;
        score[base] = -(float)rank; /* lowest rank merges first (tok_build: higher score first) */
        at += (uint64_t)k;
        base++;
    }
    for (uint32_t i = 0; i < sp->n; i++) {
        text[base + i] = sp->names[i];
        len[base + i] = (uint32_t)strlen(sp->names[i]);
        kind[base + i] = TOKK_SPECIAL;
        score[base + i] = 0;
    }
    n = base + sp->n;
    TokSpec spec = { .type = TOK_LLAMA3_BPE, .n_tokens = (uint32_t)n, .text = text, .len = len, .kind = kind, .scores = score,
                     .ignore_merges = 1, .pretok = sp->pretok, .bos = sp->bos < 0 ? -1 : (int32_t)(base + (uint32_t)sp->bos),
                     .eos = sp->eos < 0 ? -1 : (int32_t)(base + (uint32_t)sp->eos) };
    char terr[ERRLEN];
    if (tok_build(&s->tok, &spec, terr)) { errf(err, "%s: %s", path, terr); goto done; }
    rc = 0;
done:
    free(text); free(len); free(kind); free(arena); free(score);
    return rc;
}

static int read_tiktoken(Source *s, const char *path, const uint8_t *p, uint64_t size, int llama31, char *err) {
    char names[LLAMA3_SPECIALS][40];
    const char *ptr[LLAMA3_SPECIALS];
    for (uint32_t i = 0, reserved = 0; i < LLAMA3_SPECIALS; i++) {
        const char *named = NULL;
        for (size_t j = 0; j < sizeof llama3_named / sizeof llama3_named[0]; j++)
            if (llama3_named[j].off == i && (llama3_named[j].v31 == 2 || llama31)) named = llama3_named[j].name;
        if (named) snprintf(names[i], sizeof names[i], "%s", named);
        else snprintf(names[i], sizeof names[i], "<|reserved_special_token_%u|>", reserved++);
        ptr[i] = names[i];
    }
    TiktokenSpecials sp = { LLAMA3_SPECIALS, ptr, 0, LLAMA3_EOT_OFFSET, TOK_PRETOK_LLAMA3 };
    return tiktoken_read(s, path, p, size, &sp, err);
}

/* Protocol buffers: just enough wire format for sentencepiece_model.proto. */
static int pb_varint(Reader *r, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        const uint8_t *b = rd_bytes(r, 1);
        if (!b) return -1;
        *v |= (uint64_t)(*b & 0x7F) << shift;
        if (!(*b & 0x80)) return 0;
    }
    return -1;
}

/* Next field of the message in r: number, wire type, and its payload (varint value, or bytes). */
static int pb_field(Reader *r, uint32_t *field, uint32_t *wire, uint64_t *v, const uint8_t **bytes) {
    uint64_t key;
    if (pb_varint(r, &key) || key >> 3 == 0 || key >> 3 > 0x1FFFFFFF) return -1;
    *field = (uint32_t)(key >> 3);
    *wire = (uint32_t)(key & 7);
    *bytes = NULL;
    switch (*wire) {
    case 0: return pb_varint(r, v);
    case 1: *bytes = rd_bytes(r, 8); *v = 8; return *bytes ? 0 : -1;
    case 2: if (pb_varint(r, v)) return -1; *bytes = rd_bytes(r, *v); return *bytes ? 0 : -1;
    case 5: *bytes = rd_bytes(r, 4); *v = 4; return *bytes ? 0 : -1;
    default: return -1; /* groups are not used by sentencepiece */
    }
}

/* The TrainerSpec / NormalizerSpec settings our SPM tokenizer implements (HF's Llama 2 one). */
typedef struct {
    int64_t model_type, bos, eos, byte_fallback, dummy_prefix, collapse_ws, escape_ws;
    const uint8_t *norm_name;
    uint64_t norm_name_len;
} SpmSettings;

static int spm_settings(const uint8_t *p, uint64_t n, int which, SpmSettings *st) {
    Reader r = reader(p, n);
    while (r.pos < r.len) {
        uint32_t f, w;
        uint64_t v;
        const uint8_t *b;
        if (pb_field(&r, &f, &w, &v, &b)) return -1;
        int64_t sv = (int64_t)v; /* int32 fields: negative values are 10-byte varints */
        if (which == 2 && w == 0) {
            if (f == 3) st->model_type = sv;
            else if (f == 41) st->bos = (int32_t)sv;
            else if (f == 42) st->eos = (int32_t)sv;
            else if (f == 35) st->byte_fallback = sv;
        } else if (which == 3) {
            if (f == 1 && w == 2) st->norm_name = b, st->norm_name_len = v;
            else if (f == 3 && w == 0) st->dummy_prefix = sv;
            else if (f == 4 && w == 0) st->collapse_ws = sv;
            else if (f == 5 && w == 0) st->escape_ws = sv;
        }
    }
    return 0;
}

static int read_sentencepiece(Source *s, const char *path, const uint8_t *p, uint64_t size, char *err) {
    /* proto defaults: unigram, bos 1, eos 2, no byte fallback, dummy prefix, collapse and escape whitespace */
    SpmSettings st = { 1, 1, 2, 0, 1, 1, 1, NULL, 0 };
    uint64_t n = 0;
    Reader r = reader(p, size);
    while (r.pos < r.len) {
        uint32_t f, w;
        uint64_t v;
        const uint8_t *b;
        if (pb_field(&r, &f, &w, &v, &b)) return errf(err, "%s: malformed SentencePiece model (protobuf) at byte %llu", path, (unsigned long long)r.pos);
        if (f == 1 && w == 2) n++;
        if ((f == 2 || f == 3) && w == 2 && spm_settings(b, v, (int)f, &st)) return errf(err, "%s: malformed SentencePiece %s", path, f == 2 ? "trainer_spec" : "normalizer_spec");
    }
    if (st.model_type != 2) return errf(err, "%s: SentencePiece model_type is %lld; only BPE (2, Llama 2) is supported", path, (long long)st.model_type);
    if (!st.byte_fallback || !st.dummy_prefix || st.collapse_ws || !st.escape_ws || st.norm_name_len != 8 || memcmp(st.norm_name, "identity", 8) != 0)
        return errf(err, "%s: SentencePiece settings differ from Llama 2's (identity normalizer, dummy prefix, byte fallback, no whitespace collapsing)", path);
    if (n == 0 || n > 0x7FFFFFFF) return errf(err, "%s: SentencePiece model has %llu pieces", path, (unsigned long long)n);
    if (st.bos < -1 || st.bos >= (int64_t)n || st.eos < -1 || st.eos >= (int64_t)n) return errf(err, "%s: SentencePiece bos/eos ids are out of range", path);
    const char **text = malloc(n * sizeof *text);
    uint32_t *len = malloc(n * sizeof *len);
    uint8_t *kind = malloc(n);
    float *score = malloc(n * sizeof *score);
    int rc = -1;
    if (!text || !len || !kind || !score) { errf(err, "out of memory"); goto done; }
    r = reader(p, size);
    for (uint64_t i = 0; r.pos < r.len;) {
        uint32_t f, w;
        uint64_t v;
        const uint8_t *b;
        pb_field(&r, &f, &w, &v, &b); /* the first pass proved every field well-formed */
        if (f != 1 || w != 2) continue;
        Reader q = reader(b, v);
        int64_t type = 1;
        text[i] = NULL;
        score[i] = 0;
        while (q.pos < q.len) {
            uint32_t pf, pw;
            uint64_t pv;
            const uint8_t *pb;
            if (pb_field(&q, &pf, &pw, &pv, &pb)) { errf(err, "%s: piece %llu is malformed", path, (unsigned long long)i); goto done; }
            if (pf == 1 && pw == 2 && pv <= 0xFFFF) text[i] = (const char *)pb, len[i] = (uint32_t)pv;
            else if (pf == 2 && pw == 5) score[i] = ld_f32(pb);
            else if (pf == 3 && pw == 0) type = (int64_t)pv;
        }
        int k = vocab_kind(type > 0x7FFFFFFF ? -1 : (int32_t)type, 1);
        if (!text[i] || k < 0) { errf(err, "%s: piece %llu has no text or an unknown type %lld", path, (unsigned long long)i, (long long)type); goto done; }
        kind[i] = (uint8_t)k;
        i++;
    }
    TokSpec spec = { TOK_SPM_BPE, (uint32_t)n, text, len, kind, 0, NULL, score, 0, (int32_t)st.bos, (int32_t)st.eos, TOK_PRETOK_LLAMA3 };
    char terr[ERRLEN];
    if (tok_build(&s->tok, &spec, terr)) { errf(err, "%s: %s", path, terr); goto done; }
    rc = 0;
done:
    free(text); free(len); free(kind); free(score);
    return rc;
}

/* tokenizer.model is a protobuf (first byte 0x0A: field 1, pieces) or tiktoken's text ranks. */
int meta_read_tokenizer(Source *s, const char *path, int llama31, char *err) {
    MappedFile m;
    if (map_file(&m, path, err)) return -1;
    int rc = m.size > 0 && m.data[0] == 0x0A ? read_sentencepiece(s, path, m.data, m.size, err) : read_tiktoken(s, path, m.data, m.size, llama31, err);
    unmap_file(&m);
    return rc;
}

/* ==== params.json (+ the HF config.json beside original/) ==== */

static int param_u32(const Json *j, const char *path, const char *key, int required, int64_t def, int64_t lo, int64_t *out, char *err) {
    const JsonNode *n = json_get(j, json_root(j), key);
    if (!n || n->type == JSON_NULL) {
        if (required) return errf(err, "%s: missing \"%s\"", path, key);
        *out = def;
        return 0;
    }
    if (json_int(n, lo, 0x7FFFFFFF, out)) return errf(err, "%s: \"%s\" must be an integer >= %lld", path, key, (long long)lo);
    return 0;
}

static int param_num(const Json *j, const char *path, const char *key, int required, double def, double *out, char *err) {
    const JsonNode *n = json_get(j, json_root(j), key);
    if (!n || n->type == JSON_NULL) {
        if (required) return errf(err, "%s: missing \"%s\"", path, key);
        *out = def;
        return 0;
    }
    if (n->type != JSON_NUMBER) return errf(err, "%s: \"%s\" must be a number", path, key);
    *out = n->num;
    return 0;
}

typedef struct {
    int64_t vocab;       /* -1: from the tokenizer */
    int scaled_rope;     /* use_scaled_rope */
    int64_t max_seq_len; /* 0: not given */
} MetaParams;

static int read_params(const char *path, Config *c, MetaParams *mp, char *err) {
    Json j;
    if (load_json_file(&j, path, err)) return -1;
    int rc = -1;
    int64_t dim, layers, heads, kv;
    double eps = 0, theta = 0;
    memset(c, 0, sizeof *c);
    if (json_root(&j)->type != JSON_OBJECT) { errf(err, "%s: not a JSON object", path); goto done; }
    if (param_u32(&j, path, "dim", 1, 0, 1, &dim, err) || param_u32(&j, path, "n_layers", 1, 0, 1, &layers, err) ||
        param_u32(&j, path, "n_heads", 1, 0, 1, &heads, err) || param_u32(&j, path, "n_kv_heads", 0, heads, 1, &kv, err) ||
        param_u32(&j, path, "vocab_size", 0, -1, -1, &mp->vocab, err) || param_u32(&j, path, "max_seq_len", 0, 0, 1, &mp->max_seq_len, err) ||
        param_num(&j, path, "norm_eps", 1, 0, &eps, err) || param_num(&j, path, "rope_theta", 0, 10000.0, &theta, err))
        goto done;
    if (mp->vocab == 0) { errf(err, "%s: \"vocab_size\" must be positive or -1", path); goto done; }
    /* llama-models' Llama 4 ModelArgs: read as Llama 3 it would silently lose its RoPE pairing,
     * NoPE layers, qk-norm and the rest, so it is refused */
    static const char *const llama4_keys[] = { "use_qk_norm", "nope_layer_interval", "moe_args", "attention_chunk_size", "attn_temperature_tuning" };
    for (size_t i = 0; i < sizeof llama4_keys / sizeof llama4_keys[0]; i++)
        if (json_get(&j, json_root(&j), llama4_keys[i])) {
            errf(err, "%s: a Llama 4 params.json (\"%s\"): Meta's original Llama 4 format is not supported; export the Hugging Face folder", path,
                 llama4_keys[i]);
            goto done;
        }
    const JsonNode *sr = json_get(&j, json_root(&j), "use_scaled_rope");
    if (sr && sr->type != JSON_TRUE && sr->type != JSON_FALSE) { errf(err, "%s: \"use_scaled_rope\" must be true or false", path); goto done; }
    mp->scaled_rope = sr && sr->type == JSON_TRUE;
    if (dim % heads) { errf(err, "%s: dim is not a multiple of n_heads", path); goto done; }
    c->dim = (uint32_t)dim;
    c->n_layers = (uint32_t)layers;
    c->n_heads = (uint32_t)heads;
    c->n_kv_heads = (uint32_t)kv;
    c->head_dim = (uint32_t)(dim / heads);
    c->norm_eps = (float)eps;
    c->rope_theta = (float)theta;
    c->source = SRC_META;
    rc = 0;
done:
    json_free(&j);
    return rc;
}

/* RoPE scaling: params.json only says whether (use_scaled_rope); the parameters come from
 * --rope-factor, else the HF config.json beside original/, else Meta's hard-coded factor 8. */
static int choose_rope(Source *s, const MetaParams *mp, const Config *hf, const ImportOptions *opt, const char *params_path, char *err) {
    Config *c = &s->cfg;
    if (!mp->scaled_rope) {
        if (hf && hf->rope_type != ROPE_NONE) return errf(err, "%s: use_scaled_rope is off but the config.json beside it has rope_scaling", params_path);
        if (opt && opt->rope_factor > 0) return errf(err, "%s: --rope-factor given, but this model does not use scaled RoPE", params_path);
        c->rope_type = ROPE_NONE;
        return 0;
    }
    c->rope_type = ROPE_LLAMA3;
    if (hf && hf->rope_type == ROPE_LLAMA3) {
        c->rope_factor = hf->rope_factor;
        c->rope_low_freq_factor = hf->rope_low_freq_factor;
        c->rope_high_freq_factor = hf->rope_high_freq_factor;
        c->rope_orig_max_pos = hf->rope_orig_max_pos;
    } else if (hf) {
        return errf(err, "%s: use_scaled_rope is on but the config.json beside it has no llama3 rope_scaling", params_path);
    } else {
        c->rope_factor = 8; /* llama-models apply_scaling's constants */
        c->rope_low_freq_factor = 1;
        c->rope_high_freq_factor = 4;
        c->rope_orig_max_pos = 8192;
        if (!(opt && opt->rope_factor > 0))
            snprintf(s->warning, sizeof s->warning,
                     "%.300s says use_scaled_rope but not the factor and there is no config.json beside it: using Meta's default 8; "
                     "pass --rope-factor F if the model's config.json gives rope_scaling.factor otherwise",
                     params_path);
    }
    if (opt && opt->rope_factor > 0) c->rope_factor = (float)opt->rope_factor;
    return 0;
}

/* ==== Entry point ==== */

int meta_open(Source *s, const char *dir, const ImportOptions *opt, char *err) {
    memset(s, 0, sizeof *s);
    s->origin = dir;
    char params[4096], parent[4096], path[4096];
    MetaParams mp;
    Config hf, *hfp = NULL;
    ckpt_path(params, sizeof params, dir, "params.json");
    if (read_params(params, &s->cfg, &mp, err)) goto fail;
    /* An HF repo's original/ folder: the repo's config.json and tokenizer_config.json apply */
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    int in_repo = dl >= 8 && memcmp(dir + dl - 8, "original", 8) == 0 && (dl == 8 || dir[dl - 9] == '/');
    if (in_repo) {
        if (dl == 8) snprintf(parent, sizeof parent, ".");
        else snprintf(parent, sizeof parent, "%.*s", (int)(dl - 8), dir);
        ckpt_path(path, sizeof path, parent, "config.json");
        if (ckpt_is_file(path)) {
            if (hf_read_config(path, &hf, NULL, err)) goto fail;
            if (hf.rope_style == ROPE_ADJACENT) { errf(err, "%s: a Llama 4 config: export the Hugging Face folder, not original/", path); goto fail; }
            hfp = &hf;
            if (hf.dim != s->cfg.dim || hf.n_layers != s->cfg.n_layers || hf.n_heads != s->cfg.n_heads || hf.n_kv_heads != s->cfg.n_kv_heads ||
                hf.head_dim != s->cfg.head_dim) {
                errf(err, "%s: describes a different model than %s", path, params);
                goto fail;
            }
        }
    }
    ckpt_path(path, sizeof path, dir, "consolidated.01.pth");
    if (ckpt_is_file(path)) { errf(err, "%s: model-parallel shards (consolidated.01.pth, ...) are not supported; use the Hugging Face safetensors", dir); goto fail; }
    if (choose_rope(s, &mp, hfp, opt, params, err)) goto fail;
    /* Meta's download puts Llama 2's tokenizer.model beside the model folder, HF repos inside */
    ckpt_path(path, sizeof path, dir, "tokenizer.model");
    if (!ckpt_is_file(path)) ckpt_path(path, sizeof path, dir, "../tokenizer.model");
    if (!ckpt_is_file(path)) { errf(err, "%s: no tokenizer.model", dir); goto fail; }
    if (meta_read_tokenizer(s, path, mp.scaled_rope, err)) goto fail;
    uint32_t n_tok = tok_vocab_size(s->tok);
    s->cfg.vocab_size = mp.vocab > 0 ? (uint32_t)mp.vocab : n_tok;
    /* the context Meta trains for, unless HF's config or params.json says */
    int spm = tok_type(s->tok) == TOK_SPM_BPE;
    s->cfg.max_seq_len = hfp ? hf.max_seq_len : mp.max_seq_len ? (uint32_t)mp.max_seq_len : spm ? 4096 : mp.scaled_rope ? 131072 : 8192;
    ckpt_path(path, sizeof path, dir, "consolidated.00.pth");
    int tied;
    if (read_state_dict(s, path, &s->cfg, &tied, err)) goto fail;
    s->cfg.tied = (uint32_t)tied;
    /* ffn width is not in params.json (multiple_of / ffn_dim_multiplier rounding): w1's rows say it */
    const SrcTensor *w1 = source_find(s, "model.layers.0.mlp.gate_proj.weight");
    if (!w1 || w1->ndim != 2 || w1->shape[0] > 0x7FFFFFFF) { errf(err, "%s: no layers.0.feed_forward.w1.weight to size the FFN from", path); goto fail; }
    s->cfg.hidden_dim = (uint32_t)w1->shape[0];
    if (in_repo) {
        ckpt_path(path, sizeof path, parent, "tokenizer_config.json");
        if (ckpt_is_file(path) && hf_read_chat_template(s, path, err)) goto fail;
    }
    char verr[ERRLEN];
    if (config_validate(&s->cfg, verr)) { errf(err, "%s: %s", params, verr); goto fail; }
    return 0;
fail:
    source_free(s);
    return -1;
}
