/* tests/integration/it_meta.c -- the daemon's foundation end to end: health, errors, limits,
 * metrics, the OpenAPI document, request ids, keep-alive, shutdown and restart. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blas.h"
#include "client.h"

static it_daemon_t d;

static void setup(void)
{
    static const char *const extra[] = {"--max-body", "1000", "--threads", "2", NULL};
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

static void teardown(void)
{
    it_cleanup(&d);
}

static void assert_error(const char *body, const char *code)
{
    cJSON *j = cJSON_Parse(body);
    ck_assert_msg(j != NULL, "error body is not JSON: %s", body);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    ck_assert_msg(cJSON_IsObject(e), "no error object: %s", body);
    cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
    ck_assert_msg(cJSON_IsString(c), "no error.code: %s", body);
    ck_assert_str_eq(c->valuestring, code);
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")));
    cJSON_Delete(j);
}

START_TEST(healthz_ok)
{
    long status = 0;
    cJSON *j = it_json("GET", "/healthz", NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "status")->valuestring, "ok");
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "db")->valuestring, "ok");
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "version")));
    cJSON_Delete(j);
}
END_TEST

START_TEST(request_id)
{
    it_resp_t r;
    it_call_t call = {.method = "GET", .path = "/healthz"};
    ck_assert_int_eq(it_do(&call, &r), 0);
    char *id1 = it_header(r.headers, "X-Request-Id");
    ck_assert_ptr_nonnull(id1);
    ck_assert_int_eq((int)strlen(id1), 16);
    it_resp_free(&r);
    ck_assert_int_eq(it_do(&call, &r), 0);
    char *id2 = it_header(r.headers, "X-Request-Id");
    ck_assert_ptr_nonnull(id2);
    ck_assert_str_ne(id1, id2);
    it_resp_free(&r);

    /* A safe client id is echoed; an unsafe one is replaced. Errors carry one too. */
    const char *const mine[] = {"X-Request-Id: trace-42.abc", NULL};
    it_call_t echo = {.method = "GET", .path = "/nope", .headers = mine};
    ck_assert_int_eq(it_do(&echo, &r), 0);
    ck_assert_int_eq(r.status, 404);
    char *id3 = it_header(r.headers, "X-Request-Id");
    ck_assert_str_eq(id3, "trace-42.abc");
    it_resp_free(&r);
    const char *const bad[] = {"X-Request-Id: has space", NULL};
    it_call_t unsafe = {.method = "GET", .path = "/healthz", .headers = bad};
    ck_assert_int_eq(it_do(&unsafe, &r), 0);
    char *id4 = it_header(r.headers, "X-Request-Id");
    ck_assert_ptr_nonnull(id4);
    ck_assert_str_ne(id4, "has space");
    it_resp_free(&r);
    free(id1);
    free(id2);
    free(id3);
    free(id4);
}
END_TEST

START_TEST(unknown_path_404)
{
    const char *paths[] = {"/nope", "/v1/nothing/here", "/healthz/extra", "/v1/models/abc"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; ++i) {
        long status = 0;
        char *body = NULL, *headers = NULL;
        ck_assert_int_eq(it_request("GET", paths[i], NULL, NULL, &status, &body, &headers), 0);
        ck_assert_msg(status == 404, "%s: status %ld", paths[i], status);
        assert_error(body, "not_found");
        char *ct = it_header(headers, "Content-Type");
        ck_assert_ptr_nonnull(ct);
        ck_assert(strncmp(ct, "application/json", 16) == 0);
        free(ct);
        free(body);
        free(headers);
    }
}
END_TEST

START_TEST(wrong_method_405)
{
    long status = 0;
    char *body = NULL, *headers = NULL;
    ck_assert_int_eq(it_request("DELETE", "/healthz", NULL, NULL, &status, &body, &headers), 0);
    ck_assert_int_eq(status, 405);
    assert_error(body, "method_not_allowed");
    char *allow = it_header(headers, "Allow");
    ck_assert_ptr_nonnull(allow);
    ck_assert_ptr_nonnull(strstr(allow, "GET"));
    free(allow);
    free(body);
    free(headers);
}
END_TEST

