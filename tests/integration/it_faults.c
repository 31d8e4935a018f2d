/* tests/integration/it_faults.c -- the daemon under storage faults and crashes.
 *
 * - kill -9 at random (seeded) moments while async jobs and sync train calls commit, ten
 *   rounds: after each restart the database passes PRAGMA integrity_check, every model sits
 *   exactly at a committed step with contiguous history 0..step-1, killed jobs are failed
 *   "interrupted", and training continues.
 * - Storage unavailable, three ways: a full disk (a small tmpfs in a private mount namespace,
 *   filled with a filler file), a file size limit (RLIMIT_FSIZE set on the running daemon with
 *   prlimit: every write then fails with EFBIG) and a read-only database (the immutable
 *   attribute on the database and its WAL). Writes answer 503 unavailable, reads keep working,
 *   /healthz says 503, a run that cannot commit ends cleanly at its last committed step, nothing
 *   is corrupted, and service resumes without a restart once the fault is gone.
 * - An outside writer holding the database lock: writes wait for it (busy timeout) and
 *   succeed; held past the busy timeout (NEUROND_BUSY_TIMEOUT_MS) they answer 503, never 500,
 *   but training runs wait for the lock and go on.
 * - A second neurond on the same database refuses to start and leaves the first one alone.
 * - A fork or delete cut off half-way (kill -9) leaves no visible half model; the next start
 *   removes what it had written.
 *
 * Sub-cases that need privileges this machine may not grant (mounting tmpfs, setting the
 * immutable attribute) end with IT_SKIP, each in a ctest test of its own that then reports
 * "Skipped" (exit 77), never a pass; nothing else is skipped.
 */
#define _GNU_SOURCE   /* unshare, prlimit */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

static it_daemon_t d;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start(const char *const *extra)
{
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

static void start_default(void)
{
    const char *extra[] = {"--log-level", "error", "--threads", "8", "--max-jobs", "8", NULL};
    start(extra);
}

static void teardown(void)
{
    int rc = d.pid > 0 ? it_stop(&d) : 0;
    it_cleanup(&d);
    ck_assert_msg(rc == 0, "daemon exit status %d on SIGTERM", rc);
}

/* ---- HTTP helpers ------------------------------------------------------------------------- */

static cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = get(o, key);
    ck_assert_msg(cJSON_IsString(v), "%s is not a string", key);
    return v->valuestring;
}

/* A 503 unavailable whose message contains `word` (case-sensitive; NULL: any message). */
static void expect_unavailable(const char *method, const char *path, const char *body,
                               const char *word)
{
    cJSON *j = it_call(method, path, body, 503);
    ck_assert_msg(j != NULL, "%s %s: 503 without JSON", method, path);
    const cJSON *e = get(j, "error");
    ck_assert_str_eq(str(e, "code"), "unavailable");
    const char *msg = str(e, "message");
    ck_assert_msg(word == NULL || strstr(msg, word) != NULL, "%s %s: message '%s' lacks '%s'",
                  method, path, msg, word);
    cJSON_Delete(j);
}

/* Labels: 0 regression (y = 0.3 x0 - 0.2 x1 + 0.1), 2 binary 0/1, k > 2 classes 0..k-1. */
static char *batch_json(int rows, int n_x, int classes, unsigned seed)
{
    size_t cap = (size_t)rows * ((size_t)n_x + 2) * 24 + 64;
    char *s = malloc(cap);
    size_t o = (size_t)snprintf(s, cap, "{\"x\":[");
    double *y = malloc((size_t)rows * sizeof *y);
    for (int i = 0; i < rows; ++i) {
        o += (size_t)snprintf(s + o, cap - o, "%s[", i ? "," : "");
        double acc = 0.1;
        for (int k = 0; k < n_x; ++k) {
            seed = seed * 1103515245u + 12345u;
            double v = ((double)(seed >> 8 & 0xffff) / 65535.0) * 2.0 - 1.0;
            if (k == 0)
                acc += 0.3 * v;
            if (k == 1)
                acc -= 0.2 * v;
            o += (size_t)snprintf(s + o, cap - o, "%s%.6f", k ? "," : "", v);
        }
        if (classes == 2)
            acc = acc > 0.1 ? 1 : 0;
        else if (classes > 2)
            acc = (double)(i % classes);
        y[i] = acc;
        o += (size_t)snprintf(s + o, cap - o, "]");
    }
    o += (size_t)snprintf(s + o, cap - o, "],\"y\":[");
    for (int i = 0; i < rows; ++i)
        o += (size_t)snprintf(s + o, cap - o, "%s%.6f", i ? "," : "", y[i]);
    snprintf(s + o, cap - o, "]}");
    free(y);
    return s;
}

static void add_rows(int64_t id, int rows, int n_x, int classes)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    char *b = batch_json(rows, n_x, classes, (unsigned)id * 7919u);
    it_call_free("POST", path, b, 201);
    free(b);
}

static int64_t small_model(void)
{
    int64_t id = it_create_model("{\"kind\":\"linear\",\"inputs\":3,"
                              "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.05}}");
    add_rows(id, 32, 3, 0);
    return id;
}

static int64_t model_step(int64_t id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    cJSON *m = it_call("GET", path, NULL, 200);
    int64_t step = (int64_t)it_num(m, "step");
    cJSON_Delete(m);
    return step;
}

static int64_t train(int64_t id, int steps)
{
    char path[96], body[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    snprintf(body, sizeof body, "{\"steps\":%d,\"history_every\":1}", steps);
    cJSON *r = it_call("POST", path, body, 200);
    int64_t step = (int64_t)it_num(r, "step");
    ck_assert_int_eq((int64_t)it_num(r, "steps_run"), steps);
    cJSON_Delete(r);
    return step;
}

static cJSON *job_get(int64_t job)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    return it_call("GET", path, NULL, 200);
}

