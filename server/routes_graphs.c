/* server/routes_graphs.c -- POST /v1/graphs/eval: evaluate a computation graph once.
 *
 *     {"graph": {"nodes": [...], "output": "L"}, "inputs": {"x": [[1, 2]], ...},
 *      "wrt": ["W"], "jacobian": {"of": "F", "wrt": "t"}}
 *  -> {"values": {every node: value}, "gradients": {"W": dL/dW}, "jacobian": [[...]]}
 *
 * Nothing is stored. Every error is 400 invalid_argument with a field path into the request:
 * a node is named "graph.nodes[3]" (the message names its id), an input "inputs.x", an entry of
 * wrt "wrt[1]", the output "graph.output".
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "codec.h"
#include "graph.h"
#include "http.h"
#include "request.h"
#include "reply.h"
#include "routes.h"

#define GRAPHS_MAX_WRT 10000                /* entries of "wrt" (duplicates allowed) */
#define GRAPHS_MAX_JACOBIAN_ROWS 10000      /* elements of "of": one backward pass each */
#define GRAPHS_MAX_JACOBIAN 1000000LL       /* entries of the Jacobian */

static int shape_text_err(err_t *err, const char *field, const char *fmt, const char *id,
                          const tensor_shape_t *shape)
{
    char buf[48];
    return err_set_field(err, ERR_INVAL, field, fmt, id, tensor_shape_str(shape, buf, sizeof buf));
}

/*
 * Check the "inputs" object against the graph, decode every input value and bind the row
 * count. Values are decoded against the spec shape (d[0] may be null = any rows) before anything
 * is written into the graph.
 */
static int bind_inputs(const cJSON *inputs, const ad_graph_spec_t *spec, ad_graph_t *g,
                       err_t *err)
{
    char field[ERR_FIELD_MAX], rows_from[ERR_FIELD_MAX] = "";
    int rc = 0;
    int32_t rows = 0;
    double **vals = calloc((size_t)spec->n_node, sizeof *vals);
    const cJSON **given = calloc((size_t)ad_n_node(g), sizeof *given); /* by graph index */
    if (vals == NULL || given == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory for %d inputs", (int)spec->n_node);
        goto out;
    }

    /* Every given name must be an input node, given once. */
    const cJSON *c = NULL;
    cJSON_ArrayForEach(c, inputs) {
        const char *id = c->string != NULL ? c->string : "";
        snprintf(field, sizeof field, "inputs.%.100s", id);
        int32_t node = ad_find(g, id);
        if (node < 0) {
            rc = err_set_field(err, ERR_INVAL, field, "%s: the graph has no node \"%.100s\"",
                               field, id);
            goto out;
        }
        if (ad_op(g, node) != AD_OP_INPUT) {
            rc = err_set_field(err, ERR_INVAL, field,
                               "%s: node \"%.100s\" is a %s node, not an input; only input "
                               "nodes take values here",
                               field, id, ad_op_name(ad_op(g, node)));
            goto out;
        }
        if (given[node] != NULL) {
            rc = err_set_field(err, ERR_INVAL, field, "%s is given twice", field);
            goto out;
        }
        given[node] = c;
    }

    /* Every input node must have a value of its shape; null first dimensions share one count. */
    for (int32_t i = 0; i < spec->n_node; ++i) {
        const ad_node_spec_t *n = &spec->node[i];
        if (n->op != AD_OP_INPUT)
            continue;
        snprintf(field, sizeof field, "inputs.%s", n->id);
        const cJSON *v = given[ad_find(g, n->id)];
        if (v == NULL) {
            rc = shape_text_err(err, field, "inputs.%s is required (input node of shape %s)",
                                n->id, &n->shape);
            goto out;
        }
        int32_t r = 0;
        if ((rc = codec_tensor_decode(v, &n->shape, field, &vals[i], &r, err)) < 0)
            goto out;
        if (n->shape.n_d > 0 && n->shape.d[0] == AD_ROWS) {
            if (rows == 0) {
                rows = r;
                snprintf(rows_from, sizeof rows_from, "%s", field);
            } else if (r != rows) {
                rc = err_set_field(err, ERR_INVAL, field,
                                   "%s has %d rows but %s has %d: inputs whose first dimension "
                                   "is null must have the same number of rows",
                                   field, (int)r, rows_from, (int)rows);
                goto out;
            }
        }
    }
    if ((rc = ad_graph_bind(g, rows > 0 ? rows : 1, err)) < 0) {
        request_note_flag(err, "limit of", "--max-params");
        ad_graph_spec_error_path(spec, "graph", err);
        goto out;
    }
    for (int32_t i = 0; i < spec->n_node; ++i) {
        if (vals[i] == NULL)
            continue;
        int32_t node = ad_find(g, spec->node[i].id);
        memcpy(ad_value(g, node), vals[i],
               (size_t)tensor_shape_elems(ad_shape(g, node)) * sizeof(double));
    }
out:
    for (int32_t i = 0; vals != NULL && i < spec->n_node; ++i)
        free(vals[i]);
    free(vals);
    free(given);
    return rc;
}

