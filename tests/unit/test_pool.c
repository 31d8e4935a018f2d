/* tests/unit/test_pool.c -- the shared compute threads (lib/pool.c): every part runs exactly
 * once, on several threads, also while other callers share the pool; a pool of one, or none,
 * runs the parts in the caller; the thread count is what pool_new started and stays put. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "pool.h"
#include "testutil.h"

#define MAX_PARTS 64

typedef struct job {
    atomic_int runs[MAX_PARTS];   /* times each part ran */
    pthread_t thread[MAX_PARTS];  /* the thread that ran it */
    int spin_us;                  /* work per part, so the parts overlap */
} job_t;

static void sleep_us(int us)
{
    struct timespec ts = {0, (long)us * 1000};
    nanosleep(&ts, NULL);
}

static void run_part(void *ctx, int32_t part)
{
    job_t *j = ctx;
    ck_assert_int_ge(part, 0);
    ck_assert_int_lt(part, MAX_PARTS);
    atomic_fetch_add(&j->runs[part], 1);
    j->thread[part] = pthread_self();
    if (j->spin_us > 0)
        sleep_us(j->spin_us);
}

/* Parts that ran on a thread other than the caller's. */
static int parts_elsewhere(const job_t *j, int32_t n_part)
{
    int n = 0;
    for (int32_t p = 0; p < n_part; ++p)
        n += !pthread_equal(j->thread[p], pthread_self());
    return n;
}

START_TEST(every_part_once)
{
    err_t err = {0};
    pool_t *pool = NULL;
    int before = testutil_threads(0);
    ck_assert_int_eq(pool_new(4, &pool, &err), 0);
    ck_assert_int_eq(pool_threads(pool), 4);
    ck_assert_int_eq(testutil_threads(0), before + 3);   /* the caller is the fourth */
    static const int32_t parts[] = {1, 2, 3, 4, 7, 64};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; ++i) {
        job_t *j = calloc(1, sizeof *j);
        j->spin_us = 10000;
        pool_run(pool, parts[i], run_part, j);
        for (int32_t p = 0; p < MAX_PARTS; ++p)
            ck_assert_int_eq(atomic_load(&j->runs[p]), p < parts[i] ? 1 : 0);
        if (parts[i] >= 4)   /* 10 ms each: the caller alone cannot have claimed them all */
            ck_assert_int_gt(parts_elsewhere(j, parts[i]), 0);
        free(j);
    }
    ck_assert_int_eq(testutil_threads(0), before + 3);
    pool_free(pool);
    ck_assert_int_eq(testutil_threads(0), before);
}
END_TEST

START_TEST(one_thread_runs_in_the_caller)
{
    err_t err = {0};
    pool_t *pool = NULL;
    int before = testutil_threads(0);
    ck_assert_int_eq(pool_new(1, &pool, &err), 0);
    ck_assert_int_eq(testutil_threads(0), before);
    job_t *j = calloc(1, sizeof *j);
    pool_run(pool, 5, run_part, j);
    for (int32_t p = 0; p < 5; ++p)
        ck_assert_int_eq(atomic_load(&j->runs[p]), 1);
    ck_assert_int_eq(parts_elsewhere(j, 5), 0);
    free(j);
    pool_free(pool);
    /* No pool at all: the same, on the caller. */
    j = calloc(1, sizeof *j);
    pool_run(NULL, 5, run_part, j);
    for (int32_t p = 0; p < 5; ++p)
        ck_assert_int_eq(atomic_load(&j->runs[p]), 1);
    ck_assert_int_eq(parts_elsewhere(j, 5), 0);
    free(j);
}
END_TEST

typedef struct caller {
    pool_t *pool;
    job_t job;
    int32_t n_part;
    int rounds;
} caller_t;

static void *caller_main(void *arg)
{
    caller_t *c = arg;
    for (int r = 0; r < c->rounds; ++r)
        pool_run(c->pool, c->n_part, run_part, &c->job);
    return NULL;
}

/* Six threads share a pool of three: every call completes with each of its parts run once
 * per round, and no caller waits forever for a busy pool. */
