/* import/pte.c: Meta's Llama-Guard-3-1B-INT4 ExecuTorch program (llama_guard_3_1b_pruned_xnnpack.pte)
 * read into a PteModel: every weight located and identified by the graph around it.
 *
 * Mirrors: ExecuTorch 6259a2920d4f (spec/executorch/ORIGIN.md): schema/program.fbs, the extended
 * header (exir/_serialize/_program.py, runtime/executor/program.cpp), the XNNPACK payload
 * (backends/xnnpack/serialization/schema.fbs, xnnpack_graph_serialize.py's XH00 header,
 * runtime/XNNCompiler.cpp), examples/models/llama2's graph (llama_transformer.py, rope.py,
 * sdpa_with_kv_cache, the output prune map), as imports/pte_mini/README.md lays them out.
 *
 * Reading order:
 *   1. The file: root offset, "ET12", the "eh00" extended header (program size, segment base),
 *      the segments (inside the file, 128-aligned, sorted, not overlapping).
 *   2. The program: the constant segment (offsets inside segment 0), the metadata methods
 *      (get_n_layers, get_vocab_size, get_max_seq_len, get_bos_id, get_eos_ids), and `forward`:
 *      its values (tensors with their constant bytes resolved), operators, delegates and
 *      instructions. Anything outside this export is refused by name: the old inline
 *      constant_buffer, mutable data segments, named/external data (.ptd), inline delegate data,
 *      a backend other than XNNPACK, control flow, an operator the export never emits.
 *   3. Each delegate blob: "XH00" header, an "XN01" graph of exactly fp32 input -> Convert to
 *      qdint8 (per token) -> FullyConnected with a qbint4 weight (fp32 group scales, group 256)
 *      -> fp32 output, and the packed weight in its constant data.
 *   4. The forward graph, by dataflow rather than position: one sdpa_with_kv_cache per layer;
 *      walking back from its query/key/value arguments finds the q/k/v delegates (q and k through
 *      the RoPE tables, v not); the attention output feeds wo; wo's residual add feeds an RMSNorm
 *      whose output feeds w1 and w3; w2 reads silu(w1)*w3; norms are recognised by the
 *      mul/mean/add/rsqrt/mul/mul pattern and named by what consumes their output; the head is
 *      the delegate that reads the final norm, and index_put scatters its rows to the prune map.
 * Non-goals: other models, other ExecuTorch layouts or backends, running the program.
 */
#include "pte.h"
#include "import.h"

#include <dirent.h>

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PTE_MAX_DIMS 8
#define PTE_MAX_VALUES (1u << 20)
#define PTE_MAX_ARGS 64
#define SEG_ALIGN 128
#define PTE_MAX_K 65536 /* in_features we convert a row of at a time */

/* ==== ExecuTorch schema: field ids (program.fbs order; a union takes two ids: type, value) ==== */

enum { PROG_VERSION, PROG_PLANS, PROG_CONST_BUFFER, PROG_DELEGATE_DATA, PROG_SEGMENTS, PROG_CONST_SEGMENT, PROG_MUTABLE_SEGMENTS, PROG_FIELDS };
enum { PLAN_NAME, PLAN_META, PLAN_VALUES, PLAN_INPUTS, PLAN_OUTPUTS, PLAN_CHAINS, PLAN_OPERATORS, PLAN_DELEGATES, PLAN_BUFFER_SIZES, PLAN_FIELDS };
enum { KT_NONE, KT_NULL, KT_INT, KT_BOOL, KT_DOUBLE, KT_TENSOR, KT_STRING, KT_INT_LIST, KT_DOUBLE_LIST, KT_BOOL_LIST, KT_TENSOR_LIST, KT_OPT_TENSOR_LIST, KT_COUNT };
enum { TEN_TYPE, TEN_STORAGE_OFFSET, TEN_SIZES, TEN_DIM_ORDER, TEN_GRAD, TEN_BUFFER, TEN_ALLOC, TEN_LAYOUT, TEN_DYNAMISM, TEN_EXTRA, TEN_FIELDS };
enum { ST_BYTE = 0, ST_CHAR = 1, ST_SHORT = 2, ST_INT = 3, ST_LONG = 4, ST_HALF = 5, ST_FLOAT = 6, ST_DOUBLE = 7, ST_BOOL = 11 };
enum { IA_KERNEL = 1, IA_DELEGATE = 2 };

static const char *const kt_name[KT_COUNT] = { "none", "Null", "Int", "Bool", "Double", "Tensor", "String", "IntList", "DoubleList", "BoolList", "TensorList", "OptionalTensorList" };

static uint32_t st_size(uint8_t st) {
    switch (st) {
    case ST_BYTE: case ST_CHAR: case ST_BOOL: return 1;
    case ST_SHORT: case ST_HALF: return 2;
    case ST_INT: case ST_FLOAT: return 4;
    case ST_LONG: case ST_DOUBLE: return 8;
    default: return 0;
    }
}

/* ==== The operators forward may use (as the runtime looks them up: name.overload) ==== */

enum {
    OP_EMBED, OP_MUL, OP_ADD, OP_SUB, OP_MEAN, OP_RSQRT, OP_VIEW, OP_SLICE, OP_SELECT, OP_SQUEEZE, OP_UNSQUEEZE, OP_CAT, OP_SDPA,
    OP_SIGMOID, OP_SYM_SIZE, OP_SCALAR, OP_ADD_SCALAR, OP_FULL, OP_INDEX_PUT, OP_SLICE_SCATTER, OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
    [OP_EMBED] = "quantized_decomposed::embedding_4bit.dtype_out",
    [OP_MUL] = "aten::mul.out",
    [OP_ADD] = "aten::add.out",
    [OP_SUB] = "aten::sub.out",
    [OP_MEAN] = "aten::mean.out",
    [OP_RSQRT] = "aten::rsqrt.out",
    [OP_VIEW] = "executorch_prim::et_view.default",
    [OP_SLICE] = "aten::slice_copy.Tensor_out",
    [OP_SELECT] = "aten::select_copy.int_out",
    [OP_SQUEEZE] = "aten::squeeze_copy.dims_out",
    [OP_UNSQUEEZE] = "aten::unsqueeze_copy.out",
    [OP_CAT] = "aten::cat.out",
    [OP_SDPA] = "llama::sdpa_with_kv_cache.out",
    [OP_SIGMOID] = "aten::sigmoid.out",
    [OP_SYM_SIZE] = "aten::sym_size.int",
    [OP_SCALAR] = "aten::_local_scalar_dense",
    [OP_ADD_SCALAR] = "executorch_prim::add.Scalar",
    [OP_FULL] = "aten::full.out",
    [OP_INDEX_PUT] = "aten::index_put.out",
    [OP_SLICE_SCATTER] = "aten::slice_scatter.out",
};

/* ==== The parsed program ==== */

typedef struct {
    uint8_t type;             /* KT_* */
    /* KT_TENSOR */
    uint8_t st, ndim, dynamic, planned;
    int64_t sizes[PTE_MAX_DIMS];
    uint32_t buffer;          /* data_buffer_idx (0: no data) */
    const uint8_t *data;      /* constant bytes (NULL when none), `bytes` long */
    uint64_t bytes;
    /* KT_INT / KT_BOOL / KT_DOUBLE */
    int64_t i;
    double d;
    /* KT_INT_LIST (value indices, i64), KT_TENSOR_LIST / KT_OPT_TENSOR_LIST (value indices, i32) */
    FbVec list;
} Val;

typedef struct {
    uint8_t kind;             /* IA_KERNEL / IA_DELEGATE */
    uint32_t op;              /* OP_* or the delegate index */
    uint32_t nargs;
    const int32_t *args;      /* value indices, into Prog.args */
    uint64_t args_at;         /* where they start in Prog.args */
} Ins;

typedef struct {
    FbBuf fb;
    const char *path;
    char *err;
    int flags;
    const uint8_t *file;
    uint64_t file_n, seg_base;
    uint64_t n_seg, *seg_off, *seg_size; /* absolute offset and size of each segment */
    Val *v;
    uint64_t nv;
    Ins *ins;
    uint64_t ni;
    int32_t *args;
    uint32_t *op;             /* [n_ops] OP_* of each operator of forward */
    uint64_t n_ops;
    uint32_t *deleg_seg;      /* [n_deleg] segment of each delegate */
    uint64_t n_deleg;
    int64_t *producer;        /* [nv] instruction writing the value (its last argument), or -1 */
    int32_t user_in[2], user_out;
} Prog;

static void prog_free(Prog *g) {
    free(g->seg_off); free(g->seg_size); free(g->v); free(g->ins); free(g->args); free(g->op); free(g->deleg_seg); free(g->producer);
}

