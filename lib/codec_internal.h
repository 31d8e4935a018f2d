/* lib/codec_internal.h -- what the codec's files (codec.c, codec_graph.c, codec_spec.c,
 * codec_train.c) share: field paths, typed getters that name the field in every error, and
 * the builders of encoded objects. Not for use outside the codec.
 *
 * Names with two underscores (codec__) are internal to the codec; codec.h has the public ones.
 *
 *     int64_t steps = 0;
 *     const cJSON *j = codec__member(json, "steps");
 *     if (j != NULL && codec__get_int(j, "steps", 0, 1000000000, &steps, err) < 0)
 *         return err->code;
 */
#ifndef ND_CODEC_INTERNAL_H
#define ND_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

#define CODEC_PATH_MAX 256
#define CODEC_INT_EXACT_MAX 9007199254740992LL  /* 2^53: larger integers are not exact doubles */
#define CODEC_MAX_ENTRIES 1000000               /* graph nodes or parameter tensors in one body */
#define CODEC_MAX_HISTORY 1000                  /* lbfgs memory and line-search iterations */

/* Add `item` to obj (NULL obj or item: failure). Frees item when it cannot be added. */
int codec__add(cJSON *obj, const char *key, cJSON *item);

/* An integer; cJSON prints integers below 10^15 exactly, so those stay plain number items. */
cJSON *codec__int(int64_t v);

/* A JSON boolean as 0 or 1. */
int codec__get_bool(const cJSON *j, const char *path, int32_t *out, err_t *err);

/* A string among names mapped by from_name (0 = unknown); `allowed` lists them for the message. */
int codec__get_enum(const cJSON *j, const char *path, int32_t (*from_name)(const char *),
                    const char *allowed, int32_t *out, err_t *err);

/* codec__get_int() into an int32_t. */
int codec__get_int32(const cJSON *j, const char *path, int64_t lo, int64_t hi, int32_t *out,
                     err_t *err);

/* A name string (UTF-8, no control characters) shorter than `size` bytes, copied to out. */
int codec__get_name(const cJSON *j, const char *path, char *out, size_t size, err_t *err);

/* "mean" | "sum" as enum ad_reduction. */
int codec__get_reduction(const cJSON *j, const char *path, int32_t *out, err_t *err);

/* A member of an object, or NULL when it is absent or null (null means "use the default"). */
const cJSON *codec__member(const cJSON *obj, const char *key);

/* dst = "<prefix>[i]". */
void codec__path_index(char *dst, const char *prefix, int64_t i);

/* dst = "<prefix>.<key>", or "<key>" when prefix is empty. dst may not alias key. */
void codec__path_key(char *dst, const char *prefix, const char *key);

/* Append `item` to arr; frees item when it cannot be added. */
int codec__push(cJSON *arr, cJSON *item);

/* enum ad_reduction as its name. */
const char *codec__reduction_name(int32_t r);

/* ERR_INVAL naming path ("<path> must be <what>, got ...") unless j is an object. */
int codec__require_object(const cJSON *j, const char *path, const char *what, err_t *err);

/* A finite number. */
int codec__get_finite(const cJSON *j, const char *path, double *out, err_t *err);

/* An integral number in [lo, hi]. */
int codec__get_int(const cJSON *j, const char *path, int64_t lo, int64_t hi, int64_t *out,
                   err_t *err);

#endif /* ND_CODEC_INTERNAL_H */
