/*
 * relu: y = max(x, 0), elementwise.  Backward: dx = dy where x > 0, else 0.
 *
 * After conv2d, dense or batchnorm the network runs it in place, the layer before applying it
 * (layer.relu_fused): forward then has nothing left to do, and backward's x is its own output,
 * which is positive exactly where the layer's output was.
 */
#include <stdio.h>

#include "kernels.h"
#include "ompcnn/layer.h"
#include "parallel.h"

static const char *const relu_keys[] = {NULL};

typedef struct relu_args {
    float *y;
    const float *x, *dy;
} relu_args;

static int relu_forward_block(void *ctx, long begin, long end, int worker) {
    const relu_args *a = ctx;
    float *restrict y = a->y;
    const float *restrict x = a->x;
    (void)worker;
    for (long i = begin; i < end; i++) y[i] = relu_of(x[i]);
    return 0;
}

static int relu_backward_block(void *ctx, long begin, long end, int worker) {
    const relu_args *a = ctx;
    float *restrict dx = a->y;
    const float *restrict x = a->x, *restrict dy = a->dy;
    (void)worker;
    for (long i = begin; i < end; i++) dx[i] = relu_grad(dy, x, (size_t)i);
    return 0;
}

static void relu_layer_forward(const layer *l, const float *params, const float *in, float *out,
                               const run_ctx *run) {
    const long n = (long)(run->n * shape_size(l->in));
    relu_args a = {out, in, NULL};
    (void)params;
    par_blocks(run->nt, (size_t)n * PAR_ELEMENT_COST, n, relu_forward_block, &a);
}

static void relu_layer_backward(const layer *l, const float *params, const float *in,
                                const float *out, const float *dout, float *din, float *dparams,
                                const run_ctx *run) {
    const long n = (long)(run->n * shape_size(l->in));
    relu_args a = {din, in, dout};
    (void)params, (void)out, (void)dparams;
    if (!din) return;
    par_blocks(run->nt, (size_t)n * PAR_ELEMENT_COST, n, relu_backward_block, &a);
}

static void relu_describe(const void *settings, char *buf, size_t size) {
    (void)settings;
    snprintf(buf, size, "relu");
}

const layer_ops relu_ops = {
    .type = "relu",
    .settings_size = 0,
    .keys = relu_keys,
    .parse = NULL,
    .shape = layer_same_shape,
    .params = layer_no_params,
    .init = NULL,
    .forward = relu_layer_forward,
    .backward = relu_layer_backward,
    .describe = relu_describe,
};