static int fail(Prog *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(Prog *g, const char *fmt, ...) {
    if (g->fb.bad) return -1; /* the flatbuffer reader's message is the first problem */
    char msg[ERRLEN - 220];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g->fb.bad = 1;
    snprintf(g->err, ERRLEN, "%.200s: %s", g->path, msg);
    return -1;
}

/* An untrusted name for a message: up to its first byte that is not printable ASCII, at most n-1 bytes. */
static const char *printable(char *dst, size_t n, const char *s, uint32_t len) {
    size_t k = 0;
    for (; k < len && k + 1 < n && s[k] >= 0x20 && s[k] <= 0x7E; k++) dst[k] = s[k];
    dst[k] = 0;
    return dst;
}

/* ==== 1. File header and segments ==== */

static int read_header(Prog *g, uint64_t *program_size) {
    const uint8_t *p = g->file;
    uint64_t n = g->file_n;
    if (n < 8 || memcmp(p + 4, "ET12", 4) != 0) {
        if (n >= 8 && memcmp(p + 4, "ET", 2) == 0 && p[6] >= '0' && p[6] <= '9' && p[7] >= '0' && p[7] <= '9')
            return fail(g, "ExecuTorch program version '%.4s' is not ET12 (the 2024 layout of the Llama Guard 3 1B INT4 release)", (const char *)p + 4);
        return fail(g, "not an ExecuTorch program (no ET12 identifier)");
    }
    if (n < 32 || memcmp(p + 8, "eh00", 4) != 0) {
        /* no extended header: the whole file is the program and there are no segments, which
         * the walk below refuses by what it finds */
        *program_size = n;
        g->seg_base = n;
        return 0;
    }
    /* later ExecuTorch versions append fields (segment data size: length 32); the first two
     * mean the same, so read on and refuse by what the program holds */
    uint32_t hlen = ld_u32(p + 12);
    if (hlen < 24 || hlen > 64 || 8 + (uint64_t)hlen > n) return fail(g, "extended header length %u is not a valid eh00 header", hlen);
    *program_size = ld_u64(p + 16);
    g->seg_base = ld_u64(p + 24);
    if (*program_size < 32 || *program_size > n) return fail(g, "program size %llu is outside the %llu-byte file", (unsigned long long)*program_size, (unsigned long long)n);
    if (g->seg_base < *program_size || (g->seg_base > n && !(g->flags & PTE_STRUCTURE_ONLY)))
        return fail(g, "segment base %llu is before the program's end or past the file", (unsigned long long)g->seg_base);
    return 0;
}

static int read_segments(Prog *g, const FbTable *prog) {
    FbVec sv;
    if (fb_vector(prog, PROG_SEGMENTS, 4, &sv) < 0) return -1;
    if (sv.len == 0) return fail(g, "the program has no segments (the INT4 release keeps its weights in segments)");
    if (sv.len > 65536) return fail(g, "%llu segments", (unsigned long long)sv.len);
    g->n_seg = sv.len;
    g->seg_off = calloc(sv.len, sizeof *g->seg_off);
    g->seg_size = calloc(sv.len, sizeof *g->seg_size);
    if (!g->seg_off || !g->seg_size) return fail(g, "out of memory");
    uint64_t prev_end = g->seg_base;
    for (uint64_t i = 0; i < sv.len; i++) {
        FbTable s;
        if (fb_vec_table(prog, &sv, i, &s)) return -1;
        uint64_t off = fb_u64(&s, 0, 0), size = fb_u64(&s, 1, 0), abs_off, end;
        if (g->fb.bad) return -1;
        if (!add_u64(g->seg_base, off, &abs_off) || !add_u64(abs_off, size, &end))
            return fail(g, "segment %llu: offset %llu + size %llu overflows", (unsigned long long)i, (unsigned long long)off, (unsigned long long)size);
        if (off % SEG_ALIGN) return fail(g, "segment %llu: offset %llu is not %d-aligned", (unsigned long long)i, (unsigned long long)off, SEG_ALIGN);
        if (abs_off < prev_end) return fail(g, "segment %llu overlaps the one before it (or they are not sorted)", (unsigned long long)i);
        if (end > g->file_n && !(g->flags & PTE_STRUCTURE_ONLY))
            return fail(g, "segment %llu (%llu bytes at %llu) runs past the end of the %llu-byte file (truncated?)", (unsigned long long)i,
                        (unsigned long long)size, (unsigned long long)abs_off, (unsigned long long)g->file_n);
        g->seg_off[i] = abs_off;
        g->seg_size[i] = size;
        prev_end = end;
    }
    return 0;
}

/* Bytes of segment i, or NULL when the caller only checks structure and they are not there. */
static const uint8_t *seg_bytes(const Prog *g, uint64_t i, uint64_t off, uint64_t n) {
    uint64_t a = g->seg_off[i] + off; /* off + n <= seg_size was checked by the caller */
    if (a > g->file_n || n > g->file_n - a) return NULL;
    return g->file + a;
}

/* ==== 2. The program: values, operators, delegates, instructions ==== */

static int read_tensor(Prog *g, const FbTable *t, Val *v, const FbTable *cseg, const FbVec *coffs, uint64_t vi) {
    v->st = fb_u8(t, TEN_TYPE, 0);
    FbVec sizes, order;
    if (fb_vector(t, TEN_SIZES, 4, &sizes) < 0 || fb_vector(t, TEN_DIM_ORDER, 1, &order) < 0) return -1;
    if (fb_i32(t, TEN_STORAGE_OFFSET, 0) != 0) return fail(g, "value %llu: tensor with a storage offset", (unsigned long long)vi);
    if (sizes.len > PTE_MAX_DIMS) return fail(g, "value %llu: tensor of %llu dimensions", (unsigned long long)vi, (unsigned long long)sizes.len);
    if (st_size(v->st) == 0) return fail(g, "value %llu: tensor of scalar type %u, which this export never uses", (unsigned long long)vi, v->st);
    v->ndim = (uint8_t)sizes.len;
    uint64_t count = 1;
    for (uint64_t d = 0; d < sizes.len; d++) {
        v->sizes[d] = (int32_t)ld_u32(fb_elem(t, &sizes, d, 4));
        if (v->sizes[d] < 0 || !mul_u64(count, (uint64_t)v->sizes[d], &count) || count > (1ull << 40))
            return fail(g, "value %llu: impossible tensor shape", (unsigned long long)vi);
    }
    for (uint64_t d = 0; d < order.len; d++)
        if (order.len != sizes.len || fb_elem(t, &order, d, 1)[0] != d)
            return fail(g, "value %llu: tensor is not contiguous (dim_order)", (unsigned long long)vi);
    if (fb_has(t, TEN_EXTRA) || t->vt_fields > TEN_FIELDS)
        return fail(g, "value %llu: tensor with extra_tensor_info or newer fields (named or external .ptd data is a later ExecuTorch layout)", (unsigned long long)vi);
    v->dynamic = fb_u8(t, TEN_DYNAMISM, 0);
    if (v->dynamic > 1) return fail(g, "value %llu: tensor with an unbounded dynamic shape", (unsigned long long)vi);
    FbTable alloc;
    if (fb_table(t, TEN_ALLOC, &alloc) < 0) return -1;
    v->planned = alloc.pos != 0;
    v->buffer = fb_u32(t, TEN_BUFFER, 0);
    v->bytes = count * st_size(v->st);
    if (g->fb.bad) return -1;
    if (v->buffer == 0) return 0;
    if (v->planned) return fail(g, "value %llu: a planned tensor with initial data (mutable data segments are not this export)", (unsigned long long)vi);
    if (v->buffer >= coffs->len) return fail(g, "value %llu: constant buffer %u is not in the constant segment (%llu buffers)", (unsigned long long)vi, v->buffer, (unsigned long long)coffs->len);
    uint32_t seg = fb_u32(cseg, 0, 0);
    uint64_t off = ld_u64(fb_elem(cseg, coffs, v->buffer, 8));
    if (off > g->seg_size[seg] || v->bytes > g->seg_size[seg] - off)
        return fail(g, "value %llu: constant buffer %u (%llu bytes at %llu) lies outside the constant segment", (unsigned long long)vi, v->buffer,
                    (unsigned long long)v->bytes, (unsigned long long)off);
    v->data = seg_bytes(g, seg, off, v->bytes);
    return 0;
}

static int read_values(Prog *g, const FbTable *plan, const FbTable *cseg, const FbVec *coffs) {
    FbVec vv;
    if (fb_vector(plan, PLAN_VALUES, 4, &vv) < 0) return -1;
    if (vv.len == 0 || vv.len > PTE_MAX_VALUES) return fail(g, "forward has %llu values", (unsigned long long)vv.len);
    g->nv = vv.len;
    g->v = calloc(vv.len, sizeof *g->v);
    if (!g->v) return fail(g, "out of memory");
    for (uint64_t i = 0; i < vv.len; i++) {
        FbTable ev, x;
        Val *v = &g->v[i];
        if (fb_vec_table(plan, &vv, i, &ev)) return -1;
        v->type = fb_u8(&ev, 0, 0);
        if (v->type == KT_NONE || v->type >= KT_COUNT) return fail(g, "value %llu has an unknown type %u", (unsigned long long)i, v->type);
        if (fb_table(&ev, 1, &x) < 0) return -1;
        if (!x.pos) return fail(g, "value %llu (%s) has no body", (unsigned long long)i, kt_name[v->type]);
        switch (v->type) {
        case KT_INT: v->i = fb_i64(&x, 0, 0); break;
        case KT_BOOL: v->i = fb_u8(&x, 0, 0); break;
        case KT_DOUBLE: v->d = fb_f64(&x, 0, 0); break;
        case KT_TENSOR: if (read_tensor(g, &x, v, cseg, coffs, i)) return -1; break;
        case KT_INT_LIST: if (fb_vector(&x, 0, 8, &v->list) < 0) return -1; break;
        case KT_TENSOR_LIST: case KT_OPT_TENSOR_LIST: if (fb_vector(&x, 0, 4, &v->list) < 0) return -1; break;
        case KT_NULL: break;
        default: return fail(g, "value %llu is a %s, which this export never uses", (unsigned long long)i, kt_name[v->type]);
        }
        if (g->fb.bad) return -1;
    }
    /* list items name other values: check them all once, here */
    for (uint64_t i = 0; i < vv.len; i++) {
        const Val *v = &g->v[i];
        if (v->type != KT_INT_LIST && v->type != KT_TENSOR_LIST && v->type != KT_OPT_TENSOR_LIST) continue;
        if (v->list.len > PTE_MAX_ARGS) return fail(g, "value %llu: a list of %llu items", (unsigned long long)i, (unsigned long long)v->list.len);
        for (uint64_t k = 0; k < v->list.len; k++) {
            int64_t it = v->type == KT_INT_LIST ? (int64_t)ld_u64(g->fb.p + v->list.pos + 8 * k) : (int32_t)ld_u32(g->fb.p + v->list.pos + 4 * k);
            if (it == -1 && v->type == KT_OPT_TENSOR_LIST) continue;
            if (it < 0 || (uint64_t)it >= g->nv) return fail(g, "value %llu: list item %lld is not a value", (unsigned long long)i, (long long)it);
            uint8_t want = v->type == KT_INT_LIST ? KT_INT : KT_TENSOR;
            if (g->v[it].type != want) return fail(g, "value %llu: list item %lld is not a%s", (unsigned long long)i, (long long)it, want == KT_INT ? "n Int" : " Tensor");
        }
    }
    return 0;
}

/* Item k of a list value (the index of another value; -1 for None in an optional list). */
static int64_t list_item(const Prog *g, const Val *v, uint64_t k) {
    if (k >= v->list.len) return -2;
    return v->type == KT_INT_LIST ? (int64_t)ld_u64(g->fb.p + v->list.pos + 8 * k) : (int32_t)ld_u32(g->fb.p + v->list.pos + 4 * k);
}

static int read_operators(Prog *g, const FbTable *plan) {
    FbVec ov;
    if (fb_vector(plan, PLAN_OPERATORS, 4, &ov) < 0) return -1;
    if (ov.len > 4096) return fail(g, "forward has %llu operators", (unsigned long long)ov.len);
    g->n_ops = ov.len;
    g->op = calloc(ov.len + 1, sizeof *g->op);
    if (!g->op) return fail(g, "out of memory");
    for (uint64_t i = 0; i < ov.len; i++) {
        FbTable o;
        const char *name, *ovl;
        uint32_t nl, ol;
        if (fb_vec_table(plan, &ov, i, &o) || fb_string(&o, 0, &name, &nl) < 0 || fb_string(&o, 1, &ovl, &ol) < 0) return -1;
        char full[256];
        snprintf(full, sizeof full, "%.*s%s%.*s", (int)(nl < 120 ? nl : 120), name, ol ? "." : "", (int)(ol < 120 ? ol : 120), ovl);
        g->op[i] = OP_COUNT;
        for (uint32_t k = 0; k < OP_COUNT; k++)
            if (strcmp(full, op_names[k]) == 0) g->op[i] = k;
        char safe[256];
        if (g->op[i] == OP_COUNT)
            return fail(g, "forward uses operator '%s', which the Llama Guard 3 1B INT4 export does not", printable(safe, sizeof safe, full, (uint32_t)strlen(full)));
    }
    return 0;
}

static int read_delegates(Prog *g, const FbTable *plan) {
    FbVec dv;
    if (fb_vector(plan, PLAN_DELEGATES, 4, &dv) < 0) return -1;
    if (dv.len > 65536) return fail(g, "forward has %llu delegates", (unsigned long long)dv.len);
    g->n_deleg = dv.len;
    g->deleg_seg = calloc(dv.len + 1, sizeof *g->deleg_seg);
    if (!g->deleg_seg) return fail(g, "out of memory");
    for (uint64_t i = 0; i < dv.len; i++) {
        FbTable d, ref;
        const char *id;
        uint32_t il;
        if (fb_vec_table(plan, &dv, i, &d) || fb_string(&d, 0, &id, &il) < 0 || fb_table(&d, 1, &ref) < 0) return -1;
        char safe[64];
        if (il != 14 || memcmp(id, "XnnpackBackend", 14) != 0)
            return fail(g, "delegate %llu is for backend '%s'; only XnnpackBackend is supported", (unsigned long long)i, printable(safe, sizeof safe, id, il));
        if (!ref.pos) return fail(g, "delegate %llu has no processed data", (unsigned long long)i);
        uint8_t loc = fb_u8(&ref, 0, 0);
        uint32_t idx = fb_u32(&ref, 1, 0);
        if (g->fb.bad) return -1;
        if (loc != 1) return fail(g, "delegate %llu keeps its data inline in the program, not in a segment (not the INT4 release's layout)", (unsigned long long)i);
        if (idx == 0 || idx >= g->n_seg) return fail(g, "delegate %llu names segment %u, which is not a delegate segment", (unsigned long long)i, idx);
        g->deleg_seg[i] = idx;
    }
    return 0;
}

static int read_instructions(Prog *g, const FbTable *plan) {
    FbVec cv, iv;
    FbTable chain;
    if (fb_vector(plan, PLAN_CHAINS, 4, &cv) < 0) return -1;
    if (cv.len != 1) return fail(g, "forward has %llu chains, expected 1", (unsigned long long)cv.len);
    if (fb_vec_table(plan, &cv, 0, &chain) || fb_vector(&chain, 2, 4, &iv) < 0) return -1;
    if (iv.len == 0 || iv.len > PTE_MAX_VALUES) return fail(g, "forward has %llu instructions", (unsigned long long)iv.len);
    g->ni = iv.len;
    g->ins = calloc(iv.len, sizeof *g->ins);
    g->producer = malloc(g->nv * sizeof *g->producer);
    /* every argument is 4 bytes of the program, so the program's size bounds them all */
    uint64_t total = 0, cap = 0;
    if (!g->ins || !g->producer) return fail(g, "out of memory");
    for (uint64_t i = 0; i < g->nv; i++) g->producer[i] = -1;
    for (uint64_t i = 0; i < iv.len; i++) {
        FbTable in, call;
        FbVec av;
        Ins *x = &g->ins[i];
        if (fb_vec_table(&chain, &iv, i, &in)) return -1;
        x->kind = fb_u8(&in, 0, 0);
        if (x->kind != IA_KERNEL && x->kind != IA_DELEGATE)
            return fail(g, "instruction %llu is not a kernel or delegate call (type %u: control flow is not in this export)", (unsigned long long)i, x->kind);
        if (fb_table(&in, 1, &call) < 0 || fb_vector(&call, 1, 4, &av) < 0) return -1;
        if (!call.pos) return fail(g, "instruction %llu has no body", (unsigned long long)i);
        int32_t idx = fb_i32(&call, 0, 0);
        if (g->fb.bad) return -1;
        uint64_t limit = x->kind == IA_KERNEL ? g->n_ops : g->n_deleg;
        if (idx < 0 || (uint64_t)idx >= limit) return fail(g, "instruction %llu names %s %d, which does not exist", (unsigned long long)i, x->kind == IA_KERNEL ? "operator" : "delegate", idx);
        if (av.len == 0 || av.len > PTE_MAX_ARGS) return fail(g, "instruction %llu has %llu arguments", (unsigned long long)i, (unsigned long long)av.len);
        x->op = x->kind == IA_KERNEL ? g->op[idx] : (uint32_t)idx;
        x->nargs = (uint32_t)av.len;
        if (total + av.len > cap) {
            cap = cap ? cap * 2 : 4096;
            int32_t *q = realloc(g->args, cap * sizeof *q);
            if (!q) return fail(g, "out of memory");
            g->args = q;
        }
        int32_t *a = g->args + total;
        x->args_at = total;
        total += av.len;
        for (uint64_t k = 0; k < av.len; k++) {
            a[k] = (int32_t)ld_u32(fb_elem(&call, &av, k, 4));
            if (a[k] < 0 || (uint64_t)a[k] >= g->nv) return fail(g, "instruction %llu: argument %llu is not a value", (unsigned long long)i, (unsigned long long)k);
        }
        /* the last argument is what it writes (the out tensor, or the Int of a symbolic op);
         * an SSA program writes each value once */
        int32_t out = a[av.len - 1];
        if (g->producer[out] >= 0) return fail(g, "instruction %llu writes value %d, already written by instruction %lld", (unsigned long long)i, out, (long long)g->producer[out]);
        g->producer[out] = (int64_t)i;
    }
    for (uint64_t i = 0; i < iv.len; i++) g->ins[i].args = g->args + g->ins[i].args_at; /* the array has stopped moving */
    return 0;
}

/* A metadata method: a plan with no inputs returning constant Ints/Bools; n outputs into out. */
static int read_meta_plan(Prog *g, const FbTable *plan, int64_t *out, int max, int *n) {
    FbVec vv, ov;
    if (fb_vector(plan, PLAN_VALUES, 4, &vv) < 0 || fb_vector(plan, PLAN_OUTPUTS, 4, &ov) < 0) return -1;
    if (ov.len == 0 || ov.len > (uint64_t)max) return fail(g, "a metadata method returns %llu values", (unsigned long long)ov.len);
    for (uint64_t k = 0; k < ov.len; k++) {
        int32_t vi = (int32_t)ld_u32(fb_elem(plan, &ov, k, 4));
        FbTable ev, x;
        if (vi < 0 || (uint64_t)vi >= vv.len) return fail(g, "a metadata method's output %d is not a value", vi);
        if (fb_vec_table(plan, &vv, (uint64_t)vi, &ev) || fb_table(&ev, 1, &x) < 0) return -1;
        uint8_t t = fb_u8(&ev, 0, 0);
        if (t == KT_INT) out[k] = fb_i64(&x, 0, 0);
        else if (t == KT_BOOL) out[k] = fb_u8(&x, 0, 0);
        else return fail(g, "a metadata method returns a %s", t < KT_COUNT ? kt_name[t] : "value of unknown type");
    }
    *n = (int)ov.len;
    return g->fb.bad ? -1 : 0;
}

/* ==== 3. XNNPACK delegate blobs ==== */

/* xnnpack_schema.fbs field ids */
enum { XG_VERSION, XG_NODES, XG_VALUES, XG_NUM_EXTERNS, XG_INPUT_IDS, XG_OUTPUT_IDS, XG_CONST_BUFFER, XG_MEM_SIZES, XG_CONST_DATA };
enum { XT_DATATYPE, XT_NUM_DIMS, XT_DIMS, XT_CONST_IDX, XT_EXTERNAL_ID, XT_FLAGS, XT_ID_OUT };
enum { XDT_FP32 = 1, XDT_QDINT8 = 9, XDT_QBINT4 = 10 };
enum { XV_TENSOR = 1, XV_QUANT = 2 };
enum { XQ_PER_TOKEN_DYNAMIC = 3, XQ_PER_CHANNEL_GROUP = 4 };
enum { XN_FULLY_CONNECTED = 2, XN_CONVERT = 18 };
#define XNN_EXT_INPUT 1u
#define XNN_EXT_OUTPUT 2u
#define XNN_VALUES 4
#define XNN_HEADER 30

typedef struct {
    uint16_t datatype;
    uint32_t ndims, dims[4], const_idx, external_id, flags, id;
    uint8_t quant;       /* XQ_* or 0 */
    FbTable qp;          /* the quant params table */
} XVal;

static int read_xvalue(FbBuf *fb, const FbTable *graph, const FbVec *vv, uint64_t i, XVal *x) {
    FbTable xv, body, tv;
    memset(x, 0, sizeof *x);
    if (fb_vec_table(graph, vv, i, &xv) || fb_table(&xv, 1, &body) < 0) return -1;
    uint8_t kind = fb_u8(&xv, 0, 0);
    if (!body.pos || (kind != XV_TENSOR && kind != XV_QUANT)) return fb_fail(fb, "value %llu is not a tensor", (unsigned long long)i);
    tv = body;
    if (kind == XV_QUANT) {
        if (fb_table(&body, 0, &tv) < 0 || fb_table(&body, 2, &x->qp) < 0) return -1;
        x->quant = fb_u8(&body, 1, 0);
        if (!tv.pos || !x->qp.pos) return fb_fail(fb, "quantized value %llu lacks its tensor or parameters", (unsigned long long)i);
    }
    FbVec dims;
    x->datatype = fb_u16(&tv, XT_DATATYPE, 0);
    x->ndims = fb_u32(&tv, XT_NUM_DIMS, 0);
    if (fb_vector(&tv, XT_DIMS, 4, &dims) < 0) return -1;
    if (dims.len != x->ndims || x->ndims > 4 || x->ndims < 2) return fb_fail(fb, "value %llu has %llu dims (num_dims %u)", (unsigned long long)i, (unsigned long long)dims.len, x->ndims);
    for (uint32_t d = 0; d < x->ndims; d++) x->dims[d] = ld_u32(fb_elem(&tv, &dims, d, 4));
    x->const_idx = fb_u32(&tv, XT_CONST_IDX, 0);
    x->external_id = fb_u32(&tv, XT_EXTERNAL_ID, 0);
    x->flags = fb_u32(&tv, XT_FLAGS, 0);
    x->id = fb_u32(&tv, XT_ID_OUT, 0);
    return fb->bad ? -1 : 0;
}

int pte_read_xnn(PteLinear *l, const uint8_t *p, uint64_t n, const char *what, char *err) {
    memset(l, 0, sizeof *l);
    FbBuf whole = { p, n, what, err, 0 };
    if (n < 32 || memcmp(p + 4, "XH00", 4) != 0) return fb_fail(&whole, "not an XNNPACK delegate blob (no XH00 header)");
    uint32_t hlen = ld_u16(p + 8), fb_off = ld_u32(p + 10), fb_size = ld_u32(p + 14), cd_off = ld_u32(p + 18);
    uint64_t cd_size = ld_u64(p + 22);
    if (hlen != XNN_HEADER) return fb_fail(&whole, "XH00 header length %u, expected %d", hlen, XNN_HEADER);
    if (fb_off < 32 || fb_off > n || fb_size > n - fb_off) return fb_fail(&whole, "XNNPACK graph (%u bytes at %u) lies outside the blob", fb_size, fb_off);
    if (cd_off < (uint64_t)fb_off + fb_size || cd_off > n || cd_size > n - cd_off)
        return fb_fail(&whole, "XNNPACK constant data (%llu bytes at %u) overlaps the graph or lies outside the blob", (unsigned long long)cd_size, cd_off);
    FbBuf fb = { p + fb_off, fb_size, what, err, 0 };
    FbTable g;
    if (fb_root(&fb, "XN01", &g)) return -1;
    FbVec nodes, vals, cdata;
    if (fb_vector(&g, XG_NODES, 4, &nodes) < 0 || fb_vector(&g, XG_VALUES, 4, &vals) < 0 || fb_vector(&g, XG_CONST_DATA, 4, &cdata) < 0) return -1;
    if (vals.len != XNN_VALUES || nodes.len != 2)
        return fb_fail(&fb, "graph has %llu values and %llu nodes; a dynamically quantized linear has 4 and 2 (Convert, FullyConnected)",
                       (unsigned long long)vals.len, (unsigned long long)nodes.len);
    XVal v[XNN_VALUES], *by_id[XNN_VALUES] = { 0 };
    for (uint64_t i = 0; i < XNN_VALUES; i++) {
        if (read_xvalue(&fb, &g, &vals, i, &v[i])) return -1;
        if (v[i].id >= XNN_VALUES || by_id[v[i].id]) return fb_fail(&fb, "value %llu has id %u (ids must be 0..3, once each)", (unsigned long long)i, v[i].id);
        by_id[v[i].id] = &v[i];
    }
    /* the two nodes: Convert(in -> q), FullyConnected(q, w -> out) */
    uint32_t cv_in = 0, cv_out = 0, fc_in = 0, fc_w = 0, fc_b = 0, fc_out = 0;
    for (uint64_t i = 0; i < 2; i++) {
        FbTable nd, body;
        if (fb_vec_table(&g, &nodes, i, &nd) || fb_table(&nd, 1, &body) < 0) return -1;
        uint8_t kind = fb_u8(&nd, 0, 0);
        if (!body.pos) return fb_fail(&fb, "node %llu has no body", (unsigned long long)i);
        if (i == 0 && kind == XN_CONVERT) {
            cv_in = fb_u32(&body, 0, 0);
            cv_out = fb_u32(&body, 1, 0);
        } else if (i == 1 && kind == XN_FULLY_CONNECTED) {
            fc_in = fb_u32(&body, 0, 0);
            fc_w = fb_u32(&body, 1, 0);
            fc_b = fb_u32(&body, 2, 0);
            fc_out = fb_u32(&body, 3, 0);
        } else {
            return fb_fail(&fb, "node %llu has type %u; expected Convert then FullyConnected (a dynamically quantized linear)", (unsigned long long)i, kind);
        }
    }
    if (fb.bad) return -1;
    if (cv_in >= XNN_VALUES || cv_out >= XNN_VALUES || fc_in != cv_out || fc_w >= XNN_VALUES || fc_out >= XNN_VALUES || fc_b < XNN_VALUES ||
        cv_in == cv_out || fc_w == cv_in || fc_w == cv_out || fc_out == cv_in || fc_out == cv_out || fc_out == fc_w)
        return fb_fail(&fb, "the nodes are not wired input -> Convert -> FullyConnected -> output without a bias");
    const XVal *in = by_id[cv_in], *q = by_id[cv_out], *w = by_id[fc_w], *out = by_id[fc_out];
    /* input: external fp32 [1, T, K]; q: qdint8 per token over the last dim; output: external fp32 [1, T, N] */
    if (in->datatype != XDT_FP32 || in->quant || !(in->flags & XNN_EXT_INPUT) || in->external_id != 0 || in->const_idx)
        return fb_fail(&fb, "the input is not an external fp32 tensor");
    if (out->datatype != XDT_FP32 || out->quant || !(out->flags & XNN_EXT_OUTPUT) || out->external_id != 1 || out->const_idx)
        return fb_fail(&fb, "the output is not an external fp32 tensor");
    if (q->datatype != XDT_QDINT8 || q->quant != XQ_PER_TOKEN_DYNAMIC || fb_i32(&q->qp, 0, 0) != 1 || q->const_idx || q->ndims != in->ndims)
        return fb_fail(&fb, "activations are not dynamically quantized to int8 per token (qdint8, one non-batch dim): another quantization scheme");
    if (w->datatype != XDT_QBINT4 || w->quant != XQ_PER_CHANNEL_GROUP || w->ndims != 2 || w->const_idx == 0)
        return fb_fail(&fb, "the weight is not a constant blockwise int4 (qbint4, per-channel groups) tensor: another quantization scheme (datatype %u)", w->datatype);
    uint32_t N = w->dims[0], K = w->dims[1], nd = in->ndims;
    for (uint32_t d = 0; d < nd; d++)
        if (q->dims[d] != in->dims[d]) return fb_fail(&fb, "the quantized activations' shape differs from the input's");
    if (out->ndims != nd || in->dims[nd - 1] != K || out->dims[nd - 1] != N)
        return fb_fail(&fb, "input [.., %u] / weight [%u, %u] / output [.., %u] do not chain", in->dims[nd - 1], N, K, out->dims[nd - 1]);
    for (uint32_t d = 0; d + 1 < nd; d++)
        if (out->dims[d] != in->dims[d]) return fb_fail(&fb, "input and output batch dims differ");
    int32_t group = fb_i32(&w->qp, 2, 0), chdim = fb_i32(&w->qp, 1, 0);
    FbVec sc, sc16;
    if (fb_vector(&w->qp, 0, 4, &sc) < 0 || fb_vector(&w->qp, 3, 2, &sc16) < 0) return -1;
    if (sc16.len) return fb_fail(&fb, "the weight carries bf16 scales (scale_bf16), a later XNNPACK serialization than the INT4 release's");
    if (group != 256 || chdim != 0) return fb_fail(&fb, "weight groups of %d along dim %d; the INT4 release uses 256 along in_features (dim 0 channels)", group, chdim);
    if (N == 0 || K == 0 || K % 256 || N > (1u << 20) || K > PTE_MAX_K) return fb_fail(&fb, "weight shape [%u, %u] is not a multiple of the group", N, K);
    if (sc.len != (uint64_t)N * (K / 256)) return fb_fail(&fb, "%llu scales for a [%u, %u] weight in groups of 256", (unsigned long long)sc.len, N, K);
    if (w->const_idx >= cdata.len) return fb_fail(&fb, "weight names constant data %u of %llu", w->const_idx, (unsigned long long)cdata.len);
    FbTable cd;
    if (fb_vec_table(&g, &cdata, w->const_idx, &cd)) return -1;
    uint64_t off = fb_u64(&cd, 0, 0), size = fb_u64(&cd, 1, 0), wbytes = (uint64_t)N * K / 2;
    if (fb.bad) return -1;
    if (size != wbytes || off > cd_size || wbytes > cd_size - off)
        return fb_fail(&fb, "weight data (%llu bytes at %llu) is not the %llu bytes of a [%u, %u] int4 matrix inside the constant data", (unsigned long long)size,
                       (unsigned long long)off, (unsigned long long)wbytes, N, K);
    l->n = N;
    l->k = K;
    l->group = 256;
    l->w = p + cd_off + off;
    l->scales = fb.p + sc.pos;
    for (uint64_t i = 0; i < sc.len; i++) {
        float s = ld_f32(l->scales + 4 * i);
        if (!(s >= 0 && s < 1e30f)) return fb_fail(&fb, "weight scale %llu is %g (not a finite, non-negative scale)", (unsigned long long)i, s);
    }
    return 0;
}

/* ==== 4. The forward graph ==== */

static const Ins *producer(const Prog *g, int32_t v, uint32_t op) {
    if (v < 0 || (uint64_t)v >= g->nv || g->producer[v] < 0) return NULL;
    const Ins *x = &g->ins[g->producer[v]];
    return x->kind == IA_KERNEL && x->op == op ? x : NULL;
}

static int is_tensor(const Prog *g, int32_t v, uint8_t st, int ndim) {
    return v >= 0 && (uint64_t)v < g->nv && g->v[v].type == KT_TENSOR && g->v[v].st == st && g->v[v].ndim == ndim;
}

/* A constant (data-bearing) tensor of scalar type st and ndim dims. */
static int is_const(const Prog *g, int32_t v, uint8_t st, int ndim) {
    return is_tensor(g, v, st, ndim) && g->v[v].buffer != 0;
}

static int64_t dim_of(const Prog *g, int32_t v, int d) { return g->v[v].sizes[d]; }

/* The two operands of a binary kernel (mul/add/sub: self, other, ...). */
static void operands(const Ins *x, int32_t *a, int32_t *b) {
    *a = x->nargs >= 3 ? x->args[0] : -1;
    *b = x->nargs >= 3 ? x->args[1] : -1;
}

/* The delegate instruction whose output (its second argument) is v, or NULL. */
static const Ins *delegate_of(const Prog *g, int32_t v) {
    if (v < 0 || (uint64_t)v >= g->nv || g->producer[v] < 0) return NULL;
    const Ins *x = &g->ins[g->producer[v]];
    return x->kind == IA_DELEGATE ? x : NULL;
}

/* RMSNorm as llama_transformer.py writes it, out = mul(mul(x, rsqrt(add(mean(mul(x, x), -1, keepdim), eps))), w):
 * returns x (or -1) and sets the weight value and the eps constant. */
static int32_t match_norm(const Prog *g, int32_t out, int32_t *weight, float *eps) {
    const Ins *m2 = producer(g, out, OP_MUL), *m1, *ad, *rs, *mean, *sq;
    int32_t a, b, x, r, s, e;
    if (!m2) return -1;
    operands(m2, &a, &b);
    if (is_const(g, b, ST_FLOAT, 1) && producer(g, a, OP_MUL)) *weight = b, m1 = producer(g, a, OP_MUL);
    else if (is_const(g, a, ST_FLOAT, 1) && producer(g, b, OP_MUL)) *weight = a, m1 = producer(g, b, OP_MUL);
    else return -1;
    operands(m1, &x, &r);
    if (!(rs = producer(g, r, OP_RSQRT))) {
        int32_t t = x; x = r; r = t;
        if (!(rs = producer(g, r, OP_RSQRT))) return -1;
    }
    if (!(ad = producer(g, rs->args[0], OP_ADD))) return -1;
    operands(ad, &s, &e);
    if (!is_const(g, e, ST_FLOAT, 0) || !(mean = producer(g, s, OP_MEAN)) || !(sq = producer(g, mean->args[0], OP_MUL))) return -1;
    if (sq->args[0] != x || sq->args[1] != x) return -1;
    /* mean over the last dim only, keepdim */
    const Val *dims = &g->v[mean->args[1]];
    if (mean->nargs < 4 || dims->type != KT_INT_LIST || dims->list.len != 1 || g->v[mean->args[2]].type != KT_BOOL || !g->v[mean->args[2]].i) return -1;
    int64_t d = g->v[list_item(g, dims, 0)].i;
    if (d != -1 && d != g->v[x].ndim - 1) return -1;
    *eps = g->v[e].data ? ld_f32(g->v[e].data) : 1e-5f; /* structure-only reads have no data */
    if (!is_tensor(g, x, ST_FLOAT, g->v[x].ndim) || g->v[*weight].sizes[0] != dim_of(g, x, g->v[x].ndim - 1)) return -1;
    return x;
}

/* Walk back from value v through kernel ops (not through delegates or sdpa) and collect the
 * delegates and constant tensors reached. pair_view: whether a view to [..., hd/2, 2] was passed. */
typedef struct {
    const Ins *deleg[4];
    int n_deleg;
    int32_t consts[4];
    int n_consts;
    int pair_view;
    int overflow;
} Trace;

static void trace_back(const Prog *g, int32_t v, uint8_t *seen, Trace *t, int64_t half) {
    /* explicit stack: the graph is a DAG but can be long (a whole model behind the residual) */
    int32_t *stack = malloc(g->nv * sizeof *stack);
    uint64_t sp = 0;
    if (!stack) { t->overflow = 1; return; }
    memset(seen, 0, g->nv);
    stack[sp++] = v;
    seen[v] = 1;
    while (sp) {
        int32_t u = stack[--sp];
        const Val *uv = &g->v[u];
        if (uv->type == KT_TENSOR && uv->buffer) {
            if (t->n_consts < 4) t->consts[t->n_consts++] = u;
            else t->overflow = 1;
            continue;
        }
        if (uv->type == KT_TENSOR_LIST || uv->type == KT_OPT_TENSOR_LIST) { /* cat's inputs, index_put's indices */
            for (uint64_t k = 0; k < uv->list.len; k++) {
                int64_t a = list_item(g, uv, k);
                if (a >= 0 && !seen[a]) seen[a] = 1, stack[sp++] = (int32_t)a;
            }
            continue;
        }
        if (g->producer[u] < 0) continue;
        const Ins *x = &g->ins[g->producer[u]];
        if (x->kind == IA_DELEGATE) {
            if (t->n_deleg < 4) t->deleg[t->n_deleg++] = x;
            else t->overflow = 1;
            continue;
        }
        if (x->op == OP_SDPA || x->op == OP_EMBED) continue;
        if (x->op == OP_VIEW && uv->ndim == 5 && uv->sizes[4] == 2 && uv->sizes[3] == half) t->pair_view = 1;
        for (uint32_t k = 0; k + 1 < x->nargs; k++) {
            int32_t a = x->args[k];
            if (a == u || seen[a]) continue;
            seen[a] = 1;
            stack[sp++] = a;
        }
    }
    free(stack);
}

/* The kernel of type op that reads value v as an operand, or NULL (the first in program order). */
static const Ins *consumer(const Prog *g, int32_t v, uint32_t op) {
    for (uint64_t i = 0; i < g->ni; i++) {
        const Ins *x = &g->ins[i];
        if (x->kind != IA_KERNEL || x->op != op) continue;
        for (uint32_t k = 0; k + 1 < x->nargs; k++)
            if (x->args[k] == v) return x;
    }
    return NULL;
}

static int32_t deleg_in(const Ins *d) { return d->args[0]; }
static int32_t deleg_out(const Ins *d) { return d->args[1]; }

/* The residual add that reads a and b. */
static int32_t residual(const Prog *g, int32_t a, int32_t b) {
    for (uint64_t i = 0; i < g->ni; i++) {
        const Ins *x = &g->ins[i];
        if (x->kind != IA_KERNEL || x->op != OP_ADD || x->nargs < 4) continue;
        if ((x->args[0] == a && x->args[1] == b) || (x->args[0] == b && x->args[1] == a)) return x->args[x->nargs - 1];
    }
    return -1;
}

typedef struct {
    const Ins *used[PTE_MAX_LAYERS * 7 + 1];
    int n_used;
} Claimed;

static int claim(Prog *g, Claimed *c, const Ins *d, const char *what, uint32_t layer) {
    for (int i = 0; i < c->n_used; i++)
        if (c->used[i] == d) return fail(g, "layer %u: the delegate found for %s is already another weight (graph structure does not match)", layer, what);
    if (c->n_used == (int)(sizeof c->used / sizeof c->used[0])) return fail(g, "too many delegates");
    c->used[c->n_used++] = d;
    return 0;
}

/* Attach a delegate's linear (parsed from its segment) after checking its shape. */
static int bind_linear(Prog *g, const Ins *d, PteLinear *l, uint32_t n, uint32_t k, const char *what, uint32_t layer) {
    uint32_t di = d->op;
    uint64_t seg = g->deleg_seg[di];
    char where[300];
    snprintf(where, sizeof where, "%.200s: delegate %u (layer %u %s)", g->path, di, layer, what);
    if (d->nargs != 2) return fail(g, "delegate %u is called with %u arguments, expected [input, output]", di, d->nargs);
    const uint8_t *p = seg_bytes(g, seg, 0, g->seg_size[seg]);
    if (p) {
        if (pte_read_xnn(l, p, g->seg_size[seg], where, g->err)) { g->fb.bad = 1; return -1; }
    } else {
        l->n = n, l->k = k, l->group = 256; /* structure only: the blob is not in the bytes given */
    }
    l->delegate = di;
    if (l->n != n || l->k != k)
        return fail(g, "delegate %u (layer %u %s) is [%u, %u]; the graph needs [%u, %u]", di, layer, what, l->n, l->k, n, k);
    /* the program's view of the call must agree with the blob: [.., K] in, [.., N] out */
    const Val *in = &g->v[deleg_in(d)], *out = &g->v[deleg_out(d)];
    if (in->type != KT_TENSOR || out->type != KT_TENSOR || in->st != ST_FLOAT || out->st != ST_FLOAT || in->ndim < 2 || out->ndim != in->ndim ||
        in->sizes[in->ndim - 1] != k || out->sizes[out->ndim - 1] != n)
        return fail(g, "delegate %u (layer %u %s): the program passes tensors that are not fp32 [.., %u] -> [.., %u]", di, layer, what, k, n);
    return 0;
}

/* One decoder layer, starting from its residual input x and its sdpa call. Returns the residual
 * output, or -1. */
static int32_t match_layer(Prog *g, PteModel *m, Claimed *c, uint32_t l, int32_t x, const Ins *sdpa, uint8_t *seen, int32_t tables[2]) {
    PteLayer *L = &m->layers[l];
    int64_t half = m->head_dim / 2;
    if (sdpa->nargs < 12) return fail(g, "layer %u: sdpa_with_kv_cache has %u arguments", l, sdpa->nargs);
    /* sdpa_with_kv_cache(q, k, v, k_cache, v_cache, start_pos, seq_len, mask, dropout, is_causal, scale, out) */
    Trace tq = { 0 }, tk = { 0 }, tv = { 0 };
    trace_back(g, sdpa->args[0], seen, &tq, half);
    trace_back(g, sdpa->args[1], seen, &tk, half);
    trace_back(g, sdpa->args[2], seen, &tv, half);
    if (tq.overflow || tk.overflow || tv.overflow || tq.n_deleg != 1 || tk.n_deleg != 1 || tv.n_deleg != 1)
        return fail(g, "layer %u: attention's query, key and value do not each come from one linear (graph structure does not match)", l);
    if (tq.n_consts != 2 || tk.n_consts != 2 || tv.n_consts != 0 || !tq.pair_view || !tk.pair_view)
        return fail(g, "layer %u: RoPE is not applied to q and k alone with two tables over interleaved pairs (graph structure does not match)", l);
    for (int i = 0; i < 2; i++) {
        int32_t a = tq.consts[i], b = tk.consts[i];
        int ok = (a == tables[0] || a == tables[1]) && (b == tables[0] || b == tables[1]) && tq.consts[0] != tq.consts[1];
        if (tables[0] < 0) ok = tq.consts[0] != tq.consts[1] && ((tk.consts[0] == tq.consts[0] && tk.consts[1] == tq.consts[1]) || (tk.consts[0] == tq.consts[1] && tk.consts[1] == tq.consts[0]));
        if (!ok) return fail(g, "layer %u: q and k do not use the same two RoPE tables as the other layers", l);
    }
    if (tables[0] < 0) tables[0] = tq.consts[0], tables[1] = tq.consts[1];
    const Ins *dq = tq.deleg[0], *dk = tk.deleg[0], *dv = tv.deleg[0];
    int32_t xa = deleg_in(dq), w;
    float eps;
    if (deleg_in(dk) != xa || deleg_in(dv) != xa) return fail(g, "layer %u: q, k and v do not read the same normed input", l);
    if (match_norm(g, xa, &w, &eps) != x) return fail(g, "layer %u: q/k/v do not read an RMSNorm of the residual stream", l);
    L->attn_norm = g->v[w].data;
    /* caches: FLOAT [1, max_seq_len, n_kv, hd], planned, no data */
    for (int i = 3; i < 5; i++) {
        int32_t cv = sdpa->args[i];
        if (!is_tensor(g, cv, ST_FLOAT, 4) || !g->v[cv].planned || g->v[cv].buffer || dim_of(g, cv, 1) != m->max_seq_len || dim_of(g, cv, 2) != m->n_kv_heads ||
            dim_of(g, cv, 3) != m->head_dim)
            return fail(g, "layer %u: the KV caches are not FLOAT [1, %u, %u, %u] buffers", l, m->max_seq_len, m->n_kv_heads, m->head_dim);
    }
    const Val *causal = &g->v[sdpa->args[9]];
    if (causal->type != KT_BOOL || !causal->i || g->v[sdpa->args[7]].type != KT_NULL) return fail(g, "layer %u: attention is not causal without a mask", l);
    uint32_t qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim;
    if (claim(g, c, dq, "wq", l) || claim(g, c, dk, "wk", l) || claim(g, c, dv, "wv", l) || bind_linear(g, dq, &L->wq, qd, m->dim, "wq", l) ||
        bind_linear(g, dk, &L->wk, kvd, m->dim, "wk", l) || bind_linear(g, dv, &L->wv, kvd, m->dim, "wv", l))
        return -1;
    /* wo reads the attention output (through views) */
    const Ins *dwo = NULL;
    for (uint64_t i = 0; i < g->ni && !dwo; i++) {
        const Ins *d = &g->ins[i];
        if (d->kind != IA_DELEGATE || d->nargs != 2) continue;
        int32_t u = deleg_in(d);
        const Ins *vw;
        while ((vw = producer(g, u, OP_VIEW))) u = vw->args[0];
        if (g->producer[u] >= 0 && &g->ins[g->producer[u]] == sdpa) dwo = d;
    }
    if (!dwo) return fail(g, "layer %u: no linear reads the attention output", l);
    if (claim(g, c, dwo, "wo", l) || bind_linear(g, dwo, &L->wo, m->dim, qd, "wo", l)) return -1;
    int32_t h = residual(g, x, deleg_out(dwo));
    if (h < 0) return fail(g, "layer %u: wo's output is not added to the residual stream", l);
    /* the MLP: w2(mul(mul(g1, sigmoid(g1)), w3(y))), g1 = w1(y), y = RMSNorm(h) */
    for (uint64_t i = 0; i < g->ni; i++) {
        const Ins *d2 = &g->ins[i], *mul, *silu, *sig, *d1, *d3;
        if (d2->kind != IA_DELEGATE || d2->nargs != 2 || !(mul = producer(g, deleg_in(d2), OP_MUL))) continue;
        int32_t a, b, p, q;
        operands(mul, &a, &b);
        if (!(silu = producer(g, a, OP_MUL))) { int32_t t = a; a = b; b = t; silu = producer(g, a, OP_MUL); }
        if (!silu || !(d3 = delegate_of(g, b))) continue;
        operands(silu, &p, &q);
        if ((sig = producer(g, q, OP_SIGMOID)) && sig->args[0] == p) d1 = delegate_of(g, p);
        else if ((sig = producer(g, p, OP_SIGMOID)) && sig->args[0] == q) d1 = delegate_of(g, q);
        else continue;
        if (!d1 || deleg_in(d1) != deleg_in(d3) || match_norm(g, deleg_in(d1), &w, &eps) != h) continue;
        L->ffn_norm = g->v[w].data;
        if (claim(g, c, d1, "w1", l) || claim(g, c, d3, "w3", l) || claim(g, c, d2, "w2", l) ||
            bind_linear(g, d1, &L->w1, m->hidden_dim, m->dim, "w1", l) || bind_linear(g, d3, &L->w3, m->hidden_dim, m->dim, "w3", l) ||
            bind_linear(g, d2, &L->w2, m->dim, m->hidden_dim, "w2", l))
            return -1;
        int32_t out = residual(g, h, deleg_out(d2));
        if (out < 0) return fail(g, "layer %u: w2's output is not added to the residual stream", l);
        return out;
    }
    return fail(g, "layer %u: no SwiGLU MLP (w2(silu(w1(norm(h))) * w3(norm(h)))) after the attention", l);
}

/* hidden_dim is the output width of the linear under the first sigmoid. */
static int find_hidden(Prog *g, PteModel *m) {
    for (uint64_t i = 0; i < g->ni; i++) {
        const Ins *x = &g->ins[i];
        if (x->kind != IA_KERNEL || x->op != OP_SIGMOID) continue;
        const Ins *d = delegate_of(g, x->args[0]);
        const Val *v = d ? &g->v[deleg_out(d)] : NULL;
        if (!v || v->type != KT_TENSOR || v->ndim < 2 || v->sizes[v->ndim - 1] <= 0 || v->sizes[v->ndim - 1] > (1 << 20)) break;
        m->hidden_dim = (uint32_t)v->sizes[v->ndim - 1];
        return 0;
    }
    return fail(g, "forward has no SwiGLU (sigmoid of a linear's output)");
}

/* The tail: x_last = select(slice(h, 1, ...), 1, -1); logits20 = head(RMSNorm(x_last));
 * out = slice_scatter(full(-inf), index_put(full, [None, prune_map], logits20)). */
static int match_head(Prog *g, PteModel *m, Claimed *c, int32_t h) {
    const Ins *head = NULL;
    int32_t w = -1;
    float eps;
    for (uint64_t i = 0; i < g->ni && !head; i++) {
        const Ins *d = &g->ins[i];
        if (d->kind != IA_DELEGATE || d->nargs != 2) continue;
        int32_t x = match_norm(g, deleg_in(d), &w, &eps);
        const Ins *sel = x >= 0 ? producer(g, x, OP_SELECT) : NULL, *sl = sel ? producer(g, sel->args[0], OP_SLICE) : NULL;
        if (sl && sl->args[0] == h) head = d;
    }
    if (!head) return fail(g, "no output head: no linear reads the final RMSNorm of the last position");
    m->norm = g->v[w].data;
    const Val *hv = &g->v[deleg_out(head)];
    if (hv->type != KT_TENSOR || hv->ndim < 2 || hv->sizes[hv->ndim - 1] <= 0 || hv->sizes[hv->ndim - 1] > PTE_HEAD_MAX)
        return fail(g, "the output head is not a pruned head of at most %d rows (an unpruned model is not the INT4 release)", PTE_HEAD_MAX);
    m->n_head = (uint32_t)hv->sizes[hv->ndim - 1];
    if (claim(g, c, head, "output head", m->n_layers) || bind_linear(g, head, &m->head, m->n_head, m->dim, "output head", m->n_layers)) return -1;
    /* index_put.out(self, indices, values, accumulate, out): self = full([1, vocab], -inf) */
    const Ins *ip = consumer(g, deleg_out(head), OP_INDEX_PUT), *full, *sc;
    if (!ip || ip->nargs < 5 || ip->args[2] != deleg_out(head) || !(full = producer(g, ip->args[0], OP_FULL)))
        return fail(g, "the output head's rows are not scattered into a full vocabulary (index_put into full)");
    const Val *fill = &g->v[full->args[1]], *idx = &g->v[ip->args[1]], *fv = &g->v[ip->args[0]];
    if (fill->type != KT_DOUBLE || !(isinf(fill->d) && fill->d < 0)) return fail(g, "the pruned logits are not filled with -inf");
    if (fv->type != KT_TENSOR || fv->st != ST_FLOAT || fv->ndim != 2 || fv->sizes[1] != m->vocab) return fail(g, "the expanded logits are not FLOAT [1, %u]", m->vocab);
    if (idx->type != KT_OPT_TENSOR_LIST || idx->list.len != 2 || list_item(g, idx, 0) != -1 || list_item(g, idx, 1) < 0)
        return fail(g, "the head's rows are not indexed as [None, prune_map]");
    int32_t pm = (int32_t)list_item(g, idx, 1);
    if (!is_const(g, pm, ST_LONG, 1) || dim_of(g, pm, 0) != m->n_head) return fail(g, "the prune map is not a LONG [%u] constant", m->n_head);
    for (uint32_t r = 0; r < m->n_head; r++) {
        int64_t id = g->v[pm].data ? (int64_t)ld_u64(g->v[pm].data + 8 * r) : r;
        if (id < 0 || id >= m->vocab) return fail(g, "prune map row %u names token %lld, outside the vocabulary", r, (long long)id);
        for (uint32_t k = 0; k < r; k++)
            if (m->head_ids[k] == id) return fail(g, "prune map names token %lld twice", (long long)id);
        m->head_ids[r] = (int32_t)id;
    }
    /* forward returns slice_scatter(full, index_put's result, ...) */
    if (!(sc = producer(g, g->user_out, OP_SLICE_SCATTER)) || sc->args[0] != ip->args[0] || sc->args[1] != ip->args[ip->nargs - 1])
        return fail(g, "forward does not return the expanded logits");
    return 0;
}

/* ==== Entry points ==== */

void pte_free(PteModel *m) {
    free(m->layers);
    memset(m, 0, sizeof *m);
}

/* The metadata methods this export writes (E's export_llama --metadata); others are refused. */
static const char *const meta_names[] = { "append_eos_to_prompt", "get_bos_id", "get_eos_ids", "get_max_seq_len", "get_n_bos", "get_n_eos",
                                          "get_n_layers", "get_vocab_size", "use_kv_cache", "use_sdpa_with_kv_cache", "enable_dynamic_shape" };
enum { META_APPEND_EOS, META_BOS, META_EOS, META_MAX_SEQ, META_N_BOS, META_N_EOS, META_N_LAYERS, META_VOCAB, META_KV, META_SDPA, META_DYN, META_COUNT };

static int64_t positive(Prog *g, const int64_t *meta, const int *have, int k, int64_t hi) {
    if (!have[k]) { fail(g, "the program has no %s method", meta_names[k]); return -1; }
    if (meta[0] <= 0 || meta[0] > hi) { fail(g, "%s returns %lld", meta_names[k], (long long)meta[0]); return -1; }
    return meta[0];
}

static int walk(Prog *g, PteModel *m) {
    uint64_t program_size = 0;
    if (read_header(g, &program_size)) return -1;
    g->fb = (FbBuf){ g->file, program_size, g->path, g->err, 0 };
    FbTable prog, cseg;
    FbVec plans, coffs, cbuf, ddata, muts;
    if (fb_root(&g->fb, "ET12", &prog)) return -1;
    if (prog.vt_fields > PROG_FIELDS && fb_has(&prog, PROG_FIELDS))
        return fail(g, "the program has fields newer than the 2024 schema (named data, an external .ptd?): a later ExecuTorch layout");
    if (fb_vector(&prog, PROG_CONST_BUFFER, 4, &cbuf) < 0 || fb_vector(&prog, PROG_DELEGATE_DATA, 4, &ddata) < 0 ||
        fb_vector(&prog, PROG_MUTABLE_SEGMENTS, 4, &muts) < 0 || fb_table(&prog, PROG_CONST_SEGMENT, &cseg) < 0)
        return -1;
    if (cbuf.len) return fail(g, "constants are in the program's constant_buffer (the layout before September 2024), not a constant segment");
    if (muts.len) return fail(g, "the program has mutable data segments, which the INT4 release does not");
    if (ddata.len) return fail(g, "the program carries inline delegate data, which the INT4 release does not");
    if (read_segments(g, &prog)) return -1;
    /* methods: forward plus the metadata constants */
    if (fb_vector(&prog, PROG_PLANS, 4, &plans) < 0) return -1;
    if (plans.len == 0 || plans.len > 64) return fail(g, "the program has %llu methods", (unsigned long long)plans.len);
    int64_t meta[META_COUNT][4] = { { 0 } }, forward_at = -1;
    int have[META_COUNT] = { 0 }, nout[META_COUNT] = { 0 };
    for (uint64_t i = 0; i < plans.len; i++) {
        FbTable plan;
        const char *name;
        uint32_t nl;
        if (fb_vec_table(&prog, &plans, i, &plan) || fb_string(&plan, PLAN_NAME, &name, &nl) < 0) return -1;
        if (nl == 7 && memcmp(name, "forward", 7) == 0) {
            if (forward_at >= 0) return fail(g, "two forward methods");
            forward_at = (int64_t)i;
            continue;
        }
        int k = 0;
        while (k < META_COUNT && !(strlen(meta_names[k]) == nl && memcmp(meta_names[k], name, nl) == 0)) k++;
        char safe[48];
        if (k == META_COUNT) return fail(g, "the program has a method '%s', which the Llama Guard 3 1B INT4 export does not", printable(safe, sizeof safe, name, nl));
        if (have[k]) return fail(g, "method %s appears twice", meta_names[k]);
        have[k] = 1;
        if (read_meta_plan(g, &plan, meta[k], 4, &nout[k])) return -1;
    }
    if (forward_at < 0) return fail(g, "the program has no forward method");
    /* the backend and the operators say most clearly what a program is: check them first */
    FbTable fwd;
    FbVec inputs, outputs;
    if (fb_vec_table(&prog, &plans, (uint64_t)forward_at, &fwd) || read_delegates(g, &fwd) || read_operators(g, &fwd)) return -1;
    if (g->n_deleg == 0) return fail(g, "forward has no XNNPACK delegates (the INT4 release runs every linear in XNNPACK)");
    if (!cseg.pos || fb_vector(&cseg, 1, 8, &coffs) < 0) return g->fb.bad ? -1 : fail(g, "the program has no constant segment");
    if (fb_u32(&cseg, 0, 0) != 0 || coffs.len < 2) return fail(g, "the constant segment is not segment 0 with buffers");
    int64_t layers = positive(g, meta[META_N_LAYERS], have, META_N_LAYERS, PTE_MAX_LAYERS), vocab = positive(g, meta[META_VOCAB], have, META_VOCAB, 1 << 24),
            max_seq = positive(g, meta[META_MAX_SEQ], have, META_MAX_SEQ, 1 << 24);
    if (layers < 0 || vocab < 0 || max_seq < 0) return -1;
    if (!have[META_KV] || !meta[META_KV][0] || !have[META_SDPA] || !meta[META_SDPA][0])
        return fail(g, "the program is not exported with a KV cache and sdpa_with_kv_cache (use_kv_cache, use_sdpa_with_kv_cache)");
    m->n_layers = (uint32_t)layers;
    m->vocab = (uint32_t)vocab;
    m->max_seq_len = (uint32_t)max_seq;
    m->bos = have[META_BOS] ? meta[META_BOS][0] : -1;
    m->n_eos_ids = have[META_EOS] ? nout[META_EOS] : 0;
    for (int i = 0; i < m->n_eos_ids; i++) m->eos[i] = meta[META_EOS][i];

    /* forward's values and instructions */
    if (read_values(g, &fwd, &cseg, &coffs) || read_instructions(g, &fwd) || fb_vector(&fwd, PLAN_INPUTS, 4, &inputs) < 0 ||
        fb_vector(&fwd, PLAN_OUTPUTS, 4, &outputs) < 0)
        return -1;
    if (inputs.len != 2 || outputs.len != 1) return fail(g, "forward takes %llu inputs and returns %llu outputs; expected (tokens, start_pos) -> logits", (unsigned long long)inputs.len, (unsigned long long)outputs.len);
    for (int i = 0; i < 2; i++) g->user_in[i] = (int32_t)ld_u32(fb_elem(&fwd, &inputs, (uint64_t)i, 4));
    g->user_out = (int32_t)ld_u32(fb_elem(&fwd, &outputs, 0, 4));
    for (int i = 0; i < 3; i++) {
        int32_t v = i < 2 ? g->user_in[i] : g->user_out;
        if (v < 0 || (uint64_t)v >= g->nv) return fail(g, "forward's inputs/outputs are not values");
    }
    if (!is_tensor(g, g->user_in[0], ST_LONG, 2) || !is_tensor(g, g->user_in[1], ST_LONG, 1) || dim_of(g, g->user_in[0], 1) != max_seq - 1)
        return fail(g, "forward's inputs are not tokens LONG [1, %lld] and start_pos LONG [1]", (long long)max_seq - 1);
    /* every delegate is called once, and each has its own segment */
    for (uint64_t i = 0, k; i < g->n_deleg; i++) {
        uint64_t calls = 0;
        for (k = 0; k < g->ni; k++) calls += g->ins[k].kind == IA_DELEGATE && g->ins[k].op == i;
        if (calls != 1) return fail(g, "delegate %llu is called %llu times (each linear of this export runs once)", (unsigned long long)i, (unsigned long long)calls);
    }
    for (uint64_t i = 0; i < g->n_deleg; i++)
        for (uint64_t k = 0; k < i; k++)
            if (g->deleg_seg[i] == g->deleg_seg[k]) return fail(g, "delegates %llu and %llu share segment %u", (unsigned long long)k, (unsigned long long)i, g->deleg_seg[i]);

    /* the embedding: embedding_4bit.dtype_out(weight, scales, zero_points, qmin, qmax, tokens, dtype, out) */
    const Ins *emb = NULL;
    for (uint64_t i = 0; i < g->ni; i++)
        if (g->ins[i].kind == IA_KERNEL && g->ins[i].op == OP_EMBED) {
            if (emb) return fail(g, "forward has two embeddings");
            emb = &g->ins[i];
        }
    if (!emb || emb->nargs < 8) return fail(g, "forward has no 4-bit embedding (embedding_4bit)");
    int32_t ew = emb->args[0], es = emb->args[1], eout = emb->args[emb->nargs - 1];
    if (!is_const(g, ew, ST_BYTE, 2) || !is_const(g, es, ST_HALF, 2) || g->v[emb->args[2]].type != KT_NULL || emb->args[5] != g->user_in[0] ||
        !is_tensor(g, eout, ST_FLOAT, 3))
        return fail(g, "the embedding is not int4 BYTE weights with HALF scales and no zero points, reading the tokens");
    m->dim = (uint32_t)dim_of(g, eout, 2);
    int64_t egroups = dim_of(g, es, 1);
    if (m->dim == 0 || m->dim % 2 || dim_of(g, ew, 0) != vocab || dim_of(g, es, 0) != vocab || dim_of(g, ew, 1) * 2 != m->dim || egroups <= 0 || m->dim % egroups)
        return fail(g, "embedding weight [%lld, %lld] / scales [%lld, %lld] do not fit vocab %lld x dim %u", (long long)dim_of(g, ew, 0), (long long)dim_of(g, ew, 1),
                    (long long)dim_of(g, es, 0), (long long)egroups, (long long)vocab, m->dim);
    m->embed_group = m->dim / (uint32_t)egroups;
    if (m->embed_group != 32) return fail(g, "embedding groups of %u; the INT4 release uses 32 (-E 4,32)", m->embed_group);
    m->embed = g->v[ew].data;
    m->embed_scales = g->v[es].data;

    /* attention shapes from the first layer's sdpa and its KV cache */
    const Ins *sdpa[PTE_MAX_LAYERS];
    uint32_t ns = 0;
    for (uint64_t i = 0; i < g->ni; i++)
        if (g->ins[i].kind == IA_KERNEL && g->ins[i].op == OP_SDPA) {
            if (ns == m->n_layers) return fail(g, "forward has more attention calls than get_n_layers (%u)", m->n_layers);
            sdpa[ns++] = &g->ins[i];
        }
    if (ns != m->n_layers) return fail(g, "forward has %u attention calls but get_n_layers says %u", ns, m->n_layers);
    if (sdpa[0]->nargs < 12 || !is_tensor(g, sdpa[0]->args[3], ST_FLOAT, 4) || !is_tensor(g, sdpa[0]->args[0], ST_FLOAT, 4))
        return fail(g, "the attention call's query and cache are not FLOAT [1, T, heads, head_dim]");
    int64_t hd = dim_of(g, sdpa[0]->args[3], 3), kv = dim_of(g, sdpa[0]->args[3], 2), nh = dim_of(g, sdpa[0]->args[0], 2);
    if (hd <= 0 || hd % 2 || hd > 1024 || kv <= 0 || nh <= 0 || nh % kv || nh > 1024 || dim_of(g, sdpa[0]->args[0], 3) != hd)
        return fail(g, "attention shapes (%lld heads, %lld kv heads, head_dim %lld) are not a Llama's", (long long)nh, (long long)kv, (long long)hd);
    m->head_dim = (uint32_t)hd;
    m->n_kv_heads = (uint32_t)kv;
    m->n_heads = (uint32_t)nh;
    if (find_hidden(g, m)) return -1;

    m->layers = calloc(m->n_layers, sizeof *m->layers);
    uint8_t *seen = malloc(g->nv);
    Claimed *c = calloc(1, sizeof *c);
    int rc = -1;
    if (!m->layers || !seen || !c) { fail(g, "out of memory"); goto done; }
    int32_t x = eout, tables[2] = { -1, -1 };
    float eps0 = 0;
    for (uint32_t l = 0; l < m->n_layers; l++)
        if ((x = match_layer(g, m, c, l, x, sdpa[l], seen, tables)) < 0) goto done;
    if (match_head(g, m, c, x)) goto done;
    if ((uint64_t)c->n_used != g->n_deleg) { fail(g, "%llu delegates but only %d are weights of the model", (unsigned long long)g->n_deleg, c->n_used); goto done; }
    /* the RoPE tables: [max_seq_len, hd/2] each; which is cos: the one the rotation's
     * subtraction (a*cos - b*sin) reads first */
    for (int i = 0; i < 2; i++)
        if (!is_const(g, tables[i], ST_FLOAT, 2) || dim_of(g, tables[i], 0) != max_seq || dim_of(g, tables[i], 1) != hd / 2) {
            fail(g, "the RoPE tables are not FLOAT [%lld, %lld]", (long long)max_seq, (long long)hd / 2);
            goto done;
        }
    int cos_first = -1;
    for (uint64_t i = 0; i < g->ni && cos_first < 0; i++) {
        const Ins *s = &g->ins[i];
        if (s->kind != IA_KERNEL || s->op != OP_SUB) continue;
        Trace t = { 0 };
        trace_back(g, s->args[0], seen, &t, hd / 2);
        for (int k = 0; k < t.n_consts; k++)
            if (t.consts[k] == tables[0] || t.consts[k] == tables[1]) cos_first = t.consts[k] == tables[0];
    }
    if (cos_first < 0) { fail(g, "cannot tell the RoPE cos table from the sin table"); goto done; }
    m->freqs_cos = g->v[tables[cos_first ? 0 : 1]].data;
    m->freqs_sin = g->v[tables[cos_first ? 1 : 0]].data;
    /* one eps for every norm */
    for (uint64_t i = 0; i < g->ni; i++) {
        const Ins *a = &g->ins[i];
        const Ins *r = a->kind == IA_KERNEL && a->op == OP_ADD ? consumer(g, a->args[a->nargs - 1], OP_RSQRT) : NULL;
        if (!r || !is_const(g, a->args[1], ST_FLOAT, 0)) continue;
        float e = g->v[a->args[1]].data ? ld_f32(g->v[a->args[1]].data) : 1e-5f;
        if (eps0 == 0) eps0 = e;
        if (e != eps0 || !(e > 0 && e < 1)) { fail(g, "the RMSNorm eps constants differ or are not in (0, 1)"); goto done; }
    }
    m->eps = eps0;
    rc = 0;
done:
    free(seen);
    free(c);
    return rc;
}

int pte_read(PteModel *m, const uint8_t *p, uint64_t n, const char *path, int flags, char *err) {
    memset(m, 0, sizeof *m);
    Prog g = { .path = path, .err = err, .flags = flags, .file = p, .file_n = n };
    g.fb = (FbBuf){ p, n, path, err, 0 };
    int rc = walk(&g, m);
    prog_free(&g);
    if (rc) pte_free(m);
    return rc;
}

/* ==== 5. Rows: the stored int4 values as f32 (exact) and as Q4_0 blocks (lossless) ==== */

/* The bf16 block scale E's XNNCompiler hands XNNPACK (runtime/XNNCompiler.cpp, qbint4 weights):
 * the fp32 scale times 1.00389105 (to undo truncation's bias), then its low 16 bits dropped. */
static float xnn_bf16_scale(float s) {
    union { float f; uint32_t u; } v = { .f = s * 1.00389105f };
    v.u &= 0xFFFF0000u;
    return v.f;
}

static uint8_t nib(const uint8_t *row, uint64_t k, int high_first) {
    uint8_t b = row[k / 2];
    int high = (k & 1) ^ high_first;
    return high ? b >> 4 : b & 0x0F;
}

int pte_row_q4_f32(const SrcTensor *t, uint64_t r, float *out, char *err) {
    (void)err;
    uint64_t k = t->shape[1], groups = k / 256;
    const uint8_t *row = t->data + r * (k / 2), *sc = t->aux[0] + r * groups * 4;
    for (uint64_t i = 0; i < k; i++) out[i] = (float)((int)nib(row, i, 0) - 8) * ld_f32(sc + 4 * (i / 256));
    return 0;
}

int pte_row_emb4_f32(const SrcTensor *t, uint64_t r, float *out, char *err) {
    (void)err;
    uint64_t k = t->shape[1];
    const uint8_t *row = t->data + r * (k / 2), *sc = t->aux[0] + r * (k / 32) * 2;
    for (uint64_t i = 0; i < k; i++) out[i] = (float)((int)nib(row, i, 1) - 8) * f16_to_f32(ld_u16(sc + 2 * (i / 32)));
    return 0;
}

/* Q4_0 blocks of 32 from the stored nibbles (zero point 8 in both, so the nibbles move as they
 * are) and one f16 scale per block: the stored one for the embedding, the bf16 scale XNNPACK
 * uses for the linears (exact in f16 unless it is outside f16's range, which is refused). */
static int to_q4_0(const SrcTensor *t, const uint8_t *row, int high_first, const uint16_t *d16, uint8_t *dst) {
    uint64_t k = t->shape[1];
    (void)t;
    for (uint64_t b = 0; b < k / 32; b++) {
        uint8_t *blk = dst + b * 18;
        blk[0] = (uint8_t)d16[b];
        blk[1] = (uint8_t)(d16[b] >> 8);
        for (int j = 0; j < 16; j++) blk[2 + j] = (uint8_t)(nib(row, 32 * b + (uint64_t)j, high_first) | nib(row, 32 * b + (uint64_t)j + 16, high_first) << 4);
    }
    return 0;
}

int pte_row_q4_native(const SrcTensor *t, uint64_t r, uint8_t *dst, char *err) {
    uint64_t k = t->shape[1], groups = k / 256;
    const uint8_t *sc = t->aux[0] + r * groups * 4;
    uint16_t d16[PTE_MAX_K / 32];
    if (k > PTE_MAX_K) return errf(err, "%s: '%s' rows of %llu are too long", t->file, t->name, (unsigned long long)k);
    for (uint64_t g = 0; g < groups; g++) {
        float s = xnn_bf16_scale(ld_f32(sc + 4 * g));
        uint16_t h = f32_to_f16(s);
        if (f16_to_f32(h) != s)
            return errf(err, "%s: '%s' row %llu: block scale %g is outside what an f16 scale holds exactly; export with --dtype f32", t->file, t->name,
                        (unsigned long long)r, s);
        for (int b = 0; b < 8; b++) d16[g * 8 + (uint64_t)b] = h;
    }
    return to_q4_0(t, t->data + r * (k / 2), 0, d16, dst);
}

int pte_row_emb4_native(const SrcTensor *t, uint64_t r, uint8_t *dst, char *err) {
    uint64_t k = t->shape[1];
    const uint8_t *sc = t->aux[0] + r * (k / 32) * 2;
    uint16_t d16[PTE_MAX_K / 32];
    if (k > PTE_MAX_K) return errf(err, "%s: '%s' rows of %llu are too long", t->file, t->name, (unsigned long long)k);
    for (uint64_t b = 0; b < k / 32; b++) d16[b] = ld_u16(sc + 2 * b);
    return to_q4_0(t, t->data + r * (k / 2), 1, d16, dst);
}

/* ==== 6. Into a Source: params.json cross-checks, RoPE from the tables, the tokenizer ==== */

/* params.json of the INT4 release (llama-models arch_args): every key the program also
 * answers must agree with it. */
static int check_params(const char *path, const PteModel *m, Config *c, char *err) {
    Json j;
    if (load_json_file(&j, path, err)) return -1;
    int rc = -1;
    const JsonNode *root = json_root(&j);
    struct { const char *key; int64_t want; } ints[] = {
        { "dim", m->dim }, { "n_layers", m->n_layers }, { "n_heads", m->n_heads }, { "n_kv_heads", m->n_kv_heads },
        { "vocab_size", m->vocab }, { "hidden_dim", m->hidden_dim },
    };
    if (root->type != JSON_OBJECT) { errf(err, "%s: not a JSON object", path); goto done; }
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        const JsonNode *n = json_get(&j, root, ints[i].key);
        int64_t v;
        if (!n) { errf(err, "%s: missing \"%s\"", path, ints[i].key); goto done; }
        if (json_int(n, 0, INT64_MAX, &v) || v != ints[i].want) {
            errf(err, "%s: \"%s\" disagrees with the program (which has %lld)", path, ints[i].key, (long long)ints[i].want);
            goto done;
        }
    }
    const JsonNode *eps = json_get(&j, root, "norm_eps"), *theta = json_get(&j, root, "rope_freq_base"), *sr = json_get(&j, root, "use_scaled_rope");
    if (!eps || eps->type != JSON_NUMBER || (float)eps->num != m->eps) { errf(err, "%s: \"norm_eps\" is missing or differs from the program's eps %g", path, m->eps); goto done; }
    if (!theta || theta->type != JSON_NUMBER || !(theta->num > 1 && theta->num < 1e9)) { errf(err, "%s: \"rope_freq_base\" is missing or not a RoPE base", path); goto done; }
    if (!sr || (sr->type != JSON_TRUE && sr->type != JSON_FALSE)) { errf(err, "%s: \"use_scaled_rope\" must be true or false", path); goto done; }
    c->norm_eps = m->eps;
    c->rope_theta = (float)theta->num;
    c->rope_type = sr->type == JSON_TRUE ? ROPE_LLAMA3 : ROPE_NONE; /* confirmed against the tables by recover_rope */
    rc = 0;
done:
    json_free(&j);
    return rc;
}

