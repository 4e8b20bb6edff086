/*
 * `trainer eval` and `trainer predict`: use trained parameters without training.
 *
 *   trainer eval [CONFIG.json] --load FILE.npz [--csv CONFUSION.csv] [--set ...] [--threads N]
 *   trainer predict --load FILE.npz [--config CONFIG.json] INPUT...
 *
 * A parameter file written by --save or a checkpoint carries its config and input shape, so the
 * config may be left out; a bare parameter file needs it.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ompcnn/config.h"
#include "ompcnn/data.h"
#include "ompcnn/npz.h"
#include "ompcnn/pgm.h"
#include "ompcnn/train.h"
#include "fileio.h"

int check_output_dir(const char *option, const char *path, errbuf *err) {
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

int threads_option(const char *program, const char *value, char *buf, size_t size) {
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || v < 0 || v > 1024 || errno) {
        fprintf(stderr, "%s: --threads: expected an integer from 0 to 1024, got %s\n", program,
                value);
        return -1;
    }
    snprintf(buf, size, "training.threads=%ld", v);
    return 0;
}

typedef struct tool_options {
    const char *load, *config, *csv;
    const char **overrides;
    int n_overrides;
    char threads_override[64];
    int first_input; /* index of the first positional argument */
} tool_options;

/* Parses the options shared by eval and predict; 0 to go on, else exit code + 1. */
static int parse_tool_args(int argc, char **argv, const char *usage, tool_options *opt) {
    static const struct option longopts[] = {
        {"load", required_argument, NULL, 'l'},    {"config", required_argument, NULL, 'c'},
        {"csv", required_argument, NULL, 'v'},     {"set", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    opt->overrides = calloc((size_t)argc + 1, sizeof *opt->overrides);
    if (!opt->overrides) return EXIT_RUNTIME + 1;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'l': opt->load = optarg; break;
        case 'c': opt->config = optarg; break;
        case 'v': opt->csv = optarg; break;
        case 's': opt->overrides[opt->n_overrides++] = optarg; break;
        case 't': {
            char program[64];
            snprintf(program, sizeof program, "trainer %s", argv[0]);
            if (threads_option(program, optarg, opt->threads_override,
                               sizeof opt->threads_override))
                return EXIT_INPUT + 1;
            opt->overrides[opt->n_overrides++] = opt->threads_override;
            break;
        }
        case 'h': fputs(usage, stdout); return EXIT_OK + 1;
        default:
            fprintf(stderr, "trainer %s: unknown or incomplete option %s\n%s", argv[0],
                    argv[optind - 1], usage);
            return EXIT_INPUT + 1;
        }
    }
    if (!opt->load) {
        fprintf(stderr, "trainer %s: --load FILE.npz is required\n%s", argv[0], usage);
        return EXIT_INPUT + 1;
    }
    opt->first_input = optind;
    return 0;
}

/* The config: from a file if given, else the one the parameter file carries, its relative paths
 * resolved against the folder recorded with it. */
static int load_config(config *cfg, const char *config_path, const char *load,
                       const char *const *overrides, int n_overrides, errbuf *err) {
    if (config_path) return config_load(cfg, config_path, overrides, n_overrides, err);
    char *text = NULL, *model = NULL;
    size_t size;
    int missing = npz_read_member(load, "config.json", &text, &size, err);
    if (missing == 0) missing = npz_read_member(load, "model.json", &model, &size, err);
    if (missing) {
        free(text);
        if (missing > 0)
            errorf(err, "%s: carries no config (a bare parameter file); give the config file too",
                   load);
        return -1;
    }
    cJSON *json = cJSON_Parse(model);
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(json, "base_dir");
    int rc = cJSON_IsString(base)
                 ? config_parse_text(cfg, text, load, base->valuestring, overrides, n_overrides, err)
                 : errorf(err, "%s: model.json is damaged", load);
    cJSON_Delete(json);
    free(text);
    free(model);
    return rc;
}

static const char eval_usage[] =
    "Usage: trainer eval [CONFIG.json] --load FILE.npz [--csv FILE.csv] [--set PATH=VALUE]\n"
    "                    [--threads N]\n"
    "Evaluate saved parameters on the config's test set: loss, accuracy, per-class accuracy\n"
    "and the confusion matrix (--csv writes it as CSV). Without CONFIG.json, the config saved in\n"
    "FILE.npz (by --save or a checkpoint) is used.\n";

