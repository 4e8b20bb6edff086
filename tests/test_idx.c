/*
 * The IDX reader on the real MNIST files (raw and gzipped) and on damaged ones: each damage must
 * give an error that names the file and says what is wrong.
 */
#include <zlib.h>

#include "testutil.h"

static char dir[256];

static void setup(void) {
    temp_dir(dir, sizeof dir);
}

/* An IDX file: magic 00 00 type ndim, big-endian dims, then `body` bytes of value `fill`. */
static size_t make_idx(unsigned char *buf, int type, int ndim, const uint32_t *dims, size_t body,
                       unsigned char fill) {
    size_t n = 0;
    buf[n++] = 0, buf[n++] = 0, buf[n++] = (unsigned char)type, buf[n++] = (unsigned char)ndim;
    for (int d = 0; d < ndim; d++) {
        buf[n++] = (unsigned char)(dims[d] >> 24), buf[n++] = (unsigned char)(dims[d] >> 16);
        buf[n++] = (unsigned char)(dims[d] >> 8), buf[n++] = (unsigned char)dims[d];
    }
    memset(buf + n, fill, body);
    return n + body;
}

static void write_gz(const char *path, const void *data, size_t size) {
    gzFile f = gzopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(gzwrite(f, data, (unsigned)size), (int)size);
    gzclose(f);
}

