/* server/db_sqlite.c -- the SQLite driver of db.h (db_driver.h): the only file that includes
 * sqlite3.h.
 *
 * Each thread gets its own connection (SQLite connections must not be shared across threads
 * without serialising them, and WAL lets readers run beside the one writer), kept by the
 * database's db_conn_pool_t, which closes them all in sq_close(). Statements are prepared once
 * per connection and cached by the address of their SQL literal; a statement is the
 * sqlite3_stmt behind the driver's tag, so the store's column reads go straight to SQLite's.
 */
#include "db_driver.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* WAL pages after a commit that wake the checkpointer (SQLite's own automatic threshold). */
#define DB_CHECKPOINT_PAGES 1000
#define DB_STMT_CACHE 128          /* distinct SQL texts of the store, with room to grow */
#define DB_BACKUP_TRIES 50         /* x 100 ms: a busy timeout, for a source that is locked */

typedef struct sq_db sq_db_t;
typedef struct sq_conn sq_conn_t;
typedef struct sq_stmt {
    db_stmt_t base;
    sqlite3_stmt *raw;
} sq_stmt_t;

struct sq_conn {
    db_conn_t base;
    sqlite3 *db;
    int n_cache;
    struct {
        const char *sql;           /* the literal's address is the key */
        sq_stmt_t st;
    } cache[DB_STMT_CACHE];
    int busy_ms;                   /* the database's busy timeout */
    int64_t busy_since_ns;         /* when the current wait for a lock began (busy_wait) */
};

struct sq_db {
    db_t base;
    char *path;
    enum db_open_mode mode;
    int busy_ms;                   /* busy timeout of every connection */
    int max_length;                /* SQLITE_LIMIT_LENGTH of every connection; 0: default */
    db_conn_pool_t pool;           /* each thread's connection */
    pthread_mutex_t ckpt_mu;       /* guards the checkpointer's flags */
    pthread_cond_t ckpt_cv;
    int ckpt_wanted, ckpt_stop, ckpt_started;
    pthread_t ckpt_thread;
};

static void sq_thread_end(db_t *base);
static void sq_rollback(db_conn_t *base);
static int conn_get(sq_db_t *d, sq_conn_t **out, err_t *err);

static sqlite3_stmt *raw(db_stmt_t *st)
{
    return ((sq_stmt_t *)st)->raw;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * The busy handler, instead of sqlite3_busy_timeout(). SQLite's own backs off to sleeps of
 * 100 ms; but a worker thread waiting for the write lock stalls every connection it serves, and
 * our write transactions last about a millisecond, so another thread's commit frees the lock
 * long before such a sleep ends, and under a stream of commits the sleeper keeps losing the race
 * (measured under bench/load: stalls of one to five seconds). Retry after 50 µs, doubling to at
 * most 1 ms, until the busy timeout has passed.
 */
static int busy_wait(void *arg, int n)
{
    sq_conn_t *c = arg;
    int64_t now = mono_ns();
    if (n == 0)
        c->busy_since_ns = now;
    else if (now - c->busy_since_ns >= (int64_t)c->busy_ms * 1000000)
        return 0;
    long us = n >= 5 ? 1000 : 50L << n;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000};
    nanosleep(&ts, NULL);
    return 1;
}

/*
 * SQLite reports most failed writes as "disk I/O error", and the errno it saw is often gone by
 * the time the error comes back. Name the usual causes from the outside instead: a read-only
 * file system or file, a full one, a file size limit (ulimit -f). 1 with `buf` filled when
 * one applies.
 */
