/* tests/integration/it_validation.c -- validation splits over HTTP: batches of either split in
 * JSON, CSV and raw; training reads train rows only; history and train results carry the
 * validation loss; /loss, /gradients, /gradcheck and /evaluate on each split; early stopping
 * against a reference computed step by step (sync and async, restore on and off); bad input is
 * a 400 naming the field that changes nothing. */
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

/* Separable train rows; validation rows with two labels the boundary gets wrong, so the
 * validation loss first falls, then rises as the weights grow. */
static const char SPEC[] =
    "{\"kind\":\"logistic\",\"inputs\":2,\"init\":{\"method\":\"zeros\"},"
    "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.5}}";
static const char TRAIN[] =
    "{\"x\":[[0,0],[1,1],[2,0],[0,2],[3,3],[1,0],[-1,-1],[2,2]],\"y\":[0,1,1,0,1,0,0,1]}";
static const char VAL[] =
    "{\"x\":[[0.5,0.5],[2,2],[1,2],[1.5,0.2],[0.2,1.6]],\"y\":[0,1,1,0,1]}";

static char *pathf(const char *fmt, int64_t id)
{
    static char buf[4][128];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], fmt, id);
    return p;
}

static int64_t model_with_splits(const char *spec)
{
    int64_t id = it_create_model(spec);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches", id), TRAIN, 201);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches?split=validation", id), VAL, 201);
    return id;
}

static const cJSON *get(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(v != NULL, "no member %s", key);
    return v;
}

/* The answer's error names `field` with invalid_argument. */
static void expect_400(const char *method, const char *path, const char *body, const char *field)
{
    cJSON *e = it_call(method, path, body, 400);
    const cJSON *err = get(e, "error");
    ck_assert_str_eq(get(err, "code")->valuestring, "invalid_argument");
    ck_assert_msg(strcmp(get(err, "field")->valuestring, field) == 0, "%s %s: field %s, want %s",
                  method, path, get(err, "field")->valuestring, field);
    cJSON_Delete(e);
}

static double loss_of(int64_t id, const char *body)
{
    cJSON *j = it_call("POST", pathf("/v1/models/%" PRId64 "/loss", id), body, 200);
    double v = it_num(j, "loss");
    cJSON_Delete(j);
    return v;
}

static void expect_rel(double got, double want, double rel, const char *what)
{
    ck_assert_msg(fabs(got - want) <= rel * fmax(1.0, fabs(want)), "%s: %.17g, expected %.17g",
                  what, got, want);
}

