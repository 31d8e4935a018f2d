/* server/routes_data.c -- a model's stored training rows: batches in JSON, CSV or raw float64.
 *
 * A batch is decoded and checked completely (shape, finiteness, labels valid for the model's
 * kind) before anything is written, and stored in one transaction, so a bad batch leaves
 * nothing behind. Writes take the model's short write lock: 409 while a training run holds it.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "codec.h"
#include "http.h"
#include "model.h"
#include "present.h"
#include "registry.h"
#include "routes.h"
#include "store.h"
#include "tensor.h"

static int nomem(err_t *err)
{
    return err_set(err, ERR_NOMEM, "out of memory");
}

/* ?label_columns= (default 1) must equal the model's label columns. */
static int query_label_columns(http_req_t *req, int32_t n_y, err_t *err)
{
    int64_t lc = 1;
    int rc = http_query_int64(req, "label_columns", 1, 0, MODEL_MAX_UNITS, &lc, err);
    if (rc < 0)
        return rc;
    if (lc != n_y)
        return err_set_field(err, ERR_INVAL, "label_columns",
                             "label_columns=%" PRId64 ", but the model takes %d label column%s",
                             lc, (int)n_y, n_y == 1 ? "" : "s");
    return 0;
}

static int decode_json(http_req_t *req, int32_t n_x, int32_t n_y, codec_batch_t *b, err_t *err)
{
    static const char *const fields[] = {"x", "y", NULL};
    cJSON *body = NULL;
    int rc = present_body_json(req, 0, &body, err);
    if (rc < 0)
        return rc;
    if ((rc = present_check_fields(body, fields, err)) == 0)
        rc = present_batch_decode(req, body, n_x, n_y, 1, b, err);
    cJSON_Delete(body);
    return rc;
}

static int decode_csv(http_req_t *req, int32_t n_x, int32_t n_y, codec_batch_t *b, err_t *err)
{
    int rc = query_label_columns(req, n_y, err);
    if (rc < 0)
        return rc;
    int64_t max = app_of(req)->limits.max_batch_rows;
    codec_csv_opts_t opts = {.n_x = n_x, .label_columns = n_y, .header = -1, .max_rows = max};
    const char *h = http_query(req, "header");
    if (h != NULL) {
        if (strcmp(h, "auto") == 0)
            opts.header = -1;
        else if (strcmp(h, "true") == 0)
            opts.header = 1;
        else if (strcmp(h, "false") == 0)
            opts.header = 0;
        else
            return err_set_field(err, ERR_INVAL, "header",
                                 "header must be auto, true or false, not '%.40s'", h);
    }
    size_t len = 0;
    const char *text = http_body(req, &len);
    rc = codec_csv_decode(text, len, &opts, b, err);
    if (rc == ERR_INVAL)
        present_note_flag(err, "more than the limit of", "--max-batch-rows");
    return rc;
}

