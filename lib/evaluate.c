/* lib/evaluate.c -- see evaluate.h. Not on the training path: allocating here is fine. */
#include "evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "numerics.h"

int32_t eval_family_of(const model_t *m)
{
    const model_spec_t *s = model_spec(m);
    switch (s->kind) {
    case MODEL_KIND_LINEAR:
        return EVAL_FAMILY_REGRESSION;
    case MODEL_KIND_LOGISTIC:
    case MODEL_KIND_PERCEPTRON:
        return EVAL_FAMILY_BINARY;
    case MODEL_KIND_SOFTMAX:
    case MODEL_KIND_OVA:
    case MODEL_KIND_OVO:
        return EVAL_FAMILY_MULTICLASS;
    case MODEL_KIND_MLP:
        /* Several sigmoid outputs are independent 0/1 targets, not one decision: /predict
         * gives them no classes, and there is no one confusion matrix to report. */
        if (s->output_activation == MODEL_ACT_SIGMOID)
            return s->outputs == 1 ? EVAL_FAMILY_BINARY : EVAL_FAMILY_NONE;
        if (s->output_activation == MODEL_ACT_SOFTMAX)
            return EVAL_FAMILY_MULTICLASS;
        return EVAL_FAMILY_REGRESSION;
    default:
        return EVAL_FAMILY_NONE;
    }
}

/* a / b, or 0 where b is 0: scikit-learn's zero_division=0. */
static double ratio(double a, double b)
{
    return b > 0.0 ? a / b : 0.0;
}

void eval_regression(const double *pred, const double *y, int64_t rows, int32_t n_out,
                     eval_regression_t *out)
{
    double se = 0.0, ae = 0.0, r2 = 0.0;
    for (int32_t o = 0; o < n_out; ++o) {
        double mean = 0.0, ss_res = 0.0, ss_tot = 0.0;
        for (int64_t i = 0; i < rows; ++i)
            mean += y[i * n_out + o];
        mean /= (double)rows;
        for (int64_t i = 0; i < rows; ++i) {
            const double d = pred[i * n_out + o] - y[i * n_out + o];
            const double c = y[i * n_out + o] - mean;
            ss_res += d * d;
            ss_tot += c * c;
            ae += fabs(d);
        }
        se += ss_res;
        /* A constant target: a perfect prediction scores 1, anything else 0 (force_finite). */
        if (ss_tot == 0.0)
            r2 += ss_res == 0.0 ? 1.0 : 0.0;
        else
            r2 += 1.0 - ss_res / ss_tot;
    }
    const double n = (double)rows * (double)n_out;
    out->mse = se / n;
    out->rmse = sqrt(out->mse);
    out->mae = ae / n;
    out->r2 = r2 / (double)n_out;
}

typedef struct ranked {
    double score;
    double y;
} ranked_t;

static int by_score(const void *a, const void *b)
{
    const double x = ((const ranked_t *)a)->score, y = ((const ranked_t *)b)->score;
    return (x > y) - (x < y);
}

int eval_roc_auc(const double *y, const double *score, int64_t rows, double *auc, err_t *err)
{
    int64_t pos = 0;
    for (int64_t i = 0; i < rows; ++i)
        pos += y[i] == 1.0;
    const int64_t neg = rows - pos;
    *auc = NAN;
    if (pos == 0 || neg == 0)
        return 0;
    ranked_t *r = malloc((size_t)rows * sizeof *r);
    if (r == NULL)
        return err_set(err, ERR_NOMEM, "out of memory ranking %lld scores", (long long)rows);
    for (int64_t i = 0; i < rows; ++i)
        r[i] = (ranked_t){.score = score[i], .y = y[i]};
    qsort(r, (size_t)rows, sizeof *r, by_score);
    /* Sum of the positives' ranks, a tie group sharing its average rank. Ranks are integers
     * or halves below 2^53, so the sum is exact and only the final division rounds. */
    double rank_sum = 0.0;
    for (int64_t i = 0, j; i < rows; i = j) {
        int64_t pos_in_group = 0;
        for (j = i; j < rows && r[j].score == r[i].score; ++j)
            pos_in_group += r[j].y == 1.0;
        const double avg_rank = (double)(i + 1 + j) / 2.0;
        rank_sum += avg_rank * (double)pos_in_group;
    }
    free(r);
    const double u = rank_sum - (double)pos * (double)(pos + 1) / 2.0;
    *auc = u / ((double)pos * (double)neg);
    return 0;
}

int eval_binary(const double *y, const int32_t *pred, const double *score, const double *logit,
                int64_t rows, eval_binary_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    double bce = 0.0;
    for (int64_t i = 0; i < rows; ++i) {
        const int truth = y[i] == 1.0, said = pred[i] == 1;
        out->tp += truth && said;
        out->fp += !truth && said;
        out->fn += truth && !said;
        out->tn += !truth && !said;
        if (logit != NULL)
            bce += nm_bce_term(logit[i], y[i]);
    }
    const double tp = (double)out->tp, fp = (double)out->fp, fn = (double)out->fn;
    out->accuracy = (double)(out->tp + out->tn) / (double)rows;
    out->precision = ratio(tp, tp + fp);
    out->recall = ratio(tp, tp + fn);
    out->f1 = ratio(2.0 * tp, 2.0 * tp + fp + fn);
    out->log_loss = logit != NULL ? bce / (double)rows : NAN;
    return eval_roc_auc(y, score, rows, &out->roc_auc, err);
}

