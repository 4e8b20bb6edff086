/*
 * The training loop: epochs, batches, lanes, the step, and evaluation.
 *
 * A step runs the batch (this process's share of it) through the net one layer at a time, every
 * layer over all the samples with all the threads, so every thread works whatever the lane count;
 * with no more threads than lanes, each lane instead goes through the whole net on one thread.
 *
 * Determinism: a batch's samples are cut into lanes of consecutive samples, a cut that depends on
 * the batch size and lane count only. A lane sums its samples' gradients in order; lanes are added
 * in lane order; each parameter is updated by one thread. Per-sample losses are stored and summed
 * in sample order. So the thread count changes how fast, never what.
 */
#include "ompcnn/train.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ompcnn/rng.h"
#include "parallel.h"
#include "profile.h"

static int min_int(int a, int b) {
    return a < b ? a : b;
}

int trainer_open(trainer *t, const config *cfg, const dataset *train, const dataset *test,
                 errbuf *err) {
    return trainer_open_dist(t, cfg, train, test, NULL, err);
}

/* a / b rounded up, for positive a and b. */
static int ceil_div(int a, int b) {
    return (a + b - 1) / b;
}

/* The samples the workspace holds: a training pass (this process's lanes), and an evaluation
 * pass over a set of n_eval samples. */
static int pass_capacity(const trainer *t, int n_eval) {
    const long eval = (long)t->pass_chunks * t->chunk < n_eval ? (long)t->pass_chunks * t->chunk
                                                               : n_eval;
    const long train = (long)t->lanes * t->train_chunk;
    return (int)(eval > train ? eval : train);
}

/* Batch-wide layers' sums over the lanes of every process (batchnorm under MPI). */
static void batch_sum_processes(void *ctx, const double *lanes, int n_lanes, size_t width,
                                double *total) {
    const trainer *t = ctx;
    (void)n_lanes; /* this process's share of t->step_lanes */
    dist_sum_lane_doubles(t->dist, lanes, t->step_lanes, width, total);
}