/* Little-endian float64 at p, whatever the host order and alignment. */
static double le_double(const unsigned char *p)
{
    uint64_t u = 0;
    for (int k = 7; k >= 0; --k)
        u = (u << 8) | p[k];
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static int decode_raw(http_req_t *req, int32_t n_x, int32_t n_y, codec_batch_t *b, err_t *err)
{
    memset(b, 0, sizeof *b);
    int64_t rows = 0, cols = 0;
    int rc = query_label_columns(req, n_y, err);
    if (rc < 0)
        return rc;
    if (http_query(req, "rows") == NULL)
        return err_set_field(err, ERR_INVAL, "rows", "rows is required: ?rows=m&cols=c");
    if (http_query(req, "cols") == NULL)
        return err_set_field(err, ERR_INVAL, "cols", "cols is required: ?rows=m&cols=c");
    int64_t max = app_of(req)->limits.max_batch_rows;
    if ((rc = http_query_int64(req, "rows", 0, 1, INT64_MAX, &rows, err)) < 0 ||
        (rc = http_query_int64(req, "cols", 0, 1, 2LL * MODEL_MAX_UNITS, &cols, err)) < 0)
        return rc;
    if (rows > max)
        return err_set_field(err, ERR_INVAL, "rows",
                             "rows=%" PRId64 " is more than --max-batch-rows=%" PRId64, rows, max);
    if (cols != (int64_t)n_x + n_y)
        return err_set_field(err, ERR_INVAL, "cols",
                             "cols=%" PRId64 ", but the model takes %d inputs + %d label "
                             "column%s = %d", cols, (int)n_x, (int)n_y, n_y == 1 ? "" : "s",
                             (int)(n_x + n_y));
    size_t len = 0;
    const unsigned char *p = (const unsigned char *)http_body(req, &len);
    /* rows < 2^31 and cols <= 2e6: rows * cols * 8 cannot overflow int64. */
    if ((uint64_t)len != (uint64_t)(rows * cols) * 8u)
        return err_set_field(err, ERR_INVAL, "body",
                             "body has %zu bytes; %" PRId64 " rows x %" PRId64 " columns of "
                             "float64 take %" PRId64, len, rows, cols, rows * cols * 8);
    b->x = malloc((size_t)(rows * n_x) * sizeof *b->x);
    b->y = malloc((size_t)(rows * (n_y > 0 ? n_y : 1)) * sizeof *b->y);
    if (b->x == NULL || b->y == NULL) {
        codec_batch_free(b);
        return nomem(err);
    }
    for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < cols; ++j) {
            double v = le_double(p + (size_t)(i * cols + j) * 8u);
            if (!isfinite(v)) {
                char field[64];
                if (j < n_x)
                    snprintf(field, sizeof field, "x[%" PRId64 "][%" PRId64 "]", i, j);
                else if (n_y == 1)
                    snprintf(field, sizeof field, "y[%" PRId64 "]", i);
                else
                    snprintf(field, sizeof field, "y[%" PRId64 "][%" PRId64 "]", i, j - n_x);
                codec_batch_free(b);
                return err_set_field(err, ERR_INVAL, field,
                                     "%s (row %" PRId64 ", column %" PRId64 ") is not a finite "
                                     "number", field, i, j);
            }
            if (j < n_x)
                b->x[i * n_x + j] = v;
            else
                b->y[i * n_y + (j - n_x)] = v;
        }
    }
    b->rows = (int32_t)rows;
    b->n_x = n_x;
    b->n_y = n_y;
    return 0;
}

/*
 * Would storing `b` take model `id` over --max-model-rows, or make its stored rows too large to
 * load as one matrix? Checked under the model's write lock, so no other batch slips in between.
 */
static int check_model_rows(app_t *app, int64_t id, const codec_batch_t *b, err_t *err)
{
    store_model_t row;
    int rc = store_model_get(app->store, id, &row, err);
    if (rc < 0)
        return rc;
    int64_t have = row.rows, max = app->limits.max_model_rows;
    store_model_clear(&row);
    if (have + b->rows > max)
        return err_set_field(err, ERR_INVAL, "x",
                             "the model has %" PRId64 " stored rows; %d more would exceed "
                             "--max-model-rows=%" PRId64, have, (int)b->rows, max);
    /* Training and loss load every stored row into one [rows, n_x] matrix (and [rows, n_y]):
     * each must stay within a tensor's element limit. */
    int64_t elems, widest = b->n_x > b->n_y ? b->n_x : b->n_y;
    if (tensor_checked_elems(have + b->rows, widest, "x", &elems, NULL) < 0)
        return err_set_field(err, ERR_INVAL, "x",
                             "the model has %" PRId64 " stored rows of %" PRId64 " values; %d "
                             "more would exceed %lld values in one matrix",
                             have, widest, (int)b->rows, (long long)TENSOR_MAX_ELEMS);
    return 0;
}

