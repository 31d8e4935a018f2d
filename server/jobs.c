/* server/jobs.c -- async training jobs: one thread each, at most --max-jobs.
 *
 * A job owns the model's TRAINING lock from submission to its end, so the lock is taken on the
 * request's thread and released on the job's: the registry's lock is a state, not a mutex.
 * Finished job threads are joined by the next submission, or at the latest by jobs_shutdown().
 */
#include "jobs.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "store.h"
#include "trainer.h"

#define JOBS_RECORD_RETRY_MS 200    /* recording a job's end while the storage is unavailable */

typedef struct job {
    jobs_t *owner;
    int64_t id, model_id;
    train_req_t req;
    atomic_int cancel;         /* read by train_run between steps */
    atomic_int by_user;        /* the cancel came from DELETE /v1/jobs/{id} */
    atomic_int finished;       /* the thread is done with everything but returning */
    pthread_t thread;
    struct job *next;
} job_t;

struct jobs {
    app_t *app;
    pthread_mutex_t mu;        /* guards jobs, n_active, n_sync, n_sync_slots */
    pthread_cond_t sync_done;  /* signalled when n_sync drops, for jobs_shutdown() */
    job_t *jobs;
    int64_t n_active;
    int64_t n_sync;            /* synchronous runs between jobs_sync_begin() and _end() */
    int64_t n_sync_slots;      /* those of them not yet answered: what --max-sync-runs caps */
    atomic_int stopping;
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

static char *result_text(int64_t model_id, const train_result_t *res)
{
    cJSON *o = codec_train_result_encode(model_id, res);
    char *text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return text;
}

/* The status and error a job ends with, given its run's result. */
static const char *job_end_status(const job_t *jb, const train_result_t *res, const char **error)
{
    *error = NULL;
    if (res->stopped != TRAIN_STOP_CANCELLED)
        return "succeeded";
    if (atomic_load(&jb->by_user))
        return "cancelled";
    *error = "interrupted";    /* stopped by the daemon's shutdown */
    return "failed";
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
    int rc = store_job_set_status(jb->owner->app->store, jb->id, status, result, error, err);
    free(result);
    return rc;
}

/* trainer_opts_t.on_end: the run is over and has released the model. A run that succeeded
 * recorded the job's end in its final commit; a failed one records it now (before the trainer
 * publishes `done`, so a client that saw it reads the job's final status), with what it had
 * committed (steps_run > 0) beside the reason. */
static void job_end(void *ctx, int rc, const train_result_t *res, const err_t *err)
{
    job_t *jb = ctx;
    jobs_t *j = jb->owner;
    app_t *app = j->app;
    const char *error = NULL;
    const char *status = job_end_status(jb, res, &error);
    if (rc < 0) {
        status = "failed";
        error = err->msg[0] != '\0' ? err->msg : err_str(rc);
    }
    log_msg(rc < 0 ? LOG_LEVEL_WARN : LOG_LEVEL_INFO,
            "job %" PRId64 " (model %" PRId64 ") %s: %" PRId64 " steps%s%s", jb->id,
            jb->model_id, status, res->steps_run, error != NULL ? ": " : "",
            error != NULL ? error : "");
    if (rc == 0)
        return;
    char *result = res->steps_run > 0 ? result_text(jb->model_id, res) : NULL;
    /* Often the storage trouble that ended the run (disk full, read-only, locked) also stops
     * the job's end from being recorded: try again until the storage is back, or until
     * shutdown (the next start then marks the job interrupted). */
    err_t serr = {0};
    for (int tries = 0;; ++tries) {
        if (store_job_set_status(app->store, jb->id, status, result, error, &serr) == 0)
            break;
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
    err_t err = {0};
    if (store_job_start(app->store, jb->id, app->replica_id, &err) < 0)
        log_msg(LOG_LEVEL_WARN, "job %" PRId64 ": cannot mark running: %s", jb->id, err.msg);

    trainer_opts_t o = {.model_id = jb->model_id, .req = jb->req, .job_id = jb->id,
                        .cancel = &jb->cancel, .lock = TRAINER_LOCK_HELD, .set_status = 1,
                        .record_end = job_record_end, .on_end = job_end, .end_ctx = jb};
    train_result_t res;
    err = (err_t){0};
    trainer_run(app, &o, &res, &err);
    metrics_active_jobs_add(-1);
    store_thread_end(app->store);           /* this thread's connection: one per job otherwise */
    pthread_mutex_lock(&j->mu);
    j->n_active--;
    pthread_mutex_unlock(&j->mu);
    atomic_store(&jb->finished, 1);
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

    pthread_mutex_lock(&j->mu);
    if (j->n_active >= j->app->limits.max_jobs) {
        int64_t max = j->app->limits.max_jobs;
        pthread_mutex_unlock(&j->mu);
        return err_set(err, ERR_BUSY, "%" PRId64 " async job%s already running (--max-jobs): "
                       "wait for one to finish", max, max == 1 ? " is" : "s are");
    }
    j->n_active++;
    pthread_mutex_unlock(&j->mu);

    job_t *jb = NULL;
    int locked = 0;
    if ((rc = registry_write_begin(j->app->registry, model_id, REGISTRY_TRAINING, err)) < 0)
        goto fail;
    locked = 1;
    if ((rc = store_job_insert(j->app->store, model_id, request_json,
                               trainer_planned_steps(req, rows), job_id, err)) < 0)
        goto fail;
    registry_set_job(j->app->registry, model_id, *job_id);
    if ((jb = calloc(1, sizeof *jb)) == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory for a job");
        goto fail;
    }
    jb->owner = j;
    jb->id = *job_id;
    jb->model_id = model_id;
    jb->req = *req;
    metrics_active_jobs_add(1);
    /* Checked again under the lock: jobs_shutdown() joins exactly the threads listed. */
    pthread_mutex_lock(&j->mu);
    int prc = atomic_load(&j->stopping) ? ESHUTDOWN : pthread_create(&jb->thread, NULL, job_main, jb);
    if (prc == 0) {
        jb->next = j->jobs;
        j->jobs = jb;
    }
    pthread_mutex_unlock(&j->mu);
    if (prc != 0) {
        metrics_active_jobs_add(-1);
        free(jb);
        rc = err_set(err, ERR_UNAVAILABLE, "cannot start a job: %s",
                     prc == ESHUTDOWN ? "shutting down" : strerror(prc));
        goto fail;
    }
    return 0;

fail:
    if (*job_id > 0) {
        err_t serr = {0};
        store_job_set_status(j->app->store, *job_id, "failed", NULL, err->msg, &serr);
        *job_id = 0;
    }
    if (locked)
        registry_write_end(j->app->registry, model_id);
    pthread_mutex_lock(&j->mu);
    j->n_active--;
    pthread_mutex_unlock(&j->mu);
    return rc;
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
    if (found)
        return 0;
    store_job_t row;
    int rc = store_job_get(j->app->store, job_id, &row, err);
    store_job_clear(&row);
    return rc;
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
        cJSON *r = cJSON_Parse(job->result_json);
        if (r == NULL)
            goto fail;
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
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->sync_done, NULL);
    *out = j;
    return 0;
}

void jobs_shutdown(jobs_t *j)
{
    if (j == NULL)
        return;
    pthread_mutex_lock(&j->mu);
    atomic_store(&j->stopping, 1);
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
