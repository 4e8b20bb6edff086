/*
 * The fast kernels against the plain reference kernels kept beside them: the blocked GEMM
 * against a triple loop for every transpose combination and ragged sizes, and conv2d and dense
 * forward and backward against their direct loops, within float tolerance. Also: the GEMM's
 * result does not depend on the number of threads, bit for bit. And par_blocks: each item is run
 * once, in the blocks the loop's thread count gives, by a team that keeps its threads.
 */
#include <math.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../src/gemm.h"
#include "../src/parallel.h"
#include "ompcnn/layer.h"
#include "testutil.h"
#include "../src/kernels.h"

static uint64_t state = 0x243f6a8885a308d3ull;
static float rnd(void) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return (float)((double)(state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *random_floats(size_t n) {
    float *v = floats_alloc(n);
    for (size_t i = 0; i < n; i++) v[i] = rnd();
    return v;
}

/* |got - want| <= 1e-4 * (1 + |want|) * sqrt(terms) covers float rounding of a sum of `terms`. */
static void expect_near(const float *got, const float *want, size_t n, int terms, const char *what) {
    double tol = 1e-5 * sqrt((double)terms + 1.0);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i])),
                      "%s: element %zu: fast %.9g, reference %.9g", what, i, got[i], want[i]);
}

START_TEST(test_gemm_matches_reference) {
    /* Tiled shapes, then the thin ones (one row, one column, K = 1) that have loops of their
     * own: vector widths, ragged tails and odd K included. */
    const int sizes[][3] = {{1, 1, 1},     {7, 5, 3},    {8, 16, 9},   {9, 17, 300},
                            {33, 40, 7},   {64, 31, 513}, {3, 100, 257}, {100, 3, 64},
                            {1, 20, 1352}, {1, 37, 101}, {1, 16, 33},  {1, 5, 2},
                            {1352, 20, 1}, {45, 37, 1},  {1352, 1, 20}, {45, 1, 37},
                            {17, 1, 300},  {1, 1, 50},   {16, 1, 16},  {10, 48, 20},
                            {24, 32, 260}, {9, 64, 40}};
    for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++) {
                    int M = sizes[c][0], N = sizes[c][1], K = sizes[c][2];
                    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                    float *A = random_floats((size_t)lda * (ta ? K : M));
                    float *B = random_floats((size_t)ldb * (tb ? N : K));
                    float *C = random_floats((size_t)ldc * M), *R = floats_alloc((size_t)ldc * M);
                    memcpy(R, C, (size_t)ldc * M * sizeof *C);
                    gemm(ta, tb, M, N, K, A, lda, B, ldb, acc, C, ldc, 1);
                    gemm_ref(ta, tb, M, N, K, A, lda, B, ldb, acc, R, ldc);
                    char what[96];
                    snprintf(what, sizeof what, "gemm %dx%dx%d ta=%d tb=%d acc=%d", M, N, K, ta, tb,
                             acc);
                    expect_near(C, R, (size_t)ldc * M, K, what);
                    aligned_free(A), aligned_free(B), aligned_free(C), aligned_free(R);
                }
}
END_TEST

/* a * b + c as the library's kernels compute it: one fused multiply-add where the CPU has one
 * (the kernels are compiled to contract), else a product and a sum. */
#ifdef __FMA__
#define MUL_ADD(a, b, c) fmaf(a, b, c)
#else
#define MUL_ADD(a, b, c) ((a) * (b) + (c))
#endif

/* The thin products' sums, element by element in the order gemm.h promises (spelled out here
 * independently of the vector code), against gemm() bit for bit: one row (y[j] = sum_k x_k
 * B[k][j], two partial sums over even and odd k, then added), one column of rows against a
 * vector (each row's products 16 at a time into lanes, lane l summing k = l, l + 16, ...; the
 * lanes added by the fixed tree l + 8, + 4, + 2, + 1; the last K mod 16 products one by one;
 * then the two added). Widths and tails of every size around 16, including the tails of 8 or
 * more that a vectoriser could sum with other roundings; 1 and 3 threads. */
static float thin_row(const float *x, size_t x_k, const float *B, size_t b_k, int K, int j) {
    float even = 0.0f, odd = 0.0f;
    int k = 0;
    for (; k + 1 < K; k += 2) {
        even = MUL_ADD(x[(size_t)k * x_k], B[(size_t)k * b_k + j], even);
        odd = MUL_ADD(x[(size_t)(k + 1) * x_k], B[(size_t)(k + 1) * b_k + j], odd);
    }
    if (k < K) even = MUL_ADD(x[(size_t)k * x_k], B[(size_t)k * b_k + j], even);
    return even + odd;
}

static float thin_dot(const float *a, const float *x, int K) {
    const int K16 = K / 16 * 16;
    float lane[16] = {0}, tail = 0.0f;
    for (int k = 0; k < K16; k++) lane[k % 16] = MUL_ADD(a[k], x[k], lane[k % 16]);
    for (int width = 8; width >= 1; width /= 2)
        for (int l = 0; l < width; l++) lane[l] = lane[l] + lane[l + width];
    for (int k = K16; k < K; k++) tail = MUL_ADD(a[k], x[k], tail);
    return lane[0] + tail;
}

