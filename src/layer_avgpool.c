/*
 * avgpool: the mean of each size x size window, per channel, windows `stride` apart (default
 * stride = size). Backward: each input position gets dout / size^2 from every window holding it.
 */
#include <stdio.h>
#include <string.h>

#include "ompcnn/layer.h"

typedef struct avgpool_settings {
    int size, stride;
} avgpool_settings;

static const char *const avgpool_keys[] = {"size", "stride", NULL};

static int avgpool_parse(void *settings, const cJSON *obj, const char *path, errbuf *err) {
    avgpool_settings *s = settings;
    return pool_window_parse(obj, path, &s->size, &s->stride, err);
}

static int avgpool_shape(const void *settings, shape3 in, shape3 *out, const char *path,
                         errbuf *err) {
    const avgpool_settings *s = settings;
    return pool_window_shape(s->size, s->stride, in, out, path, err);
}

static void avgpool_forward(const layer *l, const float *params, const float *in, float *out,
                            const run_ctx *run) {
    const avgpool_settings *s = l->settings;
    const int in_w = l->in.w, n_ch = l->in.c;
    const float inv = 1.0f / (float)(s->size * s->size);
    (void)params;
    for (int k = 0; k < run->n; k++) {
        const float *x = in + (size_t)k * shape_size(l->in);
        float *y = out + (size_t)k * shape_size(l->out);
        for (int oy = 0; oy < l->out.h; oy++)
            for (int ox = 0; ox < l->out.w; ox++) {
                float *o = y + ((size_t)oy * l->out.w + ox) * n_ch;
                for (int c = 0; c < n_ch; c++) o[c] = 0.0f;
                for (int wy = 0; wy < s->size; wy++)
                    for (int wx = 0; wx < s->size; wx++) {
                        const float *v =
                            x + ((size_t)(oy * s->stride + wy) * in_w + ox * s->stride + wx) * n_ch;
                        for (int c = 0; c < n_ch; c++) o[c] += v[c];
                    }
                for (int c = 0; c < n_ch; c++) o[c] *= inv;
            }
    }
}

static void avgpool_backward(const layer *l, const float *params, const float *in,
                             const float *out, const float *dout, float *din, float *dparams,
                             const run_ctx *run) {
    const avgpool_settings *s = l->settings;
    const int in_w = l->in.w, n_ch = l->in.c;
    const float inv = 1.0f / (float)(s->size * s->size);
    (void)params, (void)in, (void)out, (void)dparams;
    if (!din) return;
    memset(din, 0, (size_t)run->n * shape_size(l->in) * sizeof *din);
    for (int k = 0; k < run->n; k++) {
        const float *dy = dout + (size_t)k * shape_size(l->out);
        float *dx = din + (size_t)k * shape_size(l->in);
        for (int oy = 0; oy < l->out.h; oy++)
            for (int ox = 0; ox < l->out.w; ox++) {
                const float *g = dy + ((size_t)oy * l->out.w + ox) * n_ch;
                for (int wy = 0; wy < s->size; wy++)
                    for (int wx = 0; wx < s->size; wx++) {
                        float *d = dx + ((size_t)(oy * s->stride + wy) * in_w + ox * s->stride + wx) *
                                            n_ch;
                        for (int c = 0; c < n_ch; c++) d[c] += g[c] * inv;
                    }
            }
    }
}

static void avgpool_describe(const void *settings, char *buf, size_t size) {
    const avgpool_settings *s = settings;
    if (s->stride == s->size) snprintf(buf, size, "avgpool %d", s->size);
    else snprintf(buf, size, "avgpool %d stride %d", s->size, s->stride);
}

const layer_ops avgpool_ops = {
    .type = "avgpool",
    .settings_size = sizeof(avgpool_settings),
    .keys = avgpool_keys,
    .parse = avgpool_parse,
    .shape = avgpool_shape,
    .params = layer_no_params,
    .init = NULL,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .describe = avgpool_describe,
};
