/*
 * Parameter files: a save/load round trip is bit-exact, the same weights always give the same
 * bytes, and damaged or foreign files are refused with a message naming the file.
 */
#include <sys/stat.h>

#include "../src/fileio.h"
#include "ompcnn/npz.h"
#include "testutil.h"

static char dir[256];
static config cfg;
static net n;

static void setup(void) {
    errbuf err;
    temp_dir(dir, sizeof dir);
    parse_config_or_die(&cfg, SRC_PATH("config/report.json"), NULL, 0);
    ck_assert_msg(net_build(&n, &cfg, (shape3){28, 28, 1}, &err) == 0, "%s", err.msg);
}

static void teardown(void) {
    net_free(&n);
    config_free(&cfg);
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(*len);
    ck_assert_uint_eq(fread(buf, 1, *len, f), *len);
    fclose(f);
    return buf;
}

static void expect_load_error(const char *path, const char *what) {
    float *params = floats_alloc(n.n_params);
    errbuf err;
    ck_assert_msg(params_load(path, &n, params, &err) != 0, "%s loaded but should not", path);
    ck_assert_msg(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    ck_assert_msg(strstr(err.msg, what) != NULL, "expected \"%s\" in: %s", what, err.msg);
    aligned_free(params);
}

START_TEST(test_round_trip_is_exact_and_stable) {
    float *a = floats_alloc(n.n_params), *b = floats_alloc(n.n_params);
    net_init_params(&n, a, INIT_REPORT, 42);
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/a.npz", dir);
    snprintf(p2, sizeof p2, "%s/b.npz", dir);
    errbuf err;
    ck_assert_msg(params_save(p1, &n, a, &err) == 0, "%s", err.msg);
    ck_assert_msg(params_load(p1, &n, b, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(memcmp(a, b, n.n_params * sizeof *a), 0);
    ck_assert_msg(params_save(p2, &n, b, &err) == 0, "%s", err.msg);
    size_t l1, l2;
    unsigned char *f1 = slurp(p1, &l1), *f2 = slurp(p2, &l2);
    ck_assert_uint_eq(l1, l2);
    ck_assert_int_eq(memcmp(f1, f2, l1), 0);
    /* No temporary file is left beside the target. */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/a.npz.tmp.%ld", dir, (long)getpid());
    ck_assert_int_ne(access(tmp, F_OK), 0);
    free(f1), free(f2);
    aligned_free(a), aligned_free(b);
}
END_TEST

START_TEST(test_damaged_files_are_refused) {
    float *a = floats_alloc(n.n_params);
    net_init_params(&n, a, INIT_REPORT, 1);
    char good[512], path[512];
    snprintf(good, sizeof good, "%s/good.npz", dir);
    errbuf err;
    ck_assert_msg(params_save(good, &n, a, &err) == 0, "%s", err.msg);
    size_t len;
    unsigned char *buf = slurp(good, &len);

    snprintf(path, sizeof path, "%s/truncated.npz", dir);
    write_bytes(path, buf, len / 2);
    expect_load_error(path, "not an .npz file");

    snprintf(path, sizeof path, "%s/crc.npz", dir);
    buf[400] ^= 0x01; /* inside the first array's data */
    write_bytes(path, buf, len);
    expect_load_error(path, "CRC mismatch");
    buf[400] ^= 0x01;

    snprintf(path, sizeof path, "%s/empty.npz", dir);
    write_bytes(path, "", 0);
    expect_load_error(path, "not an .npz file");

    snprintf(path, sizeof path, "%s/missing.npz", dir);
    expect_load_error(path, "cannot open");

    /* Parameters of another network: dense 30 instead of 20. */
    const char *const other[] = {"network[3].units=30"};
    config cfg2;
    net n2;
    parse_config_or_die(&cfg2, SRC_PATH("config/report.json"), other, 1);
    ck_assert_int_eq(net_build(&n2, &cfg2, (shape3){28, 28, 1}, &err), 0);
    float *b = floats_alloc(n2.n_params);
    snprintf(path, sizeof path, "%s/other.npz", dir);
    ck_assert_int_eq(params_save(path, &n2, b, &err), 0);
    expect_load_error(path, "3_dense_weight.npy has shape (1352, 30), this network needs (1352, 20)");
    net_free(&n2);
    config_free(&cfg2);

    /* A network with one layer more (a different layer index for the output). */
    const char *const deeper[] = {"network[6]={\"type\":\"relu\"}", "network[7]={\"type\":\"softmax\"}"};
    parse_config_or_die(&cfg2, SRC_PATH("config/report.json"), deeper, 2);
    ck_assert_int_eq(net_build(&n2, &cfg2, (shape3){28, 28, 1}, &err), 0);
    snprintf(path, sizeof path, "%s/deeper.npz", dir);
    ck_assert_int_eq(params_save(path, &n2, a, &err), 0);
    ck_assert_msg(params_load(path, &n, b, &err) == 0, "%s", err.msg); /* same tensors: fine */
    net_free(&n2);
    config_free(&cfg2);
    free(buf);
    aligned_free(a), aligned_free(b);
}
END_TEST

START_TEST(test_save_to_missing_folder_fails_cleanly) {
    float *a = floats_alloc(n.n_params);
    char path[512];
    snprintf(path, sizeof path, "%s/no/such/folder/w.npz", dir);
    errbuf err;
    ck_assert_int_ne(params_save(path, &n, a, &err), 0);
    ck_assert_msg(strstr(err.msg, "cannot create") != NULL, "%s", err.msg);
    aligned_free(a);
}
END_TEST

/* write_file_atomic itself, below the run's checks: a FIFO (or any path that is not a regular
 * file) is refused and left as it is; a symbolic link stays a link and its file gets the data. */
START_TEST(test_atomic_write_keeps_special_files) {
    char dir[] = "/tmp/ompcnn-write-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char fifo[64], file[64], link[64];
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    snprintf(file, sizeof file, "%s/file", dir);
    snprintf(link, sizeof link, "%s/link", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    errbuf err;
    ck_assert_int_eq(write_file_atomic(fifo, "abc", 3, &err), -1);
    ck_assert_msg(strstr(err.msg, "is a FIFO"), "%s", err.msg);
    struct stat st;
    ck_assert_int_eq(lstat(fifo, &st), 0);
    ck_assert_msg(S_ISFIFO(st.st_mode), "the FIFO was replaced");
    ck_assert_int_eq(write_file_atomic(file, "old", 3, &err), 0);
    ck_assert_int_eq(symlink(file, link), 0);
    ck_assert_msg(write_file_atomic(link, "new!", 4, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(lstat(link, &st), 0);
    ck_assert_msg(S_ISLNK(st.st_mode), "the link was replaced by a file");
    ck_assert_int_eq(stat(file, &st), 0);
    ck_assert_int_eq(st.st_size, 4);
    unlink(link), unlink(file), unlink(fifo), rmdir(dir);
}
END_TEST

static Suite *npz_suite(void) {
    Suite *s = suite_create("npz");
    TCase *tc = tcase_create("npz");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_round_trip_is_exact_and_stable);
    tcase_add_test(tc, test_damaged_files_are_refused);
    tcase_add_test(tc, test_save_to_missing_folder_fails_cleanly);
    tcase_add_test(tc, test_atomic_write_keeps_special_files);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(npz_suite)
