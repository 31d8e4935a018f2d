/* tests/integration/it_golden.c -- every golden model case (the tests/golden files with a "spec")
 * through HTTP: create, predict, boundary, loss, gradients, store the batch, train, history,
 * parameters; then the same trajectory through n POST /step calls on a fresh model.
 * Graph cases belong to /v1/graphs/eval (it_graphs) and are skipped here. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

#define MAX_CASES 128

static it_daemon_t d;
static char *case_path[MAX_CASES];
static int n_cases;

static void setup(void)
{
    static const char *const extra[] = {"--log-level", "warn", NULL};
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

/* A clean stop must exit 0: under -DNEUROND_SANITIZE=ON that includes no leak report. */
static void teardown(void)
{
    int rc = d.pid > 0 ? it_stop(&d) : 0;
    it_cleanup(&d);
    ck_assert_msg(rc == 0, "daemon exit status %d on SIGTERM", rc);
}

static cJSON *read_json(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = buf != NULL ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (buf == NULL)
        return NULL;
    buf[got] = '\0';
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    return j;
}

static cJSON *get(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

typedef struct tol {
    double rel, abs;
} tol_t;

/* Compare got against expected element by element: |got − exp| <= abs + rel·|exp|; `exact`
 * for integers (classes). `what` names the value in failures. */
static void expect_close(const cJSON *got, const cJSON *exp, tol_t t, int exact, const char *what)
{
    ck_assert_msg(got != NULL, "%s: missing", what);
    if (cJSON_IsNumber(exp)) {
        ck_assert_msg(cJSON_IsNumber(got), "%s: expected a number", what);
        double g = got->valuedouble, e = exp->valuedouble;
        if (exact)
            ck_assert_msg(g == e, "%s: got %.17g, expected %.17g", what, g, e);
        else
            ck_assert_msg(fabs(g - e) <= t.abs + t.rel * fabs(e),
                          "%s: got %.17g, expected %.17g (diff %.3g)", what, g, e, fabs(g - e));
        return;
    }
    if (cJSON_IsArray(exp)) {
        ck_assert_msg(cJSON_IsArray(got), "%s: expected an array", what);
        int n = cJSON_GetArraySize(exp);
        ck_assert_msg(cJSON_GetArraySize(got) == n, "%s: %d elements, expected %d", what,
                      cJSON_GetArraySize(got), n);
        for (int i = 0; i < n; ++i) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s[%d]", what, i);
            expect_close(cJSON_GetArrayItem(got, i), cJSON_GetArrayItem(exp, i), t, exact, sub);
        }
        return;
    }
    if (cJSON_IsObject(exp)) {
        ck_assert_msg(cJSON_IsObject(got), "%s: expected an object", what);
        for (const cJSON *e = exp->child; e != NULL; e = e->next) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.%s", what, e->string);
            expect_close(get(got, e->string), e, t, exact, sub);
        }
        return;
    }
    ck_abort_msg("%s: unexpected expected-value type", what);
}

static char *print(const cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    ck_assert_ptr_nonnull(s);
    return s;
}

/* POST path with a JSON body built from `obj`; asserts the status. */
static cJSON *post(const char *path, const cJSON *obj, long want, const char *what)
{
    char *body = print(obj);
    long status = 0;
    cJSON *j = it_json("POST", path, body, &status);
    free(body);
    ck_assert_msg(status == want, "%s: status %ld, expected %ld", what, status, want);
    ck_assert_msg(j != NULL, "%s: answer is not JSON", what);
    return j;
}

static cJSON *get_json(const char *path, long want, const char *what)
{
    long status = 0;
    cJSON *j = it_json("GET", path, NULL, &status);
    ck_assert_msg(status == want, "%s: status %ld, expected %ld", what, status, want);
    ck_assert_msg(j != NULL, "%s: answer is not JSON", what);
    return j;
}

static int64_t create(const cJSON *spec, const char *name)
{
    cJSON *m = post("/v1/models", spec, 201, name);
    cJSON *id = get(m, "id");
    ck_assert(cJSON_IsNumber(id));
    int64_t v = (int64_t)id->valuedouble;
    cJSON_Delete(m);
    return v;
}

static cJSON *xy(const cJSON *c, int with_y)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "x", cJSON_Duplicate(get(c, "x"), 1));
    if (with_y)
        cJSON_AddItemToObject(o, "y", cJSON_Duplicate(get(c, "y"), 1));
    return o;
}

