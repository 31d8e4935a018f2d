/* server/replica.c -- this process's row in `replicas` and the thread that keeps it fresh. */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "monotime.h"
#include "replica.h"

struct replica {
    store_t *store;
    char *address, *version;     /* for registering again */
    _Atomic int64_t *id;
    int64_t lease_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;         /* signalled by replica_stop() */
    int stopping;                /* mu */
    int64_t judge_from_told;     /* the store_replica_judge_from() last logged */
};

/* The row of replica `old` is gone: this process stalled past the lease and was taken for dead
 * (its jobs may run elsewhere now). It goes on as a new replica. */
static void register_again(replica_t *r, int64_t old)
{
    err_t err = {0};
    int64_t id = 0;
    if (store_replica_register(r->store, r->address, r->version, &id, &err) < 0) {
        log_msg(LOG_LEVEL_WARN, "replica %" PRId64 ": taken for dead, cannot register again "
                "yet: %s", old, err.msg);
        return;
    }
    atomic_store(r->id, id);
    log_msg(LOG_LEVEL_WARN, "replica %" PRId64 " was taken for dead (no heartbeat for longer "
            "than the lease): it goes on as replica %" PRId64 "; its runs stop uncommitted",
            old, id);
}

/* `removed` dead replicas' rows were deleted: remove what their forks and deletes left hidden
 * too (their jobs are resumed by the job dispatchers). */
static void forget_dead(replica_t *r, int64_t removed)
{
    err_t err = {0};
    int64_t purged = 0;
    log_msg(LOG_LEVEL_INFO, "removed %" PRId64 " dead replica(s) from the database", removed);
    if (store_models_purge(r->store, r->lease_ms, &purged, &err) < 0)
        log_msg(LOG_LEVEL_WARN, "cannot remove what dead replicas left half forked or deleted "
                "yet: %s", err.msg);
    else if (purged > 0)
        log_msg(LOG_LEVEL_WARN, "removed %" PRId64 " model(s) dead replicas left half forked "
                "or half deleted", purged);
}

/* Log a new pause in judging other replicas dead (store_replica_heartbeat), once the
 * heartbeat works again: it explains a dead replica's job resumed a lease later than usual. */
static void tell_judging_paused(replica_t *r, int64_t id)
{
    const int64_t from = store_replica_judge_from(r->store);
    if (from == r->judge_from_told)
        return;
    r->judge_from_told = from;
    char when[STORE_TIME_MAX];
    store_time_str(from, when);
    log_msg(LOG_LEVEL_WARN, "replica %" PRId64 ": its heartbeat failed or came late (the "
            "database was away, or this process stalled), so other replicas' heartbeats may be "
            "as late: none is taken for dead before %s", id, when);
}

static void *heartbeat_main(void *arg)
{
    replica_t *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        struct timespec until = monotime_deadline(r->lease_ms / 3);
        while (!r->stopping && pthread_cond_timedwait(&r->wake, &r->mu, &until) == 0) {
        }
        if (r->stopping)
            break;
        pthread_mutex_unlock(&r->mu);
        err_t err = {0};
        int64_t removed = 0;
        int64_t id = atomic_load(r->id);
        int rc = store_replica_heartbeat(r->store, id, r->lease_ms, &removed, &err);
        if (rc == ERR_NOTFOUND)
            register_again(r, id);
        else if (rc < 0)
            /* The database is down or busy: the next beat tries again. */
            log_msg(LOG_LEVEL_WARN, "replica %" PRId64 ": heartbeat failed: %s", id, err.msg);
        else if (removed > 0)
            forget_dead(r, removed);
        if (rc == 0)
            tell_judging_paused(r, id);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    store_thread_end(r->store);
    return NULL;
}

int replica_start(store_t *store, const char *address, const char *version, int64_t lease_ms,
                  _Atomic int64_t *id, replica_t **out, err_t *err)
{
    *out = NULL;
    replica_t *r = calloc(1, sizeof *r);
    if (r == NULL || (r->address = strdup(address)) == NULL ||
        (r->version = strdup(version)) == NULL) {
        if (r != NULL)
            free(r->address);
        free(r);
        return err_set(err, ERR_NOMEM, "out of memory for the replica");
    }
    r->id = id;
    r->store = store;
    r->lease_ms = lease_ms;
    pthread_mutex_init(&r->mu, NULL);
    monotime_cond_init(&r->wake);   /* a wall-clock step must not stretch or skip a beat */
    int64_t first = 0;
    int rc = store_replica_register(store, address, version, &first, err);
    if (rc == 0)
        atomic_store(id, first);
    if (rc == 0 && pthread_create(&r->thread, NULL, heartbeat_main, r) != 0) {
        store_replica_remove(store, first, err);
        rc = err_set(err, ERR_NOMEM, "cannot start the heartbeat thread");
    }
    if (rc < 0) {
        pthread_cond_destroy(&r->wake);
        pthread_mutex_destroy(&r->mu);
        free(r->address);
        free(r->version);
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void replica_stop(replica_t *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    err_t err = {0};
    int64_t id = atomic_load(r->id);
    if (store_replica_remove(r->store, id, &err) < 0)
        log_msg(LOG_LEVEL_WARN, "replica %" PRId64 ": cannot remove its row: %s", id, err.msg);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->mu);
    free(r->address);
    free(r->version);
    free(r);
}
