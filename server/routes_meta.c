/* server/routes_meta.c -- the daemon about itself: health, metrics, API document, dashboard. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "embedded.h"
#include "health.h"
#include "http.h"
#include "metrics.h"
#include "routes.h"
#include "store.h"

static const embedded_file_t *embedded_find(const char *path)
{
    for (const embedded_file_t *f = embedded_files; f->path != NULL; ++f)
        if (strcmp(f->path, path) == 0)
            return f;
    return NULL;
}

/*
 * GET /healthz: the last database check's result (health.h), which never waits for a check. A
 * check that has not answered within a second (a hung database server, a stalled disk) makes
 * the probes answer 503 until it does: the previous result no longer says anything, and a load
 * balancer must take the replica out. The 200 body is printed once and sent without a copy,
 * for as long as the replica keeps the id it shows.
 */
static struct {
    pthread_mutex_t mu;                  /* building ok_body */
    char *ok_body;                       /* {"status":"ok",...}; kept for the process's life */
    _Atomic size_t ok_len;               /* 0 until ok_body is set */
    _Atomic int64_t ok_replica;          /* the replica id ok_body shows */
} ok_reply = {.mu = PTHREAD_MUTEX_INITIALIZER};

static cJSON *health_body(const app_t *app, int64_t replica_id, int ok, const char *msg)
{
    cJSON *body = cJSON_CreateObject();
    if (body == NULL || cJSON_AddStringToObject(body, "status", ok ? "ok" : "unavailable") == NULL ||
        cJSON_AddStringToObject(body, "version", app->version) == NULL ||
        cJSON_AddStringToObject(body, "db", ok ? "ok" : "error") == NULL ||
        cJSON_AddNumberToObject(body, "replica", (double)replica_id) == NULL ||
        (!ok && cJSON_AddStringToObject(body, "message", msg) == NULL)) {
        cJSON_Delete(body);
        return NULL;
    }
    return body;
}

static int meta_healthz(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    health_report_t hr;
    health_read(app->health, &hr);
    if (hr.waiting_ns >= HEALTH_TTL_NS)
        snprintf(hr.msg, sizeof hr.msg, "the database has not answered a check for %.1f s",
                 (double)hr.waiting_ns / 1e9);
    if (hr.ok && hr.waiting_ns < HEALTH_TTL_NS) {
        size_t len = atomic_load(&ok_reply.ok_len);
        if (len == 0) {
            pthread_mutex_lock(&ok_reply.mu);
            /* Not before the replica is registered: the body would keep replica 0. */
            if (ok_reply.ok_body == NULL && atomic_load(&app->replica_id) > 0) {
                int64_t replica_id = atomic_load(&app->replica_id);
                cJSON *body = health_body(app, replica_id, 1, NULL);
                ok_reply.ok_body = body != NULL ? cJSON_PrintUnformatted(body) : NULL;
                cJSON_Delete(body);
                atomic_store(&ok_reply.ok_replica, replica_id);
                if (ok_reply.ok_body != NULL)
                    atomic_store(&ok_reply.ok_len, strlen(ok_reply.ok_body));
            }
            len = atomic_load(&ok_reply.ok_len);
            pthread_mutex_unlock(&ok_reply.mu);
            if (len == 0 && atomic_load(&app->replica_id) > 0)
                return err_set(err, ERR_NOMEM, "out of memory");
        }
        /* A replica taken for dead registers again under a new id (replica.h): from then on the
         * printed body, which answers may still be sending, is out of date. */
        int64_t replica_id = atomic_load(&app->replica_id);
        if (len == 0 || atomic_load(&ok_reply.ok_replica) != replica_id) {
            cJSON *body = health_body(app, replica_id, 1, NULL);
            if (body == NULL)
                return err_set(err, ERR_NOMEM, "out of memory");
            return http_reply_json(req, 200, body);
        }
        return http_reply_static(req, 200, "application/json; charset=utf-8", ok_reply.ok_body,
                                 len);
    }
    cJSON *body = health_body(app, atomic_load(&app->replica_id), 0, hr.msg);
    if (body == NULL)
        return err_set(err, ERR_NOMEM, "out of memory");
    return http_reply_json(req, 503, body);
}

/* One replica as GET /v1/cluster shows it. */
static cJSON *replica_json(const store_replica_t *r)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL || cJSON_AddNumberToObject(o, "id", (double)r->id) == NULL ||
        cJSON_AddStringToObject(o, "address", r->address) == NULL ||
        cJSON_AddStringToObject(o, "version", r->version) == NULL ||
        cJSON_AddStringToObject(o, "started_at", r->started_at) == NULL ||
        cJSON_AddStringToObject(o, "heartbeat_at", r->heartbeat_at) == NULL ||
        cJSON_AddNumberToObject(o, "jobs_running", (double)r->jobs_running) == NULL) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* GET /v1/cluster: the live replicas (heartbeat younger than --job-lease), by id. */
