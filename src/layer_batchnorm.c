/*
 * batchnorm: per channel (after conv2d) or per unit (after dense, whose output is 1 x 1 x units),
 * as PyTorch's BatchNorm2d and BatchNorm1d:
 *   training:   y = weight * (x - mean) / sqrt(var + eps) + bias, with the mean and the biased
 *               variance of the channel over the whole batch (every sample and position);
 *               running_mean and running_var (the unbiased variance) move towards them by
 *               `momentum`: r = (1 - momentum) r + momentum * stat;
 *   evaluation: the same with running_mean and running_var.
 * weight starts at 1, bias at 0, running_mean at 0, running_var at 1.
 *
 * Backward, with xhat = (x - mean) / sqrt(var + eps) and M the batch's elements per channel:
 *   dbias = sum dy;  dweight = sum dy * xhat;
 *   dx = weight / sqrt(var + eps) * (dy - sum(dy) / M - xhat * sum(dy * xhat) / M),
 * where the sums run over the whole batch.
 *
 * The whole batch, whatever the lanes: each sample's sums over its positions, then each lane's
 * over its samples in order, then the lanes' in lane order (batch_sum_lanes, which under MPI takes
 * in the other processes' lanes), all in double. So the statistics depend on the batch and its
 * lanes only, never on the threads or processes; and a lane's dweight and dbias are its own
 * samples' sums, as every layer's lane gradient is.
 */
#include <math.h>
#include <stdio.h>

#include "json.h"
#include "kernels.h"
#include "ompcnn/layer.h"
#include "parallel.h"

typedef struct batchnorm_settings {
    double momentum, eps;
} batchnorm_settings;

static const char *const batchnorm_keys[] = {"momentum", "eps", NULL};

static int batchnorm_parse(void *settings, const cJSON *obj, const char *path, errbuf *err) {
    batchnorm_settings *s = settings;
    if (json_get_double(obj, "momentum", 0.1, 0.0, 1.0, 0, path, &s->momentum, err) ||
        json_get_double(obj, "eps", 1e-5, 0.0, 1.0, 1, path, &s->eps, err))
        return -1;
    return 0;
}

static int batchnorm_params(const void *settings, shape3 in, shape3 out, tensor_desc desc[2]) {
    (void)settings, (void)out;
    desc[0] = (tensor_desc){"weight", 1, {in.c}, (size_t)in.c};
    desc[1] = (tensor_desc){"bias", 1, {in.c}, (size_t)in.c};
    return 2;
}

static int batchnorm_buffers(const void *settings, shape3 in, shape3 out, tensor_desc desc[2]) {
    (void)settings, (void)out;
    desc[0] = (tensor_desc){"running_mean", 1, {in.c}, (size_t)in.c};
    desc[1] = (tensor_desc){"running_var", 1, {in.c}, (size_t)in.c};
    return 2;
}

static void batchnorm_init(const layer *l, float *params, init_kind kind, mt19937 *rng) {
    (void)kind, (void)rng; /* draws nothing: the other layers' draws stay as they were */
    for (int c = 0; c < l->in.c; c++) params[c] = 1.0f, params[l->in.c + c] = 0.0f;
}

static void batchnorm_init_buffers(const layer *l, float *buffers) {
    for (int c = 0; c < l->in.c; c++) buffers[c] = 0.0f, buffers[l->in.c + c] = 1.0f;
}

/* Per pass: 1 / sqrt(var + eps) of each channel and the batch's elements per channel, as
 * doubles; then the mean and 1 / sqrt(var + eps) as the floats that normalised the input, from
 * which backward computes xhat again, bit for bit, instead of forward keeping it (a sample's worth
 * of memory written and read back per sample). */
static size_t batchnorm_pass_saved_size(const layer *l) {
    return 2 * ((size_t)l->in.c + 1) + 2 * (size_t)l->in.c;
}

static float *pass_floats(const layer *l, float *pass_saved) {
    return pass_saved + 2 * ((size_t)l->in.c + 1);
}

/* The widest sums a sample or lane carries: a double for each channel twice, and the count. */
static size_t sums_width(const layer *l) {
    return 2 * (size_t)l->in.c + 1;
}

/* The scratch of a training pass of n samples: each sample's sums, each lane's (at most one lane
 * a sample), the batch's total and mean (doubles), then three floats per channel for the final
 * pass. Evaluation uses the first two floats per channel (a scale and a shift). */
