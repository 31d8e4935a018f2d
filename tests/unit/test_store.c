/* tests/unit/test_store.c -- the store against a temporary database: open and migrate, every
 * table's rows written and read back, paging, cascades, and the error codes store.h promises
 * (a taken name is ERR_CONFLICT, a missing row ERR_NOTFOUND, a lock held too long
 * ERR_UNAVAILABLE). Also opens databases of older schemas: one at schema 1 (history one row per
 * step) and one as an earlier neurond wrote it (tests/unit/fixtures/schema2-db.sql). And the
 * driver's per-thread connections: kept per thread, rolled back and reused when a thread ends. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "embedded.h"
#include "store.h"
#include "store_internal.h"
#include "testutil.h"

/* The highest migration of schema/<dialect>/: a new one raises it. */
#define SCHEMA_LATEST 7

static char dir[64];
static char path[192];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/test_store.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/neurond.db", dir);
}

static void teardown(void)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static store_t *open_store(void)
{
    store_t *s = NULL;
    err_t err = {0};
    ck_assert_msg(store_open(path, &s, &err) == 0, "store_open: %s", err.msg);
    return s;
}

static int64_t new_model(store_t *s, const char *name, int64_t n_params)
{
    double params[8], optim[8];
    for (int64_t i = 0; i < n_params; ++i) {
        params[i] = 0.5 + (double)i;
        optim[i] = -(double)i;
    }
    int64_t id = 0;
    err_t err = {0};
    ck_assert_msg(store_model_insert(s, name, "linear", "{\"kind\":\"linear\"}", params, n_params,
                                     optim, n_params, &id, &err) == 0,
                  "insert: %s", err.msg);
    ck_assert_int_gt(id, 0);
    return id;
}

static store_history_row_t hist_row(int64_t step)
{
    return (store_history_row_t){.step = step, .loss = 10.0 / (double)(step + 1),
                                 .grad_norm = (double)step, .learning_rate = 0.01,
                                 .val_loss = NAN, .val_accuracy = NAN};
}

START_TEST(test_open_migrates)
{
    store_t *s = open_store();
    ck_assert_int_eq(store_schema_version(s), SCHEMA_LATEST);
    ck_assert_str_eq(store_path(s), path);
    err_t err = {0};
    ck_assert_int_eq(store_ping(s, &err), 0);
    store_close(s);
    s = open_store();          /* again: nothing left to apply */
    ck_assert_int_eq(store_schema_version(s), SCHEMA_LATEST);
    store_close(s);
    store_close(NULL);
    ck_assert_int_eq(store_open("", &s, &err), ERR_INVAL);
    ck_assert_ptr_null(s);
}
END_TEST

