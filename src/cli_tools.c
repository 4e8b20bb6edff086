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
#include "ompcnn/export.h"
#include "ompcnn/npz.h"
#include "ompcnn/pgm.h"
#include "ompcnn/png.h"
#include "ompcnn/run.h"
#include "ompcnn/train.h"
#include "fileio.h"

int threads_option(const char *value, char *buf, size_t size) {
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || v < 0 || v > 1024 || errno) {
        fprintf(stderr, "trainer: --threads: expected an integer from 0 to 1024, got %s\n", value);
        return -1;
    }
    snprintf(buf, size, "training.threads=%ld", v);
    return 0;
}

int size_option(const char *value, double *bytes) {
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    double unit = 1;
    if (*end && end[1] == '\0' && strchr("kKmMgGtT", *end)) {
        const char *units = "kmgt";
        for (const char *u = units; *u; u++) {
            unit *= 1024;
            if ((*end | 0x20) == *u) break;
        }
        end++;
    }
    if (end == value || *end != '\0' || errno || !(v > 0) || v * unit > 1e18) {
        fprintf(stderr, "trainer: --max-memory: expected a size like 8G, 512M or 1000000 (bytes), "
                        "got %s\n", value);
        return -1;
    }
    *bytes = v * unit;
    return 0;
}

void option_error(const char *command, int c, const char *arg) {
    /* getopt_long leaves the option as written in the argument: "--save" or "--save=..." */
    const char *colon = command[0] ? ": " : "", *space = command[0] ? " " : "";
    fprintf(stderr, "trainer: %s%s%s %s (see trainer %s%s--help)\n", command, colon,
            c == ':' ? "this option needs a value:" : "unknown option", arg, command, space);
}

typedef struct tool_options {
    const char *load, *config, *csv;
    const char *onnx, *c_file, *name; /* export */
    int digits;                       /* predict: digits of each probability */
    const char **overrides;
    int n_overrides;
    char threads_override[64];
    int first_input; /* index of the first positional argument */
} tool_options;

/* Parses the options of eval, predict and export; `own` lists the option letters the command
 * takes besides --load, --set and --help (c config, v csv, t threads, o onnx, C c, n name,
 * d digits). 0 to go on, else exit code + 1. */
static int parse_tool_args(int argc, char **argv, const char *usage, const char *own,
                           tool_options *opt) {
    static const struct option longopts[] = {
        {"load", required_argument, NULL, 'l'},    {"config", required_argument, NULL, 'c'},
        {"csv", required_argument, NULL, 'v'},     {"set", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
        {"onnx", required_argument, NULL, 'o'},    {"c", required_argument, NULL, 'C'},
        {"name", required_argument, NULL, 'n'},    {"digits", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0}};
    opt->overrides = calloc((size_t)argc + 1, sizeof *opt->overrides);
    if (!opt->overrides) return EXIT_RUNTIME + 1;
    opt->digits = 4;
    int c;
    optind = 1;
    opterr = 0;
    int which = -1;
    while ((c = getopt_long(argc, argv, ":h", longopts, &which)) != -1) {
        if (c != ':' && c != '?' && !strchr("lsh", c) && !strchr(own, c)) {
            /* An option of another subcommand. */
            fprintf(stderr, "trainer: %s: unknown option --%s (see trainer %s --help)\n", argv[0],
                    longopts[which].name, argv[0]);
            return EXIT_INPUT + 1;
        }
        switch (c) {
        case 'o': opt->onnx = optarg; break;
        case 'C': opt->c_file = optarg; break;
        case 'n': opt->name = optarg; break;
        case 'd': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end || v < 1 || v > 9) {
                fprintf(stderr, "trainer: %s: --digits: expected an integer from 1 to 9, got %s\n",
                        argv[0], optarg);
                return EXIT_INPUT + 1;
            }
            opt->digits = (int)v;
            break;
        }
        case 'l': opt->load = optarg; break;
        case 'c': opt->config = optarg; break;
        case 'v': opt->csv = optarg; break;
        case 's': opt->overrides[opt->n_overrides++] = optarg; break;
        case 't':
            if (threads_option(optarg, opt->threads_override, sizeof opt->threads_override))
                return EXIT_INPUT + 1;
            opt->overrides[opt->n_overrides++] = opt->threads_override;
            break;
        case 'h': fputs(usage, stdout); return EXIT_OK + 1;
        default: option_error(argv[0], c, argv[optind - 1]); return EXIT_INPUT + 1;
        }
    }
    if (!opt->load) {
        fprintf(stderr, "trainer: %s: --load FILE.npz is required (see trainer %s --help)\n",
                argv[0], argv[0]);
        return EXIT_INPUT + 1;
    }
    opt->first_input = optind;
    return 0;
}


