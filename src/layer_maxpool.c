/*
 * maxpool: the maximum of each size x size window, per channel, windows `stride` apart (default
 * stride = size: non-overlapping, and a trailing row or column that does not fill a window is
 * dropped, as the report's h // 2 does).
 *
 * Backward routes each window's gradient to its maximum. The tie rule decides what happens when
 * several positions equal the maximum: "all" gives every one of them the gradient (the report's
 * loop compares each position with the max), "first" only the first in row-major order.
 *
 * report_index_bug reproduces one more line of the report's printed MaxPool.backprop, which writes
 * the gradient of window (i, j) to d_input[i + i2, j + j2] (the window's output index plus the
 * offset) instead of d_input[i * stride + i2, j * stride + j2], assigning rather than adding.
 *
 * After a relu (run_ctx.relu_din) backward also passes the gradient back through it: a window's
 * gradient goes on only when its maximum is positive, for the position that receives it holds
 * that maximum (the relu's output, this layer's input), and every other position gets 0, as the
 * relu's own backward would give.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "kernels.h"
#include "ompcnn/layer.h"
#include "parallel.h"
#include "json.h"

typedef struct maxpool_settings {
    int size, stride, ties_first, report_index_bug;
} maxpool_settings;

static const char *const maxpool_keys[] = {"size", "stride", "ties", "report_index_bug", NULL};
static const char *const tie_rules[] = {"all", "first", NULL};

static int maxpool_parse(void *settings, const cJSON *obj, const char *path, errbuf *err) {
    maxpool_settings *s = settings;
    if (pool_window_parse(obj, path, &s->size, &s->stride, err) ||
        json_get_choice(obj, "ties", 1, tie_rules, path, &s->ties_first, err) ||
        json_get_bool(obj, "report_index_bug", 0, path, &s->report_index_bug, err))
        return -1;
    return 0;
}

static int maxpool_shape(const void *settings, shape3 in, shape3 *out, const char *path,
                         errbuf *err) {
    const maxpool_settings *s = settings;
    if (pool_window_shape(s->size, s->stride, in, out, path, err)) return -1;
    if (s->report_index_bug && (out->h - 1 + s->size > in.h || out->w - 1 + s->size > in.w))
        return errorf(err, "%s.report_index_bug: the misplaced gradient would fall outside the input",
                    path);
    return 0;
}

/* What the row and plane loops below share. */
typedef struct pool_args {
    const layer *l;
    const float *in, *out, *dout;
    float *dst; /* what the pass writes: forward the output, backward the input gradient */
    int relu;   /* backward: through the relu before (run_ctx.relu_din) */
} pool_args;

/* A window's gradient g, with its maximum top: through the relu before, 0 unless top > 0. */
static inline float window_grad(float g, float top, int relu) {
    return relu && !(top > 0.0f) ? 0.0f : g;
}

/* first_max for a 2 x 2 window, every channel: the four positions tested in row-major order,
 * each given the gradient or 0 (the zeros are what the row band was cleared to). With AVX-512,
 * fewer than 8 channels take first_max_2x2_masked instead. */
static inline void first_max_2x2(const float *x, float *dx, const float *best, const float *g,
                                 int n_ch, size_t row, int relu) {
    for (int c = 0; c < n_ch; c++) {
        const float m = best[c], grad = window_grad(g[c], m, relu);
        const float *p = x + c;
        float *d = dx + c;
        const int h0 = p[0] == m, h1 = !h0 && p[n_ch] == m;
        const int h2 = !(h0 | h1) && p[row] == m, h3 = !(h0 | h1 | h2) && p[row + n_ch] == m;
        d[0] = h0 ? grad : 0.0f;
        d[n_ch] = h1 ? grad : 0.0f;
        d[row] = h2 ? grad : 0.0f;
        d[row + n_ch] = h3 ? grad : 0.0f;
    }
}

