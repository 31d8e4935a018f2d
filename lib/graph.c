/* lib/graph.c -- spec validation, topological sort, buffers, forward/backward drivers, Jacobians.
 * The ops themselves live in ops.c (ops.h has the node struct and the table).
 *
 * Memory: every buffer is allocated at build or at a bind that raises the row capacity, never in
 * forward/backward. Nodes whose shape does not depend on the rows live in one "fixed" block
 * (values, and gradients in a parallel block), params first in spec order so that the head of
 * those blocks is ad_params()/ad_param_grads(). Nodes whose shape depends on the rows live in a
 * "rows" block sized for the largest row count bound so far. */
#include "graph.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

struct ad_graph {
    int32_t n_node;
    ad_node_t *node;          /* topological order, children first */
    int32_t output;
    int32_t *hash;            /* open addressing over ids: node index or -1 */
    uint32_t hash_mask;
    uint8_t *live;            /* scratch for backward: node reaches the seed */

    int32_t n_param_node;
    int32_t *param_node;      /* spec order -> node index */
    int64_t *param_off;       /* offset of each into fixed_x / fixed_g */
    int64_t n_param;          /* doubles in all params */

    double *fixed_x, *fixed_g;
    int64_t n_fixed;

    int has_rows;             /* some node's shape depends on the rows */
    int32_t rows;             /* current binding */
    int32_t cap_rows;         /* rows_x/rows_g are sized for this many rows */
    double *rows_x, *rows_g;
    double *scratch;          /* every node's ad_op_scratch(), at cap_rows */
    int64_t n_rows_cap;       /* doubles in rows_x at cap_rows */
    int32_t fwd_rows;         /* rows of the last successful forward, 0 if none since rebind */
    int32_t fwd_node;         /* that forward covered this node's ancestors; -1: every node */
    int64_t max_elems;        /* 0, or the most doubles all values may hold (fixed + rows) */

    /* ad_backward_params: nodes that depend on no param are marked no_grad and skipped; only
     * these nodes' gradients are zeroed, and of them only those that no single writer stores
     * whole (see mark_param_paths). */
    int no_grad_on;           /* the no_grad flags are set (1) or all clear (0) */
    int32_t n_zero_nodes;
    int32_t *zero_nodes;
};

/* ---- specs --------------------------------------------------------------------------------- */

void ad_graph_spec_free(ad_graph_spec_t *spec)
{
    if (spec == NULL)
        return;
    for (int32_t i = 0; i < spec->n_node && spec->node != NULL; ++i)
        free(spec->node[i].value);
    free(spec->node);
    memset(spec, 0, sizeof *spec);
}

/* Elements a spec value holds, or -1 when the shape is symbolic or malformed. */
static int64_t spec_value_elems(const tensor_shape_t *s)
{
    if (s->n_d < 0 || s->n_d > TENSOR_MAX_DIM)
        return -1;
    int64_t n = 1;
    for (int32_t i = 0; i < s->n_d; ++i) {
        if (s->d[i] < 1)
            return -1;
        n *= s->d[i];
        if (n > TENSOR_MAX_ELEMS)
            return -1;
    }
    return n;
}

int ad_graph_spec_copy(const ad_graph_spec_t *src, ad_graph_spec_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    if (src->n_node < 0)
        return err_set(err, ERR_INVAL, "graph spec: n_node=%d < 0", (int)src->n_node);
    if (src->n_node > 0) {
        out->node = calloc((size_t)src->n_node, sizeof *out->node);
        if (out->node == NULL)
            return err_set(err, ERR_NOMEM, "graph spec copy: %d nodes", (int)src->n_node);
    }
    out->n_node = src->n_node;
    memcpy(out->output, src->output, sizeof out->output);
    for (int32_t i = 0; i < src->n_node; ++i) {
        const ad_node_spec_t *s = &src->node[i];
        out->node[i] = *s;
        out->node[i].value = NULL;
        if (s->value == NULL)
            continue;
        int64_t n = spec_value_elems(&s->shape);
        if (n < 0) {
            ad_graph_spec_free(out);
            return err_set_field(err, ERR_SHAPE, s->id, "node '%.*s': value with a bad shape",
                                 AD_ID_MAX - 1, s->id);
        }
        out->node[i].value = malloc((size_t)n * sizeof(double));
        if (out->node[i].value == NULL) {
            ad_graph_spec_free(out);
            return err_set(err, ERR_NOMEM, "graph spec copy: value of %lld doubles",
                           (long long)n);
        }
        memcpy(out->node[i].value, s->value, (size_t)n * sizeof(double));
    }
    return 0;
}

static int copy_id(char dst[AD_ID_MAX], const char *src)
{
    if (src == NULL || strlen(src) >= AD_ID_MAX)
        return -1;
    memset(dst, 0, AD_ID_MAX);
    strcpy(dst, src);
    return 0;
}

void ad_graph_spec_error_path(const ad_graph_spec_t *spec, const char *prefix, err_t *err)
{
    if (err == NULL || err->field[0] == '\0')
        return;
    char path[ERR_FIELD_MAX];
    if (strcmp(err->field, "output") == 0 || strcmp(err->field, "nodes") == 0) {
        err_prefix_field(err, ".");
        err_prefix_field(err, prefix);
        return;
    }
    const int want = strstr(err->msg, "duplicate id") != NULL ? 2 : 1;
    for (int32_t i = 0, seen = 0; i < spec->n_node; ++i) {
        if (strcmp(spec->node[i].id, err->field) == 0 && ++seen == want) {
            snprintf(path, sizeof path, "%s.nodes[%d]", prefix, (int)i);
            memcpy(err->field, path, sizeof err->field);
            return;
        }
    }
}

