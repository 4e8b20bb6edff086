/*
 * dropout: in training, each element is kept with probability 1 - rate and scaled by
 * 1 / (1 - rate), or zeroed; in evaluation it passes through. The keep/drop draw of element i of
 * a sample comes from a counter-based stream keyed by (seed, epoch, sample) (run->sample_keys),
 * so it depends on nothing else: not the thread, not the lane, not the batch.
 * Backward: dx = dy * mask, with the mask (0 or 1 / (1 - rate)) kept from forward.
 */
#include <stdio.h>
#include <string.h>

#include "ompcnn/layer.h"
#include "parallel.h"
#include "json.h"

typedef struct dropout_settings {
    double rate;
} dropout_settings;

static const char *const dropout_keys[] = {"rate", NULL};

static int dropout_parse(void *settings, const cJSON *obj, const char *path, errbuf *err) {
    dropout_settings *s = settings;
    if (!cJSON_GetObjectItemCaseSensitive(obj, "rate"))
        return errorf(err, "%s.rate: missing, expected a number from 0 to below 1", path);
    if (json_get_double(obj, "rate", 0.0, 0.0, 0.999, 0, path, &s->rate, err)) return -1;
    return 0;
}

static size_t dropout_saved_size(const layer *l) {
    return shape_size(l->in);
}

typedef struct dropout_args {
    const run_ctx *run;
    size_t size; /* floats per sample */
    float scale;
    uint64_t threshold;
    const float *x; /* forward: the input; backward: the output gradient */
    float *y;       /* forward: the output; backward: the input gradient */
} dropout_args;

/* Samples [begin, end): each draws its mask from its own stream. */
static int dropout_forward_samples(void *ctx, long begin, long end, int worker) {
    const dropout_args *a = ctx;
    const size_t size = a->size;
    (void)worker;
    for (long k = begin; k < end; k++) {
        const uint64_t key = mix64(a->run->sample_keys[k] ^ 0x44524f50ull);
        float *mask = a->run->saved + (size_t)k * size;
        const float *x = a->x + (size_t)k * size;
        float *y = a->y + (size_t)k * size;
        for (size_t i = 0; i < size; i++) {
            uint64_t draw = mix64(key + i) >> 40;
            mask[i] = draw >= a->threshold ? a->scale : 0.0f;
            y[i] = x[i] * mask[i];
        }
    }
    return 0;
}

static int dropout_backward_block(void *ctx, long begin, long end, int worker) {
    const dropout_args *a = ctx;
    const float *mask = a->run->saved;
    (void)worker;
    for (long i = begin; i < end; i++) a->y[i] = a->x[i] * mask[i];
    return 0;
}

static void dropout_layer_forward(const layer *l, const float *params, const float *in, float *out,
                                  const run_ctx *run) {
    const dropout_settings *s = l->settings;
    const size_t size = shape_size(l->in);
    (void)params;
    if (!run->training || s->rate == 0.0) {
        memcpy(out, in, (size_t)run->n * size * sizeof *out);
        if (run->training && run->saved) /* the mask of rate 0, for backward */
            for (size_t i = 0; i < (size_t)run->n * size; i++) run->saved[i] = 1.0f;
        return;
    }
    /* Keep when the element's 24-bit draw is at or above rate * 2^24. */
    dropout_args a = {run, size, (float)(1.0 / (1.0 - s->rate)),
                      (uint64_t)(s->rate * 16777216.0), in, out};
    /* A hashed draw per element: about sixteen times an elementwise loop's cost. */
    par_blocks(run->nt, (size_t)run->n * size * 16 * PAR_ELEMENT_COST, run->n,
               dropout_forward_samples, &a);
}

static void dropout_layer_backward(const layer *l, const float *params, const float *in,
                                   const float *out, const float *dout, float *din, float *dparams,
                                   const run_ctx *run) {
    (void)params, (void)in, (void)out, (void)dparams;
    if (!din) return;
    const long n = (long)((size_t)run->n * shape_size(l->in));
    dropout_args a = {run, 0, 0.0f, 0, dout, din};
    par_blocks(run->nt, (size_t)n * PAR_ELEMENT_COST, n, dropout_backward_block, &a);
}

static void dropout_describe(const void *settings, char *buf, size_t size) {
    const dropout_settings *s = settings;
    snprintf(buf, size, "dropout %g", s->rate);
}

const layer_ops dropout_ops = {
    .type = "dropout",
    .settings_size = sizeof(dropout_settings),
    .keys = dropout_keys,
    .parse = dropout_parse,
    .shape = layer_same_shape,
    .params = layer_no_params,
    .saved_size = dropout_saved_size,
    .init = NULL,
    .forward = dropout_layer_forward,
    .backward = dropout_layer_backward,
    .describe = dropout_describe,
};
