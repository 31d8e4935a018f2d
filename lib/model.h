/* lib/model.h -- model kinds compiled to one computation graph each; parameter layout; loss,
 * gradients, predictions and the decision boundary.
 *
 * Every dense layer is one matrix W of shape [units_out, 1 + units_in] with the bias in column 0,
 * named W1..WL from input to output (docs/api.md "Parameter layout"). A graph model's
 * parameters are its param nodes, named by node id. All parameters live in one flat array
 * (model_params()), in layer order, each row major.
 *
 *     model_t *m = NULL;
 *     if (model_new(&spec, &m, &err) < 0) return err.code;
 *     batch_t b = {.rows = 3, .n_x = 2, .n_y = 1, .x = x, .y = y};
 *     double loss;
 *     model_loss_grad(m, &b, &loss, model_grads(m), &err);
 */
#ifndef ND_MODEL_H
#define ND_MODEL_H

#include <stdint.h>

#include "err.h"
#include "graph.h"
#include "optim.h"
#include "pool.h"

#define MODEL_MAX_LAYERS 64      /* hidden layers */
#define MODEL_NAME_MAX 128
#define MODEL_MAX_UNITS 1000000  /* inputs, outputs, classes, units per layer */
#define MODEL_MAX_PARAMS_DEFAULT 50000000LL

/* Persisted (in the stored spec through their names, and in memory): append only. */
enum model_kind {
    MODEL_KIND_LINEAR = 1,
    MODEL_KIND_LOGISTIC = 2,
    MODEL_KIND_PERCEPTRON = 3,
    MODEL_KIND_SOFTMAX = 4,
    MODEL_KIND_OVA = 5,
    MODEL_KIND_OVO = 6,
    MODEL_KIND_MLP = 7,
    MODEL_KIND_GRAPH = 8,
};

enum model_act {
    MODEL_ACT_LINEAR = 1,
    MODEL_ACT_SIGMOID = 2,
    MODEL_ACT_TANH = 3,
    MODEL_ACT_RELU = 4,
    MODEL_ACT_SOFTMAX = 5,   /* output layer only */
};

enum model_loss {
    MODEL_LOSS_DEFAULT = 0,  /* resolved by model_spec_resolve() */
    MODEL_LOSS_L2 = 1,
    MODEL_LOSS_BCE = 2,
    MODEL_LOSS_CCE = 3,
    MODEL_LOSS_ZERO_ONE = 4, /* perceptron: misclassified rows */
};

enum model_init {
    MODEL_INIT_UNIFORM = 1,  /* uniform[-scale, scale] */
    MODEL_INIT_NORMAL = 2,   /* normal(0, scale) */
    MODEL_INIT_XAVIER = 3,   /* uniform ±sqrt(6 / (fan_in + fan_out)), bias column 0 */
    MODEL_INIT_ZEROS = 4,
};

typedef struct model_layer {
    int32_t units;
    int32_t activation;      /* enum model_act */
} model_layer_t;

/* An initial value for one parameter tensor, given by name ("W1" or a graph param id). */
typedef struct model_param_value {
    char name[AD_ID_MAX];
    int32_t rows, cols;
    double *x;               /* rows*cols, row major, owned by the spec */
} model_param_value_t;

typedef struct model_spec {
    char name[MODEL_NAME_MAX];   /* "" = no name */
    int32_t kind;                /* enum model_kind */
    int32_t inputs;              /* features per row before the bias */
    int32_t outputs;             /* linear & mlp; default 1 */
    int32_t classes;             /* softmax | ova | ovo; mlp softmax: equals outputs; 0 = unset */
    int32_t n_hidden;
    model_layer_t hidden[MODEL_MAX_LAYERS];
    int32_t output_activation;   /* mlp; enum model_act; default linear */
    int32_t loss;                /* enum model_loss */
    int32_t reduction;           /* enum ad_reduction; default mean */
    int32_t init_method;         /* enum model_init; default uniform */
    double init_scale;           /* default 0.01 */
    uint64_t init_seed;          /* default 1 */
    int32_t n_param_value;
    model_param_value_t *param_value;  /* optional exact initial values; owned */
    optim_cfg_t optimizer;
    ad_graph_spec_t graph;       /* graph kind only; owned */
} model_spec_t;

