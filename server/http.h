/* server/http.h -- the HTTP layer: request bodies with limits, routing, replies, streams.
 *
 * Route files never see libmicrohttpd. A route file exports one table, ending in HTTP_ROUTE_END,
 * and lists it once in server/routes.h; each handler reads an http_req_t and leaves one reply:
 *
 *     static int model_get(http_req_t *req, err_t *err)
 *     {
 *         app_t *app = http_ctx(req);
 *         store_model_t m;
 *         int rc = store_model_get(app->store, http_param(req, 0), &m, err);
 *         if (rc < 0)
 *             return rc;                         // http.c answers with http_reply_error(err)
 *         cJSON *body = ...;                     // encode m
 *         store_model_clear(&m);
 *         return http_reply_json(req, 200, body); // takes body, even on failure
 *     }
 *
 *     const http_route_t routes_models[] = {
 *         {"GET", "/v1/models/{id}", model_get},
 *         HTTP_ROUTE_END,
 *     };
 *
 * Path parameters ({id}, {bid}, ...) match positive decimal int64 values only; anything else
 * (0, "abc", overflow) makes the path unknown: 404 not_found. A path holding an encoded NUL
 * (%00) or an encoded '/' (%2F) is 400 invalid_argument. A known path with another method
 * is 405 method_not_allowed with an Allow header. HEAD is served by the GET handler (its body
 * dropped), except on routes flagged HTTP_ROUTE_NO_HEAD, where it is 405. Each route lists
 * the query parameters it reads; any other is 400 invalid_argument naming it, before the
 * handler runs, so a typo never passes silently:
 *
 *     {"GET", "/v1/models", models_list, "limit,after", 0},
 *
 * Every answer carries X-Request-Id (the client's, when it sent a safe one of at most 64
 * characters, else a fresh 16-hex-digit id) and is logged as one line at info level when done.
 * JSON answers are `application/json; charset=utf-8`. Handlers run on the server's worker threads
 * (--threads); they may block on SQLite but must not wait on other requests.
 */
#ifndef ND_HTTP_H
#define ND_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"
#include "router.h"          /* the route tables: http_route_t */

typedef struct cJSON cJSON;

typedef struct http_req http_req_t;        /* one request; lives until its answer is sent */
typedef struct http_server http_server_t;  /* the daemon */
typedef struct http_stream http_stream_t;  /* a streamed answer (SSE) */

#define HTTP_REQUEST_ID_MAX 65             /* 64 characters + NUL */
#define HTTP_TOKEN_MAX 1024                /* longest bearer token, bytes */

typedef struct http_config {
    const char *bind;          /* IPv4 or IPv6 literal, e.g. "127.0.0.1", "::" */
    uint16_t port;             /* 0 = any free port; see http_server_port() */
    unsigned threads;          /* worker threads (>= 1) */
    size_t max_body;           /* bytes; larger bodies are answered 413 */
    unsigned conn_limit;       /* concurrent connections */
    unsigned conn_timeout_s;   /* idle connection timeout */
    const http_route_t *const *tables;  /* NULL-terminated list of route tables; borrowed */
    const char *const *tokens; /* NULL-terminated bearer tokens (each at most
                                  HTTP_TOKEN_MAX bytes); NULL = no auth. With tokens, /v1/
                                  paths need "Authorization: Bearer <token>" (compared in
                                  constant time), else 401. Copied at start; never logged. */
    int protect_all;           /* with tokens: every path but /healthz needs one */
    void *ctx;                 /* handed to handlers by http_ctx(); borrowed */
    const struct http_body_sink *sinks;  /* routes that stream their body (see below), ended
                                            by an entry with method NULL; NULL = none; borrowed */
} http_config_t;

/* ---- server ------------------------------------------------------------------------------- */

/*
 * Start listening and serving on internal threads (epoll, else poll). `*out` is new; stop and
 * free it with http_server_stop(). Fails with ERR_UNAVAILABLE when the address cannot be bound.
 */
int http_server_start(const http_config_t *cfg, http_server_t **out, err_t *err);

/* The bound port (the real one when cfg->port was 0). */
uint16_t http_server_port(const http_server_t *s);

/*
 * Graceful stop: stop accepting connections, answer requests that arrive on open keep-alive
 * connections with 503, end open streams, wait for running handlers to return, then free.
 * NULL is a no-op.
 */
void http_server_stop(http_server_t *s);

/* ---- reading the request (all pointers borrowed, valid until the handler returns) ----------- */

const char *http_method(const http_req_t *req);         /* "GET" (also for HEAD) */
const char *http_path(const http_req_t *req);           /* decoded path, without the query */
const char *http_route(const http_req_t *req);          /* the matched pattern */
const char *http_request_id(const http_req_t *req);
void *http_ctx(const http_req_t *req);                  /* http_config_t.ctx */

/* Query argument `key` (decoded), or NULL when absent. "?a" gives "" for a. */
const char *http_query(const http_req_t *req, const char *key);