START_TEST(splits_are_stored_and_counted)
{
    int64_t id = it_create_model(SPEC);
    cJSON *b = it_call("POST", pathf("/v1/models/%" PRId64 "/batches", id), TRAIN, 201);
    ck_assert_int_eq((int)it_num(b, "total_rows"), 8);
    cJSON_Delete(b);
    /* JSON with the split in the body; CSV and raw with ?split=. */
    b = it_call("POST", pathf("/v1/models/%" PRId64 "/batches", id),
                "{\"x\":[[0.5,0.5],[2,2]],\"y\":[0,1],\"split\":\"validation\"}", 201);
    ck_assert_int_eq((int)it_num(b, "rows"), 2);
    ck_assert_int_eq((int)it_num(b, "total_rows"), 2);
    cJSON_Delete(b);
    long status = 0;
    char *text = NULL;
    it_request("POST", pathf("/v1/models/%" PRId64 "/batches?split=validation", id), "text/csv",
               "x1,x2,y\n1,2,1\n", &status, &text, NULL);
    ck_assert_msg(status == 201, "csv: %ld %s", status, text);
    free(text);
    const double raw[6] = {1.5, 0.2, 0, 0.2, 1.6, 1};
    it_resp_t r = {0};
    it_call_t c = {.method = "POST",
                   .path = pathf("/v1/models/%" PRId64 "/batches?split=validation&rows=2&cols=3",
                                 id),
                   .content_type = "application/octet-stream", .body = (const char *)raw,
                   .len = sizeof raw};
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_msg(r.status == 201, "raw: %ld %s", r.status, r.body);
    it_resp_free(&r);

    cJSON *m = it_call("GET", pathf("/v1/models/%" PRId64, id), NULL, 200);
    ck_assert_int_eq((int)it_num(m, "rows"), 8);
    ck_assert_int_eq((int)it_num(m, "validation_rows"), 5);
    cJSON_Delete(m);
    cJSON *list = it_call("GET", pathf("/v1/models/%" PRId64 "/batches", id), NULL, 200);
    const char *want[] = {"train", "validation", "validation", "validation"};
    ck_assert_int_eq(cJSON_GetArraySize(get(list, "batches")), 4);
    for (int i = 0; i < 4; ++i)
        ck_assert_str_eq(get(cJSON_GetArrayItem(get(list, "batches"), i), "split")->valuestring,
                         want[i]);
    int64_t second = (int64_t)it_num(cJSON_GetArrayItem(get(list, "batches"), 1), "batch_id");
    cJSON_Delete(list);

    /* The validation rows are those four batches, in order: the same loss as inline. */
    double stored = loss_of(id, "{\"split\":\"validation\"}");
    double inline_rows = loss_of(id, "{\"x\":[[0.5,0.5],[2,2],[1,2],[1.5,0.2],[0.2,1.6]],"
                                     "\"y\":[0,1,1,0,1]}");
    ck_assert(stored == inline_rows);

    /* A batch reads back with its split and rows exactly as stored. */
    char bpath[128];
    snprintf(bpath, sizeof bpath, "/v1/models/%" PRId64 "/batches/%" PRId64, id, second + 2);
    cJSON *rawb = it_call("GET", bpath, NULL, 200);
    ck_assert_str_eq(get(rawb, "split")->valuestring, "validation");
    ck_assert_int_eq((int)it_num(rawb, "rows"), 2);
    char *xy = cJSON_PrintUnformatted(get(rawb, "x"));
    ck_assert_str_eq(xy, "[[1.5,0.2],[0.2,1.6]]");
    free(xy);
    xy = cJSON_PrintUnformatted(get(rawb, "y"));
    ck_assert_str_eq(xy, "[0,1]");
    free(xy);
    cJSON_Delete(rawb);
    snprintf(bpath, sizeof bpath, "/v1/models/%" PRId64 "/batches/%" PRId64, id, second + 100);
    it_call_free("GET", bpath, NULL, 404);

    /* Deleting a validation batch takes its rows off validation_rows only. */
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches/%" PRId64, id, second);
    it_call_free("DELETE", path, NULL, 204);
    m = it_call("GET", pathf("/v1/models/%" PRId64, id), NULL, 200);
    ck_assert_int_eq((int)it_num(m, "rows"), 8);
    ck_assert_int_eq((int)it_num(m, "validation_rows"), 3);
    cJSON_Delete(m);

    /* A fork keeps each batch's split. */
    cJSON *f = it_call("POST", pathf("/v1/models/%" PRId64 "/fork", id), "{}", 201);
    ck_assert_int_eq((int)it_num(f, "validation_rows"), 3);
    ck_assert_int_eq((int)it_num(f, "rows"), 8);
    cJSON_Delete(f);
}
END_TEST

