/* lib/pool.c -- the shared compute threads (pool.h).
 *
 * A call to pool_run() is a job on the caller's stack, queued until all its parts are claimed.
 * Workers and callers claim parts under the pool's one lock: a worker takes the next part of the
 * oldest job, a caller takes the next part of its own job, so a caller never waits for a part
 * nobody has started. Parts are coarse (fused.c gives each at least 2^17 multiply-adds), so one
 * lock costs nothing measurable.
 */
#define _GNU_SOURCE   /* pthread_setname_np */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

/* How long a thread that runs out of work polls before it sleeps on a condition variable. A
 * training step hands the pool several products in a row, microseconds apart; a worker asleep
 * on a futex takes tens of microseconds to wake, which at a 32-row mini-batch was as long as
 * its share of a product. Polling a little longer than that gap keeps the workers awake through
 * a step, and costs at most that much CPU after the step's last part. */
#define POOL_SPIN_POLLS 4000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

typedef struct pool_job {
    pool_part_fn fn;
    void *ctx;
    int32_t n_part;
    int32_t n_claimed;        /* parts handed out; the job leaves the queue when all are */
    int32_t n_done;           /* parts finished */
    struct pool_job *next;    /* queue link */
} pool_job_t;

struct pool {
    int32_t n_threads;
    int32_t n_worker;
    pthread_t *tid;
    pthread_mutex_t mu;
    pthread_cond_t work;      /* a job was queued, or quit */
    pthread_cond_t done;      /* some job's last part finished */
    pool_job_t *head, *tail;  /* jobs with parts left to claim, oldest first */
    int quit;
};

/* Poll, without the lock, until the queue has a job or the polls run out. The lock's holders
 * store head with __atomic_store_n. */
static void spin_for_work(pool_job_t *const *head)
{
    for (int i = 0; i < POOL_SPIN_POLLS && __atomic_load_n(head, __ATOMIC_ACQUIRE) == NULL; ++i)
        cpu_relax();
}

/* Poll, without the lock, until a job's parts are all done or the polls run out. */
static void spin_for_done(const int32_t *n_done, int32_t n_part)
{
    for (int i = 0; i < POOL_SPIN_POLLS && __atomic_load_n(n_done, __ATOMIC_ACQUIRE) < n_part;
         ++i)
        cpu_relax();
}

/* Claim the next part of j (lock held); unqueue j when that was its last. */
static int32_t claim(pool_t *p, pool_job_t *j)
{
    int32_t part = j->n_claimed++;
    if (j->n_claimed == j->n_part) {
        pool_job_t **link = &p->head, *prev = NULL;
        while (*link != j) {
            prev = *link;
            link = &(*link)->next;
        }
        __atomic_store_n(link, j->next, __ATOMIC_RELEASE);
        if (p->tail == j)
            p->tail = prev;
        j->next = NULL;
    }
    return part;
}

/* Run one claimed part of j with the lock released; count it done (lock held again). */
static void run_claimed(pool_t *p, pool_job_t *j, int32_t part)
{
    pthread_mutex_unlock(&p->mu);
    j->fn(j->ctx, part);
    pthread_mutex_lock(&p->mu);
    const int32_t done = j->n_done + 1;
    __atomic_store_n(&j->n_done, done, __ATOMIC_RELEASE);
    if (done == j->n_part)
        pthread_cond_broadcast(&p->done);
}

static void *worker_main(void *arg)
{
    pool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->head == NULL && !p->quit) {
            pthread_mutex_unlock(&p->mu);
            spin_for_work(&p->head);
            pthread_mutex_lock(&p->mu);
        }
        while (p->head == NULL && !p->quit)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->quit)
            break;
        pool_job_t *j = p->head;
        run_claimed(p, j, claim(p, j));
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Tell the started workers to quit and join them. */
static void workers_join(pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int32_t t = 0; t < p->n_worker; ++t)
        pthread_join(p->tid[t], NULL);
    p->n_worker = 0;
}

