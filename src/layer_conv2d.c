/*
 * conv2d: a 2-D convolution (cross-correlation, as the report computes it) over a channels-last
 * input. Weights are (filters, kernel, kernel, in_channels), so the report's single-channel
 * filters (8, 3, 3) are the same numbers in the same order. Optional bias per filter.
 *
 *   out[oy][ox][f] = bias[f] + sum_{ky,kx,c} in[oy*s - p + ky][ox*s - p + kx][c] * w[f][ky][kx][c]
 *
 * Backward: dw[f][ky][kx][c] += sum_{oy,ox} dout[oy][ox][f] * in[...][...][c];
 *           din[iy][ix][c] = sum over the (oy, ox, f, ky, kx) that read it of dout * w.
 *
 * The fast path is im2col + the blocked GEMM of gemm.c, or for a single input channel direct loops
 * vectorised over the filters; plain loops are kept beside them as the reference the tests
 * compare against.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "ompcnn/layer.h"
#include "gemm.h"
#include "parallel.h"
#include "json.h"
#include "kernels.h"

typedef struct conv2d_settings {
    int filters, kernel, stride, padding, in_channels, bias;
} conv2d_settings;

static const char *const conv2d_keys[] = {"filters", "kernel",      "stride", "padding",
                                          "in_channels", "bias", NULL};

/* "padding": a number, or "same" for (kernel - 1) / 2 (an odd kernel: the output keeps the
 * input's size at stride 1, ceil(size / stride) otherwise). */
static int conv2d_padding(const cJSON *obj, const char *path, conv2d_settings *s, errbuf *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, "padding");
    if (!cJSON_IsString(item)) return json_get_int(obj, "padding", 0, 0, 1024, path, &s->padding, err);
    if (strcmp(item->valuestring, "same") != 0)
        return errorf(err, "%s.padding: expected a non-negative integer or \"same\", got \"%.40s\"",
                      path, item->valuestring);
    if (s->kernel % 2 == 0)
        return errorf(err, "%s.padding: \"same\" needs an odd kernel, got %d", path, s->kernel);
    s->padding = (s->kernel - 1) / 2;
    return 0;
}

static int conv2d_parse(void *settings, const cJSON *obj, const char *path, errbuf *err) {
    conv2d_settings *s = settings;
    if (json_get_int(obj, "filters", INT_MIN, 1, 65536, path, &s->filters, err) ||
        json_get_int(obj, "kernel", INT_MIN, 1, 1024, path, &s->kernel, err) ||
        json_get_int(obj, "stride", 1, 1, 1024, path, &s->stride, err) ||
        conv2d_padding(obj, path, s, err) ||
        json_get_int(obj, "in_channels", 0, 1, 65536, path, &s->in_channels, err) ||
        json_get_bool(obj, "bias", 1, path, &s->bias, err))
        return -1;
    return 0;
}

static int conv2d_shape(const void *settings, shape3 in, shape3 *out, const char *path,
                        errbuf *err) {
    const conv2d_settings *s = settings;
    if (s->in_channels && s->in_channels != in.c)
        return errorf(err, "%s.in_channels: the input has %d channels, not %d", path, in.c,
                    s->in_channels);
    long span_h = (long)in.h + 2L * s->padding, span_w = (long)in.w + 2L * s->padding;
    if (s->kernel > span_h || s->kernel > span_w)
        return errorf(err, "%s.kernel: %d is larger than the %dx%d input with padding %d", path,
                    s->kernel, in.h, in.w, s->padding);
    if (s->padding >= s->kernel)
        return errorf(err, "%s.padding: %d must be smaller than the kernel (%d)", path, s->padding,
                    s->kernel);
    out->h = (int)((span_h - s->kernel) / s->stride + 1);
    out->w = (int)((span_w - s->kernel) / s->stride + 1);
    out->c = s->filters;
    if ((double)out->h * out->w * out->c > (double)(INT_MAX / 4))
        return errorf(err, "%s: the output %dx%dx%d is too large", path, out->h, out->w, out->c);
    return 0;
}

static int conv2d_params(const void *settings, shape3 in, shape3 out, tensor_desc desc[2]) {
    const conv2d_settings *s = settings;
    (void)out;
    desc[0] = (tensor_desc){"weight", 4, {s->filters, s->kernel, s->kernel, in.c}, 0};
    desc[0].size = (size_t)s->filters * s->kernel * s->kernel * in.c;
    if (!s->bias) return 1;
    desc[1] = (tensor_desc){"bias", 1, {s->filters}, (size_t)s->filters};
    return 2;
}

static void conv2d_init(const layer *l, float *params, init_kind kind, mt19937 *rng) {
    const conv2d_settings *s = l->settings;
    int fan_in = s->kernel * s->kernel * l->in.c, fan_out = s->kernel * s->kernel * s->filters;
    init_weights(params, l->tensors[0].size, fan_in, fan_out, kind, rng);
    /* The bias, if any, starts at zero (the arena is zero-filled). */
}

/* ---- plain reference kernels: direct loops, one output element at a time ---- */

void conv2d_forward_ref(float *out, const float *in, const float *weight, const float *bias, int n,
                        const conv_geom *g) {
    const int K = g->kernel, C = g->in_c, F = g->n_filters;
    for (int s = 0; s < n; s++) {
        const float *x = in + (size_t)s * g->in_h * g->in_w * C;
        float *y = out + (size_t)s * g->out_h * g->out_w * F;
        for (int oy = 0; oy < g->out_h; oy++)
            for (int ox = 0; ox < g->out_w; ox++)
                for (int f = 0; f < F; f++) {
                    float acc = 0.0f;
                    for (int ky = 0; ky < K; ky++) {
                        int iy = oy * g->stride - g->padding + ky;
                        if (iy < 0 || iy >= g->in_h) continue;
                        for (int kx = 0; kx < K; kx++) {
                            int ix = ox * g->stride - g->padding + kx;
                            if (ix < 0 || ix >= g->in_w) continue;
                            for (int c = 0; c < C; c++)
                                acc += x[((size_t)iy * g->in_w + ix) * C + c] *
                                       weight[(((size_t)f * K + ky) * K + kx) * C + c];
                        }
                    }
                    y[((size_t)oy * g->out_w + ox) * F + f] = bias ? acc + bias[f] : acc;
                }
    }
}

void conv2d_backward_ref(float *din, float *dweight, float *dbias, const float *dout,
                         const float *in, const float *weight, int n, const conv_geom *g) {
    const int K = g->kernel, C = g->in_c, F = g->n_filters;
    for (int s = 0; s < n; s++) {
        const float *x = in + (size_t)s * g->in_h * g->in_w * C;
        const float *dy = dout + (size_t)s * g->out_h * g->out_w * F;
        float *dx = din ? din + (size_t)s * g->in_h * g->in_w * C : NULL;
        if (dx) memset(dx, 0, (size_t)g->in_h * g->in_w * C * sizeof *dx);
        for (int oy = 0; oy < g->out_h; oy++)
            for (int ox = 0; ox < g->out_w; ox++)
                for (int f = 0; f < F; f++) {
                    float grad = dy[((size_t)oy * g->out_w + ox) * F + f];
                    if (dbias) dbias[f] += grad;
                    for (int ky = 0; ky < K; ky++) {
                        int iy = oy * g->stride - g->padding + ky;
                        if (iy < 0 || iy >= g->in_h) continue;
                        for (int kx = 0; kx < K; kx++) {
                            int ix = ox * g->stride - g->padding + kx;
                            if (ix < 0 || ix >= g->in_w) continue;
                            for (int c = 0; c < C; c++) {
                                size_t wi = (((size_t)f * K + ky) * K + kx) * C + c;
                                size_t xi = ((size_t)iy * g->in_w + ix) * C + c;
                                dweight[wi] += grad * x[xi];
                                if (dx) dx[xi] += grad * weight[wi];
                            }
                        }
                    }
                }
    }
}

/* ---- fast kernels: im2col and the blocked GEMM ----
 * A sample's output is out (P x F) = col (P x Kc) . W^T, with P = out_h*out_w output positions,
 * Kc = kernel*kernel*in_c, and col's row p the input patch that position p reads, in the
 * weight's (ky, kx, c) order. The gradients follow: dW (F x Kc) += dout^T . col, and
 * dcol = dout . W, scattered back onto the input (col2im). */

static int is_pointwise(const conv_geom *g) {
    return g->kernel == 1 && g->stride == 1 && g->padding == 0;
}

/* Copies n floats: blocks of 16, then a constant-size copy per case, which the compiler turns
 * into a few moves, instead of a loop or a library call for every kernel row of every patch. */
