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
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <unistd.h>

#include "app.h"
#include "blas.h"
#include "graph.h"
#include "http.h"
#include "events.h"
#include "health.h"
#include "jobs.h"
#include "log.h"
#include "model.h"
#include "pool.h"
#include "relay.h"
#include "replica.h"
#include "routes.h"
#include "sessions.h"
#include "store.h"
#include "tensor.h"

#ifndef NEUROND_VERSION
#define NEUROND_VERSION "0.0.0"
#endif

#define MAX_TOKENS 256
#define TOKEN_MIN 16             /* shorter tokens refuse the start */
#define UTF8_BOM "\xef\xbb\xbf"   /* may begin a token file; skipped */

typedef struct config {
    const char *bind;
    int64_t port;
    const char *db;
    int64_t threads;
    int64_t compute_threads;
    int64_t max_body;
    int64_t max_jobs;
    int64_t max_sync_runs;
    int64_t max_queue;         /* -1 until set: then the backend's default, see main() */
    int64_t max_batch_rows;
    int64_t max_model_rows;
    int64_t max_params;
    int64_t max_work_values;
    int64_t max_layers;
    int64_t max_units;
    int64_t max_graph_nodes;
    int64_t max_depth;
    int64_t max_connections;
    int64_t max_streams;       /* 0 until set: then the default, see config_parse() */
    int64_t idle_timeout;
    int64_t data_cache;
    const char *token_file;
    const char *advertise;     /* host:port; NULL: the bound address and actual port */
    int64_t job_lease;         /* seconds */
    const char *backup;        /* --backup OUT: copy the database and exit (no env var) */
    int protect_all;
    int log_level;
} config_t;

enum flag_kind {
    FLAG_INT,                  /* int64_t field, in [min, max] */
    FLAG_STR,                  /* const char * field, not empty */
    FLAG_ADDR,                 /* const char * field, an IPv4 or IPv6 literal */
    FLAG_BOOL,                 /* int field: 1, true, yes / 0, false, no */
    FLAG_LEVEL,                /* int field: error | warn | info | debug (log.h) */
    FLAG_HOSTPORT,             /* const char * field, host:port with a port in 1..65535 */
};

/*
 * One row per flag drives everything about it: the command line (--name VALUE, --name=VALUE),
 * its environment variable (NEUROND_NAME, dashes as underscores), its default, its check and
 * its line in --help. The default is written as a user would type it and set through the same
 * check, or computed from the core count (per_core) for the flags that follow the machine;
 * NULL leaves the field zero (unset: no token file; --max-streams decided after parsing).
 */
typedef struct flag {
    const char *name;          /* without the leading dashes */
    enum flag_kind kind;
    size_t field;              /* offsetof(config_t, ...), of the type its kind says */
    int64_t min, max;          /* FLAG_INT */
    const char *dflt;          /* the default, as typed; NULL: per_core, or unset */
    int per_core;              /* FLAG_INT: the default is this many per online core, */
    int at_least;              /* and at least this many */
    const char *dflt_help;     /* --help's words for a default that is not one value */
    const char *help;
} flag_t;

/* Models whose training state (model copy, optimizer, working buffers) is kept between train
 * calls: the most recently trained ones. */
#define TRAIN_SESSIONS 2

#define MAX_STREAMS_DEFAULT 64
#define MAX_QUEUE_DEFAULT 1000

#define FIELD(name) offsetof(config_t, name)

