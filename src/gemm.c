/*
 * The matrix multiply behind conv2d and dense, in blocks of at most KC values of k. A is read in
 * place, and so is B unless it is transposed; only what cannot be (a ragged last panel of MR rows
 * of A, ragged or transposed NR-column panels of B) is packed, zero-padded. An MR x NR
 * register-blocked micro-kernel, written with GCC vector extensions, accumulates each tile with
 * fused multiply-adds (this file is compiled with -ffp-contract=fast, and only the kernels
 * multiply). Edge tiles run the same kernel on zero-padded panels and copy out the valid part, so
 * an element's result never depends on where it sits; K is never padded. Thin products (one row,
 * one column, K = 1) have loops of their own, further down.
 */
#include "gemm.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"

typedef float vec16 __attribute__((vector_size(64)));
typedef float vec16u __attribute__((vector_size(64), aligned(4)));

/* Grow-only scratch for the packed panels, one pair per calling thread, freed when the thread
 * ends. */
typedef struct pack_buffers {
    float *a, *b;
    size_t cap_a, cap_b;
} pack_buffers;

static pthread_key_t buffers_key;
static pthread_once_t buffers_once = PTHREAD_ONCE_INIT;

static void buffers_free(void *p) {
    pack_buffers *bufs = p;
    free(bufs->a);
    free(bufs->b);
    free(bufs);
}

static void buffers_key_create(void) {
    pthread_key_create(&buffers_key, buffers_free);
}

static pack_buffers *thread_buffers(void) {
    pthread_once(&buffers_once, buffers_key_create);
    pack_buffers *bufs = pthread_getspecific(buffers_key);
    if (!bufs && (bufs = calloc(1, sizeof *bufs)) != NULL) pthread_setspecific(buffers_key, bufs);
    return bufs;
}

static float *scratch(float **buf, size_t *cap, size_t n) {
    if (n > *cap) {
        free(*buf);
        *buf = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
        *cap = *buf ? n : 0;
    }
    return *buf;
}

/* Packs rows [0, M) x k in [k0, k0 + kb) of op(A) into MR-row panels: panel p holds, for each k,
 * the MR values A[p*MR + i][k] (zero past M). */
static void pack_rows(float *dst, const float *A, int lda, int trans, int M, int k0, int kb) {
    int panels = (M + GEMM_MR - 1) / GEMM_MR;
    for (int p = 0; p < panels; p++) {
        float *d = dst + (size_t)p * kb * GEMM_MR;
        for (int k = 0; k < kb; k++)
            for (int i = 0; i < GEMM_MR; i++) {
                int row = p * GEMM_MR + i;
                d[k * GEMM_MR + i] =
                    row < M ? (trans ? A[(size_t)(k0 + k) * lda + row] : A[(size_t)row * lda + k0 + k])
                            : 0.0f;
            }
    }
}

/* Packs op(B) for k in [k0, k0 + kb) into nr-column panels: panel p holds, for each k, the nr
 * values B[k][p*nr + j] (zero past N). */
static void pack_cols(float *dst, const float *B, int ldb, int trans, int N, int k0, int kb,
                      int nr) {
    int panels = (N + nr - 1) / nr;
    for (int p = 0; p < panels; p++) {
        float *d = dst + (size_t)p * kb * nr;
        int j0 = p * nr, width = N - j0 < nr ? N - j0 : nr;
        if (trans) {
            /* Each column of the panel is a row of B: read along k, written down the panel. */
            for (int j = 0; j < width; j++) {
                const float *src = B + (size_t)(j0 + j) * ldb + k0;
                for (int k = 0; k < kb; k++) d[(size_t)k * nr + j] = src[k];
            }
            for (int j = width; j < nr; j++)
                for (int k = 0; k < kb; k++) d[(size_t)k * nr + j] = 0.0f;
            continue;
        }
        for (int k = 0; k < kb; k++) {
            float *row = d + (size_t)k * nr;
            const float *src = B + (size_t)(k0 + k) * ldb + j0;
            if (width == nr) {
                memcpy(row, src, (size_t)nr * sizeof(float));
                continue;
            }
            /* Two loops, which vectorise (one would load only under a condition). */
            int j = 0;
            for (; j < width; j++) row[j] = src[j];
            for (; j < nr; j++) row[j] = 0.0f;
        }
    }
}

/* One MR x (16 nv) tile: acc = sum_k a(i, k) * b(k, j) in ascending k, where a(i, k) is
 * a[k * a_k + i * a_i], or with the tables of a gathered A a[koff[k] + roff[i]], and b(k, j) is
 * b[k * b_k + j]; C = (add ? C : 0) + acc for the valid part. Always inlined so that each
 * caller's strides, nv and whether there are tables are constants where they can be. */
