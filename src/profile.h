/*
 * The parallelism profile behind `trainer --profile`: for every parallel region (par_blocks),
 * each thread's CPU time in it (CLOCK_THREAD_CPUTIME_ID, which running more threads than cores
 * does not distort), and the calling thread's CPU time between regions, the serial part.
 *
 * Per phase (training, evaluation) it sums:
 *   work   = serial + the CPU time of every thread in every region: what one core would do;
 *   span   = serial + the longest thread of every region: what P = threads cores would take;
 * so work / span bounds the speedup of this decomposition on `threads` cores, whatever cores the
 * profiled run itself had. Off unless profile_enable() was called; then each region costs two
 * clock reads per thread.
 */
#ifndef OMPCNN_PROFILE_H
#define OMPCNN_PROFILE_H

#include <stdio.h>

#define PROFILE_MAX_THREADS 1024

enum { PROFILE_NONE = -1, PROFILE_TRAIN = 0, PROFILE_EVAL = 1, PROFILE_PHASES = 2 };

typedef struct profile_phase {
    long regions;
    double serial; /* CPU seconds of the calling thread outside regions */
    double launch; /* CPU seconds of the calling thread starting regions (waking the others) */
    double work;   /* CPU seconds of all threads inside regions */
    double span;   /* the sum over regions of the longest thread's CPU seconds */
    double wall;   /* wall-clock seconds spent in the phase */
} profile_phase;

extern int profile_on;

void profile_enable(void);
/* Work from now on counts towards `phase` (PROFILE_NONE: towards nothing); returns the phase it
 * counted towards before. */
int profile_set_phase(int phase);
double profile_thread_cpu(void);
void profile_region_begin(void);
/* The calling thread, as worker 0, starts its share of the region at CPU time `cpu`. */
void profile_region_started(double cpu);
void profile_region_end(const double *busy, int threads, const char *site);
/* Per-layer time in training passes, for `tools/bench --breakdown`: each layer call's wall
 * time (with one thread: the time the layer takes), per layer and part, and the optimizer's
 * update as its own row. Safe from several threads (lane passes add atomically). */
#define PROFILE_MAX_LAYERS 64
enum {
    PROFILE_FORWARD = 0,
    PROFILE_BACKWARD = 1,   /* the whole backward call */
    PROFILE_INPUT_GRAD = 2, /* the input-gradient part of it (conv2d, dense), timed inside */
    PROFILE_STEP = 3,
    PROFILE_PARTS = 4
};
void profile_layer_add(int layer, int part, double seconds);
/* The layer whose backward runs (net.c sets it, per calling thread and for the whole process);
 * layers time their input-gradient part against it with profile_input_grad. */
void profile_set_layer(int layer);
void profile_input_grad(double seconds);
/* The seconds and calls so far of a layer's part (layer is ignored for PROFILE_STEP). */
double profile_layer_seconds(int layer, int part, long *calls);

/* The totals of one phase so far. */
profile_phase profile_get(int phase);
/* The profile as CSV: a header, then per phase that ran one row for the whole phase (site
 * "all") and one per region site (the loop body's name): phase, site, threads, regions,
 * serial_s, region_work_s, region_span_s, work_s, span_s, wall_s, speedup_bound (work / span).
 * Returns the length, or -1 when size is too small. */
int profile_csv(char *buf, size_t size, int threads);

#endif
