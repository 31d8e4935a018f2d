/* tests/integration/it_models.c -- models as a resource end to end: create, list, read, delete,
 * parameters, fork, checkpoints and restore, export and import, restart on the same database;
 * every bad input answers the exact status, error code and field, and changes nothing. */
#include <check.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"

#define JSON "application/json"

static it_daemon_t d;

static void setup(void)
{
    ck_assert_msg(it_start(&d, it_exe, NULL) == 0, "daemon did not start");
}

static void teardown(void)
{
    it_cleanup(&d);
}

/* ---- helpers --------------------------------------------------------------------------------- */

/* One call; the answer's body parsed (NULL when not JSON). headers (may be NULL) new. */
static cJSON *call(const char *method, const char *path, const char *ctype, const char *body,
                   long *status, char **headers)
{
    it_resp_t r;
    it_call_t c = {.method = method, .path = path, .content_type = ctype, .body = body};
    ck_assert_int_eq(it_do(&c, &r), 0);
    *status = r.status;
    cJSON *j = cJSON_Parse(r.body);
    if (headers != NULL) {
        *headers = r.headers;
        r.headers = NULL;
    }
    it_resp_free(&r);
    return j;
}

/* Assert an error answer: status, error.code and error.field (NULL: not checked, "": absent). */
static void check_error(const char *method, const char *path, const char *ctype, const char *body,
                        long want_status, const char *want_code, const char *want_field)
{
    long status = 0;
    cJSON *j = call(method, path, ctype, body, &status, NULL);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : strdup("(not JSON)");
    ck_assert_msg(status == want_status, "%s %s %.200s: status %ld, want %ld: %s", method, path,
                  body != NULL ? body : "", status, want_status, text);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    ck_assert_msg(cJSON_IsObject(e), "no error object: %s", text);
    cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
    ck_assert_msg(cJSON_IsString(code) && strcmp(code->valuestring, want_code) == 0,
                  "%s %s %.200s: want code %s: %s", method, path, body != NULL ? body : "",
                  want_code, text);
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")));
    cJSON *field = cJSON_GetObjectItemCaseSensitive(e, "field");
    if (want_field != NULL && want_field[0] == '\0')
        ck_assert_msg(field == NULL, "unexpected field: %s", text);
    else if (want_field != NULL)
        ck_assert_msg(cJSON_IsString(field) && strcmp(field->valuestring, want_field) == 0,
                      "%s %s %.200s: want field '%s': %s", method, path,
                      body != NULL ? body : "", want_field, text);
    free(text);
    cJSON_Delete(j);
}

/* POST /v1/models (or import) that must answer 201; returns the new id. */
static int64_t create(const char *path, const char *body)
{
    long status = 0;
    char *headers = NULL;
    cJSON *j = call("POST", path, JSON, body, &status, &headers);
    char *text = j != NULL ? cJSON_PrintUnformatted(j) : strdup("(not JSON)");
    ck_assert_msg(status == 201, "POST %s %.300s: %ld %s", path, body, status, text);
    free(text);
    int64_t id = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "id")->valuedouble;
    char *loc = it_header(headers, "Location");
    char want[64];
    snprintf(want, sizeof want, "/v1/models/%" PRId64, id);
    ck_assert_ptr_nonnull(loc);
    ck_assert_str_eq(loc, want);
    free(loc);
    free(headers);
    cJSON_Delete(j);
    return id;
}

static char *pathf(const char *fmt, int64_t id)
{
    static char buf[8][256];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], fmt, id);
    return p;
}

static void healthy(void)
{
    long status = 0;
    cJSON *j = it_json("GET", "/healthz", NULL, &status);
    ck_assert_int_eq(status, 200);
    cJSON_Delete(j);
}

/* text with the part from `from` up to (not including) `to` removed, in place. Raw text, not a
 * re-printed tree: cJSON prints numbers with 15 digits, which would hide a lost last bit. */
static void cut(char *text, const char *from, const char *to)
{
    char *a = strstr(text, from);
    ck_assert_ptr_nonnull(a);
    char *b = strstr(a, to);
    ck_assert_ptr_nonnull(b);
    memmove(a, b, strlen(b) + 1);
}

/* The export of a model without its "name", as raw text (new): equal for identical models. */
static char *export_unnamed(int64_t id)
{
    char *text = it_get_text(pathf("/v1/models/%" PRId64 "/export", id));
    cut(text, "\"name\":", "\"spec\":");
    return text;
}

/* text with the first `from` replaced by `to` (new). */
static char *replace(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    ck_assert_ptr_nonnull(at);
    size_t n = strlen(text) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    ck_assert_ptr_nonnull(out);
    snprintf(out, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    return out;
}

static const char *const SPEC_LINEAR =
    "{\"kind\":\"linear\",\"inputs\":2,\"init\":{\"method\":\"uniform\",\"scale\":0.5,\"seed\":7}}";

/* An export of a 2-input momentum linear model at step 5 with non-trivial optimizer state and
 * parameters that need 17 significant digits. */
static const char *const EXPORT_MOMENTUM =
    "{\"format\":\"neurond-model\",\"version\":1,\"name\":\"imported\","
    "\"spec\":{\"kind\":\"linear\",\"inputs\":2,\"optimizer\":{\"method\":\"momentum\","
    "\"learning_rate\":0.05,\"momentum\":0.9}},\"step\":5,\"loss\":0.125,"
    "\"parameters\":{\"W1\":[[0.1,0.30000000000000004,-1.0000000000000002e-300]]},"
    "\"optimizer_state\":[0.33333333333333331,-2.5e-310,12345678.123456789]}";

/* ---- create, get, list, delete ------------------------------------------------------------- */

START_TEST(create_and_get)
{
    int64_t id = create("/v1/models", SPEC_LINEAR);
    long status = 0;
    cJSON *m = it_json("GET", pathf("/v1/models/%" PRId64, id), NULL, &status);
    ck_assert_int_eq(status, 200);
    static const char *const keys[] = {"id", "name", "kind", "spec", "step", "status", "rows",
                                       "validation_rows", "loss", "created_at", "updated_at"};
    ck_assert_int_eq(cJSON_GetArraySize(m), 11);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(m, "validation_rows")->valuedouble,
                     0);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; ++i)
        ck_assert_msg(cJSON_HasObjectItem(m, keys[i]), "model object lacks %s", keys[i]);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(m, "name")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(m, "loss")));
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(m, "kind")->valuestring, "linear");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(m, "status")->valuestring, "idle");
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(m, "step")->valuedouble, 0);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(m, "rows")->valuedouble, 0);
    cJSON *spec = cJSON_GetObjectItemCaseSensitive(m, "spec");
    ck_assert(cJSON_IsObject(spec));
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(spec, "inputs")->valuedouble, 2);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(spec, "loss")->valuestring, "l2");
    const char *created = cJSON_GetObjectItemCaseSensitive(m, "created_at")->valuestring;
    ck_assert_int_eq((int)strlen(created), 24);
    ck_assert_int_eq(created[23], 'Z');
    cJSON_Delete(m);

    int64_t named = create("/v1/models", "{\"name\":\"xor\",\"kind\":\"mlp\",\"inputs\":2,"
                                         "\"hidden\":[{\"units\":3,\"activation\":\"sigmoid\"}]}");
    m = it_json("GET", pathf("/v1/models/%" PRId64, named), NULL, &status);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(m, "name")->valuestring, "xor");
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "spec"),
                                                        "name"));
    cJSON_Delete(m);
    cJSON *p = it_json("GET", pathf("/v1/models/%" PRId64 "/parameters", named), NULL, &status);
    ck_assert_int_eq(status, 200);
    cJSON *params = cJSON_GetObjectItemCaseSensitive(p, "parameters");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(params, "W1")), 3);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(
                         cJSON_GetObjectItemCaseSensitive(params, "W1"), 0)), 3);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(
                         cJSON_GetObjectItemCaseSensitive(params, "W2"), 0)), 4);
    cJSON_Delete(p);

    /* No Content-Type at all is read as JSON. */
    it_resp_t r;
    static const char *const no_ct[] = {"Content-Type:", NULL};
    it_call_t c = {.method = "POST", .path = "/v1/models", .body = SPEC_LINEAR,
                   .headers = no_ct};
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_msg(r.status == 201, "no Content-Type: %ld %s", r.status, r.body);
    it_resp_free(&r);
}
END_TEST