START_TEST(bad_splits_change_nothing)
{
    int64_t id = it_create_model(SPEC);
    const char *batches = pathf("/v1/models/%" PRId64 "/batches", id);
    expect_400("POST", pathf("/v1/models/%" PRId64 "/batches?split=test", id), TRAIN, "split");
    expect_400("POST", batches, "{\"x\":[[1,2]],\"y\":[1],\"split\":\"holdout\"}", "split");
    expect_400("POST", batches, "{\"x\":[[1,2]],\"y\":[1],\"split\":1}", "split");
    expect_400("POST", pathf("/v1/models/%" PRId64 "/batches?split=train", id),
               "{\"x\":[[1,2]],\"y\":[1],\"split\":\"validation\"}", "split");
    cJSON *m = it_call("GET", pathf("/v1/models/%" PRId64, id), NULL, 200);
    ck_assert_int_eq((int)it_num(m, "rows"), 0);
    ck_assert_int_eq((int)it_num(m, "validation_rows"), 0);
    cJSON_Delete(m);
    /* The same split in both places is fine. */
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches?split=validation", id),
                 "{\"x\":[[1,2]],\"y\":[1],\"split\":\"validation\"}", 201);

    /* Queries: an unknown split, a split without rows, a split beside inline rows. */
    static const char *const routes[] = {"loss", "gradients", "gradcheck", "evaluate"};
    for (size_t i = 0; i < 4; ++i) {
        char path[128];
        snprintf(path, sizeof path, "/v1/models/%" PRId64 "/%s", id, routes[i]);
        expect_400("POST", path, "{\"split\":\"test\"}", "split");
        expect_400("POST", path, "{\"split\":\"train\"}", "split");
        expect_400("POST", path, "{\"split\":[\"validation\"]}", "split");
        expect_400("POST", path, "{\"split\":\"validation\",\"x\":[[1,2]],\"y\":[1]}", "split");
    }
    /* Early stopping without validation rows (this model has train rows only), with
     * history_every 0, or malformed. */
    int64_t only_train = it_create_model(SPEC);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches", only_train), TRAIN, 201);
    const char *train = pathf("/v1/models/%" PRId64 "/train", only_train);
    expect_400("POST", train, "{\"steps\":5,\"early_stopping\":{\"patience\":2}}",
               "early_stopping");
    expect_400("POST", train, "{\"steps\":5,\"async\":true,\"early_stopping\":{\"patience\":2}}",
               "early_stopping");
    int64_t both = model_with_splits(SPEC);
    train = pathf("/v1/models/%" PRId64 "/train", both);
    expect_400("POST", train,
               "{\"steps\":5,\"history_every\":0,\"early_stopping\":{\"patience\":2}}",
               "early_stopping");
    expect_400("POST", train, "{\"early_stopping\":{}}", "early_stopping");
    expect_400("POST", train, "{\"early_stopping\":{\"patience\":0}}", "early_stopping");
    expect_400("POST", train, "{\"early_stopping\":{\"patience\":1.5}}",
               "early_stopping");
    expect_400("POST", train, "{\"early_stopping\":{\"patience\":2,\"min_delta\":-1}}",
               "early_stopping.min_delta");
    expect_400("POST", train, "{\"early_stopping\":{\"patience\":2,\"restore_best\":1}}",
               "early_stopping.restore_best");
    expect_400("POST", train, "{\"early_stopping\":{\"patience\":2,\"patients\":3}}",
               "early_stopping.patients");
    expect_400("POST", train, "{\"early_stopping\":true}", "early_stopping");
    cJSON *m2 = it_call("GET", pathf("/v1/models/%" PRId64, both), NULL, 200);
    ck_assert_int_eq((int)it_num(m2, "step"), 0);
    cJSON_Delete(m2);
    cJSON *h = it_call("GET", pathf("/v1/models/%" PRId64 "/history", both), NULL, 200);
    ck_assert_int_eq(cJSON_GetArraySize(get(h, "history")), 0);
    cJSON_Delete(h);
}
END_TEST