START_TEST(body_too_large_413)
{
    char *big = malloc(5001);
    memset(big, 'x', 5000);
    big[5000] = '\0';
    /* Content-Length over the limit: answered at once. */
    it_call_t call = {.method = "POST", .path = "/healthz", .content_type = "application/json",
                      .body = big};
    it_resp_t r;
    ck_assert_int_eq(it_do(&call, &r), 0);
    ck_assert_int_eq(r.status, 413);
    assert_error(r.body, "payload_too_large");
    it_resp_free(&r);
    /* Chunked: the body grows past the limit. */
    call.chunked = 1;
    ck_assert_int_eq(it_do(&call, &r), 0);
    ck_assert_int_eq(r.status, 413);
    assert_error(r.body, "payload_too_large");
    it_resp_free(&r);
    /* Under the limit it is routed normally (405 here, not 413). */
    big[500] = '\0';
    call.chunked = 0;
    ck_assert_int_eq(it_do(&call, &r), 0);
    ck_assert_int_eq(r.status, 405);
    it_resp_free(&r);
    free(big);
}
END_TEST

START_TEST(metrics_text)
{
    long status = 0;
    char *body = NULL, *headers = NULL;
    it_request("GET", "/healthz", NULL, NULL, &status, NULL, NULL);
    it_request("GET", "/nope", NULL, NULL, &status, NULL, NULL);
    ck_assert_int_eq(it_request("GET", "/metrics", NULL, NULL, &status, &body, &headers), 0);
    ck_assert_int_eq(status, 200);
    char *ct = it_header(headers, "Content-Type");
    ck_assert_ptr_nonnull(strstr(ct, "text/plain"));
    ck_assert_ptr_nonnull(strstr(ct, "version=0.0.4"));
    const char *want[] = {
        "# HELP neurond_http_requests_total ",
        "# TYPE neurond_http_requests_total counter",
        "neurond_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1",
        "neurond_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "# TYPE neurond_http_request_duration_seconds histogram",
        "neurond_http_request_duration_seconds_bucket{route=\"/healthz\",method=\"GET\",le=\"+Inf\"} 1",
        "neurond_http_request_duration_seconds_count{route=\"/healthz\",method=\"GET\"} 1",
        "# TYPE neurond_training_steps_total counter",
        "# HELP neurond_active_jobs ",
        "# TYPE neurond_active_jobs gauge",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; ++i)
        ck_assert_msg(strstr(body, want[i]) != NULL, "metrics lack '%s':\n%s", want[i], body);
    free(ct);
    free(body);
    free(headers);
}
END_TEST

START_TEST(openapi_and_index)
{
    long status = 0;
    cJSON *j = it_json("GET", "/openapi.json", NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_ptr_nonnull(j);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "openapi");
    ck_assert(cJSON_IsString(v) && strncmp(v->valuestring, "3.0", 3) == 0);
    ck_assert(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "paths")));
    ck_assert(cJSON_IsObject(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "paths"), "/healthz")));
    cJSON_Delete(j);

    char *body = NULL, *headers = NULL;
    ck_assert_int_eq(it_request("GET", "/", NULL, NULL, &status, &body, &headers), 0);
    ck_assert_int_eq(status, 200);
    char *ct = it_header(headers, "Content-Type");
    ck_assert_ptr_nonnull(strstr(ct, "text/html"));
    ck_assert_ptr_nonnull(strstr(body, "<html"));
    free(ct);
    free(body);
    free(headers);
}
END_TEST

