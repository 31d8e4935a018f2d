/* server/routes_train.c -- training: POST /v1/models/{id}/train (sync or async) and
 * POST /v1/models/{id}/step (one update on an inline batch). Both go through trainer_run(). */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "codec.h"
#include "http.h"
#include "jobs.h"
#include "log.h"
#include "request.h"
#include "reply.h"
#include "registry.h"
#include "routes.h"
#include "store.h"
#include "trainer.h"

static int reply_job(http_req_t *req, int64_t job_id, err_t *err)
{
    store_job_t job;
    int rc = store_job_get(app_of(req)->store, job_id, &job, err);
    if (rc < 0)
        return rc;
    cJSON *body = jobs_job_json(&job);
    store_job_clear(&job);
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/jobs/%" PRId64, job_id);
    http_set_header(req, "Location", loc);
    return http_reply_json(req, 202, body);
}

static int reply_result(http_req_t *req, int64_t id, const train_result_t *res)
{
    return http_reply_json(req, 200, codec_train_result_encode(id, res));
}

/* A synchronous run on its own thread: a run may take minutes, and a server thread blocked
 * that long would stall every other connection it serves. */
typedef struct sync_run {
    http_req_t *req;
    app_t *app;
    trainer_opts_t o;
} sync_run_t;

static void *sync_run_main(void *arg)
{
    sync_run_t *sr = arg;
    app_t *app = sr->app;
    int64_t id = sr->o.model_id;
    err_t err = {0};
    train_result_t res;
    int rc = trainer_run(app, &sr->o, &res, &err);
    if (rc == ERR_CONFLICT && res.steps_run > 0) {
        /* Fenced: another replica took the model over, so what this run committed is not
         * what the model now is, and a result would misstate its step. 409, saying how far
         * this run got. */
        size_t used = strlen(err.msg);
        snprintf(err.msg + used, sizeof err.msg - used, "; this call committed %" PRId64
                 " steps before, up to step %" PRId64, res.steps_run, res.step);
    } else if (rc < 0 && res.steps_run > 0) {
        /* Steps were committed before the run had to stop: an error would tell the client
         * that nothing happened, and its retry would train them twice. Answer what the model
         * now is (stopped "cancelled"); the log keeps the reason. */
        log_msg(LOG_LEVEL_WARN, "model %" PRId64 ": train call stopped after %" PRId64
                " committed steps: %s", id, res.steps_run, err.msg);
        rc = 0;
    }
    if (rc == 0 && (rc = reply_result(sr->req, id, &res)) < 0)
        err_set(&err, rc, "out of memory encoding the train result");
    if (rc < 0)
        http_reply_error(sr->req, &err);
    store_thread_end(app->store);          /* this thread's connection: one per run otherwise */
    jobs_sync_answered(app->jobs);
    http_resume(sr->req);                  /* sr->req belongs to the server from here on */
    free(sr);
    jobs_sync_end(app->jobs);              /* last: shutdown may free everything after it */
    return NULL;
}

/* What the model must allow of a call on `rows` stored rows (`val_rows` for validation): the
 * checks its run makes before its first step, made again here so that an async call the run
 * would refuse is that 400 now, not a 202 and a failed job. */
static int check_model(app_t *app, int64_t id, const train_req_t *req, int64_t rows,
                       int64_t val_rows, err_t *err)
{
    model_t *m = NULL;
    int rc = registry_read_begin(app->registry, id, &m, err);
    if (rc < 0)
        return rc;
    rc = train_req_check_method(req, rows, model_spec(m)->optimizer.method, err);
    if (rc == 0 && rows > 0 && rows <= INT32_MAX)
        rc = request_check_train_work(&app->limits, m, (int32_t)rows, req->batch_size > 0, err);
    if (rc == 0 && val_rows > 0 && val_rows <= INT32_MAX)
        rc = request_check_work(&app->limits, m, (int32_t)val_rows, "split", err);
    registry_read_end(app->registry, id);
    return rc;
}

/* What the stored model must allow, checked before anything runs or is queued, so a job that
 * could never run is a 400, not a 202: the steps a call implies (epochs over the rows stored
 * now, the model's step), validation rows for early stopping to watch, and check_model(). */
static int check_request(app_t *app, int64_t id, const train_req_t *req, err_t *err)
{
    store_model_t row;
    int rc = store_model_get(app->store, id, &row, err);
    if (rc < 0)
        return rc;
    int64_t steps = 0;
    rc = train_req_steps(req, row.rows, row.step, &steps, err);
    if (rc == 0 && req->patience > 0 && row.validation_rows == 0)
        rc = err_set_field(err, ERR_INVAL, "early_stopping",
                           "early_stopping needs validation rows: POST batches with "
                           "?split=validation first");
    if (rc == 0)
        rc = check_model(app, id, req, row.rows, row.validation_rows, err);
    store_model_clear(&row);
    return rc;
}

