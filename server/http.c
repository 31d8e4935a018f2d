/* server/http.c -- libmicrohttpd glue: request state, body limits, routing and dispatch, the
 * daemon's start and stop. Replies, streams and queueing an answer are http_reply.c.
 *
 * Request life cycle: the first access-handler call creates the http_req_t and
 * returns without answering -- libmicrohttpd 0.9.75 closes the connection after any request
 * answered on its first call, so answering later is what keeps connections alive. Body chunks
 * are appended on the following calls; the final call (no more data) dispatches to the route
 * and queues the answer. The completed callback logs the request, counts it and frees it.
 *
 * Streams park their connection with MHD_suspend_connection() when the producer has nothing to
 * say, so an idle SSE client costs no thread; http_stream_wake() resumes it. libmicrohttpd
 * forbids stopping a daemon with suspended connections, so http_server_stop() ends every stream
 * first.
 */
#include "http.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_internal.h"
#include "log.h"
#include "metrics.h"
#include "router.h"

#define HTTP_STOP_WAIT_MS 30000          /* longest wait for running handlers at shutdown */
#define HTTP_EOF_TIMEOUT_S 1             /* connection timeout once the client sent its all */
#define HTTP_LOG_TARGET_MAX 32768        /* longest request target shown whole in the log */


/* ---- small helpers ------------------------------------------------------------------------- */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* A fresh id: splitmix64 is a bijection, so distinct counters give distinct ids; the random seed
 * keeps ids from different processes (restarts) apart. */
static void request_id_new(http_server_t *srv, char out[HTTP_REQUEST_ID_MAX])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t n = atomic_fetch_add_explicit(&srv->rid_counter, 1, memory_order_relaxed);
    uint64_t v = splitmix64(srv->rid_seed + n * 0x9E3779B97F4A7C15ULL);
    for (int i = 15; i >= 0; --i, v >>= 4)
        out[i] = hex[v & 15];
    out[16] = '\0';
}

