/* tests/unit/test_graph.c -- graph build validation (each error names its node), topological
 * order, parameter layout, binding, views, backward drivers and Jacobians. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "testutil.h"

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
                 int32_t tb)
{
    const char *in[2] = {a, b};
    err_t err = {0};
    ck_assert_int_eq(ad_graph_spec_add(s, id, op, b != NULL ? 2 : 1, in, NULL, NULL, 0, tb, &err),
                     0);
}

static ad_graph_t *build_ok(ad_graph_spec_t *s, const char *out)
{
    ad_graph_t *g = NULL;
    err_t err = {0};
    strcpy(s->output, out);
    int rc = ad_graph_build(s, 0, &g, &err);
    ck_assert_msg(rc == 0, "build: %s (field %s)", err.msg, err.field);
    return g;
}

/* Build must fail with `code`, err.field == field, and a message naming the field. */
static void build_fails(ad_graph_spec_t *s, const char *out, int32_t max_nodes, int code,
                        const char *field)
{
    ad_graph_t *g = (ad_graph_t *)s; /* must be reset to NULL */
    err_t err = {0};
    strcpy(s->output, out);
    int rc = ad_graph_build(s, max_nodes, &g, &err);
    ck_assert_msg(rc == code, "rc %s, want %s: %s", err_name(rc), err_name(code), err.msg);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(err.code, code);
    ck_assert_str_eq(err.field, field);
    ck_assert_msg(strstr(err.msg, field) != NULL, "message '%s' does not name '%s'", err.msg,
                  field);
    ad_graph_spec_free(s);
}

static double *val(ad_graph_t *g, const char *id)
{
    return ad_value(g, ad_find(g, id));
}

static double *grd(ad_graph_t *g, const char *id)
{
    return ad_grad(g, ad_find(g, id));
}

/* ---- op names -------------------------------------------------------------------------------- */

START_TEST(op_names_roundtrip)
{
    for (int32_t op = AD_OP_INPUT; op < AD_OP_PUBLIC_END; ++op) {
        const char *name = ad_op_name(op);
        ck_assert_ptr_nonnull(name);
        ck_assert_int_eq(ad_op_from_name(name), op);
    }
    ck_assert_int_eq(ad_op_from_name("matmul"), AD_OP_MATMUL);
    ck_assert_int_eq(ad_op_from_name("log_softmax"), AD_OP_LOG_SOFTMAX);
    ck_assert_int_eq(ad_op_from_name("wbce_loss"), AD_OP_NONE);       /* internal */
    ck_assert_int_eq(ad_op_from_name("perceptron_loss"), AD_OP_NONE); /* internal */
    ck_assert_int_eq(ad_op_from_name("conv"), AD_OP_NONE);
    ck_assert_int_eq(ad_op_from_name(""), AD_OP_NONE);
    ck_assert_str_eq(ad_op_name(AD_OP_WBCE_LOSS), "wbce_loss");
    ck_assert_ptr_null(ad_op_name(AD_OP_NONE));
    ck_assert_ptr_null(ad_op_name(AD_OP_COUNT));
    ck_assert_int_eq(ad_op_arity(AD_OP_INPUT), 0);
    ck_assert_int_eq(ad_op_arity(AD_OP_PARAM), 0);
    ck_assert_int_eq(ad_op_arity(AD_OP_NEG), 1);
    ck_assert_int_eq(ad_op_arity(AD_OP_MATMUL), 2);
    ck_assert_int_eq(ad_op_arity(AD_OP_CCE_LOSS), 2);
    ck_assert_int_eq(ad_op_arity(AD_OP_WBCE_LOSS), 3);
}
END_TEST

/* ---- build errors -------------------------------------------------------------------------- */

START_TEST(error_unknown_op)
{
    const int32_t bad[] = {AD_OP_NONE, AD_OP_PUBLIC_END, AD_OP_COUNT, 999, -3};
    for (int k = 0; k < 5; ++k) {
        ad_graph_spec_t s = {0};
        leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
        node(&s, "weird", AD_OP_NEG, "x", NULL, 0);
        s.node[1].op = bad[k];
        build_fails(&s, "weird", 0, ERR_INVAL, "weird");
    }
}
END_TEST

START_TEST(error_wrong_arity)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
    node(&s, "sum2", AD_OP_ADD, "x", NULL, 0);
    build_fails(&s, "sum2", 0, ERR_INVAL, "sum2");

    const char *in[1] = {"x"};
    err_t err = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
    ck_assert_int_eq(ad_graph_spec_add(&s, "leafy", AD_OP_PARAM, 1, in, &S0, NULL, 0, 0, &err), 0);
    build_fails(&s, "leafy", 0, ERR_INVAL, "leafy");
}
END_TEST

