/* lib/ops.h -- private to lib/graph.c and lib/ops.c: the node struct and the op table.
 *
 * Nothing outside lib/graph.c and lib/ops.c includes this; everyone else sees the opaque
 * ad_graph_t of graph.h. Every op is one function that handles its shape pass (at build, on
 * symbolic shapes), its forward pass and its backward pass:
 *
 *     const ad_op_info_t *info = &ad_op_table[p->op];
 *     info->fn(p, AD_PASS_SHAPE, err);    // p->sym from the children's sym; ERR_SHAPE names p
 *     info->fn(p, AD_PASS_FWD, err);      // p->x from the children's x (concrete shapes)
 *     info->fn(p, AD_PASS_BWD, err);      // ADDS into each child's g, from p->g
 */
#ifndef ND_OPS_H
#define ND_OPS_H

#include <stdint.h>

#include "err.h"
#include "opset.h"
#include "tensor.h"

typedef struct ad_node {
    char id[AD_ID_MAX];
    int32_t op;                          /* enum ad_op */
    int32_t n_child;
    struct ad_node *child[AD_MAX_CHILD];
    tensor_shape_t sym;                  /* build-time shape; any dimension may be AD_ROWS */
    tensor_shape_t shape;                /* sym at the bound row count */
    int64_t n;                           /* tensor_shape_elems(&shape) */
    int32_t reduction;                   /* enum ad_reduction, losses only */
    int32_t transpose_b;                 /* matmul only */
    int32_t no_grad;                     /* backward may skip this node's gradient (graph.c sets
                                            it for ad_backward_params; ops that honour it are
                                            listed in ad_op_skips_no_grad) */
    int32_t no_grad_param;               /* depends on no param (set at build) */
    int32_t g_assign;                    /* backward of the one parent that writes this node's
                                            gradient stores into it instead of adding, and
                                            graph.c skips zeroing it (ad_backward_params only;
                                            the parent's op is one of ad_op_assigns_grad) */
    int32_t g_assign_ok;                 /* g_assign may be set: one writer that can assign */
    int32_t g_writer;                    /* that writer's index when g_assign_ok, else -1 */
    pool_t *pool;                        /* borrowed compute threads for the op's large
                                            products (ad_graph_set_pool), or NULL */
    double *scratch;                     /* ad_op_scratch() doubles for the op's own use between
                                            its passes (owned by graph.c), or NULL */
    double *x;                           /* value: own_x, or a caller's view for an input */
    double *g;                           /* gradient, n doubles */
    double *own_x;                       /* the node's own value buffer */
} ad_node_t;

enum ad_pass { AD_PASS_SHAPE = 0, AD_PASS_FWD = 1, AD_PASS_BWD = 2 };

/* Returns 0 or a negative err code; only the shape pass (ERR_SHAPE) and the forward pass of
 * data-checking ops (ERR_INVAL) can fail. */
typedef int (*ad_op_fn)(ad_node_t *p, int pass, err_t *err);

typedef struct ad_op_info {
    const char *name;    /* JSON name; NULL for AD_OP_NONE and AD_OP_PUBLIC_END */
    int32_t arity;       /* -1 for the two non-ops */
    ad_op_fn fn;         /* NULL for the two non-ops */
} ad_op_info_t;

/* Indexed by enum ad_op. */
extern const ad_op_info_t ad_op_table[AD_OP_COUNT];

/* 1 when the op's backward never writes the gradient of a child marked no_grad, so graph.c
 * need not zero that child's gradient either. */
int ad_op_skips_no_grad(int32_t op);

/* 1 when the op's backward, for its k-th child when that child's g_assign is set, stores the
 * child's whole gradient instead of adding to it. */
int ad_op_assigns_grad(int32_t op, int32_t k);

/* Doubles of scratch the op wants at `rows` (AD_ROWS in the children's shapes read as rows):
 * 0 for most ops. graph.c allocates it with the row-dependent buffers and sets p->scratch. */
int64_t ad_op_scratch(const ad_node_t *p, int32_t rows);

/* 1 when a dimension of s is AD_ROWS. */
int ad_shape_symbolic(const tensor_shape_t *s);

/* Write a symbolic shape as JSON would show it ("[null,3]", "[]") into buf. Returns buf. */
const char *ad_shape_str(const tensor_shape_t *s, char *buf, size_t size);

#endif /* ND_OPS_H */
