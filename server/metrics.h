/* server/metrics.h -- process-wide counters rendered as Prometheus text format 0.0.4.
 *
 * http.c observes every finished request; training and job code add their counters:
 *
 *     metrics_http_observe("/v1/models/{id}", "GET", 200, 0.0012);
 *     metrics_training_steps_add(100);
 *     metrics_active_jobs_add(+1);  ...  metrics_active_jobs_add(-1);
 *
 * All functions are thread-safe. Label values are bounded: `route` is a route pattern (or
 * "unmatched"), never a raw path, and unusual methods are folded into "OTHER".
 */
#ifndef ND_METRICS_H
#define ND_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Count one finished request. `route` must outlive the process (a pattern string from a route
 * table, or a literal); it is stored by pointer. */
void metrics_http_observe(const char *route, const char *method, int status, double seconds);

/* neurond_training_steps_total += n (parameter updates applied, sync and async). */
void metrics_training_steps_add(int64_t n);

/* neurond_active_jobs += delta (async jobs queued or running). */
void metrics_active_jobs_add(int64_t delta);

/* Render every family with HELP and TYPE. `*out` is new (free()), `*len` its length.
 * Returns 0, or ERR_NOMEM. */
int metrics_render(char **out, size_t *len);

#endif /* ND_METRICS_H */
