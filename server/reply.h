/* server/reply.h -- pieces of answers several route files share: the model object of
 * docs/api.md, ids and split names. Reading the request is request.h.
 *
 *     return http_reply_json(req, 200, reply_model_object(&row, app->registry));
 */
#ifndef ND_REPLY_H
#define ND_REPLY_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "registry.h"
#include "store.h"

/*
 * The model object: {"id","name" (null when unnamed),"kind","spec","step","status","rows",
 * "validation_rows","loss" (null before training),"created_at","updated_at"}. "spec" is
 * m->spec_json embedded verbatim (it was printed by codec_spec_encode, so its numbers round-trip). "status" is
 * "training" while a training run holds the model in `reg` (an async job from the moment it is
 * queued), or while the stored status says so; `reg` may be NULL (stored status only). New item,
 * NULL when out of memory.
 */
cJSON *reply_model_object(const store_model_t *m, registry_t *reg);

/* The name of a split: "train" or "validation". */
const char *reply_split_name(int32_t split);

/* The id of `m` as a cJSON number (ids are below 2^53). */
cJSON *reply_id(int64_t id);

#endif /* ND_REPLY_H */