typedef struct bn_scratch {
    double *sums, *lanes, *total, *mean;
    float *f0, *f1, *f2;
} bn_scratch;

static size_t scratch_doubles(const layer *l, int n) {
    return (2 * (size_t)n + 1) * sums_width(l) + (size_t)l->in.c;
}

static bn_scratch scratch_of(const layer *l, float *scratch, int n) {
    const size_t width = sums_width(l), n_ch = (size_t)l->in.c;
    bn_scratch b;
    b.sums = (double *)scratch;
    b.lanes = b.sums + (size_t)n * width;
    b.total = b.lanes + (size_t)n * width;
    b.mean = b.total + width;
    b.f0 = scratch + 2 * scratch_doubles(l, n);
    b.f1 = b.f0 + n_ch;
    b.f2 = b.f1 + n_ch;
    return b;
}

static size_t batchnorm_scratch_size(const layer *l, int max_n, int max_threads) {
    (void)max_threads;
    return 2 * scratch_doubles(l, max_n) + 3 * (size_t)l->in.c;
}

typedef struct bn_args {
    const layer *l;
    const float *x;     /* forward: the input; backward: the output gradient */
    const float *in;    /* backward: the input, normalised again with mean and inv */
    const float *mean, *inv; /* backward: the floats forward normalised with */
    float *y;           /* forward: the output; backward: the input gradient */
    const double *dmean; /* forward's second pass: the batch mean */
    double *sums;       /* width doubles per sample */
    size_t width;
    const float *a, *b, *d; /* per channel: the final pass's coefficients */
    int relu;               /* forward: relu on the output too (run_ctx.relu) */
    const float *mask;      /* backward, with a fused relu: its output; dy counts where > 0 */
} bn_args;

/* Each sample's per-channel sums run over its positions in order, in double. The channels go
 * through in blocks of BN_BLOCK held in registers (the values of a position are contiguous), which
 * keeps each channel's order of additions and so its bits. */
enum { BN_BLOCK = 16 };

/* One block of w channels (x and m start at its first): acc[j] = the sum over positions of x[p][j]
 * (m NULL) or of (x[p][j] - m[j])^2. Inlined, so that a caller's w == BN_BLOCK is a constant. */
static inline __attribute__((always_inline)) void bn_block_sums(const float *x, int plane, int n_ch,
                                                                const double *m, int w,
                                                                double *acc) {
    for (int p = 0; p < plane; p++)
        for (int j = 0; j < w; j++) {
            const double v = x[(size_t)p * n_ch + j];
            if (m) {
                const double dev = v - m[j];
                acc[j] += dev * dev;
            } else {
                acc[j] += v;
            }
        }
}

/* s[c] = the sum over positions of x[p][c] (first pass), or of (x[p][c] - mean[c])^2 (second). */
static void bn_channel_sums(const float *x, int plane, int n_ch, const double *mean, double *s) {
    for (int c0 = 0; c0 < n_ch; c0 += BN_BLOCK) {
        const int w = n_ch - c0 < BN_BLOCK ? n_ch - c0 : BN_BLOCK;
        const double *m = mean ? mean + c0 : NULL;
        double acc[BN_BLOCK] = {0.0};
        if (w == BN_BLOCK)
            bn_block_sums(x + c0, plane, n_ch, m, BN_BLOCK, acc);
        else
            bn_block_sums(x + c0, plane, n_ch, m, w, acc);
        for (int j = 0; j < w; j++) s[c0 + j] = acc[j];
    }
}

/* Forward, first pass: each sample's sum per channel over its positions, and its count. */
static int bn_sums_samples(void *ctx, long begin, long end, int worker) {
    const bn_args *a = ctx;
    const int n_ch = a->l->in.c, plane = a->l->in.h * a->l->in.w;
    (void)worker;
    for (long k = begin; k < end; k++) {
        double *s = a->sums + (size_t)k * a->width;
        bn_channel_sums(a->x + (size_t)k * plane * n_ch, plane, n_ch, NULL, s);
        s[n_ch] = plane;
    }
    return 0;
}

/* Forward, second pass: each sample's sum of squared deviations from the batch mean. */
static int bn_squares_samples(void *ctx, long begin, long end, int worker) {
    const bn_args *a = ctx;
    const int n_ch = a->l->in.c, plane = a->l->in.h * a->l->in.w;
    (void)worker;
    for (long k = begin; k < end; k++)
        bn_channel_sums(a->x + (size_t)k * plane * n_ch, plane, n_ch, a->dmean,
                        a->sums + (size_t)k * a->width);
    return 0;
}