/* History losses 0..n-1 of model id equal the expected trajectory. */
static void check_history(int64_t id, const cJSON *train, tol_t t, const char *name)
{
    char path[128], what[256];
    snprintf(path, sizeof path, "/v1/models/%lld/history", (long long)id);
    cJSON *h = get_json(path, 200, name);
    cJSON *rows = get(h, "history");
    const cJSON *losses = get(train, "losses"), *norms = get(train, "grad_norms");
    const cJSON *rates = cJSON_GetObjectItem(train, "learning_rates");
    int n = cJSON_GetArraySize(losses);
    ck_assert_msg(cJSON_GetArraySize(rows) == n, "%s: %d history rows, expected %d", name,
                  cJSON_GetArraySize(rows), n);
    ck_assert(cJSON_IsNull(get(h, "next")));
    for (int i = 0; i < n; ++i) {
        cJSON *r = cJSON_GetArrayItem(rows, i);
        ck_assert_int_eq((int)get(r, "step")->valuedouble, i);
        snprintf(what, sizeof what, "%s history[%d].loss", name, i);
        expect_close(get(r, "loss"), cJSON_GetArrayItem(losses, i), t, 0, what);
        if (norms != NULL) {
            snprintf(what, sizeof what, "%s history[%d].grad_norm", name, i);
            expect_close(get(r, "grad_norm"), cJSON_GetArrayItem(norms, i), t, 0, what);
        }
        ck_assert(cJSON_IsString(get(r, "at")));
        ck_assert(cJSON_IsNumber(get(r, "learning_rate")));
        /* Cases with a schedule fix the rate actually used by every update. */
        if (rates != NULL) {
            snprintf(what, sizeof what, "%s history[%d].learning_rate", name, i);
            expect_close(get(r, "learning_rate"), cJSON_GetArrayItem(rates, i), t, 0, what);
        }
    }
    cJSON_Delete(h);
}

static void check_parameters(int64_t id, const cJSON *train, int n, tol_t t, const char *name)
{
    char path[128], what[256];
    snprintf(path, sizeof path, "/v1/models/%lld/parameters", (long long)id);
    cJSON *p = get_json(path, 200, name);
    ck_assert_int_eq((int)get(p, "step")->valuedouble, n);
    snprintf(what, sizeof what, "%s parameters", name);
    expect_close(get(p, "parameters"), get(train, "parameters"), t, 0, what);
    cJSON_Delete(p);
    /* The model object's loss is the last call's loss_after. */
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    cJSON *m = get_json(path, 200, name);
    snprintf(what, sizeof what, "%s model.loss", name);
    expect_close(get(m, "loss"), get(train, "loss_after"), t, 0, what);
    ck_assert_str_eq(get(m, "status")->valuestring, "idle");
    ck_assert_int_eq((int)get(m, "step")->valuedouble, n);
    cJSON_Delete(m);
}

