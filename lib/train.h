/* lib/train.h -- the training loop: full batch or shuffled mini-batches, stop rules, divergence
 * rollback, a per-step progress callback and a cancellation flag.
 *
 * Semantics are docs/api.md's "Step semantics" and "Validation and early stopping", exactly:
 *  - step t evaluates loss_t and the gradient at θ_t, then checks the stop rules (target_loss;
 *    tolerance on |loss_t − loss_{t−1}| when t is not the call's first step), then updates;
 *  - if loss_t, or any parameter after the update, is not finite, the model goes back to θ_s,
 *    s being the last step whose loss was finite, with the optimizer state it had there, and
 *    stops with TRAIN_STOP_DIVERGED.
 *
 * Validation (train_ctx_set_validation): while the context has validation rows, every recorded
 * row also carries val_loss (and val_accuracy for classifiers) at θ_t, one forward pass over
 * those rows each, and the result val_loss_after at the final θ. Early stopping watches these
 * evaluations (docs/api.md "Validation and early stopping"): an evaluation at step
 * t improves when val_loss_t < best − min_delta (the first always does); after `patience`
 * evaluations in a row without improvement the run stops at that step, before its update, and
 * with restore_best the parameters and optimizer state go back to those of the best step.
 * Stop rules are checked in the order target_loss, tolerance, early stopping.
 *
 * The callback sees a history row only once it is final: the row for step t is reported when
 * loss_{t+1} has been found finite (or at the end of the call), at which moment the model's
 * parameters and optimizer state are exactly those of global step t+1. So a caller that commits
 * parameters, optimizer state, step and the reported rows together always commits a consistent
 * state.
 *
 *     train_req_t req;
 *     train_req_default(&req);
 *     req.steps = 100;
 *     train_ctx_t *t = NULL;
 *     train_ctx_new(m, o, &data, &t, &err);     // buffers for the largest batch: one allocation
 *     train_run(t, &req, &global_step, &hooks, &res, &err);
 */
#ifndef ND_TRAIN_H
#define ND_TRAIN_H

#include <stdatomic.h>
#include <stdint.h>

#include "err.h"
#include "model.h"
#include "optim.h"

/* Upper bound on a model's global step (and so on adam's and lbfgs's counts): 10^15, far below
 * 2^53, so every step stays an exact integer in a double, in JSON and in history. A call whose
 * steps would pass it is refused. */
#define TRAIN_STEP_MAX OPTIM_STEP_MAX

/* Upper bound on the updates of one call, whether given as steps or as epochs. */
#define TRAIN_MAX_STEPS 1000000000LL

/* Persisted in job results by name: append only. */
enum train_stop {
    TRAIN_STOP_MAX_STEPS = 1,
    TRAIN_STOP_TOLERANCE = 2,
    TRAIN_STOP_TARGET_LOSS = 3,
    TRAIN_STOP_CONVERGED = 4,
    TRAIN_STOP_DIVERGED = 5,
    TRAIN_STOP_CANCELLED = 6,
    TRAIN_STOP_EARLY_STOPPING = 7,
};

typedef struct train_req {
    int64_t steps;          /* max updates; default 1; used when epochs == 0 */
    int64_t epochs;         /* > 0: passes over all rows instead of steps */
    int32_t batch_size;     /* 0 = full batch */
    double learning_rate;   /* NAN = the optimizer's */
    double tolerance;       /* >= 0; 0 disables */
    double target_loss;     /* NAN = none */
    int64_t history_every;  /* >= 0; 0 records no rows */
    uint64_t seed;          /* mini-batch shuffling */
    int64_t patience;       /* early stopping: evaluations without improvement; 0 = off */
    double min_delta;       /* early stopping: >= 0 */
    int32_t restore_best;   /* early stopping: 1 = back to the best step's θ when it fires */
} train_req_t;

/* One history row (the update θ_t → θ_{t+1}). */
typedef struct train_row {
    int64_t step;           /* global step index t */
    double loss;            /* loss_t */
    double grad_norm;       /* ‖g_t‖₂ over all parameters, without the weight-decay term */
    double learning_rate;
    double val_loss;        /* loss_t on the validation rows; NaN without them */
    double val_accuracy;    /* accuracy_t on the validation rows (classifiers); else NaN */
    int32_t recorded;       /* 1 when history_every selects this row (or it is the call's last) */
} train_row_t;

/* Called once per update with its final row; the model is then at global step row->step + 1.
 * Return 0 to go on, or a negative err code to abort the run (the run stops with that code,
 * the model stays at row->step + 1). */
typedef int (*train_row_cb)(void *ctx, const train_row_t *row);

typedef struct train_hooks {
    train_row_cb on_row;          /* may be NULL */
    void *ctx;
    const atomic_int *cancel;     /* checked between steps; non-zero stops with CANCELLED */
} train_hooks_t;

