/* server/health.c -- the database check behind GET /healthz, on its own thread (health.h). */
#include "health.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "monotime.h"

struct health {
    store_t *store;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake;       /* the thread: a check is wanted, or stop */
    pthread_cond_t done;       /* probes: a check ended */
    int wanted;                /* a probe asked for a new check */
    int stop;
    /* Written under mu; atomic so that a probe of a fresh good result takes no lock. */
    _Atomic int64_t at_ns;     /* when the last check ended */
    _Atomic int64_t started_ns; /* when the check in progress began; 0: none */
    atomic_int ok;
    char msg[ERR_MSG_MAX];
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One check; its result replaces the last one. */
static void check(health_t *h)
{
    err_t e = {0};
    int ok = store_ping(h->store, &e) == 0;
    pthread_mutex_lock(&h->mu);
    h->ok = ok;
    snprintf(h->msg, sizeof h->msg, "%s", ok ? "" : e.msg);
    h->at_ns = now_ns();
    h->started_ns = 0;
    pthread_cond_broadcast(&h->done);
    pthread_mutex_unlock(&h->mu);
}

static void *health_main(void *arg)
{
    health_t *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->wanted && !h->stop)
            pthread_cond_wait(&h->wake, &h->mu);
        if (h->stop)
            break;
        h->wanted = 0;
        h->started_ns = now_ns();
        pthread_mutex_unlock(&h->mu);
        check(h);
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    store_thread_end(h->store);
    return NULL;
}

int health_start(store_t *store, health_t **out, err_t *err)
{
    *out = NULL;
    health_t *h = calloc(1, sizeof *h);
    if (h == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for the health check");
    h->store = store;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->wake, NULL);
    monotime_cond_init(&h->done);
    check(h);
    store_thread_end(store);   /* the caller's thread keeps no connection for it */
    int prc = pthread_create(&h->thread, NULL, health_main, h);
    if (prc != 0) {
        pthread_cond_destroy(&h->done);
        pthread_cond_destroy(&h->wake);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return err_set(err, ERR_NOMEM, "cannot start the health check thread: %s",
                       strerror(prc));
    }
    *out = h;
    return 0;
}

void health_read(health_t *h, health_report_t *out)
{
    int64_t now = now_ns();
    if (atomic_load(&h->ok) && atomic_load(&h->started_ns) == 0 &&
        now - atomic_load(&h->at_ns) < HEALTH_TTL_NS) {
        *out = (health_report_t){.ok = 1};
        return;
    }
    pthread_mutex_lock(&h->mu);
    now = now_ns();
    if (now - h->at_ns >= HEALTH_TTL_NS) {
        if (h->started_ns == 0 && !h->wanted) {
            h->wanted = 1;
            pthread_cond_signal(&h->wake);
        }
        /* A result a second old says nothing: wait for the new one, but never past a second
         * from the check's start, after which the check itself is the answer (hung). */
        const int64_t until = (h->started_ns > 0 ? h->started_ns : now) + HEALTH_TTL_NS;
        while (now - h->at_ns >= HEALTH_TTL_NS && now < until && !h->stop) {
            struct timespec deadline = monotime_deadline((until - now + 999999) / 1000000);
            pthread_cond_timedwait(&h->done, &h->mu, &deadline);
            now = now_ns();
        }
    }
    out->ok = h->ok;
    snprintf(out->msg, sizeof out->msg, "%s", h->msg);
    out->waiting_ns = h->started_ns > 0 ? now - h->started_ns : 0;
    pthread_mutex_unlock(&h->mu);
}

void health_stop(health_t *h)
{
    if (h == NULL)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->done);
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