/* How closely the runtime's RoPE must reproduce the tables: the runtime computes its f32
 * frequencies as HF does (powf), torch's pow can land one ulp away (<= 1.2e-7 for f <= 1:
 * columns 1 and 3 of the fixture), and that ulp grows with the position; plus cos/sin rounding. */
#define ROPE_ULP_PER_POS 1.2e-7
#define ROPE_TRIG_TOL 2e-6

/* The frequencies from the tables: row t, column i holds cos/sin(t * f_i) (E's
 * precompute_freqs_cis). f_i = atan2(sin, cos) / t at the largest row t with t * f_i < pi
 * (unambiguous and most precise); divisors against the unscaled base give the llama3
 * parameters; then the runtime's own frequencies (rope_inv_freq, f32) must reproduce every
 * entry of both tables. */
static int recover_rope(const PteModel *m, Config *c, const char *path, char *err) {
    uint32_t half = m->head_dim / 2;
    double *div = malloc(half * sizeof *div);
    float *inv = malloc(half * sizeof *inv);
    int rc = -1;
    if (!div || !inv) { errf(err, "out of memory"); goto done; }
    for (uint32_t i = 0; i < half; i++) {
        /* f_i <= 1: row 1 bounds it; then the best row below pi / f_i */
        double f1 = atan2(ld_f32(m->freqs_sin + 4 * ((uint64_t)half + i)), ld_f32(m->freqs_cos + 4 * ((uint64_t)half + i)));
        if (!(f1 > 0 && f1 <= 1.0001)) { errf(err, "%s: RoPE table column %u does not start as cos/sin of a frequency in (0, 1]", path, i); goto done; }
        double trow = floor(3.0 / f1);
        uint64_t t = trow >= m->max_seq_len - 1 ? m->max_seq_len - 1 : (uint64_t)trow;
        if (t < 1) t = 1;
        double f = atan2(ld_f32(m->freqs_sin + 4 * (t * half + i)), ld_f32(m->freqs_cos + 4 * (t * half + i))) / (double)t;
        double base = pow((double)c->rope_theta, -(double)(2 * i) / (double)m->head_dim);
        div[i] = base / f;
    }
    int scaled = c->rope_type == ROPE_LLAMA3;
    c->rope_type = ROPE_NONE;
    char what[300];
    snprintf(what, sizeof what, "%.200s: the RoPE tables against rope_freq_base %g: divisor", path, c->rope_theta);
    if (rope_from_divisors(c, div, what, err)) goto done;
    if (scaled != (c->rope_type == ROPE_LLAMA3)) {
        errf(err, "%s: params.json says use_scaled_rope %s but the program's RoPE tables are %sscaled", path, scaled ? "true" : "false", scaled ? "not " : "");
        goto done;
    }
    rope_inv_freq(c, inv);
    double worst = 0;
    for (uint64_t t = 0; t < m->max_seq_len; t++)
        for (uint32_t i = 0; i < half; i++) {
            float a = (float)t * inv[i];
            double dc = fabs((double)cosf(a) - ld_f32(m->freqs_cos + 4 * (t * half + i)));
            double ds = fabs((double)sinf(a) - ld_f32(m->freqs_sin + 4 * (t * half + i)));
            if (dc > worst) worst = dc;
            if (ds > worst) worst = ds;
        }
    double tol = ROPE_ULP_PER_POS * (m->max_seq_len - 1) + ROPE_TRIG_TOL;
    if (!(worst <= tol)) {
        errf(err, "%s: the recovered RoPE (theta %g, factor %g) misses the program's tables by %.3g (more than %.3g)", path, c->rope_theta, c->rope_factor, worst,
             tol);
        goto done;
    }
    rc = 0;
done:
    free(div);
    free(inv);
    return rc;
}