START_TEST(training_reads_train_rows_and_records_validation)
{
    int64_t plain = it_create_model(SPEC);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches", plain), TRAIN, 201);
    int64_t id = model_with_splits(SPEC);
    cJSON *a = it_call("POST", pathf("/v1/models/%" PRId64 "/train", plain),
                       "{\"steps\":7,\"history_every\":3}", 200);
    cJSON *b = it_call("POST", pathf("/v1/models/%" PRId64 "/train", id),
                       "{\"steps\":7,\"history_every\":3}", 200);
    /* Validation rows change nothing in training. */
    ck_assert(it_num(a, "loss_after") == it_num(b, "loss_after"));
    ck_assert(cJSON_GetObjectItem(a, "val_loss_after") == NULL);
    ck_assert(cJSON_GetObjectItem(a, "best_step") == NULL);
    double val_after = it_num(b, "val_loss_after");
    ck_assert(val_after == loss_of(id, "{\"split\":\"validation\"}"));
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON *pa = it_call("GET", pathf("/v1/models/%" PRId64 "/parameters", plain), NULL, 200);
    cJSON *pb = it_call("GET", pathf("/v1/models/%" PRId64 "/parameters", id), NULL, 200);
    char *ta = cJSON_PrintUnformatted(get(pa, "parameters"));
    char *tb = cJSON_PrintUnformatted(get(pb, "parameters"));
    ck_assert_str_eq(ta, tb);
    free(ta);
    free(tb);
    cJSON_Delete(pa);
    cJSON_Delete(pb);

    /* Rows 0, 3, 6 (every 3rd, and the last), each with the validation values at θ_t. */
    cJSON *h = it_call("GET", pathf("/v1/models/%" PRId64 "/history", id), NULL, 200);
    const cJSON *rows = get(h, "history");
    ck_assert_int_eq(cJSON_GetArraySize(rows), 3);
    int64_t ref = model_with_splits(SPEC);
    for (int i = 0; i < 3; ++i) {
        const cJSON *r = cJSON_GetArrayItem(rows, i);
        ck_assert_int_eq((int)it_num(r, "step"), 3 * i);
        cJSON *l = it_call("POST", pathf("/v1/models/%" PRId64 "/loss", ref),
                           "{\"split\":\"validation\"}", 200);
        ck_assert(it_num(r, "val_loss") == it_num(l, "loss"));
        ck_assert(it_num(r, "val_accuracy") == it_num(l, "accuracy"));
        cJSON_Delete(l);
        it_call_free("POST", pathf("/v1/models/%" PRId64 "/train", ref),
                     "{\"steps\":3,\"history_every\":0}", 200);
    }
    cJSON_Delete(h);
    h = it_call("GET", pathf("/v1/models/%" PRId64 "/history", plain), NULL, 200);
    ck_assert(cJSON_GetObjectItem(cJSON_GetArrayItem(get(h, "history"), 0), "val_loss") == NULL);
    cJSON_Delete(h);

    /* /step on an inline batch records the validation values too. */
    cJSON *s = it_call("POST", pathf("/v1/models/%" PRId64 "/step", id),
                       "{\"x\":[[1,1]],\"y\":[1]}", 200);
    ck_assert(cJSON_IsNumber(get(s, "val_loss_after")));
    cJSON_Delete(s);
    h = it_call("GET", pathf("/v1/models/%" PRId64 "/history?after_step=6", id), NULL, 200);
    ck_assert(cJSON_IsNumber(get(cJSON_GetArrayItem(get(h, "history"), 0), "val_loss")));
    cJSON_Delete(h);
}
END_TEST

/* Accuracy is correct/rows, as /evaluate and scikit-learn count it: with one row of five right,
 * 0.2 exactly, not 1 − 4/5 = 0.19999999999999996. All three answers agree to the bit. */
START_TEST(accuracy_counts_the_correct_rows)
{
    int64_t id = it_create_model(SPEC);   /* zeros: z = 0 everywhere, so every row says 0 */
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches", id), TRAIN, 201);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches?split=validation", id),
                 "{\"x\":[[0,0],[1,1],[2,0],[0,2],[3,3]],\"y\":[1,1,1,1,0]}", 201);
    cJSON *l = it_call("POST", pathf("/v1/models/%" PRId64 "/loss", id),
                       "{\"split\":\"validation\"}", 200);
    ck_assert(it_num(l, "accuracy") == 0.2);
    cJSON_Delete(l);
    cJSON *e = it_call("POST", pathf("/v1/models/%" PRId64 "/evaluate", id),
                       "{\"split\":\"validation\"}", 200);
    ck_assert(it_num(get(e, "metrics"), "accuracy") == 0.2);
    cJSON_Delete(e);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/train", id), "{\"steps\":1}", 200);
    cJSON *h = it_call("GET", pathf("/v1/models/%" PRId64 "/history", id), NULL, 200);
    ck_assert(it_num(cJSON_GetArrayItem(get(h, "history"), 0), "val_accuracy") == 0.2);
    cJSON_Delete(h);
}
END_TEST

