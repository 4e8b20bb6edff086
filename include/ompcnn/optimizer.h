/*
 * Optimizers and learning-rate schedules. One step combines the gradient lanes (in lane order),
 * takes the mean over the batch, adds weight decay and updates every parameter with its own
 * state; each parameter belongs to one thread, so the result never depends on the thread count.
 */
#ifndef OMPCNN_OPTIMIZER_H
#define OMPCNN_OPTIMIZER_H

#include <stddef.h>

typedef enum optimizer_kind { OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAM } optimizer_kind;
typedef enum schedule_kind { SCHEDULE_CONSTANT, SCHEDULE_STEP, SCHEDULE_COSINE } schedule_kind;

typedef struct optimizer_config {
    optimizer_kind kind;
    double momentum;     /* momentum, nesterov */
    double weight_decay; /* L2: weight_decay * w is added to the gradient */
    double beta1, beta2, eps; /* adam */
} optimizer_config;

typedef struct schedule_config {
    schedule_kind kind;
    int step_epochs; /* step: multiply by gamma every step_epochs epochs */
    double gamma;
    double warmup_epochs; /* linear warm-up over this many epochs (0: none) */
} schedule_config;

/* Floats of state per parameter: 0 (sgd), 1 (momentum, nesterov) or 2 (adam). */
int optimizer_state_count(optimizer_kind kind);

/* One step. grads holds n_lanes lanes of n sums over `count` samples; state1/state2 the
 * optimizer's state (velocity; or adam's m and v); `step` is 1 for the first step (adam's bias
 * correction). Returns nonzero when a parameter is no longer finite. */
int optimizer_step(const optimizer_config *o, float *params, float *state1, float *state2,
                   const float *grads, int n_lanes, size_t n, int count, double lr, long step,
                   int nt);

/* The learning rate for global step `step` (0-based) of a run of `epochs` epochs of
 * `steps_per_epoch` steps each. */
double schedule_lr(const schedule_config *s, double base_lr, long step, long steps_per_epoch,
                   int epochs);

#endif