int trainer_open_dist(trainer *t, const config *cfg, const dataset *train, const dataset *test,
                      dist *d, errbuf *err) {
    memset(t, 0, sizeof *t);
    const int R = d ? d->size : 1;
    int grad_lanes = min_int(cfg->lanes, cfg->batch_size);
    if (R > 1 && cfg->batch_size == 1)
        return errorf(err, "%s: training.batch_size is 1, the report's per-sample SGD, which runs "
                      "in one process; run it without mpirun (or with -np 1)", cfg->file);
    if (R > 1 && cfg->batch_size < R)
        return errorf(err, "%s: training.batch_size is %d but %d processes share each batch; it "
                      "needs at least one sample per process", cfg->file, cfg->batch_size, R);
    if (R > 1 && cfg->lanes < R)
        return errorf(err, "%s: a batch is cut into %d gradient lanes (training.lanes) but %d "
                      "processes share it; set training.lanes to %d or more, a multiple of %d for "
                      "even shares (the weights depend on the lanes, never on the processes)",
                      cfg->file, cfg->lanes, R, R, R);
    for (int i = 0; i < cfg->n_layers; i++) {
        const layer_spec *spec = &cfg->layers[i];
        if (!spec->ops->batch_wide) continue;
        if (cfg->batch_size == 1)
            return errorf(err, "%s: %s: %s normalises with the statistics of the whole batch, "
                          "and training.batch_size is 1: set training.batch_size to 2 or more "
                          "(16 or more gives steadier statistics)", cfg->file, spec->path,
                          spec->ops->type);
        /* Every process takes part in the batch's sums, so each needs a sample of every batch,
         * the epoch's last one included. */
        const int last = train->n % cfg->batch_size;
        if (R > 1 && last > 0 && last < R)
            return errorf(err, "%s: %s: %s sums over every process, but the epoch's last batch "
                          "has %d sample%s (%d training samples in batches of %d) for %d "
                          "processes; change training.batch_size or data.train.limit, or run "
                          "fewer processes", cfg->file, spec->path, spec->ops->type, last,
                          last == 1 ? "" : "s", train->n, cfg->batch_size, R);
    }
    t->cfg = cfg;
    t->train = train;
    t->test = test;
    t->dist = R > 1 ? d : NULL;
    if (net_build(&t->net, cfg, (shape3){train->h, train->w, train->c}, err)) return -1;
    if (test && (test->h != train->h || test->w != train->w || test->c != train->c)) {
        trainer_close(t);
        return errorf(err, "%s: the test images are %dx%dx%d, the training images %dx%dx%d (%s)",
                      cfg->test.images, test->h, test->w, test->c, train->h, train->w, train->c,
                      cfg->train.images);
    }
    t->threads = cfg->threads > 0 ? cfg->threads : omp_get_max_threads();
    /* This process runs at most ceil(n / R) of a batch's n lanes. */
    const int local_lanes = ceil_div(grad_lanes, R);
    t->lanes = local_lanes;
    /* Evaluation cuts a set into chunks of ceil(B / L) consecutive samples, the lanes of a full
     * batch (the chunk fixes the arithmetic). Training never has more samples in a batch than
     * the data: a lane takes at most ceil(B' / min(L, B')) samples, B' = min(B, samples). */
    t->chunk = ceil_div(cfg->batch_size, grad_lanes);
    const int b_data = min_int(cfg->batch_size, train->n);
    t->train_chunk = ceil_div(b_data, min_int(grad_lanes, b_data));
    /* One pass holds this process's lanes of a batch, and evaluation passes at least
     * EVAL_PASS samples and 8 per thread (whole chunks), so that evaluation too has work for
     * every thread; never more samples than the largest set has. */
    const int eval_pass = EVAL_PASS > 8 * t->threads ? EVAL_PASS : 8 * t->threads;
    t->pass_chunks = local_lanes;
    if (t->pass_chunks * t->chunk < eval_pass) t->pass_chunks = ceil_div(eval_pass, t->chunk);
    const int n_eval = test && test->n > train->n ? test->n : train->n;
    const int capacity = pass_capacity(t, n_eval);
    size_t n_samples = (size_t)n_eval;
    const size_t state = (size_t)optimizer_state_count(cfg->optimizer.kind) * t->net.n_params;
    const double need =
        4.0 * (double)t->net.n_params * (1 + local_lanes + (double)state / t->net.n_params +
                                         (t->dist ? 1 : 0)) +
        5.0 * (double)n_samples + 4.0 * train->n + 8.0 * capacity +
        workspace_bytes(&t->net, capacity, local_lanes * t->train_chunk, t->threads);
    if (memory_check(need, cfg->max_memory, err)) {
        trainer_close(t);
        return -1;
    }
    t->params = floats_alloc(net_state_size(&t->net));
    t->grads = floats_alloc(t->net.n_params * (size_t)local_lanes);
    t->cut_start = malloc(((size_t)t->pass_chunks + 1) * sizeof *t->cut_start);
    t->order = malloc((size_t)train->n * sizeof *t->order);
    t->sample_loss = malloc(n_samples * sizeof *t->sample_loss);
    t->sample_hit = malloc(n_samples);
    t->labels = malloc((size_t)capacity * sizeof *t->labels);
    t->steps_per_epoch = (train->n + cfg->batch_size - 1) / cfg->batch_size;
    t->opt_state = floats_alloc(state ? state : 1);
    if (t->dist) {
        t->grad_sum = floats_alloc(t->net.n_params);
        t->result_begin = malloc(((size_t)R + 1) * sizeof *t->result_begin);
    }
    if (!t->params || !t->grads || !t->cut_start || !t->order || !t->sample_loss || !t->sample_hit ||
        !t->labels || !t->opt_state || (t->dist && (!t->grad_sum || !t->result_begin))) {
        oomf(err, "out of memory (%zu parameters, %d lanes)", t->net.n_params, local_lanes);
        trainer_close(t);
        return -1;
    }
    if (t->dist && dist_reserve(t->dist, local_lanes, grad_lanes, t->net.n_params, err)) {
        trainer_close(t);
        return -1;
    }
    if (t->dist) t->batch = (batch_sum){batch_sum_processes, t};
    if (workspace_alloc(&t->ws, &t->net, capacity, local_lanes * t->train_chunk, t->threads,
                        err)) {
        trainer_close(t);
        return -1;
    }
    net_init_params(&t->net, t->params, cfg->init, cfg->seed);
    return 0;
}

