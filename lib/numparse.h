/* lib/numparse.h -- decimal text to double, exactly as strtod reads it, without strtod's cost in
 * the common case. Used by the CSV and JSON batch decoders, which read millions of numbers.
 *
 *     double v;
 *     if (numparse_decimal("-1.25e3", 7, &v))   // v == -1250.0, bit for bit strtod's answer
 *         ...
 */
#ifndef ND_NUMPARSE_H
#define ND_NUMPARSE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Read s[0..n) (not NUL-terminated) as a decimal number: [+-] digits [. digits]
 * [(e|E) [+-] digits], with at least one digit before or after the point. Returns 1 with `*out`
 * set to exactly what strtod() gives for the same text (so possibly +-inf for "1e400", +-0 or a
 * subnormal for tiny values), or 0 when the text is not such a number (`*out` untouched).
 */
int numparse_decimal(const char *s, size_t n, double *out);

/* 1 when s[0..n) has the decimal form above (no conversion). */
int numparse_is_decimal(const char *s, size_t n);

/*
 * The decimal number at the start of s[0..n), for decoders that find where a field ends by
 * reading it: returns the length of the number read, with `*out` exactly as numparse_decimal()
 * converts those characters, or 0 when s does not start with a number of the form above or
 * the number is not one the fast exact method converts (more than 19 significant digits, a
 * mantissa above 2^53, a power of ten beyond 1e+-22). On 0 the caller delimits the field
 * itself and uses numparse_decimal(). Nothing at or past s + n is read.
 */
size_t numparse_prefix(const char *s, size_t n, double *out);

/*
 * The run of ASCII digits at p (none read at or past end) appended to *m (which wraps past 19
 * digits; the caller checks *count); *count grows by the run's length. Returns the first
 * non-digit. Reads eight bytes at a time.
 */
const char *numparse_digits(const char *p, const char *end, uint64_t *m, int64_t *count);

/*
 * An exponent part at p ((e|E) [+-] digits) added to *e. Returns the first character after it;
 * p itself when there is no 'e' or 'E' at p; NULL when there is one but no digit follows.
 */
const char *numparse_exponent(const char *p, const char *end, int64_t *e);

/*
 * (neg ? -1 : 1) * m * 10^e for `count` significant digits m, by Clinger's exact method: 1 with
 * *out set when it applies (count <= 19, m <= 2^53, |e| <= 22), else 0 (*out untouched).
 */
int numparse_exact(uint64_t m, int64_t count, int64_t e, int neg, double *out);

#endif /* ND_NUMPARSE_H */