START_TEST(create_bad_input)
{
    create("/v1/models", "{\"name\":\"taken\",\"kind\":\"linear\",\"inputs\":1}");
    char *before = it_get_text("/v1/models");
    static const struct {
        const char *ctype, *body;
        long status;
        const char *code, *field;
    } cases[] = {
        {JSON, "{\"kind\":\"linear\"}", 400, "invalid_argument", "inputs"},
        {JSON, "{\"inputs\":2}", 400, "invalid_argument", "kind"},
        {JSON, "{\"kind\":\"linear\",\"inputs\":\"2\"}", 400, "invalid_argument", "inputs"},
        {JSON, "{\"kind\":\"linear\",\"inputs\":2.5}", 400, "invalid_argument", "inputs"},
        {JSON, "{\"kind\":\"linear\",\"inputs\":0}", 400, "invalid_argument", "inputs"},
        {JSON, "{\"kind\":\"linear\",\"inputs\":2,\"bogus\":1}", 400, "invalid_argument",
         "bogus"},
        {JSON, "{\"kind\":\"nope\",\"inputs\":2}", 400, "invalid_argument", "kind"},
        {JSON, "{\"kind\":\"linear\",\"inputs\":2,\"init\":{\"scale\":1e999}}", 400,
         "invalid_argument", "init.scale"},
        {JSON, "{\"kind\":\"linear\",\"inputs\":2,\"parameters\":{\"W1\":[[1,2]]}}", 400,
         "invalid_argument", "parameters.W1"},
        {JSON, "{\"kind\":\"linear\",\"inputs\":2,\"parameters\":{\"W1\":[[1,2,3],[4]]}}", 400,
         "invalid_argument", NULL},
        {JSON, "{\"kind\":\"linear\",\"inputs\":2,\"optimizer\":{\"method\":\"sgd\","
               "\"momentum\":0.5}}", 400, "invalid_argument", "optimizer.momentum"},
        {JSON, "{\"kind\":\"linear\",\"inputs\":100000,\"outputs\":1000}", 400,
         "invalid_argument", NULL},
        {JSON, "{\"name\":\"taken\",\"kind\":\"linear\",\"inputs\":2}", 409, "conflict", "name"},
        {JSON, "{\"name\":\"\",\"kind\":\"linear\",\"inputs\":2}", 400, "invalid_argument",
         "name"},
        {JSON, "{\"kind\":", 400, "invalid_json", ""},
        {JSON, "[1,2]", 400, "invalid_argument", NULL},
        {JSON, "", 400, "invalid_argument", NULL},
        {"application/x-www-form-urlencoded", SPEC_LINEAR, 415, "unsupported_media_type", ""},
        {"text/plain", SPEC_LINEAR, 415, "unsupported_media_type", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        check_error("POST", "/v1/models", cases[i].ctype, cases[i].body, cases[i].status,
                    cases[i].code, cases[i].field);
        healthy();
    }
    char *after = it_get_text("/v1/models");
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
}
END_TEST

START_TEST(list_pages)
{
    int64_t ids[5];
    for (int i = 0; i < 5; ++i)
        ids[i] = create("/v1/models", SPEC_LINEAR);
    long status = 0;
    cJSON *j = it_json("GET", "/v1/models", NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "models")), 5);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "next")));
    cJSON_Delete(j);

    int64_t after = 0, seen = 0;
    for (int page = 0; page < 3; ++page) {
        char path[96];
        snprintf(path, sizeof path, "/v1/models?limit=2&after=%" PRId64, after);
        j = it_json("GET", path, NULL, &status);
        ck_assert_int_eq(status, 200);
        cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models");
        cJSON *m;
        cJSON_ArrayForEach(m, models)
        {
            ck_assert_int_eq((int64_t)cJSON_GetObjectItemCaseSensitive(m, "id")->valuedouble,
                             ids[seen]);
            seen++;
        }
        cJSON *next = cJSON_GetObjectItemCaseSensitive(j, "next");
        if (page < 2) {
            ck_assert_int_eq(cJSON_GetArraySize(models), 2);
            ck_assert_int_eq((int64_t)next->valuedouble, ids[seen - 1]);
            after = (int64_t)next->valuedouble;
        } else {
            ck_assert_int_eq(cJSON_GetArraySize(models), 1);
            ck_assert(cJSON_IsNull(next));
        }
        cJSON_Delete(j);
    }
    ck_assert_int_eq(seen, 5);
    check_error("GET", "/v1/models?limit=0", NULL, NULL, 400, "invalid_argument", "limit");
    check_error("GET", "/v1/models?limit=1001", NULL, NULL, 400, "invalid_argument", "limit");
    check_error("GET", "/v1/models?limit=abc", NULL, NULL, 400, "invalid_argument", "limit");
    check_error("GET", "/v1/models?after=-1", NULL, NULL, 400, "invalid_argument", "after");
}
END_TEST

