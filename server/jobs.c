/* server/jobs.c -- asynchronous training jobs: a queue in the database, a dispatcher per replica.
 *
 * A submission is a `queued` row. Each replica runs at most --max-jobs of them at once, one
 * thread each, and claims the oldest claimable one whenever it has a free slot: at once for a
 * submission it can run itself, otherwise by its dispatcher thread, which also looks every
 * JOBS_POLL_MS for jobs queued through other replicas, jobs of replicas that died (resumed
 * here from their last commit), and cancels asked through other replicas. A claimed job's
 * thread holds the model's TRAINING lock in the registry for the run; across replicas the
 * model's lease (trainer.c) keeps it exclusive.
 */
#include "jobs.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "log.h"
#include "metrics.h"
#include "monotime.h"
#include "registry.h"
#include "store.h"
#include "trainer.h"

#define JOBS_RECORD_RETRY_MS 200    /* recording a job's end while the storage is unavailable */
/* How often a replica looks for work others queued, jobs of dead replicas and remote cancels:
 * a cancel through another replica stops the run within about this plus one step. */
#define JOBS_POLL_MS 250

typedef struct job {
    jobs_t *owner;
    int64_t id, model_id;
    train_req_t req;
    trainer_resume_t resume;   /* where a job taken over goes on (resumed) */
    int resumed;
    atomic_int cancel;         /* read by train_run between steps */
    atomic_int by_user;        /* the cancel came from DELETE /v1/jobs/{id} */
    atomic_int handed_over;    /* the run ended without ending the job (trainer_opts_t) */
    atomic_int finished;       /* the thread is done with everything but returning */
    int slot_freed;            /* its slot went back when its end was committed */
    pthread_t thread;
    struct job *next;
} job_t;

struct jobs {
    app_t *app;
    pthread_mutex_t mu;        /* guards jobs, n_active, n_sync, n_sync_slots */
    pthread_cond_t sync_done;  /* signalled when n_sync drops, for jobs_shutdown() */
    pthread_cond_t wake;       /* the dispatcher: a slot is free, a job queued, or stopping */
    job_t *jobs;
    int64_t n_active;          /* job threads, and slots reserved for a claim */
    int64_t n_sync;            /* synchronous runs between jobs_sync_begin() and _end() */
    int64_t n_sync_slots;      /* those of them not yet answered: what --max-sync-runs caps */
    atomic_int stopping;
    int shared;                /* PostgreSQL: other replicas may take over this one's jobs */
    int dispatching;           /* the dispatcher thread was started */
    int kicked;                /* mu: the dispatcher has something to look at */
    pthread_t dispatcher;
};

/* ---- jobs ------------------------------------------------------------------------------------ */

/* Join and free every finished job thread. */
static void jobs_reap(jobs_t *j)
{
    job_t *done = NULL;
    pthread_mutex_lock(&j->mu);
    for (job_t **pp = &j->jobs; *pp != NULL;) {
        job_t *jb = *pp;
        if (atomic_load(&jb->finished)) {
            *pp = jb->next;
            jb->next = done;
            done = jb;
        } else {
            pp = &jb->next;
        }
    }
    pthread_mutex_unlock(&j->mu);
    while (done != NULL) {
        job_t *next = done->next;
        pthread_join(done->thread, NULL);
        free(done);
        done = next;
    }
}

/* A slot for one more job on this replica (1), or none free (0). */
static int slot_reserve(jobs_t *j)
{
    pthread_mutex_lock(&j->mu);
    int ok = j->n_active < j->app->limits.max_jobs;
    if (ok)
        j->n_active++;
    pthread_mutex_unlock(&j->mu);
    return ok;
}

static void slot_release(jobs_t *j)
{
    pthread_mutex_lock(&j->mu);
    j->n_active--;
    pthread_mutex_unlock(&j->mu);
}

static void dispatcher_wake(jobs_t *j)
{
    pthread_mutex_lock(&j->mu);
    j->kicked = 1;
    pthread_cond_signal(&j->wake);
    pthread_mutex_unlock(&j->mu);
}

static char *result_text(int64_t model_id, const train_result_t *res)
{
    cJSON *o = codec_train_result_encode(model_id, res);
    char *text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return text;
}

