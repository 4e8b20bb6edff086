/*
 * The run's configuration, read strictly from one JSON file: every key is known, typed and range
 * checked, and every message names the file and the JSON path (docs/config.md lists the keys).
 * Overrides from the command line (--set path=value) are applied to the JSON before checking.
 */
#ifndef OMPCNN_CONFIG_H
#define OMPCNN_CONFIG_H

#include <cjson/cJSON.h>

#include "ompcnn/common.h"
#include "ompcnn/layer.h"
#include "ompcnn/optimizer.h"

typedef struct layer_spec {
    const layer_ops *ops;
    void *settings;
    char path[32]; /* "network[3]" */
} layer_spec;

/* How a data set is stored: IDX image and label files (MNIST's format), a CSV file of rows
 * "label,pixel,pixel,..." (an optional header row), CIFAR-10/100 binary records (a label
 * byte, or CIFAR-100's coarse and fine label bytes, then 32x32x3 pixels channel by channel), or
 * a folder of PNG files per class (root/CLASS/NAME.png). */
typedef enum data_format { DATA_IDX, DATA_CSV, DATA_CIFAR, DATA_FOLDER } data_format;

#define MAX_NORMALIZE_CHANNELS 16

typedef struct split_config {
    data_format format;
    char *images; /* the image file (CSV, CIFAR: the only file; folder: the root folder);
                     resolved like every path */
    char *labels; /* IDX only */
    long limit;   /* first N samples; -1 for all */
    shape3 shape; /* CSV: each row's image shape (h, w, c) */
    int cifar100; /* CIFAR: records with two label bytes; the fine label is used */
} split_config;

/* The file that holds a split's labels: the labels file, or the images file or folder. */
static inline const char *split_labels_file(const split_config *s) {
    return s->labels ? s->labels : s->images;
}

typedef struct config {
    char *file;   /* the config path as the user gave it, used in messages */
    cJSON *json;  /* the document after overrides */
    split_config train, test;
    int has_test;
    /* data.normalize: the input is (pixel / 255 - mean[c]) / std[c] for channel c; n_normalize
     * values each (1 for every channel alike, or one per channel); 0: pixel / 255. */
    int n_normalize;
    float normalize_mean[MAX_NORMALIZE_CHANNELS], normalize_std[MAX_NORMALIZE_CHANNELS];
    long validation_last;       /* hold out the last N training samples for validation (0: none) */
    double validation_fraction; /* or this fraction of them */
    int n_layers;
    layer_spec *layers;
    int epochs;
    int batch_size;
    double learning_rate;
    int shuffle;
    uint32_t seed;
    int threads;    /* 0: OpenMP's default */
    double max_memory; /* bytes a run may use (--max-memory, not a config key); 0: what the
                          machine has available */
    int lanes;      /* gradient accumulation lanes for minibatches */
    init_kind init;
    int eval_every; /* evaluate the test set every N epochs (and after the last); 0: never */
    int augment_shift; /* random translation by up to this many pixels (0: off) */
    int augment_flip;  /* mirror left-right with probability 1/2 */
    double augment_rotate; /* random rotation by up to this many degrees either way (0: off) */
    double augment_scale;  /* random zoom by a factor from 1 - this to 1 + this (0: off) */
    double label_smoothing; /* the target is (1 - e) one-hot + e / classes */
    optimizer_config optimizer;
    schedule_config schedule;
    char *checkpoint_path;       /* NULL: no checkpoints */
    int checkpoint_every_epochs; /* 0: not at epoch ends */
    int checkpoint_every_steps;  /* 0: not by steps */
    char *base_dir;              /* the folder relative paths were resolved against */
} config;

/* Reads and checks the file, applying overrides ("dotted.path=JSON", see config_apply_override). */
int config_load(config *cfg, const char *file, const char *const *overrides, int n_overrides,
                errbuf *err);
/* The same from text; `file` names it in messages, relative data paths resolve against base_dir. */
int config_parse_text(config *cfg, const char *text, const char *file, const char *base_dir,
                      const char *const *overrides, int n_overrides, errbuf *err);
void config_free(config *cfg);

/* Sets the value at a path like "training.epochs" or "network[0].filters" in root. The value is
 * parsed as JSON; text that is not JSON is taken as a string. Missing object keys are created
 * (and then rejected by the strict check if unknown). */
int config_apply_override(cJSON *root, const char *assignment, errbuf *err);

/* Position (1-based line and column) of byte offset `off` in text. */
void text_line_col(const char *text, size_t off, int *line, int *col);

#endif
