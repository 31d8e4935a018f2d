/* server/store.h -- persistence: the only module that speaks SQL (SQLite underneath, through
 * the driver interface of db.h).
 *
 * One store_t per process. Every thread that calls a store_ function gets its own SQLite
 * connection, opened lazily on first use and closed by store_close(); a thread's transaction
 * (store_begin .. store_commit/store_rollback) therefore covers exactly the calls that thread
 * makes in between. Functions that write several rows open their own transaction when the
 * calling thread has none, and join the caller's when it has one, so a handler can group them:
 *
 *     store_t *st = NULL;
 *     if (store_open("neurond.db", &st, &err) < 0) die(err.msg);   // migrates the schema
 *     if (store_begin(st, &err) < 0) return err.code;
 *     if (store_params_put(st, id, theta, n, adam, n_adam, step + k, &loss, &err) < 0 ||
 *         store_history_append(st, id, rows, k, &err) < 0 ||
 *         store_commit(st, &err) < 0) {
 *         store_rollback(st);
 *         return err.code;
 *     }
 *
 * Errors: ERR_NOTFOUND (no such row), ERR_CONFLICT (duplicate model name), ERR_UNAVAILABLE
 * (disk full, read-only, I/O error, locked for longer than the busy timeout: the storage, not
 * the request, is at fault), ERR_NOMEM, ERR_DB (anything else; a bug). Messages never contain
 * SQL values. Float64 arrays are stored as little-endian BLOBs; timestamps are RFC 3339 UTC
 * with milliseconds ("2026-11-28T04:36:37.123Z").
 */
#ifndef ND_STORE_H
#define ND_STORE_H

#include <stdint.h>

#include "err.h"

#define STORE_TIME_MAX 32   /* "2026-11-28T04:36:37.123Z" + NUL, with room */

typedef struct store store_t;

/* A row of `models`. Strings `name` (NULL when unnamed) and `spec_json` are new: release them
 * with store_model_clear(). */
typedef struct store_model {
    int64_t id;
    char *name;
    char kind[32];
    char *spec_json;
    int64_t step;
    char status[16];             /* "idle" | "training", as the last run left it */
    int leased;                  /* a run of another live replica holds the model's lease */
    int64_t rows;                /* stored training rows (split train) */
    int64_t validation_rows;     /* stored rows of split validation */
    int has_loss;                /* 0: loss is null (never trained) */
    double loss;
    int64_t version;             /* bumped by every change to the model or its state */
    char created_at[STORE_TIME_MAX];
    char updated_at[STORE_TIME_MAX];
} store_model_t;

/* Parameters, optimizer state and step of one model, read together (one snapshot). Arrays are
 * new: release with store_state_clear(). `optim` is NULL when n_optim == 0. */
typedef struct store_state {
    int64_t step;
    int64_t version;
    double *params;
    int64_t n_params;
    double *optim;
    int64_t n_optim;
} store_state_t;

typedef struct store_history_row {
    int64_t step;
    double loss;
    double grad_norm;
    double learning_rate;
    double val_loss;             /* NaN: absent (no validation rows) */
    double val_accuracy;         /* NaN: absent (no validation rows, or not a classifier) */
    char at[STORE_TIME_MAX];     /* "" on append = now */
} store_history_row_t;

/* Persisted in batches.split: append only. */
enum store_split { STORE_SPLIT_TRAIN = 0, STORE_SPLIT_VALIDATION = 1 };

typedef struct store_batch_info {
    int64_t id;
    int64_t rows;
    int32_t split;               /* enum store_split */
    int32_t n_x, n_y;
    char created_at[STORE_TIME_MAX];
} store_batch_info_t;

/* ---- lifecycle ---------------------------------------------------------------------------- */

/*
 * Open (creating if needed) the database at `path`, set WAL, synchronous=FULL, foreign keys and
 * a 5 s busy timeout (NEUROND_BUSY_TIMEOUT_MS in the environment overrides it: 0..600000, else
 * ERR_INVAL), and apply every embedded migration schema/sqlite/NNN_*.sql not yet recorded in
 * schema_version, each in its own transaction. `*out` is new (free with store_close()), NULL on
 * failure. A database written by a newer neurond (unknown higher version) is refused.
 */
