/* lib/train.c -- the training loop; see train.h and docs/api.md "Step semantics".
 *
 * One snapshot (θ and optimizer state as they were before the most recent update) is enough for
 * every rollback: whether the update itself produced a non-finite value or the loss evaluated
 * after it is non-finite, the last step whose loss was finite is the one just before that update.
 * The same snapshot is why a history row is held back until the next loss is known finite: the
 * row for an update that gets rolled back is never reported, so nothing is ever un-reported.
 */
#include "train.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rng.h"
#include "tensor.h"

struct train_ctx {
    model_t *m;
    optim_t *o;
    batch_t data;          /* borrowed view of all rows */
    int64_t n;             /* parameters */
    int64_t state_len;     /* optimizer state doubles */
    double *snap_theta;    /* θ before the most recent update */
    double *snap_state;    /* optimizer state before the most recent update */
    int32_t *idx;          /* row order of epoch `epoch` */
    int64_t epoch;         /* epoch whose order idx holds; -1 = none yet in this call */
    double *bx, *by;       /* gathered mini-batch rows */
    batch_t val;           /* borrowed validation rows; rows 0 = none */
    double *best_theta;    /* early stopping: θ and optimizer state at the best evaluation */
    double *best_state;
    double *swap;          /* θ of the model while a snapshot is evaluated */
    /* The loss on all rows at θ = known_theta, from the end of the previous call: a mini-batch
     * call starting there needs no forward pass over every row for its loss_before. */
    double *known_theta;
    double known_loss;
    int known;
};

void train_req_default(train_req_t *req)
{
    memset(req, 0, sizeof *req);
    req->steps = 1;
    req->epochs = 0;
    req->batch_size = 0;
    req->learning_rate = NAN;
    req->tolerance = 0.0;
    req->target_loss = NAN;
    req->history_every = 1;
    req->seed = 0;
    req->patience = 0;
    req->min_delta = 0.0;
    req->restore_best = 1;
}

int train_req_validate(const train_req_t *req, err_t *err)
{
    if (req->steps < 0 || req->steps > TRAIN_MAX_STEPS)
        return err_set_field(err, ERR_INVAL, "steps", "steps must be in [0, %lld], got %lld",
                             TRAIN_MAX_STEPS, (long long)req->steps);
    if (req->epochs < 0 || req->epochs > TRAIN_MAX_STEPS)
        return err_set_field(err, ERR_INVAL, "epochs", "epochs must be in [0, %lld], got %lld",
                             TRAIN_MAX_STEPS, (long long)req->epochs);
    if (req->batch_size < 0)
        return err_set_field(err, ERR_INVAL, "batch_size",
                             "batch_size must be >= 1 (or null for full batch), got %d",
                             (int)req->batch_size);
    if (!isnan(req->learning_rate) && (!isfinite(req->learning_rate) || req->learning_rate <= 0.0))
        return err_set_field(err, ERR_INVAL, "learning_rate",
                             "learning_rate must be a finite number > 0, got %g",
                             req->learning_rate);
    if (!isfinite(req->tolerance) || req->tolerance < 0.0)
        return err_set_field(err, ERR_INVAL, "tolerance",
                             "tolerance must be a finite number >= 0, got %g", req->tolerance);
    if (!isnan(req->target_loss) && !isfinite(req->target_loss))
        return err_set_field(err, ERR_INVAL, "target_loss",
                             "target_loss must be a finite number, got %g", req->target_loss);
    if (req->history_every < 0)
        return err_set_field(err, ERR_INVAL, "history_every",
                             "history_every must be >= 0, got %lld",
                             (long long)req->history_every);
    if (req->patience < 0 || req->patience > TRAIN_MAX_STEPS)
        return err_set_field(err, ERR_INVAL, "early_stopping",
                             "early_stopping.patience must be in [1, %lld], got %lld",
                             TRAIN_MAX_STEPS, (long long)req->patience);
    if (!isfinite(req->min_delta) || req->min_delta < 0.0)
        return err_set_field(err, ERR_INVAL, "early_stopping.min_delta",
                             "early_stopping.min_delta must be a finite number >= 0, got %g",
                             req->min_delta);
    /* Early stopping watches the recorded rows' evaluations: with none there is nothing. */
    if (req->patience > 0 && req->history_every == 0)
        return err_set_field(err, ERR_INVAL, "early_stopping",
                             "early_stopping needs recorded rows: history_every must be >= 1");
    return 0;
}

