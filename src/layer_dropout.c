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

static void dropout_forward(const layer *l, const float *params, const float *in, float *out,
                            const run_ctx *run) {
    const dropout_settings *s = l->settings;
    const size_t size = shape_size(l->in);
    (void)params;
    if (!run->training || s->rate == 0.0) {
        memcpy(out, in, (size_t)run->n * size * sizeof *out);
        if (run->saved)
            for (size_t i = 0; i < (size_t)run->n * size; i++) run->saved[i] = 1.0f;
        return;
    }
    const float scale = (float)(1.0 / (1.0 - s->rate));
    /* Keep when the element's 24-bit draw is at or above rate * 2^24. */
    const uint64_t threshold = (uint64_t)(s->rate * 16777216.0);
    for (int k = 0; k < run->n; k++) {
        const uint64_t key = mix64(run->sample_keys[k] ^ 0x44524f50ull);
        float *mask = run->saved + (size_t)k * size;
        for (size_t i = 0; i < size; i++) {
            uint64_t draw = mix64(key + i) >> 40;
            mask[i] = draw >= threshold ? scale : 0.0f;
            out[(size_t)k * size + i] = in[(size_t)k * size + i] * mask[i];
        }
    }
}

static void dropout_backward(const layer *l, const float *params, const float *in,
                             const float *out, const float *dout, float *din, float *dparams,
                             const run_ctx *run) {
    (void)params, (void)in, (void)out, (void)dparams;
    if (!din) return;
    const size_t n = (size_t)run->n * shape_size(l->in);
    for (size_t i = 0; i < n; i++) din[i] = dout[i] * run->saved[i];
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
    .forward = dropout_forward,
    .backward = dropout_backward,
    .describe = dropout_describe,
};
