/* tests/integration/it_postgres.c -- what only the PostgreSQL backend does: a server that goes
 * away and comes back, a second replica on the same database, a schema newer than the binary, and
 * backups left to pg_dump. Runs under tests/pg/with_postgres.sh (NEUROND_TEST_PG); without it
 * every case is skipped. */
#include <check.h>
#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

static it_daemon_t d;

static void setup(void)
{
    static const char *const extra[] = {"--job-lease", "3", NULL};   /* heartbeats every 1 s */
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

static void teardown(void)
{
    it_cleanup(&d);
}

/* Run a NEUROND_TEST_PG_* command of tests/pg/with_postgres.sh. */
static void pg_server(const char *var)
{
    const char *cmd = getenv(var);
    ck_assert_msg(cmd != NULL, "%s is not set", var);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
}

/* Run `sql` on the daemon's own database, from outside: the integer in its first row's first
 * column, or 0 when it returns no rows. */
static long long pg_sql(const char *sql)
{
    PGconn *pg = PQconnectdb(d.db);
    ck_assert_msg(PQstatus(pg) == CONNECTION_OK, "%s", PQerrorMessage(pg));
    PGresult *res = PQexec(pg, sql);
    ExecStatusType status = PQresultStatus(res);
    ck_assert_msg(status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK, "%s: %s", sql,
                  PQresultErrorMessage(res));
    long long v = PQntuples(res) > 0 ? atoll(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    PQfinish(pg);
    return v;
}

/* Run `cmd` (a shell command line, stderr joined to stdout): its output in `out`, its status. */
static int run_command(const char *cmd, char *out, size_t size)
{
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = '\0';
    return pclose(p);
}

/* The status of GET /healthz now. */
static long healthz_status(void)
{
    long status = 0;
    cJSON_Delete(it_json("GET", "/healthz", NULL, &status));
    return status;
}

static void expect_error(const char *method, const char *path, const char *body, long want,
                         const char *code)
{
    cJSON *j = it_call(method, path, body, want);
    const cJSON *e = cJSON_GetObjectItem(j, "error");
    const cJSON *c = cJSON_GetObjectItem(e, "code");
    ck_assert_msg(cJSON_IsString(c) && strcmp(c->valuestring, code) == 0,
                  "%s %s: want error code %s", method, path, code);
    cJSON_Delete(j);
}

static const char model_spec[] =
    "{\"kind\":\"linear\",\"inputs\":2,\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.1}}";
static const char batch[] = "{\"x\":[[1,2],[3,4],[5,6],[7,8]],\"y\":[3,7,11,15]}";

START_TEST(outage_answers_503_then_recovers)
{
    ck_assert_int_eq(it_create_model(model_spec), 1);
    it_call_free("POST", "/v1/models/1/batches", batch, 201);
    it_call_free("POST", "/v1/models/1/train", "{\"steps\":5}", 200);

    pg_server("NEUROND_TEST_PG_STOP");
    /* Every request that needs the database: 503 unavailable, never 500; the daemon stays up. */
    expect_error("GET", "/v1/models/1", NULL, 503, "unavailable");
    expect_error("GET", "/v1/models", NULL, 503, "unavailable");
    expect_error("POST", "/v1/models/1/train", "{\"steps\":5}", 503, "unavailable");
    expect_error("POST", "/v1/models", model_spec, 503, "unavailable");
    it_sleep_ms(1100);       /* /healthz checks the database at most once a second */
    ck_assert_int_eq(healthz_status(), 503);

    pg_server("NEUROND_TEST_PG_START");
    /* Back without a restart of the daemon, and nothing committed lost: step 5. */
    cJSON *m = it_call("GET", "/v1/models/1", NULL, 200);
    ck_assert_int_eq((int)it_num(m, "step"), 5);
    cJSON_Delete(m);
    it_call_free("POST", "/v1/models/1/train", "{\"steps\":5}", 200);
    m = it_call("GET", "/v1/models/1", NULL, 200);
    ck_assert_int_eq((int)it_num(m, "step"), 10);
    cJSON_Delete(m);
    cJSON *hist = it_call("GET", "/v1/models/1/history", NULL, 200);
    const cJSON *rows = cJSON_GetObjectItem(hist, "history");
    ck_assert_int_eq(cJSON_GetArraySize(rows), 10);
    for (int i = 0; i < 10; ++i)
        ck_assert_int_eq((int)it_num(cJSON_GetArrayItem(rows, i), "step"), i);
    cJSON_Delete(hist);
    it_sleep_ms(1100);
    ck_assert_int_eq(healthz_status(), 200);
}
END_TEST

/* A training run whose commit finds the write lock held by another writer past the busy
 * timeout (PostgreSQL's lock_timeout) waits and commits later, as on SQLite: it neither fails
 * nor stops. A second replica on the same database, with a busy timeout of 200 ms, runs the
 * job while a session outside holds neurond's write lock for 1.5 s. */
START_TEST(run_waits_out_a_held_write_lock)
{
    /* A small rate: the run must not diverge and end on its own. */
    ck_assert_int_eq(it_create_model("{\"kind\":\"linear\",\"inputs\":2,\"optimizer\":"
                                     "{\"method\":\"sgd\",\"learning_rate\":0.001}}"), 1);
    it_call_free("POST", "/v1/models/1/batches", batch, 201);
    it_daemon_t d2;
    static const char *const env[] = {"NEUROND_BUSY_TIMEOUT_MS=200", NULL};
    static const char *const extra[] = {"--job-lease", "3", NULL};
    it_opts_t o = {.db = d.db, .env = env, .extra = extra};
    ck_assert_msg(it_start_opts(&d2, it_exe, &o) == 0, "the second replica did not start");
    cJSON *job = it_call("POST", "/v1/models/1/train",
                         "{\"steps\":1000000000,\"history_every\":0,\"async\":true}", 202);
    const int id = (int)it_num(job, "id");
    cJSON_Delete(job);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%d", id);
    it_sleep_ms(300);
    PGconn *pg = PQconnectdb(d.db);
    ck_assert_msg(PQstatus(pg) == CONNECTION_OK, "%s", PQerrorMessage(pg));
    PGresult *res = PQexec(pg, "BEGIN; SELECT pg_advisory_xact_lock(1852142948, 1)");
    ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    it_sleep_ms(1500);
    job = it_call("GET", path, NULL, 200);
    ck_assert_str_eq(cJSON_GetObjectItem(job, "status")->valuestring, "running");
    cJSON_Delete(job);
    res = PQexec(pg, "COMMIT");
    PQclear(res);
    PQfinish(pg);
    /* Committing again: the step moves on past what it was when the lock went. */
    cJSON *m = it_call("GET", "/v1/models/1", NULL, 200);
    const double held = it_num(m, "step");
    cJSON_Delete(m);
    it_sleep_ms(1000);
    m = it_call("GET", "/v1/models/1", NULL, 200);
    ck_assert(it_num(m, "step") > held);
    cJSON_Delete(m);
    job = it_call("GET", path, NULL, 200);
    ck_assert_str_eq(cJSON_GetObjectItem(job, "status")->valuestring, "running");
    cJSON_Delete(job);
    it_call_free("DELETE", path, NULL, 202);
    it_cleanup(&d2);
}
END_TEST

/* A hung server (every process of it stopped) holds the health check: the probe that asked
 * for it waits a second at most, and from then on every probe answers 503 instead of the last
 * result, so a load balancer takes the replica out. Once the server runs again, 200. */
START_TEST(healthz_unavailable_while_the_server_hangs)
{
    ck_assert_int_eq(healthz_status(), 200);
    it_sleep_ms(1100);                      /* the next probe makes a new check */
    pg_server("NEUROND_TEST_PG_PAUSE");
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", d.port);
    it_async_t waiting = {.base = base, .method = "GET", .path = "/healthz"};
    it_async_start(&waiting);
    it_sleep_ms(1500);
    long status = 0;
    cJSON *h = it_json("GET", "/healthz", NULL, &status);
    const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(h, "message"));
    ck_assert_msg(status == 503 && msg != NULL && strstr(msg, "has not answered") != NULL,
                  "healthz during the hang: %ld %s", status, msg != NULL ? msg : "");
    ck_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(h, "status")), "unavailable");
    cJSON_Delete(h);
    it_async_join(&waiting);                /* answered while the server still hangs */
    ck_assert_msg(waiting.status == 503, "the probe that asked: %ld %s", waiting.status,
                  waiting.answer);
    free(waiting.answer);
    pg_server("NEUROND_TEST_PG_RESUME");
    for (int64_t end = it_now_ms() + 5000; (status = healthz_status()) != 200; it_sleep_ms(100))
        ck_assert_msg(it_now_ms() < end, "/healthz still %ld after the server resumed", status);
}
END_TEST

