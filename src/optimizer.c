/*
 * The update rules (as PyTorch defines them, so the twin in tools/ matches) and the schedules.
 *   sgd:       w -= lr * g   (without weight decay: w -= (lr / count) * sum, the report's
 *              arithmetic, one rounding fewer than taking the mean first)
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

/* One step's constants and arrays, for the parameter blocks below. */
typedef struct step_args {
    optimizer_kind kind;
    float *params, *state1, *state2;
    const float *grads;
    int n_lanes;
    size_t n;
    float inv_count, wd, lr, mu, b1, b2, eps, adam_step, adam_scale;
} step_args;

/* The batch's gradient of parameter i: the lanes' gradients added in lane order. lanes is a
 * constant (1 or 2, the usual counts) where the caller can make it one, so that the loops below
 * vectorise; 0 means a.n_lanes. */
static inline __attribute__((always_inline)) float
lane_sum(const float *restrict grads, size_t n, size_t i, int lanes, int n_lanes) {
    float g = grads[i];
    if (lanes == 2) return g + grads[n + i];
    if (lanes == 0)
        for (int l = 1; l < n_lanes; l++) g += grads[(size_t)l * n + i];
    return g;
}

/* Parameters [begin, end) of one rule (a constant, as lanes is); nonzero when one of them is no
 * longer finite. */
static inline __attribute__((always_inline)) int
step_rule(const step_args *a, long begin, long end, const optimizer_kind kind, const int lanes) {
    float *restrict params = a->params, *restrict state1 = a->state1, *restrict state2 = a->state2;
    const float *restrict grads = a->grads;
    const size_t n = a->n;
    const int n_lanes = a->n_lanes;
    const float inv_count = a->inv_count, wd = a->wd, lr_f = a->lr, mu = a->mu;
    const float b1 = a->b1, b2 = a->b2, eps = a->eps, adam_step = a->adam_step;
    const float adam_scale = a->adam_scale;
    int bad = 0;
    for (size_t i = (size_t)begin; i < (size_t)end; i++) {
        float g = lane_sum(grads, n, i, lanes, n_lanes);
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

#define RULE_BLOCK(name, kind)                                                                   \
    static int name(void *ctx, long begin, long end, int worker) {                               \
        const step_args *a = ctx;                                                                \
        (void)worker;                                                                            \
        if (a->n_lanes == 2) return step_rule(a, begin, end, kind, 2);                           \
        if (a->n_lanes == 1) return step_rule(a, begin, end, kind, 1);                           \
        return step_rule(a, begin, end, kind, 0);                                                \
    }
RULE_BLOCK(sgd_decay_block, OPT_SGD)
RULE_BLOCK(momentum_block, OPT_MOMENTUM)
RULE_BLOCK(nesterov_block, OPT_NESTEROV)
RULE_BLOCK(adam_block, OPT_ADAM)
#undef RULE_BLOCK

/* Plain SGD, w -= (lr / count) * (the lanes' sum in lane order), for parameters [begin, end). */
static inline __attribute__((always_inline)) int sgd_lanes(const step_args *a, long begin,
                                                           long end, const int lanes) {
    float *restrict params = a->params;
    const float *restrict grads = a->grads;
    const float step = a->lr;
    int bad = 0;
    for (size_t i = (size_t)begin; i < (size_t)end; i++) {
        params[i] -= step * lane_sum(grads, a->n, i, lanes, a->n_lanes);
        bad |= !(fabsf(params[i]) <= FLT_MAX); /* NaN or infinity */
    }
    return bad;
}

/* The same for a single lane (batch size 1: the report's per-sample step), two lanes, or any. */
static int sgd_block(void *ctx, long begin, long end, int worker) {
    const step_args *a = ctx;
    (void)worker;
    if (a->n_lanes == 2) return sgd_lanes(a, begin, end, 2);
    if (a->n_lanes == 1) return sgd_lanes(a, begin, end, 1);
    return sgd_lanes(a, begin, end, 0);
}

int optimizer_step(const optimizer_config *o, float *params, float *state1, float *state2,
                   const float *grads, int n_lanes, size_t n, int count, double lr, long step,
                   int nt) {
    const size_t work = n * (size_t)n_lanes * PAR_ELEMENT_COST;
    if (o->kind == OPT_SGD && o->weight_decay == 0.0) {
        step_args a = {.params = params, .grads = grads, .n_lanes = n_lanes, .n = n,
                       .lr = (float)(lr / count)};
        return par_blocks(nt, work, (long)n, sgd_block, &a);
    }
    const double bc1 = 1.0 - pow(o->beta1, (double)step), bc2 = 1.0 - pow(o->beta2, (double)step);
    step_args a = {o->kind, params, state1, state2, grads, n_lanes, n,
                   1.0f / (float)count, (float)o->weight_decay, (float)lr, (float)o->momentum,
                   (float)o->beta1, (float)o->beta2, (float)o->eps, (float)(lr / bc1),
                   (float)(1.0 / sqrt(bc2))};
    par_body rule = o->kind == OPT_SGD        ? sgd_decay_block
                    : o->kind == OPT_MOMENTUM ? momentum_block
                    : o->kind == OPT_NESTEROV ? nesterov_block
                                              : adam_block;
    return par_blocks(nt, work, (long)n, rule, &a);
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
