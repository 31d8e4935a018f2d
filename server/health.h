/* server/health.h -- the database check behind GET /healthz, made on a thread of its own.
 *
 * A check (store_ping(): a tiny write) is made at most once a second, and only while probes
 * ask: a probe reads the last result, and one that finds it a second old asks for a new check
 * and waits for it, but never longer than a second from the check's start. A check that hangs
 * (a stopped database server, a stalled disk) therefore holds a probe a second at most, and
 * the probes can say how long it has waited.
 *
 *     health_t *h = NULL;
 *     if (health_start(store, &h, &err) < 0) ...;      // one check now, then the thread
 *     health_report_t r;
 *     health_read(h, &r);                             // from any thread, at any rate
 *     ...
 *     health_stop(h);                                 // before the store closes
 */
#ifndef ND_HEALTH_H
#define ND_HEALTH_H

#include <stdint.h>

#include "err.h"
#include "store.h"

/* Results older than this are checked again when a probe asks; a check in progress for this
 * long makes the probes unhealthy. */
#define HEALTH_TTL_NS 1000000000LL

typedef struct health health_t;

typedef struct health_report {
    int ok;                    /* the last check could write to the database */
    char msg[ERR_MSG_MAX];     /* why not, when !ok */
    int64_t waiting_ns;        /* how long the check in progress has waited; 0: none */
} health_report_t;

/* Make one check now (so the first probe has a result), then start the thread. */
int health_start(store_t *store, health_t **out, err_t *err);

/* The last result, at most HEALTH_TTL_NS old: when it is older, asks for a new check and waits
 * for it until the check has taken HEALTH_TTL_NS (then waiting_ns says so). */
void health_read(health_t *h, health_report_t *out);

/* Stop the thread (after a check in progress returns) and free. NULL is a no-op. */
void health_stop(health_t *h);

#endif /* ND_HEALTH_H */