/* The outputs of model 1 for `body`, as text. New string. */
static char *predict_text(const char *body)
{
    cJSON *p = it_call("POST", "/v1/models/1/predict", body, 200);
    char *text = cJSON_PrintUnformatted(cJSON_GetObjectItem(p, "outputs"));
    cJSON_Delete(p);
    ck_assert_ptr_nonnull(text);
    return text;
}

/* Replicas: a second daemon on the same database serves it too, and each sees the other's
 * writes at once, its read cache included. */
START_TEST(second_replica_shares_the_database)
{
    ck_assert_int_eq(it_create_model(model_spec), 1);
    it_call_free("POST", "/v1/models/1/batches", batch, 201);
    static const char x[] = "{\"x\":[[1,2],[-3,4]]}";
    char *before = predict_text(x);             /* this replica caches the model now */
    it_daemon_t d2;
    it_opts_t o = {.db = d.db};
    ck_assert_msg(it_start_opts(&d2, it_exe, &o) == 0, "the second replica did not start");
    it_call_free("POST", "/v1/models/1/train", "{\"steps\":3}", 200);
    char *there = predict_text(x);
    it_use(&d);
    cJSON *m = it_call("GET", "/v1/models/1", NULL, 200);
    ck_assert_int_eq((int)it_num(m, "step"), 3);
    cJSON_Delete(m);
    /* Its cached copy is checked against the database: the other replica's training shows. */
    char *here = predict_text(x);
    ck_assert_str_eq(here, there);
    ck_assert_str_ne(here, before);
    free(before);
    free(there);
    free(here);
    cJSON *c = it_call("GET", "/v1/cluster", NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(c, "replicas")), 2);
    cJSON_Delete(c);
    it_cleanup(&d2);
    it_call_free("GET", "/v1/models/1", NULL, 200);
}
END_TEST

