/*
 * numpy's legacy random generator, reimplemented bit for bit: MT19937 seeded from a 32-bit scalar
 * (init_genrand), 53-bit doubles from two draws, and the polar Gaussian that caches its second
 * value. tools/make_rng_fixture.py records numpy's own draws and tests/test_rng.c compares them.
 */
#include "ompcnn/rng.h"

#include <math.h>

void mt_seed(mt19937 *rng, uint32_t seed) {
    rng->state[0] = seed;
    for (int i = 1; i < MT_N; i++) {
        uint32_t prev = rng->state[i - 1];
        rng->state[i] = 1812433253u * (prev ^ (prev >> 30)) + (uint32_t)i;
    }
    rng->pos = MT_N;
    rng->has_gauss = 0;
    rng->gauss = 0.0;
}

static void mt_regenerate(mt19937 *rng) {
    const uint32_t upper = 0x80000000u, lower = 0x7fffffffu, matrix = 0x9908b0dfu;
    uint32_t *s = rng->state;
    for (int i = 0; i < MT_N; i++) {
        uint32_t y = (s[i] & upper) | (s[(i + 1) % MT_N] & lower);
        s[i] = s[(i + 397) % MT_N] ^ (y >> 1) ^ ((y & 1u) ? matrix : 0u);
    }
    rng->pos = 0;
}

uint32_t mt_next32(mt19937 *rng) {
    if (rng->pos >= MT_N) mt_regenerate(rng);
    uint32_t y = rng->state[rng->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

double mt_double(mt19937 *rng) {
    uint32_t a = mt_next32(rng) >> 5, b = mt_next32(rng) >> 6;
    return (a * 67108864.0 + b) / 9007199254740992.0;
}

double mt_gauss(mt19937 *rng) {
    if (rng->has_gauss) {
        rng->has_gauss = 0;
        return rng->gauss;
    }
    double x1, x2, r2;
    do {
        x1 = 2.0 * mt_double(rng) - 1.0;
        x2 = 2.0 * mt_double(rng) - 1.0;
        r2 = x1 * x1 + x2 * x2;
    } while (r2 >= 1.0 || r2 == 0.0);
    double f = sqrt(-2.0 * log(r2) / r2);
    rng->gauss = f * x1;
    rng->has_gauss = 1;
    return f * x2;
}

uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t keyed_below(uint64_t key, uint64_t counter, uint64_t n) {
    /* Rejection sampling keeps the draw exactly uniform; the retry index is part of the key. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    for (uint64_t attempt = 0;; attempt++) {
        uint64_t r = mix64(key ^ mix64(counter + (attempt << 48)));
        if (r < limit) return r % n;
    }
}