int store_open(const char *path, store_t **out, err_t *err);

/* Close every connection opened by any thread. Call only when no other thread uses the store
 * any more. NULL is a no-op. */
void store_close(store_t *s);

/* Give back the calling thread's connection to `s`, if it has one. A thread that ends while the
 * store stays open (a job's thread, a synchronous training run's thread) calls it last, after
 * its final store call: connections are per thread, and without it each such thread leaves
 * its connection -- two file descriptors and its page cache -- open until store_close(). Up to
 * eight given-back connections are kept open, warm, for the next threads. */
void store_thread_end(store_t *s);

/* Schema version after migration (highest applied NNN). */
int store_schema_version(store_t *s);

/*
 * Can the database be written? Performs a tiny write (meta table) at most once a second and
 * returns the cached answer otherwise: 0, or ERR_UNAVAILABLE with the reason in err.
 */
int store_ping(store_t *s, err_t *err);

/* The database path given to store_open(). Borrowed: valid until store_close(). */
const char *store_path(const store_t *s);

/* The SQL dialect of `s`'s database: "sqlite" or "postgresql". Static string. */
const char *store_dialect(const store_t *s);

/* 1 when the --db value `path` is a file (SQLite), 0 for a PostgreSQL address. */
int store_address_is_file(const char *path);

/* A --db value as logs and messages may show it (no password of a PostgreSQL address). */
const char *store_display_name(const char *path);

/* ---- backups -------------------------------------------------------------------------------- */

/*
 * Write a consistent copy of the database to `out_path`: one committed state, read in a single
 * pass of SQLite's online backup API while other threads and processes keep reading and
 * committing (WAL). The copy is a self-contained rollback-journal database (no -wal file),
 * synced to disk; neurond turns it back to WAL when it opens it. `out_path` must not exist or be
 * an empty regular file (as mkstemp() leaves it), else ERR_CONFLICT: nothing is overwritten. On
 * failure the partial copy is removed. Uses the calling thread's connection, which must not be
 * inside a transaction.
 */
int store_backup(store_t *s, const char *out_path, err_t *err);

/*
 * The same for the database file at `db_path` without a store_t (neurond --backup): opens it
 * without creating or migrating it -- an older schema is copied as it is, which is what a backup
 * before an upgrade needs -- copies it, and closes it. Safe while a daemon uses the file.
 * `*schema_version` (may be NULL) is the copy's highest applied migration. ERR_NOTFOUND when
 * `db_path` does not exist, ERR_INVAL when it is not a neurond database.
 */
int store_backup_file(const char *db_path, const char *out_path, int *schema_version,
                      err_t *err);

/* ---- transactions (per calling thread) ------------------------------------------------------ */

/* BEGIN IMMEDIATE on the calling thread's connection: takes the write lock now (waiting up to
 * the busy timeout) so the transaction cannot fail later for lock upgrade. No nesting. */
int store_begin(store_t *s, err_t *err);
int store_commit(store_t *s, err_t *err);
/* Roll back the calling thread's transaction, if any. Never fails. */
void store_rollback(store_t *s);

/* A read transaction on the calling thread's connection: every store read until
 * store_rollback() sees one committed state, however many statements it takes (e.g. a model's
 * row and its parameters for an export). Takes no lock; writers go on. No nesting. */
int store_begin_read(store_t *s, err_t *err);

/* 1 when the calling thread's last failed store call failed only because another writer held
 * the database lock past the busy timeout (ERR_UNAVAILABLE "storage busy"): the same call may
 * succeed later. 0 after any other failure (full, read-only, I/O), and after store_begin()
 * until something fails again. */
int store_failed_busy(void);

/* 1 when the calling thread's last failure was the database server out of reach (PostgreSQL
 * restarted, the network cut): the work may succeed once it is back. */
int store_failed_unreachable(void);

/* ---- models ------------------------------------------------------------------------------- */

/*
 * Insert a model with its initial parameters and optimizer state (step 0, idle, no rows, loss
 * null, version 1). `name` may be NULL. `optim` may be NULL when n_optim == 0. `*id` is the
 * new id. A duplicate name is ERR_CONFLICT.
 */
