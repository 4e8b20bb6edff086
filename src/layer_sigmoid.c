/*
 * sigmoid: y = 1 / (1 + exp(-x)), elementwise.  Backward: dx = dy * y * (1 - y).
 *
 * double_sigmoid_backward reproduces the report's printed Sigmoid.backprop, which stores the
 * sigmoid's output and then applies the sigmoid to it once more before taking the derivative:
 * s = sigmoid(y), dx = dy * s * (1 - s). That is not the derivative of this layer; it is there
 * only so the report's arithmetic can be run exactly.
 */
#include <math.h>
#include <stdio.h>

#include "ompcnn/layer.h"
#include "parallel.h"
#include "vmath.h"
#include "json.h"

typedef struct sigmoid_settings {
    int double_sigmoid_backward;
} sigmoid_settings;

static const char *const sigmoid_keys[] = {"double_sigmoid_backward", NULL};

static int sigmoid_parse(void *settings, const cJSON *obj, const char *path, errbuf *err) {
    sigmoid_settings *s = settings;
    return json_get_bool(obj, "double_sigmoid_backward", 0, path, &s->double_sigmoid_backward,
                         err);
}

/* One elementwise pass: forward writes dst = sigmoid(src); backward writes dst = dx from
 * src = the layer's output y and dy. */
typedef struct sigmoid_args {
    float *dst;
    const float *src, *dy;
} sigmoid_args;

static int sigmoid_block(void *ctx, long begin, long end, int worker) {
    (void)worker;
    const sigmoid_args *a = ctx;
    float *restrict y = a->dst;
    const float *restrict x = a->src;
    for (long i = begin; i < end; i++) y[i] = 1.0f / (1.0f + vexpf(-x[i]));
    return 0;
}

static int sigmoid_backward_block(void *ctx, long begin, long end, int worker) {
    const sigmoid_args *a = ctx;
    float *restrict dx = a->dst;
    const float *restrict y = a->src, *restrict dy = a->dy;
    (void)worker;
    for (long i = begin; i < end; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
    return 0;
}

/* The report's backward: the sigmoid of the output again, then its derivative. */
static int double_sigmoid_block(void *ctx, long begin, long end, int worker) {
    (void)worker;
    const sigmoid_args *a = ctx;
    float *restrict dx = a->dst;
    const float *restrict y = a->src, *restrict dy = a->dy;
    for (long i = begin; i < end; i++) {
        float again = 1.0f / (1.0f + vexpf(-y[i]));
        dx[i] = dy[i] * again * (1.0f - again);
    }
    return 0;
}

static void sigmoid_layer_forward(const layer *l, const float *params, const float *in,
                                  float *out, const run_ctx *run) {
    const long n = (long)(run->n * shape_size(l->in));
    (void)params;
    sigmoid_args a = {out, in, NULL};
    par_blocks(run->nt, 8 * (size_t)n, n, sigmoid_block, &a);
}

static void sigmoid_layer_backward(const layer *l, const float *params, const float *in,
                                   const float *out, const float *dout, float *din, float *dparams,
                             const run_ctx *run) {
    const sigmoid_settings *s = l->settings;
    const long n = (long)(run->n * shape_size(l->in));
    (void)params, (void)in, (void)dparams;
    if (!din) return;
    if (s->double_sigmoid_backward) {
        sigmoid_args a = {din, out, dout};
        par_blocks(run->nt, 8 * (size_t)n, n, double_sigmoid_block, &a);
    } else {
        sigmoid_args a = {din, out, dout};
        par_blocks(run->nt, (size_t)n * PAR_ELEMENT_COST, n, sigmoid_backward_block, &a);
    }
}

static void sigmoid_describe(const void *settings, char *buf, size_t size) {
    const sigmoid_settings *s = settings;
    snprintf(buf, size, s->double_sigmoid_backward ? "sigmoid (report backward)" : "sigmoid");
}

const layer_ops sigmoid_ops = {
    .type = "sigmoid",
    .settings_size = sizeof(sigmoid_settings),
    .keys = sigmoid_keys,
    .parse = sigmoid_parse,
    .shape = layer_same_shape,
    .params = layer_no_params,
    .init = NULL,
    .forward = sigmoid_layer_forward,
    .backward = sigmoid_layer_backward,
    .describe = sigmoid_describe,
};