START_TEST(error_unknown_input)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
    node(&s, "y", AD_OP_ADD, "x", "nope", 0);
    build_fails(&s, "y", 0, ERR_INVAL, "y");
}
END_TEST

START_TEST(error_duplicate_id)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
    leaf(&s, "dup", AD_OP_INPUT, shp(1, 2, 1), NULL);
    node(&s, "dup", AD_OP_NEG, "x", NULL, 0);
    build_fails(&s, "dup", 0, ERR_INVAL, "dup");
}
END_TEST

START_TEST(error_cycle)
{
    /* x -> d feeds on a cycle a -> b -> c -> a; e hangs off it. The error names a cycle node. */
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
    node(&s, "e", AD_OP_NEG, "c", NULL, 0);
    node(&s, "c", AD_OP_ADD, "b", "x", 0);
    node(&s, "a", AD_OP_NEG, "c", NULL, 0);
    node(&s, "b", AD_OP_EXP, "a", NULL, 0);
    build_fails(&s, "e", 0, ERR_INVAL, "c"); /* first cycle node in spec order */

    leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
    node(&s, "self", AD_OP_ADD, "x", "self", 0);
    build_fails(&s, "self", 0, ERR_INVAL, "self");
}
END_TEST

START_TEST(error_too_many_nodes)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
    node(&s, "y", AD_OP_NEG, "x", NULL, 0);
    node(&s, "z", AD_OP_NEG, "y", NULL, 0);
    build_fails(&s, "z", 2, ERR_INVAL, "z");

    leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
    node(&s, "y", AD_OP_NEG, "x", NULL, 0);
    ad_graph_t *g = NULL;
    err_t err = {0};
    strcpy(s.output, "y");
    ck_assert_int_eq(ad_graph_build(&s, 2, &g, &err), 0); /* exactly the limit is fine */
    ad_graph_free(g);
    ad_graph_spec_free(&s);
}
END_TEST

START_TEST(error_missing_output)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
    node(&s, "y", AD_OP_NEG, "x", NULL, 0);
    ad_graph_t *g = NULL;
    err_t err = {0};
    strcpy(s.output, "L");
    ck_assert_int_eq(ad_graph_build(&s, 0, &g, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "output");
    ck_assert_msg(strstr(err.msg, "'L'") != NULL, "%s", err.msg);
    ck_assert_ptr_null(g);
    ad_graph_spec_free(&s);
}
END_TEST

