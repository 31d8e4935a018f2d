/* tests/unit/test_ops.c -- every op's forward on known values, and its backward against central
 * finite differences (every op's gradient is checked this way), plus the numerics that must hold at extreme logits. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "testutil.h"

#define EPS 1e-6

static const tensor_shape_t S0 = {0, {1, 1}};

static tensor_shape_t shp(int32_t n_d, int32_t d0, int32_t d1)
{
    tensor_shape_t s = {n_d, {n_d > 0 ? d0 : 1, n_d > 1 ? d1 : 1}};
    return s;
}

static void leaf(ad_graph_spec_t *s, const char *id, int32_t op, tensor_shape_t sh,
                 const double *v)
{
    err_t err = {0};
    ck_assert_int_eq(ad_graph_spec_add(s, id, op, 0, NULL, &sh, v, 0, 0, &err), 0);
}

static void node(ad_graph_spec_t *s, const char *id, int32_t op, const char *a, const char *b,
                 const char *c, int32_t red, int32_t tb)
{
    const char *in[3] = {a, b, c};
    int32_t n = c != NULL ? 3 : b != NULL ? 2 : 1;
    err_t err = {0};
    ck_assert_int_eq(ad_graph_spec_add(s, id, op, n, in, NULL, NULL, red, tb, &err), 0);
}

static ad_graph_t *build(ad_graph_spec_t *s, const char *out)
{
    ad_graph_t *g = NULL;
    err_t err = {0};
    strcpy(s->output, out);
    int rc = ad_graph_build(s, 0, &g, &err);
    ck_assert_msg(rc == 0, "build: %s (field %s)", err.msg, err.field);
    ad_graph_spec_free(s);
    return g;
}

static double *val(ad_graph_t *g, const char *id)
{
    int32_t i = ad_find(g, id);
    ck_assert_int_ge(i, 0);
    return ad_value(g, i);
}

static double *grd(ad_graph_t *g, const char *id)
{
    return ad_grad(g, ad_find(g, id));
}

static int64_t elems(ad_graph_t *g, const char *id)
{
    return tensor_shape_elems(ad_shape(g, ad_find(g, id)));
}

static void fwd(ad_graph_t *g)
{
    err_t err = {0};
    int rc = ad_forward(g, &err);
    ck_assert_msg(rc == 0, "forward: %s", err.msg);
}

/* Keep values a finite difference can straddle away from kinks and poles. */
static void fill(ad_graph_t *g, const char *id, double lo, double hi, uint64_t seed)
{
    double *x = val(g, id);
    int64_t n = elems(g, id);
    testutil_fill(x, n, lo, hi, seed);
    for (int64_t i = 0; i < n; ++i)
        if (fabs(x[i]) < 0.05)
            x[i] = x[i] < 0 ? -0.05 - x[i] : 0.05 + x[i];
}

static double dot_out(ad_graph_t *g, int32_t out, const double *seed)
{
    fwd(g);
    const double *y = ad_value(g, out);
    double s = 0.0;
    for (int64_t i = 0; i < tensor_shape_elems(ad_shape(g, out)); ++i)
        s += seed[i] * y[i];
    return s;
}

/* d(seed . out)/d(leaf) by backward against central differences, for each named leaf. */
static void gradcheck(ad_graph_t *g, const char *out_id, const char *const *leaves, int n_leaf)
{
    err_t err = {0};
    int32_t out = ad_find(g, out_id);
    int64_t n_out = elems(g, out_id);
    double *seed = malloc((size_t)n_out * sizeof *seed);
    testutil_fill(seed, n_out, -1.0, 1.0, 99);
    if (n_out == 1)
        seed[0] = 1.0;
    fwd(g);
    ck_assert_int_eq(ad_backward_seed(g, out, seed, &err), 0);
    for (int l = 0; l < n_leaf; ++l) {
        int64_t n = elems(g, leaves[l]);
        double *x = val(g, leaves[l]);
        double *an = malloc((size_t)n * sizeof *an);
        memcpy(an, grd(g, leaves[l]), (size_t)n * sizeof *an);
        for (int64_t i = 0; i < n; ++i) {
            double x0 = x[i];
            x[i] = x0 + EPS;
            double fp = dot_out(g, out, seed);
            x[i] = x0 - EPS;
            double fm = dot_out(g, out, seed);
            x[i] = x0;
            double fd = (fp - fm) / (2.0 * EPS);
            ck_assert_msg(testutil_close(an[i], fd, 1e-6, 1e-7),
                          "%s: d/d%s[%lld] backward %.12g vs finite difference %.12g", out_id,
                          leaves[l], (long long)i, an[i], fd);
        }
        free(an);
    }
    free(seed);
}

static void bind(ad_graph_t *g, int32_t rows)
{
    err_t err = {0};
    ck_assert_int_eq(ad_graph_bind(g, rows, &err), 0);
}

/* ---- element-wise binary ------------------------------------------------------------------- */

static const int32_t BINOPS[] = {AD_OP_ADD, AD_OP_SUB, AD_OP_MUL, AD_OP_DIV, AD_OP_MAX, AD_OP_MIN};

