/* tests/unit/test_onnx_export.c -- ONNX export: decode what onnx_export() wrote with the same
 * protobuf-c schema and check the model, its graph and its weights. (tests/onnx runs the
 * exports in ONNX Runtime against /predict; this test needs neither a daemon nor a runtime.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"
#include "onnx_export.h"
#include "testutil.h"

static model_t *make(model_spec_t *s, const char *w_name, int32_t rows, int32_t cols,
                     const double *w)
{
    err_t err = {0};
    model_t *m = NULL;
    if (w != NULL) {
        s->param_value = calloc(1, sizeof *s->param_value);
        s->n_param_value = 1;
        snprintf(s->param_value[0].name, sizeof s->param_value[0].name, "%s", w_name);
        s->param_value[0].rows = rows;
        s->param_value[0].cols = cols;
        s->param_value[0].x = malloc((size_t)rows * (size_t)cols * sizeof(double));
        memcpy(s->param_value[0].x, w, (size_t)rows * (size_t)cols * sizeof(double));
    }
    ck_assert_msg(model_spec_resolve(s, MODEL_MAX_PARAMS_DEFAULT, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_new(s, &m, &err) == 0, "%s", err.msg);
    model_spec_free(s);
    return m;
}

/* Export m and decode it back; the caller frees with onnx__model_proto__free_unpacked. */
static Onnx__ModelProto *roundtrip(model_t *m, int32_t dtype)
{
    err_t err = {0};
    onnx_export_opts_t o = {.dtype = dtype, .producer_version = "9.8.7", .step = 42,
                            .spec_json = "{\"kind\":\"test\"}"};
    uint8_t *bytes = NULL;
    size_t len = 0;
    ck_assert_msg(onnx_export(m, &o, &bytes, &len, &err) == 0, "%s", err.msg);
    ck_assert_uint_gt(len, 0);
    Onnx__ModelProto *p = onnx__model_proto__unpack(NULL, len, bytes);
    free(bytes);
    ck_assert_ptr_nonnull(p);
    return p;
}

static const Onnx__TensorProto *init_named(const Onnx__GraphProto *g, const char *name)
{
    for (size_t i = 0; i < g->n_initializer; ++i)
        if (strcmp(g->initializer[i]->name, name) == 0)
            return g->initializer[i];
    ck_abort_msg("no initializer %s", name);
    return NULL;
}