START_TEST(error_shapes)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "a", AD_OP_INPUT, shp(2, 2, 3), NULL);
    leaf(&s, "b", AD_OP_INPUT, shp(2, 3, 2), NULL);
    node(&s, "sum", AD_OP_ADD, "a", "b", 0);
    build_fails(&s, "sum", 0, ERR_SHAPE, "sum");

    leaf(&s, "a", AD_OP_INPUT, shp(2, 2, 3), NULL);
    leaf(&s, "b", AD_OP_INPUT, shp(2, 2, 3), NULL);
    node(&s, "mm", AD_OP_MATMUL, "a", "b", 0); /* [2,3] x [2,3] */
    build_fails(&s, "mm", 0, ERR_SHAPE, "mm");

    leaf(&s, "a", AD_OP_INPUT, shp(2, 2, 3), NULL);
    leaf(&s, "b", AD_OP_INPUT, shp(2, 3, 2), NULL);
    node(&s, "mmt", AD_OP_MATMUL, "a", "b", 1); /* [2,3] x [3,2]^T */
    build_fails(&s, "mmt", 0, ERR_SHAPE, "mmt");

    leaf(&s, "v", AD_OP_INPUT, shp(1, 3, 1), NULL);
    leaf(&s, "b", AD_OP_INPUT, shp(2, 3, 2), NULL);
    node(&s, "mm1", AD_OP_MATMUL, "v", "b", 0); /* matmul is 2-D only */
    build_fails(&s, "mm1", 0, ERR_SHAPE, "mm1");

    /* Symbolic rows never match a number, even one the rows might later equal. */
    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    leaf(&s, "c", AD_OP_CONST, shp(2, 3, 2), NULL);
    node(&s, "xr", AD_OP_MUL, "x", "c", 0);
    build_fails(&s, "xr", 0, ERR_SHAPE, "xr");

    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    leaf(&s, "w", AD_OP_PARAM, shp(2, AD_ROWS, 3), NULL); /* only inputs may have null rows */
    node(&s, "o", AD_OP_MATMUL, "x", "w", 1);
    build_fails(&s, "o", 0, ERR_SHAPE, "w");

    leaf(&s, "z", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    leaf(&s, "y", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    node(&s, "L", AD_OP_CCE_LOSS, "z", "y", 0);
    build_fails(&s, "L", 0, ERR_SHAPE, "L");

    leaf(&s, "o", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    leaf(&s, "y", AD_OP_INPUT, shp(1, AD_ROWS, 1), NULL);
    node(&s, "L2", AD_OP_L2_LOSS, "o", "y", 0);
    build_fails(&s, "L2", 0, ERR_SHAPE, "L2");

    leaf(&s, "v", AD_OP_INPUT, shp(1, 3, 1), NULL);
    node(&s, "vb", AD_OP_BIAS, "v", NULL, 0);
    build_fails(&s, "vb", 0, ERR_SHAPE, "vb");
}
END_TEST

START_TEST(symbolic_shapes)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 3), NULL);
    leaf(&s, "W", AD_OP_PARAM, shp(2, 3, 2), NULL);
    node(&s, "a", AD_OP_MATMUL, "x", "W", 0);
    node(&s, "at", AD_OP_TRANSPOSE, "a", NULL, 0);
    node(&s, "ab", AD_OP_BIAS, "a", NULL, 0);
    node(&s, "L", AD_OP_SUM, "ab", NULL, 0);
    ad_graph_t *g = build_ok(&s, "L");
    err_t err = {0};
    ck_assert_int_eq(ad_graph_bind(g, 7, &err), 0);
    const tensor_shape_t *a = ad_shape(g, ad_find(g, "a")), *at = ad_shape(g, ad_find(g, "at"));
    const tensor_shape_t *ab = ad_shape(g, ad_find(g, "ab")), *L = ad_shape(g, ad_find(g, "L"));
    ck_assert_int_eq(a->n_d, 2);
    ck_assert_int_eq(a->d[0], 7);
    ck_assert_int_eq(a->d[1], 2);
    ck_assert_int_eq(at->d[0], 2);
    ck_assert_int_eq(at->d[1], 7);
    ck_assert_int_eq(ab->d[1], 3);
    ck_assert_int_eq(L->n_d, 0);
    ad_graph_free(g);
    ad_graph_spec_free(&s);
}
END_TEST

/* A capped build refuses fixed values over the cap before allocating, naming the node that
 * crosses it, and later binds refuse row counts that would cross it. */
START_TEST(capped_build_bounds_all_values)
{
    ad_graph_spec_t s = {0};
    ad_graph_t *g = NULL;
    err_t err = {0};
    leaf(&s, "c", AD_OP_CONST, shp(2, 1, 100), NULL);
    node(&s, "ct", AD_OP_TRANSPOSE, "c", NULL, 0);
    node(&s, "big", AD_OP_MATMUL, "ct", "c", 0);   /* [100, 100] */
    node(&s, "L", AD_OP_SUM, "big", NULL, 0);
    strcpy(s.output, "L");
    int rc = ad_graph_build_capped(&s, 0, 10000, &g, &err);
    ck_assert_int_eq(rc, ERR_RANGE);
    ck_assert_ptr_null(g);
    ck_assert_str_eq(err.field, "big");
    ck_assert_ptr_nonnull(strstr(err.msg, "limit of 10000 values"));
    ck_assert_int_eq(ad_graph_build_capped(&s, 0, 10201, &g, &err), 0);  /* 100+100+10000+1 */
    ad_graph_free(g);
    ad_graph_spec_free(&s);

    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 1), NULL);
    node(&s, "xt", AD_OP_TRANSPOSE, "x", NULL, 0);
    node(&s, "outer", AD_OP_MATMUL, "x", "xt", 0);  /* [rows, rows] */
    node(&s, "L", AD_OP_SUM, "outer", NULL, 0);
    strcpy(s.output, "L");
    g = NULL;
    ck_assert_int_eq(ad_graph_build_capped(&s, 0, 1000, &g, &err), 0);
    ck_assert_int_eq(ad_graph_bind(g, 20, &err), 0);          /* 20+20+400+1 */
    rc = ad_graph_bind(g, 40, &err);                          /* 40+40+1600+1 */
    ck_assert_int_eq(rc, ERR_RANGE);
    ck_assert_str_eq(err.field, "outer");
    ck_assert_int_eq(ad_graph_bind(g, 10, &err), 0);          /* still usable */
    ad_graph_free(g);
    ad_graph_spec_free(&s);
}
END_TEST