static int request_id_safe(const char *v)
{
    size_t n = 0;
    for (; v[n] != '\0'; ++n) {
        char c = v[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.' || c == ':';
        if (!ok || n >= HTTP_REQUEST_ID_MAX - 1)
            return 0;
    }
    return n > 0;
}

/* ---- requests -------------------------------------------------------------------------------- */

void http__headers_free(header_t *h)
{
    while (h != NULL) {
        header_t *next = h->next;
        free(h->name);
        free(h->value);
        free(h);
        h = next;
    }
}

/* Drop whatever reply was set (not the headers). */
void http__reply_clear(http_req_t *req)
{
    free(req->buf);
    req->buf = NULL;
    req->sbuf = NULL;
    req->buf_len = 0;
    req->ctype[0] = '\0';
    if (req->kind == REPLY_STREAM && req->stream != NULL) {
        http__stream_close(req->stream);
        http__stream_unref(req->stream);
        req->stream = NULL;
    }
    req->kind = REPLY_NONE;
    req->status = 0;
}

static void req_free(http_req_t *req)
{
    if (req == NULL)
        return;
    if (req->queued && req->stream != NULL) {
        http__stream_close(req->stream);
        http__stream_unref(req->stream);
        req->stream = NULL;
    }
    http__reply_clear(req);
    http__headers_free(req->headers);
    if (req->sink != NULL && req->sink->free_fn != NULL && req->sink_state != NULL)
        req->sink->free_fn(req->sink_state);
    free(req->body);
    free(req->path);
    free(req->raw_path);
    pthread_mutex_destroy(&req->defer_mu);
    free(req);
}

/* snprintf(dst, size, "%s", src) without the format machinery: this runs several times for
 * every request. */
void http__copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Percent-decode the path `raw` (len bytes) into a new string. libmicrohttpd decodes too, but
 * hands over a C string: "%00" would silently end the path there (DELETE
 * /v1/models/260%00/batches/1 would delete model 260), and "%2F" would become a separator. A
 * path holding either is refused: `*why` says why, and the result is still returned for the
 * log. "%" not followed by two hex digits stays as it is, as libmicrohttpd leaves it.
 */
static char *path_decode(const char *raw, size_t len, const char **why)
{
    *why = NULL;
    char *out = malloc(len + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; ++i) {
        int hi, lo;
        if (raw[i] == '%' && i + 2 < len && (hi = hex_digit(raw[i + 1])) >= 0 &&
            (lo = hex_digit(raw[i + 2])) >= 0) {
            char c = (char)(hi * 16 + lo);
            if (c == '\0' && *why == NULL)
                *why = "the path holds an encoded NUL byte (%00)";
            else if (c == '/' && *why == NULL)
                *why = "the path holds an encoded '/' (%2F); path segments are separated by '/' "
                       "itself";
            out[o++] = c != '\0' ? c : '?';
            i += 2;
        } else {
            out[o++] = raw[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* A request as soon as its target is known (libmicrohttpd's URI log callback, which runs
 * before any header is read): keeps the target as sent. The rest is set by req_start(). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    http_req_t *req = calloc(1, sizeof *req);
    if (req == NULL)
        return NULL;
    req->srv = cls;
    req->conn = conn;
    req->t0_ns = mono_ns();
    pthread_mutex_init(&req->defer_mu, NULL);
    if (uri != NULL) {
        req->target = uri;
        req->target_end = uri + strlen(uri);
    } else {
        uri = "/";
    }
    if ((req->raw_path = strndup(uri, strcspn(uri, "?#"))) == NULL) {
        req_free(req);
        return NULL;
    }
    return req;
}

/* libmicrohttpd hands the request target over as a C string, so a raw NUL byte in it (not a
 * valid target character, RFC 9112 §3.2) silently cuts it: `DELETE /v1/models/1\0/batches/2`
 * would reach us as `DELETE /v1/models/1`. The library ends the target in place, with a NUL
 * just before the HTTP version, in the same request-line buffer, so a target whose string
 * stops anywhere else held a NUL byte. Then the path is refused, and raw_path becomes the
 * whole path as sent, each NUL shown as %00, so the log says what was asked. 0, or -1 out of
 * memory. */
static int refuse_raw_nul(http_req_t *req, const char *version)
{
    if (req->target == NULL || version == req->target_end + 1)
        return 0;
    req->path_error = "the request target holds a NUL byte";
    if (req->target_end != req->target + strlen(req->raw_path) || version < req->target_end ||
        version - req->target > HTTP_LOG_TARGET_MAX)
        return 0;                            /* the NUL is in the query, or an unknown layout */
    size_t span = (size_t)(version - 1 - req->target), n = 0;
    char *shown = malloc(3 * span + 1);
    if (shown == NULL)
        return -1;
    for (size_t i = 0; i < span && req->target[i] != '?' && req->target[i] != '#'; ++i) {
        if (req->target[i] == '\0') {
            memcpy(shown + n, "%00", 3);
            n += 3;
        } else {
            shown[n++] = req->target[i];
        }
    }
    shown[n] = '\0';
    free(req->raw_path);
    req->raw_path = shown;
    return 0;
}

/* The first access-handler call: method, decoded path, request id. 0, or -1 out of memory. */
static int req_start(http_req_t *req, const char *method, const char *version)
{
    req->path = path_decode(req->raw_path, strlen(req->raw_path), &req->path_error);
    if (req->path == NULL || refuse_raw_nul(req, version) < 0)
        return -1;
    req->target = req->target_end = NULL;    /* the library may reuse its buffer from now on */
    req->begun = 1;
    req->head = strcmp(method, "HEAD") == 0;
    http__copy_str(req->method_log, sizeof req->method_log, method);
    http__copy_str(req->method, sizeof req->method, req->head ? "GET" : method);
    const char *rid = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Request-Id");
    if (rid != NULL && request_id_safe(rid))
        http__copy_str(req->rid, sizeof req->rid, rid);
    else
        request_id_new(req->srv, req->rid);
    return 0;
}

static int route_match(http_req_t *req, int reply);

/* Is `name` (n bytes) one of the comma-separated names in `list`? */
static int name_listed(const char *list, const char *name, size_t n)
{
    for (const char *p = list; p != NULL && *p != '\0';) {
        size_t len = strcspn(p, ",");
        if (len == n && memcmp(p, name, n) == 0)
            return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

enum query_fault { QUERY_FAULT_UNKNOWN = 0, QUERY_FAULT_NUL, QUERY_FAULT_TWICE, QUERY_FAULT_EMPTY };

/* A route takes a handful of parameters; more than this many accepted ones in one request
 * means one of them is repeated. */
#define QUERY_SEEN_MAX 16

typedef struct query_scan {
    const char *accepted;
    const char *bad;                     /* the first parameter refused */
    int fault;                           /* enum query_fault: why `bad` was refused */
    const char *seen[QUERY_SEEN_MAX];    /* accepted names so far */
    size_t n_seen;
} query_scan_t;

/* 1 when `key` was already given in this query: ?split=validation&split=train is refused, not
 * read as whichever came first. */
static int query_seen(query_scan_t *q, const char *key)
{
    for (size_t i = 0; i < q->n_seen; ++i)
        if (strcmp(q->seen[i], key) == 0)
            return 1;
    if (q->n_seen == QUERY_SEEN_MAX)
        return 1;
    q->seen[q->n_seen++] = key;
    return 0;
}

static enum MHD_Result query_scan_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                      size_t key_size, const char *value, size_t value_size)
{
    query_scan_t *q = cls;
    (void)kind;
    /* An empty segment ("?&a=1") names nothing and is skipped; "?=1" is a value of no name. */
    if (key == NULL || (key_size == 0 && value == NULL))
        return MHD_YES;
    /* Decoded values are C strings to every reader: a "%00" would silently cut them. */
    if (key_size == 0)
        q->fault = QUERY_FAULT_EMPTY;
    else if (strlen(key) != key_size || (value != NULL && strlen(value) != value_size))
        q->fault = QUERY_FAULT_NUL;
    else if (!name_listed(q->accepted, key, key_size))
        q->fault = QUERY_FAULT_UNKNOWN;
    else if (query_seen(q, key))
        q->fault = QUERY_FAULT_TWICE;
    else
        return MHD_YES;
    q->bad = key;
    return MHD_NO;                           /* stop at the first */
}

/* 0 when every query parameter is one the matched route accepts, given once, else ERR_INVAL
 * naming the first that is not (as an unknown or repeated field of a body is refused), or
 * that holds a NUL byte. */
static int query_check(const http_req_t *req, err_t *err)
{
    const http_route_t *r = req->route;
    query_scan_t q = {.accepted = r->query};
    MHD_get_connection_values_n(req->conn, MHD_GET_ARGUMENT_KIND, query_scan_one, &q);
    if (q.bad == NULL)
        return 0;
    if (q.fault == QUERY_FAULT_NUL)
        return err_set_field(err, ERR_INVAL, q.bad, "query parameter '%.60s' holds an encoded "
                             "NUL byte (%%00)", q.bad);
    if (q.fault == QUERY_FAULT_EMPTY)
        return err_set_field(err, ERR_INVAL, "query", "a query parameter has a value but no "
                             "name (\"?=...\"): %s %s takes %s", r->method, r->pattern,
                             r->query != NULL ? r->query : "none");
    if (q.fault == QUERY_FAULT_TWICE)
        return err_set_field(err, ERR_INVAL, q.bad, "query parameter '%.60s' is given twice",
                             q.bad);
    if (r->query == NULL)
        return err_set_field(err, ERR_INVAL, q.bad, "unknown query parameter '%.60s': %s %s "
                             "takes none", q.bad, r->method, r->pattern);
    return err_set_field(err, ERR_INVAL, q.bad, "unknown query parameter '%.60s': %s %s takes "
                         "%s", q.bad, r->method, r->pattern, r->query);
}

/* The sink listed for this request's method and route, if any (decided once). */
static void sink_find(http_req_t *req)
{
    if (req->sink_checked)
        return;
    req->sink_checked = 1;
    const http_body_sink_t *k = req->srv->cfg.sinks;
    err_t err;
    if (k == NULL || route_match(req, 0) < 0 || query_check(req, &err) < 0)
        return;                              /* dispatch() answers; the body is just kept */
    for (; k->method != NULL; ++k)
        if (strcmp(k->method, req->method) == 0 && strcmp(k->pattern, req->route_label) == 0)
            break;
    req->sink = k->method != NULL ? k : NULL;
}

static void sink_begin(http_req_t *req)
{
    if (req->sink == NULL || req->sink_begun)
        return;
    req->sink_begun = 1;
    int rc = req->sink->begin(req, &req->sink_state, &req->sink_err);
    if (rc == HTTP_SINK_ACCUMULATE) {
        if (req->sink->free_fn != NULL && req->sink_state != NULL)
            req->sink->free_fn(req->sink_state);
        req->sink_state = NULL;
        req->sink = NULL;
    } else if (rc < 0) {
        req->sink_rc = rc;
        req->sink_done = 1;
    }
}

static void sink_feed(http_req_t *req, const char *data, size_t n)
{
    if (req->sink_done)
        return;
    int rc = req->sink->chunk(req->sink_state, data, n, &req->sink_err);
    if (rc < 0)
        req->sink_rc = rc;
    if (rc != 0)
        req->sink_done = 1;
}

/* Append an upload chunk (or hand it to the route's sink), or remember that the body is over
 * the limit (and drop it). */
static void req_append(http_req_t *req, const char *data, size_t n)
{
    if (req->too_big)
        return;
    size_t max = req->srv->cfg.max_body;
    if (n > max || req->seen > max - n) {
        req->too_big = 1;
        free(req->body);
        req->body = NULL;
        req->len = req->cap = 0;
        return;
    }
    req->seen += n;
    sink_find(req);
    sink_begin(req);
    if (req->sink != NULL) {
        sink_feed(req, data, n);
        return;
    }
    if (req->len + n + 1 > req->cap) {
        size_t cap = req->cap != 0 ? req->cap : 4096;
        while (cap < req->len + n + 1)
            cap = cap > SIZE_MAX / 2 ? req->len + n + 1 : cap * 2;
        if (cap > max + 1)
            cap = max + 1;
        char *b = realloc(req->body, cap);
        if (b == NULL) {
            /* Treat as too big: the client is told to send less, nothing half-done remains. */
            req->too_big = 1;
            free(req->body);
            req->body = NULL;
            req->len = req->cap = 0;
            return;
        }
        req->body = b;
        req->cap = cap;
    }
    memcpy(req->body + req->len, data, n);
    req->len += n;
    req->body[req->len] = '\0';
}

/* ---- accessors ------------------------------------------------------------------------------- */

const char *http_method(const http_req_t *req) { return req->method; }
const char *http_path(const http_req_t *req) { return req->path; }
const char *http_route(const http_req_t *req) { return req->route_label; }
const char *http_request_id(const http_req_t *req) { return req->rid; }
void *http_ctx(const http_req_t *req) { return req->srv->cfg.ctx; }

const char *http_query(const http_req_t *req, const char *key)
{
    const char *value = NULL;
    size_t value_len = 0;
    if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &value,
                                      &value_len) != MHD_YES)
        return NULL;
    return value != NULL ? value : "";
}

const char *http_header(const http_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_body(const http_req_t *req, size_t *len)
{
    if (len != NULL)
        *len = req->len;
    return req->body != NULL ? req->body : "";
}

void http_body_release(http_req_t *req)
{
    free(req->body);
    req->body = NULL;
    req->len = req->cap = 0;
}

void *http_body_state(const http_req_t *req)
{
    return req->sink_state;
}

int64_t http_param(const http_req_t *req, int i)
{
    if (req->route == NULL || i < 0 || i >= req->n_param)
        return 0;
    return req->params[i];
}

int http_query_int64(const http_req_t *req, const char *key, int64_t dflt, int64_t min,
                     int64_t max, int64_t *out, err_t *err)
{
    *out = dflt;
    const char *v = http_query(req, key);
    if (v == NULL)
        return 0;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (v[0] == '\0' || *end != '\0' || errno != 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')))
        return err_set_field(err, ERR_INVAL, key, "%s must be an integer, got '%.40s'", key, v);
    if (x < min || x > max)
        return err_set_field(err, ERR_INVAL, key, "%s=%lld not in [%" PRId64 ",%" PRId64 "]",
                             key, x, min, max);
    *out = x;
    return 0;
}

int http_content_type_is(const http_req_t *req, const char *type)
{
    const char *ct = http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct == NULL)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ++ct;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        --n;
    return n == strlen(type) && strncasecmp(ct, type, n) == 0;
}

int http_require_json(const http_req_t *req, err_t *err)
{
    if (http_content_type_is(req, "application/json"))
        return 0;
    const char *ct = http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct == NULL)
        return err_set(err, ERR_MEDIA, "Content-Type must be application/json (none was sent)");
    return err_set(err, ERR_MEDIA, "Content-Type must be application/json, not '%.80s'", ct);
}

/* ---- deferred answers ------------------------------------------------------------------------ */

int http_defer(http_req_t *req)
{
    pthread_mutex_lock(&req->defer_mu);
    req->deferred = 1;
    pthread_mutex_unlock(&req->defer_mu);
    return 0;
}

void http_resume(http_req_t *req)
{
    pthread_mutex_lock(&req->defer_mu);
    req->defer_done = 1;
    if (req->defer_suspended) {
        req->defer_suspended = 0;
        MHD_resume_connection(req->conn);   /* libmicrohttpd calls on_request() again */
    }
    pthread_mutex_unlock(&req->defer_mu);
}

/* After dispatch: park a deferred request unless its worker already finished. Returns 1 when
 * parked (nothing to queue now). */
static int defer_park(http_req_t *req)
{
    pthread_mutex_lock(&req->defer_mu);
    int park = req->deferred && !req->defer_done;
    if (park) {
        req->defer_suspended = 1;
        MHD_suspend_connection(req->conn);
    }
    pthread_mutex_unlock(&req->defer_mu);
    return park;
}

/* ---- routing and dispatch ------------------------------------------------------------------ */

/*
 * Is `given` one of the configured tokens? Constant time with respect to the secret: every slot
 * is compared over the full stride (the longest token's length) with no early exit, whichever
 * token matches and however much of one the client guessed, so timing tells nothing of a token's
 * bytes or length. The work depends only on the token count and the longest token.
 */
static int tokens_match(const http_server_t *srv, const char *given)
{
    unsigned char buf[HTTP_TOKEN_MAX];
    size_t glen = strlen(given);
    size_t n = glen < srv->tok_stride ? glen : srv->tok_stride;
    memset(buf, 0, srv->tok_stride);
    memcpy(buf, given, n);
    volatile unsigned ok = 0;                /* volatile: keep the loop free of shortcuts */
    for (size_t k = 0; k < srv->n_tok; ++k) {
        const unsigned char *t = srv->tok + k * srv->tok_stride;
        unsigned diff = (unsigned)(srv->tok_len[k] != glen);  /* a flag, not a branch */
        for (size_t i = 0; i < srv->tok_stride; ++i)
            diff |= (unsigned)(t[i] ^ buf[i]);
        ok |= (unsigned)((diff - 1u) >> 31) & 1u;  /* 1 iff diff == 0 (diff < 2^31) */
    }
    explicit_bzero(buf, sizeof buf);
    return ok != 0;
}

/* Does this request need a token? /v1/ paths do when tokens are set; with protect_all, every
 * path but /healthz (probes stay open). */
static int auth_required(const http_req_t *req)
{
    const http_server_t *srv = req->srv;
    if (srv->n_tok == 0)
        return 0;
    if (strncmp(req->path, "/v1/", 4) == 0)
        return 1;
    return srv->cfg.protect_all && strcmp(req->path, "/healthz") != 0;
}

/* The request's Authorization headers: how many, and the first one's value. */
typedef struct auth_scan {
    int n;
    const char *value;
} auth_scan_t;

static enum MHD_Result scan_authorization(void *cls, enum MHD_ValueKind kind, const char *key,
                                          const char *value)
{
    auth_scan_t *a = cls;
    (void)kind;
    if (key != NULL && strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION) == 0 && a->n++ == 0)
        a->value = value;
    return MHD_YES;
}

/* 0 when the request may proceed; else an answer (401) has been set. Runs on the headers, so a
 * client without a token never gets to upload a body. The header's value is never logged.
 * Authorization is one value (RFC 9110 section 11.6.2): with two, neither is taken, as a proxy
 * in front may have checked the other one. */
static int check_auth(http_req_t *req)
{
    if (!auth_required(req))
        return 0;
    auth_scan_t auth = {0};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, scan_authorization, &auth);
    const char *h = auth.n == 1 ? auth.value : NULL;
    if (h != NULL && strncasecmp(h, "Bearer ", 7) == 0) {
        const char *tok = h + 7;
        while (*tok == ' ')
            ++tok;
        if (tokens_match(req->srv, tok))
            return 0;
    }
    http_set_header(req, "WWW-Authenticate", "Bearer");
    http__reply_error_status(req, 401, 0,
                             auth.n > 1  ? "more than one Authorization header"
                             : h == NULL ? "missing Authorization: Bearer token"
                                         : "invalid token in Authorization: Bearer",
                             NULL);
    return -1;
}

/* Find the route for req->path and method: 0 with req->route set, or -1 and, when `reply`,
 * an answer (404/405) set. */
static int route_match(http_req_t *req, int reply)
{
    if (req->route != NULL)
        return 0;                            /* matched already (a body sink looked first) */
    if (req->path_error != NULL)
        return -1;                           /* answered by dispatch() */
    router_match_t m;
    int found = router_match(req->srv->router, req->method, req->head, req->path, &m);
    if (found == ROUTER_FOUND) {
        req->route = m.route;
        req->route_label = m.route->pattern;
        req->n_param = m.n_param;
        memcpy(req->params, m.params, sizeof req->params);
        return 0;
    }
    if (!reply)
        return -1;
    if (found == ROUTER_NOT_ALLOWED) {
        req->route_label = m.route->pattern;
        http_set_header(req, MHD_HTTP_HEADER_ALLOW, m.allow);
        char msg[200];
        snprintf(msg, sizeof msg, "%s is not allowed on %s (allowed: %s)", req->method_log,
                 m.route->pattern, m.allow);
        http__reply_error_status(req, 405, 0, msg, NULL);
        return -1;
    }
    err_t err;
    err_set(&err, ERR_NOTFOUND, "no such path: %.120s", req->path);
    http_reply_error(req, &err);
    return -1;
}

static void dispatch(http_req_t *req)
{
    err_t err = {0};
    if (req->too_big) {
        err_set(&err, ERR_TOOBIG, "request body is larger than --max-body (%zu bytes)",
                req->srv->cfg.max_body);
        http_reply_error(req, &err);
        return;
    }
    if (atomic_load(&req->srv->stopping)) {
        err_set(&err, ERR_UNAVAILABLE, "the server is shutting down");
        http_reply_error(req, &err);
        http_set_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
        return;
    }
    if (req->path_error != NULL) {
        err_set_field(&err, ERR_INVAL, "path", "%s", req->path_error);
        http_reply_error(req, &err);
        return;
    }
    if (route_match(req, 1) < 0)
        return;
    if (query_check(req, &err) < 0) {
        http_reply_error(req, &err);
        return;
    }
    if (req->seen > 0 && (strcmp(req->method, "GET") == 0 || strcmp(req->method, "DELETE") == 0)) {
        /* No route reads a body on these methods: refuse it rather than ignore what the client
         * may have meant as parameters (docs/api.md). */
        err_set(&err, ERR_INVAL, "%s %s takes no request body (%zu bytes were sent); put "
                "parameters in the query string", req->method_log, req->route->pattern,
                req->seen);
        http_reply_error(req, &err);
        return;
    }
    sink_find(req);
    sink_begin(req);                         /* an empty body: the sink still gets its state */
    if (req->sink_rc < 0) {
        http_reply_error(req, &req->sink_err);
        return;
    }
    int rc = req->route->handler(req, &err);
    if (rc < 0) {
        pthread_mutex_lock(&req->defer_mu);
        req->deferred = 0;
        pthread_mutex_unlock(&req->defer_mu);
        if (err.code == 0)
            err_set(&err, rc, "%s", err_str(rc));
        http_reply_error(req, &err);
    } else if (req->deferred) {
        return;                              /* the worker answers; see defer_park() */
    } else if (req->kind == REPLY_NONE) {
        err_set(&err, ERR_INTERNAL, "handler for %s %s produced no answer", req->method,
                req->route->pattern);
        http_reply_error(req, &err);
    }
}

/* What the request's header fields say about its framing, gathered in one pass. */
typedef struct header_scan {
    int n_length, lengths_differ;        /* Content-Length fields, and whether they disagree */
    const char *first_length;
    int n_host;
    int bad_name;                        /* a field name with whitespace in it */
} header_scan_t;

static enum MHD_Result header_scan_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
    header_scan_t *h = cls;
    (void)kind;
    if (key == NULL)
        return MHD_YES;
    if (key[0] == '\0' || strpbrk(key, " \t") != NULL)
        h->bad_name = 1;
    if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0)
        h->n_host++;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (h->n_length++ == 0)
            h->first_length = value;
        else if (value == NULL || h->first_length == NULL || strcmp(value, h->first_length) != 0)
            h->lengths_differ = 1;
    }
    return MHD_YES;
}

