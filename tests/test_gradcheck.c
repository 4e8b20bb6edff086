/*
 * Finite-difference gradient checks for every layer kind, on shapes with stride, padding and
 * several input channels, and for a whole network under the cross-entropy loss. Each layer's
 * backward must agree with central differences of its forward, for the input and every
 * parameter. Plus the exact behaviour of the tie rules and the report-reproducing switches.
 */
#include <math.h>

#include "ompcnn/layer.h"
#include "ompcnn/net.h"
#include "testutil.h"

typedef struct test_layer {
    layer l;
    void *settings;
    cJSON *json;
} test_layer;

static void make_layer(test_layer *tl, const char *json, shape3 in) {
    errbuf err;
    memset(tl, 0, sizeof *tl);
    tl->json = cJSON_Parse(json);
    ck_assert_ptr_nonnull(tl->json);
    const layer_ops *ops = layer_find(cJSON_GetObjectItem(tl->json, "type")->valuestring);
    ck_assert_ptr_nonnull(ops);
    tl->settings = calloc(1, ops->settings_size + 1);
    if (ops->parse) ck_assert_msg(ops->parse(tl->settings, tl->json, "t", &err) == 0, "%s", err.msg);
    tl->l.ops = ops;
    tl->l.settings = tl->settings;
    tl->l.in = in;
    ck_assert_msg(ops->shape(tl->settings, in, &tl->l.out, "t", &err) == 0, "%s", err.msg);
    tl->l.n_tensors = ops->params(tl->settings, in, tl->l.out, tl->l.tensors);
    for (int t = 0; t < tl->l.n_tensors; t++) tl->l.n_params += tl->l.tensors[t].size;
    tl->l.n_buffers =
        ops->buffers ? ops->buffers(tl->settings, in, tl->l.out, tl->l.tensors + tl->l.n_tensors) : 0;
    for (int t = 0; t < tl->l.n_buffers; t++)
        tl->l.n_buffer_floats += tl->l.tensors[tl->l.n_tensors + t].size;
}

static void free_layer(test_layer *tl) {
    cJSON_Delete(tl->json);
    free(tl->settings);
}

static const run_ctx one = {.n = 1, .nt = 1};
static const uint64_t sample_keys[2] = {11, 12};

