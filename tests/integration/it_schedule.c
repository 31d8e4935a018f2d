/* tests/integration/it_schedule.c -- learning-rate schedules over HTTP: a run split over two
 * calls equals one call, restoring a checkpoint and training again reproduces the run, the
 * schedule is stored, exported and imported, and malformed schedules are 400s naming the field
 * that change nothing. The golden vectors (it_golden) fix the rates themselves. */
#include <check.h>
#include <inttypes.h>
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

/* Softmax, Adam, cosine after a warmup: every part of the rate formula moves in 9 steps. */
static const char SPEC[] =
    "{\"kind\":\"softmax\",\"inputs\":2,\"classes\":3,"
    "\"init\":{\"method\":\"uniform\",\"scale\":0.3,\"seed\":5},"
    "\"optimizer\":{\"method\":\"adam\",\"learning_rate\":0.1,"
    "\"schedule\":{\"kind\":\"cosine\",\"t_max\":4,\"eta_min\":0.01,\"warmup_steps\":2}}}";
static const char DATA[] =
    "{\"x\":[[0.5,1.0],[-1.0,0.3],[2.0,-0.5],[0.1,0.1],[-0.7,-1.2],[1.3,0.8]],"
    "\"y\":[0,1,2,0,1,2]}";

static int64_t model_with_data(const char *spec)
{
    int64_t id = it_create_model(spec);
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches", id);
    it_call_free("POST", path, DATA, 201);
    return id;
}

static void train(int64_t id, int steps)
{
    char path[96], body[64];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/train", id);
    snprintf(body, sizeof body, "{\"steps\":%d}", steps);
    it_call_free("POST", path, body, 200);
}

/* GET `fmt` of model id, its member `key` printed: exact comparisons of doubles by their text
 * (the daemon prints the shortest text that reads back as the same double). */
static char *member_text(int64_t id, const char *fmt, const char *key)
{
    char path[128];
    snprintf(path, sizeof path, fmt, id);
    cJSON *j = it_call("GET", path, NULL, 200);
    ck_assert_ptr_nonnull(j);
    char *text = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, key));
    cJSON_Delete(j);
    return text;
}

/* The history rows' rates, without their times. */
static char *rates_text(int64_t id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/history", id);
    cJSON *j = it_call("GET", path, NULL, 200);
    cJSON *rates = cJSON_CreateArray(), *row;
    cJSON_ArrayForEach(row, cJSON_GetObjectItem(j, "history"))
        cJSON_AddItemToArray(rates, cJSON_Duplicate(cJSON_GetObjectItem(row, "learning_rate"), 0));
    char *text = cJSON_PrintUnformatted(rates);
    cJSON_Delete(rates);
    cJSON_Delete(j);
    return text;
}

static void expect_same_member(int64_t a, int64_t b, const char *fmt, const char *key)
{
    char *ta = member_text(a, fmt, key), *tb = member_text(b, fmt, key);
    ck_assert_str_eq(ta, tb);
    free(ta);
    free(tb);
}

START_TEST(split_calls_equal_one_call)
{
    int64_t one = model_with_data(SPEC), two = model_with_data(SPEC);
    train(one, 9);
    train(two, 3);
    train(two, 6);
    expect_same_member(one, two, "/v1/models/%" PRId64 "/parameters", "parameters");
    expect_same_member(one, two, "/v1/models/%" PRId64 "/parameters", "step");
    char *ra = rates_text(one), *rb = rates_text(two);
    ck_assert_str_eq(ra, rb);
    /* Warmup 0.05, 0.1; cosine from 0.1 to 0.01 over 4 steps; then held at eta_min. */
    cJSON *rates = cJSON_Parse(ra);
    ck_assert_int_eq(cJSON_GetArraySize(rates), 9);
    const double want[] = {0.05, 0.1, 0.1, 0.08681980515339464, 0.055, 0.023180194846605363,
                           0.01, 0.01, 0.01};
    for (int i = 0; i < 9; ++i)
        ck_assert_double_eq_tol(cJSON_GetArrayItem(rates, i)->valuedouble, want[i], 1e-15);
    cJSON_Delete(rates);
    free(ra);
    free(rb);
}
END_TEST

