/* server/replica.h -- this process as a replica of the database: its id and its heartbeat.
 *
 * Every neurond using a database has a row in `replicas` (store.h) from start to shutdown. A
 * background thread refreshes it every lease / 3, so two heartbeats can be missed before the
 * row's age passes the lease and other replicas take the process for dead; each heartbeat also
 * deletes the rows of replicas that are. A process that stalled past the lease (stopped,
 * partitioned) finds its row gone: it registers again under a new id, which it publishes, and
 * its runs under the old id, whose jobs other replicas may have taken over, fail their fencing
 * checks (the lease's owner is the old id) and stop without committing.
 *
 *     _Atomic int64_t id;
 *     replica_t *r = NULL;
 *     if (replica_start(store, "10.0.0.5:8080", "1.2.0", 15000, &id, &r, &err) < 0) ...
 *     ... atomic_load(&id) ...
 *     replica_stop(r);                     // joins the thread, deletes the row
 */
#ifndef ND_REPLICA_H
#define ND_REPLICA_H

#include <stdatomic.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

typedef struct replica replica_t;

/* Register this process (address `address`, neurond `version`), store its id in `*id` (and a new
 * one whenever it registers again), and start its heartbeat every `lease_ms` / 3. `*out` is new
 * (end with replica_stop()), NULL on failure. */
int replica_start(store_t *store, const char *address, const char *version, int64_t lease_ms,
                  _Atomic int64_t *id, replica_t **out, err_t *err);

/* Stop the heartbeat and delete this process's row, so it leaves the cluster view at once
 * rather than after the lease. NULL is a no-op. */
void replica_stop(replica_t *r);

#endif /* ND_REPLICA_H */