/* ---- order, layout, binding ---------------------------------------------------------------- */

START_TEST(topological_order)
{
    /* Spec in reverse: every child must still come before its parent. */
    ad_graph_spec_t s = {0};
    node(&s, "L", AD_OP_SUM, "h", NULL, 0);
    node(&s, "h", AD_OP_MUL, "g", "x", 0);
    node(&s, "g", AD_OP_EXP, "x", NULL, 0);
    leaf(&s, "x", AD_OP_INPUT, shp(1, 2, 1), NULL);
    ad_graph_t *g = build_ok(&s, "L");
    ck_assert_int_eq(ad_n_node(g), 4);
    const char *want[4] = {"x", "g", "h", "L"};
    for (int32_t i = 0; i < 4; ++i) {
        ck_assert_str_eq(ad_id(g, i), want[i]);
        for (int32_t k = 0; k < ad_op_arity(ad_op(g, i)); ++k)
            ck_assert_int_lt(ad_child(g, i, k), i);
    }
    ck_assert_int_eq(ad_output(g), 3);
    ck_assert_int_eq(ad_find(g, "h"), 2);
    ck_assert_int_eq(ad_find(g, "zz"), -1);
    ck_assert_int_eq(ad_child(g, 2, 0), 1);
    ck_assert_int_eq(ad_child(g, 2, 1), 0);
    ck_assert_int_eq(ad_child(g, 2, 2), -1);
    ad_graph_free(g);
    ad_graph_spec_free(&s);

    /* Already sorted: the spec order is kept exactly (Kahn takes the earliest ready node). */
    leaf(&s, "c1", AD_OP_CONST, S0, NULL);
    leaf(&s, "x", AD_OP_INPUT, S0, NULL);
    node(&s, "y", AD_OP_NEG, "x", NULL, 0);
    leaf(&s, "c2", AD_OP_CONST, S0, NULL);
    node(&s, "z", AD_OP_ADD, "y", "c2", 0);
    node(&s, "w", AD_OP_ADD, "z", "c1", 0);
    g = build_ok(&s, "w");
    const char *same[6] = {"c1", "x", "y", "c2", "z", "w"};
    for (int32_t i = 0; i < 6; ++i)
        ck_assert_str_eq(ad_id(g, i), same[i]);
    ad_graph_free(g);
    ad_graph_spec_free(&s);
}
END_TEST

START_TEST(param_layout)
{
    ad_graph_spec_t s = {0};
    double w2[2] = {5.0, 6.0}, w1[4] = {1.0, 2.0, 3.0, 4.0}, c[2] = {7.0, 8.0};
    node(&s, "out", AD_OP_MATMUL, "W1", "W2", 0);
    leaf(&s, "W2", AD_OP_PARAM, shp(2, 2, 1), w2);
    leaf(&s, "C", AD_OP_CONST, shp(2, 2, 1), c);
    leaf(&s, "W1", AD_OP_PARAM, shp(2, 2, 2), w1);
    leaf(&s, "Z", AD_OP_PARAM, shp(1, 3, 1), NULL);
    node(&s, "o2", AD_OP_ADD, "out", "C", 0);
    node(&s, "L", AD_OP_SUM, "o2", NULL, 0);
    node(&s, "L2", AD_OP_SUM, "Z", NULL, 0);
    node(&s, "LL", AD_OP_ADD, "L", "L2", 0);
    ad_graph_t *g = build_ok(&s, "LL");
    ad_graph_spec_free(&s);
    ck_assert_int_eq(ad_n_param_node(g), 3); /* spec order: W2, W1, Z */
    ck_assert_int_eq(ad_n_param(g), 9);
    ck_assert_int_eq(ad_param_node(g, 0), ad_find(g, "W2"));
    ck_assert_int_eq(ad_param_node(g, 1), ad_find(g, "W1"));
    ck_assert_int_eq(ad_param_node(g, 2), ad_find(g, "Z"));
    ck_assert_int_eq(ad_param_offset(g, 0), 0);
    ck_assert_int_eq(ad_param_offset(g, 1), 2);
    ck_assert_int_eq(ad_param_offset(g, 2), 6);
    ck_assert_int_eq(ad_param_node(g, 3), -1);
    const double want[9] = {5, 6, 1, 2, 3, 4, 0, 0, 0};
    for (int i = 0; i < 9; ++i)
        ck_assert_double_eq(ad_params(g)[i], want[i]);
    ck_assert_ptr_eq(val(g, "W1"), ad_params(g) + 2);
    ck_assert_ptr_eq(grd(g, "W1"), ad_param_grads(g) + 2);
    ck_assert_double_eq(val(g, "C")[1], 8.0);

    /* Writing the flat array is writing the params. */
    ad_params(g)[0] = 1.0;
    err_t err = {0};
    ck_assert_int_eq(ad_forward(g, &err), 0);
    /* out = W1 W2 = [[1*1+2*6],[3*1+4*6]] = [13, 27]; + C = [20, 35]. */
    ck_assert_double_eq(val(g, "LL")[0], 55.0);
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
    const double gw[9] = {4, 6, 1, 6, 1, 6, 1, 1, 1}; /* dW2 = W1^T 1, dW1 = 1 W2^T, dZ = 1 */
    for (int i = 0; i < 9; ++i)
        ck_assert_double_eq(ad_param_grads(g)[i], gw[i]);
    ad_graph_free(g);
}
END_TEST