START_TEST(binary_same_shape_rows)
{
    int32_t op = BINOPS[_i];
    ad_graph_spec_t s = {0};
    leaf(&s, "a", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    leaf(&s, "b", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    leaf(&s, "c", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    node(&s, "y", op, "a", "c", NULL, 0, 0);
    node(&s, "y2", op, "y", "b", NULL, 0, 0);
    ad_graph_t *g = build(&s, "y2");
    bind(g, 4);
    fill(g, "a", 0.5, 2.0, 1);
    fill(g, "b", -2.0, 2.0, 2);
    fill(g, "c", -2.0, -0.5, 3);
    if (op == AD_OP_DIV)
        fill(g, "b", 0.5, 2.0, 2);
    const char *leaves[] = {"a", "b", "c"};
    gradcheck(g, "y2", leaves, 3);
    ad_graph_free(g);
}
END_TEST

/* A single element ([], [1] or [1,1]) on either side broadcasts; its gradient is the sum. */
START_TEST(binary_broadcast_scalar)
{
    int32_t op = BINOPS[_i];
    const tensor_shape_t one[3] = {S0, shp(1, 1, 1), shp(2, 1, 1)};
    for (int k = 0; k < 3; ++k) {
        ad_graph_spec_t s = {0};
        leaf(&s, "m", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
        leaf(&s, "k", AD_OP_PARAM, one[k], NULL);
        node(&s, "left", op, "k", "m", NULL, 0, 0);
        node(&s, "right", op, "m", "k", NULL, 0, 0);
        node(&s, "y", AD_OP_ADD, "left", "right", NULL, 0, 0);
        ad_graph_t *g = build(&s, "y");
        bind(g, 3);
        ck_assert_int_eq(ad_shape(g, ad_find(g, "y"))->d[0], 3);
        ck_assert_int_eq(ad_shape(g, ad_find(g, "y"))->d[1], 2);
        fill(g, "m", 0.5, 2.0, 10 + (uint64_t)k);
        val(g, "k")[0] = op == AD_OP_MAX || op == AD_OP_MIN ? 1.234 : 0.7;
        const char *leaves[] = {"m", "k"};
        gradcheck(g, "y", leaves, 2);
        ad_graph_free(g);
    }
}
END_TEST

START_TEST(binary_scalar_times_vector)
{
    /* [] * [2,1]: the shape of the golden jacobian cases. */
    ad_graph_spec_t s = {0};
    double e[2] = {3.0, -2.0};
    leaf(&s, "t", AD_OP_INPUT, S0, NULL);
    leaf(&s, "e", AD_OP_CONST, shp(2, 2, 1), e);
    node(&s, "y", AD_OP_MUL, "t", "e", NULL, 0, 0);
    ad_graph_t *g = build(&s, "y");
    val(g, "t")[0] = 1.5;
    fwd(g);
    ck_assert_double_eq(val(g, "y")[0], 4.5);
    ck_assert_double_eq(val(g, "y")[1], -3.0);
    const char *leaves[] = {"t"};
    gradcheck(g, "y", leaves, 1);
    ad_graph_free(g);
}
END_TEST

/* Ties: max sends the gradient to a where a >= b, min to a where a <= b. */
START_TEST(max_min_ties_exact)
{
    ad_graph_spec_t s = {0};
    double a[3] = {1.0, 2.0, 3.0}, b[3] = {1.0, 0.0, 5.0}, k = 2.0;
    leaf(&s, "a", AD_OP_PARAM, shp(1, 3, 1), a);
    leaf(&s, "b", AD_OP_PARAM, shp(1, 3, 1), b);
    leaf(&s, "k", AD_OP_PARAM, S0, &k);
    node(&s, "mx", AD_OP_MAX, "a", "b", NULL, 0, 0);
    node(&s, "mn", AD_OP_MIN, "a", "b", NULL, 0, 0);
    node(&s, "mxk", AD_OP_MAX, "a", "k", NULL, 0, 0); /* [1,2,3] vs 2: tie at a[1] */
    node(&s, "mnk", AD_OP_MIN, "k", "a", NULL, 0, 0); /* 2 vs [1,2,3]: tie goes to k */
    node(&s, "smx", AD_OP_SUM, "mx", NULL, NULL, 0, 0);
    node(&s, "smn", AD_OP_SUM, "mn", NULL, NULL, 0, 0);
    node(&s, "smxk", AD_OP_SUM, "mxk", NULL, NULL, 0, 0);
    node(&s, "smnk", AD_OP_SUM, "mnk", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "smx");
    err_t err = {0};
    fwd(g);
    ck_assert_double_eq(val(g, "mx")[0], 1.0);
    ck_assert_double_eq(val(g, "mx")[1], 2.0);
    ck_assert_double_eq(val(g, "mx")[2], 5.0);
    ck_assert_double_eq(val(g, "mn")[1], 0.0);

    ck_assert_int_eq(ad_backward(g, ad_find(g, "smx"), &err), 0);
    const double gmx_a[3] = {1, 1, 0}, gmx_b[3] = {0, 0, 1};
    for (int i = 0; i < 3; ++i) {
        ck_assert_double_eq(grd(g, "a")[i], gmx_a[i]);
        ck_assert_double_eq(grd(g, "b")[i], gmx_b[i]);
    }
    ck_assert_int_eq(ad_backward(g, ad_find(g, "smn"), &err), 0);
    const double gmn_a[3] = {1, 0, 1}, gmn_b[3] = {0, 1, 0};
    for (int i = 0; i < 3; ++i) {
        ck_assert_double_eq(grd(g, "a")[i], gmn_a[i]);
        ck_assert_double_eq(grd(g, "b")[i], gmn_b[i]);
    }
    ck_assert_int_eq(ad_backward(g, ad_find(g, "smxk"), &err), 0);
    const double gmxk_a[3] = {0, 1, 1};
    for (int i = 0; i < 3; ++i)
        ck_assert_double_eq(grd(g, "a")[i], gmxk_a[i]);
    ck_assert_double_eq(grd(g, "k")[0], 1.0); /* a[0]=1 < 2 */
    ck_assert_int_eq(ad_backward(g, ad_find(g, "smnk"), &err), 0);
    /* min(k=2, a): k wins where 2 <= a, i.e. a[1], a[2]; a gets only a[0]. */
    const double gmnk_a[3] = {1, 0, 0};
    for (int i = 0; i < 3; ++i)
        ck_assert_double_eq(grd(g, "a")[i], gmnk_a[i]);
    ck_assert_double_eq(grd(g, "k")[0], 2.0);
    ad_graph_free(g);
}
END_TEST

/* ---- element-wise unary and reductions ------------------------------------------------------ */

static const int32_t UNOPS[] = {AD_OP_NEG,  AD_OP_EXP,  AD_OP_LOG,    AD_OP_SIGMOID,
                                AD_OP_TANH, AD_OP_RELU, AD_OP_SQUARE, AD_OP_SUM,
                                AD_OP_MEAN, AD_OP_STEP, AD_OP_SOFTMAX, AD_OP_LOG_SOFTMAX,
                                AD_OP_TRANSPOSE, AD_OP_BIAS};

START_TEST(unary_gradcheck)
{
    int32_t op = UNOPS[_i];
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    node(&s, "y", op, "x", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "y");
    bind(g, 4);
    if (op == AD_OP_LOG)
        fill(g, "x", 0.2, 3.0, 5);
    else
        fill(g, "x", -2.5, 2.5, 5);
    const char *leaves[] = {"x"};
    gradcheck(g, "y", leaves, 1);
    ad_graph_free(g);
}
END_TEST

START_TEST(unary_forward_values)
{
    ad_graph_spec_t s = {0};
    double x[4] = {-1.0, 0.0, 2.0, 0.5};
    leaf(&s, "x", AD_OP_CONST, shp(2, 2, 2), x);
    const int32_t ops[] = {AD_OP_NEG, AD_OP_EXP, AD_OP_SIGMOID, AD_OP_TANH, AD_OP_RELU,
                           AD_OP_STEP, AD_OP_SQUARE, AD_OP_SUM, AD_OP_MEAN, AD_OP_TRANSPOSE,
                           AD_OP_BIAS};
    const char *ids[] = {"neg", "exp", "sig", "tanh", "relu", "step", "sq", "sum", "mean", "tr",
                         "bias"};
    for (int k = 0; k < 11; ++k)
        node(&s, ids[k], ops[k], "x", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "sum");
    fwd(g);
    for (int i = 0; i < 4; ++i) {
        ck_assert_double_eq(val(g, "neg")[i], -x[i]);
        ck_assert_double_eq(val(g, "exp")[i], exp(x[i]));
        ck_assert_double_eq_tol(val(g, "sig")[i], 1.0 / (1.0 + exp(-x[i])), 1e-15);
        ck_assert_double_eq(val(g, "tanh")[i], tanh(x[i]));
        ck_assert_double_eq(val(g, "relu")[i], x[i] > 0 ? x[i] : 0.0);
        ck_assert_double_eq(val(g, "step")[i], x[i] > 0 ? 1.0 : 0.0);
        ck_assert_double_eq(val(g, "sq")[i], x[i] * x[i]);
    }
    ck_assert_double_eq(val(g, "step")[1], 0.0); /* exactly at 0 is negative */
    ck_assert_double_eq(val(g, "sum")[0], 1.5);
    ck_assert_double_eq(val(g, "mean")[0], 0.375);
    ck_assert_int_eq(ad_shape(g, ad_find(g, "sum"))->n_d, 0);
    const double tr[4] = {-1.0, 2.0, 0.0, 0.5}, bias[6] = {1, -1, 0, 1, 2, 0.5};
    for (int i = 0; i < 4; ++i)
        ck_assert_double_eq(val(g, "tr")[i], tr[i]);
    for (int i = 0; i < 6; ++i)
        ck_assert_double_eq(val(g, "bias")[i], bias[i]);
    ck_assert_int_eq(ad_shape(g, ad_find(g, "bias"))->d[1], 3);
    ad_graph_free(g);
}
END_TEST

/* relu runs four lanes at a time with a scalar tail: 21 values cover both, and the special
 * values must come out as the scalar formula gives them, to the bit (NaN and -0 give +0). */
START_TEST(relu_lanes_and_tail_match_scalar)
{
    enum { ROWS = 7, COLS = 3, N = ROWS * COLS };
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, COLS), NULL);
    node(&s, "r", AD_OP_RELU, "x", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "r");
    bind(g, ROWS);
    double *x = val(g, "x");
    testutil_fill(x, N, -2.0, 2.0, 17);
    const double special[] = {NAN, -0.0, 0.0, INFINITY, -INFINITY, DBL_MIN, -DBL_MIN};
    for (int i = 0; i < 7; ++i)
        x[3 * i] = special[i];   /* lanes 0 and 3 of the vectors, and the tail's last value */
    x[N - 1] = NAN;
    fwd(g);
    double seed[N];
    testutil_fill(seed, N, -1.0, 1.0, 18);
    err_t err = {0};
    ck_assert_int_eq(ad_backward_seed(g, ad_find(g, "r"), seed, &err), 0);
    for (int i = 0; i < N; ++i) {
        const double want = x[i] > 0.0 ? x[i] : 0.0, want_g = x[i] > 0.0 ? seed[i] : 0.0;
        ck_assert_msg(memcmp(&val(g, "r")[i], &want, sizeof want) == 0, "relu[%d] = %g", i,
                      val(g, "r")[i]);
        ck_assert_msg(memcmp(&grd(g, "x")[i], &want_g, sizeof want_g) == 0, "grad[%d] = %g", i,
                      grd(g, "x")[i]);
    }
    ad_graph_free(g);

    /* The stored (not added) gradient of ad_backward_params: z's only writer is relu. */
    ad_graph_spec_t t = {0};
    leaf(&t, "x", AD_OP_INPUT, shp(2, AD_ROWS, COLS), NULL);
    leaf(&t, "W", AD_OP_PARAM, shp(2, COLS, COLS + 1), NULL);
    node(&t, "z", AD_OP_AFFINE, "x", "W", NULL, 0, 0);
    node(&t, "r", AD_OP_RELU, "z", NULL, NULL, 0, 0);
    node(&t, "L", AD_OP_SUM, "r", NULL, NULL, 0, 0);
    g = build(&t, "L");
    bind(g, ROWS);
    fill(g, "x", -1.0, 1.0, 19);
    fill(g, "W", -1.0, 1.0, 20);
    fwd(g);
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
    double full[COLS * (COLS + 1)];
    memcpy(full, ad_param_grads(g), sizeof full);
    for (int i = 0; i < N; ++i)
        grd(g, "z")[i] = 123.0;   /* stale: an added gradient would keep it */
    ck_assert_int_eq(ad_backward_params(g, ad_output(g), &err), 0);
    for (int i = 0; i < N; ++i)
        ck_assert_double_eq(grd(g, "z")[i], val(g, "z")[i] > 0.0 ? 1.0 : 0.0);
    for (int i = 0; i < COLS * (COLS + 1); ++i)
        ck_assert_double_eq(ad_param_grads(g)[i], full[i]);
    ad_graph_free(g);
}
END_TEST

START_TEST(step_has_zero_gradient)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_PARAM, shp(1, 5, 1), NULL);
    node(&s, "st", AD_OP_STEP, "x", NULL, NULL, 0, 0);
    node(&s, "y", AD_OP_SUM, "st", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "y");
    fill(g, "x", -1.0, 1.0, 7);
    fwd(g);
    err_t err = {0};
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
    for (int i = 0; i < 5; ++i)
        ck_assert_double_eq(grd(g, "x")[i], 0.0);
    ad_graph_free(g);
}
END_TEST