int store_model_insert(store_t *s, const char *name, const char *kind, const char *spec_json,
                       const double *params, int64_t n_params, const double *optim,
                       int64_t n_optim, int64_t *id, err_t *err);

/* Read one model row into `*out` (zeroed first; strings new). ERR_NOTFOUND when absent. */
int store_model_get(store_t *s, int64_t id, store_model_t *out, err_t *err);

/* Free the strings of `m` and zero it. NULL-safe. */
void store_model_clear(store_model_t *m);

/*
 * Models with id > after, ascending, at most `limit` (1..1000). `*out` is a new array of `*n`
 * rows (NULL when 0); free with store_model_list_free(). `*next` is the id to pass as `after`
 * for the next page, or 0 when this page is the last.
 */
int store_model_list(store_t *s, int64_t limit, int64_t after, store_model_t **out, int64_t *n,
                     int64_t *next, err_t *err);
void store_model_list_free(store_model_t *rows, int64_t n);

/* Delete a model; its parameters, batches, history, checkpoints and jobs go with it. One short
 * transaction hides the model (from then on every store call treats it as absent and its name
 * is free), then its data is removed a slice per transaction, so a large model never holds the
 * write lock for long. Must not be called inside a transaction. ERR_NOTFOUND when absent.
 * Once hidden, 0: data the storage did not let it remove is left to store_models_purge(). */
int store_model_delete(store_t *s, int64_t id, err_t *err);

/* Remove the models a crash (or a storage failure) left hidden in the middle of a fork or a
 * delete, in slices as store_model_delete() does: those of replicas with no heartbeat within
 * `live_ms` (0: every one, for the database's only user at its start). `*n` (may be NULL) is
 * how many. */
int store_models_purge(store_t *s, int64_t live_ms, int64_t *n, err_t *err);

/* The model's version now (bumped by every change to the model or its state). */
int store_model_version(store_t *s, int64_t id, int64_t *version, err_t *err);

/* Set the model's status ("idle" | "training"); bumps nothing else. ERR_NOTFOUND when absent.
 * Joins the caller's transaction, else commits on its own; "training" alone is committed
 * without waiting for the disk (a crash resets it anyway). */
int store_model_set_status(store_t *s, int64_t id, const char *status, err_t *err);

/* ---- parameters and optimizer state -------------------------------------------------------- */

/* Read parameters, optimizer state, step and version of model `id` as one snapshot. `*out` is
 * filled (arrays new, see store_state_clear). ERR_NOTFOUND when the model is absent. */
int store_params_get(store_t *s, int64_t id, store_state_t *out, err_t *err);

/* Free the arrays of `st` and zero it. NULL-safe. */
void store_state_clear(store_state_t *st);

/*
 * Replace the parameters of model `id` (n_params float64). `optim`: the new optimizer state
 * (n_optim float64), or NULL to leave it unchanged. `step` >= 0 sets the step, -1 keeps it.
 * `loss` not NULL sets the model's last loss. Bumps version and updated_at. Joins the caller's
 * transaction, else uses its own. ERR_NOTFOUND when the model is absent.
 */
int store_params_put(store_t *s, int64_t id, const double *params, int64_t n_params,
                     const double *optim, int64_t n_optim, int64_t step, const double *loss,
                     err_t *err);

/* ---- training history ---------------------------------------------------------------------- */

/* Append (or replace, by step) `n` history rows of model `id`. Rows whose `at` is "" get the
 * current time. Joins the caller's transaction, else uses its own. */
int store_history_append(store_t *s, int64_t id, const store_history_row_t *rows, int64_t n,
                         err_t *err);

/*
 * History rows of model `id` with step > after_step (pass -1 for the start), ascending, at most
 * `limit` (>= 1). `*out` is a new array of `*n` rows (NULL when 0; free()). `*next` is the step
 * to pass as after_step for the next page, or -1 when this page is the last. A missing model
 * is ERR_NOTFOUND.
 */
int store_history_list(store_t *s, int64_t id, int64_t after_step, int64_t limit,
                       store_history_row_t **out, int64_t *n, int64_t *next, err_t *err);

