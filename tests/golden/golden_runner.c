/* tests/golden/golden_runner.c -- checks every golden case (PyTorch float64 vectors) against
 * libneuron: predictions, classes, margins, boundary, loss, gradients, training history and the
 * parameters after training for model cases; values, gradients and Jacobians for graph cases.
 *
 * usage: golden_runner DIR   (every .json file in DIR; exit 1 when any comparison fails)
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "graph.h"
#include "model.h"
#include "optim.h"
#include "train.h"

typedef struct tol {
    double rel, abs;
} tol_t;

static int n_checks, n_failed;

static void fail(const char *cas, const char *what, const char *why)
{
    ++n_failed;
    fprintf(stderr, "FAIL %s: %s: %s\n", cas, what, why);
}

static void check_num(const char *cas, const char *what, double got, double want, tol_t t)
{
    ++n_checks;
    if (isfinite(got) && fabs(got - want) <= t.abs + t.rel * fabs(want))
        return;
    char why[128];
    snprintf(why, sizeof why, "got %.17g, expected %.17g", got, want);
    fail(cas, what, why);
}

/* Compare `got` (n numbers, row major) with a JSON number or (nested) array of numbers. */
static int flatten(const cJSON *j, double *out, int cap, int *n)
{
    if (cJSON_IsNumber(j)) {
        if (*n >= cap)
            return -1;
        out[(*n)++] = j->valuedouble;
        return 0;
    }
    if (!cJSON_IsArray(j))
        return -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, j) if (flatten(e, out, cap, n) < 0) return -1;
    return 0;
}

static void check_array(const char *cas, const char *what, const double *got, int n_got,
                        const cJSON *want, tol_t t)
{
    enum { CAP = 4096 };
    static double buf[CAP];
    int n = 0;
    if (flatten(want, buf, CAP, &n) < 0 || n != n_got) {
        char why[96];
        snprintf(why, sizeof why, "got %d values, expected %d", n_got, n);
        ++n_checks;
        fail(cas, what, why);
        return;
    }
    for (int i = 0; i < n; ++i) {
        char w[160];
        snprintf(w, sizeof w, "%s[%d]", what, i);
        check_num(cas, w, got[i], buf[i], t);
    }
}

static void check_int(const char *cas, const char *what, long long got, long long want)
{
    ++n_checks;
    if (got == want)
        return;
    char why[96];
    snprintf(why, sizeof why, "got %lld, expected %lld", got, want);
    fail(cas, what, why);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    if (buf != NULL && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[size] = '\0';
        *len = (size_t)size;
    }
    return buf;
}

/* ---- graph cases ------------------------------------------------------------------------ */

