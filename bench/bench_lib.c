/* bench/bench_lib.c -- the C side of scripts/bench: libneuron timed directly, the machine's
 * ceilings, and the data every runner shares.
 *
 * Subcommands (each prints one JSON object per line on stdout; errors go to stderr, exit 1):
 *
 *   gen WORKLOAD.json DIR        data and θ0 for one workload: DIR/<name>.data holds rows ×
 *                                (n_x + n_y) little-endian float64, row major, labels last (the
 *                                layout POST /batches takes as application/octet-stream), and
 *                                DIR/<name>.theta0 the model's initial flat parameters as
 *                                model_new() builds them from the spec's init seed. The Python
 *                                peers read both files, so every runner sees identical numbers.
 *   run WORKLOAD.json DIR [--steps N] [--warmup K] [--threads T] [--profile P] [--settle-ms S]
 *                                K warm-up updates through train_run (reports loss at θ0 and θK
 *                                for the cross-check), S ms more of them untimed with θ then put
 *                                back (bench_settle), then one train_run of N+2 full-batch
 *                                steps whose per-step times are taken between consecutive
 *                                progress callbacks (CLOCK_MONOTONIC), then one plain train_run
 *                                of N steps timed as a whole (what POST /train is compared
 *                                with), then P steps with every cblas_dgemm call timed.
 *   ceil [--smoke] [--threads T] [--x-bytes B]
 *                                dgemm GFLOP/s (square 2000, 1 and T threads, best of 5),
 *                                triad a = b + s·c GB/s over 3 × 256 MiB with T pthreads
 *                                (STREAM's byte count: 24 bytes per element, best of 10),
 *                                read GB/s: the same T threads summing b and c, nothing written,
 *                                and with B the one-pass floor: T compute threads reading one
 *                                array of B bytes again and again (best of 50 and of 0.5 s).
 *   products WORKLOAD.json [--threads T] [--reps R] [--batch-size B]
 *                                cblas_dgemm alone on the products of one full-batch step of
 *                                the workload (forward, weight gradient, input gradient above
 *                                the first layer; their shapes and transposes), best of R each.
 *                                With B: the products of one mini-batch epoch instead, those of
 *                                a B-row step once per batch, plus the forward products on all
 *                                rows that the call's loss_after needs (each as Z = X·Wᵀ or
 *                                Zᵀ = W·Xᵀ, whichever is faster); each shape timed once.
 *   epoch WORKLOAD.json DIR [--batch-size B] [--epochs E] [--warmup K] [--threads T] [--settle-ms S]
 *                                K warm-up mini-batches, S ms more of them untimed
 *                                (bench_settle), then E train_run calls of one shuffled
 *                                mini-batch epoch each, timed.
 *   lbfgs WORKLOAD.json DIR [--target L] [--max-steps S] [--reps R] [--threads T]
 *                                time for a fresh model to reach loss <= L with lbfgs; prints
 *                                {"available":false,...} while optim_new() rejects the method.
 *   body --format csv|json|raw --bytes B --out FILE
 *                                an ingest body of about B bytes: rows of 100 features in
 *                                [-1,1) printed "%.6g", label 0/1 (raw: float64, label last).
 *   selftest                     tiny versions of all of the above in a temporary directory;
 *                                registered with CTest so the harness cannot rot.
 *
 * Built only with NEUROND_BENCH=ON (bench/CMakeLists.txt), linked with
 * -Wl,--wrap=cblas_dgemm so libneuron's matrix products can be timed in place.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <cjson/cJSON.h>

#include "blas.h"
#include "codec.h"
#include "model.h"
#include "optim.h"
#include "rng.h"
#include "tensor.h"
#include "train.h"

/* OpenBLAS extensions (declared in its cblas.h on Debian, repeated for other layouts). */
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);
char *openblas_get_config(void);

/* ------------------------------------------------------------------ small helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_lib: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        die("out of memory (%zu bytes)", n);
    return p;
}

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        die("%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = xmalloc((size_t)n + 1);
    if (n > 0 && fread(s, 1, (size_t)n, f) != (size_t)n)
        die("%s: short read", path);
    s[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return s;
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        die("%s: %s", path, strerror(errno));
    if (n > 0 && fwrite(p, 1, n, f) != n)
        die("%s: short write", path);
    if (fclose(f) != 0)
        die("%s: %s", path, strerror(errno));
}

/* Read exactly n bytes of a file into a new buffer. */
static void *read_exact(const char *path, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        die("%s: %s (run `gen` first)", path, strerror(errno));
    void *p = xmalloc(n);
    if (n > 0 && fread(p, 1, n, f) != n)
        die("%s: shorter than the %zu bytes the workload needs", path, n);
    fclose(f);
    return p;
}

static const char *arg_value(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 0; i + 1 < argc; ++i)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return def;
}

/* An integer option, at least `min`: anything else ends the run with a message. */
static int64_t arg_int(int argc, char **argv, const char *name, const char *def, int64_t min)
{
    const char *s = arg_value(argc, argv, name, def);
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min)
        die("%s must be an integer >= %lld, got '%s'", name, (long long)min, s);
    return v;
}

static int arg_flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; ++i)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

/* ------------------------------------------------------------------ dgemm accounting */

/* With -Wl,--wrap=cblas_dgemm every call from libneuron lands here. Counting is off except
 * during the profiling pass, so the timed steps pay one predictable branch per product.
 * libneuron cuts a large product into parts that its compute threads run at once, so two sums
 * are kept: thread time (every call's own duration, added up) and wall time (while at least one
 * call runs), the share of the step that products take. The lock is held only around the
 * bookkeeping, never across a product. */
void __real_cblas_dgemm(const enum CBLAS_ORDER o, const enum CBLAS_TRANSPOSE ta,
                        const enum CBLAS_TRANSPOSE tb, const blasint m, const blasint n,
                        const blasint k, const double alpha, const double *a, const blasint lda,
                        const double *b, const blasint ldb, const double beta, double *c,
                        const blasint ldc);

static pthread_mutex_t g_gemm_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    volatile int on;
    int trace;
    int64_t calls;
    double flop;
    uint64_t ns;          /* thread time */
    uint64_t wall_ns;     /* time with at least one product running */
    int active;           /* products running now */
    uint64_t active_since;
    int n_shape;
    struct {
        int ta, tb, m, n, k;
        int64_t calls;
        uint64_t ns;
    } shape[16];   /* per distinct product shape, for the report's fold-out */
} g_gemm;

