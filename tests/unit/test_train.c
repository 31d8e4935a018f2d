/* tests/unit/test_train.c -- the training loop on real models: a hand-written gradient descent,
 * history rows and their timing, stop rules, divergence rollback, cancellation, mini-batches,
 * and full-batch golden trajectories for every optimizer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "optim.h"
#include "testutil.h"
#include "train.h"

/* linear_l2_mean's data: 8 rows, 3 inputs, 1 output. */
#define LIN_ROWS 8
#define LIN_NX 3
#define LIN_NP (LIN_NX + 1)
static const double lin_x[LIN_ROWS * LIN_NX] = {
    -1.28, -1.92, -0.15, 0.9,  -0.32, -0.06, -1.95, -0.05, 1.77,  1.4,   0.92,  -1.57,
    1.58,  1.43,  -1.34, 0.53, -1.92, -1.53, -0.73, -1.37, 1.04,  1.27,  -0.62, -0.72};
static const double lin_y[LIN_ROWS] = {-1.13, -3.55, 2.68, -3.81, -3.28, -4.21, -0.9, -4.45};
static const double lin_w0[LIN_NP] = {0.487, -0.162, -0.26, 0.296};

/* The logistic golden cases' data: 10 rows, 2 inputs. */
#define LOG_ROWS 10
static const double log_x[LOG_ROWS * 2] = {0.49,  0.35,  -1.86, 0.47, -0.11, 0.74, 0.58,
                                           -0.73, 0.99,  1.15,  -1.97, -2.34, -1.6, 0.33,
                                           -0.5,  1.01,  -1.12, -1.46, -0.36, -0.6};
static const double log_y[LOG_ROWS] = {1, 0, 1, 1, 1, 0, 0, 0, 0, 1};
static const double log_w0[3] = {-0.04, 0.044, -0.283};

#define GOLD_REL 1e-9
#define GOLD_ABS 1e-12
#define MAX_ROWS 2048

typedef struct fix {
    model_t *m;
    optim_t *o;
    train_ctx_t *t;
    batch_t data;
} fix_t;

typedef struct opts {
    int32_t kind, inputs, method, reduction;
    double lr, wd;
    const double *w0;
} opts_t;

