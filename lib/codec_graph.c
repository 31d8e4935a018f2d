/* lib/codec_graph.c -- computation graphs in JSON: {"nodes": [...], "output": id} decoded into
 * an ad_graph_spec_t with a field path in every error, and encoded back. Part of codec (codec.h). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"

static int op_is_leaf(int32_t op)
{
    return op == AD_OP_INPUT || op == AD_OP_PARAM || op == AD_OP_CONST;
}

static int op_is_loss(int32_t op)
{
    return op == AD_OP_L2_LOSS || op == AD_OP_BCE_LOSS || op == AD_OP_CCE_LOSS;
}

static int32_t public_op_from_name(const char *s)
{
    int32_t op = ad_op_from_name(s);
    return op > AD_OP_NONE && op < AD_OP_PUBLIC_END ? op : 0;
}

static int shape_decode(const cJSON *j, const char *path, int rows_ok, tensor_shape_t *shape,
                        err_t *err)
{
    char sub[CODEC_PATH_MAX];
    if (!cJSON_IsArray(j))
        return err_set_field(err, ERR_INVAL, path,
                             "%s must be an array of at most 2 dimensions, got %s", path,
                             codec_json_type(j));
    int n = cJSON_GetArraySize(j);
    if (n > TENSOR_MAX_DIM)
        return err_set_field(err, ERR_INVAL, path, "%s has %d dimensions, at most %d", path, n,
                             TENSOR_MAX_DIM);
    shape->n_d = n;
    shape->d[0] = shape->d[1] = 1;
    int32_t k = 0;
    for (const cJSON *e = j->child; e != NULL; e = e->next, ++k) {
        codec__path_index(sub, path, k);
        if (cJSON_IsNull(e) && k == 0) {
            if (!rows_ok)
                return err_set_field(err, ERR_INVAL, sub,
                                     "%s: null (any number of rows) is only for input nodes", sub);
            shape->d[0] = AD_ROWS;
            continue;
        }
        int rc = codec__get_int32(e, sub, 1, INT32_MAX, &shape->d[k], err);
        if (rc < 0)
            return rc;
    }
    int64_t elems;
    int64_t r = shape->n_d > 0 && shape->d[0] != AD_ROWS ? shape->d[0] : 1;
    int64_t c = shape->n_d == 2 ? shape->d[1] : 1;
    if (tensor_checked_elems(r, c, path, &elems, NULL) < 0)
        return err_set_field(err, ERR_INVAL, path, "%s: %lld x %lld is more than %lld elements",
                             path, (long long)r, (long long)c, (long long)TENSOR_MAX_ELEMS);
    return 0;
}

static int node_decode(const cJSON *j, const char *path, ad_node_spec_t *n, err_t *err)
{
    static const char *const fields[] = {
        "id", "op", "inputs", "shape", "value", "reduction", "transpose_b", NULL};
    char sub[CODEC_PATH_MAX], item[CODEC_PATH_MAX];
    int rc = codec__require_object(j, path, "an object", err);
    if (rc == 0)
        rc = codec_check_fields(j, path, fields, err);
    if (rc < 0)
        return rc;

    codec__path_key(sub, path, "id");
    const cJSON *v = codec__member(j, "id");
    if (v == NULL)
        return err_set_field(err, ERR_INVAL, sub, "%s is required", sub);
    if ((rc = codec__get_name(v, sub, n->id, sizeof n->id, err)) < 0)
        return rc;

    codec__path_key(sub, path, "op");
    if ((v = codec__member(j, "op")) == NULL)
        return err_set_field(err, ERR_INVAL, sub, "%s is required", sub);
    if (cJSON_IsString(v) && public_op_from_name(v->valuestring) == 0) {
        char ops[200];
        size_t used = 0;
        ops[0] = '\0';
        for (int32_t op = AD_OP_NONE + 1; op < AD_OP_PUBLIC_END && used < sizeof ops; ++op)
            used += (size_t)snprintf(ops + used, sizeof ops - used, "%s%s", used ? " " : "",
                                     ad_op_name(op));
        return err_set_field(err, ERR_INVAL, sub, "%s: unknown op \"%.30s\" (ops: %s)", sub,
                             v->valuestring, ops);
    }
    if ((rc = codec__get_enum(v, sub, public_op_from_name, "a graph op", &n->op, err)) < 0)
        return rc;

    codec__path_key(sub, path, "inputs");
    if ((v = codec__member(j, "inputs")) != NULL) {
        if (!cJSON_IsArray(v))
            return err_set_field(err, ERR_INVAL, sub, "%s must be an array of node ids, got %s",
                                 sub, codec_json_type(v));
        int cnt = cJSON_GetArraySize(v);
        if (cnt > AD_MAX_CHILD)
            return err_set_field(err, ERR_INVAL, sub, "%s has %d entries, at most %d", sub, cnt,
                                 AD_MAX_CHILD);
        for (const cJSON *e = v->child; e != NULL; e = e->next, ++n->n_in) {
            codec__path_index(item, sub, n->n_in);
            if ((rc = codec__get_name(e, item, n->in[n->n_in], AD_ID_MAX, err)) < 0)
                return rc;
        }
    }

    n->shape.n_d = 0;
    n->shape.d[0] = n->shape.d[1] = 1;
    codec__path_key(sub, path, "shape");
    v = codec__member(j, "shape");
    if (op_is_leaf(n->op)) {
        if (v == NULL)
            return err_set_field(err, ERR_INVAL, sub, "%s is required for %s nodes", sub,
                                 ad_op_name(n->op));
        if ((rc = shape_decode(v, sub, n->op == AD_OP_INPUT, &n->shape, err)) < 0)
            return rc;
    } else if (v != NULL) {
        return err_set_field(err, ERR_INVAL, sub,
                             "%s: only input, param and const nodes take a shape", sub);
    }

    codec__path_key(sub, path, "value");
    v = codec__member(j, "value");
    if (v != NULL) {
        if (n->op != AD_OP_PARAM && n->op != AD_OP_CONST)
            return err_set_field(err, ERR_INVAL, sub,
                                 "%s: only param and const nodes take a value", sub);
        if ((rc = codec_tensor_decode(v, &n->shape, sub, &n->value, NULL, err)) < 0)
            return rc;
    } else if (n->op == AD_OP_CONST) {
        return err_set_field(err, ERR_INVAL, sub, "%s is required for const nodes", sub);
    }

    n->reduction = AD_REDUCTION_MEAN;
    codec__path_key(sub, path, "reduction");
    if ((v = codec__member(j, "reduction")) != NULL) {
        if (!op_is_loss(n->op))
            return err_set_field(err, ERR_INVAL, sub,
                                 "%s: only l2_loss, bce_loss and cce_loss take a reduction", sub);
        if ((rc = codec__get_reduction(v, sub, &n->reduction, err)) < 0)
            return rc;
    }

    codec__path_key(sub, path, "transpose_b");
    if ((v = codec__member(j, "transpose_b")) != NULL) {
        if (n->op != AD_OP_MATMUL)
            return err_set_field(err, ERR_INVAL, sub, "%s: only matmul nodes take transpose_b",
                                 sub);
        if ((rc = codec__get_bool(v, sub, &n->transpose_b, err)) < 0)
            return rc;
    }
    return 0;
}

int codec_graph_decode(const cJSON *json, const char *prefix, ad_graph_spec_t *graph,
                       err_t *err)
{
    static const char *const fields[] = {"nodes", "output", NULL};
    char path[CODEC_PATH_MAX], sub[CODEC_PATH_MAX];
    const char *pre = prefix != NULL ? prefix : "";
    memset(graph, 0, sizeof *graph);
    int rc = codec__require_object(json, pre, "an object with \"nodes\" and \"output\"", err);
    if (rc == 0)
        rc = codec_check_fields(json, pre, fields, err);
    if (rc < 0)
        return rc;

    codec__path_key(path, pre, "nodes");
    const cJSON *nodes = codec__member(json, "nodes");
    if (nodes == NULL)
        return err_set_field(err, ERR_INVAL, path, "%s is required", path);
    if (!cJSON_IsArray(nodes))
        return err_set_field(err, ERR_INVAL, path, "%s must be an array of nodes, got %s", path,
                             codec_json_type(nodes));
    int n = cJSON_GetArraySize(nodes);
    if (n == 0)
        return err_set_field(err, ERR_INVAL, path, "%s is empty", path);
    if (n > CODEC_MAX_ENTRIES)
        return err_set_field(err, ERR_INVAL, path, "%s has %d nodes, at most %d", path, n,
                             CODEC_MAX_ENTRIES);

    codec__path_key(sub, pre, "output");
    const cJSON *output = codec__member(json, "output");
    if (output == NULL)
        return err_set_field(err, ERR_INVAL, sub, "%s is required", sub);
    if ((rc = codec__get_name(output, sub, graph->output, sizeof graph->output, err)) < 0)
        return rc;

    graph->node = calloc((size_t)n, sizeof *graph->node);
    if (graph->node == NULL)
        return err_set_field(err, ERR_NOMEM, path, "%s: out of memory for %d nodes", path, n);
    for (const cJSON *e = nodes->child; e != NULL; e = e->next) {
        codec__path_index(sub, path, graph->n_node);
        /* Counted before decoding so a failure frees the node's value too. */
        ad_node_spec_t *node = &graph->node[graph->n_node++];
        if ((rc = node_decode(e, sub, node, err)) < 0) {
            ad_graph_spec_free(graph);
            memset(graph, 0, sizeof *graph);
            return rc;
        }
    }
    return 0;
}