static uint64_t rng_state = 88172645463325252ull;
static double uniform(void) { /* xorshift64, deterministic across runs */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* Layers are checked on a chunk of this many samples at once (2 unless a check says). */
static int N_SAMPLES = 2;

/* L = sum_k r[k] * out[k] over all samples, accumulated in double. */
static double probe_loss(const layer *l, const float *params, const float *in, float *out,
                         const float *r, const run_ctx *run) {
    l->ops->forward(l, params, in, out, run);
    double sum = 0.0;
    for (size_t k = 0; k < N_SAMPLES * shape_size(l->out); k++) sum += (double)r[k] * out[k];
    return sum;
}

static void expect_close(double analytic, double numeric, const char *what, size_t index,
                         const char *layer_json) {
    double tol = 2e-3 + 2e-2 * fmax(fabs(analytic), fabs(numeric));
    ck_assert_msg(fabs(analytic - numeric) <= tol, "%s: %s[%zu]: backward %.6g, finite difference %.6g",
                  layer_json, what, index, analytic, numeric);
}

/* Checks din and dparams of one layer against central differences with step eps. Inputs are a
 * shuffled ramp (distinct values, so max-pooling has no near-ties) unless `smooth`. */
static void check_layer_lanes(const char *json, shape3 in_shape, double eps, int n_samples,
                              int n_lanes);

static void check_layer(const char *json, shape3 in_shape, double eps) {
    check_layer_lanes(json, in_shape, eps, 2, 0);
}

/* The same on n_samples samples cut into n_lanes equal lanes (0: one lane): the lanes' parameter
 * gradients must add up to the whole pass's. For batch-wide layers (batchnorm) the samples are
 * one batch, whose statistics the differences go through. */
static void check_layer_lanes(const char *json, shape3 in_shape, double eps, int n_samples,
                              int n_lanes) {
    N_SAMPLES = n_samples;
    test_layer tl;
    make_layer(&tl, json, in_shape);
    const layer *l = &tl.l;
    size_t n_in = N_SAMPLES * shape_size(l->in), n_out = N_SAMPLES * shape_size(l->out);
    size_t n_p = l->n_params;
    float *in = floats_alloc(n_in), *out = floats_alloc(n_out), *r = floats_alloc(n_out);
    const int lanes = n_lanes > 0 ? n_lanes : 1;
    float *params = floats_alloc(n_p + 1), *dparams = floats_alloc(lanes * n_p + 1);
    float *lane_grads = floats_alloc(lanes * n_p + 1);
    float *din = floats_alloc(n_in);
    float *scratch = floats_alloc(l->ops->scratch_size ? l->ops->scratch_size(l, N_SAMPLES, 1) + 1 : 1);
    float *saved = floats_alloc(l->ops->saved_size ? N_SAMPLES * l->ops->saved_size(l) + 1 : 1);
    /* A training pass with fixed sample keys: dropout's mask is the same in every call. */
    float *pass_saved = floats_alloc(l->ops->pass_saved_size ? l->ops->pass_saved_size(l) : 1);
    float *buffers = floats_alloc(l->n_buffer_floats + 1);
    uint64_t keys[64];
    int starts[65];
    ck_assert(N_SAMPLES <= 64);
    for (int k = 0; k < N_SAMPLES; k++) keys[k] = sample_keys[k % 2] + 2 * (uint64_t)(k / 2);
    for (int k = 0; k <= lanes; k++) starts[k] = k * N_SAMPLES / lanes;
    if (l->ops->init_buffers) l->ops->init_buffers(l, buffers);
    run_ctx run = {.n = N_SAMPLES, .nt = 1, .scratch = scratch, .saved = saved, .training = 1,
                   .sample_keys = keys, .buffers = buffers, .pass_saved = pass_saved,
                   .cut = {n_lanes, starts, n_p}};
    for (size_t i = 0; i < n_in; i++) in[i] = (float)(2.0 * (double)i / n_in - 1.0);
    for (size_t i = n_in - 1; i > 0; i--) { /* shuffle the ramp */
        size_t j = (size_t)(uniform() * (i + 1));
        float t = in[i];
        in[i] = in[j];
        in[j] = t;
    }
    for (size_t i = 0; i < n_in; i++) /* keep away from relu's kink */
        if (fabsf(in[i]) < 0.05f) in[i] += in[i] < 0 ? -0.05f : 0.05f;
    for (size_t i = 0; i < n_p; i++) params[i] = (float)(uniform() - 0.5);
    for (size_t k = 0; k < n_out; k++) r[k] = (float)(uniform() * 2.0 - 1.0);

    l->ops->forward(l, params, in, out, &run);
    l->ops->backward(l, params, in, out, r, din, lane_grads, &run);
    for (size_t i = 0; i < n_p; i++) { /* the lanes' sum, in lane order */
        float sum = lane_grads[i];
        for (int k = 1; k < lanes; k++) sum += lane_grads[(size_t)k * n_p + i];
        dparams[i] = sum;
    }

    for (size_t i = 0; i < n_in; i++) {
        float keep = in[i];
        in[i] = keep + (float)eps;
        double up = probe_loss(l, params, in, out, r, &run);
        in[i] = keep - (float)eps;
        double down = probe_loss(l, params, in, out, r, &run);
        in[i] = keep;
        expect_close(din[i], (up - down) / (2 * eps), "input", i, json);
    }
    for (size_t i = 0; i < n_p; i++) {
        float keep = params[i];
        params[i] = keep + (float)eps;
        double up = probe_loss(l, params, in, out, r, &run);
        params[i] = keep - (float)eps;
        double down = probe_loss(l, params, in, out, r, &run);
        params[i] = keep;
        expect_close(dparams[i], (up - down) / (2 * eps), "param", i, json);
    }
    aligned_free(in), aligned_free(out), aligned_free(r), aligned_free(params);
    aligned_free(dparams), aligned_free(din), aligned_free(scratch), aligned_free(saved);
    aligned_free(lane_grads), aligned_free(pass_saved), aligned_free(buffers);
    N_SAMPLES = 2;
    free_layer(&tl);
}

START_TEST(test_conv2d_gradients) {
    check_layer("{\"type\":\"conv2d\",\"filters\":4,\"kernel\":3}", (shape3){7, 6, 1}, 1e-2);
    check_layer("{\"type\":\"conv2d\",\"filters\":3,\"kernel\":3,\"stride\":2,\"padding\":1}",
                (shape3){9, 8, 3}, 1e-2);
    check_layer("{\"type\":\"conv2d\",\"filters\":5,\"kernel\":5,\"padding\":2,\"bias\":false}",
                (shape3){6, 7, 2}, 1e-2);
    check_layer("{\"type\":\"conv2d\",\"filters\":2,\"kernel\":2,\"stride\":3}", (shape3){8, 8, 4},
                1e-2);
}
END_TEST

START_TEST(test_maxpool_gradients) {
    check_layer("{\"type\":\"maxpool\",\"size\":2}", (shape3){6, 6, 3}, 1e-3);
    check_layer("{\"type\":\"maxpool\",\"size\":2,\"ties\":\"all\"}", (shape3){7, 5, 2}, 1e-3);
    check_layer("{\"type\":\"maxpool\",\"size\":3,\"stride\":2}", (shape3){7, 7, 2}, 1e-3);
    check_layer("{\"type\":\"maxpool\",\"size\":2,\"stride\":1,\"ties\":\"all\"}",
                (shape3){5, 6, 3}, 1e-3);
}
END_TEST

START_TEST(test_dense_gradients) {
    check_layer("{\"type\":\"dense\",\"units\":5}", (shape3){3, 4, 2}, 1e-2);
    check_layer("{\"type\":\"dense\",\"units\":37,\"bias\":false}", (shape3){1, 1, 10}, 1e-2);
}
END_TEST

START_TEST(test_pool_and_dropout_gradients) {
    check_layer("{\"type\":\"avgpool\",\"size\":2}", (shape3){6, 5, 3}, 1e-2);
    check_layer("{\"type\":\"avgpool\",\"size\":3,\"stride\":2}", (shape3){7, 7, 2}, 1e-2);
    check_layer("{\"type\":\"globalavgpool\"}", (shape3){5, 4, 3}, 1e-2);
    check_layer("{\"type\":\"dropout\",\"rate\":0.4}", (shape3){4, 5, 3}, 1e-2);
    check_layer("{\"type\":\"conv2d\",\"filters\":3,\"kernel\":5,\"padding\":\"same\"}",
                (shape3){6, 7, 2}, 1e-2);
}
END_TEST

/* batchnorm in training, through the batch statistics: per channel after a convolution's
 * output (several positions a sample), per unit after a dense layer (one), on batches cut into
 * lanes, whose statistics are the whole batch's. */
START_TEST(test_batchnorm_gradients) {
    check_layer_lanes("{\"type\":\"batchnorm\"}", (shape3){4, 3, 5}, 1e-2, 6, 3);
    check_layer_lanes("{\"type\":\"batchnorm\"}", (shape3){3, 3, 2}, 1e-2, 2, 0);
    check_layer_lanes("{\"type\":\"batchnorm\",\"eps\":0.01}", (shape3){1, 1, 7}, 1e-2, 8, 2);
    check_layer_lanes("{\"type\":\"batchnorm\"}", (shape3){1, 1, 9}, 1e-2, 5, 0);
    /* Other layers' lane gradients add up to the pass's too. */
    check_layer_lanes("{\"type\":\"dense\",\"units\":4}", (shape3){2, 2, 3}, 1e-2, 6, 3);
    check_layer_lanes("{\"type\":\"conv2d\",\"filters\":3,\"kernel\":3}", (shape3){5, 5, 2},
                      1e-2, 4, 2);
}
END_TEST

/* Dropout keeps about 1 - rate of the elements, scales them by 1 / (1 - rate), draws the same
 * mask for the same sample key and another for another key, and passes everything through
 * outside training. */
START_TEST(test_dropout_mask) {
    test_layer tl;
    make_layer(&tl, "{\"type\":\"dropout\",\"rate\":0.3}", (shape3){20, 20, 25});
    const size_t n = 10000;
    float *in = floats_alloc(2 * n), *out = floats_alloc(2 * n), *saved = floats_alloc(2 * n);
    for (size_t i = 0; i < 2 * n; i++) in[i] = 1.0f;
    const uint64_t keys[2] = {7, 8};
    run_ctx run = {.n = 2, .nt = 1, .saved = saved, .training = 1, .sample_keys = keys};
    tl.l.ops->forward(&tl.l, NULL, in, out, &run);
    size_t kept = 0, same = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert(out[i] == 0.0f || fabsf(out[i] - 1.0f / 0.7f) < 1e-6f);
        kept += out[i] != 0.0f;
        same += (out[i] != 0.0f) == (out[n + i] != 0.0f);
    }
    ck_assert_msg(kept > 6800 && kept < 7200, "kept %zu of 10000", kept); /* 7000 +- 4.5 sigma */
    ck_assert_msg(same < 6300, "two samples' masks agree on %zu of 10000", same); /* ~5800 */
    float again[10000];
    run.n = 1;
    tl.l.ops->forward(&tl.l, NULL, in, again, &run);
    ck_assert_int_eq(memcmp(again, out, sizeof again), 0);
    run.training = 0;
    tl.l.ops->forward(&tl.l, NULL, in, again, &run);
    for (size_t i = 0; i < n; i++) ck_assert_float_eq(again[i], 1.0f);
    aligned_free(in), aligned_free(out), aligned_free(saved);
    free_layer(&tl);
}
END_TEST