int train_req_check_method(const train_req_t *req, int64_t rows, int32_t method, err_t *err)
{
    const int full = req->batch_size == 0 || req->batch_size >= rows;
    const int updates = req->epochs > 0 || req->steps > 0;
    if (method == OPTIM_METHOD_LBFGS && !full && updates)
        return err_set_field(err, ERR_INVAL, "batch_size",
                             "lbfgs trains on the full batch: leave batch_size null");
    return 0;
}

int train_req_steps(const train_req_t *req, int64_t rows, int64_t global_step, int64_t *steps,
                    err_t *err)
{
    *steps = 0;
    int64_t n = req->steps;
    const char *field = "steps";
    if (req->epochs > 0) {
        field = "epochs";
        const int full = req->batch_size == 0 || req->batch_size >= rows;
        const int64_t per_epoch = full ? 1 : (rows + req->batch_size - 1) / req->batch_size;
        if (req->epochs > TRAIN_MAX_STEPS / per_epoch)
            return err_set_field(err, ERR_INVAL, "epochs",
                                 "epochs=%lld at %lld steps each (batch_size %d over %lld rows) "
                                 "is more than %lld steps", (long long)req->epochs,
                                 (long long)per_epoch, (int)req->batch_size, (long long)rows,
                                 TRAIN_MAX_STEPS);
        n = req->epochs * per_epoch;
    }
    if (global_step < 0 || global_step > TRAIN_STEP_MAX - n)
        return err_set_field(err, ERR_INVAL, field,
                             "%s: %lld more steps from step %lld would pass the largest step "
                             "a model can reach, %lld", field, (long long)n,
                             (long long)global_step, TRAIN_STEP_MAX);
    *steps = n;
    return 0;
}

const char *train_stop_name(int32_t stop)
{
    switch (stop) {
    case TRAIN_STOP_MAX_STEPS:
        return "max_steps";
    case TRAIN_STOP_TOLERANCE:
        return "tolerance";
    case TRAIN_STOP_TARGET_LOSS:
        return "target_loss";
    case TRAIN_STOP_CONVERGED:
        return "converged";
    case TRAIN_STOP_DIVERGED:
        return "diverged";
    case TRAIN_STOP_CANCELLED:
        return "cancelled";
    case TRAIN_STOP_EARLY_STOPPING:
        return "early_stopping";
    default:
        return "unknown";
    }
}

int train_ctx_new(model_t *m, optim_t *o, const batch_t *data, train_ctx_t **out, err_t *err)
{
    *out = NULL;
    if (data->rows < 1 || data->x == NULL || data->y == NULL)
        return err_set(err, ERR_INVAL, "no rows to train on");
    if (data->n_x != model_n_x(m) || data->n_y != model_n_y(m))
        return err_set(err, ERR_SHAPE, "data has %d inputs and %d labels per row, model expects "
                       "%d and %d", (int)data->n_x, (int)data->n_y, (int)model_n_x(m),
                       (int)model_n_y(m));
    int64_t n = model_n_params(m), state_len = optim_state_len(o);

    int rc = ERR_NOMEM;
    train_ctx_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        goto out;
    t->m = m;
    t->o = o;
    t->data = *data;
    t->n = n;
    t->state_len = state_len;
    t->epoch = -1;
    /* +1 keeps every request non-zero, so NULL always means failure. */
    size_t rows = (size_t)data->rows;
    t->snap_theta = malloc(((size_t)n + 1) * sizeof(double));
    t->snap_state = malloc(((size_t)state_len + 1) * sizeof(double));
    t->known_theta = malloc(((size_t)n + 1) * sizeof(double));
    t->idx = malloc(rows * sizeof(int32_t));
    /* A mini-batch has at most all the rows; sized here so train_run() never allocates. */
    t->bx = malloc((rows * (size_t)data->n_x + 1) * sizeof(double));
    t->by = malloc((rows * (size_t)data->n_y + 1) * sizeof(double));
    if (t->snap_theta == NULL || t->snap_state == NULL || t->known_theta == NULL ||
        t->idx == NULL || t->bx == NULL || t->by == NULL)
        goto out;
    rc = 0;
out:
    if (rc < 0) {
        train_ctx_free(t);
        return err_set(err, rc, "training buffers for %d rows and %lld parameters: no memory",
                       (int)data->rows, (long long)n);
    }
    *out = t;
    return 0;
}

