/* lib/optim.c -- sgd, momentum and Adam over flat arrays; see optim.h for the exact updates.
 *
 * The arithmetic follows PyTorch's single-tensor kernels operation by operation (SGD: θ += −η d;
 * momentum: v = v·μ + d; Adam: m.lerp_(d, 1−β1), v = v·β2 + (1−β2)·d·d,
 * θ += −(η/bc1) · m / (sqrt(v)/sqrt(bc2) + ε)), so trajectories agree with the golden vectors to
 * the last few ulps rather than merely to the same mathematics.
 */
#include "optim.h"

#include <assert.h>
#ifdef __x86_64__
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "numerics.h"
#include "pool.h"
#include "tensor.h"

struct optim {
    optim_cfg_t cfg;
    int64_t n;
    int64_t state_len;
    double *work;         /* lbfgs scratch: θ0, g0, d, g_trial (4n) and α (m); else NULL */
    const atomic_int *cancel;     /* borrowed; polled by lbfgs's loops; may be NULL */
    pool_t *pool;                 /* borrowed; spreads sgd's update over threads; may be NULL */
    double state[];       /* momentum: v[n]; adam: m[n], v[n], t; lbfgs: see optim.h */
};

static const char *const method_names[] = {
    [OPTIM_METHOD_SGD] = "sgd",
    [OPTIM_METHOD_MOMENTUM] = "momentum",
    [OPTIM_METHOD_ADAM] = "adam",
    [OPTIM_METHOD_LBFGS] = "lbfgs",
};
#define N_METHOD_NAMES ((int32_t)(sizeof method_names / sizeof method_names[0]))

/* Largest history / line-search length we accept; far beyond any useful value. */
#define OPTIM_LBFGS_MAX 1000

void optim_cfg_default(optim_cfg_t *cfg, int32_t method)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->method = method;
    /* The line search adapts lbfgs's step, so its rate only scales the first trial. */
    cfg->learning_rate = method == OPTIM_METHOD_LBFGS ? 1.0 : 0.1;
    cfg->momentum = method == OPTIM_METHOD_MOMENTUM ? 0.9 : 0.0;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->epsilon = 1e-8;
    cfg->weight_decay = 0.0;
    cfg->history = 10;
    cfg->max_line_search = 20;
    optim_schedule_default(&cfg->schedule, OPTIM_SCHEDULE_CONSTANT);
}

static const char *const schedule_names[] = {
    [OPTIM_SCHEDULE_CONSTANT] = "constant",
    [OPTIM_SCHEDULE_STEP] = "step",
    [OPTIM_SCHEDULE_EXPONENTIAL] = "exponential",
    [OPTIM_SCHEDULE_COSINE] = "cosine",
};
#define N_SCHEDULE_NAMES ((int32_t)(sizeof schedule_names / sizeof schedule_names[0]))

/* Largest step count a schedule field takes: far beyond any run (train.c caps a call at 1e9). */
#define OPTIM_SCHEDULE_MAX_STEPS 1000000000000000LL

void optim_schedule_default(optim_schedule_t *s, int32_t kind)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    /* StepLR's default; exponential has none, so its gamma stays 0 until given. */
    s->gamma = kind == OPTIM_SCHEDULE_STEP ? 0.1 : 0.0;
}

int optim_schedule_validate(const optim_schedule_t *s, err_t *err)
{
    if (s->kind < OPTIM_SCHEDULE_CONSTANT || s->kind > OPTIM_SCHEDULE_COSINE)
        return err_set_field(err, ERR_INVAL, "optimizer.schedule.kind",
                             "optimizer.schedule.kind: unknown kind %d "
                             "(constant, step, exponential, cosine)", (int)s->kind);
    if (s->warmup_steps < 0 || s->warmup_steps > OPTIM_SCHEDULE_MAX_STEPS)
        return err_set_field(err, ERR_INVAL, "optimizer.schedule.warmup_steps",
                             "optimizer.schedule.warmup_steps must be in [0, %lld], got %lld",
                             OPTIM_SCHEDULE_MAX_STEPS, (long long)s->warmup_steps);
    switch (s->kind) {
    case OPTIM_SCHEDULE_STEP:
        if (s->step_size < 1 || s->step_size > OPTIM_SCHEDULE_MAX_STEPS)
            return err_set_field(err, ERR_INVAL, "optimizer.schedule.step_size",
                                 "optimizer.schedule.step_size is required for a step schedule "
                                 "and must be in [1, %lld], got %lld",
                                 OPTIM_SCHEDULE_MAX_STEPS, (long long)s->step_size);
        if (!isfinite(s->gamma) || s->gamma <= 0.0)
            return err_set_field(err, ERR_INVAL, "optimizer.schedule.gamma",
                                 "optimizer.schedule.gamma must be a finite number > 0, got %g",
                                 s->gamma);
        break;
    case OPTIM_SCHEDULE_EXPONENTIAL:
        if (!isfinite(s->gamma) || s->gamma <= 0.0 || s->gamma > 1.0)
            return err_set_field(err, ERR_INVAL, "optimizer.schedule.gamma",
                                 "optimizer.schedule.gamma is required for an exponential "
                                 "schedule and must be in (0, 1], got %g", s->gamma);
        break;
    case OPTIM_SCHEDULE_COSINE:
        if (s->t_max < 1 || s->t_max > OPTIM_SCHEDULE_MAX_STEPS)
            return err_set_field(err, ERR_INVAL, "optimizer.schedule.t_max",
                                 "optimizer.schedule.t_max is required for a cosine schedule "
                                 "and must be in [1, %lld], got %lld",
                                 OPTIM_SCHEDULE_MAX_STEPS, (long long)s->t_max);
        if (!isfinite(s->eta_min) || s->eta_min < 0.0)
            return err_set_field(err, ERR_INVAL, "optimizer.schedule.eta_min",
                                 "optimizer.schedule.eta_min must be a finite number >= 0, "
                                 "got %g", s->eta_min);
        break;
    default:
        break;
    }
    return 0;
}

