/* server/http_reply.c -- the HTTP layer's answers: replies (JSON, errors, bytes, headers),
 * streamed answers (SSE) and their parking, and queueing an answer on its connection. The
 * request side -- bodies, routing, dispatch -- and the daemon's lifecycle are http.c. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_internal.h"
#include "log.h"
#include "metrics.h"

#define HTTP_STREAM_BLOCK 4096
#define HTTP_JSON_TYPE "application/json; charset=utf-8"

/* ---- replies ------------------------------------------------------------------------------- */

int http_set_header(http_req_t *req, const char *name, const char *value)
{
    if (strpbrk(name, "\r\n:") != NULL || strpbrk(value, "\r\n") != NULL)
        return ERR_INVAL;
    header_t *h = calloc(1, sizeof *h);
    if (h == NULL || (h->name = strdup(name)) == NULL || (h->value = strdup(value)) == NULL) {
        http__headers_free(h);
        return ERR_NOMEM;
    }
    h->next = req->headers;
    req->headers = h;
    return 0;
}

/* Replace the reply set so far by one of `kind` with `status` and, when not NULL, `ctype`. */
static void reply_begin(http_req_t *req, enum reply_kind kind, int status, const char *ctype)
{
    http__reply_clear(req);
    req->kind = kind;
    req->status = status;
    if (ctype != NULL)
        http__copy_str(req->ctype, sizeof req->ctype, ctype);
}

static int reply_buf(http_req_t *req, int status, const char *ctype, char *buf, size_t len)
{
    reply_begin(req, REPLY_BUF, status, ctype);
    req->buf = buf;
    req->buf_len = len;
    return 0;
}

int http_reply_json(http_req_t *req, int status, cJSON *body)
{
    if (body == NULL)
        return ERR_NOMEM;
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (text == NULL)
        return ERR_NOMEM;
    return reply_buf(req, status, HTTP_JSON_TYPE, text, strlen(text));
}

int http_reply_json_text(http_req_t *req, int status, char *text, size_t len)
{
    if (text == NULL)
        return ERR_NOMEM;
    return reply_buf(req, status, HTTP_JSON_TYPE, text, len);
}

int http_reply_text(http_req_t *req, int status, const char *content_type, const void *buf,
                    size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return ERR_NOMEM;
    if (len > 0)
        memcpy(copy, buf, len);
    copy[len] = '\0';
    return reply_buf(req, status, content_type, copy, len);
}

int http_reply_static(http_req_t *req, int status, const char *content_type, const void *buf,
                      size_t len)
{
    reply_begin(req, REPLY_STATIC, status, content_type);
    req->sbuf = buf;
    req->buf_len = len;
    return 0;
}

int http_reply_empty(http_req_t *req, int status)
{
    reply_begin(req, REPLY_EMPTY, status, NULL);
    return 0;
}

int http_status_for(int code)
{
    switch (code) {
    case ERR_INVAL:
    case ERR_SHAPE:
    case ERR_RANGE:
    case ERR_JSON:
        return 400;
    case ERR_NOTFOUND:
        return 404;
    case ERR_CONFLICT:
        return 409;
    case ERR_TOOBIG:
        return 413;
    case ERR_MEDIA:
        return 415;
    case ERR_BUSY:
        return 429;
    case ERR_NOTSUPPORTED:
        return 501;
    case ERR_UNAVAILABLE:
        return 503;
    default:
        return 500;
    }
}

static const char *api_code_for(int status, int code)
{
    if (code == ERR_JSON)
        return "invalid_json";
    switch (status) {
    case 400: return "invalid_argument";
    case 401: return "unauthenticated";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 415: return "unsupported_media_type";
    case 429: return "too_many_requests";
    case 501: return "not_supported";
    case 503: return "unavailable";
    default: return "internal";
    }
}

const char *http_error_code(int code)
{
    return api_code_for(http_status_for(code), code);
}

/* Error body for any status; used by http_reply_error and for the statuses that have no err
 * code (401, 405). */
/* Copy `s` into dst[0..size) with every byte that is not part of well-formed UTF-8 replaced by
 * '?': messages quote what clients sent, possibly cut mid-character by a "%.60s". */
