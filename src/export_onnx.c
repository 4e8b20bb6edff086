/*
 * `trainer export --onnx`: the net as an ONNX model (opset 13, float32), built as protobuf-c
 * messages from Debian's onnx.proto and packed by protobuf-c; no wire format is written here.
 *
 * The graph takes "pixels" [N, H, W, C] (channels last, like the trainer's data, values 0..255)
 * and scales them as training does: Div 255, then Sub mean and Div std (data.normalize) over the
 * last axis. Convolutions and pools run in ONNX's NCHW: a Transpose goes in before the first of
 * them, and one back to NHWC before a dense layer's Flatten, so that the flattened order is the
 * trainer's (row, column, channel). Weights are reordered to ONNX's layouts: conv2d's
 * (F, K, K, C) to (F, C, K, K); dense's (in, out) is Gemm's B as it is. batchnorm is a
 * BatchNormalization node with its running statistics (on NCHW, or on a dense layer's [N, units]).
 */
#include "ompcnn/export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

#ifndef OMPCNN_ONNX

int export_onnx_available(void) {
    return 0;
}

int export_onnx(const char *path, const net *n, const float *params, const config *cfg,
                errbuf *err) {
    (void)n, (void)params, (void)cfg;
    return errorf(err, "%s: this trainer was built without ONNX support", path);
}

#else

#include "onnx.pb-c.h"

int export_onnx_available(void) {
    return 1;
}

/* Every allocation of the model, freed together. */
typedef struct arena {
    void **items;
    size_t n, cap;
    int oom;
} arena;

static void *grab(arena *a, size_t size) {
    if (a->oom) return NULL;
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        void **grown = realloc(a->items, cap * sizeof *grown);
        if (!grown) {
            a->oom = 1;
            return NULL;
        }
        a->items = grown;
        a->cap = cap;
    }
    void *p = calloc(1, size ? size : 1);
    if (!p)
        a->oom = 1;
    else
        a->items[a->n++] = p;
    return p;
}

static char *grab_string(arena *a, const char *s) {
    char *p = grab(a, strlen(s) + 1);
    if (p) strcpy(p, s);
    return p;
}

static void arena_free(arena *a) {
    for (size_t i = 0; i < a->n; i++) free(a->items[i]);
    free(a->items);
}

/* The graph being built: its nodes and initializers (in growing arrays) and the name of the
 * tensor that holds the current activation, with its layout. */
typedef enum layout { NHWC, NCHW, FLAT } layout;

typedef struct graph {
    arena *a;
    Onnx__NodeProto **nodes;
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits;
    size_t n_inits, cap_inits;
    char current[64];
    layout layout;
    int counter;
} graph;

static int push(arena *a, void ***list, size_t *n, size_t *cap, void *item) {
    if (!item) return -1;
    if (*n == *cap) {
        size_t grown_cap = *cap ? 2 * *cap : 32;
        void **grown = realloc(*list, grown_cap * sizeof *grown);
        if (!grown) {
            a->oom = 1;
            return -1;
        }
        *list = grown;
        *cap = grown_cap;
    }
    (*list)[(*n)++] = item;
    return 0;
}

/* A float tensor initializer named `name` of the given dims, with a copy of the values. */
static void add_floats(graph *g, const char *name, const int64_t *dims, int ndim,
                       const float *values, size_t count) {
    Onnx__TensorProto *t = grab(g->a, sizeof *t);
    int64_t *d = grab(g->a, (size_t)ndim * sizeof *d);
    float *v = grab(g->a, count * sizeof *v);
    if (!t || !d || !v) return;
    onnx__tensor_proto__init(t);
    memcpy(d, dims, (size_t)ndim * sizeof *d);
    memcpy(v, values, count * sizeof *v);
    t->name = grab_string(g->a, name);
    t->n_dims = (size_t)ndim;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    t->n_float_data = count;
    t->float_data = v;
    push(g->a, (void ***)&g->inits, &g->n_inits, &g->cap_inits, t);
}

