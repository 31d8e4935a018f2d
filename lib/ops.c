/* lib/ops.c -- every graph op: shape pass, forward and backward in one function each, and the
 * table graph.c dispatches through (see ops.h). Backward passes ADD into the children's
 * gradients, so a node used twice collects both contributions. */
#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "numerics.h"

#define SHAPE_STR_MAX 48
/* Rows from which affine's forward computes the transposed product (measured on OpenBLAS 0.3.21,
 * 2 threads: 10000 x 784 -> 128 takes ~20% less time that way). */
#define AFFINE_T_MIN_ROWS 2048
/* Columns of dZ summed per sweep in affine's backward: one accumulator block on the stack. */
#define AFFINE_SUM_COLS 64
/* Values from which an elementwise pass is cut into one part per compute thread. */
#define SPAN_PART_MIN 32768

/* Passes over independent values (or columns) run over the node's compute threads in spans
 * starting at multiples of 8: each value is computed with the same instructions wherever its
 * span starts, so the bytes do not depend on the cut. fn gets the node as its context. */
static void run_spans(ad_node_t *p, int64_t n, int64_t min_len, pool_span_fn fn)
{
    pool_run_spans(p->pool, n, min_len, 8, fn, p);
}

/* ---- shape helpers (symbolic: AD_ROWS only equals AD_ROWS) ---------------------------------- */

int ad_shape_symbolic(const tensor_shape_t *s)
{
    for (int32_t i = 0; i < s->n_d; ++i)
        if (s->d[i] == AD_ROWS)
            return 1;
    return 0;
}

const char *ad_shape_str(const tensor_shape_t *s, char *buf, size_t size)
{
    size_t used = 0;
    if (size == 0)
        return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, size, "[");
    for (int32_t i = 0; i < s->n_d && used < size; ++i) {
        const char *sep = i > 0 ? "," : "";
        if (s->d[i] == AD_ROWS)
            used += (size_t)snprintf(buf + used, size - used, "%snull", sep);
        else
            used += (size_t)snprintf(buf + used, size - used, "%s%d", sep, (int)s->d[i]);
    }
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

static void set_shape(tensor_shape_t *s, int32_t n_d, int32_t d0, int32_t d1)
{
    s->n_d = n_d;
    s->d[0] = n_d > 0 ? d0 : 1;
    s->d[1] = n_d > 1 ? d1 : 1;
}

/* Exactly one element whatever the binding: [], [1], [1,1]. */
static int sym_one(const tensor_shape_t *s)
{
    for (int32_t i = 0; i < s->n_d; ++i)
        if (s->d[i] != 1)
            return 0;
    return 1;
}

/* A loss's target may be [m] against [m,1] (or the reverse): same rows, same element count. */
static int sym_loss_pair(const tensor_shape_t *a, const tensor_shape_t *b)
{
    if (tensor_shape_equal(a, b))
        return 1;
    if (a->n_d == 1 && b->n_d == 2)
        return b->d[1] == 1 && a->d[0] == b->d[0];
    if (a->n_d == 2 && b->n_d == 1)
        return a->d[1] == 1 && a->d[0] == b->d[0];
    return 0;
}

static int shape_error(ad_node_t *p, err_t *err, const char *rule)
{
    char s0[SHAPE_STR_MAX], s1[SHAPE_STR_MAX], s2[SHAPE_STR_MAX];
    const char *name = ad_op_table[p->op].name;
    if (p->n_child == 1)
        return err_set_field(err, ERR_SHAPE, p->id, "node '%s': %s of %s: %s", p->id, name,
                             ad_shape_str(&p->child[0]->sym, s0, sizeof s0), rule);
    if (p->n_child == 2)
        return err_set_field(err, ERR_SHAPE, p->id, "node '%s': %s of %s and %s: %s", p->id,
                             name, ad_shape_str(&p->child[0]->sym, s0, sizeof s0),
                             ad_shape_str(&p->child[1]->sym, s1, sizeof s1), rule);
    return err_set_field(err, ERR_SHAPE, p->id, "node '%s': %s of %s, %s and %s: %s", p->id, name,
                         ad_shape_str(&p->child[0]->sym, s0, sizeof s0),
                         ad_shape_str(&p->child[1]->sym, s1, sizeof s1),
                         ad_shape_str(&p->child[2]->sym, s2, sizeof s2), rule);
}

/* Element-wise binary: same shape, or one side has exactly one element and broadcasts. When
 * both have one element the higher rank wins, so [] * [1,1] is [1,1]. */
static int shape_binary(ad_node_t *p, err_t *err)
{
    const tensor_shape_t *a = &p->child[0]->sym, *b = &p->child[1]->sym;
    if (tensor_shape_equal(a, b))
        p->sym = *a;
    else if (sym_one(a) && sym_one(b))
        p->sym = a->n_d >= b->n_d ? *a : *b;
    else if (sym_one(b))
        p->sym = *a;
    else if (sym_one(a))
        p->sym = *b;
    else
        return shape_error(p, err, "shapes differ and neither is a single element");
    return 0;
}

static int shape_unary(ad_node_t *p)
{
    p->sym = p->child[0]->sym;
    return 0;
}

static int shape_loss(ad_node_t *p, err_t *err)
{
    if (!sym_loss_pair(&p->child[0]->sym, &p->child[1]->sym))
        return shape_error(p, err, "target must have the prediction's shape");
    set_shape(&p->sym, 0, 1, 1);
    return 0;
}

/* Rows and columns for per-row ops: a 1-D value (or a scalar) is one row. */
static void row_layout(const tensor_shape_t *s, int64_t *rows, int64_t *cols)
{
    if (s->n_d == 2) {
        *rows = s->d[0];
        *cols = s->d[1];
    } else {
        *rows = 1;
        *cols = tensor_shape_elems(s);
    }
}