START_TEST(test_model_rows)
{
    store_t *s = open_store();
    err_t err = {0};
    int64_t id = new_model(s, "first", 3);
    store_model_t m;
    ck_assert_int_eq(store_model_get(s, id, &m, &err), 0);
    ck_assert_int_eq(m.id, id);
    ck_assert_str_eq(m.name, "first");
    ck_assert_str_eq(m.kind, "linear");
    ck_assert_str_eq(m.spec_json, "{\"kind\":\"linear\"}");
    ck_assert_str_eq(m.status, "idle");
    ck_assert_int_eq(m.step, 0);
    ck_assert_int_eq(m.rows, 0);
    ck_assert_int_eq(m.has_loss, 0);
    ck_assert_int_eq(m.version, 1);
    ck_assert_int_eq(strlen(m.created_at), 24);
    store_model_clear(&m);
    ck_assert_ptr_null(m.name);

    /* A taken name is a conflict on the field "name", and nothing is half-written. */
    int64_t dup = 0;
    double p = 1.0;
    ck_assert_int_eq(store_model_insert(s, "first", "linear", "{}", &p, 1, NULL, 0, &dup, &err),
                     ERR_CONFLICT);
    ck_assert_int_eq(dup, 0);
    ck_assert_str_eq(err.field, "name");
    int64_t unnamed = new_model(s, NULL, 1);
    ck_assert_int_eq(unnamed, id + 1);   /* the failed insert left nothing behind */
    ck_assert_int_eq(store_model_get(s, unnamed, &m, &err), 0);
    ck_assert_ptr_null(m.name);
    store_model_clear(&m);

    ck_assert_int_eq(store_model_set_status(s, id, "training", &err), 0);
    ck_assert_int_eq(store_model_get(s, id, &m, &err), 0);
    ck_assert_str_eq(m.status, "training");
    store_model_clear(&m);
    ck_assert_int_eq(store_model_set_status(s, 999, "idle", &err), ERR_NOTFOUND);

    ck_assert_int_eq(store_model_get(s, 999, &m, &err), ERR_NOTFOUND);
    ck_assert_str_eq(err.msg, "model 999 not found");
    ck_assert_int_eq(store_model_delete(s, id, &err), 0);
    ck_assert_int_eq(store_model_delete(s, id, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_model_get(s, id, &m, &err), ERR_NOTFOUND);
    store_close(s);
}
END_TEST

START_TEST(test_model_list_pages)
{
    store_t *s = open_store();
    err_t err = {0};
    int64_t ids[5];
    for (int i = 0; i < 5; ++i) {
        char name[16];
        snprintf(name, sizeof name, "m%d", i);
        ids[i] = new_model(s, name, 1);
    }
    store_model_t *rows = NULL;
    int64_t n = 0, next = -1, after = 0, seen = 0;
    const int64_t want_n[] = {2, 2, 1}, want_next[] = {ids[1], ids[3], 0};
    for (int page = 0; page < 3; ++page) {
        ck_assert_int_eq(store_model_list(s, 2, after, &rows, &n, &next, &err), 0);
        ck_assert_int_eq(n, want_n[page]);
        ck_assert_int_eq(next, want_next[page]);
        for (int64_t i = 0; i < n; ++i)
            ck_assert_int_eq(rows[i].id, ids[seen++]);
        store_model_list_free(rows, n);
        after = next;
    }
    ck_assert_int_eq(seen, 5);
    ck_assert_int_eq(store_model_list(s, 10, ids[4], &rows, &n, &next, &err), 0);
    ck_assert_int_eq(n, 0);
    ck_assert_ptr_null(rows);
    ck_assert_int_eq(store_model_list(s, 0, 0, &rows, &n, &next, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "limit");
    store_close(s);
}
END_TEST

START_TEST(test_params_roundtrip)
{
    store_t *s = open_store();
    err_t err = {0};
    int64_t id = new_model(s, "p", 3);
    store_state_t st;
    ck_assert_int_eq(store_params_get(s, id, &st, &err), 0);
    ck_assert_int_eq(st.n_params, 3);
    ck_assert_int_eq(st.n_optim, 3);
    ck_assert_double_eq(st.params[2], 2.5);
    ck_assert_double_eq(st.optim[2], -2.0);
    ck_assert_int_eq(st.version, 1);
    store_state_clear(&st);

    const double theta[4] = {0.1, -1e-300, 3.141592653589793, 1e300};
    const double loss = 0.125;
    ck_assert_int_eq(store_params_put(s, id, theta, 4, NULL, 0, 7, &loss, &err), 0);
    ck_assert_int_eq(store_params_get(s, id, &st, &err), 0);
    ck_assert_int_eq(st.n_params, 4);
    ck_assert_int_eq(memcmp(st.params, theta, sizeof theta), 0);
    ck_assert_int_eq(st.n_optim, 3);     /* optim NULL: left as it was */
    ck_assert_int_eq(st.step, 7);
    ck_assert_int_eq(st.version, 2);
    store_state_clear(&st);
    store_model_t m;
    ck_assert_int_eq(store_model_get(s, id, &m, &err), 0);
    ck_assert_int_eq(m.has_loss, 1);
    ck_assert_double_eq(m.loss, 0.125);
    store_model_clear(&m);

    /* Step -1 keeps the step; a loss that is not finite is stored as null; empty optim. */
    const double inf = INFINITY;
    ck_assert_int_eq(store_params_put(s, id, theta, 2, theta, 0, -1, &inf, &err), 0);
    ck_assert_int_eq(store_params_get(s, id, &st, &err), 0);
    ck_assert_int_eq(st.step, 7);
    ck_assert_int_eq(st.n_params, 2);
    ck_assert_int_eq(st.n_optim, 0);
    ck_assert_ptr_null(st.optim);
    store_state_clear(&st);
    ck_assert_int_eq(store_model_get(s, id, &m, &err), 0);
    ck_assert_int_eq(m.has_loss, 0);
    store_model_clear(&m);
    int64_t version = 0;
    ck_assert_int_eq(store_model_version(s, id, &version, &err), 0);
    ck_assert_int_eq(version, 3);

    ck_assert_int_eq(store_params_put(s, 999, theta, 1, NULL, 0, 1, NULL, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_params_get(s, 999, &st, &err), ERR_NOTFOUND);
    ck_assert_ptr_null(st.params);
    store_close(s);
}
END_TEST

START_TEST(test_history)
{
    store_t *s = open_store();
    err_t err = {0};
    int64_t id = new_model(s, "h", 1);
    store_history_row_t rows[10];
    for (int i = 0; i < 10; ++i)
        rows[i] = hist_row(i);
    snprintf(rows[0].at, sizeof rows[0].at, "2026-11-28T04:36:37.123Z");
    ck_assert_int_eq(store_history_append(s, id, rows, 10, &err), 0);

    store_history_row_t *out = NULL;
    int64_t n = 0, next = 0;
    ck_assert_int_eq(store_history_list(s, id, -1, 4, &out, &n, &next, &err), 0);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(next, 3);
    ck_assert_str_eq(out[0].at, "2026-11-28T04:36:37.123Z");
    for (int64_t i = 0; i < n; ++i) {
        ck_assert_int_eq(out[i].step, i);
        ck_assert_double_eq(out[i].loss, rows[i].loss);
        ck_assert_double_eq(out[i].grad_norm, rows[i].grad_norm);
        ck_assert_double_eq(out[i].learning_rate, 0.01);
    }
    free(out);
    ck_assert_int_eq(store_history_list(s, id, 7, 100, &out, &n, &next, &err), 0);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(next, -1);
    ck_assert_int_eq(out[0].step, 8);
    free(out);

    /* Steps run again from 5 supersede what was recorded from there on. */
    store_history_row_t again[2] = {hist_row(5), hist_row(6)};
    again[0].loss = again[1].loss = 42.0;
    ck_assert_int_eq(store_history_append(s, id, again, 2, &err), 0);
    ck_assert_int_eq(store_history_list(s, id, -1, 100, &out, &n, &next, &err), 0);
    ck_assert_int_eq(n, 7);
    ck_assert_int_eq(out[4].step, 4);
    ck_assert_double_eq(out[4].loss, rows[4].loss);
    ck_assert_int_eq(out[6].step, 6);
    ck_assert_double_eq(out[6].loss, 42.0);
    free(out);

    ck_assert_int_eq(store_history_sample(s, id, 3, &out, &n, &err), 0);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(out[0].step, 0);
    ck_assert_int_eq(out[1].step, 3);
    ck_assert_int_eq(out[2].step, 6);
    free(out);

    /* Validation values come back where given and NaN where not. */
    store_history_row_t val[2] = {hist_row(7), hist_row(8)};
    val[0].val_loss = 0.25;
    val[1].val_loss = 0.125;
    val[1].val_accuracy = 0.875;
    ck_assert_int_eq(store_history_append(s, id, val, 2, &err), 0);
    ck_assert_int_eq(store_history_list(s, id, 5, 100, &out, &n, &next, &err), 0);
    ck_assert_int_eq(n, 3);
    ck_assert_msg(isnan(out[0].val_loss), "step 6 has no val_loss");
    ck_assert_double_eq(out[1].val_loss, 0.25);
    ck_assert_msg(isnan(out[1].val_accuracy), "step 7 has no val_accuracy");
    ck_assert_double_eq(out[2].val_accuracy, 0.875);
    free(out);

    store_history_row_t backwards[2] = {hist_row(3), hist_row(2)};
    ck_assert_int_eq(store_history_append(s, id, backwards, 2, &err), ERR_INTERNAL);
    ck_assert_int_eq(store_history_append(s, 999, rows, 1, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_history_list(s, 999, -1, 1, &out, &n, &next, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_history_list(s, id, -1, 0, &out, &n, &next, &err), ERR_INVAL);
    store_close(s);
}
END_TEST

START_TEST(test_batches)
{
    store_t *s = open_store();
    err_t err = {0};
    int64_t id = new_model(s, "b", 1);
    const double x1[6] = {1, 2, 3, 4, 5, 6}, y1[3] = {7, 8, 9};
    const double x2[2] = {10, 11}, y2[1] = {12};
    int64_t b1 = 0, b2 = 0, total = 0;
    ck_assert_int_eq(store_batch_insert(s, id, STORE_SPLIT_TRAIN, 3, 2, 1, x1, y1, &b1, &total, &err), 0);
    ck_assert_int_eq(total, 3);
    ck_assert_int_eq(store_batch_insert(s, id, STORE_SPLIT_TRAIN, 1, 2, 1, x2, y2, &b2, &total, &err), 0);
    ck_assert_int_eq(total, 4);
    ck_assert_int_gt(b2, b1);

    int64_t rows = 0, val_rows = -1;
    double *x = NULL, *y = NULL;
    store_data_stamp_t stamp;
    ck_assert_int_eq(store_batch_load_all(s, id, 2, 1, &rows, &val_rows, &x, &y, &stamp, &err), 0);
    ck_assert_int_eq(rows, 4);
    ck_assert_int_eq(val_rows, 0);
    ck_assert_int_eq(stamp.batches, 2);
    ck_assert_int_eq(stamp.last_id, b2);
    const double want_x[8] = {1, 2, 3, 4, 5, 6, 10, 11}, want_y[4] = {7, 8, 9, 12};
    ck_assert_int_eq(memcmp(x, want_x, sizeof want_x), 0);
    ck_assert_int_eq(memcmp(y, want_y, sizeof want_y), 0);
    free(x);
    free(y);
    ck_assert_int_eq(store_batch_load_all(s, id, 3, 1, &rows, &val_rows, &x, &y, NULL, &err), ERR_SHAPE);
    ck_assert_ptr_null(x);

    /* One batch read back as stored. */
    store_batch_info_t one;
    double *bx = NULL, *by = NULL;
    ck_assert_int_eq(store_batch_get(s, id, b1, &one, &bx, &by, &err), 0);
    ck_assert_int_eq(one.rows, 3);
    ck_assert_int_eq(one.split, STORE_SPLIT_TRAIN);
    ck_assert_int_eq(memcmp(bx, x1, sizeof x1), 0);
    ck_assert_int_eq(memcmp(by, y1, sizeof y1), 0);
    free(bx);
    free(by);
    ck_assert_int_eq(store_batch_get(s, id, b2 + 100, &one, &bx, &by, &err), ERR_NOTFOUND);
    ck_assert_ptr_null(bx);
    ck_assert_int_eq(store_batch_get(s, 999, b1, &one, &bx, &by, &err), ERR_NOTFOUND);

    store_batch_info_t *list = NULL;
    int64_t n = 0;
    ck_assert_int_eq(store_batch_list(s, id, &list, &n, &err), 0);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(list[0].id, b1);
    ck_assert_int_eq(list[0].rows, 3);
    ck_assert_int_eq(list[0].n_x, 2);
    ck_assert_int_eq(list[0].n_y, 1);
    free(list);

    /* Validation rows are counted apart and load after the train rows, whatever their ids. */
    const double xv[2] = {20, 21}, yv[1] = {22};
    int64_t bv = 0;
    ck_assert_int_eq(store_batch_insert(s, id, STORE_SPLIT_VALIDATION, 1, 2, 1, xv, yv, &bv,
                                        &total, &err), 0);
    ck_assert_int_eq(total, 1);
    ck_assert_int_eq(store_batch_insert(s, id, STORE_SPLIT_TRAIN, 1, 2, 1, x2, y2, &b2, &total,
                                        &err), 0);
    ck_assert_int_eq(total, 5);
    ck_assert_int_eq(store_batch_load_all(s, id, 2, 1, &rows, &val_rows, &x, &y, NULL, &err), 0);
    ck_assert_int_eq(rows, 5);
    ck_assert_int_eq(val_rows, 1);
    ck_assert_double_eq(x[8], 10.0);
    ck_assert_double_eq(x[10], 20.0);
    ck_assert_double_eq(y[5], 22.0);
    free(x);
    free(y);
    store_model_t mv;
    ck_assert_int_eq(store_model_get(s, id, &mv, &err), 0);
    ck_assert_int_eq(mv.rows, 5);
    ck_assert_int_eq(mv.validation_rows, 1);
    store_model_clear(&mv);
    ck_assert_int_eq(store_batch_delete(s, id, bv, &err), 0);
    ck_assert_int_eq(store_batch_delete(s, id, b2, &err), 0);
    ck_assert_int_eq(store_batch_insert(s, id, 7, 1, 2, 1, x2, y2, &b2, NULL, &err),
                     ERR_INTERNAL);

    ck_assert_int_eq(store_batch_delete(s, id, b1, &err), 0);
    ck_assert_int_eq(store_batch_delete(s, id, b1, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_batch_stamp(s, id, &stamp, &err), 0);
    ck_assert_int_eq(stamp.batches, 1);
    store_model_t m;
    ck_assert_int_eq(store_model_get(s, id, &m, &err), 0);
    ck_assert_int_eq(m.rows, 1);
    ck_assert_int_eq(m.validation_rows, 0);
    store_model_clear(&m);

    ck_assert_int_eq(store_batch_insert(s, 999, STORE_SPLIT_TRAIN, 1, 2, 1, x2, y2, &b1, NULL, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_batch_insert(s, id, STORE_SPLIT_TRAIN, 0, 2, 1, x2, y2, &b1, NULL, &err), ERR_INVAL);
    ck_assert_int_eq(store_batch_list(s, 999, &list, &n, &err), ERR_NOTFOUND);
    /* A fork copies the batches (a slice per transaction) and their row counts. */
    int64_t fork = 0;
    ck_assert_int_eq(store_model_fork(s, id, "b-fork", &fork, &err), 0);
    ck_assert_int_eq(store_batch_load_all(s, fork, 2, 1, &rows, &val_rows, &x, &y, NULL, &err), 0);
    ck_assert_int_eq(rows, 1);
    ck_assert_double_eq(x[0], 10.0);
    free(x);
    free(y);
    ck_assert_int_eq(store_model_get(s, fork, &m, &err), 0);
    ck_assert_int_eq(m.rows, 1);
    store_model_clear(&m);
    /* The model's rows go with it; a model left hidden (a crash in a delete) is purged. */
    ck_assert_int_eq(store_model_delete(s, id, &err), 0);
    int64_t purged = -1;
    ck_assert_int_eq(store_models_purge(s, 0, &purged, &err), 0);
    ck_assert_int_eq(purged, 0);
    ck_assert_int_eq(store_batch_stamp(s, id, &stamp, &err), 0);
    ck_assert_int_eq(stamp.batches, 0);
    store_close(s);
}
END_TEST

START_TEST(test_checkpoints_and_fork)
{
    store_t *s = open_store();
    err_t err = {0};
    int64_t id = new_model(s, "c", 2);
    const double at5[2] = {5.0, 5.5}, at9[2] = {9.0, 9.5}, loss = 1.0;
    store_history_row_t rows[9];
    for (int i = 0; i < 9; ++i)
        rows[i] = hist_row(i);
    ck_assert_int_eq(store_params_put(s, id, at5, 2, NULL, 0, 5, &loss, &err), 0);
    ck_assert_int_eq(store_history_append(s, id, rows, 5, &err), 0);
    int64_t cid = 0, cstep = 0;
    ck_assert_int_eq(store_checkpoint_insert(s, id, "five", &cid, &cstep, &err), 0);
    ck_assert_int_eq(cstep, 5);
    ck_assert_int_eq(store_params_put(s, id, at9, 2, NULL, 0, 9, &loss, &err), 0);
    ck_assert_int_eq(store_history_append(s, id, rows + 5, 4, &err), 0);

    store_checkpoint_t *list = NULL;
    int64_t n = 0;
    ck_assert_int_eq(store_checkpoint_list(s, id, &list, &n, &err), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(list[0].id, cid);
    ck_assert_int_eq(list[0].step, 5);
    ck_assert_str_eq(list[0].label, "five");
    store_checkpoint_list_free(list, n);

    /* A fork at step 9 has the parameters, batches and history before step 9. */
    int64_t fork = 0;
    ck_assert_int_eq(store_model_fork(s, id, "c", &fork, &err), ERR_CONFLICT);
    ck_assert_str_eq(err.field, "name");
    ck_assert_int_eq(store_model_fork(s, id, "c2", &fork, &err), 0);
    store_state_t st;
    ck_assert_int_eq(store_params_get(s, fork, &st, &err), 0);
    ck_assert_int_eq(st.step, 9);
    ck_assert_int_eq(memcmp(st.params, at9, sizeof at9), 0);
    store_state_clear(&st);

    int64_t step = 0;
    ck_assert_int_eq(store_checkpoint_restore(s, id, cid, &step, &err), 0);
    ck_assert_int_eq(step, 5);
    ck_assert_int_eq(store_params_get(s, id, &st, &err), 0);
    ck_assert_int_eq(st.step, 5);
    ck_assert_int_eq(memcmp(st.params, at5, sizeof at5), 0);
    ck_assert_int_eq(st.n_optim, 2);
    store_state_clear(&st);
    store_history_row_t *h = NULL;
    int64_t next = 0;
    ck_assert_int_eq(store_history_list(s, id, -1, 100, &h, &n, &next, &err), 0);
    ck_assert_int_eq(n, 5);              /* steps 5.. went with the parameters they described */
    ck_assert_int_eq(h[4].step, 4);
    free(h);
    ck_assert_int_eq(store_history_list(s, fork, -1, 100, &h, &n, &next, &err), 0);
    ck_assert_int_eq(n, 9);              /* the fork keeps its own */
    free(h);

    /* A checkpoint brings back the history it was taken with, not another branch's. */
    store_history_row_t branch[3] = {hist_row(5), hist_row(6), hist_row(7)};
    for (int i = 0; i < 3; ++i)
        branch[i].loss = 100.0 + i;
    ck_assert_int_eq(store_history_append(s, id, branch, 3, &err), 0);
    int64_t cid8 = 0;
    ck_assert_int_eq(store_params_put(s, id, at9, 2, NULL, 0, 8, &loss, &err), 0);
    ck_assert_int_eq(store_checkpoint_insert(s, id, NULL, &cid8, &cstep, &err), 0);
    ck_assert_int_eq(cstep, 8);
    ck_assert_int_eq(store_checkpoint_restore(s, id, cid, &step, &err), 0);
    ck_assert_int_eq(store_history_append(s, id, rows + 5, 4, &err), 0);   /* another branch */
    ck_assert_int_eq(store_checkpoint_restore(s, id, cid8, &step, &err), 0);
    ck_assert_int_eq(step, 8);
    ck_assert_int_eq(store_history_list(s, id, -1, 100, &h, &n, &next, &err), 0);
    ck_assert_int_eq(n, 8);
    ck_assert_double_eq(h[5].loss, 100.0);
    ck_assert_double_eq(h[7].loss, 102.0);
    free(h);

    ck_assert_int_eq(store_checkpoint_restore(s, id, cid + 100, &step, &err), ERR_NOTFOUND);
    ck_assert_str_eq(err.field, "checkpoint_id");
    ck_assert_int_eq(store_checkpoint_restore(s, fork, cid, &step, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_checkpoint_insert(s, 999, NULL, &cid, NULL, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_model_fork(s, 999, NULL, &fork, &err), ERR_NOTFOUND);
    store_close(s);
}
END_TEST

START_TEST(test_jobs)
{
    store_t *s = open_store();
    err_t err = {0};
    int64_t a = new_model(s, "ja", 1), b = new_model(s, "jb", 1);
    int64_t j1 = 0, j2 = 0, j3 = 0, none = -1;
    ck_assert_int_eq(store_job_insert(s, a, "{\"steps\":10}", 10, &j1, &err), 0);
    ck_assert_int_eq(store_job_insert(s, b, "{}", 5, &j2, &err), 0);
    ck_assert_int_eq(store_job_insert(s, a, "{}", 3, &j3, &err), 0);
    ck_assert_int_eq(store_job_insert(s, 999, "{}", 3, &none, &err), ERR_NOTFOUND);
    ck_assert_int_eq(none, 0);

    int64_t r = 0;
    store_job_t j;
    ck_assert_int_eq(store_replica_register(s, "a:1", "1", &r, &err), 0);
    ck_assert_int_eq(store_job_claim(s, r, 60000, &j, &err), 0);   /* j1 runs */
    ck_assert_int_eq(j.id, j1);
    store_job_clear(&j);
    const double loss = 0.75;
    ck_assert_int_eq(store_job_progress(s, j1, 2, 6, 10, &loss, 1.5, &err), 0);
    ck_assert_int_eq(store_job_progress(s, j1, 2, 6, 10, &loss, 2.5, &err), 0);  /* first stays */
    ck_assert_int_eq(store_job_finish(s, j1, r, "succeeded", "{\"ok\":true}", NULL, &err), 0);
    ck_assert_int_eq(store_job_get(s, j1, &j, &err), 0);
    ck_assert_int_eq(j.model_id, a);
    ck_assert_str_eq(j.status, "succeeded");
    ck_assert_int_eq(j.progress_step, 4);
    ck_assert_int_eq(j.has_loss, 1);
    ck_assert_double_eq(j.progress_loss, 0.75);
    ck_assert_int_eq(j.has_start, 1);
    ck_assert_int_eq(j.start_step, 2);
    ck_assert_double_eq(j.loss_before, 1.5);
    ck_assert_str_eq(j.request_json, "{\"steps\":10}");
    ck_assert_str_eq(j.result_json, "{\"ok\":true}");
    ck_assert_ptr_null(j.error);
    store_job_clear(&j);
    ck_assert_int_eq(store_job_get(s, 999, &j, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_job_progress(s, 999, 0, 1, 1, NULL, 0.0, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_job_finish(s, 999, r, "failed", NULL, NULL, &err), ERR_NOTFOUND);

    store_job_t *rows = NULL;
    int64_t n = 0, next = 0;
    ck_assert_int_eq(store_job_list(s, a, NULL, 1, 0, &rows, &n, &next, &err), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(rows[0].id, j1);
    ck_assert_int_eq(next, j1);
    store_job_list_free(rows, n);
    ck_assert_int_eq(store_job_list(s, a, NULL, 1, next, &rows, &n, &next, &err), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(rows[0].id, j3);
    ck_assert_int_eq(next, 0);
    store_job_list_free(rows, n);
    ck_assert_int_eq(store_job_list(s, 0, "queued", 10, 0, &rows, &n, &next, &err), 0);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(rows[0].id, j2);
    store_job_list_free(rows, n);

    int64_t marked = 0;
    ck_assert_int_eq(store_job_claim(s, r, 60000, &j, &err), 0);   /* j2 runs, j3 waits */
    ck_assert_int_eq(j.id, j2);
    store_job_clear(&j);
    ck_assert_int_eq(store_model_set_status(s, b, "training", &err), 0);
    ck_assert_int_eq(store_jobs_mark_interrupted(s, &marked, &err), 0);
    ck_assert_int_eq(marked, 1);
    ck_assert_int_eq(store_job_get(s, j2, &j, &err), 0);
    ck_assert_str_eq(j.status, "failed");
    ck_assert_str_eq(j.error, "interrupted");
    store_job_clear(&j);
    ck_assert_int_eq(store_job_get(s, j3, &j, &err), 0);
    ck_assert_str_eq(j.status, "queued");                        /* never started: it waits */
    store_job_clear(&j);
    store_model_t m;
    ck_assert_int_eq(store_model_get(s, b, &m, &err), 0);
    ck_assert_str_eq(m.status, "idle");
    store_model_clear(&m);
    store_close(s);
}
END_TEST

/* The queue: --max-queue, one job per model, oldest first, jobs of dead replicas claimed again,
 * cancels of queued and running jobs, and an end recorded only by the job's own replica. */
START_TEST(test_job_queue)
{
    store_t *s = open_store();
    err_t err = {0};
    int64_t r1 = 0, r2 = 0;
    ck_assert_int_eq(store_replica_register(s, "a:1", "1", &r1, &err), 0);
    ck_assert_int_eq(store_replica_register(s, "b:1", "1", &r2, &err), 0);
    int64_t a = new_model(s, "qa", 1), b = new_model(s, "qb", 1), c = new_model(s, "qc", 1);
    int64_t ja = 0, jb = 0, jc = 0;
    ck_assert_int_eq(store_job_enqueue(s, a, "{}", 5, 1, 0, &ja, &err), 0);
    ck_assert_int_eq(store_job_enqueue(s, a, "{}", 5, 9, 1, &jb, &err), ERR_CONFLICT);
    ck_assert_int_eq(store_model_check_idle(s, a, &err), ERR_CONFLICT);
    ck_assert_int_eq(store_job_enqueue(s, b, "{}", 5, 1, 0, &jb, &err), ERR_BUSY);
    ck_assert_int_eq(jb, 0);
    ck_assert_int_eq(store_job_enqueue(s, b, "{}", 5, 1, 1, &jb, &err), 0);  /* a free slot */
    ck_assert_int_eq(store_job_enqueue(s, 999, "{}", 5, 9, 1, &jc, &err), ERR_NOTFOUND);

    store_job_t j;
    ck_assert_int_eq(store_job_claim(s, r1, 60000, &j, &err), 0);
    ck_assert_int_eq(j.id, ja);                            /* oldest first */
    store_job_clear(&j);
    ck_assert_int_eq(store_job_claim(s, r2, 60000, &j, &err), 0);
    ck_assert_int_eq(j.id, jb);
    store_job_clear(&j);
    ck_assert_int_eq(store_job_claim(s, r2, 60000, &j, &err), 0);
    ck_assert_int_eq(j.id, 0);                             /* both taken, by live replicas */
    store_job_clear(&j);

    /* r1 goes silent: its job is claimable once its heartbeat is older than the lease. */
    ck_assert_int_eq(store_job_progress(s, ja, 0, 3, 5, &(double){0.5}, 2.0, &err), 0);
    usleep(30000);
    ck_assert_int_eq(store_replica_heartbeat(s, r2, 60000, NULL, &err), 0);
    ck_assert_int_eq(store_job_claim(s, r2, 20, &j, &err), 0);
    ck_assert_int_eq(j.id, ja);
    ck_assert_int_eq(j.replica_id, r2);
    ck_assert_int_eq(j.has_start, 1);
    ck_assert_int_eq(j.progress_step, 3);
    store_job_clear(&j);
    ck_assert_int_eq(store_job_finish(s, ja, r1, "succeeded", "{}", NULL, &err), ERR_NOTFOUND);

    /* Cancels: running -> requested; queued -> cancelled now; ended -> unchanged. */
    ck_assert_int_eq(store_job_cancel_request(s, ja, 60000, &err), 0);
    int64_t *ids = NULL, n = 0;
    ck_assert_int_eq(store_jobs_cancel_requested(s, r2, &ids, &n, &err), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ids[0], ja);
    free(ids);
    ck_assert_int_eq(store_job_enqueue(s, c, "{}", 5, 9, 0, &jc, &err), 0);
    ck_assert_int_eq(store_job_cancel_request(s, jc, 60000, &err), 0);
    ck_assert_int_eq(store_job_get(s, jc, &j, &err), 0);
    ck_assert_str_eq(j.status, "cancelled");
    store_job_clear(&j);
    ck_assert_int_eq(store_job_cancel_request(s, jc, 60000, &err), 0);
    ck_assert_int_eq(store_job_cancel_request(s, 999, 60000, &err), ERR_NOTFOUND);

    /* Back to the queue: no replica, claimable again, its start kept. */
    ck_assert_int_eq(store_job_finish(s, ja, r2, "queued", NULL, NULL, &err), 0);
    ck_assert_int_eq(store_job_get(s, ja, &j, &err), 0);
    ck_assert_str_eq(j.status, "queued");
    ck_assert_int_eq(j.replica_id, 0);
    ck_assert_int_eq(j.start_step, 0);
    store_job_clear(&j);
    store_close(s);
}
END_TEST

/* Replica ids of `s`'s live list at `lease_ms`, as a bit set of the ids 1..63. */
static uint64_t live_replicas(store_t *s, int64_t lease_ms)
{
    store_replica_t *rows = NULL;
    int64_t n = 0;
    err_t err = {0};
    ck_assert_int_eq(store_replica_list(s, lease_ms, &rows, &n, &err), 0);
    uint64_t set = 0;
    for (int64_t i = 0; i < n; ++i) {
        ck_assert(rows[i].id > 0 && rows[i].id < 64);
        set |= (uint64_t)1 << rows[i].id;
    }
    free(rows);
    return set;
}

/* After an outage every heartbeat is stale, the live replicas' as well as a dead one's. Each
 * replica (a store of its own, as a process has) that finds its own heartbeat older than the
 * lease takes nobody for dead, and claims no running job, for one lease; by then the live ones
 * have beaten, and only the dead one is removed and its job resumed. A claim is a heartbeat
 * too, and a replica whose row is gone claims nothing. */
START_TEST(test_outage_judges_nobody_dead_for_a_lease)
{
    /* ms; heartbeats every 400 ms stay 200 ms under two thirds of it, the outage and the
     * three beats after it end 200 and 300 ms past it. */
    enum { LEASE = 900 };
    store_t *s1 = open_store(), *s2 = open_store(), *s3 = open_store();
    err_t err = {0};
    int64_t r1 = 0, r2 = 0, r3 = 0, removed = -1;
    ck_assert_int_eq(store_replica_register(s1, "a:1", "1", &r1, &err), 0);
    ck_assert_int_eq(store_replica_register(s2, "b:1", "1", &r2, &err), 0);
    ck_assert_int_eq(store_replica_register(s3, "c:1", "1", &r3, &err), 0);
    ck_assert_int_eq(store_replica_judge_from(s1), 0);
    int64_t a = new_model(s1, "oa", 1), b = new_model(s1, "ob", 1), ja = 0, jb = 0;
    ck_assert_int_eq(store_job_enqueue(s3, a, "{}", 5, 9, 1, &ja, &err), 0);
    store_job_t j;
    ck_assert_int_eq(store_job_claim(s3, r3, LEASE, &j, &err), 0);
    ck_assert_int_eq(j.id, ja);
    store_job_clear(&j);

    usleep(1100000);    /* the outage; r3 dies in it */
    const int64_t back = store__now_ms();
    ck_assert_int_eq(store_job_claim(s1, r1, LEASE, &j, &err), 0);
    ck_assert_int_eq(j.id, 0);                       /* r3 may only be late */
    store_job_clear(&j);
    ck_assert_int_ge(store_replica_judge_from(s1), back + LEASE);
    ck_assert_int_eq(live_replicas(s2, LEASE), (uint64_t)1 << r1);   /* the claim beat */
    const uint64_t all = ((uint64_t)1 << r1) | ((uint64_t)1 << r2) | ((uint64_t)1 << r3);
    ck_assert_int_eq(live_replicas(s1, LEASE), all);   /* r1 lists them all for now */
    ck_assert_int_eq(store_replica_heartbeat(s1, r1, LEASE, &removed, &err), 0);
    ck_assert_int_eq(removed, 0);
    ck_assert_int_eq(store_replica_heartbeat(s2, r2, LEASE, &removed, &err), 0);
    ck_assert_int_eq(removed, 0);
    ck_assert_int_ge(store_replica_judge_from(s2), back + LEASE);

    usleep(400000);     /* both beat within the lease, r3 does not */
    ck_assert_int_eq(store_replica_heartbeat(s1, r1, LEASE, &removed, &err), 0);
    ck_assert_int_eq(store_replica_heartbeat(s2, r2, LEASE, &removed, &err), 0);
    ck_assert_int_eq(removed, 0);
    ck_assert_int_eq(store_job_get(s1, ja, &j, &err), 0);
    ck_assert_str_eq(j.status, "running");
    ck_assert_int_eq(j.replica_id, r3);
    store_job_clear(&j);

    usleep(400000);
    ck_assert_int_eq(store_replica_heartbeat(s1, r1, LEASE, &removed, &err), 0);
    ck_assert_int_eq(store_replica_heartbeat(s2, r2, LEASE, &removed, &err), 0);
    ck_assert_int_eq(removed, 0);

    usleep(400000);     /* a lease since the outage: r1 judges again, r3 alone is dead */
    ck_assert_int_eq(store_replica_heartbeat(s1, r1, LEASE, &removed, &err), 0);
    ck_assert_int_eq(removed, 1);
    ck_assert_int_eq(live_replicas(s1, 60000), ((uint64_t)1 << r1) | ((uint64_t)1 << r2));
    ck_assert_int_eq(store_job_claim(s2, r2, LEASE, &j, &err), 0);
    ck_assert_int_eq(j.id, ja);                      /* resumed by the first to look */
    ck_assert_int_eq(j.replica_id, r2);
    store_job_clear(&j);
    ck_assert_int_eq(store_job_claim(s1, r1, LEASE, &j, &err), 0);
    ck_assert_int_eq(j.id, 0);                       /* r2 is alive: it just claimed */
    store_job_clear(&j);

    ck_assert_int_eq(store_job_enqueue(s1, b, "{}", 5, 9, 0, &jb, &err), 0);
    ck_assert_int_eq(store_job_claim(s3, r3, 60000, &j, &err), 0);
    ck_assert_int_eq(j.id, 0);                       /* r3's row is gone */
    store_job_clear(&j);
    ck_assert_int_eq(store_job_get(s1, jb, &j, &err), 0);
    ck_assert_str_eq(j.status, "queued");
    store_job_clear(&j);
    ck_assert_int_eq(store_job_claim(s1, r1, 60000, &j, &err), 0);
    ck_assert_int_eq(j.id, jb);
    store_job_clear(&j);
    ck_assert_int_eq(store_replica_heartbeat(s3, r3, LEASE, NULL, &err), ERR_NOTFOUND);
    store_close(s3);
    store_close(s2);
    store_close(s1);
}
END_TEST

/* A heartbeat that fails (the database away: here, locked past the busy timeout) withholds
 * judgment for a lease as well: other replicas' beats failed too. Only when the lease from
 * the failure has passed is a silent replica removed. */
START_TEST(test_failed_heartbeat_withholds_judgment)
{
    enum { LEASE = 900 };
    store_t *s1 = open_store();
    setenv("NEUROND_BUSY_TIMEOUT_MS", "50", 1);
    store_t *s2 = open_store();
    unsetenv("NEUROND_BUSY_TIMEOUT_MS");
    err_t err = {0};
    int64_t silent = 0, r = 0, removed = -1;
    ck_assert_int_eq(store_replica_register(s1, "a:1", "1", &silent, &err), 0);
    usleep(400000);
    ck_assert_int_eq(store_replica_register(s2, "b:1", "1", &r, &err), 0);
    db_t *other = NULL;
    db_conn_t *c = NULL;
    ck_assert_int_eq(db_open(path, DB_OPEN_EXISTING, &(db_config_t){.busy_ms = 50}, &other, &err), 0);
    ck_assert_int_eq(db_conn(other, &c, &err), 0);
    ck_assert_int_eq(db_begin(c, DB_TX_WRITE, &err), 0);
    const int64_t failed = store__now_ms();
    ck_assert_int_eq(store_replica_heartbeat(s2, r, LEASE, &removed, &err), ERR_UNAVAILABLE);
    ck_assert_int_ge(store_replica_judge_from(s2), failed + LEASE);
    db_rollback(c);
    db_close(other);

    usleep(400000);
    ck_assert_int_eq(store_replica_heartbeat(s2, r, LEASE, &removed, &err), 0);
    ck_assert_int_eq(removed, 0);
    usleep(250000);     /* the silent replica is 1100 ms old, r's own heartbeat 250 ms */
    ck_assert_int_eq(store_replica_heartbeat(s2, r, LEASE, &removed, &err), 0);
    ck_assert_int_eq(removed, 0);
    usleep(400000);     /* a lease since the failure */
    ck_assert_int_eq(store_replica_heartbeat(s2, r, LEASE, &removed, &err), 0);
    ck_assert_int_eq(removed, 1);
    ck_assert_int_eq(store_replica_heartbeat(s1, silent, LEASE, NULL, &err), ERR_NOTFOUND);
    store_close(s2);
    store_close(s1);
}
END_TEST

/* PRAGMA synchronous of `c`: 1 NORMAL, 2 FULL. */
static int64_t pragma_synchronous(db_conn_t *c)
{
    db_stmt_t *st = NULL;
    err_t err = {0};
    ck_assert_int_eq(db_prepare(c, "PRAGMA synchronous", &st, &err), 0);
    ck_assert_int_eq(db_step(st, "reading", &err), DB_ROW);
    int64_t v = db_column_int64(st, 0);
    db_stmt_done(st);
    return v;
}

/* Replica rows: registering, heartbeats that delete the dead, the live list with its running
 * jobs, and a job keeping the replica that took it. */
START_TEST(test_replicas)
{
    store_t *s = open_store();
    err_t err = {0};
    int64_t r1 = 0, r2 = 0, removed = -1;
    ck_assert_int_eq(store_replica_register(s, "10.0.0.1:8080", "1.0.0", &r1, &err), 0);
    ck_assert_int_eq(store_replica_register(s, "[::1]:9000", "1.0.1", &r2, &err), 0);
    ck_assert_int_gt(r2, r1);
    int64_t model = new_model(s, "rm", 1), job = 0;
    ck_assert_int_eq(store_job_insert(s, model, "{}", 5, &job, &err), 0);
    store_job_t j;
    ck_assert_int_eq(store_job_get(s, job, &j, &err), 0);
    ck_assert_int_eq(j.replica_id, 0);                    /* queued: no replica */
    store_job_clear(&j);
    ck_assert_int_eq(store_job_claim(s, r2, 60000, &j, &err), 0);
    ck_assert_int_eq(j.id, job);
    ck_assert_str_eq(j.status, "running");
    ck_assert_int_eq(j.replica_id, r2);
    store_job_clear(&j);

    store_replica_t *rows = NULL;
    int64_t n = 0;
    ck_assert_int_eq(store_replica_list(s, 60000, &rows, &n, &err), 0);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(rows[0].id, r1);
    ck_assert_str_eq(rows[0].address, "10.0.0.1:8080");
    ck_assert_str_eq(rows[0].version, "1.0.0");
    ck_assert_int_eq(rows[0].jobs_running, 0);
    ck_assert_int_eq(rows[1].id, r2);
    ck_assert_str_eq(rows[1].address, "[::1]:9000");
    ck_assert_int_eq(rows[1].jobs_running, 1);
    ck_assert_int_eq((int)strlen(rows[1].started_at), 24);
    free(rows);

    /* r2 stops beating while r1 beats every 250 ms, in time for a 600 ms lease (a third of it
     * late at most: store_replica_heartbeat): once r2's heartbeat is older than the lease, r1's
     * next one deletes its row, and the list hides it; its job keeps naming it. */
    for (int beat = 0; beat < 3; ++beat) {
        ck_assert_int_eq(store_replica_heartbeat(s, r1, 600, &removed, &err), 0);
        ck_assert_int_eq(removed, 0);
        usleep(250000);
    }
    ck_assert_int_eq(store_replica_list(s, 600, &rows, &n, &err), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(rows[0].id, r1);
    free(rows);
    ck_assert_int_eq(store_replica_heartbeat(s, r1, 600, &removed, &err), 0);
    ck_assert_int_eq(removed, 1);
    ck_assert_int_eq(store_replica_list(s, 60000, &rows, &n, &err), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(rows[0].id, r1);
    free(rows);
    ck_assert_int_eq(store_replica_heartbeat(s, r2, 60000, NULL, &err), ERR_NOTFOUND);
    ck_assert_int_eq(store_job_get(s, job, &j, &err), 0);
    ck_assert_str_eq(j.status, "running");
    ck_assert_int_eq(j.replica_id, r2);
    store_job_clear(&j);

    /* Leases: one owner at a time, a growing epoch, and a check that fails once taken over. A
     * take commits without a sync on SQLite, and leaves this thread's connection syncing again
     * whether it succeeded or not. */
    db_conn_t *conn = NULL;
    ck_assert_int_eq(store__conn(s, &conn, &err), 0);
    int64_t e1 = 0, e2 = 0, e3 = 0;
    ck_assert_int_eq(store_lease_take(s, model, r1, 60000, &e1, &err), 0);
    ck_assert_int_eq(pragma_synchronous(conn), 2);
    ck_assert_int_eq(e1, 1);
    ck_assert_int_eq(store_lease_check(s, model, r1, e1, &err), 0);
    ck_assert_int_eq(store_lease_take(s, model, r2, 60000, &e2, &err), ERR_CONFLICT);
    ck_assert_int_eq(pragma_synchronous(conn), 2);
    ck_assert_int_eq(store_lease_take(s, 999, r1, 60000, &e2, &err), ERR_NOTFOUND);
    ck_assert_int_eq(pragma_synchronous(conn), 2);
    ck_assert_int_eq(store_lease_take(s, model, r1, -1, &e2, &err), 0);   /* retaken, expired */
    ck_assert_int_eq(e2, 2);
    ck_assert_int_eq(store_lease_check(s, model, r1, e1, &err), ERR_CONFLICT);
    usleep(2000);
    ck_assert_int_eq(store_lease_take(s, model, r2, 60000, &e3, &err), 0);  /* taken over */
    ck_assert_int_eq(e3, 3);
    ck_assert_int_eq(store_lease_check(s, model, r1, e2, &err), ERR_CONFLICT);
    ck_assert_int_eq(store_lease_check(s, model, r2, e3, &err), 0);

    /* A clean shutdown deletes its own row; a new one never gets an old id. */
    ck_assert_int_eq(store_replica_remove(s, r1, &err), 0);
    ck_assert_int_eq(store_replica_list(s, 60000, &rows, &n, &err), 0);
    ck_assert_int_eq(n, 0);
    ck_assert_ptr_null(rows);
    int64_t r3 = 0;
    ck_assert_int_eq(store_replica_register(s, "h:1", "1", &r3, &err), 0);
    ck_assert_int_gt(r3, r2);
    store_close(s);
}
END_TEST

START_TEST(test_transactions_and_busy)
{
    setenv("NEUROND_BUSY_TIMEOUT_MS", "50", 1);
    store_t *s = open_store();
    err_t err = {0};
    int64_t id = new_model(s, "t", 1);
    /* A caller's transaction groups writes; a rollback undoes them all. */
    ck_assert_int_eq(store_begin(s, &err), 0);
    ck_assert_int_eq(store_begin(s, &err), ERR_INTERNAL);
    const double p = 3.0;
    ck_assert_int_eq(store_params_put(s, id, &p, 1, NULL, 0, 3, NULL, &err), 0);
    store_history_row_t r = hist_row(0);
    ck_assert_int_eq(store_history_append(s, id, &r, 1, &err), 0);
    store_rollback(s);
    store_state_t st;
    ck_assert_int_eq(store_params_get(s, id, &st, &err), 0);
    ck_assert_int_eq(st.step, 0);
    ck_assert_double_eq(st.params[0], 0.5);
    store_state_clear(&st);

    /* Another connection holding the write lock past the busy timeout: ERR_UNAVAILABLE. */
    db_t *other = NULL;
    db_conn_t *c = NULL;
    ck_assert_int_eq(db_open(path, DB_OPEN_EXISTING, &(db_config_t){.busy_ms = 50}, &other, &err), 0);
    ck_assert_int_eq(db_conn(other, &c, &err), 0);
    ck_assert_int_eq(db_begin(c, DB_TX_WRITE, &err), 0);
    ck_assert_int_eq(store_params_put(s, id, &p, 1, NULL, 0, 3, NULL, &err), ERR_UNAVAILABLE);
    ck_assert_int_eq(store_model_delete(s, id, &err), ERR_UNAVAILABLE);
    ck_assert_int_eq(store_failed_busy(), 1);
    /* A read transaction takes no lock: it reads one snapshot while the other holds it. */
    ck_assert_int_eq(store_begin_read(s, &err), 0);
    ck_assert_int_eq(store_params_get(s, id, &st, &err), 0);
    store_state_clear(&st);
    store_rollback(s);
    db_rollback(c);
    db_close(other);
    ck_assert_int_eq(store_begin(s, &err), 0);
    ck_assert_int_eq(store_failed_busy(), 0);
    store_rollback(s);
    ck_assert_int_eq(store_params_put(s, id, &p, 1, NULL, 0, 3, NULL, &err), 0);
    store_close(s);
    unsetenv("NEUROND_BUSY_TIMEOUT_MS");

    /* A value over the storage's length limit is ERR_TOOBIG, and nothing is written. */
    setenv("NEUROND_SQLITE_MAX_LENGTH", "1000", 1);
    s = open_store();
    double *big = calloc(200, sizeof *big);
    ck_assert_ptr_nonnull(big);
    ck_assert_int_eq(store_params_put(s, id, big, 200, NULL, 0, 9, NULL, &err), ERR_TOOBIG);
    free(big);
    ck_assert_int_eq(store_params_get(s, id, &st, &err), 0);
    ck_assert_int_eq(st.step, 3);
    store_state_clear(&st);
    store_close(s);
    unsetenv("NEUROND_SQLITE_MAX_LENGTH");

    setenv("NEUROND_BUSY_TIMEOUT_MS", "soon", 1);
    ck_assert_int_eq(store_open(path, &s, &err), ERR_INVAL);
    unsetenv("NEUROND_BUSY_TIMEOUT_MS");
}
END_TEST

/* `path` with the store's schema, opened through the driver alone. */
static db_t *open_schema_db(void)
{
    store_t *s = open_store();       /* creates the schema */
    store_close(s);
    db_t *db = NULL;
    err_t err = {0};
    ck_assert_int_eq(db_open(path, DB_OPEN_EXISTING, &(db_config_t){.busy_ms = 1000}, &db, &err), 0);
    return db;
}

START_TEST(test_driver_binds)
{
    db_t *db = open_schema_db();
    db_conn_t *c = NULL;
    db_stmt_t *st = NULL;
    err_t err = {0};
    static const char sql[] = "SELECT ?1, ?2, ?3, ?4, ?5";
    ck_assert_int_eq(db_conn(db, &c, &err), 0);
    ck_assert_int_eq(db_prepare(c, sql, &st, &err), 0);
    const unsigned char blob[3] = {1, 2, 3};
    const db_value_t v[5] = {DB_INT(-7), DB_DOUBLE(NAN), DB_TEXT("abc"), DB_BLOB(blob, 3),
                             DB_TEXT(NULL)};
    ck_assert_int_eq(db_bind_values(st, v, 5, &err), 0);
    /* A parameter the statement does not have is an error the caller sees. */
    ck_assert_int_eq(db_bind_int64(st, 6, 1, &err), ERR_DB);
    ck_assert_int_eq(db_step(st, "reading", &err), DB_ROW);
    ck_assert_int_eq(db_column_int64(st, 0), -7);
    ck_assert_int_eq(db_column_is_null(st, 1), 1);    /* NaN binds NULL */
    ck_assert_str_eq(db_column_text(st, 2), "abc");
    int64_t bytes = 0;
    const unsigned char *got = db_column_blob(st, 3, &bytes);
    ck_assert_int_eq(bytes, 3);
    ck_assert_int_eq(got[2], 3);
    ck_assert_ptr_null(db_column_text(st, 4));
    ck_assert_int_eq(db_step(st, "reading", &err), DB_DONE);
    db_stmt_done(st);
    ck_assert_str_eq(db_dialect(db), "sqlite");
    /* Durability: a relaxed connection commits without a sync (synchronous=NORMAL, 1) and is
     * FULL (2) again when restored; SQLite's database dies with the process that embeds it. */
    ck_assert_int_eq(db_conn_embedded(c), 1);
    ck_assert_int_eq(pragma_synchronous(c), 2);
    ck_assert_int_eq(db_set_durable(c, 0, &err), 0);
    ck_assert_int_eq(pragma_synchronous(c), 1);
    ck_assert_int_eq(db_set_durable(c, 1, &err), 0);
    ck_assert_int_eq(pragma_synchronous(c), 2);
    /* A unique key taken is ERR_CONFLICT, a missing parent ERR_NOTFOUND... */
    ck_assert_int_eq(db_exec(c, "PRAGMA foreign_keys=ON", "configuring", &err), 0);
    ck_assert_int_eq(db_exec(c, "INSERT INTO meta(key, value) VALUES ('k', 'v')", "w", &err), 0);
    ck_assert_int_eq(db_exec(c, "INSERT INTO meta(key, value) VALUES ('k', 'v')", "w", &err),
                     ERR_CONFLICT);
    ck_assert_int_eq(db_exec(c, "INSERT INTO parameters(model_id, data) VALUES (999, x'')", "w",
                             &err), ERR_NOTFOUND);
    /* ...and SQL that is wrong is ERR_DB, naming what was being done. */
    ck_assert_int_eq(db_exec(c, "SELECT nonsense FROM nowhere", "probing", &err), ERR_DB);
    ck_assert_ptr_nonnull(strstr(err.msg, "probing"));
    db_close(db);
}
END_TEST

START_TEST(test_backup)
{
    store_t *s = open_store();
    err_t err = {0};
    int64_t id = new_model(s, "bk", 2);
    char out[160];
    snprintf(out, sizeof out, "%s/copy.db", dir);
    ck_assert_int_eq(store_backup(s, out, &err), 0);
    ck_assert_int_eq(store_backup(s, out, &err), ERR_CONFLICT);
    store_close(s);
    char again[160];
    snprintf(again, sizeof again, "%s/copy2.db", dir);
    int version = 0;
    ck_assert_int_eq(store_backup_file(out, again, &version, &err), 0);
    ck_assert_int_eq(version, SCHEMA_LATEST);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing.db", dir);
    ck_assert_int_eq(store_backup_file(missing, again, NULL, &err), ERR_NOTFOUND);
    /* The copy is a whole database: open it as the store and read the model. */
    snprintf(path, sizeof path, "%s", again);
    s = open_store();
    store_model_t m;
    ck_assert_int_eq(store_model_get(s, id, &m, &err), 0);
    ck_assert_str_eq(m.name, "bk");
    store_model_clear(&m);
    store_close(s);
}
END_TEST

/* ---- per-thread connections ---- */

#define POOL_THREADS 10            /* more than the idle connections a database keeps */

typedef struct pool_probe {
    db_t *db;
    pthread_barrier_t *all_hold;   /* every thread holds its connection at once */
    int open_tx;                   /* end the thread inside a write transaction */
    db_conn_t *conn;               /* the connection the thread got */
    int64_t reused;                /* 1: it was marked by an earlier thread */
    int rc;
} pool_probe_t;

/* *n = the first column of `sql`'s one row, `key` bound to ?1; 0 or an error. */
static int count_rows(db_conn_t *c, const char *sql, const char *key, int64_t *n)
{
    db_stmt_t *st = NULL;
    err_t err = {0};
    int rc = db_prepare(c, sql, &st, &err);
    if (rc == 0)
        rc = db_bind_text(st, 1, key, &err);
    if (rc == 0)
        rc = db_step(st, "counting", &err) == DB_ROW ? 0 : -1;
    if (rc == 0)
        *n = db_column_int64(st, 0);
    db_stmt_done(st);
    return rc;
}

static const char sql_marked[] = "SELECT COUNT(*) FROM sqlite_temp_master WHERE name = ?1";

/* A temporary table lives as long as its connection: it marks one that a thread used. */
static void *pool_probe_run(void *arg)
{
    pool_probe_t *p = arg;
    err_t err = {0};
    db_conn_t *again = NULL;
    p->rc = db_conn(p->db, &p->conn, &err);
    if (p->rc == 0)
        p->rc = db_conn(p->db, &again, &err);
    if (p->rc == 0 && again != p->conn)
        p->rc = -100;              /* a thread keeps one connection */
    if (p->rc == 0)
        p->rc = count_rows(p->conn, sql_marked, "pool_mark", &p->reused);
    if (p->rc == 0)
        p->rc = db_exec(p->conn, "CREATE TEMP TABLE IF NOT EXISTS pool_mark(x)", "marking",
                        &err);
    if (p->rc == 0 && p->open_tx) {
        p->rc = db_begin(p->conn, DB_TX_WRITE, &err);
        if (p->rc == 0)
            p->rc = db_exec(p->conn, "INSERT INTO meta(key, value) VALUES ('ended', 'x')",
                            "writing", &err);
    }
    if (p->all_hold != NULL)
        pthread_barrier_wait(p->all_hold);
    db_thread_end(p->db);
    return NULL;
}

static void pool_probe_join(pool_probe_t *probes, int n)
{
    pthread_t th[POOL_THREADS];
    for (int i = 0; i < n; ++i)
        ck_assert_int_eq(pthread_create(&th[i], NULL, pool_probe_run, &probes[i]), 0);
    for (int i = 0; i < n; ++i) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(probes[i].rc, 0);
    }
}

static int64_t meta_rows(db_conn_t *c, const char *key)
{
    static const char sql[] = "SELECT COUNT(*) FROM meta WHERE key = ?1";
    int64_t n = -1;
    ck_assert_int_eq(count_rows(c, sql, key, &n), 0);
    return n;
}

START_TEST(test_conn_per_thread)
{
    err_t err = {0};
    db_t *db = open_schema_db();
    db_conn_t *mine = NULL;
    ck_assert_int_eq(db_conn(db, &mine, &err), 0);
    db_conn_t *c = NULL;
    ck_assert_int_eq(db_conn(db, &c, &err), 0);
    ck_assert_ptr_eq(c, mine);

    /* Another thread gets a connection of its own; one that ends in a write transaction has
     * it rolled back, so nothing is half-written and the write lock is free again. */
    pool_probe_t first = {.db = db, .open_tx = 1};
    pool_probe_join(&first, 1);
    ck_assert_ptr_ne(first.conn, mine);
    ck_assert_int_eq(first.reused, 0);
    ck_assert_int_eq(meta_rows(mine, "ended"), 0);
    ck_assert_int_eq(db_begin(mine, DB_TX_WRITE, &err), 0);
    db_rollback(mine);

    /* The next thread reuses the ended thread's connection. */
    pool_probe_t next = {.db = db};
    pool_probe_join(&next, 1);
    ck_assert_int_eq(next.reused, 1);

    /* Threads at once get distinct connections; those past the idle limit are freed at their
     * end (the sanitizer build sees a leak otherwise), the rest are kept for later threads. */
    pthread_barrier_t all_hold;
    ck_assert_int_eq(pthread_barrier_init(&all_hold, NULL, POOL_THREADS), 0);
    pool_probe_t many[POOL_THREADS];
    for (int i = 0; i < POOL_THREADS; ++i)
        many[i] = (pool_probe_t){.db = db, .all_hold = &all_hold};
    pool_probe_join(many, POOL_THREADS);
    pthread_barrier_destroy(&all_hold);
    for (int i = 0; i < POOL_THREADS; ++i) {
        ck_assert_ptr_ne(many[i].conn, mine);
        for (int j = 0; j < i; ++j)
            ck_assert_ptr_ne(many[i].conn, many[j].conn);
    }
    int64_t n_reused = 0;
    for (int i = 0; i < POOL_THREADS; ++i)
        n_reused += many[i].reused;
    ck_assert_int_eq(n_reused, 1);   /* the one kept idle before */
    pool_probe_join(&next, 1);
    ck_assert_int_eq(next.reused, 1);

    /* One thread on two databases: each call answers with a connection of the database
     * asked for, which works. */
    db_t *other = NULL;
    db_conn_t *oc = NULL;
    ck_assert_int_eq(db_open(path, DB_OPEN_EXISTING, &(db_config_t){.busy_ms = 1000}, &other, &err), 0);
    ck_assert_int_eq(db_conn(other, &oc, &err), 0);
    ck_assert_int_eq(db_conn(db, &c, &err), 0);
    ck_assert_ptr_ne(c, oc);
    ck_assert_int_eq(meta_rows(c, "ended"), 0);
    ck_assert_int_eq(db_conn(other, &oc, &err), 0);
    ck_assert_int_eq(meta_rows(oc, "ended"), 0);
    db_close(other);
    db_close(db);
}
END_TEST

/* Create `path` as a database holding `script`, through the driver, without migrating it. */
static void load_script(const char *script)
{
    db_t *db = NULL;
    db_conn_t *c = NULL;
    err_t err = {0};
    ck_assert_msg(db_open(path, DB_OPEN_SERVE, &(db_config_t){.busy_ms = 1000}, &db, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(db_conn(db, &c, &err), 0);
    ck_assert_msg(db_exec(c, script, "loading", &err) == 0, "%s", err.msg);
    db_close(db);
}

START_TEST(test_upgrade_from_schema1)
{
    const char *init = NULL;
    for (const embedded_file_t *f = embedded_files; f->path != NULL; ++f)
        if (strcmp(f->path, "schema/sqlite/001_init.sql") == 0)
            init = (const char *)f->data;
    ck_assert_ptr_nonnull(init);
    load_script("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TEXT NOT NULL);"
                "INSERT INTO schema_version VALUES (1, 'schema/001_init.sql',"
                " '2026-11-28T04:36:37.123Z');");
    load_script(init);
    load_script("INSERT INTO models(id, name, kind, spec_json, step, created_at, updated_at)"
                " VALUES (1, 'v1', 'linear', '{}', 4, '2026-11-28T04:36:37.123Z',"
                " '2026-11-28T04:36:37.123Z');"
                "INSERT INTO parameters VALUES (1, x'000000000000f03f');"
                "INSERT INTO history VALUES (1, 0, 4.0, 2.0, 0.1, '2026-11-28T04:36:37.123Z'),"
                " (1, 1, 3.0, NULL, 0.1, '2026-11-28T04:36:37.123Z'),"
                " (1, 2, 2.0, 1.0, 0.1, '2026-11-28T04:36:38.000Z'),"
                " (1, 3, 1.0, 0.5, 0.05, '2026-11-28T04:36:38.000Z');");
    store_t *s = open_store();
    ck_assert_int_eq(store_schema_version(s), SCHEMA_LATEST);
    err_t err = {0};
    store_history_row_t *h = NULL;
    int64_t n = 0, next = 0;
    ck_assert_int_eq(store_history_list(s, 1, -1, 100, &h, &n, &next, &err), 0);
    ck_assert_int_eq(n, 4);
    ck_assert_double_eq(h[0].loss, 4.0);
    ck_assert_msg(isnan(h[1].grad_norm), "a NULL grad_norm reads as NaN");
    ck_assert_str_eq(h[1].at, "2026-11-28T04:36:37.123Z");
    ck_assert_str_eq(h[2].at, "2026-11-28T04:36:38.000Z");
    ck_assert_double_eq(h[3].learning_rate, 0.05);
    free(h);
    store_state_t st;
    ck_assert_int_eq(store_params_get(s, 1, &st, &err), 0);
    ck_assert_double_eq(st.params[0], 1.0);
    ck_assert_int_eq(st.n_optim, 0);
    store_state_clear(&st);
    store_close(s);
}
END_TEST

static char *read_fixture(const char *name)
{
    char file[512];
    snprintf(file, sizeof file, "%s/%s", NEUROND_TEST_FIXTURES, name);
    FILE *f = fopen(file, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", file);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    ck_assert_int_gt(size, 0);
    rewind(f);
    char *text = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(fread(text, 1, (size_t)size, f), (size_t)size);
    text[size] = '\0';
    fclose(f);
    return text;
}

START_TEST(test_upgrade_from_earlier_release)
{
    char *dump = read_fixture("schema2-db.sql");
    load_script(dump);
    free(dump);
    store_t *s = open_store();
    ck_assert_int_eq(store_schema_version(s), SCHEMA_LATEST);
    err_t err = {0};
    store_model_t *models = NULL;
    int64_t n = 0, next = 0;
    ck_assert_int_eq(store_model_list(s, 10, 0, &models, &n, &next, &err), 0);
    ck_assert_int_eq(n, 3);
    ck_assert_str_eq(models[0].name, "old-0");
    ck_assert_int_eq(models[0].step, 25);
    ck_assert_int_eq(models[0].rows, 50);
    ck_assert_double_eq(models[0].loss, 0.067975962774099);
    store_model_list_free(models, n);
    store_state_t st;
    ck_assert_int_eq(store_params_get(s, 1, &st, &err), 0);
    ck_assert_int_eq(st.n_params, 4);
    ck_assert_double_eq(st.params[0], 0.1981594132345738);
    ck_assert_double_eq(st.params[3], 0.1910423958466989);
    store_state_clear(&st);
    store_history_row_t *h = NULL;
    ck_assert_int_eq(store_history_list(s, 1, -1, 100, &h, &n, &next, &err), 0);
    ck_assert_int_eq(n, 25);
    ck_assert_int_eq(h[24].step, 24);
    free(h);
    int64_t rows = 0, val_rows = -1;
    double *x = NULL, *y = NULL;
    ck_assert_int_eq(store_batch_load_all(s, 1, 3, 1, &rows, &val_rows, &x, &y, NULL, &err), 0);
    ck_assert_int_eq(rows, 50);
    free(x);
    free(y);
    /* It keeps working: a training commit, a restore, a new model after the old ids. */
    const double theta[4] = {1, 2, 3, 4}, loss = 0.5;
    ck_assert_int_eq(store_params_put(s, 1, theta, 4, NULL, 0, 26, &loss, &err), 0);
    store_history_row_t r = hist_row(25);
    ck_assert_int_eq(store_history_append(s, 1, &r, 1, &err), 0);
    int64_t step = 0;
    ck_assert_int_eq(store_checkpoint_restore(s, 1, 1, &step, &err), 0);
    ck_assert_int_eq(step, 20);
    ck_assert_int_eq(new_model(s, "new", 1), 4);
    store_close(s);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_open_migrates);
    tcase_add_test(tc, test_model_rows);
    tcase_add_test(tc, test_model_list_pages);
    tcase_add_test(tc, test_params_roundtrip);
    tcase_add_test(tc, test_history);
    tcase_add_test(tc, test_batches);
    tcase_add_test(tc, test_checkpoints_and_fork);
    tcase_add_test(tc, test_jobs);
    tcase_add_test(tc, test_replicas);
    tcase_add_test(tc, test_job_queue);
    tcase_add_test(tc, test_outage_judges_nobody_dead_for_a_lease);
    tcase_add_test(tc, test_failed_heartbeat_withholds_judgment);
    tcase_add_test(tc, test_transactions_and_busy);
    tcase_add_test(tc, test_driver_binds);
    tcase_add_test(tc, test_backup);
    tcase_add_test(tc, test_conn_per_thread);
    tcase_add_test(tc, test_upgrade_from_schema1);
    tcase_add_test(tc, test_upgrade_from_earlier_release);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(store_suite());
}
