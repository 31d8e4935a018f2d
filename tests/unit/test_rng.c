/* tests/unit/test_rng.c -- the generator's stream is fixed: these values were computed by an
 * independent implementation of splitmix64 + xoshiro256** (see rng.h). */
#include <stdlib.h>

#include "rng.h"
#include "testutil.h"

START_TEST(test_stream_is_fixed)
{
    rng_t r;
    rng_seed(&r, 42);
    ck_assert_uint_eq(rng_next(&r), 0x15780b2e0c2ec716ULL);
    ck_assert_uint_eq(rng_next(&r), 0x6104d9866d113a7eULL);
    ck_assert_uint_eq(rng_next(&r), 0xae17533239e499a1ULL);
}
END_TEST

START_TEST(test_uniform_from_seed_zero)
{
    rng_t r;
    rng_seed(&r, 0);
    ck_assert_double_eq(rng_uniform(&r), 0.6012629994179048);
    ck_assert_double_eq(rng_uniform(&r), 0.7477740925472398);
}
END_TEST

START_TEST(test_uniform_range_and_mean)
{
    rng_t r;
    rng_seed(&r, 7);
    double sum = 0.0;
    for (int i = 0; i < 100000; ++i) {
        double u = rng_uniform(&r);
        ck_assert(u >= 0.0 && u < 1.0);
        sum += u;
    }
    ck_assert_close(sum / 100000, 0.5, 0.0, 0.005);
}
END_TEST

START_TEST(test_normal_moments)
{
    rng_t r;
    rng_seed(&r, 3);
    double s1 = 0.0, s2 = 0.0;
    const int n = 200000;
    for (int i = 0; i < n; ++i) {
        double z = rng_normal(&r);
        s1 += z;
        s2 += z * z;
    }
    ck_assert_close(s1 / n, 0.0, 0.0, 0.01);
    ck_assert_close(s2 / n, 1.0, 0.0, 0.02);
}
END_TEST

START_TEST(test_below_and_shuffle)
{
    rng_t r;
    rng_seed(&r, 11);
    int counts[5] = {0};
    for (int i = 0; i < 50000; ++i) {
        uint64_t v = rng_below(&r, 5);
        ck_assert_uint_lt(v, 5);
        ++counts[v];
    }
    for (int i = 0; i < 5; ++i)
        ck_assert_int_gt(counts[i], 9500);

    int32_t idx[10], seen[10] = {0};
    for (int i = 0; i < 10; ++i)
        idx[i] = i;
    rng_shuffle(&r, idx, 10);
    for (int i = 0; i < 10; ++i)
        ++seen[idx[i]];
    for (int i = 0; i < 10; ++i)
        ck_assert_int_eq(seen[i], 1);

    /* Same seed, same permutation. */
    int32_t a[10], b[10];
    for (int i = 0; i < 10; ++i)
        a[i] = b[i] = i;
    rng_t r1, r2;
    rng_seed(&r1, 99);
    rng_seed(&r2, 99);
    rng_shuffle(&r1, a, 10);
    rng_shuffle(&r2, b, 10);
    for (int i = 0; i < 10; ++i)
        ck_assert_int_eq(a[i], b[i]);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("rng");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_stream_is_fixed);
    tcase_add_test(tc, test_uniform_from_seed_zero);
    tcase_add_test(tc, test_uniform_range_and_mean);
    tcase_add_test(tc, test_normal_moments);
    tcase_add_test(tc, test_below_and_shuffle);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return testutil_run(suite());
}
