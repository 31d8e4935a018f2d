/* lib/tensor.c -- shapes, GEMM through CBLAS, and small reductions. */
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#ifdef NEUROND_BLAS
#include <cblas.h>
#endif

int64_t tensor_shape_elems(const tensor_shape_t *s)
{
    int64_t n = 1;
    for (int32_t i = 0; i < s->n_d; ++i)
        n *= s->d[i];
    return n;
}

int32_t tensor_shape_rows(const tensor_shape_t *s)
{
    return s->n_d == 0 ? 1 : s->d[0];
}

int32_t tensor_shape_cols(const tensor_shape_t *s)
{
    return s->n_d == 2 ? s->d[1] : 1;
}

int tensor_shape_equal(const tensor_shape_t *a, const tensor_shape_t *b)
{
    if (a->n_d != b->n_d)
        return 0;
    for (int32_t i = 0; i < a->n_d; ++i)
        if (a->d[i] != b->d[i])
            return 0;
    return 1;
}

const char *tensor_shape_str(const tensor_shape_t *s, char *buf, size_t size)
{
    if (s->n_d == 0)
        snprintf(buf, size, "[]");
    else if (s->n_d == 1)
        snprintf(buf, size, "[%d]", s->d[0]);
    else
        snprintf(buf, size, "[%d,%d]", s->d[0], s->d[1]);
    return buf;
}

void tensor_advise_huge_pages(void *p, size_t bytes)
{
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t hi = ((uintptr_t)p + bytes) & ~(huge - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}

void *tensor_alloc_rows(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;
    if (posix_memalign(&p, bytes >= huge ? huge : 64, bytes > 0 ? bytes : 1) != 0)
        return NULL;
    tensor_advise_huge_pages(p, bytes);
    return p;
}

int tensor_checked_elems(int64_t r, int64_t c, const char *what, int64_t *out, err_t *err)
{
    *out = 0;
    if (r < 0 || c < 0 || (c != 0 && r > TENSOR_MAX_ELEMS / c))
        return err_set(err, ERR_RANGE, "%s: %lld x %lld elements is more than %lld", what,
                       (long long)r, (long long)c, (long long)TENSOR_MAX_ELEMS);
    *out = r * c;
    return 0;
}

/* A large product is cut into 2, 4 or 8 blocks of C's rows or columns, whichever side is longer,
 * each a multiple of GEMM_SPLIT_ALIGN long (a multiple of every OpenBLAS micro-kernel's tile) and
 * at least GEMM_SPLIT_BLOCK_MIN. Every block packs all of the operand it shares with the others
 * again, so beyond 2 the parts are as many as keep that repacking under a quarter of packing the
 * operand that is cut: a weight gradient dW = dZ^T X, whose shared dZ is a sixth of X, runs in 2
 * blocks (in 7 it spent a fifth of its time repacking dZ). The cut depends on the shape alone,
 * never on the threads, so C is the same bytes for any number of them. */
#define GEMM_SPLIT_PARTS_MAX 8
#define GEMM_SPLIT_ALIGN 16
#define GEMM_SPLIT_BLOCK_MIN 32
#define GEMM_SPLIT_REPACK_SHARE 4   /* (parts - 1) x shared <= cut operand / this */

typedef struct gemm_split {
    int trans_a, trans_b;
    int32_t m, n, k;
    double alpha, beta;
    const double *a, *b;
    double *c;
    int32_t lda, ldb, ldc;
    int by_rows;               /* blocks of C's rows, else of its columns */
    int32_t block;             /* rows (or columns) of each block; the last may be shorter */
} gemm_split_t;

#ifdef NEUROND_BLAS
static void gemm_blas(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, double alpha,
                      const double *a, int32_t lda, const double *b, int32_t ldb, double beta,
                      double *c, int32_t ldc)
{
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c,
                ldc);
}

/* Block `part` of C: rows (or columns) [lo, hi), with the slice of A (or B) they read. */
static void gemm_run_part(void *ctx, int32_t part)
{
    const gemm_split_t *g = ctx;
    const int32_t len = g->by_rows ? g->m : g->n;
    const int32_t lo = part * g->block, hi = len - lo < g->block ? len : lo + g->block;
    if (g->by_rows)
        gemm_blas(g->trans_a, g->trans_b, hi - lo, g->n, g->k, g->alpha,
                  g->a + (g->trans_a ? lo : (int64_t)lo * g->lda), g->lda, g->b, g->ldb, g->beta,
                  g->c + (int64_t)lo * g->ldc, g->ldc);
    else
        gemm_blas(g->trans_a, g->trans_b, g->m, hi - lo, g->k, g->alpha, g->a, g->lda,
                  g->b + (g->trans_b ? (int64_t)lo * g->ldb : lo), g->ldb, g->beta, g->c + lo,
                  g->ldc);
}

