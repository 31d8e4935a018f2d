/* tests/unit/test_fused.c -- the one-pass kernels of fused.c on their own (every thread count
 * gives the same numbers to rounding; argument checks), and the promise that a training loop
 * allocates nothing once its buffers exist: this executable is linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc, so every allocation libneuron makes goes
 * through the counting wrappers below. (The graph path against fused.c is in test_model.c.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fused.h"
#include "graph.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "testutil.h"
#include "train.h"

/* ---- allocation counter ------------------------------------------------------------------ */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static volatile long n_alloc;

void *__wrap_malloc(size_t n)
{
    __atomic_add_fetch(&n_alloc, 1, __ATOMIC_RELAXED);
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    __atomic_add_fetch(&n_alloc, 1, __ATOMIC_RELAXED);
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    __atomic_add_fetch(&n_alloc, 1, __ATOMIC_RELAXED);
    return __real_realloc(p, n);
}

static long allocs(void)
{
    return __atomic_load_n(&n_alloc, __ATOMIC_RELAXED);
}

/* ---- fused.c directly --------------------------------------------------------------------- */

/* Loss and gradient without a pool (one thread) and with pools of 2, 3 and 8 threads (more
 * threads than rows for small batches): the same bytes, since the parts are fixed by the size. */
static void threads_agree(int32_t loss, int32_t n, int32_t k, int32_t rows, int32_t red)
{
    static const int32_t pool_sizes[] = {2, 3, 8};
    enum { N_POOLS = sizeof pool_sizes / sizeof pool_sizes[0] };
    err_t err = {0};
    fused_t *f1 = NULL;
    ck_assert_int_eq(fused_new(loss, n, k, red, NULL, &f1, &err), 0);
    ck_assert_int_eq(fused_max_parts(f1), 8);
    int64_t n_g = (int64_t)k * (n + 1), n_y = loss == FUSED_LOSS_L2 ? (int64_t)rows * k : rows;
    double *w = malloc(sizeof(double) * (size_t)n_g), *x = malloc(sizeof(double) * (size_t)rows * n);
    double *y = malloc(sizeof(double) * (size_t)n_y);
    double *g1 = malloc(sizeof(double) * (size_t)n_g), *gp = malloc(sizeof(double) * (size_t)n_g);
    testutil_fill(w, n_g, -1.0, 1.0, 3);
    testutil_fill(x, (int64_t)rows * n, -1.0, 1.0, 4);
    rng_t r;
    rng_seed(&r, 5);
    for (int64_t i = 0; i < n_y; ++i)
        y[i] = loss == FUSED_LOSS_L2 ? rng_uniform(&r)
               : loss == FUSED_LOSS_BCE || loss == FUSED_LOSS_SIGMOID_L2
                   ? (double)rng_below(&r, 2)
                   : (double)rng_below(&r, (uint64_t)k);
    double l1, lp;
    ck_assert_int_eq(fused_loss_grad(f1, w, x, y, rows, &l1, g1, &err), 0);
    for (int p = 0; p < N_POOLS; ++p) {
        pool_t *pool = NULL;
        fused_t *fp = NULL;
        ck_assert_int_eq(pool_new(pool_sizes[p], &pool, &err), 0);
        ck_assert_int_eq(fused_new(loss, n, k, red, pool, &fp, &err), 0);
        ck_assert_int_eq(fused_loss_grad(fp, w, x, y, rows, &lp, gp, &err), 0);
        ck_assert_msg(memcmp(&lp, &l1, sizeof lp) == 0, "loss %.17g on %d threads, %.17g on 1",
                      lp, (int)pool_sizes[p], l1);
        ck_assert_msg(memcmp(gp, g1, sizeof(double) * (size_t)n_g) == 0,
                      "gradient differs on %d threads", (int)pool_sizes[p]);
        fused_free(fp);
        pool_free(pool);
    }
    free(w);
    free(x);
    free(y);
    free(g1);
    free(gp);
    fused_free(f1);
}

