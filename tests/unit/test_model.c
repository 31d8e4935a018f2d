/* tests/unit/test_model.c -- every model kind: gradients against central finite differences,
 * spec validation with field paths, initialisation, predictions and the boundary. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "model.h"
#include "rng.h"
#include "testutil.h"

#define ROWS 7

static model_t *make(model_spec_t *s)
{
    err_t err = {0};
    model_t *m = NULL;
    ck_assert_msg(model_spec_resolve(s, MODEL_MAX_PARAMS_DEFAULT, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_new(s, &m, &err) == 0, "%s", err.msg);
    return m;
}

/* The spec of an mlp with `inputs` inputs and one hidden layer of `units` (default activation),
 * every other field at its default. */
static model_spec_t one_hidden_spec(int32_t inputs, int32_t units)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_MLP;
    s.inputs = inputs;
    s.n_hidden = 1;
    s.hidden[0].units = units;
    return s;
}

/* Labels that fit the model: class ids, 0/1, or real targets. */
static void fill_labels(const model_t *m, double *y, int32_t rows, uint64_t seed)
{
    const model_spec_t *s = model_spec(m);
    rng_t r;
    rng_seed(&r, seed);
    int32_t n_y = model_n_y(m);
    for (int32_t i = 0; i < rows * n_y; ++i) {
        if (s->classes > 0)
            y[i] = (double)rng_below(&r, (uint64_t)s->classes);
        else if (model_is_classifier(m) || s->output_activation == MODEL_ACT_SIGMOID)
            y[i] = (double)rng_below(&r, 2);
        else
            y[i] = 4.0 * rng_uniform(&r) - 2.0;
    }
}

/* Central differences of the loss against model_loss_grad for every parameter. */
static void check_gradients(model_spec_t *s)
{
    model_t *m = make(s);
    err_t err = {0};
    int32_t n_x = model_n_x(m), n_y = model_n_y(m);
    double *x = malloc(sizeof(double) * ROWS * n_x), *y = malloc(sizeof(double) * ROWS * n_y);
    testutil_fill(x, ROWS * n_x, -1.5, 1.5, 17);
    fill_labels(m, y, ROWS, 23);
    batch_t b = {ROWS, n_x, n_y, x, y};
    int64_t n = model_n_params(m);
    double *theta = model_params(m);
    testutil_fill(theta, n, -0.8, 0.8, 5);
    double *g = malloc(sizeof(double) * (size_t)n), loss;
    ck_assert_int_eq(model_loss_grad(m, &b, &loss, g, &err), 0);
    ck_assert(isfinite(loss));
    const double h = 1e-6;
    for (int64_t i = 0; i < n; ++i) {
        double t0 = theta[i], fp, fm;
        theta[i] = t0 + h;
        ck_assert_int_eq(model_loss_grad(m, &b, &fp, NULL, &err), 0);
        theta[i] = t0 - h;
        ck_assert_int_eq(model_loss_grad(m, &b, &fm, NULL, &err), 0);
        theta[i] = t0;
        double fd = (fp - fm) / (2 * h);
        ck_assert_msg(fabs(g[i] - fd) <= 1e-6 + 1e-5 * fabs(fd),
                      "kind %s param %lld: analytic %.12g vs numeric %.12g",
                      model_kind_name(s->kind), (long long)i, g[i], fd);
    }
    free(g);
    free(x);
    free(y);
    model_free(m);
}

START_TEST(test_grad_linear_multi_output_sum)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_LINEAR;
    s.inputs = 3;
    s.outputs = 2;
    s.reduction = AD_REDUCTION_SUM;
    check_gradients(&s);
}
END_TEST

START_TEST(test_grad_logistic_bce_and_l2)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_LOGISTIC;
    s.inputs = 4;
    check_gradients(&s);
    s.loss = MODEL_LOSS_L2;
    check_gradients(&s);
}
END_TEST

