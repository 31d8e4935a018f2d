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

/* numparse_prefix on s followed by `tail`, in a buffer of exactly that length (ASan sees any
 * read past it): either 0, or the length of a number whose value is bit for bit
 * numparse_decimal's on those characters; and a number that is all of s with at most 15
 * significant digits and a small exponent is always read whole. */
static void prefix_agrees(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    char *copy = malloc(n + t > 0 ? n + t : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, s, n);
    memcpy(copy + n, tail, t);
    double got = 12345.0, want = 54321.0;
    size_t k = numparse_prefix(copy, n + t, &got);
    if (k > 0) {
        ck_assert_msg(k <= n + t, "'%s%s': read %zu", s, tail, k);
        ck_assert_msg(numparse_decimal(copy, k, &want) == 1, "'%.*s' read as a number", (int)k,
                      copy);
        uint64_t a, b;
        memcpy(&a, &got, sizeof a);
        memcpy(&b, &want, sizeof b);
        ck_assert_msg(a == b, "'%.*s': prefix %.17g, decimal %.17g", (int)k, copy, got, want);
        ck_assert_msg(k == n + t || !numparse_is_decimal(copy, k + 1),
                      "'%s%s': stopped at %zu inside the number", s, tail, k);
    } else {
        ck_assert(got == 12345.0);
    }
    free(copy);
}

START_TEST(test_prefix)
{
    static const char *const exact[] = {"0", "-0", "+7", "1.", ".5", "-.5", "0.000123", "00012",
                                        "123456789012345", "1234567.12345678", "-0.302592",
                                        "1e22", "1e-22", "12E+3", "0.5e-3", "98765.4321e2"};
    static const char *const tails[] = {"", ",", ",1.5", "\n", " ", "x", "e", "e+", ".", "..",
                                        "12345678", ",-0.25,3"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; ++i) {
        for (size_t j = 0; j < sizeof tails / sizeof tails[0]; ++j)
            prefix_agrees(exact[i], tails[j]);
        double v;
        ck_assert_msg(numparse_prefix(exact[i], strlen(exact[i]), &v) == strlen(exact[i]),
                      "'%s' not read whole", exact[i]);
        char with_comma[64];
        snprintf(with_comma, sizeof with_comma, "%s,9", exact[i]);
        ck_assert_msg(numparse_prefix(with_comma, strlen(with_comma), &v) == strlen(exact[i]),
                      "'%s' not read up to its comma", with_comma);
    }
    /* Not numbers, or not for the fast method: 0, and the caller takes the general path. */
    static const char *const refused[] = {"", "-", "+", ".", "-.", "e5", "1e", "1e+", "1e+,",
                                          " 1", "x1", "1e23", "1e-23", "9007199254740993",
                                          "12345678901234567890", "0.12345678901234567890"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; ++i) {
        double v = 7.0;
        ck_assert_msg(numparse_prefix(refused[i], strlen(refused[i]), &v) == 0, "'%s' read",
                      refused[i]);
        ck_assert(v == 7.0);
    }
    /* Random digit strings with points, signs, exponents and tails of every kind. */
    rng_t r;
    rng_seed(&r, 20261128);
    static const char alphabet[] = "0123456789012345678901234567890123456789.-+eE, \n";
    char buf[48], tail[8];
    for (int i = 0; i < 300000; ++i) {
        size_t n = (size_t)(rng_next(&r) % 30), t = (size_t)(rng_next(&r) % 6);
        for (size_t k = 0; k < n; ++k)
            buf[k] = alphabet[rng_next(&r) % (sizeof alphabet - 1)];
        buf[n] = '\0';
        for (size_t k = 0; k < t; ++k)
            tail[k] = alphabet[rng_next(&r) % (sizeof alphabet - 1)];
        tail[t] = '\0';
        prefix_agrees(buf, tail);
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
    tcase_add_test(tc, test_prefix);
    suite_add_tcase(s, tc);
    return testutil_run(s);
}