START_TEST(test_gemm_thin_order) {
    const int widths[] = {1, 5, 10, 16, 17, 20, 31, 37, 64, 70};
    const int depths[] = {1, 2, 7, 10, 15, 16, 20, 24, 31, 33, 47, 1352};
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
        for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++)
            for (int nt = 1; nt <= 3; nt += 2) {
                const int N = widths[w], K = depths[d];
                float *x = random_floats((size_t)K), *B = random_floats((size_t)K * N);
                float *c = floats_alloc((size_t)N), *want = floats_alloc((size_t)N);
                /* One row: c = x . B, B K x N (a dense layer's forward for one sample). */
                gemm(0, 0, 1, N, K, x, K, B, N, 0, c, N, nt);
                for (int j = 0; j < N; j++) want[j] = thin_row(x, 1, B, (size_t)N, K, j);
                for (int j = 0; j < N; j++)
                    ck_assert_msg(memcmp(&c[j], &want[j], sizeof *c) == 0,
                                  "row 1x%dx%d, %d threads: c[%d] %a, the promised order %a", N,
                                  K, nt, j, c[j], want[j]);
                /* One column: c = B' . x with the N rows of B' each K long (a dense layer's
                 * input gradient for one sample). */
                gemm(0, 1, N, 1, K, B, K, x, K, 0, c, 1, nt);
                for (int j = 0; j < N; j++) want[j] = thin_dot(B + (size_t)j * K, x, K);
                for (int j = 0; j < N; j++)
                    ck_assert_msg(memcmp(&c[j], &want[j], sizeof *c) == 0,
                                  "column %dx1x%d, %d threads: c[%d] %a, the promised order %a",
                                  N, K, nt, j, c[j], want[j]);
                aligned_free(x), aligned_free(B), aligned_free(c), aligned_free(want);
            }
}
END_TEST

/* K = 1: every element the one product a_i b_j, signed zeros included, whether the rows are
 * written one by one or, 17 to 31 wide and one after another, as a run of whole vectors whose
 * lanes span two rows (and, split over 3 threads, runs that start and end inside a row). */
START_TEST(test_gemm_outer_products) {
    const int widths[] = {5, 16, 17, 20, 24, 31, 33};
    const int heights[] = {1, 2, 7, 40000};
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
        for (size_t h = 0; h < sizeof heights / sizeof heights[0]; h++)
            for (int gap = 0; gap <= 2; gap += 2)
                for (int nt = 1; nt <= 3; nt += 2) {
                    const int M = heights[h], N = widths[w], ldc = N + gap;
                    float *a = random_floats((size_t)M), *b = random_floats((size_t)N);
                    a[M / 2] = -0.0f; /* its products are zeros of b's opposite sign */
                    float *c = floats_alloc((size_t)M * ldc);
                    gemm(0, 0, M, N, 1, a, 1, b, N, 0, c, ldc, nt);
                    long bad = -1;
                    for (int i = 0; i < M && bad < 0; i++)
                        for (int j = 0; j < N; j++) {
                            const float want = a[i] * b[j];
                            if (memcmp(&c[(size_t)i * ldc + j], &want, sizeof want) != 0) {
                                bad = (long)i * N + j;
                                break;
                            }
                        }
                    ck_assert_msg(bad < 0,
                                  "outer %dx%d (ldc %d), %d threads: c[%ld][%ld] is not a_i b_j", M,
                                  N, ldc, nt, bad / N, bad % N);
                    aligned_free(a), aligned_free(b), aligned_free(c);
                }
}
END_TEST

/* The tile's width follows N (two vectors of 16 with AVX-512 where N > 16, else one), and an
 * element's sum must not depend on it: the first 16 columns of a wide product are the bits of
 * the same product 16 columns wide, and those of 8 columns. */
START_TEST(test_gemm_tile_width_does_not_matter) {
    const int sizes[][2] = {{37, 300}, {8, 9}, {20, 600}};
    for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int M = sizes[c][0], K = sizes[c][1], N = 72;
                float *A = random_floats((size_t)M * K), *B = random_floats((size_t)K * N);
                float *wide = floats_alloc((size_t)M * N), *narrow = floats_alloc((size_t)M * N);
                gemm(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, 0, wide, N, 1);
                for (int cols = 16; cols >= 8; cols -= 8) {
                    gemm(ta, tb, M, cols, K, A, ta ? M : K, B, tb ? K : N, 0, narrow, N, 1);
                    for (int i = 0; i < M; i++)
                        ck_assert_msg(memcmp(wide + (size_t)i * N, narrow + (size_t)i * N,
                                             (size_t)cols * sizeof *wide) == 0,
                                      "gemm %dx%dx%d ta=%d tb=%d: row %d differs at %d columns",
                                      M, N, K, ta, tb, i, cols);
                }
                aligned_free(A), aligned_free(B), aligned_free(wide), aligned_free(narrow);
            }
}
END_TEST

/* A gathered A, a(i, k) = src[rows[i] + cols[k]] with rows and columns that overlap and repeat
 * as a convolution's do, gives the bits of gemm() on the same matrix written out: ragged row
 * panels, B transposed or not, several blocks of k, accumulating or not, 1 and 3 threads. */