START_TEST(test_grad_softmax_ova_ovo)
{
    int32_t kinds[3] = {MODEL_KIND_SOFTMAX, MODEL_KIND_OVA, MODEL_KIND_OVO};
    for (int r = 0; r < 2; ++r) {
        for (int i = 0; i < 3; ++i) {
            model_spec_t s;
            model_spec_default(&s);
            s.kind = kinds[i];
            s.inputs = 3;
            s.classes = 4;
            s.reduction = r ? AD_REDUCTION_SUM : AD_REDUCTION_MEAN;
            check_gradients(&s);
        }
    }
}
END_TEST

START_TEST(test_grad_mlp_every_activation)
{
    int32_t acts[4] = {MODEL_ACT_SIGMOID, MODEL_ACT_TANH, MODEL_ACT_RELU, MODEL_ACT_LINEAR};
    int32_t outs[3] = {MODEL_ACT_LINEAR, MODEL_ACT_SIGMOID, MODEL_ACT_SOFTMAX};
    for (int o = 0; o < 3; ++o) {
        model_spec_t s;
        model_spec_default(&s);
        s.kind = MODEL_KIND_MLP;
        s.inputs = 3;
        s.outputs = o == 1 ? 1 : 3;
        s.n_hidden = 4;
        for (int l = 0; l < 4; ++l) {
            s.hidden[l].units = 3 + l;
            s.hidden[l].activation = acts[(l + o) % 4];
        }
        s.output_activation = outs[o];
        check_gradients(&s);
    }
}
END_TEST

START_TEST(test_perceptron_update_is_the_rule)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_PERCEPTRON;
    s.inputs = 2;
    s.reduction = AD_REDUCTION_SUM;
    model_t *m = make(&s);
    double theta[3] = {0.05, 0.4, -0.4};
    memcpy(model_params(m), theta, sizeof theta);
    double x[8] = {1, 0, 0, 1, 1, 1, -1, 1}, y[4] = {0, 1, 0, 1};
    batch_t b = {4, 2, 1, x, y};
    double g[3], loss;
    err_t err = {0};
    ck_assert_int_eq(model_loss_grad(m, &b, &loss, g, &err), 0);
    double want[3] = {0, 0, 0};
    int wrong = 0;
    for (int i = 0; i < 4; ++i) {
        double z = theta[0] + theta[1] * x[2 * i] + theta[2] * x[2 * i + 1];
        double yhat = z > 0 ? 1 : 0;
        wrong += yhat != y[i];
        want[0] += yhat - y[i];
        want[1] += (yhat - y[i]) * x[2 * i];
        want[2] += (yhat - y[i]) * x[2 * i + 1];
    }
    ck_assert_double_eq(loss, wrong);
    for (int j = 0; j < 3; ++j)
        ck_assert_double_eq(g[j], want[j]);
    ck_assert(!model_has_gradients(m));
    model_free(m);
}
END_TEST

static void expect_spec_error(model_spec_t *s, const char *field)
{
    err_t err = {0};
    ck_assert_int_eq(model_spec_resolve(s, MODEL_MAX_PARAMS_DEFAULT, &err), ERR_INVAL);
    ck_assert_msg(strcmp(err.field, field) == 0, "field \"%s\", expected \"%s\" (%s)", err.field,
                  field, err.msg);
}

/* An mlp inputs -> h0 -> h1 -> outputs whose spec the default limits refuse naming `field`. */
static void expect_mlp_fault(int32_t inputs, int32_t h0, int32_t h1, int32_t outputs,
                             const char *field)
{
    model_spec_t s = one_hidden_spec(inputs, h0);
    s.n_hidden = 2;
    s.hidden[1].units = h1;
    s.outputs = outputs;
    expect_spec_error(&s, field);
}

/* A one-layer kind with `inputs` and `size` outputs (classes for the class kinds) over the
 * default parameter limit: the error names `field`. */
static void expect_dense_fault(int32_t kind, int32_t inputs, int32_t size, const char *field)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = kind;
    s.inputs = inputs;
    if (kind == MODEL_KIND_LINEAR)
        s.outputs = size;
    else
        s.classes = size;
    expect_spec_error(&s, field);
}

