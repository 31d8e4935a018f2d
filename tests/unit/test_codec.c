/* tests/unit/test_codec.c -- JSON and CSV decoding with exact field paths for every kind of bad
 * input, spec and graph round trips, exact number printing, all-or-nothing parameter writes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "rng.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------------------- */

/* codec_parse over a copy without a terminating NUL, so ASan sees any read past the end. */
static int parse_n(const char *s, size_t n, int max_depth, cJSON **out, err_t *err)
{
    char *copy = malloc(n > 0 ? n : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, s, n);
    int rc = codec_parse(copy, n, max_depth, out, err);
    free(copy);
    return rc;
}

static cJSON *parse_ok(const char *s)
{
    cJSON *j = NULL;
    err_t err = {0};
    int rc = parse_n(s, strlen(s), 0, &j, &err);
    ck_assert_msg(rc == 0, "parse %s: %s", s, err.msg);
    return j;
}

static void assert_err(int rc, const err_t *err, int code, const char *field, const char *part,
                       const char *input)
{
    ck_assert_msg(rc == code, "%s: rc %s, expected %s (%s)", input, err_name(rc),
                  err_name(code), err->msg);
    ck_assert_msg(err->code == code, "%s: err.code %s", input, err_name(err->code));
    if (field != NULL)
        ck_assert_msg(strcmp(err->field, field) == 0, "%s: field \"%s\", expected \"%s\" (%s)",
                      input, err->field, field, err->msg);
    if (part != NULL)
        ck_assert_msg(strstr(err->msg, part) != NULL, "%s: message \"%s\" lacks \"%s\"", input,
                      err->msg, part);
}

static int spec_decode_str(const char *json, model_spec_t *s, err_t *err)
{
    cJSON *j = parse_ok(json);
    int rc = codec_spec_decode(j, s, err);
    cJSON_Delete(j);
    return rc;
}

static void spec_err(const char *json, const char *field, const char *part)
{
    model_spec_t s;
    err_t err = {0};
    int rc = spec_decode_str(json, &s, &err);
    assert_err(rc, &err, ERR_INVAL, field, part, json);
    /* On failure the spec owns nothing. */
    ck_assert_ptr_null(s.param_value);
    ck_assert_ptr_null(s.graph.node);
}

static void spec_ok(const char *json, model_spec_t *s)
{
    err_t err = {0};
    int rc = spec_decode_str(json, s, &err);
    ck_assert_msg(rc == 0, "%s: %s (field %s)", json, err.msg, err.field);
}

static void assert_graph_eq(const ad_graph_spec_t *a, const ad_graph_spec_t *b)
{
    ck_assert_int_eq(a->n_node, b->n_node);
    ck_assert_str_eq(a->output, b->output);
    for (int32_t i = 0; i < a->n_node; ++i) {
        const ad_node_spec_t *p = &a->node[i], *q = &b->node[i];
        ck_assert_str_eq(p->id, q->id);
        ck_assert_int_eq(p->op, q->op);
        ck_assert_int_eq(p->n_in, q->n_in);
        for (int32_t k = 0; k < p->n_in; ++k)
            ck_assert_str_eq(p->in[k], q->in[k]);
        ck_assert_int_eq(p->shape.n_d, q->shape.n_d);
        for (int32_t k = 0; k < p->shape.n_d; ++k)
            ck_assert_int_eq(p->shape.d[k], q->shape.d[k]);
        ck_assert_int_eq(p->reduction, q->reduction);
        ck_assert_int_eq(p->transpose_b, q->transpose_b);
        ck_assert_int_eq(p->value == NULL, q->value == NULL);
        if (p->value != NULL)
            ck_assert(memcmp(p->value, q->value,
                             (size_t)tensor_shape_elems(&p->shape) * sizeof(double)) == 0);
    }
}

static void assert_spec_eq(const model_spec_t *a, const model_spec_t *b)
{
    ck_assert_str_eq(a->name, b->name);
    ck_assert_int_eq(a->kind, b->kind);
    ck_assert_int_eq(a->inputs, b->inputs);
    ck_assert_int_eq(a->outputs, b->outputs);
    ck_assert_int_eq(a->classes, b->classes);
    ck_assert_int_eq(a->n_hidden, b->n_hidden);
    for (int32_t i = 0; i < a->n_hidden; ++i) {
        ck_assert_int_eq(a->hidden[i].units, b->hidden[i].units);
        ck_assert_int_eq(a->hidden[i].activation, b->hidden[i].activation);
    }
    ck_assert_int_eq(a->output_activation, b->output_activation);
    ck_assert_int_eq(a->loss, b->loss);
    ck_assert_int_eq(a->reduction, b->reduction);
    ck_assert_int_eq(a->init_method, b->init_method);
    ck_assert(a->init_scale == b->init_scale);
    ck_assert(a->init_seed == b->init_seed);
    const optim_cfg_t *p = &a->optimizer, *q = &b->optimizer;
    ck_assert_int_eq(p->method, q->method);
    ck_assert(p->learning_rate == q->learning_rate);
    ck_assert(p->momentum == q->momentum);
    ck_assert(p->beta1 == q->beta1);
    ck_assert(p->beta2 == q->beta2);
    ck_assert(p->epsilon == q->epsilon);
    ck_assert(p->weight_decay == q->weight_decay);
    ck_assert_int_eq(p->history, q->history);
    ck_assert_int_eq(p->max_line_search, q->max_line_search);
    ck_assert(memcmp(&p->schedule, &q->schedule, sizeof p->schedule) == 0);
    assert_graph_eq(&a->graph, &b->graph);
}

/* encode -> print -> parse -> decode. */
static void spec_reencode(const model_spec_t *s, model_spec_t *back)
{
    cJSON *j = codec_spec_encode(s);
    ck_assert_ptr_nonnull(j);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "parameters"));
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    spec_ok(text, back);
    free(text);
}

static const char *const two_layer_graph =
    "{\"nodes\": ["
    "{\"id\": \"x\", \"op\": \"input\", \"shape\": [null, 2]},"
    "{\"id\": \"xb\", \"op\": \"bias\", \"inputs\": [\"x\"]},"
    "{\"id\": \"W1\", \"op\": \"param\", \"shape\": [3, 3], \"value\": "
    "[[0.01, 0.02, 0.03], [0.03, 0.01, 0.02], [0.02, 0.03, 0.01]]},"
    "{\"id\": \"a\", \"op\": \"matmul\", \"inputs\": [\"xb\", \"W1\"], \"transpose_b\": true},"
    "{\"id\": \"z\", \"op\": \"sigmoid\", \"inputs\": [\"a\"]},"
    "{\"id\": \"zb\", \"op\": \"bias\", \"inputs\": [\"z\"]},"
    "{\"id\": \"W2\", \"op\": \"param\", \"shape\": [1, 4]},"
    "{\"id\": \"out\", \"op\": \"matmul\", \"inputs\": [\"zb\", \"W2\"], \"transpose_b\": true},"
    "{\"id\": \"y\", \"op\": \"input\", \"shape\": [null, 1]},"
    "{\"id\": \"k\", \"op\": \"const\", \"shape\": [], \"value\": 0.5},"
    "{\"id\": \"L\", \"op\": \"l2_loss\", \"inputs\": [\"out\", \"y\"], \"reduction\": \"sum\"}"
    "], \"output\": \"L\"}";

/* ---- parse -------------------------------------------------------------------------------- */

START_TEST(test_parse_ok_and_empty)
{
    cJSON *j = parse_ok(" {\"a\": [1, 2.5, \"s\"]}\r\n ");
    ck_assert(cJSON_IsObject(j));
    cJSON_Delete(j);
    err_t err = {0};
    j = (cJSON *)1;
    int rc = parse_n("", 0, 0, &j, &err);
    assert_err(rc, &err, ERR_INVAL, "", "body is empty", "empty");
    ck_assert_ptr_null(j);
    rc = parse_n(" \n\t ", 4, 0, &j, &err);
    assert_err(rc, &err, ERR_INVAL, "", "body is empty", "blanks");
    rc = codec_parse(NULL, 0, 0, &j, &err);
    assert_err(rc, &err, ERR_INVAL, "", "body is empty", "NULL");
}
END_TEST

START_TEST(test_parse_errors_name_offset_and_line)
{
    static const struct {
        const char *text;
        const char *part;
    } cases[] = {
        {"{\"a\": }", "line 1"},
        {"{\n  \"a\": 1,\n  \"b\": tru\n}", "line 3"},
        {"{\"a\": 1} x", "byte offset 9 (line 1, column 10)"},
        {"{\"a\": 1}{}", "unexpected data"},
        {"[1, 2", "invalid JSON"},
        {"{\"a\": \"unterminated", "unterminated string"},
        {"{\"a\": \"ends in backslash\\", "unterminated string"},
        {"nul", "invalid JSON"},
        {"\x01{}", "control character"},
        /* Numbers outside JSON's grammar, which strtod would read. */
        {"{\"a\":02}", "malformed number at byte offset 5"},
        {"[2.]", "malformed number at byte offset 1"},
        {"[1.e1]", "malformed number"},
        {"[-01]", "malformed number"},
        {"[00]", "malformed number"},
        {"[-]", "malformed number"},
        {"[.5]", "invalid JSON"},
        {"[+1]", "invalid JSON"},
        {"[1e]", "malformed number"},
        {"[1e+]", "malformed number"},
        {"[1E5.0]", "malformed number"},
        {"[0x10]", "invalid JSON"},
    };
    /* ...and numbers that are JSON, strings that merely look like bad ones. */
    static const char *const fine[] = {"[0, -0, 0.5, -0.5e-7, 1E+300, 10, 123.456e2]",
                                       "{\"a\":\"02\",\"2.\":[1.5]}", "-1", "0"};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; ++i)
        cJSON_Delete(parse_ok(fine[i]));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        cJSON *j = NULL;
        err_t err = {0};
        int rc = parse_n(cases[i].text, strlen(cases[i].text), 0, &j, &err);
        assert_err(rc, &err, ERR_JSON, NULL, cases[i].part, cases[i].text);
        ck_assert_msg(strstr(err.msg, "byte offset") != NULL, "%s", err.msg);
        ck_assert_ptr_null(j);
    }
    /* A NUL inside the given length is not the end of the body. */
    cJSON *j = NULL;
    err_t err = {0};
    int rc = parse_n("{}\0{}", 5, 0, &j, &err);
    assert_err(rc, &err, ERR_JSON, NULL, "byte offset 2", "embedded NUL");
}
END_TEST

static char *nested(int depth, const char *inner)
{
    size_t n = strlen(inner);
    char *s = malloc((size_t)depth * 2 + n + 1);
    memset(s, '[', (size_t)depth);
    memcpy(s + depth, inner, n);
    memset(s + depth + n, ']', (size_t)depth);
    s[2 * depth + n] = '\0';
    return s;
}

