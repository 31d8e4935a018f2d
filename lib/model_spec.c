/* lib/model_spec.c -- model specifications apart from any model: kind, activation and loss
 * names, a spec's lifecycle (copy, free), and its validation and resolution (defaults filled
 * in, limits checked, every error naming its field). Part of the model module (model.h);
 * model.c compiles a resolved spec into a graph. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* ---- names ------------------------------------------------------------------------------ */

typedef struct name_entry {
    const char *name;
    int32_t value;
} name_entry_t;

static const name_entry_t kind_names[] = {
    {"linear", MODEL_KIND_LINEAR}, {"logistic", MODEL_KIND_LOGISTIC},
    {"perceptron", MODEL_KIND_PERCEPTRON}, {"softmax", MODEL_KIND_SOFTMAX},
    {"ova", MODEL_KIND_OVA}, {"ovo", MODEL_KIND_OVO}, {"mlp", MODEL_KIND_MLP},
    {"graph", MODEL_KIND_GRAPH}, {NULL, 0},
};
static const name_entry_t act_names[] = {
    {"linear", MODEL_ACT_LINEAR}, {"sigmoid", MODEL_ACT_SIGMOID}, {"tanh", MODEL_ACT_TANH},
    {"relu", MODEL_ACT_RELU}, {"softmax", MODEL_ACT_SOFTMAX}, {NULL, 0},
};
static const name_entry_t loss_names[] = {
    {"l2", MODEL_LOSS_L2}, {"bce", MODEL_LOSS_BCE}, {"cce", MODEL_LOSS_CCE},
    {"zero_one", MODEL_LOSS_ZERO_ONE}, {NULL, 0},
};
static const name_entry_t init_names[] = {
    {"uniform", MODEL_INIT_UNIFORM}, {"normal", MODEL_INIT_NORMAL},
    {"xavier", MODEL_INIT_XAVIER}, {"zeros", MODEL_INIT_ZEROS}, {NULL, 0},
};

static int32_t name_lookup(const name_entry_t *t, const char *s)
{
    if (s == NULL)
        return 0;
    for (; t->name != NULL; ++t)
        if (strcmp(t->name, s) == 0)
            return t->value;
    return 0;
}

static const char *name_of(const name_entry_t *t, int32_t v)
{
    for (; t->name != NULL; ++t)
        if (t->value == v)
            return t->name;
    return "unknown";
}

int32_t model_kind_from_name(const char *s) { return name_lookup(kind_names, s); }
const char *model_kind_name(int32_t kind) { return name_of(kind_names, kind); }
int32_t model_act_from_name(const char *s) { return name_lookup(act_names, s); }
const char *model_act_name(int32_t act) { return name_of(act_names, act); }
int32_t model_loss_from_name(const char *s) { return name_lookup(loss_names, s); }
const char *model_loss_name(int32_t loss) { return name_of(loss_names, loss); }
int32_t model_init_from_name(const char *s) { return name_lookup(init_names, s); }
const char *model_init_name(int32_t init) { return name_of(init_names, init); }

/* ---- spec lifecycle --------------------------------------------------------------------- */

void model_spec_default(model_spec_t *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->reduction = AD_REDUCTION_MEAN;
    spec->init_method = MODEL_INIT_UNIFORM;
    spec->init_scale = 0.01;
    spec->init_seed = 1;
    optim_cfg_default(&spec->optimizer, OPTIM_METHOD_SGD);
}

void model_spec_free(model_spec_t *spec)
{
    if (spec == NULL)
        return;
    for (int32_t i = 0; i < spec->n_param_value; ++i)
        free(spec->param_value[i].x);
    free(spec->param_value);
    spec->param_value = NULL;
    spec->n_param_value = 0;
    ad_graph_spec_free(&spec->graph);
}

