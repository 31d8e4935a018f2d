/* server/store_history.c -- training history, stored in packed chunks (histchunk.h).
 *
 * One history_chunks row per append (schema/sqlite/002_history_chunks.sql). A training commit
 * of 1000 steps is then one INSERT of 16 kB; a row per step cost ~5 us and ~60 bytes of WAL
 * each, and made recording every step of a fast call 2.7 times slower.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "histchunk.h"
#include "store_internal.h"

/* The chunk in columns 0.. of `st` (STORE_HIST_COLUMNS), checked. `data` lives until `st`
 * moves. */
static int hist_column(db_stmt_t *st, histchunk_t *ch, err_t *err)
{
    ch->first = db_column_int64(st, 0);
    ch->last = db_column_int64(st, 1);
    ch->n = db_column_int64(st, 2);
    ch->stride = db_column_int64(st, 3);
    ch->at_ms = db_column_int64(st, 4);
    ch->lr_shared = !db_column_is_null(st, 5);
    ch->lr = ch->lr_shared ? db_column_double(st, 5) : 0.0;
    int64_t bytes = 0;
    ch->data = db_column_blob(st, 6, &bytes);
    ch->val = (int)db_column_int64(st, 7);
    return histchunk_check(ch, bytes, err);
}

/* Pack `n` (>= 1) rows in ascending step order, all of time `at_ms`, as a new chunk of model
 * `id`. */
static int hist_insert(db_conn_t *c, int64_t id, const store_history_row_t *rows, int64_t n,
                       int64_t at_ms, err_t *err)
{
    static const char sql[] =
        "INSERT INTO history_chunks(model_id, " STORE_HIST_COLUMNS ")"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
    static const char sql_v2[] =
        "INSERT INTO history_chunks(model_id, " STORE_HIST_COLUMNS_V2 ")"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    histchunk_t ch;
    histchunk_plan(rows, n, at_ms, &ch);
    int64_t bytes = histchunk_bytes(&ch);
    unsigned char *buf = malloc((size_t)bytes);
    if (buf == NULL)
        return err_set(err, ERR_NOMEM, "out of memory writing history");
    histchunk_pack(&ch, rows, buf);
    /* Rows without validation values (all of migration 2's) leave `val` to its default. */
    const db_value_t args[] = {DB_INT(id), DB_INT(ch.first), DB_INT(ch.last), DB_INT(ch.n),
                               DB_INT(ch.stride), DB_INT(ch.at_ms),
                               ch.lr_shared ? DB_DOUBLE(ch.lr) : DB_NULL, DB_BLOB(buf, bytes),
                               DB_INT(ch.val)};
    int rc = store__run(c, ch.val > 0 ? sql : sql_v2, args, ch.val > 0 ? 9 : 8,
                        "writing history", NULL, err);
    free(buf);
    return rc;
}

/* The records before `step` of the one chunk of model `id` that straddles it, read into
 * `*keep` (new) / `*k`, with the chunk's first step and time; *k = 0 when none straddles. */
typedef struct hist_split {
    int64_t step;                /* in: where the chunk is cut */
    int64_t first, at_ms;        /* out: the chunk's first step and time */
    store_history_row_t *keep;   /* out: its records before `step`, new */
    int64_t k;
} hist_split_t;

static int hist_read_split(db_stmt_t *st, void *dst, err_t *err)
{
    hist_split_t *sp = dst;
    histchunk_t ch;
    int rc = hist_column(st, &ch, err);
    if (rc < 0)
        return rc;
    int64_t k = 0;
    while (k < ch.n && histchunk_step(&ch, k) < sp->step)
        ++k;
    if ((sp->keep = malloc((size_t)k * sizeof *sp->keep)) == NULL)
        return err_set(err, ERR_NOMEM, "out of memory trimming history");
    for (int64_t i = 0; i < k; ++i)
        histchunk_get(&ch, i, &sp->keep[i]);
    sp->k = k;
    sp->first = ch.first;
    sp->at_ms = ch.at_ms;
    return 0;
}

int store__history_truncate(db_conn_t *c, int64_t id, int64_t step, err_t *err)
{
    static const char sql_delete[] =
        "DELETE FROM history_chunks WHERE model_id = ?1 AND first_step >= ?2";
    static const char sql_straddle[] =
        "SELECT " STORE_HIST_COLUMNS " FROM history_chunks"
        " WHERE model_id = ?1 AND first_step < ?2 AND last_step >= ?2";
    static const char sql_drop[] =
        "DELETE FROM history_chunks WHERE model_id = ?1 AND first_step = ?2";
    int rc = store__run(c, sql_delete, STORE_ARGS(DB_INT(id), DB_INT(step)), "trimming history",
                        NULL, err);
    if (rc < 0)
        return rc;
    /* Chunks do not overlap: at most one holds records on both sides of `step`. Its records
     * before `step` (at least its first) become a new chunk in its place. */
    hist_split_t sp = {.step = step};
    rc = store__get_row(c, sql_straddle, STORE_ARGS(DB_INT(id), DB_INT(step)), hist_read_split,
                        &sp, NULL, id, err);
    if (rc == DB_DONE)
        return 0;           /* none straddles `step` */
    if (rc == DB_ROW)
        rc = store__run(c, sql_drop, STORE_ARGS(DB_INT(id), DB_INT(sp.first)),
                        "trimming history", NULL, err);
    if (rc == 0)
        rc = hist_insert(c, id, sp.keep, sp.k, sp.at_ms, err);
    free(sp.keep);
    return rc;
}

