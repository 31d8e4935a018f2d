/* tests/integration/it_events_pg.c -- event streams across replicas: two daemons, A and B, on
 * one PostgreSQL database. A stream on B sees every recorded step of runs on A, in order, once,
 * then their `done` with the train result, and a deletion on A; a run on B reaches streams on
 * both once; a listening session that is cut and comes back loses no step. Runs under
 * tests/pg/with_postgres.sh (NEUROND_TEST_PG); without it every case is skipped. */
#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

static it_daemon_t a, b;

static void setup(void)
{
    ck_assert_msg(it_start(&a, it_exe, NULL) == 0, "replica A did not start");
    it_opts_t o = {.db = a.db, .capture_stderr = 1};
    ck_assert_msg(it_start_opts(&b, it_exe, &o) == 0, "replica B did not start");
    it_use(&a);
}

static void teardown(void)
{
    it_finish(&b);
    it_finish(&a);
}

static const char model_spec[] =
    "{\"kind\":\"linear\",\"inputs\":2,\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.01}}";
static const char batch[] = "{\"x\":[[1,2],[3,4],[5,6],[7,8]],\"y\":[3,7,11,15]}";

static int64_t trained_model(void)
{
    int64_t id = it_create_model(model_spec);
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    it_call_free("POST", path, batch, 201);
    return id;
}

/* Subscribe to model `id`'s events on replica `d`, leaving after `want_done` done events (0:
 * when the server ends the stream). */
static void stream_on(it_stream_t *s, const it_daemon_t *d, int64_t id, int want_done)
{
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", d->port);
    it_stream_open(s, base, id, want_done, 0);
}

/* ---- what the stream must match ------------------------------------------------------------- */

/* Every history row of model `id`, read from the current daemon. New. */
static cJSON *history_all(int64_t id)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/history?limit=10000", (long long)id);
    cJSON *h = it_call("GET", path, NULL, 200);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(h, "next")));
    cJSON *rows = cJSON_DetachItemFromObject(h, "history");
    cJSON_Delete(h);
    return rows;
}

/* Event `i` is the progress event of history row `row`: same step, the very same loss. */
static void expect_progress(const char *name, const char *data, const cJSON *row)
{
    ck_assert_str_eq(name, "progress");
    cJSON *p = cJSON_Parse(data);
    ck_assert_msg(p != NULL, "progress data is not JSON: %s", data);
    ck_assert_int_eq((int64_t)it_num(p, "step"), (int64_t)it_num(row, "step"));
    ck_assert_msg(it_num(p, "loss") == it_num(row, "loss"), "step %lld: loss %s, history %.17g",
                  (long long)it_num(row, "step"), data, it_num(row, "loss"));
    cJSON_Delete(p);
}

/* `done` data equal to a job's stored result, but for elapsed_ms (the job's result is stored
 * in the final commit, before the commit's own time is added). */
static void expect_job_result(const char *data, const cJSON *result)
{
    cJSON *d = cJSON_Parse(data);
    ck_assert_msg(d != NULL, "done data is not JSON: %s", data);
    cJSON *want = cJSON_Duplicate(result, 1);
    cJSON_DeleteItemFromObject(d, "elapsed_ms");
    cJSON_DeleteItemFromObject(want, "elapsed_ms");
    char *got_text = cJSON_PrintUnformatted(d), *want_text = cJSON_PrintUnformatted(want);
    ck_assert_str_eq(got_text, want_text);
    free(got_text);
    free(want_text);
    cJSON_Delete(d);
    cJSON_Delete(want);
}

/* POST a train request to the current daemon: its answer's text (new), which must be 200. */
static char *train_sync(int64_t id, const char *req)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    char *text = NULL;
    long status = 0;
    it_request("POST", path, "application/json", req, &status, &text, NULL);
    ck_assert_msg(status == 200, "train: %ld %s", status, text);
    return text;
}

/* Poll job `job` on the current daemon until it succeeded; returns its result (new). */
static cJSON *job_result(int64_t job, int timeout_ms)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    for (int waited = 0;; waited += 20) {
        cJSON *j = it_call("GET", path, NULL, 200);
        const char *status = it_str(j, "status");
        if (strcmp(status, "succeeded") == 0) {
            cJSON *r = cJSON_DetachItemFromObject(j, "result");
            cJSON_Delete(j);
            ck_assert(cJSON_IsObject(r));
            return r;
        }
        ck_assert_msg(strcmp(status, "queued") == 0 || strcmp(status, "running") == 0,
                      "job %lld ended %s", (long long)job, status);
        cJSON_Delete(j);
        ck_assert_msg(waited < timeout_ms, "job %lld not done after %d ms", (long long)job,
                      timeout_ms);
        it_sleep_ms(20);
    }
}