int trainer_set_validation(trainer *t, const dataset *validation, errbuf *err) {
    if (validation->h != t->train->h || validation->w != t->train->w || validation->c != t->train->c)
        return errorf(err, "the validation images differ in shape from the training images");
    size_t have = (size_t)t->train->n;
    if (t->test && (size_t)t->test->n > have) have = (size_t)t->test->n;
    if ((size_t)validation->n > have) {
        float *loss = realloc(t->sample_loss, (size_t)validation->n * sizeof *loss);
        if (!loss) return oomf(err, "out of memory");
        t->sample_loss = loss;
        unsigned char *hit = realloc(t->sample_hit, (size_t)validation->n);
        if (!hit) return oomf(err, "out of memory");
        t->sample_hit = hit;
    }
    /* A validation set larger than the others needs larger evaluation passes. */
    const int capacity = pass_capacity(t, validation->n);
    if (capacity > t->ws.max_n) {
        int *labels = realloc(t->labels, (size_t)capacity * sizeof *labels);
        if (!labels) return oomf(err, "out of memory");
        t->labels = labels;
        workspace_free(&t->ws);
        if (workspace_alloc(&t->ws, &t->net, capacity, t->lanes * t->train_chunk, t->threads,
                            err))
            return -1;
    }
    t->validation = validation;
    return 0;
}

void trainer_close(trainer *t) {
    workspace_free(&t->ws);
    free(t->cut_start);
    aligned_free(t->params);
    aligned_free(t->grads);
    aligned_free(t->grad_sum);
    free(t->result_begin);
    free(t->order);
    free(t->sample_loss);
    free(t->sample_hit);
    free(t->labels);
    aligned_free(t->opt_state);
    net_free(&t->net);
    memset(t, 0, sizeof *t);
}

/* The key of a sample's random streams (dropout, augmentation) in an epoch. */
static uint64_t sample_key(uint32_t seed, int epoch, int sample) {
    return mix64(mix64(((uint64_t)seed << 32) ^ (uint64_t)(uint32_t)epoch) + (uint64_t)sample);
}

/* A uniform draw in [0, 1) from a stream's key: the top 53 bits of its mix. */
static double uniform_of(uint64_t key) {
    return (double)(mix64(key) >> 11) * 0x1p-53;
}

/* What load_samples needs. */
typedef struct load_args {
    trainer *t;
    const dataset *ds;
    const int *samples; /* the pass's sample indices, or NULL: first, first + 1, ... */
    int first;
    int training;
} load_args;

/* Copies samples [begin, end) of a pass into the workspace's input, shifted when training asks
 * for it (in the worker's scratch image). */
static int load_samples(void *ctx, long begin, long end, int worker) {
    const load_args *a = ctx;
    trainer *t = a->t;
    workspace *ws = &t->ws;
    const dataset *ds = a->ds;
    const size_t in_size = shape_size(t->net.input);
    const int shift = a->training ? t->cfg->augment_shift : 0;
    const int flip = a->training && t->cfg->augment_flip;
    const double rotate = a->training ? t->cfg->augment_rotate : 0.0;
    const double scale = a->training ? t->cfg->augment_scale : 0.0;
    for (long k = begin; k < end; k++) {
        const int sample = a->samples ? a->samples[k] : a->first + (int)k;
        float *img = workspace_input(ws) + k * in_size;
        t->labels[k] = ds->labels[sample];
        ws->sample_keys[k] = sample_key(t->cfg->seed, t->epoch, sample);
        dataset_sample(ds, sample, img);
        if (rotate > 0.0 || scale > 0.0) {
            /* A uniform angle in [-rotate, rotate) and zoom in [1 - scale, 1 + scale), from the
             * sample's stream, applied in one resampling. */
            const double u = uniform_of(ws->sample_keys[k] ^ 0x524f54ull);
            const double v = uniform_of(ws->sample_keys[k] ^ 0x5343414c45ull);
            image_transform(img, ws->scratch_image + (size_t)worker * in_size, ds->h, ds->w,
                            ds->c, (2.0 * u - 1.0) * rotate, 1.0 + (2.0 * v - 1.0) * scale);
        }
        if (shift > 0) {
            uint64_t key = mix64(ws->sample_keys[k] ^ 0x5348494654ull);
            int dy = (int)keyed_below(key, 0, 2 * (uint64_t)shift + 1) - shift;
            int dx = (int)keyed_below(key, 1, 2 * (uint64_t)shift + 1) - shift;
            if (dy || dx)
                image_shift(img, ws->scratch_image + (size_t)worker * in_size, ds->h, ds->w,
                            ds->c, dy, dx);
        }
        if (flip && keyed_below(mix64(ws->sample_keys[k] ^ 0x464c4950ull), 0, 2))
            image_flip(img, ds->h, ds->w, ds->c);
    }
    return 0;
}