static const flag_t flags[] = {
    {.name = "bind", .kind = FLAG_ADDR, .field = FIELD(bind), .dflt = "127.0.0.1",
     .help = "address to listen on (IPv4 or IPv6 literal)"},
    {.name = "port", .kind = FLAG_INT, .field = FIELD(port), .min = 0, .max = 65535,
     .dflt = "8080", .help = "TCP port; 0 picks a free one"},
    {.name = "db", .kind = FLAG_STR, .field = FIELD(db), .dflt = "./neurond.db",
     .help = "SQLite database file (created if missing), or a postgresql:// address"},
    {.name = "threads", .kind = FLAG_INT, .field = FIELD(threads), .min = 1, .max = 1024,
     .per_core = 1, .dflt_help = "number of cores", .help = "HTTP worker threads"},
    {.name = "compute-threads", .kind = FLAG_INT, .field = FIELD(compute_threads), .min = 1,
     .max = POOL_MAX_THREADS, .per_core = 1, .dflt_help = "number of cores",
     .help = "threads one training call's big batches are split over, shared by every model"},
    {.name = "max-body", .kind = FLAG_INT, .field = FIELD(max_body), .min = 1,
     .max = (int64_t)1 << 40, .dflt = "67108864", .help = "largest request body, bytes"},
    {.name = "max-jobs", .kind = FLAG_INT, .field = FIELD(max_jobs), .min = 1, .max = 1024,
     .per_core = 1, .dflt_help = "number of cores",
     .help = "concurrent asynchronous training jobs"},
    {.name = "max-queue", .kind = FLAG_INT, .field = FIELD(max_queue), .min = 0,
     .max = 1000000, .dflt_help = "1000 on PostgreSQL; 0 on SQLite",
     .help = "async jobs waiting for a slot, cluster-wide; more get 429 (0: a job that cannot "
             "start at once gets 429)"},
    /* A synchronous train call waits on commits (fsyncs) as much as it computes, so more than
     * one per core keeps the cores busy; the cap bounds the threads they take. */
    {.name = "max-sync-runs", .kind = FLAG_INT, .field = FIELD(max_sync_runs), .min = 1,
     .max = 1024, .per_core = 4, .at_least = 16, .dflt_help = "4 per core, at least 16",
     .help = "concurrent synchronous train calls (each runs on its own thread)"},
    {.name = "max-batch-rows", .kind = FLAG_INT, .field = FIELD(max_batch_rows), .min = 1,
     .max = INT32_MAX, .dflt = "1000000", .help = "rows in one batch or inline x"},
    {.name = "max-model-rows", .kind = FLAG_INT, .field = FIELD(max_model_rows), .min = 1,
     .max = INT32_MAX, .dflt = "10000000", .help = "stored training rows per model"},
    {.name = "max-params", .kind = FLAG_INT, .field = FIELD(max_params), .min = 1,
     .max = TENSOR_MAX_ELEMS, .dflt = "50000000",
     .help = "parameters per model; elements of a graph evaluation's tensors"},
    /* 200M doubles, 1.6 GB: a 60,000-row full batch of a 784-input softmax needs 98M, of a
     * 784-128-10 mlp 128M; a 10,000-unit layer over 10,000 rows (400M) is refused. */
    {.name = "max-work-values", .kind = FLAG_INT, .field = FIELD(max_work_values), .min = 1,
     .max = (int64_t)1 << 50, .dflt = "200000000",
     .help = "working values (doubles) of one evaluation: rows x every intermediate and its "
             "gradient"},
    {.name = "max-layers", .kind = FLAG_INT, .field = FIELD(max_layers), .min = 0,
     .max = MODEL_MAX_LAYERS, .dflt = "64", .help = "hidden layers of an mlp"},
    {.name = "max-units", .kind = FLAG_INT, .field = FIELD(max_units), .min = 1,
     .max = MODEL_MAX_UNITS, .dflt = "100000", .help = "inputs, outputs, classes, units per layer"},
    {.name = "max-graph-nodes", .kind = FLAG_INT, .field = FIELD(max_graph_nodes), .min = 1,
     .max = AD_MAX_NODES_DEFAULT, .dflt = "10000",
     .help = "nodes of a graph model or a graph evaluation"},
    {.name = "max-depth", .kind = FLAG_INT, .field = FIELD(max_depth), .min = 1, .max = 1000,
     .dflt = "64", .help = "JSON nesting depth of a request body"},
    {.name = "max-connections", .kind = FLAG_INT, .field = FIELD(max_connections), .min = 1,
     .max = 1000000, .dflt = "1024", .help = "concurrent HTTP connections"},
    {.name = "max-streams", .kind = FLAG_INT, .field = FIELD(max_streams), .min = 1,
     .max = 1000000, .dflt_help = "64, at most half of --max-connections",
     .help = "concurrent event streams (below --max-connections: room for /healthz and API "
             "calls)"},
    {.name = "idle-timeout", .kind = FLAG_INT, .field = FIELD(idle_timeout), .min = 1,
     .max = 86400, .dflt = "30", .help = "seconds before an idle connection is closed"},
    {.name = "data-cache", .kind = FLAG_INT, .field = FIELD(data_cache), .min = 0,
     .max = (int64_t)1 << 50, .dflt = "1073741824",
     .help = "bytes of stored training rows kept in memory between train calls; 0 keeps none"},
    {.name = "token-file", .kind = FLAG_STR, .field = FIELD(token_file),
     .dflt_help = "none (no auth)",
     .help = "file with bearer tokens of 16+ characters, one per line, '#' starts a comment; "
             "/v1/* then needs one (see also NEUROND_TOKENS)"},
    {.name = "protect-all", .kind = FLAG_BOOL, .field = FIELD(protect_all), .dflt = "false",
     .help = "with tokens: also protect /metrics, / and /openapi.json (not /healthz)"},
    {.name = "job-lease", .kind = FLAG_INT, .field = FIELD(job_lease), .min = 3, .max = 3600,
     .dflt = "15", .help = "seconds without a heartbeat (sent every third of it) before a "
                           "replica counts as dead"},
    {.name = "advertise", .kind = FLAG_HOSTPORT, .field = FIELD(advertise),
     .dflt_help = "the bound address and port",
     .help = "host:port other replicas and clients reach this one at (GET /v1/cluster)"},
    {.name = "log-level", .kind = FLAG_LEVEL, .field = FIELD(log_level), .dflt = "info",
     .help = "error | warn | info | debug"},
};
#undef FIELD
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
        fprintf(f, "  --%-16s %-24s %s (default: %s)\n", flags[i].name, env, flags[i].help,
                flags[i].dflt_help != NULL ? flags[i].dflt_help : flags[i].dflt);
    }
    fprintf(f, "  --help                                            show this text\n"
               "  --version                                         print the version\n"
               "  --backup OUT.db                                   write a consistent copy of "
               "--db to OUT.db\n"
               "                                                    (safe while a daemon runs; "
               "OUT.db must not exist) and exit\n\n"
               "environment only:\n"
               "  NEUROND_TOKENS  bearer tokens separated by commas or whitespace, '#' starts a "
               "comment; combined\n"
               "                  with --token-file\n"
               "  NEUROND_BUSY_TIMEOUT_MS  how long a write waits for a database lock held by "
               "another process (default: 5000)\n");
}