#define MAX_EVENTS 4096

START_TEST(stream_on_b_follows_runs_on_a)
{
    int64_t id = trained_model();
    it_stream_t s;
    stream_on(&s, &b, id, 2);
    char *answer = train_sync(id, "{\"steps\":7}");
    int64_t job = it_submit_job(id, "{\"steps\":20,\"history_every\":3,\"async\":true}");
    cJSON *result = job_result(job, 30000);
    it_stream_wait(&s, 30000);

    cJSON *hist = history_all(id);
    /* The sync call's 7 rows, then the job's over steps 7..26: every third step and its last. */
    static const int job_steps[] = {9, 12, 15, 18, 21, 24, 26};
    ck_assert_int_eq(cJSON_GetArraySize(hist), 7 + 7);
    for (int i = 0; i < 7; ++i)
        ck_assert_int_eq((int)it_num(cJSON_GetArrayItem(hist, 7 + i), "step"), job_steps[i]);

    const char *names[MAX_EVENTS], *data[MAX_EVENTS];
    int n = it_stream_events(s.buf, names, data, MAX_EVENTS);
    ck_assert_int_eq(n, 7 + 1 + 7 + 1);
    for (int i = 0; i < 7; ++i)
        expect_progress(names[i], data[i], cJSON_GetArrayItem(hist, i));
    ck_assert_str_eq(names[7], "done");
    ck_assert_str_eq(data[7], answer);      /* the train call's very answer */
    for (int i = 0; i < 7; ++i)
        expect_progress(names[8 + i], data[8 + i], cJSON_GetArrayItem(hist, 7 + i));
    ck_assert_str_eq(names[15], "done");
    expect_job_result(data[15], result);
    /* Each announcement read just its rows: no read failed and no catch-up ran ahead. */
    char *log = it_read_log(&b);
    ck_assert_msg(strstr(log, "cannot read the history") == NULL, "%s", log);
    free(log);
    free(answer);
    cJSON_Delete(result);
    cJSON_Delete(hist);
    it_stream_free(&s);
}
END_TEST

START_TEST(run_on_b_reaches_both_replicas_once)
{
    int64_t id = trained_model();
    it_stream_t on_a, on_b;
    stream_on(&on_a, &a, id, 1);
    stream_on(&on_b, &b, id, 1);
    it_use(&b);
    char *answer = train_sync(id, "{\"steps\":5}");
    it_stream_wait(&on_a, 30000);
    it_stream_wait(&on_b, 30000);
    cJSON *hist = history_all(id);
    ck_assert_int_eq(cJSON_GetArraySize(hist), 5);
    it_stream_t *both[] = {&on_a, &on_b};
    for (int k = 0; k < 2; ++k) {
        const char *names[MAX_EVENTS], *data[MAX_EVENTS];
        int n = it_stream_events(both[k]->buf, names, data, MAX_EVENTS);
        ck_assert_int_eq(n, 5 + 1);
        for (int i = 0; i < 5; ++i)
            expect_progress(names[i], data[i], cJSON_GetArrayItem(hist, i));
        ck_assert_str_eq(names[5], "done");
        ck_assert_str_eq(data[5], answer);
        it_stream_free(both[k]);
    }
    free(answer);
    cJSON_Delete(hist);
}
END_TEST

START_TEST(delete_on_a_ends_stream_on_b)
{
    int64_t id = trained_model();
    int64_t other = trained_model();
    it_stream_t s, kept;
    stream_on(&s, &b, id, 0);
    stream_on(&kept, &b, other, 1);
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    it_call_free("DELETE", path, NULL, 204);
    it_stream_wait(&s, 10000);
    ck_assert_int_eq(s.curl_rc, CURLE_OK);        /* the server ended it */
    const char *names[8], *data[8];
    int n = it_stream_events(s.buf, names, data, 8);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(names[0], "deleted");
    cJSON *d = cJSON_Parse(data[0]);
    ck_assert_int_eq((int64_t)it_num(d, "model_id"), id);
    cJSON_Delete(d);
    /* The other model's stream is still open and still follows its model. */
    pthread_mutex_lock(&kept.mu);
    ck_assert_int_eq(kept.ended, 0);
    pthread_mutex_unlock(&kept.mu);
    char *answer = train_sync(other, "{\"steps\":2}");
    it_stream_wait(&kept, 30000);
    ck_assert_int_eq(it_count(kept.buf, "event: progress\n"), 2);
    ck_assert_int_eq(it_count(kept.buf, "event: deleted\n"), 0);
    free(answer);
    it_stream_free(&s);
    it_stream_free(&kept);
}
END_TEST