START_TEST(test_activation_gradients) {
    check_layer("{\"type\":\"sigmoid\"}", (shape3){4, 5, 3}, 1e-2);
    check_layer("{\"type\":\"relu\"}", (shape3){4, 5, 3}, 1e-2);
    check_layer("{\"type\":\"tanh\"}", (shape3){4, 5, 3}, 1e-2);
    check_layer("{\"type\":\"softmax\"}", (shape3){1, 1, 7}, 1e-2);
}
END_TEST

/* The whole chain under softmax cross-entropy: net_backward against differences of net_loss;
 * and a second net, with a global average pool, under label smoothing. */
static void check_network(const char *text, shape3 input_shape);
static void check_network_batch(const char *text, shape3 input_shape, int count);

START_TEST(test_network_gradients) {
    check_network(
        "{\"data\":{\"train\":{\"images\":\"x\",\"labels\":\"y\"}},"
        "\"network\":[{\"type\":\"conv2d\",\"filters\":3,\"kernel\":3,\"padding\":1,\"stride\":2},"
        "{\"type\":\"tanh\"},{\"type\":\"maxpool\",\"size\":2},"
        "{\"type\":\"conv2d\",\"filters\":4,\"kernel\":2},{\"type\":\"sigmoid\"},"
        "{\"type\":\"dense\",\"units\":6},{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":4},"
        "{\"type\":\"softmax\"}],\"training\":{\"init\":\"xavier\"}}",
        (shape3){10, 9, 2});
    check_network(
        "{\"data\":{\"train\":{\"images\":\"x\",\"labels\":\"y\"}},"
        "\"network\":[{\"type\":\"conv2d\",\"filters\":5,\"kernel\":3},{\"type\":\"tanh\"},"
        "{\"type\":\"globalavgpool\"},{\"type\":\"dense\",\"units\":4},"
        "{\"type\":\"softmax\"}],\"training\":{\"init\":\"xavier\",\"label_smoothing\":0.2}}",
        (shape3){6, 7, 2});
    /* Batch normalisation after a convolution and after a dense layer, on a batch of 5 in two
     * lanes: each sample's loss depends on the others through the batch statistics. */
    check_network_batch(
        "{\"data\":{\"train\":{\"images\":\"x\",\"labels\":\"y\"}},"
        "\"network\":[{\"type\":\"conv2d\",\"filters\":3,\"kernel\":3},{\"type\":\"batchnorm\"},"
        "{\"type\":\"tanh\"},{\"type\":\"dense\",\"units\":6},{\"type\":\"batchnorm\"},"
        "{\"type\":\"sigmoid\"},{\"type\":\"dense\",\"units\":4},{\"type\":\"softmax\"}],"
        "\"training\":{\"init\":\"xavier\"}}",
        (shape3){6, 5, 2}, 5);
    /* relu after conv2d and batchnorm: each applied by the layer before (fused), the gradient
     * of the first two taken by the conv2d and max-pool after them, of the last by batchnorm
     * (before a dense layer, which takes none). */
    check_network_batch(
        "{\"data\":{\"train\":{\"images\":\"x\",\"labels\":\"y\"}},"
        "\"network\":[{\"type\":\"conv2d\",\"filters\":3,\"kernel\":3},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"filters\":4,\"kernel\":2},{\"type\":\"batchnorm\"},"
        "{\"type\":\"relu\"},{\"type\":\"maxpool\"},{\"type\":\"dense\",\"units\":6},"
        "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":4},"
        "{\"type\":\"softmax\"}],"
        "\"training\":{\"init\":\"he\"}}",
        (shape3){7, 6, 2}, 5);
}
END_TEST

