/*
 * The config reader. The JSON is parsed with cJSON, command-line overrides are applied to the tree,
 * and then every object is checked strictly: unknown keys are rejected (with a suggestion when one
 * known key is close), values are type and range checked, and each message is one line of the form
 * "FILE: json.path: what was expected, got what". docs/config.md is the reference for the keys.
 */
#include "ompcnn/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fileio.h"
#include "json.h"

#define CONFIG_MAX_BYTES (16u << 20)
#define MAX_LAYERS 256

void text_line_col(const char *text, size_t off, int *line, int *col) {
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 64;
    size_t row[64];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The closest of the NULL-terminated names to word, if close enough to be a likely typo. */
static const char *closest(const char *word, const char *const *names) {
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (int i = 0; names[i]; i++) {
        size_t d = edit_distance(word, names[i]);
        if (d < best_d) best_d = d, best = names[i];
    }
    size_t len = strlen(word);
    return best && best_d <= (len < 5 ? 1 : 2) ? best : NULL;
}

/* Rejects any key of obj that is not in allowed (besides, optionally, "type"). */
static int check_keys(const cJSON *obj, const char *const *allowed, int allow_type,
                      const char *path, errbuf *err) {
    for (const cJSON *item = obj->child; item; item = item->next) {
        if (allow_type && strcmp(item->string, "type") == 0) continue;
        int known = 0;
        for (int i = 0; allowed[i]; i++)
            if (strcmp(item->string, allowed[i]) == 0) known = 1;
        if (known) continue;
        const char *hint = closest(item->string, allowed);
        char list[512] = "";
        for (int i = 0; allowed[i]; i++) {
            strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
            strncat(list, allowed[i], sizeof list - strlen(list) - 1);
        }
        const char *sep = path[0] ? "." : "";
        if (hint)
            return errorf(err, "%s%s%s: unknown key (did you mean \"%s\"?)", path, sep,
                        item->string, hint);
        if (!allowed[0])
            return errorf(err, "%s%s%s: unknown key (this object takes no keys%s)", path, sep,
                        item->string, allow_type ? " besides \"type\"" : "");
        return errorf(err, "%s%s%s: unknown key (expected one of: %s)", path, sep, item->string,
                    list);
    }
    return 0;
}

static int expect_object(const cJSON *item, const char *path, errbuf *err) {
    if (cJSON_IsObject(item)) return 0;
    char *got = cJSON_PrintUnformatted(item);
    errorf(err, "%s: expected an object, got %.60s", path, got ? got : "?");
    cJSON_free(got);
    return -1;
}

static char *join_path(const char *base_dir, const char *rel) {
    size_t n = strlen(base_dir) + strlen(rel) + 2;
    char *out = malloc(n);
    if (!out) return NULL;
    if (rel[0] == '/' || base_dir[0] == '\0' || strcmp(base_dir, ".") == 0)
        snprintf(out, n, "%s", rel);
    else
        snprintf(out, n, "%s/%s", base_dir, rel);
    return out;
}

static int get_path_string(const cJSON *obj, const char *key, const char *path,
                           const char *base_dir, char **out, errbuf *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!item) return errorf(err, "%s.%s: missing, expected a file path", path, key);
    if (!cJSON_IsString(item) || item->valuestring[0] == '\0') {
        char *got = cJSON_PrintUnformatted(item);
        errorf(err, "%s.%s: expected a file path string, got %.60s", path, key, got ? got : "?");
        cJSON_free(got);
        return -1;
    }
    *out = join_path(base_dir, item->valuestring);
    return *out ? 0 : oomf(err, "out of memory");
}