void __wrap_cblas_dgemm(const enum CBLAS_ORDER o, const enum CBLAS_TRANSPOSE ta,
                        const enum CBLAS_TRANSPOSE tb, const blasint m, const blasint n,
                        const blasint k, const double alpha, const double *a, const blasint lda,
                        const double *b, const blasint ldb, const double beta, double *c,
                        const blasint ldc)
{
    if (!g_gemm.on) {
        __real_cblas_dgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    pthread_mutex_lock(&g_gemm_lock);
    const uint64_t t0 = now_ns();
    if (g_gemm.active++ == 0)
        g_gemm.active_since = t0;
    pthread_mutex_unlock(&g_gemm_lock);
    __real_cblas_dgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    pthread_mutex_lock(&g_gemm_lock);
    const uint64_t t1 = now_ns(), dt = t1 - t0;
    if (--g_gemm.active == 0)
        g_gemm.wall_ns += t1 - g_gemm.active_since;
    g_gemm.ns += dt;
    if (g_gemm.trace)   /* BENCH_GEMM_TRACE=1: every product of the profiling pass on stderr */
        fprintf(stderr, "dgemm %s%s m=%d n=%d k=%d lda=%d ldb=%d ldc=%d beta=%g %.3f ms\n",
                ta == CblasTrans ? "T" : "N", tb == CblasTrans ? "T" : "N", (int)m, (int)n,
                (int)k, (int)lda, (int)ldb, (int)ldc, beta, (double)dt / 1e6);
    g_gemm.calls++;
    g_gemm.flop += 2.0 * (double)m * (double)n * (double)k;
    int i = 0;
    while (i < g_gemm.n_shape &&
           !(g_gemm.shape[i].ta == (ta == CblasTrans) && g_gemm.shape[i].tb == (tb == CblasTrans) &&
             g_gemm.shape[i].m == m && g_gemm.shape[i].n == n && g_gemm.shape[i].k == k))
        ++i;
    if (i == g_gemm.n_shape && i < 16) {
        g_gemm.shape[i].ta = ta == CblasTrans;
        g_gemm.shape[i].tb = tb == CblasTrans;
        g_gemm.shape[i].m = m;
        g_gemm.shape[i].n = n;
        g_gemm.shape[i].k = k;
        g_gemm.n_shape++;
    }
    if (i < 16) {
        g_gemm.shape[i].calls++;
        g_gemm.shape[i].ns += dt;
    }
    pthread_mutex_unlock(&g_gemm_lock);
}

/* ------------------------------------------------------------------ workloads */

typedef struct workload {
    char name[64];
    char task[32];       /* binary | class | regression */
    int64_t rows;
    uint64_t data_seed;
    cJSON *root;         /* the whole workload file */
    model_spec_t spec;   /* resolved */
} workload_t;

static void workload_load_json(workload_t *w, cJSON *root, const char *what)
{
    memset(w, 0, sizeof *w);
    w->root = root;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(root, "task");
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "rows");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(root, "data_seed");
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(root, "spec");
    if (!cJSON_IsString(name) || !cJSON_IsString(task) || !cJSON_IsNumber(rows) ||
        !cJSON_IsNumber(seed) || !cJSON_IsObject(spec))
        die("%s: needs name, task, rows, data_seed and spec", what);
    snprintf(w->name, sizeof w->name, "%s", name->valuestring);
    snprintf(w->task, sizeof w->task, "%s", task->valuestring);
    w->rows = (int64_t)rows->valuedouble;
    w->data_seed = (uint64_t)seed->valuedouble;
    if (w->rows < 1 || w->rows > INT32_MAX)
        die("%s: rows=%lld out of range", what, (long long)w->rows);
    err_t err = {0};
    if (codec_spec_decode(spec, &w->spec, &err) < 0 ||
        model_spec_resolve(&w->spec, INT64_MAX, &err) < 0)
        die("%s: spec: %s", what, err.msg);
}

static void workload_load(workload_t *w, const char *path)
{
    size_t len;
    char *text = read_text(path, &len);
    cJSON *root = NULL;
    err_t err = {0};
    if (codec_parse(text, len, 64, &root, &err) < 0)
        die("%s: %s", path, err.msg);
    free(text);
    workload_load_json(w, root, path);
}

static void workload_free(workload_t *w)
{
    model_spec_free(&w->spec);
    cJSON_Delete(w->root);
}

/* The compute threads every model of this process shares, as the daemon's --compute-threads
 * (default: one per online core). Made on first use, freed at exit. */
static pool_t *bench_pool;

static void bench_pool_free(void)
{
    pool_free(bench_pool);
}

static pool_t *bench_pool_get(void)
{
    if (bench_pool == NULL) {
        err_t err = {0};
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        if (pool_new(cores < 1 ? 1 : cores > POOL_MAX_THREADS ? POOL_MAX_THREADS : (int32_t)cores,
                     &bench_pool, &err) < 0)
            die("pool_new: %s", err.msg);
        atexit(bench_pool_free);
    }
    return bench_pool;
}

static model_t *workload_model(const workload_t *w, const model_spec_t *spec)
{
    model_t *m = NULL;
    err_t err = {0};
    pool_t *pool = bench_pool_get();
    if (model_new(spec != NULL ? spec : &w->spec, &m, &err) < 0)
        die("%s: model_new: %s", w->name, err.msg);
    model_set_pool(m, pool);
    return m;
}

static void data_paths(const workload_t *w, const char *dir, char *data, char *theta, size_t n)
{
    snprintf(data, n, "%s/%s.data", dir, w->name);
    snprintf(theta, n, "%s/%s.theta0", dir, w->name);
}

/* Rows of x then labels, row-major [x | y], from the workload's task and data_seed. The
 * teacher and the formulas are documented in bench/README.md. */
static double *gen_data(const workload_t *w, int32_t n_x, int32_t n_y)
{
    const int64_t rows = w->rows, cols = n_x + n_y;
    double *d = xmalloc((size_t)(rows * cols) * sizeof *d);
    rng_t r;
    rng_seed(&r, w->data_seed);
    int32_t k = n_y;   /* label columns, or classes for the class task */
    if (strcmp(w->task, "class") == 0) {
        k = w->spec.kind == MODEL_KIND_MLP ? w->spec.outputs : w->spec.classes;
        if (n_y != 1 || k < 2)
            die("%s: task class needs one label column and >= 2 classes", w->name);
    } else if (strcmp(w->task, "binary") != 0 && strcmp(w->task, "regression") != 0) {
        die("%s: task must be binary, class or regression", w->name);
    }
    double *teacher = xmalloc((size_t)k * (size_t)(n_x + 1) * sizeof *teacher);
    const double gain = 3.0 / sqrt((double)n_x);
    for (int64_t i = 0; i < (int64_t)k * (n_x + 1); ++i)
        teacher[i] = rng_normal(&r) * gain;
    double *z = xmalloc((size_t)k * sizeof *z);
    for (int64_t i = 0; i < rows; ++i) {
        double *x = d + i * cols, *y = x + n_x;
        for (int32_t j = 0; j < n_x; ++j)
            x[j] = strcmp(w->task, "class") == 0 ? rng_uniform(&r) : 2.0 * rng_uniform(&r) - 1.0;
        for (int32_t c = 0; c < k; ++c) {
            const double *t = teacher + (int64_t)c * (n_x + 1);
            double s = t[0];
            for (int32_t j = 0; j < n_x; ++j)
                s += t[j + 1] * (strcmp(w->task, "class") == 0 ? x[j] - 0.5 : x[j]);
            z[c] = s;
        }
        if (strcmp(w->task, "binary") == 0) {
            for (int32_t c = 0; c < n_y; ++c)
                y[c] = rng_uniform(&r) < 1.0 / (1.0 + exp(-z[c])) ? 1.0 : 0.0;
        } else if (strcmp(w->task, "regression") == 0) {
            for (int32_t c = 0; c < n_y; ++c)
                y[c] = z[c] + 0.1 * rng_normal(&r);
        } else {
            int32_t best = 0;
            double bz = -INFINITY;
            for (int32_t c = 0; c < k; ++c) {
                double u = rng_uniform(&r);
                double g = z[c] - log(-log(u > 0.0 ? u : 1e-300));   /* Gumbel: softmax draw */
                if (g > bz) {
                    bz = g;
                    best = c;
                }
            }
            y[0] = best;
        }
    }
    free(z);
    free(teacher);
    return d;
}

