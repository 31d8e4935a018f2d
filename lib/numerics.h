/* lib/numerics.h -- the formulas the graph's ops (ops.c) and the one-pass kernels (fused.c)
 * share, written once so that both paths round alike by construction, not by a comment's
 * promise: the scalar sigmoid, binary cross-entropy and row log-sum-exp, and the 4-lane vector
 * exp with the vector vocabulary (v4d, LD4/ST4, V4, VSEL) the kernels are written in.
 *
 * Everything is static inline (the vector parts always_inline): a kernel compiled for AVX2+FMA
 * through __attribute__((target)) must inline these into itself to get the wide registers.
 *
 *     double p = nm_sigmoid(z);                        // never exp of a large positive number
 *     v4d v;  LD4(v, x);
 *     if (nm_in_range4(&v, NM_EXP4_LO, NM_EXP4_HI)) nm_exp4(&v);  // else libm, lane by lane
 *
 * No state, no allocation, libc only.
 */
#ifndef ND_NUMERICS_H
#define ND_NUMERICS_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* x86-64 builds carry a second copy of each hot kernel compiled for AVX2+FMA, picked at run
 * time (nm_have_avx2_fma); one source serves it and the SSE2 baseline. No -march in the build. */
#if defined(__x86_64__) && defined(__GNUC__)
#define NM_X86_CLONES 1
#endif

#define NM_INLINE static inline __attribute__((always_inline))

/* ---- scalar --------------------------------------------------------------------------------- */

/* sigmoid(z) given e = exp(-|z|): 1/(1+e) for z >= 0, e/(1+e) below. Never forms exp of a
 * large positive number, so it is exactly 0 or 1 far out and never NaN at +-1000. */
static inline double nm_sigmoid_of_exp(double z, double e)
{
    return z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

static inline double nm_sigmoid(double z)
{
    return nm_sigmoid_of_exp(z, exp(-fabs(z)));
}

/* Binary cross-entropy of logit z against target t: softplus(z) - t z. Subtracting t z from
 * max(z,0) first keeps z=50, t=1 at log1p(e^-50) instead of cancelling it away. */
static inline double nm_bce_term(double z, double t)
{
    return (fmax(z, 0.0) - t * z) + log1p(exp(-fabs(z)));
}

/* Its derivative sigmoid(z) - t, written as (1-t) sigmoid(z) - t sigmoid(-z): both terms stay
 * exact when the difference is tiny (z=50, t=1 gives -sigmoid(-50), not 1.0 - 1 = 0). */
static inline double nm_bce_grad(double z, double t)
{
    return (1.0 - t) * nm_sigmoid(z) - t * nm_sigmoid(-z);
}

/* nm_bce_term() and nm_bce_grad() together from one exp: the same values, bit for bit. */
static inline void nm_bce_pair(double z, double t, double *term, double *grad)
{
    const double e = exp(-fabs(z));
    *term = (fmax(z, 0.0) - t * z) + log1p(e);
    *grad = (1.0 - t) * nm_sigmoid_of_exp(z, e) - t * nm_sigmoid_of_exp(-z, e);
}

/* Row log-sum-exp of z[0..k) split as max + log1p(rest): *rest is the sum of exp(z_j - max)
 * over every j but the first argmax *arg, so a dominant logit leaves its tiny partners visible.
 * When e is not NULL the exps are kept there too, with exactly 1.0 at the argmax (e may be z:
 * the max is read before anything is written). */
static inline void nm_row_lse(const double *z, int64_t k, double *e, double *mx, int64_t *arg,
                              double *rest)
{
    int64_t a = 0;
    for (int64_t j = 1; j < k; ++j)
        if (z[j] > z[a])
            a = j;
    const double m = z[a];
    double s = 0.0;
    for (int64_t j = 0; j < k; ++j) {
        if (j == a) {
            if (e != NULL)
                e[j] = 1.0;
            continue;
        }
        const double ej = exp(z[j] - m);
        if (e != NULL)
            e[j] = ej;
        s += ej;
    }
    *mx = m;
    *arg = a;
    *rest = s;
}

/* ---- vectors of four doubles ---------------------------------------------------------------- */

typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));

/* Unaligned load and store. Macros, not functions: a v4d passed by value to a function compiled
 * without AVX is an ABI question the compilers warn about. */
#define LD4(v, p) memcpy(&(v), (p), sizeof(v4d))
#define ST4(p, v) memcpy((p), &(v), sizeof(v4d))
#define V4(c) ((v4d){(c), (c), (c), (c)})
/* Lanewise m ? a : b, for a comparison result m (C has no ?: on vectors). */
#define VSEL(m, a, b) ((v4d)(((m) & (v4l)(a)) | (~(m) & (v4l)(b))))

/* Where nm_exp4() is valid: e^x is a normal number, so 2^n fits the exponent field. */
#define NM_EXP4_LO (-708.0)
#define NM_EXP4_HI 709.0

/* 1 when every lane of *x lies in [lo, hi] (a NaN does not). */
NM_INLINE int nm_in_range4(const v4d *x, double lo, double hi)
{
    v4l ok = (*x >= lo) & (*x <= hi);
    return (ok[0] & ok[1] & ok[2] & ok[3]) != 0;
}

/* *xp = exp(*xp) lane by lane, within 2 ulp of the exact value, for lanes in
 * [NM_EXP4_LO, NM_EXP4_HI] (the caller sends the others to libm). libm's exp cannot be
 * vectorised here, so this is ours: x = n ln2 + r with |r| <= ln2/2 (n = round(x / ln2) by the
 * 1.5 * 2^52 shift, r in two parts: the high part of ln2 has trailing zeros, so n times it is
 * exact), e^r by its Taylor series to r^13 (the first term left out is below 2^-57 of the sum),
 * then n added into the exponent bits. */
NM_INLINE void nm_exp4(v4d *xp)
{
    const v4d x = *xp, shift = V4(0x1.8p52);
    const v4d t = x * V4(0x1.71547652b82fep0) + shift;
    const v4d kd = t - shift;
    const v4l ki = (v4l)t - (v4l)shift;
    v4d r = x - kd * V4(6.93147180369123816490e-01);
    r = r - kd * V4(1.90821492927058770002e-10);
    v4d p = V4(1.0 / 6227020800.0);
    p = p * r + V4(1.0 / 479001600.0);
    p = p * r + V4(1.0 / 39916800.0);
    p = p * r + V4(1.0 / 3628800.0);
    p = p * r + V4(1.0 / 362880.0);
    p = p * r + V4(1.0 / 40320.0);
    p = p * r + V4(1.0 / 5040.0);
    p = p * r + V4(1.0 / 720.0);
    p = p * r + V4(1.0 / 120.0);
    p = p * r + V4(1.0 / 24.0);
    p = p * r + V4(1.0 / 6.0);
    p = p * r + V4(0.5);
    p = p * r + V4(1.0);
    p = p * r + V4(1.0);
    *xp = (v4d)((v4l)p + (ki << 52));
}

#ifdef NM_X86_CLONES
/* 1 when this CPU runs the AVX2+FMA clones. */
static inline int nm_have_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

#endif /* ND_NUMERICS_H */