START_TEST(test_spec_errors_name_the_field)
{
    model_spec_t s;
    model_spec_default(&s);
    expect_spec_error(&s, "kind");

    model_spec_default(&s);
    s.kind = MODEL_KIND_LINEAR;
    expect_spec_error(&s, "inputs");

    model_spec_default(&s);
    s.kind = MODEL_KIND_SOFTMAX;
    s.inputs = 2;
    expect_spec_error(&s, "classes");

    expect_mlp_fault(2, 3, 0, 1, "hidden[1].units");

    model_spec_default(&s);
    s.kind = MODEL_KIND_MLP;
    s.inputs = 2;
    s.outputs = 3;
    s.output_activation = MODEL_ACT_SOFTMAX;
    s.classes = 4;
    expect_spec_error(&s, "classes");

    model_spec_default(&s);
    s.kind = MODEL_KIND_LINEAR;
    s.inputs = 2;
    s.loss = MODEL_LOSS_CCE;
    expect_spec_error(&s, "loss");

    model_spec_default(&s);
    s.kind = MODEL_KIND_LOGISTIC;
    s.inputs = 2;
    s.n_hidden = 1;
    s.hidden[0].units = 2;
    expect_spec_error(&s, "hidden");

    /* 100000 x 100000 weights: over the default parameter limit, caught before allocating. */
    model_spec_default(&s);
    s.kind = MODEL_KIND_LINEAR;
    s.inputs = 100000;
    s.outputs = 100000;
    expect_spec_error(&s, "inputs");     /* a tie names the layer's input */

    /* The dimension at fault is named, not always inputs. */
    expect_dense_fault(MODEL_KIND_SOFTMAX, 100, 1000000, "classes");
    expect_dense_fault(MODEL_KIND_OVO, 2, 20000, "classes");     /* 2e8 pair rows */
    expect_dense_fault(MODEL_KIND_LINEAR, 100, 1000000, "outputs");
    expect_mlp_fault(10, 20, 1000000, 30, "hidden[1].units");   /* 1e6 x 31 weights */
    model_spec_default(&s);
    s.kind = MODEL_KIND_LOGISTIC;
    s.inputs = 1000000;
    {
        err_t err = {0};
        ck_assert_int_eq(model_spec_resolve(&s, 1000, &err), ERR_INVAL);
        ck_assert_str_eq(err.field, "inputs");
    }

    /* Optimizer state counts too: lbfgs keeps 2 x history vectors of the parameters. */
    model_spec_default(&s);
    s.kind = MODEL_KIND_LINEAR;
    s.inputs = 99999;                     /* 100000 parameters */
    optim_cfg_default(&s.optimizer, OPTIM_METHOD_LBFGS);
    s.optimizer.history = 500;
    {
        err_t err = {0};
        ck_assert_int_eq(model_spec_resolve(&s, 50000000, &err), 0);   /* 500 x 1e5 = 5e7 */
        s.optimizer.history = 501;
        ck_assert_int_eq(model_spec_resolve(&s, 50000000, &err), ERR_INVAL);
        ck_assert_str_eq(err.field, "optimizer.history");
        optim_cfg_default(&s.optimizer, OPTIM_METHOD_ADAM);   /* 2 moments always fit */
        s.inputs = 999999;
        s.outputs = 50;
        ck_assert_int_eq(model_spec_resolve(&s, 50000000, &err), 0);
    }

    model_spec_default(&s);
    s.kind = MODEL_KIND_LINEAR;
    s.inputs = 2;
    s.optimizer.momentum = 0.5;   /* sgd with momentum is rejected */
    expect_spec_error(&s, "optimizer.momentum");
}
END_TEST

START_TEST(test_param_values_shape_checked)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_LINEAR;
    s.inputs = 2;
    s.n_param_value = 1;
    s.param_value = calloc(1, sizeof *s.param_value);
    strcpy(s.param_value[0].name, "W1");
    s.param_value[0].rows = 1;
    s.param_value[0].cols = 2;
    s.param_value[0].x = calloc(2, sizeof(double));
    err_t err = {0};
    model_t *m = NULL;
    ck_assert_int_eq(model_spec_resolve(&s, MODEL_MAX_PARAMS_DEFAULT, &err), 0);
    ck_assert_int_eq(model_new(&s, &m, &err), ERR_INVAL);
    ck_assert_ptr_null(m);
    ck_assert_str_eq(err.field, "parameters.W1");
    strcpy(s.param_value[0].name, "W7");
    ck_assert_int_eq(model_new(&s, &m, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "parameters.W7");
    model_spec_free(&s);
}
END_TEST

