/*
 * focalrec's CPU kernel: the sigmoid focal loss and its gradient in one pass over float32 logits.
 *
 * Shipped compiled in focalrec's platform wheels (one library per instruction-set variant, picked
 * at load time through focal_cpu_level below: prebuilt.py); elsewhere compiled on first use by
 * native.py (without a compiler the loss runs on its torch path). Plain C: GCC, clang and MSVC. Notation as in terms.py: x a logit, t its target, p = sigmoid(x),
 * s = softplus(x). A hard target (t in {0, 1}) uses the t = 0 formulas on y = x (t = 0) or y = -x
 * (t = 1), since FL(x, 1) = FL(-x, 0):
 *
 *     f(y)  = p^g s                      p = sigmoid(y), s = softplus(y)
 *     f'(y) = p^g (g (1 - p) s + p)      df/dx = f'(y) for t = 0, -f'(y) for t = 1
 *
 * with p^g = exp(g log p) (integer g: repeated products), log p = min(y, 0) - log1p(exp(-|y|)).
 * A soft target takes the general formulas, q = p (1 - t) + (1 - p) t, BCE = t s(-x) + (1 - t) s(x):
 *
 *     f = q^g BCE,    df/dx = q^g (g (1 - 2t) r BCE + p (1 - t) - (1 - p) t),    r = p (1 - p) / q.
 *
 * A positive weight w (pos_weight) multiplies the positive terms: for hard targets a factor, for
 * soft targets inside BCE = w t s(-x) + (1 - t) s(x), so that p - t becomes p (1 - t) - w t (1 - p).
 *
 * The asymmetric loss (ASL) mixes t L+ + (1 - t) L-, L+ the t = 1 term with gamma (gamma_pos) and
 * L- the negative term with gamma_neg and the probability margin m (clip): with u = p - m,
 * w = (1 - p) + m, l = -log(w) (log1p(-u) for u < 1/2) and a = p (1 - p),
 *
 *     L- = u^g l,    dL-/dx = a ((g u^(g - 1)) l + u^g / w)    where u > 0, else 0 (also at u = 0).
 *
 * Hard targets with m = 0 and gamma_neg = gamma run the focal loop itself (the focal loss is that
 * special case, bit for bit). A tile of hard targets of which at most an eighth are 1 (index
 * lists, sparse dense targets) takes L- at every column in one vectorized loop and L+ at the ones
 * alone; other tiles evaluate both terms at every column. Both logarithms of L- (log1p(-u) for
 * u < 1/2, log w above) share one series and one division, and an integer gamma_neg gives u^g
 * and u^(g - 1) by products.
 *
 * Every factor is bounded, and products are ordered so that no intermediate overflows: values
 * and gradients are finite for every finite logit, and at +-inf they are the limits (the loss
 * is inf where the target disagrees, the gradient +-1 times the weight). A term whose weight is 0
 * (alpha_t * weight * scale) is 0, value and gradient, whatever its logit.
 *
 * exp and log1p are evaluated by the branch-free polynomials below (about 1 ulp), so that the
 * compiler vectorizes every loop. Rows are processed in tiles of TILE columns: the tile's logits
 * and targets are read into local buffers, its values and gradients computed there, then the
 * gradient is written out (so the gradient may overwrite the logits in place). Index-list targets
 * become a per-tile 0/1 mask: the same loop serves them and dense 0/1 targets. Sums are formed in
 * double, per tile, row and block of rows; the caller adds the block sums in order, so the result
 * does not depend on the number of threads.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define TILE 256

typedef struct {
    const float *x;            /* logits (rows, cols), unit column stride */
    int64_t x_row_stride;
    float *grad;               /* gradient (rows, cols) or NULL; may equal x */
    int64_t grad_row_stride;
    float *value;              /* elementwise loss (rows, cols) or NULL */
    int64_t value_row_stride;
    const void *dense;         /* dense targets (rows, cols) or NULL */
    int64_t dense_row_stride;
    int32_t dense_is_bool;     /* 1: uint8/bool targets, 0: float32 */
    int32_t has_alpha;
    const int64_t *index;      /* index list (rows, index_width), global item ids, or NULL */
    int64_t index_width;
    const float *alpha_vec;    /* per global column, or NULL (then alpha, if has_alpha) */
    const float *weight;       /* weight (rows, cols) with the strides below, or NULL */
    int64_t weight_row_stride;
    int64_t weight_col_stride;
    int64_t rows;
    int64_t cols;
    int64_t col_offset;        /* global id of column 0 (index lists and alpha_vec are global) */
    int64_t rows_per_block;
    float alpha;
    float gamma;
    float scale;               /* multiplies every term: 1 / divisor of the reduction */
    int32_t gamma_int;         /* gamma as 0..4 when it is that integer, else -1 */
    const float *pos_weight_vec; /* per global column factor of positive terms, or NULL */
    float pos_weight;          /* factor of positive terms (1 when absent) */
    int32_t asymmetric;        /* 1: ASL (negatives take gamma_neg and the margin clip) */
    float gamma_neg;
    int32_t gamma_neg_int;     /* gamma_neg as 0..4 when it is that integer, else -1 */
    float clip;                /* ASL's probability margin on negatives, in [0, 1) */
    int32_t reserved;
} focal_args;