/* What a "mean" loss divides by: the rows of its first input (1 for a scalar). */
static double loss_scale(const ad_node_t *p)
{
    if (p->reduction == AD_REDUCTION_SUM)
        return 1.0;
    return 1.0 / (double)tensor_shape_rows(&p->child[0]->shape);
}

/* ---- vector kernels ------------------------------------------------------------------------ */

/* The big element-wise passes of a training step (sigmoid on the hidden layer, the exps of
 * softmax and cce) run on numerics.h's vector exp, in the SSE2 baseline and in a clone built for
 * AVX2+FMA that is picked at run time. A group of four with a lane outside nm_exp4's range goes
 * to libm whole. */

/* y[i] = exp(x[i]) for i in [0, n); y may be x. */
NM_INLINE void exp_span_body(double *y, const double *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4d v;
        LD4(v, x + i);
        if (nm_in_range4(&v, NM_EXP4_LO, NM_EXP4_HI)) {
            nm_exp4(&v);
            ST4(y + i, v);
        } else {
            for (int j = 0; j < 4; ++j)
                y[i + j] = exp(x[i + j]);
        }
    }
    for (; i < n; ++i)
        y[i] = exp(x[i]);
}

/* y[i] = nm_sigmoid(x[i]), to the bit: e = exp(-|x|), then 1/(1+e) or e/(1+e). */
NM_INLINE void sigmoid_span_body(double *y, const double *x, int64_t n)
{
    const v4l sign = {INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4d v;
        LD4(v, x + i);
        v4d a = (v4d)((v4l)v | sign);             /* -|x| */
        if (!nm_in_range4(&a, NM_EXP4_LO, 0.0)) {
            for (int j = 0; j < 4; ++j)
                y[i + j] = nm_sigmoid(x[i + j]);
            continue;
        }
        v4d e = a;
        nm_exp4(&e);
        v4d d = 1.0 + e;
        v4d big = 1.0 / d, small = e / d;
        v4l pos = v >= 0.0;
        v4d out = VSEL(pos, big, small);
        ST4(y + i, out);
    }
    for (; i < n; ++i)
        y[i] = nm_sigmoid(x[i]);
}

static void exp_span_generic(double *y, const double *x, int64_t n)
{
    exp_span_body(y, x, n);
}

static void sigmoid_span_generic(double *y, const double *x, int64_t n)
{
    sigmoid_span_body(y, x, n);
}

#ifdef NM_X86_CLONES
__attribute__((target("avx2,fma"))) static void exp_span_avx2(double *y, const double *x,
                                                              int64_t n)
{
    exp_span_body(y, x, n);
}

__attribute__((target("avx2,fma"))) static void sigmoid_span_avx2(double *y, const double *x,
                                                                  int64_t n)
{
    sigmoid_span_body(y, x, n);
}
#endif

static void exp_span(double *y, const double *x, int64_t n)
{
#ifdef NM_X86_CLONES
    if (nm_have_avx2_fma()) {
        exp_span_avx2(y, x, n);
        return;
    }
#endif
    exp_span_generic(y, x, n);
}

static void sigmoid_span(double *y, const double *x, int64_t n)
{
#ifdef NM_X86_CLONES
    if (nm_have_avx2_fma()) {
        sigmoid_span_avx2(y, x, n);
        return;
    }
#endif
    sigmoid_span_generic(y, x, n);
}

/* Rows of z [rows, k] shifted by their max: d = z - max (d may be z), with the first argmax and
 * max of each row in arg[] and mx[]. Then exp_span(d) gives nm_row_lse()'s exps, with exactly
 * 1.0 at the argmax. */
static void rows_shift_max(const double *z, int64_t rows, int64_t k, double *d, double *mx,
                           double *arg)
{
    for (int64_t r = 0; r < rows; ++r) {
        const double *zr = z + r * k;
        int64_t a = 0;
        for (int64_t j = 1; j < k; ++j)
            if (zr[j] > zr[a])
                a = j;
        const double m = zr[a];
        double *dr = d + r * k;
        for (int64_t j = 0; j < k; ++j)
            dr[j] = zr[j] - m;
        mx[r] = m;
        arg[r] = (double)a;
    }
}

/* nm_row_lse()'s `rest` from the exps of a shifted row: every exp but the argmax's. */
static double row_rest(const double *e, int64_t k, int64_t arg)
{
    double s = 0.0;
    for (int64_t j = 0; j < k; ++j)
        if (j != arg)
            s += e[j];
    return s;
}

/* ---- leaves -------------------------------------------------------------------------------- */

/* input, param, const: graph.c sets their shape and value from the spec. */
static int op_leaf(ad_node_t *p, int pass, err_t *err)
{
    (void)p;
    (void)pass;
    (void)err;
    return 0;
}

/* ---- element-wise binary ------------------------------------------------------------------- */

/* A side with one element has stride 0 in the loops below, so its gradient sums naturally. */
#define BINARY_SETUP(p)                                                                        \
    const ad_node_t *a_ = (p)->child[0], *b_ = (p)->child[1];                                  \
    const double *a = a_->x, *b = b_->x;                                                       \
    double *ga = a_->g, *gb = b_->g;                                                           \
    const int64_t sa = a_->n == 1 ? 0 : 1, sb = b_->n == 1 ? 0 : 1, n = (p)->n;                \
    double *y = (p)->x;                                                                        \
    const double *gy = (p)->g;                                                                 \
    (void)a; (void)b; (void)ga; (void)gb; (void)y; (void)gy; (void)err

static int op_add(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_binary(p, err);
    BINARY_SETUP(p);
    if (pass == AD_PASS_FWD) {
        for (int64_t i = 0; i < n; ++i)
            y[i] = a[i * sa] + b[i * sb];
    } else {
        for (int64_t i = 0; i < n; ++i) {
            ga[i * sa] += gy[i];
            gb[i * sb] += gy[i];
        }
    }
    return 0;
}

