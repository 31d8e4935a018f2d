/* server/routes_models.c -- models as a resource: create, list, read, delete, parameters, fork,
 * checkpoints and restore, export and import.
 *
 * Choices where the contract is silent (docs/api.md "Choices where the contract is silent"):
 *  - the stored "spec" is the resolved spec without "name" (the name is the model's, and fork
 *    and import may change it) and without initial "parameters" (they are the parameters);
 *  - PUT /parameters keeps the step, zeroes the optimizer state (its moments belonged to the
 *    old parameters) and sets the model's loss to null; it answers like GET /parameters;
 *  - restore sets loss to null as well (a checkpoint does not record one);
 *  - fork copies batches and history instead of sharing them, so either model can be deleted.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "codec.h"
#include "events.h"
#include "export_onnx.h"
#include "http.h"
#include "graph.h"
#include "jsonstream.h"
#include "model.h"
#include "optim.h"
#include "request.h"
#include "reply.h"
#include "registry.h"
#include "relay.h"
#include "sessions.h"
#include "routes.h"
#include "store.h"

#define MODELS_LIST_DEFAULT 50
#define MODELS_LIST_MAX 1000
#define EXPORT_FORMAT CODEC_EXPORT_FORMAT
#define EXPORT_VERSION CODEC_EXPORT_VERSION
#define ID_MAX 9007199254740991LL   /* 2^53 - 1: every integer a JSON number holds exactly */

static int nomem(err_t *err)
{
    return err_set(err, ERR_NOMEM, "out of memory");
}

/* Answer `status` with the model object of `id` as stored now (and a Location when 201). */
static int reply_model(http_req_t *req, int64_t id, int status, err_t *err)
{
    store_model_t row;
    int rc = store_model_get(app_of(req)->store, id, &row, err);
    if (rc < 0)
        return rc;
    cJSON *body = reply_model_object(&row, app_of(req)->registry);
    store_model_clear(&row);
    if (body == NULL)
        return nomem(err);
    if (status == 201) {
        char loc[64];
        snprintf(loc, sizeof loc, "/v1/models/%" PRId64, id);
        if (http_set_header(req, "Location", loc) < 0) {
            cJSON_Delete(body);
            return nomem(err);
        }
    }
    return http_reply_json(req, status, body);
}

/* One size of a spec within --max-units (0 = unset, resolved later). */
static int check_units(int64_t v, const char *field, int32_t max, err_t *err)
{
    if (v > max)
        return err_set_field(err, ERR_INVAL, field, "%s=%lld is more than --max-units=%d", field,
                             (long long)v, (int)max);
    return 0;
}

/* The spec's sizes against the daemon's limits: hidden layers, units, graph nodes. Run before
 * and after model_spec_resolve() (which derives a graph model's inputs and outputs). */
static int check_spec_limits(const app_limits_t *lim, const model_spec_t *spec, err_t *err)
{
    int rc;
    if (spec->n_hidden > lim->max_layers)
        return err_set_field(err, ERR_INVAL, "hidden",
                             "hidden has %d layers, more than --max-layers=%d",
                             (int)spec->n_hidden, (int)lim->max_layers);
    if (spec->graph.n_node > lim->max_graph_nodes)
        return err_set_field(err, ERR_INVAL, "graph.nodes",
                             "graph.nodes has %d nodes, more than --max-graph-nodes=%d",
                             (int)spec->graph.n_node, (int)lim->max_graph_nodes);
    if ((rc = check_units(spec->inputs, "inputs", lim->max_units, err)) < 0 ||
        (rc = check_units(spec->outputs, "outputs", lim->max_units, err)) < 0 ||
        (rc = check_units(spec->classes, "classes", lim->max_units, err)) < 0)
        return rc;
    for (int32_t l = 0; l < spec->n_hidden && l < MODEL_MAX_LAYERS; ++l) {
        char field[48];
        snprintf(field, sizeof field, "hidden[%d].units", (int)l);
        if ((rc = check_units(spec->hidden[l].units, field, lim->max_units, err)) < 0)
            return rc;
    }
    return 0;
}

