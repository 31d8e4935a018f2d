/* tests/unit/test_router.c -- server/router.c without sockets: path matching with {id}
 * parameters, literal segments over parameters, HEAD through GET, 405 with its Allow list, 404,
 * malformed tables; then the daemon's own tables (server/routes.h). */
#include <stdint.h>
#include <string.h>

#include "router.h"
#include "routes.h"
#include "testutil.h"

static int handler_a(http_req_t *req, err_t *err)
{
    (void)req;
    (void)err;
    return 0;
}

static int handler_b(http_req_t *req, err_t *err)
{
    (void)req;
    (void)err;
    return 0;
}

static const http_route_t table_models[] = {
    {"GET", "/v1/models", handler_a, "limit,after", 0},
    {"POST", "/v1/models", handler_a, NULL, 0},
    {"GET", "/v1/models/{id}", handler_a, NULL, 0},
    {"DELETE", "/v1/models/{id}", handler_b, NULL, 0},
    {"POST", "/v1/models/{id}", handler_b, NULL, 0},
    {"POST", "/v1/models/import", handler_b, NULL, 0},
    {"GET", "/v1/models/{id}/batches/{bid}", handler_a, NULL, 0},
    HTTP_ROUTE_END,
};

static const http_route_t table_meta[] = {
    {"GET", "/", handler_a, NULL, 0},
    {"GET", "/healthz", handler_b, NULL, 0},
    {"GET", "/v1/backup", handler_a, NULL, HTTP_ROUTE_NO_HEAD},
    HTTP_ROUTE_END,
};

static const http_route_t *const tables[] = {table_models, table_meta, NULL};

static router_t *router(void)
{
    router_t *rt = NULL;
    err_t err = {0};
    ck_assert_msg(router_new(tables, &rt, &err) == 0, "%s", err.msg);
    return rt;
}

/* Match and check the result and, when found, the route's method and pattern. */
static void expect(const router_t *rt, const char *method, int head, const char *path, int want,
                   const char *pattern, router_match_t *m)
{
    int got = router_match(rt, method, head, path, m);
    ck_assert_msg(got == want, "%s%s %s: %d, expected %d", head ? "HEAD as " : "", method, path,
                  got, want);
    if (pattern == NULL)
        ck_assert_ptr_null(m->route);
    else
        ck_assert_str_eq(m->route->pattern, pattern);
    if (want == ROUTER_FOUND)
        ck_assert_str_eq(m->route->method, method);
}

START_TEST(paths_and_parameters)
{
    router_t *rt = router();
    router_match_t m;
    expect(rt, "GET", 0, "/", ROUTER_FOUND, "/", &m);
    ck_assert_int_eq(m.n_param, 0);
    expect(rt, "GET", 0, "/healthz", ROUTER_FOUND, "/healthz", &m);
    ck_assert_ptr_eq(m.route->handler, handler_b);
    expect(rt, "GET", 0, "/v1/models", ROUTER_FOUND, "/v1/models", &m);
    ck_assert_str_eq(m.route->query, "limit,after");
    expect(rt, "POST", 0, "/v1/models", ROUTER_FOUND, "/v1/models", &m);
    expect(rt, "GET", 0, "/v1/models/42", ROUTER_FOUND, "/v1/models/{id}", &m);
    ck_assert_int_eq(m.n_param, 1);
    ck_assert_int_eq(m.params[0], 42);
    expect(rt, "DELETE", 0, "/v1/models/7", ROUTER_FOUND, "/v1/models/{id}", &m);
    ck_assert_ptr_eq(m.route->handler, handler_b);
    expect(rt, "GET", 0, "/v1/models/42/batches/9", ROUTER_FOUND, "/v1/models/{id}/batches/{bid}",
           &m);
    ck_assert_int_eq(m.n_param, 2);
    ck_assert_int_eq(m.params[0], 42);
    ck_assert_int_eq(m.params[1], 9);
    expect(rt, "GET", 0, "/v1/models/9223372036854775807", ROUTER_FOUND, "/v1/models/{id}", &m);
    ck_assert_int_eq(m.params[0], INT64_MAX);
    router_free(rt);
}
END_TEST

