/* lib/codec.c -- JSON <-> lib types; every check of untrusted input, with a field path in each
 * error. With codec_csv.c (CSV rows), the only lib files that include cJSON.h (through codec.h). */
#include "codec.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"
#include "numparse.h"


/* ---------------------------------------------------------------------------------------------
 * Small helpers: JSON types, numbers, strings, field paths.
 */

const char *codec_json_type(const cJSON *j)
{
    if (j == NULL)
        return "nothing";
    switch (j->type & 0xFF) {
    case cJSON_False:
    case cJSON_True:
        return "a boolean";
    case cJSON_NULL:
        return "null";
    case cJSON_Number:
    case cJSON_Raw:
        return "a number";
    case cJSON_String:
        return "a string";
    case cJSON_Array:
        return "an array";
    case cJSON_Object:
        return "an object";
    default:
        return "an invalid value";
    }
}

/* 1 when j is a number: a parsed JSON number, or a raw item made by codec_number() (our encoders
 * emit raw numbers so they print exactly; decoding an encoded tree in memory must still work). */
static int json_number(const cJSON *j, double *v)
{
    if (cJSON_IsNumber(j)) {
        *v = j->valuedouble;
        return 1;
    }
    if (cJSON_IsRaw(j) && j->valuestring != NULL && j->valuestring[0] != '\0') {
        char *end = NULL;
        double d = strtod(j->valuestring, &end);
        if (*end == '\0') {
            *v = d;
            return 1;
        }
    }
    return 0;
}

/* A member of an object, or NULL when it is absent or null (null means "use the default"). */
const cJSON *codec__member(const cJSON *obj, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(j) ? NULL : j;
}

/* Field paths live in char[CODEC_PATH_MAX] buffers; a longer path is cut (err_t keeps only
 * ERR_FIELD_MAX bytes of it anyway). Appends s at dst + used; returns the new length. */
static size_t path_append(char *dst, size_t used, const char *s)
{
    size_t n = strlen(s);
    if (n > CODEC_PATH_MAX - 1 - used)
        n = CODEC_PATH_MAX - 1 - used;
    memmove(dst + used, s, n);
    dst[used + n] = '\0';
    return used + n;
}

/* dst = "<prefix>.<key>", or "<key>" when prefix is empty. dst may not alias key. */
void codec__path_key(char *dst, const char *prefix, const char *key)
{
    size_t used = 0;
    if (prefix != NULL && prefix[0] != '\0')
        used = path_append(dst, path_append(dst, 0, prefix), ".");
    path_append(dst, used, key);
}

/* dst = "<prefix>[i]". */
void codec__path_index(char *dst, const char *prefix, int64_t i)
{
    char idx[32];
    snprintf(idx, sizeof idx, "[%lld]", (long long)i);
    path_append(dst, path_append(dst, 0, prefix), idx);
}

int codec__get_finite(const cJSON *j, const char *path, double *out, err_t *err)
{
    double v;
    if (!json_number(j, &v))
        return err_set_field(err, ERR_INVAL, path, "%s must be a number, got %s", path,
                             codec_json_type(j));
    if (!isfinite(v))
        return err_set_field(err, ERR_INVAL, path, "%s must be a finite number", path);
    *out = v;
    return 0;
}

int codec__get_int(const cJSON *j, const char *path, int64_t lo, int64_t hi, int64_t *out,
                   err_t *err)
{
    double v;
    if (!json_number(j, &v))
        return err_set_field(err, ERR_INVAL, path, "%s must be an integer, got %s", path,
                             codec_json_type(j));
    if (!isfinite(v))
        return err_set_field(err, ERR_INVAL, path, "%s must be a finite integer", path);
    if (v != floor(v))
        return err_set_field(err, ERR_INVAL, path, "%s must be an integer, got %.15g", path, v);
    /* Integers below 2^53 are printed whole: %g would show 10^15 + 1 as "1e+15", inside the
     * very range it is refused for. */
    if (v < (double)lo || v > (double)hi)
        return err_set_field(err, ERR_INVAL, path, fabs(v) < 0x1p53 ? "%s = %.0f is out of range "
                             "[%lld, %lld]" : "%s = %.15g is out of range [%lld, %lld]",
                             path, v, (long long)lo, (long long)hi);
    *out = (int64_t)v;
    return 0;
}

int codec__get_int32(const cJSON *j, const char *path, int64_t lo, int64_t hi, int32_t *out,
                     err_t *err)
{
    int64_t v = 0;
    int rc = codec__get_int(j, path, lo, hi, &v, err);
    if (rc == 0)
        *out = (int32_t)v;
    return rc;
}

int codec__get_bool(const cJSON *j, const char *path, int32_t *out, err_t *err)
{
    if (!cJSON_IsBool(j))
        return err_set_field(err, ERR_INVAL, path, "%s must be true or false, got %s", path,
                             codec_json_type(j));
    *out = cJSON_IsTrue(j) ? 1 : 0;
    return 0;
}

/* 1 when s is valid UTF-8 without control characters. */
static int text_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != '\0') {
        unsigned char c = *p;
        int n;
        uint32_t cp;
        if (c < 0x20 || c == 0x7F)
            return 0;
        if (c < 0x80) {
            ++p;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        for (int k = 1; k <= n; ++k) {
            if ((p[k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[k] & 0x3F);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        p += n + 1;
    }
    return 1;
}

/* A string field that names something (model name, node id, parameter name): non-empty, shorter
 * than size bytes, UTF-8 without control characters. */
static int check_name(const char *s, const char *path, size_t size, err_t *err)
{
    size_t n = strlen(s);
    if (n == 0)
        return err_set_field(err, ERR_INVAL, path, "%s must not be empty", path);
    if (n >= size)
        return err_set_field(err, ERR_INVAL, path, "%s is %zu bytes long, at most %zu", path, n,
                             size - 1);
    if (!text_ok(s))
        return err_set_field(err, ERR_INVAL, path,
                             "%s must be UTF-8 text without control characters", path);
    return 0;
}

int codec__get_name(const cJSON *j, const char *path, char *out, size_t size, err_t *err)
{
    if (!cJSON_IsString(j) || j->valuestring == NULL)
        return err_set_field(err, ERR_INVAL, path, "%s must be a string, got %s", path,
                             codec_json_type(j));
    int rc = check_name(j->valuestring, path, size, err);
    if (rc < 0)
        return rc;
    memcpy(out, j->valuestring, strlen(j->valuestring) + 1);
    return 0;
}

/* A string among names mapped by from_name (0 = unknown); `allowed` lists them for the message. */
int codec__get_enum(const cJSON *j, const char *path, int32_t (*from_name)(const char *),
                    const char *allowed, int32_t *out, err_t *err)
{
    if (!cJSON_IsString(j) || j->valuestring == NULL)
        return err_set_field(err, ERR_INVAL, path, "%s must be a string (%s), got %s", path,
                             allowed, codec_json_type(j));
    int32_t v = from_name(j->valuestring);
    if (v <= 0)
        return err_set_field(err, ERR_INVAL, path, "%s: unknown value \"%.40s\" (expected %s)",
                             path, j->valuestring, allowed);
    *out = v;
    return 0;
}

/* Reduction names; returns enum ad_reduction + 1, 0 when unknown (get_enum's convention). */
static int32_t reduction_code(const char *s)
{
    if (strcmp(s, "mean") == 0)
        return AD_REDUCTION_MEAN + 1;
    if (strcmp(s, "sum") == 0)
        return AD_REDUCTION_SUM + 1;
    return 0;
}

const char *codec__reduction_name(int32_t r)
{
    return r == AD_REDUCTION_SUM ? "sum" : "mean";
}

int codec__get_reduction(const cJSON *j, const char *path, int32_t *out, err_t *err)
{
    int32_t v = 0;
    int rc = codec__get_enum(j, path, reduction_code, "mean | sum", &v, err);
    if (rc == 0)
        *out = v - 1;
    return rc;
}

int codec_check_fields(const cJSON *obj, const char *prefix, const char *const *allowed,
                       err_t *err)
{
    if (prefix == NULL)
        prefix = "";
    if (!cJSON_IsObject(obj))
        return err_set_field(err, ERR_INVAL, prefix, "%s must be an object, got %s",
                             prefix[0] != '\0' ? prefix : "the body", codec_json_type(obj));
    char path[CODEC_PATH_MAX];
    for (const cJSON *c = obj->child; c != NULL; c = c->next) {
        const char *key = c->string != NULL ? c->string : "";
        int known = 0;
        for (const char *const *a = allowed; *a != NULL && !known; ++a)
            known = strcmp(*a, key) == 0;
        codec__path_key(path, prefix, key);
        if (!known) {
            char list[160];
            size_t used = 0;
            list[0] = '\0';
            for (const char *const *a = allowed; *a != NULL && used < sizeof list; ++a)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s",
                                         a == allowed ? "" : ", ", *a);
            return err_set_field(err, ERR_INVAL, path, "unknown field \"%.60s\" (expected %s)",
                                 path, allowed[0] != NULL ? list : "no fields");
        }
        for (const cJSON *d = obj->child; d != c; d = d->next)
            if (d->string != NULL && strcmp(d->string, key) == 0)
                return err_set_field(err, ERR_INVAL, path, "%.60s is given twice", path);
    }
    return 0;
}

int codec__require_object(const cJSON *j, const char *path, const char *what, err_t *err)
{
    if (!cJSON_IsObject(j))
        return err_set_field(err, ERR_INVAL, path, "%s must be %s, got %s",
                             path[0] != '\0' ? path : "the body", what, codec_json_type(j));
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Numbers out.
 */

/* Shortest of %.15g, %.16g, %.17g that reads back as exactly v. */
int codec_format_double(double v, char *buf, size_t size)
{
    for (int prec = 15; prec < 17; ++prec) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return prec;
    }
    snprintf(buf, size, "%.17g", v);   /* always reads back */
    return 17;
}

/* cJSON 1.7.15 prints %1.15g whenever it reads back within ~2 ulp (an approximate compare), so
 * about one double in six would not round-trip; we print the text ourselves as a raw item. */
cJSON *codec_number(double v)
{
    if (!isfinite(v))
        return cJSON_CreateNull();
    char buf[40];
    codec_format_double(v, buf, sizeof buf);
    cJSON *j = cJSON_CreateRaw(buf);
    if (j != NULL) {
        j->valuedouble = v;
        j->valueint = v >= (double)INT32_MAX ? INT32_MAX
                      : v <= (double)INT32_MIN ? INT32_MIN
                                               : (int)v;
    }
    return j;
}

/* An integer; cJSON prints integers below 10^15 exactly, so those stay plain number items. */
cJSON *codec__int(int64_t v)
{
    if (v > -1000000000000000LL && v < 1000000000000000LL)
        return cJSON_CreateNumber((double)v);
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)v);
    cJSON *j = cJSON_CreateRaw(buf);
    if (j != NULL) {
        j->valuedouble = (double)v;
        j->valueint = v > 0 ? INT32_MAX : INT32_MIN;
    }
    return j;
}

