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

/* Fast kernels: the n samples are the rows of one GEMM. */
void dense_forward(float *out, const float *in, const float *weight, const float *bias, int n,
                   int n_in, int n_out, int nt) {
    gemm(0, 0, n, n_out, n_in, in, n_in, weight, n_out, 0, out, n_out, nt);
    if (bias)
        for (int s = 0; s < n; s++)
            for (int o = 0; o < n_out; o++) out[(size_t)s * n_out + o] += bias[o];
}

/* din (n x n_in) from its transpose dt (n_in x n), in blocks of 16 samples x 256 inputs: each
 * input's 16 values are read together and written to 16 rows that advance in step. */
typedef struct transpose_args {
    float *din;
    const float *dt;
    int n, n_in;
} transpose_args;

static int transpose_blocks(void *ctx, long begin, long end, int worker) {
    const transpose_args *t = ctx;
    const long i_blocks = (t->n_in + 255) / 256;
    (void)worker;
    for (long b = begin; b < end; b++) {
        const int s0 = (int)(b / i_blocks) * 16, i0 = (int)(b % i_blocks) * 256;
        const int s1 = s0 + 16 < t->n ? s0 + 16 : t->n, i1 = i0 + 256 < t->n_in ? i0 + 256 : t->n_in;
        for (int i = i0; i < i1; i++)
            for (int s = s0; s < s1; s++)
                t->din[(size_t)s * t->n_in + i] = t->dt[(size_t)i * t->n + s];
    }
    return 0;
}

void dense_backward(float *din, float *dweight, float *dbias, const float *dout, const float *in,
                    const float *weight, int n, int n_in, int n_out, float *scratch, int nt) {
    if (dbias) {
        for (int o = 0; o < n_out; o++) dbias[o] = dout[o];
        for (int s = 1; s < n; s++)
            for (int o = 0; o < n_out; o++) dbias[o] += dout[(size_t)s * n_out + o];
    }
    /* dW (n_in x n_out) = in^T . dout, summed over the samples in order. */
    gemm(1, 0, n_in, n_out, n, in, n_in, dout, n_out, 0, dweight, n_out, nt);
    if (!din) return;
    /* din (n x n_in) = dout . W^T, computed as din^T = W . dout^T so that the large W is read in
     * place rather than packed; for one sample din^T is din, else it goes through scratch. */
    float *dt = n == 1 ? din : scratch;
    gemm(0, 1, n_in, n, n_out, weight, n_out, dout, n_out, 0, dt, n, nt);
    if (n > 1) {
        transpose_args t = {din, dt, n, n_in};
        const long blocks = (long)((n + 15) / 16) * ((n_in + 255) / 256);
        /* A strided copy: each element costs about four of an elementwise loop's. */
        par_blocks(nt, (size_t)n * n_in * 4 * PAR_ELEMENT_COST, blocks, transpose_blocks, &t);
    }
}

/* The transposed input gradient of the samples (of each lane with more than one). */
static size_t dense_scratch_size(const layer *l, int max_n, int max_threads) {
    (void)max_threads;
    return max_n > 1 ? (size_t)max_n * shape_size(l->in) : 0;
}

/* Lane by lane: the samples of a lane are the rows of one GEMM, whatever else the pass holds;
 * the lanes' GEMMs share one parallel region, LANE_BATCH lanes at a time. */
enum { LANE_BATCH = 32 };

static void dense_layer_forward(const layer *l, const float *params, const float *in, float *out,
                                const run_ctx *run) {
    const dense_settings *s = l->settings;
    const int n_in = (int)shape_size(l->in), n_out = s->units, lanes = cut_lanes(&run->cut);
    gemm_args list[LANE_BATCH];
    for (int first = 0; first < lanes; first += LANE_BATCH) {
        int count = 0;
        for (int lane = first; lane < lanes && count < LANE_BATCH; lane++) {
            int s0 = cut_start(&run->cut, lane, run->n), s1 = cut_start(&run->cut, lane + 1, run->n);
            list[count++] = (gemm_args){0, 0, s1 - s0, n_out, n_in, in + (size_t)s0 * n_in, n_in,
                                        params, n_out, 0, out + (size_t)s0 * n_out, n_out};
        }
        gemm_batch(count, list, run->nt);
    }
    if (s->bias) {
        const float *bias = params + l->tensors[0].size;
        for (int k = 0; k < run->n; k++)
            for (int o = 0; o < n_out; o++) out[(size_t)k * n_out + o] += bias[o];
    }
}

