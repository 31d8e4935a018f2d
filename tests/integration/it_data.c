/* tests/integration/it_data.c -- training batches end to end: JSON, CSV and raw float64 bodies,
 * listing and deleting, exact errors for every bad input (nothing of a bad batch is stored), and
 * batches surviving a restart. */
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

#define JSON "application/json"
#define CSV "text/csv"
#define RAW "application/octet-stream"

static it_daemon_t d;

static void setup(void)
{
    ck_assert_msg(it_start(&d, it_exe, NULL) == 0, "daemon did not start");
}

static void teardown(void)
{
    it_cleanup(&d);
}

/* ---- helpers --------------------------------------------------------------------------------- */

static cJSON *call(const char *method, const char *path, const char *ctype, const char *body,
                   size_t len, long *status, char **headers)
{
    it_resp_t r;
    it_call_t c = {.method = method, .path = path, .content_type = ctype, .body = body,
                   .len = len};
    ck_assert_int_eq(it_do(&c, &r), 0);
    *status = r.status;
    cJSON *j = cJSON_Parse(r.body);
    if (headers != NULL) {
        *headers = r.headers;
        r.headers = NULL;
    }
    it_resp_free(&r);
    return j;
}

static void check_error_len(const char *method, const char *path, const char *ctype,
                            const char *body, size_t len, long want_status,
                            const char *want_code, const char *want_field)
{
    long status = 0;
    cJSON *j = call(method, path, ctype, body, len, &status, NULL);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : strdup("(not JSON)");
    const char *shown = body != NULL && len == 0 ? body : "";
    ck_assert_msg(status == want_status, "%s %s %.200s: status %ld, want %ld: %s", method, path,
                  shown, status, want_status, text);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    ck_assert_msg(cJSON_IsObject(e), "no error object: %s", text);
    cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    ck_assert_msg(cJSON_IsString(code) && strcmp(code->valuestring, want_code) == 0,
                  "%s %s %.200s: want code %s: %s", method, path, shown, want_code, text);
    cJSON *field = cJSON_GetObjectItemCaseSensitive(e, "field");
    if (want_field != NULL && want_field[0] == '\0')
        ck_assert_msg(field == NULL, "unexpected field: %s", text);
    else if (want_field != NULL)
        ck_assert_msg(cJSON_IsString(field) && strcmp(field->valuestring, want_field) == 0,
                      "%s %s %.200s: want field '%s': %s", method, path, shown, want_field, text);
    free(text);
    cJSON_Delete(j);
}

static void check_error(const char *method, const char *path, const char *ctype,
                        const char *body, long want_status, const char *want_code,
                        const char *want_field)
{
    check_error_len(method, path, ctype, body, 0, want_status, want_code, want_field);
}

static int64_t create_model(const char *spec)
{
    long status = 0;
    cJSON *j = it_json("POST", "/v1/models", spec, &status);
    ck_assert_int_eq(status, 201);
    int64_t id = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "id")->valuedouble;
    cJSON_Delete(j);
    return id;
}

static char *pathf(const char *fmt, int64_t id)
{
    static char buf[8][256];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], fmt, id);
    return p;
}

/* POST a batch that must be accepted: returns the answer (new); checks rows. */
static cJSON *post_ok(int64_t id, const char *query, const char *ctype, const char *body,
                      size_t len, int64_t rows)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches%s", id, query);
    long status = 0;
    cJSON *j = call("POST", path, ctype, body, len, &status, NULL);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : strdup("(not JSON)");
    ck_assert_msg(status == 201, "POST %s: %ld %s", path, status, text);
    free(text);
    ck_assert_int_eq(cJSON_GetArraySize(j), 3);
    ck_assert_int_eq((int64_t)cJSON_GetObjectItemCaseSensitive(j, "rows")->valuedouble, rows);
    ck_assert(cJSON_GetObjectItemCaseSensitive(j, "batch_id")->valuedouble >= 1);
    return j;
}

static int64_t model_rows(int64_t id)
{
    long status = 0;
    cJSON *j = it_json("GET", pathf("/v1/models/%" PRId64, id), NULL, &status);
    ck_assert_int_eq(status, 200);
    int64_t rows = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "rows")->valuedouble;
    cJSON_Delete(j);
    return rows;
}

