/* tests/integration/it_badhttp.c -- bad input at the HTTP level, over raw TCP sockets: a
 * truncated body, a body dripped a few bytes at a time while others are served, a wrong
 * Content-Length, invalid UTF-8 and NUL bytes in JSON, a body on GET and DELETE, a header flood,
 * pipelined requests, HTTP/1.0 without Host, Transfer-Encoding with Content-Length or an
 * unknown coding, a client that half-closes mid-body, encoded NUL and '/' in paths, unknown
 * query parameters, HEAD on routes whose GET does work. After each: /healthz answers 200,
 * nothing changed (unless the case is meant to change something), and no answer is a 5xx.
 *
 * A second daemon (tcase "streams") has few connections and event streams: streams of a
 * deleted model end, a client that leaves a stream frees its slot at once, streams over
 * --max-streams are 429 and never starve /healthz, and the access log shows raw paths. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

static it_daemon_t d;

static void setup(void)
{
    /* Two server threads: a stalled connection must not stall the others. */
    const char *extra[] = {"--log-level", "error", "--threads", "2", NULL};
    ck_assert_msg(it_start(&d, it_exe, extra) == 0, "daemon did not start");
}

static void teardown(void)
{
    int rc = d.pid > 0 ? it_stop(&d) : 0;
    it_cleanup(&d);
    ck_assert_msg(rc == 0, "daemon exit status %d on SIGTERM", rc);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- raw sockets ---------------------------------------------------------------------------- */

static int raw_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect: %s",
                  strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Send everything; 0, or -1 when the peer closed (EPIPE/ECONNRESET are fine in these tests). */
static int raw_send(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

typedef struct raw_resp {
    int status;
    char *head;                /* status line and headers */
    char *body;
} raw_resp_t;

#define RAW_MAX 8

typedef struct raw_read {
    int n;                     /* complete answers */
    raw_resp_t r[RAW_MAX];
    int closed;                /* the server closed the connection */
} raw_read_t;

static void raw_read_free(raw_read_t *rr)
{
    for (int i = 0; i < rr->n; ++i) {
        free(rr->r[i].head);
        free(rr->r[i].body);
    }
    memset(rr, 0, sizeof *rr);
}

/* Parse complete answers out of buf[0..*len); consumed bytes are removed. */
static void raw_parse(char *buf, size_t *len, raw_read_t *rr)
{
    for (;;) {
        buf[*len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end == NULL || rr->n == RAW_MAX)
            return;
        size_t head_len = (size_t)(end - buf) + 4;
        size_t body_len = 0;
        for (char *h = buf; h < end; h = strstr(h, "\r\n") + 2) {
            if (strncasecmp(h, "Content-Length:", 15) == 0)
                body_len = strtoul(h + 15, NULL, 10);
            if (strstr(h, "\r\n") == NULL)
                break;
        }
        if (*len < head_len + body_len)
            return;
        raw_resp_t *r = &rr->r[rr->n++];
        r->head = strndup(buf, head_len);
        r->body = strndup(buf + head_len, body_len);
        r->status = 0;
        sscanf(buf, "HTTP/%*d.%*d %d", &r->status);
        memmove(buf, buf + head_len + body_len, *len - head_len - body_len);
        *len -= head_len + body_len;
    }
}

/* Read until `want` answers are complete, the server closes, or timeout_ms passes. */
static void raw_recv(int fd, int want, int timeout_ms, raw_read_t *rr)
{
    memset(rr, 0, sizeof *rr);
    /* Per call, not static: the drip test reads answers on three threads at once. */
    enum { RAW_BUF = 1 << 20 };
    char *buf = malloc(RAW_BUF);
    ck_assert_ptr_nonnull(buf);
    size_t len = 0;
    int64_t deadline = now_ms() + timeout_ms;
    while (rr->n < want && !rr->closed) {
        int left = (int)(deadline - now_ms());
        if (left <= 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, left);
        if (pr <= 0)
            continue;
        ssize_t n = recv(fd, buf + len, RAW_BUF - 1 - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rr->closed = 1;
            break;
        }
        len += (size_t)n;
        raw_parse(buf, &len, rr);
    }
    free(buf);
}

/* One request text on a fresh connection; the answers, then the socket is closed. */
static void raw_exchange(const void *req, size_t len, int want, raw_read_t *rr)
{
    int fd = raw_connect();
    raw_send(fd, req, len);
    raw_recv(fd, want, 10000, rr);
    close(fd);
}

/* Everything the server sends on `fd` until it closes the connection, `needle` appears
 * (NULL: only the close ends it) or timeout_ms passes. New, NUL-terminated; `*closed` (may be
 * NULL) says whether the server closed. */
static char *raw_slurp(int fd, const char *needle, int timeout_ms, int *closed)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    buf[0] = '\0';
    int done = 0;
    int64_t deadline = now_ms() + timeout_ms;
    while (!done && (needle == NULL || strstr(buf, needle) == NULL)) {
        int left = (int)(deadline - now_ms());
        if (left <= 0)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            done = 1;
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
        ck_assert_msg(len < cap - 1, "answer larger than %zu bytes", cap);
    }
    if (closed != NULL)
        *closed = done;
    return buf;
}

/* One request text on a fresh connection, which must get exactly one answer, with `status`. */
static void raw_expect(const char *req, size_t len, int status)
{
    raw_read_t rr;
    raw_exchange(req, len, 1, &rr);
    ck_assert_int_eq(rr.n, 1);
    ck_assert_int_eq(rr.r[0].status, status);
    raw_read_free(&rr);
}

/* ---- the daemon is fine and nothing changed --------------------------------------------------- */

/* noinline: inlined, gcc 12 at -O3 takes the returned buffer for a pointer to the local
 * `text` (-Wdangling-pointer false positive). */
__attribute__((noinline)) static char *models_snapshot(void)
{
    long status = 0;
    char *text = NULL;
    it_request("GET", "/v1/models?limit=1000", NULL, NULL, &status, &text, NULL);
    ck_assert_int_eq(status, 200);
    return text;
}

static void check_healthy(const char *snapshot)
{
    ck_assert_msg(d.pid > 0 && kill(d.pid, 0) == 0, "the daemon died");
    long status = 0;
    cJSON *h = it_json("GET", "/healthz", NULL, &status);
    ck_assert_int_eq(status, 200);
    cJSON_Delete(h);
    if (snapshot != NULL) {
        char *now = models_snapshot();
        ck_assert_str_eq(now, snapshot);
        free(now);
    }
}

/* Every answer is a well-formed 4xx. */
static void check_4xx(const raw_read_t *rr)
{
    for (int i = 0; i < rr->n; ++i)
        ck_assert_msg(rr->r[i].status >= 400 && rr->r[i].status < 500, "answer %d: status %d",
                      i, rr->r[i].status);
}

/* A JSON error answer with `code`; when `field` is not NULL, that field. */
static void check_error(const char *body, const char *code, const char *field)
{
    cJSON *j = cJSON_Parse(body);
    ck_assert_msg(j != NULL, "not JSON: %s", body);
    cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
    ck_assert_msg(cJSON_IsString(c) && strcmp(c->valuestring, code) == 0, "want %s: %s", code,
                  body);
    if (field != NULL) {
        cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "field");
        ck_assert_msg(cJSON_IsString(f) && strcmp(f->valuestring, field) == 0,
                      "want field %s: %s", field, body);
    }
    cJSON_Delete(j);
}