#if defined(_MSC_VER) && !defined(__clang__)
#define ALWAYS_INLINE_EARLY static __forceinline
#define ALWAYS_INLINE static __forceinline
#else
#define ALWAYS_INLINE_EARLY static inline __attribute__((always_inline))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#endif
#ifdef _WIN32
#define FOCAL_EXPORT __declspec(dllexport)
#else
#define FOCAL_EXPORT __attribute__((visibility("default")))
#endif

ALWAYS_INLINE_EARLY float f_from_bits(int32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }

/* exp(-a) for a >= 0 (NaN -> NaN, inf -> 0), gradual underflow included. */
ALWAYS_INLINE_EARLY float fr_exp_neg(float a) {
    const float lo = -103.972084f;
    float x = -a;
    float xc = x < lo ? lo : x;
    xc = x == x ? xc : 0.0f;
    const float magic = 12582912.0f;
    float k = (xc * 1.44269504088896341f + magic) - magic;
    float r = xc - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t ki = (int32_t)k; /* in [-150, 0] */
    int32_t k1 = ki >> 1;
    int32_t k2 = ki - k1;
    float res = p * f_from_bits((k1 + 127) << 23) * f_from_bits((k2 + 127) << 23);
    res = x < lo ? 0.0f : res;
    return x == x ? res : x;
}

/* 2 atanh(s) for |s| <= 1/3, the series to s^13: log(1 + f) with s = f / (2 + f). */
ALWAYS_INLINE_EARLY float fr_atanh2(float s) {
    float z = s * s;
    float p = 2.0f / 13.0f;
    p = p * z + 2.0f / 11.0f;
    p = p * z + 2.0f / 9.0f;
    p = p * z + 2.0f / 7.0f;
    p = p * z + 2.0f / 5.0f;
    p = p * z + 2.0f / 3.0f;
    p = p * z + 2.0f;
    return s * p;
}

/* log(1 + e) for e in [0, 1] (NaN -> NaN): 2 atanh(s), s = e / (2 + e) in [0, 1/3]. */
ALWAYS_INLINE_EARLY float fr_log1p01(float e) { return fr_atanh2(e / (2.0f + e)); }

/* v > 0 (subnormals included) as 2^e (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)]: returns f and
 * sets *e, the reduction of fr_log. */
ALWAYS_INLINE_EARLY float fr_log_reduce(float v, float *e) {
    int32_t sub = v < FLT_MIN;
    float w = sub ? v * 8388608.0f : v; /* 2^23 */
    int32_t i;
    memcpy(&i, &w, sizeof i);
    int32_t ex = ((i >> 23) & 0xff) - 127;
    float m = f_from_bits((i & 0x007fffff) | 0x3f800000); /* [1, 2) */
    int32_t big = m > 1.41421356f;
    m = big ? m * 0.5f : m;
    ex = ex + big - (sub ? 23 : 0);
    *e = (float)ex;
    return m - 1.0f;
}

