/* lib/tensor.h -- shapes and row-major float64 kernels. No I/O, no allocation in the kernels.
 *
 * A tensor has 0, 1 or 2 dimensions: shape [] is a scalar, [n] a vector, [r, c] a matrix stored
 * row major. Matrix products go through cblas_dgemm, so big batches run near the machine's peak:
 *
 *     // C[m,n] = A[m,k] * B[n,k]^T   (B given row major as [n,k], transposed in the product)
 *     tensor_gemm(0, 1, m, n, k, 1.0, a, k, b, k, 0.0, c, n);
 *
 * A batch slice is a view: rows [r0, r0+n) of a row-major matrix start at x + r0 * cols.
 */
#ifndef ND_TENSOR_H
#define ND_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "pool.h"

#define TENSOR_MAX_DIM 2
/* Refuse any tensor with more elements than this (2^31 - 1): keeps every index in int64 math
 * and every byte count well inside size_t, and bounds what a request can make us allocate. */
#define TENSOR_MAX_ELEMS 2147483647LL

typedef struct tensor_shape {
    int32_t n_d;               /* 0, 1 or 2 */
    int32_t d[TENSOR_MAX_DIM]; /* unused dimensions are 1 */
} tensor_shape_t;

/* Number of elements of a shape (1 for a scalar). */
int64_t tensor_shape_elems(const tensor_shape_t *s);

/* Number of rows (d[0]) of a 1-D or 2-D shape; 1 for a scalar. */
int32_t tensor_shape_rows(const tensor_shape_t *s);

/* Number of columns: d[1] for a matrix, 1 otherwise. */
int32_t tensor_shape_cols(const tensor_shape_t *s);

/* 1 when both shapes have the same rank and dimensions. */
int tensor_shape_equal(const tensor_shape_t *a, const tensor_shape_t *b);

/* Write "[3,2]" / "[]" into buf (always NUL-terminated). Returns buf. */
const char *tensor_shape_str(const tensor_shape_t *s, char *buf, size_t size);

/* Multiply r*c with overflow checking: ERR_RANGE (with a message naming `what`) when the product
 * is negative or exceeds TENSOR_MAX_ELEMS, else 0 and *out = r*c. */
int tensor_checked_elems(int64_t r, int64_t c, const char *what, int64_t *out, err_t *err);

/* Ask for transparent huge pages under the 2 MiB-aligned part of [p, p + bytes): large row
 * arrays are written or streamed start to end, and on 2 MiB pages that takes 512 times fewer
 * page faults and TLB misses. Only a hint: where huge pages are off it does nothing. */
void tensor_advise_huge_pages(void *p, size_t bytes);

/* Memory for a large row array, freed with free(); NULL when there is none. Aligned to 2 MiB
 * with huge pages advised when it is that large, else to 64 bytes. malloc places a large block
 * 16 bytes into its pages, and then every other 32-byte load of a row whose length is a
 * multiple of 4 doubles straddles two cache lines: the one-pass W1 step took 25 % longer on
 * rows in L2, 6-10 % longer from the last-level cache. */
void *tensor_alloc_rows(size_t bytes);

/*
 * C = alpha * op(A) op(B) + beta * C, row major, op(X) = X or X^T as trans_a / trans_b say.
 * op(A) is [m,k], op(B) is [k,n], C is [m,n]; lda/ldb/ldc are row strides. Calls cblas_dgemm
 * when built with BLAS (NEUROND_BLAS), a large product in blocks (tensor_gemm_on() with no
 * pool), else a plain blocked loop with the same results to rounding.
 */
void tensor_gemm(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, double alpha,
                 const double *a, int32_t lda, const double *b, int32_t ldb, double beta,
                 double *c, int32_t ldc);

/*
 * tensor_gemm() with its large products spread over `pool` (NULL: computed on the calling
 * thread). A product of at least TENSOR_GEMM_SPLIT_MIN multiply-adds (m·n·k) is cut into 2, 4
 * or 8 blocks of the longer side of C, each one cblas_dgemm call; a
 * smaller product is one call on the calling thread, where handing it to threads and back
 * would cost more than it saves. The cut depends on the shape only, so with OpenBLAS at one
 * thread (blas_threads_one(), blas.h) C is the same bytes whatever the pool.
 */
#define TENSOR_GEMM_SPLIT_MIN (1.0 * 1024 * 1024)
void tensor_gemm_on(pool_t *pool, int trans_a, int trans_b, int32_t m, int32_t n, int32_t k,
                    double alpha, const double *a, int32_t lda, const double *b, int32_t ldb,
                    double beta, double *c, int32_t ldc);

/* Euclidean norm of x[0..n-1], without overflow or underflow for any finite x. */
double tensor_norm2(const double *x, int64_t n);

/* tensor_norm2() with the sum of squares in parts of TENSOR_NORM_PART values (at most
 * TENSOR_NORM_PARTS_MAX of them, else in one) spread over `pool` (NULL: the calling thread) and
 * added in order: the same bytes for any pool, and as tensor_norm2(), which is this with NULL. */
#define TENSOR_NORM_PART 16384
#define TENSOR_NORM_PARTS_MAX 4096
double tensor_norm2_on(pool_t *pool, const double *x, int64_t n);

/* 1 when every x[i] is finite. */
int tensor_all_finite(const double *x, int64_t n);

#endif /* ND_TENSOR_H */