static inline void copy_row(float *dst, const float *src, int n) {
    for (; n > 16; n -= 16, dst += 16, src += 16) memcpy(dst, src, 16 * sizeof *dst);
    switch (n) {
#define COPY_CASE(k)                                                                              \
    case k: memcpy(dst, src, k * sizeof *dst); return;
        COPY_CASE(1) COPY_CASE(2) COPY_CASE(3) COPY_CASE(4) COPY_CASE(5) COPY_CASE(6)
        COPY_CASE(7) COPY_CASE(8) COPY_CASE(9) COPY_CASE(10) COPY_CASE(11) COPY_CASE(12)
        COPY_CASE(13) COPY_CASE(14) COPY_CASE(15) COPY_CASE(16)
#undef COPY_CASE
    default: break; /* n == 0 */
    }
}

/* The floats of the padded input row im2col copies patches from on the stack (wider rows take
 * the window-by-window path). */
#define IM2COL_ROW_FLOATS 4096

/* Patch row p holds, for each kernel row ky, the K*C values x[iy][ix0 .. ix0+K-1][0 .. C-1],
 * which lie side by side in HWC memory: one contiguous copy per (p, ky), with zeros where the
 * window hangs over the padding. */
static void im2col(float *col, const float *x, const conv_geom *g) {
    const int K = g->kernel, C = g->in_c, span = K * C;
    float *dst = col;
    if (g->padding == 0) {
        /* No window leaves the input: straight copies. */
        const size_t in_row = (size_t)g->in_w * C;
        for (int oy = 0; oy < g->out_h; oy++)
            for (int ox = 0; ox < g->out_w; ox++) {
                const float *src = x + (size_t)oy * g->stride * in_row + (size_t)ox * g->stride * C;
                for (int ky = 0; ky < K; ky++, dst += span) copy_row(dst, src + ky * in_row, span);
            }
        return;
    }
    const int padded_w = g->in_w + 2 * g->padding;
    if ((size_t)padded_w * C <= IM2COL_ROW_FLOATS) {
        /* Each input row once, with its padding, into a row buffer: then every patch row is one
         * copy of K*C floats from it, without a window's bounds to check. */
        float row[IM2COL_ROW_FLOATS];
        const size_t Kc = (size_t)K * span, pad = (size_t)g->padding * C;
        for (int i = 0; i < (int)pad; i++) row[i] = row[pad + (size_t)g->in_w * C + i] = 0.0f;
        for (int oy = 0; oy < g->out_h; oy++)
            for (int ky = 0; ky < K; ky++) {
                const int iy = oy * g->stride - g->padding + ky;
                float *out = col + (size_t)oy * g->out_w * Kc + (size_t)ky * span;
                if (iy < 0 || iy >= g->in_h) {
                    for (int ox = 0; ox < g->out_w; ox++, out += Kc)
                        for (int i = 0; i < span; i++) out[i] = 0.0f;
                    continue;
                }
                memcpy(row + pad, x + (size_t)iy * g->in_w * C, (size_t)g->in_w * C * sizeof *row);
                for (int ox = 0; ox < g->out_w; ox++, out += Kc)
                    copy_row(out, row + (size_t)ox * g->stride * C, span);
            }
        return;
    }
    for (int oy = 0; oy < g->out_h; oy++)
        for (int ox = 0; ox < g->out_w; ox++) {
            const int ix0 = ox * g->stride - g->padding;
            const int lo = ix0 < 0 ? -ix0 : 0;                             /* first kx inside */
            const int hi = ix0 + K > g->in_w ? g->in_w - ix0 : K;          /* one past the last */
            for (int ky = 0; ky < K; ky++, dst += span) {
                const int iy = oy * g->stride - g->padding + ky;
                if (iy < 0 || iy >= g->in_h || hi <= lo) {
                    for (int i = 0; i < span; i++) dst[i] = 0.0f;
                    continue;
                }
                const float *src = x + ((size_t)iy * g->in_w + ix0) * C;
                if (lo == 0 && hi == K) {
                    copy_row(dst, src, span);
                    continue;
                }
                for (int i = 0; i < lo * C; i++) dst[i] = 0.0f;
                for (int i = lo * C; i < hi * C; i++) dst[i] = src[i];
                for (int i = hi * C; i < span; i++) dst[i] = 0.0f;
            }
        }
}

/* d[i] += s[i] for i < n: with AVX-512 a vector at a time and the rest under a mask (GCC's
 * vectorised loop leaves up to 15 floats to scalar code, and a kernel row of 5 x 6 channels is
 * 30 floats). */
static inline void add_floats(float *restrict d, const float *restrict s, int n) {
#ifdef __AVX512F__
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(d + i, _mm512_add_ps(_mm512_loadu_ps(d + i), _mm512_loadu_ps(s + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(d + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, d + i),
                                                      _mm512_maskz_loadu_ps(m, s + i)));
    }
#else
    for (int i = 0; i < n; i++) d[i] += s[i];
#endif
}

/* Adds patch row `row` (position p = oy * out_w + ox) back onto the input positions it was read
 * from, in (ky, kx) order: per ky, K*C floats onto contiguous input memory, as im2col read them. */
static inline void add_patch_row(float *dx, const float *row, int oy, int ox,
                                 const conv_geom *g) {
    const int K = g->kernel, C = g->in_c, span = K * C;
    const int ix0 = ox * g->stride - g->padding;
    const int lo = ix0 < 0 ? -ix0 : 0;                    /* first kx inside */
    const int hi = ix0 + K > g->in_w ? g->in_w - ix0 : K; /* one past the last */
    if (hi <= lo) return;
    for (int ky = 0; ky < K; ky++, row += span) {
        const int iy = oy * g->stride - g->padding + ky;
        if (iy < 0 || iy >= g->in_h) continue;
        add_floats(dx + ((size_t)iy * g->in_w + ix0 + lo) * C, row + lo * C, (hi - lo) * C);
    }
}

/* Adds each patch row of dcol back onto the input, in (p, ky, kx) order. */
static void col2im(float *dx, const float *dcol, const conv_geom *g) {
    const size_t Kc = (size_t)g->kernel * g->kernel * g->in_c;
    memset(dx, 0, (size_t)g->in_h * g->in_w * g->in_c * sizeof *dx);
    for (int oy = 0; oy < g->out_h; oy++)
        for (int ox = 0; ox < g->out_w; ox++, dcol += Kc) add_patch_row(dx, dcol, oy, ox, g);
}

/* ---- single-channel layers: direct loops, no patches ----
 * A first layer's patches are rows of kernel*kernel floats (one channel), on which the GEMM's
 * vector tiles run mostly empty and whose building costs more than the products. Such a layer
 * instead reads its input once laid out with its padding (a plane, on the stack) and runs
 * vectorised over blocks of DIRECT_F filters:
 *   forward: DIRECT_P output positions of a row at a time, each a sum over (ky, kx) in order
 *   (with AVX-512, at most 8 filters at stride 1: two positions to a vector, direct_pairs);
 *   weight gradient: per (ky, kx), the sum over the positions in order (with AVX-512, at most 8
 *   filters: two taps to a vector, direct_weight_grad_k's `two`); where the filters are not
 *   whole blocks of DIRECT_BITS_F = 16, in blocks of GEMM_KC positions added up as the GEMM adds
 *   its blocks of k, so that it gives the bits the gathered product gave these layers before.
 * Both orders are fixed by the geometry alone, so the threads never change a bit. Larger planes
 * or weights than the stack buffers hold take the im2col path. */
/* A block of filters is one vector register, VEC_FLOATS: 16 with AVX-512, 8 with AVX, 4 with
 * SSE2 (with blocks of 16, the AVX2 build's LeNet first layer took 72 us an image forward, with
 * blocks of 8 it takes 6.4). The weight gradient's blocks of positions follow from whole blocks
 * of DIRECT_BITS_F = 16 filters in every build, so all give the same bits. */
#define DIRECT_F VEC_FLOATS
#ifdef __AVX512F__
#define DIRECT_P 8
#else
#define DIRECT_P 4
#endif
#define DIRECT_BITS_F 16
#define DIRECT_PLANE_FLOATS 16384
/* Weights up to this many floats (128 KB) are transposed on the stack for forward's GEMM. */
#define CONV_WT_FLOATS 32768
#define DIRECT_W_FLOATS 4096

static int round_up(int n, int to) {
    return (n + to - 1) / to * to;
}

/* The plane's width: the padded input, and room for the last block of DIRECT_P positions. */
static int direct_plane_w(const conv_geom *g) {
    const int padded = g->in_w + 2 * g->padding;
    const int reach = (round_up(g->out_w, DIRECT_P) - 1) * g->stride + g->kernel;
    return padded > reach ? padded : reach;
}