/* log(v) for v >= 0 (0 -> -inf, inf -> inf, NaN -> NaN), subnormals included. */
ALWAYS_INLINE_EARLY float fr_log(float v) {
    float e;
    float f = fr_log_reduce(v, &e);
    float s = f / (2.0f + f);
    float z = s * s;
    float p = 2.0f / 11.0f;
    p = p * z + 2.0f / 9.0f;
    p = p * z + 2.0f / 7.0f;
    p = p * z + 2.0f / 5.0f;
    p = p * z + 2.0f / 3.0f;
    p = p * z + 2.0f;
    float res = e * 0.693145751953125f + (s * p + e * 1.428606765330187045e-6f);
    res = v == 0.0f ? -INFINITY : res;
    res = v == INFINITY ? INFINITY : res;
    return v == v ? res : v;
}

ALWAYS_INLINE_EARLY float int_power(float b, int32_t k) {
    b = k < 0 ? 1.0f : b; /* not used: no subnormal products */
    float b2 = b * b;
    return k == 0 ? 1.0f : k == 1 ? b : k == 2 ? b2 : k == 3 ? b2 * b : b2 * b2;
}

/* Value and derivative (in y) of the t = 0 term at y; see the file comment. */
ALWAYS_INLINE_EARLY void hard_terms(float y, float gamma, int32_t gamma_int, float *v, float *g) {
    float e = fr_exp_neg(fabsf(y));
    float l = fr_log1p01(e);
    float inv = 1.0f / (1.0f + e);
    float ei = e * inv;
    int32_t pos = y >= 0.0f;
    float p = pos ? inv : ei;
    float omp = pos ? ei : inv;
    float s = (pos ? y : 0.0f) + l;
    /* p = 0 gives 0 even when gamma is so small that it rounds to 0 in float32 (not 0 * inf). */
    /* The branch not taken gets neutral arguments (no subnormal intermediates: they are slow). */
    float pg = gamma_int >= 0 ? int_power(p, gamma_int)
                              : (p > 0.0f ? fr_exp_neg(gamma_int >= 0 ? 0.0f : gamma * (l - (pos ? 0.0f : y))) : 0.0f);
    float s_fin = s < FLT_MAX ? s : FLT_MAX; /* (1 - p) s -> 0 at y = inf, not 0 * inf */
    *v = pg * s;
    *g = (pg * gamma) * (omp * s_fin) + pg * p;
}

/* Value and derivative (in x) for a target t anywhere in [0, 1]. */
ALWAYS_INLINE_EARLY void soft_terms(float x, float t, float tw, float gamma, int32_t gamma_int,
                                    float *v, float *g) {
    float e = fr_exp_neg(fabsf(x));
    float l = fr_log1p01(e);
    float inv = 1.0f / (1.0f + e);
    float ei = e * inv;
    int32_t pos = x >= 0.0f;
    float p = pos ? inv : ei;
    float omp = pos ? ei : inv;
    float sp = (pos ? x : 0.0f) + l;  /* softplus(x) = -log(1 - p) */
    float sn = (pos ? 0.0f : -x) + l; /* softplus(-x) = -log p */
    float u = 1.0f - t;
    /* tw = pos_weight * t (t itself without a positive weight) */
    float bce = (tw > 0.0f ? tw * sn : 0.0f) + (u > 0.0f ? u * sp : 0.0f);
    float q = p * u + omp * t;
    float qg = gamma_int >= 0 ? int_power(q, gamma_int)
                              : (q > 0.0f ? fr_exp_neg(-gamma * fr_log(q)) : 0.0f);
    float r = q > 0.0f ? (p * omp) / q : 0.0f;
    float bce_fin = bce < FLT_MAX ? bce : FLT_MAX;
    /* An infinite BCE (an infinite logit against a target that is not 0 or 1 on its side) has
     * q >= min(t, 1 - t) > 0: the term is infinite even where q^gamma underflows to 0. */
    *v = bce < INFINITY ? qg * bce : bce;
    *g = (qg * gamma) * ((1.0f - 2.0f * t) * r * bce_fin) + qg * (p * u - omp * tw);
}

