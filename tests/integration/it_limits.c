/* tests/integration/it_limits.c -- every resource limit end to end: each one exceeded answers the
 * documented status and error code with a message naming its flag, changes nothing, and the
 * daemon stays up; a slowly dripping client does not hold up others and is cut off when idle;
 * connections over --max-connections are refused without harm. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

#define JSON "application/json"

static it_daemon_t d;

static void teardown(void)
{
    it_cleanup(&d);
}

/* ---- helpers --------------------------------------------------------------------------------- */

static void start(const char *const *extra)
{
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One call; returns the parsed answer (NULL when not JSON). */
static cJSON *call(const char *method, const char *path, const char *ctype, const char *body,
                   size_t len, long *status)
{
    it_call_t c = {.method = method, .path = path, .content_type = ctype, .body = body,
                   .len = len};
    it_resp_t r;
    ck_assert_int_eq(it_do(&c, &r), 0);
    *status = r.status;
    cJSON *j = cJSON_Parse(r.body);
    it_resp_free(&r);
    return j;
}

/* An error answer: status, code, field (NULL: not checked) and a message containing `needle`. */
static void expect_limit(const char *method, const char *path, const char *ctype,
                         const char *body, size_t len, long want_status, const char *want_code,
                         const char *want_field, const char *needle)
{
    long status = 0;
    cJSON *j = call(method, path, ctype, body, len, &status);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : strdup("(not JSON)");
    ck_assert_msg(status == want_status, "%s %s: status %ld, want %ld: %s", method, path, status,
                  want_status, text);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
    cJSON *field = cJSON_GetObjectItemCaseSensitive(e, "field");
    ck_assert_msg(cJSON_IsString(code) && strcmp(code->valuestring, want_code) == 0,
                  "%s %s: want code %s: %s", method, path, want_code, text);
    ck_assert_msg(cJSON_IsString(msg) && strstr(msg->valuestring, needle) != NULL,
                  "%s %s: message should name %s: %s", method, path, needle, text);
    if (want_field != NULL)
        ck_assert_msg(cJSON_IsString(field) && strcmp(field->valuestring, want_field) == 0,
                      "%s %s: want field %s: %s", method, path, want_field, text);
    free(text);
    cJSON_Delete(j);
}

static void expect_status(const char *method, const char *path, const char *body, long want)
{
    long status = 0;
    cJSON *j = call(method, path, body != NULL ? JSON : NULL, body, 0, &status);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : strdup("(not JSON)");
    ck_assert_msg(status == want, "%s %s: status %ld, want %ld: %s", method, path, status, want,
                  text);
    free(text);
    cJSON_Delete(j);
}

static void still_up(void)
{
    expect_status("GET", "/healthz", NULL, 200);
}

static int64_t create(const char *spec)
{
    long status = 0;
    cJSON *j = call("POST", "/v1/models", JSON, spec, 0, &status);
    ck_assert_msg(status == 201, "create %s: %ld", spec, status);
    int64_t id = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "id")->valuedouble;
    cJSON_Delete(j);
    return id;
}

/* A number of the model object, e.g. its "rows" or "step". */
static int64_t model_number(int64_t id, const char *key)
{
    char path[64];
    long status = 0;
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    cJSON *j = call("GET", path, NULL, NULL, 0, &status);
    ck_assert_int_eq(status, 200);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    ck_assert_msg(cJSON_IsNumber(v), "model %lld has no number %s", (long long)id, key);
    int64_t n = (int64_t)v->valuedouble;
    cJSON_Delete(j);
    return n;
}

static int64_t model_rows(int64_t id)
{
    return model_number(id, "rows");
}

/* {"x":[[i,i],...],"y":[...]} with n rows of 2 inputs (new). */
static char *batch_json(int n)
{
    size_t cap = 64 + (size_t)n * 40;
    char *s = malloc(cap);
    size_t o = (size_t)snprintf(s, cap, "{\"x\":[");
    for (int i = 0; i < n; ++i)
        o += (size_t)snprintf(s + o, cap - o, "%s[%d,%d]", i ? "," : "", i, i + 1);
    o += (size_t)snprintf(s + o, cap - o, "],\"y\":[");
    for (int i = 0; i < n; ++i)
        o += (size_t)snprintf(s + o, cap - o, "%s%d", i ? "," : "", i);
    snprintf(s + o, cap - o, "]}");
    return s;
}

/* A raw TCP connection to the daemon. */
static int raw_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Wait up to timeout_ms for the peer to close fd (read returns 0 or an error): 1 if it did. */
static int closed_by_peer(int fd, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    char buf[4096];
    while (now_ms() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, 50);
        if (r > 0) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0)
                return 1;                  /* EOF or reset */
        }
    }
    return 0;
}

/* ---- data limits ----------------------------------------------------------------------------- */

