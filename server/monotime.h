/* server/monotime.h -- waiting on the monotonic clock: condition variables whose timed waits a
 * wall-clock step (NTP, an operator) can neither stretch nor cut short.
 *
 *     pthread_cond_t cv;
 *     monotime_cond_init(&cv);
 *     struct timespec until = monotime_deadline(500);
 *     while (!ready && rc != ETIMEDOUT)
 *         rc = pthread_cond_timedwait(&cv, &mu, &until);
 */
#ifndef ND_MONOTIME_H
#define ND_MONOTIME_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Initialise `cv` to time its waits on CLOCK_MONOTONIC (destroy with pthread_cond_destroy). */
void monotime_cond_init(pthread_cond_t *cv);

/* `ms` (>= 0) milliseconds from now on CLOCK_MONOTONIC: a deadline for such a `cv`. */
struct timespec monotime_deadline(int64_t ms);

#endif /* ND_MONOTIME_H */
