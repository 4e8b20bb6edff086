/*
 * The one way kernels run on several threads: par_blocks splits a loop over items into contiguous
 * blocks, one per thread, and par_items does the same but lets a thread that is done take the
 * remaining items of the others' blocks (for the per-sample loops of conv2d and batchnorm). Every
 * parallel region of the trainer goes through one of them, so the thread count is decided in one
 * place and the profile (profile.h) sees every region.
 *
 * How many threads a loop gets: its work divided by PAR_GRAIN, at most nt, at most one per item.
 * `work` is counted in multiply-adds; elementwise loops count PAR_ELEMENT_COST per element. A
 * region costs a few microseconds to open and close and the other cores must pull the data into
 * their caches, so a thread is worth waking only for about PAR_GRAIN multiply-adds (some ten
 * microseconds of work): the report's batch-1 layers stay on one thread, while a 64-image batch's
 * layers split over as many threads as a machine has.
 * (Build with -DPAR_GRAIN=N to measure another grain.)
 *
 * The split never changes a result: each output element is computed by one thread, in an order
 * that does not depend on how the items were cut.
 */
#ifndef OMPCNN_PARALLEL_H
#define OMPCNN_PARALLEL_H

#include <omp.h>
#include <stddef.h>

#include "profile.h"

#ifndef PAR_GRAIN
#define PAR_GRAIN 262144
#endif
#define PAR_ELEMENT_COST 8

/* A loop body over the items [begin, end), run by worker `worker` of the region (0 when it runs
 * alone), which it may use to pick a scratch slot; returns nonzero to flag something (a NaN). */
typedef int (*par_body)(void *ctx, long begin, long end, int worker);

/* The threads a loop of n items and `work` multiply-adds gets out of nt. */
static inline int par_threads(int nt, size_t work, long n) {
    size_t by_work = work / PAR_GRAIN;
    long t = nt;
    if ((size_t)t > by_work) t = (long)by_work;
    if (t > n) t = n;
    return t < 1 ? 1 : (int)t;
}

/* Runs body over [0, n): in par_threads(nt, work, n) contiguous blocks, one per thread, or in one
 * call on this thread without entering OpenMP at all. Even a region that an `if` clause makes
 * serial is not free: libgomp ends every region with a futex wake-up system call, and a batch-1
 * step of the report's network would run about 20 of them. Returns the OR of the body's results.
 * Never called from inside another region: worker numbers index per-thread scratch. The profile
 * names each region after its body (`site`, which the par_blocks macro fills in).
 *
 * Every region opens a team of all nt threads, and the threads past the loop's share wait at the
 * region's end: libgomp ends the threads a smaller team leaves out and starts new ones for the
 * next larger team, so teams sized to each loop would create threads at every step. */
#define par_blocks(nt, work, n, body, ctx) par_blocks_at(nt, work, n, body, ctx, #body)
static inline int par_blocks_at(int nt, size_t work, long n, par_body body, void *ctx,
                                const char *site) {
    const int threads = par_threads(nt, work, n);
    if (threads < 2) return n > 0 ? body(ctx, 0, n, 0) : 0;
    int any = 0;
    if (profile_on) {
        profile_region_begin();
        double busy[PROFILE_MAX_THREADS];
        int parts = threads;
#pragma omp parallel num_threads(nt) reduction(| : any)
        {
            const int me = omp_get_thread_num(), team = omp_get_num_threads();
            const int used = team < threads ? team : threads;
            const double t0 = profile_thread_cpu();
            if (me == 0) {
                profile_region_started(t0);
                parts = used;
            }
            if (me < used) {
                any |= body(ctx, n * me / used, n * (me + 1) / used, me);
                if (me < PROFILE_MAX_THREADS) busy[me] = profile_thread_cpu() - t0;
            }
        }
        profile_region_end(busy, parts, site);
        return any;
    }
#pragma omp parallel num_threads(nt) reduction(| : any)
    {
        const int me = omp_get_thread_num(), team = omp_get_num_threads();
        const int parts = team < threads ? team : threads;
        if (me < parts) any |= body(ctx, n * me / parts, n * (me + 1) / parts, me);
    }
    return any;
}

/* par_blocks for loops of items that cost alike only on paper: each thread starts on the block
 * par_blocks would give it, one item at a time, and a thread done with its own takes the next
 * items of the others' blocks, so that a thread on a slower or shared core (a hybrid CPU's
 * efficiency core, a virtual CPU whose sibling is busy) does fewer of them instead of holding the
 * others up at the region's end. A thread mostly works on its own block, the same samples
 * from layer to layer, whose activations its cache holds. Only for bodies whose items do not
 * depend on which others a call gets or on which worker runs them (each item's results computed
 * from its inputs alone, in the worker's scratch slot): then the results are the same bits as
 * par_blocks'. */
#define PAR_MAX_TEAM 256
#define par_items(nt, work, n, body, ctx) par_items_at(nt, work, n, body, ctx, #body)
static inline int par_items_at(int nt, size_t work, long n, par_body body, void *ctx,
                               const char *site) {
    const int threads = par_threads(nt, work, n);
    if (threads < 2 || threads > PAR_MAX_TEAM) return par_blocks_at(nt, work, n, body, ctx, site);
    /* next[w]: the next unclaimed item of worker w's block, each on a cache line of its own. */
    struct {
        long v;
        char pad[64 - sizeof(long)];
    } next[PAR_MAX_TEAM];
    int any = 0, parts = threads;
    double busy[PROFILE_MAX_THREADS];
    if (profile_on) profile_region_begin();
#pragma omp parallel num_threads(nt) reduction(| : any)
    {
        const int me = omp_get_thread_num(), team = omp_get_num_threads();
        const int used = team < threads ? team : threads;
        const double t0 = profile_on ? profile_thread_cpu() : 0.0;
        if (me == 0 && profile_on) {
            profile_region_started(t0);
            parts = used;
        }
        if (me < used) next[me].v = n * me / used;
#pragma omp barrier
        if (me < used)
            for (int k = 0; k < used; k++) {
                const int w = (me + k) % used; /* its own block first, then the others' */
                const long end = n * (w + 1) / used;
                for (;;) {
                    long item;
#pragma omp atomic capture
                    item = next[w].v++;
                    if (item >= end) break;
                    any |= body(ctx, item, item + 1, me);
                }
            }
        if (profile_on && me < used && me < PROFILE_MAX_THREADS)
            busy[me] = profile_thread_cpu() - t0;
    }
    if (profile_on) profile_region_end(busy, parts, site);
    return any;
}

/* Zeroes n floats over up to nt threads. */
static inline int par_zero_block(void *ctx, long begin, long end, int worker) {
    (void)worker;
    float *p = ctx;
    for (long i = begin; i < end; i++) p[i] = 0.0f;
    return 0;
}

static inline void par_zero(int nt, float *p, size_t n) {
    par_blocks(nt, n * PAR_ELEMENT_COST / 4, (long)n, par_zero_block, p);
}

#endif