static void run_graph_case(const char *cas, const cJSON *root, tol_t t)
{
    err_t err = {0};
    ad_graph_spec_t gs = {0};
    ad_graph_t *g = NULL;
    if (codec_graph_decode(cJSON_GetObjectItem(root, "graph"), "graph", &gs, &err) < 0
        || ad_graph_build(&gs, AD_MAX_NODES_DEFAULT, &g, &err) < 0
        || ad_graph_bind(g, 1, &err) < 0) {
        fail(cas, "build", err.msg);
        goto out;
    }
    const cJSON *in;
    cJSON_ArrayForEach(in, cJSON_GetObjectItem(root, "inputs"))
    {
        int32_t node = ad_find(g, in->string);
        double *v = NULL;
        int32_t rows = 0;
        if (node < 0 || codec_tensor_decode(in, ad_shape(g, node), in->string, &v, &rows, &err) < 0) {
            fail(cas, in->string, node < 0 ? "no such input" : err.msg);
            goto out;
        }
        memcpy(ad_value(g, node), v, (size_t)tensor_shape_elems(ad_shape(g, node)) * sizeof *v);
        free(v);
    }
    if (ad_forward(g, &err) < 0 || ad_backward(g, ad_output(g), &err) < 0) {
        fail(cas, "evaluate", err.msg);
        goto out;
    }
    const cJSON *expect = cJSON_GetObjectItem(root, "expect"), *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(expect, "values"))
    {
        int32_t node = ad_find(g, e->string);
        char what[128];
        snprintf(what, sizeof what, "values.%s", e->string);
        if (node < 0) {
            fail(cas, what, "no such node");
            continue;
        }
        check_array(cas, what, ad_value(g, node), (int)tensor_shape_elems(ad_shape(g, node)),
                    e, t);
    }
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(expect, "gradients"))
    {
        int32_t node = ad_find(g, e->string);
        char what[128];
        snprintf(what, sizeof what, "gradients.%s", e->string);
        if (node < 0) {
            fail(cas, what, "no such node");
            continue;
        }
        check_array(cas, what, ad_grad(g, node), (int)tensor_shape_elems(ad_shape(g, node)), e,
                    t);
    }
    const cJSON *jac = cJSON_GetObjectItem(root, "jacobian");
    if (jac != NULL) {
        int32_t of = ad_find(g, cJSON_GetStringValue(cJSON_GetObjectItem(jac, "of")));
        int32_t wrt = ad_find(g, cJSON_GetStringValue(cJSON_GetObjectItem(jac, "wrt")));
        int64_t n = tensor_shape_elems(ad_shape(g, of)) * tensor_shape_elems(ad_shape(g, wrt));
        double *jm = malloc((size_t)n * sizeof *jm);
        if (jm == NULL || ad_jacobian(g, of, wrt, jm, &err) < 0)
            fail(cas, "jacobian", err.msg);
        else
            check_array(cas, "jacobian", jm, (int)n, cJSON_GetObjectItem(expect, "jacobian"), t);
        free(jm);
    }
out:
    ad_graph_free(g);
    ad_graph_spec_free(&gs);
}

/* ---- model cases ------------------------------------------------------------------------ */

typedef struct history {
    int n;
    double loss[256];
    double learning_rate[256];
    int64_t step[256];
} history_t;

static int on_row(void *ctx, const train_row_t *row)
{
    history_t *h = ctx;
    if (row->recorded && h->n < 256) {
        h->loss[h->n] = row->loss;
        h->step[h->n] = row->step;
        h->learning_rate[h->n] = row->learning_rate;
        ++h->n;
    }
    return 0;
}

static int make_model(const char *cas, const cJSON *root, model_t **m)
{
    err_t err = {0};
    model_spec_t spec;
    if (codec_spec_decode(cJSON_GetObjectItem(root, "spec"), &spec, &err) < 0) {
        fail(cas, "spec", err.msg);
        return -1;
    }
    int rc = model_spec_resolve(&spec, MODEL_MAX_PARAMS_DEFAULT, &err);
    if (rc == 0)
        rc = model_new(&spec, m, &err);
    model_spec_free(&spec);
    if (rc < 0)
        fail(cas, "model", err.msg);
    return rc;
}

static void check_params(const char *cas, const char *prefix, model_t *m, const cJSON *want,
                         tol_t t)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, want)
    {
        char what[128];
        snprintf(what, sizeof what, "%s.%s", prefix, e->string);
        int32_t k = model_tensor_find(m, e->string);
        if (k < 0) {
            fail(cas, what, "no such parameter");
            continue;
        }
        int32_t r, c;
        model_tensor_shape(m, k, &r, &c);
        check_array(cas, what, model_params(m) + model_tensor_offset(m, k), r * c, e, t);
    }
}

