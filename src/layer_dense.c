/*
 * dense: a fully connected layer on the flattened input (row, column, channel order). Weights are
 * (inputs, units), as the report's numpy arrays are, and out = in . W + bias.
 *
 * Backward: dW[i][o] += in[i] * dout[o];  dbias[o] += dout[o];  din[i] = sum_o W[i][o] * dout[o].
 *
 * A call handles n samples at once, as the rows of one matrix multiply (gemm.c), so the weights
 * are read once per call, not once per sample.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "ompcnn/layer.h"
#include "gemm.h"
#include "parallel.h"
#include "json.h"
#include "kernels.h"

typedef struct dense_settings {
    int units, bias;
} dense_settings;

static const char *const dense_keys[] = {"units", "bias", NULL};

static int dense_parse(void *settings, const cJSON *obj, const char *path, errbuf *err) {
    dense_settings *s = settings;
    if (json_get_int(obj, "units", INT_MIN, 1, 1 << 20, path, &s->units, err) ||
        json_get_bool(obj, "bias", 1, path, &s->bias, err))
        return -1;
    return 0;
}

static int dense_shape(const void *settings, shape3 in, shape3 *out, const char *path,
                       errbuf *err) {
    const dense_settings *s = settings;
    if ((double)shape_size(in) * s->units > (double)(INT_MAX / 4))
        return errorf(err, "%s.units: %d units on %zu inputs is too many weights", path, s->units,
                    shape_size(in));
    *out = (shape3){1, 1, s->units};
    return 0;
}

static int dense_params(const void *settings, shape3 in, shape3 out, tensor_desc desc[2]) {
    const dense_settings *s = settings;
    (void)out;
    int n_in = (int)shape_size(in);
    desc[0] = (tensor_desc){"weight", 2, {n_in, s->units}, (size_t)n_in * s->units};
    if (!s->bias) return 1;
    desc[1] = (tensor_desc){"bias", 1, {s->units}, (size_t)s->units};
    return 2;
}

static void dense_init(const layer *l, float *params, init_kind kind, mt19937 *rng) {
    const dense_settings *s = l->settings;
    init_weights(params, l->tensors[0].size, (int)shape_size(l->in), s->units, kind, rng);
}

/* Plain reference kernels. */
void dense_forward_ref(float *out, const float *in, const float *weight, const float *bias, int n,
                       int n_in, int n_out) {
    for (int s = 0; s < n; s++)
        for (int o = 0; o < n_out; o++) {
            float acc = 0.0f;
            for (int i = 0; i < n_in; i++)
                acc += in[(size_t)s * n_in + i] * weight[(size_t)i * n_out + o];
            out[(size_t)s * n_out + o] = bias ? acc + bias[o] : acc;
        }
}

void dense_backward_ref(float *din, float *dweight, float *dbias, const float *dout,
                        const float *in, const float *weight, int n, int n_in, int n_out) {
    for (int s = 0; s < n; s++) {
        const float *x = in + (size_t)s * n_in, *dy = dout + (size_t)s * n_out;
        for (int o = 0; o < n_out; o++)
            if (dbias) dbias[o] += dy[o];
        for (int i = 0; i < n_in; i++) {
            float acc = 0.0f;
            for (int o = 0; o < n_out; o++) {
                dweight[(size_t)i * n_out + o] += x[i] * dy[o];
                acc += weight[(size_t)i * n_out + o] * dy[o];
            }
            if (din) din[(size_t)s * n_in + i] = acc;
        }
    }
}

/* ---- fast kernels ----
 * Lane by lane (cut: NULL for one lane of all n samples): the samples of a lane are the rows of
 * one GEMM, whatever else the call holds, and the lanes' GEMMs share one parallel region,
 * LANE_BATCH lanes at a time. Lane l's gradient goes to dweight and dbias + l * cut->grad_stride. */
enum { LANE_BATCH = 32 };