/* Value and derivative (in x) of ASL's negative term with margin m > 0; see the file comment. */
ALWAYS_INLINE_EARLY void margin_terms(float x, float gamma, int32_t gamma_int, float m, float *v,
                                      float *g) {
    float e = fr_exp_neg(fabsf(x));
    float inv = 1.0f / (1.0f + e);
    float ei = e * inv;
    int32_t pos = x >= 0.0f;
    float p = pos ? inv : ei;
    float omp = pos ? ei : inv;
    float u = p - m;
    int32_t zero = p <= m; /* NaN logits propagate */
    float us = zero ? 1.0f : u;
    float w = omp + m; /* > 0 */
    /* log(w) = log1p(-u) in one series 2 atanh(f / (2 + f)) (fr_atanh2): for u < 1/2 with
     * f = -u (|s| <= 1/3), else fr_log's reduction of w (the branch-free select computes the
     * reduction either way, and divides once). */
    int32_t small = us < 0.5f;
    float ew;
    float fw = fr_log_reduce(w, &ew);
    float f = small ? -us : fw;
    float ef = small ? 0.0f : ew;
    float series = fr_atanh2(f / (2.0f + f));
    float ell = -(ef * 0.693145751953125f + (series + ef * 1.428606765330187045e-6f));
    /* u^g and u^(g - 1): repeated products for an integer g (no division), else exp and log.
     * The branch not taken gets neutral arguments (no subnormal intermediates: they are slow). */
    float pg = gamma_int >= 0 ? int_power(us, gamma_int)
                              : fr_exp_neg(-gamma * fr_log(gamma_int >= 0 ? 1.0f : us));
    float pg1 = gamma_int > 0 ? int_power(us, gamma_int - 1) : gamma_int == 0 ? 0.0f : pg / us;
    float a = p * omp;
    *v = zero ? 0.0f : pg * ell;
    *g = zero ? 0.0f : a * ((pg1 * gamma) * ell + pg / w);
}

/* ASL's negative term at x: the focal t = 0 term with gamma_neg without a margin (clip_zero, a
 * constant of each loop instance), else margin_terms. */
ALWAYS_INLINE_EARLY void negative_terms(float x, float gamma_neg, int32_t gni, float m,
                                        int32_t clip_zero, float *v, float *g) {
    if (clip_zero)
        hard_terms(x, gamma_neg, gni, v, g);
    else
        margin_terms(x, gamma_neg, gni, m, v, g);
}

/* The t = 0 / t = 1 loop over a tile: values into vb, derivatives into gb; returns the sum (in
 * float lanes: a tile is short). The factor is fb[j] when use_fb, else f1 (target 1) or f0. */
ALWAYS_INLINE float hard_loop(int64_t n, const float *xb, const float *tb, const float *fb,
                               float f0, float f1, int32_t use_fb, float *vb, float *gb,
                               float gamma, int32_t gi) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
        int32_t one = tb[j] != 0.0f;
        float v, g;
        hard_terms(one ? -xb[j] : xb[j], gamma, gi, &v, &g);
        float f = use_fb ? fb[j] : (one ? f1 : f0);
        float fv = f == 0.0f ? 0.0f : f * v;
        vb[j] = fv;
        gb[j] = f == 0.0f ? 0.0f : (one ? -f : f) * g;
        sum += fv;
    }
    return sum;
}

/* The general loop, for a tile holding a soft target; the factor is always fb[j]. */
ALWAYS_INLINE float soft_loop(int64_t n, const float *xb, const float *tb, const float *fb,
                               const float *pb, float *vb, float *gb, float gamma, int32_t gi) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
        float v, g;
        soft_terms(xb[j], tb[j], tb[j] * pb[j], gamma, gi, &v, &g);
        float f = fb[j];
        float fv = f == 0.0f ? 0.0f : f * v;
        vb[j] = fv;
        gb[j] = f == 0.0f ? 0.0f : f * g;
        sum += fv;
    }
    return sum;
}

/* ASL over a tile: t fp L+ + (1 - t) fn L-, fp and fn the factors of positive and negative terms
 * (alpha * pos_weight * weight * scale and (1 - alpha) * weight * scale). */
