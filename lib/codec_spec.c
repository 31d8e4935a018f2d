/* lib/codec_spec.c -- the model specification in JSON: kind, layers, loss, init, optimizer and
 * its schedule, decoded with a field path in every error, and encoded back with its defaults
 * filled in. Part of codec (codec.h). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_internal.h"

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

