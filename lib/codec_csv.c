/* lib/codec_csv.c -- CSV rows into a batch, decoded as the text arrives (codec_csv_stream_*) or
 * all at once (codec_csv_decode); every error names the 1-based physical line. Part of codec
 * (codec.h), apart from the JSON decoders because it shares none of their helpers. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "numparse.h"

#define CODEC_CSV_FIELD_MAX 128    /* a field text quoted in errors (numbers have no limit) */

static int is_csv_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Trim spaces, tabs and CRs around [*s, *e). */
static void trim(const char **s, const char **e)
{
    while (*s < *e && is_csv_space(**s))
        ++*s;
    while (*e > *s && is_csv_space((*e)[-1]))
        --*e;
}

/* 1 when a line looks like a header: some field is not a decimal number. */
static int csv_is_header(const char *p, const char *end)
{
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *fs = p, *fe = comma != NULL ? comma : end;
        trim(&fs, &fe);
        if (!numparse_is_decimal(fs, (size_t)(fe - fs)))
            return 1;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

/* Parse one field [fs, fe) (trimmed) of line `line`, column `col` (1-based). */
static int csv_number(const char *fs, const char *fe, int64_t line, int64_t col, double *out,
                      err_t *err)
{
    char field[32], buf[CODEC_CSV_FIELD_MAX];
    size_t n = (size_t)(fe - fs);
    /* Any length, as JSON takes it: 0.000...0001e400 is a number, however many zeros. */
    double v = 0.0;
    const int parsed = n > 0 && numparse_decimal(fs, n, &v);
    if (parsed && isfinite(v)) {
        *out = v;
        return 0;
    }
    if (n > 0 && n < sizeof buf) {
        memcpy(buf, fs, n);
        buf[n] = '\0';
    }
    /* Errors only from here on. */
    snprintf(field, sizeof field, "line %lld", (long long)line);
    if (n == 0)
        return err_set_field(err, ERR_INVAL, field, "line %lld: column %lld is empty",
                             (long long)line, (long long)col);
    if (n >= sizeof buf)
        return err_set_field(err, ERR_INVAL, field,
                             "line %lld: column %lld is not a %snumber (%zu characters long)",
                             (long long)line, (long long)col, parsed ? "finite " : "", n);
    /* Name overflow, nan and inf apart from plain garbage. */
    char *end = NULL;
    v = strtod(buf, &end);
    if (*end == '\0' && !isfinite(v))
        return err_set_field(err, ERR_INVAL, field,
                             "line %lld: column %lld (\"%.40s\") is not a finite number",
                             (long long)line, (long long)col, buf);
    return err_set_field(err, ERR_INVAL, field,
                         "line %lld: column %lld (\"%.40s\") is not a number", (long long)line,
                         (long long)col, buf);
}

/*
 * CSV arrives in chunks (a request body as it is received): complete lines are parsed in place
 * straight into the growing row arrays, and only a line cut by a chunk boundary is copied, so
 * the text is never held whole. The rules are those of a whole-body parse: a blank line is an
 * error only when a non-blank line follows it (blank trailing lines are not rows), and the size
 * check on the whole body still comes before any line's error (see codec_csv_stream_finish).
 */
struct codec_csv_stream {
    codec_csv_opts_t o;
    int64_t cols;
    unsigned char head[3];          /* the first bytes, until we know whether they are a BOM */
    int n_head, started;
    char *carry;                    /* a line split across chunks */
    size_t n_carry, cap_carry;
    int64_t line;                   /* lines seen so far (complete or final) */
    uint64_t off;                   /* bytes seen after the BOM */
    int64_t last_line;              /* line number of the last non-blank line, 0 if none */
    uint64_t last_end;              /* offset just past its last non-blank byte */
    int64_t blank;                  /* first blank line not yet followed by a non-blank one */
    int64_t rows, cap_rows;
    double *x, *y;
    int rc;                         /* first line error, sticky */
    err_t err;
};

int codec_csv_stream_new(const codec_csv_opts_t *opts, codec_csv_stream_t **out, err_t *err)
{
    *out = NULL;
    int64_t n_x = opts->n_x, n_l = opts->label_columns;
    if (n_x < 0 || n_l < 0 || n_x + n_l < 1)
        return err_set(err, ERR_INVAL, "CSV: %lld inputs and %lld label columns", (long long)n_x,
                       (long long)n_l);
    codec_csv_stream_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for a CSV batch");
    s->o = *opts;
    s->cols = n_x + n_l;
    *out = s;
    return 0;
}

void codec_csv_stream_free(codec_csv_stream_t *s)
{
    if (s == NULL)
        return;
    free(s->carry);
    free(s->x);
    free(s->y);
    free(s);
}

/* Room for one more row. Doubling through realloc: glibc moves large blocks with mremap, so
 * growth neither copies nor briefly doubles the footprint. */
static int csv_grow(codec_csv_stream_t *s)
{
    if (s->rows < s->cap_rows)
        return 0;
    /* The most rows one batch can hold; a body with more fails finish's size check too. */
    int64_t widest = s->o.n_x > s->o.label_columns ? s->o.n_x : s->o.label_columns;
    int64_t most = widest > 0 ? TENSOR_MAX_ELEMS / widest : INT32_MAX;
    if (most > INT32_MAX)
        most = INT32_MAX;
    if (s->o.max_rows > 0 && most > s->o.max_rows)
        most = s->o.max_rows;
    if (s->rows >= most)
        return ERR_RANGE;
    int64_t cap = s->cap_rows > 0 ? s->cap_rows * 2 : 1024, nx, ny;
    if (cap > most)
        cap = most;
    tensor_checked_elems(cap, s->o.n_x, "x", &nx, NULL);
    tensor_checked_elems(cap, s->o.label_columns, "y", &ny, NULL);
    double *x = realloc(s->x, (size_t)(nx > 0 ? nx : 1) * sizeof *x);
    if (x == NULL)
        return ERR_NOMEM;
    s->x = x;
    tensor_advise_huge_pages(x, (size_t)nx * sizeof *x);   /* filled once, start to end */
    if (s->o.label_columns > 0) {
        double *y = realloc(s->y, (size_t)(ny > 0 ? ny : 1) * sizeof *y);
        if (y == NULL)
            return ERR_NOMEM;
        s->y = y;
    }
    s->cap_rows = cap;
    return 0;
}

static int csv_line_error(codec_csv_stream_t *s, int64_t line, const char *fmt, long long a,
                          long long b)
{
    char field[32];
    snprintf(field, sizeof field, "line %lld", (long long)line);
    return s->rc = err_set_field(&s->err, ERR_INVAL, field, fmt, (long long)line, a, b);
}

/* A row's labels against the model's rule, so a bad label is named by its line and column
 * like every other CSV error (a JSON batch names it y[i] instead). */
static int csv_labels_check(codec_csv_stream_t *s, int64_t line, const double *yr)
{
    const int64_t k = s->o.label_classes;
    for (int64_t j = 0; j < s->o.label_columns; ++j) {
        const double v = yr[j];
        char rule[64] = "";
        if (s->o.label_binary && v != 0.0 && v != 1.0)
            snprintf(rule, sizeof rule, "labels must be 0 or 1");
        else if (k > 0 && (v != floor(v) || v < 0 || v >= (double)k))
            snprintf(rule, sizeof rule, "labels must be class indices 0..%lld", (long long)k - 1);
        if (rule[0] != '\0') {
            char field[32];
            snprintf(field, sizeof field, "line %lld", (long long)line);
            return s->rc = err_set_field(&s->err, ERR_INVAL, field,
                                         "line %lld: column %lld (label) = %g: %s",
                                         (long long)line, (long long)(s->o.n_x + j + 1), v, rule);
        }
    }
    return 0;
}

/* One physical line [ls, le) without its '\n'. */
static void csv_line(codec_csv_stream_t *s, const char *ls, const char *le)
{
    int64_t line = ++s->line;
    uint64_t start = s->off;
    s->off += (uint64_t)(le - ls) + 1;
    const char *ts = ls, *te = le;
    trim(&ts, &te);
    if (ts == te) {
        if (line == 1 && (s->o.header == 1 || s->o.header < 0))
            return;                  /* a blank first line is a header: it has no number */
        if (s->blank == 0)
            s->blank = line;
        return;
    }
    s->last_line = line;
    s->last_end = start + (uint64_t)(te - ls);
    if (s->rc != 0)
        return;
    if (s->blank != 0) {
        csv_line_error(s, s->blank, "line %lld: is empty, expected %lld fields", s->cols, 0);
        return;
    }
    if (line == 1 && (s->o.header == 1 || (s->o.header < 0 && csv_is_header(ls, le))))
        return;
    int64_t n_x = s->o.n_x, cols = s->cols;
    if (s->o.max_rows > 0 && s->rows >= s->o.max_rows) {
        csv_line_error(s, line, "line %lld: more than the limit of %lld rows", s->o.max_rows, 0);
        return;
    }
    int rc = csv_grow(s);
    if (rc < 0) {
        /* ERR_RANGE: the body is too large for one batch; finish says so. */
        s->rc = rc;
        if (rc == ERR_NOMEM)
            err_set(&s->err, ERR_NOMEM, "out of memory for a CSV batch");
        return;
    }
    double *xr = s->x + s->rows * n_x;
    double *yr = s->y != NULL ? s->y + s->rows * s->o.label_columns : NULL;
    int64_t nf = 0;
    for (const char *f = ls;; ++nf) {
        /* The common field, a plain number up to its comma, is read in one pass; anything
         * else (spaces, quotes, long digit strings, errors) takes the general path below. */
        double v;
        size_t k;
        if (nf < cols && rc == 0 && (k = numparse_prefix(f, (size_t)(le - f), &v)) > 0 &&
            (f + k == le || f[k] == ',')) {
            if (nf < n_x)
                xr[nf] = v;
            else
                yr[nf - n_x] = v;
            if (f + k == le)
                break;
            f += k + 1;
            continue;
        }
        const char *comma = memchr(f, ',', (size_t)(le - f));
        const char *fs = f, *fe = comma != NULL ? comma : le;
        if (nf < cols && rc == 0) {
            trim(&fs, &fe);
            v = 0.0;
            rc = csv_number(fs, fe, line, nf + 1, &v, &s->err);
            if (nf < n_x)
                xr[nf] = v;
            else
                yr[nf - n_x] = v;
        }
        if (comma == NULL)
            break;
        f = comma + 1;
    }
    /* A wrong field count is the clearer message, so it wins over a bad value. */
    if (nf + 1 != cols)
        rc = csv_line_error(s, line, "line %lld: has %lld fields, expected %lld", nf + 1, cols);
    else if (rc == 0)
        rc = csv_labels_check(s, line, yr);
    s->rc = rc;
    s->rows++;
}

/* Bytes after the BOM check: split into lines, carrying a cut line to the next chunk. */
static int csv_lines(codec_csv_stream_t *s, const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl != NULL ? nl : end;
        if (nl == NULL || s->n_carry > 0) {
            size_t k = (size_t)(stop - p);
            if (s->n_carry + k > s->cap_carry) {
                size_t cap = s->cap_carry != 0 ? s->cap_carry : 256;
                while (cap < s->n_carry + k)
                    cap *= 2;
                char *c = realloc(s->carry, cap);
                if (c == NULL)
                    return ERR_NOMEM;
                s->carry = c;
                s->cap_carry = cap;
            }
            memcpy(s->carry + s->n_carry, p, k);
            s->n_carry += k;
            if (nl == NULL)
                return 0;
            csv_line(s, s->carry, s->carry + s->n_carry);
            s->n_carry = 0;
        } else {
            csv_line(s, p, nl);
        }
        if (s->rc == ERR_NOMEM)
            return ERR_NOMEM;
        p = nl + 1;
    }
    return 0;
}