int32_t optim_schedule_from_name(const char *name)
{
    if (name == NULL)
        return 0;
    for (int32_t k = 1; k < N_SCHEDULE_NAMES; ++k)
        if (schedule_names[k] != NULL && strcmp(name, schedule_names[k]) == 0)
            return k;
    return 0;
}

const char *optim_schedule_name(int32_t kind)
{
    if (kind < 1 || kind >= N_SCHEDULE_NAMES || schedule_names[kind] == NULL)
        return "unknown";
    return schedule_names[kind];
}

double optim_schedule_rate(const optim_schedule_t *s, double base, int64_t t)
{
    const int64_t w = s->warmup_steps;
    if (t < w)
        return base * (double)(t + 1) / (double)w;
    t -= w;
    switch (s->kind) {
    case OPTIM_SCHEDULE_STEP:
        return base * pow(s->gamma, (double)(t / s->step_size));
    case OPTIM_SCHEDULE_EXPONENTIAL:
        return base * pow(s->gamma, (double)t);
    case OPTIM_SCHEDULE_COSINE: {
        const double tc = (double)(t < s->t_max ? t : s->t_max);
        const double pi = 3.14159265358979323846;
        return s->eta_min +
               (base - s->eta_min) * (1.0 + cos(pi * tc / (double)s->t_max)) / 2.0;
    }
    default:
        return base;
    }
}

int optim_cfg_validate(const optim_cfg_t *cfg, err_t *err)
{
    if (cfg->method < OPTIM_METHOD_SGD || cfg->method > OPTIM_METHOD_LBFGS)
        return err_set_field(err, ERR_INVAL, "optimizer.method",
                             "optimizer.method: unknown method %d (sgd, momentum, adam, lbfgs)",
                             (int)cfg->method);
    if (!isfinite(cfg->learning_rate) || cfg->learning_rate <= 0.0)
        return err_set_field(err, ERR_INVAL, "optimizer.learning_rate",
                             "optimizer.learning_rate must be a finite number > 0, got %g",
                             cfg->learning_rate);
    if (!isfinite(cfg->momentum) || cfg->momentum < 0.0 || cfg->momentum >= 1.0)
        return err_set_field(err, ERR_INVAL, "optimizer.momentum",
                             "optimizer.momentum must be in [0, 1), got %g", cfg->momentum);
    if (cfg->method == OPTIM_METHOD_SGD && cfg->momentum != 0.0)
        return err_set_field(err, ERR_INVAL, "optimizer.momentum",
                             "optimizer.momentum: sgd takes no momentum (got %g); "
                             "use \"method\":\"momentum\" for sgd with momentum",
                             cfg->momentum);
    if (!isfinite(cfg->beta1) || cfg->beta1 < 0.0 || cfg->beta1 >= 1.0)
        return err_set_field(err, ERR_INVAL, "optimizer.beta1",
                             "optimizer.beta1 must be in [0, 1), got %g", cfg->beta1);
    if (!isfinite(cfg->beta2) || cfg->beta2 < 0.0 || cfg->beta2 >= 1.0)
        return err_set_field(err, ERR_INVAL, "optimizer.beta2",
                             "optimizer.beta2 must be in [0, 1), got %g", cfg->beta2);
    if (!isfinite(cfg->epsilon) || cfg->epsilon <= 0.0)
        return err_set_field(err, ERR_INVAL, "optimizer.epsilon",
                             "optimizer.epsilon must be a finite number > 0, got %g",
                             cfg->epsilon);
    if (!isfinite(cfg->weight_decay) || cfg->weight_decay < 0.0)
        return err_set_field(err, ERR_INVAL, "optimizer.weight_decay",
                             "optimizer.weight_decay must be a finite number >= 0, got %g",
                             cfg->weight_decay);
    if (cfg->history < 1 || cfg->history > OPTIM_LBFGS_MAX)
        return err_set_field(err, ERR_INVAL, "optimizer.history",
                             "optimizer.history must be in [1, %d], got %d", OPTIM_LBFGS_MAX,
                             (int)cfg->history);
    if (cfg->max_line_search < 1 || cfg->max_line_search > OPTIM_LBFGS_MAX)
        return err_set_field(err, ERR_INVAL, "optimizer.max_line_search",
                             "optimizer.max_line_search must be in [1, %d], got %d",
                             OPTIM_LBFGS_MAX, (int)cfg->max_line_search);
    int rc = optim_schedule_validate(&cfg->schedule, err);
    if (rc < 0)
        return rc;
    /* The line search picks lbfgs's step length; a schedule would only fight it. The plain
     * constant rate (what an export shows) is no schedule; a warmup ramp is one. */
    if (cfg->method == OPTIM_METHOD_LBFGS && cfg->schedule.kind != OPTIM_SCHEDULE_CONSTANT)
        return err_set_field(err, ERR_INVAL, "optimizer.schedule",
                             "optimizer.schedule: lbfgs takes no learning-rate schedule (its "
                             "line search sets the step), got \"%s\"",
                             optim_schedule_name(cfg->schedule.kind));
    if (cfg->method == OPTIM_METHOD_LBFGS && cfg->schedule.warmup_steps != 0)
        return err_set_field(err, ERR_INVAL, "optimizer.schedule",
                             "optimizer.schedule: lbfgs takes no learning-rate schedule (its "
                             "line search sets the step), got warmup_steps = %lld",
                             (long long)cfg->schedule.warmup_steps);
    return 0;
}

