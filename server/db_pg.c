/* server/db_pg.c -- the PostgreSQL driver of db.h (db_driver.h), over libpq: the only file that
 * includes libpq-fe.h.
 *
 * Each thread gets its own connection from the database's db_conn_pool_t (as in db_sqlite.c);
 * connections of ended threads are kept for the next.
 * The store's SQL numbers its parameters `?N`; a statement is rewritten to `$N` once and prepared
 * on its connection at its first run, with the types of the values bound then (integers int8,
 * doubles float8, blobs bytea, text text; NULL left for the server to infer), so a parameter
 * the SQL alone leaves untyped (`SELECT ?2, ...` feeding an insert) still gets its type. Numbers
 * travel as text (exact: doubles are printed with 17 digits), blobs as binary; results come back
 * in binary and the column getters convert by column type.
 *
 * Writes are serialised like SQLite's: a write transaction takes one transaction-scoped advisory
 * lock, because the store's read-modify-write transactions (version bumps, row counts, history
 * appends) were written for one writer at a time; across replicas the same lock orders every
 * write, so a claim of a queued job or a lease is as atomic as on SQLite. Any number of
 * replicas may serve one database: they coordinate through rows (leases, jobs, heartbeats).
 *
 * A connection the server dropped (a restart, a network cut) is noticed before a statement that
 * starts outside a transaction, and reset then; while the server cannot be reached every call
 * fails with ERR_UNAVAILABLE (503), and the next call after it returns reconnects by itself.
 *
 * A listener (db_listen_open) is a session of its own that only LISTENs; it idles in poll() on
 * its socket, so a lost session is noticed when the server's goodbye or the socket's end
 * arrives (TCP keepalives, set on every session, find a silent network cut within a minute),
 * and is opened again by a later db_listen_wait(), which says so (DB_LISTEN_RESUMED).
 */
#include "db_driver.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PG_STMT_CACHE 128          /* distinct SQL texts of the store, with room to grow */
#define PG_MAX_PARAMS 32           /* the store's statements use at most ?9 */
#define PG_NUM_TEXT 32             /* an int64 or a %.17g double, with its NUL */
#define PG_CONNECT_TIMEOUT "5"     /* seconds, unless the address says otherwise */

/* Advisory lock keys (two int4s, a namespace of their own). */
#define PG_LOCK_SPACE 1852142948   /* "neud" */
#define PG_LOCK_WRITER 1           /* held by each write transaction */

/* Type oids of pg_type (stable across PostgreSQL versions). */
enum pg_oid {
    OID_BOOL = 16, OID_BYTEA = 17, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_TEXT = 25,
    OID_FLOAT4 = 700, OID_FLOAT8 = 701, OID_VARCHAR = 1043, OID_NUMERIC = 1700,
};

typedef struct pg_db pg_db_t;
typedef struct pg_conn pg_conn_t;

typedef struct pg_stmt {
    db_stmt_t base;
    pg_conn_t *conn;
    const char *sql;               /* the literal: the cache key */
    char *text;                    /* `sql` with $N parameters */
    char name[16];                 /* prepared statement name on the connection */
    int prepared;                  /* prepared on the connection's current session */
    int n_params;
    Oid types[PG_MAX_PARAMS];      /* of the values bound for the prepare */
    const char *values[PG_MAX_PARAMS];
    int lengths[PG_MAX_PARAMS];
    int formats[PG_MAX_PARAMS];
    char num[PG_MAX_PARAMS][PG_NUM_TEXT];
    char *copies[PG_MAX_PARAMS];   /* db_bind_text's copies */
    char col_text[PG_NUM_TEXT];    /* db_column_text of a number */
    PGresult *res;
    int row, n_rows;
} pg_stmt_t;

struct pg_conn {
    db_conn_t base;
    pg_db_t *db;
    PGconn *pg;
    int n_cache;
    pg_stmt_t *cache[PG_STMT_CACHE];
    int64_t changes;
    int tx_open;                   /* between db_begin and db_commit/db_rollback */
};

struct pg_db {
    db_t base;
    char *address;
    int busy_ms;
    int max_length;
    db_conn_pool_t pool;           /* each thread's connection */
};

/* ---- errors ------------------------------------------------------------------------------------ */

