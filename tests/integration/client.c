/* tests/integration/client.c -- spawn neurond, talk to it with libcurl. */
#define _GNU_SOURCE   /* nftw, strndup, mkdtemp */
#include "client.h"

#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *it_exe;
const char *it_golden;

static CURL *it_curl;
static char it_base[64];

void it_init(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <path to neurond> [golden dir]\n", argv[0]);
        exit(2);
    }
    it_exe = argv[1];
    it_golden = argc > 2 ? argv[2] : ".";
    /* Here, before any test starts a thread: curl_global_init is not thread-safe. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* An unlinked temporary file: each test runs in a child process of Check's, and a skip must
 * reach the parent. A child appends one line per skip; it_run counts the bytes. */
static int it_skip_fd = -1;

void it_skip_note(const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    fprintf(stderr, "SKIP %s\n", why);
    ck_assert_msg(it_skip_fd >= 0, "IT_SKIP outside it_run");
    ck_assert_msg(write(it_skip_fd, "s\n", 2) == 2, "recording a skip: %s", strerror(errno));
}

TCase *it_separate_case(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_tags(tc, "separate");
    suite_add_tcase(s, tc);
    return tc;
}

int it_run(Suite *s)
{
    char path[] = "/tmp/neurond-it-skips-XXXXXX";
    it_skip_fd = mkstemp(path);
    if (it_skip_fd < 0) {
        fprintf(stderr, "it_run: mkstemp: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }
    unlink(path);
    if (fcntl(it_skip_fd, F_SETFL, O_APPEND) < 0) {
        fprintf(stderr, "it_run: fcntl: %s\n", strerror(errno));
        close(it_skip_fd);
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    off_t skipped = lseek(it_skip_fd, 0, SEEK_END) / 2;
    close(it_skip_fd);
    it_skip_fd = -1;
    if (it_curl != NULL)
        curl_easy_cleanup(it_curl);
    it_curl = NULL;
    curl_global_cleanup();
    if (failed != 0 || skipped < 0)
        return EXIT_FAILURE;
    if (skipped > 0) {
        fprintf(stderr, "%lld test(s) skipped: reported to ctest as not run\n",
                (long long)skipped);
        return IT_EXIT_SKIPPED;
    }
    return EXIT_SUCCESS;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read the daemon's stdout until the "listening on" line; returns the port or -1. */
static int read_port(it_daemon_t *d)
{
    static const char marker[] = "neurond listening on ";
    char buf[4096];
    size_t used = 0;
    int64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline && used < sizeof buf - 1) {
        struct pollfd p = {.fd = d->out_fd, .events = POLLIN};
        int r = poll(&p, 1, 100);
        if (r < 0 && errno != EINTR)
            return -1;
        if (r > 0) {
            ssize_t n = read(d->out_fd, buf + used, sizeof buf - 1 - used);
            if (n <= 0)
                return -1;             /* the daemon closed stdout: it exited */
            used += (size_t)n;
            buf[used] = '\0';
            char *m = strstr(buf, marker);
            char *nl = m != NULL ? strchr(m, '\n') : NULL;
            if (nl != NULL) {
                *nl = '\0';
                char *colon = strrchr(m, ':');
                return colon != NULL ? atoi(colon + 1) : -1;
            }
        }
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            return -1;
        }
    }
    return -1;
}

static int spawn(it_daemon_t *d)
{
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    const char *argv[IT_MAX_ARGS + 8];
    int n = 0;
    argv[n++] = d->exe;
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--db";
    argv[n++] = d->db;
    for (int i = 0; i < d->n_extra; ++i)
        argv[n++] = d->extra[i];
    argv[n] = NULL;
    int log_fd = -1;
    if (d->log[0] != '\0' &&
        (log_fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        if (log_fd >= 0)
            close(log_fd);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        if (log_fd >= 0)
            dup2(log_fd, STDERR_FILENO);
        for (int i = 0; i < d->n_env; ++i)
            putenv(d->env[i]);
        close(fds[0]);
        close(fds[1]);
        execv(d->exe, (char *const *)argv);
        fprintf(stderr, "it: cannot exec %s: %s\n", d->exe, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    if (log_fd >= 0)
        close(log_fd);
    d->pid = pid;
    d->out_fd = fds[0];
    d->port = read_port(d);
    if (d->port <= 0) {
        fprintf(stderr, "it: %s did not report a listening port\n", d->exe);
        if (d->pid > 0)
            it_kill9(d);
        close(d->out_fd);
        d->out_fd = -1;
        return -1;
    }
    snprintf(it_base, sizeof it_base, "http://127.0.0.1:%d", d->port);
    return 0;
}

int it_start(it_daemon_t *d, const char *exe, const char *const *extra)
{
    it_opts_t o = {.extra = extra};
    return it_start_opts(d, exe, &o);
}

int it_backend_pg(void)
{
    const char *pg = getenv("NEUROND_TEST_PG");
    return pg != NULL && pg[0] != '\0';
}

/*
 * A new, empty database in the test cluster of NEUROND_TEST_PG (tests/pg/with_postgres.sh),
 * its address in `out`: every daemon a test starts gets a database of its own, as it gets a
 * SQLite file of its own otherwise. The name is ours (pid and a counter), never input.
 */
static int pg_fresh_database(char *out, size_t size)
{
    static int counter;
    const char *admin = getenv("NEUROND_TEST_PG");
    const char *slash = strrchr(admin, '/');
    char name[64], sql[128];
    snprintf(name, sizeof name, "it_%d_%d", (int)getpid(), ++counter);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    PGconn *pg = PQconnectdb(admin);
    PGresult *res = PQstatus(pg) == CONNECTION_OK ? PQexec(pg, sql) : NULL;
    int ok = res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "it: cannot create database %s: %s", name, PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
    if (!ok || slash == NULL ||
        (size_t)snprintf(out, size, "%.*s/%s", (int)(slash - admin), admin, name) >= size)
        return -1;
    return 0;
}

int it_start_opts(it_daemon_t *d, const char *exe, const it_opts_t *opts)
{
    const char *const *extra = opts != NULL ? opts->extra : NULL;
    memset(d, 0, sizeof *d);
    d->out_fd = -1;
    snprintf(d->exe, sizeof d->exe, "%s", exe);
    const char *tmp = getenv("TMPDIR");
    snprintf(d->dir, sizeof d->dir, "%s/neurond-it-XXXXXX", tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(d->dir) == NULL) {
        fprintf(stderr, "it: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    if (opts != NULL && opts->db != NULL)
        snprintf(d->db, sizeof d->db, "%s", opts->db);
    else if (snprintf(d->db, sizeof d->db, "%s/t.db", d->dir) < 0 ||
             (it_backend_pg() && pg_fresh_database(d->db, sizeof d->db) < 0))
        return -1;
    for (; extra != NULL && extra[d->n_extra] != NULL && d->n_extra < IT_MAX_ARGS; d->n_extra++)
        d->extra[d->n_extra] = strdup(extra[d->n_extra]);
    const char *const *env = opts != NULL ? opts->env : NULL;
    for (; env != NULL && env[d->n_env] != NULL && d->n_env < IT_MAX_ARGS; d->n_env++)
        d->env[d->n_env] = strdup(env[d->n_env]);
    if (opts != NULL && opts->capture_stderr)
        snprintf(d->log, sizeof d->log, "%s/stderr.log", d->dir);
    return spawn(d);
}

int it_start_again(it_daemon_t *d)
{
    if (d->pid > 0)
        return -1;
    if (d->out_fd >= 0) {
        close(d->out_fd);
        d->out_fd = -1;
    }
    return spawn(d);
}

int it_restart(it_daemon_t *d)
{
    if (it_stop(d) != 0)
        return -1;
    return it_start_again(d);
}

static int reap(it_daemon_t *d, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid)
            break;
        if (r < 0 || now_ms() > deadline)
            return -1;
        usleep(5000);
    }
    d->pid = 0;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int it_stop(it_daemon_t *d)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    int rc = reap(d, 10000);
    if (rc < 0) {
        it_kill9(d);
        return -1;
    }
    return rc;
}

void it_kill9(it_daemon_t *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    int status;
    waitpid(d->pid, &status, 0);
    d->pid = 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void it_cleanup(it_daemon_t *d)
{
    it_kill9(d);
    if (d->out_fd >= 0) {
        close(d->out_fd);
        d->out_fd = -1;
    }
    if (d->dir[0] != '\0')
        nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    for (int i = 0; i < d->n_extra; ++i)
        free(d->extra[i]);
    d->n_extra = 0;
    for (int i = 0; i < d->n_env; ++i)
        free(d->env[i]);
    d->n_env = 0;
    d->log[0] = '\0';
    d->dir[0] = '\0';
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

typedef struct grow {
    char *p;
    size_t len;
} grow_t;

static size_t on_data(char *ptr, size_t size, size_t n, void *ud)
{
    grow_t *g = ud;
    size_t add = size * n;
    char *p = realloc(g->p, g->len + add + 1);
    if (p == NULL)
        return 0;
    memcpy(p + g->len, ptr, add);
    g->p = p;
    g->len += add;
    g->p[g->len] = '\0';
    return add;
}

typedef struct upload {
    const char *p;
    size_t left;
} upload_t;

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    upload_t *u = ud;
    size_t k = size * n < u->left ? size * n : u->left;
    memcpy(buf, u->p, k);
    u->p += k;
    u->left -= k;
    return k;
}

const char *it_base_url(void)
{
    return it_base;
}

void it_use(const it_daemon_t *d)
{
    snprintf(it_base, sizeof it_base, "http://127.0.0.1:%d", d->port);
}

void it_set_base_url(const char *url)
{
    snprintf(it_base, sizeof it_base, "%s", url);
}

void it_resp_free(it_resp_t *r)
{
    if (r == NULL)
        return;
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof *r);
}

int it_do(const it_call_t *call, it_resp_t *out)
{
    memset(out, 0, sizeof *out);
    if (it_curl == NULL && (it_curl = curl_easy_init()) == NULL)
        return -1;
    CURL *c = it_curl;
    curl_easy_reset(c);            /* keeps the connection cache: keep-alive across calls */
    char url[4096];
    snprintf(url, sizeof url, "%s%s", it_base, call->path);
    grow_t body = {0}, hdrs = {0};
    upload_t up = {0};
    struct curl_slist *h = NULL;
    char line[512];
    if (call->content_type != NULL) {
        snprintf(line, sizeof line, "Content-Type: %s", call->content_type);
        h = curl_slist_append(h, line);
    }
    for (const char *const *x = call->headers; x != NULL && *x != NULL; ++x)
        h = curl_slist_append(h, *x);
    h = curl_slist_append(h, "Expect:");   /* no 100-continue round trip */
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, call->method);
    if (strcmp(call->method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (call->body != NULL) {
        size_t len = call->len != 0 ? call->len : strlen(call->body);
        if (call->chunked) {
            up.p = call->body;
            up.left = len;
            h = curl_slist_append(h, "Transfer-Encoding: chunked");
            curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(c, CURLOPT_READDATA, &up);
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, call->method);
        } else {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, call->body);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        }
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hdrs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    out->body = body.p != NULL ? body.p : strdup("");
    out->len = body.len;
    out->headers = hdrs.p != NULL ? hdrs.p : strdup("");
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &out->connects);
    if (rc != CURLE_OK) {
        fprintf(stderr, "it: %s %s: %s\n", call->method, call->path, curl_easy_strerror(rc));
        return out->status != 0 ? 0 : -1;
    }
    return 0;
}

int it_request(const char *method, const char *path, const char *content_type, const char *body,
               long *status, char **resp_body, char **headers)
{
    it_call_t call = {.method = method, .path = path, .content_type = content_type, .body = body};
    it_resp_t r;
    int rc = it_do(&call, &r);
    if (status != NULL)
        *status = r.status;
    if (resp_body != NULL) {
        *resp_body = r.body;
        r.body = NULL;
    }
    if (headers != NULL) {
        *headers = r.headers;
        r.headers = NULL;
    }
    it_resp_free(&r);
    return rc;
}

cJSON *it_json(const char *method, const char *path, const char *body, long *status)
{
    char *text = NULL;
    if (it_request(method, path, body != NULL ? "application/json" : NULL, body, status, &text,
                   NULL) < 0) {
        free(text);
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

char *it_header(const char *headers, const char *name)
{
    /* Only the last block counts (a 100 Continue may come first). */
    const char *block = headers, *p;
    while ((p = strstr(block, "\r\n\r\n")) != NULL && p[4] != '\0')
        block = p + 4;
    size_t nlen = strlen(name);
    char *found = NULL;
    for (const char *line = block; *line != '\0';) {
        const char *eol = strstr(line, "\r\n");
        size_t len = eol != NULL ? (size_t)(eol - line) : strlen(line);
        if (len > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                ++v;
            free(found);
            found = strndup(v, len - (size_t)(v - line));
        }
        if (eol == NULL)
            break;
        line = eol + 2;
    }
    return found;
}

char *it_read_log(const it_daemon_t *d)
{
    FILE *f = d->log[0] != '\0' ? fopen(d->log, "rb") : NULL;
    grow_t g = {0};
    char buf[4096];
    size_t n;
    while (f != NULL && (n = fread(buf, 1, sizeof buf, f)) > 0) {
        char *p = realloc(g.p, g.len + n + 1);
        if (p == NULL)
            break;
        memcpy(p + g.len, buf, n);
        g.p = p;
        g.len += n;
        g.p[g.len] = '\0';
    }
    if (f != NULL)
        fclose(f);
    return g.p != NULL ? g.p : strdup("");
}

char *it_get_text(const char *path)
{
    long status = 0;
    char *body = NULL;
    ck_assert_int_eq(it_request("GET", path, NULL, NULL, &status, &body, NULL), 0);
    ck_assert_msg(status == 200, "GET %s: %ld %s", path, status, body);
    return body;
}

cJSON *it_call(const char *method, const char *path, const char *body, long want)
{
    long status = 0;
    char *text = NULL;
    it_request(method, path, body != NULL ? "application/json" : NULL, body, &status, &text,
               NULL);
    ck_assert_msg(status == want, "%s %s: status %ld, expected %ld: %s", method, path, status,
                  want, text != NULL ? text : "");
    cJSON *j = cJSON_Parse(text != NULL ? text : "");
    free(text);
    return j;
}

void it_call_free(const char *method, const char *path, const char *body, long want)
{
    cJSON_Delete(it_call(method, path, body, want));
}

double it_num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsNumber(v), "%s is not a number", key);
    return v->valuedouble;
}

int64_t it_create_model(const char *spec)
{
    cJSON *m = it_call("POST", "/v1/models", spec, 201);
    int64_t id = (int64_t)it_num(m, "id");
    cJSON_Delete(m);
    return id;
}

int64_t it_now_ms(void)
{
    return now_ms();
}

const char *it_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(cJSON_IsString(v), "%s is not a string", key);
    return v->valuestring;
}

void it_finish(it_daemon_t *d)
{
    int rc = d->pid > 0 ? it_stop(d) : 0;
    it_cleanup(d);
    ck_assert_msg(rc == 0, "daemon exit status %d on SIGTERM", rc);
}

long it_post_thread(const char *path, const char *body, char **answer)
{
    return it_http_thread(it_base, "POST", path, body, answer);
}

long it_http_thread(const char *base, const char *method, const char *path, const char *body,
                    char **answer)
{
    *answer = NULL;
    CURL *c = curl_easy_init();
    if (c == NULL)
        return 0;
    char url[4096];
    snprintf(url, sizeof url, "%s%s", base, path);
    struct curl_slist *h =
        body != NULL ? curl_slist_append(NULL, "Content-Type: application/json") : NULL;
    grow_t got = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &got);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    *answer = got.p != NULL ? got.p : strdup("");
    return status;
}

static void *async_main(void *arg)
{
    it_async_t *a = arg;
    a->status = it_http_thread(a->base, a->method, a->path, a->body[0] != '\0' ? a->body : NULL,
                               &a->answer);
    return NULL;
}

void it_async_start(it_async_t *a)
{
    a->status = 0;
    a->answer = NULL;
    ck_assert_int_eq(pthread_create(&a->thread, NULL, async_main, a), 0);
}

void it_async_join(it_async_t *a)
{
    ck_assert_int_eq(pthread_join(a->thread, NULL), 0);
}

void it_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int64_t it_submit_job(int64_t model_id, const char *req)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/models/%lld/train", (long long)model_id);
    cJSON *j = it_call("POST", path, req, 202);
    int64_t job = (int64_t)it_num(j, "id");
    cJSON_Delete(j);
    return job;
}

int it_pg_only(void)
{
    if (it_backend_pg())
        return 0;
    printf("SKIP: needs a PostgreSQL test cluster (run under tests/pg/with_postgres.sh)\n");
    return IT_EXIT_SKIPPED;
}

/* ---- event streams ------------------------------------------------------------------------- */

int it_count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; p != NULL && (p = strstr(p, needle)) != NULL; p += strlen(needle))
        ++n;
    return n;
}