#ifdef __AVX512F__
/* first_max_2x2 for fewer than 8 channels (LeNet's 6) with AVX-512's masks, for nw (1 to 4)
 * windows side by side at once: their row of 2 nw n_ch floats (three vectors for four windows of
 * 6 channels) compared with the maxima laid out as the row holds them, and which position each
 * channel's gradient goes to worked out on all nw windows' comparison bits together in one
 * 64-bit integer (a window's top-left position takes bits [2 n_ch w, 2 n_ch w + n_ch), its
 * top-right the next n_ch): the first of the four that holds the maximum, as first_max_2x2
 * gives. Every float of the windows' positions is stored (the rest zeros); masked loads and
 * stores touch none outside them. A window at a time took about 25 cycles. */
static inline __attribute__((always_inline)) void
first_max_2x2_masked(const float *x, float *dx, const float *best, const float *g, const int n_ch,
                     const int nw, size_t row, int relu) {
    const int n = 2 * nw * n_ch, nv = (n + 15) / 16; /* floats and vectors of the windows' row */
    const __mmask16 lo = (__mmask16)(nw * n_ch >= 16 ? 0xffff : (1u << nw * n_ch) - 1);
    const __mmask16 hi = (__mmask16)(nw * n_ch > 16 ? (1u << (nw * n_ch - 16)) - 1 : 0);
    const __m512 m0 = _mm512_maskz_loadu_ps(lo, best), m1 = _mm512_maskz_loadu_ps(hi, best + 16);
    __m512 g0 = _mm512_maskz_loadu_ps(lo, g), g1 = _mm512_maskz_loadu_ps(hi, g + 16);
    if (relu) {
        g0 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m0, _mm512_setzero_ps(), _CMP_GT_OQ), g0);
        g1 = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m1, _mm512_setzero_ps(), _CMP_GT_OQ), g1);
    }
    unsigned long long top = 0, bottom = 0, left = 0;
    __m512 gv[4];
    __mmask16 part[4];
    for (int v = 0; v < nv; v++) {
        int at[16]; /* lane j of vector v: float 16 v + j of the row, window w's channel c */
        for (int j = 0; j < 16; j++) {
            const int t = 16 * v + j, w = t / (2 * n_ch);
            at[j] = t < n ? n_ch * w + t % n_ch : 0;
        }
        const __m512i idx = _mm512_loadu_si512(at);
        part[v] = (__mmask16)(n - 16 * v >= 16 ? 0xffff : (1u << (n - 16 * v)) - 1);
        const __m512 m = _mm512_permutex2var_ps(m0, idx, m1);
        gv[v] = _mm512_permutex2var_ps(g0, idx, g1);
        top |= (unsigned long long)_mm512_mask_cmp_ps_mask(
                   part[v], _mm512_maskz_loadu_ps(part[v], x + 16 * v), m, _CMP_EQ_OQ)
               << 16 * v;
        bottom |= (unsigned long long)_mm512_mask_cmp_ps_mask(
                      part[v], _mm512_maskz_loadu_ps(part[v], x + row + 16 * v), m, _CMP_EQ_OQ)
                  << 16 * v;
    }
    for (int w = 0; w < nw; w++) left |= ((1ull << n_ch) - 1) << 2 * n_ch * w;
    const unsigned long long e0 = top & left, e1 = top >> n_ch & left, e2 = bottom & left;
    const unsigned long long e3 = bottom >> n_ch & left;
    const unsigned long long h1 = e1 & ~e0, h2 = e2 & ~(e0 | e1), h3 = e3 & ~(e0 | e1 | e2);
    const unsigned long long to_top = e0 | h1 << n_ch, to_bottom = h2 | h3 << n_ch;
    for (int v = 0; v < nv; v++) {
        _mm512_mask_storeu_ps(dx + 16 * v, part[v],
                              _mm512_maskz_mov_ps((__mmask16)(to_top >> 16 * v), gv[v]));
        _mm512_mask_storeu_ps(dx + row + 16 * v, part[v],
                              _mm512_maskz_mov_ps((__mmask16)(to_bottom >> 16 * v), gv[v]));
    }
}
#endif