START_TEST(test_parse_depth_limit)
{
    cJSON *j = NULL;
    err_t err = {0};
    char *s = nested(CODEC_MAX_DEPTH_DEFAULT, "1");
    ck_assert_int_eq(parse_n(s, strlen(s), 0, &j, &err), 0);
    cJSON_Delete(j);
    free(s);

    s = nested(CODEC_MAX_DEPTH_DEFAULT + 1, "1");
    int rc = parse_n(s, strlen(s), 0, &j, &err);
    assert_err(rc, &err, ERR_JSON, NULL, "deeper than 64", "65 levels");
    ck_assert_msg(strstr(err.msg, "byte offset 64") != NULL, "%s", err.msg);
    free(s);

    /* Far past cJSON's own recursion limit: rejected by the scan, no stack blow-up. */
    s = nested(1000000, "");
    rc = parse_n(s, strlen(s), 0, &j, &err);
    assert_err(rc, &err, ERR_JSON, NULL, "deeper than", "1e6 levels");
    free(s);

    /* Brackets inside strings do not count; a custom limit applies. */
    j = parse_ok("{\"a\": \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}");
    cJSON_Delete(j);
    rc = parse_n("[[[1]]]", 7, 2, &j, &err);
    assert_err(rc, &err, ERR_JSON, NULL, "deeper than 2", "limit 2");
    ck_assert_int_eq(parse_n("[[1]]", 5, 2, &j, &err), 0);
    cJSON_Delete(j);
}
END_TEST

/* ---- numbers ------------------------------------------------------------------------------ */

static double print_and_read(cJSON *item)
{
    cJSON *arr = cJSON_CreateArray();
    cJSON_AddItemToArray(arr, item);
    char *text = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    cJSON *back = parse_ok(text);
    free(text);
    double v = cJSON_GetArrayItem(back, 0)->valuedouble;
    cJSON_Delete(back);
    return v;
}

START_TEST(test_number_round_trips_exactly)
{
    static const double fixed[] = {
        0.0, 0.1, 1.0 / 3.0, -2.5, 1e300, 5e-324, 2.2250738585072014e-308, 9007199254740992.0,
        9007199254740993.0, 123456789.123456789, 0.69033491410796288, 1.7976931348623157e308};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; ++i) {
        double got = print_and_read(codec_number(fixed[i]));
        ck_assert_msg(got == fixed[i], "%.17g printed as %.17g", fixed[i], got);
    }
    rng_t r;
    rng_seed(&r, 7);
    for (int i = 0; i < 20000; ++i) {
        double v = (rng_uniform(&r) - 0.5) * pow(10.0, (double)(int)rng_below(&r, 40) - 20);
        double got = print_and_read(codec_number(v));
        ck_assert_msg(got == v, "%.17g printed as %.17g", v, got);
    }
    /* -0 keeps its sign; non-finite values have no JSON number: null. */
    ck_assert(signbit(print_and_read(codec_number(-0.0))));
    cJSON *n = codec_number(NAN);
    ck_assert(cJSON_IsNull(n));
    cJSON_Delete(n);
    n = codec_number(INFINITY);
    ck_assert(cJSON_IsNull(n));
    cJSON_Delete(n);
    /* Short numbers stay short. */
    n = codec_number(0.1);
    char *text = cJSON_PrintUnformatted(n);
    ck_assert_str_eq(text, "0.1");
    free(text);
    cJSON_Delete(n);
}
END_TEST

/* A parsed document printed again keeps every double, keys and nesting included; cJSON alone
 * prints 0.30000000000000004 as 0.3. */
START_TEST(test_exact_numbers_reprint_a_document)
{
    static const char doc[] =
        "{\"learning_rate\":0.30000000000000004,\"steps\":7,\"a\":[0.6927934659557711,"
        "{\"b\":-1e-300,\"c\":[1.7976931348623157e308,0.1]}],\"s\":\"0.3\",\"t\":true}";
    cJSON *j = parse_ok(doc);
    char *plain = cJSON_PrintUnformatted(j);
    ck_assert_ptr_null(strstr(plain, "0.30000000000000004"));   /* what this guards against */
    free(plain);
    ck_assert_int_eq(codec_exact_numbers(j), 0);
    char *text = cJSON_PrintUnformatted(j);
    ck_assert_ptr_nonnull(strstr(text, "\"learning_rate\":0.30000000000000004,\"steps\":7,"));
    cJSON *back = parse_ok(text), *orig = parse_ok(doc);
    ck_assert(cJSON_Compare(back, orig, 1));
    const double *a = &cJSON_GetObjectItemCaseSensitive(back, "learning_rate")->valuedouble;
    ck_assert(*a == 0.30000000000000004);
    const cJSON *b0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(back, "a"), 0);
    ck_assert(b0->valuedouble == 0.6927934659557711);
    free(text);
    cJSON_Delete(orig);
    cJSON_Delete(back);
    cJSON_Delete(j);
}
END_TEST

/* ---- spec --------------------------------------------------------------------------------- */

START_TEST(test_spec_decode_full)
{
    model_spec_t s;
    spec_ok("{\"name\": \"xor\", \"kind\": \"mlp\", \"inputs\": 2, \"outputs\": 1,"
            " \"hidden\": [{\"units\": 3, \"activation\": \"tanh\"}, {\"units\": 4}],"
            " \"output_activation\": \"sigmoid\", \"loss\": \"bce\", \"reduction\": \"sum\","
            " \"init\": {\"method\": \"normal\", \"scale\": 0.5, \"seed\": 9007199254740992},"
            " \"parameters\": {\"W1\": [[1, 2, 3], [4, 5, 6], [7, 8, 9]], \"b\": [1, 2], \"c\": 3},"
            " \"optimizer\": {\"method\": \"adam\", \"learning_rate\": 0.01, \"beta1\": 0.8,"
            " \"weight_decay\": 0.001}}",
            &s);
    ck_assert_str_eq(s.name, "xor");
    ck_assert_int_eq(s.kind, MODEL_KIND_MLP);
    ck_assert_int_eq(s.inputs, 2);
    ck_assert_int_eq(s.outputs, 1);
    ck_assert_int_eq(s.n_hidden, 2);
    ck_assert_int_eq(s.hidden[0].units, 3);
    ck_assert_int_eq(s.hidden[0].activation, MODEL_ACT_TANH);
    ck_assert_int_eq(s.hidden[1].units, 4);
    ck_assert_int_eq(s.hidden[1].activation, 0); /* resolved to sigmoid later */
    ck_assert_int_eq(s.output_activation, MODEL_ACT_SIGMOID);
    ck_assert_int_eq(s.loss, MODEL_LOSS_BCE);
    ck_assert_int_eq(s.reduction, AD_REDUCTION_SUM);
    ck_assert_int_eq(s.init_method, MODEL_INIT_NORMAL);
    ck_assert(s.init_scale == 0.5);
    ck_assert(s.init_seed == 9007199254740992ULL);
    ck_assert_int_eq(s.n_param_value, 3);
    ck_assert_str_eq(s.param_value[0].name, "W1");
    ck_assert_int_eq(s.param_value[0].rows, 3);
    ck_assert_int_eq(s.param_value[0].cols, 3);
    ck_assert(s.param_value[0].x[5] == 6.0);
    ck_assert_int_eq(s.param_value[1].rows, 2);
    ck_assert_int_eq(s.param_value[1].cols, 1);
    ck_assert_int_eq(s.param_value[2].rows, 1);
    ck_assert(s.param_value[2].x[0] == 3.0);
    ck_assert_int_eq(s.optimizer.method, OPTIM_METHOD_ADAM);
    ck_assert(s.optimizer.learning_rate == 0.01);
    ck_assert(s.optimizer.beta1 == 0.8);
    ck_assert(s.optimizer.beta2 == 0.999);  /* adam default kept */
    ck_assert(s.optimizer.weight_decay == 0.001);
    ck_assert_int_eq(s.optimizer.schedule.kind, OPTIM_SCHEDULE_CONSTANT);
    model_spec_free(&s);

    /* A schedule: its kind's defaults fill what is not given. */
    spec_ok("{\"kind\": \"logistic\", \"inputs\": 2, \"optimizer\": {\"schedule\":"
            " {\"kind\": \"step\", \"step_size\": 7, \"warmup_steps\": 2}}}",
            &s);
    ck_assert_int_eq(s.optimizer.schedule.kind, OPTIM_SCHEDULE_STEP);
    ck_assert_int_eq(s.optimizer.schedule.step_size, 7);
    ck_assert(s.optimizer.schedule.gamma == 0.1);
    ck_assert_int_eq(s.optimizer.schedule.warmup_steps, 2);
    model_spec_free(&s);

    /* Minimal spec and nulls: defaults. */
    spec_ok("{\"kind\": \"logistic\", \"inputs\": 3, \"name\": null, \"loss\": null,"
            " \"optimizer\": {\"method\": \"momentum\", \"learning_rate\": null}}",
            &s);
    model_spec_t def;
    model_spec_default(&def);
    ck_assert_str_eq(s.name, "");
    ck_assert_int_eq(s.loss, MODEL_LOSS_DEFAULT);
    ck_assert_int_eq(s.reduction, def.reduction);
    ck_assert_int_eq(s.init_method, def.init_method);
    ck_assert(s.init_scale == def.init_scale);
    ck_assert_int_eq(s.optimizer.method, OPTIM_METHOD_MOMENTUM);
    ck_assert(s.optimizer.momentum == 0.9);
    ck_assert(s.optimizer.learning_rate == 0.1);
    model_spec_free(&s);

    /* A graph model may leave inputs to the graph. */
    char buf[4096];
    snprintf(buf, sizeof buf, "{\"kind\": \"graph\", \"graph\": %s}", two_layer_graph);
    spec_ok(buf, &s);
    ck_assert_int_eq(s.inputs, 0);
    ck_assert_int_eq(s.graph.n_node, 11);
    model_spec_free(&s);
}
END_TEST