/* Request header `name` (case-insensitive), or NULL when absent. */
const char *http_header(const http_req_t *req, const char *name);

/* The body, NUL-terminated (the NUL is not counted in *len); "" and 0 when there is none. */
const char *http_body(const http_req_t *req, size_t *len);

/* Free the body once the handler has decoded it, so a large upload's text and what was decoded
 * from it are not both held to the end of the request; http_body() is "" after this. */
void http_body_release(http_req_t *req);

/* Path parameter i (0-based, in pattern order): always a positive id. */
int64_t http_param(const http_req_t *req, int i);

/*
 * Query argument `key` as an integer in [min, max]; `*out` = `dflt` when absent. A malformed or
 * out-of-range value is ERR_INVAL with field = key.
 */
int http_query_int64(const http_req_t *req, const char *key, int64_t dflt, int64_t min,
                     int64_t max, int64_t *out, err_t *err);

/* 0 when the request's Content-Type is application/json (parameters such as charset allowed),
 * else ERR_MEDIA with a message naming what was sent. Routes decide when to require it. */
int http_require_json(const http_req_t *req, err_t *err);

/* Does the Content-Type's media type equal `type` (case-insensitive, parameters ignored)? */
int http_content_type_is(const http_req_t *req, const char *type);

/* ---- streamed request bodies ---------------------------------------------------------------- */

/*
 * By default a body is accumulated whole (up to --max-body) before the handler runs. A route
 * that can consume its body as it arrives -- a large upload parsed straight into its final
 * form, never holding the text -- lists a sink for its method and pattern in
 * http_config_t.sinks. Its body is then handed to the sink chunk by chunk, and the route's
 * handler runs as usual once the body is complete, with http_body() empty and the sink's state
 * at http_body_state():
 *
 *     static int ingest_begin(http_req_t *req, void **state, err_t *err)
 *     {   *state = parser_new(...); return *state != NULL ? 0 : ERR_NOMEM; }
 *     static int ingest_chunk(void *state, const char *data, size_t n, err_t *err)
 *     {   return parser_feed(state, data, n, err); }
 *     static int batch_create(http_req_t *req, err_t *err)
 *     {   parser_t *p = http_body_state(req); ... parser_finish(p, ...); ... }
 *     const http_body_sink_t sinks[] = {
 *         {"POST", "/v1/models/{id}/batches", ingest_begin, ingest_chunk, parser_free},
 *         HTTP_SINK_END,
 *     };
 *
 * Everything else is unchanged: the --max-body limit (413, the sink's state dropped), auth,
 * 404/405 and shutdown answers come first, and a body larger than --max-body by its
 * Content-Length is refused before any of it is read.
 */
#define HTTP_SINK_DONE 1                   /* chunk: no more bytes wanted (the rest is read and
                                              dropped); the handler still runs */
#define HTTP_SINK_ACCUMULATE 2             /* begin: not for this request after all (e.g. its
                                              Content-Type): accumulate the body as usual */

typedef struct http_body_sink {
    const char *method;        /* as in http_route_t; NULL ends a table */
    const char *pattern;       /* must equal the route's pattern */
    /* Headers, path parameters and query are readable; no body yet. Called before the first
     * chunk, or just before the handler when the body is empty. `*state` (may stay NULL) is
     * freed with free_fn. Returns 0, HTTP_SINK_ACCUMULATE, or a negative err code, answered
     * instead of running the handler (the rest of the body is dropped). */
    int (*begin)(http_req_t *req, void **state, err_t *err);
    /* The next n > 0 bytes of the body, in order, on a server thread: 0 to go on,
     * HTTP_SINK_DONE, or a negative err code (answered as for begin). */
    int (*chunk)(void *state, const char *data, size_t n, err_t *err);
    void (*free_fn)(void *state);  /* may be NULL */
} http_body_sink_t;

#define HTTP_SINK_END {NULL, NULL, NULL, NULL, NULL}

/* The state a sink's begin set for this request (borrowed; freed with the request), or NULL
 * when the route has no sink. */
void *http_body_state(const http_req_t *req);

/* ---- answering (at most one reply counts: a later call replaces an earlier one) ------------- */

/* Answer `status` with `body` serialised as JSON. Takes `body` (freed here, also on failure);
 * a NULL body is ERR_NOMEM (so `http_reply_json(req, 200, build())` reports a failed build). */
int http_reply_json(http_req_t *req, int status, cJSON *body);

/* Answer `status` with JSON the caller printed itself: `text` (malloc'ed, text[0..len)) is
 * taken and freed here, also on failure. For hot routes whose answer is cheaper to write
 * directly than to build as a cJSON tree. */
int http_reply_json_text(http_req_t *req, int status, char *text, size_t len);

/* Answer `status` with a copy of buf[0..len) and the given Content-Type. */
int http_reply_text(http_req_t *req, int status, const char *content_type, const void *buf,
                    size_t len);

/* Like http_reply_text, without copying: `buf` must outlive the server (embedded files). */
int http_reply_static(http_req_t *req, int status, const char *content_type, const void *buf,
                      size_t len);

