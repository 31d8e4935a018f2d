/* server/trainer.c -- one training run: lock, private copy, chunked commits, events.
 *
 * train_run() reports a history row only when it is final, and the model is then exactly at
 * step row.step + 1 (train.h). So the on_row callback may commit at any row: parameters,
 * optimizer state, step = row.step + 1 and the recorded rows buffered so far go into one
 * transaction and the store always holds a state the model really passed through. Chunks keep
 * the cost of a commit (an fsync) small against the steps: at most ~0.5 s or 100 000 updates each.
 */
#include "trainer.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "datacache.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "optim.h"
#include "registry.h"
#include "relay.h"
#include "request.h"
#include "sessions.h"
#include "store.h"

/* A commit costs an fsync: committing every 1000 steps made a fast 10 000-step call spend half
 * its time committing. The step cap bounds the history rows buffered between commits. */
#define TRAINER_CHUNK_STEPS 100000
#define TRAINER_CHUNK_NS 500000000LL
/* Backoff between attempts of a commit that found the database locked; each attempt itself
 * waits up to the busy timeout. */
#define TRAINER_RETRY_FIRST_MS 10
#define TRAINER_RETRY_MAX_MS 1000

typedef struct run {
    app_t *app;
    const trainer_opts_t *o;
    model_t *m;
    optim_t *optim;
    int64_t s0;                  /* global step at the start of the call (a resumed job's:
                                    where its first run began) */
    const train_result_t *res;   /* the call's result as train_run fills it (loss_before) */
    int64_t planned;             /* job progress: updates planned */
    store_history_row_t *rows;   /* recorded rows not yet committed */
    int64_t n_rows, cap_rows;
    int64_t uncommitted;         /* updates since the last commit */
    int64_t counted;             /* updates added to the metrics counter */
    int64_t last_ns;             /* time of the last commit */
    train_row_t last;            /* the last row reported, recorded or not */
    int have_last;
    double committed_loss;       /* loss at the last committed step, when a row reported it */
    int64_t final_version;       /* the model's version as the final commit left it */
    int lock_held;               /* the model's write lock is still ours */
    int64_t epoch;               /* of the model's lease this run took (store_lease_take) */
    int fenced;                  /* a commit found the lease taken over: the run is not ours */
    err_t commit_err;
} run_t;

