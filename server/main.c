/* server/main.c -- neurond: flags and environment, start-up, signals, clean shutdown.
 *
 * Every flag --name also reads NEUROND_NAME (dashes become underscores); a flag on the command
 * line wins over the environment. Bad values exit 2, a database or address that cannot be used
 * exits 1, a clean shutdown (SIGTERM/SIGINT) exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "http.h"
#include "jobs.h"
#include "log.h"
#include "routes.h"
#include "store.h"

#ifndef NEUROND_VERSION
#define NEUROND_VERSION "0.0.0"
#endif

#define MAX_TOKENS 256
#define CONN_LIMIT 1024
#define CONN_TIMEOUT_S 60

typedef struct config {
    const char *bind;
    int64_t port;
    const char *db;
    int64_t threads;
    int64_t max_body;
    int64_t max_jobs;
    const char *token_file;
    int log_level;
} config_t;

enum flag_kind { FLAG_STR, FLAG_INT, FLAG_ADDR, FLAG_LEVEL };

typedef struct flag {
    const char *name;          /* without the leading dashes */
    enum flag_kind kind;
    int64_t min, max;          /* FLAG_INT */
    const char *dflt;          /* shown by --help */
    const char *help;
} flag_t;

static const flag_t flags[] = {
    {"bind", FLAG_ADDR, 0, 0, "127.0.0.1", "address to listen on (IPv4 or IPv6 literal)"},
    {"port", FLAG_INT, 0, 65535, "8080", "TCP port; 0 picks a free one"},
    {"db", FLAG_STR, 0, 0, "./neurond.db", "SQLite database file (created if missing)"},
    {"threads", FLAG_INT, 1, 1024, "number of cores", "HTTP worker threads"},
    {"max-body", FLAG_INT, 1, (int64_t)1 << 40, "67108864", "largest request body, bytes"},
    {"max-jobs", FLAG_INT, 1, 1024, "number of cores", "concurrent asynchronous training jobs"},
    {"token-file", FLAG_STR, 0, 0, "none (no auth)",
     "file with bearer tokens, one per line; /v1/* then needs one"},
    {"log-level", FLAG_LEVEL, 0, 0, "info", "error | warn | info | debug"},
};
#define N_FLAGS (sizeof flags / sizeof flags[0])

static void env_name(const char *flag, char *out, size_t size)
{
    size_t o = (size_t)snprintf(out, size, "NEUROND_");
    for (const char *p = flag; *p != '\0' && o + 1 < size; ++p)
        out[o++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    out[o] = '\0';
}

static void usage(FILE *f)
{
    fprintf(f, "usage: neurond [flags]\n\n"
               "A model-training daemon: JSON over HTTP, models in SQLite.\n\n"
               "flags (each also read from the environment variable shown; the flag wins):\n");
    for (size_t i = 0; i < N_FLAGS; ++i) {
        char env[64];
        env_name(flags[i].name, env, sizeof env);
        fprintf(f, "  --%-11s %-19s %s (default: %s)\n", flags[i].name, env, flags[i].help,
                flags[i].dflt);
    }
    fprintf(f, "  --help                            show this text\n"
               "  --version                         print the version\n");
}

static _Noreturn void bad_value(const flag_t *fl, const char *value, const char *source,
                                const char *why)
{
    fprintf(stderr, "neurond: invalid value '%s' for --%s (from %s): %s\n", value, fl->name,
            source, why);
    exit(2);
}

/* Validate and store one value; exits 2 when it is bad. */
static void flag_set(config_t *cfg, const flag_t *fl, const char *value, const char *source)
{
    char why[128];
    switch (fl->kind) {
    case FLAG_INT: {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (value[0] == '\0' || *end != '\0' || errno != 0 || v < fl->min || v > fl->max) {
            snprintf(why, sizeof why, "expected an integer in [%" PRId64 ", %" PRId64 "]",
                     fl->min, fl->max);
            bad_value(fl, value, source, why);
        }
        if (strcmp(fl->name, "port") == 0)
            cfg->port = v;
        else if (strcmp(fl->name, "threads") == 0)
            cfg->threads = v;
        else if (strcmp(fl->name, "max-body") == 0)
            cfg->max_body = v;
        else if (strcmp(fl->name, "max-jobs") == 0)
            cfg->max_jobs = v;
        break;
    }
    case FLAG_ADDR: {
        unsigned char buf[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, value, buf) != 1 && inet_pton(AF_INET6, value, buf) != 1)
            bad_value(fl, value, source, "expected an IPv4 or IPv6 address such as 127.0.0.1");
        cfg->bind = value;
        break;
    }
    case FLAG_LEVEL:
        if (log_level_parse(value, &cfg->log_level) < 0)
            bad_value(fl, value, source, "expected error, warn, info or debug");
        break;
    case FLAG_STR:
        if (value[0] == '\0')
            bad_value(fl, value, source, "must not be empty");
        if (strcmp(fl->name, "db") == 0)
            cfg->db = value;
        else if (strcmp(fl->name, "token-file") == 0)
            cfg->token_file = value;
        break;
    }
}