START_TEST(body_limit)
{
    const char *extra[] = {"--max-body", "1000", NULL};
    start(extra);
    char *big = batch_json(100);        /* well over 1000 bytes */
    int64_t id = create("{\"kind\":\"linear\",\"inputs\":2}");
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    expect_limit("POST", path, JSON, big, 0, 413, "payload_too_large", NULL, "--max-body");
    /* Chunked, so no Content-Length tells in advance. */
    it_call_t c = {.method = "POST", .path = path, .content_type = JSON, .body = big,
                   .chunked = 1};
    it_resp_t r;
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_int_eq(r.status, 413);
    ck_assert_ptr_nonnull(strstr(r.body, "--max-body"));
    it_resp_free(&r);
    free(big);
    ck_assert_int_eq(model_rows(id), 0);
    still_up();
}
END_TEST

START_TEST(batch_rows_limit)
{
    const char *extra[] = {"--max-batch-rows", "5", NULL};
    start(extra);
    int64_t id = create("{\"kind\":\"linear\",\"inputs\":2}");
    char path[96];
    char *six = batch_json(6), *five = batch_json(5);
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    expect_limit("POST", path, JSON, six, 0, 400, "invalid_argument", "x", "--max-batch-rows");
    expect_limit("POST", path, "text/csv", "1,2,3\n1,2,3\n1,2,3\n1,2,3\n1,2,3\n1,2,3\n", 0, 400,
                 "invalid_argument", "line 6", "--max-batch-rows");
    /* Raw float64: 6 rows x 3 columns. */
    double raw[18] = {0};
    char rpath[128];
    snprintf(rpath, sizeof rpath, "/v1/models/%lld/batches?rows=6&cols=3", (long long)id);
    expect_limit("POST", rpath, "application/octet-stream", (const char *)raw, sizeof raw, 400,
                 "invalid_argument", "rows", "--max-batch-rows");
    ck_assert_int_eq(model_rows(id), 0);
    /* Inline rows of the query and step routes too. */
    snprintf(path, sizeof path, "/v1/models/%lld/loss", (long long)id);
    expect_limit("POST", path, JSON, six, 0, 400, "invalid_argument", "x", "--max-batch-rows");
    snprintf(path, sizeof path, "/v1/models/%lld/step", (long long)id);
    expect_limit("POST", path, JSON, six, 0, 400, "invalid_argument", "x", "--max-batch-rows");
    snprintf(path, sizeof path, "/v1/models/%lld/predict", (long long)id);
    expect_limit("POST", path, JSON, "{\"x\":[[1,2],[1,2],[1,2],[1,2],[1,2],[1,2]]}", 0, 400,
                 "invalid_argument", "x", "--max-batch-rows");
    /* At the limit: fine. */
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    expect_status("POST", path, five, 201);
    ck_assert_int_eq(model_rows(id), 5);
    free(six);
    free(five);
    still_up();
}
END_TEST

START_TEST(model_rows_limit)
{
    const char *extra[] = {"--max-model-rows", "10", NULL};
    start(extra);
    int64_t id = create("{\"kind\":\"linear\",\"inputs\":2}");
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    char *six = batch_json(6), *four = batch_json(4);
    expect_status("POST", path, six, 201);
    expect_limit("POST", path, JSON, six, 0, 400, "invalid_argument", "x", "--max-model-rows");
    expect_limit("POST", path, "text/csv", "1,2,3\n1,2,3\n1,2,3\n1,2,3\n1,2,3\n", 0, 400,
                 "invalid_argument", "x", "--max-model-rows");
    ck_assert_int_eq(model_rows(id), 6);
    expect_status("POST", path, four, 201);             /* exactly 10 */
    ck_assert_int_eq(model_rows(id), 10);
    expect_limit("POST", path, JSON, "{\"x\":[[1,2]],\"y\":[1]}", 0, 400, "invalid_argument",
                 "x", "--max-model-rows");
    /* Deleting a batch makes room again. */
    snprintf(path, sizeof path, "/v1/models/%lld/batches/1", (long long)id);
    expect_status("DELETE", path, NULL, 204);
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    expect_status("POST", path, six, 201);
    free(six);
    free(four);
    still_up();
}
END_TEST

