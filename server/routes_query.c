/* server/routes_query.c -- questions about a model at its last committed state: loss,
 * gradients, predictions, decision boundary, history, gradient check.
 *
 * Everything here reads: the cached model (registry_read_begin) answers at once, even while a
 * training run holds the model, and nothing changes the model (gradcheck perturbs a private
 * copy). Data is an inline {"x","y"}, or the stored rows of a split: {"split":"validation"},
 * and the train rows when neither is given.
 */
#include <assert.h>
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "codec.h"
#include "evaluate.h"
#include "http.h"
#include "jsonstream.h"
#include "model.h"
#include "request.h"
#include "reply.h"
#include "registry.h"
#include "routes.h"
#include "store.h"
#include "tensor.h"

#define HISTORY_LIMIT_DEFAULT 1000
#define HISTORY_LIMIT_MAX 10000
#define HISTORY_POINTS_MAX 100000
#define GRADCHECK_EPSILON_DEFAULT 1e-6
#define GRADCHECK_MAX_PARAMS 100000
#define GRADCHECK_TOLERANCE 1e-5

/* Rows to evaluate on: inline (owned by `cb`) or all stored rows (`stored`, in use from the
 * data cache `dc`). */
typedef struct query_data {
    codec_batch_t cb;
    datacache_t *dc;
    const datacache_entry_t *stored;
    batch_t b;
} query_data_t;

static void query_data_free(query_data_t *d)
{
    codec_batch_free(&d->cb);
    if (d->stored != NULL)
        datacache_release(d->dc, d->stored);
    memset(d, 0, sizeof *d);
}

static int has_member(const cJSON *body, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, key);
    return v != NULL && !cJSON_IsNull(v);
}

/* The model's row shape, from the cached copy. */
static int model_dims(app_t *app, int64_t id, int32_t *n_x, int32_t *n_y, err_t *err)
{
    model_t *m = NULL;
    int rc = registry_read_begin(app->registry, id, &m, err);
    if (rc < 0)
        return rc;
    *n_x = model_n_x(m);
    *n_y = model_n_y(m);
    registry_read_end(app->registry, id);
    return 0;
}

/* {"x","y"} from the body, or the stored rows of the body's "split" (train when it names none).
 * Labels are checked later, against the model. */
static int query_data_get(http_req_t *req, int64_t id, const cJSON *body, query_data_t *d,
                          err_t *err)
{
    app_t *app = app_of(req);
    memset(d, 0, sizeof *d);
    int32_t n_x = 0, n_y = 0, split = -1;
    int rc = model_dims(app, id, &n_x, &n_y, err);
    if (rc < 0 || (rc = request_get_split(body, &split, err)) < 0)
        return rc;
    const int inline_rows = has_member(body, "x") || has_member(body, "y");
    if (inline_rows && split >= 0)
        return err_set_field(err, ERR_INVAL, "split",
                             "give either inline rows (x, y) or a split of stored rows, not both");
    if (inline_rows) {
        if ((rc = request_batch_decode(req, body, n_x, n_y, 1, &d->cb, err)) < 0)
            return rc;
        d->b = (batch_t){.rows = d->cb.rows, .n_x = d->cb.n_x, .n_y = d->cb.n_y, .x = d->cb.x,
                         .y = d->cb.y};
        return 0;
    }
    d->dc = app->data_cache;
    if ((rc = datacache_rows(d->dc, app->store, id, n_x, n_y, &d->stored, err)) < 0)
        return rc;
    const int validation = split == STORE_SPLIT_VALIDATION;
    int64_t rows = d->stored == NULL ? 0 : validation ? d->stored->val_rows : d->stored->rows;
    if (rows == 0) {
        query_data_free(d);
        if (split >= 0)
            return err_set_field(err, ERR_INVAL, "split", "split \"%s\" has no stored rows: "
                                 "POST batches with ?split=%s first", reply_split_name(split),
                                 reply_split_name(split));
        return err_set_field(err, ERR_INVAL, "x",
                             "model has no stored rows: POST batches first, or send x and y");
    }
    if (rows > INT32_MAX) {
        query_data_free(d);
        return err_set(err, ERR_INVAL, "model %" PRId64 " has %" PRId64 " stored rows; at most "
                       "%d can be evaluated at once", id, rows, INT32_MAX);
    }
    d->b = (batch_t){.rows = (int32_t)rows, .n_x = n_x, .n_y = n_y,
                     .x = validation ? d->stored->val_x : d->stored->x,
                     .y = validation ? d->stored->val_y : d->stored->y};
    return 0;
}