START_TEST(test_gemm_gather_same_bits) {
    const int sizes[][3] = {{37, 40, 300}, {8, 16, 9}, {203, 64, 600}, {5, 3, 7}};
    for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++)
        for (int tb = 0; tb < 2; tb++)
            for (int acc = 0; acc < 2; acc++) {
                const int M = sizes[c][0], N = sizes[c][1], K = sizes[c][2];
                int *rows = malloc((size_t)M * sizeof *rows);
                int *cols = malloc((size_t)K * sizeof *cols);
                for (int i = 0; i < M; i++) rows[i] = (i % 13) * 7 + i / 13 * 50;
                for (int k = 0; k < K; k++) cols[k] = (k % 11) + k / 11 * 40;
                const size_t span = (size_t)rows[M - 1] + cols[K - 1] + 100;
                float *src = random_floats(span), *A = floats_alloc((size_t)M * K);
                for (int i = 0; i < M; i++)
                    for (int k = 0; k < K; k++) A[(size_t)i * K + k] = src[rows[i] + cols[k]];
                float *B = random_floats((size_t)K * N), *C0 = random_floats((size_t)M * N);
                float *want = floats_alloc((size_t)M * N), *got = floats_alloc((size_t)M * N);
                memcpy(want, C0, (size_t)M * N * sizeof *want);
                gemm(0, tb, M, N, K, A, K, B, tb ? K : N, acc, want, N, 1);
                for (int nt = 1; nt <= 3; nt += 2) {
                    memcpy(got, C0, (size_t)M * N * sizeof *got);
                    gemm_gather(M, N, K, src, rows, cols, tb, B, tb ? K : N, acc, got, N, nt);
                    ck_assert_msg(memcmp(want, got, (size_t)M * N * sizeof *got) == 0,
                                  "gather %dx%dx%d tb=%d acc=%d, %d threads: not gemm's bits", M,
                                  N, K, tb, acc, nt);
                }
                free(rows), free(cols);
                aligned_free(src), aligned_free(A), aligned_free(B), aligned_free(C0);
                aligned_free(want), aligned_free(got);
            }
}
END_TEST

START_TEST(test_gemm_thread_count_does_not_matter) {
    /* Large enough to be split over threads: tiled shapes with ragged edges and several blocks
     * of k, taller than wide (tiles row panel by row panel) and wider than tall (column panel by
     * column panel, like a dense layer's batch), and the three thin kinds; accumulating or not. */
    const int sizes[][3] = {{203, 77, 300},  {37, 300, 700},   {12, 128, 1568},
                            {1, 1100, 1000}, {1100, 1, 1000}, {1100, 1000, 1}};
    const int thread_counts[] = {2, 3, 4, 7, 16};
    for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
        const int M = sizes[c][0], N = sizes[c][1], K = sizes[c][2];
        float *A = random_floats((size_t)M * K), *B = random_floats((size_t)K * N);
        float *C0 = random_floats((size_t)M * N);
        float *C1 = floats_alloc((size_t)M * N), *Cn = floats_alloc((size_t)M * N);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc < 2; acc++) {
                    memcpy(C1, C0, (size_t)M * N * sizeof *C1);
                    gemm(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, acc, C1, N, 1);
                    for (size_t k = 0; k < sizeof thread_counts / sizeof thread_counts[0]; k++) {
                        memcpy(Cn, C0, (size_t)M * N * sizeof *Cn);
                        gemm(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, acc, Cn, N,
                             thread_counts[k]);
                        ck_assert_msg(memcmp(C1, Cn, (size_t)M * N * sizeof *C1) == 0,
                                      "gemm %dx%dx%d ta=%d tb=%d acc=%d: 1 and %d threads differ",
                                      M, N, K, ta, tb, acc, thread_counts[k]);
                    }
                }
        aligned_free(A), aligned_free(B), aligned_free(C0), aligned_free(C1), aligned_free(Cn);
    }
}
END_TEST

START_TEST(test_conv2d_matches_reference) {
    const conv_geom cases[] = {
        {28, 28, 1, 26, 26, 8, 3, 1, 0},  {9, 8, 3, 5, 4, 6, 3, 2, 1}, {6, 7, 2, 6, 7, 5, 5, 1, 2},
        {8, 8, 4, 3, 3, 2, 2, 3, 0},      {5, 5, 7, 5, 5, 9, 1, 1, 0}, {14, 14, 6, 10, 10, 16, 5, 1, 0},
        /* One channel: the direct loops (padding, strides, blocks of filters with a ragged last
         * one, rows shorter and longer than a block of positions; the weight gradient's kernels
         * of 3, 5 and others with whole blocks of filters), and a plane too large for them (the
         * im2col path). */
        {28, 28, 1, 28, 28, 16, 5, 1, 2}, {9, 8, 1, 5, 4, 6, 3, 2, 1}, {11, 13, 1, 11, 13, 37, 3, 1, 1},
        {7, 3, 1, 3, 1, 17, 4, 2, 1},     {130, 129, 1, 64, 64, 5, 3, 2, 0},
        {11, 13, 1, 6, 7, 32, 3, 2, 1},   {9, 9, 1, 5, 5, 16, 7, 1, 1},  {13, 13, 1, 4, 4, 16, 4, 3, 1},
        {28, 28, 1, 14, 14, 16, 3, 2, 1},
        /* Padded rows wider than im2col's row buffer: the window-by-window path. */
        {3, 300, 16, 2, 150, 4, 3, 2, 1},
    };
    const int n = 3;
    /* Both ways of getting the patches to backward: kept from forward, or rebuilt. */
    for (int keep = 0; keep < 2; keep++)
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const conv_geom *g = &cases[c];
        size_t in_size = (size_t)n * g->in_h * g->in_w * g->in_c;
        size_t out_size = (size_t)n * g->out_h * g->out_w * g->n_filters;
        size_t w_size = (size_t)g->n_filters * g->kernel * g->kernel * g->in_c;
        float *x = random_floats(in_size), *w = random_floats(w_size), *b = random_floats(g->n_filters);
        float *dy = random_floats(out_size);
        float *y = floats_alloc(out_size), *y_ref = floats_alloc(out_size);
        size_t patches = (size_t)g->out_h * g->out_w * g->kernel * g->kernel * g->in_c;
        float *cols = keep ? floats_alloc(n * patches) : NULL;
        float *col = floats_alloc(patches), *dcol = floats_alloc(patches);
        conv2d_forward(y, x, w, b, n, g, cols, col, 1);
        conv2d_forward_ref(y_ref, x, w, b, n, g);
        int terms = g->kernel * g->kernel * g->in_c;
        expect_near(y, y_ref, out_size, terms, "conv2d forward");

        float *dx = floats_alloc(in_size), *dx_ref = floats_alloc(in_size);
        /* The fast kernel writes the gradient over whatever was there; the reference adds. */
        float *dw = random_floats(w_size), *dw_ref = floats_alloc(w_size);
        float *db = random_floats(g->n_filters), *db_ref = floats_alloc(g->n_filters);
        /* Rebuilding must not lean on what forward left in the scratch. */
        for (size_t i = 0; i < patches; i++) col[i] = NAN;
        float *partial = floats_alloc((size_t)n * (w_size + g->n_filters));
        conv2d_backward(dx, dw, db, dy, x, w, n, g, cols, col, dcol, partial, NULL, 1);
        aligned_free(partial);
        conv2d_backward_ref(dx_ref, dw_ref, db_ref, dy, x, w, n, g);
        expect_near(dx, dx_ref, in_size, g->kernel * g->kernel * g->n_filters, "conv2d din");
        expect_near(dw, dw_ref, w_size, n * g->out_h * g->out_w, "conv2d dweight");
        expect_near(db, db_ref, g->n_filters, n * g->out_h * g->out_w, "conv2d dbias");
        aligned_free(x), aligned_free(w), aligned_free(b), aligned_free(dy), aligned_free(y);
        aligned_free(y_ref), aligned_free(col), aligned_free(dcol), aligned_free(dx);
        if (cols) aligned_free(cols);
        aligned_free(dx_ref);
        aligned_free(dw), aligned_free(dw_ref), aligned_free(db), aligned_free(db_ref);
    }
}
END_TEST