START_TEST(test_spec_errors_name_the_field)
{
    static const struct {
        const char *json, *field, *part;
    } cases[] = {
        /* not an object, missing fields */
        {"[1]", "", "object"},
        {"{\"inputs\": 2}", "kind", "required"},
        {"{\"kind\": null, \"inputs\": 2}", "kind", "required"},
        {"{\"kind\": \"linear\"}", "inputs", "required"},
        {"{\"kind\": \"linear\", \"inputs\": null}", "inputs", "required"},
        /* unknown fields at every level */
        {"{\"kind\": \"linear\", \"inputs\": 2, \"nmae\": \"a\"}", "nmae", "unknown field"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"learnin_rate\": 0.1}}",
         "optimizer.learnin_rate", "unknown field"},
        {"{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": [{\"units\": 2}, {\"unit\": 3}]}",
         "hidden[1].unit", "unknown field"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"init\": {\"sed\": 1}}", "init.sed",
         "unknown field"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"inputs\": 3}", "inputs", "twice"},
        /* wrong types */
        {"{\"kind\": 3, \"inputs\": 2}", "kind", "string"},
        {"{\"kind\": \"linear\", \"inputs\": \"2\"}", "inputs", "must be an integer, got a string"},
        {"{\"kind\": \"linear\", \"inputs\": true}", "inputs", "got a boolean"},
        {"{\"kind\": \"linear\", \"inputs\": [2]}", "inputs", "got an array"},
        {"{\"kind\": \"linear\", \"inputs\": 2.5}", "inputs", "integer"},
        {"{\"kind\": \"linear\", \"inputs\": 1e999}", "inputs", "finite"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"name\": 5}", "name", "string"},
        {"{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": {\"units\": 2}}", "hidden", "array"},
        {"{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": [3]}", "hidden[0]", "object"},
        {"{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": [{\"units\": \"3\"}]}",
         "hidden[0].units", "integer"},
        {"{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": [{\"activation\": \"relu\"}]}",
         "hidden[0].units", "required"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"init\": 1}", "init", "object"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"init\": {\"scale\": \"big\"}}", "init.scale",
         "number"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"init\": {\"scale\": -1}}", "init.scale", ">= 0"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"learning_rate\": \"fast\"}}",
         "optimizer.learning_rate", "number"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"epsilon\": -1e999}}",
         "optimizer.epsilon", "finite"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"history\": 0.5}}",
         "optimizer.history", "integer"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": []}", "optimizer", "object"},
        /* schedules */
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"schedule\": 1}}",
         "optimizer.schedule", "object"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"schedule\": {}}}",
         "optimizer.schedule.kind", "required"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"schedule\": {\"kind\": "
         "\"cosine\", \"gamma\": 0.5, \"t_max\": 3}}}",
         "optimizer.schedule.gamma", "unknown field"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"schedule\": {\"kind\": "
         "\"step\", \"step_size\": 1e300}}}",
         "optimizer.schedule.step_size", "range"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"schedule\": {\"kind\": "
         "\"cosine\", \"t_max\": 3, \"eta_min\": \"0\"}}}",
         "optimizer.schedule.eta_min", "number"},

        /* bad names */
        {"{\"kind\": \"lineer\", \"inputs\": 2}", "kind", "unknown value"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"loss\": \"mse\"}", "loss", "l2 | bce | cce"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"reduction\": \"avg\"}", "reduction",
         "mean | sum"},
        {"{\"kind\": \"mlp\", \"inputs\": 2, \"output_activation\": \"tanh\"}",
         "output_activation", "unknown value"},
        {"{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": [{\"units\": 2, \"activation\": "
         "\"softmax\"}]}",
         "hidden[0].activation", "unknown value"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"init\": {\"method\": \"he\"}}", "init.method",
         "unknown value"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"method\": \"rmsprop\"}}",
         "optimizer.method", "unknown value"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"name\": \"\"}", "name", "empty"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"name\": \"a\\nb\"}", "name", "control"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"name\": \"\xff\xfe\"}", "name", "UTF-8"},
        /* absurd sizes */
        {"{\"kind\": \"linear\", \"inputs\": 0}", "inputs", "out of range"},
        {"{\"kind\": \"linear\", \"inputs\": -3}", "inputs", "out of range"},
        {"{\"kind\": \"linear\", \"inputs\": 1000001}", "inputs", "out of range"},
        {"{\"kind\": \"linear\", \"inputs\": 1e300}", "inputs", "out of range"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"outputs\": 4294967296}", "outputs",
         "out of range"},
        {"{\"kind\": \"softmax\", \"inputs\": 2, \"classes\": 1}", "classes", "out of range"},
        {"{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": [{\"units\": 0}]}", "hidden[0].units",
         "out of range"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"init\": {\"seed\": -1}}", "init.seed",
         "out of range"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"init\": {\"seed\": 9007199254740994}}",
         "init.seed", "out of range"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"history\": 0}}",
         "optimizer.history", "out of range"},
        /* parameters */
        {"{\"kind\": \"linear\", \"inputs\": 2, \"parameters\": [1]}", "parameters", "object"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"parameters\": {\"W1\": [[1, 2, 3], [1, 2]]}}",
         "parameters.W1[1]", "has 2 values, expected 3"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"parameters\": {\"W1\": [[1, 2, \"3\"]]}}",
         "parameters.W1[0][2]", "number"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"parameters\": {\"W1\": [[1, 2, 1e999]]}}",
         "parameters.W1[0][2]", "finite"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"parameters\": {\"W1\": [[1, 2, 3]], \"W2\": "
         "[[1], 2]}}",
         "parameters.W2[1]", "array"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"parameters\": {\"W1\": []}}", "parameters.W1",
         "empty"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"parameters\": {\"W1\": \"abc\"}}",
         "parameters.W1", "number"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"parameters\": {\"W1\": 1, \"W1\": 2}}",
         "parameters.W1", "twice"},
        {"{\"kind\": \"linear\", \"inputs\": 2, \"parameters\": {\"\": 1}}", "parameters.",
         "empty"},
        /* graph */
        {"{\"kind\": \"graph\", \"graph\": {\"nodes\": []}}", "graph.nodes", "empty"},
        {"{\"kind\": \"graph\", \"graph\": {\"nodes\": [{\"id\": \"x\", \"op\": \"input\","
         " \"shape\": [2, 1.5]}], \"output\": \"x\"}}",
         "graph.nodes[0].shape[1]", "integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        spec_err(cases[i].json, cases[i].field, cases[i].part);

    /* name: 127 bytes fit, 128 do not. */
    char buf[512], name[200];
    memset(name, 'n', 127);
    name[127] = '\0';
    snprintf(buf, sizeof buf, "{\"kind\": \"linear\", \"inputs\": 2, \"name\": \"%s\"}", name);
    model_spec_t s;
    spec_ok(buf, &s);
    ck_assert_int_eq((int)strlen(s.name), 127);
    model_spec_free(&s);
    memset(name, 'n', 128);
    name[128] = '\0';
    snprintf(buf, sizeof buf, "{\"kind\": \"linear\", \"inputs\": 2, \"name\": \"%s\"}", name);
    spec_err(buf, "name", "at most 127");

    /* Too many hidden layers. */
    char *big = malloc(64 * 1024);
    size_t used = (size_t)sprintf(big, "{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": [");
    for (int i = 0; i <= MODEL_MAX_LAYERS; ++i)
        used += (size_t)sprintf(big + used, "%s{\"units\": 2}", i == 0 ? "" : ",");
    sprintf(big + used, "]}");
    spec_err(big, "hidden", "at most 64");
    free(big);
}
END_TEST

START_TEST(test_spec_round_trip)
{
    char graph_spec[4096];
    snprintf(graph_spec, sizeof graph_spec,
             "{\"kind\": \"graph\", \"name\": \"g\", \"reduction\": \"sum\", \"graph\": %s}",
             two_layer_graph);
    const char *specs[] = {
        "{\"kind\": \"linear\", \"inputs\": 3}",
        "{\"kind\": \"linear\", \"inputs\": 3, \"outputs\": 2, \"loss\": \"l2\", \"name\": "
        "\"caf\\u00e9\"}",
        "{\"kind\": \"logistic\", \"inputs\": 2, \"init\": {\"method\": \"zeros\", \"scale\": "
        "0.30000000000000004, \"seed\": 77}}",
        "{\"kind\": \"perceptron\", \"inputs\": 2, \"reduction\": \"sum\"}",
        "{\"kind\": \"softmax\", \"inputs\": 4, \"classes\": 3, \"optimizer\": {\"method\": "
        "\"adam\", \"learning_rate\": 0.001, \"beta2\": 0.99, \"epsilon\": 1e-10}}",
        "{\"kind\": \"ovo\", \"inputs\": 2, \"classes\": 4, \"optimizer\": {\"method\": "
        "\"momentum\", \"momentum\": 0.5, \"weight_decay\": 0.01}}",
        "{\"kind\": \"mlp\", \"inputs\": 4, \"outputs\": 3, \"classes\": 3, \"hidden\": "
        "[{\"units\": 5, \"activation\": \"tanh\"}, {\"units\": 4, \"activation\": \"relu\"}, "
        "{\"units\": 2}], \"output_activation\": \"softmax\", \"loss\": \"cce\"}",
        "{\"kind\": \"mlp\", \"inputs\": 2}",
        "{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"method\": \"lbfgs\", "
        "\"history\": 5, \"max_line_search\": 7}}",
        "{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"history\": 3}}",
        "{\"kind\": \"logistic\", \"inputs\": 2, \"optimizer\": {\"schedule\": {\"kind\": "
        "\"step\", \"step_size\": 4}}}",
        "{\"kind\": \"linear\", \"inputs\": 2, \"optimizer\": {\"method\": \"momentum\", "
        "\"schedule\": {\"kind\": \"exponential\", \"gamma\": 0.95, \"warmup_steps\": 3}}}",
        "{\"kind\": \"softmax\", \"inputs\": 2, \"classes\": 3, \"optimizer\": {\"method\": "
        "\"adam\", \"schedule\": {\"kind\": \"cosine\", \"t_max\": 100, \"eta_min\": "
        "0.001, \"warmup_steps\": 10}}}",
        graph_spec,
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; ++i) {
        model_spec_t a, b, r;
        err_t err = {0};
        spec_ok(specs[i], &a);
        /* Unresolved spec. */
        spec_reencode(&a, &b);
        assert_spec_eq(&a, &b);
        model_spec_free(&b);
        /* Resolved spec (what the store keeps), where the model layer accepts it. */
        ck_assert_int_eq(model_spec_copy(&a, &r, &err), 0);
        if (model_spec_resolve(&r, MODEL_MAX_PARAMS_DEFAULT, &err) == 0) {
            spec_reencode(&r, &b);
            assert_spec_eq(&r, &b);
            model_spec_free(&b);
        }
        model_spec_free(&r);
        model_spec_free(&a);
    }
}
END_TEST

START_TEST(test_spec_encode_kind_fields)
{
    model_spec_t s;
    err_t err = {0};
    spec_ok("{\"kind\": \"logistic\", \"inputs\": 2, \"parameters\": {\"W1\": [[1, 2, 3]]}}", &s);
    ck_assert_int_eq(model_spec_resolve(&s, MODEL_MAX_PARAMS_DEFAULT, &err), 0);
    cJSON *j = codec_spec_encode(&s);
    ck_assert_ptr_nonnull(j);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "name"));
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "parameters"));
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "hidden"));
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "output_activation"));
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "classes"));
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "graph"));
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "kind")->valuestring, "logistic");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "loss")->valuestring, "bce");
    cJSON *opt = cJSON_GetObjectItemCaseSensitive(j, "optimizer");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(opt, "method")->valuestring, "sgd");
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(opt, "history"));
    ck_assert_ptr_nonnull(cJSON_GetObjectItemCaseSensitive(opt, "learning_rate"));
    cJSON_Delete(j);
    model_spec_free(&s);

    spec_ok("{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": [{\"units\": 3}]}", &s);
    ck_assert_int_eq(model_spec_resolve(&s, MODEL_MAX_PARAMS_DEFAULT, &err), 0);
    j = codec_spec_encode(&s);
    cJSON *layer = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "hidden"), 0);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(layer, "activation")->valuestring,
                     "sigmoid");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "output_activation")->valuestring,
                     "linear");
    cJSON_Delete(j);
    model_spec_free(&s);
}
END_TEST