START_TEST(test_init_is_deterministic)
{
    model_spec_t s = one_hidden_spec(4, 5);
    s.init_method = MODEL_INIT_UNIFORM;
    s.init_scale = 0.5;
    s.init_seed = 9;
    model_t *a = make(&s), *b = make(&s);
    int64_t n = model_n_params(a);
    ck_assert_int_eq(n, 5 * 5 + 1 * 6);
    for (int64_t i = 0; i < n; ++i) {
        ck_assert_double_eq(model_params(a)[i], model_params(b)[i]);
        ck_assert(fabs(model_params(a)[i]) <= 0.5);
    }
    /* The first weight is the first uniform draw of seed 9 scaled to [-0.5, 0.5]. */
    rng_t r;
    rng_seed(&r, 9);
    ck_assert_double_eq(model_params(a)[0], 0.5 * (2.0 * rng_uniform(&r) - 1.0));
    model_free(b);
    s.init_seed = 10;
    b = make(&s);
    ck_assert(model_params(a)[0] != model_params(b)[0]);
    model_free(a);
    model_free(b);

    s.init_method = MODEL_INIT_XAVIER;
    a = make(&s);
    double bound = sqrt(6.0 / (4 + 5));
    for (int32_t i = 0; i < 5; ++i) {
        ck_assert_double_eq(model_params(a)[i * 5], 0.0);   /* bias column */
        for (int32_t j = 1; j < 5; ++j)
            ck_assert(fabs(model_params(a)[i * 5 + j]) <= bound);
    }
    /* decay mask: bias columns excluded in every layer */
    const uint8_t *mask = model_decay_mask(a);
    ck_assert_int_eq(mask[0], 0);
    ck_assert_int_eq(mask[1], 1);
    ck_assert_int_eq(mask[25], 0);
    ck_assert_int_eq(mask[26], 1);
    model_free(a);

    s.init_method = MODEL_INIT_ZEROS;
    a = make(&s);
    for (int64_t i = 0; i < n; ++i)
        ck_assert_double_eq(model_params(a)[i], 0.0);
    model_free(a);
}
END_TEST

START_TEST(test_predict_shapes_and_classes)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_SOFTMAX;
    s.inputs = 2;
    s.classes = 3;
    model_t *m = make(&s);
    double w[9] = {0, 1, 0, 0, 0, 1, 0, -1, -1};
    memcpy(model_params(m), w, sizeof w);
    double x[4] = {2, 0, 0, 2};
    model_prediction_t p;
    err_t err = {0};
    ck_assert_int_eq(model_predict(m, x, 2, &p, &err), 0);
    ck_assert_int_eq(p.n_out, 3);
    ck_assert_int_eq(p.per_row_scalar, 0);
    ck_assert_int_eq(p.classes[0], 0);
    ck_assert_int_eq(p.classes[1], 1);
    ck_assert_ptr_null(p.margins);
    ck_assert_close(p.outputs[0] + p.outputs[1] + p.outputs[2], 1.0, 1e-15, 0);
    model_prediction_free(&p);
    double normal[2], unit[2], off;
    ck_assert_int_eq(model_boundary(m, normal, unit, &off, &err), ERR_INVAL);
    model_free(m);

    model_spec_default(&s);
    s.kind = MODEL_KIND_LOGISTIC;
    s.inputs = 2;
    m = make(&s);
    double t[3] = {1, 3, 4};
    memcpy(model_params(m), t, sizeof t);
    ck_assert_int_eq(model_predict(m, x, 2, &p, &err), 0);
    ck_assert_int_eq(p.per_row_scalar, 1);
    ck_assert_close(p.margins[0], 7.0 / 5.0, 1e-15, 0);
    ck_assert_close(p.outputs[1], 1.0 / (1.0 + exp(-9.0)), 1e-15, 0);
    model_prediction_free(&p);
    ck_assert_int_eq(model_boundary(m, normal, unit, &off, &err), 0);
    ck_assert_double_eq(normal[1], 4.0);
    ck_assert_close(unit[0], 0.6, 1e-15, 0);
    ck_assert_close(off, -0.2, 1e-15, 0);
    model_free(m);
}
END_TEST