/*
 * RFC 9112 framing that cannot be trusted, answered before any body is read and with the
 * connection closed, so nothing of this request is taken for a next one: an HTTP/1.1 request
 * without Host, or with two (section 3.2); whitespace between a field name and its colon
 * (section 5.1: libmicrohttpd keeps it in the name, so "Content-Length :" or
 * "Transfer-Encoding :" would frame nothing here while a proxy in front may honour it);
 * Content-Length headers that disagree (libmicrohttpd would take the first);
 * Transfer-Encoding with Content-Length (section 6.1: libmicrohttpd would read the body as
 * chunked and keep the connection, the classic request-smuggling split behind a proxy);
 * Transfer-Encoding in HTTP/1.0, which has none (section 6.1: framing to treat as faulty); a
 * transfer coding other than chunked, which libmicrohttpd cannot read (501). 0 when the
 * request is fine, else the status, with `*msg` saying why.
 */
static int framing_error(struct MHD_Connection *conn, const char *version, const char **msg)
{
    header_scan_t h = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, header_scan_one, &h);
    if (version != NULL && strcmp(version, MHD_HTTP_VERSION_1_1) == 0 && h.n_host == 0) {
        *msg = "an HTTP/1.1 request needs a Host header";
        return 400;
    }
    if (h.n_host > 1) {
        *msg = "the request has more than one Host header";
        return 400;
    }
    if (h.bad_name) {
        *msg = "a header field name holds whitespace (none is allowed before the colon)";
        return 400;
    }
    if (h.lengths_differ) {
        *msg = "the request has Content-Length headers that disagree";
        return 400;
    }
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (te == NULL)
        return 0;
    if (h.n_length > 0) {
        *msg = "the request has both Transfer-Encoding and Content-Length";
        return 400;
    }
    if (version != NULL && strcmp(version, MHD_HTTP_VERSION_1_0) == 0) {
        *msg = "an HTTP/1.0 request cannot use Transfer-Encoding";
        return 400;
    }
    if (strcasecmp(te, "chunked") != 0) {
        *msg = "Transfer-Encoding other than chunked is not supported";
        return 501;
    }
    return 0;
}

