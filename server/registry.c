/* server/registry.c -- live models: the read cache and the per-model write locks.
 *
 * One small table of entries, one per model somebody is using or has cached. The table, every
 * entry's reference count, generation, write-lock state and idle copies are guarded by the
 * registry mutex, which is held only for a few pointer moves, never across SQLite I/O or model
 * building.
 *
 * A reader needs a model for itself (a forward pass writes the graph's buffers), so each entry
 * keeps a small pool of read copies: a reader takes an idle one, or builds one when all are in
 * use, and gives it back at registry_read_end(). Concurrent predictions on one model therefore
 * run side by side instead of queueing on one copy; a pool grows only to the number of readers
 * that were ever inside at once (at most REGISTRY_MAX_COPIES stay cached; beyond that a reader
 * gets a copy of its own that is freed when it is done). Which copy a thread holds is kept in
 * a short thread-local list, so registry_read_end() needs only the id.
 *
 * Cache validity is a generation counter: registry_committed() bumps it (after the writer's
 * commit), and a reader reloads the parameters of its copy when the generation it saw before
 * reading the store differs from the one the copy was loaded at. A commit racing with a reload
 * can only make the next read reload once more, never serve older parameters than the last
 * committed ones. Other replicas' commits bump no counter here: with a database shared by
 * replicas (PostgreSQL), a reader also compares the copy's version with the model's version in
 * the database (one indexed lookup) and reloads when they differ, so a write acknowledged by any
 * replica is seen by the next read on every replica.
 *
 * Lock order for callers: take the write lock before borrowing the read copy, never the other
 * way round.
 */
#include "registry.h"

#include <assert.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define REGISTRY_BUCKETS 256
#define REGISTRY_MAX_COPIES 8     /* idle read copies kept per model */
#define REGISTRY_MAX_BORROWS 4    /* models one thread may hold at once */

typedef struct copy {
    model_t *model;
    uint64_t gen;              /* generation its parameters were loaded at */
    int64_t version;           /* the model's version in the database then */
    int pooled;                /* counted in the entry's n_copies: goes back to the pool */
    struct copy *next;         /* the entry's idle list */
} copy_t;

typedef struct entry {
    int64_t id;
    int refs;                  /* users holding this entry */
    uint64_t gen;              /* bumped by registry_committed / forget */
    int writing;               /* a writer holds the model */
    int training;              /* ... and it is a training run */
    int forgotten;             /* deleted: free the cached copies when the last user leaves */
    int64_t job_id;            /* the training run's job, 0 when none or synchronous */
    pthread_cond_t cv;         /* signalled when the write lock is released */
    copy_t *idle;              /* read copies nobody holds */
    int n_copies;              /* pooled copies, idle or held */
    struct entry *next;
} entry_t;

struct registry {
    store_t *store;
    int shared;                /* other replicas write the database too (PostgreSQL) */
    pool_t *pool;              /* borrowed: lent to every model built here */
    pthread_mutex_t mu;        /* everything above */
    entry_t *bucket[REGISTRY_BUCKETS];
};

/* The copies this thread holds, newest last. */
static _Thread_local struct borrow {
    registry_t *r;
    entry_t *e;
    copy_t *c;
} tl_borrow[REGISTRY_MAX_BORROWS];
static _Thread_local int tl_n_borrow;

static entry_t **slot_of(registry_t *r, int64_t id)
{
    return &r->bucket[(uint64_t)id % REGISTRY_BUCKETS];
}

static entry_t *entry_find(registry_t *r, int64_t id)
{
    for (entry_t *e = *slot_of(r, id); e != NULL; e = e->next)
        if (e->id == id)
            return e;
    return NULL;
}

static void copy_free(copy_t *c)
{
    if (c == NULL)
        return;
    model_free(c->model);
    free(c);
}

static void entry_free(entry_t *e)
{
    if (e == NULL)
        return;
    while (e->idle != NULL) {
        copy_t *next = e->idle->next;
        copy_free(e->idle);
        e->idle = next;
    }
    pthread_cond_destroy(&e->cv);
    free(e);
}

