/* lib/optim.h -- optimizers as pure functions over flat parameter arrays.
 *
 * The update for step t (docs/api.md "Step semantics"), with g the loss gradient, λ the weight
 * decay and θ̃ = θ masked by `decay_mask` (0 on bias columns, so biases never decay):
 *   sgd:      θ ← θ − η (g + λθ̃)
 *   momentum: v ← μ v + (g + λθ̃);  θ ← θ − η v              (v starts at 0)
 *   adam:     PyTorch Adam with bias correction on d = g + λθ̃:
 *             m ← β1 m + (1−β1) d;  v ← β2 v + (1−β2) d²;  t ← t + 1
 *             θ ← θ − η (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + ε)
 *
 *     optim_t *o = NULL;
 *     optim_new(&cfg, n, &o, &err);
 *     optim_update(o, cfg.learning_rate, grad, mask, theta);
 *
 * The state (v, or m and v and t) is a flat array of optim_state_len() doubles so the store can
 * save it as one blob and restore it bit for bit.
 *
 * The learning rate of update t (the model's global step) follows cfg.schedule, a closed form
 * of t (PyTorch's StepLR, ExponentialLR, CosineAnnealingLR, after an optional LinearLR warmup):
 * optim_schedule_rate(). Being a function of t alone, it needs no state of its own: restoring a
 * checkpoint restores the step and with it the rate.
 *
 * L-BFGS is different: one step is one iteration -- a search direction from the stored curvature
 * pairs (two-loop recursion, H0 = γI with γ = sᵀy / yᵀy of the newest pair) and a strong-Wolfe
 * line search (c1 = 1e-4, c2 = 0.9, cubic interpolation, as PyTorch's LBFGS) -- so it needs to
 * evaluate the objective: see optim_lbfgs_step(). The objective it minimises is
 * f(θ) = loss(θ) + (λ/2)‖θ̃‖², whose gradient g + λθ̃ is what the other methods step along.
 * Its state is [pairs stored, newest slot, iterations, ρ[m], s[m][n], y[m][n]], m = history.
 */
#ifndef ND_OPTIM_H
#define ND_OPTIM_H

#include <stdatomic.h>
#include <stdint.h>

#include "err.h"
#include "pool.h"

/* Largest count the state may hold (adam's t, lbfgs's iterations): 10^15, the bound on a
 * model's global step (train.h), well inside the integers a double holds exactly. */
#define OPTIM_STEP_MAX 1000000000000000LL

/* Persisted: append only. */
enum optim_method {
    OPTIM_METHOD_SGD = 1,
    OPTIM_METHOD_MOMENTUM = 2,
    OPTIM_METHOD_ADAM = 3,
    OPTIM_METHOD_LBFGS = 4,
};

/* Persisted by name in specs: append only. */
enum optim_schedule_kind {
    OPTIM_SCHEDULE_CONSTANT = 1,
    OPTIM_SCHEDULE_STEP = 2,
    OPTIM_SCHEDULE_EXPONENTIAL = 3,
    OPTIM_SCHEDULE_COSINE = 4,
};

/* The learning-rate schedule: η_t from the base rate η and the global step t. For t < warmup
 * the rate is η (t+1)/warmup; from t = warmup on the kind's formula applies to t − warmup:
 *   constant η;  step η γ^⌊t/step_size⌋;  exponential η γ^t;
 *   cosine η_min + (η − η_min)(1 + cos(π min(t, t_max)/t_max))/2. */
typedef struct optim_schedule {
    int32_t kind;            /* enum optim_schedule_kind; default constant */
    int64_t warmup_steps;    /* >= 0; default 0 */
    int64_t step_size;       /* step: >= 1, required */
    double gamma;            /* step: > 0, default 0.1; exponential: in (0, 1], required */
    int64_t t_max;           /* cosine: >= 1, required */
    double eta_min;          /* cosine: >= 0, default 0 */
} optim_schedule_t;

typedef struct optim_cfg {
    int32_t method;          /* enum optim_method */
    double learning_rate;    /* default 0.1; 1 for lbfgs (the line search scales it) */
    double momentum;         /* momentum only; default 0.9 for momentum, must be 0 for sgd */
    double beta1, beta2;     /* adam; defaults 0.9, 0.999 */
    double epsilon;          /* adam; default 1e-8 */
    double weight_decay;     /* λ >= 0; default 0 */
    int32_t history;         /* lbfgs memory; default 10 */
    int32_t max_line_search; /* lbfgs; default 20 */
    optim_schedule_t schedule; /* default constant; lbfgs takes no other */
} optim_cfg_t;

typedef struct optim optim_t;

/* Fill cfg with the defaults above for `method`. */
void optim_cfg_default(optim_cfg_t *cfg, int32_t method);

/* Check ranges (learning_rate > 0 and finite, 0 <= momentum < 1, 0 <= beta < 1, epsilon > 0,
 * weight_decay >= 0, sgd with momentum != 0 rejected, the schedule's ranges, lbfgs with a
 * schedule other than constant rejected). err->field is "optimizer.<name>". */
int optim_cfg_validate(const optim_cfg_t *cfg, err_t *err);

/* The defaults of a schedule of `kind` (the required fields left 0, which validation rejects). */
void optim_schedule_default(optim_schedule_t *s, int32_t kind);