static void forward_lanes(float *out, const float *in, const float *weight, const float *bias,
                          int n, const lane_cut *cut, int n_in, int n_out, int nt, int relu) {
    const int lanes = cut_lanes(cut);
    gemm_args list[LANE_BATCH];
    for (int first = 0; first < lanes; first += LANE_BATCH) {
        int count = 0;
        for (int lane = first; lane < lanes && count < LANE_BATCH; lane++) {
            int s0 = cut_start(cut, lane, n), s1 = cut_start(cut, lane + 1, n);
            list[count++] = (gemm_args){0, 0, s1 - s0, n_out, n_in, in + (size_t)s0 * n_in, n_in,
                                        weight, n_out, 0, out + (size_t)s0 * n_out, n_out};
        }
        gemm_batch(count, list, nt);
    }
    if (bias)
        for (int k = 0; k < n; k++)
            for (int o = 0; o < n_out; o++) out[(size_t)k * n_out + o] += bias[o];
    if (relu) relu_in_place(out, (size_t)n * n_out);
}

/* din of the lanes of more than one sample from their transposes dt (see backward_lanes), in
 * blocks of 16 samples x 256 inputs: each of the 16 rows is written along, from the block's
 * columns of dt, which stay in cache. first_block holds the prefix sums of the lanes' blocks. */
typedef struct transpose_args {
    const lane_cut *cut;
    int n, n_in, first_lane;
    float *din;
    const float *dt;
    const long *first_block;
} transpose_args;

static int transpose_blocks(void *ctx, long begin, long end, int worker) {
    const transpose_args *a = ctx;
    const long i_blocks = (a->n_in + 255) / 256;
    int lane = 0;
    (void)worker;
    for (long b = begin; b < end; b++) {
        while (b >= a->first_block[lane + 1]) lane++;
        const int base = cut_start(a->cut, a->first_lane + lane, a->n);
        const int m = cut_start(a->cut, a->first_lane + lane + 1, a->n) - base;
        const long local = b - a->first_block[lane];
        const int s0 = (int)(local / i_blocks) * 16, i0 = (int)(local % i_blocks) * 256;
        const int s1 = s0 + 16 < m ? s0 + 16 : m, i1 = i0 + 256 < a->n_in ? i0 + 256 : a->n_in;
        float *din = a->din + (size_t)base * a->n_in;
        const float *dt = a->dt + (size_t)base * a->n_in;
        /* Along din's rows: its rows lie n_in floats apart, often a multiple of 4 KB, and
         * writing down a column of them fights over the same few cache sets. */
        for (int s = s0; s < s1; s++)
            for (int i = i0; i < i1; i++) din[(size_t)s * a->n_in + i] = dt[(size_t)i * m + s];
    }
    return 0;
}