/* Poll until the job has a final status; returns it. */
static cJSON *job_wait_final(int64_t job, int timeout_ms)
{
    for (int64_t t0 = now_ms();; it_sleep_ms(20)) {
        cJSON *j = job_get(job);
        const char *s = str(j, "status");
        if (strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 ||
            strcmp(s, "cancelled") == 0)
            return j;
        ck_assert_msg(now_ms() - t0 < timeout_ms, "job %lld still %s after %d ms",
                      (long long)job, s, timeout_ms);
        cJSON_Delete(j);
    }
}

/* Poll until the job has committed a chunk (progress.step > 0). */
static void job_wait_progress(int64_t job)
{
    for (int64_t t0 = now_ms();; it_sleep_ms(20)) {
        cJSON *j = job_get(job);
        double step = it_num(get(j, "progress"), "step");
        const char *s = str(j, "status");
        ck_assert_msg(strcmp(s, "queued") == 0 || strcmp(s, "running") == 0, "job ended: %s", s);
        cJSON_Delete(j);
        if (step > 0)
            return;
        ck_assert_msg(now_ms() - t0 < 30000, "no progress after 30 s");
    }
}

/* Every history row of model `id` in order; checks they are exactly 0..count-1 (contiguous,
 * as history_every 1 records). Returns the count. */
static int64_t history_contiguous(int64_t id)
{
    char path[128];
    int64_t after = -1, n = 0;
    for (;;) {
        snprintf(path, sizeof path, "/v1/models/%lld/history?after_step=%lld&limit=10000",
                 (long long)id, (long long)after);
        cJSON *h = it_call("GET", path, NULL, 200);
        cJSON *r;
        cJSON_ArrayForEach(r, get(h, "history"))
        {
            int64_t s = (int64_t)it_num(r, "step");
            ck_assert_msg(s == n, "model %lld: history row %lld has step %lld", (long long)id,
                          (long long)n, (long long)s);
            ck_assert_msg(isfinite(it_num(r, "loss")), "model %lld: history loss not finite",
                          (long long)id);
            ++n;
        }
        cJSON *next = get(h, "next");
        int more = cJSON_IsNumber(next);
        if (more)
            after = (int64_t)next->valuedouble;
        cJSON_Delete(h);
        if (!more)
            return n;
    }
}

/* The model is exactly at a committed step: idle, step == number of history rows (rows
 * 0..step-1), parameters at the same step and finite. Returns the step. */
static int64_t check_consistent(int64_t id)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    cJSON *m = it_call("GET", path, NULL, 200);
    int64_t step = (int64_t)it_num(m, "step");
    ck_assert_msg(strcmp(str(m, "status"), "idle") == 0, "model %lld is %s", (long long)id,
                  str(m, "status"));
    cJSON_Delete(m);
    int64_t rows = history_contiguous(id);
    ck_assert_msg(step == rows, "model %lld: step %lld but %lld history rows (0..%lld)",
                  (long long)id, (long long)step, (long long)rows, (long long)rows - 1);
    snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)id);
    cJSON *p = it_call("GET", path, NULL, 200);
    ck_assert_int_eq((int64_t)it_num(p, "step"), step);
    char *text = cJSON_PrintUnformatted(get(p, "parameters"));
    ck_assert_msg(strstr(text, "null") == NULL, "non-finite parameters: %s", text);
    free(text);
    cJSON_Delete(p);
    return step;
}

/* Poll until model `id` is idle (its training run has ended). */
static void wait_idle(int64_t id, int timeout_ms)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    for (int64_t t0 = now_ms();; it_sleep_ms(20)) {
        cJSON *m = it_call("GET", path, NULL, 200);
        int idle = strcmp(str(m, "status"), "idle") == 0;
        cJSON_Delete(m);
        if (idle)
            return;
        ck_assert_msg(now_ms() - t0 < timeout_ms, "model %lld still training after %d ms",
                      (long long)id, timeout_ms);
    }
}

/* The answer of /healthz: `want_ok` 1 waits for 200 with db ok, 0 for 503 with db not ok. The
 * check is cached for up to a second, so poll. */
static void wait_health(int want_ok, int timeout_ms)
{
    for (int64_t t0 = now_ms();; it_sleep_ms(50)) {
        long status = 0;
        cJSON *h = it_json("GET", "/healthz", NULL, &status);
        ck_assert_msg(h != NULL, "/healthz: no JSON (status %ld)", status);
        const char *db = str(h, "db");
        int ok = status == 200 && strcmp(db, "ok") == 0 && strcmp(str(h, "status"), "ok") == 0;
        int bad = status == 503 && strcmp(db, "ok") != 0 &&
                  strcmp(str(h, "status"), "unavailable") == 0;
        cJSON_Delete(h);
        if (want_ok ? ok : bad)
            return;
        ck_assert_msg(now_ms() - t0 < timeout_ms, "/healthz: status %ld, db %s after %d ms",
                      status, db, timeout_ms);
    }
}

/* ---- the database, from outside ------------------------------------------------------------ */

