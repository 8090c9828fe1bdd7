/* import/flatbuf.h: a from-scratch reader of FlatBuffers binaries for untrusted bytes (no
 * generated code, no library), enough for ExecuTorch programs and XNNPACK delegate graphs.
 *
 * Wire format (flatbuffers.dev "Internals"): little-endian; a table starts with an int32
 * soffset to its vtable (vtable = table - soffset); a vtable is u16 vtable size, u16 inline
 * object size, then one u16 per field giving the field's offset inside the object (0 =
 * absent, the default applies). Tables, vectors and strings are reached through u32 uoffsets
 * added to the position the offset is stored at; a vector or string is a u32 count followed by
 * its elements (a string also by a NUL).
 *
 * Every position is checked in 64-bit arithmetic before it is read: the root, each vtable and
 * object, each field against the buffer, each vector's count times its element
 * size against the bytes left, each string's NUL. uoffsets only point forward (they are
 * unsigned), so a child always sits after the field that names it and no chain of tables can
 * loop; a zero uoffset (a field pointing at itself) is refused as a cycle, and a nesting limit
 * (FB_MAX_DEPTH) bounds any reader that recurses over a schema. The first problem is recorded
 * in the FbBuf's err, naming the file and what was being read; later reads return
 * absent/zero, so callers check fb->bad once per record, like util.h's Reader.
 */
#ifndef GUARD_FLATBUF_H
#define GUARD_FLATBUF_H

#include <stdint.h>

#include "../util.h"

#define FB_MAX_DEPTH 32

typedef struct {
    const uint8_t *p;
    uint64_t n;
    const char *what; /* for messages: e.g. the file name, or "file.pte: delegate 3" */
    char *err;        /* caller-owned [ERRLEN]; set once, on the first problem */
    int bad;
} FbBuf;

typedef struct {
    const FbBuf *b;
    uint64_t pos;       /* the table's first byte (its soffset); 0 for a null table */
    uint64_t vt;        /* its vtable */
    uint32_t vt_fields; /* fields the vtable describes */
    uint32_t obj_len;   /* inline bytes of the object */
    int depth;
} FbTable;

typedef struct {
    uint64_t pos; /* first element */
    uint64_t len; /* element count */
} FbVec;

/* The root table of a buffer whose file identifier (bytes 4..7) is ident (NULL: not checked).
 * fb->p may be a slice of a larger file. Returns 0 or -1 (fb->bad set). */
int fb_root(FbBuf *fb, const char *ident, FbTable *root);

/* Record a problem (the first one wins) and return -1; "what: " is prefixed. */
int fb_fail(FbBuf *fb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Whether field i is present. */
int fb_has(const FbTable *t, uint32_t field);

/* Scalars: the stored value, or def when the field is absent. */
uint8_t fb_u8(const FbTable *t, uint32_t field, uint8_t def);
uint16_t fb_u16(const FbTable *t, uint32_t field, uint16_t def);
uint32_t fb_u32(const FbTable *t, uint32_t field, uint32_t def);
int32_t fb_i32(const FbTable *t, uint32_t field, int32_t def);
uint64_t fb_u64(const FbTable *t, uint32_t field, uint64_t def);
int64_t fb_i64(const FbTable *t, uint32_t field, int64_t def);
double fb_f64(const FbTable *t, uint32_t field, double def);

/* Sub-table: 1 present (in *out), 0 absent (*out is a null table), -1 malformed. */
int fb_table(const FbTable *t, uint32_t field, FbTable *out);
/* Vector of elem-byte scalars or structs: 1 present, 0 absent (len 0), -1 malformed. */
int fb_vector(const FbTable *t, uint32_t field, uint32_t elem, FbVec *out);
/* String: 1 present (*s, *len, NUL-terminated inside the buffer), 0 absent, -1 malformed. */
int fb_string(const FbTable *t, uint32_t field, const char **s, uint32_t *len);
/* Element i of a vector of tables (from fb_vector with elem 4). */
int fb_vec_table(const FbTable *t, const FbVec *v, uint64_t i, FbTable *out);
/* Whether a present string field equals want exactly. */
int fb_string_is(const FbTable *t, uint32_t field, const char *want);

/* Element i of a scalar vector (the caller checked i < v->len). */
static inline const uint8_t *fb_elem(const FbTable *t, const FbVec *v, uint64_t i, uint32_t elem) { return t->b->p + v->pos + i * elem; }

#endif
