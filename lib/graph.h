/* lib/graph.h -- computation graphs: build from a spec, topological order, forward pass and
 * reverse-mode backward pass, Jacobians.
 *
 * A graph is described by an ad_graph_spec_t (nodes in any order, children named by id; the
 * codec fills one from JSON and model.c builds one for every model kind). ad_graph_build()
 * validates it (unknown op, unknown input id, cycle, shape mismatch, too many nodes -- each error
 * names the node), sorts it topologically and allocates every buffer once. Inputs whose first
 * dimension is AD_ROWS get their row count from ad_graph_bind(); binding the same or a smaller
 * row count again allocates nothing, so a training loop can rebind per mini-batch for free.
 *
 *     ad_graph_t *g = NULL;
 *     if (ad_graph_build(&spec, &g, &err) < 0) return err.code;   // err.field = node id
 *     ad_graph_bind(g, rows, &err);
 *     memcpy(ad_value(g, ad_find(g, "x")), x, rows * cols * sizeof(double));
 *     ad_forward(g, &err);
 *     ad_backward(g, ad_output(g), &err);     // gradients of the scalar output
 *     double *dW = ad_grad(g, ad_find(g, "W"));
 *
 * Every param node's value lives in one flat array (ad_params(), spec order, row major), and its
 * gradient in a matching flat array (ad_param_grads()): an optimizer needs no graph.
 */
#ifndef ND_GRAPH_H
#define ND_GRAPH_H

#include <stdint.h>

#include "err.h"
#include "tensor.h"

#define AD_ID_MAX 64        /* longest node id, including the NUL */
#define AD_MAX_CHILD 3      /* most inputs any op takes */
#define AD_ROWS (-1)        /* first dimension bound at evaluation ("null" in JSON) */
#define AD_MAX_NODES_DEFAULT 10000

/* Stored in SQLite as part of graph specs through their names, and used as table indices:
 * append only, never renumber. Ops after AD_OP_PUBLIC_END are internal to model kinds and are
 * never accepted from JSON. */
enum ad_op {
    AD_OP_NONE = 0,
    AD_OP_INPUT = 1,
    AD_OP_PARAM = 2,
    AD_OP_CONST = 3,
    AD_OP_ADD = 4,
    AD_OP_SUB = 5,
    AD_OP_MUL = 6,
    AD_OP_DIV = 7,
    AD_OP_NEG = 8,
    AD_OP_MATMUL = 9,      /* 2-D; attribute transpose_b */
    AD_OP_BIAS = 10,       /* [m,n] -> [m,1+n], column 0 all ones */
    AD_OP_TRANSPOSE = 11,
    AD_OP_EXP = 12,
    AD_OP_LOG = 13,
    AD_OP_SIGMOID = 14,
    AD_OP_TANH = 15,
    AD_OP_RELU = 16,
    AD_OP_STEP = 17,       /* 1 where x > 0 else 0; zero gradient */
    AD_OP_MAX = 18,        /* gradient to a where a >= b, else to b */
    AD_OP_MIN = 19,        /* gradient to a where a <= b, else to b */
    AD_OP_SQUARE = 20,
    AD_OP_SUM = 21,        /* all elements -> shape [] */
    AD_OP_MEAN = 22,       /* all elements -> shape [] */
    AD_OP_SOFTMAX = 23,    /* per row of a 2-D value (a 1-D value is one row) */
    AD_OP_LOG_SOFTMAX = 24,
    AD_OP_L2_LOSS = 25,    /* (out, y): sum over elements of (out-y)^2, / rows when mean */
    AD_OP_BCE_LOSS = 26,   /* (z logits, y 0/1): softplus(z) - y z, stable, / rows when mean */
    AD_OP_CCE_LOSS = 27,   /* (z [m,k] logits, y [m] or [m,1] class ids): lse(z) - z_y */
    AD_OP_PUBLIC_END = 28, /* marker: the ops above are the JSON graph vocabulary */
    /* Internal ops used by model kinds. */
    AD_OP_WBCE_LOSS = 29,  /* (z, t, w): sum_ij w_ij (softplus(z_ij) - t_ij z_ij); reduction is
                              folded into w by the caller (ova, ovo) */
    AD_OP_PERCEPTRON_LOSS = 30, /* (z [m,1], y [m,1]): forward = misclassified count (sum) or
                                   fraction (mean); backward sends (step(z) - y) to z regardless
                                   of reduction, so sgd on it is the perceptron rule */
    AD_OP_AFFINE = 31,     /* (h [m,n], W [k,1+n]): h W[:,1:]^T + W[:,0], a dense layer with its
                              bias column, without materialising bias(h) */
    AD_OP_COUNT
};