int model_spec_copy(const model_spec_t *src, model_spec_t *dst, err_t *err)
{
    *dst = *src;
    dst->param_value = NULL;
    dst->n_param_value = 0;
    memset(&dst->graph, 0, sizeof dst->graph);
    if (src->n_param_value > 0) {
        dst->param_value = calloc((size_t)src->n_param_value, sizeof *dst->param_value);
        if (dst->param_value == NULL)
            return err_set(err, ERR_NOMEM, "out of memory copying a spec");
        for (int32_t i = 0; i < src->n_param_value; ++i) {
            const model_param_value_t *p = &src->param_value[i];
            size_t bytes = (size_t)p->rows * (size_t)p->cols * sizeof(double);
            dst->param_value[i] = *p;
            dst->param_value[i].x = malloc(bytes > 0 ? bytes : 1);
            if (dst->param_value[i].x == NULL) {
                dst->n_param_value = i;
                model_spec_free(dst);
                return err_set(err, ERR_NOMEM, "out of memory copying a spec");
            }
            memcpy(dst->param_value[i].x, p->x, bytes);
            dst->n_param_value = i + 1;
        }
    }
    if (src->graph.n_node > 0) {
        int rc = ad_graph_spec_copy(&src->graph, &dst->graph, err);
        if (rc < 0) {
            model_spec_free(dst);
            return rc;
        }
    }
    return 0;
}

/* ---- spec validation -------------------------------------------------------------------- */

static int check_units(int64_t v, const char *field, err_t *err)
{
    if (v < 1 || v > MODEL_MAX_UNITS)
        return err_set_field(err, ERR_INVAL, field, "%s=%lld is not in [1, %d]", field,
                             (long long)v, MODEL_MAX_UNITS);
    return 0;
}

/* Parameter count of a dense stack, with overflow checks: Σ out * (1 + in). Past max_params the
 * error names the dimension that makes it so: the larger side of the largest layer, its input
 * on a tie ("classes" for a softmax with 10^9 classes, "hidden[0].units" for a wide first
 * layer). */
static int dense_param_count(const model_spec_t *s, int64_t max_params, int64_t *total,
                             err_t *err)
{
    int64_t sum = 0, in = s->inputs, largest = -1;
    char in_field[48] = "inputs", out_field[48], fault[48] = "inputs";
    int32_t n_layer = s->kind == MODEL_KIND_MLP ? s->n_hidden + 1 : 1;
    for (int32_t l = 0; l < n_layer; ++l) {
        int64_t out;
        if (s->kind == MODEL_KIND_MLP && l < s->n_hidden) {
            out = s->hidden[l].units;
            snprintf(out_field, sizeof out_field, "hidden[%d].units", (int)l);
        } else if (model__is_class_kind(s->kind)) {
            out = model__class_rows(s);
            snprintf(out_field, sizeof out_field, "classes");
        } else {
            out = s->outputs;
            snprintf(out_field, sizeof out_field, "outputs");
        }
        /* Sizes are at most MODEL_MAX_UNITS, so the product fits int64 comfortably. */
        const int64_t layer = out * (1 + in);
        if (layer > largest) {
            largest = layer;
            memcpy(fault, out > in ? out_field : in_field, sizeof fault);
        }
        sum += layer;
        if (sum > max_params)
            return err_set_field(err, ERR_INVAL, fault,
                                 "%s: the model would have more than %lld parameters", fault,
                                 (long long)max_params);
        in = out;
        memcpy(in_field, out_field, sizeof in_field);
    }
    *total = sum;
    return 0;
}

/* Parameter count of a graph model: the elements of its param nodes. Each node is clamped just
 * above TENSOR_MAX_ELEMS (ad_graph_build rejects more), so the sum cannot overflow. */
static int graph_param_count(const model_spec_t *s, int64_t max_params, int64_t *total,
                             err_t *err)
{
    int64_t sum = 0;
    for (int32_t i = 0; i < s->graph.n_node; ++i) {
        const ad_node_spec_t *n = &s->graph.node[i];
        if (n->op != AD_OP_PARAM)
            continue;
        int64_t e = 1;
        for (int32_t k = 0; k < n->shape.n_d && k < TENSOR_MAX_DIM; ++k)
            e *= n->shape.d[k] > 0 ? n->shape.d[k] : 0;
        sum += e <= TENSOR_MAX_ELEMS ? e : TENSOR_MAX_ELEMS + 1;
        if (sum > max_params) {
            char field[48];
            snprintf(field, sizeof field, "graph.nodes[%d].shape", (int)i);
            return err_set_field(err, ERR_INVAL, field,
                                 "the model would have more than %lld parameters (param node "
                                 "'%.*s')",
                                 (long long)max_params, AD_ID_MAX - 1, n->id);
        }
    }
    *total = sum;
    return 0;
}