START_TEST(bind_and_rebind)
{
    ad_graph_spec_t s = {0};
    double w[3] = {0.5, -1.0, 2.0};
    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    leaf(&s, "W", AD_OP_PARAM, shp(2, 1, 3), w);
    node(&s, "xb", AD_OP_BIAS, "x", NULL, 0);
    node(&s, "o", AD_OP_MATMUL, "xb", "W", 1);
    node(&s, "L", AD_OP_SUM, "o", NULL, 0);
    ad_graph_t *g = build_ok(&s, "L");
    ad_graph_spec_free(&s);
    err_t err = {0};
    ck_assert_int_eq(ad_graph_bind(g, 0, &err), ERR_INVAL);
    ck_assert_int_eq(ad_graph_bind(g, 4, &err), 0);
    double *x4 = val(g, "x"), *o4 = val(g, "o"), *params = ad_params(g);
    for (int i = 0; i < 8; ++i)
        x4[i] = i;
    ck_assert_int_eq(ad_forward(g, &err), 0);
    /* rows (0,1),(2,3),(4,5),(6,7): o = 0.5 - x0 + 2 x1 */
    ck_assert_double_eq(val(g, "L")[0], 4 * 0.5 - (0 + 2 + 4 + 6) + 2 * (1 + 3 + 5 + 7));

    /* Fewer rows: same buffers, new shapes. */
    ck_assert_int_eq(ad_graph_bind(g, 2, &err), 0);
    ck_assert_ptr_eq(val(g, "x"), x4);
    ck_assert_ptr_eq(val(g, "o"), o4);
    ck_assert_int_eq(ad_shape(g, ad_find(g, "o"))->d[0], 2);
    ck_assert_int_eq(ad_forward(g, &err), 0);
    ck_assert_double_eq(val(g, "L")[0], 2 * 0.5 - 2 + 2 * 4);
    ck_assert_int_eq(ad_graph_bind(g, 4, &err), 0);
    ck_assert_ptr_eq(val(g, "x"), x4);

    /* More rows than ever: new row buffers, params untouched. */
    ck_assert_int_eq(ad_graph_bind(g, 100, &err), 0);
    ck_assert_int_eq(ad_shape(g, ad_find(g, "xb"))->d[0], 100);
    ck_assert_ptr_eq(ad_params(g), params);
    ck_assert_double_eq(ad_params(g)[2], 2.0);
    for (int i = 0; i < 200; ++i)
        val(g, "x")[i] = 1.0;
    ck_assert_int_eq(ad_forward(g, &err), 0);
    ck_assert_double_eq(val(g, "L")[0], 100 * 1.5);
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
    ck_assert_double_eq(ad_param_grads(g)[0], 100.0);
    ck_assert_double_eq(ad_param_grads(g)[1], 100.0);
    ad_graph_free(g);

    /* No null rows anywhere: bind is a no-op that succeeds. */
    leaf(&s, "x", AD_OP_INPUT, shp(2, 3, 2), NULL);
    node(&s, "L", AD_OP_SUM, "x", NULL, 0);
    g = build_ok(&s, "L");
    ad_graph_spec_free(&s);
    double *x = val(g, "x");
    ck_assert_int_eq(ad_graph_bind(g, 50, &err), 0);
    ck_assert_ptr_eq(val(g, "x"), x);
    ck_assert_int_eq(ad_shape(g, ad_find(g, "x"))->d[0], 3);
    ad_graph_free(g);
}
END_TEST