/* An mlp with several sigmoid outputs has independent 0/1 targets and no single class:
 * /evaluate answers its loss with metrics {} (it used to read the labels as one column and
 * crash the daemon), and its history rows carry val_loss without val_accuracy. */
START_TEST(several_sigmoid_outputs_evaluate_to_the_loss)
{
    static const char rows[] = "{\"x\":[[0.1,0.2],[0.5,-0.3],[1,1],[-1,0.4]],"
                               "\"y\":[[0,1],[1,1],[0,0],[1,0]]}";
    int64_t id = it_create_model("{\"kind\":\"mlp\",\"inputs\":2,\"outputs\":2,"
                                 "\"hidden\":[{\"units\":3,\"activation\":\"tanh\"}],"
                                 "\"output_activation\":\"sigmoid\"}");
    cJSON *e = it_call("POST", pathf("/v1/models/%" PRId64 "/evaluate", id), rows, 200);
    ck_assert_int_eq((int)it_num(e, "rows"), 4);
    ck_assert(it_num(e, "loss") == loss_of(id, rows));
    ck_assert(cJSON_IsObject(get(e, "metrics")) && get(e, "metrics")->child == NULL);
    cJSON_Delete(e);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches", id), rows, 201);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches?split=validation", id), rows, 201);
    e = it_call("POST", pathf("/v1/models/%" PRId64 "/evaluate", id), "{\"split\":\"validation\"}",
                200);
    ck_assert(get(e, "metrics")->child == NULL);
    cJSON_Delete(e);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/train", id), "{\"steps\":2}", 200);
    cJSON *h = it_call("GET", pathf("/v1/models/%" PRId64 "/history", id), NULL, 200);
    const cJSON *r = cJSON_GetArrayItem(get(h, "history"), 0);
    ck_assert(cJSON_IsNumber(get(r, "val_loss")));
    ck_assert(cJSON_GetObjectItem(r, "val_accuracy") == NULL);
    cJSON_Delete(h);
}
END_TEST

START_TEST(queries_take_a_split)
{
    int64_t id = model_with_splits(SPEC);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/train", id), "{\"steps\":3}", 200);
    const char *val_inline = "{\"x\":[[0.5,0.5],[2,2],[1,2],[1.5,0.2],[0.2,1.6]],"
                             "\"y\":[0,1,1,0,1]}";
    const char *train_inline = TRAIN;
    static const char *const routes[] = {"loss", "gradients", "evaluate", "gradcheck"};
    for (size_t i = 0; i < 4; ++i) {
        char path[128];
        snprintf(path, sizeof path, "/v1/models/%" PRId64 "/%s", id, routes[i]);
        const char *bodies[2][2] = {{"{\"split\":\"validation\"}", val_inline},
                                    {"{}", train_inline}};
        for (int k = 0; k < 2; ++k) {
            cJSON *a = it_call("POST", path, bodies[k][0], 200);
            cJSON *b = it_call("POST", path, bodies[k][1], 200);
            char *ta = cJSON_PrintUnformatted(a), *tb = cJSON_PrintUnformatted(b);
            ck_assert_msg(strcmp(ta, tb) == 0, "%s %s: %s vs %s", routes[i], bodies[k][0], ta,
                          tb);
            free(ta);
            free(tb);
            cJSON_Delete(a);
            cJSON_Delete(b);
        }
    }
    cJSON *e = it_call("POST", pathf("/v1/models/%" PRId64 "/evaluate", id),
                       "{\"split\":\"train\"}", 200);
    ck_assert_int_eq((int)it_num(e, "rows"), 8);
    const cJSON *mx = get(e, "metrics");
    ck_assert(cJSON_IsArray(get(mx, "confusion_matrix")));
    ck_assert(cJSON_IsNumber(get(mx, "roc_auc")));
    ck_assert(it_num(e, "loss") == loss_of(id, "{}"));
    ck_assert(it_num(mx, "log_loss") - it_num(e, "loss") < 1e-12);
    cJSON_Delete(e);
}
END_TEST