int store_history_append(store_t *s, int64_t id, const store_history_row_t *rows, int64_t n,
                         err_t *err)
{
    if (n <= 0)
        return 0;
    for (int64_t i = 1; i < n; ++i)
        if (rows[i].step <= rows[i - 1].step)
            return err_set(err, ERR_INTERNAL, "history rows out of step order (%" PRId64
                           " after %" PRId64 ")", rows[i].step, rows[i - 1].step);
    db_conn_t *c = NULL;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_WRITE, &own, err)) < 0)
        return rc;
    /* A step run again (after a divergence rollback or a restore) supersedes what was recorded
     * from there on: the newest rows describe the trajectory the model is actually on. */
    if ((rc = store__model_exists(c, id, err)) < 0 ||
        (rc = store__history_truncate(c, id, rows[0].step, err)) < 0)
        goto out;
    /* One chunk per run of rows with the same time ("" = now), of at most HISTCHUNK_MAX. */
    const int64_t now = store__now_ms();
    for (int64_t i = 0, j; i < n && rc == 0; i = j) {
        int64_t at = now;
        if (rows[i].at[0] != '\0' && histchunk_time_ms(rows[i].at, &at) < 0) {
            rc = err_set(err, ERR_INTERNAL, "history time '%s' is not RFC 3339", rows[i].at);
            break;
        }
        for (j = i + 1; j < n && j - i < HISTCHUNK_MAX && strcmp(rows[j].at, rows[i].at) == 0;
             ++j)
            ;
        rc = hist_insert(c, id, rows + i, j - i, at, err);
    }
out:
    return store__tx_leave(c, own, rc, err);
}

int store__history_from_rows(db_conn_t *c, err_t *err)
{
    enum { PER_CHUNK = 1000 };
    static const char sql_rows[] =
        "SELECT model_id, step, loss, grad_norm, learning_rate, at FROM history"
        " ORDER BY model_id, step";
    store_history_row_t *run = malloc(PER_CHUNK * sizeof *run);
    if (run == NULL)
        return err_set(err, ERR_NOMEM, "out of memory converting history");
    db_stmt_t *st = NULL;
    int64_t model = -1, k = 0, run_at = 0;
    int rc = store__query(c, sql_rows, STORE_NO_ARGS, &st, err);
    while (rc == 0 && (rc = db_step(st, "converting history", err)) == DB_ROW) {
        rc = 0;
        int64_t id = db_column_int64(st, 0);
        store_history_row_t r = {.step = db_column_int64(st, 1),
                                 .loss = store__column_double_or_nan(st, 2),
                                 .grad_norm = store__column_double_or_nan(st, 3),
                                 .learning_rate = store__column_double_or_nan(st, 4),
                                 .val_loss = NAN, .val_accuracy = NAN};
        store__column_text_copy(st, 5, r.at, sizeof r.at);
        int64_t at = 0;
        if (histchunk_time_ms(r.at, &at) < 0)
            at = 0;
        if (k > 0 && (id != model || at != run_at || k == PER_CHUNK)) {
            rc = hist_insert(c, model, run, k, run_at, err);
            k = 0;
        }
        model = id;
        run_at = at;
        run[k++] = r;
    }
    db_stmt_done(st);
    if (rc == 0 && k > 0)
        rc = hist_insert(c, model, run, k, run_at, err);
    free(run);
    if (rc == 0)
        rc = db_exec(c, "DROP TABLE history", "converting history", err);
    return rc;
}

/* Grow `*rows` to hold at least `want` rows. */
static int hist_reserve(store_history_row_t **rows, int64_t *cap, int64_t want, err_t *err)
{
    if (want <= *cap)
        return 0;
    int64_t ncap = *cap == 0 ? 64 : *cap;
    while (ncap < want)
        ncap *= 2;
    store_history_row_t *nr = realloc(*rows, (size_t)ncap * sizeof **rows);
    if (nr == NULL)
        return err_set(err, ERR_NOMEM, "out of memory reading history");
    *rows = nr;
    *cap = ncap;
    return 0;
}

