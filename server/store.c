/* server/store.c -- the store's lifecycle, its transactions, and the generic row helpers the
 * SQL of every table (store_models.c, store_history.c, store_batches.c, store_jobs.c) is
 * written with. The engine underneath is reached only through db.h.
 */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "store_internal.h"

#define STORE_PING_TTL_NS 1000000000LL

/* ---- small helpers ------------------------------------------------------------------------- */

void store_time_str(int64_t ms, char buf[STORE_TIME_MAX])
{
    const time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(buf, STORE_TIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, STORE_TIME_MAX - n, ".%03dZ", (int)(ms % 1000));
}

void store_now(char buf[STORE_TIME_MAX])
{
    store_time_str(store__now_ms(), buf);
}

int64_t store__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000L;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- generic row helpers -------------------------------------------------------------------- */

int store__conn(store_t *s, db_conn_t **out, err_t *err)
{
    return db_conn(s->db, out, err);
}

int store__tx_enter(db_conn_t *c, enum db_tx_kind kind, int *own, err_t *err)
{
    *own = 0;
    if (db_in_tx(c))
        return 0;
    int rc = db_begin(c, kind, err);
    if (rc < 0)
        return rc;
    *own = 1;
    return 0;
}

int store__tx_leave(db_conn_t *c, int own, int rc, err_t *err)
{
    if (!own)
        return rc;
    if (rc < 0) {
        db_rollback(c);
        return rc;
    }
    return db_commit(c, err);
}

int store__relax_begin(db_conn_t *c, int *relaxed, err_t *err)
{
    *relaxed = 0;
    if (db_in_tx(c))
        return 0;
    int rc = db_set_durable(c, 0, err);
    if (rc < 0)
        (void)db_set_durable(c, 1, NULL);   /* it may have taken effect before failing */
    *relaxed = rc == 0;
    return rc;
}

int store__relax_end(db_conn_t *c, int relaxed, int rc, err_t *err)
{
    if (!relaxed)
        return rc;
    /* The connection outlives this call (other statements, other threads): it must not stay
     * relaxed. SQLite refuses the change inside a transaction, so one left open by a failed
     * rollback is rolled back before the second try. */
    err_t serr = {0};
    int src = db_set_durable(c, 1, &serr);
    if (src < 0) {
        if (db_in_tx(c))
            db_rollback(c);
        src = db_set_durable(c, 1, &serr);
    }
    if (src < 0 && rc == 0) {
        if (err != NULL)
            *err = serr;
        rc = src;
    }
    return rc;
}

int store__query(db_conn_t *c, const char *sql, const db_value_t *args, int n_args,
                 db_stmt_t **out, err_t *err)
{
    db_stmt_t *st = NULL;
    int rc = db_prepare(c, sql, &st, err);
    if (rc < 0)
        return rc;
    if ((rc = db_bind_values(st, args, n_args, err)) < 0) {
        db_stmt_done(st);
        *out = NULL;
        return rc;
    }
    *out = st;
    return 0;
}

/* Step `st` until it is done; `rc` is the result of the step before. */
static int finish(db_stmt_t *st, int rc, const char *what, err_t *err)
{
    while (rc == DB_ROW)
        rc = db_step(st, what, err);
    return rc;
}

int store__run(db_conn_t *c, const char *sql, const db_value_t *args, int n_args,
               const char *what, int64_t *changes, err_t *err)
{
    if (changes != NULL)
        *changes = 0;
    db_stmt_t *st = NULL;
    int rc = store__query(c, sql, args, n_args, &st, err);
    if (rc < 0)
        return rc;
    rc = finish(st, db_step(st, what, err), what, err);
    db_stmt_done(st);
    if (rc == 0 && changes != NULL)
        *changes = db_changes(c);
    return rc;
}

int store__get_row(db_conn_t *c, const char *sql, const db_value_t *args, int n_args,
                   store__row_fn read, void *dst, const char *noun, int64_t id, err_t *err)
{
    db_stmt_t *st = NULL;
    int rc = store__query(c, sql, args, n_args, &st, err);
    if (rc < 0)
        return rc;
    const char *what = "reading a row";
    rc = db_step(st, what, err);
    if (rc == DB_DONE && noun != NULL) {
        rc = err_set(err, ERR_NOTFOUND, "%s %" PRId64 " not found", noun, id);
    } else if (rc == DB_ROW) {
        rc = read(st, dst, err);
        /* A RETURNING statement has done its work only once it has stepped to its end; a
         * read is over when its row is read (db_stmt_done() ends it). */
        if (rc == 0 && db_stmt_writes(st))
            rc = finish(st, db_step(st, what, err), what, err);
        if (rc == 0 && noun == NULL)
            rc = DB_ROW;
    }
    db_stmt_done(st);
    return rc;
}

int store__read_int(db_stmt_t *st, void *dst, err_t *err)
{
    (void)err;
    *(int64_t *)dst = db_column_int64(st, 0);
    return 0;
}

int store__get_int(db_conn_t *c, const char *sql, const db_value_t *args, int n_args,
                   int64_t *out, const char *noun, int64_t id, err_t *err)
{
    *out = 0;
    return store__get_row(c, sql, args, n_args, store__read_int, out, noun, id, err);
}