/* Loads path as an image file and expects an error containing path and `what`. */
static void expect_idx_error(const char *path, const char *what) {
    idx_array a;
    errbuf err;
    ck_assert_msg(idx_load(&a, path, &err) != 0, "%s loaded but should not", path);
    ck_assert_msg(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    ck_assert_msg(strstr(err.msg, what) != NULL, "expected \"%s\" in: %s", what, err.msg);
}

START_TEST(test_reads_mnist_gz_and_raw) {
    idx_array gz, raw;
    errbuf err;
    ck_assert_msg(idx_load(&gz, SRC_PATH("data/mnist/t10k-images-idx3-ubyte.gz"), &err) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(gz.ndim, 3);
    ck_assert_uint_eq(gz.dims[0], 10000);
    ck_assert_uint_eq(gz.dims[1], 28);
    ck_assert_uint_eq(gz.dims[2], 28);
    /* The same bytes unpacked to a raw file read back identically. */
    char path[512];
    snprintf(path, sizeof path, "%s/raw-images", dir);
    unsigned char *buf = malloc(16 + gz.count);
    uint32_t dims[3] = {10000, 28, 28};
    size_t n = make_idx(buf, 8, 3, dims, 0, 0);
    memcpy(buf + n, gz.data, gz.count);
    write_bytes(path, buf, n + gz.count);
    ck_assert_msg(idx_load(&raw, path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(raw.count, gz.count);
    ck_assert_int_eq(memcmp(raw.data, gz.data, gz.count), 0);
    idx_free(&gz);
    idx_free(&raw);
    free(buf);
}
END_TEST

START_TEST(test_dataset_counts_and_scaling) {
    dataset train;
    load_mnist(&train, NULL, 5);
    ck_assert_int_eq(train.n, 5);
    ck_assert_int_eq(train.h * train.w * train.c, 784);
    /* The first training label of MNIST is 5, the second 0. */
    ck_assert_uint_eq(train.labels[0], 5);
    ck_assert_uint_eq(train.labels[1], 0);
    float px[784];
    dataset_sample(&train, 0, px);
    for (int i = 0; i < 784; i++) {
        ck_assert_float_eq(px[i], (float)train.pixels[i] / 255.0f);
        ck_assert(px[i] >= 0.0f && px[i] <= 1.0f);
    }
    dataset_free(&train);
}
END_TEST

START_TEST(test_damaged_files) {
    unsigned char buf[4096];
    char path[512];
    uint32_t dims[3] = {4, 5, 6};

    snprintf(path, sizeof path, "%s/wrong-magic", dir);
    size_t n = make_idx(buf, 8, 3, dims, 120, 1);
    buf[0] = 0x12;
    write_bytes(path, buf, n);
    expect_idx_error(path, "magic");

    snprintf(path, sizeof path, "%s/wrong-type", dir);
    n = make_idx(buf, 0x0d, 3, dims, 120, 1);
    write_bytes(path, buf, n);
    expect_idx_error(path, "element type 0x0d");

    snprintf(path, sizeof path, "%s/truncated-header", dir);
    n = make_idx(buf, 8, 3, dims, 0, 0);
    write_bytes(path, buf, 9);
    expect_idx_error(path, "truncated header");

    snprintf(path, sizeof path, "%s/truncated-body", dir);
    n = make_idx(buf, 8, 3, dims, 119, 1);
    write_bytes(path, buf, n);
    expect_idx_error(path, "truncated");

    snprintf(path, sizeof path, "%s/trailing", dir);
    n = make_idx(buf, 8, 3, dims, 121, 1);
    write_bytes(path, buf, n);
    expect_idx_error(path, "trailing data");

    snprintf(path, sizeof path, "%s/tiny", dir);
    write_bytes(path, "\0\0", 2);
    expect_idx_error(path, "only 2 bytes");

    snprintf(path, sizeof path, "%s/missing", dir);
    expect_idx_error(path, "cannot open");
}
END_TEST

START_TEST(test_damaged_gzip) {
    unsigned char buf[4096];
    char path[512];
    uint32_t dims[3] = {40, 5, 6};
    size_t n = make_idx(buf, 8, 3, dims, 1200, 7);
    snprintf(path, sizeof path, "%s/good.gz", dir);
    write_gz(path, buf, n);
    idx_array a;
    errbuf err;
    ck_assert_msg(idx_load(&a, path, &err) == 0, "%s", err.msg);
    idx_free(&a);

    FILE *f = fopen(path, "rb");
    unsigned char gz[4096];
    size_t len = fread(gz, 1, sizeof gz, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/cut.gz", dir);
    write_bytes(path, gz, len / 2);
    expect_idx_error(path, "corrupt compressed data");

    gz[len / 2] ^= 0xff; /* a flipped byte in the deflate stream or the CRC */
    gz[len - 6] ^= 0xff;
    snprintf(path, sizeof path, "%s/flipped.gz", dir);
    write_bytes(path, gz, len);
    expect_idx_error(path, "corrupt compressed data");
}
END_TEST

static void expect_dataset_error(const char *images, const char *labels, long limit,
                                 const char *names, const char *what) {
    dataset ds;
    errbuf err;
    ck_assert_msg(dataset_load(&ds, images, labels, limit, 10, &err) != 0, "loaded but should not");
    ck_assert_msg(strstr(err.msg, names) != NULL, "message does not name %s: %s", names, err.msg);
    ck_assert_msg(strstr(err.msg, what) != NULL, "expected \"%s\" in: %s", what, err.msg);
}

START_TEST(test_dataset_mismatches) {
    unsigned char buf[4096];
    char images[512], labels[512], labels_bad[512], empty[512], empty_labels[512];
    uint32_t dims[3] = {6, 4, 4}, ldims[1] = {5}, zero[3] = {0, 4, 4}, lzero[1] = {0};
    snprintf(images, sizeof images, "%s/images", dir);
    write_bytes(images, buf, make_idx(buf, 8, 3, dims, 96, 3));
    snprintf(labels, sizeof labels, "%s/labels-5", dir);
    write_bytes(labels, buf, make_idx(buf, 8, 1, ldims, 5, 1));
    expect_dataset_error(images, labels, -1, labels, "5 labels for the 6 images");

    ldims[0] = 6;
    snprintf(labels_bad, sizeof labels_bad, "%s/labels-12", dir);
    size_t n = make_idx(buf, 8, 1, ldims, 6, 2);
    buf[n - 1] = 12;
    write_bytes(labels_bad, buf, n);
    expect_dataset_error(images, labels_bad, -1, labels_bad, "label 12 of sample 5 is out of range");
    /* A limit that leaves the bad label out loads fine. */
    dataset ds;
    errbuf err;
    ck_assert_msg(dataset_load(&ds, images, labels_bad, 5, 10, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ds.n, 5);
    dataset_free(&ds);
    expect_dataset_error(images, labels_bad, 7, images, "limit 7 is larger than the 6 samples");
    expect_dataset_error(labels_bad, labels_bad, -1, labels_bad, "images need 3 dimensions");

    snprintf(empty, sizeof empty, "%s/empty", dir);
    write_bytes(empty, buf, make_idx(buf, 8, 3, zero, 0, 0));
    snprintf(empty_labels, sizeof empty_labels, "%s/empty-labels", dir);
    write_bytes(empty_labels, buf, make_idx(buf, 8, 1, lzero, 0, 0));
    expect_dataset_error(empty, empty_labels, -1, empty, "holds no images");
}
END_TEST

/* A CSV of the first 40 test images (a header row, CRLF line ends, spaces after some commas)
 * loads to exactly the bytes and labels the IDX files give. */
START_TEST(test_csv_equals_idx) {
    dataset idx_set, csv_set;
    errbuf err;
    ck_assert_msg(dataset_load(&idx_set, SRC_PATH("data/mnist/t10k-images-idx3-ubyte.gz"),
                               SRC_PATH("data/mnist/t10k-labels-idx1-ubyte.gz"), 40, 10, &err) == 0,
                  "%s", err.msg);
    char path[512];
    snprintf(path, sizeof path, "%s/digits.csv", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "label,pixels...\r\n");
    for (int i = 0; i < 40; i++) {
        fprintf(f, "%d", idx_set.labels[i]);
        for (int k = 0; k < 784; k++) fprintf(f, k % 97 ? ",%d" : ", %d", idx_set.pixels[i * 784 + k]);
        fprintf(f, "\r\n");
    }
    fclose(f);
    split_config split = {DATA_CSV, path, NULL, -1, {28, 28, 1}, 0};
    ck_assert_msg(dataset_load_split(&csv_set, &split, 10, NULL, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(csv_set.n, 40);
    ck_assert_int_eq(memcmp(csv_set.pixels, idx_set.pixels, 40 * 784), 0);
    ck_assert_int_eq(memcmp(csv_set.labels, idx_set.labels, 40), 0);
    dataset_free(&csv_set);
    split.limit = 41;
    ck_assert_int_eq(dataset_load_split(&csv_set, &split, 10, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "limit 41 is larger than the 40 rows"), "%s", err.msg);
    dataset_free(&idx_set);
    /* Rows that do not fit: each named by line (and field). */
    static const char *const bad[][2] = {
        {"1,2,3\n4,5\n", "line 2: fewer fields"},
        {"1,2,3,4\n", "line 1: more fields"},
        {"1,2,300\n", "line 1, field 3: expected an integer from 0 to 255"},
        {"1,2,x\n", "line 1, field 3"},
        {"1,2,3\n\n1,2,3\n", "line 2 is empty"},
        {"", "holds no rows"},
        {"1,2,3\n", "label 1 of sample 0 is out of range"},
    };
    split = (split_config){DATA_CSV, path, NULL, -1, {1, 2, 1}, 0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_bytes(path, bad[i][0], strlen(bad[i][0]));
        const int classes = i + 1 == sizeof bad / sizeof bad[0] ? 1 : 10;
        ck_assert_int_eq(dataset_load_split(&csv_set, &split, classes, NULL, &err), -1);
        ck_assert_msg(strstr(err.msg, bad[i][1]), "case %zu: %s", i, err.msg);
    }
}
END_TEST

/* CIFAR records: the label byte (CIFAR-100: the fine one, second), then the red, green and blue
 * planes, which become channels-last pixels. */
START_TEST(test_cifar_records) {
    for (int variant = 0; variant < 2; variant++) {
        const size_t label_bytes = variant ? 2 : 1, record = label_bytes + 3072;
        unsigned char *buf = malloc(3 * record);
        for (size_t r = 0; r < 3; r++) {
            unsigned char *p = buf + r * record;
            p[0] = (unsigned char)(variant ? 90 + r : 7 - r);
            if (variant) p[1] = (unsigned char)(20 + r);
            for (size_t i = 0; i < 3072; i++) p[label_bytes + i] = (unsigned char)((i * 7 + r) % 251);
        }
        char path[512];
        snprintf(path, sizeof path, "%s/records.bin", dir);
        write_bytes(path, buf, 3 * record);
        split_config split = {DATA_CIFAR, path, NULL, -1, {32, 32, 3}, variant};
        dataset ds;
        errbuf err;
        ck_assert_msg(dataset_load_split(&ds, &split, 100, NULL, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(ds.n, 3);
        ck_assert_int_eq(ds.c, 3);
        for (size_t r = 0; r < 3; r++) {
            ck_assert_int_eq(ds.labels[r], variant ? 20 + (int)r : 7 - (int)r);
            for (size_t pos = 0; pos < 1024; pos++)
                for (size_t c = 0; c < 3; c++)
                    ck_assert_int_eq(ds.pixels[(r * 1024 + pos) * 3 + c],
                                     buf[r * record + label_bytes + c * 1024 + pos]);
        }
        dataset_free(&ds);
        write_bytes(path, buf, 3 * record - 1);
        ck_assert_int_eq(dataset_load_split(&ds, &split, 100, NULL, &err), -1);
        ck_assert_msg(strstr(err.msg, "not a whole number of"), "%s", err.msg);
        free(buf);
    }
}
END_TEST

/* The flip augmentation mirrors each row, channels kept together: a 2 x 3 x 2 image. */
START_TEST(test_image_flip) {
    float img[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const float want[12] = {5, 6, 3, 4, 1, 2, 11, 12, 9, 10, 7, 8};
    image_flip(img, 2, 3, 2);
    for (int i = 0; i < 12; i++) ck_assert_float_eq(img[i], want[i]);
    image_flip(img, 2, 3, 2);
    for (int i = 0; i < 12; i++) ck_assert_float_eq(img[i], (float)(i + 1));
}
END_TEST

/* Asserts that img is orig turned by half a turn: every pixel (y, x) of an h x w x c image at
 * (h - 1 - y, w - 1 - x), channels kept together. */
static void assert_half_turn(const float *img, const float *orig, int h, int w, int c) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                ck_assert_float_eq_tol(img[(y * w + x) * c + k],
                                       orig[((h - 1 - y) * w + w - 1 - x) * c + k], 1e-4f);
}

/* The rotation augmentation: 0 degrees leaves an image as it is; 90 and 180 degrees move the
 * pixels of a square image as a quarter and a half turn do (counterclockwise as displayed: the
 * right column becomes the top row), channels kept together; -90 undoes 90; and at 45 degrees a
 * constant image stays constant where the whole interpolation square is inside (the weights add
 * up to 1), and at a corner, whose source (-0.83, 2) lies between a row outside and the first
 * row, blends the first row with the zeros outside: 3 * (3 - 2 sqrt 2). */
START_TEST(test_image_rotate) {
    enum { N = 5, C = 2 };
    float img[N * N * C], orig[N * N * C], tmp[N * N * C];
    for (int i = 0; i < N * N * C; i++) orig[i] = img[i] = (float)(i * 7 % 23) + 0.5f;
    image_rotate(img, tmp, N, N, C, 0.0);
    ck_assert_int_eq(memcmp(img, orig, sizeof img), 0);
    image_rotate(img, tmp, N, N, C, 90.0);
    for (int y = 0; y < N; y++)
        for (int x = 0; x < N; x++)
            for (int k = 0; k < C; k++) /* out[y][x] = in[x][N - 1 - y] */
                ck_assert_float_eq_tol(img[(y * N + x) * C + k], orig[(x * N + N - 1 - y) * C + k],
                                       1e-4f);
    image_rotate(img, tmp, N, N, C, -90.0);
    for (int i = 0; i < N * N * C; i++) ck_assert_float_eq_tol(img[i], orig[i], 1e-4f);
    image_rotate(img, tmp, N, N, C, 180.0);
    assert_half_turn(img, orig, N, N, C);
    for (int i = 0; i < N * N * C; i++) img[i] = 3.0f;
    image_rotate(img, tmp, N, N, C, 45.0);
    ck_assert_float_eq_tol(img[(2 * N + 2) * C], 3.0f, 1e-5f); /* the centre */
    ck_assert_float_eq_tol(img[(1 * N + 2) * C + 1], 3.0f, 1e-5f);
    ck_assert_float_eq_tol(img[0], 3.0f * (3.0f - 2.0f * sqrtf(2.0f)), 1e-5f);
    ck_assert_float_eq_tol(img[(N * N - 1) * C + 1], 3.0f * (3.0f - 2.0f * sqrtf(2.0f)), 1e-5f);
}
END_TEST

/* A wide image, whose columns image_transform takes in blocks of 64 (150 = 64 + 64 + 22): a half
 * turn moves every pixel of every block. */
START_TEST(test_image_rotate_wide) {
    enum { H = 3, W = 150, C = 2 };
    static float img[H * W * C], orig[H * W * C], tmp[H * W * C];
    for (int i = 0; i < H * W * C; i++) orig[i] = img[i] = (float)(i * 7 % 23) + 0.5f;
    image_rotate(img, tmp, H, W, C, 180.0);
    assert_half_turn(img, orig, H, W, C);
}
END_TEST

/* image_transform's zoom: 1 leaves image_rotate's result bit for bit; 2 doubles the content
 * about the centre, so a ramp in y (exact under bilinear interpolation) becomes half as steep;
 * 0.5 halves it, so pixel (1, 1) of a 5 x 5 image comes from (0, 0) and the border from outside
 * (zeros); with a quarter turn, the zoomed ramp in y becomes a ramp in x. */
START_TEST(test_image_transform_zoom) {
    enum { N = 5, C = 2 };
    float img[N * N * C], orig[N * N * C], tmp[N * N * C], rot[N * N * C];
    for (int i = 0; i < N * N * C; i++) orig[i] = img[i] = rot[i] = (float)(i * 7 % 23) + 0.5f;
    image_rotate(rot, tmp, N, N, C, 33.0);
    image_transform(img, tmp, N, N, C, 33.0, 1.0);
    ck_assert_int_eq(memcmp(img, rot, sizeof img), 0);
    for (int y = 0; y < N; y++)
        for (int i = 0; i < N * C; i++) orig[y * N * C + i] = (float)y;
    memcpy(img, orig, sizeof img);
    image_transform(img, tmp, N, N, C, 0.0, 2.0);
    for (int y = 0; y < N; y++)
        for (int i = 0; i < N * C; i++)
            ck_assert_float_eq_tol(img[y * N * C + i], 2.0f + (y - 2) / 2.0f, 1e-5f);
    memcpy(img, orig, sizeof img);
    image_transform(img, tmp, N, N, C, 90.0, 2.0);
    for (int y = 0; y < N; y++)
        for (int x = 0; x < N; x++) /* out[y][x] = in[x][N - 1 - y]: the ramp runs along x */
            ck_assert_float_eq_tol(img[(y * N + x) * C + 1], 2.0f + (x - 2) / 2.0f, 1e-5f);
    for (int i = 0; i < N * N * C; i++) orig[i] = img[i] = (float)(i * 7 % 23) + 0.5f;
    image_transform(img, tmp, N, N, C, 0.0, 0.5);
    for (int k = 0; k < C; k++) {
        ck_assert_float_eq_tol(img[(1 * N + 1) * C + k], orig[k], 1e-5f);
        ck_assert_float_eq_tol(img[(2 * N + 2) * C + k], orig[(2 * N + 2) * C + k], 1e-5f);
        ck_assert_float_eq_tol(img[(3 * N + 3) * C + k], orig[(4 * N + 4) * C + k], 1e-5f);
        for (int x = 0; x < N; x++) ck_assert_float_eq(img[x * C + k], 0.0f);
    }
}
END_TEST

static Suite *idx_suite(void) {
    Suite *s = suite_create("idx");
    TCase *tc = tcase_create("idx");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_reads_mnist_gz_and_raw);
    tcase_add_test(tc, test_image_rotate);
    tcase_add_test(tc, test_image_rotate_wide);
    tcase_add_test(tc, test_image_transform_zoom);
    tcase_add_test(tc, test_dataset_counts_and_scaling);
    tcase_add_test(tc, test_damaged_files);
    tcase_add_test(tc, test_damaged_gzip);
    tcase_add_test(tc, test_dataset_mismatches);
    tcase_add_test(tc, test_image_flip);
    tcase_add_test(tc, test_csv_equals_idx);
    tcase_add_test(tc, test_cifar_records);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(idx_suite)
