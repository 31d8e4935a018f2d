/* server/sessions.h -- a model's training state kept between train calls on its stored rows.
 *
 * Every train call used to build a private model copy, its optimizer and a training context
 * with working buffers for all stored rows (50 MB for an MLP on 10 000 rows), then free them:
 * the next call paid the building and a page fault for every 4 kB of fresh buffer (~13 000 a
 * call, ~15 % of it). A session keeps that state after a successful call, together with the
 * rows it trained on (in use from the data cache) and the model's version after its commit. The
 * next call on the same model reuses it when the version is still that one -- nothing else
 * changed parameters, optimizer state, step or spec -- and the rows are the same; otherwise it
 * is freed and built again. The caller holds the model's write lock across take and put.
 *
 *     session_t *s = sessions_take(ss, id);            // NULL: build the state afresh
 *     ... train ...; on success: sessions_put(ss, s);  // else session_free(s)
 */
#ifndef ND_SESSIONS_H
#define ND_SESSIONS_H

#include <stdint.h>

#include "datacache.h"
#include "registry.h"
#include "train.h"

typedef struct session {
    int64_t id;
    int64_t version;                  /* the model's version after the call's last commit */
    registry_copy_t copy;             /* model copy, optimizer, step */
    train_ctx_t *tc;
    datacache_t *dc;
    const datacache_entry_t *rows;    /* in use while the session lives */
    struct session *next;
} session_t;

typedef struct sessions sessions_t;

/* At most `max` sessions kept (0: none), least recently used dropped first. NULL: no memory. */
sessions_t *sessions_new(int max);
void sessions_free(sessions_t *ss);

/* Take the session of model `id` out of the set (NULL when there is none). */
session_t *sessions_take(sessions_t *ss, int64_t id);

/* Keep `s` (taken or new), replacing any other of its model. */
void sessions_put(sessions_t *ss, session_t *s);

/* Forget model `id` (deleted). */
void sessions_drop(sessions_t *ss, int64_t id);

/* Free a session's state and release its rows; the struct itself stays (zeroed). */
void session_clear(session_t *s);

/* session_clear() and free the struct. NULL is a no-op. */
void session_free(session_t *s);

#endif /* ND_SESSIONS_H */