/*
 * At most `max_points` (>= 2) history rows of model `id` spread evenly over all its rows, always
 * including the first and the last: row indices round(k (N−1) / (max_points−1)). All rows when
 * N <= max_points. Read as one snapshot. `*out` is new (free()), NULL when there are none.
 */
int store_history_sample(store_t *s, int64_t id, int64_t max_points, store_history_row_t **out,
                         int64_t *n, err_t *err);

/* ---- training batches ---------------------------------------------------------------------- */

/*
 * Store a batch of `rows` rows (x: rows*n_x, y: rows*n_y float64, row major) of `split` (enum
 * store_split) for model `id` and add `rows` to models.rows (train) or models.validation_rows,
 * in one transaction. `*batch_id` is the new id and `*total_rows` (may be NULL) the model's
 * stored rows of that split after the insert. ERR_NOTFOUND when the model is absent.
 */
int store_batch_insert(store_t *s, int64_t id, int32_t split, int64_t rows, int32_t n_x,
                       int32_t n_y, const double *x, const double *y, int64_t *batch_id,
                       int64_t *total_rows, err_t *err);

/* The batches of model `id`, by id. `*out` new (free()), NULL when n == 0. ERR_NOTFOUND when the
 * model is absent. */
int store_batch_list(store_t *s, int64_t id, store_batch_info_t **out, int64_t *n, err_t *err);

/* Batch `batch_id` of model `id`: its info and its rows, `*x` (rows*n_x) and `*y` (rows*n_y)
 * new (free()). ERR_NOTFOUND when either is absent (or the batch belongs to another model). */
int store_batch_get(store_t *s, int64_t id, int64_t batch_id, store_batch_info_t *info,
                    double **x, double **y, err_t *err);

/* Delete batch `batch_id` of model `id` and subtract its rows. ERR_NOTFOUND when either is
 * absent (or the batch belongs to another model). */
int store_batch_delete(store_t *s, int64_t id, int64_t batch_id, err_t *err);

/*
 * Identifies the set of batches a model has: batch ids are never reused, so a batch added or
 * deleted always changes (batches, last_id), and equal stamps of one model mean equal rows.
 */
typedef struct store_data_stamp {
    int64_t batches;             /* number of batches */
    int64_t last_id;             /* largest batch id, 0 when none */
} store_data_stamp_t;

/* The stamp of model `id`'s batches now (zero for a missing model). */
int store_batch_stamp(store_t *s, int64_t id, store_data_stamp_t *stamp, err_t *err);

/*
 * All stored rows of model `id` as one snapshot: the `*rows` train rows, then the `*val_rows`
 * validation rows, each split's batches concatenated in id order. `*x` ((rows+val_rows)*n_x)
 * and `*y` are new (free()), NULL when there are no rows at all. Every batch must have n_x/n_y
 * equal to the given ones (ERR_SHAPE otherwise). `*stamp` (when not NULL) is the stamp of that
 * snapshot.
 */
int store_batch_load_all(store_t *s, int64_t id, int32_t n_x, int32_t n_y, int64_t *rows,
                         int64_t *val_rows, double **x, double **y, store_data_stamp_t *stamp,
                         err_t *err);

/* ---- checkpoints and forks ------------------------------------------------------------------ */

/* A row of `checkpoints` without its arrays. `label` is new (NULL when none): release a list
 * with store_checkpoint_list_free(). */
typedef struct store_checkpoint {
    int64_t id;
    int64_t step;
    char *label;
    char created_at[STORE_TIME_MAX];
} store_checkpoint_t;

/*
 * Save the current parameters, optimizer state and step of model `id` as a checkpoint labelled
 * `label` (NULL: none), with a copy of its history, in one transaction, so it is one committed
 * state even while a training run commits. `*checkpoint_id` is the new id, `*step` (may be NULL) its step.
 * ERR_NOTFOUND when the model is absent.
 */
int store_checkpoint_insert(store_t *s, int64_t id, const char *label, int64_t *checkpoint_id,
                            int64_t *step, err_t *err);

/* The checkpoints of model `id`, by id. `*out` is new (free with store_checkpoint_list_free()),
 * NULL when `*n` is 0. ERR_NOTFOUND when the model is absent. */