int cmd_eval(int argc, char **argv) {
    tool_options opt = {0};
    int rc = parse_tool_args(argc, argv, eval_usage, &opt);
    if (rc) {
        free(opt.overrides);
        return rc - 1;
    }
    if (argc - opt.first_input > 1) {
        fprintf(stderr, "trainer eval: expected at most one config file\n%s", eval_usage);
        free(opt.overrides);
        return EXIT_INPUT;
    }
    const char *config_path = argc - opt.first_input == 1 ? argv[opt.first_input] : NULL;
    errbuf err;
    config cfg = {0};
    dataset test = {0};
    trainer t = {0};
    int *predicted = NULL;
    long *confusion = NULL;
    int exit_code = EXIT_INPUT;
    if (load_config(&cfg, config_path, opt.load, opt.overrides, opt.n_overrides, &err)) goto fail;
    if (!cfg.has_test) {
        errorf(&err, "%s: data.test: missing, eval needs a test set", cfg.file);
        goto fail;
    }
    if (check_output_dir("--csv", opt.csv, &err)) goto fail;
    if (dataset_load(&test, cfg.test.images, cfg.test.labels, cfg.test.limit, 256, &err) ||
        trainer_open(&t, &cfg, &test, &test, &err) ||
        dataset_check_labels(&test, cfg.test.labels, t.net.n_classes, &err) ||
        params_load(opt.load, &t.net, t.params, &err))
        goto fail;
    const int k = t.net.n_classes;
    predicted = malloc((size_t)test.n * sizeof *predicted);
    confusion = calloc((size_t)k * k, sizeof *confusion);
    if (!predicted || !confusion) {
        errorf(&err, "out of memory");
        exit_code = EXIT_RUNTIME;
        goto fail;
    }
    double loss, acc;
    trainer_classify(&t, &test, predicted, &loss, &acc);
    for (int i = 0; i < test.n; i++) confusion[(size_t)test.labels[i] * k + predicted[i]]++;

    printf("eval %s on %d test images (%s)\n", opt.load, test.n, cfg.test.images);
    printf("test_loss %.6f  test_acc %.4f\n\n", loss, acc);
    printf("class  images  accuracy\n");
    for (int c = 0; c < k; c++) {
        long row = 0;
        for (int p = 0; p < k; p++) row += confusion[(size_t)c * k + p];
        if (row)
            printf("%5d  %6ld  %8.4f\n", c, row, (double)confusion[(size_t)c * k + c] / row);
        else
            printf("%5d  %6ld  %8s\n", c, row, "-");
    }
    printf("\nconfusion matrix (rows: true class, columns: predicted class)\n%5s", "");
    for (int p = 0; p < k; p++) printf(" %6d", p);
    printf("\n");
    for (int c = 0; c < k; c++) {
        printf("%5d", c);
        for (int p = 0; p < k; p++) printf(" %6ld", confusion[(size_t)c * k + p]);
        printf("\n");
    }
    exit_code = EXIT_RUNTIME;
    if (opt.csv) {
        size_t cap = (size_t)(k + 1) * (k + 1) * 12 + 64, len = 0;
        char *text = malloc(cap);
        if (!text) {
            errorf(&err, "out of memory");
            goto fail;
        }
        len += (size_t)snprintf(text + len, cap - len, "true\\predicted");
        for (int p = 0; p < k; p++) len += (size_t)snprintf(text + len, cap - len, ",%d", p);
        len += (size_t)snprintf(text + len, cap - len, "\n");
        for (int c = 0; c < k; c++) {
            len += (size_t)snprintf(text + len, cap - len, "%d", c);
            for (int p = 0; p < k; p++)
                len += (size_t)snprintf(text + len, cap - len, ",%ld", confusion[(size_t)c * k + p]);
            len += (size_t)snprintf(text + len, cap - len, "\n");
        }
        int wrc = write_file_atomic(opt.csv, text, len, &err);
        free(text);
        if (wrc) goto fail;
    }
    exit_code = EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "trainer eval: %s\n", err.msg);
done:
    free(predicted);
    free(confusion);
    trainer_close(&t);
    dataset_free(&test);
    config_free(&cfg);
    free(opt.overrides);
    return exit_code;
}

static const char predict_usage[] =
    "Usage: trainer predict --load FILE.npz [--config CONFIG.json] INPUT...\n"
    "Classify images with saved parameters. INPUT is a PGM image (P2 or P5) of the network's\n"
    "input size, or an IDX image file (every image in it). Prints the predicted class and the\n"
    "probability of each class per image. Without --config, the config saved in FILE.npz (by\n"
    "--save or a checkpoint) is used.\n";

/* Reads the input shape the parameters were trained on from model.json, or from the
 * config's training images. */
static int input_shape(const char *load, const config *cfg, shape3 *shape, errbuf *err) {
    char *text = NULL;
    size_t size;
    errbuf ignore;
    if (npz_read_member(load, "model.json", &text, &size, &ignore) == 0) {
        cJSON *json = cJSON_Parse(text);
        free(text);
        const cJSON *input = cJSON_GetObjectItemCaseSensitive(json, "input");
        int ok = cJSON_GetArraySize(input) == 3;
        int dims[3] = {0, 0, 0};
        for (int d = 0; ok && d < 3; d++) {
            const cJSON *v = cJSON_GetArrayItem(input, d);
            ok = cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= 4096;
            if (ok) dims[d] = (int)v->valuedouble;
        }
        cJSON_Delete(json);
        if (!ok) return errorf(err, "%s: model.json is damaged", load);
        *shape = (shape3){dims[0], dims[1], dims[2]};
        return 0;
    }
    dataset train;
    if (dataset_load(&train, cfg->train.images, cfg->train.labels, 1, 256, err)) return -1;
    *shape = (shape3){train.h, train.w, train.c};
    dataset_free(&train);
    return 0;
}

