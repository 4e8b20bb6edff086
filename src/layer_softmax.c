/*
 * softmax: probabilities over the flattened input, p = exp(x - max) / sum(exp(x - max)). It must
 * be the last layer; with it the trainer minimises the cross-entropy -log p[label], whose gradient
 * with respect to the logits is simply p - onehot(label) (the net uses that directly).
 *
 * The layer's own backward is the general Jacobian product, dx = p * (dy - sum(dy * p)), kept so
 * the layer can be checked like any other.
 */
#include <math.h>
#include <stdio.h>

#include "ompcnn/layer.h"
#include "vmath.h"
#include "kernels.h"

static const char *const softmax_keys[] = {NULL};

static int softmax_shape(const void *settings, shape3 in, shape3 *out, const char *path,
                         errbuf *err) {
    (void)settings;
    if (shape_size(in) < 2)
        return errorf(err, "%s: softmax over %zu value needs at least 2 classes", path,
                    shape_size(in));
    *out = (shape3){1, 1, (int)shape_size(in)};
    return 0;
}

void softmax_forward(float *probs, const float *logits, int n) {
    float top = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > top) top = logits[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        probs[i] = vexpf(logits[i] - top);
        sum += probs[i];
    }
    for (int i = 0; i < n; i++) probs[i] = (float)(probs[i] / sum);
}

float softmax_xent_loss(const float *logits, int n, int label) {
    /* -log softmax(x)[label] = log(sum exp(x - top)) - (x[label] - top): finite even when the
     * probability underflows to zero. */
    float top = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > top) top = logits[i];
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - top);
    return (float)(log(sum) - ((double)logits[label] - top));
}

float softmax_xent_smoothed(const float *logits, int n, int label, float e) {
    if (e == 0.0f) return softmax_xent_loss(logits, n, label);
    /* (1 - e) (-log p[label]) + e mean_k (-log p[k]), each -log p[k] = log(sum) - (x[k] - top) */
    float top = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > top) top = logits[i];
    double sum = 0.0, mean = 0.0;
    for (int i = 0; i < n; i++) {
        sum += exp((double)logits[i] - top);
        mean += (double)logits[i] - top;
    }
    const double log_sum = log(sum);
    mean /= n;
    return (float)((1.0 - e) * (log_sum - ((double)logits[label] - top)) + e * (log_sum - mean));
}

static void softmax_layer_forward(const layer *l, const float *params, const float *in, float *out,
                                  const run_ctx *run) {
    const int n = (int)shape_size(l->in);
    (void)params;
    for (int s = 0; s < run->n; s++) softmax_forward(out + (size_t)s * n, in + (size_t)s * n, n);
}

static void softmax_layer_backward(const layer *l, const float *params, const float *in,
                                   const float *out, const float *dout, float *din, float *dparams,
                                   const run_ctx *run) {
    const int n = (int)shape_size(l->in);
    (void)params, (void)in, (void)dparams;
    if (!din) return;
    for (int s = 0; s < run->n; s++) {
        const float *p = out + (size_t)s * n, *dy = dout + (size_t)s * n;
        double dot = 0.0;
        for (int i = 0; i < n; i++) dot += (double)dy[i] * p[i];
        for (int i = 0; i < n; i++) din[(size_t)s * n + i] = p[i] * (float)(dy[i] - dot);
    }
}

static void softmax_describe(const void *settings, char *buf, size_t size) {
    (void)settings;
    snprintf(buf, size, "softmax");
}

const layer_ops softmax_ops = {
    .type = "softmax",
    .settings_size = 0,
    .keys = softmax_keys,
    .parse = NULL,
    .shape = softmax_shape,
    .params = layer_no_params,
    .init = NULL,
    .forward = softmax_layer_forward,
    .backward = softmax_layer_backward,
    .describe = softmax_describe,
};
