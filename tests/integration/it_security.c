/* tests/integration/it_security.c -- access control end to end: bearer tokens from a file and
 * from NEUROND_TOKENS, 401 on every /v1/ path without a valid one (also a prefix of a valid
 * token, or a valid token with more after it), what stays open with and without --protect-all,
 * tokens never in the log, bad token sources refused at start (also tokens under 16 characters),
 * '#' comments ignored in token files and NEUROND_TOKENS, loopback as the default bind. */
#define _GNU_SOURCE   /* mkdtemp, strndup */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

/* Tokens under test: two from the file, three from the environment. */
#define TOK_FILE_1 "file-token-0123456789abcdef"
#define TOK_FILE_2 "file-token-second-fedcba9876543210"
#define TOK_ENV_1 "env-token-aaaaaaaaaaaaaaaaaaaa"
#define TOK_ENV_2 "env-token-bbbbbbbbbbbbbbbbbbbb"
#define TOK_ENV_3 "env-token-cccccccccccccccccccc"

static it_daemon_t d;
static char tmpdir[256];

/* ---- helpers --------------------------------------------------------------------------------- */

static void make_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/neurond-sec-XXXXXX", t != NULL ? t : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

/* Write `text` to <tmpdir>/<name>; returns the path (static buffer per call site is enough). */
static const char *write_file(const char *name, const char *text, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void remove_tmpdir(void)
{
    if (tmpdir[0] == '\0')
        return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
    tmpdir[0] = '\0';
}

static void teardown(void)
{
    it_cleanup(&d);
    remove_tmpdir();
}

/* GET/POST `path` with an optional Authorization value; returns the status. `www` (may be
 * NULL) gets the WWW-Authenticate header (new, or NULL); `code` (may be NULL) the error code. */
static long call_auth(const char *method, const char *path, const char *auth, const char *body,
                      char **www, char *code, size_t code_size)
{
    char hdr[512];
    const char *headers[2] = {NULL, NULL};
    if (auth != NULL) {
        snprintf(hdr, sizeof hdr, "Authorization: %s", auth);
        headers[0] = hdr;
    }
    it_call_t c = {.method = method, .path = path, .headers = headers,
                   .content_type = body != NULL ? "application/json" : NULL, .body = body};
    it_resp_t r;
    ck_assert_int_eq(it_do(&c, &r), 0);
    long status = r.status;
    if (www != NULL)
        *www = it_header(r.headers, "WWW-Authenticate");
    if (code != NULL) {
        code[0] = '\0';
        cJSON *j = cJSON_Parse(r.body);
        cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        cJSON *c2 = cJSON_GetObjectItemCaseSensitive(e, "code");
        if (cJSON_IsString(c2))
            snprintf(code, code_size, "%s", c2->valuestring);
        cJSON_Delete(j);
    }
    it_resp_free(&r);
    return status;
}

static void expect_401(const char *method, const char *path, const char *auth, const char *body)
{
    char *www = NULL, code[64];
    long st = call_auth(method, path, auth, body, &www, code, sizeof code);
    ck_assert_msg(st == 401, "%s %s with '%s': status %ld, want 401", method, path,
                  auth != NULL ? auth : "(none)", st);
    ck_assert_str_eq(code, "unauthenticated");
    ck_assert_ptr_nonnull(www);
    ck_assert_str_eq(www, "Bearer");
    free(www);
}

static void expect_status(const char *method, const char *path, const char *auth,
                          const char *body, long want)
{
    long st = call_auth(method, path, auth, body, NULL, NULL, 0);
    ck_assert_msg(st == want, "%s %s with '%s': status %ld, want %ld", method, path,
                  auth != NULL ? auth : "(none)", st, want);
}

/* Start a daemon with tokens from a file and from NEUROND_TOKENS, stderr captured, debug log. */
static void start_with_tokens(const char *more_arg, const char *more_env)
{
    char path[512];
    make_tmpdir();
    write_file("tokens",
               "# team tokens\n"
               "\n"
               "   " TOK_FILE_1 "   \n"
               "\t" TOK_FILE_2 "\r\n"
               "   \n",
               path, sizeof path);
    const char *extra[] = {"--token-file", path, "--log-level", "debug", more_arg, NULL};
    const char *env[] = {"NEUROND_TOKENS=" TOK_ENV_1 "," TOK_ENV_2 "  \t" TOK_ENV_3 ",",
                         more_env, NULL};
    it_opts_t o = {.extra = extra, .env = env, .capture_stderr = 1};
    ck_assert_msg(it_start_opts(&d, it_exe, &o) == 0, "daemon did not start");
}

/*
 * Run neurond with `args` (after --port 0 --db <tmp>) and `env` ("NAME=value" or NULL) and
 * expect it to exit by itself within 10 s. Returns the exit status; `err` gets its stderr.
 */
static int run_to_exit(const char *const *args, const char *env, char *err, size_t size)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    char db[512];
    snprintf(db, sizeof db, "%s/exit.db", tmpdir);
    const char *argv[32];
    int n = 0;
    argv[n++] = it_exe;
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--db";
    argv[n++] = db;
    for (int i = 0; args != NULL && args[i] != NULL && n < 31; ++i)
        argv[n++] = args[i];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (env != NULL)
            putenv((char *)env);
        dup2(fds[1], STDERR_FILENO);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(it_exe, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    err[0] = '\0';
    for (int waited = 0; waited < 10000;) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int r = poll(&p, 1, 100);
        waited += 100;
        if (r > 0) {
            ssize_t k = read(fds[0], err + used, size - 1 - used);
            if (k <= 0)
                break;
            used += (size_t)k;
            err[used] = '\0';
        }
    }
    close(fds[0]);
    int status = 0;
    for (int waited = 0; waitpid(pid, &status, WNOHANG) != pid; waited += 10) {
        if (waited > 10000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            ck_abort_msg("neurond %s did not exit: %s", args != NULL ? args[0] : "", err);
        }
        usleep(10000);
    }
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* ---- tests ------------------------------------------------------------------------------------ */

START_TEST(v1_needs_a_valid_token)
{
    start_with_tokens(NULL, NULL);
    /* None, wrong scheme, wrong token, a prefix of a valid one, a valid one with more after it,
     * an empty one, one token's bytes in another's length. */
    expect_401("GET", "/v1/models", NULL, NULL);
    expect_401("GET", "/v1/models", "Basic " TOK_FILE_1, NULL);
    expect_401("GET", "/v1/models", "Bearer nope", NULL);
    expect_401("GET", "/v1/models", "Bearer file-token-0123456789abcde", NULL);
    expect_401("GET", "/v1/models", "Bearer f", NULL);
    expect_401("GET", "/v1/models", "Bearer " TOK_FILE_1 "0", NULL);
    expect_401("GET", "/v1/models", "Bearer " TOK_FILE_1 TOK_FILE_1, NULL);
    expect_401("GET", "/v1/models", "Bearer ", NULL);
    expect_401("GET", "/v1/models", "Bearer " TOK_ENV_1 "," TOK_ENV_2, NULL);
    expect_401("GET", "/v1/models", TOK_FILE_1, NULL);
    /* Two Authorization headers, in either order: neither is taken. */
    static const char *const valid_then_bad[] = {"Authorization: Bearer " TOK_FILE_1,
                                                 "Authorization: Bearer nope", NULL};
    static const char *const bad_then_valid[] = {"Authorization: Bearer nope",
                                                 "Authorization: Bearer " TOK_FILE_1, NULL};
    static const char *const valid_twice[] = {"Authorization: Bearer " TOK_FILE_1,
                                              "Authorization: Bearer " TOK_FILE_1, NULL};
    const char *const *twice[] = {valid_then_bad, bad_then_valid, valid_twice};
    for (size_t i = 0; i < sizeof twice / sizeof twice[0]; ++i) {
        it_call_t c = {.method = "GET", .path = "/v1/models", .headers = twice[i]};
        it_resp_t r;
        ck_assert_int_eq(it_do(&c, &r), 0);
        ck_assert_msg(r.status == 401, "two Authorization headers (%zu): %ld", i, r.status);
        ck_assert_ptr_nonnull(strstr(r.body, "more than one Authorization header"));
        it_resp_free(&r);
    }
    /* Every /v1/ path, known or not, any method, with a body or without. */
    expect_401("GET", "/v1/models/1", NULL, NULL);
    expect_401("DELETE", "/v1/models/1", "Bearer nope", NULL);
    expect_401("POST", "/v1/models", NULL, "{\"kind\":\"linear\",\"inputs\":2}");
    expect_401("POST", "/v1/graphs/eval", "Bearer nope", "{}");
    expect_401("GET", "/v1/jobs", NULL, NULL);
    expect_401("GET", "/v1/no/such/path", NULL, NULL);
    /* Nothing was created by the refused POST. */
    cJSON *j = NULL;
    {
        char hdr[128];
        snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", TOK_FILE_1);
        const char *h[] = {hdr, NULL};
        it_call_t c = {.method = "GET", .path = "/v1/models", .headers = h};
        it_resp_t r;
        ck_assert_int_eq(it_do(&c, &r), 0);
        ck_assert_int_eq(r.status, 200);
        j = cJSON_Parse(r.body);
        it_resp_free(&r);
    }
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "models")), 0);
    cJSON_Delete(j);

    /* Each valid token works, from either source; the scheme is case-insensitive. */
    const char *valid[] = {TOK_FILE_1, TOK_FILE_2, TOK_ENV_1, TOK_ENV_2, TOK_ENV_3};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; ++i) {
        char auth[128];
        snprintf(auth, sizeof auth, "Bearer %s", valid[i]);
        expect_status("GET", "/v1/models", auth, NULL, 200);
    }
    expect_status("GET", "/v1/models", "bearer " TOK_ENV_3, NULL, 200);
    expect_status("POST", "/v1/models", "Bearer " TOK_FILE_2,
                  "{\"kind\":\"linear\",\"inputs\":2}", 201);
    expect_status("GET", "/v1/models/1", "Bearer " TOK_ENV_2, NULL, 200);
    expect_status("GET", "/v1/no/such/path", "Bearer " TOK_ENV_2, NULL, 404);

    /* Without --protect-all, probes, metrics, the dashboard and the API document stay open. */
    expect_status("GET", "/healthz", NULL, NULL, 200);
    expect_status("GET", "/metrics", NULL, NULL, 200);
    expect_status("GET", "/", NULL, NULL, 200);
    expect_status("GET", "/openapi.json", NULL, NULL, 200);
    expect_status("GET", "/healthz", "Bearer nope", NULL, 200);

    /* No token, nor any part of the Authorization header, is ever written to the log -- also
     * at debug level, also for the refused ones. */
    ck_assert_int_eq(it_stop(&d), 0);
    char *log = it_read_log(&d);
    ck_assert_msg(strstr(log, "http method=GET path=/v1/models status=401") != NULL,
                  "requests are logged: %.2000s", log);
    const char *secret[] = {TOK_FILE_1, TOK_FILE_2, TOK_ENV_1, TOK_ENV_2, TOK_ENV_3,
                            "file-token", "env-token", "Bearer", "Authorization", "nope"};
    for (size_t i = 0; i < sizeof secret / sizeof secret[0]; ++i)
        ck_assert_msg(strstr(log, secret[i]) == NULL, "'%s' found in the log:\n%s", secret[i],
                      log);
    free(log);
}
END_TEST

