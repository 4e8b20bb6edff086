/*
 * A layer is a small table of functions (ops) plus a small struct of its own settings. Each kind
 * lives in its own file, src/layer_<kind>.c, with everything about it together: config keys,
 * shape inference, parameter tensors, initialisation, forward and backward.
 *
 * Activations are one sample, channels-last (shape3). Parameters and their gradients are slices of
 * the net's arenas. backward() *writes* the parameter gradient of each lane of samples into dparams
 * (the lane's samples summed in order) and the input gradient into din (din may be NULL for the first
 * layer, which needs none). `nt` is the number of OpenMP threads the kernel may use; every output
 * element is computed by one thread in a fixed order, so results do not depend on nt.
 */
#ifndef OMPCNN_LAYER_H
#define OMPCNN_LAYER_H

#include <cjson/cJSON.h>

#include "ompcnn/common.h"
#include "ompcnn/rng.h"

typedef enum init_kind {
    INIT_REPORT, /* randn / fan_in, drawn in order from numpy's legacy generator (the report) */
    INIT_HE,     /* randn * sqrt(2 / fan_in) */
    INIT_XAVIER  /* uniform(-a, a), a = sqrt(6 / (fan_in + fan_out)) */
} init_kind;
/* Their names in configs, by init_kind, NULL-terminated. */
extern const char *const init_names[];

/* One array of a layer, a trained parameter or a buffer: its name in saved files, its shape, and
 * its element count. */
typedef struct tensor_desc {
    const char *name;
    int ndim;
    int dims[4];
    size_t size;
} tensor_desc;

typedef struct layer layer;
struct layer_geometry;

/* How a pass's n samples are cut into gradient lanes: lane l holds samples [start[l],
 * start[l + 1]), and backward writes lane l's parameter gradient into dparams + l * grad_stride,
 * the lane's samples summed in order. lanes == 0 means one lane of all n samples. Layers whose
 * per-sample results could depend on how many samples share a call (dense: one sample takes the
 * thin GEMM path) also run forward lane by lane, so a sample's result depends on its lane only. */
typedef struct lane_cut {
    int lanes;
    const int *start;
    size_t grad_stride;
} lane_cut;

static inline int cut_lanes(const lane_cut *c) {
    return c->lanes > 0 ? c->lanes : 1;
}
/* First sample of lane l (and, for l = lanes, one past the last) of a pass of n samples. */
static inline int cut_start(const lane_cut *c, int l, int n) {
    return c->lanes > 0 ? c->start[l] : (l == 0 ? 0 : n);
}

/* How one layer call runs: on n samples stored one after another, cut into lanes, with up to nt
 * OpenMP threads, a scratch buffer of at least scratch_size(n, nt) floats, and the layer's own
 * buffer of n * saved_size() floats that a training forward fills and backward reads (forward
 * with training 0 leaves it alone). */
typedef struct run_ctx {
    int n;
    int nt;
    float *scratch;
    float *saved;
    lane_cut cut;
    /* For layers that draw random numbers (dropout): whether this is a training pass, and the
     * key of each sample's stream, so draws depend on (seed, epoch, sample) and nothing else. */
    int training;
    const uint64_t *sample_keys;
    /* The layer's buffers (NULL: none), which a training forward may update (batchnorm's
     * running statistics), and pass_saved_size() floats that a training forward fills once for
     * the whole pass and backward reads. */
    float *buffers;
    float *pass_saved;
    /* For batch-wide layers: how lane sums meet across the whole batch (NULL: the pass is the
     * whole batch, its lanes summed in order). */
    const struct batch_sum *batch;
    /* Nonzero: forward also applies relu to its output, for a relu layer that follows it and
     * then runs in place without a pass of its own (layer_ops.relu_epilogue); backward, for a
     * layer with relu_backward, gets the gradient of that relu's output and passes it back
     * through the relu itself (where its own output, the relu's, is positive). */
    int relu;
    /* Nonzero: backward also passes its input gradient back through the relu layer before it,
     * whose output is this layer's input (layer.relu_din): dx stays where the input is
     * positive and is 0 elsewhere, as that relu's backward would make it. */
    int relu_din;
} run_ctx;

/* Sums over the whole batch, for layers whose training arithmetic spans it (batchnorm): `lanes`
 * holds `width` doubles for each lane of this pass, one lane after another; add() writes into
 * total[width] the sum over every lane of the batch, other processes' lanes included, added in
 * lane order, so the total depends on the lanes and never on the threads or processes. */
typedef struct batch_sum {
    void (*add)(void *ctx, const double *lanes, int n_lanes, size_t width, double *total);
    void *ctx;
} batch_sum;

/* The sum of run->cut's lanes of `width` doubles each into total: through run->batch when it is
 * set, else this pass's lanes added in lane order. */
void batch_sum_lanes(const run_ctx *run, const double *lanes, size_t width, double *total);