START_TEST(input_view)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    node(&s, "L", AD_OP_SUM, "x", NULL, 0);
    ad_graph_t *g = build_ok(&s, "L");
    ad_graph_spec_free(&s);
    err_t err = {0};
    const double data[6] = {1, 2, 3, 4, 5, 6};
    ck_assert_int_eq(ad_graph_bind(g, 3, &err), 0);
    double *own = val(g, "x");
    ck_assert_int_eq(ad_bind_input_view(g, ad_find(g, "x"), data, &err), 0);
    ck_assert_ptr_eq(val(g, "x"), data);
    ck_assert_int_eq(ad_forward(g, &err), 0);
    ck_assert_double_eq(val(g, "L")[0], 21.0);
    ck_assert_int_eq(ad_graph_bind(g, 3, &err), 0); /* same rows: view kept */
    ck_assert_ptr_eq(val(g, "x"), data);
    ck_assert_int_eq(ad_graph_bind(g, 2, &err), 0); /* new rows: back to the own buffer */
    ck_assert_ptr_eq(val(g, "x"), own);
    ck_assert_int_eq(ad_bind_input_view(g, ad_find(g, "L"), data, &err), ERR_INVAL);
    ck_assert_int_eq(ad_bind_input_view(g, ad_find(g, "x"), data, &err), 0);
    ck_assert_int_eq(ad_bind_input_view(g, ad_find(g, "x"), NULL, &err), 0);
    ck_assert_ptr_eq(val(g, "x"), own);
    ad_graph_free(g);
}
END_TEST

/* ---- backward drivers ---------------------------------------------------------------------- */

START_TEST(backward_contracts)
{
    ad_graph_spec_t s = {0};
    leaf(&s, "x", AD_OP_INPUT, shp(1, 3, 1), NULL);
    node(&s, "y", AD_OP_SQUARE, "x", NULL, 0);
    node(&s, "L", AD_OP_SUM, "y", NULL, 0);
    ad_graph_t *g = build_ok(&s, "L");
    ad_graph_spec_free(&s);
    err_t err = {0};
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), ERR_INVAL); /* no forward yet */
    const double x[3] = {1.0, -2.0, 3.0};
    memcpy(val(g, "x"), x, sizeof x);
    ck_assert_int_eq(ad_forward(g, &err), 0);
    ck_assert_int_eq(ad_backward(g, ad_find(g, "y"), &err), ERR_SHAPE); /* not a scalar */
    ck_assert_str_eq(err.field, "y");
    ck_assert_int_eq(ad_backward(g, 17, &err), ERR_INVAL);

    /* Twice in a row: gradients are zeroed first, never accumulated across calls. */
    for (int rep = 0; rep < 2; ++rep) {
        ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
        for (int i = 0; i < 3; ++i) {
            ck_assert_double_eq(grd(g, "x")[i], 2.0 * x[i]);
            ck_assert_double_eq(grd(g, "y")[i], 1.0);
        }
        ck_assert_double_eq(grd(g, "L")[0], 1.0);
    }
    const double seed[3] = {1.0, 10.0, 100.0};
    ck_assert_int_eq(ad_backward_seed(g, ad_find(g, "y"), seed, &err), 0);
    for (int i = 0; i < 3; ++i)
        ck_assert_double_eq(grd(g, "x")[i], 2.0 * x[i] * seed[i]);
    ck_assert_double_eq(grd(g, "L")[0], 0.0); /* not below the seed */
    ad_graph_free(g);
}
END_TEST

START_TEST(node_used_twice_accumulates)
{
    ad_graph_spec_t s = {0};
    double x = 3.0;
    leaf(&s, "x", AD_OP_PARAM, S0, &x);
    node(&s, "xx", AD_OP_MUL, "x", "x", 0);     /* x^2 */
    node(&s, "xxx", AD_OP_MUL, "xx", "x", 0);   /* x^3 */
    node(&s, "L", AD_OP_ADD, "xxx", "xx", 0);   /* x^3 + x^2 */
    ad_graph_t *g = build_ok(&s, "L");
    ad_graph_spec_free(&s);
    err_t err = {0};
    ck_assert_int_eq(ad_forward(g, &err), 0);
    ck_assert_double_eq(val(g, "L")[0], 36.0);
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
    ck_assert_double_eq(grd(g, "x")[0], 3 * 9.0 + 2 * 3.0);
    ad_graph_free(g);
}
END_TEST

