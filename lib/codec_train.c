/* lib/codec_train.c -- train requests decoded, train results and evaluations encoded. Part of
 * codec (codec.h). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"

/* "early_stopping": {"patience" (required, >= 1), "min_delta" (0), "restore_best" (true)}. */
static int early_stopping_decode(const cJSON *j, train_req_t *req, err_t *err)
{
    static const char *const fields[] = {"patience", "min_delta", "restore_best", NULL};
    int rc = codec__require_object(j, "early_stopping", "an object", err);
    if (rc == 0)
        rc = codec_check_fields(j, "early_stopping", fields, err);
    if (rc < 0)
        return rc;
    /* A missing or bad patience leaves no early stopping to speak of: the error names the
     * whole object, as it does when validation rows or recorded rows are missing. */
    const cJSON *v = codec__member(j, "patience");
    if (v == NULL)
        return err_set_field(err, ERR_INVAL, "early_stopping",
                             "early_stopping.patience is required: evaluations without "
                             "improvement before the run stops");
    if ((rc = codec__get_int(v, "early_stopping.patience", 1, CODEC_INT_EXACT_MAX, &req->patience,
                      err)) < 0) {
        if (err != NULL)
            snprintf(err->field, sizeof err->field, "%s", "early_stopping");
        return rc;
    }
    if ((v = codec__member(j, "min_delta")) != NULL) {
        if ((rc = codec__get_finite(v, "early_stopping.min_delta", &req->min_delta, err)) < 0)
            return rc;
        if (req->min_delta < 0)
            return err_set_field(err, ERR_INVAL, "early_stopping.min_delta",
                                 "early_stopping.min_delta = %g must be >= 0", req->min_delta);
    }
    if ((v = codec__member(j, "restore_best")) != NULL &&
        (rc = codec__get_bool(v, "early_stopping.restore_best", &req->restore_best, err)) < 0)
        return rc;
    return 0;
}

int codec_train_req_decode(const cJSON *json, train_req_t *req, int *async, err_t *err)
{
    static const char *const fields[] = {
        "steps", "epochs", "batch_size", "learning_rate", "tolerance", "target_loss",
        "history_every", "seed", "async", "early_stopping", NULL};
    train_req_default(req);
    if (async != NULL)
        *async = 0;
    if (json == NULL || cJSON_IsNull(json))
        return 0;
    int rc = codec__require_object(json, "", "a JSON object (a train request)", err);
    if (rc == 0)
        rc = codec_check_fields(json, "", fields, err);
    if (rc < 0)
        return rc;
    const cJSON *v, *steps = codec__member(json, "steps"), *epochs = codec__member(json, "epochs");
    if (steps != NULL && epochs != NULL)
        return err_set_field(err, ERR_INVAL, "epochs", "give either steps or epochs, not both");
    if (steps != NULL &&
        (rc = codec__get_int(steps, "steps", 0, CODEC_INT_EXACT_MAX, &req->steps, err)) < 0)
        return rc;
    if (epochs != NULL &&
        (rc = codec__get_int(epochs, "epochs", 0, CODEC_INT_EXACT_MAX, &req->epochs, err)) < 0)
        return rc;
    /* Zero passes make no update, as steps 0: the call only evaluates. */
    if (epochs != NULL && req->epochs == 0)
        req->steps = 0;
    /* null is the full batch; 0 rows per mini-batch is not a size. */
    if ((v = codec__member(json, "batch_size")) != NULL &&
        (rc = codec__get_int32(v, "batch_size", 1, INT32_MAX, &req->batch_size, err)) < 0)
        return rc;
    if ((v = codec__member(json, "learning_rate")) != NULL) {
        if ((rc = codec__get_finite(v, "learning_rate", &req->learning_rate, err)) < 0)
            return rc;
        if (req->learning_rate <= 0)
            return err_set_field(err, ERR_INVAL, "learning_rate", "learning_rate = %g must be > 0",
                                 req->learning_rate);
    }
    if ((v = codec__member(json, "tolerance")) != NULL) {
        if ((rc = codec__get_finite(v, "tolerance", &req->tolerance, err)) < 0)
            return rc;
        if (req->tolerance < 0)
            return err_set_field(err, ERR_INVAL, "tolerance", "tolerance = %g must be >= 0",
                                 req->tolerance);
    }
    if ((v = codec__member(json, "target_loss")) != NULL &&
        (rc = codec__get_finite(v, "target_loss", &req->target_loss, err)) < 0)
        return rc;
    if ((v = codec__member(json, "history_every")) != NULL &&
        (rc = codec__get_int(v, "history_every", 0, CODEC_INT_EXACT_MAX, &req->history_every, err)) < 0)
        return rc;
    int64_t seed;
    if ((v = codec__member(json, "seed")) != NULL) {
        if ((rc = codec__get_int(v, "seed", 0, CODEC_INT_EXACT_MAX, &seed, err)) < 0)
            return rc;
        req->seed = (uint64_t)seed;
    }
    if ((v = codec__member(json, "early_stopping")) != NULL &&
        (rc = early_stopping_decode(v, req, err)) < 0)
        return rc;
    if ((v = codec__member(json, "async")) != NULL) {
        int32_t a = 0;   /* -O3 -Wmaybe-uninitialized false positive (Release build) */
        if ((rc = codec__get_bool(v, "async", &a, err)) < 0)
            return rc;
        if (async != NULL)
            *async = a;
    }
    return 0;
}