static int op_sub(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_binary(p, err);
    BINARY_SETUP(p);
    if (pass == AD_PASS_FWD) {
        for (int64_t i = 0; i < n; ++i)
            y[i] = a[i * sa] - b[i * sb];
    } else {
        for (int64_t i = 0; i < n; ++i) {
            ga[i * sa] += gy[i];
            gb[i * sb] -= gy[i];
        }
    }
    return 0;
}

static int op_mul(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_binary(p, err);
    BINARY_SETUP(p);
    if (pass == AD_PASS_FWD) {
        for (int64_t i = 0; i < n; ++i)
            y[i] = a[i * sa] * b[i * sb];
    } else {
        for (int64_t i = 0; i < n; ++i) {
            ga[i * sa] += gy[i] * b[i * sb];
            gb[i * sb] += gy[i] * a[i * sa];
        }
    }
    return 0;
}

static int op_div(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_binary(p, err);
    BINARY_SETUP(p);
    if (pass == AD_PASS_FWD) {
        for (int64_t i = 0; i < n; ++i)
            y[i] = a[i * sa] / b[i * sb];
    } else {
        for (int64_t i = 0; i < n; ++i) {
            double bi = b[i * sb];
            ga[i * sa] += gy[i] / bi;
            gb[i * sb] -= gy[i] * a[i * sa] / (bi * bi);
        }
    }
    return 0;
}

static int op_max(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_binary(p, err);
    BINARY_SETUP(p);
    if (pass == AD_PASS_FWD) {
        for (int64_t i = 0; i < n; ++i)
            y[i] = a[i * sa] >= b[i * sb] ? a[i * sa] : b[i * sb];
    } else {
        for (int64_t i = 0; i < n; ++i) {
            if (a[i * sa] >= b[i * sb])
                ga[i * sa] += gy[i];
            else
                gb[i * sb] += gy[i];
        }
    }
    return 0;
}

static int op_min(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_binary(p, err);
    BINARY_SETUP(p);
    if (pass == AD_PASS_FWD) {
        for (int64_t i = 0; i < n; ++i)
            y[i] = a[i * sa] <= b[i * sb] ? a[i * sa] : b[i * sb];
    } else {
        for (int64_t i = 0; i < n; ++i) {
            if (a[i * sa] <= b[i * sb])
                ga[i * sa] += gy[i];
            else
                gb[i * sb] += gy[i];
        }
    }
    return 0;
}

/* ---- element-wise unary -------------------------------------------------------------------- */

#define UNARY_SETUP(p)                                                                         \
    const double *x = (p)->child[0]->x;                                                        \
    double *gx = (p)->child[0]->g, *y = (p)->x;                                                \
    const double *gy = (p)->g;                                                                 \
    const int64_t n = (p)->n;                                                                  \
    (void)x; (void)gx; (void)y; (void)gy; (void)err

static int op_neg(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_unary(p);
    UNARY_SETUP(p);
    if (pass == AD_PASS_FWD)
        for (int64_t i = 0; i < n; ++i)
            y[i] = -x[i];
    else
        for (int64_t i = 0; i < n; ++i)
            gx[i] -= gy[i];
    return 0;
}

static int op_exp(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_unary(p);
    UNARY_SETUP(p);
    if (pass == AD_PASS_FWD)
        for (int64_t i = 0; i < n; ++i)
            y[i] = exp(x[i]);
    else
        for (int64_t i = 0; i < n; ++i)
            gx[i] += gy[i] * y[i];
    return 0;
}

static int op_log(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_unary(p);
    UNARY_SETUP(p);
    if (pass == AD_PASS_FWD)
        for (int64_t i = 0; i < n; ++i)
            y[i] = log(x[i]);
    else
        for (int64_t i = 0; i < n; ++i)
            gx[i] += gy[i] / x[i];
    return 0;
}

static void sigmoid_fwd_span(void *node, int64_t lo, int64_t hi)
{
    const ad_node_t *p = node;
    sigmoid_span(p->x + lo, p->child[0]->x + lo, hi - lo);
}

static void sigmoid_bwd_span(void *node, int64_t lo, int64_t hi)
{
    const ad_node_t *p = node;
    const double *y = p->x, *gy = p->g;
    double *gx = p->child[0]->g;
    if (p->child[0]->g_assign)
        for (int64_t i = lo; i < hi; ++i)
            gx[i] = gy[i] * y[i] * (1.0 - y[i]);
    else
        for (int64_t i = lo; i < hi; ++i)
            gx[i] += gy[i] * y[i] * (1.0 - y[i]);
}

static int op_sigmoid(ad_node_t *p, int pass, err_t *err)
{
    (void)err;
    if (pass == AD_PASS_SHAPE)
        return shape_unary(p);
    run_spans(p, p->n, SPAN_PART_MIN, pass == AD_PASS_FWD ? sigmoid_fwd_span : sigmoid_bwd_span);
    return 0;
}

static int op_tanh(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_unary(p);
    UNARY_SETUP(p);
    if (pass == AD_PASS_FWD)
        for (int64_t i = 0; i < n; ++i)
            y[i] = tanh(x[i]);
    else
        for (int64_t i = 0; i < n; ++i)
            gx[i] += gy[i] * (1.0 - y[i] * y[i]);
    return 0;
}

/* relu's passes, y = x > 0 ? x : 0 and gx = (x > 0 ? gy : 0), stored or added. */
static void relu_fwd_generic(double *y, const double *x, int64_t lo, int64_t hi)
{
    for (int64_t i = lo; i < hi; ++i)
        y[i] = x[i] > 0.0 ? x[i] : 0.0;
}

static void relu_bwd_generic(double *gx, const double *x, const double *gy, int assign,
                             int64_t lo, int64_t hi)
{
    /* Two loops, not a test of `assign` in one: GCC unswitches loops only from -O3. */
    if (assign)
        for (int64_t i = lo; i < hi; ++i)
            gx[i] = x[i] > 0.0 ? gy[i] : 0.0;
    else
        for (int64_t i = lo; i < hi; ++i)
            gx[i] += x[i] > 0.0 ? gy[i] : 0.0;
}