/* The weight gradient of one sample as the GEMM adds it: for each (filter, ky, kx), fused
 * multiply-adds over the positions in order, in blocks of GEMM_KC positions whose sums are added
 * one after another; padding reads 0. */
static void weight_grad_in_blocks(float *dw, const float *x, const float *dy, const conv_geom *g) {
    const int K = g->kernel, F = g->n_filters, P = g->out_h * g->out_w;
    for (int f = 0; f < F; f++)
        for (int ky = 0; ky < K; ky++)
            for (int kx = 0; kx < K; kx++) {
                float acc = 0.0f, total = 0.0f;
                for (int p = 0; p < P; p++) {
                    const int iy = p / g->out_w * g->stride + ky - g->padding;
                    const int ix = p % g->out_w * g->stride + kx - g->padding;
                    const int inside = iy >= 0 && iy < g->in_h && ix >= 0 && ix < g->in_w;
                    const float v = inside ? x[(size_t)iy * g->in_w + ix] : 0.0f;
                    acc = MUL_ADD(v, dy[(size_t)p * F + f], acc);
                    if ((p + 1) % GEMM_KC == 0 || p + 1 == P) {
                        total = p < GEMM_KC ? acc : total + acc;
                        acc = 0.0f;
                    }
                }
                dw[((size_t)f * K + ky) * K + kx] = total;
            }
}

/* Single-channel layers whose filters do not fill blocks of 16 (the report's 8, LeNet's 6) get
 * their weight gradient from direct loops that add exactly as the GEMM's tiles did for them: the
 * bits of weight_grad_in_blocks, as before the loops (a single filter, whose product the GEMM's
 * one-row loop summed in an order of its own, now adds in blocks like the rest). */
START_TEST(test_conv2d_direct_weight_grad_bits) {
    const conv_geom cases[] = {
        {28, 28, 1, 26, 26, 8, 3, 1, 0},  /* the report's: 676 positions, three blocks */
        {28, 28, 1, 28, 28, 6, 5, 1, 2},  /* six 5x5 filters with padding */
        {20, 19, 1, 18, 17, 17, 3, 1, 0}, /* 17 filters: a block of 16 and one of 1 */
        {40, 40, 1, 20, 20, 5, 4, 2, 1},  /* a kernel of 4: the loop for other sizes */
        {9, 8, 1, 5, 4, 3, 3, 2, 1},      /* fewer positions than a block */
        {30, 30, 1, 28, 28, 1, 3, 1, 0},  /* one filter */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const conv_geom *g = &cases[c];
        const size_t in_size = (size_t)g->in_h * g->in_w;
        const size_t out_size = (size_t)g->out_h * g->out_w * g->n_filters;
        const size_t w_size = (size_t)g->n_filters * g->kernel * g->kernel;
        const size_t patches = (size_t)g->out_h * g->out_w * g->kernel * g->kernel;
        float *x = random_floats(in_size), *w = random_floats(w_size), *dy = random_floats(out_size);
        float *dw = floats_alloc(w_size), *want = floats_alloc(w_size);
        float *db = floats_alloc(g->n_filters), *partial = floats_alloc(w_size + g->n_filters);
        float *col = floats_alloc(patches), *dcol = floats_alloc(patches);
        conv2d_backward(NULL, dw, db, dy, x, w, 1, g, NULL, col, dcol, partial, NULL, 1);
        weight_grad_in_blocks(want, x, dy, g);
        for (size_t i = 0; i < w_size; i++)
            ck_assert_msg(memcmp(&dw[i], &want[i], sizeof *dw) == 0,
                          "case %zu: dweight[%zu] %.9g, the GEMM's sums give %.9g", c, i, dw[i],
                          want[i]);
        /* The bias gradient: each filter's values added over the positions in order. */
        const int P = g->out_h * g->out_w;
        for (int f = 0; f < g->n_filters; f++) {
            float sum = 0.0f;
            for (int p = 0; p < P; p++) sum += dy[(size_t)p * g->n_filters + f];
            ck_assert_msg(memcmp(&db[f], &sum, sizeof sum) == 0,
                          "case %zu: dbias[%d] %.9g, the positions in order give %.9g", c, f,
                          db[f], sum);
        }
        aligned_free(x), aligned_free(w), aligned_free(dy), aligned_free(dw), aligned_free(want);
        aligned_free(db), aligned_free(partial), aligned_free(col), aligned_free(dcol);
    }
}
END_TEST