static int resolve_loss(model_spec_t *s, err_t *err)
{
    int32_t want = 0;   /* the default */
    int ok = 0;
    switch (s->kind) {
    case MODEL_KIND_LINEAR:
        want = MODEL_LOSS_L2;
        ok = s->loss == MODEL_LOSS_L2;
        break;
    case MODEL_KIND_LOGISTIC:
        want = MODEL_LOSS_BCE;
        ok = s->loss == MODEL_LOSS_BCE || s->loss == MODEL_LOSS_L2;
        break;
    case MODEL_KIND_PERCEPTRON:
        want = MODEL_LOSS_ZERO_ONE;
        ok = s->loss == MODEL_LOSS_ZERO_ONE;
        break;
    case MODEL_KIND_SOFTMAX:
        want = MODEL_LOSS_CCE;
        ok = s->loss == MODEL_LOSS_CCE;
        break;
    case MODEL_KIND_OVA:
    case MODEL_KIND_OVO:
        want = MODEL_LOSS_BCE;
        ok = s->loss == MODEL_LOSS_BCE;
        break;
    case MODEL_KIND_MLP:
        if (s->output_activation == MODEL_ACT_SIGMOID) {
            want = MODEL_LOSS_BCE;
            ok = s->loss == MODEL_LOSS_BCE || s->loss == MODEL_LOSS_L2;
        } else if (s->output_activation == MODEL_ACT_SOFTMAX) {
            want = MODEL_LOSS_CCE;
            ok = s->loss == MODEL_LOSS_CCE;
        } else {
            want = MODEL_LOSS_L2;
            ok = s->loss == MODEL_LOSS_L2;
        }
        break;
    case MODEL_KIND_GRAPH:
        /* The graph's own output node is the loss. */
        if (s->loss != MODEL_LOSS_DEFAULT)
            return err_set_field(err, ERR_INVAL, "loss",
                                 "loss is not used by graph models: the graph's output node "
                                 "is the loss");
        return 0;
    default:
        break;
    }
    if (s->loss == MODEL_LOSS_DEFAULT) {
        s->loss = want;
        return 0;
    }
    if (!ok)
        return err_set_field(err, ERR_INVAL, "loss", "loss \"%s\" does not fit kind \"%s\"%s%s",
                             model_loss_name(s->loss), model_kind_name(s->kind),
                             s->kind == MODEL_KIND_MLP ? " with output_activation " : "",
                             s->kind == MODEL_KIND_MLP ? model_act_name(s->output_activation)
                                                       : "");
    return 0;
}

/* Graph models: the x and y inputs fix the feature and label counts. */
static int resolve_graph(model_spec_t *s, err_t *err)
{
    if (s->graph.n_node == 0)
        return err_set_field(err, ERR_INVAL, "graph", "kind \"graph\" needs a graph");
    const ad_node_spec_t *x = NULL, *y = NULL;
    for (int32_t i = 0; i < s->graph.n_node; ++i) {
        const ad_node_spec_t *n = &s->graph.node[i];
        if (n->op != AD_OP_INPUT)
            continue;
        if (strcmp(n->id, "x") == 0)
            x = n;
        else if (strcmp(n->id, "y") == 0)
            y = n;
    }
    if (x == NULL || x->shape.n_d != 2)
        return err_set_field(err, ERR_INVAL, "graph.nodes",
                             "a graph model needs an input node \"x\" of shape [null, inputs]");
    if (y == NULL || y->shape.n_d < 1)
        return err_set_field(err, ERR_INVAL, "graph.nodes",
                             "a graph model needs an input node \"y\" of shape [null, outputs]");
    if (x->shape.d[0] != AD_ROWS || y->shape.d[0] != AD_ROWS)
        return err_set_field(err, ERR_INVAL, "graph.nodes",
                             "a graph model's x and y inputs take null as their first "
                             "dimension (rows come from batches)");
    if (s->inputs != 0 && s->inputs != x->shape.d[1])
        return err_set_field(err, ERR_INVAL, "inputs",
                             "inputs=%d but the graph's x has %d columns", s->inputs,
                             x->shape.d[1]);
    s->inputs = x->shape.d[1];
    int32_t n_y = y->shape.n_d == 2 ? y->shape.d[1] : 1;
    if (s->outputs != 0 && s->outputs != n_y)
        return err_set_field(err, ERR_INVAL, "outputs",
                             "outputs=%d but the graph's y has %d columns", s->outputs, n_y);
    s->outputs = n_y;
    return 0;
}

