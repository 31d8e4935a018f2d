/* tests/integration/it_train.c -- training end to end: async jobs (lifecycle, progress, cancel,
 * 409 while running, 429 over --max-jobs), SSE events, history paging and sampling (also over
 * long runs stored in many chunks, with fork and restore), stored rows seen afresh after batch
 * changes (with and without the data cache), divergence, a crash (kill -9) and a clean restart
 * in the middle of a job, and 16 concurrent clients. */
#include <check.h>
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

static it_daemon_t d;

/* --max-queue 0: a job no slot can take is 429 on either backend (PostgreSQL's default queues
 * it). A short lease: on PostgreSQL a restarted daemon resumes its predecessor's jobs after it. */
static void start_with(const char *max_jobs, const char *max_queue)
{
    const char *extra[] = {"--log-level", "warn", "--max-jobs", max_jobs, "--max-queue",
                           max_queue, "--threads", "8", "--job-lease", "3", NULL};
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

static void setup(void)
{
    start_with("4", "0");
}

static void setup_two_jobs(void)
{
    start_with("2", "0");
}

static void setup_queue(void)
{
    start_with("1", "2");
}

/* No training rows kept between calls: every call reads them from the store. */
static void setup_no_data_cache(void)
{
    const char *extra[] = {"--log-level", "warn", "--data-cache", "0", NULL};
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

/* A clean stop must exit 0: under -DNEUROND_SANITIZE=ON that includes no leak report. */
static void teardown(void)
{
    int rc = d.pid > 0 ? it_stop(&d) : 0;
    it_cleanup(&d);
    ck_assert_msg(rc == 0, "daemon exit status %d on SIGTERM", rc);
}

static cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static void expect_error(const char *method, const char *path, const char *body, long want,
                         const char *code)
{
    cJSON *j = it_call(method, path, body, want);
    ck_assert_msg(j != NULL, "%s %s: no JSON", method, path);
    ck_assert_str_eq(get(get(j, "error"), "code")->valuestring, code);
    cJSON_Delete(j);
}

/* A JSON batch of `rows` rows of `n_x` features: y = 0.3 x0 − 0.2 x1 + 0.1. */
static char *batch_json(int rows, int n_x, unsigned seed)
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

static void add_rows(int64_t id, int rows, int n_x)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    char *b = batch_json(rows, n_x, (unsigned)id * 7919u);
    it_call_free("POST", path, b, 201);
    free(b);
}

/* A small linear model with 32 stored rows: training it is fast. */
static int64_t small_model(void)
{
    int64_t id = it_create_model("{\"kind\":\"linear\",\"inputs\":3,"
                              "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.05}}");
    add_rows(id, 32, 3);
    return id;
}

/* An mlp with enough rows that a long run takes many seconds: jobs stay running. */
static int64_t slow_model(void)
{
    int64_t id = it_create_model(
        "{\"kind\":\"mlp\",\"inputs\":8,\"hidden\":[{\"units\":64,\"activation\":\"tanh\"},"
        "{\"units\":64,\"activation\":\"tanh\"}],\"init\":{\"method\":\"xavier\",\"seed\":3},"
        "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.001}}");
    add_rows(id, 3000, 8);
    return id;
}

static int64_t submit(int64_t id, const char *req, long want)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    char *text = NULL, *hdrs = NULL;
    long status = 0;
    it_request("POST", path, "application/json", req, &status, &text, &hdrs);
    ck_assert_msg(status == want, "submit: status %ld: %s", status, text);
    int64_t job = 0;
    if (status == 202) {
        cJSON *j = cJSON_Parse(text);
        job = (int64_t)it_num(j, "id");
        ck_assert_int_eq((int64_t)it_num(j, "model_id"), id);
        ck_assert(cJSON_IsObject(get(j, "progress")));
        char *loc = it_header(hdrs, "Location");
        char want_loc[64];
        snprintf(want_loc, sizeof want_loc, "/v1/jobs/%lld", (long long)job);
        ck_assert_ptr_nonnull(loc);
        ck_assert_str_eq(loc, want_loc);
        free(loc);
        cJSON_Delete(j);
    }
    free(text);
    free(hdrs);
    return job;
}

static cJSON *job_get(int64_t job)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    return it_call("GET", path, NULL, 200);
}

/* Poll until the job's status is `status` (or any final one when NULL); returns the job. */
static cJSON *job_wait(int64_t job, const char *status, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        cJSON *j = job_get(job);
        const char *s = get(j, "status")->valuestring;
        int final = strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 ||
                    strcmp(s, "cancelled") == 0;
        if (status != NULL ? strcmp(s, status) == 0 : final)
            return j;
        ck_assert_msg(waited < timeout_ms, "job %lld still %s after %d ms", (long long)job, s,
                      timeout_ms);
        ck_assert_msg(!final || status == NULL, "job %lld ended %s, waiting for %s",
                      (long long)job, s, status);
        cJSON_Delete(j);
        it_sleep_ms(20);
    }
}

/* Wait for `job` to succeed: its result's steps_run. */
static int64_t job_steps_run(int64_t job)
{
    cJSON *j = job_wait(job, "succeeded", 30000);
    int64_t steps = (int64_t)it_num(get(j, "result"), "steps_run");
    cJSON_Delete(j);
    return steps;
}

/* Poll until the job has committed at least one chunk (progress.step > 0). */
static void job_wait_progress(int64_t job)
{
    for (int waited = 0;; waited += 50) {
        cJSON *j = job_get(job);
        double step = it_num(get(j, "progress"), "step");
        const char *s = get(j, "status")->valuestring;
        ck_assert_msg(strcmp(s, "queued") == 0 || strcmp(s, "running") == 0, "job ended: %s", s);
        cJSON_Delete(j);
        if (step > 0)
            return;
        ck_assert_msg(waited < 30000, "no progress after 30 s");
        it_sleep_ms(50);
    }
}

static cJSON *model_get(int64_t id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    return it_call("GET", path, NULL, 200);
}

/* The model's "step" as GET /v1/models/{id} shows it now. */
static int64_t model_step(int64_t id)
{
    cJSON *m = model_get(id);
    int64_t step = (int64_t)it_num(m, "step");
    cJSON_Delete(m);
    return step;
}

/* The last history row's step, -1 when there is none (pages through everything). */
static int64_t last_history_step(int64_t id, int64_t *count)
{
    char path[128];
    int64_t after = -1, last = -1, n = 0;
    for (;;) {
        snprintf(path, sizeof path, "/v1/models/%lld/history?after_step=%lld&limit=10000",
                 (long long)id, (long long)after);
        cJSON *h = it_call("GET", path, NULL, 200);
        cJSON *rows = get(h, "history"), *r;
        cJSON_ArrayForEach(r, rows)
        {
            int64_t s = (int64_t)it_num(r, "step");
            ck_assert_msg(s > last, "history not ascending");
            last = s;
            ++n;
        }
        cJSON *next = get(h, "next");
        int more = cJSON_IsNumber(next);
        if (more)
            after = (int64_t)next->valuedouble;
        cJSON_Delete(h);
        if (!more)
            break;
    }
    if (count != NULL)
        *count = n;
    return last;
}

