/* lib/fused.c -- one-pass loss and gradient for linear, logistic, softmax and ova (fused.h).
 *
 * Work is split by rows into T parts run on the shared compute pool (pool.h): part t takes rows
 * [rows*t/T, rows*(t+1)/T) and walks them in tiles of `tile` rows sized to stay in L2 between the
 * two halves of a tile:
 *   Z[tile, k] = X_tile W[:,1:]^T + W[:,0]      (fwd_*: register-blocked dot products)
 *   Z -> dZ, loss term per row                   (row_*: the formulas of ops.c)
 *   G[:,0] += colsum(dZ), G[:,1:] += dZ^T X_tile (bwd_*: register-blocked rank updates)
 * so X comes from memory once per step. With one output (linear, logistic) the tile's second
 * pass is replaced by blocks of 8 rows that the gradient update finds still in L1, and the loss
 * terms use a vector exp and log1p (k1_*, below; each part works on aligned copies of w and its
 * gradient, K1_PAD). Part 0 ends in the caller's gradient, the others in their private one,
 * added in at the end in part order. The part count depends on the call's size alone, never on
 * the threads: the same rows give the same bytes on 1 thread or 8.
 *
 * The kernels are written with GCC vector types so one source serves SSE2 (the portable
 * baseline every x86-64 has) and, through a clone compiled for AVX2+FMA and picked at run time
 * with __builtin_cpu_supports, the wider units most machines have. No -march in the build.
 */
#include "fused.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "numerics.h"

#define FUSED_MAX_PARTS 8
/* Multiply-adds per part below which waking a worker costs more than it saves. */
#define FUSED_MIN_WORK_PER_PART (1 << 17)
/* Memory of the parts' private gradients and copies: a model too wide for 8 of them in this
 * budget is cut into fewer parts. */
#define FUSED_PARTS_BYTES ((int64_t)256 << 20)
/* Bytes of X per tile: the tile is read again by the gradient half, from L2. */
#define FUSED_TILE_BYTES (96 * 1024)
#define FUSED_TILE_MAX 256
/* Bytes of W (all k rows, a chunk of columns) the forward keeps in L1. */
#define FUSED_L1_W_BYTES (20 * 1024)

/* Everything one call hands to the threads. */
typedef struct fused_job {
    const double *w, *x, *y;
    int32_t rows, n_part;
    int want_grad;
    double *grad;             /* thread 0's gradient: the caller's */
} fused_job_t;

typedef struct fused_slot {
    double *grad;             /* k*(1+n); thread 0 uses the caller's instead */
    double *z;                /* tile * k scratch */
    double *w1, *g1;          /* k = 1: the part's copies of w and its gradient, K1_PAD (below) */
    double loss;
} fused_slot_t;

typedef void (*fused_tile_fn)(const fused_t *f, const double *w, const double *x,
                              const double *y, int32_t r0, int32_t tr, int32_t rows_total,
                              double *z, double *g, int want_grad, double *loss,
                              int32_t pf_rows);

typedef double (*fused_k1_fn)(const fused_t *f, const double *w, const double *x,
                              const double *y, int32_t lo, int32_t hi, int32_t rows_total,
                              double *g, int want_grad);

struct fused {
    int32_t loss, n, k, reduction;
    int32_t max_parts, tile;
    fused_slot_t *slot;       /* max_parts entries */
    fused_tile_fn tile_fn;
    fused_k1_fn k1_fn;        /* one output and a per-row loss (not ova); else NULL */

    pool_t *pool;             /* borrowed; NULL: one thread */
    fused_job_t job;          /* the call in progress, for the parts pool_run hands out */
};

/* ---- horizontal sums ------------------------------------------------------------------------- */

static inline double hsum4(const v4d *v)
{
    return ((*v)[0] + (*v)[2]) + ((*v)[1] + (*v)[3]);
}

/* hsum4 of s[0..3] into out[0..3], rounded exactly as hsum4 rounds: one 4x4 transpose instead
 * of four separate horizontal reductions. */
NM_INLINE void hsum4x4(const v4d *s, double *out)
{
    const v4d a = __builtin_shufflevector(s[0], s[1], 0, 4, 2, 6);   /* s0[0] s1[0] s0[2] s1[2] */
    const v4d b = __builtin_shufflevector(s[0], s[1], 1, 5, 3, 7);   /* s0[1] s1[1] s0[3] s1[3] */
    const v4d c = __builtin_shufflevector(s[2], s[3], 0, 4, 2, 6);
    const v4d d = __builtin_shufflevector(s[2], s[3], 1, 5, 3, 7);
    const v4d l0 = __builtin_shufflevector(a, c, 0, 1, 4, 5);        /* lane k: s_k[0] */
    const v4d l2 = __builtin_shufflevector(a, c, 2, 3, 6, 7);        /* s_k[2] */
    const v4d l1 = __builtin_shufflevector(b, d, 0, 1, 4, 5);        /* s_k[1] */
    const v4d l3 = __builtin_shufflevector(b, d, 2, 3, 6, 7);        /* s_k[3] */
    const v4d t = (l0 + l2) + (l1 + l3);
    memcpy(out, &t, sizeof t);
}

