/*
 * The trainer's command line: read the config, load the data, build and train the network,
 * print one line per epoch, and write the metrics and parameter files asked for. Errors from
 * below arrive as messages; this is the only place that prints them and picks the exit code
 * (docs/cli.md lists the codes).
 *
 * Under mpirun (a build with -DOMPCNN_MPI=ON) every process runs this same path: each reads the
 * config and the data itself, and only process 0 prints, writes files and checkpoints. Errors
 * while setting up are agreed on, so all processes exit together with the first one's code;
 * a failed write once training runs ends the whole job (MPI_Abort).
 */
#include <errno.h>
#include <signal.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "ompcnn/checkpoint.h"
#include "ompcnn/config.h"
#include "ompcnn/dist.h"
#include "ompcnn/data.h"
#include "ompcnn/npz.h"
#include "ompcnn/train.h"
#include "profile.h"
#include "fileio.h"

static const char usage_text[] =
    "Usage: trainer [OPTIONS] CONFIG.json\n"
    "       trainer [OPTIONS] --resume CHECKPOINT.npz\n"
    "       trainer eval [CONFIG.json] --load FILE.npz [--csv FILE.csv]\n"
    "       trainer predict --load FILE.npz [--config CONFIG.json] IMAGE.pgm|IMAGES.idx...\n"
    "Train the convolutional network described by CONFIG.json on all cores.\n"
    "\n"
    "Options:\n"
    "  --set PATH=VALUE   override a config value (VALUE is JSON, or else a string);\n"
    "                     PATH like training.epochs or network[0].filters; repeatable\n"
    "  --threads N        threads to use (same as --set training.threads=N; 0 = all cores)\n"
    "  --load FILE.npz    start from saved parameters instead of the config's init\n"
    "  --save FILE.npz    write the trained parameters (numpy .npz) at the end\n"
    "  --save-init FILE.npz  write the initial parameters before training\n"
    "  --save-best FILE.npz  keep the parameters of the epoch with the best validation\n"
    "                     accuracy (needs data.validation)\n"
    "  --metrics FILE.csv write the per-epoch figures as CSV (rewritten after each epoch)\n"
    "  --checkpoint FILE.npz  write the full run state there after every epoch (or as\n"
    "                     training.checkpoint says) and on SIGINT/SIGTERM\n"
    "  --resume FILE.npz  continue the run saved in a checkpoint, to the same weights\n"
    "  --profile FILE.csv record each thread's CPU time in every parallel region and\n"
    "                     write work, span and the speedup bound per phase (docs/cli.md)\n"
    "  -h, --help         show this help and exit\n"
    "  -V, --version      show the version and exit\n"
    "\n"
    "Several processes (a build with -DOMPCNN_MPI=ON): mpirun -np R trainer CONFIG.json\n"
    "shares each batch among R processes, to the same weights as one (docs/mpi.md).\n"
    "\n"
    "Exit status: 0 success, 1 a file could not be written or memory ran out,\n"
    "2 bad command line, config, data, parameter or checkpoint file, 3 training diverged\n"
    "(NaN), 130/143 stopped by SIGINT/SIGTERM after writing the checkpoint.\n"
    "Config reference: docs/config.md\n";

typedef struct options {
    const char *config_path;
    const char *load, *save, *save_init, *metrics, *resume, *checkpoint, *save_best, *profile;
    const char **overrides;
    int n_overrides;
} options;

