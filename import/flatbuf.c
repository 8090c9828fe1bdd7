/* import/flatbuf.c: the bounds-checked FlatBuffers reader (format and checks in flatbuf.h).
 * Mirrors: flatbuffers' own Verifier (flatbuffers/verifier.h: VerifyTableStart, VerifyVector,
 * VerifyString), written again from the format description, with 64-bit arithmetic throughout. */
#include "flatbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int fb_fail(FbBuf *fb, const char *fmt, ...) {
    if (fb->bad) return -1;
    fb->bad = 1;
    char msg[ERRLEN - 220];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(fb->err, ERRLEN, "%.200s: %s", fb->what, msg);
    return -1;
}

/* The FbBuf is logically mutable error state shared by every table read from it. */
static FbBuf *mut(const FbTable *t) { return (FbBuf *)t->b; }

/* A table at pos: its vtable must lie inside the buffer, be 2-aligned in size and describe an
 * object that also lies inside. */
static int table_at(FbBuf *fb, uint64_t pos, int depth, FbTable *out) {
    memset(out, 0, sizeof *out);
    out->b = fb;
    if (fb->bad) return -1;
    if (depth > FB_MAX_DEPTH) return fb_fail(fb, "tables nested deeper than %d", FB_MAX_DEPTH);
    if (pos % 4 || pos > fb->n || fb->n - pos < 4) return fb_fail(fb, "table at %llu lies outside the buffer or is misaligned", (unsigned long long)pos);
    int64_t so = (int32_t)ld_u32(fb->p + pos);
    int64_t vt = (int64_t)pos - so; /* |so| < 2^31 and pos < 2^63: no overflow */
    if (vt < 0 || (uint64_t)vt > fb->n || fb->n - (uint64_t)vt < 4 || vt % 2)
        return fb_fail(fb, "vtable of the table at %llu lies outside the buffer", (unsigned long long)pos);
    uint32_t vlen = ld_u16(fb->p + vt), olen = ld_u16(fb->p + vt + 2);
    if (vlen < 4 || vlen % 2 || (uint64_t)vlen > fb->n - (uint64_t)vt)
        return fb_fail(fb, "vtable of the table at %llu has a bad size %u", (unsigned long long)pos, vlen);
    if (olen < 4 || (uint64_t)olen > fb->n - pos)
        return fb_fail(fb, "table at %llu has an object size %u past the end of the buffer", (unsigned long long)pos, olen);
    out->pos = pos;
    out->vt = (uint64_t)vt;
    out->vt_fields = (vlen - 4) / 2;
    out->obj_len = olen;
    out->depth = depth;
    return 0;
}

int fb_root(FbBuf *fb, const char *ident, FbTable *root) {
    memset(root, 0, sizeof *root);
    root->b = fb;
    if (fb->n < 8) return fb_fail(fb, "%llu bytes is too short for a flatbuffer", (unsigned long long)fb->n);
    if (ident && memcmp(fb->p + 4, ident, 4) != 0) return fb_fail(fb, "file identifier is not %s", ident);
    uint64_t off = ld_u32(fb->p);
    if (off == 0) return fb_fail(fb, "root offset 0 points at itself");
    return table_at(fb, off, 0, root);
}

/* Position of field i's inline bytes (size bytes), or 0 if absent; out of the object is malformed. */
static uint64_t field_pos(const FbTable *t, uint32_t field, uint32_t size) {
    if (t->b->bad || t->pos == 0 || field >= t->vt_fields) return 0;
    uint32_t fo = ld_u16(t->b->p + t->vt + 4 + 2 * (uint64_t)field);
    if (fo == 0) return 0;
    /* inside the buffer, after the soffset: flatc 24 may record an inline size that stops short
     * of a trailing 8-byte field (seen in ExecuTorch's own programs), and flatbuffers' own
     * Verifier checks fields against the buffer, not the object size; so do we */
    if (fo < 4 || t->pos + fo + size > t->b->n) {
        fb_fail(mut(t), "field %u of the table at %llu lies outside the buffer", field, (unsigned long long)t->pos);
        return 0;
    }
    return t->pos + fo;
}

int fb_has(const FbTable *t, uint32_t field) { return field_pos(t, field, 1) != 0; }

