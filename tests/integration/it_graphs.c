/* tests/integration/it_graphs.c -- POST /v1/graphs/eval end to end: every golden graph case
 * through HTTP within its tolerance, and bad graphs answered 400 with the exact field while the
 * daemon stays up. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

static it_daemon_t d;

static void setup(void)
{
    ck_assert_msg(it_start(&d, it_exe, NULL) == 0, "daemon did not start");
}

static void teardown(void)
{
    it_cleanup(&d);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf != NULL)
        buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Compare a JSON value (number or nested arrays) element by element:
 * |got - want| <= abs + rel |want|. Returns 1 when equal, else 0 with a message in why. */
static int json_close(const cJSON *got, const cJSON *want, double rel, double abs_tol,
                      const char *path, char *why, size_t size)
{
    if (cJSON_IsNumber(want)) {
        if (!cJSON_IsNumber(got)) {
            snprintf(why, size, "%s: expected a number", path);
            return 0;
        }
        double g = got->valuedouble, w = want->valuedouble;
        if (!(fabs(g - w) <= abs_tol + rel * fabs(w))) {
            snprintf(why, size, "%s: got %.17g, expected %.17g", path, g, w);
            return 0;
        }
        return 1;
    }
    if (!cJSON_IsArray(want) || !cJSON_IsArray(got) ||
        cJSON_GetArraySize(got) != cJSON_GetArraySize(want)) {
        snprintf(why, size, "%s: shapes differ", path);
        return 0;
    }
    const cJSON *g = got->child;
    int i = 0;
    for (const cJSON *w = want->child; w != NULL; w = w->next, g = g->next, ++i) {
        char sub[256];
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        if (!json_close(g, w, rel, abs_tol, sub, why, size))
            return 0;
    }
    return 1;
}

/* Every key of want (an object of values) must be in got and close. */
static void check_object(const cJSON *got, const cJSON *want, double rel, double abs_tol,
                         const char *file, const char *what)
{
    ck_assert_msg(cJSON_IsObject(got), "%s: no %s object", file, what);
    int n_want = 0;
    for (const cJSON *w = want->child; w != NULL; w = w->next, ++n_want) {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(got, w->string);
        ck_assert_msg(g != NULL, "%s: %s.%s missing", file, what, w->string);
        char path[256], why[512];
        snprintf(path, sizeof path, "%s.%s", what, w->string);
        ck_assert_msg(json_close(g, w, rel, abs_tol, path, why, sizeof why), "%s: %s", file,
                      why);
    }
    ck_assert_msg(cJSON_GetArraySize(got) == n_want, "%s: %s has %d entries, expected %d", file,
                  what, cJSON_GetArraySize(got), n_want);
}

static void run_case(const char *file, const cJSON *c)
{
    cJSON *req = cJSON_CreateObject();
    static const char *const keys[] = {"graph", "inputs", "wrt", "jacobian"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; ++k) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, keys[k]);
        if (v != NULL)
            cJSON_AddItemToObject(req, keys[k], cJSON_Duplicate(v, 1));
    }
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    long status = 0;
    cJSON *ans = it_json("POST", "/v1/graphs/eval", body, &status);
    free(body);
    ck_assert_msg(status == 200, "%s: status %ld", file, status);
    ck_assert_ptr_nonnull(ans);

    const cJSON *tol = cJSON_GetObjectItemCaseSensitive(c, "tolerance");
    double rel = cJSON_GetObjectItemCaseSensitive(tol, "rel")->valuedouble;
    double abs_tol = cJSON_GetObjectItemCaseSensitive(tol, "abs")->valuedouble;
    const cJSON *expect = cJSON_GetObjectItemCaseSensitive(c, "expect");
    check_object(cJSON_GetObjectItemCaseSensitive(ans, "values"),
                 cJSON_GetObjectItemCaseSensitive(expect, "values"), rel, abs_tol, file,
                 "values");
    check_object(cJSON_GetObjectItemCaseSensitive(ans, "gradients"),
                 cJSON_GetObjectItemCaseSensitive(expect, "gradients"), rel, abs_tol, file,
                 "gradients");
    const cJSON *jw = cJSON_GetObjectItemCaseSensitive(expect, "jacobian");
    const cJSON *jg = cJSON_GetObjectItemCaseSensitive(ans, "jacobian");
    if (jw != NULL) {
        char why[512];
        ck_assert_msg(jg != NULL, "%s: no jacobian", file);
        ck_assert_msg(json_close(jg, jw, rel, abs_tol, "jacobian", why, sizeof why), "%s: %s",
                      file, why);
    } else {
        ck_assert_msg(jg == NULL, "%s: a jacobian nobody asked for", file);
    }
    cJSON_Delete(ans);
}

