/* tests/integration/it_backup.c -- online backups: GET /v1/backup and neurond --backup.
 *
 * - A backup taken over HTTP while an async training job commits step after step: the file
 *   passes PRAGMA integrity_check, is a self-contained rollback-journal database, and holds
 *   one committed state (every model's step equals its number of history rows 0..step-1, the
 *   parameters have the model's size). Training is not blocked by it. Restoring it (stop,
 *   replace the database file, start) brings every model back at that state; the job that was
 *   running when the backup was taken comes back failed "interrupted"; training continues.
 * - The --backup flag, with the daemon running and with it stopped: exit 0 and a good copy;
 *   an existing output file is never overwritten (exit 1); a missing database is never created.
 * - The endpoint sits behind the tokens like every /v1 path, answers 405 to other methods, and
 *   leaves no temporary file beside the database.
 * - A database of schema 1 (history one row per step) is converted to chunks on start.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

static it_daemon_t d;

static void setup(void)
{
    const char *extra[] = {"--log-level", "warn", "--threads", "4", NULL};
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

static void teardown(void)
{
    int rc = d.pid > 0 ? it_stop(&d) : 0;
    it_cleanup(&d);
    ck_assert_msg(rc == 0, "daemon exit status %d on SIGTERM", rc);
}

/* `rows` rows of `n_x` features from a small LCG, y = 0.3 x0 - 0.2 x1 + 0.1. */
static void add_rows(int64_t id, int rows, int n_x)
{
    size_t cap = (size_t)rows * ((size_t)n_x + 2) * 24 + 64, o = 0;
    char *s = malloc(cap), *ys = malloc((size_t)rows * 24 + 8);
    unsigned seed = (unsigned)id * 7919u;
    size_t yo = 0;
    o += (size_t)snprintf(s + o, cap - o, "{\"x\":[");
    for (int i = 0; i < rows; ++i) {
        double y = 0.1;
        o += (size_t)snprintf(s + o, cap - o, "%s[", i ? "," : "");
        for (int k = 0; k < n_x; ++k) {
            seed = seed * 1103515245u + 12345u;
            double v = (double)(seed >> 8 & 0xffff) / 65535.0 * 2.0 - 1.0;
            y += k == 0 ? 0.3 * v : k == 1 ? -0.2 * v : 0.0;
            o += (size_t)snprintf(s + o, cap - o, "%s%.6f", k ? "," : "", v);
        }
        o += (size_t)snprintf(s + o, cap - o, "]");
        yo += (size_t)sprintf(ys + yo, "%s%.6f", i ? "," : "", y);
    }
    snprintf(s + o, cap - o, "],\"y\":[%s]}", ys);
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    cJSON_Delete(it_call("POST", path, s, 201));
    free(s);
    free(ys);
}

static void train(int64_t id, const char *req)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    cJSON_Delete(it_call("POST", path, req, 200));
}

/* A model whose long run keeps committing for many seconds. */
static int64_t slow_model(void)
{
    int64_t id = it_create_model(
        "{\"kind\":\"mlp\",\"inputs\":8,\"hidden\":[{\"units\":64,\"activation\":\"tanh\"},"
        "{\"units\":64,\"activation\":\"tanh\"}],\"init\":{\"method\":\"xavier\",\"seed\":3},"
        "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.001}}");
    add_rows(id, 3000, 8);
    return id;
}

static int64_t start_job(int64_t id)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    cJSON *j = it_call("POST", path, "{\"steps\":10000000,\"async\":true}", 202);
    int64_t job = (int64_t)it_num(j, "id");
    cJSON_Delete(j);
    return job;
}

/* The job's progress step, once it is running and past `min_step`. */
static int64_t job_wait_step(int64_t job, int64_t min_step)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    for (int waited = 0;; waited += 20) {
        cJSON *j = it_call("GET", path, NULL, 200);
        const char *status = cJSON_GetObjectItem(j, "status")->valuestring;
        int64_t step = (int64_t)it_num(cJSON_GetObjectItem(j, "progress"), "step");
        int running = strcmp(status, "running") == 0;
        cJSON_Delete(j);
        if (running && step >= min_step)
            return step;
        ck_assert_msg(waited < 60000, "job %lld: %s at step %lld after 60 s", (long long)job,
                      status, (long long)step);
        it_sleep_ms(20);
    }
}