/* A batch: rows of x (n_x numbers each) and y (n_y numbers each), row major. A view: the
 * batch never owns x or y. */
typedef struct batch {
    int32_t rows, n_x, n_y;
    const double *x;
    const double *y;
} batch_t;

typedef struct model model_t;

/* Kind, activation, loss, init names <-> enums; from_name returns 0 when unknown. */
int32_t model_kind_from_name(const char *s);
const char *model_kind_name(int32_t kind);
int32_t model_act_from_name(const char *s);
const char *model_act_name(int32_t act);
int32_t model_loss_from_name(const char *s);
const char *model_loss_name(int32_t loss);
int32_t model_init_from_name(const char *s);
const char *model_init_name(int32_t init);

/* Fill a spec with every default (kind unset). */
void model_spec_default(model_spec_t *spec);

/* Free what a spec owns (param values, graph) and zero those fields. NULL is a no-op. */
void model_spec_free(model_spec_t *spec);

/* Deep copy. */
int model_spec_copy(const model_spec_t *src, model_spec_t *dst, err_t *err);

/*
 * Fill derived defaults and check the spec as a whole: loss default by kind / output activation,
 * allowed loss per kind, classes vs outputs, sizes in range, parameter count <= max_params
 * (past it the field is the dimension at fault: "classes", "outputs", "hidden[i].units" or
 * "inputs"), optimizer ranges, optimizer state <= 2 x max_params values (lbfgs: history x
 * parameters <= max_params, else "optimizer.history"). err->field names the offending field
 * ("hidden[1].units", "loss", ...).
 */
int model_spec_resolve(model_spec_t *spec, int64_t max_params, err_t *err);

/* Build the model's graph and initial parameters (from spec->param_value where given, else the
 * init method). The spec must be resolved. Shape errors in param_value name the parameter
 * ("parameters.W2"). *out is new; free with model_free(). The model keeps a copy of the spec. */
int model_new(const model_spec_t *spec, model_t **out, err_t *err);
void model_free(model_t *m);

/* Borrowed: the model's resolved spec. */
const model_spec_t *model_spec(const model_t *m);

/* Number of input features and label columns per row that batches must have. */
int32_t model_n_x(const model_t *m);
int32_t model_n_y(const model_t *m);

/* The labels the model accepts: *binary = 1 for 0 or 1 only (binary kinds); *classes = k > 0
 * for integer class indices 0..k-1 (class kinds, and a graph whose cce_loss reads its y input
 * over k logits); both 0 for any finite number (regression). */
void model_label_rule(const model_t *m, int32_t *binary, int32_t *classes);

/* Check labels of a batch against model_label_rule(); every label must be finite.
 * err->field is "y[i]" (or "y[i][j]"). */
int model_check_labels(const model_t *m, const batch_t *b, err_t *err);

/* Flat parameters and gradients (borrowed, model_n_params() doubles each). */
int64_t model_n_params(const model_t *m);
double *model_params(model_t *m);
double *model_grads(model_t *m);

/* 1 where weight decay applies, 0 on every bias column (borrowed, n_params bytes). */
const uint8_t *model_decay_mask(const model_t *m);

/* Parameter tensors: count, name, shape, offset into model_params(). */
int32_t model_n_tensors(const model_t *m);
const char *model_tensor_name(const model_t *m, int32_t k);
void model_tensor_shape(const model_t *m, int32_t k, int32_t *rows, int32_t *cols);
int64_t model_tensor_offset(const model_t *m, int32_t k);
int32_t model_tensor_find(const model_t *m, const char *name);

/* 1 when the model has gradients (every kind but perceptron). */
int model_has_gradients(const model_t *m);

/* Working memory of one evaluation over `rows` rows, in doubles: every row-dependent
 * intermediate of the compiled computation and its gradient, plus the ops' scratch (forward
 * and backward, on the graph path; the fused path needs less, its tiles being fixed). */
int64_t model_work_values(const model_t *m, int32_t rows);