/* CSV's and CIFAR's "shape": [h, w, c], each from 1 to 4096. */
static int parse_shape(split_config *split, const cJSON *obj, const char *path, errbuf *err) {
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(obj, "shape");
    int dims[3];
    if (!shape) return errorf(err, "%s.shape: missing, expected [height, width, channels]", path);
    if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) != 3)
        return errorf(err, "%s.shape: expected [height, width, channels]", path);
    for (int d = 0; d < 3; d++) {
        const cJSON *v = cJSON_GetArrayItem(shape, d);
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
            v->valuedouble > 4096)
            return errorf(err, "%s.shape[%d]: expected an integer from 1 to 4096", path, d);
        dims[d] = (int)v->valuedouble;
    }
    split->shape = (shape3){dims[0], dims[1], dims[2]};
    return 0;
}

static int parse_split(split_config *split, const cJSON *obj, const char *path,
                       const char *base_dir, errbuf *err) {
    static const char *const keys[] = {"format", "images", "labels", "limit", "shape", "variant",
                                       NULL};
    static const char *const formats[] = {"idx", "csv", "cifar", "folder", NULL};
    static const char *const variants[] = {"cifar10", "cifar100", NULL};
    int limit, format, variant;
    if (expect_object(obj, path, err) || check_keys(obj, keys, 0, path, err) ||
        json_get_choice(obj, "format", DATA_IDX, formats, path, &format, err) ||
        get_path_string(obj, "images", path, base_dir, &split->images, err) ||
        json_get_int(obj, "limit", -1, 1, INT_MAX, path, &limit, err) ||
        json_get_choice(obj, "variant", 0, variants, path, &variant, err))
        return -1;
    split->format = (data_format)format;
    split->limit = limit;
    const int has_labels = cJSON_GetObjectItemCaseSensitive(obj, "labels") != NULL;
    const int has_shape = cJSON_GetObjectItemCaseSensitive(obj, "shape") != NULL;
    const int has_variant = cJSON_GetObjectItemCaseSensitive(obj, "variant") != NULL;
    if (format == DATA_IDX)
        return has_shape || has_variant
                   ? errorf(err, "%s.%s: only for \"format\": \"%s\"", path,
                            has_shape ? "shape" : "variant", has_shape ? "csv" : "cifar")
                   : get_path_string(obj, "labels", path, base_dir, &split->labels, err);
    if (has_labels)
        return errorf(err, "%s.labels: the %s format keeps the labels in the images file", path,
                      formats[format]);
    if (format == DATA_FOLDER)
        return has_shape || has_variant
                   ? errorf(err, "%s.%s: a folder's images give their own %s", path,
                            has_shape ? "shape" : "variant", has_shape ? "shape" : "classes")
                   : 0;
    if (format == DATA_CSV)
        return has_variant ? errorf(err, "%s.variant: only for \"format\": \"cifar\"", path)
                           : parse_shape(split, obj, path, err);
    /* CIFAR's records are 32x32x3; records of other images in the same layout (a converted
     * MNIST, say) give their shape. */
    split->shape = (shape3){32, 32, 3};
    split->cifar100 = variant == 1;
    return has_shape ? parse_shape(split, obj, path, err) : 0;
}

/* One of data.normalize's lists: 1 to MAX_NORMALIZE_CHANNELS numbers, std's above zero. */
static int parse_normalize_list(const cJSON *obj, const char *key, int positive, float *out,
                                int *n, errbuf *err) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!list)
        return errorf(err, "data.normalize.%s: missing, expected a list of numbers, one per "
                      "channel", key);
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) < 1 ||
        cJSON_GetArraySize(list) > MAX_NORMALIZE_CHANNELS)
        return errorf(err, "data.normalize.%s: expected a list of 1 to %d numbers, one per "
                      "channel", key, MAX_NORMALIZE_CHANNELS);
    *n = cJSON_GetArraySize(list);
    for (int i = 0; i < *n; i++) {
        const cJSON *v = cJSON_GetArrayItem(list, i);
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || fabs(v->valuedouble) > 1e6 ||
            (positive && !(v->valuedouble >= 1e-6)))
            return errorf(err, "data.normalize.%s[%d]: expected a number%s", key, i,
                          positive ? " from 1e-6 to 1e6 (a standard deviation)"
                                   : " from -1e6 to 1e6");
        out[i] = (float)v->valuedouble;
    }
    return 0;
}