START_TEST(protect_all_closes_everything_but_healthz)
{
    start_with_tokens("--protect-all", NULL);
    expect_401("GET", "/metrics", NULL, NULL);
    expect_401("GET", "/", NULL, NULL);
    expect_401("GET", "/openapi.json", "Bearer nope", NULL);
    expect_401("GET", "/no-such-page", NULL, NULL);
    expect_401("GET", "/v1/models", NULL, NULL);
    expect_status("GET", "/healthz", NULL, NULL, 200);
    expect_status("GET", "/metrics", "Bearer " TOK_ENV_1, NULL, 200);
    expect_status("GET", "/", "Bearer " TOK_FILE_1, NULL, 200);
    expect_status("GET", "/openapi.json", "Bearer " TOK_FILE_2, NULL, 200);
    expect_status("GET", "/v1/models", "Bearer " TOK_ENV_3, NULL, 200);
}
END_TEST

START_TEST(protect_all_from_environment)
{
    make_tmpdir();
    const char *env[] = {"NEUROND_TOKENS=" TOK_ENV_1, "NEUROND_PROTECT_ALL=1", NULL};
    it_opts_t o = {.env = env};
    ck_assert_int_eq(it_start_opts(&d, it_exe, &o), 0);
    expect_401("GET", "/metrics", NULL, NULL);
    expect_status("GET", "/metrics", "Bearer " TOK_ENV_1, NULL, 200);
    expect_status("GET", "/healthz", NULL, NULL, 200);
    expect_401("GET", "/v1/models", "Bearer " TOK_ENV_2, NULL);
}
END_TEST