int ad_graph_spec_add(ad_graph_spec_t *spec, const char *id, int32_t op, int32_t n_in,
                      const char *const *in, const tensor_shape_t *shape, const double *value,
                      int32_t reduction, int32_t transpose_b, err_t *err)
{
    ad_node_spec_t nd;
    memset(&nd, 0, sizeof nd);
    if (copy_id(nd.id, id) < 0)
        return err_set(err, ERR_INVAL, "graph spec: node id missing or longer than %d",
                       AD_ID_MAX - 1);
    if (n_in < 0 || n_in > AD_MAX_CHILD || (n_in > 0 && in == NULL))
        return err_set_field(err, ERR_INVAL, nd.id, "node '%s': n_in=%d not in [0,%d]", nd.id,
                             (int)n_in, AD_MAX_CHILD);
    for (int32_t k = 0; k < n_in; ++k)
        if (copy_id(nd.in[k], in[k]) < 0)
            return err_set_field(err, ERR_INVAL, nd.id,
                                 "node '%s': input %d missing or longer than %d", nd.id, (int)k,
                                 AD_ID_MAX - 1);
    nd.op = op;
    nd.n_in = n_in;
    nd.shape.d[0] = nd.shape.d[1] = 1;
    if (shape != NULL)
        nd.shape = *shape;
    nd.reduction = reduction;
    nd.transpose_b = transpose_b;
    if (value != NULL) {
        int64_t n = spec_value_elems(&nd.shape);
        if (n < 0)
            return err_set_field(err, ERR_SHAPE, nd.id, "node '%s': value with a bad shape",
                                 nd.id);
        nd.value = malloc((size_t)n * sizeof(double));
        if (nd.value == NULL)
            return err_set(err, ERR_NOMEM, "graph spec: value of %lld doubles", (long long)n);
        memcpy(nd.value, value, (size_t)n * sizeof(double));
    }
    ad_node_spec_t *grown = realloc(spec->node, ((size_t)spec->n_node + 1) * sizeof *grown);
    if (grown == NULL) {
        free(nd.value);
        return err_set(err, ERR_NOMEM, "graph spec: %d nodes", (int)spec->n_node + 1);
    }
    spec->node = grown;
    spec->node[spec->n_node++] = nd;
    return 0;
}

/* ---- id lookup ----------------------------------------------------------------------------- */

static uint32_t id_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s != '\0'; ++s)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Slot of `id` in a table of node indices into `ids` (stride AD_ID_MAX chars apart via `at`),
 * or of the empty slot where it would go. */
static uint32_t hash_slot(const int32_t *hash, uint32_t mask, const char *id,
                          const char *(*at)(const void *, int32_t), const void *ctx)
{
    uint32_t s = id_hash(id) & mask;
    while (hash[s] >= 0 && strcmp(at(ctx, hash[s]), id) != 0)
        s = (s + 1) & mask;
    return s;
}

static const char *spec_id_at(const void *ctx, int32_t i)
{
    return ((const ad_graph_spec_t *)ctx)->node[i].id;
}

static const char *graph_id_at(const void *ctx, int32_t i)
{
    return ((const ad_graph_t *)ctx)->node[i].id;
}

static int32_t *hash_new(int32_t n, uint32_t *mask)
{
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n)
        cap *= 2;
    int32_t *h = malloc(cap * sizeof *h);
    if (h != NULL)
        memset(h, 0xff, cap * sizeof *h); /* all -1 */
    *mask = cap - 1;
    return h;
}

/* ---- build --------------------------------------------------------------------------------- */

/* For ad_backward_params: a node depending on no param gets no_grad_param (its gradient is never
 * needed), and the nodes whose gradient is read go in zero_nodes -- those that do depend on a
 * param (every param among them), and the children of such nodes whose op might still write
 * into them. No other gradient is written or read there, so no other is zeroed. */
static int mark_param_paths(ad_graph_t *g)
{
    uint8_t *zero = calloc((size_t)g->n_node + 1, 1);
    if (zero == NULL)
        return -1;
    int32_t n_zero = 0;
    for (int32_t i = 0; i < g->n_node; ++i) {
        ad_node_t *p = &g->node[i];
        int dep = p->op == AD_OP_PARAM;
        for (int32_t k = 0; k < p->n_child; ++k)
            dep |= !p->child[k]->no_grad_param;
        p->no_grad_param = !dep;
        if (!dep)
            continue;
        zero[i] = 1;
        if (!ad_op_skips_no_grad(p->op))
            for (int32_t k = 0; k < p->n_child; ++k)
                zero[p->child[k] - g->node] = 1;
    }
    /* A gradient written by exactly one parent that can store it whole need not be zeroed
     * first (the parent's op assigns; see ad_backward_params). A weight's, stored by its
     * affine's product, is the one that counts: zeroing every parameter's gradient was a tenth
     * of a 32-row mini-batch step of a 100 000-parameter MLP. */
    for (int32_t i = 0; i < g->n_node; ++i)
        g->node[i].g_writer = -1;
    for (int32_t i = 0; i < g->n_node; ++i) {
        ad_node_t *p = &g->node[i];
        if (p->no_grad_param)
            continue;
        for (int32_t k = 0; k < p->n_child; ++k) {
            ad_node_t *c = p->child[k];
            if (c->g_writer == -1 && ad_op_assigns_grad(p->op, k))
                c->g_writer = i;
            else
                c->g_writer = -2;   /* a second writer, or one that adds */
        }
    }
    for (int32_t i = 0; i < g->n_node; ++i) {
        ad_node_t *p = &g->node[i];
        p->g_assign_ok = p->g_writer >= 0 && !p->no_grad_param;
        if (!p->g_assign_ok)
            p->g_writer = -1;
    }
    for (int32_t i = 0; i < g->n_node; ++i)
        n_zero += zero[i];
    g->zero_nodes = malloc(((size_t)n_zero + 1) * sizeof *g->zero_nodes);
    if (g->zero_nodes == NULL) {
        free(zero);
        return -1;
    }
    for (int32_t i = 0; i < g->n_node; ++i)
        if (zero[i])
            g->zero_nodes[g->n_zero_nodes++] = i;
    free(zero);
    return 0;
}