START_TEST(restore_then_train_reproduces_the_run)
{
    int64_t id = model_with_data(SPEC);
    char path[96];
    train(id, 3);
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/checkpoints", id);
    cJSON *cp = it_call("POST", path, "{\"label\":\"at 3\"}", 201);
    int64_t cp_id = (int64_t)it_num(cp, "checkpoint_id");
    ck_assert_int_eq((int)it_num(cp, "step"), 3);
    cJSON_Delete(cp);
    train(id, 5);
    char *params = member_text(id, "/v1/models/%" PRId64 "/parameters", "parameters");
    char *rates = rates_text(id);

    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/restore", id);
    char body[64];
    snprintf(body, sizeof body, "{\"checkpoint_id\":%" PRId64 "}", cp_id);
    it_call_free("POST", path, body, 200);
    train(id, 5);
    char *params2 = member_text(id, "/v1/models/%" PRId64 "/parameters", "parameters");
    char *rates2 = rates_text(id);
    ck_assert_str_eq(params, params2);
    ck_assert_str_eq(rates, rates2);
    free(params);
    free(params2);
    free(rates);
    free(rates2);
}
END_TEST

START_TEST(schedule_is_stored_exported_and_imported)
{
    int64_t id = model_with_data(SPEC);
    cJSON *m = it_call("GET", "/v1/models/1", NULL, 200);
    ck_assert_int_eq((int)it_num(m, "id"), (int)id);
    cJSON *s = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "spec"),
                                                       "optimizer"), "schedule");
    ck_assert_str_eq(cJSON_GetObjectItem(s, "kind")->valuestring, "cosine");
    ck_assert_int_eq((int)it_num(s, "t_max"), 4);
    ck_assert_double_eq(it_num(s, "eta_min"), 0.01);
    ck_assert_int_eq((int)it_num(s, "warmup_steps"), 2);
    cJSON_Delete(m);

    train(id, 2);
    cJSON *ex = it_call("GET", "/v1/models/1/export", NULL, 200);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(ex, "spec"), "name");
    char *body = cJSON_PrintUnformatted(ex);
    cJSON_Delete(ex);
    cJSON *imp = it_call("POST", "/v1/models/import", body, 201);
    free(body);
    int64_t copy = (int64_t)it_num(imp, "id");
    ck_assert_int_eq((int)it_num(imp, "step"), 2);
    cJSON_Delete(imp);
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches", copy);
    it_call_free("POST", path, DATA, 201);
    /* Both continue at global step 2, in the cosine part of the schedule: the same rates.
     * (The parameters agree to rounding: the original's kernels kept their state between its
     * calls, the copy's start afresh.) */
    train(id, 4);
    train(copy, 4);
    char *ra = rates_text(id), *rb = rates_text(copy);
    cJSON *a = cJSON_Parse(ra), *b = cJSON_Parse(rb);
    ck_assert_int_eq(cJSON_GetArraySize(a), 6);
    ck_assert_int_eq(cJSON_GetArraySize(b), 4);
    for (int i = 0; i < 4; ++i)
        ck_assert(cJSON_GetArrayItem(a, i + 2)->valuedouble ==
                  cJSON_GetArrayItem(b, i)->valuedouble);
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(ra);
    free(rb);
    char path2[96];
    snprintf(path2, sizeof path2, "/v1/models/%" PRId64 "/parameters", id);
    cJSON *pa = it_call("GET", path2, NULL, 200);
    snprintf(path2, sizeof path2, "/v1/models/%" PRId64 "/parameters", copy);
    cJSON *pb = it_call("GET", path2, NULL, 200);
    const cJSON *wa = cJSON_GetObjectItem(cJSON_GetObjectItem(pa, "parameters"), "W1");
    const cJSON *wb = cJSON_GetObjectItem(cJSON_GetObjectItem(pb, "parameters"), "W1");
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) {
            double x = cJSON_GetArrayItem(cJSON_GetArrayItem(wa, r), c)->valuedouble;
            double y = cJSON_GetArrayItem(cJSON_GetArrayItem(wb, r), c)->valuedouble;
            ck_assert_double_eq_tol(x, y, 1e-12 * (1.0 + fabs(x)));
        }
    cJSON_Delete(pa);
    cJSON_Delete(pb);
}
END_TEST

/* PUT /parameters keeps the step, so the schedule goes on from it; /step uses the rate of the
 * model's step. Step schedule: 0.2 for steps 0-1, 0.1 for 2-3, 0.05 for 4-5. */
START_TEST(put_parameters_and_step_follow_the_global_step)
{
    int64_t id = model_with_data("{\"kind\":\"linear\",\"inputs\":2,\"optimizer\":{\"method\":"
                                 "\"sgd\",\"learning_rate\":0.2,\"schedule\":{\"kind\":\"step\","
                                 "\"step_size\":2,\"gamma\":0.5}}}");
    char path[96];
    train(id, 3);
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/parameters", id);
    it_call_free("PUT", path, "{\"parameters\":{\"W1\":[[0,0,0]]}}", 200);
    train(id, 1);                                   /* step 3: 0.1 */
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/step", id);
    it_call_free("POST", path, "{\"x\":[[1,2]],\"y\":[3]}", 200);           /* step 4: 0.05 */
    it_call_free("POST", path, "{\"x\":[[1,2]],\"y\":[3],\"learning_rate\":1}", 200); /* 0.25 */
    char *rates = rates_text(id);
    ck_assert_str_eq(rates, "[0.2,0.2,0.1,0.1,0.05,0.25]");
    free(rates);
}
END_TEST

