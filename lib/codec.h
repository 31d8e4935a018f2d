/* lib/codec.h -- JSON <-> lib types (spec, parameters, graphs, batches, train requests) and CSV
 * rows. All input validation of untrusted data happens here; every error carries a field path:
 * "hidden[1].units", "x[3][2]", "graph.nodes[4].inputs[1]", "line 17".
 *
 * This is the only lib file that includes cJSON.h. Decoders take a parsed cJSON item and fill a
 * plain C struct; encoders return a new cJSON item the caller adds to a reply.
 *
 *     cJSON *root = NULL;
 *     if (codec_parse(body, len, &root, &err) < 0) return reply_error(&err);  // ERR_JSON
 *     model_spec_t spec;
 *     if (codec_spec_decode(root, &spec, &err) < 0) ...                       // ERR_INVAL
 *     cJSON_Delete(root);
 */
#ifndef ND_CODEC_H
#define ND_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "graph.h"
#include "evaluate.h"
#include "model.h"
#include "train.h"

#define CODEC_MAX_DEPTH_DEFAULT 64

/* What a JSON value is, for error messages: "a number", "an array", "null", "nothing" (NULL). */
const char *codec_json_type(const cJSON *j);

/* Every member of object `obj` must be named in `allowed` (NULL-terminated) and given once:
 * else ERR_INVAL naming "<prefix>.<member>" (the member alone when prefix is "" or NULL), with
 * the allowed names in the message, so a typo never passes silently. ERR_INVAL naming prefix
 * when obj is not an object. */
int codec_check_fields(const cJSON *obj, const char *prefix, const char *const *allowed,
                       err_t *err);

/* Parse JSON text (not necessarily NUL-terminated). ERR_JSON with the byte offset (and line)
 * in the message when it is not JSON, or nests deeper than max_depth; ERR_INVAL when the body
 * is empty. *out is new: cJSON_Delete(). */
int codec_parse(const char *text, size_t len, int max_depth, cJSON **out, err_t *err);

/* Spec: every field of docs/api.md's model specification, unknown fields rejected (field = name).
 * Numbers must be finite; integers must be integral and in range. The spec is NOT resolved
 * (see model_spec_resolve). On failure the spec is freed. */
int codec_spec_decode(const cJSON *json, model_spec_t *spec, err_t *err);

/* The spec as JSON, without initial parameter values (the "spec" field of a model object and
 * what the store keeps). Round-trips through codec_spec_decode. New item. */
cJSON *codec_spec_encode(const model_spec_t *spec);

/* Graph: {"nodes":[...], "output": id}. field paths "graph.nodes[i].<name>" with the given
 * prefix ("graph" for specs, "graph" for /v1/graphs/eval). */
int codec_graph_decode(const cJSON *json, const char *prefix, ad_graph_spec_t *graph,
                       err_t *err);
cJSON *codec_graph_encode(const ad_graph_spec_t *graph);

/* {"W1": [[...]], ...} checked against the model's tensors: every name known, shapes exactly
 * equal, numbers finite. require_all: every tensor must be present (PUT /parameters). Writes into
 * a copy of model_params(m) given as `dst` only when everything is valid (all-or-nothing). */
int codec_params_decode(const cJSON *json, const model_t *m, int require_all, double *dst,
                        err_t *err);
/* The model's parameters as {"W1": [[...]], ...}. New item. */
cJSON *codec_params_encode(const model_t *m, const double *params);

/* The JSON shape of the model's parameter tensor k, as codec_params_encode writes it: a graph
 * model's param node shape ([], [n] or [r, c]), else [rows, cols]. */
void codec_param_shape(const model_t *m, int32_t k, tensor_shape_t *shape);

/* Parameter values for a spec ("parameters" inside a spec) before the model exists: decoded as
 * named matrices, shapes checked later by model_new. */
int codec_param_values_decode(const cJSON *json, model_spec_t *spec, err_t *err);

/* A decoded batch owning its arrays. */
typedef struct codec_batch {
    int32_t rows, n_x, n_y;
    double *x;   /* rows * n_x */
    double *y;   /* rows * n_y, NULL when labels were not given */
} codec_batch_t;

void codec_batch_free(codec_batch_t *b);

/* {"x": [[...]], "y": [...]} for a model with n_x inputs and n_y label columns (n_y == 1: y is a
 * number per row, or [v] per row; n_y > 1: an array of n_y per row). require_y: y must be
 * present. Ragged rows, wrong types, NaN/Inf, more than max_rows rows: ERR_INVAL naming "x[3]",
 * "x[3][2]", "y[5]". */
int codec_batch_decode(const cJSON *json, int32_t n_x, int32_t n_y, int require_y,
                       int64_t max_rows, codec_batch_t *out, err_t *err);

typedef struct codec_csv_opts {
    int32_t n_x;             /* features per row the model expects */
    int32_t label_columns;   /* trailing label columns (default 1) */
    int32_t label_binary;    /* 1: every label must be 0 or 1 (model_label_rule) */
    int32_t label_classes;   /* k > 0: every label must be a class index 0..k-1 */
    int32_t header;          /* -1 auto, 0 never, 1 always */
    int64_t max_rows;
} codec_csv_opts_t;

