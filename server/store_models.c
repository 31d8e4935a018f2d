/* server/store_models.c -- models, their parameters and optimizer state, checkpoints and forks. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "store_internal.h"

/* The last column: a run of another live replica (not replica `ME`, this process) holds the
 * model's lease. A run releases its lease in its final commit (expiry 0); a dead replica's row
 * goes within about a lease, and with it the claim of its runs. */
#define MODEL_COLUMNS(ME)                                                                       \
    "id, name, kind, spec_json, step, status, rows, loss, version, created_at, updated_at,"    \
    " validation_rows, CASE WHEN EXISTS (SELECT 1 FROM model_leases l JOIN replicas r"         \
    " ON r.id = l.replica_id WHERE l.model_id = models.id AND l.expires_ms > 0"                \
    " AND l.replica_id <> " ME ") THEN 1 ELSE 0 END"

/* `name` as stored: NULL for none or "". */
static const char *stored_name(const char *name)
{
    return name != NULL && name[0] != '\0' ? name : NULL;
}

/* The answer to a taken name: ERR_CONFLICT on the field "name". */
static int name_taken(const char *name, err_t *err)
{
    return err_set_field(err, ERR_CONFLICT, "name", "a model named '%.100s' already exists",
                         name);
}

/* ---- models ------------------------------------------------------------------------------- */

void store_model_clear(store_model_t *m)
{
    if (m == NULL)
        return;
    free(m->name);
    free(m->spec_json);
    memset(m, 0, sizeof *m);
}

static void model_clear_row(void *row)
{
    store_model_clear(row);
}

static int model_read_row(db_stmt_t *st, void *dst, err_t *err)
{
    store_model_t *m = dst;
    memset(m, 0, sizeof *m);
    m->id = db_column_int64(st, 0);
    const char *spec = db_column_text(st, 3);
    if (store__column_strdup(st, 1, &m->name, err) < 0 ||
        (m->spec_json = strdup(spec != NULL ? spec : "{}")) == NULL) {
        store_model_clear(m);
        return err_set(err, ERR_NOMEM, "out of memory reading a model");
    }
    store__column_text_copy(st, 2, m->kind, sizeof m->kind);
    m->step = db_column_int64(st, 4);
    store__column_text_copy(st, 5, m->status, sizeof m->status);
    m->rows = db_column_int64(st, 6);
    m->has_loss = !db_column_is_null(st, 7);
    m->loss = m->has_loss ? db_column_double(st, 7) : 0.0;
    m->version = db_column_int64(st, 8);
    store__column_text_copy(st, 9, m->created_at, sizeof m->created_at);
    store__column_text_copy(st, 10, m->updated_at, sizeof m->updated_at);
    m->validation_rows = db_column_int64(st, 11);
    m->leased = db_column_int64(st, 12) != 0;
    return 0;
}

int store_model_insert(store_t *s, const char *name, const char *kind, const char *spec_json,
                       const double *params, int64_t n_params, const double *optim,
                       int64_t n_optim, int64_t *id, err_t *err)
{
    static const char sql_model[] =
        "INSERT INTO models(name, kind, spec_json, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id";
    static const char sql_params[] = "INSERT INTO parameters(model_id, data) VALUES (?1, ?2)";
    static const char sql_optim[] = "INSERT INTO optim_state(model_id, data) VALUES (?1, ?2)";
    *id = 0;
    db_conn_t *c = NULL;
    int64_t new_id = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    rc = store__get_row(c, sql_model,
                        STORE_ARGS(DB_TEXT(stored_name(name)), DB_TEXT(kind),
                                   DB_TEXT(spec_json), DB_TEXT(now)),
                        store__read_int, &new_id, "model", 0, err);
    if (rc == ERR_CONFLICT)
        rc = name_taken(name, err);
    if (rc == 0)
        rc = store__run(c, sql_params, STORE_ARGS(DB_INT(new_id), DB_DOUBLES(params, n_params)),
                        "storing parameters", NULL, err);
    if (rc == 0)
        rc = store__run(c, sql_optim, STORE_ARGS(DB_INT(new_id), DB_DOUBLES(optim, n_optim)),
                        "storing optimizer state", NULL, err);
    rc = store__tx_leave(c, own, rc, err);
    if (rc == 0)
        *id = new_id;
    return rc;
}