/* ---- kernels ---------------------------------------------------------------------------------- */

/* z[r*k + j] (+)= Σ_{i < nc} x[r][i] w[j][1+i] for r < RB, j < JB: x has row stride n, w row
 * stride 1+n, both already offset to the current chunk of columns. The first chunk (w0 != NULL:
 * the bias column) assigns w0[j*(1+n)] + sum, the others add. */
NM_INLINE void fwd_block(const int RB, const int JB, const double *restrict x, int32_t n,
                             int32_t nc, const double *restrict w, const double *restrict w0,
                             int32_t k, double *restrict z)
{
    const int64_t ldw = (int64_t)n + 1;
    v4d acc[3][4];
#pragma GCC unroll 4
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
        for (int j = 0; j < JB; ++j)
            acc[r][j] = (v4d){0.0, 0.0, 0.0, 0.0};
    int32_t i = 0;
    for (; i + 4 <= nc; i += 4) {
        v4d xv[3];
#pragma GCC unroll 4
        for (int r = 0; r < RB; ++r)
            LD4(xv[r], x + (int64_t)r * n + i);
#pragma GCC unroll 4
        for (int j = 0; j < JB; ++j) {
            v4d wv;
            LD4(wv, w + j * ldw + 1 + i);
#pragma GCC unroll 4
            for (int r = 0; r < RB; ++r)
                acc[r][j] += xv[r] * wv;
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
        for (int j = 0; j < JB; ++j) {
            double s = hsum4(&acc[r][j]);
            for (int32_t ii = i; ii < nc; ++ii)
                s += x[(int64_t)r * n + ii] * w[j * ldw + 1 + ii];
            if (w0 != NULL)
                z[(int64_t)r * k + j] = w0[j * ldw] + s;
            else
                z[(int64_t)r * k + j] += s;
        }
}

/* All k columns of z for RB rows, over one chunk of nc input columns. */
NM_INLINE void fwd_rows(const int RB, const double *restrict x, int32_t n, int32_t nc,
                            const double *restrict w, const double *restrict w0, int32_t k,
                            double *restrict z)
{
    const int64_t ldw = (int64_t)n + 1;
#define FWD_J(JB) fwd_block(RB, JB, x, n, nc, w + j * ldw, w0 != NULL ? w0 + j * ldw : NULL, k, \
                            z + j)
    int32_t j = 0;
    for (; j + 4 <= k; j += 4)
        FWD_J(4);
    switch (k - j) {
    case 3:
        FWD_J(3);
        break;
    case 2:
        FWD_J(2);
        break;
    case 1:
        FWD_J(1);
        break;
    default:
        break;
    }
#undef FWD_J
}

/* Z = X_tile W^T + bias, in chunks of columns so that the chunk of W (all k rows) and of three
 * rows of X stay in L1 while every row block of the tile uses them. */
NM_INLINE void fwd_tile(const double *restrict x, int32_t tr, int32_t n,
                            const double *restrict w, int32_t k, double *restrict z)
{
    int32_t kc = (int32_t)((FUSED_L1_W_BYTES / (int64_t)sizeof(double) / k) & ~(int64_t)3);
    if (kc < 32)
        kc = 32;
    for (int32_t i0 = 0; i0 < n; i0 += kc) {
        const int32_t nc = n - i0 < kc ? n - i0 : kc;
        const double *w0 = i0 == 0 ? w : NULL;
        int32_t r = 0;
        for (; r + 3 <= tr; r += 3)
            fwd_rows(3, x + (int64_t)r * n + i0, n, nc, w + i0, w0, k, z + (int64_t)r * k);
        for (; r < tr; ++r)
            fwd_rows(1, x + (int64_t)r * n + i0, n, nc, w + i0, w0, k, z + (int64_t)r * k);
    }
}

/* g[j][1+i0 .. 1+i0+4*IV) += Σ_r dz[r][j] x[r][i0 ..] for j < JB, over tr rows. When pf is
 * not NULL it is the next tile's x: the same columns of its rows are prefetched, so that tile
 * arrives from memory while this one computes from cache. */
NM_INLINE void bwd_block(const int JB, const int IV, const double *restrict x, int32_t tr,
                             int32_t n, const double *restrict dz, int32_t k, double *restrict g,
                             int32_t i0, const double *pf, int32_t pf_rows)
{
    const int64_t ldg = (int64_t)n + 1;
    v4d acc[4][4];
#pragma GCC unroll 4
    for (int j = 0; j < JB; ++j)
#pragma GCC unroll 4
        for (int v = 0; v < IV; ++v)
            acc[j][v] = (v4d){0.0, 0.0, 0.0, 0.0};
    for (int32_t r = 0; r < tr; ++r) {
        const double *xr = x + (int64_t)r * n + i0;
        if (pf != NULL && r < pf_rows) {
            __builtin_prefetch(pf + (int64_t)r * n + i0);
            if (IV > 2)
                __builtin_prefetch(pf + (int64_t)r * n + i0 + 8);
        }
        v4d xv[4];
#pragma GCC unroll 4
        for (int v = 0; v < IV; ++v)
            LD4(xv[v], xr + 4 * v);
#pragma GCC unroll 4
        for (int j = 0; j < JB; ++j) {
            const double d = dz[(int64_t)r * k + j];
            v4d dv = {d, d, d, d};
#pragma GCC unroll 4
            for (int v = 0; v < IV; ++v)
                acc[j][v] += dv * xv[v];
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < JB; ++j)
#pragma GCC unroll 4
        for (int v = 0; v < IV; ++v) {
            double *gp = g + j * ldg + 1 + i0 + 4 * v;
            v4d gv;
            LD4(gv, gp);
            gv += acc[j][v];
            ST4(gp, gv);
        }
}

/* Classes j..j+JB of the gradient over the whole tile. */
NM_INLINE void bwd_cols(const int JB, const int IV, const double *restrict x, int32_t tr,
                            int32_t n, const double *restrict dz, int32_t k, double *restrict g,
                            const double *pf, int32_t pf_rows)
{
    const int64_t ldg = (int64_t)n + 1;
    int32_t i = 0;
    for (; i + 4 * IV <= n; i += 4 * IV)
        bwd_block(JB, IV, x, tr, n, dz, k, g, i, pf, pf_rows);
    for (; i + 4 <= n; i += 4)
        bwd_block(JB, 1, x, tr, n, dz, k, g, i, pf, pf_rows);
    for (int j = 0; j < JB; ++j) {
        double b = 0.0;
        for (int32_t r = 0; r < tr; ++r)
            b += dz[(int64_t)r * k + j];
        g[j * ldg] += b;
        for (int32_t ii = i; ii < n; ++ii) {
            double s = 0.0;
            for (int32_t r = 0; r < tr; ++r)
                s += dz[(int64_t)r * k + j] * x[(int64_t)r * n + ii];
            g[j * ldg + 1 + ii] += s;
        }
    }
}

/* pf: the next tile's rows (pf_rows of them, 0 for none), prefetched by the first pass. */
NM_INLINE void bwd_tile(const double *restrict x, int32_t tr, int32_t n,
                            const double *restrict dz, int32_t k, double *restrict g,
                            const double *pf, int32_t pf_rows)
{
    const int64_t ldg = (int64_t)n + 1;
    int32_t j = 0;
    if (k == 1) {   /* one output: widen along i instead, for enough independent sums */
        bwd_cols(1, 4, x, tr, n, dz, k, g, pf, pf_rows);
        return;
    }
    for (; j + 4 <= k; j += 4)
        bwd_cols(4, 2, x, tr, n, dz + j, k, g + j * ldg, j == 0 ? pf : NULL, pf_rows);
    switch (k - j) {
    case 3:
        bwd_cols(3, 2, x, tr, n, dz + j, k, g + j * ldg, j == 0 ? pf : NULL, pf_rows);
        break;
    case 2:
        bwd_cols(2, 2, x, tr, n, dz + j, k, g + j * ldg, j == 0 ? pf : NULL, pf_rows);
        break;
    case 1:
        bwd_cols(1, 4, x, tr, n, dz + j, k, g + j * ldg, j == 0 ? pf : NULL, pf_rows);
        break;
    default:
        break;
    }
}

/* Turn a tile of z into dz (scaled as the reduction says) and return the sum of its loss terms,
 * unscaled but for ova's. y points at the tile's first label row; rows_total is the batch's
 * rows (the mean's divisor). */
NM_INLINE double loss_tile(int32_t kind, int32_t reduction, const double *restrict y,
                               int32_t tr, int32_t k, int32_t rows_total, double *restrict z,
                               int want_grad)
{
    const double scale = reduction == AD_REDUCTION_SUM ? 1.0 : 1.0 / (double)rows_total;
    double s = 0.0;
    switch (kind) {
    case FUSED_LOSS_L2: {
        const double g2 = 2.0 * scale;
        for (int64_t i = 0; i < (int64_t)tr * k; ++i) {
            double d = z[i] - y[i];
            s += d * d;
            z[i] = g2 * d;
        }
        break;
    }
    case FUSED_LOSS_SIGMOID_L2: {
        const double g2 = 2.0 * scale;
        for (int32_t i = 0; i < tr; ++i) {
            double o = nm_sigmoid(z[i]), d = o - y[i];
            s += d * d;
            z[i] = (g2 * d) * o * (1.0 - o);
        }
        break;
    }
    case FUSED_LOSS_BCE:
        for (int32_t i = 0; i < tr; ++i) {
            double term, gr;
            nm_bce_pair(z[i], y[i], &term, &gr);
            s += term;
            z[i] = scale * gr;
        }
        break;
    case FUSED_LOSS_OVA:
        /* wbce with w = scale folded per entry, as model.c fills it. */
        for (int32_t i = 0; i < tr; ++i) {
            int32_t c = (int32_t)y[i];
            double *zr = z + (int64_t)i * k;
            for (int32_t j = 0; j < k; ++j) {
                double term, gr;
                nm_bce_pair(zr[j], c == j ? 1.0 : 0.0, &term, &gr);
                s += scale * term;
                zr[j] = scale * gr;
            }
        }
        return s;
    case FUSED_LOSS_CCE:
        /* ops.c cce_loss: loss (max - z_y) + log1p(rest); dz_j = softmax_j - [j == y], and for
         * y the argmax -rest/(1+rest). The exps are computed once, in place. */
        for (int32_t i = 0; i < tr; ++i) {
            double *zr = z + (int64_t)i * k, mx, rest;
            int64_t arg;
            int32_t c = (int32_t)y[i];
            double zc = zr[c];
            nm_row_lse(zr, k, zr, &mx, &arg, &rest);
            s += (mx - zc) + log1p(rest);
            if (!want_grad)
                continue;
            const double denom = 1.0 + rest;
            for (int32_t j = 0; j < k; ++j) {
                double pj = zr[j] / denom;   /* zr[arg] is exactly 1.0 */
                if (j == c)
                    pj = j == arg ? -rest / denom : pj - 1.0;
                zr[j] = scale * pj;
            }
        }
        break;
    default:
        break;
    }
    return s;
}

/* One tile: forward, loss, gradient. The tile after it (pf_rows rows, maybe 0) is prefetched. */
NM_INLINE void tile_body(const fused_t *f, const double *w, const double *x, const double *y,
                             int32_t r0, int32_t tr, int32_t rows_total, double *z, double *g,
                             int want_grad, double *loss, int32_t pf_rows)
{
    const int32_t n = f->n, k = f->k;
    const double *xt = x + (int64_t)r0 * n;
    fwd_tile(xt, tr, n, w, k, z);
    int per_row_y = f->loss == FUSED_LOSS_L2 ? k : 1;
    *loss += loss_tile(f->loss, f->reduction, y + (int64_t)r0 * per_row_y, tr, k, rows_total, z,
                       want_grad);
    if (want_grad)
        bwd_tile(xt, tr, n, z, k, g, pf_rows > 0 ? xt + (int64_t)tr * n : NULL, pf_rows);
}

static void tile_generic(const fused_t *f, const double *w, const double *x, const double *y,
                         int32_t r0, int32_t tr, int32_t rows_total, double *z, double *g,
                         int want_grad, double *loss, int32_t pf_rows)
{
    tile_body(f, w, x, y, r0, tr, rows_total, z, g, want_grad, loss, pf_rows);
}

#ifdef NM_X86_CLONES
__attribute__((target("avx2,fma"))) static void
tile_avx2(const fused_t *f, const double *w, const double *x, const double *y, int32_t r0,
          int32_t tr, int32_t rows_total, double *z, double *g, int want_grad, double *loss,
          int32_t pf_rows)
{
    tile_body(f, w, x, y, r0, tr, rows_total, z, g, want_grad, loss, pf_rows);
}
#endif

/* ---- one output: rows streamed once ---------------------------------------------------------- */

/* With k = 1 a row's x is used by one dot product and one rank-1 update, so the tile's second
 * read from L2 (and its z buffer) is pure overhead, and the libm exp and log1p per row cost as
 * much as the arithmetic. Here a block of K1_RB rows is read from memory by the forward, and the
 * gradient update of the same block finds it in L1; the loss terms are evaluated for the whole
 * block in vector registers. */
#define K1_RB 8

/* w and the gradient keep the bias in column 0, so in the caller's arrays w[1:] starts 8 bytes
 * into a cache line and every other 32-byte load of it straddles two lines. Each part works on
 * copies in 64-byte-aligned buffers with column 0 at index K1_PAD, so that w[1:] and g[1:] start
 * a line. The forward alone (l2 loss, no gradient) of 2000 rows of 100 columns, one thread, rows
 * in L2: 24-26 µs one row at a time, 20-21 with rows paired (k1_dot_rows), 18-20 with both. */
#define K1_PAD 7

/* *out = exp(x) for x <= 0 (x = -|z|) by numerics.h's nm_exp4. Lanes below -707, and NaN, take
 * libm's exp one by one (a cut-off a little inside nm_exp4's range, kept where it has always
 * been so that the results stay what they were). */
NM_INLINE void vexp_neg(const v4d *xp, v4d *out)
{
    const v4d x = *xp;
    v4d e = x;
    nm_exp4(&e);
    const v4l bad = ~(x >= V4(-707.0));
    if (bad[0] | bad[1] | bad[2] | bad[3])
        for (int l = 0; l < 4; ++l)
            if (bad[l])
                e[l] = exp(x[l]);
    *out = e;
}

/* *out = log1p(e) for e in [0, 1], within an ulp of libm, given u = 1 + e and 1/u: fdlibm's
 * s_log1p.c. For u <= sqrt 2, f = e exactly; above, f = u/2 - 1 with the rounding of u put
 * back as c/u. Then log(1 + f) = f - hfsq + s (hfsq + R(s^2)), s = f / (2 + f). */
NM_INLINE void vlog1p_unit(const v4d *ep, const v4d *up, const v4d *inv_up, v4d *out)
{
    const v4d e = *ep, u = *up;
    const v4l hi = u > V4(0x1.6a09e667f3bcdp0);
    const v4d kf = VSEL(hi, V4(1.0), V4(0.0));
    const v4d f = VSEL(hi, u * V4(0.5) - V4(1.0), e);
    const v4d c = VSEL(hi, (e - (u - V4(1.0))) * *inv_up, V4(0.0));
    const v4d s = f / (V4(2.0) + f);
    const v4d z = s * s, w = z * z;
    const v4d t1 = w * (V4(3.999999999940941908e-01)
                        + w * (V4(2.222219843214978396e-01) + w * V4(1.531383769920937332e-01)));
    const v4d t2 = z * (V4(6.666666666666735130e-01)
                        + w * (V4(2.857142874366239149e-01)
                               + w * (V4(1.818357216161805012e-01)
                                      + w * V4(1.479819860511658591e-01))));
    const v4d R = t2 + t1, hfsq = V4(0.5) * f * f;
    *out = kf * V4(6.93147180369123816490e-01)
           - ((hfsq - (s * (hfsq + R) + (kf * V4(1.90821492927058770002e-10) + c))) - f);
}

/* sum[p] = the four partial sums of x_p . w[1:] over the first n4 columns, for P (1 or 2)
 * adjacent rows: a pair shares each load of w. Every row adds its products in the same order
 * whatever P is, so the pairing never changes a bit of z. */
NM_INLINE void k1_dot_rows(const int P, const double *restrict x, int32_t n, int32_t n4,
                               const double *restrict w, v4d *sum)
{
    v4d acc[2][4];
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p)
        for (int j = 0; j < 4; ++j)
            acc[p][j] = V4(0.0);
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
            v4d wv;
            LD4(wv, w + 1 + i + 4 * j);
#pragma GCC unroll 2
            for (int p = 0; p < P; ++p) {
                v4d xv;
                LD4(xv, x + (int64_t)p * n + i + 4 * j);
                acc[p][j] += xv * wv;
            }
        }
    }
    for (; i < n4; i += 4) {
        v4d wv;
        LD4(wv, w + 1 + i);
#pragma GCC unroll 2
        for (int p = 0; p < P; ++p) {
            v4d xv;
            LD4(xv, x + (int64_t)p * n + i);
            acc[p][0] += xv * wv;
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p)
        sum[p] = (acc[p][0] + acc[p][1]) + (acc[p][2] + acc[p][3]);
}