void train_ctx_free(train_ctx_t *t)
{
    if (t == NULL)
        return;
    free(t->snap_theta);
    free(t->snap_state);
    free(t->known_theta);
    free(t->idx);
    free(t->bx);
    free(t->by);
    free(t->best_theta);
    free(t->best_state);
    free(t->swap);
    free(t);
}

/* Validation loss (and accuracy) at the model's current θ. */
static int validate(train_ctx_t *t, double *loss, double *accuracy, err_t *err)
{
    return model_loss_accuracy(t->m, &t->val, loss, accuracy, err);
}

int train_ctx_set_validation(train_ctx_t *t, const batch_t *val, err_t *err)
{
    t->val = (batch_t){0};
    if (val == NULL || val->rows < 1)
        return 0;
    if (val->n_x != model_n_x(t->m) || val->n_y != model_n_y(t->m) || val->x == NULL ||
        val->y == NULL)
        return err_set(err, ERR_SHAPE, "validation rows have %d inputs and %d labels, the "
                       "model expects %d and %d", (int)val->n_x, (int)val->n_y,
                       (int)model_n_x(t->m), (int)model_n_y(t->m));
    if (t->best_theta == NULL) {
        t->best_theta = malloc(((size_t)t->n + 1) * sizeof(double));
        t->best_state = malloc(((size_t)t->state_len + 1) * sizeof(double));
        t->swap = malloc(((size_t)t->n + 1) * sizeof(double));
        if (t->best_theta == NULL || t->best_state == NULL || t->swap == NULL)
            return err_set(err, ERR_NOMEM, "early-stopping buffers for %lld parameters: no "
                           "memory", (long long)t->n);
    }
    t->val = *val;
    double loss, accuracy;
    int rc = validate(t, &loss, &accuracy, err);
    if (rc < 0)
        t->val = (batch_t){0};
    return rc;
}

/* Validation of θ_s, s the step before the most recent update, whose θ the snapshot holds:
 * for a row that turned out to be the call's last only after its update. */
static int validate_snapshot(train_ctx_t *t, double *loss, double *accuracy, err_t *err)
{
    double *theta = model_params(t->m);
    const size_t bytes = (size_t)t->n * sizeof(double);
    memcpy(t->swap, theta, bytes);
    memcpy(theta, t->snap_theta, bytes);
    int rc = validate(t, loss, accuracy, err);
    memcpy(theta, t->swap, bytes);
    return rc;
}

/* Per-epoch shuffle seed: depends on (seed, epoch) only, so a call is reproducible. rng_seed()
 * runs splitmix64 over it, which spreads the small differences between epochs. */
static uint64_t epoch_seed(uint64_t seed, int64_t epoch)
{
    return seed ^ (0x9e3779b97f4a7c15ULL * ((uint64_t)epoch + 1));
}

/* Values a span of the mini-batch gather copies at least: below this a span costs less than
 * handing it to another thread. */
#define GATHER_SPAN_MIN 32768

/* The rows of a mini-batch being gathered: batch row r is row idx[lo + r] of the data. */
typedef struct gather {
    const train_ctx_t *t;
    int32_t lo;
} gather_t;

