/*
 * The machine's single-core floating-point peak, for tools/bench's "share of peak" column: a
 * loop of independent fused multiply-adds on the widest float vectors the build's flags allow
 * (the trainer's own: -march=native unless -DOMPCNN_NATIVE=OFF), enough chains in flight to
 * cover the FMA latency on two units. Prints the best of several timed runs:
 *   fma_peak: AVX-512 FMA, 16 floats, 205.3 GFLOP/s on one core
 * With --operands, also the rate when each multiply-add reads an operand from memory, in the
 * ways the kernels read theirs (docs/performance.md says what it showed).
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime in a strict C11 build */
#include <stdio.h>
#include <string.h>
#include <time.h>

#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 vec;
#define LANES 16
#define ISA "AVX-512 FMA"
#define SET1(x) _mm512_set1_ps(x)
#define PAIR(d) _mm512_castpd_ps(_mm512_set1_pd(d))
#define LOADU(p) _mm512_loadu_ps(p)
#define MADD(a, b, c) _mm512_fmadd_ps(a, b, c)
#define FLOPS_PER_LANE 2
static float first(vec v) { return _mm512_cvtss_f32(v); }
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
typedef __m256 vec;
#define LANES 8
#define ISA "AVX2 FMA"
#define SET1(x) _mm256_set1_ps(x)
#define PAIR(d) _mm256_castpd_ps(_mm256_set1_pd(d))
#define LOADU(p) _mm256_loadu_ps(p)
#define MADD(a, b, c) _mm256_fmadd_ps(a, b, c)
#define FLOPS_PER_LANE 2
static float first(vec v) { return _mm256_cvtss_f32(v); }
#elif defined(__SSE2__)
#include <emmintrin.h>
typedef __m128 vec;
#define LANES 4
#define ISA "SSE2 (no FMA: a multiply and an add)"
#define SET1(x) _mm_set1_ps(x)
#define PAIR(d) _mm_castpd_ps(_mm_set1_pd(d))
#define LOADU(p) _mm_loadu_ps(p)
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

/* --operands: the rate of multiply-adds whose second operand is read from memory, one read per
 * multiply-add (the kernels' loops: a value broadcast to every lane, two adjacent floats to
 * every pair of lanes as the direct convolution's pairs read them, a whole vector on one cache
 * line, a whole vector straddling two). CHAINS independent sums, as above, each read at its own
 * offset of a small array that stays in the first-level cache. */
enum { SINGLE, PAIRED, ALIGNED, STRADDLING, REGISTERS, MODES };
static const char *const mode_names[MODES] = {
    "a float broadcast to every lane", "two floats to every pair of lanes",
    "a whole vector, one cache line", "a whole vector across two cache lines",
    "registers only (the peak's loop)"};

static float data[4096] __attribute__((aligned(64)));

static double operand_rate(int mode, long iters, float *sink) {
    vec acc[CHAINS];
    for (int c = 0; c < CHAINS; c++) acc[c] = SET1(0.001f * (float)c);
    const vec x = SET1(0.9999999f), y = SET1(1e-7f);
    const int shift = mode == STRADDLING ? 1 : 0; /* 4 bytes into a line */
    const double start = now();
    for (long i = 0; i < iters; i++) {
        const float *p = data + (i & 15) * LANES + shift;
        __asm__("" : "+r"(p)); /* a run-time address: the reads are not hoisted */
        for (int c = 0; c < CHAINS; c++) {
            const float *q = p + c * LANES;
            double two;
            switch (mode) {
            case SINGLE: acc[c] = MADD(SET1(q[0]), x, acc[c]); break;
            case PAIRED:
                __builtin_memcpy(&two, q, sizeof two);
                acc[c] = MADD(PAIR(two), x, acc[c]);
                break;
            case ALIGNED:
            case STRADDLING: acc[c] = MADD(LOADU(q), x, acc[c]); break;
            default: acc[c] = MADD(acc[c], x, y); break;
            }
        }
    }
    const double seconds = now() - start;
    for (int c = 0; c < CHAINS; c++) *sink += first(acc[c]);
    return (double)iters * CHAINS * LANES * FLOPS_PER_LANE / seconds / 1e9;
}

static int operands(void) {
    for (int i = 0; i < 4096; i++) data[i] = 1e-6f * (float)(i % 97);
    float sink = 0.0f;
    printf("fma_peak --operands: %s, %d floats, one core, best of 5 runs\n", ISA, LANES);
    for (int mode = 0; mode < MODES; mode++) {
        double best = 0.0;
        for (int run = 0; run < 5; run++) {
            const double gflops = operand_rate(mode, 10000000, &sink);
            if (gflops > best) best = gflops;
        }
        printf("  %-40s %6.1f GFLOP/s\n", mode_names[mode], best);
    }
    printf("(checksum %g)\n", (double)sink);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--operands") == 0) return operands();
    if (argc > 1) {
        fprintf(stderr, "usage: fma_peak [--operands]\n");
        return 2;
    }
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
