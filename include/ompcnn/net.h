/*
 * A network: the layers built from the config with their shapes inferred, the size of the
 * parameter arena they slice, and the per-sample workspaces that forward and backward use.
 *
 * Layout: all parameters live in one float arena (layer by layer, weight then bias), and so do the
 * gradients, so zeroing gradients is one memset and an SGD step is one loop. The layers' buffers
 * (batchnorm's running statistics: saved with the parameters, never trained) follow the
 * parameters in the same arena, layer by layer: an arena holds net_state_size() floats, and the
 * optimizer, the gradients and weight decay see only the first n_params.
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
    size_t n_buffers;  /* floats of the layers' buffers, after the parameters */
    int batch_wide;    /* the first layer whose training spans the batch (batchnorm), or -1 */
    size_t max_act;    /* largest activation of one sample (for the gradient buffers) */
    size_t total_act;  /* all activations of one sample, the input included */
    float label_smoothing; /* training's target: (1 - e) one-hot + e / n_classes */
    char *const *class_names; /* the classes' names (a folder data set's), or NULL; not owned */
    int n_class_names;
} net;

/* The floats of a parameter arena: the parameters, then the buffers. */
static inline size_t net_state_size(const net *n) {
    return n->n_params + n->n_buffers;
}
/* Where array t of layer l (a parameter tensor, t < l->n_tensors, or a buffer) starts in the
 * arena. */
size_t net_array_offset(const net *n, const layer *l, int t);

/* Builds the layers of cfg on an input of the given shape; errors name the config path. */
int net_build(net *n, const config *cfg, shape3 input, errbuf *err);
void net_free(net *n);
/* One line: "28x28x1 -> conv2d 8x3x3 -> 26x26x8 -> ... (27130 parameters)". */
void net_describe(const net *n, char *buf, size_t size);
/* Draws all parameters in layer order from numpy's legacy generator seeded with seed, and sets
 * the buffers to their initial values. */
void net_init_params(const net *n, float *params, init_kind kind, uint32_t seed);

/* Buffers for a pass over up to max_n samples with up to max_threads threads: activations of
 * every layer and the layers' scratch; and for training passes (forward with ws->training set,
 * then backward) of up to max_train_n <= max_n samples, two gradient buffers and what each layer
 * keeps from forward for backward. Activation i of sample s is at acts + offset[i] + s * size(i). */
typedef struct workspace {
    int max_n;
    int max_train_n;
    int max_threads;
    int n_layers;
    float *acts;
    size_t *offset; /* n_layers + 1 offsets: activation i is the input of layer i */
    float *delta[2];
    float *scratch;
    float **saved; /* per layer: what its forward keeps for its backward (or NULL) */
    float **pass_saved; /* per layer: what its forward keeps once per pass (or NULL) */
    const batch_sum *batch; /* how batch-wide layers' lane sums meet (NULL: in this pass) */
    int training;          /* set by the trainer: a training pass (dropout active) */
    uint64_t *sample_keys; /* max_n stream keys, one per sample of the pass */
    float *scratch_image;  /* max_threads input samples, one per thread, for augmentation */
    /* How the pass's samples are cut into lanes (layer.h); all zero: one lane. The caller sets
     * it before net_forward and keeps it for net_backward. */
    lane_cut cut;
} workspace;

/* The bytes workspace_alloc takes for these sizes (an estimate before allocating). */
double workspace_bytes(const net *n, int max_n, int max_train_n, int max_threads);
int workspace_alloc(workspace *ws, const net *n, int max_n, int max_train_n, int max_threads,
                    errbuf *err);
/* The scratch floats a pass of `count` training samples with nt threads needs (the largest of
 * the layers'); a workspace holds net_scratch_size(max_train_n, max_threads). */
size_t net_scratch_size(const net *n, int count, int nt);
void workspace_free(workspace *ws);
/* The input buffer: max_n samples of the input shape, one after another. */
float *workspace_input(const workspace *ws);

/* Runs all layers on the first `count` samples of the input buffer, layer after layer, each over
 * all the samples with up to nt threads (nt <= ws->max_threads). params is an arena of
 * net_state_size() floats: a training pass (ws->training) updates its buffers (batchnorm's
 * running statistics), which evaluation reads. */
void net_forward(const net *n, const float *params, workspace *ws, int count, int nt);
/* A pass over samples [first, first + count) of a workspace, cut into lanes as `cut` says (all
 * zero: one lane), with up to nt threads and the given scratch: several passes over disjoint
 * samples, each with a scratch of its own, may run at once (each with nt 1). The scratch needs
 * the layers' scratch_size(count, nt) floats. */
typedef struct pass_view {
    int first, count, nt;
    lane_cut cut;
    float *scratch;
} pass_view;

void net_forward_view(const net *n, const float *params, workspace *ws, const pass_view *v);
/* Backpropagates the view's samples (labels[0] is sample `first`'s), writing each lane's
 * gradient into dparams + lane * v->cut.grad_stride. */
void net_backward_view(const net *n, const float *params, workspace *ws, const pass_view *v,
                       const int *labels, float *dparams);

/* Class probabilities of sample s after net_forward. */
const float *net_probs(const net *n, const workspace *ws, int s);
/* The predicted class of sample s after net_forward: the most probable, the first of equals. */
int net_class(const net *n, const workspace *ws, int s);
/* The training loss of sample s after net_forward, for its label: the cross-entropy against the
 * smoothed target (the plain cross-entropy without label smoothing). */
float net_loss(const net *n, const workspace *ws, int s, int label);
/* The plain cross-entropy of sample s, -log p[label] (evaluation's loss). */
float net_xent(const net *n, const workspace *ws, int s, int label);
/* Backpropagates the summed training loss of the `count` samples, writing each lane's
 * gradient into dparams + lane * ws->cut.grad_stride (every parameter of every lane is written). */
void net_backward(const net *n, const float *params, workspace *ws, const int *labels, int count,
                  float *dparams, int nt);

#endif