static int is_direct(const conv_geom *g) {
    if (g->in_c != 1 || is_pointwise(g)) return 0;
    const size_t plane = (size_t)(g->in_h + 2 * g->padding) * direct_plane_w(g);
    const size_t w = ((size_t)g->kernel * g->kernel + 1) * round_up(g->n_filters, DIRECT_F);
    return plane <= DIRECT_PLANE_FLOATS && w <= DIRECT_W_FLOATS;
}

/* x (in_h x in_w, one channel) into the plane, zeros around it. */
static void direct_plane(float *plane, const float *x, const conv_geom *g) {
    const int pw = direct_plane_w(g), ph = g->in_h + 2 * g->padding;
    for (int i = 0; i < ph * pw; i++) plane[i] = 0.0f;
    for (int iy = 0; iy < g->in_h; iy++)
        memcpy(plane + (size_t)(iy + g->padding) * pw + g->padding, x + (size_t)iy * g->in_w,
               (size_t)g->in_w * sizeof *plane);
}

/* The weights as wt[ky*K + kx][f], then the bias (zeros without one) as row K*K, each row padded
 * with zeros to a whole number of blocks. */
static void direct_weights(float *wt, const float *weight, const float *bias, const conv_geom *g) {
    const int kk = g->kernel * g->kernel, fp = round_up(g->n_filters, DIRECT_F);
    for (int k = 0; k < kk; k++)
        for (int f = 0; f < fp; f++)
            wt[(size_t)k * fp + f] = f < g->n_filters ? weight[(size_t)f * kk + k] : 0.0f;
    for (int f = 0; f < fp; f++) wt[(size_t)kk * fp + f] = bias && f < g->n_filters ? bias[f] : 0.0f;
}

/* A block of DIRECT_F floats: one register. */
typedef float dvec __attribute__((vector_size(DIRECT_F * 4)));
typedef float dvec_u __attribute__((vector_size(DIRECT_F * 4), aligned(4)));

typedef float dvec8_u __attribute__((vector_size(32), aligned(4)));
typedef float dvec4_u __attribute__((vector_size(16), aligned(4)));

/* The first n (1..16) lanes of v to p: in pieces of 8, 4 and single floats (a loop here would
 * become a call to memcpy). */
static inline void dvec_store_part(float *p, dvec v, int n) {
    if (n == DIRECT_F) {
        *(dvec_u *)p = v;
        return;
    }
    float tmp[DIRECT_F];
    *(dvec_u *)tmp = v;
    int j = 0;
    if (n >= 8) *(dvec8_u *)p = *(const dvec8_u *)tmp, j = 8;
    if (n - j >= 4) *(dvec4_u *)(p + j) = *(const dvec4_u *)(tmp + j), j += 4;
    if (j < n) p[j] = tmp[j];
    if (j + 1 < n) p[j + 1] = tmp[j + 1];
    if (j + 2 < n) p[j + 2] = tmp[j + 2];
}

typedef double dvec_d __attribute__((vector_size(64)));

/* Position p's row of dy from filter f0 on: in place while DIRECT_F floats from it lie inside
 * dy, else from the copy in tail. */
static inline const float *direct_dy_at(const float *dy, const float *tail, int safe, int F, int f0,
                                        int p) {
    return p < safe ? dy + (size_t)p * F + f0 : tail + (size_t)(p - safe) * DIRECT_F;
}

/* The input values of two adjacent taps, (p[0], p[1]) in every pair of lanes, loaded as one
 * 64-bit value (only AVX-512 builds take the paths that call it). */
static inline dvec tap_pair(const float *p) {
#ifdef __AVX512F__
    double two;
    memcpy(&two, p, sizeof two);
    return (dvec)(dvec_d){two, two, two, two, two, two, two, two};
#else
    (void)p;
    return (dvec){0.0f};
#endif
}

#ifdef __AVX512F__
typedef int dvec_i __attribute__((vector_size(64)));
#define PAIRS_MAX 16 /* pairs of positions a forward block sums at once (registers) */

/* Lane i of the result: v's lane idx[i] (one vpermps; GCC and clang spell a shuffle with a
 * run-time mask differently, the intrinsic alike). */
static inline dvec permute16(dvec v, dvec_i idx) {
    return (dvec)_mm512_permutexvar_ps((__m512i)idx, (__m512)v);
}

/* Lanes 2f and 2f + 1 both v's lane f (f < 8): each filter twice, for the pairs below. */
static inline dvec each_twice(dvec v) {
    return permute16(v, (dvec_i){0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7});
}

/* Forward for at most 8 filters at stride 1, two positions to a vector, so that no lane is
 * empty: lanes 2f and 2f + 1 hold filter f at positions p and p + 1, the input pair
 * (x[p + kx], x[p + 1 + kx]) broadcast as one 64-bit value and the weights wd with each filter
 * twice. Each output is the same chain of fused multiply-adds over (ky, kx) as in
 * direct_forward. `pairs` pairs from position ox0 of row oy; n_pos positions of them exist. */
static inline __attribute__((always_inline)) void
direct_pairs(float *y, const float *plane, int pw, const dvec *wd, int bias, dvec_i to_out,
             const conv_geom *g, int oy, int ox0, int n_pos, const int pairs, const int kernel) {
    const int K = kernel ? kernel : g->kernel, F = g->n_filters;
    dvec acc[PAIRS_MAX];
    for (int i = 0; i < pairs; i++) acc[i] = (dvec){0.0f};
    for (int ky = 0; ky < K; ky++) {
        const float *row = plane + (size_t)(oy + ky) * pw + ox0;
        if (kernel) {
            /* Pair i's tap kx reads the pair at offset 2i + kx, which pair i + 1 reads at tap
             * kx - 2: each offset broadcast once for every (i, kx) that reads it (19 instead of
             * 40 for 8 pairs of a row of 5 taps; the broadcasts, not the multiply-adds, bounded
             * this loop). Each sum still takes its taps in ascending kx. */
            const dvec *w = wd + ky * K;
#pragma GCC unroll 40
            for (int o = 0; o < 2 * pairs + K - 2; o++) {
                const dvec b = tap_pair(row + o);
#pragma GCC unroll 8
                for (int kx = 0; kx < K; kx++)
                    if ((o - kx) % 2 == 0 && o >= kx && (o - kx) / 2 < pairs)
                        acc[(o - kx) / 2] += b * w[kx];
            }
            continue;
        }
        for (int kx = 0; kx < K; kx++) {
            const dvec w = wd[ky * K + kx];
            for (int i = 0; i < pairs; i++) acc[i] += tap_pair(row + 2 * i + kx) * w;
        }
    }
    for (int i = 0; i < pairs; i++) {
        /* Lanes 2f, 2f + 1 to f, F + f: the two positions' F outputs, one after the other. */
        const dvec v = permute16(bias ? acc[i] + wd[K * K] : acc[i], to_out);
        const int n = n_pos - 2 * i < 2 ? n_pos - 2 * i : 2;
        _mm512_mask_storeu_ps(y + ((size_t)oy * g->out_w + ox0 + 2 * i) * F,
                              (__mmask16)((1u << n * F) - 1), (__m512)v);
    }
}

/* direct_pairs for a block of n_pos positions, each count of pairs its own inlined copy (the
 * plane has room for whole blocks of DIRECT_P positions; a block of an odd count reads one
 * position past its last); `kernel` 3 or 5 known at compile time, or 0. */
static inline __attribute__((always_inline)) void
pairs_block(float *y, const float *plane, int pw, const dvec *wd, int bias, dvec_i to_out,
            const conv_geom *g, int oy, int ox0, int n_pos, const int kernel) {
    switch ((n_pos + 1) / 2) {
#define PAIRS_CASE(n)                                                                            \
    case n: direct_pairs(y, plane, pw, wd, bias, to_out, g, oy, ox0, n_pos, n, kernel); break;
        PAIRS_CASE(1) PAIRS_CASE(2) PAIRS_CASE(3) PAIRS_CASE(4) PAIRS_CASE(5) PAIRS_CASE(6)
        PAIRS_CASE(7) PAIRS_CASE(8) PAIRS_CASE(9) PAIRS_CASE(10) PAIRS_CASE(11) PAIRS_CASE(12)
        PAIRS_CASE(13) PAIRS_CASE(14) PAIRS_CASE(15) default:
        direct_pairs(y, plane, pw, wd, bias, to_out, g, oy, ox0, n_pos, PAIRS_MAX, kernel);
#undef PAIRS_CASE
    }
}

