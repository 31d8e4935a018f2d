/* tests/integration/it_onnx.c -- GET /v1/models/{id}/export?format=onnx over HTTP: the binary
 * answer and its headers, the ONNX model decoded with protobuf-c (weights equal to
 * GET /parameters, metadata equal to the model object), float32, and every refusal. (tests/onnx
 * runs the exports in ONNX Runtime; this test needs nothing but the daemon.) */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "onnx.pb-c.h"

static it_daemon_t d;

static void setup(void)
{
    ck_assert_msg(it_start(&d, it_exe, NULL) == 0, "daemon did not start");
}

static void teardown(void)
{
    it_cleanup(&d);
}

/* GET `path`, which must answer 200 with an ONNX file; *disposition (new) is its
 * Content-Disposition. Returns the decoded model (onnx__model_proto__free_unpacked). */
static Onnx__ModelProto *get_onnx(const char *path, char **disposition)
{
    it_resp_t r;
    it_call_t call = {.method = "GET", .path = path};
    ck_assert_int_eq(it_do(&call, &r), 0);
    ck_assert_msg(r.status == 200, "%s: %ld %s", path, r.status, r.body);
    char *type = it_header(r.headers, "Content-Type");
    ck_assert_ptr_nonnull(type);
    ck_assert_str_eq(type, "application/octet-stream");
    free(type);
    *disposition = it_header(r.headers, "Content-Disposition");
    ck_assert_ptr_nonnull(*disposition);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, r.len, (const uint8_t *)r.body);
    ck_assert_msg(m != NULL, "%s: %zu bytes that are not an ONNX ModelProto", path, r.len);
    it_resp_free(&r);
    return m;
}

static const char *meta(const Onnx__ModelProto *m, const char *key)
{
    for (size_t i = 0; i < m->n_metadata_props; ++i)
        if (strcmp(m->metadata_props[i]->key, key) == 0)
            return m->metadata_props[i]->value;
    ck_abort_msg("no metadata %s", key);
    return NULL;
}

static const Onnx__TensorProto *initializer(const Onnx__ModelProto *m, const char *name)
{
    for (size_t i = 0; i < m->graph->n_initializer; ++i)
        if (strcmp(m->graph->initializer[i]->name, name) == 0)
            return m->graph->initializer[i];
    ck_abort_msg("no initializer %s", name);
    return NULL;
}

static double element(const Onnx__TensorProto *t, size_t i)
{
    if (t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        float f;
        ck_assert_uint_ge(t->raw_data.len, 4 * (i + 1));
        memcpy(&f, t->raw_data.data + 4 * i, 4);
        return f;
    }
    ck_assert_int_eq(t->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE);
    ck_assert_uint_ge(t->raw_data.len, 8 * (i + 1));
    double v;
    memcpy(&v, t->raw_data.data + 8 * i, 8);
    return v;
}

/* The answer to `path` must be 400 invalid_argument naming `field`. */
static void expect_400(const char *path, const char *field)
{
    long status = 0;
    cJSON *j = it_json("GET", path, NULL, &status);
    ck_assert_msg(status == 400, "%s: %ld", path, status);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(e, "code")->valuestring,
                     "invalid_argument");
    ck_assert_msg(strcmp(cJSON_GetObjectItemCaseSensitive(e, "field")->valuestring, field) == 0,
                  "%s: field %s, expected %s", path,
                  cJSON_GetObjectItemCaseSensitive(e, "field")->valuestring, field);
    cJSON_Delete(j);
}

START_TEST(export_is_the_trained_model)
{
    int64_t id = it_create_model("{\"name\":\"onnx-it\",\"kind\":\"logistic\",\"inputs\":2,"
                                 "\"parameters\":{\"W1\":[[0.5,-1.25,2]]}}");
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches", id);
    it_call_free("POST", path, "{\"x\":[[0,1],[1,0],[2,2],[-1,3]],\"y\":[1,0,1,0]}", 201);
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/train", id);
    it_call_free("POST", path, "{\"steps\":3}", 200);
    snprintf(path, sizeof path, "/v1/models/%" PRId64, id);
    cJSON *model = it_call("GET", path, NULL, 200);
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/parameters", id);
    cJSON *params = it_call("GET", path, NULL, 200);
    cJSON *health = it_call("GET", "/healthz", NULL, 200);

    char *disposition = NULL;
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/export?format=onnx", id);
    Onnx__ModelProto *m = get_onnx(path, &disposition);
    ck_assert_str_eq(disposition, "attachment; filename=\"onnx-it.onnx\"");
    ck_assert_str_eq(m->producer_name, "neurond");
    ck_assert_str_eq(m->producer_version,
                     cJSON_GetObjectItemCaseSensitive(health, "version")->valuestring);
    ck_assert_int_eq(m->opset_import[0]->version, 13);
    ck_assert_str_eq(meta(m, "neurond.kind"), "logistic");
    ck_assert_str_eq(meta(m, "neurond.step"), "3");
    cJSON *spec = cJSON_Parse(meta(m, "neurond.spec"));
    ck_assert_msg(cJSON_Compare(spec, cJSON_GetObjectItemCaseSensitive(model, "spec"), 1),
                  "neurond.spec %s is not the model's spec", meta(m, "neurond.spec"));
    cJSON_Delete(spec);

    /* W1 = [bias | weights], split into the Gemm's C and B inputs, exactly. */
    const cJSON *w1 = cJSON_GetArrayItem(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(params, "parameters"),
                                         "W1"), 0);
    ck_assert_double_eq(element(initializer(m, "W1.bias"), 0),
                        cJSON_GetArrayItem(w1, 0)->valuedouble);
    for (int j = 0; j < 2; ++j)
        ck_assert_double_eq(element(initializer(m, "W1.weight"), (size_t)j),
                            cJSON_GetArrayItem(w1, j + 1)->valuedouble);
    ck_assert_str_eq(m->graph->input[0]->name, "x");
    ck_assert_uint_eq(m->graph->n_output, 2);
    ck_assert_str_eq(m->graph->output[0]->name, "outputs");
    ck_assert_str_eq(m->graph->output[1]->name, "classes");
    onnx__model_proto__free_unpacked(m, NULL);
    free(disposition);

    /* float32: the same weights rounded to float. */
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/export?format=onnx&dtype=float32", id);
    m = get_onnx(path, &disposition);
    ck_assert_int_eq(m->graph->input[0]->type->tensor_type->elem_type,
                     ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    ck_assert_double_eq(element(initializer(m, "W1.weight"), 1),
                        (float)cJSON_GetArrayItem(w1, 2)->valuedouble);
    onnx__model_proto__free_unpacked(m, NULL);
    free(disposition);

    /* Exporting changed nothing. */
    snprintf(path, sizeof path, "/v1/models/%" PRId64, id);
    cJSON *after = it_call("GET", path, NULL, 200);
    ck_assert(cJSON_Compare(after, model, 1));
    cJSON_Delete(after);
    cJSON_Delete(model);
    cJSON_Delete(params);
    cJSON_Delete(health);
}
END_TEST