/* The entry of `id`, created when absent, with one more reference. Registry mutex held. */
static int entry_get(registry_t *r, int64_t id, entry_t **out, err_t *err)
{
    entry_t *e = entry_find(r, id);
    if (e == NULL) {
        if ((e = calloc(1, sizeof *e)) == NULL)
            return err_set(err, ERR_NOMEM, "out of memory");
        e->id = id;
        pthread_cond_init(&e->cv, NULL);
        entry_t **slot = slot_of(r, id);
        e->next = *slot;
        *slot = e;
    }
    e->refs++;
    *out = e;
    return 0;
}

/* Drop one reference; unlink and free the entry when nobody uses it and it caches nothing worth
 * keeping. Registry mutex held. */
static void entry_put(registry_t *r, entry_t *e)
{
    if (--e->refs > 0 || e->writing || (e->idle != NULL && !e->forgotten))
        return;
    for (entry_t **p = slot_of(r, e->id); *p != NULL; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            break;
        }
    }
    entry_free(e);
}

int registry_new(store_t *store, pool_t *pool, registry_t **out, err_t *err)
{
    *out = NULL;
    registry_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return err_set(err, ERR_NOMEM, "out of memory");
    r->store = store;
    r->shared = strcmp(store_dialect(store), "sqlite") != 0;
    r->pool = pool;
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return 0;
}

