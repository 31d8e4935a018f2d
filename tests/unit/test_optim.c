/* tests/unit/test_optim.c -- single optimizer steps against hand-computed values, state layout,
 * configuration checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "testutil.h"

#define REL 1e-14
#define ABS 1e-15

static optim_t *make(int32_t method, double wd, int64_t n)
{
    optim_cfg_t cfg;
    optim_cfg_default(&cfg, method);
    cfg.weight_decay = wd;
    optim_t *o = NULL;
    err_t err = {0};
    ck_assert_int_eq(optim_new(&cfg, n, &o, &err), 0);
    ck_assert_ptr_nonnull(o);
    return o;
}

START_TEST(defaults)
{
    optim_cfg_t c;
    optim_cfg_default(&c, OPTIM_METHOD_MOMENTUM);
    ck_assert_int_eq(c.method, OPTIM_METHOD_MOMENTUM);
    ck_assert_double_eq(c.learning_rate, 0.1);
    ck_assert_double_eq(c.momentum, 0.9);
    ck_assert_double_eq(c.beta1, 0.9);
    ck_assert_double_eq(c.beta2, 0.999);
    ck_assert_double_eq(c.epsilon, 1e-8);
    ck_assert_double_eq(c.weight_decay, 0.0);
    ck_assert_int_eq(c.history, 10);
    ck_assert_int_eq(c.max_line_search, 20);
    optim_cfg_default(&c, OPTIM_METHOD_SGD);
    ck_assert_double_eq(c.momentum, 0.0);
    ck_assert_int_eq(optim_cfg_validate(&c, NULL), 0);
    optim_cfg_default(&c, OPTIM_METHOD_ADAM);
    ck_assert_double_eq(c.momentum, 0.0);
    ck_assert_int_eq(optim_cfg_validate(&c, NULL), 0);
}
END_TEST

/* The update that keeps the roll-back snapshot moves θ and the state bit for bit as
 * optim_update() does, keeps what they were, and tells a non-finite result. */
static void check_update_keeping(int32_t method, double wd)
{
    enum { N = 11 };   /* not a multiple of any unrolling */
    optim_t *a = make(method, wd, N), *b = make(method, wd, N);
    double ta[N], tb[N], g[N], before[N], state_before[2 * N + 1];
    uint8_t mask[N];
    for (int i = 0; i < N; ++i) {
        ta[i] = tb[i] = 0.1 * (i - 5) + 1.0 / 3.0;
        g[i] = 0.7 / (i + 1) - 0.2;
        mask[i] = (uint8_t)(i % 3 != 0);
    }
    for (int step = 0; step < 3; ++step) {
        double state_was[2 * N + 1] = {0}, theta_was[N];
        memcpy(theta_was, ta, sizeof ta);
        if (optim_state_len(a) > 0)
            memcpy(state_was, optim_state(a), (size_t)optim_state_len(a) * sizeof(double));
        optim_update(b, 0.3, g, mask, tb);
        ck_assert_int_eq(optim_update_keeping(a, 0.3, g, mask, ta, before, state_before), 1);
        ck_assert_mem_eq(ta, tb, sizeof ta);
        ck_assert_mem_eq(before, theta_was, sizeof before);
        if (optim_state_len(a) > 0) {
            ck_assert_mem_eq(optim_state(a), optim_state(b),
                             (size_t)optim_state_len(a) * sizeof(double));
            ck_assert_mem_eq(state_before, state_was,
                             (size_t)optim_state_len(a) * sizeof(double));
        }
    }
    /* An update that overflows: reported, with the θ it started from kept. */
    double theta_was[N];
    memcpy(theta_was, ta, sizeof ta);
    g[N - 1] = 1e308;
    ck_assert_int_eq(optim_update_keeping(a, 1e10, g, mask, ta, before, state_before), 0);
    ck_assert_mem_eq(before, theta_was, sizeof before);
    memcpy(ta, before, sizeof ta);
    g[N - 1] = NAN;
    ck_assert_int_eq(optim_update_keeping(a, 0.3, g, mask, ta, before, state_before), 0);
    optim_free(a);
    optim_free(b);
}