static int parse_normalize(config *cfg, const cJSON *obj, errbuf *err) {
    static const char *const keys[] = {"mean", "std", NULL};
    int n_mean = 0, n_std = 0;
    if (expect_object(obj, "data.normalize", err) ||
        check_keys(obj, keys, 0, "data.normalize", err) ||
        parse_normalize_list(obj, "mean", 0, cfg->normalize_mean, &n_mean, err) ||
        parse_normalize_list(obj, "std", 1, cfg->normalize_std, &n_std, err))
        return -1;
    if (n_mean != n_std)
        return errorf(err, "data.normalize: %d means but %d standard deviations", n_mean, n_std);
    cfg->n_normalize = n_mean;
    return 0;
}

static int parse_data(config *cfg, const cJSON *data, const char *base_dir, errbuf *err) {
    static const char *const keys[] = {"train", "test", "validation", "normalize", NULL};
    if (!data) return errorf(err, "data: missing, expected an object with \"train\" and \"test\"");
    if (expect_object(data, "data", err) || check_keys(data, keys, 0, "data", err)) return -1;
    const cJSON *train = cJSON_GetObjectItemCaseSensitive(data, "train");
    if (!train) return errorf(err, "data.train: missing, expected {\"images\": ..., \"labels\": ...}");
    if (parse_split(&cfg->train, train, "data.train", base_dir, err)) return -1;
    const cJSON *test = cJSON_GetObjectItemCaseSensitive(data, "test");
    cfg->has_test = test != NULL;
    if (test && parse_split(&cfg->test, test, "data.test", base_dir, err)) return -1;
    const cJSON *normalize = cJSON_GetObjectItemCaseSensitive(data, "normalize");
    if (normalize && parse_normalize(cfg, normalize, err)) return -1;
    const cJSON *validation = cJSON_GetObjectItemCaseSensitive(data, "validation");
    if (validation) {
        static const char *const vkeys[] = {"last", "fraction", NULL};
        const char *path = "data.validation";
        int last;
        if (expect_object(validation, path, err) || check_keys(validation, vkeys, 0, path, err) ||
            json_get_int(validation, "last", 0, 1, INT_MAX, path, &last, err) ||
            json_get_double(validation, "fraction", 0.0, 0.0, 0.9, 1, path,
                            &cfg->validation_fraction, err))
            return -1;
        cfg->validation_last = last;
        if ((last > 0) == (cfg->validation_fraction > 0.0))
            return errorf(err, "%s: expected exactly one of \"last\" (a count) or \"fraction\"",
                          path);
    }
    return 0;
}

static int parse_network(config *cfg, const cJSON *network, errbuf *err) {
    if (!network) return errorf(err, "network: missing, expected a list of layers");
    if (!cJSON_IsArray(network) || cJSON_GetArraySize(network) == 0)
        return errorf(err, "network: expected a non-empty list of layers");
    int n = cJSON_GetArraySize(network);
    if (n > MAX_LAYERS) return errorf(err, "network: %d layers, at most %d are supported", n, MAX_LAYERS);
    cfg->layers = calloc((size_t)n, sizeof *cfg->layers);
    if (!cfg->layers) return oomf(err, "out of memory");
    int i = 0;
    for (const cJSON *item = network->child; item; item = item->next, i++) {
        layer_spec *spec = &cfg->layers[i];
        snprintf(spec->path, sizeof spec->path, "network[%d]", i);
        cfg->n_layers = i + 1;
        if (expect_object(item, spec->path, err)) return -1;
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(item, "type");
        if (!type)
            return errorf(err, "%s.type: missing, expected one of: %s", spec->path,
                        layer_type_list());
        if (!cJSON_IsString(type))
            return errorf(err, "%s.type: expected a string, one of: %s", spec->path,
                        layer_type_list());
        spec->ops = layer_find(type->valuestring);
        if (!spec->ops) {
            const char *hint = closest(type->valuestring, layer_type_names());
            if (hint)
                return errorf(err, "%s.type: unknown layer type \"%s\" (did you mean \"%s\"?)",
                            spec->path, type->valuestring, hint);
            return errorf(err, "%s.type: unknown layer type \"%s\" (expected one of: %s)",
                        spec->path, type->valuestring, layer_type_list());
        }
        if (check_keys(item, spec->ops->keys, 1, spec->path, err)) return -1;
        spec->settings = calloc(1, spec->ops->settings_size ? spec->ops->settings_size : 1);
        if (!spec->settings) return oomf(err, "out of memory");
        if (spec->ops->parse && spec->ops->parse(spec->settings, item, spec->path, err)) return -1;
        if (spec->ops == &softmax_ops && i != n - 1)
            return errorf(err, "%s: softmax must be the last layer", spec->path);
    }
    if (cfg->layers[n - 1].ops != &softmax_ops)
        return errorf(err, "network[%d]: the network must end with a softmax layer (the trainer "
                    "minimises cross-entropy)", n - 1);
    return 0;
}