/* Records the loss of samples [s0, s1) of the workspace after forward (training's loss, or
 * evaluation's plain cross-entropy), whether each was classified right, and (when predicted is
 * not NULL) its class; the arrays start at sample s0. */
static void record_results(trainer *t, int s0, int s1, int training, float *loss,
                           unsigned char *hit, int *predicted) {
    for (int k = s0; k < s1; k++) {
        const int guess = net_class(&t->net, &t->ws, k);
        loss[k - s0] = training ? net_loss(&t->net, &t->ws, k, t->labels[k])
                                : net_xent(&t->net, &t->ws, k, t->labels[k]);
        hit[k - s0] = guess == t->labels[k];
        if (predicted) predicted[k - s0] = guess;
    }
}

/* Loads `count` samples into the workspace and runs them forward, cut as t->cut_start says,
 * then records each one's loss and whether it was classified right (and its class). */
static void run_pass(trainer *t, const dataset *ds, const int *samples, int first, int count,
                     int lanes, int training, float *loss, unsigned char *hit, int *predicted) {
    workspace *ws = &t->ws;
    load_args a = {t, ds, samples, first, training};
    /* Decoding and shifting an image costs about a quarter of a thread's grain. */
    par_blocks(t->threads, (size_t)count * (PAR_GRAIN / 4), count, load_samples, &a);
    ws->training = training;
    ws->cut = (lane_cut){lanes, t->cut_start, t->net.n_params};
    /* A training pass is this process's share of the batch; the others' lanes meet in
     * batch-wide layers. */
    ws->batch = training && t->dist ? &t->batch : NULL;
    net_forward(&t->net, t->params, ws, count, t->threads);
    record_results(t, 0, count, training, loss, hit, predicted);
}

int trainer_bad_layer(const trainer *t) {
    for (int i = 0; i < t->net.n_layers; i++) {
        const layer *l = &t->net.layers[i];
        for (size_t k = 0; k < l->n_params; k++)
            if (!(fabsf(t->params[l->param_off + k]) <= FLT_MAX)) return i;
    }
    return -1;
}

/* The update of one step from n_lanes gradient lanes over `count` samples. */
static int apply_update(trainer *t, const float *grads, int n_lanes, int count) {
    const config *cfg = t->cfg;
    double lr = schedule_lr(&cfg->schedule, cfg->learning_rate, t->pos.step, t->steps_per_epoch,
                            cfg->epochs);
    size_t n = t->net.n_params;
    const double start = profile_on ? omp_get_wtime() : 0.0;
    int rc = optimizer_step(&cfg->optimizer, t->params, t->opt_state, t->opt_state + n, grads,
                            n_lanes, n, count, lr, t->pos.step + 1, t->threads);
    if (profile_on) profile_layer_add(0, PROFILE_STEP, omp_get_wtime() - start);
    return rc;
}

/* Lanes as passes of their own, one lane per thread at a time (when the threads are no more
 * than the lanes): each lane's samples go through the whole net on one thread, in that thread's
 * slot of the workspace scratch, which keeps a lane's working set in its core's caches and needs
 * one parallel region a step. The arithmetic is the layer-at-a-time pass's: every layer computes
 * a sample, or a lane's sum, the same way whichever pass it is in. */
typedef struct lane_pass_args {
    trainer *t;
    const int *samples; /* the samples of this process's lanes */
    float *loss;
    unsigned char *hit;
} lane_pass_args;