/* The model is at a committed step: step = last history row + 1, finite parameters, idle. */
static int64_t check_consistent(int64_t id)
{
    cJSON *m = model_get(id);
    int64_t step = (int64_t)it_num(m, "step");
    ck_assert_str_eq(get(m, "status")->valuestring, "idle");
    cJSON_Delete(m);
    int64_t last = last_history_step(id, NULL);
    ck_assert_msg(step == last + 1, "model step %lld, last history row %lld", (long long)step,
                  (long long)last);
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)id);
    cJSON *p = it_call("GET", path, NULL, 200);
    ck_assert_int_eq((int64_t)it_num(p, "step"), step);
    char *text = cJSON_PrintUnformatted(get(p, "parameters"));
    ck_assert_msg(strstr(text, "null") == NULL, "non-finite parameters: %s", text);
    free(text);
    cJSON_Delete(p);
    return step;
}

/* 400 naming `field`, as the answer to POST `body` on `path`. */
static void expect_field(const char *path, const char *body, const char *field)
{
    cJSON *j = it_call("POST", path, body, 400);
    ck_assert_msg(j != NULL, "POST %s: no JSON", path);
    cJSON *e = get(j, "error");
    ck_assert_str_eq(get(e, "code")->valuestring, "invalid_argument");
    cJSON *f = get(e, "field");
    ck_assert_msg(cJSON_IsString(f) && strcmp(f->valuestring, field) == 0,
                  "POST %s %s: want field %s", path, body, field);
    cJSON_Delete(j);
}

/* What a call implies is checked before it runs or is queued: an async request that could
 * never run is 400, not 202 and a job failing later; batch_size 0 is not the full batch. */
START_TEST(request_bounds_up_front)
{
    int64_t id = small_model();   /* 32 rows */
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    expect_field(path, "{\"epochs\":1e9,\"batch_size\":1,\"async\":true}", "epochs");
    expect_field(path, "{\"epochs\":1e9,\"batch_size\":1}", "epochs");
    /* 32 batches per epoch: 31250000 epochs are 10^9 steps, one more epoch is too many. */
    expect_field(path, "{\"epochs\":31250001,\"batch_size\":1,\"async\":true}", "epochs");
    expect_field(path, "{\"batch_size\":0}", "batch_size");
    expect_field(path, "{\"batch_size\":0,\"async\":true}", "batch_size");
    expect_field(path, "{\"batch_size\":-3}", "batch_size");
    expect_field(path, "{\"steps\":1000000001,\"async\":true}", "steps");
    /* lbfgs takes the full batch, sync or async. */
    int64_t lb = it_create_model("{\"kind\":\"linear\",\"inputs\":3,"
                                 "\"optimizer\":{\"method\":\"lbfgs\"}}");
    add_rows(lb, 32, 3);
    char lb_path[96];
    snprintf(lb_path, sizeof lb_path, "/v1/models/%lld/train", (long long)lb);
    expect_field(lb_path, "{\"steps\":1,\"batch_size\":1}", "batch_size");
    expect_field(lb_path, "{\"steps\":1,\"batch_size\":1,\"async\":true}", "batch_size");
    expect_field(lb_path, "{\"epochs\":1,\"batch_size\":4,\"async\":true}", "batch_size");
    snprintf(lb_path, sizeof lb_path, "/v1/jobs?model_id=%lld", (long long)lb);
    cJSON *lb_jobs = it_call("GET", lb_path, NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(get(lb_jobs, "jobs")), 0);
    cJSON_Delete(lb_jobs);
    snprintf(path, sizeof path, "/v1/jobs?model_id=%lld", (long long)id);
    cJSON *jobs = it_call("GET", path, NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(get(jobs, "jobs")), 0);
    cJSON_Delete(jobs);
    ck_assert_int_eq(model_step(id), 0);
    /* null is the full batch. */
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    cJSON *j = it_call("POST", path, "{\"epochs\":2,\"batch_size\":null}", 200);
    ck_assert_int_eq((int64_t)it_num(j, "steps_run"), 2);
    cJSON_Delete(j);
    /* Zero passes make no update, with or without mini-batches, sync or async. */
    j = it_call("POST", path, "{\"epochs\":0,\"batch_size\":1}", 200);
    ck_assert_int_eq((int64_t)it_num(j, "steps_run"), 0);
    ck_assert_int_eq((int64_t)it_num(j, "step"), 2);
    cJSON_Delete(j);
    int64_t job = submit(id, "{\"epochs\":0,\"async\":true}", 202);
    ck_assert_int_eq(job_steps_run(job), 0);
    ck_assert_int_eq(model_step(id), 2);
}
END_TEST

/* "key": value of a JSON text, as printed (new). */
static char *printed_value(const char *text, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = strstr(text, pat);
    ck_assert_msg(at != NULL, "no %s in %s", key, text);
    at += strlen(pat);
    return strndup(at, strcspn(at, ",}"));
}

/* A job runs the request as sent, and answers its result as computed: a learning rate that
 * cJSON would print as 0.3 trains as 0.30000000000000004, and every number of the result is
 * the sync call's to the last bit. */
START_TEST(async_numbers_are_exact)
{
    int64_t a = small_model();
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/fork", (long long)a);
    cJSON *fork = it_call("POST", path, "{}", 201);
    int64_t b = (int64_t)it_num(fork, "id");
    cJSON_Delete(fork);
    static const char req[] = "{\"steps\":7,\"learning_rate\":0.30000000000000004,"
                              "\"batch_size\":5,\"seed\":3%s}";
    char body[160];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)a);
    snprintf(body, sizeof body, req, "");
    char *sync = NULL;
    long status = 0;
    ck_assert_int_eq(it_request("POST", path, "application/json", body, &status, &sync, NULL), 0);
    ck_assert_int_eq(status, 200);
    snprintf(body, sizeof body, req, ",\"async\":true");
    int64_t job = submit(b, body, 202);
    cJSON_Delete(job_wait(job, "succeeded", 30000));
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    char *async = it_get_text(path);
    static const char *const keys[] = {"loss_before", "loss_after"};
    for (size_t i = 0; i < 2; ++i) {
        char *s = printed_value(sync, keys[i]), *j = printed_value(async, keys[i]);
        ck_assert_msg(strcmp(s, j) == 0, "%s: sync %s, job %s", keys[i], s, j);
        free(s);
        free(j);
    }
    snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)a);
    char *pa = it_get_text(path);
    snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)b);
    char *pb = it_get_text(path);
    ck_assert_str_eq(pa, pb);
    free(pa);
    free(pb);
    free(sync);
    free(async);
}
END_TEST