int32_t optim_method_from_name(const char *name)
{
    if (name == NULL)
        return 0;
    for (int32_t k = 1; k < N_METHOD_NAMES; ++k)
        if (method_names[k] != NULL && strcmp(name, method_names[k]) == 0)
            return k;
    return 0;
}

const char *optim_method_name(int32_t method)
{
    if (method < 1 || method >= N_METHOD_NAMES || method_names[method] == NULL)
        return "unknown";
    return method_names[method];
}

static int64_t state_len_for(int32_t method, int64_t m, int64_t n)
{
    switch (method) {
    case OPTIM_METHOD_MOMENTUM:
        return n;
    case OPTIM_METHOD_ADAM:
        return 2 * n + 1;
    case OPTIM_METHOD_LBFGS:
        return 3 + m + 2 * m * n;
    default:
        return 0;
    }
}

int64_t optim_state_per_param(const optim_cfg_t *cfg)
{
    switch (cfg->method) {
    case OPTIM_METHOD_MOMENTUM:
        return 1;
    case OPTIM_METHOD_ADAM:
        return 2;
    case OPTIM_METHOD_LBFGS:
        return 2 * (int64_t)cfg->history;
    default:
        return 0;
    }
}

int optim_new(const optim_cfg_t *cfg, int64_t n, optim_t **out, err_t *err)
{
    *out = NULL;
    int rc = optim_cfg_validate(cfg, err);
    if (rc < 0)
        return rc;
    int64_t m = cfg->method == OPTIM_METHOD_LBFGS ? cfg->history : 0;
    /* (2m + 4) n + m + 3 doubles must fit in a size_t with the header. */
    if (n < 0 || n > (int64_t)((SIZE_MAX / sizeof(double) - 4096) / (2 * (uint64_t)m + 4)))
        return err_set(err, ERR_RANGE, "optimizer: %lld parameters out of range", (long long)n);
    int64_t len = state_len_for(cfg->method, m, n);
    optim_t *o = calloc(1, sizeof *o + (size_t)len * sizeof(double));
    if (o == NULL)
        return err_set(err, ERR_NOMEM, "optimizer: no memory for %lld state values",
                       (long long)len);
    if (cfg->method == OPTIM_METHOD_LBFGS) {
        o->work = malloc((size_t)(4 * n + m + 1) * sizeof(double));
        if (o->work == NULL) {
            free(o);
            return err_set(err, ERR_NOMEM, "optimizer: no memory for lbfgs scratch");
        }
    }
    o->cfg = *cfg;
    o->n = n;
    o->state_len = len;
    *out = o;
    return 0;
}

void optim_free(optim_t *o)
{
    if (o == NULL)
        return;
    free(o->work);
    free(o);
}

const optim_cfg_t *optim_cfg(const optim_t *o)
{
    return &o->cfg;
}

void optim_set_cancel(optim_t *o, const atomic_int *cancel)
{
    o->cancel = cancel;
}

static int cancelled(const optim_t *o, err_t *err)
{
    if (o->cancel == NULL || atomic_load_explicit(o->cancel, memory_order_relaxed) == 0)
        return 0;
    return err_set(err, ERR_CANCELLED, "lbfgs: cancelled");
}

/* An integer-valued double in [lo, hi]; NaN is not. */
static int is_count(double v, double lo, double hi)
{
    return v == floor(v) && v >= lo && v <= hi;
}

/*
 * lbfgs's bookkeeping [pairs stored, newest slot, iterations, ρ...]: the values that index the
 * pair arrays and bound the two-loop recursion, so a damaged one would read out of bounds or
 * loop for ever. O(history): cheap enough to check before every iteration.
 */
