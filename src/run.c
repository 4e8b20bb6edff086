/*
 * A training run (see include/ompcnn/run.h): setting it up, the epoch loop, the checkpoint
 * policy and the metrics rows.
 */
#include "ompcnn/run.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "ompcnn/npz.h"
#include "profile.h"

static const char metrics_header[] =
    "epoch,train_loss,train_acc,test_loss,test_acc,seconds,images_per_s\n";
static const char metrics_header_val[] =
    "epoch,train_loss,train_acc,test_loss,test_acc,seconds,images_per_s,val_loss,val_acc\n";

int run_config(run *r, const run_files *files, dist *d, errbuf *err) {
    memset(r, 0, sizeof *r);
    r->files = *files;
    r->dist = d;
    r->writer = d->rank == 0;
    r->best_val_acc = -1.0;
    config *cfg = &r->cfg;
    if (files->resume) {
        /* The run's own config, as it was made, with this command's overrides on top. */
        if (checkpoint_read(files->resume, &r->meta, err) ||
            config_parse_text(cfg, r->meta.config_text, files->resume, r->meta.base_dir,
                              files->overrides, files->n_overrides, err))
            return -1;
    } else if (config_load(cfg, files->config, files->overrides, files->n_overrides, err)) {
        return -1;
    }
    if (files->checkpoint) {
        free(cfg->checkpoint_path);
        cfg->checkpoint_path = strdup(files->checkpoint);
        if (!cfg->checkpoint_path) return oomf(err, "out of memory");
        if (!cfg->checkpoint_every_epochs && !cfg->checkpoint_every_steps)
            cfg->checkpoint_every_epochs = 1;
    }
    if ((cfg->checkpoint_every_epochs || cfg->checkpoint_every_steps) && !cfg->checkpoint_path)
        return errorf(err, "%s: training.checkpoint.path: missing, expected a file path (or give "
                      "--checkpoint FILE)", cfg->file);
    cfg->max_memory = files->max_memory;
    if (d->local_size > 1 && cfg->threads == 0 && !getenv("OMP_NUM_THREADS")) {
        int share = omp_get_num_procs() / d->local_size;
        cfg->threads = share > 1 ? share : 1;
    }
    return 0;
}

/* Appends text to the metrics CSV; -1 when memory runs out. */
static int metrics_append(run *r, const char *text) {
    size_t n = strlen(text);
    if (r->metrics_len + n + 1 > r->metrics_cap) {
        size_t cap = (r->metrics_cap + n + 1) * 2;
        char *grown = realloc(r->metrics, cap);
        if (!grown) return -1;
        r->metrics = grown;
        r->metrics_cap = cap;
    }
    memcpy(r->metrics + r->metrics_len, text, n + 1);
    r->metrics_len += n;
    return 0;
}

/* Holds out the last samples of the training set as the validation set: a view into the same
 * memory. */
static int hold_out_validation(run *r, errbuf *err) {
    const config *cfg = &r->cfg;
    dataset *train = &r->train;
    if (!cfg->validation_last && !(cfg->validation_fraction > 0.0)) return 0;
    long held = cfg->validation_last ? cfg->validation_last
                                     : (long)(cfg->validation_fraction * train->n);
    if (held < 1 || held >= train->n)
        return errorf(err, "%s: data.validation: holding out %ld of the %d training samples "
                      "leaves %s", cfg->file, held, train->n,
                      held < 1 ? "no validation set" : "none to train on");
    r->validation = *train;
    r->validation.n = (int)held;
    const size_t image = (size_t)train->h * train->w * train->c;
    r->validation.pixels = train->pixels + (size_t)(train->n - held) * image;
    r->validation.labels = train->labels + (train->n - held);
    train->n -= (int)held;
    return 0;
}

/* Whether the checkpoint's position is one a run of this config reaches: a whole number of
 * batches into an epoch of these samples, the step count of the epochs and batches before it. */
static int check_position(const run *r, errbuf *err) {
    const checkpoint_meta *m = &r->meta;
    const int n = r->train.n, batch = r->cfg.batch_size;
    const long steps_per_epoch = (n + batch - 1) / batch;
    if (m->epoch > r->cfg.epochs || m->pos.position >= n ||
        (m->epoch == r->cfg.epochs && m->pos.position > 0))
        return errorf(err, "%s: the checkpoint is at epoch %d, sample %d, past this run's %d "
                      "epochs of %d samples", r->files.resume, m->epoch + 1, m->pos.position,
                      r->cfg.epochs, n);
    if (m->pos.position % batch != 0 ||
        m->pos.step != (long)m->epoch * steps_per_epoch + m->pos.position / batch)
        return errorf(err, "%s: the checkpoint's position (epoch %d, sample %d, step %ld) is not "
                      "one a run of batches of %d over %d samples reaches (damaged, or the "
                      "batch size or data changed?)", r->files.resume, m->epoch + 1,
                      m->pos.position, m->pos.step, batch, n);
    return 0;
}