#if defined(__AVX512F__)
static inline __attribute__((always_inline)) void
micro_kernel(int kb, const float *restrict a, size_t a_k, size_t a_i, const int *koff,
             const int *roff, const float *restrict b, size_t b_k, float *C, int ldc, int rows,
             int cols, int add, const int nv) {
    size_t ro[GEMM_MR];
    for (int i = 0; i < GEMM_MR; i++) ro[i] = roff ? (size_t)roff[i] : i * a_i;
    vec16 acc[GEMM_MR][GEMM_NV];
    for (int i = 0; i < GEMM_MR; i++)
        for (int v = 0; v < nv; v++) acc[i][v] = (vec16){0};
    for (int k = 0; k < kb; k++) {
        vec16 bk[GEMM_NV];
        for (int v = 0; v < nv; v++) bk[v] = *(const vec16u *)(b + (size_t)k * b_k + 16 * v);
        const float *ak = koff ? a + koff[k] : a + (size_t)k * a_k;
        for (int i = 0; i < GEMM_MR; i++)
            for (int v = 0; v < nv; v++) acc[i][v] += ak[ro[i]] * bk[v];
    }
#else
/* Without AVX-512, the 16 columns as two 8-float halves, the width AVX2 has (four quarters with
 * SSE2 only): GCC lowers wider vector arithmetic badly there (measured several times slower).
 * Each element is still one chain of fused multiply-adds over ascending k (a product and a sum
 * without FMA), so the results are the same bits. */
#define TILE_W VEC_FLOATS
typedef float tvec __attribute__((vector_size(TILE_W * 4)));
typedef float tvec_u __attribute__((vector_size(TILE_W * 4), aligned(4)));

static inline __attribute__((always_inline)) void
micro_kernel(int kb, const float *restrict a, size_t a_k, size_t a_i, const int *koff,
             const int *roff, const float *restrict b, size_t b_k, float *C, int ldc, int rows,
             int cols, int add, const int nv) {
    size_t ro[GEMM_MR];
    for (int i = 0; i < GEMM_MR; i++) ro[i] = roff ? (size_t)roff[i] : i * a_i;
    enum { H = 16 / TILE_W };
    tvec part[GEMM_MR][H];
    for (int i = 0; i < GEMM_MR; i++)
        for (int h = 0; h < H; h++) part[i][h] = (tvec){0};
    for (int k = 0; k < kb; k++) {
        tvec bk[H];
        for (int h = 0; h < H; h++) bk[h] = *(const tvec_u *)(b + (size_t)k * b_k + h * TILE_W);
        const float *ak = koff ? a + koff[k] : a + (size_t)k * a_k;
        for (int i = 0; i < GEMM_MR; i++) {
            const float ai = ak[ro[i]];
            for (int h = 0; h < H; h++) part[i][h] += ai * bk[h];
        }
    }
    vec16 acc[GEMM_MR][GEMM_NV];
    for (int i = 0; i < GEMM_MR; i++)
        for (int h = 0; h < H; h++)
            memcpy((float *)&acc[i][0] + h * TILE_W, &part[i][h], sizeof part[i][h]);
#endif
    if (cols == 16 * nv) {
        for (int i = 0; i < rows; i++)
            for (int v = 0; v < nv; v++) {
                vec16u *c = (vec16u *)(C + (size_t)i * ldc + 16 * v);
                *c = add ? *c + acc[i][v] : acc[i][v];
            }
        return;
    }
    for (int i = 0; i < rows; i++) {
        float tile[GEMM_NR];
        memcpy(tile, &acc[i][0], (size_t)nv * sizeof acc[i][0]);
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < cols; j++) c[j] = add ? c[j] + tile[j] : tile[j];
    }
}

/* One k-block of a product: what each tile of it needs. */
typedef struct gemm_block {
    int trans_a, M, N, k0, kb, full_rows, direct_cols, col_panels, add;
    int nv, nr; /* the tile's width: nv vectors of 16, nr = 16 nv columns */
    const int *rows, *cols; /* a gathered A (gemm_gather), or NULL */
    int row_panels, by_cols; /* tile order: column panel by column panel when by_cols */
    const float *A, *B, *pa, *pb;
    int lda, ldb, ldc;
    float *C;
} gemm_block;

/* Tiles [begin, end) of tile width nv, numbered row panel by row panel, or column panel by
 * column panel when the product has fewer rows than columns (a batch of samples times a layer's
 * weights), so that consecutive tiles share the larger operand's panel; each tile belongs to one
 * thread. */