typedef struct layer_ops {
    const char *type;          /* the layer's "type" in the config */
    size_t settings_size;      /* bytes of its settings struct */
    const char *const *keys;   /* NULL-terminated list of the keys it accepts besides "type" */
    /* Reads the layer's keys from obj, which names only known keys. path is e.g. "network[2]". */
    int (*parse)(void *settings, const cJSON *obj, const char *path, errbuf *err);
    /* Output shape for input shape `in`, or an error naming path when the layer does not fit. */
    int (*shape)(const void *settings, shape3 in, shape3 *out, const char *path, errbuf *err);
    /* Fills desc with the layer's parameter tensors (at most 2) and returns how many. */
    int (*params)(const void *settings, shape3 in, shape3 out, tensor_desc desc[2]);
    /* Fills desc with the layer's buffers (at most 2): persistent arrays that are saved with the
     * parameters but never trained (no gradient, no weight decay), such as running statistics;
     * returns how many (NULL: none). */
    int (*buffers)(const void *settings, shape3 in, shape3 out, tensor_desc desc[2]);
    /* Sets the buffers' initial values (NULL for layers without buffers). */
    void (*init_buffers)(const layer *l, float *buffers);
    /* Floats a training forward keeps once per pass for backward (NULL: none). */
    size_t (*pass_saved_size)(const layer *l);
    /* Nonzero when a training pass must hold the whole batch, lane by lane, because every
     * sample's result depends on the others (batchnorm's batch statistics). */
    int batch_wide;
    /* Floats of scratch one call with up to max_threads threads needs, backward on up to max_n
     * samples included (forward needs no more for more samples) (NULL: none). */
    size_t (*scratch_size)(const layer *l, int max_n, int max_threads);
    /* Floats per sample that forward keeps for backward (NULL: none). */
    size_t (*saved_size)(const layer *l);
    /* Draws the initial parameters (NULL for layers without parameters). */
    void (*init)(const layer *l, float *params, init_kind kind, mt19937 *rng);
    void (*forward)(const layer *l, const float *params, const float *in, float *out,
                    const run_ctx *run);
    void (*backward)(const layer *l, const float *params, const float *in, const float *out,
                     const float *dout, float *din, float *dparams, const run_ctx *run);
    /* A short description for the run's header line, e.g. "conv2d 8x3x3". */
    void (*describe)(const void *settings, char *buf, size_t size);
    /* The settings an exporter needs (NULL for layers without any): window, stride, padding,
     * bias. */
    void (*geometry)(const void *settings, struct layer_geometry *g);
    /* Nonzero when forward can apply relu to its output itself, sample by sample while the
     * output is in cache (run_ctx.relu), as conv2d, dense and batchnorm can; relu_backward: when
     * backward can also take the relu's gradient for it (batchnorm, whose passes read the
     * gradient elementwise; conv2d and dense hand it to a GEMM). relu_din: when backward can
     * pass its input gradient back through a relu before it (run_ctx.relu_din) while that
     * gradient is in cache, or as it writes it (conv2d and maxpool). */
    int relu_epilogue, relu_backward, relu_din;
} layer_ops;

/* What a layer's settings say about its arithmetic, for exporters: conv2d (kernel, stride,
 * padding, bias), maxpool and avgpool (kernel = the window's size, stride), dense (bias),
 * batchnorm (eps, momentum). */
typedef struct layer_geometry {
    int kernel, stride, padding, bias;
    double eps, momentum;
} layer_geometry;

struct layer {
    const layer_ops *ops;
    const void *settings;
    shape3 in, out;
    int n_tensors;         /* trained tensors, tensors[0 .. n_tensors) */
    int n_buffers;         /* buffers, tensors[n_tensors .. n_tensors + n_buffers) */
    tensor_desc tensors[4];
    size_t n_params;       /* total elements of its trained tensors */
    size_t param_off;      /* where its parameters start in the net's parameter arena */
    size_t n_buffer_floats; /* total elements of its buffers */
    size_t buffer_off;     /* where its buffers start, counted from the end of the parameters */
    /* A layer with a relu_epilogue followed by a relu layer applies the relu (relu_fused); the
     * relu layer then has no forward of its own, and its output is its input (in_place). The
     * results are the same bits as the two passes. A layer with relu_din after a relu layer
     * (not the network's first) passes its input gradient back through that relu
     * (layer.relu_din); the relu then has no backward of its own. */
    int relu_fused, in_place, relu_din;
};

/* The layer kinds, one per source file. */
extern const layer_ops conv2d_ops, maxpool_ops, avgpool_ops, globalavgpool_ops, dense_ops,
    dropout_ops, sigmoid_ops, relu_ops, tanh_ops, softmax_ops, batchnorm_ops;

/* The ops for a config "type" name, or NULL. */
const layer_ops *layer_find(const char *type);
/* All type names, NULL-terminated, and the same as a comma-separated list for messages. */
const char *const *layer_type_names(void);
const char *layer_type_list(void);

/* A pooling window: "size" (default 2) and "stride" (default the size), and the output shape
 * it gives over `in`; for maxpool and avgpool alike. */
int pool_window_parse(const cJSON *obj, const char *path, int *size, int *stride, errbuf *err);
int pool_window_shape(int size, int stride, shape3 in, shape3 *out, const char *path,
                      errbuf *err);

/* For activation layers: the output has the input's shape, and there are no parameters. */
int layer_same_shape(const void *settings, shape3 in, shape3 *out, const char *path, errbuf *err);
int layer_no_params(const void *settings, shape3 in, shape3 out, tensor_desc desc[2]);

/* batchnorm's evaluation as y = x * scale + shift per channel, from its parameters and buffers
 * (for exporters; the layer computes the same floats). */
void batchnorm_fold(const layer *l, const float *params, const float *buffers, float *scale,
                    float *shift);

/* Fills n weights drawn for `kind` with the given fans, in order, from rng. */
void init_weights(float *w, size_t n, int fan_in, int fan_out, init_kind kind, mt19937 *rng);

#endif
