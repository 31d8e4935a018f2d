/* lib/rng.h -- a deterministic random generator: the same seed gives the same numbers on every
 * platform and compiler.
 *
 * The generator is xoshiro256** (Blackman & Vigna), seeded by running splitmix64 over the 64-bit
 * seed. Uniform doubles take the top 53 bits: u = (next >> 11) * 2^-53, in [0, 1). Normal deviates
 * use the Box-Muller transform on two uniforms (the second value of each pair is discarded, so the
 * stream does not depend on call parity). Only integer arithmetic, IEEE division, log, sqrt and
 * cos are used, so results agree bit for bit wherever libm rounds those correctly.
 *
 *     rng_t r;
 *     rng_seed(&r, 42);
 *     double u = rng_uniform(&r);        // [0, 1)
 *     uint64_t k = rng_below(&r, 10);    // 0..9, unbiased
 */
#ifndef ND_RNG_H
#define ND_RNG_H

#include <stdint.h>

typedef struct rng {
    uint64_t s[4];
} rng_t;

/* Seed the generator; any 64-bit seed (including 0) is valid. */
void rng_seed(rng_t *r, uint64_t seed);

/* Next raw 64-bit output. */
uint64_t rng_next(rng_t *r);

/* Uniform double in [0, 1). */
double rng_uniform(rng_t *r);

/* Standard normal deviate (mean 0, variance 1). */
double rng_normal(rng_t *r);

/* Uniform integer in [0, n), without modulo bias; n must be > 0. */
uint64_t rng_below(rng_t *r, uint64_t n);

/* Fisher-Yates shuffle of idx[0..n-1] in place. */
void rng_shuffle(rng_t *r, int32_t *idx, int32_t n);

#endif /* ND_RNG_H */
