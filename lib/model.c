/* lib/model.c -- every model kind compiled to one graph; parameter layout, init, predictions.
 *
 * Node names used by the builders (a graph model uses the user's own names):
 *   x [rows, inputs] -> z1 = affine(x, W1) = bias(x) W1^T -> h1 = act(z1) -> z2 ... -> zL
 *   out = output activation of zL (what /predict returns), loss = loss node on zL or out.
 * ova and ovo train each row of W1 as a logistic "j vs rest" / "a vs b" classifier through one
 * weighted-bce node whose per-entry targets t and weights w the model fills for each batch.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fused.h"
#include "model_internal.h"
#include "rng.h"
#include "tensor.h"

/* Batches with fewer multiply-adds than this (rows * (1+inputs) * outputs) stay on the graph:
 * the one-pass kernels pay off once X no longer sits in cache. */
#define MODEL_FUSED_MIN_WORK 4096
/* The fused kernels keep k outputs per row in registers and cache; wider layers go to dgemm. */
#define MODEL_FUSED_MAX_K 64

struct model {
    model_spec_t spec;
    ad_graph_t *g;
    int32_t n_x, n_y;
    int32_t node_x, node_y;       /* inputs written from batches */
    int32_t node_t, node_w;       /* ova/ovo targets and weights, or -1 */
    int32_t node_score;           /* the pre-activation / logits node */
    int32_t node_out;             /* what /predict returns */
    int32_t node_loss;
    int32_t n_tensor;
    char (*tensor_name)[AD_ID_MAX];
    int32_t *tensor_rows, *tensor_cols;
    int64_t *tensor_offset;
    uint8_t *decay_mask;
    int32_t *ovo_a, *ovo_b;       /* class pair of each ovo row */
    int32_t capacity_rows;        /* largest batch bound so far */
    int32_t engine;               /* enum model_engine */
    int32_t fused_loss;           /* enum fused_loss for the one-pass path, 0 when none fits */
    int fused_failed;             /* fused_new failed once: stay on the graph */
    fused_t *fused;               /* made on the first batch that takes the one-pass path */
    pool_t *pool;                 /* borrowed compute threads for fused and the graph's products,
                                     or NULL (model_set_pool) */
};

/* ---- graph builders --------------------------------------------------------------------- */

typedef struct builder {
    ad_graph_spec_t *gs;
    err_t *err;
    int rc;
} builder_t;

static void b_node(builder_t *b, const char *id, int32_t op, const char *in0, const char *in1,
                   const char *in2, const tensor_shape_t *shape, int32_t reduction, int32_t tb)
{
    if (b->rc < 0)
        return;
    const char *in[3] = {in0, in1, in2};
    int32_t n_in = in2 ? 3 : in1 ? 2 : in0 ? 1 : 0;
    b->rc = ad_graph_spec_add(b->gs, id, op, n_in, in, shape, NULL, reduction, tb, b->err);
}

static tensor_shape_t shape2(int32_t r, int32_t c)
{
    tensor_shape_t s = {2, {r, c}};
    return s;
}

static int32_t act_op(int32_t act)
{
    switch (act) {
    case MODEL_ACT_SIGMOID:
        return AD_OP_SIGMOID;
    case MODEL_ACT_TANH:
        return AD_OP_TANH;
    case MODEL_ACT_RELU:
        return AD_OP_RELU;
    case MODEL_ACT_SOFTMAX:
        return AD_OP_SOFTMAX;
    default:
        return AD_OP_NONE;
    }
}

/* Dense stack: x -> ... -> "z<L>" (logits of the last layer). */
static void build_dense(builder_t *b, const model_spec_t *s)
{
    tensor_shape_t sx = shape2(AD_ROWS, s->inputs);
    b_node(b, "x", AD_OP_INPUT, NULL, NULL, NULL, &sx, 0, 0);
    int32_t n_layer = s->kind == MODEL_KIND_MLP ? s->n_hidden + 1 : 1;
    int32_t in = s->inputs;
    char h[24] = "x";
    for (int32_t l = 1; l <= n_layer; ++l) {
        int32_t out;
        if (s->kind == MODEL_KIND_MLP)
            out = l <= s->n_hidden ? s->hidden[l - 1].units : s->outputs;
        else
            out = (int32_t)(model__is_class_kind(s->kind) ? model__class_rows(s) : s->outputs);
        char w[24], z[24];
        snprintf(w, sizeof w, "W%d", l);
        snprintf(z, sizeof z, "z%d", l);
        tensor_shape_t sw = shape2(out, 1 + in);
        b_node(b, w, AD_OP_PARAM, NULL, NULL, NULL, &sw, 0, 0);
        /* z = bias(h) W^T, without copying h into [rows, 1+in] */
        b_node(b, z, AD_OP_AFFINE, h, w, NULL, NULL, 0, 0);
        if (l <= (s->kind == MODEL_KIND_MLP ? s->n_hidden : 0)) {
            int32_t act = s->hidden[l - 1].activation;
            snprintf(h, sizeof h, "h%d", l);
            if (act == MODEL_ACT_LINEAR)
                b_node(b, h, AD_OP_MUL, z, "one", NULL, NULL, 0, 0);
            else
                b_node(b, h, act_op(act), z, NULL, NULL, NULL, 0, 0);
        } else {
            snprintf(h, sizeof h, "%s", z);
        }
        in = out;
    }
}

