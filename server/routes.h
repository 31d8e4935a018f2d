/* server/routes.h -- every route table the daemon serves.
 *
 * Each server/routes_<resource>.c defines one `const http_route_t routes_<resource>[]` ending in
 * HTTP_ROUTE_END (see http.h). To add a route file, add ONE line to ROUTE_TABLES below; main.c
 * declares and registers everything listed here. Order does not matter: literal path segments
 * win over {id} segments, whatever the table order.
 */
#ifndef ND_ROUTES_H
#define ND_ROUTES_H

#include "http.h"

#define ROUTE_TABLES(X) \
    X(routes_meta)      \
    X(routes_models)    \
    X(routes_data)      \
    X(routes_graphs)    \
    X(routes_train)     \
    X(routes_jobs)      \
    X(routes_query)     \
    X(routes_admin)     \
    /* X(routes_models) X(routes_data) X(routes_train) ... one line per routes_*.c */

#define ROUTE_DECLARE(name) extern const http_route_t name[];
ROUTE_TABLES(ROUTE_DECLARE)
#undef ROUTE_DECLARE

/* Routes that take their body as it arrives (http_body_sink_t). */
extern const http_body_sink_t routes_data_sinks[];

#endif /* ND_ROUTES_H */
