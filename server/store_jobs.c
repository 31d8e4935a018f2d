/* server/store_jobs.c -- asynchronous training jobs: their rows, progress and status. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "store_internal.h"

#define JOB_COLUMNS                                                                      \
    "id, model_id, status, progress_step, progress_steps, progress_loss, request_json," \
    " result_json, error, created_at, updated_at, replica_id, start_step, loss_before,"  \
    " cancel_requested"

int store_jobs_mark_interrupted(store_t *s, int64_t *n, err_t *err)
{
    /* Queued jobs never started: they stay queued, and run once this process claims them. */
    static const char sql_jobs[] =
        "UPDATE jobs SET status = 'failed', error = 'interrupted', updated_at = ?1"
        " WHERE status = 'running'";
    /* A model left 'training' by a process that died is idle now: nothing runs on it. */
    static const char sql_models[] =
        "UPDATE models SET status = 'idle' WHERE status = 'training'";
    /* Their runs' leases are over: this process holds the database alone (the start-up lock),
     * so no other replica is running them. Expired, not deleted: epochs only grow. */
    static const char sql_leases[] = "UPDATE model_leases SET expires_ms = 0";
    if (n != NULL)
        *n = 0;
    db_conn_t *c = NULL;
    int64_t marked = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    rc = store__run(c, sql_jobs, STORE_ARGS(DB_TEXT(now)), "marking interrupted jobs", &marked,
                    err);
    if (rc == 0)
        rc = store__run(c, sql_models, STORE_NO_ARGS, "resetting model status", NULL, err);
    if (rc == 0)
        rc = store__run(c, sql_leases, STORE_NO_ARGS, "expiring the leases of past runs", NULL,
                        err);
    rc = store__tx_leave(c, own, rc, err);
    if (rc == 0 && n != NULL)
        *n = marked;
    return rc;
}

void store_job_clear(store_job_t *j)
{
    if (j == NULL)
        return;
    free(j->request_json);
    free(j->result_json);
    free(j->error);
    memset(j, 0, sizeof *j);
}

static void job_clear_row(void *row)
{
    store_job_clear(row);
}

static int job_read_row(db_stmt_t *st, void *dst, err_t *err)
{
    store_job_t *j = dst;
    memset(j, 0, sizeof *j);
    j->id = db_column_int64(st, 0);
    j->model_id = db_column_int64(st, 1);
    store__column_text_copy(st, 2, j->status, sizeof j->status);
    j->progress_step = db_column_int64(st, 3);
    j->progress_steps = db_column_int64(st, 4);
    j->has_loss = !db_column_is_null(st, 5);
    j->progress_loss = j->has_loss ? db_column_double(st, 5) : 0.0;
    store__column_text_copy(st, 9, j->created_at, sizeof j->created_at);
    store__column_text_copy(st, 10, j->updated_at, sizeof j->updated_at);
    j->replica_id = db_column_int64(st, 11);
    j->has_start = !db_column_is_null(st, 12);
    j->start_step = db_column_int64(st, 12);
    j->loss_before = db_column_is_null(st, 13) ? NAN : db_column_double(st, 13);
    j->cancel_requested = db_column_int64(st, 14) != 0;
    if (store__column_strdup(st, 6, &j->request_json, err) < 0 ||
        store__column_strdup(st, 7, &j->result_json, err) < 0 ||
        store__column_strdup(st, 8, &j->error, err) < 0) {
        store_job_clear(j);
        return err_set(err, ERR_NOMEM, "out of memory reading a job");
    }
    return 0;
}

int store_job_insert(store_t *s, int64_t id, const char *request_json, int64_t steps,
                     int64_t *job_id, err_t *err)
{
    static const char sql[] =
        "INSERT INTO jobs(model_id, status, request_json, progress_steps, created_at, updated_at)"
        " VALUES (?1, 'queued', ?2, ?3, ?4, ?4) RETURNING id";
    *job_id = 0;
    db_conn_t *c = NULL;
    int64_t new_id = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    if ((rc = store__model_exists(c, id, err)) == 0)
        rc = store__get_row(c, sql,
                            STORE_ARGS(DB_INT(id), DB_TEXT(request_json), DB_INT(steps),
                                       DB_TEXT(now)),
                            store__read_int, &new_id, "model", id, err);
    rc = store__tx_leave(c, own, rc, err);
    if (rc == 0)
        *job_id = new_id;
    return rc;
}

int store_job_get(store_t *s, int64_t job_id, store_job_t *out, err_t *err)
{
    static const char sql[] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1";
    memset(out, 0, sizeof *out);
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    if (rc < 0)
        return rc;
    return store__get_row(c, sql, STORE_ARGS(DB_INT(job_id)), job_read_row, out, "job", job_id,
                          err);
}