START_TEST(params_limit)
{
    const char *extra[] = {"--max-params", "1000", NULL};
    start(extra);
    expect_limit("POST", "/v1/models", JSON, "{\"kind\":\"linear\",\"inputs\":1000}", 0, 400,
                 "invalid_argument", NULL, "--max-params");
    expect_limit("POST", "/v1/models", JSON,
                 "{\"kind\":\"mlp\",\"inputs\":10,\"hidden\":[{\"units\":50},{\"units\":50}]}", 0,
                 400, "invalid_argument", NULL, "--max-params");
    create("{\"kind\":\"mlp\",\"inputs\":10,\"hidden\":[{\"units\":20}]}");   /* 241 */
    /* Optimizer state counts: lbfgs keeps 2 x history vectors, so history x parameters must be
     * within --max-params (100 parameters: history 10 fits, 11 does not). */
    expect_limit("POST", "/v1/models", JSON,
                 "{\"kind\":\"linear\",\"inputs\":99,"
                 "\"optimizer\":{\"method\":\"lbfgs\",\"history\":11}}", 0,
                 400, "invalid_argument", "optimizer.history", "--max-params");
    create("{\"kind\":\"linear\",\"inputs\":99,"
           "\"optimizer\":{\"method\":\"lbfgs\",\"history\":10}}");
    /* The dimension at fault is named. */
    expect_limit("POST", "/v1/models", JSON, "{\"kind\":\"softmax\",\"inputs\":2,\"classes\":5000}",
                 0, 400, "invalid_argument", "classes", "--max-params");
    expect_limit("POST", "/v1/models", JSON,
                 "{\"kind\":\"mlp\",\"inputs\":2,\"hidden\":[{\"units\":3},{\"units\":900}]}",
                 0, 400, "invalid_argument", "hidden[1].units", "--max-params");
    /* A graph model: a param without a value is zeros of any shape -- counted before building. */
    const char *graph_model =
        "{\"kind\":\"graph\",\"graph\":{\"nodes\":["
        "{\"id\":\"x\",\"op\":\"input\",\"shape\":[null,2]},"
        "{\"id\":\"y\",\"op\":\"input\",\"shape\":[null,1]},"
        "{\"id\":\"W\",\"op\":\"param\",\"shape\":[%d,%d]},"
        "{\"id\":\"xb\",\"op\":\"bias\",\"inputs\":[\"x\"]},"
        "{\"id\":\"o\",\"op\":\"matmul\",\"inputs\":[\"xb\",\"W\"],\"transpose_b\":true},"
        "{\"id\":\"L\",\"op\":\"l2_loss\",\"inputs\":[\"o\",\"y\"]}],\"output\":\"L\"}}";
    char spec[1024];
    snprintf(spec, sizeof spec, graph_model, 1, 3);
    create(spec);
    snprintf(spec, sizeof spec, graph_model, 40000, 40000);
    expect_limit("POST", "/v1/models", JSON, spec, 0, 400, "invalid_argument",
                 "graph.nodes[2].shape", "--max-params");
    /* Batch-independent values computed from constants: an outer product of a 1x200 const. */
    char c200[2048];
    size_t o = 0;
    for (int i = 0; i < 200; ++i)
        o += (size_t)snprintf(c200 + o, sizeof c200 - o, "%s%d", i ? "," : "", i);
    char outer[4096];
    snprintf(outer, sizeof outer,
             "{\"kind\":\"graph\",\"graph\":{\"nodes\":["
             "{\"id\":\"x\",\"op\":\"input\",\"shape\":[null,2]},"
             "{\"id\":\"y\",\"op\":\"input\",\"shape\":[null,1]},"
             "{\"id\":\"W\",\"op\":\"param\",\"shape\":[1,3]},"
             "{\"id\":\"xb\",\"op\":\"bias\",\"inputs\":[\"x\"]},"
             "{\"id\":\"o\",\"op\":\"matmul\",\"inputs\":[\"xb\",\"W\"],\"transpose_b\":true},"
             "{\"id\":\"L\",\"op\":\"l2_loss\",\"inputs\":[\"o\",\"y\"]},"
             "{\"id\":\"c\",\"op\":\"const\",\"shape\":[1,200],\"value\":[[%s]]},"
             "{\"id\":\"ct\",\"op\":\"transpose\",\"inputs\":[\"c\"]},"
             "{\"id\":\"big\",\"op\":\"matmul\",\"inputs\":[\"ct\",\"c\"]}],\"output\":\"L\"}}",
             c200);
    expect_limit("POST", "/v1/models", JSON, outer, 0, 400, "invalid_argument", "graph.nodes[8]",
                 "--max-params");
    still_up();
}
END_TEST

/* A value over the database's length limit fails its bind: the answer is 413, never a 500
 * (once "NOT NULL constraint failed" from the NULL a failed bind leaves), and nothing of the
 * model is stored. The limit is lowered to 100 kB so the test writes little. */
