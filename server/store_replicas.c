/* server/store_replicas.c -- the processes using the database: their rows, heartbeats and the
 * leases their training runs hold. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "store_internal.h"

int store_replica_register(store_t *s, const char *address, const char *version, int64_t *id,
                           err_t *err)
{
    static const char sql[] =
        "INSERT INTO replicas(address, version, started_at, heartbeat_at, heartbeat_ms)"
        " VALUES (?1, ?2, ?3, ?3, ?4) RETURNING id";
    *id = 0;
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    if (rc < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    rc = store__get_int(c, sql,
                        STORE_ARGS(DB_TEXT(address), DB_TEXT(version), DB_TEXT(now),
                                   DB_INT(store__now_ms())),
                        id, "replica", 0, err);
    if (rc == 0)
        atomic_store(&s->replica_id, *id);
    return rc;
}

int store__replica_beat(store_t *s, db_conn_t *c, int64_t id, int64_t lease_ms, err_t *err)
{
    static const char sql_last[] = "SELECT heartbeat_ms FROM replicas WHERE id = ?1";
    static const char sql_beat[] =
        "UPDATE replicas SET heartbeat_at = ?2, heartbeat_ms = ?3 WHERE id = ?1";
    int64_t last = 0;
    int rc = store__get_row(c, sql_last, STORE_ARGS(DB_INT(id)), store__read_int, &last, NULL, 0,
                            err);
    if (rc == DB_DONE)
        return err_set(err, ERR_NOTFOUND, "replica %" PRId64 " not found", id);
    if (rc != DB_ROW)
        return rc;
    /* The time after the read: a server that stalled under it (paused, say) made this beat
     * late as surely as one that refused it. */
    const int64_t now_ms = store__now_ms();
    char now[STORE_TIME_MAX];
    store_time_str(now_ms, now);
    /* The row just read cannot go before the update: the transaction holds the writer lock. */
    rc = store__run(c, sql_beat, STORE_ARGS(DB_INT(id), DB_TEXT(now), DB_INT(now_ms)),
                    "refreshing the replica's heartbeat", NULL, err);
    /* Beats come every third of a lease, so another replica's heartbeat may be a third of a
     * lease older than this one's, plus whatever held both up. Ours older than two thirds of a
     * lease means such a hold-up long enough to make a live replica's look dead. */
    if (rc == 0 && last < now_ms - lease_ms * 2 / 3)
        store__withhold(s, lease_ms);
    return rc;
}

void store__withhold(store_t *s, int64_t lease_ms)
{
    const int64_t until = store__now_ms() + lease_ms;
    int64_t from = atomic_load(&s->judge_from_ms);
    while (from < until && !atomic_compare_exchange_weak(&s->judge_from_ms, &from, until)) {
    }
}

int64_t store__dead_before(store_t *s, int64_t now_ms, int64_t lease_ms)
{
    return now_ms < atomic_load(&s->judge_from_ms) ? INT64_MIN : now_ms - lease_ms;
}

int64_t store_replica_judge_from(store_t *s)
{
    return atomic_load(&s->judge_from_ms);
}

/* Expire the lease of epoch `epoch` of replica `replica_id` on model `id` (c's transaction). */
static int lease_expire(db_conn_t *c, int64_t id, int64_t replica_id, int64_t epoch, err_t *err)
{
    /* Expired, not deleted: the epoch must only grow. */
    static const char sql[] =
        "UPDATE model_leases SET expires_ms = 0"
        " WHERE model_id = ?1 AND replica_id = ?2 AND epoch = ?3";
    return store__run(c, sql, STORE_ARGS(DB_INT(id), DB_INT(replica_id), DB_INT(epoch)),
                      "releasing a model's lease", NULL, err);
}

/* The releases that failed (store_lease_release), done again in c's transaction: `*n` of them,
 * copied to `out`, for unreleased_forget() once that transaction has committed. */
