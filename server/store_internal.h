/* server/store_internal.h -- what the store_*.c files share: the store itself and the generic
 * row helpers the SQL of every table is written with. Not for use outside the storage module.
 *
 * Names with two underscores (store__) are internal to the module; store.h has the public ones.
 * A typical read of one row by id:
 *
 *     static const char sql[] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1";
 *     return store__get_row(c, sql, STORE_ARGS(DB_INT(id)), job_read_row, out, "job", id, err);
 */
#ifndef ND_STORE_INTERNAL_H
#define ND_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "err.h"
#include "store.h"

/* How long a statement waits for a lock another connection holds, unless the environment's
 * NEUROND_BUSY_TIMEOUT_MS says otherwise (store_open). */
#define STORE_BUSY_TIMEOUT_MS 5000

#define STORE_UNRELEASED_MAX 64

struct store {
    db_t *db;
    char *path;
    int schema_version;
    pthread_mutex_t ping_mu;       /* guards the ping cache; held during the probe itself */
    int ping_valid;
    int64_t ping_at_ns;
    err_t ping_err;
    _Atomic int64_t replica_id;    /* the last store_replica_register()'s: this process */
    /* Wall-clock ms before which this process judges no other replica dead: a lease after it
     * last failed to beat, or found its own heartbeat late (store__withhold). */
    _Atomic int64_t judge_from_ms;
    /* Leases whose release failed (the storage was unavailable at the run's end): the next
     * heartbeat releases them, else it would keep them alive and the model held for good. */
    pthread_mutex_t leases_mu;
    struct store_lease_ref {
        int64_t model_id, replica_id, epoch;
    } unreleased[STORE_UNRELEASED_MAX];
    int n_unreleased;
};

/* `args, n_args` for the helpers below from a list of db_value_t: STORE_ARGS(DB_INT(id)). */
#define STORE_ARGS(...)                                  \
    (const db_value_t[]){__VA_ARGS__},                   \
        (int)(sizeof((const db_value_t[]){__VA_ARGS__}) / sizeof(db_value_t))
#define STORE_NO_ARGS NULL, 0

/* Reads the current row of `st` into `dst` (one element of the caller's array type), copying
 * what it keeps: the row is gone after the next step. */
typedef int (*store__row_fn)(db_stmt_t *st, void *dst, err_t *err);
/* Releases what a store__row_fn allocated in `row`. */
typedef void (*store__clear_fn)(void *row);

/* Wall-clock milliseconds since the Unix epoch (comparable across processes and machines). */
int64_t store__now_ms(void);

/*
 * Refresh replica `id`'s heartbeat to now (c's write transaction); ERR_NOTFOUND when its row is
 * gone (it was taken for dead). A heartbeat found older than two thirds of `lease_ms` means
 * this process could not beat in time -- it stalled, or the database was away or stalled -- and
 * so store__withhold().
 */
int store__replica_beat(store_t *s, db_conn_t *c, int64_t id, int64_t lease_ms, err_t *err);

/*
 * This process judges no replica dead until `lease_ms` from now: it failed to beat (the
 * database is away) or found its own heartbeat late, and the others' heartbeats may be as late
 * for the same reason -- after an outage of more than about two thirds of a lease some are
 * older than the lease. Within the lease every live replica beats again, and only the dead
 * stay stale.
 */
void store__withhold(store_t *s, int64_t lease_ms);

/* The heartbeat time (wall-clock ms) below which a replica counts as dead at `now_ms`:
 * `now_ms - lease_ms`, or INT64_MIN, below every heartbeat, while this process judges none
 * dead. */
int64_t store__dead_before(store_t *s, int64_t now_ms, int64_t lease_ms);

/* The calling thread's connection to `s`. Borrowed. */
int store__conn(store_t *s, db_conn_t **out, err_t *err);

/* Join the caller's transaction, or start one of `kind`; `*own` says whether
 * store__tx_leave() must end it. */
int store__tx_enter(db_conn_t *c, enum db_tx_kind kind, int *own, err_t *err);
/* End a transaction started by store__tx_enter(): commit when rc == 0, else roll back.
 * Returns rc, or the commit's error. */
int store__tx_leave(db_conn_t *c, int own, int rc, err_t *err);

/*
 * Commits of `c` outside a transaction that a power cut may lose, while the database stays
 * consistent: for writes that a later durable commit carries to disk anyway (the log is written
 * in order), and whose loss alone harms nobody. Inside a caller's transaction the caller's commit
 * decides, and `*relaxed` is 0. Undo with store__relax_end(), which returns rc or its own error.
 */