enum ad_reduction { AD_REDUCTION_MEAN = 0, AD_REDUCTION_SUM = 1 };

/* One node of a graph spec. Children are named by id; value (param/const initial data, row
 * major, tensor_shape_elems(shape) numbers) is owned by the spec. */
typedef struct ad_node_spec {
    char id[AD_ID_MAX];
    int32_t op;                           /* enum ad_op */
    int32_t n_in;
    char in[AD_MAX_CHILD][AD_ID_MAX];
    tensor_shape_t shape;                 /* input/param/const; d[0] may be AD_ROWS for inputs */
    double *value;                        /* param/const; NULL for a param = zeros */
    int32_t reduction;                    /* enum ad_reduction, losses only */
    int32_t transpose_b;                  /* matmul only */
} ad_node_spec_t;

typedef struct ad_graph_spec {
    int32_t n_node;
    ad_node_spec_t *node;                 /* n_node entries; malloc'ed, see ad_graph_spec_free */
    char output[AD_ID_MAX];               /* id of the output node */
} ad_graph_spec_t;

typedef struct ad_graph ad_graph_t;

/* Free the node array and every value buffer of a spec, and zero it. NULL is a no-op. */
void ad_graph_spec_free(ad_graph_spec_t *spec);

/* Deep copy of a spec; *out is filled (caller frees with ad_graph_spec_free). */
int ad_graph_spec_copy(const ad_graph_spec_t *src, ad_graph_spec_t *out, err_t *err);

/* Append a node to a spec (grows the array). Copies `value` (elems of shape) when non-NULL.
 * Returns 0 or ERR_NOMEM. Convenience for builders; does not validate. */
int ad_graph_spec_add(ad_graph_spec_t *spec, const char *id, int32_t op, int32_t n_in,
                      const char *const *in, const tensor_shape_t *shape, const double *value,
                      int32_t reduction, int32_t transpose_b, err_t *err);

/* Op name <-> enum for the public vocabulary ("matmul" -> AD_OP_MATMUL). from_name returns
 * AD_OP_NONE for an unknown or internal name. */
int32_t ad_op_from_name(const char *name);
const char *ad_op_name(int32_t op);

/* Number of inputs an op takes (0 for leaves, 1, 2 or 3). */
int32_t ad_op_arity(int32_t op);

/*
 * Validate `spec` and compile it. Errors (err->field is the node id, or "output"):
 * ERR_INVAL for an unknown op, wrong number of inputs, unknown input id, duplicate id, a cycle,
 * a non-scalar output when require_scalar_output, more than max_nodes nodes; ERR_SHAPE for shapes
 * that do not fit the op. Shapes that depend on AD_ROWS are checked symbolically. *out is new;
 * free with ad_graph_free(). The spec is not referenced after the call.
 */
int ad_graph_build(const ad_graph_spec_t *spec, int32_t max_nodes, ad_graph_t **out,
                   err_t *err);

/*
 * ad_graph_build() that also bounds memory: when max_elems > 0, the values of all nodes together
 * (parameters, constants, inputs and every intermediate result; the gradients take as much
 * again) may hold at most max_elems doubles, checked before allocating -- here for the nodes
 * whose shape is fixed, and by every later ad_graph_bind() for the row-dependent ones. Over it:
 * ERR_RANGE, err->field = the id of the node that crosses the limit, message "... exceed the
 * limit of N values in all ...".
 */