/* Has the client closed its side of the connection (nothing more will come)? A peek, so
 * nothing is taken from libmicrohttpd. */
static int peer_finished(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL)
        return 0;
    char c;
    return recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/*
 * A request whose body is still expected, from a client that has already closed its sending
 * side (shutdown(SHUT_WR) after part of a body): libmicrohttpd reads the last bytes and the
 * end of input in one go and, polling by edge, never looks at the socket again, so the
 * connection would wait out --idle-timeout.
 *
 * Returns 1 when the body can never be complete: libmicrohttpd hands over all the body it has
 * buffered in one call, so once that is taken, fewer bytes than Content-Length and nothing
 * more to read means the rest will not come. Before the first body bytes (or for a chunked
 * body) some may still sit in libmicrohttpd's buffer: then the connection's timeout only drops
 * to HTTP_EOF_TIMEOUT_S, and a body that is complete is served before that.
 */
static int body_watch_eof(http_req_t *req)
{
    if (!req->eof_seen && peer_finished(req->conn)) {
        req->eof_seen = 1;
        MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned int)HTTP_EOF_TIMEOUT_S);
    }
    return req->eof_seen && req->received > 0 && req->declared >= 0 &&
           req->received < (uint64_t)req->declared;
}

/* Does the request announce a body (Content-Length > 0, or chunked)? */
static int body_expected(struct MHD_Connection *conn)
{
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL)
        return strspn(cl, "0") != strlen(cl);
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

