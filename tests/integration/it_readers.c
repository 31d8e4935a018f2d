/* tests/integration/it_readers.c -- many readers of one model at once: predictions from several
 * connections run on separate cached copies of the model, and every copy follows the model's
 * committed parameters (a change, a change racing with the readers, a delete). */
#include <check.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

#define N_READERS 6
#define N_CALLS 60

static it_daemon_t d;

static void setup(void)
{
    static const char *const extra[] = {"--threads", "4", NULL};
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

static void teardown(void)
{
    it_cleanup(&d);
}

static const char SPEC[] =
    "{\"kind\":\"mlp\",\"inputs\":2,\"hidden\":[{\"units\":3,\"activation\":\"tanh\"}],"
    "\"outputs\":1,\"output_activation\":\"sigmoid\","
    "\"init\":{\"method\":\"uniform\",\"scale\":0.5,\"seed\":11}}";
static const char X[] = "{\"x\":[[0.25,-0.5],[1.5,2]]}";
static const char PARAMS_A[] =
    "{\"parameters\":{\"W1\":[[0.1,0.2,0.3],[-0.1,0.4,-0.2],[0.05,-0.3,0.6]],"
    "\"W2\":[[0.2,1.0,-1.0,0.5]]}}";
static const char PARAMS_B[] =
    "{\"parameters\":{\"W1\":[[-0.7,0.1,0.9],[0.3,-0.4,0.2],[0.8,0.8,-0.1]],"
    "\"W2\":[[-0.3,0.6,0.7,-1.2]]}}";

typedef struct reader {
    char url[256];
    const char *want[2];        /* acceptable bodies (want[1] may be NULL) */
    int want_status;
    int bad;                    /* answers that matched neither */
    long last_status;
    char last_body[512];
} reader_t;

static size_t collect(char *p, size_t size, size_t n, void *userdata)
{
    char *buf = userdata;
    size_t used = strlen(buf), add = size * n;
    if (used + add < 512) {
        memcpy(buf + used, p, add);
        buf[used + add] = '\0';
    }
    return add;
}

/* N_CALLS predictions on one keep-alive connection of its own. */
static void *reader_main(void *arg)
{
    reader_t *r = arg;
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char body[512];
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, X);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
    for (int i = 0; i < N_CALLS; ++i) {
        body[0] = '\0';
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        int ok = status == r->want_status &&
                 (r->want[0] == NULL || strcmp(body, r->want[0]) == 0 ||
                  (r->want[1] != NULL && strcmp(body, r->want[1]) == 0));
        if (!ok) {
            r->bad++;
            r->last_status = status;
            snprintf(r->last_body, sizeof r->last_body, "%s", body);
        }
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

/* Run N_READERS readers at once against model `id`; fail on any unexpected answer. When
 * `writer` is set, PUT PARAMS_A / PARAMS_B in turn while they run. */
static void readers(int64_t id, int want_status, const char *want0, const char *want1,
                    int writer)
{
    reader_t r[N_READERS];
    pthread_t t[N_READERS];
    for (int i = 0; i < N_READERS; ++i) {
        memset(&r[i], 0, sizeof r[i]);
        snprintf(r[i].url, sizeof r[i].url, "%s/v1/models/%" PRId64 "/predict", it_base_url(),
                 id);
        r[i].want[0] = want0;
        r[i].want[1] = want1;
        r[i].want_status = want_status;
        ck_assert_int_eq(pthread_create(&t[i], NULL, reader_main, &r[i]), 0);
    }
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/parameters", id);
    for (int k = 0; writer && k < 20; ++k) {
        long status = 0;
        cJSON *j = it_json("PUT", path, k % 2 ? PARAMS_A : PARAMS_B, &status);
        ck_assert_int_eq(status, 200);
        cJSON_Delete(j);
    }
    for (int i = 0; i < N_READERS; ++i) {
        pthread_join(t[i], NULL);
        ck_assert_msg(r[i].bad == 0, "reader %d: %d unexpected answers, last %ld %s", i, r[i].bad,
                      r[i].last_status, r[i].last_body);
    }
}

/* The body of one prediction of X, asserted 200. New. */
static char *predict_once(int64_t id)
{
    char path[128], *body = NULL;
    long status = 0;
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/predict", id);
    ck_assert_int_eq(it_request("POST", path, "application/json", X, &status, &body, NULL), 0);
    ck_assert_msg(status == 200, "predict: %ld %s", status, body);
    return body;
}

static void put_params(int64_t id, const char *params)
{
    char path[128];
    long status = 0;
    snprintf(path, sizeof path, "/v1/models/%" PRId64 "/parameters", id);
    cJSON *j = it_json("PUT", path, params, &status);
    ck_assert_int_eq(status, 200);
    cJSON_Delete(j);
}

START_TEST(concurrent_predictions_follow_commits)
{
    long status = 0;
    cJSON *m = it_json("POST", "/v1/models", SPEC, &status);
    ck_assert_int_eq(status, 201);
    int64_t id = (int64_t)cJSON_GetObjectItemCaseSensitive(m, "id")->valuedouble;
    cJSON_Delete(m);

    /* Initial parameters: every concurrent answer equals the sequential one. */
    char *e0 = predict_once(id);
    ck_assert_ptr_nonnull(strstr(e0, "\"outputs\":["));
    readers(id, 200, e0, NULL, 0);

    /* New parameters reach every cached copy, also the idle ones. */
    put_params(id, PARAMS_A);
    char *ea = predict_once(id);
    ck_assert_str_ne(ea, e0);
    readers(id, 200, ea, NULL, 0);
    put_params(id, PARAMS_B);
    char *eb = predict_once(id);
    ck_assert_str_ne(eb, ea);
    ck_assert_str_ne(eb, e0);
    readers(id, 200, eb, NULL, 0);

    /* Changes racing with the readers: each answer is wholly one state or the other. */
    readers(id, 200, ea, eb, 1);
    put_params(id, PARAMS_A);
    char *again = predict_once(id);
    ck_assert_str_eq(again, ea);
    readers(id, 200, ea, NULL, 0);

    /* A deleted model is gone for every reader. */
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%" PRId64, id);
    ck_assert_int_eq(it_request("DELETE", path, NULL, NULL, &status, NULL, NULL), 0);
    ck_assert_int_eq(status, 204);
    readers(id, 404, NULL, NULL, 0);
    ck_assert_int_eq(it_stop(&d), 0);          /* a clean exit: every copy freed (ASan) */
    free(e0);
    free(ea);
    free(eb);
    free(again);
}
END_TEST

/* Readers of different models at once get each their own model's answers. */
START_TEST(concurrent_predictions_two_models)
{
    long status = 0;
    int64_t id[2];
    char *want[2];
    for (int k = 0; k < 2; ++k) {
        cJSON *m = it_json("POST", "/v1/models", SPEC, &status);
        ck_assert_int_eq(status, 201);
        id[k] = (int64_t)cJSON_GetObjectItemCaseSensitive(m, "id")->valuedouble;
        cJSON_Delete(m);
        put_params(id[k], k == 0 ? PARAMS_A : PARAMS_B);
        want[k] = predict_once(id[k]);
    }
    ck_assert_str_ne(want[0], want[1]);
    reader_t r[2 * N_READERS];
    pthread_t t[2 * N_READERS];
    for (int i = 0; i < 2 * N_READERS; ++i) {
        memset(&r[i], 0, sizeof r[i]);
        snprintf(r[i].url, sizeof r[i].url, "%s/v1/models/%" PRId64 "/predict", it_base_url(),
                 id[i % 2]);
        r[i].want[0] = want[i % 2];
        r[i].want_status = 200;
        ck_assert_int_eq(pthread_create(&t[i], NULL, reader_main, &r[i]), 0);
    }
    for (int i = 0; i < 2 * N_READERS; ++i) {
        pthread_join(t[i], NULL);
        ck_assert_msg(r[i].bad == 0, "reader %d: %d unexpected answers, last %ld %s", i, r[i].bad,
                      r[i].last_status, r[i].last_body);
    }
    ck_assert_int_eq(it_stop(&d), 0);
    free(want[0]);
    free(want[1]);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("readers");
    TCase *tc = tcase_create("readers");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, concurrent_predictions_follow_commits);
    tcase_add_test(tc, concurrent_predictions_two_models);
    suite_add_tcase(s, tc);
    return it_run(s);
}