static int build_kind_graph(const model_spec_t *s, ad_graph_spec_t *gs, err_t *err)
{
    builder_t b = {gs, err, 0};
    tensor_shape_t scalar = {0, {1, 1}};
    static const double one = 1.0;
    int32_t n_layer = s->kind == MODEL_KIND_MLP ? s->n_hidden + 1 : 1;
    char zl[AD_ID_MAX];
    snprintf(zl, sizeof zl, "z%d", n_layer);

    /* A constant 1 lets a linear hidden activation be an identity node with a real id. */
    if (b.rc == 0)
        b.rc = ad_graph_spec_add(gs, "one", AD_OP_CONST, 0, NULL, &scalar, &one, 0, 0, err);
    build_dense(&b, s);

    int32_t n_y = s->outputs, k = (int32_t)model__class_rows(s);
    tensor_shape_t sy = shape2(AD_ROWS, 1), syo = shape2(AD_ROWS, n_y), stk = shape2(AD_ROWS, k);
    switch (s->kind) {
    case MODEL_KIND_LINEAR:
        b_node(&b, "y", AD_OP_INPUT, NULL, NULL, NULL, &syo, 0, 0);
        b_node(&b, "out", AD_OP_MUL, zl, "one", NULL, NULL, 0, 0);
        b_node(&b, "loss", AD_OP_L2_LOSS, "out", "y", NULL, NULL, s->reduction, 0);
        break;
    case MODEL_KIND_LOGISTIC:
        b_node(&b, "y", AD_OP_INPUT, NULL, NULL, NULL, &sy, 0, 0);
        b_node(&b, "out", AD_OP_SIGMOID, zl, NULL, NULL, NULL, 0, 0);
        if (s->loss == MODEL_LOSS_L2)
            b_node(&b, "loss", AD_OP_L2_LOSS, "out", "y", NULL, NULL, s->reduction, 0);
        else
            b_node(&b, "loss", AD_OP_BCE_LOSS, zl, "y", NULL, NULL, s->reduction, 0);
        break;
    case MODEL_KIND_PERCEPTRON:
        b_node(&b, "y", AD_OP_INPUT, NULL, NULL, NULL, &sy, 0, 0);
        b_node(&b, "out", AD_OP_STEP, zl, NULL, NULL, NULL, 0, 0);
        b_node(&b, "loss", AD_OP_PERCEPTRON_LOSS, zl, "y", NULL, NULL, s->reduction, 0);
        break;
    case MODEL_KIND_SOFTMAX:
        b_node(&b, "y", AD_OP_INPUT, NULL, NULL, NULL, &sy, 0, 0);
        b_node(&b, "out", AD_OP_SOFTMAX, zl, NULL, NULL, NULL, 0, 0);
        b_node(&b, "loss", AD_OP_CCE_LOSS, zl, "y", NULL, NULL, s->reduction, 0);
        break;
    case MODEL_KIND_OVA:
    case MODEL_KIND_OVO:
        /* y is kept as an input so batches bind the same way; the loss reads t and w. */
        b_node(&b, "y", AD_OP_INPUT, NULL, NULL, NULL, &sy, 0, 0);
        b_node(&b, "t", AD_OP_INPUT, NULL, NULL, NULL, &stk, 0, 0);
        b_node(&b, "w", AD_OP_INPUT, NULL, NULL, NULL, &stk, 0, 0);
        b_node(&b, "out", AD_OP_SIGMOID, zl, NULL, NULL, NULL, 0, 0);
        b_node(&b, "loss", AD_OP_WBCE_LOSS, zl, "t", "w", NULL, AD_REDUCTION_SUM, 0);
        break;
    case MODEL_KIND_MLP: {
        tensor_shape_t sym = s->output_activation == MODEL_ACT_SOFTMAX ? sy : syo;
        b_node(&b, "y", AD_OP_INPUT, NULL, NULL, NULL, &sym, 0, 0);
        if (s->output_activation == MODEL_ACT_LINEAR)
            b_node(&b, "out", AD_OP_MUL, zl, "one", NULL, NULL, 0, 0);
        else
            b_node(&b, "out", act_op(s->output_activation), zl, NULL, NULL, NULL, 0, 0);
        if (s->loss == MODEL_LOSS_L2)
            b_node(&b, "loss", AD_OP_L2_LOSS, "out", "y", NULL, NULL, s->reduction, 0);
        else if (s->loss == MODEL_LOSS_BCE)
            b_node(&b, "loss", AD_OP_BCE_LOSS, zl, "y", NULL, NULL, s->reduction, 0);
        else
            b_node(&b, "loss", AD_OP_CCE_LOSS, zl, "y", NULL, NULL, s->reduction, 0);
        break;
    }
    default:
        return err_set(err, ERR_INTERNAL, "no graph builder for kind %d", s->kind);
    }
    if (b.rc == 0)
        snprintf(gs->output, sizeof gs->output, "loss");
    return b.rc;
}

/* ---- construction ----------------------------------------------------------------------- */

