/* server/app.h -- what every route handler can reach: the daemon's shared state.
 *
 * main.c fills one app_t before the server starts and hands it to http as the handler context:
 *
 *     app_t *app = app_of(req);
 *     store_model_get(app->store, http_param(req, 0), &m, err);
 *
 * Fields are set once at start-up and read-only afterwards (modules that need mutable state,
 * like the job pool, keep it behind their own handle and lock).
 */
#ifndef ND_APP_H
#define ND_APP_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "registry.h"
#include "store.h"

typedef struct app {
    store_t *store;          /* borrowed by handlers; thread-safe (one connection per thread) */
    registry_t *registry;    /* live models: read cache and per-model write locks */
    const char *version;     /* NEUROND_VERSION */
    size_t max_body;         /* --max-body, bytes */
    int64_t max_jobs;        /* --max-jobs */
    int64_t threads;         /* --threads */
    struct jobs *jobs;       /* async training jobs and the per-model event hub (jobs.h) */
} app_t;

/* The app_t of the server handling `req`. Borrowed. */
static inline app_t *app_of(const http_req_t *req)
{
    return (app_t *)http_ctx(req);
}

#endif /* ND_APP_H */