typedef float fvec16 __attribute__((vector_size(64)));
typedef float fvec16u __attribute__((vector_size(64), aligned(4)));
typedef int ivec16 __attribute__((vector_size(64)));
/* Eight channels at a time, for channel counts that are multiples of 8 but not of 16 (the
 * report's 8 filters): a loop over a run-time count of 8 would leave 16-wide vectors empty. */
typedef float fvec8 __attribute__((vector_size(32)));
typedef float fvec8u __attribute__((vector_size(32), aligned(4)));
typedef int ivec8 __attribute__((vector_size(32)));

/* Whether channels go through eight at a time. */
static inline int by_eights(int n_ch) {
#ifdef __AVX512F__
    return n_ch % 8 == 0 && n_ch % 16 != 0;
#else
    return n_ch % 8 == 0; /* 16-float vectors, lowered badly by GCC without AVX-512, never */
#endif
}

/* first_held_W: ties "first" for one window, W channels at a time in a vector: the window's
 * gradient (zero where the relu before masks it) held in a register, and the positions visited
 * in row-major order, each taking the held gradient where it holds the maximum, which is then
 * no longer held. x and dx point at the window's first position, rows `row` floats apart. */
#define FIRST_HELD(W, V, VU, IV)                                                                \
    static inline void first_held_##W(const float *x, float *dx, const float *best,             \
                                      const float *g, int n_ch, int size, size_t row, int relu) \
    {                                                                                           \
        for (int c0 = 0; c0 < n_ch; c0 += W) {                                                  \
            V held = *(const VU *)(g + c0);                                                     \
            const V top = *(const VU *)(best + c0);                                             \
            if (relu) held = (V)((IV)held & (top > (V){0.0f}));                                 \
            for (int wy = 0; wy < size; wy++)                                                   \
                for (int wx = 0; wx < size; wx++) {                                            \
                    const size_t at = wy * row + (size_t)wx * n_ch + c0;                        \
                    const IV hit = *(const VU *)(x + at) == top;                                \
                    *(VU *)(dx + at) = (V)((IV)held & hit);                                     \
                    held = (V)((IV)held & ~hit);                                                \
                }                                                                               \
        }                                                                                       \
    }
FIRST_HELD(16, fvec16, fvec16u, ivec16)
FIRST_HELD(8, fvec8, fvec8u, ivec8)
#undef FIRST_HELD

/* Backward asks for the input rows that output row `row` (the samples' rows counted one after
 * another) reads, a row ahead of their use. A lane's samples no longer fit in L2 on the larger
 * networks (32 samples of 50 KB for config/mnist.json's first max-pool), and the hardware's
 * prefetchers did not keep up with a window's two rows: with this, that max-pool's backward
 * takes 0.016 s for 3200 images instead of 0.025 (`trainer --profile`, one thread, medians of 5).
 * Not kept: the same for the rows of the input gradient it writes (the second max-pool's
 * backward then gained as much, but the first lost all of its gain), and for forward, which
 * reads what the layer before has just written (no gain). */
static inline void prefetch_window_rows(const layer *l, const float *in, int row) {
    const maxpool_settings *s = l->settings;
    const size_t row_floats = (size_t)l->in.w * l->in.c;
    const float *first = in + (size_t)(row / l->out.h) * shape_size(l->in) +
                         (size_t)(row % l->out.h) * s->stride * row_floats;
    for (size_t i = 0; i < (size_t)s->size * row_floats; i += 16) __builtin_prefetch(first + i);
}

/* Output rows [begin, end) of all samples. Channels innermost, so the max over a window runs
 * along contiguous memory; positions are visited in row-major order, keeping the first of equal
 * values. */