static const char eval_usage[] =
    "Usage: trainer eval [CONFIG.json] --load FILE.npz [--csv FILE.csv] [--set PATH=VALUE]\n"
    "                    [--threads N]\n"
    "Evaluate saved parameters on the config's test set: loss, accuracy, per-class accuracy\n"
    "and the confusion matrix (--csv writes it as CSV). Without CONFIG.json, the config saved in\n"
    "FILE.npz (by --save or a checkpoint) is used.\n";

/* Per-class accuracy and the confusion matrix of k classes (rows: true class); names may be
 * NULL. */
static void print_confusion(const long *confusion, int k, char *const *names) {
    printf("class  images  accuracy%s\n", names ? "  name" : "");
    for (int c = 0; c < k; c++) {
        long row = 0;
        for (int p = 0; p < k; p++) row += confusion[(size_t)c * k + p];
        if (row)
            printf("%5d  %6ld  %8.4f", c, row, (double)confusion[(size_t)c * k + c] / row);
        else
            printf("%5d  %6ld  %8s", c, row, "-");
        printf("%s%s\n", names ? "  " : "", names ? names[c] : "");
    }
    printf("\nconfusion matrix (rows: true class, columns: predicted class)\n%5s", "");
    for (int p = 0; p < k; p++) printf(" %6d", p);
    printf("\n");
    for (int c = 0; c < k; c++) {
        printf("%5d", c);
        for (int p = 0; p < k; p++) printf(" %6ld", confusion[(size_t)c * k + p]);
        printf("\n");
    }
}

/* A CSV field: the text, quoted when it holds a comma, a quote or a line break. */
static size_t csv_text(char *out, size_t cap, const char *text) {
    if (!strpbrk(text, ",\"\r\n")) return (size_t)snprintf(out, cap, "%s", text);
    size_t len = (size_t)snprintf(out, cap, "\"");
    for (const char *c = text; *c; c++)
        len += (size_t)snprintf(out + len, cap - len, *c == '"' ? "\"\"" : "%c", *c);
    return len + (size_t)snprintf(out + len, cap - len, "\"");
}

/* The confusion matrix as CSV, written atomically to path; the class names (if any) head its
 * rows and columns, else the class numbers. */