int store__relax_begin(db_conn_t *c, int *relaxed, err_t *err);
int store__relax_end(db_conn_t *c, int relaxed, int rc, err_t *err);

/* `sql` prepared on `c` with `args` bound: `*out` borrowed, release with db_stmt_done(). On
 * failure nothing is left bound and `*out` is NULL. */
int store__query(db_conn_t *c, const char *sql, const db_value_t *args, int n_args,
                 db_stmt_t **out, err_t *err);

/* Run a statement to its end (rows it returns are skipped). `*changes` (may be NULL) is the
 * number of rows it changed. */
int store__run(db_conn_t *c, const char *sql, const db_value_t *args, int n_args,
               const char *what, int64_t *changes, err_t *err);

/*
 * Run a statement that yields at most one row (a SELECT by key, an INSERT/UPDATE/DELETE ...
 * RETURNING) to its end, reading its first row with `read` into `dst`. No row is ERR_NOTFOUND
 * "<noun> <id> not found"; with `noun` NULL it is no error: the result is then DB_ROW when a
 * row was read and DB_DONE when there was none.
 */
int store__get_row(db_conn_t *c, const char *sql, const db_value_t *args, int n_args,
                   store__row_fn read, void *dst, const char *noun, int64_t id, err_t *err);

/* store__get_row() of the single integer in column 0. */
int store__get_int(db_conn_t *c, const char *sql, const db_value_t *args, int n_args,
                   int64_t *out, const char *noun, int64_t id, err_t *err);

/*
 * Every row of a statement, each read by `read` into a new array of `size`-byte elements:
 * `*out` (NULL when `*n` is 0) is freed with store__rows_free(). With `limit` > 0 at most
 * `limit` rows are read and `*more` (may be NULL) says whether another one followed: bind the
 * SQL's LIMIT to limit + 1.
 */
int store__list(db_conn_t *c, const char *sql, const db_value_t *args, int n_args, size_t size,
                store__row_fn read, store__clear_fn clear, int64_t limit, void **out,
                int64_t *n, int *more, const char *what, err_t *err);

/* Free an array from store__list(), clearing each element with `clear` (may be NULL). */
void store__rows_free(void *rows, int64_t n, size_t size, store__clear_fn clear);

/* store__list() of the rows `sql` (?1 = id) selects for model `id`, in one read snapshot;
 * ERR_NOTFOUND when the model is absent. */
int store__list_of_model(store_t *s, int64_t id, const char *sql, size_t size,
                         store__row_fn read, store__clear_fn clear, void **out, int64_t *n,
                         const char *what, err_t *err);

/* A store__row_fn reading the integer in column 0 into the int64_t at `dst`. */
int store__read_int(db_stmt_t *st, void *dst, err_t *err);

/* ERR_NOTFOUND "model <id> not found" unless model `id` exists. */
int store__model_exists(db_conn_t *c, int64_t id, err_t *err);

/* Column readers. column_doubles: BLOB `col` as a new double array (NULL, *n = 0 when empty).
 * column_strdup: text `col` as a new string, NULL for NULL. column_text_copy: into `dst`. */
int store__column_doubles(db_stmt_t *st, int col, double **out, int64_t *n, err_t *err);
int store__column_strdup(db_stmt_t *st, int col, char **out, err_t *err);
void store__column_text_copy(db_stmt_t *st, int col, char *dst, size_t size);
/* A REAL column as a double, NaN for NULL. */
double store__column_double_or_nan(db_stmt_t *st, int col);

/* Migration 2: the rows of the old one-row-per-step `history` table become chunks
 * (store_history.c), in the migration's transaction. */
int store__history_from_rows(db_conn_t *c, err_t *err);

/* Apply every migration not yet applied to the database of `s`; sets s->schema_version
 * (store_migrate.c). */
int store__migrate(store_t *s, db_conn_t *c, err_t *err);

/* Delete the history records of model `id` with step >= `step` (store_history.c). */
int store__history_truncate(db_conn_t *c, int64_t id, int64_t step, err_t *err);

/* The history_chunks columns, in the order hist_column() reads them. `val` came with migration
 * 3: migration 2 writes chunks without it (STORE_HIST_COLUMNS_V2). */
#define STORE_HIST_COLUMNS_V2 "first_step, last_step, n, stride, at_ms, learning_rate, data"
#define STORE_HIST_COLUMNS STORE_HIST_COLUMNS_V2 ", val"

#endif /* ND_STORE_INTERNAL_H */