/* libpq's messages end with a newline; one line in our messages. */
static const char *one_line(const char *msg, char *buf, size_t size)
{
    snprintf(buf, size, "%s", msg != NULL ? msg : "");
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

/*
 * The one place PostgreSQL errors become err codes, by SQLSTATE. A lost connection and the
 * server's own trouble (shutting down, out of resources, lock timeout, serialisation) are
 * ERR_UNAVAILABLE: the request was fine and retrying later may work.
 */
static int pg_fail(PGconn *pg, const PGresult *res, const char *what, err_t *err)
{
    char line[200];
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = one_line(res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(pg),
                               line, sizeof line);
    if (msg[0] == '\0')
        msg = one_line(PQerrorMessage(pg), line, sizeof line);
    db_note_unreachable(state == NULL || PQstatus(pg) != CONNECTION_OK ||
                        strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0);
    /* lock_not_available: the session's lock_timeout (the busy timeout) ran out waiting for
     * another writer, as SQLITE_BUSY does; the same work may succeed later. */
    db_note_busy(state != NULL && PQstatus(pg) == CONNECTION_OK && strcmp(state, "55P03") == 0);
    if (state == NULL || PQstatus(pg) != CONNECTION_OK)
        return err_set(err, ERR_UNAVAILABLE, "database unreachable while %s: %s", what, msg);
    if (strcmp(state, "23505") == 0)
        return err_set(err, ERR_CONFLICT, "conflict while %s: %s", what, msg);
    if (strcmp(state, "23503") == 0)
        return err_set(err, ERR_NOTFOUND, "referenced row not found while %s", what);
    if (strncmp(state, "54", 2) == 0)
        return err_set(err, ERR_TOOBIG, "value too large to store while %s", what);
    if (strcmp(state, "53200") == 0)
        return err_set(err, ERR_NOMEM, "out of memory while %s", what);
    static const char *const unavailable[] = {"08", "53", "57P", "58", "40", "55P03", "57014",
                                              "25006"};
    for (size_t i = 0; i < sizeof unavailable / sizeof unavailable[0]; ++i)
        if (strncmp(state, unavailable[i], strlen(unavailable[i])) == 0)
            return err_set(err, ERR_UNAVAILABLE, "database unavailable while %s: %s", what, msg);
    return err_set(err, ERR_DB, "storage error while %s: %s (SQLSTATE %s)", what, msg, state);
}

/* Run a command without parameters on `pg`; 0 or an error from pg_fail(). */
static int pg_command(PGconn *pg, const char *sql, const char *what, err_t *err)
{
    PGresult *res = PQexec(pg, sql);
    ExecStatusType status = PQresultStatus(res);
    int rc = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK ? 0
                                                                     : pg_fail(pg, res, what, err);
    PQclear(res);
    return rc;
}

/* ---- connections --------------------------------------------------------------------------------- */

/* Open a session to `d`'s address, configured: lock timeout = the busy timeout. */
/* The server's notices ("relation ... already exists, skipping") are not the daemon's to print
 * on stderr: whatever matters comes back as an error of its statement. */
static void notice_ignore(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *session_open(pg_db_t *d, err_t *err)
{
    /* Keywords after "dbname" override what the address says, those before are defaults. */
    /* TCP keepalives: a session to a server cut off by the network (no FIN ever comes) is
     * found dead within about a minute, even one that only waits, as a listener does. */
    const char *keys[] = {"connect_timeout", "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "application_name", "dbname", NULL};
    const char *values[] = {PG_CONNECT_TIMEOUT, "30", "10", "3", "neurond", d->address, NULL};
    PGconn *pg = PQconnectdbParams(keys, values, 1);
    char line[200];
    if (pg == NULL) {
        err_set(err, ERR_NOMEM, "out of memory connecting to the database");
        return NULL;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        db_note_busy(0);
        db_note_unreachable(1);
        err_set(err, ERR_UNAVAILABLE, "cannot connect to the database: %s",
                one_line(PQerrorMessage(pg), line, sizeof line));
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, notice_ignore, NULL);
    char set[96];
    snprintf(set, sizeof set, "SET lock_timeout = %d; SET statement_timeout = 0",
             d->busy_ms > 0 ? d->busy_ms : 1);
    if (pg_command(pg, set, "configuring the connection", err) < 0) {
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

/*
 * 1 when the idle session `pg` is still open. A server that shut down sent a farewell message
 * and closed the socket: reading while the socket has something to read sees both (the first
 * read may stop after the message), and a closed session turns CONNECTION_BAD.
 */
static int session_alive(PGconn *pg)
{
    for (int reads = 0; reads < 4 && PQstatus(pg) == CONNECTION_OK; ++reads) {
        struct pollfd p = {.fd = PQsocket(pg), .events = POLLIN};
        if (poll(&p, 1, 0) <= 0)
            break;
        if (PQconsumeInput(pg) != 1)
            break;
    }
    return PQstatus(pg) == CONNECTION_OK;
}

static void stmt_free(pg_stmt_t *st)
{
    for (int i = 0; i < PG_MAX_PARAMS; ++i)
        free(st->copies[i]);
    PQclear(st->res);
    free(st->text);
    free(st);
}

static void conn_free(db_conn_t *base)
{
    pg_conn_t *c = (pg_conn_t *)base;
    if (c == NULL)
        return;
    for (int i = 0; i < c->n_cache; ++i)
        stmt_free(c->cache[i]);
    PQfinish(c->pg);
    free(c);
}

/*
 * Make sure `c` has a live session before a statement outside a transaction: a server that
 * restarted or dropped the session is noticed here (reading what it sent), and the session is
 * opened again with every statement to be prepared again. Inside a transaction a lost session
 * fails the statement instead: the transaction is gone with it.
 */
static int conn_ensure(pg_conn_t *c, err_t *err)
{
    if (c->tx_open) {
        if (PQstatus(c->pg) == CONNECTION_OK)
            return 0;
        db_note_busy(0);
        db_note_unreachable(1);
        return err_set(err, ERR_UNAVAILABLE, "database connection lost in a transaction");
    }
    if (session_alive(c->pg))
        return 0;
    PGconn *pg = session_open(c->db, err);
    if (pg == NULL)
        return ERR_UNAVAILABLE;
    PQfinish(c->pg);
    c->pg = pg;
    for (int i = 0; i < c->n_cache; ++i)
        c->cache[i]->prepared = 0;
    return 0;
}

/* The pool's open_conn: a connection with a configured session. */
static int conn_open(db_t *base, db_conn_t **out, err_t *err)
{
    pg_db_t *d = (pg_db_t *)base;
    *out = NULL;
    pg_conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return err_set(err, ERR_NOMEM, "out of memory opening the database");
    c->base.driver = &db_pg_driver;
    c->db = d;
    if ((c->pg = session_open(d, err)) == NULL) {
        free(c);
        return err != NULL ? err->code : ERR_UNAVAILABLE;
    }
    *out = &c->base;
    return 0;
}

static int pg_conn(db_t *d, db_conn_t **out, err_t *err)
{
    return db_conn_pool_get(&((pg_db_t *)d)->pool, out, err);
}

static void pg_close(db_t *base)
{
    pg_db_t *d = (pg_db_t *)base;
    db_conn_pool_close(&d->pool);
    free(d->address);
    free(d);
}

static int pg_open(const char *path, enum db_open_mode mode, const db_config_t *config,
                   db_t **out, err_t *err)
{
    *out = NULL;
    pg_db_t *d = calloc(1, sizeof *d);
    if (d == NULL || (d->address = strdup(path)) == NULL) {
        free(d);
        return err_set(err, ERR_NOMEM, "out of memory opening the database");
    }
    d->base.driver = &db_pg_driver;
    d->busy_ms = config->busy_ms;
    d->max_length = config->max_length;
    db_conn_pool_init(&d->pool, &d->base, conn_open, conn_free);
    (void)mode;
    db_conn_t *c = NULL;
    int rc = db_conn_pool_get(&d->pool, &c, err);
    if (rc < 0) {
        pg_close(&d->base);
        return rc;
    }
    *out = &d->base;
    return 0;
}

static void pg_rollback(db_conn_t *base);

static void pg_thread_end(db_t *base)
{
    db_conn_pool_thread_end(&((pg_db_t *)base)->pool);
}

/* ---- statements ------------------------------------------------------------------------------ */

/* `sql` with ?N rewritten to $N outside quotes; the highest N in *n_params. NULL: no memory. */
static char *dollar_params(const char *sql, int *n_params)
{
    size_t len = strlen(sql);
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    int quoted = 0, max = 0;
    size_t j = 0;
    for (size_t i = 0; i < len; ++i) {
        char ch = sql[i];
        if (ch == '\'')
            quoted = !quoted;
        if (!quoted && ch == '?' && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
            out[j++] = '$';
            int n = atoi(sql + i + 1);
            if (n > max)
                max = n;
            continue;
        }
        out[j++] = ch;
    }
    out[j] = '\0';
    *n_params = max;
    return out;
}

static int pg_prepare(db_conn_t *base, const char *sql, db_stmt_t **out, err_t *err)
{
    pg_conn_t *c = (pg_conn_t *)base;
    *out = NULL;
    for (int i = 0; i < c->n_cache; ++i) {
        if (c->cache[i]->sql == sql) {
            *out = &c->cache[i]->base;
            return 0;
        }
    }
    if (c->n_cache == PG_STMT_CACHE)
        return err_set(err, ERR_DB, "statement cache full: raise PG_STMT_CACHE");
    pg_stmt_t *st = calloc(1, sizeof *st);
    if (st == NULL || (st->text = dollar_params(sql, &st->n_params)) == NULL) {
        free(st);
        return err_set(err, ERR_NOMEM, "out of memory preparing a statement");
    }
    if (st->n_params > PG_MAX_PARAMS) {
        int n = st->n_params;
        stmt_free(st);
        return err_set(err, ERR_DB, "statement has %d parameters: raise PG_MAX_PARAMS", n);
    }
    st->base.driver = &db_pg_driver;
    st->conn = c;
    st->sql = sql;
    st->row = -1;
    snprintf(st->name, sizeof st->name, "nd%d", c->n_cache);
    c->cache[c->n_cache++] = st;
    *out = &st->base;
    return 0;
}

static void pg_stmt_done(db_stmt_t *base)
{
    pg_stmt_t *st = (pg_stmt_t *)base;
    PQclear(st->res);
    st->res = NULL;
    st->row = -1;
    st->n_rows = 0;
    for (int i = 0; i < st->n_params; ++i) {
        free(st->copies[i]);
        st->copies[i] = NULL;
        st->values[i] = NULL;
        st->lengths[i] = 0;
        st->formats[i] = 0;
        st->types[i] = 0;
    }
}

/* The slot of parameter `i`, cleared; NULL (with `err` set) when `i` is out of range. */
static pg_stmt_t *param_slot(db_stmt_t *base, int i, err_t *err)
{
    pg_stmt_t *st = (pg_stmt_t *)base;
    if (i < 1 || i > st->n_params) {
        err_set(err, ERR_DB, "binding parameter %d of a statement with %d", i, st->n_params);
        return NULL;
    }
    free(st->copies[i - 1]);
    st->copies[i - 1] = NULL;
    st->values[i - 1] = NULL;
    st->lengths[i - 1] = 0;
    st->formats[i - 1] = 0;
    st->types[i - 1] = 0;
    return st;
}

static int pg_bind_int64(db_stmt_t *base, int i, int64_t v, err_t *err)
{
    pg_stmt_t *st = param_slot(base, i, err);
    if (st == NULL)
        return ERR_DB;
    snprintf(st->num[i - 1], PG_NUM_TEXT, "%" PRId64, v);
    st->values[i - 1] = st->num[i - 1];
    st->types[i - 1] = OID_INT8;
    return 0;
}

static int pg_bind_double(db_stmt_t *base, int i, double v, err_t *err)
{
    pg_stmt_t *st = param_slot(base, i, err);
    if (st == NULL)
        return ERR_DB;
    st->types[i - 1] = OID_FLOAT8;
    if (isfinite(v)) {       /* NULL for NaN and the infinities, as db.h says */
        snprintf(st->num[i - 1], PG_NUM_TEXT, "%.17g", v);
        st->values[i - 1] = st->num[i - 1];
    }
    return 0;
}

static int too_long(const pg_stmt_t *st, int64_t n, err_t *err)
{
    if (st->conn->db->max_length > 0 && n > st->conn->db->max_length)
        return err_set(err, ERR_TOOBIG, "value too large to store (%" PRId64 " bytes; the "
                       "database is set to store at most %d)", n, st->conn->db->max_length);
    return 0;
}

static int pg_bind_text(db_stmt_t *base, int i, const char *text, err_t *err)
{
    pg_stmt_t *st = param_slot(base, i, err);
    if (st == NULL)
        return ERR_DB;
    /* Typed even when NULL: `?3 IS NULL OR status = ?3` gives the server no type otherwise. */
    st->types[i - 1] = OID_TEXT;
    if (text == NULL)
        return 0;
    int rc = too_long(st, (int64_t)strlen(text), err);
    if (rc < 0)
        return rc;
    if ((st->copies[i - 1] = strdup(text)) == NULL)
        return err_set(err, ERR_NOMEM, "out of memory binding a value");
    st->values[i - 1] = st->copies[i - 1];
    return 0;
}

static int pg_bind_blob(db_stmt_t *base, int i, const void *p, int64_t n, err_t *err)
{
    if (n < 0 || n > INT32_MAX)
        return err_set(err, n < 0 ? ERR_INTERNAL : ERR_TOOBIG, "db_bind_blob: %" PRId64 " bytes",
                       n);
    pg_stmt_t *st = param_slot(base, i, err);
    if (st == NULL)
        return ERR_DB;
    int rc = too_long(st, n, err);
    if (rc < 0)
        return rc;
    st->values[i - 1] = n > 0 && p != NULL ? p : "";      /* empty, not NULL */
    st->lengths[i - 1] = (int)n;
    st->formats[i - 1] = 1;
    st->types[i - 1] = OID_BYTEA;
    return 0;
}

static int pg_bind_null(db_stmt_t *base, int i, err_t *err)
{
    return param_slot(base, i, err) != NULL ? 0 : ERR_DB;
}

/* The store's reads are the statements that begin with SELECT (db.h's one dialect). */
static int pg_stmt_writes(db_stmt_t *base)
{
    const pg_stmt_t *st = (const pg_stmt_t *)base;
    return strncmp(st->sql, "SELECT", 6) != 0;
}

static int pg_step(db_stmt_t *base, const char *what, err_t *err)
{
    pg_stmt_t *st = (pg_stmt_t *)base;
    pg_conn_t *c = st->conn;
    if (st->res == NULL) {
        int rc = conn_ensure(c, err);
        if (rc < 0)
            return rc;
        if (!st->prepared) {
            PGresult *res = PQprepare(c->pg, st->name, st->text, st->n_params, st->types);
            if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                rc = pg_fail(c->pg, res, what, err);
                PQclear(res);
                return rc;
            }
            PQclear(res);
            st->prepared = 1;
        }
        PGresult *res = PQexecPrepared(c->pg, st->name, st->n_params, st->values, st->lengths,
                                       st->formats, 1);
        ExecStatusType status = PQresultStatus(res);
        if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
            rc = pg_fail(c->pg, res, what, err);
            PQclear(res);
            return rc;
        }
        const char *changed = PQcmdTuples(res);
        c->changes = changed[0] != '\0' ? strtoll(changed, NULL, 10) : 0;
        st->res = res;
        st->n_rows = status == PGRES_TUPLES_OK ? PQntuples(res) : 0;
        st->row = -1;
    }
    if (st->row + 1 < st->n_rows) {
        st->row++;
        return DB_ROW;
    }
    st->row = st->n_rows;
    return DB_DONE;
}

/* ---- columns ------------------------------------------------------------------------------------- */

static uint64_t be_uint(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i)
        v = v << 8 | p[i];
    return v;
}

static double be_double(const unsigned char *p)
{
    uint64_t bits = be_uint(p, 8);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/*
 * A binary numeric (what SUM() of a bigint column returns) as a double: base-10000 digits after
 * a header of digit count, weight of the first digit, sign and display scale.
 */
static double numeric_value(const unsigned char *p, int len)
{
    if (len < 8)
        return 0;
    int n = (int16_t)be_uint(p, 2), weight = (int16_t)be_uint(p + 2, 2);
    unsigned sign = (unsigned)be_uint(p + 4, 2);
    if (sign == 0xC000 || len < 8 + 2 * n)       /* NaN */
        return NAN;
    double v = 0;
    for (int i = 0; i < n; ++i)
        v += (double)be_uint(p + 8 + 2 * i, 2) * pow(10000.0, weight - i);
    return sign == 0x4000 ? -v : v;
}

static const unsigned char *column(db_stmt_t *base, int col, Oid *type, int *len)
{
    pg_stmt_t *st = (pg_stmt_t *)base;
    if (st->res == NULL || st->row < 0 || st->row >= st->n_rows || col < 0 ||
        col >= PQnfields(st->res) || PQgetisnull(st->res, st->row, col))
        return NULL;
    *type = PQftype(st->res, col);
    *len = PQgetlength(st->res, st->row, col);
    return (const unsigned char *)PQgetvalue(st->res, st->row, col);
}

static int64_t pg_column_int64(db_stmt_t *base, int col)
{
    Oid type = 0;
    int len = 0;
    const unsigned char *p = column(base, col, &type, &len);
    if (p == NULL)
        return 0;
    switch (type) {
    case OID_INT8: return (int64_t)be_uint(p, 8);
    case OID_INT4: return (int32_t)be_uint(p, 4);
    case OID_INT2: return (int16_t)be_uint(p, 2);
    case OID_BOOL: return p[0] != 0;
    case OID_FLOAT8: return (int64_t)be_double(p);
    case OID_NUMERIC: return (int64_t)llround(numeric_value(p, len));
    case OID_TEXT:
    case OID_VARCHAR: return strtoll((const char *)p, NULL, 10);
    default: return 0;
    }
}

static double pg_column_double(db_stmt_t *base, int col)
{
    Oid type = 0;
    int len = 0;
    const unsigned char *p = column(base, col, &type, &len);
    if (p == NULL)
        return 0;
    switch (type) {
    case OID_FLOAT8: return be_double(p);
    case OID_FLOAT4: {
        uint32_t bits = (uint32_t)be_uint(p, 4);
        float f;
        memcpy(&f, &bits, sizeof f);
        return f;
    }
    case OID_NUMERIC: return numeric_value(p, len);
    case OID_TEXT:
    case OID_VARCHAR: return strtod((const char *)p, NULL);
    default: return (double)pg_column_int64(base, col);
    }
}

static int pg_column_is_null(db_stmt_t *base, int col)
{
    Oid type = 0;
    int len = 0;
    return column(base, col, &type, &len) == NULL;
}

static const char *pg_column_text(db_stmt_t *base, int col)
{
    pg_stmt_t *st = (pg_stmt_t *)base;
    Oid type = 0;
    int len = 0;
    const unsigned char *p = column(base, col, &type, &len);
    if (p == NULL)
        return NULL;
    switch (type) {
    case OID_INT8:
    case OID_INT4:
    case OID_INT2:
    case OID_BOOL:
        snprintf(st->col_text, sizeof st->col_text, "%" PRId64, pg_column_int64(base, col));
        return st->col_text;
    case OID_FLOAT8:
    case OID_FLOAT4:
    case OID_NUMERIC:
        snprintf(st->col_text, sizeof st->col_text, "%.17g", pg_column_double(base, col));
        return st->col_text;
    default:
        return (const char *)p;      /* text, bytea: libpq ends every value with a NUL */
    }
}

static const void *pg_column_blob(db_stmt_t *base, int col, int64_t *bytes)
{
    Oid type = 0;
    int len = 0;
    const unsigned char *p = column(base, col, &type, &len);
    *bytes = p != NULL ? len : 0;
    return p != NULL && len > 0 ? p : NULL;     /* like SQLite: an empty blob reads as NULL */
}

static int64_t pg_changes(db_conn_t *base)
{
    return ((pg_conn_t *)base)->changes;
}

/* ---- transactions and scripts ---------------------------------------------------------------- */

static int pg_in_tx(db_conn_t *base)
{
    return ((pg_conn_t *)base)->tx_open;
}

static int pg_begin(db_conn_t *base, enum db_tx_kind kind, err_t *err)
{
    pg_conn_t *c = (pg_conn_t *)base;
    if (pg_in_tx(base))
        return err_set(err, ERR_INTERNAL, "a transaction is already open");
    int rc = conn_ensure(c, err);
    if (rc < 0)
        return rc;
    /* A read sees one snapshot; a write takes the writer lock now, like SQLite's BEGIN
     * IMMEDIATE, so it cannot fail later for want of it. */
    static const char sql_write[] =
        "BEGIN; SELECT pg_advisory_xact_lock(" "1852142948" ", 1)";
    _Static_assert(PG_LOCK_SPACE == 1852142948 && PG_LOCK_WRITER == 1, "sql_write above");
    c->tx_open = 1;
    rc = pg_command(c->pg, kind == DB_TX_WRITE ? sql_write : "BEGIN ISOLATION LEVEL REPEATABLE READ",
                    "starting a transaction", err);
    if (rc < 0)
        pg_rollback(base);
    return rc;
}

static int pg_commit(db_conn_t *base, err_t *err)
{
    pg_conn_t *c = (pg_conn_t *)base;
    if (PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
        pg_rollback(base);
        return err_set(err, ERR_DB, "committing a transaction that failed");
    }
    int rc = pg_command(c->pg, "COMMIT", "committing", err);
    c->tx_open = 0;
    if (rc < 0)
        pg_rollback(base);
    return rc;
}

static void pg_rollback(db_conn_t *base)
{
    pg_conn_t *c = (pg_conn_t *)base;
    if (PQtransactionStatus(c->pg) != PQTRANS_IDLE && PQstatus(c->pg) == CONNECTION_OK)
        PQclear(PQexec(c->pg, "ROLLBACK"));
    c->tx_open = 0;
}

static int pg_exec(db_conn_t *base, const char *script, const char *what, err_t *err)
{
    pg_conn_t *c = (pg_conn_t *)base;
    int rc = pg_in_tx(base) ? 0 : conn_ensure(c, err);
    return rc < 0 ? rc : pg_command(c->pg, script, what, err);
}

static int pg_set_durable(db_conn_t *base, int durable, err_t *err)
{
    pg_conn_t *c = (pg_conn_t *)base;
    /* A session opened again starts at the server's setting: this only has to reach a live one.
     * Durable again is that setting (RESET), not "on": an operator's remote_apply stays. */
    int rc = pg_in_tx(base) ? 0 : conn_ensure(c, err);
    if (rc < 0)
        return rc;
    return pg_command(c->pg, durable ? "RESET synchronous_commit"
                                     : "SET synchronous_commit = off",
                      durable ? "restoring full syncs" : "relaxing a sync", err);
}

static int pg_backup(db_conn_t *base, const char *out_path, err_t *err)
{
    (void)base;
    (void)out_path;
    return err_set(err, ERR_NOTSUPPORTED, "backups of a PostgreSQL database are taken with "
                   "pg_dump, not by neurond");
}

/* ---- notifications ------------------------------------------------------------------------- */

#define PG_LISTEN_RETRY_FIRST_MS 100
#define PG_LISTEN_RETRY_MAX_MS 5000

/* A session that only listens: notifications arrive on its socket while it idles. */
typedef struct pg_listener {
    db_listener_t base;
    pg_db_t *db;
    char *listen_sql;              /* LISTEN "<channel>" */
    PGconn *pg;                    /* NULL while lost */
    int backoff_ms;                /* before the next reconnect attempt */
    int64_t retry_at_ms;           /* monotonic: no reconnect attempt before */
    char lost[ERR_MSG_MAX];        /* why the session is lost, for each failed wait */
} pg_listener_t;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    if (ms > 0)
        nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L},
                  NULL);
}

