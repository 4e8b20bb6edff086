/*
 * The trainer as users run it: help and version, exit codes, one-line messages naming the file
 * and path, output files written whole, and --set/--threads reaching the config.
 */
#include <math.h>

#include "ompcnn/npz.h"
#include "testutil.h"

#define TRAINER "'" TRAINER_PATH "'"
#define REPORT "'" OMPCNN_SOURCE_DIR "/config/report.json'"
/* A few images so that runs take milliseconds. */
#define SMALL " --set data.train.limit=20 --set data.test.limit=10 --set training.epochs=2"

static char out[65536];
static char dir[256];

static void setup(void) {
    temp_dir(dir, sizeof dir);
}

static int trainer(const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s", TRAINER, args);
    return run_capture(cmd, out, sizeof out);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

START_TEST(test_help_and_version) {
    ck_assert_int_eq(trainer("--help"), 0);
    ck_assert_ptr_nonnull(strstr(out, "Usage: trainer [OPTIONS] CONFIG.json"));
    ck_assert_ptr_nonnull(strstr(out, "--set PATH=VALUE"));
    ck_assert_ptr_nonnull(strstr(out, "Exit status"));
    ck_assert_int_eq(trainer("-h"), 0);
    ck_assert_int_eq(trainer("--version"), 0);
    ck_assert_ptr_nonnull(strstr(out, "trainer (ompcnn) " OMPCNN_VERSION));
}
END_TEST

START_TEST(test_usage_errors_exit_2) {
    ck_assert_int_eq(trainer(""), 2);
    ck_assert_ptr_nonnull(strstr(out, "missing the config file"));
    ck_assert_int_eq(trainer("--frobnicate " REPORT), 2);
    ck_assert_ptr_nonnull(strstr(out, "--frobnicate"));
    ck_assert_int_eq(trainer(REPORT " " REPORT), 2);
    ck_assert_int_eq(trainer("--threads many " REPORT), 2);
    ck_assert_ptr_nonnull(strstr(out, "--threads: expected an integer"));
    ck_assert_int_eq(trainer("--save"), 2);
}
END_TEST

START_TEST(test_config_errors_exit_2_with_one_line) {
    char path[512], args[1024];
    snprintf(path, sizeof path, "%s/bad.json", dir);
    write_bytes(path, "{\n  \"data\": 3,\n}", 16);
    snprintf(args, sizeof args, "'%s'", path);
    ck_assert_int_eq(trainer(args), 2);
    ck_assert_int_eq(count_lines(out), 1);
    ck_assert_msg(strstr(out, "bad.json:3:1: invalid JSON: trailing comma") != NULL, "%s", out);

    ck_assert_int_eq(trainer(REPORT " --set network[3].units=-4"), 2);
    ck_assert_int_eq(count_lines(out), 1);
    ck_assert_msg(strstr(out, "config/report.json: network[3].units: expected a positive integer, "
                              "got -4") != NULL,
                  "%s", out);

    ck_assert_int_eq(trainer("/no/such/config.json"), 2);
    ck_assert_msg(strstr(out, "/no/such/config.json: cannot open") != NULL, "%s", out);
}
END_TEST

START_TEST(test_data_errors_exit_2) {
    ck_assert_int_eq(trainer(REPORT " --set data.train.images=nowhere.gz"), 2);
    ck_assert_msg(strstr(out, "config/nowhere.gz: cannot open") != NULL, "%s", out);
    ck_assert_int_eq(trainer(REPORT " --set data.test.limit=20000"), 2);
    ck_assert_msg(strstr(out, "limit 20000 is larger than the 10000 samples") != NULL, "%s", out);
    /* Labels beyond the network's classes. */
    ck_assert_int_eq(trainer(REPORT SMALL " --set network[5].units=3"), 2);
    ck_assert_msg(strstr(out, "is out of range for the network's 3 classes") != NULL ||
                      strstr(out, "is out of range for 3 classes") != NULL,
                  "%s", out);
}
END_TEST

START_TEST(test_output_folder_checked_before_training) {
    ck_assert_int_eq(trainer(REPORT SMALL " --save /no/such/dir/w.npz"), 2);
    ck_assert_msg(strstr(out, "--save /no/such/dir/w.npz: the folder /no/such/dir does not exist"),
                  "%s", out);
    ck_assert_msg(strstr(out, "epoch") == NULL, "trained before failing: %s", out);
}
END_TEST

START_TEST(test_training_run_outputs) {
    char args[2048], csv[512], w[512], w0[512];
    snprintf(csv, sizeof csv, "%s/m.csv", dir);
    snprintf(w, sizeof w, "%s/w.npz", dir);
    snprintf(w0, sizeof w0, "%s/w0.npz", dir);
    snprintf(args, sizeof args, REPORT SMALL " --threads 2 --metrics '%s' --save '%s' --save-init '%s'",
             csv, w, w0);
    ck_assert_int_eq(trainer(args), 0);
    ck_assert_msg(strstr(out, "threads 2") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "seed 0") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "28x28x1 -> conv2d 8x3x3") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "epoch  2/2  train_loss ") != NULL, "%s", out);
    ck_assert_int_eq(access(w, F_OK), 0);
    ck_assert_int_eq(access(w0, F_OK), 0);
    FILE *f = fopen(csv, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "epoch,train_loss,train_acc,test_loss,test_acc,seconds,images_per_s\n");
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        int epoch;
        double tl, ta, vl, va, sec, ips;
        ck_assert_int_eq(sscanf(line, "%d,%lf,%lf,%lf,%lf,%lf,%lf", &epoch, &tl, &ta, &vl, &va,
                                &sec, &ips),
                         7);
        ck_assert_int_eq(epoch, ++rows);
        ck_assert(ta >= 0 && ta <= 1 && va >= 0 && va <= 1 && tl > 0 && vl > 0);
    }
    fclose(f);
    ck_assert_int_eq(rows, 2);

    /* --load of the initial parameters reproduces the run exactly. */
    char w2[512];
    snprintf(w2, sizeof w2, "%s/w2.npz", dir);
    snprintf(args, sizeof args, REPORT SMALL " --set training.seed=99 --load '%s' --save '%s'", w0,
             w2);
    ck_assert_int_eq(trainer(args), 0);
    /* The arrays are identical (the files differ in the config they carry: seed 99). */
    config cfg;
    parse_config_or_die(&cfg, SRC_PATH("config/report.json"), NULL, 0);
    net n;
    errbuf err;
    ck_assert_int_eq(net_build(&n, &cfg, (shape3){28, 28, 1}, &err), 0);
    float *p1 = floats_alloc(n.n_params), *p2 = floats_alloc(n.n_params);
    ck_assert_msg(params_load(w, &n, p1, &err) == 0, "%s", err.msg);
    ck_assert_msg(params_load(w2, &n, p2, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(memcmp(p1, p2, n.n_params * sizeof *p1), 0);
    aligned_free(p1), aligned_free(p2);
    net_free(&n);
    config_free(&cfg);

    /* A parameter file from another network is refused with exit 2. */
    snprintf(args, sizeof args, REPORT SMALL " --set network[3].units=21 --load '%s'", w0);
    ck_assert_int_eq(trainer(args), 2);
    ck_assert_msg(strstr(out, "3_dense_weight.npy has shape (1352, 20)") != NULL, "%s", out);
}
END_TEST

START_TEST(test_validation_and_save_best) {
    char args[2048], best[512], csv[512];
    snprintf(best, sizeof best, "%s/best.npz", dir);
    snprintf(csv, sizeof csv, "%s/m.csv", dir);
    ck_assert_int_eq(trainer(REPORT SMALL " --save-best /tmp/x.npz"), 2);
    ck_assert_msg(strstr(out, "--save-best keeps the epoch with the best validation accuracy"),
                  "%s", out);
    snprintf(args, sizeof args,
             REPORT SMALL " --set 'data.validation={\"last\":5}' --save-best '%s' --metrics '%s'",
             best, csv);
    ck_assert_int_eq(trainer(args), 0);
    ck_assert_msg(strstr(out, "val_acc ") != NULL, "%s", out);
    ck_assert_int_eq(access(best, F_OK), 0);
    FILE *f = fopen(csv, "r");
    char line[256];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    fclose(f);
    ck_assert_str_eq(line, "epoch,train_loss,train_acc,test_loss,test_acc,seconds,images_per_s,"
                           "val_loss,val_acc\n");
    ck_assert_int_eq(trainer(REPORT SMALL " --set 'data.validation={\"last\":20}'"), 2);
    ck_assert_msg(strstr(out, "leaves none to train on"), "%s", out);
}
END_TEST

START_TEST(test_eval_every_zero_prints_no_test_figures) {
    ck_assert_int_eq(trainer(REPORT SMALL " --set training.eval_every=0"), 0);
    ck_assert_msg(strstr(out, "test_loss -  test_acc -") != NULL, "%s", out);
}
END_TEST

/* A NaN weight makes the first loss NaN: training stops with exit 3 and says where. */
START_TEST(test_divergence_exits_3) {
    config cfg;
    parse_config_or_die(&cfg, SRC_PATH("config/report.json"), NULL, 0);
    net n;
    errbuf err;
    ck_assert_int_eq(net_build(&n, &cfg, (shape3){28, 28, 1}, &err), 0);
    float *params = floats_alloc(n.n_params);
    net_init_params(&n, params, INIT_REPORT, 0);
    params[n.layers[3].param_off + 5] = NAN;
    char path[512], args[1024];
    snprintf(path, sizeof path, "%s/nan.npz", dir);
    ck_assert_int_eq(params_save(path, &n, params, &err), 0);
    snprintf(args, sizeof args, REPORT SMALL " --load '%s'", path);
    ck_assert_int_eq(trainer(args), 3);
    ck_assert_msg(strstr(out, "training diverged at epoch 1, step 1: the loss is not finite"), "%s",
                  out);
    aligned_free(params);
    net_free(&n);
    config_free(&cfg);
}
END_TEST

/* eval on the saved parameters gives the training run's own last test figures, and a confusion
 * matrix that adds up; predict classifies PGM and IDX inputs alike. */
START_TEST(test_eval_and_predict) {
    char args[4096], w[512], csv[512], pgm5[512], pgm2[512], idx_path[512], bad[512];
    snprintf(w, sizeof w, "%s/w.npz", dir);
    snprintf(csv, sizeof csv, "%s/confusion.csv", dir);
    snprintf(args, sizeof args, REPORT SMALL " --set data.train.limit=300 --save '%s'", w);
    ck_assert_int_eq(trainer(args), 0);
    const char *last = strstr(out, "epoch  2/2");
    ck_assert_ptr_nonnull(last);
    double train_test_acc;
    ck_assert_int_eq(sscanf(strstr(last, "test_acc ") + 9, "%lf", &train_test_acc), 1);

    snprintf(args, sizeof args, "eval --load '%s' --csv '%s'", w, csv);
    ck_assert_int_eq(trainer(args), 0);
    double eval_acc;
    ck_assert_msg(strstr(out, "test_acc ") != NULL, "%s", out);
    ck_assert_int_eq(sscanf(strstr(out, "test_acc ") + 9, "%lf", &eval_acc), 1);
    ck_assert_double_eq_tol(eval_acc, train_test_acc, 1e-9);
    ck_assert_ptr_nonnull(strstr(out, "confusion matrix"));
    FILE *f = fopen(csv, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "true\\predicted,0,1,2,3,4,5,6,7,8,9\n");
    long total = 0, diagonal = 0;
    for (int row = 0; row < 10; row++) {
        ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
        char *p = strchr(line, ',');
        for (int col = 0; col < 10; col++) {
            long v = strtol(p + 1, &p, 10);
            total += v;
            if (col == row) diagonal += v;
        }
    }
    fclose(f);
    ck_assert_int_eq(total, 10); /* SMALL keeps 10 test images */
    ck_assert_double_eq_tol((double)diagonal / total, eval_acc, 1e-9);

    /* The first test image as P5 and P2 PGM files, and as a one-image IDX file. */
    dataset test;
    errbuf err;
    ck_assert_int_eq(dataset_load(&test, SRC_PATH("data/mnist/t10k-images-idx3-ubyte.gz"),
                                  SRC_PATH("data/mnist/t10k-labels-idx1-ubyte.gz"), 1, 10, &err),
                     0);
    snprintf(pgm5, sizeof pgm5, "%s/digit5.pgm", dir);
    snprintf(pgm2, sizeof pgm2, "%s/digit2.pgm", dir);
    snprintf(idx_path, sizeof idx_path, "%s/one-idx3-ubyte", dir);
    f = fopen(pgm5, "wb");
    fprintf(f, "P5\n# a comment\n28 28\n255\n");
    fwrite(test.pixels, 1, 784, f);
    fclose(f);
    f = fopen(pgm2, "w");
    fprintf(f, "P2\n28 28\n255\n");
    for (int i = 0; i < 784; i++) fprintf(f, "%u%c", test.pixels[i], i % 28 == 27 ? '\n' : ' ');
    fclose(f);
    unsigned char header[16] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28};
    f = fopen(idx_path, "wb");
    fwrite(header, 1, 16, f);
    fwrite(test.pixels, 1, 784, f);
    fclose(f);
    dataset_free(&test);
    snprintf(args, sizeof args, "predict --load '%s' '%s' '%s' '%s'", w, pgm5, pgm2, idx_path);
    ck_assert_int_eq(trainer(args), 0);
    char *l1 = strstr(out, "digit5.pgm: class "), *l2 = strstr(out, "digit2.pgm: class ");
    char *l3 = strstr(out, "one-idx3-ubyte[0]: class ");
    ck_assert_msg(l1 && l2 && l3, "%s", out);
    /* The three lines agree from "class" on. */
    l1 = strstr(l1, "class"), l2 = strstr(l2, "class"), l3 = strstr(l3, "class");
    ck_assert_int_eq(strncmp(l1, l2, strcspn(l1, "\n")), 0);
    ck_assert_int_eq(strncmp(l1, l3, strcspn(l1, "\n")), 0);

    snprintf(bad, sizeof bad, "%s/small.pgm", dir);
    write_bytes(bad, "P5 4 4 255\n0123456789abcdef", 27);
    snprintf(args, sizeof args, "predict --load '%s' '%s'", w, bad);
    ck_assert_int_eq(trainer(args), 2);
    ck_assert_msg(strstr(out, "small.pgm: a 4x4 image with 1 channel, the network takes 28x28 with 1"), "%s", out);
    write_bytes(bad, "P5 28 28 255\nshort", 18);
    ck_assert_int_eq(trainer(args), 2);
    ck_assert_msg(strstr(out, "small.pgm: truncated PGM"), "%s", out);
    write_bytes(bad, "P2 28 28 256\n0", 15); /* 16-bit PGM files are not read */
    ck_assert_int_eq(trainer(args), 2);
    ck_assert_msg(strstr(out, "small.pgm: PGM maxval 256 is not supported (1 to 255)"), "%s", out);
    snprintf(args, sizeof args, "predict --load '%s'", w);
    ck_assert_int_eq(trainer(args), 2);
    snprintf(args, sizeof args, "eval --load /no/such.npz");
    ck_assert_int_eq(trainer(args), 2);
    ck_assert_msg(strstr(out, "/no/such.npz: cannot open"), "%s", out);
}
END_TEST

