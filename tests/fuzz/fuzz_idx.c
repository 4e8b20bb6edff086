/*
 * libFuzzer target: the IDX reader's checks (magic, type, dimensions, length) on arbitrary bytes,
 * in memory and from a file (raw or gzip); the same bytes read as CSV rows and CIFAR records.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ompcnn/data.h"
#include "ompcnn/idx.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    idx_array a;
    errbuf err;
    if (idx_parse(&a, buf, size, "fuzz.idx", &err) == 0) idx_free(&a);
    /* The same bytes as a file: the reader's gzip path (strict end, capped at the declared size)
     * when they start like gzip, the raw path otherwise. */
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/fuzz-idx-%ld", (long)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    if (idx_load(&a, path, &err) == 0) idx_free(&a);
    /* And as the other formats: CSV rows of 2x2 images, CIFAR-10 and CIFAR-100 records. */
    dataset ds;
    split_config csv = {DATA_CSV, path, NULL, -1, {2, 2, 1}, 0};
    if (dataset_load_split(&ds, &csv, 256, NULL, &err) == 0) dataset_free(&ds);
    for (int variant = 0; variant < 2; variant++) {
        split_config cifar = {DATA_CIFAR, path, NULL, -1, {32, 32, 3}, variant};
        if (dataset_load_split(&ds, &cifar, 256, NULL, &err) == 0) dataset_free(&ds);
    }
    unlink(path);
    return 0;
}
