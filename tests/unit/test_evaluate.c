/* tests/unit/test_evaluate.c -- every metric of lib/evaluate against values worked out by hand
 * (the definitions scikit-learn uses: zero_division = 0, ROC AUC with ties counted one half,
 * macro averages over all k classes, r2's constant-target rule), and eval_model on real models. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"
#include "model.h"
#include "testutil.h"

#define REL 1e-14
#define ABS 1e-15

START_TEST(regression_one_output)
{
    const double pred[] = {1, 2, 3, 4}, y[] = {1, 3, 2, 5};
    eval_regression_t r;
    eval_regression(pred, y, 4, 1, &r);
    ck_assert_close(r.mse, 0.75, REL, ABS);
    ck_assert_close(r.rmse, sqrt(0.75), REL, ABS);
    ck_assert_close(r.mae, 0.75, REL, ABS);
    /* mean 2.75, SS_tot = 8.75, SS_res = 3 */
    ck_assert_close(r.r2, 1.0 - 3.0 / 8.75, REL, ABS);
}
END_TEST

START_TEST(regression_outputs_and_constant_targets)
{
    /* Output 0 as above; output 1 a constant target predicted exactly (r2 1), then not (r2 0). */
    const double y[] = {1, 5, 3, 5, 2, 5, 5, 5};
    const double exact[] = {1, 5, 2, 5, 3, 5, 4, 5};
    const double off[] = {1, 5, 2, 5, 3, 5, 4, 6};
    eval_regression_t r;
    eval_regression(exact, y, 4, 2, &r);
    ck_assert_close(r.mse, 3.0 / 8.0, REL, ABS);
    ck_assert_close(r.mae, 3.0 / 8.0, REL, ABS);
    ck_assert_close(r.r2, (1.0 - 3.0 / 8.75 + 1.0) / 2.0, REL, ABS);
    eval_regression(off, y, 4, 2, &r);
    ck_assert_close(r.mse, 4.0 / 8.0, REL, ABS);
    ck_assert_close(r.rmse, sqrt(0.5), REL, ABS);
    ck_assert_close(r.r2, (1.0 - 3.0 / 8.75 + 0.0) / 2.0, REL, ABS);
}
END_TEST

START_TEST(binary_counts_and_ratios)
{
    const double y[] = {0, 0, 1, 1, 1, 0};
    const int32_t pred[] = {0, 1, 1, 0, 1, 0};
    const double score[] = {0.1, 0.4, 0.35, 0.8, 0.4, 0.2};
    const double logit[] = {0, 0, 0, 0, 0, 0};
    eval_binary_t b;
    err_t err = {0};
    ck_assert_int_eq(eval_binary(y, pred, score, logit, 6, &b, &err), 0);
    ck_assert_int_eq(b.tn, 2);
    ck_assert_int_eq(b.fp, 1);
    ck_assert_int_eq(b.fn, 1);
    ck_assert_int_eq(b.tp, 2);
    ck_assert_close(b.accuracy, 4.0 / 6.0, REL, ABS);
    ck_assert_close(b.precision, 2.0 / 3.0, REL, ABS);
    ck_assert_close(b.recall, 2.0 / 3.0, REL, ABS);
    ck_assert_close(b.f1, 2.0 / 3.0, REL, ABS);
    /* Positive-negative pairs: 0.35 beats 0.1 and 0.2; 0.8 beats all three; 0.4 beats 0.1
     * and 0.2 and ties 0.4 (one half): 7.5 of 9. */
    ck_assert_close(b.roc_auc, 7.5 / 9.0, REL, ABS);
    ck_assert_close(b.log_loss, log(2.0), REL, ABS);
}
END_TEST

START_TEST(binary_zero_division_and_one_class)
{
    const double y[] = {1, 1, 1};
    const int32_t pred[] = {0, 0, 0};
    const double score[] = {0.3, 0.2, 0.1};
    eval_binary_t b;
    err_t err = {0};
    ck_assert_int_eq(eval_binary(y, pred, score, NULL, 3, &b, &err), 0);
    ck_assert_double_eq(b.precision, 0.0);
    ck_assert_double_eq(b.recall, 0.0);
    ck_assert_double_eq(b.f1, 0.0);
    ck_assert_double_eq(b.accuracy, 0.0);
    ck_assert(isnan(b.roc_auc));
    ck_assert(isnan(b.log_loss));
    ck_assert_int_eq(b.fn, 3);
}
END_TEST

START_TEST(roc_auc_cases)
{
    err_t err = {0};
    double auc = 0.0;
    /* Perfect, reversed, all tied. */
    const double y[] = {0, 0, 1, 1};
    const double up[] = {1, 2, 3, 4}, down[] = {4, 3, 2, 1}, flat[] = {7, 7, 7, 7};
    ck_assert_int_eq(eval_roc_auc(y, up, 4, &auc, &err), 0);
    ck_assert_double_eq(auc, 1.0);
    ck_assert_int_eq(eval_roc_auc(y, down, 4, &auc, &err), 0);
    ck_assert_double_eq(auc, 0.0);
    ck_assert_int_eq(eval_roc_auc(y, flat, 4, &auc, &err), 0);
    ck_assert_double_eq(auc, 0.5);
    /* The textbook example of roc_auc_score's documentation: 0.75. */
    const double y2[] = {0, 0, 1, 1}, s2[] = {0.1, 0.4, 0.35, 0.8};
    ck_assert_int_eq(eval_roc_auc(y2, s2, 4, &auc, &err), 0);
    ck_assert_close(auc, 0.75, REL, ABS);
}
END_TEST