static void job_cancel(int64_t job)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    cJSON_Delete(it_call("DELETE", path, NULL, 202));
    for (int waited = 0;; waited += 20) {
        cJSON *j = it_call("GET", path, NULL, 200);
        int done = strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "running") != 0 &&
                   strcmp(cJSON_GetObjectItem(j, "status")->valuestring, "queued") != 0;
        cJSON_Delete(j);
        if (done)
            return;
        ck_assert_msg(waited < 30000, "job %lld did not stop", (long long)job);
        it_sleep_ms(20);
    }
}

/* GET /v1/backup into `out`; checks the headers. */
static void fetch_backup(const char *out)
{
    it_resp_t r = {0};
    it_call_t c = {.method = "GET", .path = "/v1/backup"};
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_msg(r.status == 200, "GET /v1/backup: %ld %s", r.status, r.body);
    char *type = it_header(r.headers, "Content-Type");
    char *disp = it_header(r.headers, "Content-Disposition");
    char *size = it_header(r.headers, "X-Backup-Size");
    ck_assert_ptr_nonnull(type);
    ck_assert_str_eq(type, "application/vnd.sqlite3");
    ck_assert_msg(disp != NULL && strncmp(disp, "attachment; filename=\"neurond-", 30) == 0,
                  "Content-Disposition: %s", disp ? disp : "(none)");
    ck_assert_msg(size != NULL && strtoull(size, NULL, 10) == r.len,
                  "X-Backup-Size %s, body %zu bytes", size ? size : "(none)", r.len);
    ck_assert_msg(r.len >= 100 && memcmp(r.body, "SQLite format 3", 16) == 0,
                  "the body is not an SQLite database");
    FILE *f = fopen(out, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fwrite(r.body, 1, r.len, f), r.len);
    ck_assert_int_eq(fclose(f), 0);
    free(type);
    free(disp);
    free(size);
    it_resp_free(&r);
}