/* POST /v1/models/{id}/train: a train request (docs/api.md); an empty body is the defaults. */
static int train_post(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    cJSON *body = NULL;
    int rc = request_body_json(req, 1, &body, err);
    if (rc < 0)
        return rc;
    trainer_opts_t o = {.model_id = id, .lock = TRAINER_LOCK_TRAINING, .set_status = 1,
                        .cancel = &app->stopping};
    int async = 0;
    rc = codec_train_req_decode(body, &o.req, &async, err);
    if (rc == 0)
        rc = train_req_validate(&o.req, err);
    if (rc == 0)
        rc = check_request(app, id, &o.req, err);
    if (rc < 0) {
        cJSON_Delete(body);
        return rc;
    }
    if (async) {
        /* The job runs from this text, on any replica: its numbers must be the request's. */
        char *text = codec_exact_numbers(body) == 0 ? cJSON_PrintUnformatted(body) : NULL;
        cJSON_Delete(body);
        if (text == NULL)
            return err_set(err, ERR_NOMEM, "out of memory");
        int64_t job_id = 0;
        rc = jobs_submit(app->jobs, id, &o.req, text, &job_id, err);
        free(text);
        if (rc < 0)
            return rc;
        return reply_job(req, job_id, err);
    }
    cJSON_Delete(body);
    /* One thread per call, so they are counted: 250 calls at once must not make 250 threads. */
    if ((rc = jobs_sync_begin(app->jobs, err)) < 0)
        return rc;
    sync_run_t *sr = malloc(sizeof *sr);
    if (sr == NULL) {
        jobs_sync_answered(app->jobs);
        jobs_sync_end(app->jobs);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    *sr = (sync_run_t){.req = req, .app = app, .o = o};
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    http_defer(req);
    int prc = pthread_create(&t, &attr, sync_run_main, sr);
    pthread_attr_destroy(&attr);
    if (prc != 0) {
        free(sr);
        jobs_sync_answered(app->jobs);
        jobs_sync_end(app->jobs);
        return err_set(err, ERR_UNAVAILABLE, "cannot start a training thread: %s",
                       strerror(prc));
    }
    return 0;
}

/* POST /v1/models/{id}/step: {"x","y","learning_rate"?}: one update on this batch, which is
 * not stored. The model's history gets the row and its "loss" becomes the batch's loss. */
static int step_post(http_req_t *req, err_t *err)
{
    static const char *const fields[] = {"x", "y", "learning_rate", NULL};
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    cJSON *body = NULL;
    codec_batch_t b = {0};
    int rc = request_body_json(req, 0, &body, err);
    if (rc < 0)
        return rc;
    if ((rc = codec_check_fields(body, "", fields, err)) < 0)
        goto out;
    trainer_opts_t o = {.model_id = id, .lock = TRAINER_LOCK_SHORT,
                        .cancel = &app->stopping};
    train_req_default(&o.req);
    o.req.steps = 1;
    o.req.history_every = 1;
    const cJSON *lr = cJSON_GetObjectItemCaseSensitive(body, "learning_rate");
    if (lr != NULL && !cJSON_IsNull(lr)) {
        o.req.learning_rate = cJSON_GetNumberValue(lr);
        if (!cJSON_IsNumber(lr) || !isfinite(o.req.learning_rate) || o.req.learning_rate <= 0) {
            rc = err_set_field(err, ERR_INVAL, "learning_rate",
                               "learning_rate must be a finite number > 0");
            goto out;
        }
    }
    /* The model's shape decides how x and y are read. */
    model_t *m = NULL;
    if ((rc = registry_read_begin(app->registry, id, &m, err)) < 0)
        goto out;
    int32_t n_x = model_n_x(m), n_y = model_n_y(m);
    registry_read_end(app->registry, id);
    if ((rc = request_batch_decode(req, body, n_x, n_y, 1, &b, err)) < 0)
        goto out;
    batch_t batch = {.rows = b.rows, .n_x = b.n_x, .n_y = b.n_y, .x = b.x, .y = b.y};
    o.batch = &batch;
    train_result_t res;
    if ((rc = trainer_run(app, &o, &res, err)) < 0)
        goto out;
    rc = reply_result(req, id, &res);
out:
    codec_batch_free(&b);
    cJSON_Delete(body);
    return rc;
}

const http_route_t routes_train[] = {
    {"POST", "/v1/models/{id}/train", train_post, NULL, 0},
    {"POST", "/v1/models/{id}/step", step_post, NULL, 0},
    HTTP_ROUTE_END,
};