#ifdef NM_X86_CLONES
/* The same four lanes at a time, choosing with a mask (VSEL), for the AVX2 clones only:
 * compiled for the SSE2 baseline the 4-lane compare goes through memory and is slower than the
 * loops above, and on AVX2 the branch those loops compile to mispredicts on about half of the
 * hidden units' signs, which made the backward pass of a 128-row batch of a 784-128-10 MLP cost
 * a third of that step's update of its 100 000 parameters. Same values: x > 0 is false for NaN,
 * so both give 0 there. */
NM_INLINE void relu_fwd_body(double *y, const double *x, int64_t lo, int64_t hi)
{
    int64_t i = lo;
    for (; i + 4 <= hi; i += 4) {
        v4d v;
        LD4(v, x + i);
        const v4d out = VSEL(v > 0.0, v, V4(0.0));
        ST4(y + i, out);
    }
    relu_fwd_generic(y, x, i, hi);
}

NM_INLINE void relu_bwd_body(double *gx, const double *x, const double *gy, int assign,
                             int64_t lo, int64_t hi)
{
    int64_t i = lo;
    for (; i + 4 <= hi; i += 4) {
        v4d v, g, out;
        LD4(v, x + i);
        LD4(g, gy + i);
        out = VSEL(v > 0.0, g, V4(0.0));
        if (!assign) {
            v4d acc;
            LD4(acc, gx + i);
            out = acc + out;
        }
        ST4(gx + i, out);
    }
    relu_bwd_generic(gx, x, gy, assign, i, hi);
}

__attribute__((target("avx2,fma"))) static void relu_fwd_avx2(double *y, const double *x,
                                                              int64_t lo, int64_t hi)
{
    relu_fwd_body(y, x, lo, hi);
}

__attribute__((target("avx2,fma"))) static void
relu_bwd_avx2(double *gx, const double *x, const double *gy, int assign, int64_t lo, int64_t hi)
{
    relu_bwd_body(gx, x, gy, assign, lo, hi);
}
#endif

static void relu_fwd_span(void *node, int64_t lo, int64_t hi)
{
    const ad_node_t *p = node;
#ifdef NM_X86_CLONES
    if (nm_have_avx2_fma()) {
        relu_fwd_avx2(p->x, p->child[0]->x, lo, hi);
        return;
    }
#endif
    relu_fwd_generic(p->x, p->child[0]->x, lo, hi);
}

static void relu_bwd_span(void *node, int64_t lo, int64_t hi)
{
    const ad_node_t *p = node;
    const ad_node_t *c = p->child[0];
#ifdef NM_X86_CLONES
    if (nm_have_avx2_fma()) {
        relu_bwd_avx2(c->g, c->x, p->g, c->g_assign, lo, hi);
        return;
    }
#endif
    relu_bwd_generic(c->g, c->x, p->g, c->g_assign, lo, hi);
}

static int op_relu(ad_node_t *p, int pass, err_t *err)
{
    (void)err;
    if (pass == AD_PASS_SHAPE)
        return shape_unary(p);
    run_spans(p, p->n, SPAN_PART_MIN, pass == AD_PASS_FWD ? relu_fwd_span : relu_bwd_span);
    return 0;
}

/* Piecewise constant: its gradient is zero everywhere it exists, so backward adds nothing. */
static int op_step(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_unary(p);
    UNARY_SETUP(p);
    if (pass == AD_PASS_FWD)
        for (int64_t i = 0; i < n; ++i)
            y[i] = x[i] > 0.0 ? 1.0 : 0.0;
    return 0;
}

static int op_square(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_unary(p);
    UNARY_SETUP(p);
    if (pass == AD_PASS_FWD)
        for (int64_t i = 0; i < n; ++i)
            y[i] = x[i] * x[i];
    else
        for (int64_t i = 0; i < n; ++i)
            gx[i] += 2.0 * x[i] * gy[i];
    return 0;
}

/* ---- reductions ---------------------------------------------------------------------------- */

/* Sum of all elements, divided by their count for a mean (a division, not a multiplication by
 * 1/n, so the value is the correctly rounded mean of the sum). */
static int reduce_all(ad_node_t *p, int pass, int mean)
{
    ad_node_t *c = p->child[0];
    if (pass == AD_PASS_SHAPE) {
        set_shape(&p->sym, 0, 1, 1);
        return 0;
    }
    if (pass == AD_PASS_FWD) {
        double s = 0.0;
        for (int64_t i = 0; i < c->n; ++i)
            s += c->x[i];
        p->x[0] = mean ? s / (double)c->n : s;
    } else {
        double g = mean ? p->g[0] / (double)c->n : p->g[0];
        for (int64_t i = 0; i < c->n; ++i)
            c->g[i] += g;
    }
    return 0;
}

static int op_sum(ad_node_t *p, int pass, err_t *err)
{
    (void)err;
    return reduce_all(p, pass, 0);
}

static int op_mean(ad_node_t *p, int pass, err_t *err)
{
    (void)err;
    return reduce_all(p, pass, 1);
}

/* ---- matrix ops ---------------------------------------------------------------------------- */

/* C[m,n] = A[m,k] op(B), op(B) = B[k,n] or, with transpose_b, B[n,k]^T. Backward uses the trans
 * flags of tensor_gemm instead of materialising any transpose:
 *   dA += dC op(B)^T,   dB += A^T dC (or dC^T A when B is transposed). */
