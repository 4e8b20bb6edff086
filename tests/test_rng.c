/*
 * The generator against numpy itself: tests/fixtures/numpy_rng.txt holds numpy's legacy draws
 * (tools/make_rng_fixture.py) for seeds 0, 1 and 12345, which must match exactly.
 */
#include <math.h>

#include "ompcnn/rng.h"
#include "testutil.h"

START_TEST(test_matches_numpy_exactly) {
    FILE *f = fopen(SRC_PATH("tests/fixtures/numpy_rng.txt"), "r");
    ck_assert_ptr_nonnull(f);
    char line[128];
    long current = -1, checked = 0;
    mt19937 rng;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        long seed;
        char kind[16];
        double want;
        ck_assert_int_eq(sscanf(line, "%ld %15s %lf", &seed, kind, &want), 3);
        if (seed != current) {
            mt_seed(&rng, (uint32_t)seed);
            current = seed;
        }
        double got = strcmp(kind, "gauss") == 0 ? mt_gauss(&rng) : mt_double(&rng);
        ck_assert_msg(got == want, "seed %ld draw %ld (%s): got %.17g, numpy %.17g", seed, checked,
                      kind, got, want);
        checked++;
    }
    fclose(f);
    ck_assert_int_eq(checked, 3 * 1101);
}
END_TEST

START_TEST(test_keyed_below_is_uniform_and_in_range) {
    /* 60000 draws over 10 buckets: each bucket within 5% of 6000 (a loose chi-square). */
    int counts[10] = {0};
    for (uint64_t i = 0; i < 60000; i++) {
        uint64_t r = keyed_below(12345, i, 10);
        ck_assert_uint_lt(r, 10);
        counts[r]++;
    }
    for (int b = 0; b < 10; b++) ck_assert_int_lt(abs(counts[b] - 6000), 300);
    ck_assert_uint_eq(keyed_below(7, 3, 1000), keyed_below(7, 3, 1000));
    ck_assert_uint_ne(keyed_below(7, 3, 1u << 30), keyed_below(8, 3, 1u << 30));
}
END_TEST

static Suite *rng_suite(void) {
    Suite *s = suite_create("rng");
    TCase *tc = tcase_create("rng");
    tcase_add_test(tc, test_matches_numpy_exactly);
    tcase_add_test(tc, test_keyed_below_is_uniform_and_in_range);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(rng_suite)