START_TEST(async_lifecycle)
{
    int64_t id = small_model();
    int64_t job = submit(id, "{\"steps\":200,\"async\":true}", 202);
    cJSON *j = job_wait(job, "succeeded", 30000);
    cJSON *res = get(j, "result"), *prog = get(j, "progress");
    ck_assert_int_eq((int64_t)it_num(res, "model_id"), id);
    ck_assert_int_eq((int64_t)it_num(res, "steps_run"), 200);
    ck_assert_int_eq((int64_t)it_num(res, "step"), 200);
    ck_assert_str_eq(get(res, "stopped")->valuestring, "max_steps");
    ck_assert(it_num(res, "loss_after") < it_num(res, "loss_before"));
    ck_assert_int_eq((int64_t)it_num(prog, "step"), 200);
    ck_assert_int_eq((int64_t)it_num(prog, "steps"), 200);
    ck_assert(fabs(it_num(prog, "loss") - it_num(res, "loss_after")) < 1e-3);
    ck_assert_ptr_null(get(j, "error"));
    cJSON_Delete(j);
    ck_assert_int_eq(check_consistent(id), 200);

    /* Listing and filters. */
    char path[96];
    snprintf(path, sizeof path, "/v1/jobs?model_id=%lld", (long long)id);
    j = it_call("GET", path, NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(get(j, "jobs")), 1);
    ck_assert_int_eq((int64_t)it_num(cJSON_GetArrayItem(get(j, "jobs"), 0), "id"), job);
    cJSON_Delete(j);
    j = it_call("GET", "/v1/jobs?status=succeeded", NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(get(j, "jobs")), 1);
    cJSON_Delete(j);
    j = it_call("GET", "/v1/jobs?status=running", NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(get(j, "jobs")), 0);
    cJSON_Delete(j);
    expect_error("GET", "/v1/jobs?status=bogus", NULL, 400, "invalid_argument");
    expect_error("GET", "/v1/jobs/999", NULL, 404, "not_found");
    expect_error("DELETE", "/v1/jobs/999", NULL, 404, "not_found");
    /* Cancelling a finished job is a no-op. */
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    j = it_call("DELETE", path, NULL, 202);
    ck_assert_str_eq(get(j, "status")->valuestring, "succeeded");
    cJSON_Delete(j);

    /* Requests checked before a job exists. */
    int64_t empty = it_create_model("{\"kind\":\"linear\",\"inputs\":2}");
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)empty);
    expect_error("POST", path, "{\"steps\":3,\"async\":true}", 400, "invalid_argument");
    expect_error("POST", path, "{\"steps\":3}", 400, "invalid_argument");
    expect_error("POST", path, "{\"stpes\":3}", 400, "invalid_argument");
    expect_error("POST", path, "{\"steps\":-1}", 400, "invalid_argument");
    expect_error("POST", "/v1/models/999/train", "{\"async\":true}", 404, "not_found");
    expect_error("POST", "/v1/models/999/train", "{}", 404, "not_found");
    j = it_call("POST", path, "{\"steps\":0}", 200);   /* steps 0 only evaluates */
    ck_assert_int_eq((int64_t)it_num(j, "steps_run"), 0);
    cJSON_Delete(j);
}
END_TEST

START_TEST(cancel_and_conflicts)
{
    int64_t id = slow_model();
    int64_t job = submit(id, "{\"steps\":100000000,\"async\":true}", 202);
    job_wait_progress(job);
    cJSON *m = model_get(id);
    ck_assert_str_eq(get(m, "status")->valuestring, "training");
    cJSON_Delete(m);

    /* Writes get 409, reads answer at once from the last committed state. */
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    expect_error("POST", path, "{\"steps\":1}", 409, "conflict");
    expect_error("POST", path, "{\"steps\":1,\"async\":true}", 409, "conflict");
    char *b = batch_json(4, 8, 1);
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    expect_error("POST", path, b, 409, "conflict");
    snprintf(path, sizeof path, "/v1/models/%lld/step", (long long)id);
    expect_error("POST", path, b, 409, "conflict");
    snprintf(path, sizeof path, "/v1/models/%lld/predict", (long long)id);
    it_call_free("POST", path, "{\"x\":[[1,2,3,4,5,6,7,8]]}", 200);
    snprintf(path, sizeof path, "/v1/models/%lld/loss", (long long)id);
    it_call_free("POST", path, b, 200);
    snprintf(path, sizeof path, "/v1/models/%lld/history?limit=5", (long long)id);
    it_call_free("GET", path, NULL, 200);
    free(b);

    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    cJSON *j = it_call("DELETE", path, NULL, 202);
    ck_assert_int_eq((int64_t)it_num(j, "id"), job);
    cJSON_Delete(j);
    j = job_wait(job, "cancelled", 30000);
    cJSON *res = get(j, "result");
    ck_assert_str_eq(get(res, "stopped")->valuestring, "cancelled");
    int64_t step = (int64_t)it_num(res, "step");
    ck_assert(step > 0);
    ck_assert_int_eq((int64_t)it_num(res, "steps_run"), step);
    cJSON_Delete(j);
    ck_assert_int_eq(check_consistent(id), step);

    /* The lock is gone: training goes on from there. */
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    j = it_call("POST", path, "{\"steps\":2}", 200);
    ck_assert_int_eq((int64_t)it_num(j, "step"), step + 2);
    cJSON_Delete(j);
}
END_TEST

/* An lbfgs job stops promptly on DELETE, also while its line search runs (each trial is a pass
 * over every row), and the model stays at a committed step with its history. */
START_TEST(cancel_lbfgs_job)
{
    int64_t id = it_create_model(
        "{\"kind\":\"mlp\",\"inputs\":8,\"hidden\":[{\"units\":64,\"activation\":\"tanh\"},"
        "{\"units\":64,\"activation\":\"tanh\"}],\"init\":{\"method\":\"xavier\",\"seed\":3},"
        "\"optimizer\":{\"method\":\"lbfgs\",\"history\":5,\"max_line_search\":200}}");
    add_rows(id, 3000, 8);
    int64_t job = submit(id, "{\"steps\":100000000,\"async\":true}", 202);
    job_wait_progress(job);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    it_call_free("DELETE", path, NULL, 202);
    cJSON *j = job_wait(job, "cancelled", 5000);
    cJSON *res = get(j, "result");
    ck_assert_str_eq(get(res, "stopped")->valuestring, "cancelled");
    int64_t step = (int64_t)it_num(res, "step");
    ck_assert(step > 0);
    cJSON_Delete(j);
    ck_assert_int_eq(check_consistent(id), step);
}
END_TEST