uint8_t fb_u8(const FbTable *t, uint32_t field, uint8_t def) {
    uint64_t p = field_pos(t, field, 1);
    return p ? t->b->p[p] : def;
}
uint16_t fb_u16(const FbTable *t, uint32_t field, uint16_t def) {
    uint64_t p = field_pos(t, field, 2);
    return p ? ld_u16(t->b->p + p) : def;
}
uint32_t fb_u32(const FbTable *t, uint32_t field, uint32_t def) {
    uint64_t p = field_pos(t, field, 4);
    return p ? ld_u32(t->b->p + p) : def;
}
int32_t fb_i32(const FbTable *t, uint32_t field, int32_t def) { return (int32_t)fb_u32(t, field, (uint32_t)def); }
uint64_t fb_u64(const FbTable *t, uint32_t field, uint64_t def) {
    uint64_t p = field_pos(t, field, 8);
    return p ? ld_u64(t->b->p + p) : def;
}
int64_t fb_i64(const FbTable *t, uint32_t field, int64_t def) { return (int64_t)fb_u64(t, field, (uint64_t)def); }
double fb_f64(const FbTable *t, uint32_t field, double def) {
    uint64_t p = field_pos(t, field, 8);
    if (!p) return def;
    union { uint64_t u; double d; } v = { .u = ld_u64(t->b->p + p) };
    return v.d;
}

/* Follow the uoffset stored at p: the target, or 0 after recording why not. */
static uint64_t follow(const FbTable *t, uint64_t p, const char *kind) {
    uint64_t off = ld_u32(t->b->p + p);
    if (off == 0) {
        fb_fail(mut(t), "%s offset at %llu is 0 (points at itself: a cycle)", kind, (unsigned long long)p);
        return 0;
    }
    if (off > t->b->n - p) {
        fb_fail(mut(t), "%s offset at %llu points past the end of the buffer", kind, (unsigned long long)p);
        return 0;
    }
    return p + off;
}

/* out may be t itself (walking down a chain): t is read before out is written. */
int fb_table(const FbTable *t, uint32_t field, FbTable *out) {
    FbTable r = { .b = t->b };
    uint64_t p = field_pos(t, field, 4);
    int rc = p ? 1 : t->b->bad ? -1 : 0;
    uint64_t at = p ? follow(t, p, "table") : 0;
    if (p && (!at || table_at(mut(t), at, t->depth + 1, &r))) rc = -1;
    *out = r;
    return rc;
}

/* The count at p and the check that count * elem bytes follow it. */
static int vector_at(const FbTable *t, uint64_t at, uint32_t elem, FbVec *out) {
    FbBuf *fb = mut(t);
    if (at % 4 || fb->n - at < 4) return fb_fail(fb, "vector at %llu is misaligned or truncated", (unsigned long long)at);
    uint64_t len = ld_u32(fb->p + at), bytes;
    if (!mul_u64(len, elem, &bytes) || bytes > fb->n - at - 4)
        return fb_fail(fb, "vector at %llu claims %llu elements of %u bytes, more than the buffer holds", (unsigned long long)at,
                       (unsigned long long)len, elem);
    out->pos = at + 4;
    out->len = len;
    return 0;
}

int fb_vector(const FbTable *t, uint32_t field, uint32_t elem, FbVec *out) {
    memset(out, 0, sizeof *out);
    uint64_t p = field_pos(t, field, 4);
    if (!p) return t->b->bad ? -1 : 0;
    uint64_t at = follow(t, p, "vector");
    if (!at || vector_at(t, at, elem, out)) return -1;
    return 1;
}

int fb_string(const FbTable *t, uint32_t field, const char **s, uint32_t *len) {
    *s = "";
    *len = 0;
    FbVec v;
    int rc = fb_vector(t, field, 1, &v);
    if (rc <= 0) return rc;
    if (v.len == t->b->n - v.pos || t->b->p[v.pos + v.len] != 0)
        return fb_fail(mut(t), "string at %llu is not NUL-terminated", (unsigned long long)v.pos - 4);
    *s = (const char *)t->b->p + v.pos;
    *len = (uint32_t)v.len;
    return 1;
}

int fb_string_is(const FbTable *t, uint32_t field, const char *want) {
    const char *s;
    uint32_t n;
    return fb_string(t, field, &s, &n) == 1 && n == strlen(want) && memcmp(s, want, n) == 0;
}

int fb_vec_table(const FbTable *t, const FbVec *v, uint64_t i, FbTable *out) {
    FbTable r = { .b = t->b };
    int rc = -1;
    if (t->b->bad) rc = -1;
    else if (i >= v->len) fb_fail(mut(t), "vector index %llu out of range", (unsigned long long)i);
    else {
        uint64_t at = follow(t, v->pos + 4 * i, "table");
        rc = at && table_at(mut(t), at, t->depth + 1, &r) == 0 ? 0 : -1;
    }
    *out = r;
    return rc;
}