/* The checkpoint's parameters, optimizer state and position, all from the one read of it. */
static int resume(run *r, errbuf *err) {
    const char *path = r->files.resume;
    const checkpoint_meta *m = &r->meta;
    trainer *t = &r->t;
    if (check_position(r, err) ||
        params_load_buffer(m->bytes, m->len, path, &t->net, t->params, err))
        return err->code;
    size_t state = (size_t)optimizer_state_count(r->cfg.optimizer.kind) * t->net.n_params;
    if (state && npz_load_array_buffer(m->bytes, m->len, path, "optimizer_state", t->opt_state,
                                       state, err))
        return err->code;
    r->first_epoch = m->epoch;
    t->pos = m->pos;
    /* Everything is taken from the file's bytes: they need not stay for the whole run. */
    free(r->meta.bytes);
    r->meta.bytes = NULL;
    r->meta.len = 0;
    return 0;
}

/* A folder's classes against the network's outputs, and the test folder's against the
 * training folder's. */
static int check_classes(const run *r, errbuf *err) {
    const config *cfg = &r->cfg;
    const dataset *train = &r->train, *test = &r->test;
    const int k = r->t.net.n_classes;
    if (train->class_names && train->n_class_names != k)
        return errorf(err, "%s: data.train: %s has %d class folders, but the network ends in %d "
                      "classes", cfg->file, cfg->train.images, train->n_class_names, k);
    if (!cfg->has_test || !test->class_names) return 0;
    if (!train->class_names) {
        if (test->n_class_names != k)
            return errorf(err, "%s: data.test: %s has %d class folders, but the network ends in "
                          "%d classes", cfg->file, cfg->test.images, test->n_class_names, k);
        return 0;
    }
    for (int c = 0; c < train->n_class_names || c < test->n_class_names; c++)
        if (c >= train->n_class_names || c >= test->n_class_names ||
            strcmp(train->class_names[c], test->class_names[c]) != 0)
            return errorf(err, "%s: data.test: the class folders of %s differ from those of %s "
                          "(class %d: \"%s\" and \"%s\")", cfg->file, cfg->test.images,
                          cfg->train.images, c,
                          c < test->n_class_names ? test->class_names[c] : "(none)",
                          c < train->n_class_names ? train->class_names[c] : "(none)");
    return 0;
}

/* The pixel-to-input table for the data's channels, shared by every split (the trainer
 * checks that the test images have the training images' shape). */
static int set_input_table(run *r, errbuf *err) {
    const config *cfg = &r->cfg;
    dataset *train = &r->train, *test = &r->test;
    if (!(r->pixel_table = pixel_table(cfg, train->c, cfg->train.images, err))) return -1;
    train->table = test->table = r->pixel_table;
    return 0;
}

int run_load(run *r, const run_hooks *hooks, errbuf *err) {
    const config *cfg = &r->cfg;
    trainer *t = &r->t;
    r->hooks = hooks;
    load_options train_opt = {cfg->threads, "data.train", hooks ? hooks->loading : NULL,
                              hooks ? hooks->ctx : NULL};
    load_options test_opt = train_opt;
    test_opt.what = "data.test";
    /* Labels are checked against the softmax size once the net is built (it needs the data's
     * image shape first); 256 admits any byte for now. */
    double start = omp_get_wtime();
    if (dataset_load_split(&r->train, &cfg->train, 256, &train_opt, err)) return err->code;
    r->load_seconds[0] = omp_get_wtime() - start;
    start = omp_get_wtime();
    if (cfg->has_test && dataset_load_split(&r->test, &cfg->test, 256, &test_opt, err))
        return err->code;
    r->load_seconds[1] = omp_get_wtime() - start;
    if (set_input_table(r, err) || hold_out_validation(r, err) ||
        trainer_open_dist(t, cfg, &r->train, cfg->has_test ? &r->test : NULL, r->dist, err))
        return err->code;
    const int k = t->net.n_classes;
    if (check_classes(r, err)) return err->code;
    t->net.class_names = r->train.class_names;
    t->net.n_class_names = r->train.n_class_names;
    if (r->validation.n && (dataset_check_labels(&r->validation, split_labels_file(&cfg->train), k, err) ||
                            trainer_set_validation(t, &r->validation, err)))
        return err->code;
    if (r->files.save_best && !r->validation.n) {
        errorf(err, "--save-best keeps the epoch with the best validation accuracy; the config "
               "has no data.validation");
        return err->code;
    }
    if (dataset_check_labels(&r->train, split_labels_file(&cfg->train), k, err) ||
        (cfg->has_test && dataset_check_labels(&r->test, split_labels_file(&cfg->test), k, err)))
        return err->code;
    const char *header = r->validation.n ? metrics_header_val : metrics_header;
    if (r->files.resume) {
        int rc = resume(r, err);
        if (rc) return rc;
        if (r->meta.metrics_csv[0]) header = r->meta.metrics_csv;
    } else if (r->files.load && params_load(r->files.load, &t->net, t->params, err)) {
        return err->code;
    }
    if (metrics_append(r, header)) {
        oomf(err, "out of memory");
        return EXIT_RUNTIME;
    }
    return 0;
}