static void cancel_and_wait(int64_t job)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)job);
    it_call_free("DELETE", path, NULL, 202);
    cJSON_Delete(job_wait(job, "cancelled", 30000));
}

START_TEST(too_many_jobs)
{
    int64_t a = slow_model(), b = slow_model(), c = small_model();
    int64_t ja = submit(a, "{\"steps\":100000000,\"async\":true}", 202);
    int64_t jb = submit(b, "{\"steps\":100000000,\"async\":true}", 202);
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)c);
    expect_error("POST", path, "{\"steps\":5,\"async\":true}", 429, "too_many_requests");
    /* --max-jobs counts async jobs only. */
    it_call_free("POST", path, "{\"steps\":5}", 200);
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)ja);
    it_call_free("DELETE", path, NULL, 202);
    cJSON_Delete(job_wait(ja, "cancelled", 30000));
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)c);
    int64_t jc = submit(c, "{\"steps\":5,\"async\":true}", 202);
    cJSON_Delete(job_wait(jc, "succeeded", 30000));
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)jb);
    it_call_free("DELETE", path, NULL, 202);
    cJSON_Delete(job_wait(jb, "cancelled", 30000));
    cJSON *j = it_call("GET", "/v1/jobs?status=cancelled", NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(get(j, "jobs")), 2);
    cJSON_Delete(j);
}
END_TEST

/* --max-jobs 1 --max-queue 2: two jobs wait their turn, oldest first, a third is 429; a queued
 * job's DELETE cancels it at once; each waiting job runs when a slot frees. */
START_TEST(queue_waits_for_a_slot)
{
    int64_t a = slow_model(), b = small_model(), c = small_model(), e = small_model();
    int64_t ja = submit(a, "{\"steps\":100000000,\"async\":true}", 202);
    int64_t jb = submit(b, "{\"steps\":5,\"async\":true}", 202);
    int64_t jc = submit(c, "{\"steps\":7,\"async\":true}", 202);
    cJSON *j = job_get(jb);
    ck_assert_str_eq(get(j, "status")->valuestring, "queued");
    ck_assert(cJSON_IsNull(get(j, "replica")));
    cJSON_Delete(j);
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)e);
    expect_error("POST", path, "{\"steps\":5,\"async\":true}", 429, "too_many_requests");
    /* One job per model: a second is 409 while the first waits. */
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)b);
    expect_error("POST", path, "{\"steps\":5,\"async\":true}", 409, "conflict");
    expect_error("POST", path, "{\"steps\":5}", 409, "conflict");
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)jc);
    it_call_free("DELETE", path, NULL, 202);
    j = job_get(jc);
    ck_assert_str_eq(get(j, "status")->valuestring, "cancelled");
    cJSON_Delete(j);
    ck_assert_int_eq(model_step(c), 0);

    cancel_and_wait(ja);
    ck_assert_int_eq(job_steps_run(jb), 5);
    ck_assert_int_eq(model_step(b), 5);
}
END_TEST

/* ---- SSE ------------------------------------------------------------------------------------- */

START_TEST(sse_events)
{
    int64_t id = small_model();
    it_stream_t s;
    it_stream_open(&s, it_base_url(), id, 3, 1);
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    cJSON *r1 = it_call("POST", path, "{\"steps\":5}", 200);
    snprintf(path, sizeof path, "/v1/models/%lld/step", (long long)id);
    cJSON_Delete(it_call("POST", path, "{\"x\":[[1,2,3]],\"y\":[1]}", 200));
    int64_t job = submit(id, "{\"steps\":20,\"history_every\":10,\"async\":true}", 202);
    cJSON_Delete(job_wait(job, "succeeded", 30000));
    it_stream_wait(&s, 60000);
    ck_assert_int_eq(s.curl_rc, CURLE_WRITE_ERROR);   /* we left after the keep-alive */

    /* 5 (sync) + 1 (step) + 3 (job over steps 6..25: 10, 20 and its last, 25). */
    ck_assert_int_eq(it_count(s.buf, "event: progress\n"), 5 + 1 + 3);
    ck_assert_int_eq(it_count(s.buf, "event: done\n"), 3);
    for (int k = 0; k < 5; ++k) {
        char line[64];
        snprintf(line, sizeof line, "data: {\"step\":%d,\"loss\":", k);
        ck_assert_msg(strstr(s.buf, line) != NULL, "no progress for step %d:\n%s", k, s.buf);
    }
    ck_assert_ptr_nonnull(strstr(s.buf, "data: {\"step\":5,\"loss\":"));
    ck_assert_ptr_nonnull(strstr(s.buf, "data: {\"step\":10,\"loss\":"));
    ck_assert_ptr_nonnull(strstr(s.buf, "data: {\"step\":20,\"loss\":"));
    ck_assert_ptr_nonnull(strstr(s.buf, "data: {\"step\":25,\"loss\":"));
    ck_assert_ptr_null(strstr(s.buf, "data: {\"step\":11,"));
    /* The first done carries the sync call's result. */
    const char *done = strstr(s.buf, "event: done\ndata: ");
    ck_assert_ptr_nonnull(done);
    cJSON *res = cJSON_Parse(done + strlen("event: done\ndata: "));
    ck_assert_ptr_nonnull(res);
    ck_assert_int_eq((int64_t)it_num(res, "model_id"), id);
    ck_assert_int_eq((int64_t)it_num(res, "step"), 5);
    ck_assert(it_num(res, "loss_after") == it_num(r1, "loss_after"));
    cJSON_Delete(res);
    cJSON_Delete(r1);
    ck_assert_ptr_nonnull(strstr(s.buf, ": keep-alive\n\n"));
    it_stream_free(&s);

    /* History of that run: every 10th step plus the last of each call. */
    snprintf(path, sizeof path, "/v1/models/%lld/history?after_step=5", (long long)id);
    cJSON *h = it_call("GET", path, NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(get(h, "history")), 3);
    cJSON_Delete(h);

    expect_error("GET", "/v1/models/999/events", NULL, 404, "not_found");
}
END_TEST