/* The status and error a job ends with, given its run's result. Stopped by this replica's
 * shutdown, it goes back to the queue where other replicas may resume it; with SQLite there
 * are none, and it ends failed "interrupted". */
static const char *job_end_status(const job_t *jb, const train_result_t *res, const char **error)
{
    *error = NULL;
    if (res->stopped != TRAIN_STOP_CANCELLED)
        return "succeeded";
    if (atomic_load(&jb->by_user))
        return "cancelled";
    if (jb->owner->shared)
        return "queued";
    *error = "interrupted";
    return "failed";
}

/* trainer_opts_t.hands_back: this end puts the job back in the queue. */
static int job_hands_back(void *ctx, const train_result_t *res)
{
    const char *error = NULL;
    return strcmp(job_end_status(ctx, res, &error), "queued") == 0;
}

/* store_job_finish() for this replica; a job another replica took over is left alone. */
static int job_finish(job_t *jb, const char *status, const char *result, const char *error,
                      err_t *err)
{
    app_t *app = jb->owner->app;
    if (strcmp(status, "queued") == 0)
        result = error = NULL;
    int rc = store_job_finish(app->store, jb->id, atomic_load(&app->replica_id), status, result,
                              error, err);
    if (rc == 0 && strcmp(status, "queued") == 0)
        atomic_store(&jb->handed_over, 1);
    return rc;
}

/* trainer_opts_t.record_end: the job's end, in the transaction of its run's final commit, so
 * no crash can separate the model's final step from the job's status and result. */
static int job_record_end(void *ctx, const train_result_t *res, err_t *err)
{
    job_t *jb = ctx;
    const char *error = NULL;
    const char *status = job_end_status(jb, res, &error);
    char *result = result_text(jb->model_id, res);
    if (result == NULL)
        return err_set(err, ERR_NOMEM, "out of memory recording job %" PRId64 "'s end", jb->id);
    int rc = job_finish(jb, status, result, error, err);
    free(result);
    return rc;
}

/* trainer_opts_t.end_committed: a client that sees the job's end may submit the next job at
 * once, and must find the slot free. */
static void job_end_committed(void *ctx)
{
    job_t *jb = ctx;
    jb->slot_freed = 1;
    slot_release(jb->owner);
    dispatcher_wake(jb->owner);
}

/* trainer_opts_t.on_end: the run is over and has released the model. A run that succeeded
 * recorded the job's end in its final commit; a failed one records it now (before the trainer
 * publishes `done`, so a client that saw it reads the job's final status), with what it had
 * committed (steps_run > 0) beside the reason -- unless another replica took the job over. */
