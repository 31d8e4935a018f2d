/* server/jsonstream.c -- JSON answers written while they are sent (see jsonstream.h).
 *
 * The answer is a list of pieces: literal text (the head printed by cJSON, member keys,
 * brackets) and number tensors. Before the answer starts, one pass finds each number's
 * shortest round-trip precision (one byte per number) and so the body's exact length: the
 * answer then carries Content-Length, which HEAD needs and which lets a client notice a body
 * cut short. The reader walks the pieces, turning one tensor element at a time into a short
 * token ("],[" plus a number, printed with one snprintf at the known precision) in a small
 * pending buffer, so the memory a request holds beyond the numbers themselves is one byte per
 * number and a few kilobytes.
 */
#include "jsonstream.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "tensor.h"

#define JSONSTREAM_MAX_KEEP 4

typedef struct piece {
    char *text;                /* literal text (new), or NULL for a tensor */
    size_t len;                /* text length */
    const double *x;           /* tensor values (borrowed) */
    tensor_shape_t shape;      /* tensor shape: n_d 0, 1 or 2 */
    uint8_t *prec;             /* per value: the %.*g precision that round-trips, 0 for null;
                                  found when the length is measured (new) */
} piece_t;

typedef struct keep {
    void *owned;
    void (*free_fn)(void *);
} keep_t;

struct jsonstream {
    piece_t *piece;
    int n_piece, cap_piece;
    int n_members;             /* members written so far: the next one needs a comma */
    keep_t keep[JSONSTREAM_MAX_KEEP];
    int n_keep;
    /* Reading: piece `cur`, `pos` bytes of its text or elements of its tensor already written
     * (for a tensor, elems + 1 once its closing bracket is out). */
    int cur;
    int64_t pos;
    char pending[64];          /* a token that did not fit in the last block */
    size_t pending_len, pending_off;
};

static int add_piece(jsonstream_t *js, piece_t p)
{
    if (js->n_piece == js->cap_piece) {
        int cap = js->cap_piece > 0 ? 2 * js->cap_piece : 8;
        piece_t *grown = realloc(js->piece, (size_t)cap * sizeof *grown);
        if (grown == NULL)
            return ERR_NOMEM;
        js->piece = grown;
        js->cap_piece = cap;
    }
    js->piece[js->n_piece++] = p;
    return 0;
}

/* Append literal text: `prefix` then, when `key` is not NULL, key as a JSON string and ':'. */
static int add_text(jsonstream_t *js, const char *prefix, const char *key)
{
    char *quoted = NULL;
    if (key != NULL) {
        /* cJSON prints the key, so it is escaped exactly as in a tree printed whole. */
        cJSON *s = cJSON_CreateString(key);
        quoted = s != NULL ? cJSON_PrintUnformatted(s) : NULL;
        cJSON_Delete(s);
        if (quoted == NULL)
            return ERR_NOMEM;
    }
    size_t n_prefix = strlen(prefix), n_quoted = quoted != NULL ? strlen(quoted) : 0;
    char *text = malloc(n_prefix + n_quoted + 2);
    if (text == NULL) {
        cJSON_free(quoted);
        return ERR_NOMEM;
    }
    memcpy(text, prefix, n_prefix);
    size_t len = n_prefix;
    if (quoted != NULL) {
        memcpy(text + len, quoted, n_quoted);
        len += n_quoted;
        text[len++] = ':';
    }
    text[len] = '\0';
    cJSON_free(quoted);
    if (add_piece(js, (piece_t){.text = text, .len = len}) < 0) {
        free(text);
        return ERR_NOMEM;
    }
    return 0;
}

/* Start member `key` of the top-level object. */
static int add_member(jsonstream_t *js, const char *key)
{
    int rc = add_text(js, js->n_members > 0 ? "," : "", key);
    if (rc == 0)
        js->n_members++;
    return rc;
}

static int add_tensor(jsonstream_t *js, const tensor_shape_t *shape, const double *x)
{
    assert(shape->n_d >= 0 && shape->n_d <= 2);
    return add_piece(js, (piece_t){.x = x, .shape = *shape});
}

