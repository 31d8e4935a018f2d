/* tests/integration/client.h -- drive a real neurond over HTTP from Check tests.
 *
 *     static it_daemon_t d;
 *     static void setup(void) { ck_assert_int_eq(it_start(&d, it_exe, NULL), 0); }
 *     static void teardown(void) { it_cleanup(&d); }
 *
 *     long status;
 *     cJSON *j = it_json("POST", "/v1/models", "{\"kind\":\"linear\",\"inputs\":2}", &status);
 *     ck_assert_int_eq(status, 201);
 *     cJSON_Delete(j);
 *
 * it_start() runs `<exe> --port 0 --db <fresh temp dir>/t.db [extra args]`, reads the port from
 * the "neurond listening on HOST:PORT" line and makes that daemon the target of it_request()
 * and friends. Requests reuse one libcurl handle, so they share a keep-alive connection.
 * main() of each test gets the daemon path as argv[1] and the golden directory as argv[2]:
 * store them in it_exe / it_golden with it_init(argc, argv).
 */
#ifndef ND_IT_CLIENT_H
#define ND_IT_CLIENT_H

#include <check.h>
#include <cjson/cJSON.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define IT_MAX_ARGS 32

typedef struct it_daemon {
    pid_t pid;                 /* 0 when not running */
    int port;
    int out_fd;                /* read end of the daemon's stdout */
    char exe[PATH_MAX];
    char dir[PATH_MAX];        /* temporary directory holding the database */
    char db[PATH_MAX + 16];
    int n_extra;
    char *extra[IT_MAX_ARGS];  /* extra arguments, kept for it_restart() */
    int n_env;
    char *env[IT_MAX_ARGS];    /* "NAME=value" added to the daemon's environment */
    char log[PATH_MAX + 16];   /* "" or the file the daemon's stderr goes to (it_opts_t) */
} it_daemon_t;

/* More ways to start a daemon (it_start_opts); every field may be NULL / 0. */
typedef struct it_opts {
    const char *const *extra;  /* more arguments, NULL-terminated */
    const char *const *env;    /* "NAME=value" entries for the daemon's environment */
    int capture_stderr;        /* send the daemon's stderr to <dir>/stderr.log (d->log) */
    const char *db;            /* serve this database (another daemon's d->db: a replica of it)
                                * instead of a new one */
} it_opts_t;

extern const char *it_exe;     /* argv[1]: path to neurond */
extern const char *it_golden;  /* argv[2]: tests/golden directory */

/* Record argv[1] and argv[2] (exits 2 with a usage line when they are missing) and initialise
 * libcurl. First thing in main(). */
void it_init(int argc, char **argv);

/* What an executable exits with when no test failed but one could not run: ctest's
 * SKIP_RETURN_CODE (tests/CMakeLists.txt), so the run shows "Skipped", never "Passed". */
#define IT_EXIT_SKIPPED 77

/* Run every test of `s`, release libcurl. EXIT_SUCCESS when all passed, IT_EXIT_SKIPPED when
 * none failed but one called IT_SKIP, EXIT_FAILURE otherwise. Last thing in main(). */
int it_run(Suite *s);

/* End the current test as not run, saying why (printf format): for a test that needs what this
 * machine lacks (a privilege, a program). Give such a test its own Check test case and ctest
 * test (tests/CMakeLists.txt), so that its skip does not hide the other tests' results. */
#define IT_SKIP(...)                                                                           \
    do {                                                                                       \
        it_skip_note(__VA_ARGS__);                                                             \
        return;                                                                                \
    } while (0)

/* A new test case of `s` tagged "separate": tests/CMakeLists.txt runs it as a ctest test of its
 * own and the rest of the executable without it. For the tests that may IT_SKIP. Borrowed: the
 * suite owns it. */
TCase *it_separate_case(Suite *s, const char *name);

/* IT_SKIP's record: prints "SKIP <reason>" and notes the skip for it_run (also across Check's
 * fork, through a file it_run opened). */