START_TEST(golden_graph_cases)
{
    DIR *dir = opendir(it_golden);
    ck_assert_msg(dir != NULL, "cannot open %s", it_golden);
    int n_case = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 5, ".json") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", it_golden, e->d_name);
        char *text = read_file(path);
        ck_assert_msg(text != NULL, "cannot read %s", path);
        cJSON *c = cJSON_Parse(text);
        free(text);
        ck_assert_msg(c != NULL, "%s is not JSON", path);
        if (cJSON_GetObjectItemCaseSensitive(c, "graph") != NULL) {
            run_case(e->d_name, c);
            ++n_case;
        }
        cJSON_Delete(c);
    }
    closedir(dir);
    ck_assert_msg(n_case >= 4, "only %d graph cases found in %s", n_case, it_golden);
}
END_TEST

/* One bad request to `path`: exact status, error code and field; the daemon still answers
 * after it. */
static void expect_error_at(const char *path, const char *content_type, const char *body,
                            long want_status, const char *want_code, const char *want_field)
{
    long status = 0;
    char *resp = NULL;
    ck_assert_int_eq(it_request("POST", path, content_type, body, &status, &resp, NULL), 0);
    ck_assert_msg(status == want_status, "%.200s: status %ld, expected %ld (%s)", body, status,
                  want_status, resp != NULL ? resp : "");
    cJSON *j = cJSON_Parse(resp);
    ck_assert_msg(j != NULL, "error body is not JSON: %s", resp);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(err, "code");
    const cJSON *field = cJSON_GetObjectItemCaseSensitive(err, "field");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    ck_assert_msg(cJSON_IsString(code) && strcmp(code->valuestring, want_code) == 0,
                  "%.200s: %s", body, resp);
    ck_assert_msg(cJSON_IsString(msg) && msg->valuestring[0] != '\0', "no message: %s", resp);
    if (want_field != NULL)
        ck_assert_msg(cJSON_IsString(field) && strcmp(field->valuestring, want_field) == 0,
                      "%.200s: field, expected %s: %s", body, want_field, resp);
    else
        ck_assert_msg(field == NULL, "unexpected field: %s", resp);
    cJSON_Delete(j);
    free(resp);

    cJSON *h = it_json("GET", "/healthz", NULL, &status);
    ck_assert_int_eq(status, 200);
    cJSON_Delete(h);
}

static void expect_error(const char *content_type, const char *body, long want_status,
                         const char *want_code, const char *want_field)
{
    expect_error_at("/v1/graphs/eval", content_type, body, want_status, want_code, want_field);
}

#define JSON "application/json"
#define X_IN "{\"id\":\"x\",\"op\":\"input\",\"shape\":[]}"

/* A graph model's graph is refused as /v1/graphs/eval refuses it, naming the same place. */
static void expect_model_error(const char *nodes, const char *want_field)
{
    char eval[2048], model[2048];
    snprintf(eval, sizeof eval, "{\"graph\":{\"nodes\":[%s],\"output\":\"L\"}}", nodes);
    snprintf(model, sizeof model, "{\"kind\":\"graph\",\"graph\":{\"nodes\":[%s],"
             "\"output\":\"L\"}}", nodes);
    expect_error(JSON, eval, 400, "invalid_argument", want_field);
    expect_error_at("/v1/models", JSON, model, 400, "invalid_argument", want_field);
}

#define XY_IN "{\"id\":\"x\",\"op\":\"input\",\"shape\":[null,2]}," \
              "{\"id\":\"y\",\"op\":\"input\",\"shape\":[null,1]},"

START_TEST(model_graph_errors_name_the_node)
{
    /* matmul [null,2] x [1,3]: inner dimensions differ */
    expect_model_error(XY_IN "{\"id\":\"W\",\"op\":\"param\",\"shape\":[1,3]},"
                       "{\"id\":\"d\",\"op\":\"matmul\",\"inputs\":[\"x\",\"W\"]},"
                       "{\"id\":\"L\",\"op\":\"l2_loss\",\"inputs\":[\"d\",\"y\"]}",
                       "graph.nodes[3]");
    /* an unknown input */
    expect_model_error(XY_IN "{\"id\":\"d\",\"op\":\"neg\",\"inputs\":[\"nope\"]},"
                       "{\"id\":\"L\",\"op\":\"l2_loss\",\"inputs\":[\"d\",\"y\"]}",
                       "graph.nodes[2]");
    /* a cycle d -> e -> d */
    expect_model_error(XY_IN "{\"id\":\"d\",\"op\":\"add\",\"inputs\":[\"x\",\"e\"]},"
                       "{\"id\":\"e\",\"op\":\"neg\",\"inputs\":[\"d\"]},"
                       "{\"id\":\"L\",\"op\":\"l2_loss\",\"inputs\":[\"d\",\"y\"]}",
                       "graph.nodes[2]");
    /* an empty dimension, in a param and in an input */
    expect_model_error(XY_IN "{\"id\":\"W\",\"op\":\"param\",\"shape\":[2,0]},"
                       "{\"id\":\"L\",\"op\":\"l2_loss\",\"inputs\":[\"x\",\"y\"]}",
                       "graph.nodes[2].shape[1]");
    expect_model_error("{\"id\":\"x\",\"op\":\"input\",\"shape\":[null,0]},"
                       "{\"id\":\"L\",\"op\":\"sum\",\"inputs\":[\"x\"]}",
                       "graph.nodes[0].shape[1]");
}
END_TEST