START_TEST(download_names)
{
    int64_t unnamed = it_create_model("{\"kind\":\"softmax\",\"inputs\":2,\"classes\":3}");
    int64_t odd = it_create_model("{\"name\":\"my model \\\"v2\\\"/é\",\"kind\":\"linear\","
                                  "\"inputs\":1}");
    char path[128], want[96], *disposition = NULL;
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/export?format=onnx", unnamed);
    Onnx__ModelProto *m = get_onnx(path, &disposition);
    snprintf(want, sizeof want, "attachment; filename=\"model-%" PRId64 ".onnx\"", unnamed);
    ck_assert_str_eq(disposition, want);
    ck_assert_str_eq(meta(m, "neurond.kind"), "softmax");
    onnx__model_proto__free_unpacked(m, NULL);
    free(disposition);

    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/export?format=onnx", odd);
    m = get_onnx(path, &disposition);
    /* Every byte outside [A-Za-z0-9._-] is '_' ("é" is two bytes). */
    ck_assert_str_eq(disposition, "attachment; filename=\"my_model__v2____.onnx\"");
    ck_assert_uint_eq(m->graph->n_output, 1);
    onnx__model_proto__free_unpacked(m, NULL);
    free(disposition);
}
END_TEST

START_TEST(refusals_name_the_field)
{
    int64_t id = it_create_model("{\"kind\":\"linear\",\"inputs\":2}");
    char path[160];
    static const char *const cases[][2] = {
        {"format=onnnx", "format"},         {"format=", "format"},
        {"format=ONNX", "format"},          {"format=onnx&dtype=float16", "dtype"},
        {"format=onnx&dtype=", "dtype"},    {"format=json&dtype=float32", "dtype"},
        {"dtype=float64", "dtype"},         {"format=onnx&opset=13", "opset"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        snprintf(path, sizeof path, "/v1/models/%" PRId64 "/export?%s", id, cases[i][0]);
        expect_400(path, cases[i][1]);
    }
    long status = 0;
    cJSON *j = it_json("GET", "/v1/models/987654/export?format=onnx", NULL, &status);
    ck_assert_int_eq(status, 404);
    cJSON_Delete(j);

    /* A graph whose prediction adds a loss of the labels: a loss has no ONNX counterpart (and
     * it reads the input y, which an ONNX model never gets). */
    int64_t g = it_create_model(
        "{\"kind\":\"graph\",\"inputs\":2,\"outputs\":1,\"graph\":{\"nodes\":["
        "{\"id\":\"x\",\"op\":\"input\",\"shape\":[null,2]},"
        "{\"id\":\"y\",\"op\":\"input\",\"shape\":[null,1]},"
        "{\"id\":\"W\",\"op\":\"param\",\"shape\":[2,1],\"value\":[[1],[2]]},"
        "{\"id\":\"z\",\"op\":\"matmul\",\"inputs\":[\"x\",\"W\"]},"
        "{\"id\":\"e\",\"op\":\"l2_loss\",\"inputs\":[\"z\",\"y\"]},"
        "{\"id\":\"p\",\"op\":\"add\",\"inputs\":[\"z\",\"e\"]},"
        "{\"id\":\"L\",\"op\":\"l2_loss\",\"inputs\":[\"p\",\"y\"]}],\"output\":\"L\"}}");
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/export?format=onnx", g);
    j = it_json("GET", path, NULL, &status);
    ck_assert_int_eq(status, 400);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(e, "field")->valuestring, "format");
    ck_assert_msg(strstr(cJSON_GetObjectItemCaseSensitive(e, "message")->valuestring,
                         "node 'e' (op l2_loss)") != NULL, "message: %s",
                  cJSON_GetObjectItemCaseSensitive(e, "message")->valuestring);
    cJSON_Delete(j);

    /* The JSON export is unchanged, explicitly or by default, and the daemon is fine. */
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/export?format=json", id);
    j = it_call("GET", path, NULL, 200);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "format")->valuestring, "neurond-model");
    cJSON_Delete(j);
    it_call_free("GET", "/healthz", NULL, 200);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("onnx");
    TCase *tc = tcase_create("export");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, export_is_the_trained_model);
    tcase_add_test(tc, download_names);
    tcase_add_test(tc, refusals_name_the_field);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    it_init(argc, argv);
    return it_run(suite());
}