/* A {…} segment is a positive decimal int64: anything else is an unknown path. */
START_TEST(bad_ids_are_not_found)
{
    router_t *rt = router();
    router_match_t m;
    static const char *const paths[] = {
        "/v1/models/0", "/v1/models/-1", "/v1/models/abc", "/v1/models/1x", "/v1/models/+1",
        "/v1/models/9223372036854775808", "/v1/models/99999999999999999999", "/v1/models/ 1",
        "/v1/models/1.0", "/v1/models/42/batches/0",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; ++i)
        expect(rt, "GET", 0, paths[i], ROUTER_NOT_FOUND, NULL, &m);
    router_free(rt);
}
END_TEST

START_TEST(literal_segments_win)
{
    router_t *rt = router();
    router_match_t m;
    /* "import" is no id, so POST /v1/models/{id} does not take it: the literal route does. */
    expect(rt, "POST", 0, "/v1/models/import", ROUTER_FOUND, "/v1/models/import", &m);
    ck_assert_ptr_eq(m.route->handler, handler_b);
    ck_assert_int_eq(m.n_param, 0);
    expect(rt, "POST", 0, "/v1/models/3", ROUTER_FOUND, "/v1/models/{id}", &m);
    router_free(rt);
}
END_TEST

/* A route with a numeric literal and one with a parameter both match "/v1/x/1": the literal one
 * wins, whichever table or order lists it. */
START_TEST(literal_number_beats_parameter)
{
    static const http_route_t param_first[] = {
        {"GET", "/v1/x/{id}", handler_a, NULL, 0},
        {"GET", "/v1/x/1", handler_b, NULL, 0},
        HTTP_ROUTE_END,
    };
    static const http_route_t literal_first[] = {
        {"GET", "/v1/x/1", handler_b, NULL, 0},
        {"GET", "/v1/x/{id}", handler_a, NULL, 0},
        HTTP_ROUTE_END,
    };
    const http_route_t *const orders[2][2] = {{param_first, NULL}, {literal_first, NULL}};
    for (int o = 0; o < 2; ++o) {
        router_t *rt = NULL;
        err_t err = {0};
        ck_assert_int_eq(router_new(orders[o], &rt, &err), 0);
        router_match_t m;
        expect(rt, "GET", 0, "/v1/x/1", ROUTER_FOUND, "/v1/x/1", &m);
        ck_assert_ptr_eq(m.route->handler, handler_b);
        expect(rt, "GET", 0, "/v1/x/2", ROUTER_FOUND, "/v1/x/{id}", &m);
        ck_assert_int_eq(m.params[0], 2);
        router_free(rt);
    }
}
END_TEST

START_TEST(head_is_served_by_get)
{
    router_t *rt = router();
    router_match_t m;
    expect(rt, "GET", 1, "/v1/models/5", ROUTER_FOUND, "/v1/models/{id}", &m);
    ck_assert_int_eq(m.params[0], 5);
    /* ... except where the route says GET does work HEAD must not do. */
    expect(rt, "GET", 1, "/v1/backup", ROUTER_NOT_ALLOWED, "/v1/backup", &m);
    ck_assert_str_eq(m.allow, "GET");
    expect(rt, "GET", 0, "/v1/backup", ROUTER_FOUND, "/v1/backup", &m);
    router_free(rt);
}
END_TEST

/* A path that exists with other methods: 405, Allow lists each once, HEAD after GET. */
START_TEST(method_not_allowed)
{
    router_t *rt = router();
    router_match_t m;
    expect(rt, "PUT", 0, "/v1/models", ROUTER_NOT_ALLOWED, "/v1/models", &m);
    ck_assert_str_eq(m.allow, "GET, HEAD, POST");
    expect(rt, "PATCH", 0, "/v1/models/8", ROUTER_NOT_ALLOWED, "/v1/models/{id}", &m);
    ck_assert_str_eq(m.allow, "GET, HEAD, DELETE, POST");
    expect(rt, "DELETE", 0, "/healthz", ROUTER_NOT_ALLOWED, "/healthz", &m);
    ck_assert_str_eq(m.allow, "GET, HEAD");
    expect(rt, "POST", 0, "/v1/models/8/batches/2", ROUTER_NOT_ALLOWED,
           "/v1/models/{id}/batches/{bid}", &m);
    ck_assert_str_eq(m.allow, "GET, HEAD");
    /* A bad id makes the path unknown, whatever the method. */
    expect(rt, "PUT", 0, "/v1/models/0", ROUTER_NOT_FOUND, NULL, &m);
    router_free(rt);
}
END_TEST

