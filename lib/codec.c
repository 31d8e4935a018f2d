/* lib/codec.c -- JSON <-> lib types: parsing, numbers, tensors, parameters, batches, exports,
 * and the helpers every codec file shares (codec_internal.h); every check of untrusted input,
 * with a field path in each error. The spec, graphs, train requests and CSV have files of their
 * own (codec_spec.c, codec_graph.c, codec_train.c, codec_csv.c); the codec's files are the only
 * lib files that include cJSON.h (through codec.h). */
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
 * about one double in six would not round-trip; we print the text ourselves as a raw item.
 * Turns number item `c` into that, in place (its key and value stay): JSON null when the value
 * is not finite. cJSON_Delete() frees the text (cJSON's default allocator, malloc). */
static int number_exact(cJSON *c)
{
    if (!isfinite(c->valuedouble)) {
        c->type = cJSON_NULL;
        return 0;
    }
    char buf[40];
    codec_format_double(c->valuedouble, buf, sizeof buf);
    char *text = strdup(buf);
    if (text == NULL)
        return ERR_NOMEM;
    c->type = cJSON_Raw;
    c->valuestring = text;
    return 0;
}

cJSON *codec_number(double v)
{
    cJSON *j = cJSON_CreateNumber(v);
    if (j != NULL && number_exact(j) < 0) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

int codec_exact_numbers(cJSON *j)
{
    for (cJSON *c = j != NULL ? j->child : NULL; c != NULL; c = c->next)
        if ((cJSON_IsNumber(c) ? number_exact(c) : codec_exact_numbers(c)) < 0)
            return ERR_NOMEM;
    return 0;
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

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* The end of the JSON number at t[p] (RFC 8259 section 6: -?(0|[1-9][0-9]*)(.[0-9]+)?
 * ([eE][+-]?[0-9]+)?), or 0 when it is not one: cJSON's strtod would take "01", "2." and
 * "1.e5" as well. */
static size_t json_number_end(const char *t, size_t len, size_t p)
{
    if (t[p] == '-')
        ++p;
    if (p == len || !is_digit(t[p]))
        return 0;
    if (t[p] == '0')
        ++p;
    else
        while (p < len && is_digit(t[p]))
            ++p;
    if (p < len && t[p] == '.') {
        if (++p == len || !is_digit(t[p]))
            return 0;
        while (p < len && is_digit(t[p]))
            ++p;
    }
    if (p < len && (t[p] == 'e' || t[p] == 'E')) {
        ++p;
        if (p < len && (t[p] == '+' || t[p] == '-'))
            ++p;
        if (p == len || !is_digit(t[p]))
            return 0;
        while (p < len && is_digit(t[p]))
            ++p;
    }
    if (p < len && (is_digit(t[p]) || t[p] == '.' || t[p] == 'e' || t[p] == 'E' ||
                    t[p] == '+' || t[p] == '-'))
        return 0;
    return p;
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
     * \u0000, which would silently cut a C string short, and numbers outside JSON's grammar.
     * UTF-8 is checked where strings are used, so the error can name the field. */
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
        } else if (c == '-' || is_digit(c)) {
            size_t end = json_number_end(text, len, p);
            if (end == 0)
                return json_error(err, text, len, p, "invalid JSON: malformed number");
            p = end - 1;
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