/* A row's positions in blocks of at most 2 PAIRS_MAX, as even as whole pairs make them (LeNet's
 * 28: one block of 14 pairs, 4 % faster than 7 and 7): each pair's sum is a chain of K * K
 * multiply-adds, 4 cycles apart, which a block of few pairs leaves the units waiting on. */
static void direct_forward_pairs(float *y, const float *plane, int pw, const float *wt, int bias,
                                 const conv_geom *g) {
    const int kk = g->kernel * g->kernel, F = g->n_filters;
    dvec wd[26];
    for (int k = 0; k <= kk; k++) wd[k] = each_twice(*(const dvec_u *)(wt + k * DIRECT_F));
    dvec_i to_out;
    for (int j = 0; j < 16; j++) to_out[j] = j < F ? 2 * j : j < 2 * F ? 2 * (j - F) + 1 : 0;
    const int pairs = (g->out_w + 1) / 2, blocks = (pairs + PAIRS_MAX - 1) / PAIRS_MAX;
    for (int oy = 0; oy < g->out_h; oy++)
        for (int b = 0; b < blocks; b++) {
            const int ox0 = 2 * (pairs * b / blocks), ox1 = 2 * (pairs * (b + 1) / blocks);
            const int n_pos = (ox1 < g->out_w ? ox1 : g->out_w) - ox0;
            if (g->kernel == 5)
                pairs_block(y, plane, pw, wd, bias, to_out, g, oy, ox0, n_pos, 5);
            else if (g->kernel == 3)
                pairs_block(y, plane, pw, wd, bias, to_out, g, oy, ox0, n_pos, 3);
            else
                pairs_block(y, plane, pw, wd, bias, to_out, g, oy, ox0, n_pos, 0);
        }
}
#endif

static void direct_forward(float *y, const float *x, const float *wt, int bias,
                           const conv_geom *g) {
    float plane[DIRECT_PLANE_FLOATS];
    direct_plane(plane, x, g);
    const int K = g->kernel, S = g->stride, F = g->n_filters, fp = round_up(F, DIRECT_F);
    const int pw = direct_plane_w(g);
#ifdef __AVX512F__
    if (S == 1 && F <= 8 && K <= 5) {
        direct_forward_pairs(y, plane, pw, wt, bias, g);
        return;
    }
#endif
    for (int oy = 0; oy < g->out_h; oy++)
        for (int ox0 = 0; ox0 < g->out_w; ox0 += DIRECT_P)
            for (int f0 = 0; f0 < F; f0 += DIRECT_F) {
                dvec acc[DIRECT_P];
                for (int i = 0; i < DIRECT_P; i++) acc[i] = (dvec){0.0f};
                for (int ky = 0; ky < K; ky++) {
                    const float *row = plane + (size_t)(oy * S + ky) * pw + (size_t)ox0 * S;
                    for (int kx = 0; kx < K; kx++) {
                        const dvec w = *(const dvec_u *)(wt + (size_t)(ky * K + kx) * fp + f0);
                        for (int i = 0; i < DIRECT_P; i++) acc[i] += row[i * S + kx] * w;
                    }
                }
                const int np = g->out_w - ox0 < DIRECT_P ? g->out_w - ox0 : DIRECT_P;
                const int nf = F - f0 < DIRECT_F ? F - f0 : DIRECT_F;
                const dvec b = *(const dvec_u *)(wt + (size_t)K * K * fp + f0);
                for (int i = 0; i < np; i++)
                    dvec_store_part(y + ((size_t)oy * g->out_w + ox0 + i) * F + f0,
                                    bias ? acc[i] + b : acc[i], nf);
            }
}

/* Positions whose 16 floats of dy from filter f0 on lie inside the sample's P x F gradient;
 * those of the positions after them come from a zero-padded copy (direct_dy_tail). */
static int direct_dy_safe(int P, int F, int f0) {
    const long last = ((long)P * F - f0 - DIRECT_F) / F; /* the last such position */
    return (long)P * F < f0 + DIRECT_F ? 0 : (int)(last + 1 < P ? last + 1 : P);
}

#define DIRECT_TAIL (DIRECT_F + 1)

/* The rows of the positions from `safe` on, 16 floats each from filter f0, zeros past the end. */
static void direct_dy_tail(float *tail, const float *dy, int P, int F, int f0, int safe) {
    const size_t end = (size_t)P * F;
    for (int p = safe; p < P; p++)
        for (int j = 0; j < DIRECT_F; j++) {
            const size_t at = (size_t)p * F + f0 + j;
            tail[(size_t)(p - safe) * DIRECT_F + j] = at < end ? dy[at] : 0.0f;
        }
}

/* One block of filters' weight gradient for a kernel of K = 3 or 5 known at compile time: every
 * (ky, kx) has its own vector of sums in a register, and the positions go by in order, each
 * adding its dy row times the K * K input values it read; in blocks of `block` positions, each
 * block's sums added to the total after it.
 * With `two` (AVX-512, at most 8 filters, f0 = 0), two horizontally adjacent taps share a vector
 * so that no lane is empty: lane 2f + h sums filter f's tap (ky, 2j + h), the input pair
 * broadcast as one 64-bit value and dy's row laid out with each filter twice. Every tap's sum
 * still runs over the positions in the same order and blocks, so the bits are the same. With K
 * odd, a row's last tap shares its vector with one past the window, which is never stored (the
 * plane has zeros after its rows for it). */
static inline __attribute__((always_inline)) void
direct_weight_grad_k(float *dw, const float *dy, const float *tail, int safe, int f0, int block,
                     const float *plane, int pw, const conv_geom *g, const int K, const int two) {
    const int S = g->stride, F = g->n_filters, P = g->out_h * g->out_w;
    const int nf = F - f0 < DIRECT_F ? F - f0 : DIRECT_F;
    const int TX = two ? (K + 1) / 2 : K; /* vectors for a row of taps */
    dvec acc[25], total[25];
    int oy = 0, ox = 0;
    for (int b0 = 0; b0 < P; b0 += block) {
        const int b1 = P - b0 < block ? P : b0 + block;
#pragma GCC unroll 25
        for (int k = 0; k < K * TX; k++) acc[k] = (dvec){0.0f};
        for (int p = b0; p < b1; p++) {
#ifdef __AVX512F__
            if (two && S == 1 && p + 4 <= b1 && ox + 4 <= g->out_w) {
                /* Four positions of a row at once: position q's pair j reads offset q + 2j of
                 * each kernel row, so the row's 2 TX + 2 offsets are broadcast once for all of
                 * them (8 instead of 12 for a kernel of 5). Each sum still takes the positions
                 * in order. */
                dvec d[4];
                for (int q = 0; q < 4; q++)
                    d[q] = each_twice(*(const dvec_u *)direct_dy_at(dy, tail, safe, F, f0, p + q));
                const float *in = plane + (size_t)oy * pw + ox;
#pragma GCC unroll 5
                for (int ky = 0; ky < K; ky++) {
                    dvec b[2 * 3 + 2];
#pragma GCC unroll 8
                    for (int o = 0; o < 2 * TX + 2; o++) b[o] = tap_pair(in + ky * pw + o);
#pragma GCC unroll 4
                    for (int q = 0; q < 4; q++)
#pragma GCC unroll 3
                        for (int j = 0; j < TX; j++) acc[ky * TX + j] += b[q + 2 * j] * d[q];
                }
                p += 3, ox += 4;
                if (ox == g->out_w) ox = 0, oy++;
                continue;
            }
#endif
            dvec d = *(const dvec_u *)direct_dy_at(dy, tail, safe, F, f0, p);
#ifdef __AVX512F__
            if (two) d = each_twice(d);
#endif
            const float *in = plane + (size_t)oy * S * pw + (size_t)ox * S;
#pragma GCC unroll 5
            for (int ky = 0; ky < K; ky++)
#pragma GCC unroll 5
                for (int j = 0; j < TX; j++)
                    acc[ky * TX + j] += two ? tap_pair(in + ky * pw + 2 * j) * d
                                            : in[ky * pw + j] * d;
            if (++ox == g->out_w) ox = 0, oy++;
        }
#pragma GCC unroll 25
        for (int k = 0; k < K * TX; k++) total[k] = b0 ? total[k] + acc[k] : acc[k];
    }
    for (int k = 0; k < K * K; k++) {
        const int ky = k / K, kx = k % K;
        float sum[DIRECT_F];
        *(dvec_u *)sum = total[two ? ky * TX + kx / 2 : k];
        for (int j = 0; j < nf; j++) dw[(size_t)(f0 + j) * K * K + k] = sum[two ? 2 * j + kx % 2 : j];
    }
}