/* Batch rows [r0, r1): the reads are scattered over all rows, so two threads copy nearly twice
 * as fast as one. */
static void gather_span(void *ctx, int64_t r0, int64_t r1)
{
    const gather_t *g = ctx;
    const train_ctx_t *t = g->t;
    const int32_t n_x = t->data.n_x, n_y = t->data.n_y;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t src = t->idx[g->lo + r];
        memcpy(t->bx + r * n_x, t->data.x + src * n_x, (size_t)n_x * sizeof(double));
        memcpy(t->by + r * n_y, t->data.y + src * n_y, (size_t)n_y * sizeof(double));
    }
}

/* The mini-batch of local step k: rows idx[j*bs .. min(rows, (j+1)*bs)) of epoch k / nb, where
 * j = k mod nb and nb = ceil(rows / bs); the last batch of an epoch may be smaller. */
static void minibatch(train_ctx_t *t, int64_t k, int32_t bs, uint64_t seed, batch_t *b)
{
    const int32_t rows = t->data.rows, n_x = t->data.n_x, n_y = t->data.n_y;
    const int64_t nb = ((int64_t)rows + bs - 1) / bs;
    const int64_t epoch = k / nb;
    const int32_t lo = (int32_t)((k % nb) * bs);
    const int32_t hi = rows - lo < bs ? rows : lo + bs;

    if (epoch != t->epoch) {
        rng_t r;
        for (int32_t i = 0; i < rows; ++i)
            t->idx[i] = i;
        rng_seed(&r, epoch_seed(seed, epoch));
        rng_shuffle(&r, t->idx, rows);
        t->epoch = epoch;
    }
    gather_t g = {.t = t, .lo = lo};
    pool_run_spans(model_pool(t->m), hi - lo, 1 + GATHER_SPAN_MIN / (n_x + n_y), 1, gather_span,
                   &g);
    *b = (batch_t){.rows = hi - lo, .n_x = n_x, .n_y = n_y, .x = t->bx, .y = t->by};
}

static void snapshot_save(train_ctx_t *t)
{
    memcpy(t->snap_theta, model_params(t->m), (size_t)t->n * sizeof(double));
    if (t->state_len > 0)
        memcpy(t->snap_state, optim_state(t->o), (size_t)t->state_len * sizeof(double));
}

static void snapshot_restore(train_ctx_t *t)
{
    memcpy(model_params(t->m), t->snap_theta, (size_t)t->n * sizeof(double));
    if (t->state_len > 0)
        memcpy(optim_state(t->o), t->snap_state, (size_t)t->state_len * sizeof(double));
}

/* Hand a final row to the callback; `last` marks the call's last update as far as it is known
 * when the row is final. A later rollback can make an earlier row the call's last kept update
 * after it was reported as not last: with history_every > 1 that row may then be unrecorded,
 * and a caller that wants it (its step is res->step − 1) still has it from this callback. */
static int report(const train_hooks_t *hooks, train_row_t *row, int64_t every, int last)
{
    row->recorded = every > 0 && (row->step % every == 0 || last);
    if (hooks == NULL || hooks->on_row == NULL)
        return 0;
    int rc = hooks->on_row(hooks->ctx, row);
    return rc < 0 ? rc : 0;
}

