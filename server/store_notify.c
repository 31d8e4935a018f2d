/* server/store_notify.c -- notifications between the processes sharing a PostgreSQL database:
 * sent with a statement in the sender's transaction, received on a listening session (db.h). */
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "store_internal.h"

/* The listener is the driver's; the store's name for it only keeps db.h out of store.h. */
struct store_listener {
    db_listener_t *l;
};

int store_notify(store_t *s, const char *channel, const char *payload, err_t *err)
{
    /* pg_notify() is PostgreSQL's: the one statement of the store outside db.h's common
     * dialect, run only there. */
    static const char sql_in_tx[] = "SELECT pg_notify(?1, ?2)";
    /* Alone, the notification is a transaction of its own, and one that notifies gets a
     * transaction id: its commit would wait for a WAL flush (an fsync) for nothing, since
     * notifications never outlive a server crash anyway. set_config(..., true) turns that off
     * for this one statement's transaction. */
    static const char sql_alone[] =
        "SELECT set_config('synchronous_commit', 'off', true), pg_notify(?1, ?2)";
    if (strcmp(db_dialect(s->db), "postgresql") != 0)
        return 0;
    if (strlen(payload) > STORE_NOTIFY_MAX)
        return err_set(err, ERR_TOOBIG, "notification of %zu bytes (at most %d)",
                       strlen(payload), STORE_NOTIFY_MAX);
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    if (rc < 0)
        return rc;
    return store__run(c, db_in_tx(c) ? sql_in_tx : sql_alone,
                      STORE_ARGS(DB_TEXT(channel), DB_TEXT(payload)), "sending a notification",
                      NULL, err);
}

int store_listen_open(store_t *s, const char *channel, store_listener_t **out, err_t *err)
{
    *out = NULL;
    store_listener_t *l = calloc(1, sizeof *l);
    if (l == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for a listener");
    int rc = db_listen_open(s->db, channel, &l->l, err);
    if (rc < 0) {
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

int store_listen_wait(store_listener_t *l, int timeout_ms,
                      void (*fn)(void *ctx, const char *payload), void *ctx, err_t *err)
{
    _Static_assert(STORE_LISTEN_RESUMED == DB_LISTEN_RESUMED, "one meaning");
    return db_listen_wait(l->l, timeout_ms, fn, ctx, err);
}

void store_listen_close(store_listener_t *l)
{
    if (l == NULL)
        return;
    db_listen_close(l->l);
    free(l);
}