static int io_cause(sqlite3 *db, char *buf, size_t size)
{
    int sys = sqlite3_system_errno(db);
    const char *path = sqlite3_db_filename(db, "main");
    struct statvfs vfs;
    struct rlimit rl;
    char wal[4096];
    if (sys == EROFS || sys == EPERM || sys == EACCES || path == NULL || path[0] == '\0')
        goto errno_only;
    snprintf(wal, sizeof wal, "%s-wal", path);
    if ((statvfs(path, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) || access(path, W_OK) != 0 ||
        (access(wal, F_OK) == 0 && access(wal, W_OK) != 0)) {
        snprintf(buf, size, "storage is read-only");
        return 1;
    }
    if (sys == ENOSPC || sys == EDQUOT || (statvfs(path, &vfs) == 0 && vfs.f_bavail == 0)) {
        snprintf(buf, size, "storage full");
        return 1;
    }
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        snprintf(buf, size, "storage full (the file size limit, ulimit -f, is %llu bytes)",
                 (unsigned long long)rl.rlim_cur);
        return 1;
    }
    if (sys == EFBIG) {
        snprintf(buf, size, "storage full (%s)", strerror(sys));
        return 1;
    }
    return 0;
errno_only:
    if (sys == EROFS || sys == EPERM || sys == EACCES) {
        snprintf(buf, size, "storage is read-only (%s)", strerror(sys));
        return 1;
    }
    return 0;
}

/*
 * The one place SQLite result codes become err codes. Storage trouble (full, read-only, I/O,
 * locked past the busy timeout, corrupt) is ERR_UNAVAILABLE: the request was fine, retrying
 * later may work, and the HTTP layer answers 503. `what` names the operation for the message.
 */
static int sqlite_fail(sqlite3 *db, int rc, const char *what, err_t *err)
{
    db_note_busy((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED);
    const char *detail = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    if ((rc & 0xff) == SQLITE_IOERR && db != NULL) {
        char cause[160];
        if (io_cause(db, cause, sizeof cause))
            return err_set(err, ERR_UNAVAILABLE, "%s while %s: %s", cause, what, detail);
    }
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return err_set(err, ERR_UNAVAILABLE, "storage full while %s: %s", what, detail);
    case SQLITE_READONLY:
        return err_set(err, ERR_UNAVAILABLE, "storage is read-only while %s: %s", what, detail);
    case SQLITE_PERM:
        return err_set(err, ERR_UNAVAILABLE, "storage is read-only while %s: %s", what, detail);
    case SQLITE_IOERR:
    case SQLITE_PROTOCOL:
    case SQLITE_NOLFS:
        return err_set(err, ERR_UNAVAILABLE, "storage I/O error while %s: %s", what, detail);
    case SQLITE_CANTOPEN:
        return err_set(err, ERR_UNAVAILABLE, "cannot open the database while %s: %s", what,
                       detail);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return err_set(err, ERR_UNAVAILABLE, "storage busy while %s: %s", what, detail);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return err_set(err, ERR_UNAVAILABLE, "database file is damaged or not a database "
                       "while %s: %s", what, detail);
    case SQLITE_NOMEM:
        return err_set(err, ERR_NOMEM, "out of memory while %s", what);
    case SQLITE_TOOBIG:
        return err_set(err, ERR_TOOBIG, "value too large to store while %s", what);
    case SQLITE_CONSTRAINT:
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return err_set(err, ERR_CONFLICT, "conflict while %s: %s", what, detail);
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
            return err_set(err, ERR_NOTFOUND, "referenced row not found while %s", what);
        return err_set(err, ERR_DB, "constraint failed while %s: %s", what, detail);
    default:
        return err_set(err, ERR_DB, "storage error while %s: %s", what, detail);
    }
}

static int sqlite_exec(sqlite3 *db, const char *sql, const char *what, err_t *err)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sqlite_fail(db, rc, what, err);
}

static void conn_free(db_conn_t *base)
{
    sq_conn_t *c = (sq_conn_t *)base;
    if (c == NULL)
        return;
    for (int i = 0; i < c->n_cache; ++i)
        sqlite3_finalize(c->cache[i].st.raw);
    sqlite3_close_v2(c->db);
    free(c);
}

/*
 * Checkpoints run on the database's own thread, not in the commit that filled the WAL: SQLite's
 * automatic checkpoint copies the WAL into the database file and fsyncs it inside that commit,
 * which doubled the time of a large batch upload. The hook replaces the automatic checkpoint;
 * it runs in the committing thread and only wakes the checkpointer.
 */