void it_skip_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Start a daemon on a fresh database. `extra` is a NULL-terminated list of more arguments (or
 * NULL). Returns 0, or -1 (message on stderr) when it did not come up within 10 s. */
int it_start(it_daemon_t *d, const char *exe, const char *const *extra);

/* 1 when the daemons run on PostgreSQL: NEUROND_TEST_PG names a test cluster
 * (tests/pg/with_postgres.sh) and each it_start() gets a fresh database in it (d->db is its
 * address); 0 for the SQLite file <dir>/t.db. */
int it_backend_pg(void);

/* it_start() with environment variables and stderr capture; kept for restarts. */
int it_start_opts(it_daemon_t *d, const char *exe, const it_opts_t *opts);

/* The captured stderr so far (it_opts_t.capture_stderr), new and NUL-terminated; "" when
 * nothing was captured. */
char *it_read_log(const it_daemon_t *d);

/* Stop with SIGTERM and start again on the same database and arguments. Returns 0 or -1. */
int it_restart(it_daemon_t *d);

/* Start again after it_stop()/it_kill9() on the same database. Returns 0 or -1. */
int it_start_again(it_daemon_t *d);

/* SIGTERM, then wait up to 10 s. Returns the exit status (0..255), 128+signal when it died of a
 * signal, or -1 when it had to be killed after the timeout. */
int it_stop(it_daemon_t *d);

/* SIGKILL and reap (simulates a crash). */
void it_kill9(it_daemon_t *d);

/* Kill the daemon if still running and delete its temporary directory. */
void it_cleanup(it_daemon_t *d);

/* One HTTP answer. All pointers new; free with it_resp_free(). */
typedef struct it_resp {
    long status;               /* 0 when the request failed at the transport level */
    char *body;                /* NUL-terminated */
    size_t len;
    char *headers;             /* raw header block(s) of the answer */
    long connects;             /* new connections made for this request (0 = reused) */
} it_resp_t;

void it_resp_free(it_resp_t *r);

typedef struct it_call {
    const char *method;        /* "GET", ... */
    const char *path;          /* "/v1/models?limit=2" */
    const char *content_type;  /* NULL = none */
    const char *body;          /* NULL = none */
    size_t len;                /* body length; 0 = strlen(body) */
    int chunked;               /* send the body with Transfer-Encoding: chunked */
    const char *const *headers;  /* NULL-terminated "Name: value" lines, or NULL */
} it_call_t;

/* Perform a call against the current daemon. Returns 0, or -1 on a transport error. */
int it_do(const it_call_t *call, it_resp_t *out);

/* The simple form: `*resp_body` and `*headers` (either may be NULL to ignore) are new. */
int it_request(const char *method, const char *path, const char *content_type, const char *body,
               long *status, char **resp_body, char **headers);

/* Request with an application/json body (or none when body is NULL) and parse the answer.
 * Returns the parsed JSON (new; cJSON_Delete it) or NULL when the answer is not JSON. */
cJSON *it_json(const char *method, const char *path, const char *body, long *status);

/* Value of header `name` (case-insensitive) in the last answer block of `headers`, new, or
 * NULL when absent. */
char *it_header(const char *headers, const char *name);

/* Base URL of the current daemon, e.g. "http://127.0.0.1:41234". Borrowed. */
const char *it_base_url(void);

/* Send the calls that follow to daemon `d` (the last one started gets them until then). */
void it_use(const it_daemon_t *d);

/* Make `url` (e.g. "http://127.0.0.1:41234", without a trailing slash) the target of
 * it_request() and the calls built on it: for daemons this process did not start, such as the
 * replicas and the load balancer of tests/pg/with_cluster.sh. The next it_start() replaces it. */
void it_set_base_url(const char *url);

/* The body of a GET of `path` that must answer 200, as text (new: free()). Fails the running
 * Check test otherwise. */
char *it_get_text(const char *path);

/* The JSON answer of a call (it_json) that must answer `want`; fails the running Check test
 * otherwise. New (cJSON_Delete it), NULL when the answer is not JSON. */