static int lbfgs_meta_check(const optim_t *o, err_t *err)
{
    const double *meta = o->state, *rho = o->state + 3;
    const int64_t m = o->cfg.history;
    if (!is_count(meta[0], 0.0, (double)m))
        return err_set_field(err, ERR_INVAL, "optimizer_state",
                             "optimizer_state[0] (lbfgs pairs stored) = %g is not an integer in "
                             "[0, %lld] (optimizer.history)", meta[0], (long long)m);
    const int64_t stored = (int64_t)meta[0];
    /* Slots fill from 0 up; only a full memory wraps around. */
    const double newest_lo = stored < m ? (double)(stored > 0 ? stored - 1 : 0) : 0.0;
    const double newest_hi = stored < m ? newest_lo : (double)(m - 1);
    if (!is_count(meta[1], newest_lo, newest_hi))
        return err_set_field(err, ERR_INVAL, "optimizer_state",
                             "optimizer_state[1] (lbfgs newest pair) = %g is not an integer in "
                             "[%g, %g] with %lld pairs stored", meta[1], newest_lo, newest_hi,
                             (long long)stored);
    if (!is_count(meta[2], (double)stored, (double)OPTIM_STEP_MAX))
        return err_set_field(err, ERR_INVAL, "optimizer_state",
                             "optimizer_state[2] (lbfgs iterations) = %g is not an integer in "
                             "[%lld, %lld]", meta[2], (long long)stored, OPTIM_STEP_MAX);
    const int64_t newest = (int64_t)meta[1];
    for (int64_t j = 0; j < stored; ++j) {
        int64_t k = (newest - j + m) % m;
        if (!(rho[k] > 0.0) || !isfinite(rho[k]))
            return err_set_field(err, ERR_INVAL, "optimizer_state",
                                 "optimizer_state[%lld] (rho of lbfgs pair %lld) = %g must be a "
                                 "finite number > 0", (long long)(3 + k), (long long)k, rho[k]);
    }
    return 0;
}

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i)
        s += a[i] * b[i];
    return s;
}

int optim_state_check(const optim_t *o, int64_t step, err_t *err)
{
    const double *st = o->state;
    const int64_t n = o->n;
    for (int64_t i = 0; i < o->state_len; ++i)
        if (!isfinite(st[i]))
            return err_set_field(err, ERR_INVAL, "optimizer_state",
                                 "optimizer_state[%lld] is not a finite number", (long long)i);
    if (o->cfg.method == OPTIM_METHOD_ADAM) {
        const double *m = st, *v = st + n, t = st[2 * n];
        if (!is_count(t, 0.0, (double)OPTIM_STEP_MAX))
            return err_set_field(err, ERR_INVAL, "optimizer_state",
                                 "optimizer_state[%lld] (adam's step count) = %g is not an "
                                 "integer in [0, %lld]", (long long)(2 * n), t, OPTIM_STEP_MAX);
        if (t > (double)step)
            return err_set_field(err, ERR_INVAL, "optimizer_state",
                                 "optimizer_state[%lld] (adam's step count) = %g is more than "
                                 "the model's step, %lld", (long long)(2 * n), t,
                                 (long long)step);
        for (int64_t i = 0; i < n; ++i) {
            if (v[i] < 0.0)
                return err_set_field(err, ERR_INVAL, "optimizer_state",
                                     "optimizer_state[%lld] (adam's second moment) = %g is "
                                     "negative", (long long)(n + i), v[i]);
            if (t == 0.0 && (m[i] != 0.0 || v[i] != 0.0))
                return err_set_field(err, ERR_INVAL, "optimizer_state",
                                     "optimizer_state[%lld]: adam's moments must be 0 before "
                                     "its first step (step count 0)",
                                     (long long)(m[i] != 0.0 ? i : n + i));
        }
    } else if (o->cfg.method == OPTIM_METHOD_LBFGS) {
        int rc = lbfgs_meta_check(o, err);
        if (rc < 0)
            return rc;
        if (st[2] > (double)step)
            return err_set_field(err, ERR_INVAL, "optimizer_state",
                                 "optimizer_state[2] (lbfgs iterations) = %g is more than the "
                                 "model's step, %lld", st[2], (long long)step);
        const int64_t m = o->cfg.history, stored = (int64_t)st[0], newest = (int64_t)st[1];
        const double *rho = st + 3, *S = rho + m, *Y = S + m * n;
        for (int64_t j = 0; j < stored; ++j) {
            int64_t k = (newest - j + m) % m;
            /* The engine keeps a pair only when s'y > 0, and stores rho = 1 / s'y. */
            double ys = dot(S + k * n, Y + k * n, n);
            if (!(ys > 0.0) || !(fabs(rho[k] * ys - 1.0) <= 1e-6))
                return err_set_field(err, ERR_INVAL, "optimizer_state",
                                     "optimizer_state: lbfgs pair %lld has s'y = %g and rho = "
                                     "%g; a stored pair needs s'y > 0 and rho = 1 / s'y",
                                     (long long)k, ys, rho[k]);
        }
    }
    return 0;
}

/* d = g + λθ̃: the gradient with weight decay on the entries the mask selects. With λ = 0 the
 * gradient is used untouched (not g + 0·θ, which would turn an infinite θ into NaN). */
