/* tests/integration/it_bigread.c -- GET /v1/models/{id}/parameters and /export, and POST
 * /gradients, are written while they are sent: the bytes are exactly those the daemon printed when it built the whole
 * answer as one JSON tree (the expected texts below are such answers, captured from it), and a
 * large model's answer costs the daemon a small multiple of its parameters' own size (read from
 * /proc/<pid>/status: VmHWM after resetting it through /proc/<pid>/clear_refs). */
#define _GNU_SOURCE   /* strndup */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

static it_daemon_t d;

static void setup(void)
{
    ck_assert_msg(it_start(&d, it_exe, NULL) == 0, "daemon did not start");
}

static void teardown(void)
{
    it_cleanup(&d);
}

/* An Adam model after 7 training steps: optimizer state m, v and t, numbers of every length. */
#define ADAM_EXPORT \
    "{\"format\":\"neurond-model\",\"version\":1,\"name\":null,\"spec\":{\"kind\":\"mlp\",\"i" \
    "nputs\":2,\"outputs\":1,\"hidden\":[{\"units\":3,\"activation\":\"sigmoid\"}],\"output_a" \
    "ctivation\":\"linear\",\"loss\":\"l2\",\"reduction\":\"sum\",\"init\":{\"method\":\"unif" \
    "orm\",\"scale\":0.01,\"seed\":1},\"optimizer\":{\"method\":\"adam\",\"learning_rate\":0." \
    "01,\"momentum\":0,\"beta1\":0.9,\"beta2\":0.999,\"epsilon\":1e-08,\"weight_decay\":0}},\"" \
    "step\":7,\"loss\":270.0260295312241,\"parameters\":{\"W1\":[[0.07968978181372982,0.08969" \
    "069064070823,0.09969031529205562],[0.10021951463224782,0.08021999384136354,0.09021979371" \
    "058746],[0.090444085404482,0.10044484515176957,0.08044401284965239]],\"W2\":[[0.07996530" \
    "137260664,0.09018773855874429,0.10019098264458275,0.11019227361870805]]},\"optimizer_sta" \
    "te\":[-0.39300484145427894,-0.5283273205183027,-0.9348715947710364,-0.46704360906010867," \
    "-0.6279369960880723,-1.1110940180338857,-0.5405988375437988,-0.7264008081882452,-1.28648" \
    "30292628915,-29.7771600905066,-16.868428382251814,-16.74994970490143,-16.702409089325887" \
    ",0.003902217534779647,0.007051766215101691,0.02208033630573169,0.005423487790395894,0.00" \
    "9803535557399953,0.030694302066770096,0.007213905680216274,0.013024390278314845,0.040853" \
    "419468268974,22.794038011558886,7.200752445429975,7.098214598362619,7.0572793501722755,7" \
    "]}"

/* A graph model: a scalar, a vector and a matrix parameter, names that need escaping,
 * numbers near the ends of the double range. */
#define GRAPH_EXPORT \
    "{\"format\":\"neurond-model\",\"version\":1,\"name\":\"g\\\"qé\",\"spec\":{\"kind\":\"gr" \
    "aph\",\"inputs\":2,\"outputs\":1,\"reduction\":\"mean\",\"init\":{\"method\":\"uniform\"" \
    ",\"scale\":0.01,\"seed\":1},\"optimizer\":{\"method\":\"momentum\",\"learning_rate\":0.0" \
    "01,\"momentum\":0.9,\"beta1\":0.9,\"beta2\":0.999,\"epsilon\":1e-08,\"weight_decay\":0}," \
    "\"graph\":{\"nodes\":[{\"id\":\"x\",\"op\":\"input\",\"shape\":[null,2]},{\"id\":\"s\\\"" \
    "é\",\"op\":\"param\",\"shape\":[],\"value\":0.1},{\"id\":\"v\",\"op\":\"param\",\"shape\"" \
    ":[2],\"value\":[0.3,-0.2]},{\"id\":\"W\",\"op\":\"param\",\"shape\":[2,1],\"value\":[[1e" \
    "-300],[1.5e+300]]},{\"id\":\"z\",\"op\":\"matmul\",\"inputs\":[\"x\",\"W\"]},{\"id\":\"y" \
    "\",\"op\":\"input\",\"shape\":[null,1]},{\"id\":\"L\",\"op\":\"l2_loss\",\"inputs\":[\"z" \
    "\",\"y\"],\"reduction\":\"mean\"}],\"output\":\"L\"}},\"step\":0,\"loss\":null,\"paramet" \
    "ers\":{\"s\\\"é\":0.1,\"v\":[0.3,-0.2],\"W\":[[1e-300],[1.5e+300]]},\"optimizer_state\":" \
    "[0,0,0,0,0]}"