/* A 2-input mlp with one sigmoid hidden layer of `units`. */
static model_t *one_hidden_layer(int32_t units)
{
    model_spec_t s = one_hidden_spec(2, units);
    return make(&s);
}

/* An mlp whose layers are large products: the loss and gradient are the same bytes with the
 * products spread over a pool of 2 or 3 threads as on the calling thread alone (the split
 * depends on the shape, never on the threads), and the pool is really used (the products are
 * above the size a split starts at). */
START_TEST(test_mlp_products_same_on_any_pool)
{
    blas_threads_one();
    model_spec_t s = one_hidden_spec(300, 128);
    s.hidden[0].activation = MODEL_ACT_RELU;
    s.outputs = 3;
    model_t *m = make(&s);
    const int32_t rows = 517, n_x = model_n_x(m), n_y = model_n_y(m);
    ck_assert((double)rows * n_x * 128 >= TENSOR_GEMM_SPLIT_MIN);
    double *x = malloc(sizeof(double) * (size_t)rows * n_x);
    double *y = malloc(sizeof(double) * (size_t)rows * n_y);
    testutil_fill(x, (int64_t)rows * n_x, -1.0, 1.0, 5);
    testutil_fill(y, (int64_t)rows * n_y, -1.0, 1.0, 6);
    batch_t b = {rows, n_x, n_y, x, y};
    const int64_t n = model_n_params(m);
    double *g[3];
    double loss[3];
    pool_t *pools[3] = {NULL, NULL, NULL};
    err_t err = {0};
    ck_assert_int_eq(pool_new(2, &pools[1], &err), 0);
    ck_assert_int_eq(pool_new(3, &pools[2], &err), 0);
    for (int p = 0; p < 3; ++p) {
        g[p] = malloc(sizeof(double) * (size_t)n);
        model_set_pool(m, pools[p]);
        ck_assert_int_eq(model_loss_grad(m, &b, &loss[p], g[p], &err), 0);
    }
    model_set_pool(m, NULL);
    ck_assert(isfinite(loss[0]) && loss[0] > 0.0);
    for (int p = 1; p < 3; ++p) {
        ck_assert_mem_eq(&loss[p], &loss[0], sizeof(double));
        ck_assert_mem_eq(g[p], g[0], sizeof(double) * (size_t)n);
    }
    for (int p = 0; p < 3; ++p) {
        free(g[p]);
        pool_free(pools[p]);
    }
    free(x);
    free(y);
    model_free(m);
}
END_TEST

/* The working values of an evaluation grow with its rows and count every row-dependent
 * intermediate with its gradient: the wider the hidden layer, the more a row costs. The check
 * names the caller's field and the largest row count that fits, and that count does fit. */
