/* server/request.h -- reading requests, for the route files: the JSON body, typed members,
 * splits, inline rows, and the limits a request is held to. Every error names the field. The
 * answers are built with reply.h.
 *
 *     cJSON *body = NULL;
 *     if (request_body_json(req, 1, &body, err) < 0)     // 415 / 400 invalid_json
 *         return err->code;
 *     static const char *const fields[] = {"label", NULL};
 *     if (codec_check_fields(body, "", fields, err) < 0) ...   // 400 naming the unknown field
 *     const char *label = NULL;
 *     if (request_get_text(body, "label", REQUEST_LABEL_MAX + 1, &label, err) < 0) ...
 */
#ifndef ND_REQUEST_H
#define ND_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "codec.h"
#include "err.h"
#include "graph.h"
#include "http.h"
#include "model.h"

/* Longest checkpoint label, bytes. */
#define REQUEST_LABEL_MAX 200

/*
 * The request body as JSON. Content-Type must be application/json (parameters allowed); a
 * request without a Content-Type is read as JSON too, any other type is ERR_MEDIA (415). An
 * empty body is `{}` when empty_ok, else ERR_INVAL. Unparseable text, or text nesting deeper
 * than --max-depth, is ERR_JSON with the offset. `*out` is new (cJSON_Delete).
 */
int request_body_json(http_req_t *req, int empty_ok, cJSON **out, err_t *err);

/* Optional string member `key` of obj: *out = NULL when absent or null; else it must be a
 * non-empty UTF-8 string without control characters, shorter than `size` bytes. Borrowed
 * (points into obj). */
int request_get_text(const cJSON *obj, const char *key, size_t size, const char **out,
                     err_t *err);

/* Integer member `key` in [lo, hi]; when absent, ERR_INVAL if `required`, else `*out` = dflt.
 * null, another type, a fraction or a value out of range: ERR_INVAL naming key. */
int request_get_int(const cJSON *obj, const char *key, int required, int64_t lo, int64_t hi,
                    int64_t dflt, int64_t *out, err_t *err);

/* A split by name: "train" -> STORE_SPLIT_TRAIN, "validation" -> STORE_SPLIT_VALIDATION;
 * anything else (NULL included) is ERR_INVAL naming `split`. */
int request_split_from_name(const char *name, int32_t *split, err_t *err);

/* Optional member "split" of a request body: *split = -1 when absent or null, else the split it
 * names (ERR_INVAL naming `split` for another type or an unknown name). */
int request_get_split(const cJSON *obj, int32_t *split, err_t *err);

/*
 * Inline rows {"x": [[...]], "y": [...]} of a request (codec_batch_decode()), with at most
 * --max-batch-rows rows: more is ERR_INVAL with field "x" and a message naming the flag.
 * `*out` owns its arrays (codec_batch_free), also zeroed on failure.
 */
int request_batch_decode(http_req_t *req, const cJSON *body, int32_t n_x, int32_t n_y,
                         int require_y, codec_batch_t *out, err_t *err);

/*
 * The elements of a graph's leaves (param, const and input nodes; a null first dimension counts
 * one row) must not exceed `max` (--max-params): else ERR_INVAL with field
 * "<prefix>.nodes[i].shape" for the node that crosses it. Run before building the graph, so a
 * small request cannot make the daemon allocate gigabytes of zeros.
 */
int request_graph_leaf_limit(const ad_graph_spec_t *spec, const char *prefix, int64_t max,
                             err_t *err);

/* The rows of one evaluation of `m` must fit --max-work-values (model_check_work): else
 * ERR_INVAL naming `field` ("x" for inline rows, "batch_size" for a training batch), the
 * message giving the largest row count that fits and the flag. Call it before allocating. */
int request_check_work(const app_limits_t *lim, const model_t *m, int32_t rows,
                       const char *field, err_t *err);

/* request_check_work() for a train call on `rows` stored rows, naming "batch_size": every call
 * evaluates its loss on all of them at once, which a mini-batch (`batched`) does not change,
 * and the message says so. */
int request_check_train_work(const app_limits_t *lim, const model_t *m, int32_t rows,
                             int batched, err_t *err);

/* When err->msg contains `needle`, append " (<flag>)": lib reports a limit, the server knows
 * which flag sets it. */
void request_note_flag(err_t *err, const char *needle, const char *flag);

#endif /* ND_REQUEST_H */