/* The one-pass loss of fused.c that equals this kind's graph, or 0 when there is none. */
static int32_t fused_loss_of(const model_spec_t *s)
{
    int32_t loss = 0, k = s->outputs;
    switch (s->kind) {
    case MODEL_KIND_LINEAR:
        loss = FUSED_LOSS_L2;
        break;
    case MODEL_KIND_LOGISTIC:
        loss = s->loss == MODEL_LOSS_L2 ? FUSED_LOSS_SIGMOID_L2 : FUSED_LOSS_BCE;
        k = 1;
        break;
    case MODEL_KIND_SOFTMAX:
        loss = FUSED_LOSS_CCE;
        k = s->classes;
        break;
    case MODEL_KIND_OVA:
        loss = FUSED_LOSS_OVA;
        k = s->classes;
        break;
    default:
        return 0;
    }
    return k >= 1 && k <= MODEL_FUSED_MAX_K ? loss : 0;
}

static int is_loss_op(int32_t op)
{
    return op == AD_OP_L2_LOSS || op == AD_OP_BCE_LOSS || op == AD_OP_CCE_LOSS;
}

static void init_params(model_t *m)
{
    const model_spec_t *s = &m->spec;
    rng_t r;
    rng_seed(&r, s->init_seed);
    double *theta = ad_params(m->g);
    for (int32_t k = 0; k < m->n_tensor; ++k) {
        int32_t rows = m->tensor_rows[k], cols = m->tensor_cols[k];
        double *w = theta + m->tensor_offset[k];
        int dense = s->kind != MODEL_KIND_GRAPH;
        /* Graph params with a value in the graph keep it. */
        if (!dense) {
            const ad_node_spec_t *ns = NULL;
            for (int32_t i = 0; i < s->graph.n_node; ++i)
                if (strcmp(s->graph.node[i].id, m->tensor_name[k]) == 0)
                    ns = &s->graph.node[i];
            if (ns != NULL && ns->value != NULL)
                continue;
        }
        double xavier = sqrt(6.0 / (double)(dense ? (cols - 1) + rows : rows + cols));
        for (int32_t i = 0; i < rows; ++i) {
            for (int32_t j = 0; j < cols; ++j) {
                double v = 0.0;
                switch (s->init_method) {
                case MODEL_INIT_UNIFORM:
                    v = s->init_scale * (2.0 * rng_uniform(&r) - 1.0);
                    break;
                case MODEL_INIT_NORMAL:
                    v = s->init_scale * rng_normal(&r);
                    break;
                case MODEL_INIT_XAVIER:
                    /* Biases start at zero; weights uniform in ±sqrt(6/(fan_in+fan_out)). */
                    v = (dense && j == 0) ? 0.0 : xavier * (2.0 * rng_uniform(&r) - 1.0);
                    break;
                default:
                    v = 0.0;
                    break;
                }
                w[(int64_t)i * cols + j] = v;
            }
        }
    }
}

static int apply_param_values(model_t *m, err_t *err)
{
    const model_spec_t *s = &m->spec;
    double *theta = ad_params(m->g);
    for (int32_t i = 0; i < s->n_param_value; ++i) {
        const model_param_value_t *p = &s->param_value[i];
        char field[AD_ID_MAX + 16];
        snprintf(field, sizeof field, "parameters.%s", p->name);
        int32_t k = model_tensor_find(m, p->name);
        if (k < 0)
            return err_set_field(err, ERR_INVAL, field, "the model has no parameter \"%s\"",
                                 p->name);
        if (p->rows != m->tensor_rows[k] || p->cols != m->tensor_cols[k])
            return err_set_field(err, ERR_INVAL, field, "%s is [%d,%d], the model expects [%d,%d]",
                                 p->name, p->rows, p->cols, m->tensor_rows[k],
                                 m->tensor_cols[k]);
        memcpy(theta + m->tensor_offset[k], p->x,
               (size_t)p->rows * (size_t)p->cols * sizeof(double));
    }
    return 0;
}

static int index_tensors(model_t *m, err_t *err)
{
    ad_graph_t *g = m->g;
    int32_t n = ad_n_param_node(g);
    m->n_tensor = n;
    m->tensor_name = calloc((size_t)n + 1, sizeof *m->tensor_name);
    m->tensor_rows = calloc((size_t)n + 1, sizeof *m->tensor_rows);
    m->tensor_cols = calloc((size_t)n + 1, sizeof *m->tensor_cols);
    m->tensor_offset = calloc((size_t)n + 1, sizeof *m->tensor_offset);
    int64_t n_param = ad_n_param(g);
    m->decay_mask = malloc((size_t)n_param + 1);
    if (!m->tensor_name || !m->tensor_rows || !m->tensor_cols || !m->tensor_offset
        || !m->decay_mask)
        return err_set(err, ERR_NOMEM, "out of memory building a model");
    for (int32_t k = 0; k < n; ++k) {
        int32_t node = ad_param_node(g, k);
        const tensor_shape_t *sh = ad_shape(g, node);
        snprintf(m->tensor_name[k], AD_ID_MAX, "%s", ad_id(g, node));
        m->tensor_rows[k] = sh->n_d == 0 ? 1 : sh->d[0];
        m->tensor_cols[k] = sh->n_d == 2 ? sh->d[1] : 1;
        m->tensor_offset[k] = ad_param_offset(g, k);
        /* Weight decay never touches a dense layer's bias column; a user graph has no bias
         * convention, so all of its params decay. */
        uint8_t *mask = m->decay_mask + m->tensor_offset[k];
        for (int32_t i = 0; i < m->tensor_rows[k]; ++i)
            for (int32_t j = 0; j < m->tensor_cols[k]; ++j)
                mask[(int64_t)i * m->tensor_cols[k] + j] =
                    (m->spec.kind != MODEL_KIND_GRAPH && j == 0) ? 0 : 1;
    }
    return 0;
}