/* Answer at once, before any body is read, and close: the body is never read. */
static enum MHD_Result answer_now(http_req_t *req)
{
    http_set_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
    return http__queue_reply(req);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    http_server_t *srv = cls;
    http_req_t *req = *con_cls;
    if (req == NULL) {                       /* the URI log callback ran out of memory */
        if ((req = on_uri(srv, url, conn)) == NULL)
            return MHD_NO;
        req->target = NULL;                  /* url is not the library's copy of the target */
        *con_cls = req;
    }
    if (!req->begun) {
        if (req_start(req, method, version) < 0)
            return MHD_NO;
        atomic_fetch_add(&srv->active, 1);
        const char *msg = NULL;
        int status = framing_error(conn, version, &msg);
        if (status != 0) {
            http__reply_error_status(req, status, status == 400 ? ERR_INVAL : 0, msg, NULL);
            return answer_now(req);
        }
        if (check_auth(req) < 0)
            return answer_now(req);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        req->declared = -1;
        if (cl != NULL) {
            char *end = NULL;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno == ERANGE || (end != cl && n > srv->cfg.max_body)) {
                req->too_big = 1;
                dispatch(req);
                return answer_now(req);
            }
            req->declared = (int64_t)n;      /* <= --max-body */
        }
        if (body_expected(conn))
            body_watch_eof(req);
        return MHD_YES;                      /* answer on a later call: keeps keep-alive */
    }
    if (*upload_data_size > 0) {
        if (!req->queued)
            req_append(req, upload_data, *upload_data_size);
        req->received += *upload_data_size;
        *upload_data_size = 0;
        /* Closing, not answering: the client can no longer read what it cut short. */
        return body_watch_eof(req) ? MHD_NO : MHD_YES;
    }
    if (req->queued)
        return MHD_YES;
    if (req->deferred) {                     /* called again after http_resume() */
        pthread_mutex_lock(&req->defer_mu);  /* also orders the worker's reply before us */
        int done = req->defer_done;
        pthread_mutex_unlock(&req->defer_mu);
        if (!done)
            return MHD_YES;
        if (req->kind == REPLY_NONE) {
            err_t err;
            err_set(&err, ERR_INTERNAL, "deferred handler for %s produced no answer",
                    req->route_label != NULL ? req->route_label : "?");
            http_reply_error(req, &err);
        }
        return http__queue_reply(req);
    }
    dispatch(req);
    if (defer_park(req))
        return MHD_YES;
    return http__queue_reply(req);
}