static void fix_init(fix_t *f, const opts_t *op, const double *x, const double *y, int32_t rows)
{
    model_spec_t spec;
    model_spec_default(&spec);
    spec.kind = op->kind;
    spec.inputs = op->inputs;
    spec.reduction = op->reduction;
    spec.init_method = MODEL_INIT_ZEROS;
    optim_cfg_default(&spec.optimizer, op->method);
    spec.optimizer.learning_rate = op->lr;
    spec.optimizer.weight_decay = op->wd;
    err_t err = {0};
    ck_assert_msg(model_spec_resolve(&spec, MODEL_MAX_PARAMS_DEFAULT, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_new(&spec, &f->m, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(model_n_params(f->m), op->inputs + 1);
    memcpy(model_params(f->m), op->w0, (size_t)(op->inputs + 1) * sizeof(double));
    ck_assert_msg(optim_new(&spec.optimizer, model_n_params(f->m), &f->o, &err) == 0, "%s",
                  err.msg);
    f->data = (batch_t){.rows = rows, .n_x = op->inputs, .n_y = 1, .x = x, .y = y};
    ck_assert_msg(train_ctx_new(f->m, f->o, &f->data, &f->t, &err) == 0, "%s", err.msg);
    model_spec_free(&spec);
}

static void fix_linear(fix_t *f, int32_t method, double lr, int32_t reduction)
{
    opts_t op = {.kind = MODEL_KIND_LINEAR, .inputs = LIN_NX, .method = method,
                 .reduction = reduction, .lr = lr, .w0 = lin_w0};
    fix_init(f, &op, lin_x, lin_y, LIN_ROWS);
}

static void fix_free(fix_t *f)
{
    train_ctx_free(f->t);
    optim_free(f->o);
    model_free(f->m);
}

static double full_loss(fix_t *f)
{
    double loss = NAN;
    err_t err = {0};
    ck_assert_int_eq(model_loss_grad(f->m, &f->data, &loss, NULL, &err), 0);
    return loss;
}

/* Hand-written full-batch gradient descent on linear l2 mean: θ_t for t = 0..T and loss_t,
 * ‖g_t‖. L = (1/m) Σ (θ·x* − y)², g = (2/m) Σ (θ·x* − y) x*. */
typedef struct traj {
    double theta[201][LIN_NP];
    double loss[201], gnorm[201];
} traj_t;

static void hand_gd(traj_t *tr, double lr, int32_t steps)
{
    memcpy(tr->theta[0], lin_w0, sizeof lin_w0);
    for (int32_t t = 0; t <= steps; ++t) {
        const double *th = tr->theta[t];
        double g[LIN_NP] = {0}, loss = 0.0;
        for (int32_t i = 0; i < LIN_ROWS; ++i) {
            const double *xi = lin_x + i * LIN_NX;
            double r = th[0] - lin_y[i];
            for (int32_t j = 0; j < LIN_NX; ++j)
                r += th[j + 1] * xi[j];
            loss += r * r;
            g[0] += 2.0 * r / LIN_ROWS;
            for (int32_t j = 0; j < LIN_NX; ++j)
                g[j + 1] += 2.0 * r * xi[j] / LIN_ROWS;
        }
        tr->loss[t] = loss / LIN_ROWS;
        double ss = 0.0;
        for (int32_t j = 0; j < LIN_NP; ++j)
            ss += g[j] * g[j];
        tr->gnorm[t] = sqrt(ss);
        if (t < steps)
            for (int32_t j = 0; j < LIN_NP; ++j)
                tr->theta[t + 1][j] = th[j] - lr * g[j];
    }
}

/* Callback recorder; optionally checks that the model is at θ_{row.step+1} when a row arrives,
 * aborts at a step, or raises the cancel flag at a step. */
typedef struct rec {
    int32_t n;
    train_row_t rows[MAX_ROWS];
    model_t *m;
    const traj_t *tr;        /* expected θ by local step, or NULL */
    int64_t s0;
    int64_t abort_at;        /* return ERR_CANCELLED at this step; -1 never */
    int64_t cancel_at;       /* set *cancel at this step; -1 never */
    atomic_int *cancel;
} rec_t;

static void rec_init(rec_t *r)
{
    memset(r, 0, sizeof *r);
    r->abort_at = -1;
    r->cancel_at = -1;
}

static int on_row(void *ctx, const train_row_t *row)
{
    rec_t *r = ctx;
    ck_assert_int_lt(r->n, MAX_ROWS);
    r->rows[r->n++] = *row;
    if (r->tr != NULL) {
        const double *want = r->tr->theta[row->step - r->s0 + 1];
        for (int32_t j = 0; j < LIN_NP; ++j)
            ck_assert_close(model_params(r->m)[j], want[j], 1e-11, 1e-13);
    }
    if (row->step == r->cancel_at)
        *r->cancel = 1;
    return row->step == r->abort_at ? ERR_CANCELLED : 0;
}

static int run(fix_t *f, const train_req_t *req, int64_t *step, rec_t *r, train_result_t *res)
{
    train_hooks_t hooks = {.on_row = on_row, .ctx = r, .cancel = r != NULL ? r->cancel : NULL};
    err_t err = {0};
    return train_run(f->t, req, step, r != NULL ? &hooks : NULL, res, &err);
}

START_TEST(matches_hand_gd)
{
    static traj_t tr;
    const int32_t T = 40;
    hand_gd(&tr, 0.05, T);
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    static rec_t r;
    rec_init(&r);
    r.m = f.m;
    r.tr = &tr;
    train_req_t req;
    train_req_default(&req);
    req.steps = T;
    int64_t step = 0;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(res.steps_run, T);
    ck_assert_int_eq(res.step, T);
    ck_assert_int_eq(step, T);
    ck_assert_int_eq(res.stopped, TRAIN_STOP_MAX_STEPS);
    ck_assert(res.elapsed_ms >= 0.0);
    ck_assert_close(res.loss_before, tr.loss[0], 1e-12, 1e-14);
    ck_assert_close(res.loss_after, tr.loss[T], 1e-11, 1e-14);
    ck_assert_int_eq(r.n, T);
    for (int32_t t = 0; t < T; ++t) {
        ck_assert_int_eq(r.rows[t].step, t);
        ck_assert_close(r.rows[t].loss, tr.loss[t], 1e-11, 1e-14);
        ck_assert_close(r.rows[t].grad_norm, tr.gnorm[t], 1e-11, 1e-14);
        ck_assert_double_eq(r.rows[t].learning_rate, 0.05);
        ck_assert_int_eq(r.rows[t].recorded, 1);
    }
    for (int32_t j = 0; j < LIN_NP; ++j)
        ck_assert_close(model_params(f.m)[j], tr.theta[T][j], 1e-11, 1e-13);

    /* A second call continues from the global step. */
    rec_init(&r);
    req.steps = 2;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(step, T + 2);
    ck_assert_int_eq(r.n, 2);
    ck_assert_int_eq(r.rows[0].step, T);
    ck_assert_int_eq(r.rows[1].step, T + 1);
    ck_assert_close(res.loss_before, tr.loss[T], 1e-11, 1e-14);
    fix_free(&f);
}
END_TEST

START_TEST(learning_rate_override)
{
    static traj_t tr;
    hand_gd(&tr, 0.01, 5);
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    static rec_t r;
    rec_init(&r);
    r.m = f.m;
    r.tr = &tr;
    train_req_t req;
    train_req_default(&req);
    req.steps = 5;
    req.learning_rate = 0.01;
    int64_t step = 0;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(r.n, 5);
    ck_assert_double_eq(r.rows[4].learning_rate, 0.01);
    for (int32_t j = 0; j < LIN_NP; ++j)
        ck_assert_close(model_params(f.m)[j], tr.theta[5][j], 1e-11, 1e-13);
    fix_free(&f);
}
END_TEST

START_TEST(history_every)
{
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    static rec_t r;
    rec_init(&r);
    train_req_t req;
    train_req_default(&req);
    req.steps = 10;
    req.history_every = 3;
    int64_t step = 5;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(step, 15);
    ck_assert_int_eq(r.n, 10);
    for (int32_t i = 0; i < r.n; ++i) {
        int64_t s = r.rows[i].step;
        ck_assert_int_eq(s, 5 + i);
        int want = s == 6 || s == 9 || s == 12 || s == 14;   /* multiples of 3, and the last */
        ck_assert_msg(r.rows[i].recorded == want, "step %lld recorded %d", (long long)s,
                      r.rows[i].recorded);
    }

    /* history_every 0: rows still arrive (the step advances) but none is recorded. */
    rec_init(&r);
    req.history_every = 0;
    req.steps = 4;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(step, 19);
    ck_assert_int_eq(r.n, 4);
    for (int32_t i = 0; i < r.n; ++i)
        ck_assert_int_eq(r.rows[i].recorded, 0);

    /* No hooks at all is fine. */
    req.steps = 2;
    ck_assert_int_eq(run(&f, &req, &step, NULL, &res), 0);
    ck_assert_int_eq(step, 21);
    fix_free(&f);
}
END_TEST

START_TEST(steps_zero_evaluates)
{
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    static rec_t r;
    rec_init(&r);
    train_req_t req;
    train_req_default(&req);
    req.steps = 0;
    int64_t step = 7;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(res.steps_run, 0);
    ck_assert_int_eq(step, 7);
    ck_assert_int_eq(res.step, 7);
    ck_assert_int_eq(res.stopped, TRAIN_STOP_MAX_STEPS);
    ck_assert_int_eq(r.n, 0);
    ck_assert_close(res.loss_before, 11.224170950400001, GOLD_REL, GOLD_ABS);
    ck_assert_double_eq(res.loss_after, res.loss_before);
    ck_assert_mem_eq(model_params(f.m), lin_w0, sizeof lin_w0);

    /* Also with mini-batches: the loss is still on all rows. */
    req.batch_size = 3;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_close(res.loss_after, 11.224170950400001, GOLD_REL, GOLD_ABS);
    ck_assert_double_eq(res.loss_after, res.loss_before);
    fix_free(&f);
}
END_TEST

START_TEST(tolerance_stop)
{
    static traj_t tr;
    hand_gd(&tr, 0.05, 60);
    double tol = (fabs(tr.loss[5] - tr.loss[4]) + fabs(tr.loss[6] - tr.loss[5])) / 2.0;
    int32_t want = 1;
    while (fabs(tr.loss[want] - tr.loss[want - 1]) >= tol)
        ++want;
    ck_assert_int_eq(want, 6);

    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    static rec_t r;
    rec_init(&r);
    train_req_t req;
    train_req_default(&req);
    req.steps = 60;
    req.tolerance = tol;
    req.history_every = 100;
    int64_t step = 0;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(res.stopped, TRAIN_STOP_TOLERANCE);
    ck_assert_int_eq(res.steps_run, want);
    ck_assert_int_eq(step, want);
    ck_assert_close(res.loss_after, tr.loss[want], 1e-11, 1e-14);
    ck_assert_int_eq(r.n, want);
    ck_assert_int_eq(r.rows[want - 1].step, want - 1);
    ck_assert_int_eq(r.rows[want - 1].recorded, 1);   /* the call's last update */
    ck_assert_int_eq(r.rows[0].recorded, 1);          /* step 0 is a multiple of 100 */
    ck_assert_int_eq(r.rows[1].recorded, 0);

    /* The first step of a call never stops on tolerance, however large. */
    rec_init(&r);
    req.tolerance = 1e300;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(res.stopped, TRAIN_STOP_TOLERANCE);
    ck_assert_int_eq(res.steps_run, 1);
    ck_assert_int_eq(step, want + 1);
    ck_assert_int_eq(r.n, 1);
    fix_free(&f);
}
END_TEST

START_TEST(target_loss_stop)
{
    static traj_t tr;
    hand_gd(&tr, 0.05, 30);
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    static rec_t r;
    rec_init(&r);
    train_req_t req;
    train_req_default(&req);
    req.steps = 30;
    req.target_loss = (tr.loss[7] + tr.loss[8]) / 2.0;
    int64_t step = 0;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(res.stopped, TRAIN_STOP_TARGET_LOSS);
    ck_assert_int_eq(res.steps_run, 8);
    ck_assert_int_eq(r.n, 8);
    ck_assert_close(res.loss_after, tr.loss[8], 1e-11, 1e-14);
    ck_assert(res.loss_after <= req.target_loss);

    /* Already at or below the target: no update. */
    rec_init(&r);
    req.target_loss = 100.0;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(res.stopped, TRAIN_STOP_TARGET_LOSS);
    ck_assert_int_eq(res.steps_run, 0);
    ck_assert_int_eq(step, 8);
    ck_assert_int_eq(r.n, 0);
    ck_assert_double_eq(res.loss_after, res.loss_before);
    fix_free(&f);
}
END_TEST

/* Rolled back: finite parameters equal to a replay of steps_run updates, rows exactly
 * s0..step-1, loss_after the loss at the final parameters. */
static void check_rollback(int32_t method, double lr, int32_t batch_size)
{
    const int64_t s0 = 3;
    fix_t f;
    fix_linear(&f, method, lr, AD_REDUCTION_MEAN);
    static rec_t r;
    rec_init(&r);
    train_req_t req;
    train_req_default(&req);
    req.steps = 1000;
    req.batch_size = batch_size;
    int64_t step = s0;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(res.stopped, TRAIN_STOP_DIVERGED);
    ck_assert_int_lt(res.steps_run, 1000);
    ck_assert_int_eq(step, s0 + res.steps_run);
    ck_assert_int_eq(res.step, step);
    ck_assert_int_eq(r.n, res.steps_run);
    for (int32_t i = 0; i < r.n; ++i) {
        ck_assert_int_eq(r.rows[i].step, s0 + i);
        ck_assert_int_lt(r.rows[i].step, step);
        ck_assert(isfinite(r.rows[i].loss));
    }
    for (int64_t j = 0; j < LIN_NP; ++j)
        ck_assert(isfinite(model_params(f.m)[j]));
    ck_assert(isfinite(res.loss_after));
    ck_assert_double_eq(res.loss_after, full_loss(&f));

    /* A replay of exactly steps_run updates lands on the same parameters and optimizer state. */
    fix_t g;
    fix_linear(&g, method, lr, AD_REDUCTION_MEAN);
    req.steps = res.steps_run;
    int64_t step2 = s0;
    train_result_t res2;
    ck_assert_int_eq(run(&g, &req, &step2, NULL, &res2), 0);
    ck_assert_int_eq(res2.stopped, TRAIN_STOP_MAX_STEPS);
    ck_assert_int_eq(step2, step);
    ck_assert_mem_eq(model_params(g.m), model_params(f.m), LIN_NP * sizeof(double));
    ck_assert_int_eq(optim_state_len(g.o), optim_state_len(f.o));
    if (optim_state_len(f.o) > 0)
        ck_assert_mem_eq(optim_state(g.o), optim_state(f.o),
                         (size_t)optim_state_len(f.o) * sizeof(double));
    ck_assert_double_eq(res2.loss_after, res.loss_after);
    fix_free(&g);
    fix_free(&f);
}

START_TEST(divergence_sgd)
{
    check_rollback(OPTIM_METHOD_SGD, 10.0, 0);
}
END_TEST

START_TEST(divergence_momentum_state)
{
    check_rollback(OPTIM_METHOD_MOMENTUM, 10.0, 0);
}
END_TEST

START_TEST(divergence_minibatch)
{
    check_rollback(OPTIM_METHOD_SGD, 10.0, 3);
}
END_TEST

START_TEST(divergence_first_update)
{
    /* lr 1e308: the very first update overflows a parameter, so nothing is kept. */
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 1e308, AD_REDUCTION_MEAN);
    static rec_t r;
    rec_init(&r);
    train_req_t req;
    train_req_default(&req);
    req.steps = 10;
    int64_t step = 4;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(res.stopped, TRAIN_STOP_DIVERGED);
    ck_assert_int_eq(res.steps_run, 0);
    ck_assert_int_eq(step, 4);
    ck_assert_int_eq(r.n, 0);
    ck_assert_mem_eq(model_params(f.m), lin_w0, sizeof lin_w0);
    ck_assert_double_eq(res.loss_after, res.loss_before);
    fix_free(&f);
}
END_TEST

START_TEST(cancellation)
{
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    static rec_t r;
    atomic_int cancel = 0;
    rec_init(&r);
    r.cancel = &cancel;
    r.cancel_at = 2;
    train_req_t req;
    train_req_default(&req);
    req.steps = 50;
    req.history_every = 100;
    int64_t step = 0;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    /* Row 2 is reported once update 3 is about to happen; the flag is seen at step 4. */
    ck_assert_int_eq(res.stopped, TRAIN_STOP_CANCELLED);
    ck_assert_int_eq(res.steps_run, 4);
    ck_assert_int_eq(step, 4);
    ck_assert_int_eq(r.n, 4);
    ck_assert_int_eq(r.rows[3].recorded, 1);
    ck_assert_double_eq(res.loss_after, full_loss(&f));

    /* Cancelled before the call: evaluate only. */
    rec_init(&r);
    r.cancel = &cancel;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(res.stopped, TRAIN_STOP_CANCELLED);
    ck_assert_int_eq(res.steps_run, 0);
    ck_assert_int_eq(step, 4);
    ck_assert_int_eq(r.n, 0);
    fix_free(&f);
}
END_TEST

START_TEST(callback_abort)
{
    static traj_t tr;
    hand_gd(&tr, 0.05, 20);
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    static rec_t r;
    rec_init(&r);
    r.abort_at = 2;
    train_req_t req;
    train_req_default(&req);
    req.steps = 20;
    int64_t step = 0;
    train_result_t res;
    err_t err = {0};
    train_hooks_t hooks = {.on_row = on_row, .ctx = &r};
    ck_assert_int_eq(train_run(f.t, &req, &step, &hooks, &res, &err), ERR_CANCELLED);
    ck_assert_int_eq(err.code, ERR_CANCELLED);
    ck_assert_int_eq(step, 3);        /* the model stays at row->step + 1 */
    ck_assert_int_eq(res.step, 3);
    ck_assert_int_eq(r.n, 3);
    for (int32_t j = 0; j < LIN_NP; ++j)
        ck_assert_close(model_params(f.m)[j], tr.theta[3][j], 1e-11, 1e-13);
    fix_free(&f);
}
END_TEST

START_TEST(epochs_full_batch)
{
    fix_t f, g;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    fix_linear(&g, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    train_req_t req;
    train_req_default(&req);
    req.steps = 1;
    req.epochs = 4;
    int64_t s1 = 0, s2 = 0;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &s1, NULL, &res), 0);
    ck_assert_int_eq(res.steps_run, 4);
    req.epochs = 0;
    req.steps = 4;
    ck_assert_int_eq(run(&g, &req, &s2, NULL, &res), 0);
    ck_assert_mem_eq(model_params(f.m), model_params(g.m), LIN_NP * sizeof(double));

    /* batch_size >= rows is the full batch. */
    req.batch_size = LIN_ROWS;
    ck_assert_int_eq(run(&f, &req, &s1, NULL, &res), 0);
    req.batch_size = 0;
    ck_assert_int_eq(run(&g, &req, &s2, NULL, &res), 0);
    ck_assert_mem_eq(model_params(f.m), model_params(g.m), LIN_NP * sizeof(double));
    fix_free(&f);
    fix_free(&g);
}
END_TEST

/* The defaults with `epochs` epochs of mini-batches of `batch_size` rows, shuffled from `seed`. */
static train_req_t minibatch_req(int64_t epochs, int32_t batch_size, uint64_t seed)
{
    train_req_t req;
    train_req_default(&req);
    req.epochs = epochs;
    req.batch_size = batch_size;
    req.seed = seed;
    return req;
}

START_TEST(minibatch_determinism)
{
    fix_t a, b, c;
    fix_linear(&a, OPTIM_METHOD_ADAM, 0.05, AD_REDUCTION_MEAN);
    fix_linear(&b, OPTIM_METHOD_ADAM, 0.05, AD_REDUCTION_MEAN);
    fix_linear(&c, OPTIM_METHOD_ADAM, 0.05, AD_REDUCTION_MEAN);
    train_req_t req;
    train_req_default(&req);
    req.epochs = 5;
    req.batch_size = 3;       /* 8 rows: batches of 3, 3, 2 */
    req.seed = 42;
    int64_t sa = 0, sb = 0, sc = 0;
    train_result_t ra, rb, rc;
    ck_assert_int_eq(run(&a, &req, &sa, NULL, &ra), 0);
    ck_assert_int_eq(run(&b, &req, &sb, NULL, &rb), 0);
    req.seed = 43;
    ck_assert_int_eq(run(&c, &req, &sc, NULL, &rc), 0);
    ck_assert_int_eq(ra.steps_run, 15);
    ck_assert_int_eq(sa, 15);
    ck_assert_int_eq(rc.steps_run, 15);
    ck_assert_mem_eq(model_params(a.m), model_params(b.m), LIN_NP * sizeof(double));
    ck_assert_double_eq(ra.loss_after, rb.loss_after);
    ck_assert(memcmp(model_params(a.m), model_params(c.m), LIN_NP * sizeof(double)) != 0);
    ck_assert_close(ra.loss_before, 11.224170950400001, GOLD_REL, GOLD_ABS);
    ck_assert_double_eq(ra.loss_after, full_loss(&a));
    ck_assert(ra.loss_after < ra.loss_before);
    fix_free(&a);
    fix_free(&b);
    fix_free(&c);
}
END_TEST

START_TEST(minibatch_partition)
{
    /* With lr 1e-300 θ cannot move, so with sum reduction the batch losses of each epoch add
     * up to the full loss: every row is used exactly once per epoch, the last batch short. */
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 1e-300, AD_REDUCTION_SUM);
    static rec_t r;
    rec_init(&r);
    train_req_t req = minibatch_req(3, 3, 7);
    int64_t step = 0;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(r.n, 9);
    ck_assert_mem_eq(model_params(f.m), lin_w0, sizeof lin_w0);
    ck_assert_double_eq(res.loss_before, res.loss_after);
    for (int32_t e = 0; e < 3; ++e) {
        double sum = r.rows[3 * e].loss + r.rows[3 * e + 1].loss + r.rows[3 * e + 2].loss;
        ck_assert_close(sum, res.loss_before, 1e-12, 1e-12);
    }
    /* Reshuffled each epoch: the per-batch losses do not simply repeat. */
    ck_assert(r.rows[0].loss != r.rows[3].loss || r.rows[0].loss != r.rows[6].loss ||
              r.rows[1].loss != r.rows[4].loss);
    fix_free(&f);
}
END_TEST

