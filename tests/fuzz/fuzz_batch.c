/* tests/fuzz/fuzz_batch.c -- {"x": [[...]], "y": [...]} as /train, /loss, /predict and /data
 * receive it, decoded for a few model shapes.
 *
 * Input layout: byte 0 picks the first (n_x, n_y, require_y, max_rows) combination, byte 1 the
 * second, the rest is the JSON body. A third combination is fixed (n_x = 2, n_y = 1).
 *
 * Contracts checked: a failure has a negative code and a message and leaves the batch empty; a
 * success has 1..max_rows rows of exactly n_x finite inputs, y present exactly when the body has
 * a non-null "y", required when require_y, and finite.
 */
#include <math.h>

#include "codec.h"
#include "fuzz_util.h"

typedef struct combo {
    int32_t n_x, n_y;
    int require_y;
    int64_t max_rows;
} combo_t;

static combo_t combo_from(uint8_t b)
{
    combo_t c = {
        .n_x = 1 + (b & 7),
        .n_y = 1 + ((b >> 3) & 3),
        .require_y = (b >> 5) & 1,
        .max_rows = (b >> 6) == 0 ? 0 : (int64_t)(b >> 6) * 2,   /* 0 (no limit), 2, 4, 6 */
    };
    return c;
}

static void decode_one(const cJSON *root, combo_t c)
{
    codec_batch_t b;
    err_t err = {0};
    int rc = codec_batch_decode(root, c.n_x, c.n_y, c.require_y, c.max_rows, &b, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        FUZZ_CHECK(b.x == NULL && b.y == NULL && b.rows == 0, "batch kept on failure");
        return;
    }
    const cJSON *jy = cJSON_GetObjectItemCaseSensitive(root, "y");
    int has_y = jy != NULL && !cJSON_IsNull(jy);
    FUZZ_CHECK(b.rows >= 1, "rows=%d", b.rows);
    FUZZ_CHECK(c.max_rows == 0 || b.rows <= c.max_rows, "rows=%d > max_rows=%lld", b.rows,
               (long long)c.max_rows);
    FUZZ_CHECK(b.n_x == c.n_x && b.n_y == c.n_y, "n_x=%d n_y=%d", b.n_x, b.n_y);
    FUZZ_CHECK(b.x != NULL, "x is NULL");
    FUZZ_CHECK((b.y != NULL) == has_y, "y=%p but the body %s y", (void *)b.y,
               has_y ? "has" : "has no");
    FUZZ_CHECK(!c.require_y || b.y != NULL, "y required but missing");
    for (int64_t i = 0; i < (int64_t)b.rows * b.n_x; ++i)
        FUZZ_CHECK(isfinite(b.x[i]), "x value %lld not finite", (long long)i);
    for (int64_t i = 0; b.y != NULL && i < (int64_t)b.rows * b.n_y; ++i)
        FUZZ_CHECK(isfinite(b.y[i]), "y value %lld not finite", (long long)i);
    codec_batch_free(&b);
    codec_batch_free(&b);   /* zeroed: harmless */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    cJSON *root = NULL;
    err_t err = {0};
    int rc = codec_parse((const char *)data + 2, size - 2, 0, &root, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        return 0;
    }
    decode_one(root, combo_from(data[0]));
    decode_one(root, combo_from(data[1]));
    decode_one(root, (combo_t){.n_x = 2, .n_y = 1, .require_y = 0, .max_rows = 0});
    cJSON_Delete(root);
    return 0;
}