static inline __attribute__((always_inline)) int
forward_rows_of(const pool_args *a, long begin, long end, const int channels) {
    const layer *l = a->l;
    const maxpool_settings *s = l->settings;
    const int in_w = l->in.w, n_ch = channels ? channels : l->in.c, out_h = l->out.h;
    const int out_w = l->out.w;
    const float *in = a->in;
    float *out = a->dst;
    for (int row = (int)begin; row < (int)end; row++) {
        const int sample = row / out_h, oy = row % out_h;
        const float *x = in + (size_t)sample * shape_size(l->in);
        float *y = out + (size_t)sample * shape_size(l->out) + (size_t)oy * out_w * n_ch;
        for (int ox = 0; ox < out_w; ox++) {
            const float *base = x + ((size_t)oy * s->stride * in_w + (size_t)ox * s->stride) * n_ch;
            float *best = y + (size_t)ox * n_ch;
            if (by_eights(n_ch)) {
                /* The same comparisons, eight channels in a vector: a later value replaces
                 * the best only when greater. */
                for (int c0 = 0; c0 < n_ch; c0 += 8) {
                    fvec8 b = *(const fvec8u *)(base + c0);
                    for (int dy = 0; dy < s->size; dy++)
                        for (int dx = 0; dx < s->size; dx++) {
                            const size_t at = ((size_t)dy * in_w + dx) * n_ch + c0;
                            const fvec8 v = *(const fvec8u *)(base + at);
                            const ivec8 greater = v > b;
                            b = (fvec8)(((ivec8)v & greater) | ((ivec8)b & ~greater));
                        }
                    *(fvec8u *)(best + c0) = b;
                }
                continue;
            }
#ifdef __AVX512F__
            if (channels && channels < 8) {
                /* The same comparisons, the channels in one vector with AVX-512's masks. */
                const __mmask16 one = (__mmask16)((1u << channels) - 1);
                __m512 b = _mm512_maskz_loadu_ps(one, base);
                for (int dy = 0; dy < s->size; dy++)
                    for (int dx = 0; dx < s->size; dx++) {
                        const __m512 v =
                            _mm512_maskz_loadu_ps(one, base + ((size_t)dy * in_w + dx) * n_ch);
                        b = _mm512_mask_mov_ps(b, _mm512_cmp_ps_mask(v, b, _CMP_GT_OQ), v);
                    }
                _mm512_mask_storeu_ps(best, one, b);
                continue;
            }
#endif
            for (int c = 0; c < n_ch; c++) best[c] = base[c];
            for (int dy = 0; dy < s->size; dy++)
                for (int dx = 0; dx < s->size; dx++) {
                    const float *v = base + ((size_t)dy * in_w + dx) * n_ch;
                    for (int c = 0; c < n_ch; c++) best[c] = v[c] > best[c] ? v[c] : best[c];
                }
        }
    }
    return 0;
}

/* A row-loop body that runs impl with a few channels (fewer than 8) known at compile time: their
 * loops unrolled and without a run-time count (LeNet's 6 filters), the same comparisons in the
 * same order; other counts at run time. */
#define BY_CHANNEL_COUNT(impl)                                                                 \
    {                                                                                          \
        (void)worker;                                                                          \
        const pool_args *a = ctx;                                                              \
        switch (a->l->in.c) {                                                                  \
        case 1: return impl(a, begin, end, 1);                                                 \
        case 2: return impl(a, begin, end, 2);                                                 \
        case 3: return impl(a, begin, end, 3);                                                 \
        case 4: return impl(a, begin, end, 4);                                                 \
        case 5: return impl(a, begin, end, 5);                                                 \
        case 6: return impl(a, begin, end, 6);                                                 \
        case 7: return impl(a, begin, end, 7);                                                 \
        default: return impl(a, begin, end, 0);                                                \
        }                                                                                      \
    }

static int maxpool_forward_rows(void *ctx, long begin, long end, int worker)
    BY_CHANNEL_COUNT(forward_rows_of)

