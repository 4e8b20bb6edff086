/*
 * globalavgpool: the mean of each channel over the whole of its plane, h x w x c -> 1 x 1 x c.
 * Backward: each position of a channel gets that channel's output gradient / (h * w).
 * The sum over the plane is taken in row-major order, in double, whatever the thread count.
 */
#include <stdio.h>

#include "ompcnn/layer.h"
#include "parallel.h"

static const char *const globalavgpool_keys[] = {NULL};

static int globalavgpool_shape(const void *settings, shape3 in, shape3 *out, const char *path,
                               errbuf *err) {
    (void)settings, (void)path, (void)err;
    *out = (shape3){1, 1, in.c};
    return 0;
}

typedef struct globalavgpool_args {
    const layer *l;
    const float *src; /* forward: the input; backward: the output gradient */
    float *dst;       /* forward: the output; backward: the input gradient */
} globalavgpool_args;

/* Samples [begin, end). */
static int globalavgpool_forward_samples(void *ctx, long begin, long end, int worker) {
    const globalavgpool_args *a = ctx;
    const int plane = a->l->in.h * a->l->in.w, n_ch = a->l->in.c;
    (void)worker;
    for (long k = begin; k < end; k++) {
        const float *x = a->src + (size_t)k * plane * n_ch;
        float *y = a->dst + (size_t)k * n_ch;
        for (int c = 0; c < n_ch; c++) {
            double sum = 0.0;
            for (int p = 0; p < plane; p++) sum += x[(size_t)p * n_ch + c];
            y[c] = (float)(sum / plane);
        }
    }
    return 0;
}

static int globalavgpool_backward_samples(void *ctx, long begin, long end, int worker) {
    const globalavgpool_args *a = ctx;
    const int plane = a->l->in.h * a->l->in.w, n_ch = a->l->in.c;
    (void)worker;
    for (long k = begin; k < end; k++) {
        const float *dy = a->src + (size_t)k * n_ch;
        float *dx = a->dst + (size_t)k * plane * n_ch;
        for (int p = 0; p < plane; p++)
            for (int c = 0; c < n_ch; c++) dx[(size_t)p * n_ch + c] = dy[c] / (float)plane;
    }
    return 0;
}

static void globalavgpool_layer_forward(const layer *l, const float *params, const float *in,
                                        float *out, const run_ctx *run) {
    globalavgpool_args a = {l, in, out};
    (void)params;
    par_blocks(run->nt, (size_t)run->n * shape_size(l->in) * PAR_ELEMENT_COST, run->n,
               globalavgpool_forward_samples, &a);
}

static void globalavgpool_layer_backward(const layer *l, const float *params, const float *in,
                                         const float *out, const float *dout, float *din,
                                         float *dparams, const run_ctx *run) {
    globalavgpool_args a = {l, dout, din};
    (void)params, (void)in, (void)out, (void)dparams;
    if (!din) return;
    par_blocks(run->nt, (size_t)run->n * shape_size(l->in) * PAR_ELEMENT_COST, run->n,
               globalavgpool_backward_samples, &a);
}

static void globalavgpool_describe(const void *settings, char *buf, size_t size) {
    (void)settings;
    snprintf(buf, size, "globalavgpool");
}

const layer_ops globalavgpool_ops = {
    .type = "globalavgpool",
    .settings_size = 0,
    .keys = globalavgpool_keys,
    .parse = NULL,
    .shape = globalavgpool_shape,
    .params = layer_no_params,
    .init = NULL,
    .forward = globalavgpool_layer_forward,
    .backward = globalavgpool_layer_backward,
    .describe = globalavgpool_describe,
};