/* ---- graphs ------------------------------------------------------------------------------- */

static void graph_err(const char *nodes_json, const char *field, const char *part)
{
    char buf[2048];
    snprintf(buf, sizeof buf, "{\"nodes\": %s, \"output\": \"L\"}", nodes_json);
    cJSON *j = parse_ok(buf);
    ad_graph_spec_t g;
    err_t err = {0};
    int rc = codec_graph_decode(j, "graph", &g, &err);
    cJSON_Delete(j);
    assert_err(rc, &err, ERR_INVAL, field, part, buf);
    ck_assert_ptr_null(g.node);
    ck_assert_int_eq(g.n_node, 0);
}

START_TEST(test_graph_decode_and_round_trip)
{
    cJSON *j = parse_ok(two_layer_graph);
    ad_graph_spec_t g, back;
    err_t err = {0};
    ck_assert_int_eq(codec_graph_decode(j, "graph", &g, &err), 0);
    cJSON_Delete(j);
    ck_assert_int_eq(g.n_node, 11);
    ck_assert_str_eq(g.output, "L");
    ck_assert_int_eq(g.node[0].op, AD_OP_INPUT);
    ck_assert_int_eq(g.node[0].shape.n_d, 2);
    ck_assert_int_eq(g.node[0].shape.d[0], AD_ROWS);
    ck_assert_int_eq(g.node[0].shape.d[1], 2);
    ck_assert_int_eq(g.node[3].transpose_b, 1);
    ck_assert_int_eq(g.node[3].n_in, 2);
    ck_assert_str_eq(g.node[3].in[1], "W1");
    ck_assert(g.node[2].value[3] == 0.03);
    ck_assert_ptr_null(g.node[6].value);
    ck_assert_int_eq(g.node[9].shape.n_d, 0);
    ck_assert(g.node[9].value[0] == 0.5);
    ck_assert_int_eq(g.node[10].reduction, AD_REDUCTION_SUM);

    cJSON *enc = codec_graph_encode(&g);
    char *text = cJSON_PrintUnformatted(enc);
    cJSON_Delete(enc);
    j = parse_ok(text);
    free(text);
    ck_assert_int_eq(codec_graph_decode(j, "graph", &back, &err), 0);
    cJSON_Delete(j);
    assert_graph_eq(&g, &back);
    ad_graph_spec_free(&back);

    /* The decoded spec is something ad_graph_build accepts. */
    ad_graph_t *built = NULL;
    ck_assert_msg(ad_graph_build(&g, AD_MAX_NODES_DEFAULT, &built, &err) == 0, "%s", err.msg);
    ad_graph_free(built);
    ad_graph_spec_free(&g);
}
END_TEST

START_TEST(test_graph_errors)
{
    static const struct {
        const char *nodes, *field, *part;
    } cases[] = {
        {"{}", "graph.nodes", "array"},
        {"[{\"op\": \"input\", \"shape\": [1]}]", "graph.nodes[0].id", "required"},
        {"[{\"id\": \"x\", \"shape\": [1]}]", "graph.nodes[0].op", "required"},
        {"[{\"id\": \"x\", \"op\": \"conv2d\"}]", "graph.nodes[0].op", "unknown op \"conv2d\""},
        {"[{\"id\": \"x\", \"op\": \"wbce_loss\"}]", "graph.nodes[0].op", "unknown op"},
        {"[{\"id\": \"x\", \"op\": 3}]", "graph.nodes[0].op", "string"},
        {"[{\"id\": \"x\", \"op\": \"input\", \"shap\": [1]}]", "graph.nodes[0].shap",
         "unknown field"},
        {"[{\"id\": \"x\", \"op\": \"input\", \"shape\": [1]}, 7]", "graph.nodes[1]", "object"},
        {"[{\"id\": \"\", \"op\": \"input\", \"shape\": [1]}]", "graph.nodes[0].id", "empty"},
        {"[{\"id\": \"0123456789012345678901234567890123456789012345678901234567890123\","
         " \"op\": \"input\", \"shape\": [1]}]",
         "graph.nodes[0].id", "at most 63"},
        {"[{\"id\": \"x\", \"op\": \"input\"}]", "graph.nodes[0].shape", "required"},
        {"[{\"id\": \"x\", \"op\": \"input\", \"shape\": [1, 2, 3]}]", "graph.nodes[0].shape",
         "3 dimensions"},
        {"[{\"id\": \"x\", \"op\": \"input\", \"shape\": 3}]", "graph.nodes[0].shape", "array"},
        {"[{\"id\": \"x\", \"op\": \"input\", \"shape\": [2, -1]}]", "graph.nodes[0].shape[1]",
         "out of range"},
        {"[{\"id\": \"x\", \"op\": \"input\", \"shape\": [2, null]}]",
         "graph.nodes[0].shape[1]", "integer"},
        {"[{\"id\": \"x\", \"op\": \"input\", \"shape\": [2, \"3\"]}]",
         "graph.nodes[0].shape[1]", "integer"},
        {"[{\"id\": \"x\", \"op\": \"input\", \"shape\": [2, 3]}, {\"id\": \"W\", \"op\": "
         "\"param\", \"shape\": [null, 3]}]",
         "graph.nodes[1].shape[0]", "only for input"},
        {"[{\"id\": \"x\", \"op\": \"input\", \"shape\": [100000, 100000]}]",
         "graph.nodes[0].shape", "elements"},
        {"[{\"id\": \"a\", \"op\": \"sigmoid\", \"inputs\": [\"x\"], \"shape\": [1]}]",
         "graph.nodes[0].shape", "only input, param and const"},
        {"[{\"id\": \"a\", \"op\": \"add\", \"inputs\": \"x\"}]", "graph.nodes[0].inputs",
         "array"},
        {"[{\"id\": \"a\", \"op\": \"add\", \"inputs\": [\"x\", 2]}]",
         "graph.nodes[0].inputs[1]", "string"},
        {"[{\"id\": \"a\", \"op\": \"add\", \"inputs\": [\"x\", \"y\", \"z\", \"w\"]}]",
         "graph.nodes[0].inputs", "at most 3"},
        {"[{\"id\": \"W\", \"op\": \"param\", \"shape\": [2, 2], \"value\": [[1, 2], [3]]}]",
         "graph.nodes[0].value[1]", "has 1 values, expected 2"},
        {"[{\"id\": \"W\", \"op\": \"param\", \"shape\": [2, 2], \"value\": [[1, 2]]}]",
         "graph.nodes[0].value", "has 1 rows, expected 2"},
        {"[{\"id\": \"W\", \"op\": \"param\", \"shape\": [3], \"value\": [1, 2, null]}]",
         "graph.nodes[0].value[2]", "number"},
        {"[{\"id\": \"W\", \"op\": \"param\", \"shape\": [], \"value\": [1]}]",
         "graph.nodes[0].value", "number"},
        {"[{\"id\": \"W\", \"op\": \"param\", \"shape\": [1], \"value\": 1}]",
         "graph.nodes[0].value", "array"},
        {"[{\"id\": \"W\", \"op\": \"param\", \"shape\": [1, 1], \"value\": [[1e999]]}]",
         "graph.nodes[0].value[0][0]", "finite"},
        {"[{\"id\": \"x\", \"op\": \"input\", \"shape\": [1], \"value\": [1]}]",
         "graph.nodes[0].value", "only param and const"},
        {"[{\"id\": \"c\", \"op\": \"const\", \"shape\": [1]}]", "graph.nodes[0].value",
         "required"},
        {"[{\"id\": \"L\", \"op\": \"sum\", \"inputs\": [\"x\"], \"reduction\": \"sum\"}]",
         "graph.nodes[0].reduction", "only"},
        {"[{\"id\": \"L\", \"op\": \"l2_loss\", \"inputs\": [\"a\", \"b\"], \"reduction\": "
         "\"max\"}]",
         "graph.nodes[0].reduction", "mean | sum"},
        {"[{\"id\": \"L\", \"op\": \"matmul\", \"inputs\": [\"a\", \"b\"], \"transpose_b\": 1}]",
         "graph.nodes[0].transpose_b", "true or false"},
        {"[{\"id\": \"L\", \"op\": \"add\", \"inputs\": [\"a\", \"b\"], \"transpose_b\": true}]",
         "graph.nodes[0].transpose_b", "only matmul"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        graph_err(cases[i].nodes, cases[i].field, cases[i].part);

    /* Missing output, unknown top-level field, a prefix for another endpoint. */
    cJSON *j = parse_ok("{\"nodes\": [{\"id\": \"x\", \"op\": \"input\", \"shape\": [1]}]}");
    ad_graph_spec_t g;
    err_t err = {0};
    assert_err(codec_graph_decode(j, "graph", &g, &err), &err, ERR_INVAL, "graph.output",
               "required", "no output");
    cJSON_Delete(j);
    j = parse_ok("{\"nodes\": [], \"output\": \"x\", \"extra\": 1}");
    assert_err(codec_graph_decode(j, "g2", &g, &err), &err, ERR_INVAL, "g2.extra",
               "unknown field", "extra");
    cJSON_Delete(j);
}
END_TEST

/* ---- parameters --------------------------------------------------------------------------- */

static model_t *make_model(const char *json)
{
    model_spec_t s;
    err_t err = {0};
    model_t *m = NULL;
    spec_ok(json, &s);
    ck_assert_msg(model_spec_resolve(&s, MODEL_MAX_PARAMS_DEFAULT, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_new(&s, &m, &err) == 0, "%s", err.msg);
    model_spec_free(&s);
    return m;
}

static int params_decode_str(const char *json, const model_t *m, int require_all, double *dst,
                             err_t *err)
{
    cJSON *j = parse_ok(json);
    int rc = codec_params_decode(j, m, require_all, dst, err);
    cJSON_Delete(j);
    return rc;
}

START_TEST(test_params_all_or_nothing)
{
    model_t *m = make_model("{\"kind\": \"mlp\", \"inputs\": 2, \"hidden\": [{\"units\": 3}]}");
    int64_t n = model_n_params(m);
    ck_assert_int_eq(n, 3 * 3 + 1 * 4);
    double *dst = malloc((size_t)n * sizeof *dst), *orig = malloc((size_t)n * sizeof *orig);
    for (int64_t i = 0; i < n; ++i)
        dst[i] = orig[i] = (double)i + 0.25;
    err_t err = {0};

    static const struct {
        const char *json, *field, *part;
        int require_all;
    } cases[] = {
        /* W1 is fine, W2 is not: nothing may be written. */
        {"{\"W1\": [[1,2,3],[4,5,6],[7,8,9]], \"W2\": [[1,2,3]]}", "parameters.W2[0]",
         "has 3 values, expected 4", 0},
        {"{\"W1\": [[1,2,3],[4,5,6],[7,8,9]], \"W2\": [[1,2,3,1e999]]}", "parameters.W2[0][3]",
         "finite", 0},
        {"{\"W1\": [[1,2,3],[4,5,6],[7,8,9]], \"W2\": [[1,2,3,4],[1,2,3,4]]}", "parameters.W2",
         "has 2 rows, expected 1", 0},
        {"{\"W1\": [[1,2,3],[4,5,6],[7,8,9]], \"W3\": [[1]]}", "parameters.W3",
         "unknown parameter", 0},
        {"{\"W1\": [[1,2,3],[4,5,6],[7,8,9]]}", "parameters.W2", "missing", 1},
        {"{\"W1\": [[1,2,3],[4,5,6],[7,8,9]], \"W1\": [[1,2,3],[4,5,6],[7,8,9]]}",
         "parameters.W1", "twice", 0},
        {"{\"W1\": 3}", "parameters.W1", "array", 0},
        {"[]", "parameters", "object", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        int rc = params_decode_str(cases[i].json, m, cases[i].require_all, dst, &err);
        assert_err(rc, &err, ERR_INVAL, cases[i].field, cases[i].part, cases[i].json);
        ck_assert_msg(memcmp(dst, orig, (size_t)n * sizeof *dst) == 0, "%s wrote", cases[i].json);
    }

    /* A partial update (require_all 0) writes only the given tensor. */
    ck_assert_int_eq(params_decode_str("{\"W2\": [[-1, -2, -3, -4]]}", m, 0, dst, &err), 0);
    ck_assert(memcmp(dst, orig, 9 * sizeof *dst) == 0);
    ck_assert(dst[9] == -1.0 && dst[12] == -4.0);

    /* Encode -> print -> decode is exact for arbitrary doubles. */
    testutil_fill(orig, n, -3.0, 3.0, 11);
    orig[0] = 0.1;
    orig[1] = 1.0 / 3.0;
    cJSON *enc = codec_params_encode(m, orig);
    char *text = cJSON_PrintUnformatted(enc);
    cJSON_Delete(enc);
    ck_assert_int_eq(params_decode_str(text, m, 1, dst, &err), 0);
    free(text);
    ck_assert(memcmp(dst, orig, (size_t)n * sizeof *dst) == 0);

    free(dst);
    free(orig);
    model_free(m);
}
END_TEST

START_TEST(test_params_graph_model_shapes)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "{\"kind\": \"graph\", \"graph\": %s}", two_layer_graph);
    model_t *m = make_model(buf);
    int64_t n = model_n_params(m);
    double *p = malloc((size_t)n * sizeof *p);
    memcpy(p, model_params(m), (size_t)n * sizeof *p);
    cJSON *enc = codec_params_encode(m, p);
    ck_assert(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(enc, "W1")));
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(enc, "W1")), 3);
    err_t err = {0};
    ck_assert_msg(codec_params_decode(enc, m, 1, p, &err) == 0, "%s", err.msg);
    cJSON_Delete(enc);
    ck_assert(memcmp(p, model_params(m), (size_t)n * sizeof *p) == 0);
    free(p);
    model_free(m);
}
END_TEST