int store_checkpoint_list(store_t *s, int64_t id, store_checkpoint_t **out, int64_t *n,
                          err_t *err);
void store_checkpoint_list_free(store_checkpoint_t *rows, int64_t n);

/*
 * Bring model `id` back to checkpoint `checkpoint_id`: parameters, optimizer state and step;
 * its last loss becomes null (it described parameters that are gone); its history becomes the
 * one saved with the checkpoint (for a checkpoint saved before schema 4, which has none: history
 * rows with step >= the checkpoint's step are deleted); version and updated_at bumped. One transaction (joins the
 * caller's). `*step` (may be NULL) is the restored step. ERR_NOTFOUND when the model is absent,
 * or (field "checkpoint_id") when it has no such checkpoint.
 */
int store_checkpoint_restore(store_t *s, int64_t id, int64_t checkpoint_id, int64_t *step,
                             err_t *err);

/*
 * A new model copied from model `id`: kind, spec, step, last loss, parameters, optimizer state
 * and the history rows before its step from one snapshot (one transaction); then every batch
 * (copied, not shared, so either model can be deleted) a few per transaction, the copy hidden
 * meanwhile (absent for every other store call); a last transaction makes it visible with the
 * rows of the batches it got. A batch added to or deleted from the source during the copy may
 * or may not be in it. Must not be called inside a transaction. The copy is idle and named
 * `name` (NULL: unnamed; the name is taken from the first transaction on).
 * `*new_id` is its id. ERR_NOTFOUND when `id` is absent; ERR_CONFLICT (field "name") when the
 * name is taken.
 */
int store_model_fork(store_t *s, int64_t id, const char *name, int64_t *new_id, err_t *err);

/* ---- jobs ------------------------------------------------------------------------------------ */

/* At start-up (SQLite, the database's only user): every job still running belonged to a process
 * that died; mark them failed with error "interrupted" (queued ones stay queued), and expire
 * every model lease (store_lease_take). `*n` (may be NULL) is how many were marked. */
int store_jobs_mark_interrupted(store_t *s, int64_t *n, err_t *err);

/* A row of `jobs`. `request_json`, `result_json` and `error` are new (NULL when absent):
 * release with store_job_clear(). */
typedef struct store_job {
    int64_t id;
    int64_t model_id;
    char status[16];             /* queued | running | succeeded | failed | cancelled */
    int64_t progress_step;
    int64_t progress_steps;
    int has_loss;                /* 0: progress_loss is null */
    double progress_loss;
    char *request_json;
    char *result_json;
    char *error;
    int64_t replica_id;          /* the replica that took it; 0 while queued */
    char created_at[STORE_TIME_MAX];
    char updated_at[STORE_TIME_MAX];
    int has_start;               /* the run committed once: start_step and loss_before apply */
    int64_t start_step;          /* the model's step when the call began */
    double loss_before;          /* the call's loss_before (NAN when unknown) */
    int cancel_requested;        /* DELETE /v1/jobs/{id} came through another replica */
} store_job_t;

/* Insert a queued job for model `id` (progress 0 of `steps`). `*job_id` is the new id.
 * ERR_NOTFOUND when the model is absent. Joins the caller's transaction, else uses its own. */
int store_job_insert(store_t *s, int64_t id, const char *request_json, int64_t steps,
                     int64_t *job_id, err_t *err);

/* Read job `job_id` into `*out` (zeroed first; strings new). ERR_NOTFOUND when absent. */
int store_job_get(store_t *s, int64_t job_id, store_job_t *out, err_t *err);

/* Free the strings of `j` and zero it. NULL-safe. */
void store_job_clear(store_job_t *j);

/*
 * Jobs with id > after, ascending, at most `limit` (>= 1), optionally only of model `model_id`
 * (0 = any) and with status `status` (NULL = any). `*next` is the id to pass as `after` for the
 * next page, or 0 at the end. `*out` is new; free with store_job_list_free().
 */
int store_job_list(store_t *s, int64_t model_id, const char *status, int64_t limit,
                   int64_t after, store_job_t **out, int64_t *n, int64_t *next, err_t *err);