/* ---- early stopping against a reference ------------------------------------------------- */

#define REF_STEPS 60

/* The reference trajectory: for every step t, θ_t's validation loss, train loss and
 * parameters, computed one update at a time on a model of its own. */
typedef struct reference {
    double val[REF_STEPS + 1], loss[REF_STEPS + 1];
    char *params[REF_STEPS + 1];
} reference_t;

static void reference_build(reference_t *r)
{
    int64_t id = model_with_splits(SPEC);
    for (int t = 0; t <= REF_STEPS; ++t) {
        r->val[t] = loss_of(id, "{\"split\":\"validation\"}");
        r->loss[t] = loss_of(id, "{}");
        cJSON *p = it_call("GET", pathf("/v1/models/%" PRId64 "/parameters", id), NULL, 200);
        r->params[t] = cJSON_PrintUnformatted(get(p, "parameters"));
        cJSON_Delete(p);
        if (t < REF_STEPS)
            it_call_free("POST", pathf("/v1/models/%" PRId64 "/train", id), "{\"steps\":1}", 200);
    }
}

static void reference_free(reference_t *r)
{
    for (int t = 0; t <= REF_STEPS; ++t)
        free(r->params[t]);
}

/* The contract's rule over evaluations at the steps t with t % every == 0 (and the last
 * planned one): *stop = the step the run stops at (REF_STEPS: never), *best = best step. */
static void reference_rule(const reference_t *r, int patience, double min_delta, int every,
                           int *stop, int *best)
{
    double best_val = NAN;
    int stale = 0;
    *best = -1;
    *stop = REF_STEPS;
    for (int t = 0; t < REF_STEPS; ++t) {
        if (t % every != 0 && t != REF_STEPS - 1)
            continue;
        if (*best < 0 || r->val[t] < best_val - min_delta) {
            best_val = r->val[t];
            *best = t;
            stale = 0;
        } else if (++stale >= patience) {
            *stop = t;
            return;
        }
    }
}