START_TEST(sigmoid_extremes)
{
    ad_graph_spec_t s = {0};
    double x[5] = {-1000.0, -40.0, 0.0, 40.0, 1000.0};
    leaf(&s, "x", AD_OP_PARAM, shp(1, 5, 1), x);
    node(&s, "y", AD_OP_SIGMOID, "x", NULL, NULL, 0, 0);
    node(&s, "L", AD_OP_SUM, "y", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "L");
    fwd(g);
    err_t err = {0};
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
    const double *y = val(g, "y");
    ck_assert_double_eq(y[0], 0.0);
    ck_assert_double_eq(y[2], 0.5);
    ck_assert_double_eq(y[4], 1.0);
    ck_assert_double_eq_tol(y[1], exp(-40.0), 1e-30);
    ck_assert(y[3] <= 1.0 && y[3] > 0.999999);
    for (int i = 0; i < 5; ++i)
        ck_assert(isfinite(grd(g, "x")[i]));
    ad_graph_free(g);
}
END_TEST

/* The vectorised sigmoid and exps: every lane against the scalar formulas, across the range
 * where the vector exp works, its edges (where lanes fall back to libm), and a tail that is not
 * a multiple of the vector width. */
START_TEST(sigmoid_softmax_match_scalar_formulas)
{
    static const double z[] = {0.0,   -0.0,   1e-300, -1e-300, 0.5,    -0.5,   3.25,  -7.75,
                               20.0,  -20.0,  36.7,   -36.7,   100.0,  -300.5, 700.0, -700.0,
                               707.9, -707.9, 708.5,  -708.5,  745.5,  -740.0, -1000.0};
    enum { N = sizeof z / sizeof z[0] };
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_PARAM, shp(1, N, 1), z);
    node(&s, "y", AD_OP_SIGMOID, "x", NULL, NULL, 0, 0);
    node(&s, "p", AD_OP_SOFTMAX, "x", NULL, NULL, 0, 0);
    node(&s, "L", AD_OP_SUM, "y", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "L");
    fwd(g);
    const double *y = val(g, "y"), *p = val(g, "p");
    double mx = 745.5, den = 0.0;
    for (int i = 0; i < N; ++i)
        den += exp(z[i] - mx);
    for (int i = 0; i < N; ++i) {
        double want = z[i] >= 0.0 ? 1.0 / (1.0 + exp(-z[i])) : exp(z[i]) / (1.0 + exp(z[i]));
        ck_assert_msg(testutil_close(y[i], want, 1e-15, 0.0), "sigmoid(%g) = %.17g, want %.17g",
                      z[i], y[i], want);
        double pw = exp(z[i] - mx) / den;
        ck_assert_msg(testutil_close(p[i], pw, 1e-15, 0.0), "softmax[%d] = %.17g, want %.17g", i,
                      p[i], pw);
    }
    ck_assert_double_eq(y[0], 0.5);
    ck_assert_double_eq(y[20], 1.0);
    ck_assert(y[21] > 0.0 && y[21] < 1e-320);   /* subnormal, from libm's exp */
    ck_assert_double_eq(y[22], 0.0);
    ad_graph_free(g);
}
END_TEST