static int wal_committed(void *ctx, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    sq_db_t *d = ctx;
    if (pages >= DB_CHECKPOINT_PAGES) {
        pthread_mutex_lock(&d->ckpt_mu);
        d->ckpt_wanted = 1;
        pthread_cond_signal(&d->ckpt_cv);
        pthread_mutex_unlock(&d->ckpt_mu);
    }
    return SQLITE_OK;
}

static void *checkpointer(void *arg)
{
    sq_db_t *d = arg;
    pthread_mutex_lock(&d->ckpt_mu);
    while (!d->ckpt_stop) {
        if (!d->ckpt_wanted) {
            pthread_cond_wait(&d->ckpt_cv, &d->ckpt_mu);
            continue;
        }
        d->ckpt_wanted = 0;
        pthread_mutex_unlock(&d->ckpt_mu);
        sq_conn_t *c = NULL;
        /* PASSIVE never waits for readers or writers; what it cannot copy now waits for the
         * next wake-up. A failure (disk full, I/O) leaves the WAL as it is: nothing is lost. */
        if (conn_get(d, &c, NULL) == 0)
            sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&d->ckpt_mu);
    }
    pthread_mutex_unlock(&d->ckpt_mu);
    sq_thread_end(&d->base);
    return NULL;
}

/* The pool's open_conn: a connection configured for `d`'s mode. */
static int conn_open(db_t *base, db_conn_t **out, err_t *err)
{
    sq_db_t *d = (sq_db_t *)base;
    *out = NULL;
    sq_conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return err_set(err, ERR_NOMEM, "out of memory opening the database");
    c->base.driver = &db_sqlite_driver;
    /* An existing file is opened read-write without CREATE: reading a WAL database may need to
     * create its -shm file, and a missing file must not become an empty database. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
                (d->mode == DB_OPEN_SERVE ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(d->path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        err_set(err, ERR_UNAVAILABLE, "cannot open database '%s': %s", d->path,
                c->db != NULL ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        conn_free(&c->base);
        return ERR_UNAVAILABLE;
    }
    sqlite3_extended_result_codes(c->db, 1);
    c->busy_ms = d->busy_ms;
    sqlite3_busy_handler(c->db, busy_wait, c);
    if (d->max_length > 0)
        sqlite3_limit(c->db, SQLITE_LIMIT_LENGTH, d->max_length);
    if (d->mode == DB_OPEN_EXISTING) {
        *out = &c->base;
        return 0;
    }
    /* A file that cannot be opened for writing (read-only or immutable for now) is opened
     * read-only by SQLite, and the connection would stay so after the file is writable again:
     * kept for later threads, it would fail their writes for the process's life. */
    if (sqlite3_db_readonly(c->db, "main") == 1) {
        err_set(err, ERR_UNAVAILABLE, "storage is read-only: cannot open database '%s' for "
                "writing", d->path);
        conn_free(&c->base);
        return ERR_UNAVAILABLE;
    }
    sqlite3_wal_hook(c->db, wal_committed, d);
    /* journal_mode first: it must run outside a transaction, and reading the header is also the
     * first point where a file that is not a database is detected. */
    rc = sqlite_exec(c->db, "PRAGMA journal_mode=WAL", "setting WAL mode", err);
    if (rc == 0)
        rc = sqlite_exec(c->db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
                         "configuring the connection", err);
    if (rc < 0) {
        char msg[ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s", err != NULL ? err->msg : "");
        err_set(err, rc, "cannot use database '%s': %s", d->path, msg);
        conn_free(&c->base);
        return rc;
    }
    *out = &c->base;
    return 0;
}

static int conn_get(sq_db_t *d, sq_conn_t **out, err_t *err)
{
    db_conn_t *c = NULL;
    int rc = db_conn_pool_get(&d->pool, &c, err);
    *out = (sq_conn_t *)c;
    return rc;
}

static int sq_conn(db_t *d, db_conn_t **out, err_t *err)
{
    return db_conn_pool_get(&((sq_db_t *)d)->pool, out, err);
}

static void sq_close(db_t *base);

static int sq_open(const char *path, enum db_open_mode mode, const db_config_t *config,
                   db_t **out, err_t *err)
{
    *out = NULL;
    sq_db_t *d = calloc(1, sizeof *d);
    if (d == NULL || (d->path = strdup(path)) == NULL) {
        free(d);
        return err_set(err, ERR_NOMEM, "out of memory opening the database");
    }
    d->base.driver = &db_sqlite_driver;
    d->mode = mode;
    d->busy_ms = config->busy_ms;
    d->max_length = config->max_length;
    db_conn_pool_init(&d->pool, &d->base, conn_open, conn_free);
    pthread_mutex_init(&d->ckpt_mu, NULL);
    pthread_cond_init(&d->ckpt_cv, NULL);
    sq_conn_t *c = NULL;
    int rc = conn_get(d, &c, err);
    if (rc == 0 && mode == DB_OPEN_SERVE) {
        if (pthread_create(&d->ckpt_thread, NULL, checkpointer, d) != 0)
            rc = err_set(err, ERR_NOMEM, "cannot start the checkpoint thread");
        else
            d->ckpt_started = 1;
    }
    if (rc < 0) {
        sq_close(&d->base);
        return rc;
    }
    *out = &d->base;
    return 0;
}

static void sq_close(db_t *base)
{
    sq_db_t *d = (sq_db_t *)base;
    if (d == NULL)
        return;
    if (d->ckpt_started) {
        pthread_mutex_lock(&d->ckpt_mu);
        d->ckpt_stop = 1;
        pthread_cond_signal(&d->ckpt_cv);
        pthread_mutex_unlock(&d->ckpt_mu);
        pthread_join(d->ckpt_thread, NULL);
    }
    db_conn_pool_close(&d->pool);
    pthread_mutex_destroy(&d->ckpt_mu);
    pthread_cond_destroy(&d->ckpt_cv);
    free(d->path);
    free(d);
}

static void sq_thread_end(db_t *base)
{
    if (base != NULL)
        db_conn_pool_thread_end(&((sq_db_t *)base)->pool);
}

/* ---- statements ------------------------------------------------------------------------------ */

static int sq_prepare(db_conn_t *base, const char *sql, db_stmt_t **out, err_t *err)
{
    sq_conn_t *c = (sq_conn_t *)base;
    *out = NULL;
    for (int i = 0; i < c->n_cache; ++i) {
        if (c->cache[i].sql == sql) {
            *out = &c->cache[i].st.base;
            return 0;
        }
    }
    if (c->n_cache == DB_STMT_CACHE)
        return err_set(err, ERR_DB, "statement cache full: raise DB_STMT_CACHE");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK)
        return sqlite_fail(c->db, rc, "preparing a statement", err);
    c->cache[c->n_cache].sql = sql;
    c->cache[c->n_cache].st = (sq_stmt_t){.base.driver = &db_sqlite_driver, .raw = st};
    *out = &c->cache[c->n_cache].st.base;
    c->n_cache++;
    return 0;
}

