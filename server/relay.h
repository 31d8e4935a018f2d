/* server/relay.h -- training events between replicas: announced through the database, relayed
 * to this process's event hub (events.h).
 *
 * On PostgreSQL any number of replicas share one database, and an event stream on any of them
 * must see runs on every one. A run announces on the channel RELAY_CHANNEL (store_notify) only
 * what is committed: the steps of each training commit inside that commit's transaction (so a
 * commit that rolls back -- fenced, failed -- announces nothing, and the announcements arrive in
 * commit order), then its end, and a deletion announces itself. Each replica's listener thread
 * receives the announcements of the OTHER processes (its own runs reach its streams through the
 * hub directly, earlier) and, for models with a subscriber here, publishes them to the hub: the
 * announced steps are read back from the model's history, so a notification stays small.
 *
 *     relay_t *relay = NULL;
 *     if (relay_new(store, events, &app.replica_id, &relay, &err) < 0) die(err.msg);
 *     ... relay_steps() in a training commit, relay_done(), relay_deleted() ...
 *     relay_stop(relay);                    // the listener thread ends; announcing still works
 *     relay_free(relay);
 *
 * On SQLite there is no relay: the process is the database's only user, and the hub sees every
 * run. Every announcing function takes a NULL relay as a no-op.
 *
 * Payloads are one line of JSON, {"o":origin,"r":replica,"m":model,"e":kind,...}: `o` tells
 * this process's announcements from the others' (a random number drawn at start, known before
 * the replica has its id), `r` is the sender's replica id (0 before it has one), `e` is "steps"
 * with "p":[first,last], "done" followed by a newline and the done event's data, "deleted", or
 * "barrier" with "t":token (relay_catch_up()).
 *
 * Order: the announcements of other processes reach the hub a little later than this process's
 * own runs reach it. So that a stream here sees the previous run of a model (elsewhere) end
 * before a run here begins, a run here first calls relay_catch_up().
 */
#ifndef ND_RELAY_H
#define ND_RELAY_H

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "events.h"
#include "store.h"

#define RELAY_CHANNEL "neurond_events"
#define RELAY_HEADER_MAX 192         /* bytes: any payload but a done's data, with its NUL */

typedef struct relay relay_t;

/* ---- payloads ---------------------------------------------------------------------------------- */

enum relay_kind { RELAY_STEPS = 1, RELAY_DONE = 2, RELAY_DELETED = 3, RELAY_BARRIER = 4 };

typedef struct relay_msg {
    enum relay_kind kind;
    int64_t origin;            /* the sending process (0 .. 2^53) */
    int64_t replica;           /* its replica id, 0 when it had none yet */
    int64_t model_id;          /* >= 1 */
    int64_t first, last;       /* RELAY_STEPS: the commit's first and last recorded step */
    int64_t token;             /* RELAY_BARRIER: the sender's count of them (>= 1) */
    const char *data;          /* RELAY_DONE: the done event's data, one line of JSON */
} relay_msg_t;

/* `m` as a payload in `buf` (`size` bytes): its length, or ERR_TOOBIG when it does not fit. */
int relay_encode(const relay_msg_t *m, char *buf, size_t size, err_t *err);

/* `payload` read into `*out`; out->data points into `payload`. ERR_INVAL (the message says
 * what is wrong) for anything relay_encode() does not make. */
int relay_decode(const char *payload, relay_msg_t *out, err_t *err);

/* ---- the relay --------------------------------------------------------------------------------- */

/*
 * Listen on `store`'s database (PostgreSQL: one more connection) and start the listener thread
 * that publishes other processes' announcements to `ev`. `replica_id` (borrowed, read at each
 * announcement) goes into payloads. `*out` is new (relay_free()), NULL on failure;
 * ERR_NOTSUPPORTED on SQLite.
 */
int relay_new(store_t *store, events_t *ev, const _Atomic int64_t *replica_id, relay_t **out,
              err_t *err);

/* Stop and join the listener thread. Announcing still works. Idempotent; NULL is a no-op. */
void relay_stop(relay_t *r);

/* relay_stop() if not yet, close the listening session, free. NULL is a no-op. */
void relay_free(relay_t *r);

/* Inside a training commit's transaction: announce model `model_id`'s recorded steps
 * first..last, sent when (and if) the transaction commits. */
int relay_steps(relay_t *r, int64_t model_id, int64_t first, int64_t last, err_t *err);

/* Announce the end of a run of model `model_id`: `result` (borrowed: the train result) when
 * `failure` is NULL, else the error. Outside a transaction; a failure is logged. */
void relay_done(relay_t *r, int64_t model_id, const cJSON *result, const err_t *failure);

/* Announce that model `model_id` is deleted. Outside a transaction; a failure is logged. */
void relay_deleted(relay_t *r, int64_t model_id);

/*
 * A run of model `model_id` is about to start here (it holds the model's lease): when the model
 * has a subscriber here, wait until the listener has handed the hub everything committed
 * before now -- it announces a barrier to itself and waits to hear it back -- and the done of
 * a run another replica had under way, at most RELAY_CATCH_UP_MS in all. Returns at once when
 * the listening session is lost (nothing would come).
 */
#define RELAY_CATCH_UP_MS 500
void relay_catch_up(relay_t *r, int64_t model_id);

#endif /* ND_RELAY_H */