/* PRAGMA integrity_check on the daemon's database, opened read-only: "ok". */
static void check_integrity(void)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(d.db, &db, SQLITE_OPEN_READONLY, NULL);
    ck_assert_msg(rc == SQLITE_OK, "open %s: %s", d.db, sqlite3_errstr(rc));
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
    ck_assert_msg(rc == SQLITE_OK, "prepare: %s", sqlite3_errmsg(db));
    rc = sqlite3_step(st);
    ck_assert_msg(rc == SQLITE_ROW, "integrity_check: %s", sqlite3_errmsg(db));
    const char *res = (const char *)sqlite3_column_text(st, 0);
    ck_assert_msg(res != NULL && strcmp(res, "ok") == 0, "integrity_check: %s",
                  res != NULL ? res : "(null)");
    ck_assert_int_eq(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Fold the WAL back into the database and truncate it, so every later write must allocate new
 * space (a WAL with room left would take small writes even on a full disk). */
static void wal_truncate(void)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open_v2(d.db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    int rc = sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    ck_assert_msg(rc == SQLITE_OK, "wal_checkpoint: %s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* ---- a. kill -9 at random moments ------------------------------------------------------------ */

typedef struct sync_call {
    int64_t model;
    pthread_t thread;
} sync_call_t;

/* A sync train call that runs until the daemon dies under it; the transport error is the
 * expected end, so nothing is checked here. */
static void *sync_main(void *arg)
{
    sync_call_t *sc = arg;
    CURL *c = curl_easy_init();
    if (c == NULL)
        return NULL;
    char url[160];
    snprintf(url, sizeof url, "%s/v1/models/%lld/train", it_base_url(), (long long)sc->model);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{\"steps\":100000000,\"history_every\":1}");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    FILE *sink = fopen("/dev/null", "w");
    if (sink != NULL)
        curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
    curl_easy_perform(c);
    if (sink != NULL)
        fclose(sink);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

#define KILL_ROUNDS 10
#define KILL_MODELS 3

START_TEST(kill9_rounds)
{
    int64_t ids[KILL_MODELS];
    ids[0] = it_create_model("{\"kind\":\"mlp\",\"inputs\":4,\"hidden\":[{\"units\":16,"
                          "\"activation\":\"tanh\"}],\"init\":{\"method\":\"xavier\",\"seed\":5},"
                          "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.01}}");
    add_rows(ids[0], 256, 4, 0);
    ids[1] = it_create_model("{\"kind\":\"logistic\",\"inputs\":4,"
                          "\"optimizer\":{\"method\":\"adam\",\"learning_rate\":0.01}}");
    add_rows(ids[1], 256, 4, 2);
    ids[2] = it_create_model("{\"kind\":\"softmax\",\"inputs\":4,\"classes\":3,"
                          "\"optimizer\":{\"method\":\"momentum\",\"learning_rate\":0.01,"
                          "\"momentum\":0.9}}");
    add_rows(ids[2], 256, 4, 3);

    unsigned seed = 20261128u;             /* fixed: the same moments on every run */
    int64_t jobs[KILL_ROUNDS * KILL_MODELS];
    int n_jobs = 0;
    for (int round = 0; round < KILL_ROUNDS; ++round) {
        sync_call_t sc[KILL_MODELS];
        int n_sync = 0, round_jobs = n_jobs;
        for (int k = 0; k < KILL_MODELS; ++k) {
            if (rand_r(&seed) % 2 == 0) {
                jobs[n_jobs++] = it_submit_job(ids[k], "{\"steps\":100000000,\"history_every\":1,"
                                                "\"async\":true}");
            } else {
                sc[n_sync].model = ids[k];
                ck_assert_int_eq(pthread_create(&sc[n_sync].thread, NULL, sync_main,
                                                &sc[n_sync]), 0);
                n_sync++;
            }
        }
        int wait = 50 + (int)(rand_r(&seed) % 651);
        it_sleep_ms(wait);
        it_kill9(&d);
        for (int i = 0; i < n_sync; ++i)
            pthread_join(sc[i].thread, NULL);
        ck_assert_msg(it_start_again(&d) == 0, "round %d: no restart", round);

        check_integrity();
        for (int k = 0; k < KILL_MODELS; ++k)
            check_consistent(ids[k]);
        for (int i = round_jobs; i < n_jobs; ++i) {
            cJSON *j = job_get(jobs[i]);
            ck_assert_str_eq(str(j, "status"), "failed");
            ck_assert_str_eq(str(j, "error"), "interrupted");
            cJSON_Delete(j);
        }
        cJSON *running = it_call("GET", "/v1/jobs?status=running", NULL, 200);
        ck_assert_int_eq(cJSON_GetArraySize(get(running, "jobs")), 0);
        cJSON_Delete(running);
        /* Training continues from the committed step, exactly, and records rows s0, s0+1. */
        for (int k = 0; k < KILL_MODELS; ++k) {
            int64_t s0 = model_step(ids[k]);
            ck_assert_int_eq(train(ids[k], 2), s0 + 2);
            ck_assert_int_eq(model_step(ids[k]), s0 + 2);
            char path[128];
            snprintf(path, sizeof path, "/v1/models/%lld/history?after_step=%lld",
                     (long long)ids[k], (long long)s0 - 1);
            cJSON *h = it_call("GET", path, NULL, 200);
            cJSON *rows = get(h, "history");
            ck_assert_int_eq(cJSON_GetArraySize(rows), 2);
            ck_assert_int_eq((int64_t)it_num(cJSON_GetArrayItem(rows, 0), "step"), s0);
            ck_assert_int_eq((int64_t)it_num(cJSON_GetArrayItem(rows, 1), "step"), s0 + 1);
            cJSON_Delete(h);
        }
        fprintf(stderr, "kill9 round %d: killed after %d ms, steps %lld %lld %lld\n", round,
                wait, (long long)model_step(ids[0]), (long long)model_step(ids[1]),
                (long long)model_step(ids[2]));
    }
    cJSON *failed = it_call("GET", "/v1/jobs?status=failed", NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(get(failed, "jobs")), n_jobs);
    cJSON_Delete(failed);
    check_integrity();
}
END_TEST

/* ---- b. storage unavailable ------------------------------------------------------------------ */

/*
 * The common scenario once `fault_on()` has made every write fail and before `fault_off()`
 * lifts it; `word` is what the 503 messages must mention ("full", "read-only").
 *   - /healthz turns 503 with db not ok;
 *   - creating a model, posting a batch, training (sync and async), setting parameters,
 *     checkpointing and deleting answer 503 unavailable; the model is unchanged;
 *   - reads (models, parameters, history, predict, loss, jobs) answer 200;
 *   - an async job that was committing when the fault came ends failed with the reason, the
 *     model at its last committed step and idle;
 *   - after fault_off() the same writes succeed without a restart and the database is intact.
 */
typedef void (*fault_fn)(void);

static void storage_unavailable(fault_fn fault_on, fault_fn fault_off, const char *word)
{
    int64_t id = small_model();
    ck_assert_int_eq(train(id, 5), 5);
    int64_t busy = it_create_model("{\"kind\":\"mlp\",\"inputs\":4,\"hidden\":[{\"units\":16,"
                                "\"activation\":\"tanh\"}],\"optimizer\":{\"method\":\"sgd\","
                                "\"learning_rate\":0.01}}");
    add_rows(busy, 64, 4, 0);
    int64_t job = it_submit_job(busy, "{\"steps\":100000000,\"history_every\":1,\"async\":true}");
    job_wait_progress(job);

    char path[128], mpath[64];
    snprintf(mpath, sizeof mpath, "/v1/models/%lld", (long long)id);
    cJSON *before = it_call("GET", mpath, NULL, 200);
    char *before_text = cJSON_PrintUnformatted(before);
    cJSON_Delete(before);

    fault_on();
    wait_health(0, 5000);

    /* The running job cannot commit its next chunk: its run ends (the model is idle again).
     * Its end is recorded once the storage is back. */
    wait_idle(busy, 20000);

    expect_unavailable("POST", "/v1/models", "{\"kind\":\"linear\",\"inputs\":2}", word);
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    char *b = batch_json(200, 3, 0, 42);
    expect_unavailable("POST", path, b, word);
    free(b);
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    expect_unavailable("POST", path, "{\"steps\":3}", word);
    expect_unavailable("POST", path, "{\"steps\":3000,\"history_every\":1}", word);
    expect_unavailable("POST", path, "{\"steps\":3,\"async\":true}", word);
    snprintf(path, sizeof path, "/v1/models/%lld/step", (long long)id);
    expect_unavailable("POST", path, "{\"x\":[[1,2,3]],\"y\":[1]}", word);
    snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)id);
    expect_unavailable("PUT", path, "{\"parameters\":{\"W1\":[[0,0,0,0]]}}", word);
    snprintf(path, sizeof path, "/v1/models/%lld/checkpoints", (long long)id);
    expect_unavailable("POST", path, "{}", word);
    expect_unavailable("DELETE", mpath, NULL, word);

    /* Reads keep working and see the model unchanged. */
    cJSON *m = it_call("GET", mpath, NULL, 200);
    char *text = cJSON_PrintUnformatted(m);
    ck_assert_str_eq(text, before_text);
    free(text);
    cJSON_Delete(m);
    it_call_free("GET", "/v1/models", NULL, 200);
    snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)id);
    it_call_free("GET", path, NULL, 200);
    snprintf(path, sizeof path, "/v1/models/%lld/history", (long long)id);
    it_call_free("GET", path, NULL, 200);
    snprintf(path, sizeof path, "/v1/models/%lld/predict", (long long)id);
    it_call_free("POST", path, "{\"x\":[[1,2,3]]}", 200);
    snprintf(path, sizeof path, "/v1/models/%lld/loss", (long long)id);
    it_call_free("POST", path, "{}", 200);
    it_call_free("GET", "/v1/jobs", NULL, 200);
    ck_assert_int_eq(check_consistent(id), 5);
    int64_t busy_step = check_consistent(busy);
    ck_assert(busy_step > 0);

    fault_off();
    wait_health(1, 5000);
    cJSON *j = job_wait_final(job, 5000);
    ck_assert_str_eq(str(j, "status"), "failed");
    ck_assert_msg(strstr(str(j, "error"), word) != NULL, "job error '%s' lacks '%s'",
                  str(j, "error"), word);
    cJSON_Delete(j);
    ck_assert_int_eq(check_consistent(busy), busy_step);
    check_integrity();
    /* Service resumes without a restart. */
    ck_assert_int_eq(train(id, 3), 8);
    ck_assert_int_eq(check_consistent(id), 8);
    ck_assert_int_eq(train(busy, 2), busy_step + 2);
    ck_assert_int_eq(check_consistent(busy), busy_step + 2);
    int64_t id2 = it_create_model("{\"kind\":\"linear\",\"inputs\":3}");
    add_rows(id2, 16, 3, 0);
    ck_assert_int_eq(train(id2, 1), 1);
    snprintf(path, sizeof path, "/v1/models/%lld/checkpoints", (long long)id);
    it_call_free("POST", path, "{}", 201);
    job = it_submit_job(id, "{\"steps\":4,\"history_every\":1,\"async\":true}");
    j = job_wait_final(job, 20000);
    ck_assert_str_eq(str(j, "status"), "succeeded");
    cJSON_Delete(j);
    ck_assert_int_eq(check_consistent(id), 12);
    check_integrity();
    free(before_text);
}

