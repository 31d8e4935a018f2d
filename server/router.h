/* server/router.h -- which route a request's method and path select, from the route tables of
 * server/routes.h: path segments matched literally or as {id} parameters, HEAD served by GET,
 * and for a path no route of that method serves, whether another method does (405, with the
 * Allow list) or none (404). Pure: no sockets, no libmicrohttpd; http.c answers.
 *
 *     router_t *rt = NULL;
 *     if (router_new(tables, &rt, &err) < 0) return err.code;   // a malformed pattern
 *     router_match_t m;
 *     switch (router_match(rt, "GET", 0, "/v1/models/7", &m)) {
 *     case ROUTER_FOUND:       m.route->handler(...), with m.params[0] == 7
 *     case ROUTER_NOT_ALLOWED: 405, Allow: m.allow
 *     case ROUTER_NOT_FOUND:   404
 *     }
 *     router_free(rt);
 */
#ifndef ND_ROUTER_H
#define ND_ROUTER_H

#include <stdint.h>

#include "err.h"

/* One request, defined by http.h; a handler takes it. The route tables are declared here, with
 * the matching, so that http.h includes this header and not the other way round. */
typedef struct http_req http_req_t;

#define HTTP_MAX_PARAMS 4                  /* {…} segments in one pattern */

/*
 * A handler answers through http_reply_*() and returns 0, or returns a negative err code with
 * `err` filled, and http.c answers http_reply_error(err) (discarding any reply set before).
 * Returning 0 without a reply is a bug, answered 500.
 */
typedef int (*http_handler_fn)(http_req_t *req, err_t *err);

/* http_route_t.flags */
#define HTTP_ROUTE_NO_HEAD 1u      /* GET does work HEAD must not do (a backup, a subscription):
                                      HEAD is 405 method_not_allowed, Allow: GET */

typedef struct http_route {
    const char *method;        /* "GET", "POST", "PUT", "DELETE"; NULL ends a table */
    const char *pattern;       /* "/v1/models/{id}/train"; also the metrics route label */
    http_handler_fn handler;
    const char *query;         /* query parameters accepted, comma-separated ("limit,after");
                                  NULL = none */
    unsigned flags;            /* HTTP_ROUTE_* */
} http_route_t;

#define HTTP_ROUTE_END {NULL, NULL, NULL, NULL, 0}

#define ROUTER_MAX_SEGMENTS 16           /* path segments of a pattern or of a matched path */

typedef struct router router_t;

enum router_result {
    ROUTER_FOUND = 0,
    ROUTER_NOT_ALLOWED = 1,              /* the path exists, not with this method: 405 */
    ROUTER_NOT_FOUND = 2,                /* no route has this path: 404 */
};

typedef struct router_match {
    /* FOUND: the route chosen (literal segments win over parameters); NOT_ALLOWED: the first
     * route with this path, whose pattern names it; NOT_FOUND: NULL. Borrowed from the tables. */
    const http_route_t *route;
    int n_param;                         /* FOUND: the route's {…} segments */
    int64_t params[HTTP_MAX_PARAMS];     /* FOUND: their values, in path order */
    char allow[128];                     /* NOT_ALLOWED: "GET, HEAD, POST", the Allow header */
} router_match_t;

/*
 * A router over `tables` (NULL-terminated list of tables, each ending in HTTP_ROUTE_END;
 * borrowed, must outlive it). ERR_INTERNAL for a pattern that is not an absolute path of at most
 * ROUTER_MAX_SEGMENTS segments, a route without a handler, or more than HTTP_MAX_PARAMS
 * parameters. *out is new; free with router_free().
 */
int router_new(const http_route_t *const *tables, router_t **out, err_t *err);

/* NULL is a no-op. */
void router_free(router_t *r);

/*
 * Match `method` and the decoded `path` (no query). head: the request is HEAD (method then says
 * "GET"), which routes flagged HTTP_ROUTE_NO_HEAD refuse. A {…} segment matches a positive
 * decimal int64 only. Fills *out; returns enum router_result.
 */
int router_match(const router_t *r, const char *method, int head, const char *path,
                 router_match_t *out);

#endif /* ND_ROUTER_H */