int run_save_init(run *r, errbuf *err) {
    if (!r->writer || !r->files.save_init) return 0;
    return model_save(r->files.save_init, &r->t.net, r->t.params, &r->cfg, err);
}

/* The step hook: the caller's progress and stop hooks, and a checkpoint every N steps. */
static int after_step(void *ctx, int done, int total) {
    run *r = ctx;
    const run_hooks *h = r->hooks;
    if (h->progress) h->progress(h->ctx, r->epoch, done, total);
    if (h->stop && h->stop(h->ctx)) return 1;
    const int every = r->cfg.checkpoint_every_steps;
    if (r->writer && every > 0 && r->cfg.checkpoint_path && r->t.pos.step % every == 0 &&
        done < total &&
        checkpoint_save(r->cfg.checkpoint_path, &r->t, r->epoch, r->metrics, &r->step_err)) {
        r->step_failed = 1;
        return 1;
    }
    return 0;
}

static void fmt_metric(char *buf, size_t size, const char *fmt, double v, const char *missing) {
    if (isnan(v)) snprintf(buf, size, "%s", missing);
    else snprintf(buf, size, fmt, v);
}

/* The epoch's printed line and its metrics row. */
static int report_epoch(run *r, int epoch, const epoch_stats *st) {
    const trainer *t = &r->t;
    const double ips = t->train->n / (st->train_seconds > 0 ? st->train_seconds : 1e-9);
    char tl[32], ta[32], val[96] = "", line[256];
    fmt_metric(tl, sizeof tl, "%.6f", st->test_loss, "-");
    fmt_metric(ta, sizeof ta, "%.4f", st->test_acc, "-");
    if (t->validation)
        snprintf(val, sizeof val, "  val_loss %.6f  val_acc %.4f", st->val_loss, st->val_acc);
    snprintf(line, sizeof line,
             "epoch %*d/%d  train_loss %.6f  train_acc %.4f  test_loss %s  test_acc %s%s  "
             "%.2f s  %.0f img/s\n",
             (int)strlen("1000000") - 5, epoch + 1, r->cfg.epochs, st->train_loss, st->train_acc,
             tl, ta, val, st->seconds, ips);
    if (r->hooks->epoch_done) r->hooks->epoch_done(r->hooks->ctx, line);
    fmt_metric(tl, sizeof tl, "%.9g", st->test_loss, "");
    fmt_metric(ta, sizeof ta, "%.6g", st->test_acc, "");
    if (t->validation) snprintf(val, sizeof val, ",%.9g,%.6g", st->val_loss, st->val_acc);
    snprintf(line, sizeof line, "%d,%.9g,%.6g,%s,%s,%.4f,%.1f%s\n", epoch + 1, st->train_loss,
             st->train_acc, tl, ta, st->seconds, ips, val);
    return metrics_append(r, line);
}

static void diverged(const run *r, int epoch, const epoch_stats *st, errbuf *err) {
    if (st->diverged_layer < 0)
        errorf(err, "training diverged at epoch %d, step %d: the loss is not finite (lower "
               "training.learning_rate?); parameters not saved", epoch + 1, st->diverged_step);
    else
        errorf(err, "training diverged at epoch %d, step %d: %s (%s) has a NaN or infinite "
               "weight (lower training.learning_rate?); parameters not saved", epoch + 1,
               st->diverged_step, r->cfg.layers[st->diverged_layer].path,
               r->t.net.layers[st->diverged_layer].ops->type);
}

/* Stopped: a run stopped mid-epoch saves its position in the epoch (one stopped at an epoch's
 * end was saved with it). */
