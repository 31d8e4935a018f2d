/* server/routes_meta.c -- the daemon about itself: health, metrics, API document, dashboard. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "embedded.h"
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

/* 200 while the database can be written (checked at most once a second), else 503. */
static int meta_healthz(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    err_t db_err = {0};
    int ok = store_ping(app->store, &db_err) == 0;
    cJSON *body = cJSON_CreateObject();
    if (body == NULL || cJSON_AddStringToObject(body, "status", ok ? "ok" : "unavailable") == NULL ||
        cJSON_AddStringToObject(body, "version", app->version) == NULL ||
        cJSON_AddStringToObject(body, "db", ok ? "ok" : "error") == NULL ||
        (!ok && cJSON_AddStringToObject(body, "message", db_err.msg) == NULL)) {
        cJSON_Delete(body);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    return http_reply_json(req, ok ? 200 : 503, body);
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

static int meta_index(http_req_t *req, err_t *err)
{
    const embedded_file_t *f = embedded_find("server/web/index.html");
    if (f == NULL)
        return err_set(err, ERR_NOTFOUND, "this build has no dashboard");
    return http_reply_static(req, 200, "text/html; charset=utf-8", f->data, f->size);
}

const http_route_t routes_meta[] = {
    {"GET", "/healthz", meta_healthz},
    {"GET", "/metrics", meta_metrics},
    {"GET", "/openapi.json", meta_openapi},
    {"GET", "/", meta_index},
    HTTP_ROUTE_END,
};