/* A row is one thread's. */
static void maxpool_layer_forward(const layer *l, const float *params, const float *in, float *out,
                                  const run_ctx *run) {
    (void)params;
    pool_args a = {l, in, NULL, NULL, out, 0};
    par_blocks(run->nt, (size_t)run->n * shape_size(l->in) * PAR_ELEMENT_COST, (long)run->n * l->out.h,
               maxpool_forward_rows, &a);
}

/* Gives g to the first position of a size x size window (rows `row` apart, columns `col`) that
 * holds the maximum. */
static inline void first_max(const float *x, float *dx, float best, float g, int size, size_t row,
                             size_t col) {
    for (int wy = 0; wy < size; wy++)
        for (int wx = 0; wx < size; wx++) {
            size_t at = wy * row + wx * col;
            if (x[at] == best) {
                dx[at] = g;
                return;
            }
        }
}

/* Channels from which the windows' channels go through together when they are not whole
 * blocks of 8 or 16 (below it, the channel-by-channel search is faster: 6 channels 2x slower
 * together, measured with trainer --profile; 2 x 2 windows of fewer than 8 channels go together
 * with AVX-512's masks, first_max_2x2_masked), and up to which they fit the stack. */
#define FIRST_MAX_VECTOR 32
#define FIRST_MAX_CHANNELS 512

/* Windows that do not overlap (stride >= size) own their input positions, so output rows can
 * be split over threads; ties "all" then runs along contiguous channels. Output row oy also
 * zeroes the input rows from its window's first to the next window's (or the end). */
