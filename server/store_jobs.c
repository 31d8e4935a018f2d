/* server/store_jobs.c -- asynchronous training jobs: their rows, progress and status. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "store_internal.h"

#define JOB_COLUMNS                                                                      \
    "id, model_id, status, progress_step, progress_steps, progress_loss, request_json," \
    " result_json, error, created_at, updated_at, replica_id"

int store_jobs_mark_interrupted(store_t *s, int64_t *n, err_t *err)
{
    static const char sql_jobs[] =
        "UPDATE jobs SET status = 'failed', error = 'interrupted', updated_at = ?1"
        " WHERE status IN ('queued', 'running')";
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

int store_job_progress(store_t *s, int64_t job_id, int64_t step, int64_t steps,
                       const double *loss, err_t *err)
{
    static const char sql[] =
        "UPDATE jobs SET progress_step = ?2, progress_steps = ?3,"
        " progress_loss = CASE WHEN ?4 <> 0 THEN ?5 ELSE progress_loss END, updated_at = ?6"
        " WHERE id = ?1";
    char now[STORE_TIME_MAX];
    store_now(now);
    /* A loss that is not finite is stored as NULL (db_bind_double). */
    return job_update(s, sql,
                      STORE_ARGS(DB_INT(job_id), DB_INT(step), DB_INT(steps),
                                 DB_INT(loss != NULL), loss != NULL ? DB_DOUBLE(*loss) : DB_NULL,
                                 DB_TEXT(now)),
                      job_id, "updating a job's progress", err);
}

int store_job_set_status(store_t *s, int64_t job_id, const char *status,
                         const char *result_json, const char *error, err_t *err)
{
    static const char sql[] =
        "UPDATE jobs SET status = ?2, result_json = COALESCE(?3, result_json),"
        " error = COALESCE(?4, error), updated_at = ?5 WHERE id = ?1";
    char now[STORE_TIME_MAX];
    store_now(now);
    return job_update(s, sql,
                      STORE_ARGS(DB_INT(job_id), DB_TEXT(status), DB_TEXT(result_json),
                                 DB_TEXT(error), DB_TEXT(now)),
                      job_id, "updating a job's status", err);
}

int store_job_start(store_t *s, int64_t job_id, int64_t replica_id, err_t *err)
{
    static const char sql[] =
        "UPDATE jobs SET status = 'running', replica_id = ?2, updated_at = ?3 WHERE id = ?1";
    char now[STORE_TIME_MAX];
    store_now(now);
    return job_update(s, sql, STORE_ARGS(DB_INT(job_id), DB_INT(replica_id), DB_TEXT(now)),
                      job_id, "marking a job running", err);
}
