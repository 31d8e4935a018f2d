/* lib/batchjson.c -- the batch body's plain form, decoded in one pass; anything else declines. */
#include "batchjson.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "numparse.h"
#include "tensor.h"

/* cJSON 1.7 copies a number into a 64-byte buffer before strtod: a longer number is cut short
 * there and fails to parse, so only numbers that fit are read here. */
#define BATCHJSON_NUMBER_MAX 63
#define BATCHJSON_DEPTH 3          /* object, x or y, a row */

typedef struct cursor {
    const char *p, *end;
} cursor_t;

/* One growing row-major array of `width` doubles per row. */
typedef struct rows {
    double *v;
    int64_t n, cap, width;
} rows_t;

/* Only what codec_parse() accepts between tokens: it refuses other control characters. */
static void skip_space(cursor_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        ++c->p;
}

static int take(cursor_t *c, char ch)
{
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        ++c->p;
        return 1;
    }
    return 0;
}

static int is_digit(char ch)
{
    return (unsigned)(ch - '0') < 10u;
}

/*
 * An RFC 8259 number, finite, followed by something that ends it (white space , ] }). The
 * digits are gathered while the grammar is checked, and the common case -- at most 19 digits
 * forming m <= 2^53, scaled by 10^e with |e| <= 22 -- is converted on the spot by Clinger's
 * exact method, the same as numparse_decimal(); the rest goes to numparse_decimal() itself.
 */
static int number(cursor_t *c, double *out)
{
    skip_space(c);
    const char *s = c->p, *p = s, *end = c->end;
    uint64_t m = 0;
    int64_t e = 0, digits = 0;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        ++p;
    }
    if (p < end && *p == '0') {
        ++p;
        digits = 1;
    } else if (p < end && *p >= '1' && *p <= '9') {
        p = numparse_digits(p, end, &m, &digits);
    } else {
        return 0;
    }
    if (p < end && *p == '.') {
        if (++p == end || !is_digit(*p))
            return 0;
        int64_t before = digits;
        p = numparse_digits(p, end, &m, &digits);
        e -= digits - before;
    }
    if ((p = numparse_exponent(p, end, &e)) == NULL)
        return 0;
    /* cJSON reads [0-9+-.eE] as one number; "1.5.2" or "0x1" are not numbers for it either,
     * but saying so is the slow path's job. */
    if (p == end || (*p != ',' && *p != ']' && *p != '}' && *p != ' ' && *p != '\n' &&
                     *p != '\r' && *p != '\t'))
        return 0;
    if (p - s > BATCHJSON_NUMBER_MAX)
        return 0;
    if (!numparse_exact(m, digits, e, neg, out) &&
        (!numparse_decimal(s, (size_t)(p - s), out) || !isfinite(*out)))
        return 0;
    c->p = p;
    return 1;
}

/* Room for one more row. realloc moves large blocks with mremap, without copying them. */
static int grow(rows_t *r, int64_t max_rows)
{
    if (r->n < r->cap)
        return 1;
    if (r->n >= max_rows)
        return 0;
    int64_t cap = r->cap > 0 ? r->cap * 2 : 64;
    if (cap > max_rows)
        cap = max_rows;
    double *v = realloc(r->v, (size_t)(cap * r->width) * sizeof *v);
    if (v == NULL)
        return 0;
    r->v = v;
    r->cap = cap;
    return 1;
}

/* [v, v, ...] with exactly r->width numbers, appended as a row. */
static int row(cursor_t *c, rows_t *r, int64_t max_rows)
{
    if (!take(c, '[') || !grow(r, max_rows))
        return 0;
    double *dst = r->v + r->n * r->width;
    for (int64_t j = 0; j < r->width; ++j)
        if ((j > 0 && !take(c, ',')) || !number(c, &dst[j]))
            return 0;
    if (!take(c, ']'))
        return 0;
    ++r->n;
    return 1;
}

/* [row, row, ...] with at least one row; bare numbers as rows when `bare` (y with one label). */
static int row_list(cursor_t *c, rows_t *r, int bare, int64_t max_rows)
{
    if (!take(c, '['))
        return 0;
    do {
        skip_space(c);
        if (bare && c->p < c->end && *c->p != '[') {
            if (!grow(r, max_rows) || !number(c, &r->v[r->n]))
                return 0;
            ++r->n;
        } else if (!row(c, r, max_rows)) {
            return 0;
        }
    } while (take(c, ','));
    return take(c, ']');
}

/* The array shrunk to exactly n rows (at least one element, as codec_batch_decode allocates). */
static double *fit(rows_t *r)
{
    int64_t n = r->n * r->width;
    double *v = realloc(r->v, (size_t)(n > 0 ? n : 1) * sizeof *v);
    if (v == NULL)
        v = r->v;                /* shrinking failed: the larger block holds the rows */
    r->v = NULL;
    return v;
}

int batchjson_decode(const char *text, size_t len, const batchjson_opts_t *opts, double **x,
                     double **y, int32_t *n_rows)
{
    *x = *y = NULL;
    *n_rows = 0;
    if (text == NULL || opts->n_x < 1 || opts->n_y < 1 ||
        (opts->max_depth > 0 && opts->max_depth < BATCHJSON_DEPTH))
        return 0;
    /* More rows than this fail codec_batch_decode's checks, so they are the slow path's. */
    int64_t max_rows = opts->max_rows > 0 && opts->max_rows < INT32_MAX ? opts->max_rows
                                                                         : INT32_MAX;
    if (TENSOR_MAX_ELEMS / opts->n_x < max_rows)
        max_rows = TENSOR_MAX_ELEMS / opts->n_x;
    if (TENSOR_MAX_ELEMS / opts->n_y < max_rows)
        max_rows = TENSOR_MAX_ELEMS / opts->n_y;
    cursor_t c = {text, text + len};
    rows_t rx = {.width = opts->n_x}, ry = {.width = opts->n_y};
    int ok = take(&c, '{');
    while (ok) {
        /* Only "x" and "y", each once, keys without escapes. */
        skip_space(&c);
        if (c.end - c.p < 3 || c.p[0] != '"' || (c.p[1] != 'x' && c.p[1] != 'y') ||
            c.p[2] != '"') {
            ok = 0;
            break;
        }
        rows_t *r = c.p[1] == 'x' ? &rx : &ry;
        c.p += 3;
        ok = r->v == NULL && take(&c, ':') &&
             row_list(&c, r, r == &ry && opts->n_y == 1, max_rows);
        if (ok && !take(&c, ','))
            break;
    }
    ok = ok && take(&c, '}');
    skip_space(&c);
    ok = ok && c.p == c.end && rx.n > 0 && rx.n == ry.n;
    if (ok) {
        *x = fit(&rx);
        *y = fit(&ry);
        *n_rows = (int32_t)rx.n;
    }
    free(rx.v);
    free(ry.v);
    return ok;
}
