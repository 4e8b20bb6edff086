/*
 * Minibatch training against an independent reference: tools/minibatch_reference.py, numpy in
 * float64, written from the docs. For a small network on 12 MNIST images and several configs
 * (each optimizer, weight decay, step and cosine schedules with a warm-up that ends mid-epoch,
 * shuffling, batches cut into lanes, a partial last batch, a last batch of one sample, a batch
 * larger than the data), every parameter after every step of the run and the epoch's loss and
 * accuracy must match the fixture (tests/fixtures/minibatch_*.txt, made by
 * tools/make_minibatch_fixtures) within float32's rounding.
 */
#include <math.h>

#include "ompcnn/train.h"
#include "testutil.h"

/* The network of tools/minibatch_reference.py. */
#define NETWORK_BODY                                                                               \
    "{\"type\":\"conv2d\",\"filters\":4,\"kernel\":3,\"stride\":2},"                              \
    "{\"type\":\"relu\"},{\"type\":\"maxpool\",\"size\":2},{\"type\":\"dense\",\"units\":8},"    \
    "{\"type\":\"tanh\"},"
#define NETWORK_LAYERS NETWORK_BODY "{\"type\":\"dense\",\"units\":10},{\"type\":\"softmax\"}"
#define NETWORK "\"network\":[" NETWORK_LAYERS "]"

typedef struct fixture {
    int steps, epochs;
    size_t n_params;
    double *params;            /* steps x n_params: the parameters after each step */
    double loss[8], acc[8];    /* per epoch */
} fixture;