static void sq_stmt_done(db_stmt_t *st)
{
    if (st == NULL)
        return;
    sqlite3_reset(raw(st));
    sqlite3_clear_bindings(raw(st));
}

static int bind_result(db_stmt_t *st, int rc, err_t *err)
{
    return rc == SQLITE_OK ? 0 : sqlite_fail(sqlite3_db_handle(raw(st)), rc, "binding a value",
                                             err);
}

static int sq_bind_int64(db_stmt_t *st, int i, int64_t v, err_t *err)
{
    return bind_result(st, sqlite3_bind_int64(raw(st), i, v), err);
}

static int sq_bind_double(db_stmt_t *st, int i, double v, err_t *err)
{
    int rc = isfinite(v) ? sqlite3_bind_double(raw(st), i, v) : sqlite3_bind_null(raw(st), i);
    return bind_result(st, rc, err);
}

static int sq_bind_text(db_stmt_t *st, int i, const char *text, err_t *err)
{
    int rc = text == NULL ? sqlite3_bind_null(raw(st), i)
                          : sqlite3_bind_text(raw(st), i, text, -1, SQLITE_TRANSIENT);
    return bind_result(st, rc, err);
}

static int sq_bind_blob(db_stmt_t *st, int i, const void *p, int64_t n, err_t *err)
{
    if (n < 0)
        return err_set(err, ERR_INTERNAL, "db_bind_blob: %lld bytes", (long long)n);
    int rc = n == 0 || p == NULL
                 ? sqlite3_bind_zeroblob(raw(st), i, 0)
                 : sqlite3_bind_blob64(raw(st), i, p, (sqlite3_uint64)n, SQLITE_STATIC);
    return bind_result(st, rc, err);
}