START_TEST(test_work_values_checked)
{
    model_t *m = one_hidden_layer(50);
    const int64_t one = model_work_values(m, 1);
    /* x (2) and y (1), the hidden layer before and after its activation (2 x 50) and the output
     * (1), each with a gradient: at least 2 x 104 a row. */
    ck_assert_int_ge(one, 2 * 104);
    ck_assert_int_eq(model_work_values(m, 1000), 1000 * one);
    model_t *wide = one_hidden_layer(500);
    ck_assert_int_ge(model_work_values(wide, 1), 8 * one);

    err_t err = {0};
    const int64_t max = model_work_values(m, 40);
    ck_assert_int_eq(model_check_work(m, 40, max, "x", &err), 0);
    ck_assert_int_eq(model_check_work(m, 41, max, "batch_size", &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "batch_size");
    ck_assert_msg(strstr(err.msg, "at most 40 rows fit") != NULL, "%s", err.msg);
    ck_assert_int_eq(model_check_work(wide, 1, max, "x", &err), 0);
    ck_assert_int_eq(model_check_work(m, 1000000, 10, "x", &err), ERR_INVAL);
    ck_assert_msg(strstr(err.msg, "at most 0 rows fit") != NULL, "%s", err.msg);
    model_free(wide);
    model_free(m);
}
END_TEST

START_TEST(test_labels_checked)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_OVO;
    s.inputs = 1;
    s.classes = 3;
    model_t *m = make(&s);
    double x[3] = {0, 1, 2}, y[3] = {0, 2, 3};
    batch_t b = {3, 1, 1, x, y};
    err_t err = {0};
    ck_assert_int_eq(model_check_labels(m, &b, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "y[2]");
    y[2] = 1.5;
    ck_assert_int_eq(model_check_labels(m, &b, &err), ERR_INVAL);
    y[2] = 1;
    ck_assert_int_eq(model_check_labels(m, &b, &err), 0);
    model_free(m);

    model_spec_default(&s);
    s.kind = MODEL_KIND_LOGISTIC;
    s.inputs = 1;
    m = make(&s);
    y[1] = 2;
    ck_assert_int_eq(model_check_labels(m, &b, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "y[1]");
    model_free(m);
}
END_TEST

/* ---- the one-pass engine (fused.c) against the graph ----------------------------------------- */

/* Loss and gradient of m on rows random rows with the given engine. */
static void eval_engine(model_t *m, int32_t engine, const batch_t *b, double *loss, double *g)
{
    err_t err = {0};
    ck_assert_int_eq(model_set_engine(m, engine, &err), 0);
    ck_assert_msg(model_loss_grad(m, b, loss, g, &err) == 0, "%s", err.msg);
    double loss_only;
    ck_assert_int_eq(model_loss_grad(m, b, &loss_only, NULL, &err), 0);
    ck_assert_msg(loss_only == *loss, "loss without gradient %.17g vs %.17g", loss_only, *loss);
}

/* Every kind with a fused path, both reductions, row counts around the tile and thread splits
 * (1 row, odd counts, more rows than the per-thread threshold), widths around the vector
 * blocks: the fused result equals the graph's to 1e-12 relative (sums in another order). */
static void compare_engines(int32_t kind, int32_t loss, int32_t n_in, int32_t k, int32_t rows,
                            int32_t reduction)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = kind;
    s.inputs = n_in;
    s.loss = loss;
    s.reduction = reduction;
    if (kind == MODEL_KIND_LINEAR)
        s.outputs = k;
    else if (kind != MODEL_KIND_LOGISTIC)
        s.classes = k;
    model_t *m = make(&s);
    /* Big batches split across the threads of a pool, as the daemon's models do. */
    pool_t *pool = NULL;
    err_t err = {0};
    ck_assert_int_eq(pool_new(4, &pool, &err), 0);
    model_set_pool(m, pool);
    int32_t n_x = model_n_x(m), n_y = model_n_y(m);
    double *x = malloc(sizeof(double) * (size_t)rows * n_x);
    double *y = malloc(sizeof(double) * (size_t)rows * n_y);
    testutil_fill(x, (int64_t)rows * n_x, -2.0, 2.0, 31 + (uint64_t)rows);
    fill_labels(m, y, rows, 37 + (uint64_t)rows);
    int64_t n = model_n_params(m);
    testutil_fill(model_params(m), n, -1.5, 1.5, 41);
    batch_t b = {rows, n_x, n_y, x, y};
    double *gg = malloc(sizeof(double) * (size_t)n), *gf = malloc(sizeof(double) * (size_t)n);
    double lg, lf;
    eval_engine(m, MODEL_ENGINE_GRAPH, &b, &lg, gg);
    eval_engine(m, MODEL_ENGINE_FUSED, &b, &lf, gf);
    ck_assert(isfinite(lg));
    ck_assert_msg(fabs(lf - lg) <= 1e-12 * fabs(lg) + 1e-300,
                  "%s loss %d rows %d: fused %.17g graph %.17g", model_kind_name(kind), loss,
                  rows, lf, lg);
    double gmax = 0.0;
    for (int64_t i = 0; i < n; ++i)
        gmax = fmax(gmax, fabs(gg[i]));
    for (int64_t i = 0; i < n; ++i)
        ck_assert_msg(fabs(gf[i] - gg[i]) <= 1e-12 * gmax + 1e-300,
                      "%s loss %d n %d k %d rows %d red %d: grad[%lld] fused %.17g graph %.17g",
                      model_kind_name(kind), loss, n_in, k, rows, reduction, (long long)i, gf[i],
                      gg[i]);
    free(gg);
    free(gf);
    free(x);
    free(y);
    model_free(m);
    pool_free(pool);
}

START_TEST(test_fused_matches_graph)
{
    static const int32_t rows[] = {1, 2, 7, 64, 257, 3001};
    static const int32_t widths[] = {1, 3, 13, 37};
    struct { int32_t kind, loss, k; } cases[] = {
        {MODEL_KIND_LINEAR, MODEL_LOSS_L2, 1},     {MODEL_KIND_LINEAR, MODEL_LOSS_L2, 3},
        {MODEL_KIND_LOGISTIC, MODEL_LOSS_BCE, 1},  {MODEL_KIND_LOGISTIC, MODEL_LOSS_L2, 1},
        {MODEL_KIND_SOFTMAX, MODEL_LOSS_CCE, 2},   {MODEL_KIND_SOFTMAX, MODEL_LOSS_CCE, 10},
        {MODEL_KIND_OVA, MODEL_LOSS_BCE, 3},       {MODEL_KIND_OVA, MODEL_LOSS_BCE, 6},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c)
        for (size_t w = 0; w < sizeof widths / sizeof widths[0]; ++w)
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; ++r)
                for (int32_t red = 0; red < 2; ++red)
                    compare_engines(cases[c].kind, cases[c].loss, widths[w], cases[c].k, rows[r],
                                    red ? AD_REDUCTION_SUM : AD_REDUCTION_MEAN);
}
END_TEST

