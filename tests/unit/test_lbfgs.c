/* tests/unit/test_lbfgs.c -- the lbfgs optimizer through the training loop: convergence to
 * optima known in closed form (least squares, ridge with an undecayed bias) or by Newton's
 * method (logistic regression), "converged" at the optimum, state round trips, full batch only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "optim.h"
#include "rng.h"
#include "testutil.h"
#include "train.h"

#define ROWS 200
#define FEAT 3
#define NP (FEAT + 1)

static double X[ROWS * FEAT], Y[ROWS];

/* Solve the NP x NP system A w = b in place (Gaussian elimination with partial pivoting). */
static void solve(double A[NP][NP], double b[NP], double w[NP])
{
    for (int c = 0; c < NP; ++c) {
        int p = c;
        for (int r = c + 1; r < NP; ++r)
            if (fabs(A[r][c]) > fabs(A[p][c]))
                p = r;
        for (int j = 0; j < NP; ++j) {
            double tmp = A[c][j];
            A[c][j] = A[p][j];
            A[p][j] = tmp;
        }
        double tb = b[c];
        b[c] = b[p];
        b[p] = tb;
        for (int r = c + 1; r < NP; ++r) {
            double f = A[r][c] / A[c][c];
            for (int j = c; j < NP; ++j)
                A[r][j] -= f * A[c][j];
            b[r] -= f * b[c];
        }
    }
    for (int r = NP - 1; r >= 0; --r) {
        double acc = b[r];
        for (int j = r + 1; j < NP; ++j)
            acc -= A[r][j] * w[j];
        w[r] = acc / A[r][r];
    }
}

static double xstar(int i, int j)
{
    return j == 0 ? 1.0 : X[i * FEAT + j - 1];
}

static void make_data(int binary)
{
    rng_t r;
    rng_seed(&r, 2024);
    const double w[NP] = {0.5, -1.0, 2.0, 0.25};
    for (int i = 0; i < ROWS; ++i) {
        double z = w[0];
        for (int j = 0; j < FEAT; ++j) {
            X[i * FEAT + j] = 2.0 * rng_uniform(&r) - 1.0;
            z += w[j + 1] * X[i * FEAT + j];
        }
        double noise = 0.3 * rng_normal(&r);
        /* Noisy labels keep the logistic optimum finite (the classes overlap). */
        Y[i] = binary ? (z + 2.0 * noise > 0.0 ? 1.0 : 0.0) : z + noise;
    }
}

static model_t *make_model(int32_t kind, double weight_decay, int32_t history)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = kind;
    s.inputs = FEAT;
    s.init_method = MODEL_INIT_ZEROS;
    optim_cfg_default(&s.optimizer, OPTIM_METHOD_LBFGS);
    s.optimizer.weight_decay = weight_decay;
    s.optimizer.history = history;
    err_t err = {0};
    model_t *m = NULL;
    ck_assert_msg(model_spec_resolve(&s, MODEL_MAX_PARAMS_DEFAULT, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_new(&s, &m, &err) == 0, "%s", err.msg);
    return m;
}

typedef struct run {
    model_t *m;
    optim_t *o;
    train_ctx_t *t;
    int64_t step;
} run_t;

static void run_open(run_t *r, model_t *m)
{
    err_t err = {0};
    static batch_t data;
    data = (batch_t){ROWS, FEAT, 1, X, Y};
    r->m = m;
    r->step = 0;
    ck_assert_int_eq(optim_new(&model_spec(m)->optimizer, model_n_params(m), &r->o, &err), 0);
    ck_assert_msg(train_ctx_new(m, r->o, &data, &r->t, &err) == 0, "%s", err.msg);
}

static train_result_t run_steps(run_t *r, int64_t steps, double tolerance)
{
    train_req_t req;
    train_req_default(&req);
    req.steps = steps;
    req.tolerance = tolerance;
    train_result_t res;
    err_t err = {0};
    ck_assert_msg(train_run(r->t, &req, &r->step, NULL, &res, &err) == 0, "%s", err.msg);
    return res;
}

static void run_close(run_t *r)
{
    train_ctx_free(r->t);
    optim_free(r->o);
    model_free(r->m);
}

START_TEST(test_least_squares_optimum)
{
    make_data(0);
    double A[NP][NP] = {{0}}, b[NP] = {0}, w[NP];
    for (int i = 0; i < ROWS; ++i)
        for (int p = 0; p < NP; ++p) {
            b[p] += xstar(i, p) * Y[i];
            for (int q = 0; q < NP; ++q)
                A[p][q] += xstar(i, p) * xstar(i, q);
        }
    solve(A, b, w);

    run_t r;
    run_open(&r, make_model(MODEL_KIND_LINEAR, 0.0, 10));
    train_result_t res = run_steps(&r, 100, 0.0);
    /* A quadratic in 4 unknowns: L-BFGS needs a handful of iterations, then finds no decrease. */
    ck_assert_int_eq(res.stopped, TRAIN_STOP_CONVERGED);
    ck_assert_int_lt(res.steps_run, 30);
    ck_assert(res.loss_after < res.loss_before);
    for (int p = 0; p < NP; ++p)
        ck_assert_close(model_params(r.m)[p], w[p], 1e-6, 1e-7);
    run_close(&r);
}
END_TEST