/*
 * A graph model's batch-independent values (params, consts and what is computed from them
 * alone) may hold at most 2 x --max-params doubles: the parameters themselves and as much
 * again. Checked by building the graph once with that cap before model_new() builds it without
 * one; the trial build allocates lazily-zeroed memory only.
 */
static int check_graph_size(const app_limits_t *lim, const model_spec_t *spec, err_t *err)
{
    ad_graph_t *g = NULL;
    int rc = ad_graph_build_capped(&spec->graph, lim->max_graph_nodes, 2 * lim->max_params, &g,
                                   err);
    ad_graph_free(g);
    if (rc < 0) {
        ad_graph_spec_error_path(&spec->graph, "graph", err);
        request_note_flag(err, "limit of", "2 x --max-params");
    }
    return rc;
}

/* Resolve a decoded spec against the daemon's limits and build its model (checks initial
 * parameter values). */
static int model_build(const app_limits_t *lim, model_spec_t *spec, model_t **out, err_t *err)
{
    int rc = check_spec_limits(lim, spec, err);
    if (rc == 0 && spec->kind == MODEL_KIND_GRAPH)
        rc = request_graph_leaf_limit(&spec->graph, "graph", lim->max_params, err);
    if (rc < 0)
        return rc;
    if ((rc = model_spec_resolve(spec, lim->max_params, err)) < 0) {
        request_note_flag(err, "would have more than", "--max-params");
        return rc;
    }
    if ((rc = check_spec_limits(lim, spec, err)) < 0)
        return rc;
    if (spec->kind == MODEL_KIND_GRAPH && (rc = check_graph_size(lim, spec, err)) < 0)
        return rc;
    return model_new(spec, out, err);
}

/* The spec to store: the model's resolved spec, without name (and, by codec_spec_encode,
 * without initial parameter values). New string. */
static char *spec_text(const model_t *m)
{
    cJSON *j = codec_spec_encode(model_spec(m));
    if (j == NULL)
        return NULL;
    cJSON_DeleteItemFromObjectCaseSensitive(j, "name");
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return text;
}

/*
 * Store a new model built as `m`, named `name` (NULL or "": unnamed), with its current
 * parameters and optimizer state `optim` (NULL: zeros), then move it to `step` with last loss
 * `loss` (NULL: null) -- all in one transaction. `*id` is the new id.
 */
static int model_store(app_t *app, model_t *m, const char *name, const double *optim,
                       int64_t step, const double *loss, int64_t *id, err_t *err)
{
    *id = 0;
    optim_t *o = NULL;
    char *spec = NULL;
    int rc = optim_new(&model_spec(m)->optimizer, model_n_params(m), &o, err);
    if (rc < 0)
        return rc;
    int64_t n_optim = optim_state_len(o);
    if (optim != NULL && n_optim > 0)
        memcpy(optim_state(o), optim, (size_t)n_optim * sizeof(double));
    if ((spec = spec_text(m)) == NULL) {
        rc = nomem(err);
        goto out;
    }
    int extra = step > 0 || loss != NULL;
    if (extra && (rc = store_begin(app->store, err)) < 0)
        goto out;
    rc = store_model_insert(app->store, name, model_kind_name(model_spec(m)->kind), spec,
                            model_params(m), model_n_params(m), optim_state(o), n_optim, id, err);
    if (rc == 0 && extra)
        rc = store_params_put(app->store, *id, model_params(m), model_n_params(m), NULL, 0,
                              step, loss, err);
    if (extra) {
        if (rc == 0)
            rc = store_commit(app->store, err);
        if (rc < 0)
            store_rollback(app->store);
    }
    if (rc < 0)
        *id = 0;
out:
    free(spec);
    optim_free(o);
    return rc;
}

/* ---- POST /v1/models, GET /v1/models ------------------------------------------------------ */

