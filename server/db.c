/* server/db.c -- the driver interface's front: picks a database's driver when it is opened and
 * forwards every call to it; and the parts that are the same for every engine: the binding of
 * value lists and each thread's connection (db_conn_pool_t). */
#include "db.h"

#include <stdatomic.h>
#include <string.h>

#include "db_driver.h"

static atomic_uint_fast64_t pool_next_uid = 1;
static _Thread_local struct {
    uint64_t uid;
    db_conn_t *conn;
} tl_conn;

void db_conn_pool_init(db_conn_pool_t *p, db_t *d,
                       int (*open_conn)(db_t *d, db_conn_t **out, err_t *err),
                       void (*free_conn)(db_conn_t *c))
{
    *p = (db_conn_pool_t){.uid = atomic_fetch_add(&pool_next_uid, 1), .db = d,
                          .open_conn = open_conn, .free_conn = free_conn};
    pthread_mutex_init(&p->mu, NULL);
}

int db_conn_pool_get(db_conn_pool_t *p, db_conn_t **out, err_t *err)
{
    if (tl_conn.uid == p->uid && tl_conn.conn != NULL) {
        *out = tl_conn.conn;
        return 0;
    }
    *out = NULL;
    pthread_mutex_lock(&p->mu);
    db_conn_t *c = p->idle;
    if (c != NULL) {
        p->idle = c->idle_next;
        p->n_idle--;
        c->idle_next = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (c == NULL) {
        /* Opened outside the lock: a connection can take a network round trip or a file open. */
        int rc = p->open_conn(p->db, &c, err);
        if (rc < 0)
            return rc;
        pthread_mutex_lock(&p->mu);
        c->pool_next = p->conns;
        p->conns = c;
        pthread_mutex_unlock(&p->mu);
    }
    tl_conn.uid = p->uid;
    tl_conn.conn = c;
    *out = c;
    return 0;
}

void db_conn_pool_thread_end(db_conn_pool_t *p)
{
    if (tl_conn.uid != p->uid || tl_conn.conn == NULL)
        return;
    db_conn_t *c = tl_conn.conn;
    tl_conn.conn = NULL;
    c->driver->rollback(c);
    pthread_mutex_lock(&p->mu);
    if (p->n_idle < DB_POOL_IDLE_MAX) {
        /* Kept for the next thread: opening a connection and preparing its statements again
         * cost ~1 ms, a sizeable part of a short train call. */
        c->idle_next = p->idle;
        p->idle = c;
        p->n_idle++;
        pthread_mutex_unlock(&p->mu);
        return;
    }
    for (db_conn_t **link = &p->conns; *link != NULL; link = &(*link)->pool_next) {
        if (*link == c) {
            *link = c->pool_next;
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
    p->free_conn(c);
}

void db_conn_pool_close(db_conn_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    db_conn_t *c = p->conns;
    p->conns = NULL;
    p->idle = NULL;
    p->n_idle = 0;
    pthread_mutex_unlock(&p->mu);
    while (c != NULL) {
        db_conn_t *next = c->pool_next;
        p->free_conn(c);
        c = next;
    }
    if (tl_conn.uid == p->uid)
        tl_conn.conn = NULL;
    pthread_mutex_destroy(&p->mu);
}

int db_pg_address(const char *path)
{
    return strncmp(path, "postgresql://", 13) == 0 || strncmp(path, "postgres://", 11) == 0;
}

int db_address_is_file(const char *path)
{
    return !db_pg_address(path);
}

const char *db_display_name(const char *path)
{
    return db_pg_address(path) ? "PostgreSQL (--db)" : path;
}

int db_open(const char *path, enum db_open_mode mode, const db_config_t *config, db_t **out,
            err_t *err)
{
    const db_driver_t *driver = db_pg_address(path) ? &db_pg_driver : &db_sqlite_driver;
    return driver->open(path, mode, config, out, err);
}

void db_close(db_t *d)
{
    if (d != NULL)
        d->driver->close(d);
}

const char *db_dialect(const db_t *d)
{
    return d->driver->dialect;
}

int db_conn(db_t *d, db_conn_t **out, err_t *err)
{
    return d->driver->conn(d, out, err);
}

void db_thread_end(db_t *d)
{
    if (d != NULL)
        d->driver->thread_end(d);
}

int db_prepare(db_conn_t *c, const char *sql, db_stmt_t **out, err_t *err)
{
    return c->driver->prepare(c, sql, out, err);
}

void db_stmt_done(db_stmt_t *st)
{
    if (st != NULL)
        st->driver->stmt_done(st);
}

int db_bind_int64(db_stmt_t *st, int i, int64_t v, err_t *err)
{
    return st->driver->bind_int64(st, i, v, err);
}

int db_bind_double(db_stmt_t *st, int i, double v, err_t *err)
{
    return st->driver->bind_double(st, i, v, err);
}

int db_bind_text(db_stmt_t *st, int i, const char *text, err_t *err)
{
    return st->driver->bind_text(st, i, text, err);
}

int db_bind_blob(db_stmt_t *st, int i, const void *p, int64_t n, err_t *err)
{
    return st->driver->bind_blob(st, i, p, n, err);
}

int db_bind_null(db_stmt_t *st, int i, err_t *err)
{
    return st->driver->bind_null(st, i, err);
}

int db_stmt_writes(db_stmt_t *st)
{
    return st->driver->stmt_writes(st);
}

int db_step(db_stmt_t *st, const char *what, err_t *err)
{
    return st->driver->step(st, what, err);
}

int64_t db_column_int64(db_stmt_t *st, int col)
{
    return st->driver->column_int64(st, col);
}

double db_column_double(db_stmt_t *st, int col)
{
    return st->driver->column_double(st, col);
}

int db_column_is_null(db_stmt_t *st, int col)
{
    return st->driver->column_is_null(st, col);
}

const char *db_column_text(db_stmt_t *st, int col)
{
    return st->driver->column_text(st, col);
}

const void *db_column_blob(db_stmt_t *st, int col, int64_t *bytes)
{
    return st->driver->column_blob(st, col, bytes);
}

int64_t db_changes(db_conn_t *c)
{
    return c->driver->changes(c);
}

int db_begin(db_conn_t *c, enum db_tx_kind kind, err_t *err)
{
    return c->driver->begin(c, kind, err);
}

int db_commit(db_conn_t *c, err_t *err)
{
    return c->driver->commit(c, err);
}

void db_rollback(db_conn_t *c)
{
    c->driver->rollback(c);
}

int db_in_tx(db_conn_t *c)
{
    return c->driver->in_tx(c);
}

int db_exec(db_conn_t *c, const char *script, const char *what, err_t *err)
{
    return c->driver->exec(c, script, what, err);
}

int db_set_durable(db_conn_t *c, int durable, err_t *err)
{
    return c->driver->set_durable(c, durable, err);
}

int db_conn_embedded(const db_conn_t *c)
{
    return c->driver->embedded;
}

int db_backup(db_conn_t *c, const char *out_path, err_t *err)
{
    return c->driver->backup(c, out_path, err);
}

int db_listen_open(db_t *d, const char *channel, db_listener_t **out, err_t *err)
{
    *out = NULL;
    if (d->driver->listen_open == NULL)
        return err_set(err, ERR_NOTSUPPORTED, "%s has no notifications between processes",
                       d->driver->dialect);
    return d->driver->listen_open(d, channel, out, err);
}

int db_listen_wait(db_listener_t *l, int timeout_ms, db_notify_fn fn, void *ctx, err_t *err)
{
    return l->driver->listen_wait(l, timeout_ms, fn, ctx, err);
}

void db_listen_close(db_listener_t *l)
{
    if (l != NULL)
        l->driver->listen_close(l);
}

int db_bind_values(db_stmt_t *st, const db_value_t *v, int n, err_t *err)
{
    int rc = 0;
    for (int i = 0; i < n && rc == 0; ++i) {
        switch (v[i].kind) {
        case DB_VALUE_INT64:
            rc = db_bind_int64(st, i + 1, v[i].i, err);
            break;
        case DB_VALUE_DOUBLE:
            rc = db_bind_double(st, i + 1, v[i].d, err);
            break;
        case DB_VALUE_TEXT:
            rc = db_bind_text(st, i + 1, v[i].p, err);
            break;
        case DB_VALUE_BLOB:
            rc = db_bind_blob(st, i + 1, v[i].p, v[i].i, err);
            break;
        case DB_VALUE_NULL:
            rc = db_bind_null(st, i + 1, err);
            break;
        }
    }
    return rc;
}

/* The calling thread's last failure was the server out of reach (db_failed_unreachable). */
static _Thread_local int tl_failed_unreachable;

void db_note_unreachable(int unreachable)
{
    tl_failed_unreachable = unreachable;
}

int db_failed_unreachable(void)
{
    return tl_failed_unreachable;
}

/* The calling thread's last failure was a lock held past the busy timeout (db_failed_busy). */
static _Thread_local int tl_failed_busy;

void db_note_busy(int busy)
{
    tl_failed_busy = busy;
}

int db_failed_busy(void)
{
    return tl_failed_busy;
}

void db_failed_busy_clear(void)
{
    tl_failed_busy = 0;
    tl_failed_unreachable = 0;
}