START_TEST(no_tokens_no_auth)
{
    make_tmpdir();
    ck_assert_int_eq(it_start(&d, it_exe, NULL), 0);
    expect_status("GET", "/v1/models", NULL, NULL, 200);
    expect_status("GET", "/v1/models", "Bearer anything", NULL, 200);
}
END_TEST

START_TEST(bad_token_sources_exit_2)
{
    char path[512], err[4096];
    make_tmpdir();

    snprintf(path, sizeof path, "%s/missing", tmpdir);
    const char *a1[] = {"--token-file", path, NULL};
    ck_assert_int_eq(run_to_exit(a1, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "--token-file") != NULL && strstr(err, "missing") != NULL, "%s",
                  err);

    write_file("empty", "# only a comment\n\n   \n", path, sizeof path);
    const char *a2[] = {"--token-file", path, NULL};
    ck_assert_int_eq(run_to_exit(a2, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "no token") != NULL, "%s", err);

    write_file("zero", "", path, sizeof path);
    ck_assert_int_eq(run_to_exit(a2, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "no token") != NULL, "%s", err);

    /* Unreadable: a directory. */
    const char *a3[] = {"--token-file", tmpdir, NULL};
    ck_assert_int_eq(run_to_exit(a3, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "--token-file") != NULL, "%s", err);

    /* From the environment: the file flag's variable, and NEUROND_TOKENS set but empty. */
    char env[600];
    snprintf(env, sizeof env, "NEUROND_TOKEN_FILE=%s/missing", tmpdir);
    ck_assert_int_eq(run_to_exit(NULL, env, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "--token-file") != NULL, "%s", err);
    ck_assert_int_eq(run_to_exit(NULL, "NEUROND_TOKENS= , \t", err, sizeof err), 2);
    ck_assert_msg(strstr(err, "NEUROND_TOKENS") != NULL, "%s", err);

    /* A token with a space inside is refused, and the message does not show it. */
    write_file("spaced", "secret-part-one secret-part-two\n", path, sizeof path);
    const char *a4[] = {"--token-file", path, NULL};
    ck_assert_int_eq(run_to_exit(a4, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "line 1") != NULL && strstr(err, "secret-part") == NULL, "%s",
                  err);

    /* A byte outside printable ASCII (here é) can never arrive in a header: refused too. */
    write_file("accent", "secret-part-one-\xc3\xa9\n", path, sizeof path);
    ck_assert_int_eq(run_to_exit(a4, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "line 1") != NULL && strstr(err, "printable ASCII") != NULL &&
                      strstr(err, "secret-part") == NULL, "%s", err);

    /* A bad --protect-all value. */
    const char *a5[] = {"--protect-all=maybe", NULL};
    ck_assert_int_eq(run_to_exit(a5, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "--protect-all") != NULL, "%s", err);
}
END_TEST