static _Noreturn void bad_value(const flag_t *fl, const char *value, const char *source,
                                const char *why)
{
    fprintf(stderr, "neurond: invalid value '%s' for --%s (from %s): %s\n", value, fl->name,
            source, why);
    exit(2);
}

/* host:port as --advertise takes it: a non-empty host of printable ASCII without spaces
 * ("[...]" around an IPv6 address, whose colons would hide the port), ':' and a port in
 * 1..65535 in decimal. */
static int hostport_valid(const char *v)
{
    const char *colon = strrchr(v, ':');
    if (colon == NULL || colon == v || colon - v > 255)
        return 0;
    for (const char *p = v; p < colon; ++p)
        if (*p <= 0x20 || *p >= 0x7f || *p == '/' || (*p == ':' && v[0] != '['))
            return 0;
    if (v[0] == '[' && colon[-1] != ']')
        return 0;
    char *end = NULL;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    return colon[1] >= '0' && colon[1] <= '9' && *end == '\0' && errno == 0 && port >= 1 &&
           port <= 65535;
}

/* Validate and store one value in its config field; exits 2 when it is bad. */
static void flag_set(config_t *cfg, const flag_t *fl, const char *value, const char *source)
{
    void *field = (char *)cfg + fl->field;
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
        *(int64_t *)field = v;
        break;
    }
    case FLAG_BOOL:
        if (strcmp(value, "1") == 0 || strcasecmp(value, "true") == 0 ||
            strcasecmp(value, "yes") == 0)
            *(int *)field = 1;
        else if (strcmp(value, "0") == 0 || strcasecmp(value, "false") == 0 ||
                 strcasecmp(value, "no") == 0)
            *(int *)field = 0;
        else
            bad_value(fl, value, source, "expected 1, true, yes, 0, false or no");
        break;
    case FLAG_ADDR: {
        unsigned char buf[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, value, buf) != 1 && inet_pton(AF_INET6, value, buf) != 1)
            bad_value(fl, value, source, "expected an IPv4 or IPv6 address such as 127.0.0.1");
        *(const char **)field = value;
        break;
    }
    case FLAG_LEVEL:
        if (log_level_parse(value, (int *)field) < 0)
            bad_value(fl, value, source, "expected error, warn, info or debug");
        break;
    case FLAG_HOSTPORT:
        if (!hostport_valid(value))
            bad_value(fl, value, source, "expected host:port (a name or address of at most 255 "
                      "printable characters, an IPv6 address in brackets, a port in 1..65535)");
        *(const char **)field = value;
        break;
    case FLAG_STR:
        if (value[0] == '\0')
            bad_value(fl, value, source, "must not be empty");
        *(const char **)field = value;
        break;
    }
}