static int op_matmul(ad_node_t *p, int pass, err_t *err)
{
    ad_node_t *A = p->child[0], *B = p->child[1];
    if (pass == AD_PASS_SHAPE) {
        if (A->sym.n_d != 2 || B->sym.n_d != 2)
            return shape_error(p, err, "both sides must be 2-D");
        int32_t kb = p->transpose_b ? B->sym.d[1] : B->sym.d[0];
        int32_t nb = p->transpose_b ? B->sym.d[0] : B->sym.d[1];
        if (A->sym.d[1] != kb)
            return shape_error(p, err, p->transpose_b
                                           ? "inner dimensions differ (B is transposed)"
                                           : "inner dimensions differ");
        set_shape(&p->sym, 2, A->sym.d[0], nb);
        return 0;
    }
    const int tb = p->transpose_b != 0;
    const int32_t m = A->shape.d[0], k = A->shape.d[1];
    const int32_t n = tb ? B->shape.d[0] : B->shape.d[1];
    const int32_t ldb = B->shape.d[1];
    if (pass == AD_PASS_FWD) {
        tensor_gemm_on(p->pool, 0, tb, m, n, k, 1.0, A->x, k, B->x, ldb, 0.0, p->x, n);
        return 0;
    }
    /* dA[m,k] += dC[m,n] op(B)^T: op(B)^T is B^T when B is plain [k,n], B itself when B is [n,k]. */
    if (!A->no_grad)
        tensor_gemm_on(p->pool, 0, !tb, m, k, n, 1.0, p->g, n, B->x, ldb, 1.0, A->g, k);
    if (B->no_grad)
        return 0;
    if (tb) /* dB[n,k] += dC^T[n,m] A[m,k] */
        tensor_gemm_on(p->pool, 1, 0, n, k, m, 1.0, p->g, n, A->x, k, 1.0, B->g, k);
    else    /* dB[k,n] += A^T[k,m] dC[m,n] */
        tensor_gemm_on(p->pool, 1, 0, k, n, m, 1.0, A->x, k, p->g, n, 1.0, B->g, n);
    return 0;
}

/* z[i,j] = zt[j,i] + w[j * ldw] for z [m,k], columns [j_lo, j_hi). Tiles of 16 columns by 64
 * rows keep the 16 source rows' lines in L1 while each output row segment is written whole
 * (measured 2x faster than 32x32 tiles for 10000 x 128). */
static void transpose_add_bias(const double *zt, int64_t m, int64_t k, const double *w,
                               int64_t ldw, double *z, int64_t j_lo, int64_t j_hi)
{
    enum { TI = 64, TJ = 16 };
    double b[TJ];
    for (int64_t j0 = j_lo; j0 < j_hi; j0 += TJ) {
        const int64_t nj = j_hi - j0 < TJ ? j_hi - j0 : TJ;
        for (int64_t j = 0; j < nj; ++j)
            b[j] = w[(j0 + j) * ldw];
        for (int64_t i0 = 0; i0 < m; i0 += TI) {
            const int64_t i1 = i0 + TI < m ? i0 + TI : m;
            for (int64_t i = i0; i < i1; ++i)
                for (int64_t j = 0; j < nj; ++j)
                    z[i * k + j0 + j] = zt[(j0 + j) * m + i] + b[j];
        }
    }
}

/* Affine's forward from the transposed product, columns [lo, hi) of Z. */
static void affine_untranspose_span(void *node, int64_t lo, int64_t hi)
{
    const ad_node_t *p = node;
    const ad_node_t *W = p->child[1];
    transpose_add_bias(p->scratch, p->child[0]->shape.d[0], W->shape.d[0], W->x,
                       p->child[0]->shape.d[1] + 1, p->x, lo, hi);
}

/* dW[:,0] += column sums of dZ (stored, not added, under W's g_assign) for columns [lo, hi), a
 * block of columns at a time so the inner loop is contiguous (and vectorised); each column is
 * still summed over the rows in order. */
static void affine_bias_grad_span(void *node, int64_t lo, int64_t hi)
{
    const ad_node_t *p = node;
    const ad_node_t *W = p->child[1];
    const int64_t m = p->child[0]->shape.d[0], k = W->shape.d[0];
    const int64_t ldw = p->child[0]->shape.d[1] + 1;
    for (int64_t j0 = lo; j0 < hi; j0 += AFFINE_SUM_COLS) {
        const int64_t nj = hi - j0 < AFFINE_SUM_COLS ? hi - j0 : AFFINE_SUM_COLS;
        double acc[AFFINE_SUM_COLS] = {0};
        for (int64_t i = 0; i < m; ++i) {
            const double *gr = p->g + i * k + j0;
            for (int64_t j = 0; j < nj; ++j)
                acc[j] += gr[j];
        }
        for (int64_t j = 0; j < nj; ++j)
            W->g[(j0 + j) * ldw] = W->g_assign ? acc[j] : W->g[(j0 + j) * ldw] + acc[j];
    }
}

/* Z[m,k] = H[m,n] W[:,1:]^T + W[:,0] for W [k,1+n]: bias(H) W^T without the [m,1+n] copy of H
 * (and without its gradient). The products read W with row stride 1+n from its column 1:
 *   dH += dZ W[:,1:],   dW[:,1:] += dZ^T H,   dW[:,0] += column sums of dZ,
 * each "+=" an "=" when that child's g_assign is set (beta 0 for the products). */