/* A layer with enough rows for affine's transposed product: values against the definition,
 * gradients against finite differences and dh = dz W[:,1:]; then a smaller batch in the same
 * buffers takes the plain product and agrees too. */
START_TEST(affine_many_rows)
{
    enum { M = 2100, N = 3, K = 5 };
    ad_graph_spec_t s = {0};
    leaf(&s, "h", AD_OP_INPUT, shp(2, AD_ROWS, N), NULL);
    leaf(&s, "W", AD_OP_PARAM, shp(2, K, N + 1), NULL);
    node(&s, "z", AD_OP_AFFINE, "h", "W", NULL, 0, 0);
    node(&s, "L", AD_OP_SUM, "z", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "L");
    for (int pass = 0; pass < 2; ++pass) {
        const int32_t m = pass == 0 ? M : 7;
        bind(g, m);
        fill(g, "h", -1.0, 1.0, 71 + (uint64_t)pass);
        fill(g, "W", -1.0, 1.0, 73);
        fwd(g);
        const double *h = val(g, "h"), *W = val(g, "W"), *z = val(g, "z");
        for (int64_t i = 0; i < m; ++i)
            for (int j = 0; j < K; ++j) {
                double want = W[j * (N + 1)];
                for (int k = 0; k < N; ++k)
                    want += h[i * N + k] * W[j * (N + 1) + 1 + k];
                ck_assert_double_eq_tol(z[i * K + j], want, 1e-13);
            }
        const char *leaves[] = {"W"};
        gradcheck(g, "L", leaves, 1);
        err_t err = {0};
        ck_assert_int_eq(ad_backward(g, ad_find(g, "L"), &err), 0);
        const double *dh = grd(g, "h");
        for (int64_t i = 0; i < m; ++i)
            for (int k = 0; k < N; ++k) {
                double want = 0.0;
                for (int j = 0; j < K; ++j)
                    want += W[j * (N + 1) + 1 + k];
                ck_assert_double_eq_tol(dh[i * N + k], want, 1e-13);
            }
    }
    ad_graph_free(g);
}
END_TEST

/* ad_backward_params lets the one writer of a gradient store it without zeroing first (affine
 * into h, sigmoid into z1, cce into z2); a node read twice (h1 below) must still be summed. Both
 * runs of backward_params, after a full backward that filled every buffer, equal ad_backward. */
START_TEST(backward_params_assign_and_sum)
{
    for (int twice = 0; twice < 2; ++twice) {
        ad_graph_spec_t s = {0};
        leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
        leaf(&s, "y", AD_OP_INPUT, shp(1, AD_ROWS, 1), NULL);
        leaf(&s, "W1", AD_OP_PARAM, shp(2, 4, 4), NULL);
        leaf(&s, "W2", AD_OP_PARAM, shp(2, 3, 5), NULL);
        node(&s, "z1", AD_OP_AFFINE, "x", "W1", NULL, 0, 0);
        node(&s, "h1", AD_OP_SIGMOID, "z1", NULL, NULL, 0, 0);
        node(&s, "z2", AD_OP_AFFINE, "h1", "W2", NULL, 0, 0);
        node(&s, "L1", AD_OP_CCE_LOSS, "z2", "y", NULL, AD_REDUCTION_MEAN, 0);
        if (twice) {
            node(&s, "q", AD_OP_MEAN, "h1", NULL, NULL, 0, 0);
            node(&s, "L", AD_OP_ADD, "L1", "q", NULL, 0, 0);
        }
        ad_graph_t *g = build(&s, twice ? "L" : "L1");
        bind(g, 2100);
        fill(g, "x", -1.0, 1.0, 81);
        fill(g, "W1", -1.0, 1.0, 82);
        fill(g, "W2", -1.0, 1.0, 83);
        double *y = val(g, "y");
        for (int i = 0; i < 2100; ++i)
            y[i] = i % 3;
        fwd(g);
        err_t err = {0};
        int32_t L = ad_output(g);
        int64_t n = ad_n_param(g);
        double full[16 + 15];
        ck_assert_int_eq(n, 31);
        ck_assert_int_eq(ad_backward(g, L, &err), 0);
        memcpy(full, ad_param_grads(g), sizeof full);
        for (int rep = 0; rep < 2; ++rep) {
            ck_assert_int_eq(ad_backward_params(g, L, &err), 0);
            for (int64_t i = 0; i < n; ++i)
                ck_assert_double_eq(ad_param_grads(g)[i], full[i]);
        }
        const char *leaves[] = {"W1", "W2"};
        gradcheck(g, twice ? "L" : "L1", leaves, 2);
        ad_graph_free(g);
    }
}
END_TEST

/* ad_backward_params stores a weight's gradient from its one affine instead of zeroing it
 * first: a weight shared by two affines, one whose affine the loss does not reach, and a bias of
 * a second layer must still come out as ad_backward() gives them, over stale values. */