/* Past the per-thread threshold the batch is split across the pool; still the same numbers. */
START_TEST(test_fused_threads_match_graph)
{
    compare_engines(MODEL_KIND_SOFTMAX, MODEL_LOSS_CCE, 100, 10, 4001, AD_REDUCTION_MEAN);
    compare_engines(MODEL_KIND_LOGISTIC, MODEL_LOSS_BCE, 101, 1, 20001, AD_REDUCTION_MEAN);
    compare_engines(MODEL_KIND_LINEAR, MODEL_LOSS_L2, 64, 2, 9999, AD_REDUCTION_SUM);
    compare_engines(MODEL_KIND_OVA, MODEL_LOSS_BCE, 50, 4, 5003, AD_REDUCTION_SUM);
    /* Wide rows: the forward works in chunks of columns (fused.c FUSED_L1_W_BYTES). */
    compare_engines(MODEL_KIND_SOFTMAX, MODEL_LOSS_CCE, 601, 10, 50, AD_REDUCTION_MEAN);
    compare_engines(MODEL_KIND_OVA, MODEL_LOSS_BCE, 2001, 3, 40, AD_REDUCTION_SUM);
    compare_engines(MODEL_KIND_LINEAR, MODEL_LOSS_L2, 5003, 1, 9, AD_REDUCTION_MEAN);
}
END_TEST