/* Single-channel layers' direct forward, bit for bit: each output a chain of multiply-adds over
 * (ky, kx) in order from 0 (padding reads 0), then its bias added; whether a vector holds 16
 * filters of a position or (at most 8 filters at stride 1) two positions' filters. */
START_TEST(test_conv2d_direct_forward_bits) {
    const conv_geom cases[] = {
        {28, 28, 1, 26, 26, 8, 3, 1, 0},  /* the report's: two positions to a vector */
        {28, 28, 1, 28, 28, 6, 5, 1, 2},  /* LeNet's six 5x5 filters with padding */
        {11, 13, 1, 11, 13, 5, 3, 1, 1},  /* rows of 13: a last pair with one position */
        {9, 9, 1, 5, 5, 1, 5, 1, 0},      /* one filter, rows shorter than a block */
        {20, 40, 1, 18, 38, 7, 3, 1, 0},  /* rows of more than one block */
        {20, 19, 1, 18, 17, 17, 3, 1, 0}, /* 17 filters: 16 to a vector and one */
        {40, 40, 1, 20, 20, 5, 4, 2, 1},  /* stride 2: one position to a vector */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const conv_geom *g = &cases[c];
            const int K = g->kernel, F = g->n_filters;
            const size_t in_size = (size_t)g->in_h * g->in_w;
            const size_t out_size = (size_t)g->out_h * g->out_w * F;
            const size_t patches = (size_t)g->out_h * g->out_w * K * K;
            float *x = random_floats(in_size), *w = random_floats((size_t)F * K * K);
            float *b = random_floats(F), *y = floats_alloc(out_size), *col = floats_alloc(patches);
            conv2d_forward(y, x, w, with_bias ? b : NULL, 1, g, NULL, col, 1);
            for (int p = 0; p < g->out_h * g->out_w; p++)
                for (int f = 0; f < F; f++) {
                    float acc = 0.0f;
                    for (int ky = 0; ky < K; ky++)
                        for (int kx = 0; kx < K; kx++) {
                            const int iy = p / g->out_w * g->stride + ky - g->padding;
                            const int ix = p % g->out_w * g->stride + kx - g->padding;
                            const int inside = iy >= 0 && iy < g->in_h && ix >= 0 && ix < g->in_w;
                            const float v = inside ? x[(size_t)iy * g->in_w + ix] : 0.0f;
                            acc = MUL_ADD(v, w[((size_t)f * K + ky) * K + kx], acc);
                        }
                    if (with_bias) acc += b[f];
                    const float got = y[(size_t)p * F + f];
                    ck_assert_msg(memcmp(&got, &acc, sizeof acc) == 0,
                                  "case %zu%s: y[%d][%d] %.9g, the chain over (ky, kx) gives %.9g",
                                  c, with_bias ? " with bias" : "", p, f, got, acc);
                }
            aligned_free(x), aligned_free(w), aligned_free(b), aligned_free(y), aligned_free(col);
        }
}
END_TEST

/* The input gradient of one sample as gemm() and col2im add it: each patch-gradient element
 * (position p, (ky, kx, c)) a chain of multiply-adds over the filters in order from 0, in blocks of
 * GEMM_KC filters whose sums are added one after another (with one position, gemm()'s one-row
 * loop: chains over the even and the odd filters, then added); each added onto the input element it
 * was read from, in ascending p, onto zeros (padding's elements dropped). */
static void input_grad_as_gemm(float *dx, const float *dy, const float *w, const conv_geom *g) {
    const int K = g->kernel, C = g->in_c, F = g->n_filters, P = g->out_h * g->out_w;
    memset(dx, 0, (size_t)g->in_h * g->in_w * C * sizeof *dx);
    for (int p = 0; p < P; p++)
        for (int ky = 0; ky < K; ky++)
            for (int kx = 0; kx < K; kx++)
                for (int c = 0; c < C; c++) {
                    float acc = 0.0f, total = 0.0f, odd = 0.0f;
                    for (int f = 0; f < F; f++) {
                        const float a = dy[(size_t)p * F + f];
                        const float b = w[(((size_t)f * K + ky) * K + kx) * C + c];
                        if (P == 1) { /* gemm()'s one-row loop: even and odd f, then added */
                            if (f % 2) odd = MUL_ADD(a, b, odd);
                            else acc = MUL_ADD(a, b, acc);
                            total = acc + odd;
                            continue;
                        }
                        acc = MUL_ADD(a, b, acc);
                        if ((f + 1) % GEMM_KC == 0 || f + 1 == F) {
                            total = f < GEMM_KC ? acc : total + acc;
                            acc = 0.0f;
                        }
                    }
                    const int iy = p / g->out_w * g->stride + ky - g->padding;
                    const int ix = p % g->out_w * g->stride + kx - g->padding;
                    if (iy >= 0 && iy < g->in_h && ix >= 0 && ix < g->in_w)
                        dx[((size_t)iy * g->in_w + ix) * C + c] += total;
                }
}