static const char *const LINEAR = "{\"kind\":\"linear\",\"inputs\":2}";
/* A graph model whose loss is cce_loss over 3 logits of its y input: labels are class ids. */
static const char *const GRAPH_CCE3 =
    "{\"kind\":\"graph\",\"graph\":{\"nodes\":["
    "{\"id\":\"x\",\"op\":\"input\",\"shape\":[null,2]},"
    "{\"id\":\"y\",\"op\":\"input\",\"shape\":[null,1]},"
    "{\"id\":\"W\",\"op\":\"param\",\"shape\":[3,3]},"
    "{\"id\":\"xb\",\"op\":\"bias\",\"inputs\":[\"x\"]},"
    "{\"id\":\"z\",\"op\":\"matmul\",\"inputs\":[\"xb\",\"W\"],\"transpose_b\":true},"
    "{\"id\":\"L\",\"op\":\"cce_loss\",\"inputs\":[\"z\",\"y\"]}],\"output\":\"L\"}}";

/* ---- JSON ------------------------------------------------------------------------------------ */

START_TEST(json_batches)
{
    int64_t id = create_model(LINEAR);
    cJSON *j = post_ok(id, "", JSON, "{\"x\":[[1,2],[3,4],[5,6]],\"y\":[1,2,3]}", 0, 3);
    int64_t b1 = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "batch_id")->valuedouble;
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "total_rows")->valuedouble, 3);
    cJSON_Delete(j);
    j = post_ok(id, "", JSON, "{\"y\":[[7]],\"x\":[[0.5,-1e-300]]}", 0, 1);
    int64_t b2 = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "batch_id")->valuedouble;
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "total_rows")->valuedouble, 4);
    cJSON_Delete(j);
    ck_assert_int_eq(model_rows(id), 4);

    long status = 0;
    j = it_json("GET", pathf("/v1/models/%" PRId64 "/batches", id), NULL, &status);
    ck_assert_int_eq(status, 200);
    cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "batches");
    ck_assert_int_eq(cJSON_GetArraySize(list), 2);
    cJSON *first = cJSON_GetArrayItem(list, 0);
    ck_assert_int_eq(cJSON_GetArraySize(first), 4);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(first, "split")->valuestring, "train");
    ck_assert_int_eq((int64_t)cJSON_GetObjectItemCaseSensitive(first, "batch_id")->valuedouble,
                     b1);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(first, "rows")->valuedouble, 3);
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(first, "created_at")));
    cJSON_Delete(j);

    char path[128];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches/%" PRId64, id, b1);
    ck_assert_int_eq(it_request("DELETE", path, NULL, NULL, &status, NULL, NULL), 0);
    ck_assert_int_eq(status, 204);
    check_error("DELETE", path, NULL, NULL, 404, "not_found", NULL);
    ck_assert_int_eq(model_rows(id), 1);
    j = it_json("GET", pathf("/v1/models/%" PRId64 "/batches", id), NULL, &status);
    list = cJSON_GetObjectItemCaseSensitive(j, "batches");
    ck_assert_int_eq(cJSON_GetArraySize(list), 1);
    ck_assert_int_eq((int64_t)cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, 0),
                                                               "batch_id")->valuedouble, b2);
    cJSON_Delete(j);

    /* No Content-Type is read as JSON. */
    it_resp_t r;
    static const char *const no_ct[] = {"Content-Type:", NULL};
    it_call_t c = {.method = "POST", .path = pathf("/v1/models/%" PRId64 "/batches", id),
                   .body = "{\"x\":[[1,1]],\"y\":[0]}", .headers = no_ct};
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_msg(r.status == 201, "no Content-Type: %ld %s", r.status, r.body);
    it_resp_free(&r);

    /* Multi-output regression and classifiers. */
    int64_t multi = create_model("{\"kind\":\"linear\",\"inputs\":1,\"outputs\":2}");
    cJSON_Delete(post_ok(multi, "", JSON, "{\"x\":[[1],[2]],\"y\":[[1,2],[3,4]]}", 0, 2));
    int64_t soft = create_model("{\"kind\":\"softmax\",\"inputs\":2,\"classes\":3}");
    cJSON_Delete(post_ok(soft, "", JSON, "{\"x\":[[1,2],[3,4]],\"y\":[0,2]}", 0, 2));
}
END_TEST