/* Element i of a raw float64 or float32 tensor. */
static double raw_at(const Onnx__TensorProto *t, size_t i)
{
    if (t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE) {
        ck_assert_uint_ge(t->raw_data.len, (i + 1) * 8);
        double v;
        memcpy(&v, t->raw_data.data + i * 8, 8);
        return v;
    }
    ck_assert_int_eq(t->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    ck_assert_uint_ge(t->raw_data.len, (i + 1) * 4);
    float f;
    memcpy(&f, t->raw_data.data + i * 4, 4);
    return f;
}

/* Every node reads only x, initializers and outputs of nodes before it; every graph output is
 * written by a node; no two nodes write the same name. Returns the number of `op` nodes. */
static int check_graph(const Onnx__GraphProto *g, const char *op)
{
    int n_op = 0;
    for (size_t i = 0; i < g->n_node; ++i) {
        const Onnx__NodeProto *n = g->node[i];
        n_op += strcmp(n->op_type, op) == 0;
        for (size_t k = 0; k < n->n_input; ++k) {
            const char *in = n->input[k];
            int found = strcmp(in, "x") == 0;
            for (size_t j = 0; j < g->n_initializer && !found; ++j)
                found = strcmp(g->initializer[j]->name, in) == 0;
            for (size_t j = 0; j < i && !found; ++j)
                found = strcmp(g->node[j]->output[0], in) == 0;
            ck_assert_msg(found, "node %zu (%s) reads %s before it is defined", i, n->op_type, in);
        }
        for (size_t j = 0; j < i; ++j)
            ck_assert_str_ne(g->node[j]->output[0], n->output[0]);
    }
    for (size_t k = 0; k < g->n_output; ++k) {
        int found = 0;
        for (size_t i = 0; i < g->n_node && !found; ++i)
            found = strcmp(g->node[i]->output[0], g->output[k]->name) == 0;
        ck_assert_msg(found, "no node writes output %s", g->output[k]->name);
    }
    return n_op;
}

static void check_value(const Onnx__ValueInfoProto *v, const char *name, int32_t elem,
                        size_t n_dim, int64_t cols)
{
    ck_assert_str_eq(v->name, name);
    ck_assert_int_eq(v->type->value_case, ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE);
    const Onnx__TypeProto__Tensor *t = v->type->tensor_type;
    ck_assert_int_eq(t->elem_type, elem);
    ck_assert_uint_eq(t->shape->n_dim, n_dim);
    ck_assert_int_eq(t->shape->dim[0]->value_case,
                     ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM);
    ck_assert_str_eq(t->shape->dim[0]->dim_param, "N");
    if (n_dim == 2)
        ck_assert_int_eq(t->shape->dim[1]->dim_value, cols);
}

START_TEST(test_logistic_model_and_weights)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_LOGISTIC;
    s.inputs = 2;
    static const double w[] = {0.5, -1.25, 2.0};
    model_t *m = make(&s, "W1", 1, 3, w);
    Onnx__ModelProto *p = roundtrip(m, ONNX_DTYPE_FLOAT64);

    ck_assert_int_eq(p->ir_version, ONNX_EXPORT_IR_VERSION);
    ck_assert_uint_eq(p->n_opset_import, 1);
    ck_assert_str_eq(p->opset_import[0]->domain, "");
    ck_assert_int_eq(p->opset_import[0]->version, 13);
    ck_assert_str_eq(p->producer_name, "neurond");
    ck_assert_str_eq(p->producer_version, "9.8.7");
    ck_assert_uint_eq(p->n_metadata_props, 3);
    ck_assert_str_eq(p->metadata_props[0]->key, "neurond.kind");
    ck_assert_str_eq(p->metadata_props[0]->value, "logistic");
    ck_assert_str_eq(p->metadata_props[1]->key, "neurond.step");
    ck_assert_str_eq(p->metadata_props[1]->value, "42");
    ck_assert_str_eq(p->metadata_props[2]->key, "neurond.spec");
    ck_assert_str_eq(p->metadata_props[2]->value, "{\"kind\":\"test\"}");

    const Onnx__GraphProto *g = p->graph;
    ck_assert_uint_eq(g->n_input, 1);
    check_value(g->input[0], "x", ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE, 2, 2);
    ck_assert_uint_eq(g->n_output, 2);
    check_value(g->output[0], "outputs", ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE, 1, 0);
    check_value(g->output[1], "classes", ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, 0);
    ck_assert_int_eq(check_graph(g, "Gemm"), 1);
    /* The sigmoid is ops.c's: Exp of -|z| and a Where, not ONNX's Sigmoid. */
    ck_assert_int_eq(check_graph(g, "Sigmoid"), 0);
    ck_assert_int_eq(check_graph(g, "Where"), 1);

    const Onnx__TensorProto *wt = init_named(g, "W1.weight"), *bt = init_named(g, "W1.bias");
    ck_assert_uint_eq(wt->n_dims, 2);
    ck_assert_int_eq(wt->dims[0], 1);
    ck_assert_int_eq(wt->dims[1], 2);
    ck_assert_double_eq(raw_at(wt, 0), -1.25);
    ck_assert_double_eq(raw_at(wt, 1), 2.0);
    ck_assert_uint_eq(bt->n_dims, 1);
    ck_assert_double_eq(raw_at(bt, 0), 0.5);
    const Onnx__NodeProto *gemm = g->node[0];
    ck_assert_str_eq(gemm->op_type, "Gemm");
    ck_assert_str_eq(gemm->input[0], "x");
    ck_assert_str_eq(gemm->input[1], "W1.weight");
    ck_assert_str_eq(gemm->input[2], "W1.bias");
    ck_assert_str_eq(gemm->attribute[0]->name, "transB");
    ck_assert_int_eq(gemm->attribute[0]->i, 1);
    onnx__model_proto__free_unpacked(p, NULL);
    model_free(m);
}
END_TEST

START_TEST(test_float32_casts_weights)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_LINEAR;
    s.inputs = 2;
    s.outputs = 2;
    static const double w[] = {0.1, 0.2, 0.3, -1.0 / 3.0, 1e-3, 7.0};
    model_t *m = make(&s, "W1", 2, 3, w);
    Onnx__ModelProto *p = roundtrip(m, ONNX_DTYPE_FLOAT32);
    const Onnx__GraphProto *g = p->graph;
    check_value(g->input[0], "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, 2);
    ck_assert_uint_eq(g->n_output, 1);
    check_value(g->output[0], "outputs", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, 2);
    const Onnx__TensorProto *wt = init_named(g, "W1.weight"), *bt = init_named(g, "W1.bias");
    ck_assert_uint_eq(wt->raw_data.len, 4 * 4);
    ck_assert_double_eq(raw_at(wt, 2), (float)(1e-3));
    ck_assert_double_eq(raw_at(wt, 1), (float)0.3);
    ck_assert_double_eq(raw_at(bt, 1), (float)(-1.0 / 3.0));
    check_graph(g, "Gemm");
    onnx__model_proto__free_unpacked(p, NULL);
    model_free(m);
}
END_TEST