START_TEST(thread_counts_agree)
{
    static const int32_t rows[] = {1, 3, 8, 1001, 40001};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; ++i)
        for (int32_t red = 0; red < 2; ++red) {
            threads_agree(FUSED_LOSS_L2, 17, 2, rows[i], red);
            threads_agree(FUSED_LOSS_BCE, 9, 1, rows[i], red);
            threads_agree(FUSED_LOSS_SIGMOID_L2, 9, 1, rows[i], red);
            threads_agree(FUSED_LOSS_CCE, 33, 10, rows[i], red);
            threads_agree(FUSED_LOSS_OVA, 5, 3, rows[i], red);
        }
}
END_TEST

START_TEST(bad_arguments)
{
    err_t err = {0};
    fused_t *f = NULL;
    ck_assert_int_eq(fused_new(0, 3, 1, AD_REDUCTION_MEAN, NULL, &f, &err), ERR_INVAL);
    ck_assert_int_eq(fused_new(FUSED_LOSS_BCE, 3, 2, AD_REDUCTION_MEAN, NULL, &f, &err), ERR_INVAL);
    ck_assert_int_eq(fused_new(FUSED_LOSS_CCE, 3, 1, AD_REDUCTION_MEAN, NULL, &f, &err), ERR_INVAL);
    ck_assert_int_eq(fused_new(FUSED_LOSS_L2, 0, 1, AD_REDUCTION_MEAN, NULL, &f, &err), ERR_INVAL);
    ck_assert_int_eq(fused_new(FUSED_LOSS_L2, 3, 1, 7, NULL, &f, &err), ERR_INVAL);
    ck_assert_ptr_null(f);
    fused_free(NULL);
    ck_assert_int_eq(fused_new(FUSED_LOSS_L2, 2, 1, AD_REDUCTION_MEAN, NULL, &f, &err), 0);
    double w[3] = {0}, x[2] = {0}, y[1] = {0}, loss;
    ck_assert_int_eq(fused_loss_grad(f, w, x, y, 0, &loss, NULL, &err), ERR_INVAL);
    fused_free(f);
}
END_TEST

/* ---- one output: the vector exp and log1p, the row blocks ---------------------------------- */