int pool_new(int32_t n_threads, pool_t **out, err_t *err)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > POOL_MAX_THREADS)
        return err_set(err, ERR_INVAL, "pool: %d threads not in [1,%d]", (int)n_threads,
                       POOL_MAX_THREADS);
    pool_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        return err_set(err, ERR_NOMEM, "pool: out of memory");
    p->n_threads = n_threads;
    p->tid = calloc((size_t)n_threads, sizeof *p->tid);
    if (p->tid == NULL) {
        free(p);
        return err_set(err, ERR_NOMEM, "pool: out of memory");
    }
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p->tid);
        free(p);
        return err_set(err, ERR_INTERNAL, "pool: cannot make a mutex");
    }
    int rc = 0;
    if (pthread_cond_init(&p->work, NULL) != 0)
        rc = err_set(err, ERR_INTERNAL, "pool: cannot make a condition variable");
    else if (pthread_cond_init(&p->done, NULL) != 0) {
        pthread_cond_destroy(&p->work);
        rc = err_set(err, ERR_INTERNAL, "pool: cannot make a condition variable");
    }
    if (rc < 0) {
        pthread_mutex_destroy(&p->mu);
        free(p->tid);
        free(p);
        return rc;
    }
    for (int32_t t = 0; t < n_threads - 1; ++t) {
        if (pthread_create(&p->tid[t], NULL, worker_main, p) != 0) {
            pool_free(p);
            return err_set(err, ERR_INTERNAL, "pool: cannot start compute thread %d of %d",
                           (int)t + 1, (int)n_threads - 1);
        }
        /* A name (/proc/<pid>/task/<tid>/comm) tells the compute threads from the others in
         * top, gdb and the thread tests. Cosmetic: a failure changes nothing. */
        pthread_setname_np(p->tid[t], POOL_THREAD_NAME);
        ++p->n_worker;
    }
    *out = p;
    return 0;
}

void pool_free(pool_t *p)
{
    if (p == NULL)
        return;
    workers_join(p);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->mu);
    free(p->tid);
    free(p);
}

int32_t pool_threads(const pool_t *p)
{
    return p->n_threads;
}

void pool_run(pool_t *p, int32_t n_part, pool_part_fn fn, void *ctx)
{
    if (p == NULL || n_part == 1 || p->n_worker == 0) {
        for (int32_t part = 0; part < n_part; ++part)
            fn(ctx, part);
        return;
    }
    pool_job_t job = {.fn = fn, .ctx = ctx, .n_part = n_part};
    pthread_mutex_lock(&p->mu);
    if (p->tail != NULL)
        p->tail->next = &job;
    else
        __atomic_store_n(&p->head, &job, __ATOMIC_RELEASE);
    p->tail = &job;
    pthread_cond_broadcast(&p->work);
    while (job.n_claimed < job.n_part)
        run_claimed(p, &job, claim(p, &job));
    if (job.n_done < job.n_part) {
        pthread_mutex_unlock(&p->mu);
        spin_for_done(&job.n_done, job.n_part);
        pthread_mutex_lock(&p->mu);
    }
    while (job.n_done < job.n_part)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

typedef struct span_job {
    pool_span_fn fn;
    void *ctx;
    int64_t n, len;
} span_job_t;

static void span_part(void *ctx, int32_t part)
{
    const span_job_t *j = ctx;
    const int64_t lo = part * j->len;
    j->fn(j->ctx, lo, j->n - lo < j->len ? j->n : lo + j->len);
}

void pool_run_spans(pool_t *p, int64_t n, int64_t min_len, int64_t align, pool_span_fn fn,
                    void *ctx)
{
    int64_t parts = p == NULL ? 1 : p->n_threads;
    if (parts > n / min_len)
        parts = n / min_len;
    if (parts <= 1) {
        fn(ctx, 0, n);
        return;
    }
    span_job_t j = {.fn = fn, .ctx = ctx, .n = n,
                    .len = ((n + parts - 1) / parts + align - 1) / align * align};
    pool_run(p, (int32_t)((n + j.len - 1) / j.len), span_part, &j);
}