void store_job_list_free(store_job_t *rows, int64_t n)
{
    store__rows_free(rows, n, sizeof *rows, job_clear_row);
}

int store_job_list(store_t *s, int64_t model_id, const char *status, int64_t limit,
                   int64_t after, store_job_t **out, int64_t *n, int64_t *next, err_t *err)
{
    static const char sql[] =
        "SELECT " JOB_COLUMNS " FROM jobs WHERE id > ?1 AND (?2 = 0 OR model_id = ?2)"
        " AND (?3 IS NULL OR status = ?3) ORDER BY id LIMIT ?4";
    *out = NULL;
    *n = 0;
    *next = 0;
    if (limit < 1 || limit > 100000)
        return err_set_field(err, ERR_INVAL, "limit", "limit=%" PRId64 " not in [1,100000]",
                             limit);
    db_conn_t *c = NULL;
    void *rows = NULL;
    int more = 0;
    int rc = store__conn(s, &c, err);
    /* One more row than the page says whether a next page exists. */
    if (rc == 0)
        rc = store__list(c, sql,
                         STORE_ARGS(DB_INT(after), DB_INT(model_id), DB_TEXT(status),
                                    DB_INT(limit + 1)),
                         sizeof **out, job_read_row, job_clear_row, limit, &rows, n, &more,
                         "listing jobs", err);
    if (rc < 0)
        return rc;
    *out = rows;
    if (more)
        *next = (*out)[*n - 1].id;
    return 0;
}

/* Run an UPDATE of job `job_id`; ERR_NOTFOUND when it changed nothing. */
static int job_update(store_t *s, const char *sql, const db_value_t *args, int n_args,
                      int64_t job_id, const char *what, err_t *err)
{
    db_conn_t *c = NULL;
    int64_t changed = 0;
    int rc = store__conn(s, &c, err);
    if (rc == 0)
        rc = store__run(c, sql, args, n_args, what, &changed, err);
    if (rc == 0 && changed == 0)
        rc = err_set(err, ERR_NOTFOUND, "job %" PRId64 " not found", job_id);
    return rc;
}

int store_job_progress(store_t *s, int64_t job_id, int64_t start_step, int64_t step,
                       int64_t steps, const double *loss, double loss_before, err_t *err)
{
    /* start_step and loss_before are the call's: the first commit records them for good. */
    static const char sql[] =
        "UPDATE jobs SET progress_step = ?2, progress_steps = ?3,"
        " progress_loss = CASE WHEN ?4 <> 0 THEN ?5 ELSE progress_loss END, updated_at = ?6,"
        " start_step = COALESCE(start_step, ?7), loss_before = COALESCE(loss_before, ?8)"
        " WHERE id = ?1";
    char now[STORE_TIME_MAX];
    store_now(now);
    /* A loss that is not finite is stored as NULL (db_bind_double). */
    return job_update(s, sql,
                      STORE_ARGS(DB_INT(job_id), DB_INT(step - start_step), DB_INT(steps),
                                 DB_INT(loss != NULL), loss != NULL ? DB_DOUBLE(*loss) : DB_NULL,
                                 DB_TEXT(now), DB_INT(start_step), DB_DOUBLE(loss_before)),
                      job_id, "updating a job's progress", err);
}

int store_job_finish(store_t *s, int64_t job_id, int64_t replica_id, const char *status,
                     const char *result_json, const char *error, err_t *err)
{
    /* Only while the job is still this replica's: one taken over must not be touched. */
    static const char sql[] =
        "UPDATE jobs SET status = ?3, result_json = COALESCE(?4, result_json),"
        " error = COALESCE(?5, error), updated_at = ?6,"
        " replica_id = CASE WHEN ?3 = 'queued' THEN NULL ELSE replica_id END"
        " WHERE id = ?1 AND replica_id = ?2 AND status = 'running'";
    char now[STORE_TIME_MAX];
    store_now(now);
    return job_update(s, sql,
                      STORE_ARGS(DB_INT(job_id), DB_INT(replica_id), DB_TEXT(status),
                                 DB_TEXT(result_json), DB_TEXT(error), DB_TEXT(now)),
                      job_id, "recording a job's end", err);
}

/* ERR_CONFLICT when model `id` has a job queued or running, or a training run of another
 * replica holds its lease (this process's own runs hold its registry lock). */