int model_new(const model_spec_t *spec, model_t **out, err_t *err)
{
    *out = NULL;
    int rc;
    ad_graph_spec_t built = {0};
    model_t *m = calloc(1, sizeof *m);
    if (m == NULL)
        return err_set(err, ERR_NOMEM, "out of memory building a model");
    if ((rc = model_spec_copy(spec, &m->spec, err)) < 0) {
        free(m);
        return rc;
    }
    const ad_graph_spec_t *gs = &m->spec.graph;
    if (spec->kind != MODEL_KIND_GRAPH) {
        if ((rc = build_kind_graph(&m->spec, &built, err)) < 0)
            goto fail;
        gs = &built;
    }
    rc = ad_graph_build(gs, AD_MAX_NODES_DEFAULT, &m->g, err);
    if (rc < 0) {
        if (spec->kind == MODEL_KIND_GRAPH)
            ad_graph_spec_error_path(&m->spec.graph, "graph", err);
        goto fail;
    }
    m->n_x = m->spec.inputs;
    m->n_y = (spec->kind == MODEL_KIND_MLP && spec->output_activation != MODEL_ACT_SOFTMAX)
                     || spec->kind == MODEL_KIND_LINEAR || spec->kind == MODEL_KIND_GRAPH
                 ? m->spec.outputs
                 : 1;
    m->node_x = ad_find(m->g, "x");
    m->node_y = ad_find(m->g, "y");
    m->node_t = ad_find(m->g, "t");
    m->node_w = ad_find(m->g, "w");
    m->node_loss = ad_output(m->g);
    if (spec->kind == MODEL_KIND_GRAPH) {
        m->node_t = m->node_w = -1;
        if (ad_shape(m->g, m->node_loss)->n_d != 0 || tensor_shape_elems(ad_shape(m->g, m->node_loss)) != 1) {
            rc = err_set_field(err, ERR_INVAL, "graph.output",
                               "a graph model's output must be a scalar loss");
            goto fail;
        }
        /* Predictions are what the loss compares with the labels: its first input. */
        int32_t op = ad_op(m->g, m->node_loss);
        m->node_out = is_loss_op(op) ? ad_child(m->g, m->node_loss, 0) : m->node_loss;
        m->node_score = m->node_out;
    } else {
        char zl[AD_ID_MAX];
        snprintf(zl, sizeof zl, "z%d", spec->kind == MODEL_KIND_MLP ? spec->n_hidden + 1 : 1);
        m->node_out = ad_find(m->g, "out");
        m->node_score = ad_find(m->g, zl);
    }
    if ((rc = index_tensors(m, err)) < 0)
        goto fail;
    if (spec->kind == MODEL_KIND_OVO) {
        int32_t k = spec->classes, p = 0, n_pair = (int32_t)model__class_rows(spec);
        m->ovo_a = malloc((size_t)n_pair * sizeof *m->ovo_a);
        m->ovo_b = malloc((size_t)n_pair * sizeof *m->ovo_b);
        if (m->ovo_a == NULL || m->ovo_b == NULL) {
            rc = err_set(err, ERR_NOMEM, "out of memory building a model");
            goto fail;
        }
        for (int32_t a = 0; a < k; ++a)
            for (int32_t b2 = a + 1; b2 < k; ++b2, ++p) {
                m->ovo_a[p] = a;
                m->ovo_b[p] = b2;
            }
    }
    m->fused_loss = fused_loss_of(&m->spec);
    init_params(m);
    if ((rc = apply_param_values(m, err)) < 0)
        goto fail;
    /* The spec's initial values have done their job; the live values are in the graph. */
    for (int32_t i = 0; i < m->spec.n_param_value; ++i)
        free(m->spec.param_value[i].x);
    free(m->spec.param_value);
    m->spec.param_value = NULL;
    m->spec.n_param_value = 0;
    ad_graph_spec_free(&built);
    *out = m;
    return 0;
fail:
    ad_graph_spec_free(&built);
    model_free(m);
    return rc;
}

void model_free(model_t *m)
{
    if (m == NULL)
        return;
    fused_free(m->fused);
    ad_graph_free(m->g);
    model_spec_free(&m->spec);
    free(m->tensor_name);
    free(m->tensor_rows);
    free(m->tensor_cols);
    free(m->tensor_offset);
    free(m->decay_mask);
    free(m->ovo_a);
    free(m->ovo_b);
    free(m);
}

/* ---- accessors -------------------------------------------------------------------------- */

const model_spec_t *model_spec(const model_t *m) { return &m->spec; }
int32_t model_n_x(const model_t *m) { return m->n_x; }
int32_t model_n_y(const model_t *m) { return m->n_y; }
int64_t model_n_params(const model_t *m) { return ad_n_param(m->g); }
double *model_params(model_t *m) { return ad_params(m->g); }
double *model_grads(model_t *m) { return ad_param_grads(m->g); }
const uint8_t *model_decay_mask(const model_t *m) { return m->decay_mask; }
int32_t model_n_tensors(const model_t *m) { return m->n_tensor; }
const char *model_tensor_name(const model_t *m, int32_t k) { return m->tensor_name[k]; }
int64_t model_tensor_offset(const model_t *m, int32_t k) { return m->tensor_offset[k]; }
ad_graph_t *model_graph(model_t *m) { return m->g; }