static int models_create(http_req_t *req, err_t *err)
{
    cJSON *body = NULL;
    model_spec_t spec;
    model_t *m = NULL;
    int64_t id = 0;
    int rc = request_body_json(req, 0, &body, err);
    if (rc < 0)
        return rc;
    rc = codec_spec_decode(body, &spec, err);
    cJSON_Delete(body);
    if (rc < 0)
        return rc;
    if ((rc = model_build(&app_of(req)->limits, &spec, &m, err)) == 0)
        rc = model_store(app_of(req), m, spec.name, NULL, 0, NULL, &id, err);
    model_free(m);
    model_spec_free(&spec);
    if (rc < 0)
        return rc;
    return reply_model(req, id, 201, err);
}

static int models_list(http_req_t *req, err_t *err)
{
    int64_t limit, after, n = 0, next = 0;
    int rc = http_query_int64(req, "limit", MODELS_LIST_DEFAULT, 1, MODELS_LIST_MAX, &limit, err);
    if (rc < 0 || (rc = http_query_int64(req, "after", 0, 0, INT64_MAX, &after, err)) < 0)
        return rc;
    store_model_t *rows = NULL;
    if ((rc = store_model_list(app_of(req)->store, limit, after, &rows, &n, &next, err)) < 0)
        return rc;
    cJSON *body = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(body, "models");
    for (int64_t i = 0; i < n && list != NULL; ++i) {
        cJSON *o = reply_model_object(&rows[i], app_of(req)->registry);
        if (o == NULL || !cJSON_AddItemToArray(list, o)) {
            cJSON_Delete(o);
            list = NULL;
        }
    }
    store_model_list_free(rows, n);
    if (list == NULL ||
        !cJSON_AddItemToObject(body, "next", next > 0 ? reply_id(next) : cJSON_CreateNull())) {
        cJSON_Delete(body);
        return nomem(err);
    }
    return http_reply_json(req, 200, body);
}

/* ---- GET/DELETE /v1/models/{id} ---------------------------------------------------------- */

static int model_get(http_req_t *req, err_t *err)
{
    return reply_model(req, http_param(req, 0), 200, err);
}

static int model_delete(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    int rc = registry_write_begin(app->registry, id, REGISTRY_SHORT, err);
    if (rc < 0)
        return rc;
    rc = store_model_delete(app->store, id, err);
    if (rc == 0) {
        registry_forget(app->registry, id);
        datacache_drop(app->data_cache, id);
        sessions_drop(app->sessions, id);
        events_model_deleted(app->events, id);
        relay_deleted(app->relay, id);
    }
    registry_write_end(app->registry, id);
    if (rc < 0)
        return rc;
    return http_reply_empty(req, 204);
}

/* ---- parameters --------------------------------------------------------------------------- */

/* 200 {"step", "parameters"} of model `id`, one committed snapshot. Streamed: the parameters
 * are written as they are sent (jsonstream.h), so a large model costs its values once. */
static int reply_params(http_req_t *req, int64_t id, err_t *err)
{
    app_t *app = app_of(req);
    model_t *m = NULL;
    store_state_t state;
    int rc = registry_read_begin(app->registry, id, &m, err);
    if (rc < 0)
        return rc;
    /* The cached model gives the layout; the values come from one store snapshot with the
     * step, so they always belong together. */
    if ((rc = store_params_get(app->store, id, &state, err)) < 0) {
        registry_read_end(app->registry, id);
        return rc;
    }
    jsonstream_t *js = NULL;
    if (state.n_params != model_n_params(m)) {
        rc = err_set(err, ERR_DB, "model %" PRId64 " has %" PRId64 " stored parameters, its "
                     "spec needs %" PRId64, id, state.n_params, model_n_params(m));
    } else {
        cJSON *head = cJSON_CreateObject();
        if (head == NULL || cJSON_AddNumberToObject(head, "step", (double)state.step) == NULL) {
            cJSON_Delete(head);
            rc = nomem(err);
        } else if (jsonstream_new(head, &js) < 0) {
            rc = nomem(err);
        } else {
            double *params = state.params;
            state.params = NULL;       /* the stream frees them, also when keeping fails */
            if (jsonstream_keep(js, params, free) < 0 ||
                jsonstream_add_params(js, "parameters", m, params) < 0)
                rc = nomem(err);
        }
    }
    registry_read_end(app->registry, id);
    store_state_clear(&state);
    if (rc < 0) {
        jsonstream_free(js);
        return rc;
    }
    return jsonstream_reply(req, 200, js, err);
}