/* Every flag at its default (flags[]), before the command line and the environment. */
static void config_defaults(config_t *cfg)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    *cfg = (config_t){.max_queue = -1};
    for (size_t i = 0; i < N_FLAGS; ++i) {
        const flag_t *fl = &flags[i];
        if (fl->per_core > 0) {
            int64_t n = fl->per_core * (int64_t)cores;
            *(int64_t *)((char *)cfg + fl->field) = n > fl->at_least ? n : fl->at_least;
        }
        else if (fl->dflt != NULL)
            flag_set(cfg, fl, fl->dflt, "the default");
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
    config_defaults(cfg);
    /* Command line first, so a flag given there makes its environment variable irrelevant
     * (even an invalid one). */
    const char *given[N_FLAGS] = {0};
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--backup") == 0 || strncmp(a, "--backup=", 9) == 0) {
            /* A command, not a setting: no environment variable, or a stray NEUROND_BACKUP
             * would turn every start into a backup. */
            const char *out = a[8] == '=' ? a + 9 : i + 1 < argc ? argv[++i] : NULL;
            if (out == NULL || out[0] == '\0') {
                fprintf(stderr, "neurond: --backup needs a file name (see --help)\n");
                exit(2);
            }
            cfg->backup = out;
            continue;
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
        if (value == NULL && fl->kind == FLAG_BOOL)
            value = "true";                  /* --protect-all alone switches it on */
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
    /* libmicrohttpd shares the connection limit among its threads: each needs at least one. */
    if (cfg->max_connections < cfg->threads) {
        fprintf(stderr, "neurond: --max-connections (%" PRId64 ") must be at least --threads (%"
                PRId64 ")\n", cfg->max_connections, cfg->threads);
        exit(2);
    }
    /* Streams stay open for as long as their clients like: were they allowed every connection,
     * a few dashboards would leave none for the health probe. */
    if (cfg->max_streams == 0) {
        cfg->max_streams = cfg->max_connections / 2 < MAX_STREAMS_DEFAULT
                               ? cfg->max_connections / 2 : MAX_STREAMS_DEFAULT;
        if (cfg->max_streams < 1)
            cfg->max_streams = 1;
    } else if (cfg->max_streams >= cfg->max_connections) {
        fprintf(stderr, "neurond: --max-streams (%" PRId64 ") must be below --max-connections (%"
                PRId64 "), so that streams leave room for other requests\n", cfg->max_streams,
                cfg->max_connections);
        exit(2);
    }
}

/* Bearer tokens from --token-file and NEUROND_TOKENS, NULL-terminated. The tokens themselves
 * are never printed: messages name the source and the line or position only. */
typedef struct tokens {
    char **v;
    int n;
} tokens_t;

/* Add token text[0..len) from `source` (position `pos`); exits 2 when it is unusable. */
static void tokens_add(tokens_t *t, const char *text, size_t len, const char *source,
                       const char *what, int pos)
{
    for (size_t i = 0; i < len; ++i) {
        unsigned char c = (unsigned char)text[i];
        /* A client sends its token in an HTTP header, which carries ASCII: a token with other
         * bytes (a stray byte order mark, say) could never be matched, so it is refused. */
        if (c <= 0x20 || c >= 0x7f) {
            fprintf(stderr, "neurond: %s, %s %d: a token must be printable ASCII: no spaces, "
                    "control characters or other bytes\n", source, what, pos);
            exit(2);
        }
    }
    /* A short token is guessable, and a short "token" is usually a word of a comment or of a
     * sentence that was fed in by mistake: refuse both rather than warn. */
    if (len < TOKEN_MIN) {
        fprintf(stderr, "neurond: %s, %s %d: token is shorter than %d characters; use a long "
                "random one (e.g. openssl rand -hex 32)\n", source, what, pos, TOKEN_MIN);
        exit(2);
    }
    if (len > HTTP_TOKEN_MAX) {
        fprintf(stderr, "neurond: %s, %s %d: token longer than %d bytes\n", source, what, pos,
                HTTP_TOKEN_MAX);
        exit(2);
    }
    if (t->n == MAX_TOKENS) {
        fprintf(stderr, "neurond: more than %d tokens (%s)\n", MAX_TOKENS, source);
        exit(2);
    }
    if (t->v == NULL && (t->v = calloc(MAX_TOKENS + 1, sizeof *t->v)) == NULL) {
        fprintf(stderr, "neurond: out of memory reading tokens\n");
        exit(1);
    }
    if ((t->v[t->n] = strndup(text, len)) == NULL) {
        fprintf(stderr, "neurond: out of memory reading tokens\n");
        exit(1);
    }
    t->n++;
}