START_TEST(test_ovo_vote_tables)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_OVO;
    s.inputs = 2;
    s.classes = 3;
    model_t *m = make(&s, NULL, 0, 0, NULL);
    Onnx__ModelProto *p = roundtrip(m, ONNX_DTYPE_FLOAT64);
    const Onnx__GraphProto *g = p->graph;
    /* Pairs (0,1), (0,2), (1,2) are rows 0, 1, 2. Class 0 is a in rows 0, 1; class 1 is b in
     * row 0, a in row 2; class 2 is b in rows 1 and 2. */
    static const int32_t pairs[] = {0, 1, 0, 2, 1, 2};
    static const uint8_t is_a[] = {1, 1, 0, 1, 0, 0};
    const Onnx__TensorProto *pt = init_named(g, "ovo_pairs"), *at = init_named(g, "ovo_is_a");
    ck_assert_int_eq(pt->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__INT32);
    ck_assert_int_eq(at->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__BOOL);
    ck_assert_uint_eq(pt->raw_data.len, sizeof pairs);
    ck_assert_uint_eq(at->raw_data.len, sizeof is_a);
    for (size_t i = 0; i < 6; ++i) {
        int32_t v;
        memcpy(&v, pt->raw_data.data + 4 * i, 4);
        ck_assert_int_eq(v, pairs[i]);
        ck_assert_int_eq(at->raw_data.data[i], is_a[i]);
    }
    ck_assert_int_eq(check_graph(g, "Equal"), 1);
    ck_assert_int_eq(check_graph(g, "ArgMax"), 1);
    check_value(g->output[0], "outputs", ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE, 2, 3);
    check_value(g->output[1], "classes", ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, 0);
    onnx__model_proto__free_unpacked(p, NULL);
    model_free(m);
}
END_TEST

START_TEST(test_mlp_every_activation)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_MLP;
    s.inputs = 3;
    s.outputs = 4;
    s.n_hidden = 4;
    s.hidden[0] = (model_layer_t){5, MODEL_ACT_SIGMOID};
    s.hidden[1] = (model_layer_t){4, MODEL_ACT_TANH};
    s.hidden[2] = (model_layer_t){3, MODEL_ACT_RELU};
    s.hidden[3] = (model_layer_t){3, MODEL_ACT_LINEAR};
    s.output_activation = MODEL_ACT_SOFTMAX;
    model_t *m = make(&s, NULL, 0, 0, NULL);
    Onnx__ModelProto *p = roundtrip(m, ONNX_DTYPE_FLOAT64);
    const Onnx__GraphProto *g = p->graph;
    ck_assert_int_eq(check_graph(g, "Gemm"), 5);
    ck_assert_int_eq(check_graph(g, "Tanh"), 1);
    ck_assert_int_eq(check_graph(g, "Relu"), 1);
    ck_assert_int_eq(check_graph(g, "Softmax"), 1);
    ck_assert_int_eq(check_graph(g, "ArgMax"), 1);
    ck_assert_int_eq(check_graph(g, "Where"), 1);
    const Onnx__TensorProto *w5 = init_named(g, "W5.weight");
    ck_assert_int_eq(w5->dims[0], 4);
    ck_assert_int_eq(w5->dims[1], 3);
    const double *theta = model_params(m) + model_tensor_offset(m, 4);
    ck_assert_double_eq(raw_at(w5, 0), theta[1]);   /* W5[0][1]: column 0 is the bias */
    ck_assert_double_eq(raw_at(init_named(g, "W5.bias"), 3), theta[3 * 4]);
    check_value(g->output[0], "outputs", ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE, 2, 4);
    onnx__model_proto__free_unpacked(p, NULL);
    model_free(m);
}
END_TEST

/* x [N,2] -> bias -> matmul W^T -> l2_loss against y. The prediction may also depend on y:
 * through a loss of it (THROUGH_LOSS: p = z + l2_loss(z, y)) or directly (THROUGH_Y: p = z + y). */