/* ops.c's formulas through libm, one row: what the kernels' vector arithmetic must reproduce. */
static double ref_sigmoid(double z)
{
    if (z >= 0.0)
        return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

/* Loss term and dz (unscaled) of one row with output z and label t. */
static void ref_row(int32_t loss, double z, double t, double *term, double *dz)
{
    if (loss == FUSED_LOSS_L2) {
        *term = (z - t) * (z - t);
        *dz = 2.0 * (z - t);
    } else if (loss == FUSED_LOSS_SIGMOID_L2) {
        double o = ref_sigmoid(z);
        *term = (o - t) * (o - t);
        *dz = 2.0 * (o - t) * o * (1.0 - o);
    } else {
        *term = (fmax(z, 0.0) - t * z) + log1p(exp(-fabs(z)));
        *dz = (1.0 - t) * ref_sigmoid(z) - t * ref_sigmoid(-z);
    }
}

/* z = x with w = (0, 1): every row alone, at the ends of exp's range (where the kernels switch
 * to libm), around 0, and at infinities and NaN, which must come out as the formulas give them. */
START_TEST(single_output_edges)
{
    static const double zs[] = {-800.0, -745.5, -708.5, -707.25, -706.0, -50.0, -20.0, -1.0,
                                -0.3, -1e-300, -0.0, 0.0, 1e-300, 0.3, 0.34657, 0.6931, 1.0,
                                20.0, 36.7, 50.0, 706.0, 707.25, 708.5, 800.0,
                                INFINITY, -INFINITY, NAN};
    static const int32_t losses[] = {FUSED_LOSS_BCE, FUSED_LOSS_SIGMOID_L2, FUSED_LOSS_L2};
    const double w[2] = {0.0, 1.0};
    err_t err = {0};
    for (size_t l = 0; l < sizeof losses / sizeof losses[0]; ++l) {
        fused_t *f = NULL;
        ck_assert_int_eq(fused_new(losses[l], 1, 1, AD_REDUCTION_SUM, NULL, &f, &err), 0);
        for (size_t i = 0; i < sizeof zs / sizeof zs[0]; ++i)
            for (int t = 0; t < 2; ++t) {
                double y = (double)t, loss, g[2], term, dz;
                ref_row(losses[l], zs[i], y, &term, &dz);
                ck_assert_int_eq(fused_loss_grad(f, w, &zs[i], &y, 1, &loss, g, &err), 0);
                ck_assert_msg(testutil_close(loss, term, 1e-15, 0.0),
                              "loss %d z %g t %d: term %.17g, want %.17g", (int)losses[l], zs[i],
                              t, loss, term);
                ck_assert_msg(testutil_close(g[0], dz, 1e-15, 0.0),
                              "loss %d z %g t %d: dz %.17g, want %.17g", (int)losses[l], zs[i],
                              t, g[0], dz);
                ck_assert_msg(testutil_close(g[1], dz * zs[i], 1e-15, 0.0),
                              "loss %d z %g t %d: dz x %.17g, want %.17g", (int)losses[l],
                              zs[i], t, g[1], dz * zs[i]);
            }
        fused_free(f);
    }
}
END_TEST

/* Every row count from 1 to 41 (no full block of rows, one, several, with each partial block
 * after them, so rows paired and a row left over), widths on and off the vector length and the
 * 16-column stride, both reductions: loss and gradient equal the scalar formulas, so no padding
 * lane leaks into either. */
START_TEST(single_output_blocks)
{
    static const int32_t losses[] = {FUSED_LOSS_BCE, FUSED_LOSS_SIGMOID_L2, FUSED_LOSS_L2};
    static const int32_t widths[] = {1, 4, 6, 13, 16, 23, 36};
    enum { MAX_ROWS = 41, MAX_N = 36 };
    double x[MAX_ROWS * MAX_N], y[MAX_ROWS], w[MAX_N + 1], g[MAX_N + 1], want_g[MAX_N + 1];
    err_t err = {0};
    testutil_fill(x, MAX_ROWS * MAX_N, -3.0, 3.0, 11);
    testutil_fill(w, MAX_N + 1, -1.0, 1.0, 12);
    for (size_t l = 0; l < sizeof losses / sizeof losses[0]; ++l)
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; ++wi)
            for (int32_t red = 0; red < 2; ++red) {
                const int32_t n = widths[wi];
                fused_t *f = NULL;
                ck_assert_int_eq(fused_new(losses[l], n, 1, red, NULL, &f, &err), 0);
                for (int32_t rows = 1; rows <= MAX_ROWS; ++rows) {
                    const double scale = red == AD_REDUCTION_SUM ? 1.0 : 1.0 / rows;
                    double want_loss = 0.0, loss;
                    memset(want_g, 0, sizeof want_g);
                    for (int32_t r = 0; r < rows; ++r) {
                        y[r] = losses[l] == FUSED_LOSS_L2 ? x[r * n] * 0.5 : (double)(r % 3 == 0);
                        double z = w[0], term, dz;
                        for (int32_t i = 0; i < n; ++i)
                            z += x[r * n + i] * w[1 + i];
                        ref_row(losses[l], z, y[r], &term, &dz);
                        want_loss += term;
                        want_g[0] += scale * dz;
                        for (int32_t i = 0; i < n; ++i)
                            want_g[1 + i] += scale * dz * x[r * n + i];
                    }
                    ck_assert_int_eq(fused_loss_grad(f, w, x, y, rows, &loss, g, &err), 0);
                    ck_assert_close(loss, want_loss * scale, 1e-13, 0.0);
                    for (int32_t i = 0; i <= n; ++i)
                        ck_assert_msg(testutil_close(g[i], want_g[i], 1e-12, 1e-14),
                                      "loss %d n %d rows %d red %d: g[%d] %.17g, want %.17g",
                                      (int)losses[l], (int)n, (int)rows, (int)red, (int)i, g[i],
                                      want_g[i]);
                }
                fused_free(f);
            }
}
END_TEST

/* ---- no allocation in the training loop ---------------------------------------------------- */

/* Train `spec` on rows random rows, with a compute pool of 4 threads, validating on half of
 * them with early stopping watching: a first call may allocate (graph buffers, the fused
 * evaluator); later calls -- full batch, mini-batches, loss-only, each validating every
 * recorded row -- must not. */
