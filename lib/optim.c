/* lib/optim.c -- sgd, momentum and Adam over flat arrays; see optim.h for the exact updates.
 *
 * The arithmetic follows PyTorch's single-tensor kernels operation by operation (SGD: θ += −η d;
 * momentum: v = v·μ + d; Adam: m.lerp_(d, 1−β1), v = v·β2 + (1−β2)·d·d,
 * θ += −(η/bc1) · m / (sqrt(v)/sqrt(bc2) + ε)), so trajectories agree with the golden vectors to
 * the last few ulps rather than merely to the same mathematics.
 */
#include "optim.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct optim {
    optim_cfg_t cfg;
    int64_t n;
    int64_t state_len;
    double state[];       /* momentum: v[n]; adam: m[n], v[n], t */
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
    cfg->learning_rate = 0.1;
    cfg->momentum = method == OPTIM_METHOD_MOMENTUM ? 0.9 : 0.0;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->epsilon = 1e-8;
    cfg->weight_decay = 0.0;
    cfg->history = 10;
    cfg->max_line_search = 20;
}

int optim_cfg_validate(const optim_cfg_t *cfg, err_t *err)
{
    if (cfg->method < OPTIM_METHOD_SGD || cfg->method > OPTIM_METHOD_LBFGS)
        return err_set_field(err, ERR_INVAL, "optimizer.method",
                             "optimizer.method: unknown method %d (sgd, momentum, adam, lbfgs)",
                             (int)cfg->method);
    if (cfg->method == OPTIM_METHOD_LBFGS)
        return err_set_field(err, ERR_INVAL, "optimizer.method",
                             "optimizer.method: lbfgs is not available yet "
                             "(use sgd, momentum or adam)");
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

static int64_t state_len_for(int32_t method, int64_t n)
{
    switch (method) {
    case OPTIM_METHOD_MOMENTUM:
        return n;
    case OPTIM_METHOD_ADAM:
        return 2 * n + 1;
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
    /* 2n + 1 state doubles must fit in a size_t with the header. */
    if (n < 0 || n > (int64_t)((SIZE_MAX / sizeof(double) - 64) / 2))
        return err_set(err, ERR_RANGE, "optimizer: %lld parameters out of range", (long long)n);
    int64_t len = state_len_for(cfg->method, n);
    optim_t *o = calloc(1, sizeof *o + (size_t)len * sizeof(double));
    if (o == NULL)
        return err_set(err, ERR_NOMEM, "optimizer: no memory for %lld state values",
                       (long long)len);
    o->cfg = *cfg;
    o->n = n;
    o->state_len = len;
    *out = o;
    return 0;
}

void optim_free(optim_t *o)
{
    free(o);
}

const optim_cfg_t *optim_cfg(const optim_t *o)
{
    return &o->cfg;
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
        assert(!"optim_new() accepts no other method");
        break;
    }
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