static int utf8_valid(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                                : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (k == 0 || i + k > n)
            return 0;
        for (size_t j = 1; j < k; ++j)
            if ((p[i + j] & 0xC0) != 0x80)
                return 0;
        i += k;
    }
    return 1;
}

static int64_t create_model(const char *spec)
{
    long status = 0;
    cJSON *m = it_json("POST", "/v1/models", spec, &status);
    ck_assert_int_eq(status, 201);
    int64_t id = (int64_t)cJSON_GetObjectItemCaseSensitive(m, "id")->valuedouble;
    cJSON_Delete(m);
    return id;
}

static void add_rows(int64_t id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    long status = 0;
    cJSON *j = it_json("POST", path, "{\"x\":[[1,2],[3,4]],\"y\":[1,2]}", &status);
    ck_assert_int_eq(status, 201);
    cJSON_Delete(j);
}

/* ---- the cases ------------------------------------------------------------------------------ */

/* How many times `needle` occurs in `hay` (non-overlapping). */
static int count_str(const char *hay, const char *needle)
{
    int n = 0;
    size_t len = strlen(needle);
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + len, needle))
        ++n;
    return n;
}

START_TEST(truncated_body)
{
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2,\"name\":\"keep\"}");
    add_rows(id);
    char *snap = models_snapshot();
    static const char *const reqs[] = {
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n{\"kind\":\"linear\",\"inputs\":2}",
        "POST /v1/models/1/batches HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 5000\r\n\r\n{\"x\":[[1,2],[3,4]],\"y\":[1,2]}",
        "POST /v1/models/1/train HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 64\r\n\r\n{\"steps\":5}",
        "PUT /v1/models/1/parameters HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 64\r\n\r\n{\"parameters\":{\"W1\":[[1,1,1]]}}",
        /* chunked, and the last chunk never comes */
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n1c\r\n{\"kind\":\"linear\",\"inputs\":2}\r\n",
        /* headers cut off in the middle */
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Ty",
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; ++i) {
        int fd = raw_connect();
        raw_send(fd, reqs[i], strlen(reqs[i]));
        it_sleep_ms(100);
        close(fd);                           /* the rest never comes */
        it_sleep_ms(100);
        check_healthy(snap);
    }
    free(snap);
}
END_TEST

typedef struct drip {
    const char *body;
    int status;                /* answer to the dripped request */
    char head[512];            /* its status line and headers */
    int64_t ms;
} drip_t;

static void *drip_main(void *arg)
{
    drip_t *dr = arg;
    int64_t t0 = now_ms();
    int fd = raw_connect();
    char head[256];
    int n = snprintf(head, sizeof head, "POST /v1/models HTTP/1.1\r\nHost: t\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     strlen(dr->body));
    /* The headers dripped too, then the body, 3 bytes every 200 ms. */
    for (int i = 0; i < n; i += 16) {
        raw_send(fd, head + i, (size_t)(n - i < 16 ? n - i : 16));
        it_sleep_ms(50);
    }
    size_t len = strlen(dr->body);
    for (size_t i = 0; i < len; i += 3) {
        raw_send(fd, dr->body + i, len - i < 3 ? len - i : 3);
        it_sleep_ms(200);
    }
    raw_read_t rr;
    raw_recv(fd, 1, 10000, &rr);
    dr->status = rr.n > 0 ? rr.r[0].status : -1;
    if (rr.n > 0)
        snprintf(dr->head, sizeof dr->head, "%s", rr.r[0].head);
    raw_read_free(&rr);
    close(fd);
    dr->ms = now_ms() - t0;
    return NULL;
}

START_TEST(slow_drip)
{
    drip_t dr[3] = {
        {.body = "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"drip0\"}"},
        {.body = "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"drip1\"}"},
        {.body = "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"drip2\"}"},
    };
    pthread_t t[3];
    for (int i = 0; i < 3; ++i)
        ck_assert_int_eq(pthread_create(&t[i], NULL, drip_main, &dr[i]), 0);
    /* Meanwhile (more drippers than server threads) other clients are served at once. */
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    add_rows(id);
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)id);
    int64_t worst = 0;
    int slow = 0;
    for (int i = 0; i < 20; ++i) {
        int64_t t0 = now_ms();
        long status = 0;
        cJSON *j = it_json("POST", path, "{\"steps\":2}", &status);
        ck_assert_int_eq(status, 200);
        cJSON_Delete(j);
        j = it_json("GET", "/healthz", NULL, &status);
        ck_assert_int_eq(status, 200);
        cJSON_Delete(j);
        int64_t ms = now_ms() - t0;
        worst = ms > worst ? ms : worst;
        slow += ms > 1000;
        it_sleep_ms(100);
    }
    /* A server thread held by a dripper would stall about every other request for seconds;
     * one slow outlier is tolerated (a loaded machine, a sanitizer build). */
    ck_assert_msg(slow <= 1 && worst < 3000, "%d of 20 requests beside the drippers took over "
                  "1 s, the worst %lld ms", slow, (long long)worst);
    for (int i = 0; i < 3; ++i) {
        pthread_join(t[i], NULL);
        ck_assert_msg(dr[i].status == 201, "dripped request %d: status %d (%s)", i, dr[i].status,
                      dr[i].head);
        ck_assert_msg(dr[i].ms > 2000, "the drip was not slow (%lld ms)", (long long)dr[i].ms);
    }
    /* Each dripped model exists exactly once. */
    char *snap = models_snapshot();
    for (int i = 0; i < 3; ++i) {
        char name[32];
        snprintf(name, sizeof name, "\"drip%d\"", i);
        ck_assert_int_eq(count_str(snap, name), 1);
    }
    check_healthy(snap);
    free(snap);
}
END_TEST

