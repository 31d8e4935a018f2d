/* server/events.h -- the per-model event hub: training progress fanned out to SSE streams.
 *
 * GET /v1/models/{id}/events subscribes a text/event-stream to model id. Every training run,
 * sync or async, publishes through the trainer (the only publisher of run events):
 *
 *     event: progress   data: {"step":s,"loss":l}        one per recorded history row
 *     event: done       data: <train result>             the run's end, or
 *                       data: {"model_id":id,"error":{"code","message"}}  when it failed
 *
 * Deleting a model ends its streams with `event: deleted` / `data: {"model_id":id}`, after
 * which the server closes them. A comment line `: keep-alive` goes to every stream every
 * EVENTS_KEEPALIVE_S seconds, and a client that leaves is noticed within about
 * EVENTS_PROBE_MS, whether or not anything is being published.
 *
 *     events_t *ev = NULL;
 *     events_new(max_streams, &ev, &err);       // starts the keep-alive thread
 *     app.events = ev;
 *     ...
 *     events_shutdown(ev);                      // stops the keep-alive thread
 *     http_server_stop(srv);                    // ends every open stream
 *     events_free(ev);                          // drops the streams' references
 *
 * Every function may be called from any thread.
 */
#ifndef ND_EVENTS_H
#define ND_EVENTS_H

#include <stdint.h>

#include "err.h"
#include "http.h"

typedef struct events events_t;

#define EVENTS_KEEPALIVE_S 15
#define EVENTS_PROBE_MS 500                  /* idle streams checked for a gone client */
#define EVENTS_MAX_BUFFER (16u << 20)        /* a client this far behind is dropped */

/*
 * New hub allowing at most `max_streams` (>= 1) open streams at once (--max-streams); starts
 * the keep-alive thread. `*out` is new; free it with events_free().
 */
int events_new(int64_t max_streams, events_t **out, err_t *err);

/* Stop the keep-alive thread, which looks at the server's streams: call it BEFORE
 * http_server_stop(). Idempotent; NULL is a no-op. */
void events_shutdown(events_t *ev);

/* events_shutdown() if not yet, then drop every stream's reference and free. The HTTP server
 * must be stopped first (its streams are gone then). NULL is a no-op. */
void events_free(events_t *ev);

/*
 * Answer `req` with an event stream of model `model_id` (which the caller checked exists).
 * ERR_BUSY when --max-streams streams are open (the caller's answer is 429).
 */
int events_subscribe(events_t *ev, http_req_t *req, int64_t model_id, err_t *err);

/* 1 when model `model_id` has at least one subscriber (lets publishers skip formatting). */
int events_wanted(events_t *ev, int64_t model_id);

/* Publish one recorded history row of model `model_id`. NULL ev is a no-op. */
void events_progress(events_t *ev, int64_t model_id, int64_t step, double loss);

/* Publish the end of a run: `result` (borrowed: the train result object) when `failure` is
 * NULL, else the error. NULL ev is a no-op. */
void events_done(events_t *ev, int64_t model_id, const cJSON *result, const err_t *failure);

/* Model `model_id` is deleted: send its streams `event: deleted` and end them. */
void events_model_deleted(events_t *ev, int64_t model_id);

/* ---- for the relay of runs on other replicas (relay.h) ---------------------------------- */

/* The data of a run's `done` event as one line of JSON, new (free()): `result` itself, or for
 * a `failure` {"model_id","error":{"code","message"}}. NULL when out of memory. */
char *events_done_json(int64_t model_id, const cJSON *result, const err_t *failure);

/* Publish the end of a run whose `done` data (events_done_json) is `data` (borrowed). NULL ev
 * or data is a no-op. */
void events_done_text(events_t *ev, int64_t model_id, const char *data);

/* The highest step of a progress event sent to model `model_id`'s streams, -1 when none was
 * (or it has none). */
int64_t events_last_step(events_t *ev, int64_t model_id);

/* The distinct models with a subscriber, at most `max` of them, into `ids`; returns how many. */
int events_models(events_t *ev, int64_t *ids, int max);

#endif /* ND_EVENTS_H */