/* Train n steps with one call, or with n calls of one step each (the /step path). */
static void run_training(const char *cas, const cJSON *root, const codec_batch_t *data,
                         int one_call, tol_t t)
{
    const cJSON *tr = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "expect"), "train");
    if (tr == NULL)
        return;
    model_t *m = NULL;
    optim_t *o = NULL;
    train_ctx_t *ctx = NULL;
    err_t err = {0};
    if (make_model(cas, root, &m) < 0)
        return;
    batch_t b = {data->rows, data->n_x, data->n_y, data->x, data->y};
    if (optim_new(&model_spec(m)->optimizer, model_n_params(m), &o, &err) < 0
        || train_ctx_new(m, o, &b, &ctx, &err) < 0) {
        fail(cas, "train setup", err.msg);
        goto out;
    }
    int steps = cJSON_GetObjectItem(tr, "steps")->valueint;
    train_req_t req;
    train_req_default(&req);
    req.learning_rate = cJSON_GetObjectItem(tr, "learning_rate")->valuedouble;
    history_t h = {0};
    train_hooks_t hooks = {on_row, &h, NULL};
    train_result_t res = {0}, first = {0};
    int64_t step = 0;
    for (int call = 0; call < (one_call ? 1 : steps); ++call) {
        req.steps = one_call ? steps : 1;
        if (train_run(ctx, &req, &step, &hooks, &res, &err) < 0) {
            fail(cas, "train", err.msg);
            goto out;
        }
        if (call == 0)
            first = res;
    }
    const char *mode = one_call ? "train" : "step";
    char what[64];
    snprintf(what, sizeof what, "%s.step", mode);
    check_int(cas, what, step, steps);
    snprintf(what, sizeof what, "%s.losses", mode);
    check_array(cas, what, h.loss, h.n, cJSON_GetObjectItem(tr, "losses"), t);
    /* Only cases with a schedule fix the rate of every row. */
    const cJSON *rates = cJSON_GetObjectItem(tr, "learning_rates");
    if (rates != NULL) {
        snprintf(what, sizeof what, "%s.learning_rates", mode);
        check_array(cas, what, h.learning_rate, h.n, rates, t);
    }
    for (int i = 0; i < h.n; ++i) {
        snprintf(what, sizeof what, "%s.history[%d].step", mode, i);
        check_int(cas, what, h.step[i], i);
    }
    snprintf(what, sizeof what, "%s.loss_before", mode);
    check_num(cas, what, first.loss_before,
              cJSON_GetArrayItem(cJSON_GetObjectItem(tr, "losses"), 0)->valuedouble, t);
    snprintf(what, sizeof what, "%s.loss_after", mode);
    check_num(cas, what, res.loss_after, cJSON_GetObjectItem(tr, "loss_after")->valuedouble, t);
    snprintf(what, sizeof what, "%s.parameters", mode);
    check_params(cas, what, m, cJSON_GetObjectItem(tr, "parameters"), t);
out:
    train_ctx_free(ctx);
    optim_free(o);
    model_free(m);
}