/* The optimizer's state is stored and exported beside the parameters, so it is counted too:
 * at most 2 x max_params values per parameter-sized vector (momentum's velocity and adam's two
 * moments always fit; lbfgs keeps 2 x history of them, so history x parameters <= max_params).
 * Without this a 1 KB spec could ask for gigabytes of lbfgs memory. */
static int check_optim_state_size(const model_spec_t *s, int64_t n, int64_t max_params,
                                  err_t *err)
{
    const int64_t per_param = optim_state_per_param(&s->optimizer);
    const int64_t most = max_params > INT64_MAX / 2 ? INT64_MAX : 2 * max_params;
    if (per_param == 0 || n <= most / per_param)
        return 0;
    const int lbfgs = s->optimizer.method == OPTIM_METHOD_LBFGS;
    return err_set_field(err, ERR_INVAL, lbfgs ? "optimizer.history" : "optimizer.method",
                         "%s: %s keeps %lld values per parameter, so with %lld parameters "
                         "the model would have more than 2 x %lld optimizer values",
                         lbfgs ? "optimizer.history" : "optimizer.method",
                         optim_method_name(s->optimizer.method), (long long)per_param,
                         (long long)n, (long long)max_params);
}

int model_spec_resolve(model_spec_t *s, int64_t max_params, err_t *err)
{
    int rc;
    if (s->kind < MODEL_KIND_LINEAR || s->kind > MODEL_KIND_GRAPH)
        return err_set_field(err, ERR_INVAL, "kind", "kind is required: one of linear, "
                             "logistic, softmax, perceptron, mlp, ova, ovo, graph");
    if (s->kind == MODEL_KIND_GRAPH) {
        if ((rc = resolve_graph(s, err)) < 0)
            return rc;
    } else if (s->graph.n_node > 0) {
        return err_set_field(err, ERR_INVAL, "graph", "graph is only for kind \"graph\"");
    }
    if ((rc = check_units(s->inputs, "inputs", err)) < 0)
        return rc;
    if (s->kind != MODEL_KIND_MLP) {
        if (s->n_hidden > 0)
            return err_set_field(err, ERR_INVAL, "hidden", "hidden is only for kind \"mlp\"");
        if (s->output_activation != 0)
            return err_set_field(err, ERR_INVAL, "output_activation",
                                 "output_activation is only for kind \"mlp\"");
    }

    switch (s->kind) {
    case MODEL_KIND_LINEAR:
        if (s->outputs == 0)
            s->outputs = 1;
        if ((rc = check_units(s->outputs, "outputs", err)) < 0)
            return rc;
        if (s->classes != 0)
            return err_set_field(err, ERR_INVAL, "classes", "classes is not used by kind "
                                 "\"linear\"");
        break;
    case MODEL_KIND_LOGISTIC:
    case MODEL_KIND_PERCEPTRON:
        if (s->outputs != 0 && s->outputs != 1)
            return err_set_field(err, ERR_INVAL, "outputs", "kind \"%s\" has exactly 1 output",
                                 model_kind_name(s->kind));
        if (s->classes != 0 && s->classes != 2)
            return err_set_field(err, ERR_INVAL, "classes", "kind \"%s\" is binary (2 classes)",
                                 model_kind_name(s->kind));
        s->outputs = 1;
        s->classes = 0;
        break;
    case MODEL_KIND_SOFTMAX:
    case MODEL_KIND_OVA:
    case MODEL_KIND_OVO:
        if (s->classes == 0)
            return err_set_field(err, ERR_INVAL, "classes", "kind \"%s\" needs classes >= 2",
                                 model_kind_name(s->kind));
        if (s->classes < 2 || s->classes > MODEL_MAX_UNITS)
            return err_set_field(err, ERR_INVAL, "classes", "classes=%d is not in [2, %d]",
                                 s->classes, MODEL_MAX_UNITS);
        if (s->outputs != 0 && s->outputs != s->classes)
            return err_set_field(err, ERR_INVAL, "outputs",
                                 "outputs=%d must equal classes=%d for kind \"%s\"", s->outputs,
                                 s->classes, model_kind_name(s->kind));
        s->outputs = s->classes;
        break;
    case MODEL_KIND_MLP:
        if (s->outputs == 0)
            s->outputs = 1;
        if ((rc = check_units(s->outputs, "outputs", err)) < 0)
            return rc;
        if (s->output_activation == 0)
            s->output_activation = MODEL_ACT_LINEAR;
        if (s->output_activation != MODEL_ACT_LINEAR && s->output_activation != MODEL_ACT_SIGMOID
            && s->output_activation != MODEL_ACT_SOFTMAX)
            return err_set_field(err, ERR_INVAL, "output_activation",
                                 "output_activation must be linear, sigmoid or softmax");
        if (s->output_activation == MODEL_ACT_SOFTMAX) {
            if (s->outputs < 2)
                return err_set_field(err, ERR_INVAL, "outputs",
                                     "a softmax output needs outputs >= 2 (one per class)");
            if (s->classes != 0 && s->classes != s->outputs)
                return err_set_field(err, ERR_INVAL, "classes",
                                     "classes=%d must equal outputs=%d", s->classes,
                                     s->outputs);
            s->classes = s->outputs;
        } else if (s->classes != 0) {
            return err_set_field(err, ERR_INVAL, "classes",
                                 "classes is only used with output_activation \"softmax\"");
        }
        for (int32_t l = 0; l < s->n_hidden; ++l) {
            char field[48];
            snprintf(field, sizeof field, "hidden[%d].units", l);
            if ((rc = check_units(s->hidden[l].units, field, err)) < 0)
                return rc;
            int32_t a = s->hidden[l].activation;
            if (a == 0)
                s->hidden[l].activation = a = MODEL_ACT_SIGMOID;
            if (a != MODEL_ACT_SIGMOID && a != MODEL_ACT_TANH && a != MODEL_ACT_RELU
                && a != MODEL_ACT_LINEAR) {
                snprintf(field, sizeof field, "hidden[%d].activation", l);
                return err_set_field(err, ERR_INVAL, field,
                                     "%s must be sigmoid, tanh, relu or linear", field);
            }
        }
        break;
    case MODEL_KIND_GRAPH:
        if (s->classes != 0)
            return err_set_field(err, ERR_INVAL, "classes", "classes is not used by kind "
                                 "\"graph\"");
        break;
    }

    if ((rc = resolve_loss(s, err)) < 0)
        return rc;
    if (s->reduction != AD_REDUCTION_MEAN && s->reduction != AD_REDUCTION_SUM)
        return err_set_field(err, ERR_INVAL, "reduction", "reduction must be mean or sum");
    if (s->init_method < MODEL_INIT_UNIFORM || s->init_method > MODEL_INIT_ZEROS)
        return err_set_field(err, ERR_INVAL, "init.method",
                             "init.method must be uniform, normal, xavier or zeros");
    if (!isfinite(s->init_scale) || s->init_scale < 0 || s->init_scale > 1e6)
        return err_set_field(err, ERR_INVAL, "init.scale", "init.scale must be in [0, 1e6]");
    int64_t total = 0;
    if (s->kind != MODEL_KIND_GRAPH)
        rc = dense_param_count(s, max_params, &total, err);
    else
        rc = graph_param_count(s, max_params, &total, err);
    if (rc < 0 || (rc = optim_cfg_validate(&s->optimizer, err)) < 0)
        return rc;
    return check_optim_state_size(s, total, max_params, err);
}