START_TEST(backward_params_shared_and_unreached_weights)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    leaf(&s, "W", AD_OP_PARAM, shp(2, 2, 4), NULL);
    leaf(&s, "V", AD_OP_PARAM, shp(2, 2, 4), NULL);
    leaf(&s, "U", AD_OP_PARAM, shp(2, 1, 3), NULL);
    node(&s, "z1", AD_OP_AFFINE, "x", "W", NULL, 0, 0);
    node(&s, "z2", AD_OP_AFFINE, "x", "W", NULL, 0, 0);
    node(&s, "v", AD_OP_AFFINE, "x", "V", NULL, 0, 0);   /* not an ancestor of L */
    node(&s, "z", AD_OP_ADD, "z1", "z2", NULL, 0, 0);
    node(&s, "h", AD_OP_SIGMOID, "z", NULL, NULL, 0, 0);
    node(&s, "o", AD_OP_AFFINE, "h", "U", NULL, 0, 0);
    node(&s, "L", AD_OP_SUM, "o", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "L");
    bind(g, 9);
    fill(g, "x", -1.0, 1.0, 31);
    fill(g, "W", -1.0, 1.0, 32);
    fill(g, "V", -1.0, 1.0, 33);
    fill(g, "U", -1.0, 1.0, 34);
    fwd(g);
    err_t err = {0};
    const int64_t n = ad_n_param(g);
    ck_assert_int_eq(n, 8 + 8 + 3);
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
    double full[8 + 8 + 3];
    memcpy(full, ad_param_grads(g), sizeof full);
    for (int i = 8; i < 16; ++i)
        ck_assert_double_eq(full[i], 0.0);   /* V */
    for (int rep = 0; rep < 2; ++rep) {
        for (int64_t i = 0; i < n; ++i)
            ad_param_grads(g)[i] = 777.0;
        ck_assert_int_eq(ad_backward_params(g, ad_output(g), &err), 0);
        for (int64_t i = 0; i < n; ++i)
            ck_assert_msg(ad_param_grads(g)[i] == full[i], "param grad %lld: %g, want %g",
                          (long long)i, ad_param_grads(g)[i], full[i]);
    }
    const char *leaves[] = {"W", "U"};
    gradcheck(g, "L", leaves, 2);
    ad_graph_free(g);
}
END_TEST

START_TEST(softmax_rows_and_vector)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "z", AD_OP_INPUT, shp(2, AD_ROWS, 4), NULL);
    leaf(&s, "v", AD_OP_PARAM, shp(1, 5, 1), NULL);
    node(&s, "p", AD_OP_SOFTMAX, "z", NULL, NULL, 0, 0);
    node(&s, "lp", AD_OP_LOG_SOFTMAX, "z", NULL, NULL, 0, 0);
    node(&s, "pv", AD_OP_SOFTMAX, "v", NULL, NULL, 0, 0);
    node(&s, "lpv", AD_OP_LOG_SOFTMAX, "v", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "p");
    bind(g, 3);
    fill(g, "z", -3.0, 3.0, 11);
    fill(g, "v", -3.0, 3.0, 12);
    fwd(g);
    for (int r = 0; r < 3; ++r) {
        double sum = 0.0;
        for (int j = 0; j < 4; ++j) {
            sum += val(g, "p")[r * 4 + j];
            ck_assert_double_eq_tol(val(g, "lp")[r * 4 + j], log(val(g, "p")[r * 4 + j]), 1e-14);
        }
        ck_assert_double_eq_tol(sum, 1.0, 1e-15);
    }
    double sv = 0.0;
    for (int j = 0; j < 5; ++j)
        sv += val(g, "pv")[j];
    ck_assert_double_eq_tol(sv, 1.0, 1e-15); /* a 1-D value is one row */
    const char *lz[] = {"z"}, *lv[] = {"v"};
    gradcheck(g, "p", lz, 1);
    gradcheck(g, "lp", lz, 1);
    gradcheck(g, "pv", lv, 1);
    gradcheck(g, "lpv", lv, 1);
    ad_graph_free(g);
}
END_TEST

START_TEST(log_softmax_extreme)
{
    ad_graph_spec_t s = {0};
    double z[3] = {1000.0, 0.0, -1000.0};
    leaf(&s, "z", AD_OP_PARAM, shp(2, 1, 3), z);
    node(&s, "lp", AD_OP_LOG_SOFTMAX, "z", NULL, NULL, 0, 0);
    node(&s, "p", AD_OP_SOFTMAX, "z", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "lp");
    fwd(g);
    ck_assert_double_eq(val(g, "lp")[0], 0.0);
    ck_assert_double_eq(val(g, "lp")[1], -1000.0);
    ck_assert_double_eq(val(g, "lp")[2], -2000.0);
    ck_assert_double_eq(val(g, "p")[0], 1.0);
    ck_assert_double_eq(val(g, "p")[2], 0.0);
    ad_graph_free(g);
}
END_TEST

/* ---- matrix ops ---------------------------------------------------------------------------- */