static int parse_checkpoint(config *cfg, const cJSON *obj, const char *base_dir, errbuf *err) {
    static const char *const keys[] = {"path", "every_epochs", "every_steps", NULL};
    const char *path = "training.checkpoint";
    /* The path may come from --checkpoint instead (run_config checks that one is given). */
    if (expect_object(obj, path, err) || check_keys(obj, keys, 0, path, err) ||
        (cJSON_GetObjectItemCaseSensitive(obj, "path") &&
         get_path_string(obj, "path", path, base_dir, &cfg->checkpoint_path, err)) ||
        json_get_int(obj, "every_epochs", 1, 0, 1000000, path, &cfg->checkpoint_every_epochs,
                     err) ||
        json_get_int(obj, "every_steps", 0, 0, INT_MAX, path, &cfg->checkpoint_every_steps, err))
        return -1;
    return 0;
}

static int parse_training(config *cfg, const cJSON *training, const char *base_dir, errbuf *err) {
    static const char *const keys[] = {
        "epochs",     "batch_size",  "learning_rate", "shuffle",        "seed",
        "threads",    "lanes",       "init",          "eval_every",     "checkpoint",
        "optimizer",  "momentum",    "weight_decay",  "adam_beta1",     "adam_beta2",
        "adam_eps",   "lr_schedule", "lr_step_epochs", "lr_gamma",      "warmup_epochs",
        "augment_shift", "augment_flip", "augment_rotate", "augment_scale", "label_smoothing", NULL};
    static const char *const optimizers[] = {"sgd", "momentum", "nesterov", "adam", NULL};
    static const char *const schedules[] = {"constant", "step", "cosine", NULL};
    static const cJSON empty = {0};
    const char *path = "training";
    if (!training) training = &empty;
    else if (expect_object(training, path, err) || check_keys(training, keys, 0, path, err))
        return -1;
    int init;
    if (json_get_int(training, "epochs", 1, 1, 1000000, path, &cfg->epochs, err) ||
        json_get_int(training, "batch_size", 1, 1, 1 << 20, path, &cfg->batch_size, err) ||
        json_get_bool(training, "shuffle", 0, path, &cfg->shuffle, err) ||
        json_get_int(training, "threads", 0, 0, 1024, path, &cfg->threads, err) ||
        json_get_int(training, "lanes", 8, 1, 256, path, &cfg->lanes, err) ||
        json_get_choice(training, "init", INIT_HE, init_names, path, &init, err) ||
        json_get_int(training, "eval_every", 1, 0, 1000000, path, &cfg->eval_every, err))
        return -1;
    cfg->init = (init_kind)init;
    int optimizer, schedule;
    optimizer_config *o = &cfg->optimizer;
    schedule_config *sc = &cfg->schedule;
    if (json_get_choice(training, "optimizer", OPT_SGD, optimizers, path, &optimizer, err) ||
        json_get_double(training, "momentum", 0.9, 0.0, 1.0, 0, path, &o->momentum, err) ||
        json_get_double(training, "weight_decay", 0.0, 0.0, 1.0, 0, path, &o->weight_decay, err) ||
        json_get_double(training, "adam_beta1", 0.9, 0.0, 0.999999, 0, path, &o->beta1, err) ||
        json_get_double(training, "adam_beta2", 0.999, 0.0, 0.999999999, 0, path, &o->beta2, err) ||
        json_get_double(training, "adam_eps", 1e-8, 0.0, 1.0, 1, path, &o->eps, err) ||
        json_get_choice(training, "lr_schedule", SCHEDULE_CONSTANT, schedules, path, &schedule,
                        err) ||
        json_get_int(training, "lr_step_epochs", 1, 1, 1000000, path, &sc->step_epochs, err) ||
        json_get_double(training, "lr_gamma", 0.1, 0.0, 1.0, 1, path, &sc->gamma, err) ||
        json_get_double(training, "warmup_epochs", 0.0, 0.0, 1e6, 0, path, &sc->warmup_epochs,
                        err) ||
        json_get_int(training, "augment_shift", 0, 0, 64, path, &cfg->augment_shift, err) ||
        json_get_bool(training, "augment_flip", 0, path, &cfg->augment_flip, err) ||
        json_get_double(training, "augment_rotate", 0.0, 0.0, 180.0, 0, path,
                        &cfg->augment_rotate, err) ||
        json_get_double(training, "augment_scale", 0.0, 0.0, 0.5, 0, path, &cfg->augment_scale,
                        err) ||
        json_get_double(training, "label_smoothing", 0.0, 0.0, 0.999, 0, path,
                        &cfg->label_smoothing, err))
        return -1;
    o->kind = (optimizer_kind)optimizer;
    sc->kind = (schedule_kind)schedule;
    const cJSON *checkpoint = cJSON_GetObjectItemCaseSensitive(training, "checkpoint");
    if (checkpoint && parse_checkpoint(cfg, checkpoint, base_dir, err)) return -1;

    const cJSON *lr = cJSON_GetObjectItemCaseSensitive(training, "learning_rate");
    cfg->learning_rate = 0.01;
    if (lr) {
        if (!cJSON_IsNumber(lr) || !(lr->valuedouble > 0.0) || !isfinite(lr->valuedouble) ||
            lr->valuedouble > 1e6) {
            char *got = cJSON_PrintUnformatted(lr);
            errorf(err, "training.learning_rate: expected a positive number, got %.60s",
                 got ? got : "?");
            cJSON_free(got);
            return -1;
        }
        cfg->learning_rate = lr->valuedouble;
    }
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(training, "seed");
    cfg->seed = 0;
    if (seed) {
        double v = cJSON_IsNumber(seed) ? seed->valuedouble : -1.0;
        if (v != floor(v) || v < 0.0 || v > 4294967295.0) {
            char *got = cJSON_PrintUnformatted(seed);
            errorf(err, "training.seed: expected an integer from 0 to 4294967295, got %.60s",
                 got ? got : "?");
            cJSON_free(got);
            return -1;
        }
        cfg->seed = (uint32_t)v;
    }
    return 0;
}