/* dw[f][ky][kx] = the sum over positions of dy[p][f] * the input value position p reads, the
 * positions added in order: all in one chain with whole blocks of 16 filters, else in blocks of
 * GEMM_KC (direct_weight_grad_k). Kernels of 3 and 5 keep all their sums in registers; other
 * sizes take one (ky, kx) at a time. */
static void direct_weight_grad(float *dw, const float *dy, const float *x, const conv_geom *g) {
    float plane[DIRECT_PLANE_FLOATS + DIRECT_F];
    direct_plane(plane, x, g);
    const int K = g->kernel, S = g->stride, F = g->n_filters, pw = direct_plane_w(g);
    const int P = g->out_h * g->out_w, block = F % DIRECT_BITS_F ? GEMM_KC : P;
    for (int f0 = 0; f0 < F; f0 += DIRECT_F) {
        const int safe = direct_dy_safe(P, F, f0), nf = F - f0 < DIRECT_F ? F - f0 : DIRECT_F;
        float tail[DIRECT_TAIL * DIRECT_F];
        direct_dy_tail(tail, dy, P, F, f0, safe);
#ifdef __AVX512F__
        if (F <= 8 && (K == 3 || K == 5)) {
            /* The tap past the window of the last row's last position reads after the rows. */
            memset(plane + (size_t)(g->in_h + 2 * g->padding) * pw, 0, DIRECT_F * sizeof *plane);
            if (K == 3)
                direct_weight_grad_k(dw, dy, tail, safe, 0, block, plane, pw, g, 3, 1);
            else
                direct_weight_grad_k(dw, dy, tail, safe, 0, block, plane, pw, g, 5, 1);
            continue;
        }
#endif
        if (K == 3) {
            direct_weight_grad_k(dw, dy, tail, safe, f0, block, plane, pw, g, 3, 0);
            continue;
        }
        if (K == 5) {
            direct_weight_grad_k(dw, dy, tail, safe, f0, block, plane, pw, g, 5, 0);
            continue;
        }
        for (int ky = 0; ky < K; ky++)
            for (int kx = 0; kx < K; kx++) {
                dvec total = (dvec){0.0f};
                for (int b0 = 0; b0 < P; b0 += block) {
                    const int b1 = P - b0 < block ? P : b0 + block;
                    dvec acc = (dvec){0.0f};
                    for (int p = b0; p < b1; p++) {
                        const int oy = p / g->out_w, ox = p % g->out_w;
                        const float *dp = p < safe ? dy + (size_t)p * F + f0
                                                   : tail + (size_t)(p - safe) * DIRECT_F;
                        acc += plane[(size_t)(oy * S + ky) * pw + (size_t)ox * S + kx] *
                               *(const dvec_u *)dp;
                    }
                    total = b0 ? total + acc : acc;
                }
                float sum[DIRECT_F];
                *(dvec_u *)sum = total;
                for (int j = 0; j < nf; j++) dw[(size_t)(f0 + j) * K * K + ky * K + kx] = sum[j];
            }
    }
}

/* ---- the input gradient without dcol ----
 * gemm() followed by col2im writes the P x Kc patch gradient out (LeNet's second layer: 60 KB,
 * config/mnist.json's: 300 KB, past the first-level cache) only to read it back. Instead each
 * patch row is summed in registers, IG_NP positions at a time, over chunks of at most IG_NB
 * vectors of the row, and added onto the input at once (docs/performance.md). Each element is
 * summed as the GEMM's tile sums it (from zero, over the filters in ascending order, one fused
 * multiply-add each:
 * this path is taken only for the shapes on which gemm() runs its tiles, 2 <= F <= GEMM_KC and
 * P >= 2), and the rows are added in col2im's order, so the input gradient is the same bits.
 * The weights are read from a copy whose rows are padded with zeros to whole vectors. */
#define IG_W VEC_FLOATS
#if defined(__AVX512F__)
#define IG_NB 6
#else
#define IG_NB 2
#endif
#define IG_NP 4 /* positions at a time */
#define IG_ROW_FLOATS 2048
typedef float igvec __attribute__((vector_size(IG_W * 4)));

/* Columns [j0, j0 + nb * IG_W) of the patch rows of np positions, dy's rows F apart, into rows
 * ldw apart: np * nb sums in registers, each weight vector read once for all np positions. */
static inline __attribute__((always_inline)) void
igrad_chunk(float *rows, const float *dy, const float *w, int ldw, int F, int j0, const int nb,
            const int np) {
    igvec acc[IG_NP][IG_NB];
    for (int q = 0; q < np; q++)
        for (int j = 0; j < nb; j++) acc[q][j] = (igvec){0};
    for (int f = 0; f < F; f++) {
        const igvec *wf = (const igvec *)(w + (size_t)f * ldw + j0);
        float s[IG_NP];
        for (int q = 0; q < np; q++) s[q] = dy[(size_t)q * F + f];
        /* Each weight vector loaded once into a register for the np positions (as memory
         * operands of every multiply-add they were loaded np times, and loads bounded it). */
        for (int j = 0; j < nb; j++) {
            igvec wj = wf[j];
#if defined(__x86_64__) || defined(__i386__)
            __asm__("" : "+x"(wj)); /* in a register, not a memory operand of each */
#endif
            for (int q = 0; q < np; q++) acc[q][j] += s[q] * wj;
        }
    }
    for (int q = 0; q < np; q++)
        for (int j = 0; j < nb; j++) *(igvec *)(rows + (size_t)q * ldw + j0 + j * IG_W) = acc[q][j];
}

/* The whole patch rows of np (IG_NP or 1) positions, in chunks of at most IG_NB vectors. */
static inline __attribute__((always_inline)) void
igrad_rows(float *rows, const float *dy, const float *w, int ldw, int F, const int np) {
    const int nv = ldw / IG_W, chunks = (nv + IG_NB - 1) / IG_NB;
    for (int c = 0, j = 0; c < chunks; c++) {
        const int nb = (nv - j) / (chunks - c); /* near-equal chunks: 9 as 4, 5 */
        switch (nb) {
#define IG_CASE(n)                                                                                 \
    case n: igrad_chunk(rows, dy, w, ldw, F, j * IG_W, n, np); break;
            IG_CASE(1) IG_CASE(2)
#if IG_NB > 2
            IG_CASE(3) IG_CASE(4) IG_CASE(5) IG_CASE(6)
#endif
#undef IG_CASE
        }
        j += nb;
    }
}

/* The padded weights' row: a patch row's Kc floats rounded up to whole vectors. */
static int igrad_ldw(const conv_geom *g) {
    return round_up(g->kernel * g->kernel * g->in_c, IG_W);
}

/* Whether the input gradient takes this path: the shapes on which gemm() runs its tiles, rows
 * short enough for the stack and padded weights that fit wpad. */
static int igrad_direct(const conv_geom *g) {
    const int F = g->n_filters, P = g->out_h * g->out_w, ldw = igrad_ldw(g);
    return !is_pointwise(g) && F >= 2 && F <= GEMM_KC && P >= 2 && ldw <= IG_ROW_FLOATS &&
           (size_t)F * ldw <= CONV_WT_FLOATS;
}

/* The weights with each row padded with zeros to ldw floats. */
static void igrad_weights(float *wpad, const float *weight, const conv_geom *g) {
    const int F = g->n_filters, Kc = g->kernel * g->kernel * g->in_c, ldw = igrad_ldw(g);
    for (int f = 0; f < F; f++) {
        memcpy(wpad + (size_t)f * ldw, weight + (size_t)f * Kc, (size_t)Kc * sizeof *wpad);
        memset(wpad + (size_t)f * ldw + Kc, 0, (size_t)(ldw - Kc) * sizeof *wpad);
    }
}

/* dx = the input gradient of one sample from its output gradient dy (P x F), IG_NP positions at a
 * time, each one's patch row added onto the input in turn. */
static void igrad_sample(float *dx, const float *dy, const float *wpad, const conv_geom *g) {
    const int F = g->n_filters, P = g->out_h * g->out_w, ldw = igrad_ldw(g);
    igvec rowv[IG_NP][IG_ROW_FLOATS / IG_W]; /* vectors, for their alignment */
    float *rows = (float *)rowv;
    memset(dx, 0, (size_t)g->in_h * g->in_w * g->in_c * sizeof *dx);
    for (int p = 0; p < P;) {
        const int np = P - p >= IG_NP ? IG_NP : 1;
        if (np == IG_NP) igrad_rows(rows, dy + (size_t)p * F, wpad, ldw, F, IG_NP);
        else igrad_rows(rows, dy + (size_t)p * F, wpad, ldw, F, 1);
        for (int q = 0; q < np; q++, p++)
            add_patch_row(dx, rows + (size_t)q * ldw, p / g->out_w, p % g->out_w, g);
    }
}