int store_model_get(store_t *s, int64_t id, store_model_t *out, err_t *err)
{
    static const char sql[] =
        "SELECT " MODEL_COLUMNS("?2") " FROM models WHERE id = ?1 AND hidden = 0";
    memset(out, 0, sizeof *out);
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    if (rc < 0)
        return rc;
    return store__get_row(c, sql, STORE_ARGS(DB_INT(id), DB_INT(atomic_load(&s->replica_id))),
                          model_read_row, out, "model", id, err);
}

void store_model_list_free(store_model_t *rows, int64_t n)
{
    store__rows_free(rows, n, sizeof *rows, model_clear_row);
}

int store_model_list(store_t *s, int64_t limit, int64_t after, store_model_t **out, int64_t *n,
                     int64_t *next, err_t *err)
{
    static const char sql[] =
        "SELECT " MODEL_COLUMNS("?3") " FROM models WHERE id > ?1 AND hidden = 0 ORDER BY id"
        " LIMIT ?2";
    *out = NULL;
    *n = 0;
    *next = 0;
    if (limit < 1 || limit > 1000)
        return err_set_field(err, ERR_INVAL, "limit", "limit=%" PRId64 " not in [1,1000]", limit);
    db_conn_t *c = NULL;
    void *rows = NULL;
    int more = 0;
    int rc = store__conn(s, &c, err);
    /* One more row than the page says whether a next page exists. */
    if (rc == 0)
        rc = store__list(c, sql,
                         STORE_ARGS(DB_INT(after), DB_INT(limit + 1),
                                    DB_INT(atomic_load(&s->replica_id))),
                         sizeof **out, model_read_row, model_clear_row, limit, &rows, n, &more,
                         "listing models", err);
    if (rc < 0)
        return rc;
    *out = rows;
    if (more)
        *next = (*out)[*n - 1].id;
    return 0;
}

int store_model_version(store_t *s, int64_t id, int64_t *version, err_t *err)
{
    static const char sql[] = "SELECT version FROM models WHERE id = ?1 AND hidden = 0";
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    return rc < 0 ? rc : store__get_int(c, sql, STORE_ARGS(DB_INT(id)), version, "model", id, err);
}

int store_model_set_status(store_t *s, int64_t id, const char *status, err_t *err)
{
    static const char sql[] = "UPDATE models SET status = ?2 WHERE id = ?1 AND hidden = 0";
    db_conn_t *c = NULL;
    int64_t changed = 0;
    int rc = store__conn(s, &c, err);
    if (rc < 0)
        return rc;
    /* 'training' is not worth an fsync: a crash resets it (store_jobs_mark_interrupted), and
     * the sync cost a few ms of every train call. */
    int relaxed = 0;
    if (strcmp(status, "training") == 0 && (rc = store__relax_begin(c, &relaxed, err)) < 0)
        return rc;
    rc = store__run(c, sql, STORE_ARGS(DB_INT(id), DB_TEXT(status)),
                    "updating a model's status", &changed, err);
    if (rc == 0 && changed == 0)
        rc = err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id);
    return store__relax_end(c, relaxed, rc, err);
}

/* ---- parameters ------------------------------------------------------------------------------- */

void store_state_clear(store_state_t *st)
{
    if (st == NULL)
        return;
    free(st->params);
    free(st->optim);
    memset(st, 0, sizeof *st);
}

static int state_read_head(db_stmt_t *st, void *dst, err_t *err)
{
    (void)err;
    store_state_t *out = dst;
    out->step = db_column_int64(st, 0);
    out->version = db_column_int64(st, 1);
    return 0;
}