static Onnx__AttributeProto *attr_ints(graph *g, const char *name, const int64_t *v, int n) {
    Onnx__AttributeProto *at = grab(g->a, sizeof *at);
    int64_t *ints = grab(g->a, (size_t)n * sizeof *ints);
    if (!at || !ints) return NULL;
    onnx__attribute_proto__init(at);
    at->name = grab_string(g->a, name);
    at->has_type = 1;
    at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    memcpy(ints, v, (size_t)n * sizeof *ints);
    at->n_ints = (size_t)n;
    at->ints = ints;
    return at;
}

static Onnx__AttributeProto *attr_float(graph *g, const char *name, float v) {
    Onnx__AttributeProto *at = grab(g->a, sizeof *at);
    if (!at) return NULL;
    onnx__attribute_proto__init(at);
    at->name = grab_string(g->a, name);
    at->has_type = 1;
    at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    at->has_f = 1;
    at->f = v;
    return at;
}

static Onnx__AttributeProto *attr_int(graph *g, const char *name, int64_t v) {
    Onnx__AttributeProto *at = grab(g->a, sizeof *at);
    if (!at) return NULL;
    onnx__attribute_proto__init(at);
    at->name = grab_string(g->a, name);
    at->has_type = 1;
    at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    at->has_i = 1;
    at->i = v;
    return at;
}

/* Adds a node of op_type on the current activation and the extra inputs (NULL-ended), with
 * its attributes (NULL-ended), naming its output `out` (NULL: a fresh name); the output becomes
 * the current activation. */
static void node(graph *g, const char *op_type, const char *const *extra,
                 Onnx__AttributeProto *const *attrs, int n_attrs, const char *out) {
    Onnx__NodeProto *nd = grab(g->a, sizeof *nd);
    if (!nd) return;
    onnx__node_proto__init(nd);
    size_t n_in = 1;
    while (extra && extra[n_in - 1]) n_in++;
    nd->input = grab(g->a, n_in * sizeof *nd->input);
    nd->output = grab(g->a, sizeof *nd->output);
    char name[64], fresh[64];
    snprintf(name, sizeof name, "%s_%d", op_type, g->counter++);
    snprintf(fresh, sizeof fresh, "t%d", g->counter);
    nd->name = grab_string(g->a, name);
    nd->op_type = grab_string(g->a, op_type);
    if (!nd->input || !nd->output) return;
    nd->n_input = n_in;
    nd->input[0] = grab_string(g->a, g->current);
    for (size_t i = 1; i < n_in; i++) nd->input[i] = grab_string(g->a, extra[i - 1]);
    nd->n_output = 1;
    nd->output[0] = grab_string(g->a, out ? out : fresh);
    if (n_attrs) {
        nd->attribute = grab(g->a, (size_t)n_attrs * sizeof *nd->attribute);
        if (!nd->attribute) return;
        for (int i = 0; i < n_attrs; i++) {
            if (!attrs[i]) g->a->oom = 1;
            nd->attribute[i] = attrs[i];
        }
        nd->n_attribute = (size_t)n_attrs;
    }
    snprintf(g->current, sizeof g->current, "%s", out ? out : fresh);
    push(g->a, (void ***)&g->nodes, &g->n_nodes, &g->cap_nodes, nd);
}

static void transpose(graph *g, const int64_t perm[4]) {
    Onnx__AttributeProto *at[1] = {attr_ints(g, "perm", perm, 4)};
    node(g, "Transpose", NULL, at, 1, NULL);
}

/* The current activation in NCHW, from NHWC (a Transpose) or from a flat [N, C] of a 1x1
 * shape (a Reshape). */
static int to_nchw(graph *g, const layer *l, int index, errbuf *err) {
    static const int64_t to_nchw_perm[4] = {0, 3, 1, 2};
    if (g->layout == NHWC) {
        transpose(g, to_nchw_perm);
    } else if (g->layout == FLAT) {
        if (l->in.h != 1 || l->in.w != 1)
            return errorf(err, "network[%d]: a %s after a flat activation cannot be exported",
                          index, l->ops->type);
        char shape_name[32];
        snprintf(shape_name, sizeof shape_name, "shape_%d", index);
        const int64_t dims[1] = {4};
        Onnx__TensorProto *t = grab(g->a, sizeof *t);
        int64_t *d = grab(g->a, sizeof *d), *v = grab(g->a, 4 * sizeof *v);
        if (!t || !d || !v) return 0;
        onnx__tensor_proto__init(t);
        *d = dims[0];
        v[0] = 0, v[1] = l->in.c, v[2] = 1, v[3] = 1;
        t->name = grab_string(g->a, shape_name);
        t->n_dims = 1, t->dims = d;
        t->has_data_type = 1, t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        t->n_int64_data = 4, t->int64_data = v;
        push(g->a, (void ***)&g->inits, &g->n_inits, &g->cap_inits, t);
        const char *extra[2] = {shape_name, NULL};
        node(g, "Reshape", extra, NULL, 0, NULL);
    }
    g->layout = NCHW;
    return 0;
}