static cJSON *int_array(const int64_t *v, int64_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; i < n; ++i)
        if (codec__push(a, codec__int(v[i])) < 0) {
            cJSON_Delete(a);
            return NULL;
        }
    return a;
}

/* The confusion matrix of k classes as k rows of counts. */
static cJSON *confusion_encode(const int64_t *c, int32_t k)
{
    cJSON *rows = cJSON_CreateArray();
    for (int32_t i = 0; i < k; ++i)
        if (codec__push(rows, int_array(c + (int64_t)i * k, k)) < 0) {
            cJSON_Delete(rows);
            return NULL;
        }
    return rows;
}

static cJSON *precision_recall_f1(cJSON *o, double accuracy, double p, double r, double f1)
{
    if (codec__add(o, "accuracy", codec_number(accuracy)) < 0 ||
        codec__add(o, "precision", codec_number(p)) < 0 || codec__add(o, "recall", codec_number(r)) < 0 ||
        codec__add(o, "f1", codec_number(f1)) < 0)
        return NULL;
    return o;
}

static cJSON *metrics_encode(const eval_result_t *r)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    switch (r->family) {
    case EVAL_FAMILY_REGRESSION: {
        const eval_regression_t *g = &r->regression;
        if (codec__add(o, "mse", codec_number(g->mse)) < 0 || codec__add(o, "rmse", codec_number(g->rmse)) < 0 ||
            codec__add(o, "mae", codec_number(g->mae)) < 0 || codec__add(o, "r2", codec_number(g->r2)) < 0)
            goto fail;
        break;
    }
    case EVAL_FAMILY_BINARY: {
        const eval_binary_t *b = &r->binary;
        const int64_t cm[4] = {b->tn, b->fp, b->fn, b->tp};
        if (precision_recall_f1(o, b->accuracy, b->precision, b->recall, b->f1) == NULL ||
            codec__add(o, "confusion_matrix", confusion_encode(cm, 2)) < 0 ||
            codec__add(o, "roc_auc", codec_number(b->roc_auc)) < 0 ||
            (!isnan(b->log_loss) && codec__add(o, "log_loss", codec_number(b->log_loss)) < 0))
            goto fail;
        break;
    }
    case EVAL_FAMILY_MULTICLASS: {
        const eval_multiclass_t *mc = &r->multiclass;
        cJSON *per_class = cJSON_CreateArray();
        if (precision_recall_f1(o, mc->accuracy, mc->precision, mc->recall, mc->f1) == NULL ||
            codec__add(o, "confusion_matrix", confusion_encode(mc->confusion, mc->k)) < 0 ||
            codec__add(o, "per_class", per_class) < 0)
            goto fail;
        for (int32_t j = 0; j < mc->k; ++j) {
            cJSON *c = cJSON_CreateObject();
            if (codec__push(per_class, c) < 0 || codec__add(c, "class", codec__int(j)) < 0 ||
                codec__add(c, "precision", codec_number(mc->class_precision[j])) < 0 ||
                codec__add(c, "recall", codec_number(mc->class_recall[j])) < 0 ||
                codec__add(c, "f1", codec_number(mc->class_f1[j])) < 0 ||
                codec__add(c, "support", codec__int(mc->support[j])) < 0)
                goto fail;
        }
        if (!isnan(mc->log_loss) && codec__add(o, "log_loss", codec_number(mc->log_loss)) < 0)
            goto fail;
        break;
    }
    default:
        break;
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

cJSON *codec_eval_encode(const eval_result_t *r)
{
    cJSON *o = cJSON_CreateObject();
    if (codec__add(o, "rows", codec__int(r->rows)) < 0 || codec__add(o, "loss", codec_number(r->loss)) < 0 ||
        codec__add(o, "metrics", metrics_encode(r)) < 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *codec_train_result_encode(int64_t model_id, const train_result_t *res)
{
    const char *stopped = train_stop_name(res->stopped);
    cJSON *o = cJSON_CreateObject();
    if ((model_id > 0 && codec__add(o, "model_id", codec__int(model_id)) < 0) ||
        codec__add(o, "steps_run", codec__int(res->steps_run)) < 0 ||
        codec__add(o, "step", codec__int(res->step)) < 0 ||
        codec__add(o, "loss_before", codec_number(res->loss_before)) < 0 ||
        codec__add(o, "loss_after", codec_number(res->loss_after)) < 0 ||
        (res->validated && codec__add(o, "val_loss_after", codec_number(res->val_loss_after)) < 0) ||
        codec__add(o, "stopped", cJSON_CreateString(stopped != NULL ? stopped : "unknown")) < 0 ||
        (res->early_stopping &&
         (codec__add(o, "best_step", res->best_step >= 0 ? codec__int(res->best_step)
                                                   : cJSON_CreateNull()) < 0 ||
          codec__add(o, "best_val_loss", codec_number(res->best_val_loss)) < 0)) ||
        codec__add(o, "elapsed_ms", codec_number(res->elapsed_ms)) < 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
