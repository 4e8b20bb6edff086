/*
 * The trainer's command line: read the config, load the data, build and train the network,
 * print one line per epoch, and write the metrics and parameter files asked for. Errors from
 * below arrive as messages; this is the only place that prints them and picks the exit code
 * (docs/cli.md lists the codes).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ompcnn/config.h"
#include "ompcnn/idx.h"
#include "ompcnn/npz.h"
#include "ompcnn/train.h"

static const char usage_text[] =
    "Usage: trainer [OPTIONS] CONFIG.json\n"
    "Train the convolutional network described by CONFIG.json on all cores.\n"
    "\n"
    "Options:\n"
    "  --set PATH=VALUE   override a config value (VALUE is JSON, or else a string);\n"
    "                     PATH like training.epochs or network[0].filters; repeatable\n"
    "  --threads N        threads to use (same as --set training.threads=N; 0 = all cores)\n"
    "  --load FILE.npz    start from saved parameters instead of the config's init\n"
    "  --save FILE.npz    write the trained parameters (numpy .npz) at the end\n"
    "  --save-init FILE.npz  write the initial parameters before training\n"
    "  --metrics FILE.csv write the per-epoch figures as CSV (rewritten after each epoch)\n"
    "  -h, --help         show this help and exit\n"
    "  -V, --version      show the version and exit\n"
    "\n"
    "Exit status: 0 success, 1 a file could not be written or memory ran out,\n"
    "2 bad command line, config, data or parameter file, 3 training diverged (NaN).\n"
    "Config reference: docs/config.md\n";

typedef struct options {
    const char *config_path;
    const char *load, *save, *save_init, *metrics;
    const char **overrides;
    int n_overrides;
} options;

/* Returns 0 to continue, or an exit code + 1 (so 1 means exit 0). */
static int parse_args(int argc, char **argv, options *opt, char *threads_override) {
    static const struct option longopts[] = {
        {"set", required_argument, NULL, 's'},       {"threads", required_argument, NULL, 't'},
        {"load", required_argument, NULL, 'l'},      {"save", required_argument, NULL, 'o'},
        {"save-init", required_argument, NULL, 'i'}, {"metrics", required_argument, NULL, 'm'},
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
        case 't': {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || v < 0 || v > 1024 || errno) {
                fprintf(stderr, "trainer: --threads: expected an integer from 0 to 1024, got %s\n",
                        optarg);
                return EXIT_INPUT + 1;
            }
            snprintf(threads_override, 64, "training.threads=%ld", v);
            opt->overrides[opt->n_overrides++] = threads_override;
            break;
        }
        case 'l': opt->load = optarg; break;
        case 'o': opt->save = optarg; break;
        case 'i': opt->save_init = optarg; break;
        case 'm': opt->metrics = optarg; break;
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
    if (argc - optind != 1) {
        fprintf(stderr, "trainer: %s\nTry 'trainer --help'.\n",
                argc - optind == 0 ? "missing the config file" : "expected exactly one config file");
        return EXIT_INPUT + 1;
    }
    opt->config_path = argv[optind];
    return 0;
}

/* Fails early, before any training, when an output file's folder does not exist. */
static int check_output_dir(const char *option, const char *path, errbuf *err) {
    if (!path) return 0;
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path) > 0 ? (int)(slash - path) : 1, path);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return errorf(err, "%s %s: the folder %s does not exist", option, path, dir);
    if (access(dir, W_OK) != 0)
        return errorf(err, "%s %s: the folder %s is not writable", option, path, dir);
    return 0;
}

typedef struct progress_state {
    int epoch, epochs;
    double start;
} progress_state;

static void progress_bar(void *ctx, int done, int total) {
    progress_state *ps = ctx;
    static double last;
    double now = omp_get_wtime();
    if (done < total && now - last < 0.1) return;
    last = now;
    int width = 30, filled = (int)((long)width * done / total);
    fprintf(stderr, "\r  epoch %d/%d [%.*s%*s] %d/%d  %.0f img/s ", ps->epoch, ps->epochs,
            filled, "##############################", width - filled, "", done, total,
            done / (now - ps->start + 1e-9));
    if (done == total) fprintf(stderr, "\r%*s\r", 78, "");
    fflush(stderr);
}

static void fmt_metric(char *buf, size_t size, const char *fmt, double v, const char *missing) {
    if (isnan(v)) snprintf(buf, size, "%s", missing);
    else snprintf(buf, size, fmt, v);
}