START_TEST(unknown_paths)
{
    router_t *rt = router();
    router_match_t m;
    static const char *const paths[] = {
        "/nope", "", "healthz", "v1/models", "/v1/models/", "/v1/models//batches/1",
        "/v1//models", "/healthz/", "//", "/v1/models/1/batches", "/V1/MODELS",
        "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; ++i) {
        expect(rt, "GET", 0, paths[i], ROUTER_NOT_FOUND, NULL, &m);
        ck_assert_str_eq(m.allow, "");
    }
    router_free(rt);
}
END_TEST

START_TEST(malformed_tables)
{
    static const http_route_t relative[] = {{"GET", "v1/models", handler_a, NULL, 0},
                                            HTTP_ROUTE_END};
    static const http_route_t no_handler[] = {{"GET", "/v1/models", NULL, NULL, 0},
                                              HTTP_ROUTE_END};
    static const http_route_t five_params[] = {
        {"GET", "/a/{a}/{b}/{c}/{d}/{e}", handler_a, NULL, 0}, HTTP_ROUTE_END};
    static const http_route_t too_deep[] = {
        {"GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17", handler_a, NULL, 0},
        HTTP_ROUTE_END};
    const http_route_t *const bad[][2] = {
        {relative, NULL}, {no_handler, NULL}, {five_params, NULL}, {too_deep, NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        router_t *rt = NULL;
        err_t err = {0};
        ck_assert_int_eq(router_new(bad[i], &rt, &err), ERR_INTERNAL);
        ck_assert_ptr_null(rt);
        ck_assert_msg(strstr(err.msg, "route") != NULL, "message: %s", err.msg);
    }
    /* No tables at all: every path is unknown. */
    const http_route_t *const none[] = {NULL};
    router_t *rt = NULL;
    err_t err = {0};
    ck_assert_int_eq(router_new(none, &rt, &err), 0);
    router_match_t m;
    expect(rt, "GET", 0, "/", ROUTER_NOT_FOUND, NULL, &m);
    router_free(rt);
    router_free(NULL);
}
END_TEST

/* The tables neurond serves (server/routes.h) build, and a few of their routes match. */
START_TEST(daemon_tables)
{
#define ROUTE_ENTRY(name) name,
    static const http_route_t *const daemon[] = {ROUTE_TABLES(ROUTE_ENTRY) NULL};
#undef ROUTE_ENTRY
    router_t *rt = NULL;
    err_t err = {0};
    ck_assert_msg(router_new(daemon, &rt, &err) == 0, "%s", err.msg);
    router_match_t m;
    expect(rt, "GET", 0, "/healthz", ROUTER_FOUND, "/healthz", &m);
    expect(rt, "GET", 1, "/healthz", ROUTER_FOUND, "/healthz", &m);
    expect(rt, "POST", 0, "/v1/models", ROUTER_FOUND, "/v1/models", &m);
    expect(rt, "GET", 0, "/v1/models/12", ROUTER_FOUND, "/v1/models/{id}", &m);
    ck_assert_int_eq(m.params[0], 12);
    expect(rt, "POST", 0, "/v1/models/12/train", ROUTER_FOUND, "/v1/models/{id}/train", &m);
    expect(rt, "POST", 0, "/v1/models/import", ROUTER_FOUND, "/v1/models/import", &m);
    expect(rt, "GET", 1, "/v1/backup", ROUTER_NOT_ALLOWED, "/v1/backup", &m);
    expect(rt, "DELETE", 0, "/healthz", ROUTER_NOT_ALLOWED, "/healthz", &m);
    expect(rt, "GET", 0, "/v1/models/0", ROUTER_NOT_FOUND, NULL, &m);
    expect(rt, "GET", 0, "/v2/models", ROUTER_NOT_FOUND, NULL, &m);
    router_free(rt);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, paths_and_parameters);
    tcase_add_test(tc, bad_ids_are_not_found);
    tcase_add_test(tc, literal_segments_win);
    tcase_add_test(tc, literal_number_beats_parameter);
    tcase_add_test(tc, head_is_served_by_get);
    tcase_add_test(tc, method_not_allowed);
    tcase_add_test(tc, unknown_paths);
    tcase_add_test(tc, malformed_tables);
    tcase_add_test(tc, daemon_tables);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