/* One training pass of `count` samples in two lanes: the probabilities and the parameter
 * gradient (both lanes, one after the other) into probs and grads. With unfuse, every relu runs
 * as a pass of its own, forward and backward, instead of in the layers beside it. The network
 * must have `fused` relus that the layer before applies and `masked` whose gradient the layer
 * after takes. */
static void run_pass(const char *text, shape3 input_shape, int count, int unfuse, int fused_want,
                     int masked_want, float *probs, float *grads) {
    config cfg;
    errbuf err;
    ck_assert_msg(config_parse_text(&cfg, text, "t.json", ".", NULL, 0, &err) == 0, "%s", err.msg);
    net n;
    ck_assert_msg(net_build(&n, &cfg, input_shape, &err) == 0, "%s", err.msg);
    int fused = 0, masked = 0;
    for (int i = 0; i < n.n_layers; i++) {
        masked += n.layers[i].relu_din;
        if (unfuse) n.layers[i].relu_din = 0;
        if (!n.layers[i].in_place) continue;
        fused++;
        if (!unfuse) continue;
        n.layers[i].in_place = n.layers[i - 1].relu_fused = 0;
        n.total_act += shape_size(n.layers[i].out);
    }
    ck_assert_int_eq(fused, fused_want);
    ck_assert_int_eq(masked, masked_want);
    workspace ws;
    ck_assert_int_eq(workspace_alloc(&ws, &n, count, count, 1, &err), 0);
    float *params = floats_alloc(net_state_size(&n));
    net_init_params(&n, params, INIT_HE, 5);
    rng_state = 88172645463325252ull;
    float *input = workspace_input(&ws);
    for (size_t i = 0; i < count * shape_size(n.input); i++) input[i] = (float)uniform() - 0.5f;
    int labels[16];
    for (int s = 0; s < count; s++) labels[s] = s % 4;
    const int starts[3] = {0, count / 2, count};
    ws.training = 1;
    ws.cut = (lane_cut){2, starts, n.n_params};
    net_forward(&n, params, &ws, count, 1);
    net_backward(&n, params, &ws, labels, count, grads, 1);
    for (int s = 0; s < count; s++)
        memcpy(probs + (size_t)s * n.n_classes, net_probs(&n, &ws, s), n.n_classes * sizeof *probs);
    aligned_free(params);
    workspace_free(&ws);
    net_free(&n);
    config_free(&cfg);
}

