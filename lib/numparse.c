/* lib/numparse.c -- decimal text to double: Clinger's exact fast path, strtod for the rest. */
#include "numparse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NUMPARSE_STACK 128       /* longest text converted without a heap copy */

int numparse_is_decimal(const char *s, size_t n)
{
    size_t i = 0, digits = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        ++i;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; ++i)
        ++digits;
    if (i < n && s[i] == '.')
        for (++i; i < n && s[i] >= '0' && s[i] <= '9'; ++i)
            ++digits;
    if (digits == 0)
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t exp_digits = 0;
        ++i;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            ++i;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; ++i)
            ++exp_digits;
        if (exp_digits == 0)
            return 0;
    }
    return i == n;
}

/* strtod on a NUL-terminated copy: the text is already known to be a decimal. */
static int slow_path(const char *s, size_t n, double *out)
{
    char stack[NUMPARSE_STACK], *buf = stack;
    if (n >= sizeof stack && (buf = malloc(n + 1)) == NULL)
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    *out = strtod(buf, NULL);
    if (buf != stack)
        free(buf);
    return 1;
}

/*
 * Clinger's fast path: when the significant digits form an integer m <= 2^53 and the power of
 * ten satisfies |e| <= 22, both m and 10^|e| are exact doubles, so m * 10^e (or m / 10^-e) is
 * one correctly rounded IEEE operation -- the same double strtod computes. Leading zeros are
 * not significant, so "0.000123" still takes this path. Everything else goes to strtod.
 */
int numparse_decimal(const char *s, size_t n, double *out)
{
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    size_t i = 0;
    int neg = 0, sig = 0, any = 0;
    uint64_t m = 0;
    int64_t e = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    for (; i < n && (unsigned)(s[i] - '0') < 10u; ++i) {
        any = 1;
        if (m == 0 && s[i] == '0')
            continue;
        if (++sig <= 19)
            m = m * 10 + (uint64_t)(s[i] - '0');
        else
            ++e;                 /* digits beyond 19 only count for the scale (slow path) */
    }
    if (i < n && s[i] == '.') {
        for (++i; i < n && (unsigned)(s[i] - '0') < 10u; ++i) {
            any = 1;
            if (m == 0 && s[i] == '0') {
                --e;
                continue;
            }
            if (++sig <= 19) {
                m = m * 10 + (uint64_t)(s[i] - '0');
                --e;
            }
        }
    }
    if (!any)
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        int eneg = 0, edigits = 0;
        int64_t x = 0;
        ++i;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        for (; i < n && (unsigned)(s[i] - '0') < 10u; ++i, ++edigits)
            if (x < 100000000)   /* far beyond any double's range; no overflow */
                x = x * 10 + (s[i] - '0');
        if (edigits == 0)
            return 0;
        e += eneg ? -x : x;
    }
    if (i != n)
        return 0;
    if (sig > 19 || m > (1ULL << 53) || e < -22 || e > 22)
        return slow_path(s, n, out);
    double v = e >= 0 ? (double)m * pow10[e] : (double)m / pow10[-e];
    *out = neg ? -v : v;
    return 1;
}