/* ---- batches ------------------------------------------------------------------------------ */

static int batch_str(const char *json, int32_t n_x, int32_t n_y, int require_y, int64_t max_rows,
                     codec_batch_t *b, err_t *err)
{
    cJSON *j = parse_ok(json);
    int rc = codec_batch_decode(j, n_x, n_y, require_y, max_rows, b, err);
    cJSON_Delete(j);
    return rc;
}

START_TEST(test_batch_decode)
{
    codec_batch_t b;
    err_t err = {0};
    ck_assert_int_eq(batch_str("{\"x\": [[1,2,3],[4,5,6]], \"y\": [0, [1]]}", 3, 1, 1, 0, &b,
                               &err),
                     0);
    ck_assert_int_eq(b.rows, 2);
    ck_assert_int_eq(b.n_x, 3);
    ck_assert_int_eq(b.n_y, 1);
    ck_assert(b.x[5] == 6.0 && b.y[0] == 0.0 && b.y[1] == 1.0);
    codec_batch_free(&b);
    codec_batch_free(&b); /* zeroed: a second free is harmless */
    codec_batch_free(NULL);

    ck_assert_int_eq(batch_str("{\"x\": [[1],[2]], \"y\": [[1, 2], [3, 4]]}", 1, 2, 1, 0, &b,
                               &err),
                     0);
    ck_assert(b.y[3] == 4.0);
    codec_batch_free(&b);

    /* Predict: y optional. */
    ck_assert_int_eq(batch_str("{\"x\": [[1, 2]]}", 2, 1, 0, 0, &b, &err), 0);
    ck_assert_ptr_null(b.y);
    codec_batch_free(&b);
}
END_TEST