static void job_end(void *ctx, int rc, const train_result_t *res, const err_t *err)
{
    job_t *jb = ctx;
    jobs_t *j = jb->owner;
    const char *error = NULL;
    const char *status = job_end_status(jb, res, &error);
    if (rc < 0) {
        status = "failed";
        error = err->msg[0] != '\0' ? err->msg : err_str(rc);
    }
    if (rc == 0) {
        log_msg(LOG_LEVEL_INFO, "job %" PRId64 " (model %" PRId64 ") %s: %" PRId64 " steps",
                jb->id, jb->model_id, status, res->steps_run);
        return;
    }
    char *result = res->steps_run > 0 ? result_text(jb->model_id, res) : NULL;
    /* Often the storage trouble that ended the run (disk full, read-only, locked) also stops
     * the job's end from being recorded: try again until the storage is back, or until
     * shutdown (the next start then marks the job interrupted, or another replica resumes it). */
    err_t serr = {0};
    for (int tries = 0;; ++tries) {
        int frc = job_finish(jb, status, result, error, &serr);
        if (frc == 0) {
            log_msg(LOG_LEVEL_WARN, "job %" PRId64 " (model %" PRId64 ") failed: %" PRId64
                    " steps: %s", jb->id, jb->model_id, res->steps_run, error);
            break;
        }
        if (frc == ERR_NOTFOUND) {
            atomic_store(&jb->handed_over, 1);
            log_msg(LOG_LEVEL_WARN, "job %" PRId64 " (model %" PRId64 "): another replica "
                    "took it over; this run stops without a trace (%s)", jb->id, jb->model_id,
                    error);
            break;
        }
        if (serr.code != ERR_UNAVAILABLE || atomic_load(&j->stopping)) {
            log_msg(LOG_LEVEL_ERROR, "job %" PRId64 ": cannot record its end (%s): %s", jb->id,
                    status, serr.msg);
            break;
        }
        if (tries == 0)
            log_msg(LOG_LEVEL_WARN, "job %" PRId64 ": cannot record its end (%s) yet, retrying "
                    "every %d ms: %s", jb->id, status, JOBS_RECORD_RETRY_MS, serr.msg);
        struct timespec ts = {0, JOBS_RECORD_RETRY_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    free(result);
}

static void *job_main(void *arg)
{
    job_t *jb = arg;
    jobs_t *j = jb->owner;
    app_t *app = j->app;
    trainer_opts_t o = {.model_id = jb->model_id, .req = jb->req, .job_id = jb->id,
                        .cancel = &jb->cancel, .lock = TRAINER_LOCK_HELD, .set_status = 1,
                        .record_end = job_record_end, .end_committed = job_end_committed,
                        .on_end = job_end, .end_ctx = jb,
                        .resume = jb->resumed ? &jb->resume : NULL,
                        .handed_over = &jb->handed_over, .hands_back = job_hands_back};
    train_result_t res;
    err_t err = {0};
    trainer_run(app, &o, &res, &err);
    metrics_active_jobs_add(-1);
    store_thread_end(app->store);           /* this thread's connection: one per job otherwise */
    if (!jb->slot_freed) {
        slot_release(j);
        dispatcher_wake(j);                 /* a queued job may take the slot */
    }
    atomic_store(&jb->finished, 1);
    return NULL;
}

/* The job of a claimed row, ready to run: its request read back, its resumption point. */
static int job_from_row(jobs_t *j, const store_job_t *row, job_t **out, err_t *err)
{
    *out = NULL;
    cJSON *body = row->request_json != NULL ? cJSON_Parse(row->request_json) : NULL;
    int async = 0;
    job_t *jb = calloc(1, sizeof *jb);
    int rc = jb == NULL ? err_set(err, ERR_NOMEM, "out of memory for a job")
             : body == NULL ? err_set(err, ERR_INTERNAL, "job %" PRId64 ": its request is not "
                                      "readable JSON", row->id)
                            : codec_train_req_decode(body, &jb->req, &async, err);
    cJSON_Delete(body);
    if (rc < 0) {
        free(jb);
        return rc;
    }
    jb->owner = j;
    jb->id = row->id;
    jb->model_id = row->model_id;
    jb->resumed = row->has_start;
    jb->resume = (trainer_resume_t){.start_step = row->start_step,
                                    .loss_before = row->loss_before,
                                    .loss_prev = row->has_loss ? row->progress_loss : NAN};
    if (row->cancel_requested) {
        atomic_store(&jb->by_user, 1);
        atomic_store(&jb->cancel, 1);
    }
    *out = jb;
    return 0;
}

/*
 * Start the thread of the job this replica claimed (`row`; none when row->id is 0), in a slot
 * already reserved (released here unless the job took it). 1 when a job started, 0 when there
 * was none or it went back to the queue or failed to be read, < 0 when no thread could start.
 */
static int job_start(jobs_t *j, const store_job_t *row, err_t *err)
{
    app_t *app = j->app;
    int rc = 0;
    if (row->id == 0) {
        slot_release(j);
        return 0;
    }
    job_t *jb = NULL;
    err_t jerr = {0};
    if ((rc = job_from_row(j, row, &jb, &jerr)) < 0) {
        err_t ferr = {0};
        (void)store_job_finish(app->store, row->id, atomic_load(&app->replica_id), "failed",
                               NULL, jerr.msg, &ferr);
        log_msg(LOG_LEVEL_ERROR, "job %" PRId64 ": %s", row->id, jerr.msg);
        slot_release(j);
        return 0;
    }
    if (row->has_start)
        log_msg(LOG_LEVEL_INFO, "job %" PRId64 " (model %" PRId64 "): resuming the run that "
                "began at step %" PRId64, row->id, row->model_id, row->start_step);
    /* A synchronous run of this replica may hold the model in the instant before its lease
     * shows in the database: back to the queue, to be claimed again. */
    if ((rc = registry_write_begin(app->registry, jb->model_id, REGISTRY_JOB, &jerr)) < 0) {
        err_t ferr = {0};
        (void)store_job_finish(app->store, jb->id, atomic_load(&app->replica_id), "queued", NULL,
                               NULL, &ferr);
        free(jb);
        slot_release(j);
        return 0;
    }
    registry_set_job(app->registry, jb->model_id, jb->id);
    metrics_active_jobs_add(1);
    /* Checked again under the lock: jobs_shutdown() joins exactly the threads listed. */
    pthread_mutex_lock(&j->mu);
    int prc = atomic_load(&j->stopping) ? ESHUTDOWN
                                        : pthread_create(&jb->thread, NULL, job_main, jb);
    if (prc == 0) {
        jb->next = j->jobs;
        j->jobs = jb;
    }
    pthread_mutex_unlock(&j->mu);
    if (prc != 0) {
        metrics_active_jobs_add(-1);
        registry_write_end(app->registry, jb->model_id);
        err_t ferr = {0};
        (void)store_job_finish(app->store, jb->id, atomic_load(&app->replica_id),
                               j->shared ? "queued" : "failed", NULL,
                               j->shared ? NULL : "interrupted", &ferr);
        free(jb);
        slot_release(j);
        return prc == ESHUTDOWN ? 0
                                : err_set(err, ERR_UNAVAILABLE, "cannot start a job: %s",
                                          strerror(prc));
    }
    return 1;
}

/*
 * Claim the oldest claimable job and start its thread, in a slot already reserved (released
 * here unless a job took it). 1 when a job started, 0 when there was none to take, or < 0.
 */
static int claim_and_start(jobs_t *j, err_t *err)
{
    app_t *app = j->app;
    store_job_t row;
    int rc = store_job_claim(app->store, atomic_load(&app->replica_id), app->job_lease_ms, &row,
                             err);
    if (rc == 0)
        rc = job_start(j, &row, err);
    else
        slot_release(j);
    store_job_clear(&row);
    return rc;
}

/* Stop the local runs of jobs whose cancel was asked through another replica. */
static void cancels_apply(jobs_t *j)
{
    app_t *app = j->app;
    int64_t *ids = NULL, n = 0;
    err_t err = {0};
    if (store_jobs_cancel_requested(app->store, atomic_load(&app->replica_id), &ids, &n, &err) < 0)
        return;
    pthread_mutex_lock(&j->mu);
    for (int64_t i = 0; i < n; ++i)
        for (job_t *jb = j->jobs; jb != NULL; jb = jb->next)
            if (jb->id == ids[i] && !atomic_load(&jb->finished)) {
                atomic_store(&jb->by_user, 1);
                atomic_store(&jb->cancel, 1);
            }
    pthread_mutex_unlock(&j->mu);
    free(ids);
}

/* The dispatcher: with PostgreSQL it looks every JOBS_POLL_MS (other replicas queue jobs, die,
 * and pass on cancels); with SQLite, where this process is the only one, when woken (a slot
 * freed, a job queued). */
static void *dispatch_main(void *arg)
{
    jobs_t *j = arg;
    app_t *app = j->app;
    while (!atomic_load(&j->stopping)) {
        struct timespec until = monotime_deadline(JOBS_POLL_MS);
        pthread_mutex_lock(&j->mu);
        int timed_out = 0;
        while (!j->kicked && !timed_out && !atomic_load(&j->stopping))
            timed_out = (j->shared ? pthread_cond_timedwait(&j->wake, &j->mu, &until)
                                   : pthread_cond_wait(&j->wake, &j->mu)) == ETIMEDOUT;
        j->kicked = 0;
        pthread_mutex_unlock(&j->mu);
        if (atomic_load(&j->stopping) || atomic_load(&app->replica_id) == 0)
            continue;
        jobs_reap(j);
        cancels_apply(j);
        err_t err = {0};
        int rc = 1;
        while (rc == 1 && !atomic_load(&j->stopping) && slot_reserve(j))
            rc = claim_and_start(j, &err);
        if (rc < 0 && err.code != ERR_UNAVAILABLE)
            log_msg(LOG_LEVEL_WARN, "job queue: %s", err.msg);
    }
    store_thread_end(app->store);
    return NULL;
}

int jobs_submit(jobs_t *j, int64_t model_id, const train_req_t *req, const char *request_json,
                int64_t *job_id, err_t *err)
{
    *job_id = 0;
    jobs_reap(j);
    if (atomic_load(&j->stopping))
        return err_set(err, ERR_UNAVAILABLE, "shutting down: no new jobs");
    int rc = train_req_validate(req, err);
    if (rc < 0)
        return rc;
    store_model_t m;
    if ((rc = store_model_get(j->app->store, model_id, &m, err)) < 0)
        return rc;
    int64_t rows = m.rows;
    store_model_clear(&m);
    if (rows == 0 && (req->steps > 0 || req->epochs > 0))
        return err_set_field(err, ERR_INVAL, req->epochs > 0 ? "epochs" : "steps",
                             "model has no stored rows: POST batches first");
    if (registry_is_training(j->app->registry, model_id))
        return err_set(err, ERR_CONFLICT, "model %" PRId64 " is training: wait for the run to "
                       "end", model_id);
    /* With a free slot here the job is claimed at once (the oldest claimable job, which is
     * this one unless older ones wait); without, it waits in the queue, which --max-queue
     * bounds. */
    /* Until this process has its replica id (the moment after it starts listening) it
     * cannot claim: the job waits for the dispatcher. */
    int have_slot = atomic_load(&j->app->replica_id) > 0 && slot_reserve(j);
    store_t *st = j->app->store;
    store_job_t claimed = {0};
    /* Queued and claimed in one transaction: no other replica's dispatcher can take the job
     * this replica is free to run between the two. */
    if ((rc = store_begin(st, err)) == 0) {
        if ((rc = store_job_enqueue(st, model_id, request_json,
                                    trainer_planned_steps(req, rows), j->app->limits.max_queue,
                                    have_slot, job_id, err)) == 0 &&
            have_slot)
            rc = store_job_claim(st, atomic_load(&j->app->replica_id), j->app->job_lease_ms,
                                 &claimed, err);
        if (rc == 0)
            rc = store_commit(st, err);
        if (rc < 0)
            store_rollback(st);
    }
    if (rc < 0) {
        *job_id = 0;
        store_job_clear(&claimed);
        if (have_slot)
            slot_release(j);
        return rc;
    }
    if (have_slot && (rc = job_start(j, &claimed, err)) < 0)
        log_msg(LOG_LEVEL_WARN, "job %" PRId64 ": %s", claimed.id, err->msg);
    store_job_clear(&claimed);
    if (!have_slot)
        dispatcher_wake(j);
    return 0;
}

int jobs_cancel(jobs_t *j, int64_t job_id, err_t *err)
{
    int found = 0;
    pthread_mutex_lock(&j->mu);
    for (job_t *jb = j->jobs; jb != NULL; jb = jb->next) {
        if (jb->id == job_id && !atomic_load(&jb->finished)) {
            atomic_store(&jb->by_user, 1);
            atomic_store(&jb->cancel, 1);
            found = 1;
        }
    }
    pthread_mutex_unlock(&j->mu);
    /* Not running here: cancelled now if queued, else by the replica running it. */
    return found ? 0
                 : store_job_cancel_request(j->app->store, job_id, j->app->job_lease_ms, err);
}

cJSON *jobs_job_json(const store_job_t *job)
{
    cJSON *o = cJSON_CreateObject(), *p = cJSON_CreateObject();
    if (o == NULL || p == NULL)
        goto fail;
    if (cJSON_AddNumberToObject(o, "id", (double)job->id) == NULL ||
        cJSON_AddNumberToObject(o, "model_id", (double)job->model_id) == NULL ||
        cJSON_AddStringToObject(o, "status", job->status) == NULL ||
        cJSON_AddNumberToObject(p, "step", (double)job->progress_step) == NULL ||
        cJSON_AddNumberToObject(p, "steps", (double)job->progress_steps) == NULL)
        goto fail;
    cJSON *loss = job->has_loss ? codec_number(job->progress_loss) : cJSON_CreateNull();
    if (loss == NULL)
        goto fail;
    cJSON_AddItemToObject(p, "loss", loss);
    cJSON_AddItemToObject(o, "progress", p);
    p = NULL;
    if (job->result_json != NULL) {
        /* The stored text's numbers are exact; cJSON would print some of them 1 ulp off. */
        cJSON *r = cJSON_Parse(job->result_json);
        if (r == NULL || codec_exact_numbers(r) < 0) {
            cJSON_Delete(r);
            goto fail;
        }
        cJSON_AddItemToObject(o, "result", r);
    }
    if (job->error != NULL && cJSON_AddStringToObject(o, "error", job->error) == NULL)
        goto fail;
    /* null while queued: no replica has taken it yet */
    cJSON *replica = job->replica_id > 0 ? cJSON_CreateNumber((double)job->replica_id)
                                         : cJSON_CreateNull();
    if (replica == NULL)
        goto fail;
    cJSON_AddItemToObject(o, "replica", replica);
    if (cJSON_AddStringToObject(o, "created_at", job->created_at) == NULL ||
        cJSON_AddStringToObject(o, "updated_at", job->updated_at) == NULL)
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    cJSON_Delete(p);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

int jobs_new(app_t *app, jobs_t **out, err_t *err)
{
    *out = NULL;
    jobs_t *j = calloc(1, sizeof *j);
    if (j == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for the job pool");
    j->app = app;
    j->shared = strcmp(store_dialect(app->store), "sqlite") != 0;
    j->kicked = 1;             /* at start: jobs queued before this process */
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->sync_done, NULL);
    monotime_cond_init(&j->wake);
    *out = j;
    return 0;
}

int jobs_start(jobs_t *j, err_t *err)
{
    int prc = pthread_create(&j->dispatcher, NULL, dispatch_main, j);
    if (prc != 0)
        return err_set(err, ERR_NOMEM, "cannot start the job dispatcher: %s", strerror(prc));
    j->dispatching = 1;
    return 0;
}

void jobs_shutdown(jobs_t *j)
{
    if (j == NULL)
        return;
    atomic_store(&j->stopping, 1);
    dispatcher_wake(j);
    if (j->dispatching) {
        pthread_join(j->dispatcher, NULL);   /* no claims after this */
        j->dispatching = 0;
    }
    pthread_mutex_lock(&j->mu);
    for (job_t *jb = j->jobs; jb != NULL; jb = jb->next)
        atomic_store(&jb->cancel, 1);
    /* Synchronous runs see app->stopping as their cancel flag: they stop at the next step
     * boundary, commit, answer and leave. Wait for them here, before anything they use (the
     * server they answer through, the store, the registry) goes away. */
    while (j->n_sync > 0)
        pthread_cond_wait(&j->sync_done, &j->mu);
    pthread_mutex_unlock(&j->mu);
    /* Every job thread ends at its next step boundary, its state committed; join them all
     * while the HTTP server (whose streams they publish to) still exists. */
    pthread_mutex_lock(&j->mu);
    job_t *list = j->jobs;
    j->jobs = NULL;
    pthread_mutex_unlock(&j->mu);
    while (list != NULL) {
        job_t *next = list->next;
        pthread_join(list->thread, NULL);
        free(list);
        list = next;
    }
}

void jobs_free(jobs_t *j)
{
    if (j == NULL)
        return;
    jobs_shutdown(j);
    pthread_cond_destroy(&j->wake);
    pthread_cond_destroy(&j->sync_done);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

int jobs_sync_begin(jobs_t *j, err_t *err)
{
    int rc = 0;
    pthread_mutex_lock(&j->mu);
    if (atomic_load(&j->stopping)) {
        rc = err_set(err, ERR_UNAVAILABLE, "shutting down: no new training runs");
    } else if (j->n_sync_slots >= j->app->limits.max_sync_runs) {
        int64_t max = j->app->limits.max_sync_runs;
        rc = err_set(err, ERR_BUSY, "%" PRId64 " synchronous train call%s already running "
                     "(--max-sync-runs): retry later, or train with \"async\":true", max,
                     max == 1 ? " is" : "s are");
    } else {
        j->n_sync++;
        j->n_sync_slots++;
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

void jobs_sync_answered(jobs_t *j)
{
    pthread_mutex_lock(&j->mu);
    j->n_sync_slots--;
    pthread_mutex_unlock(&j->mu);
}

void jobs_sync_end(jobs_t *j)
{
    pthread_mutex_lock(&j->mu);
    j->n_sync--;
    pthread_cond_broadcast(&j->sync_done);
    pthread_mutex_unlock(&j->mu);
}