/* din of the lanes of more than one sample, from their transposes in scratch (see
 * dense_backward), in blocks of 16 samples x 256 inputs over all those lanes. */
typedef struct lanes_transpose_args {
    const lane_cut *cut;
    int n, n_in;
    float *din;
    const float *scratch;
    const long *first_block; /* lanes + 1 prefix sums of the lanes' blocks */
} lanes_transpose_args;

static int lanes_transpose(void *ctx, long begin, long end, int worker) {
    const lanes_transpose_args *a = ctx;
    int lane = 0;
    (void)worker;
    for (long b = begin; b < end; b++) {
        while (b >= a->first_block[lane + 1]) lane++;
        const int s0 = cut_start(a->cut, lane, a->n), m = cut_start(a->cut, lane + 1, a->n) - s0;
        transpose_args t = {a->din + (size_t)s0 * a->n_in, a->scratch + (size_t)s0 * a->n_in, m,
                            a->n_in};
        const long local = b - a->first_block[lane];
        transpose_blocks(&t, local, local + 1, 0);
    }
    return 0;
}

static void dense_layer_backward(const layer *l, const float *params, const float *in,
                                 const float *out, const float *dout, float *din, float *dparams,
                                 const run_ctx *run) {
    const dense_settings *s = l->settings;
    const int n_in = (int)shape_size(l->in), n_out = s->units, lanes = cut_lanes(&run->cut);
    const size_t stride = run->cut.grad_stride;
    (void)out;
    gemm_args list[LANE_BATCH];
    long blocks[LANE_BATCH + 1];
    for (int first = 0; first < lanes; first += LANE_BATCH) {
        const int count = lanes - first < LANE_BATCH ? lanes - first : LANE_BATCH;
        /* The bias: the lane's samples summed in order. */
        for (int i = 0; s->bias && i < count; i++) {
            int s0 = cut_start(&run->cut, first + i, run->n);
            int s1 = cut_start(&run->cut, first + i + 1, run->n);
            float *db = dparams + (size_t)(first + i) * stride + l->tensors[0].size;
            for (int o = 0; o < n_out; o++) db[o] = dout[(size_t)s0 * n_out + o];
            for (int k = s0 + 1; k < s1; k++)
                for (int o = 0; o < n_out; o++) db[o] += dout[(size_t)k * n_out + o];
        }
        /* dW (n_in x n_out) = in^T . dout over the lane's samples, in order. */
        for (int i = 0; i < count; i++) {
            int s0 = cut_start(&run->cut, first + i, run->n);
            int s1 = cut_start(&run->cut, first + i + 1, run->n);
            list[i] = (gemm_args){1, 0, n_in, n_out, s1 - s0, in + (size_t)s0 * n_in, n_in,
                                  dout + (size_t)s0 * n_out, n_out, 0,
                                  dparams + (size_t)(first + i) * stride, n_out};
        }
        gemm_batch(count, list, run->nt);
        if (!din) continue;
        /* din^T = W . dout^T, so that the large W is read in place; one sample's is its din. */
        blocks[0] = 0;
        for (int i = 0; i < count; i++) {
            int s0 = cut_start(&run->cut, first + i, run->n);
            int m = cut_start(&run->cut, first + i + 1, run->n) - s0;
            float *dt = m == 1 ? din + (size_t)s0 * n_in : run->scratch + (size_t)s0 * n_in;
            list[i] = (gemm_args){0, 1, n_in, m, n_out, params, n_out, dout + (size_t)s0 * n_out,
                                  n_out, 0, dt, m};
            blocks[i + 1] = blocks[i] + (m > 1 ? (long)((m + 15) / 16) * ((n_in + 255) / 256) : 0);
        }
        gemm_batch(count, list, run->nt);
        lane_cut sub = {count, run->cut.lanes > 0 ? run->cut.start + first : NULL, 0};
        if (run->cut.lanes == 0) sub.lanes = 0;
        lanes_transpose_args t = {&sub, run->n, n_in, din, run->scratch, blocks};
        const int s_lo = cut_start(&run->cut, first, run->n);
        const int s_hi = cut_start(&run->cut, first + count, run->n);
        par_blocks(run->nt, (size_t)(s_hi - s_lo) * n_in * 4 * PAR_ELEMENT_COST, blocks[count],
                   lanes_transpose, &t);
    }
}

static void dense_describe(const void *settings, char *buf, size_t size) {
    const dense_settings *s = settings;
    snprintf(buf, size, "dense %d%s", s->units, s->bias ? "" : " no-bias");
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
};