static int state_read_params(db_stmt_t *st, void *dst, err_t *err)
{
    store_state_t *out = dst;
    return store__column_doubles(st, 0, &out->params, &out->n_params, err);
}

static int state_read_optim(db_stmt_t *st, void *dst, err_t *err)
{
    store_state_t *out = dst;
    return store__column_doubles(st, 0, &out->optim, &out->n_optim, err);
}

int store_params_get(store_t *s, int64_t id, store_state_t *out, err_t *err)
{
    static const char sql_model[] =
        "SELECT step, version FROM models WHERE id = ?1 AND hidden = 0";
    static const char sql_params[] = "SELECT data FROM parameters WHERE model_id = ?1";
    static const char sql_optim[] = "SELECT data FROM optim_state WHERE model_id = ?1";
    memset(out, 0, sizeof *out);
    db_conn_t *c = NULL;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_READ, &own, err)) < 0)
        return rc;
    rc = store__get_row(c, sql_model, STORE_ARGS(DB_INT(id)), state_read_head, out, "model", id,
                        err);
    /* A model without a parameters or optim_state row reads as empty arrays. */
    if (rc == 0)
        rc = store__get_row(c, sql_params, STORE_ARGS(DB_INT(id)), state_read_params, out, NULL,
                            id, err);
    if (rc >= 0)
        rc = store__get_row(c, sql_optim, STORE_ARGS(DB_INT(id)), state_read_optim, out, NULL,
                            id, err);
    rc = store__tx_leave(c, own, rc < 0 ? rc : 0, err);
    if (rc < 0)
        store_state_clear(out);
    return rc;
}

int store_params_put(store_t *s, int64_t id, const double *params, int64_t n_params,
                     const double *optim, int64_t n_optim, int64_t step, const double *loss,
                     err_t *err)
{
    static const char sql_model[] =
        "UPDATE models SET version = version + 1, updated_at = ?2,"
        " step = CASE WHEN ?3 >= 0 THEN ?3 ELSE step END,"
        " loss = CASE WHEN ?4 <> 0 THEN ?5 ELSE loss END"
        " WHERE id = ?1 AND hidden = 0";
    static const char sql_params[] =
        "INSERT INTO parameters(model_id, data) VALUES (?1, ?2)"
        " ON CONFLICT(model_id) DO UPDATE SET data = excluded.data";
    static const char sql_optim[] =
        "INSERT INTO optim_state(model_id, data) VALUES (?1, ?2)"
        " ON CONFLICT(model_id) DO UPDATE SET data = excluded.data";
    db_conn_t *c = NULL;
    int64_t changed = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    /* A loss that is not finite is stored as NULL (db_bind_double). */
    rc = store__run(c, sql_model,
                    STORE_ARGS(DB_INT(id), DB_TEXT(now), DB_INT(step), DB_INT(loss != NULL),
                               loss != NULL ? DB_DOUBLE(*loss) : DB_NULL),
                    "updating a model", &changed, err);
    if (rc == 0 && changed == 0)
        rc = err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id);
    if (rc == 0)
        rc = store__run(c, sql_params, STORE_ARGS(DB_INT(id), DB_DOUBLES(params, n_params)),
                        "storing parameters", NULL, err);
    if (rc == 0 && optim != NULL)
        rc = store__run(c, sql_optim, STORE_ARGS(DB_INT(id), DB_DOUBLES(optim, n_optim)),
                        "storing optimizer state", NULL, err);
    return store__tx_leave(c, own, rc, err);
}

/* ---- checkpoints and forks ------------------------------------------------------------------ */

/* Two integers a statement returns, from columns 0 and 1: an id and a step (RETURNING id,
 * step), or a checkpoint's step and its history_saved. */
typedef struct int_pair {
    int64_t a, b;
} int_pair_t;

static int read_int_pair(db_stmt_t *st, void *dst, err_t *err)
{
    (void)err;
    int_pair_t *p = dst;
    p->a = db_column_int64(st, 0);
    p->b = db_column_int64(st, 1);
    return 0;
}

