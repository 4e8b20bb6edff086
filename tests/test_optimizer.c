/*
 * Optimizer steps and learning-rate schedules against values computed by hand from their
 * definitions (see src/optimizer.c).
 */
#include <math.h>

#include "ompcnn/optimizer.h"
#include "testutil.h"

/* Two steps on one parameter w = 1 with gradient sums g over `count` samples, lr 0.1. */
static void two_steps(optimizer_config o, const float *g, int count, float *w_after) {
    float w = 1.0f, s1 = 0.0f, s2 = 0.0f;
    for (int step = 1; step <= 2; step++) {
        ck_assert_int_eq(optimizer_step(&o, &w, &s1, &s2, &g[step - 1], 1, 1, count, 0.1, step, 1),
                         0);
        w_after[step - 1] = w;
    }
}

START_TEST(test_sgd_and_weight_decay) {
    const float g[2] = {1.0f, 1.0f}; /* sums over 2 samples: mean 0.5 */
    float w[2];
    two_steps((optimizer_config){OPT_SGD, 0, 0, 0, 0, 0}, g, 2, w);
    ck_assert_float_eq_tol(w[0], 0.95f, 1e-7);        /* 1 - 0.1 * 0.5 */
    ck_assert_float_eq_tol(w[1], 0.90f, 1e-7);
    two_steps((optimizer_config){OPT_SGD, 0, 0.01, 0, 0, 0}, g, 2, w);
    ck_assert_float_eq_tol(w[0], 0.949f, 1e-7);       /* g = 0.5 + 0.01 * 1 */
    ck_assert_float_eq_tol(w[1], 0.949f - 0.1f * (0.5f + 0.01f * 0.949f), 1e-7);
}
END_TEST

START_TEST(test_momentum_and_nesterov) {
    const float g[2] = {0.5f, 0.5f};
    float w[2];
    two_steps((optimizer_config){OPT_MOMENTUM, 0.9, 0, 0, 0, 0}, g, 1, w);
    ck_assert_float_eq_tol(w[0], 0.95f, 1e-7);        /* v = 0.5 */
    ck_assert_float_eq_tol(w[1], 0.855f, 1e-7);       /* v = 0.9 * 0.5 + 0.5 = 0.95 */
    two_steps((optimizer_config){OPT_NESTEROV, 0.9, 0, 0, 0, 0}, g, 1, w);
    ck_assert_float_eq_tol(w[0], 0.905f, 1e-7);       /* 1 - 0.1 * (0.5 + 0.9 * 0.5) */
    ck_assert_float_eq_tol(w[1], 0.905f - 0.1f * (0.5f + 0.9f * 0.95f), 1e-7);
}
END_TEST

START_TEST(test_adam) {
    const float g[2] = {0.5f, -0.25f};
    float w[2];
    two_steps((optimizer_config){OPT_ADAM, 0, 0, 0.9, 0.999, 1e-8}, g, 1, w);
    /* Step 1: m = 0.05, v = 0.00025; m / (1 - 0.9) = 0.5, sqrt(v / (1 - 0.999)) = 0.5. */
    ck_assert_float_eq_tol(w[0], 1.0f - 0.1f * 0.5f / (0.5f + 1e-8f), 1e-6);
    /* Step 2: m = 0.9 * 0.05 - 0.025 = 0.02, v = 0.999 * 0.00025 + 0.001 * 0.0625 */
    double m = 0.02, v = 0.999 * 0.00025 + 0.001 * 0.0625;
    double mhat = m / (1 - 0.81), vhat = v / (1 - 0.999 * 0.999);
    ck_assert_float_eq_tol(w[1], w[0] - 0.1 * mhat / (sqrt(vhat) + 1e-8), 1e-6);
}
END_TEST

START_TEST(test_lanes_are_summed) {
    /* Three lanes of two parameters: the mean over 4 samples of the lane sums. */
    const float grads[6] = {1, 2, 3, 4, 5, 6};
    float w[2] = {0, 0};
    optimizer_config o = {OPT_SGD, 0, 0, 0, 0, 0};
    optimizer_step(&o, w, NULL, NULL, grads, 3, 2, 4, 1.0, 1, 1);
    ck_assert_float_eq(w[0], -(1 + 3 + 5) / 4.0f);
    ck_assert_float_eq(w[1], -(2 + 4 + 6) / 4.0f);
}
END_TEST

START_TEST(test_nan_is_reported) {
    const float g[1] = {NAN};
    float w = 1.0f, s = 0.0f;
    optimizer_config o = {OPT_MOMENTUM, 0.9, 0, 0, 0, 0};
    ck_assert_int_ne(optimizer_step(&o, &w, &s, NULL, g, 1, 1, 1, 0.1, 1, 1), 0);
}
END_TEST

START_TEST(test_schedules) {
    schedule_config constant = {SCHEDULE_CONSTANT, 1, 0.1, 0};
    ck_assert_double_eq(schedule_lr(&constant, 0.1, 57, 10, 9), 0.1);
    schedule_config step = {SCHEDULE_STEP, 2, 0.1, 0};
    ck_assert_double_eq_tol(schedule_lr(&step, 0.1, 0, 10, 6), 0.1, 1e-15);
    ck_assert_double_eq_tol(schedule_lr(&step, 0.1, 19, 10, 6), 0.1, 1e-15);  /* epoch 1 */
    ck_assert_double_eq_tol(schedule_lr(&step, 0.1, 20, 10, 6), 0.01, 1e-15); /* epoch 2 */
    ck_assert_double_eq_tol(schedule_lr(&step, 0.1, 45, 10, 6), 0.001, 1e-15);
    schedule_config cosine = {SCHEDULE_COSINE, 1, 0.1, 0};
    ck_assert_double_eq_tol(schedule_lr(&cosine, 0.1, 0, 10, 4), 0.1, 1e-15);
    ck_assert_double_eq_tol(schedule_lr(&cosine, 0.1, 20, 10, 4), 0.05, 1e-15); /* halfway */
    ck_assert_double_eq_tol(schedule_lr(&cosine, 0.1, 10, 10, 4), 0.1 * (0.5 + 0.5 * sqrt(0.5)),
                            1e-15);
    schedule_config warm = {SCHEDULE_CONSTANT, 1, 0.1, 1.0};
    ck_assert_double_eq_tol(schedule_lr(&warm, 0.1, 0, 10, 4), 0.01, 1e-15); /* 1/10 */
    ck_assert_double_eq_tol(schedule_lr(&warm, 0.1, 4, 10, 4), 0.05, 1e-15);
    ck_assert_double_eq_tol(schedule_lr(&warm, 0.1, 9, 10, 4), 0.1, 1e-15);
    ck_assert_double_eq_tol(schedule_lr(&warm, 0.1, 30, 10, 4), 0.1, 1e-15);
}
END_TEST

static Suite *optimizer_suite(void) {
    Suite *s = suite_create("optimizer");
    TCase *tc = tcase_create("optimizer");
    tcase_add_test(tc, test_sgd_and_weight_decay);
    tcase_add_test(tc, test_momentum_and_nesterov);
    tcase_add_test(tc, test_adam);
    tcase_add_test(tc, test_lanes_are_summed);
    tcase_add_test(tc, test_nan_is_reported);
    tcase_add_test(tc, test_schedules);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(optimizer_suite)
