/* server/db.c -- the parts of the driver interface that are the same for every engine. */
#include "db.h"

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
