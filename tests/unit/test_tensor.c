/* tests/unit/test_tensor.c -- shapes, overflow checks, GEMM in all four transpose cases
 * against a naive product, and the scaled norm. */
#include <math.h>
#include <stdlib.h>

#include "blas.h"
#include "tensor.h"
#include "testutil.h"

static double at(const double *x, int32_t ld, int trans, int32_t i, int32_t j)
{
    return trans ? x[(int64_t)j * ld + i] : x[(int64_t)i * ld + j];
}

START_TEST(test_gemm_all_transposes)
{
    const int32_t m = 7, n = 5, k = 9;
    double a[63], b[45], c[35], c0[35];
    testutil_fill(a, 63, -1, 1, 1);
    testutil_fill(b, 45, -1, 1, 2);
    testutil_fill(c0, 35, -1, 1, 3);
    for (int ta = 0; ta < 2; ++ta) {
        for (int tb = 0; tb < 2; ++tb) {
            int32_t lda = ta ? m : k, ldb = tb ? k : n;
            for (int i = 0; i < 35; ++i)
                c[i] = c0[i];
            tensor_gemm(ta, tb, m, n, k, 2.0, a, lda, b, ldb, 0.5, c, n);
            for (int32_t i = 0; i < m; ++i) {
                for (int32_t j = 0; j < n; ++j) {
                    double want = 0.0;
                    for (int32_t p = 0; p < k; ++p)
                        want += at(a, lda, ta, i, p) * at(b, ldb, tb, p, j);
                    want = 2.0 * want + 0.5 * c0[i * n + j];
                    ck_assert_close(c[i * n + j], want, 1e-13, 1e-13);
                }
            }
        }
    }
}
END_TEST

START_TEST(test_gemm_k_zero_scales_c)
{
    double c[4] = {1, 2, 3, 4};
    tensor_gemm(0, 0, 2, 2, 0, 1.0, NULL, 1, NULL, 2, 0.0, c, 2);
    for (int i = 0; i < 4; ++i)
        ck_assert_double_eq(c[i], 0.0);
}
END_TEST

START_TEST(test_shapes)
{
    tensor_shape_t s0 = {0, {1, 1}}, s1 = {1, {4, 1}}, s2 = {2, {3, 5}};
    char buf[32];
    ck_assert_int_eq(tensor_shape_elems(&s0), 1);
    ck_assert_int_eq(tensor_shape_elems(&s1), 4);
    ck_assert_int_eq(tensor_shape_elems(&s2), 15);
    ck_assert_int_eq(tensor_shape_rows(&s2), 3);
    ck_assert_int_eq(tensor_shape_cols(&s2), 5);
    ck_assert_int_eq(tensor_shape_cols(&s1), 1);
    ck_assert_str_eq(tensor_shape_str(&s0, buf, sizeof buf), "[]");
    ck_assert_str_eq(tensor_shape_str(&s2, buf, sizeof buf), "[3,5]");
    ck_assert(!tensor_shape_equal(&s1, &s2));
    ck_assert(tensor_shape_equal(&s2, &s2));
}
END_TEST

START_TEST(test_checked_elems_overflow)
{
    int64_t n;
    err_t err = {0};
    ck_assert_int_eq(tensor_checked_elems(1000, 1000, "x", &n, &err), 0);
    ck_assert_int_eq(n, 1000000);
    ck_assert_int_eq(tensor_checked_elems(1LL << 31, 1LL << 31, "x", &n, &err), ERR_RANGE);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(tensor_checked_elems(-1, 3, "x", &n, &err), ERR_RANGE);
    ck_assert_int_eq(tensor_checked_elems(TENSOR_MAX_ELEMS, 2, "x", &n, &err), ERR_RANGE);
}
END_TEST

START_TEST(test_norm_and_finite)
{
    double x[3] = {3.0, 4.0, 0.0};
    ck_assert_double_eq(tensor_norm2(x, 3), 5.0);
    double big[2] = {3e200, 4e200};   /* naive sum of squares would overflow */
    ck_assert_close(tensor_norm2(big, 2), 5e200, 1e-15, 0);
    ck_assert(tensor_all_finite(x, 3));
    x[1] = NAN;
    ck_assert(!tensor_all_finite(x, 3));
    x[1] = INFINITY;
    ck_assert(!tensor_all_finite(x, 3));
}
END_TEST

/* A large product is the same bytes on any number of compute threads, and right: by rows, by
 * columns (few rows), with either operand transposed, beta 0 and 1, sizes off the block size. */
