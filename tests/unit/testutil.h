/* tests/unit/testutil.h -- small helpers shared by the Check unit tests. */
#ifndef ND_TESTUTIL_H
#define ND_TESTUTIL_H

#include <check.h>
#include <stdint.h>

/* Pass when |got - want| <= abs_tol + rel_tol * |want|; prints both values otherwise. */
#define ck_assert_close(got, want, rel_tol, abs_tol)                                           \
    do {                                                                                       \
        double got_ = (got), want_ = (want);                                                   \
        ck_assert_msg(testutil_close(got_, want_, (rel_tol), (abs_tol)),                        \
                      "%s = %.17g, expected %s = %.17g (rel %g, abs %g)", #got, got_, #want,   \
                      want_, (double)(rel_tol), (double)(abs_tol));                            \
    } while (0)

int testutil_close(double got, double want, double rel_tol, double abs_tol);

/* Run a suite with Check's normal runner, print the summary, return the process exit code. */
int testutil_run(Suite *s);

/* Threads of process `pid` (0: this one), counted in /proc/<pid>/task; fails the running Check
 * test when that cannot be read. */
int testutil_threads(int pid);

/* Threads of process `pid` whose name (/proc/<pid>/task/<tid>/comm) is `name`. */
int testutil_threads_named(int pid, const char *name);

/* Deterministic pseudo-random doubles in [lo, hi) for test inputs. */
void testutil_fill(double *x, int64_t n, double lo, double hi, uint64_t seed);

#endif /* ND_TESTUTIL_H */