static inline double decayed(double g, double lambda, const uint8_t *mask, const double *theta,
                             int64_t i)
{
    if (lambda == 0.0 || (mask != NULL && mask[i] == 0))
        return g;
    return g + lambda * theta[i];
}

void optim_update(optim_t *o, double lr, const double *grad, const uint8_t *decay_mask,
                  double *theta)
{
    const int64_t n = o->n;
    const double lambda = o->cfg.weight_decay;

    switch (o->cfg.method) {
    case OPTIM_METHOD_SGD:
        for (int64_t i = 0; i < n; ++i)
            theta[i] += -lr * decayed(grad[i], lambda, decay_mask, theta, i);
        break;
    case OPTIM_METHOD_MOMENTUM: {
        const double mu = o->cfg.momentum;
        double *v = o->state;
        for (int64_t i = 0; i < n; ++i) {
            v[i] = v[i] * mu + decayed(grad[i], lambda, decay_mask, theta, i);
            theta[i] += -lr * v[i];
        }
        break;
    }
    case OPTIM_METHOD_ADAM: {
        const double b1 = o->cfg.beta1, b2 = o->cfg.beta2, eps = o->cfg.epsilon;
        double *m = o->state, *v = o->state + n, *t = o->state + 2 * n;
        *t += 1.0;
        const double bc1 = 1.0 - pow(b1, *t);
        const double bc2_sqrt = sqrt(1.0 - pow(b2, *t));
        const double step_size = lr / bc1;
        for (int64_t i = 0; i < n; ++i) {
            double d = decayed(grad[i], lambda, decay_mask, theta, i);
            m[i] += (1.0 - b1) * (d - m[i]);
            v[i] = v[i] * b2 + (1.0 - b2) * d * d;
            double denom = sqrt(v[i]) / bc2_sqrt + eps;
            theta[i] += -step_size * (m[i] / denom);
        }
        break;
    }
    default:
        assert(!"optim_update() is not for lbfgs; optim_new() accepts no other method");
        break;
    }
}

/* optim_update_keeping()'s sgd pass. */
typedef struct sgd_keeping {
    const optim_t *o;
    double lr;
    const double *grad;
    const uint8_t *mask;
    double *theta, *theta_before;
    uint64_t non_finite;   /* nonzero when a result is Inf/NaN; spans OR theirs in */
} sgd_keeping_t;

/* θ[lo, hi) with its snapshot: the loop of optim_update()'s sgd case, keeping each θ_i on the
 * way and OR-ing the exponent test of each result (all ones: Inf or NaN) instead of a second
 * pass. */
static uint64_t sgd_keeping_scalar(const sgd_keeping_t *j, int64_t lo, int64_t hi)
{
    const double lambda = j->o->cfg.weight_decay, lr = j->lr;
    double *theta = j->theta, *before = j->theta_before;
    uint64_t non_finite = 0;
    for (int64_t i = lo; i < hi; ++i) {
        before[i] = theta[i];
        theta[i] += -lr * decayed(j->grad[i], lambda, j->mask, theta, i);
        uint64_t bits;
        memcpy(&bits, &theta[i], sizeof bits);
        non_finite |= (~bits & 0x7ff0000000000000ULL) == 0;
    }
    return non_finite;
}

#ifdef NM_X86_CLONES
/* The same without weight decay, four values at a time, the snapshot written with streaming
 * stores: it is read back only to roll a step back, so its lines need not pass through the
 * cache, where they pushed out the θ and gradient lines of the next step. Each value is −lr·g
 * rounded, then added, as in the scalar loop (no FMA in this clone, so none is fused). */
__attribute__((target("avx2"))) static uint64_t sgd_keeping_avx2(const sgd_keeping_t *j,
                                                                  int64_t lo, int64_t hi)
{
    double *theta = j->theta, *before = j->theta_before;
    int64_t i = lo;
    uint64_t non_finite = 0;
    const int64_t head = (int64_t)((32 - (uintptr_t)(before + i) % 32) % 32 / sizeof(double));
    if (head > 0) {   /* up to the first 32-byte boundary of the snapshot */
        const int64_t stop = i + head < hi ? i + head : hi;
        non_finite |= sgd_keeping_scalar(j, i, stop);
        i = stop;
    }
    const __m256d minus_lr = _mm256_set1_pd(-j->lr);
    const __m256i exponent = _mm256_set1_epi64x(0x7ff0000000000000LL);
    __m256i all_ones = _mm256_setzero_si256();
    for (; i + 4 <= hi; i += 4) {
        __m256d t = _mm256_loadu_pd(theta + i);
        const __m256d step = _mm256_mul_pd(minus_lr, _mm256_loadu_pd(j->grad + i));
        _mm256_stream_pd(before + i, t);
        t = _mm256_add_pd(t, step);
        _mm256_storeu_pd(theta + i, t);
        const __m256i e = _mm256_and_si256(_mm256_castpd_si256(t), exponent);
        all_ones = _mm256_or_si256(all_ones, _mm256_cmpeq_epi64(e, exponent));
    }
    _mm_sfence();   /* the streamed stores are ordered before the caller reads a snapshot */
    non_finite |= !_mm256_testz_si256(all_ones, all_ones);
    return non_finite | sgd_keeping_scalar(j, i, hi);
}
#endif