/* z[r] = w[0] + x_r . w[1:] for RB rows, one row after the other: memory is read as one
 * sequential stream, which the hardware prefetchers follow far better than RB rows read side by
 * side (80 MB of rows: 5.5 ms in row order against 9.1 ms in 8-row interleaved order, one
 * core); in this order software prefetches ahead of the block only slowed the step down. Four
 * accumulators per row hide the multiply-add latency. */
NM_INLINE void k1_fwd(const int RB, const double *restrict x, int32_t n,
                          const double *restrict w, double *restrict z)
{
    const int32_t n4 = n - n % 4;   /* columns taken four at a time */
    v4d sum[K1_RB];
    int r = 0;
#pragma GCC unroll 4
    for (; r + 2 <= RB; r += 2)
        k1_dot_rows(2, x + (int64_t)r * n, n, n4, w, sum + r);
    if (r < RB)
        k1_dot_rows(1, x + (int64_t)r * n, n, n4, w, sum + r);
    double s[K1_RB];
    for (r = 0; r + 4 <= RB; r += 4) {
        hsum4x4(sum + r, s + r);
    }
    for (; r < RB; ++r)
        s[r] = hsum4(&sum[r]);
#pragma GCC unroll 8
    for (r = 0; r < RB; ++r) {
        for (int32_t i = n4; i < n; ++i)
            s[r] += x[(int64_t)r * n + i] * w[1 + i];
        z[r] = w[0] + s[r];
    }
}

