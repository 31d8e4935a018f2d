/* lib/model_internal.h -- what the model's files (model.c, model_spec.c) share about class
 * kinds. Not for use outside the model module; names with two underscores are internal.
 *
 *     if (model__is_class_kind(spec->kind)) rows_of_W1 = model__class_rows(spec);
 */
#ifndef ND_MODEL_INTERNAL_H
#define ND_MODEL_INTERNAL_H

#include <stdint.h>

#include "model.h"

/* softmax, ova and ovo: W1 has one row per class (or per pair), labels are class ids. */
static inline int model__is_class_kind(int32_t kind)
{
    return kind == MODEL_KIND_SOFTMAX || kind == MODEL_KIND_OVA || kind == MODEL_KIND_OVO;
}

/* Rows of W1 for a class kind: one per class, or one per pair for ovo. */
static inline int64_t model__class_rows(const model_spec_t *s)
{
    if (s->kind == MODEL_KIND_OVO)
        return (int64_t)s->classes * (s->classes - 1) / 2;
    return s->classes;
}

#endif /* ND_MODEL_INTERNAL_H */