START_TEST(update_keeping_matches_update)
{
    check_update_keeping(OPTIM_METHOD_SGD, 0.0);
    check_update_keeping(OPTIM_METHOD_SGD, 0.01);
    check_update_keeping(OPTIM_METHOD_MOMENTUM, 0.01);
    check_update_keeping(OPTIM_METHOD_ADAM, 0.0);
}
END_TEST

/* Spread over compute threads, the sgd update is the same bytes as optim_update() on the caller
 * alone, with weight decay (scalar loop) and without (four lanes, snapshot streamed past the
 * cache), and a non-finite value in any part, the middle of a part or the last value, is
 * reported with the θ it started from kept. */
START_TEST(update_keeping_on_a_pool)
{
    enum { N = 3 * OPTIM_UPDATE_PART_MIN + 5 };
    const double wd = _i == 0 ? 0.01 : 0.0;
    optim_t *a = make(OPTIM_METHOD_SGD, wd, N), *b = make(OPTIM_METHOD_SGD, wd, N);
    double *ta = malloc(N * sizeof *ta), *tb = malloc(N * sizeof *tb), *g = malloc(N * sizeof *g);
    double *before = malloc((N + 1) * sizeof *before);
    uint8_t *mask = malloc(N);
    ck_assert(ta != NULL && tb != NULL && g != NULL && before != NULL && mask != NULL);
    for (int64_t i = 0; i < N; ++i) {
        ta[i] = tb[i] = sin(0.3 * (double)i);
        g[i] = cos(0.7 * (double)i) / 3.0;
        mask[i] = (uint8_t)(i % 5 != 0);
    }
    pool_t *pool = NULL;
    err_t err = {0};
    ck_assert_int_eq(pool_new(3, &pool, &err), 0);
    optim_set_pool(a, pool);
    for (int step = 0; step < 2; ++step) {
        /* The snapshot one value off its allocation's alignment in the second step. */
        double *kept = before + step;
        ck_assert_int_eq(optim_update_keeping(a, 0.3, g, mask, ta, kept, NULL), 1);
        ck_assert_mem_eq(kept, tb, N * sizeof *tb);
        optim_update(b, 0.3, g, mask, tb);
        ck_assert_mem_eq(ta, tb, N * sizeof *ta);
    }
    const int64_t bad[] = {N / 2 + 1, N - 1};
    for (int k = 0; k < 2; ++k) {
        const double was = g[bad[k]];
        g[bad[k]] = k == 0 ? INFINITY : NAN;
        ck_assert_int_eq(optim_update_keeping(a, 0.3, g, mask, ta, before, NULL), 0);
        ck_assert_mem_eq(before, tb, N * sizeof *tb);
        memcpy(ta, before, N * sizeof *ta);
        g[bad[k]] = was;
    }
    optim_set_pool(a, NULL);
    pool_free(pool);
    optim_free(a);
    optim_free(b);
    free(ta);
    free(tb);
    free(g);
    free(before);
    free(mask);
}
END_TEST

START_TEST(method_names)
{
    const char *names[] = {"sgd", "momentum", "adam", "lbfgs"};
    for (int32_t k = 1; k <= 4; ++k) {
        ck_assert_str_eq(optim_method_name(k), names[k - 1]);
        ck_assert_int_eq(optim_method_from_name(names[k - 1]), k);
    }
    ck_assert_int_eq(optim_method_from_name("rmsprop"), 0);
    ck_assert_int_eq(optim_method_from_name(""), 0);
    ck_assert_int_eq(optim_method_from_name(NULL), 0);
    ck_assert_str_eq(optim_method_name(0), "unknown");
    ck_assert_str_eq(optim_method_name(99), "unknown");
}
END_TEST

START_TEST(sgd_step)
{
    optim_t *o = make(OPTIM_METHOD_SGD, 0.0, 3);
    double theta[3] = {1.0, 2.0, -1.0}, g[3] = {0.5, -1.0, 2.0};
    optim_update(o, 0.1, g, NULL, theta);
    ck_assert_close(theta[0], 0.95, REL, ABS);
    ck_assert_close(theta[1], 2.1, REL, ABS);
    ck_assert_close(theta[2], -1.2, REL, ABS);
    ck_assert_int_eq(optim_state_len(o), 0);
    ck_assert_ptr_null(optim_state(o));
    optim_free(o);
}
END_TEST