START_TEST(history_paging)
{
    int64_t id = small_model();
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    it_call_free("POST", path, "{\"steps\":25}", 200);
    int64_t after = -1, total = 0;
    int pages = 0;
    for (;;) {
        snprintf(path, sizeof path, "/v1/models/%lld/history?after_step=%lld&limit=10",
                 (long long)id, (long long)after);
        cJSON *h = it_call("GET", path, NULL, 200);
        cJSON *rows = get(h, "history"), *next = get(h, "next");
        int n = cJSON_GetArraySize(rows);
        ck_assert_int_eq((int64_t)it_num(cJSON_GetArrayItem(rows, 0), "step"), after + 1);
        total += n;
        ++pages;
        if (cJSON_IsNull(next)) {
            ck_assert_int_eq(n, 5);
            cJSON_Delete(h);
            break;
        }
        ck_assert_int_eq(n, 10);
        after = (int64_t)next->valuedouble;
        ck_assert_int_eq(after, (int64_t)it_num(cJSON_GetArrayItem(rows, 9), "step"));
        cJSON_Delete(h);
    }
    ck_assert_int_eq(total, 25);
    ck_assert_int_eq(pages, 3);

    /* max_points: evenly over the whole run, first and last kept. */
    snprintf(path, sizeof path, "/v1/models/%lld/history?max_points=5", (long long)id);
    cJSON *h = it_call("GET", path, NULL, 200);
    static const int want[] = {0, 6, 12, 18, 24};
    ck_assert_int_eq(cJSON_GetArraySize(get(h, "history")), 5);
    for (int i = 0; i < 5; ++i)
        ck_assert_int_eq((int)it_num(cJSON_GetArrayItem(get(h, "history"), i), "step"), want[i]);
    ck_assert(cJSON_IsNull(get(h, "next")));
    cJSON_Delete(h);
    snprintf(path, sizeof path, "/v1/models/%lld/history?max_points=1000", (long long)id);
    h = it_call("GET", path, NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(get(h, "history")), 25);
    cJSON_Delete(h);

    snprintf(path, sizeof path, "/v1/models/%lld/history?limit=0", (long long)id);
    expect_error("GET", path, NULL, 400, "invalid_argument");
    snprintf(path, sizeof path, "/v1/models/%lld/history?limit=10001", (long long)id);
    expect_error("GET", path, NULL, 400, "invalid_argument");
    snprintf(path, sizeof path, "/v1/models/%lld/history?max_points=1", (long long)id);
    expect_error("GET", path, NULL, 400, "invalid_argument");
    snprintf(path, sizeof path, "/v1/models/%lld/history?max_points=4&limit=3", (long long)id);
    expect_error("GET", path, NULL, 400, "invalid_argument");
    expect_error("GET", "/v1/models/999/history", NULL, 404, "not_found");

    /* history_every 0 records nothing; the step still advances. */
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    cJSON *r = it_call("POST", path, "{\"steps\":4,\"history_every\":0}", 200);
    ck_assert_int_eq((int64_t)it_num(r, "step"), 29);
    cJSON_Delete(r);
    int64_t count = 0;
    ck_assert_int_eq(last_history_step(id, &count), 24);
    ck_assert_int_eq(count, 25);
}
END_TEST

/* One page of GET /history: steps and losses into the arrays (room for `cap`), `*next` the
 * cursor (-1 when null). Returns the number of rows. */
static int history_page(int64_t id, const char *query, int64_t *steps, double *losses, int cap,
                        int64_t *next)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/models/%lld/history?%s", (long long)id, query);
    cJSON *h = it_call("GET", path, NULL, 200);
    cJSON *rows = get(h, "history"), *nx = get(h, "next");
    int n = cJSON_GetArraySize(rows);
    ck_assert_int_le(n, cap);
    for (int i = 0; i < n; ++i) {
        const cJSON *r = cJSON_GetArrayItem(rows, i);
        steps[i] = (int64_t)it_num(r, "step");
        losses[i] = it_num(r, "loss");
        ck_assert_double_eq(it_num(r, "learning_rate"), 0.05);
        const cJSON *at = get(r, "at");
        ck_assert_msg(cJSON_IsString(at) && strlen(at->valuestring) == 24 &&
                          at->valuestring[10] == 'T' && at->valuestring[23] == 'Z',
                      "at %s", cJSON_IsString(at) ? at->valuestring : "?");
    }
    *next = cJSON_IsNull(nx) ? -1 : (int64_t)nx->valuedouble;
    cJSON_Delete(h);
    return n;
}

static cJSON *train(int64_t id, const char *body)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    return it_call("POST", path, body, 200);
}

/* Long runs, strided recording, paging and sampling across stored chunks, fork, restore and
 * single steps: history reads back exactly what was recorded. */
