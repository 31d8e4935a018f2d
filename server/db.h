/* server/db.h -- the storage driver interface: the few things the store needs from a SQL engine.
 *
 * store.h is the storage module's public interface; this header is its floor. The store's SQL is
 * written once against these functions, and a driver (server/db_sqlite.c today) implements them
 * for one engine. Only a driver includes its engine's header.
 *
 * The SQL a driver is given follows one dialect, so that another engine's driver can accept it:
 *   - parameters are numbered `?1`, `?2`, ... (a PostgreSQL driver rewrites them to `$1`, `$2`);
 *   - new ids come back through `RETURNING id`, never through an engine's last-insert-id;
 *   - upserts are `INSERT ... ON CONFLICT(col) DO UPDATE SET col = excluded.col`;
 *   - no engine-only functions or literals (no X'' blobs: bind an empty blob instead).
 * What differs in the schema (BLOB vs bytea, AUTOINCREMENT vs identity columns, WITHOUT ROWID)
 * lives in per-dialect migrations, schema/<dialect>/NNN_name.sql; see db_dialect().
 *
 * One db_t per database; each thread that uses it gets its own connection (db_conn), opened on
 * first use; a thread's transaction therefore covers the statements that thread runs in between.
 *
 *     db_conn_t *c = NULL;
 *     db_stmt_t *st = NULL;
 *     if (db_conn(db, &c, err) < 0 || db_prepare(c, sql, &st, err) < 0) return err->code;
 *     int rc = db_bind_int64(st, 1, id, err);
 *     while (rc == 0 && (rc = db_step(st, "reading models", err)) == DB_ROW)
 *         use(db_column_int64(st, 0));
 *     db_stmt_done(st);                    // always, so no read transaction lingers
 *
 * Errors are the err_t codes store.h documents, mapped in one place by the driver: ERR_NOTFOUND
 * (a foreign key names no row), ERR_CONFLICT (a unique key is taken), ERR_UNAVAILABLE (storage
 * full, read-only, I/O error, busy or locked past the busy timeout, damaged: the storage is at
 * fault, not the request), ERR_NOMEM, ERR_TOOBIG (a value larger than the engine stores),
 * ERR_DB (anything else: a bug). Messages say what was being done (`what`), never SQL values.
 */
#ifndef ND_DB_H
#define ND_DB_H

#include <stdint.h>

#include "err.h"

typedef struct db db_t;                /* one database: path, connections, background work */
typedef struct db_conn db_conn_t;      /* one thread's connection */
typedef struct db_stmt db_stmt_t;      /* a prepared statement, cached by its connection */

enum db_step_result { DB_DONE = 0, DB_ROW = 1 };
enum db_tx_kind { DB_TX_READ = 0, DB_TX_WRITE = 1 };
enum db_open_mode {
    DB_OPEN_SERVE = 0,      /* create if missing, configure for serving (WAL, durable commits) */
    DB_OPEN_EXISTING = 1,   /* an existing file as it is: no creating, no reconfiguring */
};

/* ---- databases and connections ------------------------------------------------------------- */

/* How a database is used; zero values are the defaults. */
typedef struct db_config {
    int busy_ms;                /* how long a statement waits for a lock another connection
                                   holds before it fails with ERR_UNAVAILABLE */
    int max_length;             /* largest text or blob stored, bytes (a larger one fails with
                                   ERR_TOOBIG); 0: the engine's own limit */
} db_config_t;

/*
 * Open the database at `path` (the driver's kind of address: a file name for SQLite). The
 * calling thread's connection is opened at once, so a path that cannot be used fails here.
 * `*out` is new (free with db_close()), NULL on failure.
 */
int db_open(const char *path, enum db_open_mode mode, const db_config_t *config, db_t **out,
            err_t *err);

/* 1 when `path` names a file (a SQLite database), 0 for a server's address (PostgreSQL). */
int db_address_is_file(const char *path);

/* `path` as it may be shown in logs and messages: a PostgreSQL address may hold a password, so
 * it is shown as "PostgreSQL (--db)"; a file name as it is. Static or `path` itself. */
const char *db_display_name(const char *path);

/* Close every connection of `d`. Call when no other thread uses it. NULL is a no-op. */
void db_close(db_t *d);

/* The name of the SQL dialect of `d`'s engine ("sqlite"): its migrations are
 * schema/<dialect>/NNN_name.sql. Static string. */
const char *db_dialect(const db_t *d);

