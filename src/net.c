/*
 * The network: layers from the config with shapes inferred front to back, the parameter arena
 * layout, initialisation in the report's draw order, and forward/backward over a pass of samples,
 * one layer at a time.
 */
#include "ompcnn/net.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"
#include "profile.h"

int net_build(net *n, const config *cfg, shape3 input, errbuf *err) {
    memset(n, 0, sizeof *n);
    n->input = input;
    n->n_layers = cfg->n_layers;
    n->label_smoothing = (float)cfg->label_smoothing;
    n->batch_wide = -1;
    n->layers = calloc((size_t)cfg->n_layers, sizeof *n->layers);
    if (!n->layers) return oomf(err, "out of memory");
    shape3 shape = input;
    n->max_act = n->total_act = shape_size(input);
    for (int i = 0; i < cfg->n_layers; i++) {
        layer *l = &n->layers[i];
        const layer_spec *spec = &cfg->layers[i];
        l->ops = spec->ops;
        l->settings = spec->settings;
        l->in = shape;
        errbuf inner;
        if (l->ops->shape(l->settings, shape, &l->out, spec->path, &inner)) {
            errorf(err, "%s: %s", cfg->file, inner.msg);
            net_free(n);
            return -1;
        }
        l->n_tensors = l->ops->params(l->settings, l->in, l->out, l->tensors);
        l->n_buffers = l->ops->buffers ? l->ops->buffers(l->settings, l->in, l->out,
                                                         l->tensors + l->n_tensors)
                                       : 0;
        l->param_off = n->n_params;
        l->buffer_off = n->n_buffers;
        for (int t = 0; t < l->n_tensors; t++) l->n_params += l->tensors[t].size;
        for (int t = 0; t < l->n_buffers; t++)
            l->n_buffer_floats += l->tensors[l->n_tensors + t].size;
        n->n_params += l->n_params;
        n->n_buffers += l->n_buffer_floats;
        if (l->ops->batch_wide && n->batch_wide < 0) n->batch_wide = i;
        shape = l->out;
        size_t size = shape_size(shape);
        if (size > n->max_act) n->max_act = size;
        n->total_act += size;
        if (n->n_params + n->n_buffers > ((size_t)1 << 31) || n->total_act > ((size_t)1 << 31)) {
            errorf(err, "%s: %s: the network is too large (%zu parameters, %zu activations)",
                 cfg->file, spec->path, n->n_params, n->total_act);
            net_free(n);
            return -1;
        }
    }
    /* A relu after a layer that can apply it runs in place, fused into that layer's forward:
     * one pass over the output fewer, while it is in cache, and one activation fewer. */
    for (int i = 0; i + 1 < n->n_layers; i++) {
        layer *l = &n->layers[i], *next = &n->layers[i + 1];
        if (l->ops->relu_epilogue && next->ops == &relu_ops) {
            l->relu_fused = next->in_place = 1;
            n->total_act -= shape_size(next->out);
        }
    }
    /* A layer that can pass its input gradient back through the relu before it does so while
     * the gradient is in cache (or as it writes it), and the relu's backward pass goes. Not
     * after a first-layer relu, whose backward has nothing to compute. */
    for (int i = 2; i < n->n_layers; i++)
        if (n->layers[i].ops->relu_din && n->layers[i - 1].ops == &relu_ops)
            n->layers[i].relu_din = 1;
    n->n_classes = (int)shape_size(shape);
    return 0;
}

size_t net_array_offset(const net *n, const layer *l, int t) {
    size_t off = t < l->n_tensors ? l->param_off : n->n_params + l->buffer_off;
    for (int k = t < l->n_tensors ? 0 : l->n_tensors; k < t; k++) off += l->tensors[k].size;
    return off;
}

void net_free(net *n) {
    free(n->layers);
    memset(n, 0, sizeof *n);
}

void net_describe(const net *n, char *buf, size_t size) {
    size_t used = (size_t)snprintf(buf, size, "%dx%dx%d", n->input.h, n->input.w, n->input.c);
    for (int i = 0; i < n->n_layers && used < size; i++) {
        const layer *l = &n->layers[i];
        char what[96];
        l->ops->describe(l->settings, what, sizeof what);
        int shape_changes = l->out.h != l->in.h || l->out.w != l->in.w || l->out.c != l->in.c;
        if (shape_changes && l->out.h * l->out.w > 1)
            used += (size_t)snprintf(buf + used, size - used, " -> %s -> %dx%dx%d", what, l->out.h,
                                     l->out.w, l->out.c);
        else
            used += (size_t)snprintf(buf + used, size - used, " -> %s", what);
    }
    if (used < size) snprintf(buf + used, size - used, " (%zu parameters)", n->n_params);
}

void net_init_params(const net *n, float *params, init_kind kind, uint32_t seed) {
    mt19937 rng;
    mt_seed(&rng, seed);
    memset(params, 0, net_state_size(n) * sizeof *params);
    for (int i = 0; i < n->n_layers; i++) {
        const layer *l = &n->layers[i];
        if (l->ops->init) l->ops->init(l, params + l->param_off, kind, &rng);
        if (l->ops->init_buffers)
            l->ops->init_buffers(l, params + n->n_params + l->buffer_off);
    }
}

