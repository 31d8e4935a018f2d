/* tests/fuzz/fuzz_spec.c -- a model spec as POST /v1/models receives it: parse, decode, resolve
 * with a small parameter limit, build the model, evaluate it on a few rows.
 *
 * Contracts checked: every failure has a negative code and a message; a decoded spec encodes
 * and decodes back to a spec with the same encoding; a resolved spec never builds a model with
 * more than FUZZ_MAX_PARAMS parameters; loss, gradients and predictions run without memory
 * errors, including predictions after the training batch is gone.
 */
#include <math.h>

#include "codec.h"
#include "fuzz_util.h"
#include "model.h"

/* encode(spec) must decode, and encode to the same text again. */
static void check_round_trip(const model_spec_t *spec)
{
    cJSON *enc = codec_spec_encode(spec);
    FUZZ_CHECK(enc != NULL, "codec_spec_encode failed");
    char *text = fuzz_print(enc);
    model_spec_t again;
    err_t err = {0};
    int rc = codec_spec_decode(enc, &again, &err);
    FUZZ_CHECK(rc == 0, "re-decoding %s: %s", text, err.msg);
    cJSON *enc2 = codec_spec_encode(&again);
    FUZZ_CHECK(enc2 != NULL, "codec_spec_encode (second) failed");
    char *text2 = fuzz_print(enc2);
    FUZZ_CHECK(strcmp(text, text2) == 0, "round trip differs:\n%s\n%s", text, text2);
    free(text2);
    cJSON_Delete(enc2);
    model_spec_free(&again);
    free(text);
    cJSON_Delete(enc);
}

/* Elements of every param node: what a graph model's parameter count will be. */
static int64_t graph_params(const ad_graph_spec_t *g)
{
    int64_t n = 0;
    for (int32_t i = 0; i < g->n_node; ++i)
        if (g->node[i].op == AD_OP_PARAM)
            n += tensor_shape_elems(&g->node[i].shape);
    return n;
}

static void exercise_model(model_t *m, const uint8_t *data, size_t size)
{
    enum { ROWS = 2 };
    err_t err = {0};
    int32_t n_x = model_n_x(m), n_y = model_n_y(m);
    int64_t n_params = model_n_params(m);
    FUZZ_CHECK(n_params >= 0 && n_params <= FUZZ_MAX_PARAMS, "n_params=%lld",
               (long long)n_params);
    FUZZ_CHECK(n_x >= 1 && n_y >= 1, "n_x=%d n_y=%d", n_x, n_y);
    if ((int64_t)n_x * ROWS > 1000000 || (int64_t)n_y * ROWS > 1000000)
        return;

    /* The batch lives on the heap and is freed before predicting: model_loss_grad borrows it
     * for the call only. */
    fuzz_rng_t r = fuzz_rng_from(data, size);
    double *x = malloc((size_t)n_x * ROWS * sizeof *x);
    double *y = malloc((size_t)n_y * ROWS * sizeof *y);
    FUZZ_CHECK(x != NULL && y != NULL, "out of memory");
    for (int64_t i = 0; i < (int64_t)n_x * ROWS; ++i)
        x[i] = fuzz_value(&r);
    for (int64_t i = 0; i < (int64_t)n_y * ROWS; ++i)
        y[i] = (double)(i % 2);   /* 0/1: valid for binary and class kinds */
    batch_t b = {.rows = ROWS, .n_x = n_x, .n_y = n_y, .x = x, .y = y};
    double loss = NAN;
    int rc = model_check_labels(m, &b, &err);
    if (rc == 0) {
        rc = model_loss_grad(m, &b, &loss, model_grads(m), &err);
        if (rc < 0)
            FUZZ_CHECK_ERR(rc, err);
    }
    if (model_is_classifier(m)) {
        double acc;
        int64_t wrong;
        if ((rc = model_accuracy(m, &b, &acc, &wrong, &err)) == 0)
            FUZZ_CHECK(wrong >= 0 && wrong <= ROWS, "errors=%lld", (long long)wrong);
    }
    free(y);

    model_prediction_t p;
    rc = model_predict(m, x, ROWS, &p, &err);
    if (rc == 0) {
        FUZZ_CHECK(p.rows == ROWS && p.n_out >= 1 && p.outputs != NULL, "rows=%d n_out=%d",
                   p.rows, p.n_out);
        FUZZ_CHECK(!p.per_row_scalar || p.n_out == 1, "per_row_scalar with n_out=%d", p.n_out);
        volatile double sink = 0.0;
        for (int64_t i = 0; i < (int64_t)p.rows * p.n_out; ++i)
            sink += p.outputs[i];
        (void)sink;
        model_prediction_free(&p);
    } else {
        FUZZ_CHECK_ERR(rc, err);
    }
    free(x);

    double *normal = malloc((size_t)n_x * sizeof *normal);
    double *unit = malloc((size_t)n_x * sizeof *unit);
    double offset;
    FUZZ_CHECK(normal != NULL && unit != NULL, "out of memory");
    (void)model_boundary(m, normal, unit, &offset, &err);
    free(normal);
    free(unit);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *root = NULL;
    err_t err = {0};
    if (!fuzz_parse_json(data, size, &root))
        return 0;
    model_spec_t spec;
    int rc = codec_spec_decode(root, &spec, &err);
    cJSON_Delete(root);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        FUZZ_CHECK(spec.param_value == NULL && spec.graph.node == NULL, "spec kept on failure");
        return 0;
    }
    check_round_trip(&spec);

    model_t *m = NULL;
    err_t e2 = {0};
    rc = model_spec_resolve(&spec, FUZZ_MAX_PARAMS, &e2);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, e2);
    } else if (spec.kind == MODEL_KIND_GRAPH && graph_params(&spec.graph) > FUZZ_MAX_PARAMS) {
        FUZZ_CHECK(0, "resolved a graph spec with %lld parameters, max_params=%lld",
                   (long long)graph_params(&spec.graph), (long long)FUZZ_MAX_PARAMS);
    } else if (spec.kind != MODEL_KIND_GRAPH || fuzz_graph_small(&spec.graph)) {
        check_round_trip(&spec);   /* a resolved spec is what the store keeps */
        rc = model_new(&spec, &m, &e2);
        if (rc < 0) {
            FUZZ_CHECK_ERR(rc, e2);
            FUZZ_CHECK(m == NULL, "model set on failure");
        } else {
            exercise_model(m, data, size);
        }
    }
    model_free(m);
    model_spec_free(&spec);
    model_spec_free(&spec);   /* zeroed by the first call: must be harmless */
    return 0;
}