/* Stream `s` of model `id`, which one job trained, has every one of the model's `rows` history
 * rows exactly once and in order (whatever befell the replicas meanwhile), then the job's
 * done with its `result`. */
static void expect_whole_job(it_stream_t *s, int64_t id, int rows, const cJSON *result)
{
    cJSON *hist = history_all(id);
    ck_assert_int_eq(cJSON_GetArraySize(hist), rows);
    const char *names[MAX_EVENTS], *data[MAX_EVENTS];
    int n = it_stream_events(s->buf, names, data, MAX_EVENTS);
    /* Row by row first, so that a missing or repeated one is named. */
    for (int i = 0; i < rows && i < n; ++i)
        expect_progress(names[i], data[i], cJSON_GetArrayItem(hist, i));
    ck_assert_int_eq(n, rows + 1);
    ck_assert_str_eq(names[rows], "done");
    expect_job_result(data[rows], result);
    cJSON_Delete(hist);
}

/* Run `sql` on the test cluster's administration database. Returns the first value of its
 * first row as an integer (0 when none). */
static int admin_sql(const char *sql)
{
    PGconn *pg = PQconnectdb(getenv("NEUROND_TEST_PG"));
    ck_assert_msg(PQstatus(pg) == CONNECTION_OK, "%s", PQerrorMessage(pg));
    PGresult *res = PQexec(pg, sql);
    ExecStatusType status = PQresultStatus(res);
    ck_assert_msg(status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK, "%s: %s", sql,
                  PQresultErrorMessage(res));
    int v = status == PGRES_TUPLES_OK && PQntuples(res) > 0 ? atoi(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    PQfinish(pg);
    return v;
}

/* The replicas' database name: the last part of its address. */
static const char *db_name(void)
{
    return strrchr(a.db, '/') + 1;
}

/* Cut every listening session of the replicas' database from the server's side; with `lock`,
 * first shut the database to new sessions (those open stay), so none can listen again until
 * reopen_database(). */
static void cut_listeners(int lock)
{
    char sql[256];
    if (lock) {
        snprintf(sql, sizeof sql, "ALTER DATABASE %s WITH ALLOW_CONNECTIONS false", db_name());
        admin_sql(sql);
    }
    snprintf(sql, sizeof sql, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
             " WHERE datname = '%s' AND query LIKE 'LISTEN %%'", db_name());
    ck_assert_int_ge(admin_sql(sql), 2);       /* A's and B's */
}

static void reopen_database(void)
{
    char sql[128];
    snprintf(sql, sizeof sql, "ALTER DATABASE %s WITH ALLOW_CONNECTIONS true", db_name());
    admin_sql(sql);
}

/* B's log lines saying it listens again, and the step events they caught up. */
static int listening_again(int64_t *caught)
{
    static const char line[] = "event relay: listening again; ";
    char *log = it_read_log(&b);
    int n = 0;
    *caught = 0;
    for (const char *p = log; (p = strstr(p, line)) != NULL; p += strlen(line), ++n)
        *caught += strtoll(p + strlen(line), NULL, 10);
    free(log);
    return n;
}

static void wait_listening_again(int times)
{
    int64_t caught = 0;
    for (int waited = 0; listening_again(&caught) < times; waited += 20) {
        ck_assert_msg(waited < 15000, "B did not listen again (%d)", times);
        it_sleep_ms(20);
    }
}

/* The job's progress step on the current daemon. */
static int64_t job_step(int64_t job)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    cJSON *j = it_call("GET", path, NULL, 200);
    int64_t step = (int64_t)it_num(cJSON_GetObjectItem(j, "progress"), "step");
    cJSON_Delete(j);
    return step;
}