START_TEST(test_ridge_bias_not_decayed)
{
    make_data(0);
    const double lambda = 0.5;
    /* ∇ = (2/m) X*ᵀ(X*w − y) + λ D w = 0, D = diag(0, 1, 1, 1). */
    double A[NP][NP] = {{0}}, b[NP] = {0}, w[NP];
    for (int i = 0; i < ROWS; ++i)
        for (int p = 0; p < NP; ++p) {
            b[p] += 2.0 / ROWS * xstar(i, p) * Y[i];
            for (int q = 0; q < NP; ++q)
                A[p][q] += 2.0 / ROWS * xstar(i, p) * xstar(i, q);
        }
    for (int p = 1; p < NP; ++p)
        A[p][p] += lambda;
    solve(A, b, w);

    run_t r;
    run_open(&r, make_model(MODEL_KIND_LINEAR, lambda, 5));
    run_steps(&r, 200, 0.0);
    for (int p = 0; p < NP; ++p)
        ck_assert_close(model_params(r.m)[p], w[p], 1e-6, 1e-7);
    run_close(&r);
}
END_TEST

START_TEST(test_logistic_matches_newton)
{
    make_data(1);
    /* Newton's method on the mean bce: the reference optimum. */
    double w[NP] = {0};
    for (int it = 0; it < 50; ++it) {
        double H[NP][NP] = {{0}}, g[NP] = {0}, dw[NP];
        for (int i = 0; i < ROWS; ++i) {
            double z = 0.0;
            for (int p = 0; p < NP; ++p)
                z += w[p] * xstar(i, p);
            double pr = 1.0 / (1.0 + exp(-z));
            for (int p = 0; p < NP; ++p) {
                g[p] += (pr - Y[i]) * xstar(i, p) / ROWS;
                for (int q = 0; q < NP; ++q)
                    H[p][q] += pr * (1.0 - pr) * xstar(i, p) * xstar(i, q) / ROWS;
            }
        }
        solve(H, g, dw);
        for (int p = 0; p < NP; ++p)
            w[p] -= dw[p];
    }

    run_t r;
    run_open(&r, make_model(MODEL_KIND_LOGISTIC, 0.0, 10));
    train_result_t res = run_steps(&r, 200, 0.0);
    ck_assert(res.stopped == TRAIN_STOP_CONVERGED || res.steps_run == 200);
    for (int p = 0; p < NP; ++p)
        ck_assert_close(model_params(r.m)[p], w[p], 1e-5, 1e-6);
    run_close(&r);
}
END_TEST

START_TEST(test_state_round_trip_continues_identically)
{
    make_data(1);
    run_t a, b;
    run_open(&a, make_model(MODEL_KIND_LOGISTIC, 0.01, 4));
    run_open(&b, make_model(MODEL_KIND_LOGISTIC, 0.01, 4));
    run_steps(&a, 3, 0.0);
    /* b takes a's parameters, optimizer state and step, as a restore or an import does. */
    memcpy(model_params(b.m), model_params(a.m), sizeof(double) * (size_t)model_n_params(a.m));
    ck_assert_int_eq(optim_state_len(b.o), 3 + 4 + 2 * 4 * NP);
    memcpy(optim_state(b.o), optim_state(a.o), sizeof(double) * (size_t)optim_state_len(a.o));
    b.step = a.step;
    train_result_t ra = run_steps(&a, 4, 0.0), rb = run_steps(&b, 4, 0.0);
    ck_assert_double_eq(ra.loss_after, rb.loss_after);
    for (int64_t i = 0; i < model_n_params(a.m); ++i)
        ck_assert_double_eq(model_params(a.m)[i], model_params(b.m)[i]);
    run_close(&a);
    run_close(&b);
}
END_TEST

