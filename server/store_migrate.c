/* server/store_migrate.c -- schema migrations: the embedded schema/<dialect>/NNN_name.sql files,
 * each applied once, in its own transaction, and recorded in schema_version.
 *
 * A migration is known by its number alone: a database migrated when the files lay in schema/
 * (schema_version.name "schema/001_init.sql") has the same versions applied as one migrated from
 * schema/sqlite/, and is not migrated again.
 */
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "embedded.h"
#include "store_internal.h"

/* Parse "schema/<dialect>/NNN_name.sql" -> NNN; -1 when the path is not a migration of
 * `dialect`. */
static int migration_version(const char *path, const char *dialect)
{
    char prefix[64];
    int len = snprintf(prefix, sizeof prefix, "schema/%s/", dialect);
    if (len < 0 || (size_t)len >= sizeof prefix || strncmp(path, prefix, (size_t)len) != 0)
        return -1;
    const char *p = path + len;
    size_t rest = strlen(p);
    if (rest < 5 || strcmp(p + rest - 4, ".sql") != 0)
        return -1;
    int v = 0, digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 6; ++p, ++digits)
        v = v * 10 + (*p - '0');
    if (digits == 0 || *p != '_' || v == 0)
        return -1;
    return v;
}

/* The part of migration `version` SQL cannot express, run in the migration's transaction. */
static int migration_finish(db_conn_t *c, int version, err_t *err)
{
    return version == 2 ? store__history_from_rows(c, err) : 0;
}

static int migrate_one(db_conn_t *c, int version, const embedded_file_t *f, err_t *err)
{
    static const char sql_has[] = "SELECT COUNT(*) FROM schema_version WHERE version = ?1";
    static const char sql_add[] =
        "INSERT INTO schema_version(version, name, applied_at) VALUES (?1, ?2, ?3)";
    int rc = db_begin(c, DB_TX_WRITE, err);
    if (rc < 0)
        return rc;
    /* Re-check inside the write lock: another process may have migrated meanwhile. */
    int64_t have = 0;
    rc = store__get_int(c, sql_has, STORE_ARGS(DB_INT(version)), &have, "migration", version,
                        err);
    if (rc < 0 || have > 0)
        goto out;
    if ((rc = db_exec(c, (const char *)f->data, "applying a migration", err)) < 0) {
        char msg[ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s", err != NULL ? err->msg : "");
        err_set(err, rc, "migration %s failed: %s", f->path, msg);
        goto out;
    }
    if ((rc = migration_finish(c, version, err)) < 0)
        goto out;
    char now[STORE_TIME_MAX];
    store_now(now);
    rc = store__run(c, sql_add, STORE_ARGS(DB_INT(version), DB_TEXT(f->path), DB_TEXT(now)),
                    "recording a migration", NULL, err);
out:
    return store__tx_leave(c, 1, rc, err);
}

int store__migrate(store_t *s, db_conn_t *c, err_t *err)
{
    static const char sql_max[] = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
    /* In a write transaction: replicas starting together on one PostgreSQL database take its
     * write lock in turn, so only the first creates the table. */
    int rc = db_begin(c, DB_TX_WRITE, err);
    if (rc < 0)
        return rc;
    rc = db_exec(c,
                 "CREATE TABLE IF NOT EXISTS schema_version ("
                 " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                 " applied_at TEXT NOT NULL)",
                 "creating schema_version", err);
    if ((rc = store__tx_leave(c, 1, rc, err)) < 0)
        return rc;
    const char *dialect = db_dialect(s->db);
    int known = 0;
    for (const embedded_file_t *f = embedded_files; f->path != NULL; ++f) {
        int v = migration_version(f->path, dialect);
        if (v < 0)
            continue;
        if (v <= known)
            return err_set(err, ERR_INTERNAL, "migration %s is out of order", f->path);
        known = v;
        if ((rc = migrate_one(c, v, f, err)) < 0)
            return rc;
    }
    int64_t have = 0;
    if ((rc = store__get_int(c, sql_max, STORE_NO_ARGS, &have, "schema version", 0, err)) < 0)
        return rc;
    if (have > known)
        return err_set(err, ERR_UNAVAILABLE,
                       "database schema version %d is newer than this neurond knows (%d): "
                       "upgrade neurond", (int)have, known);
    s->schema_version = (int)have;
    return 0;
}