/* ---- overrides: "path=value" ---- */

/* Splits the next path segment: a key (up to '.', '[' or end) or an index "[n]". */
static int next_segment(const char **p, char *key, size_t key_size, long *index, errbuf *err,
                        const char *assignment) {
    const char *s = *p;
    if (*s == '[') {
        char *end;
        errno = 0;
        long v = strtol(s + 1, &end, 10);
        if (end == s + 1 || *end != ']' || v < 0 || errno)
            return errorf(err, "--set %s: bad array index in the path", assignment);
        *index = v;
        key[0] = '\0';
        *p = end + 1;
    } else {
        size_t n = strcspn(s, ".[");
        if (n == 0 || n >= key_size)
            return errorf(err, "--set %s: empty or overlong key in the path", assignment);
        memcpy(key, s, n);
        key[n] = '\0';
        *index = -1;
        *p = s + n;
    }
    if (**p == '.') {
        (*p)++;
        if (**p == '\0' || **p == '.' || **p == '[')
            return errorf(err, "--set %s: empty key in the path", assignment);
    }
    return 0;
}

static int json_locate_error(const char *text, size_t *off, const char **what);

int config_apply_override(cJSON *root, const char *assignment, errbuf *err) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return errorf(err, "--set %s: expected PATH=VALUE, e.g. training.epochs=5", assignment);
    size_t path_len = (size_t)(eq - assignment);
    char *path = malloc(path_len + 1);
    if (!path) return oomf(err, "out of memory");
    memcpy(path, assignment, path_len);
    path[path_len] = '\0';
    /* The value as JSON when the whole of it is JSON; any other text (training.init=he, or
     * "2 junk") is taken as a string, which a number or boolean key then refuses. */
    size_t bad_at;
    const char *why;
    cJSON *value = json_locate_error(eq + 1, &bad_at, &why) == 0 ? cJSON_Parse(eq + 1) : NULL;
    if (!value) value = cJSON_CreateString(eq + 1);
    if (!value) {
        free(path);
        return oomf(err, "out of memory");
    }

    cJSON *node = root;
    const char *p = path;
    char key[128];
    long index = -1;
    int rc = 0;
    while (*p) {
        if (next_segment(&p, key, sizeof key, &index, err, assignment)) {
            rc = -1;
            break;
        }
        int last = *p == '\0';
        if (index < 0) {
            if (!cJSON_IsObject(node)) {
                rc = errorf(err, "--set %s: \"%s\" is not inside an object", assignment, key);
                break;
            }
            cJSON *child = cJSON_GetObjectItemCaseSensitive(node, key);
            if (last) {
                if (child) cJSON_ReplaceItemInObjectCaseSensitive(node, key, value);
                else cJSON_AddItemToObject(node, key, value);
                value = NULL;
            } else if (!child) {
                child = cJSON_AddObjectToObject(node, key);
            }
            node = child;
        } else {
            if (!cJSON_IsArray(node)) {
                rc = errorf(err, "--set %s: [%ld] is not inside a list", assignment, index);
                break;
            }
            int size = cJSON_GetArraySize(node);
            if (index > size) {
                rc = errorf(err, "--set %s: index %ld is out of range (the list has %d items)",
                          assignment, index, size);
                break;
            }
            if (last) {
                if (index < size) cJSON_ReplaceItemInArray(node, (int)index, value);
                else cJSON_AddItemToArray(node, value);
                value = NULL;
            } else {
                if (index == size) cJSON_AddItemToArray(node, cJSON_CreateObject());
                node = cJSON_GetArrayItem(node, (int)index);
            }
        }
    }
    cJSON_Delete(value);
    free(path);
    return rc;
}