START_TEST(value_over_storage_limit)
{
    setenv("NEUROND_SQLITE_MAX_LENGTH", "100000", 1);
    start(NULL);
    unsetenv("NEUROND_SQLITE_MAX_LENGTH");
    char *before = NULL;
    {
        long status = 0;
        cJSON *j = call("GET", "/v1/models", NULL, NULL, 0, &status);
        before = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
    }
    /* 100 parameters and history 100: 20 103 doubles of lbfgs state, 160 kB. */
    const char *spec = "{\"kind\":\"linear\",\"inputs\":99,"
                       "\"optimizer\":{\"method\":\"lbfgs\",\"history\":100}}";
    expect_limit("POST", "/v1/models", JSON, spec, 0, 413, "payload_too_large", NULL,
                 "too large");
    long status = 0;
    cJSON *j = call("GET", "/v1/models", NULL, NULL, 0, &status);
    char *after = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    create("{\"kind\":\"linear\",\"inputs\":99,"
           "\"optimizer\":{\"method\":\"lbfgs\",\"history\":10}}");   /* 16 kB */
    still_up();
}
END_TEST

START_TEST(graph_eval_memory_limits)
{
    start(NULL);   /* defaults: --max-params 50000000 */
    /* A tiny request asking for 1.6e9 zeros, and one for 1e10 (over any tensor). */
    expect_limit("POST", "/v1/graphs/eval", JSON,
                 "{\"graph\":{\"nodes\":[{\"id\":\"W\",\"op\":\"param\",\"shape\":[40000,40000]},"
                 "{\"id\":\"s\",\"op\":\"sum\",\"inputs\":[\"W\"]}],\"output\":\"s\"}}",
                 0, 400, "invalid_argument", "graph.nodes[0].shape", "--max-params");
    expect_limit("POST", "/v1/graphs/eval", JSON,
                 "{\"graph\":{\"nodes\":[{\"id\":\"W\",\"op\":\"param\",\"shape\":[100000,100000]},"
                 "{\"id\":\"s\",\"op\":\"sum\",\"inputs\":[\"W\"]}],\"output\":\"s\"}}",
                 0, 400, "invalid_argument", "graph.nodes[0].shape", "elements");
    still_up();
    it_cleanup(&d);

    const char *extra[] = {"--max-params", "100000", NULL};
    start(extra);
    /* Intermediate results count too: the outer product of a 1x2000 row is 4e6 values. */
    char *body = malloc(64000);
    size_t o = (size_t)snprintf(body, 64000,
                                "{\"graph\":{\"nodes\":["
                                "{\"id\":\"c\",\"op\":\"input\",\"shape\":[1,2000]},"
                                "{\"id\":\"ct\",\"op\":\"transpose\",\"inputs\":[\"c\"]},"
                                "{\"id\":\"big\",\"op\":\"matmul\",\"inputs\":[\"ct\",\"c\"]},"
                                "{\"id\":\"s\",\"op\":\"sum\",\"inputs\":[\"big\"]}],"
                                "\"output\":\"s\"},\"inputs\":{\"c\":[[");
    for (int i = 0; i < 2000; ++i)
        o += (size_t)snprintf(body + o, 64000 - o, "%s1", i ? "," : "");
    snprintf(body + o, 64000 - o, "]]}}");
    expect_limit("POST", "/v1/graphs/eval", JSON, body, 0, 400, "invalid_argument",
                 "graph.nodes[2]", "--max-params");
    /* ... also when the size comes from the rows bound at evaluation. */
    o = (size_t)snprintf(body, 64000,
                         "{\"graph\":{\"nodes\":["
                         "{\"id\":\"x\",\"op\":\"input\",\"shape\":[null,1]},"
                         "{\"id\":\"xt\",\"op\":\"transpose\",\"inputs\":[\"x\"]},"
                         "{\"id\":\"big\",\"op\":\"matmul\",\"inputs\":[\"x\",\"xt\"]},"
                         "{\"id\":\"s\",\"op\":\"sum\",\"inputs\":[\"big\"]}],"
                         "\"output\":\"s\"},\"inputs\":{\"x\":[");
    for (int i = 0; i < 2000; ++i)
        o += (size_t)snprintf(body + o, 64000 - o, "%s[1]", i ? "," : "");
    snprintf(body + o, 64000 - o, "]}}");
    expect_limit("POST", "/v1/graphs/eval", JSON, body, 0, 400, "invalid_argument",
                 "graph.nodes[2]", "--max-params");
    free(body);
    /* Small ones still work. */
    expect_status("POST", "/v1/graphs/eval",
                  "{\"graph\":{\"nodes\":[{\"id\":\"W\",\"op\":\"param\",\"shape\":[2,2]},"
                  "{\"id\":\"s\",\"op\":\"sum\",\"inputs\":[\"W\"]}],\"output\":\"s\"}}",
                  200);
    still_up();
}
END_TEST

/* "/v1/models/{id}/<suffix>", in a buffer of its own until the next call. */
static const char *at(int64_t id, const char *suffix)
{
    static char path[128];
    snprintf(path, sizeof path, "/v1/models/%lld/%s", (long long)id, suffix);
    return path;
}