/*
 * Where a comment starts in text[0..len): at a '#' that begins the text or follows a space or
 * tab (so a token may still contain '#'); len when there is none. Token files and NEUROND_TOKENS
 * read comments alike, so a commented token file gives the same tokens either way.
 */
static size_t tokens_comment_start(const char *text, size_t len)
{
    for (size_t i = 0; i < len; ++i)
        if (text[i] == '#' && (i == 0 || text[i - 1] == ' ' || text[i - 1] == '\t'))
            return i;
    return len;
}

/* One token per line; blank lines and '#' comments ignored, surrounding whitespace trimmed.
 * Exits 2 when the file is unreadable or holds no token. */
static void tokens_load_file(tokens_t *t, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "neurond: cannot read --token-file '%s': %s\n", path, strerror(errno));
        exit(2);
    }
    char source[PATH_MAX + 32];
    snprintf(source, sizeof source, "--token-file '%s'", path);
    char line[HTTP_TOKEN_MAX + 64];
    int n_line = 0, before = t->n;
    while (fgets(line, sizeof line, f) != NULL) {
        ++n_line;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f)) {
            fprintf(stderr, "neurond: %s, line %d: token longer than %d bytes\n", source,
                    n_line, HTTP_TOKEN_MAX);
            exit(2);
        }
        char *p = line, *e = line + len;
        /* Editors on some systems begin a UTF-8 file with a byte order mark: not a token's. */
        if (n_line == 1 && strncmp(p, UTF8_BOM, strlen(UTF8_BOM)) == 0)
            p += strlen(UTF8_BOM);
        while (*p == ' ' || *p == '\t')
            ++p;
        while (e > p && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        e = p + tokens_comment_start(p, (size_t)(e - p));
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            --e;
        if (e == p)
            continue;
        tokens_add(t, p, (size_t)(e - p), source, "line", n_line);
    }
    int failed = ferror(f);
    explicit_bzero(line, sizeof line);
    fclose(f);
    if (failed) {
        fprintf(stderr, "neurond: cannot read --token-file '%s': read error\n", path);
        exit(2);
    }
    if (t->n == before) {
        fprintf(stderr, "neurond: --token-file '%s' contains no token\n", path);
        exit(2);
    }
}

/* NEUROND_TOKENS: tokens separated by commas or whitespace; a '#' where a token would start
 * begins a comment that runs to the end of its line (as in a token file). Set but empty exits
 * 2, since whoever set it meant to turn authentication on. */
static void tokens_load_env(tokens_t *t, const char *value)
{
    static const char seps[] = ", \t\r\n";
    int before = t->n, pos = 0;
    for (const char *p = value; *p != '\0';) {
        p += strspn(p, seps);
        if (*p == '#') {               /* a comment: skip to the end of its line */
            p += strcspn(p, "\n");
            continue;
        }
        size_t len = strcspn(p, seps);
        if (len > 0)
            tokens_add(t, p, len, "NEUROND_TOKENS", "token", ++pos);
        p += len;
    }
    if (t->n == before) {
        fprintf(stderr, "neurond: NEUROND_TOKENS is set but contains no token (unset it to run "
                "without authentication)\n");
        exit(2);
    }
}