/* Open the session and LISTEN on it. */
static int listener_connect(pg_listener_t *l, err_t *err)
{
    PGconn *pg = session_open(l->db, err);
    if (pg == NULL)
        return err->code;
    int rc = pg_command(pg, l->listen_sql, "listening for notifications", err);
    if (rc < 0) {
        PQfinish(pg);
        return rc;
    }
    l->pg = pg;
    l->backoff_ms = PG_LISTEN_RETRY_FIRST_MS;
    return 0;
}

/* The session is gone: drop it, and reconnect at once on the next wait (then with backoff). */
static int listener_lost(pg_listener_t *l, err_t *err)
{
    char line[200];
    snprintf(l->lost, sizeof l->lost, "%s", one_line(PQerrorMessage(l->pg), line, sizeof line));
    PQfinish(l->pg);
    l->pg = NULL;
    l->retry_at_ms = mono_ms();
    return err_set(err, ERR_UNAVAILABLE, "listening session lost: %s", l->lost);
}

static void pg_listen_close(db_listener_t *base)
{
    pg_listener_t *l = (pg_listener_t *)base;
    if (l->pg != NULL)
        PQfinish(l->pg);
    free(l->listen_sql);
    free(l);
}

static int pg_listen_open(db_t *base, const char *channel, db_listener_t **out, err_t *err)
{
    pg_db_t *d = (pg_db_t *)base;
    *out = NULL;
    pg_listener_t *l = calloc(1, sizeof *l);
    if (l == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for a listener");
    l->base.driver = &db_pg_driver;
    l->db = d;
    /* The channel is an identifier: quoted as one, so any name of ours is taken literally. */
    size_t size = 2 * strlen(channel) + 16;
    if ((l->listen_sql = malloc(size)) == NULL) {
        free(l);
        return err_set(err, ERR_NOMEM, "out of memory for a listener");
    }
    int n = snprintf(l->listen_sql, size, "LISTEN \"");
    for (const char *p = channel; *p != '\0'; ++p) {
        if (*p == '"')
            l->listen_sql[n++] = '"';
        l->listen_sql[n++] = *p;
    }
    snprintf(l->listen_sql + n, size - (size_t)n, "\"");
    int rc = listener_connect(l, err);
    if (rc < 0) {
        pg_listen_close(&l->base);
        return rc;
    }
    *out = &l->base;
    return 0;
}

/* Hand every notification received so far to `fn`. */
static void listener_deliver(pg_listener_t *l, db_notify_fn fn, void *ctx)
{
    PGnotify *note;
    while ((note = PQnotifies(l->pg)) != NULL) {
        fn(ctx, note->extra);
        PQfreemem(note);
    }
}

static int pg_listen_wait(db_listener_t *base, int timeout_ms, db_notify_fn fn, void *ctx,
                          err_t *err)
{
    pg_listener_t *l = (pg_listener_t *)base;
    if (l->pg == NULL) {
        int64_t wait = l->retry_at_ms - mono_ms();
        if (wait > 0) {
            sleep_ms(wait < timeout_ms ? wait : timeout_ms);
            return err_set(err, ERR_UNAVAILABLE, "listening session lost: %s", l->lost);
        }
        if (listener_connect(l, err) < 0) {
            snprintf(l->lost, sizeof l->lost, "%s", err->msg);
            l->retry_at_ms = mono_ms() + l->backoff_ms;
            l->backoff_ms = l->backoff_ms * 2 > PG_LISTEN_RETRY_MAX_MS ? PG_LISTEN_RETRY_MAX_MS
                                                                      : l->backoff_ms * 2;
            sleep_ms(timeout_ms);
            return ERR_UNAVAILABLE;
        }
        /* At once, before anything sent on the new session is delivered: the caller catches
         * up on what it missed first, and what follows comes after. */
        return DB_LISTEN_RESUMED;
    }
    struct pollfd p = {.fd = PQsocket(l->pg), .events = POLLIN};
    int ready = poll(&p, 1, timeout_ms);
    int lost = ready > 0 && (PQconsumeInput(l->pg) != 1 || PQstatus(l->pg) != CONNECTION_OK);
    /* What arrived before the session ended was committed: delivered all the same. */
    listener_deliver(l, fn, ctx);
    return lost ? listener_lost(l, err) : 0;
}

const db_driver_t db_pg_driver = {
    .dialect = "postgresql",
    .embedded = 0,
    .open = pg_open,
    .close = pg_close,
    .conn = pg_conn,
    .thread_end = pg_thread_end,
    .prepare = pg_prepare,
    .stmt_done = pg_stmt_done,
    .bind_int64 = pg_bind_int64,
    .bind_double = pg_bind_double,
    .bind_text = pg_bind_text,
    .bind_blob = pg_bind_blob,
    .bind_null = pg_bind_null,
    .stmt_writes = pg_stmt_writes,
    .step = pg_step,
    .column_int64 = pg_column_int64,
    .column_double = pg_column_double,
    .column_is_null = pg_column_is_null,
    .column_text = pg_column_text,
    .column_blob = pg_column_blob,
    .changes = pg_changes,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .in_tx = pg_in_tx,
    .exec = pg_exec,
    .set_durable = pg_set_durable,
    .backup = pg_backup,
    .listen_open = pg_listen_open,
    .listen_wait = pg_listen_wait,
    .listen_close = pg_listen_close,
};