/* Min-heap of spec indices: Kahn's algorithm then emits the smallest ready node first, so a spec
 * that is already in topological order keeps its order exactly. */
static void heap_push(int32_t *h, int32_t *n, int32_t v)
{
    int32_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > v) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
}

static int32_t heap_pop(int32_t *h, int32_t *n)
{
    int32_t top = h[0], v = h[--*n], i = 0;
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && h[c + 1] < h[c])
            ++c;
        if (h[c] >= v)
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = v;
    return top;
}

static int valid_id(const char *id)
{
    return memchr(id, '\0', AD_ID_MAX) != NULL && id[0] != '\0';
}

/* Checks of a single spec node that need no other node: id, op, arity, leaf shape. */
static int check_node(const ad_node_spec_t *s, err_t *err)
{
    if (s->op <= AD_OP_NONE || s->op >= AD_OP_COUNT || s->op == AD_OP_PUBLIC_END)
        return err_set_field(err, ERR_INVAL, s->id, "node '%s': unknown op %d", s->id,
                             (int)s->op);
    const char *name = ad_op_table[s->op].name;
    if (s->n_in != ad_op_table[s->op].arity)
        return err_set_field(err, ERR_INVAL, s->id, "node '%s': %s takes %d input(s), got %d",
                             s->id, name, (int)ad_op_table[s->op].arity, (int)s->n_in);
    for (int32_t k = 0; k < s->n_in; ++k)
        if (!valid_id(s->in[k]))
            return err_set_field(err, ERR_INVAL, s->id, "node '%s': input %d has no valid id",
                                 s->id, (int)k);
    if ((s->op == AD_OP_MATMUL) && s->transpose_b != 0 && s->transpose_b != 1)
        return err_set_field(err, ERR_INVAL, s->id, "node '%s': transpose_b=%d not 0 or 1",
                             s->id, (int)s->transpose_b);
    int is_loss = s->op == AD_OP_L2_LOSS || s->op == AD_OP_BCE_LOSS || s->op == AD_OP_CCE_LOSS ||
                  s->op == AD_OP_WBCE_LOSS || s->op == AD_OP_PERCEPTRON_LOSS;
    if (is_loss && s->reduction != AD_REDUCTION_MEAN && s->reduction != AD_REDUCTION_SUM)
        return err_set_field(err, ERR_INVAL, s->id, "node '%s': reduction=%d unknown", s->id,
                             (int)s->reduction);
    if (ad_op_table[s->op].arity != 0)
        return 0;
    const tensor_shape_t *sh = &s->shape;
    if (sh->n_d < 0 || sh->n_d > TENSOR_MAX_DIM)
        return err_set_field(err, ERR_SHAPE, s->id, "node '%s': %d dimensions, at most %d",
                             s->id, (int)sh->n_d, TENSOR_MAX_DIM);
    int64_t n = 1;
    for (int32_t i = 0; i < sh->n_d; ++i) {
        if (sh->d[i] == AD_ROWS && i == 0 && s->op == AD_OP_INPUT)
            continue;
        if (sh->d[i] < 1)
            return err_set_field(err, ERR_SHAPE, s->id,
                                 "node '%s': dimension %d is %d; only an input's first "
                                 "dimension may be null",
                                 s->id, (int)i, (int)sh->d[i]);
        n *= sh->d[i];
        if (n > TENSOR_MAX_ELEMS)
            return err_set_field(err, ERR_SHAPE, s->id, "node '%s': more than %lld elements",
                                 s->id, (long long)TENSOR_MAX_ELEMS);
    }
    return 0;
}

/* Spec order of the nodes still unsorted after Kahn all have an unsorted child; walking child
 * links from any of them must enter a cycle within n steps. Report the cycle's first node in spec
 * order so the message does not depend on where the walk started. */
static int report_cycle(const ad_graph_spec_t *spec, const int32_t *const *kid,
                        const int32_t *indeg, err_t *err)
{
    int32_t v = 0;
    while (indeg[v] == 0)
        ++v;
    for (int32_t step = 0; step < spec->n_node; ++step) {
        int32_t next = -1;
        for (int32_t k = 0; k < spec->node[v].n_in && next < 0; ++k)
            if (indeg[kid[v][k]] > 0)
                next = kid[v][k];
        assert(next >= 0);
        v = next;
    }
    int32_t best = v;
    for (int32_t u = v;;) {
        int32_t next = -1;
        for (int32_t k = 0; k < spec->node[u].n_in && next < 0; ++k)
            if (indeg[kid[u][k]] > 0)
                next = kid[u][k];
        u = next;
        if (u == v)
            break;
        if (u < best)
            best = u;
    }
    /* The walk above follows first unsorted children only, so `best` is on a real cycle. */
    const char *id = spec->node[best].id;
    return err_set_field(err, ERR_INVAL, id, "node '%s' is on a cycle", id);
}