static int lane_passes(void *ctx, long begin, long end, int worker) {
    const lane_pass_args *a = ctx;
    trainer *t = a->t;
    const size_t slot = net_scratch_size(&t->net, t->train_chunk, 1);
    load_args load = {t, t->train, a->samples, 0, 1};
    for (long l = begin; l < end; l++) {
        const int s0 = t->cut_start[l], s1 = t->cut_start[l + 1];
        load_samples(&load, s0, s1, worker);
        const pass_view v = {s0, s1 - s0, 1, {0, NULL, 0}, t->ws.scratch + (size_t)worker * slot};
        net_forward_view(&t->net, t->params, &t->ws, &v);
        record_results(t, s0, s1, 1, a->loss + s0, a->hit + s0, NULL);
        net_backward_view(&t->net, t->params, &t->ws, &v, t->labels + s0,
                          t->grads + (size_t)l * t->net.n_params);
    }
    return 0;
}

void trainer_step(trainer *t, const int *samples, int count, double *loss_sum, int *hits) {
    const size_t n_params = t->net.n_params;
    const int n_lanes = min_int(min_int(t->cfg->lanes, t->cfg->batch_size), count);
    /* This process's lanes: all of them, or its share when several processes train together.
     * Lane l takes samples [l * count / n_lanes, (l + 1) * count / n_lanes). */
    int first = 0, last = n_lanes;
    if (t->dist) dist_lanes(t->dist, n_lanes, &first, &last);
    const int k0 = (int)((long)first * count / n_lanes), k1 = (int)((long)last * count / n_lanes);
    for (int l = first; l <= last; l++)
        t->cut_start[l - first] = (int)((long)l * count / n_lanes) - k0;
    float *loss = t->sample_loss;
    unsigned char *hit = t->sample_hit;
    t->step_lanes = n_lanes;
    /* Lanes as passes of their own, unless a layer needs the whole batch at once. */
    if (k1 > k0 && t->threads <= t->lanes && last - first > 1 && t->net.batch_wide < 0) {
        t->ws.training = 1;
        lane_pass_args a = {t, samples + k0, loss + k0, hit + k0};
        const size_t work = (size_t)(k1 - k0) * PAR_GRAIN; /* a sample's pass: a thread's worth */
        par_blocks(t->threads, work, last - first, lane_passes, &a);
    } else if (k1 > k0) {
        run_pass(t, t->train, samples + k0, 0, k1 - k0, last - first, 1, loss + k0, hit + k0,
                 NULL);
        net_backward(&t->net, t->params, &t->ws, t->labels, k1 - k0, t->grads, t->threads);
    }
    /* One step with the mean gradient. */
    if (t->dist) {
        /* The lanes of all processes added in lane order, then the same step everywhere. */
        dist_sum_lanes(t->dist, t->grads, n_lanes, n_params, t->grad_sum);
        const int R = t->dist->size;
        for (int r = 0; r <= R; r++)
            t->result_begin[r] = (int)((long)((long)r * n_lanes / R) * count / n_lanes);
        dist_gather_results(t->dist, t->result_begin, loss, hit);
        t->weights_bad = apply_update(t, t->grad_sum, 1, count);
    } else {
        t->weights_bad = apply_update(t, t->grads, n_lanes, count);
    }
    double sum = 0.0;
    int correct = 0;
    for (int k = 0; k < count; k++) {
        sum += loss[k];
        correct += hit[k];
    }
    *loss_sum = sum;
    *hits = correct;
}

/* The epoch's sample order: 0..n-1, or a shuffle drawn from a stream keyed by (seed, epoch). */
static void epoch_order(int *order, int n, int shuffle, uint32_t seed, int epoch) {
    for (int i = 0; i < n; i++) order[i] = i;
    if (!shuffle) return;
    uint64_t key = mix64(((uint64_t)seed << 32) ^ (uint64_t)epoch ^ 0x5348554646ull);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)keyed_below(key, (uint64_t)i, (uint64_t)i + 1);
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