/* The checks every evaluation of `d` on `m` passes first: its working memory fits
 * --max-work-values and its labels suit the model. */
static int query_data_check(const app_t *app, const model_t *m, const query_data_t *d,
                            err_t *err)
{
    int rc = request_check_work(&app->limits, m, d->b.rows, d->stored != NULL ? "split" : "x",
                                err);
    return rc < 0 ? rc : model_check_labels(m, &d->b, err);
}

static cJSON *number_array(const double *v, int64_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; a != NULL && i < n; ++i) {
        cJSON *x = codec_number(v[i]);
        if (x == NULL || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static int add_item(cJSON *obj, const char *key, cJSON *item)
{
    if (obj == NULL || item == NULL || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return ERR_NOMEM;
    }
    return 0;
}

static int reply_nomem(cJSON *body, err_t *err)
{
    cJSON_Delete(body);
    return err_set(err, ERR_NOMEM, "out of memory");
}

/* Body for loss / gradients / gradcheck: an object with only the allowed fields. */
static int query_body(http_req_t *req, const char *const *fields, cJSON **out, err_t *err)
{
    int rc = request_body_json(req, 1, out, err);
    if (rc < 0)
        return rc;
    if ((rc = codec_check_fields(*out, "", fields, err)) < 0) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    return rc;
}

/* The rows a loss, gradients or evaluate request names: a body with only x, y and split, then
 * its inline rows or the stored rows of its split (query_data_get). */
static int query_rows(http_req_t *req, int64_t id, query_data_t *d, err_t *err)
{
    static const char *const fields[] = {"x", "y", "split", NULL};
    cJSON *body = NULL;
    int rc = query_body(req, fields, &body, err);
    if (rc < 0)
        return rc;
    rc = query_data_get(req, id, body, d, err);
    cJSON_Delete(body);
    return rc;
}

/* query_rows, then the model held for reading (registry_read_begin). On success the caller owns
 * both: it ends the read and frees the rows; on failure neither is held. */
static int query_rows_read_begin(http_req_t *req, int64_t id, query_data_t *d, model_t **m,
                                 err_t *err)
{
    int rc = query_rows(req, id, d, err);
    if (rc < 0)
        return rc;
    if ((rc = registry_read_begin(app_of(req)->registry, id, m, err)) < 0)
        query_data_free(d);
    return rc;
}

/* POST /v1/models/{id}/loss -> {"loss","rows","accuracy"?,"errors"?}. */
static int loss_post(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    query_data_t d;
    model_t *m = NULL;
    int rc = query_rows_read_begin(req, id, &d, &m, err);
    if (rc < 0)
        return rc;
    double loss = NAN, acc = NAN;
    int64_t errors = 0;
    const int classifier = model_is_classifier(m);
    if ((rc = query_data_check(app, m, &d, err)) == 0 &&
        (rc = model_loss_grad(m, &d.b, &loss, NULL, err)) == 0 && classifier)
        rc = model_accuracy(m, &d.b, &acc, &errors, err);
    registry_read_end(app->registry, id);
    if (rc < 0)
        goto out;
    cJSON *o = cJSON_CreateObject();
    if (add_item(o, "loss", codec_number(loss)) < 0 ||
        add_item(o, "rows", cJSON_CreateNumber(d.b.rows)) < 0 ||
        (classifier && (add_item(o, "accuracy", codec_number(acc)) < 0 ||
                        add_item(o, "errors", cJSON_CreateNumber((double)errors)) < 0))) {
        rc = reply_nomem(o, err);
        goto out;
    }
    rc = http_reply_json(req, 200, o);
out:
    query_data_free(&d);
    return rc;
}

/* POST /v1/models/{id}/gradients -> {"loss","gradients":{"W1":[[...]]},"norm"}. Streamed
 * (jsonstream.h): a cJSON tree of the gradients would cost about 130 bytes per parameter, so a
 * copy of them is all a large model's answer holds. */
static int gradients_post(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    query_data_t d;
    model_t *m = NULL;
    int rc = query_rows_read_begin(req, id, &d, &m, err);
    if (rc < 0)
        return rc;
    double loss = NAN;
    jsonstream_t *js = NULL;
    if (!model_has_gradients(m)) {
        rc = err_set(err, ERR_INVAL, "a perceptron has no gradients: its update is the "
                     "perceptron rule (POST /step or /train)");
    } else if ((rc = query_data_check(app, m, &d, err)) == 0 &&
               (rc = model_loss_grad(m, &d.b, &loss, model_grads(m), err)) == 0) {
        /* The model's gradient buffer is the next reader's once the lock is released. */
        const int64_t n = model_n_params(m);
        double *g = malloc((size_t)(n > 0 ? n : 1) * sizeof *g);
        cJSON *head = cJSON_CreateObject();
        if (g != NULL)
            memcpy(g, model_grads(m), (size_t)n * sizeof *g);
        if (g == NULL || add_item(head, "loss", codec_number(loss)) < 0) {
            free(g);
            rc = reply_nomem(head, err);
        } else if (jsonstream_new(head, &js) < 0) {
            free(g);
            rc = reply_nomem(NULL, err);
        } else if (jsonstream_keep(js, g, free) < 0 ||
                   jsonstream_add_params(js, "gradients", m, g) < 0 ||
                   jsonstream_add_item(js, "norm", codec_number(tensor_norm2(g, n))) < 0) {
            rc = reply_nomem(NULL, err);
        }
    }
    registry_read_end(app->registry, id);
    if (rc < 0)
        jsonstream_free(js);
    else
        rc = jsonstream_reply(req, 200, js, err);
    query_data_free(&d);
    return rc;
}

/* JSON text of numbers, written straight into a buffer sized beforehand: for small models the
 * cJSON tree, its print and cJSON's own number round trip cost more than the prediction. The
 * text is what cJSON_PrintUnformatted() would give for the same items (numbers as
 * codec_number() writes them). */
typedef struct jtext {
    char *p;
    size_t n;
} jtext_t;

static void jt_str(jtext_t *t, const char *s)
{
    size_t k = strlen(s);
    memcpy(t->p + t->n, s, k);
    t->n += k;
}

static void jt_double(jtext_t *t, double v)
{
    if (!isfinite(v)) {
        jt_str(t, "null");
        return;
    }
    char buf[40];
    codec_format_double(v, buf, sizeof buf);
    jt_str(t, buf);
}

static void jt_int(jtext_t *t, int64_t v)
{
    char d[24];
    int k = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        d[k++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        t->p[t->n++] = '-';
    while (k > 0)
        t->p[t->n++] = d[--k];
}

static void jt_doubles(jtext_t *t, const double *v, int64_t n)
{
    t->p[t->n++] = '[';
    for (int64_t i = 0; i < n; ++i) {
        if (i > 0)
            t->p[t->n++] = ',';
        jt_double(t, v[i]);
    }
    t->p[t->n++] = ']';
}

/* {"outputs":[...],"classes":[...]?,"margins":[...]?} of p: new (free()), or NULL. */
static char *prediction_json(const model_prediction_t *p, size_t *len)
{
    /* At most 32 bytes per number or integer ("%.17g" of a double is at most 24). */
    int64_t rows = p->rows, per_row = p->per_row_scalar ? 1 : (int64_t)p->n_out + 2;
    int64_t cap = 64 + rows * 32 * (per_row + 3);
    jtext_t t = {malloc((size_t)cap), 0};
    if (t.p == NULL)
        return NULL;
    jt_str(&t, "{\"outputs\":[");
    for (int64_t i = 0; i < rows; ++i) {
        if (i > 0)
            t.p[t.n++] = ',';
        const double *row = p->outputs + i * p->n_out;
        if (p->per_row_scalar)
            jt_double(&t, row[0]);
        else
            jt_doubles(&t, row, p->n_out);
    }
    t.p[t.n++] = ']';
    if (p->classes != NULL) {
        jt_str(&t, ",\"classes\":[");
        for (int64_t i = 0; i < rows; ++i) {
            if (i > 0)
                t.p[t.n++] = ',';
            jt_int(&t, p->classes[i]);
        }
        t.p[t.n++] = ']';
    }
    if (p->margins != NULL) {
        jt_str(&t, ",\"margins\":");
        jt_doubles(&t, p->margins, rows);
    }
    t.p[t.n++] = '}';
    t.p[t.n] = '\0';
    assert(t.n < (size_t)cap);
    *len = t.n;
    return t.p;
}

/* POST /v1/models/{id}/predict {"x"} -> {"outputs", "classes"?, "margins"?}. */
static int predict_post(http_req_t *req, err_t *err)
{
    static const char *const fields[] = {"x", NULL};
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    cJSON *body = NULL;
    codec_batch_t b = {0};
    model_prediction_t p = {0};
    int rc = request_body_json(req, 0, &body, err);
    if (rc < 0)
        return rc;
    if ((rc = codec_check_fields(body, "", fields, err)) < 0)
        goto out;
    /* One borrow for the shape and the forward pass: the copy is this thread's alone, so
     * decoding while holding it keeps no other reader waiting. */
    model_t *m = NULL;
    if ((rc = registry_read_begin(app->registry, id, &m, err)) < 0)
        goto out;
    if ((rc = request_batch_decode(req, body, model_n_x(m), model_n_y(m), 0, &b, err)) == 0 &&
        (rc = request_check_work(&app->limits, m, b.rows, "x", err)) == 0)
        rc = model_predict(m, b.x, b.rows, &p, err);
    registry_read_end(app->registry, id);
    if (rc < 0)
        goto out;
    size_t len = 0;
    char *text = prediction_json(&p, &len);
    if (text == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto out;
    }
    rc = http_reply_json_text(req, 200, text, len);
out:
    model_prediction_free(&p);
    codec_batch_free(&b);
    cJSON_Delete(body);
    return rc;
}

/* GET /v1/models/{id}/boundary -> {"normal","unit_normal","offset"}; 400 for other kinds. */
static int boundary_get(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    model_t *m = NULL;
    int rc = registry_read_begin(app->registry, id, &m, err);
    if (rc < 0)
        return rc;
    int32_t n = model_n_x(m);
    double *normal = malloc(2 * ((size_t)n + 1) * sizeof *normal), offset = NAN;
    if (normal == NULL)
        rc = err_set(err, ERR_NOMEM, "out of memory");
    else
        rc = model_boundary(m, normal, normal + n, &offset, err);
    registry_read_end(app->registry, id);
    if (rc < 0) {
        free(normal);
        return rc;
    }
    cJSON *o = cJSON_CreateObject();
    if (add_item(o, "normal", number_array(normal, n)) < 0 ||
        add_item(o, "unit_normal", number_array(normal + n, n)) < 0 ||
        add_item(o, "offset", codec_number(offset)) < 0) {
        free(normal);
        return reply_nomem(o, err);
    }
    free(normal);
    return http_reply_json(req, 200, o);
}

/* GET /v1/models/{id}/history?after_step=&limit= | ?max_points=n. */
static int history_get(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    int64_t after = -1, limit = 0, points = 0, n = 0, next = -1;
    store_history_row_t *rows = NULL;
    int rc;
    if ((rc = http_query_int64(req, "max_points", 0, 2, HISTORY_POINTS_MAX, &points, err)) < 0 ||
        (rc = http_query_int64(req, "after_step", -1, -1, INT64_MAX, &after, err)) < 0 ||
        (rc = http_query_int64(req, "limit", HISTORY_LIMIT_DEFAULT, 1, HISTORY_LIMIT_MAX, &limit,
                               err)) < 0)
        return rc;
    if (points > 0) {
        if (http_query(req, "after_step") != NULL || http_query(req, "limit") != NULL)
            return err_set_field(err, ERR_INVAL, "max_points",
                                 "max_points samples the whole run: it cannot be combined with "
                                 "after_step or limit");
        rc = store_history_sample(app->store, id, points, &rows, &n, err);
    } else {
        rc = store_history_list(app->store, id, after, limit, &rows, &n, &next, err);
    }
    if (rc < 0)
        return rc;
    cJSON *o = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(o, "history");
    for (int64_t i = 0; list != NULL && i < n; ++i) {
        const store_history_row_t *r = &rows[i];
        cJSON *h = cJSON_CreateObject();
        if (add_item(h, "step", cJSON_CreateNumber((double)r->step)) < 0 ||
            add_item(h, "loss", codec_number(r->loss)) < 0 ||
            add_item(h, "grad_norm", codec_number(r->grad_norm)) < 0 ||
            add_item(h, "learning_rate", codec_number(r->learning_rate)) < 0 ||
            (!isnan(r->val_loss) && add_item(h, "val_loss", codec_number(r->val_loss)) < 0) ||
            (!isnan(r->val_accuracy) &&
             add_item(h, "val_accuracy", codec_number(r->val_accuracy)) < 0) ||
            add_item(h, "at", cJSON_CreateString(r->at)) < 0 || !cJSON_AddItemToArray(list, h)) {
            cJSON_Delete(h);
            list = NULL;
        }
    }
    free(rows);
    if (list == NULL ||
        add_item(o, "next", next >= 0 ? cJSON_CreateNumber((double)next) : cJSON_CreateNull()) < 0)
        return reply_nomem(o, err);
    return http_reply_json(req, 200, o);
}

/* POST /v1/models/{id}/gradcheck {"x"?,"y"?,"epsilon"?} -> {"max_abs_error","max_rel_error",
 * "ok"}: analytic gradients against central differences (L(θ+ε) − L(θ−ε)) / 2ε, one
 * parameter at a time, on a private copy. rel error of one parameter = |a − n| / max(|a|, |n|, 1); ok when
 * the largest is at most 1e-5. */
static int gradcheck_post(http_req_t *req, err_t *err)
{
    static const char *const fields[] = {"x", "y", "split", "epsilon", NULL};
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    cJSON *body = NULL;
    query_data_t d = {0};
    registry_copy_t copy = {0};
    double *analytic = NULL;
    int rc = query_body(req, fields, &body, err);
    if (rc < 0)
        return rc;
    double eps = GRADCHECK_EPSILON_DEFAULT;
    const cJSON *je = cJSON_GetObjectItemCaseSensitive(body, "epsilon");
    if (je != NULL && !cJSON_IsNull(je)) {
        eps = cJSON_GetNumberValue(je);
        if (!cJSON_IsNumber(je) || !isfinite(eps) || eps <= 0 || eps > 1) {
            cJSON_Delete(body);
            return err_set_field(err, ERR_INVAL, "epsilon", "epsilon must be a number in (0, 1]");
        }
    }
    rc = query_data_get(req, id, body, &d, err);
    cJSON_Delete(body);
    if (rc < 0)
        return rc;
    if ((rc = registry_load(app->registry, id, &copy, err)) < 0)
        goto out;
    model_t *m = copy.model;
    int64_t n = model_n_params(m);
    if (!model_has_gradients(m)) {
        rc = err_set(err, ERR_INVAL, "a perceptron has no gradients to check");
        goto out;
    }
    if (n > GRADCHECK_MAX_PARAMS) {
        rc = err_set(err, ERR_INVAL, "gradcheck is limited to %d parameters; this model has %"
                     PRId64, GRADCHECK_MAX_PARAMS, n);
        goto out;
    }
    double loss = NAN, lp = NAN, lm = NAN;
    if ((rc = query_data_check(app, m, &d, err)) < 0 ||
        (rc = model_loss_grad(m, &d.b, &loss, model_grads(m), err)) < 0)
        goto out;
    if ((analytic = malloc(((size_t)n + 1) * sizeof *analytic)) == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto out;
    }
    memcpy(analytic, model_grads(m), (size_t)n * sizeof *analytic);
    double *theta = model_params(m), max_abs = 0.0, max_rel = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        double t0 = theta[i];
        theta[i] = t0 + eps;
        rc = model_loss_grad(m, &d.b, &lp, NULL, err);
        theta[i] = t0 - eps;
        if (rc == 0)
            rc = model_loss_grad(m, &d.b, &lm, NULL, err);
        theta[i] = t0;
        if (rc < 0)
            goto out;
        double num = (lp - lm) / (2.0 * eps), a = analytic[i], diff = fabs(a - num);
        double scale = fmax(1.0, fmax(fabs(a), fabs(num)));
        if (!(diff <= max_abs))
            max_abs = diff;   /* NaN sticks */
        if (!(diff / scale <= max_rel))
            max_rel = diff / scale;
    }
    cJSON *o = cJSON_CreateObject();
    if (add_item(o, "max_abs_error", codec_number(max_abs)) < 0 ||
        add_item(o, "max_rel_error", codec_number(max_rel)) < 0 ||
        add_item(o, "ok", cJSON_CreateBool(max_rel <= GRADCHECK_TOLERANCE)) < 0 ||
        add_item(o, "parameters", cJSON_CreateNumber((double)n)) < 0 ||
        add_item(o, "epsilon", codec_number(eps)) < 0) {
        rc = reply_nomem(o, err);
        goto out;
    }
    rc = http_reply_json(req, 200, o);
out:
    free(analytic);
    registry_copy_free(&copy);
    query_data_free(&d);
    return rc;
}

/* POST /v1/models/{id}/evaluate {} | {"split"} | {"x","y"} -> {"rows","loss","metrics"}: the
 * metrics of the model's family at its current parameters (lib/evaluate.h). */
static int evaluate_post(http_req_t *req, err_t *err)
{
    app_t *app = app_of(req);
    int64_t id = http_param(req, 0);
    query_data_t d;
    model_t *m = NULL;
    int rc = query_rows_read_begin(req, id, &d, &m, err);
    if (rc < 0)
        return rc;
    eval_result_t r = {0};
    if ((rc = query_data_check(app, m, &d, err)) == 0)
        rc = eval_model(m, &d.b, &r, err);
    registry_read_end(app->registry, id);
    if (rc == 0) {
        cJSON *o = codec_eval_encode(&r);
        rc = o != NULL ? http_reply_json(req, 200, o) : reply_nomem(o, err);
    }
    eval_result_free(&r);
    query_data_free(&d);
    return rc;
}

const http_route_t routes_query[] = {
    {"POST", "/v1/models/{id}/evaluate", evaluate_post, NULL, 0},
    {"POST", "/v1/models/{id}/loss", loss_post, NULL, 0},
    {"POST", "/v1/models/{id}/gradients", gradients_post, NULL, 0},
    {"POST", "/v1/models/{id}/predict", predict_post, NULL, 0},
    {"GET", "/v1/models/{id}/boundary", boundary_get, NULL, 0},
    {"GET", "/v1/models/{id}/history", history_get, "max_points,after_step,limit", 0},
    {"POST", "/v1/models/{id}/gradcheck", gradcheck_post, NULL, 0},
    HTTP_ROUTE_END,
};
