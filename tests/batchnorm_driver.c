/*
 * Runs the batchnorm layer once, for tests/check_batchnorm_torch.py: reads a pass from a file,
 * runs forward (training or evaluation) and, in training, backward, and writes the results.
 *
 * Input, little-endian: int32 h, w, c, n, lanes (0: one lane), training; float64 momentum, eps;
 * float32 x[n][h][w][c], dy[n][h][w][c], weight[c], bias[c], running_mean[c], running_var[c].
 * Output: float32 y, then in training dx, dweight and dbias (the lanes' gradients added in lane
 * order), and the running mean and variance after the pass.
 * Usage: batchnorm_driver IN OUT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ompcnn/layer.h"

static void read_all(FILE *f, void *p, size_t size, size_t n) {
    if (fread(p, size, n, f) != n) {
        fprintf(stderr, "batchnorm_driver: short input\n");
        exit(2);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: batchnorm_driver IN OUT\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (!in) return perror(argv[1]), 2;
    int32_t head[6];
    double momentum, eps;
    read_all(in, head, sizeof *head, 6);
    read_all(in, &momentum, sizeof momentum, 1);
    read_all(in, &eps, sizeof eps, 1);
    const int h = head[0], w = head[1], c = head[2], n = head[3], n_lanes = head[4];
    const int training = head[5];
    const size_t size = (size_t)h * w * c, total = size * (size_t)n;
    char text[128];
    snprintf(text, sizeof text, "{\"type\":\"batchnorm\",\"momentum\":%.17g,\"eps\":%.17g}", momentum,
             eps);
    cJSON *json = cJSON_Parse(text);
    const layer_ops *ops = layer_find("batchnorm");
    void *settings = calloc(1, ops->settings_size);
    errbuf err;
    if (!json || !ops || !settings || ops->parse(settings, json, "batchnorm", &err)) {
        fprintf(stderr, "batchnorm_driver: cannot make the layer\n");
        return 2;
    }
    layer l = {.ops = ops, .settings = settings, .in = {h, w, c}, .out = {h, w, c}};
    l.n_tensors = ops->params(settings, l.in, l.out, l.tensors);
    l.n_params = 2 * (size_t)c;
    l.n_buffers = ops->buffers(settings, l.in, l.out, l.tensors + l.n_tensors);
    const int lanes = n_lanes > 0 ? n_lanes : 1;
    float *x = floats_alloc(total), *dy = floats_alloc(total), *y = floats_alloc(total);
    float *dx = floats_alloc(total), *params = floats_alloc(2 * (size_t)c);
    float *buffers = floats_alloc(2 * (size_t)c), *dparams = floats_alloc(2 * (size_t)c * lanes);
    float *saved = floats_alloc(total), *pass_saved = floats_alloc(ops->pass_saved_size(&l));
    float *scratch = floats_alloc(ops->scratch_size(&l, n, 1));
    int *start = malloc(((size_t)lanes + 1) * sizeof *start);
    if (!x || !dy || !y || !dx || !params || !buffers || !dparams || !saved || !pass_saved ||
        !scratch || !start) {
        fprintf(stderr, "batchnorm_driver: out of memory\n");
        return 2;
    }
    read_all(in, x, sizeof *x, total);
    read_all(in, dy, sizeof *dy, total);
    read_all(in, params, sizeof *params, 2 * (size_t)c);
    read_all(in, buffers, sizeof *buffers, 2 * (size_t)c);
    fclose(in);
    for (int k = 0; k <= lanes; k++) start[k] = (int)((long)k * n / lanes);
    run_ctx run = {.n = n, .nt = 1, .scratch = scratch, .saved = saved, .training = training,
                   .buffers = buffers, .pass_saved = pass_saved,
                   .cut = {n_lanes, start, 2 * (size_t)c}};
    ops->forward(&l, params, x, y, &run);
    FILE *out = fopen(argv[2], "wb");
    if (!out) return perror(argv[2]), 2;
    fwrite(y, sizeof *y, total, out);
    if (training) {
        ops->backward(&l, params, x, y, dy, dx, dparams, &run);
        for (int k = 1; k < lanes; k++)
            for (size_t i = 0; i < 2 * (size_t)c; i++) dparams[i] += dparams[k * 2 * (size_t)c + i];
        fwrite(dx, sizeof *dx, total, out);
        fwrite(dparams, sizeof *dparams, 2 * (size_t)c, out);
        fwrite(buffers, sizeof *buffers, 2 * (size_t)c, out);
    }
    int rc = 0;
    if (fclose(out)) perror(argv[2]), rc = 2;
    aligned_free(x), aligned_free(dy), aligned_free(y), aligned_free(dx), aligned_free(params);
    aligned_free(buffers), aligned_free(dparams), aligned_free(saved), aligned_free(pass_saved);
    aligned_free(scratch);
    free(start);
    free(settings);
    cJSON_Delete(json);
    return rc;
}