static void backward_lanes(float *din, float *dweight, float *dbias, const float *dout,
                           const float *in, const float *weight, int n, const lane_cut *cut,
                           int n_in, int n_out, float *scratch, int nt) {
    const int lanes = cut_lanes(cut);
    const size_t stride = cut->grad_stride;
    gemm_args list[LANE_BATCH];
    long blocks[LANE_BATCH + 1];
    for (int first = 0; first < lanes; first += LANE_BATCH) {
        const int count = lanes - first < LANE_BATCH ? lanes - first : LANE_BATCH;
        /* The bias: the lane's samples summed in order. */
        for (int i = 0; dbias && i < count; i++) {
            int s0 = cut_start(cut, first + i, n), s1 = cut_start(cut, first + i + 1, n);
            float *db = dbias + (size_t)(first + i) * stride;
            for (int o = 0; o < n_out; o++) db[o] = dout[(size_t)s0 * n_out + o];
            for (int k = s0 + 1; k < s1; k++)
                for (int o = 0; o < n_out; o++) db[o] += dout[(size_t)k * n_out + o];
        }
        /* dW (n_in x n_out) = in^T . dout over the lane's samples, in order. */
        for (int i = 0; i < count; i++) {
            int s0 = cut_start(cut, first + i, n), s1 = cut_start(cut, first + i + 1, n);
            list[i] = (gemm_args){1, 0, n_in, n_out, s1 - s0, in + (size_t)s0 * n_in, n_in,
                                  dout + (size_t)s0 * n_out, n_out, 0,
                                  dweight + (size_t)(first + i) * stride, n_out};
        }
        gemm_batch(count, list, nt);
        if (!din) continue;
        /* din^T = W . dout^T, so that the large W is read in place; for a lane of one sample
         * din^T is din, else it goes through scratch and is transposed. */
        const double start = profile_on ? omp_get_wtime() : 0.0;
        blocks[0] = 0;
        for (int i = 0; i < count; i++) {
            int s0 = cut_start(cut, first + i, n), m = cut_start(cut, first + i + 1, n) - s0;
            float *dt = m == 1 ? din + (size_t)s0 * n_in : scratch + (size_t)s0 * n_in;
            list[i] = (gemm_args){0, 1, n_in, m, n_out, weight, n_out, dout + (size_t)s0 * n_out,
                                  n_out, 0, dt, m};
            blocks[i + 1] = blocks[i] + (m > 1 ? (long)((m + 15) / 16) * ((n_in + 255) / 256) : 0);
        }
        gemm_batch(count, list, nt);
        transpose_args t = {cut, n, n_in, first, din, scratch, blocks};
        const int s_lo = cut_start(cut, first, n), s_hi = cut_start(cut, first + count, n);
        /* A strided copy: each element costs about four of an elementwise loop's. */
        par_blocks(nt, (size_t)(s_hi - s_lo) * n_in * 4 * PAR_ELEMENT_COST, blocks[count],
                   transpose_blocks, &t);
        if (profile_on) profile_input_grad(omp_get_wtime() - start);
    }
}

static const lane_cut one_lane = {0, NULL, 0};

void dense_forward(float *out, const float *in, const float *weight, const float *bias, int n,
                   int n_in, int n_out, int nt) {
    forward_lanes(out, in, weight, bias, n, &one_lane, n_in, n_out, nt, 0);
}

void dense_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                    const float *weight, int n, int n_in, int n_out, float *scratch, int nt) {
    backward_lanes(din, dweight, dbias, dout, in, weight, n, &one_lane, n_in, n_out, scratch, nt);
}

/* The transposed input gradient of the samples (of each lane with more than one). */
static size_t dense_scratch_size(const layer *l, int max_n, int max_threads) {
    (void)max_threads;
    return max_n > 1 ? (size_t)max_n * shape_size(l->in) : 0;
}

static void dense_layer_forward(const layer *l, const float *params, const float *in, float *out,
                                const run_ctx *run) {
    const dense_settings *s = l->settings;
    forward_lanes(out, in, params, s->bias ? params + l->tensors[0].size : NULL, run->n,
                  &run->cut, (int)shape_size(l->in), s->units, run->nt, run->relu);
}

static void dense_layer_backward(const layer *l, const float *params, const float *in,
                                 const float *out, const float *dout, float *din, float *dparams,
                                 const run_ctx *run) {
    const dense_settings *s = l->settings;
    (void)out;
    backward_lanes(din, dparams, s->bias ? dparams + l->tensors[0].size : NULL, dout, in, params,
                   run->n, &run->cut, (int)shape_size(l->in), s->units, run->scratch, run->nt);
}

static void dense_describe(const void *settings, char *buf, size_t size) {
    const dense_settings *s = settings;
    snprintf(buf, size, "dense %d%s", s->units, s->bias ? "" : " no-bias");
}

static void dense_geometry(const void *settings, layer_geometry *g) {
    const dense_settings *s = settings;
    *g = (layer_geometry){.bias = s->bias};
}

const layer_ops dense_ops = {
    .type = "dense",
    .settings_size = sizeof(dense_settings),
    .keys = dense_keys,
    .parse = dense_parse,
    .shape = dense_shape,
    .params = dense_params,
    .scratch_size = dense_scratch_size,
    .init = dense_init,
    .forward = dense_layer_forward,
    .backward = dense_layer_backward,
    .describe = dense_describe,
    .geometry = dense_geometry,
    .relu_epilogue = 1,
};