START_TEST(golden_case)
{
    const char *file = case_path[_i];
    cJSON *c = read_json(file);
    ck_assert_msg(c != NULL, "%s: cannot read", file);
    const char *name = get(c, "name")->valuestring;
    const cJSON *spec = get(c, "spec"), *exp = get(c, "expect"), *train = get(exp, "train");
    const cJSON *jt = get(c, "tolerance");
    tol_t t = {get(jt, "rel")->valuedouble, get(jt, "abs")->valuedouble};
    char path[128], what[256];

    /* 1-3: create, predict, boundary. */
    int64_t id = create(spec, name);
    snprintf(path, sizeof path, "/v1/models/%lld/predict", (long long)id);
    cJSON *in = xy(c, 0);
    cJSON *p = post(path, in, 200, name);
    cJSON_Delete(in);
    snprintf(what, sizeof what, "%s outputs", name);
    expect_close(get(p, "outputs"), get(exp, "outputs"), t, 0, what);
    if (get(exp, "classes") != NULL) {
        snprintf(what, sizeof what, "%s classes", name);
        expect_close(get(p, "classes"), get(exp, "classes"), t, 1, what);
    } else {
        ck_assert_msg(get(p, "classes") == NULL, "%s: classes for a non-classifier", name);
    }
    if (get(exp, "margins") != NULL) {
        snprintf(what, sizeof what, "%s margins", name);
        expect_close(get(p, "margins"), get(exp, "margins"), t, 0, what);
    } else {
        ck_assert_msg(get(p, "margins") == NULL, "%s: unexpected margins", name);
    }
    cJSON_Delete(p);
    snprintf(path, sizeof path, "/v1/models/%lld/boundary", (long long)id);
    if (get(exp, "boundary") != NULL) {
        cJSON *b = get_json(path, 200, name);
        snprintf(what, sizeof what, "%s boundary", name);
        expect_close(b, get(exp, "boundary"), t, 0, what);
        cJSON_Delete(b);
    } else {
        cJSON *b = get_json(path, 400, name);
        ck_assert_str_eq(get(get(b, "error"), "code")->valuestring, "invalid_argument");
        cJSON_Delete(b);
    }

    /* 4: loss and gradients on (x, y). */
    in = xy(c, 1);
    snprintf(path, sizeof path, "/v1/models/%lld/loss", (long long)id);
    cJSON *l = post(path, in, 200, name);
    snprintf(what, sizeof what, "%s loss", name);
    expect_close(get(l, "loss"), get(exp, "loss"), t, 0, what);
    ck_assert_int_eq(get(l, "rows")->valueint, cJSON_GetArraySize(get(c, "x")));
    cJSON_Delete(l);
    snprintf(path, sizeof path, "/v1/models/%lld/gradients", (long long)id);
    if (get(exp, "gradients") != NULL) {
        cJSON *g = post(path, in, 200, name);
        snprintf(what, sizeof what, "%s gradients", name);
        expect_close(get(g, "gradients"), get(exp, "gradients"), t, 0, what);
        snprintf(what, sizeof what, "%s norm", name);
        expect_close(get(g, "norm"), get(exp, "grad_norm"), t, 0, what);
        expect_close(get(g, "loss"), get(exp, "loss"), t, 0, what);
        cJSON_Delete(g);
        snprintf(path, sizeof path, "/v1/models/%lld/gradcheck", (long long)id);
        cJSON *gc = post(path, in, 200, name);
        ck_assert_msg(cJSON_IsTrue(get(gc, "ok")), "%s: gradcheck not ok", name);
        cJSON_Delete(gc);
    } else {
        cJSON *g = post(path, in, 400, name);
        cJSON_Delete(g);
    }

    /* 5-6: store the batch, train n full-batch steps. */
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    cJSON_Delete(post(path, in, 201, name));
    int n = get(train, "steps")->valueint;
    double eta = get(train, "learning_rate")->valuedouble;
    cJSON *treq = cJSON_CreateObject();
    cJSON_AddNumberToObject(treq, "steps", n);
    cJSON_AddNumberToObject(treq, "learning_rate", eta);
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    cJSON *r = post(path, treq, 200, name);
    cJSON_Delete(treq);
    snprintf(what, sizeof what, "%s loss_before", name);
    expect_close(get(r, "loss_before"), cJSON_GetArrayItem(get(train, "losses"), 0), t, 0, what);
    snprintf(what, sizeof what, "%s loss_after", name);
    expect_close(get(r, "loss_after"), get(train, "loss_after"), t, 0, what);
    ck_assert_int_eq(get(r, "steps_run")->valueint, n);
    ck_assert_int_eq(get(r, "step")->valueint, n);
    ck_assert_int_eq((int)get(r, "model_id")->valuedouble, (int)id);
    ck_assert_str_eq(get(r, "stopped")->valuestring, "max_steps");
    ck_assert(cJSON_IsNumber(get(r, "elapsed_ms")));
    cJSON_Delete(r);
    check_history(id, train, t, name);
    check_parameters(id, train, n, t, name);

    /* The same trajectory through n POST /step calls on a fresh model. */
    int64_t id2 = create(spec, name);
    cJSON_AddNumberToObject(in, "learning_rate", eta);
    snprintf(path, sizeof path, "/v1/models/%lld/step", (long long)id2);
    for (int k = 0; k < n; ++k) {
        cJSON *s = post(path, in, 200, name);
        snprintf(what, sizeof what, "%s step %d loss_before", name, k);
        expect_close(get(s, "loss_before"), cJSON_GetArrayItem(get(train, "losses"), k), t, 0,
                     what);
        ck_assert_int_eq(get(s, "steps_run")->valueint, 1);
        ck_assert_int_eq(get(s, "step")->valueint, k + 1);
        if (k == n - 1) {
            snprintf(what, sizeof what, "%s step loss_after", name);
            expect_close(get(s, "loss_after"), get(train, "loss_after"), t, 0, what);
        }
        cJSON_Delete(s);
    }
    check_history(id2, train, t, name);
    check_parameters(id2, train, n, t, name);
    cJSON_Delete(in);
    cJSON_Delete(c);
}
END_TEST

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collect the model cases (files with a "spec") of the golden directory. */
static void collect(const char *dir)
{
    DIR *dp = opendir(dir);
    if (dp == NULL) {
        fprintf(stderr, "it_golden: cannot open %s\n", dir);
        exit(2);
    }
    struct dirent *e;
    while ((e = readdir(dp)) != NULL && n_cases < MAX_CASES) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        cJSON *j = read_json(path);
        if (j != NULL && get(j, "spec") != NULL)
            case_path[n_cases++] = strdup(path);
        cJSON_Delete(j);
    }
    closedir(dp);
    qsort(case_path, (size_t)n_cases, sizeof *case_path, by_name);
}

int main(int argc, char **argv)
{
    it_init(argc, argv);
    collect(it_golden);
    if (n_cases == 0) {
        fprintf(stderr, "it_golden: no model cases in %s\n", it_golden);
        return 1;
    }
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("golden");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, golden_case, 0, n_cases);
    suite_add_tcase(s, tc);
    int rc = it_run(s);
    for (int i = 0; i < n_cases; ++i)
        free(case_path[i]);
    return rc;
}
