/*
 * Data parallelism across processes (Open MPI). Built only with -DOMPCNN_MPI=ON; otherwise, and
 * whenever the trainer was not started by mpirun, there is one process and every call below is
 * a no-op on it.
 *
 * The reduction keeps the weights bit-identical for any number of processes R: a minibatch is
 * cut into n gradient lanes exactly as in one process (training.lanes, docs/mpi.md), process r
 * runs lanes [r*n/R, (r+1)*n/R), and the lanes are added in lane order, as one process adds them:
 *   1. all-to-all: process q receives segment q (of R contiguous parameter segments) of every
 *      lane gradient; process order is lane order;
 *   2. process q adds the n segments in lane order;
 *   3. all-gather: every process receives every summed segment, and takes the same step.
 * Per step and process that moves about 4 * P * (R - 1) / R * (n / R + 1) bytes each way for P
 * parameters: a ring all-reduce's volume when there is one lane per process.
 */
#ifndef OMPCNN_DIST_H
#define OMPCNN_DIST_H

#include <stddef.h>

#include "ompcnn/common.h"

typedef struct dist {
    int rank, size;   /* this process and how many there are; 0 and 1 without MPI */
    int local_size;   /* processes on this machine */
    int mpi;          /* MPI was initialised (started by mpirun) */
    float *send, *recv; /* exchange buffers, sized by dist_reserve */
    int *counts;        /* 4 * size counts and displacements for the collectives */
} dist;

/* Whether this binary was built with MPI. */
int dist_built_with_mpi(void);
/* Starts MPI when the process was launched by mpirun (or another MPI launcher); otherwise the
 * process is alone (rank 0 of 1) and MPI is never touched. */
int dist_init(dist *d, int *argc, char ***argv, errbuf *err);
/* Frees the buffers and finalises MPI. */
void dist_finalize(dist *d);
/* Ends every process of the job at once with `code`, after this one printed why. */
void dist_abort(const dist *d, int code) __attribute__((noreturn));

/* Every process passes its status (0 = fine); every process learns the lowest rank whose status
 * is nonzero (*who, -1 when none) and returns that status. */
int dist_agree(const dist *d, int status, int *who);
/* Nonzero on every process when `flag` is nonzero on any. */
int dist_any(const dist *d, int flag);

/* The lanes [*first, *last) that this process runs out of n_lanes. */
void dist_lanes(const dist *d, int n_lanes, int *first, int *last);
/* Allocates the exchange buffers for up to max_local lanes of n_params each, out of n_lanes. */
int dist_reserve(dist *d, int max_local, int n_lanes, size_t n_params, errbuf *err);
/* With several processes: adds the lane gradients of all of them in lane order into
 * sum[n_params] on every process. grads holds this process's lanes (dist_lanes) one after
 * another, n_params floats each. */
void dist_sum_lanes(dist *d, const float *grads, int n_lanes, size_t n_params, float *sum);
/* With several processes: the lane-order sum of `width` doubles per lane over the n_lanes lanes
 * of a batch, every process's, into total[width] on every process. lanes holds this process's
 * lanes (dist_lanes) one after another. For batch statistics (batchnorm), mid-pass. */
void dist_sum_lane_doubles(const dist *d, const double *lanes, int n_lanes, size_t width,
                           double *total);
/* Per-item results of a range of items cut among the processes (process r holds items
 * [begin[r], begin[r+1])): gathers them on every process, in item order. */
void dist_gather_results(const dist *d, const int *begin, float *loss, unsigned char *hit);

#endif