size_t net_scratch_size(const net *n, int count, int nt) {
    size_t scratch = 0;
    for (int i = 0; i < n->n_layers; i++) {
        const layer *l = &n->layers[i];
        size_t need = l->ops->scratch_size ? l->ops->scratch_size(l, count, nt) : 0;
        if (need > scratch) scratch = need;
    }
    return scratch;
}

double workspace_bytes(const net *n, int max_n, int max_train_n, int max_threads) {
    if (max_threads < 1) max_threads = 1;
    double floats = (double)n->total_act * max_n + 2.0 * n->max_act * max_train_n +
                    (double)net_scratch_size(n, max_train_n, max_threads) +
                    (double)shape_size(n->input) * max_threads;
    for (int i = 0; i < n->n_layers; i++) {
        const layer *l = &n->layers[i];
        floats += (double)(l->ops->saved_size ? l->ops->saved_size(l) : 0) * max_train_n;
        floats += (double)(l->ops->pass_saved_size ? l->ops->pass_saved_size(l) : 0);
    }
    return 4.0 * floats + 8.0 * max_n;
}

int workspace_alloc(workspace *ws, const net *n, int max_n, int max_train_n, int max_threads,
                    errbuf *err) {
    memset(ws, 0, sizeof *ws);
    if (max_threads < 1) max_threads = 1;
    ws->max_n = max_n;
    ws->max_train_n = max_train_n;
    ws->max_threads = max_threads;
    ws->n_layers = n->n_layers;
    ws->acts = floats_alloc(n->total_act * (size_t)max_n);
    ws->offset = malloc((size_t)(n->n_layers + 1) * sizeof *ws->offset);
    ws->delta[0] = floats_alloc(n->max_act * (size_t)max_train_n);
    ws->delta[1] = floats_alloc(n->max_act * (size_t)max_train_n);
    ws->scratch = floats_alloc(net_scratch_size(n, max_train_n, max_threads));
    ws->saved = calloc((size_t)n->n_layers, sizeof *ws->saved);
    ws->pass_saved = calloc((size_t)n->n_layers, sizeof *ws->pass_saved);
    ws->sample_keys = calloc((size_t)max_n, sizeof *ws->sample_keys);
    ws->scratch_image = floats_alloc(shape_size(n->input) * (size_t)max_threads);
    int saved_ok = ws->saved != NULL && ws->pass_saved != NULL;
    for (int i = 0; saved_ok && i < n->n_layers; i++) {
        const layer *l = &n->layers[i];
        size_t need = l->ops->saved_size ? l->ops->saved_size(l) : 0;
        if (need) saved_ok = (ws->saved[i] = floats_alloc(need * (size_t)max_train_n)) != NULL;
        need = l->ops->pass_saved_size ? l->ops->pass_saved_size(l) : 0;
        if (need && saved_ok) saved_ok = (ws->pass_saved[i] = floats_alloc(need)) != NULL;
    }
    if (!ws->acts || !ws->offset || !ws->delta[0] || !ws->delta[1] || !ws->scratch || !saved_ok ||
        !ws->sample_keys || !ws->scratch_image) {
        workspace_free(ws);
        return oomf(err, "out of memory for the activations of %d samples", max_n);
    }
    size_t off = shape_size(n->input) * (size_t)max_n;
    ws->offset[0] = 0;
    for (int i = 0; i < n->n_layers; i++) {
        if (n->layers[i].in_place) {
            ws->offset[i + 1] = ws->offset[i];
            continue;
        }
        ws->offset[i + 1] = off;
        off += shape_size(n->layers[i].out) * (size_t)max_n;
    }
    return 0;
}

void workspace_free(workspace *ws) {
    aligned_free(ws->acts);
    free(ws->offset);
    aligned_free(ws->delta[0]);
    aligned_free(ws->delta[1]);
    aligned_free(ws->scratch);
    if (ws->saved)
        for (int i = 0; i < ws->n_layers; i++) aligned_free(ws->saved[i]);
    if (ws->pass_saved)
        for (int i = 0; i < ws->n_layers; i++) aligned_free(ws->pass_saved[i]);
    free(ws->saved);
    free(ws->pass_saved);
    free(ws->sample_keys);
    aligned_free(ws->scratch_image);
    memset(ws, 0, sizeof *ws);
}

float *workspace_input(const workspace *ws) {
    return ws->acts;
}

void net_forward(const net *n, const float *params, workspace *ws, int count, int nt) {
    const pass_view v = {0, count, nt, ws->cut, ws->scratch};
    net_forward_view(n, params, ws, &v);
}

/* A layer's buffers in an arena (NULL: none). A training forward writes them: the arena belongs
 * to the caller, which passes it as const only because the parameters are read-only here. */
static float *layer_buffers(const net *n, const layer *l, const float *params) {
    return l->n_buffers ? (float *)params + n->n_params + l->buffer_off : NULL;
}