START_TEST(minibatch_loss_before_carried_over)
{
    /* A mini-batch call that starts at the θ where the previous call evaluated every row
     * reports that loss as loss_before; once θ moved outside train_run it evaluates again. */
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.01, AD_REDUCTION_MEAN);
    train_req_t req = minibatch_req(1, 3, 1);
    int64_t step = 0;
    train_result_t r1, r2, r3;
    ck_assert_int_eq(run(&f, &req, &step, NULL, &r1), 0);
    const double at_r1 = full_loss(&f);
    ck_assert_double_eq(r1.loss_after, at_r1);
    req.seed = 2;
    ck_assert_int_eq(run(&f, &req, &step, NULL, &r2), 0);
    ck_assert_double_eq(r2.loss_before, at_r1);
    ck_assert_double_eq(r2.loss_before, r1.loss_after);
    ck_assert(r2.loss_after != r2.loss_before);

    model_params(f.m)[0] += 0.5;
    const double moved = full_loss(&f);
    ck_assert(moved != r2.loss_after);
    ck_assert_int_eq(run(&f, &req, &step, NULL, &r3), 0);
    ck_assert_double_eq(r3.loss_before, moved);
    ck_assert_int_eq(step, 9);
    fix_free(&f);
}
END_TEST

START_TEST(minibatch_loss_before_not_recomputed)
{
    /* The carried-over loss really spares the pass over every row: with the rows changed
     * behind the context's back (which train.h forbids), loss_before is still the old one. */
    static double y[LIN_ROWS];
    memcpy(y, lin_y, sizeof y);
    opts_t op = {.kind = MODEL_KIND_LINEAR, .inputs = LIN_NX, .method = OPTIM_METHOD_SGD,
                 .reduction = AD_REDUCTION_MEAN, .lr = 0.01, .w0 = lin_w0};
    fix_t f;
    fix_init(&f, &op, lin_x, y, LIN_ROWS);
    train_req_t req = minibatch_req(1, 3, 0);
    int64_t step = 0;
    train_result_t r1, r2;
    ck_assert_int_eq(run(&f, &req, &step, NULL, &r1), 0);
    y[0] += 10.0;
    ck_assert(full_loss(&f) != r1.loss_after);
    ck_assert_int_eq(run(&f, &req, &step, NULL, &r2), 0);
    ck_assert_double_eq(r2.loss_before, r1.loss_after);
    fix_free(&f);
}
END_TEST