static int meta_cluster(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    store_replica_t *rows = NULL;
    int64_t n = 0;
    int rc = store_replica_list(app->store, app->job_lease_ms, &rows, &n, err);
    if (rc < 0)
        return rc;
    cJSON *body = cJSON_CreateObject(), *list = cJSON_CreateArray();
    int ok = body != NULL && list != NULL &&
             cJSON_AddStringToObject(body, "database", store_dialect(app->store)) != NULL;
    for (int64_t i = 0; ok && i < n; ++i) {
        cJSON *r = replica_json(&rows[i]);
        ok = r != NULL;
        if (ok)
            cJSON_AddItemToArray(list, r);
    }
    free(rows);
    if (!ok) {
        cJSON_Delete(body);
        cJSON_Delete(list);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    cJSON_AddItemToObject(body, "replicas", list);
    return http_reply_json(req, 200, body);
}

static int meta_metrics(http_req_t *req, err_t *err)
{
    char *text = NULL;
    size_t len = 0;
    if (metrics_render(&text, &len) < 0)
        return err_set(err, ERR_NOMEM, "out of memory rendering metrics");
    int rc = http_reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    return rc;
}

static int meta_openapi(http_req_t *req, err_t *err)
{
    const embedded_file_t *f = embedded_find("docs/openapi.json");
    if (f == NULL)
        return err_set(err, ERR_NOTFOUND, "this build has no OpenAPI document");
    return http_reply_static(req, 200, "application/json; charset=utf-8", f->data, f->size);
}

/* ---- the dashboard ------------------------------------------------------------------------ */

/* The dashboard's files (server/web/), compiled into the binary. */
static const struct web_asset {
    const char *url;
    const char *file;
    const char *type;
} web_assets[] = {
    {"/", "server/web/index.html", "text/html; charset=utf-8"},
    {"/app.js", "server/web/app.js", "text/javascript; charset=utf-8"},
    {"/style.css", "server/web/style.css", "text/css; charset=utf-8"},
};

/* The page loads nothing from elsewhere and runs no inline script or style. */
#define WEB_CSP                                                                                 \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "          \
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* Does an If-None-Match value ("a", W/"b", or *) name `etag`? */
static int etag_matches(const char *header, const char *etag)
{
    size_t n = strlen(etag);
    for (const char *p = header; *p != '\0';) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            ++p;
        if (*p == '*')
            return 1;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, etag, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
            return 1;
        while (*p != '\0' && *p != ',')
            ++p;
    }
    return 0;
}

/*
 * GET /, /app.js, /style.css. The ETag is a hash of the content, and "no-cache" makes a browser
 * revalidate every time: a cheap 304 while the binary is the same, the new file after an upgrade.
 */
static int meta_web(http_req_t *req, err_t *err)
{
    const struct web_asset *a = NULL;
    for (size_t i = 0; i < sizeof web_assets / sizeof web_assets[0] && a == NULL; ++i)
        if (strcmp(web_assets[i].url, http_path(req)) == 0)
            a = &web_assets[i];
    const embedded_file_t *f = a != NULL ? embedded_find(a->file) : NULL;
    if (f == NULL)
        return err_set(err, ERR_NOTFOUND, "this build has no dashboard file %s", http_path(req));
    uint64_t h = UINT64_C(1469598103934665603);     /* FNV-1a */
    for (size_t i = 0; i < f->size; ++i)
        h = (h ^ f->data[i]) * UINT64_C(1099511628211);
    char etag[24];
    snprintf(etag, sizeof etag, "\"%016" PRIx64 "\"", h);
    if (http_set_header(req, "ETag", etag) < 0 ||
        http_set_header(req, "Cache-Control", "no-cache") < 0 ||
        http_set_header(req, "X-Content-Type-Options", "nosniff") < 0 ||
        http_set_header(req, "Referrer-Policy", "no-referrer") < 0 ||
        (strcmp(a->url, "/") == 0 && http_set_header(req, "Content-Security-Policy", WEB_CSP) < 0))
        return err_set(err, ERR_NOMEM, "out of memory");
    const char *inm = http_header(req, "If-None-Match");
    if (inm != NULL && etag_matches(inm, etag))
        return http_reply_empty(req, 304);
    return http_reply_static(req, 200, a->type, f->data, f->size);
}

const http_route_t routes_meta[] = {
    {"GET", "/healthz", meta_healthz, NULL, 0},
    {"GET", "/metrics", meta_metrics, NULL, 0},
    {"GET", "/v1/cluster", meta_cluster, NULL, 0},
    {"GET", "/openapi.json", meta_openapi, NULL, 0},
    {"GET", "/", meta_web, NULL, 0},
    {"GET", "/app.js", meta_web, NULL, 0},
    {"GET", "/style.css", meta_web, NULL, 0},
    HTTP_ROUTE_END,
};