/* The network of `text` (4 classes) trained one pass with its relus fused into the layers
 * beside them and as passes of their own: the same bits. */
static void check_fused_same_bits(const char *text, shape3 in, int fused, int masked) {
    enum { COUNT = 6, GRADS = 2 * 20000 };
    float probs[2][COUNT * 4];
    float *grads[2] = {floats_alloc(GRADS), floats_alloc(GRADS)};
    for (int unfuse = 0; unfuse < 2; unfuse++) {
        memset(grads[unfuse], 0, GRADS * sizeof(float));
        run_pass(text, in, COUNT, unfuse, fused, masked, probs[unfuse], grads[unfuse]);
    }
    ck_assert_msg(memcmp(probs[0], probs[1], sizeof probs[0]) == 0, "probabilities differ: %s",
                  text);
    ck_assert_msg(memcmp(grads[0], grads[1], GRADS * sizeof(float)) == 0, "gradients differ: %s",
                  text);
    aligned_free(grads[0]), aligned_free(grads[1]);
}

/* A relu that the layer before applies, or whose gradient the layer after takes, gives the same
 * bits as its own passes, forward and backward: after conv2d, batchnorm and dense; before
 * conv2d and max-pooling, in each of max-pooling's ways through a window (blocks of 16
 * channels, eight at a time, 32 or more held together, a few one by one, ties "all",
 * overlapping windows). */
START_TEST(test_relu_fused_same_bits) {
#define NET_START "{\"data\":{\"train\":{\"images\":\"x\",\"labels\":\"y\"}},\"network\":["
#define NET_END "{\"type\":\"dense\",\"units\":20},{\"type\":\"relu\"},"                \
                "{\"type\":\"dense\",\"units\":4},{\"type\":\"softmax\"}]}"
    const shape3 in = {10, 9, 1}; /* one channel: the first layer takes the direct loops */
    check_fused_same_bits(NET_START
                          "{\"type\":\"conv2d\",\"filters\":5,\"kernel\":3},{\"type\":\"relu\"},"
                          "{\"type\":\"conv2d\",\"filters\":32,\"kernel\":3,\"padding\":1},"
                          "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"maxpool\"},"
                          NET_END,
                          in, 3, 2);
    /* A relu of its own (after max-pool, which applies none) before conv2d: conv2d masks its
     * input gradient with the relu's output buffer. */
    check_fused_same_bits(NET_START
                          "{\"type\":\"conv2d\",\"filters\":4,\"kernel\":3},{\"type\":\"tanh\"},"
                          "{\"type\":\"maxpool\"},{\"type\":\"relu\"},"
                          "{\"type\":\"conv2d\",\"filters\":8,\"kernel\":3,\"padding\":1},"
                          "{\"type\":\"relu\"},{\"type\":\"maxpool\"}," NET_END,
                          in, 2, 2);
    /* batchnorm after dense, before a dense layer: batchnorm takes the relu's gradient. */
    check_fused_same_bits(NET_START
                          "{\"type\":\"conv2d\",\"filters\":4,\"kernel\":3},{\"type\":\"sigmoid\"},"
                          "{\"type\":\"maxpool\"},{\"type\":\"dense\",\"units\":20},"
                          "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
                          "{\"type\":\"dense\",\"units\":4},{\"type\":\"softmax\"}]}",
                          in, 1, 0);
    const char *pools[] = {
        "{\"type\":\"maxpool\"}", "{\"type\":\"maxpool\",\"ties\":\"all\"}",
        "{\"type\":\"maxpool\",\"size\":3,\"stride\":2}",
        "{\"type\":\"maxpool\",\"size\":3,\"stride\":2,\"ties\":\"all\"}"};
    const int filters[] = {6, 8, 16, 40};
    for (int p = 0; p < 4; p++)
        for (int f = 0; f < 4; f++) {
            char text[1024];
            snprintf(text, sizeof text,
                     NET_START "{\"type\":\"conv2d\",\"filters\":4,\"kernel\":3},"
                               "{\"type\":\"sigmoid\"},{\"type\":\"conv2d\",\"filters\":%d,"
                               "\"kernel\":3,\"padding\":1},{\"type\":\"relu\"},%s," NET_END,
                     filters[f], pools[p]);
            check_fused_same_bits(text, in, 2, 1);
        }
#undef NET_START
#undef NET_END
}
END_TEST