START_TEST(wrong_content_length)
{
    create_model("{\"kind\":\"linear\",\"inputs\":2}");
    char *snap = models_snapshot();
    /* Content-Length 10 of a longer body: the first request reads `{"kind":"l` (invalid JSON),
     * and the rest is read as the next request: garbage, answered 400 (or the connection is
     * closed) -- never a crash, never a 5xx, never a model. */
    static const char req1[] =
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 10\r\n\r\n{\"kind\":\"linear\",\"inputs\":2}";
    raw_read_t rr;
    raw_exchange(req1, sizeof req1 - 1, 2, &rr);
    ck_assert_msg(rr.n >= 1, "no answer");
    ck_assert_int_eq(rr.r[0].status, 400);
    check_error(rr.r[0].body, "invalid_json", NULL);
    check_4xx(&rr);
    raw_read_free(&rr);
    check_healthy(snap);

    /* The remainder looks like a request line but is not one. */
    static const char req2[] =
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n{}GARBAGE / HTTP/1.1\r\nHost: t\r\n\r\n";
    raw_exchange(req2, sizeof req2 - 1, 2, &rr);
    ck_assert_msg(rr.n >= 1, "no answer");
    ck_assert_int_eq(rr.r[0].status, 400);       /* {} is not a model spec */
    check_4xx(&rr);
    raw_read_free(&rr);
    check_healthy(snap);

    /* A Content-Length that is not a number, or two that disagree. */
    static const char req3[] =
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: abc\r\n\r\n{\"kind\":\"linear\",\"inputs\":2}";
    raw_exchange(req3, sizeof req3 - 1, 1, &rr);
    check_4xx(&rr);
    raw_read_free(&rr);
    check_healthy(snap);
    static const char req4[] =
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 28\r\nContent-Length: 5\r\n\r\n{\"kind\":\"linear\",\"inputs\":2}";
    raw_exchange(req4, sizeof req4 - 1, 1, &rr);
    check_4xx(&rr);
    raw_read_free(&rr);
    check_healthy(snap);
    free(snap);
}
END_TEST

/* POST /v1/models with raw bytes `body` (len bytes): 400 `code` (field `field` when not NULL),
 * a body that is valid UTF-8 JSON, and no model created. */
static void bad_spec(const char *body, size_t len, const char *code, const char *field)
{
    char *snap = models_snapshot();
    it_call_t c = {.method = "POST", .path = "/v1/models", .content_type = "application/json",
                   .body = body, .len = len};
    it_resp_t r;
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_msg(r.status == 400, "status %ld: %s", r.status, r.body);
    ck_assert_msg(utf8_valid((const unsigned char *)r.body, r.len), "answer is not UTF-8: %s",
                  r.body);
    check_error(r.body, code, field);
    it_resp_free(&r);
    check_healthy(snap);
    free(snap);
}

START_TEST(invalid_utf8)
{
    /* Invalid UTF-8 in a string is refused where the string is used, naming the field; the
     * answer quotes nothing that is not UTF-8. */
    static const char name[] = "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"\xff\xfe\"}";
    bad_spec(name, sizeof name - 1, "invalid_argument", "name");
    static const char key[] = "{\"kind\":\"linear\",\"inputs\":2,\"\xff\xfe\":1}";
    bad_spec(key, sizeof key - 1, "invalid_argument", NULL);
    static const char kind[] = "{\"kind\":\"line\xc3\",\"inputs\":2}";  /* cut sequence */
    bad_spec(kind, sizeof kind - 1, "invalid_argument", "kind");
    static const char overlong[] = "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"\xc0\xaf\"}";
    bad_spec(overlong, sizeof overlong - 1, "invalid_argument", "name");
    static const char surrogate[] =
        "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"\xed\xa0\x80\"}";
    bad_spec(surrogate, sizeof surrogate - 1, "invalid_argument", "name");
    /* A lone surrogate escape cannot be decoded at all. */
    static const char esc[] = "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"\\ud800\"}";
    bad_spec(esc, sizeof esc - 1, "invalid_json", NULL);
    /* The same in a checkpoint label and a graph node id. */
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    char *snap = models_snapshot();
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld/checkpoints", (long long)id);
    static const char label[] = "{\"label\":\"a\xff" "b\"}";
    it_call_t c = {.method = "POST", .path = path, .content_type = "application/json",
                   .body = label, .len = sizeof label - 1};
    it_resp_t r;
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_msg(r.status == 400, "label: %ld %s", r.status, r.body);
    check_error(r.body, "invalid_argument", "label");
    it_resp_free(&r);
    long status = 0;
    cJSON *cl = it_json("GET", path, NULL, &status);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(cl, "checkpoints")), 0);
    cJSON_Delete(cl);
    check_healthy(snap);
    free(snap);
    /* A control character, escaped correctly, is still refused in a name (field named). */
    static const char ctl[] = "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"a\\u0001b\"}";
    bad_spec(ctl, sizeof ctl - 1, "invalid_argument", "name");
    /* A quoted unknown key cut to 60 bytes mid-character: the message stays UTF-8. */
    char longkey[160];
    snprintf(longkey, sizeof longkey, "{\"kind\":\"linear\",\"inputs\":2,\"%.59s\xc3\xa9\":1}",
             "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk");
    bad_spec(longkey, strlen(longkey), "invalid_argument", NULL);
    /* Valid UTF-8 is fine. */
    cJSON *m = it_json("POST", "/v1/models",
                       "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"r\xc3\xa9seau \xe2\x9c\x93\"}",
                       &status);
    ck_assert_int_eq(status, 201);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(m, "name")->valuestring,
                     "r\xc3\xa9seau \xe2\x9c\x93");
    cJSON_Delete(m);
}
END_TEST

