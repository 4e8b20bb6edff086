/*
 * The report's arithmetic against the independent numpy reference (tools/report_reference.py):
 * seed 0, the first 1000 training images, one epoch of per-sample SGD at lr 0.01. The loss of
 * every step must agree within 1e-4 relative and every weight after the epoch within 1e-4
 * absolute, with the printed double-sigmoid backward, with the true derivative, and with the
 * printed max-pool index line.
 */
#include <math.h>

#include "ompcnn/train.h"
#include "testutil.h"

static dataset train_set;

static void setup(void) {
    load_mnist(&train_set, NULL, 1000);
}

static void teardown(void) {
    dataset_free(&train_set);
}

typedef struct step_log {
    const float *sample_loss; /* the trainer's per-sample losses; [0] is the last step's */
    const double *want;
    const char *fixture;
    int steps;
} step_log;

static int check_step(void *ctx, int done, int total) {
    step_log *log = ctx;
    double loss = log->sample_loss[0], want = log->want[done - 1];
    (void)total;
    ck_assert_int_eq(done, log->steps + 1);
    ck_assert_msg(fabs(loss - want) <= 1e-4 * fabs(want), "%s: step %d: loss %.9g, numpy %.9g",
                  log->fixture, done - 1, loss, want);
    log->steps++;
    return 0;
}

static void check_against_reference(const char *fixture, const char *const *overrides,
                                    int n_overrides, int threads) {
    char path[512];
    size_t n_losses, n_weights;
    snprintf(path, sizeof path, "%s/tests/fixtures/%s.losses.txt", OMPCNN_SOURCE_DIR, fixture);
    double *losses = read_doubles(path, &n_losses);
    snprintf(path, sizeof path, "%s/tests/fixtures/%s.weights.txt", OMPCNN_SOURCE_DIR, fixture);
    double *weights = read_doubles(path, &n_weights);
    ck_assert_uint_eq(n_losses, 1000);

    config cfg;
    parse_config_or_die(&cfg, SRC_PATH("config/report.json"), overrides, n_overrides);
    cfg.threads = threads;
    cfg.eval_every = 0;
    trainer t;
    errbuf err;
    ck_assert_msg(trainer_open(&t, &cfg, &train_set, NULL, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(t.net.n_params, n_weights);
    /* One epoch through the batch-1 path; the progress hook sees each step's loss. */
    step_log log = {t.sample_loss, losses, fixture, 0};
    t.step_hook = check_step;
    t.step_ctx = &log;
    epoch_stats st;
    trainer_epoch(&t, 0, &st);
    ck_assert_int_eq(log.steps, 1000);
    /* The saved order is the reference's: conv filters, dense W and b, output W and b. */
    double worst = 0.0;
    for (size_t k = 0; k < n_weights; k++) {
        ck_assert_msg(fabs(t.params[k] - weights[k]) <= 1e-4,
                      "%s: parameter %zu: %.9g, numpy %.9g", fixture, k, t.params[k], weights[k]);
        worst = fmax(worst, fabs(t.params[k] - weights[k]));
    }
    /* One epoch moves the conv filters so little that the sigmoid switch changes them by only
     * 5e-5, inside the 1e-4 above. float32 training stays within 5e-7 of numpy's float64, so a
     * 5e-6 bound separates the switch's settings; without it this test could not fail on them. */
    ck_assert_msg(worst <= 5e-6, "%s: largest parameter difference %.3g exceeds 5e-6", fixture,
                  worst);
    trainer_close(&t);
    config_free(&cfg);
    free(losses);
    free(weights);
}

START_TEST(test_printed_sigmoid) {
    check_against_reference("report_seed0", NULL, 0, 1);
}
END_TEST

START_TEST(test_true_sigmoid_derivative) {
    const char *const set[] = {"network[1].double_sigmoid_backward=false"};
    check_against_reference("report_seed0_correct_sigmoid", set, 1, 1);
}
END_TEST

START_TEST(test_printed_pool_index) {
    const char *const set[] = {"network[2].report_index_bug=true"};
    check_against_reference("report_seed0_pool_index_bug", set, 1, 1);
}
END_TEST

START_TEST(test_printed_sigmoid_two_threads) {
    check_against_reference("report_seed0", NULL, 0, 2);
}
END_TEST

/* The epoch's reported loss and accuracy are the per-sample figures accumulated as trained. */
START_TEST(test_epoch_figures_accumulate_steps) {
    size_t n_losses;
    double *losses = read_doubles(SRC_PATH("tests/fixtures/report_seed0.losses.txt"), &n_losses);
    double mean = 0.0;
    for (size_t i = 0; i < n_losses; i++) mean += losses[i] / n_losses;
    const char *const set[] = {"training.epochs=1"};
    config cfg;
    parse_config_or_die(&cfg, SRC_PATH("config/report.json"), set, 1);
    trainer t;
    errbuf err;
    ck_assert_msg(trainer_open(&t, &cfg, &train_set, NULL, &err) == 0, "%s", err.msg);
    epoch_stats st;
    trainer_epoch(&t, 0, &st);
    ck_assert_double_eq_tol(st.train_loss, mean, 1e-4 * mean);
    ck_assert(isnan(st.test_loss));
    trainer_close(&t);
    config_free(&cfg);
    free(losses);
}
END_TEST

static Suite *report_suite(void) {
    Suite *s = suite_create("report");
    TCase *tc = tcase_create("numpy reference");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_printed_sigmoid);
    tcase_add_test(tc, test_true_sigmoid_derivative);
    tcase_add_test(tc, test_printed_pool_index);
    tcase_add_test(tc, test_printed_sigmoid_two_threads);
    tcase_add_test(tc, test_epoch_figures_accumulate_steps);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(report_suite)