START_TEST(concurrent_callers)
{
    enum { N_CALLER = 6, ROUNDS = 200 };
    err_t err = {0};
    pool_t *pool = NULL;
    ck_assert_int_eq(pool_new(3, &pool, &err), 0);
    caller_t *c = calloc(N_CALLER, sizeof *c);
    pthread_t t[N_CALLER];
    for (int i = 0; i < N_CALLER; ++i) {
        c[i] = (caller_t){.pool = pool, .n_part = 1 + i % 5, .rounds = ROUNDS};
        c[i].job.spin_us = i % 2 == 0 ? 50 : 0;
        ck_assert_int_eq(pthread_create(&t[i], NULL, caller_main, &c[i]), 0);
    }
    for (int i = 0; i < N_CALLER; ++i)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < N_CALLER; ++i)
        for (int32_t p = 0; p < MAX_PARTS; ++p)
            ck_assert_int_eq(atomic_load(&c[i].job.runs[p]), p < c[i].n_part ? ROUNDS : 0);
    free(c);
    pool_free(pool);
}
END_TEST

START_TEST(bad_arguments)
{
    err_t err = {0};
    pool_t *pool = NULL;
    ck_assert_int_eq(pool_new(0, &pool, &err), ERR_INVAL);
    ck_assert_ptr_null(pool);
    ck_assert_int_eq(pool_new(POOL_MAX_THREADS + 1, &pool, &err), ERR_INVAL);
    ck_assert_ptr_null(pool);
    pool_free(NULL);
}
END_TEST

/* Spans of a pass: every item once, each span's start a multiple of align, no span under
 * min_len unless it is the only one, at most one span per thread; no pool: one span. */
#define SPAN_ITEMS 1000
typedef struct spans {
    atomic_int hits[SPAN_ITEMS];
    atomic_int n_span;
    int64_t align, shortest;
    pthread_mutex_t mu;
} spans_t;

static void count_span(void *ctx, int64_t lo, int64_t hi)
{
    spans_t *s = ctx;
    ck_assert_int_eq(lo % s->align, 0);
    ck_assert_int_lt(lo, hi);
    for (int64_t i = lo; i < hi; ++i)
        atomic_fetch_add(&s->hits[i], 1);
    atomic_fetch_add(&s->n_span, 1);
    pthread_mutex_lock(&s->mu);
    if (hi - lo < s->shortest)
        s->shortest = hi - lo;
    pthread_mutex_unlock(&s->mu);
}

static int run_counted_spans(pool_t *pool, int64_t n, int64_t min_len, int64_t align)
{
    spans_t *s = calloc(1, sizeof *s);
    ck_assert_ptr_nonnull(s);
    s->align = align;
    s->shortest = n;
    pthread_mutex_init(&s->mu, NULL);
    pool_run_spans(pool, n, min_len, align, count_span, s);
    for (int64_t i = 0; i < SPAN_ITEMS; ++i)
        ck_assert_int_eq(atomic_load(&s->hits[i]), i < n ? 1 : 0);
    const int n_span = atomic_load(&s->n_span);
    if (n_span > 1)
        ck_assert_int_ge(s->shortest + align, min_len);   /* only the last may be shorter */
    pthread_mutex_destroy(&s->mu);
    free(s);
    return n_span;
}

START_TEST(spans_cover_the_range_once)
{
    err_t err = {0};
    pool_t *pool = NULL;
    ck_assert_int_eq(pool_new(3, &pool, &err), 0);
    ck_assert_int_eq(run_counted_spans(pool, SPAN_ITEMS, 10, 8), 3);
    ck_assert_int_eq(run_counted_spans(pool, SPAN_ITEMS, 400, 8), 2);
    ck_assert_int_eq(run_counted_spans(pool, SPAN_ITEMS, 600, 1), 1);
    ck_assert_int_eq(run_counted_spans(pool, 5, 1, 1), 3);
    ck_assert_int_eq(run_counted_spans(NULL, SPAN_ITEMS, 1, 1), 1);
    pool_free(pool);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, every_part_once);
    tcase_add_test(tc, one_thread_runs_in_the_caller);
    tcase_add_test(tc, concurrent_callers);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, spans_cover_the_range_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