/* F = A x (J = A), G = c exp(x) + x^2 (J = diag(c e^x + 2x)), H = u G (dH/du = G). */
START_TEST(jacobian_vs_analytic)
{
    ad_graph_spec_t s = {0};
    double A[6] = {1, 2, 3, -4, 5, -6}, c = 0.5;
    leaf(&s, "x", AD_OP_INPUT, shp(2, 3, 1), NULL);
    leaf(&s, "A", AD_OP_CONST, shp(2, 2, 3), A);
    leaf(&s, "c", AD_OP_CONST, S0, &c);
    leaf(&s, "u", AD_OP_INPUT, S0, NULL);
    node(&s, "F", AD_OP_MATMUL, "A", "x", 0);
    node(&s, "ex", AD_OP_EXP, "x", NULL, 0);
    node(&s, "exc", AD_OP_MUL, "ex", "c", 0);
    node(&s, "x2", AD_OP_SQUARE, "x", NULL, 0);
    node(&s, "G", AD_OP_ADD, "exc", "x2", 0);
    node(&s, "H", AD_OP_MUL, "u", "G", 0); /* u scales G */
    node(&s, "L", AD_OP_SUM, "H", NULL, 0);
    ad_graph_t *g = build_ok(&s, "L");
    ad_graph_spec_free(&s);
    const double x[3] = {0.3, -1.2, 2.0};
    memcpy(val(g, "x"), x, sizeof x);
    val(g, "u")[0] = 1.5;
    err_t err = {0};
    ck_assert_int_eq(ad_forward(g, &err), 0);

    double J[9];
    ck_assert_int_eq(ad_jacobian(g, ad_find(g, "F"), ad_find(g, "x"), J, &err), 0);
    for (int i = 0; i < 6; ++i)
        ck_assert_double_eq(J[i], A[i]);

    ck_assert_int_eq(ad_jacobian(g, ad_find(g, "G"), ad_find(g, "x"), J, &err), 0);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
            ck_assert_double_eq_tol(J[i * 3 + j], i == j ? c * exp(x[i]) + 2 * x[i] : 0.0,
                                    1e-14);

    /* H = u G: dH/du is G as a column; dH/dx = u diag(...). */
    ck_assert_int_eq(ad_jacobian(g, ad_find(g, "H"), ad_find(g, "u"), J, &err), 0);
    for (int i = 0; i < 3; ++i)
        ck_assert_double_eq_tol(J[i], c * exp(x[i]) + x[i] * x[i], 1e-14);

    /* wrt not an ancestor of `of`: a zero row per element of `of`. */
    for (int i = 0; i < 9; ++i)
        J[i] = 42.0;
    ck_assert_int_eq(ad_jacobian(g, ad_find(g, "F"), ad_find(g, "u"), J, &err), 0);
    ck_assert_double_eq(J[0], 0.0);
    ck_assert_double_eq(J[1], 0.0);
    ck_assert_double_eq(J[2], 42.0);

    /* Of a node with respect to itself: identity. */
    ck_assert_int_eq(ad_jacobian(g, ad_find(g, "F"), ad_find(g, "F"), J, &err), 0);
    ck_assert_double_eq(J[0], 1.0);
    ck_assert_double_eq(J[1], 0.0);
    ck_assert_double_eq(J[2], 0.0);
    ck_assert_double_eq(J[3], 1.0);
    ad_graph_free(g);
}
END_TEST

/* Predicting runs only what the output needs: labels may be garbage. */
START_TEST(forward_to_partial)
{
    ad_graph_spec_t s = {0};
    double W[4] = {1.0, -1.0, 0.5, 2.0};
    leaf(&s, "x", AD_OP_INPUT, shp(2, AD_ROWS, 2), NULL);
    leaf(&s, "y", AD_OP_INPUT, shp(1, AD_ROWS, 1), NULL);
    leaf(&s, "W", AD_OP_PARAM, shp(2, 2, 2), W);
    node(&s, "z", AD_OP_MATMUL, "x", "W", 1);
    node(&s, "p", AD_OP_SOFTMAX, "z", NULL, 0);
    node(&s, "L", AD_OP_CCE_LOSS, "z", "y", 0);
    ad_graph_t *g = build_ok(&s, "L");
    ad_graph_spec_free(&s);
    err_t err = {0};
    ck_assert_int_eq(ad_graph_bind(g, 2, &err), 0);
    const double x[4] = {1.0, 0.0, 0.0, 1.0};
    memcpy(val(g, "x"), x, sizeof x);
    val(g, "y")[0] = 7.0; /* out of range: only the loss would notice */
    ck_assert_int_eq(ad_forward(g, &err), ERR_INVAL);
    ck_assert_int_eq(ad_forward_to(g, ad_find(g, "p"), &err), 0);
    /* z row 0 = x0 . W rows = [1, 0.5]; softmax */
    ck_assert_double_eq_tol(val(g, "p")[0], 1.0 / (1.0 + exp(-0.5)), 1e-15);
    ck_assert_double_eq(val(g, "L")[0], 0.0); /* never computed */
    ck_assert_int_eq(ad_backward(g, ad_find(g, "L"), &err), ERR_INVAL);
    ck_assert_int_eq(ad_backward_seed(g, ad_find(g, "z"), x, &err), 0);
    ck_assert_double_eq(grd(g, "W")[0], 1.0); /* dW = seed^T x = I */
    ck_assert_double_eq(grd(g, "W")[1], 0.0);
    ck_assert_int_eq(ad_forward_to(g, 99, &err), ERR_INVAL);
    ad_graph_free(g);
}
END_TEST

