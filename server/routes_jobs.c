/* server/routes_jobs.c -- async jobs (GET/DELETE /v1/jobs/{id}, GET /v1/jobs) and a model's
 * event stream (GET /v1/models/{id}/events). */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <string.h>

#include "app.h"
#include "http.h"
#include "events.h"
#include "jobs.h"
#include "reply.h"
#include "routes.h"
#include "store.h"

#define JOBS_LIST_DEFAULT 100
#define JOBS_LIST_MAX 1000

static int job_reply(http_req_t *req, int status, int64_t job_id, err_t *err)
{
    store_job_t job;
    int rc = store_job_get(app_of(req)->store, job_id, &job, err);
    if (rc < 0)
        return rc;
    cJSON *body = jobs_job_json(&job);
    store_job_clear(&job);
    return http_reply_json(req, status, body);
}

static int job_get(http_req_t *req, err_t *err)
{
    return job_reply(req, 200, http_param(req, 0), err);
}

/* 202 with the job as it is now: a running job stops at its next step boundary (its status
 * becomes "cancelled" shortly after); a finished job is left unchanged (a no-op, still 202). */
static int job_delete(http_req_t *req, err_t *err)
{
    int64_t job_id = http_param(req, 0);
    int rc = jobs_cancel(app_of(req)->jobs, job_id, err);
    if (rc < 0)
        return rc;
    return job_reply(req, 202, job_id, err);
}

static int status_valid(const char *s)
{
    static const char *const names[] = {"queued", "running", "succeeded", "failed", "cancelled",
                                        NULL};
    for (const char *const *n = names; *n != NULL; ++n)
        if (strcmp(*n, s) == 0)
            return 1;
    return 0;
}

/* GET /v1/jobs?model_id=&status=&limit=&after= -> {"jobs":[...], "next": id or null}. */
static int jobs_list(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t model_id = 0, limit = 0, after = 0, n = 0, next = 0;
    int rc;
    if ((rc = http_query_int64(req, "model_id", 0, 1, INT64_MAX, &model_id, err)) < 0 ||
        (rc = http_query_int64(req, "limit", JOBS_LIST_DEFAULT, 1, JOBS_LIST_MAX, &limit,
                               err)) < 0 ||
        (rc = http_query_int64(req, "after", 0, 0, INT64_MAX, &after, err)) < 0)
        return rc;
    const char *status = http_query(req, "status");
    if (status != NULL && !status_valid(status))
        return err_set_field(err, ERR_INVAL, "status", "status must be one of queued, running, "
                             "succeeded, failed, cancelled");
    store_job_t *rows = NULL;
    if ((rc = store_job_list(app->store, model_id, status, limit, after, &rows, &n, &next,
                             err)) < 0)
        return rc;
    cJSON *body = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(body, "jobs");
    for (int64_t i = 0; list != NULL && i < n; ++i) {
        cJSON *o = jobs_job_json(&rows[i]);
        if (o == NULL) {
            list = NULL;
            break;
        }
        cJSON_AddItemToArray(list, o);
    }
    store_job_list_free(rows, n);
    cJSON *jnext = next > 0 ? reply_id(next) : cJSON_CreateNull();
    if (list == NULL || !cJSON_AddItemToObject(body, "next", jnext)) {
        cJSON_Delete(jnext);
        cJSON_Delete(body);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    return http_reply_json(req, 200, body);
}

/* GET /v1/models/{id}/events: text/event-stream until the client leaves. */
static int events_get(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    int64_t version = 0;
    int rc = store_model_version(app->store, id, &version, err);
    if (rc < 0 || (rc = events_subscribe(app->events, req, id, err)) < 0)
        return rc;
    /* A DELETE between the check and the subscription found no stream to end: look again,
     * now that a deletion would find this one. */
    err_t gone = {0};
    if (store_model_version(app->store, id, &version, &gone) == ERR_NOTFOUND)
        events_model_deleted(app->events, id);
    return 0;
}

const http_route_t routes_jobs[] = {
    {"GET", "/v1/jobs", jobs_list, "model_id,status,limit,after", 0},
    {"GET", "/v1/jobs/{id}", job_get, NULL, 0},
    {"DELETE", "/v1/jobs/{id}", job_delete, NULL, 0},
    {"GET", "/v1/models/{id}/events", events_get, NULL, HTTP_ROUTE_NO_HEAD},
    HTTP_ROUTE_END,
};
