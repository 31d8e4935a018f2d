/* lib/fused.h -- one-pass loss and gradient for the single-layer model kinds.
 *
 * A single dense layer z = W x* (W is [k, 1+n], the bias in column 0, x* = (1, x)) followed by a
 * per-row loss needs only each row of X once: for every row, the k dot products, the loss term
 * and dz, then grad += dz ⊗ x*. The graph engine instead makes several passes over [rows, 1+n]
 * buffers (the bias copy, the matmul, the gradient with respect to the input); for a large batch
 * those passes, not the arithmetic, are the step. fused_loss_grad() does the one pass, in tiles
 * of rows that stay in cache between the forward and the gradient, split into parts run on the
 * process's shared compute pool (pool.h) when the batch is big enough to gain from it; each part
 * accumulates into a private gradient allocated by fused_new(), then one reduction.
 *
 *     fused_t *f = NULL;
 *     fused_new(FUSED_LOSS_CCE, n_x, classes, AD_REDUCTION_MEAN, pool, &f, &err);
 *     fused_loss_grad(f, W, x, y, rows, &loss, grad, &err);   // grad: k*(1+n) doubles
 *     fused_free(f);
 *
 * The results equal the graph's (model.c builds the same losses from ops.c) to rounding: the
 * formulas are the same, only the order of the sums differs.
 */
#ifndef ND_FUSED_H
#define ND_FUSED_H

#include <stdint.h>

#include "err.h"
#include "pool.h"

enum fused_loss {
    FUSED_LOSS_L2 = 1,         /* linear: Σ (z - y)², y [rows, k] */
    FUSED_LOSS_SIGMOID_L2 = 2, /* logistic, loss l2: Σ (σ(z) - y)², k = 1 */
    FUSED_LOSS_BCE = 3,        /* logistic: Σ softplus(z) - y z, k = 1 */
    FUSED_LOSS_CCE = 4,        /* softmax: Σ lse(z) - z_y, y [rows] class ids */
    FUSED_LOSS_OVA = 5,        /* ova: Σ_j bce(z_j, [y == j]), y [rows] class ids */
};

typedef struct fused fused_t;

/*
 * A fused evaluator for `loss` on rows of n inputs and k outputs (classes), reduced by
 * `reduction` (enum ad_reduction: mean divides by the rows). A call is cut into up to 8 parts by
 * its size alone, so its bytes never depend on the threads. pool: borrowed, must outlive the
 * evaluator, runs the parts in parallel; NULL runs them one after the other on the caller's
 * thread. Allocates the per-part gradients and scratch here. *out is new; free with
 * fused_free().
 */
int fused_new(int32_t loss, int32_t n, int32_t k, int32_t reduction, pool_t *pool,
              fused_t **out, err_t *err);

/* Free everything (the pool is not the evaluator's). NULL is a no-op. */
void fused_free(fused_t *f);

/*
 * Loss of `rows` rows (x: rows*n, y: rows*k for FUSED_LOSS_L2 and SIGMOID_L2, else rows) at the
 * parameters w ([k, 1+n] row major) into *loss; when grad is non-NULL also the gradient
 * (k*(1+n) doubles, overwritten). A class id that is not an integer in [0,k) for CCE is
 * ERR_INVAL with field "y", as the graph's cce_loss reports it. Allocates nothing.
 */
int fused_loss_grad(fused_t *f, const double *w, const double *x, const double *y, int32_t rows,
                    double *loss, double *grad, err_t *err);

/* Parts a large call is cut into: 8, fewer for a model too wide for 8 private gradients. */
int32_t fused_max_parts(const fused_t *f);

#endif /* ND_FUSED_H */