/* ---- locating JSON syntax errors ----
 * cJSON says only roughly where it stopped; this small validator walks the same grammar (RFC 8259)
 * and stops at the first byte that cannot be valid, with a word on what was expected there. */

typedef struct json_scan {
    const char *text;
    size_t pos;
    const char *what;
    int depth;
} json_scan;

static void scan_ws(json_scan *s) {
    while (s->text[s->pos] == ' ' || s->text[s->pos] == '\t' || s->text[s->pos] == '\n' ||
           s->text[s->pos] == '\r')
        s->pos++;
}

static int scan_fail(json_scan *s, const char *what) {
    s->what = s->text[s->pos] ? what : "the text ends early";
    return -1;
}

static int scan_value(json_scan *s);

static int scan_string(json_scan *s) {
    if (s->text[s->pos] != '"') return scan_fail(s, "expected a string in double quotes");
    s->pos++;
    for (;;) {
        unsigned char c = (unsigned char)s->text[s->pos];
        if (c == '"') {
            s->pos++;
            return 0;
        }
        if (c == '\0') return scan_fail(s, "unterminated string");
        if (c < 0x20) return scan_fail(s, "control character inside a string");
        if (c == '\\') {
            char e = s->text[++s->pos];
            if (e == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!isxdigit((unsigned char)s->text[s->pos + i])) {
                        s->pos += (size_t)i;
                        return scan_fail(s, "bad \\u escape");
                    }
                if (strncmp(s->text + s->pos + 1, "0000", 4) == 0) {
                    s->pos--;
                    return scan_fail(s, "\\u0000 (a NUL character) inside a string");
                }
                s->pos += 4;
            } else if (!e || !strchr("\"\\/bfnrt", e)) {
                return scan_fail(s, "bad escape in a string");
            }
        }
        s->pos++;
    }
}