int store_checkpoint_insert(store_t *s, int64_t id, const char *label, int64_t *checkpoint_id,
                            int64_t *step, err_t *err)
{
    /* One statement reads the model's state and writes the copy: a consistent snapshot. */
    static const char sql[] =
        "INSERT INTO checkpoints(model_id, step, label, params, optim, created_at, history_saved)"
        " SELECT m.id, m.step, ?2, p.data, o.data, ?3, 1 FROM models m"
        " JOIN parameters p ON p.model_id = m.id"
        " LEFT JOIN optim_state o ON o.model_id = m.id WHERE m.id = ?1 AND m.hidden = 0"
        " RETURNING id, step";
    /* The history it was taken with, in the same transaction: every row is before the step. */
    static const char sql_history[] =
        "INSERT INTO checkpoint_history(checkpoint_id, " STORE_HIST_COLUMNS ")"
        " SELECT ?2, " STORE_HIST_COLUMNS " FROM history_chunks"
        " WHERE model_id = ?1 AND first_step < ?3";
    *checkpoint_id = 0;
    db_conn_t *c = NULL;
    int_pair_t ref = {0};          /* the checkpoint's id and step */
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    rc = store__get_row(c, sql, STORE_ARGS(DB_INT(id), DB_TEXT(label), DB_TEXT(now)),
                        read_int_pair, &ref, "model", id, err);
    if (rc == 0)
        rc = store__run(c, sql_history, STORE_ARGS(DB_INT(id), DB_INT(ref.a), DB_INT(ref.b)),
                        "saving a checkpoint's history", NULL, err);
    if ((rc = store__tx_leave(c, own, rc, err)) < 0)
        return rc;
    *checkpoint_id = ref.a;
    if (step != NULL)
        *step = ref.b;
    return 0;
}

static void checkpoint_clear_row(void *row)
{
    store_checkpoint_t *k = row;
    free(k->label);
}

static int checkpoint_read_row(db_stmt_t *st, void *dst, err_t *err)
{
    store_checkpoint_t *k = dst;
    k->id = db_column_int64(st, 0);
    k->step = db_column_int64(st, 1);
    store__column_text_copy(st, 3, k->created_at, sizeof k->created_at);
    return store__column_strdup(st, 2, &k->label, err);
}

void store_checkpoint_list_free(store_checkpoint_t *rows, int64_t n)
{
    store__rows_free(rows, n, sizeof *rows, checkpoint_clear_row);
}

int store_checkpoint_list(store_t *s, int64_t id, store_checkpoint_t **out, int64_t *n,
                          err_t *err)
{
    static const char sql[] =
        "SELECT id, step, label, created_at FROM checkpoints WHERE model_id = ?1 ORDER BY id";
    void *rows = NULL;
    int rc = store__list_of_model(s, id, sql, sizeof **out, checkpoint_read_row,
                                  checkpoint_clear_row, &rows, n, "listing checkpoints", err);
    *out = rows;
    return rc;
}