START_TEST(matmul_gradcheck)
{
    int tb = _i;
    ad_graph_spec_t s = {0};
    leaf(&s, "A", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    leaf(&s, "B", AD_OP_PARAM, tb ? shp(2, 2, 3) : shp(2, 3, 2), NULL);
    node(&s, "C", AD_OP_MATMUL, "A", "B", NULL, 0, tb);
    ad_graph_t *g = build(&s, "C");
    bind(g, 5);
    const tensor_shape_t *cs = ad_shape(g, ad_find(g, "C"));
    ck_assert_int_eq(cs->d[0], 5);
    ck_assert_int_eq(cs->d[1], 2);
    fill(g, "A", -1.0, 1.0, 21);
    fill(g, "B", -1.0, 1.0, 22);
    fwd(g);
    const double *A = val(g, "A"), *B = val(g, "B"), *C = val(g, "C");
    for (int i = 0; i < 5; ++i)
        for (int j = 0; j < 2; ++j) {
            double want = 0.0;
            for (int k = 0; k < 3; ++k)
                want += A[i * 3 + k] * (tb ? B[j * 3 + k] : B[k * 2 + j]);
            ck_assert_double_eq_tol(C[i * 2 + j], want, 1e-14);
        }
    const char *leaves[] = {"A", "B"};
    gradcheck(g, "C", leaves, 2);
    ad_graph_free(g);
}
END_TEST

START_TEST(matmul_same_operand_and_rows_inner)
{
    /* X^T X with the row count as the inner dimension, and X used on both sides. */
    ad_graph_spec_t s = {0};
    leaf(&s, "X", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    node(&s, "Xt", AD_OP_TRANSPOSE, "X", NULL, NULL, 0, 0);
    node(&s, "G", AD_OP_MATMUL, "Xt", "X", NULL, 0, 0);
    node(&s, "H", AD_OP_MATMUL, "X", "X", NULL, 0, 1); /* X X^T: [rows,rows] */
    ad_graph_t *g = build(&s, "G");
    bind(g, 4);
    ck_assert_int_eq(ad_shape(g, ad_find(g, "G"))->d[0], 3);
    ck_assert_int_eq(ad_shape(g, ad_find(g, "H"))->d[0], 4);
    ck_assert_int_eq(ad_shape(g, ad_find(g, "H"))->d[1], 4);
    fill(g, "X", -1.0, 1.0, 31);
    const char *leaves[] = {"X"};
    gradcheck(g, "G", leaves, 1);
    gradcheck(g, "H", leaves, 1);
    ad_graph_free(g);
}
END_TEST

/* affine(h, W) = bias(h) W^T, internal to model kinds. */
START_TEST(affine_gradcheck)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "h", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    leaf(&s, "W", AD_OP_PARAM, shp(2, 2, 4), NULL);
    node(&s, "z", AD_OP_AFFINE, "h", "W", NULL, 0, 0);
    ad_graph_t *g = build(&s, "z");
    bind(g, 5);
    ck_assert_int_eq(ad_shape(g, ad_find(g, "z"))->d[0], 5);
    ck_assert_int_eq(ad_shape(g, ad_find(g, "z"))->d[1], 2);
    fill(g, "h", -1.0, 1.0, 23);
    fill(g, "W", -1.0, 1.0, 24);
    fwd(g);
    const double *h = val(g, "h"), *W = val(g, "W"), *z = val(g, "z");
    for (int i = 0; i < 5; ++i)
        for (int j = 0; j < 2; ++j) {
            double want = W[j * 4];
            for (int k = 0; k < 3; ++k)
                want += h[i * 3 + k] * W[j * 4 + 1 + k];
            ck_assert_double_eq_tol(z[i * 2 + j], want, 1e-14);
        }
    const char *leaves[] = {"h", "W"};
    gradcheck(g, "z", leaves, 2);
    ad_graph_free(g);

    /* W must be [k, 1 + columns of h]. */
    ad_graph_spec_t bad = {0};
    leaf(&bad, "h", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    leaf(&bad, "W", AD_OP_PARAM, shp(2, 2, 3), NULL);
    node(&bad, "z", AD_OP_AFFINE, "h", "W", NULL, 0, 0);
    strcpy(bad.output, "z");
    err_t err = {0};
    ck_assert_int_eq(ad_graph_build(&bad, 0, &g, &err), ERR_SHAPE);
    ck_assert_str_eq(err.field, "z");
    ad_graph_spec_free(&bad);
}
END_TEST

/* ad_backward_params skips what no param needs; the param gradients are those of ad_backward,
 * and a later full backward still fills every gradient. */
START_TEST(backward_params_matches_backward)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    leaf(&s, "y", AD_OP_INPUT, shp(1, AD_ROWS, 1), NULL);
    leaf(&s, "t", AD_OP_INPUT, shp(2, AD_ROWS, 1), NULL);
    leaf(&s, "W1", AD_OP_PARAM, shp(2, 4, 4), NULL);
    leaf(&s, "W2", AD_OP_PARAM, shp(2, 3, 5), NULL);
    leaf(&s, "V", AD_OP_PARAM, shp(2, 1, 4), NULL);
    node(&s, "z1", AD_OP_AFFINE, "x", "W1", NULL, 0, 0);
    node(&s, "h1", AD_OP_TANH, "z1", NULL, NULL, 0, 0);
    node(&s, "z2", AD_OP_AFFINE, "h1", "W2", NULL, 0, 0);
    node(&s, "L1", AD_OP_CCE_LOSS, "z2", "y", NULL, AD_REDUCTION_MEAN, 0);
    node(&s, "xb", AD_OP_BIAS, "x", NULL, NULL, 0, 0);
    node(&s, "xs", AD_OP_SQUARE, "xb", NULL, NULL, 0, 0);
    node(&s, "u", AD_OP_MATMUL, "xs", "V", NULL, 0, 1);
    node(&s, "L2", AD_OP_BCE_LOSS, "u", "t", NULL, AD_REDUCTION_SUM, 0);
    node(&s, "L", AD_OP_ADD, "L1", "L2", NULL, 0, 0);
    ad_graph_t *g = build(&s, "L");
    bind(g, 6);
    fill(g, "x", -1.0, 1.0, 61);
    fill(g, "W1", -1.0, 1.0, 62);
    fill(g, "W2", -1.0, 1.0, 63);
    fill(g, "V", -1.0, 1.0, 64);
    fill(g, "t", 0.0, 1.0, 65);
    double *y = val(g, "y");
    for (int i = 0; i < 6; ++i)
        y[i] = i % 3;
    fwd(g);
    err_t err = {0};
    int32_t L = ad_find(g, "L");
    int64_t n = ad_n_param(g);
    double full[16 + 15 + 4], dx[18];
    ck_assert_int_eq(n, 35);
    ck_assert_int_eq(ad_backward(g, L, &err), 0);
    memcpy(full, ad_param_grads(g), sizeof full);
    memcpy(dx, grd(g, "x"), sizeof dx);
    for (int rep = 0; rep < 2; ++rep) {
        ck_assert_int_eq(ad_backward_params(g, L, &err), 0);
        for (int64_t i = 0; i < n; ++i)
            ck_assert_double_eq(ad_param_grads(g)[i], full[i]);
    }
    ck_assert_int_eq(ad_backward(g, L, &err), 0);
    for (int i = 0; i < 18; ++i)
        ck_assert_double_eq(grd(g, "x")[i], dx[i]);
    const char *leaves[] = {"x", "W1", "W2", "V", "t"};
    gradcheck(g, "L", leaves, 5);
    ad_graph_free(g);
}
END_TEST

START_TEST(bias_transpose_gradcheck)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    node(&s, "xb", AD_OP_BIAS, "x", NULL, NULL, 0, 0);
    node(&s, "xt", AD_OP_TRANSPOSE, "xb", NULL, NULL, 0, 0);
    ad_graph_t *g = build(&s, "xt");
    bind(g, 3);
    const tensor_shape_t *ts = ad_shape(g, ad_find(g, "xt"));
    ck_assert_int_eq(ts->d[0], 3);
    ck_assert_int_eq(ts->d[1], 3);
    fill(g, "x", -1.0, 1.0, 41);
    fwd(g);
    for (int i = 0; i < 3; ++i)
        ck_assert_double_eq(val(g, "xt")[i], 1.0); /* first row of the transpose: the ones */
    const char *leaves[] = {"x"};
    gradcheck(g, "xt", leaves, 1);
    ad_graph_free(g);
}
END_TEST

/* ---- losses -------------------------------------------------------------------------------- */

/* Loss ops with 2 inputs whose target is differentiable. y is [rows] against [rows,1] in one
 * variant, which the loss ops accept. */