void net_forward_view(const net *n, const float *params, workspace *ws, const pass_view *v) {
    const int nt = v->nt < ws->max_threads ? v->nt : ws->max_threads;
    const size_t first = (size_t)v->first;
    for (int i = 0; i < n->n_layers; i++) {
        const layer *l = &n->layers[i];
        if (l->in_place) continue; /* a relu that the layer before applied */
        const size_t kept = l->ops->saved_size ? l->ops->saved_size(l) : 0;
        run_ctx run = {v->count, nt, v->scratch, ws->saved[i] + first * kept, v->cut,
                       ws->training, ws->sample_keys + first, layer_buffers(n, l, params),
                       ws->pass_saved[i], ws->batch, l->relu_fused, 0};
        const double start = profile_on && ws->training ? omp_get_wtime() : 0.0;
        l->ops->forward(l, params + l->param_off,
                        ws->acts + ws->offset[i] + first * shape_size(l->in),
                        ws->acts + ws->offset[i + 1] + first * shape_size(l->out), &run);
        if (profile_on && ws->training)
            profile_layer_add(i, PROFILE_FORWARD, omp_get_wtime() - start);
    }
}

const float *net_probs(const net *n, const workspace *ws, int s) {
    return ws->acts + ws->offset[n->n_layers] + (size_t)s * n->n_classes;
}

int net_class(const net *n, const workspace *ws, int s) {
    const float *p = net_probs(n, ws, s);
    int best = 0;
    for (int c = 1; c < n->n_classes; c++)
        if (p[c] > p[best]) best = c;
    return best;
}

float net_loss(const net *n, const workspace *ws, int s, int label) {
    /* From the softmax's input (the logits): the loss stays finite when p underflows. */
    return softmax_xent_smoothed(ws->acts + ws->offset[n->n_layers - 1] +
                                     (size_t)s * n->n_classes,
                                 n->n_classes, label, n->label_smoothing);
}

float net_xent(const net *n, const workspace *ws, int s, int label) {
    return softmax_xent_loss(ws->acts + ws->offset[n->n_layers - 1] + (size_t)s * n->n_classes,
                             n->n_classes, label);
}

void net_backward(const net *n, const float *params, workspace *ws, const int *labels, int count,
                  float *dparams, int nt) {
    const pass_view v = {0, count, nt, ws->cut, ws->scratch};
    net_backward_view(n, params, ws, &v, labels, dparams);
}

void net_backward_view(const net *n, const float *params, workspace *ws, const pass_view *v,
                       const int *labels, float *dparams) {
    const int nt = v->nt < ws->max_threads ? v->nt : ws->max_threads;
    const size_t first = (size_t)v->first;
    /* Softmax with cross-entropy: d loss / d logits = p - target, per sample, the target
     * one-hot(label), or (1 - e) one-hot + e / classes with label smoothing e. */
    float *delta[2] = {ws->delta[0] + first * n->max_act, ws->delta[1] + first * n->max_act};
    const float e = n->label_smoothing, spread = e / (float)n->n_classes;
    for (int s = 0; s < v->count; s++) {
        const float *probs = net_probs(n, ws, v->first + s);
        float *d = delta[0] + (size_t)s * n->n_classes;
        for (int k = 0; k < n->n_classes; k++)
            d[k] = probs[k] - ((k == labels[s] ? 1.0f - e : 0.0f) + spread);
    }
    int cur = 0;
    for (int i = n->n_layers - 2; i >= 0; i--) {
        const layer *l = &n->layers[i];
        /* A relu whose gradient the layer after it or the layer before it takes has no
         * backward of its own: the layer after it takes it where it can (its input is the
         * relu's output, in cache or read anyway), else a layer before it that fused it. */
        const int after = n->layers[i + 1].relu_din;
        if (after || (l->in_place && n->layers[i - 1].ops->relu_backward)) continue;
        const int relu = l->relu_fused && l->ops->relu_backward &&
                         !(i + 2 < n->n_layers && n->layers[i + 2].relu_din);
        const size_t kept = l->ops->saved_size ? l->ops->saved_size(l) : 0;
        run_ctx run = {v->count, nt, v->scratch, ws->saved[i] + first * kept, v->cut,
                       ws->training, ws->sample_keys + first, layer_buffers(n, l, params),
                       ws->pass_saved[i], ws->batch, relu, l->relu_din};
        /* The first layer's input gradient is never used. */
        float *din = i > 0 ? delta[1 - cur] : NULL;
        const double start = profile_on ? omp_get_wtime() : 0.0;
        if (profile_on) profile_set_layer(i);
        l->ops->backward(l, params + l->param_off,
                         ws->acts + ws->offset[i] + first * shape_size(l->in),
                         ws->acts + ws->offset[i + 1] + first * shape_size(l->out), delta[cur],
                         din, dparams + l->param_off, &run);
        if (profile_on) profile_layer_add(i, PROFILE_BACKWARD, omp_get_wtime() - start);
        cur = 1 - cur;
    }
}