static int cmd_gen(const char *wpath, const char *dir)
{
    workload_t w;
    workload_load(&w, wpath);
    model_t *m = workload_model(&w, NULL);
    int32_t n_x = model_n_x(m), n_y = model_n_y(m);
    double *d = gen_data(&w, n_x, n_y);
    char dp[4096], tp[4096];
    data_paths(&w, dir, dp, tp, sizeof dp);
    size_t bytes = (size_t)(w.rows * (n_x + n_y)) * sizeof(double);
    write_file(dp, d, bytes);
    write_file(tp, model_params(m), (size_t)model_n_params(m) * sizeof(double));
    printf("{\"cmd\":\"gen\",\"workload\":\"%s\",\"rows\":%lld,\"n_x\":%d,\"n_y\":%d,"
           "\"n_params\":%lld,\"bytes\":%zu,\"x_bytes\":%zu}\n",
           w.name, (long long)w.rows, (int)n_x, (int)n_y, (long long)model_n_params(m), bytes,
           (size_t)(w.rows * n_x) * sizeof(double));
    free(d);
    model_free(m);
    workload_free(&w);
    return 0;
}

/* The data of a workload as a batch: [x | y] rows split into two arrays. */
typedef struct loaded {
    double *x, *y;
    batch_t b;
} loaded_t;

/* The daemon keeps a model's training rows in tensor_alloc_rows() memory (2 MiB-aligned, on
 * transparent huge pages; see store_batch_load_all), and numpy asks for huge pages too for
 * arrays of 4 MB and more: the rows libneuron trains on here, and the ceilings' arrays, come
 * from the same allocation, so every runner and the ceiling stream from the same kind of
 * memory. */
static double *xmalloc_huge(size_t bytes)
{
    double *p = tensor_alloc_rows(bytes);
    if (p == NULL)
        die("out of memory for %zu bytes", bytes);
    return p;
}

static void load_data(const workload_t *w, const char *dir, model_t *m, loaded_t *out)
{
    const int32_t n_x = model_n_x(m), n_y = model_n_y(m);
    const int64_t rows = w->rows, cols = n_x + n_y;
    char dp[4096], tp[4096];
    data_paths(w, dir, dp, tp, sizeof dp);
    double *d = read_exact(dp, (size_t)(rows * cols) * sizeof(double));
    out->x = xmalloc_huge((size_t)(rows * n_x) * sizeof(double));
    out->y = xmalloc((size_t)(rows * n_y) * sizeof(double));
    for (int64_t i = 0; i < rows; ++i) {
        memcpy(out->x + i * n_x, d + i * cols, (size_t)n_x * sizeof(double));
        memcpy(out->y + i * n_y, d + i * cols + n_x, (size_t)n_y * sizeof(double));
    }
    free(d);
    out->b = (batch_t){.rows = (int32_t)rows, .n_x = n_x, .n_y = n_y, .x = out->x, .y = out->y};
    /* θ0 on file must be what model_new() built here: the peers start from the file. */
    size_t np = (size_t)model_n_params(m);
    double *t0 = read_exact(tp, np * sizeof(double));
    if (memcmp(t0, model_params(m), np * sizeof(double)) != 0)
        die("%s: %s differs from model_new()'s initial parameters (stale data dir?)", w->name,
            tp);
    free(t0);
    err_t err = {0};
    if (model_check_labels(m, &out->b, &err) < 0)
        die("%s: labels: %s", w->name, err.msg);
}

static void loaded_free(loaded_t *l)
{
    free(l->x);
    free(l->y);
}

typedef struct stamp_ctx {
    uint64_t *t;
    int64_t n, cap;
} stamp_ctx_t;

static int on_row_stamp(void *ctx, const train_row_t *row)
{
    stamp_ctx_t *s = ctx;
    if (s->n < s->cap)
        s->t[s->n++] = now_ns();
    return 0;
}

/* Profiling pass: dgemm counting runs from the first callback to callback `last`. */
typedef struct prof_ctx {
    uint64_t *t;
    int64_t n, last;
} prof_ctx_t;

static int on_row_prof(void *ctx, const train_row_t *row)
{
    prof_ctx_t *p = ctx;
    if (p->n == p->last)
        g_gemm.on = 0;
    p->t[p->n] = now_ns();
    if (p->n == 0)
        g_gemm.on = 1;
    p->n++;
    return 0;
}

static void train_or_die(train_ctx_t *t, const train_req_t *req, int64_t *step,
                         const train_hooks_t *hooks, train_result_t *res, const char *what)
{
    err_t err = {0};
    if (train_run(t, req, step, hooks, res, &err) < 0)
        die("%s: train_run: %s", what, err.msg);
    if (res->stopped != TRAIN_STOP_MAX_STEPS)
        die("%s: train_run stopped with %s after %lld steps", what,
            train_stop_name(res->stopped), (long long)res->steps_run);
}

static void print_double(const char *key, double v, int comma)
{
    if (isfinite(v))
        printf("\"%s\":%.17g%s", key, v, comma ? "," : "");
    else
        printf("\"%s\":null%s", key, comma ? "," : "");
}

/* What a timed train_run needs for one workload: its model at θ0, its rows, an optimizer and
 * a training context over all rows. */
typedef struct bench_train {
    workload_t w;
    model_t *m;
    loaded_t data;
    optim_t *o;
    train_ctx_t *t;
    train_req_t req;   /* defaults, history_every 0: the timed calls record nothing */
    int64_t step;      /* the model's global step */
    int64_t warmup;    /* --warmup: untimed updates first */
    int64_t settle_ms; /* --settle-ms: then untimed work before the timed calls (bench_settle) */
    int threads;       /* --threads: OpenBLAS's; 0 leaves its default */
} bench_train_t;

/* Reads the options every timed run shares, --threads and --warmup (default `warmup_default`,
 * at least 1). */
static void bench_train_open(bench_train_t *bt, const char *wpath, const char *dir, int argc,
                             char **argv, const char *warmup_default)
{
    bt->threads = (int)arg_int(argc, argv, "--threads", "0", 0);
    bt->warmup = arg_int(argc, argv, "--warmup", warmup_default, 1);
    bt->settle_ms = arg_int(argc, argv, "--settle-ms", "0", 0);
    bt->step = 0;
    train_req_default(&bt->req);
    bt->req.history_every = 0;
    if (bt->threads > 0)
        openblas_set_num_threads(bt->threads);
    workload_load(&bt->w, wpath);
    bt->m = workload_model(&bt->w, NULL);
    /* As neurond: the compute threads share the large products; OpenBLAS runs one thread. */
    blas_threads_one();
    load_data(&bt->w, dir, bt->m, &bt->data);
    err_t err = {0};
    bt->o = NULL;
    bt->t = NULL;
    if (optim_new(&bt->w.spec.optimizer, model_n_params(bt->m), &bt->o, &err) < 0 ||
        train_ctx_new(bt->m, bt->o, &bt->data.b, &bt->t, &err) < 0)
        die("%s: %s", bt->w.name, err.msg);
}

/* Between the warm-up and the timed calls: the warm-up request (bt->req as it is), again and
 * again, untimed, until --settle-ms have passed. On a virtual machine the first tenths of a
 * second after a process has touched a hundred megabytes of fresh memory run slower (W1 steps
 * took 3.1 ms for the first sixteen steps after loading its rows and 2.1 ms after), and so do
 * the first tenths after the process sat idle: a pause instead of this work ends in such a
 * spell (the daemon's W1 calls after one: 36 ms for 10 steps, for a quarter of a second, then
 * 20 ms). Every runner settles alike, busy (scripts/bench).
 *
 * With `keep_theta`, θ, the optimizer state and the step are put back as the warm-up left
 * them, so full-batch steps start from the same θ however many of them fitted in. Epochs keep
 * where settling left them: their first call takes loss_before from the call before at the
 * same θ (train.c), which a θ put back would turn into one more pass over every row. */