START_TEST(bad_graphs)
{
    /* cycle a -> b -> a */
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN ","
                 "{\"id\":\"a\",\"op\":\"add\",\"inputs\":[\"x\",\"b\"]},"
                 "{\"id\":\"b\",\"op\":\"neg\",\"inputs\":[\"a\"]}],\"output\":\"a\"},"
                 "\"inputs\":{\"x\":1}}",
                 400, "invalid_argument", "graph.nodes[1]");
    /* unknown op */
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN ",{\"id\":\"f\",\"op\":\"frobnicate\","
                 "\"inputs\":[\"x\"]}],\"output\":\"f\"},\"inputs\":{\"x\":1}}",
                 400, "invalid_argument", "graph.nodes[1].op");
    /* unknown input id */
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN ",{\"id\":\"n\",\"op\":\"neg\","
                 "\"inputs\":[\"nope\"]}],\"output\":\"n\"},\"inputs\":{\"x\":1}}",
                 400, "invalid_argument", "graph.nodes[1]");
    /* shape mismatch: [2,3] x [2,3] */
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[{\"id\":\"a\",\"op\":\"input\",\"shape\":[2,3]},"
                 "{\"id\":\"b\",\"op\":\"input\",\"shape\":[2,3]},"
                 "{\"id\":\"m\",\"op\":\"matmul\",\"inputs\":[\"a\",\"b\"]}],\"output\":\"m\"},"
                 "\"inputs\":{\"a\":[[1,2,3],[4,5,6]],\"b\":[[1,2,3],[4,5,6]]}}",
                 400, "invalid_argument", "graph.nodes[2]");
    /* missing input */
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN ",{\"id\":\"n\",\"op\":\"neg\","
                 "\"inputs\":[\"x\"]}],\"output\":\"n\"},\"inputs\":{}}",
                 400, "invalid_argument", "inputs.x");
    /* NaN / Inf: JSON has no NaN, and 1e999 overflows to Inf */
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN ",{\"id\":\"n\",\"op\":\"neg\","
                 "\"inputs\":[\"x\"]}],\"output\":\"n\"},\"inputs\":{\"x\":1e999}}",
                 400, "invalid_argument", "inputs.x");
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[{\"id\":\"v\",\"op\":\"input\",\"shape\":[null,2]},"
                 "{\"id\":\"n\",\"op\":\"sum\",\"inputs\":[\"v\"]}],\"output\":\"n\"},"
                 "\"inputs\":{\"v\":[[1,2],[3,-1e999]]}}",
                 400, "invalid_argument", "inputs.v[1][1]");
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN ",{\"id\":\"n\",\"op\":\"neg\","
                 "\"inputs\":[\"x\"]}],\"output\":\"n\"},\"inputs\":{\"x\":NaN}}",
                 400, "invalid_json", NULL);
    /* non-scalar output with wrt */
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[{\"id\":\"v\",\"op\":\"input\",\"shape\":[2]},"
                 "{\"id\":\"n\",\"op\":\"neg\",\"inputs\":[\"v\"]}],\"output\":\"n\"},"
                 "\"inputs\":{\"v\":[1,2]},\"wrt\":[\"v\"]}",
                 400, "invalid_argument", "graph.output");
    /* a value for a node that is not an input, and for a node that does not exist */
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN ",{\"id\":\"n\",\"op\":\"neg\","
                 "\"inputs\":[\"x\"]}],\"output\":\"n\"},\"inputs\":{\"x\":1,\"n\":2}}",
                 400, "invalid_argument", "inputs.n");
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN ",{\"id\":\"n\",\"op\":\"neg\","
                 "\"inputs\":[\"x\"]}],\"output\":\"n\"},\"inputs\":{\"x\":1,\"q\":2}}",
                 400, "invalid_argument", "inputs.q");
    /* rows of null-first-dimension inputs disagree */
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[{\"id\":\"a\",\"op\":\"input\",\"shape\":[null,1]},"
                 "{\"id\":\"b\",\"op\":\"input\",\"shape\":[null,1]},"
                 "{\"id\":\"s\",\"op\":\"add\",\"inputs\":[\"a\",\"b\"]}],\"output\":\"s\"},"
                 "\"inputs\":{\"a\":[[1],[2]],\"b\":[[1]]}}",
                 400, "invalid_argument", "inputs.b");
    /* unknown top-level field, unknown wrt id, bad jacobian, duplicate id, bad output */
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN "],\"output\":\"x\"},\"inputs\":{\"x\":1},"
                 "\"wtr\":[\"x\"]}",
                 400, "invalid_argument", "wtr");
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN "],\"output\":\"x\"},\"inputs\":{\"x\":1},"
                 "\"wrt\":[\"x\",\"y\"]}",
                 400, "invalid_argument", "wrt[1]");
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN "],\"output\":\"x\"},\"inputs\":{\"x\":1},"
                 "\"jacobian\":{\"of\":\"x\"}}",
                 400, "invalid_argument", "jacobian.wrt");
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN "," X_IN "],\"output\":\"x\"},"
                 "\"inputs\":{\"x\":1}}",
                 400, "invalid_argument", "graph.nodes[1]");
    expect_error(JSON,
                 "{\"graph\":{\"nodes\":[" X_IN "],\"output\":\"nope\"},\"inputs\":{\"x\":1}}",
                 400, "invalid_argument", "graph.output");
    expect_error(JSON, "{\"inputs\":{}}", 400, "invalid_argument", "graph");
    expect_error(JSON, "{\"graph\":", 400, "invalid_json", NULL);
    expect_error("text/plain", "{}", 415, "unsupported_media_type", NULL);

    /* Still serving: a good request after all that. */
    long status = 0;
    cJSON *j = it_json("POST", "/v1/graphs/eval",
                       "{\"graph\":{\"nodes\":[" X_IN ",{\"id\":\"s\",\"op\":\"square\","
                       "\"inputs\":[\"x\"]}],\"output\":\"s\"},\"inputs\":{\"x\":3},"
                       "\"wrt\":[\"x\"]}",
                       &status);
    ck_assert_int_eq(status, 200);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, "gradients");
    ck_assert(cJSON_GetObjectItemCaseSensitive(j, "jacobian") == NULL);
    ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(g, "x")->valuedouble, 6.0);
    ck_assert_double_eq(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "values"), "s")
            ->valuedouble,
        9.0);
    cJSON_Delete(j);
}
END_TEST