/* The error of a request over --max-work-values, with `field`; returns the "at most N rows fit"
 * of its message, which the caller then proves right (N rows work, N + 1 do not). */
static int work_limit_fit(const char *path, const char *body, const char *want_field)
{
    long status = 0;
    cJSON *j = call("POST", path, JSON, body, 0, &status);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : strdup("(not JSON)");
    ck_assert_msg(status == 400, "%s: status %ld, want 400: %s", path, status, text);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "code"));
    const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "message"));
    const char *field = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "field"));
    ck_assert_msg(code != NULL && strcmp(code, "invalid_argument") == 0, "%s: %s", path, text);
    ck_assert_msg(field != NULL && strcmp(field, want_field) == 0, "%s: want field %s: %s", path,
                  want_field, text);
    ck_assert_msg(msg != NULL && strstr(msg, "--max-work-values") != NULL, "%s: %s", path, text);
    const char *at = msg != NULL ? strstr(msg, "at most ") : NULL;
    ck_assert_msg(at != NULL, "%s: no largest row count: %s", path, text);
    int fit = atoi(at + strlen("at most "));
    free(text);
    cJSON_Delete(j);
    return fit;
}

/* {"x":[[i,-i],...]} with n rows of 2 inputs: a predict body (new). */
static char *predict_json(int n)
{
    size_t cap = 64 + (size_t)n * 40;
    char *s = malloc(cap);
    size_t o = (size_t)snprintf(s, cap, "{\"x\":[");
    for (int i = 0; i < n; ++i)
        o += (size_t)snprintf(s + o, cap - o, "%s[%d,%d]", i ? "," : "", i % 7, -(i % 5));
    snprintf(s + o, cap - o, "]}");
    return s;
}

/* Predict of `rows` rows fails naming x at most N fit, N rows answer, N + 1 fail again. */
static int predict_work_bound(int64_t id, int rows)
{
    const char *path = at(id, "predict");
    char *over = predict_json(rows);
    int fit = work_limit_fit(path, over, "x");
    free(over);
    ck_assert_int_ge(fit, 1);
    ck_assert_int_lt(fit, rows);
    char *just = predict_json(fit), *past = predict_json(fit + 1);
    long status = 0;
    cJSON *j = call("POST", path, JSON, just, 0, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "outputs")), fit);
    cJSON_Delete(j);
    ck_assert_int_eq(work_limit_fit(path, past, "x"), fit);
    free(just);
    free(past);
    return fit;
}

/* Rows x the working values of every intermediate (and gradient) stay within --max-work-values
 * on every evaluation: a wide hidden layer or many outputs turn a small body into a large
 * computation, refused before it allocates. */
START_TEST(work_values_limit)
{
    const char *extra[] = {"--max-work-values", "40000", NULL};
    start(extra);
    /* An mlp with a wide hidden layer: ~1000 values a row, so about 40 rows fit. */
    int64_t mlp = create("{\"kind\":\"mlp\",\"inputs\":2,\"hidden\":[{\"units\":240}]}");
    int fit = predict_work_bound(mlp, 400);
    ck_assert_int_gt(fit, 10);
    /* A linear model with many outputs: the same rule, its own bound. */
    int64_t lin = create("{\"kind\":\"linear\",\"inputs\":2,\"outputs\":100}");
    predict_work_bound(lin, 400);

    /* Training on stored rows: every call evaluates the loss on all of them at once (its
     * loss_after), so those rows, whatever the batch, must fit; the message says how many do.
     * Nothing changes on a refusal. */
    char body[96];
    char *rows = batch_json(400), *fitting = batch_json(fit), *one = batch_json(1);
    expect_status("POST", at(mlp, "batches"), rows, 201);
    ck_assert_int_eq(work_limit_fit(at(mlp, "train"), "{\"steps\":2}", "batch_size"), fit);
    snprintf(body, sizeof body, "{\"steps\":2,\"batch_size\":%d}", fit);
    ck_assert_int_eq(work_limit_fit(at(mlp, "train"), body, "batch_size"), fit);
    /* An async call is refused the same way, before it is queued. */
    ck_assert_int_eq(work_limit_fit(at(mlp, "train"), "{\"steps\":2,\"async\":true}",
                                    "batch_size"), fit);
    ck_assert_int_eq(model_number(mlp, "step"), 0);
    /* Inline rows of /step, and the stored rows of the queries. */
    ck_assert_int_eq(work_limit_fit(at(mlp, "step"), rows, "x"), fit);
    ck_assert_int_eq(work_limit_fit(at(mlp, "loss"), rows, "x"), fit);
    ck_assert_int_eq(work_limit_fit(at(mlp, "loss"), "{}", "split"), fit);
    ck_assert_int_eq(work_limit_fit(at(mlp, "evaluate"), "{}", "split"), fit);
    ck_assert_int_eq(work_limit_fit(at(mlp, "gradients"), "{}", "split"), fit);
    ck_assert_int_eq(model_number(mlp, "step"), 0);
    ck_assert_int_eq(model_rows(mlp), 400);
    /* Just under the limit: exactly `fit` stored rows train, in mini-batches too; one more row
     * is refused again. */
    expect_status("DELETE", at(mlp, "batches/1"), NULL, 204);
    expect_status("POST", at(mlp, "batches"), fitting, 201);
    expect_status("POST", at(mlp, "train"), "{\"steps\":2}", 200);
    snprintf(body, sizeof body, "{\"steps\":2,\"batch_size\":%d}", fit / 2);
    expect_status("POST", at(mlp, "train"), body, 200);
    ck_assert_int_eq(model_number(mlp, "step"), 4);
    expect_status("POST", at(mlp, "loss"), "{}", 200);
    expect_status("POST", at(mlp, "batches"), one, 201);
    ck_assert_int_eq(work_limit_fit(at(mlp, "train"), "{\"steps\":2}", "batch_size"), fit);
    ck_assert_int_eq(model_number(mlp, "step"), 4);
    free(fitting);
    free(one);
    free(rows);
    still_up();
}
END_TEST

