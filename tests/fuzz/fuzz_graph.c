/* tests/fuzz/fuzz_graph.c -- a graph as POST /v1/graphs/eval receives it: parse, decode, build
 * with a node limit, bind 2, 1 and 3 rows (shrinking, then growing the row buffers), run forward,
 * and backward when the output is a scalar.
 *
 * Contracts checked: every failure has a negative code and a message; a decoded graph encodes
 * and decodes back to the same encoding; node lookup and child links are consistent; forward
 * and backward (from a scalar, or with a seed for a larger output) touch only their own buffers
 * (ASan); a Jacobian of a small output runs.
 */
#include "codec.h"
#include "fuzz_util.h"
#include "graph.h"

static void check_round_trip(const ad_graph_spec_t *spec)
{
    cJSON *enc = codec_graph_encode(spec);
    FUZZ_CHECK(enc != NULL, "codec_graph_encode failed");
    char *text = fuzz_print(enc);
    ad_graph_spec_t again;
    err_t err = {0};
    int rc = codec_graph_decode(enc, "graph", &again, &err);
    FUZZ_CHECK(rc == 0, "re-decoding %s: %s", text, err.msg);
    cJSON *enc2 = codec_graph_encode(&again);
    FUZZ_CHECK(enc2 != NULL, "codec_graph_encode (second) failed");
    char *text2 = fuzz_print(enc2);
    FUZZ_CHECK(strcmp(text, text2) == 0, "round trip differs:\n%s\n%s", text, text2);
    free(text2);
    cJSON_Delete(enc2);
    ad_graph_spec_free(&again);
    free(text);
    cJSON_Delete(enc);
}

static void check_structure(const ad_graph_t *g)
{
    int32_t n = ad_n_node(g);
    for (int32_t i = 0; i < n; ++i) {
        FUZZ_CHECK(ad_find(g, ad_id(g, i)) == i, "ad_find(ad_id(%d))", i);
        int32_t arity = ad_op_arity(ad_op(g, i));
        for (int32_t k = 0; k < arity; ++k) {
            int32_t c = ad_child(g, i, k);
            FUZZ_CHECK(c >= 0 && c < i, "node %d child %d = %d: not topological", i, k, c);
        }
    }
    FUZZ_CHECK(ad_output(g) >= 0 && ad_output(g) < n, "output %d", ad_output(g));
}

static void run_rows(ad_graph_t *g, int32_t rows, fuzz_rng_t *r)
{
    err_t err = {0};
    int rc = ad_graph_bind(g, rows, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        return;
    }
    int32_t n = ad_n_node(g);
    for (int32_t i = 0; i < n; ++i) {
        if (ad_op(g, i) != AD_OP_INPUT)
            continue;
        double *x = ad_value(g, i);
        int64_t e = tensor_shape_elems(ad_shape(g, i));
        for (int64_t k = 0; k < e; ++k)
            x[k] = fuzz_value(r);
    }
    int32_t out = ad_output(g);
    if (rows == 2) {
        /* A partial forward first: backward must refuse nodes it did not compute. */
        rc = ad_forward_to(g, out, &err);
        if (rc < 0) {
            FUZZ_CHECK_ERR(rc, err);
            return;
        }
    }
    rc = ad_forward(g, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        rc = ad_backward(g, out, &err);
        FUZZ_CHECK(rc < 0, "backward after a failed forward succeeded");
        return;
    }
    int64_t n_out = tensor_shape_elems(ad_shape(g, out));
    if (n_out == 1) {
        rc = ad_backward(g, out, &err);
        FUZZ_CHECK(rc == 0, "backward of a scalar output: %s", err.msg);
    } else {
        rc = ad_backward(g, out, &err);
        FUZZ_CHECK(rc == ERR_SHAPE, "backward of a %lld-element output: rc=%d",
                   (long long)n_out, rc);
        double *seed = malloc((size_t)n_out * sizeof *seed);
        FUZZ_CHECK(seed != NULL, "out of memory");
        for (int64_t i = 0; i < n_out; ++i)
            seed[i] = fuzz_value(r);
        rc = ad_backward_seed(g, out, seed, &err);
        FUZZ_CHECK(rc == 0, "backward with a seed: %s", err.msg);
        free(seed);
    }
    /* A Jacobian of a small output wrt the first param (or node 0). */
    int32_t wrt = ad_n_param_node(g) > 0 ? ad_param_node(g, 0) : 0;
    int64_t n_wrt = tensor_shape_elems(ad_shape(g, wrt));
    if (n_out <= 8 && n_wrt <= 4096) {
        double *jac = malloc((size_t)(n_out * n_wrt) * sizeof *jac);
        FUZZ_CHECK(jac != NULL, "out of memory");
        rc = ad_jacobian(g, out, wrt, jac, &err);
        FUZZ_CHECK(rc == 0, "jacobian: %s", err.msg);
        free(jac);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *root = NULL;
    err_t err = {0};
    if (!fuzz_parse_json(data, size, &root))
        return 0;
    ad_graph_spec_t spec;
    int rc = codec_graph_decode(root, "graph", &spec, &err);
    cJSON_Delete(root);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        FUZZ_CHECK(spec.node == NULL && spec.n_node == 0, "spec kept on failure");
        return 0;
    }
    check_round_trip(&spec);
    if (!fuzz_graph_small(&spec)) {
        /* Still check the node limit without building anything large. */
        if (spec.n_node > FUZZ_MAX_NODES) {
            ad_graph_t *g = NULL;
            rc = ad_graph_build(&spec, FUZZ_MAX_NODES, &g, &err);
            FUZZ_CHECK(rc == ERR_INVAL && g == NULL, "node limit: rc=%d", rc);
        }
        ad_graph_spec_free(&spec);
        return 0;
    }
    ad_graph_t *g = NULL;
    rc = ad_graph_build(&spec, FUZZ_MAX_NODES, &g, &err);
    ad_graph_spec_free(&spec);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        FUZZ_CHECK(g == NULL, "graph set on failure");
        return 0;
    }
    check_structure(g);
    fuzz_rng_t r = fuzz_rng_from(data, size);
    run_rows(g, 2, &r);
    run_rows(g, 1, &r);   /* fewer rows: no allocation */
    run_rows(g, 3, &r);   /* more rows: the row buffers grow */
    ad_graph_free(g);
    return 0;
}