static inline __attribute__((always_inline)) int
backward_rows_of(const pool_args *a, long begin, long end, const int channels) {
    const layer *l = a->l;
    const maxpool_settings *s = l->settings;
    const int in_w = l->in.w, n_ch = channels ? channels : l->in.c, out_h = l->out.h;
    const int out_w = l->out.w;
    const float *in = a->in, *out = a->out, *dout = a->dout;
    float *din = a->dst;
    const int relu = a->relu; /* a local: the stores below cannot change it */
    /* Whether the windows tile the rows and every path below writes each of their positions
     * (all but first_max's search, which writes only the one it finds): a band of rows is then
     * cleared only where a trailing row or column lies outside the windows. */
    const int tiled = s->stride == s->size && in_w == out_w * s->size &&
                      (!s->ties_first || s->size == 2 || n_ch % 8 == 0 ||
                       (n_ch >= FIRST_MAX_VECTOR && n_ch <= FIRST_MAX_CHANNELS));
    for (int row = (int)begin; row < (int)end; row++) {
        const int sample = row / out_h, oy = row % out_h;
        const float *x = in + (size_t)sample * shape_size(l->in);
        float *dx = din + (size_t)sample * shape_size(l->in);
        const int y0 = oy * s->stride, y1 = oy + 1 == out_h ? l->in.h : y0 + s->stride;
        if (!(tiled && y1 - y0 == s->size))
            memset(dx + (size_t)y0 * in_w * n_ch, 0, (size_t)(y1 - y0) * in_w * n_ch * sizeof *dx);
        if (row + 1 < (int)end) prefetch_window_rows(l, in, row + 1);
        for (int ox = 0; ox < out_w; ox++) {
            size_t o = (size_t)sample * shape_size(l->out) + ((size_t)oy * out_w + ox) * n_ch;
            const float *best = out + o, *g = dout + o;
            size_t base = ((size_t)oy * s->stride * in_w + (size_t)ox * s->stride) * n_ch;
            if (!s->ties_first && by_eights(n_ch)) {
                for (int c0 = 0; c0 < n_ch; c0 += 8) {
                    const fvec8 top = *(const fvec8u *)(best + c0);
                    fvec8 gr = *(const fvec8u *)(g + c0);
                    if (relu) gr = (fvec8)((ivec8)gr & (top > (fvec8){0.0f}));
                    for (int wy = 0; wy < s->size; wy++)
                        for (int wx = 0; wx < s->size; wx++) {
                            size_t at = base + ((size_t)wy * in_w + wx) * n_ch + c0;
                            const ivec8 hit = *(const fvec8u *)(x + at) == top;
                            *(fvec8u *)(dx + at) = (fvec8)((ivec8)gr & hit);
                        }
                }
                continue;
            }
            if (!s->ties_first) {
                for (int wy = 0; wy < s->size; wy++)
                    for (int wx = 0; wx < s->size; wx++) {
                        size_t at = base + ((size_t)wy * in_w + wx) * n_ch;
                        float *restrict d = dx + at;
                        const float *restrict v = x + at, *restrict m = best, *restrict gr = g;
                        for (int c = 0; c < n_ch; c++)
                            d[c] = v[c] == m[c] ? window_grad(gr[c], m[c], relu) : 0.0f;
                    }
                continue;
            }
            /* Ties "first": each channel's gradient goes to the first of its maxima in
             * row-major order. With whole blocks of 16 or 8 channels or many channels, they go
             * through the window together, positions in row-major order, each channel's
             * gradient held until a position holds its maximum and given to that one only:
             * loops without branches, and the same positions as first_max's
             * channel-by-channel search, which takes a few channels (2 x 2 windows test their
             * four positions in turn, or with AVX-512 all at once under masks). */
            if (n_ch % 16 == 0 && !by_eights(n_ch)) { /* blocks of 16, held in a register */
                first_held_16(x + base, dx + base, best, g, n_ch, s->size, (size_t)in_w * n_ch,
                              relu);
                continue;
            }
            if (by_eights(n_ch)) {
                first_held_8(x + base, dx + base, best, g, n_ch, s->size, (size_t)in_w * n_ch,
                             relu);
                continue;
            }
            if (n_ch >= FIRST_MAX_VECTOR && n_ch <= FIRST_MAX_CHANNELS) {
                float held[FIRST_MAX_CHANNELS];
                for (int c = 0; c < n_ch; c++) held[c] = window_grad(g[c], best[c], relu);
                for (int wy = 0; wy < s->size; wy++)
                    for (int wx = 0; wx < s->size; wx++) {
                        size_t at = base + ((size_t)wy * in_w + wx) * n_ch;
                        float *restrict d = dx + at, *restrict h = held;
                        const float *restrict v = x + at, *restrict m = best;
                        for (int c = 0; c < n_ch; c++) {
                            const int hit = v[c] == m[c];
                            d[c] = hit ? h[c] : 0.0f;
                            h[c] = hit ? 0.0f : h[c];
                        }
                    }
                continue;
            }
            if (s->size == 2) {
#ifdef __AVX512F__
                if (channels && channels < 8) {
                    /* Adjacent windows (stride 2) four at a time, the rest of a row together. */
                    const size_t rw = (size_t)in_w * n_ch;
                    const int nw = s->stride != 2 ? 1 : out_w - ox < 4 ? out_w - ox : 4;
                    if (nw == 4) /* a constant, so that the usual case's masks are too */
                        first_max_2x2_masked(x + base, dx + base, best, g, channels, 4, rw, relu);
                    else
                        first_max_2x2_masked(x + base, dx + base, best, g, channels, nw, rw, relu);
                    ox += nw - 1;
                    continue;
                }
#endif
                first_max_2x2(x + base, dx + base, best, g, n_ch, (size_t)in_w * n_ch, relu);
                continue;
            }
            for (int c = 0; c < n_ch; c++)
                first_max(x + base + c, dx + base + c, best[c], window_grad(g[c], best[c], relu),
                          s->size, (size_t)in_w * n_ch, (size_t)n_ch);
        }
    }
    return 0;
}

static int maxpool_backward_rows(void *ctx, long begin, long end, int worker)
    BY_CHANNEL_COUNT(backward_rows_of)

/* Overlapping windows, or the report's misplaced writes: each thread owns whole (sample,
 * channel) planes, and within a plane windows go in order (later writes win, as in the report). */