/* g += Σ_r dz[r] (1, x_r) for RB rows: a rank-RB update, so g is loaded and stored once per
 * block, and x comes from L1 (the forward just read it). */
NM_INLINE void k1_bwd(const int RB, const double *restrict x, int32_t n,
                          const double *restrict dz, double *restrict g)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4d gv;
        LD4(gv, g + 1 + i);
#pragma GCC unroll 8
        for (int r = 0; r < RB; ++r) {
            v4d xv;
            LD4(xv, x + (int64_t)r * n + i);
            gv += dz[r] * xv;
        }
        ST4(g + 1 + i, gv);
    }
    for (; i < n; ++i) {
        double s = g[1 + i];
        for (int r = 0; r < RB; ++r)
            s += dz[r] * x[(int64_t)r * n + i];
        g[1 + i] = s;
    }
    double b = g[0];
    for (int r = 0; r < RB; ++r)
        b += dz[r];
    g[0] = b;
}

/* Loss terms of four rows into *term and their dz (scaled) into *dz: the formulas of
 * loss_tile() lane by lane, with exp and log1p from above. */
NM_INLINE void k1_loss4(int32_t kind, double scale, const v4d *zp, const v4d *yp, v4d *term,
                            v4d *dz)
{
    const v4d z = *zp, t = *yp;
    if (kind == FUSED_LOSS_L2) {
        const v4d d = z - t;
        *term = d * d;
        *dz = V4(2.0 * scale) * d;
        return;
    }
    const v4d x = (v4d)((v4l)z | (v4l)V4(-0.0));   /* -|z|: the sign bit set */
    v4d e;
    vexp_neg(&x, &e);
    const v4d u = V4(1.0) + e;
    /* e/u as e times 1/u: an ulp at most from the quotient, one division fewer. */
    const v4d big = V4(1.0) / u, small = e * big;
    const v4l pos = z >= V4(0.0);
    const v4d sp = VSEL(pos, big, small);   /* sigmoid(z) */
    if (kind == FUSED_LOSS_SIGMOID_L2) {
        const v4d d = sp - t;
        *term = d * d;
        *dz = ((V4(2.0 * scale) * d) * sp) * (V4(1.0) - sp);
        return;
    }
    const v4l neg = -z >= V4(0.0);
    const v4d sm = VSEL(neg, big, small);   /* sigmoid(-z) */
    v4d l1p;
    vlog1p_unit(&e, &u, &big, &l1p);
    const v4d zmax = VSEL(z > V4(0.0), z, V4(0.0));   /* fmax(z, 0), NaN -> 0 as fmax */
    *term = (zmax - t * z) + l1p;
    *dz = V4(scale) * ((V4(1.0) - t) * sp - t * sm);
}

