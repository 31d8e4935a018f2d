/* server/app.h -- what every route handler can reach: the daemon's shared state.
 *
 * main.c fills one app_t before the server starts and hands it to http as the handler context:
 *
 *     app_t *app = app_of(req);
 *     store_model_get(app->store, http_param(req, 0), &m, err);
 *
 * Fields are set once at start-up and read-only afterwards (modules that need mutable state,
 * like the job pool, keep it behind their own handle and lock), but for `stopping`.
 */
#ifndef ND_APP_H
#define ND_APP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "datacache.h"
#include "http.h"
#include "registry.h"
#include "store.h"

/* Resource limits, each set by a flag (docs/security.md lists them with their defaults). A
 * request over a data limit is 400 invalid_argument naming the field and the flag; over
 * max_body 413; over max_jobs or max_sync_runs 429. */
typedef struct app_limits {
    size_t max_body;         /* --max-body: request body, bytes */
    int64_t max_batch_rows;  /* --max-batch-rows: rows in one batch or inline x */
    int64_t max_model_rows;  /* --max-model-rows: stored rows per model */
    int64_t max_params;      /* --max-params: parameters per model; graph eval tensor elements */
    int64_t max_work_values; /* --max-work-values: rows x per-row working values of one
                                evaluation (predict, loss, a training step) */
    int32_t max_layers;      /* --max-layers: hidden layers (<= MODEL_MAX_LAYERS) */
    int32_t max_units;       /* --max-units: inputs, outputs, classes, units per layer */
    int32_t max_graph_nodes; /* --max-graph-nodes: nodes of a graph model or graph eval */
    int32_t max_depth;       /* --max-depth: JSON nesting depth of request bodies */
    int64_t max_jobs;        /* --max-jobs: concurrent async training jobs of this replica */
    int64_t max_queue;       /* --max-queue: jobs waiting, cluster-wide */
    int64_t max_sync_runs;   /* --max-sync-runs: concurrent synchronous train calls */
} app_limits_t;

typedef struct app {
    store_t *store;          /* borrowed by handlers; thread-safe (one connection per thread) */
    registry_t *registry;    /* live models: read cache and per-model write locks */
    const char *version;     /* NEUROND_VERSION */
    app_limits_t limits;     /* read-only after start */
    int64_t threads;         /* --threads */
    _Atomic int64_t replica_id; /* this process's row in `replicas` (replica.h); set once,
                                   right after the server starts (0 until then) */
    int64_t job_lease_ms;    /* --job-lease: a replica whose heartbeat is older is dead */
    struct jobs *jobs;       /* async training jobs (jobs.h) */
    struct events *events;   /* the per-model event hub behind the SSE streams (events.h) */
    struct relay *relay;     /* runs on other replicas to that hub, and ours to them (relay.h);
                                NULL on SQLite */
    atomic_int stopping;     /* set once when shutdown begins: synchronous runs (POST /train,
                                /step) stop at their next step boundary, committed */
    datacache_t *data_cache; /* stored rows kept between train calls (datacache.h) */
    struct sessions *sessions; /* training state kept between train calls (sessions.h) */
    struct health *health;   /* the database check behind /healthz (health.h) */
} app_t;

/* The app_t of the server handling `req`. Borrowed. */
static inline app_t *app_of(const http_req_t *req)
{
    return (app_t *)http_ctx(req);
}

#endif /* ND_APP_H */
