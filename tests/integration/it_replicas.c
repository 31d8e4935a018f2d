/* tests/integration/it_replicas.c -- three replicas on one PostgreSQL database behind HAProxy,
 * as one service. Runs under tests/pg/with_cluster.sh (inside tests/pg/with_postgres.sh), which
 * starts the replicas and the balancer and says where they are (NEUROND_CLUSTER_URL,
 * NEUROND_REPLICA_URLS, ...); without them every case is skipped.
 *
 * - A write acknowledged by one replica is what the next read on any replica returns.
 * - While a model trains on one replica, every write to it on the others is 409 `conflict`,
 *   and works again once the run has ended.
 * - Sixteen clients on random replicas and on the balancer get no 5xx, and every model's history
 *   is exactly its steps.
 * - PostgreSQL restarted under a running job: 503 `unavailable` or success meanwhile, every
 *   replica healthy again by itself, and the job ends as if nothing had happened.
 * - Failover (test case "failover"): a job's replica killed or paused past its lease, the job
 *   cancelled through another replica, and its events streamed by another replica.
 *
 * Bit-identical means: the final GET /parameters bodies are equal byte for byte, and the train
 * results are equal but for `model_id` and `elapsed_ms`.
 */
#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

#define N_REPLICAS 3
#define BALANCER N_REPLICAS      /* target index of HAProxy */
#define N_TARGETS (N_REPLICAS + 1)
#define LEASE_MS 3000            /* --job-lease 3 of tests/pg/with_cluster.sh */

typedef struct target {
    char url[64];                /* http://127.0.0.1:PORT */
    int64_t replica_id;          /* its /healthz "replica" (replicas only; changes at restart) */
} target_t;

static target_t targets[N_TARGETS];
static const char *cluster_dir;  /* NEUROND_CLUSTER_DIR: replica-I.pid */
static const char *start_cmd;    /* NEUROND_REPLICA_START */
static const char *replica_db;   /* NEUROND_REPLICA_DB: the postgresql:// they share */

static cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* A measurement for the log, printed at once: a failing test's process ends without flushing. */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* ---- the cluster ----------------------------------------------------------------------------- */

/* The current process id of replica `r` (0-based), from the harness's pid file. */
static pid_t replica_pid(int r)
{
    char path[512];
    snprintf(path, sizeof path, "%s/replica-%d.pid", cluster_dir, r + 1);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    long pid = 0;
    ck_assert_int_eq(fscanf(f, "%ld", &pid), 1);
    fclose(f);
    return (pid_t)pid;
}

/* GET /healthz of target `t` on a connection of its own: its status, and its replica id. */
static long healthz(int t, int64_t *replica_id)
{
    char *answer = NULL;
    long status = it_http_thread(targets[t].url, "GET", "/healthz", NULL, &answer);
    cJSON *h = cJSON_Parse(answer);
    const cJSON *id = get(h, "replica");
    if (replica_id != NULL)
        *replica_id = cJSON_IsNumber(id) ? (int64_t)id->valuedouble : 0;
    cJSON_Delete(h);
    free(answer);
    return status;
}

static long wait_healthy(int t, int timeout_ms)
{
    int64_t end = it_now_ms() + timeout_ms;
    long status;
    while ((status = healthz(t, NULL)) != 200 && it_now_ms() < end)
        it_sleep_ms(100);
    return status;
}

/* Replica `r` serving again, whatever an earlier test left it in: woken when paused, started
 * again (by the harness's command) when dead. */
static void replica_revive(int r)
{
    if (healthz(r, NULL) == 200)
        return;
    pid_t pid = replica_pid(r);
    kill(pid, SIGCONT);
    if (wait_healthy(r, 1500) == 200)
        return;
    kill(pid, SIGKILL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %d", start_cmd, r + 1);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
}

/* The target index of the replica with id `id`, or -1. A replica taken for dead (its heartbeat
 * stopped longer than the lease: paused, or cut off from the database) registers again under a
 * new id, so an unknown id first refreshes what the replicas' /healthz say. */
static int replica_of(int64_t id)
{
    for (int pass = 0; pass < 2; ++pass) {
        for (int r = 0; r < N_REPLICAS; ++r)
            if (targets[r].replica_id == id)
                return r;
        for (int r = 0; pass == 0 && r < N_REPLICAS; ++r)
            healthz(r, &targets[r].replica_id);
    }
    return -1;
}

/* Every test starts with three replicas serving and HAProxy routing to each of them. */
static void setup(void)
{
    for (int r = 0; r < N_REPLICAS; ++r) {
        replica_revive(r);
        ck_assert_int_eq(healthz(r, &targets[r].replica_id), 200);
    }
    int seen[N_REPLICAS] = {0}, n_seen = 0;
    for (int64_t end = it_now_ms() + 10000; n_seen < N_REPLICAS && it_now_ms() < end;) {
        int64_t id = 0;
        int r = healthz(BALANCER, &id) == 200 ? replica_of(id) : -1;
        if (r >= 0 && !seen[r]) {
            seen[r] = 1;
            ++n_seen;
        }
        if (r < 0)
            it_sleep_ms(100);
    }
    ck_assert_msg(n_seen == N_REPLICAS, "HAProxy routed to %d of the %d replicas", n_seen,
                  N_REPLICAS);
}

static void teardown(void)
{
}

/* ---- requests -------------------------------------------------------------------------------- */

/* it_call() against target `t`. */
static cJSON *call_on(int t, const char *method, const char *path, const char *body, long want)
{
    it_set_base_url(targets[t].url);
    return it_call(method, path, body, want);
}

static void call_free_on(int t, const char *method, const char *path, const char *body,
                         long want)
{
    cJSON_Delete(call_on(t, method, path, body, want));
}

/* The body of GET `path` on target `t`, which must answer 200. New: free(). */
static char *text_on(int t, const char *path)
{
    it_set_base_url(targets[t].url);
    return it_get_text(path);
}

/* `method` `path` on target `t` must answer `want` with the error `code`. */
static void expect_error_on(int t, const char *method, const char *path, const char *body,
                            long want, const char *code)
{
    cJSON *j = call_on(t, method, path, body, want);
    const cJSON *c = get(get(j, "error"), "code");
    ck_assert_msg(cJSON_IsString(c) && strcmp(c->valuestring, code) == 0,
                  "%s %s on %s: want error %s", method, path, targets[t].url, code);
    cJSON_Delete(j);
}

static int64_t create_on(int t, const char *spec)
{
    cJSON *m = call_on(t, "POST", "/v1/models", spec, 201);
    int64_t id = (int64_t)it_num(m, "id");
    cJSON_Delete(m);
    return id;
}

/* GET `fmt`(id) on target `t` as text (new). */
static char *model_text_on(int t, const char *fmt, int64_t id)
{
    char path[128];
    snprintf(path, sizeof path, fmt, (long long)id);
    return text_on(t, path);
}

/* POST `body` to /v1/models/{id}/`what` on target `t`, wanting `want`; the answer (new). */
static cJSON *model_post_on(int t, int64_t id, const char *what, const char *body, long want)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%lld/%s", (long long)id, what);
    return call_on(t, "POST", path, body, want);
}

