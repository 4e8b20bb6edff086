/*
 * What the layer kinds share: the registry that maps a config "type" to its ops, the pooling
 * window's keys, and weight initialisation.
 */
#include "ompcnn/layer.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

const char *const init_names[] = {"report", "he", "xavier", NULL};

/* The one list of layer kinds: the config's type names, the messages' lists and the "did you
 * mean" hints all come from it. */
static const layer_ops *const all_ops[] = {
    &conv2d_ops, &maxpool_ops, &avgpool_ops, &globalavgpool_ops, &dense_ops, &batchnorm_ops,
    &dropout_ops, &sigmoid_ops, &relu_ops, &tanh_ops, &softmax_ops};
enum { N_KINDS = sizeof all_ops / sizeof all_ops[0] };

const layer_ops *layer_find(const char *type) {
    for (size_t i = 0; i < N_KINDS; i++)
        if (strcmp(all_ops[i]->type, type) == 0) return all_ops[i];
    return NULL;
}

const char *const *layer_type_names(void) {
    static const char *names[N_KINDS + 1];
    if (!names[0])
        for (size_t i = 0; i < N_KINDS; i++) names[i] = all_ops[i]->type;
    return names;
}

const char *layer_type_list(void) {
    static char list[256];
    if (!list[0])
        for (size_t i = 0, len = 0; i < N_KINDS; i++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                    all_ops[i]->type);
    return list;
}

void batch_sum_lanes(const run_ctx *run, const double *lanes, size_t width, double *total) {
    const int n_lanes = cut_lanes(&run->cut);
    if (run->batch) {
        run->batch->add(run->batch->ctx, lanes, n_lanes, width, total);
        return;
    }
    sum_rows_in_order(lanes, n_lanes, width, total);
}

void init_weights(float *w, size_t n, int fan_in, int fan_out, init_kind kind, mt19937 *rng) {
    switch (kind) {
    case INIT_REPORT:
        /* The report: np.random.randn(shape) / fan_in, divided in double, stored as float. */
        for (size_t i = 0; i < n; i++) w[i] = (float)(mt_gauss(rng) / fan_in);
        break;
    case INIT_HE: {
        double scale = sqrt(2.0 / fan_in);
        for (size_t i = 0; i < n; i++) w[i] = (float)(mt_gauss(rng) * scale);
        break;
    }
    case INIT_XAVIER: {
        double a = sqrt(6.0 / (fan_in + fan_out));
        for (size_t i = 0; i < n; i++) w[i] = (float)((2.0 * mt_double(rng) - 1.0) * a);
        break;
    }
    }
}

int layer_same_shape(const void *settings, shape3 in, shape3 *out, const char *path, errbuf *err) {
    (void)settings, (void)path, (void)err;
    *out = in;
    return 0;
}

int layer_no_params(const void *settings, shape3 in, shape3 out, tensor_desc desc[2]) {
    (void)settings, (void)in, (void)out, (void)desc;
    return 0;
}

int pool_window_parse(const cJSON *obj, const char *path, int *size, int *stride, errbuf *err) {
    if (json_get_int(obj, "size", 2, 1, 1024, path, size, err) ||
        json_get_int(obj, "stride", *size, 1, 1024, path, stride, err))
        return -1;
    return 0;
}

int pool_window_shape(int size, int stride, shape3 in, shape3 *out, const char *path,
                      errbuf *err) {
    if (size > in.h || size > in.w)
        return errorf(err, "%s.size: %d is larger than the %dx%d input", path, size, in.h, in.w);
    *out = (shape3){(in.h - size) / stride + 1, (in.w - size) / stride + 1, in.c};
    return 0;
}