static int batch_create(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    int (*decode)(http_req_t *, int32_t, int32_t, codec_batch_t *, err_t *) = NULL;
    if (http_header(req, "Content-Type") == NULL || http_content_type_is(req, "application/json"))
        decode = decode_json;
    else if (http_content_type_is(req, "text/csv"))
        decode = decode_csv;
    else if (http_content_type_is(req, "application/octet-stream"))
        decode = decode_raw;
    else
        return err_set(err, ERR_MEDIA, "Content-Type must be application/json, text/csv or "
                       "application/octet-stream, not '%.80s'", http_header(req, "Content-Type"));

    codec_batch_t b = {0};
    model_t *m = NULL;
    int64_t batch_id = 0, total = 0;
    int rc = registry_write_begin(app->registry, id, REGISTRY_SHORT, err);
    if (rc < 0)
        return rc;
    if ((rc = registry_read_begin(app->registry, id, &m, err)) < 0)
        goto out;
    int32_t n_x = model_n_x(m), n_y = model_n_y(m);
    registry_read_end(app->registry, id);
    /* Decode without holding the read copy: a large body must not stall predictions. */
    if ((rc = decode(req, n_x, n_y, &b, err)) < 0)
        goto out;
    if ((rc = registry_read_begin(app->registry, id, &m, err)) < 0)
        goto out;
    batch_t view = {.rows = b.rows, .n_x = b.n_x, .n_y = b.n_y, .x = b.x, .y = b.y};
    rc = model_check_labels(m, &view, err);
    registry_read_end(app->registry, id);
    if (rc < 0 || (rc = check_model_rows(app, id, &b, err)) < 0)
        goto out;
    rc = store_batch_insert(app->store, id, b.rows, b.n_x, b.n_y, b.x, b.y, &batch_id, &total,
                            err);
out:
    registry_write_end(app->registry, id);
    int64_t rows = b.rows;
    codec_batch_free(&b);
    if (rc < 0)
        return rc;
    cJSON *body = cJSON_CreateObject();
    if (body == NULL || !cJSON_AddItemToObject(body, "batch_id", present_id(batch_id)) ||
        !cJSON_AddItemToObject(body, "rows", cJSON_CreateNumber((double)rows)) ||
        !cJSON_AddItemToObject(body, "total_rows", cJSON_CreateNumber((double)total))) {
        cJSON_Delete(body);
        return nomem(err);
    }
    return http_reply_json(req, 201, body);
}

static int batch_list(http_req_t *req, err_t *err)
{
    store_batch_info_t *rows = NULL;
    int64_t n = 0;
    int rc = store_batch_list(app_of(req)->store, http_param(req, 0), &rows, &n, err);
    if (rc < 0)
        return rc;
    cJSON *body = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(body, "batches");
    for (int64_t i = 0; i < n && list != NULL; ++i) {
        cJSON *o = cJSON_CreateObject();
        if (o == NULL || !cJSON_AddItemToArray(list, o) ||
            !cJSON_AddItemToObject(o, "batch_id", present_id(rows[i].id)) ||
            !cJSON_AddItemToObject(o, "rows", cJSON_CreateNumber((double)rows[i].rows)) ||
            cJSON_AddStringToObject(o, "created_at", rows[i].created_at) == NULL)
            list = NULL;
    }
    free(rows);
    if (list == NULL) {
        cJSON_Delete(body);
        return nomem(err);
    }
    return http_reply_json(req, 200, body);
}

static int batch_delete(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    int rc = registry_write_begin(app->registry, id, REGISTRY_SHORT, err);
    if (rc < 0)
        return rc;
    rc = store_batch_delete(app->store, id, http_param(req, 1), err);
    registry_write_end(app->registry, id);
    if (rc < 0)
        return rc;
    return http_reply_empty(req, 204);
}

const http_route_t routes_data[] = {
    {"POST", "/v1/models/{id}/batches", batch_create},
    {"GET", "/v1/models/{id}/batches", batch_list},
    {"DELETE", "/v1/models/{id}/batches/{bid}", batch_delete},
    HTTP_ROUTE_END,
};
