/* server/request.c -- reading requests: the JSON body, typed members, splits, inline rows and
 * the limits a request body is held to. */
#include "request.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "app.h"
#include "codec.h"
#include "store.h"

int request_split_from_name(const char *name, int32_t *split, err_t *err)
{
    if (name != NULL && strcmp(name, "train") == 0) {
        *split = STORE_SPLIT_TRAIN;
        return 0;
    }
    if (name != NULL && strcmp(name, "validation") == 0) {
        *split = STORE_SPLIT_VALIDATION;
        return 0;
    }
    return err_set_field(err, ERR_INVAL, "split", "split: unknown split \"%.40s\" (train | "
                         "validation)", name != NULL ? name : "");
}

int request_get_split(const cJSON *obj, int32_t *split, err_t *err)
{
    *split = -1;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "split");
    if (v == NULL || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v))
        return err_set_field(err, ERR_INVAL, "split",
                             "split must be a string (train | validation), got %s",
                             codec_json_type(v));
    return request_split_from_name(cJSON_GetStringValue(v), split, err);
}

int request_body_json(http_req_t *req, int empty_ok, cJSON **out, err_t *err)
{
    *out = NULL;
    size_t len = 0;
    const char *body = http_body(req, &len);
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        ++i;
    if (i == len && empty_ok) {
        *out = cJSON_CreateObject();
        return *out != NULL ? 0 : err_set(err, ERR_NOMEM, "out of memory");
    }
    /* No Content-Type at all is read as JSON (what a bare client sends); a different type, such
     * as curl -d's default form encoding, is refused. */
    if (http_header(req, "Content-Type") != NULL) {
        int rc = http_require_json(req, err);
        if (rc < 0)
            return rc;
    }
    int rc = codec_parse(body, len, app_of(req)->limits.max_depth, out, err);
    if (rc == ERR_JSON)
        request_note_flag(err, "nests deeper", "--max-depth");
    return rc;
}

void request_note_flag(err_t *err, const char *needle, const char *flag)
{
    if (err == NULL || strstr(err->msg, needle) == NULL || strstr(err->msg, flag) != NULL)
        return;
    size_t used = strlen(err->msg);
    snprintf(err->msg + used, sizeof err->msg - used, " (%s)", flag);
}

int request_check_work(const app_limits_t *lim, const model_t *m, int32_t rows,
                       const char *field, err_t *err)
{
    int rc = model_check_work(m, rows, lim->max_work_values, field, err);
    if (rc < 0)
        request_note_flag(err, "more than the limit of", "--max-work-values");
    return rc;
}

int request_check_train_work(const app_limits_t *lim, const model_t *m, int32_t rows,
                             int batched, err_t *err)
{
    int rc = request_check_work(lim, m, rows, "batch_size", err);
    if (rc < 0 && batched) {
        size_t used = strlen(err->msg);
        snprintf(err->msg + used, sizeof err->msg - used, "; a smaller batch_size does not "
                 "lower it: every call evaluates the loss on all stored rows at once");
    }
    return rc;
}

int request_graph_leaf_limit(const ad_graph_spec_t *spec, const char *prefix, int64_t max,
                             err_t *err)
{
    int64_t sum = 0;
    for (int32_t i = 0; i < spec->n_node; ++i) {
        const ad_node_spec_t *n = &spec->node[i];
        if (n->op != AD_OP_PARAM && n->op != AD_OP_CONST && n->op != AD_OP_INPUT)
            continue;
        /* Dimensions are below 2^31, and sum stays <= max < 2^62 before each addition, so
         * nothing here overflows. */
        int64_t e = 1;
        for (int32_t k = 0; k < n->shape.n_d && k < TENSOR_MAX_DIM; ++k) {
            int64_t d = n->shape.d[k] == AD_ROWS ? 1 : n->shape.d[k];
            e = d > 0 && e <= (INT64_MAX / 4) / d ? e * d : INT64_MAX / 4;
        }
        sum += e < INT64_MAX / 4 ? e : INT64_MAX / 4;
        if (sum > max) {
            char field[ERR_FIELD_MAX];
            snprintf(field, sizeof field, "%s.nodes[%d].shape", prefix, (int)i);
            return err_set_field(err, ERR_INVAL, field,
                                 "%s: node '%s' brings the graph's params, consts and inputs "
                                 "to %lld elements, more than --max-params=%lld", field, n->id,
                                 (long long)sum, (long long)max);
        }
    }
    return 0;
}

int request_batch_decode(http_req_t *req, const cJSON *body, int32_t n_x, int32_t n_y,
                         int require_y, codec_batch_t *out, err_t *err)
{
    memset(out, 0, sizeof *out);
    int64_t max = app_of(req)->limits.max_batch_rows;
    const cJSON *x = cJSON_IsObject(body) ? cJSON_GetObjectItemCaseSensitive(body, "x") : NULL;
    if (cJSON_IsArray(x) && cJSON_GetArraySize(x) > max)
        return err_set_field(err, ERR_INVAL, "x",
                             "x has %d rows, more than --max-batch-rows=%" PRId64,
                             cJSON_GetArraySize(x), max);
    return codec_batch_decode(body, n_x, n_y, require_y, max, out, err);
}

/* 1 when s is valid UTF-8 without control characters. */
static int text_ok(const unsigned char *p)
{
    while (*p != '\0') {
        unsigned char c = *p;
        if (c < 0x20 || c == 0x7F)
            return 0;
        if (c < 0x80) {
            ++p;
            continue;
        }
        int n;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1, cp = c & 0x1Fu, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2, cp = c & 0x0Fu, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3, cp = c & 0x07u, min = 0x10000;
        } else {
            return 0;
        }
        for (int k = 1; k <= n; ++k) {
            if ((p[k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += n + 1;
    }
    return 1;
}

int request_get_text(const cJSON *obj, const char *key, size_t size, const char **out,
                     err_t *err)
{
    *out = NULL;
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (j == NULL || cJSON_IsNull(j))
        return 0;
    const char *text = cJSON_GetStringValue(j);
    if (text == NULL)
        return err_set_field(err, ERR_INVAL, key, "%s must be a string, got %s", key,
                             codec_json_type(j));
    size_t n = strlen(text);
    if (n == 0)
        return err_set_field(err, ERR_INVAL, key, "%s must not be empty", key);
    if (n >= size)
        return err_set_field(err, ERR_INVAL, key, "%s is %zu bytes long, at most %zu", key, n,
                             size - 1);
    if (!text_ok((const unsigned char *)text))
        return err_set_field(err, ERR_INVAL, key,
                             "%s must be UTF-8 text without control characters", key);
    *out = text;
    return 0;
}

int request_get_int(const cJSON *obj, const char *key, int required, int64_t lo, int64_t hi,
                    int64_t dflt, int64_t *out, err_t *err)
{
    *out = dflt;
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (j == NULL) {
        if (required)
            return err_set_field(err, ERR_INVAL, key, "%s is required", key);
        return 0;
    }
    if (!cJSON_IsNumber(j))
        return err_set_field(err, ERR_INVAL, key, "%s must be an integer, got %s", key,
                             codec_json_type(j));
    double v = cJSON_GetNumberValue(j);
    if (!isfinite(v) || v != floor(v))
        return err_set_field(err, ERR_INVAL, key, "%s must be an integer", key);
    if (v < (double)lo || v > (double)hi)
        return err_set_field(err, ERR_INVAL, key,
                             "%s=%.17g not in [%" PRId64 ", %" PRId64 "]", key, v, lo, hi);
    *out = (int64_t)v;
    return 0;
}