START_TEST(test_batch_errors)
{
    static const struct {
        const char *json;
        int32_t n_x, n_y;
        int64_t max_rows;
        const char *field, *part;
    } cases[] = {
        {"{\"x\": [[1,2,3],[1,2,3],[1,2,3],[1,2]], \"y\": [1,1,1,1]}", 3, 1, 0, "x[3]",
         "x[3] has 2 values, model expects 3 inputs"},
        {"{\"x\": [[1,2,3],[1,2,3,4]], \"y\": [1,1]}", 3, 1, 0, "x[1]", "has 4 values"},
        {"{\"x\": [[1,2,3],[1,2,3],[1,2,3],[1,2,\"a\"]], \"y\": [1,1,1,1]}", 3, 1, 0,
         "x[3][2]", "number"},
        {"{\"x\": [[1,2,3],[1,2,3],[1,2,3],[1,2,null]], \"y\": [1,1,1,1]}", 3, 1, 0, "x[3][2]",
         "got null"},
        {"{\"x\": [[1,2,3],[1,2,1e999]], \"y\": [1,1]}", 3, 1, 0, "x[1][2]", "finite"},
        {"{\"x\": [[1,2,3],[1,2,-1e400]], \"y\": [1,1]}", 3, 1, 0, "x[1][2]", "finite"},
        {"{\"x\": [[1,2,3], 4], \"y\": [1,1]}", 3, 1, 0, "x[1]", "array"},
        {"{\"x\": [], \"y\": []}", 3, 1, 0, "x", "no rows"},
        {"{\"x\": {}, \"y\": []}", 3, 1, 0, "x", "array"},
        {"{\"y\": [1]}", 3, 1, 0, "x", "required"},
        {"{\"x\": null, \"y\": [1]}", 3, 1, 0, "x", "required"},
        {"{\"x\": [[1,2,3],[1,2,3]]}", 3, 1, 0, "y", "required"},
        {"{\"x\": [[1,2,3],[1,2,3]], \"y\": [1]}", 3, 1, 0, "y", "has 1 value for 2 rows"},
        {"{\"x\": [[1,2,3],[1,2,3]], \"y\": 1}", 3, 1, 0, "y", "array"},
        {"{\"x\": [[1,2,3],[1,2,3]], \"y\": [1, \"1\"]}", 3, 1, 0, "y[1]", "number"},
        {"{\"x\": [[1,2,3],[1,2,3]], \"y\": [1, [1, 2]]}", 3, 1, 0, "y[1]", "has 2 values"},
        {"{\"x\": [[1,2,3],[1,2,3]], \"y\": [1, 1e999]}", 3, 1, 0, "y[1]", "finite"},
        {"{\"x\": [[1],[2]], \"y\": [[1, 2], [3]]}", 1, 2, 0, "y[1]",
         "has 1 value, model expects 2 labels"},
        {"{\"x\": [[1],[2]], \"y\": [[1, 2], [3, true]]}", 1, 2, 0, "y[1][1]", "boolean"},
        {"{\"x\": [[1],[2]], \"y\": [[1, 2], 3]}", 1, 2, 0, "y[1]", "array"},
        {"{\"x\": [[1],[2],[3]], \"y\": [1, 2, 3]}", 1, 1, 2, "x", "limit of 2"},
        {"{\"x\": [[1],[2]], \"y\": [1, 2]}", INT32_MAX, 1, 0, "x", "too many"},
        {"[1]", 1, 1, 0, "", "object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        codec_batch_t b;
        err_t err = {0};
        int rc = batch_str(cases[i].json, cases[i].n_x, cases[i].n_y, 1, cases[i].max_rows, &b,
                           &err);
        assert_err(rc, &err, ERR_INVAL, cases[i].field, cases[i].part, cases[i].json);
        ck_assert_ptr_null(b.x);
        ck_assert_ptr_null(b.y);
    }
}
END_TEST

/* ---- CSV ---------------------------------------------------------------------------------- */

static int csv_str(const char *text, int32_t n_x, int32_t labels, int32_t header,
                   int64_t max_rows, codec_batch_t *b, err_t *err)
{
    size_t n = strlen(text);
    char *copy = malloc(n > 0 ? n : 1);
    memcpy(copy, text, n);
    codec_csv_opts_t o = {.n_x = n_x, .label_columns = labels, .header = header,
                          .max_rows = max_rows};
    int rc = codec_csv_decode(copy, n, &o, b, err);
    free(copy);
    return rc;
}

/* An export decodes to its parts; the step is bounded; a state is checked against the engine's
 * invariants at the export's step, and a refused one leaves the optimizer zeroed. */
START_TEST(test_export_decode)
{
    err_t err = {0};
    codec_export_t ex;
    cJSON *j = parse_ok("{\"format\":\"neurond-model\",\"version\":1,\"loss\":null,"
                        "\"spec\":{\"name\":\"inner\",\"kind\":\"linear\",\"inputs\":1,"
                        "\"optimizer\":{\"method\":\"adam\"}},\"step\":1000000000000000,"
                        "\"parameters\":{\"W1\":[[1,2]]},\"optimizer_state\":[0,0,0,0,0]}");
    ck_assert_int_eq(codec_export_decode(j, &ex, &err), 0);
    ck_assert_str_eq(ex.name, "inner");
    ck_assert_int_eq(ex.step, TRAIN_STEP_MAX);
    ck_assert(isnan(ex.loss));
    ck_assert_ptr_nonnull(ex.parameters);
    ck_assert_ptr_nonnull(ex.optimizer_state);
    optim_t *o = NULL;
    ck_assert_int_eq(optim_new(&ex.spec.optimizer, 2, &o, &err), 0);
    ck_assert_int_eq(codec_optim_state_decode(ex.optimizer_state, o, ex.step, &err), 0);
    cJSON *bad = parse_ok("[0.5,0,0,0,0]");          /* a moment before adam's first step */
    ck_assert_int_eq(codec_optim_state_decode(bad, o, ex.step, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "optimizer_state");
    for (int i = 0; i < 5; ++i)
        ck_assert_double_eq(optim_state(o)[i], 0.0);
    cJSON_Delete(bad);
    bad = parse_ok("[0,0,0,0,\"1\"]");
    ck_assert_int_eq(codec_optim_state_decode(bad, o, ex.step, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "optimizer_state[4]");
    cJSON_Delete(bad);
    bad = parse_ok("[0,0,0,0]");
    ck_assert_int_eq(codec_optim_state_decode(bad, o, ex.step, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "optimizer_state");
    cJSON_Delete(bad);
    optim_free(o);
    codec_export_free(&ex);
    cJSON_Delete(j);

    static const struct {
        const char *body, *field;
    } refused[] = {
        {"{\"format\":\"neurond-model\",\"version\":1,\"step\":1000000000000001,"
         "\"spec\":{\"kind\":\"linear\",\"inputs\":1},\"parameters\":{}}", "step"},
        {"{\"format\":\"neurond-model\",\"version\":1,\"step\":2.5,"
         "\"spec\":{\"kind\":\"linear\",\"inputs\":1},\"parameters\":{}}", "step"},
        {"{\"format\":\"neurond-model\",\"version\":1,"
         "\"spec\":{\"kind\":\"linear\",\"inputz\":1},\"parameters\":{}}", "spec.inputz"},
        {"{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
         "\"inputs\":1}}", "parameters"},
        {"{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
         "\"inputs\":1},\"parameters\":{},\"extra\":0}", "extra"},
        {"{\"format\":\"neurond-model\",\"version\":1,\"name\":\"\",\"spec\":{\"kind\":"
         "\"linear\",\"inputs\":1},\"parameters\":{}}", "name"},
        {"[]", ""},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; ++i) {
        j = parse_ok(refused[i].body);
        ck_assert_int_eq(codec_export_decode(j, &ex, &err), ERR_INVAL);
        ck_assert_str_eq(err.field, refused[i].field);
        if (i == 0)    /* the number as sent, not rounded into the range it is outside of */
            ck_assert_msg(strstr(err.msg, "step = 1000000000000001 is out of range") != NULL,
                          "%s", err.msg);
        cJSON_Delete(j);
    }
}
END_TEST

/* Labels are checked on their line when a rule is given: the error names the line and the
 * message the column. */
START_TEST(test_csv_label_rule)
{
    codec_batch_t b;
    err_t err = {0};
    codec_csv_opts_t o = {.n_x = 2, .label_columns = 1, .header = -1, .label_classes = 3};
    const char ok[] = "a,b,y\n1,2,0\n3,4,2\n";
    ck_assert_int_eq(codec_csv_decode(ok, sizeof ok - 1, &o, &b, &err), 0);
    ck_assert_int_eq(b.rows, 2);
    codec_batch_free(&b);
    const char bad[] = "a,b,y\n1,2,0\n3,4,3\n5,6,7\n";
    ck_assert_int_eq(codec_csv_decode(bad, sizeof bad - 1, &o, &b, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "line 3");
    ck_assert_ptr_nonnull(strstr(err.msg, "column 3"));
    ck_assert_ptr_null(b.x);
    const char frac[] = "1,2,0.5\n";
    ck_assert_int_eq(codec_csv_decode(frac, sizeof frac - 1, &o, &b, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "line 1");
    codec_csv_opts_t bin = {.n_x = 1, .label_columns = 1, .header = 0, .label_binary = 1};
    const char two[] = "1,1\n2,0\n3,2\n";
    ck_assert_int_eq(codec_csv_decode(two, sizeof two - 1, &bin, &b, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "line 3");
    codec_csv_opts_t any = {.n_x = 1, .label_columns = 1, .header = 0};
    ck_assert_int_eq(codec_csv_decode(two, sizeof two - 1, &any, &b, &err), 0);
    codec_batch_free(&b);
}
END_TEST

START_TEST(test_csv_decode)
{
    codec_batch_t b;
    err_t err = {0};
    /* header auto with names, CRLF, spaces, trailing blank lines */
    ck_assert_int_eq(csv_str("a,b,label\r\n1, 2 ,0\r\n-3.5e2,+4,1\r\n\r\n\n", 2, 1, -1, 0, &b,
                             &err),
                     0);
    ck_assert_int_eq(b.rows, 2);
    ck_assert_int_eq(b.n_x, 2);
    ck_assert_int_eq(b.n_y, 1);
    ck_assert(b.x[0] == 1.0 && b.x[1] == 2.0 && b.x[2] == -350.0 && b.x[3] == 4.0);
    ck_assert(b.y[0] == 0.0 && b.y[1] == 1.0);
    codec_batch_free(&b);

    /* header auto with a numeric first line: it is data; no final newline */
    ck_assert_int_eq(csv_str("1,2,3\n4,5,6", 2, 1, -1, 0, &b, &err), 0);
    ck_assert_int_eq(b.rows, 2);
    codec_batch_free(&b);
    /* header=true skips even a numeric first line; header=false keeps it */
    ck_assert_int_eq(csv_str("1,2,3\n4,5,6\n", 2, 1, 1, 0, &b, &err), 0);
    ck_assert_int_eq(b.rows, 1);
    ck_assert(b.x[0] == 4.0);
    codec_batch_free(&b);
    ck_assert_int_eq(csv_str("1,2,3\n4,5,6\n", 2, 1, 0, 0, &b, &err), 0);
    ck_assert_int_eq(b.rows, 2);
    codec_batch_free(&b);

    /* label_columns: 2 trailing labels, or none */
    ck_assert_int_eq(csv_str("1,2,3,4\n5,6,7,8\n", 2, 2, -1, 0, &b, &err), 0);
    ck_assert_int_eq(b.n_y, 2);
    ck_assert(b.y[0] == 3.0 && b.y[3] == 8.0 && b.x[2] == 5.0);
    codec_batch_free(&b);
    ck_assert_int_eq(csv_str("1,2\n", 2, 0, -1, 0, &b, &err), 0);
    ck_assert_ptr_null(b.y);
    ck_assert_int_eq(b.n_y, 0);
    codec_batch_free(&b);

    /* A UTF-8 byte order mark before the header. */
    ck_assert_int_eq(csv_str("\xEF\xBB\xBFx,y\n1,0\n", 1, 1, -1, 0, &b, &err), 0);
    ck_assert_int_eq(b.rows, 1);
    codec_batch_free(&b);

    /* Exactly max_rows rows is fine. */
    ck_assert_int_eq(csv_str("h\n1\n2\n3\n", 0, 1, -1, 3, &b, &err), 0);
    ck_assert_int_eq(b.rows, 3);
    codec_batch_free(&b);
}
END_TEST

/* Fed in pieces -- one byte at a time, or cut at every position -- the CSV stream gives
 * exactly what one whole-text decode gives: the same rows bit for bit, or the same error. */
static void csv_split_same(const char *text, int32_t n_x, int32_t labels, int32_t header,
                           int64_t max_rows)
{
    size_t n = strlen(text);
    codec_csv_opts_t o = {.n_x = n_x, .label_columns = labels, .header = header,
                          .max_rows = max_rows};
    codec_batch_t want;
    err_t want_err = {0};
    int want_rc = codec_csv_decode(text, n, &o, &want, &want_err);
    for (size_t cut = 0; cut <= n + 1; ++cut) {
        codec_csv_stream_t *s = NULL;
        err_t err = {0};
        ck_assert_int_eq(codec_csv_stream_new(&o, &s, &err), 0);
        if (cut == n + 1) {                       /* one byte per feed */
            for (size_t i = 0; i < n; ++i)
                ck_assert_int_eq(codec_csv_stream_feed(s, text + i, 1, &err), 0);
        } else {
            char *a = malloc(cut + 1), *b = malloc(n - cut + 1);   /* exact sizes for ASan */
            memcpy(a, text, cut);
            memcpy(b, text + cut, n - cut);
            if (cut > 0)
                ck_assert_int_eq(codec_csv_stream_feed(s, a, cut, &err), 0);
            if (n - cut > 0)
                ck_assert_int_eq(codec_csv_stream_feed(s, b, n - cut, &err), 0);
            free(a);
            free(b);
        }
        codec_batch_t got;
        int rc = codec_csv_stream_finish(s, &got, &err);
        codec_csv_stream_free(s);
        ck_assert_msg(rc == want_rc, "cut %zu of '%s': rc %d vs %d (%s)", cut, text, rc, want_rc,
                      err.msg);
        if (rc < 0) {
            ck_assert_str_eq(err.msg, want_err.msg);
            ck_assert_str_eq(err.field, want_err.field);
            continue;
        }
        ck_assert_int_eq(got.rows, want.rows);
        ck_assert(memcmp(got.x, want.x, (size_t)got.rows * (size_t)n_x * sizeof(double)) == 0);
        if (labels > 0)
            ck_assert(memcmp(got.y, want.y, (size_t)got.rows * (size_t)labels * sizeof(double)) ==
                      0);
        codec_batch_free(&got);
    }
    if (want_rc == 0)
        codec_batch_free(&want);
}

START_TEST(test_csv_stream_any_split)
{
    static const char *const texts[] = {
        "a,b,label\r\n1, 2 ,0\r\n-3.5e2,+4,1\r\n\r\n\n",
        "1,2,3\n4,5,6",
        "\xEF\xBB\xBFx,y,z\n1,0,1\n",
        "\xEF\xBB",
        "\xEF\xBB\xBF",
        "\xEF\xBB\xBF\n\n",
        "a,b,y\n1,2,0\n1,2\n",
        "1,2,0\n\n1,2,0\n",
        "1,2,0\n  \n\t\n",
        "\n1,2,0\n",
        "1,2,0\n1,x,0\n1,2\n",
        "1,2,0\n1,2,nan\n",
        "h1,h2,h3\r\n1,2,0\r\n1,2,0\r\n1,2,\"0\"\r\n",
        "1,2,0\n1,2,0\n1,2,0\n",
        "",
        "   \n \r\n",
        "a,b,c\n",
        "0.1,0.2,1\n1e-310,-0,0\n12345678901234567890,1.5,1\n",
        "1,2,0 , \n",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; ++i) {
        csv_split_same(texts[i], 2, 1, -1, 0);
        csv_split_same(texts[i], 2, 1, 0, 2);
        csv_split_same(texts[i], 1, 2, 1, 0);
    }
}
END_TEST

START_TEST(test_csv_errors)
{
    static const struct {
        const char *text;
        int32_t labels, header;
        int64_t max_rows;
        const char *field, *part;
    } cases[] = {
        /* 2 inputs + 1 label: 3 fields per row */
        {"a,b,y\n1,2,0\n1,2\n", 1, -1, 0, "line 3", "line 3: has 2 fields, expected 3"},
        {"a,b,y\r\n1,2,0\r\n1,2,3,4\r\n", 1, -1, 0, "line 3", "has 4 fields, expected 3"},
        {"1,2,0\n1,2,0\n1,x,0\n", 1, -1, 0, "line 3", "column 2 (\"x\") is not a number"},
        {"1,2,0\n1,2,nan\n", 1, -1, 0, "line 2", "column 3 (\"nan\") is not a finite number"},
        {"1,2,0\n1,inf,0\n", 1, -1, 0, "line 2", "column 2 (\"inf\") is not a finite number"},
        {"1,2,0\n1,1e999,0\n", 1, -1, 0, "line 2", "is not a finite number"},
        {"1,2,0\n0x10,1,0\n", 1, -1, 0, "line 2", "not a number"},
        {"1,2,0\n1,,0\n", 1, -1, 0, "line 2", "column 2 is empty"},
        {"1,2,0\n\n1,2,0\n", 1, -1, 0, "line 2", "empty"},
        {"h1,h2,h3\r\n1,2,0\r\n1,2,0\r\n1,2,\"0\"\r\n", 1, -1, 0, "line 4", "column 3"},
        /* header=false: the header line is data, and bad */
        {"a,b,y\n1,2,0\n", 1, 0, 0, "line 1", "column 1 (\"a\") is not a number"},
        /* header=true: a bad line 2 is still line 2 */
        {"1,2,0\n1,2\n", 1, 1, 0, "line 2", "has 2 fields"},
        /* label_columns 2: 4 fields per row */
        {"1,2,3,4\n1,2,3\n", 2, -1, 0, "line 2", "has 3 fields, expected 4"},
        /* limits and empty bodies */
        {"1,2,0\n1,2,0\n1,2,0\n", 1, -1, 2, "line 3", "limit of 2 rows"},
        {"", 1, -1, 0, "", "empty"},
        {"\r\n\n  \n", 1, -1, 0, "", "empty"},
        {"a,b,y\n", 1, -1, 0, "", "no data rows"},
        {"a,b,y\r\n\r\n", 1, -1, 0, "", "no data rows"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        codec_batch_t b;
        err_t err = {0};
        int rc = csv_str(cases[i].text, 2, cases[i].labels, cases[i].header, cases[i].max_rows,
                         &b, &err);
        assert_err(rc, &err, ERR_INVAL, cases[i].field, cases[i].part, cases[i].text);
        ck_assert_ptr_null(b.x);
        ck_assert_ptr_null(b.y);
    }
    /* A number has no length limit, as in JSON: 0...05 with 128 zeros is 5, and 0.(399 zeros)1
     * e399 is 0.1, read by the field or by its prefix. */
    char text[1024];
    int n = snprintf(text, sizeof text, "1,2,0\n1,%0128d,0\n", 5);
    ck_assert_int_lt(n, (int)sizeof text);
    codec_batch_t b;
    err_t err = {0};
    ck_assert_int_eq(csv_str(text, 2, 1, -1, 0, &b, &err), 0);
    ck_assert(b.rows == 2 && b.x[3] == 5.0);
    codec_batch_free(&b);
    n = snprintf(text, sizeof text, "1,0.%0400de399,0\n", 1);
    ck_assert_int_lt(n, (int)sizeof text);
    ck_assert_int_eq(csv_str(text, 2, 1, -1, 0, &b, &err), 0);
    ck_assert(b.rows == 1 && b.x[1] == 0.1);
    codec_batch_free(&b);
    /* Long texts that are not numbers, or not finite ones, say how long they are. */
    n = snprintf(text, sizeof text, "1,%0200dx,0\n", 5);
    ck_assert_int_eq(csv_str(text, 2, 1, 0, 0, &b, &err), ERR_INVAL);
    ck_assert_msg(strstr(err.msg, "column 2 is not a number (201 characters long)") != NULL,
                  "%s", err.msg);
    n = snprintf(text, sizeof text, "1,1%0200de400,0\n", 0);
    ck_assert_int_eq(csv_str(text, 2, 1, 0, 0, &b, &err), ERR_INVAL);
    ck_assert_msg(strstr(err.msg, "column 2 is not a finite number (205 characters long)") != NULL,
                  "%s", err.msg);
    codec_batch_free(&b);
}
END_TEST

START_TEST(test_csv_large_and_blank_heavy)
{
    /* Many rows; and a body of blank lines allocates nothing absurd. */
    size_t rows = 20000;
    char *text = malloc(rows * 32);
    size_t used = (size_t)sprintf(text, "x1,x2,x3,y\n");
    for (size_t i = 0; i < rows; ++i)
        used += (size_t)sprintf(text + used, "%zu,%.3f,-%zu,%d\n", i, (double)i / 7.0, i,
                                (int)(i % 2));
    codec_batch_t b;
    err_t err = {0};
    codec_csv_opts_t o = {.n_x = 3, .label_columns = 1, .header = -1, .max_rows = 0};
    ck_assert_int_eq(codec_csv_decode(text, used, &o, &b, &err), 0);
    ck_assert_int_eq(b.rows, (int32_t)rows);
    ck_assert(b.x[3 * 19999 + 2] == -19999.0 && b.y[19999] == 1.0);
    codec_batch_free(&b);
    free(text);

    size_t n = 1 << 20;
    text = malloc(n);
    memset(text, '\n', n);
    text[0] = '1';
    text[n - 1] = '2';
    o.n_x = 1000;
    int rc = codec_csv_decode(text, n, &o, &b, &err);
    assert_err(rc, &err, ERR_INVAL, "line 1", "has 1 fields, expected 1001", "blank heavy");
    free(text);
}
END_TEST

START_TEST(test_csv_numbers_match_strtod)
{
    /* The parser's fast path must give strtod's correctly rounded value bit for bit. */
    static const char *const fmts[] = {"%.1f", "%.3f", "%.6f", "%.9g", "%.15g", "%.17g",
                                       "%.4e", "%.12e", "%.0f"};
    size_t n = 60000;
    char *text = malloc(n * 40), *p = text;
    double *want = malloc(n * sizeof *want);
    rng_t r;
    rng_seed(&r, 99);
    for (size_t i = 0; i < n; ++i) {
        double mag = pow(10.0, (double)(int)rng_below(&r, 50) - 25);
        double v = (rng_uniform(&r) - 0.5) * mag;
        char num[64];
        snprintf(num, sizeof num, fmts[i % (sizeof fmts / sizeof fmts[0])], v);
        want[i] = strtod(num, NULL);
        p += sprintf(p, "%s\n", num);
    }
    p += sprintf(p, "-0\n00012.50\n.5\n7.\n1e22\n1e23\n9007199254740993\n");
    codec_batch_t b;
    err_t err = {0};
    codec_csv_opts_t o = {.n_x = 1, .label_columns = 0, .header = 0, .max_rows = 0};
    ck_assert_msg(codec_csv_decode(text, (size_t)(p - text), &o, &b, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(b.rows, (int32_t)n + 7);
    for (size_t i = 0; i < n; ++i)
        ck_assert_msg(memcmp(&b.x[i], &want[i], sizeof(double)) == 0, "row %zu: %.17g vs %.17g",
                      i, b.x[i], want[i]);
    ck_assert(b.x[n] == 0.0 && signbit(b.x[n]));
    ck_assert(b.x[n + 1] == 12.5 && b.x[n + 2] == 0.5 && b.x[n + 3] == 7.0);
    ck_assert(b.x[n + 4] == 1e22 && b.x[n + 5] == 1e23);
    ck_assert(b.x[n + 6] == 9007199254740992.0);
    codec_batch_free(&b);
    free(text);
    free(want);
}
END_TEST

/* ---- train requests and results ----------------------------------------------------------- */

static int train_str(const char *json, train_req_t *req, int *async, err_t *err)
{
    cJSON *j = parse_ok(json);
    int rc = codec_train_req_decode(j, req, async, err);
    cJSON_Delete(j);
    return rc;
}

START_TEST(test_train_req_decode)
{
    train_req_t req, def;
    int async = -1;
    err_t err = {0};
    train_req_default(&def);
    ck_assert_int_eq(train_str("{}", &req, &async, &err), 0);
    ck_assert_int_eq(async, 0);
    ck_assert_int_eq(req.steps, def.steps);
    ck_assert(isnan(req.learning_rate) && isnan(req.target_loss));
    ck_assert_int_eq(req.history_every, def.history_every);

    ck_assert_int_eq(train_str("{\"steps\": 100, \"batch_size\": 8, \"learning_rate\": 0.05,"
                               " \"tolerance\": 1e-9, \"target_loss\": 0.01, \"history_every\": 0,"
                               " \"seed\": 42, \"async\": true}",
                               &req, &async, &err),
                     0);
    ck_assert_int_eq(req.steps, 100);
    ck_assert_int_eq(req.batch_size, 8);
    ck_assert(req.learning_rate == 0.05 && req.tolerance == 1e-9 && req.target_loss == 0.01);
    ck_assert_int_eq(req.history_every, 0);
    ck_assert(req.seed == 42);
    ck_assert_int_eq(async, 1);

    ck_assert_int_eq(train_str("{\"epochs\": 3, \"steps\": null, \"batch_size\": null,"
                               " \"learning_rate\": null, \"target_loss\": null, \"async\": null}",
                               &req, &async, &err),
                     0);
    ck_assert_int_eq(req.epochs, 3);
    ck_assert_int_eq(req.batch_size, 0);
    ck_assert(isnan(req.learning_rate));
    ck_assert_int_eq(async, 0);
    ck_assert_int_eq(train_str("{\"steps\": 0}", &req, NULL, &err), 0);
    ck_assert_int_eq(req.steps, 0);
    ck_assert_int_eq(req.patience, 0);   /* no early stopping unless asked */
    ck_assert_int_eq(train_str("{\"early_stopping\": {\"patience\": 4}}", &req, NULL, &err), 0);
    ck_assert_int_eq(req.patience, 4);
    ck_assert(req.min_delta == 0.0);
    ck_assert_int_eq(req.restore_best, 1);
    ck_assert_int_eq(train_str("{\"early_stopping\": {\"patience\": 2, \"min_delta\": 0.5,"
                               " \"restore_best\": false}}", &req, NULL, &err), 0);
    ck_assert(req.patience == 2 && req.min_delta == 0.5 && req.restore_best == 0);
    ck_assert_int_eq(train_str("{\"early_stopping\": null}", &req, NULL, &err), 0);
    ck_assert_int_eq(req.patience, 0);

    static const struct {
        const char *json, *field, *part;
    } cases[] = {
        {"{\"steps\": 10, \"epochs\": 2}", "epochs", "not both"},
        {"{\"stesp\": 10}", "stesp", "unknown field"},
        {"{\"method\": \"sgd\"}", "method", "unknown field"},
        {"{\"steps\": \"10\"}", "steps", "integer"},
        {"{\"steps\": 1.5}", "steps", "integer"},
        {"{\"steps\": -1}", "steps", "out of range"},
        {"{\"steps\": 1e999}", "steps", "finite"},
        {"{\"epochs\": -2}", "epochs", "out of range"},
        {"{\"batch_size\": 3000000000}", "batch_size", "out of range"},
        {"{\"learning_rate\": 0}", "learning_rate", "> 0"},
        {"{\"learning_rate\": \"0.1\"}", "learning_rate", "number"},
        {"{\"tolerance\": -1}", "tolerance", ">= 0"},
        {"{\"target_loss\": 1e999}", "target_loss", "finite"},
        {"{\"history_every\": -1}", "history_every", "out of range"},
        {"{\"seed\": 1e17}", "seed", "out of range"},
        {"{\"async\": 1}", "async", "true or false"},
        {"{\"early_stopping\": 3}", "early_stopping", "object"},
        {"{\"early_stopping\": {}}", "early_stopping", "required"},
        {"{\"early_stopping\": {\"patience\": 0}}", "early_stopping", "out of range"},
        {"{\"early_stopping\": {\"patience\": 2, \"min_delta\": -0.1}}",
         "early_stopping.min_delta", ">= 0"},
        {"{\"early_stopping\": {\"patience\": 2, \"min_delta\": 1e999}}",
         "early_stopping.min_delta", "finite"},
        {"{\"early_stopping\": {\"patience\": 2, \"restore_best\": \"yes\"}}",
         "early_stopping.restore_best", "true or false"},
        {"{\"early_stopping\": {\"patience\": 2, \"mode\": \"min\"}}",
         "early_stopping.mode", "unknown field"},
        {"[]", "", "object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        int rc = train_str(cases[i].json, &req, &async, &err);
        assert_err(rc, &err, ERR_INVAL, cases[i].field, cases[i].part, cases[i].json);
    }
}
END_TEST

START_TEST(test_train_result_and_tensor)
{
    train_result_t res = {.steps_run = 7, .step = 12345678901234LL, .loss_before = 0.1,
                          .loss_after = 1.0 / 3.0, .stopped = TRAIN_STOP_TOLERANCE,
                          .elapsed_ms = 1.5};
    cJSON *j = codec_train_result_encode(0, &res);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    j = parse_ok(text);
    free(text);
    ck_assert(cJSON_GetObjectItemCaseSensitive(j, "steps_run")->valuedouble == 7.0);
    ck_assert(cJSON_GetObjectItemCaseSensitive(j, "step")->valuedouble == 12345678901234.0);
    ck_assert(cJSON_GetObjectItemCaseSensitive(j, "loss_after")->valuedouble == 1.0 / 3.0);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "stopped")->valuestring, "tolerance");
    ck_assert_ptr_nonnull(cJSON_GetObjectItemCaseSensitive(j, "elapsed_ms"));
    /* Without validation rows or early stopping, their fields are absent. */
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "val_loss_after"));
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(j, "best_step"));
    cJSON_Delete(j);
    res.validated = 1;
    res.val_loss_after = 0.25;
    res.early_stopping = 1;
    res.best_step = 9;
    res.best_val_loss = 0.125;
    res.stopped = TRAIN_STOP_EARLY_STOPPING;
    j = codec_train_result_encode(0, &res);
    ck_assert(cJSON_GetObjectItemCaseSensitive(j, "val_loss_after")->valuedouble == 0.25);
    ck_assert(cJSON_GetObjectItemCaseSensitive(j, "best_step")->valuedouble == 9.0);
    ck_assert(cJSON_GetObjectItemCaseSensitive(j, "best_val_loss")->valuedouble == 0.125);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "stopped")->valuestring, "early_stopping");
    cJSON_Delete(j);
    res.best_step = -1;       /* requested, but no evaluation was made */
    j = codec_train_result_encode(0, &res);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "best_step")));
    cJSON_Delete(j);
    /* A run's answer: model_id first, as docs/api.md lists the fields. */
    res = (train_result_t){.steps_run = 2, .step = 5, .loss_before = 0.5, .loss_after = 0.25,
                           .stopped = TRAIN_STOP_MAX_STEPS, .elapsed_ms = 1.5};
    j = codec_train_result_encode(3, &res);
    text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    ck_assert_str_eq(text, "{\"model_id\":3,\"steps_run\":2,\"step\":5,\"loss_before\":0.5,"
                           "\"loss_after\":0.25,\"stopped\":\"max_steps\",\"elapsed_ms\":1.5}");
    free(text);

    /* An evaluation: rows, loss and the family's metrics; a NaN AUC is null. */
    eval_result_t ev = {.rows = 4, .loss = 0.5, .family = EVAL_FAMILY_BINARY,
                        .binary = {.accuracy = 0.75, .precision = 1, .recall = 0.5, .f1 = 2.0 / 3,
                                   .tn = 2, .fp = 0, .fn = 1, .tp = 1, .roc_auc = NAN,
                                   .log_loss = 0.5}};
    j = codec_eval_encode(&ev);
    text = cJSON_PrintUnformatted(j);
    ck_assert_str_eq(text, "{\"rows\":4,\"loss\":0.5,\"metrics\":{\"accuracy\":0.75,\"precision\":1,"
                           "\"recall\":0.5,\"f1\":0.6666666666666666,\"confusion_matrix\":[[2,0],[1,1]],"
                           "\"roc_auc\":null,\"log_loss\":0.5}}");
    free(text);
    cJSON_Delete(j);
    ev = (eval_result_t){.rows = 2, .loss = 3, .family = EVAL_FAMILY_NONE};
    j = codec_eval_encode(&ev);
    text = cJSON_PrintUnformatted(j);
    ck_assert_str_eq(text, "{\"rows\":2,\"loss\":3,\"metrics\":{}}");
    free(text);
    cJSON_Delete(j);

    /* Tensors: scalar, vector, matrix, and AD_ROWS on decode. */
    double x[6] = {1, 2, 3, 4, 5, 6};
    tensor_shape_t s0 = {0, {1, 1}}, s1 = {1, {3, 1}}, s2 = {2, {2, 3}};
    const char *want[] = {"1", "[1,2,3]", "[[1,2,3],[4,5,6]]"};
    const tensor_shape_t *shapes[] = {&s0, &s1, &s2};
    for (int i = 0; i < 3; ++i) {
        j = codec_tensor_encode(shapes[i], x);
        text = cJSON_PrintUnformatted(j);
        ck_assert_str_eq(text, want[i]);
        free(text);
        double *back = NULL;
        int32_t rows = 0;
        err_t err = {0};
        ck_assert_int_eq(codec_tensor_decode(j, shapes[i], "v", &back, &rows, &err), 0);
        ck_assert(memcmp(back, x, (size_t)tensor_shape_elems(shapes[i]) * sizeof(double)) == 0);
        free(back);
        cJSON_Delete(j);
    }
    tensor_shape_t sr = {2, {AD_ROWS, 2}};
    j = parse_ok("[[1,2],[3,4],[5,6]]");
    double *back = NULL;
    int32_t rows = 0;
    err_t err = {0};
    ck_assert_int_eq(codec_tensor_decode(j, &sr, "inputs.x", &back, &rows, &err), 0);
    ck_assert_int_eq(rows, 3);
    ck_assert(back[5] == 6.0);
    free(back);
    cJSON_Delete(j);
    j = parse_ok("[[1,2],[3]]");
    assert_err(codec_tensor_decode(j, &sr, "inputs.x", &back, &rows, &err), &err, ERR_INVAL,
               "inputs.x[1]", "has 1 values, expected 2", "ragged");
    ck_assert_ptr_null(back);
    cJSON_Delete(j);
    j = parse_ok("[]");
    assert_err(codec_tensor_decode(j, &sr, "inputs.x", &back, &rows, &err), &err, ERR_INVAL,
               "inputs.x", "no rows", "no rows");
    cJSON_Delete(j);
}
END_TEST

/* The one field checker every request object goes through: unknown and repeated members are
 * named with their path, the allowed names are listed, a non-object is refused. */
START_TEST(test_check_fields)
{
    static const char *const fields[] = {"of", "wrt", NULL};
    static const char *const none[] = {NULL};
    err_t err = {0};
    cJSON *ok = parse_ok("{\"wrt\":1,\"of\":2}");
    ck_assert_int_eq(codec_check_fields(ok, "jacobian", fields, &err), 0);
    cJSON_Delete(ok);

    cJSON *typo = parse_ok("{\"of\":1,\"wtr\":2}");
    ck_assert_int_eq(codec_check_fields(typo, "jacobian", fields, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "jacobian.wtr");
    ck_assert_str_eq(err.msg, "unknown field \"jacobian.wtr\" (expected of, wrt)");
    ck_assert_int_eq(codec_check_fields(typo, "", fields, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "wtr");
    ck_assert_int_eq(codec_check_fields(typo, "", none, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "of");
    ck_assert_str_eq(err.msg, "unknown field \"of\" (expected no fields)");
    cJSON_Delete(typo);

    cJSON *twice = parse_ok("{\"of\":1,\"wrt\":2,\"of\":3}");
    ck_assert_int_eq(codec_check_fields(twice, NULL, fields, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "of");
    ck_assert_str_eq(err.msg, "of is given twice");
    cJSON_Delete(twice);

    cJSON *arr = parse_ok("[1]");
    ck_assert_int_eq(codec_check_fields(arr, "", fields, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "");
    ck_assert_str_eq(err.msg, "the body must be an object, got an array");
    ck_assert_int_eq(codec_check_fields(arr, "early_stopping", fields, &err), ERR_INVAL);
    ck_assert_str_eq(err.field, "early_stopping");
    cJSON_Delete(arr);
}
END_TEST

START_TEST(test_json_type_names)
{
    const char *const texts[] = {"1", "\"s\"", "[]", "{}", "null", "true"};
    const char *const names[] = {"a number", "a string", "an array", "an object", "null",
                                 "a boolean"};
    for (int i = 0; i < 6; ++i) {
        cJSON *j = parse_ok(texts[i]);
        ck_assert_str_eq(codec_json_type(j), names[i]);
        cJSON_Delete(j);
    }
    ck_assert_str_eq(codec_json_type(NULL), "nothing");
}
END_TEST

static Suite *codec_suite(void)
{
    Suite *s = suite_create("codec");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_parse_ok_and_empty);
    tcase_add_test(tc, test_parse_errors_name_offset_and_line);
    tcase_add_test(tc, test_parse_depth_limit);
    tcase_add_test(tc, test_number_round_trips_exactly);
    tcase_add_test(tc, test_exact_numbers_reprint_a_document);
    tcase_add_test(tc, test_spec_decode_full);
    tcase_add_test(tc, test_spec_errors_name_the_field);
    tcase_add_test(tc, test_spec_round_trip);
    tcase_add_test(tc, test_spec_encode_kind_fields);
    tcase_add_test(tc, test_graph_decode_and_round_trip);
    tcase_add_test(tc, test_graph_errors);
    tcase_add_test(tc, test_params_all_or_nothing);
    tcase_add_test(tc, test_params_graph_model_shapes);
    tcase_add_test(tc, test_batch_decode);
    tcase_add_test(tc, test_batch_errors);
    tcase_add_test(tc, test_csv_decode);
    tcase_add_test(tc, test_csv_label_rule);
    tcase_add_test(tc, test_export_decode);
    tcase_add_test(tc, test_csv_errors);
    tcase_add_test(tc, test_csv_stream_any_split);
    tcase_add_test(tc, test_csv_large_and_blank_heavy);
    tcase_add_test(tc, test_csv_numbers_match_strtod);
    tcase_add_test(tc, test_train_req_decode);
    tcase_add_test(tc, test_train_result_and_tensor);
    tcase_add_test(tc, test_check_fields);
    tcase_add_test(tc, test_json_type_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(codec_suite());
}
