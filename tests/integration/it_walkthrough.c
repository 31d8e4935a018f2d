/* tests/integration/it_walkthrough.c -- the README / docs/api.md tour stays true: run
 * examples/walkthrough.sh against a spawned daemon and check what it printed, then replay the
 * same requests here and compare loss, gradients, history and parameters with the golden case
 * seed_worked_example. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    if (buf == NULL || got != (size_t)n) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    return j;
}

static const cJSON *get(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(v != NULL, "missing \"%s\"", key);
    return v;
}

/* Numbers or nested arrays equal within |got − want| <= 1e-12 + 1e-9 |want|. */
static void assert_close(const cJSON *got, const cJSON *want, const char *what)
{
    if (cJSON_IsNumber(want)) {
        ck_assert_msg(cJSON_IsNumber(got), "%s: not a number", what);
        double g = got->valuedouble, w = want->valuedouble;
        ck_assert_msg(fabs(g - w) <= 1e-12 + 1e-9 * fabs(w), "%s: got %.17g, expected %.17g",
                      what, g, w);
        return;
    }
    ck_assert_msg(cJSON_IsArray(got) && cJSON_GetArraySize(got) == cJSON_GetArraySize(want),
                  "%s: shapes differ", what);
    const cJSON *g = got->child;
    for (const cJSON *w = want->child; w != NULL; w = w->next, g = g->next)
        assert_close(g, w, what);
}

static cJSON *post(const char *path, const char *body, long want_status)
{
    long status = 0;
    cJSON *j = it_json("POST", path, body, &status);
    ck_assert_msg(status == want_status, "POST %s: status %ld", path, status);
    ck_assert_ptr_nonnull(j);
    return j;
}

/* The docs' commands, verbatim (tests/integration/it_walkthrough.c and examples/walkthrough.sh
 * must change together with docs/api.md and README.md). */
#define SPEC                                                                                 \
    "{\"kind\":\"mlp\",\"inputs\":2,\"hidden\":[{\"units\":3,\"activation\":\"sigmoid\"}],"   \
    "\"output_activation\":\"linear\",\"loss\":\"l2\",\"reduction\":\"sum\",\"parameters\":" \
    "{\"W1\":[[0.01,0.02,0.03],[0.03,0.01,0.02],[0.02,0.03,0.01]],"                          \
    "\"W2\":[[0.01,0.02,0.03,0.04]]},\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.01}}"
#define DATA "{\"x\":[[1,2],[1,3],[2,2]],\"y\":[8,11,10]}"