START_TEST(json_bad_input)
{
    int64_t id = create_model(LINEAR);
    int64_t logi = create_model("{\"kind\":\"logistic\",\"inputs\":2}");
    int64_t multi = create_model("{\"kind\":\"linear\",\"inputs\":1,\"outputs\":2}");
    cJSON_Delete(post_ok(id, "", JSON, "{\"x\":[[1,2]],\"y\":[1]}", 0, 1));
    static const struct {
        int which;                 /* 0 linear, 1 logistic, 2 two-output linear */
        const char *ctype, *body;
        long status;
        const char *code, *field;
    } bad[] = {
        {0, JSON, "{\"x\":[[1,2],[3]],\"y\":[1,2]}", 400, "invalid_argument", "x[1]"},
        {0, JSON, "{\"x\":[[1,2],[3,4,5]],\"y\":[1,2]}", 400, "invalid_argument", "x[1]"},
        {0, JSON, "{\"x\":[[1,2],[3,4]],\"y\":[1]}", 400, "invalid_argument", "y"},
        {0, JSON, "{\"x\":[[1,2],[3,1e999]],\"y\":[1,2]}", 400, "invalid_argument", "x[1][1]"},
        {0, JSON, "{\"x\":[[1,2]],\"y\":[-1e999]}", 400, "invalid_argument", "y[0]"},
        {0, JSON, "{\"x\":[[1,\"2\"]],\"y\":[1]}", 400, "invalid_argument", "x[0][1]"},
        {0, JSON, "{\"x\":[[1,null]],\"y\":[1]}", 400, "invalid_argument", "x[0][1]"},
        {0, JSON, "{\"x\":\"rows\",\"y\":[1]}", 400, "invalid_argument", "x"},
        {0, JSON, "{\"x\":[[1,2]],\"y\":\"a\"}", 400, "invalid_argument", "y"},
        {0, JSON, "{\"x\":[[1,2]],\"y\":[\"a\"]}", 400, "invalid_argument", "y[0]"},
        {0, JSON, "{\"x\":[[1,2]]}", 400, "invalid_argument", "y"},
        {0, JSON, "{\"y\":[1]}", 400, "invalid_argument", "x"},
        {0, JSON, "{\"x\":[],\"y\":[]}", 400, "invalid_argument", "x"},
        {0, JSON, "{\"x\":[[1,2]],\"y\":[1],\"z\":0}", 400, "invalid_argument", "z"},
        {0, JSON, "[[1,2]]", 400, "invalid_argument", NULL},
        {0, JSON, "{\"x\":[[1,2]],", 400, "invalid_json", ""},
        {0, JSON, "", 400, "invalid_argument", NULL},
        {0, "text/plain", "{\"x\":[[1,2]],\"y\":[1]}", 415, "unsupported_media_type", ""},
        {0, "application/x-www-form-urlencoded", "{\"x\":[[1,2]],\"y\":[1]}", 415,
         "unsupported_media_type", ""},
        {1, JSON, "{\"x\":[[1,2],[3,4]],\"y\":[1,2]}", 400, "invalid_argument", "y[1]"},
        {1, JSON, "{\"x\":[[1,2]],\"y\":[0.5]}", 400, "invalid_argument", "y[0]"},
        {2, JSON, "{\"x\":[[1]],\"y\":[1]}", 400, "invalid_argument", "y[0]"},
        {2, JSON, "{\"x\":[[1]],\"y\":[[1,2,3]]}", 400, "invalid_argument", "y[0]"},
    };
    const int64_t ids[3] = {id, logi, multi};
    char *before[3];
    for (int k = 0; k < 3; ++k)
        before[k] = it_get_text(pathf("/v1/models/%" PRId64, ids[k]));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        check_error("POST", pathf("/v1/models/%" PRId64 "/batches", ids[bad[i].which]),
                    bad[i].ctype, bad[i].body, bad[i].status, bad[i].code, bad[i].field);
        char *after = it_get_text(pathf("/v1/models/%" PRId64, ids[bad[i].which]));
        ck_assert_str_eq(before[bad[i].which], after);
        free(after);
    }
    for (int k = 0; k < 3; ++k)
        free(before[k]);
    char *list = it_get_text(pathf("/v1/models/%" PRId64 "/batches", id));
    cJSON *j = cJSON_Parse(list);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "batches")), 1);
    cJSON_Delete(j);
    free(list);
}
END_TEST

