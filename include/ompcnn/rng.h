/*
 * Random numbers. mt19937 reproduces numpy's legacy generator exactly: np.random.seed(S) followed
 * by np.random.randn / np.random.rand gives the same doubles as mt_seed(S) followed by mt_gauss /
 * mt_double. That is what lets the `report` init start from the report's very weights.
 * Stream keys (shuffling) use a counter-based hash so that a draw depends only on (seed, epoch,
 * sample), never on which thread asks.
 */
#ifndef OMPCNN_RNG_H
#define OMPCNN_RNG_H

#include <stdint.h>

#define MT_N 624

typedef struct mt19937 {
    uint32_t state[MT_N];
    int pos;
    int has_gauss;
    double gauss;
} mt19937;

void mt_seed(mt19937 *rng, uint32_t seed);
uint32_t mt_next32(mt19937 *rng);
/* Uniform double in [0, 1) with 53 random bits, numpy's random_sample. */
double mt_double(mt19937 *rng);
/* Standard normal by numpy's legacy polar method (pairs, the second cached). */
double mt_gauss(mt19937 *rng);

/* splitmix64 finaliser: a well-mixed 64-bit hash of x. */
uint64_t mix64(uint64_t x);
/* Uniform integer in [0, n) from a keyed stream: deterministic in (key, counter). */
uint64_t keyed_below(uint64_t key, uint64_t counter, uint64_t n);

#endif
