/*
 * When a kernel's loop is worth splitting over threads. A parallel region costs a few
 * microseconds to open and close; below PAR_MIN_WORK multiply-adds (or elements) one thread is
 * faster. The split never changes a result: each output element is always computed by one thread
 * in the same order. The threshold was measured with tools/bench-kernels (see docs/performance.md).
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