/* Recompute every node's concrete shape for `rows` (AD_ROWS -> rows). */
static void apply_rows(ad_graph_t *g, int32_t rows)
{
    for (int32_t i = 0; i < g->n_node; ++i) {
        ad_node_t *p = &g->node[i];
        p->shape = p->sym;
        for (int32_t d = 0; d < p->sym.n_d; ++d)
            if (p->sym.d[d] == AD_ROWS)
                p->shape.d[d] = rows;
        p->n = tensor_shape_elems(&p->shape);
    }
    g->rows = rows;
}

/* Doubles every row-dependent node needs at `rows`, with a per-node overflow check. */
static int rows_elems(const ad_graph_t *g, int32_t rows, int64_t *total, err_t *err)
{
    int64_t sum = 0;
    for (int32_t i = 0; i < g->n_node; ++i) {
        const ad_node_t *p = &g->node[i];
        if (!ad_shape_symbolic(&p->sym))
            continue;
        int64_t r = p->sym.n_d > 0 ? (p->sym.d[0] == AD_ROWS ? rows : p->sym.d[0]) : 1;
        int64_t c = p->sym.n_d > 1 ? (p->sym.d[1] == AD_ROWS ? rows : p->sym.d[1]) : 1;
        int64_t n;
        if (tensor_checked_elems(r, c, p->id, &n, err) < 0) {
            err_set_field(err, ERR_RANGE, p->id, "node '%s': rows=%d gives more than %lld "
                          "elements", p->id, (int)rows, (long long)TENSOR_MAX_ELEMS);
            return ERR_RANGE;
        }
        sum += n;
        if (g->max_elems > 0 && sum > g->max_elems - g->n_fixed)
            return err_set_field(err, ERR_RANGE, p->id,
                                 "node '%s': at rows=%d the graph's values exceed the limit of "
                                 "%lld values in all", p->id, (int)rows,
                                 (long long)g->max_elems);
    }
    *total = sum;
    return 0;
}

int64_t ad_graph_rows_values(const ad_graph_t *g, int32_t rows)
{
    /* Saturating: a caller compares the answer with a limit, so "too many" is all it needs. */
    int64_t sum = 0;
    for (int32_t i = 0; i < g->n_node; ++i) {
        const ad_node_t *p = &g->node[i];
        int64_t n = ad_op_scratch(p, rows);
        if (ad_shape_symbolic(&p->sym)) {
            int64_t r = p->sym.n_d > 0 ? (p->sym.d[0] == AD_ROWS ? rows : p->sym.d[0]) : 1;
            int64_t c = p->sym.n_d > 1 ? (p->sym.d[1] == AD_ROWS ? rows : p->sym.d[1]) : 1;
            if (r > 0 && c > (INT64_MAX / 4) / r)
                return INT64_MAX;
            n += 2 * r * c;    /* the value and its gradient */
        }
        if (n < 0 || n > INT64_MAX - sum)
            return INT64_MAX;
        sum += n;
    }
    return sum;
}

/* Allocate the row-dependent block for `rows` and point those nodes into it. The old block is
 * freed only after the new one exists, so a failure leaves the graph at its old binding. */
static int alloc_rows(ad_graph_t *g, int32_t rows, err_t *err)
{
    int64_t total = 0;
    int rc = rows_elems(g, rows, &total, err);
    if (rc < 0)
        return rc;
    int64_t n_scratch = 0;
    for (int32_t i = 0; i < g->n_node; ++i)
        n_scratch += ad_op_scratch(&g->node[i], rows);
    double *x = calloc((size_t)(total > 0 ? total : 1), sizeof *x);
    double *gr = calloc((size_t)(total > 0 ? total : 1), sizeof *gr);
    double *sc = malloc((size_t)(n_scratch > 0 ? n_scratch : 1) * sizeof *sc);
    if (x == NULL || gr == NULL || sc == NULL) {
        free(x);
        free(gr);
        free(sc);
        return err_set(err, ERR_NOMEM, "graph: buffers for %d rows (%lld doubles)", (int)rows,
                       (long long)(total + n_scratch));
    }
    free(g->rows_x);
    free(g->rows_g);
    free(g->scratch);
    g->rows_x = x;
    g->rows_g = gr;
    g->scratch = sc;
    int64_t s_off = 0;
    for (int32_t i = 0; i < g->n_node; ++i) {
        int64_t ns = ad_op_scratch(&g->node[i], rows);
        g->node[i].scratch = ns > 0 ? sc + s_off : NULL;
        s_off += ns;
    }
    g->n_rows_cap = total;
    g->cap_rows = rows;
    g->fwd_rows = 0;
    apply_rows(g, rows);
    int64_t off = 0;
    for (int32_t i = 0; i < g->n_node; ++i) {
        ad_node_t *p = &g->node[i];
        if (!ad_shape_symbolic(&p->sym))
            continue;
        p->own_x = p->x = x + off;
        p->g = gr + off;
        off += p->n;
    }
    return 0;
}

int ad_graph_build(const ad_graph_spec_t *spec, int32_t max_nodes, ad_graph_t **out,
                   err_t *err)
{
    return ad_graph_build_capped(spec, max_nodes, 0, out, err);
}