static int write_confusion(const char *path, const long *confusion, int k, char *const *names,
                           errbuf *err) {
    size_t cap = (size_t)(k + 1) * (k + 1) * 24 + 64, len = 0;
    for (int c = 0; names && c < k; c++) cap += 4 * strlen(names[c]) + 8;
    char *text = malloc(cap);
    if (!text) return oomf(err, "out of memory");
    len += (size_t)snprintf(text + len, cap - len, "true\\predicted");
    for (int p = 0; p < k; p++) {
        len += (size_t)snprintf(text + len, cap - len, ",");
        if (names) len += csv_text(text + len, cap - len, names[p]);
        else len += (size_t)snprintf(text + len, cap - len, "%d", p);
    }
    len += (size_t)snprintf(text + len, cap - len, "\n");
    for (int c = 0; c < k; c++) {
        if (names) len += csv_text(text + len, cap - len, names[c]);
        else len += (size_t)snprintf(text + len, cap - len, "%d", c);
        for (int p = 0; p < k; p++)
            len += (size_t)snprintf(text + len, cap - len, ",%ld", confusion[(size_t)c * k + p]);
        len += (size_t)snprintf(text + len, cap - len, "\n");
    }
    int rc = write_file_atomic(path, text, len, err);
    free(text);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    tool_options opt = {0};
    int rc = parse_tool_args(argc, argv, eval_usage, "cvt", &opt);
    if (rc) {
        free(opt.overrides);
        return rc - 1;
    }
    if (argc - opt.first_input > 1) {
        fprintf(stderr, "trainer: eval: expected at most one config file (see trainer eval "
                        "--help)\n");
        free(opt.overrides);
        return EXIT_INPUT;
    }
    const char *config_path = argc - opt.first_input == 1 ? argv[opt.first_input] : NULL;
    errbuf err;
    run r = {0};
    int *predicted = NULL;
    long *confusion = NULL;
    char **model_names = NULL;
    int exit_code = run_open_eval(&r, config_path, opt.load, opt.overrides, opt.n_overrides,
                                  &err);
    if (exit_code) goto done;
    const file_use uses[] = {{"the config file", config_path, 0, 0},
                             {"--load", opt.load, 0, 0},
                             {"the test images", r.cfg.test.images, 0, 0},
                             {"the test labels", r.cfg.test.labels, 0, 0},
                             {"--csv", opt.csv, 1, 0}};
    if (check_file_uses(uses, (int)(sizeof uses / sizeof uses[0]), &err)) {
        exit_code = err.code;
        goto done;
    }
    const dataset *test = &r.test;
    const int k = r.t.net.n_classes;
    predicted = malloc((size_t)test->n * sizeof *predicted);
    confusion = calloc((size_t)k * k, sizeof *confusion);
    if (!predicted || !confusion) {
        oomf(&err, "out of memory");
        exit_code = EXIT_RUNTIME;
        goto done;
    }
    double loss, acc;
    trainer_classify(&r.t, test, predicted, &loss, &acc);
    for (int i = 0; i < test->n; i++) confusion[(size_t)test->labels[i] * k + predicted[i]]++;
    printf("eval %s on %d test images (%s)\n", opt.load, test->n, r.cfg.test.images);
    printf("test_loss %.6f  test_acc %.4f\n\n", loss, acc);
    /* The test folder's class names, or the ones the parameter file carries. */
    model_names = test->class_names ? NULL : run_model_class_names(opt.load, k);
    char *const *names = test->class_names ? test->class_names : model_names;
    print_confusion(confusion, k, names);
    if (opt.csv && write_confusion(opt.csv, confusion, k, names, &err)) exit_code = EXIT_RUNTIME;
done:
    if (exit_code) fprintf(stderr, "trainer: %s\n", err.msg);
    run_free_names(model_names, r.t.net.n_classes);
    free(predicted);
    free(confusion);
    run_close(&r);
    free(opt.overrides);
    return exit_code;
}

static const char predict_usage[] =
    "Usage: trainer predict --load FILE.npz [--config CONFIG.json] [--digits D] INPUT...\n"
    "Classify images with saved parameters. INPUT is a PNG image or a PGM image (P2 or P5) of\n"
    "the network's input size and channels, or an IDX image file (every image in it). Prints\n"
    "the predicted class (and its name, when the model was trained on a folder of classes) and\n"
    "the probability of each class per image. Without --config, the config saved in FILE.npz\n"
    "(by --save or a checkpoint) is used. --digits D prints each probability with D decimals\n"
    "(1 to 9, default 4).\n";


/* What predict keeps from image to image: the net, its parameters and a workspace for a pass
 * of `pass` images, each a lane of its own (lanes[i] = i), so that each image is classified
 * exactly as it would be alone. */
typedef struct predictor {
    net n;
    workspace ws;
    float *params;
    float *table; /* pixel to input (pixel_table) */
    char **names; /* the classes' names from model.json, or NULL */
    int *lanes;
    int pass, threads;
    int digits; /* of each printed probability */
    shape3 shape;
} predictor;

static void print_prediction(const predictor *p, const char *name, long index, int s) {
    const float *probs = net_probs(&p->n, &p->ws, s);
    const int k = p->n.n_classes, best = net_class(&p->n, &p->ws, s);
    if (index < 0) printf("%s: class %d", name, best);
    else printf("%s[%ld]: class %d", name, index, best);
    if (p->names) printf(" (%s)", p->names[best]);
    printf("  p");
    for (int c = 0; c < k; c++) printf(" %.*f", p->digits, probs[c]);
    printf("\n");
}