static int model_free_to_queue(store_t *s, db_conn_t *c, int64_t id, err_t *err)
{
    static const char sql_job[] =
        "SELECT COALESCE(MAX(id), 0) FROM jobs WHERE model_id = ?1"
        " AND status IN ('queued', 'running')";
    static const char sql_lease[] =
        "SELECT COUNT(*) FROM model_leases WHERE model_id = ?1 AND expires_ms >= ?2"
        " AND replica_id <> ?3";
    int64_t job = 0, leases = 0;
    int rc = store__get_int(c, sql_job, STORE_ARGS(DB_INT(id)), &job, "model", id, err);
    if (rc == 0 && job > 0)
        return err_set(err, ERR_CONFLICT, "model %" PRId64 " is training (job %" PRId64
                       "): wait for it or cancel it", id, job);
    if (rc == 0)
        rc = store__get_int(c, sql_lease,
                            STORE_ARGS(DB_INT(id), DB_INT(store__now_ms()),
                                       DB_INT(atomic_load(&s->replica_id))),
                            &leases, "model", id, err);
    if (rc == 0 && leases > 0)
        rc = err_set(err, ERR_CONFLICT, "model %" PRId64 " is training: wait for the run to "
                     "end", id);
    return rc;
}

int store_model_check_idle(store_t *s, int64_t id, err_t *err)
{
    db_conn_t *c = NULL;
    int rc = store__conn(s, &c, err);
    return rc < 0 ? rc : model_free_to_queue(s, c, id, err);
}

int store_job_enqueue(store_t *s, int64_t id, const char *request_json, int64_t steps,
                      int64_t max_queue, int have_slot, int64_t *job_id, err_t *err)
{
    static const char sql_queued[] = "SELECT COUNT(*) FROM jobs WHERE status = 'queued'";
    *job_id = 0;
    db_conn_t *c = NULL;
    int64_t queued = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    if ((rc = store__model_exists(c, id, err)) == 0 &&
        (rc = model_free_to_queue(s, c, id, err)) == 0)
        rc = store__get_int(c, sql_queued, STORE_NO_ARGS, &queued, "queue", 0, err);
    if (rc == 0 && !have_slot && queued >= max_queue)
        rc = err_set(err, ERR_BUSY, "%" PRId64 " job%s already queued (--max-queue %" PRId64
                     ") and every slot of this replica is taken (--max-jobs): retry later",
                     queued, queued == 1 ? " is" : "s are", max_queue);
    if (rc == 0)
        rc = store_job_insert(s, id, request_json, steps, job_id, err);
    return store__tx_leave(c, own, rc, err);
}

