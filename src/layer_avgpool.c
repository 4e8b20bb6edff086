/*
 * avgpool: the mean of each size x size window, per channel, windows `stride` apart (default
 * stride = size). Backward: each input position gets dout / size^2 from every window holding it.
 */
#include <stdio.h>
#include <string.h>

#include "ompcnn/layer.h"
#include "parallel.h"

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

typedef struct avgpool_args {
    const layer *l;
    const float *src; /* what the pass reads: forward the input, backward the output gradient */
    float *dst;       /* what it writes: forward the output, backward the input gradient */
} avgpool_args;

/* Samples [begin, end). */
static int avgpool_forward_samples(void *ctx, long begin, long end, int worker) {
    const avgpool_args *a = ctx;
    const layer *l = a->l;
    const avgpool_settings *s = l->settings;
    const int in_w = l->in.w, n_ch = l->in.c;
    const float inv = 1.0f / (float)(s->size * s->size);
    (void)worker;
    for (long k = begin; k < end; k++) {
        const float *x = a->src + (size_t)k * shape_size(l->in);
        float *y = a->dst + (size_t)k * shape_size(l->out);
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
    return 0;
}

static int avgpool_backward_samples(void *ctx, long begin, long end, int worker) {
    const avgpool_args *a = ctx;
    const layer *l = a->l;
    const avgpool_settings *s = l->settings;
    const int in_w = l->in.w, n_ch = l->in.c;
    const float inv = 1.0f / (float)(s->size * s->size);
    (void)worker;
    for (long k = begin; k < end; k++) {
        const float *dy = a->src + (size_t)k * shape_size(l->out);
        float *dx = a->dst + (size_t)k * shape_size(l->in);
        memset(dx, 0, shape_size(l->in) * sizeof *dx);
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
    return 0;
}

static void avgpool_layer_forward(const layer *l, const float *params, const float *in, float *out,
                                  const run_ctx *run) {
    avgpool_args a = {l, in, out};
    (void)params;
    par_blocks(run->nt, (size_t)run->n * shape_size(l->in) * PAR_ELEMENT_COST, run->n,
               avgpool_forward_samples, &a);
}

static void avgpool_layer_backward(const layer *l, const float *params, const float *in,
                                   const float *out, const float *dout, float *din, float *dparams,
                                   const run_ctx *run) {
    avgpool_args a = {l, dout, din};
    (void)params, (void)in, (void)out, (void)dparams;
    if (!din) return;
    par_blocks(run->nt, (size_t)run->n * shape_size(l->in) * PAR_ELEMENT_COST, run->n,
               avgpool_backward_samples, &a);
}

static void avgpool_describe(const void *settings, char *buf, size_t size) {
    const avgpool_settings *s = settings;
    if (s->stride == s->size) snprintf(buf, size, "avgpool %d", s->size);
    else snprintf(buf, size, "avgpool %d stride %d", s->size, s->stride);
}

static void avgpool_geometry(const void *settings, layer_geometry *g) {
    const avgpool_settings *s = settings;
    *g = (layer_geometry){.kernel = s->size, .stride = s->stride};
}

const layer_ops avgpool_ops = {
    .type = "avgpool",
    .settings_size = sizeof(avgpool_settings),
    .keys = avgpool_keys,
    .parse = avgpool_parse,
    .shape = avgpool_shape,
    .params = layer_no_params,
    .init = NULL,
    .forward = avgpool_layer_forward,
    .backward = avgpool_layer_backward,
    .describe = avgpool_describe,
    .geometry = avgpool_geometry,
};