START_TEST(short_token_refuses_start)
{
    char path[512], err[4096];
    make_tmpdir();

    /* 15 characters: one short of the minimum, from the file and from the environment. The
     * message names the source and position, never the token. */
    write_file("short", "# ok\n" TOK_FILE_1 "\nshort-secret-15\n", path, sizeof path);
    const char *a1[] = {"--token-file", path, NULL};
    ck_assert_int_eq(run_to_exit(a1, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "line 3") != NULL && strstr(err, "shorter than 16") != NULL &&
                      strstr(err, "short-secret") == NULL, "%s", err);
    ck_assert_int_eq(run_to_exit(NULL, "NEUROND_TOKENS=" TOK_ENV_1 ",short-secret-15", err,
                                 sizeof err), 2);
    ck_assert_msg(strstr(err, "NEUROND_TOKENS, token 2") != NULL &&
                      strstr(err, "shorter than 16") != NULL && strstr(err, "short-secret") == NULL,
                  "%s", err);

    /* Exactly 16 characters is enough, and a byte order mark before the first line (as some
     * editors write) is not part of its token: it once made that token unusable. */
    write_file("sixteen", "\xef\xbb\xbfsixteen-chars-ok\n", path, sizeof path);
    const char *extra[] = {"--token-file", path, NULL};
    ck_assert_int_eq(it_start(&d, it_exe, extra), 0);
    expect_status("GET", "/v1/models", "Bearer sixteen-chars-ok", NULL, 200);
}
END_TEST