START_TEST(same_numbers_as_golden)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed_worked_example.json", it_golden);
    cJSON *golden = read_json(path);
    ck_assert_msg(golden != NULL, "cannot read %s", path);
    const cJSON *expect = get(golden, "expect");
    const cJSON *train = get(expect, "train");

    cJSON *m = post("/v1/models", SPEC, 201);
    char base[64];
    snprintf(base, sizeof base, "/v1/models/%d", (int)get(m, "id")->valuedouble);
    cJSON_Delete(m);
    char url[128];
    snprintf(url, sizeof url, "%s/batches", base);
    cJSON *b = post(url, DATA, 201);
    ck_assert_int_eq((int)get(b, "total_rows")->valuedouble, 3);
    cJSON_Delete(b);

    snprintf(url, sizeof url, "%s/predict", base);
    cJSON *p = post(url, "{\"x\":[[1,2],[1,3],[2,2]]}", 200);
    assert_close(get(p, "outputs"), get(expect, "outputs"), "outputs");
    cJSON_Delete(p);

    snprintf(url, sizeof url, "%s/loss", base);
    cJSON *l = post(url, "{}", 200);
    assert_close(get(l, "loss"), get(expect, "loss"), "loss");
    ck_assert_double_eq_tol(get(l, "loss")->valuedouble, 281.7000511808419, 1e-9);
    cJSON_Delete(l);

    snprintf(url, sizeof url, "%s/gradients", base);
    cJSON *g = post(url, "{}", 200);
    assert_close(get(get(g, "gradients"), "W1"), get(get(expect, "gradients"), "W1"), "dW1");
    assert_close(get(get(g, "gradients"), "W2"), get(get(expect, "gradients"), "W2"), "dW2");
    assert_close(get(g, "norm"), get(expect, "grad_norm"), "norm");
    cJSON_Delete(g);

    snprintf(url, sizeof url, "%s/train", base);
    cJSON *t = post(url, "{\"steps\":3}", 200);
    ck_assert_int_eq((int)get(t, "steps_run")->valuedouble, 3);
    ck_assert_str_eq(get(t, "stopped")->valuestring, "max_steps");
    assert_close(get(t, "loss_after"), get(train, "loss_after"), "loss_after");
    cJSON_Delete(t);

    long status = 0;
    snprintf(url, sizeof url, "%s/history", base);
    cJSON *h = it_json("GET", url, NULL, &status);
    ck_assert_int_eq(status, 200);
    const cJSON *rows = get(h, "history");
    ck_assert_int_eq(cJSON_GetArraySize(rows), 3);
    int k = 0;
    const cJSON *want = get(train, "losses")->child;
    for (const cJSON *r = rows->child; r != NULL; r = r->next, want = want->next, ++k) {
        ck_assert_int_eq((int)get(r, "step")->valuedouble, k);
        assert_close(get(r, "loss"), want, "history loss");
    }
    ck_assert(cJSON_IsNull(get(h, "next")));
    cJSON_Delete(h);

    snprintf(url, sizeof url, "%s/parameters", base);
    cJSON *pa = it_json("GET", url, NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq((int)get(pa, "step")->valuedouble, 3);
    assert_close(get(get(pa, "parameters"), "W1"), get(get(train, "parameters"), "W1"), "W1");
    assert_close(get(get(pa, "parameters"), "W2"), get(get(train, "parameters"), "W2"), "W2");
    cJSON_Delete(pa);
    cJSON_Delete(golden);
}
END_TEST

START_TEST(script_runs)
{
    if (system("command -v curl >/dev/null 2>&1") != 0)
        IT_SKIP("script_runs: no curl program; examples/walkthrough.sh not run");
    /* argv[2] is <source>/tests/golden. */
    char script[4096], cmd[8192];
    snprintf(script, sizeof script, "%s/../../examples/walkthrough.sh", it_golden);
    ck_assert_msg(access(script, R_OK) == 0, "cannot read %s", script);
    snprintf(cmd, sizeof cmd, "NEUROND_URL='%s' bash '%s' 2>&1", it_base_url(), script);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    static char out[1 << 16];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    int rc = pclose(f);
    ck_assert_msg(rc == 0, "walkthrough.sh failed (%d):\n%s", rc, out);
    ck_assert_msg(strstr(out, "{\"loss\":281.70005118084") != NULL, "no loss line:\n%s", out);
    ck_assert_msg(strstr(out, "\"steps_run\":3,\"step\":3") != NULL, "no train result:\n%s", out);
    ck_assert_msg(strstr(out, "# Done: model 1,") != NULL, "no final line:\n%s", out);

    /* The script left its model behind, trained to step 3. */
    long status = 0;
    cJSON *m = it_json("GET", "/v1/models/1", NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq((int)get(m, "step")->valuedouble, 3);
    ck_assert_int_eq((int)get(m, "rows")->valuedouble, 3);
    cJSON_Delete(m);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("walkthrough");
    TCase *tc = tcase_create("walkthrough");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, same_numbers_as_golden);
    suite_add_tcase(s, tc);
    /* Needs the curl program: a ctest test of its own (tests/CMakeLists.txt), so that its skip
     * hides nothing else. */
    TCase *ts = it_separate_case(s, "script");
    tcase_add_checked_fixture(ts, setup, teardown);
    tcase_set_timeout(ts, 60);
    tcase_add_test(ts, script_runs);
    return it_run(s);
}