START_TEST(keep_alive)
{
    it_resp_t r;
    it_call_t call = {.method = "GET", .path = "/healthz"};
    ck_assert_int_eq(it_do(&call, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(r.connects, 1);
    it_resp_free(&r);
    ck_assert_int_eq(it_do(&call, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(r.connects == 0, "second request opened %ld new connection(s)", r.connects);
    it_resp_free(&r);
    /* Error answers keep the connection too. */
    call.path = "/nope";
    ck_assert_int_eq(it_do(&call, &r), 0);
    ck_assert_int_eq(r.status, 404);
    ck_assert_int_eq(r.connects, 0);
    it_resp_free(&r);
}
END_TEST

START_TEST(head_request)
{
    it_resp_t r;
    it_call_t call = {.method = "HEAD", .path = "/healthz"};
    ck_assert_int_eq(it_do(&call, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq((int)r.len, 0);
    it_resp_free(&r);
}
END_TEST

START_TEST(sigterm_exits_zero_and_restart)
{
    long status = 0;
    ck_assert_int_eq(it_request("GET", "/healthz", NULL, NULL, &status, NULL, NULL), 0);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq(it_stop(&d), 0);
    ck_assert_int_eq(it_start_again(&d), 0);   /* same database, migrations already applied */
    cJSON *j = it_json("GET", "/healthz", NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "db")->valuestring, "ok");
    cJSON_Delete(j);
    /* A crash (SIGKILL) leaves a database the next start opens too. */
    it_kill9(&d);
    ck_assert_int_eq(it_start_again(&d), 0);
    ck_assert_int_eq(it_request("GET", "/healthz", NULL, NULL, &status, NULL, NULL), 0);
    ck_assert_int_eq(status, 200);
}
END_TEST

/* Restart the fixture's daemon with its stderr captured (--threads 2, as in setup). */
static void restart_capturing(void)
{
    it_cleanup(&d);
    static const char *const extra[] = {"--threads", "2", NULL};
    it_opts_t o = {.extra = extra, .capture_stderr = 1};
    ck_assert_msg(it_start_opts(&d, it_exe, &o) == 0, "daemon did not start");
}

/* Lines of `log` that contain `needle`. */
static int count_lines(const char *log, const char *needle)
{
    int n = 0;
    for (const char *p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Access records are buffered, yet every answered request is in the log once the daemon has
 * stopped on SIGTERM, each exactly once, in the documented format. */
START_TEST(access_log_complete_after_sigterm)
{
    restart_capturing();
    enum { N = 700 };                          /* more than one buffer's worth of records */
    size_t body_len = 0;
    for (int i = 0; i < N; ++i) {
        char hdr[64];
        snprintf(hdr, sizeof hdr, "X-Request-Id: log-%d", i);
        const char *const headers[] = {hdr, NULL};
        it_call_t call = {.method = "GET", .path = "/healthz", .headers = headers};
        it_resp_t r;
        ck_assert_int_eq(it_do(&call, &r), 0);
        ck_assert_int_eq(r.status, 200);
        body_len = r.len;
        it_resp_free(&r);
    }
    ck_assert_int_eq(it_stop(&d), 0);
    char *log = it_read_log(&d);
    ck_assert_int_eq(count_lines(log, " info http method=GET path=/healthz status=200 "), N);
    for (int i = 0; i < N; ++i) {
        char id[32];
        snprintf(id, sizeof id, " id=log-%d\n", i);
        ck_assert_msg(count_lines(log, id) == 1, "record of request %d: %d times", i,
                      count_lines(log, id));
    }
    /* "<time> info http method=GET path=/healthz status=200 bytes=B ms=M.MMM id=log-0" */
    const char *rec = strstr(log, " id=log-0\n");
    while (rec > log && rec[-1] != '\n')
        --rec;
    int y, mo, da, h, mi, se, ms, bytes, msi, msf, used = 0;
    ck_assert_msg(sscanf(rec, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ info http method=GET path=/healthz "
                         "status=200 bytes=%d ms=%d.%3d id=log-0%n", &y, &mo, &da, &h, &mi, &se,
                         &ms, &bytes, &msi, &msf, &used) == 10 && used > 0,
                  "record format: %.200s", rec);
    ck_assert_int_eq(rec[10], 'T');
    ck_assert_int_eq(rec[23], 'Z');
    ck_assert_int_eq(rec[used], '\n');
    ck_assert_int_eq(bytes, (int)body_len);
    const char *dot = strchr(strstr(rec, " ms="), '.');
    ck_assert_msg(dot[1] >= '0' && dot[1] <= '9' && dot[3] >= '0' && dot[3] <= '9' &&
                  dot[4] == ' ', "ms has three decimals: %.120s", rec);
    ck_assert_msg(strstr(log, "info signal 15: shutting down") != NULL, "%.300s", log);
    ck_assert_msg(strstr(log, "info stopped\n") != NULL, "no final record");
    free(log);
}
END_TEST

/* A running daemon writes its buffered records out by itself within a short time. */
START_TEST(access_log_written_while_running)
{
    restart_capturing();
    const char *const headers[] = {"X-Request-Id: soon-1", NULL};
    it_call_t call = {.method = "GET", .path = "/nope", .headers = headers};
    it_resp_t r;
    ck_assert_int_eq(it_do(&call, &r), 0);
    ck_assert_int_eq(r.status, 404);
    it_resp_free(&r);
    int found = 0;
    for (int waited = 0; waited < 3000 && !found; waited += 20) {
        char *log = it_read_log(&d);
        found = strstr(log, " info http method=GET path=/nope status=404 ") != NULL &&
                strstr(log, " id=soon-1\n") != NULL;
        free(log);
        if (!found)
            usleep(20 * 1000);
    }
    ck_assert_msg(found, "the record of a request was not written within 3 s");
    ck_assert_int_eq(kill(d.pid, 0), 0);      /* still running: no shutdown flushed it */
}
END_TEST

/* /healthz answers from a cached probe: repeated calls are 200 with the same body and each
 * carries its own request id. */
START_TEST(healthz_cached_answer)
{
    char *first = NULL, *prev_id = NULL;
    for (int i = 0; i < 50; ++i) {
        it_call_t call = {.method = "GET", .path = "/healthz"};
        it_resp_t r;
        ck_assert_int_eq(it_do(&call, &r), 0);
        ck_assert_int_eq(r.status, 200);
        char *ct = it_header(r.headers, "Content-Type");
        ck_assert_str_eq(ct, "application/json; charset=utf-8");
        free(ct);
        if (first == NULL)
            first = strdup(r.body);
        ck_assert_str_eq(r.body, first);
        char *id = it_header(r.headers, "X-Request-Id");
        ck_assert_ptr_nonnull(id);
        if (prev_id != NULL)
            ck_assert_str_ne(id, prev_id);
        free(prev_id);
        prev_id = id;
        it_resp_free(&r);
    }
    ck_assert_ptr_nonnull(strstr(first, "\"status\":\"ok\""));
    free(first);
    free(prev_id);
}
END_TEST

START_TEST(bad_flags_exit_2)
{
    const char *cases[][3] = {{"--port", "99999", NULL},
                              {"--log-level", "loud", NULL},
                              {"--threads", "0", NULL},
                              {"--bind", "not-an-ip", NULL},
                              {"--no-such-flag", "1", NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        char cmd[PATH_MAX + 200];
        snprintf(cmd, sizeof cmd, "'%s' %s %s --db /nonexistent/x.db >/dev/null 2>&1", it_exe,
                 cases[i][0], cases[i][1]);
        int rc = system(cmd);
        ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "%s %s: exit %d", cases[i][0],
                      cases[i][1], WEXITSTATUS(rc));
    }
    char cmd[PATH_MAX + 200];
    snprintf(cmd, sizeof cmd, "'%s' --port 0 --db /nonexistent/dir/x.db >/dev/null 2>&1", it_exe);
    int rc = system(cmd);
    ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "unopenable db: exit %d",
                  WEXITSTATUS(rc));
    snprintf(cmd, sizeof cmd, "'%s' --help | grep -q NEUROND_MAX_BODY", it_exe);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* The kernel the daemon reports in /metrics' neurond_blas_kernel_info, into out. */
static void metrics_kernel(char *out, size_t size)
{
    long status = 0;
    char *body = NULL;
    ck_assert_int_eq(it_request("GET", "/metrics", NULL, NULL, &status, &body, NULL), 0);
    ck_assert_int_eq(status, 200);
    const char *key = "\nneurond_blas_kernel_info{kernel=\"";
    const char *at = strstr(body, key);
    ck_assert_msg(at != NULL, "no neurond_blas_kernel_info in:\n%s", body);
    at += strlen(key);
    const char *end = strstr(at, "\"} 1\n");
    ck_assert_msg(end != NULL && (size_t)(end - at) < size, "bad kernel series in:\n%s", body);
    memcpy(out, at, (size_t)(end - at));
    out[end - at] = '\0';
    ck_assert_ptr_nonnull(strstr(body, "# TYPE neurond_blas_kernel_info gauge\n"));
    free(body);
}

/* Started with OPENBLAS_CORETYPE unset, the daemon runs a fitting kernel where OpenBLAS fell
 * back to its pre-AVX one (it started itself over with the variable set: same pid, so the
 * harness still stops it), and says which in /metrics and in its start line. */
START_TEST(blas_kernel_fitted_and_reported)
{
    it_cleanup(&d);
    static const char *const extra[] = {"--log-level", "info", NULL};
    it_opts_t o = {.extra = extra, .capture_stderr = 1};
    ck_assert_msg(it_start_opts(&d, it_exe, &o) == 0, "daemon did not start");
    /* This test process runs what OpenBLAS picks for this CPU on its own, or what the
     * environment both share pins. */
    const char *own = blas_kernel_name(), *want = own;
    if (getenv(BLAS_CORETYPE_ENV) == NULL && blas_kernel_is_fallback(own) &&
        blas_kernel_for_cpu() != NULL)
        want = blas_kernel_for_cpu();
    char got[64];
    metrics_kernel(got, sizeof got);
    ck_assert_str_eq(got, want);
    ck_assert_int_eq(it_stop(&d), 0);
    char *log = it_read_log(&d);
    char line[128];
    snprintf(line, sizeof line, ", blas kernel %s)", want);
    ck_assert_msg(strstr(log, line) != NULL, "no '%s' in the log:\n%s", line, log);
    free(log);
}
END_TEST

/* A kernel pinned through OPENBLAS_CORETYPE, even the fallback, is the one the daemon runs: no
 * second start, no loop. */
START_TEST(blas_kernel_pinned)
{
    it_cleanup(&d);
    static const char *const env[] = {BLAS_CORETYPE_ENV "=Prescott", NULL};
    it_opts_t o = {.env = env};
    ck_assert_msg(it_start_opts(&d, it_exe, &o) == 0, "daemon did not start");
    char got[64];
    metrics_kernel(got, sizeof got);
    ck_assert_str_eq(got, strcmp(blas_kernel_name(), "reference") == 0 ? "reference" : "Prescott");
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("meta");
    TCase *tc = tcase_create("meta");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, healthz_ok);
    tcase_add_test(tc, request_id);
    tcase_add_test(tc, unknown_path_404);
    tcase_add_test(tc, wrong_method_405);
    tcase_add_test(tc, body_too_large_413);
    tcase_add_test(tc, metrics_text);
    tcase_add_test(tc, openapi_and_index);
    tcase_add_test(tc, keep_alive);
    tcase_add_test(tc, head_request);
    tcase_add_test(tc, sigterm_exits_zero_and_restart);
    tcase_add_test(tc, access_log_complete_after_sigterm);
    tcase_add_test(tc, access_log_written_while_running);
    tcase_add_test(tc, healthz_cached_answer);
    tcase_add_test(tc, bad_flags_exit_2);
    tcase_add_test(tc, blas_kernel_fitted_and_reported);
    tcase_add_test(tc, blas_kernel_pinned);
    suite_add_tcase(s, tc);
    return it_run(s);
}