/* 0 when model_work_values(m, rows) <= max; else ERR_INVAL naming `field`, with the largest
 * row count that fits in the message. Callers check before they allocate or change anything. */
int model_check_work(const model_t *m, int32_t rows, int64_t max, const char *field, err_t *err);

/*
 * Loss at the current parameters on batch b (reduced per the spec); when grad is non-NULL also
 * the gradient of that loss, model_n_params() doubles (for the perceptron the "gradient" is
 * Σ (ŷ−y) x*, so a sgd step is the perceptron rule). Allocates nothing when b->rows does not
 * exceed the largest batch seen before.
 */
int model_loss_grad(model_t *m, const batch_t *b, double *loss, double *grad, err_t *err);

/* How model_loss_grad evaluates: AUTO takes fused.c's one-pass kernels for linear, logistic,
 * softmax and ova batches big enough to gain from them and the graph otherwise; GRAPH and FUSED
 * force one path (tests compare them; FUSED is ERR_INVAL for kinds without it). Results agree
 * to rounding. */
enum model_engine { MODEL_ENGINE_AUTO = 0, MODEL_ENGINE_GRAPH = 1, MODEL_ENGINE_FUSED = 2 };
int model_set_engine(model_t *m, int32_t engine, err_t *err);

/* The compute threads the one-pass kernels may split a big batch over, and the graph its large
 * matrix products (pool.h): borrowed, must outlive the model or be replaced first. NULL, the
 * default, computes on the caller's thread alone. The one-pass results depend on the pool's
 * size only through rounding; the products' not at all (with blas_threads_one()). */
void model_set_pool(model_t *m, pool_t *pool);
/* The pool model_set_pool() gave (NULL by default): train.c spreads its own passes over it. */
pool_t *model_pool(const model_t *m);

/* Classification accuracy and misclassified count on b, for classifier kinds (logistic,
 * perceptron, softmax, ova, ovo, mlp with sigmoid/softmax output). ERR_INVAL otherwise. */
int model_accuracy(model_t *m, const batch_t *b, double *accuracy, int64_t *errors,
                   err_t *err);

/* Loss on b and, for classifiers, accuracy (else NaN), from one forward pass where the graph
 * evaluates b (batches the one-pass kernels take need a second for the classes). Allocates
 * nothing when b->rows does not exceed the largest batch seen before. */
int model_loss_accuracy(model_t *m, const batch_t *b, double *loss, double *accuracy,
                        err_t *err);

/* 1 for the classifier kinds listed above. */
int model_is_classifier(const model_t *m);

typedef struct model_prediction {
    int32_t rows;
    int32_t n_out;          /* numbers per row in outputs */
    int32_t per_row_scalar; /* 1: outputs is one number per row (docs/api.md, /predict) */
    double *outputs;        /* rows * n_out */
    int32_t *classes;       /* rows, or NULL for non-classifiers */
    double *margins;        /* rows, or NULL (logistic, perceptron, linear with 1 output) */
    int32_t n_score;        /* numbers per row in scores */
    double *scores;         /* model_predict_scores() only: rows * n_score pre-activations of
                             * a classifier (logits; ovo: pair-row logits); else NULL */
} model_prediction_t;

/* Predict for rows of x (n_x each). *out's arrays are new; free with model_prediction_free. */
int model_predict(model_t *m, const double *x, int32_t rows, model_prediction_t *out,
                  err_t *err);
void model_prediction_free(model_prediction_t *p);

/* model_predict() plus the classifier's scores (metrics need the logits themselves). */
int model_predict_scores(model_t *m, const double *x, int32_t rows, model_prediction_t *out,
                         err_t *err);

/* Decision boundary of a 1-output linear / logistic / perceptron model: normal = θ1..n (n_x
 * doubles), unit_normal = normal / ‖normal‖, offset = −θ0 / ‖normal‖. ERR_INVAL for other kinds
 * or a zero normal. */
int model_boundary(const model_t *m, double *normal, double *unit_normal, double *offset,
                   err_t *err);

/* Borrowed: the model's graph (graph kind: the user's graph; others: the compiled kind). */
ad_graph_t *model_graph(model_t *m);

#endif /* ND_MODEL_H */