static int op_affine(ad_node_t *p, int pass, err_t *err)
{
    ad_node_t *H = p->child[0], *W = p->child[1];
    if (pass == AD_PASS_SHAPE) {
        if (H->sym.n_d != 2 || W->sym.n_d != 2)
            return shape_error(p, err, "both must be 2-D");
        if (H->sym.d[1] == AD_ROWS || W->sym.d[1] == AD_ROWS || W->sym.d[0] == AD_ROWS)
            return shape_error(p, err, "only the rows of h may depend on the batch");
        if (W->sym.d[1] != H->sym.d[1] + 1)
            return shape_error(p, err, "W must be [k, 1 + columns of h]");
        set_shape(&p->sym, 2, H->sym.d[0], W->sym.d[0]);
        return 0;
    }
    const int32_t m = H->shape.d[0], n = H->shape.d[1], k = W->shape.d[0], ldw = n + 1;
    if (pass == AD_PASS_FWD) {
        if (p->scratch != NULL && m >= AFFINE_T_MIN_ROWS) {
            /* Z^T = W[:,1:] H^T: OpenBLAS 0.3.21 runs this form of the product faster than
             * H W[:,1:]^T for many rows (see AFFINE_T_MIN_ROWS); the bias goes in with the
             * transposition back. */
            tensor_gemm_on(p->pool, 0, 1, k, m, n, 1.0, W->x + 1, ldw, H->x, n, 0.0, p->scratch,
                           m);
            run_spans(p, k, 8 + SPAN_PART_MIN / m, affine_untranspose_span);
            return 0;
        }
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < k; ++j)
                p->x[i * k + j] = W->x[j * ldw];
        tensor_gemm_on(p->pool, 0, 1, m, k, n, 1.0, H->x, n, W->x + 1, ldw, 1.0, p->x, k);
        return 0;
    }
    if (!H->no_grad)
        tensor_gemm_on(p->pool, 0, 0, m, n, k, 1.0, p->g, k, W->x + 1, ldw,
                       H->g_assign ? 0.0 : 1.0, H->g, n);
    if (W->no_grad)
        return 0;
    tensor_gemm_on(p->pool, 1, 0, k, n, m, 1.0, p->g, k, H->x, n, W->g_assign ? 0.0 : 1.0,
                   W->g + 1, ldw);
    run_spans(p, k, 8 + SPAN_PART_MIN / m, affine_bias_grad_span);
    return 0;
}

/* [m,n] -> [m,1+n] with column 0 all ones: the bias column of docs/api.md "Parameter layout". */
static int op_bias(ad_node_t *p, int pass, err_t *err)
{
    ad_node_t *c = p->child[0];
    if (pass == AD_PASS_SHAPE) {
        if (c->sym.n_d != 2)
            return shape_error(p, err, "must be 2-D");
        if (c->sym.d[1] == AD_ROWS)
            return shape_error(p, err, "the column count must not depend on the rows");
        set_shape(&p->sym, 2, c->sym.d[0], c->sym.d[1] + 1);
        return 0;
    }
    const int64_t m = c->shape.d[0], n = c->shape.d[1];
    if (pass == AD_PASS_BWD && c->no_grad)
        return 0;
    for (int64_t i = 0; i < m; ++i) {
        double *yr = p->x + i * (n + 1);
        if (pass == AD_PASS_FWD) {
            yr[0] = 1.0;
            memcpy(yr + 1, c->x + i * n, (size_t)n * sizeof *yr);
        } else {
            const double *gr = p->g + i * (n + 1) + 1;
            double *gx = c->g + i * n;
            for (int64_t j = 0; j < n; ++j)
                gx[j] += gr[j];
        }
    }
    return 0;
}

static int op_transpose(ad_node_t *p, int pass, err_t *err)
{
    ad_node_t *c = p->child[0];
    if (pass == AD_PASS_SHAPE) {
        if (c->sym.n_d != 2)
            return shape_error(p, err, "must be 2-D");
        set_shape(&p->sym, 2, c->sym.d[1], c->sym.d[0]);
        return 0;
    }
    const int64_t m = c->shape.d[0], n = c->shape.d[1];
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            if (pass == AD_PASS_FWD)
                p->x[j * m + i] = c->x[i * n + j];
            else
                c->g[i * n + j] += p->g[j * m + i];
        }
    return 0;
}

/* ---- per-row ops --------------------------------------------------------------------------- */

static int op_softmax(ad_node_t *p, int pass, err_t *err)
{
    ad_node_t *c = p->child[0];
    (void)err;
    if (pass == AD_PASS_SHAPE)
        return shape_unary(p);
    int64_t rows, k;
    row_layout(&c->shape, &rows, &k);
    for (int64_t r = 0; r < rows; ++r) {
        double *y = p->x + r * k;
        if (pass == AD_PASS_FWD) {
            if (r == 0) { /* all rows' exps at once, into y */
                double *mx = p->scratch, *arg = p->scratch + rows;
                rows_shift_max(c->x, rows, k, p->x, mx, arg);
                exp_span(p->x, p->x, rows * k);
            }
            const int64_t arg = (int64_t)p->scratch[rows + r];
            double denom = 1.0 + row_rest(y, k, arg);
            for (int64_t j = 0; j < k; ++j)
                y[j] = (j == arg ? 1.0 : y[j]) / denom;
        } else {
            /* dz_j = y_j (g_j - sum_i g_i y_i) */
            const double *gy = p->g + r * k;
            double *gz = c->g + r * k, dot = 0.0;
            for (int64_t j = 0; j < k; ++j)
                dot += gy[j] * y[j];
            for (int64_t j = 0; j < k; ++j)
                gz[j] += y[j] * (gy[j] - dot);
        }
    }
    return 0;
}

static int op_log_softmax(ad_node_t *p, int pass, err_t *err)
{
    ad_node_t *c = p->child[0];
    (void)err;
    if (pass == AD_PASS_SHAPE)
        return shape_unary(p);
    int64_t rows, k;
    row_layout(&c->shape, &rows, &k);
    for (int64_t r = 0; r < rows; ++r) {
        const double *z = c->x + r * k;
        double *y = p->x + r * k;
        if (pass == AD_PASS_FWD) {
            double mx, rest;
            int64_t arg;
            nm_row_lse(z, k, NULL, &mx, &arg, &rest);
            double l1p = log1p(rest);
            for (int64_t j = 0; j < k; ++j)
                y[j] = (z[j] - mx) - l1p;
        } else {
            /* dz_j = g_j - softmax_j sum_i g_i, softmax_j = exp(y_j) */
            const double *gy = p->g + r * k;
            double *gz = c->g + r * k, s = 0.0;
            for (int64_t j = 0; j < k; ++j)
                s += gy[j];
            for (int64_t j = 0; j < k; ++j)
                gz[j] += gy[j] - exp(y[j]) * s;
        }
    }
    return 0;
}

/* ---- losses -------------------------------------------------------------------------------- */