static void train_allocates_nothing(model_spec_t *spec, int32_t rows)
{
    err_t err = {0};
    model_t *m = NULL;
    pool_t *pool = NULL;
    ck_assert_int_eq(pool_new(4, &pool, &err), 0);
    ck_assert_msg(model_spec_resolve(spec, MODEL_MAX_PARAMS_DEFAULT, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_new(spec, &m, &err) == 0, "%s", err.msg);
    model_set_pool(m, pool);
    int32_t n_x = model_n_x(m), n_y = model_n_y(m);
    double *x = malloc(sizeof(double) * (size_t)rows * n_x);
    double *y = malloc(sizeof(double) * (size_t)rows * n_y);
    testutil_fill(x, (int64_t)rows * n_x, -1.0, 1.0, 7);
    for (int64_t i = 0; i < (int64_t)rows * n_y; ++i)
        y[i] = spec->classes > 0 ? (double)(i % spec->classes) : (double)(i % 2);
    batch_t b = {rows, n_x, n_y, x, y};
    optim_t *o = NULL;
    ck_assert_int_eq(optim_new(&spec->optimizer, model_n_params(m), &o, &err), 0);
    train_ctx_t *t = NULL;
    ck_assert_int_eq(train_ctx_new(m, o, &b, &t, &err), 0);
    batch_t val = {rows / 2 > 0 ? rows / 2 : 1, n_x, n_y, x, y};
    ck_assert_int_eq(train_ctx_set_validation(t, &val, &err), 0);
    train_req_t req;
    train_req_default(&req);
    req.steps = 3;
    req.patience = 1000;
    int64_t step = 0;
    train_result_t res;
    long warm = allocs();
    ck_assert_int_eq(train_run(t, &req, &step, NULL, &res, &err), 0);
    /* The first call binds the batch's rows: the counter must see that allocation. */
    ck_assert_msg(allocs() > warm, "the allocation counter sees nothing");

    long before = allocs();
    int rc1 = train_run(t, &req, &step, NULL, &res, &err);
    req.batch_size = rows / 3 > 0 ? rows / 3 : 1;
    req.steps = 7;
    int rc2 = train_run(t, &req, &step, NULL, &res, &err);
    double loss;
    int rc3 = model_loss_grad(m, &b, &loss, NULL, &err);
    long during = allocs() - before;

    ck_assert_int_eq(rc1, 0);
    ck_assert_int_eq(rc2, 0);
    ck_assert_int_eq(rc3, 0);
    ck_assert_msg(during == 0, "kind %s: %ld allocations in the training loop",
                  model_kind_name(spec->kind), during);
    train_ctx_free(t);
    optim_free(o);
    model_free(m);
    pool_free(pool);
    model_spec_free(spec);
    free(x);
    free(y);
}

START_TEST(training_loop_allocates_nothing)
{
    model_spec_t s;
    /* Fused, split across threads. */
    model_spec_default(&s);
    s.kind = MODEL_KIND_LOGISTIC;
    s.inputs = 40;
    train_allocates_nothing(&s, 20000);
    model_spec_default(&s);
    s.kind = MODEL_KIND_SOFTMAX;
    s.inputs = 30;
    s.classes = 4;
    train_allocates_nothing(&s, 5000);
    /* The graph: an mlp, a tiny one, and a small linear batch. */
    model_spec_default(&s);
    s.kind = MODEL_KIND_MLP;
    s.inputs = 12;
    s.n_hidden = 1;
    s.hidden[0].units = 8;
    s.outputs = 3;
    s.output_activation = MODEL_ACT_SOFTMAX;
    train_allocates_nothing(&s, 300);
    model_spec_default(&s);
    s.kind = MODEL_KIND_MLP;
    s.inputs = 3;
    s.n_hidden = 1;
    s.hidden[0].units = 3;
    s.output_activation = MODEL_ACT_SIGMOID;
    train_allocates_nothing(&s, 3);
    model_spec_default(&s);
    s.kind = MODEL_KIND_LINEAR;
    s.inputs = 2;
    train_allocates_nothing(&s, 10);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("fused");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, thread_counts_agree);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, single_output_edges);
    tcase_add_test(tc, single_output_blocks);
    tcase_add_test(tc, training_loop_allocates_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
