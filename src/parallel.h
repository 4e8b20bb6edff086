/*
 * When a kernel's loop is worth splitting over threads. A parallel region costs a few
 * microseconds to open and close, and the second core must pull the data into its own caches; on
 * the 2-core machine the README's tables come from, splitting the report's layers (50 thousand
 * multiply-adds and less) made a batch-1 step 1.4 times slower (20.5 against 29 thousand images/s
 * with a threshold of 8192), and even the 10 million multiply-add
 * convolution of cnn-b64 gained nothing at batch 1, so only loops of more than PAR_MIN_WORK
 * multiply-adds (or elements) are split. Minibatches get their threads from the gradient lanes
 * instead. The split never changes a result: each output element is always computed by one thread
 * in the same order. (Build with -DPAR_MIN_WORK=N to measure another threshold.)
 */
#ifndef OMPCNN_PARALLEL_H
#define OMPCNN_PARALLEL_H

#include <omp.h>
#include <stddef.h>

#ifndef PAR_MIN_WORK
#define PAR_MIN_WORK 1048576
#endif

static inline int par_ok(int nt, size_t work) {
    return nt > 1 && work >= PAR_MIN_WORK;
}

/* A loop body over the items [begin, end); returns nonzero to flag something (a NaN, say). */
typedef int (*par_body)(void *ctx, long begin, long end);

/* Runs body over [0, n): split into nt contiguous blocks, one per thread, when par_ok(nt, work),
 * else in one call on this thread without entering OpenMP at all. Even a region that its `if`
 * clause makes serial is not free: libgomp ends every region with a futex wake-up system call,
 * measured at a microsecond or more here, and a batch-1 step of the report's network ran about
 * 20 of them. Returns the OR of the body's results. */
static inline int par_blocks(int nt, size_t work, long n, par_body body, void *ctx) {
    if (!par_ok(nt, work) || n < 2) return body(ctx, 0, n);
    int any = 0;
#pragma omp parallel num_threads(nt) reduction(| : any)
    {
        long threads = omp_get_num_threads(), me = omp_get_thread_num();
        any |= body(ctx, n * me / threads, n * (me + 1) / threads);
    }
    return any;
}

#endif
