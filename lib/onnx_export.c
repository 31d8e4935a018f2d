/* lib/onnx_export.c -- models as ONNX ModelProto bytes (protobuf-c, schema generated at build
 * time from the onnx.proto Debian ships). See onnx_export.h for the graph each kind becomes. */
#include "onnx_export.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"

/* ---- the builder: every message and string of one export, freed together ----------------- */

typedef struct builder {
    int32_t elem;            /* ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE or __FLOAT */
    void **owned;            /* every allocation below, freed by builder_free() */
    size_t n_owned, cap_owned;
    Onnx__NodeProto **node;
    size_t n_node, cap_node;
    Onnx__TensorProto **init;
    size_t n_init, cap_init;
    int32_t n_tmp;           /* names of intermediate values: "t0", "t1", ... */
    int failed;              /* an allocation failed: the export reports ERR_NOMEM */
} builder_t;

/* Grow *arr (elements of `size` bytes) to hold one more; 0 or -1. */
static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t cap2 = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, cap2 * size);
    if (p == NULL)
        return -1;
    *arr = p;
    *cap = cap2;
    return 0;
}

/* Zeroed memory owned by the builder, or NULL (and b->failed) when out of memory. */
static void *b_alloc(builder_t *b, size_t size)
{
    void *p = calloc(1, size ? size : 1);
    if (p == NULL || grow((void **)&b->owned, &b->cap_owned, b->n_owned, sizeof *b->owned) < 0) {
        free(p);
        b->failed = 1;
        return NULL;
    }
    b->owned[b->n_owned++] = p;
    return p;
}

