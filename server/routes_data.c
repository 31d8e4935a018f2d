/* server/routes_data.c -- a model's stored training rows: batches in JSON, CSV or raw float64.
 *
 * A batch is decoded and checked completely (shape, finiteness, labels valid for the model's
 * kind) before anything is written, and stored in one transaction, so a bad batch leaves
 * nothing behind. Writes take the model's short write lock: 409 while a training run holds it.
 *
 * CSV and raw bodies are decoded as they arrive (a body sink, see http.h): the text is never
 * held whole, which halves the memory a large upload needs and overlaps parsing with receiving.
 * Problems found before the body (query parameters) wait in the sink's state, so the errors
 * and their order are those of decoding after the upload: 415, then 404/409, then the data.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "batchjson.h"
#include "codec.h"
#include "http.h"
#include "model.h"
#include "request.h"
#include "reply.h"
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

/* A JSON batch; `*split` is the body's "split" (-1 when it has none). */
static int decode_json(http_req_t *req, int32_t n_x, int32_t n_y, codec_batch_t *b,
                       int32_t *split, err_t *err)
{
    static const char *const fields[] = {"x", "y", "split", NULL};
    *split = -1;
    const app_limits_t *lim = &app_of(req)->limits;
    batchjson_opts_t opts = {.n_x = n_x, .n_y = n_y, .max_rows = lim->max_batch_rows,
                             .max_depth = lim->max_depth};
    size_t len = 0;
    const char *text = http_body(req, &len);
    /* A batch in its plain form goes straight into its arrays (a cJSON tree takes ~10 times
     * the memory of the numbers); everything else, and every error, takes the path below. */
    if ((http_header(req, "Content-Type") == NULL ||
         http_content_type_is(req, "application/json")) &&
        batchjson_decode(text, len, &opts, &b->x, &b->y, &b->rows)) {
        b->n_x = n_x;
        b->n_y = n_y;
        http_body_release(req);  /* the text is not needed while the rows are stored */
        return 0;
    }
    cJSON *body = NULL;
    int rc = request_body_json(req, 0, &body, err);
    if (rc < 0)
        return rc;
    if ((rc = codec_check_fields(body, "", fields, err)) == 0 &&
        (rc = request_get_split(body, split, err)) == 0)
        rc = request_batch_decode(req, body, n_x, n_y, 1, b, err);
    cJSON_Delete(body);
    return rc;
}

/* The query parameters of one body format: `takes` lists those of `all` it accepts. A listed
 * one it does not take is refused by name, so a CSV option on a raw body never passes as
 * if it had been read. */
static int query_only(http_req_t *req, const char *const takes[], const char *format,
                      err_t *err)
{
    static const char *const all[] = {"label_columns", "header", "rows", "cols", NULL};
    for (int i = 0; all[i] != NULL; ++i) {
        int taken = 0;
        for (int k = 0; takes[k] != NULL && !taken; ++k)
            taken = strcmp(takes[k], all[i]) == 0;
        if (!taken && http_query(req, all[i]) != NULL)
            return err_set_field(err, ERR_INVAL, all[i], "query parameter '%s' does not apply "
                                 "to %s bodies", all[i], format);
    }
    return 0;
}

/* ?split= (train when absent), for every content type. */
static int query_split(http_req_t *req, int32_t *split, err_t *err)
{
    const char *q = http_query(req, "split");
    *split = STORE_SPLIT_TRAIN;
    return q != NULL ? request_split_from_name(q, split, err) : 0;
}

enum ingest_kind { INGEST_NONE = 0, INGEST_CSV, INGEST_RAW };

/* One streamed batch upload (the sink's state). */
typedef struct ingest {
    int kind;
    int rc;                      /* an error found before the body, reported by the handler */
    err_t err;
    int32_t n_x, n_y;
    int32_t label_binary, label_classes;   /* model_label_rule(), checked per CSV line */
    codec_csv_stream_t *csv;
    /* raw: rows x cols float64, split into x and y as whole rows arrive */
    int64_t rows, cols, cap_rows, done_rows, bad_row, bad_col;
    uint64_t bytes;
    double *x, *y;
    unsigned char *part;         /* a row cut by a chunk boundary */
    size_t n_part;
} ingest_t;

