/* tests/integration/it_threads.c -- the daemon's threads do not grow with its models: every
 * model's one-pass kernels share the pool of --compute-threads threads. Each model here gets a
 * batch big enough that its loss and its training split across that pool, is trained and read
 * (so a cached copy stays), and the daemon's thread count (/proc/<pid>/task) must not move. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "pool.h"
#include "testutil.h"

/* Inputs and rows of each model: rows * (1 + inputs) is twice fused.c's per-part minimum
 * (2^17 multiply-adds), so a call splits into at least two parts. */
#define N_X 100
#define ROWS 2700
#define N_MODELS 12

static it_daemon_t d;

static void teardown(void)
{
    it_cleanup(&d);
}

static void start(const char *compute_threads)
{
    const char *extra[] = {"--compute-threads", compute_threads, "--threads", "2", NULL};
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

/* {"x":[[...],...],"y":[...]} with one-digit inputs (a small body) and 0/1 labels. New. */
static char *batch_json(unsigned seed)
{
    size_t cap = (size_t)ROWS * (N_X * 2 + 8) + 64, o = 0;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    o += (size_t)snprintf(s + o, cap - o, "{\"x\":[");
    for (int r = 0; r < ROWS; ++r) {
        o += (size_t)snprintf(s + o, cap - o, "%s[", r ? "," : "");
        for (int i = 0; i < N_X; ++i) {
            seed = seed * 1103515245u + 12345u;
            o += (size_t)snprintf(s + o, cap - o, "%s%u", i ? "," : "", (seed >> 16) % 10);
        }
        s[o++] = ']';
    }
    o += (size_t)snprintf(s + o, cap - o, "],\"y\":[");
    for (int r = 0; r < ROWS; ++r) {
        unsigned label = (seed + (unsigned)r * 7u) % 2u;
        o += (size_t)snprintf(s + o, cap - o, "%s%u", r ? "," : "", label);
    }
    snprintf(s + o, cap - o, "]}");
    return s;
}

/* A logistic model with its batch, trained one step and its loss read back. */
static void model_used(int i)
{
    int64_t id = it_create_model("{\"kind\":\"logistic\",\"inputs\":100,"
                                 "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.001}}");
    char path[96], *body = batch_json(17u + (unsigned)i);
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    it_call_free("POST", path, body, 201);
    free(body);
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    cJSON *t = it_call("POST", path, "{\"steps\":1}", 200);
    ck_assert_int_eq((int)it_num(t, "step"), 1);
    cJSON_Delete(t);
    snprintf(path, sizeof path, "/v1/models/%lld/loss", (long long)id);
    cJSON *l = it_call("POST", path, "{}", 200);
    ck_assert_int_eq((int)it_num(l, "rows"), ROWS);
    ck_assert(it_num(l, "loss") > 0.0);
    cJSON_Delete(l);
}

START_TEST(models_share_the_compute_threads)
{
    start("3");
    model_used(0);
    const int warm = testutil_threads((int)d.pid);
    for (int i = 1; i < N_MODELS; ++i)
        model_used(i);
    const int after = testutil_threads((int)d.pid);
    /* The pool's workers are exactly --compute-threads - 1 whatever the number of models; the
     * total may differ by a thread the daemon starts lazily (the WAL checkpointer, the log
     * flusher), never by one a model brings. */
    ck_assert_int_eq(testutil_threads_named((int)d.pid, POOL_THREAD_NAME), 2);
    ck_assert_msg(after <= warm + 1, "%d threads after one model, %d after %d models", warm,
                  after, N_MODELS);
}
END_TEST

/* --compute-threads N starts N - 1 workers (the calling thread is the Nth), whatever the models
 * do: 1 and 4 differ by exactly three threads. */
START_TEST(compute_threads_flag_sets_the_pool)
{
    start("1");
    model_used(0);
    const int one = testutil_threads_named((int)d.pid, POOL_THREAD_NAME);
    it_cleanup(&d);
    start("4");
    model_used(0);
    const int four = testutil_threads_named((int)d.pid, POOL_THREAD_NAME);
    ck_assert_msg(one == 0 && four == 3, "--compute-threads 1: %d workers, 4: %d", one, four);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("threads");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, models_share_the_compute_threads);
    tcase_add_test(tc, compute_threads_flag_sets_the_pool);
    suite_add_tcase(s, tc);
    return it_run(s);
}
