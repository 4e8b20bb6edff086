/*
 * A training run as the trainer command makes it: the config (from a file, or from the
 * checkpoint being resumed), the data and its validation split, the trainer and its starting
 * point, the epoch loop, the checkpoint policy and the metrics rows. The command line
 * (src/main.c) parses the arguments, opens a run, trains it, prints what the hooks tell it and
 * picks the exit code; `trainer eval` and `trainer predict` load saved models through here too.
 *
 * With several processes (dist.h) every process opens and trains the same run; only the writer
 * (process 0) writes files.
 */
#ifndef OMPCNN_RUN_H
#define OMPCNN_RUN_H

#include "ompcnn/checkpoint.h"
#include "ompcnn/config.h"
#include "ompcnn/data.h"
#include "ompcnn/dist.h"
#include "ompcnn/train.h"

/* The files a run reads and writes, as the command line names them; NULL: none. */
typedef struct run_files {
    const char *config;     /* the config file (NULL when resuming) */
    const char *resume;     /* a checkpoint to continue */
    const char *load;       /* parameters to start from instead of the config's init */
    const char *checkpoint; /* overrides training.checkpoint.path */
    const char *save, *save_init, *save_best, *metrics, *profile;
    const char *const *overrides; /* "path=value" on top of the config */
    int n_overrides;
    double max_memory; /* bytes a run may take (0: what the machine has available) */
} run_files;

/* What the caller hears while a run trains; each hook may be NULL. */
typedef struct run_hooks {
    void *ctx;
    /* After every step: `done` of the epoch's `total` samples are trained. */
    void (*progress)(void *ctx, int epoch, int done, int total);
    /* Nonzero when the run should stop (a signal); asked after every step and every epoch. */
    int (*stop)(void *ctx);
    /* After every epoch: its figures as one line of text. */
    void (*epoch_done)(void *ctx, const char *line);
    /* While a data set (`what`: "data.train") is decoded: `done` of its `total` images. */
    void (*loading)(void *ctx, const char *what, long done, long total);
} run_hooks;

typedef enum run_end {
    RUN_FINISHED, /* every epoch trained */
    RUN_STOPPED,  /* a stop hook stopped it; checkpoint_written says whether it was saved */
    RUN_DIVERGED, /* a loss or a weight stopped being finite (err says where) */
    RUN_FAILED    /* a file could not be written or memory ran out (err says which) */
} run_end;

typedef struct run {
    run_files files;
    config cfg;
    checkpoint_meta meta; /* the checkpoint being resumed */
    dist *dist;
    int writer;           /* this process writes the files */
    dataset train, test;
    dataset validation;   /* the held-out end of train (a view into its memory), or n == 0 */
    float *pixel_table;   /* the data's pixel-to-input table (pixel_table in data.h) */
    double load_seconds[2]; /* reading and decoding the training and the test set */
    trainer t;
    int first_epoch;      /* 0, or the epoch the checkpoint was in */
    int epoch;            /* the epoch in progress */
    char *metrics;        /* the metrics CSV so far (header and one row per epoch) */
    size_t metrics_len, metrics_cap;
    double best_val_acc;  /* for --save-best */
    int checkpoint_written; /* RUN_STOPPED: the run was saved and can be resumed */
    const run_hooks *hooks;
    int step_failed;      /* a checkpoint between steps could not be written: step_err */
    errbuf step_err;
} run;

/* Reads the config: files->config, or the config saved in the checkpoint files->resume, with
 * the overrides on top; applies files->checkpoint; with several processes on one machine, "all
 * cores" becomes this process's share of them. */
int run_config(run *r, const run_files *files, dist *d, errbuf *err);
/* Loads the data (hooks->loading hears how far the decoding is; hooks may be NULL), holds out
 * the validation split, builds the trainer and sets where it starts: the checkpoint's
 * parameters and position, files->load, or the config's init. Returns 0 or the exit code
 * (EXIT_INPUT for bad input, EXIT_RUNTIME when memory runs out). */
int run_load(run *r, const run_hooks *hooks, errbuf *err);
/* Writes files->save_init, on the writer. */
int run_save_init(run *r, errbuf *err);
/* Trains the remaining epochs, writing the metrics, --save-best and checkpoints as they come. */
run_end run_train(run *r, const run_hooks *hooks, errbuf *err);
/* After RUN_FINISHED: writes files->save and files->profile, on the writer. */
int run_finish(run *r, errbuf *err);
void run_close(run *r);

/* The config of saved parameters: config_path if given, else the config that a parameter file
 * written by --save, or a checkpoint, carries (relative paths resolved as when it was saved). */
int run_model_config(config *cfg, const char *config_path, const char *params_path,
                     const char *const *overrides, int n_overrides, errbuf *err);
/* For `trainer eval`: the config (as run_model_config), the test set, a trainer over it and the
 * parameters of params_path. Returns 0 or the exit code. */
int run_open_eval(run *r, const char *config_path, const char *params_path,
                  const char *const *overrides, int n_overrides, errbuf *err);

/* The input shape saved parameters were trained on: model.json's, or (a bare parameter file)
 * the shape of cfg's training images. */
int run_model_shape(const char *params_path, const config *cfg, shape3 *shape, errbuf *err);
/* The k class names a parameter file's model.json carries, or NULL (none, or not k of them).
 * Free with run_free_names. */
char **run_model_class_names(const char *params_path, int k);
void run_free_names(char **names, int k);

#endif