static void check_network(const char *text, shape3 input_shape) {
    check_network_batch(text, input_shape, 1);
}

/* The summed loss of `count` samples (in two lanes when there are several) against
 * differences of the parameters. */
static void check_network_batch(const char *text, shape3 input_shape, int count) {
    config cfg;
    errbuf err;
    ck_assert_msg(config_parse_text(&cfg, text, "t.json", ".", NULL, 0, &err) == 0, "%s", err.msg);
    net n;
    ck_assert_msg(net_build(&n, &cfg, input_shape, &err) == 0, "%s", err.msg);
    workspace ws;
    ck_assert_int_eq(workspace_alloc(&ws, &n, count, count, 1, &err), 0);
    const int lanes = count > 1 ? 2 : 1;
    float *params = floats_alloc(net_state_size(&n)), *dparams = floats_alloc(lanes * n.n_params);
    net_init_params(&n, params, INIT_XAVIER, 3);
    float *input = workspace_input(&ws);
    for (size_t i = 0; i < count * shape_size(n.input); i++) input[i] = (float)uniform();
    int labels[16];
    for (int s = 0; s < count; s++) labels[s] = (2 + s) % 4;
    const int starts[3] = {0, count / 2, count};
    ws.training = 1;
    ws.cut = (lane_cut){count > 1 ? 2 : 0, starts, n.n_params};
    net_forward(&n, params, &ws, count, 1);
    net_backward(&n, params, &ws, labels, count, dparams, 1);
    if (lanes == 2)
        for (size_t i = 0; i < n.n_params; i++) dparams[i] += dparams[n.n_params + i];
    const double eps = 1e-3; /* small: no max-pool window may change its winner */
    for (size_t i = 0; i < n.n_params; i++) {
        float keep = params[i];
        double up = 0.0, down = 0.0;
        params[i] = keep + (float)eps;
        net_forward(&n, params, &ws, count, 1);
        for (int s = 0; s < count; s++) up += net_loss(&n, &ws, s, labels[s]);
        params[i] = keep - (float)eps;
        net_forward(&n, params, &ws, count, 1);
        for (int s = 0; s < count; s++) down += net_loss(&n, &ws, s, labels[s]);
        params[i] = keep;
        expect_close(dparams[i], (up - down) / (2 * eps), "net param", i, text);
    }
    aligned_free(params), aligned_free(dparams);
    workspace_free(&ws);
    net_free(&n);
    config_free(&cfg);
}

/* One 2x2 window holding [3 3; 1 3]: "all" routes the gradient to the three maxima, "first"
 * to the first in row-major order only. */
START_TEST(test_maxpool_tie_rules) {
    const float in[4] = {3, 3, 1, 3}, dout[1] = {2.5f};
    float out[1], din[4];
    const char *rules[2] = {"{\"type\":\"maxpool\",\"ties\":\"all\"}",
                            "{\"type\":\"maxpool\",\"ties\":\"first\"}"};
    const float want[2][4] = {{2.5f, 2.5f, 0, 2.5f}, {2.5f, 0, 0, 0}};
    for (int r = 0; r < 2; r++) {
        test_layer tl;
        make_layer(&tl, rules[r], (shape3){2, 2, 1});
        tl.l.ops->forward(&tl.l, NULL, in, out, &one);
        ck_assert_float_eq(out[0], 3.0f);
        tl.l.ops->backward(&tl.l, NULL, in, out, dout, din, NULL, &one);
        for (int i = 0; i < 4; i++) ck_assert_float_eq(din[i], want[r][i]);
        free_layer(&tl);
    }
}
END_TEST