int ad_graph_build_capped(const ad_graph_spec_t *spec, int32_t max_nodes, int64_t max_elems,
                          ad_graph_t **out, err_t *err)
{
    *out = NULL;
    if (max_nodes <= 0)
        max_nodes = AD_MAX_NODES_DEFAULT;
    const int32_t n = spec->n_node;
    if (n <= 0 || spec->node == NULL)
        return err_set_field(err, ERR_INVAL, "nodes", "graph has no nodes");
    if (n > max_nodes) {
        const char *id = spec->node[max_nodes].id;
        return err_set_field(err, ERR_INVAL, valid_id(id) ? id : "nodes",
                             "graph has %d nodes, more than the limit %d (node '%.*s' is the "
                             "first too many)",
                             (int)n, (int)max_nodes, AD_ID_MAX - 1, id);
    }

    int rc = ERR_NOMEM;
    ad_graph_t *g = calloc(1, sizeof *g);
    int32_t *spec_hash = NULL, *kids = NULL, *indeg = NULL, *heap = NULL, *order = NULL;
    int32_t *pos = NULL, **kid = NULL;
    int32_t *parents = NULL, *parent_start = NULL;
    uint32_t mask = 0;
    if (g == NULL)
        goto nomem;
    spec_hash = hash_new(n, &mask);
    kids = malloc((size_t)n * AD_MAX_CHILD * sizeof *kids);
    kid = malloc((size_t)n * sizeof *kid);
    indeg = calloc((size_t)n, sizeof *indeg);
    heap = malloc((size_t)n * sizeof *heap);
    order = malloc((size_t)n * sizeof *order);
    pos = malloc((size_t)n * sizeof *pos);
    parent_start = calloc((size_t)n + 1, sizeof *parent_start);
    parents = malloc((size_t)n * AD_MAX_CHILD * sizeof *parents);
    if (spec_hash == NULL || kids == NULL || kid == NULL || indeg == NULL || heap == NULL ||
        order == NULL || pos == NULL || parent_start == NULL || parents == NULL)
        goto nomem;

    /* Ids, ops, arity, leaf shapes; then children resolved by id. */
    for (int32_t i = 0; i < n; ++i) {
        const ad_node_spec_t *s = &spec->node[i];
        if (!valid_id(s->id)) {
            rc = err_set_field(err, ERR_INVAL, "nodes", "node %d: id empty or longer than %d",
                               (int)i, AD_ID_MAX - 1);
            goto fail;
        }
        uint32_t slot = hash_slot(spec_hash, mask, s->id, spec_id_at, spec);
        if (spec_hash[slot] >= 0) {
            rc = err_set_field(err, ERR_INVAL, s->id, "node '%s': duplicate id", s->id);
            goto fail;
        }
        spec_hash[slot] = i;
        if ((rc = check_node(s, err)) < 0)
            goto fail;
    }
    for (int32_t i = 0; i < n; ++i) {
        const ad_node_spec_t *s = &spec->node[i];
        kid[i] = kids + (size_t)i * AD_MAX_CHILD;
        for (int32_t k = 0; k < s->n_in; ++k) {
            int32_t c = spec_hash[hash_slot(spec_hash, mask, s->in[k], spec_id_at, spec)];
            if (c < 0) {
                rc = err_set_field(err, ERR_INVAL, s->id, "node '%s': unknown input '%s'",
                                   s->id, s->in[k]);
                goto fail;
            }
            kid[i][k] = c;
            ++parent_start[c + 1];
        }
        indeg[i] = s->n_in;
    }
    if (!valid_id(spec->output) ||
        spec_hash[hash_slot(spec_hash, mask, spec->output, spec_id_at, spec)] < 0) {
        rc = err_set_field(err, ERR_INVAL, "output", "output '%.*s' is not a node",
                           AD_ID_MAX - 1, spec->output);
        goto fail;
    }

    /* Kahn: parent lists in CSR form, a node is ready when all its child slots are sorted. */
    for (int32_t i = 0; i < n; ++i)
        parent_start[i + 1] += parent_start[i];
    {
        int32_t *fill = heap; /* borrowed as a cursor array before the heap is used */
        memcpy(fill, parent_start, (size_t)n * sizeof *fill);
        for (int32_t i = 0; i < n; ++i)
            for (int32_t k = 0; k < spec->node[i].n_in; ++k)
                parents[fill[kid[i][k]]++] = i;
    }
    int32_t n_heap = 0, n_order = 0;
    for (int32_t i = 0; i < n; ++i)
        if (indeg[i] == 0)
            heap_push(heap, &n_heap, i);
    while (n_heap > 0) {
        int32_t v = heap_pop(heap, &n_heap);
        order[n_order++] = v;
        for (int32_t e = parent_start[v]; e < parent_start[v + 1]; ++e)
            if (--indeg[parents[e]] == 0)
                heap_push(heap, &n_heap, parents[e]);
    }
    if (n_order < n) {
        rc = report_cycle(spec, (const int32_t *const *)kid, indeg, err);
        goto fail;
    }

    /* Nodes in topological order; params and consts get their shapes and values. */
    g->n_node = n;
    g->node = calloc((size_t)n, sizeof *g->node);
    g->live = calloc((size_t)n, 1);
    if (g->node == NULL || g->live == NULL)
        goto nomem;
    for (int32_t t = 0; t < n; ++t)
        pos[order[t]] = t;
    for (int32_t t = 0; t < n; ++t) {
        const ad_node_spec_t *s = &spec->node[order[t]];
        ad_node_t *p = &g->node[t];
        memcpy(p->id, s->id, AD_ID_MAX);
        p->op = s->op;
        p->n_child = s->n_in;
        for (int32_t k = 0; k < s->n_in; ++k)
            p->child[k] = &g->node[pos[kid[order[t]][k]]];
        p->reduction = s->reduction;
        p->transpose_b = s->transpose_b;
        if (p->n_child == 0) {
            p->sym = s->shape;
            for (int32_t d = p->sym.n_d; d < TENSOR_MAX_DIM; ++d)
                p->sym.d[d] = 1;
        } else if ((rc = ad_op_table[p->op].fn(p, AD_PASS_SHAPE, err)) < 0) {
            goto fail;
        }
        if (ad_shape_symbolic(&p->sym))
            g->has_rows = 1;
        else if (tensor_shape_elems(&p->sym) > TENSOR_MAX_ELEMS) {
            rc = err_set_field(err, ERR_SHAPE, p->id, "node '%s': more than %lld elements",
                               p->id, (long long)TENSOR_MAX_ELEMS);
            goto fail;
        }
    }
    g->output = pos[spec_hash[hash_slot(spec_hash, mask, spec->output, spec_id_at, spec)]];

    /* Lookup table over topological indices for ad_find. */
    g->hash = hash_new(n, &g->hash_mask);
    if (g->hash == NULL)
        goto nomem;
    for (int32_t t = 0; t < n; ++t)
        g->hash[hash_slot(g->hash, g->hash_mask, g->node[t].id, graph_id_at, g)] = t;

    /* Fixed block: params in spec order, then every other row-independent node. */
    for (int32_t i = 0; i < n; ++i)
        if (spec->node[i].op == AD_OP_PARAM)
            ++g->n_param_node;
    g->param_node = malloc(((size_t)g->n_param_node + 1) * sizeof *g->param_node);
    g->param_off = malloc(((size_t)g->n_param_node + 1) * sizeof *g->param_off);
    if (g->param_node == NULL || g->param_off == NULL)
        goto nomem;
    int64_t off = 0;
    for (int32_t i = 0, k = 0; i < n; ++i) {
        if (spec->node[i].op != AD_OP_PARAM)
            continue;
        g->param_node[k] = pos[i];
        g->param_off[k] = off;
        off += tensor_shape_elems(&g->node[pos[i]].sym);
        ++k;
    }
    g->n_param = off;
    for (int32_t t = 0; t < n; ++t)
        if (g->node[t].op != AD_OP_PARAM && !ad_shape_symbolic(&g->node[t].sym))
            off += tensor_shape_elems(&g->node[t].sym);
    g->n_fixed = off;
    g->max_elems = max_elems > 0 ? max_elems : 0;
    if (g->max_elems > 0 && off > g->max_elems) {
        /* Name the node that crosses the limit, in the layout order used above. */
        int64_t sum = 0;
        const char *id = NULL;
        for (int32_t k = 0; k < g->n_param_node && id == NULL; ++k) {
            const ad_node_t *p = &g->node[g->param_node[k]];
            if ((sum += tensor_shape_elems(&p->sym)) > g->max_elems)
                id = p->id;
        }
        for (int32_t t = 0; t < n && id == NULL; ++t) {
            const ad_node_t *p = &g->node[t];
            if (p->op != AD_OP_PARAM && !ad_shape_symbolic(&p->sym) &&
                (sum += tensor_shape_elems(&p->sym)) > g->max_elems)
                id = p->id;
        }
        rc = err_set_field(err, ERR_RANGE, id != NULL ? id : "nodes",
                           "node '%s': the graph's values exceed the limit of %lld values in "
                           "all (%lld)", id != NULL ? id : "?", (long long)g->max_elems,
                           (long long)off);
        goto fail;
    }
    g->fixed_x = calloc((size_t)(off > 0 ? off : 1), sizeof *g->fixed_x);
    g->fixed_g = calloc((size_t)(off > 0 ? off : 1), sizeof *g->fixed_g);
    if (g->fixed_x == NULL || g->fixed_g == NULL)
        goto nomem;
    for (int32_t k = 0; k < g->n_param_node; ++k) {
        ad_node_t *p = &g->node[g->param_node[k]];
        p->own_x = p->x = g->fixed_x + g->param_off[k];
        p->g = g->fixed_g + g->param_off[k];
    }
    off = g->n_param;
    for (int32_t t = 0; t < n; ++t) {
        ad_node_t *p = &g->node[t];
        if (p->op == AD_OP_PARAM || ad_shape_symbolic(&p->sym))
            continue;
        p->own_x = p->x = g->fixed_x + off;
        p->g = g->fixed_g + off;
        off += tensor_shape_elems(&p->sym);
    }
    apply_rows(g, 1);
    for (int32_t t = 0; t < n; ++t) {
        const ad_node_spec_t *s = &spec->node[order[t]];
        ad_node_t *p = &g->node[t];
        if ((p->op == AD_OP_PARAM || p->op == AD_OP_CONST) && s->value != NULL)
            memcpy(p->x, s->value, (size_t)p->n * sizeof *p->x);
    }
    /* Row-dependent block (and the ops' scratch), at one row until the first bind. */
    if ((rc = alloc_rows(g, 1, err)) < 0)
        goto fail;
    if (mark_param_paths(g) < 0)
        goto nomem;

    rc = 0;
    *out = g;
    g = NULL;
    goto out;
nomem:
    rc = err_set(err, ERR_NOMEM, "graph build: out of memory for %d nodes", (int)n);
fail:
    ad_graph_free(g);
out:
    free(spec_hash);
    free(kids);
    free(kid);
    free(indeg);
    free(heap);
    free(order);
    free(pos);
    free(parent_start);
    free(parents);
    return rc;
}