int store_job_claim(store_t *s, int64_t replica_id, int64_t lease_ms, store_job_t *out,
                    err_t *err)
{
    /* The oldest job that is queued, or running on a replica whose heartbeat stopped (its
     * process died: the job resumes here; store__dead_before) -- never one of this replica's
     * own, which run here whatever its heartbeat says. Not one whose model a live run of
     * another replica holds: the claim would only fail its lease. The write transaction makes
     * the claim atomic cluster-wide; a read first spares the writer lock when there is nothing
     * to claim, as there usually is not when replicas look every quarter second. */
#define CLAIMABLE_JOB                                                                     \
    "SELECT j.id FROM jobs j"                                                           \
    " WHERE (j.status = 'queued' OR (j.status = 'running' AND j.replica_id <> ?1"       \
    "   AND NOT EXISTS (SELECT 1 FROM replicas r"                                       \
    "     WHERE r.id = j.replica_id AND r.heartbeat_ms >= ?2)))"                        \
    " AND NOT EXISTS (SELECT 1 FROM model_leases l"                                     \
    "   WHERE l.model_id = j.model_id AND l.expires_ms >= ?3 AND l.replica_id <> ?1)"   \
    " ORDER BY j.id LIMIT 1"
    static const char sql_any[] = "SELECT COUNT(*) FROM (" CLAIMABLE_JOB ") AS claimable";
    static const char sql[] =
        "UPDATE jobs SET status = 'running', replica_id = ?1, updated_at = ?4"
        " WHERE id = (" CLAIMABLE_JOB ") RETURNING " JOB_COLUMNS;
#undef CLAIMABLE_JOB
    /* The claimer is alive, and the claim says so (store__replica_beat): after a database
     * outage every heartbeat is stale, and the next replica to look would otherwise take the
     * job straight back from this one, whose run then holds the model's lease and fails the
     * other's. A replica whose row is gone (taken for dead) claims nothing until its heartbeat
     * registers it again. */
    memset(out, 0, sizeof *out);
    db_conn_t *c = NULL;
    int64_t now_ms = store__now_ms(), any = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc == 0 && !db_in_tx(c))
        rc = store__get_int(c, sql_any,
                            STORE_ARGS(DB_INT(replica_id),
                                       DB_INT(store__dead_before(s, now_ms, lease_ms)),
                                       DB_INT(now_ms)),
                            &any, "queue", 0, err);
    if (rc < 0 || (!db_in_tx(c) && any == 0))
        return rc;
    if ((rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    /* The time once the writer lock is ours (it may have been a while coming), but before this
     * replica's own beat: a server that stalls after this point makes the others look late,
     * and judging them by an earlier time spares them. A claim that fails withholds no
     * judgment (store__withhold): the heartbeat, which keeps trying through an outage, does. */
    now_ms = store__now_ms();
    char now[STORE_TIME_MAX];
    store_time_str(now_ms, now);
    rc = store__replica_beat(s, c, replica_id, lease_ms, err);
    if (rc == ERR_NOTFOUND) {
        memset(err, 0, sizeof *err);
        rc = 0;
    } else if (rc == 0) {
        rc = store__get_row(c, sql,
                            STORE_ARGS(DB_INT(replica_id),
                                       DB_INT(store__dead_before(s, now_ms, lease_ms)),
                                       DB_INT(now_ms), DB_TEXT(now)),
                            job_read_row, out, NULL, 0, err);
        if (rc == DB_ROW || rc == DB_DONE)
            rc = 0;
    }
    return store__tx_leave(c, own, rc, err);
}

int store_job_cancel_request(store_t *s, int64_t job_id, int64_t lease_ms, err_t *err)
{
    /* A queued job ends here and now; so does one whose replica died (its lease is fenced, so
     * a replica that only seemed dead never commits for it again); a running one is stopped
     * by the replica running it. */
    static const char sql_queued[] =
        "UPDATE jobs SET status = 'cancelled', updated_at = ?2"
        " WHERE id = ?1 AND status = 'queued' RETURNING model_id";
    static const char sql_orphan[] =
        "UPDATE jobs SET status = 'cancelled', updated_at = ?2"
        " WHERE id = ?1 AND status = 'running' AND NOT EXISTS (SELECT 1 FROM replicas r"
        "   WHERE r.id = jobs.replica_id AND r.heartbeat_ms >= ?3) RETURNING model_id";
    static const char sql_fence[] =
        "UPDATE model_leases SET epoch = epoch + 1, expires_ms = 0 WHERE model_id = ?1";
    static const char sql_idle[] =
        "UPDATE models SET status = 'idle' WHERE id = ?1 AND status = 'training'";
    static const char sql_running[] =
        "UPDATE jobs SET cancel_requested = 1, updated_at = ?2"
        " WHERE id = ?1 AND status = 'running'";
    static const char sql_exists[] = "SELECT COUNT(*) FROM jobs WHERE id = ?1";
    db_conn_t *c = NULL;
    int64_t n = 0, model = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    char now[STORE_TIME_MAX];
    store_now(now);
    rc = store__get_row(c, sql_queued, STORE_ARGS(DB_INT(job_id), DB_TEXT(now)),
                        store__read_int, &model, NULL, 0, err);
    if (rc == DB_DONE) {
        rc = store__get_row(c, sql_orphan,
                            STORE_ARGS(DB_INT(job_id), DB_TEXT(now),
                                       DB_INT(store__now_ms() - lease_ms)),
                            store__read_int, &model, NULL, 0, err);
        if (rc == DB_ROW &&
            (rc = store__run(c, sql_fence, STORE_ARGS(DB_INT(model)), "fencing a dead run",
                             NULL, err)) == 0)
            rc = store__run(c, sql_idle, STORE_ARGS(DB_INT(model)), "resetting model status",
                            NULL, err);
    }
    if (rc == DB_DONE &&
        (rc = store__run(c, sql_running, STORE_ARGS(DB_INT(job_id), DB_TEXT(now)),
                         "cancelling a job", &n, err)) == 0 && n == 0 &&
        (rc = store__get_int(c, sql_exists, STORE_ARGS(DB_INT(job_id)), &n, "job", job_id,
                             err)) == 0 &&
        n == 0)
        rc = err_set(err, ERR_NOTFOUND, "job %" PRId64 " not found", job_id);
    if (rc == DB_ROW)
        rc = 0;
    return store__tx_leave(c, own, rc, err);
}

int store_jobs_cancel_requested(store_t *s, int64_t replica_id, int64_t **ids, int64_t *n,
                                err_t *err)
{
    static const char sql[] =
        "SELECT id FROM jobs WHERE replica_id = ?1 AND status = 'running'"
        " AND cancel_requested <> 0 ORDER BY id";
    *ids = NULL;
    *n = 0;
    db_conn_t *c = NULL;
    void *rows = NULL;
    int rc = store__conn(s, &c, err);
    if (rc == 0)
        rc = store__list(c, sql, STORE_ARGS(DB_INT(replica_id)), sizeof **ids, store__read_int,
                         NULL, 0, &rows, n, NULL, "reading cancel requests", err);
    if (rc == 0)
        *ids = rows;
    return rc;
}
