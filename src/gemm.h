/*
 * Single-precision matrix multiply for the layers: C = op(A) . op(B), or C += op(A) . op(B),
 * row-major, op(X) = X or its transpose.
 *
 * Determinism: how an element of C is summed depends on the shape only (M, N, K and the
 * transposes: the register tile adds its K products in ascending k in fixed blocks of GEMM_KC;
 * a thin product has an order of its own: with one row (or one column of a transposed A), two
 * partial sums over the even and the odd k, then added; with one column of A's rows read along k
 * (B transposed), 16 lanes summing k = l, l + 16, ..., added by a fixed tree (lane l + 8,
 * then + 4, + 2, + 1), plus the last K mod 16 products added one by one; with K = 1, the one
 * product), never on where the element sits or on the thread count. So splitting the work over
 * threads never changes a bit. Products are fused into the sums (one rounding) wherever the CPU
 * has fused multiply-adds.
 */
#ifndef OMPCNN_GEMM_H
#define OMPCNN_GEMM_H

#include <stddef.h>

/* The register tile: MR rows of NV vectors of 16 columns. With AVX-512, 8 rows of two
 * registers (16 sums, and 2 registers of B, of its 32), one register where the product is at
 * most 16 wide; without, a row of 16 takes two of AVX2's 16 registers and the tile has 4 rows,
 * or four of SSE2's (portable builds) and the tile has 2 rows.
 * Each element is summed the same way whatever the tile, so the weights do not depend on it.
 * GEMM_NR is the widest tile. */
#if defined(__AVX512F__)
#define GEMM_MR 8
#define GEMM_NV 2
#elif defined(__AVX__)
#define GEMM_MR 4
#define GEMM_NV 1
#else
#define GEMM_MR 2
#define GEMM_NV 1
#endif
#define GEMM_NR (16 * GEMM_NV)

/* Floats in the widest vector register the build targets. GCC lowers arithmetic on generic
 * vectors wider than that badly (sums kept on the stack, vectors rebuilt lane by lane: several
 * times slower), so the kernels' vectors are never wider. */
#if defined(__AVX512F__)
#define VEC_FLOATS 16
#elif defined(__AVX__)
#define VEC_FLOATS 8
#else
#define VEC_FLOATS 4
#endif
#define GEMM_KC 256

/* C[M x N] = (accumulate ? C : 0) + op(A)[M x K] . op(B)[K x N]. A is M x K (lda >= K) or, with
 * trans_a, K x M (lda >= M); likewise B. Uses up to nt OpenMP threads when the work pays. */
void gemm(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda, const float *B,
          int ldb, int accumulate, float *C, int ldc, int nt);

/* The same with A gathered, never stored: a(i, k) = src[rows[i] + cols[k]] (a convolution's
 * patches where they lie in its padded input: row i a position, column k a (ky, kx, c)). Shapes
 * with M, N or K of 1 take the tiles too; every other shape gives the bits gemm() gives on the
 * gathered matrix, each element summed the same way. */
void gemm_gather(int M, int N, int K, const float *src, const int *rows, const int *cols,
                 int trans_b, const float *B, int ldb, int accumulate, float *C, int ldc, int nt);

/* The arguments of one gemm() call. */
typedef struct gemm_args {
    int trans_a, trans_b, M, N, K;
    const float *A;
    int lda;
    const float *B;
    int ldb, accumulate;
    float *C;
    int ldc;
} gemm_args;

/* The count products of list, each exactly as gemm() computes it, with up to nt threads over the
 * tiles of all of them at once (a layer's lanes: one region instead of one per lane). */
void gemm_batch(int count, const gemm_args *list, int nt);

/* The plain triple loop, for tests: the same result up to rounding. */
void gemm_ref(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, int accumulate, float *C, int ldc);

#endif