/* predict classifies an IDX file's images in passes over all threads: the output is the same for
 * any thread count, and each image's line is what the image alone gives. */
START_TEST(test_predict_threads) {
    char args[4096], w[512], many[512], one[512];
    snprintf(w, sizeof w, "%s/wp.npz", dir);
    snprintf(args, sizeof args, REPORT SMALL " --set data.train.limit=300 --save '%s'", w);
    ck_assert_int_eq(trainer(args), 0);
    dataset test;
    errbuf err;
    ck_assert_msg(dataset_load(&test, SRC_PATH("data/mnist/t10k-images-idx3-ubyte.gz"),
                               SRC_PATH("data/mnist/t10k-labels-idx1-ubyte.gz"), 200, 10, &err) == 0,
                  "%s", err.msg);
    snprintf(many, sizeof many, "%s/many-idx3-ubyte", dir);
    snprintf(one, sizeof one, "%s/one123-idx3-ubyte", dir);
    unsigned char header[16] = {0, 0, 8, 3, 0, 0, 0, 200, 0, 0, 0, 28, 0, 0, 0, 28};
    FILE *f = fopen(many, "wb");
    fwrite(header, 1, 16, f);
    fwrite(test.pixels, 1, 200 * 784, f);
    fclose(f);
    header[7] = 1;
    f = fopen(one, "wb");
    fwrite(header, 1, 16, f);
    fwrite(test.pixels + 123 * 784, 1, 784, f);
    fclose(f);
    dataset_free(&test);
    static char first[65536];
    snprintf(args, sizeof args, "predict --load '%s' '%s'", w, many);
    setenv("OMP_NUM_THREADS", "1", 1);
    ck_assert_int_eq(trainer(args), 0);
    ck_assert_int_eq(count_lines(out), 200);
    strcpy(first, out);
    setenv("OMP_NUM_THREADS", "3", 1);
    ck_assert_int_eq(trainer(args), 0);
    ck_assert_msg(strcmp(first, out) == 0, "predict differs between 1 and 3 threads");
    snprintf(args, sizeof args, "predict --load '%s' '%s'", w, one);
    ck_assert_int_eq(trainer(args), 0);
    unsetenv("OMP_NUM_THREADS");
    const char *alone = strstr(out, "]: class"), *in_file = strstr(first, "[123]: class");
    ck_assert_msg(alone && in_file, "%s", out);
    ck_assert_int_eq(strncmp(alone + 1, in_file + 5, strcspn(alone, "\n") - 1), 0);
}
END_TEST

static Suite *cli_suite(void) {
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_help_and_version);
    tcase_add_test(tc, test_usage_errors_exit_2);
    tcase_add_test(tc, test_config_errors_exit_2_with_one_line);
    tcase_add_test(tc, test_data_errors_exit_2);
    tcase_add_test(tc, test_output_folder_checked_before_training);
    tcase_add_test(tc, test_training_run_outputs);
    tcase_add_test(tc, test_eval_every_zero_prints_no_test_figures);
    tcase_add_test(tc, test_divergence_exits_3);
    tcase_add_test(tc, test_validation_and_save_best);
    tcase_add_test(tc, test_eval_and_predict);
    tcase_add_test(tc, test_predict_threads);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(cli_suite)