/* Returns 0 to continue, or an exit code + 1 (so 1 means exit 0). */
static int parse_args(int argc, char **argv, options *opt, char *threads_override) {
    static const struct option longopts[] = {
        {"set", required_argument, NULL, 's'},       {"threads", required_argument, NULL, 't'},
        {"load", required_argument, NULL, 'l'},      {"save", required_argument, NULL, 'o'},
        {"save-init", required_argument, NULL, 'i'}, {"metrics", required_argument, NULL, 'm'},
        {"resume", required_argument, NULL, 'r'},    {"checkpoint", required_argument, NULL, 'c'},
        {"save-best", required_argument, NULL, 'b'}, {"profile", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},            {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    opt->overrides = calloc((size_t)argc + 1, sizeof *opt->overrides);
    if (!opt->overrides) {
        fprintf(stderr, "trainer: out of memory\n");
        return EXIT_RUNTIME + 1;
    }
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        switch (c) {
        case 's': opt->overrides[opt->n_overrides++] = optarg; break;
        case 't':
            if (threads_option("trainer", optarg, threads_override, 64)) return EXIT_INPUT + 1;
            opt->overrides[opt->n_overrides++] = threads_override;
            break;
        case 'l': opt->load = optarg; break;
        case 'o': opt->save = optarg; break;
        case 'i': opt->save_init = optarg; break;
        case 'm': opt->metrics = optarg; break;
        case 'r': opt->resume = optarg; break;
        case 'c': opt->checkpoint = optarg; break;
        case 'b': opt->save_best = optarg; break;
        case 'p': opt->profile = optarg; break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK + 1;
        case 'V': printf("trainer (ompcnn) %s\n", OMPCNN_VERSION); return EXIT_OK + 1;
        default:
            if (optopt)
                fprintf(stderr, "trainer: option -%c %s\n", optopt,
                        strchr("hV", optopt) ? "takes no value" : "needs a value or is unknown");
            else
                fprintf(stderr, "trainer: unknown or incomplete option %s\n", argv[optind - 1]);
            fprintf(stderr, "Try 'trainer --help'.\n");
            return EXIT_INPUT + 1;
        }
    }
    if (opt->resume && argc - optind != 0) {
        fprintf(stderr, "trainer: --resume continues a run with the config saved in its "
                        "checkpoint; give no config file\nTry 'trainer --help'.\n");
        return EXIT_INPUT + 1;
    }
    if (opt->resume && (opt->load || opt->save_init)) {
        fprintf(stderr, "trainer: --resume takes the parameters from the checkpoint; it cannot "
                        "go with --load or --save-init\n");
        return EXIT_INPUT + 1;
    }
    if (!opt->resume && argc - optind != 1) {
        fprintf(stderr, "trainer: %s\nTry 'trainer --help'.\n",
                argc - optind == 0 ? "missing the config file" : "expected exactly one config file");
        return EXIT_INPUT + 1;
    }
    opt->config_path = opt->resume ? NULL : argv[optind];
    return 0;
}

/* ---- signals: SIGINT and SIGTERM stop training at the next step, with a checkpoint ---- */

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    stop_signal = sig;
}

static void install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* What the step hook needs: the progress bar, and the checkpoint every N steps. */
typedef struct run_state {
    trainer *t;
    int writer; /* this process writes the files (process 0) */
    const config *cfg;
    int epoch, show_progress;
    double start;
    const char *csv;
    int checkpoint_failed;
    errbuf err;
} run_state;

static void progress_bar(const run_state *rs, int done, int total) {
    static double last;
    double now = omp_get_wtime();
    if (done < total && now - last < 0.1) return;
    last = now;
    int width = 30, filled = (int)((long)width * done / total);
    fprintf(stderr, "\r  epoch %d/%d [%.*s%*s] %d/%d  %.0f img/s ", rs->epoch + 1, rs->cfg->epochs,
            filled, "##############################", width - filled, "", done, total,
            done / (now - rs->start + 1e-9));
    if (done == total) fprintf(stderr, "\r%*s\r", 78, "");
    fflush(stderr);
}

static int after_step(void *ctx, int done, int total) {
    run_state *rs = ctx;
    if (rs->show_progress) progress_bar(rs, done, total);
    if (stop_signal) return 1;
    int every = rs->cfg->checkpoint_every_steps;
    if (rs->writer && every > 0 && rs->t->pos.step % every == 0 && done < total &&
        checkpoint_save(rs->cfg->checkpoint_path, rs->t, rs->epoch, rs->csv, &rs->err)) {
        rs->checkpoint_failed = 1;
        return 1;
    }
    return 0;
}

static void fmt_metric(char *buf, size_t size, const char *fmt, double v, const char *missing) {
    if (isnan(v)) snprintf(buf, size, "%s", missing);
    else snprintf(buf, size, fmt, v);
}

/* Appends text to the growing buffer *buf; -1 when memory runs out. */
static int append(char **buf, size_t *len, size_t *cap, const char *text) {
    size_t n = strlen(text);
    if (*len + n + 1 > *cap) {
        size_t grown_cap = (*cap + n + 1) * 2;
        char *grown = realloc(*buf, grown_cap);
        if (!grown) return -1;
        *buf = grown;
        *cap = grown_cap;
    }
    memcpy(*buf + *len, text, n + 1);
    *len += n;
    return 0;
}

/* Prints the error of the process that reports it (the first to fail). */
static void print_error(const dist *d, const errbuf *err) {
    if (d->size > 1 && d->rank > 0)
        fprintf(stderr, "trainer: process %d of %d: %s\n", d->rank, d->size, err->msg);
    else
        fprintf(stderr, "trainer: %s\n", err->msg);
}

/* A write or allocation failed on the writing process while all were training: the others
 * cannot go on without it, so the whole job ends. */
