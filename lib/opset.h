/* lib/opset.h -- the op vocabulary of computation graphs: op codes, reductions, node limits,
 * and op names and arities.
 *
 * Both sides of the engine need these words: graph.h (building and running graphs) and the op
 * kernels of ops.h. Keeping them here lets ops.h depend on the vocabulary alone, so the
 * includes run one way, graph.c -> ops.h -> opset.h and graph.h -> opset.h, with no cycle
 * between the graph and its ops. Everyone else gets this header through graph.h.
 *
 *     int32_t op = ad_op_from_name("matmul");          // AD_OP_MATMUL
 *     if (op == AD_OP_NONE) ... unknown or internal name ...
 *     ad_op_arity(op);                                 // 2
 */
#ifndef ND_OPSET_H
#define ND_OPSET_H

#include <stdint.h>

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

/* Op name <-> enum for the public vocabulary ("matmul" -> AD_OP_MATMUL). from_name returns
 * AD_OP_NONE for an unknown or internal name. */
int32_t ad_op_from_name(const char *name);
const char *ad_op_name(int32_t op);

/* Number of inputs an op takes (0 for leaves, 1, 2 or 3). */
int32_t ad_op_arity(int32_t op);

#endif /* ND_OPSET_H */