static int unreleased_take(store_t *s, db_conn_t *c, struct store_lease_ref *out, int *n,
                           err_t *err)
{
    pthread_mutex_lock(&s->leases_mu);
    *n = s->n_unreleased;
    memcpy(out, s->unreleased, (size_t)*n * sizeof *out);
    pthread_mutex_unlock(&s->leases_mu);
    int rc = 0;
    for (int i = 0; i < *n && rc == 0; ++i)
        rc = lease_expire(c, out[i].model_id, out[i].replica_id, out[i].epoch, err);
    return rc;
}

/* Forget the first `n` failed releases: they are done. */
static void unreleased_forget(store_t *s, int n)
{
    pthread_mutex_lock(&s->leases_mu);
    memmove(s->unreleased, s->unreleased + n,
            (size_t)(s->n_unreleased - n) * sizeof s->unreleased[0]);
    s->n_unreleased -= n;
    pthread_mutex_unlock(&s->leases_mu);
}

int store_replica_heartbeat(store_t *s, int64_t id, int64_t lease_ms, int64_t *removed,
                            err_t *err)
{
    /* Only leases still alive: one that expired (this replica's heartbeats stopped for a lease,
     * a database outage say) may be another replica's already, or about to be, as that replica
     * claimed the job it belongs to; reviving it would refuse that replica its lease. */
    static const char sql_leases[] =
        "UPDATE model_leases SET expires_ms = ?2 WHERE replica_id = ?1 AND expires_ms >= ?3";
    static const char sql_dead[] = "DELETE FROM replicas WHERE heartbeat_ms < ?1 AND id <> ?2";
    if (removed != NULL)
        *removed = 0;
    db_conn_t *c = NULL;
    int64_t dead = 0;
    struct store_lease_ref done[STORE_UNRELEASED_MAX];
    int n_done = 0, own = 0, rc = store__conn(s, &c, err);
    if (rc == 0 && (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) == 0) {
        const int64_t now_ms = store__now_ms();
        rc = store__replica_beat(s, c, id, lease_ms, err);
        if (rc == 0)
            rc = unreleased_take(s, c, done, &n_done, err);
        if (rc == 0)
            rc = store__run(c, sql_leases,
                            STORE_ARGS(DB_INT(id), DB_INT(now_ms + lease_ms), DB_INT(now_ms)),
                            "renewing the replica's leases", NULL, err);
        if (rc == 0)
            rc = store__run(c, sql_dead,
                            STORE_ARGS(DB_INT(store__dead_before(s, now_ms, lease_ms)),
                                       DB_INT(id)),
                            "removing dead replicas", &dead, err);
        rc = store__tx_leave(c, own, rc, err);
    }
    if (rc == ERR_UNAVAILABLE)   /* out of reach, or locked past the busy timeout */
        store__withhold(s, lease_ms);
    if (rc == 0 && n_done > 0)
        unreleased_forget(s, n_done);
    if (rc == 0 && removed != NULL)
        *removed = dead;
    return rc;
}

int store_replica_remove(store_t *s, int64_t id, err_t *err)
{
    static const char sql[] = "DELETE FROM replicas WHERE id = ?1";
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    if (rc == 0)
        rc = store__run(c, sql, STORE_ARGS(DB_INT(id)), "removing the replica", NULL, err);
    return rc;
}

static int replica_read_row(db_stmt_t *st, void *dst, err_t *err)
{
    (void)err;
    store_replica_t *r = dst;
    memset(r, 0, sizeof *r);
    r->id = db_column_int64(st, 0);
    store__column_text_copy(st, 1, r->address, sizeof r->address);
    store__column_text_copy(st, 2, r->version, sizeof r->version);
    store__column_text_copy(st, 3, r->started_at, sizeof r->started_at);
    store__column_text_copy(st, 4, r->heartbeat_at, sizeof r->heartbeat_at);
    r->jobs_running = db_column_int64(st, 5);
    return 0;
}