/* lbfgs's line search evaluates the loss on every row at the θ it is trying. */
static int eval_all_rows(void *ctx, double *loss, double *grad, err_t *err)
{
    train_ctx_t *t = ctx;
    return model_loss_grad(t->m, &t->data, loss, grad, err);
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* After a call: `loss` is the loss on all rows at the model's θ when `all_rows`. */
static void remember_loss(train_ctx_t *t, int all_rows, double loss)
{
    t->known = all_rows;
    if (all_rows) {
        memcpy(t->known_theta, model_params(t->m), (size_t)t->n * sizeof(double));
        t->known_loss = loss;
    }
}

void train_resume_observe(train_resume_t *r, const train_req_t *req, int64_t step,
                          double val_loss)
{
    if (!isfinite(val_loss))
        return;
    if (r->best_step < 0 || val_loss < r->best_val_loss - req->min_delta) {
        r->best_step = step;
        r->best_val_loss = val_loss;
        r->stale = 0;
    } else {
        ++r->stale;
    }
}

int train_run(train_ctx_t *t, const train_req_t *req, int64_t *global_step,
              const train_hooks_t *hooks, train_result_t *res, err_t *err)
{
    return train_run_from(t, req, NULL, global_step, hooks, res, err);
}

int train_run_from(train_ctx_t *t, const train_req_t *req, const train_resume_t *resume,
                   int64_t *global_step, const train_hooks_t *hooks, train_result_t *res,
                   err_t *err)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(res, 0, sizeof *res);
    res->loss_before = res->loss_after = res->val_loss_after = res->best_val_loss = NAN;
    res->best_step = -1;
    res->step = *global_step;
    res->stopped = TRAIN_STOP_MAX_STEPS;

    int rc = train_req_validate(req, err);
    if (rc < 0)
        return rc;
    const int validating = t->val.rows > 0, early = req->patience > 0;
    if (early && !validating)
        return err_set_field(err, ERR_INVAL, "early_stopping",
                             "early_stopping needs validation rows: POST batches with "
                             "?split=validation first");
    res->validated = validating;
    res->early_stopping = early;

    const int32_t rows = t->data.rows;
    const int full = req->batch_size == 0 || req->batch_size >= rows;
    const int32_t bs = full ? rows : req->batch_size;
    const int64_t s0 = resume != NULL ? resume->start_step : *global_step;
    int64_t steps = 0;
    if ((rc = train_req_steps(req, rows, s0, &steps, err)) < 0 ||
        (rc = optim_state_check(t->o, *global_step, err)) < 0 ||
        (rc = train_req_check_method(req, rows, optim_cfg(t->o)->method, err)) < 0)
        return rc;
    const int lbfgs = optim_cfg(t->o)->method == OPTIM_METHOD_LBFGS;
    /* The call's base rate; the schedule turns it into the rate of each global step. */
    const double base_lr =
        isnan(req->learning_rate) ? optim_cfg(t->o)->learning_rate : req->learning_rate;
    const optim_schedule_t *schedule = &optim_cfg(t->o)->schedule;
    const atomic_int *cancel = hooks != NULL ? hooks->cancel : NULL;
    double *theta = model_params(t->m), *grad = model_grads(t->m);
    const uint8_t *mask = model_decay_mask(t->m);

    int64_t k = *global_step - s0;  /* local step: the model is at global step s0 + k */
    int pending = 0;           /* row for step k-1 computed, not yet reported */
    int all_rows = 0;          /* `loss` was evaluated on every row */
    int have_next = 0;         /* lbfgs left loss and gradient at the new θ in `loss`, grad */
    train_row_t row = {0};
    int row_validated = 0;     /* `row` carries its validation values */
    double loss = NAN, loss_prev = NAN;
    double best = NAN;         /* early stopping: best validation loss of this call */
    int64_t stale = 0;         /* evaluations since the last improvement */
    int best_unknown = 0;      /* resumed: best_theta is not θ at res->best_step */
    int32_t stop = 0;
    batch_t b;

    if (k < 0 || k > steps)
        return err_set_field(err, ERR_INVAL, "step", "cannot resume a call of %" PRId64
                             " steps from step %" PRId64 " at step %" PRId64, steps, s0,
                             *global_step);
    if (resume != NULL && k > 0) {
        res->loss_before = resume->loss_before;
        loss_prev = resume->loss_prev;
        if (early && resume->best_step >= 0) {
            best = resume->best_val_loss;
            stale = resume->stale;
            res->best_step = resume->best_step;
            res->best_val_loss = resume->best_val_loss;
            best_unknown = 1;
        }
    }
    t->epoch = -1;
    optim_set_cancel(t->o, cancel);
    optim_set_pool(t->o, model_pool(t->m));
    if (!full && steps > 0 && k == 0) {
        /* Epoch after epoch, each call starts where the last one evaluated every row: that
         * pass would cost as much as a third of an epoch's products. */
        if (t->known && memcmp(t->known_theta, theta, (size_t)t->n * sizeof(double)) == 0)
            res->loss_before = t->known_loss;
        else if ((rc = model_loss_grad(t->m, &t->data, &res->loss_before, NULL, err)) < 0)
            goto fail;
    }

    for (;;) {
        all_rows = full || k == steps;
        if (all_rows)
            b = t->data;
        else
            minibatch(t, k, bs, req->seed, &b);
        if (have_next) {
            have_next = 0;     /* the line search's last evaluation was at this θ, all rows */
        } else {
            rc = model_loss_grad(t->m, &b, &loss, k < steps ? grad : NULL, err);
            if (rc < 0)
                goto fail;
        }
        if (k == 0 && all_rows)
            res->loss_before = loss;

        /* The rows this call will record are its evaluations: validate θ_t before any stop
         * rule, so early stopping sees step t's value. */
        double val_loss = NAN, val_accuracy = NAN;
        const int64_t every = req->history_every;
        const int evaluated = validating && k < steps && isfinite(loss) && every > 0 &&
                              ((s0 + k) % every == 0 || k == steps - 1);
        if (evaluated) {
            if ((rc = validate(t, &val_loss, &val_accuracy, err)) < 0)
                goto fail;
            if (early) {
                if (res->best_step < 0 || val_loss < best - req->min_delta) {
                    best = val_loss;
                    stale = 0;
                    res->best_step = s0 + k;
                    res->best_val_loss = val_loss;
                    best_unknown = 0;
                    memcpy(t->best_theta, theta, (size_t)t->n * sizeof(double));
                    if (t->state_len > 0)
                        memcpy(t->best_state, optim_state(t->o),
                               (size_t)t->state_len * sizeof(double));
                } else {
                    ++stale;
                }
            }
        }

        if (!isfinite(loss) && steps > 0)
            stop = TRAIN_STOP_DIVERGED;
        else if (k == steps)
            stop = TRAIN_STOP_MAX_STEPS;
        else if (loss <= req->target_loss)
            stop = TRAIN_STOP_TARGET_LOSS;
        else if (k > 0 && fabs(loss - loss_prev) < req->tolerance)
            stop = TRAIN_STOP_TOLERANCE;
        else if (early && evaluated && stale >= req->patience)
            stop = TRAIN_STOP_EARLY_STOPPING;
        else if (cancel != NULL && atomic_load_explicit(cancel, memory_order_relaxed) != 0)
            stop = TRAIN_STOP_CANCELLED;
        if (stop != 0)
            break;

        /* Update k happens, so row k-1 is final and not the call's last. */
        if (pending) {
            pending = 0;
            rc = report(hooks, &row, req->history_every, 0);
            if (rc < 0)
                goto aborted;
        }
        const double lr = optim_schedule_rate(schedule, base_lr, s0 + k);
        const double grad_norm = tensor_norm2_on(model_pool(t->m), grad, t->n);
        row = (train_row_t){.step = s0 + k, .loss = loss, .grad_norm = grad_norm,
                            .learning_rate = lr, .val_loss = val_loss,
                            .val_accuracy = val_accuracy};
        row_validated = evaluated;
        int finite;            /* θ and the optimizer state after the update */
        if (lbfgs) {
            snapshot_save(t);
            int moved = 0;
            double next_loss = loss;
            rc = optim_lbfgs_step(t->o, lr, mask, eval_all_rows, t, theta, &next_loss, grad,
                                  &moved, err);
            if (rc == ERR_CANCELLED) {
                /* Stopped inside the iteration: undo it, the model stays at θ_k. */
                snapshot_restore(t);
                if (err != NULL)
                    memset(err, 0, sizeof *err);
                rc = 0;
                stop = TRAIN_STOP_CANCELLED;
                break;
            }
            if (rc < 0) {
                snapshot_restore(t);
                goto fail;
            }
            if (!moved) {
                /* No decrease along the search direction: θ_k is the optimum we can reach. */
                stop = TRAIN_STOP_CONVERGED;
                break;
            }
            have_next = 1;
            loss_prev = loss;
            loss = next_loss;
            finite = tensor_all_finite(theta, t->n) &&
                     tensor_all_finite(optim_state(t->o), optim_state_len(t->o));
        } else {
            /* The snapshot is taken inside the update's own pass over θ. */
            finite = optim_update_keeping(t->o, lr, grad, mask, theta, t->snap_theta,
                                          t->snap_state);
        }
        /* The optimizer state counts too: it is exported and must stay representable. */
        if (!finite) {
            snapshot_restore(t);
            if (have_next) {
                have_next = 0;
                loss = loss_prev;   /* back at θ_k, whose loss lbfgs moved into loss_prev */
            }
            stop = TRAIN_STOP_DIVERGED;
            break;
        }
        pending = 1;
        ++k;
        if (!have_next)
            loss_prev = loss;
    }

    /* Early stopping with restore_best: back to θ_b and its optimizer state. The step still
     * counts every update made and the history keeps every row. */
    if (stop == TRAIN_STOP_EARLY_STOPPING && req->restore_best && res->best_step < s0 + k &&
        !best_unknown) {
        memcpy(theta, t->best_theta, (size_t)t->n * sizeof(double));
        if (t->state_len > 0)
            memcpy(optim_state(t->o), t->best_state, (size_t)t->state_len * sizeof(double));
        all_rows = 0;          /* loss_after is the loss at θ_b */
    }
    /* A mini-batch loss is not the loss on all rows that loss_after reports. */
    if (!all_rows && !(stop == TRAIN_STOP_DIVERGED && pending)) {
        rc = model_loss_grad(t->m, &t->data, &loss, NULL, err);
        if (rc < 0)
            goto fail;
        all_rows = 1;
    }
    /* The loss at the final θ is not finite after an update of this call: undo that update. */
    if (!isfinite(loss) && pending) {
        snapshot_restore(t);
        pending = 0;
        --k;
        stop = TRAIN_STOP_DIVERGED;
        if (full) {
            loss = loss_prev;
        } else {
            rc = model_loss_grad(t->m, &t->data, &loss, NULL, err);
            if (rc < 0)
                goto fail;
        }
    }
    res->loss_after = loss;
    remember_loss(t, all_rows, loss);
    if (validating && (rc = validate(t, &res->val_loss_after, &(double){0}, err)) < 0)
        goto fail;
    if (pending) {
        pending = 0;
        /* The call's last row is recorded; validate it if it was not planned to be. */
        if (validating && !row_validated && req->history_every > 0 &&
            (rc = validate_snapshot(t, &row.val_loss, &row.val_accuracy, err)) < 0)
            goto fail;
        rc = report(hooks, &row, req->history_every, 1);
        if (rc < 0)
            goto aborted;
    }
    res->stopped = stop;
    res->steps_run = k;
    res->step = *global_step = s0 + k;
    res->elapsed_ms = ms_since(&t0);
    optim_set_cancel(t->o, NULL);
    optim_set_pool(t->o, NULL);
    return 0;

aborted:
    /* The callback refused row k-1: the model stays at s0 + k, as train.h promises. */
    err_set(err, rc, "training stopped by the progress callback (%s)", err_str(rc));
    res->loss_after = all_rows ? loss : NAN;
    if (stop == 0)
        stop = TRAIN_STOP_CANCELLED;
    goto done;
fail:
    /* An evaluation failed: go back to the last reported state so θ, step and rows agree. */
    if (pending) {
        snapshot_restore(t);
        --k;
    }
    res->loss_after = NAN;
done:
    res->stopped = stop;
    res->steps_run = k;
    res->step = *global_step = s0 + k;
    res->elapsed_ms = ms_since(&t0);
    optim_set_cancel(t->o, NULL);
    optim_set_pool(t->o, NULL);
    return rc;
}