static void check_early_stopping(const reference_t *ref, int patience, double min_delta,
                                 int restore, int every, int async)
{
    int stop = 0, best = 0;
    reference_rule(ref, patience, min_delta, every, &stop, &best);
    int64_t id = model_with_splits(SPEC);
    char body[256];
    snprintf(body, sizeof body,
             "{\"steps\":%d,\"history_every\":%d,\"async\":%s,\"early_stopping\":"
             "{\"patience\":%d,\"min_delta\":%.17g,\"restore_best\":%s}}",
             REF_STEPS, every, async ? "true" : "false", patience, min_delta,
             restore ? "true" : "false");
    cJSON *res = NULL, *job = NULL;
    if (async) {
        job = it_call("POST", pathf("/v1/models/%" PRId64 "/train", id), body, 202);
        int64_t jid = (int64_t)it_num(job, "id");
        cJSON_Delete(job);
        for (int waited = 0;; waited += 20) {
            job = it_call("GET", pathf("/v1/jobs/%" PRId64, jid), NULL, 200);
            if (strcmp(get(job, "status")->valuestring, "succeeded") == 0)
                break;
            ck_assert_msg(waited < 20000, "job %s", get(job, "status")->valuestring);
            cJSON_Delete(job);
            it_sleep_ms(20);
        }
        res = cJSON_Duplicate(get(job, "result"), 1);
        cJSON_Delete(job);
    } else {
        res = it_call("POST", pathf("/v1/models/%" PRId64 "/train", id), body, 200);
    }
    char what[160];
    snprintf(what, sizeof what, "patience %d min_delta %g restore %d every %d async %d",
             patience, min_delta, restore, every, async);
    const int fired = stop < REF_STEPS;
    ck_assert_msg(strcmp(get(res, "stopped")->valuestring,
                         fired ? "early_stopping" : "max_steps") == 0,
                  "%s: stopped %s", what, get(res, "stopped")->valuestring);
    ck_assert_msg((int)it_num(res, "steps_run") == stop, "%s: steps_run %d, expected %d", what,
                  (int)it_num(res, "steps_run"), stop);
    ck_assert_int_eq((int)it_num(res, "step"), stop);
    ck_assert_msg((int)it_num(res, "best_step") == best, "%s: best_step %d, expected %d", what,
                  (int)it_num(res, "best_step"), best);
    expect_rel(it_num(res, "best_val_loss"), ref->val[best], 1e-12, what);
    const int at = fired && restore ? best : stop;
    expect_rel(it_num(res, "loss_after"), ref->loss[at], 1e-12, what);
    expect_rel(it_num(res, "val_loss_after"), ref->val[at], 1e-12, what);
    cJSON_Delete(res);
    /* Parameters: θ_b restored, or θ of the stop step. */
    cJSON *p = it_call("GET", pathf("/v1/models/%" PRId64 "/parameters", id), NULL, 200);
    ck_assert_int_eq((int)it_num(p, "step"), stop);
    const cJSON *w = get(get(p, "parameters"), "W1");
    cJSON *want = cJSON_Parse(ref->params[at]);
    const cJSON *ww = get(want, "W1");
    for (int j = 0; j < 3; ++j)
        expect_rel(cJSON_GetArrayItem(cJSON_GetArrayItem(w, 0), j)->valuedouble,
                   cJSON_GetArrayItem(cJSON_GetArrayItem(ww, 0), j)->valuedouble, 1e-12, what);
    cJSON_Delete(want);
    cJSON_Delete(p);
    /* History keeps every row of the run, each with θ_t's validation loss. */
    cJSON *h = it_call("GET", pathf("/v1/models/%" PRId64 "/history", id), NULL, 200);
    const cJSON *rows = get(h, "history");
    const cJSON *r;
    int n = 0;
    cJSON_ArrayForEach(r, rows)
    {
        int t = (int)it_num(r, "step");
        ck_assert_msg(t % every == 0 || t == stop - 1, "%s: row %d recorded", what, t);
        expect_rel(it_num(r, "val_loss"), ref->val[t], 1e-12, what);
        ++n;
    }
    ck_assert_int_eq(n, (stop - 1) / every + 1 + ((stop - 1) % every != 0));
    cJSON_Delete(h);
}

START_TEST(early_stopping_matches_reference)
{
    reference_t ref = {0};
    reference_build(&ref);
    /* The data must make early stopping fire: the validation loss has a minimum. */
    int stop = 0, best = 0;
    reference_rule(&ref, 1, 0.0, 1, &stop, &best);
    ck_assert_msg(stop < REF_STEPS && best > 0, "reference: stop %d best %d", stop, best);

    check_early_stopping(&ref, 1, 0.0, 1, 1, 0);
    check_early_stopping(&ref, 3, 0.0, 1, 1, 0);
    check_early_stopping(&ref, 3, 0.0, 0, 1, 0);
    check_early_stopping(&ref, 2, 0.01, 1, 1, 0);
    check_early_stopping(&ref, 2, 1e-4, 0, 2, 0);
    check_early_stopping(&ref, 4, 0.0, 1, 3, 0);
    check_early_stopping(&ref, 1000, 0.0, 1, 1, 0);    /* never fires */
    check_early_stopping(&ref, 2, 0.0, 1, 1, 1);       /* async */
    check_early_stopping(&ref, 3, 0.001, 0, 2, 1);
    reference_free(&ref);
}
END_TEST