START_TEST(unknown_ids_and_methods)
{
    int64_t id = create("/v1/models", SPEC_LINEAR);
    static const char *const gets[] = {"/v1/models/999", "/v1/models/999/parameters",
                                       "/v1/models/999/checkpoints", "/v1/models/999/export",
                                       "/v1/models/abc", "/v1/models/0"};
    for (size_t i = 0; i < sizeof gets / sizeof gets[0]; ++i)
        check_error("GET", gets[i], NULL, NULL, 404, "not_found", NULL);
    check_error("DELETE", "/v1/models/999", NULL, NULL, 404, "not_found", NULL);
    check_error("PUT", "/v1/models/999/parameters", JSON, "{\"parameters\":{\"W1\":[[1,2,3]]}}",
                404, "not_found", NULL);
    check_error("POST", "/v1/models/999/fork", JSON, "{}", 404, "not_found", NULL);
    check_error("POST", "/v1/models/999/checkpoints", JSON, "{}", 404, "not_found", NULL);
    check_error("POST", "/v1/models/999/restore", JSON, "{\"checkpoint_id\":1}", 404,
                "not_found", NULL);

    static const struct {
        const char *method, *path, *allow;
    } wrong[] = {
        {"PATCH", "/v1/models/%" PRId64, "DELETE"},
        {"PUT", "/v1/models", "POST"},
        {"DELETE", "/v1/models/%" PRId64 "/parameters", "PUT"},
        {"GET", "/v1/models/%" PRId64 "/restore", "POST"},
        {"GET", "/v1/models/%" PRId64 "/fork", "POST"},
        {"POST", "/v1/models/%" PRId64 "/export", "GET"},
        {"GET", "/v1/models/import", "POST"},
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; ++i) {
        long status = 0;
        char *headers = NULL;
        cJSON *j = call(wrong[i].method, pathf(wrong[i].path, id), NULL, NULL, &status, &headers);
        ck_assert_msg(status == 405, "%s %s: %ld", wrong[i].method, wrong[i].path, status);
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(
                             cJSON_GetObjectItemCaseSensitive(j, "error"), "code")->valuestring,
                         "method_not_allowed");
        char *allow = it_header(headers, "Allow");
        ck_assert_msg(allow != NULL && strstr(allow, wrong[i].allow) != NULL, "Allow: %s",
                      allow != NULL ? allow : "(none)");
        free(allow);
        free(headers);
        cJSON_Delete(j);
    }
}
END_TEST

START_TEST(delete_model)
{
    int64_t id = create("/v1/models", SPEC_LINEAR);
    long status = 0;
    cJSON *j = it_json("POST", pathf("/v1/models/%" PRId64 "/batches", id),
                       "{\"x\":[[1,2]],\"y\":[3]}", &status);
    ck_assert_int_eq(status, 201);
    cJSON_Delete(j);
    j = it_json("POST", pathf("/v1/models/%" PRId64 "/checkpoints", id), "{}", &status);
    ck_assert_int_eq(status, 201);
    cJSON_Delete(j);
    char *params = it_get_text(pathf("/v1/models/%" PRId64 "/parameters", id));   /* cached */
    free(params);
    ck_assert_int_eq(it_request("DELETE", pathf("/v1/models/%" PRId64, id), NULL, NULL, &status,
                                NULL, NULL), 0);
    ck_assert_int_eq(status, 204);
    check_error("GET", pathf("/v1/models/%" PRId64, id), NULL, NULL, 404, "not_found", NULL);
    check_error("GET", pathf("/v1/models/%" PRId64 "/parameters", id), NULL, NULL, 404,
                "not_found", NULL);
    check_error("GET", pathf("/v1/models/%" PRId64 "/batches", id), NULL, NULL, 404,
                "not_found", NULL);
    check_error("GET", pathf("/v1/models/%" PRId64 "/checkpoints", id), NULL, NULL, 404,
                "not_found", NULL);
    check_error("DELETE", pathf("/v1/models/%" PRId64, id), NULL, NULL, 404, "not_found", NULL);
}
END_TEST

/* ---- parameters ------------------------------------------------------------------------------ */

START_TEST(parameters_put_get_exact)
{
    int64_t id = create("/v1/models", SPEC_LINEAR);
    const char *pp = pathf("/v1/models/%" PRId64 "/parameters", id);
    /* Values that need 17 significant digits, a subnormal, extremes. */
    const double want[3] = {0.1 + 0.2, -2.5e-310, 1.7976931348623157e308};
    long status = 0;
    cJSON *j = it_json("PUT", pp, "{\"parameters\":{\"W1\":[[0.30000000000000004,-2.5e-310,"
                                  "1.7976931348623157e308]]}}", &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "step")->valuedouble, 0);
    cJSON_Delete(j);
    j = it_json("GET", pp, NULL, &status);
    ck_assert_int_eq(status, 200);
    cJSON *row = cJSON_GetArrayItem(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "parameters"), "W1"),
        0);
    for (int k = 0; k < 3; ++k) {
        double got = cJSON_GetArrayItem(row, k)->valuedouble;
        ck_assert_msg(memcmp(&got, &want[k], sizeof got) == 0, "W1[0][%d] = %.17g, want %.17g",
                      k, got, want[k]);
    }
    cJSON_Delete(j);

    char *before = it_get_text(pp);
    char *model_before = it_get_text(pathf("/v1/models/%" PRId64, id));
    static const struct {
        const char *ctype, *body;
        long status;
        const char *code, *field;
    } bad[] = {
        {JSON, "{\"parameters\":{}}", 400, "invalid_argument", "parameters.W1"},
        {JSON, "{}", 400, "invalid_argument", "parameters"},
        {JSON, "{\"parameters\":{\"W1\":[[1,2]]}}", 400, "invalid_argument", "parameters.W1[0]"},
        {JSON, "{\"parameters\":{\"W1\":[[1,2,3],[4,5,6]]}}", 400, "invalid_argument", NULL},
        {JSON, "{\"parameters\":{\"W1\":[[1,2,1e999]]}}", 400, "invalid_argument",
         "parameters.W1[0][2]"},
        {JSON, "{\"parameters\":{\"W1\":[[1,\"2\",3]]}}", 400, "invalid_argument",
         "parameters.W1[0][1]"},
        {JSON, "{\"parameters\":{\"W1\":[[1,2,3]],\"W9\":[[1]]}}", 400, "invalid_argument",
         "parameters.W9"},
        {JSON, "{\"parameters\":{\"W1\":[[1,2,3]]},\"extra\":true}", 400, "invalid_argument",
         "extra"},
        {JSON, "{\"parameters\":[1,2,3]}", 400, "invalid_argument", "parameters"},
        {JSON, "{\"parameters\":{\"W1\":[[1,2,3]]", 400, "invalid_json", ""},
        {"text/csv", "1,2,3", 415, "unsupported_media_type", ""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        check_error("PUT", pp, bad[i].ctype, bad[i].body, bad[i].status, bad[i].code,
                    bad[i].field);
        char *after = it_get_text(pp);
        ck_assert_str_eq(before, after);
        free(after);
    }
    char *model_after = it_get_text(pathf("/v1/models/%" PRId64, id));
    ck_assert_str_eq(model_before, model_after);
    free(model_before);
    free(model_after);
    free(before);
}
END_TEST

