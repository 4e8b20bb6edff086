/*
 * The thread count changes speed, never results: training with 1, 2, 3, 4, 8 and 16 threads
 * must give bit-identical weights and figures, at batch 1 and with minibatches, with shuffling
 * and a partial last batch; every thread count from 1 to 16 against 1, 2 and 8 lanes, so threads
 * run both below and above the lane count. And a batch of one through the minibatch path equals
 * the per-sample path bit for bit.
 */
#include <math.h>

#include "ompcnn/train.h"
#include "testutil.h"

static dataset train_set, test_set;
static const int thread_counts[] = {1, 2, 3, 4, 8, 16};

static void setup(void) {
    load_mnist(&train_set, &test_set, 700);
}

static void teardown(void) {
    dataset_free(&train_set);
    dataset_free(&test_set);
}

/* Two conv layers with padding and stride, pooling, two dense layers. */
static const char *lenet_like =
    "{\"data\":{\"train\":{\"images\":\"x\",\"labels\":\"y\"}},"
    "\"network\":["
    "{\"type\":\"conv2d\",\"filters\":6,\"kernel\":5,\"padding\":2},{\"type\":\"relu\"},"
    "{\"type\":\"maxpool\",\"size\":2},"
    "{\"type\":\"conv2d\",\"filters\":12,\"kernel\":3,\"stride\":2,\"padding\":1},{\"type\":\"tanh\"},"
    "{\"type\":\"maxpool\",\"size\":2,\"ties\":\"all\"},"
    "{\"type\":\"dense\",\"units\":32},{\"type\":\"sigmoid\"},{\"type\":\"dense\",\"units\":10},"
    "{\"type\":\"softmax\"}],"
    "\"training\":{\"learning_rate\":0.1,\"shuffle\":true,\"seed\":7,\"init\":\"he\"}}";

typedef struct run_result {
    float *params;
    size_t n_params;
    epoch_stats stats[8];
    double moved; /* largest change of a parameter from its initial value */
} run_result;