int store_checkpoint_restore(store_t *s, int64_t id, int64_t checkpoint_id, int64_t *step,
                             err_t *err)
{
    static const char sql_find[] =
        "SELECT step, history_saved FROM checkpoints WHERE id = ?2 AND model_id = ?1";
    /* A checkpoint with its history: the model's history becomes exactly that. */
    static const char sql_hist_clear[] = "DELETE FROM history_chunks WHERE model_id = ?1";
    static const char sql_hist_back[] =
        "INSERT INTO history_chunks(model_id, " STORE_HIST_COLUMNS ")"
        " SELECT ?1, " STORE_HIST_COLUMNS " FROM checkpoint_history WHERE checkpoint_id = ?2";
    static const char sql_params[] =
        "UPDATE parameters SET data = (SELECT params FROM checkpoints WHERE id = ?2)"
        " WHERE model_id = ?1";
    /* A checkpoint of a model without optimizer state restores an empty one (?3). */
    static const char sql_optim[] =
        "INSERT INTO optim_state(model_id, data)"
        " SELECT ?1, COALESCE(optim, ?3) FROM checkpoints WHERE id = ?2"
        " ON CONFLICT(model_id) DO UPDATE SET data = excluded.data";
    static const char sql_model[] =
        "UPDATE models SET step = ?2, loss = NULL, version = version + 1, updated_at = ?3"
        " WHERE id = ?1";
    db_conn_t *c = NULL;
    int_pair_t found = {0};          /* the checkpoint's step and history_saved */
    int64_t cstep = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    if ((rc = store__model_exists(c, id, err)) < 0)
        goto out;
    rc = store__get_row(c, sql_find, STORE_ARGS(DB_INT(id), DB_INT(checkpoint_id)),
                        read_int_pair, &found, "checkpoint", checkpoint_id, err);
    cstep = found.a;
    const int history_saved = found.b != 0;
    if (rc == ERR_NOTFOUND)
        rc = err_set_field(err, ERR_NOTFOUND, "checkpoint_id",
                           "checkpoint %" PRId64 " of model %" PRId64 " not found",
                           checkpoint_id, id);
    if (rc == 0)
        rc = store__run(c, sql_params, STORE_ARGS(DB_INT(id), DB_INT(checkpoint_id)),
                        "restoring a checkpoint", NULL, err);
    if (rc == 0)
        rc = store__run(c, sql_optim,
                        STORE_ARGS(DB_INT(id), DB_INT(checkpoint_id), DB_BLOB(NULL, 0)),
                        "restoring a checkpoint", NULL, err);
    if (rc == 0) {
        char now[STORE_TIME_MAX];
        store_now(now);
        rc = store__run(c, sql_model, STORE_ARGS(DB_INT(id), DB_INT(cstep), DB_TEXT(now)),
                        "restoring a checkpoint", NULL, err);
    }
    if (rc == 0 && history_saved)
        rc = store__run(c, sql_hist_clear, STORE_ARGS(DB_INT(id)),
                        "restoring a checkpoint's history", NULL, err);
    if (rc == 0 && history_saved)
        rc = store__run(c, sql_hist_back, STORE_ARGS(DB_INT(id), DB_INT(checkpoint_id)),
                        "restoring a checkpoint's history", NULL, err);
    /* A checkpoint older than its history copy (or, defensively, a copied chunk reaching its
     * step) keeps the rule it was made under: no row at or after the restored step. */
    if (rc == 0)
        rc = store__history_truncate(c, id, cstep, err);
out:
    rc = store__tx_leave(c, own, rc, err);
    if (rc == 0 && step != NULL)
        *step = cstep;
    return rc;
}

/* ---- long copies and deletes ------------------------------------------------------------- */

/* Batch data a fork copies, or a delete removes, per transaction (at least one batch, at most
 * STORE_STEP_BATCHES of them): each transaction holds the write lock only that long. */
#define STORE_STEP_BYTES (1 << 20)
#define STORE_STEP_BATCHES 256
#define STORE_TEXT_(x) #x
#define STORE_TEXT(x) STORE_TEXT_(x)           /* a constant's value inside an SQL literal */

/* Between two transactions of a long copy or delete: a writer waiting for the lock polls every
 * millisecond at most (the driver's busy handler), and without a pause this thread would take
 * the lock again at once and win every race for it until its work is done. */
static void step_pause(void)
{
    struct timespec ts = {0, 2 * 1000000L};
    nanosleep(&ts, NULL);
}

/* Run `sql` (?1 = id, deleting a bounded slice of model `id`'s rows) in a transaction of its
 * own, again and again until it deletes nothing. */
