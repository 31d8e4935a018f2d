/* server/store_batches.c -- stored training rows: batches of a model, and their stamp. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "store_internal.h"
#include "tensor.h"

/* Rows, batches, last batch id and train rows of model `id`: the stamp below. */
static const char sql_batch_stamp[] =
    "SELECT COALESCE(SUM(rows), 0), COUNT(*), COALESCE(MAX(id), 0),"
    " COALESCE(SUM(CASE WHEN split = 0 THEN rows ELSE 0 END), 0) FROM batches"
    " WHERE model_id = ?1";

typedef struct batch_totals {
    int64_t rows;                /* of both splits */
    int64_t train_rows;
    store_data_stamp_t stamp;
} batch_totals_t;

static int totals_read_row(db_stmt_t *st, void *dst, err_t *err)
{
    (void)err;
    batch_totals_t *t = dst;
    t->rows = db_column_int64(st, 0);
    t->train_rows = db_column_int64(st, 3);
    t->stamp = (store_data_stamp_t){.batches = db_column_int64(st, 1),
                                    .last_id = db_column_int64(st, 2)};
    return 0;
}

int store_batch_insert(store_t *s, int64_t id, int32_t split, int64_t rows, int32_t n_x,
                       int32_t n_y, const double *x, const double *y, int64_t *batch_id,
                       int64_t *total_rows, err_t *err)
{
    static const char sql_model_train[] =
        "UPDATE models SET rows = rows + ?2, version = version + 1, updated_at = ?3"
        " WHERE id = ?1 AND hidden = 0 RETURNING rows";
    static const char sql_model_val[] =
        "UPDATE models SET validation_rows = validation_rows + ?2, version = version + 1,"
        " updated_at = ?3 WHERE id = ?1 AND hidden = 0 RETURNING validation_rows";
    static const char sql_batch[] =
        "INSERT INTO batches(model_id, rows, n_x, n_y, x, y, created_at, split)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id";
    *batch_id = 0;
    if (split != STORE_SPLIT_TRAIN && split != STORE_SPLIT_VALIDATION)
        return err_set(err, ERR_INTERNAL, "unknown split %d", (int)split);
    const char *sql_model = split == STORE_SPLIT_TRAIN ? sql_model_train : sql_model_val;
    if (rows < 1 || n_x < 1 || n_y < 0)
        return err_set(err, ERR_INVAL, "batch of %" PRId64 " rows x (%d, %d) columns", rows,
                       (int)n_x, (int)n_y);
    if (rows > INT64_MAX / 8 / (n_x + n_y))
        return err_set(err, ERR_TOOBIG, "batch of %" PRId64 " rows is too large", rows);
    db_conn_t *c = NULL;
    int64_t total = 0, bid = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    rc = store__get_int(c, sql_model, STORE_ARGS(DB_INT(id), DB_INT(rows), DB_TEXT(now)), &total,
                        "model", id, err);
    if (rc == 0)
        rc = store__get_row(c, sql_batch,
                            STORE_ARGS(DB_INT(id), DB_INT(rows), DB_INT(n_x), DB_INT(n_y),
                                       DB_DOUBLES(x, rows * n_x), DB_DOUBLES(y, rows * n_y),
                                       DB_TEXT(now), DB_INT(split)),
                            store__read_int, &bid, "model", id, err);
    rc = store__tx_leave(c, own, rc, err);
    if (rc < 0)
        return rc;
    *batch_id = bid;
    if (total_rows != NULL)
        *total_rows = total;
    return 0;
}

static int batch_read_info(db_stmt_t *st, void *dst, err_t *err)
{
    (void)err;
    store_batch_info_t *b = dst;
    b->id = db_column_int64(st, 0);
    b->rows = db_column_int64(st, 1);
    b->n_x = (int32_t)db_column_int64(st, 2);
    b->n_y = (int32_t)db_column_int64(st, 3);
    store__column_text_copy(st, 4, b->created_at, sizeof b->created_at);
    b->split = (int32_t)db_column_int64(st, 5);
    return 0;
}

int store_batch_list(store_t *s, int64_t id, store_batch_info_t **out, int64_t *n, err_t *err)
{
    static const char sql[] =
        "SELECT id, rows, n_x, n_y, created_at, split FROM batches WHERE model_id = ?1"
        " ORDER BY id";
    void *rows = NULL;
    int rc = store__list_of_model(s, id, sql, sizeof **out, batch_read_info, NULL, &rows, n,
                                  "listing batches", err);
    *out = rows;
    return rc;
}