/* Loss terms of the RB rows whose z is in z[] into lsum, their dz into dz[]. Lanes past RB are
 * fed zeros and left out of the loss. */
NM_INLINE void k1_loss(const int RB, int32_t kind, double scale, double *restrict z,
                           const double *restrict y, double *restrict dz, v4d *lsum)
{
    double t[K1_RB];
#pragma GCC unroll 8
    for (int r = 0; r < K1_RB; ++r) {
        t[r] = r < RB ? y[r] : 0.0;
        if (r >= RB)
            z[r] = 0.0;
    }
#pragma GCC unroll 2
    for (int h = 0; h < (RB + 3) / 4; ++h) {
        v4d zv, tv, term, dv;
        LD4(zv, z + 4 * h);
        LD4(tv, t + 4 * h);
        k1_loss4(kind, scale, &zv, &tv, &term, &dv);
        if (RB < 4 * h + 4) {
            const v4l keep = (v4d){0.0, 1.0, 2.0, 3.0} < V4((double)(RB - 4 * h));
            term = VSEL(keep, term, V4(0.0));
        }
        lsum[h] += term;
        ST4(dz + 4 * h, dv);
    }
}

/* Rows [lo, hi) for k = 1; returns the sum of their loss terms (unscaled, as loss_tile). */
NM_INLINE double k1_body(const fused_t *f, const double *w, const double *x,
                             const double *y, int32_t lo, int32_t hi, int32_t rows_total,
                             double *g, int want_grad)
{
    const int32_t n = f->n, kind = f->loss;
    const double scale = f->reduction == AD_REDUCTION_SUM ? 1.0 : 1.0 / (double)rows_total;
    v4d lsum[K1_RB / 4];
    for (int h = 0; h < K1_RB / 4; ++h)
        lsum[h] = V4(0.0);
    double z[K1_RB], dz[K1_RB] = {0.0};
    int32_t r = lo;
    /* Software pipelined: block b's forward is issued before block b-1's update, so the long
     * latency of b-1's loss (exp, log1p, divisions) overlaps b's loads and multiply-adds. */
    if (r + K1_RB <= hi) {
        k1_fwd(K1_RB, x + (int64_t)r * n, n, w, z);
        k1_loss(K1_RB, kind, scale, z, y + r, dz, lsum);
        for (r += K1_RB; r + K1_RB <= hi; r += K1_RB) {
            k1_fwd(K1_RB, x + (int64_t)r * n, n, w, z);
            if (want_grad)
                k1_bwd(K1_RB, x + (int64_t)(r - K1_RB) * n, n, dz, g);
            k1_loss(K1_RB, kind, scale, z, y + r, dz, lsum);
        }
        if (want_grad)
            k1_bwd(K1_RB, x + (int64_t)(r - K1_RB) * n, n, dz, g);
    }
    switch (hi - r) {
#define K1_TAIL(R)                                                                            \
    case R:                                                                                   \
        k1_fwd(R, x + (int64_t)r * n, n, w, z);                                               \
        k1_loss(R, kind, scale, z, y + r, dz, lsum);                                          \
        if (want_grad)                                                                        \
            k1_bwd(R, x + (int64_t)r * n, n, dz, g);                                          \
        break;
        K1_TAIL(1) K1_TAIL(2) K1_TAIL(3) K1_TAIL(4) K1_TAIL(5) K1_TAIL(6) K1_TAIL(7)
#undef K1_TAIL
    default:
        break;
    }
    v4d s = lsum[0];
    for (int h = 1; h < K1_RB / 4; ++h)
        s += lsum[h];
    return hsum4(&s);
}