START_TEST(history_long_runs)
{
    enum { CAP = 10000 };
    int64_t id = small_model();
    char path[128], q[96];
    static int64_t steps[CAP], steps2[CAP];
    static double losses[CAP], losses2[CAP];
    int64_t next = 0;

    cJSON *r = train(id, "{\"steps\":2500}");
    double loss0 = it_num(r, "loss_before");
    cJSON_Delete(r);
    snprintf(path, sizeof path, "/v1/models/%lld/checkpoints", (long long)id);
    cJSON *ck = it_call("POST", path, "{}", 201);
    int64_t checkpoint = (int64_t)it_num(ck, "checkpoint_id");
    ck_assert_int_eq((int64_t)it_num(ck, "step"), 2500);
    cJSON_Delete(ck);
    cJSON_Delete(train(id, "{\"steps\":5000}"));
    /* Every 3rd global step plus the call's last: 7500, 7503, 7506, 7508. */
    r = train(id, "{\"steps\":9,\"history_every\":3}");
    ck_assert_int_eq((int64_t)it_num(r, "step"), 7509);
    cJSON_Delete(r);

    /* Pages of 3000: 0..2999, 3000..5999, then 6000..7499 and the four strided rows. */
    int n = history_page(id, "after_step=-1&limit=3000", steps, losses, CAP, &next);
    ck_assert_int_eq(n, 3000);
    ck_assert_int_eq(next, 2999);
    ck_assert_double_eq(losses[0], loss0);
    int total = n;
    n = history_page(id, "after_step=2999&limit=3000", steps + total, losses + total, CAP - total,
                     &next);
    ck_assert_int_eq(n, 3000);
    ck_assert_int_eq(next, 5999);
    total += n;
    n = history_page(id, "after_step=5999&limit=3000", steps + total, losses + total, CAP - total,
                     &next);
    ck_assert_int_eq(n, 1504);
    ck_assert_int_eq(next, -1);
    total += n;
    for (int i = 0; i < 7500; ++i)
        ck_assert_int_eq(steps[i], i);
    static const int64_t strided[] = {7500, 7503, 7506, 7508};
    for (int i = 0; i < 4; ++i)
        ck_assert_int_eq(steps[7500 + i], strided[i]);
    /* Training on fixed data with a small rate: the recorded loss falls. */
    ck_assert(losses[7499] < losses[0]);

    /* A page may start inside a stored run and cross into the next. */
    n = history_page(id, "after_step=2497&limit=5", steps2, losses2, CAP, &next);
    ck_assert_int_eq(n, 5);
    for (int i = 0; i < 5; ++i) {
        ck_assert_int_eq(steps2[i], 2498 + i);
        ck_assert_double_eq(losses2[i], losses[2498 + i]);
    }
    n = history_page(id, "after_step=7501&limit=10", steps2, losses2, CAP, &next);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(steps2[0], 7503);

    /* 7504 rows sampled at 5 points: record indices round(k·7503/4) = 0, 1876, 3752, 5627, 7503. */
    n = history_page(id, "max_points=5", steps2, losses2, CAP, &next);
    static const int64_t sampled[] = {0, 1876, 3752, 5627, 7508};
    ck_assert_int_eq(n, 5);
    for (int i = 0; i < 5; ++i)
        ck_assert_int_eq(steps2[i], sampled[i]);
    ck_assert_double_eq(losses2[1], losses[1876]);

    /* A fork carries the whole history. */
    snprintf(path, sizeof path, "/v1/models/%lld/fork", (long long)id);
    cJSON *f = it_call("POST", path, "{}", 201);
    int64_t fork = (int64_t)it_num(f, "id");
    cJSON_Delete(f);
    n = history_page(fork, "limit=10000", steps2, losses2, CAP, &next);
    ck_assert_int_eq(n, total);
    for (int i = 0; i < total; ++i) {
        ck_assert_int_eq(steps2[i], steps[i]);
        ck_assert_double_eq(losses2[i], losses[i]);
    }

    /* Restore cuts the history at the checkpoint, inside a stored run. */
    snprintf(path, sizeof path, "/v1/models/%lld/restore", (long long)id);
    snprintf(q, sizeof q, "{\"checkpoint_id\":%lld}", (long long)checkpoint);
    it_call_free("POST", path, q, 200);
    n = history_page(id, "limit=10000", steps2, losses2, CAP, &next);
    ck_assert_int_eq(n, 2500);
    ck_assert_int_eq(steps2[2499], 2499);
    ck_assert_double_eq(losses2[2499], losses[2499]);

    /* A step after the restore runs step 2500 again: its new row replaces the old one. */
    snprintf(path, sizeof path, "/v1/models/%lld/step", (long long)id);
    char *b = batch_json(4, 3, 17u);
    cJSON *st = it_call("POST", path, b, 200);
    free(b);
    double step_loss = it_num(st, "loss_before");
    cJSON_Delete(st);
    n = history_page(id, "after_step=2497", steps2, losses2, CAP, &next);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(steps2[2], 2500);
    ck_assert_double_eq(losses2[2], step_loss);
    /* The fork kept its own. */
    n = history_page(fork, "after_step=7505", steps2, losses2, CAP, &next);
    ck_assert_int_eq(n, 2);
}
END_TEST

/* Training and POST /loss read the stored rows as they are now (both through the data cache):
 * adding or deleting a batch between calls changes what the next call sees, and the result
 * equals the loss on the same rows sent inline. */
START_TEST(train_sees_batch_changes)
{
    int64_t id = small_model();
    char path[128];
    double before[3];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    cJSON *list = it_call("GET", path, NULL, 200);
    int64_t first = (int64_t)it_num(cJSON_GetArrayItem(get(list, "batches"), 0), "batch_id");
    cJSON_Delete(list);
    for (int round = 0; round < 3; ++round) {
        if (round == 1) {
            snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
            char *b = batch_json(8, 3, 4242u);
            it_call_free("POST", path, b, 201);
            free(b);
        }
        if (round == 2) {
            snprintf(path, sizeof path, "/v1/models/%lld/batches/%lld", (long long)id,
                     (long long)first);
            it_call_free("DELETE", path, NULL, 204);
        }
        cJSON *r = train(id, "{\"steps\":0}");
        before[round] = it_num(r, "loss_before");
        cJSON_Delete(r);
        snprintf(path, sizeof path, "/v1/models/%lld/loss", (long long)id);
        cJSON *l = it_call("POST", path, "{}", 200);
        ck_assert_double_eq(it_num(l, "loss"), before[round]);
        cJSON_Delete(l);
    }
    ck_assert(before[1] != before[0]);
    ck_assert(before[2] != before[1]);
    /* Only the added batch is left: the loss on it sent inline (never cached) agrees. */
    snprintf(path, sizeof path, "/v1/models/%lld/loss", (long long)id);
    char *b = batch_json(8, 3, 4242u);
    cJSON *l = it_call("POST", path, b, 200);
    free(b);
    ck_assert_double_eq(it_num(l, "loss"), before[2]);
    cJSON_Delete(l);
}
END_TEST

/* The next train call starts from the model as it is now, whatever changed it in between: a
 * PUT of parameters, a restore, a /step on an inline batch (the daemon keeps a model's training
 * state between its calls and must notice each of these). */
START_TEST(train_follows_other_writes)
{
    int64_t id = small_model();
    char path[128], body[160];
    snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)id);
    cJSON *p0 = it_call("GET", path, NULL, 200);
    cJSON *r = train(id, "{\"steps\":5}");
    double loss0 = it_num(r, "loss_before"), loss5 = it_num(r, "loss_after");
    cJSON_Delete(r);
    ck_assert(loss5 < loss0);

    /* Back to θ0 by PUT: the next call starts there, not at θ5. */
    cJSON *put = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(put, "parameters", get(p0, "parameters"));
    char *put_text = cJSON_PrintUnformatted(put);
    it_call_free("PUT", path, put_text, 200);
    free(put_text);
    cJSON_Delete(put);
    cJSON_Delete(p0);
    r = train(id, "{\"steps\":3}");
    ck_assert_double_eq(it_num(r, "loss_before"), loss0);
    cJSON_Delete(r);

    /* A restore to a checkpoint taken now, after two more calls. */
    snprintf(path, sizeof path, "/v1/models/%lld/checkpoints", (long long)id);
    cJSON *ck = it_call("POST", path, "{}", 201);
    snprintf(body, sizeof body, "{\"checkpoint_id\":%lld}", (long long)it_num(ck, "checkpoint_id"));
    cJSON_Delete(ck);
    r = train(id, "{\"steps\":0}");
    double at_checkpoint = it_num(r, "loss_before");
    cJSON_Delete(r);
    cJSON_Delete(train(id, "{\"steps\":4}"));
    snprintf(path, sizeof path, "/v1/models/%lld/restore", (long long)id);
    it_call_free("POST", path, body, 200);
    r = train(id, "{\"steps\":0}");
    ck_assert_double_eq(it_num(r, "loss_before"), at_checkpoint);
    cJSON_Delete(r);

    /* A /step on an inline batch moves the model: the next call starts after it. */
    snprintf(path, sizeof path, "/v1/models/%lld/step", (long long)id);
    char *b = batch_json(4, 3, 99u);
    cJSON_Delete(it_call("POST", path, b, 200));
    free(b);
    snprintf(path, sizeof path, "/v1/models/%lld/loss", (long long)id);
    cJSON *l = it_call("POST", path, "{}", 200);
    r = train(id, "{\"steps\":0}");
    ck_assert_double_eq(it_num(r, "loss_before"), it_num(l, "loss"));
    ck_assert(it_num(r, "loss_before") != at_checkpoint);
    cJSON_Delete(r);
    cJSON_Delete(l);
}
END_TEST

