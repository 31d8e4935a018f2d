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

static int is_digit(char ch)
{
    return (unsigned)(ch - '0') < 10u;
}

/*
 * Eight bytes at a time while the text allows: a byte is a digit when its high nibble is 3 and
 * adding 6 keeps it 3. A carry or borrow between bytes only runs from a byte to the ones after
 * it (little-endian), so it cannot touch the digits before the first non-digit, and those are
 * all that is kept.
 */
static inline __attribute__((always_inline)) const char *
digit_run(const char *p, const char *end, uint64_t *m, int64_t *count)
{
    static const uint64_t pow10_u64[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000,
                                         100000000};
    uint64_t acc = *m;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, sizeof w);
        uint64_t t = ((w & 0xF0F0F0F0F0F0F0F0ULL) |
                      (((w + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) ^
                     0x3333333333333333ULL;
        int n = t == 0 ? 8 : __builtin_ctzll(t) >> 3;
        if (n > 0) {
            /* The n digits as the low places of eight (the first is the highest). */
            uint64_t v = (w - 0x3030303030303030ULL) << (8 * (8 - n));
            v = v * 10 + (v >> 8);
            v = (((v & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32))) +
                 (((v >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
            acc = acc * pow10_u64[n] + v;
            p += n;
            *count += n;
        }
        if (n < 8) {
            *m = acc;
            return p;
        }
    }
#endif
    for (; p < end && is_digit(*p); ++p, ++*count)
        acc = acc * 10 + (uint64_t)(*p - '0');
    *m = acc;
    return p;
}

const char *numparse_digits(const char *p, const char *end, uint64_t *m, int64_t *count)
{
    return digit_run(p, end, m, count);
}

static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

const char *numparse_exponent(const char *p, const char *end, int64_t *e)
{
    if (p == end || (*p != 'e' && *p != 'E'))
        return p;
    int eneg = 0;
    int64_t x = 0;
    if (++p < end && (*p == '+' || *p == '-'))
        eneg = *p++ == '-';
    if (p == end || !is_digit(*p))
        return NULL;
    for (; p < end && is_digit(*p); ++p)
        if (x < 100000000)   /* far beyond any double's range; no overflow */
            x = x * 10 + (*p - '0');
    *e += eneg ? -x : x;
    return p;
}

int numparse_exact(uint64_t m, int64_t count, int64_t e, int neg, double *out)
{
    if (count > 19 || m > (1ULL << 53) || e < -22 || e > 22)
        return 0;
    double v = e >= 0 ? (double)m * pow10_exact[e] : (double)m / pow10_exact[-e];
    *out = neg ? -v : v;
    return 1;
}

size_t numparse_prefix(const char *s, size_t n, double *out)
{
    const char *p = s, *end = s + n;
    int neg = 0, any = 0;
    if (p < end && (*p == '+' || *p == '-'))
        neg = *p++ == '-';
    const char *zeros = p;
    while (p < end && *p == '0')   /* leading zeros are not significant digits */
        ++p;
    any = p > zeros;
    uint64_t m = 0;
    int64_t count = 0, e = 0;
    p = digit_run(p, end, &m, &count);
    any |= count > 0;
    if (p < end && *p == '.') {
        zeros = ++p;
        if (count == 0)
            while (p < end && *p == '0')
                ++p;
        e -= p - zeros;
        any |= p > zeros;
        int64_t before = count;
        p = digit_run(p, end, &m, &count);
        e -= count - before;
        any |= count > before;
    }
    if (!any || (p = numparse_exponent(p, end, &e)) == NULL ||
        !numparse_exact(m, count, e, neg, out))
        return 0;
    return (size_t)(p - s);
}

/*
 * Clinger's fast path (numparse_prefix, numparse_exact): when the significant digits form an
 * integer m <= 2^53 and the power of ten satisfies |e| <= 22, both m and 10^|e| are exact
 * doubles, so m * 10^e (or m / 10^-e) is one correctly rounded IEEE operation -- the same double
 * strtod computes. Leading zeros are not significant, so "0.000123" still takes this path.
 * Every other decimal goes to strtod.
 */
int numparse_decimal(const char *s, size_t n, double *out)
{
    double v;
    if (n > 0 && numparse_prefix(s, n, &v) == n) {
        *out = v;
        return 1;
    }
    return numparse_is_decimal(s, n) && slow_path(s, n, out);
}
