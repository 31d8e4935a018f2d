/* lib/pool.h -- one set of compute threads that every model's parallel kernels share.
 *
 * A process makes one pool (the daemon from --compute-threads) and lends it to each model
 * (model_set_pool), so idle threads do not grow with the number of models. A caller splits its
 * work into parts and runs them through the pool; it computes parts itself too, so a call
 * finishes even while every worker is busy with other callers' parts, and nothing waits on a
 * thread that is not there.
 *
 *     pool_t *pool = NULL;
 *     if (pool_new(4, &pool, &err) < 0) return err.code;     // the caller + 3 workers
 *     pool_run(pool, 4, run_part, &job);                     // run_part(&job, 0..3), in parallel
 *     pool_free(pool);
 *
 * Which thread runs a part is not fixed, so a part must write only its own outputs; the results
 * then depend on the number of parts, never on the threads.
 */
#ifndef ND_POOL_H
#define ND_POOL_H

#include <stdint.h>

#include "err.h"

#define POOL_MAX_THREADS 1024
#define POOL_THREAD_NAME "nd-compute"   /* each worker's thread name (at most 15 bytes) */

typedef struct pool pool_t;

/* One part of a call's work: part is in [0, n_part). */
typedef void (*pool_part_fn)(void *ctx, int32_t part);

/*
 * A pool for n_threads threads computing at once: the caller of pool_run() and n_threads - 1
 * workers, started here (1 starts none; pool_run then runs every part in the caller). n_threads
 * must be in [1, POOL_MAX_THREADS]. *out is new; free with pool_free(). ERR_NOMEM, or ERR_INTERNAL
 * when the system refuses a thread (none is left running).
 */
int pool_new(int32_t n_threads, pool_t **out, err_t *err);

/* Stop and join the workers, free the pool. No pool_run() may be running. NULL is a no-op. */
void pool_free(pool_t *p);

/* The n_threads given to pool_new(). */
int32_t pool_threads(const pool_t *p);

/*
 * fn(ctx, part) for every part in [0, n_part), spread over the workers and the calling thread;
 * returns when all have returned. Several threads may call it at once: their parts share the
 * workers, first come first served. p NULL: every part on the calling thread, in order.
 * Allocates nothing. n_part >= 1.
 */
void pool_run(pool_t *p, int32_t n_part, pool_part_fn fn, void *ctx);

/* One span [lo, hi) of a pass over independent items. */
typedef void (*pool_span_fn)(void *ctx, int64_t lo, int64_t hi);

/*
 * fn(ctx, lo, hi) over spans covering [0, n): one per thread of p (NULL: one span on the calling
 * thread), fewer when a span would hold under min_len items, each starting at a multiple of
 * align. For passes whose items are computed each on its own, so that the result does not
 * depend on the cut. n >= 0, min_len >= 1, align >= 1.
 */
void pool_run_spans(pool_t *p, int64_t n, int64_t min_len, int64_t align, pool_span_fn fn,
                    void *ctx);

#endif /* ND_POOL_H */