START_TEST(divergence)
{
    int64_t id = it_create_model("{\"kind\":\"linear\",\"inputs\":2,"
                              "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":1e6}}");
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    it_call_free("POST", path, "{\"x\":[[100,200],[-300,50],[20,-70]],\"y\":[1,2,3]}", 201);
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    cJSON *r = it_call("POST", path, "{\"steps\":1000}", 200);
    ck_assert_str_eq(get(r, "stopped")->valuestring, "diverged");
    int64_t step = (int64_t)it_num(r, "step");
    ck_assert(step < 1000);
    ck_assert(isfinite(it_num(r, "loss_after")));
    cJSON_Delete(r);
    ck_assert_int_eq(check_consistent(id), step);
}
END_TEST

START_TEST(queries)
{
    int64_t id = small_model();
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%lld/loss", (long long)id);
    cJSON *l = it_call("POST", path, "{}", 200);
    ck_assert_int_eq((int64_t)it_num(l, "rows"), 32);
    ck_assert_ptr_null(get(l, "accuracy"));
    cJSON_Delete(l);
    expect_error("POST", path, "{\"x\":[[1,2,3]]}", 400, "invalid_argument");
    expect_error("POST", path, "{\"x\":[[1,2]],\"y\":[1]}", 400, "invalid_argument");
    expect_error("POST", path, "{\"x\":[[1,2,3]],\"y\":[1],\"z\":1}", 400, "invalid_argument");
    expect_error("POST", path, "{\"x\":", 400, "invalid_json");
    snprintf(path, sizeof path, "/v1/models/%lld/gradcheck", (long long)id);
    cJSON *g = it_call("POST", path, "{\"epsilon\":1e-5}", 200);
    ck_assert(cJSON_IsTrue(get(g, "ok")));
    cJSON_Delete(g);
    snprintf(path, sizeof path, "/v1/models/%lld/gradients", (long long)id);
    cJSON *before = it_call("POST", path, "{}", 200);
    cJSON *after = it_call("POST", path, "{}", 200);
    ck_assert(it_num(before, "norm") == it_num(after, "norm"));   /* gradcheck left it unchanged */
    cJSON_Delete(before);
    cJSON_Delete(after);

    /* A classifier's loss adds accuracy and errors. */
    int64_t c = it_create_model("{\"kind\":\"logistic\",\"inputs\":1,"
                             "\"parameters\":{\"W1\":[[0,1]]}}");
    snprintf(path, sizeof path, "/v1/models/%lld/loss", (long long)c);
    l = it_call("POST", path, "{\"x\":[[1],[-1],[2],[3]],\"y\":[1,0,0,1]}", 200);
    ck_assert(it_num(l, "accuracy") == 0.75);
    ck_assert_int_eq((int64_t)it_num(l, "errors"), 1);
    cJSON_Delete(l);
    expect_error("POST", path, "{\"x\":[[1]],\"y\":[2]}", 400, "invalid_argument");
    snprintf(path, sizeof path, "/v1/models/%lld/step", (long long)c);
    expect_error("POST", path, "{\"x\":[[1]],\"y\":[0.5]}", 400, "invalid_argument");
    expect_error("POST", path, "{\"x\":[[1]],\"y\":[1],\"learning_rate\":-1}", 400,
                 "invalid_argument");
    ck_assert_int_eq(model_step(c), 0);
    snprintf(path, sizeof path, "/v1/models/%lld/boundary", (long long)c);
    it_call_free("GET", path, NULL, 200);
    int64_t s = it_create_model("{\"kind\":\"softmax\",\"inputs\":2,\"classes\":3}");
    snprintf(path, sizeof path, "/v1/models/%lld/boundary", (long long)s);
    expect_error("GET", path, NULL, 400, "invalid_argument");
    snprintf(path, sizeof path, "/v1/models/%lld/predict", (long long)s);
    cJSON *p = it_call("POST", path, "{\"x\":[[1,2],[3,4]]}", 200);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(get(p, "outputs"), 0)), 3);
    ck_assert_int_eq(cJSON_GetArraySize(get(p, "classes")), 2);
    ck_assert_ptr_null(get(p, "margins"));
    cJSON_Delete(p);
    expect_error("POST", "/v1/models/999/predict", "{\"x\":[[1]]}", 404, "not_found");
}
END_TEST

/* ---- crash and restart ----------------------------------------------------------------------- */

/* Wait until job `job` runs on this daemon's replica (a replica that resumed it). */
static void job_wait_resumed(int64_t job, int timeout_ms)
{
    cJSON *h = it_call("GET", "/healthz", NULL, 200);
    int64_t self = (int64_t)it_num(h, "replica");
    cJSON_Delete(h);
    for (int waited = 0;; waited += 50) {
        cJSON *j = job_get(job);
        const cJSON *r = get(j, "replica");
        int here = strcmp(get(j, "status")->valuestring, "running") == 0 && cJSON_IsNumber(r) &&
                   (int64_t)r->valuedouble == self;
        cJSON_Delete(j);
        if (here)
            return;
        ck_assert_msg(waited < timeout_ms, "job %lld not resumed in %d ms", (long long)job,
                      timeout_ms);
        it_sleep_ms(50);
    }
}