static int sq_bind_null(db_stmt_t *st, int i, err_t *err)
{
    return bind_result(st, sqlite3_bind_null(raw(st), i), err);
}

static int sq_stmt_writes(db_stmt_t *st)
{
    return !sqlite3_stmt_readonly(raw(st));
}

static int sq_step(db_stmt_t *st, const char *what, err_t *err)
{
    int rc = sqlite3_step(raw(st));
    if (rc == SQLITE_ROW)
        return DB_ROW;
    if (rc == SQLITE_DONE)
        return DB_DONE;
    return sqlite_fail(sqlite3_db_handle(raw(st)), rc, what, err);
}

static int64_t sq_column_int64(db_stmt_t *st, int col)
{
    return sqlite3_column_int64(raw(st), col);
}

static double sq_column_double(db_stmt_t *st, int col)
{
    return sqlite3_column_double(raw(st), col);
}

static int sq_column_is_null(db_stmt_t *st, int col)
{
    return sqlite3_column_type(raw(st), col) == SQLITE_NULL;
}

static const char *sq_column_text(db_stmt_t *st, int col)
{
    return (const char *)sqlite3_column_text(raw(st), col);
}

static const void *sq_column_blob(db_stmt_t *st, int col, int64_t *bytes)
{
    /* blob first, then bytes: the order SQLite documents for a value that needs converting. */
    const void *p = sqlite3_column_blob(raw(st), col);
    *bytes = sqlite3_column_bytes(raw(st), col);
    return p;
}

static int64_t sq_changes(db_conn_t *base)
{
    sq_conn_t *c = (sq_conn_t *)base;
    return sqlite3_changes64(c->db);
}

/* ---- transactions and scripts ---------------------------------------------------------------- */

static int sq_begin(db_conn_t *base, enum db_tx_kind kind, err_t *err)
{
    sq_conn_t *c = (sq_conn_t *)base;
    if (!sqlite3_get_autocommit(c->db))
        return err_set(err, ERR_INTERNAL, "a transaction is already open");
    return sqlite_exec(c->db, kind == DB_TX_WRITE ? "BEGIN IMMEDIATE" : "BEGIN",
                       "starting a transaction", err);
}

static int sq_commit(db_conn_t *base, err_t *err)
{
    sq_conn_t *c = (sq_conn_t *)base;
    int rc = sqlite_exec(c->db, "COMMIT", "committing", err);
    if (rc < 0)
        sq_rollback(base);
    return rc;
}