/* The input gradient is the bits of gemm() and col2im, whether it runs through them (a sample's
 * products split over threads, or shapes outside the per-position path) or computes each
 * position's patch gradient in registers and adds it at once (shapes on which gemm() runs its
 * tiles: 2 <= filters <= GEMM_KC, more than one position). */
START_TEST(test_conv2d_input_grad_bits) {
    const conv_geom cases[] = {
        {14, 14, 6, 10, 10, 16, 5, 1, 0},   /* LeNet's second layer */
        {14, 14, 16, 14, 14, 32, 5, 1, 2},  /* config/mnist-small.json's second layer */
        {14, 14, 16, 14, 14, 32, 3, 1, 1},  /* config/mnist.json's second layer */
        {14, 14, 32, 14, 14, 32, 3, 1, 1},  /* and its third */
        {9, 8, 3, 5, 4, 6, 3, 2, 1},        /* stride 2 with padding */
        {11, 7, 2, 11, 7, 2, 3, 1, 1},      /* two filters; rows of odd length */
        {8, 8, 4, 3, 3, 5, 2, 3, 0},        /* stride 3 over a kernel of 2: rows never read */
        {12, 12, 3, 10, 10, 37, 3, 1, 0},   /* filters not a multiple of 16 */
        {7, 7, 5, 7, 7, 3, 7, 1, 3},        /* a kernel as large as the input */
        {20, 20, 1, 10, 10, 4, 4, 2, 1},    /* one channel, an even kernel */
        {6, 6, 2, 1, 1, 4, 6, 1, 0},        /* one position: gemm()'s one-row loop */
        {6, 6, 3, 4, 4, 1, 3, 1, 0},        /* one filter: gemm()'s outer product */
        {5, 5, 2, 3, 3, 300, 3, 1, 0},      /* more filters than a block of GEMM_KC */
        {4, 70, 40, 2, 68, 3, 3, 1, 0},     /* patch rows longer than its buffers hold */
    };
    const int thread_counts[] = {1, 4};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t t = 0; t < sizeof thread_counts / sizeof thread_counts[0]; t++) {
            const conv_geom *g = &cases[c];
            const size_t in_size = (size_t)g->in_h * g->in_w * g->in_c;
            const size_t out_size = (size_t)g->out_h * g->out_w * g->n_filters;
            const size_t w_size = (size_t)g->n_filters * g->kernel * g->kernel * g->in_c;
            const size_t patches = (size_t)g->out_h * g->out_w * g->kernel * g->kernel * g->in_c;
            float *x = random_floats(in_size), *w = random_floats(w_size);
            float *dy = random_floats(out_size);
            float *dx = floats_alloc(in_size), *want = floats_alloc(in_size);
            float *dw = floats_alloc(w_size), *db = floats_alloc(g->n_filters);
            float *partial = floats_alloc(w_size + g->n_filters);
            float *col = floats_alloc(4 * patches), *dcol = floats_alloc(4 * patches);
            for (size_t i = 0; i < in_size; i++) dx[i] = NAN; /* written over, never added to */
            /* One sample: with 4 threads its products are split over them (gemm and col2im). */
            conv2d_backward(dx, dw, db, dy, x, w, 1, g, NULL, col, dcol, partial, NULL,
                            thread_counts[t]);
            input_grad_as_gemm(want, dy, w, g);
            for (size_t i = 0; i < in_size; i++)
                ck_assert_msg(memcmp(&dx[i], &want[i], sizeof *dx) == 0,
                              "case %zu, %d threads: din[%zu] %.9g, gemm and col2im give %.9g", c,
                              thread_counts[t], i, dx[i], want[i]);
            aligned_free(x), aligned_free(w), aligned_free(dy), aligned_free(dx);
            aligned_free(want), aligned_free(dw), aligned_free(db), aligned_free(partial);
            aligned_free(col), aligned_free(dcol);
        }
}
END_TEST

/* conv2d's threads never change a bit, over samples (n >= threads) or inside each sample's
 * products (n < threads), kept or rebuilt patches; and a lane of a cut pass gets exactly what a
 * pass of that lane's samples alone gets. */