static double k1_generic(const fused_t *f, const double *w, const double *x, const double *y,
                         int32_t lo, int32_t hi, int32_t rows_total, double *g, int want_grad)
{
    return k1_body(f, w, x, y, lo, hi, rows_total, g, want_grad);
}

#ifdef NM_X86_CLONES
__attribute__((target("avx2,fma"))) static double
k1_avx2(const fused_t *f, const double *w, const double *x, const double *y, int32_t lo,
        int32_t hi, int32_t rows_total, double *g, int want_grad)
{
    return k1_body(f, w, x, y, lo, hi, rows_total, g, want_grad);
}
#endif

/* ---- parts ------------------------------------------------------------------------------------ */

/* Rows [lo, hi) of the current job, in tiles, into slot t (part 0: the caller's gradient). Run
 * by pool_run on whichever thread claims part t. */
static void run_part(void *ctx, int32_t t)
{
    fused_t *f = ctx;
    const fused_job_t *jb = &f->job;
    const int32_t lo = (int32_t)((int64_t)jb->rows * t / jb->n_part);
    const int32_t hi = (int32_t)((int64_t)jb->rows * (t + 1) / jb->n_part);
    fused_slot_t *sl = &f->slot[t];
    double *g = t == 0 ? jb->grad : sl->grad;
    const int64_t n_g = (int64_t)f->k * (f->n + 1);
    double loss = 0.0;
    if (f->k1_fn != NULL) {
        double *w1 = sl->w1 + K1_PAD, *g1 = sl->g1 + K1_PAD;
        memcpy(w1, jb->w, (size_t)n_g * sizeof *w1);
        if (jb->want_grad)
            memset(g1, 0, (size_t)n_g * sizeof *g1);
        sl->loss = f->k1_fn(f, w1, jb->x, jb->y, lo, hi, jb->rows, g1, jb->want_grad);
        if (jb->want_grad)
            memcpy(g, g1, (size_t)n_g * sizeof *g);
        return;
    }
    if (jb->want_grad)
        memset(g, 0, (size_t)n_g * sizeof *g);
    for (int32_t r = lo; r < hi; r += f->tile) {
        int32_t tr = hi - r < f->tile ? hi - r : f->tile;
        int32_t next = hi - r - tr < f->tile ? hi - r - tr : f->tile;
        f->tile_fn(f, jb->w, jb->x, jb->y, r, tr, jb->rows, sl->z, g, jb->want_grad, &loss, next);
    }
    sl->loss = loss;
}