/* The channels of a window together: inputs of 4x20, 5x21 and 5x20 (a row, and a column, outside
 * the windows) of C channels in 2x2 windows (C = 32 and 16: blocks of 16 channels in registers; 24
 * and 8: eight at a time; 40: the loop over any number of channels; 7, 6, 3 and 1: the
 * channel-by-channel search, with AVX-512 four windows at once and the rest one at a time;
 * each row has 10 windows), channel c's values chosen so that its
 * maxima tie at positions that vary with c (none, two, three or all four of a window). Forward
 * must give each window's maximum; backward, with ties "first", each window's gradient to the
 * first maximum in row-major order, with ties "all" to every maximum, channel by channel, as
 * the one-channel rules say. */
START_TEST(test_maxpool_many_channels) {
    enum { HMAX = 5, WMAX = 21, CMAX = 40 };
    float in[HMAX * WMAX * CMAX], out[(HMAX / 2) * (WMAX / 2) * CMAX];
    float dout[(HMAX / 2) * (WMAX / 2) * CMAX], din[HMAX * WMAX * CMAX];
    float want[HMAX * WMAX * CMAX], top_of[(HMAX / 2) * (WMAX / 2) * CMAX];
    const int channels[] = {40, 32, 24, 16, 8, 7, 6, 3, 1};
    for (int shape = 0; shape < 3; shape++)
    for (int first = 0; first < 2; first++)
    for (size_t t = 0; t < sizeof channels / sizeof channels[0]; t++) {
        const int C = channels[t], H = 4 + (shape > 0), W = 20 + (shape == 1);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++) {
                    /* position k of its window (0..3): tie on positions whose bit is set in c's
                     * pattern, else a smaller value that differs by position */
                    const int k = (y % 2) * 2 + x % 2, pattern = (c * 7 + y / 2 * 3 + x / 2) % 16;
                    in[(y * W + x) * C + c] = (pattern >> k) & 1 ? 5.0f : 1.0f + 0.25f * (float)k;
                }
        for (int i = 0; i < (H / 2) * (W / 2) * C; i++) dout[i] = 1.0f + (float)i;
        memset(want, 0, sizeof want);
        for (int oy = 0; oy < H / 2; oy++)
            for (int ox = 0; ox < W / 2; ox++)
                for (int c = 0; c < C; c++) {
                    const int o = (oy * (W / 2) + ox) * C + c;
                    int best = -1;
                    float top = -1.0f;
                    for (int k = 0; k < 4; k++) { /* the first maximum in row-major order */
                        const float v = in[((oy * 2 + k / 2) * W + ox * 2 + k % 2) * C + c];
                        if (v > top) top = v, best = k;
                    }
                    top_of[o] = top;
                    for (int k = 0; k < 4; k++) {
                        const int at = ((oy * 2 + k / 2) * W + ox * 2 + k % 2) * C + c;
                        if (first ? k == best : in[at] == top) want[at] = dout[o];
                    }
                }
        test_layer tl;
        make_layer(&tl, first ? "{\"type\":\"maxpool\",\"ties\":\"first\"}"
                              : "{\"type\":\"maxpool\",\"ties\":\"all\"}",
                   (shape3){H, W, C});
        tl.l.ops->forward(&tl.l, NULL, in, out, &one);
        for (int i = 0; i < (H / 2) * (W / 2) * C; i++)
            ck_assert_msg(out[i] == top_of[i], "%d channels: out[%d] = %g, want %g", C, i,
                          out[i], top_of[i]);
        for (int i = 0; i < H * W * C; i++) din[i] = -7.0f; /* every position must be written */
        tl.l.ops->backward(&tl.l, NULL, in, out, dout, din, NULL, &one);
        for (int i = 0; i < H * W * C; i++)
            ck_assert_msg(din[i] == want[i], "ties %s, %d channels: din[%d] = %g, want %g",
                          first ? "first" : "all", C, i, din[i], want[i]);
        free_layer(&tl);
    }
}
END_TEST

/* Overlapping windows (size 2, stride 1) over a 3x3 input of equal values, every position a
 * maximum of each window that holds it: "all" gives a position the sum of the gradients of the
 * windows holding it, "first" gives each window's gradient to its top-left position only. */