static int delete_in_steps(db_conn_t *c, const char *sql, int64_t id, err_t *err)
{
    for (;;) {
        int64_t changed = 0;
        int own = 0, rc = store__tx_enter(c, DB_TX_WRITE, &own, err);
        if (rc < 0)
            return rc;
        rc = store__run(c, sql, STORE_ARGS(DB_INT(id)), "deleting a model's data", &changed, err);
        if ((rc = store__tx_leave(c, own, rc, err)) < 0 || changed == 0)
            return rc;
        step_pause();
    }
}

/* The next batches of model `id` after batch `after` (up to `max_id`, 0: any) for one
 * transaction of a long copy or delete: up to STORE_STEP_BYTES of data, at least one batch, at
 * most STORE_STEP_BATCHES. `*n` is how many ids went to `ids` (0: none left). */
static int batch_slice(db_conn_t *c, int64_t id, int64_t after, int64_t max_id, int64_t *ids,
                       int *n, err_t *err)
{
    static const char sql[] =
        "SELECT id, length(x) + length(y) FROM batches WHERE model_id = ?1 AND id > ?2"
        " AND (?3 = 0 OR id <= ?3) ORDER BY id LIMIT " STORE_TEXT(STORE_STEP_BATCHES);
    *n = 0;
    db_stmt_t *st = NULL;
    int rc = store__query(c, sql, STORE_ARGS(DB_INT(id), DB_INT(after), DB_INT(max_id)), &st,
                          err);
    if (rc < 0)
        return rc;
    int64_t bytes = 0;
    while (bytes < STORE_STEP_BYTES && (rc = db_step(st, "reading batches", err)) == DB_ROW) {
        ids[(*n)++] = db_column_int64(st, 0);
        bytes += db_column_int64(st, 1);
        rc = 0;
    }
    db_stmt_done(st);
    return rc < 0 ? rc : 0;
}

/* Delete every batch of model `id`, a slice (batch_slice) per transaction. */
static int batches_purge(db_conn_t *c, int64_t id, err_t *err)
{
    static const char sql[] = "DELETE FROM batches WHERE id = ?1";
    int64_t ids[STORE_STEP_BATCHES];
    for (int n = 1; n > 0; step_pause()) {
        int own = 0, rc = store__tx_enter(c, DB_TX_WRITE, &own, err);
        if (rc < 0)
            return rc;
        rc = batch_slice(c, id, 0, 0, ids, &n, err);
        for (int i = 0; i < n && rc == 0; ++i)
            rc = store__run(c, sql, STORE_ARGS(DB_INT(ids[i])), "deleting a batch", NULL, err);
        if ((rc = store__tx_leave(c, own, rc, err)) < 0)
            return rc;
    }
    return 0;
}

/* What a model being forked or deleted is hidden with: the id of the replica doing it, so that
 * only the work of a replica that died is purged while others go on (store_models_purge); -1
 * before this process registered. */
static int64_t hidden_mark(store_t *s)
{
    int64_t id = atomic_load(&s->replica_id);
    return id > 0 ? id : -1;
}

/* Remove hidden model `id` and everything of it: its large rows (batches, history,
 * checkpoints) a slice per transaction, then the row itself with what is left (cascade). */
static int model_purge(db_conn_t *c, int64_t id, err_t *err)
{
    static const char sql_history[] =
        "DELETE FROM history_chunks WHERE model_id = ?1 AND first_step IN (SELECT first_step"
        " FROM history_chunks WHERE model_id = ?1 ORDER BY first_step LIMIT 256)";
    static const char sql_checkpoints[] =
        "DELETE FROM checkpoints WHERE id IN (SELECT id FROM checkpoints WHERE model_id = ?1"
        " ORDER BY id LIMIT 4)";
    static const char sql_model[] = "DELETE FROM models WHERE id = ?1 AND hidden <> 0";
    const char *const steps[] = {sql_history, sql_checkpoints, sql_model};
    int rc = batches_purge(c, id, err);
    for (size_t i = 0; i < sizeof steps / sizeof steps[0] && rc == 0; ++i)
        rc = delete_in_steps(c, steps[i], id, err);
    return rc;
}

