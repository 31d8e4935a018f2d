/* tests/unit/test_tensor.c -- shapes, overflow checks, GEMM in all four transpose cases
 * against a naive product, and the scaled norm. */
#include <math.h>
#include <stdlib.h>

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

static Suite *suite(void)
{
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_gemm_all_transposes);
    tcase_add_test(tc, test_gemm_k_zero_scales_c);
    tcase_add_test(tc, test_shapes);
    tcase_add_test(tc, test_checked_elems_overflow);
    tcase_add_test(tc, test_norm_and_finite);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