static void bench_settle(bench_train_t *bt, int keep_theta)
{
    if (bt->settle_ms <= 0)
        return;
    const int64_t n = model_n_params(bt->m), n_state = optim_state_len(bt->o);
    double *kept = NULL;
    if (keep_theta) {
        kept = xmalloc((size_t)(n + n_state) * sizeof *kept);
        memcpy(kept, model_params(bt->m), (size_t)n * sizeof *kept);
        memcpy(kept + n, optim_state(bt->o), (size_t)n_state * sizeof *kept);
    }
    const int64_t step = bt->step;
    const uint64_t end = now_ns() + (uint64_t)bt->settle_ms * 1000000u;
    train_result_t res;
    while (now_ns() < end)
        train_or_die(bt->t, &bt->req, &bt->step, NULL, &res, bt->w.name);
    if (kept != NULL) {
        memcpy(model_params(bt->m), kept, (size_t)n * sizeof *kept);
        memcpy(optim_state(bt->o), kept + n, (size_t)n_state * sizeof *kept);
        bt->step = step;
        free(kept);
    }
}

static void bench_train_close(bench_train_t *bt)
{
    train_ctx_free(bt->t);
    optim_free(bt->o);
    loaded_free(&bt->data);
    model_free(bt->m);
    workload_free(&bt->w);
}

static int cmd_run(const char *wpath, const char *dir, int argc, char **argv)
{
    const int64_t steps = arg_int(argc, argv, "--steps", "20", 1);
    const int64_t prof = arg_int(argc, argv, "--profile", "3", 0);
    bench_train_t bt;
    bench_train_open(&bt, wpath, dir, argc, argv, "3");
    train_ctx_t *t = bt.t;
    const workload_t w = bt.w;
    train_result_t res;

    /* Warm-up: also the cross-check figures (loss at θ0 and at θ_warmup). */
    bt.req.steps = bt.warmup;
    train_or_die(t, &bt.req, &bt.step, NULL, &res, w.name);
    const double loss0 = res.loss_before, lossk = res.loss_after;
    bench_settle(&bt, 1);

    /* Per-step times: in a call of S steps the progress callback for row k-1 runs right after
     * the forward and backward pass at θ_k (k = 1..S-1), and the last one after the final
     * forward-only evaluation at θ_S. So with S = steps + 2 the first `steps` gaps between
     * callbacks are each exactly one full iteration: update, forward, backward, stop checks. */
    stamp_ctx_t sc = {.t = xmalloc((size_t)(steps + 2) * sizeof(uint64_t)), .n = 0,
                      .cap = steps + 2};
    train_hooks_t hooks = {.on_row = on_row_stamp, .ctx = &sc, .cancel = NULL};
    bt.req.steps = steps + 2;
    train_or_die(t, &bt.req, &bt.step, &hooks, &res, w.name);
    if (sc.n != steps + 2)
        die("%s: %lld progress callbacks for %lld steps", w.name, (long long)sc.n,
            (long long)(steps + 2));

    /* One train call of `steps` steps, as POST /train runs it (no history, no hooks). */
    bt.req.steps = steps;
    uint64_t c0 = now_ns();
    train_or_die(t, &bt.req, &bt.step, NULL, &res, w.name);
    const double call_ms = (double)(now_ns() - c0) / 1e6;
    const double call_elapsed_ms = res.elapsed_ms;

    /* Matrix products: every cblas_dgemm timed over `prof` full iterations, counted between
     * the same callbacks as above (so the final forward-only evaluation is left out). */
    double prof_step_ms = NAN;
    if (prof > 0) {
        memset(&g_gemm, 0, sizeof g_gemm);
        g_gemm.trace = getenv("BENCH_GEMM_TRACE") != NULL;
        prof_ctx_t pc = {.t = xmalloc((size_t)(prof + 2) * sizeof(uint64_t)), .n = 0,
                         .last = prof};
        train_hooks_t ph = {.on_row = on_row_prof, .ctx = &pc, .cancel = NULL};
        bt.req.steps = prof + 2;
        train_or_die(t, &bt.req, &bt.step, &ph, &res, w.name);
        g_gemm.on = 0;
        if (pc.n != prof + 2)
            die("%s: profile pass: %lld callbacks", w.name, (long long)pc.n);
        prof_step_ms = (double)(pc.t[prof] - pc.t[0]) / 1e6 / (double)prof;
        free(pc.t);
    }

    printf("{\"runner\":\"lib\",\"workload\":\"%s\",\"threads\":%d,\"corename\":\"%s\",",
           w.name, bt.threads, openblas_get_corename());
    print_double("loss0", loss0, 1);
    print_double("lossk", lossk, 1);
    printf("\"warmup\":%lld,\"steps\":%lld,\"step_us\":[", (long long)bt.warmup, (long long)steps);
    for (int64_t i = 0; i < steps; ++i)
        printf("%s%.3f", i ? "," : "", (double)(sc.t[i + 1] - sc.t[i]) / 1e3);
    printf("],\"train_call_ms\":%.3f,\"train_call_elapsed_ms\":%.3f,", call_ms, call_elapsed_ms);
    if (prof > 0) {
        printf("\"gemm\":{\"steps\":%lld,\"calls_per_step\":%.2f,\"gflop_per_step\":%.6f,"
               "\"ms_per_step\":%.4f,\"wall_ms_per_step\":%.4f,\"step_ms\":%.4f,\"shapes\":[",
               (long long)prof, (double)g_gemm.calls / (double)prof,
               g_gemm.flop / 1e9 / (double)prof, (double)g_gemm.ns / 1e6 / (double)prof,
               (double)g_gemm.wall_ns / 1e6 / (double)prof, prof_step_ms);
        for (int i = 0; i < g_gemm.n_shape; ++i)
            printf("%s{\"op\":\"%s%s\",\"m\":%d,\"n\":%d,\"k\":%d,\"calls_per_step\":%.2f,"
                   "\"ms_per_step\":%.4f}",
                   i ? "," : "", g_gemm.shape[i].ta ? "T" : "N", g_gemm.shape[i].tb ? "T" : "N",
                   g_gemm.shape[i].m, g_gemm.shape[i].n, g_gemm.shape[i].k,
                   (double)g_gemm.shape[i].calls / (double)prof,
                   (double)g_gemm.shape[i].ns / 1e6 / (double)prof);
        printf("]}}\n");
    } else {
        printf("\"gemm\":null}\n");
    }
    fflush(stdout);

    free(sc.t);
    bench_train_close(&bt);
    return 0;
}

/* ------------------------------------------------------------------ ceilings */

static double dgemm_gflops(int n, int threads, int reps)
{
    openblas_set_num_threads(threads);
    size_t nn = (size_t)n * (size_t)n;
    double *a = xmalloc(nn * sizeof *a), *b = xmalloc(nn * sizeof *b), *c = xmalloc(nn * sizeof *c);
    rng_t r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < nn; ++i) {
        a[i] = rng_uniform(&r) - 0.5;
        b[i] = rng_uniform(&r) - 0.5;
        c[i] = 0.0;
    }
    double best = 0.0;
    for (int i = 0; i < reps + 1; ++i) {   /* the first run warms the threads and pages */
        uint64_t t0 = now_ns();
        __real_cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n,
                           0.0, c, n);
        double s = (double)(now_ns() - t0) / 1e9;
        double g = 2.0 * (double)n * n * n / s / 1e9;
        if (i > 0 && g > best)
            best = g;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