void store__rows_free(void *rows, int64_t n, size_t size, store__clear_fn clear)
{
    if (rows == NULL)
        return;
    for (int64_t i = 0; clear != NULL && i < n; ++i)
        clear((char *)rows + (size_t)i * size);
    free(rows);
}

int store__list(db_conn_t *c, const char *sql, const db_value_t *args, int n_args, size_t size,
                store__row_fn read, store__clear_fn clear, int64_t limit, void **out,
                int64_t *n, int *more, const char *what, err_t *err)
{
    *out = NULL;
    *n = 0;
    if (more != NULL)
        *more = 0;
    db_stmt_t *st = NULL;
    char *rows = NULL;
    int64_t count = 0, cap = 0;
    int rc = store__query(c, sql, args, n_args, &st, err);
    if (rc < 0)
        return rc;
    while ((rc = db_step(st, what, err)) == DB_ROW) {
        if (limit > 0 && count == limit) {
            if (more != NULL)
                *more = 1;
            rc = DB_DONE;
            break;
        }
        if (count == cap) {
            int64_t ncap = cap == 0 ? 16 : cap * 2;
            char *nr = realloc(rows, (size_t)ncap * size);
            if (nr == NULL) {
                rc = err_set(err, ERR_NOMEM, "out of memory while %s", what);
                break;
            }
            rows = nr;
            cap = ncap;
        }
        memset(rows + (size_t)count * size, 0, size);
        if ((rc = read(st, rows + (size_t)count * size, err)) < 0)
            break;
        count++;
    }
    db_stmt_done(st);
    if (rc < 0 || count == 0) {
        store__rows_free(rows, count, size, clear);
        if (more != NULL)
            *more = 0;
        return rc < 0 ? rc : 0;
    }
    *out = rows;
    *n = count;
    return 0;
}