int main(int argc, char **argv) {
    options opt = {0};
    char threads_override[64];
    int rc = parse_args(argc, argv, &opt, threads_override);
    if (rc) {
        free(opt.overrides);
        return rc - 1;
    }
    errbuf err;
    config cfg;
    dataset train = {0}, test = {0};
    trainer t = {0};
    char *csv = NULL;
    size_t csv_len = 0, csv_cap = 0;
    int exit_code = EXIT_INPUT;

    if (config_load(&cfg, opt.config_path, opt.overrides, opt.n_overrides, &err)) {
        fprintf(stderr, "trainer: %s\n", err.msg);
        free(opt.overrides);
        return EXIT_INPUT;
    }
    if (check_output_dir("--save", opt.save, &err) ||
        check_output_dir("--save-init", opt.save_init, &err) ||
        check_output_dir("--metrics", opt.metrics, &err))
        goto fail;
    /* Labels are checked against the softmax size once the net is built (it needs the data's
     * image shape first); 256 admits any byte for now. */
    if (dataset_load(&train, cfg.train.images, cfg.train.labels, cfg.train.limit, 256, &err))
        goto fail;
    if (cfg.has_test &&
        dataset_load(&test, cfg.test.images, cfg.test.labels, cfg.test.limit, 256, &err))
        goto fail;
    if (trainer_open(&t, &cfg, &train, cfg.has_test ? &test : NULL, &err)) goto fail;
    if (dataset_check_labels(&train, cfg.train.labels, t.net.n_classes, &err) ||
        (cfg.has_test && dataset_check_labels(&test, cfg.test.labels, t.net.n_classes, &err)))
        goto fail;
    if (opt.load && params_load(opt.load, &t.net, t.params, &err)) goto fail;
    exit_code = EXIT_RUNTIME;
    if (opt.save_init && params_save(opt.save_init, &t.net, t.params, &err)) goto fail;

    char shape[1024];
    net_describe(&t.net, shape, sizeof shape);
    static const char *const init_names[] = {"report", "he", "xavier"};
    printf("ompcnn %s | config %s | seed %u | threads %d | batch %d | lr %g | init %s\n",
           OMPCNN_VERSION, opt.config_path, cfg.seed, t.threads, cfg.batch_size,
           cfg.learning_rate, opt.load ? opt.load : init_names[cfg.init]);
    printf("network %s\n", shape);
    printf("train %d images, test %d images\n", train.n, cfg.has_test ? test.n : 0);
    fflush(stdout);

    progress_state ps = {0, cfg.epochs, 0};
    if (isatty(STDERR_FILENO)) {
        t.progress = progress_bar;
        t.progress_ctx = &ps;
    }
    static const char csv_header[] =
        "epoch,train_loss,train_acc,test_loss,test_acc,seconds,images_per_s\n";
    for (int epoch = 0; epoch < cfg.epochs; epoch++) {
        ps.epoch = epoch + 1;
        ps.start = omp_get_wtime();
        epoch_stats st;
        trainer_epoch(&t, epoch, &st);
        if (st.diverged) {
            if (st.diverged_layer < 0)
                errorf(&err, "training diverged at epoch %d, step %d: the loss is not finite "
                       "(lower training.learning_rate?); nothing was saved",
                       epoch + 1, st.diverged_step);
            else
                errorf(&err, "training diverged at epoch %d, step %d: %s (%s) has a NaN or "
                       "infinite weight (lower training.learning_rate?); nothing was saved",
                       epoch + 1, st.diverged_step, cfg.layers[st.diverged_layer].path,
                       t.net.layers[st.diverged_layer].ops->type);
            exit_code = EXIT_DIVERGED;
            goto fail;
        }
        double ips = train.n / (st.train_seconds > 0 ? st.train_seconds : 1e-9);
        char tl[32], ta[32];
        fmt_metric(tl, sizeof tl, "%.6f", st.test_loss, "-");
        fmt_metric(ta, sizeof ta, "%.4f", st.test_acc, "-");
        printf("epoch %*d/%d  train_loss %.6f  train_acc %.4f  test_loss %s  test_acc %s  "
               "%.2f s  %.0f img/s\n",
               (int)strlen("1000000") - 5, epoch + 1, cfg.epochs, st.train_loss, st.train_acc, tl,
               ta, st.seconds, ips);
        fflush(stdout);
        if (opt.metrics) {
            char line[256];
            fmt_metric(tl, sizeof tl, "%.9g", st.test_loss, "");
            fmt_metric(ta, sizeof ta, "%.6g", st.test_acc, "");
            int len = snprintf(line, sizeof line, "%s%d,%.9g,%.6g,%s,%s,%.4f,%.1f\n",
                               epoch == 0 ? csv_header : "", epoch + 1, st.train_loss,
                               st.train_acc, tl, ta, st.seconds, ips);
            if (csv_len + (size_t)len + 1 > csv_cap) {
                csv_cap = (csv_cap + (size_t)len + 1) * 2;
                char *grown = realloc(csv, csv_cap);
                if (!grown) {
                    errorf(&err, "out of memory");
                    goto fail;
                }
                csv = grown;
            }
            memcpy(csv + csv_len, line, (size_t)len + 1);
            csv_len += (size_t)len;
            if (write_file_atomic(opt.metrics, csv, csv_len, &err)) goto fail;
        }
    }
    if (opt.save && params_save(opt.save, &t.net, t.params, &err)) goto fail;
    exit_code = EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "trainer: %s\n", err.msg);
done:
    free(csv);
    trainer_close(&t);
    dataset_free(&train);
    dataset_free(&test);
    config_free(&cfg);
    free(opt.overrides);
    return exit_code;
}
