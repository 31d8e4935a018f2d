/* tests/fuzz/fuzz_params.c -- {"W1": [[...]], ...} as PUT/PATCH /v1/models/{id}/parameters
 * receive it, decoded against fixed small models.
 *
 * Input layout: byte 0 bit 0 picks the model (an mlp with W1 [3,3] and W2 [1,4], or a graph
 * model with params W [2,2], v [2] and b []), bit 1 is require_all; the rest is the JSON body.
 *
 * Contracts checked: all or nothing -- on failure the destination buffer is bit for bit what it
 * was; on success every value written is finite, every tensor not named is untouched, and the
 * result encodes and decodes (require_all) back to the same buffer.
 */
#include <math.h>

#include "codec.h"
#include "fuzz_util.h"
#include "model.h"

static const char *const model_json[2] = {
    "{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": [{\"units\": 3, \"activation\": \"tanh\"}]}",
    "{\"kind\": \"graph\", \"graph\": {\"nodes\": ["
    "{\"id\": \"x\", \"op\": \"input\", \"shape\": [null, 2]},"
    "{\"id\": \"y\", \"op\": \"input\", \"shape\": [null]},"
    "{\"id\": \"W\", \"op\": \"param\", \"shape\": [2, 2]},"
    "{\"id\": \"v\", \"op\": \"param\", \"shape\": [2]},"
    "{\"id\": \"b\", \"op\": \"param\", \"shape\": []},"
    "{\"id\": \"h\", \"op\": \"matmul\", \"inputs\": [\"x\", \"W\"]},"
    "{\"id\": \"hb\", \"op\": \"mul\", \"inputs\": [\"h\", \"b\"]},"
    "{\"id\": \"s\", \"op\": \"sum\", \"inputs\": [\"hb\"]},"
    "{\"id\": \"sv\", \"op\": \"sum\", \"inputs\": [\"v\"]},"
    "{\"id\": \"L\", \"op\": \"add\", \"inputs\": [\"s\", \"sv\"]}],"
    "\"output\": \"L\"}}",
};

static model_t *models[2];

static model_t *make_model(const char *json)
{
    cJSON *root = NULL;
    model_spec_t spec;
    model_t *m = NULL;
    err_t err = {0};
    FUZZ_CHECK(codec_parse(json, strlen(json), 0, &root, &err) == 0, "%s", err.msg);
    FUZZ_CHECK(codec_spec_decode(root, &spec, &err) == 0, "%s", err.msg);
    FUZZ_CHECK(model_spec_resolve(&spec, FUZZ_MAX_PARAMS, &err) == 0, "%s", err.msg);
    FUZZ_CHECK(model_new(&spec, &m, &err) == 0, "%s", err.msg);
    model_spec_free(&spec);
    cJSON_Delete(root);
    return m;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < 2; ++i)
        models[i] = make_model(model_json[i]);
    return 0;
}

/* Which tensors the body names (first occurrence of each key that is a tensor). */
static void named(const cJSON *root, const model_t *m, uint8_t *seen)
{
    for (const cJSON *c = root->child; c != NULL; c = c->next)
        if (c->string != NULL && model_tensor_find(m, c->string) >= 0)
            seen[model_tensor_find(m, c->string)] = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    model_t *m = models[data[0] & 1];
    int require_all = (data[0] >> 1) & 1;
    cJSON *root = NULL;
    err_t err = {0};
    int rc = codec_parse((const char *)data + 1, size - 1, 0, &root, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        return 0;
    }
    int64_t n = model_n_params(m);
    size_t bytes = (size_t)n * sizeof(double);
    double *dst = malloc(bytes), *orig = malloc(bytes);
    FUZZ_CHECK(dst != NULL && orig != NULL, "out of memory");
    for (int64_t i = 0; i < n; ++i)
        dst[i] = orig[i] = 1000.0 + (double)i + 0.125;   /* never a value a body can "keep" */

    rc = codec_params_decode(root, m, require_all, dst, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        FUZZ_CHECK(memcmp(dst, orig, bytes) == 0, "failed decode (%s) wrote into dst", err.msg);
    } else {
        FUZZ_CHECK(cJSON_IsObject(root), "a non-object decoded");
        int32_t nt = model_n_tensors(m);
        uint8_t seen[8] = {0};
        FUZZ_CHECK(nt <= 8, "nt=%d", nt);
        named(root, m, seen);
        for (int32_t k = 0; k < nt; ++k) {
            int32_t rows, cols;
            model_tensor_shape(m, k, &rows, &cols);
            int64_t off = model_tensor_offset(m, k), e = (int64_t)rows * cols;
            FUZZ_CHECK(!require_all || seen[k], "require_all but %s missing",
                       model_tensor_name(m, k));
            for (int64_t i = off; i < off + e; ++i) {
                FUZZ_CHECK(isfinite(dst[i]), "dst[%lld] not finite", (long long)i);
                if (!seen[k])
                    FUZZ_CHECK(dst[i] == orig[i], "%s changed but not in the body",
                               model_tensor_name(m, k));
            }
        }
        /* Encode what was decoded; it must decode (require_all) to the same values. */
        cJSON *enc = codec_params_encode(m, dst);
        FUZZ_CHECK(enc != NULL, "codec_params_encode failed");
        double *back = malloc(bytes);
        FUZZ_CHECK(back != NULL, "out of memory");
        memcpy(back, orig, bytes);
        rc = codec_params_decode(enc, m, 1, back, &err);
        FUZZ_CHECK(rc == 0, "re-decoding the encoding: %s", err.msg);
        FUZZ_CHECK(memcmp(back, dst, bytes) == 0, "encode/decode changed values");
        free(back);
        cJSON_Delete(enc);
    }
    free(dst);
    free(orig);
    cJSON_Delete(root);
    return 0;
}