static int scan_number(json_scan *s) {
    const char *t = s->text;
    if (t[s->pos] == '-') s->pos++;
    if (t[s->pos] == '0') s->pos++;
    else if (isdigit((unsigned char)t[s->pos])) while (isdigit((unsigned char)t[s->pos])) s->pos++;
    else return scan_fail(s, "expected a digit");
    if (t[s->pos] == '.') {
        s->pos++;
        if (!isdigit((unsigned char)t[s->pos])) return scan_fail(s, "expected a digit after '.'");
        while (isdigit((unsigned char)t[s->pos])) s->pos++;
    }
    if (t[s->pos] == 'e' || t[s->pos] == 'E') {
        s->pos++;
        if (t[s->pos] == '+' || t[s->pos] == '-') s->pos++;
        if (!isdigit((unsigned char)t[s->pos])) return scan_fail(s, "expected an exponent");
        while (isdigit((unsigned char)t[s->pos])) s->pos++;
    }
    return 0;
}

static int scan_container(json_scan *s, char close) {
    if (++s->depth > 1000) return scan_fail(s, "nested too deeply");
    s->pos++;
    scan_ws(s);
    if (s->text[s->pos] == close) {
        s->pos++;
        s->depth--;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            if (s->text[s->pos] != '"')
                return scan_fail(s, "expected a key in double quotes (a trailing comma?)");
            if (scan_string(s)) return -1;
            scan_ws(s);
            if (s->text[s->pos] != ':') return scan_fail(s, "expected ':' after the key");
            s->pos++;
            scan_ws(s);
        }
        if (scan_value(s)) return -1;
        scan_ws(s);
        if (s->text[s->pos] == ',') {
            s->pos++;
            scan_ws(s);
            if (s->text[s->pos] == close) return scan_fail(s, "trailing comma");
            continue;
        }
        if (s->text[s->pos] == close) {
            s->pos++;
            s->depth--;
            return 0;
        }
        return scan_fail(s, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int scan_value(json_scan *s) {
    const char *t = s->text + s->pos;
    if (*t == '{') return scan_container(s, '}');
    if (*t == '[') return scan_container(s, ']');
    if (*t == '"') return scan_string(s);
    if (*t == '-' || isdigit((unsigned char)*t)) return scan_number(s);
    static const char *const words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++)
        if (strncmp(t, words[i], strlen(words[i])) == 0) {
            s->pos += strlen(words[i]);
            return 0;
        }
    return scan_fail(s, "expected a value (object, list, string, number, true, false or null)");
}

/* Finds the first syntax error in text: its byte offset and a description. 0 if none found. */
static int json_locate_error(const char *text, size_t *off, const char **what) {
    json_scan s = {text, 0, NULL, 0};
    scan_ws(&s);
    if (scan_value(&s) == 0) {
        scan_ws(&s);
        if (text[s.pos] == '\0') return 0;
        scan_fail(&s, "unexpected text after the end of the JSON value");
    }
    *off = s.pos;
    *what = s.what;
    return -1;
}

/* ---- the whole file ---- */

static char *dir_of(const char *file) {
    const char *slash = strrchr(file, '/');
    if (!slash) return strdup(".");
    if (slash == file) return strdup("/");
    size_t n = (size_t)(slash - file);
    char *dir = malloc(n + 1);
    if (dir) {
        memcpy(dir, file, n);
        dir[n] = '\0';
    }
    return dir;
}

static int parse_tree(config *cfg, const char *base_dir, errbuf *err) {
    static const char *const keys[] = {"description", "data", "network", "training", NULL};
    const cJSON *root = cfg->json;
    if (!cJSON_IsObject(root)) return errorf(err, "the top level must be a JSON object");
    if (check_keys(root, keys, 0, "", err)) return -1;
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(root, "description");
    if (desc && !cJSON_IsString(desc)) return errorf(err, "description: expected a string");
    if (parse_data(cfg, cJSON_GetObjectItemCaseSensitive(root, "data"), base_dir, err) ||
        parse_network(cfg, cJSON_GetObjectItemCaseSensitive(root, "network"), err) ||
        parse_training(cfg, cJSON_GetObjectItemCaseSensitive(root, "training"), base_dir, err))
        return -1;
    return 0;
}

int config_parse_text(config *cfg, const char *text, const char *file, const char *base_dir,
                      const char *const *overrides, int n_overrides, errbuf *err) {
    memset(cfg, 0, sizeof *cfg);
    cfg->file = strdup(file);
    cfg->base_dir = strdup(base_dir);
    if (!cfg->file || !cfg->base_dir) {
        config_free(cfg);
        return oomf(err, "out of memory");
    }
    const char *end = NULL;
    /* Strict RFC 8259 syntax first (cJSON alone would take "01"), with an exact position. */
    size_t off = 0;
    const char *what = NULL;
    if (json_locate_error(text, &off, &what) == 0) cfg->json = cJSON_ParseWithOpts(text, &end, 1);
    if (!cfg->json) {
        if (!what) {
            /* cJSON refused what the validator accepts (it should not happen): its position. */
            off = end ? (size_t)(end - text) : 0;
            what = "invalid JSON";
        }
        int line, col;
        text_line_col(text, off, &line, &col);
        int near = (int)strcspn(text + off, "\r\n");
        if (text[off])
            errorf(err, "%s:%d:%d: invalid JSON: %s, at \"%.*s\"", file, line, col, what,
                   near < 16 ? near : 16, text + off);
        else
            errorf(err, "%s:%d:%d: invalid JSON: %s", file, line, col, what);
        config_free(cfg);
        return -1;
    }
    errbuf inner;
    if (json_check_duplicates(cfg->json, &inner)) {
        errorf(err, "%s: %s", file, inner.msg);
        config_free(cfg);
        return -1;
    }
    for (int i = 0; i < n_overrides; i++)
        if (config_apply_override(cfg->json, overrides[i], err)) {
            config_free(cfg);
            return -1;
        }
    if (parse_tree(cfg, base_dir, &inner)) {
        errorf(err, "%s: %s", file, inner.msg);
        config_free(cfg);
        return -1;
    }
    return 0;
}

int config_load(config *cfg, const char *file, const char *const *overrides, int n_overrides,
                errbuf *err) {
    memset(cfg, 0, sizeof *cfg);
    unsigned char *bytes;
    size_t len;
    if (read_input(file, &bytes, &len, err)) return -1;
    char *text = (char *)bytes;
    if (len > CONFIG_MAX_BYTES) {
        free(text);
        return errorf(err, "%s: larger than 16 MiB", file);
    }
    if (strlen(text) != len) {
        free(text);
        return errorf(err, "%s: contains a NUL byte (not a JSON text file)", file);
    }
    char *base = dir_of(file);
    int rc = base ? config_parse_text(cfg, text, file, base, overrides, n_overrides, err)
                  : oomf(err, "out of memory");
    free(base);
    free(text);
    return rc;
}

void config_free(config *cfg) {
    free(cfg->file);
    cJSON_Delete(cfg->json);
    free(cfg->train.images);
    free(cfg->train.labels);
    free(cfg->test.images);
    free(cfg->test.labels);
    free(cfg->checkpoint_path);
    free(cfg->base_dir);
    for (int i = 0; i < cfg->n_layers; i++) free(cfg->layers[i].settings);
    free(cfg->layers);
    memset(cfg, 0, sizeof *cfg);
}