enum { THROUGH_NOTHING = 0, THROUGH_LOSS = 1, THROUGH_Y = 2 };
static model_t *graph_model(int through)
{
    model_spec_t s;
    model_spec_default(&s);
    s.kind = MODEL_KIND_GRAPH;
    s.inputs = 2;
    s.outputs = 1;
    err_t err = {0};
    ad_graph_spec_t *gs = &s.graph;
    tensor_shape_t sx = {2, {AD_ROWS, 2}}, sy = {2, {AD_ROWS, 1}}, sw = {2, {1, 3}};
    static const double w[] = {0.5, 1.0, -2.0};
    const char *x[] = {"x"}, *mm[] = {"xb", "W"}, *loss[] = {"z", "y"},
               *add[] = {"z", through == THROUGH_LOSS ? "inner" : "y"},
               *outer[] = {through != THROUGH_NOTHING ? "p" : "z", "y"};
    ck_assert_int_eq(ad_graph_spec_add(gs, "x", AD_OP_INPUT, 0, NULL, &sx, NULL, 0, 0, &err), 0);
    ck_assert_int_eq(ad_graph_spec_add(gs, "y", AD_OP_INPUT, 0, NULL, &sy, NULL, 0, 0, &err), 0);
    ck_assert_int_eq(ad_graph_spec_add(gs, "xb", AD_OP_BIAS, 1, x, NULL, NULL, 0, 0, &err), 0);
    ck_assert_int_eq(ad_graph_spec_add(gs, "W", AD_OP_PARAM, 0, NULL, &sw, w, 0, 0, &err), 0);
    ck_assert_int_eq(ad_graph_spec_add(gs, "z", AD_OP_MATMUL, 2, mm, NULL, NULL, 0, 1, &err), 0);
    if (through == THROUGH_LOSS)
        ck_assert_int_eq(ad_graph_spec_add(gs, "inner", AD_OP_L2_LOSS, 2, loss, NULL, NULL, 0, 0,
                                           &err), 0);
    if (through != THROUGH_NOTHING)
        ck_assert_int_eq(ad_graph_spec_add(gs, "p", AD_OP_ADD, 2, add, NULL, NULL, 0, 0, &err),
                         0);
    ck_assert_int_eq(ad_graph_spec_add(gs, "L", AD_OP_L2_LOSS, 2, outer, NULL, NULL, 0, 0, &err),
                     0);
    snprintf(gs->output, sizeof gs->output, "L");
    return make(&s, NULL, 0, 0, NULL);
}

START_TEST(test_graph_model)
{
    model_t *m = graph_model(THROUGH_NOTHING);
    Onnx__ModelProto *p = roundtrip(m, ONNX_DTYPE_FLOAT64);
    const Onnx__GraphProto *g = p->graph;
    ck_assert_int_eq(check_graph(g, "MatMul"), 1);
    ck_assert_int_eq(check_graph(g, "Concat"), 2);   /* the ones column's shape, then bias */
    ck_assert_int_eq(check_graph(g, "Reshape"), 1);
    ck_assert_uint_eq(g->n_output, 1);
    check_value(g->output[0], "outputs", ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE, 1, 0);
    const Onnx__TensorProto *wt = init_named(g, "g_W");
    ck_assert_double_eq(raw_at(wt, 2), -2.0);
    onnx__model_proto__free_unpacked(p, NULL);
    model_free(m);
}
END_TEST

/* onnx_export() of m must fail with field "format" and a message containing `what`. */
static void expect_refused(model_t *m, const char *what)
{
    err_t err = {0};
    onnx_export_opts_t o = {.dtype = ONNX_DTYPE_FLOAT64, .producer_version = "1", .step = 0,
                            .spec_json = "{}"};
    uint8_t *bytes = (uint8_t *)&o;
    size_t len = 7;
    ck_assert_int_eq(onnx_export(m, &o, &bytes, &len, &err), ERR_INVAL);
    ck_assert_ptr_null(bytes);
    ck_assert_uint_eq(len, 0);
    ck_assert_str_eq(err.field, "format");
    ck_assert_msg(strstr(err.msg, what) != NULL, "%s", err.msg);
}

START_TEST(test_graph_through_labels_is_refused)
{
    /* The loss is the op at fault, not the input y it reads. */
    model_t *m = graph_model(THROUGH_LOSS);
    expect_refused(m, "node 'inner' (op l2_loss) has no ONNX counterpart");
    model_free(m);
    m = graph_model(THROUGH_Y);
    expect_refused(m, "node 'y' (op input) is an input other than x");
    model_free(m);
}
END_TEST

START_TEST(test_dtype_names)
{
    ck_assert_int_eq(onnx_dtype_from_name("float64"), ONNX_DTYPE_FLOAT64);
    ck_assert_int_eq(onnx_dtype_from_name("float32"), ONNX_DTYPE_FLOAT32);
    ck_assert_int_eq(onnx_dtype_from_name("double"), 0);
    ck_assert_int_eq(onnx_dtype_from_name(""), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("onnx_export");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_logistic_model_and_weights);
    tcase_add_test(tc, test_float32_casts_weights);
    tcase_add_test(tc, test_ovo_vote_tables);
    tcase_add_test(tc, test_mlp_every_activation);
    tcase_add_test(tc, test_graph_model);
    tcase_add_test(tc, test_graph_through_labels_is_refused);
    tcase_add_test(tc, test_dtype_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