void model_tensor_shape(const model_t *m, int32_t k, int32_t *rows, int32_t *cols)
{
    *rows = m->tensor_rows[k];
    *cols = m->tensor_cols[k];
}

int32_t model_tensor_find(const model_t *m, const char *name)
{
    for (int32_t k = 0; k < m->n_tensor; ++k)
        if (strcmp(m->tensor_name[k], name) == 0)
            return k;
    return -1;
}

int model_has_gradients(const model_t *m)
{
    return m->spec.kind != MODEL_KIND_PERCEPTRON;
}

int model_is_classifier(const model_t *m)
{
    switch (m->spec.kind) {
    case MODEL_KIND_LOGISTIC:
    case MODEL_KIND_PERCEPTRON:
    case MODEL_KIND_SOFTMAX:
    case MODEL_KIND_OVA:
    case MODEL_KIND_OVO:
        return 1;
    case MODEL_KIND_MLP:
        return m->spec.output_activation == MODEL_ACT_SOFTMAX
               || (m->spec.output_activation == MODEL_ACT_SIGMOID && m->spec.outputs == 1);
    default:
        return 0;
    }
}

/* Binary classifiers: labels are 0 or 1, and the decision is z > 0. */
static int is_binary(const model_t *m)
{
    return m->spec.kind == MODEL_KIND_LOGISTIC || m->spec.kind == MODEL_KIND_PERCEPTRON
           || (m->spec.kind == MODEL_KIND_MLP && m->spec.output_activation == MODEL_ACT_SIGMOID);
}

/* A graph's labels are class ids when a cce_loss reads the y input itself: the fewest classes
 * of any such loss (the one that would refuse a stored row first), 0 when none does. */
static int32_t graph_label_classes(const model_t *m)
{
    int32_t k = 0;
    for (int32_t i = 0; m->node_y >= 0 && i < ad_n_node(m->g); ++i) {
        if (ad_op(m->g, i) != AD_OP_CCE_LOSS || ad_child(m->g, i, 1) != m->node_y)
            continue;
        const tensor_shape_t *z = ad_shape(m->g, ad_child(m->g, i, 0));
        if (z->n_d == 2 && z->d[1] >= 1 && z->d[1] <= INT32_MAX && (k == 0 || z->d[1] < k))
            k = (int32_t)z->d[1];
    }
    return k;
}

void model_label_rule(const model_t *m, int32_t *binary, int32_t *classes)
{
    *binary = is_binary(m);
    if (m->spec.kind == MODEL_KIND_GRAPH)
        *classes = graph_label_classes(m);
    else
        *classes = model__is_class_kind(m->spec.kind)
                           || (m->spec.kind == MODEL_KIND_MLP
                               && m->spec.output_activation == MODEL_ACT_SOFTMAX)
                       ? m->spec.classes
                       : 0;
}

int model_check_labels(const model_t *m, const batch_t *b, err_t *err)
{
    int32_t binary, k;
    model_label_rule(m, &binary, &k);
    const int classes = k > 0;
    for (int32_t i = 0; i < b->rows; ++i) {
        for (int32_t j = 0; j < b->n_y; ++j) {
            double v = b->y[(int64_t)i * b->n_y + j];
            char field[48];
            if (b->n_y == 1)
                snprintf(field, sizeof field, "y[%d]", i);
            else
                snprintf(field, sizeof field, "y[%d][%d]", i, j);
            if (!isfinite(v))
                return err_set_field(err, ERR_INVAL, field, "%s is not a finite number", field);
            if (binary && v != 0.0 && v != 1.0)
                return err_set_field(err, ERR_INVAL, field, "%s=%g: labels must be 0 or 1",
                                     field, v);
            if (classes && (v != floor(v) || v < 0 || v >= k))
                return err_set_field(err, ERR_INVAL, field,
                                     "%s=%g: labels must be class indices 0..%d", field, v,
                                     k - 1);
        }
    }
    return 0;
}

/* ---- evaluation ------------------------------------------------------------------------- */

static int bind_rows(model_t *m, int32_t rows, err_t *err)
{
    if (rows < 1)
        return err_set_field(err, ERR_INVAL, "x", "no rows to evaluate");
    return ad_graph_bind(m->g, rows, err);
}

int64_t model_work_values(const model_t *m, int32_t rows)
{
    return ad_graph_rows_values(m->g, rows);
}

int model_check_work(const model_t *m, int32_t rows, int64_t max, const char *field, err_t *err)
{
    const int64_t need = model_work_values(m, rows);
    if (need <= max)
        return 0;
    /* The values grow with the rows, so the largest batch that fits is a bisection away. */
    int32_t lo = 0, hi = rows;   /* lo fits (0 rows hold nothing), hi does not */
    while (hi - lo > 1) {
        int32_t mid = lo + (hi - lo) / 2;
        if (model_work_values(m, mid) <= max)
            lo = mid;
        else
            hi = mid;
    }
    return err_set_field(err, ERR_INVAL, field, "%s: %d rows need %lld working values (every "
                         "intermediate result and its gradient), more than the limit of %lld; "
                         "at most %d rows fit", field, (int)rows,
                         (long long)need, (long long)max, (int)lo);
}