static const flag_t *flag_find(const char *name, size_t len)
{
    for (size_t i = 0; i < N_FLAGS; ++i)
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

static void config_parse(config_t *cfg, int argc, char **argv)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    *cfg = (config_t){.bind = "127.0.0.1", .port = 8080, .db = "./neurond.db",
                      .threads = cores, .max_body = 67108864, .max_jobs = cores,
                      .token_file = NULL, .log_level = LOG_LEVEL_INFO};
    /* Command line first, so a flag given there makes its environment variable irrelevant
     * (even an invalid one). */
    const char *given[N_FLAGS] = {0};
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--version") == 0) {
            printf("neurond %s\n", NEUROND_VERSION);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "neurond: unexpected argument '%s' (see --help)\n", a);
            exit(2);
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        const flag_t *fl = flag_find(name, eq != NULL ? (size_t)(eq - name) : strlen(name));
        if (fl == NULL) {
            fprintf(stderr, "neurond: unknown flag '%s' (see --help)\n", a);
            exit(2);
        }
        const char *value = eq != NULL ? eq + 1 : NULL;
        if (value == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "neurond: --%s needs a value (see --help)\n", fl->name);
                exit(2);
            }
            value = argv[++i];
        }
        given[fl - flags] = value;     /* the last one wins, as usual */
    }
    for (size_t i = 0; i < N_FLAGS; ++i) {
        char env[64];
        env_name(flags[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (given[i] != NULL)
            flag_set(cfg, &flags[i], given[i], "the command line");
        else if (v != NULL)
            flag_set(cfg, &flags[i], v, env);
    }
}

/* Read bearer tokens: one per line, blank lines and '#' comments ignored, surrounding
 * whitespace trimmed. Exits 2 when the file is unreadable or holds no token. The tokens are
 * never printed. */
static char **tokens_load(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "neurond: cannot read --token-file '%s': %s\n", path, strerror(errno));
        exit(2);
    }
    char **tokens = calloc(MAX_TOKENS + 1, sizeof *tokens);
    char line[4096];
    int n = 0;
    while (tokens != NULL && fgets(line, sizeof line, f) != NULL) {
        char *p = line, *e = line + strlen(line);
        while (*p == ' ' || *p == '\t')
            ++p;
        while (e > p && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        if (*p == '\0' || *p == '#')
            continue;
        if (n == MAX_TOKENS) {
            fprintf(stderr, "neurond: --token-file '%s' has more than %d tokens\n", path,
                    MAX_TOKENS);
            exit(2);
        }
        if ((tokens[n++] = strdup(p)) == NULL)
            break;
    }
    fclose(f);
    if (tokens == NULL || n == 0) {
        fprintf(stderr, "neurond: --token-file '%s' contains no token\n", path);
        exit(2);
    }
    return tokens;
}

static void tokens_free(char **tokens)
{
    if (tokens == NULL)
        return;
    for (char **t = tokens; *t != NULL; ++t) {
        memset(*t, 0, strlen(*t));
        free(*t);
    }
    free(tokens);
}

/* Signals are turned into a byte on a pipe so the main thread can wait for them with read(),
 * whichever thread the kernel delivers them to (libraries may start threads before main). */
static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(signal_pipe[1], &b, 1);
    (void)w;
    errno = saved;
}

