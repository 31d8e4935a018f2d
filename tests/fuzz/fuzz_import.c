/* tests/fuzz/fuzz_import.c -- POST /v1/models/import's decoding: an export (format, version,
 * name, spec, step, loss, parameters, optimizer state) as lib decodes it, then a short training
 * run on the imported model, which is where a state the engine could not have produced used to
 * crash or loop.
 *
 * Input: the JSON body. Specs are resolved with max_params FUZZ_MAX_PARAMS (optimizer state
 * counted too), graph specs must pass fuzz_graph_small.
 *
 * Contracts checked: every failure carries a code and a message; a decoded state passes
 * optim_state_check; a run of up to 3 steps on a 4-row batch either fails with an error or ends
 * at a step within [step, step + 3] with finite parameters and a state that still passes
 * optim_state_check -- the engine never leaves its own invariants. The decoded export's step is
 * at most TRAIN_STEP_MAX.
 */
#include <math.h>

#include "codec.h"
#include "fuzz_util.h"
#include "model.h"
#include "optim.h"
#include "tensor.h"
#include "train.h"

#define FUZZ_ROWS 4
#define FUZZ_MAX_TRAIN_PARAMS 10000   /* larger models decode but are not trained (speed) */
#define FUZZ_MAX_LINE_SEARCH 50

/* Train up to 3 steps on FUZZ_ROWS rows of label 0 (valid for every kind). */
static void train_briefly(model_t *m, optim_t *o, int64_t step)
{
    const int32_t n_x = model_n_x(m), n_y = model_n_y(m);
    double *x = calloc((size_t)FUZZ_ROWS * (size_t)(n_x > 0 ? n_x : 1), sizeof *x);
    double *y = calloc((size_t)FUZZ_ROWS * (size_t)(n_y > 0 ? n_y : 1), sizeof *y);
    FUZZ_CHECK(x != NULL && y != NULL, "out of memory");
    for (int64_t i = 0; i < (int64_t)FUZZ_ROWS * n_x; ++i)
        x[i] = (double)(i % 7) * 0.25 - 0.5;
    batch_t data = {.rows = FUZZ_ROWS, .n_x = n_x, .n_y = n_y, .x = x, .y = y};
    err_t err = {0};
    train_ctx_t *t = NULL;
    int rc = train_ctx_new(m, o, &data, &t, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        goto out;
    }
    train_req_t req;
    train_req_default(&req);
    req.steps = 3;
    train_result_t res;
    int64_t global = step;
    rc = train_run(t, &req, &global, NULL, &res, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
    } else {
        FUZZ_CHECK(global >= step && global <= step + 3, "step %lld -> %lld", (long long)step,
                   (long long)global);
        FUZZ_CHECK(tensor_all_finite(model_params(m), model_n_params(m)),
                   "non-finite parameters after training");
    }
    FUZZ_CHECK(global >= step, "step went back from %lld to %lld", (long long)step,
               (long long)global);
    rc = optim_state_check(o, global, &err);
    FUZZ_CHECK(rc == 0, "training left a state the engine refuses: %s", err.msg);
out:
    train_ctx_free(t);
    free(x);
    free(y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *root = NULL;
    err_t err = {0};
    if (!fuzz_parse_json(data, size, &root))
        return 0;
    codec_export_t ex;
    model_t *m = NULL;
    optim_t *o = NULL;
    int rc = codec_export_decode(root, &ex, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        cJSON_Delete(root);
        return 0;
    }
    FUZZ_CHECK(ex.step >= 0 && ex.step <= TRAIN_STEP_MAX, "step %lld", (long long)ex.step);
    FUZZ_CHECK(ex.parameters != NULL, "no parameters but decoded");
    if (ex.spec.kind == MODEL_KIND_GRAPH && !fuzz_graph_small(&ex.spec.graph))
        goto out;
    if ((rc = model_spec_resolve(&ex.spec, FUZZ_MAX_PARAMS, &err)) < 0 ||
        (rc = model_new(&ex.spec, &m, &err)) < 0 ||
        (rc = codec_params_decode(ex.parameters, m, 1, model_params(m), &err)) < 0 ||
        (rc = optim_new(&model_spec(m)->optimizer, model_n_params(m), &o, &err)) < 0) {
        FUZZ_CHECK_ERR(rc, err);
        goto out;
    }
    FUZZ_CHECK(optim_state_len(o) <= 3 * (int64_t)FUZZ_MAX_PARAMS + 1000 + 3,
               "state of %lld values passed the limit", (long long)optim_state_len(o));
    if (ex.optimizer_state != NULL) {
        rc = codec_optim_state_decode(ex.optimizer_state, o, ex.step, &err);
        if (rc < 0) {
            FUZZ_CHECK_ERR(rc, err);
            goto out;
        }
    }
    rc = optim_state_check(o, ex.step, &err);
    FUZZ_CHECK(rc == 0, "decoded state refused by the engine: %s", err.msg);
    if (model_n_params(m) <= FUZZ_MAX_TRAIN_PARAMS &&
        optim_cfg(o)->max_line_search <= FUZZ_MAX_LINE_SEARCH)
        train_briefly(m, o, ex.step);
out:
    optim_free(o);
    model_free(m);
    codec_export_free(&ex);
    cJSON_Delete(root);
    return 0;
}
