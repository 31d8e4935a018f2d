/* server/store.c -- SQLite persistence: connections, migrations, transactions, every SQL text.
 *
 * Each thread gets its own connection (SQLite connections must not be shared across threads
 * without serialising them, and WAL lets readers run beside the one writer). The connection is
 * found through a thread-local slot tagged with the store's unique id, so a stale slot from an
 * earlier store can never be mistaken for a live one; the store owns the list of connections and
 * closes them all in store_close(). Statements are prepared once per connection and cached by
 * the address of their SQL literal.
 */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "embedded.h"
#include "tensor.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "BLOBs hold little-endian float64 written by memcpy");

#define STORE_BUSY_TIMEOUT_MS 5000
/* WAL pages after a commit that wake the checkpointer (SQLite's own automatic threshold). */
#define STORE_CHECKPOINT_PAGES 1000
#define STORE_IDLE_MAX 8           /* connections kept for threads still to come */
#define STORE_STMT_CACHE 128       /* distinct SQL texts in this file, with room to grow */
#define STORE_PING_TTL_NS 1000000000LL
/* Batch data a fork copies, or a delete removes, per transaction (at least one batch, at most
 * STORE_STEP_BATCHES of them): each transaction holds the write lock only that long. */
#define STORE_STEP_BYTES (1 << 20)
#define STORE_STEP_BATCHES 256
#define STORE_TEXT_(x) #x
#define STORE_TEXT(x) STORE_TEXT_(x)           /* a constant's value inside an SQL literal */

typedef struct conn {
    sqlite3 *db;
    int n_cache;
    struct {
        const char *sql;           /* the literal's address is the key */
        sqlite3_stmt *st;
    } cache[STORE_STMT_CACHE];
    struct conn *next;
    struct conn *idle_next;        /* in store.idle: released by a thread that ended */
    int busy_ms;                   /* the store's busy timeout */
    int64_t busy_since_ns;         /* when the current wait for a lock began (busy_wait) */
    int bind_rc;                   /* first failed bind of the statement in use (bind_*) */
} conn_t;

struct store {
    char *path;
    uint64_t uid;
    int busy_ms;                   /* busy timeout of every connection */
    int max_length;                /* largest string or BLOB stored; 0 = SQLite's default */
    int schema_version;
    pthread_mutex_t mu;            /* guards conns, idle and n_idle */
    conn_t *conns;                 /* every connection */
    conn_t *idle;                  /* connections of ended threads, for the next new thread */
    int n_idle;
    pthread_mutex_t ckpt_mu;       /* guards the checkpointer's flags */
    pthread_cond_t ckpt_cv;
    int ckpt_wanted, ckpt_stop, ckpt_started;
    pthread_t ckpt_thread;
    pthread_mutex_t ping_mu;       /* guards the ping cache; held during the probe itself */
    int ping_valid;
    int64_t ping_at_ns;
    err_t ping_err;
};

static atomic_uint_fast64_t store_next_uid = 1;
static _Thread_local struct {
    uint64_t uid;
    conn_t *conn;
} tl_conn;
/* The calling thread's last storage failure was a lock held past the busy timeout (see
 * store_failed_busy()). Per thread, like the connections. */
static _Thread_local int tl_failed_busy;

/* ---- small helpers ------------------------------------------------------------------------- */

void store_now(char buf[STORE_TIME_MAX])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, STORE_TIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, STORE_TIME_MAX - n, ".%03dZ", (int)((ts.tv_nsec / 1000000L) % 1000));
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
    conn_t *c = arg;
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
static int db_fail(sqlite3 *db, int rc, const char *what, err_t *err)
{
    tl_failed_busy = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
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

static int conn_exec(conn_t *c, const char *sql, const char *what, err_t *err)
{
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_fail(c->db, rc, what, err);
}

static void conn_free(conn_t *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < c->n_cache; ++i)
        sqlite3_finalize(c->cache[i].st);
    sqlite3_close_v2(c->db);
    free(c);
}

/*
 * Checkpoints run on the store's own thread, not in the commit that filled the WAL: SQLite's
 * automatic checkpoint copies the WAL into the database file and fsyncs it inside that commit,
 * which doubled the time of a large batch upload. The hook replaces the automatic checkpoint;
 * it runs in the committing thread and only wakes the checkpointer.
 */
static int wal_committed(void *ctx, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    store_t *s = ctx;
    if (pages >= STORE_CHECKPOINT_PAGES) {
        pthread_mutex_lock(&s->ckpt_mu);
        s->ckpt_wanted = 1;
        pthread_cond_signal(&s->ckpt_cv);
        pthread_mutex_unlock(&s->ckpt_mu);
    }
    return SQLITE_OK;
}

static int conn_get(store_t *s, conn_t **out, err_t *err);

static void *checkpointer(void *arg)
{
    store_t *s = arg;
    pthread_mutex_lock(&s->ckpt_mu);
    while (!s->ckpt_stop) {
        if (!s->ckpt_wanted) {
            pthread_cond_wait(&s->ckpt_cv, &s->ckpt_mu);
            continue;
        }
        s->ckpt_wanted = 0;
        pthread_mutex_unlock(&s->ckpt_mu);
        conn_t *c = NULL;
        /* PASSIVE never waits for readers or writers; what it cannot copy now waits for the
         * next wake-up. A failure (disk full, I/O) leaves the WAL as it is: nothing is lost. */
        if (conn_get(s, &c, NULL) == 0)
            sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&s->ckpt_mu);
    }
    pthread_mutex_unlock(&s->ckpt_mu);
    store_thread_end(s);
    return NULL;
}