static void fixture_read(fixture *f, const char *name, size_t n_params) {
    char path[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/%s.txt", OMPCNN_SOURCE_DIR, name);
    FILE *in = fopen(path, "r");
    ck_assert_msg(in != NULL, "cannot open %s", path);
    memset(f, 0, sizeof *f);
    f->n_params = n_params;
    size_t cap = 16;
    f->params = malloc(cap * n_params * sizeof *f->params);
    char word[16];
    while (fscanf(in, "%15s", word) == 1) {
        if (word[0] == '#') {
            int c;
            while ((c = fgetc(in)) != '\n' && c != EOF) {}
        } else if (strcmp(word, "step") == 0) {
            int k;
            ck_assert_int_eq(fscanf(in, "%d", &k), 1);
            ck_assert_int_eq(k, f->steps + 1);
            if ((size_t)f->steps == cap) {
                cap *= 2;
                f->params = realloc(f->params, cap * n_params * sizeof *f->params);
            }
            for (size_t i = 0; i < n_params; i++)
                ck_assert_int_eq(fscanf(in, "%lf", &f->params[(size_t)f->steps * n_params + i]), 1);
            f->steps++;
        } else {
            ck_assert_str_eq(word, "epoch");
            int e;
            ck_assert_int_eq(fscanf(in, "%d %lf %lf", &e, &f->loss[f->epochs], &f->acc[f->epochs]),
                             3);
            ck_assert_int_eq(e, f->epochs + 1);
            f->epochs++;
        }
    }
    fclose(in);
}

typedef struct compare_ctx {
    trainer *t;
    const fixture *f;
    const char *name;
    int step;
    double worst; /* the largest scaled difference seen */
} compare_ctx;

/* After every step: each parameter within 2e-5 + 1e-4 |reference|. */
static int compare_step(void *ctx, int done, int total) {
    compare_ctx *c = ctx;
    (void)done, (void)total;
    ck_assert_msg(c->step < c->f->steps, "%s: more steps than the reference", c->name);
    const double *ref = c->f->params + (size_t)c->step * c->f->n_params;
    for (size_t i = 0; i < c->f->n_params; i++) {
        double got = c->t->params[i], want = ref[i];
        double scaled = fabs(got - want) / (2e-5 + 1e-4 * fabs(want));
        if (scaled > c->worst) c->worst = scaled;
        ck_assert_msg(scaled <= 1.0, "%s, step %d: parameter %zu is %.9g, the reference %.9g",
                      c->name, c->step + 1, i, got, want);
    }
    c->step++;
    return 0;
}

/* data: the config's data section, loaded as the trainer loads it; NULL: the first 12 MNIST
 * images. network: the config's network list. */
static void check_data_against(const char *name, const char *data, const char *network,
                               const char *training, int epochs) {
    char json[4096];
    snprintf(json, sizeof json,
             "{\"data\":%s,\"network\":%s,\"training\":{\"epochs\":%d,\"init\":\"he\","
             "\"seed\":3,\"eval_every\":0,%s}}",
             data ? data : "{\"train\":{\"images\":\"x\",\"labels\":\"y\"}}", network, epochs,
             training);
    config cfg;
    errbuf err;
    ck_assert_msg(config_parse_text(&cfg, json, name, OMPCNN_SOURCE_DIR, NULL, 0, &err) == 0,
                  "%s", err.msg);
    dataset train;
    float *table = NULL;
    if (data) {
        ck_assert_msg(dataset_load_split(&train, &cfg.train, 256, NULL, &err) == 0, "%s", err.msg);
        table = pixel_table(&cfg, train.c, "the data", &err);
        ck_assert_msg(table != NULL, "%s", err.msg);
        train.table = table;
    } else {
        load_mnist(&train, NULL, 12);
    }
    for (int threads = 1; threads <= 3; threads += 2) {
        cfg.threads = threads;
        trainer t;
        ck_assert_msg(trainer_open(&t, &cfg, &train, NULL, &err) == 0, "%s", err.msg);
        fixture f;
        fixture_read(&f, name, t.net.n_params);
        ck_assert_int_eq(f.epochs, epochs);
        compare_ctx c = {&t, &f, name, 0, 0.0};
        t.step_hook = compare_step;
        t.step_ctx = &c;
        for (int e = 0; e < epochs; e++) {
            epoch_stats st;
            trainer_epoch(&t, e, &st);
            ck_assert_msg(fabs(st.train_loss - f.loss[e]) <= 1e-5 * fabs(f.loss[e]),
                          "%s, epoch %d: loss %.9g, the reference %.9g", name, e + 1,
                          st.train_loss, f.loss[e]);
            ck_assert_msg(st.train_acc == f.acc[e] || fabs(st.train_acc - f.acc[e]) < 1e-9,
                          "%s, epoch %d: accuracy %.6g, the reference %.6g", name, e + 1,
                          st.train_acc, f.acc[e]);
        }
        ck_assert_msg(c.step == f.steps, "%s: %d steps, the reference %d", name, c.step, f.steps);
        free(f.params);
        trainer_close(&t);
    }
    dataset_free(&train);
    free(table);
    config_free(&cfg);
}

static void check_against(const char *name, const char *training, int epochs) {
    check_data_against(name, NULL, "[" NETWORK_LAYERS "]", training, epochs);
}

START_TEST(test_sgd) {
    check_against("minibatch_sgd",
                  "\"batch_size\":7,\"lanes\":3,\"optimizer\":\"sgd\",\"learning_rate\":0.1", 2);
}
END_TEST

START_TEST(test_momentum_step_schedule) {
    check_against("minibatch_momentum",
                  "\"batch_size\":7,\"lanes\":3,\"optimizer\":\"momentum\",\"learning_rate\":0.05,"
                  "\"weight_decay\":0.001,\"lr_schedule\":\"step\",\"lr_gamma\":0.5,"
                  "\"shuffle\":true",
                  2);
}
END_TEST

START_TEST(test_nesterov_cosine_warmup) {
    check_against("minibatch_nesterov",
                  "\"batch_size\":7,\"lanes\":3,\"optimizer\":\"nesterov\",\"learning_rate\":0.05,"
                  "\"weight_decay\":0.0005,\"lr_schedule\":\"cosine\",\"warmup_epochs\":1.5,"
                  "\"shuffle\":true",
                  2);
}
END_TEST

START_TEST(test_adam_partial_batch) {
    check_against("minibatch_adam",
                  "\"batch_size\":5,\"lanes\":2,\"optimizer\":\"adam\",\"learning_rate\":0.01,"
                  "\"weight_decay\":0.0001,\"shuffle\":true",
                  3);
}
END_TEST

START_TEST(test_batch_larger_than_data) {
    check_against("minibatch_big_batch",
                  "\"batch_size\":16,\"lanes\":8,\"optimizer\":\"momentum\",\"learning_rate\":0.1", 3);
}
END_TEST

START_TEST(test_last_batch_of_one) {
    check_against("minibatch_last_one",
                  "\"batch_size\":11,\"lanes\":3,\"optimizer\":\"sgd\",\"learning_rate\":0.1,"
                  "\"warmup_epochs\":0.5,\"weight_decay\":0.001,\"shuffle\":true",
                  2);
}
END_TEST

/* Colour from a folder of PNG files: the reading order, the decoding (against tools/pngio.py's
 * own decoder), per-channel normalisation and a three-channel convolution. */
START_TEST(test_colour_folder_normalized) {
    check_data_against("minibatch_colour",
                       "{\"train\":{\"format\":\"folder\",\"images\":"
                       "\"data/colour-shapes/train\",\"limit\":12},\"normalize\":{\"mean\":"
                       "[0.2,0.3,0.25],\"std\":[0.25,0.2,0.3]}}",
                       "[" NETWORK_BODY "{\"type\":\"dense\",\"units\":9},{\"type\":\"softmax\"}]",
                       "\"batch_size\":5,\"lanes\":2,\"optimizer\":\"momentum\","
                       "\"learning_rate\":0.05,\"shuffle\":true",
                       2);
}
END_TEST

/* The lane sums bit for bit: after one step of a batch of 12 in 3 lanes, each lane's gradient
 * buffer equals what a pass over that lane's 4 samples alone gives, and the new weights are the
 * old ones minus lr / 12 times (lane 0 + lane 1) + lane 2, added in that order in float. The data
 * are order-sensitive: adding the lanes in reverse order changes some sums, so a sum in another
 * order could not pass. */
START_TEST(test_lane_order_bitwise) {
    const char *json = "{\"data\":{\"train\":{\"images\":\"x\",\"labels\":\"y\"}}," NETWORK
                       ",\"training\":{\"init\":\"he\",\"seed\":5,\"learning_rate\":0.1,"
                       "\"batch_size\":12,\"lanes\":3,\"threads\":3}}";
    config cfg, one_lane;
    errbuf err;
    ck_assert_msg(config_parse_text(&cfg, json, "lanes", ".", NULL, 0, &err) == 0, "%s", err.msg);
    ck_assert_msg(config_parse_text(&one_lane, json, "lanes", ".", NULL, 0, &err) == 0, "%s",
                  err.msg);
    one_lane.lanes = 1;
    one_lane.batch_size = 4;
    dataset train;
    load_mnist(&train, NULL, 12);
    trainer a;
    ck_assert_msg(trainer_open(&a, &cfg, &train, NULL, &err) == 0, "%s", err.msg);
    const size_t n = a.net.n_params;
    float *before = malloc(n * sizeof *before);
    memcpy(before, a.params, n * sizeof *before);
    int samples[12];
    for (int i = 0; i < 12; i++) samples[i] = i;
    double loss;
    int hits;
    trainer_step(&a, samples, 12, &loss, &hits);
    for (int l = 0; l < 3; l++) {
        trainer b;
        ck_assert_msg(trainer_open(&b, &one_lane, &train, NULL, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(memcmp(b.params, before, n * sizeof *before), 0);
        trainer_step(&b, samples + 4 * l, 4, &loss, &hits);
        ck_assert_msg(memcmp(b.grads, a.grads + (size_t)l * n, n * sizeof(float)) == 0,
                      "lane %d's sum differs from its samples' pass alone", l);
        trainer_close(&b);
    }
    const float step = (float)(0.1 / 12);
    int order_matters = 0;
    for (size_t i = 0; i < n; i++) {
        const float *g = a.grads;
        float sum = g[i] + g[n + i];
        sum += g[2 * n + i];
        float reverse = g[2 * n + i] + g[n + i];
        reverse += g[i];
        order_matters |= memcmp(&sum, &reverse, sizeof sum) != 0;
        float want = before[i] - step * sum;
        ck_assert_msg(memcmp(&want, &a.params[i], sizeof want) == 0,
                      "parameter %zu is %.9g, lane order gives %.9g", i, a.params[i], want);
    }
    ck_assert_msg(order_matters, "no sum depends on the lane order: the test could not see it");
    free(before);
    trainer_close(&a);
    dataset_free(&train);
    config_free(&cfg);
    config_free(&one_lane);
}
END_TEST

static Suite *minibatch_suite(void) {
    Suite *s = suite_create("minibatch");
    TCase *tc = tcase_create("against the numpy reference");
    tcase_add_test(tc, test_sgd);
    tcase_add_test(tc, test_momentum_step_schedule);
    tcase_add_test(tc, test_nesterov_cosine_warmup);
    tcase_add_test(tc, test_adam_partial_batch);
    tcase_add_test(tc, test_batch_larger_than_data);
    tcase_add_test(tc, test_last_batch_of_one);
    tcase_add_test(tc, test_colour_folder_normalized);
    tcase_add_test(tc, test_lane_order_bitwise);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(minibatch_suite)