static int maxpool_backward_planes(void *ctx, long begin, long end, int worker) {
    (void)worker;
    const pool_args *a = ctx;
    const layer *l = a->l;
    const maxpool_settings *s = l->settings;
    const int in_w = l->in.w, n_ch = l->in.c, out_h = l->out.h, out_w = l->out.w;
    const float *in = a->in, *out = a->out, *dout = a->dout;
    float *din = a->dst;
    for (int plane = (int)begin; plane < (int)end; plane++) {
        const int sample = plane / n_ch, c = plane % n_ch;
        const float *x = in + (size_t)sample * shape_size(l->in);
        const float *y = out + (size_t)sample * shape_size(l->out);
        const float *dy = dout + (size_t)sample * shape_size(l->out);
        float *dx = din + (size_t)sample * shape_size(l->in);
        for (int oy = 0; oy < out_h; oy++)
            for (int ox = 0; ox < out_w; ox++) {
                size_t o = ((size_t)oy * out_w + ox) * n_ch + c;
                const float best = y[o], g = dy[o];
                int y0 = oy * s->stride, x0 = ox * s->stride;
                for (int wy = 0; wy < s->size; wy++)
                    for (int wx = 0; wx < s->size; wx++) {
                        if (x[((size_t)(y0 + wy) * in_w + x0 + wx) * n_ch + c] != best) continue;
                        if (s->report_index_bug)
                            dx[((size_t)(oy + wy) * in_w + ox + wx) * n_ch + c] = g;
                        else
                            dx[((size_t)(y0 + wy) * in_w + x0 + wx) * n_ch + c] += g;
                        if (s->ties_first) goto next_window;
                    }
            next_window:;
            }
    }
    return 0;
}

/* Samples [begin, end) of the input gradient through the relu before, afterwards: where a
 * position's gradient sums several windows' or was misplaced (the planes above). */
static int relu_after_samples(void *ctx, long begin, long end, int worker) {
    (void)worker;
    const pool_args *a = ctx;
    const size_t size = shape_size(a->l->in);
    relu_grad_in_place(a->dst + (size_t)begin * size, a->in + (size_t)begin * size,
                       (size_t)(end - begin) * size);
    return 0;
}

static void maxpool_layer_backward(const layer *l, const float *params, const float *in,
                                   const float *out, const float *dout, float *din, float *dparams,
                                   const run_ctx *run) {
    const maxpool_settings *s = l->settings;
    (void)params, (void)dparams;
    if (!din) return;
    pool_args a = {l, in, out, dout, din, run->relu_din};
    const size_t work = (size_t)run->n * shape_size(l->in) * PAR_ELEMENT_COST;
    if (s->stride >= s->size && !s->report_index_bug) {
        par_blocks(run->nt, work, (long)run->n * l->out.h, maxpool_backward_rows, &a);
    } else {
        par_zero(run->nt, din, (size_t)run->n * shape_size(l->in));
        par_blocks(run->nt, work, (long)run->n * l->in.c, maxpool_backward_planes, &a);
        if (run->relu_din) par_blocks(run->nt, work, run->n, relu_after_samples, &a);
    }
}

static void maxpool_describe(const void *settings, char *buf, size_t size) {
    const maxpool_settings *s = settings;
    if (s->stride == s->size)
        snprintf(buf, size, "maxpool %d", s->size);
    else
        snprintf(buf, size, "maxpool %d stride %d", s->size, s->stride);
}

static void maxpool_geometry(const void *settings, layer_geometry *g) {
    const maxpool_settings *s = settings;
    *g = (layer_geometry){.kernel = s->size, .stride = s->stride};
}

const layer_ops maxpool_ops = {
    .type = "maxpool",
    .settings_size = sizeof(maxpool_settings),
    .keys = maxpool_keys,
    .parse = maxpool_parse,
    .shape = maxpool_shape,
    .params = layer_no_params,
    .init = NULL,
    .forward = maxpool_layer_forward,
    .backward = maxpool_layer_backward,
    .describe = maxpool_describe,
    .geometry = maxpool_geometry,
    .relu_din = 1,
};
