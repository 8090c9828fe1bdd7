/* run.c: the command line. Parses options, calls the library, prints, and owns the exit status
 * (0 safe / ok, 1 unsafe, 2 error). The only file besides export.c that prints or exits.
 */
#include "guard.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *source_name(uint32_t s) {
    static const char *names[] = { "?", "Hugging Face safetensors", "GGUF", "AutoAWQ", "bitsandbytes int8", "Meta original", "random (bench)" };
    return s < sizeof names / sizeof names[0] ? names[s] : "?";
}

static void print_info(const Model *m) {
    const Config *c = &m->cfg;
    printf("file          %s\n", m->file.path);
    printf("source        %s\n", source_name(c->source));
    printf("dim           %u\nlayers        %u\nheads         %u\nkv_heads      %u\nhead_dim      %u\n", c->dim, c->n_layers, c->n_heads,
           c->n_kv_heads, c->head_dim);
    printf("ffn           %u\nvocab         %u\ncontext       %u\nnorm_eps      %g\nrope_theta    %g\n", c->hidden_dim, c->vocab_size,
           c->max_seq_len, (double)c->norm_eps, (double)c->rope_theta);
    if (c->rope_type == ROPE_LLAMA3)
        printf("rope_scaling  llama3 factor %g low %g high %g original_max %u\n", (double)c->rope_factor, (double)c->rope_low_freq_factor,
               (double)c->rope_high_freq_factor, c->rope_orig_max_pos);
    else
        printf("rope_scaling  none\n");
    printf("tied          %s\ndtype         %s\n", c->tied ? "yes" : "no", dtype_name(c->dtype));
    printf("tensors       %u\n", m->file.n_tensors);
    for (uint32_t i = 0; i < m->file.n_tensors; i++) {
        const GbTensor *t = &m->file.tensors[i];
        printf("  %-52s %-5s [", t->name, dtype_name(t->dtype));
        for (uint32_t d = 0; d < t->ndim; d++) printf(d ? ", %llu" : "%llu", (unsigned long long)t->shape[d]);
        printf("] @%llu +%llu\n", (unsigned long long)t->offset, (unsigned long long)t->size);
    }
}

/* Parse "1 2 3" (spaces, commas or newlines) into ids. */
static int parse_ids(const char *s, int32_t **ids, int64_t *n, char *err) {
    int64_t cap = 64, k = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    if (!v) return errf(err, "out of memory");
    while (*s) {
        if (*s == ' ' || *s == ',' || *s == '\n' || *s == '\t' || *s == '\r') { s++; continue; }
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (end == s || errno || x < 0 || x > INT32_MAX) { free(v); return errf(err, "--ids: '%.20s' is not a token id", s); }
        if (k == cap) {
            int32_t *q = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!q) { free(v); return errf(err, "out of memory"); }
            v = q;
        }
        v[k++] = (int32_t)x;
        s = end;
    }
    if (k == 0) { free(v); return errf(err, "--ids: no token ids given"); }
    *ids = v;
    *n = k;
    return 0;
}

static int write_floats(const char *path, const float *x, uint64_t n, char *err) {
    AtomicFile f;
    if (afile_open(&f, path, err)) return -1;
    afile_write(&f, x, (size_t)(n * sizeof(float))); /* little-endian hosts only (x86-64, aarch64) */
    return afile_commit(&f, err);
}

static void print_top(const float *logits, uint32_t vocab, int k) {
    int best[64];
    if (k > 64) k = 64;
    for (int i = 0; i < k; i++) {
        int b = -1;
        for (uint32_t v = 0; v < vocab; v++) {
            int taken = 0;
            for (int j = 0; j < i; j++) taken |= best[j] == (int)v;
            if (!taken && (b < 0 || logits[v] > logits[b])) b = (int)v;
        }
        best[i] = b;
        printf("%d %.6f\n", b, (double)logits[b]);
    }
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: ./run MODEL.bin [options]\n"
            "audit modes:\n"
            "  --info                 print the config and the tensor table\n"
            "  --verify               recompute the whole-file data checksum\n"
            "  --ids \"1 2 3\"          run these token ids (no BOS added)\n"
            "    --logits OUT.bin     write the last position's logits (little-endian f32, vocab values)\n"
            "    --top K              print the K highest logits at the last position\n"
            "common:\n"
            "  -t N                   threads (default: all cores)\n"
            "  -v                     verbose (kernels chosen)\n");
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *ids_arg = NULL, *logits_out = NULL;
    int info = 0, verify = 0, top = 0, threads = 0, verbose = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (strcmp(a, "--info") == 0) info = 1;
        else if (strcmp(a, "--verify") == 0) verify = 1;
        else if (strcmp(a, "--ids") == 0 && has) ids_arg = argv[++i];
        else if (strcmp(a, "--logits") == 0 && has) logits_out = argv[++i];
        else if (strcmp(a, "--top") == 0 && has) top = atoi(argv[++i]);
        else if (strcmp(a, "-t") == 0 && has) threads = atoi(argv[++i]);
        else if (strcmp(a, "-v") == 0) verbose = 1;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); return 0; }
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "run: unknown or incomplete option %s (see --help)\n", a); return 2; }
        else if (!model_path) model_path = a;
        else { fprintf(stderr, "run: unexpected argument %s\n", a); return 2; }
    }
    if (!model_path) { usage(stderr); return 2; }

    char err[ERRLEN];
    Model m;
    if (model_open(&m, model_path, threads, err)) { fprintf(stderr, "run: %s\n", err); return 2; }
    if (verbose) fprintf(stderr, "run: %d threads, kernels: %s\n", m.n_threads, kernels_init());
    int rc = 0;
    if (info) print_info(&m);
    if (verify) {
        if (gb_verify(&m.file, err)) { fprintf(stderr, "run: %s\n", err); rc = 2; }
        else printf("%s: ok (data checksum %08x)\n", model_path, m.file.data_crc);
    }
    if (ids_arg && rc == 0) {
        int32_t *ids = NULL;
        int64_t n = 0;
        RunState s;
        float *logits = malloc(m.cfg.vocab_size * sizeof(float));
        if (!logits || parse_ids(ids_arg, &ids, &n, err) || state_init(&s, &m, n, err)) rc = 2;
        else {
            if (model_forward(&m, &s, ids, n, logits, err)) rc = 2;
            else if (logits_out && write_floats(logits_out, logits, m.cfg.vocab_size, err)) rc = 2;
            else if (top > 0) print_top(logits, m.cfg.vocab_size, top);
            state_free(&s);
        }
        if (rc) fprintf(stderr, "run: %s\n", err);
        free(ids);
        free(logits);
    }
    model_close(&m);
    return rc;
}