int ad_graph_build_capped(const ad_graph_spec_t *spec, int32_t max_nodes, int64_t max_elems,
                          ad_graph_t **out, err_t *err);

/* Free a graph and all its buffers. NULL is a no-op. */
void ad_graph_free(ad_graph_t *g);

/* Bind the row count of AD_ROWS inputs (rows >= 1), recompute shapes. Allocates only when
 * rows exceeds every earlier binding. Graphs with no AD_ROWS input accept any rows value. */
int ad_graph_bind(ad_graph_t *g, int32_t rows, err_t *err);

/* Number of nodes; nodes are indexed 0..n-1 in topological order (children before parents). */
int32_t ad_n_node(const ad_graph_t *g);

/* Index of the node with this id, or -1. */
int32_t ad_find(const ad_graph_t *g, const char *id);

/* Index of the spec's output node. */
int32_t ad_output(const ad_graph_t *g);

/* Borrowed: the node's id, op and current shape. */
const char *ad_id(const ad_graph_t *g, int32_t node);
int32_t ad_op(const ad_graph_t *g, int32_t node);
const tensor_shape_t *ad_shape(const ad_graph_t *g, int32_t node);

/* Index of the k-th child of a node (k < arity), or -1. */
int32_t ad_child(const ad_graph_t *g, int32_t node, int32_t k);

/* Borrowed: the node's value buffer (tensor_shape_elems(ad_shape()) doubles), valid until the
 * next ad_graph_bind() with more rows or ad_graph_free(). Write inputs here before ad_forward. */
double *ad_value(ad_graph_t *g, int32_t node);

/* Borrowed: the node's gradient after ad_backward(), same size as its value. */
double *ad_grad(ad_graph_t *g, int32_t node);

/* Point an input node at caller-owned data instead of its own buffer (a batch view: no copy).
 * `data` must hold the input's current element count and outlive the next ad_forward. Pass NULL
 * to return to the node's own buffer. */
int ad_bind_input_view(ad_graph_t *g, int32_t node, const double *data, err_t *err);

/* Run every op forward in topological order. Fails (ERR_INVAL, field = node id) only on
 * data the shapes cannot catch: a class index out of range or not an integer. */
int ad_forward(ad_graph_t *g, err_t *err);

/* Run forward only for `node` and its ancestors (what predicting needs: no labels required). */
int ad_forward_to(ad_graph_t *g, int32_t node, err_t *err);

/* Zero all gradients, seed d(node)/d(node) = 1 (node must be a scalar) and run backward;
 * afterwards ad_grad(g, i) is d node / d i for every i, and ad_param_grads() holds the param
 * gradients. Requires a preceding ad_forward. */
int ad_backward(ad_graph_t *g, int32_t node, err_t *err);

/* ad_backward() for training: afterwards only the param gradients (ad_param_grads()) and those of
 * nodes that depend on a param are defined; gradients nobody needs -- with respect to the
 * inputs, the labels, bias(x) -- are neither computed nor zeroed. */
int ad_backward_params(ad_graph_t *g, int32_t node, err_t *err);

/* Backward with an arbitrary seed for `node` (its element count of doubles). */
int ad_backward_seed(ad_graph_t *g, int32_t node, const double *seed, err_t *err);

/* Jacobian d of / d wrt after a forward pass: out is [elems(of), elems(wrt)] row major. Runs one
 * backward pass per element of `of`. */
int ad_jacobian(ad_graph_t *g, int32_t of, int32_t wrt, double *out, err_t *err);

/* All param nodes' values as one flat array (spec order of param nodes, each row major). */
int64_t ad_n_param(const ad_graph_t *g);
double *ad_params(ad_graph_t *g);
double *ad_param_grads(ad_graph_t *g);

/* Param nodes in spec order: count, node index, and offset into ad_params(). */
int32_t ad_n_param_node(const ad_graph_t *g);
int32_t ad_param_node(const ad_graph_t *g, int32_t k);
int64_t ad_param_offset(const ad_graph_t *g, int32_t k);

#endif /* ND_GRAPH_H */