int codec_csv_stream_feed(codec_csv_stream_t *s, const char *data, size_t n, err_t *err)
{
    if (!s->started) {
        while (n > 0 && s->n_head < 3) {
            s->head[s->n_head++] = (unsigned char)*data++;
            --n;
        }
        if (s->n_head < 3)
            return 0;
        s->started = 1;
        if (memcmp(s->head, "\xEF\xBB\xBF", 3) != 0 && csv_lines(s, (const char *)s->head, 3) < 0)
            return err_set(err, ERR_NOMEM, "out of memory for a CSV batch");
    }
    if (csv_lines(s, data, n) < 0)
        return err_set(err, ERR_NOMEM, "out of memory for a CSV batch");
    return 0;
}

int codec_csv_stream_finish(codec_csv_stream_t *s, codec_batch_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!s->started) {
        s->started = 1;
        if (csv_lines(s, (const char *)s->head, (size_t)s->n_head) < 0)
            return err_set(err, ERR_NOMEM, "out of memory for a CSV batch");
    }
    if (s->n_carry > 0) {
        /* The last line has no '\n': csv_line() counts one byte too many, harmlessly. */
        csv_line(s, s->carry, s->carry + s->n_carry);
        s->n_carry = 0;
    }
    if (s->rc == ERR_NOMEM)
        return err_set(err, ERR_NOMEM, "out of memory for a CSV batch");
    if (s->last_line == 0)
        return err_set(err, ERR_INVAL, "CSV body is empty");
    /* What a whole-body parse checks first: one row per line at most, and a row takes at least
     * 2*cols bytes with its separator, so this many rows must fit in one batch. */
    int64_t cap = s->last_line, cols = s->cols, nx, ny;
    if ((int64_t)s->last_end / (2 * cols) + 1 < cap)
        cap = (int64_t)s->last_end / (2 * cols) + 1;
    if (s->o.max_rows > 0 && s->o.max_rows < cap)
        cap = s->o.max_rows;
    if (cap > INT32_MAX || tensor_checked_elems(cap, s->o.n_x, "x", &nx, NULL) < 0 ||
        tensor_checked_elems(cap, s->o.label_columns, "y", &ny, NULL) < 0 || s->rc == ERR_RANGE)
        return err_set(err, ERR_INVAL, "CSV: too many values");
    if (s->rc < 0) {
        *err = s->err;
        return s->rc;
    }
    if (s->rows == 0)
        return err_set(err, ERR_INVAL, "CSV has no data rows");
    out->x = s->x;
    out->y = s->o.label_columns > 0 ? s->y : NULL;
    if (out->y == NULL)
        free(s->y);
    s->x = s->y = NULL;
    out->rows = (int32_t)s->rows;
    out->n_x = s->o.n_x;
    out->n_y = s->o.label_columns;
    return 0;
}

int codec_csv_decode(const char *text, size_t len, const codec_csv_opts_t *opts,
                     codec_batch_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    codec_csv_stream_t *s = NULL;
    int rc = codec_csv_stream_new(opts, &s, err);
    if (rc == 0 && text != NULL && len > 0)
        rc = codec_csv_stream_feed(s, text, len, err);
    if (rc == 0)
        rc = codec_csv_stream_finish(s, out, err);
    codec_csv_stream_free(s);
    return rc;
}