static int op_l2_loss(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_loss(p, err);
    ad_node_t *o = p->child[0], *t = p->child[1];
    const double scale = loss_scale(p);
    if (pass == AD_PASS_FWD) {
        double s = 0.0;
        for (int64_t i = 0; i < o->n; ++i) {
            double d = o->x[i] - t->x[i];
            s += d * d;
        }
        p->x[0] = s * scale;
    } else {
        const double g = 2.0 * scale * p->g[0];
        if (t->no_grad) {
            for (int64_t i = 0; i < o->n; ++i)
                o->g[i] += g * (o->x[i] - t->x[i]);
            return 0;
        }
        for (int64_t i = 0; i < o->n; ++i) {
            double d = g * (o->x[i] - t->x[i]);
            o->g[i] += d;
            t->g[i] -= d;
        }
    }
    return 0;
}

static int op_bce_loss(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_loss(p, err);
    ad_node_t *z = p->child[0], *t = p->child[1];
    const double scale = loss_scale(p);
    if (pass == AD_PASS_FWD) {
        double s = 0.0;
        for (int64_t i = 0; i < z->n; ++i)
            s += nm_bce_term(z->x[i], t->x[i]);
        p->x[0] = s * scale;
    } else {
        const double g = scale * p->g[0];
        for (int64_t i = 0; i < z->n; ++i)
            z->g[i] += g * nm_bce_grad(z->x[i], t->x[i]);
        if (!t->no_grad)
            for (int64_t i = 0; i < z->n; ++i)
                t->g[i] -= g * z->x[i];
    }
    return 0;
}

static int op_cce_loss(ad_node_t *p, int pass, err_t *err)
{
    ad_node_t *z = p->child[0], *t = p->child[1];
    if (pass == AD_PASS_SHAPE) {
        const tensor_shape_t *zs = &z->sym, *ts = &t->sym;
        if (zs->n_d != 2)
            return shape_error(p, err, "logits must be 2-D [rows,classes]");
        if (zs->d[1] == AD_ROWS)
            return shape_error(p, err, "the class count must not depend on the rows");
        int ok = (ts->n_d == 1 && ts->d[0] == zs->d[0]) ||
                 (ts->n_d == 2 && ts->d[1] == 1 && ts->d[0] == zs->d[0]);
        if (!ok)
            return shape_error(p, err, "class ids must be [rows] or [rows,1]");
        set_shape(&p->sym, 0, 1, 1);
        return 0;
    }
    const int64_t m = z->shape.d[0], k = z->shape.d[1];
    const double scale = loss_scale(p);
    /* Forward keeps nm_row_lse()'s pieces for backward: the exps e [m,k], and per row the max,
     * the argmax and `rest`. */
    double *e = p->scratch, *mx = e + m * k, *arg = mx + m, *rest = arg + m;
    if (pass == AD_PASS_FWD) {
        for (int64_t r = 0; r < m; ++r) {
            double c = t->x[r];
            if (!(c >= 0.0 && c < (double)k && c == floor(c)))
                return err_set_field(err, ERR_INVAL, t->id,
                                     "node '%s': cce_loss: row %lld: class %g is not an integer "
                                     "in [0,%lld)",
                                     p->id, (long long)r, c, (long long)k);
        }
        rows_shift_max(z->x, m, k, e, mx, arg);
        exp_span(e, e, m * k);
        double s = 0.0;
        for (int64_t r = 0; r < m; ++r) {
            rest[r] = row_rest(e + r * k, k, (int64_t)arg[r]);
            s += (mx[r] - z->x[r * k + (int64_t)t->x[r]]) + log1p(rest[r]);
        }
        p->x[0] = s * scale;
        return 0;
    }
    /* dz_j = softmax_j - [j == y]; for y the argmax that is -rest/(1+rest), exact when tiny. */
    const double g = scale * p->g[0];
    const int assign = z->g_assign;
    for (int64_t r = 0; r < m; ++r) {
        const double *er = e + r * k;
        double *gz = z->g + r * k;
        const int64_t a = (int64_t)arg[r], c = (int64_t)t->x[r];
        const double denom = 1.0 + rest[r];
        for (int64_t j = 0; j < k; ++j) {
            double pj = (j == a ? 1.0 : er[j]) / denom;
            if (j == c)
                pj = j == a ? -rest[r] / denom : pj - 1.0;
            gz[j] = (assign ? 0.0 : gz[j]) + g * pj;
        }
    }
    return 0;
}

/* sum_i w_i (softplus(z_i) - t_i z_i); the caller folds any reduction into w. */
static int op_wbce_loss(ad_node_t *p, int pass, err_t *err)
{
    ad_node_t *z = p->child[0], *t = p->child[1], *w = p->child[2];
    if (pass == AD_PASS_SHAPE) {
        if (!sym_loss_pair(&z->sym, &t->sym) || !sym_loss_pair(&z->sym, &w->sym))
            return shape_error(p, err, "targets and weights must have the logits' shape");
        set_shape(&p->sym, 0, 1, 1);
        return 0;
    }
    if (pass == AD_PASS_FWD) {
        double s = 0.0;
        for (int64_t i = 0; i < z->n; ++i)
            s += w->x[i] * nm_bce_term(z->x[i], t->x[i]);
        p->x[0] = s;
    } else {
        const double g = p->g[0];
        for (int64_t i = 0; i < z->n; ++i)
            z->g[i] += g * w->x[i] * nm_bce_grad(z->x[i], t->x[i]);
        if (!t->no_grad)
            for (int64_t i = 0; i < z->n; ++i)
                t->g[i] -= g * w->x[i] * z->x[i];
        if (!w->no_grad)
            for (int64_t i = 0; i < z->n; ++i)
                w->g[i] += g * nm_bce_term(z->x[i], t->x[i]);
    }
    return 0;
}

/* Forward counts rows where step(z) != y (a fraction when mean). Backward sends step(z) - y to z
 * whatever the reduction: then sgd on it is exactly the perceptron rule theta += eta (y - yhat) x*,
 * summed over the rows. */