static char *b_str(builder_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *b_str(builder_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? b_alloc(b, (size_t)n + 1) : NULL;
    if (s == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void builder_free(builder_t *b)
{
    for (size_t i = 0; i < b->n_owned; ++i)
        free(b->owned[i]);
    free(b->owned);
    free(b->node);
    free(b->init);
}

/*
 * Append node `op` reading the given inputs (NULL-terminated, at most 3) and writing `out`
 * (a fresh "t<n>" when NULL). Returns the node (for attributes); its output is node->output[0].
 * On allocation failure returns NULL with b->failed set; later calls then do nothing useful
 * and onnx_export() reports ERR_NOMEM once at the end.
 */
static Onnx__NodeProto *b_node(builder_t *b, const char *op, const char *out, const char *in0,
                               const char *in1, const char *in2)
{
    const char *in[3] = {in0, in1, in2};
    Onnx__NodeProto *n = b_alloc(b, sizeof *n);
    char **ins = b_alloc(b, 3 * sizeof *ins), **outs = b_alloc(b, sizeof *outs);
    if (n == NULL || ins == NULL || outs == NULL
        || grow((void **)&b->node, &b->cap_node, b->n_node, sizeof *b->node) < 0) {
        b->failed = 1;
        return NULL;
    }
    onnx__node_proto__init(n);
    for (int i = 0; i < 3 && in[i] != NULL; ++i)
        ins[n->n_input++] = (char *)in[i];
    n->input = ins;
    outs[0] = out != NULL ? (char *)out : b_str(b, "t%d", b->n_tmp++);
    n->output = outs;
    n->n_output = 1;
    n->op_type = (char *)op;
    n->name = b_str(b, "n%zu_%s", b->n_node, op);
    b->node[b->n_node++] = n;
    return n;
}

/* The name a node writes ("" when the node could not be made: the export fails anyway). */
static const char *out_of(const Onnx__NodeProto *n)
{
    return n != NULL && n->output[0] != NULL ? n->output[0] : "";
}

static Onnx__AttributeProto *b_attr(builder_t *b, Onnx__NodeProto *n, const char *name)
{
    Onnx__AttributeProto *a = b_alloc(b, sizeof *a);
    if (n == NULL || a == NULL)
        return NULL;
    Onnx__AttributeProto **arr = b_alloc(b, (n->n_attribute + 1) * sizeof *arr);
    if (arr == NULL)
        return NULL;
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    if (n->n_attribute)
        memcpy(arr, n->attribute, n->n_attribute * sizeof *arr);
    arr[n->n_attribute++] = a;
    n->attribute = arr;
    return a;
}

static void b_attr_int(builder_t *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = b_attr(b, n, name);
    if (a == NULL)
        return;
    a->has_type = 1;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->has_i = 1;
    a->i = v;
}

/* A tensor of the export's element type, shape dims[0..n_dims), from doubles (x may be NULL
 * for a tensor of `fill`). Raw data, little-endian, as the ONNX schema asks. */
static Onnx__TensorProto *b_tensor(builder_t *b, const char *name, int32_t n_dims,
                                   const int64_t *dims, const double *x, double fill)
{
    Onnx__TensorProto *t = b_alloc(b, sizeof *t);
    int64_t n = 1;
    for (int32_t i = 0; i < n_dims; ++i)
        n *= dims[i];
    size_t width = b->elem == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE ? 8 : 4;
    int64_t *d = b_alloc(b, (size_t)(n_dims > 0 ? n_dims : 1) * sizeof *d);
    uint8_t *raw = b_alloc(b, (size_t)n * width);
    if (t == NULL || d == NULL || raw == NULL)
        return NULL;
    onnx__tensor_proto__init(t);
    t->name = (char *)name;
    if (n_dims > 0)
        memcpy(d, dims, (size_t)n_dims * sizeof *d);
    t->dims = d;
    t->n_dims = (size_t)n_dims;
    t->has_data_type = 1;
    t->data_type = b->elem;
    for (int64_t i = 0; i < n; ++i) {
        double v = x != NULL ? x[i] : fill;
        uint64_t bits;
        if (width == 8) {
            memcpy(&bits, &v, 8);
        } else {
            float f = (float)v;
            uint32_t b32;
            memcpy(&b32, &f, 4);
            bits = b32;
        }
        for (size_t k = 0; k < width; ++k)
            raw[(size_t)i * width + k] = (uint8_t)(bits >> (8 * k));
    }
    t->has_raw_data = 1;
    t->raw_data.data = raw;
    t->raw_data.len = (size_t)n * width;
    return t;
}

/* Add t as an initializer; returns its name. */
static const char *b_init(builder_t *b, Onnx__TensorProto *t)
{
    if (t == NULL || grow((void **)&b->init, &b->cap_init, b->n_init, sizeof *b->init) < 0) {
        b->failed = 1;
        return "";
    }
    b->init[b->n_init++] = t;
    return t->name;
}

/* An int64 initializer (axes, shapes, indices); n_dims 0 is a scalar. Made once per name:
 * later calls with the same name return it as it is. */
static const char *b_init_i64(builder_t *b, const char *name, int32_t n_dims, const int64_t *v,
                              int64_t n)
{
    for (size_t i = 0; i < b->n_init; ++i)
        if (strcmp(b->init[i]->name, name) == 0)
            return name;
    Onnx__TensorProto *t = b_alloc(b, sizeof *t);
    int64_t *data = b_alloc(b, (size_t)n * sizeof *data), *d = b_alloc(b, sizeof *d);
    if (t == NULL || data == NULL || d == NULL)
        return "";
    onnx__tensor_proto__init(t);
    t->name = (char *)name;
    *d = n;
    t->dims = d;
    t->n_dims = (size_t)n_dims;
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    memcpy(data, v, (size_t)n * sizeof *data);
    t->int64_data = data;
    t->n_int64_data = (size_t)n;
    return b_init(b, t);
}

/* A scalar of the export's element type. */
static const char *b_scalar(builder_t *b, const char *name, double v)
{
    return b_init(b, b_tensor(b, name, 0, NULL, NULL, v));
}

/* ---- the pieces every kind is made of ----------------------------------------------------- */

/* sigmoid(z) exactly as ops.c's sigmoid(): e = exp(-|z|), then 1/(1+e) where z >= 0, else
 * e/(1+e). Needs the scalars "zero" and "one". */
static const char *emit_sigmoid(builder_t *b, const char *z, const char *out)
{
    const char *e = out_of(b_node(b, "Exp", NULL, out_of(b_node(b, "Neg", NULL,
                                  out_of(b_node(b, "Abs", NULL, z, NULL, NULL)), NULL, NULL)),
                                  NULL, NULL));
    const char *d = out_of(b_node(b, "Add", NULL, "one", e, NULL));
    const char *big = out_of(b_node(b, "Div", NULL, "one", d, NULL));
    const char *small = out_of(b_node(b, "Div", NULL, e, d, NULL));
    const char *pos = out_of(b_node(b, "GreaterOrEqual", NULL, z, "zero", NULL));
    return out_of(b_node(b, "Where", out, pos, big, small));
}

static const char *emit_cast(builder_t *b, const char *v, int32_t to, const char *out)
{
    Onnx__NodeProto *n = b_node(b, "Cast", out, v, NULL, NULL);
    b_attr_int(b, n, "to", to);
    return out_of(n);
}

/* step(v): 1 where v > 0, else 0, in the export's element type (ops.c's op_step). */
static const char *emit_step(builder_t *b, const char *v, const char *out)
{
    return emit_cast(b, out_of(b_node(b, "Greater", NULL, v, "zero", NULL)), b->elem, out);
}

/* v [N, k] -> [N] (drops axis 1; k must be 1). */
static const char *emit_squeeze(builder_t *b, const char *v, const char *out)
{
    static const int64_t axis1 = 1;
    if (strcmp(b_init_i64(b, "axis1", 1, &axis1, 1), "") == 0)
        return "";
    return out_of(b_node(b, "Squeeze", out, v, "axis1", NULL));
}

/* classes [N] int64: 1 where z[:, 0] > 0, else 0 (the binary kinds' decision). */
static const char *emit_binary_classes(builder_t *b, const char *z)
{
    static const int64_t col0 = 0;
    b_init_i64(b, "col0", 0, &col0, 1);
    Onnx__NodeProto *g = b_node(b, "Gather", NULL, z, "col0", NULL);
    b_attr_int(b, g, "axis", 1);
    const char *pos = out_of(b_node(b, "Greater", NULL, out_of(g), "zero", NULL));
    return emit_cast(b, pos, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, "classes");
}

/* classes [N] int64: the first column holding the row's largest value. */
static const char *emit_argmax(builder_t *b, const char *v, const char *out)
{
    Onnx__NodeProto *n = b_node(b, "ArgMax", out, v, NULL, NULL);
    b_attr_int(b, n, "axis", 1);
    b_attr_int(b, n, "keepdims", 0);
    return out_of(n);
}

/* log_softmax(z) over the last axis as ops.c's op_log_softmax computes it: (z − max) −
 * log1p(rest), rest = Σ exp(z_j − max) over every column but the first largest. ONNX's
 * LogSoftmax takes log(Σ exp) instead: rounding 1 + rest to a double loses the dominant class's
 * log-probability (≈ −rest) once its logit leads by 9 or more, far beyond 1e-12 relative. ONNX
 * has no Log1p, so log1p(rest) is log(u)·rest/(u − 1) with u = 1 + rest (a few ulps; rest
 * itself where u rounds to 1). Needs the scalars "zero" and "one". */
static const char *emit_log_softmax(builder_t *b, const char *z, const char *out)
{
    static const int64_t last = -1;
    const char *axes = b_init_i64(b, "axes_last", 1, &last, 1);
    const char *axis = b_init_i64(b, "axis_last", 0, &last, 1);
    Onnx__NodeProto *arg = b_node(b, "ArgMax", NULL, z, NULL, NULL);
    b_attr_int(b, arg, "axis", -1);
    b_attr_int(b, arg, "keepdims", 1);
    Onnx__NodeProto *mx = b_node(b, "GatherElements", NULL, z, out_of(arg), NULL);
    b_attr_int(b, mx, "axis", -1);
    const char *d = out_of(b_node(b, "Sub", NULL, z, out_of(mx), NULL));
    const char *e = out_of(b_node(b, "Exp", NULL, d, NULL, NULL));
    /* The first maximum is left out of rest; later ties count exp(0) = 1, as in ops.c. */
    const char *is_max = out_of(b_node(b, "Equal", NULL, d, "zero", NULL));
    const char *seen = out_of(b_node(b, "CumSum", NULL, emit_cast(b, is_max, b->elem, NULL),
                                     axis, NULL));
    const char *first = out_of(b_node(b, "And", NULL, is_max,
                                      out_of(b_node(b, "Equal", NULL, seen, "one", NULL)), NULL));
    Onnx__NodeProto *rest = b_node(b, "ReduceSum", NULL,
                                   out_of(b_node(b, "Where", NULL, first, "zero", e)), axes, NULL);
    b_attr_int(b, rest, "keepdims", 1);
    const char *r = out_of(rest);
    const char *u = out_of(b_node(b, "Add", NULL, "one", r, NULL));
    const char *ratio = out_of(b_node(b, "Div", NULL,
                                      out_of(b_node(b, "Mul", NULL,
                                                    out_of(b_node(b, "Log", NULL, u, NULL, NULL)),
                                                    r, NULL)),
                                      out_of(b_node(b, "Sub", NULL, u, "one", NULL)), NULL));
    const char *rounds_to_one = out_of(b_node(b, "Equal", NULL, u, "one", NULL));
    const char *log1p_rest = out_of(b_node(b, "Where", NULL, rounds_to_one, r, ratio));
    return out_of(b_node(b, "Sub", out, d, log1p_rest, NULL));
}

/* A raw little-endian initializer of `width`-byte integers (int32, bool) from v[0..n). */
static const char *b_init_ints(builder_t *b, const char *name, int32_t elem, size_t width,
                               int32_t n_dims, const int64_t *dims, const int32_t *v, int64_t n)
{
    Onnx__TensorProto *t = b_alloc(b, sizeof *t);
    int64_t *d = b_alloc(b, (size_t)n_dims * sizeof *d);
    uint8_t *raw = b_alloc(b, (size_t)n * width);
    if (t == NULL || d == NULL || raw == NULL)
        return "";
    onnx__tensor_proto__init(t);
    t->name = (char *)name;
    memcpy(d, dims, (size_t)n_dims * sizeof *d);
    t->dims = d;
    t->n_dims = (size_t)n_dims;
    t->has_data_type = 1;
    t->data_type = elem;
    for (int64_t i = 0; i < n; ++i)
        for (size_t k = 0; k < width; ++k)
            raw[(size_t)i * width + k] = (uint8_t)((uint32_t)v[i] >> (8 * k));
    t->has_raw_data = 1;
    t->raw_data.data = raw;
    t->raw_data.len = (size_t)n * width;
    return b_init(b, t);
}

/* ovo: class c is in k-1 pairs, first as b with every a < c (pairs (a, c)), then as a with
 * every b > c (pairs (c, b)). ovo_pairs[c][j] is the row of c's j-th pair, and c wins it when
 * it is the pair's a and z > 0, or its b and z <= 0: when (j >= c), ovo_is_a[c][j], equals the
 * decision. votes[c] = pairs won, a sum of ones, exact in float32 too; ArgMax takes the first
 * of equal counts, so ties go to the lower class. The two index tables hold 5k(k-1) bytes,
 * less than W1's own k(k-1)/2 rows of 1+inputs doubles. */
static void emit_ovo_classes(builder_t *b, const char *z, int32_t k)
{
    int64_t n = (int64_t)k * (k - 1);
    int32_t *pair = malloc((size_t)n * sizeof *pair), *is_a = malloc((size_t)n * sizeof *is_a);
    if (pair == NULL || is_a == NULL) {
        b->failed = 1;
        goto out;
    }
    for (int32_t c = 0; c < k; ++c)
        for (int32_t j = 0; j < k - 1; ++j) {
            int32_t lo = j < c ? j : c, hi = j < c ? c : j + 1;
            /* rows before lo's pairs: (k-1) + (k-2) + ... + (k-lo) */
            int64_t row = (int64_t)lo * k - (int64_t)lo * (lo + 1) / 2 + (hi - lo - 1);
            pair[(int64_t)c * (k - 1) + j] = (int32_t)row;
            is_a[(int64_t)c * (k - 1) + j] = j >= c;
        }
    int64_t dims[2] = {k, k - 1};
    static const int64_t axis2 = 2;
    b_init_ints(b, "ovo_pairs", ONNX__TENSOR_PROTO__DATA_TYPE__INT32, 4, 2, dims, pair, n);
    b_init_ints(b, "ovo_is_a", ONNX__TENSOR_PROTO__DATA_TYPE__BOOL, 1, 2, dims, is_a, n);
    b_init_i64(b, "axis2", 1, &axis2, 1);
    const char *pos = out_of(b_node(b, "Greater", NULL, z, "zero", NULL));
    Onnx__NodeProto *g = b_node(b, "Gather", NULL, pos, "ovo_pairs", NULL);
    b_attr_int(b, g, "axis", 1);
    const char *won = out_of(b_node(b, "Equal", NULL, out_of(g), "ovo_is_a", NULL));
    Onnx__NodeProto *sum = b_node(b, "ReduceSum", "votes", emit_cast(b, won, b->elem, NULL),
                                  "axis2", NULL);
    b_attr_int(b, sum, "keepdims", 0);
    emit_argmax(b, out_of(sum), "classes");
out:
    free(pair);
    free(is_a);
}

/* Dense layer l: Gemm(h, W[:,1:], W[:,0], transB) with W [k, 1+n] from the flat parameters. */
static const char *emit_dense(builder_t *b, model_t *m, int32_t l, const char *h)
{
    int32_t rows, cols;
    model_tensor_shape(m, l, &rows, &cols);
    const double *w = model_params(m) + model_tensor_offset(m, l);
    double *weight = malloc((size_t)rows * (size_t)(cols - 1) * sizeof *weight + 1);
    double *bias = malloc((size_t)rows * sizeof *bias + 1);
    const char *z = "";
    if (weight == NULL || bias == NULL) {
        b->failed = 1;
        goto out;
    }
    for (int64_t i = 0; i < rows; ++i) {
        bias[i] = w[i * cols];
        memcpy(weight + i * (cols - 1), w + i * cols + 1, (size_t)(cols - 1) * sizeof *weight);
    }
    const char *name = model_tensor_name(m, l);
    int64_t dw[2] = {rows, cols - 1}, db[1] = {rows};
    const char *wn = b_init(b, b_tensor(b, b_str(b, "%s.weight", name), 2, dw, weight, 0.0));
    const char *bn = b_init(b, b_tensor(b, b_str(b, "%s.bias", name), 1, db, bias, 0.0));
    Onnx__NodeProto *n = b_node(b, "Gemm", b_str(b, "z%d", l + 1), h, wn, bn);
    b_attr_int(b, n, "transB", 1);
    z = out_of(n);
out:
    free(weight);
    free(bias);
    return z;
}

static const char *emit_activation(builder_t *b, int32_t act, const char *z, const char *out)
{
    switch (act) {
    case MODEL_ACT_SIGMOID:
        return emit_sigmoid(b, z, out);
    case MODEL_ACT_TANH:
        return out_of(b_node(b, "Tanh", out, z, NULL, NULL));
    case MODEL_ACT_RELU:
        return out_of(b_node(b, "Relu", out, z, NULL, NULL));
    case MODEL_ACT_SOFTMAX: {
        Onnx__NodeProto *n = b_node(b, "Softmax", out, z, NULL, NULL);
        b_attr_int(b, n, "axis", 1);
        return out_of(n);
    }
    default:
        return out != NULL ? out_of(b_node(b, "Identity", out, z, NULL, NULL)) : z;
    }
}

/* Every kind but graph. Sets *n_out to the numbers per row of "outputs" and *scalar to 1 when
 * they are one number per row ([N] rather than [N, 1]), as model_predict() does. */
static void emit_dense_kind(builder_t *b, model_t *m, int32_t *n_out, int *scalar)
{
    const model_spec_t *s = model_spec(m);
    int32_t n_layer = model_n_tensors(m);
    const char *h = "x";
    for (int32_t l = 0; l < n_layer; ++l) {
        const char *z = emit_dense(b, m, l, h);
        h = z;
        if (s->kind == MODEL_KIND_MLP && l < s->n_hidden)
            h = emit_activation(b, s->hidden[l].activation, z, NULL);
    }
    const char *z = h;
    int32_t rows, cols;
    model_tensor_shape(m, n_layer - 1, &rows, &cols);
    *n_out = rows;
    *scalar = rows == 1 && s->kind != MODEL_KIND_SOFTMAX && s->kind != MODEL_KIND_OVA
              && s->kind != MODEL_KIND_OVO;
    int32_t act = MODEL_ACT_LINEAR;
    switch (s->kind) {
    case MODEL_KIND_LOGISTIC:
    case MODEL_KIND_OVA:
    case MODEL_KIND_OVO:
        act = MODEL_ACT_SIGMOID;
        break;
    case MODEL_KIND_SOFTMAX:
        act = MODEL_ACT_SOFTMAX;
        break;
    case MODEL_KIND_MLP:
        act = s->output_activation;
        break;
    default:
        break;
    }
    const char *y;
    if (s->kind == MODEL_KIND_PERCEPTRON)
        y = emit_step(b, z, NULL);
    else
        y = emit_activation(b, act, z, NULL);
    if (*scalar)
        emit_squeeze(b, y, "outputs");
    else
        b_node(b, "Identity", "outputs", y, NULL, NULL);
    if (!model_is_classifier(m))
        return;
    if (s->kind == MODEL_KIND_OVO)
        emit_ovo_classes(b, z, s->classes);
    else if (s->kind == MODEL_KIND_SOFTMAX || s->kind == MODEL_KIND_OVA
             || s->output_activation == MODEL_ACT_SOFTMAX)
        emit_argmax(b, z, "classes");
    else
        emit_binary_classes(b, z);
}

/* ---- graph models ------------------------------------------------------------------------- */

#define SYM_ROWS (-1) /* a first dimension that is the batch's row count */

typedef struct sym_shape {
    int32_t n_d;
    int64_t d[2];
} sym_shape_t;

/* A shape with exactly one element whatever the rows: [], [1], [1, 1]. */
static int sym_is_one_value(const sym_shape_t *sh)
{
    for (int32_t k = 0; k < sh->n_d; ++k)
        if (sh->d[k] != 1)
            return 0;
    return 1;
}

static const ad_node_spec_t *spec_node(const ad_graph_spec_t *gs, const char *id)
{
    for (int32_t i = 0; i < gs->n_node; ++i)
        if (strcmp(gs->node[i].id, id) == 0)
            return &gs->node[i];
    return NULL;
}

static int is_loss(int32_t op)
{
    return op == AD_OP_L2_LOSS || op == AD_OP_BCE_LOSS || op == AD_OP_CCE_LOSS;
}

static int unsupported(const ad_graph_t *g, int32_t i, const char *why, err_t *err)
{
    return err_set_field(err, ERR_INVAL, "format",
                         "format=onnx: node '%s' (op %s) %s", ad_id(g, i),
                         ad_op_name(ad_op(g, i)), why);
}

/* 1 for the ops emit_graph_node() writes as ONNX (an input only when it is x). */
static int graph_op_exportable(int32_t op)
{
    switch (op) {
    case AD_OP_INPUT: case AD_OP_PARAM: case AD_OP_CONST: case AD_OP_ADD: case AD_OP_SUB:
    case AD_OP_MUL: case AD_OP_DIV: case AD_OP_NEG: case AD_OP_MATMUL: case AD_OP_BIAS:
    case AD_OP_TRANSPOSE: case AD_OP_EXP: case AD_OP_LOG: case AD_OP_SIGMOID: case AD_OP_TANH:
    case AD_OP_RELU: case AD_OP_STEP: case AD_OP_MAX: case AD_OP_MIN: case AD_OP_SQUARE:
    case AD_OP_SUM: case AD_OP_MEAN: case AD_OP_SOFTMAX: case AD_OP_LOG_SOFTMAX:
        return 1;
    default:
        return 0;
    }
}

/* A ones column [rows of c, 1] for the bias op: ConstantOfShape(Concat(Shape(c)[0:1], [1])). */
static const char *emit_ones_column(builder_t *b, const char *c)
{
    static const int64_t zero = 0, one = 1;
    b_init_i64(b, "i64_0", 1, &zero, 1);
    b_init_i64(b, "i64_1", 1, &one, 1);
    const char *shape = out_of(b_node(b, "Shape", NULL, c, NULL, NULL));
    const char *rows = out_of(b_node(b, "Slice", NULL, shape, "i64_0", "i64_1"));
    Onnx__NodeProto *cat = b_node(b, "Concat", NULL, rows, "i64_1", NULL);
    b_attr_int(b, cat, "axis", 0);
    Onnx__NodeProto *n = b_node(b, "ConstantOfShape", NULL, out_of(cat), NULL, NULL);
    Onnx__AttributeProto *a = b_attr(b, n, "value");
    int64_t d1 = 1;
    if (a != NULL) {
        a->has_type = 1;
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
        a->t = b_tensor(b, "one_value", 1, &d1, NULL, 1.0);
    }
    return out_of(n);
}

/* One graph node as ONNX nodes; *sh gets its shape (from its children's in sh[]). */
static int emit_graph_node(builder_t *b, model_t *m, int32_t i, const char **name,
                           sym_shape_t *sh, err_t *err)
{
    ad_graph_t *g = model_graph(m);
    const model_spec_t *s = model_spec(m);
    int32_t op = ad_op(g, i), c0 = ad_child(g, i, 0), c1 = ad_child(g, i, 1);
    const char *a = c0 >= 0 ? name[c0] : NULL, *bn = c1 >= 0 ? name[c1] : NULL;
    char *out = b_str(b, "g_%s", ad_id(g, i));
    static const char *const binary[] = {
        [AD_OP_ADD] = "Add", [AD_OP_SUB] = "Sub", [AD_OP_MUL] = "Mul", [AD_OP_DIV] = "Div",
        [AD_OP_MAX] = "Max", [AD_OP_MIN] = "Min"};
    static const char *const unary[] = {
        [AD_OP_NEG] = "Neg", [AD_OP_EXP] = "Exp", [AD_OP_LOG] = "Log", [AD_OP_TANH] = "Tanh",
        [AD_OP_RELU] = "Relu", [AD_OP_TRANSPOSE] = "Transpose"};
    switch (op) {
    case AD_OP_INPUT: {
        if (strcmp(ad_id(g, i), "x") != 0)
            return unsupported(g, i, "is an input other than x: the prediction must depend "
                               "on x alone", err);
        sh[i].n_d = 2;   /* model.c requires x to be [null, inputs] */
        sh[i].d[0] = SYM_ROWS;
        sh[i].d[1] = model_n_x(m);
        name[i] = "x";
        return 0;
    }
    case AD_OP_PARAM:
    case AD_OP_CONST: {
        const tensor_shape_t *ts = ad_shape(g, i);
        int64_t dims[2] = {ts->d[0], ts->d[1]};
        sh[i].n_d = ts->n_d;
        sh[i].d[0] = dims[0];
        sh[i].d[1] = dims[1];
        name[i] = b_init(b, b_tensor(b, out, ts->n_d, dims, ad_value(g, i), 0.0));
        return 0;
    }
    case AD_OP_ADD: case AD_OP_SUB: case AD_OP_MUL: case AD_OP_DIV: case AD_OP_MAX:
    case AD_OP_MIN: {
        /* ops.c's shape_binary: only a single value broadcasts, to the other side's shape
         * (the higher rank when both are single values), as ONNX's numpy-style rule does. */
        int one0 = sym_is_one_value(&sh[c0]), one1 = sym_is_one_value(&sh[c1]);
        sh[i] = one0 && one1 ? (sh[c0].n_d >= sh[c1].n_d ? sh[c0] : sh[c1])
                : one0       ? sh[c1]
                             : sh[c0];
        name[i] = out_of(b_node(b, binary[op], out, a, bn, NULL));
        return 0;
    }
    case AD_OP_NEG: case AD_OP_EXP: case AD_OP_LOG: case AD_OP_TANH: case AD_OP_RELU:
        sh[i] = sh[c0];
        name[i] = out_of(b_node(b, unary[op], out, a, NULL, NULL));
        return 0;
    case AD_OP_TRANSPOSE:
        sh[i].n_d = 2;
        sh[i].d[0] = sh[c0].d[1];
        sh[i].d[1] = sh[c0].d[0];
        name[i] = out_of(b_node(b, unary[op], out, a, NULL, NULL));
        return 0;
    case AD_OP_SIGMOID:
        sh[i] = sh[c0];
        name[i] = emit_sigmoid(b, a, out);
        return 0;
    case AD_OP_STEP:
        sh[i] = sh[c0];
        name[i] = emit_step(b, a, out);
        return 0;
    case AD_OP_SQUARE:
        sh[i] = sh[c0];
        name[i] = out_of(b_node(b, "Mul", out, a, a, NULL));
        return 0;
    case AD_OP_SUM:
    case AD_OP_MEAN: {
        Onnx__NodeProto *n = b_node(b, op == AD_OP_SUM ? "ReduceSum" : "ReduceMean", out, a,
                                    NULL, NULL);
        b_attr_int(b, n, "keepdims", 0);
        sh[i].n_d = 0;
        name[i] = out_of(n);
        return 0;
    }
    case AD_OP_SOFTMAX: {
        Onnx__NodeProto *n = b_node(b, "Softmax", out, a, NULL, NULL);
        b_attr_int(b, n, "axis", -1);
        sh[i] = sh[c0];
        name[i] = out_of(n);
        return 0;
    }
    case AD_OP_LOG_SOFTMAX:
        sh[i] = sh[c0];
        name[i] = emit_log_softmax(b, a, out);
        return 0;
    case AD_OP_MATMUL: {
        const ad_node_spec_t *ns = spec_node(&s->graph, ad_id(g, i));
        int tb = ns != NULL && ns->transpose_b;
        const char *rhs = tb ? out_of(b_node(b, "Transpose", NULL, bn, NULL, NULL)) : bn;
        sh[i].n_d = 2;
        sh[i].d[0] = sh[c0].d[0];
        sh[i].d[1] = tb ? sh[c1].d[0] : sh[c1].d[1];
        name[i] = out_of(b_node(b, "MatMul", out, a, rhs, NULL));
        return 0;
    }
    case AD_OP_BIAS: {
        Onnx__NodeProto *n = b_node(b, "Concat", out, emit_ones_column(b, a), a, NULL);
        b_attr_int(b, n, "axis", 1);
        sh[i] = sh[c0];
        sh[i].d[1] += 1;
        name[i] = out_of(n);
        return 0;
    }
    default:
        return unsupported(g, i, "has no ONNX counterpart", err);
    }
}

/* A graph model: the nodes its prediction depends on, in topological order. */
static int emit_graph_kind(builder_t *b, model_t *m, int32_t *n_out, int *scalar, err_t *err)
{
    ad_graph_t *g = model_graph(m);
    int32_t n = ad_n_node(g), pred = ad_output(g);
    if (is_loss(ad_op(g, pred)))
        pred = ad_child(g, pred, 0);
    uint8_t *need = calloc((size_t)n, 1);
    const char **name = calloc((size_t)n, sizeof *name);
    sym_shape_t *sh = calloc((size_t)n, sizeof *sh);
    int rc = ERR_OK;
    if (need == NULL || name == NULL || sh == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory exporting a graph of %d nodes", n);
        goto out;
    }
    need[pred] = 1;
    for (int32_t i = n - 1; i >= 0; --i)
        for (int32_t k = 0; need[i] && k < ad_op_arity(ad_op(g, i)); ++k)
            need[ad_child(g, i, k)] = 1;
    /* An op without a counterpart (a loss) is the fault to report, before the input y that
     * such a node usually reads. */
    for (int32_t i = 0; i < n && rc == 0; ++i)
        if (need[i] && !graph_op_exportable(ad_op(g, i)))
            rc = unsupported(g, i, "has no ONNX counterpart", err);
    for (int32_t i = 0; i < n && rc == 0; ++i)
        if (need[i])
            rc = emit_graph_node(b, m, i, name, sh, err);
    if (rc < 0)
        goto out;
    /* model_predict() gives each row elems / rows values; ONNX gets the same with a Reshape to
     * [-1] or [-1, n_out]. That needs the rows as the prediction's first dimension (x's is
     * always the rows: model.c requires [null, inputs]); a scalar or a transposed prediction
     * has no per-row layout ONNX could reproduce for every N. */
    const sym_shape_t *o = &sh[pred];
    int64_t per_row = 1;
    for (int32_t k = 1; k < o->n_d; ++k)
        per_row *= o->d[k];
    if (o->n_d < 1 || o->d[0] != SYM_ROWS || per_row < 1 || per_row > INT32_MAX) {
        rc = err_set_field(err, ERR_INVAL, "format", "format=onnx: the prediction node '%s' "
                           "does not have the rows of x as its first dimension", ad_id(g, pred));
        goto out;
    }
    *n_out = (int32_t)per_row;
    *scalar = per_row == 1;
    int64_t shape[2] = {-1, per_row};
    b_init_i64(b, "out_shape", 1, shape, *scalar ? 1 : 2);
    b_node(b, "Reshape", "outputs", name[pred], "out_shape", NULL);
out:
    free(need);
    free(name);
    free(sh);
    return rc;
}

/* ---- the model ---------------------------------------------------------------------------- */

/* Graph input/output: a tensor of `elem` shaped [N] or [N, cols], N symbolic (the rows). */
static Onnx__ValueInfoProto *b_value_info(builder_t *b, const char *name, int32_t elem,
                                          int32_t n_d, int64_t cols)
{
    Onnx__ValueInfoProto *v = b_alloc(b, sizeof *v);
    Onnx__TypeProto *t = b_alloc(b, sizeof *t);
    Onnx__TypeProto__Tensor *tt = b_alloc(b, sizeof *tt);
    Onnx__TensorShapeProto *s = b_alloc(b, sizeof *s);
    Onnx__TensorShapeProto__Dimension **dims = b_alloc(b, 2 * sizeof *dims);
    Onnx__TensorShapeProto__Dimension *d0 = b_alloc(b, sizeof *d0), *d1 = b_alloc(b, sizeof *d1);
    if (v == NULL || t == NULL || tt == NULL || s == NULL || dims == NULL || d0 == NULL
        || d1 == NULL)
        return NULL;
    onnx__value_info_proto__init(v);
    onnx__type_proto__init(t);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(s);
    onnx__tensor_shape_proto__dimension__init(d0);
    onnx__tensor_shape_proto__dimension__init(d1);
    d0->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
    d0->dim_param = "N";
    d1->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    d1->dim_value = cols;
    dims[0] = d0;
    dims[1] = d1;
    s->dim = dims;
    s->n_dim = (size_t)n_d;
    tt->has_elem_type = 1;
    tt->elem_type = elem;
    tt->shape = s;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    t->tensor_type = tt;
    v->name = (char *)name;
    v->type = t;
    return v;
}

static Onnx__StringStringEntryProto *b_meta(builder_t *b, const char *key, const char *value)
{
    Onnx__StringStringEntryProto *e = b_alloc(b, sizeof *e);
    if (e == NULL)
        return NULL;
    onnx__string_string_entry_proto__init(e);
    e->key = (char *)key;
    e->value = (char *)value;
    return e;
}

int32_t onnx_dtype_from_name(const char *name)
{
    if (strcmp(name, "float64") == 0)
        return ONNX_DTYPE_FLOAT64;
    if (strcmp(name, "float32") == 0)
        return ONNX_DTYPE_FLOAT32;
    return 0;
}

int onnx_export(model_t *m, const onnx_export_opts_t *opts, uint8_t **out, size_t *len,
                err_t *err)
{
    *out = NULL;
    *len = 0;
    const model_spec_t *s = model_spec(m);
    builder_t b = {0};
    b.elem = opts->dtype == ONNX_DTYPE_FLOAT32 ? ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
                                               : ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
    b_scalar(&b, "zero", 0.0);
    b_scalar(&b, "one", 1.0);
    int32_t n_out = 1;
    int scalar = 1, rc = 0;
    if (s->kind == MODEL_KIND_GRAPH)
        rc = emit_graph_kind(&b, m, &n_out, &scalar, err);
    else
        emit_dense_kind(&b, m, &n_out, &scalar);
    if (rc < 0)
        goto done;

    Onnx__GraphProto *graph = b_alloc(&b, sizeof *graph);
    Onnx__ValueInfoProto **in = b_alloc(&b, sizeof *in), **outs = b_alloc(&b, 2 * sizeof *outs);
    Onnx__ModelProto *model = b_alloc(&b, sizeof *model);
    Onnx__OperatorSetIdProto *opset = b_alloc(&b, sizeof *opset);
    Onnx__OperatorSetIdProto **opsets = b_alloc(&b, sizeof *opsets);
    Onnx__StringStringEntryProto **meta = b_alloc(&b, 3 * sizeof *meta);
    if (b.failed || graph == NULL || in == NULL || outs == NULL || model == NULL || opset == NULL
        || opsets == NULL || meta == NULL)
        goto nomem;
    onnx__graph_proto__init(graph);
    graph->name = b_str(&b, "neurond_%s", model_kind_name(s->kind));
    graph->node = b.node;
    graph->n_node = b.n_node;
    graph->initializer = b.init;
    graph->n_initializer = b.n_init;
    in[0] = b_value_info(&b, "x", b.elem, 2, model_n_x(m));
    graph->input = in;
    graph->n_input = 1;
    outs[0] = b_value_info(&b, "outputs", b.elem, scalar ? 1 : 2, n_out);
    graph->output = outs;
    graph->n_output = 1;
    if (model_is_classifier(m)) {
        outs[1] = b_value_info(&b, "classes", ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, 1);
        graph->n_output = 2;
    }

    onnx__operator_set_id_proto__init(opset);
    opset->domain = "";
    opset->has_version = 1;
    opset->version = ONNX_EXPORT_OPSET;
    opsets[0] = opset;
    onnx__model_proto__init(model);
    model->has_ir_version = 1;
    model->ir_version = ONNX_EXPORT_IR_VERSION;
    model->opset_import = opsets;
    model->n_opset_import = 1;
    model->producer_name = "neurond";
    model->producer_version = (char *)(opts->producer_version ? opts->producer_version : "");
    model->doc_string = b_str(&b, "neurond %s model at step %lld: outputs as POST /predict",
                              model_kind_name(s->kind), (long long)opts->step);
    model->graph = graph;
    meta[0] = b_meta(&b, "neurond.kind", model_kind_name(s->kind));
    meta[1] = b_meta(&b, "neurond.step", b_str(&b, "%lld", (long long)opts->step));
    meta[2] = b_meta(&b, "neurond.spec", opts->spec_json ? opts->spec_json : "{}");
    model->metadata_props = meta;
    model->n_metadata_props = 3;
    if (b.failed || in[0] == NULL || outs[0] == NULL
        || (graph->n_output == 2 && outs[1] == NULL) || meta[0] == NULL || meta[1] == NULL
        || meta[2] == NULL || meta[1]->value == NULL || graph->name == NULL)
        goto nomem;
    size_t size = onnx__model_proto__get_packed_size(model);
    /* Protobuf (and so every ONNX reader) refuses a message of 2 GiB or more. */
    if (size > (size_t)INT32_MAX) {
        rc = err_set_field(err, ERR_INVAL, "format", "format=onnx: the model needs %zu bytes, "
                           "more than the 2 GiB one ONNX file can hold", size);
        goto done;
    }
    *out = malloc(size + 1);
    if (*out == NULL)
        goto nomem;
    *len = onnx__model_proto__pack(model, *out);
    goto done;
nomem:
    rc = err_set(err, ERR_NOMEM, "out of memory encoding the ONNX model");
done:
    builder_free(&b);
    return rc;
}