START_TEST(test_full_batch_only_and_defaults)
{
    make_data(0);
    optim_cfg_t cfg;
    optim_cfg_default(&cfg, OPTIM_METHOD_LBFGS);
    ck_assert_double_eq(cfg.learning_rate, 1.0);
    ck_assert_int_eq(cfg.history, 10);
    ck_assert_int_eq(cfg.max_line_search, 20);

    run_t r;
    run_open(&r, make_model(MODEL_KIND_LINEAR, 0.0, 10));
    train_req_t req;
    train_req_default(&req);
    req.steps = 5;
    req.batch_size = 10;
    train_result_t res;
    err_t err = {0};
    ck_assert_int_eq(train_run(r.t, &req, &r.step, NULL, &res, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "batch_size");
    ck_assert_int_eq(r.step, 0);
    run_close(&r);
}
END_TEST

START_TEST(test_history_rows_and_step_count)
{
    make_data(0);
    run_t r;
    run_open(&r, make_model(MODEL_KIND_LINEAR, 0.0, 10));
    train_result_t first = run_steps(&r, 2, 0.0);
    ck_assert_int_eq(first.steps_run, 2);
    ck_assert_int_eq(r.step, 2);
    ck_assert_int_eq(first.stopped, TRAIN_STOP_MAX_STEPS);
    /* The second call starts where the first ended: its loss_before is the first's loss_after. */
    train_result_t second = run_steps(&r, 1, 0.0);
    ck_assert_double_eq(second.loss_before, first.loss_after);
    ck_assert(second.loss_after <= second.loss_before);
    run_close(&r);
}
END_TEST

/* State from outside with bookkeeping out of range: train_run refuses it before any update,
 * and optim_lbfgs_step itself refuses it too (it never indexes with an unchecked value). */
START_TEST(test_damaged_state_refused)
{
    make_data(0);
    const double bad[][3] = {{1e15, 0, 1}, {5, 0, 5}, {2, 3, 2}, {-1, 0, 0}, {1, 0, 0.5},
                             {NAN, 0, 0}};
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; ++c) {
        run_t r;
        run_open(&r, make_model(MODEL_KIND_LINEAR, 0.0, 3));
        r.step = 10;
        double *st = optim_state(r.o);
        memcpy(st, bad[c], sizeof bad[c]);
        st[3] = st[4] = st[5] = 1.0;
        double theta0[NP];
        memcpy(theta0, model_params(r.m), sizeof theta0);
        train_req_t req;
        train_req_default(&req);
        req.steps = 3;
        train_result_t res;
        err_t err = {0};
        ck_assert_int_eq(train_run(r.t, &req, &r.step, NULL, &res, &err), ERR_INVAL);
        ck_assert_str_eq(err.field, "optimizer_state");
        ck_assert_int_eq(r.step, 10);
        ck_assert_mem_eq(model_params(r.m), theta0, sizeof theta0);

        double loss = 1.0, grad[NP] = {1, 1, 1, 1};
        int moved = 1;
        memset(&err, 0, sizeof err);
        ck_assert_int_eq(optim_lbfgs_step(r.o, 1.0, NULL, NULL, NULL, model_params(r.m), &loss,
                                          grad, &moved, &err), ERR_INVAL);
        ck_assert_str_eq(err.field, "optimizer_state");
        ck_assert_int_eq(moved, 0);
        run_close(&r);
    }
}
END_TEST

/* A cancel raised while the line search runs stops the iteration at its next evaluation, with
 * θ as it was: the long loops inside one iteration honour cancellation (and so shutdown). */
typedef struct cancel_eval {
    model_t *m;
    batch_t data;
    atomic_int flag;
    int evals;
} cancel_eval_t;

static int eval_then_cancel(void *ctx, double *loss, double *grad, err_t *err)
{
    cancel_eval_t *c = ctx;
    atomic_store(&c->flag, ++c->evals >= 2);
    return model_loss_grad(c->m, &c->data, loss, grad, err);
}

START_TEST(test_cancel_inside_iteration)
{
    make_data(0);
    run_t r;
    run_open(&r, make_model(MODEL_KIND_LINEAR, 0.0, 3));
    cancel_eval_t c = {.m = r.m, .data = {ROWS, FEAT, 1, X, Y}};
    optim_set_cancel(r.o, &c.flag);
    double theta0[NP], grad[NP], loss = 0.0;
    memcpy(theta0, model_params(r.m), sizeof theta0);
    err_t err = {0};
    ck_assert_int_eq(model_loss_grad(r.m, &c.data, &loss, grad, &err), 0);
    int moved = 1;
    /* A tiny first step makes the search extrapolate: several evaluations are needed. */
    ck_assert_int_eq(optim_lbfgs_step(r.o, 1e-6, NULL, eval_then_cancel, &c, model_params(r.m),
                                      &loss, grad, &moved, &err), ERR_CANCELLED);
    ck_assert_int_eq(c.evals, 2);
    ck_assert_int_eq(moved, 0);
    ck_assert_mem_eq(model_params(r.m), theta0, sizeof theta0);
    ck_assert_double_eq(optim_state(r.o)[2], 0.0);
    optim_set_cancel(r.o, NULL);
    run_close(&r);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("lbfgs");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_least_squares_optimum);
    tcase_add_test(tc, test_ridge_bias_not_decayed);
    tcase_add_test(tc, test_logistic_matches_newton);
    tcase_add_test(tc, test_state_round_trip_continues_identically);
    tcase_add_test(tc, test_full_batch_only_and_defaults);
    tcase_add_test(tc, test_history_rows_and_step_count);
    tcase_add_test(tc, test_damaged_state_refused);
    tcase_add_test(tc, test_cancel_inside_iteration);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