/* The blocks of a product, from its shape alone: 0 when it runs as one call. */
static int32_t split_blocks(int32_t m, int32_t n, int32_t k, int *by_rows, int32_t *block)
{
    if ((double)m * n * k < TENSOR_GEMM_SPLIT_MIN)
        return 0;
    /* Both operands have k columns: the shared one's size against the cut one's is n : m. A
     * square C is cut by its columns: a 128-row batch's forward into 128 units took 8-18 % less
     * time a step that way than by rows (same bytes; 4 interleaved rounds of 3000 steps). */
    *by_rows = m > n;
    const int32_t len = *by_rows ? m : n, shared = *by_rows ? n : m;
    if (len < 2 * GEMM_SPLIT_BLOCK_MIN)
        return 0;
    int32_t parts = GEMM_SPLIT_PARTS_MAX;
    while (parts > 2 && ((double)(parts - 1) * shared * GEMM_SPLIT_REPACK_SHARE > len ||
                         len / parts < GEMM_SPLIT_BLOCK_MIN))
        parts /= 2;
    int32_t b = (len + parts - 1) / parts;
    *block = (b + GEMM_SPLIT_ALIGN - 1) / GEMM_SPLIT_ALIGN * GEMM_SPLIT_ALIGN;
    return (len + *block - 1) / *block;
}
#endif

void tensor_gemm(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, double alpha,
                 const double *a, int32_t lda, const double *b, int32_t ldb, double beta,
                 double *c, int32_t ldc)
{
    tensor_gemm_on(NULL, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void tensor_gemm_on(pool_t *pool, int trans_a, int trans_b, int32_t m, int32_t n, int32_t k,
                    double alpha, const double *a, int32_t lda, const double *b, int32_t ldb,
                    double beta, double *c, int32_t ldc)
{
    if (m == 0 || n == 0)
        return;
#ifdef NEUROND_BLAS
    if (k > 0) {
        gemm_split_t g = {.trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k,
                          .alpha = alpha, .beta = beta, .a = a, .b = b, .c = c, .lda = lda,
                          .ldb = ldb, .ldc = ldc};
        const int32_t n_part = split_blocks(m, n, k, &g.by_rows, &g.block);
        if (n_part == 0)
            gemm_blas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        else
            pool_run(pool, n_part, gemm_run_part, &g);
        return;
    }
#endif
    /* Reference path (and k == 0, where some BLAS builds skip the beta scaling). */
    for (int32_t i = 0; i < m; ++i) {
        for (int32_t j = 0; j < n; ++j) {
            double acc = 0.0;
            for (int32_t p = 0; p < k; ++p) {
                double av = trans_a ? a[(int64_t)p * lda + i] : a[(int64_t)i * lda + p];
                double bv = trans_b ? b[(int64_t)j * ldb + p] : b[(int64_t)p * ldb + j];
                acc += av * bv;
            }
            double *cij = &c[(int64_t)i * ldc + j];
            *cij = alpha * acc + (beta == 0.0 ? 0.0 : beta * *cij);
        }
    }
}

/* Σ x_i² in four independent sums, so that the adds overlap. */
static double sum_squares(const double *x, int64_t n)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i] * x[i];
        s1 += x[i + 1] * x[i + 1];
        s2 += x[i + 2] * x[i + 2];
        s3 += x[i + 3] * x[i + 3];
    }
    for (; i < n; ++i)
        s0 += x[i] * x[i];
    return (s0 + s1) + (s2 + s3);
}

/* Σ x_i² over parts of TENSOR_NORM_PART values, added in order: the parts run on any thread. */
typedef struct norm_parts {
    const double *x;
    int64_t n;
    double ssq[TENSOR_NORM_PARTS_MAX];
} norm_parts_t;

static void norm_part(void *ctx, int32_t part)
{
    norm_parts_t *j = ctx;
    const int64_t lo = part * (int64_t)TENSOR_NORM_PART;
    const int64_t len = j->n - lo < TENSOR_NORM_PART ? j->n - lo : TENSOR_NORM_PART;
    j->ssq[part] = sum_squares(j->x + lo, len);
}

static double sum_squares_on(pool_t *pool, const double *x, int64_t n)
{
    const int64_t parts = (n + TENSOR_NORM_PART - 1) / TENSOR_NORM_PART;
    if (parts <= 1 || parts > TENSOR_NORM_PARTS_MAX)
        return sum_squares(x, n);
    norm_parts_t j = {.x = x, .n = n};
    pool_run(pool, (int32_t)parts, norm_part, &j);
    double s = 0.0;
    for (int32_t p = 0; p < parts; ++p)
        s += j.ssq[p];
    return s;
}

double tensor_norm2(const double *x, int64_t n)
{
    return tensor_norm2_on(NULL, x, n);
}

double tensor_norm2_on(pool_t *pool, const double *x, int64_t n)
{
    /* The plain sum of squares is exact enough unless a square overflowed (Inf), a value is
     * NaN, or the sum is so small that squares lost to underflow could matter: below 2^-900,
     * even 2^31 squares each under 2^-1022 are less than 2^-90 of it. Only then the scaled
     * loop below, whose division per value made it most of a small mini-batch step. */
    const double ssq_plain = sum_squares_on(pool, x, n);
    if (isfinite(ssq_plain) && ssq_plain >= 0x1p-900)
        return sqrt(ssq_plain);
    double scale = 0.0, ssq = 1.0;
    for (int64_t i = 0; i < n; ++i) {
        double a = fabs(x[i]);
        if (a == 0.0)
            continue;
        if (scale < a) {
            ssq = 1.0 + ssq * (scale / a) * (scale / a);
            scale = a;
        } else {
            ssq += (a / scale) * (a / scale);
        }
    }
    return scale * sqrt(ssq);
}

int tensor_all_finite(const double *x, int64_t n)
{
    for (int64_t i = 0; i < n; ++i)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}