/* A golden full-batch trajectory: losses, grad norms, loss_after, parameters. */
static void check_golden(const opts_t *op, const double *x, const double *y, int32_t rows,
                         int32_t steps, const double *losses, const double *gnorms,
                         double loss_after, const double *params)
{
    fix_t f;
    fix_init(&f, op, x, y, rows);
    static rec_t r;
    rec_init(&r);
    train_req_t req;
    train_req_default(&req);
    req.steps = steps;
    int64_t step = 0;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(r.n, steps);
    ck_assert_close(res.loss_before, losses[0], GOLD_REL, GOLD_ABS);
    for (int32_t t = 0; t < steps; ++t) {
        ck_assert_close(r.rows[t].loss, losses[t], GOLD_REL, GOLD_ABS);
        if (gnorms != NULL)
            ck_assert_close(r.rows[t].grad_norm, gnorms[t], GOLD_REL, GOLD_ABS);
    }
    ck_assert_close(res.loss_after, loss_after, GOLD_REL, GOLD_ABS);
    for (int32_t j = 0; j <= op->inputs; ++j)
        ck_assert_close(model_params(f.m)[j], params[j], GOLD_REL, GOLD_ABS);
    fix_free(&f);
}

START_TEST(golden_linear_sgd)
{
    opts_t op = {.kind = MODEL_KIND_LINEAR, .inputs = 3, .method = OPTIM_METHOD_SGD,
                 .reduction = AD_REDUCTION_MEAN, .lr = 0.05, .w0 = lin_w0};
    const double losses[] = {11.224170950400001, 7.185913270861467, 4.742825004334387,
                             3.2280059534440246, 2.267113645140728};
    const double gnorms[] = {9.544487776754723, 7.403226427804478, 5.8143684908525355,
                             4.619659793763773, 3.709921945917646};
    const double params[] = {-0.513385281766423, -0.8612920029116193, 0.37267596997822927,
                             1.003425366443243};
    check_golden(&op, lin_x, lin_y, LIN_ROWS, 5, losses, gnorms, 1.6445935484474854, params);
}
END_TEST