START_TEST(nul_bytes)
{
    static const char in_string[] = "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"ab\0cd\"}";
    bad_spec(in_string, sizeof in_string - 1, "invalid_json", NULL);
    static const char escaped[] = "{\"kind\":\"linear\",\"inputs\":2,\"name\":\"ab\\u0000cd\"}";
    bad_spec(escaped, sizeof escaped - 1, "invalid_json", NULL);
    static const char after[] = "{\"kind\":\"linear\",\"inputs\":2}\0";
    bad_spec(after, sizeof after - 1, "invalid_json", NULL);
    static const char before[] = "\0{\"kind\":\"linear\",\"inputs\":2}";
    bad_spec(before, sizeof before - 1, "invalid_json", NULL);
    static const char between[] = "{\"kind\":\"linear\",\0\"inputs\":2}";
    bad_spec(between, sizeof between - 1, "invalid_json", NULL);
    /* The same in a batch (CSV and JSON) of an existing model: nothing stored. */
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    char *snap = models_snapshot();
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    static const char csv[] = "1,2,3\n4,\0,6\n";
    it_call_t c = {.method = "POST", .path = path, .content_type = "text/csv", .body = csv,
                   .len = sizeof csv - 1};
    it_resp_t r;
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_msg(r.status == 400, "csv with NUL: %ld %s", r.status, r.body);
    it_resp_free(&r);
    static const char json[] = "{\"x\":[[1,2],[3\0,4]],\"y\":[1,2]}";
    c = (it_call_t){.method = "POST", .path = path, .content_type = "application/json",
                    .body = json, .len = sizeof json - 1};
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_msg(r.status == 400, "json with NUL: %ld %s", r.status, r.body);
    check_error(r.body, "invalid_json", NULL);
    it_resp_free(&r);
    check_healthy(snap);
    free(snap);
}
END_TEST

/* A body on GET or DELETE is refused (400 invalid_argument): no route reads one, and ignoring
 * it would let a client believe its parameters were used. An empty body is fine. */
START_TEST(body_on_get)
{
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    char *snap = models_snapshot();
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    static const char *const methods[] = {"GET", "DELETE"};
    for (int i = 0; i < 2; ++i) {
        it_call_t c = {.method = methods[i], .path = path, .content_type = "application/json",
                       .body = "{\"limit\":1}"};
        it_resp_t r;
        ck_assert_int_eq(it_do(&c, &r), 0);
        ck_assert_msg(r.status == 400, "%s with a body: %ld %s", methods[i], r.status, r.body);
        check_error(r.body, "invalid_argument", NULL);
        ck_assert_ptr_nonnull(strstr(r.body, "no request body"));
        it_resp_free(&r);
        check_healthy(snap);
    }
    /* Unknown paths stay 404 and wrong methods 405, body or not. */
    it_call_t c = {.method = "GET", .path = "/v1/nope", .body = "x"};
    it_resp_t r;
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_int_eq(r.status, 404);
    it_resp_free(&r);
    /* Content-Length: 0 on GET is no body. */
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", path);
    raw_read_t rr;
    raw_exchange(req, strlen(req), 1, &rr);
    ck_assert_int_eq(rr.n, 1);
    ck_assert_int_eq(rr.r[0].status, 200);
    raw_read_free(&rr);
    check_healthy(snap);
    free(snap);
}
END_TEST