/* Forward, training: xhat = (x - mean) * b, y = weight * xhat + bias (a: the mean, b: the
 * inverse deviation, d: [weight, bias]); backward computes xhat again the same way. Through the
 * relu after it when `relu` (a constant in each caller, so that both loops vectorise), applied
 * to each value as it is made rather than in a second pass over samples no longer in L1. */
static inline __attribute__((always_inline)) void
bn_normalise(const bn_args *a, long begin, long end, const int relu) {
    const int n_ch = a->l->in.c;
    const size_t size = shape_size(a->l->in);
    const float *restrict x = a->x, *restrict mean = a->a, *restrict inv = a->b;
    const float *restrict weight = a->d, *restrict bias = a->d + n_ch;
    float *restrict y = a->y;
    for (size_t i = (size_t)begin * size; i < (size_t)end * size; i += (size_t)n_ch)
        for (int c = 0; c < n_ch; c++) {
            const float xhat = (x[i + c] - mean[c]) * inv[c];
            const float v = weight[c] * xhat + bias[c];
            y[i + c] = relu ? relu_of(v) : v;
        }
}

/* Evaluation: y = x * scale + shift (a: scale, b: shift), through the relu after it likewise. */
static inline __attribute__((always_inline)) void bn_affine(const bn_args *a, long begin,
                                                            long end, const int relu) {
    const int n_ch = a->l->in.c;
    const size_t size = shape_size(a->l->in);
    const float *restrict x = a->x, *restrict scale = a->a, *restrict shift = a->b;
    float *restrict y = a->y;
    for (size_t i = (size_t)begin * size; i < (size_t)end * size; i += (size_t)n_ch)
        for (int c = 0; c < n_ch; c++) {
            const float z = x[i + c] * scale[c] + shift[c];
            y[i + c] = relu ? relu_of(z) : z;
        }
}

/* The sample loops over [begin, end) of the two above, each with the relu known at compile time. */
#define WITH_RELU_OR_NOT(name, impl)                                                               \
    static int name(void *ctx, long begin, long end, int worker) {                                 \
        const bn_args *a = ctx;                                                                    \
        (void)worker;                                                                              \
        if (a->relu)                                                                               \
            impl(a, begin, end, 1);                                                                \
        else                                                                                       \
            impl(a, begin, end, 0);                                                                \
        return 0;                                                                                  \
    }
WITH_RELU_OR_NOT(bn_normalise_samples, bn_normalise)
WITH_RELU_OR_NOT(bn_affine_samples, bn_affine)
#undef WITH_RELU_OR_NOT

/* One block of w channels (every pointer at its first): the sums over positions of dy and of
 * dy * xhat, xhat computed again as forward computed it. Inlined like bn_block_sums. */
static inline __attribute__((always_inline)) void
bn_block_grad_sums(const float *dy, const float *mask, const float *x, const float *mean,
                   const float *inv, int plane, int n_ch, int w, double *sum_dy, double *sum_dyx) {
    for (int p = 0; p < plane; p++)
        for (int j = 0; j < w; j++) {
            const size_t i = (size_t)p * n_ch + j;
            const float xhat = (x[i] - mean[j]) * inv[j];
            const float d = relu_grad(dy, mask, i);
            sum_dy[j] += d;
            sum_dyx[j] += (double)d * xhat;
        }
}

/* Backward, first pass: each sample's sum of dy and of dy * xhat per channel, in blocks of
 * channels as the forward sums. */
static int bn_grad_sums_samples(void *ctx, long begin, long end, int worker) {
    const bn_args *a = ctx;
    const int n_ch = a->l->in.c, plane = a->l->in.h * a->l->in.w;
    (void)worker;
    for (long k = begin; k < end; k++) {
        const size_t base = (size_t)k * plane * n_ch;
        double *s = a->sums + (size_t)k * a->width;
        for (int c0 = 0; c0 < n_ch; c0 += BN_BLOCK) {
            const int w = n_ch - c0 < BN_BLOCK ? n_ch - c0 : BN_BLOCK;
            const float *dy = a->x + base + c0, *x = a->in + base + c0;
            const float *mask = a->mask ? a->mask + base + c0 : NULL;
            const float *mean = a->mean + c0, *inv = a->inv + c0;
            double sum_dy[BN_BLOCK] = {0.0}, sum_dyx[BN_BLOCK] = {0.0};
            if (w == BN_BLOCK && mask)
                bn_block_grad_sums(dy, mask, x, mean, inv, plane, n_ch, BN_BLOCK, sum_dy, sum_dyx);
            else if (w == BN_BLOCK)
                bn_block_grad_sums(dy, NULL, x, mean, inv, plane, n_ch, BN_BLOCK, sum_dy, sum_dyx);
            else
                bn_block_grad_sums(dy, mask, x, mean, inv, plane, n_ch, w, sum_dy, sum_dyx);
            for (int j = 0; j < w; j++) s[c0 + j] = sum_dy[j], s[n_ch + c0 + j] = sum_dyx[j];
        }
    }
    return 0;
}