#define GRAPH_PARAMS \
    "{\"step\":0,\"parameters\":{\"s\\\"é\":0.1,\"v\":[0.3,-0.2],\"W\":[[1e-300],[1.5e+300]]}" \
    "}"

/* GET `path`: 200, application/json, and exactly `want`. */
static void expect_text(const char *path, const char *want)
{
    long status = 0;
    char *body = NULL, *headers = NULL;
    ck_assert_int_eq(it_request("GET", path, NULL, NULL, &status, &body, &headers), 0);
    ck_assert_int_eq(status, 200);
    char *type = it_header(headers, "Content-Type");
    ck_assert_ptr_nonnull(type);
    ck_assert_str_eq(type, "application/json; charset=utf-8");
    ck_assert_msg(strcmp(body, want) == 0, "GET %s:\n got  %s\n want %s", path, body, want);
    free(type);
    free(body);
    free(headers);
}

/* The JSON value after `"spec":` in text (a balanced {...}; spec texts hold no braces in
 * strings), new. */
static char *spec_of(const char *text)
{
    const char *p = strstr(text, "\"spec\":{");
    ck_assert_ptr_nonnull(p);
    p += strlen("\"spec\":");
    int depth = 0;
    const char *e = p;
    do {
        depth += *e == '{' ? 1 : *e == '}' ? -1 : 0;
        ++e;
    } while (depth > 0 && *e != '\0');
    return strndup(p, (size_t)(e - p));
}

/* GET /v1/models/{id}/export: exactly the export `want`, except that its spec is the resolved
 * spec the daemon stores for the model (newer versions fill in more defaults). */
static void expect_export(int id, const char *want)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%d", id);
    char *model = it_get_text(path);
    char *spec = spec_of(model), *old_spec = spec_of(want);
    const char *at = strstr(want, old_spec);
    size_t n = strlen(want) - strlen(old_spec) + strlen(spec) + 1;
    char *expect = malloc(n);
    ck_assert_ptr_nonnull(expect);
    snprintf(expect, n, "%.*s%s%s", (int)(at - want), want, spec, at + strlen(old_spec));
    snprintf(path, sizeof path, "/v1/models/%d/export", id);
    expect_text(path, expect);
    free(expect);
    free(old_spec);
    free(spec);
    free(model);
}