static int params_get(http_req_t *req, err_t *err)
{
    return reply_params(req, http_param(req, 0), err);
}

static int params_put(http_req_t *req, err_t *err)
{
    static const char *const fields[] = {"parameters", NULL};
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    cJSON *body = NULL;
    model_t *m = NULL;
    optim_t *o = NULL;
    double *theta = NULL;
    int64_t n = 0;
    int locked = 0, reading = 0;
    int rc = request_body_json(req, 0, &body, err);
    if (rc < 0)
        return rc;
    if ((rc = codec_check_fields(body, "", fields, err)) < 0)
        goto out;
    const cJSON *jp = cJSON_GetObjectItemCaseSensitive(body, "parameters");
    if (jp == NULL) {
        rc = err_set_field(err, ERR_INVAL, "parameters",
                           "parameters is required: {\"W1\": [[...]], ...} with every tensor");
        goto out;
    }
    if ((rc = registry_write_begin(app->registry, id, REGISTRY_SHORT, err)) < 0)
        goto out;
    locked = 1;
    if ((rc = registry_read_begin(app->registry, id, &m, err)) < 0)
        goto out;
    reading = 1;
    n = model_n_params(m);
    if ((theta = malloc((size_t)(n > 0 ? n : 1) * sizeof *theta)) == NULL) {
        rc = nomem(err);
        goto out;
    }
    if (n > 0)
        memcpy(theta, model_params(m), (size_t)n * sizeof *theta);
    if ((rc = codec_params_decode(jp, m, 1, theta, err)) < 0 ||
        (rc = optim_new(&model_spec(m)->optimizer, n, &o, err)) < 0)
        goto out;
    registry_read_end(app->registry, id);
    reading = 0;
    /* New parameters: the optimizer's moments and the last loss described the old ones. */
    double no_loss = NAN;
    rc = store_params_put(app->store, id, theta, n, optim_state(o), optim_state_len(o), -1,
                          &no_loss, err);
    if (rc == 0)
        registry_committed(app->registry, id);
out:
    if (reading)
        registry_read_end(app->registry, id);
    if (locked)
        registry_write_end(app->registry, id);
    optim_free(o);
    free(theta);
    cJSON_Delete(body);
    if (rc < 0)
        return rc;
    return reply_params(req, id, err);
}

/* ---- fork --------------------------------------------------------------------------------- */

static int model_fork(http_req_t *req, err_t *err)
{
    static const char *const fields[] = {"name", NULL};
    app_t *app = app_of(req);
    cJSON *body = NULL;
    const char *name = NULL;
    int64_t new_id = 0;
    int rc = request_body_json(req, 1, &body, err);
    if (rc < 0)
        return rc;
    if ((rc = codec_check_fields(body, "", fields, err)) == 0 &&
        (rc = request_get_text(body, "name", MODEL_NAME_MAX, &name, err)) == 0)
        rc = store_model_fork(app->store, http_param(req, 0), name, &new_id, err);
    cJSON_Delete(body);
    if (rc < 0)
        return rc;
    return reply_model(req, new_id, 201, err);
}

/* ---- checkpoints and restore -------------------------------------------------------------- */

