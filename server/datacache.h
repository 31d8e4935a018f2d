/* server/datacache.h -- stored training rows kept in memory between train calls.
 *
 * Reading a model's batches out of SQLite into one contiguous matrix costs more than a few
 * full-batch steps on it (80 MB: ~100 ms). The cache keeps that matrix per model, keyed by the
 * stamp of its batch set (store_data_stamp_t), so the next call on unchanged data reuses it and
 * a batch added or deleted makes the entry stale. Entries are shared read-only and reference
 * counted; the least recently used ones go when the cache is over its byte budget.
 *
 *     const datacache_entry_t *e = NULL;
 *     if (datacache_rows(dc, store, id, n_x, n_y, &e, &err) < 0) return err.code;
 *     train on e->x, e->y (e == NULL: no rows) ...
 *     datacache_release(dc, e);
 */
#ifndef ND_DATACACHE_H
#define ND_DATACACHE_H

#include <stdint.h>

#include "err.h"
#include "store.h"

typedef struct datacache datacache_t;

typedef struct datacache_entry {
    int64_t rows;                /* train rows */
    int64_t val_rows;            /* validation rows, stored after the train rows */
    int32_t n_x, n_y;
    const double *x;             /* rows × n_x, row major */
    const double *y;             /* rows × n_y; NULL when n_y is 0 */
    const double *val_x;         /* val_rows × n_x (x + rows × n_x) */
    const double *val_y;         /* val_rows × n_y */
} datacache_entry_t;

/* A cache holding at most `budget` bytes of entries not in use (0: keeps nothing). NULL when
 * out of memory. */
datacache_t *datacache_new(int64_t budget);
void datacache_free(datacache_t *dc);

/* The entry of model `id` when its stamp is `stamp` (and the shape n_x × n_y), else NULL.
 * Release it with datacache_release(). */
const datacache_entry_t *datacache_get(datacache_t *dc, int64_t id, const store_data_stamp_t *stamp,
                                       int32_t n_x, int32_t n_y);

/* Take ownership of x and y (malloc'd: `rows` train rows, then `val_rows` validation rows) as
 * the data of model `id` at `stamp`, replacing an older entry, and return it in use. When out
 * of memory the arrays are freed and NULL returned. */
const datacache_entry_t *datacache_put(datacache_t *dc, int64_t id, const store_data_stamp_t *stamp,
                                       int64_t rows, int64_t val_rows, int32_t n_x, int32_t n_y,
                                       double *x, double *y);

void datacache_release(datacache_t *dc, const datacache_entry_t *e);

/* All stored rows of model `id` (n_x + n_y columns), both splits, in use: the cached entry when
 * the model's batches have not changed since they were read, else read from `st` as one
 * snapshot and kept. `*out` is NULL when the model has no rows in either split. Release it
 * with datacache_release(). */
int datacache_rows(datacache_t *dc, store_t *st, int64_t id, int32_t n_x, int32_t n_y,
                   const datacache_entry_t **out, err_t *err);

/* Forget model `id` (deleted); an entry in use goes when released. */
void datacache_drop(datacache_t *dc, int64_t id);

#endif /* ND_DATACACHE_H */