cJSON *codec_graph_encode(const ad_graph_spec_t *graph)
{
    cJSON *obj = cJSON_CreateObject();
    cJSON *nodes = cJSON_CreateArray();
    if (codec__add(obj, "nodes", nodes) < 0)
        goto fail;
    for (int32_t i = 0; i < graph->n_node; ++i) {
        const ad_node_spec_t *n = &graph->node[i];
        const char *op = ad_op_name(n->op);
        cJSON *node = cJSON_CreateObject();
        if (codec__push(nodes, node) < 0 || codec__add(node, "id", cJSON_CreateString(n->id)) < 0 ||
            codec__add(node, "op", cJSON_CreateString(op != NULL ? op : "")) < 0)
            goto fail;
        if (n->n_in > 0) {
            cJSON *in = cJSON_CreateArray();
            if (codec__add(node, "inputs", in) < 0)
                goto fail;
            for (int32_t k = 0; k < n->n_in; ++k)
                if (codec__push(in, cJSON_CreateString(n->in[k])) < 0)
                    goto fail;
        }
        if (op_is_leaf(n->op)) {
            cJSON *shape = cJSON_CreateArray();
            if (codec__add(node, "shape", shape) < 0)
                goto fail;
            for (int32_t k = 0; k < n->shape.n_d; ++k)
                if (codec__push(shape, n->shape.d[k] == AD_ROWS ? cJSON_CreateNull()
                                                         : codec__int(n->shape.d[k])) < 0)
                    goto fail;
        }
        if (n->value != NULL && codec__add(node, "value", codec_tensor_encode(&n->shape, n->value)) < 0)
            goto fail;
        if (op_is_loss(n->op) &&
            codec__add(node, "reduction", cJSON_CreateString(codec__reduction_name(n->reduction))) < 0)
            goto fail;
        if (n->op == AD_OP_MATMUL && n->transpose_b &&
            codec__add(node, "transpose_b", cJSON_CreateTrue()) < 0)
            goto fail;
    }
    if (codec__add(obj, "output", cJSON_CreateString(graph->output)) < 0)
        goto fail;
    return obj;
fail:
    cJSON_Delete(obj);
    return NULL;
}