START_TEST(layers_units_limits)
{
    const char *extra[] = {"--max-layers", "2", "--max-units", "50", NULL};
    start(extra);
    expect_limit("POST", "/v1/models", JSON,
                 "{\"kind\":\"mlp\",\"inputs\":2,\"hidden\":[{\"units\":2},{\"units\":2},"
                 "{\"units\":2}]}",
                 0, 400, "invalid_argument", "hidden", "--max-layers");
    create("{\"kind\":\"mlp\",\"inputs\":2,\"hidden\":[{\"units\":2},{\"units\":2}]}");
    expect_limit("POST", "/v1/models", JSON, "{\"kind\":\"linear\",\"inputs\":51}", 0, 400,
                 "invalid_argument", "inputs", "--max-units");
    expect_limit("POST", "/v1/models", JSON, "{\"kind\":\"linear\",\"inputs\":2,\"outputs\":51}",
                 0, 400, "invalid_argument", "outputs", "--max-units");
    expect_limit("POST", "/v1/models", JSON, "{\"kind\":\"softmax\",\"inputs\":2,\"classes\":51}",
                 0, 400, "invalid_argument", "classes", "--max-units");
    expect_limit("POST", "/v1/models", JSON,
                 "{\"kind\":\"mlp\",\"inputs\":2,\"hidden\":[{\"units\":2},{\"units\":51}]}", 0,
                 400, "invalid_argument", "hidden[1].units", "--max-units");
    /* A graph model's inputs come from its x node. */
    expect_limit("POST", "/v1/models", JSON,
                 "{\"kind\":\"graph\",\"graph\":{\"nodes\":["
                 "{\"id\":\"x\",\"op\":\"input\",\"shape\":[null,60]},"
                 "{\"id\":\"y\",\"op\":\"input\",\"shape\":[null,1]},"
                 "{\"id\":\"W\",\"op\":\"param\",\"shape\":[1,61]},"
                 "{\"id\":\"xb\",\"op\":\"bias\",\"inputs\":[\"x\"]},"
                 "{\"id\":\"o\",\"op\":\"matmul\",\"inputs\":[\"xb\",\"W\"],\"transpose_b\":true},"
                 "{\"id\":\"L\",\"op\":\"l2_loss\",\"inputs\":[\"o\",\"y\"]}],\"output\":\"L\"}}",
                 0, 400, "invalid_argument", "inputs", "--max-units");
    /* Import checks the same limits. */
    expect_limit("POST", "/v1/models/import", JSON,
                 "{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
                 "\"inputs\":51},\"parameters\":{}}",
                 0, 400, "invalid_argument", "spec.inputs", "--max-units");
    still_up();
    it_cleanup(&d);

    /* The library's own ceiling (64 hidden layers) holds with the default flag. */
    start(NULL);
    char spec[4096];
    size_t o = (size_t)snprintf(spec, sizeof spec, "{\"kind\":\"mlp\",\"inputs\":2,\"hidden\":[");
    for (int i = 0; i < 65; ++i)
        o += (size_t)snprintf(spec + o, sizeof spec - o, "%s{\"units\":1}", i ? "," : "");
    snprintf(spec + o, sizeof spec - o, "]}");
    expect_limit("POST", "/v1/models", JSON, spec, 0, 400, "invalid_argument", "hidden", "64");
    still_up();
}
END_TEST