static void ingest_free(void *state)
{
    ingest_t *in = state;
    if (in == NULL)
        return;
    codec_csv_stream_free(in->csv);
    free(in->x);
    free(in->y);
    free(in->part);
    free(in);
}

static int csv_begin(http_req_t *req, ingest_t *in, err_t *err)
{
    static const char *const takes[] = {"label_columns", "header", NULL};
    int rc = query_only(req, takes, "text/csv", err);
    if (rc == 0)
        rc = query_label_columns(req, in->n_y, err);
    if (rc < 0)
        return rc;
    int64_t max = app_of(req)->limits.max_batch_rows;
    codec_csv_opts_t opts = {.n_x = in->n_x, .label_columns = in->n_y, .header = -1,
                             .label_binary = in->label_binary,
                             .label_classes = in->label_classes,
                             .max_rows = max};
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
    return codec_csv_stream_new(&opts, &in->csv, err);
}

static int csv_finish(ingest_t *in, codec_batch_t *b, err_t *err)
{
    int rc = codec_csv_stream_finish(in->csv, b, err);
    if (rc == ERR_INVAL)
        request_note_flag(err, "more than the limit of", "--max-batch-rows");
    return rc;
}

static int raw_begin(http_req_t *req, ingest_t *in, err_t *err)
{
    int64_t rows = 0, cols = 0;
    int32_t n_x = in->n_x, n_y = in->n_y;
    static const char *const takes[] = {"label_columns", "rows", "cols", NULL};
    int rc = query_only(req, takes, "application/octet-stream", err);
    if (rc == 0)
        rc = query_label_columns(req, n_y, err);
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
    in->rows = rows;
    in->cols = cols;
    in->bad_row = -1;
    if ((in->part = malloc((size_t)cols * 8u)) == NULL)
        return nomem(err);
    /* With the exact Content-Length every row has room at once; otherwise rows get room as
     * they arrive (and a body of the wrong size is refused at the end). */
    const char *cl = http_header(req, "Content-Length");
    if (cl != NULL && strtoull(cl, NULL, 10) == (unsigned long long)(rows * cols) * 8u)
        in->cap_rows = rows;
    else
        in->cap_rows = rows < 1024 ? rows : 1024;
    in->x = malloc((size_t)(in->cap_rows * n_x) * sizeof *in->x);
    in->y = malloc((size_t)(in->cap_rows * (n_y > 0 ? n_y : 1)) * sizeof *in->y);
    if (in->x == NULL || in->y == NULL)
        return nomem(err);
    return 0;
}

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
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
#endif

/* 1 when any of v[0..n) is NaN or +-inf: all exponent bits set. No early exit, so the loop
 * vectorises; the rare bad row is searched again for its first bad value. */
static int any_nonfinite(const double *v, int64_t n)
{
    uint64_t bad = 0;
    for (int64_t k = 0; k < n; ++k) {
        uint64_t u;
        memcpy(&u, &v[k], sizeof u);
        bad |= (uint64_t)((u & 0x7FF0000000000000ULL) == 0x7FF0000000000000ULL);
    }
    return bad != 0;
}