/* Targets and weights of the per-row logistic classifiers of ova / ovo for this batch. The
 * weights fold in the reduction: ova rows are reduced over all m rows, ovo pair rows over only
 * the rows labelled a or b (a pair with none of them gets weight 0: it adds 0 and no gradient). */
static void fill_ova_ovo_targets(model_t *m, const batch_t *b)
{
    int32_t rows = b->rows, k = (int32_t)model__class_rows(&m->spec);
    double *t = ad_value(m->g, m->node_t), *w = ad_value(m->g, m->node_w);
    int mean = m->spec.reduction == AD_REDUCTION_MEAN;
    if (m->spec.kind == MODEL_KIND_OVA) {
        double wt = mean ? 1.0 / rows : 1.0;
        for (int32_t i = 0; i < rows; ++i)
            for (int32_t j = 0; j < k; ++j) {
                t[(int64_t)i * k + j] = (int32_t)b->y[i] == j ? 1.0 : 0.0;
                w[(int64_t)i * k + j] = wt;
            }
        return;
    }
    for (int32_t p = 0; p < k; ++p) {
        int32_t count = 0;
        for (int32_t i = 0; i < rows; ++i) {
            int32_t y = (int32_t)b->y[i];
            count += (y == m->ovo_a[p] || y == m->ovo_b[p]);
        }
        double wt = count == 0 ? 0.0 : mean ? 1.0 / count : 1.0;
        for (int32_t i = 0; i < rows; ++i) {
            int32_t y = (int32_t)b->y[i];
            int in_pair = y == m->ovo_a[p] || y == m->ovo_b[p];
            t[(int64_t)i * k + p] = y == m->ovo_a[p] ? 1.0 : 0.0;
            w[(int64_t)i * k + p] = in_pair ? wt : 0.0;
        }
    }
}

/* Point the x and y inputs back at their own buffers. A batch is borrowed for one call only: a
 * view left behind would be read by the next forward that does not rebind it (a graph model whose
 * prediction reads y), after the caller has freed the batch. */
static void unbind_batch(model_t *m)
{
    if (m->node_x >= 0)
        ad_bind_input_view(m->g, m->node_x, NULL, NULL);
    if (m->node_y >= 0)
        ad_bind_input_view(m->g, m->node_y, NULL, NULL);
}

void model_set_pool(model_t *m, pool_t *pool)
{
    if (pool == m->pool)
        return;
    /* The evaluator sized its per-part buffers for the old pool: the next batch makes another. */
    fused_free(m->fused);
    m->fused = NULL;
    m->fused_failed = 0;
    m->pool = pool;
    ad_graph_set_pool(m->g, pool);
}

pool_t *model_pool(const model_t *m)
{
    return m->pool;
}

int model_set_engine(model_t *m, int32_t engine, err_t *err)
{
    if (engine != MODEL_ENGINE_AUTO && engine != MODEL_ENGINE_GRAPH && engine != MODEL_ENGINE_FUSED)
        return err_set(err, ERR_INVAL, "engine=%d unknown", (int)engine);
    if (engine == MODEL_ENGINE_FUSED && m->fused_loss == 0)
        return err_set(err, ERR_INVAL, "kind \"%s\" has no one-pass engine",
                       model_kind_name(m->spec.kind));
    m->engine = engine;
    return 0;
}

/* 1 when this batch takes fused.c's one-pass path (making the evaluator on first use). */
static int take_fused(model_t *m, int32_t rows)
{
    if (m->fused_loss == 0 || m->engine == MODEL_ENGINE_GRAPH || rows < 1 || m->fused_failed)
        return 0;
    int64_t work = (int64_t)rows * ((int64_t)m->n_x + 1) * m->tensor_rows[0];
    if (m->engine == MODEL_ENGINE_AUTO && work < MODEL_FUSED_MIN_WORK)
        return 0;
    if (m->fused == NULL) {
        if (fused_new(m->fused_loss, m->n_x, m->tensor_rows[0], m->spec.reduction, m->pool, &m->fused,
                      NULL) < 0) {
            m->fused_failed = 1;   /* out of memory: the graph still answers, only slower */
            return 0;
        }
        /* Size the graph now for the largest batch AUTO can still send it, so that no batch
         * smaller than this one allocates later (model.h's promise); errors are left for that
         * later call to report. */
        int64_t per_row = ((int64_t)m->n_x + 1) * m->tensor_rows[0];
        int64_t lim = (MODEL_FUSED_MIN_WORK - 1) / per_row;
        if (lim > rows)
            lim = rows;
        if (lim >= 1)
            ad_graph_bind(m->g, (int32_t)lim, NULL);
    }
    return 1;
}

static int check_batch(const model_t *m, const batch_t *b, err_t *err)
{
    if (b->n_x != m->n_x || b->n_y != m->n_y || b->y == NULL)
        return err_set(err, ERR_SHAPE, "batch has %d inputs and %d label columns, the model "
                       "expects %d and %d", b->n_x, b->n_y, m->n_x, m->n_y);
    return 0;
}