START_TEST(golden_logistic_adam)
{
    opts_t op = {.kind = MODEL_KIND_LOGISTIC, .inputs = 2, .method = OPTIM_METHOD_ADAM,
                 .reduction = AD_REDUCTION_MEAN, .lr = 0.1, .w0 = log_w0};
    const double losses[] = {0.7257464021346689, 0.6618539641717722, 0.6061148724981387,
                             0.5584565839722135, 0.5184209337540353};
    const double gnorms[] = {0.5007885895462688, 0.4553408718435609, 0.4058586347684087,
                             0.3576656160643407, 0.31664977595345933};
    const double params[] = {0.3019066747284429, 0.5385136356615515, 0.19388237697595706};
    check_golden(&op, log_x, log_y, LOG_ROWS, 5, losses, gnorms, 0.4851534981204587, params);
}
END_TEST

START_TEST(golden_logistic_momentum_decay)
{
    opts_t op = {.kind = MODEL_KIND_LOGISTIC, .inputs = 2, .method = OPTIM_METHOD_MOMENTUM,
                 .reduction = AD_REDUCTION_MEAN, .lr = 0.1, .wd = 0.01, .w0 = log_w0};
    const double losses[] = {0.7257464021346689, 0.7011384886919063, 0.6581607664373089,
                             0.604947913719746, 0.5495470921592784};
    const double gnorms[] = {0.5007885895462688, 0.4803303821253431, 0.44216740773354335,
                             0.3908403267901743, 0.3335762215772915};
    const double params[] = {-0.01039457815004079, 0.5818572507731553, -0.026654118053151692};
    check_golden(&op, log_x, log_y, LOG_ROWS, 5, losses, gnorms, 0.4980138390571847, params);
}
END_TEST

START_TEST(golden_perceptron)
{
    static const double px[16] = {0.9, 0.4, 0.8, -0.3, -0.2, -0.4, 0.0, -1.5,
                                  1.9, 0.0, 1.8, -0.8, 1.1, -0.7, -0.8, 1.1};
    static const double py[8] = {1, 1, 0, 1, 1, 1, 1, 0};
    static const double w0[3] = {0.05, 0.4, -0.4};
    opts_t op = {.kind = MODEL_KIND_PERCEPTRON, .inputs = 2, .method = OPTIM_METHOD_SGD,
                 .reduction = AD_REDUCTION_SUM, .lr = 1.0, .w0 = w0};
    const double losses[] = {1.0, 4.0, 1.0};
    const double params[] = {2.05, 3.6000000000000005, -1.6999999999999997};
    check_golden(&op, px, py, 8, 3, losses, NULL, 1.0, params);
}
END_TEST