/* The path as the client sent it, which is already percent-encoded: only what would break the
 * log line (controls, spaces, quotes, bytes over 0x7e) is encoded once more. */
static void log_path(char *dst, size_t size, const char *path)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)path; *p != '\0' && o + 4 < size; ++p) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '\\') {
            dst[o++] = '%';
            dst[o++] = hex[*p >> 4];
            dst[o++] = hex[*p & 15];
        } else {
            dst[o++] = (char)*p;
        }
    }
    dst[o] = '\0';
}

typedef struct text {
    char *p;
    size_t n, cap;                       /* cap includes room for a NUL */
} text_t;

static void text_str(text_t *t, const char *s)
{
    while (*s != '\0' && t->n + 1 < t->cap)
        t->p[t->n++] = *s++;
}

static void text_uint(text_t *t, uint64_t v, int min_digits)
{
    char d[24];
    int k = 0;
    do {
        d[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0 || k < min_digits);
    while (k > 0 && t->n + 1 < t->cap)
        t->p[t->n++] = d[--k];
}

/* The access record "http method=... path=... status=... bytes=... ms=... id=...[ aborted=1]"
 * (docs/operations.md) into dst; returns its length. Built by hand: printf's %f alone cost more
 * than routing a request. ms is rounded to the microsecond, as %.3f would. */
static size_t access_record(char *dst, size_t size, const http_req_t *req, int status,
                            uint64_t bytes, int64_t ns, int aborted)
{
    char path[300];
    log_path(path, sizeof path, req->raw_path);
    uint64_t us = ns > 0 ? ((uint64_t)ns + 500) / 1000 : 0;
    text_t t = {dst, 0, size};
    text_str(&t, "http method=");
    text_str(&t, req->method_log);
    text_str(&t, " path=");
    text_str(&t, path);
    text_str(&t, " status=");
    text_uint(&t, (uint64_t)(status > 0 ? status : 0), 1);
    text_str(&t, " bytes=");
    text_uint(&t, bytes, 1);
    text_str(&t, " ms=");
    text_uint(&t, us / 1000, 1);
    text_str(&t, ".");
    text_uint(&t, us % 1000, 3);
    text_str(&t, " id=");
    text_str(&t, req->rid);
    if (aborted)
        text_str(&t, " aborted=1");
    dst[t.n] = '\0';
    return t.n;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server_t *srv = cls;
    http_req_t *req = *con_cls;
    (void)conn;
    if (req == NULL)
        return;
    *con_cls = NULL;
    if (!req->begun) {                       /* libmicrohttpd refused it before its headers */
        req_free(req);
        return;
    }
    int64_t ns = mono_ns() - req->t0_ns;
    double secs = (double)ns / 1e9;
    uint64_t bytes = req->bytes;
    if (req->stream != NULL) {
        pthread_mutex_lock(&req->stream->mu);
        bytes = req->stream->bytes;
        pthread_mutex_unlock(&req->stream->mu);
    }
    int status = req->queued ? req->status : 0;
    if (req->queued)
        metrics_http_observe(req->route_label, req->method_log, status, secs);
    if (log_enabled(LOG_LEVEL_INFO)) {
        char line[512];
        size_t n = access_record(line, sizeof line, req, status, bytes, ns,
                                 toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
        log_buffered(LOG_LEVEL_INFO, line, n);
    }
    req_free(req);
    atomic_fetch_sub(&srv->active, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    log_msg(LOG_LEVEL_DEBUG, "libmicrohttpd: %s", line);
}

/* ---- server ---------------------------------------------------------------------------------- */

/* Copy cfg.tokens into the zero-padded table tokens_match() reads. */
static int tokens_copy(http_server_t *srv, err_t *err)
{
    const char *const *t = srv->cfg.tokens;
    size_t n = 0, stride = 1;
    for (; t != NULL && t[n] != NULL; ++n) {
        size_t len = strlen(t[n]);
        if (len == 0 || len > HTTP_TOKEN_MAX)
            return err_set(err, ERR_INVAL, "token %zu is empty or longer than %d bytes", n + 1,
                           HTTP_TOKEN_MAX);
        if (len > stride)
            stride = len;
    }
    srv->cfg.tokens = NULL;                  /* the caller's copy is not kept */
    if (n == 0)
        return 0;
    srv->tok = calloc(n, stride);
    srv->tok_len = calloc(n, sizeof *srv->tok_len);
    if (srv->tok == NULL || srv->tok_len == NULL)
        return err_set(err, ERR_NOMEM, "out of memory copying tokens");
    for (size_t k = 0; k < n; ++k) {
        srv->tok_len[k] = strlen(t[k]);
        memcpy(srv->tok + k * stride, t[k], srv->tok_len[k]);
    }
    srv->n_tok = n;
    srv->tok_stride = stride;
    return 0;
}

static void server_free(http_server_t *srv)
{
    if (srv == NULL)
        return;
    pthread_mutex_destroy(&srv->streams_mu);
    if (srv->tok != NULL)
        explicit_bzero(srv->tok, srv->n_tok * srv->tok_stride);
    free(srv->tok);
    free(srv->tok_len);
    router_free(srv->router);
    free(srv);
}

int http_server_start(const http_config_t *cfg, http_server_t **out, err_t *err)
{
    *out = NULL;
    http_server_t *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return err_set(err, ERR_NOMEM, "out of memory starting the server");
    srv->cfg = *cfg;
    pthread_mutex_init(&srv->streams_mu, NULL);
    if (getrandom(&srv->rid_seed, sizeof srv->rid_seed, 0) != (ssize_t)sizeof srv->rid_seed)
        srv->rid_seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)mono_ns();
    int rc = router_new(srv->cfg.tables, &srv->router, err);
    if (rc == 0)
        rc = tokens_copy(srv, err);
    if (rc < 0) {
        server_free(srv);
        return rc;
    }

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned int ipv6 = 0;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->bind, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(cfg->port);
    } else if (inet_pton(AF_INET6, cfg->bind, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(cfg->port);
        ipv6 = MHD_USE_IPv6;
    } else {
        server_free(srv);
        return err_set(err, ERR_INVAL, "bind address '%s' is not an IPv4 or IPv6 address",
                       cfg->bind);
    }

    unsigned int base = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                        MHD_USE_ERROR_LOG | ipv6;
    unsigned int pollers[] = {MHD_USE_EPOLL, MHD_USE_POLL, 0};
    /* A pool size of 1 draws a warning from libmicrohttpd: one internal thread is the same. */
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)on_mhd_log, NULL},   /* first, to catch all */
        {MHD_OPTION_SOCK_ADDR, 0, &ss},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->conn_limit, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->conn_timeout_s, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, srv},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, srv},
        {cfg->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END,
         (intptr_t)cfg->threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    for (int i = 0; i < 3 && srv->d == NULL; ++i) {
        srv->d = MHD_start_daemon(base | pollers[i], cfg->port, NULL, NULL, on_request, srv,
                                  MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
        if (srv->d == NULL && pollers[i] != 0)
            log_msg(LOG_LEVEL_DEBUG, "http: start with poller %u failed, trying the next",
                    pollers[i]);
    }
    if (srv->d == NULL) {
        server_free(srv);
        return err_set(err, ERR_UNAVAILABLE, "cannot listen on %s:%u (address in use or not "
                       "available?)", cfg->bind, (unsigned)cfg->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    srv->port = cfg->port;
    if (info != NULL && getsockname(info->listen_fd, (struct sockaddr *)&bound, &blen) == 0)
        srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
    *out = srv;
    return 0;
}

uint16_t http_server_port(const http_server_t *s)
{
    return s->port;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void http_server_stop(http_server_t *srv)
{
    if (srv == NULL)
        return;
    atomic_store(&srv->stopping, 1);
    MHD_socket lfd = MHD_quiesce_daemon(srv->d);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    /* Resume every parked stream so it can see `stopping` and end; repeat, since a stream may
     * park again between our pass and its read. */
    for (int waited = 0; waited < 2000; waited += 10) {
        pthread_mutex_lock(&srv->streams_mu);
        int n = srv->n_streams;
        for (http_stream_t *s = srv->streams; s != NULL; s = s->next) {
            pthread_mutex_lock(&s->mu);
            if (s->suspended) {
                s->suspended = 0;
                MHD_resume_connection(s->conn);
            }
            pthread_mutex_unlock(&s->mu);
        }
        pthread_mutex_unlock(&srv->streams_mu);
        if (n == 0)
            break;
        sleep_ms(10);
    }
    /* Let running handlers finish and their answers go out. */
    for (int waited = 0; waited < HTTP_STOP_WAIT_MS && atomic_load(&srv->active) > 0;
         waited += 10)
        sleep_ms(10);
    MHD_stop_daemon(srv->d);
    server_free(srv);
    log_flush();                             /* every answered request is in the log */
}