/* The model's history, every page, as one array (new: cJSON_Delete). */
static cJSON *history_all(int t, int64_t id)
{
    cJSON *all = cJSON_CreateArray();
    long long after = -1;
    for (;;) {
        char path[160];
        snprintf(path, sizeof path, "/v1/models/%lld/history?after_step=%lld&limit=10000",
                 (long long)id, after);
        cJSON *page = call_on(t, "GET", path, NULL, 200);
        cJSON *row = NULL;
        cJSON_ArrayForEach(row, get(page, "history"))
            cJSON_AddItemToArray(all, cJSON_Duplicate(row, 1));
        const cJSON *next = get(page, "next");
        int more = cJSON_IsNumber(next);
        if (more)
            after = (long long)next->valuedouble;
        cJSON_Delete(page);
        if (!more)
            return all;
    }
}

/* The history of `id` holds exactly the rows 0..step-1, once each, in order. */
static void expect_history_complete(int t, int64_t id, int64_t step)
{
    cJSON *rows = history_all(t, id);
    ck_assert_msg(cJSON_GetArraySize(rows) == step, "model %lld: %d history rows, step %lld",
                  (long long)id, cJSON_GetArraySize(rows), (long long)step);
    int64_t want = 0;
    cJSON *row = NULL;
    cJSON_ArrayForEach(row, rows) {
        ck_assert_msg((int64_t)it_num(row, "step") == want, "model %lld: row %lld has step %lld",
                      (long long)id, (long long)want, (long long)it_num(row, "step"));
        ++want;
    }
    cJSON_Delete(rows);
}

/* Two models' histories are the same rows: steps, losses, gradient norms and rates ("at"
 * aside, the time of the commit). */
static void expect_same_history(int t, int64_t a, int64_t b)
{
    cJSON *ra = history_all(t, a), *rb = history_all(t, b);
    ck_assert_int_eq(cJSON_GetArraySize(ra), cJSON_GetArraySize(rb));
    static const char *const keys[] = {"step", "loss", "grad_norm", "learning_rate"};
    int i = 0;   /* walked side by side: cJSON_GetArrayItem(i) would walk from the start each time */
    for (const cJSON *row_a = ra->child, *row_b = rb->child; row_a != NULL && row_b != NULL;
         row_a = row_a->next, row_b = row_b->next, ++i)
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; ++k) {
            double x = it_num(row_a, keys[k]), y = it_num(row_b, keys[k]);
            ck_assert_msg(memcmp(&x, &y, sizeof x) == 0, "history row %d: %s %.17g vs %.17g", i,
                          keys[k], x, y);
        }
    cJSON_Delete(ra);
    cJSON_Delete(rb);
}

/* ---- models and data ------------------------------------------------------------------------- */

#define ROWS 256
#define INPUTS 4

/* A network big enough that a step costs a measurable fraction of a millisecond, so that a job
 * of a few seconds has a history of a few thousand rows. Adam: its state must resume too. */
static const char net_spec[] =
    "{\"kind\":\"mlp\",\"inputs\":4,\"hidden\":[{\"units\":48,\"activation\":\"tanh\"},"
    "{\"units\":48,\"activation\":\"tanh\"}],\"output_activation\":\"sigmoid\","
    "\"init\":{\"method\":\"uniform\",\"scale\":0.3,\"seed\":5},"
    "\"optimizer\":{\"method\":\"adam\",\"learning_rate\":0.003}}";

static const char linear_spec[] =
    "{\"kind\":\"linear\",\"inputs\":2,\"parameters\":{\"W1\":[[0.5,-0.25,0.125]]},"
    "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.01}}";

/* ROWS rows of INPUTS numbers in [-1, 1] with 0/1 labels (inside a sphere or not), the same
 * for the same seed. New: free(). */
static char *net_rows(unsigned seed)
{
    size_t cap = (size_t)ROWS * (INPUTS * 26 + 8) + 64, used = 0;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    uint64_t state = 0x9e3779b97f4a7c15ULL ^ seed;
    int labels[ROWS];
    used += (size_t)snprintf(s + used, cap - used, "{\"x\":[");
    for (int i = 0; i < ROWS; ++i) {
        double r2 = 0;
        used += (size_t)snprintf(s + used, cap - used, "%s[", i > 0 ? "," : "");
        for (int j = 0; j < INPUTS; ++j) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            double v = (double)(state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
            r2 += v * v;
            used += (size_t)snprintf(s + used, cap - used, "%s%.17g", j > 0 ? "," : "", v);
        }
        used += (size_t)snprintf(s + used, cap - used, "]");
        labels[i] = r2 < 1.2;
    }
    used += (size_t)snprintf(s + used, cap - used, "],\"y\":[");
    for (int i = 0; i < ROWS; ++i)
        used += (size_t)snprintf(s + used, cap - used, "%s%d", i > 0 ? "," : "", labels[i]);
    snprintf(s + used, cap - used, "]}");
    return s;
}

/* A net_spec model with net_rows(seed) stored, created through target `t`. */
static int64_t net_model_on(int t, unsigned seed)
{
    int64_t id = create_on(t, net_spec);
    char *rows = net_rows(seed);
    cJSON_Delete(model_post_on(t, id, "batches", rows, 201));
    free(rows);
    return id;
}

/* A copy of model `id` (fork: spec, parameters, optimizer state, step and batches). */
static int64_t fork_on(int t, int64_t id)
{
    cJSON *f = model_post_on(t, id, "fork", "{}", 201);
    int64_t copy = (int64_t)it_num(f, "id");
    cJSON_Delete(f);
    return copy;
}

/* Updates per second of mini-batch training of model `id` on this machine now, so that the jobs
 * below last about as long as the tests need, however fast or loaded the machine: synchronous
 * runs on a fork of it (then deleted), each four times longer than the last, until one lasts a
 * quarter of a second; the rate is that of the steps the last run added to the one before, so
 * what a run costs whatever its length (loading the rows, the commits) does not count. */
static double steps_per_second(int t, int64_t id)
{
    int64_t scratch = fork_on(t, id);
    double steps = 250, ms = 0, prev_steps = 0, prev_ms = 0;
    for (;; steps *= 4) {
        char body[128];
        snprintf(body, sizeof body,
                 "{\"steps\":%.0f,\"batch_size\":32,\"seed\":1,\"history_every\":1}", steps);
        prev_ms = ms;
        cJSON *r = model_post_on(t, scratch, "train", body, 200);
        ms = it_num(r, "elapsed_ms");
        cJSON_Delete(r);
        if ((ms >= 250.0 && prev_steps > 0) || steps > 1e7)
            break;
        prev_steps = steps;
    }
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)scratch);
    call_free_on(t, "DELETE", path, NULL, 204);
    double extra_ms = ms - prev_ms;
    return (steps - prev_steps) / (extra_ms > 1.0 ? extra_ms : 1.0) * 1000.0;
}

/* The train request of a shuffled mini-batch job lasting about `seconds` at `rate`. */
static void job_request(double rate, double seconds, char *out, size_t size)
{
    int64_t epochs = (int64_t)(rate * seconds / (ROWS / 32)) + 1;
    snprintf(out, size,
             "{\"epochs\":%" PRId64 ",\"batch_size\":32,\"seed\":11,\"history_every\":1,"
             "\"async\":true}", epochs);
}