static inline __attribute__((always_inline)) void tiles_of_width(const gemm_block *g, long begin,
                                                                 long end, const int nv) {
    const int kb = g->kb, k0 = g->k0, lda = g->lda, ldb = g->ldb, ldc = g->ldc, nr = 16 * nv;
    for (long t = begin; t < end; t++) {
        int ip = (int)(t / g->col_panels), jp = (int)(t % g->col_panels);
        if (g->by_cols) ip = (int)(t % g->row_panels), jp = (int)(t / g->row_panels);
        int i0 = ip * GEMM_MR, j0 = jp * nr;
        const float *b = jp < g->direct_cols ? g->B + (size_t)k0 * ldb + j0
                                             : g->pb + (size_t)(jp - g->direct_cols) * kb * nr;
        size_t b_k = jp < g->direct_cols ? (size_t)ldb : (size_t)nr;
        float *c = g->C + (size_t)i0 * ldc + j0;
        int rows = g->M - i0 < GEMM_MR ? g->M - i0 : GEMM_MR;
        int cols = g->N - j0 < nr ? g->N - j0 : nr;
        if (ip == g->full_rows && g->rows) {
            /* The last, partial row panel of a gathered A: its missing rows read the first
             * row again, and are not stored. */
            int ragged[GEMM_MR];
            for (int i = 0; i < GEMM_MR; i++) ragged[i] = g->rows[i0 + (i < rows ? i : 0)];
            micro_kernel(kb, g->A, 0, 0, g->cols + k0, ragged, b, b_k, c, ldc, rows, cols,
                         g->add, nv);
        } else if (ip == g->full_rows)
            micro_kernel(kb, g->pa, GEMM_MR, 1, NULL, NULL, b, b_k, c, ldc, rows, cols, g->add,
                         nv);
        else if (g->rows) /* A gathered: a(i, k) = src[rows[i] + cols[k]] */
            micro_kernel(kb, g->A, 0, 0, g->cols + k0, g->rows + i0, b, b_k, c, ldc, rows, cols,
                         g->add, nv);
        else if (g->trans_a) /* A is K x M: row k holds a(i0 .. i0+MR-1, k) together */
            micro_kernel(kb, g->A + (size_t)k0 * lda + i0, (size_t)lda, 1, NULL, NULL, b, b_k, c,
                         ldc, rows, cols, g->add, nv);
        else /* A is M x K: each of the MR rows is read along k */
            micro_kernel(kb, g->A + (size_t)i0 * lda + k0, 1, (size_t)lda, NULL, NULL, b, b_k, c,
                         ldc, rows, cols, g->add, nv);
    }
}

static int gemm_tiles(void *ctx, long begin, long end, int worker) {
    (void)worker;
    const gemm_block *g = ctx;
#if GEMM_NV > 1
    if (g->nv == 2) {
        tiles_of_width(g, begin, end, 2);
        return 0;
    }
#endif
    tiles_of_width(g, begin, end, 1);
    return 0;
}

/* ---- thin products (a batch of one sample): one vector, or an outer product ----
 * The register tile would run mostly empty on these shapes (a 1-row A leaves 7 of its 8 rows
 * unused), so they get loops of their own. Which loop runs depends on the shape only, never on
 * the thread count, and threads split the outputs, so results stay independent of threads. */

typedef float vec4u __attribute__((vector_size(16), aligned(4)));
typedef int ivec16 __attribute__((vector_size(64)));

/* a * b + c for vectors, one fused multiply-add where the CPU has one (-ffp-contract=fast fuses
 * it, as it fuses the tiles' loops), a product and a sum where it has none. The thin products'
 * one-by-one tails are spelled with it, lanes side by side: written as a scalar s += a * b, GCC
 * may vectorise such a loop as products first, then added in order (two roundings), and whether
 * it does depends on the loop, not on the shape. */
#define MUL_ADD_V(a, b, c) ((a) * (b) + (c))

typedef struct thin_args {
    int K, ldc, add;
    long n_out;      /* outputs in all */
    const float *x;  /* the vector, x[k * x_k] (dots: x_k = 1) */
    size_t x_k;
    const float *Y;  /* the matrix: Y[k * y_k + j] (axpy) or Y[j * y_j + k] (dots) */
    size_t y_k, y_j;
    float *C;        /* output j at C[j * ldc] */
} thin_args;

/* Outputs j0 + from .. j0 + to - 1 from v[from .. to - 1]. */
static inline void store_outs(const thin_args *t, long j0, const float *v, int from, int to) {
    float *c = t->C + (size_t)j0 * t->ldc;
    const size_t ldc = t->ldc;
    if (t->add)
        for (int j = from; j < to; j++) c[j * ldc] += v[j];
    else if (ldc == 1)
        for (int j = from; j < to; j++) c[j] = v[j];
    else
        for (int j = from; j < to; j++) c[j * ldc] = v[j];
}

/* The thin loops' register width (VEC_FLOATS): a vector of 16 columns is one register with
 * AVX-512, two with AVX, four with SSE2 (16-float vectors made the AVX2 build's batch-1
 * products several times slower). */
#define AXPY_W VEC_FLOATS
typedef float avec __attribute__((vector_size(AXPY_W * 4)));
typedef float avec_u __attribute__((vector_size(AXPY_W * 4), aligned(4)));
#define AXPY_H (16 / AXPY_W) /* registers for a vector of 16 columns */

/* Columns [c0, c0 + 16 nb) of y[j] = sum_k x_k Y[k][j] for nb (at most 4) vectors of 16 columns
 * at once, in register: per column two partial sums, k even and k odd, added at the end; the
 * nb vectors' chains are independent, so their fused multiply-adds overlap. firsts[b] is the
 * first column of vector b; its lanes below skip[b] were stored already and are not stored. */