/* Backward: dx = a * (dy - b - xhat * d), dy through the fused relu when there is a mask (a
 * constant where inlined below). */
static inline __attribute__((always_inline)) void
bn_input_grad(const bn_args *a, long begin, long end, const float *restrict mask) {
    const int n_ch = a->l->in.c;
    const size_t size = shape_size(a->l->in);
    const float *restrict dy = a->x, *restrict x = a->in;
    const float *restrict mean = a->mean, *restrict inv = a->inv;
    const float *restrict ka = a->a, *restrict kb = a->b, *restrict kd = a->d;
    float *restrict dx = a->y;
    for (size_t i = (size_t)begin * size; i < (size_t)end * size; i += (size_t)n_ch)
        for (int c = 0; c < n_ch; c++) {
            const float xhat = (x[i + c] - mean[c]) * inv[c];
            dx[i + c] = ka[c] * (relu_grad(dy, mask, i + c) - kb[c] - xhat * kd[c]);
        }
}

static int bn_input_grad_samples(void *ctx, long begin, long end, int worker) {
    const bn_args *a = ctx;
    (void)worker;
    if (a->mask)
        bn_input_grad(a, begin, end, a->mask);
    else
        bn_input_grad(a, begin, end, NULL);
    return 0;
}

/* The sums of the samples (width doubles each, the first `used` of them filled) added lane by
 * lane in sample order into lanes[], then over the whole batch into total[]. */
static void sum_batch(const run_ctx *run, const double *sums, size_t width, size_t used,
                      double *lanes, double *total) {
    const int n_lanes = cut_lanes(&run->cut);
    for (int l = 0; l < n_lanes; l++) {
        const int s0 = cut_start(&run->cut, l, run->n), s1 = cut_start(&run->cut, l + 1, run->n);
        double *lane = lanes + (size_t)l * used;
        for (size_t i = 0; i < used; i++) lane[i] = 0.0;
        for (int k = s0; k < s1; k++)
            for (size_t i = 0; i < used; i++) lane[i] += sums[(size_t)k * width + i];
    }
    batch_sum_lanes(run, lanes, used, total);
}

void batchnorm_fold(const layer *l, const float *params, const float *buffers, float *scale,
                    float *shift) {
    const batchnorm_settings *s = l->settings;
    const int n_ch = l->in.c;
    const float *mean = buffers, *var = buffers + n_ch;
    for (int c = 0; c < n_ch; c++) {
        const double k = params[c] / sqrt((double)var[c] + s->eps);
        scale[c] = (float)k;
        shift[c] = (float)(params[n_ch + c] - mean[c] * k);
    }
}

static void batchnorm_layer_forward(const layer *l, const float *params, const float *in, float *out,
                              const run_ctx *run) {
    const batchnorm_settings *s = l->settings;
    const int n_ch = l->in.c;
    const size_t width = sums_width(l), work = (size_t)run->n * shape_size(l->in) * PAR_ELEMENT_COST;
    if (!run->training) {
        /* Evaluation passes may hold more samples than training's scratch is sized for: two
         * floats per channel at its start. */
        float *scale = run->scratch, *shift = run->scratch + n_ch;
        batchnorm_fold(l, params, run->buffers, scale, shift);
        bn_args a = {.l = l, .x = in, .y = out, .a = scale, .b = shift, .relu = run->relu};
        par_items(run->nt, work, run->n, bn_affine_samples, &a);
        return;
    }
    const bn_scratch b = scratch_of(l, run->scratch, run->n);
    double *invstd = (double *)run->pass_saved, *count = invstd + n_ch;
    float *kept = pass_floats(l, run->pass_saved);
    bn_args a = {.l = l, .x = in, .y = out, .sums = b.sums, .width = width, .relu = run->relu};
    par_items(run->nt, work, run->n, bn_sums_samples, &a);
    sum_batch(run, b.sums, width, (size_t)n_ch + 1, b.lanes, b.total);
    const double m = b.total[n_ch];
    *count = m;
    for (int c = 0; c < n_ch; c++) b.mean[c] = b.total[c] / m;
    a.dmean = b.mean;
    par_items(run->nt, work, run->n, bn_squares_samples, &a);
    sum_batch(run, b.sums, width, (size_t)n_ch, b.lanes, b.total);
    for (int c = 0; c < n_ch; c++) {
        const double var = b.total[c] / m;
        invstd[c] = 1.0 / sqrt(var + s->eps);
        kept[c] = (float)b.mean[c];
        kept[n_ch + c] = (float)invstd[c];
        if (run->buffers) {
            float *r_mean = run->buffers + c, *r_var = run->buffers + n_ch + c;
            const double unbiased = m > 1 ? var * m / (m - 1) : var;
            *r_mean = (float)((1.0 - s->momentum) * *r_mean + s->momentum * b.mean[c]);
            *r_var = (float)((1.0 - s->momentum) * *r_var + s->momentum * unbiased);
        }
    }
    a.a = kept, a.b = kept + n_ch, a.d = params;
    par_items(run->nt, work, run->n, bn_normalise_samples, &a);
}