/* ---- public ----------------------------------------------------------------------------------- */

int fused_new(int32_t loss, int32_t n, int32_t k, int32_t reduction, pool_t *pool,
              fused_t **out, err_t *err)
{
    *out = NULL;
    if (loss < FUSED_LOSS_L2 || loss > FUSED_LOSS_OVA || n < 1 || k < 1
        || ((loss == FUSED_LOSS_SIGMOID_L2 || loss == FUSED_LOSS_BCE) && k != 1)
        || (loss == FUSED_LOSS_CCE && k < 2)
        || (reduction != AD_REDUCTION_MEAN && reduction != AD_REDUCTION_SUM))
        return err_set(err, ERR_INVAL, "fused: loss %d with %d inputs, %d outputs", (int)loss,
                       (int)n, (int)k);
    fused_t *f = calloc(1, sizeof *f);
    if (f == NULL)
        return err_set(err, ERR_NOMEM, "fused: out of memory");
    f->loss = loss;
    f->n = n;
    f->k = k;
    f->reduction = reduction;
    f->pool = pool;
    int64_t tile = FUSED_TILE_BYTES / ((int64_t)n * (int64_t)sizeof(double));
    f->tile = tile < 4 ? 4 : tile > FUSED_TILE_MAX ? FUSED_TILE_MAX : (int32_t)tile;
    f->tile_fn = tile_generic;
#ifdef NM_X86_CLONES
    if (nm_have_avx2_fma())
        f->tile_fn = tile_avx2;
#endif
    if (k == 1 && loss != FUSED_LOSS_OVA) {
        f->k1_fn = k1_generic;
#ifdef NM_X86_CLONES
        if (f->tile_fn == tile_avx2)
            f->k1_fn = k1_avx2;
#endif
    }
    const int64_t n_g = (int64_t)k * ((int64_t)n + 1);
    const int64_t part_bytes = (int64_t)sizeof(double) *
                               ((f->k1_fn != NULL ? 3 : 1) * (K1_PAD + n_g) + f->tile * k);
    const int64_t parts = 1 + FUSED_PARTS_BYTES / part_bytes;
    f->max_parts = parts < FUSED_MAX_PARTS ? (int32_t)parts : FUSED_MAX_PARTS;
    f->slot = calloc((size_t)f->max_parts, sizeof *f->slot);
    if (f->slot == NULL)
        goto nomem;
    for (int32_t t = 0; t < f->max_parts; ++t) {
        f->slot[t].z = malloc((size_t)f->tile * (size_t)k * sizeof(double));
        if (t > 0)
            f->slot[t].grad = malloc((size_t)n_g * sizeof(double));
        if (f->slot[t].z == NULL || (t > 0 && f->slot[t].grad == NULL))
            goto nomem;
        if (f->k1_fn != NULL) {
            const size_t bytes = ((size_t)(K1_PAD + n_g) * sizeof(double) + 63) & ~(size_t)63;
            f->slot[t].w1 = aligned_alloc(64, bytes);
            f->slot[t].g1 = aligned_alloc(64, bytes);
            if (f->slot[t].w1 == NULL || f->slot[t].g1 == NULL)
                goto nomem;
        }
    }
    *out = f;
    return 0;
nomem: {
    /* Read before fused_free(f): f is gone after it. */
    const int n_parts = (int)f->max_parts;
    fused_free(f);
    return err_set(err, ERR_NOMEM, "fused: out of memory for %d parts", n_parts);
}
}