static int signals_install(void)
{
    if (pipe(signal_pipe) < 0)
        return -1;
    fcntl(signal_pipe[0], F_SETFD, FD_CLOEXEC);
    fcntl(signal_pipe[1], F_SETFD, FD_CLOEXEC);
    fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int signal_wait(void)
{
    unsigned char b = 0;
    for (;;) {
        ssize_t r = read(signal_pipe[0], &b, 1);
        if (r == 1)
            return b;
        if (r < 0 && errno == EINTR)
            continue;
        return 0;
    }
}

int main(int argc, char **argv)
{
    config_t cfg;
    config_parse(&cfg, argc, argv);
    log_set_level(cfg.log_level);
    if (signals_install() < 0) {
        fprintf(stderr, "neurond: cannot install signal handlers: %s\n", strerror(errno));
        return 1;
    }
    char **tokens = cfg.token_file != NULL ? tokens_load(cfg.token_file) : NULL;

    err_t err = {0};
    store_t *store = NULL;
    if (store_open(cfg.db, &store, &err) < 0) {
        fprintf(stderr, "neurond: cannot open database '%s': %s\n", cfg.db, err.msg);
        tokens_free(tokens);
        return 1;
    }
    int64_t interrupted = 0;
    if (store_jobs_mark_interrupted(store, &interrupted, &err) < 0) {
        fprintf(stderr, "neurond: cannot prepare database '%s': %s\n", cfg.db, err.msg);
        store_close(store);
        tokens_free(tokens);
        return 1;
    }
    if (interrupted > 0)
        log_msg(LOG_LEVEL_WARN, "marked %" PRId64 " job(s) of a previous run as interrupted",
                interrupted);
    registry_t *registry = NULL;
    if (registry_new(store, &registry, &err) < 0) {
        fprintf(stderr, "neurond: %s\n", err.msg);
        store_close(store);
        tokens_free(tokens);
        return 1;
    }

    app_t app = {.store = store, .version = NEUROND_VERSION, .max_body = (size_t)cfg.max_body,
                 .max_jobs = cfg.max_jobs, .threads = cfg.threads};
    app.registry = registry;
    jobs_t *jobs = NULL;
    if (jobs_new(&app, &jobs, &err) < 0) {
        fprintf(stderr, "neurond: %s\n", err.msg);
        registry_free(registry);
        store_close(store);
        tokens_free(tokens);
        return 1;
    }
    app.jobs = jobs;
#define ROUTE_ENTRY(name) name,
    static const http_route_t *const tables[] = {ROUTE_TABLES(ROUTE_ENTRY) NULL};
#undef ROUTE_ENTRY
    http_config_t hc = {.bind = cfg.bind, .port = (uint16_t)cfg.port,
                        .threads = (unsigned)cfg.threads, .max_body = (size_t)cfg.max_body,
                        .conn_limit = CONN_LIMIT, .conn_timeout_s = CONN_TIMEOUT_S,
                        .tables = tables, .tokens = (const char *const *)tokens, .ctx = &app};
    http_server_t *srv = NULL;
    if (http_server_start(&hc, &srv, &err) < 0) {
        fprintf(stderr, "neurond: %s\n", err.msg);
        jobs_free(jobs);
        registry_free(registry);
        store_close(store);
        tokens_free(tokens);
        return 1;
    }
    int v6 = strchr(cfg.bind, ':') != NULL;
    printf("neurond listening on %s%s%s:%u\n", v6 ? "[" : "", cfg.bind, v6 ? "]" : "",
           (unsigned)http_server_port(srv));
    fflush(stdout);
    log_msg(LOG_LEVEL_INFO, "neurond %s listening on %s port %u (db %s, %" PRId64
            " threads, schema v%d%s)", NEUROND_VERSION, cfg.bind, (unsigned)http_server_port(srv),
            cfg.db, cfg.threads, store_schema_version(store), tokens != NULL ? ", auth on" : "");

    int sig = signal_wait();
    log_msg(LOG_LEVEL_INFO, "signal %d: shutting down", sig);
    jobs_shutdown(jobs);       /* runs stop at a step boundary, committed; job threads end */
    http_server_stop(srv);     /* stop accepting, finish running requests */
    jobs_free(jobs);           /* drop the event streams' references */
    registry_free(registry);   /* after every user of the models has stopped */
    store_close(store);
    tokens_free(tokens);
    log_msg(LOG_LEVEL_INFO, "stopped");
    return 0;
}