/* kill -9 in the middle of a job that validates every row and watches for early stopping: after
 * the restart the model is at a committed step whose every history row carries its validation
 * loss, and training goes on from there. */
START_TEST(kill9_keeps_history_and_step_together)
{
    int64_t id = model_with_splits(SPEC);
    cJSON *job = it_call("POST", pathf("/v1/models/%" PRId64 "/train", id),
                         "{\"steps\":100000000,\"async\":true,"
                         "\"early_stopping\":{\"patience\":100000000}}", 202);
    int64_t job_id = (int64_t)it_num(job, "id");
    cJSON_Delete(job);
    int64_t step = 0;
    for (int waited = 0; step < 200 && waited < 20000; waited += 20) {
        it_sleep_ms(20);
        cJSON *m = it_call("GET", pathf("/v1/models/%" PRId64, id), NULL, 200);
        step = (int64_t)it_num(m, "step");
        cJSON_Delete(m);
    }
    ck_assert_msg(step >= 200, "the job made %" PRId64 " steps", step);
    it_kill9(&d);
    ck_assert_int_eq(it_start_again(&d), 0);
    if (it_backend_pg()) {
        /* Replicas: the dead one's job is still the model's until it is cancelled (a replica
         * that resumes it ends it at once). */
        it_call_free("DELETE", pathf("/v1/jobs/%" PRId64, job_id), NULL, 202);
        for (int waited = 0;; waited += 100) {
            cJSON *j = it_call("GET", pathf("/v1/jobs/%" PRId64, job_id), NULL, 200);
            int done = strcmp(it_str(j, "status"), "cancelled") == 0;
            cJSON_Delete(j);
            if (done)
                break;
            ck_assert_msg(waited < 40000, "job not cancelled");
            it_sleep_ms(100);
        }
    }

    cJSON *m = it_call("GET", pathf("/v1/models/%" PRId64, id), NULL, 200);
    step = (int64_t)it_num(m, "step");
    ck_assert_int_eq((int)it_num(m, "validation_rows"), 5);
    cJSON_Delete(m);
    cJSON *h = it_call("GET", pathf("/v1/models/%" PRId64 "/history?max_points=100000", id), NULL,
                       200);
    const cJSON *rows = get(h, "history");
    ck_assert_int_eq(cJSON_GetArraySize(rows), (int)step);
    const cJSON *r;
    cJSON_ArrayForEach(r, rows)
    {
        ck_assert(cJSON_IsNumber(get(r, "val_loss")));
        ck_assert(cJSON_IsNumber(get(r, "val_accuracy")));
    }
    ck_assert_int_eq((int)it_num(cJSON_GetArrayItem(rows, cJSON_GetArraySize(rows) - 1), "step"),
                     (int)step - 1);
    cJSON_Delete(h);
    /* Going on: the next row's validation loss is that of the committed parameters. */
    double val = loss_of(id, "{\"split\":\"validation\"}");
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/train", id), "{\"steps\":1}", 200);
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/history?after_step=%" PRId64, id,
             step - 1);
    h = it_call("GET", path, NULL, 200);
    ck_assert(it_num(cJSON_GetArrayItem(get(h, "history"), 0), "val_loss") == val);
    cJSON_Delete(h);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("validation");
    TCase *tc = tcase_create("validation");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, splits_are_stored_and_counted);
    tcase_add_test(tc, bad_splits_change_nothing);
    tcase_add_test(tc, training_reads_train_rows_and_records_validation);
    tcase_add_test(tc, accuracy_counts_the_correct_rows);
    tcase_add_test(tc, several_sigmoid_outputs_evaluate_to_the_loss);
    tcase_add_test(tc, queries_take_a_split);
    tcase_add_test(tc, early_stopping_matches_reference);
    tcase_add_test(tc, kill9_keeps_history_and_step_together);
    suite_add_tcase(s, tc);
    return it_run(s);
}