/* One integer from `sql` (with ?1 = a) on `db`. */
static int64_t query_int(sqlite3 *db, const char *sql, int64_t a)
{
    sqlite3_stmt *st = NULL;
    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
                  sqlite3_errmsg(db));
    if (sqlite3_bind_parameter_count(st) > 0)
        sqlite3_bind_int64(st, 1, a);
    ck_assert_msg(sqlite3_step(st) == SQLITE_ROW, "%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static char *query_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    char *v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

/* Open a backup read-only and check it: integrity, rollback journal, model `id` consistent
 * (step = history rows 0..step-1, parameters of n_params doubles). Returns the model's step. */
static int64_t check_backup(const char *path, int64_t id, int64_t n_params)
{
    sqlite3 *db = NULL;
    ck_assert_msg(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK,
                  "open %s", path);
    char *ok = query_text(db, "PRAGMA integrity_check");
    ck_assert_str_eq(ok, "ok");
    free(ok);
    char *mode = query_text(db, "PRAGMA journal_mode");
    ck_assert_str_eq(mode, "delete");          /* self-contained: no -wal file needed */
    free(mode);
    ck_assert_int_ge(query_int(db, "SELECT MAX(version) FROM schema_version", 0), 1);
    int64_t step = query_int(db, "SELECT step FROM models WHERE id = ?1", id);
    ck_assert_int_eq(query_int(db, "SELECT COALESCE(SUM(n), 0) FROM history_chunks"
                                   " WHERE model_id = ?1", id), step);
    if (step > 0) {
        ck_assert_int_eq(query_int(db, "SELECT MIN(first_step) FROM history_chunks"
                                       " WHERE model_id = ?1", id), 0);
        ck_assert_int_eq(query_int(db, "SELECT MAX(last_step) FROM history_chunks"
                                       " WHERE model_id = ?1", id), step - 1);
    }
    ck_assert_int_eq(query_int(db, "SELECT length(data) FROM parameters WHERE model_id = ?1", id),
                     n_params * 8);
    sqlite3_close(db);
    return step;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Files in the daemon's directory other than the database and its -wal/-shm/-journal. */
static int stray_files(void)
{
    DIR *dir = opendir(d.dir);
    ck_assert_ptr_nonnull(dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        if (e->d_name[0] == '.' || strncmp(e->d_name, "t.db", 4) == 0 ||
            strncmp(e->d_name, "backup", 6) == 0 || strncmp(e->d_name, "copy", 4) == 0 ||
            strncmp(e->d_name, "tokens", 6) == 0)
            continue;
        fprintf(stderr, "stray file %s/%s\n", d.dir, e->d_name);
        ++n;
    }
    closedir(dir);
    return n;
}

/* Run neurond with `args` (NULL-terminated, after argv[0]); its exit status. */
static int run_neurond(const char *const *args)
{
    const char *argv[16] = {it_exe};
    int n = 1;
    for (; args[n - 1] != NULL && n < 15; ++n)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execv(it_exe, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    ck_assert(in != NULL && out != NULL);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        ck_assert_int_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
}

/* 8-64-64-1 mlp: 64*9 + 64*65 + 1*65 parameters. */
#define SLOW_PARAMS (64 * 9 + 64 * 65 + 65)

START_TEST(backup_during_job_and_restore)
{
    /* A small model with a known state, and a slow one that keeps training. */
    int64_t small = it_create_model("{\"name\":\"small\",\"kind\":\"linear\",\"inputs\":3}");
    add_rows(small, 32, 3);
    train(small, "{\"steps\":7}");
    cJSON *params_before = it_call("GET", "/v1/models/1/parameters", NULL, 200);
    int64_t slow = slow_model();
    train(slow, "{\"steps\":2}");
    int64_t job = start_job(slow);
    int64_t before = job_wait_step(job, 5);

    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/backup.db", d.dir);
    fetch_backup(path);
    /* Training went on meanwhile and still does: the backup did not stop it. */
    int64_t after = job_wait_step(job, before + 3);
    ck_assert_int_gt(after, before);

    ck_assert_int_eq(check_backup(path, small, 4), 7);
    int64_t step = check_backup(path, slow, SLOW_PARAMS);
    ck_assert_msg(step >= 2 + before, "backup at step %lld, job was past %lld", (long long)step,
                  (long long)(2 + before));
    job_cancel(job);
    ck_assert_int_eq(stray_files(), 0);

    /* Restore: stop, put the backup in place of the database, start again. */
    ck_assert_int_eq(it_stop(&d), 0);
    char side[PATH_MAX + 32];
    snprintf(side, sizeof side, "%s-wal", d.db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", d.db);
    unlink(side);
    copy_file(path, d.db);
    ck_assert_int_eq(it_start_again(&d), 0);

    char p[96];
    snprintf(p, sizeof p, "/v1/models/%lld", (long long)slow);
    cJSON *m = it_call("GET", p, NULL, 200);
    ck_assert_int_eq((int64_t)it_num(m, "step"), step);
    ck_assert_str_eq(cJSON_GetObjectItem(m, "status")->valuestring, "idle");
    cJSON_Delete(m);
    ck_assert_int_lt(step, 10000);
    snprintf(p, sizeof p, "/v1/models/%lld/history?limit=10000", (long long)slow);
    m = it_call("GET", p, NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(m, "history")), (int)step);
    cJSON_Delete(m);
    cJSON *params_after = it_call("GET", "/v1/models/1/parameters", NULL, 200);
    ck_assert_msg(cJSON_Compare(params_before, params_after, 1), "small model's parameters "
                  "changed across backup and restore");
    cJSON_Delete(params_before);
    cJSON_Delete(params_after);
    /* The job that ran when the backup was taken belonged to a process that is gone. */
    snprintf(p, sizeof p, "/v1/jobs/%lld", (long long)job);
    m = it_call("GET", p, NULL, 200);
    ck_assert_str_eq(cJSON_GetObjectItem(m, "status")->valuestring, "failed");
    ck_assert_str_eq(cJSON_GetObjectItem(m, "error")->valuestring, "interrupted");
    cJSON_Delete(m);
    /* The restored model trains on from where the backup left it. */
    snprintf(p, sizeof p, "/v1/models/%lld/train", (long long)slow);
    m = it_call("POST", p, "{\"steps\":1}", 200);
    ck_assert_int_eq((int64_t)it_num(m, "step"), step + 1);
    cJSON_Delete(m);
}
END_TEST

START_TEST(backup_flag)
{
    int64_t id = slow_model();
    train(id, "{\"steps\":3}");
    int64_t job = start_job(id);
    job_wait_step(job, 2);

    /* While the daemon runs and the job commits. */
    char out[PATH_MAX + 32], again[PATH_MAX + 32];
    snprintf(out, sizeof out, "%s/copy1.db", d.dir);
    const char *args1[] = {"--backup", out, "--db", d.db, NULL};
    ck_assert_int_eq(run_neurond(args1), 0);
    int64_t step = check_backup(out, id, SLOW_PARAMS);
    ck_assert_int_ge(step, 3);
    char side[PATH_MAX + 40];
    snprintf(side, sizeof side, "%s-wal", out);
    ck_assert_msg(!file_exists(side), "the copy left a -wal file");

    /* An existing file is never overwritten. */
    struct stat st0, st1;
    ck_assert_int_eq(stat(out, &st0), 0);
    ck_assert_int_eq(run_neurond(args1), 1);
    ck_assert_int_eq(stat(out, &st1), 0);
    ck_assert(st0.st_size == st1.st_size && st0.st_mtime == st1.st_mtime);
    ck_assert_int_eq(check_backup(out, id, SLOW_PARAMS), step);

    /* A missing database is an error, and is not created. */
    char missing[PATH_MAX + 32];
    snprintf(missing, sizeof missing, "%s/missing.db", d.dir);
    snprintf(again, sizeof again, "%s/copy2.db", d.dir);
    const char *args2[] = {"--db", missing, "--backup", again, NULL};
    ck_assert_int_eq(run_neurond(args2), 1);
    ck_assert(!file_exists(missing) && !file_exists(again));
    const char *args3[] = {"--backup", NULL};
    ck_assert_int_eq(run_neurond(args3), 2);

    /* With the daemon stopped: the same copy as the last committed state. */
    job_cancel(job);
    ck_assert_int_eq(it_stop(&d), 0);
    const char *args4[] = {"--backup=", NULL};
    ck_assert_int_eq(run_neurond(args4), 2);
    char eq[PATH_MAX + 48];
    snprintf(eq, sizeof eq, "--backup=%s", again);
    const char *args5[] = {eq, "--db", d.db, NULL};
    ck_assert_int_eq(run_neurond(args5), 0);
    int64_t final_step = check_backup(again, id, SLOW_PARAMS);
    ck_assert_int_gt(final_step, step);
    ck_assert_int_eq(it_start_again(&d), 0);
    char p[64];
    snprintf(p, sizeof p, "/v1/models/%lld", (long long)id);
    cJSON *m = it_call("GET", p, NULL, 200);
    ck_assert_int_eq((int64_t)it_num(m, "step"), final_step);
    cJSON_Delete(m);
}
END_TEST

START_TEST(backup_methods_and_auth)
{
    cJSON *j = it_call("POST", "/v1/backup", "{}", 405);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code")->valuestring,
                     "method_not_allowed");
    cJSON_Delete(j);
    ck_assert_int_eq(it_stop(&d), 0);
    it_cleanup(&d);

    /* With tokens: 401 without one, 200 with one. */
    char tokens[] = "/tmp/it_backup_tokens.XXXXXX";
    int fd = mkstemp(tokens);
    ck_assert_int_ge(fd, 0);
    static const char text[] = "backup-test-token-0123456789\n";
    ck_assert_int_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    const char *extra[] = {"--log-level", "warn", "--token-file", tokens, NULL};
    ck_assert_int_eq(it_start(&d, it_exe, extra), 0);
    long status = 0;
    j = it_json("GET", "/v1/backup", NULL, &status);
    ck_assert_int_eq(status, 401);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code")->valuestring,
                     "unauthenticated");
    cJSON_Delete(j);
    it_resp_t r = {0};
    const char *hdrs[] = {"Authorization: Bearer backup-test-token-0123456789", NULL};
    it_call_t c = {.method = "GET", .path = "/v1/backup", .headers = hdrs};
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert(r.len >= 100 && memcmp(r.body, "SQLite format 3", 16) == 0);
    it_resp_free(&r);
    unlink(tokens);
    ck_assert_int_eq(stray_files(), 0);
}
END_TEST

/* A database written before history was stored in chunks (schema 1: one `history` row per step)
 * is converted on start: every row reads back with its step, values, nulls and time. */
START_TEST(history_rows_migrate)
{
    int64_t id = it_create_model("{\"kind\":\"linear\",\"inputs\":2}");
    ck_assert_int_eq(it_stop(&d), 0);
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(d.db, &db), SQLITE_OK);
    char sql[2048];
    snprintf(sql, sizeof sql,
             "BEGIN;"
             "DROP INDEX jobs_queue;"
             "ALTER TABLE jobs DROP COLUMN cancel_requested;"
             "ALTER TABLE jobs DROP COLUMN loss_before;"
             "ALTER TABLE jobs DROP COLUMN start_step;"
             "DROP TABLE model_leases;"
             "DROP TABLE replicas;"
             "ALTER TABLE jobs DROP COLUMN replica_id;"
             "DROP TABLE history_chunks;"
             "ALTER TABLE batches DROP COLUMN split;"
             "ALTER TABLE models DROP COLUMN validation_rows;"
             "DROP TABLE checkpoint_history;"
             "ALTER TABLE checkpoints DROP COLUMN history_saved;"
             "ALTER TABLE models DROP COLUMN hidden;"
             "DELETE FROM schema_version WHERE version >= 2;"
             "CREATE TABLE history (model_id INTEGER NOT NULL REFERENCES models(id)"
             " ON DELETE CASCADE, step INTEGER NOT NULL, loss REAL, grad_norm REAL,"
             " learning_rate REAL, at TEXT NOT NULL, PRIMARY KEY (model_id, step)) WITHOUT ROWID;"
             "INSERT INTO history VALUES"
             " (%1$lld, 0, 0.75, 1.5, 0.01, '2026-01-02T03:04:05.678Z'),"
             " (%1$lld, 1, NULL, NULL, 0.01, '2026-01-02T03:04:05.678Z'),"
             " (%1$lld, 2, 0.125, 0.25, 0.02, '2026-01-02T03:04:06.001Z'),"
             " (%1$lld, 5, 0.0625, 0.5, 0.02, '2026-01-02T03:04:06.001Z');"
             "UPDATE models SET step = 6 WHERE id = %1$lld;"
             "COMMIT;", (long long)id);
    char *msg = NULL;
    ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK, "%s", msg);
    sqlite3_close(db);
    ck_assert_int_eq(it_start_again(&d), 0);

    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/history", (long long)id);
    char *text = it_get_text(path);
    ck_assert_str_eq(text,
                     "{\"history\":["
                     "{\"step\":0,\"loss\":0.75,\"grad_norm\":1.5,\"learning_rate\":0.01,"
                     "\"at\":\"2026-01-02T03:04:05.678Z\"},"
                     "{\"step\":1,\"loss\":null,\"grad_norm\":null,\"learning_rate\":0.01,"
                     "\"at\":\"2026-01-02T03:04:05.678Z\"},"
                     "{\"step\":2,\"loss\":0.125,\"grad_norm\":0.25,\"learning_rate\":0.02,"
                     "\"at\":\"2026-01-02T03:04:06.001Z\"},"
                     "{\"step\":5,\"loss\":0.0625,\"grad_norm\":0.5,\"learning_rate\":0.02,"
                     "\"at\":\"2026-01-02T03:04:06.001Z\"}],\"next\":null}");
    free(text);
    ck_assert_int_eq(sqlite3_open_v2(d.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    ck_assert_int_eq(query_int(db, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'history'", 0),
                     0);
    ck_assert_int_ge(query_int(db, "SELECT MAX(version) FROM schema_version", 0), 2);
    sqlite3_close(db);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    if (it_backend_pg()) {
        /* Online backups copy a SQLite file; it_postgres checks the 501 PostgreSQL answers. */
        printf("SKIP: backups are of SQLite databases\n");
        return IT_EXIT_SKIPPED;
    }
    Suite *s = suite_create("backup");
    TCase *tc = tcase_create("backup");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, backup_during_job_and_restore);
    tcase_add_test(tc, backup_flag);
    tcase_add_test(tc, backup_methods_and_auth);
    tcase_add_test(tc, history_rows_migrate);
    suite_add_tcase(s, tc);
    return it_run(s);
}
