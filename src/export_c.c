/*
 * `trainer export --c`: the net as one C99 source file with no dependency beyond libm. The
 * weights are static const float arrays (printed with 9 significant digits, which give back
 * every float exactly); the forward pass is plain loops over two static buffers of the largest
 * activation, so it allocates nothing and its stack use is a few scalars.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "ompcnn/export.h"

/* A growing text buffer; `oom` once an append failed. */
typedef struct text {
    char *data;
    size_t len, cap;
    int oom;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
    if (t->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(t->data ? t->data + t->len : NULL, t->data ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = 1;
            return;
        }
        if (t->data && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = (t->cap + (size_t)n + 1) * 2;
        char *grown = realloc(t->data, cap);
        if (!grown) {
            t->oom = 1;
            return;
        }
        t->data = grown;
        t->cap = cap;
    }
}

/* A float as a C literal that reads back to the same float. */
static void put_float(text *t, float v) {
    char buf[48];
    snprintf(buf, sizeof buf, "%.9g", (double)v);
    put(t, "%s%sf", buf, strpbrk(buf, ".e") ? "" : ".0");
}

static void put_array(text *t, const char *name, const char *what, const float *v, size_t n) {
    put(t, "static const float %s[%zu] = { /* %s */\n", name, n, what);
    for (size_t i = 0; i < n; i++) {
        put(t, i % 6 == 0 ? "    " : " ");
        put_float(t, v[i]);
        put(t, i + 1 < n ? "," : "");
        if (i % 6 == 5 || i + 1 == n) put(t, "\n");
    }
    put(t, "};\n");
}

static int is_identifier(const char *s) {
    if (!s[0] || !(isalpha((unsigned char)s[0]) || s[0] == '_') || strlen(s) > 64) return 0;
    for (const char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_') return 0;
    return 1;
}

/* The layer kernels, each a plain loop over channels-last activations; the file holds the ones
 * its network uses (an unused static function would be a warning). */
enum { K_CONV2D, K_POOL, K_GLOBAL_AVERAGE, K_DENSE, K_ACTIVATE, K_SOFTMAX, K_AFFINE, N_KERNELS };
static const char *const kernel_text[N_KERNELS] = {
    /* conv2d */
    "static void conv2d(const float *in, int h, int w, int c, float *out, int oh, int ow,\n"
    "                   int f, int k, int stride, int pad, const float *wt, const float *bias) {\n"
    "    int oy, ox, o, ky, kx, ch;\n"
    "    for (oy = 0; oy < oh; oy++)\n"
    "        for (ox = 0; ox < ow; ox++)\n"
    "            for (o = 0; o < f; o++) {\n"
    "                float sum = bias ? bias[o] : 0.0f;\n"
    "                for (ky = 0; ky < k; ky++) {\n"
    "                    int iy = oy * stride - pad + ky;\n"
    "                    if (iy < 0 || iy >= h) continue;\n"
    "                    for (kx = 0; kx < k; kx++) {\n"
    "                        int ix = ox * stride - pad + kx;\n"
    "                        if (ix < 0 || ix >= w) continue;\n"
    "                        for (ch = 0; ch < c; ch++)\n"
    "                            sum += in[(iy * w + ix) * c + ch] *\n"
    "                                   wt[((o * k + ky) * k + kx) * c + ch];\n"
    "                    }\n"
    "                }\n"
    "                out[(oy * ow + ox) * f + o] = sum;\n"
    "            }\n"
    "}\n",
    /* pool */
    "static void pool(const float *in, int w, int c, float *out, int oh, int ow, int size,\n"
    "                 int stride, int average) {\n"
    "    int oy, ox, ch, ky, kx;\n"
    "    for (oy = 0; oy < oh; oy++)\n"
    "        for (ox = 0; ox < ow; ox++)\n"
    "            for (ch = 0; ch < c; ch++) {\n"
    "                float best = in[((oy * stride) * w + ox * stride) * c + ch], sum = 0.0f;\n"
    "                for (ky = 0; ky < size; ky++)\n"
    "                    for (kx = 0; kx < size; kx++) {\n"
    "                        float v = in[((oy * stride + ky) * w + ox * stride + kx) * c + ch];\n"
    "                        sum += v;\n"
    "                        if (v > best) best = v;\n"
    "                    }\n"
    "                out[(oy * ow + ox) * c + ch] = average ? sum / (float)(size * size) : best;\n"
    "            }\n"
    "}\n",
    /* global_average */
    "static void global_average(const float *in, int hw, int c, float *out) {\n"
    "    int p, ch;\n"
    "    for (ch = 0; ch < c; ch++) {\n"
    "        float sum = 0.0f;\n"
    "        for (p = 0; p < hw; p++) sum += in[p * c + ch];\n"
    "        out[ch] = sum / (float)hw;\n"
    "    }\n"
    "}\n",
    /* dense */
    "static void dense(const float *in, int n_in, float *out, int units, const float *wt,\n"
    "                  const float *bias) {\n"
    "    int i, u;\n"
    "    for (u = 0; u < units; u++) out[u] = bias ? bias[u] : 0.0f;\n"
    "    for (i = 0; i < n_in; i++)\n"
    "        for (u = 0; u < units; u++) out[u] += in[i] * wt[i * units + u];\n"
    "}\n",
    /* activate */
    "static void activate(float *x, int n, int kind) { /* 0 relu, 1 sigmoid, 2 tanh */\n"
    "    int i;\n"
    "    for (i = 0; i < n; i++)\n"
    "        x[i] = kind == 0 ? (x[i] > 0.0f ? x[i] : 0.0f)\n"
    "             : kind == 1 ? 1.0f / (1.0f + expf(-x[i])) : tanhf(x[i]);\n"
    "}\n",
    /* softmax */
    "static int softmax(const float *in, int n, float *probs) {\n"
    "    int i, best = 0;\n"
    "    float top = in[0], sum = 0.0f;\n"
    "    for (i = 1; i < n; i++)\n"
    "        if (in[i] > top) top = in[i], best = i;\n"
    "    for (i = 0; i < n; i++) sum += probs[i] = expf(in[i] - top);\n"
    "    for (i = 0; i < n; i++) probs[i] /= sum;\n"
    "    return best;\n"
    "}\n",
    /* batchnorm, folded: x * scale + shift per channel, in place */
    "static void affine(float *x, int positions, int c, const float *scale, const float *shift) {\n"
    "    int p, ch;\n"
    "    for (p = 0; p < positions; p++)\n"
    "        for (ch = 0; ch < c; ch++) x[p * c + ch] = x[p * c + ch] * scale[ch] + shift[ch];\n"
    "}\n",
};

/* The kernel a layer's forward pass takes in the file, or -1 (dropout: none). */
static int kernel_of(const layer_ops *ops) {
    if (ops == &conv2d_ops) return K_CONV2D;
    if (ops == &maxpool_ops || ops == &avgpool_ops) return K_POOL;
    if (ops == &globalavgpool_ops) return K_GLOBAL_AVERAGE;
    if (ops == &dense_ops) return K_DENSE;
    if (ops == &relu_ops || ops == &sigmoid_ops || ops == &tanh_ops) return K_ACTIVATE;
    if (ops == &softmax_ops) return K_SOFTMAX;
    if (ops == &batchnorm_ops) return K_AFFINE;
    return -1;
}

int export_c(const char *path, const net *n, const float *params, const config *cfg,
             const char *name, errbuf *err) {
    if (!is_identifier(name))
        return errorf(err, "--name %s: expected a C identifier (letters, digits, _; at most 64)",
                      name);
    for (size_t i = 0; i < net_state_size(n); i++)
        if (!isfinite(params[i]))
            return errorf(err, "%s %zu is not finite: nothing to export",
                          i < n->n_params ? "parameter" : "running statistic",
                          i < n->n_params ? i : i - n->n_params);
    char upper[80];
    size_t k = 0;
    for (; name[k]; k++) upper[k] = (char)toupper((unsigned char)name[k]);
    upper[k] = '\0';
    const shape3 in = n->input;
    size_t biggest = shape_size(in);
    for (int i = 0; i < n->n_layers; i++)
        if (shape_size(n->layers[i].out) > biggest) biggest = shape_size(n->layers[i].out);
    char shape[1024];
    net_describe(n, shape, sizeof shape);
    text t = {0};
    put(&t,
        "/*\n"
        " * A network trained by ompcnn, exported by `trainer export --c`: one C99 file, no\n"
        " * dependency beyond libm, no allocation.\n"
        " *\n"
        " *   %s\n"
        " *\n"
        " * int %s_predict(const float *image, float *probs);\n"
        " *   image: %d x %d x %d pixel values from 0 to 255, row by row, channels last;\n"
        " *   probs: %d floats, the probability of each class; returns the most probable class.\n"
        " *\n"
        " * Memory: two static buffers of %zu floats (%s_SCRATCH_BYTES), so calls must not\n"
        " * overlap (one thread at a time); the stack holds a few scalars. Dropout is the "
        "identity.\n"
        " * Build: cc -std=c99 -O2 -c THIS_FILE.c; link with -lm.\n"
        " */\n"
        "#include <math.h>\n\n"
        "#define %s_INPUT_H %d\n#define %s_INPUT_W %d\n#define %s_INPUT_C %d\n"
        "#define %s_CLASSES %d\n#define %s_SCRATCH_BYTES %zu\n\n",
        shape, name, in.h, in.w, in.c, n->n_classes, biggest, upper, upper, in.h, upper, in.w,
        upper, in.c, upper, n->n_classes, upper, 2 * biggest * sizeof(float));
    if (n->class_names) {
        put(&t, "/* The classes' names, by class. */\nconst char *const %s_class_names[%d] = {",
            name, n->n_classes);
        for (int c = 0; c < n->n_class_names; c++) {
            put(&t, "%s\"", c ? ", " : "");
            for (const char *p = n->class_names[c]; *p; p++)
                put(&t,
                    (*p == '"' || *p == '\\') ? "\\%c"
                    : (unsigned char)*p < 32  ? "?"
                                              : "%c",
                    *p);
            put(&t, "\"");
        }
        put(&t, "};\n\n");
    }
    /* Input scaling: pixel / 255, then data.normalize: one value for every channel, or one per
     * channel (pixel_table checked that there are as many as the input has). */
    const int n_norm = cfg->n_normalize;
    if (n_norm) {
        put_array(&t, "input_mean", "data.normalize.mean", cfg->normalize_mean, (size_t)n_norm);
        put_array(&t, "input_std", "data.normalize.std", cfg->normalize_std, (size_t)n_norm);
    }
    for (int i = 0; i < n->n_layers; i++) {
        const layer *l = &n->layers[i];
        const float *p = params + l->param_off;
        if (l->ops == &batchnorm_ops) { /* folded with its running statistics */
            const size_t c = (size_t)l->in.c;
            float *folded = malloc(2 * c * sizeof *folded);
            if (!folded) {
                free(t.data);
                return oomf(err, "%s: out of memory", path);
            }
            batchnorm_fold(l, p, params + n->n_params + l->buffer_off, folded, folded + c);
            char array[64], what[96];
            snprintf(array, sizeof array, "layer%d_scale", i);
            snprintf(what, sizeof what, "network[%d] batchnorm: weight / sqrt(running_var + eps)", i);
            put_array(&t, array, what, folded, c);
            snprintf(array, sizeof array, "layer%d_shift", i);
            snprintf(what, sizeof what, "network[%d] batchnorm: bias - running_mean * scale", i);
            put_array(&t, array, what, folded + c, c);
            free(folded);
            continue;
        }
        for (int j = 0; j < l->n_tensors; j++) {
            char array[64], what[96];
            snprintf(array, sizeof array, "layer%d_%s", i, l->tensors[j].name);
            snprintf(what, sizeof what, "network[%d] %s %s", i, l->ops->type, l->tensors[j].name);
            put_array(&t, array, what, p, l->tensors[j].size);
            p += l->tensors[j].size;
        }
    }
    /* The kernels it calls, and whether the buffers ever swap. */
    int used[N_KERNELS] = {0}, swaps = 0;
    for (int i = 0; i < n->n_layers; i++) {
        const int kind = kernel_of(n->layers[i].ops);
        if (kind >= 0) used[kind] = 1;
        swaps |= kind >= 0 && kind != K_ACTIVATE && kind != K_SOFTMAX && kind != K_AFFINE;
    }
    put(&t, "\nstatic float buffer[2][%zu];\n", biggest);
    for (int k = 0; k < N_KERNELS; k++)
        if (used[k]) put(&t, "\n%s", kernel_text[k]);
    put(&t, "\nint %s_predict(const float *image, float *probs) {\n", name);
    put(&t, "    float *x = buffer[0]%s;\n    int i;\n", swaps ? ", *y = buffer[1], *swap" : "");
    put(&t, "    for (i = 0; i < %zu; i++) x[i] = image[i] / 255.0f;\n", shape_size(in));
    if (n_norm)
        put(&t,
            "    for (i = 0; i < %zu; i++) x[i] = (x[i] - input_mean[i %% %d]) / "
            "input_std[i %% %d];\n",
            shape_size(in), n_norm, n_norm);
    for (int i = 0; i < n->n_layers; i++) {
        const layer *l = &n->layers[i];
        const char *type = l->ops->type;
        layer_geometry g = {0};
        if (l->ops->geometry) l->ops->geometry(l->settings, &g);
        char bias[64] = "0";
        if (l->n_tensors == 2) snprintf(bias, sizeof bias, "layer%d_bias", i);
        put(&t, "    /* network[%d]: %s */\n", i, type);
        switch (kernel_of(l->ops)) {
        case K_CONV2D:
            put(&t, "    conv2d(x, %d, %d, %d, y, %d, %d, %d, %d, %d, %d, layer%d_weight, %s);\n",
                l->in.h, l->in.w, l->in.c, l->out.h, l->out.w, l->out.c, g.kernel, g.stride,
                g.padding, i, bias);
            break;
        case K_POOL:
            put(&t, "    pool(x, %d, %d, y, %d, %d, %d, %d, %d);\n", l->in.w, l->in.c, l->out.h,
                l->out.w, g.kernel, g.stride, l->ops == &avgpool_ops);
            break;
        case K_GLOBAL_AVERAGE:
            put(&t, "    global_average(x, %d, %d, y);\n", l->in.h * l->in.w, l->in.c);
            break;
        case K_DENSE:
            put(&t, "    dense(x, %zu, y, %zu, layer%d_weight, %s);\n", shape_size(l->in),
                shape_size(l->out), i, bias);
            break;
        case K_ACTIVATE:
            put(&t, "    activate(x, %zu, %d);\n", shape_size(l->in),
                l->ops == &relu_ops      ? 0
                : l->ops == &sigmoid_ops ? 1
                                         : 2);
            continue; /* in place */
        case K_SOFTMAX:
            put(&t, "    return softmax(x, %d, probs);\n}\n", n->n_classes);
            continue;
        case K_AFFINE:
            put(&t, "    affine(x, %d, %d, layer%d_scale, layer%d_shift);\n", l->in.h * l->in.w,
                l->in.c, i, i);
            continue; /* in place */
        default:
            if (l->ops == &dropout_ops) continue; /* the identity */
            free(t.data);
            return errorf(err, "network[%d]: a %s layer cannot be exported to C", i, type);
        }
        put(&t, "    swap = x, x = y, y = swap;\n");
    }
    int rc =
        t.oom ? oomf(err, "%s: out of memory", path) : write_file_atomic(path, t.data, t.len, err);
    free(t.data);
    return rc;
}