/* The graph's whole forward pass on b, its loss into *loss. b stays bound: unbind_batch(). */
static int graph_forward(model_t *m, const batch_t *b, double *loss, err_t *err)
{
    int rc;
    if ((rc = bind_rows(m, b->rows, err)) < 0 ||
        (rc = ad_bind_input_view(m->g, m->node_x, b->x, err)) < 0 ||
        (rc = ad_bind_input_view(m->g, m->node_y, b->y, err)) < 0)
        return rc;
    if (m->node_t >= 0)
        fill_ova_ovo_targets(m, b);
    if ((rc = ad_forward(m->g, err)) < 0)
        return rc;
    *loss = ad_value(m->g, m->node_loss)[0];
    return 0;
}

int model_loss_grad(model_t *m, const batch_t *b, double *loss, double *grad, err_t *err)
{
    int rc = check_batch(m, b, err);
    if (rc < 0)
        return rc;
    if (take_fused(m, b->rows))
        return fused_loss_grad(m->fused, ad_params(m->g) + m->tensor_offset[0], b->x, b->y,
                               b->rows, loss, grad, err);
    if ((rc = graph_forward(m, b, loss, err)) < 0 || grad == NULL)
        goto out;
    if ((rc = ad_backward_params(m->g, m->node_loss, err)) < 0)
        goto out;
    double *pg = ad_param_grads(m->g);
    if (grad != pg)
        memcpy(grad, pg, (size_t)ad_n_param(m->g) * sizeof *grad);
out:
    unbind_batch(m);
    return rc;
}

/* Forward to the prediction nodes only: no labels needed (y, when a graph's prediction reads
 * it, is the input's own zero buffer, never a view of an earlier caller's batch). */
static int forward_predict(model_t *m, const double *x, int32_t rows, err_t *err)
{
    int rc;
    if ((rc = bind_rows(m, rows, err)) < 0)
        return rc;
    if ((rc = ad_bind_input_view(m->g, m->node_x, x, err)) < 0)
        goto out;
    if ((rc = ad_forward_to(m->g, m->node_out, err)) < 0)
        goto out;
    if (m->node_score != m->node_out)
        rc = ad_forward_to(m->g, m->node_score, err);
out:
    unbind_batch(m);
    return rc;
}

/* Predicted class of row i from the forward values (classifier kinds only). */
static int32_t class_of_row(model_t *m, int32_t i)
{
    const double *z = ad_value(m->g, m->node_score);
    int32_t width = tensor_shape_cols(ad_shape(m->g, m->node_score));
    const double *zi = z + (int64_t)i * width;
    if (is_binary(m))
        return zi[0] > 0.0 ? 1 : 0;
    if (m->spec.kind == MODEL_KIND_OVO) {
        int32_t k = m->spec.classes, best = 0;
        int32_t votes_small[64];
        int32_t *votes = votes_small;
        int32_t *heap = NULL;
        if (k > 64) {
            heap = calloc((size_t)k, sizeof *heap);
            if (heap == NULL)
                return 0;
            votes = heap;
        } else {
            memset(votes_small, 0, sizeof votes_small);
        }
        for (int32_t p = 0; p < width; ++p)
            ++votes[zi[p] > 0.0 ? m->ovo_a[p] : m->ovo_b[p]];
        for (int32_t c = 1; c < k; ++c)
            if (votes[c] > votes[best])
                best = c;   /* strict: a tie stays with the lower class */
        free(heap);
        return best;
    }
    int32_t best = 0;
    for (int32_t j = 1; j < width; ++j)
        if (zi[j] > zi[best])
            best = j;   /* first on ties */
    return best;
}

/* The share of rows classified right, as correct/rows: 1 − wrong/rows can differ from it in
 * the last bit (0.19999999999999996 for 0.2), and /evaluate and scikit-learn count the
 * correct ones. */
static double accuracy_of(int64_t wrong, int32_t rows)
{
    return rows > 0 ? (double)(rows - wrong) / (double)rows : 0.0;
}

int model_accuracy(model_t *m, const batch_t *b, double *accuracy, int64_t *errors, err_t *err)
{
    int rc;
    if (!model_is_classifier(m))
        return err_set(err, ERR_INVAL, "kind \"%s\" is not a classifier",
                       model_kind_name(m->spec.kind));
    if ((rc = forward_predict(m, b->x, b->rows, err)) < 0)
        return rc;
    int64_t wrong = 0;
    for (int32_t i = 0; i < b->rows; ++i)
        wrong += class_of_row(m, i) != (int32_t)b->y[(int64_t)i * b->n_y];
    *errors = wrong;
    *accuracy = accuracy_of(wrong, b->rows);
    return 0;
}

int model_loss_accuracy(model_t *m, const batch_t *b, double *loss, double *accuracy,
                        err_t *err)
{
    int rc = check_batch(m, b, err);
    *accuracy = NAN;
    if (rc < 0)
        return rc;
    const int classifier = model_is_classifier(m);
    int64_t wrong = 0;
    if (!classifier || take_fused(m, b->rows)) {
        /* The one-pass kernels give the loss only: the classes take the graph's forward. */
        if ((rc = model_loss_grad(m, b, loss, NULL, err)) == 0 && classifier)
            rc = model_accuracy(m, b, accuracy, &wrong, err);
        return rc;
    }
    /* The graph's forward pass computes the scores on its way to the loss. */
    if ((rc = graph_forward(m, b, loss, err)) == 0) {
        for (int32_t i = 0; i < b->rows; ++i)
            wrong += class_of_row(m, i) != (int32_t)b->y[(int64_t)i * b->n_y];
        *accuracy = accuracy_of(wrong, b->rows);
    }
    unbind_batch(m);
    return rc;
}