static inline __attribute__((always_inline)) void
axpy_vectors(const thin_args *t, const long *firsts, const int *skip, const int nb) {
    avec even[4][AXPY_H], odd[4][AXPY_H];
    const float *y[4];
    for (int b = 0; b < nb; b++) {
        for (int h = 0; h < AXPY_H; h++) even[b][h] = odd[b][h] = (avec){0};
        y[b] = t->Y + firsts[b];
    }
    const size_t xs = t->x_k, ys = t->y_k;
    int k = 0;
    for (; k + 1 < t->K; k += 2) {
        const float xe = t->x[(size_t)k * xs], xo = t->x[(size_t)(k + 1) * xs];
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < AXPY_H; h++) {
                even[b][h] += xe * *(const avec_u *)(y[b] + (size_t)k * ys + h * AXPY_W);
                odd[b][h] += xo * *(const avec_u *)(y[b] + (size_t)(k + 1) * ys + h * AXPY_W);
            }
    }
    if (k < t->K)
        for (int b = 0; b < nb; b++)
            for (int h = 0; h < AXPY_H; h++)
                even[b][h] +=
                    t->x[(size_t)k * xs] * *(const avec_u *)(y[b] + (size_t)k * ys + h * AXPY_W);
    for (int b = 0; b < nb; b++) {
        float sum[16];
        for (int h = 0; h < AXPY_H; h++) *(avec_u *)(sum + h * AXPY_W) = even[b][h] + odd[b][h];
        store_outs(t, firsts[b], sum, skip[b], 16);
    }
}

/* Outputs [16 begin, 16 end) of y[j] = sum_k x_k Y[k][j], as scaled rows of Y added in ascending
 * k, two interleaved partial sums (even and odd k) per output, then added. A product at least 16
 * wide computes its ragged last block as the last 16 columns (the lanes it shares with the block
 * before are the same sums, and are not stored again), up to four blocks at a time. */
static int thin_axpy(void *ctx, long begin, long end, int worker) {
    (void)worker;
    const thin_args *t = ctx;
    const long total = t->n_out;
    if (total >= 16) {
        for (long blk = begin; blk < end; blk += 4) {
            const int nb = end - blk < 4 ? (int)(end - blk) : 4;
            long firsts[4];
            int skip[4];
            for (int b = 0; b < nb; b++) {
                const long j0 = (blk + b) * 16;
                firsts[b] = j0 + 16 <= total ? j0 : total - 16;
                skip[b] = (int)(j0 - firsts[b]);
            }
            switch (nb) {
            case 4: axpy_vectors(t, firsts, skip, 4); break;
            case 3: axpy_vectors(t, firsts, skip, 3); break;
            case 2: axpy_vectors(t, firsts, skip, 2); break;
            default: axpy_vectors(t, firsts, skip, 1); break;
            }
        }
        return 0;
    }
    /* Fewer than 16 outputs: one block, one by one. */
    if (begin >= end) return 0;
    float even[16] = {0}, odd[16] = {0};
    const float *y = t->Y;
    int k = 0;
    for (; k + 1 < t->K; k += 2) {
        const float xe = t->x[(size_t)k * t->x_k], xo = t->x[(size_t)(k + 1) * t->x_k];
        for (int j = 0; j < total; j++) {
            even[j] += xe * y[(size_t)k * t->y_k + j];
            odd[j] += xo * y[(size_t)(k + 1) * t->y_k + j];
        }
    }
    if (k < t->K)
        for (int j = 0; j < total; j++)
            even[j] += t->x[(size_t)k * t->x_k] * y[(size_t)k * t->y_k + j];
    for (int j = 0; j < total; j++) even[j] += odd[j];
    store_outs(t, 0, even, 0, (int)total);
    return 0;
}

/* Lane shuffles of two vectors, in GCC's and clang's spellings. */
#ifdef __clang__
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int mask16 __attribute__((vector_size(64)));
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (mask16){__VA_ARGS__})
#endif
/* Adds neighbouring halves of a's and b's groups of lanes: with groups of 2w lanes, each result
 * lane holds the sum of two lanes w apart, a's groups first, then b's. */
#define FOLD(a, b, lo, hi) (SHUFFLE(a, b, lo) + SHUFFLE(a, b, hi))
#define LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define LO4 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27
#define HI4 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31
#define LO2 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29
#define HI2 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31
#define LO1 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define HI1 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31

typedef float vec8x __attribute__((vector_size(32)));

/* Four floats from p, or nq < 4 of them and zeros. */
static inline __attribute__((always_inline)) vec4u load4(const float *p, int nq) {
    if (nq == 4) return *(const vec4u *)p;
    vec4u q = {0};
    for (int e = 0; e < nq; e++) q[e] = p[e];
    return q;
}

/* Lanes r of c[0 .. nq - 1]: elements 0 .. nq - 1 (nq at most 4) of the 16 rows at y + at[r],
 * by a 4 x 4 transpose within each 128-bit quarter: quarter g of z[i] holds row 4 g + i. */