static void run_model_case(const char *cas, const cJSON *root, tol_t t)
{
    err_t err = {0};
    model_t *m = NULL;
    codec_batch_t data = {0};
    model_prediction_t pred = {0};
    const cJSON *expect = cJSON_GetObjectItem(root, "expect"), *e;
    if (make_model(cas, root, &m) < 0)
        return;
    cJSON *xy = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(xy, "x", cJSON_GetObjectItem(root, "x"));
    cJSON_AddItemReferenceToObject(xy, "y", cJSON_GetObjectItem(root, "y"));
    int rc = codec_batch_decode(xy, model_n_x(m), model_n_y(m), 1, 1000000, &data, &err);
    cJSON_Delete(xy);
    if (rc < 0) {
        fail(cas, "batch", err.msg);
        goto out;
    }
    batch_t b = {data.rows, data.n_x, data.n_y, data.x, data.y};

    if (model_predict(m, data.x, data.rows, &pred, &err) < 0) {
        fail(cas, "predict", err.msg);
        goto out;
    }
    if ((e = cJSON_GetObjectItem(expect, "outputs")) != NULL)
        check_array(cas, "outputs", pred.outputs, pred.rows * pred.n_out, e, t);
    if ((e = cJSON_GetObjectItem(expect, "outputs")) != NULL && pred.per_row_scalar)
        check_int(cas, "outputs per row", cJSON_IsArray(cJSON_GetArrayItem(e, 0)), 0);
    if ((e = cJSON_GetObjectItem(expect, "classes")) != NULL) {
        if (pred.classes == NULL) {
            fail(cas, "classes", "model gave no classes");
        } else {
            for (int i = 0; i < pred.rows; ++i) {
                char what[32];
                snprintf(what, sizeof what, "classes[%d]", i);
                check_int(cas, what, pred.classes[i], cJSON_GetArrayItem(e, i)->valueint);
            }
        }
    }
    if ((e = cJSON_GetObjectItem(expect, "margins")) != NULL) {
        if (pred.margins == NULL)
            fail(cas, "margins", "model gave no margins");
        else
            check_array(cas, "margins", pred.margins, pred.rows, e, t);
    }
    if ((e = cJSON_GetObjectItem(expect, "boundary")) != NULL) {
        int32_t n = model_n_x(m);
        double normal[256], unit[256], offset;
        if (n > 256 || model_boundary(m, normal, unit, &offset, &err) < 0) {
            fail(cas, "boundary", err.msg);
        } else {
            check_array(cas, "boundary.normal", normal, n, cJSON_GetObjectItem(e, "normal"), t);
            check_array(cas, "boundary.unit_normal", unit, n,
                        cJSON_GetObjectItem(e, "unit_normal"), t);
            check_num(cas, "boundary.offset", offset,
                      cJSON_GetObjectItem(e, "offset")->valuedouble, t);
        }
    }
    double loss;
    if (model_loss_grad(m, &b, &loss, model_grads(m), &err) < 0) {
        fail(cas, "loss", err.msg);
        goto out;
    }
    check_num(cas, "loss", loss, cJSON_GetObjectItem(expect, "loss")->valuedouble, t);
    if ((e = cJSON_GetObjectItem(expect, "grad_norm")) != NULL)
        check_num(cas, "grad_norm", tensor_norm2(model_grads(m), model_n_params(m)),
                  e->valuedouble, t);
    if ((e = cJSON_GetObjectItem(expect, "gradients")) != NULL) {
        cJSON *g;
        cJSON_ArrayForEach(g, e)
        {
            char what[128];
            snprintf(what, sizeof what, "gradients.%s", g->string);
            int32_t k = model_tensor_find(m, g->string);
            if (k < 0) {
                fail(cas, what, "no such parameter");
                continue;
            }
            int32_t r, c;
            model_tensor_shape(m, k, &r, &c);
            check_array(cas, what, model_grads(m) + model_tensor_offset(m, k), r * c, g, t);
        }
    }
    run_training(cas, root, &data, 1, t);
    run_training(cas, root, &data, 0, t);
out:
    model_prediction_free(&pred);
    codec_batch_free(&data);
    model_free(m);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int is_json(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 5 && strcmp(d->d_name + n - 5, ".json") == 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s GOLDEN_DIR\n", argv[0]);
        return 2;
    }
    struct dirent **list;
    int n = scandir(argv[1], &list, is_json, by_name);
    if (n <= 0) {
        fprintf(stderr, "no golden cases in %s\n", argv[1]);
        return 2;
    }
    int cases_failed = 0;
    for (int i = 0; i < n; ++i) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], list[i]->d_name);
        size_t len = 0;
        char *text = read_file(path, &len);
        cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
        int before = n_failed;
        const char *cas = list[i]->d_name;
        if (root == NULL) {
            fail(cas, "file", "cannot read or parse");
        } else {
            const cJSON *tj = cJSON_GetObjectItem(root, "tolerance");
            tol_t t = {1e-9, 1e-12};
            if (tj != NULL) {
                t.rel = cJSON_GetObjectItem(tj, "rel")->valuedouble;
                t.abs = cJSON_GetObjectItem(tj, "abs")->valuedouble;
            }
            if (cJSON_GetObjectItem(root, "graph") != NULL)
                run_graph_case(cas, root, t);
            else
                run_model_case(cas, root, t);
        }
        printf("%-32s %s\n", cas, n_failed == before ? "ok" : "FAILED");
        cases_failed += n_failed != before;
        cJSON_Delete(root);
        free(text);
        free(list[i]);
    }
    free(list);
    printf("golden: %d cases, %d comparisons\n", n, n_checks);
    printf("%d passed, %d failed\n", n - cases_failed, cases_failed);
    return cases_failed == 0 ? 0 : 1;
}
