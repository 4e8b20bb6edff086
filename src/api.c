/*
 * The library API (include/ompcnn/ompcnn.h): a saved net, opened once, classifying images one
 * at a time. Built on the same pieces as `trainer predict`.
 */
#include "ompcnn/ompcnn.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ompcnn/data.h"
#include "ompcnn/npz.h"
#include "ompcnn/pgm.h"
#include "ompcnn/png.h"
#include "ompcnn/run.h"

struct ompcnn_net {
    config cfg;
    net n;
    workspace ws;
    float *params;
    char **names;
    int threads;
};

static void set_error(char *error, size_t size, const char *msg) {
    if (error && size) snprintf(error, size, "%s", msg);
}

void ompcnn_close(ompcnn_net *net) {
    if (!net) return;
    workspace_free(&net->ws);
    aligned_free(net->params);
    run_free_names(net->names, net->n.n_classes);
    net_free(&net->n);
    config_free(&net->cfg);
    free(net);
}

ompcnn_net *ompcnn_open(const char *npz_path, char *error, size_t error_size) {
    errbuf err = {"", 0};
    ompcnn_net *net = calloc(1, sizeof *net);
    if (!net) {
        set_error(error, error_size, "out of memory");
        return NULL;
    }
    shape3 shape;
    int failed = run_model_config(&net->cfg, NULL, npz_path, NULL, 0, &err) ||
                 run_model_shape(npz_path, &net->cfg, &shape, &err) ||
                 net_build(&net->n, &net->cfg, shape, &err);
    if (!failed) {
        net->threads = omp_get_max_threads();
        net->params = floats_alloc(net_state_size(&net->n));
        failed = !net->params ? oomf(&err, "out of memory")
                              : workspace_alloc(&net->ws, &net->n, 1, 0, net->threads, &err) ||
                                    params_load(npz_path, &net->n, net->params, &err);
    }
    if (failed) {
        set_error(error, error_size, err.msg);
        ompcnn_close(net);
        return NULL;
    }
    net->names = run_model_class_names(npz_path, net->n.n_classes);
    return net;
}

void ompcnn_input_shape(const ompcnn_net *net, int *height, int *width, int *channels) {
    *height = net->n.input.h, *width = net->n.input.w, *channels = net->n.input.c;
}

int ompcnn_classes(const ompcnn_net *net) {
    return net->n.n_classes;
}

const char *ompcnn_class_name(const ompcnn_net *net, int k) {
    return net->names && k >= 0 && k < net->n.n_classes ? net->names[k] : NULL;
}

int ompcnn_classify(ompcnn_net *net, const float *pixels, float *probs) {
    const config *cfg = &net->cfg;
    const int c = net->n.input.c, n_norm = cfg->n_normalize;
    const size_t size = shape_size(net->n.input);
    float *in = workspace_input(&net->ws);
    /* As training: pixel / 255 in float, then (x - mean) / std per channel. */
    for (size_t i = 0; i < size; i++) {
        float x = pixels[i] / 255.0f;
        if (n_norm) {
            const int k = n_norm > 1 ? (int)(i % (size_t)c) : 0;
            x = (x - cfg->normalize_mean[k]) / cfg->normalize_std[k];
        }
        in[i] = x;
    }
    net->ws.cut = (lane_cut){0, NULL, 0};
    net_forward(&net->n, net->params, &net->ws, 1, net->threads);
    if (probs)
        memcpy(probs, net_probs(&net->n, &net->ws, 0), (size_t)net->n.n_classes * sizeof *probs);
    return net_class(&net->n, &net->ws, 0);
}

int ompcnn_read_image(const char *path, const ompcnn_net *net, float *pixels, char *error,
                      size_t error_size) {
    errbuf err = {"", 0};
    uint8_t *px = NULL;
    int h = 0, w = 0, c = 1, rc;
    pngimg_shape shape;
    rc = pngimg_load(path, &px, &shape, &err);
    if (rc == 0) {
        h = shape.h, w = shape.w, c = shape.c;
    } else if (strstr(err.msg, "no PNG signature")) { /* not a PNG: a PGM? */
        rc = pgm_load(path, &px, &w, &h, &err);
    }
    const shape3 s = net->n.input;
    if (rc == 0 && (h != s.h || w != s.w || c != s.c))
        rc = errorf(&err, "%s: a %dx%d image with %d channel%s, the network takes %dx%d with %d",
                    path, w, h, c, c == 1 ? "" : "s", s.w, s.h, s.c);
    if (rc == 0)
        for (size_t i = 0; i < shape_size(s); i++) pixels[i] = (float)px[i];
    else
        set_error(error, error_size, err.msg);
    free(px);
    return rc ? -1 : 0;
}

const char *ompcnn_version(void) {
    return OMPCNN_VERSION;
}