/* The answer for a batch that model `id` does not have. */
static int batch_not_found(int64_t id, int64_t batch_id, err_t *err)
{
    return err_set(err, ERR_NOTFOUND, "batch %" PRId64 " of model %" PRId64 " not found",
                   batch_id, id);
}

/* A batch's info and rows (store_batch_get). */
typedef struct batch_full {
    store_batch_info_t *info;
    double **x, **y;
} batch_full_t;

static int batch_read_full(db_stmt_t *st, void *dst, err_t *err)
{
    batch_full_t *b = dst;
    int64_t nx = 0, ny = 0;
    int rc = batch_read_info(st, b->info, err);
    if (rc == 0 && (rc = store__column_doubles(st, 6, b->x, &nx, err)) == 0)
        rc = store__column_doubles(st, 7, b->y, &ny, err);
    if (rc == 0 && (nx != b->info->rows * b->info->n_x || ny != b->info->rows * b->info->n_y))
        rc = err_set(err, ERR_DB, "batch %" PRId64 " is damaged (sizes disagree)", b->info->id);
    return rc;
}

int store_batch_get(store_t *s, int64_t id, int64_t batch_id, store_batch_info_t *info,
                    double **x, double **y, err_t *err)
{
    static const char sql[] =
        "SELECT id, rows, n_x, n_y, created_at, split, x, y FROM batches"
        " WHERE id = ?2 AND model_id = ?1";
    *x = NULL;
    *y = NULL;
    memset(info, 0, sizeof *info);
    db_conn_t *c = NULL;
    batch_full_t full = {.info = info, .x = x, .y = y};
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_READ, &own, err)) < 0)
        return rc;
    if ((rc = store__model_exists(c, id, err)) == 0) {
        rc = store__get_row(c, sql, STORE_ARGS(DB_INT(id), DB_INT(batch_id)), batch_read_full,
                            &full, "batch", batch_id, err);
        if (rc == ERR_NOTFOUND)
            rc = batch_not_found(id, batch_id, err);
    }
    rc = store__tx_leave(c, own, rc, err);
    if (rc < 0) {
        free(*x);
        free(*y);
        *x = *y = NULL;
    }
    return rc;
}

/* The rows and split of a batch (store_batch_delete). */
typedef struct batch_rows {
    int64_t rows;
    int64_t split;
} batch_rows_t;

static int batch_read_rows(db_stmt_t *st, void *dst, err_t *err)
{
    (void)err;
    batch_rows_t *b = dst;
    b->rows = db_column_int64(st, 0);
    b->split = db_column_int64(st, 1);
    return 0;
}

int store_batch_delete(store_t *s, int64_t id, int64_t batch_id, err_t *err)
{
    static const char sql_del[] =
        "DELETE FROM batches WHERE id = ?2 AND model_id = ?1 RETURNING rows, split";
    static const char sql_model[] =
        "UPDATE models SET rows = rows - ?2, validation_rows = validation_rows - ?4,"
        " version = version + 1, updated_at = ?3 WHERE id = ?1";
    db_conn_t *c = NULL;
    batch_rows_t gone = {0};
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    if ((rc = store__model_exists(c, id, err)) < 0)
        goto out;
    rc = store__get_row(c, sql_del, STORE_ARGS(DB_INT(id), DB_INT(batch_id)), batch_read_rows,
                        &gone, "batch", batch_id, err);
    if (rc == ERR_NOTFOUND)
        rc = batch_not_found(id, batch_id, err);
    if (rc == 0) {
        char now[STORE_TIME_MAX];
        store_now(now);
        int train = gone.split == STORE_SPLIT_TRAIN;
        rc = store__run(c, sql_model,
                        STORE_ARGS(DB_INT(id), DB_INT(train ? gone.rows : 0), DB_TEXT(now),
                                   DB_INT(train ? 0 : gone.rows)),
                        "updating a model", NULL, err);
    }
out:
    return store__tx_leave(c, own, rc, err);
}

int store_batch_stamp(store_t *s, int64_t id, store_data_stamp_t *stamp, err_t *err)
{
    *stamp = (store_data_stamp_t){0};
    db_conn_t *c = NULL;
    batch_totals_t t = {0};
    int rc = store__conn(s, &c, err);
    if (rc == 0)
        rc = store__get_row(c, sql_batch_stamp, STORE_ARGS(DB_INT(id)), totals_read_row, &t,
                            "model", id, err);
    if (rc == 0)
        *stamp = t.stamp;
    return rc;
}