/* ---- fork, checkpoints, restore ------------------------------------------------------------ */

START_TEST(fork_copies_everything)
{
    int64_t src = create("/v1/models/import", EXPORT_MOMENTUM);
    long status = 0;
    cJSON *j = it_json("POST", pathf("/v1/models/%" PRId64 "/batches", src),
                       "{\"x\":[[1,2],[3,4]],\"y\":[5,6]}", &status);
    ck_assert_int_eq(status, 201);
    cJSON_Delete(j);
    int64_t fork = create(pathf("/v1/models/%" PRId64 "/fork", src), "{\"name\":\"branch\"}");
    j = it_json("GET", pathf("/v1/models/%" PRId64, fork), NULL, &status);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "name")->valuestring, "branch");
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "step")->valuedouble, 5);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "rows")->valuedouble, 2);
    ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(j, "loss")->valuedouble, 0.125);
    cJSON_Delete(j);
    char *a = export_unnamed(src), *b = export_unnamed(fork);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);

    int64_t anon = create(pathf("/v1/models/%" PRId64 "/fork", src), NULL);
    j = it_json("GET", pathf("/v1/models/%" PRId64, anon), NULL, &status);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "name")));
    cJSON_Delete(j);

    const char *fp = pathf("/v1/models/%" PRId64 "/fork", src);
    check_error("POST", fp, JSON, "{\"name\":\"branch\"}", 409, "conflict", "name");
    check_error("POST", fp, JSON, "{\"name\":3}", 400, "invalid_argument", "name");
    check_error("POST", fp, JSON, "{\"nmae\":\"x\"}", 400, "invalid_argument", "nmae");
    check_error("POST", fp, JSON, "{\"name\":", 400, "invalid_json", "");
    check_error("POST", fp, "text/plain", "{}", 415, "unsupported_media_type", "");

    /* Copies, not shares: deleting the source leaves the fork's batches. */
    char *batches = it_get_text(pathf("/v1/models/%" PRId64 "/batches", fork));
    ck_assert_int_eq(it_request("DELETE", pathf("/v1/models/%" PRId64, src), NULL, NULL, &status,
                                NULL, NULL), 0);
    ck_assert_int_eq(status, 204);
    char *again = it_get_text(pathf("/v1/models/%" PRId64 "/batches", fork));
    ck_assert_str_eq(batches, again);
    j = cJSON_Parse(again);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "batches")), 1);
    cJSON_Delete(j);
    free(batches);
    free(again);
}
END_TEST

START_TEST(checkpoint_and_restore)
{
    int64_t id = create("/v1/models/import", EXPORT_MOMENTUM);
    int64_t other = create("/v1/models", SPEC_LINEAR);
    char *original = export_unnamed(id);
    const char *cp = pathf("/v1/models/%" PRId64 "/checkpoints", id);
    long status = 0;
    cJSON *j = it_json("POST", cp, "{\"label\":\"before\"}", &status);
    ck_assert_int_eq(status, 201);
    int64_t c1 = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "checkpoint_id")->valuedouble;
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "step")->valuedouble, 5);
    ck_assert_int_eq(cJSON_GetArraySize(j), 2);
    cJSON_Delete(j);
    j = it_json("POST", cp, NULL, &status);                /* no body: no label */
    ck_assert_int_eq(status, 201);
    cJSON_Delete(j);
    j = it_json("GET", cp, NULL, &status);
    ck_assert_int_eq(status, 200);
    cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "checkpoints");
    ck_assert_int_eq(cJSON_GetArraySize(list), 2);
    cJSON *first = cJSON_GetArrayItem(list, 0), *second = cJSON_GetArrayItem(list, 1);
    ck_assert_int_eq(cJSON_GetArraySize(first), 4);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(first, "label")->valuestring, "before");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(second, "label")));
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(first, "created_at")));
    cJSON_Delete(j);

    check_error("POST", cp, JSON, "{\"label\":5}", 400, "invalid_argument", "label");
    check_error("POST", cp, JSON, "{\"lable\":\"x\"}", 400, "invalid_argument", "lable");
    char long_label[400];
    snprintf(long_label, sizeof long_label, "{\"label\":\"%0300d\"}", 0);
    check_error("POST", cp, JSON, long_label, 400, "invalid_argument", "label");

    /* Change the model, then restore: parameters, optimizer state and step come back. */
    j = it_json("PUT", pathf("/v1/models/%" PRId64 "/parameters", id),
                "{\"parameters\":{\"W1\":[[9,9,9]]}}", &status);
    ck_assert_int_eq(status, 200);
    cJSON_Delete(j);
    char *changed = export_unnamed(id);
    ck_assert_str_ne(changed, original);
    free(changed);

    const char *rp = pathf("/v1/models/%" PRId64 "/restore", id);
    char body[64];
    snprintf(body, sizeof body, "{\"checkpoint_id\":%" PRId64 "}", c1);
    j = it_json("POST", rp, body, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "step")->valuedouble, 5);
    ck_assert_int_eq((int64_t)cJSON_GetObjectItemCaseSensitive(j, "id")->valuedouble, id);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "loss")));
    cJSON_Delete(j);
    char *restored = export_unnamed(id);
    /* Equal but for the loss, which a checkpoint does not record. */
    char *original_no_loss = strdup(original);
    cut(original_no_loss, "\"loss\":", "\"parameters\":");
    cut(restored, "\"loss\":", "\"parameters\":");
    ck_assert_str_eq(restored, original_no_loss);
    free(original_no_loss);
    free(restored);

    char *before = export_unnamed(id);
    check_error("POST", rp, JSON, "{\"checkpoint_id\":999}", 404, "not_found", "checkpoint_id");
    check_error("POST", rp, JSON, "{}", 400, "invalid_argument", "checkpoint_id");
    check_error("POST", rp, JSON, "{\"checkpoint_id\":\"1\"}", 400, "invalid_argument",
                "checkpoint_id");
    check_error("POST", rp, JSON, "{\"checkpoint_id\":1.5}", 400, "invalid_argument",
                "checkpoint_id");
    check_error("POST", rp, JSON, "{\"checkpoint_id\":0}", 400, "invalid_argument",
                "checkpoint_id");
    check_error("POST", rp, JSON, "{\"checkpoint_id\":1,\"x\":1}", 400, "invalid_argument", "x");
    check_error("POST", rp, JSON, "{\"checkpoint_id\":", 400, "invalid_json", "");
    check_error("POST", rp, "application/x-www-form-urlencoded", body, 415,
                "unsupported_media_type", "");
    /* Another model's checkpoint is not this model's. */
    snprintf(body, sizeof body, "{\"checkpoint_id\":%" PRId64 "}", c1);
    check_error("POST", pathf("/v1/models/%" PRId64 "/restore", other), JSON, body, 404,
                "not_found", "checkpoint_id");
    char *after = export_unnamed(id);
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
    free(original);
}
END_TEST