static void lock_release(run_t *r)
{
    if (r->lock_held)
        registry_write_end(r->app->registry, r->o->model_id);
    r->lock_held = 0;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t trainer_planned_steps(const train_req_t *req, int64_t rows)
{
    if (req->epochs <= 0)
        return req->steps;
    if (rows <= 0)
        return 0;
    int64_t per_epoch = req->batch_size <= 0 || req->batch_size >= rows
                            ? 1
                            : (rows + req->batch_size - 1) / req->batch_size;
    return req->epochs > INT64_MAX / per_epoch ? INT64_MAX : req->epochs * per_epoch;
}

static int rows_push(run_t *r, const train_row_t *row)
{
    if (r->n_rows == r->cap_rows) {
        int64_t cap = r->cap_rows == 0 ? 64 : r->cap_rows * 2;
        store_history_row_t *nr = realloc(r->rows, (size_t)cap * sizeof *nr);
        if (nr == NULL)
            return err_set(&r->commit_err, ERR_NOMEM, "out of memory buffering history");
        r->rows = nr;
        r->cap_rows = cap;
    }
    r->rows[r->n_rows++] = (store_history_row_t){.step = row->step, .loss = row->loss,
                                                 .grad_norm = row->grad_norm,
                                                 .learning_rate = row->learning_rate,
                                                 .val_loss = row->val_loss,
                                                 .val_accuracy = row->val_accuracy};
    return 0;
}

/* The validation rows of an entry (none when e is NULL). */
static batch_t validation_rows(const datacache_entry_t *e, const model_t *m)
{
    if (e == NULL || e->val_rows < 1 || e->val_rows > INT32_MAX)
        return (batch_t){0};
    return (batch_t){.rows = (int32_t)e->val_rows, .n_x = model_n_x(m), .n_y = model_n_y(m),
                     .x = e->val_x, .y = e->val_y};
}

/* One transaction: parameters, optimizer state and `step`, the buffered rows, the job's
 * progress, and with `idle` the model's status back to idle (one sync, not two); `loss` (may
 * be NULL) is the model's new last loss. `end` (the final commit's result, or NULL) goes to
 * the record_end hook in the same transaction. */
static int commit(run_t *r, int64_t step, const double *loss, double progress_loss, int idle,
                  const train_result_t *end, err_t *err)
{
    store_t *st = r->app->store;
    const trainer_opts_t *o = r->o;
    int rc = store_begin(st, err);
    if (rc < 0)
        return rc;
    /* Fencing: checked in the commit's own transaction, so nothing of a run that lost its
     * lease lands, however long it was paused before this commit. */
    if ((rc = store_lease_check(st, o->model_id, atomic_load(&r->app->replica_id), r->epoch,
                                err)) < 0) {
        r->fenced = rc == ERR_CONFLICT;
        store_rollback(st);
        return rc;
    }
    if ((rc = store_params_put(st, o->model_id, model_params(r->m), model_n_params(r->m),
                               optim_state(r->optim), optim_state_len(r->optim), step, loss,
                               err)) < 0 ||
        (rc = store_history_append(st, o->model_id, r->rows, r->n_rows, err)) < 0 ||
        (r->n_rows > 0 && (rc = relay_steps(r->app->relay, o->model_id, r->rows[0].step,
                                            r->rows[r->n_rows - 1].step, err)) < 0) ||
        (o->job_id > 0 &&
         (rc = store_job_progress(st, o->job_id, r->s0, step, r->planned,
                                  isfinite(progress_loss) ? &progress_loss : NULL,
                                  r->res->loss_before, err)) < 0) ||
        (idle && (rc = store_model_set_status(st, o->model_id, "idle", err)) < 0) ||
        (end != NULL && o->record_end != NULL && (rc = o->record_end(o->end_ctx, end, err)) < 0) ||
        (end != NULL && (rc = store_model_version(st, o->model_id, &r->final_version, err)) < 0) ||
        (end != NULL && (rc = store_lease_release(st, o->model_id,
                                                  atomic_load(&r->app->replica_id), r->epoch,
                                                  err)) < 0) ||
        (rc = store_commit(st, err)) < 0) {
        store_rollback(st);
        return rc;
    }
    registry_committed(r->app->registry, o->model_id);
    if (end != NULL) {
        lock_release(r);   /* the end is visible: the model must be writable at once */
        if (o->end_committed != NULL)
            o->end_committed(o->end_ctx);
    }
    r->n_rows = 0;
    r->uncommitted = 0;
    r->last_ns = now_ns();
    int64_t done = step - r->s0;
    if (done > r->counted) {
        metrics_training_steps_add(done - r->counted);
        r->counted = done;
    }
    r->committed_loss = NAN;
    return 0;
}

static int flag_set(const atomic_int *flag)
{
    return flag != NULL && atomic_load(flag) != 0;
}

/* Sleep `ms`, in slices, returning early (1) once the daemon is stopping. */
static int wait_unless_stopping(const run_t *r, int ms)
{
    for (int waited = 0; waited < ms; waited += 10) {
        if (flag_set(&r->app->stopping))
            return 1;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return flag_set(&r->app->stopping);
}

/*
 * After attempt number `attempt` (from 0) of a write failed with `rc`: 1 when another attempt
 * is worth making, after the backoff `*backoff` (doubled each time) -- the write failed only
 * because another writer holds the database lock (a fork or an upload of this daemon, or
 * another process): the run's state is in memory, so waiting loses nothing, and failing would
 * throw away steps the caller cannot tell from nothing. 0 when `rc` stands: any other failure,
 * `give_up` (may be NULL) set, or the daemon stopping. `what` says what waits, for the log.
 */
static int retry_when_busy(run_t *r, int rc, int attempt, int *backoff, const atomic_int *give_up,
                           const char *what, const err_t *err)
{
    /* A job also waits out the database server's absence: nobody waits for its answer, and
     * its state is in memory. A synchronous call answers 503 instead. */
    int unreachable = r->o->job_id > 0 && store_failed_unreachable();
    if (rc == 0 || rc != ERR_UNAVAILABLE || (!store_failed_busy() && !unreachable) ||
        flag_set(give_up) || flag_set(&r->app->stopping))
        return 0;
    if (attempt == 0)
        log_msg(LOG_LEVEL_WARN, "model %" PRId64 ": cannot %s yet (%s); retrying",
                r->o->model_id, what, err->msg);
    if (wait_unless_stopping(r, *backoff))
        return 0;
    *backoff = *backoff * 2 > TRAINER_RETRY_MAX_MS ? TRAINER_RETRY_MAX_MS : *backoff * 2;
    return 1;
}

/* commit(), attempted again while the database is only busy (retry_when_busy). */
static int commit_patiently(run_t *r, int64_t step, const double *loss, double progress_loss,
                            int idle, const train_result_t *end, const atomic_int *give_up,
                            err_t *err)
{
    char what[64];
    snprintf(what, sizeof what, "commit step %" PRId64, step);
    int rc = 0, backoff = TRAINER_RETRY_FIRST_MS;
    for (int attempt = 0;; ++attempt) {
        rc = commit(r, step, loss, progress_loss, idle, end, err);
        if (!retry_when_busy(r, rc, attempt, &backoff, give_up, what, err))
            return rc;
    }
}

/* Take the model's lease for this run (its epoch in r->epoch), waiting while the database is
 * only busy, as a commit does: a run that waits here has not started yet. */
static int lease_take_patiently(run_t *r, err_t *err)
{
    app_t *app = r->app;
    int rc = 0, backoff = TRAINER_RETRY_FIRST_MS;
    for (int attempt = 0;; ++attempt) {
        rc = store_lease_take(app->store, r->o->model_id, atomic_load(&app->replica_id),
                              app->job_lease_ms, &r->epoch, err);
        if (!retry_when_busy(r, rc, attempt, &backoff, r->o->cancel, "take its lease", err))
            return rc;
    }
}

static int on_row(void *ctx, const train_row_t *row)
{
    run_t *r = ctx;
    r->last = *row;
    r->have_last = 1;
    if (row->step == r->s0 + r->counted)
        r->committed_loss = row->loss;    /* the loss at the committed parameters */
    if (row->recorded) {
        if (rows_push(r, row) < 0)
            return r->commit_err.code;
        events_progress(r->app->events, r->o->model_id, row->step, row->loss);
    }
    ++r->uncommitted;
    if (r->uncommitted >= TRAINER_CHUNK_STEPS || now_ns() - r->last_ns >= TRAINER_CHUNK_NS) {
        /* Cancelled while waiting for the lock: stop retrying here and let the run stop at
         * this step; the final commit takes these rows with it. */
        int rc = commit_patiently(r, row->step + 1, NULL, row->loss, 0, NULL, r->o->cancel,
                                  &r->commit_err);
        if (rc < 0 && !(flag_set(r->o->cancel) && store_failed_busy()))
            return rc;
    }
    return 0;
}

static int lock_take(run_t *r, err_t *err)
{
    const trainer_opts_t *o = r->o;
    int rc = o->lock == TRAINER_LOCK_HELD
                 ? 0
                 : registry_write_begin(r->app->registry, o->model_id,
                                        o->lock == TRAINER_LOCK_SHORT ? REGISTRY_SHORT
                                                                      : REGISTRY_TRAINING,
                                        err);
    r->lock_held = rc == 0;
    return rc;
}

/* A kept session of model `id` still describes it: nobody changed the model since its last
 * commit (the version) and its stored rows are the same (the data cache hands out the same
 * entry). `*rows` is the current rows entry, in use, for the caller to keep or release. */
static int session_current(app_t *app, const session_t *s, const model_t *m,
                           const datacache_entry_t **rows, err_t *err)
{
    int64_t version = 0;
    int rc = store_model_version(app->store, s->id, &version, err);
    if (rc < 0 || (rc = datacache_rows(app->data_cache, app->store, s->id, model_n_x(m),
                                       model_n_y(m), rows, err)) < 0)
        return rc;
    return version == s->version && *rows == s->rows;
}

/* The state of one call in `st`: a kept session when it is current, else built afresh (model
 * copy, stored rows unless `inline_rows`, and later the training context). `*fresh` says which. */
static int state_get(app_t *app, const trainer_opts_t *o, session_t **st, session_t *local,
                     int *fresh, err_t *err)
{
    *st = local;
    *fresh = 1;
    local->id = o->model_id;
    local->dc = app->data_cache;
    if (o->batch != NULL || app->sessions == NULL)
        return registry_load(app->registry, o->model_id, &local->copy, err);
    session_t *s = sessions_take(app->sessions, o->model_id);
    const datacache_entry_t *rows = NULL;
    if (s != NULL) {
        int rc = session_current(app, s, s->copy.model, &rows, err);
        if (rc < 0) {
            session_free(s);
            return rc;
        }
        if (rc == 1) {
            datacache_release(app->data_cache, rows);   /* the session holds the same */
            *st = s;
            *fresh = 0;
            return 0;
        }
        session_free(s);
    }
    /* A new session when there is memory for one; this call's state either way. */
    session_t *n = calloc(1, sizeof *n);
    if (n != NULL)
        *st = n;
    (*st)->id = o->model_id;
    (*st)->dc = app->data_cache;
    int rc = registry_load(app->registry, o->model_id, &(*st)->copy, err);
    if (rc == 0 && rows == NULL)
        rc = datacache_rows(app->data_cache, app->store, o->model_id,
                            model_n_x((*st)->copy.model), model_n_y((*st)->copy.model), &rows,
                            err);
    (*st)->rows = rows;
    return rc;
}

/* The train_resume_t of a job resumed at global step `step`: the call's start and losses from
 * its record, early stopping's state from the rows it recorded (in history) before `step`. */
static int resume_state(app_t *app, const trainer_opts_t *o, int64_t step,
                        train_resume_t *out, err_t *err)
{
    *out = (train_resume_t){.start_step = o->resume->start_step,
                            .loss_before = o->resume->loss_before,
                            .loss_prev = o->resume->loss_prev, .best_step = -1};
    if (o->req.patience <= 0)
        return 0;
    for (int64_t after = out->start_step - 1;;) {
        store_history_row_t *rows = NULL;
        int64_t n = 0, next = 0;
        int rc = store_history_list(app->store, o->model_id, after, 1000, &rows, &n, &next, err);
        if (rc < 0)
            return rc;
        for (int64_t i = 0; i < n && rows[i].step < step; ++i)
            train_resume_observe(out, &o->req, rows[i].step, rows[i].val_loss);
        int done = n == 0 || next < 0 || rows[n - 1].step >= step - 1;
        after = next;
        free(rows);
        if (done)
            return 0;
    }
}

/* The run itself; `*started` says whether it got past its checks (lock, model, data) to the
 * point where it could update the model, which is when its end is an event. */
static int run(app_t *app, const trainer_opts_t *o, train_result_t *res, int *started,
               err_t *err)
{
    *started = 0;
    memset(res, 0, sizeof *res);
    res->loss_before = res->loss_after = NAN;
    res->stopped = TRAIN_STOP_MAX_STEPS;

    run_t r = {.app = app, .o = o, .res = res, .committed_loss = NAN,
               .lock_held = o->lock == TRAINER_LOCK_HELD};
    session_t local = {0}, *st = &local;
    const datacache_entry_t *inline_val = NULL;   /* stored rows, for an inline batch's run */
    int fresh = 1;
    int status_set = 0;
    int rc = train_req_validate(&o->req, err);
    if (rc < 0) {
        lock_release(&r);
        return rc;
    }
    if ((rc = lock_take(&r, err)) < 0)
        return rc;
    if ((rc = lease_take_patiently(&r, err)) < 0 ||
        (rc = state_get(app, o, &st, &local, &fresh, err)) < 0)
        goto out;
    relay_catch_up(app->relay, o->model_id);   /* streams here: the run before first (relay.h) */
    r.m = st->copy.model;
    r.optim = st->copy.optim;
    r.s0 = o->resume != NULL ? o->resume->start_step : st->copy.step;
    r.counted = st->copy.step - r.s0;      /* a resumed job's earlier steps: committed before */
    res->step = st->copy.step;

    batch_t data;
    if (o->batch != NULL) {
        data = *o->batch;
    } else {
        const datacache_entry_t *rows = st->rows;
        int64_t n_rows = rows != NULL ? rows->rows : 0;
        if (n_rows > INT32_MAX) {
            rc = err_set(err, ERR_INVAL, "model %" PRId64 " has %" PRId64
                         " stored rows; training takes at most %d", o->model_id, n_rows,
                         INT32_MAX);
            goto out;
        }
        data = (batch_t){.rows = (int32_t)n_rows, .n_x = model_n_x(r.m), .n_y = model_n_y(r.m),
                         .x = rows != NULL ? rows->x : NULL, .y = rows != NULL ? rows->y : NULL};
    }
    r.planned = trainer_planned_steps(&o->req, data.rows);
    if (data.rows == 0) {
        if (o->req.steps > 0 || o->req.epochs > 0) {
            rc = err_set_field(err, ERR_INVAL, o->req.epochs > 0 ? "epochs" : "steps",
                               "model has no stored rows: POST batches first");
            goto out;
        }
        /* steps 0 on no data evaluates nothing: the losses stay null, the model as it is;
         * the commit only records the end (a job's). */
        *started = 1;
        if (o->record_end != NULL)
            rc = commit_patiently(&r, r.s0, NULL, NAN, 0, res, NULL, err);
        goto out;
    }
    if (o->batch != NULL && (rc = model_check_labels(r.m, &data, err)) < 0)
        goto out;
    /* The largest evaluation of a call is over all its rows, whatever the batch: loss_after is
     * the loss on every row, in one pass (a graph model's loss need not split into parts). */
    rc = o->batch != NULL
             ? request_check_work(&app->limits, r.m, data.rows, "x", err)
             : request_check_train_work(&app->limits, r.m, data.rows, o->req.batch_size > 0, err);
    if (rc < 0)
        goto out;
    *started = 1;
    if (fresh) {
        /* An inline batch (/step) is validated on the stored validation rows too. */
        const datacache_entry_t *val = st->rows;
        if (o->batch != NULL &&
            (rc = datacache_rows(app->data_cache, app->store, o->model_id, model_n_x(r.m),
                                 model_n_y(r.m), &inline_val, err)) < 0)
            goto out;
        if (o->batch != NULL)
            val = inline_val;
        batch_t vb = validation_rows(val, r.m);
        if ((vb.rows > 0 && (rc = request_check_work(&app->limits, r.m, vb.rows, "split",
                                                     err)) < 0) ||
            (rc = train_ctx_new(r.m, r.optim, &data, &st->tc, err)) < 0 ||
            (rc = train_ctx_set_validation(st->tc, &vb, err)) < 0)
            goto out;
    }
    train_ctx_t *tc = st->tc;

    if (o->set_status) {
        err_t serr = {0};
        if (store_model_set_status(app->store, o->model_id, "training", &serr) == 0)
            status_set = 1;
    }
    const int64_t t0 = now_ns();
    r.last_ns = t0;
    int64_t step = st->copy.step;
    train_hooks_t hooks = {.on_row = on_row, .ctx = &r, .cancel = o->cancel};
    train_resume_t resume;
    if (o->resume != NULL && (rc = resume_state(app, o, step, &resume, err)) < 0)
        goto out;
    rc = train_run_from(tc, &o->req, o->resume != NULL ? &resume : NULL, &step, &hooks, res,
                        err);
    if (rc < 0) {
        /* A failed chunk commit carries the real reason; the store holds the last good chunk. */
        if (r.commit_err.code < 0)
            *err = r.commit_err;
        goto out;
    }
    const int hands_back = o->hands_back != NULL && o->hands_back(o->end_ctx, res);
    if (hands_back && o->req.history_every > 0 && r.n_rows > 0 &&
        r.rows[r.n_rows - 1].step == res->step - 1 &&
        r.rows[r.n_rows - 1].step % o->req.history_every != 0)
        --r.n_rows;   /* recorded as the call's last step, which it is not */
    /* With history_every > 1 a rollback can make an unrecorded row the call's last update;
     * the last step of every call is recorded (docs/api.md "GET /v1/models/{id}/history"). */
    if (!hands_back && o->req.history_every > 0 && r.have_last && !r.last.recorded &&
        r.last.step == res->step - 1) {
        r.last.recorded = 1;
        if ((rc = rows_push(&r, &r.last)) < 0) {
            *err = r.commit_err;
            goto out;
        }
        events_progress(app->events, o->model_id, r.last.step, r.last.loss);
    }
    double loss = res->loss_after;
    res->elapsed_ms = (double)(now_ns() - t0) / 1e6;   /* for on_end: the steps */
    rc = commit_patiently(&r, res->step, &loss, loss, status_set, res, NULL, err);
    if (rc < 0)
        goto out;
    status_set = 0;
    res->elapsed_ms = (double)(now_ns() - t0) / 1e6;   /* the steps and their commits */

out:
    /* A fenced run's model is another run's now, whose events the streams follow: its end
     * is no event (another replica may be resuming this very job). */
    if (r.fenced)
        *started = 0;
    if (rc < 0 && r.epoch > 0 && !r.fenced) {
        err_t lerr = {0};
        (void)store_lease_release(app->store, o->model_id, atomic_load(&app->replica_id),
                                  r.epoch, &lerr);
    }
    if (status_set && !r.fenced) {   /* a fenced run touches nothing: the model is not its own */
        err_t serr = {0};
        if (store_model_set_status(app->store, o->model_id, "idle", &serr) < 0)
            log_msg(LOG_LEVEL_WARN, "model %" PRId64 ": cannot reset status: %s", o->model_id,
                    serr.msg);
    }
    if (rc < 0) {
        /* Updates made but never committed do not count: the result describes the model as
         * the store holds it. */
        res->step = r.s0 + r.counted;
        res->steps_run = r.counted;
        res->loss_after = r.counted > 0 ? r.committed_loss : res->loss_before;
        res->val_loss_after = NAN;         /* not evaluated at the committed step */
        res->stopped = TRAIN_STOP_CANCELLED;
    }
    lock_release(&r);
    /* Kept only when the state in memory is exactly the committed one: the version the final
     * commit left (another writer may have changed the model since; the session then no longer
     * matches and is dropped at its next use). */
    if (st != &local && rc == 0 && st->tc != NULL && r.final_version > 0) {
        st->copy.step = res->step;
        st->version = r.final_version;
        sessions_put(app->sessions, st);
        st = NULL;
    }
    if (st == &local)
        session_clear(&local);
    else
        session_free(st);
    free(r.rows);
    datacache_release(app->data_cache, inline_val);
    return rc;
}

int trainer_run(app_t *app, const trainer_opts_t *o, train_result_t *res, err_t *err)
{
    int started = 0;
    int rc = run(app, o, res, &started, err);
    if (o->on_end != NULL)
        o->on_end(o->end_ctx, rc, res, err);
    /* A run handed over to another replica has not ended: that replica announces the end. */
    if (!started || flag_set(o->handed_over) ||
        (!events_wanted(app->events, o->model_id) && app->relay == NULL))
        return rc;
    cJSON *result = rc < 0 ? NULL : codec_train_result_encode(o->model_id, res);
    events_done(app->events, o->model_id, result, rc < 0 ? err : NULL);
    relay_done(app->relay, o->model_id, result, rc < 0 ? err : NULL);
    cJSON_Delete(result);
    return rc;
}