START_TEST(sgd_weight_decay_mask)
{
    /* d = g + 0.1 θ on entries 1 and 2 only (entry 0 is a bias). */
    optim_t *o = make(OPTIM_METHOD_SGD, 0.1, 3);
    double theta[3] = {1.0, 2.0, -1.0}, g[3] = {0.5, -1.0, 2.0};
    const uint8_t mask[3] = {0, 1, 1};
    optim_update(o, 0.1, g, mask, theta);
    ck_assert_close(theta[0], 1.0 - 0.1 * 0.5, REL, ABS);
    ck_assert_close(theta[1], 2.0 - 0.1 * (-1.0 + 0.2), REL, ABS);
    ck_assert_close(theta[2], -1.0 - 0.1 * (2.0 - 0.1), REL, ABS);

    /* NULL mask: decay everywhere. */
    double t2[3] = {1.0, 2.0, -1.0};
    optim_update(o, 0.1, g, NULL, t2);
    ck_assert_close(t2[0], 1.0 - 0.1 * (0.5 + 0.1), REL, ABS);
    optim_free(o);
}
END_TEST

START_TEST(momentum_two_steps)
{
    optim_t *o = make(OPTIM_METHOD_MOMENTUM, 0.0, 2);
    double theta[2] = {1.0, -1.0};
    double g1[2] = {1.0, 0.0}, g2[2] = {2.0, 0.5};
    optim_update(o, 0.1, g1, NULL, theta);         /* v = g1 */
    ck_assert_close(theta[0], 0.9, REL, ABS);
    ck_assert_close(theta[1], -1.0, REL, ABS);
    optim_update(o, 0.1, g2, NULL, theta);         /* v = 0.9 v + g2 = [2.9, 0.5] */
    ck_assert_close(theta[0], 0.9 - 0.29, REL, ABS);
    ck_assert_close(theta[1], -1.05, REL, ABS);
    ck_assert_int_eq(optim_state_len(o), 2);
    ck_assert_close(optim_state(o)[0], 2.9, REL, ABS);
    ck_assert_close(optim_state(o)[1], 0.5, REL, ABS);
    optim_reset(o);
    ck_assert_double_eq(optim_state(o)[0], 0.0);
    optim_free(o);
}
END_TEST

START_TEST(momentum_weight_decay)
{
    /* λ = 0.01 on the weight, none on the bias; two steps with the same gradient. */
    optim_t *o = make(OPTIM_METHOD_MOMENTUM, 0.01, 2);
    double theta[2] = {3.0, 2.0}, g[2] = {1.0, 1.0};
    const uint8_t mask[2] = {0, 1};
    optim_update(o, 0.5, g, mask, theta);
    double v0 = 1.0, v1 = 1.0 + 0.01 * 2.0;
    double w1 = 2.0 - 0.5 * v1;
    ck_assert_close(theta[0], 3.0 - 0.5 * v0, REL, ABS);
    ck_assert_close(theta[1], w1, REL, ABS);
    optim_update(o, 0.5, g, mask, theta);
    v0 = 0.9 * v0 + 1.0;
    v1 = 0.9 * v1 + 1.0 + 0.01 * w1;
    ck_assert_close(theta[0], 3.0 - 0.5 - 0.5 * v0, REL, ABS);
    ck_assert_close(theta[1], w1 - 0.5 * v1, REL, ABS);
    optim_free(o);
}
END_TEST

START_TEST(adam_two_steps)
{
    optim_t *o = make(OPTIM_METHOD_ADAM, 0.0, 1);
    double theta = 1.0, g1 = 2.0, g2 = -1.0;
    optim_update(o, 0.1, &g1, NULL, &theta);
    /* m = 0.2, v = 0.004; mhat = 2, vhat = 4: θ = 1 − 0.1·2/(2 + 1e-8). */
    double want1 = 1.0 - 0.1 * 2.0 / (2.0 + 1e-8);
    ck_assert_close(theta, want1, REL, ABS);
    optim_update(o, 0.1, &g2, NULL, &theta);
    /* m = 0.9·0.2 − 0.1 = 0.08, v = 0.999·0.004 + 0.001 = 0.004996. */
    double mhat = 0.08 / (1.0 - 0.81), vhat = 0.004996 / (1.0 - 0.998001);
    double want2 = want1 - 0.1 * mhat / (sqrt(vhat) + 1e-8);
    ck_assert_close(theta, want2, 1e-12, ABS);
    ck_assert_int_eq(optim_state_len(o), 3);
    const double *st = optim_state(o);
    ck_assert_close(st[0], 0.08, 1e-12, ABS);
    ck_assert_close(st[1], 0.004996, 1e-12, ABS);
    ck_assert_double_eq(st[2], 2.0);    /* t */
    optim_free(o);
}
END_TEST

