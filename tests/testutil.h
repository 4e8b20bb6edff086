/*
 * Helpers shared by the Check suites: where the sources and fixtures are, temporary files,
 * reading numeric fixtures, running the trainer binary, and the standard main().
 */
#ifndef OMPCNN_TESTUTIL_H
#define OMPCNN_TESTUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ompcnn/config.h"
#include "ompcnn/data.h"

#define SRC_PATH(rel) OMPCNN_SOURCE_DIR "/" rel

/* Reads whitespace-separated doubles from a text file (lines starting with # skipped). */
static inline double *read_doubles(const char *path, size_t *count) {
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open fixture %s", path);
    size_t cap = 1024, n = 0;
    double *v = malloc(cap * sizeof *v);
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
        v[n++] = strtod(line, NULL);
    }
    fclose(f);
    *count = n;
    return v;
}

/* A fresh temporary folder for a test (removed by the test harness's tmp cleaning). */
static inline void temp_dir(char *buf, size_t size) {
    snprintf(buf, size, "%s/ompcnn-test-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

static inline void write_bytes(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, size, f), size);
    fclose(f);
}

/* Runs a shell command, capturing stdout+stderr into out; returns the exit status. */
static inline int run_capture(const char *cmd, char *out, size_t size) {
    char full[8192];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The report's network on the first `limit` MNIST images. */
static inline void load_mnist(dataset *train, dataset *test, int limit) {
    errbuf err;
    ck_assert_msg(dataset_load(train, SRC_PATH("data/mnist/train-images-idx3-ubyte.gz"),
                               SRC_PATH("data/mnist/train-labels-idx1-ubyte.gz"), limit, 10,
                               &err) == 0,
                  "%s", err.msg);
    if (test)
        ck_assert_msg(dataset_load(test, SRC_PATH("data/mnist/t10k-images-idx3-ubyte.gz"),
                                   SRC_PATH("data/mnist/t10k-labels-idx1-ubyte.gz"), limit, 10,
                                   &err) == 0,
                      "%s", err.msg);
}

static inline void parse_config_or_die(config *cfg, const char *path, const char *const *overrides,
                                       int n_overrides) {
    errbuf err;
    ck_assert_msg(config_load(cfg, path, overrides, n_overrides, &err) == 0, "%s", err.msg);
}

#define TEST_MAIN(make_suite)                                                                      \
    int main(void) {                                                                               \
        SRunner *runner = srunner_create(make_suite());                                           \
        srunner_run_all(runner, CK_NORMAL);                                                        \
        int failed = srunner_ntests_failed(runner);                                                \
        srunner_free(runner);                                                                      \
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;                                               \
    }

#endif