/* ---- jobs ------------------------------------------------------------------------------------ */

static int64_t submit_on(int t, int64_t model, const char *request)
{
    cJSON *j = model_post_on(t, model, "train", request, 202);
    int64_t id = (int64_t)it_num(j, "id");
    cJSON_Delete(j);
    return id;
}

static cJSON *job_on(int t, int64_t job)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    return call_on(t, "GET", path, NULL, 200);
}

static int job_ended(const cJSON *j)
{
    const char *s = it_str(j, "status");
    return strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 ||
           strcmp(s, "cancelled") == 0;
}

static int64_t job_step(const cJSON *j)
{
    return (int64_t)it_num(get(j, "progress"), "step");
}

/* Job object `j` says succeeded; else the test fails with its status and error. */
static void expect_succeeded(const cJSON *j, const char *what)
{
    const cJSON *error = get(j, "error");
    ck_assert_msg(strcmp(it_str(j, "status"), "succeeded") == 0, "%s: %s (%s)", what,
                  it_str(j, "status"), cJSON_IsString(error) ? error->valuestring : "no error");
}

/* Poll the job on target `t` until it has ended; its object (new). */
static cJSON *job_wait_end(int t, int64_t job, int timeout_ms)
{
    int64_t end = it_now_ms() + timeout_ms;
    for (;;) {
        cJSON *j = job_on(t, job);
        if (job_ended(j))
            return j;
        cJSON_Delete(j);
        ck_assert_msg(it_now_ms() < end, "job %lld did not end within %d ms", (long long)job,
                      timeout_ms);
        it_sleep_ms(50);
    }
}

/* Poll until the job runs on a replica and has committed a step: the runner's target index. */
static int job_wait_running(int t, int64_t job)
{
    int64_t end = it_now_ms() + 20000;
    for (;;) {
        cJSON *j = job_on(t, job);
        char *text = cJSON_PrintUnformatted(j);
        ck_assert_msg(!job_ended(j), "job %lld ended before it could be watched: %s",
                      (long long)job, text);
        const cJSON *replica = get(j, "replica");
        int runner = cJSON_IsNumber(replica) ? replica_of((int64_t)replica->valuedouble) : -1;
        int64_t step = job_step(j);
        cJSON_Delete(j);
        if (runner >= 0 && step > 0) {
            free(text);
            return runner;
        }
        ck_assert_msg(it_now_ms() < end, "job %lld did not start on a replica (of ids %lld, "
                      "%lld, %lld): %s", (long long)job, (long long)targets[0].replica_id,
                      (long long)targets[1].replica_id, (long long)targets[2].replica_id, text);
        free(text);
        it_sleep_ms(20);
    }
}

/* Job `a` ended as job `b` did: succeeded with the same result (model_id and elapsed_ms aside),
 * and models `ma`, `mb` have byte-identical parameters and the same history. */
static void expect_same_outcome(int t, int64_t a, int64_t ma, int64_t b, int64_t mb)
{
    cJSON *ja = job_wait_end(t, a, 60000), *jb = job_wait_end(t, b, 60000);
    expect_succeeded(ja, "the job");
    expect_succeeded(jb, "the reference job");
    cJSON *ra = get(ja, "result"), *rb = get(jb, "result");
    ck_assert_msg(cJSON_IsObject(ra) && cJSON_IsObject(rb), "a job has no result");
    note("  %lld steps: %.0f ms in the job, %.0f ms uninterrupted\n",
           (long long)it_num(ra, "steps_run"), it_num(ra, "elapsed_ms"), it_num(rb, "elapsed_ms"));
    for (cJSON *r = ra; r != NULL; r = r == ra ? rb : NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(r, "elapsed_ms");
        cJSON_DeleteItemFromObjectCaseSensitive(r, "model_id");
    }
    char *ta = cJSON_PrintUnformatted(ra), *tb = cJSON_PrintUnformatted(rb);
    ck_assert_str_eq(ta, tb);
    free(ta);
    free(tb);
    int64_t step = (int64_t)it_num(get(ja, "result"), "step");
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    char *pa = model_text_on(t, "/v1/models/%lld/parameters", ma);
    char *pb = model_text_on(t, "/v1/models/%lld/parameters", mb);
    ck_assert_msg(strcmp(pa, pb) == 0, "the final parameters differ");
    free(pa);
    free(pb);
    expect_history_complete(t, ma, step);
    expect_same_history(t, ma, mb);
}

/* ---- tests ----------------------------------------------------------------------------------- */

START_TEST(read_your_writes)
{
    static const char batch[] = "{\"x\":[[1,2],[2,1],[3,5],[4,4]],\"y\":[5,4,13,12]}";
    for (int writer = 0; writer < N_REPLICAS; ++writer) {
        int64_t id = create_on(writer, linear_spec);
        cJSON_Delete(model_post_on(writer, id, "batches", batch, 201));
        cJSON *r = model_post_on(writer, id, "train", "{\"steps\":5}", 200);
        ck_assert_int_eq((int)it_num(r, "step"), 5);
        cJSON_Delete(r);
        /* At once, everywhere: the same model, parameters and history, byte for byte. */
        static const char *const reads[] = {"/v1/models/%lld", "/v1/models/%lld/parameters",
                                            "/v1/models/%lld/history",
                                            "/v1/models/%lld/batches"};
        for (size_t k = 0; k < sizeof reads / sizeof reads[0]; ++k) {
            char *want = model_text_on(writer, reads[k], id);
            for (int t = 0; t < N_TARGETS + 2; ++t) {   /* the balancer three times */
                int target = t < N_TARGETS ? t : BALANCER;
                char *got = model_text_on(target, reads[k], id);
                ck_assert_msg(strcmp(got, want) == 0, "%s on %s:\n%s\nvs the writer's\n%s",
                              reads[k], targets[target].url, got, want);
                free(got);
            }
            free(want);
        }
        /* A write on each of the others is read back at once on the writer. */
        int b = (writer + 1) % N_REPLICAS, c = (writer + 2) % N_REPLICAS;
        char path[96];
        snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)id);
        call_free_on(b, "PUT", path, "{\"parameters\":{\"W1\":[[1,2,3]]}}", 200);
        cJSON *p = call_on(writer, "GET", path, NULL, 200);
        char *w1 = cJSON_PrintUnformatted(get(get(p, "parameters"), "W1"));
        ck_assert_str_eq(w1, "[[1,2,3]]");
        free(w1);
        cJSON_Delete(p);
        cJSON_Delete(model_post_on(c, id, "batches", batch, 201));
        snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
        cJSON *m = call_on(writer, "GET", path, NULL, 200);
        ck_assert_int_eq((int)it_num(m, "rows"), 8);
        cJSON_Delete(m);
        r = model_post_on(b, id, "train", "{\"steps\":3}", 200);
        ck_assert_int_eq((int)it_num(r, "step"), 8);
        cJSON_Delete(r);
        m = call_on(c, "GET", path, NULL, 200);
        ck_assert_int_eq((int)it_num(m, "step"), 8);
        cJSON_Delete(m);
        expect_history_complete(writer, id, 8);
    }
}
END_TEST