START_TEST(graph_nodes_limit)
{
    const char *extra[] = {"--max-graph-nodes", "3", NULL};
    start(extra);
    expect_limit("POST", "/v1/graphs/eval", JSON,
                 "{\"graph\":{\"nodes\":[{\"id\":\"a\",\"op\":\"param\",\"shape\":[]},"
                 "{\"id\":\"b\",\"op\":\"neg\",\"inputs\":[\"a\"]},"
                 "{\"id\":\"c\",\"op\":\"neg\",\"inputs\":[\"b\"]},"
                 "{\"id\":\"d\",\"op\":\"neg\",\"inputs\":[\"c\"]}],\"output\":\"d\"}}",
                 0, 400, "invalid_argument", "graph.nodes", "--max-graph-nodes");
    expect_status("POST", "/v1/graphs/eval",
                  "{\"graph\":{\"nodes\":[{\"id\":\"a\",\"op\":\"param\",\"shape\":[]},"
                  "{\"id\":\"b\",\"op\":\"neg\",\"inputs\":[\"a\"]},"
                  "{\"id\":\"c\",\"op\":\"neg\",\"inputs\":[\"b\"]}],\"output\":\"c\"}}",
                  200);
    expect_limit("POST", "/v1/models", JSON,
                 "{\"kind\":\"graph\",\"graph\":{\"nodes\":["
                 "{\"id\":\"x\",\"op\":\"input\",\"shape\":[null,2]},"
                 "{\"id\":\"y\",\"op\":\"input\",\"shape\":[null,1]},"
                 "{\"id\":\"W\",\"op\":\"param\",\"shape\":[1,3]},"
                 "{\"id\":\"xb\",\"op\":\"bias\",\"inputs\":[\"x\"]},"
                 "{\"id\":\"o\",\"op\":\"matmul\",\"inputs\":[\"xb\",\"W\"],\"transpose_b\":true},"
                 "{\"id\":\"L\",\"op\":\"l2_loss\",\"inputs\":[\"o\",\"y\"]}],\"output\":\"L\"}}",
                 0, 400, "invalid_argument", "graph.nodes", "--max-graph-nodes");
    still_up();
}
END_TEST

START_TEST(depth_limit)
{
    const char *extra[] = {"--max-depth", "5", NULL};
    start(extra);
    /* {"x":[[[[[1]]]]]} nests 6 deep. */
    expect_limit("POST", "/v1/models", JSON, "{\"x\":[[[[[1]]]]]}", 0, 400, "invalid_json", NULL,
                 "--max-depth");
    expect_limit("POST", "/v1/graphs/eval", JSON, "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]", 0,
                 400, "invalid_json", NULL, "--max-depth");
    /* Five deep is fine as JSON (and then judged as a spec). */
    expect_limit("POST", "/v1/models", JSON, "{\"x\":[[[[1]]]]}", 0, 400, "invalid_argument",
                 "x", "unknown field");
    still_up();
    it_cleanup(&d);

    /* Default 64: 65 levels are refused, long before cJSON's own recursion limit. */
    start(NULL);
    char deep[200];
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = '\0';
    expect_limit("POST", "/v1/models", JSON, deep, 0, 400, "invalid_json", NULL, "--max-depth");
    still_up();
}
END_TEST

START_TEST(jobs_limit)
{
    const char *extra[] = {"--max-jobs", "1", "--max-queue", "0", "--threads", "4", NULL};
    start(extra);
    int64_t id = create("{\"kind\":\"mlp\",\"inputs\":2,\"hidden\":[{\"units\":32},"
                        "{\"units\":32}],\"optimizer\":{\"learning_rate\":0.0001}}");
    int64_t id2 = create("{\"kind\":\"linear\",\"inputs\":2}");
    char path[96];
    char *rows = batch_json(500);
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    expect_status("POST", path, rows, 201);
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id2);
    expect_status("POST", path, rows, 201);
    free(rows);
    long status = 0;
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    cJSON *j = call("POST", path, JSON, "{\"steps\":100000000,\"async\":true}", 0, &status);
    ck_assert_int_eq(status, 202);
    int64_t job = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "id")->valuedouble;
    cJSON_Delete(j);
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id2);
    expect_limit("POST", path, JSON, "{\"steps\":10,\"async\":true}", 0, 429, "too_many_requests",
                 NULL, "--max-jobs");
    char jpath[64];
    snprintf(jpath, sizeof jpath, "/v1/jobs/%lld", (long long)job);
    expect_status("DELETE", jpath, NULL, 202);
    still_up();
}
END_TEST

/* ---- connections ------------------------------------------------------------------------------ */

typedef struct drip {
    int fd;
    atomic_int stop;
    int sent;
} drip_t;