void fused_free(fused_t *f)
{
    if (f == NULL)
        return;
    for (int32_t t = 0; f->slot != NULL && t < f->max_parts; ++t) {
        free(f->slot[t].z);
        free(f->slot[t].grad);
        free(f->slot[t].w1);
        free(f->slot[t].g1);
    }
    free(f->slot);
    free(f);
}

int32_t fused_max_parts(const fused_t *f)
{
    return f->max_parts;
}

int fused_loss_grad(fused_t *f, const double *w, const double *x, const double *y, int32_t rows,
                    double *loss, double *grad, err_t *err)
{
    if (rows < 1)
        return err_set_field(err, ERR_INVAL, "x", "no rows to evaluate");
    if (f->loss == FUSED_LOSS_CCE) {
        /* The graph checks this in cce_loss's forward; report it the same way. */
        for (int32_t r = 0; r < rows; ++r) {
            double c = y[r];
            if (!(c >= 0.0 && c < (double)f->k && c == floor(c)))
                return err_set_field(err, ERR_INVAL, "y",
                                     "node 'loss': cce_loss: row %lld: class %g is not an "
                                     "integer in [0,%lld)",
                                     (long long)r, c, (long long)f->k);
        }
    }
    const int64_t work = (int64_t)rows * ((int64_t)f->n + 1) * f->k;
    int32_t nt = (int32_t)(work / FUSED_MIN_WORK_PER_PART);
    if (nt > f->max_parts)
        nt = f->max_parts;
    if (nt > rows)
        nt = rows;
    if (nt < 1)
        nt = 1;
    f->job = (fused_job_t){.w = w, .x = x, .y = y, .rows = rows, .n_part = nt,
                           .want_grad = grad != NULL, .grad = grad};
    if (f->pool != NULL && nt > 1)
        pool_run(f->pool, nt, run_part, f);
    else
        for (int32_t t = 0; t < nt; ++t)
            run_part(f, t);
    double total = f->slot[0].loss;
    if (nt > 1) {
        const int64_t n_g = (int64_t)f->k * (f->n + 1);
        for (int32_t t = 1; t < nt; ++t) {
            total += f->slot[t].loss;
            if (grad != NULL) {
                const double *restrict src = f->slot[t].grad;
                for (int64_t i = 0; i < n_g; ++i)
                    grad[i] += src[i];
            }
        }
    }
    /* As ops.c: the sum of the terms, then the reduction (ova folds it into each term). */
    if (f->loss != FUSED_LOSS_OVA && f->reduction == AD_REDUCTION_MEAN)
        total *= 1.0 / (double)rows;
    *loss = total;
    return 0;
}
