/* server/http_internal.h -- what the HTTP layer's files (http.c, http_reply.c) share: the
 * request, stream and server structs, and the few functions one file calls in the other. Not
 * for use outside the HTTP layer; names with two underscores are internal to it.
 *
 *     http__reply_clear(req);                       // drop a reply set before an error
 *     return http__queue_reply(req);                // hand the answer to libmicrohttpd
 */
#ifndef ND_HTTP_INTERNAL_H
#define ND_HTTP_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "router.h"

typedef struct header {
    char *name, *value;
    struct header *next;
} header_t;

enum reply_kind { REPLY_NONE = 0, REPLY_BUF, REPLY_STATIC, REPLY_EMPTY, REPLY_STREAM };

struct http_stream {
    pthread_mutex_t mu;
    int refs;                            /* request + queued response + producer */
    http_server_t *srv;
    struct MHD_Connection *conn;
    http_stream_read_fn read;
    void *ctx;
    http_stream_free_fn free_fn;
    int has_producer;
    int suspended, woken, closed;
    int fd;                              /* the connection's socket, for http_stream_probe() */
    int peer_gone;                       /* the probe saw the client close: end the stream */
    uint64_t size;                       /* the body's length, or MHD_SIZE_UNKNOWN (chunked) */
    uint64_t bytes;
    struct http_stream *prev, *next;     /* srv->streams, while a response holds it */
    int listed;
};

struct http_server {
    struct MHD_Daemon *d;
    http_config_t cfg;
    router_t *router;
    uint16_t port;
    atomic_int stopping;
    atomic_int active;                   /* requests begun and not completed */
    uint64_t rid_seed;
    atomic_uint_fast64_t rid_counter;
    pthread_mutex_t streams_mu;
    http_stream_t *streams;
    int n_streams;
    /* Bearer tokens, copied at start into n_tok zero-padded slots of tok_stride bytes, so every
     * check reads the same bytes whatever the client sent (see tokens_match()). */
    unsigned char *tok;
    size_t *tok_len;
    size_t n_tok, tok_stride;
};

struct http_req {
    http_server_t *srv;
    struct MHD_Connection *conn;
    char method[8];                      /* HEAD is served as GET */
    char method_log[16];
    int head;                            /* a HEAD request (method says GET) */
    int begun;                           /* on_request() has seen it */
    char *raw_path;                      /* the request target as sent, without the query */
    const char *target, *target_end;     /* libmicrohttpd's copy of the target, while it lasts */
    char *path;                          /* raw_path percent-decoded */
    const char *path_error;              /* why the path is refused, or NULL */
    const http_route_t *route;
    const char *route_label;             /* for metrics: a pattern or NULL */
    int n_param;
    int64_t params[HTTP_MAX_PARAMS];
    char rid[HTTP_REQUEST_ID_MAX];
    int64_t t0_ns;

    char *body;
    size_t len, cap;
    size_t seen;                         /* body bytes received, whether kept or streamed */
    int too_big;

    const http_body_sink_t *sink;        /* streamed body: see http_body_sink_t */
    void *sink_state;
    int sink_checked, sink_begun, sink_done, sink_rc;
    err_t sink_err;

    int eof_seen;                        /* the client closed its side: see body_watch_eof() */
    int64_t declared;                    /* Content-Length, or -1 (chunked, or none) */
    uint64_t received;                   /* body bytes libmicrohttpd handed over */

    int queued;
    int status;
    enum reply_kind kind;
    char *buf;                           /* REPLY_BUF: owned */
    const void *sbuf;                    /* REPLY_STATIC: borrowed */
    size_t buf_len;
    char ctype[128];
    http_stream_t *stream;               /* REPLY_STREAM, and kept after queueing for bytes */
    header_t *headers;
    uint64_t bytes;

    pthread_mutex_t defer_mu;            /* deferred answers: see http_defer() */
    int deferred, defer_suspended, defer_done;
};

/* Copy src into dst (size bytes), truncated and NUL-terminated. */
void http__copy_str(char *dst, size_t size, const char *src);

/* Free a list of reply headers. */
void http__headers_free(header_t *h);

/* Drop whatever reply was set (not the headers). */
void http__reply_clear(http_req_t *req);

/* Drop one reference of a stream; the last frees it. */
void http__stream_unref(http_stream_t *s);

/* The connection side is finished with the stream: no more reads, no more resumes. */
void http__stream_close(http_stream_t *s);

/* An error reply with `status`, `code` and `msg` (and `field` when not NULL or empty). */
int http__reply_error_status(http_req_t *req, int status, int code, const char *msg,
                             const char *field);

/* Queue the request's reply on its connection. */
enum MHD_Result http__queue_reply(http_req_t *req);

#endif /* ND_HTTP_INTERNAL_H */