/* ---- export and import ----------------------------------------------------------------------- */

START_TEST(export_import_round_trip)
{
    int64_t src = create("/v1/models",
                         "{\"name\":\"net\",\"kind\":\"mlp\",\"inputs\":3,\"outputs\":2,"
                         "\"hidden\":[{\"units\":4,\"activation\":\"tanh\"}],"
                         "\"init\":{\"method\":\"normal\",\"scale\":0.7,\"seed\":11},"
                         "\"optimizer\":{\"method\":\"adam\",\"learning_rate\":0.001}}");
    char *exported = it_get_text(pathf("/v1/models/%" PRId64 "/export", src));
    cJSON *e = cJSON_Parse(exported);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(e, "format")->valuestring, "neurond-model");
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(e, "version")->valuedouble, 1);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring, "net");
    ck_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(e, "spec")));
    ck_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(e, "parameters")));
    /* adam: m and v for 4*4 + 2*5 = 26 parameters, and t. */
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(e, "optimizer_state")),
                     53);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(e, "step")->valuedouble, 0);

    /* Same name: 409, and nothing is created. */
    char *list_before = it_get_text("/v1/models");
    check_error("POST", "/v1/models/import", JSON, exported, 409, "conflict", "name");
    char *list_after = it_get_text("/v1/models");
    ck_assert_str_eq(list_before, list_after);
    free(list_before);
    free(list_after);

    char *renamed = replace(exported, "\"name\":\"net\"", "\"name\":\"net2\"");
    int64_t dst = create("/v1/models/import", renamed);
    free(renamed);
    char *a = export_unnamed(src), *b = export_unnamed(dst);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    char *pa = it_get_text(pathf("/v1/models/%" PRId64 "/parameters", src));
    char *pb = it_get_text(pathf("/v1/models/%" PRId64 "/parameters", dst));
    ck_assert_str_eq(pa, pb);
    free(pa);
    free(pb);

    /* Predictions agree exactly when the query routes are there. */
    const char *x = "{\"x\":[[0.1,0.2,0.3],[-1.5,2.25,1e-3]]}";
    long sa = 0, sb = 0;
    char *ya = NULL, *yb = NULL;
    it_request("POST", pathf("/v1/models/%" PRId64 "/predict", src), JSON, x, &sa, &ya, NULL);
    it_request("POST", pathf("/v1/models/%" PRId64 "/predict", dst), JSON, x, &sb, &yb, NULL);
    ck_assert_int_eq(sa, sb);
    if (sa == 200)
        ck_assert_str_eq(ya, yb);
    free(ya);
    free(yb);

    /* An import keeps step, loss and optimizer state bit for bit. */
    int64_t m = create("/v1/models/import", EXPORT_MOMENTUM);
    char *got_text = it_get_text(pathf("/v1/models/%" PRId64 "/export", m));
    cJSON *got = cJSON_Parse(got_text);
    free(got_text);
    cJSON *want = cJSON_Parse(EXPORT_MOMENTUM);
    cJSON *gs = cJSON_GetObjectItemCaseSensitive(got, "optimizer_state");
    cJSON *ws = cJSON_GetObjectItemCaseSensitive(want, "optimizer_state");
    ck_assert_int_eq(cJSON_GetArraySize(gs), 3);
    for (int k = 0; k < 3; ++k) {
        double g = cJSON_GetArrayItem(gs, k)->valuedouble, w = cJSON_GetArrayItem(ws, k)->valuedouble;
        ck_assert_msg(memcmp(&g, &w, sizeof g) == 0, "state[%d] %.17g != %.17g", k, g, w);
    }
    cJSON *gw = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(
                                       cJSON_GetObjectItemCaseSensitive(got, "parameters"), "W1"), 0);
    cJSON *ww = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(
                                       cJSON_GetObjectItemCaseSensitive(want, "parameters"), "W1"), 0);
    for (int k = 0; k < 3; ++k) {
        double g = cJSON_GetArrayItem(gw, k)->valuedouble, w = cJSON_GetArrayItem(ww, k)->valuedouble;
        ck_assert_msg(memcmp(&g, &w, sizeof g) == 0, "W1[0][%d] %.17g != %.17g", k, g, w);
    }
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(got, "step")->valuedouble, 5);
    ck_assert_double_eq(cJSON_GetObjectItemCaseSensitive(got, "loss")->valuedouble, 0.125);
    cJSON_Delete(got);
    cJSON_Delete(want);
    cJSON_Delete(e);
    free(exported);
}
END_TEST