int jsonstream_new(cJSON *head, jsonstream_t **out)
{
    *out = NULL;
    jsonstream_t *js = calloc(1, sizeof *js);
    char *text = head != NULL ? cJSON_PrintUnformatted(head) : NULL;
    int n_members = cJSON_GetArraySize(head);
    cJSON_Delete(head);
    if (js == NULL || text == NULL) {
        free(js);
        cJSON_free(text);
        return ERR_NOMEM;
    }
    /* "{...}" without its closing brace: the streamed members follow, then "}". */
    size_t len = strlen(text);
    assert(len >= 2 && text[0] == '{' && text[len - 1] == '}');
    text[len - 1] = '\0';
    int rc = add_text(js, text, NULL);
    cJSON_free(text);
    if (rc < 0) {
        jsonstream_free(js);
        return rc;
    }
    js->n_members = n_members;
    *out = js;
    return 0;
}

int jsonstream_add_params(jsonstream_t *js, const char *key, const model_t *m,
                          const double *params)
{
    int rc = add_member(js, key);
    for (int32_t k = 0; k < model_n_tensors(m) && rc == 0; ++k) {
        tensor_shape_t shape;
        codec_param_shape(m, k, &shape);
        rc = add_text(js, k == 0 ? "{" : ",", model_tensor_name(m, k));
        if (rc == 0)
            rc = add_tensor(js, &shape, params + model_tensor_offset(m, k));
    }
    if (rc == 0)
        rc = add_text(js, model_n_tensors(m) == 0 ? "{}" : "}", NULL);
    return rc;
}

int jsonstream_add_numbers(jsonstream_t *js, const char *key, const double *x, int64_t n)
{
    assert(n >= 0 && n <= INT32_MAX);
    tensor_shape_t shape = {.n_d = 1, .d = {(int32_t)n, 1}};
    int rc = add_member(js, key);
    return rc == 0 ? add_tensor(js, &shape, x) : rc;
}

int jsonstream_add_item(jsonstream_t *js, const char *key, cJSON *item)
{
    char *text = item != NULL ? cJSON_PrintUnformatted(item) : NULL;
    cJSON_Delete(item);
    int rc = text != NULL ? add_member(js, key) : ERR_NOMEM;
    if (rc == 0)
        rc = add_text(js, text, NULL);
    cJSON_free(text);
    return rc;
}

int jsonstream_keep(jsonstream_t *js, void *owned, void (*free_fn)(void *))
{
    if (js->n_keep == JSONSTREAM_MAX_KEEP) {
        assert(!"jsonstream_keep: raise JSONSTREAM_MAX_KEEP");
        free_fn(owned);
        return ERR_NOMEM;
    }
    js->keep[js->n_keep++] = (keep_t){owned, free_fn};
    return 0;
}

void jsonstream_free(jsonstream_t *js)
{
    if (js == NULL)
        return;
    for (int i = 0; i < js->n_piece; ++i) {
        free(js->piece[i].text);
        free(js->piece[i].prec);
    }
    free(js->piece);
    for (int i = 0; i < js->n_keep; ++i)
        js->keep[i].free_fn(js->keep[i].owned);
    free(js);
}

/* ---- reading ------------------------------------------------------------------------------ */

static void next_piece(jsonstream_t *js)
{
    js->cur++;
    js->pos = 0;
}

/* Put the next token of tensor piece p into js->pending: an opening bracket and the first
 * number, a separator and the next number, or the closing brackets. */