static void train_run(config *cfg, int threads, int epochs, run_result *out) {
    trainer t;
    errbuf err;
    cfg->threads = threads;
    ck_assert_msg(trainer_open(&t, cfg, &train_set, &test_set, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(t.threads, threads);
    float *init = malloc(t.net.n_params * sizeof(float));
    memcpy(init, t.params, t.net.n_params * sizeof(float));
    for (int e = 0; e < epochs; e++) trainer_epoch(&t, e, &out->stats[e]);
    out->n_params = t.net.n_params;
    out->moved = 0.0;
    for (size_t i = 0; i < out->n_params; i++)
        out->moved = fmax(out->moved, fabs((double)t.params[i] - init[i]));
    free(init);
    /* The buffers (batchnorm's running statistics) are compared too. */
    out->n_params = net_state_size(&t.net);
    out->params = malloc(out->n_params * sizeof(float));
    memcpy(out->params, t.params, out->n_params * sizeof(float));
    trainer_close(&t);
}

static void expect_identical(const run_result *a, const run_result *b, int epochs, const char *what,
                             int threads) {
    ck_assert_uint_eq(a->n_params, b->n_params);
    for (size_t i = 0; i < a->n_params; i++)
        ck_assert_msg(memcmp(&a->params[i], &b->params[i], sizeof(float)) == 0,
                      "%s, %d threads: parameter %zu is %.9g, with 1 thread %.9g", what, threads,
                      i, b->params[i], a->params[i]);
    for (int e = 0; e < epochs; e++) {
        ck_assert_msg(a->stats[e].train_loss == b->stats[e].train_loss &&
                          a->stats[e].test_loss == b->stats[e].test_loss &&
                          a->stats[e].train_acc == b->stats[e].train_acc &&
                          a->stats[e].test_acc == b->stats[e].test_acc,
                      "%s, %d threads: epoch %d figures differ", what, threads, e + 1);
    }
}

static void check_thread_counts(config *cfg, int epochs, double min_acc, const char *what) {
    run_result base, other;
    train_run(cfg, 1, epochs, &base);
    /* The run must actually have learned something for the comparison to mean much (the
     * report's net sits near chance for its first few hundred steps, so min_acc is 0 there). */
    ck_assert_msg(base.stats[epochs - 1].train_acc >= min_acc, "%s: accuracy %.3f", what,
                  base.stats[epochs - 1].train_acc);
    ck_assert_msg(base.moved > 1e-3, "%s: the weights moved only %.3g", what, base.moved);
    for (size_t k = 1; k < sizeof thread_counts / sizeof thread_counts[0]; k++) {
        train_run(cfg, thread_counts[k], epochs, &other);
        expect_identical(&base, &other, epochs, what, thread_counts[k]);
        free(other.params);
    }
    free(base.params);
}

START_TEST(test_report_net_batch1) {
    const char *const set[] = {"data.train.limit=300", "training.epochs=1"};
    config cfg;
    parse_config_or_die(&cfg, SRC_PATH("config/report.json"), set, 2);
    check_thread_counts(&cfg, 1, 0.0, "report net, batch 1");
    config_free(&cfg);
}
END_TEST

START_TEST(test_lenet_batch32) {
    config cfg;
    errbuf err;
    ck_assert_msg(config_parse_text(&cfg, lenet_like, "lenet", ".", NULL, 0, &err) == 0, "%s",
                  err.msg);
    cfg.batch_size = 32; /* 700 images: 21 full batches and one of 28, 22 steps an epoch */
    check_thread_counts(&cfg, 3, 0.25, "lenet, batch 32");
    config_free(&cfg);
}
END_TEST

START_TEST(test_lenet_batch7_partial) {
    config cfg;
    errbuf err;
    ck_assert_msg(config_parse_text(&cfg, lenet_like, "lenet", ".", NULL, 0, &err) == 0, "%s",
                  err.msg);
    cfg.batch_size = 7;  /* 700 = 100 batches; limit 698 leaves a last batch of 5 */
    train_set.n = 698;
    check_thread_counts(&cfg, 2, 0.25, "lenet, batch 7");
    train_set.n = 700;
    config_free(&cfg);
}
END_TEST

/* With momentum, weight decay, a cosine schedule with warm-up, dropout, shift augmentation and
 * shuffling all on, the weights still do not depend on the thread count; adam likewise. */
START_TEST(test_lenet_optimizers) {
    config cfg;
    errbuf err;
    const char *const dropout[] = {"network[7]={\"type\":\"dropout\",\"rate\":0.3}",
                                   "training.augment_shift=2"};
    ck_assert_msg(config_parse_text(&cfg, lenet_like, "lenet", ".", dropout, 2, &err) == 0, "%s",
                  err.msg);
    cfg.batch_size = 16;
    cfg.learning_rate = 0.05;
    cfg.optimizer = (optimizer_config){OPT_NESTEROV, 0.9, 1e-4, 0.9, 0.999, 1e-8};
    cfg.schedule = (schedule_config){SCHEDULE_COSINE, 1, 0.1, 0.5};
    cfg.epochs = 2;
    check_thread_counts(&cfg, 2, 0.25, "lenet, nesterov");
    config_free(&cfg);
    ck_assert_msg(config_parse_text(&cfg, lenet_like, "lenet", ".", NULL, 0, &err) == 0, "%s",
                  err.msg);
    cfg.batch_size = 16;
    cfg.learning_rate = 0.002;
    cfg.optimizer = (optimizer_config){OPT_ADAM, 0.9, 0, 0.9, 0.999, 1e-8};
    cfg.epochs = 2;
    check_thread_counts(&cfg, 2, 0.25, "lenet, adam");
    config_free(&cfg);
}
END_TEST

/* Trains cfg (one setting changed by the caller) and expects weights other than `with`. */
static void expect_change(config *cfg, const run_result *with, const char *what) {
    run_result without;
    train_run(cfg, 2, 1, &without);
    ck_assert_msg(memcmp(with->params, without.params, with->n_params * sizeof(float)) != 0,
                  "%s does not change the weights", what);
    free(without.params);
}

/* Left-right flips, rotations, random zoom, label smoothing and a global average pool: still
 * independent of the thread count, and each of the first four really changes the weights (so it
 * is wired in). */
START_TEST(test_flip_smoothing_globalavgpool) {
    config cfg;
    errbuf err;
    const char *const set[] = {"training.augment_flip=true", "training.label_smoothing=0.1",
                               "training.shuffle=true", "training.augment_rotate=12.5",
                               "training.augment_scale=0.15"};
    ck_assert_msg(config_parse_text(&cfg, lenet_like, "lenet", ".", set, 5, &err) == 0, "%s",
                  err.msg);
    cfg.batch_size = 16;
    cfg.learning_rate = 0.05;
    cfg.optimizer = (optimizer_config){OPT_MOMENTUM, 0.9, 0, 0.9, 0.999, 1e-8};
    check_thread_counts(&cfg, 2, 0.2, "lenet, flips and label smoothing");
    run_result both;
    train_run(&cfg, 2, 1, &both);
    cfg.augment_flip = 0;
    expect_change(&cfg, &both, "augment_flip");
    cfg.augment_flip = 1;
    cfg.label_smoothing = 0.0;
    expect_change(&cfg, &both, "label_smoothing");
    cfg.label_smoothing = 0.1;
    cfg.augment_rotate = 0.0;
    expect_change(&cfg, &both, "augment_rotate");
    cfg.augment_rotate = 12.5;
    cfg.augment_scale = 0.0;
    expect_change(&cfg, &both, "augment_scale");
    free(both.params);
    config_free(&cfg);
    const char *const gap[] = {
        "network=[{\"type\":\"conv2d\",\"filters\":8,\"kernel\":3},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"filters\":16,\"kernel\":3,\"stride\":2},{\"type\":\"relu\"},"
        "{\"type\":\"globalavgpool\"},{\"type\":\"dense\",\"units\":10},"
        "{\"type\":\"softmax\"}]"};
    ck_assert_msg(config_parse_text(&cfg, lenet_like, "gap", ".", gap, 1, &err) == 0, "%s",
                  err.msg);
    cfg.batch_size = 16;
    cfg.learning_rate = 0.05;
    cfg.optimizer = (optimizer_config){OPT_MOMENTUM, 0.9, 0, 0.9, 0.999, 1e-8};
    check_thread_counts(&cfg, 2, 0.15, "global average pool");
    config_free(&cfg);
}
END_TEST

/* For each lane count: the run with 1 thread against the given thread counts (epochs, figures
 * and weights bit-identical), the weights must move and reach min_acc test accuracy, and each
 * lane count other than the first must give other weights than the first. */
static void check_threads_by_lanes(config *cfg, const int *lane_counts, int n_counts,
                                   const int *threads, int n_threads, int epochs, double min_acc,
                                   const char *name) {
    float *first_lanes = NULL;
    for (int k = 0; k < n_counts; k++) {
        cfg->lanes = lane_counts[k];
        char what[96];
        snprintf(what, sizeof what, "%s, %d lanes", name, cfg->lanes);
        run_result base, other;
        train_run(cfg, 1, epochs, &base);
        ck_assert_msg(base.moved > 1e-3, "%s: the weights moved only %.3g", what, base.moved);
        ck_assert_msg(base.stats[epochs - 1].test_acc >= min_acc, "%s: test accuracy %.3f", what,
                      base.stats[epochs - 1].test_acc);
        for (int t = 0; t < n_threads; t++) {
            train_run(cfg, threads[t], epochs, &other);
            expect_identical(&base, &other, epochs, what, threads[t]);
            free(other.params);
        }
        if (!first_lanes) {
            first_lanes = base.params;
            continue;
        }
        ck_assert_msg(memcmp(first_lanes, base.params, base.n_params * sizeof(float)) != 0,
                      "%s: the same weights as with %d lanes", what, lane_counts[0]);
        free(base.params);
    }
    free(first_lanes);
}

/* Every thread count from 1 to 16 against lanes 1, 2 and 8 (threads below, at and above the lane
 * count), with dropout, shifts and shuffling, a batch of 12 that 8 lanes cut into lanes of one
 * and two samples, and a test set whose evaluation passes grow with the thread count. The lane
 * count itself must change the weights (the sums are order-sensitive), or the comparison could
 * not see a lane sum added in another order. */
START_TEST(test_threads_by_lanes) {
    config cfg;
    errbuf err;
    const char *const set[] = {"network[7]={\"type\":\"dropout\",\"rate\":0.3}",
                               "training.augment_shift=2"};
    ck_assert_msg(config_parse_text(&cfg, lenet_like, "lenet", ".", set, 2, &err) == 0, "%s",
                  err.msg);
    cfg.batch_size = 12;
    cfg.optimizer = (optimizer_config){OPT_MOMENTUM, 0.9, 1e-4, 0.9, 0.999, 1e-8};
    train_set.n = 174; /* 14 full batches and one of 6 */
    test_set.n = 300;
    static const int lane_counts[] = {1, 2, 8};
    int threads[15];
    for (int t = 0; t < 15; t++) threads[t] = t + 2; /* 2 to 16 */
    check_threads_by_lanes(&cfg, lane_counts, 3, threads, 15, 1, 0.0, "lenet, batch 12");
    train_set.n = 700;
    test_set.n = 700;
    config_free(&cfg);
}
END_TEST

/* Batch normalisation after both convolutions and the first dense layer: the statistics are the
 * whole batch's, summed lane by lane, so thread counts from 1 to 16 give the same weights and
 * running statistics for 1, 3 and 8 lanes (with a partial last batch, dropout and flips), and
 * evaluation, which uses the running statistics, the same figures. The network must learn, and
 * the lane count must change the weights (the sums are order-sensitive). */
START_TEST(test_batchnorm_threads_by_lanes) {
    config cfg;
    errbuf err;
    const char *const set[] = {
        "network=[{\"type\":\"conv2d\",\"filters\":6,\"kernel\":5,\"padding\":2},"
        "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"maxpool\",\"size\":2},"
        "{\"type\":\"conv2d\",\"filters\":12,\"kernel\":3,\"stride\":2,\"padding\":1},"
        "{\"type\":\"batchnorm\",\"momentum\":0.2},{\"type\":\"relu\"},"
        "{\"type\":\"dense\",\"units\":32},{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
        "{\"type\":\"dropout\",\"rate\":0.2},{\"type\":\"dense\",\"units\":10},"
        "{\"type\":\"softmax\"}]",
        "training.augment_flip=true"};
    ck_assert_msg(config_parse_text(&cfg, lenet_like, "bn", ".", set, 2, &err) == 0, "%s",
                  err.msg);
    cfg.batch_size = 20;
    cfg.optimizer = (optimizer_config){OPT_MOMENTUM, 0.9, 1e-4, 0.9, 0.999, 1e-8};
    train_set.n = 210; /* 10 full batches and one of 10 */
    test_set.n = 300;
    static const int lane_counts[] = {1, 3, 8}, threads[] = {2, 3, 4, 8, 12, 16};
    check_threads_by_lanes(&cfg, lane_counts, 3, threads, 6, 2, 0.3, "batchnorm, batch 20");
    train_set.n = 700;
    test_set.n = 700;
    config_free(&cfg);
}
END_TEST

/* A batch of one through the minibatch path (lanes, mean gradient) must be exactly the
 * per-sample path that batch_size 1 takes. */
START_TEST(test_batch1_paths_agree) {
    config cfg;
    parse_config_or_die(&cfg, SRC_PATH("config/report.json"), NULL, 0);
    dataset first200 = train_set;
    first200.n = 200;
    for (int threads = 1; threads <= 2; threads++) {
        cfg.threads = threads;
        trainer a, b;
        errbuf err;
        ck_assert_msg(trainer_open(&a, &cfg, &first200, NULL, &err) == 0, "%s", err.msg);
        ck_assert_msg(trainer_open(&b, &cfg, &first200, NULL, &err) == 0, "%s", err.msg);
        epoch_stats st;
        cfg.eval_every = 0;
        trainer_epoch(&a, 0, &st); /* batch_size 1: the per-sample path */
        double loss_sum = 0.0;
        for (int i = 0; i < 200; i++) {
            double loss;
            int hits;
            trainer_step(&b, &i, 1, &loss, &hits);
            loss_sum += loss;
        }
        ck_assert_int_eq(memcmp(a.params, b.params, a.net.n_params * sizeof(float)), 0);
        ck_assert(loss_sum / 200 == st.train_loss);
        trainer_close(&a);
        trainer_close(&b);
    }
    config_free(&cfg);
}
END_TEST

/* Shuffling draws from (seed, epoch): a permutation, different each epoch, same every run. */
START_TEST(test_shuffle_is_keyed) {
    config cfg;
    errbuf err;
    ck_assert_msg(config_parse_text(&cfg, lenet_like, "lenet", ".", NULL, 0, &err) == 0, "%s",
                  err.msg);
    trainer t;
    ck_assert_int_eq(trainer_open(&t, &cfg, &train_set, NULL, &err), 0);
    t.train = &(dataset){.n = 0}; /* train nothing: only the order is wanted */
    int *seen = calloc(700, sizeof *seen);
    int first[2][700];
    for (int e = 0; e < 2; e++) {
        epoch_stats st;
        dataset fake = train_set;
        fake.n = 700;
        t.train = &fake;
        cfg.learning_rate = 1e-30;
        trainer_epoch(&t, e, &st);
        memcpy(first[e], t.order, sizeof first[e]);
    }
    for (int i = 0; i < 700; i++) seen[first[0][i]]++;
    for (int i = 0; i < 700; i++) ck_assert_int_eq(seen[i], 1);
    ck_assert_int_ne(memcmp(first[0], first[1], sizeof first[0]), 0);
    int moved = 0;
    for (int i = 0; i < 700; i++) moved += first[0][i] != i;
    ck_assert_int_gt(moved, 600);
    free(seen);
    trainer_close(&t);
    config_free(&cfg);
}
END_TEST

/* A non-finite weight is found in its layer; finite weights are not flagged. */
START_TEST(test_bad_layer_is_named) {
    config cfg;
    parse_config_or_die(&cfg, SRC_PATH("config/report.json"), NULL, 0);
    trainer t;
    errbuf err;
    ck_assert_int_eq(trainer_open(&t, &cfg, &train_set, NULL, &err), 0);
    ck_assert_int_eq(trainer_bad_layer(&t), -1);
    t.params[t.net.layers[5].param_off + 3] = INFINITY;
    ck_assert_int_eq(trainer_bad_layer(&t), 5);
    t.params[t.net.layers[0].param_off] = NAN;
    ck_assert_int_eq(trainer_bad_layer(&t), 0);
    trainer_close(&t);
    config_free(&cfg);
}
END_TEST

static Suite *threads_suite(void) {
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("determinism");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_report_net_batch1);
    tcase_add_test(tc, test_lenet_batch32);
    tcase_add_test(tc, test_lenet_batch7_partial);
    tcase_add_test(tc, test_batch1_paths_agree);
    tcase_add_test(tc, test_lenet_optimizers);
    tcase_add_test(tc, test_threads_by_lanes);
    tcase_add_test(tc, test_batchnorm_threads_by_lanes);
    tcase_add_test(tc, test_flip_smoothing_globalavgpool);
    tcase_add_test(tc, test_shuffle_is_keyed);
    tcase_add_test(tc, test_bad_layer_is_named);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(threads_suite)