static size_t stream_write(char *ptr, size_t size, size_t n, void *ud)
{
    it_stream_t *s = ud;
    size_t add = size * n;
    pthread_mutex_lock(&s->mu);
    char *nb = realloc(s->buf, s->len + add + 1);
    if (nb == NULL) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    s->buf = nb;
    memcpy(s->buf + s->len, ptr, add);
    s->len += add;
    s->buf[s->len] = '\0';
    s->connected = strstr(s->buf, ": connected") != NULL;
    int stop = s->want_done > 0 && it_count(s->buf, "event: done\n") >= s->want_done &&
               (!s->want_keepalive || strstr(s->buf, ": keep-alive\n") != NULL);
    pthread_mutex_unlock(&s->mu);
    return stop ? 0 : add;    /* 0 ends the transfer: the client leaves */
}

static void *stream_main(void *arg)
{
    it_stream_t *s = arg;
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, s->url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 90L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    pthread_mutex_lock(&s->mu);
    s->curl_rc = (int)rc;
    s->status = status;
    s->ended = 1;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void it_stream_open(it_stream_t *s, const char *base_url, int64_t id, int want_done,
                    int want_keepalive)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->want_done = want_done;
    s->want_keepalive = want_keepalive;
    snprintf(s->url, sizeof s->url, "%s/v1/models/%lld/events", base_url, (long long)id);
    ck_assert_int_eq(pthread_create(&s->thread, NULL, stream_main, s), 0);
    for (int waited = 0;; waited += 10) {
        pthread_mutex_lock(&s->mu);
        int connected = s->connected, ended = s->ended;
        pthread_mutex_unlock(&s->mu);
        if (connected)
            return;
        ck_assert_msg(!ended && waited < 10000, "event stream %s did not connect", s->url);
        it_sleep_ms(10);
    }
}

