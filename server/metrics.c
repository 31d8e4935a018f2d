/* server/metrics.c -- a small fixed table of series behind one mutex. A request takes the lock
 * once for a few hundred nanoseconds; at the request rates one process serves that never shows
 * up next to parsing JSON, and it keeps the histogram's buckets, sum and count consistent. */
#include "metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "err.h"

#define METRICS_MAX_SERIES 512
#define METRICS_MAX_STATUS 16

static const double metrics_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1.0,   2.5,   5.0,  10.0};
#define METRICS_N_BUCKETS (sizeof metrics_buckets / sizeof metrics_buckets[0])

typedef struct series {
    const char *route;
    char method[8];
    uint64_t bucket[METRICS_N_BUCKETS];   /* non-cumulative; summed when rendered */
    uint64_t count;
    double sum;
    int n_status;
    struct {
        int code;
        uint64_t count;
    } status[METRICS_MAX_STATUS];
} series_t;

static pthread_mutex_t metrics_mu = PTHREAD_MUTEX_INITIALIZER;
static series_t metrics_series[METRICS_MAX_SERIES];
static int metrics_n_series;
static atomic_int_fast64_t metrics_steps;
static atomic_int_fast64_t metrics_jobs;

static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
                                        "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; ++i)
        if (m != NULL && strcmp(m, known[i]) == 0)
            return known[i];
    return "OTHER";
}

void metrics_http_observe(const char *route, const char *method, int status, double seconds)
{
    const char *m = method_label(method);
    if (route == NULL)
        route = "unmatched";
    pthread_mutex_lock(&metrics_mu);
    series_t *s = NULL;
    /* Routes are pattern strings from the route tables, so the pointer almost always finds
     * the series; comparing the text is for a pattern spelled in two places. */
    for (int i = 0; i < metrics_n_series && s == NULL; ++i)
        if (metrics_series[i].route == route && strcmp(metrics_series[i].method, m) == 0)
            s = &metrics_series[i];
    for (int i = 0; i < metrics_n_series && s == NULL; ++i) {
        series_t *t = &metrics_series[i];
        if (strcmp(t->route, route) == 0 && strcmp(t->method, m) == 0)
            s = t;
    }
    if (s == NULL && metrics_n_series < METRICS_MAX_SERIES) {
        s = &metrics_series[metrics_n_series++];
        s->route = route;
        snprintf(s->method, sizeof s->method, "%s", m);
    }
    if (s != NULL) {
        size_t b = 0;
        while (b < METRICS_N_BUCKETS && seconds > metrics_buckets[b])
            ++b;
        if (b < METRICS_N_BUCKETS)
            s->bucket[b]++;
        s->count++;
        s->sum += seconds;
        int k = 0;
        while (k < s->n_status && s->status[k].code != status)
            ++k;
        if (k == s->n_status && k < METRICS_MAX_STATUS) {
            s->status[k].code = status;
            s->n_status++;
        }
        if (k < s->n_status)
            s->status[k].count++;
    }
    pthread_mutex_unlock(&metrics_mu);
}

void metrics_training_steps_add(int64_t n)
{
    atomic_fetch_add(&metrics_steps, n);
}

void metrics_active_jobs_add(int64_t delta)
{
    atomic_fetch_add(&metrics_jobs, delta);
}

/* Route patterns contain only URL characters, but escape per the text format anyway. */
static void put_label(FILE *f, const char *v)
{
    for (; *v != '\0'; ++v) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

int metrics_render(char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (f == NULL)
        return ERR_NOMEM;

    fputs("# HELP neurond_http_requests_total HTTP requests answered, by route pattern, method "
          "and status.\n# TYPE neurond_http_requests_total counter\n", f);
    pthread_mutex_lock(&metrics_mu);
    for (int i = 0; i < metrics_n_series; ++i) {
        const series_t *s = &metrics_series[i];
        for (int k = 0; k < s->n_status; ++k) {
            fputs("neurond_http_requests_total{route=\"", f);
            put_label(f, s->route);
            fprintf(f, "\",method=\"%s\",status=\"%d\"} %" PRIu64 "\n", s->method,
                    s->status[k].code, s->status[k].count);
        }
    }
    fputs("# HELP neurond_http_request_duration_seconds Time from the first byte of a request "
          "to the end of its answer.\n# TYPE neurond_http_request_duration_seconds histogram\n",
          f);
    for (int i = 0; i < metrics_n_series; ++i) {
        const series_t *s = &metrics_series[i];
        uint64_t cum = 0;
        for (size_t b = 0; b <= METRICS_N_BUCKETS; ++b) {
            fputs("neurond_http_request_duration_seconds_bucket{route=\"", f);
            put_label(f, s->route);
            if (b < METRICS_N_BUCKETS) {
                cum += s->bucket[b];
                fprintf(f, "\",method=\"%s\",le=\"%g\"} %" PRIu64 "\n", s->method,
                        metrics_buckets[b], cum);
            } else {
                fprintf(f, "\",method=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", s->method, s->count);
            }
        }
        fputs("neurond_http_request_duration_seconds_sum{route=\"", f);
        put_label(f, s->route);
        fprintf(f, "\",method=\"%s\"} %.9g\n", s->method, s->sum);
        fputs("neurond_http_request_duration_seconds_count{route=\"", f);
        put_label(f, s->route);
        fprintf(f, "\",method=\"%s\"} %" PRIu64 "\n", s->method, s->count);
    }
    pthread_mutex_unlock(&metrics_mu);

    fprintf(f, "# HELP neurond_training_steps_total Parameter updates applied by training.\n"
               "# TYPE neurond_training_steps_total counter\n"
               "neurond_training_steps_total %" PRId64 "\n",
            (int64_t)atomic_load(&metrics_steps));
    fprintf(f, "# HELP neurond_active_jobs Asynchronous training jobs queued or running.\n"
               "# TYPE neurond_active_jobs gauge\n"
               "neurond_active_jobs %" PRId64 "\n",
            (int64_t)atomic_load(&metrics_jobs));
    fputs("# HELP neurond_blas_kernel_info The matrix-product kernel OpenBLAS runs: processes "
          "that must compute the same bytes need the same one.\n"
          "# TYPE neurond_blas_kernel_info gauge\nneurond_blas_kernel_info{kernel=\"", f);
    put_label(f, blas_kernel_name());
    fputs("\"} 1\n", f);
    if (ferror(f)) {
        fclose(f);
        free(buf);
        return ERR_NOMEM;
    }
    fclose(f);
    *out = buf;
    *len = size;
    return 0;
}