/* Where store_batch_load_all() copies each batch's rows. */
typedef struct batch_sink {
    int32_t n_x, n_y;
    int64_t total, at;           /* rows expected in all; rows copied so far */
    double *x, *y;
} batch_sink_t;

static int batch_copy_rows(db_stmt_t *st, batch_sink_t *k, err_t *err)
{
    int64_t bid = db_column_int64(st, 0), r = db_column_int64(st, 1);
    int64_t bnx = db_column_int64(st, 2), bny = db_column_int64(st, 3);
    if (bnx != k->n_x || bny != k->n_y)
        return err_set(err, ERR_SHAPE, "batch %" PRId64 " has %d+%d columns, expected %d+%d",
                       bid, (int)bnx, (int)bny, (int)k->n_x, (int)k->n_y);
    int64_t bx_bytes = 0, by_bytes = 0;
    const void *bx = db_column_blob(st, 4, &bx_bytes);
    const void *by = db_column_blob(st, 5, &by_bytes);
    if (r < 0 || r > k->total - k->at || bx_bytes != r * k->n_x * 8 ||
        by_bytes != r * k->n_y * 8 || (bx == NULL && bx_bytes > 0) || (by == NULL && by_bytes > 0))
        return err_set(err, ERR_DB, "batch %" PRId64 " is damaged (sizes disagree)", bid);
    if (bx_bytes > 0)
        memcpy(k->x + k->at * k->n_x, bx, (size_t)bx_bytes);
    if (by_bytes > 0)
        memcpy(k->y + k->at * k->n_y, by, (size_t)by_bytes);
    k->at += r;
    return 0;
}

int store_batch_load_all(store_t *s, int64_t id, int32_t n_x, int32_t n_y, int64_t *rows,
                         int64_t *val_rows, double **x, double **y, store_data_stamp_t *stamp,
                         err_t *err)
{
    /* Train rows first: training reads them as one block, evaluation the block after. */
    static const char sql_all[] =
        "SELECT id, rows, n_x, n_y, x, y FROM batches WHERE model_id = ?1 ORDER BY split, id";
    *rows = 0;
    *val_rows = 0;
    *x = NULL;
    *y = NULL;
    db_conn_t *c = NULL;
    db_stmt_t *st = NULL;
    batch_totals_t t = {0};
    batch_sink_t k = {.n_x = n_x, .n_y = n_y};
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_READ, &own, err)) < 0)
        return rc;
    if ((rc = store__model_exists(c, id, err)) < 0 ||
        (rc = store__get_row(c, sql_batch_stamp, STORE_ARGS(DB_INT(id)), totals_read_row, &t,
                             "model", id, err)) < 0)
        goto out;
    if (stamp != NULL)
        *stamp = t.stamp;
    k.total = t.rows;
    if (k.total == 0)
        goto out;
    if (k.total < 0 || n_x < 1 || n_y < 0 || k.total > INT64_MAX / 8 / (n_x + n_y) ||
        (uint64_t)k.total * (uint64_t)(n_x + n_y) * 8u > SIZE_MAX / 2) {
        rc = err_set(err, ERR_TOOBIG, "%" PRId64 " stored rows do not fit in memory", k.total);
        goto out;
    }
    /* Training streams these rows once per step, start to end. */
    k.x = tensor_alloc_rows((size_t)(k.total * n_x) * sizeof *k.x);
    k.y = n_y > 0 ? malloc((size_t)(k.total * n_y) * sizeof *k.y) : NULL;
    if (k.x == NULL || (n_y > 0 && k.y == NULL)) {
        rc = err_set(err, ERR_NOMEM, "out of memory loading %" PRId64 " rows", k.total);
        goto out;
    }
    if ((rc = store__query(c, sql_all, STORE_ARGS(DB_INT(id)), &st, err)) < 0)
        goto out;
    while ((rc = db_step(st, "loading batches", err)) == DB_ROW)
        if ((rc = batch_copy_rows(st, &k, err)) < 0)
            break;
    if (rc == 0 && k.at != k.total)
        rc = err_set(err, ERR_DB, "stored rows changed while loading");
    db_stmt_done(st);
out:
    rc = store__tx_leave(c, own, rc, err);
    if (rc < 0 || k.total == 0) {
        free(k.x);
        free(k.y);
        return rc;
    }
    *rows = t.train_rows;
    *val_rows = k.total - t.train_rows;
    *x = k.x;
    *y = k.y;
    return 0;
}