/* Whole rows p[0 .. n*cols*8): split into x and y, noting the first non-finite value. */
static int raw_rows(ingest_t *in, const unsigned char *p, int64_t n)
{
    int64_t n_x = in->n_x, n_y = in->n_y, cols = in->cols;
    if (in->done_rows + n > in->cap_rows) {
        int64_t cap = in->cap_rows * 2;
        while (cap < in->done_rows + n)
            cap *= 2;
        if (cap > in->rows)
            cap = in->rows;
        /* realloc: glibc moves large blocks with mremap, without copying them. */
        double *x = realloc(in->x, (size_t)(cap * n_x) * sizeof *x);
        if (x == NULL)
            return ERR_NOMEM;
        in->x = x;
        double *y = realloc(in->y, (size_t)(cap * (n_y > 0 ? n_y : 1)) * sizeof *y);
        if (y == NULL)
            return ERR_NOMEM;
        in->y = y;
        in->cap_rows = cap;
    }
    for (int64_t r = 0; r < n; ++r, p += cols * 8) {
        int64_t i = in->done_rows++;
        double *xr = in->x + i * n_x, *yr = in->y + i * n_y;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(xr, p, (size_t)n_x * 8u);
        memcpy(yr, p + n_x * 8, (size_t)n_y * 8u);
#else
        for (int64_t j = 0; j < n_x; ++j)
            xr[j] = le_double(p + j * 8);
        for (int64_t j = 0; j < n_y; ++j)
            yr[j] = le_double(p + (n_x + j) * 8);
#endif
        if (in->bad_row < 0 && (any_nonfinite(xr, n_x) || any_nonfinite(yr, n_y))) {
            for (int64_t j = 0; j < cols && in->bad_row < 0; ++j)
                if (!isfinite(j < n_x ? xr[j] : yr[j - n_x])) {
                    in->bad_row = i;
                    in->bad_col = j;
                }
        }
    }
    return 0;
}

static int raw_chunk(ingest_t *in, const char *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t want = (uint64_t)(in->rows * in->cols) * 8u;
    size_t row = (size_t)in->cols * 8u;
    uint64_t room = in->bytes < want ? want - in->bytes : 0;
    in->bytes += n;
    if (room == 0)
        return 0;                /* too long: only the size is reported */
    if (n > room)
        n = (size_t)room;
    if (in->n_part > 0) {
        size_t k = row - in->n_part < n ? row - in->n_part : n;
        memcpy(in->part + in->n_part, p, k);
        in->n_part += k;
        p += k;
        n -= k;
        if (in->n_part < row)
            return 0;
        in->n_part = 0;
        if (raw_rows(in, in->part, 1) < 0)
            return ERR_NOMEM;
    }
    if (n >= row && raw_rows(in, p, (int64_t)(n / row)) < 0)
        return ERR_NOMEM;
    memcpy(in->part, p + n / row * row, n % row);
    in->n_part = n % row;
    return 0;
}

static int raw_finish(ingest_t *in, codec_batch_t *b, err_t *err)
{
    memset(b, 0, sizeof *b);
    int64_t rows = in->rows, cols = in->cols, n_x = in->n_x, n_y = in->n_y;
    /* rows < 2^31 and cols <= 2e6: rows * cols * 8 cannot overflow int64. */
    if (in->bytes != (uint64_t)(rows * cols) * 8u)
        return err_set_field(err, ERR_INVAL, "body",
                             "body has %" PRIu64 " bytes; %" PRId64 " rows x %" PRId64
                             " columns of float64 take %" PRId64, in->bytes, rows, cols,
                             rows * cols * 8);
    if (in->bad_row >= 0) {
        char field[64];
        int64_t i = in->bad_row, j = in->bad_col;
        if (j < n_x)
            snprintf(field, sizeof field, "x[%" PRId64 "][%" PRId64 "]", i, j);
        else if (n_y == 1)
            snprintf(field, sizeof field, "y[%" PRId64 "]", i);
        else
            snprintf(field, sizeof field, "y[%" PRId64 "][%" PRId64 "]", i, j - n_x);
        return err_set_field(err, ERR_INVAL, field,
                             "%s (row %" PRId64 ", column %" PRId64 ") is not a finite "
                             "number", field, i, j);
    }
    b->x = in->x;
    b->y = in->y;
    in->x = in->y = NULL;
    b->rows = (int32_t)rows;
    b->n_x = (int32_t)n_x;
    b->n_y = (int32_t)n_y;
    return 0;
}