START_TEST(import_bad_input)
{
    char *before = it_get_text("/v1/models");
    static const struct {
        const char *ctype, *body;
        long status;
        const char *code, *field;
    } bad[] = {
        {JSON, "{\"format\":\"other\",\"version\":1,\"spec\":{\"kind\":\"linear\",\"inputs\":1},"
               "\"parameters\":{\"W1\":[[1,2]]}}", 400, "invalid_argument", "format"},
        {JSON, "{\"format\":\"neurond-model\",\"version\":2,\"spec\":{\"kind\":\"linear\","
               "\"inputs\":1},\"parameters\":{\"W1\":[[1,2]]}}", 400, "invalid_argument",
         "version"},
        {JSON, "{\"format\":\"neurond-model\",\"spec\":{\"kind\":\"linear\",\"inputs\":1},"
               "\"parameters\":{\"W1\":[[1,2]]}}", 400, "invalid_argument", "version"},
        {JSON, "{\"format\":\"neurond-model\",\"version\":1,\"parameters\":{\"W1\":[[1,2]]}}",
         400, "invalid_argument", "spec"},
        {JSON, "{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
               "\"inputs\":1}}", 400, "invalid_argument", "parameters"},
        {JSON, "{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
               "\"inputs\":1,\"bogus\":1},\"parameters\":{\"W1\":[[1,2]]}}", 400,
         "invalid_argument", "spec.bogus"},
        {JSON, "{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
               "\"inputs\":1},\"parameters\":{\"W1\":[[1,2,3]]}}", 400, "invalid_argument",
         "parameters.W1[0]"},
        {JSON, "{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
               "\"inputs\":1},\"parameters\":{\"W1\":[[1,1e999]]}}", 400, "invalid_argument",
         "parameters.W1[0][1]"},
        {JSON, "{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
               "\"inputs\":1,\"optimizer\":{\"method\":\"momentum\"}},"
               "\"parameters\":{\"W1\":[[1,2]]},\"optimizer_state\":[1]}", 400,
         "invalid_argument", "optimizer_state"},
        {JSON, "{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
               "\"inputs\":1,\"optimizer\":{\"method\":\"momentum\"}},"
               "\"parameters\":{\"W1\":[[1,2]]},\"optimizer_state\":[1,\"a\"]}", 400,
         "invalid_argument", "optimizer_state[1]"},
        {JSON, "{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
               "\"inputs\":1},\"parameters\":{\"W1\":[[1,2]]},\"step\":-1}", 400,
         "invalid_argument", "step"},
        {JSON, "{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
               "\"inputs\":1},\"parameters\":{\"W1\":[[1,2]]},\"extra\":1}", 400,
         "invalid_argument", "extra"},
        {JSON, "{\"format\":\"neurond-model\",", 400, "invalid_json", ""},
        {"text/csv", "{}", 415, "unsupported_media_type", ""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        check_error("POST", "/v1/models/import", bad[i].ctype, bad[i].body, bad[i].status,
                    bad[i].code, bad[i].field);
        healthy();
    }
    char *after = it_get_text("/v1/models");
    ck_assert_str_eq(before, after);
    free(before);
    free(after);
}
END_TEST

/* An export of a linear model with one input (2 parameters) at step 3, with the optimizer
 * `optimizer` (JSON) and the state `state` (the array's values). New string. */
static char *export_with_state(const char *optimizer, const char *state)
{
    static const char fmt[] =
        "{\"format\":\"neurond-model\",\"version\":1,\"spec\":{\"kind\":\"linear\","
        "\"inputs\":1,\"optimizer\":%s},\"step\":3,"
        "\"parameters\":{\"W1\":[[0.5,-0.25]]},\"optimizer_state\":[%s]}";
    size_t n = sizeof fmt + strlen(optimizer) + strlen(state);
    char *text = malloc(n);
    ck_assert_ptr_nonnull(text);
    snprintf(text, n, fmt, optimizer, state);
    return text;
}

/* lbfgs with history 2: [pairs stored, newest slot, iterations, rho0, rho1, s0[2], s1[2], y0[2],
 * y1[2]]. adam: [m0, m1, v0, v1, t]. */
#define OPT_LBFGS "{\"method\":\"lbfgs\",\"history\":2}"
#define OPT_ADAM "{\"method\":\"adam\"}"

/* Model id's export, with its name changed (`from` -> `to`), imports again. */
static void reimport(int64_t id, const char *from, const char *to)
{
    char *text = it_get_text(pathf("/v1/models/%" PRId64 "/export", id));
    char *renamed = replace(text, from, to);
    create("/v1/models/import", renamed);
    free(renamed);
    free(text);
}

/* Each state imports as 400 naming optimizer_state, and the daemon stays up. */
static void expect_states_refused(const char *optimizer, const char *const *states, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        char *body = export_with_state(optimizer, states[i]);
        check_error("POST", "/v1/models/import", JSON, body, 400, "invalid_argument",
                    "optimizer_state");
        free(body);
        healthy();
    }
}

/* Optimizer state is checked as strictly as the engine keeps it: bookkeeping that would index
 * out of bounds or loop for ever, or moments the optimizer cannot have, are refused with 400
 * naming optimizer_state; nothing is stored and the daemon stays up. A state the engine did
 * produce imports and trains. */
START_TEST(import_refuses_damaged_optimizer_state)
{
    char *before = it_get_text("/v1/models");
    static const char *const bad_lbfgs[] = {
        "5,0,1,0.5,0,1,0,0,0,2,0,0,0",                 /* more pairs than history */
        "1e15,0,1,0.5,0,1,0,0,0,2,0,0,0",              /* the ~10^15-iteration loop */
        "-1,0,1,0.5,0,1,0,0,0,2,0,0,0",
        "1,7,1,0.5,0,1,0,0,0,2,0,0,0",                 /* newest slot out of range */
        "1,1,1,0.5,0,1,0,0,0,2,0,0,0",                 /* slot 1 before slot 0 was filled */
        "2,-1,2,0.5,0.5,1,0,1,0,2,0,2,0",
        "1,0,0.5,0.5,0,1,0,0,0,2,0,0,0",               /* iterations not an integer */
        "1,0,9,0.5,0,1,0,0,0,2,0,0,0",                 /* more iterations than steps */
        "1,0,1,-0.5,0,1,0,0,0,2,0,0,0",                /* rho <= 0 */
        "1,0,1,0.25,0,1,0,0,0,2,0,0,0",                /* rho != 1/s'y */
        "1,0,1,0.5,0,1,0,0,0,-2,0,0,0",                /* s'y < 0 */
        "0.5,0,1,0.5,0,1,0,0,0,2,0,0,0",
    };
    expect_states_refused(OPT_LBFGS, bad_lbfgs, sizeof bad_lbfgs / sizeof bad_lbfgs[0]);
    static const char *const bad_adam[] = {
        "0,0,-1,0,1",           /* negative second moment */
        "0,0,0,0,1.5",          /* step count not an integer */
        "0,0,0,0,-1",
        "1,0,0,0,0",            /* moments before the first step */
        "0,0,0,0,4",            /* more adam steps than model steps */
    };
    expect_states_refused(OPT_ADAM, bad_adam, sizeof bad_adam / sizeof bad_adam[0]);
    char *after = it_get_text("/v1/models");
    ck_assert_str_eq(before, after);
    free(before);
    free(after);

    /* What the engine produces imports, trains and exports again. */
    char *good = export_with_state(OPT_LBFGS, "1,0,1,0.5,0,1,0,0,0,2,0,0,0");
    int64_t id = create("/v1/models/import", good);
    free(good);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches", id),
                 "{\"x\":[[1],[2],[3]],\"y\":[1,3,5]}", 201);
    cJSON *j = it_call("POST", pathf("/v1/models/%" PRId64 "/train", id), "{\"steps\":4}", 200);
    ck_assert_int_ge((int64_t)it_num(j, "step"), 4);
    ck_assert_double_lt(it_num(j, "loss_after"), it_num(j, "loss_before"));
    cJSON_Delete(j);
    reimport(id, "\"name\":null", "\"name\":\"lbfgs-again\"");
    healthy();
}
END_TEST