static run_end stopped(run *r, errbuf *err) {
    if (!r->cfg.checkpoint_path) return RUN_STOPPED;
    if (r->writer && r->t.pos.position > 0 &&
        checkpoint_save(r->cfg.checkpoint_path, &r->t, r->epoch, r->metrics, err))
        return RUN_FAILED;
    r->checkpoint_written = 1;
    return RUN_STOPPED;
}

/* What the writer writes after an epoch: the metrics, the best parameters, the checkpoint. */
static int epoch_files(run *r, int epoch, double val_acc, int stop, errbuf *err) {
    const run_files *f = &r->files;
    if (r->writer && f->metrics && write_file_atomic(f->metrics, r->metrics, r->metrics_len, err))
        return -1;
    if (f->save_best && val_acc > r->best_val_acc) {
        r->best_val_acc = val_acc;
        if (r->writer && model_save(f->save_best, &r->t.net, r->t.params, &r->cfg, err)) return -1;
    }
    const int every = r->cfg.checkpoint_every_epochs;
    if (r->writer && r->cfg.checkpoint_path && ((every > 0 && (epoch + 1) % every == 0) || stop) &&
        checkpoint_save(r->cfg.checkpoint_path, &r->t, epoch + 1, r->metrics, err))
        return -1;
    return 0;
}

run_end run_train(run *r, const run_hooks *hooks, errbuf *err) {
    static const run_hooks none = {0};
    r->hooks = hooks ? hooks : &none;
    r->t.step_hook = after_step;
    r->t.step_ctx = r;
    if (r->files.profile) profile_enable();
    for (int epoch = r->first_epoch; epoch < r->cfg.epochs; epoch++) {
        r->epoch = epoch;
        epoch_stats st;
        trainer_epoch(&r->t, epoch, &st);
        if (r->step_failed) {
            *err = r->step_err;
            return RUN_FAILED;
        }
        if (st.diverged) {
            /* The epochs before (of this run, or of the run it resumes) keep their rows. */
            if (r->writer && r->files.metrics && strchr(r->metrics, '\n') !=
                                                     r->metrics + r->metrics_len - 1 &&
                write_file_atomic(r->files.metrics, r->metrics, r->metrics_len, err))
                return RUN_FAILED;
            diverged(r, epoch, &st, err);
            return RUN_DIVERGED;
        }
        if (st.stopped) return stopped(r, err);
        if (report_epoch(r, epoch, &st)) {
            oomf(err, "out of memory");
            return RUN_FAILED;
        }
        /* A stop asked for during the evaluation stops every process here. */
        const int stop = dist_any(r->dist, r->hooks->stop && r->hooks->stop(r->hooks->ctx));
        if (epoch_files(r, epoch, st.val_acc, stop, err)) return RUN_FAILED;
        if (stop) return stopped(r, err);
    }
    return RUN_FINISHED;
}

int run_finish(run *r, errbuf *err) {
    if (!r->writer) return 0;
    if (r->files.save && model_save(r->files.save, &r->t.net, r->t.params, &r->cfg, err))
        return -1;
    if (r->files.profile) {
        char table[32768];
        int len = profile_csv(table, sizeof table, r->t.threads);
        /* Then the training time of each layer's forward and backward calls (and the
         * input-gradient part of conv2d's and dense's backward) and of the optimizer's updates
         * (wall seconds in wall_s, calls in regions), phase "layers". */
        const net *n = &r->t.net;
        for (int i = 0; i <= n->n_layers && len >= 0; i++) {
            for (int part = 0; part < PROFILE_PARTS; part++) {
                if ((i == n->n_layers) != (part == PROFILE_STEP) || i >= PROFILE_MAX_LAYERS)
                    continue;
                long calls = 0;
                const double seconds = profile_layer_seconds(i, part, &calls);
                char site[96];
                static const char *const parts[PROFILE_PARTS] = {"forward", "backward",
                                                                 "input-gradient", "step"};
                if (part == PROFILE_STEP)
                    snprintf(site, sizeof site, "optimizer step");
                else
                    snprintf(site, sizeof site, "network[%d] %s %s", i, n->layers[i].ops->type,
                             parts[part]);
                int k = snprintf(table + len, sizeof table - (size_t)len,
                                 "layers,%s,%d,%ld,,,,,,%.6f,,\n", site, r->t.threads, calls,
                                 seconds);
                len = k < 0 || (size_t)k >= sizeof table - (size_t)len ? -1 : len + k;
            }
        }
        if (len < 0) return errorf(err, "%s: the profile table is too long", r->files.profile);
        if (write_file_atomic(r->files.profile, table, (size_t)len, err)) return -1;
    }
    return 0;
}