static void batchnorm_layer_backward(const layer *l, const float *params, const float *in,
                               const float *out, const float *dout, float *din, float *dparams,
                               const run_ctx *run) {
    const int n_ch = l->in.c;
    const size_t width = sums_width(l), work = (size_t)run->n * shape_size(l->in) * PAR_ELEMENT_COST;
    const bn_scratch b = scratch_of(l, run->scratch, run->n);
    const double *invstd = (const double *)run->pass_saved, m = invstd[n_ch];
    const float *kept = pass_floats(l, run->pass_saved);
    /* With a fused relu, out is the relu's output and dout the gradient of it. */
    bn_args a = {.l = l, .x = dout, .in = in, .mean = kept, .inv = kept + n_ch, .sums = b.sums,
                 .width = width, .mask = run->relu ? out : NULL};
    par_items(run->nt, work, run->n, bn_grad_sums_samples, &a);
    sum_batch(run, b.sums, width, 2 * (size_t)n_ch, b.lanes, b.total);
    /* Each lane's dweight and dbias: its own samples' sums. */
    for (int ln = 0; ln < cut_lanes(&run->cut); ln++) {
        float *g = dparams + (size_t)ln * run->cut.grad_stride;
        const double *lane = b.lanes + (size_t)ln * 2 * n_ch;
        for (int c = 0; c < n_ch; c++) {
            g[c] = (float)lane[n_ch + c];
            g[n_ch + c] = (float)lane[c];
        }
    }
    if (!din) return;
    for (int c = 0; c < n_ch; c++) {
        b.f0[c] = (float)(params[c] * invstd[c]);
        b.f1[c] = (float)(b.total[c] / m);
        b.f2[c] = (float)(b.total[n_ch + c] / m);
    }
    a.y = din, a.a = b.f0, a.b = b.f1, a.d = b.f2;
    par_items(run->nt, work, run->n, bn_input_grad_samples, &a);
}

static void batchnorm_describe(const void *settings, char *buf, size_t size) {
    const batchnorm_settings *s = settings;
    if (s->momentum == 0.1 && s->eps == 1e-5)
        snprintf(buf, size, "batchnorm");
    else
        snprintf(buf, size, "batchnorm (momentum %g, eps %g)", s->momentum, s->eps);
}

static void batchnorm_geometry(const void *settings, layer_geometry *g) {
    const batchnorm_settings *s = settings;
    g->eps = s->eps;
    g->momentum = s->momentum;
}

const layer_ops batchnorm_ops = {
    .type = "batchnorm",
    .settings_size = sizeof(batchnorm_settings),
    .keys = batchnorm_keys,
    .parse = batchnorm_parse,
    .shape = layer_same_shape,
    .params = batchnorm_params,
    .buffers = batchnorm_buffers,
    .init_buffers = batchnorm_init_buffers,
    .scratch_size = batchnorm_scratch_size,
    .pass_saved_size = batchnorm_pass_saved_size,
    .init = batchnorm_init,
    .forward = batchnorm_layer_forward,
    .backward = batchnorm_layer_backward,
    .describe = batchnorm_describe,
    .geometry = batchnorm_geometry,
    .batch_wide = 1,
    .relu_epilogue = 1,
    .relu_backward = 1,
};