int store_replica_list(store_t *s, int64_t lease_ms, store_replica_t **out, int64_t *n,
                       err_t *err)
{
    static const char sql[] =
        "SELECT r.id, r.address, r.version, r.started_at, r.heartbeat_at,"
        " (SELECT COUNT(*) FROM jobs j WHERE j.status = 'running' AND j.replica_id = r.id)"
        " FROM replicas r WHERE r.heartbeat_ms >= ?1 ORDER BY r.id";
    *out = NULL;
    *n = 0;
    db_conn_t *c = NULL;
    void *rows = NULL;
    int rc = store__conn(s, &c, err);
    if (rc == 0)
        rc = store__list(c, sql,
                         STORE_ARGS(DB_INT(store__dead_before(s, store__now_ms(), lease_ms))),
                         sizeof **out,
                         replica_read_row, NULL, 0, &rows, n, NULL, "listing replicas", err);
    if (rc == 0)
        *out = rows;
    return rc;
}

int store_lease_take(store_t *s, int64_t id, int64_t replica_id, int64_t lease_ms,
                     int64_t *epoch, err_t *err)
{
    /* The epoch grows with every take, by anyone: a run can tell a lease taken over from its
     * own even when the same replica took it again. */
    static const char sql[] =
        "INSERT INTO model_leases(model_id, replica_id, epoch, expires_ms) VALUES (?1, ?2, 1, ?3)"
        " ON CONFLICT(model_id) DO UPDATE SET replica_id = excluded.replica_id,"
        " epoch = model_leases.epoch + 1, expires_ms = excluded.expires_ms"
        " WHERE model_leases.replica_id = ?2 OR model_leases.expires_ms < ?4"
        " RETURNING epoch";
    *epoch = 0;
    db_conn_t *c = NULL;
    /* Not worth an fsync where the database dies with this process: any later durable commit
     * (the run's chunk and final commits, or the release when it fails) carries the take to
     * disk first, so a power cut loses a take only with the process and a run that had
     * committed nothing. A server can restart under a live run, and a take it lost would fence
     * that run out of its own model. */
    int own = 0, relaxed = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (db_conn_embedded(c) && (rc = store__relax_begin(c, &relaxed, err)) < 0))
        return rc;
    if ((rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return store__relax_end(c, relaxed, rc, err);
    int64_t now_ms = store__now_ms();
    if ((rc = store__model_exists(c, id, err)) == 0) {
        rc = store__get_row(c, sql,
                            STORE_ARGS(DB_INT(id), DB_INT(replica_id), DB_INT(now_ms + lease_ms),
                                       DB_INT(now_ms)),
                            store__read_int, epoch, NULL, 0, err);
        if (rc == DB_DONE)
            rc = err_set(err, ERR_CONFLICT, "model %" PRId64 " is training on another replica",
                         id);
        else if (rc == DB_ROW)
            rc = 0;
    }
    return store__relax_end(c, relaxed, store__tx_leave(c, own, rc, err), err);
}

int store_lease_check(store_t *s, int64_t id, int64_t replica_id, int64_t epoch, err_t *err)
{
    static const char sql[] =
        "SELECT COUNT(*) FROM model_leases WHERE model_id = ?1 AND replica_id = ?2 AND epoch = ?3";
    db_conn_t *c = NULL;
    int64_t held = 0;
    int rc = store__conn(s, &c, err);
    if (rc == 0)
        rc = store__get_int(c, sql, STORE_ARGS(DB_INT(id), DB_INT(replica_id), DB_INT(epoch)),
                            &held, "model", id, err);
    if (rc == 0 && held == 0)
        rc = err_set(err, ERR_CONFLICT, "the training run lost its lease on model %" PRId64
                     " (epoch %" PRId64 " is no longer current): it stops without committing",
                     id, epoch);
    return rc;
}


int store_lease_release(store_t *s, int64_t id, int64_t replica_id, int64_t epoch, err_t *err)
{
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    if (rc == 0)
        rc = lease_expire(c, id, replica_id, epoch, err);
    /* A release on its own that failed is left to the heartbeat (one inside a transaction
     * fails that transaction, whose caller releases again on its own). */
    if (rc < 0 && c != NULL && !db_in_tx(c)) {
        pthread_mutex_lock(&s->leases_mu);
        if (s->n_unreleased < STORE_UNRELEASED_MAX)
            s->unreleased[s->n_unreleased++] =
                (struct store_lease_ref){.model_id = id, .replica_id = replica_id,
                                         .epoch = epoch};
        pthread_mutex_unlock(&s->leases_mu);
    }
    return rc;
}