ALWAYS_INLINE float asl_loop(int64_t n, const float *xb, const float *tb, const float *fpb,
                              const float *fnb, float *vb, float *gb, float gamma, int32_t gi,
                              float gamma_neg, int32_t gni, float m, int32_t clip_zero) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
        float vp, gp, vn, gn;
        hard_terms(-xb[j], gamma, gi, &vp, &gp);
        negative_terms(xb[j], gamma_neg, gni, m, clip_zero, &vn, &gn);
        float wp = tb[j] * fpb[j];
        float wn = (1.0f - tb[j]) * fnb[j];
        float v = (wp == 0.0f ? 0.0f : wp * vp) + (wn == 0.0f ? 0.0f : wn * vn);
        vb[j] = v;
        gb[j] = (wp == 0.0f ? 0.0f : -wp * gp) + (wn == 0.0f ? 0.0f : wn * gn);
        sum += v;
    }
    return sum;
}

/* ASL's negative terms over a tile of hard targets: (1 - t) fn L-, 0 where t = 1 (asl_positives
 * then fills those columns in). Half the work of asl_loop where few targets are 1. */
ALWAYS_INLINE float asl_negatives(int64_t n, const float *xb, const float *tb, const float *fnb,
                                  float *vb, float *gb, float gamma_neg, int32_t gni, float m,
                                  int32_t clip_zero) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
        float vn, gn;
        negative_terms(xb[j], gamma_neg, gni, m, clip_zero, &vn, &gn);
        float wn = tb[j] != 0.0f ? 0.0f : fnb[j];
        float v = wn == 0.0f ? 0.0f : wn * vn;
        vb[j] = v;
        gb[j] = wn == 0.0f ? 0.0f : wn * gn;
        sum += v;
    }
    return sum;
}

/* ASL's positive terms fp L+ at the tile's columns whose (hard) target is 1, one by one; returns
 * their sum. */
static float asl_positives(int64_t n, const float *xb, const float *tb, const float *fpb,
                           float *vb, float *gb, float gamma, int32_t gi) {
    float sum = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        if (tb[j] == 0.0f) continue;
        float vp, gp;
        hard_terms(-xb[j], gamma, gi, &vp, &gp);
        const float wp = fpb[j];
        vb[j] = wp == 0.0f ? 0.0f : wp * vp;
        gb[j] = wp == 0.0f ? 0.0f : -wp * gp;
        sum += vb[j];
    }
    return sum;
}

/* The positive weight of each column of the tile. */
static void pos_weights(const focal_args *a, int64_t c0, int64_t n, float *pb) {
    if (a->pos_weight_vec != NULL) {
        const float *pw = a->pos_weight_vec + a->col_offset + c0;
        for (int64_t j = 0; j < n; j++) pb[j] = pw[j];
    } else {
        for (int64_t j = 0; j < n; j++) pb[j] = a->pos_weight;
    }
}

/* The factors of ASL's positive (fpb) and negative (fnb) terms for each column of the tile. */
static void asl_factors(const focal_args *a, int64_t row, int64_t c0, int64_t n, float *fpb,
                        float *fnb) {
    pos_weights(a, c0, n, fpb);
    const float scale = a->scale;
    if (a->alpha_vec != NULL) {
        const float *al = a->alpha_vec + a->col_offset + c0;
        for (int64_t j = 0; j < n; j++) {
            fpb[j] = scale * (al[j] * fpb[j]);
            fnb[j] = scale * (1.0f - al[j]);
        }
    } else {
        const float ap = a->has_alpha ? a->alpha : 1.0f, an = a->has_alpha ? 1.0f - a->alpha : 1.0f;
        for (int64_t j = 0; j < n; j++) {
            fpb[j] = scale * (ap * fpb[j]);
            fnb[j] = scale * an;
        }
    }
    if (a->weight != NULL) {
        const float *w = a->weight + row * a->weight_row_stride + c0 * a->weight_col_stride;
        const int64_t cs = a->weight_col_stride;
        for (int64_t j = 0; j < n; j++) {
            fpb[j] *= w[j * cs];
            fnb[j] *= w[j * cs];
        }
    }
}

