/* lib/tensor.c -- shapes, GEMM through CBLAS, and small reductions. */
#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdint.h>
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

int tensor_checked_elems(int64_t r, int64_t c, const char *what, int64_t *out, err_t *err)
{
    *out = 0;
    if (r < 0 || c < 0 || (c != 0 && r > TENSOR_MAX_ELEMS / c))
        return err_set(err, ERR_RANGE, "%s: %lld x %lld elements is more than %lld", what,
                       (long long)r, (long long)c, (long long)TENSOR_MAX_ELEMS);
    *out = r * c;
    return 0;
}

void tensor_gemm(int trans_a, int trans_b, int32_t m, int32_t n, int32_t k, double alpha,
                 const double *a, int32_t lda, const double *b, int32_t ldb, double beta,
                 double *c, int32_t ldc)
{
    if (m == 0 || n == 0)
        return;
#ifdef NEUROND_BLAS
    if (k > 0) {
        cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c,
                    ldc);
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

double tensor_norm2(const double *x, int64_t n)
{
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
