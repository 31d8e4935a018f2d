/* server/replica.c -- this process's row in `replicas` and the thread that keeps it fresh. */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "replica.h"

struct replica {
    store_t *store;
    int64_t id;
    int64_t lease_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;         /* signalled by replica_stop() */
    int stopping;                /* mu */
};

/* `ms` from now on CLOCK_MONOTONIC, the clock `wake` waits on: a wall-clock step must not
 * stretch or skip a heartbeat. */
static struct timespec deadline_after(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (ms % 1000) * 1000000LL;
    ts.tv_sec += (time_t)(ms / 1000 + ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    return ts;
}

static void *heartbeat_main(void *arg)
{
    replica_t *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        struct timespec until = deadline_after(r->lease_ms / 3);
        while (!r->stopping && pthread_cond_timedwait(&r->wake, &r->mu, &until) == 0) {
        }
        if (r->stopping)
            break;
        pthread_mutex_unlock(&r->mu);
        err_t err = {0};
        int64_t removed = 0;
        if (store_replica_heartbeat(r->store, r->id, r->lease_ms, &removed, &err) < 0)
            /* The database is down or busy: the next beat tries again. A missing row means
             * this process stalled past the lease and was taken for dead. */
            log_msg(LOG_LEVEL_WARN, "replica %" PRId64 ": heartbeat failed: %s", r->id, err.msg);
        else if (removed > 0)
            log_msg(LOG_LEVEL_INFO, "removed %" PRId64 " dead replica(s) from the database",
                    removed);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    store_thread_end(r->store);
    return NULL;
}

int replica_start(store_t *store, const char *address, const char *version, int64_t lease_ms,
                  replica_t **out, err_t *err)
{
    *out = NULL;
    replica_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for the replica");
    r->store = store;
    r->lease_ms = lease_ms;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->wake, &ca);
    pthread_condattr_destroy(&ca);
    int rc = store_replica_register(store, address, version, &r->id, err);
    if (rc == 0 && pthread_create(&r->thread, NULL, heartbeat_main, r) != 0) {
        store_replica_remove(store, r->id, err);
        rc = err_set(err, ERR_NOMEM, "cannot start the heartbeat thread");
    }
    if (rc < 0) {
        pthread_cond_destroy(&r->wake);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int64_t replica_id(const replica_t *r)
{
    return r->id;
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
    if (store_replica_remove(r->store, r->id, &err) < 0)
        log_msg(LOG_LEVEL_WARN, "replica %" PRId64 ": cannot remove its row: %s", r->id,
                err.msg);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
