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

/*
 * Read s[0..n) (not NUL-terminated) as a decimal number: [+-] digits [. digits]
 * [(e|E) [+-] digits], with at least one digit before or after the point. Returns 1 with `*out`
 * set to exactly what strtod() gives for the same text (so possibly +-inf for "1e400", +-0 or a
 * subnormal for tiny values), or 0 when the text is not such a number (`*out` untouched).
 */
int numparse_decimal(const char *s, size_t n, double *out);

/* 1 when s[0..n) has the decimal form above (no conversion). */
int numparse_is_decimal(const char *s, size_t n);

#endif /* ND_NUMPARSE_H */
