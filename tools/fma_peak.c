/*
 * The machine's single-core floating-point peak, for tools/bench's "share of peak" column: a
 * loop of independent fused multiply-adds on the widest float vectors the build's flags allow
 * (the trainer's own: -march=native unless -DOMPCNN_NATIVE=OFF), enough chains in flight to
 * cover the FMA latency on two units. Prints the best of several timed runs:
 *   fma_peak: AVX-512 FMA, 16 floats, 205.3 GFLOP/s on one core
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime in a strict C11 build */
#include <stdio.h>
#include <time.h>

#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 vec;
#define LANES 16
#define ISA "AVX-512 FMA"
#define SET1(x) _mm512_set1_ps(x)
#define MADD(a, b, c) _mm512_fmadd_ps(a, b, c)
#define FLOPS_PER_LANE 2
static float first(vec v) { return _mm512_cvtss_f32(v); }
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 vec;
#define LANES 8
#define ISA "AVX2 FMA"
#define SET1(x) _mm256_set1_ps(x)
#define MADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#define FLOPS_PER_LANE 2
static float first(vec v) { return _mm256_cvtss_f32(v); }
#elif defined(__SSE2__)
#include <emmintrin.h>
typedef __m128 vec;
#define LANES 4
#define ISA "SSE2 (no FMA: a multiply and an add)"
#define SET1(x) _mm_set1_ps(x)
#define MADD(a, b, c) _mm_add_ps(_mm_mul_ps(a, b), c)
#define FLOPS_PER_LANE 2
static float first(vec v) { return _mm_cvtss_f32(v); }
#else
#error "fma_peak: no x86 vector extension"
#endif

#define CHAINS 12 /* latency 4 x 2 units = 8 in flight; 12 leaves room */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(void) {
    const long iters = 20000000;
    double best = 0.0;
    float sink = 0.0f;
    for (int run = 0; run < 5; run++) {
        vec acc[CHAINS];
        for (int c = 0; c < CHAINS; c++) acc[c] = SET1(0.001f * (float)(c + run));
        const vec x = SET1(0.9999999f), y = SET1(1e-7f);
        const double start = now();
        for (long i = 0; i < iters; i++)
            for (int c = 0; c < CHAINS; c++) acc[c] = MADD(acc[c], x, y);
        const double seconds = now() - start;
        for (int c = 0; c < CHAINS; c++) sink += first(acc[c]);
        const double gflops = (double)iters * CHAINS * LANES * FLOPS_PER_LANE / seconds / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("fma_peak: %s, %d floats, %.1f GFLOP/s on one core (checksum %g)\n", ISA, LANES, best,
           (double)sink);
    return 0;
}