static int op_perceptron_loss(ad_node_t *p, int pass, err_t *err)
{
    if (pass == AD_PASS_SHAPE)
        return shape_loss(p, err);
    ad_node_t *z = p->child[0], *t = p->child[1];
    if (pass == AD_PASS_FWD) {
        double s = 0.0;
        for (int64_t i = 0; i < z->n; ++i)
            s += (z->x[i] > 0.0 ? 1.0 : 0.0) != t->x[i] ? 1.0 : 0.0;
        p->x[0] = s * loss_scale(p);
    } else {
        for (int64_t i = 0; i < z->n; ++i)
            z->g[i] += p->g[0] * ((z->x[i] > 0.0 ? 1.0 : 0.0) - t->x[i]);
    }
    return 0;
}

/* ---- the table ----------------------------------------------------------------------------- */

const ad_op_info_t ad_op_table[AD_OP_COUNT] = {
    [AD_OP_NONE] = {NULL, -1, NULL},
    [AD_OP_INPUT] = {"input", 0, op_leaf},
    [AD_OP_PARAM] = {"param", 0, op_leaf},
    [AD_OP_CONST] = {"const", 0, op_leaf},
    [AD_OP_ADD] = {"add", 2, op_add},
    [AD_OP_SUB] = {"sub", 2, op_sub},
    [AD_OP_MUL] = {"mul", 2, op_mul},
    [AD_OP_DIV] = {"div", 2, op_div},
    [AD_OP_NEG] = {"neg", 1, op_neg},
    [AD_OP_MATMUL] = {"matmul", 2, op_matmul},
    [AD_OP_BIAS] = {"bias", 1, op_bias},
    [AD_OP_TRANSPOSE] = {"transpose", 1, op_transpose},
    [AD_OP_EXP] = {"exp", 1, op_exp},
    [AD_OP_LOG] = {"log", 1, op_log},
    [AD_OP_SIGMOID] = {"sigmoid", 1, op_sigmoid},
    [AD_OP_TANH] = {"tanh", 1, op_tanh},
    [AD_OP_RELU] = {"relu", 1, op_relu},
    [AD_OP_STEP] = {"step", 1, op_step},
    [AD_OP_MAX] = {"max", 2, op_max},
    [AD_OP_MIN] = {"min", 2, op_min},
    [AD_OP_SQUARE] = {"square", 1, op_square},
    [AD_OP_SUM] = {"sum", 1, op_sum},
    [AD_OP_MEAN] = {"mean", 1, op_mean},
    [AD_OP_SOFTMAX] = {"softmax", 1, op_softmax},
    [AD_OP_LOG_SOFTMAX] = {"log_softmax", 1, op_log_softmax},
    [AD_OP_L2_LOSS] = {"l2_loss", 2, op_l2_loss},
    [AD_OP_BCE_LOSS] = {"bce_loss", 2, op_bce_loss},
    [AD_OP_CCE_LOSS] = {"cce_loss", 2, op_cce_loss},
    [AD_OP_PUBLIC_END] = {NULL, -1, NULL},
    [AD_OP_WBCE_LOSS] = {"wbce_loss", 3, op_wbce_loss},
    [AD_OP_PERCEPTRON_LOSS] = {"perceptron_loss", 2, op_perceptron_loss},
    [AD_OP_AFFINE] = {"affine", 2, op_affine},
};

int ad_op_skips_no_grad(int32_t op)
{
    switch (op) {
    case AD_OP_MATMUL:
    case AD_OP_AFFINE:
    case AD_OP_BIAS:
    case AD_OP_L2_LOSS:
    case AD_OP_BCE_LOSS:
    case AD_OP_CCE_LOSS:          /* never writes its class ids' gradient */
    case AD_OP_WBCE_LOSS:
    case AD_OP_PERCEPTRON_LOSS:   /* nor its labels' */
        return 1;
    default:
        return 0;
    }
}

int ad_op_assigns_grad(int32_t op, int32_t k)
{
    if (op == AD_OP_AFFINE)
        return k == 0 || k == 1;
    return k == 0 && (op == AD_OP_SIGMOID || op == AD_OP_RELU || op == AD_OP_CCE_LOSS);
}

/* The [k, m] product before its transposition back, when m is large enough to gain. */
static int64_t affine_scratch(const ad_node_t *p, int32_t rows)
{
    const tensor_shape_t *h = &p->child[0]->sym, *w = &p->child[1]->sym;
    int64_t m = h->d[0] == AD_ROWS ? rows : h->d[0];
    return m >= AFFINE_T_MIN_ROWS ? m * (int64_t)w->d[0] : 0;
}

int64_t ad_op_scratch(const ad_node_t *p, int32_t rows)
{
    int64_t r, k;
    if (p->op == AD_OP_AFFINE)
        return affine_scratch(p, rows);
    if (p->op != AD_OP_SOFTMAX && p->op != AD_OP_CCE_LOSS)
        return 0;
    tensor_shape_t s = p->child[0]->sym;
    for (int32_t d = 0; d < s.n_d; ++d)
        if (s.d[d] == AD_ROWS)
            s.d[d] = rows;
    row_layout(&s, &r, &k);
    return p->op == AD_OP_SOFTMAX ? 2 * r : r * k + 3 * r;
}

int32_t ad_op_from_name(const char *name)
{
    if (name == NULL)
        return AD_OP_NONE;
    for (int32_t op = AD_OP_NONE + 1; op < AD_OP_PUBLIC_END; ++op)
        if (strcmp(ad_op_table[op].name, name) == 0)
            return op;
    return AD_OP_NONE;
}

const char *ad_op_name(int32_t op)
{
    if (op <= AD_OP_NONE || op >= AD_OP_COUNT)
        return NULL;
    return ad_op_table[op].name;
}

int32_t ad_op_arity(int32_t op)
{
    if (op <= AD_OP_NONE || op >= AD_OP_COUNT)
        return -1;
    return ad_op_table[op].arity;
}