static int checkpoint_create(http_req_t *req, err_t *err)
{
    static const char *const fields[] = {"label", NULL};
    cJSON *body = NULL;
    const char *label = NULL;
    int64_t cid = 0, step = 0;
    int rc = request_body_json(req, 1, &body, err);
    if (rc < 0)
        return rc;
    if ((rc = codec_check_fields(body, "", fields, err)) == 0 &&
        (rc = request_get_text(body, "label", REQUEST_LABEL_MAX, &label, err)) == 0)
        rc = store_checkpoint_insert(app_of(req)->store, http_param(req, 0), label, &cid, &step,
                                     err);
    cJSON_Delete(body);
    if (rc < 0)
        return rc;
    cJSON *out = cJSON_CreateObject();
    if (out == NULL || !cJSON_AddItemToObject(out, "checkpoint_id", reply_id(cid)) ||
        !cJSON_AddItemToObject(out, "step", cJSON_CreateNumber((double)step))) {
        cJSON_Delete(out);
        return nomem(err);
    }
    return http_reply_json(req, 201, out);
}

static int checkpoint_list(http_req_t *req, err_t *err)
{
    store_checkpoint_t *rows = NULL;
    int64_t n = 0;
    int rc = store_checkpoint_list(app_of(req)->store, http_param(req, 0), &rows, &n, err);
    if (rc < 0)
        return rc;
    cJSON *body = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(body, "checkpoints");
    for (int64_t i = 0; i < n && list != NULL; ++i) {
        cJSON *o = cJSON_CreateObject();
        if (o == NULL || !cJSON_AddItemToArray(list, o) ||
            !cJSON_AddItemToObject(o, "checkpoint_id", reply_id(rows[i].id)) ||
            !cJSON_AddItemToObject(o, "step", cJSON_CreateNumber((double)rows[i].step)) ||
            !cJSON_AddItemToObject(o, "label", rows[i].label != NULL
                                                   ? cJSON_CreateString(rows[i].label)
                                                   : cJSON_CreateNull()) ||
            cJSON_AddStringToObject(o, "created_at", rows[i].created_at) == NULL)
            list = NULL;
    }
    store_checkpoint_list_free(rows, n);
    if (list == NULL) {
        cJSON_Delete(body);
        return nomem(err);
    }
    return http_reply_json(req, 200, body);
}

static int model_restore(http_req_t *req, err_t *err)
{
    static const char *const fields[] = {"checkpoint_id", NULL};
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0), cid = 0;
    cJSON *body = NULL;
    int rc = request_body_json(req, 0, &body, err);
    if (rc < 0)
        return rc;
    if ((rc = codec_check_fields(body, "", fields, err)) == 0)
        rc = request_get_int(body, "checkpoint_id", 1, 1, ID_MAX, 0, &cid, err);
    cJSON_Delete(body);
    if (rc < 0)
        return rc;
    if ((rc = registry_write_begin(app->registry, id, REGISTRY_SHORT, err)) < 0)
        return rc;
    rc = store_checkpoint_restore(app->store, id, cid, NULL, err);
    if (rc == 0)
        registry_committed(app->registry, id);
    registry_write_end(app->registry, id);
    if (rc < 0)
        return rc;
    return reply_model(req, id, 200, err);
}

/* ---- export and import -------------------------------------------------------------------- */

/* A heap registry copy, freed with the export stream that reads it. */
static void copy_release(void *copy)
{
    registry_copy_free(copy);
    free(copy);
}

/* Streamed like the parameters: the head is printed by cJSON, then the parameters and the
 * optimizer state (Adam's is twice the parameters) are written from the copy as they are sent. */