START_TEST(loss_gradcheck)
{
    const int32_t ops[] = {AD_OP_L2_LOSS, AD_OP_BCE_LOSS};
    for (int o = 0; o < 2; ++o)
        for (int red = 0; red < 2; ++red)
            for (int flat = 0; flat < 2; ++flat) {
                ad_graph_spec_t s = {0};
                leaf(&s, "z", AD_OP_INPUT, shp(2, AD_ROWS, 1), NULL);
                leaf(&s, "y", AD_OP_INPUT, flat ? shp(1, AD_ROWS, 1) : shp(2, AD_ROWS, 1),
                     NULL);
                node(&s, "L", ops[o], "z", "y", NULL, red, 0);
                ad_graph_t *g = build(&s, "L");
                bind(g, 6);
                fill(g, "z", -3.0, 3.0, 51);
                fill(g, "y", 0.0, 1.0, 52);
                const char *leaves[] = {"z", "y"};
                gradcheck(g, "L", leaves, 2);
                ad_graph_free(g);
            }
}
END_TEST

START_TEST(l2_mean_divides_by_rows)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "o", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    leaf(&s, "y", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    node(&s, "Ls", AD_OP_L2_LOSS, "o", "y", NULL, AD_REDUCTION_SUM, 0);
    node(&s, "Lm", AD_OP_L2_LOSS, "o", "y", NULL, AD_REDUCTION_MEAN, 0);
    ad_graph_t *g = build(&s, "Lm");
    bind(g, 4);
    double o[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8] = {0, 2, 3, 1, 5, 8, 7, 9};
    memcpy(val(g, "o"), o, sizeof o);
    memcpy(val(g, "y"), y, sizeof y);
    fwd(g);
    /* diffs 1,0,0,3,0,-2,0,-1: squares sum to 15; mean over 4 rows (not 8 elements). */
    ck_assert_double_eq(val(g, "Ls")[0], 15.0);
    ck_assert_double_eq(val(g, "Lm")[0], 15.0 / 4.0);
    err_t err = {0};
    ck_assert_int_eq(ad_backward(g, ad_find(g, "Lm"), &err), 0);
    ck_assert_double_eq(grd(g, "o")[3], 2.0 * 3.0 / 4.0);
    ck_assert_double_eq(grd(g, "y")[3], -2.0 * 3.0 / 4.0);
    ad_graph_free(g);
}
END_TEST

START_TEST(bce_extreme_logits_exact)
{
    ad_graph_spec_t s = {0};
    double z[6] = {50.0, -50.0, 50.0, -50.0, 1000.0, -1000.0};
    double y[6] = {0.0, 1.0, 1.0, 0.0, 0.0, 0.0};
    leaf(&s, "z", AD_OP_PARAM, shp(1, 6, 1), z);
    leaf(&s, "y", AD_OP_CONST, shp(1, 6, 1), y);
    const char *ids[6] = {"z0", "z1", "z2", "z3", "z4", "z5"};
    const char *li[6] = {"L0", "L1", "L2", "L3", "L4", "L5"};
    const char *yi[6] = {"y0", "y1", "y2", "y3", "y4", "y5"};
    for (int i = 0; i < 6; ++i) {
        leaf(&s, ids[i], AD_OP_PARAM, S0, &z[i]);
        leaf(&s, yi[i], AD_OP_CONST, S0, &y[i]);
        node(&s, li[i], AD_OP_BCE_LOSS, ids[i], yi[i], NULL, AD_REDUCTION_SUM, 0);
    }
    node(&s, "L", AD_OP_BCE_LOSS, "z", "y", NULL, AD_REDUCTION_MEAN, 0);
    ad_graph_t *g = build(&s, "L");
    fwd(g);
    const double big = 50.0 + log1p(exp(-50.0)), tiny = log1p(exp(-50.0));
    ck_assert_double_eq(val(g, "L0")[0], big);
    ck_assert_double_eq(val(g, "L1")[0], big);
    ck_assert_double_eq(val(g, "L2")[0], tiny);
    ck_assert_double_eq(val(g, "L3")[0], tiny);
    ck_assert_double_eq(val(g, "L4")[0], 1000.0);
    ck_assert_double_eq(val(g, "L5")[0], 0.0);
    ck_assert(tiny > 0.0);
    ck_assert_double_eq_tol(val(g, "L")[0], (2 * big + 2 * tiny + 1000.0) / 6.0, 1e-12);
    err_t err = {0};
    const double s50 = 1.0 / (1.0 + exp(-50.0)), sm50 = exp(-50.0) / (1.0 + exp(-50.0));
    const double want[6] = {s50, -s50, -sm50, sm50, 1.0, 0.0};
    for (int i = 0; i < 6; ++i) {
        ck_assert_int_eq(ad_backward(g, ad_find(g, li[i]), &err), 0);
        ck_assert_close(grd(g, ids[i])[0], want[i], 1e-15, 0.0);
    }
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
    for (int i = 0; i < 6; ++i)
        ck_assert_close(grd(g, "z")[i], want[i] / 6.0, 1e-15, 0.0);
    ad_graph_free(g);
}
END_TEST

