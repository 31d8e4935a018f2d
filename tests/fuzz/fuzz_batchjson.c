/* tests/fuzz/fuzz_batchjson.c -- batchjson_decode, the fast path of POST /batches, against the
 * path it stands in front of: codec_parse, the route's check that only "x" and "y" appear (each
 * once), and codec_batch_decode with y required.
 *
 * Input layout: byte 0 picks n_x (1..4), n_y (1..3), max_rows (0 = none, 2, 4) and max_depth
 * (0 = codec_parse's default, 2, 3, 64); the rest is the JSON body.
 *
 * Contract checked: when the fast path decodes, the slow path succeeds too, with the same row
 * count and the same doubles bit for bit; when it declines, it leaves no output.
 */
#include "batchjson.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const int depths[] = {0, 2, 3, 64};
    uint8_t b = data[0];
    batchjson_opts_t o = {.n_x = 1 + (b & 3), .n_y = 1 + ((b >> 2) & 3) % 3,
                          .max_rows = ((b >> 4) & 3) % 3 * 2, .max_depth = depths[b >> 6]};
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    double *x = NULL, *y = NULL;
    int32_t rows = -1;
    if (!batchjson_decode(text, len, &o, &x, &y, &rows)) {
        FUZZ_CHECK(x == NULL && y == NULL && rows == 0, "declined but rows=%d", rows);
        return 0;
    }
    cJSON *root = NULL;
    err_t err = {0};
    int rc = codec_parse(text, len, o.max_depth, &root, &err);
    FUZZ_CHECK(rc == 0, "fast path decoded, codec_parse: %s", err.msg);
    FUZZ_CHECK(cJSON_IsObject(root), "fast path decoded a non-object");
    for (const cJSON *c = root->child; c != NULL; c = c->next) {
        FUZZ_CHECK(strcmp(c->string, "x") == 0 || strcmp(c->string, "y") == 0,
                   "fast path decoded member \"%s\"", c->string);
        for (const cJSON *d = root->child; d != c; d = d->next)
            FUZZ_CHECK(strcmp(d->string, c->string) != 0, "fast path decoded \"%s\" twice",
                       c->string);
    }
    codec_batch_t s;
    rc = codec_batch_decode(root, o.n_x, o.n_y, 1, o.max_rows, &s, &err);
    FUZZ_CHECK(rc == 0, "fast path decoded, codec_batch_decode: %s", err.msg);
    FUZZ_CHECK(s.rows == rows, "rows %d vs %d", rows, s.rows);
    FUZZ_CHECK(memcmp(x, s.x, (size_t)rows * (size_t)o.n_x * sizeof *x) == 0, "x differs");
    FUZZ_CHECK(s.y != NULL && memcmp(y, s.y, (size_t)rows * (size_t)o.n_y * sizeof *y) == 0,
               "y differs");
    codec_batch_free(&s);
    cJSON_Delete(root);
    free(x);
    free(y);
    return 0;
}