static inline __attribute__((always_inline)) void
columns_of_4(const float *y, const size_t at[16], int nq, vec16 c[4]) {
    vec16 z[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        const vec8x lo = __builtin_shufflevector(load4(y + at[i], nq), load4(y + at[4 + i], nq),
                                                0, 1, 2, 3, 4, 5, 6, 7);
        const vec8x hi = __builtin_shufflevector(load4(y + at[8 + i], nq),
                                                load4(y + at[12 + i], nq), 0, 1, 2, 3, 4, 5, 6, 7);
        z[i] = __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                       15);
    }
    /* In each quarter: t0 interleaves z0's and z1's elements 0 and 1, t1 their 2 and 3; t2 and
     * t3 the same for z2 and z3. */
#define UNPACK_LO 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29
#define UNPACK_HI 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31
#define PAIRS_LO 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define PAIRS_HI 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
    const vec16 t0 = SHUFFLE(z[0], z[1], UNPACK_LO), t1 = SHUFFLE(z[0], z[1], UNPACK_HI);
    const vec16 t2 = SHUFFLE(z[2], z[3], UNPACK_LO), t3 = SHUFFLE(z[2], z[3], UNPACK_HI);
    c[0] = SHUFFLE(t0, t2, PAIRS_LO);
    c[1] = SHUFFLE(t0, t2, PAIRS_HI);
    c[2] = SHUFFLE(t1, t3, PAIRS_LO);
    c[3] = SHUFFLE(t1, t3, PAIRS_HI);
}

/* One row's products with x, 16 at a time, lane l summing k = l, l + 16, ... */
static inline __attribute__((always_inline)) vec16 row_products(const float *row, const float *x,
                                                                int K16) {
    vec16 acc = {0};
    for (int k = 0; k < K16; k += 16) acc += *(const vec16u *)(row + k) * *(const vec16u *)(x + k);
    return acc;
}

/* Outputs j0 .. j0 + rows - 1 of thin_dots, K16 = K rounded down to a multiple of 16. */
static inline __attribute__((always_inline)) void dots_block(const thin_args *t, long j0, int rows,
                                                              const int K16) {
    const int K = t->K;
    const float *x = t->x, *y0 = t->Y + (size_t)j0 * t->y_j;
    size_t at[16]; /* row r's offset; the ragged block's missing rows repeat its first */
#pragma GCC unroll 16
    for (int r = 0; r < 16; r++) at[r] = (size_t)(rows == 16 || r < rows ? r : 0) * t->y_j;
    vec16 s8[8], s4[4], s2[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        s8[i] = FOLD(row_products(y0 + at[2 * i], x, K16),
                     row_products(y0 + at[2 * i + 1], x, K16), LO8, HI8);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) s4[i] = FOLD(s8[2 * i], s8[2 * i + 1], LO4, HI4);
    for (int i = 0; i < 2; i++) s2[i] = FOLD(s4[2 * i], s4[2 * i + 1], LO2, HI2);
    vec16 sums = FOLD(s2[0], s2[1], LO1, HI1);
    if (K > K16) {
        vec16 tail = {0};
        int k = K16;
        for (; k + 4 <= K; k += 4) {
            vec16 c[4];
            columns_of_4(y0 + k, at, 4, c);
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) tail = MUL_ADD_V(c[q], x[k + q], tail);
        }
        if (k < K) {
            const int nq = K - k;
            vec16 c[4];
            columns_of_4(y0 + k, at, nq, c);
            for (int q = 0; q < nq; q++) tail = MUL_ADD_V(c[q], x[k + q], tail);
        }
        sums += tail;
    }
    float out[16];
    *(vec16u *)out = sums;
    store_outs(t, j0, out, 0, rows);
}

/* Outputs [16 begin, 16 end) of y[j] = sum_k Y[j][k] x_k, with x and the rows of Y contiguous:
 * each row's products 16 at a time into one vector, its last K mod 16 one by one; the 16 row
 * vectors of a block are then summed lane-wise together by a fixed tree. The one-by-one tails of
 * the block's 16 rows run side by side, one row per lane (their columns gathered 4 at a time by
 * a transpose in registers), each lane's chain of multiply-adds the scalar one. */
static int thin_dots(void *ctx, long begin, long end, int worker) {
    (void)worker;
    const thin_args *t = ctx;
    const int K16 = t->K / 16 * 16;
    for (long blk = begin; blk < end; blk++) {
        const long j0 = blk * 16;
        const int rows = t->n_out - j0 < 16 ? (int)(t->n_out - j0) : 16;
        if (rows == 16 && K16 == 16) /* K from 16 to 31: one vector of products per row */
            dots_block(t, j0, 16, 16);
        else
            dots_block(t, j0, rows, K16);
    }
    return 0;
}

typedef struct outer_args {
    int trans_a, trans_b, N, lda, ldb, ldc, add;
    const float *A, *B;
    float *C;
} outer_args;

