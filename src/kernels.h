/*
 * The kernels behind the conv2d, dense and softmax layers, and plain reference versions of
 * them, which the tests compare with the fast ones. Private to the library: layers reach them
 * through their ops (layer.h).
 */
#ifndef OMPCNN_KERNELS_H
#define OMPCNN_KERNELS_H

#include "ompcnn/layer.h"

/* relu of one value, as the relu layer computes it (NaN and -0 give +0), and in place over n
 * values: the epilogue of the layers that apply a following relu themselves (run_ctx.relu). */
static inline float relu_of(float x) {
    return x > 0.0f ? x : 0.0f;
}

static inline void relu_in_place(float *restrict y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = relu_of(y[i]);
}

/* The gradient dy[i] passed back through a relu whose output is mask (as the relu layer's
 * backward computes it), or dy[i] itself without a mask. */
static inline float relu_grad(const float *dy, const float *mask, size_t i) {
    return mask ? (mask[i] > 0.0f ? dy[i] : 0.0f) : dy[i];
}

/* n values of a gradient passed back in place through a relu whose output is mask: the layers
 * that take the gradient of the relu before them (run_ctx.relu_din). */
static inline void relu_grad_in_place(float *restrict dx, const float *restrict mask, size_t n) {
    for (size_t i = 0; i < n; i++) dx[i] = relu_grad(dx, mask, i);
}

/* The geometry of a conv2d layer, for its kernels. */
typedef struct conv_geom {
    int in_h, in_w, in_c, out_h, out_w, n_filters, kernel, stride, padding;
} conv_geom;

/* Kernels behind the ops, usable directly (tests compare each fast kernel with its plain
 * reference). Activations are n samples of HWC; weights as saved (see docs/cli.md). A sample's
 * input patches are out_h*out_w*kernel*kernel*in_c floats (none for 1x1 convolutions at stride 1
 * without padding). `cols`, when not NULL, keeps the n samples' patches: forward fills it and
 * backward reads it; when NULL, both read each patch value where it lies in the sample's input,
 * laid out with its padding in `col` (gemm_gather), or build the patches there for the few
 * shapes that cannot (conv2d.c, "forward without patches"); `col` has room for nt samples'
 * patches (one per thread). Single-channel layers run direct loops in forward and in
 * backward's weight gradient, and neither fill nor read `cols`. `dcol` likewise holds nt
 * samples' patch gradients, and `partial` n samples' weight gradients (n_filters * kernel *
 * kernel * in_c floats each). With n samples and nt threads, the samples are shared out when
 * n >= nt, and each sample's products are split over the threads otherwise; the result is the
 * same either way.
 * conv2d_backward writes each lane's weight and bias gradient (cut: NULL for one lane) into
 * dweight and dbias + l * cut->grad_stride: every sample's gradient is computed on its own (into
 * `partial`, n * n_filters * (kernel * kernel * in_c + 1) floats) and the lane adds them in
 * sample order, which leaves the lane's sum independent of threads. dense_backward writes the
 * gradient of its n samples, summed in order. */
void conv2d_forward(float *out, const float *in, const float *weight, const float *bias, int n,
                    const conv_geom *g, float *cols, float *col, int nt);
void conv2d_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                     const float *weight, int n, const conv_geom *g, const float *cols,
                     float *col, float *dcol, float *partial, const lane_cut *cut, int nt);
void conv2d_forward_ref(float *out, const float *in, const float *weight, const float *bias, int n,
                        const conv_geom *g);
void conv2d_backward_ref(float *din, float *dweight, float *dbias, const float *dout,
                         const float *in, const float *weight, int n, const conv_geom *g);
void dense_forward(float *out, const float *in, const float *weight, const float *bias, int n,
                   int n_in, int n_out, int nt);
/* scratch: n * n_in floats when n > 1. */
void dense_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                    const float *weight, int n, int n_in, int n_out, float *scratch, int nt);
void dense_forward_ref(float *out, const float *in, const float *weight, const float *bias, int n,
                       int n_in, int n_out);
void dense_backward_ref(float *din, float *dweight, float *dbias, const float *dout,
                        const float *in, const float *weight, int n, int n_in, int n_out);
void softmax_forward(float *probs, const float *logits, int n);
/* Cross-entropy loss -log(probs[label]) computed stably from the logits. */
float softmax_xent_loss(const float *logits, int n, int label);
/* The same against the smoothed target (1 - e) one-hot(label) + e / n. */
float softmax_xent_smoothed(const float *logits, int n, int label, float e);

#endif