void store_job_list_free(store_job_t *rows, int64_t n);

/* Record progress: the model at `step` of a call that began at `start_step` and makes `steps`,
 * last loss `loss` (NULL keeps it); the first call records start_step and `loss_before` (the
 * call's) for good, for a resumption. Joins the caller's transaction, else uses its own.
 * ERR_NOTFOUND when the job is absent. */
int store_job_progress(store_t *s, int64_t job_id, int64_t start_step, int64_t step,
                       int64_t steps, const double *loss, double loss_before, err_t *err);

/* End job `job_id` as `status` with its result and error (NULL: unchanged) -- or, with status
 * "queued", put it back in the queue for any replica to resume -- only while replica
 * `replica_id` still runs it: ERR_NOTFOUND when another took it over (or it is gone). Joins the
 * caller's transaction, else uses its own. */
int store_job_finish(store_t *s, int64_t job_id, int64_t replica_id, const char *status,
                     const char *result_json, const char *error, err_t *err);

/* ERR_CONFLICT (naming the job when there is one) while model `id` has a job queued or running,
 * or a training run of another replica holds its lease (this process is the replica it last
 * registered, store_replica_register); else 0. */
int store_model_check_idle(store_t *s, int64_t id, err_t *err);

/*
 * Queue a job for model `id` in one write transaction: ERR_NOTFOUND when the model is absent,
 * ERR_CONFLICT as store_model_check_idle(), ERR_BUSY when `have_slot` is 0 (this replica cannot
 * run it at once) and `max_queue` jobs already wait. `*job_id` is the new id.
 */
int store_job_enqueue(store_t *s, int64_t id, const char *request_json, int64_t steps,
                      int64_t max_queue, int have_slot, int64_t *job_id, err_t *err);

/* Claim for replica `replica_id` the oldest job that is queued, or running on a replica whose
 * heartbeat is older than `lease_ms` (dead: the job resumes here), unless a live run holds its
 * model: marked running here and read into `*out` (out->id 0 when there is none; strings new,
 * store_job_clear()). The claim refreshes the replica's heartbeat, so no other replica takes
 * the job straight back; a replica whose row is gone (taken for dead) claims nothing. */
int store_job_claim(store_t *s, int64_t replica_id, int64_t lease_ms, store_job_t *out,
                    err_t *err);

/* DELETE /v1/jobs/{id} from any replica: a queued job is cancelled now, and so is one running
 * on a replica whose heartbeat is older than `lease_ms` (its model's lease fenced, its status
 * idle); a running one gets cancel_requested for its replica to act on; an ended one is left as
 * it is. ERR_NOTFOUND when absent. */
int store_job_cancel_request(store_t *s, int64_t job_id, int64_t lease_ms, err_t *err);

/* The ids of jobs running on `replica_id` with a cancel requested: `*ids` new (free()). */
int store_jobs_cancel_requested(store_t *s, int64_t replica_id, int64_t **ids, int64_t *n,
                                err_t *err);

/* ---- replicas -------------------------------------------------------------------------------- */

/* A live row of `replicas`: one neurond process using the database. */
typedef struct store_replica {
    int64_t id;
    char address[272];           /* host:port it serves on (--advertise), as given */
    char version[32];
    char started_at[STORE_TIME_MAX];
    char heartbeat_at[STORE_TIME_MAX];
    int64_t jobs_running;        /* jobs with status running and this replica_id */
} store_replica_t;

/* Insert this process's row (started and heartbeat now). `*id` is its new id, never reused. */
int store_replica_register(store_t *s, const char *address, const char *version, int64_t *id,
                           err_t *err);

/* Refresh replica `id`'s heartbeat and push the expiry of its model leases to `lease_ms` from
 * now, and delete the rows of replicas whose heartbeat is older than `lease_ms`: their
 * processes are gone. One transaction. `*removed` (may be NULL) is how many were deleted.
 * ERR_NOTFOUND when `id`'s own row is gone (it was taken for dead).
 *
 * Heartbeats come every third of a lease. After one that failed, or one that found this
 * replica's own heartbeat (refreshed here and by its claims) older than two thirds of the
 * lease, the database may have been away or stalled long enough for live replicas' heartbeats
 * to be older than the lease: this process removes nobody, and claims no running job, until a
 * lease has passed (store_replica_judge_from), by when every live replica has beaten again. */