static void tensor_token(jsonstream_t *js, const piece_t *p)
{
    char *o = js->pending;
    size_t len = 0;
    int64_t n = tensor_shape_elems(&p->shape), i = js->pos;
    if (p->shape.n_d >= 1 && i == n) {         /* all numbers out: close */
        const char *close = n == 0 ? "[]" : p->shape.n_d == 2 ? "]]" : "]";
        len = strlen(close);
        memcpy(o, close, len);
        next_piece(js);
    } else {
        if (p->shape.n_d == 1 && i == 0) {
            o[len++] = '[';
        } else if (p->shape.n_d == 2 && i == 0) {
            o[len++] = '[';
            o[len++] = '[';
        } else if (p->shape.n_d == 2 && i % p->shape.d[1] == 0) {
            memcpy(o + len, "],[", 3);
            len += 3;
        } else if (i > 0) {
            o[len++] = ',';
        }
        if (p->prec[i] > 0) {
            len += (size_t)snprintf(o + len, sizeof js->pending - len, "%.*g", p->prec[i],
                                    p->x[i]);
        } else {
            memcpy(o + len, "null", 4);       /* as codec_number: JSON has no NaN or Inf */
            len += 4;
        }
        if (p->shape.n_d == 0)
            next_piece(js);
        else
            js->pos++;
    }
    js->pending_len = len;
    js->pending_off = 0;
}

static ssize_t jsonstream_read(void *ctx, char *buf, size_t max)
{
    jsonstream_t *js = ctx;
    size_t n = 0;
    while (n < max) {
        if (js->pending_off < js->pending_len) {
            size_t k = js->pending_len - js->pending_off;
            if (k > max - n)
                k = max - n;
            memcpy(buf + n, js->pending + js->pending_off, k);
            js->pending_off += k;
            n += k;
            continue;
        }
        if (js->cur == js->n_piece)
            break;
        const piece_t *p = &js->piece[js->cur];
        if (p->text == NULL) {
            tensor_token(js, p);
            continue;
        }
        size_t k = p->len - (size_t)js->pos;
        if (k > max - n)
            k = max - n;
        memcpy(buf + n, p->text + js->pos, k);
        js->pos += (int64_t)k;
        n += k;
        if ((size_t)js->pos == p->len)
            next_piece(js);
    }
    return n > 0 ? (ssize_t)n : HTTP_STREAM_END;
}

static void jsonstream_free_ctx(void *ctx)
{
    jsonstream_free(ctx);
}

/* The printed length of tensor piece p, its brackets and commas included; fills p->prec. */
static int tensor_measure(piece_t *p, uint64_t *len)
{
    int64_t n = tensor_shape_elems(&p->shape);
    p->prec = malloc(n > 0 ? (size_t)n : 1);
    if (p->prec == NULL)
        return ERR_NOMEM;
    uint64_t total = 0;
    for (int64_t i = 0; i < n; ++i) {
        char buf[40];
        if (isfinite(p->x[i])) {
            p->prec[i] = (uint8_t)codec_format_double(p->x[i], buf, sizeof buf);
            total += strlen(buf);
        } else {
            p->prec[i] = 0;
            total += 4;                        /* null */
        }
    }
    if (p->shape.n_d >= 1 && n == 0) {
        total += 2;                            /* [] */
    } else if (p->shape.n_d == 1) {
        total += 2 + (uint64_t)(n - 1);        /* [a,b,c] */
    } else if (p->shape.n_d == 2) {
        uint64_t rows = (uint64_t)p->shape.d[0], cols = (uint64_t)p->shape.d[1];
        total += 4 + 3 * (rows - 1) + rows * (cols - 1);    /* [[a,b],[c,d]] */
    }
    *len = total;
    return 0;
}

int jsonstream_reply(http_req_t *req, int status, jsonstream_t *js, err_t *err)
{
    uint64_t size = 0;
    int rc = add_text(js, "}", NULL);
    for (int i = 0; i < js->n_piece && rc == 0; ++i) {
        piece_t *p = &js->piece[i];
        uint64_t len = p->len;
        if (p->text == NULL)
            rc = tensor_measure(p, &len);
        size += len;
    }
    if (rc < 0 || http_reply_stream_sized(req, status, "application/json; charset=utf-8", size,
                                          jsonstream_read, js, jsonstream_free_ctx) < 0) {
        jsonstream_free(js);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    return 0;
}
