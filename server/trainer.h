/* server/trainer.h -- one training run against the store: the runner shared by POST /train
 * (sync), async jobs (jobs.c) and POST /step.
 *
 * A run takes the model's write lock (REGISTRY_TRAINING for train, REGISTRY_SHORT for step;
 * 409 when a training run holds it) and releases it right after its final commit: whoever sees
 * that commit (a job's end, the model's step) can write the model at once. It trains a private copy (registry_load) on all stored rows or
 * on an inline batch, and commits in chunks of at most ~0.5 s or 100 000 updates: parameters,
 * optimizer state, step, the recorded history rows and the job's progress go into ONE
 * transaction each, so after a crash the model is exactly at some committed step with its
 * history up to that step. The trainer is the one publisher of a run's events (events.h):
 * `progress` as rows become final, and `done` once the run is over (lock released, on_end
 * called) for every run that got past its checks -- a run refused for a missing model, a
 * held lock, no rows or bad labels publishes nothing.
 *
 *     trainer_opts_t o = {.model_id = id, .lock = TRAINER_LOCK_TRAINING};
 *     train_req_default(&o.req);
 *     o.req.steps = 100;
 *     train_result_t res;
 *     if (trainer_run(app, &o, &res, &err) < 0) return err.code;   // `done` is published
 */
#ifndef ND_TRAINER_H
#define ND_TRAINER_H

#include <stdatomic.h>
#include <stdint.h>

#include "app.h"
#include "err.h"
#include "model.h"
#include "train.h"

enum trainer_lock {
    TRAINER_LOCK_HELD = 0,      /* the caller holds the TRAINING lock; the run releases it */
    TRAINER_LOCK_TRAINING = 1,  /* take REGISTRY_TRAINING for the run (POST /train) */
    TRAINER_LOCK_SHORT = 2,     /* take REGISTRY_SHORT for the run (POST /step) */
};

/* Called once when a run is over, before its `done` event: rc and err as trainer_run() returns
 * them (err is meaningful only when rc < 0). */
typedef void (*trainer_end_fn)(void *ctx, int rc, const train_result_t *res, const err_t *err);

/* Where a job taken over from a replica that died goes on: its call began at `start_step`
 * (the first commit recorded it, with `loss_before`); `loss_prev` is the loss of the last row
 * committed (the job's progress loss). */
typedef struct trainer_resume {
    int64_t start_step;
    double loss_before;
    double loss_prev;
} trainer_resume_t;

typedef struct trainer_opts {
    int64_t model_id;
    train_req_t req;
    const batch_t *batch;          /* borrowed inline batch; NULL = all stored rows */
    int64_t job_id;                /* > 0: also record progress in this job's row */
    const atomic_int *cancel;      /* checked between steps; may be NULL */
    int lock;                      /* enum trainer_lock */
    int set_status;                /* 1: model status 'training' during the run */
    /* Called inside the transaction of the final commit with the result (elapsed_ms covering
     * the steps, not that commit): a job records its end there, so no crash can separate the
     * final state from it. A failure rolls the commit back. May be NULL. */
    int (*record_end)(void *ctx, const train_result_t *res, err_t *err);
    void (*end_committed)(void *ctx);  /* right after the final commit: the end is visible
                                        * (a job frees its slot then); may be NULL */
    trainer_end_fn on_end;         /* may be NULL: e.g. a failed job records its end here */
    void *end_ctx;                 /* for record_end and on_end */
    const trainer_resume_t *resume;  /* NULL: the call starts at the model's step */
    /* Set (by record_end or on_end) when the run's end is not the call's: the job went back to
     * the queue, or another replica took it over. Its streams then get no `done`. May be NULL. */
    const atomic_int *handed_over;
    /* Asked before the final commit: 1 when this end (`res`) will hand the call back to the
     * queue, so its last step is not the call's last and gets no history row of its own (the
     * rows stay those of an uninterrupted call). May be NULL: the run's end is the call's. */
    int (*hands_back)(void *ctx, const train_result_t *res);
} trainer_opts_t;

/*
 * Run one training call. On success `*res` is the train result (also for a divergence, a
 * cancellation, or steps 0) and the final state is committed. Errors: ERR_NOTFOUND (model),
 * ERR_CONFLICT (locked), ERR_INVAL ("model has no stored rows", field "steps"/"epochs"; label
 * errors of an inline batch), storage errors (the model then stays at its last committed chunk).
 *
 * A commit that finds the database locked by another writer (store_failed_busy) is retried
 * with backoff while the training waits, until it succeeds or app->stopping is set: the
 * daemon's own contention never fails a run. When a run fails after committing chunks, `*res`
 * describes exactly what was committed (steps_run, step, loss_after = the loss at that step
 * when known, else NaN; stopped CANCELLED), so the caller can answer it; res->steps_run == 0
 * then means nothing changed. `*res` is filled as far as it is known on every failure.
 */
int trainer_run(app_t *app, const trainer_opts_t *o, train_result_t *res, err_t *err);

/* Updates the run will make at most, for the job's progress: steps, or epochs × batches per
 * epoch over `rows` stored rows. */
int64_t trainer_planned_steps(const train_req_t *req, int64_t rows);

#endif /* ND_TRAINER_H */