/* Rows [begin, end) of C = a b^T written as one run of whole 16-float stores, for rows of 17 to
 * 31 floats that lie one after another (a batch-1 dense layer's weight gradient, 20 wide in the
 * report): row by row, every row would end in a short store and most stores would split a cache
 * line. A run of 16 elements spans at most two rows; which columns and rows its lanes hold
 * repeats every N / gcd(16, N) runs, so b's columns and the lanes of the second row are laid out
 * once per call. Each element is still the one product a_i b_j. */
/* x in all 16 lanes, as it is (adding it to zeros would turn -0 into +0). */
static inline vec16 splat16(float x) {
    return (vec16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
}

static void outer_runs(const outer_args *o, long begin, long end) {
    enum { MAX_PHASES = 32 };
    const int N = o->N;
    const size_t lda = o->trans_a ? 1 : (size_t)o->lda;
    const float *A = o->A, *B = o->B;
    float *C = o->C;
    int common = 16; /* gcd(16, N) */
    while (N % common) common /= 2;
    const int phases = N / common;
    vec16 cols[MAX_PHASES];
    ivec16 second[MAX_PHASES];
    for (int ph = 0; ph < phases; ph++)
        for (int l = 0; l < 16; l++) {
            const int at = (ph * 16 + l) % N, first = ph * 16 % N;
            cols[ph][l] = B[at];
            second[ph][l] = first + l >= N ? -1 : 0;
        }
    size_t f = (size_t)begin * N;
    const size_t f1 = (size_t)end * N;
    for (; f < f1 && f % 16; f++) C[f] = A[f / N * lda] * B[f % N];
    int ph = (int)(f / 16 % (size_t)phases);
    size_t row = f / N, row_end = (row + 1) * N; /* the run's first row, and where it ends */
    for (; f + 16 <= f1; f += 16) {
        const ivec16 pick = second[ph];
        /* The next row only when the run reaches it (the last row has none after it). */
        const size_t next = f + 16 > row_end ? row + 1 : row;
        const vec16 a0 = splat16(A[row * lda]), a1 = splat16(A[next * lda]);
        const vec16 a = (vec16)(((ivec16)a0 & ~pick) | ((ivec16)a1 & pick));
        *(vec16u *)(C + f) = a * cols[ph];
        ph = ph + 1 == phases ? 0 : ph + 1;
        if (f + 16 >= row_end) row++, row_end += N;
    }
    for (; f < f1; f++) C[f] = A[f / N * lda] * B[f % N];
}

/* Rows [begin, end) of C = (add ? C : 0) + a b^T, K = 1. */
static int thin_outer(void *ctx, long begin, long end, int worker) {
    (void)worker;
    const outer_args *o = ctx;
    if (!o->add && !o->trans_b && o->ldc == o->N && o->N > 16 && o->N < 32) {
        outer_runs(o, begin, end);
        return 0;
    }
    for (long i = begin; i < end; i++) {
        const float a = o->trans_a ? o->A[i] : o->A[(size_t)i * o->lda];
        float *c = o->C + (size_t)i * o->ldc;
        if (!o->trans_b) {
            const float *b = o->B;
            int j = 0;
            for (; j + 16 <= o->N; j += 16) {
                vec16u *cj = (vec16u *)(c + j);
                vec16 p = a * *(const vec16u *)(b + j);
                *cj = o->add ? *cj + p : p;
            }
            for (; j + 4 <= o->N; j += 4) {
                vec4u *cj = (vec4u *)(c + j);
                vec4u p = a * *(const vec4u *)(b + j);
                *cj = o->add ? *cj + p : p;
            }
            for (; j < o->N; j++) c[j] = o->add ? c[j] + a * b[j] : a * b[j];
        } else {
            for (int j = 0; j < o->N; j++) {
                float p = a * o->B[(size_t)j * o->ldb];
                c[j] = o->add ? c[j] + p : p;
            }
        }
    }
    return 0;
}

/* The thin shapes: returns 1 when it computed C, 0 when the tiled path should. */
static int gemm_thin(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                     const float *B, int ldb, int add, float *C, int ldc, int nt) {
    const size_t work = (size_t)M * N * K;
    if (K == 1) {
        outer_args o = {trans_a, trans_b, N, lda, ldb, ldc, add, A, B, C};
        par_blocks(nt, work, M, thin_outer, &o);
        return 1;
    }
    if (M == 1 && !trans_b) { /* c(0, j) = sum_k a(0, k) B[k][j] */
        thin_args t = {K, 1, add, N, A, trans_a ? (size_t)lda : 1, B, (size_t)ldb, 0, C};
        par_blocks(nt, work, (N + 15) / 16, thin_axpy, &t);
        return 1;
    }
    if (N == 1 && trans_a) { /* c(i, 0) = sum_k b(k, 0) A[k][i] */
        thin_args t = {K, ldc, add, M, B, trans_b ? 1 : (size_t)ldb, A, (size_t)lda, 0, C};
        par_blocks(nt, work, (M + 15) / 16, thin_axpy, &t);
        return 1;
    }
    if (N == 1 && trans_b) { /* c(i, 0) = sum_k A[i][k] B[0][k]: rows of A against B's row */
        thin_args t = {K, ldc, add, M, B, 1, A, 1, (size_t)lda, C};
        par_blocks(nt, work, (M + 15) / 16, thin_dots, &t);
        return 1;
    }
    return 0;
}

/* Packs, for k in [k0, k0 + kb), the ragged last row panel of A into pa and the column panels of
 * B that are not read in place into pb. */
static void pack_block(const gemm_block *g, int trans_b, int packed_cols, int row_panels, int k0,
                       int kb, float *pa, float *pb) {
    if (g->full_rows < row_panels && !g->rows) {
        /* The last, partial row panel (the packed layout: a_k = MR, a_i = 1). */
        const float *src = g->trans_a ? g->A + g->full_rows * GEMM_MR
                                      : g->A + (size_t)g->full_rows * GEMM_MR * g->lda;
        pack_rows(pa, src, g->lda, g->trans_a, g->M - g->full_rows * GEMM_MR, k0, kb);
    }
    if (packed_cols) {
        const int j0 = g->direct_cols * g->nr;
        const float *src = trans_b ? g->B + (size_t)j0 * g->ldb : g->B + j0;
        pack_cols(pb, src, g->ldb, trans_b, g->N - j0, k0, kb, g->nr);
    }
}

/* One tiled product, ready to run: its block of arguments and its shape. */
typedef struct gemm_job {
    gemm_block blk;
    int K, accumulate, packed_cols, row_panels, trans_b;
    long tiles;
    size_t slot_a, slot_b; /* floats its packed panels need */
} gemm_job;

/* Fills job for the product, unless it is thin or empty (then runs it at once with nt threads
 * and returns 1). */
static int gemm_prepare(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, int accumulate, float *C, int ldc, int nt,
                        const int *rows, const int *cols, gemm_job *job) {
    if (M <= 0 || N <= 0) return 1;
    if (K <= 0) {
        if (!accumulate)
            for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(float));
        return 1;
    }
    if (!rows && gemm_thin(trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, ldc, nt))
        return 1;
    /* The tile's width: GEMM_NV vectors (two with AVX-512: twice the products per value of A
     * loaded), one where N is no wider than a vector. Which width sums an element makes no
     * difference to its bits. */
    const int nv = N > 16 ? GEMM_NV : 1, nr = 16 * nv;
    const int row_panels = (M + GEMM_MR - 1) / GEMM_MR, col_panels = (N + nr - 1) / nr;
    /* Panels read in place: all full row panels of A; the full column panels of B when B is not
     * transposed. The rest is packed, zero-padded. */
    const int full_rows = M / GEMM_MR, direct_cols = trans_b ? 0 : N / nr;
    const int packed_cols = col_panels - direct_cols;
    const int kc = K < GEMM_KC ? K : GEMM_KC;
    *job = (gemm_job){{trans_a, M, N, 0, 0, full_rows, direct_cols, col_panels, 0, nv, nr, rows,
                       cols, row_panels, M < N, A, B, NULL, NULL, lda, ldb, ldc, C},
                      K, accumulate, packed_cols, row_panels, trans_b,
                      (long)row_panels * col_panels, (size_t)GEMM_MR * kc,
                      (size_t)(packed_cols ? packed_cols : 1) * nr * kc};
    return 0;
}

