/*
 * A network: the layers built from the config with their shapes inferred, the size of the
 * parameter arena they slice, and the per-sample workspaces that forward and backward use.
 *
 * Layout: all parameters live in one float arena (layer by layer, weight then bias), and so do the
 * gradients, so zeroing gradients is one memset and an SGD step is one loop.
 */
#ifndef OMPCNN_NET_H
#define OMPCNN_NET_H

#include "ompcnn/config.h"
#include "ompcnn/layer.h"

typedef struct net {
    shape3 input;
    int n_layers;
    layer *layers;
    int n_classes;     /* size of the final softmax */
    size_t n_params;
    size_t max_act;    /* largest activation of one sample (for the gradient buffers) */
    size_t total_act;  /* all activations of one sample, the input included */
} net;

/* Builds the layers of cfg on an input of the given shape; errors name the config path. */
int net_build(net *n, const config *cfg, shape3 input, errbuf *err);
void net_free(net *n);
/* One line: "28x28x1 -> conv2d 8x3x3 -> 26x26x8 -> ... (27130 parameters)". */
void net_describe(const net *n, char *buf, size_t size);
/* Draws all parameters in layer order from numpy's legacy generator seeded with seed. */
void net_init_params(const net *n, float *params, init_kind kind, uint32_t seed);

/* Buffers for one sample: activations of every layer, and two gradient buffers. */
typedef struct workspace {
    float *acts;    /* total_act floats */
    size_t *offset; /* n_layers + 1 offsets: activation i is the input of layer i */
    float *delta[2];
} workspace;

int workspace_alloc(workspace *ws, const net *n, errbuf *err);
void workspace_free(workspace *ws);
/* The input buffer of a workspace (fill it, then call net_forward). */
float *workspace_input(const workspace *ws);

/* Runs all layers; returns the class probabilities (n_classes floats inside ws). */
const float *net_forward(const net *n, const float *params, workspace *ws, int nt);
/* Cross-entropy loss of the last forward pass for `label`. */
float net_loss(const net *n, const workspace *ws, int label);
/* Backpropagates the cross-entropy loss of the last forward pass, adding into dparams. */
void net_backward(const net *n, const float *params, workspace *ws, int label, float *dparams,
                  int nt);

#endif
