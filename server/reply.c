/* server/reply.c -- pieces of answers several route files build: the model object, ids, split
 * names. */
#include "reply.h"

#include <string.h>

#include "codec.h"

cJSON *reply_id(int64_t id)
{
    return cJSON_CreateNumber((double)id);
}

const char *reply_split_name(int32_t split)
{
    return split == STORE_SPLIT_VALIDATION ? "validation" : "train";
}

cJSON *reply_model_object(const store_model_t *m, registry_t *reg)
{
    /* In this process the registry knows for sure whether a run holds the model; a run of
     * another replica (PostgreSQL) holds its lease. The stored status can be stale (its reset
     * to idle fails while the storage is unavailable, or its replica died). */
    int training = reg != NULL ? registry_is_training(reg, m->id) || m->leased
                               : strcmp(m->status, "training") == 0;
    cJSON *o = cJSON_CreateObject();
    if (o == NULL)
        return NULL;
    cJSON *loss = m->has_loss ? codec_number(m->loss) : cJSON_CreateNull();
    if (!cJSON_AddItemToObject(o, "id", reply_id(m->id)) ||
        !cJSON_AddItemToObject(o, "name", m->name != NULL ? cJSON_CreateString(m->name)
                                                          : cJSON_CreateNull()) ||
        cJSON_AddStringToObject(o, "kind", m->kind) == NULL ||
        cJSON_AddRawToObject(o, "spec", m->spec_json) == NULL ||
        !cJSON_AddItemToObject(o, "step", cJSON_CreateNumber((double)m->step)) ||
        cJSON_AddStringToObject(o, "status", training ? "training" : "idle") == NULL ||
        !cJSON_AddItemToObject(o, "rows", cJSON_CreateNumber((double)m->rows)) ||
        !cJSON_AddItemToObject(o, "validation_rows",
                               cJSON_CreateNumber((double)m->validation_rows)) ||
        !cJSON_AddItemToObject(o, "loss", loss) ||
        cJSON_AddStringToObject(o, "created_at", m->created_at) == NULL ||
        cJSON_AddStringToObject(o, "updated_at", m->updated_at) == NULL) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