static void tokens_free(char **tokens)
{
    if (tokens == NULL)
        return;
    for (char **t = tokens; *t != NULL; ++t) {
        explicit_bzero(*t, strlen(*t));
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
    /* Over a file size limit (ulimit -f) a write must fail with EFBIG, which SQLite reports
     * and we answer 503, instead of killing the daemon. */
    signal(SIGXFSZ, SIG_IGN);
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

/*
 * One daemon per database: a second one would mark the first one's running jobs interrupted
 * and train the same models beside it, each overwriting the other's commits. flock() on the
 * database file itself, held (the descriptor left open) for the life of the process: a lock
 * belongs to the file, not to the name, so a second daemon given a symbolic link, a hard link
 * or another spelling of the path is refused too, and the kernel releases it however the
 * process ends, kill -9 included. flock() and SQLite's fcntl() locks do not interact; the one
 * rule is that closing a descriptor of the database drops SQLite's fcntl() locks, so this one
 * is closed only after the store. Read-only suffices for flock() (a read-only database still
 * starts) and creating the file empty is what SQLite would do. Returns the descriptor, or
 * exits 1.
 */
static int db_lock_take(const char *db)
{
    int fd = open(db, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "neurond: cannot open database '%s': %s\n", db, strerror(errno));
        exit(1);
    }
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            fprintf(stderr, "neurond: database '%s' is in use by another neurond (it holds the "
                    "file's lock): stop that one first, or give this one another --db\n", db);
        else
            fprintf(stderr, "neurond: cannot lock '%s': %s\n", db, strerror(errno));
        close(fd);
        exit(1);
    }
    return fd;
}

/* What a previous process left unfinished: the jobs it was running (failed "interrupted" now)
 * and the models it was forking or deleting (removed). 0, or -1 with the reason printed.
 * Only where this process is the database's one user (SQLite, under its file lock): on
 * PostgreSQL other replicas may be running those jobs and forks right now, and a dead
 * replica's jobs are resumed by the live ones (jobs.c). */
static int db_recover(store_t *store, const char *db)
{
    err_t err = {0};
    int64_t interrupted = 0, purged = 0;
    if (strcmp(store_dialect(store), "sqlite") != 0)
        return 0;
    if (store_jobs_mark_interrupted(store, &interrupted, &err) < 0 ||
        store_models_purge(store, 0, &purged, &err) < 0) {
        fprintf(stderr, "neurond: cannot prepare database '%s': %s\n", store_display_name(db),
                err.msg);
        return -1;
    }
    if (interrupted > 0)
        log_msg(LOG_LEVEL_WARN, "marked %" PRId64 " job(s) of a previous run as interrupted",
                interrupted);
    if (purged > 0)
        log_msg(LOG_LEVEL_WARN, "removed %" PRId64 " model(s) a previous run left half forked "
                "or half deleted", purged);
    return 0;
}

/* neurond --backup OUT --db FILE: copy FILE as one committed state (a running daemon may keep
 * writing it), without creating or migrating it, and exit: 0 when OUT is written, else 1. */
static int backup_run(const config_t *cfg)
{
    err_t err = {0};
    int version = 0;
    if (store_backup_file(cfg->db, cfg->backup, &version, &err) < 0) {
        fprintf(stderr, "neurond: backup of '%s' failed: %s\n", store_display_name(cfg->db),
                err.msg);
        return 1;
    }
    printf("neurond: backed up '%s' (schema v%d) to '%s'\n", cfg->db, version, cfg->backup);
    return 0;
}