/* ---- CSV ------------------------------------------------------------------------------------- */

START_TEST(csv_batches)
{
    int64_t id = create_model(LINEAR);
    cJSON_Delete(post_ok(id, "", CSV, "x1,x2,y\n1,2,3\n4,5,6\n", 0, 2));           /* header */
    cJSON_Delete(post_ok(id, "", CSV, "1,2,3\r\n4,5,6\r\n7,8,9\r\n\r\n", 0, 3));   /* CRLF */
    cJSON_Delete(post_ok(id, "?header=true", CSV, "1,2,3\n4,5,6\n", 0, 1));
    cJSON_Delete(post_ok(id, "?header=false", CSV, " 1 , 2.5e-1 ,-3\n", 0, 1));
    cJSON_Delete(post_ok(id, "?header=auto&label_columns=1", CSV, "a,b,c\r\n1,2,3", 0, 1));
    cJSON_Delete(post_ok(id, "", "text/csv; charset=utf-8", "1,2,3\n", 0, 1));
    ck_assert_int_eq(model_rows(id), 9);

    int64_t multi = create_model("{\"kind\":\"linear\",\"inputs\":1,\"outputs\":2}");
    cJSON_Delete(post_ok(multi, "?label_columns=2", CSV, "x,y1,y2\n1,2,3\n", 0, 1));
}
END_TEST

START_TEST(csv_bad_input)
{
    int64_t id = create_model(LINEAR);
    int64_t logi = create_model("{\"kind\":\"logistic\",\"inputs\":2}");
    int64_t softmax = create_model("{\"kind\":\"softmax\",\"inputs\":2,\"classes\":3}");
    int64_t graph = create_model(GRAPH_CCE3);
    cJSON_Delete(post_ok(id, "", CSV, "1,2,3\n", 0, 1));
    static const struct {
        int which;
        const char *query, *body;
        const char *field;
    } bad[] = {
        {0, "", "x1,x2,y\n1,2,3\n4,oops,6\n", "line 3"},
        {0, "", "x1,x2,y\r\n1,2,3\r\n4,5\r\n", "line 3"},
        {0, "", "1,2,3\n4,5,6,7\n", "line 2"},
        {0, "", "1,2,3\n\n4,5,6\n", "line 2"},
        {0, "", "1,2,3\n4,,6\n", "line 2"},
        {0, "", "1,2,3\n4,5,1e999\n", "line 2"},
        {0, "", "1,2,3\n4,5,nan\n", "line 2"},
        {0, "?header=false", "x1,x2,y\n1,2,3\n", "line 1"},
        {0, "?header=maybe", "1,2,3\n", "header"},
        {0, "?label_columns=2", "1,2,3\n", "label_columns"},
        {0, "?label_columns=x", "1,2,3\n", "label_columns"},
        {0, "", "", NULL},
        {0, "", "x1,x2,y\n", NULL},
        /* A label out of range names its line, like every other CSV error. */
        {1, "", "1,2,0\n3,4,2\n", "line 2"},
        {1, "", "x1,x2,y\n1,2,0\n3,4,1\n5,6,0.5\n", "line 4"},
        {2, "", "x1,x2,y\n1,2,0\n3,4,3\n", "line 3"},
        {2, "", "1,2,2\n3,4,-1\n", "line 2"},
        {2, "", "1,2,1.5\n", "line 1"},
        {2, "", "1,2,9\n3,4\n", "line 1"},   /* the first bad line wins */
        /* A graph's labels are class ids when its cce_loss reads y. */
        {3, "", "1,2,0\n3,4,5\n", "line 2"},
        {3, "", "1,2,-3.5\n", "line 1"},
    };
    const int64_t ids[4] = {id, logi, softmax, graph};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        char path[256];
        snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches%s", ids[bad[i].which],
                 bad[i].query);
        char *before = it_get_text(pathf("/v1/models/%" PRId64, ids[bad[i].which]));
        check_error("POST", path, CSV, bad[i].body, 400, "invalid_argument", bad[i].field);
        char *after = it_get_text(pathf("/v1/models/%" PRId64, ids[bad[i].which]));
        ck_assert_str_eq(before, after);
        free(before);
        free(after);
    }
    ck_assert_int_eq(model_rows(id), 1);
}
END_TEST

