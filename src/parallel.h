/*
 * When a kernel's loop is worth splitting over threads. A parallel region costs a few
 * microseconds to open and close, and the second core must pull the data into its own caches; on
 * the 2-core machine the README's tables come from, splitting the report's layers (50 thousand
 * multiply-adds and less) made a batch-1 step twice as slow, and even the 10 million multiply-add
 * convolution of cnn-b64 gained nothing at batch 1, so only loops of more than PAR_MIN_WORK
 * multiply-adds (or elements) are split. Minibatches get their threads from the gradient lanes
 * instead. The split never changes a result: each output element is always computed by one thread
 * in the same order. (Build with -DPAR_MIN_WORK=N to measure another threshold.)
 */
#ifndef OMPCNN_PARALLEL_H
#define OMPCNN_PARALLEL_H

#include <stddef.h>

#ifndef PAR_MIN_WORK
#define PAR_MIN_WORK 1048576
#endif

static inline int par_ok(int nt, size_t work) {
    return nt > 1 && work >= PAR_MIN_WORK;
}

#endif