START_TEST(header_flood)
{
    create_model("{\"kind\":\"linear\",\"inputs\":2}");
    char *snap = models_snapshot();
    /* One header line of 256 KiB. */
    size_t big = 256 * 1024;
    char *req = malloc(big + 256);
    int n = snprintf(req, 256, "GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Flood: ");
    memset(req + n, 'a', big);
    memcpy(req + n + big, "\r\n\r\n", 5);
    raw_read_t rr;
    raw_exchange(req, (size_t)n + big + 4, 1, &rr);
    ck_assert_msg(rr.n == 1 || rr.closed, "no answer and no close");
    check_4xx(&rr);
    raw_read_free(&rr);
    check_healthy(snap);
    /* Thousands of small headers. */
    size_t o = (size_t)snprintf(req, 256, "GET /v1/models HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 10000 && o + 64 < big; ++i)
        o += (size_t)snprintf(req + o, 64, "X-H%d: v\r\n", i);
    memcpy(req + o, "\r\n", 3);
    raw_exchange(req, o + 2, 1, &rr);
    ck_assert_msg(rr.n == 1 || rr.closed, "no answer and no close");
    check_4xx(&rr);
    raw_read_free(&rr);
    check_healthy(snap);
    /* A request line (URL) of 256 KiB. */
    n = snprintf(req, 256, "GET /v1/models?x=");
    memset(req + n, 'b', big);
    memcpy(req + n + big, " HTTP/1.1\r\nHost: t\r\n\r\n", 23);
    raw_exchange(req, (size_t)n + big + 22, 1, &rr);
    ck_assert_msg(rr.n == 1 || rr.closed, "no answer and no close");
    check_4xx(&rr);
    raw_read_free(&rr);
    free(req);
    check_healthy(snap);
    free(snap);
}
END_TEST

START_TEST(pipelined)
{
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    add_rows(id);
    char req[1024];
    snprintf(req, sizeof req,
             "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
             "POST /v1/models/%lld/train HTTP/1.1\r\nHost: t\r\n"
             "Content-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"steps\":3}"
             "GET /v1/models/%lld HTTP/1.1\r\nHost: t\r\n\r\n"
             "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
             "Content-Length: 5\r\n\r\n{bad}"
             "GET /v1/models/%lld/history HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
             (long long)id, (long long)id, (long long)id);
    raw_read_t rr;
    raw_exchange(req, strlen(req), 5, &rr);
    ck_assert_int_eq(rr.n, 5);
    static const int want[] = {200, 200, 200, 400, 200};
    for (int i = 0; i < 5; ++i)
        ck_assert_msg(rr.r[i].status == want[i], "answer %d: %d, expected %d", i,
                      rr.r[i].status, want[i]);
    /* In order: the train result, then the model at step 3, then its 3 history rows. */
    ck_assert_ptr_nonnull(strstr(rr.r[1].body, "\"steps_run\":3"));
    ck_assert_ptr_nonnull(strstr(rr.r[2].body, "\"step\":3"));
    cJSON *h = cJSON_Parse(rr.r[4].body);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(h, "history")), 3);
    cJSON_Delete(h);
    raw_read_free(&rr);
    check_healthy(NULL);
}
END_TEST

