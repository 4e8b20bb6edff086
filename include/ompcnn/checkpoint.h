/*
 * Checkpoints: the full state of a run in one .npz file, so that a run stopped at any step (a
 * signal, a crash, a kill) continues to the very same weights. Beside the parameter arrays (named
 * as in parameter files, so --load and numpy.load read them) it holds:
 *   config.json  the config the run was made with, overrides applied
 *   state.json   the epoch in progress, the position in its sample order, the epoch's loss and
 *                accuracy sums so far, the training seconds, the global step, and the folder
 *                the config's relative paths resolve against
 *   metrics.csv  the figures of the epochs done, so a resumed run's --metrics file is complete
 * Shuffling and initialisation draw from streams keyed by (seed, epoch), so no generator state
 * needs saving; plain SGD has no optimizer state.
 */
#ifndef OMPCNN_CHECKPOINT_H
#define OMPCNN_CHECKPOINT_H

#include "ompcnn/train.h"

typedef struct checkpoint_meta {
    unsigned char *bytes; /* the whole file, as read once; its parameters are loaded from here
                             (NULL once they are) */
    size_t len;
    char *config_text;
    char *base_dir;
    char *metrics_csv;
    int epoch; /* the epoch in progress, 0-based */
    train_position pos;
} checkpoint_meta;

/* Writes t's parameters and position (epoch `epoch`, t->pos) atomically to path. */
int checkpoint_save(const char *path, const trainer *t, int epoch, const char *metrics_csv,
                    errbuf *err);
/* Reads a checkpoint once, into meta->bytes, and its config, metrics and position from there
 * (its parameters are loaded from meta->bytes with params_load_buffer). */
int checkpoint_read(const char *path, checkpoint_meta *meta, errbuf *err);
/* Reads state.json's text into meta's position fields and base_dir; path names the file. */
int checkpoint_parse_state(const char *state_text, const char *path, checkpoint_meta *meta,
                           errbuf *err);
void checkpoint_meta_free(checkpoint_meta *meta);

#endif