/* -- a full disk: a 16 MiB tmpfs, filled up by a filler file -- */

static char tmpfs_dir[PATH_MAX];
static char filler_path[PATH_MAX + 16];

static void tmpfs_unmount(void)
{
    if (tmpfs_dir[0] != '\0') {
        umount2(tmpfs_dir, MNT_DETACH);
        rmdir(tmpfs_dir);
        tmpfs_dir[0] = '\0';
    }
}

/* A private mount namespace (the mount disappears with this process, even when it crashes)
 * with a small tmpfs; 0, or -1 with the reason in why. */
static int tmpfs_mount(char *why, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(tmpfs_dir, sizeof tmpfs_dir, "%s/neurond-full-XXXXXX", tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(tmpfs_dir) == NULL) {
        snprintf(why, size, "mkdtemp: %s", strerror(errno));
        tmpfs_dir[0] = '\0';
        return -1;
    }
    if (unshare(CLONE_NEWNS) < 0) {
        snprintf(why, size, "unshare(CLONE_NEWNS): %s", strerror(errno));
        rmdir(tmpfs_dir);
        tmpfs_dir[0] = '\0';
        return -1;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("neurond-it", tmpfs_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0700") < 0) {
        snprintf(why, size, "mount tmpfs: %s", strerror(errno));
        rmdir(tmpfs_dir);
        tmpfs_dir[0] = '\0';
        return -1;
    }
    atexit(tmpfs_unmount);
    return 0;
}

static void disk_fill(void)
{
    wal_truncate();
    int fd = open(filler_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_msg(fd >= 0, "open filler: %s", strerror(errno));
    static char block[65536];
    for (;;) {
        ssize_t w = write(fd, block, sizeof block);
        if (w < 0) {
            ck_assert_msg(errno == ENOSPC, "filler: %s", strerror(errno));
            break;
        }
        if (w < (ssize_t)sizeof block) {
            /* The last partial block: one more write reports ENOSPC. */
            continue;
        }
    }
    close(fd);
}

static void disk_free(void)
{
    ck_assert_msg(unlink(filler_path) == 0, "unlink filler: %s", strerror(errno));
}

START_TEST(disk_full)
{
    char why[256];
    if (tmpfs_mount(why, sizeof why) < 0)
        IT_SKIP("disk_full (tmpfs): %s -- needs root or CAP_SYS_ADMIN; file_size_limit covers "
                "the same paths with EFBIG", why);
    setenv("TMPDIR", tmpfs_dir, 1);          /* it_start puts the database in there */
    start_default();
    snprintf(filler_path, sizeof filler_path, "%s/filler", tmpfs_dir);
    storage_unavailable(disk_fill, disk_free, "full");
}
END_TEST

/* -- a file size limit: RLIMIT_FSIZE 0 on the running daemon, so every write is EFBIG -- */

static void fsize_limit(rlim_t cur)
{
    struct rlimit now;
    ck_assert_int_eq(prlimit(d.pid, RLIMIT_FSIZE, NULL, &now), 0);
    struct rlimit want = {.rlim_cur = cur, .rlim_max = now.rlim_max};
    ck_assert_msg(prlimit(d.pid, RLIMIT_FSIZE, &want, NULL) == 0, "prlimit: %s",
                  strerror(errno));
}

static void fsize_on(void)
{
    wal_truncate();
    fsize_limit(0);
}

static void fsize_off(void)
{
    fsize_limit(RLIM_INFINITY);
}

START_TEST(file_size_limit)
{
    start_default();
    /* The daemon must ignore SIGXFSZ (the default action would kill it). */
    storage_unavailable(fsize_on, fsize_off, "full");
}
END_TEST

/* -- a read-only database: the immutable attribute on the file and its WAL -- */

static char ro_files[2][PATH_MAX + 32];

static int set_immutable(const char *path, int on)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0)
        return -1;
    int flags = 0, rc = ioctl(fd, FS_IOC_GETFLAGS, &flags);
    if (rc == 0) {
        flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
        rc = ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static void ro_clear(void)
{
    for (int i = 0; i < 2; ++i)
        if (ro_files[i][0] != '\0')
            set_immutable(ro_files[i], 0);
}

/* A failed assertion ends the test process at once (no teardown, no atexit), and immutable
 * files could then never be deleted. So the test writes its directory into a note file made
 * by the parent (unchecked fixtures run there), and the parent clears the flags afterwards. */
static char ro_note[PATH_MAX];

static void ro_note_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(ro_note, sizeof ro_note, "%s/neurond-ro-XXXXXX", tmp != NULL ? tmp : "/tmp");
    int fd = mkstemp(ro_note);
    if (fd >= 0)
        close(fd);
    else
        ro_note[0] = '\0';
}

static void ro_note_teardown(void)
{
    if (ro_note[0] == '\0')
        return;
    char dir[PATH_MAX] = "";
    FILE *f = fopen(ro_note, "r");
    if (f != NULL) {
        if (fgets(dir, sizeof dir, f) == NULL)
            dir[0] = '\0';
        fclose(f);
    }
    unlink(ro_note);
    ro_note[0] = '\0';
    if (dir[0] == '\0')
        return;
    snprintf(ro_files[0], sizeof ro_files[0], "%s/t.db", dir);
    snprintf(ro_files[1], sizeof ro_files[1], "%s/t.db-wal", dir);
    ro_clear();
    /* The test's own cleanup removed the directory unless it failed; then remove it now. */
    char sub[PATH_MAX + 32];
    for (int i = 0; i < 3; ++i) {
        static const char *const names[] = {"t.db", "t.db-wal", "t.db-shm"};
        snprintf(sub, sizeof sub, "%s/%s", dir, names[i]);
        unlink(sub);
    }
    rmdir(dir);
}

static void ro_on(void)
{
    wal_truncate();
    for (int i = 0; i < 2; ++i)
        ck_assert_msg(set_immutable(ro_files[i], 1) == 0, "immutable %s: %s", ro_files[i],
                      strerror(errno));
}

static void ro_off(void)
{
    for (int i = 0; i < 2; ++i)
        ck_assert_msg(set_immutable(ro_files[i], 0) == 0, "mutable %s: %s", ro_files[i],
                      strerror(errno));
}

START_TEST(read_only)
{
    start_default();
    snprintf(ro_files[0], sizeof ro_files[0], "%s", d.db);
    snprintf(ro_files[1], sizeof ro_files[1], "%s-wal", d.db);
    FILE *note = ro_note[0] != '\0' ? fopen(ro_note, "w") : NULL;
    ck_assert_msg(note != NULL, "cannot write the note file %s", ro_note);
    fprintf(note, "%s", d.dir);
    fclose(note);
    if (set_immutable(ro_files[0], 1) < 0)
        IT_SKIP("read_only: cannot set the immutable attribute on %s: %s -- needs root "
                "(CAP_LINUX_IMMUTABLE) and a file system that supports it", ro_files[0],
                strerror(errno));
    ro_off();
    storage_unavailable(ro_on, ro_off, "read-only");
    ro_clear();
}
END_TEST

/* ---- c. an outside writer holds the lock ------------------------------------------------------ */

typedef struct locker {
    const char *db;
    int hold_ms;
    int locked;                /* set once the lock is held */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int rc;
} locker_t;

static void *locker_main(void *arg)
{
    locker_t *l = arg;
    sqlite3 *db = NULL;
    l->rc = sqlite3_open_v2(l->db, &db, SQLITE_OPEN_READWRITE, NULL);
    if (l->rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        l->rc = sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL);
    }
    pthread_mutex_lock(&l->mu);
    l->locked = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (l->rc == SQLITE_OK) {
        /* A real write, so the daemon has to wait for the end of a real transaction. */
        sqlite3_exec(db, "INSERT INTO meta(key, value) VALUES ('it_faults', 'x')"
                         " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     NULL, NULL, NULL);
        it_sleep_ms(l->hold_ms);
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return NULL;
}

static void lock_start(locker_t *l, pthread_t *t, int hold_ms)
{
    memset(l, 0, sizeof *l);
    l->db = d.db;
    l->hold_ms = hold_ms;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    ck_assert_int_eq(pthread_create(t, NULL, locker_main, l), 0);
    pthread_mutex_lock(&l->mu);
    while (!l->locked)
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
    ck_assert_msg(l->rc == SQLITE_OK, "BEGIN EXCLUSIVE: %s", sqlite3_errstr(l->rc));
}

static void lock_end(locker_t *l, pthread_t t)
{
    pthread_join(t, NULL);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
}

/* Default busy timeout (5 s): writes wait out a 1.5 s lock and succeed. */
START_TEST(busy_waits)
{
    start_default();
    int64_t id = small_model();
    ck_assert_int_eq(train(id, 2), 2);
    char path[96];
    locker_t l;
    pthread_t t;
    lock_start(&l, &t, 1500);
    int64_t t0 = now_ms();
    int64_t id2 = it_create_model("{\"kind\":\"linear\",\"inputs\":3}");
    ck_assert_msg(now_ms() - t0 >= 1000, "the write did not wait for the lock");
    add_rows(id2, 16, 3, 0);
    lock_end(&l, t);

    lock_start(&l, &t, 1500);
    ck_assert_int_eq(train(id, 3), 5);
    lock_end(&l, t);

    lock_start(&l, &t, 1500);
    int64_t job = it_submit_job(id, "{\"steps\":4,\"history_every\":1,\"async\":true}");
    cJSON *j = job_wait_final(job, 20000);
    ck_assert_str_eq(str(j, "status"), "succeeded");
    cJSON_Delete(j);
    lock_end(&l, t);

    lock_start(&l, &t, 1500);
    snprintf(path, sizeof path, "/v1/models/%lld/checkpoints", (long long)id);
    it_call_free("POST", path, "{}", 201);
    lock_end(&l, t);
    ck_assert_int_eq(check_consistent(id), 9);
    check_integrity();
}
END_TEST

/* A 300 ms busy timeout: a lock held for 2.5 s turns writes into 503 (never 500); reads go on
 * (WAL readers do not wait for writers); once the lock is gone, writes succeed again. Training
 * runs are the exception: their state is in memory, so a commit that finds the lock taken waits
 * for it -- a running job goes on, and a sync train call answers once it could commit, with
 * every step it was asked for (an error would hide the steps a retry would then train twice). */
START_TEST(busy_timeout)
{
    setenv("NEUROND_BUSY_TIMEOUT_MS", "300", 1);
    start_default();
    unsetenv("NEUROND_BUSY_TIMEOUT_MS");
    int64_t id = small_model();
    ck_assert_int_eq(train(id, 2), 2);
    int64_t busy = it_create_model("{\"kind\":\"mlp\",\"inputs\":4,\"hidden\":[{\"units\":16,"
                                "\"activation\":\"tanh\"}],\"optimizer\":{\"method\":\"sgd\","
                                "\"learning_rate\":0.01}}");
    add_rows(busy, 64, 4, 0);
    int64_t job = it_submit_job(busy, "{\"steps\":100000000,\"history_every\":1,\"async\":true}");
    job_wait_progress(job);

    char path[96];
    locker_t l;
    pthread_t t;
    lock_start(&l, &t, 2500);
    int64_t t0 = now_ms();
    expect_unavailable("POST", "/v1/models", "{\"kind\":\"linear\",\"inputs\":2}", "busy");
    int64_t waited = now_ms() - t0;
    ck_assert_msg(waited >= 250 && waited < 2000, "503 after %lld ms", (long long)waited);
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    expect_unavailable("POST", path, "{\"steps\":3,\"async\":true}", "busy");
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    char *b = batch_json(10, 3, 0, 1);
    expect_unavailable("POST", path, b, "busy");
    free(b);
    snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)id);
    it_call_free("GET", path, NULL, 200);
    snprintf(path, sizeof path, "/v1/models/%lld/predict", (long long)id);
    it_call_free("POST", path, "{\"x\":[[1,2,3]]}", 200);
    ck_assert_int_eq(model_step(id), 2);
    /* Waits for the lock instead of failing after its steps. */
    ck_assert_int_eq(train(id, 3), 5);
    ck_assert_msg(now_ms() - t0 >= 2000, "trained through a held lock after %lld ms",
                  (long long)(now_ms() - t0));
    lock_end(&l, t);

    /* The job waited for the lock and goes on committing. */
    cJSON *j = job_get(job);
    ck_assert_str_eq(str(j, "status"), "running");
    int64_t during = (int64_t)it_num(get(j, "progress"), "step");
    cJSON_Delete(j);
    for (int64_t t1 = now_ms();; it_sleep_ms(50)) {
        j = job_get(job);
        int64_t now = (int64_t)it_num(get(j, "progress"), "step");
        ck_assert_str_eq(str(j, "status"), "running");
        cJSON_Delete(j);
        if (now > during)
            break;
        ck_assert_msg(now_ms() - t1 < 10000, "the job made no progress after the lock");
    }
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    it_call_free("DELETE", path, NULL, 202);
    j = job_wait_final(job, 20000);
    ck_assert_str_eq(str(j, "status"), "cancelled");
    int64_t s = (int64_t)it_num(get(j, "result"), "step");
    cJSON_Delete(j);
    ck_assert_int_eq(check_consistent(busy), s);
    ck_assert_int_eq(train(busy, 2), s + 2);
    ck_assert_int_eq(check_consistent(id), 5);
    wait_health(1, 3000);
    check_integrity();
}
END_TEST