/* The calling thread's connection to `d`, opened on first use. Borrowed: owned by `d`. */
int db_conn(db_t *d, db_conn_t **out, err_t *err);

/* Give back the calling thread's connection, if it has one (rolling back any transaction it
 * left open). A few given-back connections are kept warm for threads still to come. */
void db_thread_end(db_t *d);

/* ---- statements ------------------------------------------------------------------------------ */

/*
 * The prepared statement for the SQL literal `sql`, unbound. Statements are cached per
 * connection by the literal's address, so `sql` must be a string with static storage (a
 * `static const char sql[]`). Borrowed: call db_stmt_done() when finished with it.
 */
int db_prepare(db_conn_t *c, const char *sql, db_stmt_t **out, err_t *err);

/* Reset `st` and clear its bindings, ending any read it holds open. NULL is a no-op. */
void db_stmt_done(db_stmt_t *st);

/* Bind parameter `i` (1-based). Each fails (ERR_DB, ERR_NOMEM, ERR_TOOBIG) and must be checked.
 * db_bind_text copies `text`, and binds NULL when `text` is NULL. db_bind_blob borrows `p` until
 * db_stmt_done(); an empty blob (n == 0) is a zero-length value, not NULL. db_bind_double binds
 * NULL for NaN and the infinities (SQL has no such numbers). */
int db_bind_int64(db_stmt_t *st, int i, int64_t v, err_t *err);
int db_bind_double(db_stmt_t *st, int i, double v, err_t *err);
int db_bind_text(db_stmt_t *st, int i, const char *text, err_t *err);
int db_bind_blob(db_stmt_t *st, int i, const void *p, int64_t n, err_t *err);
int db_bind_null(db_stmt_t *st, int i, err_t *err);

/* One value to bind, for db_bind_values(); build them with the DB_* macros below. */
typedef struct db_value {
    enum db_value_kind { DB_VALUE_INT64, DB_VALUE_DOUBLE, DB_VALUE_TEXT, DB_VALUE_BLOB,
                         DB_VALUE_NULL } kind;
    int64_t i;                  /* INT64; the byte count of a BLOB */
    double d;                   /* DOUBLE */
    const void *p;              /* TEXT (NUL-terminated, NULL binds NULL) or BLOB: borrowed */
} db_value_t;

#define DB_INT(v) ((db_value_t){.kind = DB_VALUE_INT64, .i = (v)})
#define DB_DOUBLE(v) ((db_value_t){.kind = DB_VALUE_DOUBLE, .d = (v)})
#define DB_TEXT(s) ((db_value_t){.kind = DB_VALUE_TEXT, .p = (s)})
#define DB_BLOB(ptr, bytes) ((db_value_t){.kind = DB_VALUE_BLOB, .p = (ptr), .i = (bytes)})
#define DB_NULL ((db_value_t){.kind = DB_VALUE_NULL})
/* `n` float64 as a little-endian BLOB. */
#define DB_DOUBLES(x, n) DB_BLOB((x), (int64_t)(n) * (int64_t)sizeof(double))

/* Bind v[0..n-1] to parameters 1..n; stops at the first failure and returns it. */
int db_bind_values(db_stmt_t *st, const db_value_t *v, int n, err_t *err);

/* 1 when `st` can change the database (INSERT, UPDATE, DELETE, DDL), 0 for a read. */
int db_stmt_writes(db_stmt_t *st);

/* Run `st` one step: DB_ROW (a row is readable through the column getters), DB_DONE, or a
 * negative error (`what` names the operation in its message). */
int db_step(db_stmt_t *st, const char *what, err_t *err);

/* Column getters for the current row; `col` is 0-based. A NULL reads as 0, 0.0, NULL. Text and
 * blobs are borrowed until the statement steps again or is done. */
int64_t db_column_int64(db_stmt_t *st, int col);
double db_column_double(db_stmt_t *st, int col);
int db_column_is_null(db_stmt_t *st, int col);
const char *db_column_text(db_stmt_t *st, int col);
const void *db_column_blob(db_stmt_t *st, int col, int64_t *bytes);

/* 1 when the calling thread's last storage failure was only a lock another connection held
 * past the busy timeout (the same work may succeed later); 0 after any other failure, and after
 * db_failed_busy_clear(). Per thread, like the connections. */
int db_failed_busy(void);
void db_failed_busy_clear(void);