START_TEST(binary_log_loss_from_logits)
{
    /* bce(z, y) = log(1 + e^z) - y z, stable for large |z|. */
    const double y[] = {1, 0, 1};
    const int32_t pred[] = {1, 0, 0};
    const double logit[] = {2.0, -3.0, -800.0};
    eval_binary_t b;
    err_t err = {0};
    ck_assert_int_eq(eval_binary(y, pred, logit, logit, 3, &b, &err), 0);
    const double want = (log1p(exp(-2.0)) + log1p(exp(-3.0)) + 800.0) / 3.0;
    ck_assert_close(b.log_loss, want, 1e-13, ABS);
}
END_TEST

START_TEST(multiclass_absent_class)
{
    const double y[] = {0, 0, 1, 1, 1};
    const int32_t pred[] = {0, 1, 1, 1, 0};
    const double logits[15] = {0};
    eval_multiclass_t mc;
    err_t err = {0};
    ck_assert_int_eq(eval_multiclass(y, pred, logits, 5, 3, &mc, &err), 0);
    const int64_t cm[9] = {1, 1, 0, 1, 2, 0, 0, 0, 0};
    for (int i = 0; i < 9; ++i)
        ck_assert_int_eq(mc.confusion[i], cm[i]);
    ck_assert_int_eq(mc.support[0], 2);
    ck_assert_int_eq(mc.support[1], 3);
    ck_assert_int_eq(mc.support[2], 0);
    ck_assert_close(mc.class_precision[0], 0.5, REL, ABS);
    ck_assert_close(mc.class_recall[1], 2.0 / 3.0, REL, ABS);
    ck_assert_close(mc.class_f1[1], 2.0 / 3.0, REL, ABS);
    ck_assert_double_eq(mc.class_f1[2], 0.0);
    ck_assert_close(mc.accuracy, 0.6, REL, ABS);
    /* Macro over all three classes: the absent one counts as zeros. */
    ck_assert_close(mc.precision, (0.5 + 2.0 / 3.0) / 3.0, REL, ABS);
    ck_assert_close(mc.recall, (0.5 + 2.0 / 3.0) / 3.0, REL, ABS);
    ck_assert_close(mc.f1, (0.5 + 2.0 / 3.0) / 3.0, REL, ABS);
    ck_assert_close(mc.log_loss, log(3.0), REL, ABS);
    eval_multiclass_free(&mc);
    ck_assert_int_eq(eval_multiclass(y, pred, NULL, 5, 3, &mc, &err), 0);
    ck_assert(isnan(mc.log_loss));
    eval_multiclass_free(&mc);
    eval_multiclass_free(NULL);
}
END_TEST

START_TEST(multiclass_log_loss_from_logits)
{
    const double y[] = {2, 0};
    const int32_t pred[] = {2, 1};
    const double logits[6] = {1.0, 2.0, 3.0, 0.5, -0.5, 700.0};
    eval_multiclass_t mc;
    err_t err = {0};
    ck_assert_int_eq(eval_multiclass(y, pred, logits, 2, 3, &mc, &err), 0);
    const double l0 = log(exp(1.0) + exp(2.0) + exp(3.0)) - 3.0;
    const double l1 = 700.0 + log1p(exp(0.5 - 700.0) + exp(-0.5 - 700.0)) - 0.5;
    ck_assert_close(mc.log_loss, (l0 + l1) / 2.0, 1e-13, ABS);
    eval_multiclass_free(&mc);
}
END_TEST

/* A model from a spec string (through the model layer, so eval_model sees a real model). */
static model_t *make_model(int32_t kind, int32_t inputs, int32_t classes, const double *w)
{
    model_spec_t spec;
    memset(&spec, 0, sizeof spec);
    model_spec_default(&spec);
    spec.kind = kind;
    spec.inputs = inputs;
    spec.classes = classes;
    err_t err = {0};
    ck_assert_int_eq(model_spec_resolve(&spec, MODEL_MAX_PARAMS_DEFAULT, &err), 0);
    model_t *m = NULL;
    ck_assert_msg(model_new(&spec, &m, &err) == 0, "%s", err.msg);
    memcpy(model_params(m), w, (size_t)model_n_params(m) * sizeof(double));
    model_spec_free(&spec);
    return m;
}

