/*
 * The training loop. A trainer owns the parameters, the gradient lanes and one workspace for a
 * batch's samples; the datasets are the caller's.
 *
 * Batch size 1 is the report's per-sample SGD: forward, backward, step, sample after sample. A
 * minibatch of B samples is cut into L lanes of consecutive samples (L = min(lanes, B)); each
 * lane sums its samples' gradients in order, and the lane sums are added in lane order before one
 * step with the mean gradient. With more threads than lanes the batch goes through the net one
 * layer at a time, each layer over all its samples with all the threads; with no more threads
 * than lanes each lane goes through the whole net on one thread. Both compute every sample and
 * every lane sum the same way (threads are a machine setting, lanes fix the arithmetic), so the
 * weights are the same for any thread count.
 * With several processes (dist.h) each runs a contiguous share of the lanes and the lane sums
 * are added across processes in the same lane order, so the process count does not matter either.
 */
#ifndef OMPCNN_TRAIN_H
#define OMPCNN_TRAIN_H

#include "ompcnn/config.h"
#include "ompcnn/dist.h"
#include "ompcnn/data.h"
#include "ompcnn/net.h"

/* Evaluation runs passes of at least this many samples, and 8 per thread (whole chunks). */
#define EVAL_PASS 64

/* Where a run stands within an epoch: the next sample of the epoch's order, the epoch's loss and
 * accuracy sums and training seconds so far, and the steps taken since training began. A
 * checkpoint saves it, and a resumed run continues from it. */
typedef struct train_position {
    int position;
    double loss_sum;
    long correct;
    double seconds;
    long step;
} train_position;

typedef struct trainer {
    const config *cfg;
    const dataset *train, *test;
    const dataset *validation; /* may be NULL; evaluated after every epoch */
    net net;
    dist *dist;  /* the processes sharing each batch; NULL or size 1: this one alone */
    int threads; /* threads actually used */
    int lanes;   /* gradient buffers: one per lane this process runs at most */
    int chunk;   /* evaluation's chunk: ceil(batch_size / min(lanes, batch_size)) samples */
    int train_chunk; /* samples a lane takes at most in training (the chunk, or fewer when the
                        training set is smaller than a batch) */
    int pass_chunks; /* chunks one pass through the workspace holds (see EVAL_PASS) */
    float *params;
    float *grads;      /* one gradient per lane this process runs, n_params each */
    float *grad_sum;   /* with several processes: the batch's summed gradient */
    int *result_begin; /* with several processes: where each one's samples begin (size + 1) */
    workspace ws;      /* pass_chunks * chunk samples (training uses lanes * chunk), threads */
    int *cut_start;    /* the current pass's lanes (pass_chunks + 1 entries) */
    int step_lanes;    /* the lanes of the current step's whole batch, every process's */
    batch_sum batch;   /* with several processes: batch-wide layers' sums over all of them */
    int *order;        /* sample order of the current epoch */
    float *sample_loss;    /* per-sample loss of the current pass */
    unsigned char *sample_hit; /* per-sample correctness of the current pass */
    int *labels;               /* the labels of the pass's samples */
    int weights_bad;           /* the last step left a parameter NaN or infinite */
    float *opt_state;          /* the optimizer's state: 0, 1 or 2 floats per parameter */
    int epoch;                 /* the epoch being trained (keys the random streams) */
    long steps_per_epoch;
    /* Called after every step with the epoch's samples done so far (may be NULL); a nonzero
     * return stops the epoch there (st->stopped), resumable from `pos`. */
    int (*step_hook)(void *ctx, int done, int total);
    void *step_ctx;
    /* Where the current epoch stands. trainer_epoch starts from here (all zero but the step: the
     * start of the epoch) and leaves it at the end, or where a hook stopped it. */
    train_position pos;
} trainer;

typedef struct epoch_stats {
    double train_loss, train_acc;
    double test_loss, test_acc; /* NaN when the test set was not evaluated */
    double val_loss, val_acc;   /* NaN without a validation set */
    double train_seconds; /* the training pass alone */
    double seconds;       /* the whole epoch, evaluation included */
    /* Set when a loss or a weight stopped being finite; the epoch stopped at that step. */
    int diverged;
    int diverged_step;  /* 1-based step (batch) of the epoch */
    int diverged_layer; /* index of the first layer with a non-finite weight, or -1: the loss */
    int stopped;        /* the step hook stopped the epoch before its end */
} epoch_stats;

/* Builds the net for train's input shape, allocates everything and initialises the parameters
 * (cfg->init, cfg->seed). */
int trainer_open(trainer *t, const config *cfg, const dataset *train, const dataset *test,
                 errbuf *err);
/* The same for one of d->size processes training together (d may be NULL: one process). Fails
 * when the batch cannot be shared: batch size 1, or fewer lanes than processes. */
int trainer_open_dist(trainer *t, const config *cfg, const dataset *train, const dataset *test,
                      dist *d, errbuf *err);
void trainer_close(trainer *t);
/* Evaluates `validation` after every epoch from now on (st->val_loss, st->val_acc). */
int trainer_set_validation(trainer *t, const dataset *validation, errbuf *err);
/* Trains epoch `epoch` (0-based) and evaluates the test set when the config asks for it. Stops
 * early, with st->diverged set, at the first step whose loss or updated weights are not finite. */
void trainer_epoch(trainer *t, int epoch, epoch_stats *st);
/* Mean loss and accuracy on ds with the current parameters. */
void trainer_evaluate(trainer *t, const dataset *ds, double *loss, double *acc);
/* The same, also writing each sample's predicted class to predicted[ds->n] (if not NULL; one
 * process only). The dataset may hold at most as many samples as the trainer's training or test
 * set. With several processes each classifies a share and all learn every sample's result. */
void trainer_classify(trainer *t, const dataset *ds, int *predicted, double *loss, double *acc);
/* One step: trains one batch of samples given by index, in lanes, and takes one step with the
 * mean gradient (trainer_epoch calls it for every batch, of one sample or many). */
void trainer_step(trainer *t, const int *samples, int count, double *loss_sum, int *hits);
/* The first layer whose parameters hold a NaN or an infinity, or -1. */
int trainer_bad_layer(const trainer *t);

#endif