START_TEST(too_many_nodes)
{
    /* 10001 nodes: x, then n1 = neg(x), n2 = neg(n1), ... */
    size_t cap = 64u * 10002u + 256u;
    char *body = malloc(cap);
    size_t used = (size_t)snprintf(body, cap,
                                   "{\"graph\":{\"nodes\":[" X_IN
                                   ",{\"id\":\"n1\",\"op\":\"neg\",\"inputs\":[\"x\"]}");
    for (int i = 2; i <= 10000; ++i)
        used += (size_t)snprintf(body + used, cap - used,
                                 ",{\"id\":\"n%d\",\"op\":\"neg\",\"inputs\":[\"n%d\"]}", i,
                                 i - 1);
    snprintf(body + used, cap - used, "],\"output\":\"n10000\"},\"inputs\":{\"x\":1}}");
    expect_error(JSON, body, 400, "invalid_argument", "graph.nodes");

    /* 10000 nodes is fine, and the chain differentiates: d n9999 / dx = -1. */
    char *last = strstr(body, ",{\"id\":\"n10000\"");
    ck_assert_ptr_nonnull(last);
    snprintf(last, cap - (size_t)(last - body),
             "],\"output\":\"n9999\"},\"inputs\":{\"x\":1},\"wrt\":[\"x\"]}");
    long status = 0;
    cJSON *j = it_json("POST", "/v1/graphs/eval", body, &status);
    ck_assert_int_eq(status, 200);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, "gradients");
    ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(g, "x")->valuedouble, -1.0);
    cJSON_Delete(j);
    free(body);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("graphs");
    TCase *tc = tcase_create("graphs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, golden_graph_cases);
    tcase_add_test(tc, bad_graphs);
    tcase_add_test(tc, model_graph_errors_name_the_node);
    tcase_add_test(tc, too_many_nodes);
    suite_add_tcase(s, tc);
    return it_run(s);
}