/* An inf in a branch the seed does not reach must not leak NaN into real gradients. */
START_TEST(unrelated_branch_does_not_poison)
{
    ad_graph_spec_t s = {0};
    double zero = 0.0, two = 2.0;
    leaf(&s, "x", AD_OP_PARAM, S0, &two);
    leaf(&s, "z", AD_OP_CONST, S0, &zero);
    node(&s, "lz", AD_OP_LOG, "z", NULL, 0); /* -inf */
    node(&s, "bad", AD_OP_MUL, "lz", "x", 0);
    node(&s, "L", AD_OP_SQUARE, "x", NULL, 0);
    ad_graph_t *g = build_ok(&s, "L");
    ad_graph_spec_free(&s);
    err_t err = {0};
    ck_assert_int_eq(ad_forward(g, &err), 0);
    ck_assert_int_eq(ad_backward(g, ad_output(g), &err), 0);
    ck_assert_double_eq(grd(g, "x")[0], 4.0);
    ad_graph_free(g);
}
END_TEST

START_TEST(spec_copy_is_deep)
{
    ad_graph_spec_t s = {0}, c = {0};
    double w[2] = {1.0, 2.0};
    leaf(&s, "W", AD_OP_PARAM, shp(1, 2, 1), w);
    node(&s, "L", AD_OP_SUM, "W", NULL, 0);
    strcpy(s.output, "L");
    err_t err = {0};
    ck_assert_int_eq(ad_graph_spec_copy(&s, &c, &err), 0);
    ck_assert_int_eq(c.n_node, 2);
    ck_assert_ptr_ne(c.node[0].value, s.node[0].value);
    s.node[0].value[0] = 99.0;
    ck_assert_str_eq(c.output, "L");
    ck_assert_str_eq(c.node[1].in[0], "W");
    ad_graph_spec_free(&s);
    ck_assert_int_eq(s.n_node, 0);
    ck_assert_ptr_null(s.node);
    ad_graph_spec_free(NULL);
    ad_graph_t *g = build_ok(&c, "L");
    ck_assert_double_eq(val(g, "W")[0], 1.0);
    ad_graph_free(g);
    ad_graph_free(NULL);
    ad_graph_spec_free(&c);

    char longid[AD_ID_MAX + 1];
    memset(longid, 'a', AD_ID_MAX);
    longid[AD_ID_MAX] = '\0';
    ck_assert_int_eq(ad_graph_spec_add(&s, longid, AD_OP_INPUT, 0, NULL, &S0, NULL, 0, 0, &err),
                     ERR_INVAL);
    ck_assert_int_eq(s.n_node, 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("graph");
    tcase_add_test(tc, op_names_roundtrip);
    tcase_add_test(tc, error_unknown_op);
    tcase_add_test(tc, error_wrong_arity);
    tcase_add_test(tc, error_unknown_input);
    tcase_add_test(tc, error_duplicate_id);
    tcase_add_test(tc, error_cycle);
    tcase_add_test(tc, error_too_many_nodes);
    tcase_add_test(tc, error_missing_output);
    tcase_add_test(tc, error_shapes);
    tcase_add_test(tc, symbolic_shapes);
    tcase_add_test(tc, topological_order);
    tcase_add_test(tc, param_layout);
    tcase_add_test(tc, bind_and_rebind);
    tcase_add_test(tc, capped_build_bounds_all_values);
    tcase_add_test(tc, input_view);
    tcase_add_test(tc, backward_contracts);
    tcase_add_test(tc, node_used_twice_accumulates);
    tcase_add_test(tc, jacobian_vs_analytic);
    tcase_add_test(tc, forward_to_partial);
    tcase_add_test(tc, unrelated_branch_does_not_poison);
    tcase_add_test(tc, spec_copy_is_deep);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