/* Check a schedule's ranges; err->field is "optimizer.schedule.<name>". */
int optim_schedule_validate(const optim_schedule_t *s, err_t *err);

/* Schedule kind name <-> enum ("cosine"); from_name returns 0 for unknown names. */
int32_t optim_schedule_from_name(const char *name);
const char *optim_schedule_name(int32_t kind);

/* The learning rate of update t (t >= 0, the model's global step) for base rate `base`. */
double optim_schedule_rate(const optim_schedule_t *s, double base, int64_t t);

/* Method name <-> enum ("adam"); from_name returns 0 for unknown names. */
int32_t optim_method_from_name(const char *name);
const char *optim_method_name(int32_t method);

/* New optimizer for n parameters, state zeroed. Free with optim_free(). */
int optim_new(const optim_cfg_t *cfg, int64_t n, optim_t **out, err_t *err);
void optim_free(optim_t *o);

/* Values of optimizer state the method keeps per parameter: momentum 1 (v), adam 2 (m and v),
 * lbfgs 2 x history (the s and y of each pair), sgd 0. What the daemon counts against its
 * parameter limit. */
int64_t optim_state_per_param(const optim_cfg_t *cfg);

/* Borrowed: the configuration the optimizer was made with. */
const optim_cfg_t *optim_cfg(const optim_t *o);

/* One update of theta[0..n-1] in place with learning rate lr (the caller passes the cfg's or a
 * per-call override). decay_mask[i] is 1 where weight decay applies, 0 for bias entries; NULL
 * means decay everywhere. Allocates nothing. */
void optim_update(optim_t *o, double lr, const double *grad, const uint8_t *decay_mask,
                  double *theta);

/* optim_update() that first keeps θ and the optimizer state as they were, for a roll-back:
 * theta_before[0..n-1] and state_before[0..optim_state_len()-1] (NULL when that is 0). For
 * sgd the copy, the update and the check are one pass over θ rather than three. Returns 1 when
 * every new θ and state value is finite, else 0 (the caller restores what was kept). θ ends
 * bit for bit as optim_update() leaves it. Allocates nothing. */
int optim_update_keeping(optim_t *o, double lr, const double *grad, const uint8_t *decay_mask,
                         double *theta, double *theta_before, double *state_before);

/* Borrowed compute threads (pool.h; NULL, the default: the caller alone) over which
 * optim_update_keeping() spreads sgd's pass over θ, in parts of at least OPTIM_UPDATE_PART_MIN
 * values. Each value is updated on its own, so θ is the same bytes for any pool. */
#define OPTIM_UPDATE_PART_MIN 16384
void optim_set_pool(optim_t *o, pool_t *pool);

/* Borrowed flag (may be NULL) that the lbfgs iteration polls in its long loops: non-zero makes
 * optim_lbfgs_step() stop with ERR_CANCELLED, θ and the state as on entry. */
void optim_set_cancel(optim_t *o, const atomic_int *cancel);

/* Evaluate the loss and its gradient (without weight decay) at the parameters as they are now in
 * the array passed to optim_lbfgs_step() as `theta`. */
typedef int (*optim_eval_fn)(void *ctx, double *loss, double *grad, err_t *err);

/*
 * One L-BFGS iteration (method lbfgs only). On entry theta holds θ and *loss, grad the loss and
 * loss gradient there. First step length: lr · min(1, 1/‖g‖₁) on the first iteration, lr after.
 * On return *moved is 1 when the line search found a lower objective: theta holds the new θ and
 * *loss, grad the loss and loss gradient there (no extra evaluation is needed). *moved is 0
 * when it found no decrease (the optimum, to the line search's resolution): theta, *loss and the
 * state are as on entry, and grad may hold a trial point's gradient. Uses eval at most
 * max_line_search + 1 times; allocates nothing. ERR_INVAL (field "optimizer_state") when the
 * state's bookkeeping is out of range (see optim_state_check), ERR_CANCELLED when the flag of
 * optim_set_cancel() is raised; θ is then as on entry.
 */
int optim_lbfgs_step(optim_t *o, double lr, const uint8_t *decay_mask, optim_eval_fn eval,
                     void *ctx, double *theta, double *loss, double *grad, int *moved,
                     err_t *err);

/* The optimizer state as a flat array: length, and borrowed pointer (read or overwrite). For
 * sgd the length is 0; momentum n; adam 2n + 1 (m, v, then t as a double); lbfgs
 * 3 + m + 2mn. */
int64_t optim_state_len(const optim_t *o);
double *optim_state(optim_t *o);

/*
 * Check that the state is one the engine itself could have produced, before trusting a state
 * that came from outside (an import, the database): every value finite; adam's t an integer in
 * [0, OPTIM_STEP_MAX], its second moments >= 0 and both moments zero while t = 0; lbfgs's pairs
 * stored in [0, history], newest slot in range (stored - 1 while the memory is not full),
 * iterations an integer in [stored, OPTIM_STEP_MAX], and each stored pair with s'y > 0 and
 * rho = 1 / s'y. Counts never exceed `step`, the model's global step (every count is of updates
 * the model made). ERR_INVAL with field "optimizer_state" and the rule broken in the message.
 */
int optim_state_check(const optim_t *o, int64_t step, err_t *err);

/* Zero the state (a fresh start, as after a parameter overwrite). */
void optim_reset(optim_t *o);

#endif /* ND_OPTIM_H */