void ad_graph_free(ad_graph_t *g)
{
    if (g == NULL)
        return;
    free(g->zero_nodes);
    free(g->node);
    free(g->hash);
    free(g->live);
    free(g->param_node);
    free(g->param_off);
    free(g->fixed_x);
    free(g->fixed_g);
    free(g->rows_x);
    free(g->rows_g);
    free(g->scratch);
    free(g);
}

void ad_graph_set_pool(ad_graph_t *g, pool_t *pool)
{
    for (int32_t i = 0; i < g->n_node; ++i)
        g->node[i].pool = pool;
}

int ad_graph_bind(ad_graph_t *g, int32_t rows, err_t *err)
{
    if (!g->has_rows)
        return 0;
    if (rows < 1)
        return err_set_field(err, ERR_INVAL, "rows", "rows=%d < 1", (int)rows);
    if (rows == g->rows)
        return 0;
    if (rows > g->cap_rows) {
        int rc = alloc_rows(g, rows, err);
        if (rc < 0)
            return rc;
    } else {
        apply_rows(g, rows);
        g->fwd_rows = 0;
    }
    /* A view held the old row count's elements: it cannot serve the new one. */
    for (int32_t i = 0; i < g->n_node; ++i)
        if (ad_shape_symbolic(&g->node[i].sym))
            g->node[i].x = g->node[i].own_x;
    return 0;
}