int store_replica_heartbeat(store_t *s, int64_t id, int64_t lease_ms, int64_t *removed,
                            err_t *err);

/* Wall-clock ms (since the Unix epoch) before which this process judges no replica dead; 0
 * until a heartbeat fails or finds its own late. */
int64_t store_replica_judge_from(store_t *s);

/* Delete replica `id`'s row (a clean shutdown). No row is not an error. */
int store_replica_remove(store_t *s, int64_t id, err_t *err);

/* The replicas whose heartbeat is younger than `lease_ms` -- every one while this process takes
 * nobody for dead (store_replica_heartbeat) -- by id. `*out` is new (free()), NULL when `*n` is
 * 0. */
int store_replica_list(store_t *s, int64_t lease_ms, store_replica_t **out, int64_t *n,
                       err_t *err);

/* ---- model leases (fencing of training runs) ------------------------------------------------ */

/* Take model `id`'s lease for replica `replica_id` until `lease_ms` from now: `*epoch` is the
 * run's epoch, higher than every earlier one of the model. ERR_CONFLICT when another replica
 * holds an unexpired lease; ERR_NOTFOUND when the model is absent. */
int store_lease_take(store_t *s, int64_t id, int64_t replica_id, int64_t lease_ms,
                     int64_t *epoch, err_t *err);

/* Inside the caller's transaction: 0 while model `id`'s lease still has owner `replica_id` and
 * `epoch`, else ERR_CONFLICT (the run lost its lease: it must not commit). */
int store_lease_check(store_t *s, int64_t id, int64_t replica_id, int64_t epoch, err_t *err);

/* The run of epoch `epoch` on replica `replica_id` is over: its lease on model `id` expires now
 * (a lease taken over since is left alone). Joins the caller's transaction, else uses its own. */
int store_lease_release(store_t *s, int64_t id, int64_t replica_id, int64_t epoch, err_t *err);

/* ---- notifications between the processes sharing a database (PostgreSQL) ------------------- */

/*
 * Send `payload` (text, at most STORE_NOTIFY_MAX bytes) on `channel` to every process listening
 * on it. Inside the caller's transaction it is sent when that commits, and not at all when it
 * rolls back; outside one, at once. Notifications of one transaction, and transactions, arrive
 * in commit order. A no-op (0) on SQLite, whose one process has nobody to tell.
 */
#define STORE_NOTIFY_MAX 7900
int store_notify(store_t *s, const char *channel, const char *payload, err_t *err);

/* A session listening on one channel (store_listen_open). */
typedef struct store_listener store_listener_t;

/* store_listen_wait(): the session was lost and is listening again; what was sent in between
 * was not delivered. */
#define STORE_LISTEN_RESUMED 1

/* Listen on `channel` on a session of its own (one more connection to the server). `*out` is new
 * (store_listen_close()), NULL on failure; ERR_NOTSUPPORTED on SQLite. */
int store_listen_open(store_t *s, const char *channel, store_listener_t **out, err_t *err);

/* Wait up to `timeout_ms`, handing each payload that arrives to `fn` (borrowed string) in
 * commit order. 0, STORE_LISTEN_RESUMED, or ERR_UNAVAILABLE while the server cannot be reached
 * (the call waited; later calls reconnect, with a backoff of up to 5 s). */
int store_listen_wait(store_listener_t *l, int timeout_ms,
                      void (*fn)(void *ctx, const char *payload), void *ctx, err_t *err);

/* Stop listening and close the session. NULL is a no-op. */
void store_listen_close(store_listener_t *l);

/* ---- helpers --------------------------------------------------------------------------------- */

/* Format the current UTC time as RFC 3339 with milliseconds into buf (STORE_TIME_MAX bytes). */
void store_now(char buf[STORE_TIME_MAX]);

/* The same for `ms` milliseconds since the Unix epoch (>= 0). */
void store_time_str(int64_t ms, char buf[STORE_TIME_MAX]);

#endif /* ND_STORE_H */