int pte_find(const char *dir, char *out, size_t n) {
    ckpt_path(out, n, dir, "llama_guard_3_1b_pruned_xnnpack.pte");
    if (ckpt_is_file(out)) return 1;
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)) && !found) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".pte") == 0) {
            ckpt_path(out, n, dir, e->d_name);
            found = ckpt_is_file(out);
        }
    }
    closedir(d);
    return found;
}

static int add(Source *s, const char *name, uint32_t type, uint64_t rows, uint64_t cols, const uint8_t *data, uint64_t bytes, const uint8_t *aux,
               uint64_t aux_bytes, uint32_t heads, const char *file, char *err) {
    SrcTensor t = { 0 };
    snprintf(t.name, sizeof t.name, "%s", name);
    t.type = type;
    t.ndim = rows > 1 ? 2 : 1;
    t.shape[0] = rows > 1 ? rows : cols;
    t.shape[1] = rows > 1 ? cols : 1;
    t.data = data;
    t.bytes = bytes;
    t.aux[0] = aux;
    t.aux_bytes[0] = aux_bytes;
    t.interleaved_heads = heads;
    t.file = file;
    return source_add(s, &t, err);
}

static int add_linear(Source *s, const char *name, const PteLinear *l, uint32_t heads, const char *file, char *err) {
    return add(s, name, ST_PTE_Q4, l->n, l->k, l->w, (uint64_t)l->n * l->k / 2, l->scales, (uint64_t)l->n * (l->k / 256) * 4, heads, file, err);
}