/* ---- raw float64 ----------------------------------------------------------------------------- */

/* rows*cols little-endian doubles (new). */
static char *le_doubles(const double *v, int n)
{
    unsigned char *out = malloc((size_t)n * 8u);
    ck_assert_ptr_nonnull(out);
    for (int i = 0; i < n; ++i) {
        uint64_t u;
        memcpy(&u, &v[i], sizeof u);
        for (int k = 0; k < 8; ++k)
            out[i * 8 + k] = (unsigned char)(u >> (8 * k));
    }
    return (char *)out;
}

START_TEST(raw_batches)
{
    int64_t id = create_model(LINEAR);
    const double v[6] = {1, 2, 3, 4.5, -0.1, 1e-310};
    char *buf = le_doubles(v, 6);
    cJSON *j = post_ok(id, "?rows=2&cols=3", RAW, buf, 48, 2);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "total_rows")->valuedouble, 2);
    cJSON_Delete(j);
    cJSON_Delete(post_ok(id, "?rows=1&cols=3&label_columns=1", RAW, buf, 24, 1));

    char path[256];
    const char *base = pathf("/v1/models/%" PRId64 "/batches", id);
    static const struct {
        const char *query;
        size_t len;
        const char *field;
    } bad[] = {
        {"?rows=2&cols=3", 40, "body"},
        {"?rows=1&cols=3", 48, "body"},
        {"?rows=2&cols=2", 32, "cols"},
        {"?cols=3", 48, "rows"},
        {"?rows=2", 48, "cols"},
        {"?rows=0&cols=3", 0, "rows"},
        {"?rows=x&cols=3", 48, "rows"},
        {"?rows=2&cols=3&label_columns=2", 48, "label_columns"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        snprintf(path, sizeof path, "%s%s", base, bad[i].query);
        check_error_len("POST", path, RAW, bad[i].len > 0 ? buf : "", bad[i].len, 400,
                        "invalid_argument", bad[i].field);
    }
    free(buf);

    /* Non-finite values are named by element. */
    const double nan_x[6] = {1, 2, 3, 4, NAN, 6};
    const double inf_y[6] = {1, 2, 3, 4, 5, -INFINITY};
    buf = le_doubles(nan_x, 6);
    snprintf(path, sizeof path, "%s?rows=2&cols=3", base);
    check_error_len("POST", path, RAW, buf, 48, 400, "invalid_argument", "x[1][1]");
    free(buf);
    buf = le_doubles(inf_y, 6);
    check_error_len("POST", path, RAW, buf, 48, 400, "invalid_argument", "y[1]");
    free(buf);
    ck_assert_int_eq(model_rows(id), 3);
}
END_TEST

/* A graph model whose cce_loss reads y takes class ids only, in every format, and says which
 * label is wrong; nothing is stored, so training and loss on the stored rows still work. */