/* CSV text -> batch. Lines are 1-based physical lines, header included; every error about a
 * line names it as the field ("line 17") and its message gives the column where there is one,
 * a label out of the rule included. Blank trailing lines are ignored; CRLF accepted. */
int codec_csv_decode(const char *text, size_t len, const codec_csv_opts_t *opts,
                     codec_batch_t *out, err_t *err);

/*
 * The same decoder fed in pieces, e.g. a request body as it arrives: the text is never held
 * whole, rows go straight into the batch's arrays. Any split of the text gives exactly the
 * result and errors of codec_csv_decode() on the whole.
 *
 *     codec_csv_stream_t *s = NULL;
 *     rc = codec_csv_stream_new(&opts, &s, &err);
 *     while (rc == 0 && more) rc = codec_csv_stream_feed(s, chunk, n, &err);   // ERR_NOMEM only
 *     if (rc == 0) rc = codec_csv_stream_finish(s, &batch, &err);              // data errors
 *     codec_csv_stream_free(s);
 *
 * `*out` of _new is new (codec_csv_stream_free, NULL is a no-op); opts is copied. feed fails
 * only when out of memory; errors in the data are reported by finish, which hands the arrays
 * to `out` (codec_batch_free) on success.
 */
typedef struct codec_csv_stream codec_csv_stream_t;
int codec_csv_stream_new(const codec_csv_opts_t *opts, codec_csv_stream_t **out, err_t *err);
int codec_csv_stream_feed(codec_csv_stream_t *s, const char *data, size_t n, err_t *err);
int codec_csv_stream_finish(codec_csv_stream_t *s, codec_batch_t *out, err_t *err);
void codec_csv_stream_free(codec_csv_stream_t *s);

/* What GET /v1/models/{id}/export answers and POST /v1/models/import reads. */
#define CODEC_EXPORT_FORMAT "neurond-model"
#define CODEC_EXPORT_VERSION 1

/* An export, decoded: everything but the model it describes. */
typedef struct codec_export {
    model_spec_t spec;               /* decoded, not resolved; freed by codec_export_free() */
    char name[MODEL_NAME_MAX];       /* "" = none; the top-level name, else the spec's */
    int64_t step;                    /* in [0, TRAIN_STEP_MAX] */
    double loss;                     /* NAN when null or absent */
    const cJSON *parameters;         /* borrowed from the decoded JSON; never NULL */
    const cJSON *optimizer_state;    /* borrowed; NULL when absent or null (a fresh optimizer) */
} codec_export_t;

/*
 * An export's fields (format, version, name, spec, step, loss, parameters, optimizer_state),
 * unknown ones rejected; spec errors are named "spec.<field>". The parameters and the
 * optimizer state need the model: decode them with codec_params_decode() and
 * codec_optim_state_decode() once it is built. On failure nothing is left to free.
 */
int codec_export_decode(const cJSON *json, codec_export_t *out, err_t *err);
void codec_export_free(codec_export_t *e);

/* "optimizer_state": exactly optim_state_len(o) finite numbers that make a state the engine
 * could have produced at global step `step` (optim_state_check), written into optim_state(o).
 * Field "optimizer_state[i]" for a value that is not a finite number, else "optimizer_state".
 * On failure the state is zeroed. */
int codec_optim_state_decode(const cJSON *json, optim_t *o, int64_t step, err_t *err);

/* Train request fields of docs/api.md, unknown fields rejected; null means "unset". */
int codec_train_req_decode(const cJSON *json, train_req_t *req, int *async, err_t *err);

/* Train result as docs/api.md's object, model_id first as it lists it (left out when model_id
 * is 0: a result of no stored model). New item, NULL when out of memory. */
cJSON *codec_train_result_encode(int64_t model_id, const train_result_t *res);

/* An evaluation as {"rows","loss","metrics":{…}}, the metrics of its family (docs/api.md
 * "POST /v1/models/{id}/evaluate"). New item, NULL when out of memory. */
cJSON *codec_eval_encode(const eval_result_t *r);

/* A tensor of the given shape as JSON: scalar -> number, [n] -> array, [r,c] -> nested. */
cJSON *codec_tensor_encode(const tensor_shape_t *shape, const double *x);

/* A JSON value as a tensor of an expected shape (AD_ROWS in d[0] accepts any row count; *rows
 * gets it). Values are written to a new array *out. field names the value for errors. */
int codec_tensor_decode(const cJSON *json, const tensor_shape_t *shape, const char *field,
                        double **out, int32_t *rows, err_t *err);

/* The shortest of %.15g, %.16g, %.17g that reads back as exactly v (v finite); buf >= 32.
 * Returns the precision it took (15, 16 or 17), so the same text can be printed again with
 * one snprintf("%.*g"). */
int codec_format_double(double v, char *buf, size_t size);

/* A finite double as a JSON number that round-trips exactly (cJSON prints %1.15g then %1.17g). */
cJSON *codec_number(double v);

/* Turn every number in the tree `j` (a parsed document, say) into codec_number()'s item, so
 * that printing it gives back exactly the doubles it holds. 0, or ERR_NOMEM with the tree
 * partly converted (still valid, still the same values). */
int codec_exact_numbers(cJSON *j);

#endif /* ND_CODEC_H */
