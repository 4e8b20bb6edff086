/*
 * tanh: y = tanh(x), elementwise.  Backward: dx = dy * (1 - y^2).
 */
#include <math.h>
#include <stdio.h>

#include "ompcnn/layer.h"
#include "parallel.h"

static const char *const tanh_keys[] = {NULL};

typedef struct tanh_args {
    float *y;
    const float *x, *dy;
} tanh_args;

static int tanh_block(void *ctx, long begin, long end, int worker) {
    (void)worker;
    const tanh_args *a = ctx;
    for (long i = begin; i < end; i++) a->y[i] = tanhf(a->x[i]);
    return 0;
}

static int tanh_backward_block(void *ctx, long begin, long end, int worker) {
    const tanh_args *a = ctx;
    (void)worker;
    for (long i = begin; i < end; i++) a->y[i] = a->dy[i] * (1.0f - a->x[i] * a->x[i]);
    return 0;
}

static void tanh_layer_forward(const layer *l, const float *params, const float *in, float *out,
                               const run_ctx *run) {
    const long n = (long)(run->n * shape_size(l->in));
    (void)params;
    tanh_args a = {out, in, NULL};
    par_blocks(run->nt, 8 * (size_t)n, n, tanh_block, &a);
}

static void tanh_layer_backward(const layer *l, const float *params, const float *in,
                                const float *out, const float *dout, float *din, float *dparams,
                                const run_ctx *run) {
    const long n = (long)(run->n * shape_size(l->in));
    (void)params, (void)in, (void)dparams;
    if (!din) return;
    tanh_args a = {din, out, dout};
    par_blocks(run->nt, (size_t)n * PAR_ELEMENT_COST, n, tanh_backward_block, &a);
}

static void tanh_describe(const void *settings, char *buf, size_t size) {
    (void)settings;
    snprintf(buf, size, "tanh");
}

const layer_ops tanh_ops = {
    .type = "tanh",
    .settings_size = 0,
    .keys = tanh_keys,
    .parse = NULL,
    .shape = layer_same_shape,
    .params = layer_no_params,
    .init = NULL,
    .forward = tanh_layer_forward,
    .backward = tanh_layer_backward,
    .describe = tanh_describe,
};
