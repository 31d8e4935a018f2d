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
#include "opset.h"
#include "tensor.h"

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

/*
 * ad_graph_build() and ad_forward() name a node by its id in err->field ("output" and "nodes" for
 * the graph as a whole). Turn that into a path into the request that held the spec under `prefix`
 * ("graph"): "graph.nodes[3]", "graph.output", "graph.nodes". A duplicate id is named at its
 * second place, any other node at its first. An empty field is left alone.
 */
void ad_graph_spec_error_path(const ad_graph_spec_t *spec, const char *prefix, err_t *err);

/* Append a node to a spec (grows the array). Copies `value` (elems of shape) when non-NULL.
 * Returns 0 or ERR_NOMEM. Convenience for builders; does not validate. */
int ad_graph_spec_add(ad_graph_spec_t *spec, const char *id, int32_t op, int32_t n_in,
                      const char *const *in, const tensor_shape_t *shape, const double *value,
                      int32_t reduction, int32_t transpose_b, err_t *err);

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

/* Borrowed compute threads for the graph's large matrix products (tensor_gemm_on()), or NULL
 * for the calling thread alone. The results are the same bytes either way. */
void ad_graph_set_pool(ad_graph_t *g, pool_t *pool);

/* Doubles the row-dependent buffers would hold bound to `rows`: every such node's value and
 * gradient, and the ops' scratch (INT64_MAX when that overflows). Allocates nothing: callers
 * check it against a limit before ad_graph_bind(). */
int64_t ad_graph_rows_values(const ad_graph_t *g, int32_t rows);

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
