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
#include "ompcnn/run.h"
#include "ompcnn/train.h"
#include "profile.h"
#include "fileio.h"

static const char usage_text[] =
    "Usage: trainer [OPTIONS] CONFIG.json\n"
    "       trainer [OPTIONS] --resume CHECKPOINT.npz\n"
    "       trainer eval [CONFIG.json] --load FILE.npz [--csv FILE.csv]\n"
    "       trainer predict --load FILE.npz [--config CONFIG.json] IMAGE.png|.pgm|IMAGES.idx...\n"
    "       trainer export --load FILE.npz [--onnx MODEL.onnx] [--c MODEL.c] [--name NAME]\n"
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
    "  --max-memory SIZE  refuse a run that would need more memory than SIZE (like 8G or\n"
    "                     512M) instead of more than the machine has available\n"
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

/* The command line: the run's files (run.h) and the array the --set overrides go into. */
typedef struct options {
    run_files files;
    const char **overrides;
} options;

/* Returns 0 to continue, or an exit code + 1 (so 1 means exit 0). */
static int parse_args(int argc, char **argv, options *opt, char *threads_override) {
    static const struct option longopts[] = {
        {"set", required_argument, NULL, 's'},       {"threads", required_argument, NULL, 't'},
        {"load", required_argument, NULL, 'l'},      {"save", required_argument, NULL, 'o'},
        {"save-init", required_argument, NULL, 'i'}, {"metrics", required_argument, NULL, 'm'},
        {"resume", required_argument, NULL, 'r'},    {"checkpoint", required_argument, NULL, 'c'},
        {"save-best", required_argument, NULL, 'b'}, {"profile", required_argument, NULL, 'p'},
        {"max-memory", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},            {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    opt->overrides = calloc((size_t)argc + 1, sizeof *opt->overrides);
    if (!opt->overrides) {
        fprintf(stderr, "trainer: out of memory\n");
        return EXIT_RUNTIME + 1;
    }
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hV", longopts, NULL)) != -1) {
        switch (c) {
        case 's': opt->overrides[opt->files.n_overrides++] = optarg; break;
        case 't':
            if (threads_option(optarg, threads_override, 64)) return EXIT_INPUT + 1;
            opt->overrides[opt->files.n_overrides++] = threads_override;
            break;
        case 'l': opt->files.load = optarg; break;
        case 'o': opt->files.save = optarg; break;
        case 'i': opt->files.save_init = optarg; break;
        case 'm': opt->files.metrics = optarg; break;
        case 'r': opt->files.resume = optarg; break;
        case 'c': opt->files.checkpoint = optarg; break;
        case 'b': opt->files.save_best = optarg; break;
        case 'p': opt->files.profile = optarg; break;
        case 'M':
            if (size_option(optarg, &opt->files.max_memory)) return EXIT_INPUT + 1;
            break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK + 1;
        case 'V': printf("trainer (ompcnn) %s\n", OMPCNN_VERSION); return EXIT_OK + 1;
        default:
            option_error("", c, argv[optind - 1]);
            return EXIT_INPUT + 1;
        }
    }
    if (opt->files.resume && argc - optind != 0) {
        fprintf(stderr, "trainer: --resume continues a run with the config saved in its "
                        "checkpoint; give no config file\n");
        return EXIT_INPUT + 1;
    }
    if (opt->files.resume && (opt->files.load || opt->files.save_init)) {
        fprintf(stderr, "trainer: --resume takes the parameters from the checkpoint; it cannot "
                        "go with --load or --save-init\n");
        return EXIT_INPUT + 1;
    }
    if (!opt->files.resume && argc - optind != 1) {
        fprintf(stderr, "trainer: %s (see trainer --help)\n",
                argc - optind == 0 ? "missing the config file"
                                   : "expected exactly one config file");
        return EXIT_INPUT + 1;
    }
    opt->files.config = opt->files.resume ? NULL : argv[optind];
    opt->files.overrides = opt->overrides;
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

/* ---- what a run reports: a progress bar on a terminal, and a line per epoch ---- */

typedef struct reporter {
    int show_progress; /* stderr is a terminal, and this process speaks */
    int epochs;
    double start; /* when the epoch being trained began */
} reporter;

static void on_progress(void *ctx, int epoch, int done, int total) {
    reporter *rep = ctx;
    static double last;
    if (!rep->show_progress) return;
    double now = omp_get_wtime();
    if (done < total && now - last < 0.1) return;
    last = now;
    int width = 30, filled = (int)((long)width * done / total);
    fprintf(stderr, "\r  epoch %d/%d [%.*s%*s] %d/%d  %.0f img/s ", epoch + 1, rep->epochs,
            filled, "##############################", width - filled, "", done, total,
            done / (now - rep->start + 1e-9));
    if (done == total) fprintf(stderr, "\r%*s\r", 78, "");
    fflush(stderr);
}

static void on_loading(void *ctx, const char *what, long done, long total) {
    const reporter *rep = ctx;
    if (!rep->show_progress) return;
    if (done < total) fprintf(stderr, "\r  %s: decoded %ld of %ld images ", what, done, total);
    else fprintf(stderr, "\r%*s\r", 60, "");
    fflush(stderr);
}

static int on_stop(void *ctx) {
    (void)ctx;
    return stop_signal != 0;
}

static void on_epoch(void *ctx, const char *line) {
    reporter *rep = ctx;
    if (!ferror(stdout)) { /* once stdout is closed, nothing more is printed */
        fputs(line, stdout);
        fflush(stdout);
    }
    rep->start = omp_get_wtime(); /* the next epoch begins */
}

static void print_header(const run *r, const options *opt, const dist *d) {
    const config *cfg = &r->cfg;
    char shape[1024], procs[48] = "";
    net_describe(&r->t.net, shape, sizeof shape);
    if (d->size > 1) snprintf(procs, sizeof procs, " x %d processes", d->size);
    printf("ompcnn %s | config %s | seed %u | threads %d%s | batch %d | lr %g | init %s\n",
           OMPCNN_VERSION, opt->files.resume ? cfg->file : opt->files.config, cfg->seed, r->t.threads,
           procs, cfg->batch_size, cfg->learning_rate,
           opt->files.resume ? opt->files.resume : opt->files.load ? opt->files.load : init_names[cfg->init]);
    printf("network %s\n", shape);
    printf("train %d images, test %d images\n", r->train.n, cfg->has_test ? r->test.n : 0);
    /* Folders of PNG files take a while to decode: how long, and how fast. */
    const dataset *sets[2] = {&r->train, &r->test};
    const split_config *splits[2] = {&cfg->train, &cfg->test};
    for (int k = 0; k < 1 + cfg->has_test; k++)
        if (splits[k]->format == DATA_FOLDER) {
            const int n = sets[k]->n + (k == 0 ? r->validation.n : 0);
            printf("data.%s: %d PNG files decoded in %.2f s (%.0f images/s, %d threads)\n",
                   k ? "test" : "train", n, r->load_seconds[k],
                   n / (r->load_seconds[k] > 0 ? r->load_seconds[k] : 1e-9), r->t.threads);
        }
    if (opt->files.resume)
        printf("resumed from %s at epoch %d, sample %d of its order\n", opt->files.resume,
               r->first_epoch + 1, r->t.pos.position);
    fflush(stdout);
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

/* Sets the run up: config, output folders, data, trainer, --save-init. Returns 0 or the exit
 * code. */
static int set_up(run *r, const options *opt, dist *d, const run_hooks *hooks, errbuf *err) {
    if (run_config(r, &opt->files, d, err)) return err->code;
    const config *cfg = &r->cfg;
    const char *test_images = cfg->has_test ? cfg->test.images : NULL;
    const char *test_labels = cfg->has_test ? cfg->test.labels : NULL;
    const file_use uses[] = {
        {"the config file", opt->files.config, 0, 0},
        {"--resume", opt->files.resume, 0, 1},
        {"--load", opt->files.load, 0, 0},
        {"the training images", cfg->train.images, 0, 0},
        {"the training labels", cfg->train.labels, 0, 0},
        {"the test images", test_images, 0, 0},
        {"the test labels", test_labels, 0, 0},
        {"--save", opt->files.save, 1, 0},
        {"--save-init", opt->files.save_init, 1, 0},
        {"--save-best", opt->files.save_best, 1, 0},
        {"--metrics", opt->files.metrics, 1, 0},
        {"--profile", opt->files.profile, 1, 0},
        {opt->files.checkpoint ? "--checkpoint" : "training.checkpoint.path", cfg->checkpoint_path, 1,
         1},
    };
    if (check_file_uses(uses, (int)(sizeof uses / sizeof uses[0]), err)) return err->code;
    int rc = run_load(r, hooks, err);
    if (rc) return rc;
    return run_save_init(r, err) ? EXIT_RUNTIME : 0;
}

/* The exit code of a run that trained until `end`, after saying what there is to say. */
static int finish(run *r, run_end end, const dist *d, errbuf *err) {
    if (end == RUN_FINISHED && run_finish(r, err)) end = RUN_FAILED;
    switch (end) {
    case RUN_FINISHED: return EXIT_OK;
    case RUN_DIVERGED: /* every process diverges at the same step */
        if (r->writer) print_error(d, err);
        return EXIT_DIVERGED;
    case RUN_FAILED: /* this process alone failed; with others, the whole job ends */
        if (d->size > 1) fail_job(d, err, EXIT_RUNTIME);
        print_error(d, err);
        return EXIT_RUNTIME;
    case RUN_STOPPED: break;
    }
    /* Stopped by a signal (with several processes, perhaps another process's). */
    const int sig = stop_signal ? stop_signal : SIGTERM;
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    if (!r->writer) return 128 + sig;
    if (r->checkpoint_written)
        fprintf(stderr, "trainer: interrupted (%s); checkpoint written to %s (continue with "
                "--resume %s)\n", name, r->cfg.checkpoint_path, r->cfg.checkpoint_path);
    else
        fprintf(stderr, "trainer: interrupted (%s); no checkpoint path is set, so nothing was "
                "saved\n", name);
    return 128 + sig;
}

int main(int argc, char **argv) {
    /* A closed stdout (trainer ... | head) stops the printing, not the run: writes to it fail
     * instead of killing the process, and the run still writes its files. */
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "predict") == 0) return cmd_predict(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "export") == 0) return cmd_export(argc - 1, argv + 1);
    errbuf err;
    dist d;
    if (dist_init(&d, &argc, &argv, &err)) {
        if (d.rank == 0) fprintf(stderr, "trainer: %s\n", err.msg);
        return d.mpi || dist_built_with_mpi() ? EXIT_RUNTIME : EXIT_INPUT;
    }
    /* Only process 0 speaks; the others' command-line messages would repeat its own. */
    int saved_stderr = -1;
    if (d.rank != 0) {
        fflush(stderr);
        saved_stderr = dup(STDERR_FILENO);
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
            dist_abort(&d, EXIT_RUNTIME);
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
    run r;
    reporter rep = {d.rank == 0 && isatty(STDERR_FILENO), 0, 0.0};
    const run_hooks hooks = {&rep, on_progress, on_stop, on_epoch, on_loading};
    int who, exit_code = set_up(&r, &opt, &d, &hooks, &err);
    /* Every process is ready, or all exit with the code of the first that is not (it says why). */
    const int agreed = dist_agree(&d, exit_code, &who);
    if (agreed) {
        if (who == d.rank) print_error(&d, &err);
        exit_code = agreed;
    } else {
        install_signal_handlers(); /* before the header: from then on a signal means a checkpoint */
        print_header(&r, &opt, &d);
        rep.epochs = r.cfg.epochs;
        rep.start = omp_get_wtime();
        exit_code = finish(&r, run_train(&r, &hooks, &err), &d, &err);
    }
    run_close(&r);
    free(opt.overrides);
    dist_finalize(&d);
    return exit_code;
}
