/* pool.c: the thread pool every parallel loop of the runtime runs on (quant.h "threads").
 *
 * A fixed set of persistent workers; pool_for hands out [0, n) in contiguous chunks claimed
 * with one atomic counter, and the caller works too. Workers spin briefly, then sleep on a
 * condition variable. Results never depend on how the range is split (the callers' contract),
 * so any thread count gives the same bits.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "kernels.h"

/* Workers spin this many rounds before sleeping: the forward pass issues matmuls back to
 * back, so a short spin saves a futex wake per call without burning a core when idle. */
#define POOL_SPIN 20000

/* The CPU's spin-wait hint, from the kernel file of this CPU family (none elsewhere). */
static inline void relax(void) {
    if (cpu_relax) cpu_relax();
}

struct Pool {
    int n;                      /* threads including the caller */
    int n_workers;              /* started workers: n - 1 */
    pthread_t *th;              /* [n_workers] */
    pthread_mutex_t mu;
    pthread_cond_t wake, idle;
    atomic_uint_fast64_t gen;   /* bumped once per job (and at shutdown) */
    atomic_int stop, busy;      /* busy: workers not yet done with the current job */
    atomic_int_fast64_t next;   /* first unclaimed index of the current job */
    int64_t n_items, grain;
    void (*fn)(void *, int64_t, int64_t);
    void *ctx;
};

static void run_chunks(Pool *p) {
    for (;;) {
        int64_t b = atomic_fetch_add_explicit(&p->next, p->grain, memory_order_relaxed);
        if (b >= p->n_items) return;
        p->fn(p->ctx, b, b + p->grain < p->n_items ? b + p->grain : p->n_items);
    }
}

static void *pool_worker(void *arg) {
    Pool *p = arg;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        for (int i = 0; g == seen && i < POOL_SPIN; i++) {
            relax();
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen) pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (atomic_load(&p->stop)) break;
        run_chunks(p);
        if (atomic_fetch_sub(&p->busy, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->idle);
            pthread_mutex_unlock(&p->mu);
        }
    }
    kernels_thread_exit();
    return NULL;
}

static int cores_available(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

Pool *pool_create(int n_threads) {
    if (n_threads <= 0) n_threads = cores_available();
    Pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->idle, NULL);
    if (n_threads > 1) p->th = calloc((size_t)n_threads - 1, sizeof *p->th);
    for (int i = 0; p->th && i < n_threads - 1; i++) {
        if (pthread_create(&p->th[i], NULL, pool_worker, p) != 0) break;
        p->n_workers++;
    }
    p->n = p->n_workers + 1; /* fewer threads if the system refused some: still correct */
    return p;
}

void pool_free(Pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->idle);
    free(p->th);
    free(p);
}

int pool_threads(const Pool *p) { return p ? p->n : 1; }

void pool_for(Pool *p, int64_t n, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx) {
    if (n <= 0) return;
    if (!p || p->n == 1 || n == 1) {
        fn(ctx, 0, n);
        return;
    }
    /* ~4 chunks per thread: balances a core stolen by another process without many calls */
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n;
    p->grain = (n + 4 * p->n - 1) / (4 * p->n);
    atomic_store(&p->next, 0);
    atomic_store(&p->busy, p->n_workers);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p);
    for (int i = 0; atomic_load(&p->busy) && i < POOL_SPIN; i++) relax();
    if (atomic_load(&p->busy)) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->busy)) pthread_cond_wait(&p->idle, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
