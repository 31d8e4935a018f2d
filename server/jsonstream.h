/* server/jsonstream.h -- JSON answers too large to build as one tree: parameters, gradients,
 * exports.
 *
 * A cJSON tree costs about 130 bytes per number and its printed text another 20, so building
 * the answer of a 45-million-parameter model whole would take gigabytes. A jsonstream prints
 * the small members with cJSON as usual and writes the number tensors while the answer is
 * being sent, a block at a time; the bytes are exactly those cJSON_PrintUnformatted would print
 * for the whole tree (numbers as codec_number prints them: the shortest round-trip text, null
 * when not finite).
 *
 *     cJSON *head = cJSON_CreateObject();                  // {"step":3}
 *     cJSON_AddNumberToObject(head, "step", 3);
 *     jsonstream_t *js = NULL;
 *     if (jsonstream_new(head, &js) < 0 ||                 // takes head
 *         jsonstream_add_params(js, "parameters", m, params) < 0 ||
 *         jsonstream_keep(js, params, free) < 0) ...       // params freed with the stream
 *     return jsonstream_reply(req, 200, js, err);          // takes js, also on failure
 *
 * The number arrays are borrowed: they must stay valid until the stream is freed, which is
 * what jsonstream_keep() is for. The model given to jsonstream_add_params() is only read during
 * the call (its tensor names and shapes are copied).
 */
#ifndef ND_JSONSTREAM_H
#define ND_JSONSTREAM_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "http.h"
#include "model.h"

typedef struct jsonstream jsonstream_t;

/* A stream that starts with the members of `head` (a JSON object; taken, freed here also on
 * failure). `*out` is new (jsonstream_free, or handed to jsonstream_reply); NULL on failure. */
int jsonstream_new(cJSON *head, jsonstream_t **out);

/* Append the member `key`: m's parameters as codec_params_encode(m, params) would encode them,
 * {"W1": [[...]], ...}. `params` (model_n_params(m) doubles) is borrowed. ERR_NOMEM. */
int jsonstream_add_params(jsonstream_t *js, const char *key, const model_t *m,
                          const double *params);

/* Append the member `key`: x[0..n) as a flat array of numbers. `x` is borrowed. ERR_NOMEM. */
int jsonstream_add_numbers(jsonstream_t *js, const char *key, const double *x, int64_t n);

/* Append the member `key`: `item` as cJSON prints it (a small value after a streamed one, as
 * "norm" after "gradients"). `item` is taken, freed here also on failure. ERR_NOMEM. */
int jsonstream_add_item(jsonstream_t *js, const char *key, cJSON *item);

/* Free `owned` with `free_fn` when the stream is freed (after the last byte was sent, or on
 * failure). On ERR_NOMEM `owned` is freed at once. */
int jsonstream_keep(jsonstream_t *js, void *owned, void (*free_fn)(void *));

/* Answer `status` with the stream's JSON (chunked). Takes `js`, also on failure (ERR_NOMEM with
 * `err` set). */
int jsonstream_reply(http_req_t *req, int status, jsonstream_t *js, err_t *err);

/* Free the stream and what it keeps. NULL is a no-op. */
void jsonstream_free(jsonstream_t *js);

#endif /* ND_JSONSTREAM_H */