START_TEST(model_families)
{
    const double wl[3] = {0.5, 1.0, -1.0};
    model_t *lin = make_model(MODEL_KIND_LINEAR, 2, 0, wl);
    model_t *logi = make_model(MODEL_KIND_LOGISTIC, 2, 0, wl);
    model_t *perc = make_model(MODEL_KIND_PERCEPTRON, 2, 0, wl);
    const double ws[9] = {0, 1, 0, 0, 0, 1, 0.1, -1, -1};
    model_t *soft = make_model(MODEL_KIND_SOFTMAX, 2, 3, ws);
    model_t *ova = make_model(MODEL_KIND_OVA, 2, 3, ws);
    ck_assert_int_eq(eval_family_of(lin), EVAL_FAMILY_REGRESSION);
    ck_assert_int_eq(eval_family_of(logi), EVAL_FAMILY_BINARY);
    ck_assert_int_eq(eval_family_of(perc), EVAL_FAMILY_BINARY);
    ck_assert_int_eq(eval_family_of(soft), EVAL_FAMILY_MULTICLASS);

    const double x[8] = {1, 0, 0, 1, 2, 2, -1, 1};
    const double yb[4] = {1, 0, 1, 0};
    batch_t b = {.rows = 4, .n_x = 2, .n_y = 1, .x = x, .y = yb};
    eval_result_t r;
    err_t err = {0};

    /* Linear: predictions 1.5, -0.5, 0.5, -1.5 against 1, 0, 1, 0. */
    ck_assert_int_eq(eval_model(lin, &b, &r, &err), 0);
    ck_assert_int_eq(r.rows, 4);
    ck_assert_close(r.regression.mse, 0.25 * (0.25 + 0.25 + 0.25 + 2.25), REL, ABS);
    ck_assert_close(r.loss, r.regression.mse, REL, ABS);   /* l2 mean, one output */
    eval_result_free(&r);

    /* Logistic: z = 1.5, -0.5, 0.5, -1.5: every row right. log loss = the bce mean loss. */
    ck_assert_int_eq(eval_model(logi, &b, &r, &err), 0);
    ck_assert_double_eq(r.binary.accuracy, 1.0);
    ck_assert_double_eq(r.binary.roc_auc, 1.0);
    ck_assert_close(r.binary.log_loss, r.loss, 1e-13, ABS);
    eval_result_free(&r);

    /* The perceptron: no log loss; ranks by its margins. */
    ck_assert_int_eq(eval_model(perc, &b, &r, &err), 0);
    ck_assert(isnan(r.binary.log_loss));
    ck_assert_double_eq(r.binary.roc_auc, 1.0);
    eval_result_free(&r);

    /* Softmax: logits per row (W x*): row 0 [0, 1, -0.9]... classes 1, 2, 1|2, 0. */
    const double yc[4] = {1, 2, 2, 0};
    batch_t bc = {.rows = 4, .n_x = 2, .n_y = 1, .x = x, .y = yc};
    ck_assert_int_eq(eval_model(soft, &bc, &r, &err), 0);
    ck_assert_int_eq(r.multiclass.k, 3);
    ck_assert_close(r.multiclass.log_loss, r.loss, 1e-13, ABS);   /* cce mean */
    int64_t total = 0;
    for (int i = 0; i < 9; ++i)
        total += r.multiclass.confusion[i];
    ck_assert_int_eq(total, 4);
    eval_result_free(&r);
    /* ova: no log loss (its scores are not one distribution). */
    ck_assert_int_eq(eval_model(ova, &bc, &r, &err), 0);
    ck_assert(isnan(r.multiclass.log_loss));
    eval_result_free(&r);

    /* model_loss_accuracy: one pass on the graph, the same numbers as loss and accuracy apart. */
    model_t *all[] = {lin, logi, perc, soft, ova};
    const batch_t *bs[] = {&b, &b, &b, &bc, &bc};
    for (int i = 0; i < 5; ++i) {
        double l1 = 0, l2 = 0, a1 = 0, a2 = 0;
        int64_t wrong = 0;
        ck_assert_int_eq(model_loss_accuracy(all[i], bs[i], &l1, &a1, &err), 0);
        ck_assert_int_eq(model_loss_grad(all[i], bs[i], &l2, NULL, &err), 0);
        ck_assert(l1 == l2);
        if (model_is_classifier(all[i])) {
            ck_assert_int_eq(model_accuracy(all[i], bs[i], &a2, &wrong, &err), 0);
            ck_assert(a1 == a2);
        } else {
            ck_assert(isnan(a1));
        }
    }

    model_free(lin);
    model_free(logi);
    model_free(perc);
    model_free(soft);
    model_free(ova);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("evaluate");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, regression_one_output);
    tcase_add_test(tc, regression_outputs_and_constant_targets);
    tcase_add_test(tc, binary_counts_and_ratios);
    tcase_add_test(tc, binary_zero_division_and_one_class);
    tcase_add_test(tc, roc_auc_cases);
    tcase_add_test(tc, binary_log_loss_from_logits);
    tcase_add_test(tc, multiclass_absent_class);
    tcase_add_test(tc, multiclass_log_loss_from_logits);
    tcase_add_test(tc, model_families);
    suite_add_tcase(s, tc);
    return testutil_run(s);
}