static void sgd_keeping_span(void *ctx, int64_t lo, int64_t hi)
{
    sgd_keeping_t *j = ctx;
    uint64_t non_finite;
#ifdef NM_X86_CLONES
    if (j->o->cfg.weight_decay == 0.0 && nm_have_avx2_fma())
        non_finite = sgd_keeping_avx2(j, lo, hi);
    else
#endif
        non_finite = sgd_keeping_scalar(j, lo, hi);
    __atomic_fetch_or(&j->non_finite, non_finite, __ATOMIC_RELAXED);
}

int optim_update_keeping(optim_t *o, double lr, const double *grad, const uint8_t *decay_mask,
                         double *theta, double *theta_before, double *state_before)
{
    const int64_t n = o->n;
    if (o->state_len > 0)
        memcpy(state_before, o->state, (size_t)o->state_len * sizeof(double));
    if (o->cfg.method != OPTIM_METHOD_SGD) {
        memcpy(theta_before, theta, (size_t)n * sizeof(double));
        optim_update(o, lr, grad, decay_mask, theta);
        return tensor_all_finite(theta, n) && tensor_all_finite(o->state, o->state_len);
    }
    /* Each θ_i is updated on its own, so θ is the same bytes however the pass is cut. On one
     * core, this pass was an eighth of a 32-row mini-batch step of a 100 000-parameter MLP. */
    sgd_keeping_t job = {.o = o, .lr = lr, .grad = grad, .mask = decay_mask, .theta = theta,
                         .theta_before = theta_before};
    pool_run_spans(o->pool, n, OPTIM_UPDATE_PART_MIN, 1, sgd_keeping_span, &job);
    return job.non_finite == 0;
}

void optim_set_pool(optim_t *o, pool_t *pool)
{
    o->pool = pool;
}

/* ---- L-BFGS -------------------------------------------------------------------------------- */

/* The line search's view of the objective along d from θ0: φ(t) and φ'(t). */
typedef struct lbfgs_line {
    optim_t *o;
    const uint8_t *mask;
    optim_eval_fn eval;
    void *ctx;
    double *theta;        /* the model's parameters: θ0 + t d while evaluating */
    double *grad;         /* eval's loss gradient */
    const double *theta0, *d;
    double *g_obj;        /* objective gradient at the last trial */
    double loss;          /* loss (without decay) at the last trial */
    double t_last;        /* step of the last evaluation, NAN before any */
    int evals;
} lbfgs_line_t;

/* f(θ) = loss + (λ/2)‖θ̃‖² and its gradient at theta, from one evaluation. */
static int lbfgs_objective(lbfgs_line_t *ls, double *f, double *g_obj, err_t *err)
{
    optim_t *o = ls->o;
    double loss = 0.0;
    int rc = ls->eval(ls->ctx, &loss, ls->grad, err);
    if (rc < 0)
        return rc;
    ++ls->evals;
    ls->loss = loss;
    const double lambda = o->cfg.weight_decay;
    double decay = 0.0;
    for (int64_t i = 0; i < o->n; ++i) {
        g_obj[i] = decayed(ls->grad[i], lambda, ls->mask, ls->theta, i);
        if (lambda != 0.0 && (ls->mask == NULL || ls->mask[i]))
            decay += ls->theta[i] * ls->theta[i];
    }
    *f = loss + 0.5 * lambda * decay;
    return 0;
}

/* φ(t), φ'(t) = g(θ0 + t d)ᵀd. A non-finite value reads as +∞ so the search backs off. */
static int lbfgs_phi(lbfgs_line_t *ls, double t, double *f, double *gtd, err_t *err)
{
    const int64_t n = ls->o->n;
    /* Each trial evaluates every row: the loop a cancel or a shutdown must be able to stop. */
    int rc = cancelled(ls->o, err);
    if (rc < 0)
        return rc;
    for (int64_t i = 0; i < n; ++i)
        ls->theta[i] = ls->theta0[i] + t * ls->d[i];
    rc = lbfgs_objective(ls, f, ls->g_obj, err);
    if (rc < 0)
        return rc;
    ls->t_last = t;
    *gtd = dot(ls->g_obj, ls->d, n);
    if (!isfinite(*f) || !isfinite(*gtd)) {
        *f = INFINITY;
        *gtd = NAN;
    }
    return 0;
}

/* Minimiser of the cubic through (x1, f1, g1), (x2, f2, g2), clamped to [lo, hi]; the midpoint
 * when the cubic has none. PyTorch's _cubic_interpolate. */
static double cubic_min(double x1, double f1, double g1, double x2, double f2, double g2,
                        double lo, double hi)
{
    double d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    double d2_sq = d1 * d1 - g1 * g2;
    if (!(d2_sq >= 0.0) || !isfinite(d1))
        return 0.5 * (lo + hi);
    double d2 = sqrt(d2_sq), pos;
    if (x1 <= x2)
        pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2));
    else
        pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2));
    if (!isfinite(pos))
        return 0.5 * (lo + hi);
    return fmin(fmax(pos, lo), hi);
}

