/* tests/fuzz/fuzz_csv.c -- CSV bodies as POST /v1/models/{id}/data receives them (text/csv).
 *
 * Input layout: byte 0 = n_x (bits 0-2, 0..7), label columns (bits 3-4, 0..3), header (bits 5-6:
 * auto, never, always, auto); byte 1 = max_rows (bits 0-3, 0 = no limit), label rule (bits 4-5:
 * any, 0 or 1, 3 classes, 4 classes); the rest is the CSV text, not NUL-terminated (libFuzzer's
 * buffer is exactly that long, so ASan sees any read past its end).
 *
 * Contracts checked: a failure has a negative code and a message, leaves the batch empty, and
 * when it names a field that is "line N" with N a line of the text; a success has 1..max_rows
 * rows, the requested column counts, finite values, labels within the rule, y exactly when
 * there are label columns, and every value equal bit for bit to strtod() of its field.
 */
#include <math.h>
#include <stdlib.h>

#include "codec.h"
#include "fuzz_util.h"

static int csv_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/*
 * Every value must equal strtod() of its field's text, bit for bit: the decoder's fast path
 * (Clinger) must round exactly like the C library. After a successful decode every line but a
 * skipped header is a row, so the header was skipped exactly when there is one line too many.
 */
static void check_values(const codec_batch_t *b, const char *text, size_t len)
{
    const char *p = text, *end = text + len;
    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    while (end > p && (csv_space(end[-1]) || end[-1] == '\n'))
        --end;
    int64_t lines = 1;
    for (const char *q = p; q < end; ++q)
        lines += *q == '\n';
    FUZZ_CHECK(lines == b->rows || lines == (int64_t)b->rows + 1, "%lld lines for %d rows",
               (long long)lines, b->rows);
    int skip = lines == (int64_t)b->rows + 1;
    int32_t cols = b->n_x + b->n_y;
    for (int64_t line = 0, row = 0; p < end; ++line) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        if (!(skip && line == 0)) {
            const char *f = p;
            for (int32_t c = 0; c < cols; ++c) {
                const char *comma = memchr(f, ',', (size_t)(le - f));
                const char *fs = f, *fe = comma != NULL ? comma : le;
                while (fs < fe && csv_space(*fs))
                    ++fs;
                while (fe > fs && csv_space(fe[-1]))
                    --fe;
                /* A number has no length limit: the field's whole text goes to strtod. */
                size_t n = (size_t)(fe - fs);
                FUZZ_CHECK(n > 0, "row %lld column %d is empty", (long long)row, c);
                char *buf = malloc(n + 1);
                FUZZ_CHECK(buf != NULL, "out of memory for a field of %zu characters", n);
                memcpy(buf, fs, n);
                buf[n] = '\0';
                double want = strtod(buf, NULL);
                double got = c < b->n_x ? b->x[row * b->n_x + c] : b->y[row * b->n_y + c - b->n_x];
                FUZZ_CHECK(memcmp(&want, &got, sizeof want) == 0,
                           "row %lld column %d \"%.60s\": %.17g, strtod gives %.17g",
                           (long long)row, c, buf, got, want);
                free(buf);
                f = comma != NULL ? comma + 1 : le;
            }
            ++row;
        }
        p = nl != NULL ? nl + 1 : end;
    }
}

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
        .label_binary = ((data[1] >> 4) & 3) == 1,
        .label_classes = ((data[1] >> 4) & 3) >= 2 ? ((data[1] >> 4) & 3) + 1 : 0,
    };
    /* Physical lines bound the rows: one row per line at most. */
    int64_t lines = 1;
    for (size_t i = 2; i < size; ++i)
        lines += data[i] == '\n';
    codec_batch_t b;
    err_t err = {0};
    int rc = codec_csv_decode((const char *)data + 2, size - 2, &o, &b, &err);
    if (rc < 0) {
        FUZZ_CHECK_ERR(rc, err);
        FUZZ_CHECK(b.x == NULL && b.y == NULL && b.rows == 0, "batch kept on failure");
        long long at = 0;
        FUZZ_CHECK(err.field[0] == '\0' ||
                       (sscanf(err.field, "line %lld", &at) == 1 && at >= 1 && at <= lines),
                   "field \"%s\" is not a line of the %lld", err.field, (long long)lines);
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
    for (int64_t i = 0; b.y != NULL && i < (int64_t)b.rows * b.n_y; ++i) {
        const double v = b.y[i];
        FUZZ_CHECK(isfinite(v), "y value %lld not finite", (long long)i);
        FUZZ_CHECK(!o.label_binary || v == 0.0 || v == 1.0, "label %g kept, rule 0 or 1", v);
        FUZZ_CHECK(o.label_classes == 0 || (v == floor(v) && v >= 0 && v < o.label_classes),
                   "label %g kept, rule %d classes", v, o.label_classes);
    }
    FUZZ_CHECK(b.rows <= lines, "rows=%d from %lld lines", b.rows, (long long)lines);
    check_values(&b, (const char *)data + 2, size - 2);
    codec_batch_free(&b);
    return 0;
}
