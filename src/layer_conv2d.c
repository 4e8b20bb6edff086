/*
 * conv2d: a 2-D convolution (cross-correlation, as the report computes it) over a channels-last
 * input. Weights are (filters, kernel, kernel, in_channels), so the report's single-channel
 * filters (8, 3, 3) are the same numbers in the same order. Optional bias per filter.
 *
 *   out[oy][ox][f] = bias[f] + sum_{ky,kx,c} in[oy*s - p + ky][ox*s - p + kx][c] * w[f][ky][kx][c]
 *
 * Backward: dw[f][ky][kx][c] += sum_{oy,ox} dout[oy][ox][f] * in[...][...][c];
 *           din[iy][ix][c] = sum over the (oy, ox, f, ky, kx) that read it of dout * w.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "ompcnn/layer.h"
#include "parallel.h"

typedef struct conv2d_settings {
    int filters, kernel, stride, padding, in_channels, bias;
} conv2d_settings;

static const char *const conv2d_keys[] = {"filters", "kernel",      "stride", "padding",
                                          "in_channels", "bias", NULL};

static int conv2d_parse(void *settings, const cJSON *obj, const char *path, errbuf *err) {
    conv2d_settings *s = settings;
    if (json_get_int(obj, "filters", INT_MIN, 1, 65536, path, &s->filters, err) ||
        json_get_int(obj, "kernel", INT_MIN, 1, 1024, path, &s->kernel, err) ||
        json_get_int(obj, "stride", 1, 1, 1024, path, &s->stride, err) ||
        json_get_int(obj, "padding", 0, 0, 1024, path, &s->padding, err) ||
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

void conv2d_forward(float *out, const float *in, const float *weight, const float *bias, int in_h,
                    int in_w, int in_c, int out_h, int out_w, int n_filters, int kernel, int stride,
                    int padding, int nt) {
    size_t work = (size_t)out_h * out_w * n_filters * kernel * kernel * in_c;
    /* Each (row, filter) pair owns its outputs: threads never share an element. */
#pragma omp parallel for collapse(2) schedule(static) num_threads(nt) if (par_ok(nt, work))
    for (int oy = 0; oy < out_h; oy++) {
        for (int f = 0; f < n_filters; f++) {
            const float *wf = weight + (size_t)f * kernel * kernel * in_c;
            for (int ox = 0; ox < out_w; ox++) {
                float acc = 0.0f;
                for (int ky = 0; ky < kernel; ky++) {
                    int iy = oy * stride - padding + ky;
                    if (iy < 0 || iy >= in_h) continue;
                    for (int kx = 0; kx < kernel; kx++) {
                        int ix = ox * stride - padding + kx;
                        if (ix < 0 || ix >= in_w) continue;
                        const float *px = in + ((size_t)iy * in_w + ix) * in_c;
                        const float *wk = wf + ((size_t)ky * kernel + kx) * in_c;
                        for (int c = 0; c < in_c; c++) acc += px[c] * wk[c];
                    }
                }
                out[((size_t)oy * out_w + ox) * n_filters + f] = bias ? acc + bias[f] : acc;
            }
        }
    }
}

void conv2d_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                     const float *weight, int in_h, int in_w, int in_c, int out_h, int out_w,
                     int n_filters, int kernel, int stride, int padding, int nt) {
    size_t work = (size_t)out_h * out_w * n_filters * kernel * kernel * in_c;
    /* Weight and bias gradients: each thread owns whole filters. */
#pragma omp parallel for schedule(static) num_threads(nt) if (par_ok(nt, work))
    for (int f = 0; f < n_filters; f++) {
        float *dwf = dweight + (size_t)f * kernel * kernel * in_c;
        float db = 0.0f;
        for (int oy = 0; oy < out_h; oy++) {
            for (int ox = 0; ox < out_w; ox++) {
                float g = dout[((size_t)oy * out_w + ox) * n_filters + f];
                db += g;
                for (int ky = 0; ky < kernel; ky++) {
                    int iy = oy * stride - padding + ky;
                    if (iy < 0 || iy >= in_h) continue;
                    for (int kx = 0; kx < kernel; kx++) {
                        int ix = ox * stride - padding + kx;
                        if (ix < 0 || ix >= in_w) continue;
                        const float *px = in + ((size_t)iy * in_w + ix) * in_c;
                        float *dwk = dwf + ((size_t)ky * kernel + kx) * in_c;
                        for (int c = 0; c < in_c; c++) dwk[c] += g * px[c];
                    }
                }
            }
        }
        if (dbias) dbias[f] += db;
    }
    if (!din) return;
    /* Input gradient, gathered: each thread owns whole input rows. Output row oy reads input row
     * iy through kernel row ky = iy + padding - oy * stride. */
#pragma omp parallel for schedule(static) num_threads(nt) if (par_ok(nt, work))
    for (int iy = 0; iy < in_h; iy++) {
        for (int ix = 0; ix < in_w; ix++) {
            float *dpx = din + ((size_t)iy * in_w + ix) * in_c;
            for (int c = 0; c < in_c; c++) dpx[c] = 0.0f;
            for (int ky = 0; ky < kernel; ky++) {
                int ty = iy + padding - ky;
                if (ty < 0 || ty % stride) continue;
                int oy = ty / stride;
                if (oy >= out_h) continue;
                for (int kx = 0; kx < kernel; kx++) {
                    int tx = ix + padding - kx;
                    if (tx < 0 || tx % stride) continue;
                    int ox = tx / stride;
                    if (ox >= out_w) continue;
                    const float *g = dout + ((size_t)oy * out_w + ox) * n_filters;
                    for (int f = 0; f < n_filters; f++) {
                        const float *wk =
                            weight + (((size_t)f * kernel + ky) * kernel + kx) * in_c;
                        for (int c = 0; c < in_c; c++) dpx[c] += g[f] * wk[c];
                    }
                }
            }
        }
    }
}

static void conv2d_layer_forward(const layer *l, const float *params, const float *in, float *out,
                                 int nt) {
    const conv2d_settings *s = l->settings;
    conv2d_forward(out, in, params, s->bias ? params + l->tensors[0].size : NULL, l->in.h, l->in.w,
                   l->in.c, l->out.h, l->out.w, s->filters, s->kernel, s->stride, s->padding, nt);
}

static void conv2d_layer_backward(const layer *l, const float *params, const float *in,
                                  const float *out, const float *dout, float *din, float *dparams,
                                  int nt) {
    const conv2d_settings *s = l->settings;
    (void)out;
    conv2d_backward(din, dparams, s->bias ? dparams + l->tensors[0].size : NULL, dout, in, params,
                    l->in.h, l->in.w, l->in.c, l->out.h, l->out.w, s->filters, s->kernel,
                    s->stride, s->padding, nt);
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

const layer_ops conv2d_ops = {
    .type = "conv2d",
    .settings_size = sizeof(conv2d_settings),
    .keys = conv2d_keys,
    .parse = conv2d_parse,
    .shape = conv2d_shape,
    .params = conv2d_params,
    .init = conv2d_init,
    .forward = conv2d_layer_forward,
    .backward = conv2d_layer_backward,
    .describe = conv2d_describe,
};