/* A commented token file gives the same tokens from --token-file and from NEUROND_TOKENS: the
 * words of its comments never become tokens. */
#define COMMENTED_TOKENS                                                                     \
    "# the one token of this file, # and a comment\n"                                         \
    "   # indented comment\n"                                                                \
    TOK_FILE_1 "   # trailing comment\n"                                                     \
    "tok#en-with-a-hash-inside\n"                                                            \
    "#\n"

/* The running daemon takes the two tokens of COMMENTED_TOKENS and none of its comment words;
 * then it is stopped. */
static void expect_commented_tokens(void)
{
    expect_status("GET", "/v1/models", "Bearer " TOK_FILE_1, NULL, 200);
    expect_status("GET", "/v1/models", "Bearer tok#en-with-a-hash-inside", NULL, 200);
    static const char *const words[] = {"#", "the", "one", "token", "comment", "indented",
                                        "trailing", NULL};
    for (int i = 0; words[i] != NULL; ++i) {
        char auth[64];
        snprintf(auth, sizeof auth, "Bearer %s", words[i]);
        expect_401("GET", "/v1/models", auth, NULL);
    }
    it_cleanup(&d);
}

START_TEST(comments_ignored_in_file_and_env)
{
    char path[512], err[4096];
    make_tmpdir();

    write_file("commented", COMMENTED_TOKENS, path, sizeof path);
    const char *extra[] = {"--token-file", path, NULL};
    ck_assert_int_eq(it_start(&d, it_exe, extra), 0);
    expect_commented_tokens();

    const char *env[] = {"NEUROND_TOKENS=" COMMENTED_TOKENS, NULL};
    it_opts_t o = {.env = env};
    ck_assert_int_eq(it_start_opts(&d, it_exe, &o), 0);
    expect_commented_tokens();

    /* The repository's example token file, all comments, holds no token either way. */
    snprintf(path, sizeof path, "%s/../../docker/tokens.example.txt", it_golden);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    static char env_text[8192] = "NEUROND_TOKENS=";
    size_t used = strlen(env_text);
    used += fread(env_text + used, 1, sizeof env_text - 1 - used, f);
    env_text[used] = '\0';
    fclose(f);
    ck_assert_int_eq(run_to_exit(NULL, env_text, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "NEUROND_TOKENS is set but contains no token") != NULL, "%s", err);
    const char *a1[] = {"--token-file", path, NULL};
    ck_assert_int_eq(run_to_exit(a1, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "contains no token") != NULL, "%s", err);
}
END_TEST

START_TEST(default_bind_is_loopback)
{
    make_tmpdir();
    it_opts_t o = {.capture_stderr = 1};
    ck_assert_int_eq(it_start_opts(&d, it_exe, &o), 0);
    expect_status("GET", "/healthz", NULL, NULL, 200);
    char *log = it_read_log(&d);
    ck_assert_msg(strstr(log, "listening on 127.0.0.1 port") != NULL, "%s", log);
    free(log);
    it_cleanup(&d);

    /* Any other address only by flag; a bad one exits 2 naming --bind. */
    char err[4096];
    const char *a[] = {"--bind", "localhost", NULL};
    ck_assert_int_eq(run_to_exit(a, NULL, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "--bind") != NULL, "%s", err);
}
END_TEST

int main(int argc, char **argv)
{
    it_init(argc, argv);
    Suite *s = suite_create("security");
    TCase *tc = tcase_create("auth");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, v1_needs_a_valid_token);
    tcase_add_test(tc, protect_all_closes_everything_but_healthz);
    tcase_add_test(tc, protect_all_from_environment);
    tcase_add_test(tc, no_tokens_no_auth);
    tcase_add_test(tc, bad_token_sources_exit_2);
    tcase_add_test(tc, short_token_refuses_start);
    tcase_add_test(tc, comments_ignored_in_file_and_env);
    tcase_add_test(tc, default_bind_is_loopback);
    suite_add_tcase(s, tc);
    return it_run(s);
}