int store_model_delete(store_t *s, int64_t id, err_t *err)
{
    /* Hidden first, in one short transaction: from here the model is gone for every reader
     * and writer, and its name is free. */
    static const char sql_hide[] =
        "UPDATE models SET hidden = ?2, name = NULL WHERE id = ?1 AND hidden = 0";
    db_conn_t *c = NULL;
    int64_t changed = 0;
    int rc = store__conn(s, &c, err);
    if (rc == 0)
        rc = store__run(c, sql_hide, STORE_ARGS(DB_INT(id), DB_INT(hidden_mark(s))),
                        "deleting a model", &changed, err);
    if (rc == 0 && changed == 0)
        rc = err_set(err, ERR_NOTFOUND, "model %" PRId64 " not found", id);
    if (rc < 0)
        return rc;
    /* The delete has happened as far as anyone can see. Data that cannot be removed now (the
     * storage failed meanwhile) stays hidden, and store_models_purge() removes it at the next
     * start: an error here would tell the client that nothing was deleted. */
    err_t perr = {0};
    (void)model_purge(c, id, &perr);
    return 0;
}

int store_models_purge(store_t *s, int64_t live_ms, int64_t *n, err_t *err)
{
    static const char sql[] =
        "SELECT id FROM models m WHERE hidden <> 0 AND NOT EXISTS (SELECT 1 FROM replicas r"
        " WHERE r.id = m.hidden AND r.heartbeat_ms >= ?1) ORDER BY id LIMIT 1";
    if (n != NULL)
        *n = 0;
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    for (int64_t done = 0; rc == 0; ++done) {
        int64_t id = 0;
        rc = store__get_row(c, sql,
                            STORE_ARGS(DB_INT(live_ms > 0 ? store__now_ms() - live_ms
                                                          : INT64_MAX)),
                            store__read_int, &id, NULL, 0, err);
        if (rc <= 0)
            break;      /* none left (DB_DONE), or a failure */
        if ((rc = model_purge(c, id, err)) == 0 && n != NULL)
            *n = done + 1;
    }
    return rc;
}

/* Fork, first transaction: the copy's row (hidden with `mark`), parameters, optimizer state and
 * history from one snapshot of the source. `*max_batch` is the source's last batch then. */
