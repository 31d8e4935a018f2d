/* tests/integration/it_cluster.c -- the replica view end to end: GET /v1/cluster, the replica
 * id in /healthz and in job objects, --advertise, --job-lease, heartbeats and the clean-up of
 * dead replicas' rows. Runs on SQLite and, through it_postgresql, on PostgreSQL: rows of other
 * (pretend) replicas are written straight into the daemon's database. */
#include <check.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "client.h"

#define LEASE_S 3                /* the shortest --job-lease: heartbeats every second */

static it_daemon_t d;

static void setup(void)
{
    static const char *const extra[] = {"--job-lease", "3", NULL};
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

static void teardown(void)
{
    it_finish(&d);
}

static cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* Wall-clock milliseconds since the epoch: what replicas.heartbeat_ms holds. */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000L;
}

/* Run `sql` on the daemon's database from outside; the first column of its first row as an
 * integer (0 when it returns none). Fails the test when the statement fails. */
static int64_t db_sql(const char *sql)
{
    int64_t v = 0;
    if (it_backend_pg()) {
        PGconn *pg = PQconnectdb(d.db);
        PGresult *res = PQstatus(pg) == CONNECTION_OK ? PQexec(pg, sql) : NULL;
        int st = res != NULL ? (int)PQresultStatus(res) : -1;
        int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(pg));
        if (ok && st == PGRES_TUPLES_OK && PQntuples(res) > 0)
            v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        PQfinish(pg);
        ck_assert_msg(ok, "%s: %s", sql, msg);
        return v;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(d.db, &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        sqlite3_busy_timeout(db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
    }
    ck_assert_msg(rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE, "%s: %s", sql,
                  sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Insert a replica row as another process would, its heartbeat `age_ms` old; its id. */
static int64_t insert_replica(const char *address, int64_t age_ms)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO replicas(address, version, started_at, heartbeat_at, heartbeat_ms)"
             " VALUES ('%s', '9.9.9', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z',"
             " %" PRId64 ") RETURNING id", address, wall_ms() - age_ms);
    return db_sql(sql);
}

static int64_t healthz_replica(void)
{
    cJSON *h = it_call("GET", "/healthz", NULL, 200);
    ck_assert_msg(cJSON_IsNumber(get(h, "replica")), "/healthz has no replica");
    int64_t id = (int64_t)it_num(h, "replica");
    cJSON_Delete(h);
    return id;
}

/* The replica of GET /v1/cluster with id `id` (a detached copy: cJSON_Delete it), or NULL. */
static cJSON *cluster_replica(int64_t id, int *n_replicas)
{
    cJSON *c = it_call("GET", "/v1/cluster", NULL, 200);
    ck_assert_str_eq(it_str(c, "database"), it_backend_pg() ? "postgresql" : "sqlite");
    cJSON *list = get(c, "replicas"), *r = NULL, *found = NULL;
    ck_assert(cJSON_IsArray(list));
    if (n_replicas != NULL)
        *n_replicas = cJSON_GetArraySize(list);
    cJSON_ArrayForEach(r, list)
        if ((int64_t)it_num(r, "id") == id)
            found = cJSON_Duplicate(r, 1);
    cJSON_Delete(c);
    return found;
}

START_TEST(cluster_lists_this_replica)
{
    int64_t id = healthz_replica();
    ck_assert(id >= 1);
    int n = 0;
    cJSON *r = cluster_replica(id, &n);
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_nonnull(r);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", d.port);
    ck_assert_str_eq(it_str(r, "address"), want);
    cJSON *h = it_call("GET", "/healthz", NULL, 200);
    ck_assert_str_eq(it_str(r, "version"), it_str(h, "version"));
    cJSON_Delete(h);
    const char *started = it_str(r, "started_at"), *beat = it_str(r, "heartbeat_at");
    ck_assert_int_eq((int)strlen(started), 24);
    ck_assert_int_eq(started[23], 'Z');
    ck_assert(strcmp(beat, started) >= 0);
    ck_assert_int_eq((int64_t)it_num(r, "jobs_running"), 0);
    char first[40];
    snprintf(first, sizeof first, "%s", beat);
    cJSON_Delete(r);

    /* The heartbeat moves: every --job-lease / 3 = 1 s. */
    it_sleep_ms(2500);
    r = cluster_replica(id, NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_msg(strcmp(it_str(r, "heartbeat_at"), first) > 0, "heartbeat stuck at %s", first);
    cJSON_Delete(r);

    /* No query parameters. */
    long status = 0;
    cJSON *e = it_json("GET", "/v1/cluster?verbose=1", NULL, &status);
    ck_assert_int_eq(status, 400);
    ck_assert_str_eq(it_str(get(e, "error"), "code"), "invalid_argument");
    ck_assert_str_eq(it_str(get(e, "error"), "field"), "verbose");
    cJSON_Delete(e);
    it_call_free("POST", "/v1/cluster", "{}", 405);
}
END_TEST

START_TEST(dead_replicas_hidden_and_removed)
{
    int64_t self = healthz_replica();
    int64_t live = insert_replica("peer.example:8080", 0);
    int64_t dead = insert_replica("gone.example:8080", 60000);
    int n = 0;
    cJSON *r = cluster_replica(live, &n);
    ck_assert_msg(r != NULL, "a replica with a fresh heartbeat is listed");
    ck_assert_str_eq(it_str(r, "address"), "peer.example:8080");
    ck_assert_str_eq(it_str(r, "version"), "9.9.9");
    cJSON_Delete(r);
    ck_assert_int_eq(n, 2);                         /* this one and the peer, not the dead one */
    ck_assert_ptr_null(cluster_replica(dead, NULL));

    /* The next heartbeat (within a second) deletes the dead row; the peer, which never beats,
     * is dead once the lease has passed, and deleted in turn. */
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM replicas WHERE id = %" PRId64, dead);
    int64_t t0 = it_now_ms();
    while (db_sql(sql) != 0 && it_now_ms() - t0 < 5000)
        it_sleep_ms(100);
    ck_assert_int_eq(db_sql(sql), 0);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM replicas WHERE id = %" PRId64, live);
    while (db_sql(sql) != 0 && it_now_ms() - t0 < LEASE_S * 1000 + 5000)
        it_sleep_ms(100);
    ck_assert_int_eq(db_sql(sql), 0);
    ck_assert_ptr_null(cluster_replica(live, &n));
    ck_assert_int_eq(n, 1);
    r = cluster_replica(self, NULL);
    ck_assert_ptr_nonnull(r);
    cJSON_Delete(r);
}
END_TEST

/* An mlp with 64 stored rows: a run of many steps keeps committing for as long as it is let. */
static int64_t slow_model(void)
{
    int64_t id = it_create_model(
        "{\"kind\":\"mlp\",\"inputs\":4,\"hidden\":[{\"units\":64,\"activation\":\"tanh\"}],"
        "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.001}}");
    char path[96], batch[4096];
    size_t o = (size_t)snprintf(batch, sizeof batch, "{\"x\":[");
    for (int i = 0; i < 64; ++i)
        o += (size_t)snprintf(batch + o, sizeof batch - o, "%s[%d,1,2,3]", i ? "," : "", i % 7);
    o += (size_t)snprintf(batch + o, sizeof batch - o, "],\"y\":[");
    for (int i = 0; i < 64; ++i)
        o += (size_t)snprintf(batch + o, sizeof batch - o, "%s[%d]", i ? "," : "", i % 3);
    snprintf(batch + o, sizeof batch - o, "]}");
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches", id);
    it_call_free("POST", path, batch, 201);
    return id;
}

START_TEST(jobs_name_their_replica)
{
    int64_t self = healthz_replica();
    int64_t id = slow_model();
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/train", id);
    cJSON *j = it_call("POST", path, "{\"steps\":100000000,\"async\":true}", 202);
    int64_t job = (int64_t)it_num(j, "id");
    /* The 202 may come before or after the job starts: null or this replica. */
    cJSON *rep = get(j, "replica");
    ck_assert(cJSON_IsNull(rep) || (cJSON_IsNumber(rep) && (int64_t)rep->valuedouble == self));
    cJSON_Delete(j);

    char jpath[64];
    snprintf(jpath, sizeof jpath, "/v1/jobs/%" PRId64, job);
    int64_t t0 = it_now_ms();
    int running = 0;
    while (!running && it_now_ms() - t0 < 10000) {
        j = it_call("GET", jpath, NULL, 200);
        running = strcmp(it_str(j, "status"), "running") == 0;
        if (running)
            ck_assert_int_eq((int64_t)it_num(j, "replica"), self);
        cJSON_Delete(j);
        if (!running)
            it_sleep_ms(20);
    }
    ck_assert_msg(running, "the job never ran");
    cJSON *r = cluster_replica(self, NULL);
    ck_assert_int_eq((int64_t)it_num(r, "jobs_running"), 1);
    cJSON_Delete(r);

    it_call_free("DELETE", jpath, NULL, 202);
    t0 = it_now_ms();
    char status[16] = "running";
    while (strcmp(status, "running") == 0 && it_now_ms() - t0 < 10000) {
        j = it_call("GET", jpath, NULL, 200);
        snprintf(status, sizeof status, "%s", it_str(j, "status"));
        if (strcmp(status, "running") != 0)       /* the replica stays after the end */
            ck_assert_int_eq((int64_t)it_num(j, "replica"), self);
        cJSON_Delete(j);
        it_sleep_ms(20);
    }
    ck_assert_str_eq(status, "cancelled");
    r = cluster_replica(self, NULL);
    ck_assert_int_eq((int64_t)it_num(r, "jobs_running"), 0);
    cJSON_Delete(r);
    j = it_call("GET", "/v1/jobs?status=cancelled", NULL, 200);
    ck_assert_int_eq((int64_t)it_num(cJSON_GetArrayItem(get(j, "jobs"), 0), "replica"), self);
    cJSON_Delete(j);
}
END_TEST

static cJSON *model_get(int64_t id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%" PRId64, id);
    return it_call("GET", path, NULL, 200);
}

/* Fencing: a run whose model lease is taken over (here: its epoch bumped from outside, as a
 * replica taking over an expired lease would) stops at its next commit, and nothing more of it
 * lands: the model stays at the step committed before the bump, with its history up to it. */
START_TEST(lost_lease_stops_the_run)
{
    int64_t id = slow_model();
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/train", id);
    cJSON *j = it_call("POST", path, "{\"steps\":100000000,\"async\":true}", 202);
    int64_t job = (int64_t)it_num(j, "id");
    cJSON_Delete(j);

    /* Let it commit a few chunks, then take its lease away. */
    int64_t t0 = it_now_ms(), step = 0;
    while (step < 1 && it_now_ms() - t0 < 10000) {
        j = model_get(id);
        step = (int64_t)it_num(j, "step");
        cJSON_Delete(j);
        it_sleep_ms(50);
    }
    ck_assert_int_gt(step, 0);
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE model_leases SET epoch = epoch + 1 WHERE model_id = %" PRId64,
             id);
    db_sql(sql);
    j = model_get(id);
    int64_t fenced_at = (int64_t)it_num(j, "step");     /* every later commit must fail */
    cJSON_Delete(j);

    char jpath[64];
    snprintf(jpath, sizeof jpath, "/v1/jobs/%" PRId64, job);
    char status[16] = "running";
    t0 = it_now_ms();
    while (strcmp(status, "running") == 0 && it_now_ms() - t0 < 10000) {
        it_sleep_ms(50);
        j = it_call("GET", jpath, NULL, 200);
        snprintf(status, sizeof status, "%s", it_str(j, "status"));
        if (strcmp(status, "running") != 0) {
            ck_assert_msg(strstr(it_str(j, "error"), "lost its lease") != NULL, "error: %s",
                          it_str(j, "error"));
            ck_assert_int_eq((int64_t)it_num(get(j, "result"), "step"), fenced_at);
        }
        cJSON_Delete(j);
    }
    ck_assert_str_eq(status, "failed");
    it_sleep_ms(700);                                   /* longer than a commit chunk */
    j = model_get(id);
    ck_assert_int_eq((int64_t)it_num(j, "step"), fenced_at);
    cJSON_Delete(j);
    snprintf(sql, sizeof sql, "SELECT MAX(last_step) FROM history_chunks WHERE model_id = %" PRId64,
             id);
    ck_assert_int_eq(db_sql(sql), fenced_at - 1);

    /* The model is free: the next run takes a new epoch and commits. */
    j = it_call("POST", path, "{\"steps\":3}", 200);
    ck_assert_int_eq((int64_t)it_num(j, "step"), fenced_at + 3);
    cJSON_Delete(j);
    snprintf(sql, sizeof sql, "SELECT epoch FROM model_leases WHERE model_id = %" PRId64, id);
    ck_assert_int_eq(db_sql(sql), 3);
}
END_TEST

/* A clean stop removes the row at once; the next start is a new replica with a new id. */
START_TEST(restart_is_a_new_replica)
{
    int64_t first = healthz_replica();
    ck_assert_int_eq(it_stop(&d), 0);
    ck_assert_int_eq(db_sql("SELECT COUNT(*) FROM replicas"), 0);
    ck_assert_int_eq(it_start_again(&d), 0);
    int64_t second = healthz_replica();
    ck_assert(second > first);
    int n = 0;
    cJSON *r = cluster_replica(second, &n);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(n, 1);
    cJSON_Delete(r);
}
END_TEST

START_TEST(advertise_overrides_the_address)
{
    it_finish(&d);
    static const char *const extra[] = {"--advertise", "replica-a.internal:9443", NULL};
    ck_assert_int_eq(it_start(&d, it_exe, extra), 0);
    cJSON *r = cluster_replica(healthz_replica(), NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(it_str(r, "address"), "replica-a.internal:9443");
    cJSON_Delete(r);
    it_finish(&d);
    static const char *const extra6[] = {"--advertise", "[2001:db8::5]:80", NULL};
    ck_assert_int_eq(it_start(&d, it_exe, extra6), 0);
    r = cluster_replica(healthz_replica(), NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_str_eq(it_str(r, "address"), "[2001:db8::5]:80");
    cJSON_Delete(r);
}
END_TEST

START_TEST(bad_cluster_flags_exit_2)
{
    static const char *const cases[][2] = {
        {"--advertise", "no-port"},      {"--advertise", "host:"},
        {"--advertise", "host:0"},       {"--advertise", "host:65536"},
        {"--advertise", ":8080"},        {"--advertise", "2001:db8::5:80"},
        {"--advertise", "'a b:80'"},     {"--advertise", "host:80x"},
        {"--advertise", "[2001:db8::5:80"}, {"--job-lease", "2"},
        {"--job-lease", "3601"},         {"--job-lease", "fifteen"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        char cmd[PATH_MAX + 200];
        snprintf(cmd, sizeof cmd, "'%s' %s %s --port 0 --db /nonexistent/x.db >/dev/null 2>&1",
                 it_exe, cases[i][0], cases[i][1]);
        int rc = system(cmd);
        ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "%s %s: exit %d", cases[i][0],
                      cases[i][1], WEXITSTATUS(rc));
    }
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("cluster");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, cluster_lists_this_replica);
    tcase_add_test(tc, dead_replicas_hidden_and_removed);
    tcase_add_test(tc, jobs_name_their_replica);
    tcase_add_test(tc, lost_lease_stops_the_run);
    tcase_add_test(tc, restart_is_a_new_replica);
    tcase_add_test(tc, advertise_overrides_the_address);
    tcase_add_test(tc, bad_cluster_flags_exit_2);
    suite_add_tcase(s, tc);
    return it_run(s);
}
