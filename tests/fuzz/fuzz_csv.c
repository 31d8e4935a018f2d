/* tests/fuzz/fuzz_csv.c -- CSV bodies as POST /v1/models/{id}/data receives them (text/csv).
 *
 * Input layout: byte 0 = n_x (bits 0-2, 0..7), label columns (bits 3-4, 0..3), header (bits 5-6:
 * auto, never, always, auto); byte 1 = max_rows (bits 0-3, 0 = no limit); the rest is the CSV
 * text, not NUL-terminated (libFuzzer's buffer is exactly that long, so ASan sees any read past
 * its end).
 *
 * Contracts checked: a failure has a negative code and a message and leaves the batch empty; a
 * success has 1..max_rows rows, the requested column counts, finite values, and y exactly when
 * there are label columns.
 */
#include <math.h>

#include "codec.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static const int32_t headers[4] = {-1, 0, 1, -1};
    codec_csv_opts_t o = {
        .n_x = data[0] & 7,
        .label_columns = (data[0] >> 3) & 3,
        .header = headers[(data[0] >> 5) & 3],
        .max_rows = data[1] & 15,
    };
    codec_batch_t b;
    err_t err = {0};
    int rc = codec_csv_decode((const char *)data + 2, size - 2, &o, &b, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        FUZZ_CHECK(b.x == NULL && b.y == NULL && b.rows == 0, "batch kept on failure");
        return 0;
    }
    FUZZ_CHECK(o.n_x + o.label_columns >= 1, "decoded with no columns");
    FUZZ_CHECK(b.rows >= 1, "rows=%d", b.rows);
    FUZZ_CHECK(o.max_rows == 0 || b.rows <= o.max_rows, "rows=%d > max_rows=%lld", b.rows,
               (long long)o.max_rows);
    FUZZ_CHECK(b.n_x == o.n_x && b.n_y == o.label_columns, "n_x=%d n_y=%d", b.n_x, b.n_y);
    FUZZ_CHECK(b.x != NULL, "x is NULL");
    FUZZ_CHECK((b.y != NULL) == (o.label_columns > 0), "y=%p with %d label columns",
               (void *)b.y, o.label_columns);
    for (int64_t i = 0; i < (int64_t)b.rows * b.n_x; ++i)
        FUZZ_CHECK(isfinite(b.x[i]), "x value %lld not finite", (long long)i);
    for (int64_t i = 0; b.y != NULL && i < (int64_t)b.rows * b.n_y; ++i)
        FUZZ_CHECK(isfinite(b.y[i]), "y value %lld not finite", (long long)i);
    /* Physical lines bound the rows: one row per line at most. */
    int64_t lines = 1;
    for (size_t i = 2; i < size; ++i)
        lines += data[i] == '\n';
    FUZZ_CHECK(b.rows <= lines, "rows=%d from %lld lines", b.rows, (long long)lines);
    codec_batch_free(&b);
    return 0;
}