START_TEST(cce_gradcheck_and_reduction)
{
    for (int flat = 0; flat < 2; ++flat) {
        ad_graph_spec_t s = {0};
        leaf(&s, "z", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
        leaf(&s, "y", AD_OP_INPUT, flat ? shp(1, AD_ROWS, 1) : shp(2, AD_ROWS, 1), NULL);
        node(&s, "Lm", AD_OP_CCE_LOSS, "z", "y", NULL, AD_REDUCTION_MEAN, 0);
        node(&s, "Ls", AD_OP_CCE_LOSS, "z", "y", NULL, AD_REDUCTION_SUM, 0);
        ad_graph_t *g = build(&s, "Lm");
        bind(g, 4);
        fill(g, "z", -2.0, 2.0, 61);
        const double y[4] = {0, 2, 1, 2};
        memcpy(val(g, "y"), y, sizeof y);
        fwd(g);
        double want = 0.0;
        const double *z = val(g, "z");
        for (int r = 0; r < 4; ++r) {
            double se = 0.0;
            for (int j = 0; j < 3; ++j)
                se += exp(z[r * 3 + j]);
            want += log(se) - z[r * 3 + (int)y[r]];
        }
        ck_assert_double_eq_tol(val(g, "Ls")[0], want, 1e-13);
        ck_assert_double_eq_tol(val(g, "Lm")[0], want / 4.0, 1e-13);
        const char *leaves[] = {"z"};
        gradcheck(g, "Lm", leaves, 1);
        gradcheck(g, "Ls", leaves, 1);
        err_t err = {0};
        ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
        for (int r = 0; r < 4; ++r)
            ck_assert_double_eq(grd(g, "y")[r], 0.0); /* class ids are not differentiable */
        ad_graph_free(g);
    }
}
END_TEST

START_TEST(cce_extreme_logits_exact)
{
    ad_graph_spec_t s = {0};
    double z[9] = {50.0, -50.0, 0.0, 50.0, -50.0, 0.0, 1000.0, -1000.0, 0.0};
    double y[3] = {0.0, 1.0, 2.0};
    leaf(&s, "z", AD_OP_PARAM, shp(2, 3, 3), z);
    leaf(&s, "y", AD_OP_CONST, shp(1, 3, 1), y);
    node(&s, "L", AD_OP_CCE_LOSS, "z", "y", NULL, AD_REDUCTION_SUM, 0);
    ad_graph_t *g = build(&s, "L");
    fwd(g);
    const double rest = exp(-100.0) + exp(-50.0);
    const double want = log1p(rest) + (100.0 + log1p(rest)) + 1000.0;
    ck_assert_double_eq(val(g, "L")[0], want);
    ck_assert(log1p(rest) > 0.0);
    err_t err = {0};
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
    const double *gz = grd(g, "z");
    ck_assert_close(gz[0], -rest / (1.0 + rest), 1e-15, 0.0); /* tiny, not rounded to 0 */
    ck_assert_close(gz[1], exp(-100.0) / (1.0 + rest), 1e-15, 0.0);
    ck_assert_close(gz[3], 1.0 / (1.0 + rest), 1e-15, 0.0);
    ck_assert_close(gz[4], -1.0, 1e-15, 0.0);
    ck_assert_double_eq(gz[6], 1.0);
    ck_assert_double_eq(gz[8], -1.0);
    for (int i = 0; i < 9; ++i)
        ck_assert(isfinite(gz[i]));
    ad_graph_free(g);
}
END_TEST

START_TEST(cce_bad_class_names_y)
{
    const double bad[4] = {3.0, -1.0, 1.5, NAN};
    for (int b = 0; b < 4; ++b) {
        ad_graph_spec_t s = {0};
        leaf(&s, "z", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
        leaf(&s, "labels", AD_OP_INPUT, shp(1, AD_ROWS, 1), NULL);
        node(&s, "L", AD_OP_CCE_LOSS, "z", "labels", NULL, 0, 0);
        ad_graph_t *g = build(&s, "L");
        bind(g, 3);
        double y[3] = {0.0, bad[b], 2.0};
        memcpy(val(g, "labels"), y, sizeof y);
        err_t err = {0};
        ck_assert_int_eq(ad_forward(g, &err), ERR_INVAL);
        ck_assert_str_eq(err.field, "labels");
        ck_assert_msg(strstr(err.msg, "row 1") != NULL, "message: %s", err.msg);
        ad_graph_free(g);
    }
}
END_TEST

START_TEST(wbce_gradcheck)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "z", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    leaf(&s, "t", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    leaf(&s, "w", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    node(&s, "L", AD_OP_WBCE_LOSS, "z", "t", "w", AD_REDUCTION_SUM, 0);
    ad_graph_t *g = build(&s, "L");
    bind(g, 3);
    fill(g, "z", -3.0, 3.0, 71);
    fill(g, "t", 0.0, 1.0, 72);
    fill(g, "w", 0.1, 1.0, 73);
    fwd(g);
    double want = 0.0;
    for (int i = 0; i < 6; ++i) {
        double zi = val(g, "z")[i], ti = val(g, "t")[i];
        want += val(g, "w")[i] * (log1p(exp(zi)) - ti * zi);
    }
    ck_assert_double_eq_tol(val(g, "L")[0], want, 1e-13);
    const char *leaves[] = {"z", "t", "w"};
    gradcheck(g, "L", leaves, 3);
    ad_graph_free(g);
}
END_TEST

START_TEST(perceptron_loss_rule)
{
    for (int red = 0; red < 2; ++red) {
        ad_graph_spec_t s = {0};
        double z[4] = {0.5, -0.5, 0.0, 2.0}, y[4] = {1.0, 1.0, 0.0, 0.0};
        leaf(&s, "z", AD_OP_PARAM, shp(2, 4, 1), z);
        leaf(&s, "y", AD_OP_CONST, shp(2, 4, 1), y);
        node(&s, "L", AD_OP_PERCEPTRON_LOSS, "z", "y", NULL, red, 0);
        ad_graph_t *g = build(&s, "L");
        fwd(g);
        /* misclassified: row 1 (yhat 0, y 1) and row 3 (yhat 1, y 0); z = 0 is class 0. */
        ck_assert_double_eq(val(g, "L")[0], red == AD_REDUCTION_SUM ? 2.0 : 0.5);
        err_t err = {0};
        ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
        const double want[4] = {0.0, -1.0, 0.0, 1.0}; /* step(z) - y, whatever the reduction */
        for (int i = 0; i < 4; ++i)
            ck_assert_double_eq(grd(g, "z")[i], want[i]);
        ad_graph_free(g);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, binary_same_shape_rows, 0, 6);
    tcase_add_loop_test(tc, binary_broadcast_scalar, 0, 6);
    tcase_add_test(tc, binary_scalar_times_vector);
    tcase_add_test(tc, max_min_ties_exact);
    tcase_add_loop_test(tc, unary_gradcheck, 0, (int)(sizeof UNOPS / sizeof UNOPS[0]));
    tcase_add_test(tc, unary_forward_values);
    tcase_add_test(tc, relu_lanes_and_tail_match_scalar);
    tcase_add_test(tc, step_has_zero_gradient);
    tcase_add_test(tc, sigmoid_extremes);
    tcase_add_test(tc, softmax_rows_and_vector);
    tcase_add_test(tc, log_softmax_extreme);
    tcase_add_loop_test(tc, matmul_gradcheck, 0, 2);
    tcase_add_test(tc, matmul_same_operand_and_rows_inner);
    tcase_add_test(tc, bias_transpose_gradcheck);
    tcase_add_test(tc, loss_gradcheck);
    tcase_add_test(tc, l2_mean_divides_by_rows);
    tcase_add_test(tc, bce_extreme_logits_exact);
    tcase_add_test(tc, cce_gradcheck_and_reduction);
    tcase_add_test(tc, cce_extreme_logits_exact);
    tcase_add_test(tc, cce_bad_class_names_y);
    tcase_add_test(tc, wbce_gradcheck);
    tcase_add_test(tc, affine_gradcheck);
    tcase_add_test(tc, backward_params_matches_backward);
    tcase_add_test(tc, sigmoid_softmax_match_scalar_formulas);
    tcase_add_test(tc, affine_many_rows);
    tcase_add_test(tc, backward_params_assign_and_sum);
    tcase_add_test(tc, backward_params_shared_and_unreached_weights);
    tcase_add_test(tc, perceptron_loss_rule);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