static int model_export(http_req_t *req, err_t *err)
{
    const char *format = http_query(req, "format");
    if (format != NULL && strcmp(format, "onnx") == 0)
        return export_onnx_reply(req, err);
    if (format != NULL && strcmp(format, "json") != 0)
        return err_set_field(err, ERR_INVAL, "format", "format must be \"json\" or \"onnx\"");
    if (http_query(req, "dtype") != NULL)
        return err_set_field(err, ERR_INVAL, "dtype", "dtype applies to format=onnx only");
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    store_model_t row;
    registry_copy_t *copy = malloc(sizeof *copy);
    if (copy == NULL)
        return nomem(err);
    int rc = registry_load_row(app->registry, id, &row, copy, err);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    cJSON *head = cJSON_CreateObject();
    int ok = head != NULL &&
             cJSON_AddStringToObject(head, "format", EXPORT_FORMAT) != NULL &&
             cJSON_AddNumberToObject(head, "version", EXPORT_VERSION) != NULL &&
             cJSON_AddItemToObject(head, "name", row.name != NULL ? cJSON_CreateString(row.name)
                                                                 : cJSON_CreateNull()) &&
             cJSON_AddRawToObject(head, "spec", row.spec_json) != NULL &&
             cJSON_AddItemToObject(head, "step", cJSON_CreateNumber((double)copy->step)) &&
             cJSON_AddItemToObject(head, "loss", row.has_loss ? codec_number(row.loss)
                                                              : cJSON_CreateNull());
    store_model_clear(&row);
    if (!ok) {
        cJSON_Delete(head);
        copy_release(copy);
        return nomem(err);
    }
    jsonstream_t *js = NULL;
    if (jsonstream_new(head, &js) < 0) {
        copy_release(copy);
        return nomem(err);
    }
    if (jsonstream_keep(js, copy, copy_release) < 0 ||
        jsonstream_add_params(js, "parameters", copy->model, model_params(copy->model)) < 0 ||
        jsonstream_add_numbers(js, "optimizer_state", optim_state(copy->optim),
                               optim_state_len(copy->optim)) < 0) {
        jsonstream_free(js);
        return nomem(err);
    }
    return jsonstream_reply(req, 200, js, err);
}

static int model_import(http_req_t *req, err_t *err)
{
    cJSON *body = NULL;
    codec_export_t ex;
    int have_export = 0;
    model_t *m = NULL;
    optim_t *o = NULL;
    int64_t id = 0;
    int rc = request_body_json(req, 0, &body, err);
    if (rc < 0)
        return rc;
    if ((rc = codec_export_decode(body, &ex, err)) < 0)
        goto out;
    have_export = 1;
    if ((rc = model_build(&app_of(req)->limits, &ex.spec, &m, err)) < 0) {
        if (err != NULL && err->field[0] != '\0')
            err_prefix_field(err, "spec.");
        goto out;
    }
    if ((rc = codec_params_decode(ex.parameters, m, 1, model_params(m), err)) < 0 ||
        (rc = optim_new(&model_spec(m)->optimizer, model_n_params(m), &o, err)) < 0)
        goto out;
    if (ex.optimizer_state != NULL &&
        (rc = codec_optim_state_decode(ex.optimizer_state, o, ex.step, err)) < 0)
        goto out;
    rc = model_store(app_of(req), m, ex.name[0] != '\0' ? ex.name : NULL, optim_state(o), ex.step,
                     isnan(ex.loss) ? NULL : &ex.loss, &id, err);
out:
    optim_free(o);
    model_free(m);
    if (have_export)
        codec_export_free(&ex);
    cJSON_Delete(body);
    if (rc < 0)
        return rc;
    return reply_model(req, id, 201, err);
}

const http_route_t routes_models[] = {
    {"POST", "/v1/models", models_create, NULL, 0},
    {"GET", "/v1/models", models_list, "limit,after", 0},
    {"POST", "/v1/models/import", model_import, NULL, 0},
    {"GET", "/v1/models/{id}", model_get, NULL, 0},
    {"DELETE", "/v1/models/{id}", model_delete, NULL, 0},
    {"GET", "/v1/models/{id}/parameters", params_get, NULL, 0},
    {"PUT", "/v1/models/{id}/parameters", params_put, NULL, 0},
    {"POST", "/v1/models/{id}/fork", model_fork, NULL, 0},
    {"POST", "/v1/models/{id}/checkpoints", checkpoint_create, NULL, 0},
    {"GET", "/v1/models/{id}/checkpoints", checkpoint_list, NULL, 0},
    {"POST", "/v1/models/{id}/restore", model_restore, NULL, 0},
    {"GET", "/v1/models/{id}/export", model_export, "format,dtype", 0},
    HTTP_ROUTE_END,
};
