/* server/db_driver.h -- what a storage driver provides to db.c: one table of functions.
 *
 * db.h's functions are the same for every engine; db.c picks the driver when a database is opened
 * (by the form of its address) and forwards every later call through the object's driver. Each
 * driver's database, connection and statement structs begin with the matching base struct below,
 * so db.c can find the driver from any of them and the driver can cast back to its own struct.
 * Only db.c and the drivers include this header.
 */
#ifndef ND_DB_DRIVER_H
#define ND_DB_DRIVER_H

#include <pthread.h>
#include <stdint.h>

#include "db.h"

typedef struct db_driver {
    const char *dialect;        /* db_dialect(): the schema/<dialect>/ of its migrations */
    int embedded;               /* db_conn_embedded() */
    int (*open)(const char *path, enum db_open_mode mode, const db_config_t *config, db_t **out,
                err_t *err);
    void (*close)(db_t *d);
    int (*conn)(db_t *d, db_conn_t **out, err_t *err);
    void (*thread_end)(db_t *d);
    int (*prepare)(db_conn_t *c, const char *sql, db_stmt_t **out, err_t *err);
    void (*stmt_done)(db_stmt_t *st);
    int (*bind_int64)(db_stmt_t *st, int i, int64_t v, err_t *err);
    int (*bind_double)(db_stmt_t *st, int i, double v, err_t *err);
    int (*bind_text)(db_stmt_t *st, int i, const char *text, err_t *err);
    int (*bind_blob)(db_stmt_t *st, int i, const void *p, int64_t n, err_t *err);
    int (*bind_null)(db_stmt_t *st, int i, err_t *err);
    int (*stmt_writes)(db_stmt_t *st);
    int (*step)(db_stmt_t *st, const char *what, err_t *err);
    int64_t (*column_int64)(db_stmt_t *st, int col);
    double (*column_double)(db_stmt_t *st, int col);
    int (*column_is_null)(db_stmt_t *st, int col);
    const char *(*column_text)(db_stmt_t *st, int col);
    const void *(*column_blob)(db_stmt_t *st, int col, int64_t *bytes);
    int64_t (*changes)(db_conn_t *c);
    int (*begin)(db_conn_t *c, enum db_tx_kind kind, err_t *err);
    int (*commit)(db_conn_t *c, err_t *err);
    void (*rollback)(db_conn_t *c);
    int (*in_tx)(db_conn_t *c);
    int (*exec)(db_conn_t *c, const char *script, const char *what, err_t *err);
    int (*set_durable)(db_conn_t *c, int durable, err_t *err);
    int (*backup)(db_conn_t *c, const char *out_path, err_t *err);
    /* Notifications (db.h); NULL when the engine has none. */
    int (*listen_open)(db_t *d, const char *channel, db_listener_t **out, err_t *err);
    int (*listen_wait)(db_listener_t *l, int timeout_ms, db_notify_fn fn, void *ctx,
                       err_t *err);
    void (*listen_close)(db_listener_t *l);
} db_driver_t;

/* The first member of every driver's database, connection and statement. */
struct db {
    const db_driver_t *driver;
};
struct db_conn {
    const db_driver_t *driver;
    struct db_conn *pool_next;     /* in db_conn_pool_t.conns: every connection of the pool */
    struct db_conn *idle_next;     /* in db_conn_pool_t.idle: released by a thread that ended */
};
struct db_stmt {
    const db_driver_t *driver;
};
struct db_listener {
    const db_driver_t *driver;
};

/*
 * Each thread's connection to a database, the same for every driver: a driver's database
 * embeds one pool and supplies how a connection is opened and freed.
 *
 * A thread finds its connection through one thread-local slot tagged with the database's
 * process-wide unique id, so a stale slot from a closed database is never mistaken for a live
 * one. The slot holds one database at a time: a thread that turns to a second database leaves
 * its connection to the first in the pool's list (freed at close), and takes another one when
 * it turns back. Connections of ended threads are kept, up to DB_POOL_IDLE_MAX, for the next.
 */
#define DB_POOL_IDLE_MAX 8         /* connections kept for threads still to come */

typedef struct db_conn_pool {
    uint64_t uid;                  /* the thread-local slot's tag; never 0 */
    db_t *db;                      /* passed to open_conn */
    int (*open_conn)(db_t *d, db_conn_t **out, err_t *err);
    void (*free_conn)(db_conn_t *c);
    pthread_mutex_t mu;            /* guards conns, idle and n_idle */
    db_conn_t *conns;
    db_conn_t *idle;
    int n_idle;
} db_conn_pool_t;

/* Set up `p` for the database `d` before any other call; cannot fail. */
void db_conn_pool_init(db_conn_pool_t *p, db_t *d,
                       int (*open_conn)(db_t *d, db_conn_t **out, err_t *err),
                       void (*free_conn)(db_conn_t *c));
/* The calling thread's connection: its own, else an idle one, else a new one. */
int db_conn_pool_get(db_conn_pool_t *p, db_conn_t **out, err_t *err);
/* The calling thread is done: its connection, rolled back, is kept idle or freed. */
void db_conn_pool_thread_end(db_conn_pool_t *p);
/* Free every connection; no thread may use the pool any more. */
void db_conn_pool_close(db_conn_pool_t *p);

extern const db_driver_t db_sqlite_driver;     /* db_sqlite.c: a file name */
extern const db_driver_t db_pg_driver;         /* db_pg.c: postgresql:// or postgres:// */

/* 1 when `path` is a PostgreSQL address (a URI libpq accepts), not a file name. */
int db_pg_address(const char *path);

/* A driver records whether the calling thread's last failure was the server out of reach
 * (db_failed_unreachable), and whether it was only a lock another writer held past the busy
 * timeout (db_failed_busy). */
void db_note_unreachable(int unreachable);
void db_note_busy(int busy);

#endif /* ND_DB_DRIVER_H */