/* Finite differences straight against the fused path (small batches take the graph in AUTO). */
START_TEST(test_fused_gradients)
{
    struct { int32_t kind, loss, k; } cases[] = {
        {MODEL_KIND_LINEAR, MODEL_LOSS_L2, 2}, {MODEL_KIND_LOGISTIC, MODEL_LOSS_BCE, 1},
        {MODEL_KIND_LOGISTIC, MODEL_LOSS_L2, 1}, {MODEL_KIND_SOFTMAX, MODEL_LOSS_CCE, 4},
        {MODEL_KIND_OVA, MODEL_LOSS_BCE, 4},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c) {
        model_spec_t s;
        model_spec_default(&s);
        s.kind = cases[c].kind;
        s.loss = cases[c].loss;
        s.inputs = 5;
        if (s.kind == MODEL_KIND_LINEAR)
            s.outputs = cases[c].k;
        else if (s.kind != MODEL_KIND_LOGISTIC)
            s.classes = cases[c].k;
        model_t *m = make(&s);
        err_t err = {0};
        ck_assert_int_eq(model_set_engine(m, MODEL_ENGINE_FUSED, &err), 0);
        int32_t n_x = model_n_x(m), n_y = model_n_y(m);
        double x[ROWS * 5], y[ROWS * 2];
        testutil_fill(x, ROWS * n_x, -1.5, 1.5, 17);
        fill_labels(m, y, ROWS, 23);
        batch_t b = {ROWS, n_x, n_y, x, y};
        int64_t n = model_n_params(m);
        double *theta = model_params(m), g[64], loss;
        testutil_fill(theta, n, -0.8, 0.8, 5);
        ck_assert_int_eq(model_loss_grad(m, &b, &loss, g, &err), 0);
        for (int64_t i = 0; i < n; ++i) {
            double t0 = theta[i], fp, fm;
            theta[i] = t0 + 1e-6;
            ck_assert_int_eq(model_loss_grad(m, &b, &fp, NULL, &err), 0);
            theta[i] = t0 - 1e-6;
            ck_assert_int_eq(model_loss_grad(m, &b, &fm, NULL, &err), 0);
            theta[i] = t0;
            double fd = (fp - fm) / 2e-6;
            ck_assert_msg(fabs(g[i] - fd) <= 1e-6 + 1e-5 * fabs(fd), "%s param %lld: %.12g vs %.12g",
                          model_kind_name(s.kind), (long long)i, g[i], fd);
        }
        model_free(m);
    }
}
END_TEST

/* A bad class id is reported the same way by both engines; kinds without a fused path say so. */
START_TEST(test_fused_errors)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_SOFTMAX;
    s.inputs = 2;
    s.classes = 3;
    model_t *m = make(&s);
    double x[6] = {0}, y[3] = {0, 3, 1}, loss, g[9];
    batch_t b = {3, 2, 1, x, y};
    err_t eg = {0}, ef = {0};
    ck_assert_int_eq(model_set_engine(m, MODEL_ENGINE_GRAPH, &eg), 0);
    ck_assert_int_eq(model_loss_grad(m, &b, &loss, g, &eg), ERR_INVAL);
    ck_assert_int_eq(model_set_engine(m, MODEL_ENGINE_FUSED, &ef), 0);
    ck_assert_int_eq(model_loss_grad(m, &b, &loss, g, &ef), ERR_INVAL);
    ck_assert_str_eq(ef.field, eg.field);
    ck_assert_str_eq(ef.msg, eg.msg);
    ck_assert_int_eq(model_set_engine(m, 7, &ef), ERR_INVAL);
    model_free(m);

    model_spec_default(&s);
    s.kind = MODEL_KIND_OVO;
    s.inputs = 2;
    s.classes = 3;
    m = make(&s);
    ck_assert_int_eq(model_set_engine(m, MODEL_ENGINE_FUSED, &ef), ERR_INVAL);
    ck_assert_int_eq(model_set_engine(m, MODEL_ENGINE_GRAPH, &ef), 0);
    model_free(m);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_grad_linear_multi_output_sum);
    tcase_add_test(tc, test_grad_logistic_bce_and_l2);
    tcase_add_test(tc, test_grad_softmax_ova_ovo);
    tcase_add_test(tc, test_grad_mlp_every_activation);
    tcase_add_test(tc, test_perceptron_update_is_the_rule);
    tcase_add_test(tc, test_spec_errors_name_the_field);
    tcase_add_test(tc, test_param_values_shape_checked);
    tcase_add_test(tc, test_init_is_deterministic);
    tcase_add_test(tc, test_predict_shapes_and_classes);
    tcase_add_test(tc, test_work_values_checked);
    tcase_add_test(tc, test_labels_checked);
    tcase_add_test(tc, test_fused_matches_graph);
    tcase_add_test(tc, test_fused_threads_match_graph);
    tcase_add_test(tc, test_fused_gradients);
    tcase_add_test(tc, test_fused_errors);
    tcase_add_test(tc, test_mlp_products_same_on_any_pool);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