/* Tiles [begin, end) of one product through every block of k in order, packing into pa and pb.
 * A thread packs the ragged row panel only when one of its tiles lies in it. */
static void gemm_run(const gemm_job *job, long begin, long end, float *pa, float *pb) {
    gemm_block blk = job->blk;
    /* In column order every column panel has a tile in the ragged row panel. */
    const int needs_ragged = blk.by_cols ? blk.full_rows < job->row_panels
                                         : end > (long)blk.full_rows * blk.col_panels;
    const int row_panels = needs_ragged ? job->row_panels : blk.full_rows;
    blk.pa = pa;
    blk.pb = pb;
    for (int k0 = 0; k0 < job->K; k0 += GEMM_KC) {
        const int kb = job->K - k0 < GEMM_KC ? job->K - k0 : GEMM_KC;
        blk.k0 = k0;
        blk.kb = kb;
        blk.add = job->accumulate || k0 > 0;
        pack_block(&blk, job->trans_b, job->packed_cols, row_panels, k0, kb, pa, pb);
        gemm_tiles(&blk, begin, end, 0);
    }
}

/* Several products in one region: the tiles of all of them, numbered product after product;
 * each worker packs into its own slot. */
typedef struct gemm_batch_args {
    const gemm_job *jobs;
    int count;
    float *pa, *pb;
    size_t slot_a, slot_b;
} gemm_batch_args;