/* Sink: headers are in. JSON bodies are accumulated and decoded whole (cJSON). */
static int ingest_begin(http_req_t *req, void **state, err_t *err)
{
    int kind = INGEST_NONE;
    if (http_content_type_is(req, "text/csv"))
        kind = INGEST_CSV;
    else if (http_content_type_is(req, "application/octet-stream"))
        kind = INGEST_RAW;
    else if (http_header(req, "Content-Type") == NULL ||
             http_content_type_is(req, "application/json"))
        return HTTP_SINK_ACCUMULATE;
    ingest_t *in = calloc(1, sizeof *in);
    if (in == NULL)
        return nomem(err);
    *state = in;
    if (kind == INGEST_NONE)
        return 0;                /* the handler answers 415 */
    app_t *app = app_of(req);
    model_t *m = NULL;
    int64_t id = http_param(req, 0);
    if ((in->rc = registry_read_begin(app->registry, id, &m, &in->err)) < 0)
        return 0;                /* e.g. 404: the handler's lock says so first */
    in->n_x = model_n_x(m);
    in->n_y = model_n_y(m);
    model_label_rule(m, &in->label_binary, &in->label_classes);
    registry_read_end(app->registry, id);
    in->kind = kind;
    in->rc = kind == INGEST_CSV ? csv_begin(req, in, &in->err) : raw_begin(req, in, &in->err);
    return in->rc == ERR_NOMEM ? err_set(err, ERR_NOMEM, "%s", in->err.msg) : 0;
}

static int ingest_chunk(void *state, const char *data, size_t n, err_t *err)
{
    ingest_t *in = state;
    if (in->kind == INGEST_NONE || in->rc < 0)
        return HTTP_SINK_DONE;
    if (in->kind == INGEST_CSV)
        return codec_csv_stream_feed(in->csv, data, n, err);
    if (raw_chunk(in, data, n) < 0)
        return nomem(err);
    return 0;
}