/*
 * Strong-Wolfe line search along d from t0 (Nocedal & Wright, Alg. 3.5 with zoom; PyTorch's
 * _strong_wolfe step for step). f0 and gtd0 are φ(0) and φ'(0) < 0. On return *t_out is the
 * chosen step (0 = none) and *f_out its objective.
 */
static int lbfgs_search(lbfgs_line_t *ls, double f0, double gtd0, double t, int max_ls,
                        double *t_out, double *f_out, err_t *err)
{
    const double c1 = 1e-4, c2 = 0.9, tolerance_change = 1e-9;
    double d_norm = 0.0;
    for (int64_t i = 0; i < ls->o->n; ++i)
        d_norm = fmax(d_norm, fabs(ls->d[i]));

    double f_new, gtd_new;
    int rc = lbfgs_phi(ls, t, &f_new, &gtd_new, err);
    if (rc < 0)
        return rc;
    double t_prev = 0.0, f_prev = f0, gtd_prev = gtd0;
    double br[2], br_f[2], br_gtd[2];
    int n_br = 0, done = 0, ls_iter = 0;

    while (ls_iter < max_ls) {
        if (f_new > f0 + c1 * t * gtd0 || (ls_iter > 1 && f_new >= f_prev) || isnan(gtd_new)) {
            br[0] = t_prev, br_f[0] = f_prev, br_gtd[0] = gtd_prev;
            br[1] = t, br_f[1] = f_new, br_gtd[1] = gtd_new;
            n_br = 2;
            break;
        }
        if (fabs(gtd_new) <= -c2 * gtd0) {
            br[0] = t, br_f[0] = f_new, br_gtd[0] = gtd_new;
            n_br = 1;
            done = 1;
            break;
        }
        if (gtd_new >= 0.0) {
            br[0] = t_prev, br_f[0] = f_prev, br_gtd[0] = gtd_prev;
            br[1] = t, br_f[1] = f_new, br_gtd[1] = gtd_new;
            n_br = 2;
            break;
        }
        /* Still descending: extrapolate, at least 1% further and at most 10x. */
        double lo = t + 0.01 * (t - t_prev), hi = t * 10.0;
        double t_next = cubic_min(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, lo, hi);
        t_prev = t, f_prev = f_new, gtd_prev = gtd_new;
        t = t_next;
        if ((rc = lbfgs_phi(ls, t, &f_new, &gtd_new, err)) < 0)
            return rc;
        ++ls_iter;
    }
    if (ls_iter == max_ls) {
        br[0] = 0.0, br_f[0] = f0, br_gtd[0] = gtd0;
        br[1] = t, br_f[1] = f_new, br_gtd[1] = gtd_new;
        n_br = 2;
    }

    int low = 0, high = 1, insufficient = 0;
    if (n_br == 2 && br_f[1] < br_f[0])
        low = 1, high = 0;
    while (!done && n_br == 2 && ls_iter < max_ls) {
        if (fabs(br[1] - br[0]) * d_norm < tolerance_change)
            break;
        double bmin = fmin(br[0], br[1]), bmax = fmax(br[0], br[1]);
        double tz;
        if (isnan(br_gtd[0]) || isnan(br_gtd[1]))
            tz = 0.5 * (bmin + bmax);   /* a non-finite end has no slope: bisect */
        else
            tz = cubic_min(br[0], br_f[0], br_gtd[0], br[1], br_f[1], br_gtd[1], bmin, bmax);
        /* Keep away from the ends of the bracket, or the search crawls. */
        double eps = 0.1 * (bmax - bmin);
        if (fmin(bmax - tz, tz - bmin) < eps) {
            if (insufficient || tz >= bmax || tz <= bmin) {
                tz = fabs(tz - bmax) < fabs(tz - bmin) ? bmax - eps : bmin + eps;
                insufficient = 0;
            } else {
                insufficient = 1;
            }
        } else {
            insufficient = 0;
        }
        if ((rc = lbfgs_phi(ls, tz, &f_new, &gtd_new, err)) < 0)
            return rc;
        ++ls_iter;
        if (f_new > f0 + c1 * tz * gtd0 || f_new >= br_f[low] || isnan(gtd_new)) {
            br[high] = tz, br_f[high] = f_new, br_gtd[high] = gtd_new;
            if (br_f[0] <= br_f[1])
                low = 0, high = 1;
            else
                low = 1, high = 0;
        } else {
            if (fabs(gtd_new) <= -c2 * gtd0)
                done = 1;
            else if (gtd_new * (br[high] - br[low]) >= 0.0)
                br[high] = br[low], br_f[high] = br_f[low], br_gtd[high] = br_gtd[low];
            br[low] = tz, br_f[low] = f_new, br_gtd[low] = gtd_new;
        }
    }
    *t_out = br[n_br == 1 ? 0 : low];
    *f_out = br_f[n_br == 1 ? 0 : low];
    return 0;
}