/* Steps stay exact integers: an import above the largest step is refused naming step, and a
 * train that would pass it naming steps (or epochs) -- before anything runs or is queued. */
START_TEST(step_bound)
{
    static const char fmt[] =
        "{\"format\":\"neurond-model\",\"version\":1,\"name\":\"%s\","
        "\"spec\":{\"kind\":\"linear\",\"inputs\":1},\"step\":%s,"
        "\"parameters\":{\"W1\":[[0.5,-0.25]]}}";
    char body[512];
    snprintf(body, sizeof body, fmt, "near-2^53", "9007199254740000");
    check_error("POST", "/v1/models/import", JSON, body, 400, "invalid_argument", "step");
    snprintf(body, sizeof body, fmt, "over", "1000000000000001");
    check_error("POST", "/v1/models/import", JSON, body, 400, "invalid_argument", "step");
    snprintf(body, sizeof body, fmt, "near", "999999999999998");
    int64_t id = create("/v1/models/import", body);
    const char *train = pathf("/v1/models/%" PRId64 "/train", id);
    it_call_free("POST", pathf("/v1/models/%" PRId64 "/batches", id),
                 "{\"x\":[[1],[2]],\"y\":[1,3]}", 201);
    check_error("POST", train, JSON, "{\"steps\":3}", 400, "invalid_argument", "steps");
    check_error("POST", train, JSON, "{\"steps\":3,\"async\":true}", 400, "invalid_argument",
                "steps");
    check_error("POST", train, JSON, "{\"epochs\":2,\"batch_size\":1}", 400,
                "invalid_argument", "epochs");
    cJSON *j = it_call("POST", train, "{\"steps\":2}", 200);
    ck_assert_int_eq((int64_t)it_num(j, "step"), 1000000000000000LL);
    cJSON_Delete(j);
    check_error("POST", train, JSON, "{\"steps\":1}", 400, "invalid_argument", "steps");
    j = it_call("POST", train, "{\"steps\":0}", 200);      /* evaluating is still fine */
    ck_assert_int_eq((int64_t)it_num(j, "step"), 1000000000000000LL);
    cJSON_Delete(j);
    /* The export at the bound imports again, with its history steps distinct. */
    reimport(id, "\"name\":\"near\"", "\"name\":\"near-again\"");
    cJSON *h = it_call("GET", pathf("/v1/models/%" PRId64 "/history", id), NULL, 200);
    cJSON *rows = cJSON_GetObjectItemCaseSensitive(h, "history");
    ck_assert_int_eq(cJSON_GetArraySize(rows), 2);
    ck_assert_double_eq(it_num(cJSON_GetArrayItem(rows, 0), "step"), 999999999999998.0);
    ck_assert_double_eq(it_num(cJSON_GetArrayItem(rows, 1), "step"), 999999999999999.0);
    cJSON_Delete(h);
    healthy();
}
END_TEST

/* ---- restart ------------------------------------------------------------------------------- */

START_TEST(restart_keeps_everything)
{
    int64_t a = create("/v1/models", "{\"name\":\"keep\",\"kind\":\"softmax\",\"inputs\":2,"
                                     "\"classes\":3,\"init\":{\"method\":\"normal\","
                                     "\"scale\":1,\"seed\":5}}");
    int64_t b = create("/v1/models/import", EXPORT_MOMENTUM);
    long status = 0;
    cJSON *j = it_json("POST", pathf("/v1/models/%" PRId64 "/batches", a),
                       "{\"x\":[[1,2],[3,4]],\"y\":[0,2]}", &status);
    ck_assert_int_eq(status, 201);
    cJSON_Delete(j);
    j = it_json("POST", pathf("/v1/models/%" PRId64 "/checkpoints", b), "{\"label\":\"k\"}",
                &status);
    ck_assert_int_eq(status, 201);
    cJSON_Delete(j);
    const char *paths[] = {"/v1/models",
                           pathf("/v1/models/%" PRId64 "/parameters", a),
                           pathf("/v1/models/%" PRId64 "/export", a),
                           pathf("/v1/models/%" PRId64 "/batches", a),
                           pathf("/v1/models/%" PRId64 "/export", b),
                           pathf("/v1/models/%" PRId64 "/checkpoints", b)};
    enum { N = sizeof paths / sizeof paths[0] };
    char *before[N];
    for (int i = 0; i < N; ++i)
        before[i] = it_get_text(paths[i]);
    ck_assert_int_eq(it_restart(&d), 0);
    for (int i = 0; i < N; ++i) {
        char *after = it_get_text(paths[i]);
        ck_assert_str_eq(before[i], after);
        free(after);
        free(before[i]);
    }
}
END_TEST

/* ---- with training (the train and job routes) ------------------------------------------- */

/* Train `id` synchronously for `steps` steps, recording every step. */
static void train(int64_t id, int steps)
{
    char body[64];
    snprintf(body, sizeof body, "{\"steps\":%d}", steps);
    long status = 0;
    cJSON *j = it_json("POST", pathf("/v1/models/%" PRId64 "/train", id), body, &status);
    ck_assert_msg(status == 200, "train: %ld", status);
    cJSON_Delete(j);
}

static int history_len(int64_t id, int64_t *last_step)
{
    long status = 0;
    cJSON *j = it_json("GET", pathf("/v1/models/%" PRId64 "/history?limit=1000", id), NULL,
                       &status);
    ck_assert_int_eq(status, 200);
    cJSON *h = cJSON_GetObjectItemCaseSensitive(j, "history");
    int n = cJSON_GetArraySize(h);
    if (last_step != NULL && n > 0)
        *last_step = (int64_t)cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(h, n - 1),
                                                               "step")->valuedouble;
    cJSON_Delete(j);
    return n;
}