typedef struct triad_arg {
    double *a, *b, *c;
    size_t lo, hi;
    double s;
    int init;
} triad_arg_t;

static void *triad_worker(void *p)
{
    triad_arg_t *t = p;
    if (t->init) {   /* first touch from the thread that will use the pages */
        for (size_t i = t->lo; i < t->hi; ++i) {
            t->a[i] = 0.0;
            t->b[i] = 1.0;
            t->c[i] = 2.0;
        }
        return NULL;
    }
    double *restrict a = t->a;
    const double *restrict b = t->b, *restrict c = t->c;
    const double s = t->s;
    for (size_t i = t->lo; i < t->hi; ++i)
        a[i] = b[i] + s * c[i];
    return NULL;
}

static void triad_pass(triad_arg_t *args, int threads)
{
    pthread_t th[64];
    for (int i = 0; i < threads; ++i)
        if (pthread_create(&th[i], NULL, triad_worker, &args[i]) != 0)
            die("pthread_create failed");
    for (int i = 0; i < threads; ++i)
        pthread_join(th[i], NULL);
}

/* Read sums: Σ a[lo..hi) with four independent sums of the widest vectors the CPU loads
 * (read_span_pick: AVX2's 32 bytes; SSE2's 16 read 80 MB 13 % slower), so memory, not the adder,
 * sets the pace; nothing is written. */
typedef double v4d_t __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) double read_span(const double *a, size_t lo,
                                                              size_t hi)
{
    v4d_t acc[4] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
    size_t i = lo;
    for (; i + 16 <= hi; i += 16)
        for (int k = 0; k < 4; ++k) {
            v4d_t v;
            memcpy(&v, a + i + 4 * (size_t)k, sizeof v);
            acc[k] += v;
        }
    double sum = 0.0;
    for (int k = 0; k < 4; ++k)
        sum += (acc[k][0] + acc[k][1]) + (acc[k][2] + acc[k][3]);
    for (; i < hi; ++i)
        sum += a[i];
    return sum;
}

static double read_span_sse2(const double *a, size_t lo, size_t hi)
{
    return read_span(a, lo, hi);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static double read_span_avx2(const double *a, size_t lo,
                                                             size_t hi)
{
    return read_span(a, lo, hi);
}
#endif

static double (*read_span_fn)(const double *, size_t, size_t) = read_span_sse2;

/* The widest loads this CPU has, for both read ceilings. */
static void read_span_pick(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        read_span_fn = read_span_avx2;
#endif
}

/* Read bandwidth: every thread sums its share of two arrays the triad already first-touched. */
typedef struct read_arg {
    const double *b, *c;
    size_t lo, hi;
    double sum;
} read_arg_t;

static void *read_worker(void *p)
{
    read_arg_t *r = p;
    r->sum = read_span_fn(r->b, r->lo, r->hi) + read_span_fn(r->c, r->lo, r->hi);
    return NULL;
}

static double read_gbs(const double *b, const double *c, size_t n, int threads, int reps,
                       double *check)
{
    read_arg_t args[64];
    pthread_t th[64];
    double best = 0.0;
    for (int r = 0; r < reps + 1; ++r) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < threads; ++i) {
            args[i] = (read_arg_t){.b = b, .c = c, .lo = n * (size_t)i / (size_t)threads,
                                   .hi = n * (size_t)(i + 1) / (size_t)threads};
            if (pthread_create(&th[i], NULL, read_worker, &args[i]) != 0)
                die("pthread_create failed");
        }
        double sum = 0.0;
        for (int i = 0; i < threads; ++i) {
            pthread_join(th[i], NULL);
            sum += args[i].sum;
        }
        double s = (double)(now_ns() - t0) / 1e9;
        double g = 2.0 * (double)n * sizeof(double) / s / 1e9;
        if (r > 0 && g > best)
            best = g;
        *check = sum;
    }
    return best;
}

static double triad_gbs(size_t n, int threads, int reps, double *check, double *read_bw,
                        double *read_check)
{
    if (threads > 64)
        threads = 64;
    double *a = xmalloc_huge(n * sizeof *a), *b = xmalloc_huge(n * sizeof *b),
           *c = xmalloc_huge(n * sizeof *c);
    triad_arg_t args[64];
    for (int i = 0; i < threads; ++i)
        args[i] = (triad_arg_t){.a = a, .b = b, .c = c, .lo = n * (size_t)i / (size_t)threads,
                                .hi = n * (size_t)(i + 1) / (size_t)threads, .s = 3.0, .init = 1};
    triad_pass(args, threads);
    for (int i = 0; i < threads; ++i)
        args[i].init = 0;
    double best = 0.0;
    for (int r = 0; r < reps + 1; ++r) {
        uint64_t t0 = now_ns();
        triad_pass(args, threads);
        double s = (double)(now_ns() - t0) / 1e9;
        double g = 3.0 * (double)n * sizeof(double) / s / 1e9;
        if (r > 0 && g > best)
            best = g;
    }
    *check = a[n / 2];   /* 1 + 3·2 = 7: the loop really ran */
    *read_bw = read_gbs(b, c, n, threads, reps, read_check);
    free(a);
    free(b);
    free(c);
    return best;
}

/* The one-pass workloads' floor: one read of an array the size of their X, as a step reads it,
 * on the compute threads a step runs on (pool_run, one part per thread) and again and again, so
 * the array is wherever a step finds X (the last-level cache, when it is large enough). */
typedef struct read_x {
    const double *a;
    size_t n;
    int32_t parts;
    double sum[POOL_MAX_THREADS];
} read_x_t;

/* Part `part`'s elements [*lo, *hi): parts start on 64-byte lines, as the rows of X a step's
 * parts take do (nearly). */
static void read_x_span(const read_x_t *r, int32_t part, size_t *lo, size_t *hi)
{
    *lo = (r->n * (size_t)part / (size_t)r->parts) & ~(size_t)7;
    *hi = part + 1 == r->parts ? r->n : (r->n * (size_t)(part + 1) / (size_t)r->parts) & ~(size_t)7;
}

static void read_x_part(void *ctx, int32_t part)
{
    read_x_t *r = ctx;
    size_t lo, hi;
    read_x_span(r, part, &lo, &hi);
    r->sum[part] = read_span_fn(r->a, lo, hi);
}

/* The first touch, by the part that reads the same elements later. */
static void fill_part(void *ctx, int32_t part)
{
    read_x_t *r = ctx;
    size_t lo, hi;
    read_x_span(r, part, &lo, &hi);
    double *a = (double *)r->a;
    for (size_t i = lo; i < hi; ++i)
        a[i] = 1.0;
}

/* GB/s of the best of at least `reps` reads, timed for at least `min_s` seconds: on a virtual
 * machine the first tenths of a second after touching fresh memory run slower. */
static double read_x_gbs(size_t bytes, int threads, int reps, double min_s)
{
    pool_t *pool = bench_pool_get();
    const size_t n = bytes / sizeof(double);
    double *a = xmalloc_huge(n * sizeof *a);
    if (threads > pool_threads(pool))
        threads = pool_threads(pool);
    read_x_t r = {.a = a, .n = n, .parts = threads};
    pool_run(pool, threads, fill_part, &r);   /* first touch by the threads that read */
    double best = 0.0;
    const uint64_t start = now_ns();
    for (int i = 0; i < reps || (double)(now_ns() - start) / 1e9 < min_s; ++i) {
        const uint64_t t0 = now_ns();
        pool_run(pool, threads, read_x_part, &r);
        const double s = (double)(now_ns() - t0) / 1e9;
        double sum = 0.0;
        for (int32_t p = 0; p < threads; ++p)
            sum += r.sum[p];
        if (sum != (double)n)   /* every element is 1: exact in double below 2^53 */
            die("read: wrong sum %g of %zu ones", sum, n);
        if (i > 0 && (double)bytes / s / 1e9 > best)
            best = (double)bytes / s / 1e9;
    }
    free(a);
    return best;
}