START_TEST(adam_weight_decay_mask)
{
    /* d = g + λθ̃ feeds both moments; the bias (mask 0) sees g alone. */
    optim_t *o = make(OPTIM_METHOD_ADAM, 0.5, 2);
    double theta[2] = {1.0, 1.0}, g[2] = {0.0, 0.0};
    const uint8_t mask[2] = {0, 1};
    optim_update(o, 0.01, g, mask, theta);
    ck_assert_double_eq(theta[0], 1.0);    /* d = 0: m = v = 0, no move */
    /* d = 0.5: mhat = 0.5, vhat = 0.25, θ = 1 − 0.01·0.5/(0.5 + 1e-8). */
    ck_assert_close(theta[1], 1.0 - 0.01 * 0.5 / (0.5 + 1e-8), REL, ABS);
    optim_free(o);
}
END_TEST

START_TEST(state_restore_replays)
{
    /* Saving and writing back the state reproduces the next update bit for bit. */
    optim_t *o = make(OPTIM_METHOD_ADAM, 0.0, 4);
    double theta[4] = {0.1, -0.2, 0.3, 0.4}, g[4] = {1.0, -2.0, 0.5, 0.0};
    optim_update(o, 0.05, g, NULL, theta);
    int64_t len = optim_state_len(o);
    ck_assert_int_eq(len, 9);
    double saved[9], theta_saved[4];
    memcpy(saved, optim_state(o), sizeof saved);
    memcpy(theta_saved, theta, sizeof theta);
    optim_update(o, 0.05, g, NULL, theta);
    double after[4];
    memcpy(after, theta, sizeof after);
    memcpy(optim_state(o), saved, sizeof saved);
    memcpy(theta, theta_saved, sizeof theta);
    optim_update(o, 0.05, g, NULL, theta);
    ck_assert_mem_eq(theta, after, sizeof after);
    optim_reset(o);
    for (int64_t i = 0; i < len; ++i)
        ck_assert_double_eq(optim_state(o)[i], 0.0);
    ck_assert_int_eq(optim_cfg(o)->method, OPTIM_METHOD_ADAM);
    optim_free(o);
}
END_TEST

static void expect_invalid(const optim_cfg_t *c, const char *field)
{
    err_t err = {0};
    ck_assert_int_eq(optim_cfg_validate(c, &err), ERR_INVAL);
    ck_assert_int_eq(err.code, ERR_INVAL);
    ck_assert_str_eq(err.field, field);
    ck_assert(strlen(err.msg) > 0);
    optim_t *o = NULL;
    ck_assert_int_eq(optim_new(c, 3, &o, &err), ERR_INVAL);
    ck_assert_ptr_null(o);
}