static void fail_job(const dist *d, const errbuf *err, int code) {
    print_error(d, err);
    dist_abort(d, code);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "predict") == 0) return cmd_predict(argc - 1, argv + 1);
    errbuf err;
    dist d;
    if (dist_init(&d, &argc, &argv, &err)) {
        if (d.rank == 0) fprintf(stderr, "trainer: %s\n", err.msg);
        return d.mpi || dist_built_with_mpi() ? EXIT_RUNTIME : EXIT_INPUT;
    }
    const int writer = d.rank == 0;
    /* Only process 0 speaks; the others' command-line messages would repeat its own. */
    int saved_stderr = -1;
    if (!writer) {
        fflush(stderr);
        saved_stderr = dup(STDERR_FILENO);
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) {
            dist_abort(&d, EXIT_RUNTIME);
        }
    }
    options opt = {0};
    char threads_override[64];
    int rc = parse_args(argc, argv, &opt, threads_override);
    if (saved_stderr >= 0) {
        /* Errors of this process are its own from here on. */
        fflush(stderr);
        dup2(saved_stderr, STDERR_FILENO);
        close(saved_stderr);
    }
    if (rc) {
        free(opt.overrides);
        dist_finalize(&d);
        return rc - 1;
    }
    config cfg = {0};
    dataset train = {0}, test = {0};
    trainer t = {0};
    checkpoint_meta meta = {0};
    char *csv = NULL;
    size_t csv_len = 0, csv_cap = 0;
    int exit_code = EXIT_INPUT;
    static const char csv_header[] =
        "epoch,train_loss,train_acc,test_loss,test_acc,seconds,images_per_s\n";
    static const char csv_header_val[] =
        "epoch,train_loss,train_acc,test_loss,test_acc,seconds,images_per_s,val_loss,val_acc\n";
    double best_val_acc = -1.0;
    int setting_up = 1; /* setup errors are agreed on by all processes */
    int who, stopped = 0;

    if (opt.resume) {
        /* The run's own config, as it was made, with this command's overrides on top. */
        if (checkpoint_read(opt.resume, &meta, &err) ||
            config_parse_text(&cfg, meta.config_text, opt.resume, meta.base_dir, opt.overrides,
                              opt.n_overrides, &err))
            goto fail;
    } else if (config_load(&cfg, opt.config_path, opt.overrides, opt.n_overrides, &err)) {
        goto fail;
    }
    if (opt.checkpoint) {
        free(cfg.checkpoint_path);
        cfg.checkpoint_path = strdup(opt.checkpoint);
        if (!cfg.checkpoint_path) {
            errorf(&err, "out of memory");
            goto fail;
        }
        if (!cfg.checkpoint_every_epochs && !cfg.checkpoint_every_steps)
            cfg.checkpoint_every_epochs = 1;
    }
    /* "All cores" means this process's share of them when several run on one machine. */
    if (d.local_size > 1 && cfg.threads == 0 && !getenv("OMP_NUM_THREADS")) {
        int share = omp_get_num_procs() / d.local_size;
        cfg.threads = share > 1 ? share : 1;
    }
    if (check_output_dir("--save", opt.save, &err) ||
        check_output_dir("--save-init", opt.save_init, &err) ||
        check_output_dir("--metrics", opt.metrics, &err) ||
        check_output_dir("--profile", opt.profile, &err) ||
        check_output_dir("--save-best", opt.save_best, &err) ||
        check_output_dir("checkpoint", cfg.checkpoint_path, &err))
        goto fail;
    /* Labels are checked against the softmax size once the net is built (it needs the data's
     * image shape first); 256 admits any byte for now. */
    if (dataset_load(&train, cfg.train.images, cfg.train.labels, cfg.train.limit, 256, &err))
        goto fail;
    if (cfg.has_test &&
        dataset_load(&test, cfg.test.images, cfg.test.labels, cfg.test.limit, 256, &err))
        goto fail;
    dataset validation = {0};
    if (cfg.validation_last || cfg.validation_fraction > 0.0) {
        /* The last samples of the training set, held out: a view into the same memory. */
        long held = cfg.validation_last ? cfg.validation_last
                                        : (long)(cfg.validation_fraction * train.n);
        if (held < 1 || held >= train.n) {
            errorf(&err, "%s: data.validation: holding out %ld of the %d training samples leaves "
                   "%s", cfg.file, held, train.n, held < 1 ? "no validation set" : "none to train on");
            goto fail;
        }
        validation = train;
        validation.n = (int)held;
        size_t image = (size_t)train.h * train.w * train.c;
        validation.pixels = train.pixels + (size_t)(train.n - held) * image;
        validation.labels = train.labels + (train.n - held);
        train.n -= (int)held;
    }
    if (trainer_open_dist(&t, &cfg, &train, cfg.has_test ? &test : NULL, &d, &err)) goto fail;
    if (validation.n &&
        (dataset_check_labels(&validation, cfg.train.labels, t.net.n_classes, &err) ||
         trainer_set_validation(&t, &validation, &err)))
        goto fail;
    if (opt.save_best && !validation.n) {
        errorf(&err, "--save-best keeps the epoch with the best validation accuracy; the config "
               "has no data.validation");
        goto fail;
    }
    if (dataset_check_labels(&train, cfg.train.labels, t.net.n_classes, &err) ||
        (cfg.has_test && dataset_check_labels(&test, cfg.test.labels, t.net.n_classes, &err)))
        goto fail;
    int first_epoch = 0;
    if (opt.resume) {
        if (params_load(opt.resume, &t.net, t.params, &err)) goto fail;
        size_t state = (size_t)optimizer_state_count(cfg.optimizer.kind) * t.net.n_params;
        if (state && npz_load_array(opt.resume, "optimizer_state", t.opt_state, state, &err))
            goto fail;
        if (meta.epoch > cfg.epochs || meta.position > train.n) {
            errorf(&err, "%s: the checkpoint is at epoch %d, sample %d, past this run's %d epochs "
                   "of %d samples", opt.resume, meta.epoch + 1, meta.position, cfg.epochs, train.n);
            goto fail;
        }
        first_epoch = meta.epoch;
        t.pos.position = meta.position;
        t.pos.loss_sum = meta.loss_sum;
        t.pos.correct = meta.correct;
        t.pos.seconds = meta.seconds;
        t.pos.step = meta.step;
        if (append(&csv, &csv_len, &csv_cap,
                   meta.metrics_csv[0] ? meta.metrics_csv : validation.n ? csv_header_val : csv_header))
            goto out_of_memory;
    } else {
        if (opt.load && params_load(opt.load, &t.net, t.params, &err)) goto fail;
        if (append(&csv, &csv_len, &csv_cap, validation.n ? csv_header_val : csv_header))
            goto out_of_memory;
    }
    exit_code = EXIT_RUNTIME;
    if (writer && opt.save_init && model_save(opt.save_init, &t.net, t.params, &cfg, &err))
        goto fail;
    /* Every process is ready, or all exit with the code of the first that is not (it said why). */
    int status = dist_agree(&d, 0, &who);
    if (status) {
        exit_code = status;
        goto done;
    }
    setting_up = 0;

    install_signal_handlers(); /* before the header: from then on a signal means a checkpoint */
    char shape[1024];
    net_describe(&t.net, shape, sizeof shape);
    char procs[48] = "";
    if (d.size > 1) snprintf(procs, sizeof procs, " x %d processes", d.size);
    printf("ompcnn %s | config %s | seed %u | threads %d%s | batch %d | lr %g | init %s\n",
           OMPCNN_VERSION, opt.resume ? cfg.file : opt.config_path, cfg.seed, t.threads, procs,
           cfg.batch_size, cfg.learning_rate,
           opt.resume ? opt.resume : opt.load ? opt.load : init_names[cfg.init]);
    printf("network %s\n", shape);
    printf("train %d images, test %d images\n", train.n, cfg.has_test ? test.n : 0);
    if (opt.resume)
        printf("resumed from %s at epoch %d, sample %d of its order\n", opt.resume,
               first_epoch + 1, t.pos.position);
    fflush(stdout);

    run_state rs = {&t, writer, &cfg, 0, writer && isatty(STDERR_FILENO), 0.0, NULL, 0, {{0}}};
    t.step_hook = after_step;
    t.step_ctx = &rs;
    if (opt.profile) profile_enable();
    for (int epoch = first_epoch; epoch < cfg.epochs; epoch++) {
        rs.epoch = epoch;
        rs.start = omp_get_wtime();
        rs.csv = csv;
        epoch_stats st;
        trainer_epoch(&t, epoch, &st);
        if (rs.checkpoint_failed) {
            err = rs.err;
            goto fail;
        }
        if (st.diverged) {
            if (st.diverged_layer < 0)
                errorf(&err, "training diverged at epoch %d, step %d: the loss is not finite "
                       "(lower training.learning_rate?); parameters not saved",
                       epoch + 1, st.diverged_step);
            else
                errorf(&err, "training diverged at epoch %d, step %d: %s (%s) has a NaN or "
                       "infinite weight (lower training.learning_rate?); parameters not saved",
                       epoch + 1, st.diverged_step, cfg.layers[st.diverged_layer].path,
                       t.net.layers[st.diverged_layer].ops->type);
            exit_code = EXIT_DIVERGED;
            goto fail;
        }
        if (st.stopped) { /* a signal: checkpoint below */
            stopped = 1;
            break;
        }
        double ips = t.train->n / (st.train_seconds > 0 ? st.train_seconds : 1e-9);
        char tl[32], ta[32], line[256];
        fmt_metric(tl, sizeof tl, "%.6f", st.test_loss, "-");
        fmt_metric(ta, sizeof ta, "%.4f", st.test_acc, "-");
        char val[96] = "";
        if (t.validation)
            snprintf(val, sizeof val, "  val_loss %.6f  val_acc %.4f", st.val_loss, st.val_acc);
        printf("epoch %*d/%d  train_loss %.6f  train_acc %.4f  test_loss %s  test_acc %s%s  "
               "%.2f s  %.0f img/s\n",
               (int)strlen("1000000") - 5, epoch + 1, cfg.epochs, st.train_loss, st.train_acc, tl,
               ta, val, st.seconds, ips);
        fflush(stdout);
        fmt_metric(tl, sizeof tl, "%.9g", st.test_loss, "");
        fmt_metric(ta, sizeof ta, "%.6g", st.test_acc, "");
        if (t.validation) snprintf(val, sizeof val, ",%.9g,%.6g", st.val_loss, st.val_acc);
        snprintf(line, sizeof line, "%d,%.9g,%.6g,%s,%s,%.4f,%.1f%s\n", epoch + 1, st.train_loss,
                 st.train_acc, tl, ta, st.seconds, ips, val);
        if (append(&csv, &csv_len, &csv_cap, line)) goto out_of_memory;
        if (writer && opt.metrics && write_file_atomic(opt.metrics, csv, csv_len, &err)) goto fail;
        if (opt.save_best && st.val_acc > best_val_acc) {
            best_val_acc = st.val_acc;
            if (writer && model_save(opt.save_best, &t.net, t.params, &cfg, &err)) goto fail;
        }
        /* A signal that arrived during the evaluation stops every process here. */
        int stop = dist_any(&d, stop_signal != 0);
        int every = cfg.checkpoint_every_epochs;
        if (writer && cfg.checkpoint_path && ((every > 0 && (epoch + 1) % every == 0) || stop) &&
            checkpoint_save(cfg.checkpoint_path, &t, epoch + 1, csv, &err))
            goto fail;
        if (stop) {
            stopped = 1;
            break;
        }
    }
    if (stopped) {
        /* Stopped by a signal (with several processes, perhaps another process's). */
        int sig = stop_signal ? stop_signal : SIGTERM;
        exit_code = 128 + sig;
        if (!cfg.checkpoint_path) {
            errorf(&err, "interrupted (%s); no checkpoint path is set, so nothing was saved",
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
            goto fail;
        }
        /* Mid-epoch: the position in the epoch goes into the checkpoint. */
        if (writer && t.pos.position > 0 &&
            checkpoint_save(cfg.checkpoint_path, &t, rs.epoch, csv, &err))
            goto fail;
        if (writer)
            fprintf(stderr, "trainer: interrupted (%s); checkpoint written to %s (continue with "
                    "--resume %s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
                    cfg.checkpoint_path, cfg.checkpoint_path);
        goto done;
    }
    if (writer && opt.save && model_save(opt.save, &t.net, t.params, &cfg, &err)) goto fail;
    if (writer && opt.profile) {
        char table[16384];
        int len = profile_csv(table, sizeof table, t.threads);
        if (len < 0 || write_file_atomic(opt.profile, table, (size_t)len, &err)) goto fail;
    }
    exit_code = EXIT_OK;
    goto done;
out_of_memory:
    errorf(&err, "out of memory");
    exit_code = EXIT_RUNTIME;
fail:
    if (setting_up && d.size > 1) {
        /* The first process to fail tells why; all exit with its code. */
        int code = dist_agree(&d, exit_code, &who);
        if (who == d.rank) print_error(&d, &err);
        exit_code = code;
    } else if (d.size > 1 && exit_code != EXIT_DIVERGED && exit_code < 128) {
        /* Not an end every process reaches together (divergence, an interruption without a
         * checkpoint path): this one alone failed. */
        fail_job(&d, &err, exit_code);
    } else if (writer) {
        print_error(&d, &err);
    }
done:
    free(csv);
    trainer_close(&t);
    dataset_free(&train);
    dataset_free(&test);
    config_free(&cfg);
    checkpoint_meta_free(&meta);
    free(opt.overrides);
    dist_finalize(&d);
    return exit_code;
}