/* ---- c. one daemon per database -------------------------------------------------------------- */

/* Run a second neurond on the database `db`, its stderr to `log`; its wait status. One that is
 * still running after 5 s started serving: it is killed and the status says SIGKILL. */
static int run_second_on(const char *log, const char *db, const char *port)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int null = open("/dev/null", O_WRONLY);
        if (fd < 0 || null < 0)
            _exit(127);
        dup2(fd, STDERR_FILENO);
        dup2(null, STDOUT_FILENO);
        execl(it_exe, it_exe, "--port", port, "--db", db, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    for (int64_t t0 = now_ms(); waitpid(pid, &status, WNOHANG) == 0; it_sleep_ms(20)) {
        if (now_ms() - t0 > 5000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
    }
    return status;
}

static int run_second(const char *log, const char *db)
{
    return run_second_on(log, db, "0");
}

/* A second neurond on the first one's port, with a database of its own, refuses to start
 * (exit 1): requests to the port must not be shared between two unrelated daemons. */
START_TEST(second_daemon_on_a_taken_port_refused)
{
    start_default();
    char log[PATH_MAX + 32], db[PATH_MAX + 32], port[16];
    snprintf(log, sizeof log, "%s/second.log", d.dir);
    snprintf(db, sizeof db, "%s/other.db", d.dir);
    snprintf(port, sizeof port, "%d", d.port);
    int status = run_second_on(log, db, port);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1,
                  "second daemon on port %s: wait status %d (expected exit 1)", port, status);
    it_call_free("GET", "/v1/models", NULL, 200);   /* the first one still answers */
}
END_TEST