START_TEST(http10_no_host)
{
    char *snap = models_snapshot();
    static const char req[] = "GET /healthz HTTP/1.0\r\n\r\n";
    raw_read_t rr;
    raw_exchange(req, sizeof req - 1, 1, &rr);
    ck_assert_int_eq(rr.n, 1);
    ck_assert_int_eq(rr.r[0].status, 200);
    ck_assert_ptr_nonnull(strstr(rr.r[0].body, "\"status\":\"ok\""));
    raw_read_free(&rr);
    static const char req2[] = "POST /v1/models HTTP/1.0\r\nContent-Type: application/json\r\n"
                               "Content-Length: 28\r\n\r\n{\"kind\":\"linear\",\"inputs\":2}";
    raw_expect(req2, sizeof req2 - 1, 201);
    free(snap);
    snap = models_snapshot();
    /* HTTP/1.1 requires Host: 400 from the HTTP layer. */
    static const char req3[] = "GET /healthz HTTP/1.1\r\n\r\n";
    raw_exchange(req3, sizeof req3 - 1, 1, &rr);
    ck_assert_int_eq(rr.n, 1);
    ck_assert_int_eq(rr.r[0].status, 400);
    raw_read_free(&rr);
    /* Not HTTP at all, and an unknown version. */
    static const char req4[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n";
    raw_exchange(req4, sizeof req4 - 1, 1, &rr);
    check_4xx(&rr);
    raw_read_free(&rr);
    static const char req5[] = "GET /healthz HTTP/9.9\r\nHost: t\r\n\r\n";
    raw_exchange(req5, sizeof req5 - 1, 1, &rr);
    ck_assert_msg(rr.n == 0 || rr.r[0].status != 500, "HTTP/9.9: 500");
    ck_assert_msg(rr.n == 0 || rr.r[0].status < 500 || rr.r[0].status == 505,
                  "HTTP/9.9: status %d", rr.r[0].status);
    raw_read_free(&rr);
    check_healthy(snap);
    free(snap);
}
END_TEST


/* One request on a fresh connection, read until the server closes it (at most 5 s): exactly
 * one answer with `status` and error `code`, and the connection closed. */
static void one_answer_then_close(const char *req, int status, const char *code)
{
    int fd = raw_connect();
    raw_send(fd, req, strlen(req));
    int closed = 0;
    char *text = raw_slurp(fd, NULL, 5000, &closed);
    close(fd);
    ck_assert_msg(closed, "the connection stayed open after: %s", text);
    ck_assert_msg(count_str(text, "HTTP/1.1 ") == 1, "want one status line: %s", text);
    int got = 0;
    sscanf(text, "HTTP/1.1 %d", &got);
    ck_assert_msg(got == status, "want %d: %s", status, text);
    char *body = strstr(text, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    check_error(body + 4, code, NULL);
    free(text);
}

START_TEST(transfer_encoding)
{
    char *snap = models_snapshot();
    /* RFC 9112 6.1: both headers is a smuggling split; read as chunked, the body here would
     * create a model and keep the connection for the bytes after it. */
    one_answer_then_close(
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        "1c\r\n{\"kind\":\"linear\",\"inputs\":2}\r\n0\r\n\r\n"
        "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        400, "invalid_argument");
    check_healthy(snap);
    one_answer_then_close(
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 28\r\nTransfer-Encoding: chunked\r\n\r\n"
        "{\"kind\":\"linear\",\"inputs\":2}",
        400, "invalid_argument");
    check_healthy(snap);
    /* A coding libmicrohttpd cannot read: answered, not left hanging. */
    one_answer_then_close(
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: gzip\r\n\r\n{\"kind\":\"linear\",\"inputs\":2}",
        501, "not_supported");
    check_healthy(snap);
    /* RFC 9112 5.1: whitespace before the colon. libmicrohttpd keeps it in the name, so these
     * were once framed by the other header (or by none) and the body bytes left on the
     * connection, while a proxy in front may read them the other way. */
    one_answer_then_close(
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding : chunked\r\nContent-Length: 28\r\n\r\n"
        "{\"kind\":\"linear\",\"inputs\":2}",
        400, "invalid_argument");
    one_answer_then_close(
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length\t: 28\r\n\r\n{\"kind\":\"linear\",\"inputs\":2}",
        400, "invalid_argument");
    /* RFC 9112 6.1: HTTP/1.0 has no Transfer-Encoding; read as chunked, the connection was
     * once kept for the bytes after the body. */
    one_answer_then_close(
        "POST /v1/models HTTP/1.0\r\nConnection: keep-alive\r\nContent-Type: application/json"
        "\r\nTransfer-Encoding: chunked\r\n\r\n1c\r\n{\"kind\":\"linear\",\"inputs\":2}\r\n0\r\n\r\n"
        "GET /healthz HTTP/1.0\r\n\r\n",
        400, "invalid_argument");
    /* RFC 9112 3.2: two Host fields are refused, also from HTTP/1.0. */
    one_answer_then_close("GET /healthz HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", 400,
                          "invalid_argument");
    one_answer_then_close("GET /healthz HTTP/1.0\r\nHost: t\r\nhost: t\r\n\r\n", 400,
                          "invalid_argument");
    check_healthy(snap);
    /* chunked alone is fine. */
    static const char ok[] =
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n1c\r\n{\"kind\":\"linear\",\"inputs\":2}\r\n0\r\n\r\n";
    raw_expect(ok, sizeof ok - 1, 201);
    free(snap);
}
END_TEST

START_TEST(half_close)
{
    char *snap = models_snapshot();
    /* Part of a body, then the client closes its sending side: the rest can never come, so the
     * server closes at once rather than after --idle-timeout (30 s here). Sent in one write, as
     * a client that writes and shuts down does. */
    static const char part[] =
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n{\"kind\":\"linear\"";
    static const char none[] =
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n";
    const char *reqs[] = {part, none};
    for (int i = 0; i < 2; ++i) {
        int fd = raw_connect();
        raw_send(fd, reqs[i], strlen(reqs[i]));
        shutdown(fd, SHUT_WR);
        int64_t t0 = now_ms();
        int closed = 0;
        char *text = raw_slurp(fd, NULL, 10000, &closed);
        int64_t ms = now_ms() - t0;
        close(fd);
        /* With part of the body the server knows at once; with none, libmicrohttpd may still
         * hold it, so it waits a second. */
        int64_t max_ms = i == 0 ? 500 : 3000;
        ck_assert_msg(closed && ms < max_ms, "case %d: closed=%d after %lld ms", i, closed,
                      (long long)ms);
        ck_assert_msg(strstr(text, "HTTP/1.1 2") == NULL, "case %d acted on: %s", i, text);
        free(text);
        check_healthy(snap);
    }
    free(snap);
    /* A complete body followed by the same shutdown is still answered. */
    static const char whole[] =
        "POST /v1/models HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 28\r\n\r\n{\"kind\":\"linear\",\"inputs\":2}";
    int fd = raw_connect();
    raw_send(fd, whole, sizeof whole - 1);
    shutdown(fd, SHUT_WR);
    int closed = 0;
    char *text = raw_slurp(fd, NULL, 5000, &closed);
    close(fd);
    ck_assert_msg(strncmp(text, "HTTP/1.1 201 ", 13) == 0, "answer: %s", text);
    free(text);
}
END_TEST

/* `method path` on a fresh connection: the one answer (status, headers, body). */
static void raw_call(const char *method, const char *path, raw_read_t *rr)
{
    char req[512];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\n\r\n", method, path);
    raw_exchange(req, (size_t)n, 1, rr);
    ck_assert_msg(rr->n == 1, "%s %s: no answer", method, path);
}

/* `method path` must be 400 invalid_argument naming `field`. */
static void raw_call_invalid(const char *method, const char *path, const char *field)
{
    raw_read_t rr;
    raw_call(method, path, &rr);
    ck_assert_msg(rr.r[0].status == 400, "%s %s: %d", method, path, rr.r[0].status);
    check_error(rr.r[0].body, "invalid_argument", field);
    raw_read_free(&rr);
}

static int64_t batch_count(int64_t id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld/batches", (long long)id);
    cJSON *j = it_call("GET", path, NULL, 200);
    int n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "batches"));
    cJSON_Delete(j);
    return n;
}

START_TEST(encoded_path)
{
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    add_rows(id);
    add_rows(id);
    char path[128];
    raw_read_t rr;
    /* %00 once cut the path: this deleted all of model id. */
    snprintf(path, sizeof path, "/v1/models/%lld%%00/batches/1", (long long)id);
    raw_call_invalid("DELETE", path, "path");
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    cJSON_Delete(it_call("GET", path, NULL, 200));
    ck_assert_int_eq(batch_count(id), 2);
    /* %2F once worked as a separator. */
    const char *fmts[] = {"/v1/models%%2F%lld", "/v1/models%%2f%lld",
                          "/v1/models/%lld%%2Fbatches"};
    for (int i = 0; i < 3; ++i) {
        snprintf(path, sizeof path, fmts[i], (long long)id);
        raw_call_invalid("GET", path, "path");
    }
    /* Other escapes still decode: %76 is 'v'. */
    snprintf(path, sizeof path, "/%%761/models/%lld", (long long)id);
    raw_call("GET", path, &rr);
    ck_assert_int_eq(rr.r[0].status, 200);
    raw_read_free(&rr);
}
END_TEST

/* `head` (with the model id for its %lld), a raw NUL byte, then `tail`, on a fresh connection:
 * the one answer. */
static void raw_call_nul(const char *head, int64_t id, const char *tail, raw_read_t *rr)
{
    char req[256];
    int n = snprintf(req, sizeof req, head, (long long)id);
    ck_assert(n > 0 && (size_t)n + 1 + strlen(tail) < sizeof req);
    req[n++] = '\0';
    memcpy(req + n, tail, strlen(tail));
    raw_exchange(req, (size_t)n + strlen(tail), 1, rr);
    ck_assert_msg(rr->n == 1, "%s\\0%s: no answer", head, tail);
}

/* A raw NUL byte in the request line, not percent-encoded: libmicrohttpd hands the target
 * over as a C string, so it once cut the path as %00 did, and this deleted all of model id. */
START_TEST(raw_nul_in_target)
{
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    add_rows(id);
    add_rows(id);
    static const char *const parts[][2] = {
        {"DELETE /v1/models/%lld", "/batches/1 HTTP/1.1\r\nHost: t\r\n\r\n"},
        {"DELETE /v1/models/%lld", "HTTP/1.1 HTTP/1.1\r\nHost: t\r\n\r\n"},
        {"DELETE /v1/models/%lld?x", " HTTP/1.1\r\nHost: t\r\n\r\n"},
        {"GET /v1/models/%lld/batches", " HTTP/1.1\r\nHost: t\r\n\r\n"},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; ++i) {
        raw_read_t rr;
        raw_call_nul(parts[i][0], id, parts[i][1], &rr);
        ck_assert_msg(rr.r[0].status == 400, "%s\\0%s: %d", parts[i][0], parts[i][1],
                      rr.r[0].status);
        check_error(rr.r[0].body, "invalid_argument", "path");
        raw_read_free(&rr);
    }
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    cJSON_Delete(it_call("GET", path, NULL, 200));
    ck_assert_int_eq(batch_count(id), 2);
}
END_TEST

START_TEST(unknown_query)
{
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    add_rows(id);
    char path[128];
    raw_call_invalid("GET", "/v1/models?limit=2&colour=red", "colour");
    raw_call_invalid("GET", "/healthz?verbose", "verbose");
    /* A NUL would cut the value for every reader: limit=1%00000 is not limit=1. */
    raw_call_invalid("GET", "/v1/models?limit=1%00000", "limit");
    /* A repeated parameter is refused, not read as whichever came first. */
    raw_call_invalid("GET", "/v1/models?limit=2&limit=3", "limit");
    /* A value without a name is refused; an empty segment names nothing and is skipped. */
    raw_call_invalid("GET", "/v1/cluster?=x", "query");
    raw_call_invalid("GET", "/v1/models?limit=2&=3", "query");
    it_call_free("GET", "/v1/models?&limit=2", NULL, 200);
    snprintf(path, sizeof path, "/v1/models/%lld/export?format=onnx&format=json", (long long)id);
    raw_call_invalid("GET", path, "format");
    snprintf(path, sizeof path, "/v1/models/%lld/export?fmt=json", (long long)id);
    raw_call_invalid("GET", path, "fmt");
    /* A batch upload with an unknown parameter stores nothing. */
    snprintf(path, sizeof path, "/v1/models/%lld/batches?sheet=2", (long long)id);
    it_call_t c = {.method = "POST", .path = path, .content_type = "text/csv",
                   .body = "1,2,3\n4,5,6\n"};
    it_resp_t r;
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_int_eq(r.status, 400);
    check_error(r.body, "invalid_argument", "sheet");
    it_resp_free(&r);
    ck_assert_int_eq(batch_count(id), 1);
    snprintf(path, sizeof path, "/v1/models/%lld/batches?split=validation&split=train",
             (long long)id);
    c.path = path;
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_int_eq(r.status, 400);
    check_error(r.body, "invalid_argument", "split");
    it_resp_free(&r);
    ck_assert_int_eq(batch_count(id), 1);
    /* Declared parameters still work. */
    snprintf(path, sizeof path, "/v1/models/%lld/batches?header=false", (long long)id);
    c.path = path;
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_int_eq(r.status, 201);
    it_resp_free(&r);
    ck_assert_int_eq(batch_count(id), 2);
}
END_TEST

START_TEST(head_without_work)
{
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    char path[128];
    raw_read_t rr;
    /* GET's work (a whole backup, a subscription) is not HEAD's. */
    snprintf(path, sizeof path, "/v1/models/%lld/events", (long long)id);
    const char *refused[] = {"/v1/backup", path};
    for (int i = 0; i < 2; ++i) {
        int fd = raw_connect();
        char req[160];
        int n = snprintf(req, sizeof req, "HEAD %s HTTP/1.1\r\nHost: t\r\n\r\n", refused[i]);
        raw_send(fd, req, (size_t)n);
        char *head = raw_slurp(fd, "\r\n\r\n", 5000, NULL);   /* HEAD: no body follows */
        close(fd);
        ck_assert_msg(strncmp(head, "HTTP/1.1 405 ", 13) == 0, "HEAD %s: %s", refused[i], head);
        ck_assert_msg(strstr(head, "\r\nAllow: GET\r\n") != NULL, "HEAD %s: %s", refused[i],
                      head);
        free(head);
    }
    /* Elsewhere HEAD is GET without the body. */
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    it_call_t c = {.method = "HEAD", .path = path};
    it_resp_t r;
    ck_assert_int_eq(it_do(&c, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(r.len, 0);
    it_resp_free(&r);
    /* And the Allow of a refused HEAD's route leaves HEAD out. */
    raw_call("PUT", "/v1/backup", &rr);
    ck_assert_int_eq(rr.r[0].status, 405);
    ck_assert_msg(strstr(rr.r[0].head, "\r\nAllow: GET\r\n") != NULL, "%s", rr.r[0].head);
    raw_read_free(&rr);
}
END_TEST

/* ---- event streams and the access log (a daemon of their own) -------------------------------- */

static void setup_streams(void)
{
    /* Four connections, two streams: what is left must do for /healthz and API calls. */
    const char *extra[] = {"--log-level", "info", "--threads", "1", "--max-connections", "4",
                           "--max-streams", "2", NULL};
    it_opts_t o = {.extra = extra, .capture_stderr = 1};
    ck_assert_msg(it_start_opts(&d, it_exe, &o) == 0, "daemon did not start");
}

/* Open an event stream of model `id` on a new connection: its socket once the stream's first
 * comment has come, or -1 with the answer's status in *status when the server refused it. */
static int stream_open(int64_t id, int *status)
{
    int fd = raw_connect();
    char req[128];
    int n = snprintf(req, sizeof req, "GET /v1/models/%lld/events HTTP/1.1\r\nHost: t\r\n\r\n",
                     (long long)id);
    raw_send(fd, req, (size_t)n);
    char *text = raw_slurp(fd, "\r\n\r\n", 5000, NULL);
    *status = 0;
    sscanf(text, "HTTP/1.1 %d", status);
    if (*status == 200) {
        if (strstr(text, ": connected") == NULL) {
            free(text);
            text = raw_slurp(fd, ": connected", 5000, NULL);
            ck_assert_msg(strstr(text, ": connected") != NULL, "stream: %s", text);
        }
        free(text);
        return fd;
    }
    free(text);
    close(fd);
    return -1;
}

START_TEST(stream_of_deleted_model)
{
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    int status = 0;
    int fd = stream_open(id, &status);
    ck_assert_int_eq(status, 200);
    char path[64];
    snprintf(path, sizeof path, "/v1/models/%lld", (long long)id);
    it_call_free("DELETE", path, NULL, 204);
    int64_t t0 = now_ms();
    int closed = 0;
    char *text = raw_slurp(fd, NULL, 10000, &closed);
    int64_t ms = now_ms() - t0;
    close(fd);
    char want[96];
    snprintf(want, sizeof want, "event: deleted\ndata: {\"model_id\":%lld}\n\n", (long long)id);
    ck_assert_msg(strstr(text, want) != NULL, "no deleted event: %s", text);
    ck_assert_msg(closed && ms < 3000, "stream not closed (%d) after %lld ms", closed,
                  (long long)ms);
    /* The chunked body ends properly: the last chunk follows the event. */
    ck_assert_msg(strstr(strstr(text, want), "\r\n0\r\n\r\n") != NULL, "no last chunk: %s", text);
    free(text);
}
END_TEST

START_TEST(stream_limit)
{
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    int status = 0;
    int a = stream_open(id, &status);
    ck_assert_int_eq(status, 200);
    int b = stream_open(id, &status);
    ck_assert_int_eq(status, 200);
    /* One more: 429, with the contract's error body. */
    char req[128];
    int n = snprintf(req, sizeof req, "GET /v1/models/%lld/events HTTP/1.1\r\nHost: t\r\n\r\n",
                     (long long)id);
    raw_read_t rr;
    raw_exchange(req, (size_t)n, 1, &rr);
    ck_assert_int_eq(rr.n, 1);
    ck_assert_int_eq(rr.r[0].status, 429);
    check_error(rr.r[0].body, "too_many_requests", NULL);
    ck_assert_ptr_nonnull(strstr(rr.r[0].head, "\r\nRetry-After: 1\r\n"));
    raw_read_free(&rr);
    /* The health probe still gets through, on a connection of its own. */
    raw_call("GET", "/healthz", &rr);
    ck_assert_int_eq(rr.r[0].status, 200);
    raw_read_free(&rr);
    /* A client that leaves an idle stream frees its slot within about a second, not at the
     * next keep-alive (15 s). */
    close(a);
    int64_t t0 = now_ms();
    int c = -1;
    while (c < 0 && now_ms() - t0 < 5000) {
        c = stream_open(id, &status);
        if (c < 0) {
            ck_assert_int_eq(status, 429);
            it_sleep_ms(100);
        }
    }
    int64_t ms = now_ms() - t0;
    ck_assert_msg(c >= 0 && ms < 2000, "slot free after %lld ms", (long long)ms);
    close(b);
    close(c);
}
END_TEST

START_TEST(access_log_raw_path)
{
    int64_t id = create_model("{\"kind\":\"linear\",\"inputs\":2}");
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%lld%%00/batches/1", (long long)id);
    raw_read_t rr;
    raw_call("DELETE", path, &rr);
    ck_assert_int_eq(rr.r[0].status, 400);
    raw_read_free(&rr);
    /* A raw NUL is shown as %00: the line says what was asked, not the path it would cut to. */
    raw_call_nul("DELETE /v1/models/%lld", id, "/batches/2 HTTP/1.1\r\nHost: t\r\n\r\n", &rr);
    ck_assert_int_eq(rr.r[0].status, 400);
    raw_read_free(&rr);
    ck_assert_int_eq(it_stop(&d), 0);
    char *log = it_read_log(&d);
    char want[200];
    snprintf(want, sizeof want, "http method=DELETE path=%s status=400 ", path);
    ck_assert_msg(strstr(log, want) != NULL, "no '%s' in the log:\n%s", want, log);
    snprintf(want, sizeof want, "http method=DELETE path=/v1/models/%lld%%00/batches/2 status=400 ",
             (long long)id);
    ck_assert_msg(strstr(log, want) != NULL, "no '%s' in the log:\n%s", want, log);
    free(log);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("badhttp");
    TCase *tc = tcase_create("badhttp");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, truncated_body);
    tcase_add_test(tc, slow_drip);
    tcase_add_test(tc, wrong_content_length);
    tcase_add_test(tc, invalid_utf8);
    tcase_add_test(tc, nul_bytes);
    tcase_add_test(tc, body_on_get);
    tcase_add_test(tc, header_flood);
    tcase_add_test(tc, pipelined);
    tcase_add_test(tc, http10_no_host);
    tcase_add_test(tc, transfer_encoding);
    tcase_add_test(tc, half_close);
    tcase_add_test(tc, encoded_path);
    tcase_add_test(tc, raw_nul_in_target);
    tcase_add_test(tc, unknown_query);
    tcase_add_test(tc, head_without_work);
    suite_add_tcase(s, tc);
    TCase *ts = tcase_create("streams");
    tcase_add_checked_fixture(ts, setup_streams, teardown);
    tcase_set_timeout(ts, 60);
    tcase_add_test(ts, stream_of_deleted_model);
    tcase_add_test(ts, stream_limit);
    tcase_add_test(ts, access_log_raw_path);
    suite_add_tcase(s, ts);
    return it_run(s);
}
