/*
 * dense: a fully connected layer on the flattened input (row, column, channel order). Weights are
 * (inputs, units), as the report's numpy arrays are, and out = in . W + bias.
 *
 * Backward: dW[i][o] += in[i] * dout[o];  dbias[o] += dout[o];  din[i] = sum_o W[i][o] * dout[o].
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "ompcnn/layer.h"
#include "parallel.h"

typedef struct dense_settings {
    int units, bias;
} dense_settings;

static const char *const dense_keys[] = {"units", "bias", NULL};

static int dense_parse(void *settings, const cJSON *obj, const char *path, errbuf *err) {
    dense_settings *s = settings;
    if (json_get_int(obj, "units", INT_MIN, 1, 1 << 20, path, &s->units, err) ||
        json_get_bool(obj, "bias", 1, path, &s->bias, err))
        return -1;
    return 0;
}

static int dense_shape(const void *settings, shape3 in, shape3 *out, const char *path,
                       errbuf *err) {
    const dense_settings *s = settings;
    if ((double)shape_size(in) * s->units > (double)(INT_MAX / 4))
        return errorf(err, "%s.units: %d units on %zu inputs is too many weights", path, s->units,
                    shape_size(in));
    *out = (shape3){1, 1, s->units};
    return 0;
}

static int dense_params(const void *settings, shape3 in, shape3 out, tensor_desc desc[2]) {
    const dense_settings *s = settings;
    (void)out;
    int n_in = (int)shape_size(in);
    desc[0] = (tensor_desc){"weight", 2, {n_in, s->units}, (size_t)n_in * s->units};
    if (!s->bias) return 1;
    desc[1] = (tensor_desc){"bias", 1, {s->units}, (size_t)s->units};
    return 2;
}

static void dense_init(const layer *l, float *params, init_kind kind, mt19937 *rng) {
    const dense_settings *s = l->settings;
    init_weights(params, l->tensors[0].size, (int)shape_size(l->in), s->units, kind, rng);
}

/* Outputs are computed in blocks of this many units; a block belongs to one thread. */
#define DENSE_BLOCK 16

void dense_forward(float *out, const float *in, const float *weight, const float *bias, int n_in,
                   int n_out, int nt) {
    int n_blocks = (n_out + DENSE_BLOCK - 1) / DENSE_BLOCK;
#pragma omp parallel for schedule(static) num_threads(nt) if (par_ok(nt, (size_t)n_in * n_out))
    for (int b = 0; b < n_blocks; b++) {
        int o0 = b * DENSE_BLOCK, o1 = o0 + DENSE_BLOCK < n_out ? o0 + DENSE_BLOCK : n_out;
        float acc[DENSE_BLOCK] = {0};
        /* Row by row, so the inner loop runs along contiguous weights and vectorizes; every
         * output still sums its inputs in order 0..n_in-1. */
        for (int i = 0; i < n_in; i++) {
            const float x = in[i], *w = weight + (size_t)i * n_out;
            for (int o = o0; o < o1; o++) acc[o - o0] += x * w[o];
        }
        for (int o = o0; o < o1; o++) out[o] = bias ? acc[o - o0] + bias[o] : acc[o - o0];
    }
}

void dense_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                    const float *weight, int n_in, int n_out, int nt) {
    if (dbias)
        for (int o = 0; o < n_out; o++) dbias[o] += dout[o];
    /* Each thread owns whole input rows: row i of dW and element i of din. */
#pragma omp parallel for schedule(static) num_threads(nt) if (par_ok(nt, (size_t)n_in * n_out))
    for (int i = 0; i < n_in; i++) {
        const float x = in[i], *w = weight + (size_t)i * n_out;
        float *dw = dweight + (size_t)i * n_out;
        float acc = 0.0f;
        for (int o = 0; o < n_out; o++) {
            dw[o] += x * dout[o];
            acc += w[o] * dout[o];
        }
        if (din) din[i] = acc;
    }
}

static void dense_layer_forward(const layer *l, const float *params, const float *in, float *out,
                                int nt) {
    const dense_settings *s = l->settings;
    dense_forward(out, in, params, s->bias ? params + l->tensors[0].size : NULL,
                  (int)shape_size(l->in), s->units, nt);
}

static void dense_layer_backward(const layer *l, const float *params, const float *in,
                                 const float *out, const float *dout, float *din, float *dparams,
                                 int nt) {
    const dense_settings *s = l->settings;
    (void)out;
    dense_backward(din, dparams, s->bias ? dparams + l->tensors[0].size : NULL, dout, in, params,
                   (int)shape_size(l->in), s->units, nt);
}

static void dense_describe(const void *settings, char *buf, size_t size) {
    const dense_settings *s = settings;
    snprintf(buf, size, "dense %d%s", s->units, s->bias ? "" : " no-bias");
}

const layer_ops dense_ops = {
    .type = "dense",
    .settings_size = sizeof(dense_settings),
    .keys = dense_keys,
    .parse = dense_parse,
    .shape = dense_shape,
    .params = dense_params,
    .init = dense_init,
    .forward = dense_layer_forward,
    .backward = dense_layer_backward,
    .describe = dense_describe,
};