/* One image (h x w x c bytes) of a PGM or PNG file. */
static int predict_image(predictor *p, const char *path, const uint8_t *px, int h, int w, int c,
                         errbuf *err) {
    const shape3 s = p->shape;
    if (h != s.h || w != s.w || c != s.c)
        return errorf(err, "%s: a %dx%d image with %d channel%s, the network takes %dx%d with %d",
                      path, w, h, c, c == 1 ? "" : "s", s.w, s.h, s.c);
    pixels_to_input(px, shape_size(s), s.c, p->table, workspace_input(&p->ws));
    p->ws.cut = (lane_cut){0, NULL, 0};
    net_forward(&p->n, p->params, &p->ws, 1, p->threads);
    print_prediction(p, path, -1, 0);
    return 0;
}

static int predict_pgm(predictor *p, const char *path, errbuf *err) {
    uint8_t *px;
    int w, h;
    if (pgm_load(path, &px, &w, &h, err)) return -1;
    int rc = predict_image(p, path, px, h, w, 1, err);
    free(px);
    return rc;
}

static int predict_png(predictor *p, const char *path, errbuf *err) {
    uint8_t *px;
    pngimg_shape shape;
    if (pngimg_load(path, &px, &shape, err)) return -1;
    int rc = predict_image(p, path, px, shape.h, shape.w, shape.c, err);
    free(px);
    return rc;
}

/* Every image of an IDX file, in passes over all threads. */
static int predict_idx(predictor *p, const char *path, errbuf *err) {
    idx_array images;
    if (idx_load(&images, path, err)) return -1;
    const shape3 s = p->shape;
    const uint32_t c = images.ndim == 4 ? images.dims[3] : 1;
    if ((images.ndim != 3 && images.ndim != 4) || images.dims[1] != (uint32_t)s.h ||
        images.dims[2] != (uint32_t)s.w || c != (uint32_t)s.c) {
        idx_free(&images);
        return errorf(err, "%s: not images of the network's input shape %dx%dx%d", path, s.h, s.w,
                      s.c);
    }
    const size_t in_size = shape_size(s);
    /* Stops when stdout is closed (predict ... | head): no one reads the rest. */
    for (uint32_t i0 = 0; i0 < images.dims[0] && !ferror(stdout); i0 += (uint32_t)p->pass) {
        const uint32_t left = images.dims[0] - i0;
        const int count = left < (uint32_t)p->pass ? (int)left : p->pass;
        pixels_to_input(images.data + (size_t)i0 * in_size, (size_t)count * in_size, s.c,
                        p->table, workspace_input(&p->ws));
        p->ws.cut = (lane_cut){count, p->lanes, 0};
        net_forward(&p->n, p->params, &p->ws, count, p->threads);
        for (int k = 0; k < count; k++) print_prediction(p, path, (long)(i0 + k), k);
    }
    idx_free(&images);
    return 0;
}

/* Builds the net of cfg for saved parameters and loads them, with the buffers to classify images
 * when `classify` (export needs none). Returns 0 or the exit code. */
static int predictor_open(predictor *p, const config *cfg, const char *params_path, int classify,
                          errbuf *err) {
    if (run_model_shape(params_path, cfg, &p->shape, err) || net_build(&p->n, cfg, p->shape, err) ||
        !(p->table = pixel_table(cfg, p->shape.c, "the network's input", err)))
        return err->code;
    p->names = run_model_class_names(params_path, p->n.n_classes);
    p->params = floats_alloc(net_state_size(&p->n));
    if (classify) {
        p->threads = cfg->threads > 0 ? cfg->threads : omp_get_max_threads();
        p->pass = 8 * p->threads;
        p->lanes = malloc(((size_t)p->pass + 1) * sizeof *p->lanes);
    }
    if (!p->params || (classify && (!p->lanes || workspace_alloc(&p->ws, &p->n, p->pass, 0,
                                                                  p->threads, err)))) {
        oomf(err, "out of memory");
        return EXIT_RUNTIME;
    }
    for (int i = 0; classify && i <= p->pass; i++) p->lanes[i] = i;
    return params_load(params_path, &p->n, p->params, err) ? err->code : 0;
}

static void predictor_close(predictor *p) {
    aligned_free(p->params);
    free(p->table);
    run_free_names(p->names, p->n.n_classes);
    free(p->lanes);
    workspace_free(&p->ws);
    net_free(&p->n);
}