static const char *utf8_clean(const char *s, char *dst, size_t size)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;
    while (*p != '\0' && o + 5 < size) {
        size_t k = 1;
        uint32_t cp = 0, min = 0;
        if (*p >= 0xC2 && *p <= 0xDF)
            k = 2, cp = *p & 0x1Fu, min = 0x80;
        else if (*p >= 0xE0 && *p <= 0xEF)
            k = 3, cp = *p & 0x0Fu, min = 0x800;
        else if (*p >= 0xF0 && *p <= 0xF4)
            k = 4, cp = *p & 0x07u, min = 0x10000;
        else if (*p >= 0x80)
            k = 0;
        for (size_t i = 1; i < k; ++i) {
            if ((p[i] & 0xC0) != 0x80) {
                k = 0;
                break;
            }
            cp = (cp << 6) | (p[i] & 0x3Fu);
        }
        if (k > 1 && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)))
            k = 0;
        if (k == 0) {
            dst[o++] = '?';
            ++p;
        } else {
            memcpy(dst + o, p, k);
            o += k;
            p += k;
        }
    }
    dst[o] = '\0';
    return dst;
}

int http__reply_error_status(http_req_t *req, int status, int code, const char *msg,
                             const char *field)
{
    char msg_buf[2 * ERR_MSG_MAX], field_buf[2 * ERR_MSG_MAX];
    msg = utf8_clean(msg, msg_buf, sizeof msg_buf);
    if (field != NULL)
        field = utf8_clean(field, field_buf, sizeof field_buf);
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(root, "error");
    if (e == NULL || cJSON_AddStringToObject(e, "code", api_code_for(status, code)) == NULL ||
        cJSON_AddStringToObject(e, "message", msg) == NULL ||
        (field != NULL && field[0] != '\0' && cJSON_AddStringToObject(e, "field", field) == NULL)) {
        cJSON_Delete(root);
        return ERR_NOMEM;
    }
    return http_reply_json(req, status, root);
}