int pte_open(Source *s, const char *dir, char *err) {
    memset(s, 0, sizeof *s);
    s->origin = dir;
    char path[4096], params[4096];
    const MappedFile *mf;
    const char *kept;
    PteModel m = { 0 };
    if (!pte_find(dir, path, sizeof path)) { errf(err, "%s: no .pte file", dir); goto fail; }
    if (source_map(s, path, &mf, &kept, err) || pte_read(&m, mf->data, mf->size, kept, 0, err)) goto fail;
    ckpt_path(params, sizeof params, dir, "params.json");
    Config *c = &s->cfg;
    c->dim = m.dim;
    c->n_layers = m.n_layers;
    c->n_heads = m.n_heads;
    c->n_kv_heads = m.n_kv_heads;
    c->head_dim = m.head_dim;
    c->hidden_dim = m.hidden_dim;
    c->vocab_size = m.vocab;
    c->max_seq_len = m.max_seq_len; /* the KV cache and RoPE tables the program was exported with */
    c->source = SRC_PTE;
    if (check_params(params, &m, c, err) || recover_rope(&m, c, kept, err)) goto fail;
    /* weights, under their Hugging Face names (q/k rows un-permuted from Meta's RoPE pairs at export) */
    uint64_t d = m.dim;
    if (add(s, "model.embed_tokens.weight", ST_PTE_EMB4, m.vocab, d, m.embed, (uint64_t)m.vocab * d / 2, m.embed_scales, (uint64_t)m.vocab * (d / 32) * 2, 0, kept, err) ||
        add(s, "model.norm.weight", ST_F32, 1, d, m.norm, d * 4, NULL, 0, 0, kept, err) || add_linear(s, "lm_head.weight", &m.head, 0, kept, err))
        goto fail;
    for (uint32_t l = 0; l < m.n_layers; l++) {
        const PteLayer *L = &m.layers[l];
        const struct { const char *part; const PteLinear *w; uint32_t heads; } lin[] = {
            { "self_attn.q_proj", &L->wq, m.n_heads }, { "self_attn.k_proj", &L->wk, m.n_kv_heads }, { "self_attn.v_proj", &L->wv, 0 },
            { "self_attn.o_proj", &L->wo, 0 },         { "mlp.gate_proj", &L->w1, 0 },                 { "mlp.up_proj", &L->w3, 0 },
            { "mlp.down_proj", &L->w2, 0 },
        };
        char name[GB_NAME_MAX];
        for (size_t k = 0; k < sizeof lin / sizeof lin[0]; k++) {
            snprintf(name, sizeof name, "model.layers.%u.%s.weight", l, lin[k].part);
            if (add_linear(s, name, lin[k].w, lin[k].heads, kept, err)) goto fail;
        }
        snprintf(name, sizeof name, "model.layers.%u.input_layernorm.weight", l);
        if (add(s, name, ST_F32, 1, d, L->attn_norm, d * 4, NULL, 0, 0, kept, err)) goto fail;
        snprintf(name, sizeof name, "model.layers.%u.post_attention_layernorm.weight", l);
        if (add(s, name, ST_F32, 1, d, L->ffn_norm, d * 4, NULL, 0, 0, kept, err)) goto fail;
    }
    s->n_head_ids = m.n_head;
    memcpy(s->head_ids, m.head_ids, m.n_head * sizeof *m.head_ids);
    s->guard_hint = "lg3-1b"; /* the only Llama Guard Meta ships as ExecuTorch; its prompt has no template in the folder */
    /* tokenizer.model: tiktoken ranks with Llama 3.1's specials; the program's bos/eos must be its own */
    ckpt_path(path, sizeof path, dir, "tokenizer.model");
    if (!ckpt_is_file(path)) { errf(err, "%s: no tokenizer.model", dir); goto fail; }
    if (meta_read_tokenizer(s, path, 1, err)) goto fail;
    if (m.bos >= 0 && m.bos != tok_bos(s->tok)) { errf(err, "%s: get_bos_id is %lld but tokenizer.model's is %d", kept, (long long)m.bos, tok_bos(s->tok)); goto fail; }
    int eot = tok_special_id(s->tok, "<|eot_id|>"), has_eot = 0;
    for (int64_t i = 0; i < m.n_eos_ids; i++) has_eot |= m.eos[i] == eot;
    if (m.n_eos_ids && !has_eot) { errf(err, "%s: get_eos_ids does not include tokenizer.model's <|eot_id|> (%d)", kept, eot); goto fail; }
    if (tok_vocab_size(s->tok) > c->vocab_size) { errf(err, "%s: tokenizer.model has more tokens than the program's vocabulary", dir); goto fail; }
    char verr[ERRLEN];
    if (config_validate(c, verr)) { errf(err, "%s: %s", kept, verr); goto fail; }
    pte_free(&m);
    return 0;
fail:
    pte_free(&m);
    source_free(s);
    return -1;
}