START_TEST(validation)
{
    optim_cfg_t c;
    optim_cfg_default(&c, OPTIM_METHOD_SGD);
    c.learning_rate = 0.0;
    expect_invalid(&c, "optimizer.learning_rate");
    c.learning_rate = -1.0;
    expect_invalid(&c, "optimizer.learning_rate");
    c.learning_rate = INFINITY;
    expect_invalid(&c, "optimizer.learning_rate");
    c.learning_rate = NAN;
    expect_invalid(&c, "optimizer.learning_rate");

    optim_cfg_default(&c, OPTIM_METHOD_SGD);
    c.momentum = 0.5;
    expect_invalid(&c, "optimizer.momentum");
    err_t err = {0};
    optim_cfg_validate(&c, &err);
    ck_assert_ptr_nonnull(strstr(err.msg, "\"method\":\"momentum\""));

    optim_cfg_default(&c, OPTIM_METHOD_MOMENTUM);
    c.momentum = 1.0;
    expect_invalid(&c, "optimizer.momentum");
    c.momentum = -0.1;
    expect_invalid(&c, "optimizer.momentum");

    optim_cfg_default(&c, OPTIM_METHOD_ADAM);
    c.beta1 = 1.0;
    expect_invalid(&c, "optimizer.beta1");
    optim_cfg_default(&c, OPTIM_METHOD_ADAM);
    c.beta2 = -0.5;
    expect_invalid(&c, "optimizer.beta2");
    optim_cfg_default(&c, OPTIM_METHOD_ADAM);
    c.epsilon = 0.0;
    expect_invalid(&c, "optimizer.epsilon");
    optim_cfg_default(&c, OPTIM_METHOD_ADAM);
    c.weight_decay = -1e-3;
    expect_invalid(&c, "optimizer.weight_decay");
    c.weight_decay = NAN;
    expect_invalid(&c, "optimizer.weight_decay");

    optim_cfg_default(&c, OPTIM_METHOD_SGD);
    c.method = 0;
    expect_invalid(&c, "optimizer.method");
    c.method = 9;
    expect_invalid(&c, "optimizer.method");
    optim_cfg_default(&c, OPTIM_METHOD_LBFGS);
    ck_assert_int_eq(optim_cfg_validate(&c, &err), 0);
    c.history = 0;
    expect_invalid(&c, "optimizer.history");
    optim_cfg_default(&c, OPTIM_METHOD_LBFGS);
    c.max_line_search = 1001;
    expect_invalid(&c, "optimizer.max_line_search");

    optim_cfg_default(&c, OPTIM_METHOD_SGD);
    optim_t *o = NULL;
    ck_assert_int_eq(optim_new(&c, -1, &o, &err), ERR_RANGE);
    ck_assert_ptr_null(o);
    optim_free(NULL);
}
END_TEST

/* Rates by hand (PyTorch's schedulers in closed form) at chosen steps. */
START_TEST(schedule_rates)
{
    optim_schedule_t s;
    optim_schedule_default(&s, OPTIM_SCHEDULE_CONSTANT);
    ck_assert_double_eq(optim_schedule_rate(&s, 0.3, 0), 0.3);
    ck_assert_double_eq(optim_schedule_rate(&s, 0.3, 1000000), 0.3);

    optim_schedule_default(&s, OPTIM_SCHEDULE_STEP);
    ck_assert_double_eq(s.gamma, 0.1);
    s.step_size = 3;
    s.gamma = 0.5;
    const double step_want[] = {1, 1, 1, 0.5, 0.5, 0.5, 0.25};
    for (int t = 0; t < 7; ++t)
        ck_assert_close(optim_schedule_rate(&s, 2.0, t), 2.0 * step_want[t], REL, 0.0);

    optim_schedule_default(&s, OPTIM_SCHEDULE_EXPONENTIAL);
    s.gamma = 0.8;
    ck_assert_close(optim_schedule_rate(&s, 0.02, 0), 0.02, REL, 0.0);
    ck_assert_close(optim_schedule_rate(&s, 0.02, 4), 0.02 * 0.4096, REL, 0.0);

    /* Cosine: η at 0, the midpoint at t_max/2, η_min at t_max and held there after. */
    optim_schedule_default(&s, OPTIM_SCHEDULE_COSINE);
    s.t_max = 10;
    s.eta_min = 0.1;
    ck_assert_close(optim_schedule_rate(&s, 1.0, 0), 1.0, REL, 0.0);
    ck_assert_close(optim_schedule_rate(&s, 1.0, 5), 0.55, REL, 0.0);
    ck_assert_close(optim_schedule_rate(&s, 1.0, 10), 0.1, REL, ABS);
    ck_assert_close(optim_schedule_rate(&s, 1.0, 11), 0.1, REL, ABS);
    ck_assert_close(optim_schedule_rate(&s, 1.0, 2),
                    0.1 + 0.9 * (1.0 + cos(3.14159265358979323846 * 0.2)) / 2.0, REL, 0.0);

    /* Warmup ramps η (t+1)/w, then the kind starts at its own t = 0. */
    s.warmup_steps = 4;
    ck_assert_close(optim_schedule_rate(&s, 1.0, 0), 0.25, REL, 0.0);
    ck_assert_close(optim_schedule_rate(&s, 1.0, 3), 1.0, REL, 0.0);
    ck_assert_close(optim_schedule_rate(&s, 1.0, 4), 1.0, REL, 0.0);
    ck_assert_close(optim_schedule_rate(&s, 1.0, 9), 0.55, REL, 0.0);
    ck_assert_close(optim_schedule_rate(&s, 1.0, 14), 0.1, REL, ABS);
}
END_TEST