/* The model's "status" read through target `t`. */
static int model_training_on(int t, int64_t id)
{
    char *m = model_text_on(t, "/v1/models/%lld", id);
    cJSON *j = cJSON_Parse(m);
    int training = strcmp(it_str(j, "status"), "training") == 0;
    cJSON_Delete(j);
    free(m);
    return training;
}

/* Start a synchronous mini-batch run of about `seconds` on model `id` through target `t`, on a
 * thread, and return once `t` shows the model training: the steps it was asked for. */
static int64_t sync_run_start(it_async_t *run, int t, int64_t id, double seconds)
{
    int64_t steps = (int64_t)(steps_per_second(t, id) * seconds) + 1;
    memset(run, 0, sizeof *run);
    run->base = targets[t].url;
    run->method = "POST";
    snprintf(run->path, sizeof run->path, "/v1/models/%lld/train", (long long)id);
    snprintf(run->body, sizeof run->body,
             "{\"steps\":%" PRId64 ",\"batch_size\":32,\"seed\":1,\"history_every\":10}",
             steps);
    it_async_start(run);
    int64_t end = it_now_ms() + 10000;
    while (!model_training_on(t, id)) {
        ck_assert_msg(it_now_ms() < end, "the run on %s did not start", targets[t].url);
        it_sleep_ms(20);
    }
    return steps;
}

START_TEST(writes_conflict_while_another_replica_trains)
{
    const int a = 0, b = 1;
    int64_t id = net_model_on(a, 1);
    cJSON *cp = model_post_on(a, id, "checkpoints", "{}", 201);
    int64_t checkpoint = (int64_t)it_num(cp, "checkpoint_id");
    cJSON_Delete(cp);
    char *listing = model_text_on(a, "/v1/models/%lld/batches", id);
    cJSON *batches = cJSON_Parse(listing);
    char batch_path[96];
    snprintf(batch_path, sizeof batch_path, "/v1/models/%lld/batches/%lld", (long long)id,
             (long long)it_num(cJSON_GetArrayItem(get(batches, "batches"), 0), "batch_id"));
    cJSON_Delete(batches);
    free(listing);
    /* A synchronous run on A of about five seconds: long enough for every write below even
     * when the machine has got faster or less loaded since the calibration. */
    static it_async_t run;
    int64_t steps = sync_run_start(&run, a, id, 5.0);
    /* Every write, through B, C and the balancer: 409 conflict. */
    char *rows = net_rows(2);
    char params[96], model_path[64], restore[64];
    snprintf(params, sizeof params, "/v1/models/%lld/parameters", (long long)id);
    snprintf(model_path, sizeof model_path, "/v1/models/%lld", (long long)id);
    snprintf(restore, sizeof restore, "{\"checkpoint_id\":%lld}", (long long)checkpoint);
    /* PUT's body: the parameters as GET shows them, without the step PUT does not take. */
    char *current = model_text_on(b, "/v1/models/%lld/parameters", id);
    cJSON *cur = cJSON_Parse(current);
    cJSON_DeleteItemFromObjectCaseSensitive(cur, "step");
    char *put = cJSON_PrintUnformatted(cur);
    cJSON_Delete(cur);
    free(current);
    for (int t = 1; t < N_TARGETS; ++t) {
        char path[128];
        snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
        expect_error_on(t, "POST", path, rows, 409, "conflict");
        expect_error_on(t, "PUT", params, put, 409, "conflict");
        snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
        expect_error_on(t, "POST", path, "{\"steps\":1}", 409, "conflict");
        expect_error_on(t, "POST", path, "{\"steps\":1,\"async\":true}", 409, "conflict");
        snprintf(path, sizeof path, "/v1/models/%lld/restore", (long long)id);
        expect_error_on(t, "POST", path, restore, 409, "conflict");
        snprintf(path, sizeof path, "/v1/models/%lld/step", (long long)id);
        expect_error_on(t, "POST", path, "{\"x\":[[0,0,0,0]],\"y\":[1]}", 409, "conflict");
        expect_error_on(t, "DELETE", batch_path, NULL, 409, "conflict");
        expect_error_on(t, "DELETE", model_path, NULL, 409, "conflict");
    }
    ck_assert_msg(model_training_on(a, id), "the run on A ended before every write was tried: "
                  "the checks above prove nothing");
    it_async_join(&run);
    ck_assert_msg(run.status == 200, "train on A: %ld %s", run.status, run.answer);
    cJSON *result = cJSON_Parse(run.answer);
    ck_assert_int_eq((int64_t)it_num(result, "step"), steps);
    ck_assert_str_eq(it_str(result, "stopped"), "max_steps");
    cJSON_Delete(result);
    free(run.answer);
    /* The refused writes changed nothing: A's run is all there is. */
    cJSON *m = call_on(b, "GET", model_path, NULL, 200);
    ck_assert_int_eq((int64_t)it_num(m, "step"), steps);
    ck_assert_int_eq((int)it_num(m, "rows"), ROWS);
    ck_assert_str_eq(it_str(m, "status"), "idle");
    cJSON_Delete(m);
    /* Now they work, through B. */
    cJSON_Delete(model_post_on(b, id, "batches", rows, 201));
    call_free_on(b, "PUT", params, put, 200);
    cJSON *r = model_post_on(b, id, "train", "{\"steps\":2}", 200);
    ck_assert_int_eq((int64_t)it_num(r, "step"), steps + 2);
    cJSON_Delete(r);
    m = model_post_on(b, id, "restore", restore, 200);
    ck_assert_int_eq((int64_t)it_num(m, "step"), 0);
    cJSON_Delete(m);
    free(put);
    free(rows);
}
END_TEST

START_TEST(model_status_same_on_every_replica)
{
    const int a = 0;
    int64_t id = net_model_on(a, 8);
    static it_async_t run;
    sync_run_start(&run, a, id, 3.0);
    /* While A trains the model, every replica and the balancer say so. */
    for (int t = 1; t < N_TARGETS; ++t)
        ck_assert_msg(model_training_on(t, id), "%s shows the model training on A as idle",
                      targets[t].url);
    ck_assert_msg(model_training_on(a, id), "the run on A ended before every replica was read");
    it_async_join(&run);
    ck_assert_msg(run.status == 200, "train on A: %ld %s", run.status, run.answer);
    free(run.answer);
    for (int t = 0; t < N_TARGETS; ++t)
        ck_assert_msg(!model_training_on(t, id), "%s shows the model training after the run",
                      targets[t].url);
}
END_TEST

/* ---- sixteen clients ------------------------------------------------------------------------- */

#define CLIENTS 16
#define MODELS_PER_CLIENT 3
#define ROUNDS 3

typedef struct client {
    pthread_t thread;
    unsigned seed;
    int64_t models[MODELS_PER_CLIENT];
    int64_t steps[MODELS_PER_CLIENT];  /* what this client trained each model for */
    int requests;
    int failures;
    char first_failure[512];
} client_t;

