/* server/jobs.h -- asynchronous training jobs: a queue in the database.
 *
 * POST /train with "async":true becomes a `queued` row in `jobs`. A replica runs at most
 * --max-jobs at once, one thread each running trainer_run(), and takes queued jobs oldest
 * first; a submission it cannot run at once waits in the queue while fewer than --max-queue
 * wait (else ERR_BUSY: 429). While a model has a job queued or running, writes to it are 409.
 * A job goes queued -> running -> succeeded | failed | cancelled; a divergence is `succeeded`
 * with stopped "diverged"; a cancellation (DELETE /v1/jobs/{id}, through any replica) stops it
 * at the next step boundary with the state committed, status `cancelled` with the partial
 * result. On shutdown running jobs stop the same way: with SQLite they are marked failed
 * "interrupted", like the jobs a crash cut off (store_jobs_mark_interrupted at start-up); with
 * PostgreSQL they go back to the queue, and a job whose replica died is claimed by another,
 * which resumes it from its last commit with the same result (trainer_resume_t). A job's events
 * come from the trainer (events.h).
 *
 *     jobs_t *jobs = NULL;
 *     jobs_new(&app, &jobs, &err);              // app.store and app.registry must be set
 *     app.jobs = jobs;
 *     ...                                       // once app.replica_id is known:
 *     jobs_start(jobs, &err);                   // the dispatcher thread
 *     ...
 *     jobs_shutdown(jobs);                      // stops runs, joins the job threads
 *     http_server_stop(srv);
 *     jobs_free(jobs);
 */
#ifndef ND_JOBS_H
#define ND_JOBS_H

#include <stdint.h>

#include "app.h"
#include "err.h"
#include "train.h"

typedef struct jobs jobs_t;

/* New job pool for `app` (borrowed; app->store, app->registry, app->limits.max_jobs are
 * read). */
int jobs_new(app_t *app, jobs_t **out, err_t *err);

/* Start the dispatcher thread, which claims queued jobs and those of dead replicas, and
 * applies cancels asked through other replicas (every JOBS_POLL_MS). */
int jobs_start(jobs_t *j, err_t *err);

/* Shut down the pool: running jobs stop at their next step boundary (state committed), new
 * submissions get ERR_UNAVAILABLE, every job thread is joined and every synchronous run begun
 * with jobs_sync_begin() is waited for (set app->stopping first: their cancel flag). Call BEFORE
 * http_server_stop(): jobs publish to the server's streams. Idempotent; NULL is a no-op. */
void jobs_shutdown(jobs_t *j);

/* jobs_shutdown() if not yet, then free. NULL is a no-op. */
void jobs_free(jobs_t *j);

/* A synchronous training run (POST /train without async) starts: at most
 * app->limits.max_sync_runs at once (--max-sync-runs), more is ERR_BUSY (429); after
 * jobs_shutdown() began, ERR_UNAVAILABLE. Each successful call needs, from the run's thread,
 * one jobs_sync_answered() just before its answer goes out (its slot is free then, so a client
 * that sends its next call on seeing the answer is never refused for it) and then one
 * jobs_sync_end() after its last use of the server, the store and the registry. */
int jobs_sync_begin(jobs_t *j, err_t *err);
void jobs_sync_answered(jobs_t *j);
void jobs_sync_end(jobs_t *j);

/*
 * Submit an async run of `req` on model `model_id` (request_json is stored with the job).
 * Checks the model exists (ERR_NOTFOUND) and has rows when the request needs them
 * (ERR_INVAL), that it has no job and no run (ERR_CONFLICT), and a free slot here or room in
 * the queue (ERR_BUSY). `*job_id` is the new job, running already when this replica had a slot
 * and no older job waited, else queued.
 */
int jobs_submit(jobs_t *j, int64_t model_id, const train_req_t *req, const char *request_json,
                int64_t *job_id, err_t *err);

/* Ask job `job_id` to stop at its next step boundary, wherever it runs (a queued one is
 * cancelled at once). 0 whether or not it is still running (a finished job is left as it is);
 * ERR_NOTFOUND when no such job exists. */
int jobs_cancel(jobs_t *j, int64_t job_id, err_t *err);

/* The job object (docs/api.md) of a stored job row. New item. */
cJSON *jobs_job_json(const store_job_t *job);

#endif /* ND_JOBS_H */