/* "wrt": an array of node ids (duplicates are answered once). *n_out = entries. */
static int decode_wrt(const cJSON *wrt, ad_graph_t *g, int32_t **out, int32_t *n_out,
                      err_t *err)
{
    char field[ERR_FIELD_MAX];
    *out = NULL;
    *n_out = 0;
    if (wrt == NULL || cJSON_IsNull(wrt))
        return 0;
    if (!cJSON_IsArray(wrt))
        return err_set_field(err, ERR_INVAL, "wrt", "wrt must be an array of node ids, got %s",
                             codec_json_type(wrt));
    int n = cJSON_GetArraySize(wrt);
    if (n > GRAPHS_MAX_WRT)
        return err_set_field(err, ERR_INVAL, "wrt", "wrt has %d entries, at most %d", n,
                             GRAPHS_MAX_WRT);
    int32_t *idx = malloc((size_t)(n > 0 ? n : 1) * sizeof *idx);
    if (idx == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for wrt");
    int32_t k = 0;
    const cJSON *e = NULL;
    cJSON_ArrayForEach(e, wrt) {
        snprintf(field, sizeof field, "wrt[%d]", (int)k);
        if (!cJSON_IsString(e)) {
            free(idx);
            return err_set_field(err, ERR_INVAL, field, "%s must be a node id (a string), got %s",
                                 field, codec_json_type(e));
        }
        if ((idx[k] = ad_find(g, cJSON_GetStringValue(e))) < 0) {
            free(idx);
            return err_set_field(err, ERR_INVAL, field, "%s: the graph has no node \"%.100s\"",
                                 field, cJSON_GetStringValue(e));
        }
        ++k;
    }
    *out = idx;
    *n_out = k;
    return 0;
}

/* "jacobian": {"of": id, "wrt": id}. */
static int decode_jacobian(const cJSON *j, ad_graph_t *g, int32_t *of, int32_t *wrt, err_t *err)
{
    static const char *const fields[] = {"of", "wrt", NULL};
    *of = *wrt = -1;
    if (j == NULL || cJSON_IsNull(j))
        return 0;
    if (!cJSON_IsObject(j))
        return err_set_field(err, ERR_INVAL, "jacobian",
                             "jacobian must be an object {\"of\": id, \"wrt\": id}, got %s",
                             codec_json_type(j));
    int rc = codec_check_fields(j, "jacobian", fields, err);
    if (rc < 0)
        return rc;
    for (int k = 0; k < 2; ++k) {
        const char *key = fields[k];
        char field[32];
        snprintf(field, sizeof field, "jacobian.%s", key);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
        if (v == NULL)
            return err_set_field(err, ERR_INVAL, field, "%s is required", field);
        if (!cJSON_IsString(v))
            return err_set_field(err, ERR_INVAL, field, "%s must be a node id (a string), got %s",
                                 field, codec_json_type(v));
        const char *name = cJSON_GetStringValue(v);
        int32_t node = ad_find(g, name);
        if (node < 0)
            return err_set_field(err, ERR_INVAL, field, "%s: the graph has no node \"%.100s\"",
                                 field, name);
        *(k == 0 ? of : wrt) = node;
    }
    return 0;
}

/* Add `item` to obj under key; frees item when it cannot. */
static int add_item(cJSON *obj, const char *key, cJSON *item, err_t *err)
{
    if (item == NULL || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return err_set(err, ERR_NOMEM, "out of memory encoding the answer");
    }
    return 0;
}

static cJSON *jacobian_encode(const double *jac, int64_t rows, int64_t cols)
{
    cJSON *arr = cJSON_CreateArray();
    for (int64_t i = 0; arr != NULL && i < rows; ++i) {
        tensor_shape_t shape = {.n_d = 1, .d = {(int32_t)cols, 1}};
        cJSON *row = codec_tensor_encode(&shape, jac + i * cols);
        if (row == NULL || !cJSON_AddItemToArray(arr, row)) {
            cJSON_Delete(row);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

static int graphs_eval(http_req_t *req, err_t *err)
{
    static const char *const fields[] = {"graph", "inputs", "wrt", "jacobian", NULL};
    cJSON *root = NULL, *ans = NULL;
    ad_graph_spec_t spec = {0};
    ad_graph_t *g = NULL;
    int32_t *wrt = NULL, n_wrt = 0, jac_of = -1, jac_wrt = -1;
    double *jac = NULL;
    char *grad_done = NULL;
    int rc = request_body_json(req, 0, &root, err);
    if (rc < 0)
        goto out;
    if (!cJSON_IsObject(root)) {
        rc = err_set(err, ERR_INVAL, "the body must be a JSON object, got %s",
                     codec_json_type(root));
        goto out;
    }
    if ((rc = codec_check_fields(root, "", fields, err)) < 0)
        goto out;

    /* The graph: decode, refuse oversized ones before allocating per node, build. */
    const cJSON *gj = cJSON_GetObjectItemCaseSensitive(root, "graph");
    if (gj == NULL) {
        rc = err_set_field(err, ERR_INVAL, "graph", "graph is required");
        goto out;
    }
    const app_limits_t *lim = &app_of(req)->limits;
    const cJSON *nodes = cJSON_IsObject(gj) ? cJSON_GetObjectItemCaseSensitive(gj, "nodes") : NULL;
    if (cJSON_IsArray(nodes) && cJSON_GetArraySize(nodes) > lim->max_graph_nodes) {
        rc = err_set_field(err, ERR_INVAL, "graph.nodes",
                           "graph.nodes has %d nodes, more than --max-graph-nodes=%d",
                           cJSON_GetArraySize(nodes), (int)lim->max_graph_nodes);
        goto out;
    }
    if ((rc = codec_graph_decode(gj, "graph", &spec, err)) < 0 ||
        (rc = request_graph_leaf_limit(&spec, "graph", lim->max_params, err)) < 0)
        goto out;
    /* Every value the evaluation holds, intermediate results too, within --max-params. */
    if ((rc = ad_graph_build_capped(&spec, lim->max_graph_nodes, lim->max_params, &g, err)) < 0) {
        request_note_flag(err, "limit of", "--max-params");
        ad_graph_spec_error_path(&spec, "graph", err);
        goto out;
    }

    /* Inputs, then the requested derivatives (names checked before any computing). */
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    if (inputs != NULL && !cJSON_IsNull(inputs) && !cJSON_IsObject(inputs)) {
        rc = err_set_field(err, ERR_INVAL, "inputs",
                           "inputs must be an object {node id: value}, got %s",
                           codec_json_type(inputs));
        goto out;
    }
    if (cJSON_IsNull(inputs))
        inputs = NULL;
    if ((rc = bind_inputs(inputs, &spec, g, err)) < 0)
        goto out;
    if ((rc = decode_wrt(cJSON_GetObjectItemCaseSensitive(root, "wrt"), g, &wrt, &n_wrt, err)) <
            0 ||
        (rc = decode_jacobian(cJSON_GetObjectItemCaseSensitive(root, "jacobian"), g, &jac_of,
                              &jac_wrt, err)) < 0)
        goto out;
    const int32_t out_node = ad_output(g);
    if (n_wrt > 0 && tensor_shape_elems(ad_shape(g, out_node)) != 1) {
        rc = shape_text_err(err, "graph.output",
                            "graph.output \"%s\" has shape %s: gradients (wrt) need a scalar "
                            "output; use \"jacobian\" for a non-scalar node",
                            ad_id(g, out_node), ad_shape(g, out_node));
        goto out;
    }
    int64_t jac_rows = 0, jac_cols = 0;
    if (jac_of >= 0) {
        jac_rows = tensor_shape_elems(ad_shape(g, jac_of));
        jac_cols = tensor_shape_elems(ad_shape(g, jac_wrt));
        if (jac_rows > GRAPHS_MAX_JACOBIAN_ROWS || jac_rows * jac_cols > GRAPHS_MAX_JACOBIAN) {
            rc = err_set_field(err, ERR_INVAL, "jacobian",
                               "jacobian of %lld x %lld entries is too large (at most %d rows "
                               "and %lld entries)",
                               (long long)jac_rows, (long long)jac_cols,
                               GRAPHS_MAX_JACOBIAN_ROWS, GRAPHS_MAX_JACOBIAN);
            goto out;
        }
    }

    if ((rc = ad_forward(g, err)) < 0) {
        ad_graph_spec_error_path(&spec, "graph", err);
        goto out;
    }

    ans = cJSON_CreateObject();
    cJSON *values = cJSON_AddObjectToObject(ans, "values");
    cJSON *grads = cJSON_AddObjectToObject(ans, "gradients");
    if (values == NULL || grads == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory encoding the answer");
        goto out;
    }
    for (int32_t i = 0; i < spec.n_node; ++i) {
        int32_t node = ad_find(g, spec.node[i].id);
        if ((rc = add_item(values, spec.node[i].id,
                           codec_tensor_encode(ad_shape(g, node), ad_value(g, node)), err)) < 0)
            goto out;
    }
    if (n_wrt > 0) {
        if ((grad_done = calloc((size_t)ad_n_node(g), 1)) == NULL) {
            rc = err_set(err, ERR_NOMEM, "out of memory for wrt");
            goto out;
        }
        if ((rc = ad_backward(g, out_node, err)) < 0) {
            ad_graph_spec_error_path(&spec, "graph", err);
            goto out;
        }
        for (int32_t k = 0; k < n_wrt; ++k) {
            const char *id = ad_id(g, wrt[k]);
            if (grad_done[wrt[k]])    /* listed twice: answered once */
                continue;
            grad_done[wrt[k]] = 1;
            if ((rc = add_item(grads, id,
                               codec_tensor_encode(ad_shape(g, wrt[k]), ad_grad(g, wrt[k])),
                               err)) < 0)
                goto out;
        }
    }
    if (jac_of >= 0) {
        jac = malloc((size_t)(jac_rows * jac_cols > 0 ? jac_rows * jac_cols : 1) * sizeof *jac);
        if (jac == NULL) {
            rc = err_set(err, ERR_NOMEM, "out of memory for the jacobian");
            goto out;
        }
        if ((rc = ad_jacobian(g, jac_of, jac_wrt, jac, err)) < 0) {
            ad_graph_spec_error_path(&spec, "graph", err);
            goto out;
        }
        if ((rc = add_item(ans, "jacobian", jacobian_encode(jac, jac_rows, jac_cols), err)) < 0)
            goto out;
    }
    rc = http_reply_json(req, 200, ans);
    ans = NULL;
out:
    cJSON_Delete(ans);
    cJSON_Delete(root);
    free(jac);
    free(grad_done);
    free(wrt);
    ad_graph_free(g);
    ad_graph_spec_free(&spec);
    return rc;
}

const http_route_t routes_graphs[] = {
    {"POST", "/v1/graphs/eval", graphs_eval, NULL, 0},
    HTTP_ROUTE_END,
};