static int gemm_batch_tiles(void *ctx, long begin, long end, int worker) {
    const gemm_batch_args *a = ctx;
    float *pa = a->pa + (size_t)worker * a->slot_a, *pb = a->pb + (size_t)worker * a->slot_b;
    long first = 0;
    for (int i = 0; i < a->count && first < end; first += a->jobs[i].tiles, i++) {
        const long lo = begin > first ? begin - first : 0;
        const long hi = end - first < a->jobs[i].tiles ? end - first : a->jobs[i].tiles;
        if (lo < hi) gemm_run(&a->jobs[i], lo, hi, pa, pb);
    }
    return 0;
}

/* gemm_ref for a gathered A. */
static void gather_ref(const gemm_block *g, int trans_b, int K, int accumulate) {
    for (int i = 0; i < g->M; i++)
        for (int j = 0; j < g->N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)g->A[g->rows[i] + g->cols[k]] *
                       (trans_b ? g->B[(size_t)j * g->ldb + k] : g->B[(size_t)k * g->ldb + j]);
            float *c = g->C + (size_t)i * g->ldc + j;
            *c = accumulate ? *c + (float)acc : (float)acc;
        }
}

/* Runs the prepared products with up to nt threads: one region over all their tiles when the
 * work pays for several threads, else one after another on this thread. */
static void gemm_jobs(gemm_job *jobs, int count, int nt) {
    size_t work = 0, slot_a = 0, slot_b = 0;
    long tiles = 0;
    for (int i = 0; i < count; i++) {
        work += (size_t)jobs[i].blk.M * jobs[i].blk.N * jobs[i].K;
        tiles += jobs[i].tiles;
        if (jobs[i].slot_a > slot_a) slot_a = jobs[i].slot_a;
        if (jobs[i].slot_b > slot_b) slot_b = jobs[i].slot_b;
    }
    const int threads = par_threads(nt, work, tiles);
    pack_buffers *bufs = thread_buffers();
    float *pa = bufs ? scratch(&bufs->a, &bufs->cap_a, slot_a * threads) : NULL;
    float *pb = bufs ? scratch(&bufs->b, &bufs->cap_b, slot_b * threads) : NULL;
    if (!pa || !pb) {
        /* No memory for the packed panels (a few MiB at most): the plain loop needs none. Its
         * rounding differs, but it is chosen by the shapes and the allocator, never by threads
         * (the panels of one thread are tried first). */
        pa = bufs ? scratch(&bufs->a, &bufs->cap_a, slot_a) : NULL;
        pb = bufs ? scratch(&bufs->b, &bufs->cap_b, slot_b) : NULL;
        for (int i = 0; i < count; i++) {
            const gemm_job *j = &jobs[i];
            if (pa && pb) {
                gemm_run(j, 0, j->tiles, pa, pb);
            } else if (j->blk.rows) {
                gather_ref(&j->blk, j->trans_b, j->K, j->accumulate);
            } else {
                const gemm_block *g = &j->blk;
                gemm_ref(g->trans_a, j->trans_b, g->M, g->N, j->K, g->A, g->lda, g->B, g->ldb,
                         j->accumulate, g->C, g->ldc);
            }
        }
        return;
    }
    if (threads < 2) {
        for (int i = 0; i < count; i++) gemm_run(&jobs[i], 0, jobs[i].tiles, pa, pb);
        return;
    }
    gemm_batch_args args = {jobs, count, pa, pb, slot_a, slot_b};
    par_blocks(nt, work, tiles, gemm_batch_tiles, &args);
}

void gemm(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda, const float *B,
          int ldb, int accumulate, float *C, int ldc, int nt) {
    gemm_job job;
    if (gemm_prepare(trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, ldc, nt, NULL,
                     NULL, &job))
        return;
    gemm_jobs(&job, 1, nt);
}

void gemm_gather(int M, int N, int K, const float *src, const int *rows, const int *cols,
                 int trans_b, const float *B, int ldb, int accumulate, float *C, int ldc, int nt) {
    gemm_job job;
    if (gemm_prepare(0, trans_b, M, N, K, src, 0, B, ldb, accumulate, C, ldc, nt, rows, cols, &job))
        return;
    gemm_jobs(&job, 1, nt);
}

void gemm_batch(int count, const gemm_args *list, int nt) {
    enum { CHUNK = 32 };
    gemm_job jobs[CHUNK];
    for (int done = 0; done < count;) {
        int n = 0;
        for (; done < count && n < CHUNK; done++) {
            const gemm_args *g = &list[done];
            if (!gemm_prepare(g->trans_a, g->trans_b, g->M, g->N, g->K, g->A, g->lda, g->B, g->ldb,
                              g->accumulate, g->C, g->ldc, nt, NULL, NULL, &jobs[n]))
                n++;
        }
        gemm_jobs(jobs, n, nt);
    }
}

void gemm_ref(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, int accumulate, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)(trans_a ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                       (trans_b ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            C[(size_t)i * ldc + j] = accumulate ? C[(size_t)i * ldc + j] + (float)acc : (float)acc;
        }
}
