/* lib/evaluate.h -- held-out metrics of a model on labelled rows, by family of kind.
 *
 * Each metric is defined as scikit-learn defines it, so a client can check the daemon's answer
 * against sklearn.metrics on the daemon's own predictions:
 *  - regression (linear; mlp with a linear output): mse and mae averaged over rows and outputs,
 *    rmse = √mse, r2 = per output 1 − SS_res/SS_tot averaged uniformly (a constant target gives
 *    1 when predicted exactly, else 0: r2_score's force_finite);
 *  - binary (logistic, perceptron, mlp with a sigmoid output): class 1 iff z > 0; accuracy,
 *    precision, recall, f1 of class 1 with zero_division = 0, the confusion matrix
 *    [[tn, fp], [fn, tp]], roc_auc_score of the scores (ties count one half; NaN when y holds
 *    one class) and log loss, the mean bce from the logits (NaN for the perceptron);
 *  - multiclass (softmax, ova, ovo, mlp with a softmax output): accuracy; precision, recall, f1
 *    per class and macro-averaged over all k classes (absent ones count, as zeros); the k×k
 *    confusion matrix (row = true class); support per class; log loss, the mean cce from the
 *    logits (softmax and mlp only, else NaN);
 *  - graph models: the loss only.
 *
 *     eval_result_t r;
 *     if (eval_model(m, &rows, &r, &err) == 0) { ... r.binary.roc_auc ...; eval_result_free(&r); }
 *
 * The pure functions below take plain arrays, so each metric is tested on its own.
 */
#ifndef ND_EVALUATE_H
#define ND_EVALUATE_H

#include <stdint.h>

#include "err.h"
#include "model.h"

/* Which metrics a model gets. */
enum eval_family {
    EVAL_FAMILY_NONE = 0,        /* graph models, several sigmoid outputs: loss only */
    EVAL_FAMILY_REGRESSION = 1,
    EVAL_FAMILY_BINARY = 2,
    EVAL_FAMILY_MULTICLASS = 3,
};

typedef struct eval_regression {
    double mse, rmse, mae, r2;
} eval_regression_t;

typedef struct eval_binary {
    double accuracy, precision, recall, f1;
    int64_t tn, fp, fn, tp;
    double roc_auc;              /* NaN when y holds one class */
    double log_loss;             /* NaN when not defined for the kind (perceptron) */
} eval_binary_t;

typedef struct eval_multiclass {
    int32_t k;
    double accuracy, precision, recall, f1;    /* macro over all k classes */
    double log_loss;             /* NaN when not defined for the kind (ova, ovo) */
    int64_t *confusion;          /* k × k, row = true class, column = predicted */
    double *class_precision, *class_recall, *class_f1;   /* k each */
    int64_t *support;            /* k: rows whose true class is j */
} eval_multiclass_t;

typedef struct eval_result {
    int64_t rows;
    double loss;                 /* the model's loss (its loss and reduction) on the rows */
    int32_t family;              /* enum eval_family */
    eval_regression_t regression;
    eval_binary_t binary;
    eval_multiclass_t multiclass;  /* arrays owned: eval_result_free() */
} eval_result_t;

/* The family of a model's kind (and output activation for mlp). */
int32_t eval_family_of(const model_t *m);

/* Loss and metrics of model m on b at its current parameters. `*out` owns arrays: free with
 * eval_result_free() (also zeroed on failure). b->rows >= 1. */
int eval_model(model_t *m, const batch_t *b, eval_result_t *out, err_t *err);
void eval_result_free(eval_result_t *r);

/* Regression metrics of pred against y, both rows × n_out. rows >= 1. */
void eval_regression(const double *pred, const double *y, int64_t rows, int32_t n_out,
                     eval_regression_t *out);

/* Binary metrics: y and pred 0/1 per row, score the ranking score per row (roc_auc), logit
 * the logit per row or NULL (no log loss). ERR_NOMEM when the ranking buffer cannot be had. */
int eval_binary(const double *y, const int32_t *pred, const double *score, const double *logit,
                int64_t rows, eval_binary_t *out, err_t *err);

/* Area under the ROC curve of score for the 0/1 labels y, ties counting one half (the
 * Mann–Whitney statistic, which is what the trapezoids over tied thresholds give). NaN when y
 * holds one class. ERR_NOMEM when the ranking buffer cannot be had. */
int eval_roc_auc(const double *y, const double *score, int64_t rows, double *auc, err_t *err);

/* Multiclass metrics: y and pred in 0..k-1 per row, logits rows × k or NULL (no log loss).
 * out's arrays are new: free with eval_multiclass_free(). */
int eval_multiclass(const double *y, const int32_t *pred, const double *logits, int64_t rows,
                    int32_t k, eval_multiclass_t *out, err_t *err);
void eval_multiclass_free(eval_multiclass_t *mc);

#endif /* ND_EVALUATE_H */
