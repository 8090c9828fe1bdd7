/* classify.h: the Llama Guard decision on top of the model: a conversation in, a verdict out.
 * A Guard bundles what one guard.bin holds (model, tokenizer, default prompt format) with the
 * token ids the decision reads; guard_classify renders, tokenizes, prefills (reusing the longest
 * already-computed prefix in the RunState), scores, and decodes categories only when unsafe.
 */
#ifndef GUARD_CLASSIFY_H
#define GUARD_CLASSIFY_H

#include "guard.h"
#include "template.h"
#include "tokenizer.h"

#define DECODE_CAP 24 /* "unsafe\nS1,S2,...": the longest verdicts are well under this */
#define PREFIX_SLOTS 4 /* policy prefixes kept: e.g. 'User' and 'Agent' prompts x category lists */

/* A computed prompt prefix: its ids and the K/V of those positions. Every Llama Guard prompt
 * starts with the same task line and category list, so this is most of the work. */
typedef struct {
    int32_t *ids;    /* [n] */
    int64_t n;
    float *k, *v;    /* [n_layers, n, kv_dim] */
    uint64_t used;   /* LRU clock */
} PrefixEntry;

typedef struct {
    PrefixEntry e[PREFIX_SLOTS];
    uint64_t clock;
    int dirty;       /* changed since load: worth saving */
} PrefixStore;

typedef struct {
    Model model;
    Tokenizer *tok;          /* owned, from the guard.bin tokenizer section */
    PromptFormat pf;         /* owned, the file's default categories */
    int32_t decision_prefix[4]; /* tokens the model emits before the label (LG3: "\n\n" = 271) */
    int n_decision_prefix;
    int32_t safe_ids[2], unsafe_ids[2]; /* label tokens; LG2 accepts both spellings (see classify.c) */
    int n_label_ids;
    int32_t stop_ids[4];     /* end of the verdict: <|eot_id|>, <|end_of_text|>, </s> as present */
    int n_stop;
    PrefixStore prefixes;    /* policy prefixes computed so far (or loaded from a cache file) */
    int no_prefix_store;     /* 1: never reuse or record prefixes (--no-cache) */
    uint64_t cache_max_bytes; /* bound on the KV cache file(s); 0 = CACHE_MAX_DEFAULT */
} Guard;

int guard_open(Guard *g, const char *path, int n_threads, char *err);
void guard_close(Guard *g);

/* The prompt as token ids: SPECIAL spans by id, each TEXT span encoded as plain text in one
 * piece. ids/n/cap as tok_encode (growable, caller frees). */
int guard_prompt_ids(const Guard *g, const Prompt *p, int32_t **ids, size_t *n, size_t *cap, char *err);

typedef struct {
    int unsafe;            /* p_unsafe >= threshold */
    float p_unsafe;        /* Meta's definition (../shared/spec/SCORING.md) */
    float p_safe, p_unsafe_token; /* softmax probabilities of the label tokens */
    int32_t argmax;        /* most likely token at the decision position */
    Verdict verdict;       /* parsed from the decoded text when unsafe */
    char generated[256];   /* decoded text after the decision prefix (when unsafe) */
    int64_t prompt_tokens; /* rendered prompt, without the decision prefix */
    int64_t reused_tokens; /* positions taken from the prefix cache */
    double t_prefill, t_decode; /* seconds */
} Decision;

/* Classify one conversation. pf: the categories to render (NULL = the file's defaults).
 * ctx_limit: at most this many positions (0 = the model's context); a longer conversation is an
 * error stating both numbers. s is reused across calls: its cached prefix is kept when it matches. */
int guard_classify(Guard *g, RunState *s, const PromptFormat *pf, const Conversation *c, float threshold, int64_t ctx_limit,
                   Decision *d, char *err);

/* ==== Evaluation metrics (--eval) ====
 * At the threshold: predicted unsafe iff score >= threshold. AUPRC is average precision as
 * sklearn's average_precision_score computes it (Meta's evaluation scripts): sort by score,
 * each distinct score is one threshold (ties enter together), AP = sum (R_k - R_{k-1}) P_k.
 * Undefined values (no positives, no predictions, ...) are NAN. */
typedef struct {
    int64_t n, tp, fp, tn, fn;
    double precision, recall, f1, fpr, auprc;
} EvalMetrics;
void eval_metrics(const float *scores, const uint8_t *labels /* 1 = unsafe */, int64_t n, float threshold, EvalMetrics *m);

/* Empty the prefix store (the next classification is cold again; benchmarks). */
void guard_forget_prefixes(Guard *g);

/* ==== Persisting the prefix store (the KV cache file) ====
 * Keyed by the model's identity (size, data checksum, the checksums of the header, tokenizer and
 * prompt sections, shape) and the exact prefix ids; written atomically (mode 0600); validated on
 * read; trusted only as util.h state_open allows (a regular file of this user's, writable by no
 * one else, in a directory no one else can write). guard_cache_load returns 0 if loaded, 1 if
 * there is no file, -1 if the file was ignored (warning in err). guard_cache_save writes the most
 * recently used entries that fit in g->cache_max_bytes, never replaces a file that is not a
 * cache of ours, and in the default directory deletes the oldest cache files beyond that total. */
#define CACHE_MAX_DEFAULT ((uint64_t)2048 << 20) /* bytes, --cache-max */
int guard_cache_load(Guard *g, const char *path, char *err);
int guard_cache_save(const Guard *g, const char *path, char *err);
/* The checks of guard_cache_load on bytes already in memory (the fuzz target). */
int guard_cache_parse(Guard *g, const uint8_t *data, uint64_t size, char *err);
/* Where the cache is: `chosen` (--cache) if given, its directory checked with state_dir; else
 * $XDG_CACHE_HOME/llama-guard/ (absolute), else ~/.cache/llama-guard/, created 0700, as
 * <model file name>.<data crc>.kv. Never beside the model. -1 with why in err: no cache. */
int guard_cache_locate(const Model *m, const char *model_path, const char *chosen, char *out, size_t n, char *err);
/* The default location alone (as guard_cache_locate without a choice); "" when there is no
 * trusted cache directory, which guard_cache_load reads as no file and guard_cache_save refuses. */
void guard_cache_default_path(const Guard *g, const char *model_path, char *out, size_t n);

/* Weight integrity for one-shot runs: gb_verify once per file version (size, mtime, inode and the
 * recorded data checksum), remembered in a stamp "verified.<dev>.<ino>" in the cache directory
 * under the same trust rules. *checked: 1 if the checksum was computed now. */
int guard_verify_once(Guard *g, int *checked, char *err);

#endif