int optim_lbfgs_step(optim_t *o, double lr, const uint8_t *decay_mask, optim_eval_fn eval,
                     void *ctx, double *theta, double *loss, double *grad, int *moved,
                     err_t *err)
{
    assert(o->cfg.method == OPTIM_METHOD_LBFGS);
    const int64_t n = o->n, m = o->cfg.history;
    double *meta = o->state, *rho = o->state + 3, *S = rho + m, *Y = S + m * n;
    double *theta0 = o->work, *g0 = theta0 + n, *d = g0 + n, *g_trial = d + n, *alpha = g_trial + n;
    *moved = 0;
    /* The bookkeeping indexes S and Y and bounds the recursion: never trust it unchecked. */
    int rc = lbfgs_meta_check(o, err);
    if (rc < 0)
        return rc;

    /* Objective and its gradient at θ from the caller's loss and loss gradient. */
    const double lambda = o->cfg.weight_decay;
    double f0 = *loss, decay = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        theta0[i] = theta[i];
        g0[i] = decayed(grad[i], lambda, decay_mask, theta, i);
        if (lambda != 0.0 && (decay_mask == NULL || decay_mask[i]))
            decay += theta[i] * theta[i];
    }
    f0 += 0.5 * lambda * decay;
    double g_abs_sum = 0.0, g_max = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        g_abs_sum += fabs(g0[i]);
        g_max = fmax(g_max, fabs(g0[i]));
    }
    if (!(g_max > 0.0))
        return 0;   /* a stationary point: nothing to do */

    /* Two-loop recursion: d = −H g0, newest pair first. */
    int64_t stored = (int64_t)meta[0], newest = (int64_t)meta[1];
    for (int64_t i = 0; i < n; ++i)
        d[i] = -g0[i];
    for (int64_t j = 0; j < stored; ++j) {
        if ((rc = cancelled(o, err)) < 0)
            return rc;
        int64_t k = (newest - j + m) % m;
        alpha[k] = rho[k] * dot(S + k * n, d, n);
        for (int64_t i = 0; i < n; ++i)
            d[i] -= alpha[k] * Y[k * n + i];
    }
    if (stored > 0) {
        const double *s_new = S + newest * n, *y_new = Y + newest * n;
        double gamma = dot(s_new, y_new, n) / dot(y_new, y_new, n);
        for (int64_t i = 0; i < n; ++i)
            d[i] *= gamma;
    }
    for (int64_t j = stored - 1; j >= 0; --j) {
        if ((rc = cancelled(o, err)) < 0)
            return rc;
        int64_t k = (newest - j + m) % m;
        double beta = rho[k] * dot(Y + k * n, d, n);
        for (int64_t i = 0; i < n; ++i)
            d[i] += S[k * n + i] * (alpha[k] - beta);
    }
    double gtd = dot(g0, d, n);
    if (!(gtd < 0.0)) {
        /* Curvature memory gone stale: start over from steepest descent. */
        meta[0] = meta[1] = 0.0;
        for (int64_t i = 0; i < n; ++i)
            d[i] = -g0[i];
        gtd = dot(g0, d, n);
    }

    double t0 = meta[2] == 0.0 ? fmin(1.0, 1.0 / g_abs_sum) * lr : lr;
    lbfgs_line_t ls = {o, decay_mask, eval, ctx, theta, grad, theta0, d, g_trial, 0.0, NAN, 0};
    double t = 0.0, f_new = f0;
    rc = lbfgs_search(&ls, f0, gtd, t0, o->cfg.max_line_search, &t, &f_new, err);
    if (rc < 0 || !(t > 0.0) || !(f_new < f0)) {
        memcpy(theta, theta0, (size_t)n * sizeof *theta);
        return rc;
    }
    /* Make sure θ, the loss and the gradient are those of the chosen step. */
    if (ls.t_last != t) {
        double f_chk, gtd_chk;
        if ((rc = lbfgs_phi(&ls, t, &f_chk, &gtd_chk, err)) < 0) {
            memcpy(theta, theta0, (size_t)n * sizeof *theta);
            return rc;
        }
    }
    /* New curvature pair s = t d, y = g_new − g0, kept only when yᵀs > 0 (H stays positive). */
    double ys = 0.0;
    for (int64_t i = 0; i < n; ++i)
        ys += (g_trial[i] - g0[i]) * (t * d[i]);
    if (ys > 1e-10) {
        int64_t slot = stored == 0 ? 0 : (newest + 1) % m;
        double *s_k = S + slot * n, *y_k = Y + slot * n;
        for (int64_t i = 0; i < n; ++i) {
            s_k[i] = t * d[i];
            y_k[i] = g_trial[i] - g0[i];
        }
        rho[slot] = 1.0 / ys;
        meta[1] = (double)slot;
        meta[0] = (double)(stored < m ? stored + 1 : m);
    }
    meta[2] += 1.0;
    *loss = ls.loss;
    *moved = 1;
    return 0;
}

int64_t optim_state_len(const optim_t *o)
{
    return o->state_len;
}

double *optim_state(optim_t *o)
{
    return o->state_len > 0 ? o->state : NULL;
}

void optim_reset(optim_t *o)
{
    if (o->state_len > 0)
        memset(o->state, 0, (size_t)o->state_len * sizeof(double));
}