START_TEST(schedule_validation)
{
    optim_cfg_t c;
    optim_cfg_default(&c, OPTIM_METHOD_SGD);
    ck_assert_int_eq(c.schedule.kind, OPTIM_SCHEDULE_CONSTANT);
    c.schedule.kind = 9;
    expect_invalid(&c, "optimizer.schedule.kind");
    optim_schedule_default(&c.schedule, OPTIM_SCHEDULE_STEP);
    expect_invalid(&c, "optimizer.schedule.step_size");
    c.schedule.step_size = 1;
    c.schedule.gamma = NAN;
    expect_invalid(&c, "optimizer.schedule.gamma");
    optim_schedule_default(&c.schedule, OPTIM_SCHEDULE_EXPONENTIAL);
    expect_invalid(&c, "optimizer.schedule.gamma");
    c.schedule.gamma = 1.0000001;
    expect_invalid(&c, "optimizer.schedule.gamma");
    c.schedule.gamma = 1.0;
    ck_assert_int_eq(optim_cfg_validate(&c, NULL), 0);
    c.schedule.warmup_steps = -1;
    expect_invalid(&c, "optimizer.schedule.warmup_steps");
    optim_schedule_default(&c.schedule, OPTIM_SCHEDULE_COSINE);
    expect_invalid(&c, "optimizer.schedule.t_max");
    c.schedule.t_max = 5;
    c.schedule.eta_min = -1e-9;
    expect_invalid(&c, "optimizer.schedule.eta_min");
    c.schedule.eta_min = 0.0;
    ck_assert_int_eq(optim_cfg_validate(&c, NULL), 0);
    c.method = OPTIM_METHOD_LBFGS;
    expect_invalid(&c, "optimizer.schedule");
    optim_schedule_default(&c.schedule, OPTIM_SCHEDULE_CONSTANT);
    ck_assert_int_eq(optim_cfg_validate(&c, NULL), 0);

    ck_assert_int_eq(optim_schedule_from_name("cosine"), OPTIM_SCHEDULE_COSINE);
    ck_assert_int_eq(optim_schedule_from_name("linear"), 0);
    ck_assert_int_eq(optim_schedule_from_name(NULL), 0);
    ck_assert_str_eq(optim_schedule_name(OPTIM_SCHEDULE_EXPONENTIAL), "exponential");
    ck_assert_str_eq(optim_schedule_name(0), "unknown");
}
END_TEST

