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
 * The run of digits at p (none read at or past end) appended to *m, which wraps past 19 digits;
 * *count grows by the run's length. Eight bytes at a time while the text allows: a byte is a
 * digit when its high nibble is 3 and adding 6 keeps it 3. A carry or borrow between bytes only
 * runs from a byte to the ones after it, so it cannot touch the digits before the first
 * non-digit, and those are all that is kept.
 */
static const char *digit_run(const char *p, const char *end, uint64_t *m, int64_t *count)
{
    static const uint64_t pow10_u64[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000,
                                         100000000};
    uint64_t acc = *m;
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, sizeof w);
        uint64_t t = ((w & 0xF0F0F0F0F0F0F0F0ULL) |
                      (((w + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) ^
                     0x3333333333333333ULL;
        int n = t == 0 ? 8 : __builtin_ctzll(t) >> 3;
        if (n > 0) {
            /* The n digits as the low places of eight (little-endian: the first is highest). */
            uint64_t v = (w - 0x3030303030303030ULL) << (8 * (8 - n));
            v = v * 10 + (v >> 8);
            v = (((v & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
                 (((v >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
            acc = acc * pow10_u64[n] + v;
            p += n;
            *count += n;
        }
        if (n < 8) {
            *m = acc;
            return p;
        }
    }
    for (; p < end && is_digit(*p); ++p, ++*count)
        acc = acc * 10 + (uint64_t)(*p - '0');
    *m = acc;
    return p;
}

/*
 * An RFC 8259 number, finite, followed by something that ends it (white space , ] }). The
 * digits are gathered while the grammar is checked, and the common case -- at most 19 digits
 * forming m <= 2^53, scaled by 10^e with |e| <= 22 -- is converted on the spot by Clinger's
 * exact method, the same as numparse_decimal(); the rest goes to numparse_decimal() itself.
 */
static int number(cursor_t *c, double *out)
{
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
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
        p = digit_run(p, end, &m, &digits);
    } else {
        return 0;
    }
    if (p < end && *p == '.') {
        if (++p == end || !is_digit(*p))
            return 0;
        int64_t before = digits;
        p = digit_run(p, end, &m, &digits);
        e -= digits - before;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        int eneg = 0;
        int64_t x = 0;
        if (++p < end && (*p == '+' || *p == '-'))
            eneg = *p++ == '-';
        if (p == end || !is_digit(*p))
            return 0;
        for (; p < end && is_digit(*p); ++p)
            if (x < 100000000)   /* far beyond any double's range; no overflow */
                x = x * 10 + (*p - '0');
        e += eneg ? -x : x;
    }
    /* cJSON reads [0-9+-.eE] as one number; "1.5.2" or "0x1" are not numbers for it either,
     * but saying so is the slow path's job. */
    if (p == end || (*p != ',' && *p != ']' && *p != '}' && *p != ' ' && *p != '\n' &&
                     *p != '\r' && *p != '\t'))
        return 0;
    if (p - s > BATCHJSON_NUMBER_MAX)
        return 0;
    if (digits <= 19 && m <= (1ULL << 53) && e >= -22 && e <= 22) {
        double v = e >= 0 ? (double)m * pow10[e] : (double)m / pow10[-e];
        *out = neg ? -v : v;
    } else if (!numparse_decimal(s, (size_t)(p - s), out) || !isfinite(*out)) {
        return 0;
    }
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