START_TEST(test_conv2d_threads_and_lanes) {
    const conv_geom cases[] = {{28, 28, 8, 28, 28, 32, 5, 1, 2}, {12, 12, 3, 10, 10, 64, 3, 1, 0},
                               {28, 28, 1, 28, 28, 20, 5, 1, 2}, {28, 28, 1, 28, 28, 32, 5, 1, 2}};
    const int n = 5, starts[] = {0, 1, 2, 5}, thread_counts[] = {2, 3, 5, 16};
    int order_matters = 0;
    const lane_cut cut = {3, starts, 0};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int keep = 0; keep < 2; keep++) {
            const conv_geom *g = &cases[c];
            const size_t in_size = (size_t)g->in_h * g->in_w * g->in_c;
            const size_t out_size = (size_t)g->out_h * g->out_w * g->n_filters;
            const size_t w_size = (size_t)g->n_filters * g->kernel * g->kernel * g->in_c;
            const size_t patches = (size_t)g->out_h * g->out_w * g->kernel * g->kernel * g->in_c;
            const size_t lane_len = w_size + g->n_filters;
            lane_cut with_stride = cut;
            with_stride.grad_stride = lane_len;
            float *x = random_floats(n * in_size), *w = random_floats(w_size);
            float *b = random_floats(g->n_filters), *dy = random_floats(n * out_size);
            float *cols = keep ? floats_alloc(n * patches) : NULL;
            float *col = floats_alloc(16 * patches), *dcol = floats_alloc(16 * patches);
            float *partial = floats_alloc(n * lane_len);
            float *y[2], *dx[2], *grads[2];
            for (int r = 0; r < 2; r++) {
                y[r] = floats_alloc(n * out_size);
                dx[r] = floats_alloc(n * in_size);
                grads[r] = floats_alloc(3 * lane_len);
            }
            conv2d_forward(y[0], x, w, b, n, g, cols, col, 1);
            conv2d_backward(dx[0], grads[0], grads[0] + w_size, dy, x, w, n, g, cols, col, dcol,
                            partial, &with_stride, 1);
            for (size_t k = 0; k < sizeof thread_counts / sizeof thread_counts[0]; k++) {
                const int nt = thread_counts[k];
                conv2d_forward(y[1], x, w, b, n, g, cols, col, nt);
                conv2d_backward(dx[1], grads[1], grads[1] + w_size, dy, x, w, n, g, cols, col,
                                dcol, partial, &with_stride, nt);
                ck_assert_msg(memcmp(y[0], y[1], n * out_size * sizeof(float)) == 0 &&
                                  memcmp(dx[0], dx[1], n * in_size * sizeof(float)) == 0 &&
                                  memcmp(grads[0], grads[1], 3 * lane_len * sizeof(float)) == 0,
                              "conv2d case %zu keep %d: 1 and %d threads differ", c, keep, nt);
            }
            /* Lane 2 (samples 2, 3, 4) is its samples' gradients, each computed alone, added in
             * sample order in float; in reverse order some sums differ. */
            float *single[3];
            for (int k = 0; k < 3; k++) {
                single[k] = floats_alloc(lane_len);
                if (keep) conv2d_forward(y[1], x + (2 + k) * in_size, w, b, 1, g, cols, col, 1);
                conv2d_backward(dx[1], single[k], single[k] + w_size, dy + (2 + k) * out_size,
                                x + (2 + k) * in_size, w, 1, g, cols, col, dcol, partial, NULL, 1);
            }
            for (size_t i = 0; i < lane_len; i++) {
                float sum = single[0][i] + single[1][i];
                sum += single[2][i];
                float reverse = single[2][i] + single[1][i];
                reverse += single[0][i];
                order_matters |= memcmp(&sum, &reverse, sizeof sum) != 0;
                ck_assert_msg(memcmp(&sum, &grads[0][2 * lane_len + i], sizeof sum) == 0,
                              "conv2d case %zu keep %d: lane 2's gradient %zu is not its samples' "
                              "sum in order", c, keep, i);
            }
            for (int k = 0; k < 3; k++) aligned_free(single[k]);
            /* Lane 1 alone (sample 1) and lane 2 alone (samples 2, 3, 4), as one-lane passes. */
            for (int l = 1; l < 3; l++) {
                const int s0 = starts[l], m = starts[l + 1] - s0;
                float *lane = floats_alloc(lane_len);
                if (keep) conv2d_forward(y[1], x + s0 * in_size, w, b, m, g, cols, col, 1);
                conv2d_backward(dx[1], lane, lane + w_size, dy + s0 * out_size, x + s0 * in_size,
                                w, m, g, cols, col, dcol, partial, NULL, 1);
                ck_assert_msg(memcmp(lane, grads[0] + l * lane_len, lane_len * sizeof(float)) == 0,
                              "conv2d case %zu keep %d: lane %d differs from its samples alone",
                              c, keep, l);
                aligned_free(lane);
            }
            aligned_free(x), aligned_free(w), aligned_free(b), aligned_free(dy), aligned_free(col);
            aligned_free(dcol), aligned_free(partial);
            if (cols) aligned_free(cols);
            for (int r = 0; r < 2; r++) aligned_free(y[r]), aligned_free(dx[r]), aligned_free(grads[r]);
        }
    ck_assert_msg(order_matters, "no lane sum depends on the order of its samples");
}
END_TEST

START_TEST(test_dense_matches_reference) {
    const int shapes[][3] = {{1, 1352, 20}, {4, 1352, 20}, {7, 33, 10}, {8, 256, 120}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        int n = shapes[c][0], n_in = shapes[c][1], n_out = shapes[c][2];
        float *x = random_floats((size_t)n * n_in), *w = random_floats((size_t)n_in * n_out);
        float *b = random_floats(n_out), *dy = random_floats((size_t)n * n_out);
        float *y = floats_alloc((size_t)n * n_out), *y_ref = floats_alloc((size_t)n * n_out);
        dense_forward(y, x, w, b, n, n_in, n_out, 1);
        dense_forward_ref(y_ref, x, w, b, n, n_in, n_out);
        expect_near(y, y_ref, (size_t)n * n_out, n_in, "dense forward");
        float *dx = floats_alloc((size_t)n * n_in), *dx_ref = floats_alloc((size_t)n * n_in);
        float *dw = floats_alloc((size_t)n_in * n_out), *dw_ref = floats_alloc((size_t)n_in * n_out);
        float *db = floats_alloc(n_out), *db_ref = floats_alloc(n_out);
        float *scratch = floats_alloc((size_t)n * n_in);
        for (size_t i = 0; i < (size_t)n_in * n_out; i++) dw[i] = NAN; /* written, not added */
        for (int i = 0; i < n_out; i++) db[i] = NAN;
        dense_backward(dx, dw, db, dy, x, w, n, n_in, n_out, scratch, 1);
        dense_backward_ref(dx_ref, dw_ref, db_ref, dy, x, w, n, n_in, n_out);
        expect_near(dx, dx_ref, (size_t)n * n_in, n_out, "dense din");
        expect_near(dw, dw_ref, (size_t)n_in * n_out, n, "dense dweight");
        expect_near(db, db_ref, n_out, n, "dense dbias");
        aligned_free(x), aligned_free(w), aligned_free(b), aligned_free(dy), aligned_free(y);
        aligned_free(y_ref), aligned_free(dx), aligned_free(dx_ref), aligned_free(dw);
        aligned_free(dw_ref), aligned_free(db), aligned_free(db_ref), aligned_free(scratch);
    }
}
END_TEST