int store__list_of_model(store_t *s, int64_t id, const char *sql, size_t size,
                         store__row_fn read, store__clear_fn clear, void **out, int64_t *n,
                         const char *what, err_t *err)
{
    *out = NULL;
    *n = 0;
    db_conn_t *c = NULL;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_READ, &own, err)) < 0)
        return rc;
    if ((rc = store__model_exists(c, id, err)) == 0)
        rc = store__list(c, sql, STORE_ARGS(DB_INT(id)), size, read, clear, 0, out, n, NULL,
                         what, err);
    rc = store__tx_leave(c, own, rc, err);
    if (rc < 0) {
        store__rows_free(*out, *n, size, clear);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

int store__model_exists(db_conn_t *c, int64_t id, err_t *err)
{
    static const char sql[] = "SELECT 1 FROM models WHERE id = ?1 AND hidden = 0";
    int64_t one = 0;
    return store__get_int(c, sql, STORE_ARGS(DB_INT(id)), &one, "model", id, err);
}

int store__column_doubles(db_stmt_t *st, int col, double **out, int64_t *n, err_t *err)
{
    *out = NULL;
    *n = 0;
    int64_t bytes = 0;
    const void *p = db_column_blob(st, col, &bytes);
    if (bytes % (int64_t)sizeof(double) != 0)
        return err_set(err, ERR_DB, "stored array has %" PRId64 " bytes, not a multiple of 8",
                       bytes);
    if (bytes == 0)
        return 0;
    if (p == NULL)
        return err_set(err, ERR_NOMEM, "out of memory reading %" PRId64 " bytes", bytes);
    double *x = malloc((size_t)bytes);
    if (x == NULL)
        return err_set(err, ERR_NOMEM, "out of memory reading %" PRId64 " bytes", bytes);
    memcpy(x, p, (size_t)bytes);
    *out = x;
    *n = bytes / (int64_t)sizeof(double);
    return 0;
}

int store__column_strdup(db_stmt_t *st, int col, char **out, err_t *err)
{
    const char *t = db_column_text(st, col);
    *out = NULL;
    if (t == NULL)
        return 0;
    if ((*out = strdup(t)) == NULL)
        return err_set(err, ERR_NOMEM, "out of memory reading a text column");
    return 0;
}

void store__column_text_copy(db_stmt_t *st, int col, char *dst, size_t size)
{
    const char *t = db_column_text(st, col);
    snprintf(dst, size, "%s", t != NULL ? t : "");
}

double store__column_double_or_nan(db_stmt_t *st, int col)
{
    return db_column_is_null(st, col) ? NAN : db_column_double(st, col);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* Environment variable `name` as an integer in [lo, hi] into *out; unset leaves *out. */
static int env_int(const char *name, long lo, long hi, const char *unit, int *out, err_t *err)
{
    const char *env = getenv(name);
    if (env == NULL)
        return 0;
    char *end = NULL;
    errno = 0;
    long v = strtol(env, &end, 10);
    if (env[0] == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi)
        return err_set(err, ERR_INVAL, "%s='%.40s': expected an integer in [%ld, %ld] (%s)",
                       name, env, lo, hi, unit);
    *out = (int)v;
    return 0;
}

int store_open(const char *path, store_t **out, err_t *err)
{
    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return err_set(err, ERR_INVAL, "database path is empty");
    /* Tests (and operators with slow disks) may change how long a write waits for a lock held
     * by another process before it is answered 503, and lower the largest value the database
     * stores (to see a too-large value refused without writing a gigabyte); docs/operations.md. */
    db_config_t config = {.busy_ms = STORE_BUSY_TIMEOUT_MS};
    int rc = env_int("NEUROND_BUSY_TIMEOUT_MS", 0, 600000, "milliseconds", &config.busy_ms, err);
    if (rc == 0)
        rc = env_int("NEUROND_SQLITE_MAX_LENGTH", 1000, 1000000000, "bytes", &config.max_length,
                     err);
    if (rc < 0)
        return rc;
    store_t *s = calloc(1, sizeof *s);
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        return err_set(err, ERR_NOMEM, "out of memory opening the database");
    }
    pthread_mutex_init(&s->ping_mu, NULL);
    pthread_mutex_init(&s->leases_mu, NULL);
    db_conn_t *c = NULL;
    rc = db_open(path, DB_OPEN_SERVE, &config, &s->db, err);
    if (rc == 0)
        rc = db_conn(s->db, &c, err);
    if (rc == 0)
        rc = store__migrate(s, c, err);
    if (rc < 0) {
        store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_close(store_t *s)
{
    if (s == NULL)
        return;
    db_close(s->db);
    pthread_mutex_destroy(&s->ping_mu);
    pthread_mutex_destroy(&s->leases_mu);
    free(s->path);
    free(s);
}

void store_thread_end(store_t *s)
{
    if (s != NULL)
        db_thread_end(s->db);
}

int store_schema_version(store_t *s)
{
    return s->schema_version;
}

int store_ping(store_t *s, err_t *err)
{
    static const char sql[] =
        "INSERT INTO meta(key, value) VALUES ('healthz', ?1)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value";
    pthread_mutex_lock(&s->ping_mu);
    int64_t now = mono_ns();
    if (!s->ping_valid || now - s->ping_at_ns >= STORE_PING_TTL_NS) {
        err_t e = {0};
        db_conn_t *c = NULL;
        int rc = store__conn(s, &c, &e);
        if (rc == 0) {
            char ts[STORE_TIME_MAX];
            store_now(ts);
            rc = store__run(c, sql, STORE_ARGS(DB_TEXT(ts)), "probing the database", NULL, &e);
        }
        if (rc < 0 && e.code != ERR_UNAVAILABLE) {
            /* Whatever failed, the answer to "can we write?" is no. */
            char msg[ERR_MSG_MAX];
            snprintf(msg, sizeof msg, "%s", e.msg);
            err_set(&e, ERR_UNAVAILABLE, "%s", msg);
        }
        s->ping_err = e;
        s->ping_at_ns = mono_ns();
        s->ping_valid = 1;
    }
    err_t result = s->ping_err;
    pthread_mutex_unlock(&s->ping_mu);
    if (result.code == 0)
        return 0;
    if (err != NULL)
        *err = result;
    return result.code;
}

const char *store_path(const store_t *s)
{
    return s->path;
}

const char *store_dialect(const store_t *s)
{
    return db_dialect(s->db);
}

int store_address_is_file(const char *path)
{
    return db_address_is_file(path);
}

const char *store_display_name(const char *path)
{
    return db_display_name(path);
}

/* ---- transactions ----------------------------------------------------------------------------- */

/* Start the calling thread's transaction of `kind`; none may be open. */
static int tx_begin(store_t *s, enum db_tx_kind kind, db_conn_t **out, err_t *err)
{
    int rc = store__conn(s, out, err);
    if (rc < 0)
        return rc;
    if (db_in_tx(*out))
        return err_set(err, ERR_INTERNAL, "a transaction is already open");
    db_failed_busy_clear();
    return db_begin(*out, kind, err);
}

int store_begin(store_t *s, err_t *err)
{
    db_conn_t *c = NULL;
    return tx_begin(s, DB_TX_WRITE, &c, err);
}

int store_begin_read(store_t *s, err_t *err)
{
    /* A read transaction takes its snapshot at its first read; reading schema_version now pins
     * it, so every later read of the transaction sees this moment. */
    static const char sql_pin[] = "SELECT 1 FROM schema_version LIMIT 1";
    db_conn_t *c = NULL;
    int rc = tx_begin(s, DB_TX_READ, &c, err);
    if (rc == 0 && (rc = store__run(c, sql_pin, STORE_NO_ARGS, "starting a read", NULL, err)) < 0)
        db_rollback(c);
    return rc;
}

int store_failed_busy(void)
{
    return db_failed_busy();
}

int store_failed_unreachable(void)
{
    return db_failed_unreachable();
}

int store_commit(store_t *s, err_t *err)
{
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    if (rc < 0)
        return rc;
    return db_commit(c, err);
}

void store_rollback(store_t *s)
{
    db_conn_t *c = NULL;
    if (store__conn(s, &c, NULL) == 0)
        db_rollback(c);
}