int main(int argc, char **argv)
{
    /* Before anything else: on success the process starts over with a fitting kernel. */
    const int kernel_exec_failed = blas_kernel_fit(argv) < 0;
    const int kernel_exec_errno = errno;
    config_t cfg;
    config_parse(&cfg, argc, argv);
    log_set_level(cfg.log_level);
    if (kernel_exec_failed)
        log_msg(LOG_LEVEL_WARN, "OpenBLAS runs its generic %s kernel on this CPU and "
                "re-executing with " BLAS_CORETYPE_ENV "=%s failed (%s): matrix products run "
                "several times slower (docs/operations.md)", blas_kernel_name(),
                blas_kernel_for_cpu(), strerror(kernel_exec_errno));
    if (cfg.backup != NULL)
        return backup_run(&cfg);
    if (signals_install() < 0) {
        fprintf(stderr, "neurond: cannot install signal handlers: %s\n", strerror(errno));
        return 1;
    }
    tokens_t tok = {0};
    if (cfg.token_file != NULL)
        tokens_load_file(&tok, cfg.token_file);
    const char *env_tokens = getenv("NEUROND_TOKENS");
    if (env_tokens != NULL)
        tokens_load_env(&tok, env_tokens);
    char **tokens = tok.v;
    if (tokens == NULL && cfg.protect_all)
        log_msg(LOG_LEVEL_WARN, "--protect-all has no effect without tokens (--token-file or "
                "NEUROND_TOKENS)");
    if (tokens == NULL && strcmp(cfg.bind, "127.0.0.1") != 0 && strcmp(cfg.bind, "::1") != 0)
        log_msg(LOG_LEVEL_WARN, "listening on %s without tokens: anyone who can reach it can "
                "read and change every model (see docs/security.md)", cfg.bind);

    /* Before the database is touched: migrations and marking jobs interrupted belong to the
     * one daemon that owns it. Held until the process exits. */
    /* A PostgreSQL database is shared by replicas: no lock (docs/operations.md). */
    int db_lock = store_address_is_file(cfg.db) ? db_lock_take(cfg.db) : -1;
    err_t err = {0};
    store_t *store = NULL;
    if (store_open(cfg.db, &store, &err) < 0) {
        fprintf(stderr, "neurond: cannot open database '%s': %s\n", store_display_name(cfg.db),
                err.msg);
        tokens_free(tokens);
        return 1;
    }
    if (db_recover(store, cfg.db) < 0) {
        store_close(store);
        tokens_free(tokens);
        return 1;
    }
    pool_t *pool = NULL;       /* the compute threads every model shares */
    registry_t *registry = NULL;
    if (pool_new((int32_t)cfg.compute_threads, &pool, &err) < 0 ||
        registry_new(store, pool, &registry, &err) < 0) {
        fprintf(stderr, "neurond: %s\n", err.msg);
        pool_free(pool);
        store_close(store);
        tokens_free(tokens);
        return 1;
    }
    /* The pool's threads share the large matrix products (model_set_pool): OpenBLAS's own
     * threads would compete with them. */
    blas_threads_one();

    app_t app = {.store = store, .version = NEUROND_VERSION, .threads = cfg.threads,
                 .job_lease_ms = cfg.job_lease * 1000};
    app.limits = (app_limits_t){
        .max_body = (size_t)cfg.max_body, .max_batch_rows = cfg.max_batch_rows,
        .max_model_rows = cfg.max_model_rows, .max_params = cfg.max_params,
        .max_work_values = cfg.max_work_values,
        .max_layers = (int32_t)cfg.max_layers, .max_units = (int32_t)cfg.max_units,
        .max_graph_nodes = (int32_t)cfg.max_graph_nodes, .max_depth = (int32_t)cfg.max_depth,
        .max_jobs = cfg.max_jobs, .max_sync_runs = cfg.max_sync_runs,
        /* Replicas share a queue; one SQLite process answers a job it cannot start with 429. */
        .max_queue = cfg.max_queue >= 0 ? cfg.max_queue
                     : strcmp(store_dialect(store), "sqlite") == 0 ? 0 : MAX_QUEUE_DEFAULT};
    app.registry = registry;
    jobs_t *jobs = NULL;
    if (jobs_new(&app, &jobs, &err) < 0) {
        fprintf(stderr, "neurond: %s\n", err.msg);
        registry_free(registry);
        pool_free(pool);
        store_close(store);
        tokens_free(tokens);
        return 1;
    }
    app.jobs = jobs;
    if (events_new(cfg.max_streams, &app.events, &err) < 0) {
        fprintf(stderr, "neurond: %s\n", err.msg);
        jobs_free(jobs);
        registry_free(registry);
        pool_free(pool);
        store_close(store);
        tokens_free(tokens);
        return 1;
    }
    /* A session holds its rows in use, so with no data cache there are no sessions either. */
    if ((app.data_cache = datacache_new(cfg.data_cache)) == NULL ||
        (app.sessions = sessions_new(cfg.data_cache > 0 ? TRAIN_SESSIONS : 0)) == NULL) {
        datacache_free(app.data_cache);
        fprintf(stderr, "neurond: out of memory\n");
        events_free(app.events);
        jobs_free(jobs);
        registry_free(registry);
        pool_free(pool);
        store_close(store);
        tokens_free(tokens);
        return 1;
    }
#define ROUTE_ENTRY(name) name,
    static const http_route_t *const tables[] = {ROUTE_TABLES(ROUTE_ENTRY) NULL};
#undef ROUTE_ENTRY
    http_config_t hc = {.bind = cfg.bind, .port = (uint16_t)cfg.port,
                        .threads = (unsigned)cfg.threads, .max_body = (size_t)cfg.max_body,
                        .conn_limit = (unsigned)cfg.max_connections,
                        .conn_timeout_s = (unsigned)cfg.idle_timeout, .tables = tables,
                        .tokens = (const char *const *)tokens, .protect_all = cfg.protect_all,
                        .sinks = routes_data_sinks, .ctx = &app};
    http_server_t *srv = NULL;
    int v6 = strchr(cfg.bind, ':') != NULL;
    /* On PostgreSQL the streams here also follow runs on other replicas, through the database
     * (relay.h): listening before the server starts, so no announcement is missed. */
    if ((!store_address_is_file(cfg.db) &&
         relay_new(store, app.events, &app.replica_id, &app.relay, &err) < 0) ||
        health_start(store, &app.health, &err) < 0 || http_server_start(&hc, &srv, &err) < 0) {
        fprintf(stderr, "neurond: %s\n", err.msg);
        health_stop(app.health);
        relay_free(app.relay);
        events_free(app.events);
        jobs_free(jobs);
        sessions_free(app.sessions);
        datacache_free(app.data_cache);
        registry_free(registry);
        pool_free(pool);
        store_close(store);
        tokens_free(tokens);
        return 1;
    }
    const char *auth = tokens == NULL ? ", no auth"
                       : cfg.protect_all ? ", auth on every path but /healthz"
                                         : ", auth on /v1/";
    tokens_free(tokens);       /* the server keeps its own copy */
    tokens = NULL;
    /* Registered once the port is known (--port 0 picks one): the address is what the row
     * shows. Until then requests see replica 0 (app.h). */
    char address[300];
    if (cfg.advertise != NULL)
        snprintf(address, sizeof address, "%s", cfg.advertise);
    else
        snprintf(address, sizeof address, "%s%s%s:%u", v6 ? "[" : "", cfg.bind, v6 ? "]" : "",
                 (unsigned)http_server_port(srv));
    int exit_code = 0;
    replica_t *replica = NULL;
    if (replica_start(store, address, NEUROND_VERSION, cfg.job_lease * 1000, &app.replica_id,
                      &replica, &err) < 0) {
        fprintf(stderr, "neurond: cannot register this replica in database '%s': %s\n",
                store_display_name(cfg.db), err.msg);
        exit_code = 1;         /* shut down what started, in the usual order */
    } else if (jobs_start(jobs, &err) < 0) {
        fprintf(stderr, "neurond: %s\n", err.msg);
        exit_code = 1;
    }
    if (exit_code == 0) {
        printf("neurond listening on %s%s%s:%u\n", v6 ? "[" : "", cfg.bind, v6 ? "]" : "",
               (unsigned)http_server_port(srv));
        fflush(stdout);
        log_msg(LOG_LEVEL_INFO, "neurond %s listening on %s port %u (db %s, %" PRId64
                " threads, schema v%d%s, replica %" PRId64 " at %s, blas kernel %s)",
                NEUROND_VERSION, cfg.bind, (unsigned)http_server_port(srv),
                store_display_name(cfg.db), cfg.threads, store_schema_version(store), auth,
                atomic_load(&app.replica_id), address, blas_kernel_name());
        int sig = signal_wait();
        log_msg(LOG_LEVEL_INFO, "signal %d: shutting down", sig);
    }
    atomic_store(&app.stopping, 1);  /* sync runs stop at a step boundary, committed */
    jobs_shutdown(jobs);       /* so do jobs; their threads end */
    events_shutdown(app.events);
    relay_stop(app.relay);     /* no more events from other replicas; ours are still announced */
    http_server_stop(srv);     /* stop accepting, finish running requests, end streams */
    health_stop(app.health);   /* no probe reads it now */
    replica_stop(replica);     /* leaves the cluster view now, not after the lease */
    events_free(app.events);   /* drop the event streams' references */
    relay_free(app.relay);
    jobs_free(jobs);
    sessions_free(app.sessions);
    datacache_free(app.data_cache);
    registry_free(registry);   /* after every user of the models has stopped */
    pool_free(pool);
    store_close(store);
    if (db_lock >= 0)
        close(db_lock);        /* after the last write: the next daemon may start now */
    log_msg(LOG_LEVEL_INFO, "stopped");
    return exit_code;
}