/* alpha_t * weight * scale for each column of the tile; times pos_weight for a hard target 1. */
static void factors(const focal_args *a, int64_t row, int64_t c0, int64_t n, const float *tb,
                    int32_t hard, float *fb) {
    const float scale = a->scale;
    if (a->alpha_vec != NULL) {
        const float *al = a->alpha_vec + a->col_offset + c0;
        for (int64_t j = 0; j < n; j++)
            fb[j] = scale * (al[j] * tb[j] + (1.0f - al[j]) * (1.0f - tb[j]));
    } else if (a->has_alpha) {
        const float al = a->alpha;
        for (int64_t j = 0; j < n; j++) fb[j] = scale * (al * tb[j] + (1.0f - al) * (1.0f - tb[j]));
    } else {
        for (int64_t j = 0; j < n; j++) fb[j] = scale;
    }
    if (hard && a->pos_weight_vec != NULL) {
        const float *pw = a->pos_weight_vec + a->col_offset + c0;
        for (int64_t j = 0; j < n; j++) fb[j] *= tb[j] != 0.0f ? pw[j] : 1.0f;
    } else if (hard && a->pos_weight != 1.0f) {
        for (int64_t j = 0; j < n; j++) fb[j] *= tb[j] != 0.0f ? a->pos_weight : 1.0f;
    }
    if (a->weight != NULL) {
        const float *w = a->weight + row * a->weight_row_stride + c0 * a->weight_col_stride;
        const int64_t cs = a->weight_col_stride;
        if (cs == 1) {
            for (int64_t j = 0; j < n; j++) fb[j] *= w[j];
        } else {
            for (int64_t j = 0; j < n; j++) fb[j] *= w[j * cs];
        }
    }
}

#define HARD(G, F) hard_loop(n, xb, tb, fb, f0, f1, F, vb, gb, gamma, G)
#define SOFT(G) soft_loop(n, xb, tb, fb, pb, vb, gb, gamma, G)