START_TEST(answers_are_byte_exact)
{
    /* An import takes an export verbatim, so exporting it again gives the same bytes. */
    it_call_free("POST", "/v1/models/import", ADAM_EXPORT, 201);
    expect_export(1, ADAM_EXPORT);
    it_call_free("POST", "/v1/models/import", GRAPH_EXPORT, 201);
    expect_export(2, GRAPH_EXPORT);
    expect_text("/v1/models/2/parameters", GRAPH_PARAMS);

    /* PUT answers like GET; HEAD has the headers and no body. */
    long status = 0;
    char *body = NULL;
    ck_assert_int_eq(it_request("PUT", "/v1/models/2/parameters", "application/json",
                                "{\"parameters\":{\"s\\\"\u00e9\":-0.5,\"v\":[1e-320,2],"
                                "\"W\":[[0.1],[0.30000000000000004]]}}",
                                &status, &body, NULL), 0);
    ck_assert_int_eq(status, 200);
    /* 1e-320 is subnormal: 15 digits already read back as the same double. */
    ck_assert_str_eq(body, "{\"step\":0,\"parameters\":{\"s\\\"\u00e9\":-0.5,"
                           "\"v\":[9.99988867182683e-321,2],"
                           "\"W\":[[0.1],[0.30000000000000004]]}}");
    free(body);
    body = NULL;

    /* The length is known before the body is written: Content-Length, not chunks, also for
     * HEAD (whose answer has no body and leaves the connection usable). */
    char *headers = NULL;
    ck_assert_int_eq(it_request("HEAD", "/v1/models/1/export", NULL, NULL, &status, &body,
                                &headers), 0);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(body, "");
    char *length = it_header(headers, "Content-Length");
    ck_assert_ptr_nonnull(length);
    char *whole = it_get_text("/v1/models/1/export");
    ck_assert_int_eq(atol(length), (long)strlen(whole));
    free(whole);
    ck_assert_ptr_null(it_header(headers, "Transfer-Encoding"));
    free(length);
    free(headers);
    free(body);

    /* Errors are still plain JSON answers. */
    cJSON *e = it_call("GET", "/v1/models/3/parameters", NULL, 404);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "error"), "code")->valuestring,
                     "not_found");
    cJSON_Delete(e);
}
END_TEST

/* A field of /proc/<pid>/status in kB. */
static long proc_status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    long kb = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            kb = strtol(line + n + 1, NULL, 10);
    fclose(f);
    ck_assert_msg(kb >= 0, "no %s in %s", field, path);
    return kb;
}