START_TEST(graph_class_labels)
{
    int64_t id = create_model(GRAPH_CCE3);
    const char *path = pathf("/v1/models/%" PRId64 "/batches", id);
    check_error("POST", path, JSON, "{\"x\":[[1,2],[3,4]],\"y\":[2,5]}", 400,
                "invalid_argument", "y[1]");
    check_error("POST", path, JSON, "{\"x\":[[1,2]],\"y\":[0.5]}", 400, "invalid_argument",
                "y[0]");
    const double v[6] = {1, 2, 0, 3, 4, 3};
    char *raw = le_doubles(v, 6);
    char raw_path[256];
    snprintf(raw_path, sizeof raw_path, "/v1/models/%" PRId64 "/batches?rows=2&cols=3", id);
    long status = 0;
    cJSON *j = call("POST", raw_path, "application/octet-stream", raw, 48, &status, NULL);
    ck_assert_int_eq(status, 400);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"),
                                                      "field")->valuestring, "y[1]");
    cJSON_Delete(j);
    free(raw);
    ck_assert_int_eq(model_rows(id), 0);
    cJSON_Delete(post_ok(id, "", JSON, "{\"x\":[[1,2],[3,4]],\"y\":[2,0]}", 0, 2));
    j = it_json("POST", pathf("/v1/models/%" PRId64 "/train", id), "{\"steps\":2}", &status);
    ck_assert_int_eq(status, 200);
    cJSON_Delete(j);
}
END_TEST

/* Bodies much larger than one network read arrive in many pieces and are decoded as they
 * come: a bad value on the very last line or in the very last float64 is still found and named,
 * nothing of the batch is stored, and the same body made good is stored whole. */
START_TEST(large_bodies_streamed)
{
    int64_t id = create_model(LINEAR);
    enum { ROWS = 20000 };
    size_t cap = (size_t)ROWS * 40, used = 0;
    char *csv = malloc(cap);
    for (int i = 0; i < ROWS; ++i)
        used += (size_t)snprintf(csv + used, cap - used, "%d.25,-%d.5,%d\n", i, i, i % 7);
    char *last = csv + used - 2;                 /* the last row's label */
    *last = 'x';
    const char *path = pathf("/v1/models/%" PRId64 "/batches?header=false", id);
    check_error_len("POST", path, CSV, csv, used, 400, "invalid_argument", "line 20000");
    ck_assert_int_eq(model_rows(id), 0);
    *last = '3';
    cJSON_Delete(post_ok(id, "?header=false", CSV, csv, used, ROWS));
    ck_assert_int_eq(model_rows(id), ROWS);
    free(csv);

    double *v = malloc((size_t)ROWS * 3 * sizeof *v);
    for (int i = 0; i < ROWS * 3; ++i)
        v[i] = i % 3 == 2 ? (double)(i % 5) : i * 0.5;
    v[ROWS * 3 - 1] = NAN;
    char *raw = le_doubles(v, ROWS * 3);
    char q[64], rpath[128];
    snprintf(q, sizeof q, "?rows=%d&cols=3", ROWS);
    snprintf(rpath, sizeof rpath, "/v1/models/%" PRId64 "/batches%s", id, q);
    path = rpath;
    check_error_len("POST", path, RAW, raw, (size_t)ROWS * 24, 400, "invalid_argument",
                    "y[19999]");
    ck_assert_int_eq(model_rows(id), ROWS);
    free(raw);
    v[ROWS * 3 - 1] = 1.0;
    raw = le_doubles(v, ROWS * 3);
    cJSON_Delete(post_ok(id, q, RAW, raw, (size_t)ROWS * 24, ROWS));
    ck_assert_int_eq(model_rows(id), 2 * ROWS);
    free(raw);
    free(v);
}
END_TEST

/* ---- unknown ids, methods, restart ----------------------------------------------------------- */