/* One tile of one row: columns [c0, c0 + n). Returns the tile's sum. */
static double tile(const focal_args *a, int64_t row, int64_t c0, int64_t n) {
    float xb[TILE], tb[TILE], vb[TILE], gb[TILE], fb[TILE], pb[TILE];
    const float gamma = a->gamma;
    memcpy(xb, a->x + row * a->x_row_stride + c0, (size_t)n * sizeof(float));
    int32_t hard = 1;
    if (a->index != NULL) {
        memset(tb, 0, (size_t)n * sizeof(float));
        const int64_t *ix = a->index + row * a->index_width;
        for (int64_t j = 0; j < a->index_width; j++) {
            int64_t c = ix[j] - a->col_offset - c0; /* padding -1 lands outside */
            if (ix[j] >= 0 && c >= 0 && c < n) tb[c] = 1.0f;
        }
    } else if (a->dense != NULL) {
        if (a->dense_is_bool) {
            const uint8_t *d = (const uint8_t *)a->dense + row * a->dense_row_stride + c0;
            for (int64_t j = 0; j < n; j++) tb[j] = d[j] ? 1.0f : 0.0f;
        } else {
            const float *d = (const float *)a->dense + row * a->dense_row_stride + c0;
            int32_t soft = 0;
            for (int64_t j = 0; j < n; j++) {
                tb[j] = d[j];
                soft |= (d[j] != 0.0f) & (d[j] != 1.0f);
            }
            hard = !soft;
        }
    } else {
        memset(tb, 0, (size_t)n * sizeof(float));
    }
    /* ASL, except hard targets where it is the focal loss (margin 0, gamma_neg = gamma). */
    const int32_t asl = a->asymmetric && !(hard && a->clip == 0.0f && a->gamma_neg == a->gamma);
    double sum;
    if (asl) {
        asl_factors(a, row, c0, n, fb, pb);
        /* One vectorized instance per kind of negative term, and instances whose exponents are
         * constants for the paper's (gamma_pos 0, gamma_neg 4) and timm's (1, 4) defaults. */
        const float m = a->clip;
        const int32_t gi = a->gamma_int, gni = a->gamma_neg_int;
        int64_t ones = 0;
        if (hard)
            for (int64_t j = 0; j < n; j++) ones += tb[j] != 0.0f;
        if (hard && 8 * ones <= n) {
            /* Few targets 1 (index lists, sparse dense targets): the negative term everywhere
             * (vectorized), then the positive term at the ones. */
            if (m != 0.0f && gni == 4)
                sum = asl_negatives(n, xb, tb, pb, vb, gb, a->gamma_neg, 4, m, 0);
            else if (m != 0.0f)
                sum = asl_negatives(n, xb, tb, pb, vb, gb, a->gamma_neg, gni, m, 0);
            else
                sum = asl_negatives(n, xb, tb, pb, vb, gb, a->gamma_neg, gni, 0.0f, 1);
            if (ones > 0) sum += asl_positives(n, xb, tb, fb, vb, gb, gamma, gi);
        } else if (m != 0.0f && gi == 0 && gni == 4)
            sum = asl_loop(n, xb, tb, fb, pb, vb, gb, gamma, 0, a->gamma_neg, 4, m, 0);
        else if (m != 0.0f && gi == 1 && gni == 4)
            sum = asl_loop(n, xb, tb, fb, pb, vb, gb, gamma, 1, a->gamma_neg, 4, m, 0);
        else if (m != 0.0f)
            sum = asl_loop(n, xb, tb, fb, pb, vb, gb, gamma, gi, a->gamma_neg, gni, m, 0);
        else
            sum = asl_loop(n, xb, tb, fb, pb, vb, gb, gamma, gi, a->gamma_neg, gni, 0.0f, 1);
        if (a->grad != NULL)
            memcpy(a->grad + row * a->grad_row_stride + c0, gb, (size_t)n * sizeof(float));
        if (a->value != NULL)
            memcpy(a->value + row * a->value_row_stride + c0, vb, (size_t)n * sizeof(float));
        return sum;
    }
    const int32_t use_fb =
        !hard || a->alpha_vec != NULL || a->weight != NULL || a->pos_weight_vec != NULL;
    if (use_fb) factors(a, row, c0, n, tb, hard, fb);
    if (!hard) pos_weights(a, c0, n, pb);
    const float f0 = a->scale * (a->has_alpha ? 1.0f - a->alpha : 1.0f);
    const float f1 = a->scale * (a->has_alpha ? a->alpha : 1.0f) * a->pos_weight;
    /* One loop per integer gamma and factor kind, each branch-free and vectorized. */
    switch (hard ? (use_fb ? 8 : 0) + a->gamma_int + 1 : 16 + a->gamma_int + 1) {
    case 0: sum = HARD(-1, 0); break;
    case 1: sum = HARD(0, 0); break;
    case 2: sum = HARD(1, 0); break;
    case 3: sum = HARD(2, 0); break;
    case 4: sum = HARD(3, 0); break;
    case 5: sum = HARD(4, 0); break;
    case 8: sum = HARD(-1, 1); break;
    case 9: sum = HARD(0, 1); break;
    case 10: sum = HARD(1, 1); break;
    case 11: sum = HARD(2, 1); break;
    case 12: sum = HARD(3, 1); break;
    case 13: sum = HARD(4, 1); break;
    case 16: sum = SOFT(-1); break;
    case 17: sum = SOFT(0); break;
    case 18: sum = SOFT(1); break;
    case 19: sum = SOFT(2); break;
    case 20: sum = SOFT(3); break;
    default: sum = SOFT(4); break;
    }
    if (a->grad != NULL) memcpy(a->grad + row * a->grad_row_stride + c0, gb, (size_t)n * sizeof(float));
    if (a->value != NULL) memcpy(a->value + row * a->value_row_stride + c0, vb, (size_t)n * sizeof(float));
    return sum;
}