static int conn_open(store_t *s, conn_t **out, err_t *err)
{
    *out = NULL;
    conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return err_set(err, ERR_NOMEM, "out of memory opening the database");
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(s->path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        err_set(err, ERR_UNAVAILABLE, "cannot open database '%s': %s", s->path,
                c->db != NULL ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        conn_free(c);
        return ERR_UNAVAILABLE;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_wal_hook(c->db, wal_committed, s);
    c->busy_ms = s->busy_ms;
    sqlite3_busy_handler(c->db, busy_wait, c);
    if (s->max_length > 0)
        sqlite3_limit(c->db, SQLITE_LIMIT_LENGTH, s->max_length);
    /* journal_mode first: it must run outside a transaction, and reading the header is also the
     * first point where a file that is not a database is detected. */
    rc = conn_exec(c, "PRAGMA journal_mode=WAL", "setting WAL mode", err);
    if (rc == 0)
        rc = conn_exec(c, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
                       "configuring the connection", err);
    if (rc < 0) {
        char msg[ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s", err != NULL ? err->msg : "");
        err_set(err, rc, "cannot use database '%s': %s", s->path, msg);
        conn_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* The calling thread's connection to `s`, opened on first use. Borrowed: owned by `s`. */
static int conn_get(store_t *s, conn_t **out, err_t *err)
{
    if (tl_conn.uid == s->uid && tl_conn.conn != NULL) {
        *out = tl_conn.conn;
        return 0;
    }
    *out = NULL;
    pthread_mutex_lock(&s->mu);
    conn_t *c = s->idle;
    if (c != NULL) {
        s->idle = c->idle_next;
        s->n_idle--;
        c->idle_next = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (c == NULL) {
        int rc = conn_open(s, &c, err);
        if (rc < 0)
            return rc;
        pthread_mutex_lock(&s->mu);
        c->next = s->conns;
        s->conns = c;
        pthread_mutex_unlock(&s->mu);
    }
    tl_conn.uid = s->uid;
    tl_conn.conn = c;
    *out = c;
    return 0;
}

/* A prepared statement for the literal `sql`, reset and unbound. Borrowed: release it with
 * stmt_done() before returning, so no read transaction lingers. */
static int stmt_get(conn_t *c, const char *sql, sqlite3_stmt **out, err_t *err)
{
    *out = NULL;
    c->bind_rc = SQLITE_OK;
    for (int i = 0; i < c->n_cache; ++i) {
        if (c->cache[i].sql == sql) {
            *out = c->cache[i].st;
            return 0;
        }
    }
    if (c->n_cache == STORE_STMT_CACHE)
        return err_set(err, ERR_DB, "statement cache full: raise STORE_STMT_CACHE");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK)
        return db_fail(c->db, rc, "preparing a statement", err);
    c->cache[c->n_cache].sql = sql;
    c->cache[c->n_cache].st = st;
    c->n_cache++;
    *out = st;
    return 0;
}

static void stmt_done(sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/*
 * Every bind goes through these: a failed bind (a value over SQLite's length limit, above all)
 * is remembered on the connection and fails the statement's next conn_step() with its code, so
 * no bind result is ignored and no statement ever runs with a parameter silently left NULL.
 * stmt_get() clears it for the next statement.
 */
static void bind_noted(conn_t *c, int rc)
{
    if (rc != SQLITE_OK && c->bind_rc == SQLITE_OK)
        c->bind_rc = rc;
}

static void bind_int64(conn_t *c, sqlite3_stmt *st, int i, int64_t v)
{
    bind_noted(c, sqlite3_bind_int64(st, i, v));
}

static void bind_int(conn_t *c, sqlite3_stmt *st, int i, int v)
{
    bind_noted(c, sqlite3_bind_int(st, i, v));
}

static void bind_double(conn_t *c, sqlite3_stmt *st, int i, double v)
{
    bind_noted(c, sqlite3_bind_double(st, i, v));
}

static void bind_null(conn_t *c, sqlite3_stmt *st, int i)
{
    bind_noted(c, sqlite3_bind_null(st, i));
}

static void bind_text(conn_t *c, sqlite3_stmt *st, int i, const char *v, int n,
                      sqlite3_destructor_type keep)
{
    bind_noted(c, sqlite3_bind_text(st, i, v, n, keep));
}

static void bind_blob64(conn_t *c, sqlite3_stmt *st, int i, const void *v, sqlite3_uint64 n,
                        sqlite3_destructor_type keep)
{
    bind_noted(c, sqlite3_bind_blob64(st, i, v, n, keep));
}

/* sqlite3_step(), or the failure of a bind since stmt_get() without stepping. */
static int conn_step(conn_t *c, sqlite3_stmt *st)
{
    int rc = c->bind_rc;
    if (rc != SQLITE_OK) {
        c->bind_rc = SQLITE_OK;
        return rc;
    }
    return sqlite3_step(st);
}

/* Bind n doubles as a BLOB; an empty array is a zero-length BLOB, not NULL. */
static void bind_doubles(conn_t *c, sqlite3_stmt *st, int i, const double *x, int64_t n)
{
    if (n <= 0 || x == NULL)
        bind_noted(c, sqlite3_bind_zeroblob(st, i, 0));
    else
        bind_blob64(c, st, i, x, (sqlite3_uint64)n * sizeof(double), SQLITE_STATIC);
}

static void bind_text_or_null(conn_t *c, sqlite3_stmt *st, int i, const char *s)
{
    if (s == NULL)
        bind_null(c, st, i);
    else
        bind_text(c, st, i, s, -1, SQLITE_TRANSIENT);
}

/* Copy BLOB column `col` into a new double array. NULL and *n = 0 when empty. */
static int column_doubles(sqlite3_stmt *st, int col, double **out, int64_t *n, err_t *err)
{
    *out = NULL;
    *n = 0;
    const void *p = sqlite3_column_blob(st, col);
    int64_t bytes = sqlite3_column_bytes(st, col);
    if (bytes % (int64_t)sizeof(double) != 0)
        return err_set(err, ERR_DB, "stored array has %" PRId64 " bytes, not a multiple of 8",
                       bytes);
    if (bytes == 0)
        return 0;
    double *x = malloc((size_t)bytes);
    if (x == NULL)
        return err_set(err, ERR_NOMEM, "out of memory reading %" PRId64 " bytes", bytes);
    memcpy(x, p, (size_t)bytes);
    *out = x;
    *n = bytes / (int64_t)sizeof(double);
    return 0;
}

static double column_double_or_nan(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
}

static void column_text_copy(sqlite3_stmt *st, int col, char *dst, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, size, "%s", t != NULL ? (const char *)t : "");
}

/*
 * Join the caller's transaction, or start one: `write` takes the write lock at once (BEGIN
 * IMMEDIATE), otherwise a deferred BEGIN gives a consistent read snapshot. `*own` says whether
 * tx_leave() must end it.
 */
static int tx_enter(conn_t *c, int write, int *own, err_t *err)
{
    *own = 0;
    if (!sqlite3_get_autocommit(c->db))
        return 0;
    int rc = conn_exec(c, write ? "BEGIN IMMEDIATE" : "BEGIN", "starting a transaction", err);
    if (rc < 0)
        return rc;
    *own = 1;
    return 0;
}

/* End a transaction started by tx_enter(): commit when rc == 0, else roll back. Returns rc, or
 * the commit's error. */
static int tx_leave(conn_t *c, int own, int rc, err_t *err)
{
    if (!own)
        return rc;
    if (rc < 0) {
        if (!sqlite3_get_autocommit(c->db))
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    rc = conn_exec(c, "COMMIT", "committing", err);
    if (rc < 0 && !sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Step a statement expected to finish without rows. */
static int step_done(conn_t *c, sqlite3_stmt *st, const char *what, err_t *err)
{
    int rc = conn_step(c, st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        return 0;
    return db_fail(c->db, rc, what, err);
}

/* The one integer `sql` (with ?1 = id) selects from model `id`'s row; ERR_NOTFOUND when the
 * model is absent. */
static int model_int(conn_t *c, const char *sql, int64_t id, int64_t *out, err_t *err)
{
    *out = 0;
    sqlite3_stmt *st = NULL;
    int rc = stmt_get(c, sql, &st, err);
    if (rc < 0)
        return rc;
    bind_int64(c, st, 1, id);
    int src = conn_step(c, st);
    if (src == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else if (src == SQLITE_DONE)
        rc = err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id);
    else
        rc = db_fail(c->db, src, "reading a model", err);
    stmt_done(st);
    return rc;
}

static int model_exists(conn_t *c, int64_t id, err_t *err)
{
    static const char sql[] = "SELECT 1 FROM models WHERE id = ?1 AND hidden = 0";
    int64_t one = 0;
    return model_int(c, sql, id, &one, err);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* Parse "schema/NNN_name.sql" -> NNN; -1 when the path is not a migration. */
static int migration_version(const char *path)
{
    static const char prefix[] = "schema/";
    if (strncmp(path, prefix, sizeof prefix - 1) != 0)
        return -1;
    const char *p = path + sizeof prefix - 1;
    size_t len = strlen(p);
    if (len < 5 || strcmp(p + len - 4, ".sql") != 0)
        return -1;
    int v = 0, digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 6; ++p, ++digits)
        v = v * 10 + (*p - '0');
    if (digits == 0 || *p != '_' || v == 0)
        return -1;
    return v;
}

static int hist_from_rows(conn_t *c, err_t *err);

/* The part of migration `version` SQL cannot express, run in the migration's transaction. */
static int migration_finish(conn_t *c, int version, err_t *err)
{
    return version == 2 ? hist_from_rows(c, err) : 0;
}

static int migrate_one(store_t *s, conn_t *c, int version, const embedded_file_t *f,
                       err_t *err)
{
    static const char sql_has[] = "SELECT 1 FROM schema_version WHERE version = ?1";
    static const char sql_add[] =
        "INSERT INTO schema_version(version, name, applied_at) VALUES (?1, ?2, ?3)";
    sqlite3_stmt *st = NULL;
    int rc = conn_exec(c, "BEGIN IMMEDIATE", "starting a migration", err);
    if (rc < 0)
        return rc;
    /* Re-check inside the write lock: another process may have migrated meanwhile. */
    if ((rc = stmt_get(c, sql_has, &st, err)) < 0)
        goto out;
    bind_int(c, st, 1, version);
    int src = conn_step(c, st);
    stmt_done(st);
    if (src == SQLITE_ROW)
        goto out;
    if (src != SQLITE_DONE) {
        rc = db_fail(c->db, src, "reading schema_version", err);
        goto out;
    }
    char *msg = NULL;
    src = sqlite3_exec(c->db, (const char *)f->data, NULL, NULL, &msg);
    if (src != SQLITE_OK) {
        rc = err_set(err, (src & 0xff) == SQLITE_FULL || (src & 0xff) == SQLITE_READONLY ||
                                  (src & 0xff) == SQLITE_IOERR
                              ? ERR_UNAVAILABLE
                              : ERR_DB,
                     "migration %s failed: %s", f->path, msg != NULL ? msg : sqlite3_errstr(src));
        sqlite3_free(msg);
        goto out;
    }
    if ((rc = migration_finish(c, version, err)) < 0)
        goto out;
    char now[STORE_TIME_MAX];
    store_now(now);
    if ((rc = stmt_get(c, sql_add, &st, err)) < 0)
        goto out;
    bind_int(c, st, 1, version);
    bind_text(c, st, 2, f->path, -1, SQLITE_STATIC);
    bind_text(c, st, 3, now, -1, SQLITE_TRANSIENT);
    rc = step_done(c, st, "recording a migration", err);
    stmt_done(st);
out:
    (void)s;
    return tx_leave(c, 1, rc, err);
}

static int migrate(store_t *s, conn_t *c, err_t *err)
{
    static const char sql_max[] = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
    int rc = conn_exec(c,
                       "CREATE TABLE IF NOT EXISTS schema_version ("
                       " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                       " applied_at TEXT NOT NULL)",
                       "creating schema_version", err);
    if (rc < 0)
        return rc;
    int known = 0;
    for (const embedded_file_t *f = embedded_files; f->path != NULL; ++f) {
        int v = migration_version(f->path);
        if (v < 0)
            continue;
        if (v <= known)
            return err_set(err, ERR_INTERNAL, "migration %s is out of order", f->path);
        known = v;
        if ((rc = migrate_one(s, c, v, f, err)) < 0)
            return rc;
    }
    sqlite3_stmt *st = NULL;
    if ((rc = stmt_get(c, sql_max, &st, err)) < 0)
        return rc;
    int src = conn_step(c, st);
    int have = src == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    stmt_done(st);
    if (src != SQLITE_ROW)
        return db_fail(c->db, src, "reading schema_version", err);
    if (have > known)
        return err_set(err, ERR_UNAVAILABLE,
                       "database schema version %d is newer than this neurond knows (%d): "
                       "upgrade neurond", have, known);
    s->schema_version = have;
    return 0;
}

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
    store_t *s = calloc(1, sizeof *s);
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        return err_set(err, ERR_NOMEM, "out of memory opening the database");
    }
    s->uid = atomic_fetch_add(&store_next_uid, 1);
    s->busy_ms = STORE_BUSY_TIMEOUT_MS;
    /* Tests (and operators with slow disks) may change how long a write waits for a lock held
     * by another process before it is answered 503, and lower the largest value the database
     * stores (to see a too-large value refused without writing a gigabyte); docs/operations.md. */
    int rc = env_int("NEUROND_BUSY_TIMEOUT_MS", 0, 600000, "milliseconds", &s->busy_ms, err);
    if (rc == 0)
        rc = env_int("NEUROND_SQLITE_MAX_LENGTH", 1000, 1000000000, "bytes", &s->max_length,
                     err);
    if (rc < 0) {
        free(s->path);
        free(s);
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->ping_mu, NULL);
    pthread_mutex_init(&s->ckpt_mu, NULL);
    pthread_cond_init(&s->ckpt_cv, NULL);
    conn_t *c = NULL;
    rc = conn_get(s, &c, err);
    if (rc == 0)
        rc = migrate(s, c, err);
    if (rc == 0) {
        if (pthread_create(&s->ckpt_thread, NULL, checkpointer, s) != 0)
            rc = err_set(err, ERR_NOMEM, "cannot start the checkpoint thread");
        else
            s->ckpt_started = 1;
    }
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
    if (s->ckpt_started) {
        pthread_mutex_lock(&s->ckpt_mu);
        s->ckpt_stop = 1;
        pthread_cond_signal(&s->ckpt_cv);
        pthread_mutex_unlock(&s->ckpt_mu);
        pthread_join(s->ckpt_thread, NULL);
    }
    pthread_mutex_lock(&s->mu);
    conn_t *c = s->conns;
    s->conns = NULL;
    s->idle = NULL;
    s->n_idle = 0;
    pthread_mutex_unlock(&s->mu);
    while (c != NULL) {
        conn_t *next = c->next;
        conn_free(c);
        c = next;
    }
    if (tl_conn.uid == s->uid)
        tl_conn.conn = NULL;
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->ping_mu);
    pthread_mutex_destroy(&s->ckpt_mu);
    pthread_cond_destroy(&s->ckpt_cv);
    free(s->path);
    free(s);
}

void store_thread_end(store_t *s)
{
    if (s == NULL || tl_conn.uid != s->uid || tl_conn.conn == NULL)
        return;
    conn_t *c = tl_conn.conn;
    tl_conn.conn = NULL;
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_lock(&s->mu);
    if (s->n_idle < STORE_IDLE_MAX) {
        /* Kept for the next thread: opening a connection and preparing its statements again
         * cost ~1 ms, a sizeable part of a short train call. */
        c->idle_next = s->idle;
        s->idle = c;
        s->n_idle++;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    for (conn_t **p = &s->conns; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    conn_free(c);
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
        conn_t *c = NULL;
        sqlite3_stmt *st = NULL;
        int rc = conn_get(s, &c, &e);
        if (rc == 0)
            rc = stmt_get(c, sql, &st, &e);
        if (rc == 0) {
            char ts[STORE_TIME_MAX];
            store_now(ts);
            bind_text(c, st, 1, ts, -1, SQLITE_TRANSIENT);
            rc = step_done(c, st, "probing the database", &e);
            stmt_done(st);
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

/* ---- backups ---------------------------------------------------------------------------------- */

#define STORE_BACKUP_TRIES 50      /* x 100 ms: the busy timeout, for a source that is locked */

static int db_exec(sqlite3 *db, const char *sql, const char *what, err_t *err)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_fail(db, rc, what, err);
}

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
        return err_set(err, ERR_INTERNAL, "store_backup: called inside a transaction");
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
    sqlite3_busy_timeout(dst, STORE_BUSY_TIMEOUT_MS);
    /* The destination is new and private: a rollback journal and a full sync at its commit. */
    if ((rc = db_exec(dst, "PRAGMA synchronous=FULL", "configuring the backup file", err)) < 0)
        goto out;
    for (int tries = 0;; ++tries) {
        sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
        if (b == NULL) {
            rc = db_fail(dst, sqlite3_extended_errcode(dst), "starting a backup", err);
            goto out;
        }
        sq = sqlite3_backup_step(b, -1);
        int fin = sqlite3_backup_finish(b);
        if (sq == SQLITE_DONE && fin == SQLITE_OK)
            break;
        int code = sq != SQLITE_DONE ? sq : fin;
        if (((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED) &&
            tries + 1 < STORE_BACKUP_TRIES) {
            sqlite3_sleep(100);
            continue;
        }
        rc = db_fail(dst, code, "copying the database", err);
        goto out;
    }
    /* The copied header says WAL (the source's mode): make the file self-contained. */
    rc = db_exec(dst, "PRAGMA journal_mode=DELETE", "finishing the backup file", err);
out:
    if (dst != NULL && sqlite3_close(dst) != SQLITE_OK && rc == 0)
        rc = err_set(err, ERR_UNAVAILABLE, "cannot close backup file '%s'", out_path);
    if (rc < 0)
        backup_remove(out_path);
    return rc;
}

int store_backup(store_t *s, const char *out_path, err_t *err)
{
    conn_t *c = NULL;
    int rc = conn_get(s, &c, err);
    if (rc < 0)
        return rc;
    return backup_copy(c->db, out_path, err);
}

int store_backup_file(const char *db_path, const char *out_path, int *schema_version,
                      err_t *err)
{
    if (schema_version != NULL)
        *schema_version = 0;
    struct stat st;
    if (stat(db_path, &st) != 0)
        return err_set(err, ERR_NOTFOUND, "database '%s' does not exist", db_path);
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    int rc = 0;
    /* Read-write without CREATE: reading a WAL database may need to create its -shm file, and
     * a missing file must not become an empty database. Nothing is written. */
    int src = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (src != SQLITE_OK) {
        rc = err_set(err, ERR_UNAVAILABLE, "cannot open database '%s': %s", db_path,
                     db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(src));
        goto out;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
    src = sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version", -1, &q,
                             NULL);
    if (src != SQLITE_OK) {
        if ((src & 0xff) == SQLITE_ERROR)       /* no such table */
            rc = err_set(err, ERR_INVAL, "'%s' is not a neurond database (no schema_version)",
                         db_path);
        else
            rc = db_fail(db, src, "reading schema_version", err);
        goto out;
    }
    src = sqlite3_step(q);
    if (src != SQLITE_ROW) {
        rc = db_fail(db, src, "reading schema_version", err);
        goto out;
    }
    int version = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    q = NULL;
    if ((rc = backup_copy(db, out_path, err)) < 0)
        goto out;
    if (schema_version != NULL)
        *schema_version = version;
out:
    sqlite3_finalize(q);
    sqlite3_close_v2(db);
    return rc;
}

/* ---- transactions ----------------------------------------------------------------------------- */

/* Start the calling thread's transaction with `sql`; none may be open. */
static int tx_begin(store_t *s, const char *sql, err_t *err)
{
    conn_t *c = NULL;
    int rc = conn_get(s, &c, err);
    if (rc < 0)
        return rc;
    if (!sqlite3_get_autocommit(c->db))
        return err_set(err, ERR_INTERNAL, "a transaction is already open");
    tl_failed_busy = 0;
    if ((rc = conn_exec(c, sql, "starting a transaction", err)) < 0 &&
        !sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int store_begin(store_t *s, err_t *err)
{
    return tx_begin(s, "BEGIN IMMEDIATE", err);
}

int store_begin_read(store_t *s, err_t *err)
{
    /* A deferred BEGIN takes its snapshot at the first read; reading schema_version now pins
     * it, so every later read of the transaction sees this moment. */
    return tx_begin(s, "BEGIN; SELECT 1 FROM schema_version LIMIT 1", err);
}

int store_failed_busy(void)
{
    return tl_failed_busy;
}

int store_commit(store_t *s, err_t *err)
{
    conn_t *c = NULL;
    int rc = conn_get(s, &c, err);
    if (rc < 0)
        return rc;
    return tx_leave(c, 1, 0, err);
}

void store_rollback(store_t *s)
{
    conn_t *c = NULL;
    if (conn_get(s, &c, NULL) < 0)
        return;
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- models ------------------------------------------------------------------------------- */

#define MODEL_COLUMNS \
    "id, name, kind, spec_json, step, status, rows, loss, version, created_at, updated_at," \
    " validation_rows"

void store_model_clear(store_model_t *m)
{
    if (m == NULL)
        return;
    free(m->name);
    free(m->spec_json);
    memset(m, 0, sizeof *m);
}

static int model_read_row(sqlite3_stmt *st, store_model_t *m, err_t *err)
{
    memset(m, 0, sizeof *m);
    m->id = sqlite3_column_int64(st, 0);
    const unsigned char *name = sqlite3_column_text(st, 1);
    const unsigned char *spec = sqlite3_column_text(st, 3);
    if (name != NULL && (m->name = strdup((const char *)name)) == NULL)
        goto nomem;
    if ((m->spec_json = strdup(spec != NULL ? (const char *)spec : "{}")) == NULL)
        goto nomem;
    column_text_copy(st, 2, m->kind, sizeof m->kind);
    m->step = sqlite3_column_int64(st, 4);
    column_text_copy(st, 5, m->status, sizeof m->status);
    m->rows = sqlite3_column_int64(st, 6);
    m->has_loss = sqlite3_column_type(st, 7) != SQLITE_NULL;
    m->loss = m->has_loss ? sqlite3_column_double(st, 7) : 0.0;
    m->version = sqlite3_column_int64(st, 8);
    column_text_copy(st, 9, m->created_at, sizeof m->created_at);
    column_text_copy(st, 10, m->updated_at, sizeof m->updated_at);
    m->validation_rows = sqlite3_column_int64(st, 11);
    return 0;
nomem:
    store_model_clear(m);
    return err_set(err, ERR_NOMEM, "out of memory reading a model");
}

int store_model_insert(store_t *s, const char *name, const char *kind, const char *spec_json,
                       const double *params, int64_t n_params, const double *optim,
                       int64_t n_optim, int64_t *id, err_t *err)
{
    static const char sql_model[] =
        "INSERT INTO models(name, kind, spec_json, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?4)";
    static const char sql_params[] = "INSERT INTO parameters(model_id, data) VALUES (?1, ?2)";
    static const char sql_optim[] = "INSERT INTO optim_state(model_id, data) VALUES (?1, ?2)";
    *id = 0;
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int own = 0, rc = conn_get(s, &c, err);
    if (rc < 0)
        return rc;
    if ((rc = tx_enter(c, 1, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    if ((rc = stmt_get(c, sql_model, &st, err)) < 0)
        goto out;
    bind_text_or_null(c, st, 1, name != NULL && name[0] != '\0' ? name : NULL);
    bind_text(c, st, 2, kind, -1, SQLITE_TRANSIENT);
    bind_text(c, st, 3, spec_json, -1, SQLITE_TRANSIENT);
    bind_text(c, st, 4, now, -1, SQLITE_TRANSIENT);
    rc = step_done(c, st, "inserting a model", err);
    stmt_done(st);
    if (rc == ERR_CONFLICT) {
        rc = err_set_field(err, ERR_CONFLICT, "name", "a model named '%.100s' already exists",
                           name);
        goto out;
    }
    if (rc < 0)
        goto out;
    int64_t new_id = sqlite3_last_insert_rowid(c->db);
    if ((rc = stmt_get(c, sql_params, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, new_id);
    bind_doubles(c, st, 2, params, n_params);
    rc = step_done(c, st, "storing parameters", err);
    stmt_done(st);
    if (rc < 0)
        goto out;
    if ((rc = stmt_get(c, sql_optim, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, new_id);
    bind_doubles(c, st, 2, optim, n_optim);
    rc = step_done(c, st, "storing optimizer state", err);
    stmt_done(st);
    if (rc == 0)
        *id = new_id;
out:
    rc = tx_leave(c, own, rc, err);
    if (rc < 0)
        *id = 0;
    return rc;
}

int store_model_get(store_t *s, int64_t id, store_model_t *out, err_t *err)
{
    static const char sql[] =
        "SELECT " MODEL_COLUMNS " FROM models WHERE id = ?1 AND hidden = 0";
    memset(out, 0, sizeof *out);
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = stmt_get(c, sql, &st, err)) < 0)
        return rc;
    bind_int64(c, st, 1, id);
    int src = conn_step(c, st);
    if (src == SQLITE_ROW)
        rc = model_read_row(st, out, err);
    else if (src == SQLITE_DONE)
        rc = err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id);
    else
        rc = db_fail(c->db, src, "reading a model", err);
    stmt_done(st);
    return rc;
}

void store_model_list_free(store_model_t *rows, int64_t n)
{
    if (rows == NULL)
        return;
    for (int64_t i = 0; i < n; ++i)
        store_model_clear(&rows[i]);
    free(rows);
}

int store_model_list(store_t *s, int64_t limit, int64_t after, store_model_t **out, int64_t *n,
                     int64_t *next, err_t *err)
{
    static const char sql[] =
        "SELECT " MODEL_COLUMNS " FROM models WHERE id > ?1 AND hidden = 0 ORDER BY id LIMIT ?2";
    *out = NULL;
    *n = 0;
    *next = 0;
    if (limit < 1 || limit > 1000)
        return err_set_field(err, ERR_INVAL, "limit", "limit=%" PRId64 " not in [1,1000]", limit);
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    store_model_t *rows = NULL;
    int64_t count = 0;
    int rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = stmt_get(c, sql, &st, err)) < 0)
        return rc;
    if ((rows = calloc((size_t)limit, sizeof *rows)) == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory listing models");
        goto out;
    }
    bind_int64(c, st, 1, after);
    bind_int64(c, st, 2, limit + 1);   /* one more row says whether a next page exists */
    int src;
    while ((src = conn_step(c, st)) == SQLITE_ROW) {
        if (count == limit) {
            *next = rows[count - 1].id;
            break;
        }
        if ((rc = model_read_row(st, &rows[count], err)) < 0)
            goto out;
        count++;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = db_fail(c->db, src, "listing models", err);
out:
    stmt_done(st);
    if (rc < 0) {
        store_model_list_free(rows, count);
        *next = 0;
        return rc;
    }
    if (count == 0) {
        free(rows);
        rows = NULL;
    }
    *out = rows;
    *n = count;
    return 0;
}

int store_model_version(store_t *s, int64_t id, int64_t *version, err_t *err)
{
    static const char sql[] = "SELECT version FROM models WHERE id = ?1 AND hidden = 0";
    conn_t *c = NULL;
    int rc = conn_get(s, &c, err);
    return rc < 0 ? rc : model_int(c, sql, id, version, err);
}

int store_model_set_status(store_t *s, int64_t id, const char *status, err_t *err)
{
    static const char sql[] = "UPDATE models SET status = ?2 WHERE id = ?1 AND hidden = 0";
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = stmt_get(c, sql, &st, err)) < 0)
        return rc;
    /* 'training' is not worth an fsync: a crash resets it (store_jobs_mark_interrupted), and
     * the sync cost a few ms of every train call. A later synced commit carries it to disk
     * anyway (the WAL is written in order). Inside a caller's transaction the caller's commit
     * decides. */
    int relaxed = strcmp(status, "training") == 0 && sqlite3_get_autocommit(c->db);
    if (relaxed && (rc = conn_exec(c, "PRAGMA synchronous=NORMAL", "relaxing a sync", err)) < 0) {
        stmt_done(st);
        return rc;
    }
    bind_int64(c, st, 1, id);
    bind_text(c, st, 2, status, -1, SQLITE_TRANSIENT);
    rc = step_done(c, st, "updating a model's status", err);
    stmt_done(st);
    if (rc == 0 && sqlite3_changes(c->db) == 0)
        rc = err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id);
    if (relaxed) {
        err_t serr = {0};
        int src = conn_exec(c, "PRAGMA synchronous=FULL", "restoring full syncs", &serr);
        if (src < 0 && rc == 0) {
            *err = serr;
            rc = src;
        }
    }
    return rc;
}

/* ---- parameters ------------------------------------------------------------------------------- */

void store_state_clear(store_state_t *st)
{
    if (st == NULL)
        return;
    free(st->params);
    free(st->optim);
    memset(st, 0, sizeof *st);
}

int store_params_get(store_t *s, int64_t id, store_state_t *out, err_t *err)
{
    static const char sql_model[] =
        "SELECT step, version FROM models WHERE id = ?1 AND hidden = 0";
    static const char sql_params[] = "SELECT data FROM parameters WHERE model_id = ?1";
    static const char sql_optim[] = "SELECT data FROM optim_state WHERE model_id = ?1";
    memset(out, 0, sizeof *out);
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int own = 0, src, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 0, &own, err)) < 0)
        return rc;
    if ((rc = stmt_get(c, sql_model, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    src = conn_step(c, st);
    if (src == SQLITE_ROW) {
        out->step = sqlite3_column_int64(st, 0);
        out->version = sqlite3_column_int64(st, 1);
    } else {
        rc = src == SQLITE_DONE ? err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id)
                                : db_fail(c->db, src, "reading a model", err);
    }
    stmt_done(st);
    if (rc < 0)
        goto out;
    if ((rc = stmt_get(c, sql_params, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    src = conn_step(c, st);
    if (src == SQLITE_ROW)
        rc = column_doubles(st, 0, &out->params, &out->n_params, err);
    else if (src != SQLITE_DONE)
        rc = db_fail(c->db, src, "reading parameters", err);
    stmt_done(st);
    if (rc < 0)
        goto out;
    if ((rc = stmt_get(c, sql_optim, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    src = conn_step(c, st);
    if (src == SQLITE_ROW)
        rc = column_doubles(st, 0, &out->optim, &out->n_optim, err);
    else if (src != SQLITE_DONE)
        rc = db_fail(c->db, src, "reading optimizer state", err);
    stmt_done(st);
out:
    rc = tx_leave(c, own, rc, err);
    if (rc < 0)
        store_state_clear(out);
    return rc;
}

int store_params_put(store_t *s, int64_t id, const double *params, int64_t n_params,
                     const double *optim, int64_t n_optim, int64_t step, const double *loss,
                     err_t *err)
{
    static const char sql_model[] =
        "UPDATE models SET version = version + 1, updated_at = ?2,"
        " step = CASE WHEN ?3 >= 0 THEN ?3 ELSE step END,"
        " loss = CASE WHEN ?4 THEN ?5 ELSE loss END"
        " WHERE id = ?1 AND hidden = 0";
    static const char sql_params[] =
        "INSERT INTO parameters(model_id, data) VALUES (?1, ?2)"
        " ON CONFLICT(model_id) DO UPDATE SET data = excluded.data";
    static const char sql_optim[] =
        "INSERT INTO optim_state(model_id, data) VALUES (?1, ?2)"
        " ON CONFLICT(model_id) DO UPDATE SET data = excluded.data";
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int own = 0, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 1, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    if ((rc = stmt_get(c, sql_model, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_text(c, st, 2, now, -1, SQLITE_TRANSIENT);
    bind_int64(c, st, 3, step);
    bind_int(c, st, 4, loss != NULL);
    if (loss != NULL && isfinite(*loss))
        bind_double(c, st, 5, *loss);
    else
        bind_null(c, st, 5);
    rc = step_done(c, st, "updating a model", err);
    stmt_done(st);
    if (rc == 0 && sqlite3_changes(c->db) == 0)
        rc = err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id);
    if (rc < 0)
        goto out;
    if ((rc = stmt_get(c, sql_params, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_doubles(c, st, 2, params, n_params);
    rc = step_done(c, st, "storing parameters", err);
    stmt_done(st);
    if (rc < 0 || optim == NULL)
        goto out;
    if ((rc = stmt_get(c, sql_optim, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_doubles(c, st, 2, optim, n_optim);
    rc = step_done(c, st, "storing optimizer state", err);
    stmt_done(st);
out:
    return tx_leave(c, own, rc, err);
}

/* ---- history ---------------------------------------------------------------------------------- */

/*
 * History lives in chunks (schema/002_history_chunks.sql): one history_chunks row per append,
 * its records packed. What a chunk's records share is stored once: the time of the append, the
 * step stride when the steps are evenly spaced, the learning rate when it is constant. A
 * training commit of 1000 steps is then one INSERT of 16 kB; a row per step cost ~5 µs and
 * ~60 bytes of WAL each, and made recording every step of a fast call 2.7 times slower.
 */
/* Records per chunk at most: a page of GET /history reads whole chunks. */
#define HIST_CHUNK_MAX 4096

typedef struct hist_chunk {
    int64_t first, last, n;
    int64_t stride;              /* steps are first + i·stride; 0: each record holds its step */
    int64_t at_ms;               /* time of the append, ms since 1970-01-01 UTC */
    int lr_shared;               /* 1: every record's learning rate is `lr` */
    int val;                     /* validation values per record: 0, 1 (loss), 2 (+ accuracy) */
    double lr;
    const unsigned char *data;
    char at[STORE_TIME_MAX];
} hist_chunk_t;

static int64_t hist_rec_size(const hist_chunk_t *ch)
{
    return 16 + (ch->stride == 0 ? 8 : 0) + 8 * (int64_t)ch->val + (ch->lr_shared ? 0 : 8);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000L;
}

/* "2026-11-28T04:36:37.123Z", the format of store_now(). */
static void time_from_ms(int64_t ms, char buf[STORE_TIME_MAX])
{
    int64_t sec = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    time_t t = (time_t)sec;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(buf, STORE_TIME_MAX, "1970-01-01T00:00:00.000Z");
        return;
    }
    size_t n = strftime(buf, STORE_TIME_MAX, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, STORE_TIME_MAX - n, ".%03dZ", (int)(ms - sec * 1000));
}

/* Inverse of time_from_ms(); the milliseconds may be absent. -1 when `text` is not such. */
static int time_to_ms(const char *text, int64_t *ms)
{
    struct tm tm = {0};
    int msec = 0, used = 0;
    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6)
        return -1;
    if (text[used] == '.' && sscanf(text + used, ".%3d", &msec) != 1)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *ms = (int64_t)timegm(&tm) * 1000 + msec;
    return 0;
}

/* Record i of a chunk. */
static void hist_get(const hist_chunk_t *ch, int64_t i, store_history_row_t *r)
{
    const unsigned char *p = ch->data + i * hist_rec_size(ch);
    if (ch->stride > 0) {
        r->step = ch->first + i * ch->stride;
    } else {
        memcpy(&r->step, p, 8);
        p += 8;
    }
    memcpy(&r->loss, p, 8);
    memcpy(&r->grad_norm, p + 8, 8);
    p += 16;
    r->val_loss = r->val_accuracy = NAN;
    if (ch->val >= 1)
        memcpy(&r->val_loss, p, 8);
    if (ch->val >= 2)
        memcpy(&r->val_accuracy, p + 8, 8);
    p += 8 * ch->val;
    if (ch->lr_shared)
        r->learning_rate = ch->lr;
    else
        memcpy(&r->learning_rate, p, 8);
    memcpy(r->at, ch->at, STORE_TIME_MAX);
}

static int64_t hist_step(const hist_chunk_t *ch, int64_t i)
{
    if (ch->stride > 0)
        return ch->first + i * ch->stride;
    int64_t step;
    memcpy(&step, ch->data + i * hist_rec_size(ch), 8);
    return step;
}

/* `val` came with migration 3: migration 2 writes chunks without it (HIST_COLUMNS_V2). */
#define HIST_COLUMNS_V2 "first_step, last_step, n, stride, at_ms, learning_rate, data"
#define HIST_COLUMNS HIST_COLUMNS_V2 ", val"

/* The chunk in columns col.. of `st` (HIST_COLUMNS), checked. `data` lives until `st` moves. */
static int hist_column(conn_t *c, sqlite3_stmt *st, int col, hist_chunk_t *ch, err_t *err)
{
    ch->first = sqlite3_column_int64(st, col);
    ch->last = sqlite3_column_int64(st, col + 1);
    ch->n = sqlite3_column_int64(st, col + 2);
    ch->stride = sqlite3_column_int64(st, col + 3);
    ch->at_ms = sqlite3_column_int64(st, col + 4);
    ch->lr_shared = sqlite3_column_type(st, col + 5) != SQLITE_NULL;
    ch->lr = ch->lr_shared ? sqlite3_column_double(st, col + 5) : 0.0;
    ch->data = sqlite3_column_blob(st, col + 6);
    int64_t bytes = sqlite3_column_bytes(st, col + 6);
    ch->val = sqlite3_column_int(st, col + 7);
    if (ch->val < 0 || ch->val > 2)
        return err_set(err, ERR_DB, "history chunk at step %" PRId64 " has val %d", ch->first,
                       ch->val);
    if (ch->data == NULL && bytes > 0)
        return db_fail(c->db, sqlite3_errcode(c->db), "reading history", err);
    if (ch->n < 1 || ch->stride < 0 || bytes != ch->n * hist_rec_size(ch))
        return err_set(err, ERR_DB, "history chunk at step %" PRId64 " of %" PRId64
                       " records has %" PRId64 " bytes", ch->first, ch->n, bytes);
    time_from_ms(ch->at_ms, ch->at);
    return 0;
}

/* Pack `n` (>= 1) rows in ascending step order, all of time `at_ms`, as a new chunk of model
 * `id`. */
static int hist_insert(conn_t *c, int64_t id, const store_history_row_t *rows, int64_t n,
                       int64_t at_ms, err_t *err)
{
    static const char sql[] =
        "INSERT INTO history_chunks(model_id, " HIST_COLUMNS ")"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
    static const char sql_v2[] =
        "INSERT INTO history_chunks(model_id, " HIST_COLUMNS_V2 ")"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    hist_chunk_t ch = {.first = rows[0].step, .last = rows[n - 1].step, .n = n, .at_ms = at_ms,
                       .lr_shared = 1, .lr = rows[0].learning_rate};
    /* The widest record any row needs: a row without validation values stores NaN there. */
    for (int64_t i = 0; i < n; ++i) {
        if (!isnan(rows[i].val_accuracy))
            ch.val = 2;
        else if (!isnan(rows[i].val_loss) && ch.val < 1)
            ch.val = 1;
    }
    ch.stride = n > 1 ? rows[1].step - rows[0].step : 1;
    for (int64_t i = 1; i < n; ++i) {
        if (rows[i].step - rows[i - 1].step != ch.stride)
            ch.stride = 0;
        if (memcmp(&rows[i].learning_rate, &ch.lr, sizeof ch.lr) != 0)
            ch.lr_shared = 0;
    }
    if (!isfinite(ch.lr))
        ch.lr_shared = 0;    /* the column's NULL means "per record" */
    int64_t size = hist_rec_size(&ch);
    unsigned char *buf = malloc((size_t)(n * size));
    if (buf == NULL)
        return err_set(err, ERR_NOMEM, "out of memory writing history");
    unsigned char *p = buf;
    for (int64_t i = 0; i < n; ++i) {
        if (ch.stride == 0) {
            memcpy(p, &rows[i].step, 8);
            p += 8;
        }
        memcpy(p, &rows[i].loss, 8);
        memcpy(p + 8, &rows[i].grad_norm, 8);
        p += 16;
        if (ch.val >= 1)
            memcpy(p, &rows[i].val_loss, 8);
        if (ch.val >= 2)
            memcpy(p + 8, &rows[i].val_accuracy, 8);
        p += 8 * ch.val;
        if (!ch.lr_shared) {
            memcpy(p, &rows[i].learning_rate, 8);
            p += 8;
        }
    }
    sqlite3_stmt *st = NULL;
    int rc = stmt_get(c, ch.val > 0 ? sql : sql_v2, &st, err);
    if (rc == 0) {
        bind_int64(c, st, 1, id);
        bind_int64(c, st, 2, ch.first);
        bind_int64(c, st, 3, ch.last);
        bind_int64(c, st, 4, ch.n);
        bind_int64(c, st, 5, ch.stride);
        bind_int64(c, st, 6, ch.at_ms);
        if (ch.lr_shared)
            bind_double(c, st, 7, ch.lr);
        else
            bind_null(c, st, 7);
        bind_blob64(c, st, 8, buf, (sqlite3_uint64)(n * size), SQLITE_STATIC);
        if (ch.val > 0)
            bind_int(c, st, 9, ch.val);
        rc = step_done(c, st, "writing history", err);
        stmt_done(st);
    }
    free(buf);
    return rc;
}

/* Delete the history records of model `id` with step >= `step`. */
static int hist_truncate(conn_t *c, int64_t id, int64_t step, err_t *err)
{
    static const char sql_delete[] =
        "DELETE FROM history_chunks WHERE model_id = ?1 AND first_step >= ?2";
    static const char sql_straddle[] =
        "SELECT " HIST_COLUMNS " FROM history_chunks"
        " WHERE model_id = ?1 AND first_step < ?2 AND last_step >= ?2";
    static const char sql_drop[] =
        "DELETE FROM history_chunks WHERE model_id = ?1 AND first_step = ?2";
    sqlite3_stmt *st = NULL;
    int rc = stmt_get(c, sql_delete, &st, err);
    if (rc < 0)
        return rc;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, step);
    rc = step_done(c, st, "trimming history", err);
    stmt_done(st);
    if (rc < 0 || (rc = stmt_get(c, sql_straddle, &st, err)) < 0)
        return rc;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, step);
    int src = conn_step(c, st);
    if (src != SQLITE_ROW) {
        stmt_done(st);
        return src == SQLITE_DONE ? 0 : db_fail(c->db, src, "trimming history", err);
    }
    /* Chunks do not overlap: at most one holds records on both sides of `step`. Its records
     * before `step` (at least its first) become a new chunk in its place. */
    hist_chunk_t ch;
    store_history_row_t *keep = NULL;
    int64_t k = 0;
    if ((rc = hist_column(c, st, 0, &ch, err)) == 0) {
        while (k < ch.n && hist_step(&ch, k) < step)
            ++k;
        if ((keep = malloc((size_t)k * sizeof *keep)) == NULL)
            rc = err_set(err, ERR_NOMEM, "out of memory trimming history");
        for (int64_t i = 0; rc == 0 && i < k; ++i)
            hist_get(&ch, i, &keep[i]);
    }
    stmt_done(st);
    if (rc == 0 && (rc = stmt_get(c, sql_drop, &st, err)) == 0) {
        bind_int64(c, st, 1, id);
        bind_int64(c, st, 2, ch.first);
        rc = step_done(c, st, "trimming history", err);
        stmt_done(st);
    }
    if (rc == 0)
        rc = hist_insert(c, id, keep, k, ch.at_ms, err);
    free(keep);
    return rc;
}

int store_history_append(store_t *s, int64_t id, const store_history_row_t *rows, int64_t n,
                         err_t *err)
{
    if (n <= 0)
        return 0;
    for (int64_t i = 1; i < n; ++i)
        if (rows[i].step <= rows[i - 1].step)
            return err_set(err, ERR_INTERNAL, "history rows out of step order (%" PRId64
                           " after %" PRId64 ")", rows[i].step, rows[i - 1].step);
    conn_t *c = NULL;
    int own = 0, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 1, &own, err)) < 0)
        return rc;
    /* A step run again (after a divergence rollback or a restore) supersedes what was recorded
     * from there on: the newest rows describe the trajectory the model is actually on. */
    if ((rc = model_exists(c, id, err)) < 0 || (rc = hist_truncate(c, id, rows[0].step, err)) < 0)
        goto out;
    /* One chunk per run of rows with the same time ("" = now), of at most HIST_CHUNK_MAX. */
    const int64_t now = now_ms();
    for (int64_t i = 0, j; i < n && rc == 0; i = j) {
        int64_t at = now;
        if (rows[i].at[0] != '\0' && time_to_ms(rows[i].at, &at) < 0) {
            rc = err_set(err, ERR_INTERNAL, "history time '%s' is not RFC 3339", rows[i].at);
            break;
        }
        for (j = i + 1; j < n && j - i < HIST_CHUNK_MAX && strcmp(rows[j].at, rows[i].at) == 0;
             ++j)
            ;
        rc = hist_insert(c, id, rows + i, j - i, at, err);
    }
out:
    return tx_leave(c, own, rc, err);
}

/* Migration 2: the rows of the old one-row-per-step `history` table become chunks (one per
 * model and time, as they were appended, at most 1000 records), then the table goes. */
static int hist_from_rows(conn_t *c, err_t *err)
{
    enum { PER_CHUNK = 1000 };
    static const char sql_rows[] =
        "SELECT model_id, step, loss, grad_norm, learning_rate, at FROM history"
        " ORDER BY model_id, step";
    store_history_row_t *run = malloc(PER_CHUNK * sizeof *run);
    if (run == NULL)
        return err_set(err, ERR_NOMEM, "out of memory converting history");
    sqlite3_stmt *st = NULL;
    int64_t model = -1, k = 0, run_at = 0;
    int rc = stmt_get(c, sql_rows, &st, err), src = SQLITE_DONE;
    while (rc == 0 && (src = conn_step(c, st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        store_history_row_t r = {.step = sqlite3_column_int64(st, 1),
                                 .loss = column_double_or_nan(st, 2),
                                 .grad_norm = column_double_or_nan(st, 3),
                                 .learning_rate = column_double_or_nan(st, 4),
                                 .val_loss = NAN, .val_accuracy = NAN};
        column_text_copy(st, 5, r.at, sizeof r.at);
        int64_t at = 0;
        if (time_to_ms(r.at, &at) < 0)
            at = 0;
        if (k > 0 && (id != model || at != run_at || k == PER_CHUNK)) {
            rc = hist_insert(c, model, run, k, run_at, err);
            k = 0;
        }
        model = id;
        run_at = at;
        run[k++] = r;
    }
    if (rc == 0 && src != SQLITE_DONE)
        rc = db_fail(c->db, src, "converting history", err);
    stmt_done(st);
    if (rc == 0 && k > 0)
        rc = hist_insert(c, model, run, k, run_at, err);
    free(run);
    if (rc == 0)
        rc = conn_exec(c, "DROP TABLE history", "converting history", err);
    return rc;
}

/* Grow `*rows` to hold at least `want` rows. */
static int hist_reserve(store_history_row_t **rows, int64_t *cap, int64_t want, err_t *err)
{
    if (want <= *cap)
        return 0;
    int64_t ncap = *cap == 0 ? 64 : *cap;
    while (ncap < want)
        ncap *= 2;
    store_history_row_t *nr = realloc(*rows, (size_t)ncap * sizeof **rows);
    if (nr == NULL)
        return err_set(err, ERR_NOMEM, "out of memory reading history");
    *rows = nr;
    *cap = ncap;
    return 0;
}

int store_history_list(store_t *s, int64_t id, int64_t after_step, int64_t limit,
                       store_history_row_t **out, int64_t *n, int64_t *next, err_t *err)
{
    static const char sql[] =
        "SELECT " HIST_COLUMNS " FROM history_chunks WHERE model_id = ?1 AND last_step > ?2"
        " ORDER BY first_step";
    *out = NULL;
    *n = 0;
    *next = -1;
    if (limit < 1)
        return err_set_field(err, ERR_INVAL, "limit", "limit=%" PRId64 " < 1", limit);
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    store_history_row_t *rows = NULL;
    int64_t count = 0, cap = 0;
    int more = 0;
    int own = 0, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 0, &own, err)) < 0)
        return rc;
    if ((rc = model_exists(c, id, err)) < 0 || (rc = stmt_get(c, sql, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, after_step);
    int src = SQLITE_DONE;
    while (!more && (src = conn_step(c, st)) == SQLITE_ROW) {
        hist_chunk_t ch;
        if ((rc = hist_column(c, st, 0, &ch, err)) < 0)
            goto out;
        for (int64_t i = 0; i < ch.n && !more; ++i) {
            if (hist_step(&ch, i) <= after_step)
                continue;
            if (count == limit) {
                more = 1;
            } else {
                if ((rc = hist_reserve(&rows, &cap, count + 1, err)) < 0)
                    goto out;
                hist_get(&ch, i, &rows[count++]);
            }
        }
    }
    if (!more && src != SQLITE_DONE)
        rc = db_fail(c->db, src, "listing history", err);
out:
    stmt_done(st);
    rc = tx_leave(c, own, rc, err);
    if (rc < 0 || count == 0) {
        free(rows);
        return rc;
    }
    if (more)
        *next = rows[count - 1].step;
    *out = rows;
    *n = count;
    return 0;
}

/* ---- batches ---------------------------------------------------------------------------------- */

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
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    *batch_id = 0;
    if (split != STORE_SPLIT_TRAIN && split != STORE_SPLIT_VALIDATION)
        return err_set(err, ERR_INTERNAL, "unknown split %d", (int)split);
    const char *sql_model = split == STORE_SPLIT_TRAIN ? sql_model_train : sql_model_val;
    if (rows < 1 || n_x < 1 || n_y < 0)
        return err_set(err, ERR_INVAL, "batch of %" PRId64 " rows x (%d, %d) columns", rows,
                       (int)n_x, (int)n_y);
    if (rows > INT64_MAX / 8 / (n_x + n_y))
        return err_set(err, ERR_TOOBIG, "batch of %" PRId64 " rows is too large", rows);
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int64_t total = 0;
    int own = 0, src, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 1, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    if ((rc = stmt_get(c, sql_model, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, rows);
    bind_text(c, st, 3, now, -1, SQLITE_TRANSIENT);
    src = conn_step(c, st);
    if (src == SQLITE_ROW)
        total = sqlite3_column_int64(st, 0);
    else if (src == SQLITE_DONE)
        rc = err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id);
    else
        rc = db_fail(c->db, src, "updating a model", err);
    stmt_done(st);
    if (rc < 0)
        goto out;
    if ((rc = stmt_get(c, sql_batch, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, rows);
    bind_int(c, st, 3, n_x);
    bind_int(c, st, 4, n_y);
    bind_doubles(c, st, 5, x, rows * n_x);
    bind_doubles(c, st, 6, y, rows * n_y);
    bind_text(c, st, 7, now, -1, SQLITE_TRANSIENT);
    bind_int(c, st, 8, split);
    rc = step_done(c, st, "storing a batch", err);
    stmt_done(st);
    if (rc == 0)
        *batch_id = sqlite3_last_insert_rowid(c->db);
out:
    rc = tx_leave(c, own, rc, err);
    if (rc < 0) {
        *batch_id = 0;
        return rc;
    }
    if (total_rows != NULL)
        *total_rows = total;
    return 0;
}

int store_batch_list(store_t *s, int64_t id, store_batch_info_t **out, int64_t *n, err_t *err)
{
    static const char sql[] =
        "SELECT id, rows, n_x, n_y, created_at, split FROM batches WHERE model_id = ?1"
        " ORDER BY id";
    *out = NULL;
    *n = 0;
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    store_batch_info_t *rows = NULL;
    int64_t count = 0, cap = 0;
    int own = 0, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 0, &own, err)) < 0)
        return rc;
    if ((rc = model_exists(c, id, err)) < 0)
        goto out;
    if ((rc = stmt_get(c, sql, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    int src;
    while ((src = conn_step(c, st)) == SQLITE_ROW) {
        if (count == cap) {
            int64_t ncap = cap == 0 ? 16 : cap * 2;
            store_batch_info_t *nr = realloc(rows, (size_t)ncap * sizeof *rows);
            if (nr == NULL) {
                rc = err_set(err, ERR_NOMEM, "out of memory listing batches");
                goto out;
            }
            rows = nr;
            cap = ncap;
        }
        store_batch_info_t *b = &rows[count++];
        b->id = sqlite3_column_int64(st, 0);
        b->rows = sqlite3_column_int64(st, 1);
        b->n_x = sqlite3_column_int(st, 2);
        b->n_y = sqlite3_column_int(st, 3);
        column_text_copy(st, 4, b->created_at, sizeof b->created_at);
        b->split = sqlite3_column_int(st, 5);
    }
    if (src != SQLITE_DONE)
        rc = db_fail(c->db, src, "listing batches", err);
out:
    stmt_done(st);
    rc = tx_leave(c, own, rc, err);
    if (rc < 0 || count == 0) {
        free(rows);
        return rc;
    }
    *out = rows;
    *n = count;
    return 0;
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
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int64_t nx = 0, ny = 0;
    int own = 0, src, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 0, &own, err)) < 0)
        return rc;
    if ((rc = model_exists(c, id, err)) < 0 || (rc = stmt_get(c, sql, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, batch_id);
    src = conn_step(c, st);
    if (src == SQLITE_DONE) {
        rc = err_set(err, ERR_NOTFOUND, "batch %" PRId64 " of model %" PRId64 " not found",
                     batch_id, id);
        goto out;
    }
    if (src != SQLITE_ROW) {
        rc = db_fail(c->db, src, "reading a batch", err);
        goto out;
    }
    info->id = sqlite3_column_int64(st, 0);
    info->rows = sqlite3_column_int64(st, 1);
    info->n_x = sqlite3_column_int(st, 2);
    info->n_y = sqlite3_column_int(st, 3);
    column_text_copy(st, 4, info->created_at, sizeof info->created_at);
    info->split = sqlite3_column_int(st, 5);
    if ((rc = column_doubles(st, 6, x, &nx, err)) == 0)
        rc = column_doubles(st, 7, y, &ny, err);
    if (rc == 0 && (nx != info->rows * info->n_x || ny != info->rows * info->n_y))
        rc = err_set(err, ERR_DB, "batch %" PRId64 " is damaged (sizes disagree)", batch_id);
out:
    stmt_done(st);
    rc = tx_leave(c, own, rc, err);
    if (rc < 0) {
        free(*x);
        free(*y);
        *x = *y = NULL;
    }
    return rc;
}

int store_batch_delete(store_t *s, int64_t id, int64_t batch_id, err_t *err)
{
    static const char sql_del[] =
        "DELETE FROM batches WHERE id = ?2 AND model_id = ?1 RETURNING rows, split";
    static const char sql_model[] =
        "UPDATE models SET rows = rows - ?2, validation_rows = validation_rows - ?4,"
        " version = version + 1, updated_at = ?3 WHERE id = ?1";
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int64_t rows = 0;
    int split = STORE_SPLIT_TRAIN;
    int own = 0, src, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 1, &own, err)) < 0)
        return rc;
    if ((rc = model_exists(c, id, err)) < 0)
        goto out;
    if ((rc = stmt_get(c, sql_del, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, batch_id);
    src = conn_step(c, st);
    if (src == SQLITE_ROW) {
        rows = sqlite3_column_int64(st, 0);
        split = sqlite3_column_int(st, 1);
        src = conn_step(c, st);    /* finish the statement so the delete is complete */
    } else if (src == SQLITE_DONE) {
        rc = err_set(err, ERR_NOTFOUND, "batch %" PRId64 " of model %" PRId64 " not found",
                     batch_id, id);
    }
    if (rc == 0 && src != SQLITE_DONE)
        rc = db_fail(c->db, src, "deleting a batch", err);
    stmt_done(st);
    if (rc < 0)
        goto out;
    char now[STORE_TIME_MAX];
    store_now(now);
    if ((rc = stmt_get(c, sql_model, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, split == STORE_SPLIT_TRAIN ? rows : 0);
    bind_text(c, st, 3, now, -1, SQLITE_TRANSIENT);
    bind_int64(c, st, 4, split == STORE_SPLIT_TRAIN ? 0 : rows);
    rc = step_done(c, st, "updating a model", err);
    stmt_done(st);
out:
    return tx_leave(c, own, rc, err);
}

/* Rows, batches and last batch id of model `id`: the stamp below. */
static const char sql_batch_stamp[] =
    "SELECT COALESCE(SUM(rows), 0), COUNT(*), COALESCE(MAX(id), 0),"
    " COALESCE(SUM(CASE WHEN split = 0 THEN rows ELSE 0 END), 0) FROM batches"
    " WHERE model_id = ?1";

int store_batch_stamp(store_t *s, int64_t id, store_data_stamp_t *stamp, err_t *err)
{
    *stamp = (store_data_stamp_t){0};
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = stmt_get(c, sql_batch_stamp, &st, err)) < 0)
        return rc;
    bind_int64(c, st, 1, id);
    int src = conn_step(c, st);
    if (src == SQLITE_ROW) {
        stamp->batches = sqlite3_column_int64(st, 1);
        stamp->last_id = sqlite3_column_int64(st, 2);
    } else {
        rc = db_fail(c->db, src, "reading batches", err);
    }
    stmt_done(st);
    return rc;
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
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    double *bx = NULL, *by = NULL;
    int64_t total = 0, train = 0, at = 0;
    int own = 0, src, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 0, &own, err)) < 0)
        return rc;
    if ((rc = model_exists(c, id, err)) < 0)
        goto out;
    if ((rc = stmt_get(c, sql_batch_stamp, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    src = conn_step(c, st);
    if (src == SQLITE_ROW) {
        total = sqlite3_column_int64(st, 0);
        train = sqlite3_column_int64(st, 3);
        if (stamp != NULL)
            *stamp = (store_data_stamp_t){.batches = sqlite3_column_int64(st, 1),
                                          .last_id = sqlite3_column_int64(st, 2)};
    } else {
        rc = db_fail(c->db, src, "counting rows", err);
    }
    stmt_done(st);
    if (rc < 0 || total == 0)
        goto out;
    if (total < 0 || n_x < 1 || n_y < 0 || total > INT64_MAX / 8 / (n_x + n_y) ||
        (uint64_t)total * (uint64_t)(n_x + n_y) * 8u > SIZE_MAX / 2) {
        rc = err_set(err, ERR_TOOBIG, "%" PRId64 " stored rows do not fit in memory", total);
        goto out;
    }
    bx = malloc((size_t)(total * n_x) * sizeof *bx);
    by = n_y > 0 ? malloc((size_t)(total * n_y) * sizeof *by) : NULL;
    if (bx == NULL || (n_y > 0 && by == NULL)) {
        rc = err_set(err, ERR_NOMEM, "out of memory loading %" PRId64 " rows", total);
        goto out;
    }
    /* Training streams these rows once per step, start to end. */
    tensor_advise_huge_pages(bx, (size_t)(total * n_x) * sizeof *bx);
    if ((rc = stmt_get(c, sql_all, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    while ((src = conn_step(c, st)) == SQLITE_ROW) {
        int64_t bid = sqlite3_column_int64(st, 0), r = sqlite3_column_int64(st, 1);
        int bnx = sqlite3_column_int(st, 2), bny = sqlite3_column_int(st, 3);
        if (bnx != n_x || bny != n_y) {
            rc = err_set(err, ERR_SHAPE, "batch %" PRId64 " has %d+%d columns, expected %d+%d",
                         bid, bnx, bny, (int)n_x, (int)n_y);
            break;
        }
        if (r < 0 || r > total - at ||
            sqlite3_column_bytes(st, 4) != (int64_t)(r * n_x * 8) ||
            sqlite3_column_bytes(st, 5) != (int64_t)(r * n_y * 8)) {
            rc = err_set(err, ERR_DB, "batch %" PRId64 " is damaged (sizes disagree)", bid);
            break;
        }
        if (r * n_x > 0)
            memcpy(bx + at * n_x, sqlite3_column_blob(st, 4), (size_t)(r * n_x) * 8u);
        if (r * n_y > 0)
            memcpy(by + at * n_y, sqlite3_column_blob(st, 5), (size_t)(r * n_y) * 8u);
        at += r;
    }
    if (rc == 0 && src != SQLITE_DONE)
        rc = db_fail(c->db, src, "loading batches", err);
    if (rc == 0 && at != total)
        rc = err_set(err, ERR_DB, "stored rows changed while loading");
    stmt_done(st);
out:
    rc = tx_leave(c, own, rc, err);
    if (rc < 0 || total == 0) {
        free(bx);
        free(by);
        return rc;
    }
    *rows = train;
    *val_rows = total - train;
    *x = bx;
    *y = by;
    return 0;
}

/* ---- checkpoints and forks ------------------------------------------------------------------ */

int store_checkpoint_insert(store_t *s, int64_t id, const char *label, int64_t *checkpoint_id,
                            int64_t *step, err_t *err)
{
    /* One statement reads the model's state and writes the copy: a consistent snapshot. */
    static const char sql[] =
        "INSERT INTO checkpoints(model_id, step, label, params, optim, created_at, history_saved)"
        " SELECT m.id, m.step, ?2, p.data, o.data, ?3, 1 FROM models m"
        " JOIN parameters p ON p.model_id = m.id"
        " LEFT JOIN optim_state o ON o.model_id = m.id WHERE m.id = ?1 AND m.hidden = 0"
        " RETURNING id, step";
    /* The history it was taken with, in the same transaction: every row is before the step. */
    static const char sql_history[] =
        "INSERT INTO checkpoint_history(checkpoint_id, " HIST_COLUMNS ")"
        " SELECT ?2, " HIST_COLUMNS " FROM history_chunks WHERE model_id = ?1 AND first_step < ?3";
    *checkpoint_id = 0;
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int64_t cid = 0, cstep = 0;
    int own = 0, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 1, &own, err)) < 0)
        return rc;
    if ((rc = stmt_get(c, sql, &st, err)) < 0)
        goto out;
    char now[STORE_TIME_MAX];
    store_now(now);
    bind_int64(c, st, 1, id);
    bind_text_or_null(c, st, 2, label);
    bind_text(c, st, 3, now, -1, SQLITE_TRANSIENT);
    int src = conn_step(c, st);
    if (src == SQLITE_ROW) {
        cid = sqlite3_column_int64(st, 0);
        cstep = sqlite3_column_int64(st, 1);
        src = conn_step(c, st);    /* finish the statement so the insert is complete */
        if (src != SQLITE_DONE)
            rc = db_fail(c->db, src, "saving a checkpoint", err);
    } else if (src == SQLITE_DONE) {
        rc = err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id);
    } else {
        rc = db_fail(c->db, src, "saving a checkpoint", err);
    }
    stmt_done(st);
    if (rc < 0 || (rc = stmt_get(c, sql_history, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, cid);
    bind_int64(c, st, 3, cstep);
    rc = step_done(c, st, "saving a checkpoint's history", err);
    stmt_done(st);
out:
    if ((rc = tx_leave(c, own, rc, err)) < 0)
        return rc;
    *checkpoint_id = cid;
    if (step != NULL)
        *step = cstep;
    return 0;
}

void store_checkpoint_list_free(store_checkpoint_t *rows, int64_t n)
{
    if (rows == NULL)
        return;
    for (int64_t i = 0; i < n; ++i)
        free(rows[i].label);
    free(rows);
}

int store_checkpoint_list(store_t *s, int64_t id, store_checkpoint_t **out, int64_t *n,
                          err_t *err)
{
    static const char sql[] =
        "SELECT id, step, label, created_at FROM checkpoints WHERE model_id = ?1 ORDER BY id";
    *out = NULL;
    *n = 0;
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    store_checkpoint_t *rows = NULL;
    int64_t count = 0, cap = 0;
    int own = 0, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 0, &own, err)) < 0)
        return rc;
    if ((rc = model_exists(c, id, err)) < 0)
        goto out;
    if ((rc = stmt_get(c, sql, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    int src;
    while ((src = conn_step(c, st)) == SQLITE_ROW) {
        if (count == cap) {
            int64_t ncap = cap == 0 ? 16 : cap * 2;
            store_checkpoint_t *nr = realloc(rows, (size_t)ncap * sizeof *rows);
            if (nr == NULL) {
                rc = err_set(err, ERR_NOMEM, "out of memory listing checkpoints");
                goto out;
            }
            rows = nr;
            cap = ncap;
        }
        store_checkpoint_t *k = &rows[count];
        memset(k, 0, sizeof *k);
        k->id = sqlite3_column_int64(st, 0);
        k->step = sqlite3_column_int64(st, 1);
        const unsigned char *label = sqlite3_column_text(st, 2);
        if (label != NULL && (k->label = strdup((const char *)label)) == NULL) {
            rc = err_set(err, ERR_NOMEM, "out of memory listing checkpoints");
            goto out;
        }
        column_text_copy(st, 3, k->created_at, sizeof k->created_at);
        count++;
    }
    if (src != SQLITE_DONE)
        rc = db_fail(c->db, src, "listing checkpoints", err);
out:
    stmt_done(st);
    rc = tx_leave(c, own, rc, err);
    if (rc < 0 || count == 0) {
        store_checkpoint_list_free(rows, count);
        return rc;
    }
    *out = rows;
    *n = count;
    return 0;
}

int store_checkpoint_restore(store_t *s, int64_t id, int64_t checkpoint_id, int64_t *step,
                             err_t *err)
{
    static const char sql_find[] =
        "SELECT step, history_saved FROM checkpoints WHERE id = ?2 AND model_id = ?1";
    /* A checkpoint with its history: the model's history becomes exactly that. */
    static const char sql_hist_clear[] = "DELETE FROM history_chunks WHERE model_id = ?1";
    static const char sql_hist_back[] =
        "INSERT INTO history_chunks(model_id, " HIST_COLUMNS ")"
        " SELECT ?1, " HIST_COLUMNS " FROM checkpoint_history WHERE checkpoint_id = ?2";
    static const char sql_params[] =
        "UPDATE parameters SET data = (SELECT params FROM checkpoints WHERE id = ?2)"
        " WHERE model_id = ?1";
    static const char sql_optim[] =
        "INSERT INTO optim_state(model_id, data)"
        " SELECT ?1, COALESCE(optim, X'') FROM checkpoints WHERE id = ?2"
        " ON CONFLICT(model_id) DO UPDATE SET data = excluded.data";
    static const char sql_model[] =
        "UPDATE models SET step = ?2, loss = NULL, version = version + 1, updated_at = ?3"
        " WHERE id = ?1";
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int64_t cstep = 0;
    int history_saved = 0;
    int own = 0, src, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 1, &own, err)) < 0)
        return rc;
    if ((rc = model_exists(c, id, err)) < 0)
        goto out;
    if ((rc = stmt_get(c, sql_find, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, checkpoint_id);
    src = conn_step(c, st);
    if (src == SQLITE_ROW) {
        cstep = sqlite3_column_int64(st, 0);
        history_saved = sqlite3_column_int(st, 1);
    } else if (src == SQLITE_DONE) {
        rc = err_set_field(err, ERR_NOTFOUND, "checkpoint_id",
                           "checkpoint %" PRId64 " of model %" PRId64 " not found",
                           checkpoint_id, id);
    } else {
        rc = db_fail(c->db, src, "reading a checkpoint", err);
    }
    stmt_done(st);
    if (rc < 0)
        goto out;
    const char *const two[] = {sql_params, sql_optim};
    for (int i = 0; i < 2 && rc == 0; ++i) {
        if ((rc = stmt_get(c, two[i], &st, err)) < 0)
            goto out;
        bind_int64(c, st, 1, id);
        bind_int64(c, st, 2, checkpoint_id);
        rc = step_done(c, st, "restoring a checkpoint", err);
        stmt_done(st);
    }
    if (rc < 0)
        goto out;
    char now[STORE_TIME_MAX];
    store_now(now);
    if ((rc = stmt_get(c, sql_model, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, cstep);
    bind_text(c, st, 3, now, -1, SQLITE_TRANSIENT);
    rc = step_done(c, st, "restoring a checkpoint", err);
    stmt_done(st);
    const char *const hist[] = {sql_hist_clear, sql_hist_back};
    for (int i = 0; i < 2 && history_saved && rc == 0; ++i) {
        if ((rc = stmt_get(c, hist[i], &st, err)) < 0)
            goto out;
        bind_int64(c, st, 1, id);
        if (i == 1)
            bind_int64(c, st, 2, checkpoint_id);
        rc = step_done(c, st, "restoring a checkpoint's history", err);
        stmt_done(st);
    }
    /* A checkpoint older than its history copy (or, defensively, a copied chunk reaching its
     * step) keeps the rule it was made under: no row at or after the restored step. */
    if (rc == 0)
        rc = hist_truncate(c, id, cstep, err);
out:
    rc = tx_leave(c, own, rc, err);
    if (rc == 0 && step != NULL)
        *step = cstep;
    return rc;
}

/* Between two transactions of a long copy or delete: a writer waiting for the lock polls every
 * millisecond at most (busy_wait), and without a pause this thread would take the lock again
 * at once and win every race for it until its work is done. */
static void step_pause(void)
{
    struct timespec ts = {0, 2 * 1000000L};
    nanosleep(&ts, NULL);
}

/* Run `sql` (?1 = id, deleting a bounded slice of model `id`'s rows) in a transaction of its
 * own, again and again until it deletes nothing. */
static int delete_in_steps(conn_t *c, const char *sql, int64_t id, err_t *err)
{
    for (;;) {
        sqlite3_stmt *st = NULL;
        int own = 0, rc = tx_enter(c, 1, &own, err);
        if (rc < 0)
            return rc;
        int64_t changed = 0;
        if ((rc = stmt_get(c, sql, &st, err)) == 0) {
            bind_int64(c, st, 1, id);
            rc = step_done(c, st, "deleting a model's data", err);
            changed = sqlite3_changes64(c->db);
            stmt_done(st);
        }
        if ((rc = tx_leave(c, own, rc, err)) < 0 || changed == 0)
            return rc;
        step_pause();
    }
}

/* The next batches of model `id` after batch `after` (up to `max_id`, 0: any) for one
 * transaction of a long copy or delete: up to STORE_STEP_BYTES of data, at least one batch, at
 * most STORE_STEP_BATCHES. `*n` is how many ids went to `ids` (0: none left). */
static int batch_slice(conn_t *c, int64_t id, int64_t after, int64_t max_id, int64_t *ids,
                       int *n, err_t *err)
{
    static const char sql[] =
        "SELECT id, length(x) + length(y) FROM batches WHERE model_id = ?1 AND id > ?2"
        " AND (?3 = 0 OR id <= ?3) ORDER BY id LIMIT " STORE_TEXT(STORE_STEP_BATCHES);
    *n = 0;
    sqlite3_stmt *st = NULL;
    int rc = stmt_get(c, sql, &st, err), src = SQLITE_DONE;
    if (rc < 0)
        return rc;
    bind_int64(c, st, 1, id);
    bind_int64(c, st, 2, after);
    bind_int64(c, st, 3, max_id);
    int64_t bytes = 0;
    while (bytes < STORE_STEP_BYTES && (src = conn_step(c, st)) == SQLITE_ROW) {
        ids[(*n)++] = sqlite3_column_int64(st, 0);
        bytes += sqlite3_column_int64(st, 1);
    }
    if (bytes < STORE_STEP_BYTES && src != SQLITE_DONE)
        rc = db_fail(c->db, src, "reading batches", err);
    stmt_done(st);
    return rc;
}

/* Delete every batch of model `id`, a slice (batch_slice) per transaction. */
static int batches_purge(conn_t *c, int64_t id, err_t *err)
{
    static const char sql[] = "DELETE FROM batches WHERE id = ?1";
    int64_t ids[STORE_STEP_BATCHES];
    for (int n = 1; n > 0; step_pause()) {
        sqlite3_stmt *st = NULL;
        int own = 0, rc = tx_enter(c, 1, &own, err);
        if (rc < 0)
            return rc;
        rc = batch_slice(c, id, 0, 0, ids, &n, err);
        for (int i = 0; i < n && rc == 0; ++i) {
            if ((rc = stmt_get(c, sql, &st, err)) < 0)
                break;
            bind_int64(c, st, 1, ids[i]);
            rc = step_done(c, st, "deleting a batch", err);
            stmt_done(st);
        }
        if ((rc = tx_leave(c, own, rc, err)) < 0)
            return rc;
    }
    return 0;
}

/* Remove hidden model `id` and everything of it: its large rows (batches, history,
 * checkpoints) a slice per transaction, then the row itself with what is left (cascade). */
static int model_purge(conn_t *c, int64_t id, err_t *err)
{
    static const char sql_history[] =
        "DELETE FROM history_chunks WHERE model_id = ?1 AND first_step IN (SELECT first_step"
        " FROM history_chunks WHERE model_id = ?1 ORDER BY first_step LIMIT 256)";
    static const char sql_checkpoints[] =
        "DELETE FROM checkpoints WHERE id IN (SELECT id FROM checkpoints WHERE model_id = ?1"
        " ORDER BY id LIMIT 4)";
    static const char sql_model[] = "DELETE FROM models WHERE id = ?1 AND hidden = 1";
    const char *const steps[] = {sql_history, sql_checkpoints, sql_model};
    int rc = batches_purge(c, id, err);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0] && rc == 0; ++i)
        rc = delete_in_steps(c, steps[i], id, err);
    return rc;
}

int store_model_delete(store_t *s, int64_t id, err_t *err)
{
    /* Hidden first, in one short transaction: from here the model is gone for every reader
     * and writer, and its name is free. */
    static const char sql_hide[] =
        "UPDATE models SET hidden = 1, name = NULL WHERE id = ?1 AND hidden = 0";
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = stmt_get(c, sql_hide, &st, err)) < 0)
        return rc;
    bind_int64(c, st, 1, id);
    rc = step_done(c, st, "deleting a model", err);
    stmt_done(st);
    if (rc == 0 && sqlite3_changes(c->db) == 0)
        rc = err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id);
    if (rc < 0)
        return rc;
    /* The delete has happened as far as anyone can see. Data that cannot be removed now (the
     * storage failed meanwhile) stays hidden, and store_models_purge() removes it at the next
     * start: an error here would tell the client that nothing was deleted. */
    err_t perr = {0};
    (void)model_purge(c, id, &perr);
    return 0;
}

int store_models_purge(store_t *s, int64_t *n, err_t *err)
{
    static const char sql[] = "SELECT id FROM models WHERE hidden = 1 ORDER BY id LIMIT 1";
    if (n != NULL)
        *n = 0;
    conn_t *c = NULL;
    int rc = conn_get(s, &c, err);
    for (int64_t done = 0; rc == 0; ++done) {
        sqlite3_stmt *st = NULL;
        int64_t id = 0;
        if ((rc = stmt_get(c, sql, &st, err)) < 0)
            break;
        int src = conn_step(c, st);
        if (src == SQLITE_ROW)
            id = sqlite3_column_int64(st, 0);
        else if (src != SQLITE_DONE)
            rc = db_fail(c->db, src, "finding hidden models", err);
        stmt_done(st);
        if (rc < 0 || id == 0)
            break;
        if ((rc = model_purge(c, id, err)) == 0 && n != NULL)
            *n = done + 1;
    }
    return rc;
}

/* Fork, first transaction: the copy's row (hidden), parameters, optimizer state and history
 * from one snapshot of the source. `*max_batch` is the source's last batch then. */
static int fork_begin(conn_t *c, int64_t id, const char *name, int64_t *nid, int64_t *max_batch,
                      err_t *err)
{
    static const char sql_model[] =
        "INSERT INTO models(name, kind, spec_json, step, status, rows, validation_rows, loss,"
        " created_at, updated_at, hidden) SELECT ?2, kind, spec_json, step, 'idle', 0, 0, loss,"
        " ?3, ?3, 1 FROM models WHERE id = ?1";
    static const char sql_params[] =
        "INSERT INTO parameters(model_id, data) SELECT ?2, data FROM parameters"
        " WHERE model_id = ?1";
    static const char sql_optim[] =
        "INSERT INTO optim_state(model_id, data) SELECT ?2, data FROM optim_state"
        " WHERE model_id = ?1";
    static const char sql_step[] = "SELECT step FROM models WHERE id = ?1";
    static const char sql_max[] =
        "SELECT COALESCE(MAX(id), 0) FROM batches WHERE model_id = ?1";
    /* Chunks that start before the fork's step; hist_truncate() then trims the last one. */
    static const char sql_history[] =
        "INSERT INTO history_chunks(model_id, " HIST_COLUMNS ")"
        " SELECT ?2, " HIST_COLUMNS " FROM history_chunks"
        " WHERE model_id = ?1 AND first_step < (SELECT step FROM models WHERE id = ?1)";
    sqlite3_stmt *st = NULL;
    int own = 0, rc = tx_enter(c, 1, &own, err);
    if (rc < 0)
        return rc;
    if ((rc = model_exists(c, id, err)) < 0)
        goto out;
    char now[STORE_TIME_MAX];
    store_now(now);
    if ((rc = stmt_get(c, sql_model, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_text_or_null(c, st, 2, name != NULL && name[0] != '\0' ? name : NULL);
    bind_text(c, st, 3, now, -1, SQLITE_TRANSIENT);
    rc = step_done(c, st, "forking a model", err);
    stmt_done(st);
    if (rc == ERR_CONFLICT) {
        rc = err_set_field(err, ERR_CONFLICT, "name", "a model named '%.100s' already exists",
                           name);
        goto out;
    }
    if (rc < 0)
        goto out;
    *nid = sqlite3_last_insert_rowid(c->db);
    const char *const copies[] = {sql_params, sql_optim, sql_history};
    for (int i = 0; i < 3 && rc == 0; ++i) {
        if ((rc = stmt_get(c, copies[i], &st, err)) < 0)
            goto out;
        bind_int64(c, st, 1, id);
        bind_int64(c, st, 2, *nid);
        rc = step_done(c, st, "copying a model", err);
        stmt_done(st);
    }
    int64_t step = 0;
    if (rc == 0 && (rc = model_int(c, sql_step, *nid, &step, err)) == 0 &&
        (rc = hist_truncate(c, *nid, step, err)) == 0)
        rc = model_int(c, sql_max, id, max_batch, err);
out:
    return tx_leave(c, own, rc, err);
}

/* Fork, one later transaction: copy the source's next slice of batches after `*cursor` up to
 * `max_batch`. `*copied` says how many (0: all are). */
static int fork_batches(conn_t *c, int64_t id, int64_t nid, int64_t max_batch, int64_t *cursor,
                        int *copied, err_t *err)
{
    static const char sql_copy[] =
        "INSERT INTO batches(model_id, rows, n_x, n_y, x, y, created_at, split)"
        " SELECT ?2, rows, n_x, n_y, x, y, created_at, split FROM batches WHERE id = ?1";
    int64_t ids[STORE_STEP_BATCHES];
    int n = 0;
    *copied = 0;
    sqlite3_stmt *st = NULL;
    int own = 0, rc = tx_enter(c, 1, &own, err);
    if (rc < 0)
        return rc;
    /* A source deleted meanwhile ends the fork. */
    if ((rc = model_exists(c, id, err)) < 0 ||
        (rc = batch_slice(c, id, *cursor, max_batch, ids, &n, err)) < 0)
        goto out;
    for (int i = 0; i < n && rc == 0; ++i) {
        if ((rc = stmt_get(c, sql_copy, &st, err)) < 0)
            goto out;
        bind_int64(c, st, 1, ids[i]);
        bind_int64(c, st, 2, nid);
        rc = step_done(c, st, "copying a batch", err);
        stmt_done(st);
    }
out:
    if ((rc = tx_leave(c, own, rc, err)) == 0 && n > 0) {
        *cursor = ids[n - 1];
        *copied = n;
    }
    return rc;
}

/*
 * A fork copies the source's batches, which may be gigabytes: in one transaction that held
 * the write lock long enough to make every other writer fail ("storage busy"). So the copy is
 * hidden while its batches are copied a few per transaction, and one last short transaction
 * makes it visible, with the rows it has. Parameters, optimizer state, step and history come
 * from one snapshot (the first transaction); the batches are the source's batches up to its
 * last one at that moment, minus any deleted meanwhile.
 */
int store_model_fork(store_t *s, int64_t id, const char *name, int64_t *new_id, err_t *err)
{
    static const char sql_show[] =
        "UPDATE models SET hidden = 0, version = version + 1,"
        " rows = (SELECT COALESCE(SUM(rows), 0) FROM batches WHERE model_id = ?1 AND split = 0),"
        " validation_rows = (SELECT COALESCE(SUM(rows), 0) FROM batches"
        " WHERE model_id = ?1 AND split <> 0)"
        " WHERE id = ?1";
    *new_id = 0;
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int64_t nid = 0, max_batch = 0, cursor = 0;
    int copied = 1;
    int rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = fork_begin(c, id, name, &nid, &max_batch, err)) < 0)
        return rc;
    while (rc == 0 && copied > 0) {
        step_pause();
        rc = fork_batches(c, id, nid, max_batch, &cursor, &copied, err);
    }
    if (rc == 0 && (rc = stmt_get(c, sql_show, &st, err)) == 0) {
        bind_int64(c, st, 1, nid);
        rc = step_done(c, st, "forking a model", err);
        stmt_done(st);
    }
    if (rc < 0) {
        err_t perr = {0};
        (void)model_purge(c, nid, &perr);   /* what is left, store_models_purge() takes */
        return rc;
    }
    *new_id = nid;
    return 0;
}

/* ---- jobs ------------------------------------------------------------------------------------- */

int store_jobs_mark_interrupted(store_t *s, int64_t *n, err_t *err)
{
    static const char sql_jobs[] =
        "UPDATE jobs SET status = 'failed', error = 'interrupted', updated_at = ?1"
        " WHERE status IN ('queued', 'running')";
    /* A model left 'training' by a process that died is idle now: nothing runs on it. */
    static const char sql_models[] =
        "UPDATE models SET status = 'idle' WHERE status = 'training'";
    if (n != NULL)
        *n = 0;
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int64_t marked = 0;
    int own = 0, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 1, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    if ((rc = stmt_get(c, sql_jobs, &st, err)) < 0)
        goto out;
    bind_text(c, st, 1, now, -1, SQLITE_TRANSIENT);
    rc = step_done(c, st, "marking interrupted jobs", err);
    stmt_done(st);
    if (rc < 0)
        goto out;
    marked = sqlite3_changes(c->db);
    if ((rc = stmt_get(c, sql_models, &st, err)) < 0)
        goto out;
    rc = step_done(c, st, "resetting model status", err);
    stmt_done(st);
out:
    rc = tx_leave(c, own, rc, err);
    if (rc == 0 && n != NULL)
        *n = marked;
    return rc;
}

int store_history_sample(store_t *s, int64_t id, int64_t max_points, store_history_row_t **out,
                         int64_t *n, err_t *err)
{
    static const char sql_count[] =
        "SELECT COALESCE(SUM(n), 0) FROM history_chunks WHERE model_id = ?1";
    static const char sql_chunks[] =
        "SELECT " HIST_COLUMNS " FROM history_chunks WHERE model_id = ?1 ORDER BY first_step";
    *out = NULL;
    *n = 0;
    if (max_points < 2)
        return err_set_field(err, ERR_INVAL, "max_points", "max_points=%" PRId64 " < 2",
                             max_points);
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    store_history_row_t *rows = NULL;
    int64_t total = 0, want = 0, count = 0, base = 0;
    int own = 0, src, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 0, &own, err)) < 0)
        return rc;
    if ((rc = model_exists(c, id, err)) < 0 || (rc = stmt_get(c, sql_count, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    src = conn_step(c, st);
    if (src == SQLITE_ROW)
        total = sqlite3_column_int64(st, 0);
    else
        rc = db_fail(c->db, src, "counting history", err);
    stmt_done(st);
    st = NULL;
    if (rc < 0 || total == 0)
        goto out;
    want = total < max_points ? total : max_points;
    if ((rows = calloc((size_t)want, sizeof *rows)) == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory sampling history");
        goto out;
    }
    if ((rc = stmt_get(c, sql_chunks, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    /* Record index of sample k: round(k (total−1) / (want−1)); strictly increasing because
     * want <= total, so each record is taken at most once. A chunk's records are unpacked
     * only when a sample falls in it. */
    while (count < want && (src = conn_step(c, st)) == SQLITE_ROW) {
        int64_t k = sqlite3_column_int64(st, 2);
        hist_chunk_t ch = {.data = NULL};
        for (;;) {
            int64_t pick = want == 1 ? 0
                           : (int64_t)((double)count * (double)(total - 1) /
                                           (double)(want - 1) + 0.5);
            if (count == want || pick >= base + k)
                break;
            if (ch.data == NULL && (rc = hist_column(c, st, 0, &ch, err)) < 0)
                goto out;
            hist_get(&ch, pick - base, &rows[count++]);
        }
        base += k;
    }
    if (count < want && src != SQLITE_ROW && src != SQLITE_DONE)
        rc = db_fail(c->db, src, "sampling history", err);
out:
    stmt_done(st);
    rc = tx_leave(c, own, rc, err);
    if (rc < 0 || count == 0) {
        free(rows);
        return rc;
    }
    *out = rows;
    *n = count;
    return 0;
}

#define JOB_COLUMNS                                                                      \
    "id, model_id, status, progress_step, progress_steps, progress_loss, request_json," \
    " result_json, error, created_at, updated_at"

void store_job_clear(store_job_t *j)
{
    if (j == NULL)
        return;
    free(j->request_json);
    free(j->result_json);
    free(j->error);
    memset(j, 0, sizeof *j);
}

static int column_strdup(sqlite3_stmt *st, int col, char **out)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    *out = NULL;
    if (t == NULL)
        return 0;
    return (*out = strdup((const char *)t)) != NULL ? 0 : -1;
}

static int job_read_row(sqlite3_stmt *st, store_job_t *j, err_t *err)
{
    memset(j, 0, sizeof *j);
    j->id = sqlite3_column_int64(st, 0);
    j->model_id = sqlite3_column_int64(st, 1);
    column_text_copy(st, 2, j->status, sizeof j->status);
    j->progress_step = sqlite3_column_int64(st, 3);
    j->progress_steps = sqlite3_column_int64(st, 4);
    j->has_loss = sqlite3_column_type(st, 5) != SQLITE_NULL;
    j->progress_loss = j->has_loss ? sqlite3_column_double(st, 5) : 0.0;
    if (column_strdup(st, 6, &j->request_json) < 0 || column_strdup(st, 7, &j->result_json) < 0 ||
        column_strdup(st, 8, &j->error) < 0) {
        store_job_clear(j);
        return err_set(err, ERR_NOMEM, "out of memory reading a job");
    }
    column_text_copy(st, 9, j->created_at, sizeof j->created_at);
    column_text_copy(st, 10, j->updated_at, sizeof j->updated_at);
    return 0;
}

int store_job_insert(store_t *s, int64_t id, const char *request_json, int64_t steps,
                     int64_t *job_id, err_t *err)
{
    static const char sql[] =
        "INSERT INTO jobs(model_id, status, request_json, progress_steps, created_at, updated_at)"
        " VALUES (?1, 'queued', ?2, ?3, ?4, ?4)";
    *job_id = 0;
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int own = 0, rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = tx_enter(c, 1, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    if ((rc = model_exists(c, id, err)) < 0 || (rc = stmt_get(c, sql, &st, err)) < 0)
        goto out;
    bind_int64(c, st, 1, id);
    bind_text(c, st, 2, request_json, -1, SQLITE_TRANSIENT);
    bind_int64(c, st, 3, steps);
    bind_text(c, st, 4, now, -1, SQLITE_TRANSIENT);
    rc = step_done(c, st, "inserting a job", err);
    stmt_done(st);
    if (rc == 0)
        *job_id = sqlite3_last_insert_rowid(c->db);
out:
    rc = tx_leave(c, own, rc, err);
    if (rc < 0)
        *job_id = 0;
    return rc;
}

int store_job_get(store_t *s, int64_t job_id, store_job_t *out, err_t *err)
{
    static const char sql[] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1";
    memset(out, 0, sizeof *out);
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = stmt_get(c, sql, &st, err)) < 0)
        return rc;
    bind_int64(c, st, 1, job_id);
    int src = conn_step(c, st);
    if (src == SQLITE_ROW)
        rc = job_read_row(st, out, err);
    else if (src == SQLITE_DONE)
        rc = err_set(err, ERR_NOTFOUND, "job %" PRId64 " not found", job_id);
    else
        rc = db_fail(c->db, src, "reading a job", err);
    stmt_done(st);
    return rc;
}

void store_job_list_free(store_job_t *rows, int64_t n)
{
    if (rows == NULL)
        return;
    for (int64_t i = 0; i < n; ++i)
        store_job_clear(&rows[i]);
    free(rows);
}

int store_job_list(store_t *s, int64_t model_id, const char *status, int64_t limit,
                   int64_t after, store_job_t **out, int64_t *n, int64_t *next, err_t *err)
{
    static const char sql[] =
        "SELECT " JOB_COLUMNS " FROM jobs WHERE id > ?1 AND (?2 = 0 OR model_id = ?2)"
        " AND (?3 IS NULL OR status = ?3) ORDER BY id LIMIT ?4";
    *out = NULL;
    *n = 0;
    *next = 0;
    if (limit < 1 || limit > 100000)
        return err_set_field(err, ERR_INVAL, "limit", "limit=%" PRId64 " not in [1,100000]",
                             limit);
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    store_job_t *rows = NULL;
    int64_t count = 0, cap = 0;
    int rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = stmt_get(c, sql, &st, err)) < 0)
        return rc;
    bind_int64(c, st, 1, after);
    bind_int64(c, st, 2, model_id);
    bind_text_or_null(c, st, 3, status);
    bind_int64(c, st, 4, limit + 1);
    int src;
    while ((src = conn_step(c, st)) == SQLITE_ROW) {
        if (count == limit) {
            *next = rows[count - 1].id;
            break;
        }
        if (count == cap) {
            int64_t ncap = cap == 0 ? 16 : cap * 2;
            store_job_t *nr = realloc(rows, (size_t)ncap * sizeof *rows);
            if (nr == NULL) {
                rc = err_set(err, ERR_NOMEM, "out of memory listing jobs");
                goto out;
            }
            rows = nr;
            cap = ncap;
        }
        if ((rc = job_read_row(st, &rows[count], err)) < 0)
            goto out;
        count++;
    }
    if (src != SQLITE_ROW && src != SQLITE_DONE)
        rc = db_fail(c->db, src, "listing jobs", err);
out:
    stmt_done(st);
    if (rc < 0) {
        store_job_list_free(rows, count);
        *next = 0;
        return rc;
    }
    if (count == 0) {
        free(rows);
        rows = NULL;
    }
    *out = rows;
    *n = count;
    return 0;
}

int store_job_progress(store_t *s, int64_t job_id, int64_t step, int64_t steps,
                       const double *loss, err_t *err)
{
    static const char sql[] =
        "UPDATE jobs SET progress_step = ?2, progress_steps = ?3,"
        " progress_loss = CASE WHEN ?4 THEN ?5 ELSE progress_loss END, updated_at = ?6"
        " WHERE id = ?1";
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = stmt_get(c, sql, &st, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    bind_int64(c, st, 1, job_id);
    bind_int64(c, st, 2, step);
    bind_int64(c, st, 3, steps);
    bind_int(c, st, 4, loss != NULL);
    if (loss != NULL && isfinite(*loss))
        bind_double(c, st, 5, *loss);
    else
        bind_null(c, st, 5);
    bind_text(c, st, 6, now, -1, SQLITE_TRANSIENT);
    rc = step_done(c, st, "updating a job's progress", err);
    stmt_done(st);
    if (rc == 0 && sqlite3_changes(c->db) == 0)
        rc = err_set(err, ERR_NOTFOUND, "job %" PRId64 " not found", job_id);
    return rc;
}

int store_job_set_status(store_t *s, int64_t job_id, const char *status,
                         const char *result_json, const char *error, err_t *err)
{
    static const char sql[] =
        "UPDATE jobs SET status = ?2, result_json = coalesce(?3, result_json),"
        " error = coalesce(?4, error), updated_at = ?5 WHERE id = ?1";
    conn_t *c = NULL;
    sqlite3_stmt *st = NULL;
    int rc = conn_get(s, &c, err);
    if (rc < 0 || (rc = stmt_get(c, sql, &st, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    bind_int64(c, st, 1, job_id);
    bind_text(c, st, 2, status, -1, SQLITE_TRANSIENT);
    bind_text_or_null(c, st, 3, result_json);
    bind_text_or_null(c, st, 4, error);
    bind_text(c, st, 5, now, -1, SQLITE_TRANSIENT);
    rc = step_done(c, st, "updating a job's status", err);
    stmt_done(st);
    if (rc == 0 && sqlite3_changes(c->db) == 0)
        rc = err_set(err, ERR_NOTFOUND, "job %" PRId64 " not found", job_id);
    return rc;
}