/* ---- accessors ----------------------------------------------------------------------------- */

int32_t ad_n_node(const ad_graph_t *g)
{
    return g->n_node;
}

int32_t ad_find(const ad_graph_t *g, const char *id)
{
    if (id == NULL || strlen(id) >= AD_ID_MAX)
        return -1;
    return g->hash[hash_slot(g->hash, g->hash_mask, id, graph_id_at, g)];
}

int32_t ad_output(const ad_graph_t *g)
{
    return g->output;
}

static int in_range(const ad_graph_t *g, int32_t node)
{
    return node >= 0 && node < g->n_node;
}

const char *ad_id(const ad_graph_t *g, int32_t node)
{
    return in_range(g, node) ? g->node[node].id : NULL;
}

int32_t ad_op(const ad_graph_t *g, int32_t node)
{
    return in_range(g, node) ? g->node[node].op : AD_OP_NONE;
}

const tensor_shape_t *ad_shape(const ad_graph_t *g, int32_t node)
{
    return in_range(g, node) ? &g->node[node].shape : NULL;
}

int32_t ad_child(const ad_graph_t *g, int32_t node, int32_t k)
{
    if (!in_range(g, node) || k < 0 || k >= g->node[node].n_child)
        return -1;
    return (int32_t)(g->node[node].child[k] - g->node);
}

double *ad_value(ad_graph_t *g, int32_t node)
{
    return in_range(g, node) ? g->node[node].x : NULL;
}

double *ad_grad(ad_graph_t *g, int32_t node)
{
    return in_range(g, node) ? g->node[node].g : NULL;
}

int ad_bind_input_view(ad_graph_t *g, int32_t node, const double *data, err_t *err)
{
    if (!in_range(g, node) || g->node[node].op != AD_OP_INPUT)
        return err_set(err, ERR_INVAL, "node %d is not an input", (int)node);
    ad_node_t *p = &g->node[node];
    /* Inputs are only ever read by forward and backward, so the const is kept in spirit. */
    p->x = data != NULL ? (double *)(uintptr_t)data : p->own_x;
    return 0;
}

int64_t ad_n_param(const ad_graph_t *g)
{
    return g->n_param;
}

double *ad_params(ad_graph_t *g)
{
    return g->fixed_x;
}

double *ad_param_grads(ad_graph_t *g)
{
    return g->fixed_g;
}

int32_t ad_n_param_node(const ad_graph_t *g)
{
    return g->n_param_node;
}

int32_t ad_param_node(const ad_graph_t *g, int32_t k)
{
    return k >= 0 && k < g->n_param_node ? g->param_node[k] : -1;
}

int64_t ad_param_offset(const ad_graph_t *g, int32_t k)
{
    return k >= 0 && k < g->n_param_node ? g->param_off[k] : -1;
}

/* ---- passes -------------------------------------------------------------------------------- */

/* live[i] = 1 for `node` and every node it depends on; 0 elsewhere. */
static void mark_ancestors(ad_graph_t *g, int32_t node)
{
    memset(g->live, 0, (size_t)g->n_node);
    g->live[node] = 1;
    for (int32_t i = node; i >= 0; --i) {
        const ad_node_t *p = &g->node[i];
        if (g->live[i])
            for (int32_t k = 0; k < p->n_child; ++k)
                g->live[p->child[k] - g->node] = 1;
    }
}

int ad_forward_to(ad_graph_t *g, int32_t node, err_t *err)
{
    if (!in_range(g, node))
        return err_set(err, ERR_INVAL, "forward: node %d not in [0,%d)", (int)node,
                       (int)g->n_node);
    mark_ancestors(g, node);
    for (int32_t i = 0; i <= node; ++i) {
        ad_node_t *p = &g->node[i];
        if (!g->live[i] || p->n_child == 0)
            continue;
        int rc = ad_op_table[p->op].fn(p, AD_PASS_FWD, err);
        if (rc < 0) {
            g->fwd_rows = 0;
            return rc;
        }
    }
    g->fwd_rows = g->rows;
    g->fwd_node = node;
    return 0;
}