/* Blocks [first, last) of rows_per_block rows: writes each block's sum into block_sums[block]. */
FOCAL_EXPORT int focal_blocks(const focal_args *a, int64_t first, int64_t last, double *block_sums) {
    for (int64_t b = first; b < last; b++) {
        int64_t r0 = b * a->rows_per_block;
        int64_t r1 = r0 + a->rows_per_block < a->rows ? r0 + a->rows_per_block : a->rows;
        double sum = 0.0;
        for (int64_t row = r0; row < r1; row++) {
            double row_sum = 0.0;
            for (int64_t c0 = 0; c0 < a->cols; c0 += TILE) {
                int64_t n = a->cols - c0 < TILE ? a->cols - c0 : TILE;
                row_sum += tile(a, row, c0, n);
            }
            sum += row_sum;
        }
        block_sums[b] = sum;
    }
    return 0;
}

/* The size of focal_args, checked by the loader against its ctypes mirror. */
FOCAL_EXPORT int64_t focal_args_size(void) { return (int64_t)sizeof(focal_args); }

/*
 * The best prebuilt variant of this kernel that the CPU runs, and the operating system with it
 * (it must save the wider registers across context switches: XCR0):
 *   0  baseline (any x86-64; on ARM always 0: NEON is part of armv8-a)
 *   1  x86-64-v3, the "avx2" variant: AVX, AVX2, FMA, F16C, BMI1, BMI2, LZCNT, MOVBE
 *   2  x86-64-v4, the "avx512" variant: the above and AVX-512 F, CD, BW, DQ, VL
 * The loader calls it in the baseline build only, so no wider instruction runs before the test.
 */
#if defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64)
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static void focal_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    int v[4];
    __cpuidex(v, (int)leaf, (int)sub);
    for (int i = 0; i < 4; i++) r[i] = (uint32_t)v[i];
}
static uint64_t focal_xcr0(void) { return (uint64_t)_xgetbv(0); }
#else
#include <cpuid.h>
static void focal_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static uint64_t focal_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif
#define FOCAL_BIT(word, bit) (((word) >> (bit)) & 1u)

FOCAL_EXPORT int32_t focal_cpu_level(void) {
    uint32_t r[4], max_leaf, ecx1, ebx7 = 0, ecx_ext = 0;
    focal_cpuid(0, 0, r);
    max_leaf = r[0];
    focal_cpuid(1, 0, r);
    ecx1 = r[2];
    if (max_leaf >= 7) {
        focal_cpuid(7, 0, r);
        ebx7 = r[1];
    }
    focal_cpuid(0x80000000u, 0, r);
    if (r[0] >= 0x80000001u) {
        focal_cpuid(0x80000001u, 0, r);
        ecx_ext = r[2];
    }
    /* OSXSAVE first: without it xgetbv is an illegal instruction. */
    if (!FOCAL_BIT(ecx1, 27)) return 0;
    const uint64_t xcr0 = focal_xcr0();
    const int ymm = (xcr0 & 0x6u) == 0x6u;    /* SSE and AVX state */
    const int zmm = (xcr0 & 0xe6u) == 0xe6u;  /* and opmask, ZMM0-15 upper halves, ZMM16-31 */
    const int v3 = ymm && FOCAL_BIT(ecx1, 12)    /* FMA */
                   && FOCAL_BIT(ecx1, 22)        /* MOVBE */
                   && FOCAL_BIT(ecx1, 28)        /* AVX */
                   && FOCAL_BIT(ecx1, 29)        /* F16C */
                   && FOCAL_BIT(ebx7, 3)         /* BMI1 */
                   && FOCAL_BIT(ebx7, 5)         /* AVX2 */
                   && FOCAL_BIT(ebx7, 8)         /* BMI2 */
                   && FOCAL_BIT(ecx_ext, 5);     /* LZCNT (ABM) */
    if (!v3) return 0;
    const int v4 = zmm && FOCAL_BIT(ebx7, 16)    /* AVX-512 F */
                   && FOCAL_BIT(ebx7, 17)        /* DQ */
                   && FOCAL_BIT(ebx7, 28)        /* CD */
                   && FOCAL_BIT(ebx7, 30)        /* BW */
                   && FOCAL_BIT(ebx7, 31);       /* VL */
    return v4 ? 2 : 1;
}
#else
FOCAL_EXPORT int32_t focal_cpu_level(void) { return 0; }
#endif