/* A spec that must be refused with 400 naming `field`, leaving no model behind. */
static void expect_refused(const char *optimizer, const char *field)
{
    char spec[512];
    snprintf(spec, sizeof spec, "{\"kind\":\"logistic\",\"inputs\":2,\"optimizer\":%s}",
             optimizer);
    cJSON *e = it_call("POST", "/v1/models", spec, 400);
    cJSON *err = cJSON_GetObjectItem(e, "error");
    ck_assert_str_eq(cJSON_GetObjectItem(err, "code")->valuestring, "invalid_argument");
    const cJSON *f = cJSON_GetObjectItem(err, "field");
    ck_assert_msg(cJSON_IsString(f) && strcmp(f->valuestring, field) == 0,
                  "%s: field %s, expected %s", optimizer, cJSON_IsString(f) ? f->valuestring : "-",
                  field);
    cJSON_Delete(e);
    cJSON *list = it_call("GET", "/v1/models", NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(list, "models")), 0);
    cJSON_Delete(list);
}

START_TEST(malformed_schedules_are_refused)
{
    static const struct {
        const char *optimizer, *field;
    } cases[] = {
        {"{\"schedule\":\"cosine\"}", "optimizer.schedule"},
        {"{\"schedule\":{}}", "optimizer.schedule.kind"},
        {"{\"schedule\":{\"kind\":\"linear\"}}", "optimizer.schedule.kind"},
        {"{\"schedule\":{\"kind\":3}}", "optimizer.schedule.kind"},
        {"{\"schedule\":{\"kind\":\"step\"}}", "optimizer.schedule.step_size"},
        {"{\"schedule\":{\"kind\":\"step\",\"step_size\":0}}", "optimizer.schedule.step_size"},
        {"{\"schedule\":{\"kind\":\"step\",\"step_size\":2.5}}", "optimizer.schedule.step_size"},
        {"{\"schedule\":{\"kind\":\"step\",\"step_size\":2,\"gamma\":-1}}",
         "optimizer.schedule.gamma"},
        {"{\"schedule\":{\"kind\":\"exponential\"}}", "optimizer.schedule.gamma"},
        {"{\"schedule\":{\"kind\":\"exponential\",\"gamma\":1.5}}", "optimizer.schedule.gamma"},
        {"{\"schedule\":{\"kind\":\"exponential\",\"gamma\":0}}", "optimizer.schedule.gamma"},
        {"{\"schedule\":{\"kind\":\"cosine\"}}", "optimizer.schedule.t_max"},
        {"{\"schedule\":{\"kind\":\"cosine\",\"t_max\":10,\"eta_min\":-0.1}}",
         "optimizer.schedule.eta_min"},
        {"{\"schedule\":{\"kind\":\"cosine\",\"t_max\":10,\"step_size\":3}}",
         "optimizer.schedule.step_size"},
        {"{\"schedule\":{\"kind\":\"constant\",\"warmup_steps\":-1}}",
         "optimizer.schedule.warmup_steps"},
        {"{\"schedule\":{\"kind\":\"constant\",\"warmup\":5}}", "optimizer.schedule.warmup"},
        {"{\"method\":\"lbfgs\",\"schedule\":{\"kind\":\"exponential\",\"gamma\":0.9}}",
         "optimizer.schedule"},
        /* A warmup ramp on the constant kind is a schedule too. */
        {"{\"method\":\"lbfgs\",\"schedule\":{\"kind\":\"constant\",\"warmup_steps\":3}}",
         "optimizer.schedule"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        expect_refused(cases[i].optimizer, cases[i].field);
    /* lbfgs with the constant schedule is its default, and fine. */
    it_create_model("{\"kind\":\"logistic\",\"inputs\":2,\"optimizer\":{\"method\":\"lbfgs\","
                    "\"schedule\":{\"kind\":\"constant\"}}}");
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("schedule");
    TCase *tc = tcase_create("schedule");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, split_calls_equal_one_call);
    tcase_add_test(tc, restore_then_train_reproduces_the_run);
    tcase_add_test(tc, schedule_is_stored_exported_and_imported);
    tcase_add_test(tc, malformed_schedules_are_refused);
    tcase_add_test(tc, put_parameters_and_step_follow_the_global_step);
    suite_add_tcase(s, tc);
    return it_run(s);
}