int ad_forward(ad_graph_t *g, err_t *err)
{
    for (int32_t i = 0; i < g->n_node; ++i) {
        ad_node_t *p = &g->node[i];
        if (p->n_child == 0)
            continue;
        int rc = ad_op_table[p->op].fn(p, AD_PASS_FWD, err);
        if (rc < 0) {
            g->fwd_rows = 0;
            return rc;
        }
    }
    g->fwd_rows = g->rows;
    g->fwd_node = -1;
    return 0;
}

/* no_grad on every node that depends on no param (on = 1), or on none (on = 0). */
static void set_no_grad(ad_graph_t *g, int on)
{
    if (g->no_grad_on == on)
        return;
    for (int32_t i = 0; i < g->n_node; ++i) {
        g->node[i].no_grad = on ? g->node[i].no_grad_param : 0;
        g->node[i].g_assign = on ? g->node[i].g_assign_ok : 0;
    }
    g->no_grad_on = on;
}

static void zero_grads(ad_graph_t *g)
{
    memset(g->fixed_g, 0, (size_t)(g->n_fixed > 0 ? g->n_fixed : 1) * sizeof *g->fixed_g);
    if (g->rows_g != NULL)
        memset(g->rows_g, 0, (size_t)(g->n_rows_cap > 0 ? g->n_rows_cap : 1) * sizeof *g->rows_g);
}

/* Walk down from `from`, calling backward only for nodes the seed reaches: the others hold zero
 * gradients, and skipping them keeps an unrelated inf (say log(0) elsewhere) from turning
 * 0 * inf into NaN in a real gradient. */
static void run_backward_marked(ad_graph_t *g, int32_t from)
{
    for (int32_t i = from; i >= 0; --i) {
        ad_node_t *p = &g->node[i];
        if (g->live[i] && p->n_child > 0 && !p->no_grad)
            ad_op_table[p->op].fn(p, AD_PASS_BWD, NULL);
    }
}

static void run_backward(ad_graph_t *g, int32_t from)
{
    mark_ancestors(g, from);
    run_backward_marked(g, from);
}

static int check_backward(ad_graph_t *g, int32_t node, err_t *err)
{
    if (!in_range(g, node))
        return err_set(err, ERR_INVAL, "backward: node %d not in [0,%d)", (int)node,
                       (int)g->n_node);
    int ok = g->fwd_rows != 0 && g->fwd_rows == g->rows;
    if (ok && g->fwd_node >= 0) { /* a partial forward must have computed node's ancestors */
        mark_ancestors(g, g->fwd_node);
        ok = g->live[node];
    }
    if (!ok)
        return err_set_field(err, ERR_INVAL, g->node[node].id,
                             "backward from '%s' without a forward pass at the bound rows",
                             g->node[node].id);
    return 0;
}

/* check_backward() for a backward pass seeded with 1: the node must be a scalar. */
static int check_scalar_backward(ad_graph_t *g, int32_t node, err_t *err)
{
    int rc = check_backward(g, node, err);
    if (rc < 0)
        return rc;
    if (g->node[node].n != 1)
        return err_set_field(err, ERR_SHAPE, g->node[node].id,
                             "backward: node '%s' has %lld elements, not a scalar",
                             g->node[node].id, (long long)g->node[node].n);
    return 0;
}

int ad_backward(ad_graph_t *g, int32_t node, err_t *err)
{
    int rc = check_scalar_backward(g, node, err);
    if (rc < 0)
        return rc;
    set_no_grad(g, 0);
    zero_grads(g);
    g->node[node].g[0] = 1.0;
    run_backward(g, node);
    return 0;
}

int ad_backward_params(ad_graph_t *g, int32_t node, err_t *err)
{
    int rc = check_scalar_backward(g, node, err);
    if (rc < 0)
        return rc;
    set_no_grad(g, 1);
    mark_ancestors(g, node);
    for (int32_t k = 0; k < g->n_zero_nodes; ++k) {
        ad_node_t *p = &g->node[g->zero_nodes[k]];
        if (p->g_assign && g->live[p->g_writer])
            continue; /* its one writer runs below and stores the whole gradient */
        memset(p->g, 0, (size_t)p->n * sizeof *p->g);
    }
    g->node[node].g[0] = 1.0;
    run_backward_marked(g, node);
    return 0;
}

int ad_backward_seed(ad_graph_t *g, int32_t node, const double *seed, err_t *err)
{
    int rc = check_backward(g, node, err);
    if (rc < 0)
        return rc;
    set_no_grad(g, 0);
    zero_grads(g);
    memcpy(g->node[node].g, seed, (size_t)g->node[node].n * sizeof *seed);
    run_backward(g, node);
    return 0;
}

int ad_jacobian(ad_graph_t *g, int32_t of, int32_t wrt, double *out, err_t *err)
{
    int rc = check_backward(g, of, err);
    if (rc < 0)
        return rc;
    if (!in_range(g, wrt))
        return err_set(err, ERR_INVAL, "jacobian: node %d not in [0,%d)", (int)wrt,
                       (int)g->n_node);
    const int64_t n_of = g->node[of].n, n_wrt = g->node[wrt].n;
    set_no_grad(g, 0);
    for (int64_t i = 0; i < n_of; ++i) {
        zero_grads(g);
        g->node[of].g[i] = 1.0;
        run_backward(g, of);
        memcpy(out + i * n_wrt, g->node[wrt].g, (size_t)n_wrt * sizeof *out);
    }
    return 0;
}