cJSON *it_call(const char *method, const char *path, const char *body, long want);

/* it_call() with the answer dropped. */
void it_call_free(const char *method, const char *path, const char *body, long want);

/* Member `key` of `o`, which must be a number (fails the running Check test otherwise). */
double it_num(const cJSON *o, const char *key);

/* POST /v1/models with `spec` (must answer 201): the new model's id. */
int64_t it_create_model(const char *spec);

void it_sleep_ms(int ms);

/* Milliseconds on the monotonic clock. */
int64_t it_now_ms(void);

/* Member `key` of `o`, which must be a string (fails the running Check test otherwise).
 * Borrowed from `o`. */
const char *it_str(const cJSON *o, const char *key);

/* SIGTERM the daemon, wait for it, remove its directory: the checked fixtures' teardown. Fails
 * the running Check test unless the daemon exited 0 (under the sanitizers: without a leak). */
void it_finish(it_daemon_t *d);

/* POST `body` (JSON) to `path` of the current daemon from any thread, on a connection of its
 * own; `*answer` is the body (new: free()). Returns the status, 0 on a transport error. */
long it_post_thread(const char *path, const char *body, char **answer);

/* `method` `path` at `base` (a base URL as it_set_base_url takes) with `body` (JSON, or NULL for
 * none), from any thread, on a connection of its own; `*answer` is the body (new: free()).
 * Returns the status, 0 on a transport error. */
long it_http_thread(const char *base, const char *method, const char *path, const char *body,
                    char **answer);

/* A call of it_http_thread() on a thread of its own, for a request that waits while the test
 * goes on: fill base, method, path and body ("" for none), it_async_start(), later
 * it_async_join(); then status and answer (new: free()). */
typedef struct it_async {
    pthread_t thread;
    const char *base;
    const char *method;
    char path[160];
    char body[256];
    long status;
    char *answer;
} it_async_t;

void it_async_start(it_async_t *a);
void it_async_join(it_async_t *a);

/* POST `req` (an async train request) to model `model_id` of the current daemon, which must
 * answer 202: the new job's id. */
int64_t it_submit_job(int64_t model_id, const char *req);

/* For an executable whose every test needs PostgreSQL, first thing in main() after it_init():
 * when the daemons do not run on it (it_backend_pg), prints why and returns IT_EXIT_SKIPPED for
 * main() to return; 0 otherwise. */
int it_pg_only(void);

/* ---- event streams (GET /v1/models/{id}/events), each read on a thread of its own -------- */

typedef struct it_stream {
    pthread_t thread;
    pthread_mutex_t mu;        /* guards what follows while the stream is open */
    char *buf;                 /* everything received so far, NUL-terminated */
    size_t len;
    int want_done;             /* leave after this many `event: done` (0: stay until the server
                                * ends the stream) */
    int want_keepalive;        /* ... and a keep-alive comment */
    int connected, ended;
    int curl_rc;               /* the transfer's CURLcode once ended (CURLE_WRITE_ERROR: we left) */
    long status;
    char url[256];
} it_stream_t;

/* Subscribe to model `id`'s events at `base_url` (it_base_url(), or another daemon's
 * "http://127.0.0.1:<port>"); returns once the stream is open, else fails the running test. */
void it_stream_open(it_stream_t *s, const char *base_url, int64_t id, int want_done,
                    int want_keepalive);

/* Wait up to `timeout_ms` for the stream to end (fails the running test otherwise) and join its
 * thread; its status must be 200. */
void it_stream_wait(it_stream_t *s, int timeout_ms);

/* Free what the stream received. */
void it_stream_free(it_stream_t *s);

/* The events of a stream's text in order: `names[i]` ("progress", "done", ...) and `data[i]`
 * point into `buf`, which this splits in place; comments are skipped. Returns how many (at most
 * `max`). */
int it_stream_events(char *buf, const char **names, const char **data, int max);

/* How many times `needle` occurs in `hay` (NULL: 0). */
int it_count(const char *hay, const char *needle);

#endif /* ND_IT_CLIENT_H */