static void expect_bad_state(const optim_t *o, int64_t step)
{
    err_t err = {0};
    ck_assert_int_eq(optim_state_check(o, step, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "optimizer_state");
    ck_assert(strlen(err.msg) > 0);
}

/* The state the engine keeps, and what it could never have produced. */
START_TEST(state_check)
{
    err_t err = {0};
    optim_t *o = make(OPTIM_METHOD_MOMENTUM, 0.0, 2);
    ck_assert_int_eq(optim_state_check(o, 0, &err), 0);
    optim_state(o)[1] = -3.5;                       /* any finite velocity */
    ck_assert_int_eq(optim_state_check(o, 0, &err), 0);
    optim_state(o)[0] = NAN;
    expect_bad_state(o, 5);
    optim_state(o)[0] = INFINITY;
    expect_bad_state(o, 5);
    optim_free(o);

    o = make(OPTIM_METHOD_ADAM, 0.0, 2);            /* m[2], v[2], t */
    double *st = optim_state(o);
    ck_assert_int_eq(optim_state_check(o, 0, &err), 0);
    const double good[5] = {0.5, -0.25, 0.125, 0.0, 3.0};
    memcpy(st, good, sizeof good);
    ck_assert_int_eq(optim_state_check(o, 3, &err), 0);
    expect_bad_state(o, 2);                         /* t above the model's step */
    st[3] = -1e-300;                                /* a negative second moment */
    expect_bad_state(o, 3);
    memcpy(st, good, sizeof good);
    st[4] = 2.5;
    expect_bad_state(o, 3);
    st[4] = -1.0;
    expect_bad_state(o, 3);
    st[4] = 1e16;
    expect_bad_state(o, 1000000000000000LL);
    memcpy(st, good, sizeof good);
    st[4] = 0.0;                                    /* moments before the first step */
    expect_bad_state(o, 3);
    optim_free(o);

    optim_cfg_t cfg;
    optim_cfg_default(&cfg, OPTIM_METHOD_LBFGS);
    cfg.history = 2;
    ck_assert_int_eq(optim_new(&cfg, 2, &o, &err), 0);
    ck_assert_int_eq(optim_state_len(o), 13);
    st = optim_state(o);
    ck_assert_int_eq(optim_state_check(o, 0, &err), 0);
    /* Two pairs, newest in slot 0 (the memory wrapped): s = (1,0), y = (2,0) and s = (0,1),
     * y = (0,4). */
    const double two[13] = {2, 0, 5, 0.5, 0.25, 1, 0, 0, 1, 2, 0, 0, 4};
    memcpy(st, two, sizeof two);
    ck_assert_int_eq(optim_state_check(o, 5, &err), 0);
    expect_bad_state(o, 4);
    st[1] = 1;
    ck_assert_int_eq(optim_state_check(o, 5, &err), 0);
    st[1] = 2;
    expect_bad_state(o, 5);
    memcpy(st, two, sizeof two);
    st[0] = 3;
    expect_bad_state(o, 5);
    st[0] = 1;                                      /* one pair: it must be in slot 0 */
    st[1] = 1;
    expect_bad_state(o, 5);
    st[1] = 0;
    ck_assert_int_eq(optim_state_check(o, 5, &err), 0);
    memcpy(st, two, sizeof two);
    st[4] = 0.5;                                    /* rho != 1 / s'y */
    expect_bad_state(o, 5);
    st[4] = -0.25;
    expect_bad_state(o, 5);
    memcpy(st, two, sizeof two);
    st[12] = -4;                                    /* s'y < 0 */
    expect_bad_state(o, 5);
    memcpy(st, two, sizeof two);
    st[2] = 1;                                      /* fewer iterations than pairs */
    expect_bad_state(o, 5);
    optim_free(o);
}
END_TEST

START_TEST(state_per_param)
{
    optim_cfg_t cfg;
    optim_cfg_default(&cfg, OPTIM_METHOD_SGD);
    ck_assert_int_eq(optim_state_per_param(&cfg), 0);
    optim_cfg_default(&cfg, OPTIM_METHOD_MOMENTUM);
    ck_assert_int_eq(optim_state_per_param(&cfg), 1);
    optim_cfg_default(&cfg, OPTIM_METHOD_ADAM);
    ck_assert_int_eq(optim_state_per_param(&cfg), 2);
    optim_cfg_default(&cfg, OPTIM_METHOD_LBFGS);
    cfg.history = 7;
    ck_assert_int_eq(optim_state_per_param(&cfg), 14);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, method_names);
    tcase_add_test(tc, sgd_step);
    tcase_add_test(tc, update_keeping_matches_update);
    tcase_add_loop_test(tc, update_keeping_on_a_pool, 0, 2);
    tcase_add_test(tc, sgd_weight_decay_mask);
    tcase_add_test(tc, momentum_two_steps);
    tcase_add_test(tc, momentum_weight_decay);
    tcase_add_test(tc, adam_two_steps);
    tcase_add_test(tc, adam_weight_decay_mask);
    tcase_add_test(tc, state_restore_replays);
    tcase_add_test(tc, validation);
    tcase_add_test(tc, schedule_rates);
    tcase_add_test(tc, schedule_validation);
    tcase_add_test(tc, state_check);
    tcase_add_test(tc, state_per_param);
    suite_add_tcase(s, tc);
    return testutil_run(s);
}