START_TEST(unknown_and_methods)
{
    int64_t id = create_model(LINEAR);
    int64_t other = create_model(LINEAR);
    cJSON *j = post_ok(other, "", JSON, "{\"x\":[[1,2]],\"y\":[1]}", 0, 1);
    int64_t bid = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "batch_id")->valuedouble;
    cJSON_Delete(j);
    check_error("POST", "/v1/models/999/batches", JSON, "{\"x\":[[1,2]],\"y\":[1]}", 404,
                "not_found", NULL);
    check_error("POST", "/v1/models/999/batches", CSV, "1,2,3\n", 404, "not_found", NULL);
    check_error("GET", "/v1/models/999/batches", NULL, NULL, 404, "not_found", NULL);
    check_error("DELETE", "/v1/models/999/batches/1", NULL, NULL, 404, "not_found", NULL);
    char path[128];
    /* Another model's batch is not this model's. */
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches/%" PRId64, id, bid);
    check_error("DELETE", path, NULL, NULL, 404, "not_found", NULL);
    check_error("GET", path, NULL, NULL, 404, "not_found", NULL);
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches/abc", id);
    check_error("DELETE", path, NULL, NULL, 404, "not_found", NULL);
    ck_assert_int_eq(model_rows(other), 1);
    /* Each format takes its own query parameters; another format's is refused by name, and
     * nothing is stored. */
    static const struct {
        const char *query, *ctype, *field;
    } foreign[] = {
        {"?label_columns=1", JSON, "label_columns"}, {"?header=true", JSON, "header"},
        {"?rows=1&cols=3", JSON, "rows"},            {"?rows=1", CSV, "rows"},
        {"?cols=3", CSV, "cols"},                    {"?rows=1&cols=3&header=bogus", RAW, "header"},
    };
    static const double one_row[3] = {1, 2, 3};
    char *raw_row = le_doubles(one_row, 3);
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; ++i) {
        snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches%s", other, foreign[i].query);
        const int raw = strcmp(foreign[i].ctype, RAW) == 0;
        const char *body = raw ? raw_row
                           : strcmp(foreign[i].ctype, CSV) == 0 ? "1,2,3\n"
                                                                : "{\"x\":[[1,2]],\"y\":[3]}";
        check_error_len("POST", path, foreign[i].ctype, body, raw ? 24 : 0, 400,
                        "invalid_argument", foreign[i].field);
    }
    free(raw_row);
    ck_assert_int_eq(model_rows(other), 1);

    static const struct {
        const char *method, *path, *allow;
    } wrong[] = {
        {"PUT", "/v1/models/%" PRId64 "/batches", "POST"},
        {"DELETE", "/v1/models/%" PRId64 "/batches", "GET"},
        {"PUT", "/v1/models/%" PRId64 "/batches/1", "GET, HEAD, DELETE"},
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; ++i) {
        long status = 0;
        char *headers = NULL;
        j = call(wrong[i].method, pathf(wrong[i].path, id), NULL, NULL, 0, &status, &headers);
        ck_assert_msg(status == 405, "%s %s: %ld", wrong[i].method, wrong[i].path, status);
        char *allow = it_header(headers, "Allow");
        ck_assert_msg(allow != NULL && strstr(allow, wrong[i].allow) != NULL, "Allow: %s",
                      allow != NULL ? allow : "(none)");
        free(allow);
        free(headers);
        cJSON_Delete(j);
    }
}
END_TEST

START_TEST(restart_keeps_batches)
{
    int64_t id = create_model(LINEAR);
    cJSON_Delete(post_ok(id, "", JSON, "{\"x\":[[1,2],[3,4]],\"y\":[1,2]}", 0, 2));
    cJSON_Delete(post_ok(id, "", CSV, "5,6,7\n", 0, 1));
    char *list = it_get_text(pathf("/v1/models/%" PRId64 "/batches", id));
    char *model = it_get_text(pathf("/v1/models/%" PRId64, id));
    ck_assert_int_eq(it_restart(&d), 0);
    char *list2 = it_get_text(pathf("/v1/models/%" PRId64 "/batches", id));
    char *model2 = it_get_text(pathf("/v1/models/%" PRId64, id));
    ck_assert_str_eq(list, list2);
    ck_assert_str_eq(model, model2);
    free(list);
    free(list2);
    free(model);
    free(model2);
    ck_assert_int_eq(model_rows(id), 3);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("data");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, json_batches);
    tcase_add_test(tc, json_bad_input);
    tcase_add_test(tc, csv_batches);
    tcase_add_test(tc, csv_bad_input);
    tcase_add_test(tc, raw_batches);
    tcase_add_test(tc, graph_class_labels);
    tcase_add_test(tc, large_bodies_streamed);
    tcase_add_test(tc, unknown_and_methods);
    tcase_add_test(tc, restart_keeps_batches);
    suite_add_tcase(s, tc);
    return it_run(s);
}