/* After the body: the batch streamed in, checked against the model the handler has locked. */
static int ingest_finish(ingest_t *in, int32_t n_x, int32_t n_y, codec_batch_t *b, err_t *err)
{
    memset(b, 0, sizeof *b);
    if (in->rc < 0) {
        *err = in->err;
        return in->rc;
    }
    if (in->n_x != n_x || in->n_y != n_y)
        return err_set(err, ERR_CONFLICT, "the model changed while the batch was uploaded");
    return in->kind == INGEST_CSV ? csv_finish(in, b, err) : raw_finish(in, b, err);
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
    /* Both splits live in one matrix in the data cache: they share the limits. */
    int64_t have = row.rows + row.validation_rows, max = app->limits.max_model_rows;
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
    ingest_t *in = http_body_state(req);
    if (in == NULL && http_header(req, "Content-Type") != NULL &&
        !http_content_type_is(req, "application/json"))
        return err_set(err, ERR_INTERNAL, "batch body was neither streamed nor JSON");
    if (in != NULL && in->kind == INGEST_NONE && in->rc == 0)
        return err_set(err, ERR_MEDIA, "Content-Type must be application/json, text/csv or "
                       "application/octet-stream, not '%.80s'", http_header(req, "Content-Type"));

    codec_batch_t b = {0};
    model_t *m = NULL;
    int64_t batch_id = 0, total = 0;
    int32_t split = STORE_SPLIT_TRAIN, body_split = -1;
    int rc = registry_write_begin(app->registry, id, REGISTRY_SHORT, err);
    if (rc < 0)
        return rc;
    static const char *const json_takes[] = {NULL};
    if ((rc = query_split(req, &split, err)) < 0 ||
        (in == NULL && (rc = query_only(req, json_takes, "application/json", err)) < 0))
        goto out;
    if ((rc = registry_read_begin(app->registry, id, &m, err)) < 0)
        goto out;
    int32_t n_x = model_n_x(m), n_y = model_n_y(m);
    registry_read_end(app->registry, id);
    /* Decode without holding the read copy: a large body must not stall predictions. */
    rc = in != NULL ? ingest_finish(in, n_x, n_y, &b, err)
                    : decode_json(req, n_x, n_y, &b, &body_split, err);
    if (rc < 0)
        goto out;
    if (body_split >= 0) {
        if (http_query(req, "split") != NULL && body_split != split) {
            rc = err_set_field(err, ERR_INVAL, "split", "split: the query says \"%s\" and the "
                               "body \"%s\"; give one, or the same in both",
                               reply_split_name(split), reply_split_name(body_split));
            goto out;
        }
        split = body_split;
    }
    if ((rc = registry_read_begin(app->registry, id, &m, err)) < 0)
        goto out;
    batch_t view = {.rows = b.rows, .n_x = b.n_x, .n_y = b.n_y, .x = b.x, .y = b.y};
    rc = model_check_labels(m, &view, err);
    registry_read_end(app->registry, id);
    if (rc < 0 || (rc = check_model_rows(app, id, &b, err)) < 0)
        goto out;
    rc = store_batch_insert(app->store, id, split, b.rows, b.n_x, b.n_y, b.x, b.y, &batch_id,
                            &total, err);
out:
    registry_write_end(app->registry, id);
    int64_t rows = b.rows;
    codec_batch_free(&b);
    if (rc < 0)
        return rc;
    cJSON *body = cJSON_CreateObject();
    if (body == NULL || !cJSON_AddItemToObject(body, "batch_id", reply_id(batch_id)) ||
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
            !cJSON_AddItemToObject(o, "batch_id", reply_id(rows[i].id)) ||
            !cJSON_AddItemToObject(o, "rows", cJSON_CreateNumber((double)rows[i].rows)) ||
            cJSON_AddStringToObject(o, "split", reply_split_name(rows[i].split)) == NULL ||
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

/* GET /v1/models/{id}/batches/{bid}: the batch's rows as stored, {"batch_id","rows","split",
 * "created_at","x","y"} (y one number per row, or a list per row for several label columns). */
static int batch_get(http_req_t *req, err_t *err)
{
    store_batch_info_t info;
    double *x = NULL, *y = NULL;
    int rc = store_batch_get(app_of(req)->store, http_param(req, 0), http_param(req, 1), &info,
                             &x, &y, err);
    if (rc < 0)
        return rc;
    cJSON *body = cJSON_CreateObject();
    tensor_shape_t xs = {.n_d = 2, .d = {(int32_t)info.rows, info.n_x}};
    tensor_shape_t ys = info.n_y == 1 ? (tensor_shape_t){.n_d = 1, .d = {(int32_t)info.rows, 1}}
                                      : (tensor_shape_t){.n_d = 2, .d = {(int32_t)info.rows,
                                                                         info.n_y}};
    if (body == NULL || !cJSON_AddItemToObject(body, "batch_id", reply_id(info.id)) ||
        !cJSON_AddItemToObject(body, "rows", cJSON_CreateNumber((double)info.rows)) ||
        cJSON_AddStringToObject(body, "split", reply_split_name(info.split)) == NULL ||
        cJSON_AddStringToObject(body, "created_at", info.created_at) == NULL ||
        !cJSON_AddItemToObject(body, "x", codec_tensor_encode(&xs, x)) ||
        !cJSON_AddItemToObject(body, "y", codec_tensor_encode(&ys, y))) {
        cJSON_Delete(body);
        body = NULL;
    }
    free(x);
    free(y);
    if (body == NULL)
        return nomem(err);
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

const http_body_sink_t routes_data_sinks[] = {
    {"POST", "/v1/models/{id}/batches", ingest_begin, ingest_chunk, ingest_free},
    HTTP_SINK_END,
};

const http_route_t routes_data[] = {
    {"POST", "/v1/models/{id}/batches", batch_create, "label_columns,header,rows,cols,split",
     0},
    {"GET", "/v1/models/{id}/batches", batch_list, NULL, 0},
    {"GET", "/v1/models/{id}/batches/{bid}", batch_get, NULL, 0},
    {"DELETE", "/v1/models/{id}/batches/{bid}", batch_delete, NULL, 0},
    HTTP_ROUTE_END,
};
