/* lib/blas.h -- which matrix-product kernel this process runs, and picking a fitting one.
 *
 * OpenBLAS (a DYNAMIC_ARCH build, as Debian's) chooses its kernel for the CPU model it
 * recognises, in a library constructor that runs before main(). A build older than the CPU
 * does not recognise it and falls back to its generic pre-AVX kernel ("Prescott"), several times
 * slower on the matrix products of every model with hidden layers. OPENBLAS_CORETYPE overrides
 * the choice, but only when it is in the environment the process started with, hence:
 *
 *     int main(int argc, char **argv)
 *     {
 *         blas_kernel_fit(argv);    // first thing: may start the process over
 *         ...
 *         printf("kernel %s\n", blas_kernel_name());
 *
 * The kernel decides the last bits of every product, so processes that must compute the same
 * bytes (replicas resuming each other's jobs) must run the same kernel (docs/operations.md).
 */
#ifndef ND_BLAS_H
#define ND_BLAS_H

/* The environment variable OpenBLAS reads its kernel from. */
#define BLAS_CORETYPE_ENV "OPENBLAS_CORETYPE"

/* The kernel's name as OpenBLAS reports it ("Haswell", "SkylakeX", "Prescott"...), or
 * "reference" when built without BLAS (NEUROND_BLAS off). Never NULL. */
const char *blas_kernel_name(void);

/* 1 when `name` is one of OpenBLAS's kernels for x86-64 CPUs without AVX: what it falls back to
 * on a CPU it does not know. */
int blas_kernel_is_fallback(const char *name);

/* The OpenBLAS kernel blas_kernel_fit() chooses for this CPU: "SkylakeX" when it has AVX-512
 * (F, CD, BW, DQ, VL) enabled by the OS, else "Haswell" with AVX2 and FMA, else NULL. */
const char *blas_kernel_for_cpu(void);

/*
 * Call first in main(), before any thread starts. When OPENBLAS_CORETYPE is unset, OpenBLAS
 * fell back to a pre-AVX kernel and blas_kernel_for_cpu() names one, puts that name in
 * OPENBLAS_CORETYPE and executes /proc/self/exe again with the same argv (same pid, same open
 * files), so that OpenBLAS's constructor sees it. The new process finds the variable set and
 * goes on: it never loops. A set OPENBLAS_CORETYPE (any value) is left alone: that is how an
 * operator pins a kernel or keeps the fallback. Returns only when nothing was executed: 0 when
 * the kernel was left as it is, -1 when the exec failed (errno says why; the process goes on
 * with the kernel it has and OPENBLAS_CORETYPE unset).
 */
int blas_kernel_fit(char **argv);

/* OpenBLAS's own threads off (one thread) for the whole process: a process that spreads its
 * products over its own compute threads (tensor_gemm_on()) calls it once at start, so that the
 * two sets of threads do not compete and each block's bytes do not depend on OpenBLAS's
 * thread count. */
void blas_threads_one(void);

#endif /* ND_BLAS_H */