START_TEST(restore_trims_history_fork_copies_it)
{
    int64_t id = create("/v1/models", SPEC_LINEAR);
    long status = 0;
    cJSON *j = it_json("POST", pathf("/v1/models/%" PRId64 "/batches", id),
                       "{\"x\":[[1,2],[2,1],[3,3]],\"y\":[3,3,6]}", &status);
    ck_assert_int_eq(status, 201);
    cJSON_Delete(j);
    train(id, 4);
    j = it_json("POST", pathf("/v1/models/%" PRId64 "/checkpoints", id), "{}", &status);
    ck_assert_int_eq(status, 201);
    int64_t c = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "checkpoint_id")->valuedouble;
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "step")->valuedouble, 4);
    cJSON_Delete(j);
    char *at_checkpoint = it_get_text(pathf("/v1/models/%" PRId64 "/parameters", id));
    train(id, 3);
    int64_t last = -1;
    ck_assert_int_eq(history_len(id, &last), 7);
    ck_assert_int_eq(last, 6);

    /* A fork carries the whole history and the loss. */
    int64_t fork = create(pathf("/v1/models/%" PRId64 "/fork", id), "{}");
    ck_assert_int_eq(history_len(fork, &last), 7);
    ck_assert_int_eq(last, 6);
    j = it_json("GET", pathf("/v1/models/%" PRId64, fork), NULL, &status);
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "loss")));
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "step")->valuedouble, 7);
    cJSON_Delete(j);

    char body[64];
    snprintf(body, sizeof body, "{\"checkpoint_id\":%" PRId64 "}", c);
    j = it_json("POST", pathf("/v1/models/%" PRId64 "/restore", id), body, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(j, "step")->valuedouble, 4);
    cJSON_Delete(j);
    ck_assert_int_eq(history_len(id, &last), 4);      /* rows 0..3: at and after 4 deleted */
    ck_assert_int_eq(last, 3);
    char *restored = it_get_text(pathf("/v1/models/%" PRId64 "/parameters", id));
    ck_assert_str_eq(restored, at_checkpoint);
    ck_assert_int_eq(history_len(fork, NULL), 7);    /* the fork's branch is untouched */
    train(id, 1);
    ck_assert_int_eq(history_len(id, &last), 5);
    ck_assert_int_eq(last, 4);
    free(restored);
    free(at_checkpoint);
}
END_TEST

START_TEST(writes_conflict_while_training)
{
    int64_t id = create("/v1/models", "{\"kind\":\"linear\",\"inputs\":1}");
    enum { ROWS = 200000 };
    unsigned char *raw = malloc((size_t)ROWS * 16u);
    ck_assert_ptr_nonnull(raw);
    for (int i = 0; i < ROWS; ++i) {
        double v[2] = {i * 1e-6, i * 2e-6};
        memcpy(raw + (size_t)i * 16u, v, 16);      /* the test host is little-endian too */
    }
    it_resp_t r;
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/batches?rows=%d&cols=2", id, ROWS);
    it_call_t c = {.method = "POST", .path = path, .content_type = "application/octet-stream",
                   .body = (const char *)raw, .len = (size_t)ROWS * 16u};
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_int_eq(r.status, 201);
    it_resp_free(&r);
    free(raw);
    long status = 0;
    cJSON *j = it_json("POST", pathf("/v1/models/%" PRId64 "/train", id),
                       "{\"steps\":1000000,\"async\":true,\"history_every\":0}", &status);
    ck_assert_int_eq(status, 202);
    int64_t job = (int64_t)cJSON_GetObjectItemCaseSensitive(j, "id")->valuedouble;
    cJSON_Delete(j);

    char *params = it_get_text(pathf("/v1/models/%" PRId64 "/export", id));   /* reads go on */
    free(params);
    check_error("POST", pathf("/v1/models/%" PRId64 "/batches", id), JSON,
                "{\"x\":[[1]],\"y\":[2]}", 409, "conflict", NULL);
    check_error("DELETE", pathf("/v1/models/%" PRId64 "/batches/1", id), NULL, NULL, 409,
                "conflict", NULL);
    check_error("PUT", pathf("/v1/models/%" PRId64 "/parameters", id), JSON,
                "{\"parameters\":{\"W1\":[[1,2]]}}", 409, "conflict", NULL);
    check_error("POST", pathf("/v1/models/%" PRId64 "/restore", id), JSON,
                "{\"checkpoint_id\":1}", 409, "conflict", NULL);
    check_error("DELETE", pathf("/v1/models/%" PRId64, id), NULL, NULL, 409, "conflict", NULL);
    j = it_json("GET", pathf("/v1/models/%" PRId64, id), NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "training");
    cJSON_Delete(j);
    /* Checkpoints and forks read the last committed state and work during a run. */
    j = it_json("POST", pathf("/v1/models/%" PRId64 "/checkpoints", id), "{}", &status);
    ck_assert_int_eq(status, 201);
    cJSON_Delete(j);

    ck_assert_int_eq(it_request("DELETE", pathf("/v1/jobs/%" PRId64, job), NULL, NULL, &status,
                                NULL, NULL), 0);
    ck_assert_int_eq(status, 202);
    for (int tries = 0; tries < 600; ++tries) {
        j = it_json("GET", pathf("/v1/jobs/%" PRId64, job), NULL, &status);
        const char *st = cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring;
        int done = strcmp(st, "queued") != 0 && strcmp(st, "running") != 0;
        cJSON_Delete(j);
        if (done)
            break;
        usleep(50000);
    }
    j = it_json("POST", pathf("/v1/models/%" PRId64 "/batches", id), "{\"x\":[[1]],\"y\":[2]}",
                &status);
    ck_assert_int_eq(status, 201);
    cJSON_Delete(j);
    ck_assert_int_eq(it_request("DELETE", pathf("/v1/models/%" PRId64, id), NULL, NULL, &status,
                                NULL, NULL), 0);
    ck_assert_int_eq(status, 204);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("models");
    TCase *tc = tcase_create("models");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, create_and_get);
    tcase_add_test(tc, create_bad_input);
    tcase_add_test(tc, list_pages);
    tcase_add_test(tc, unknown_ids_and_methods);
    tcase_add_test(tc, delete_model);
    tcase_add_test(tc, parameters_put_get_exact);
    tcase_add_test(tc, fork_copies_everything);
    tcase_add_test(tc, checkpoint_and_restore);
    tcase_add_test(tc, export_import_round_trip);
    tcase_add_test(tc, import_bad_input);
    tcase_add_test(tc, import_refuses_damaged_optimizer_state);
    tcase_add_test(tc, step_bound);
    tcase_add_test(tc, restart_keeps_everything);
    tcase_add_test(tc, restore_trims_history_fork_copies_it);
    tcase_add_test(tc, writes_conflict_while_training);
    suite_add_tcase(s, tc);
    return it_run(s);
}
