/* tests/unit/test_numparse.c -- numparse_decimal gives strtod's double, bit for bit, on edge
 * cases and on many random decimals; non-decimal text is refused. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "numparse.h"
#include "rng.h"
#include "testutil.h"

/* numparse on a copy without a NUL (ASan sees any overread) against strtod on the text. */
static void same_as_strtod(const char *s)
{
    size_t n = strlen(s);
    char *copy = malloc(n > 0 ? n : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, s, n);
    double got = 12345.0;
    int ok = numparse_decimal(copy, n, &got);
    free(copy);
    char *end = NULL;
    double want = strtod(s, &end);
    ck_assert_msg(ok == 1, "'%s' was refused", s);
    uint64_t a, b;
    memcpy(&a, &got, sizeof a);
    memcpy(&b, &want, sizeof b);
    ck_assert_msg(a == b, "'%s': %.17g (%016llx), strtod %.17g (%016llx)", s, got,
                  (unsigned long long)a, want, (unsigned long long)b);
}

START_TEST(test_edge_cases)
{
    static const char *const cases[] = {
        "0", "-0", "+0", "0.0", "-0.0", "00", "007", "1", "-1", "+1", "1.", ".5", "-.5", "1.e5",
        "0.1", "0.2", "0.3", "1e22", "1e23", "9007199254740992", "9007199254740993",
        "9007199254740991", "18446744073709551615", "18446744073709551616",
        "1234567890123456789", "12345678901234567890", "0.1234567890123456789",
        "1.7976931348623157e308", "1.7976931348623159e308", "1e308", "1e309", "1e400", "-1e400",
        "2.2250738585072014e-308", "2.2250738585072011e-308", "4.9406564584124654e-324",
        "5e-324", "2e-324", "3e-324", "1e-400", "-1e-400", "0e999999999", "1e-22", "1e-23",
        "123.456e-3", "0.000001", "0.0000000000000000000000000000001", "1E5", "1e+5", "1e-5",
        "1e0000000000000000000000000000005", "3.14159265358979323846264338327950288",
        "0.30000000000000004", "4503599627370496.5", "4503599627370497.5", "-9.876543e-12",
        "100000000000000000000000", "1000000000000000000000000000000000000000e-30",
        "0.00000000000000000000000000000000000000000000001e45",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        same_as_strtod(cases[i]);
}
END_TEST

START_TEST(test_not_decimal)
{
    static const char *const cases[] = {
        "", "-", "+", ".", "-.", "e5", "1e", "1e+", "1.2.3", "1e5e5", "0x10", "nan", "inf",
        "Infinity", " 1", "1 ", "1,", "--1", "+-1", "1f", "1\xC2\xB5",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        double v = 7.0;
        ck_assert_msg(numparse_decimal(cases[i], strlen(cases[i]), &v) == 0, "'%s' accepted",
                      cases[i]);
        ck_assert(v == 7.0);
        ck_assert_msg(!numparse_is_decimal(cases[i], strlen(cases[i])), "'%s'", cases[i]);
    }
}
END_TEST

/* Random decimals of every shape: %.{1..20}g of random doubles across the whole range, and
 * random digit strings with random points and exponents. */
START_TEST(test_random_against_strtod)
{
    rng_t r;
    rng_seed(&r, 20240601);
    char buf[96];
    for (int i = 0; i < 400000; ++i) {
        uint64_t u = rng_next(&r);
        int kind = (int)(u % 4);
        if (kind == 0) {
            double d;
            uint64_t bits = rng_next(&r);
            memcpy(&d, &bits, sizeof d);
            if (!isfinite(d))
                continue;
            snprintf(buf, sizeof buf, "%.*g", 1 + (int)(rng_next(&r) % 20), d);
        } else if (kind == 1) {
            snprintf(buf, sizeof buf, "%.*g", 1 + (int)(rng_next(&r) % 17),
                     (rng_uniform(&r) * 2.0 - 1.0) * pow(10.0, (double)(rng_next(&r) % 40) - 20));
        } else {
            size_t n = 0;
            if (rng_next(&r) % 3 == 0)
                buf[n++] = rng_next(&r) % 2 ? '-' : '+';
            int digits = 1 + (int)(rng_next(&r) % 25), point = (int)(rng_next(&r) % (digits + 2));
            for (int k = 0; k < digits; ++k) {
                if (k == point)
                    buf[n++] = '.';
                buf[n++] = (char)('0' + rng_next(&r) % (kind == 2 ? 10 : 2));
            }
            if (rng_next(&r) % 2)
                n += (size_t)snprintf(buf + n, sizeof buf - n, "e%d",
                                      (int)(rng_next(&r) % 700) - 350);
            buf[n] = '\0';
        }
        same_as_strtod(buf);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("numparse");
    TCase *tc = tcase_create("numparse");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_edge_cases);
    tcase_add_test(tc, test_not_decimal);
    tcase_add_test(tc, test_random_against_strtod);
    suite_add_tcase(s, tc);
    return testutil_run(s);
}