/* Regions of 2, 4, 3 and 4 working threads out of 4: every item runs exactly once, in the block
 * its thread count gives, and the same 4 threads run them all. (libgomp ends the threads a smaller
 * team leaves out, so teams sized to each loop start new threads at the next larger one.) */
enum { PB_ITEMS = 97, PB_NT = 4, PB_REGIONS = 4 };
typedef struct {
    int hits[PB_ITEMS];
    int worker_of[PB_ITEMS];
    long tid[PB_REGIONS][PB_NT];
    int region;
} pb_ctx;

static int pb_body(void *ctx, long begin, long end, int worker) {
    pb_ctx *c = ctx;
    for (long i = begin; i < end; i++) c->hits[i]++, c->worker_of[i] = worker;
    c->tid[c->region][worker] = (long)syscall(SYS_gettid);
    return 0;
}

START_TEST(test_par_blocks_cuts_and_keeps_threads) {
    static pb_ctx c;
    const int want[PB_REGIONS] = {2, 4, 3, 4};
    memset(&c, 0, sizeof c);
    for (c.region = 0; c.region < PB_REGIONS; c.region++) {
        const int threads = want[c.region];
        const size_t work = (size_t)threads * PAR_GRAIN;
        ck_assert_int_eq(par_threads(PB_NT, work, PB_ITEMS), threads);
        memset(c.hits, 0, sizeof c.hits);
        par_blocks(PB_NT, work, PB_ITEMS, pb_body, &c);
        for (long i = 0; i < PB_ITEMS; i++) {
            ck_assert_msg(c.hits[i] == 1, "region %d: item %ld ran %d times", c.region, i,
                          c.hits[i]);
            /* contiguous blocks, one per working thread: item i belongs to the w with
             * floor(n w / t) <= i < floor(n (w + 1) / t) */
            const int w = c.worker_of[i];
            ck_assert_msg(w < threads && PB_ITEMS * w / threads <= i &&
                              i < PB_ITEMS * (w + 1) / threads,
                          "region %d (%d threads): item %ld ran on worker %d", c.region, threads,
                          i, w);
        }
    }
    long seen[PB_REGIONS * PB_NT];
    int distinct = 0;
    for (int r = 0; r < PB_REGIONS; r++)
        for (int w = 0; w < want[r]; w++) {
            int known = 0;
            for (int k = 0; k < distinct; k++) known |= seen[k] == c.tid[r][w];
            if (!known) seen[distinct++] = c.tid[r][w];
        }
    ck_assert_msg(distinct <= PB_NT, "regions of at most %d threads ran on %d different threads",
                  PB_NT, distinct);
}
END_TEST

/* par_items: every item runs exactly once, for any share of threads and fewer items than
 * threads; and when one worker is slow (worker 0 sleeps on each item), the others take items of
 * its block. */
static int slow_zero_body(void *ctx, long begin, long end, int worker) {
    if (worker == 0) usleep(1000);
    return pb_body(ctx, begin, end, worker);
}

START_TEST(test_par_items_runs_each_once_and_shares) {
    static pb_ctx c;
    const long counts[] = {PB_ITEMS, 3, 1, 0};
    memset(&c, 0, sizeof c);
    for (int threads = 2; threads <= PB_NT; threads++)
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
            const long n = counts[k];
            memset(c.hits, 0, sizeof c.hits);
            par_items(PB_NT, (size_t)threads * PAR_GRAIN, n, pb_body, &c);
            for (long i = 0; i < PB_ITEMS; i++)
                ck_assert_msg(c.hits[i] == (i < n), "%d threads, %ld items: item %ld ran %d times",
                              threads, n, i, c.hits[i]);
        }
    memset(c.hits, 0, sizeof c.hits);
    par_items(PB_NT, (size_t)PB_NT * PAR_GRAIN, PB_ITEMS, slow_zero_body, &c);
    int taken = 0;
    for (long i = 0; i < PB_ITEMS; i++) {
        ck_assert_int_eq(c.hits[i], 1);
        taken += i < PB_ITEMS / PB_NT && c.worker_of[i] != 0;
    }
    ck_assert_msg(taken > 0, "no other worker took an item of the slow worker's block");
}
END_TEST

static Suite *kernels_suite(void) {
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("fast vs reference");
    tcase_add_test(tc, test_gemm_matches_reference);
    tcase_add_test(tc, test_gemm_thin_order);
    tcase_add_test(tc, test_gemm_outer_products);
    tcase_add_test(tc, test_gemm_tile_width_does_not_matter);
    tcase_add_test(tc, test_gemm_gather_same_bits);
    tcase_add_test(tc, test_gemm_thread_count_does_not_matter);
    tcase_add_test(tc, test_conv2d_matches_reference);
    tcase_add_test(tc, test_conv2d_threads_and_lanes);
    tcase_add_test(tc, test_conv2d_direct_weight_grad_bits);
    tcase_add_test(tc, test_conv2d_direct_forward_bits);
    tcase_add_test(tc, test_conv2d_input_grad_bits);
    tcase_add_test(tc, test_dense_matches_reference);
    tcase_add_test(tc, test_par_blocks_cuts_and_keeps_threads);
    tcase_add_test(tc, test_par_items_runs_each_once_and_shares);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(kernels_suite)