START_TEST(test_gemm_split_same_on_any_threads)
{
    const struct { int ta, tb; int32_t m, n, k; double beta; } cases[] = {
        {0, 1, 301, 128, 784, 0.0},   /* forward X·Wᵀ of a 301-row batch */
        {1, 0, 128, 785, 256, 1.0},   /* weight gradient Gᵀ·X, accumulated: by columns */
        {0, 0, 8, 5000, 1100, 0.0},   /* few rows: by columns */
        {1, 1, 1067, 129, 100, 1.0},
        {0, 1, 32, 128, 784, 0.0},    /* a 32-row mini-batch's forward: by columns, 2 blocks */
        {1, 0, 128, 784, 32, 1.0},    /* and its weight gradient */
        {0, 1, 128, 128, 784, 0.0},   /* a 128-row forward into 128 units: square C, by columns */
    };
    blas_threads_one();
    pool_t *pools[3] = {NULL, NULL, NULL};   /* none (the calling thread), 2 and 3 threads */
    err_t err = {0};
    ck_assert_int_eq(pool_new(2, &pools[1], &err), 0);
    ck_assert_int_eq(pool_new(3, &pools[2], &err), 0);
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; ++t) {
        const int32_t m = cases[t].m, n = cases[t].n, k = cases[t].k;
        ck_assert((double)m * n * k >= TENSOR_GEMM_SPLIT_MIN);
        const size_t c_bytes = (size_t)m * n * sizeof(double);
        double *a = malloc((size_t)m * k * sizeof *a), *b = malloc((size_t)k * n * sizeof *b);
        double *c[3] = {malloc(c_bytes), malloc(c_bytes), malloc(c_bytes)};
        ck_assert(a != NULL && b != NULL && c[0] != NULL && c[1] != NULL && c[2] != NULL);
        for (int64_t i = 0; i < (int64_t)m * k; ++i)
            a[i] = sin(0.37 * (double)i) / 3.0;
        for (int64_t i = 0; i < (int64_t)k * n; ++i)
            b[i] = cos(0.11 * (double)i) * 1.7;
        const int32_t lda = cases[t].ta ? m : k, ldb = cases[t].tb ? k : n;
        for (int p = 0; p < 3; ++p) {
            for (int64_t i = 0; i < (int64_t)m * n; ++i)
                c[p][i] = 0.25 * (double)(i % 7);
            tensor_gemm_on(pools[p], cases[t].ta, cases[t].tb, m, n, k, 0.5, a, lda, b, ldb,
                           cases[t].beta, c[p], n);
        }
        ck_assert_mem_eq(c[0], c[1], c_bytes);
        ck_assert_mem_eq(c[0], c[2], c_bytes);
        /* Right, not merely the same: the first and last element of every row, by hand. */
        for (int32_t i = 0; i < m; ++i)
            for (int32_t j = 0; j < n; j += n - 1) {
                const int64_t at = (int64_t)i * n + j;
                double want = cases[t].beta * 0.25 * (double)(at % 7);
                for (int32_t p = 0; p < k; ++p) {
                    double av = cases[t].ta ? a[(int64_t)p * lda + i] : a[(int64_t)i * lda + p];
                    double bv = cases[t].tb ? b[(int64_t)j * ldb + p] : b[(int64_t)p * ldb + j];
                    want += 0.5 * av * bv;
                }
                ck_assert_close(c[0][at], want, 1e-12, 1e-12);
            }
        free(a);
        free(b);
        for (int p = 0; p < 3; ++p)
            free(c[p]);
    }
    for (int p = 0; p < 3; ++p)
        pool_free(pools[p]);
}
END_TEST

/* The plain sum of squares and its scaled fallback agree on every range of values. */
START_TEST(test_norm_every_range)
{
    double tiny[3] = {3e-200, 0.0, 4e-200};   /* squares underflow to 0 */
    ck_assert_close(tensor_norm2(tiny, 3), 5e-200, 1e-15, 0);
    double mixed[2] = {1e300, 1.0};           /* one square overflows */
    ck_assert_close(tensor_norm2(mixed, 2), 1e300, 1e-15, 0);
    double zero[5] = {0};
    ck_assert_double_eq(tensor_norm2(zero, 5), 0.0);
    double odd[7];                             /* not a multiple of the four sums */
    for (int i = 0; i < 7; ++i)
        odd[i] = i % 2 ? -(double)(i + 1) : (double)(i + 1);
    ck_assert_close(tensor_norm2(odd, 7), sqrt(140.0), 1e-15, 0);
    double inf[2] = {1.0, INFINITY};
    ck_assert(isinf(tensor_norm2(inf, 2)));
    double nan[3] = {1.0, NAN, 2.0};
    ck_assert(isnan(tensor_norm2(nan, 3)));
}
END_TEST

/* The norm in parts is the same bytes on any pool, and right to rounding. */
START_TEST(test_norm_on_a_pool)
{
    const int64_t n = 5 * TENSOR_NORM_PART + 3;
    double *x = malloc((size_t)n * sizeof *x);
    ck_assert(x != NULL);
    long double exact = 0.0L;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = sin(0.01 * (double)i) * 1e-3;
        exact += (long double)x[i] * x[i];
    }
    pool_t *pool = NULL;
    err_t err = {0};
    ck_assert_int_eq(pool_new(2, &pool, &err), 0);
    const double alone = tensor_norm2_on(NULL, x, n), shared = tensor_norm2_on(pool, x, n);
    ck_assert_mem_eq(&alone, &shared, sizeof alone);
    ck_assert_mem_eq(&alone, &(double){tensor_norm2(x, n)}, sizeof alone);
    ck_assert_close(alone, (double)sqrtl(exact), 1e-14, 0);
    x[n - 1] = INFINITY;
    ck_assert(isinf(tensor_norm2_on(pool, x, n)));
    pool_free(pool);
    free(x);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_gemm_all_transposes);
    tcase_add_test(tc, test_gemm_k_zero_scales_c);
    tcase_add_test(tc, test_shapes);
    tcase_add_test(tc, test_checked_elems_overflow);
    tcase_add_test(tc, test_norm_and_finite);
    tcase_add_test(tc, test_norm_every_range);
    tcase_add_test(tc, test_norm_on_a_pool);
    tcase_add_test(tc, test_gemm_split_same_on_any_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