void it_stream_wait(it_stream_t *s, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        pthread_mutex_lock(&s->mu);
        int ended = s->ended;
        pthread_mutex_unlock(&s->mu);
        if (ended)
            break;
        ck_assert_msg(waited < timeout_ms, "stream %s still open after %d ms; got:\n%s", s->url,
                      timeout_ms, s->buf);
        it_sleep_ms(20);
    }
    pthread_join(s->thread, NULL);
    ck_assert_int_eq(s->status, 200);
}

void it_stream_free(it_stream_t *s)
{
    free(s->buf);
    s->buf = NULL;
    pthread_mutex_destroy(&s->mu);
}

int it_stream_events(char *buf, const char **names, const char **data, int max)
{
    int n = 0;
    for (char *p = buf; p != NULL && *p != '\0' && n < max;) {
        char *end = strstr(p, "\n\n");
        if (end == NULL)
            break;
        *end = '\0';
        if (strncmp(p, "event: ", 7) == 0) {
            char *nl = strchr(p, '\n');
            ck_assert_msg(nl != NULL && strncmp(nl + 1, "data: ", 6) == 0, "bad event: %s", p);
            *nl = '\0';
            names[n] = p + 7;
            data[n] = nl + 7;
            ++n;
        }
        p = end + 2;
    }
    return n;
}