int http_reply_error(http_req_t *req, const err_t *err)
{
    int code = err != NULL && err->code != 0 ? err->code : ERR_INTERNAL;
    int status = http_status_for(code);
    const char *msg = err != NULL && err->msg[0] != '\0' ? err->msg : err_str(code);
    if (status == 500)
        log_msg(LOG_LEVEL_ERROR, "internal error id=%s %s %s: %s (%s)", req->rid, req->method,
                req->route_label != NULL ? req->route_label : "-", msg, err_name(code));
    int rc = http__reply_error_status(req, status, code, msg, err != NULL ? err->field : NULL);
    if (rc < 0) {
        static const char fallback[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        return http_reply_static(req, 500, HTTP_JSON_TYPE, fallback, sizeof fallback - 1);
    }
    return 0;
}

/* ---- streams ----------------------------------------------------------------------------------- */

void http__stream_unref(http_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    int left = --s->refs;
    pthread_mutex_unlock(&s->mu);
    if (left > 0)
        return;
    if (s->free_fn != NULL)
        s->free_fn(s->ctx);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* The connection side is finished with the stream: no more reads, no more resumes. */
void http__stream_close(http_stream_t *s)
{
    http_server_t *srv = s->srv;
    pthread_mutex_lock(&srv->streams_mu);
    if (s->listed) {
        if (s->prev != NULL)
            s->prev->next = s->next;
        else
            srv->streams = s->next;
        if (s->next != NULL)
            s->next->prev = s->prev;
        s->listed = 0;
        srv->n_streams--;
    }
    pthread_mutex_unlock(&srv->streams_mu);
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    pthread_mutex_unlock(&s->mu);
}

/* http_reply_stream() of a body of `size` bytes (MHD_SIZE_UNKNOWN: chunked). */
static int reply_stream(http_req_t *req, int status, const char *content_type, uint64_t size,
                        http_stream_read_fn read, void *ctx, http_stream_free_fn free_fn,
                        http_stream_t **out)
{
    if (out != NULL)
        *out = NULL;
    http_stream_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return ERR_NOMEM;
    pthread_mutex_init(&s->mu, NULL);
    s->size = size;
    s->srv = req->srv;
    s->conn = req->conn;
    s->read = read;
    s->ctx = ctx;
    s->free_fn = free_fn;
    s->refs = 1 + (out != NULL);
    s->has_producer = out != NULL;
    s->fd = -1;
    reply_begin(req, REPLY_STREAM, status, content_type);
    req->stream = s;
    if (out != NULL)
        *out = s;
    return 0;
}

int http_reply_stream(http_req_t *req, int status, const char *content_type,
                      http_stream_read_fn read, void *ctx, http_stream_free_fn free_fn,
                      http_stream_t **out)
{
    return reply_stream(req, status, content_type, MHD_SIZE_UNKNOWN, read, ctx, free_fn, out);
}

int http_reply_stream_sized(http_req_t *req, int status, const char *content_type,
                            uint64_t size, http_stream_read_fn read, void *ctx,
                            http_stream_free_fn free_fn)
{
    return reply_stream(req, status, content_type, size, read, ctx, free_fn, NULL);
}

void http_stream_wake(http_stream_t *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    if (!s->closed) {
        s->woken = 1;
        if (s->suspended) {
            s->suspended = 0;
            MHD_resume_connection(s->conn);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

int http_stream_closed(http_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    int closed = s->closed;
    pthread_mutex_unlock(&s->mu);
    return closed || atomic_load(&s->srv->stopping);
}

void http_stream_probe(http_stream_t *s)
{
    pthread_mutex_lock(&s->mu);
    /* Only a parked connection: libmicrohttpd cannot close it (nor its socket) until it is
     * resumed, which happens under s->mu, so the descriptor is still this client's. */
    if (s->suspended && !s->closed && s->fd >= 0) {
        char c;
        ssize_t n = recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            s->peer_gone = 1;
            s->suspended = 0;
            MHD_resume_connection(s->conn);  /* stream_reader() ends it */
        }
    }
    pthread_mutex_unlock(&s->mu);
}

void http_stream_release(http_stream_t *s)
{
    if (s != NULL)
        http__stream_unref(s);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    http_stream_t *s = cls;
    (void)pos;
    if (atomic_load(&s->srv->stopping))
        return MHD_CONTENT_READER_END_OF_STREAM;
    pthread_mutex_lock(&s->mu);
    s->woken = 0;
    int gone = s->peer_gone;
    pthread_mutex_unlock(&s->mu);
    if (gone)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    ssize_t n = s->read(s->ctx, buf, max);
    if (n > 0) {
        pthread_mutex_lock(&s->mu);
        s->bytes += (uint64_t)n;
        pthread_mutex_unlock(&s->mu);
        return n;
    }
    if (n == HTTP_STREAM_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    /* Nothing yet. Park the connection unless data arrived while we were reading (woken), in
     * which case returning 0 makes libmicrohttpd ask again at once. */
    pthread_mutex_lock(&s->mu);
    if (s->has_producer && !s->woken && !atomic_load(&s->srv->stopping)) {
        s->suspended = 1;
        MHD_suspend_connection(s->conn);
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void stream_response_free(void *cls)
{
    http_stream_t *s = cls;
    http__stream_close(s);
    http__stream_unref(s);
}

/* ---- queueing the answer ------------------------------------------------------------------- */

enum MHD_Result http__queue_reply(http_req_t *req)
{
    struct MHD_Response *resp = NULL;
    switch (req->kind) {
    case REPLY_BUF:
        resp = MHD_create_response_from_buffer(req->buf_len, req->buf, MHD_RESPMEM_MUST_FREE);
        if (resp != NULL)
            req->buf = NULL;               /* libmicrohttpd frees it now */
        req->bytes = req->buf_len;
        break;
    case REPLY_STATIC:
        resp = MHD_create_response_from_buffer(req->buf_len, (void *)req->sbuf,
                                               MHD_RESPMEM_PERSISTENT);
        req->bytes = req->buf_len;
        break;
    case REPLY_EMPTY:
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        break;
    case REPLY_STREAM: {
        http_stream_t *s = req->stream;
        pthread_mutex_lock(&s->mu);
        s->refs++;                         /* the response's reference */
        pthread_mutex_unlock(&s->mu);
        resp = MHD_create_response_from_callback(s->size, HTTP_STREAM_BLOCK,
                                                 stream_reader, s, stream_response_free);
        if (resp == NULL) {
            http__stream_unref(s);
            break;
        }
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        pthread_mutex_lock(&s->mu);
        s->fd = ci != NULL ? ci->connect_fd : -1;
        pthread_mutex_unlock(&s->mu);
        http_server_t *srv = req->srv;
        pthread_mutex_lock(&srv->streams_mu);
        s->next = srv->streams;
        s->prev = NULL;
        if (srv->streams != NULL)
            srv->streams->prev = s;
        srv->streams = s;
        s->listed = 1;
        srv->n_streams++;
        pthread_mutex_unlock(&srv->streams_mu);
        MHD_add_response_header(resp, "Cache-Control", "no-store");
        break;
    }
    case REPLY_NONE:
        break;
    }
    if (resp == NULL) {
        log_msg(LOG_LEVEL_ERROR, "id=%s: cannot create a response", req->rid);
        return MHD_NO;
    }
    if (req->ctype[0] != '\0')
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->ctype);
    MHD_add_response_header(resp, "X-Request-Id", req->rid);
    for (const header_t *h = req->headers; h != NULL; h = h->next)
        MHD_add_response_header(resp, h->name, h->value);
    enum MHD_Result r = MHD_queue_response(req->conn, (unsigned)req->status, resp);
    MHD_destroy_response(resp);
    req->queued = 1;
    return r;
}