/* A fork or delete cut off by its replica's death leaves its model hidden under that replica's
 * id: a live replica's heartbeat removes it once the dead one's row goes, and leaves alone what
 * a live replica has hidden. */
START_TEST(dead_replicas_half_work_purged)
{
    ck_assert_int_eq(it_create_model(model_spec), 1);
    ck_assert_int_eq(it_create_model(model_spec), 2);
    it_call_free("POST", "/v1/models/1/batches", batch, 201);
    cJSON *h = it_call("GET", "/healthz", NULL, 200);
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE models SET hidden = %lld WHERE id = 2",
             (long long)it_num(h, "replica"));
    cJSON_Delete(h);
    pg_sql(sql);
    pg_sql("INSERT INTO replicas(id, address, version, started_at, heartbeat_at, heartbeat_ms)"
           " VALUES (900, 'gone:1', '0', 'x', 'x', 1)");
    pg_sql("UPDATE models SET hidden = 900 WHERE id = 1");
    expect_error("GET", "/v1/models/1", NULL, 404, "not_found");
    for (int waited = 0; pg_sql("SELECT COUNT(*) FROM models WHERE id = 1") > 0; waited += 100) {
        ck_assert_msg(waited < 10000, "the dead replica's hidden model is still there");
        it_sleep_ms(100);
    }
    ck_assert_int_eq(pg_sql("SELECT COUNT(*) FROM batches WHERE model_id = 1"), 0);
    ck_assert_int_eq(pg_sql("SELECT COUNT(*) FROM replicas WHERE id = 900"), 0);
    ck_assert_int_eq(pg_sql("SELECT COUNT(*) FROM models WHERE id = 2"), 1);
}
END_TEST

START_TEST(schema_newer_than_binary_refuses)
{
    ck_assert_int_eq(it_stop(&d), 0);
    pg_sql("INSERT INTO schema_version(version, name, applied_at)"
           " VALUES (999, 'schema/postgresql/999_future.sql', '2030-01-01T00:00:00.000Z')");
    char cmd[2 * PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "'%s' --port 0 --db '%s' 2>&1", it_exe, d.db);
    char out[1024];
    ck_assert_int_ne(run_command(cmd, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "schema version 999 is newer") != NULL, "%s", out);
}
END_TEST

START_TEST(backup_is_pg_dump)
{
    expect_error("GET", "/v1/backup", NULL, 501, "not_supported");
    char out[PATH_MAX + 16], cmd[4 * PATH_MAX + 64];
    snprintf(out, sizeof out, "%s/copy.db", d.dir);
    snprintf(cmd, sizeof cmd, "'%s' --backup '%s' --db '%s' 2>&1", it_exe, out, d.db);
    char text[1024];
    ck_assert_int_ne(run_command(cmd, text, sizeof text), 0);
    ck_assert_msg(strstr(text, "pg_dump") != NULL, "%s", text);
    ck_assert_int_ne(access(out, F_OK), 0);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    int skip = it_pg_only();
    if (skip != 0)
        return skip;
    Suite *s = suite_create("postgres");
    TCase *tc = tcase_create("postgres");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, outage_answers_503_then_recovers);
    tcase_add_test(tc, second_replica_shares_the_database);
    tcase_add_test(tc, run_waits_out_a_held_write_lock);
    tcase_add_test(tc, healthz_unavailable_while_the_server_hangs);
    tcase_add_test(tc, dead_replicas_half_work_purged);
    tcase_add_test(tc, schema_newer_than_binary_refuses);
    tcase_add_test(tc, backup_is_pg_dump);
    suite_add_tcase(s, tc);
    return it_run(s);
}
