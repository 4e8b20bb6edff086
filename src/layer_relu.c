/*
 * relu: y = max(x, 0), elementwise.  Backward: dx = dy where x > 0, else 0.
 */
#include <stdio.h>

#include "ompcnn/layer.h"

static const char *const relu_keys[] = {NULL};

static void relu_forward(const layer *l, const float *params, const float *in, float *out,
                         const run_ctx *run) {
    const size_t n = run->n * shape_size(l->in);
    (void)params;
    for (size_t i = 0; i < n; i++) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

static void relu_backward(const layer *l, const float *params, const float *in, const float *out,
                          const float *dout, float *din, float *dparams, const run_ctx *run) {
    const size_t n = run->n * shape_size(l->in);
    (void)params, (void)out, (void)dparams;
    if (!din) return;
    for (size_t i = 0; i < n; i++) din[i] = in[i] > 0.0f ? dout[i] : 0.0f;
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
    .forward = relu_forward,
    .backward = relu_backward,
    .describe = relu_describe,
};