/* A second neurond on the same database file refuses to start (exit 1, a message naming the
 * other daemon), and the first one's running job goes on untouched: not marked interrupted,
 * its model still training. Once the first has stopped, a new daemon starts on the file. */
START_TEST(second_daemon_refused)
{
    start_default();
    int64_t id = small_model();
    int64_t job = it_submit_job(id, "{\"steps\":100000000,\"history_every\":1,\"async\":true}");
    job_wait_progress(job);

    /* The same file by its path, another spelling of it, a symbolic and a hard link: a lock
     * on a name beside the file once let the last three start. */
    char names[4][PATH_MAX + 32];
    snprintf(names[0], sizeof names[0], "%s", d.db);
    snprintf(names[1], sizeof names[1], "%s/./t.db", d.dir);
    snprintf(names[2], sizeof names[2], "%s/symlink.db", d.dir);
    snprintf(names[3], sizeof names[3], "%s/hardlink.db", d.dir);
    ck_assert_msg(symlink(d.db, names[2]) == 0 && link(d.db, names[3]) == 0, "links to %s: %s",
                  d.db, strerror(errno));
    for (int i = 0; i < 4; ++i) {
        char log[PATH_MAX + 32];
        snprintf(log, sizeof log, "%s/second.log", d.dir);
        int status = run_second(log, names[i]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1,
                      "second daemon on %s: wait status %d (expected exit 1)", names[i], status);
        FILE *f = fopen(log, "r");
        ck_assert_ptr_nonnull(f);
        char line[1024] = "";
        ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
        fclose(f);
        ck_assert_msg(strstr(line, "in use by another neurond") != NULL, "message: %s", line);
    }
    unlink(names[2]);
    unlink(names[3]);

    /* The first daemon and its job never noticed. */
    cJSON *j = job_get(job);
    ck_assert_str_eq(str(j, "status"), "running");
    cJSON_Delete(j);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    it_call_free("DELETE", path, NULL, 202);
    j = job_wait_final(job, 20000);
    ck_assert_str_eq(str(j, "status"), "cancelled");
    cJSON_Delete(j);
    int64_t step = check_consistent(id);
    ck_assert(step > 0);

    /* The lock goes with the process that held it, by SIGTERM or by SIGKILL. */
    ck_assert_int_eq(it_restart(&d), 0);
    ck_assert_int_eq(model_step(id), step);
    it_kill9(&d);
    ck_assert_int_eq(it_start_again(&d), 0);
    ck_assert_int_eq(check_consistent(id), step);
}
END_TEST