/* 1 when the calling thread's last storage failure was the database server out of reach (the
 * connection lost or refused: the same work may succeed once it is back); cleared by
 * db_failed_busy_clear() too. Per thread. */
int db_failed_unreachable(void);

/* Rows changed by the last INSERT, UPDATE or DELETE finished on `c`. */
int64_t db_changes(db_conn_t *c);

/* ---- transactions and scripts ---------------------------------------------------------------- */

/* Start a transaction on `c`. DB_TX_WRITE takes the write lock now (waiting up to the busy
 * timeout), so the transaction cannot fail later for want of it; DB_TX_READ reads one snapshot.
 * No nesting: see db_in_tx(). */
int db_begin(db_conn_t *c, enum db_tx_kind kind, err_t *err);

/* Commit the open transaction; when the commit fails, the transaction is rolled back. */
int db_commit(db_conn_t *c, err_t *err);

/* Roll back the open transaction, if any. Never fails. */
void db_rollback(db_conn_t *c);

/* 1 when `c` is inside a transaction. */
int db_in_tx(db_conn_t *c);

/* Run `script`, one or more statements without parameters (a migration, DDL). */
int db_exec(db_conn_t *c, const char *script, const char *what, err_t *err);

/* Commits of `c` outside a transaction wait for the disk (`durable` = 1, the default) or may
 * be lost in a power cut while staying consistent (`durable` = 0). For writes a crash makes
 * meaningless anyway; restore durable right after. */
int db_set_durable(db_conn_t *c, int durable, err_t *err);

/* 1 when `c`'s database lives in this process's own files (SQLite): the power cut that loses a
 * commit that was not durable stops this process too. 0 for a server (PostgreSQL), which can
 * crash and come back while this process runs on, without the commits that were not durable. */
int db_conn_embedded(const db_conn_t *c);

/* ---- engine-specific services (a driver without them fails with ERR_UNAVAILABLE) ------------ */

/*
 * Write a consistent copy of the database to the file `out_path`, one committed state, while
 * other connections keep reading and committing. `out_path` must not exist or be an empty
 * regular file, else ERR_CONFLICT. A partial copy is removed. `c` must not be in a transaction.
 */
int db_backup(db_conn_t *c, const char *out_path, err_t *err);

/* ---- notifications between processes (PostgreSQL; SQLite: ERR_NOTSUPPORTED) ------------------ */

/*
 * A notification is sent with a statement, in the sender's transaction, and delivered when that
 * transaction commits (in commit order; a rolled-back one sends nothing):
 *
 *     SELECT pg_notify(?1, ?2)          -- ?1 channel, ?2 payload (PostgreSQL only: see db_dialect)
 *
 * Receiving needs a session that does nothing else, which a listener is:
 *
 *     db_listener_t *l = NULL;
 *     if (db_listen_open(db, "neurond_events", &l, err) < 0) return err->code;
 *     while (!stopping)
 *         rc = db_listen_wait(l, 250, on_payload, ctx, err);    // DB_LISTEN_RESUMED: see below
 *     db_listen_close(l);
 */
typedef struct db_listener db_listener_t;

/* Called with each notification's payload (borrowed: valid during the call). */
typedef void (*db_notify_fn)(void *ctx, const char *payload);

/* db_listen_wait(): the listening session was opened again in this call after it had been lost:
 * what was sent in between is not delivered. */
#define DB_LISTEN_RESUMED 1

/*
 * A new session of its own to `d`'s server, listening on `channel` (a name of ours, at most 63
 * bytes, quoted for the server). `*out` is new (db_listen_close()), NULL on failure:
 * ERR_NOTSUPPORTED for an engine without notifications, ERR_UNAVAILABLE when the server cannot
 * be reached now.
 */
int db_listen_open(db_t *d, const char *channel, db_listener_t **out, err_t *err);

/*
 * Wait up to `timeout_ms` for notifications and hand each to `fn`, in the order they were
 * committed. 0, or DB_LISTEN_RESUMED, or ERR_UNAVAILABLE while the session is lost and the server
 * cannot be reached again: the call then waits out its timeout, and later calls try to reconnect
 * (listening again) with a backoff that grows to a few seconds. One thread at a time.
 */
int db_listen_wait(db_listener_t *l, int timeout_ms, db_notify_fn fn, void *ctx, err_t *err);

/* End the listening session. NULL is a no-op. */
void db_listen_close(db_listener_t *l);

#endif /* ND_DB_H */