/* Reset the daemon's peak RSS (VmHWM) to its current RSS (Linux >= 4.0). */
static void reset_peak(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)pid);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_int_eq(fputs("5", f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
}

/* Every number of `text` from `from` on, in order: how many, all finite. Brackets, commas
 * and the closing braces are skipped; anything else fails. */
static long count_numbers(const char *text, const char *from)
{
    const char *p = strstr(text, from);
    ck_assert_ptr_nonnull(p);
    p += strlen(from);
    long n = 0;
    while (*p != '\0') {
        if (*p == '[' || *p == ']' || *p == ',' || *p == '}') {
            ++p;
            continue;
        }
        if (*p == '"')                       /* the next member: the numbers are done */
            break;
        char *end = NULL;
        double v = strtod(p, &end);
        ck_assert_msg(end != p && isfinite(v), "not a number at byte %ld", (long)(p - text));
        p = end;
        ++n;
    }
    return n;
}

/* The big model: 2 000 000 parameters (999 inputs + 1 bias column, 2000 outputs). Under
 * AddressSanitizer, where printing a number costs ten times as much and every allocation
 * carries redzones and lingers in quarantine, a tenth of it and a looser memory bound. */
#if defined(__SANITIZE_ADDRESS__)
#define BIG_OUT 200
#define SLACK 3.0
#else
#define BIG_OUT 2000
#define SLACK 1.0
#endif
#define BIG_IN 999
#define BIG_PARAMS ((long)BIG_OUT * (BIG_IN + 1))

/* The daemon's peak memory while it answers `method path` (with the JSON `body`, or none), above
 * its resident size before, in bytes per parameter of the big model; `*out` gets the answer. */
static double peak_per_param_of(const char *method, const char *path, const char *body,
                                char **out)
{
    long rss = proc_status_kb(d.pid, "VmRSS");
    reset_peak(d.pid);
    long status = 0;
    ck_assert_int_eq(it_request(method, path, body != NULL ? "application/json" : NULL, body,
                                &status, out, NULL), 0);
    ck_assert_int_eq(status, 200);
    long peak = proc_status_kb(d.pid, "VmHWM");
    return (double)(peak - rss) * 1024.0 / (double)BIG_PARAMS;
}

static double peak_per_param(const char *path, char **out)
{
    return peak_per_param_of("GET", path, NULL, out);
}

START_TEST(large_model_in_bounded_memory)
{
    char spec[256];
    snprintf(spec, sizeof spec, "{\"kind\":\"linear\",\"inputs\":%d,\"outputs\":%d,"
             "\"init\":{\"method\":\"normal\",\"scale\":1,\"seed\":5},"
             "\"optimizer\":{\"method\":\"momentum\"}}", BIG_IN, BIG_OUT);
    ck_assert_int_eq(it_create_model(spec), 1);

    /* The parameters themselves are 8 bytes each; building the answer as a JSON tree took
     * about 130. Allow the stored copy, the read copy and the allocator's slack. */
    char *body = NULL;
    double per = peak_per_param("/v1/models/1/parameters", &body);
    fprintf(stderr, "GET parameters: peak %.1f bytes per parameter, %zu bytes of JSON\n", per,
            strlen(body));
    /* On PostgreSQL libpq holds the value twice more: in its connection's input buffer and in
     * the result the store copies it from. */
    double limit = (48.0 + (it_backend_pg() ? 16.0 : 0.0)) * SLACK;
    ck_assert_msg(per < limit, "GET parameters: %.1f bytes per parameter", per);
    ck_assert_int_eq(strncmp(body, "{\"step\":0,\"parameters\":{\"W1\":[[", 30), 0);
    ck_assert_int_eq(count_numbers(body, "\"W1\":"), BIG_PARAMS);
    ck_assert_str_eq(body + strlen(body) - 4, "]]}}");
    free(body);

    /* The export also carries the momentum state: as many numbers again. */
    per = peak_per_param("/v1/models/1/export", &body);
    fprintf(stderr, "GET export: peak %.1f bytes per parameter, %zu bytes of JSON\n", per,
            strlen(body));
    ck_assert_msg(per < 64.0 * SLACK, "GET export: %.1f bytes per parameter", per);
    ck_assert_int_eq(count_numbers(body, "\"parameters\":{\"W1\":"), BIG_PARAMS);
    ck_assert_int_eq(count_numbers(body, "\"optimizer_state\":"), BIG_PARAMS);
    ck_assert_str_eq(body + strlen(body) - 2, "]}");
    free(body);

    /* POST /gradients answers as many numbers again, computed on one inline row: it built a
     * JSON tree of them too (about 130 bytes per parameter) until it was streamed as well. */
    size_t cap = 16 * (BIG_IN + BIG_OUT) + 64, len = 0;
    char *row = malloc(cap);
    ck_assert_ptr_nonnull(row);
    len += (size_t)snprintf(row + len, cap - len, "{\"x\":[[");
    for (int i = 0; i < BIG_IN; ++i)
        len += (size_t)snprintf(row + len, cap - len, "%s%g", i > 0 ? "," : "", 0.001 * i);
    len += (size_t)snprintf(row + len, cap - len, "]],\"y\":[[");
    for (int i = 0; i < BIG_OUT; ++i)
        len += (size_t)snprintf(row + len, cap - len, "%s1", i > 0 ? "," : "");
    snprintf(row + len, cap - len, "]]}");
    per = peak_per_param_of("POST", "/v1/models/1/gradients", row, &body);
    free(row);
    fprintf(stderr, "POST gradients: peak %.1f bytes per parameter, %zu bytes of JSON\n", per,
            strlen(body));
    ck_assert_msg(per < 48.0 * SLACK, "POST gradients: %.1f bytes per parameter", per);
    ck_assert_int_eq(strncmp(body, "{\"loss\":", 8), 0);
    ck_assert_int_eq(count_numbers(body, "\"gradients\":{\"W1\":"), BIG_PARAMS);
    const char *norm = strstr(body, "]]},\"norm\":");
    ck_assert_ptr_nonnull(norm);
    ck_assert(strtod(norm + 11, NULL) > 0.0);
    ck_assert_str_eq(body + strlen(body) - 1, "}");
    free(body);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("bigread");
    TCase *tc = tcase_create("stream");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, answers_are_byte_exact);
    tcase_add_test(tc, large_model_in_bounded_memory);
    suite_add_tcase(s, tc);
    return it_run(s);
}