/* ---- d. a fork or delete cut off half-way ------------------------------------------------------ */

/* Run `sql` on the daemon's database (stopped or not); the first column of its first row as an
 * integer, or `sql` executed for its effect (-1) when it returns no row. */
static int64_t db_exec_int(const char *sql)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open_v2(d.db, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
                  sqlite3_errmsg(db));
    int rc = sqlite3_step(st);
    ck_assert_msg(rc == SQLITE_ROW || rc == SQLITE_DONE, "%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

typedef struct fork_call {
    int64_t model;
    pthread_t thread;
} fork_call_t;

static void *fork_main(void *arg)
{
    fork_call_t *fc = arg;
    char path[96], *answer = NULL;
    snprintf(path, sizeof path, "/v1/models/%lld/fork", (long long)fc->model);
    it_post_thread(path, "{}", &answer);   /* cut off by the kill: no answer to check */
    free(answer);
    return NULL;
}

/* A model left hidden by a crash in the middle of a fork or a delete is removed at the next
 * start, data and all; a kill -9 during the fork of a large model leaves either no copy or a
 * complete one, never a visible half. */
START_TEST(half_fork_purged)
{
    start_default();
    int64_t src = it_create_model("{\"kind\":\"linear\",\"inputs\":4}");
    enum { ROWS = 40000, BATCHES = 24 };
    size_t n = (size_t)ROWS * 5;
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; ++i)
        v[i] = (double)(i % 89) / 89.0;
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%lld/batches?rows=%d&cols=5", (long long)src, ROWS);
    for (int b = 0; b < BATCHES; ++b) {
        it_call_t call = {.method = "POST", .path = path,
                          .content_type = "application/octet-stream", .body = (const char *)v,
                          .len = n * sizeof *v};
        it_resp_t r;
        ck_assert_int_eq(it_do(&call, &r), 0);
        ck_assert_int_eq(r.status, 201);
        it_resp_free(&r);
    }
    free(v);

    /* A half-made copy, as a crash leaves it: hidden, some of its batches copied. */
    snprintf(path, sizeof path, "/v1/models/%lld/fork", (long long)src);
    cJSON *f = it_call("POST", path, "{}", 201);
    int64_t half = (int64_t)it_num(f, "id");
    cJSON_Delete(f);
    ck_assert_int_eq(it_stop(&d), 0);
    char sql[160];
    snprintf(sql, sizeof sql, "UPDATE models SET hidden = 1 WHERE id = %lld", (long long)half);
    db_exec_int(sql);
    ck_assert_int_eq(it_start_again(&d), 0);
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)half);
    it_call_free("GET", path, NULL, 404);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM batches WHERE model_id = %lld",
             (long long)half);
    ck_assert_int_eq(db_exec_int(sql), 0);
    ck_assert_int_eq(db_exec_int("SELECT COUNT(*) FROM models WHERE hidden <> 0"), 0);

    /* kill -9 at moments along a fork. */
    unsigned seed = 7;
    for (int round = 0; round < 4; ++round) {
        fork_call_t fc = {.model = src};
        ck_assert_int_eq(pthread_create(&fc.thread, NULL, fork_main, &fc), 0);
        it_sleep_ms(20 + (int)(rand_r(&seed) % 300));
        it_kill9(&d);
        pthread_join(fc.thread, NULL);
        ck_assert_int_eq(it_start_again(&d), 0);
        check_integrity();
        ck_assert_int_eq(db_exec_int("SELECT COUNT(*) FROM models WHERE hidden <> 0"), 0);
        cJSON *list = it_call("GET", "/v1/models", NULL, 200);
        cJSON *m;
        cJSON_ArrayForEach(m, get(list, "models"))
        {
            /* Every visible model has all its rows, and they are the source's. */
            ck_assert_int_eq((int64_t)it_num(m, "rows"), (int64_t)ROWS * BATCHES);
            snprintf(sql, sizeof sql, "SELECT COALESCE(SUM(rows), 0) FROM batches WHERE "
                     "model_id = %lld", (long long)it_num(m, "id"));
            ck_assert_int_eq(db_exec_int(sql), (int64_t)ROWS * BATCHES);
        }
        cJSON_Delete(list);
    }
    ck_assert_int_eq(db_exec_int("SELECT COUNT(*) FROM batches WHERE model_id NOT IN "
                                 "(SELECT id FROM models)"), 0);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    if (it_backend_pg()) {
        /* These faults are a SQLite file's: a full or read-only disk, another process's lock,
         * integrity_check. it_postgres covers a PostgreSQL server that goes away. */
        printf("SKIP: storage faults of a SQLite file\n");
        return IT_EXIT_SKIPPED;
    }
    Suite *s = suite_create("faults");
    TCase *tk = tcase_create("kill9");
    tcase_add_checked_fixture(tk, start_default, teardown);
    tcase_set_timeout(tk, 120);
    tcase_add_test(tk, kill9_rounds);
    suite_add_tcase(s, tk);
    /* The cases that need privileges are ctest tests of their own (tests/CMakeLists.txt runs
     * each by name, and the rest without the tag "separate"): a skip hides nothing else. */
    TCase *tf = it_separate_case(s, "diskfull");
    tcase_add_checked_fixture(tf, NULL, teardown);
    tcase_set_timeout(tf, 120);
    tcase_add_test(tf, disk_full);
    TCase *ts = tcase_create("storage");
    tcase_add_checked_fixture(ts, NULL, teardown);
    tcase_set_timeout(ts, 120);
    tcase_add_test(ts, file_size_limit);
    tcase_add_test(ts, busy_waits);
    tcase_add_test(ts, busy_timeout);
    suite_add_tcase(s, ts);
    TCase *te = tcase_create("exclusive");
    tcase_add_checked_fixture(te, NULL, teardown);
    tcase_set_timeout(te, 120);
    tcase_add_test(te, second_daemon_refused);
    tcase_add_test(te, second_daemon_on_a_taken_port_refused);
    tcase_add_test(te, half_fork_purged);
    suite_add_tcase(s, te);
    TCase *tr = it_separate_case(s, "readonly");
    tcase_add_unchecked_fixture(tr, ro_note_setup, ro_note_teardown);
    tcase_add_checked_fixture(tr, NULL, teardown);
    tcase_set_timeout(tr, 120);
    tcase_add_test(tr, read_only);
    return it_run(s);
}