void trainer_epoch(trainer *t, int epoch, epoch_stats *st) {
    const config *cfg = t->cfg;
    const int n = t->train->n, batch = cfg->batch_size;
    double start = omp_get_wtime();
    const int previous = profile_set_phase(PROFILE_TRAIN);
    epoch_order(t->order, n, cfg->shuffle, cfg->seed, epoch);
    t->epoch = epoch;
    memset(st, 0, sizeof *st);
    for (int b = t->pos.position; b < n; b += batch) {
        int count = min_int(batch, n - b);
        double batch_loss;
        int batch_hits;
        trainer_step(t, t->order + b, count, &batch_loss, &batch_hits);
        t->pos.loss_sum += batch_loss;
        t->pos.correct += batch_hits;
        t->pos.position = b + count;
        t->pos.step++;
        if (!isfinite(batch_loss) || t->weights_bad) {
            st->diverged = 1;
            st->diverged_step = (b + batch - 1) / batch + 1;
            st->diverged_layer = isfinite(batch_loss) ? trainer_bad_layer(t) : -1;
            break;
        }
        /* Every process stops at the same step, when any of them asks to. */
        int stop = t->step_hook && t->step_hook(t->step_ctx, b + count, n);
        if (t->dist && t->step_hook) stop = dist_any(t->dist, stop);
        if (stop) {
            st->stopped = b + count < n;
            if (st->stopped) break;
        }
    }
    profile_set_phase(previous);
    t->pos.seconds += omp_get_wtime() - start;
    st->train_seconds = t->pos.seconds;
    st->train_loss = t->pos.loss_sum / n;
    st->train_acc = (double)t->pos.correct / n;
    st->test_loss = st->test_acc = st->val_loss = st->val_acc = NAN;
    if (st->stopped || st->diverged) {
        st->seconds = st->train_seconds;
        return;
    }
    int last = epoch + 1 == cfg->epochs;
    double eval_start = omp_get_wtime();
    if (t->test && cfg->eval_every > 0 && ((epoch + 1) % cfg->eval_every == 0 || last))
        trainer_evaluate(t, t->test, &st->test_loss, &st->test_acc);
    if (t->validation) trainer_evaluate(t, t->validation, &st->val_loss, &st->val_acc);
    st->seconds = st->train_seconds + (omp_get_wtime() - eval_start);
    /* The next epoch starts from its beginning. */
    t->pos.position = 0;
    t->pos.loss_sum = 0.0;
    t->pos.correct = 0;
    t->pos.seconds = 0.0;
}

void trainer_evaluate(trainer *t, const dataset *ds, double *loss, double *acc) {
    trainer_classify(t, ds, NULL, loss, acc);
}

void trainer_classify(trainer *t, const dataset *ds, int *predicted, double *loss, double *acc) {
    const int n = ds->n, chunk = t->chunk;
    const int n_chunks = (n + chunk - 1) / chunk;
    const int previous = profile_set_phase(PROFILE_EVAL);
    /* The chunks of consecutive samples this process classifies: [c_lo, c_hi). Several
     * processes share out the chunks one process would use, so every sample goes through the
     * same chunk (a one-sample chunk rounds differently from a longer one in the dense layers). */
    int c_lo = 0, c_hi = n_chunks;
    if (t->dist) {
        const int R = t->dist->size;
        for (int r = 0; r <= R; r++) {
            int c = (int)((long)r * n_chunks / R);
            t->result_begin[r] = c * chunk < n ? c * chunk : n;
        }
        c_lo = (int)((long)t->dist->rank * n_chunks / R);
        c_hi = (int)((long)(t->dist->rank + 1) * n_chunks / R);
    }
    /* Passes of up to pass_chunks chunks, each chunk a lane of the pass; which pass a chunk
     * falls in does not matter, and losses are summed in sample order below. */
    for (int c = c_lo; c < c_hi; c += t->pass_chunks) {
        const int c_end = min_int(c + t->pass_chunks, c_hi);
        const int first = c * chunk, count = min_int(c_end * chunk, n) - first;
        for (int i = 0; i < c_end - c; i++) t->cut_start[i] = i * chunk;
        t->cut_start[c_end - c] = count;
        run_pass(t, ds, NULL, first, count, c_end - c, 0, t->sample_loss + first,
                 t->sample_hit + first, predicted ? predicted + first : NULL);
    }
    if (t->dist) dist_gather_results(t->dist, t->result_begin, t->sample_loss, t->sample_hit);
    double sum = 0.0;
    long correct = 0;
    for (int i = 0; i < n; i++) {
        sum += t->sample_loss[i];
        correct += t->sample_hit[i];
    }
    *loss = sum / n;
    *acc = (double)correct / n;
    profile_set_phase(previous);
}