/* One request of a client thread on a random target; counts and notes an unexpected status. */
static cJSON *client_call(client_t *c, const char *method, const char *path, const char *body,
                          long want)
{
    int t = (int)(rand_r(&c->seed) % N_TARGETS);
    char *answer = NULL;
    long status = it_http_thread(targets[t].url, method, path, body, &answer);
    ++c->requests;
    cJSON *j = status == want ? cJSON_Parse(answer) : NULL;
    if (j == NULL && c->failures++ == 0)
        snprintf(c->first_failure, sizeof c->first_failure, "%s %s on %s: %ld (want %ld) %.300s",
                 method, path, targets[t].url, status, want, answer);
    free(answer);
    return j;
}

/* Member `key` of `j` as an integer, -1 when `j` or the member is missing. */
static int64_t num_or(const cJSON *j, const char *key)
{
    const cJSON *v = get(j, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

static void client_check(client_t *c, int ok, const char *what, int64_t model)
{
    if (!ok && c->failures++ == 0)
        snprintf(c->first_failure, sizeof c->first_failure, "model %lld: %s", (long long)model,
                 what);
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    for (int k = 0; k < MODELS_PER_CLIENT; ++k) {
        cJSON *m = client_call(c, "POST", "/v1/models", linear_spec, 201);
        int64_t id = c->models[k] = num_or(m, "id");
        cJSON_Delete(m);
        if (id < 0)
            continue;
        char path[96], hpath[96], tpath[96];
        snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
        snprintf(hpath, sizeof hpath, "/v1/models/%lld/history", (long long)id);
        snprintf(tpath, sizeof tpath, "/v1/models/%lld/train", (long long)id);
        char bpath[112];
        snprintf(bpath, sizeof bpath, "%s/batches", path);
        cJSON_Delete(client_call(c, "POST", bpath,
                                 "{\"x\":[[1,2],[2,1],[3,5],[4,4]],\"y\":[5,4,13,12]}", 201));
        for (int round = 0; round < ROUNDS; ++round) {
            int steps = 1 + (int)(rand_r(&c->seed) % 4);
            char body[64];
            snprintf(body, sizeof body, "{\"steps\":%d,\"history_every\":1}", steps);
            cJSON *r = client_call(c, "POST", tpath, body, 200);
            c->steps[k] += steps;
            client_check(c, num_or(r, "step") == c->steps[k], "train result step", id);
            cJSON_Delete(r);
            /* Read back at once, on another random target. */
            m = client_call(c, "GET", path, NULL, 200);
            client_check(c, num_or(m, "step") == c->steps[k], "model step after train", id);
            cJSON_Delete(m);
            cJSON *h = client_call(c, "GET", hpath, NULL, 200);
            client_check(c, cJSON_GetArraySize(get(h, "history")) == c->steps[k],
                         "history rows after train", id);
            cJSON_Delete(h);
        }
    }
    return NULL;
}

START_TEST(sixteen_clients_no_5xx)
{
    static client_t clients[CLIENTS];
    memset(clients, 0, sizeof clients);
    int64_t start = it_now_ms();
    for (int i = 0; i < CLIENTS; ++i) {
        clients[i].seed = 1000u + (unsigned)i;
        ck_assert_int_eq(pthread_create(&clients[i].thread, NULL, client_main, &clients[i]), 0);
    }
    int requests = 0;
    for (int i = 0; i < CLIENTS; ++i) {
        pthread_join(clients[i].thread, NULL);
        requests += clients[i].requests;
    }
    note("sixteen_clients: %d requests in %lld ms\n", requests,
           (long long)(it_now_ms() - start));
    for (int i = 0; i < CLIENTS; ++i)
        ck_assert_msg(clients[i].failures == 0, "client %d: %d failure(s), the first: %s", i,
                      clients[i].failures, clients[i].first_failure);
    /* Every model: its step is what its client trained, its history exactly 0..step-1. */
    for (int i = 0; i < CLIENTS; ++i)
        for (int k = 0; k < MODELS_PER_CLIENT; ++k) {
            int t = (i + k) % N_TARGETS;
            char *text = model_text_on(t, "/v1/models/%lld", clients[i].models[k]);
            cJSON *model = cJSON_Parse(text);
            ck_assert_int_eq((int64_t)it_num(model, "step"), clients[i].steps[k]);
            cJSON_Delete(model);
            free(text);
            expect_history_complete(t, clients[i].models[k], clients[i].steps[k]);
        }
}
END_TEST

/* ---- a replica taken for dead ----------------------------------------------------------------- */

/* The one number `sql` (a count) answers, from the replicas' database itself. */
static int64_t db_count(const char *sql)
{
    PGconn *pg = PQconnectdb(replica_db);
    PGresult *res = PQstatus(pg) == CONNECTION_OK ? PQexec(pg, sql) : NULL;
    int ok = res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
    int64_t n = ok ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    char msg[256];
    snprintf(msg, sizeof msg, "%s", PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
    ck_assert_msg(ok, "%s: %s", sql, msg);
    return n;
}

/* The id GET /v1/cluster on target `t` shows for replica `r` (found by its address), or -1 when
 * it is not in the view. */
static int64_t cluster_id_of(int t, int r)
{
    const char *address = targets[r].url + strlen("http://");
    cJSON *c = call_on(t, "GET", "/v1/cluster", NULL, 200);
    int64_t id = -1;
    cJSON *row = NULL;
    cJSON_ArrayForEach(row, get(c, "replicas"))
        if (strcmp(it_str(row, "address"), address) == 0)
            id = (int64_t)it_num(row, "id");
    cJSON_Delete(c);
    return id;
}

START_TEST(replica_taken_for_dead_comes_back_under_a_new_id)
{
    const int r = 2, other = 0;
    int64_t old = targets[r].replica_id;
    ck_assert_int_eq(cluster_id_of(other, r), old);
    pid_t pid = replica_pid(r);
    ck_assert_int_eq(kill(pid, SIGSTOP), 0);
    /* Its heartbeat stops: once older than the lease it leaves the view, and the next heartbeat
     * of another replica deletes its row. */
    int64_t paused = it_now_ms();
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM replicas WHERE id = %lld", (long long)old);
    while (cluster_id_of(other, r) != -1 || db_count(sql) != 0) {
        ck_assert_msg(it_now_ms() - paused < 4 * LEASE_MS, "the paused replica stays registered");
        it_sleep_ms(100);
    }
    ck_assert_int_eq(kill(pid, SIGCONT), 0);
    /* Awake, it registers again at its next heartbeat, under a new id that every answer shows:
     * the view, and its own /healthz. */
    int64_t woke = it_now_ms(), now_id;
    while ((now_id = cluster_id_of(other, r)) == -1) {
        ck_assert_msg(it_now_ms() - woke < 2 * LEASE_MS, "the replica did not register again");
        it_sleep_ms(100);
    }
    ck_assert_int_ne(now_id, old);
    int64_t health_id = 0;
    ck_assert_int_eq(healthz(r, &health_id), 200);
    ck_assert_int_eq(health_id, now_id);
    ck_assert_int_eq(cluster_id_of(r, r), now_id);
}
END_TEST

/* ---- PostgreSQL restarted under a job -------------------------------------------------------- */

typedef struct poller {
    pthread_t thread;
    int64_t model, job;
    atomic_int stop;
    int answers, unavailable, bad;
    char first_bad[512];
} poller_t;

/* Poll the job and its model on every target in turn until told to stop: each answer must be
 * a success or 503 `unavailable`. */
static void *poller_main(void *arg)
{
    poller_t *p = arg;
    char paths[2][64];
    snprintf(paths[0], sizeof paths[0], "/v1/jobs/%lld", (long long)p->job);
    snprintf(paths[1], sizeof paths[1], "/v1/models/%lld", (long long)p->model);
    for (int i = 0; !atomic_load(&p->stop); ++i) {
        const char *url = targets[i % N_TARGETS].url;
        const char *path = paths[(i / N_TARGETS) % 2];
        char *answer = NULL;
        long status = it_http_thread(url, "GET", path, NULL, &answer);
        cJSON *j = cJSON_Parse(answer);
        const cJSON *code = get(get(j, "error"), "code");
        int ok = status == 200 || (status == 503 && cJSON_IsString(code) &&
                                   strcmp(code->valuestring, "unavailable") == 0);
        ++p->answers;
        p->unavailable += status == 503;
        if (!ok && p->bad++ == 0)
            snprintf(p->first_bad, sizeof p->first_bad, "GET %s on %s: %ld %.300s", path, url,
                     status, answer);
        cJSON_Delete(j);
        free(answer);
        it_sleep_ms(20);
    }
    return NULL;
}

/* A job of about 5 s on a new model, and an untouched copy of that model, for the database to
 * go away under the job: it runs on replica `runner`, a step committed, and is still running. */
typedef struct outage_job {
    int64_t model, reference, job;
    int runner;
    char request[160];
} outage_job_t;

static void outage_job_start(unsigned seed, outage_job_t *o)
{
    o->model = net_model_on(0, seed);
    o->reference = fork_on(0, o->model);
    job_request(steps_per_second(0, o->model), 5.0, o->request, sizeof o->request);
    o->job = submit_on(BALANCER, o->model, o->request);
    o->runner = job_wait_running(BALANCER, o->job);
    it_sleep_ms(300);
    /* Its next commit falls into the outage. */
    cJSON *before = job_on(BALANCER, o->job);
    ck_assert_msg(!job_ended(before), "the job ended before the outage: make it longer");
    cJSON_Delete(before);
}

/* The job succeeded on the replica that ran it, no replica registered again (nobody was taken
 * for dead), and the same job on the untouched copy, uninterrupted, gives the same bytes. */
static void outage_job_end(const outage_job_t *o, const char *what)
{
    cJSON *j = job_wait_end(BALANCER, o->job, 60000);
    expect_succeeded(j, what);
    const cJSON *replica = get(j, "replica");
    ck_assert_msg(cJSON_IsNumber(replica) && (int64_t)replica->valuedouble ==
                                                 targets[o->runner].replica_id,
                  "%s ended on replica id %g, not on replica %d (id %lld) that ran it", what,
                  cJSON_IsNumber(replica) ? replica->valuedouble : -1.0, o->runner + 1,
                  (long long)targets[o->runner].replica_id);
    cJSON_Delete(j);
    for (int r = 0; r < N_REPLICAS; ++r) {
        int64_t id = 0;
        healthz(r, &id);
        ck_assert_msg(id == targets[r].replica_id, "replica %d registered again (id %lld, "
                      "was %lld)", r + 1, (long long)id, (long long)targets[r].replica_id);
    }
    int64_t again = submit_on(BALANCER, o->reference, o->request);
    expect_same_outcome(BALANCER, o->job, o->model, again, o->reference);
}

static void pg_server(const char *var)
{
    const char *cmd = getenv(var);
    ck_assert_msg(cmd != NULL, "%s is not set", var);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
}

START_TEST(postgresql_restart_under_a_job)
{
    pid_t pids[N_REPLICAS];
    for (int r = 0; r < N_REPLICAS; ++r)
        pids[r] = replica_pid(r);
    outage_job_t o;
    outage_job_start(3, &o);
    static poller_t p;
    memset(&p, 0, sizeof p);
    p.model = o.model;
    p.job = o.job;
    ck_assert_int_eq(pthread_create(&p.thread, NULL, poller_main, &p), 0);
    pg_server("NEUROND_TEST_PG_STOP");
    int64_t down = it_now_ms();
    it_sleep_ms(2500);           /* long enough for every /healthz to notice (1 s) */
    pg_server("NEUROND_TEST_PG_START");
    note("postgresql_restart: the server was down %lld ms (job on replica %d)\n",
           (long long)(it_now_ms() - down), o.runner + 1);
    /* Every replica healthy again by itself: same processes, /healthz 200. */
    for (int r = 0; r < N_REPLICAS; ++r) {
        ck_assert_msg(wait_healthy(r, 10000) == 200, "replica %d stays unhealthy", r + 1);
        ck_assert_int_eq(replica_pid(r), pids[r]);
        ck_assert_int_eq(kill(pids[r], 0), 0);
    }
    ck_assert_msg(wait_healthy(BALANCER, 10000) == 200, "the balancer takes no replica back");
    atomic_store(&p.stop, 1);
    pthread_join(p.thread, NULL);
    note("postgresql_restart: %d answers while polling, %d of them 503\n", p.answers,
           p.unavailable);
    ck_assert_msg(p.bad == 0, "%d answers neither success nor 503 unavailable, the first: %s",
                  p.bad, p.first_bad);
    ck_assert_msg(p.unavailable > 0, "no 503 seen: the outage was not observed");
    /* Every replica's heartbeat failed in the outage, so none took another for dead once the
     * server was back, though some heartbeats were older than the lease. */
    outage_job_end(&o, "the job under the outage");
}
END_TEST

/* The server hangs for most of a lease instead of refusing (every process of it stopped):
 * every statement waits, no heartbeat fails, and when it continues the heartbeats written
 * before it are older than the lease. Each replica finds its own heartbeat late and takes
 * nobody for dead: the job carries on where it ran, with the bytes of an uninterrupted run. */
START_TEST(postgresql_paused_under_a_job)
{
    outage_job_t o;
    outage_job_start(4, &o);
    pg_server("NEUROND_TEST_PG_PAUSE");
    int64_t paused = it_now_ms();
    it_sleep_ms(LEASE_MS * 5 / 6);
    pg_server("NEUROND_TEST_PG_RESUME");
    note("postgresql_paused: the server hung %lld ms (job on replica %d)\n",
         (long long)(it_now_ms() - paused), o.runner + 1);
    for (int r = 0; r < N_REPLICAS; ++r)
        ck_assert_msg(wait_healthy(r, 10000) == 200, "replica %d stays unhealthy", r + 1);
    /* The hung check made every replica's /healthz 503 after a second: the balancer took them
     * all out, and takes them back after its next checks. */
    ck_assert_msg(wait_healthy(BALANCER, 10000) == 200, "the balancer takes no replica back");
    outage_job_end(&o, "the job under the pause");
}
END_TEST

/* ---- failover -------------------------------------------------------------------------------- */

/* A job of about `seconds` on a new net_model (data of seed `seed`), submitted through the
 * balancer, with an untouched copy of the model for a reference run. */
typedef struct watched {
    int64_t model, reference, job;
    int runner;                  /* target index of the replica running the job */
    int other;                   /* another replica, to watch it from */
    char request[160];
} watched_t;

static void watched_start(watched_t *w, unsigned seed, double seconds)
{
    w->model = net_model_on(BALANCER, seed);
    w->reference = fork_on(BALANCER, w->model);
    job_request(steps_per_second(BALANCER, w->model), seconds, w->request, sizeof w->request);
    w->job = submit_on(BALANCER, w->model, w->request);
    w->runner = job_wait_running(BALANCER, w->job);
    w->other = (w->runner + 1) % N_REPLICAS;
    it_sleep_ms(700);            /* a commit or so into the run */
}

/* Send `sig` to the job's replica, then wait until the job's committed step moves past the one
 * it had then (in *at_signal), or the job ends: the milliseconds that took. */
static int64_t signal_runner_until_moved(const watched_t *w, int sig, int64_t *at_signal)
{
    ck_assert_int_eq(kill(replica_pid(w->runner), sig), 0);
    int64_t sent = it_now_ms();
    cJSON *j = job_on(w->other, w->job);
    *at_signal = job_step(j);
    ck_assert_msg(!job_ended(j), "the job ended before signal %d reached its replica: the test "
                  "would prove nothing", sig);
    cJSON_Delete(j);
    for (;;) {
        j = job_on(w->other, w->job);
        int moved = job_step(j) > *at_signal || job_ended(j);
        cJSON_Delete(j);
        if (moved)
            return it_now_ms() - sent;
        ck_assert_msg(it_now_ms() - sent < 4 * LEASE_MS,
                      "the job did not move within %d ms of signal %d to its replica",
                      4 * LEASE_MS, sig);
        it_sleep_ms(20);
    }
}

START_TEST(kill9_job_resumes_on_another_replica)
{
    static watched_t w;
    watched_start(&w, 4, 7.0);
    int64_t at_kill = 0;
    int64_t failover = signal_runner_until_moved(&w, SIGKILL, &at_kill);
    note("kill9: replica %d killed at step %lld; the job moved again %lld ms later "
           "(lease %d ms)\n", w.runner + 1, (long long)at_kill, (long long)failover, LEASE_MS);
    /* The lease, a heartbeat and a commit interval, with room for a loaded machine. */
    ck_assert_msg(failover <= 2 * LEASE_MS, "failover took %lld ms", (long long)failover);
    /* The reference runs while the job finishes: it cannot be on the dead replica. */
    int64_t again = submit_on(w.other, w.reference, w.request);
    cJSON *done = job_wait_end(w.other, w.job, 60000);
    const cJSON *replica = get(done, "replica");
    int now = cJSON_IsNumber(replica) ? replica_of((int64_t)replica->valuedouble) : -1;
    ck_assert_msg(now >= 0 && now != w.runner, "the job's replica is not a live one");
    cJSON_Delete(done);
    expect_same_outcome(w.other, w.job, w.model, again, w.reference);
}
END_TEST

START_TEST(paused_replica_is_fenced)
{
    static watched_t w;
    watched_start(&w, 5, 7.0);
    /* Another replica takes the job over, then the paused one wakes up mid-run. */
    int64_t at_pause = 0;
    int64_t taken = signal_runner_until_moved(&w, SIGSTOP, &at_pause);
    note("sigstop: replica %d paused at step %lld, the job moved on elsewhere after %lld ms\n",
           w.runner + 1, (long long)at_pause, (long long)taken);
    ck_assert_int_eq(kill(replica_pid(w.runner), SIGCONT), 0);
    int64_t again = submit_on(w.other, w.reference, w.request);
    cJSON_Delete(job_wait_end(w.other, w.job, 60000));
    it_sleep_ms(1500);           /* the woken replica's next commit would have come by now */
    expect_same_outcome(w.other, w.job, w.model, again, w.reference);
}
END_TEST

/* A replica asked to stop (SIGTERM) puts its running job back in the queue, and another one
 * resumes it: the job ends as an uninterrupted one, with the same history. With history_every
 * 7 the step where the first replica stopped is not the call's last, so it has no row of its
 * own (unless it falls on a multiple of 7, one time in 7). */
START_TEST(sigterm_hands_the_job_back)
{
    watched_t w;
    w.model = net_model_on(BALANCER, 8);
    w.reference = fork_on(BALANCER, w.model);
    job_request(steps_per_second(BALANCER, w.model), 5.0, w.request, sizeof w.request);
    char *every = strstr(w.request, "\"history_every\":1");
    ck_assert_ptr_nonnull(every);
    every[strlen("\"history_every\":")] = '7';
    w.job = submit_on(BALANCER, w.model, w.request);
    w.runner = job_wait_running(BALANCER, w.job);
    w.other = (w.runner + 1) % N_REPLICAS;
    it_sleep_ms(1000);
    int64_t at_stop = 0;
    signal_runner_until_moved(&w, SIGTERM, &at_stop);
    int64_t again = submit_on(w.other, w.reference, w.request);
    cJSON *ja = job_wait_end(w.other, w.job, 60000), *jb = job_wait_end(w.other, again, 60000);
    expect_succeeded(ja, "the job handed back");
    expect_succeeded(jb, "the reference job");
    const cJSON *replica = get(ja, "replica");
    ck_assert_msg(cJSON_IsNumber(replica) && replica_of((int64_t)replica->valuedouble) != w.runner,
                  "the job did not move to another replica");
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    char *pa = model_text_on(w.other, "/v1/models/%lld/parameters", w.model);
    char *pb = model_text_on(w.other, "/v1/models/%lld/parameters", w.reference);
    ck_assert_msg(strcmp(pa, pb) == 0, "the final parameters differ");
    free(pa);
    free(pb);
    expect_same_history(w.other, w.model, w.reference);
}
END_TEST

/* A synchronous call on a replica paused past its lease: another replica trains the model
 * meanwhile, and the woken call's next commit finds its lease gone. It answers 409, not a
 * result with a step the model has left behind, and the model stays as the other replica
 * left it. */
START_TEST(paused_sync_call_is_fenced)
{
    const int a = 0, b = 1;
    int64_t id = net_model_on(a, 6);
    it_async_t run;
    sync_run_start(&run, a, id, 6.0);
    it_sleep_ms(500);                       /* a commit or so into the run */
    ck_assert_int_eq(kill(replica_pid(a), SIGSTOP), 0);
    const int64_t paused = it_now_ms();
    char path[96], *answer = NULL;
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    long status = 0;
    for (;;) {                              /* 409 until the paused run's lease runs out */
        status = it_http_thread(targets[b].url, "POST", path, "{\"steps\":3}", &answer);
        if (status != 409)
            break;
        free(answer);
        answer = NULL;
        ck_assert_msg(it_now_ms() - paused < 4 * LEASE_MS, "the lease was never taken over");
        it_sleep_ms(100);
    }
    ck_assert_msg(status == 200, "training on replica %d: %ld %s", b + 1, status, answer);
    cJSON *res = cJSON_Parse(answer);
    const int64_t step = (int64_t)it_num(res, "step");
    cJSON_Delete(res);
    free(answer);
    ck_assert_int_eq(kill(replica_pid(a), SIGCONT), 0);
    it_async_join(&run);
    ck_assert_msg(run.status == 409 && strstr(run.answer, "lost its lease") != NULL,
                  "the fenced call answered %ld %s", run.status, run.answer);
    free(run.answer);
    it_sleep_ms(500);                       /* the woken replica's commits would be in */
    char *model = model_text_on(b, "/v1/models/%lld", id);
    cJSON *mj = cJSON_Parse(model);
    ck_assert_int_eq((int64_t)it_num(mj, "step"), step);
    cJSON_Delete(mj);
    free(model);
}
END_TEST

START_TEST(cancel_through_another_replica)
{
    static watched_t w;
    watched_start(&w, 6, 60.0);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)w.job);
    int64_t asked = it_now_ms();
    call_free_on(w.other, "DELETE", path, NULL, 202);
    cJSON *j = NULL;
    for (;;) {
        j = job_on(w.other, w.job);
        if (job_ended(j))
            break;
        cJSON_Delete(j);
        ck_assert_msg(it_now_ms() - asked < 5000, "the job did not stop within 5 s");
        it_sleep_ms(10);
    }
    int64_t took = it_now_ms() - asked;
    note("cancel: job on replica %d cancelled through replica %d in %lld ms\n", w.runner + 1,
           w.other + 1, (long long)took);
    ck_assert_str_eq(it_str(j, "status"), "cancelled");
    ck_assert_msg(took <= 1000, "cancelling took %lld ms", (long long)took);
    int64_t step = (int64_t)it_num(get(j, "result"), "step");
    cJSON_Delete(j);
    /* What the run committed before it stopped, and nothing else. */
    char *text = model_text_on(w.runner, "/v1/models/%lld", w.model);
    cJSON *m = cJSON_Parse(text);
    ck_assert_int_eq((int64_t)it_num(m, "step"), step);
    ck_assert_str_eq(it_str(m, "status"), "idle");
    cJSON_Delete(m);
    free(text);
    expect_history_complete(w.other, w.model, step);
}
END_TEST

START_TEST(events_on_every_replica)
{
    int64_t model = net_model_on(BALANCER, 7);
    static it_stream_t streams[N_REPLICAS];
    for (int r = 0; r < N_REPLICAS; ++r)
        it_stream_open(&streams[r], targets[r].url, model, 1, 0);
    enum { STEPS = 40 };
    int64_t job = submit_on(BALANCER, model,
                            "{\"steps\":40,\"batch_size\":32,\"seed\":3,\"history_every\":1,"
                            "\"async\":true}");
    cJSON *j = job_wait_end(BALANCER, job, 30000);
    ck_assert_str_eq(it_str(j, "status"), "succeeded");
    int runner = replica_of((int64_t)it_num(j, "replica"));
    cJSON_Delete(j);
    cJSON *history = history_all(BALANCER, model);
    ck_assert_int_eq(cJSON_GetArraySize(history), STEPS);
    /* On every replica, the one running the job or not: each recorded step once, in order,
     * with its loss, then done. */
    for (int r = 0; r < N_REPLICAS; ++r) {
        it_stream_wait(&streams[r], 30000);
        const char *names[STEPS + 2], *data[STEPS + 2];
        int n = it_stream_events(streams[r].buf, names, data, STEPS + 2);
        ck_assert_msg(n == STEPS + 1, "replica %d (%s the job) streamed %d events, not %d",
                      r + 1, r == runner ? "running" : "not running", n, STEPS + 1);
        for (int step = 0; step < STEPS; ++step) {
            ck_assert_str_eq(names[step], "progress");
            cJSON *e = cJSON_Parse(data[step]);
            ck_assert_int_eq((int)it_num(e, "step"), step);
            double want = it_num(cJSON_GetArrayItem(history, step), "loss");
            double got = it_num(e, "loss");
            ck_assert_msg(memcmp(&want, &got, sizeof want) == 0, "step %d: loss %.17g vs %.17g",
                          step, got, want);
            cJSON_Delete(e);
        }
        ck_assert_str_eq(names[STEPS], "done");
        it_stream_free(&streams[r]);
    }
    cJSON_Delete(history);
}
END_TEST

/* Read the cluster's addresses from tests/pg/with_cluster.sh's environment; 0, or -1 when it
 * is not there. */
static int cluster_from_env(void)
{
    const char *front = getenv("NEUROND_CLUSTER_URL");
    const char *urls = getenv("NEUROND_REPLICA_URLS");
    cluster_dir = getenv("NEUROND_CLUSTER_DIR");
    start_cmd = getenv("NEUROND_REPLICA_START");
    replica_db = getenv("NEUROND_REPLICA_DB");
    if (front == NULL || urls == NULL || cluster_dir == NULL || start_cmd == NULL ||
        replica_db == NULL)
        return -1;
    snprintf(targets[BALANCER].url, sizeof targets[BALANCER].url, "%s", front);
    int n = 0;
    for (const char *p = urls; *p != '\0' && n < N_REPLICAS;) {
        size_t len = strcspn(p, " ");
        if (len > 0 && len < sizeof targets[n].url) {
            snprintf(targets[n].url, sizeof targets[n].url, "%.*s", (int)len, p);
            ++n;
        }
        p += len + (p[len] == ' ');
    }
    return n == N_REPLICAS ? 0 : -1;
}

int main(int argc, char **argv)
{
    it_init(argc, argv);
    if (cluster_from_env() < 0) {
        printf("SKIP: needs three replicas behind HAProxy (run under tests/pg/with_cluster.sh)\n");
        return IT_EXIT_SKIPPED;
    }
    Suite *s = suite_create("replicas");
    TCase *tc = tcase_create("replicas");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, read_your_writes);
    tcase_add_test(tc, writes_conflict_while_another_replica_trains);
    tcase_add_test(tc, model_status_same_on_every_replica);
    tcase_add_test(tc, sixteen_clients_no_5xx);
    tcase_add_test(tc, replica_taken_for_dead_comes_back_under_a_new_id);
    tcase_add_test(tc, postgresql_restart_under_a_job);
    tcase_add_test(tc, postgresql_paused_under_a_job);
    suite_add_tcase(s, tc);
    /* Failover: replicas killed and paused; a ctest test of its own (tests/CMakeLists.txt). */
    TCase *fo = tcase_create("failover");
    tcase_set_tags(fo, "failover");
    tcase_add_checked_fixture(fo, setup, teardown);
    tcase_set_timeout(fo, 90);
    tcase_add_test(fo, kill9_job_resumes_on_another_replica);
    tcase_add_test(fo, paused_replica_is_fenced);
    tcase_add_test(fo, paused_sync_call_is_fenced);
    tcase_add_test(fo, sigterm_hands_the_job_back);
    tcase_add_test(fo, cancel_through_another_replica);
    tcase_add_test(fo, events_on_every_replica);
    suite_add_tcase(s, fo);
    return it_run(s);
}
