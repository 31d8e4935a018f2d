/* lib/blas.c -- the matrix-product kernel: its name, and a fitting one on CPUs OpenBLAS does
 * not know; see blas.h. */
#include "blas.h"

#include <errno.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#ifdef NEUROND_BLAS
#include <cblas.h>
#endif

const char *blas_kernel_name(void)
{
#ifdef NEUROND_BLAS
    const char *name = openblas_get_corename();
    return name != NULL ? name : "unknown";
#else
    return "reference";
#endif
}

int blas_kernel_is_fallback(const char *name)
{
    /* OpenBLAS's x86-64 kernels older than AVX: DYNAMIC_ARCH picks one of these for a CPU
     * model it has no entry for. */
    static const char *const old[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                       "Atom", "Katmai", "Northwood", "Banias", "Opteron",
                                       "Opteron_SSE3", "Barcelona"};
    for (size_t i = 0; i < sizeof old / sizeof old[0]; ++i)
        if (strcasecmp(name, old[i]) == 0)
            return 1;
    return 0;
}

const char *blas_kernel_for_cpu(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    /* libgcc's checks include the OS's: a feature counts only when XCR0 enables its registers. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
#endif
    return NULL;
}

int blas_kernel_fit(char **argv)
{
    const char *fit = NULL;
    if (getenv(BLAS_CORETYPE_ENV) != NULL || !blas_kernel_is_fallback(blas_kernel_name()) ||
        (fit = blas_kernel_for_cpu()) == NULL)
        return 0;
    if (setenv(BLAS_CORETYPE_ENV, fit, 1) < 0)
        return -1;
    execv("/proc/self/exe", argv);
    /* Still here: no exec. Take the variable back, so that what this process reports and
     * what its children inherit agree with the kernel it really runs. */
    const int exec_errno = errno;
    unsetenv(BLAS_CORETYPE_ENV);
    errno = exec_errno;
    return -1;
}

void blas_threads_one(void)
{
#ifdef NEUROND_BLAS
    openblas_set_num_threads(1);
#endif
}