/* Send a POST body one byte every 100 ms, never finishing it. */
static void *drip_main(void *arg)
{
    drip_t *dr = arg;
    static const char head[] = "POST /v1/models HTTP/1.1\r\nHost: localhost\r\n"
                               "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    if (send(dr->fd, head, sizeof head - 1, MSG_NOSIGNAL) < 0)
        return NULL;
    while (!atomic_load(&dr->stop)) {
        if (send(dr->fd, " ", 1, MSG_NOSIGNAL) != 1)
            break;
        dr->sent++;
        usleep(100000);
    }
    return NULL;
}

START_TEST(slow_drip_does_not_block_others)
{
    /* One worker thread: if a dripping body held it, nothing else could be served. */
    const char *extra[] = {"--threads", "1", "--idle-timeout", "2", NULL};
    start(extra);
    drip_t dr = {.fd = raw_connect()};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, drip_main, &dr), 0);
    usleep(300000);
    int64_t worst = 0;
    for (int i = 0; i < 20; ++i) {
        int64_t t0 = now_ms();
        expect_status("GET", "/healthz", NULL, 200);
        expect_status("POST", "/v1/models", "{\"kind\":\"linear\",\"inputs\":2}", 201);
        int64_t ms = now_ms() - t0;
        if (ms > worst)
            worst = ms;
        usleep(50000);
    }
    ck_assert_msg(worst < 1500, "requests took up to %lld ms while a client dripped",
                  (long long)worst);
    ck_assert_int_ge(dr.sent, 5);          /* the drip really was in progress */
    /* The drip stops; after --idle-timeout the server closes the connection. */
    atomic_store(&dr.stop, 1);
    pthread_join(t, NULL);
    int64_t t0 = now_ms();
    ck_assert_msg(closed_by_peer(dr.fd, 8000), "idle dripping connection was not closed");
    ck_assert_int_ge(now_ms() - t0, 1000);
    close(dr.fd);

    /* A connection that never sends anything is closed as well. */
    int fd = raw_connect();
    ck_assert_msg(closed_by_peer(fd, 8000), "idle connection was not closed");
    close(fd);
    still_up();
}
END_TEST

/* A fresh connection asks for /healthz; 1 when it answered 200. */
static int raw_healthz(void)
{
    int fd = raw_connect();
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                              "Connection: close\r\n\r\n";
    int ok = 0;
    if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof req - 1)) {
        char buf[512] = "";
        size_t used = 0;
        int64_t end = now_ms() + 5000;
        while (now_ms() < end && used < sizeof buf - 1) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (poll(&p, 1, 50) <= 0)
                continue;
            ssize_t n = recv(fd, buf + used, sizeof buf - 1 - used, 0);
            if (n <= 0)
                break;
            used += (size_t)n;
            buf[used] = '\0';
        }
        ok = strncmp(buf, "HTTP/1.1 200", 12) == 0;
    }
    close(fd);
    return ok;
}

START_TEST(connection_limit)
{
    const char *extra[] = {"--max-connections", "4", "--threads", "1", "--idle-timeout", "30",
                           NULL};
    start(extra);
    still_up();                            /* curl's keep-alive connection: 1 of 4 */
    int fds[8];
    for (int i = 0; i < 8; ++i)
        fds[i] = raw_connect();            /* the kernel completes every handshake */
    usleep(300000);
    /* neurond holds at most 3 more; the others are closed at once (or wait in the backlog). */
    int closed = 0;
    for (int i = 0; i < 8; ++i)
        closed += closed_by_peer(fds[i], 100);
    ck_assert_msg(closed == 0 || closed >= 5, "%d of 8 extra connections were refused", closed);
    /* At the limit, the connection it already has keeps working. */
    still_up();
    /* A new one is refused or waits: it never gets an answer while the limit holds. */
    ck_assert_int_eq(raw_healthz(), 0);
    for (int i = 0; i < 8; ++i)
        close(fds[i]);
    usleep(300000);
    /* Slots free again: fresh connections are served. */
    ck_assert(raw_healthz());
    ck_assert(raw_healthz());
    still_up();
    expect_status("GET", "/v1/models", NULL, 200);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("limits");
    TCase *tc = tcase_create("limits");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, body_limit);
    tcase_add_test(tc, batch_rows_limit);
    tcase_add_test(tc, model_rows_limit);
    tcase_add_test(tc, params_limit);
    tcase_add_test(tc, value_over_storage_limit);
    tcase_add_test(tc, graph_eval_memory_limits);
    tcase_add_test(tc, work_values_limit);
    tcase_add_test(tc, layers_units_limits);
    tcase_add_test(tc, graph_nodes_limit);
    tcase_add_test(tc, depth_limit);
    tcase_add_test(tc, jobs_limit);
    tcase_add_test(tc, slow_drip_does_not_block_others);
    tcase_add_test(tc, connection_limit);
    suite_add_tcase(s, tc);
    return it_run(s);
}
