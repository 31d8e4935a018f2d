/* server/router.c -- route tables to a matcher (router.h). */
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct segment {
    const char *s;
    size_t len;
    int param;                           /* "{...}": a positive int64 */
} segment_t;

typedef struct route_ent {
    const http_route_t *route;
    int n_seg;
    int n_param;
    segment_t seg[ROUTER_MAX_SEGMENTS];
} route_ent_t;

struct router {
    route_ent_t *routes;
    int n_routes;
};

/* Parse a path segment as a positive decimal int64; 0 on any failure. */
static int64_t parse_id(const char *s, size_t len)
{
    if (len == 0 || len > 19)
        return 0;
    int64_t v = 0;
    for (size_t i = 0; i < len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    return v;
}

/* Split "/a/b/c" into segments; -1 when there are too many or the path is not absolute. */
static int split_path(const char *path, segment_t *seg, int max)
{
    if (path[0] != '/')
        return -1;
    int n = 0;
    const char *p = path + 1;
    if (*p == '\0')
        return 0;                          /* "/" */
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        if (n == max)
            return -1;
        seg[n].s = p;
        seg[n].len = len;
        seg[n].param = len >= 2 && p[0] == '{' && p[len - 1] == '}';
        n++;
        if (e == NULL)
            return n;
        p = e + 1;
    }
}

int router_new(const http_route_t *const *tables, router_t **out, err_t *err)
{
    *out = NULL;
    router_t *rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return err_set(err, ERR_NOMEM, "out of memory building routes");
    int n = 0;
    for (const http_route_t *const *t = tables; t != NULL && *t != NULL; ++t)
        for (const http_route_t *r = *t; r->method != NULL; ++r)
            n++;
    rt->routes = calloc((size_t)(n > 0 ? n : 1), sizeof *rt->routes);
    if (rt->routes == NULL) {
        router_free(rt);
        return err_set(err, ERR_NOMEM, "out of memory building routes");
    }
    for (const http_route_t *const *t = tables; t != NULL && *t != NULL; ++t) {
        for (const http_route_t *r = *t; r->method != NULL; ++r) {
            route_ent_t *e = &rt->routes[rt->n_routes++];
            e->route = r;
            e->n_seg = split_path(r->pattern, e->seg, ROUTER_MAX_SEGMENTS);
            if (e->n_seg < 0 || r->handler == NULL) {
                router_free(rt);
                return err_set(err, ERR_INTERNAL, "bad route %s %s", r->method, r->pattern);
            }
            for (int k = 0; k < e->n_seg; ++k)
                e->n_param += e->seg[k].param;
            if (e->n_param > HTTP_MAX_PARAMS) {
                router_free(rt);
                return err_set(err, ERR_INTERNAL, "route %s has more than %d parameters",
                               r->pattern, HTTP_MAX_PARAMS);
            }
        }
    }
    *out = rt;
    return 0;
}

void router_free(router_t *r)
{
    if (r == NULL)
        return;
    free(r->routes);
    free(r);
}

int router_match(const router_t *rt, const char *method, int head, const char *path,
                 router_match_t *out)
{
    memset(out, 0, sizeof *out);
    segment_t seg[ROUTER_MAX_SEGMENTS];
    int64_t ids[ROUTER_MAX_SEGMENTS];        /* each segment as an id, once, not per route */
    int n = split_path(path, seg, ROUTER_MAX_SEGMENTS);
    for (int k = 0; k < n; ++k)
        ids[k] = parse_id(seg[k].s, seg[k].len);
    const route_ent_t *best = NULL, *any = NULL;
    char *allow = out->allow;
    const size_t allow_size = sizeof out->allow;
    for (int i = 0; n >= 0 && i < rt->n_routes; ++i) {
        const route_ent_t *r = &rt->routes[i];
        if (r->n_seg != n)
            continue;
        int ok = 1;
        for (int k = 0; k < n && ok; ++k) {
            if (r->seg[k].param)
                ok = ids[k] > 0;
            else
                ok = r->seg[k].len == seg[k].len && memcmp(r->seg[k].s, seg[k].s, seg[k].len) == 0;
        }
        if (!ok)
            continue;
        if (any == NULL)
            any = r;
        int head_ok = !(r->route->flags & HTTP_ROUTE_NO_HEAD);
        if (strcmp(r->route->method, method) == 0 && (!head || head_ok)) {
            if (best == NULL || r->n_param < best->n_param)  /* literal segments win */
                best = r;
        } else if (strstr(allow, r->route->method) == NULL) {
            size_t used = strlen(allow);
            snprintf(allow + used, allow_size - used, "%s%s", used ? ", " : "",
                     r->route->method);
            if (strcmp(r->route->method, "GET") == 0 && head_ok &&
                strstr(allow, "HEAD") == NULL) {
                used = strlen(allow);
                snprintf(allow + used, allow_size - used, ", HEAD");
            }
        }
    }
    if (best != NULL) {
        out->route = best->route;
        out->n_param = best->n_param;
        for (int k = 0, p = 0; k < n; ++k)
            if (best->seg[k].param)
                out->params[p++] = ids[k];
        out->allow[0] = '\0';
        return ROUTER_FOUND;
    }
    if (any != NULL) {
        out->route = any->route;
        return ROUTER_NOT_ALLOWED;
    }
    out->allow[0] = '\0';
    return ROUTER_NOT_FOUND;
}