int cmd_predict(int argc, char **argv) {
    tool_options opt = {0};
    int rc = parse_tool_args(argc, argv, predict_usage, "ctd", &opt);
    if (rc) {
        free(opt.overrides);
        return rc - 1;
    }
    if (opt.first_input >= argc) {
        fprintf(stderr, "trainer: predict: no input images (see trainer predict --help)\n");
        free(opt.overrides);
        return EXIT_INPUT;
    }
    errbuf err;
    config cfg = {0};
    predictor p = {0};
    int exit_code = run_model_config(&cfg, opt.config, opt.load, opt.overrides, opt.n_overrides,
                                     &err)
                        ? err.code
                        : predictor_open(&p, &cfg, opt.load, 1, &err);
    p.digits = opt.digits;
    for (int a = opt.first_input; a < argc && !exit_code; a++) {
        const char *path = argv[a];
        const int fd = open_input(path, &err);
        unsigned char head[8] = {0};
        if (fd < 0) {
            exit_code = err.code;
            break;
        }
        const ssize_t got = read(fd, head, sizeof head);
        close(fd);
        int rc;
        if (got > 0 && head[0] == 'P') rc = predict_pgm(&p, path, &err);
        else if (got > 0 && pngimg_is_png(head, (size_t)got)) rc = predict_png(&p, path, &err);
        else rc = predict_idx(&p, path, &err);
        if (rc) exit_code = err.code;
    }
    if (exit_code) fprintf(stderr, "trainer: %s\n", err.msg);
    predictor_close(&p);
    config_free(&cfg);
    free(opt.overrides);
    return exit_code;
}

static const char export_usage[] =
    "Usage: trainer export --load FILE.npz [--config CONFIG.json] [--onnx MODEL.onnx]\n"
    "                      [--c MODEL.c] [--name NAME] [--set PATH=VALUE]\n"
    "Write saved parameters as a model that runs without the trainer: --onnx an ONNX model\n"
    "(opset 13, float32; input \"pixels\" [N, H, W, C], output \"probabilities\" [N, classes]),\n"
    "--c one dependency-free C99 file defining NAME_predict (NAME: ompcnn_model unless --name).\n"
    "Both take pixel values 0 to 255, channels last, and scale them as training did. Without\n"
    "--config, the config saved in FILE.npz (by --save or a checkpoint) is used.\n";

int cmd_export(int argc, char **argv) {
    tool_options opt = {0};
    int rc = parse_tool_args(argc, argv, export_usage, "coCn", &opt);
    if (rc) {
        free(opt.overrides);
        return rc - 1;
    }
    errbuf err = {"", EXIT_INPUT};
    int exit_code;
    if (opt.first_input < argc)
        errorf(&err, "export: unexpected argument %s (see trainer export --help)",
               argv[opt.first_input]);
    else if (!opt.onnx && !opt.c_file)
        errorf(&err, "export: nothing to write: give --onnx FILE, --c FILE or both");
    else if (opt.onnx && !export_onnx_available())
        errorf(&err, "export: --onnx: this trainer was built without ONNX support (install "
               "libprotobuf-c-dev, protobuf-c-compiler and libonnx-dev, then rebuild)");
    else
        err.code = 0;
    exit_code = err.code;
    const file_use uses[] = {{"--config", opt.config, 0, 0},
                             {"--load", opt.load, 0, 0},
                             {"--onnx", opt.onnx, 1, 0},
                             {"--c", opt.c_file, 1, 0}};
    if (!exit_code && check_file_uses(uses, (int)(sizeof uses / sizeof uses[0]), &err))
        exit_code = err.code;
    config cfg = {0};
    predictor p = {0};
    if (!exit_code)
        exit_code = run_model_config(&cfg, opt.config, opt.load, opt.overrides,
                                     opt.n_overrides, &err)
                        ? err.code
                        : predictor_open(&p, &cfg, opt.load, 0, &err);
    if (!exit_code) {
        p.n.class_names = p.names;
        p.n.n_class_names = p.names ? p.n.n_classes : 0;
        if ((opt.onnx && export_onnx(opt.onnx, &p.n, p.params, &cfg, &err)) ||
            (opt.c_file && export_c(opt.c_file, &p.n, p.params, &cfg,
                                    opt.name ? opt.name : "ompcnn_model", &err)))
            exit_code = err.code;
    }
    if (exit_code) fprintf(stderr, "trainer: %s\n", err.msg);
    predictor_close(&p);
    config_free(&cfg);
    free(opt.overrides);
    return exit_code;
}