START_TEST(crash_during_job)
{
    int64_t id = slow_model();
    int64_t job = submit(id, "{\"steps\":100000000,\"async\":true}", 202);
    job_wait_progress(job);
    it_sleep_ms(300);
    it_kill9(&d);
    ck_assert_int_eq(it_start_again(&d), 0);

    cJSON *j = job_get(job);
    if (it_backend_pg()) {
        /* Replicas: the new one resumes the dead one's job once its lease ran out (3 s). */
        job_wait_resumed(job, 20000);
        cancel_and_wait(job);
    } else {
        ck_assert_str_eq(get(j, "status")->valuestring, "failed");
        ck_assert_str_eq(get(j, "error")->valuestring, "interrupted");
        cJSON_Delete(j);
        j = it_call("GET", "/v1/jobs?status=failed", NULL, 200);
        ck_assert_int_eq(cJSON_GetArraySize(get(j, "jobs")), 1);
    }
    cJSON_Delete(j);
    int64_t step = check_consistent(id);
    ck_assert(step > 0);

    /* Training continues from the committed step. */
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    cJSON *r = it_call("POST", path, "{\"steps\":3}", 200);
    ck_assert_int_eq((int64_t)it_num(r, "step"), step + 3);
    cJSON_Delete(r);
    ck_assert_int_eq(check_consistent(id), step + 3);

    /* A clean restart keeps everything. */
    snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)id);
    cJSON *p1 = it_call("GET", path, NULL, 200);
    int64_t n1 = 0, n2 = 0;
    int64_t last1 = last_history_step(id, &n1);
    ck_assert_int_eq(it_restart(&d), 0);
    cJSON *p2 = it_call("GET", path, NULL, 200);
    ck_assert_int_eq(last_history_step(id, &n2), last1);
    ck_assert_int_eq(n1, n2);
    char *t1 = cJSON_PrintUnformatted(p1), *t2 = cJSON_PrintUnformatted(p2);
    ck_assert_str_eq(t1, t2);
    free(t1);
    free(t2);
    cJSON_Delete(p1);
    cJSON_Delete(p2);
    ck_assert_int_eq(check_consistent(id), step + 3);
}
END_TEST

START_TEST(sigterm_during_job)
{
    int64_t id = slow_model();
    int64_t job = submit(id, "{\"steps\":100000000,\"async\":true}", 202);
    job_wait_progress(job);
    ck_assert_int_eq(it_stop(&d), 0);          /* the job stops at a step boundary */
    if (it_backend_pg()) {
        /* Replicas: back in the queue for any replica to resume: the next start takes it at
         * once, without waiting for a lease. */
        ck_assert_int_eq(it_start_again(&d), 0);
        job_wait_resumed(job, 2000);
        cJSON *j = job_get(job);
        ck_assert_ptr_null(get(j, "result"));
        cJSON_Delete(j);
        cancel_and_wait(job);
        check_consistent(id);
        return;
    }
    ck_assert_int_eq(it_start_again(&d), 0);
    cJSON *j = job_get(job);
    ck_assert_str_eq(get(j, "status")->valuestring, "failed");
    ck_assert_str_eq(get(j, "error")->valuestring, "interrupted");
    int64_t step = (int64_t)it_num(get(j, "result"), "step");
    cJSON_Delete(j);
    ck_assert_int_eq(check_consistent(id), step);
}
END_TEST

/* ---- concurrency ----------------------------------------------------------------------------- */

#define N_CLIENTS 16

typedef struct client {
    int idx;
    int64_t model;
    int failures;
    int server_errors;
    char msg[256];
} client_t;

static size_t sink(char *ptr, size_t size, size_t n, void *ud)
{
    (void)ptr;
    (void)ud;
    return size * n;
}

static long http(CURL *c, const char *method, const char *path, const char *body)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", it_base_url(), path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    return status;
}

static client_t clients[N_CLIENTS];

static void *client_main(void *arg)
{
    client_t *cl = arg;
    CURL *c = curl_easy_init();
    char path[128];
    for (int round = 0; round < 10; ++round) {
        snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)cl->model);
        long st = http(c, "POST", path, "{\"steps\":20}");
        if (st != 200) {
            cl->failures++;
            snprintf(cl->msg, sizeof cl->msg, "train: %ld", st);
        }
        if (st >= 500)
            cl->server_errors++;
        /* Read someone else's model while it trains. */
        int64_t other = clients[(cl->idx + 1 + round) % N_CLIENTS].model;
        snprintf(path, sizeof path, "/v1/models/%lld/predict", (long long)other);
        st = http(c, "POST", path, "{\"x\":[[0.1,0.2,0.3]]}");
        if (st != 200) {
            cl->failures++;
            snprintf(cl->msg, sizeof cl->msg, "predict: %ld", st);
        }
        snprintf(path, sizeof path, "/v1/models/%lld/history?max_points=10", (long long)other);
        st = http(c, "GET", path, NULL);
        if (st != 200) {
            cl->failures++;
            snprintf(cl->msg, sizeof cl->msg, "history: %ld", st);
        }
        if (st >= 500)
            cl->server_errors++;
    }
    curl_easy_cleanup(c);
    return NULL;
}

START_TEST(concurrent_clients)
{
    for (int i = 0; i < N_CLIENTS; ++i) {
        clients[i] = (client_t){.idx = i};
        clients[i].model = small_model();
    }
    pthread_t t[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; ++i)
        ck_assert_int_eq(pthread_create(&t[i], NULL, client_main, &clients[i]), 0);
    for (int i = 0; i < N_CLIENTS; ++i)
        pthread_join(t[i], NULL);
    for (int i = 0; i < N_CLIENTS; ++i) {
        ck_assert_msg(clients[i].failures == 0, "client %d: %d failures (%s)", i,
                      clients[i].failures, clients[i].msg);
        ck_assert_int_eq(check_consistent(clients[i].model), 200);
    }
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, async_lifecycle);
    tcase_add_test(tc, async_numbers_are_exact);
    tcase_add_test(tc, request_bounds_up_front);
    tcase_add_test(tc, cancel_and_conflicts);
    tcase_add_test(tc, cancel_lbfgs_job);
    tcase_add_test(tc, sse_events);
    tcase_add_test(tc, history_paging);
    tcase_add_test(tc, history_long_runs);
    tcase_add_test(tc, train_sees_batch_changes);
    tcase_add_test(tc, train_follows_other_writes);
    tcase_add_test(tc, divergence);
    tcase_add_test(tc, queries);
    tcase_add_test(tc, crash_during_job);
    tcase_add_test(tc, sigterm_during_job);
    tcase_add_test(tc, concurrent_clients);
    suite_add_tcase(s, tc);
    TCase *tn = tcase_create("no_data_cache");
    tcase_add_checked_fixture(tn, setup_no_data_cache, teardown);
    tcase_set_timeout(tn, 180);
    tcase_add_test(tn, train_sees_batch_changes);
    tcase_add_test(tn, history_paging);
    suite_add_tcase(s, tn);
    TCase *tj = tcase_create("max_jobs");
    tcase_add_checked_fixture(tj, setup_two_jobs, teardown);
    tcase_set_timeout(tj, 180);
    tcase_add_test(tj, too_many_jobs);
    TCase *tq = tcase_create("queue");
    tcase_add_checked_fixture(tq, setup_queue, teardown);
    tcase_set_timeout(tq, 120);
    tcase_add_test(tq, queue_waits_for_a_slot);
    suite_add_tcase(s, tq);
    suite_add_tcase(s, tj);
    return it_run(s);
}