/* Give the caller `rows` (`count` of them) when `rc` is 0 and there are some; else free them.
 * Returns rc. */
static int hand_over(int rc, store_history_row_t *rows, int64_t count, store_history_row_t **out,
                     int64_t *n)
{
    if (rc < 0 || count == 0) {
        free(rows);
        return rc;
    }
    *out = rows;
    *n = count;
    return 0;
}

int store_history_list(store_t *s, int64_t id, int64_t after_step, int64_t limit,
                       store_history_row_t **out, int64_t *n, int64_t *next, err_t *err)
{
    static const char sql[] =
        "SELECT " STORE_HIST_COLUMNS " FROM history_chunks"
        " WHERE model_id = ?1 AND last_step > ?2 ORDER BY first_step";
    *out = NULL;
    *n = 0;
    *next = -1;
    if (limit < 1)
        return err_set_field(err, ERR_INVAL, "limit", "limit=%" PRId64 " < 1", limit);
    db_conn_t *c = NULL;
    db_stmt_t *st = NULL;
    store_history_row_t *rows = NULL;
    int64_t count = 0, cap = 0;
    int more = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_READ, &own, err)) < 0)
        return rc;
    if ((rc = store__model_exists(c, id, err)) < 0 ||
        (rc = store__query(c, sql, STORE_ARGS(DB_INT(id), DB_INT(after_step)), &st, err)) < 0)
        goto out;
    while (!more && (rc = db_step(st, "listing history", err)) == DB_ROW) {
        histchunk_t ch;
        if ((rc = hist_column(st, &ch, err)) < 0)
            goto out;
        for (int64_t i = 0; i < ch.n && !more; ++i) {
            if (histchunk_step(&ch, i) <= after_step)
                continue;
            if (count == limit) {
                more = 1;
            } else {
                if ((rc = hist_reserve(&rows, &cap, count + 1, err)) < 0)
                    goto out;
                histchunk_get(&ch, i, &rows[count++]);
            }
        }
    }
    if (more)
        rc = 0;
out:
    db_stmt_done(st);
    rc = hand_over(store__tx_leave(c, own, rc, err), rows, count, out, n);
    if (rc == 0 && more)
        *next = rows[count - 1].step;
    return rc;
}

int store_history_sample(store_t *s, int64_t id, int64_t max_points, store_history_row_t **out,
                         int64_t *n, err_t *err)
{
    static const char sql_count[] =
        "SELECT COALESCE(SUM(n), 0) FROM history_chunks WHERE model_id = ?1";
    static const char sql_chunks[] =
        "SELECT " STORE_HIST_COLUMNS " FROM history_chunks WHERE model_id = ?1"
        " ORDER BY first_step";
    *out = NULL;
    *n = 0;
    if (max_points < 2)
        return err_set_field(err, ERR_INVAL, "max_points", "max_points=%" PRId64 " < 2",
                             max_points);
    db_conn_t *c = NULL;
    db_stmt_t *st = NULL;
    store_history_row_t *rows = NULL;
    int64_t total = 0, want = 0, count = 0, base = 0;
    int own = 0, rc = store__conn(s, &c, err);
    if (rc < 0 || (rc = store__tx_enter(c, DB_TX_READ, &own, err)) < 0)
        return rc;
    if ((rc = store__model_exists(c, id, err)) < 0 ||
        (rc = store__get_int(c, sql_count, STORE_ARGS(DB_INT(id)), &total, "model", id, err)) < 0)
        goto out;
    if (total == 0)
        goto out;
    want = total < max_points ? total : max_points;
    if ((rows = calloc((size_t)want, sizeof *rows)) == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory sampling history");
        goto out;
    }
    if ((rc = store__query(c, sql_chunks, STORE_ARGS(DB_INT(id)), &st, err)) < 0)
        goto out;
    /* Record index of sample k: round(k (total-1) / (want-1)); strictly increasing because
     * want <= total, so each record is taken at most once. A chunk's records are unpacked
     * only when a sample falls in it. */
    while (count < want && (rc = db_step(st, "sampling history", err)) == DB_ROW) {
        rc = 0;
        int64_t k = db_column_int64(st, 2);
        histchunk_t ch = {.data = NULL};
        int checked = 0;
        for (;;) {
            int64_t pick = want == 1 ? 0
                           : (int64_t)((double)count * (double)(total - 1) /
                                           (double)(want - 1) + 0.5);
            if (count == want || pick >= base + k)
                break;
            if (!checked && (rc = hist_column(st, &ch, err)) < 0)
                goto out;
            checked = 1;
            histchunk_get(&ch, pick - base, &rows[count++]);
        }
        base += k;
    }
    if (rc > 0)
        rc = 0;
out:
    db_stmt_done(st);
    return hand_over(store__tx_leave(c, own, rc, err), rows, count, out, n);
}