void registry_free(registry_t *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < REGISTRY_BUCKETS; ++i) {
        entry_t *e = r->bucket[i];
        while (e != NULL) {
            entry_t *next = e->next;
            entry_free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Build model `id` from its stored spec: resolved, compiled, with the default initial values
 * (the caller overwrites them with the stored ones), computing on the registry's pool. */
static int model_from_store(registry_t *r, int64_t id, model_t **out, err_t *err)
{
    *out = NULL;
    store_model_t row;
    int rc = store_model_get(r->store, id, &row, err);
    if (rc < 0)
        return rc;
    cJSON *json = NULL;
    model_spec_t spec;
    int have_spec = 0;
    err_t inner = {0};
    rc = codec_parse(row.spec_json, strlen(row.spec_json), 0, &json, &inner);
    if (rc == 0 && (rc = codec_spec_decode(json, &spec, &inner)) == 0) {
        have_spec = 1;
        /* The spec passed the size limit when it was created; a later, lower limit must not
         * lock a stored model out. */
        rc = model_spec_resolve(&spec, INT64_MAX, &inner);
    }
    if (rc == 0 && (rc = model_new(&spec, out, &inner)) == 0)
        model_set_pool(*out, r->pool);
    if (rc < 0 && rc != ERR_NOMEM)
        rc = err_set(err, ERR_DB, "stored spec of model %" PRId64 " is unusable: %s", id,
                     inner.msg);
    else if (rc < 0)
        rc = err_set(err, ERR_NOMEM, "%s", inner.msg);
    if (have_spec)
        model_spec_free(&spec);
    cJSON_Delete(json);
    store_model_clear(&row);
    return rc;
}

/* Copy the stored parameters of a snapshot into m, checking the count. */
static int params_apply(model_t *m, int64_t id, const store_state_t *state, err_t *err)
{
    int64_t n = model_n_params(m);
    if (state->n_params != n)
        return err_set(err, ERR_DB, "model %" PRId64 " has %" PRId64 " stored parameters, its "
                       "spec needs %" PRId64, id, state->n_params, n);
    if (n > 0)
        memcpy(model_params(m), state->params, (size_t)n * sizeof(double));
    return 0;
}

/* (Re)load c->model at the store's current state. No lock held: the copy is this thread's. */
static int copy_load(registry_t *r, int64_t id, copy_t *c, err_t *err)
{
    store_state_t state;
    int rc = store_params_get(r->store, id, &state, err);
    if (rc < 0)
        return rc;
    if (c->model == NULL && (rc = model_from_store(r, id, &c->model, err)) < 0) {
        store_state_clear(&state);
        return rc;
    }
    rc = params_apply(c->model, id, &state, err);
    c->version = state.version;
    store_state_clear(&state);
    return rc;
}

int registry_read_begin(registry_t *r, int64_t id, model_t **out, err_t *err)
{
    *out = NULL;
    if (tl_n_borrow == REGISTRY_MAX_BORROWS)
        return err_set(err, ERR_INTERNAL, "a thread may read at most %d models at once",
                       REGISTRY_MAX_BORROWS);
    entry_t *e = NULL;
    copy_t *c = NULL;
    int pooled = 0;
    pthread_mutex_lock(&r->mu);
    int rc = entry_get(r, id, &e, err);
    uint64_t gen = rc == 0 ? e->gen : 0;
    if (rc == 0) {
        /* An idle copy at the current generation, else any idle one (reloaded below). */
        copy_t **pick = &e->idle;
        for (copy_t **p = &e->idle; *p != NULL; p = &(*p)->next) {
            if ((*p)->gen == gen) {
                pick = p;
                break;
            }
        }
        if ((c = *pick) != NULL)
            *pick = c->next;
        else if (e->n_copies < REGISTRY_MAX_COPIES && !e->forgotten)
            pooled = ++e->n_copies;
    }
    pthread_mutex_unlock(&r->mu);
    if (rc < 0)
        return rc;
    if (c == NULL) {
        if ((c = calloc(1, sizeof *c)) == NULL)
            rc = err_set(err, ERR_NOMEM, "out of memory");
        else
            c->pooled = pooled > 0;
    }
    /* Another replica's commit moved the model's version in the database past the copy's. */
    int stale = 0;
    if (rc == 0 && r->shared && c->model != NULL) {
        int64_t version = 0;
        rc = store_model_version(r->store, id, &version, err);
        stale = rc == 0 && version != c->version;
    }
    if (rc == 0 && (c->model == NULL || c->gen != gen || stale)) {
        rc = copy_load(r, id, c, err);
        if (rc == 0)
            c->gen = gen;
    }
    if (rc < 0) {
        /* Never serve a copy we could not refresh (the model may be gone). */
        pthread_mutex_lock(&r->mu);
        if (pooled > 0 || (c != NULL && c->pooled))
            e->n_copies--;
        entry_put(r, e);
        pthread_mutex_unlock(&r->mu);
        copy_free(c);
        return rc;
    }
    tl_borrow[tl_n_borrow++] = (struct borrow){r, e, c};
    *out = c->model;
    return 0;
}

void registry_read_end(registry_t *r, int64_t id)
{
    int k = tl_n_borrow - 1;
    while (k >= 0 && (tl_borrow[k].r != r || tl_borrow[k].e->id != id))
        --k;
    assert(k >= 0 && "registry_read_end without registry_read_begin");
    if (k < 0)
        return;
    entry_t *e = tl_borrow[k].e;
    copy_t *c = tl_borrow[k].c;
    memmove(&tl_borrow[k], &tl_borrow[k + 1], (size_t)(tl_n_borrow - k - 1) * sizeof tl_borrow[0]);
    tl_n_borrow--;
    pthread_mutex_lock(&r->mu);
    if (c->pooled && !e->forgotten) {
        c->next = e->idle;
        e->idle = c;
        c = NULL;
    } else if (c->pooled) {
        e->n_copies--;
    }
    entry_put(r, e);
    pthread_mutex_unlock(&r->mu);
    copy_free(c);                        /* a temporary copy, or one of a deleted model */
}

static int busy(err_t *err, const entry_t *e)
{
    if (e->job_id > 0)
        return err_set(err, ERR_CONFLICT,
                       "model %" PRId64 " is training (job %" PRId64 "): wait for it or "
                       "cancel it", e->id, e->job_id);
    return err_set(err, ERR_CONFLICT, "model %" PRId64 " is training: wait for the run to end",
                   e->id);
}

int registry_write_begin(registry_t *r, int64_t id, int mode, err_t *err)
{
    entry_t *e = NULL;
    pthread_mutex_lock(&r->mu);
    int rc = entry_get(r, id, &e, err);
    while (rc == 0 && e->writing) {
        if (e->training) {
            rc = busy(err, e);
            entry_put(r, e);
            break;
        }
        pthread_cond_wait(&e->cv, &r->mu);
    }
    if (rc == 0) {
        e->writing = 1;
        e->training = mode != REGISTRY_SHORT;
        e->job_id = 0;
    }
    pthread_mutex_unlock(&r->mu);
    /* Other replicas: a job queued or running anywhere, or a run holding the model's lease,
     * makes the write a 409 as a local run does. A claimed job is the model's queued job. */
    if (rc == 0 && mode != REGISTRY_JOB &&
        (rc = store_model_check_idle(r->store, id, err)) < 0)
        registry_write_end(r, id);
    return rc;
}

void registry_write_end(registry_t *r, int64_t id)
{
    pthread_mutex_lock(&r->mu);
    entry_t *e = entry_find(r, id);
    if (e != NULL && e->writing) {
        e->writing = 0;
        e->training = 0;
        e->job_id = 0;
        pthread_cond_broadcast(&e->cv);
        entry_put(r, e);
    }
    pthread_mutex_unlock(&r->mu);
}

void registry_set_job(registry_t *r, int64_t id, int64_t job_id)
{
    pthread_mutex_lock(&r->mu);
    entry_t *e = entry_find(r, id);
    if (e != NULL && e->training)
        e->job_id = job_id;
    pthread_mutex_unlock(&r->mu);
}

int registry_is_training(registry_t *r, int64_t id)
{
    pthread_mutex_lock(&r->mu);
    entry_t *e = entry_find(r, id);
    int training = e != NULL && e->training;
    pthread_mutex_unlock(&r->mu);
    return training;
}

int registry_load_row(registry_t *r, int64_t id, store_model_t *row, registry_copy_t *out,
                      err_t *err)
{
    memset(out, 0, sizeof *out);
    /* The row (name, loss) and the state (parameters, optimizer, step) from one snapshot: read
     * apart, a train commit in between would pair a loss with parameters it does not describe. */
    int rc = store_begin_read(r->store, err);
    if (rc < 0)
        return rc;
    if ((rc = store_model_get(r->store, id, row, err)) == 0 &&
        (rc = registry_load(r, id, out, err)) < 0)
        store_model_clear(row);
    store_rollback(r->store);
    return rc;
}

int registry_load(registry_t *r, int64_t id, registry_copy_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    store_state_t state;
    int rc = store_params_get(r->store, id, &state, err);
    if (rc < 0)
        return rc;
    model_t *m = NULL;
    optim_t *o = NULL;
    if ((rc = model_from_store(r, id, &m, err)) < 0 ||
        (rc = params_apply(m, id, &state, err)) < 0 ||
        (rc = optim_new(&model_spec(m)->optimizer, model_n_params(m), &o, err)) < 0)
        goto fail;
    int64_t len = optim_state_len(o);
    if (state.n_optim == len) {
        if (len > 0)
            memcpy(optim_state(o), state.optim, (size_t)len * sizeof(double));
    } else if (state.n_optim != 0) {
        /* An empty stored state is a fresh optimizer (zeros); any other length is damage. */
        rc = err_set(err, ERR_DB, "model %" PRId64 " has %" PRId64 " stored optimizer values, "
                     "its optimizer needs %" PRId64, id, state.n_optim, len);
        goto fail;
    }
    out->model = m;
    out->optim = o;
    out->step = state.step;
    out->version = state.version;
    store_state_clear(&state);
    return 0;
fail:
    optim_free(o);
    model_free(m);
    store_state_clear(&state);
    return rc;
}

void registry_copy_free(registry_copy_t *c)
{
    if (c == NULL)
        return;
    optim_free(c->optim);
    model_free(c->model);
    memset(c, 0, sizeof *c);
}

void registry_committed(registry_t *r, int64_t id)
{
    pthread_mutex_lock(&r->mu);
    entry_t *e = entry_find(r, id);
    if (e != NULL)
        e->gen++;
    pthread_mutex_unlock(&r->mu);
}

void registry_forget(registry_t *r, int64_t id)
{
    pthread_mutex_lock(&r->mu);
    entry_t *e = entry_find(r, id);
    if (e != NULL) {
        e->gen++;
        e->forgotten = 1;
        if (e->refs == 0) {
            e->refs = 1;    /* entry_put frees it */
            entry_put(r, e);
        }
    }
    pthread_mutex_unlock(&r->mu);
}