void run_close(run *r) {
    free(r->metrics);
    trainer_close(&r->t);
    dataset_free(&r->train);
    dataset_free(&r->test);
    free(r->pixel_table);
    config_free(&r->cfg);
    checkpoint_meta_free(&r->meta);
    memset(r, 0, sizeof *r);
}

int run_model_config(config *cfg, const char *config_path, const char *params_path,
                     const char *const *overrides, int n_overrides, errbuf *err) {
    if (config_path) return config_load(cfg, config_path, overrides, n_overrides, err);
    char *text = NULL, *model = NULL;
    size_t size;
    int missing = npz_read_member(params_path, "config.json", &text, &size, err);
    if (missing == 0) missing = npz_read_member(params_path, "model.json", &model, &size, err);
    if (missing) {
        free(text);
        if (missing > 0)
            errorf(err, "%s: carries no config (a bare parameter file); give the config file too",
                   params_path);
        return -1;
    }
    cJSON *json = cJSON_Parse(model);
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(json, "base_dir");
    int rc = cJSON_IsString(base) ? config_parse_text(cfg, text, params_path, base->valuestring,
                                                      overrides, n_overrides, err)
                                  : errorf(err, "%s: model.json is damaged", params_path);
    cJSON_Delete(json);
    free(text);
    free(model);
    return rc;
}

int run_open_eval(run *r, const char *config_path, const char *params_path,
                  const char *const *overrides, int n_overrides, errbuf *err) {
    memset(r, 0, sizeof *r);
    config *cfg = &r->cfg;
    if (run_model_config(cfg, config_path, params_path, overrides, n_overrides, err))
        return err->code;
    if (!cfg->has_test) {
        errorf(err, "%s: data.test: missing, eval needs a test set", cfg->file);
        return err->code;
    }
    load_options opt = {cfg->threads, "data.test", NULL, NULL};
    if (dataset_load_split(&r->test, &cfg->test, 256, &opt, err) ||
        !(r->pixel_table = pixel_table(cfg, r->test.c, cfg->test.images, err)))
        return err->code;
    r->test.table = r->pixel_table;
    if (trainer_open(&r->t, cfg, &r->test, &r->test, err) ||
        dataset_check_labels(&r->test, split_labels_file(&cfg->test), r->t.net.n_classes, err) ||
        params_load(params_path, &r->t.net, r->t.params, err))
        return err->code;
    if (r->test.class_names && r->test.n_class_names != r->t.net.n_classes) {
        errorf(err, "%s: data.test: %s has %d class folders, but the network ends in %d classes",
               cfg->file, cfg->test.images, r->test.n_class_names, r->t.net.n_classes);
        return err->code;
    }
    return 0;
}

/* Reads the input shape the parameters were trained on from model.json, or from the
 * config's training images. */
/* The model.json a parameter file carries, parsed into *json (NULL when it is not JSON).
 * Returns 1, with *json NULL, when the file has none or cannot be read. */
static int model_json_of(const char *params_path, cJSON **json) {
    char *text = NULL;
    size_t size;
    errbuf ignore;
    *json = NULL;
    if (!params_path || npz_read_member(params_path, "model.json", &text, &size, &ignore) != 0)
        return 1;
    *json = cJSON_Parse(text);
    free(text);
    return 0;
}

int run_model_shape(const char *load, const config *cfg, shape3 *shape, errbuf *err) {
    cJSON *json;
    if (model_json_of(load, &json) == 0) {
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
    split_config first = cfg->train;
    first.limit = 1;
    if (dataset_load_split(&train, &first, 256, NULL, err)) return -1;
    *shape = (shape3){train.h, train.w, train.c};
    dataset_free(&train);
    return 0;
}

/* The class names a parameter file's model.json carries, if it has k of them (NULL
 * otherwise, or for a file without them). Free with run_free_names. */
char **run_model_class_names(const char *load, int k) {
    cJSON *json;
    model_json_of(load, &json);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(json, "class_names");
    char **names = NULL;
    if (cJSON_IsArray(list) && cJSON_GetArraySize(list) == k &&
        (names = calloc((size_t)k, sizeof *names))) {
        int c = 0;
        for (const cJSON *v = list->child; v && c < k; v = v->next, c++)
            if (!cJSON_IsString(v) || !(names[c] = strdup(v->valuestring))) break;
        if (c < k) { /* not all strings: no names */
            for (int i = 0; i < k; i++) free(names[i]);
            free(names);
            names = NULL;
        }
    }
    cJSON_Delete(json);
    return names;
}

void run_free_names(char **names, int k) {
    for (int i = 0; names && i < k; i++) free(names[i]);
    free(names);
}