void eval_multiclass_free(eval_multiclass_t *mc)
{
    if (mc == NULL)
        return;
    free(mc->confusion);
    free(mc->class_precision);
    free(mc->class_recall);
    free(mc->class_f1);
    free(mc->support);
    memset(mc, 0, sizeof *mc);
}

int eval_multiclass(const double *y, const int32_t *pred, const double *logits, int64_t rows,
                    int32_t k, eval_multiclass_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    out->k = k;
    out->confusion = calloc((size_t)k * (size_t)k, sizeof *out->confusion);
    out->class_precision = calloc((size_t)k, sizeof(double));
    out->class_recall = calloc((size_t)k, sizeof(double));
    out->class_f1 = calloc((size_t)k, sizeof(double));
    out->support = calloc((size_t)k, sizeof *out->support);
    int64_t *predicted = calloc((size_t)k, sizeof *predicted);
    if (out->confusion == NULL || out->class_precision == NULL || out->class_recall == NULL ||
        out->class_f1 == NULL || out->support == NULL || predicted == NULL) {
        free(predicted);
        eval_multiclass_free(out);
        return err_set(err, ERR_NOMEM, "out of memory for a %d-class confusion matrix", (int)k);
    }
    int64_t correct = 0;
    double cce = 0.0;
    for (int64_t i = 0; i < rows; ++i) {
        const int32_t t = (int32_t)y[i], p = pred[i];
        out->confusion[(int64_t)t * k + p] += 1;
        out->support[t] += 1;
        predicted[p] += 1;
        correct += t == p;
        if (logits != NULL) {
            double mx, rest;
            int64_t arg;
            const double *z = logits + i * k;
            nm_row_lse(z, k, NULL, &mx, &arg, &rest);
            cce += (mx + log1p(rest)) - z[t];
        }
    }
    double sp = 0.0, sr = 0.0, sf = 0.0;
    for (int32_t j = 0; j < k; ++j) {
        const double hit = (double)out->confusion[(int64_t)j * k + j];
        out->class_precision[j] = ratio(hit, (double)predicted[j]);
        out->class_recall[j] = ratio(hit, (double)out->support[j]);
        out->class_f1[j] = ratio(2.0 * hit, (double)(predicted[j] + out->support[j]));
        sp += out->class_precision[j];
        sr += out->class_recall[j];
        sf += out->class_f1[j];
    }
    free(predicted);
    out->accuracy = (double)correct / (double)rows;
    out->precision = sp / k;
    out->recall = sr / k;
    out->f1 = sf / k;
    out->log_loss = logits != NULL ? cce / (double)rows : NAN;
    return 0;
}

void eval_result_free(eval_result_t *r)
{
    if (r == NULL)
        return;
    eval_multiclass_free(&r->multiclass);
    memset(r, 0, sizeof *r);
}

/* The number of classes of a multiclass model. */
static int32_t n_classes(const model_t *m)
{
    const model_spec_t *s = model_spec(m);
    return s->kind == MODEL_KIND_MLP ? s->outputs : s->classes;
}

int eval_model(model_t *m, const batch_t *b, eval_result_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    out->rows = b->rows;
    out->family = eval_family_of(m);
    model_prediction_t p = {0};
    int rc = model_loss_grad(m, b, &out->loss, NULL, err);
    if (rc < 0 || out->family == EVAL_FAMILY_NONE)
        return rc;
    if ((rc = model_predict_scores(m, b->x, b->rows, &p, err)) < 0)
        return rc;
    const model_spec_t *s = model_spec(m);
    switch (out->family) {
    case EVAL_FAMILY_REGRESSION:
        eval_regression(p.outputs, b->y, b->rows, p.n_out, &out->regression);
        break;
    case EVAL_FAMILY_BINARY: {
        /* Rank by what /predict shows: p for logistic and sigmoid mlps, the margins (else the
         * logits, the same order) for the perceptron, whose outputs are only 0 and 1. */
        const int perceptron = s->kind == MODEL_KIND_PERCEPTRON;
        const double *score = !perceptron ? p.outputs : p.margins != NULL ? p.margins : p.scores;
        rc = eval_binary(b->y, p.classes, score, perceptron ? NULL : p.scores, b->rows,
                         &out->binary, err);
        break;
    }
    case EVAL_FAMILY_MULTICLASS: {
        const int softmax = s->kind == MODEL_KIND_SOFTMAX || s->kind == MODEL_KIND_MLP;
        rc = eval_multiclass(b->y, p.classes, softmax ? p.scores : NULL, b->rows, n_classes(m),
                             &out->multiclass, err);
        break;
    }
    default:
        break;
    }
    model_prediction_free(&p);
    if (rc < 0)
        eval_result_free(out);
    return rc;
}
