/* server/store_backup.c -- consistent copies of the database, through the driver's backup hook
 * (db_backup(); SQLite's online backup API underneath). */
#include <sys/stat.h>

#include "db.h"
#include "store_internal.h"

int store_backup(store_t *s, const char *out_path, err_t *err)
{
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    if (rc < 0)
        return rc;
    return db_backup(c, out_path, err);
}

int store_backup_file(const char *db_path, const char *out_path, int *schema_version,
                      err_t *err)
{
    static const char sql_version[] = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
    if (schema_version != NULL)
        *schema_version = 0;
    if (!db_address_is_file(db_path))
        return err_set(err, ERR_NOTSUPPORTED, "neurond copies SQLite databases; back up "
                       "PostgreSQL with pg_dump");
    struct stat st;
    if (stat(db_path, &st) != 0)
        return err_set(err, ERR_NOTFOUND, "database '%s' does not exist", db_path);
    /* As it is: neither created nor migrated -- an older schema is copied as it is, which is
     * what a backup before an upgrade needs. The busy timeout is the daemon's default. */
    db_t *db = NULL;
    db_conn_t *c = NULL;
    int64_t version = 0;
    const db_config_t config = {.busy_ms = STORE_BUSY_TIMEOUT_MS};
    int rc = db_open(db_path, DB_OPEN_EXISTING, &config, &db, err);
    if (rc == 0)
        rc = db_conn(db, &c, err);
    if (rc == 0) {
        rc = store__get_int(c, sql_version, STORE_NO_ARGS, &version, "schema version", 0, err);
        if (rc == ERR_DB)   /* no such table: some other SQLite file */
            rc = err_set(err, ERR_INVAL, "'%s' is not a neurond database (no schema_version)",
                         db_path);
    }
    if (rc == 0)
        rc = db_backup(c, out_path, err);
    db_close(db);
    if (rc == 0 && schema_version != NULL)
        *schema_version = (int)version;
    return rc;
}
