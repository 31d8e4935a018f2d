/* lib/batchjson.h -- a batch body {"x": [[...], ...], "y": [...]} read straight into its
 * float64 arrays, in one pass over the text, without building a JSON tree.
 *
 * This is only a fast path. It reads the plain form of a batch and declines everything else:
 * any syntax error, any number not in RFC 8259's grammar or longer than cJSON reads whole, a
 * key with an escape, a member other than x and y, null, a ragged row, a wrong count, a value
 * that is not finite, a limit. The caller then decodes the same text with codec_parse() and
 * codec_batch_decode(), which give the result or the error. Whenever it does decode, the
 * result is exactly theirs: the same rows and every double bit for bit.
 *
 *     batchjson_opts_t o = {.n_x = 100, .n_y = 1, .max_rows = 1000000, .max_depth = 64};
 *     double *x = NULL, *y = NULL;
 *     int32_t rows = 0;
 *     if (!batchjson_decode(text, len, &o, &x, &y, &rows))
 *         ... the slow path ...
 */
#ifndef ND_BATCHJSON_H
#define ND_BATCHJSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct batchjson_opts {
    int32_t n_x;         /* inputs per row of x, >= 1 */
    int32_t n_y;         /* labels per row: 1 (a number or [v] per row) or more ([...] per row) */
    int64_t max_rows;    /* more rows than this declines; <= 0: no limit but the tensor's */
    int max_depth;       /* codec_parse()'s limit (<= 0: its default); below 3 declines */
} batchjson_opts_t;

/*
 * Decode text[0..len) (need not be NUL-terminated). Returns 1 with *x (rows * n_x) and *y
 * (rows * n_y) new arrays the caller frees with free(), and *rows >= 1; or 0 when it declines,
 * also when memory runs out, with *x and *y NULL and *rows 0.
 */
int batchjson_decode(const char *text, size_t len, const batchjson_opts_t *opts, double **x,
                     double **y, int32_t *rows);

#endif /* ND_BATCHJSON_H */