START_TEST(cut_listening_session_loses_no_step)
{
    int64_t id = trained_model();
    it_stream_t s;
    stream_on(&s, &b, id, 1);
    /* Long enough (a chunk commit each 0.5 s) to be cut in the middle of, with few enough
     * recorded rows to compare. */
    int64_t job = it_submit_job(id, "{\"steps\":20000000,\"history_every\":100000,"
                                  "\"async\":true}");
    for (int waited = 0; job_step(job) == 0; waited += 20) {
        ck_assert_msg(waited < 30000, "the job made no progress");
        it_sleep_ms(20);
    }
    /* A cut that heals at once: whatever falls between is caught up, or was not missed. */
    cut_listeners(0);
    wait_listening_again(1);
    /* A cut that lasts: commits land while B cannot listen, and B must catch up on them. */
    int64_t before = job_step(job);
    cut_listeners(1);
    for (int waited = 0; job_step(job) < before + 2000000; waited += 20) {
        ck_assert_msg(waited < 60000, "the job made no progress while B was cut off");
        it_sleep_ms(20);
    }
    reopen_database();
    wait_listening_again(2);
    int64_t caught = 0;
    listening_again(&caught);
    ck_assert_msg(caught > 0, "B caught up nothing after a cut of two commits");

    cJSON *result = job_result(job, 120000);
    it_stream_wait(&s, 30000);
    expect_whole_job(&s, id, 200 + 1, result);   /* every 100000th step, and the last */
    cJSON_Delete(result);
    it_stream_free(&s);
}
END_TEST

/* ---- a job resumed by another replica ------------------------------------------------------- */

static const char *const short_lease[] = {"--job-lease", "3", NULL};

static void setup_short_lease(void)
{
    ck_assert_msg(it_start(&a, it_exe, short_lease) == 0, "replica A did not start");
    it_opts_t o = {.db = a.db, .extra = short_lease, .capture_stderr = 1};
    ck_assert_msg(it_start_opts(&b, it_exe, &o) == 0, "replica B did not start");
    it_use(&a);
}

/* The replica running job `job` (its "replica"), polled on the current daemon until it runs. */
static int64_t job_replica(int64_t job)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    for (int waited = 0;; waited += 20) {
        cJSON *j = it_call("GET", path, NULL, 200);
        const cJSON *r = cJSON_GetObjectItem(j, "replica");
        int64_t replica = cJSON_IsNumber(r) && strcmp(it_str(j, "status"), "running") == 0 &&
                                  it_num(cJSON_GetObjectItem(j, "progress"), "step") > 0
                              ? (int64_t)r->valuedouble
                              : 0;
        cJSON_Delete(j);
        if (replica > 0)
            return replica;
        ck_assert_msg(waited < 30000, "job %lld never ran", (long long)job);
        it_sleep_ms(20);
    }
}

/* This daemon's replica id (GET /healthz). */
static int64_t replica_of(const it_daemon_t *d)
{
    it_use(d);
    cJSON *h = it_call("GET", "/healthz", NULL, 200);
    int64_t id = (int64_t)it_num(h, "replica");
    cJSON_Delete(h);
    return id;
}

START_TEST(job_resumed_elsewhere_streams_each_step_once)
{
    int64_t id = trained_model();
    it_stream_t on_a, on_b;
    stream_on(&on_a, &a, id, 1);
    stream_on(&on_b, &b, id, 1);
    int64_t job = it_submit_job(id, "{\"steps\":30000000,\"history_every\":100000,"
                                    "\"async\":true}");
    int64_t runner = job_replica(job);
    int a_runs = runner == replica_of(&a);
    ck_assert(a_runs || runner == replica_of(&b));
    /* Kill the replica running the job in the middle of it; the other resumes it from the last
     * commit, and its stream must show every row once, in order. */
    it_daemon_t *dead = a_runs ? &a : &b, *alive = a_runs ? &b : &a;
    it_stream_t *kept = a_runs ? &on_b : &on_a, *lost = a_runs ? &on_a : &on_b;
    it_kill9(dead);
    it_stream_wait(lost, 10000);
    it_use(alive);
    cJSON *result = job_result(job, 120000);
    it_stream_wait(kept, 30000);
    expect_whole_job(kept, id, 300 + 1, result);
    cJSON_Delete(result);
    it_stream_free(&on_a);
    it_stream_free(&on_b);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    int skip = it_pg_only();
    if (skip != 0)
        return skip;
    Suite *s = suite_create("events_pg");
    TCase *tc = tcase_create("events_pg");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, stream_on_b_follows_runs_on_a);
    tcase_add_test(tc, run_on_b_reaches_both_replicas_once);
    tcase_add_test(tc, delete_on_a_ends_stream_on_b);
    tcase_add_test(tc, cut_listening_session_loses_no_step);
    suite_add_tcase(s, tc);
    TCase *failover = tcase_create("failover");
    tcase_add_checked_fixture(failover, setup_short_lease, teardown);
    tcase_set_timeout(failover, 180);
    tcase_add_test(failover, job_resumed_elsewhere_streams_each_step_once);
    suite_add_tcase(s, failover);
    return it_run(s);
}