/* The current activation as [N, features] in the trainer's (row, column, channel) order. */
static void to_flat(graph *g) {
    static const int64_t to_nhwc_perm[4] = {0, 2, 3, 1};
    if (g->layout == FLAT) return;
    if (g->layout == NCHW) transpose(g, to_nhwc_perm);
    Onnx__AttributeProto *at[1] = {attr_int(g, "axis", 1)};
    node(g, "Flatten", NULL, at, 1, NULL);
    g->layout = FLAT;
}

static Onnx__ValueInfoProto *value_info(arena *a, const char *name, const int64_t *dims, int ndim) {
    Onnx__ValueInfoProto *vi = grab(a, sizeof *vi);
    Onnx__TypeProto *type = grab(a, sizeof *type);
    Onnx__TypeProto__Tensor *tensor = grab(a, sizeof *tensor);
    Onnx__TensorShapeProto *shape = grab(a, sizeof *shape);
    Onnx__TensorShapeProto__Dimension **dim = grab(a, (size_t)ndim * sizeof *dim);
    if (!vi || !type || !tensor || !shape || !dim) return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(type);
    onnx__type_proto__tensor__init(tensor);
    onnx__tensor_shape_proto__init(shape);
    for (int i = 0; i < ndim; i++) {
        dim[i] = grab(a, sizeof *dim[i]);
        if (!dim[i]) return NULL;
        onnx__tensor_shape_proto__dimension__init(dim[i]);
        if (dims[i] < 0) { /* the batch: any size */
            dim[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dim[i]->dim_param = grab_string(a, "N");
        } else {
            dim[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dim[i]->dim_value = dims[i];
        }
    }
    shape->n_dim = (size_t)ndim;
    shape->dim = dim;
    tensor->has_elem_type = 1;
    tensor->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tensor->shape = shape;
    type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    type->tensor_type = tensor;
    vi->name = grab_string(a, name);
    vi->type = type;
    return vi;
}

/* The nodes of every layer. */
static int build_layers(graph *g, const net *n, const float *params, errbuf *err) {
    for (int i = 0; i < n->n_layers && !g->a->oom; i++) {
        const layer *l = &n->layers[i];
        const float *p = params + l->param_off;
        layer_geometry geo = {0};
        if (l->ops->geometry) l->ops->geometry(l->settings, &geo);
        char w_name[32], b_name[32];
        snprintf(w_name, sizeof w_name, "network_%d_weight", i);
        snprintf(b_name, sizeof b_name, "network_%d_bias", i);
        const int has_bias = l->n_tensors == 2;
        if (l->ops == &conv2d_ops) {
            if (to_nchw(g, l, i, err)) return -1;
            const int F = l->out.c, K = geo.kernel, C = l->in.c;
            const size_t count = (size_t)F * K * K * C;
            float *w = malloc(count * sizeof *w);
            if (!w) return oomf(err, "out of memory");
            for (int f = 0; f < F; f++) /* (F, K, K, C) to (F, C, K, K) */
                for (int ky = 0; ky < K; ky++)
                    for (int kx = 0; kx < K; kx++)
                        for (int c = 0; c < C; c++)
                            w[(((size_t)f * C + c) * K + ky) * K + kx] =
                                p[(((size_t)f * K + ky) * K + kx) * C + c];
            const int64_t wd[4] = {F, C, K, K}, bd[1] = {F};
            add_floats(g, w_name, wd, 4, w, count);
            free(w);
            if (has_bias) add_floats(g, b_name, bd, 1, p + count, (size_t)F);
            const int64_t k2[2] = {K, K}, s2[2] = {geo.stride, geo.stride},
                          pads[4] = {geo.padding, geo.padding, geo.padding, geo.padding};
            Onnx__AttributeProto *at[3] = {attr_ints(g, "kernel_shape", k2, 2),
                                           attr_ints(g, "strides", s2, 2),
                                           attr_ints(g, "pads", pads, 4)};
            const char *extra[3] = {w_name, has_bias ? b_name : NULL, NULL};
            node(g, "Conv", extra, at, 3, NULL);
        } else if (l->ops == &maxpool_ops || l->ops == &avgpool_ops) {
            if (to_nchw(g, l, i, err)) return -1;
            const int64_t k2[2] = {geo.kernel, geo.kernel}, s2[2] = {geo.stride, geo.stride};
            Onnx__AttributeProto *at[2] = {attr_ints(g, "kernel_shape", k2, 2),
                                           attr_ints(g, "strides", s2, 2)};
            node(g, l->ops == &maxpool_ops ? "MaxPool" : "AveragePool", NULL, at, 2, NULL);
        } else if (l->ops == &globalavgpool_ops) {
            if (to_nchw(g, l, i, err)) return -1;
            node(g, "GlobalAveragePool", NULL, NULL, 0, NULL);
        } else if (l->ops == &dense_ops) {
            to_flat(g);
            const int64_t in = (int64_t)shape_size(l->in), out = (int64_t)shape_size(l->out);
            const int64_t wd[2] = {in, out}, bd[1] = {out};
            add_floats(g, w_name, wd, 2, p, (size_t)(in * out));
            if (has_bias) add_floats(g, b_name, bd, 1, p + in * out, (size_t)out);
            const char *extra[3] = {w_name, has_bias ? b_name : NULL, NULL};
            node(g, "Gemm", extra, NULL, 0, NULL);
        } else if (l->ops == &relu_ops || l->ops == &sigmoid_ops || l->ops == &tanh_ops) {
            node(g,
                 l->ops == &relu_ops      ? "Relu"
                 : l->ops == &sigmoid_ops ? "Sigmoid"
                                          : "Tanh",
                 NULL, NULL, 0, NULL);
        } else if (l->ops == &batchnorm_ops) {
            /* On channels: NCHW after a convolution, [N, units] after a dense layer. */
            if (g->layout == NHWC && to_nchw(g, l, i, err)) return -1;
            const int64_t cd[1] = {l->in.c};
            const float *buffers = params + n->n_params + l->buffer_off;
            char m_name[40], v_name[40];
            snprintf(m_name, sizeof m_name, "network_%d_running_mean", i);
            snprintf(v_name, sizeof v_name, "network_%d_running_var", i);
            add_floats(g, w_name, cd, 1, p, (size_t)l->in.c);
            add_floats(g, b_name, cd, 1, p + l->in.c, (size_t)l->in.c);
            add_floats(g, m_name, cd, 1, buffers, (size_t)l->in.c);
            add_floats(g, v_name, cd, 1, buffers + l->in.c, (size_t)l->in.c);
            Onnx__AttributeProto *at[1] = {attr_float(g, "epsilon", (float)geo.eps)};
            const char *extra[5] = {w_name, b_name, m_name, v_name, NULL};
            node(g, "BatchNormalization", extra, at, 1, NULL);
        } else if (l->ops == &dropout_ops) {
            continue; /* the identity outside training */
        } else if (l->ops == &softmax_ops) {
            to_flat(g);
            Onnx__AttributeProto *at[1] = {attr_int(g, "axis", 1)};
            node(g, "Softmax", NULL, at, 1, "probabilities");
        } else {
            return errorf(err, "network[%d]: a %s layer cannot be exported to ONNX", i,
                          l->ops->type);
        }
    }
    return 0;
}

int export_onnx(const char *path, const net *n, const float *params, const config *cfg,
                errbuf *err) {
    arena a = {0};
    graph g = {&a, NULL, 0, 0, NULL, 0, 0, "pixels", NHWC, 0};
    const shape3 in = n->input;
    /* Scaling as in training: pixel / 255, then data.normalize over the channels. */
    const float scale = 255.0f;
    const int64_t scalar[1] = {1};
    add_floats(&g, "pixel_scale", scalar, 0, &scale, 1);
    const char *scale_in[2] = {"pixel_scale", NULL};
    node(&g, "Div", scale_in, NULL, 0, "scaled");
    if (cfg->n_normalize) {
        const int64_t channels[1] = {cfg->n_normalize};
        add_floats(&g, "normalize_mean", channels, 1, cfg->normalize_mean,
                   (size_t)cfg->n_normalize);
        add_floats(&g, "normalize_std", channels, 1, cfg->normalize_std, (size_t)cfg->n_normalize);
        const char *mean_in[2] = {"normalize_mean", NULL}, *std_in[2] = {"normalize_std", NULL};
        node(&g, "Sub", mean_in, NULL, 0, NULL);
        node(&g, "Div", std_in, NULL, 0, "normalized");
    }
    int rc = build_layers(&g, n, params, err);
    if (rc == 0 && !a.oom) {
        Onnx__GraphProto graph_msg;
        Onnx__ModelProto model;
        Onnx__OperatorSetIdProto opset;
        onnx__graph_proto__init(&graph_msg);
        onnx__model_proto__init(&model);
        onnx__operator_set_id_proto__init(&opset);
        const int64_t in_dims[4] = {-1, in.h, in.w, in.c}, out_dims[2] = {-1, n->n_classes};
        Onnx__ValueInfoProto *inputs[1] = {value_info(&a, "pixels", in_dims, 4)};
        Onnx__ValueInfoProto *outputs[1] = {value_info(&a, "probabilities", out_dims, 2)};
        graph_msg.name = "ompcnn";
        graph_msg.n_node = g.n_nodes, graph_msg.node = g.nodes;
        graph_msg.n_initializer = g.n_inits, graph_msg.initializer = g.inits;
        graph_msg.n_input = 1, graph_msg.input = inputs;
        graph_msg.n_output = 1, graph_msg.output = outputs;
        char describe[1024], doc[1400];
        net_describe(n, describe, sizeof describe);
        snprintf(doc, sizeof doc,
                 "%s. Input: pixel values 0..255 as floats, [N, H, W, C] "
                 "(channels last); output: the probability of each class.",
                 describe);
        graph_msg.doc_string = doc;
        opset.domain = "";
        opset.has_version = 1;
        opset.version = 13;
        Onnx__OperatorSetIdProto *opsets[1] = {&opset};
        model.has_ir_version = 1;
        model.ir_version = 7; /* the IR of opset 13 (ONNX 1.8) */
        model.n_opset_import = 1, model.opset_import = opsets;
        model.producer_name = "ompcnn";
        model.producer_version = OMPCNN_VERSION;
        model.graph = &graph_msg;
        /* The class names, as a JSON list, in the metadata. */
        Onnx__StringStringEntryProto names_entry, *props[1] = {&names_entry};
        char *names_json = NULL;
        if (n->class_names) {
            cJSON *list =
                cJSON_CreateStringArray((const char *const *)n->class_names, n->n_class_names);
            names_json = list ? cJSON_PrintUnformatted(list) : NULL;
            cJSON_Delete(list);
            onnx__string_string_entry_proto__init(&names_entry);
            names_entry.key = "class_names";
            names_entry.value = names_json;
            if (names_json) model.n_metadata_props = 1, model.metadata_props = props;
        }
        if (!inputs[0] || !outputs[0] || a.oom || (n->class_names && !names_json)) {
            rc = oomf(err, "%s: out of memory", path);
        } else {
            size_t size = onnx__model_proto__get_packed_size(&model);
            uint8_t *bytes = malloc(size ? size : 1);
            if (!bytes) {
                rc = oomf(err, "%s: out of memory for %zu bytes", path, size);
            } else {
                onnx__model_proto__pack(&model, bytes);
                rc = write_file_atomic(path, bytes, size, err);
                free(bytes);
            }
        }
        cJSON_free(names_json);
    } else if (rc == 0) {
        rc = oomf(err, "%s: out of memory", path);
    }
    free(g.nodes);
    free(g.inits);
    arena_free(&a);
    return rc;
}

#endif