static int cmd_ceil(int argc, char **argv)
{
    const int smoke = arg_flag(argc, argv, "--smoke");
    int threads = atoi(arg_value(argc, argv, "--threads", "0"));
    if (threads < 1)
        threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    const int n = smoke ? 500 : 2000;
    const size_t tn = smoke ? ((size_t)1 << 22) : ((size_t)1 << 25);   /* 32 MiB / 256 MiB each */
    double g1 = dgemm_gflops(n, 1, smoke ? 2 : 5);
    double gt = dgemm_gflops(n, threads, smoke ? 2 : 5);
    double check = 0.0, rbw = 0.0, rcheck = 0.0;
    read_span_pick();
    double bw = triad_gbs(tn, threads, smoke ? 3 : 10, &check, &rbw, &rcheck);
    if (check != 7.0)
        die("triad: wrong result %g", check);
    if (rcheck != 3.0 * (double)tn)   /* b = 1, c = 2 everywhere: exact in double */
        die("read: wrong sum %g", rcheck);
    const int64_t x_bytes = arg_int(argc, argv, "--x-bytes", "0", 0);
    const double xbw = x_bytes > 0 ? read_x_gbs((size_t)x_bytes, threads, smoke ? 5 : 50,
                                                 smoke ? 0.0 : 0.5)
                                   : NAN;
    printf("{\"cmd\":\"ceil\",\"dgemm_n\":%d,\"dgemm_gflops_1\":%.2f,\"dgemm_gflops_t\":%.2f,"
           "\"threads\":%d,\"triad_mib_per_array\":%zu,\"triad_gbs\":%.3f,\"read_gbs\":%.3f,"
           "\"read_x_bytes\":%lld,",
           n, g1, gt, threads, tn * sizeof(double) >> 20, bw, rbw, (long long)x_bytes);
    print_double("read_x_gbs", xbw, 1);
    printf("\"corename\":\"%s\",\"config\":\"%s\"}\n", openblas_get_corename(),
           openblas_get_config());
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------------ products floor */

/* One product C[m×n] = op(A)[m×k]·op(B)[k×n], row major, operands packed densely. */
typedef struct product {
    int ta, tb, m, n, k;
} product_t;

/* The matrix products of one full-batch gradient step of a dense stack on `rows` rows: per
 * layer the forward A·Wᵀ and the weight gradient Gᵀ·A, and above the first layer the input
 * gradient G·W. That is the BLAS work of the step, whoever does it. */
static int step_products(const model_t *m, int32_t rows, product_t *out, int cap)
{
    int n = 0;
    for (int32_t l = 0; l < model_n_tensors(m) && n + 3 <= cap; ++l) {
        int32_t units, cols;
        model_tensor_shape(m, l, &units, &cols);
        const int in = cols - 1;   /* column 0 is the bias */
        out[n++] = (product_t){0, 1, rows, units, in};
        out[n++] = (product_t){1, 0, units, in, rows};
        if (l > 0)
            out[n++] = (product_t){0, 0, rows, in, units};
    }
    return n;
}

static double product_ms(const product_t *p, int reps)
{
    const int lda = p->ta ? p->m : p->k, ldb = p->tb ? p->k : p->n;
    const size_t na = (size_t)p->m * (size_t)p->k, nb = (size_t)p->k * (size_t)p->n,
                 nc = (size_t)p->m * (size_t)p->n;
    double *a = xmalloc_huge(na * sizeof *a), *b = xmalloc_huge(nb * sizeof *b),
           *c = xmalloc_huge(nc * sizeof *c);
    rng_t r;
    rng_seed(&r, 9);
    for (size_t i = 0; i < na; ++i)
        a[i] = rng_uniform(&r);
    for (size_t i = 0; i < nb; ++i)
        b[i] = rng_uniform(&r) - 0.5;
    memset(c, 0, nc * sizeof *c);
    double best = INFINITY;
    for (int i = 0; i < reps + 1; ++i) {   /* the first call warms the threads and pages */
        uint64_t t0 = now_ns();
        __real_cblas_dgemm(CblasRowMajor, p->ta ? CblasTrans : CblasNoTrans,
                           p->tb ? CblasTrans : CblasNoTrans, p->m, p->n, p->k, 1.0, a, lda, b,
                           ldb, 0.0, c, p->n);
        const double ms = (double)(now_ns() - t0) / 1e6;
        if (i > 0 && ms < best)
            best = ms;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* Σ over a step's products on `rows` rows of their best time; with `forward_only`, only the
 * forward ones (A·Wᵀ, the NT products of step_products), each in its faster orientation. */
static double step_products_ms(const model_t *m, int32_t rows, int forward_only, int reps,
                               double *gflop)
{
    product_t prods[48];
    const int n = step_products(m, rows, prods, 48);
    double ms = 0.0;
    for (int i = 0; i < n; ++i) {
        if (forward_only && (prods[i].ta || prods[i].tb == 0))
            continue;
        double t = product_ms(&prods[i], reps);
        if (forward_only) {
            /* Z^T = W X^T is the same work as Z = X W^T: the faster of the two. */
            const product_t zt = {0, 1, prods[i].n, prods[i].m, prods[i].k};
            const double t_zt = product_ms(&zt, reps);
            t = t_zt < t ? t_zt : t;
        }
        ms += t;
        *gflop += 2.0 * prods[i].m * (double)prods[i].n * prods[i].k / 1e9;
    }
    return ms;
}

/* The mini-batch epoch's floor: every batch's step products plus loss_after's forward. */
static void epoch_products(const workload_t *w, const model_t *m, int32_t bs, int reps,
                           int threads)
{
    const int64_t full = w->rows / bs, rest = w->rows % bs;
    double g_step = 0.0, g_rest = 0.0, g_all = 0.0;
    const double ms_step = step_products_ms(m, bs, 0, reps, &g_step);
    const double ms_rest = rest > 0 ? step_products_ms(m, (int32_t)rest, 0, reps, &g_rest) : 0.0;
    const double ms_all = step_products_ms(m, (int32_t)w->rows, 1, reps, &g_all);
    const double ms = (double)full * ms_step + ms_rest + ms_all;
    const double gflop = (double)full * g_step + g_rest + g_all;
    printf("{\"cmd\":\"products\",\"workload\":\"%s\",\"threads\":%d,\"batch_size\":%d,"
           "\"batches\":%lld,\"step_ms\":%.4f,\"loss_after_ms\":%.4f,\"gflop\":%.6f,"
           "\"ms\":%.4f}\n",
           w->name, threads, (int)bs, (long long)(full + (rest > 0)), ms_step, ms_all, gflop, ms);
    fflush(stdout);
}

static int cmd_products(const char *wpath, int argc, char **argv)
{
    const int threads = atoi(arg_value(argc, argv, "--threads", "0"));
    const int reps = atoi(arg_value(argc, argv, "--reps", "5"));
    if (reps < 1)
        die("products: --reps must be >= 1");
    if (threads > 0)
        openblas_set_num_threads(threads);
    workload_t w;
    workload_load(&w, wpath);
    model_t *m = workload_model(&w, NULL);
    const int64_t bs = arg_int(argc, argv, "--batch-size", "0", 0);
    if (bs > 0) {
        epoch_products(&w, m, (int32_t)(bs < w.rows ? bs : w.rows), reps, threads);
        model_free(m);
        workload_free(&w);
        return 0;
    }
    product_t prods[48];
    const int n = step_products(m, (int32_t)w.rows, prods, 48);
    double total = 0.0, gflop = 0.0;
    printf("{\"cmd\":\"products\",\"workload\":\"%s\",\"threads\":%d,\"products\":[", w.name,
           threads);
    for (int i = 0; i < n; ++i) {
        const double ms = product_ms(&prods[i], reps);
        const double g = 2.0 * prods[i].m * (double)prods[i].n * prods[i].k / 1e9;
        total += ms;
        gflop += g;
        printf("%s{\"op\":\"%s%s\",\"m\":%d,\"n\":%d,\"k\":%d,\"ms\":%.4f}", i ? "," : "",
               prods[i].ta ? "T" : "N", prods[i].tb ? "T" : "N", prods[i].m, prods[i].n,
               prods[i].k, ms);
    }
    printf("],\"gflop\":%.6f,\"ms\":%.4f}\n", gflop, total);
    fflush(stdout);
    model_free(m);
    workload_free(&w);
    return 0;
}

/* ------------------------------------------------------------------ mini-batch epochs */

/* Shuffled mini-batch epochs through train_run, as POST /train {"epochs":1,"batch_size":B}
 * runs them: one warm-up call of `warmup` steps, then E calls of one epoch each (seed = call
 * number, so every epoch draws its own order), each timed as a whole. */
static int cmd_epoch(const char *wpath, const char *dir, int argc, char **argv)
{
    const int64_t epochs = arg_int(argc, argv, "--epochs", "2", 1);
    const int32_t bs = (int32_t)arg_int(argc, argv, "--batch-size", "128", 1);
    bench_train_t bt;
    bench_train_open(&bt, wpath, dir, argc, argv, "20");
    bt.req.batch_size = bs;
    bt.req.steps = bt.warmup;
    train_result_t res;
    train_or_die(bt.t, &bt.req, &bt.step, NULL, &res, bt.w.name);
    const double loss0 = res.loss_before;
    bench_settle(&bt, 0);
    bt.req.steps = 0;
    bt.req.epochs = 1;
    printf("{\"runner\":\"lib\",\"workload\":\"%s\",\"batch_size\":%d,\"threads\":%d,", bt.w.name,
           bs, bt.threads);
    print_double("loss0", loss0, 1);
    printf("\"epoch_ms\":[");
    for (int64_t e = 0; e < epochs; ++e) {
        bt.req.seed = (uint64_t)e + 1;
        const uint64_t t0 = now_ns();
        train_or_die(bt.t, &bt.req, &bt.step, NULL, &res, bt.w.name);
        printf("%s%.3f", e ? "," : "", (double)(now_ns() - t0) / 1e6);
    }
    printf("],");
    print_double("loss_after", res.loss_after, 0);
    printf(",\"steps_per_epoch\":%lld}\n", (long long)res.steps_run);
    fflush(stdout);
    bench_train_close(&bt);
    return 0;
}

/* ------------------------------------------------------------------ lbfgs */

static int cmd_lbfgs(const char *wpath, const char *dir, int argc, char **argv)
{
    const char *target_s = arg_value(argc, argv, "--target", NULL);
    const int64_t max_steps = atoll(arg_value(argc, argv, "--max-steps", "500"));
    const int reps = atoi(arg_value(argc, argv, "--reps", "3"));
    const int threads = atoi(arg_value(argc, argv, "--threads", "0"));
    if (threads > 0)
        openblas_set_num_threads(threads);
    workload_t w;
    workload_load(&w, wpath);
    model_spec_t spec;
    err_t err = {0};
    if (model_spec_copy(&w.spec, &spec, &err) < 0)
        die("%s: %s", w.name, err.msg);
    optim_cfg_default(&spec.optimizer, OPTIM_METHOD_LBFGS);
    spec.optimizer.learning_rate = 1.0;

    /* Availability: does the library take the method at all? */
    optim_t *probe = NULL;
    if (optim_cfg_validate(&spec.optimizer, &err) < 0 ||
        optim_new(&spec.optimizer, 1, &probe, &err) < 0) {
        printf("{\"cmd\":\"lbfgs\",\"workload\":\"%s\",\"available\":false,\"reason\":", w.name);
        cJSON *s = cJSON_CreateString(err.msg);
        char *txt = cJSON_PrintUnformatted(s);
        printf("%s}\n", txt);
        free(txt);
        cJSON_Delete(s);
        model_spec_free(&spec);
        workload_free(&w);
        return 0;
    }
    optim_free(probe);

    printf("{\"cmd\":\"lbfgs\",\"workload\":\"%s\",\"available\":true,\"runs\":[", w.name);
    for (int r = 0; r < reps; ++r) {
        model_t *m = workload_model(&w, &spec);
        loaded_t data;
        load_data(&w, dir, m, &data);
        uint64_t t0 = now_ns();
        optim_t *o = NULL;
        train_ctx_t *t = NULL;
        if (optim_new(&spec.optimizer, model_n_params(m), &o, &err) < 0 ||
            train_ctx_new(m, o, &data.b, &t, &err) < 0)
            die("%s: lbfgs setup: %s", w.name, err.msg);
        train_req_t req;
        train_req_default(&req);
        req.steps = max_steps;
        req.history_every = 0;
        if (target_s != NULL)
            req.target_loss = strtod(target_s, NULL);
        int64_t step = 0;
        train_result_t res;
        if (train_run(t, &req, &step, NULL, &res, &err) < 0)
            die("%s: lbfgs train_run: %s", w.name, err.msg);
        double s = (double)(now_ns() - t0) / 1e9;
        printf("%s{\"seconds\":%.6f,\"steps_run\":%lld,\"stopped\":\"%s\",", r ? "," : "", s,
               (long long)res.steps_run, train_stop_name(res.stopped));
        print_double("loss_after", res.loss_after, 0);
        printf("}");
        train_ctx_free(t);
        optim_free(o);
        loaded_free(&data);
        model_free(m);
    }
    printf("]}\n");
    model_spec_free(&spec);
    workload_free(&w);
    return 0;
}

/* ------------------------------------------------------------------ ingest bodies */

static int cmd_body(int argc, char **argv)
{
    const char *fmt = arg_value(argc, argv, "--format", NULL);
    const char *out = arg_value(argc, argv, "--out", NULL);
    const double want = strtod(arg_value(argc, argv, "--bytes", "1e6"), NULL);
    const int n_x = 100;
    if (fmt == NULL || out == NULL || want < 1000)
        die("body: --format csv|json|raw --bytes B --out FILE");
    FILE *f = fopen(out, "wb");
    if (f == NULL)
        die("%s: %s", out, strerror(errno));
    static char buf[1 << 16];
    setvbuf(f, buf, _IOFBF, sizeof buf);
    rng_t r;
    rng_seed(&r, 99);
    int64_t rows = 0;
    size_t bytes = 0;
    if (strcmp(fmt, "raw") == 0) {
        double row[101];
        rows = (int64_t)(want / (double)sizeof row);
        for (int64_t i = 0; i < rows; ++i) {
            for (int j = 0; j < n_x; ++j)
                row[j] = 2.0 * rng_uniform(&r) - 1.0;
            row[n_x] = rng_uniform(&r) < 0.5 ? 0.0 : 1.0;
            fwrite(row, sizeof row, 1, f);
        }
        bytes = (size_t)rows * sizeof row;
    } else if (strcmp(fmt, "csv") == 0) {
        while ((double)bytes < want) {
            for (int j = 0; j < n_x; ++j)
                bytes += (size_t)fprintf(f, "%.6g,", 2.0 * rng_uniform(&r) - 1.0);
            bytes += (size_t)fprintf(f, "%d\n", rng_uniform(&r) < 0.5 ? 0 : 1);
            ++rows;
        }
    } else if (strcmp(fmt, "json") == 0) {
        size_t cap = 1024, n = 0;
        unsigned char *y = xmalloc(cap);
        bytes += (size_t)fprintf(f, "{\"x\":[");
        while ((double)bytes < want) {
            bytes += (size_t)fprintf(f, "%s[", rows ? "," : "");
            for (int j = 0; j < n_x; ++j)
                bytes += (size_t)fprintf(f, j ? ",%.6g" : "%.6g", 2.0 * rng_uniform(&r) - 1.0);
            bytes += (size_t)fprintf(f, "]");
            if (n == cap)
                y = realloc(y, cap *= 2);
            if (y == NULL)
                die("out of memory");
            y[n++] = rng_uniform(&r) < 0.5 ? 0 : 1;
            ++rows;
        }
        bytes += (size_t)fprintf(f, "],\"y\":[");
        for (size_t i = 0; i < n; ++i)
            bytes += (size_t)fprintf(f, i ? ",%d" : "%d", y[i]);
        bytes += (size_t)fprintf(f, "]}");
        free(y);
    } else {
        die("body: --format must be csv, json or raw");
    }
    if (fclose(f) != 0)
        die("%s: %s", out, strerror(errno));
    printf("{\"cmd\":\"body\",\"format\":\"%s\",\"rows\":%lld,\"n_x\":%d,\"bytes\":%zu,"
           "\"float64_bytes\":%lld}\n",
           fmt, (long long)rows, n_x, bytes, (long long)rows * (n_x + 1) * 8);
    return 0;
}

/* ------------------------------------------------------------------ selftest */

static const char *const selftest_workloads[] = {
    "{\"name\":\"t1\",\"task\":\"binary\",\"rows\":200,\"data_seed\":11,\"spec\":{\"kind\":"
    "\"logistic\",\"inputs\":5,\"init\":{\"method\":\"uniform\",\"scale\":0.01,\"seed\":1},"
    "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.5}}}",
    "{\"name\":\"t2\",\"task\":\"class\",\"rows\":150,\"data_seed\":12,\"spec\":{\"kind\":"
    "\"softmax\",\"inputs\":8,\"classes\":3,\"optimizer\":{\"method\":\"sgd\","
    "\"learning_rate\":0.5}}}",
    "{\"name\":\"t3\",\"task\":\"class\",\"rows\":100,\"data_seed\":13,\"spec\":{\"kind\":\"mlp\","
    "\"inputs\":8,\"hidden\":[{\"units\":6,\"activation\":\"sigmoid\"}],\"outputs\":3,"
    "\"output_activation\":\"softmax\",\"init\":{\"method\":\"xavier\",\"seed\":3},"
    "\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.5}}}",
    "{\"name\":\"t5\",\"task\":\"regression\",\"rows\":300,\"data_seed\":15,\"spec\":{\"kind\":"
    "\"linear\",\"inputs\":4,\"optimizer\":{\"method\":\"sgd\",\"learning_rate\":0.1}}}",
};

static int cmd_selftest(const char *self)
{
    char dir[] = "/tmp/bench_lib_selftest.XXXXXX";
    if (mkdtemp(dir) == NULL)
        die("mkdtemp: %s", strerror(errno));
    int rc = 0;
    char cmd[32768];
    for (size_t i = 0; i < sizeof selftest_workloads / sizeof selftest_workloads[0]; ++i) {
        char wp[1024];
        snprintf(wp, sizeof wp, "%s/w%zu.json", dir, i);
        write_file(wp, selftest_workloads[i], strlen(selftest_workloads[i]));
        snprintf(cmd, sizeof cmd, "'%s' gen '%s' '%s' && '%s' run '%s' '%s' --steps 5 "
                 "--warmup 2 --threads 1 --profile 2 --settle-ms 1 && '%s' lbfgs '%s' '%s' --reps 1 "
                 "--max-steps 5 && '%s' products '%s' --reps 1 && '%s' products '%s' --reps 1 "
                 "--batch-size 32 && '%s' epoch '%s' '%s' --batch-size 32 --epochs 1 --warmup 2 "
                 "--threads 1",
                 self, wp, dir, self, wp, dir, self, wp, dir, self, wp, self, wp, self, wp, dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "bench_lib selftest: workload %zu failed\n", i);
            rc = 1;
        }
    }
    snprintf(cmd, sizeof cmd, "'%s' ceil --smoke --threads 1 --x-bytes 800008 && for f in csv json raw; do "
             "'%s' body --format $f --bytes 20000 --out '%s'/body.$f || exit 1; done",
             self, self, dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_lib selftest: ceil/body failed\n");
        rc = 1;
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        rc = 1;
    if (rc == 0)
        fprintf(stderr, "bench_lib selftest: ok\n");
    return rc;
}

int main(int argc, char **argv)
{
    /* The kernel neurond runs on this CPU (blas.h), for the library's figures and the
     * ceilings alike. */
    if (blas_kernel_fit(argv) < 0)
        fprintf(stderr, "bench_lib: re-executing with %s=%s failed: %s\n", BLAS_CORETYPE_ENV,
                blas_kernel_for_cpu(), strerror(errno));
    if (argc >= 4 && strcmp(argv[1], "gen") == 0)
        return cmd_gen(argv[2], argv[3]);
    if (argc >= 4 && strcmp(argv[1], "run") == 0)
        return cmd_run(argv[2], argv[3], argc, argv);
    if (argc >= 2 && strcmp(argv[1], "ceil") == 0)
        return cmd_ceil(argc, argv);
    if (argc >= 4 && strcmp(argv[1], "lbfgs") == 0)
        return cmd_lbfgs(argv[2], argv[3], argc, argv);
    if (argc >= 2 && strcmp(argv[1], "body") == 0)
        return cmd_body(argc, argv);
    if (argc >= 3 && strcmp(argv[1], "products") == 0)
        return cmd_products(argv[2], argc, argv);
    if (argc >= 4 && strcmp(argv[1], "epoch") == 0)
        return cmd_epoch(argv[2], argv[3], argc, argv);
    if (argc >= 2 && strcmp(argv[1], "selftest") == 0)
    {
        char self[1024];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
            die("readlink /proc/self/exe: %s", strerror(errno));
        self[n] = '\0';
        return cmd_selftest(self);
    }
    fprintf(stderr,
            "usage: bench_lib gen|run|lbfgs WORKLOAD.json DIR [options]\n"
            "       bench_lib ceil [--smoke] [--threads T] [--x-bytes B]\n"
            "       bench_lib products WORKLOAD.json [--threads T] [--reps R] [--batch-size B]\n"
            "       bench_lib epoch WORKLOAD.json DIR [--batch-size B] [--epochs E] [--warmup K]\n"
            "                 [--settle-ms S]\n"
            "       bench_lib body --format csv|json|raw --bytes B --out FILE\n"
            "       bench_lib selftest\n(see the comment at the top of bench/bench_lib.c)\n");
    return 2;
}