static void sq_rollback(db_conn_t *base)
{
    sq_conn_t *c = (sq_conn_t *)base;
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

static int sq_in_tx(db_conn_t *base)
{
    sq_conn_t *c = (sq_conn_t *)base;
    return !sqlite3_get_autocommit(c->db);
}

static int sq_exec(db_conn_t *base, const char *script, const char *what, err_t *err)
{
    sq_conn_t *c = (sq_conn_t *)base;
    return sqlite_exec(c->db, script, what, err);
}

static int sq_set_durable(db_conn_t *base, int durable, err_t *err)
{
    sq_conn_t *c = (sq_conn_t *)base;
    return sqlite_exec(c->db, durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                       durable ? "restoring full syncs" : "relaxing a sync", err);
}

/* ---- backups --------------------------------------------------------------------------------- */

/* Remove a failed copy and the journal SQLite may have left beside it. */
static void backup_remove(const char *out_path)
{
    char side[4096];
    unlink(out_path);
    static const char *const suffixes[] = {"-journal", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; ++i)
        if ((size_t)snprintf(side, sizeof side, "%s%s", out_path, suffixes[i]) < sizeof side)
            unlink(side);
}

/*
 * Copy the main database of `src` to `out_path` with one sqlite3_backup_step(-1): the whole copy
 * is read inside one read transaction, so it is one committed state, and writers on other
 * connections are never blocked (WAL) and never make the copy restart. Incremental steps would
 * restart after every commit of a training run and might never finish.
 */
static int backup_copy(sqlite3 *src, const char *out_path, err_t *err)
{
    struct stat st;
    if (stat(out_path, &st) == 0 && (!S_ISREG(st.st_mode) || st.st_size > 0))
        return err_set(err, ERR_CONFLICT, "backup file '%s' already exists", out_path);
    if (!sqlite3_get_autocommit(src))
        return err_set(err, ERR_INTERNAL, "backup: called inside a transaction");
    sqlite3 *dst = NULL;
    int rc = 0;
    int sq = sqlite3_open_v2(out_path, &dst,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (sq != SQLITE_OK) {
        rc = err_set(err, ERR_UNAVAILABLE, "cannot create backup file '%s': %s", out_path,
                     dst != NULL ? sqlite3_errmsg(dst) : sqlite3_errstr(sq));
        goto out;
    }
    sqlite3_extended_result_codes(dst, 1);
    sqlite3_busy_timeout(dst, 5000);
    /* The destination is new and private: a rollback journal and a full sync at its commit. */
    if ((rc = sqlite_exec(dst, "PRAGMA synchronous=FULL", "configuring the backup file", err)) < 0)
        goto out;
    for (int tries = 0;; ++tries) {
        sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
        if (b == NULL) {
            rc = sqlite_fail(dst, sqlite3_extended_errcode(dst), "starting a backup", err);
            goto out;
        }
        sq = sqlite3_backup_step(b, -1);
        int fin = sqlite3_backup_finish(b);
        if (sq == SQLITE_DONE && fin == SQLITE_OK)
            break;
        int code = sq != SQLITE_DONE ? sq : fin;
        if (((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED) &&
            tries + 1 < DB_BACKUP_TRIES) {
            sqlite3_sleep(100);
            continue;
        }
        rc = sqlite_fail(dst, code, "copying the database", err);
        goto out;
    }
    /* The copied header says WAL (the source's mode): make the file self-contained. */
    rc = sqlite_exec(dst, "PRAGMA journal_mode=DELETE", "finishing the backup file", err);
out:
    if (dst != NULL && sqlite3_close(dst) != SQLITE_OK && rc == 0)
        rc = err_set(err, ERR_UNAVAILABLE, "cannot close backup file '%s'", out_path);
    if (rc < 0)
        backup_remove(out_path);
    return rc;
}


static int sq_backup(db_conn_t *base, const char *out_path, err_t *err)
{
    sq_conn_t *c = (sq_conn_t *)base;
    return backup_copy(c->db, out_path, err);
}

const db_driver_t db_sqlite_driver = {
    .dialect = "sqlite",
    .embedded = 1,
    .open = sq_open,
    .close = sq_close,
    .conn = sq_conn,
    .thread_end = sq_thread_end,
    .prepare = sq_prepare,
    .stmt_done = sq_stmt_done,
    .bind_int64 = sq_bind_int64,
    .bind_double = sq_bind_double,
    .bind_text = sq_bind_text,
    .bind_blob = sq_bind_blob,
    .bind_null = sq_bind_null,
    .stmt_writes = sq_stmt_writes,
    .step = sq_step,
    .column_int64 = sq_column_int64,
    .column_double = sq_column_double,
    .column_is_null = sq_column_is_null,
    .column_text = sq_column_text,
    .column_blob = sq_column_blob,
    .changes = sq_changes,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .in_tx = sq_in_tx,
    .exec = sq_exec,
    .set_durable = sq_set_durable,
    .backup = sq_backup,
};
