/* server/registry.h -- live models: a read cache keyed by id and version, and one write lock
 * per model.
 *
 * Reads (predict, loss, gradients, boundary, export) use the cached copy of a model at its last
 * committed version; they never wait for a training run, which works on its own private copy
 * and commits in chunks. After every commit that changes a model the writer calls
 * registry_committed(), so the next read reloads the parameters from the store.
 *
 *     model_t *m = NULL;
 *     if (registry_read_begin(reg, id, &m, &err) < 0) return err.code;   // 404 when absent
 *     model_predict(m, x, rows, &pred, &err);
 *     registry_read_end(reg, id);
 *
 *     if (registry_write_begin(reg, id, REGISTRY_TRAINING, &err) < 0) return err.code;  // 409
 *     ... load a private copy (registry_load), train, commit chunks, registry_committed() ...
 *     registry_write_end(reg, id);
 *
 * Writers: a short write (parameters, batches, one step, restore, delete) waits for another
 * short write on the same model, but fails at once with ERR_CONFLICT while a training run
 * (sync or async) holds the model. A training run is itself a writer.
 */
#ifndef ND_REGISTRY_H
#define ND_REGISTRY_H

#include <stdint.h>

#include "err.h"
#include "model.h"
#include "optim.h"
#include "store.h"

typedef struct registry registry_t;

enum registry_write_mode {
    REGISTRY_SHORT = 0,     /* a quick change: waits for other short writes */
    REGISTRY_TRAINING = 1,  /* a training run: others get 409 until it ends */
    REGISTRY_JOB = 2,       /* a claimed job's run: as TRAINING, its own job not in the way */
};

/* A model built from its stored spec, with its stored parameters, optimizer state and step:
 * new objects owned by the caller (model_free, optim_free). */
typedef struct registry_copy {
    model_t *model;
    optim_t *optim;
    int64_t step;
    int64_t version;
} registry_copy_t;

/* New registry over `store`; every model it builds computes on `pool` (may be NULL: one thread).
 * Both borrowed, must outlive it. */
int registry_new(store_t *store, pool_t *pool, registry_t **out, err_t *err);

/* Free every cached model. No reader or writer may be active. NULL is a no-op. */
void registry_free(registry_t *r);

/*
 * Borrow a cached copy of model `id` at its latest committed version (loading or refreshing it
 * from the store when needed) for exclusive use by this thread until registry_read_end(),
 * which this same thread must call. Readers on other threads get other copies, so they never
 * wait for each other. The model must not be modified (predictions and loss evaluation only).
 * ERR_NOTFOUND when absent.
 */
int registry_read_begin(registry_t *r, int64_t id, model_t **out, err_t *err);
void registry_read_end(registry_t *r, int64_t id);

/* Take the write lock of model `id` (see the modes above). ERR_CONFLICT with a message such as
 * "model 3 is training (job 7): wait for it or cancel it" when a training run holds it. Does not
 * check that the model exists. */
int registry_write_begin(registry_t *r, int64_t id, int mode, err_t *err);
void registry_write_end(registry_t *r, int64_t id);

/* Attach the running job's id to a held training lock, for the 409 message. */
void registry_set_job(registry_t *r, int64_t id, int64_t job_id);

/* 1 while a training run holds model `id`. */
int registry_is_training(registry_t *r, int64_t id);

/* A private, fully loaded copy of model `id` (for training, gradcheck, fork, export). The
 * caller should hold the write lock when it means to write the result back. */
int registry_load(registry_t *r, int64_t id, registry_copy_t *out, err_t *err);
void registry_copy_free(registry_copy_t *c);

/* registry_load() together with the model's stored row (name, spec, loss), both read in one
 * read transaction (one committed state; the calling thread must have none open): both are
 * filled, or neither (*row cleared, *out zeroed) on failure. Release with store_model_clear() and
 * registry_copy_free(). What the exports read. */
int registry_load_row(registry_t *r, int64_t id, store_model_t *row, registry_copy_t *out,
                      err_t *err);

/* The stored state of `id` changed (parameters, step, spec): drop the cached read copy's
 * parameters so the next read reloads them. Call after the commit. */
void registry_committed(registry_t *r, int64_t id);

/* The model was deleted: drop everything cached for it. */
void registry_forget(registry_t *r, int64_t id);

#endif /* ND_REGISTRY_H */