/* ---- validation and early stopping against the hand-written trajectory ------------------ */

#define VAL_ROWS 3
#define ES_STEPS 120

/* Validation rows: the first three training inputs with the targets θ_5 predicts, so the
 * validation loss falls to 0 at step 5 and rises after it. */
static void val_rows(const traj_t *tr, double *vy)
{
    for (int32_t i = 0; i < VAL_ROWS; ++i) {
        const double *xi = lin_x + i * LIN_NX;
        vy[i] = tr->theta[5][0];
        for (int32_t j = 0; j < LIN_NX; ++j)
            vy[i] += tr->theta[5][j + 1] * xi[j];
    }
}

static double val_loss_at(const double *th, const double *vy)
{
    double loss = 0.0;
    for (int32_t i = 0; i < VAL_ROWS; ++i) {
        double r = th[0] - vy[i];
        for (int32_t j = 0; j < LIN_NX; ++j)
            r += th[j + 1] * lin_x[i * LIN_NX + j];
        loss += r * r;
    }
    return loss / VAL_ROWS;
}

/* Returns the step the run stopped at. */
static int64_t check_early_stop(const traj_t *tr, const double *vy, int64_t patience,
                                double min_delta, int restore, int64_t every)
{
    /* The contract's rule over the evaluations t % every == 0 (and the last planned step). */
    int64_t stop = ES_STEPS, best = -1, stale = 0;
    double best_val = NAN;
    for (int64_t t = 0; t < ES_STEPS && stop == ES_STEPS; ++t) {
        if (t % every != 0 && t != ES_STEPS - 1)
            continue;
        double v = val_loss_at(tr->theta[t], vy);
        if (best < 0 || v < best_val - min_delta) {
            best = t;
            best_val = v;
            stale = 0;
        } else if (++stale >= patience) {
            stop = t;
        }
    }
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    batch_t val = {.rows = VAL_ROWS, .n_x = LIN_NX, .n_y = 1, .x = lin_x, .y = vy};
    err_t err = {0};
    ck_assert_int_eq(train_ctx_set_validation(f.t, &val, &err), 0);
    train_req_t req;
    train_req_default(&req);
    req.steps = ES_STEPS;
    req.history_every = every;
    req.patience = patience;
    req.min_delta = min_delta;
    req.restore_best = restore;
    rec_t r;
    rec_init(&r);
    int64_t step = 0;
    train_result_t res;
    ck_assert_int_eq(run(&f, &req, &step, &r, &res), 0);
    ck_assert_int_eq(res.stopped, stop < ES_STEPS ? TRAIN_STOP_EARLY_STOPPING
                                                  : TRAIN_STOP_MAX_STEPS);
    ck_assert_int_eq(res.steps_run, stop);
    ck_assert_int_eq(step, stop);
    ck_assert_int_eq(res.best_step, best);
    ck_assert_close(res.best_val_loss, best_val, 1e-10, 1e-13);
    const int64_t at = stop < ES_STEPS && restore ? best : stop;
    for (int32_t j = 0; j < LIN_NP; ++j)
        ck_assert_close(model_params(f.m)[j], tr->theta[at][j], 1e-11, 1e-13);
    ck_assert_close(res.loss_after, tr->loss[at], 1e-11, 1e-13);
    ck_assert_close(res.val_loss_after, val_loss_at(tr->theta[at], vy), 1e-10, 1e-13);
    /* Every recorded row carries θ_t's validation loss; linear regression has no accuracy. */
    for (int32_t i = 0; i < r.n; ++i) {
        if (!r.rows[i].recorded)
            continue;
        ck_assert_close(r.rows[i].val_loss, val_loss_at(tr->theta[r.rows[i].step], vy), 1e-10,
                        1e-13);
        ck_assert(isnan(r.rows[i].val_accuracy));
    }
    fix_free(&f);
    return stop;
}