/* Add `item` to obj (NULL obj or item: failure). Frees item when it cannot be added. */
int codec__add(cJSON *obj, const char *key, cJSON *item)
{
    if (item == NULL)
        return -1;
    if (obj == NULL || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

int codec__push(cJSON *arr, cJSON *item)
{
    if (item == NULL)
        return -1;
    if (!cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Parsing.
 */

static int is_json_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int json_error(err_t *err, const char *text, size_t len, size_t off, const char *what)
{
    size_t line = 1, col = 1;
    for (size_t i = 0; i < off && i < len; ++i) {
        if (text[i] == '\n') {
            ++line;
            col = 1;
        } else {
            ++col;
        }
    }
    return err_set(err, ERR_JSON, "%s at byte offset %zu (line %zu, column %zu)", what, off,
                   line, col);
}

int codec_parse(const char *text, size_t len, int max_depth, cJSON **out, err_t *err)
{
    *out = NULL;
    if (max_depth <= 0)
        max_depth = CODEC_MAX_DEPTH_DEFAULT;
    size_t first = 0;
    while (text != NULL && first < len && is_json_space((unsigned char)text[first]))
        ++first;
    if (text == NULL || first == len)
        return err_set(err, ERR_INVAL, "body is empty");
    if ((unsigned char)text[first] < 0x20)
        return json_error(err, text, len, first, "invalid JSON: control character");

    /* One pass over the bytes before cJSON sees them, for the nesting depth: cJSON recurses
     * once per level and its own limit is 1000. Brackets inside strings do not count, so the
     * scan tracks strings, and reports an unterminated one with its start offset (cJSON would
     * point at the end of the body). It also refuses what cJSON lets through: control
     * characters, raw in a string or anywhere outside one (cJSON skips them as white space),
     * and \u0000, which would silently cut a C string short. UTF-8 is checked where strings
     * are used, so the error can name the field. */
    int depth = 0, in_string = 0;
    size_t string_start = 0;
    for (size_t p = first; p < len; ++p) {
        char c = text[p];
        if (in_string) {
            if (c == '\\') {
                if (len - p >= 6 && memcmp(text + p + 1, "u0000", 5) == 0)
                    return json_error(err, text, len, p,
                                      "invalid JSON: \\u0000 (NUL) in a string is not supported");
                ++p;
            } else if (c == '"') {
                in_string = 0;
            } else if ((unsigned char)c < 0x20) {
                return json_error(err, text, len, p,
                                  "invalid JSON: unescaped control character in a string");
            }
            continue;
        }
        if (c == '"') {
            in_string = 1;
            string_start = p;
        } else if ((unsigned char)c < 0x20 && !is_json_space((unsigned char)c)) {
            /* cJSON would skip it as white space. */
            return json_error(err, text, len, p, "invalid JSON: control character");
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) {
                char what[64];
                snprintf(what, sizeof what, "JSON nests deeper than %d levels", max_depth);
                return json_error(err, text, len, p, what);
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    if (in_string)
        return json_error(err, text, len, string_start, "invalid JSON: unterminated string");

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (root == NULL) {
        size_t off = end != NULL && end >= text ? (size_t)(end - text) : 0;
        return json_error(err, text, len, off, "invalid JSON");
    }
    size_t off = (size_t)(end - text);
    while (off < len && is_json_space((unsigned char)text[off]))
        ++off;
    if (off < len) {
        cJSON_Delete(root);
        return json_error(err, text, len, off, "invalid JSON: unexpected data after the value");
    }
    *out = root;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Tensors: nested arrays of a shape.
 */

/*
 * Check json against shape (d[0] == AD_ROWS: any row count >= 1) and, when dst is non-NULL,
 * write the values row major. *rows (may be NULL) gets the row count.
 */
static int tensor_walk(const cJSON *json, const tensor_shape_t *shape, const char *field,
                       double *dst, int32_t *rows, err_t *err)
{
    char path[CODEC_PATH_MAX], sub[CODEC_PATH_MAX];
    if (shape->n_d == 0) {
        double v;
        int rc = codec__get_finite(json, field, &v, err);
        if (rc < 0)
            return rc;
        if (dst != NULL)
            dst[0] = v;
        if (rows != NULL)
            *rows = 1;
        return 0;
    }
    int32_t want = shape->d[0];
    int32_t cols = shape->n_d == 2 ? shape->d[1] : 1;
    if (!cJSON_IsArray(json)) {
        if (shape->n_d == 1)
            return err_set_field(err, ERR_INVAL, field, "%s must be an array of numbers, got %s",
                                 field, codec_json_type(json));
        return err_set_field(err, ERR_INVAL, field, "%s must be an array of rows, got %s",
                             field, codec_json_type(json));
    }
    int64_t n = cJSON_GetArraySize(json);
    if (want == AD_ROWS) {
        if (n < 1)
            return err_set_field(err, ERR_INVAL, field, "%s has no rows", field);
        int64_t elems;
        if (n > INT32_MAX || tensor_checked_elems(n, cols, field, &elems, NULL) < 0)
            return err_set_field(err, ERR_INVAL, field, "%s has too many rows (%lld)", field,
                                 (long long)n);
    } else if (n != want) {
        return err_set_field(err, ERR_INVAL, field, "%s has %lld %s, expected %d", field,
                             (long long)n, shape->n_d == 1 ? "values" : "rows", want);
    }
    int64_t i = 0;
    for (const cJSON *r = json->child; r != NULL; r = r->next, ++i) {
        codec__path_index(path, field, i);
        if (shape->n_d == 1) {
            double v;
            int rc = codec__get_finite(r, path, &v, err);
            if (rc < 0)
                return rc;
            if (dst != NULL)
                dst[i] = v;
            continue;
        }
        if (!cJSON_IsArray(r))
            return err_set_field(err, ERR_INVAL, path, "%s must be an array of %d numbers, got %s",
                                 path, cols, codec_json_type(r));
        int64_t m = cJSON_GetArraySize(r);
        if (m != cols)
            return err_set_field(err, ERR_INVAL, path, "%s has %lld values, expected %d", path,
                                 (long long)m, cols);
        int64_t j = 0;
        for (const cJSON *e = r->child; e != NULL; e = e->next, ++j) {
            double v;
            if (!json_number(e, &v) || !isfinite(v)) {
                codec__path_index(sub, path, j);
                return codec__get_finite(e, sub, &v, err);
            }
            if (dst != NULL)
                dst[i * cols + j] = v;
        }
    }
    if (rows != NULL)
        *rows = (int32_t)n;
    return 0;
}

cJSON *codec_tensor_encode(const tensor_shape_t *shape, const double *x)
{
    if (shape->n_d == 0)
        return codec_number(x[0]);
    cJSON *arr = cJSON_CreateArray();
    if (arr == NULL)
        return NULL;
    int32_t rows = shape->d[0];
    for (int32_t i = 0; i < rows; ++i) {
        if (shape->n_d == 1) {
            if (codec__push(arr, codec_number(x[i])) < 0)
                goto fail;
            continue;
        }
        int32_t cols = shape->d[1];
        cJSON *row = cJSON_CreateArray();
        if (codec__push(arr, row) < 0)
            goto fail;
        for (int32_t j = 0; j < cols; ++j)
            if (codec__push(row, codec_number(x[(int64_t)i * cols + j])) < 0)
                goto fail;
    }
    return arr;
fail:
    cJSON_Delete(arr);
    return NULL;
}

int codec_tensor_decode(const cJSON *json, const tensor_shape_t *shape, const char *field,
                        double **out, int32_t *rows, err_t *err)
{
    *out = NULL;
    int32_t n_rows = 0;
    int rc = tensor_walk(json, shape, field, NULL, &n_rows, err);
    if (rc < 0)
        return rc;
    tensor_shape_t bound = *shape;
    if (bound.n_d > 0 && bound.d[0] == AD_ROWS)
        bound.d[0] = n_rows;
    int64_t n = tensor_shape_elems(&bound);
    double *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    if (x == NULL)
        return err_set_field(err, ERR_NOMEM, field, "%s: out of memory for %lld values", field,
                             (long long)n);
    tensor_walk(json, shape, field, x, NULL, NULL);
    *out = x;
    if (rows != NULL)
        *rows = n_rows;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Graphs.
 */

static int op_is_leaf(int32_t op)
{
    return op == AD_OP_INPUT || op == AD_OP_PARAM || op == AD_OP_CONST;
}

static int op_is_loss(int32_t op)
{
    return op == AD_OP_L2_LOSS || op == AD_OP_BCE_LOSS || op == AD_OP_CCE_LOSS;
}

static int32_t public_op_from_name(const char *s)
{
    int32_t op = ad_op_from_name(s);
    return op > AD_OP_NONE && op < AD_OP_PUBLIC_END ? op : 0;
}

static int shape_decode(const cJSON *j, const char *path, int rows_ok, tensor_shape_t *shape,
                        err_t *err)
{
    char sub[CODEC_PATH_MAX];
    if (!cJSON_IsArray(j))
        return err_set_field(err, ERR_INVAL, path,
                             "%s must be an array of at most 2 dimensions, got %s", path,
                             codec_json_type(j));
    int n = cJSON_GetArraySize(j);
    if (n > TENSOR_MAX_DIM)
        return err_set_field(err, ERR_INVAL, path, "%s has %d dimensions, at most %d", path, n,
                             TENSOR_MAX_DIM);
    shape->n_d = n;
    shape->d[0] = shape->d[1] = 1;
    int32_t k = 0;
    for (const cJSON *e = j->child; e != NULL; e = e->next, ++k) {
        codec__path_index(sub, path, k);
        if (cJSON_IsNull(e) && k == 0) {
            if (!rows_ok)
                return err_set_field(err, ERR_INVAL, sub,
                                     "%s: null (any number of rows) is only for input nodes", sub);
            shape->d[0] = AD_ROWS;
            continue;
        }
        int rc = codec__get_int32(e, sub, 0, INT32_MAX, &shape->d[k], err);
        if (rc < 0)
            return rc;
    }
    int64_t elems;
    int64_t r = shape->n_d > 0 && shape->d[0] != AD_ROWS ? shape->d[0] : 1;
    int64_t c = shape->n_d == 2 ? shape->d[1] : 1;
    if (tensor_checked_elems(r, c, path, &elems, NULL) < 0)
        return err_set_field(err, ERR_INVAL, path, "%s: %lld x %lld is more than %lld elements",
                             path, (long long)r, (long long)c, (long long)TENSOR_MAX_ELEMS);
    return 0;
}

static int node_decode(const cJSON *j, const char *path, ad_node_spec_t *n, err_t *err)
{
    static const char *const fields[] = {
        "id", "op", "inputs", "shape", "value", "reduction", "transpose_b", NULL};
    char sub[CODEC_PATH_MAX], item[CODEC_PATH_MAX];
    int rc = codec__require_object(j, path, "an object", err);
    if (rc == 0)
        rc = codec_check_fields(j, path, fields, err);
    if (rc < 0)
        return rc;

    codec__path_key(sub, path, "id");
    const cJSON *v = codec__member(j, "id");
    if (v == NULL)
        return err_set_field(err, ERR_INVAL, sub, "%s is required", sub);
    if ((rc = codec__get_name(v, sub, n->id, sizeof n->id, err)) < 0)
        return rc;

    codec__path_key(sub, path, "op");
    if ((v = codec__member(j, "op")) == NULL)
        return err_set_field(err, ERR_INVAL, sub, "%s is required", sub);
    if (cJSON_IsString(v) && public_op_from_name(v->valuestring) == 0) {
        char ops[200];
        size_t used = 0;
        ops[0] = '\0';
        for (int32_t op = AD_OP_NONE + 1; op < AD_OP_PUBLIC_END && used < sizeof ops; ++op)
            used += (size_t)snprintf(ops + used, sizeof ops - used, "%s%s", used ? " " : "",
                                     ad_op_name(op));
        return err_set_field(err, ERR_INVAL, sub, "%s: unknown op \"%.30s\" (ops: %s)", sub,
                             v->valuestring, ops);
    }
    if ((rc = codec__get_enum(v, sub, public_op_from_name, "a graph op", &n->op, err)) < 0)
        return rc;

    codec__path_key(sub, path, "inputs");
    if ((v = codec__member(j, "inputs")) != NULL) {
        if (!cJSON_IsArray(v))
            return err_set_field(err, ERR_INVAL, sub, "%s must be an array of node ids, got %s",
                                 sub, codec_json_type(v));
        int cnt = cJSON_GetArraySize(v);
        if (cnt > AD_MAX_CHILD)
            return err_set_field(err, ERR_INVAL, sub, "%s has %d entries, at most %d", sub, cnt,
                                 AD_MAX_CHILD);
        for (const cJSON *e = v->child; e != NULL; e = e->next, ++n->n_in) {
            codec__path_index(item, sub, n->n_in);
            if ((rc = codec__get_name(e, item, n->in[n->n_in], AD_ID_MAX, err)) < 0)
                return rc;
        }
    }

    n->shape.n_d = 0;
    n->shape.d[0] = n->shape.d[1] = 1;
    codec__path_key(sub, path, "shape");
    v = codec__member(j, "shape");
    if (op_is_leaf(n->op)) {
        if (v == NULL)
            return err_set_field(err, ERR_INVAL, sub, "%s is required for %s nodes", sub,
                                 ad_op_name(n->op));
        if ((rc = shape_decode(v, sub, n->op == AD_OP_INPUT, &n->shape, err)) < 0)
            return rc;
    } else if (v != NULL) {
        return err_set_field(err, ERR_INVAL, sub,
                             "%s: only input, param and const nodes take a shape", sub);
    }

    codec__path_key(sub, path, "value");
    v = codec__member(j, "value");
    if (v != NULL) {
        if (n->op != AD_OP_PARAM && n->op != AD_OP_CONST)
            return err_set_field(err, ERR_INVAL, sub,
                                 "%s: only param and const nodes take a value", sub);
        if ((rc = codec_tensor_decode(v, &n->shape, sub, &n->value, NULL, err)) < 0)
            return rc;
    } else if (n->op == AD_OP_CONST) {
        return err_set_field(err, ERR_INVAL, sub, "%s is required for const nodes", sub);
    }

    n->reduction = AD_REDUCTION_MEAN;
    codec__path_key(sub, path, "reduction");
    if ((v = codec__member(j, "reduction")) != NULL) {
        if (!op_is_loss(n->op))
            return err_set_field(err, ERR_INVAL, sub,
                                 "%s: only l2_loss, bce_loss and cce_loss take a reduction", sub);
        if ((rc = codec__get_reduction(v, sub, &n->reduction, err)) < 0)
            return rc;
    }

    codec__path_key(sub, path, "transpose_b");
    if ((v = codec__member(j, "transpose_b")) != NULL) {
        if (n->op != AD_OP_MATMUL)
            return err_set_field(err, ERR_INVAL, sub, "%s: only matmul nodes take transpose_b",
                                 sub);
        if ((rc = codec__get_bool(v, sub, &n->transpose_b, err)) < 0)
            return rc;
    }
    return 0;
}

int codec_graph_decode(const cJSON *json, const char *prefix, ad_graph_spec_t *graph,
                       err_t *err)
{
    static const char *const fields[] = {"nodes", "output", NULL};
    char path[CODEC_PATH_MAX], sub[CODEC_PATH_MAX];
    const char *pre = prefix != NULL ? prefix : "";
    memset(graph, 0, sizeof *graph);
    int rc = codec__require_object(json, pre, "an object with \"nodes\" and \"output\"", err);
    if (rc == 0)
        rc = codec_check_fields(json, pre, fields, err);
    if (rc < 0)
        return rc;

    codec__path_key(path, pre, "nodes");
    const cJSON *nodes = codec__member(json, "nodes");
    if (nodes == NULL)
        return err_set_field(err, ERR_INVAL, path, "%s is required", path);
    if (!cJSON_IsArray(nodes))
        return err_set_field(err, ERR_INVAL, path, "%s must be an array of nodes, got %s", path,
                             codec_json_type(nodes));
    int n = cJSON_GetArraySize(nodes);
    if (n == 0)
        return err_set_field(err, ERR_INVAL, path, "%s is empty", path);
    if (n > CODEC_MAX_ENTRIES)
        return err_set_field(err, ERR_INVAL, path, "%s has %d nodes, at most %d", path, n,
                             CODEC_MAX_ENTRIES);

    codec__path_key(sub, pre, "output");
    const cJSON *output = codec__member(json, "output");
    if (output == NULL)
        return err_set_field(err, ERR_INVAL, sub, "%s is required", sub);
    if ((rc = codec__get_name(output, sub, graph->output, sizeof graph->output, err)) < 0)
        return rc;

    graph->node = calloc((size_t)n, sizeof *graph->node);
    if (graph->node == NULL)
        return err_set_field(err, ERR_NOMEM, path, "%s: out of memory for %d nodes", path, n);
    for (const cJSON *e = nodes->child; e != NULL; e = e->next) {
        codec__path_index(sub, path, graph->n_node);
        /* Counted before decoding so a failure frees the node's value too. */
        ad_node_spec_t *node = &graph->node[graph->n_node++];
        if ((rc = node_decode(e, sub, node, err)) < 0) {
            ad_graph_spec_free(graph);
            memset(graph, 0, sizeof *graph);
            return rc;
        }
    }
    return 0;
}

cJSON *codec_graph_encode(const ad_graph_spec_t *graph)
{
    cJSON *obj = cJSON_CreateObject();
    cJSON *nodes = cJSON_CreateArray();
    if (codec__add(obj, "nodes", nodes) < 0)
        goto fail;
    for (int32_t i = 0; i < graph->n_node; ++i) {
        const ad_node_spec_t *n = &graph->node[i];
        const char *op = ad_op_name(n->op);
        cJSON *node = cJSON_CreateObject();
        if (codec__push(nodes, node) < 0 || codec__add(node, "id", cJSON_CreateString(n->id)) < 0 ||
            codec__add(node, "op", cJSON_CreateString(op != NULL ? op : "")) < 0)
            goto fail;
        if (n->n_in > 0) {
            cJSON *in = cJSON_CreateArray();
            if (codec__add(node, "inputs", in) < 0)
                goto fail;
            for (int32_t k = 0; k < n->n_in; ++k)
                if (codec__push(in, cJSON_CreateString(n->in[k])) < 0)
                    goto fail;
        }
        if (op_is_leaf(n->op)) {
            cJSON *shape = cJSON_CreateArray();
            if (codec__add(node, "shape", shape) < 0)
                goto fail;
            for (int32_t k = 0; k < n->shape.n_d; ++k)
                if (codec__push(shape, n->shape.d[k] == AD_ROWS ? cJSON_CreateNull()
                                                         : codec__int(n->shape.d[k])) < 0)
                    goto fail;
        }
        if (n->value != NULL && codec__add(node, "value", codec_tensor_encode(&n->shape, n->value)) < 0)
            goto fail;
        if (op_is_loss(n->op) &&
            codec__add(node, "reduction", cJSON_CreateString(codec__reduction_name(n->reduction))) < 0)
            goto fail;
        if (n->op == AD_OP_MATMUL && n->transpose_b &&
            codec__add(node, "transpose_b", cJSON_CreateTrue()) < 0)
            goto fail;
    }
    if (codec__add(obj, "output", cJSON_CreateString(graph->output)) < 0)
        goto fail;
    return obj;
fail:
    cJSON_Delete(obj);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Parameters.
 */

/* The JSON shape of parameter tensor k: a graph model's param node shape, else [rows, cols]. */
void codec_param_shape(const model_t *m, int32_t k, tensor_shape_t *shape)
{
    const model_spec_t *spec = model_spec(m);
    const char *name = model_tensor_name(m, k);
    if (spec != NULL && spec->kind == MODEL_KIND_GRAPH && name != NULL) {
        for (int32_t i = 0; i < spec->graph.n_node; ++i) {
            const ad_node_spec_t *n = &spec->graph.node[i];
            if (n->op == AD_OP_PARAM && strcmp(n->id, name) == 0) {
                *shape = n->shape;
                return;
            }
        }
    }
    int32_t rows = 0, cols = 0;
    model_tensor_shape(m, k, &rows, &cols);
    shape->n_d = 2;
    shape->d[0] = rows;
    shape->d[1] = cols;
}

static int unknown_param(const model_t *m, const char *path, const char *name, err_t *err)
{
    char list[120];
    size_t used = 0;
    list[0] = '\0';
    int32_t nt = model_n_tensors(m);
    for (int32_t k = 0; k < nt && used < sizeof list; ++k)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", k == 0 ? "" : ", ",
                                 model_tensor_name(m, k));
    return err_set_field(err, ERR_INVAL, path, "unknown parameter \"%.40s\" (the model has %s)",
                         name, list);
}

int codec_params_decode(const cJSON *json, const model_t *m, int require_all, double *dst,
                        err_t *err)
{
    char path[CODEC_PATH_MAX];
    int rc = codec__require_object(json, "parameters", "an object of named nested arrays", err);
    if (rc < 0)
        return rc;
    int32_t nt = model_n_tensors(m);
    uint8_t *seen = calloc((size_t)(nt > 0 ? nt : 1), 1);
    if (seen == NULL)
        return err_set(err, ERR_NOMEM, "out of memory");

    /* Pass 1 validates everything; pass 2 writes, so a bad tensor leaves dst untouched. */
    for (const cJSON *c = json->child; c != NULL && rc == 0; c = c->next) {
        const char *name = c->string != NULL ? c->string : "";
        codec__path_key(path, "parameters", name);
        int32_t k = model_tensor_find(m, name);
        if (k < 0) {
            rc = unknown_param(m, path, name, err);
        } else if (seen[k]) {
            rc = err_set_field(err, ERR_INVAL, path, "%s is given twice", path);
        } else {
            seen[k] = 1;
            tensor_shape_t shape;
            codec_param_shape(m, k, &shape);
            rc = tensor_walk(c, &shape, path, NULL, NULL, err);
        }
    }
    for (int32_t k = 0; k < nt && rc == 0 && require_all; ++k) {
        if (!seen[k]) {
            codec__path_key(path, "parameters", model_tensor_name(m, k));
            rc = err_set_field(err, ERR_INVAL, path, "%s is missing (every parameter is required)",
                               path);
        }
    }
    for (const cJSON *c = json->child; c != NULL && rc == 0; c = c->next) {
        int32_t k = model_tensor_find(m, c->string);
        tensor_shape_t shape;
        codec_param_shape(m, k, &shape);
        tensor_walk(c, &shape, "parameters", dst + model_tensor_offset(m, k), NULL, NULL);
    }
    free(seen);
    return rc;
}

cJSON *codec_params_encode(const model_t *m, const double *params)
{
    cJSON *obj = cJSON_CreateObject();
    if (obj == NULL)
        return NULL;
    int32_t nt = model_n_tensors(m);
    for (int32_t k = 0; k < nt; ++k) {
        tensor_shape_t shape;
        codec_param_shape(m, k, &shape);
        cJSON *t = codec_tensor_encode(&shape, params + model_tensor_offset(m, k));
        if (codec__add(obj, model_tensor_name(m, k), t) < 0) {
            cJSON_Delete(obj);
            return NULL;
        }
    }
    return obj;
}

/* Shape of a parameter value given without a model: number [], [a,b] [n], [[..],..] [r,c]. */
static int infer_shape(const cJSON *j, const char *path, tensor_shape_t *shape, err_t *err)
{
    char sub[CODEC_PATH_MAX];
    shape->n_d = 0;
    shape->d[0] = shape->d[1] = 1;
    double v;
    if (json_number(j, &v))
        return 0;
    if (!cJSON_IsArray(j))
        return err_set_field(err, ERR_INVAL, path,
                             "%s must be a number or nested arrays of numbers, got %s", path,
                             codec_json_type(j));
    int n = cJSON_GetArraySize(j);
    if (n == 0)
        return err_set_field(err, ERR_INVAL, path, "%s is empty", path);
    shape->n_d = 1;
    shape->d[0] = n;
    if (cJSON_IsArray(j->child)) {
        int cols = cJSON_GetArraySize(j->child);
        if (cols == 0) {
            codec__path_index(sub, path, 0);
            return err_set_field(err, ERR_INVAL, sub, "%s is empty", sub);
        }
        shape->n_d = 2;
        shape->d[1] = cols;
    }
    int64_t elems;
    if (tensor_checked_elems(shape->d[0], shape->d[1], path, &elems, NULL) < 0)
        return err_set_field(err, ERR_INVAL, path, "%s has too many values", path);
    return 0;
}

static void param_values_free(model_param_value_t *pv, int32_t n)
{
    for (int32_t i = 0; i < n; ++i)
        free(pv[i].x);
    free(pv);
}

int codec_param_values_decode(const cJSON *json, model_spec_t *spec, err_t *err)
{
    char path[CODEC_PATH_MAX];
    int rc = codec__require_object(json, "parameters", "an object of named nested arrays", err);
    if (rc < 0)
        return rc;
    int n = cJSON_GetArraySize(json);
    if (n > CODEC_MAX_ENTRIES)
        return err_set_field(err, ERR_INVAL, "parameters", "parameters has %d entries, at most %d",
                             n, CODEC_MAX_ENTRIES);
    model_param_value_t *pv = calloc((size_t)(n > 0 ? n : 1), sizeof *pv);
    if (pv == NULL)
        return err_set(err, ERR_NOMEM, "out of memory");
    int32_t k = 0;
    for (const cJSON *c = json->child; c != NULL && rc == 0; c = c->next) {
        const char *name = c->string != NULL ? c->string : "";
        codec__path_key(path, "parameters", name);
        rc = check_name(name, path, AD_ID_MAX, err);
        for (int32_t i = 0; i < k && rc == 0; ++i)
            if (strcmp(pv[i].name, name) == 0)
                rc = err_set_field(err, ERR_INVAL, path, "%s is given twice", path);
        tensor_shape_t shape;
        if (rc == 0)
            rc = infer_shape(c, path, &shape, err);
        if (rc == 0)
            rc = codec_tensor_decode(c, &shape, path, &pv[k].x, NULL, err);
        if (rc == 0) {
            memcpy(pv[k].name, name, strlen(name) + 1);
            pv[k].rows = tensor_shape_rows(&shape);
            pv[k].cols = tensor_shape_cols(&shape);
            ++k;
        }
    }
    if (rc < 0) {
        param_values_free(pv, k);
        return rc;
    }
    param_values_free(spec->param_value, spec->n_param_value);
    spec->param_value = pv;
    spec->n_param_value = k;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Model spec.
 */

static int32_t output_act_from_name(const char *s)
{
    int32_t a = model_act_from_name(s);
    return a == MODEL_ACT_LINEAR || a == MODEL_ACT_SIGMOID || a == MODEL_ACT_SOFTMAX ? a : 0;
}

static int32_t hidden_act_from_name(const char *s)
{
    int32_t a = model_act_from_name(s);
    return a == MODEL_ACT_SOFTMAX ? 0 : a;
}

static int hidden_decode(const cJSON *j, model_spec_t *spec, err_t *err)
{
    static const char *const fields[] = {"units", "activation", NULL};
    char path[CODEC_PATH_MAX], sub[CODEC_PATH_MAX];
    if (!cJSON_IsArray(j))
        return err_set_field(err, ERR_INVAL, "hidden",
                             "hidden must be an array of {\"units\", \"activation\"}, got %s",
                             codec_json_type(j));
    int n = cJSON_GetArraySize(j);
    if (n > MODEL_MAX_LAYERS)
        return err_set_field(err, ERR_INVAL, "hidden", "hidden has %d layers, at most %d", n,
                             MODEL_MAX_LAYERS);
    spec->n_hidden = 0;
    for (const cJSON *e = j->child; e != NULL; e = e->next) {
        model_layer_t *layer = &spec->hidden[spec->n_hidden];
        codec__path_index(path, "hidden", spec->n_hidden++);
        int rc = codec__require_object(e, path, "an object {\"units\", \"activation\"}", err);
        if (rc == 0)
            rc = codec_check_fields(e, path, fields, err);
        if (rc < 0)
            return rc;
        codec__path_key(sub, path, "units");
        const cJSON *v = codec__member(e, "units");
        if (v == NULL)
            return err_set_field(err, ERR_INVAL, sub, "%s is required", sub);
        if ((rc = codec__get_int32(v, sub, 1, MODEL_MAX_UNITS, &layer->units, err)) < 0)
            return rc;
        /* Absent: 0, which model_spec_resolve() turns into the default (sigmoid). */
        layer->activation = 0;
        codec__path_key(sub, path, "activation");
        if ((v = codec__member(e, "activation")) != NULL &&
            (rc = codec__get_enum(v, sub, hidden_act_from_name, "sigmoid | tanh | relu | linear",
                           &layer->activation, err)) < 0)
            return rc;
    }
    return 0;
}

static int init_decode(const cJSON *j, model_spec_t *spec, err_t *err)
{
    static const char *const fields[] = {"method", "scale", "seed", NULL};
    int rc = codec__require_object(j, "init", "an object {\"method\", \"scale\", \"seed\"}", err);
    if (rc == 0)
        rc = codec_check_fields(j, "init", fields, err);
    const cJSON *v;
    if (rc == 0 && (v = codec__member(j, "method")) != NULL)
        rc = codec__get_enum(v, "init.method", model_init_from_name, "uniform | normal | xavier | zeros",
                      &spec->init_method, err);
    if (rc == 0 && (v = codec__member(j, "scale")) != NULL) {
        rc = codec__get_finite(v, "init.scale", &spec->init_scale, err);
        if (rc == 0 && spec->init_scale < 0)
            rc = err_set_field(err, ERR_INVAL, "init.scale", "init.scale = %g must be >= 0",
                               spec->init_scale);
    }
    int64_t seed;
    if (rc == 0 && (v = codec__member(j, "seed")) != NULL &&
        (rc = codec__get_int(v, "init.seed", 0, CODEC_INT_EXACT_MAX, &seed, err)) == 0)
        spec->init_seed = (uint64_t)seed;
    return rc;
}

/* optimizer.schedule: the kind picks the defaults and which other fields it takes, so a field
 * of another kind (a t_max on a step schedule) is reported rather than silently ignored. */
static int schedule_decode(const cJSON *j, optim_schedule_t *s, err_t *err)
{
    static const char *const kind_fields[][5] = {
        [OPTIM_SCHEDULE_CONSTANT] = {"kind", "warmup_steps", NULL},
        [OPTIM_SCHEDULE_STEP] = {"kind", "warmup_steps", "step_size", "gamma", NULL},
        [OPTIM_SCHEDULE_EXPONENTIAL] = {"kind", "warmup_steps", "gamma", NULL},
        [OPTIM_SCHEDULE_COSINE] = {"kind", "warmup_steps", "t_max", "eta_min", NULL},
    };
    const char *const allowed = "constant | step | exponential | cosine";
    int rc = codec__require_object(j, "optimizer.schedule", "an object", err);
    if (rc < 0)
        return rc;
    const cJSON *v = codec__member(j, "kind");
    if (v == NULL)
        return err_set_field(err, ERR_INVAL, "optimizer.schedule.kind",
                             "optimizer.schedule.kind is required (%s)", allowed);
    int32_t kind = 0;
    if ((rc = codec__get_enum(v, "optimizer.schedule.kind", optim_schedule_from_name, allowed, &kind,
                       err)) < 0 ||
        (rc = codec_check_fields(j, "optimizer.schedule", kind_fields[kind], err)) < 0)
        return rc;
    optim_schedule_default(s, kind);
    if ((v = codec__member(j, "warmup_steps")) != NULL &&
        (rc = codec__get_int(v, "optimizer.schedule.warmup_steps", 0, CODEC_INT_EXACT_MAX,
                      &s->warmup_steps, err)) < 0)
        return rc;
    if ((v = codec__member(j, "step_size")) != NULL &&
        (rc = codec__get_int(v, "optimizer.schedule.step_size", 1, CODEC_INT_EXACT_MAX, &s->step_size,
                      err)) < 0)
        return rc;
    if ((v = codec__member(j, "t_max")) != NULL &&
        (rc = codec__get_int(v, "optimizer.schedule.t_max", 1, CODEC_INT_EXACT_MAX, &s->t_max, err)) < 0)
        return rc;
    if ((v = codec__member(j, "gamma")) != NULL &&
        (rc = codec__get_finite(v, "optimizer.schedule.gamma", &s->gamma, err)) < 0)
        return rc;
    if ((v = codec__member(j, "eta_min")) != NULL &&
        (rc = codec__get_finite(v, "optimizer.schedule.eta_min", &s->eta_min, err)) < 0)
        return rc;
    /* Required fields and ranges: the same check a spec from any other source gets. */
    return optim_schedule_validate(s, err);
}

static int optimizer_decode(const cJSON *j, optim_cfg_t *cfg, err_t *err)
{
    static const char *const fields[] = {
        "method", "learning_rate", "momentum", "beta1", "beta2", "epsilon", "weight_decay",
        "history", "max_line_search", "schedule", NULL};
    static const struct {
        const char *name;
        size_t off;
    } reals[] = {
        {"learning_rate", offsetof(optim_cfg_t, learning_rate)},
        {"momentum", offsetof(optim_cfg_t, momentum)},
        {"beta1", offsetof(optim_cfg_t, beta1)},
        {"beta2", offsetof(optim_cfg_t, beta2)},
        {"epsilon", offsetof(optim_cfg_t, epsilon)},
        {"weight_decay", offsetof(optim_cfg_t, weight_decay)},
    };
    char path[CODEC_PATH_MAX];
    int rc = codec__require_object(j, "optimizer", "an object", err);
    if (rc == 0)
        rc = codec_check_fields(j, "optimizer", fields, err);
    if (rc < 0)
        return rc;
    /* The method picks the defaults of every other field. */
    const cJSON *v = codec__member(j, "method");
    if (v != NULL) {
        int32_t method;
        if ((rc = codec__get_enum(v, "optimizer.method", optim_method_from_name,
                           "sgd | momentum | adam | lbfgs", &method, err)) < 0)
            return rc;
        optim_cfg_default(cfg, method);
    }
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; ++i) {
        if ((v = codec__member(j, reals[i].name)) == NULL)
            continue;
        codec__path_key(path, "optimizer", reals[i].name);
        if ((rc = codec__get_finite(v, path, (double *)((char *)cfg + reals[i].off), err)) < 0)
            return rc;
    }
    if ((v = codec__member(j, "history")) != NULL &&
        (rc = codec__get_int32(v, "optimizer.history", 1, CODEC_MAX_HISTORY, &cfg->history, err)) < 0)
        return rc;
    if ((v = codec__member(j, "max_line_search")) != NULL &&
        (rc = codec__get_int32(v, "optimizer.max_line_search", 1, CODEC_MAX_HISTORY,
                        &cfg->max_line_search, err)) < 0)
        return rc;
    if ((v = codec__member(j, "schedule")) != NULL &&
        (rc = schedule_decode(v, &cfg->schedule, err)) < 0)
        return rc;
    return 0;
}

static int spec_decode(const cJSON *json, model_spec_t *spec, err_t *err)
{
    static const char *const fields[] = {
        "name", "kind", "inputs", "outputs", "classes", "hidden", "output_activation", "loss",
        "reduction", "init", "parameters", "optimizer", "graph", NULL};
    int rc = codec__require_object(json, "", "a JSON object (a model spec)", err);
    if (rc == 0)
        rc = codec_check_fields(json, "", fields, err);
    if (rc < 0)
        return rc;
    const cJSON *v;
    if ((v = codec__member(json, "name")) != NULL &&
        (rc = codec__get_name(v, "name", spec->name, sizeof spec->name, err)) < 0)
        return rc;
    if ((v = codec__member(json, "kind")) == NULL)
        return err_set_field(err, ERR_INVAL, "kind",
                             "kind is required (linear | logistic | softmax | perceptron | mlp | "
                             "ova | ovo | graph)");
    if ((rc = codec__get_enum(v, "kind", model_kind_from_name,
                       "linear | logistic | softmax | perceptron | mlp | ova | ovo | graph",
                       &spec->kind, err)) < 0)
        return rc;
    if ((v = codec__member(json, "inputs")) != NULL) {
        if ((rc = codec__get_int32(v, "inputs", 1, MODEL_MAX_UNITS, &spec->inputs, err)) < 0)
            return rc;
    } else if (spec->kind != MODEL_KIND_GRAPH) {
        return err_set_field(err, ERR_INVAL, "inputs",
                             "inputs is required: the number of features per row");
    }
    if ((v = codec__member(json, "outputs")) != NULL &&
        (rc = codec__get_int32(v, "outputs", 1, MODEL_MAX_UNITS, &spec->outputs, err)) < 0)
        return rc;
    if ((v = codec__member(json, "classes")) != NULL &&
        (rc = codec__get_int32(v, "classes", 2, MODEL_MAX_UNITS, &spec->classes, err)) < 0)
        return rc;
    if ((v = codec__member(json, "hidden")) != NULL && (rc = hidden_decode(v, spec, err)) < 0)
        return rc;
    if ((v = codec__member(json, "output_activation")) != NULL &&
        (rc = codec__get_enum(v, "output_activation", output_act_from_name,
                       "linear | sigmoid | softmax", &spec->output_activation, err)) < 0)
        return rc;
    if ((v = codec__member(json, "loss")) != NULL &&
        (rc = codec__get_enum(v, "loss", model_loss_from_name, "l2 | bce | cce", &spec->loss, err)) < 0)
        return rc;
    if ((v = codec__member(json, "reduction")) != NULL &&
        (rc = codec__get_reduction(v, "reduction", &spec->reduction, err)) < 0)
        return rc;
    if ((v = codec__member(json, "init")) != NULL && (rc = init_decode(v, spec, err)) < 0)
        return rc;
    if ((v = codec__member(json, "parameters")) != NULL &&
        (rc = codec_param_values_decode(v, spec, err)) < 0)
        return rc;
    if ((v = codec__member(json, "optimizer")) != NULL &&
        (rc = optimizer_decode(v, &spec->optimizer, err)) < 0)
        return rc;
    if ((v = codec__member(json, "graph")) != NULL &&
        (rc = codec_graph_decode(v, "graph", &spec->graph, err)) < 0)
        return rc;
    return 0;
}

int codec_spec_decode(const cJSON *json, model_spec_t *spec, err_t *err)
{
    memset(spec, 0, sizeof *spec);
    model_spec_default(spec);
    int rc = spec_decode(json, spec, err);
    if (rc < 0)
        model_spec_free(spec);
    return rc;
}

static int add_name(cJSON *obj, const char *key, const char *name)
{
    return codec__add(obj, key, cJSON_CreateString(name != NULL ? name : "unknown"));
}

/* An enum field by name, only when it has a name that decodes back to the same value (unset
 * values, 0, are left out so they stay unset). Returns 0 or -1 (out of memory). */
static int add_enum(cJSON *obj, const char *key, int32_t v, const char *(*name_of)(int32_t),
                    int32_t (*from_name)(const char *))
{
    const char *name = v != 0 ? name_of(v) : NULL;
    if (name == NULL || from_name(name) != v)
        return 0;
    return codec__add(obj, key, cJSON_CreateString(name));
}

/* The kind and the fields it takes, defaults included, so a stored spec says every rate. */
static cJSON *schedule_encode(const optim_schedule_t *s)
{
    cJSON *o = cJSON_CreateObject();
    if (add_name(o, "kind", optim_schedule_name(s->kind)) < 0)
        goto fail;
    if ((s->kind == OPTIM_SCHEDULE_STEP && codec__add(o, "step_size", codec__int(s->step_size)) < 0) ||
        (s->kind == OPTIM_SCHEDULE_COSINE && (codec__add(o, "t_max", codec__int(s->t_max)) < 0 ||
                                              codec__add(o, "eta_min", codec_number(s->eta_min)) < 0)))
        goto fail;
    if ((s->kind == OPTIM_SCHEDULE_STEP || s->kind == OPTIM_SCHEDULE_EXPONENTIAL) &&
        codec__add(o, "gamma", codec_number(s->gamma)) < 0)
        goto fail;
    if (codec__add(o, "warmup_steps", codec__int(s->warmup_steps)) < 0)
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static cJSON *optimizer_encode(const optim_cfg_t *cfg)
{
    optim_cfg_t def;
    optim_cfg_default(&def, cfg->method);
    cJSON *o = cJSON_CreateObject();
    if (add_name(o, "method", optim_method_name(cfg->method)) < 0 ||
        codec__add(o, "learning_rate", codec_number(cfg->learning_rate)) < 0 ||
        codec__add(o, "momentum", codec_number(cfg->momentum)) < 0 ||
        codec__add(o, "beta1", codec_number(cfg->beta1)) < 0 ||
        codec__add(o, "beta2", codec_number(cfg->beta2)) < 0 ||
        codec__add(o, "epsilon", codec_number(cfg->epsilon)) < 0 ||
        codec__add(o, "weight_decay", codec_number(cfg->weight_decay)) < 0)
        goto fail;
    /* lbfgs options only where they mean something (or differ from the default). */
    int lbfgs = cfg->method == OPTIM_METHOD_LBFGS;
    if ((lbfgs || cfg->history != def.history) && codec__add(o, "history", codec__int(cfg->history)) < 0)
        goto fail;
    if ((lbfgs || cfg->max_line_search != def.max_line_search) &&
        codec__add(o, "max_line_search", codec__int(cfg->max_line_search)) < 0)
        goto fail;
    if (codec__add(o, "schedule", schedule_encode(&cfg->schedule)) < 0)
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/*
 * Kind-appropriate fields, plus any field that differs from its default, so that the encoding
 * of any decodable spec decodes to the identical spec.
 */
cJSON *codec_spec_encode(const model_spec_t *spec)
{
    int32_t kind = spec->kind;
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        goto fail;
    if (spec->name[0] != '\0' && codec__add(o, "name", cJSON_CreateString(spec->name)) < 0)
        goto fail;
    if (add_name(o, "kind", model_kind_name(kind)) < 0)
        goto fail;
    if (spec->inputs > 0 && codec__add(o, "inputs", codec__int(spec->inputs)) < 0)
        goto fail;
    /* 0 is "unset" for outputs and classes; model_spec_resolve() fills in what the kind uses
     * (and rejects the rest), so a resolved spec shows its real sizes. */
    if (spec->outputs != 0 && codec__add(o, "outputs", codec__int(spec->outputs)) < 0)
        goto fail;
    if (spec->classes != 0 && codec__add(o, "classes", codec__int(spec->classes)) < 0)
        goto fail;
    if (kind == MODEL_KIND_MLP || spec->n_hidden > 0) {
        cJSON *hidden = cJSON_CreateArray();
        if (codec__add(o, "hidden", hidden) < 0)
            goto fail;
        for (int32_t i = 0; i < spec->n_hidden; ++i) {
            cJSON *layer = cJSON_CreateObject();
            if (codec__push(hidden, layer) < 0 ||
                codec__add(layer, "units", codec__int(spec->hidden[i].units)) < 0 ||
                add_enum(layer, "activation", spec->hidden[i].activation, model_act_name,
                         model_act_from_name) < 0)
                goto fail;
        }
    }
    if (add_enum(o, "output_activation", spec->output_activation, model_act_name,
                 model_act_from_name) < 0 ||
        add_enum(o, "loss", spec->loss, model_loss_name, model_loss_from_name) < 0)
        goto fail;
    if (codec__add(o, "reduction", cJSON_CreateString(codec__reduction_name(spec->reduction))) < 0)
        goto fail;
    cJSON *init = cJSON_CreateObject();
    if (codec__add(o, "init", init) < 0 ||
        add_name(init, "method", model_init_name(spec->init_method)) < 0 ||
        codec__add(init, "scale", codec_number(spec->init_scale)) < 0 ||
        codec__add(init, "seed", codec__int((int64_t)spec->init_seed)) < 0)
        goto fail;
    if (codec__add(o, "optimizer", optimizer_encode(&spec->optimizer)) < 0)
        goto fail;
    if (spec->graph.n_node > 0 &&
        codec__add(o, "graph", codec_graph_encode(&spec->graph)) < 0)
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Batches.
 */

void codec_batch_free(codec_batch_t *b)
{
    if (b == NULL)
        return;
    free(b->x);
    free(b->y);
    memset(b, 0, sizeof *b);
}

static const char *plural(int64_t n)
{
    return n == 1 ? "" : "s";
}

/* Row i of x or y (name "x" or "y"): an array of exactly `want` numbers written to dst. `what`
 * names the values in the count message ("input", "label"). */
static int row_decode(const cJSON *row, const char *name, int64_t i, int32_t want,
                      const char *what, double *dst, err_t *err)
{
    char path[CODEC_PATH_MAX], sub[CODEC_PATH_MAX];
    if (cJSON_IsArray(row)) {
        /* The common case, without formatting any path. */
        int64_t count = 0;
        const cJSON *e = row->child;
        for (; e != NULL && count < want && cJSON_IsNumber(e) && isfinite(e->valuedouble);
             e = e->next)
            dst[count++] = e->valuedouble;
        if (e == NULL && count == want)
            return 0;
    }
    codec__path_index(path, name, i);
    if (!cJSON_IsArray(row))
        return err_set_field(err, ERR_INVAL, path, "%s must be an array of %d number%s, got %s",
                             path, want, plural(want), codec_json_type(row));
    int64_t count = 0, bad = -1;
    const cJSON *bad_item = NULL;
    for (const cJSON *e = row->child; e != NULL; e = e->next, ++count) {
        double v;
        if (count >= want)
            continue;
        if (!json_number(e, &v) || !isfinite(v)) {
            if (bad < 0) {
                bad = count;
                bad_item = e;
            }
            continue;
        }
        dst[count] = v;
    }
    if (count != want)
        return err_set_field(err, ERR_INVAL, path, "%s has %lld value%s, model expects %d %s%s",
                             path, (long long)count, plural(count), want, what, plural(want));
    if (bad >= 0) {
        double v;
        codec__path_index(sub, path, bad);
        return codec__get_finite(bad_item, sub, &v, err);
    }
    return 0;
}

int codec_batch_decode(const cJSON *json, int32_t n_x, int32_t n_y, int require_y,
                       int64_t max_rows, codec_batch_t *out, err_t *err)
{
    char path[CODEC_PATH_MAX];
    memset(out, 0, sizeof *out);
    int rc = codec__require_object(json, "", "a JSON object with \"x\" and \"y\"", err);
    if (rc < 0)
        return rc;
    const cJSON *jx = codec__member(json, "x"), *jy = codec__member(json, "y");
    if (jx == NULL)
        return err_set_field(err, ERR_INVAL, "x", "x is required: an array of rows of %d number%s",
                             n_x, plural(n_x));
    if (!cJSON_IsArray(jx))
        return err_set_field(err, ERR_INVAL, "x", "x must be an array of rows, got %s",
                             codec_json_type(jx));
    int64_t rows = cJSON_GetArraySize(jx);
    if (rows == 0)
        return err_set_field(err, ERR_INVAL, "x", "x has no rows");
    if (max_rows > 0 && rows > max_rows)
        return err_set_field(err, ERR_INVAL, "x", "x has %lld rows, more than the limit of %lld",
                             (long long)rows, (long long)max_rows);
    int64_t nx = 0, ny = 0;
    if (rows > INT32_MAX || tensor_checked_elems(rows, n_x, "x", &nx, NULL) < 0)
        return err_set_field(err, ERR_INVAL, "x", "x: %lld rows of %d values is too many",
                             (long long)rows, n_x);
    if (jy != NULL) {
        if (!cJSON_IsArray(jy))
            return err_set_field(err, ERR_INVAL, "y",
                                 "y must be an array with one label per row, got %s",
                                 codec_json_type(jy));
        int64_t ylen = cJSON_GetArraySize(jy);
        if (ylen != rows)
            return err_set_field(err, ERR_INVAL, "y", "y has %lld value%s for %lld row%s of x",
                                 (long long)ylen, plural(ylen), (long long)rows, plural(rows));
        if (tensor_checked_elems(rows, n_y, "y", &ny, NULL) < 0)
            return err_set_field(err, ERR_INVAL, "y", "y: %lld rows of %d labels is too many",
                                 (long long)rows, n_y);
    } else if (require_y) {
        return err_set_field(err, ERR_INVAL, "y", "y is required: one label per row of x");
    }

    out->x = malloc((size_t)(nx > 0 ? nx : 1) * sizeof *out->x);
    if (jy != NULL)
        out->y = malloc((size_t)(ny > 0 ? ny : 1) * sizeof *out->y);
    if (out->x == NULL || (jy != NULL && out->y == NULL)) {
        codec_batch_free(out);
        return err_set(err, ERR_NOMEM, "out of memory for a batch of %lld rows", (long long)rows);
    }
    int64_t i = 0;
    for (const cJSON *r = jx->child; r != NULL; r = r->next, ++i)
        if ((rc = row_decode(r, "x", i, n_x, "input", out->x + i * n_x, err)) < 0)
            goto fail;
    i = 0;
    for (const cJSON *r = jy != NULL ? jy->child : NULL; r != NULL; r = r->next, ++i) {
        double v;
        if (n_y == 1 && json_number(r, &v) && isfinite(v)) {
            out->y[i] = v;
            continue;
        }
        if (n_y == 1 && !cJSON_IsArray(r)) {
            codec__path_index(path, "y", i);
            rc = codec__get_finite(r, path, &v, err);
            goto fail;
        }
        if ((rc = row_decode(r, "y", i, n_y, "label", out->y + i * n_y, err)) < 0)
            goto fail;
    }
    out->rows = (int32_t)rows;
    out->n_x = n_x;
    out->n_y = n_y;
    return 0;
fail:
    codec_batch_free(out);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Exports.
 */

int codec_export_decode(const cJSON *json, codec_export_t *out, err_t *err)
{
    static const char *const fields[] = {"format", "version", "name", "spec", "step", "loss",
                                         "parameters", "optimizer_state", NULL};
    memset(out, 0, sizeof *out);
    out->loss = NAN;
    int rc = codec__require_object(json, "", "a JSON object (an export)", err);
    if (rc == 0)
        rc = codec_check_fields(json, "", fields, err);
    if (rc < 0)
        return rc;
    const cJSON *v = codec__member(json, "format");
    if (!cJSON_IsString(v) || strcmp(v->valuestring, CODEC_EXPORT_FORMAT) != 0)
        return err_set_field(err, ERR_INVAL, "format", "format must be \"" CODEC_EXPORT_FORMAT
                             "\" (the body of GET /v1/models/{id}/export)");
    int64_t version = 0;
    if ((v = codec__member(json, "version")) == NULL)
        return err_set_field(err, ERR_INVAL, "version", "version is required");
    if ((rc = codec__get_int(v, "version", 1, CODEC_INT_EXACT_MAX, &version, err)) < 0)
        return rc;
    if (version != CODEC_EXPORT_VERSION)
        return err_set_field(err, ERR_INVAL, "version", "export version %lld is not supported "
                             "(this neurond reads version %d)", (long long)version,
                             CODEC_EXPORT_VERSION);
    if ((v = codec__member(json, "name")) != NULL &&
        (rc = codec__get_name(v, "name", out->name, sizeof out->name, err)) < 0)
        return rc;
    if ((v = codec__member(json, "step")) != NULL &&
        (rc = codec__get_int(v, "step", 0, TRAIN_STEP_MAX, &out->step, err)) < 0)
        return rc;
    if ((v = codec__member(json, "loss")) != NULL && (rc = codec__get_finite(v, "loss", &out->loss, err)) < 0)
        return rc;
    if ((out->parameters = codec__member(json, "parameters")) == NULL)
        return err_set_field(err, ERR_INVAL, "parameters", "parameters is required");
    out->optimizer_state = codec__member(json, "optimizer_state");
    if ((v = codec__member(json, "spec")) == NULL)
        return err_set_field(err, ERR_INVAL, "spec", "spec is required");
    if ((rc = codec_spec_decode(v, &out->spec, err)) < 0) {
        if (err != NULL && err->field[0] == '\0')
            snprintf(err->field, sizeof err->field, "spec");
        else
            err_prefix_field(err, "spec.");
        return rc;
    }
    /* The top-level name wins; an export edited to carry the name inside its spec works too. */
    if (out->name[0] == '\0')
        memcpy(out->name, out->spec.name, sizeof out->name);
    return 0;
}

void codec_export_free(codec_export_t *e)
{
    if (e != NULL)
        model_spec_free(&e->spec);
}

int codec_optim_state_decode(const cJSON *json, optim_t *o, int64_t step, err_t *err)
{
    const int64_t len = optim_state_len(o);
    double *dst = optim_state(o);
    if (!cJSON_IsArray(json))
        return err_set_field(err, ERR_INVAL, "optimizer_state",
                             "optimizer_state must be an array of %lld numbers, got %s",
                             (long long)len, codec_json_type(json));
    int64_t count = cJSON_GetArraySize(json);
    if (count != len)
        return err_set_field(err, ERR_INVAL, "optimizer_state",
                             "optimizer_state has %lld values, the optimizer (%s) keeps %lld",
                             (long long)count, optim_method_name(optim_cfg(o)->method),
                             (long long)len);
    int64_t i = 0;
    int rc = 0;
    for (const cJSON *e = json->child; e != NULL && rc == 0; e = e->next, ++i) {
        char path[48];
        codec__path_index(path, "optimizer_state", i);
        rc = codec__get_finite(e, path, &dst[i], err);
    }
    if (rc == 0)
        rc = optim_state_check(o, step, err);
    if (rc < 0)
        optim_reset(o);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Train requests and results.
 */

/* "early_stopping": {"patience" (required, >= 1), "min_delta" (0), "restore_best" (true)}. */
static int early_stopping_decode(const cJSON *j, train_req_t *req, err_t *err)
{
    static const char *const fields[] = {"patience", "min_delta", "restore_best", NULL};
    int rc = codec__require_object(j, "early_stopping", "an object", err);
    if (rc == 0)
        rc = codec_check_fields(j, "early_stopping", fields, err);
    if (rc < 0)
        return rc;
    /* A missing or bad patience leaves no early stopping to speak of: the error names the
     * whole object, as it does when validation rows or recorded rows are missing. */
    const cJSON *v = codec__member(j, "patience");
    if (v == NULL)
        return err_set_field(err, ERR_INVAL, "early_stopping",
                             "early_stopping.patience is required: evaluations without "
                             "improvement before the run stops");
    if ((rc = codec__get_int(v, "early_stopping.patience", 1, CODEC_INT_EXACT_MAX, &req->patience,
                      err)) < 0) {
        if (err != NULL)
            snprintf(err->field, sizeof err->field, "%s", "early_stopping");
        return rc;
    }
    if ((v = codec__member(j, "min_delta")) != NULL) {
        if ((rc = codec__get_finite(v, "early_stopping.min_delta", &req->min_delta, err)) < 0)
            return rc;
        if (req->min_delta < 0)
            return err_set_field(err, ERR_INVAL, "early_stopping.min_delta",
                                 "early_stopping.min_delta = %g must be >= 0", req->min_delta);
    }
    if ((v = codec__member(j, "restore_best")) != NULL &&
        (rc = codec__get_bool(v, "early_stopping.restore_best", &req->restore_best, err)) < 0)
        return rc;
    return 0;
}

int codec_train_req_decode(const cJSON *json, train_req_t *req, int *async, err_t *err)
{
    static const char *const fields[] = {
        "steps", "epochs", "batch_size", "learning_rate", "tolerance", "target_loss",
        "history_every", "seed", "async", "early_stopping", NULL};
    train_req_default(req);
    if (async != NULL)
        *async = 0;
    if (json == NULL || cJSON_IsNull(json))
        return 0;
    int rc = codec__require_object(json, "", "a JSON object (a train request)", err);
    if (rc == 0)
        rc = codec_check_fields(json, "", fields, err);
    if (rc < 0)
        return rc;
    const cJSON *v, *steps = codec__member(json, "steps"), *epochs = codec__member(json, "epochs");
    if (steps != NULL && epochs != NULL)
        return err_set_field(err, ERR_INVAL, "epochs", "give either steps or epochs, not both");
    if (steps != NULL &&
        (rc = codec__get_int(steps, "steps", 0, CODEC_INT_EXACT_MAX, &req->steps, err)) < 0)
        return rc;
    if (epochs != NULL &&
        (rc = codec__get_int(epochs, "epochs", 0, CODEC_INT_EXACT_MAX, &req->epochs, err)) < 0)
        return rc;
    /* null is the full batch; 0 rows per mini-batch is not a size. */
    if ((v = codec__member(json, "batch_size")) != NULL &&
        (rc = codec__get_int32(v, "batch_size", 1, INT32_MAX, &req->batch_size, err)) < 0)
        return rc;
    if ((v = codec__member(json, "learning_rate")) != NULL) {
        if ((rc = codec__get_finite(v, "learning_rate", &req->learning_rate, err)) < 0)
            return rc;
        if (req->learning_rate <= 0)
            return err_set_field(err, ERR_INVAL, "learning_rate", "learning_rate = %g must be > 0",
                                 req->learning_rate);
    }
    if ((v = codec__member(json, "tolerance")) != NULL) {
        if ((rc = codec__get_finite(v, "tolerance", &req->tolerance, err)) < 0)
            return rc;
        if (req->tolerance < 0)
            return err_set_field(err, ERR_INVAL, "tolerance", "tolerance = %g must be >= 0",
                                 req->tolerance);
    }
    if ((v = codec__member(json, "target_loss")) != NULL &&
        (rc = codec__get_finite(v, "target_loss", &req->target_loss, err)) < 0)
        return rc;
    if ((v = codec__member(json, "history_every")) != NULL &&
        (rc = codec__get_int(v, "history_every", 0, CODEC_INT_EXACT_MAX, &req->history_every, err)) < 0)
        return rc;
    int64_t seed;
    if ((v = codec__member(json, "seed")) != NULL) {
        if ((rc = codec__get_int(v, "seed", 0, CODEC_INT_EXACT_MAX, &seed, err)) < 0)
            return rc;
        req->seed = (uint64_t)seed;
    }
    if ((v = codec__member(json, "early_stopping")) != NULL &&
        (rc = early_stopping_decode(v, req, err)) < 0)
        return rc;
    if ((v = codec__member(json, "async")) != NULL) {
        int32_t a = 0;   /* -O3 -Wmaybe-uninitialized false positive (Release build) */
        if ((rc = codec__get_bool(v, "async", &a, err)) < 0)
            return rc;
        if (async != NULL)
            *async = a;
    }
    return 0;
}

static cJSON *int_array(const int64_t *v, int64_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; i < n; ++i)
        if (codec__push(a, codec__int(v[i])) < 0) {
            cJSON_Delete(a);
            return NULL;
        }
    return a;
}

/* The confusion matrix of k classes as k rows of counts. */
static cJSON *confusion_encode(const int64_t *c, int32_t k)
{
    cJSON *rows = cJSON_CreateArray();
    for (int32_t i = 0; i < k; ++i)
        if (codec__push(rows, int_array(c + (int64_t)i * k, k)) < 0) {
            cJSON_Delete(rows);
            return NULL;
        }
    return rows;
}

static cJSON *precision_recall_f1(cJSON *o, double accuracy, double p, double r, double f1)
{
    if (codec__add(o, "accuracy", codec_number(accuracy)) < 0 ||
        codec__add(o, "precision", codec_number(p)) < 0 || codec__add(o, "recall", codec_number(r)) < 0 ||
        codec__add(o, "f1", codec_number(f1)) < 0)
        return NULL;
    return o;
}

static cJSON *metrics_encode(const eval_result_t *r)
{
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    switch (r->family) {
    case EVAL_FAMILY_REGRESSION: {
        const eval_regression_t *g = &r->regression;
        if (codec__add(o, "mse", codec_number(g->mse)) < 0 || codec__add(o, "rmse", codec_number(g->rmse)) < 0 ||
            codec__add(o, "mae", codec_number(g->mae)) < 0 || codec__add(o, "r2", codec_number(g->r2)) < 0)
            goto fail;
        break;
    }
    case EVAL_FAMILY_BINARY: {
        const eval_binary_t *b = &r->binary;
        const int64_t cm[4] = {b->tn, b->fp, b->fn, b->tp};
        if (precision_recall_f1(o, b->accuracy, b->precision, b->recall, b->f1) == NULL ||
            codec__add(o, "confusion_matrix", confusion_encode(cm, 2)) < 0 ||
            codec__add(o, "roc_auc", codec_number(b->roc_auc)) < 0 ||
            (!isnan(b->log_loss) && codec__add(o, "log_loss", codec_number(b->log_loss)) < 0))
            goto fail;
        break;
    }
    case EVAL_FAMILY_MULTICLASS: {
        const eval_multiclass_t *mc = &r->multiclass;
        cJSON *per_class = cJSON_CreateArray();
        if (precision_recall_f1(o, mc->accuracy, mc->precision, mc->recall, mc->f1) == NULL ||
            codec__add(o, "confusion_matrix", confusion_encode(mc->confusion, mc->k)) < 0 ||
            codec__add(o, "per_class", per_class) < 0)
            goto fail;
        for (int32_t j = 0; j < mc->k; ++j) {
            cJSON *c = cJSON_CreateObject();
            if (codec__push(per_class, c) < 0 || codec__add(c, "class", codec__int(j)) < 0 ||
                codec__add(c, "precision", codec_number(mc->class_precision[j])) < 0 ||
                codec__add(c, "recall", codec_number(mc->class_recall[j])) < 0 ||
                codec__add(c, "f1", codec_number(mc->class_f1[j])) < 0 ||
                codec__add(c, "support", codec__int(mc->support[j])) < 0)
                goto fail;
        }
        if (!isnan(mc->log_loss) && codec__add(o, "log_loss", codec_number(mc->log_loss)) < 0)
            goto fail;
        break;
    }
    default:
        break;
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

cJSON *codec_eval_encode(const eval_result_t *r)
{
    cJSON *o = cJSON_CreateObject();
    if (codec__add(o, "rows", codec__int(r->rows)) < 0 || codec__add(o, "loss", codec_number(r->loss)) < 0 ||
        codec__add(o, "metrics", metrics_encode(r)) < 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *codec_train_result_encode(int64_t model_id, const train_result_t *res)
{
    const char *stopped = train_stop_name(res->stopped);
    cJSON *o = cJSON_CreateObject();
    if ((model_id > 0 && codec__add(o, "model_id", codec__int(model_id)) < 0) ||
        codec__add(o, "steps_run", codec__int(res->steps_run)) < 0 ||
        codec__add(o, "step", codec__int(res->step)) < 0 ||
        codec__add(o, "loss_before", codec_number(res->loss_before)) < 0 ||
        codec__add(o, "loss_after", codec_number(res->loss_after)) < 0 ||
        (res->validated && codec__add(o, "val_loss_after", codec_number(res->val_loss_after)) < 0) ||
        codec__add(o, "stopped", cJSON_CreateString(stopped != NULL ? stopped : "unknown")) < 0 ||
        (res->early_stopping &&
         (codec__add(o, "best_step", res->best_step >= 0 ? codec__int(res->best_step)
                                                   : cJSON_CreateNull()) < 0 ||
          codec__add(o, "best_val_loss", codec_number(res->best_val_loss)) < 0)) ||
        codec__add(o, "elapsed_ms", codec_number(res->elapsed_ms)) < 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