START_TEST(test_maxpool_overlapping_ties) {
    float in[9], out[4], din[9];
    for (int i = 0; i < 9; i++) in[i] = 1.0f;
    const float dout[4] = {1, 2, 3, 4};
    const char *rules[2] = {"{\"type\":\"maxpool\",\"size\":2,\"stride\":1,\"ties\":\"all\"}",
                            "{\"type\":\"maxpool\",\"size\":2,\"stride\":1,\"ties\":\"first\"}"};
    const float want[2][9] = {{1, 3, 2, 4, 10, 6, 3, 7, 4}, {1, 2, 0, 3, 4, 0, 0, 0, 0}};
    for (int r = 0; r < 2; r++) {
        test_layer tl;
        make_layer(&tl, rules[r], (shape3){3, 3, 1});
        tl.l.ops->forward(&tl.l, NULL, in, out, &one);
        for (int i = 0; i < 4; i++) ck_assert_float_eq(out[i], 1.0f);
        tl.l.ops->backward(&tl.l, NULL, in, out, dout, din, NULL, &one);
        for (int i = 0; i < 9; i++)
            ck_assert_msg(din[i] == want[r][i], "ties %s: din[%d] = %g, want %g",
                          r ? "first" : "all", i, din[i], want[r][i]);
        free_layer(&tl);
    }
}
END_TEST

/* The printed report loop writes window (i, j)'s gradient at d_input[i + i2][j + j2]. On a 4x4
 * input with the maximum of every window at offset (1, 1), window (1, 1) writes (2, 2) and
 * windows (0, 0), (0, 1), (1, 0) write (1, 1), (1, 2), (2, 1). */
START_TEST(test_maxpool_report_index_bug) {
    float in[16] = {0}, out[4], din[16];
    const float dout[4] = {1, 2, 3, 4};
    in[1 * 4 + 1] = in[1 * 4 + 3] = in[3 * 4 + 1] = in[3 * 4 + 3] = 9;
    test_layer tl;
    make_layer(&tl, "{\"type\":\"maxpool\",\"ties\":\"all\",\"report_index_bug\":true}",
               (shape3){4, 4, 1});
    tl.l.ops->forward(&tl.l, NULL, in, out, &one);
    tl.l.ops->backward(&tl.l, NULL, in, out, dout, din, NULL, &one);
    float want[16] = {0};
    want[1 * 4 + 1] = 1, want[1 * 4 + 2] = 2, want[2 * 4 + 1] = 3, want[2 * 4 + 2] = 4;
    for (int i = 0; i < 16; i++) ck_assert_float_eq(din[i], want[i]);
    free_layer(&tl);
}
END_TEST

/* double_sigmoid_backward computes dout * s * (1 - s) with s = sigmoid(y), y the output. */
START_TEST(test_double_sigmoid_switch) {
    const float in[3] = {-1.5f, 0.2f, 2.0f}, dout[3] = {0.3f, -1.0f, 2.0f};
    float out[3], din[3];
    test_layer tl;
    make_layer(&tl, "{\"type\":\"sigmoid\",\"double_sigmoid_backward\":true}", (shape3){1, 1, 3});
    tl.l.ops->forward(&tl.l, NULL, in, out, &one);
    tl.l.ops->backward(&tl.l, NULL, in, out, dout, din, NULL, &one);
    for (int i = 0; i < 3; i++) {
        double y = 1.0 / (1.0 + exp(-(double)in[i]));
        double s = 1.0 / (1.0 + exp(-y));
        double want = dout[i] * s * (1.0 - s), true_grad = dout[i] * y * (1.0 - y);
        ck_assert_double_eq_tol(din[i], want, 1e-6);
        ck_assert_msg(fabs(din[i] - true_grad) > 1e-3, "the switch must differ from the true gradient");
    }
    free_layer(&tl);
}
END_TEST

static Suite *gradcheck_suite(void) {
    Suite *s = suite_create("gradcheck");
    TCase *tc = tcase_create("layers");
    tcase_add_test(tc, test_conv2d_gradients);
    tcase_add_test(tc, test_maxpool_gradients);
    tcase_add_test(tc, test_dense_gradients);
    tcase_add_test(tc, test_batchnorm_gradients);
    tcase_add_test(tc, test_activation_gradients);
    tcase_add_test(tc, test_pool_and_dropout_gradients);
    tcase_add_test(tc, test_dropout_mask);
    tcase_add_test(tc, test_network_gradients);
    tcase_add_test(tc, test_relu_fused_same_bits);
    tcase_add_test(tc, test_maxpool_tie_rules);
    tcase_add_test(tc, test_maxpool_overlapping_ties);
    tcase_add_test(tc, test_maxpool_many_channels);
    tcase_add_test(tc, test_maxpool_report_index_bug);
    tcase_add_test(tc, test_double_sigmoid_switch);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(gradcheck_suite)