typedef struct train_result {
    int64_t steps_run;      /* updates made (after any rollback) */
    int64_t step;           /* global step after the call */
    double loss_before;     /* loss on all rows at the starting θ */
    double loss_after;      /* loss on all rows at the final θ */
    int32_t stopped;        /* enum train_stop */
    double elapsed_ms;
    int32_t validated;      /* 1: the context had validation rows; val_loss_after applies */
    double val_loss_after;  /* validation loss at the final θ */
    int32_t early_stopping; /* 1: early stopping was requested; best_step, best_val_loss apply */
    int64_t best_step;      /* global step of the best evaluation; -1 when none was made */
    double best_val_loss;
} train_result_t;

typedef struct train_ctx train_ctx_t;

/* Defaults of the train request (docs/api.md "POST /v1/models/{id}/train"). */
void train_req_default(train_req_t *req);

/* Range checks (steps >= 0, epochs >= 0, batch_size >= 0, learning_rate > 0 when set,
 * tolerance >= 0, history_every >= 0, patience >= 0, min_delta >= 0, early stopping only with
 * history_every >= 1); err->field names the request field ("early_stopping.patience"). */
int train_req_validate(const train_req_t *req, err_t *err);

/*
 * The updates a call may make on `rows` rows from global step `global_step`: steps, or epochs
 * times the mini-batches of one epoch. ERR_INVAL naming "epochs" when that is more than
 * TRAIN_MAX_STEPS, and naming "steps" or "epochs" when the model would pass TRAIN_STEP_MAX.
 * Callers check it up front (before queueing a job) with the rows stored then; train_run()
 * checks it again with the rows it trains on.
 */
int train_req_steps(const train_req_t *req, int64_t rows, int64_t global_step, int64_t *steps,
                    err_t *err);

/* What the optimizer `method` (enum optim_method) allows of a call on `rows` rows: lbfgs takes
 * the full batch, so a call that updates with a smaller batch_size is ERR_INVAL naming
 * "batch_size". Checked up front and by train_run(), as train_req_steps(). */
int train_req_check_method(const train_req_t *req, int64_t rows, int32_t method, err_t *err);

/* Stop reason <-> name ("max_steps", "tolerance", "target_loss", "converged", "diverged",
 * "cancelled"). */
const char *train_stop_name(int32_t stop);

/* A training context over model m, optimizer o and the data (borrowed, must outlive the ctx
 * and keep its values: a call reuses the loss on all rows that the previous call found at the
 * same θ, see train_run). Allocates every buffer the loop needs (snapshots, shuffled indices,
 * gather buffers). */
int train_ctx_new(model_t *m, optim_t *o, const batch_t *data, train_ctx_t **out, err_t *err);
void train_ctx_free(train_ctx_t *t);

/* Evaluate on `val` (borrowed, must outlive the ctx; NULL or 0 rows: none) at every recorded
 * row. Makes the buffers early stopping needs and runs one evaluation, so the model's buffers
 * are sized for these rows and train_run() still allocates nothing. */
int train_ctx_set_validation(train_ctx_t *t, const batch_t *val, err_t *err);

/* Run one train call. *global_step is the model's step before and is advanced (or rolled back).
 * The optimizer state is checked first (optim_state_check): a state the engine could not have
 * produced is refused, never trusted. hooks->cancel also stops lbfgs inside an iteration (the
 * iteration is undone). Allocates nothing. */
int train_run(train_ctx_t *t, const train_req_t *req, int64_t *global_step,
              const train_hooks_t *hooks, train_result_t *res, err_t *err);

/*
 * Where a call cut off after a reported row goes on (a job taken over by another process): the
 * call's own state at its local step k = *global_step - start_step, which the rows it reported
 * determine. With it, the rest of the call makes exactly the updates, rows and result the
 * uninterrupted call would have made (elapsed_ms aside): the same mini-batches (the epoch's
 * order depends on the seed and the epoch only), the same stop rules, the same early stopping.
 */
typedef struct train_resume {
    int64_t start_step;     /* the global step the call started at */
    double loss_before;     /* the call's loss_before */
    double loss_prev;       /* the loss of row k-1 (its batch's), for the tolerance rule */
    int64_t best_step;      /* early stopping: the best evaluation so far, -1 when none */
    double best_val_loss;
    int64_t stale;          /* evaluations since the best */
} train_resume_t;

/* Early stopping's state after the recorded rows so far: feed the call's rows that carry a
 * validation loss, in step order, to a state that starts {.best_step = -1}. */
void train_resume_observe(train_resume_t *r, const train_req_t *req, int64_t step,
                          double val_loss);

/* train_run() going on from `resume` (NULL: a call from its start, as train_run()). With
 * restore_best, the best θ before the resumption is not known: early stopping that fires with
 * its best step before the resumption keeps the final θ instead (ERR_INVAL up front would lose
 * the run; the result's best_step still names the best step). */
int train_run_from(train_ctx_t *t, const train_req_t *req, const train_resume_t *resume,
                   int64_t *global_step, const train_hooks_t *hooks, train_result_t *res,
                   err_t *err);

#endif /* ND_TRAIN_H */