/* ‖θ1..n‖ of the single row of W1, or 0. */
static double normal_norm(const model_t *m)
{
    const double *w = ad_params(m->g) + m->tensor_offset[0];
    return tensor_norm2(w + 1, m->n_x);
}

static int has_boundary(const model_t *m)
{
    return m->spec.kind == MODEL_KIND_LOGISTIC || m->spec.kind == MODEL_KIND_PERCEPTRON
           || (m->spec.kind == MODEL_KIND_LINEAR && m->spec.outputs == 1);
}

static int predict(model_t *m, const double *x, int32_t rows, int with_scores,
                   model_prediction_t *out, err_t *err);

int model_predict(model_t *m, const double *x, int32_t rows, model_prediction_t *out, err_t *err)
{
    return predict(m, x, rows, 0, out, err);
}

int model_predict_scores(model_t *m, const double *x, int32_t rows, model_prediction_t *out,
                         err_t *err)
{
    return predict(m, x, rows, 1, out, err);
}

static int predict(model_t *m, const double *x, int32_t rows, int with_scores,
                   model_prediction_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    int rc = forward_predict(m, x, rows, err);
    if (rc < 0)
        return rc;
    const tensor_shape_t *so = ad_shape(m->g, m->node_out);
    int64_t n_elem = tensor_shape_elems(so);
    /* Only a graph model can predict with a node that is not [rows, k] (its loss's first input or
     * a scalar output): without the same count of values for every row there is no prediction. */
    if (n_elem < rows || n_elem % rows != 0)
        return err_set_field(err, ERR_INVAL, "graph.output",
                             "node '%s' has %lld value%s for %d rows: no prediction per row",
                             ad_id(m->g, m->node_out), (long long)n_elem, n_elem == 1 ? "" : "s",
                             rows);
    out->rows = rows;
    out->n_out = (int32_t)(n_elem / rows);
    out->per_row_scalar = out->n_out == 1 && m->spec.kind != MODEL_KIND_SOFTMAX
                          && m->spec.kind != MODEL_KIND_OVA && m->spec.kind != MODEL_KIND_OVO;
    out->outputs = malloc((size_t)n_elem * sizeof *out->outputs);
    if (out->outputs == NULL)
        goto nomem;
    memcpy(out->outputs, ad_value(m->g, m->node_out), (size_t)n_elem * sizeof *out->outputs);
    if (model_is_classifier(m)) {
        out->classes = malloc((size_t)rows * sizeof *out->classes);
        if (out->classes == NULL)
            goto nomem;
        for (int32_t i = 0; i < rows; ++i)
            out->classes[i] = class_of_row(m, i);
    }
    /* The logits, for metrics that need them exactly (log loss without log(0)). */
    if (with_scores && model_is_classifier(m)) {
        const tensor_shape_t *ss = ad_shape(m->g, m->node_score);
        int64_t n_score_elem = tensor_shape_elems(ss);
        if (n_score_elem == (int64_t)rows * tensor_shape_cols(ss)) {
            out->n_score = tensor_shape_cols(ss);
            out->scores = malloc((size_t)n_score_elem * sizeof *out->scores + 1);
            if (out->scores == NULL)
                goto nomem;
            memcpy(out->scores, ad_value(m->g, m->node_score),
                   (size_t)n_score_elem * sizeof *out->scores);
        }
    }
    double norm = has_boundary(m) ? normal_norm(m) : 0.0;
    if (has_boundary(m) && norm > 0.0) {
        const double *z = ad_value(m->g, m->node_score);
        out->margins = malloc((size_t)rows * sizeof *out->margins);
        if (out->margins == NULL)
            goto nomem;
        for (int32_t i = 0; i < rows; ++i)
            out->margins[i] = z[i] / norm;
    }
    return 0;
nomem:
    model_prediction_free(out);
    return err_set(err, ERR_NOMEM, "out of memory for %d predictions", rows);
}

void model_prediction_free(model_prediction_t *p)
{
    if (p == NULL)
        return;
    free(p->outputs);
    free(p->classes);
    free(p->margins);
    free(p->scores);
    memset(p, 0, sizeof *p);
}

int model_boundary(const model_t *m, double *normal, double *unit_normal, double *offset,
                   err_t *err)
{
    if (!has_boundary(m))
        return err_set(err, ERR_INVAL, "a decision boundary exists only for 1-output linear, "
                       "logistic and perceptron models");
    const double *w = ad_params(m->g) + m->tensor_offset[0];
    double norm = normal_norm(m);
    if (!(norm > 0.0))
        return err_set(err, ERR_INVAL, "the weights θ1..n are all zero: there is no boundary");
    for (int32_t j = 0; j < m->n_x; ++j) {
        normal[j] = w[1 + j];
        unit_normal[j] = w[1 + j] / norm;
    }
    *offset = -w[0] / norm;
    return 0;
}