static void print_prediction(const char *name, long index, const net *n, const workspace *ws,
                             int s) {
    const float *probs = net_probs(n, ws, s);
    const int k = n->n_classes, best = net_class(n, ws, s);
    if (index < 0) printf("%s: class %d  p", name, best);
    else printf("%s[%ld]: class %d  p", name, index, best);
    for (int c = 0; c < k; c++) printf(" %.4f", probs[c]);
    printf("\n");
}

int cmd_predict(int argc, char **argv) {
    tool_options opt = {0};
    int rc = parse_tool_args(argc, argv, predict_usage, &opt);
    if (rc) {
        free(opt.overrides);
        return rc - 1;
    }
    errbuf err;
    config cfg = {0};
    net n = {0};
    workspace ws = {0};
    float *params = NULL;
    int *starts = NULL;
    int exit_code = EXIT_INPUT;
    if (opt.first_input >= argc) {
        fprintf(stderr, "trainer predict: no input images\n%s", predict_usage);
        free(opt.overrides);
        return EXIT_INPUT;
    }
    shape3 shape;
    if (load_config(&cfg, opt.config, opt.load, opt.overrides, opt.n_overrides, &err) ||
        input_shape(opt.load, &cfg, &shape, &err) || net_build(&n, &cfg, shape, &err))
        goto fail;
    /* The images of an IDX file go through in passes over all threads, each image a lane of its
     * own, so each is classified exactly as it would be alone. */
    const int threads = cfg.threads > 0 ? cfg.threads : omp_get_max_threads();
    const int pass = 8 * threads;
    starts = malloc(((size_t)pass + 1) * sizeof *starts);
    for (int i = 0; starts && i <= pass; i++) starts[i] = i;
    params = floats_alloc(n.n_params);
    if (!params || !starts || workspace_alloc(&ws, &n, pass, 0, threads, &err)) {
        errorf(&err, "out of memory");
        exit_code = EXIT_RUNTIME;
        goto fail;
    }
    if (params_load(opt.load, &n, params, &err)) goto fail;
    const size_t in_size = shape_size(shape);
    for (int a = opt.first_input; a < argc; a++) {
        const char *path = argv[a];
        FILE *f = fopen(path, "rb");
        int is_pgm = 0;
        if (f) {
            is_pgm = fgetc(f) == 'P';
            fclose(f);
        }
        if (is_pgm) {
            uint8_t *px;
            int w, h;
            if (pgm_load(path, &px, &w, &h, &err)) goto fail;
            if (h != shape.h || w != shape.w || shape.c != 1) {
                errorf(&err, "%s: a %dx%d image, the network takes %dx%dx%d", path, w, h,
                       shape.w, shape.h, shape.c);
                free(px);
                goto fail;
            }
            float *input = workspace_input(&ws);
            for (size_t i = 0; i < in_size; i++) input[i] = (float)px[i] / 255.0f;
            free(px);
            ws.cut = (lane_cut){0, NULL, 0};
            net_forward(&n, params, &ws, 1, threads);
            print_prediction(path, -1, &n, &ws, 0);
            continue;
        }
        idx_array images;
        if (idx_load(&images, path, &err)) goto fail;
        uint32_t c = images.ndim == 4 ? images.dims[3] : 1;
        if ((images.ndim != 3 && images.ndim != 4) || images.dims[1] != (uint32_t)shape.h ||
            images.dims[2] != (uint32_t)shape.w || c != (uint32_t)shape.c) {
            errorf(&err, "%s: not images of the network's input shape %dx%dx%d", path, shape.h,
                   shape.w, shape.c);
            idx_free(&images);
            goto fail;
        }
        for (uint32_t i0 = 0; i0 < images.dims[0]; i0 += (uint32_t)pass) {
            const int count = images.dims[0] - i0 < (uint32_t)pass ? (int)(images.dims[0] - i0)
                                                                   : pass;
            float *input = workspace_input(&ws);
            for (size_t k = 0; k < (size_t)count * in_size; k++)
                input[k] = (float)images.data[(size_t)i0 * in_size + k] / 255.0f;
            ws.cut = (lane_cut){count, starts, 0};
            net_forward(&n, params, &ws, count, threads);
            for (int s = 0; s < count; s++) print_prediction(path, (long)(i0 + s), &n, &ws, s);
        }
        idx_free(&images);
    }
    exit_code = EXIT_OK;
    goto done;
fail:
    fprintf(stderr, "trainer predict: %s\n", err.msg);
done:
    aligned_free(params);
    free(starts);
    workspace_free(&ws);
    net_free(&n);
    config_free(&cfg);
    free(opt.overrides);
    return exit_code;
}