START_TEST(early_stopping_matches_hand_gd)
{
    static traj_t tr;
    hand_gd(&tr, 0.05, ES_STEPS);
    double vy[VAL_ROWS];
    val_rows(&tr, vy);
    /* The validation loss is lowest at step 5: patience 1 stops at step 6. */
    ck_assert_int_eq(check_early_stop(&tr, vy, 1, 0.0, 1, 1), 6);
    ck_assert_int_eq(check_early_stop(&tr, vy, 4, 0.0, 1, 1), 9);
    check_early_stop(&tr, vy, 4, 0.0, 0, 1);
    check_early_stop(&tr, vy, 2, 1e-3, 1, 1);
    check_early_stop(&tr, vy, 3, 0.0, 1, 4);
    ck_assert_int_eq(check_early_stop(&tr, vy, 1000, 0.0, 1, 1), ES_STEPS);   /* never fires */

    /* Without validation rows early stopping is refused, naming it. */
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    train_req_t req;
    train_req_default(&req);
    req.patience = 2;
    int64_t step = 0;
    train_result_t res;
    err_t err = {0};
    ck_assert_int_eq(train_run(f.t, &req, &step, NULL, &res, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "early_stopping");
    ck_assert_int_eq(step, 0);
    fix_free(&f);
}
END_TEST

/* ---- resumption ------------------------------------------------------------------------------ */

/* `req` on the linear fixture with `method`: once uninterrupted, and once cut off after row
 * `cut` and resumed on a new context from the state the cut left (as a job taken over by
 * another replica resumes from its last commit, with train_resume_t made from the rows): the
 * same bytes of θ, optimizer state, rows and result. */
static int64_t check_resume(int32_t method, const train_req_t *req, int64_t cut)
{
    static rec_t ra, rb, rc;
    fix_t a, b, c;
    fix_linear(&a, method, 0.05, AD_REDUCTION_MEAN);
    fix_linear(&b, method, 0.05, AD_REDUCTION_MEAN);
    fix_linear(&c, method, 0.05, AD_REDUCTION_MEAN);
    rec_init(&ra);
    rec_init(&rb);
    rec_init(&rc);
    int64_t sa = 0, sb = 0;
    train_result_t resa, resb, resc;
    ck_assert_int_eq(run(&a, req, &sa, &ra, &resa), 0);
    ck_assert_int_ge(resa.steps_run, cut + 1);
    rb.abort_at = cut;
    ck_assert_int_eq(run(&b, req, &sb, &rb, &resb), ERR_CANCELLED);
    ck_assert_int_eq(sb, cut + 1);

    memcpy(model_params(c.m), model_params(b.m), LIN_NP * sizeof(double));
    if (optim_state_len(b.o) > 0)
        memcpy(optim_state(c.o), optim_state(b.o),
               (size_t)optim_state_len(b.o) * sizeof(double));
    train_resume_t rs = {.start_step = 0, .loss_before = resb.loss_before,
                         .loss_prev = rb.rows[rb.n - 1].loss, .best_step = -1};
    for (int32_t i = 0; i < rb.n; ++i)
        train_resume_observe(&rs, req, rb.rows[i].step, rb.rows[i].val_loss);
    train_hooks_t hooks = {.on_row = on_row, .ctx = &rc};
    err_t err = {0};
    int64_t sc = sb;
    ck_assert_msg(train_run_from(c.t, req, &rs, &sc, &hooks, &resc, &err) == 0, "%s", err.msg);

    ck_assert_int_eq(sc, sa);
    ck_assert_int_eq(resc.step, resa.step);
    ck_assert_int_eq(resc.steps_run, resa.steps_run);
    ck_assert_int_eq(resc.stopped, resa.stopped);
    ck_assert_mem_eq(&resc.loss_before, &resa.loss_before, sizeof(double));
    ck_assert_mem_eq(&resc.loss_after, &resa.loss_after, sizeof(double));
    ck_assert_mem_eq(model_params(c.m), model_params(a.m), LIN_NP * sizeof(double));
    ck_assert_int_eq(optim_state_len(c.o), optim_state_len(a.o));
    if (optim_state_len(a.o) > 0)
        ck_assert_mem_eq(optim_state(c.o), optim_state(a.o),
                         (size_t)optim_state_len(a.o) * sizeof(double));
    ck_assert_int_eq(rb.n + rc.n, ra.n);
    for (int32_t i = 0; i < rc.n; ++i) {
        const train_row_t *x = &rc.rows[i], *y = &ra.rows[rb.n + i];
        ck_assert_int_eq(x->step, y->step);
        ck_assert_mem_eq(&x->loss, &y->loss, sizeof(double));
        ck_assert_mem_eq(&x->grad_norm, &y->grad_norm, sizeof(double));
        ck_assert_int_eq(x->recorded, y->recorded);
    }
    int64_t steps_run = resa.steps_run;
    fix_free(&a);
    fix_free(&b);
    fix_free(&c);
    return steps_run;
}

/* Shuffled mini-batches with adam: the resumed call picks up the epoch's order mid-epoch. */
START_TEST(resume_minibatch_adam)
{
    train_req_t req;
    train_req_default(&req);
    req.epochs = 6;
    req.batch_size = 3;      /* 8 rows: batches of 3, 3, 2 */
    req.seed = 11;
    for (int64_t cut = 0; cut < 16; cut += 4)
        check_resume(OPTIM_METHOD_ADAM, &req, cut);
}
END_TEST

/* Full batch with a tolerance that fires after the resumption: loss_prev carries over. */
START_TEST(resume_full_batch_tolerance)
{
    train_req_t req;
    train_req_default(&req);
    req.steps = 500;
    req.tolerance = 1e-4;
    req.history_every = 3;
    int64_t stopped_at = check_resume(OPTIM_METHOD_SGD, &req, 7);
    ck_assert_int_lt(stopped_at, req.steps);
    /* Cut after the last row: the resumed call's first check is the one that stops it. */
    check_resume(OPTIM_METHOD_SGD, &req, stopped_at - 1);
}
END_TEST

/* lbfgs: the resumed call evaluates θ_k afresh, where the cut one had the line search's value. */
START_TEST(resume_lbfgs)
{
    train_req_t req;
    train_req_default(&req);
    req.steps = 12;
    check_resume(OPTIM_METHOD_LBFGS, &req, 3);
}
END_TEST

/* A resumption point outside the call is refused. */
START_TEST(resume_out_of_range)
{
    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    train_req_t req;
    train_req_default(&req);
    req.steps = 5;
    train_resume_t rs = {.start_step = 10, .best_step = -1};
    int64_t step = 16;
    train_result_t res;
    err_t err = {0};
    ck_assert_int_eq(train_run_from(f.t, &req, &rs, &step, NULL, &res, &err), ERR_INVAL);
    ck_assert_int_eq(step, 16);
    fix_free(&f);
}
END_TEST

START_TEST(request_validation)
{
    train_req_t d;
    train_req_default(&d);
    ck_assert_int_eq(d.steps, 1);
    ck_assert_int_eq(d.epochs, 0);
    ck_assert_int_eq(d.batch_size, 0);
    ck_assert(isnan(d.learning_rate));
    ck_assert_double_eq(d.tolerance, 0.0);
    ck_assert(isnan(d.target_loss));
    ck_assert_int_eq(d.history_every, 1);
    ck_assert_int_eq(d.seed, 0);
    ck_assert_int_eq(train_req_validate(&d, NULL), 0);

#define EXPECT_BAD(name, member, value)                                                        \
    do {                                                                                       \
        train_req_t r_ = d;                                                                    \
        err_t e_ = {0};                                                                        \
        r_.member = (value);                                                                   \
        ck_assert_int_eq(train_req_validate(&r_, &e_), ERR_INVAL);                             \
        ck_assert_str_eq(e_.field, name);                                                      \
    } while (0)
    EXPECT_BAD("steps", steps, -1);
    EXPECT_BAD("steps", steps, 1000000001LL);
    EXPECT_BAD("epochs", epochs, -2);
    EXPECT_BAD("batch_size", batch_size, -1);
    EXPECT_BAD("learning_rate", learning_rate, 0.0);
    EXPECT_BAD("learning_rate", learning_rate, -0.5);
    EXPECT_BAD("learning_rate", learning_rate, INFINITY);
    EXPECT_BAD("tolerance", tolerance, -1e-3);
    EXPECT_BAD("tolerance", tolerance, NAN);
    EXPECT_BAD("target_loss", target_loss, INFINITY);
    EXPECT_BAD("target_loss", target_loss, -INFINITY);
    EXPECT_BAD("history_every", history_every, -1);
    EXPECT_BAD("early_stopping", patience, -1);
    EXPECT_BAD("early_stopping.min_delta", min_delta, -0.5);
    EXPECT_BAD("early_stopping.min_delta", min_delta, NAN);
#undef EXPECT_BAD
    {
        /* Early stopping watches recorded rows: none with history_every 0. */
        train_req_t r = d;
        err_t e = {0};
        r.patience = 3;
        ck_assert_int_eq(train_req_validate(&r, &e), 0);
        r.history_every = 0;
        ck_assert_int_eq(train_req_validate(&r, &e), ERR_INVAL);
        ck_assert_str_eq(e.field, "early_stopping");
    }

    fix_t f;
    fix_linear(&f, OPTIM_METHOD_SGD, 0.05, AD_REDUCTION_MEAN);
    int64_t step = 0;
    train_result_t res;
    train_req_t neg = d;
    neg.steps = -1;
    ck_assert_int_eq(run(&f, &neg, &step, NULL, &res), ERR_INVAL);
    ck_assert_mem_eq(model_params(f.m), lin_w0, sizeof lin_w0);
    /* epochs that amount to more than 1e9 steps. */
    train_req_t big = d;
    big.epochs = 1000000000LL;
    big.batch_size = 1;
    err_t err = {0};
    ck_assert_int_eq(train_run(f.t, &big, &step, NULL, &res, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "epochs");
    ck_assert_int_eq(step, 0);

    /* The steps a call implies, and the largest step a model can reach. */
    int64_t n = 0;
    train_req_t e = d;
    e.epochs = 3;
    e.batch_size = 2;
    ck_assert_int_eq(train_req_steps(&e, 5, 0, &n, &err), 0);
    ck_assert_int_eq(n, 9);                         /* 3 batches (2, 2, 1) per epoch */
    e.batch_size = 0;
    ck_assert_int_eq(train_req_steps(&e, 5, 0, &n, &err), 0);
    ck_assert_int_eq(n, 3);
    e.epochs = 400000000LL;
    e.batch_size = 1;
    ck_assert_int_eq(train_req_steps(&e, 3, 0, &n, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "epochs");
    train_req_t s5 = d;
    s5.steps = 5;
    ck_assert_int_eq(train_req_steps(&s5, 3, TRAIN_STEP_MAX - 5, &n, &err), 0);
    ck_assert_int_eq(n, 5);
    ck_assert_int_eq(train_req_steps(&s5, 3, TRAIN_STEP_MAX - 4, &n, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "steps");
    e.epochs = 2;
    ck_assert_int_eq(train_req_steps(&e, 3, TRAIN_STEP_MAX - 5, &n, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "epochs");
    ck_assert(TRAIN_STEP_MAX < (1LL << 53));
    step = TRAIN_STEP_MAX - 4;
    ck_assert_int_eq(train_run(f.t, &s5, &step, NULL, &res, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "steps");
    ck_assert_int_eq(step, TRAIN_STEP_MAX - 4);
    ck_assert_mem_eq(model_params(f.m), lin_w0, sizeof lin_w0);
    step = 0;

    /* Contexts need rows of the model's shape. */
    train_ctx_t *t = NULL;
    batch_t empty = {.rows = 0, .n_x = LIN_NX, .n_y = 1, .x = lin_x, .y = lin_y};
    ck_assert_int_eq(train_ctx_new(f.m, f.o, &empty, &t, &err), ERR_INVAL);
    ck_assert_ptr_null(t);
    batch_t wrong = {.rows = 4, .n_x = 2, .n_y = 1, .x = lin_x, .y = lin_y};
    ck_assert_int_eq(train_ctx_new(f.m, f.o, &wrong, &t, &err), ERR_SHAPE);
    ck_assert_ptr_null(t);
    train_ctx_free(NULL);
    fix_free(&f);

    ck_assert_str_eq(train_stop_name(TRAIN_STOP_MAX_STEPS), "max_steps");
    ck_assert_str_eq(train_stop_name(TRAIN_STOP_TOLERANCE), "tolerance");
    ck_assert_str_eq(train_stop_name(TRAIN_STOP_TARGET_LOSS), "target_loss");
    ck_assert_str_eq(train_stop_name(TRAIN_STOP_CONVERGED), "converged");
    ck_assert_str_eq(train_stop_name(TRAIN_STOP_DIVERGED), "diverged");
    ck_assert_str_eq(train_stop_name(TRAIN_STOP_CANCELLED), "cancelled");
    ck_assert_str_eq(train_stop_name(0), "unknown");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("train");
    TCase *loop = tcase_create("loop");
    tcase_add_test(loop, matches_hand_gd);
    tcase_add_test(loop, learning_rate_override);
    tcase_add_test(loop, history_every);
    tcase_add_test(loop, steps_zero_evaluates);
    tcase_add_test(loop, tolerance_stop);
    tcase_add_test(loop, target_loss_stop);
    tcase_add_test(loop, divergence_sgd);
    tcase_add_test(loop, divergence_momentum_state);
    tcase_add_test(loop, divergence_minibatch);
    tcase_add_test(loop, divergence_first_update);
    tcase_add_test(loop, cancellation);
    tcase_add_test(loop, callback_abort);
    tcase_add_test(loop, epochs_full_batch);
    tcase_add_test(loop, minibatch_determinism);
    tcase_add_test(loop, minibatch_partition);
    tcase_add_test(loop, minibatch_loss_before_carried_over);
    tcase_add_test(loop, minibatch_loss_before_not_recomputed);
    tcase_add_test(loop, request_validation);
    tcase_add_test(loop, resume_minibatch_adam);
    tcase_add_test(loop, resume_full_batch_tolerance);
    tcase_add_test(loop, resume_lbfgs);
    tcase_add_test(loop, resume_out_of_range);
    tcase_add_test(loop, early_stopping_matches_hand_gd);
    suite_add_tcase(s, loop);
    TCase *gold = tcase_create("golden");
    tcase_add_test(gold, golden_linear_sgd);
    tcase_add_test(gold, golden_logistic_adam);
    tcase_add_test(gold, golden_logistic_momentum_decay);
    tcase_add_test(gold, golden_perceptron);
    suite_add_tcase(s, gold);
    return testutil_run(s);
}