/* Answer `status` (e.g. 204) with no body. */
int http_reply_empty(http_req_t *req, int status);

/*
 * The one translation of an err_t into an answer: ERR_INVAL/SHAPE/RANGE -> 400
 * invalid_argument, JSON -> 400 invalid_json, NOTFOUND -> 404 not_found, CONFLICT -> 409
 * conflict, TOOBIG -> 413 payload_too_large, MEDIA -> 415 unsupported_media_type, BUSY -> 429
 * too_many_requests, UNAVAILABLE -> 503 unavailable, anything else -> 500 internal (logged with
 * the request id). Body: {"error":{"code","message","field"?}}, field only when err->field is
 * set. Returns 0, or ERR_NOMEM.
 */
int http_reply_error(http_req_t *req, const err_t *err);

/* HTTP status http_reply_error() uses for an err code. */
int http_status_for(int code);

/* The error body's "code" string http_reply_error() uses for an err code ("invalid_argument",
 * "conflict", ...). Static storage. */
const char *http_error_code(int code);

/* Add a header to the answer (e.g. "Location"). Name and value are copied; CR/LF is refused
 * (ERR_INVAL). Headers survive a later reply call on the same request. */
int http_set_header(http_req_t *req, const char *name, const char *value);

/* ---- answering later, from another thread ---------------------------------------------------- */

/*
 * A handler that would block for long (a synchronous training run) calls http_defer(req), hands
 * `req` to a worker thread and returns 0 without a reply. The connection is parked and holds no
 * server thread. The worker sets the answer with http_reply_*() (or http_reply_error()) and then
 * calls http_resume(req); after that it must not touch `req`. Every deferred request must be
 * resumed, also at shutdown (http_server_stop() waits up to 30 s for it). Returns 0.
 *
 *     static int train(http_req_t *req, err_t *err) {
 *         http_defer(req);
 *         return trainer_submit(app_of(req)->trainer, req, err);  // worker: reply + resume
 *     }
 *
 * If the handler returns an error after http_defer(), the error is answered at once and the
 * request is no longer deferred: the worker must then never receive it.
 */
int http_defer(http_req_t *req);

/* The deferred answer is set: send it. Any thread; exactly once per http_defer(). */
void http_resume(http_req_t *req);

/* ---- streamed answers (Server-Sent Events) -------------------------------------------------- */

#define HTTP_STREAM_END ((ssize_t)-1)      /* the stream is finished: close it cleanly */
#define HTTP_STREAM_ERROR ((ssize_t)-2)    /* abort the connection */

/*
 * Produce the next bytes of a stream into buf[0..max): return how many (> 0), 0 when nothing is
 * ready yet (the connection is parked without using a thread until http_stream_wake()),
 * HTTP_STREAM_END or HTTP_STREAM_ERROR. Called on a server thread; must not block.
 */
typedef ssize_t (*http_stream_read_fn)(void *ctx, char *buf, size_t max);
typedef void (*http_stream_free_fn)(void *ctx);

/*
 * Answer `status` with a body produced by `read` (Transfer-Encoding: chunked). `ctx` is freed
 * with `free_fn` (may be NULL) once both the connection and the producer are done with it.
 *
 * When `out` is not NULL the caller keeps a reference `*out` for a producer on another thread:
 * it calls http_stream_wake(*out) whenever new data is ready (and every few seconds for SSE
 * keep-alive comments), checks http_stream_closed() to notice a client that left, and must
 * finally call http_stream_release(*out). When `out` is NULL, `read` alone drives the stream
 * and must not return 0.
 */
int http_reply_stream(http_req_t *req, int status, const char *content_type,
                      http_stream_read_fn read, void *ctx, http_stream_free_fn free_fn,
                      http_stream_t **out);

/*
 * http_reply_stream() without a producer, for a body whose length is known before it is
 * written: `read` must produce exactly `size` bytes. The answer carries Content-Length instead
 * of being chunked, so a HEAD answer is framed right and has the length, and a client can tell
 * a body cut short (the daemon stopping) from a whole one.
 */
int http_reply_stream_sized(http_req_t *req, int status, const char *content_type,
                            uint64_t size, http_stream_read_fn read, void *ctx,
                            http_stream_free_fn free_fn);

/* New data is ready: resume a parked stream. Any thread; harmless after the stream closed. */
void http_stream_wake(http_stream_t *s);

/* Has the connection ended (client left, stream finished, server stopping)? Any thread. */
int http_stream_closed(http_stream_t *s);

/* A parked stream cannot see its client leave (libmicrohttpd does not watch a parked
 * connection): look at its socket now, and when the client has closed it, end the
 * connection, after which http_stream_closed() is true. Any thread; cheap (one non-blocking
 * peek); harmless on a stream that is not parked or already closed. */
void http_stream_probe(http_stream_t *s);

/* The producer's reference is dropped; never touch `s` afterwards. NULL is a no-op. */
void http_stream_release(http_stream_t *s);

#endif /* ND_HTTP_H */