/* What the per-sample loops of forward and backward share. */
typedef struct conv_args {
    const conv_geom *g;
    const float *in, *weight, *bias, *dout;
    const float *cols; /* the kept patches, or NULL: rebuild them in col */
    const float *wt;   /* a direct layer's weights, filters innermost (direct_weights) */
    const float *wt_gemm; /* or the weights transposed (Kc x F) for the GEMM, or NULL */
    const float *wpad;    /* backward: the weights for igrad_sample, or NULL */
    float *out, *keep; /* forward: output, and where to keep the patches (or NULL) */
    float *col, *dcol, *partial, *din;
    int nt; /* threads for each sample's products (1 when the samples are shared out) */
    int relu; /* forward: apply relu to each sample's output (run_ctx.relu) */
    const int *row_at, *col_at; /* forward without patches: gemm_gather's tables */
    int one_slot; /* backward: every sample's gradient into partial's first slot */
    int relu_din; /* backward: the input gradient through the relu before (run_ctx.relu_din) */
} conv_args;

static size_t patch_floats(const conv_geom *g) {
    return (size_t)g->out_h * g->out_w * g->kernel * g->kernel * g->in_c;
}

/* ---- forward without patches ----
 * A forward pass that keeps no patches (they are large, or this is evaluation) lets the GEMM read
 * each patch value where it lies in the input, laid out once with its padding: patch row p,
 * column k = (ky, kx, c) is padded[row_at[p] + col_at[k]]. The GEMM sums every element as it sums
 * the patches' (gemm_gather), so the bits are those of im2col and gemm(). */
#define GATHER_TABLE 8192

static int padded_w(const conv_geom *g) {
    return g->in_w + 2 * g->padding;
}

static size_t padded_floats(const conv_geom *g) {
    return (size_t)(g->in_h + 2 * g->padding) * padded_w(g) * g->in_c;
}

/* Whether a pass gathers (may: no patches are to be kept), laying a padded input out in `col`.
 * Thin products, which gemm() runs with loops of their own, keep the patches, as do tables too
 * long for the stack, and padded inputs without a `col` or larger than its slots. */
static int gathers(const conv_geom *g, int may, const float *col) {
    const int P = g->out_h * g->out_w, Kc = g->kernel * g->kernel * g->in_c;
    return may && !is_pointwise(g) && P > 1 && g->n_filters > 1 && Kc > 1 && P <= GATHER_TABLE &&
           Kc <= GATHER_TABLE &&
           (g->padding == 0 || (col != NULL && padded_floats(g) <= patch_floats(g)));
}

static void gather_tables(int *row_at, int *col_at, const conv_geom *g) {
    const int C = g->in_c, K = g->kernel, S = g->stride, pw = padded_w(g);
    for (int oy = 0; oy < g->out_h; oy++)
        for (int ox = 0; ox < g->out_w; ox++)
            row_at[oy * g->out_w + ox] = (oy * S * pw + ox * S) * C;
    for (int ky = 0; ky < K; ky++)
        for (int kx = 0; kx < K; kx++)
            for (int c = 0; c < C; c++) col_at[(ky * K + kx) * C + c] = (ky * pw + kx) * C + c;
}

/* x (in_h x in_w x in_c) into pad, zeros around it. */
static void pad_input(float *pad, const float *x, const conv_geom *g) {
    const size_t row = (size_t)g->in_w * g->in_c, edge = (size_t)g->padding * g->in_c;
    const size_t prow = (size_t)padded_w(g) * g->in_c;
    memset(pad, 0, (size_t)g->padding * prow * sizeof *pad);
    for (int iy = 0; iy < g->in_h; iy++) {
        float *d = pad + (size_t)(iy + g->padding) * prow;
        memset(d, 0, edge * sizeof *d);
        memcpy(d + edge, x + (size_t)iy * row, row * sizeof *d);
        memset(d + edge + row, 0, edge * sizeof *d);
    }
    memset(pad + (size_t)(g->in_h + g->padding) * prow, 0, (size_t)g->padding * prow * sizeof *pad);
}

/* 8 floats, and lane shuffles of two of them in GCC's and clang's spellings. */
typedef float tvec __attribute__((vector_size(32)));
typedef float tvec_u __attribute__((vector_size(32), aligned(4)));
#ifdef __clang__
#define TSHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int tmask __attribute__((vector_size(32)));
#define TSHUFFLE(a, b, ...) __builtin_shuffle(a, b, (tmask){__VA_ARGS__})
#endif

/* dst[j * ld_dst + i] = src[i * ld_src + j] for i, j < 8: pairs of rows interleaved, then pairs
 * of pairs, then the halves swapped. */