static int fork_begin(db_conn_t *c, int64_t id, const char *name, int64_t mark, int64_t *nid,
                      int64_t *max_batch, err_t *err)
{
    static const char sql_model[] =
        "INSERT INTO models(name, kind, spec_json, step, status, rows, validation_rows, loss,"
        " created_at, updated_at, hidden) SELECT ?2, kind, spec_json, step, 'idle', 0, 0, loss,"
        " ?3, ?3, ?4 FROM models WHERE id = ?1 AND hidden = 0 RETURNING id, step";
    static const char sql_params[] =
        "INSERT INTO parameters(model_id, data) SELECT ?2, data FROM parameters"
        " WHERE model_id = ?1";
    static const char sql_optim[] =
        "INSERT INTO optim_state(model_id, data) SELECT ?2, data FROM optim_state"
        " WHERE model_id = ?1";
    static const char sql_max[] =
        "SELECT COALESCE(MAX(id), 0) FROM batches WHERE model_id = ?1";
    /* Chunks that start before the fork's step; store__history_truncate() then trims the last
     * one. */
    static const char sql_history[] =
        "INSERT INTO history_chunks(model_id, " STORE_HIST_COLUMNS ")"
        " SELECT ?2, " STORE_HIST_COLUMNS " FROM history_chunks"
        " WHERE model_id = ?1 AND first_step < (SELECT step FROM models WHERE id = ?1)";
    int_pair_t fork = {0};         /* the new model's id and step */
    int own = 0, rc = store__tx_enter(c, DB_TX_WRITE, &own, err);
    if (rc < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    rc = store__get_row(c, sql_model, STORE_ARGS(DB_INT(id), DB_TEXT(stored_name(name)),
                                                 DB_TEXT(now), DB_INT(mark)),
                        read_int_pair, &fork, "model", id, err);
    if (rc == ERR_CONFLICT)
        rc = name_taken(name, err);
    const char *const copies[] = {sql_params, sql_optim, sql_history};
    for (int i = 0; i < 3 && rc == 0; ++i)
        rc = store__run(c, copies[i], STORE_ARGS(DB_INT(id), DB_INT(fork.a)),
                        "copying a model", NULL, err);
    if (rc == 0)
        rc = store__history_truncate(c, fork.a, fork.b, err);
    if (rc == 0)
        rc = store__get_int(c, sql_max, STORE_ARGS(DB_INT(id)), max_batch, "model", id, err);
    *nid = fork.a;
    return store__tx_leave(c, own, rc, err);
}

/* Fork, one later transaction: copy the source's next slice of batches after `*cursor` up to
 * `max_batch`. `*copied` says how many (0: all are). */
static int fork_batches(db_conn_t *c, int64_t id, int64_t nid, int64_t max_batch,
                        int64_t *cursor, int *copied, err_t *err)
{
    static const char sql_copy[] =
        "INSERT INTO batches(model_id, rows, n_x, n_y, x, y, created_at, split)"
        " SELECT ?2, rows, n_x, n_y, x, y, created_at, split FROM batches WHERE id = ?1";
    int64_t ids[STORE_STEP_BATCHES];
    int n = 0;
    *copied = 0;
    int own = 0, rc = store__tx_enter(c, DB_TX_WRITE, &own, err);
    if (rc < 0)
        return rc;
    /* A source deleted meanwhile ends the fork. */
    if ((rc = store__model_exists(c, id, err)) == 0)
        rc = batch_slice(c, id, *cursor, max_batch, ids, &n, err);
    for (int i = 0; i < n && rc == 0; ++i)
        rc = store__run(c, sql_copy, STORE_ARGS(DB_INT(ids[i]), DB_INT(nid)), "copying a batch",
                        NULL, err);
    if ((rc = store__tx_leave(c, own, rc, err)) == 0 && n > 0) {
        *cursor = ids[n - 1];
        *copied = n;
    }
    return rc;
}

/*
 * A fork copies the source's batches, which may be gigabytes: in one transaction that held
 * the write lock long enough to make every other writer fail ("storage busy"). So the copy is
 * hidden while its batches are copied a few per transaction, and one last short transaction
 * makes it visible, with the rows it has. Parameters, optimizer state, step and history come
 * from one snapshot (the first transaction); the batches are the source's batches up to its
 * last one at that moment, minus any deleted meanwhile.
 */
int store_model_fork(store_t *s, int64_t id, const char *name, int64_t *new_id, err_t *err)
{
    static const char sql_show[] =
        "UPDATE models SET hidden = 0, version = version + 1,"
        " rows = (SELECT COALESCE(SUM(rows), 0) FROM batches WHERE model_id = ?1 AND split = 0),"
        " validation_rows = (SELECT COALESCE(SUM(rows), 0) FROM batches"
        " WHERE model_id = ?1 AND split <> 0)"
        " WHERE id = ?1";
    *new_id = 0;
    db_conn_t *c = NULL;
    int64_t nid = 0, max_batch = 0, cursor = 0;
    int copied = 1;
    int rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = fork_begin(c, id, name, hidden_mark(s), &nid, &max_batch, err)) < 0)
        return rc;
    while (rc == 0 && copied > 0) {
        step_pause();
        rc = fork_batches(c, id, nid, max_batch, &cursor, &copied, err);
    }
    if (rc == 0)
        rc = store__run(c, sql_show, STORE_ARGS(DB_INT(nid)), "forking a model", NULL, err);
    if (rc < 0) {
        err_t perr = {0};
        (void)model_purge(c, nid, &perr);   /* what is left, store_models_purge() takes */
        return rc;
    }
    *new_id = nid;
    return 0;
}
