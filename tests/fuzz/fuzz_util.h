/* tests/fuzz/fuzz_util.h -- helpers shared by the libFuzzer targets (header only).
 *
 * A target crashes (abort, so libFuzzer saves the input) when lib breaks a documented contract;
 * an input lib rejects with an error is a normal outcome. The bounds below keep one input from
 * allocating more than a few tens of MB: lib itself has no total-memory limit for a graph (only
 * TENSOR_MAX_ELEMS per node and max_params for dense models), so the harness refuses graphs
 * whose leaves are large before building them.
 *
 *     FUZZ_CHECK(b.rows >= 1, "rows=%d", b.rows);      // contract broken: abort with a message
 *     if (!fuzz_graph_small(&spec)) return 0;           // too big to build under the fuzzer
 */
#ifndef ND_FUZZ_UTIL_H
#define ND_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "graph.h"

#define FUZZ_MAX_NODES 64            /* graph nodes per input */
#define FUZZ_MAX_DIM 128             /* any fixed leaf dimension */
#define FUZZ_MAX_LEAF_ELEMS 100000   /* param + const + input elements, all leaves together */
#define FUZZ_MAX_PARAMS 100000       /* max_params for model_spec_resolve */

#define FUZZ_CHECK(cond, ...)                                                                  \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: contract broken: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* Every failure must carry a negative code and a message. */
#define FUZZ_CHECK_ERR(rc, err)                                                                \
    FUZZ_CHECK((rc) < 0 && (err).code == (rc) && (err).msg[0] != '\0',                        \
               "rc=%d code=%d msg=\"%s\"", (rc), (err).code, (err).msg)

/*
 * Bounds every buffer ad_graph_build and a bind of a few rows can allocate: every dimension of
 * a non-leaf node comes from a leaf dimension (matmul, transpose), the bound row count, or adds
 * one per bias node, so with at most FUZZ_MAX_NODES nodes and leaf dimensions of at most
 * FUZZ_MAX_DIM no node exceeds (FUZZ_MAX_DIM + FUZZ_MAX_NODES)^2 elements.
 */
static inline int fuzz_graph_small(const ad_graph_spec_t *g)
{
    if (g->n_node > FUZZ_MAX_NODES)
        return 0;
    int64_t total = 0;
    for (int32_t i = 0; i < g->n_node; ++i) {
        const ad_node_spec_t *n = &g->node[i];
        if (n->op != AD_OP_INPUT && n->op != AD_OP_PARAM && n->op != AD_OP_CONST)
            continue;
        int64_t e = 1;
        for (int32_t k = 0; k < n->shape.n_d && k < TENSOR_MAX_DIM; ++k) {
            int64_t d = n->shape.d[k] == AD_ROWS ? 1 : n->shape.d[k];
            if (d > FUZZ_MAX_DIM)
                return 0;
            e *= d > 0 ? d : 1;
        }
        total += e;
        if (total > FUZZ_MAX_LEAF_ELEMS)
            return 0;
    }
    return 1;
}

/* The input parsed as JSON: 1 with *root set (cJSON_Delete it), or 0 when it is not JSON --
 * after checking that the failure carries a code and a message and leaves *root NULL. */
static inline int fuzz_parse_json(const uint8_t *data, size_t size, cJSON **root)
{
    err_t err = {0};
    int rc = codec_parse((const char *)data, size, 0, root, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        FUZZ_CHECK(*root == NULL, "root set on failure");
        return 0;
    }
    return 1;
}

/* cJSON_PrintUnformatted, or abort on out of memory (which the fuzzer's limits make a bug). */
static inline char *fuzz_print(const cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    FUZZ_CHECK(s != NULL, "cJSON_PrintUnformatted failed");
    return s;
}

/* Small deterministic value stream for filling inputs: mostly small integers (valid class ids
 * and 0/1 labels), sometimes fractions and negatives. */
typedef struct fuzz_rng {
    uint64_t s;
} fuzz_rng_t;

static inline fuzz_rng_t fuzz_rng_from(const uint8_t *data, size_t size)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < size; ++i)
        h = (h ^ data[i]) * 1099511628211ULL;
    fuzz_rng_t r = {h | 1};
    return r;
}

static inline double fuzz_value(fuzz_rng_t *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    uint32_t v = (uint32_t)(r->s >> 32);
    switch (v & 7) {
    case 0:
        return 0.0;
    case 1:
    case 2:
        return 1.0;
    case 3:
        return 2.0;
    case 4:
        return -1.5;
    case 5:
        return (double)(v >> 8) / (double)(1u << 24) * 8.0 - 4.0;
    case 6:
        return 1e3;
    default:
        return 0.5;
    }
}

#endif /* ND_FUZZ_UTIL_H */
