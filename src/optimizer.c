/*
 * The update rules (as PyTorch defines them, so the twin in tools/ matches) and the schedules.
 *   sgd:       w -= lr * g
 *   momentum:  v = mu * v + g;  w -= lr * v
 *   nesterov:  v = mu * v + g;  w -= lr * (g + mu * v)
 *   adam:      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *              w -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * with g the batch's mean gradient plus weight_decay * w.
 */
#include "ompcnn/optimizer.h"

#include <float.h>
#include <math.h>

#include "parallel.h"

int optimizer_state_count(optimizer_kind kind) {
    return kind == OPT_ADAM ? 2 : kind == OPT_SGD ? 0 : 1;
}

int optimizer_step(const optimizer_config *o, float *params, float *state1, float *state2,
                   const float *grads, int n_lanes, size_t n, int count, double lr, long step,
                   int nt) {
    const float inv_count = 1.0f / (float)count, wd = (float)o->weight_decay;
    const float lr_f = (float)lr, mu = (float)o->momentum;
    const float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
    const double bc1 = 1.0 - pow(o->beta1, (double)step), bc2 = 1.0 - pow(o->beta2, (double)step);
    const float adam_step = (float)(lr / bc1), adam_scale = (float)(1.0 / sqrt(bc2));
    const optimizer_kind kind = o->kind;
    int bad = 0;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(| : bad)                      \
    if (par_ok(nt, n * (size_t)n_lanes))
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        for (int l = 1; l < n_lanes; l++) g += grads[(size_t)l * n + i];
        g = g * inv_count + wd * params[i];
        switch (kind) {
        case OPT_SGD: params[i] -= lr_f * g; break;
        case OPT_MOMENTUM:
            state1[i] = mu * state1[i] + g;
            params[i] -= lr_f * state1[i];
            break;
        case OPT_NESTEROV:
            state1[i] = mu * state1[i] + g;
            params[i] -= lr_f * (g + mu * state1[i]);
            break;
        case OPT_ADAM:
            state1[i] = b1 * state1[i] + (1.0f - b1) * g;
            state2[i] = b2 * state2[i] + (1.0f - b2) * g * g;
            params[i] -= adam_step * state1[i] / (sqrtf(state2[i]) * adam_scale + eps);
            break;
        }
        bad |= !(fabsf(params[i]) <= FLT_MAX);
    }
    return bad;
}

double schedule_lr(const schedule_config *s, double base_lr, long step, long steps_per_epoch,
                   int epochs) {
    double lr = base_lr;
    long epoch = step / steps_per_epoch;
    switch (s->kind) {
    case SCHEDULE_CONSTANT: break;
    case SCHEDULE_STEP: lr *= pow(s->gamma, (double)(epoch / s->step_epochs)); break;
    case SCHEDULE_COSINE: {
        double total = (double)steps_per_epoch * epochs;
        lr *= 0.5 * (1.0 + cos(M_PI * (double)step / total));
        break;
    }
    }
    double warmup_steps = s->warmup_epochs * (double)steps_per_epoch;
    if (warmup_steps > 0 && (double)step < warmup_steps) lr *= ((double)step + 1.0) / warmup_steps;
    return lr;
}
