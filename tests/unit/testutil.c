/* tests/unit/testutil.c -- see testutil.h. */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

int testutil_close(double got, double want, double rel_tol, double abs_tol)
{
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= abs_tol + rel_tol * fabs(want);
}

int testutil_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

void testutil_fill(double *x, int64_t n, double lo, double hi, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    for (int64_t i = 0; i < n; ++i)
        x[i] = lo + (hi - lo) * rng_uniform(&r);
}

int testutil_threads_named(int pid, const char *name)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *dir = opendir(path);
    ck_assert_msg(dir != NULL, "cannot open %s", path);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char comm_path[sizeof path + 256 + 8], comm[32] = "";
        snprintf(comm_path, sizeof comm_path, "%s/%s/comm", path, e->d_name);
        FILE *f = fopen(comm_path, "r");
        if (f == NULL)
            continue;   /* the thread ended meanwhile */
        if (fgets(comm, sizeof comm, f) != NULL) {
            comm[strcspn(comm, "\n")] = '\0';
            n += strcmp(comm, name) == 0;
        }
        fclose(f);
    }
    closedir(dir);
    return n;
}

int testutil_threads(int pid)
{
    char path[64];
    if (pid == 0)
        snprintf(path, sizeof path, "/proc/self/task");
    else
        snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *dir = opendir(path);
    ck_assert_msg(dir != NULL, "cannot open %s", path);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.')
            ++n;
    closedir(dir);
    return n;
}