static inline void transpose8(float *dst, size_t ld_dst, const float *src, size_t ld_src) {
    tvec r[8], t[8], u[8];
    for (int i = 0; i < 8; i++) r[i] = *(const tvec_u *)(src + i * ld_src);
    for (int i = 0; i < 8; i += 2) {
        t[i] = TSHUFFLE(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = TSHUFFLE(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4)
        for (int h = 0; h < 2; h++) {
            u[i + 2 * h] = TSHUFFLE(t[i + h], t[i + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[i + 2 * h + 1] = TSHUFFLE(t[i + h], t[i + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int i = 0; i < 4; i++) {
        *(tvec_u *)(dst + i * ld_dst) = TSHUFFLE(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        *(tvec_u *)(dst + (i + 4) * ld_dst) = TSHUFFLE(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

/* dst (cols x rows) = the transpose of src (rows x cols): 8 x 8 blocks, then the edges. */
static void transpose(float *dst, const float *src, int rows, int cols) {
    const int r8 = rows / 8 * 8, c8 = cols / 8 * 8;
    for (int i = 0; i < r8; i += 8)
        for (int j = 0; j < c8; j += 8)
            transpose8(dst + (size_t)j * rows + i, (size_t)rows, src + (size_t)i * cols + j,
                       (size_t)cols);
    for (int i = 0; i < rows; i++)
        for (int j = i < r8 ? c8 : 0; j < cols; j++)
            dst[(size_t)j * rows + i] = src[(size_t)i * cols + j];
}

/* What a sample's gathers read: its input, or with padding the input laid out with it in this
 * worker's slot of col. */
static const float *gather_source(const conv_args *a, const float *x, int worker) {
    if (!a->g->padding) return x;
    float *pad = a->col + (size_t)worker * patch_floats(a->g);
    pad_input(pad, x, a->g);
    return pad;
}

/* Sample s's patches: kept, or built now into this worker's slot of col. */
static const float *patches_of(const conv_args *a, const float *x, int s, int worker) {
    const conv_geom *g = a->g;
    if (is_pointwise(g)) return x;
    if (a->cols) return a->cols + (size_t)s * patch_floats(g);
    float *dst = a->keep ? a->keep + (size_t)s * patch_floats(g)
                         : a->col + (size_t)worker * patch_floats(g);
    im2col(dst, x, g);
    return dst;
}

static int forward_samples(void *ctx, long begin, long end, int worker) {
    const conv_args *a = ctx;
    const conv_geom *g = a->g;
    const int F = g->n_filters, Kc = g->kernel * g->kernel * g->in_c, P = g->out_h * g->out_w;
    for (long s = begin; s < end; s++) {
        const float *x = a->in + (size_t)s * g->in_h * g->in_w * g->in_c;
        float *y = a->out + (size_t)s * P * F;
        if (a->wt) {
            direct_forward(y, x, a->wt, a->bias != NULL, g);
            if (a->relu) relu_in_place(y, (size_t)P * F);
            continue;
        }
        if (a->row_at) {
            /* No patches: the GEMM gathers them from the padded input. */
            gemm_gather(P, F, Kc, gather_source(a, x, worker), a->row_at, a->col_at,
                        a->wt_gemm == NULL,
                        a->wt_gemm ? a->wt_gemm : a->weight, a->wt_gemm ? F : Kc, 0, y, F, a->nt);
        } else if (a->wt_gemm)
            gemm(0, 0, P, F, Kc, patches_of(a, x, (int)s, worker), Kc, a->wt_gemm, F, 0, y, F,
                 a->nt);
        else
            gemm(0, 1, P, F, Kc, patches_of(a, x, (int)s, worker), Kc, a->weight, Kc, 0, y, F,
                 a->nt);
        /* The bias and the relu in one pass over the output (the same operations). */
        const float *restrict bias = a->bias;
        if (bias && a->relu)
            for (int p = 0; p < P; p++) {
                float *restrict row = y + (size_t)p * F;
                for (int f = 0; f < F; f++) row[f] = relu_of(row[f] + bias[f]);
            }
        else if (bias)
            for (int p = 0; p < P; p++) {
                float *restrict row = y + (size_t)p * F;
                for (int f = 0; f < F; f++) row[f] += bias[f];
            }
        else if (a->relu)
            relu_in_place(y, (size_t)P * F);
    }
    return 0;
}

/* Runs body over the n samples: shared out over nt threads when there are enough of them, else
 * one after another with each sample's products split over the threads. */
#define over_samples(a, n, work, body, nt) over_samples_at(a, n, work, body, nt, #body)
static void over_samples_at(conv_args *a, int n, size_t work, par_body body, int nt,
                            const char *site) {
    if (n >= nt) {
        a->nt = 1;
        par_items_at(nt, work, n, body, a, site);
    } else {
        a->nt = nt;
        body(a, 0, n, 0);
    }
}

/* conv2d_forward, and with relu also the relu of each sample's output while it is in cache. */
static void forward_relu(float *out, const float *in, const float *weight, const float *bias,
                         int n, const conv_geom *g, float *cols, float *col, int nt, int relu) {
    const size_t macs = (size_t)g->out_h * g->out_w * g->n_filters * g->kernel * g->kernel * g->in_c;
    conv_args a = {.g = g, .in = in, .weight = weight, .bias = bias, .out = out, .keep = cols,
                   .col = col, .relu = relu};
    float wt[DIRECT_W_FLOATS];
    if (is_direct(g)) {
        direct_weights(wt, weight, bias, g);
        a.wt = wt;
        a.keep = NULL;
        over_samples(&a, n, macs * (size_t)n, forward_samples, nt);
        return;
    }
    /* The GEMM reads B in place when it is not transposed: the weights transposed once per call
     * here, instead of packed again for every sample (the same products, the same bits). */
    const int F = g->n_filters, Kc = g->kernel * g->kernel * g->in_c;
    float wt_gemm[CONV_WT_FLOATS];
    if ((size_t)F * Kc <= CONV_WT_FLOATS) {
        transpose(wt_gemm, weight, F, Kc);
        a.wt_gemm = wt_gemm;
    }
    int row_at[GATHER_TABLE], col_at[GATHER_TABLE];
    if (gathers(g, !a.keep, col)) {
        gather_tables(row_at, col_at, g);
        a.row_at = row_at, a.col_at = col_at;
    }
    over_samples(&a, n, macs * (size_t)n, forward_samples, nt);
}

void conv2d_forward(float *out, const float *in, const float *weight, const float *bias, int n,
                    const conv_geom *g, float *cols, float *col, int nt) {
    forward_relu(out, in, weight, bias, n, g, cols, col, nt, 0);
}

/* Floats of one sample's slot of `partial`: its weight gradient, then its bias gradient. */
static size_t partial_floats(const conv_geom *g) {
    return (size_t)g->n_filters * (g->kernel * g->kernel * g->in_c + 1);
}

/* db[f] = the sum of dy[p][f] over positions p, added in ascending p from 0. Up to 16 filters
 * keep their sums in the lanes of one vector (each lane adds its filter's values in the same
 * order, so the bits are the same), whole vectors read while they lie inside dy. */
static void bias_grad(float *db, const float *dy, int P, int F) {
    if (F <= 16) {
        /* 16 lanes as 16 / DIRECT_F registers (see DIRECT_F). */
        dvec acc[16 / DIRECT_F] = {{0}};
        const size_t end = (size_t)P * F;
        int p = 0;
        for (; (size_t)p * F + 16 <= end; p++)
            for (int h = 0; h < 16 / DIRECT_F; h++)
                acc[h] += *(const dvec_u *)(dy + (size_t)p * F + h * DIRECT_F);
        float sums[16];
        for (int h = 0; h < 16 / DIRECT_F; h++) *(dvec_u *)(sums + h * DIRECT_F) = acc[h];
        for (; p < P; p++)
            for (int f = 0; f < F; f++) sums[f] += dy[(size_t)p * F + f];
        for (int f = 0; f < F; f++) db[f] = sums[f];
        return;
    }
    for (int f = 0; f < F; f++) db[f] = 0.0f;
    for (int p = 0; p < P; p++)
        for (int f = 0; f < F; f++) db[f] += dy[(size_t)p * F + f];
}

/* Sample s's weight and bias gradient into its own slot of partial, and its input gradient. */
static int backward_samples(void *ctx, long begin, long end, int worker) {
    const conv_args *a = ctx;
    const conv_geom *g = a->g;
    const int F = g->n_filters, Kc = g->kernel * g->kernel * g->in_c, P = g->out_h * g->out_w;
    for (long s = begin; s < end; s++) {
        const float *x = a->in + (size_t)s * g->in_h * g->in_w * g->in_c;
        const float *dy = a->dout + (size_t)s * P * F;
        float *dw = a->partial + (a->one_slot ? 0 : (size_t)s * partial_floats(g));
        float *db = dw + (size_t)F * Kc;
        if (is_direct(g)) {
            direct_weight_grad(dw, dy, x, g);
        } else if (a->row_at) {
            /* dW^T (Kc x F) = patches^T . dy, the patches gathered from the padded input (rows
             * and columns of the tables swapped), into the worker's slot of dcol, then turned:
             * each element summed over the positions as gemm() sums dy^T . patches. */
            float *dwt = a->dcol + (size_t)worker * patch_floats(g);
            gemm_gather(Kc, F, P, gather_source(a, x, worker), a->col_at, a->row_at, 0, dy, F, 0,
                        dwt, F, a->nt);
            transpose(dw, dwt, Kc, F);
        } else {
            const float *patches = patches_of(a, x, (int)s, worker);
            gemm(1, 0, F, Kc, P, dy, F, patches, Kc, 0, dw, Kc, a->nt);
        }
        bias_grad(db, dy, P, F);
        if (!a->din) continue;
        const double start = profile_on ? omp_get_wtime() : 0.0;
        float *dx = a->din + (size_t)s * g->in_h * g->in_w * g->in_c;
        if (is_pointwise(g)) {
            gemm(0, 0, P, Kc, F, dy, F, a->weight, Kc, 0, dx, Kc, a->nt);
        } else if (a->wpad && a->nt == 1) {
            igrad_sample(dx, dy, a->wpad, g);
        } else {
            float *dcol = a->dcol + (size_t)worker * patch_floats(g);
            gemm(0, 0, P, Kc, F, dy, F, a->weight, Kc, 0, dcol, Kc, a->nt);
            col2im(dx, dcol, g);
        }
        /* Through the relu before, while the sample's gradient is in cache. */
        if (a->relu_din) relu_grad_in_place(dx, x, (size_t)g->in_h * g->in_w * g->in_c);
        if (profile_on) profile_input_grad(omp_get_wtime() - start);
    }
    return 0;
}

/* The lane sums, in blocks of 64 of the [weight | bias] gradient of every lane, each block the
 * lane's samples added in order. */
typedef struct lane_sum_args {
    const lane_cut *cut;
    int n;
    size_t weights, len; /* len = weights + filters */
    long blocks;         /* per lane */
    const float *partial;
    float *dweight, *dbias;
} lane_sum_args;

static int lane_sums(void *ctx, long begin, long end, int worker) {
    const lane_sum_args *a = ctx;
    (void)worker;
    for (long item = begin; item < end; item++) {
        const int l = (int)(item / a->blocks);
        const size_t i0 = (size_t)(item % a->blocks) * 64;
        const size_t i1 = i0 + 64 < a->len ? i0 + 64 : a->len;
        const int s0 = cut_start(a->cut, l, a->n), s1 = cut_start(a->cut, l + 1, a->n);
        const size_t off = (size_t)l * a->cut->grad_stride;
        /* The block's 64 sums side by side, a sample at a time (vectorised, and along memory),
         * each still its lane's samples added in order. */
        float sum[64];
        const int w = (int)(i1 - i0);
        memcpy(sum, a->partial + (size_t)s0 * a->len + i0, (size_t)w * sizeof *sum);
        for (int s = s0 + 1; s < s1; s++) {
            const float *restrict p = a->partial + (size_t)s * a->len + i0;
            for (int j = 0; j < w; j++) sum[j] += p[j];
        }
        for (int j = 0; j < w; j++) {
            const size_t i = i0 + (size_t)j;
            if (i < a->weights) a->dweight[off + i] = sum[j];
            else if (a->dbias) a->dbias[off + i - a->weights] = sum[j];
        }
    }
    return 0;
}

/* conv2d_backward, and with relu_din the input gradient also through the relu before, a sample
 * at a time while it is in cache. */
static void backward_relu(float *din, float *dweight, float *dbias, const float *dout,
                          const float *in, const float *weight, int n, const conv_geom *g,
                          const float *cols, float *col, float *dcol, float *partial,
                          const lane_cut *cut, int nt, int relu_din) {
    const size_t F = (size_t)g->n_filters, W = F * g->kernel * g->kernel * g->in_c;
    const size_t P = (size_t)g->out_h * g->out_w;
    /* A direct layer's forward keeps no patches: they are built here when needed. */
    conv_args a = {.g = g, .in = in, .weight = weight, .dout = dout,
                   .cols = is_direct(g) ? NULL : cols, .col = col, .dcol = dcol,
                   .partial = partial, .din = din, .relu_din = relu_din};
    /* Without kept patches, the weight gradient gathers them too, when its transpose fits the
     * slot of dcol (F <= P). */
    int row_at[GATHER_TABLE], col_at[GATHER_TABLE];
    if (gathers(g, !is_direct(g) && !a.cols && dcol && g->n_filters <= (int)P, col)) {
        gather_tables(row_at, col_at, g);
        a.row_at = row_at, a.col_at = col_at;
    }
    float wpad[CONV_WT_FLOATS] __attribute__((aligned(64))); /* igrad_chunk reads whole vectors */
    if (din && igrad_direct(g)) {
        igrad_weights(wpad, weight, g);
        a.wpad = wpad;
    }
    const lane_cut one = {0, NULL, 0};
    const size_t len = partial_floats(g);
    lane_sum_args s = {cut ? cut : &one, n, W, len, (long)((len + 63) / 64), partial, dweight,
                       dbias};
    if (n < nt || nt == 1) {
        /* One sample after another, each one's products split over the threads: its gradient
         * goes through one slot that stays in cache and is added to its lane's straight away,
         * in the same order as the lane sums below. */
        a.nt = nt;
        a.one_slot = 1;
        for (int l = 0; l < cut_lanes(s.cut); l++) {
            const int s0 = cut_start(s.cut, l, n), s1 = cut_start(s.cut, l + 1, n);
            float *dw = dweight + (size_t)l * s.cut->grad_stride;
            float *db = dbias ? dbias + (size_t)l * s.cut->grad_stride : NULL;
            for (int k = s0; k < s1; k++) {
                backward_samples(&a, k, k + 1, 0);
                if (k == s0) {
                    memcpy(dw, partial, W * sizeof *dw);
                    if (db) memcpy(db, partial + W, F * sizeof *db);
                    continue;
                }
                for (size_t i = 0; i < W; i++) dw[i] += partial[i];
                for (size_t f = 0; db && f < F; f++) db[f] += partial[W + f];
            }
        }
        return;
    }
    over_samples(&a, n, P * W * (size_t)n * (din ? 2 : 1), backward_samples, nt);
    par_blocks(nt, (size_t)n * len * PAR_ELEMENT_COST, (long)cut_lanes(s.cut) * s.blocks,
               lane_sums, &s);
}

void conv2d_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                     const float *weight, int n, const conv_geom *g, const float *cols,
                     float *col, float *dcol, float *partial, const lane_cut *cut, int nt) {
    backward_relu(din, dweight, dbias, dout, in, weight, n, g, cols, col, dcol, partial, cut, nt,
                  0);
}

static conv_geom geometry(const layer *l) {
    const conv2d_settings *s = l->settings;
    return (conv_geom){l->in.h,      l->in.w,   l->in.c,   l->out.h,  l->out.w,
                       s->filters,   s->kernel, s->stride, s->padding};
}

/* Whether the batch's patches are kept from forward for the weight gradient, or rebuilt from
 * the input in backward (gathered where they lie, mostly: gathers()). Not keeping them pays where
 * the rows are at least a 64-byte cache line and a sample's patches are larger than the
 * first-level cache (32 KB or more): forward then writes nothing, and backward's gathers, which
 * stay in cache, cost less than reading the kept patches of a whole chunk back from memory, and
 * their memory is saved (20 MB of config/mnist.json's 64-image batch). Narrow rows copy slowly
 * and small patches stay in cache, so those are kept (measured on the benchmark networks:
 * docs/performance.md; LeNet's second layer, 60 KB a sample, was kept below 128 KB until its
 * forward measured 6.4 us an image kept and 5.3 gathered). Single-channel layers that the direct
 * loops take build no patches at all. */
static int keeps_patches(const conv_geom *g) {
    if (is_pointwise(g) || is_direct(g)) return 0;
    size_t row = (size_t)g->kernel * g->in_c;
    return row < 16 || patch_floats(g) < 8192;
}

/* The scratch of a call with up to nt threads: per thread one sample's patches (when they are
 * built on the fly: always in evaluation, which keeps none) and their gradient, then, for a
 * backward pass over up to max_n samples, each sample's weight and bias gradient. */
typedef struct conv_scratch {
    float *partial, *col, *dcol;
} conv_scratch;

static size_t conv2d_scratch_layout(const layer *l, int max_n, int nt, float *base,
                                    conv_scratch *out) {
    conv_geom g = geometry(l);
    size_t col = is_pointwise(&g) ? 0 : (size_t)nt * patch_floats(&g);
    size_t dcol = col;
    size_t partial = (size_t)max_n * partial_floats(&g);
    if (out) *out = (conv_scratch){base + col + dcol, base, base + col};
    return col + dcol + partial;
}

static size_t conv2d_scratch_size(const layer *l, int max_n, int max_threads) {
    return conv2d_scratch_layout(l, max_n, max_threads, NULL, NULL);
}

/* Each sample's patches, when they are kept from forward. */
static size_t conv2d_saved_size(const layer *l) {
    conv_geom g = geometry(l);
    return keeps_patches(&g) ? patch_floats(&g) : 0;
}

static void conv2d_layer_forward(const layer *l, const float *params, const float *in, float *out,
                                 const run_ctx *run) {
    const conv2d_settings *s = l->settings;
    conv_geom g = geometry(l);
    conv_scratch sc;
    conv2d_scratch_layout(l, run->n, run->nt, run->scratch, &sc);
    forward_relu(out, in, params, s->bias ? params + l->tensors[0].size : NULL, run->n, &g,
                 keeps_patches(&g) && run->training ? run->saved : NULL, sc.col, run->nt,
                 run->relu);
}

static void conv2d_layer_backward(const layer *l, const float *params, const float *in,
                                  const float *out, const float *dout, float *din, float *dparams,
                                  const run_ctx *run) {
    const conv2d_settings *s = l->settings;
    conv_geom g = geometry(l);
    (void)out;
    conv_scratch sc;
    conv2d_scratch_layout(l, run->n, run->nt, run->scratch, &sc);
    backward_relu(din, dparams, s->bias ? dparams + l->tensors[0].size : NULL, dout, in, params,
                  run->n, &g, keeps_patches(&g) && run->training ? run->saved : NULL, sc.col,
                  sc.dcol, sc.partial, &run->cut, run->nt, run->relu_din);
}

static void conv2d_describe(const void *settings, char *buf, size_t size) {
    const conv2d_settings *s = settings;
    int n = snprintf(buf, size, "conv2d %dx%dx%d", s->filters, s->kernel, s->kernel);
    if (s->stride != 1 && n > 0 && (size_t)n < size)
        n += snprintf(buf + n, size - n, " stride %d", s->stride);
    if (s->padding && n > 0 && (size_t)n < size)
        n += snprintf(buf + n, size - n, " pad %d", s->padding);
    if (!s->bias && n > 0 && (size_t)n < size) snprintf(buf + n, size - n, " no-bias");
}

static void conv2d_geometry(const void *settings, layer_geometry *g) {
    const conv2d_settings *s = settings;
    *g = (layer_geometry){
        .kernel = s->kernel, .stride = s->stride, .padding = s->padding, .bias = s->bias};
}

const layer_ops conv2d_ops = {
    .type = "conv2d",
    .settings_size = sizeof(conv2d_settings),
    .keys = conv2d_keys,
    .parse = conv2d_parse,
    .shape = conv2d_shape,
    .params = conv2d_params,
    .scratch_size = conv2d_scratch_size,
    .saved_size = conv2d_saved_size,
    .init = conv2d_init,
    .forward = conv2d_layer_forward,
    .backward = conv2d_layer_backward,
    .describe = conv2d_describe,
    .geometry = conv2d_geometry,
    .relu_epilogue = 1,
    .relu_din = 1,
};
