/*
 * IDX files (the MNIST format), raw or gzip-compressed. Images stay uint8 in memory; a sample is
 * scaled to float only when it is used.
 */
#ifndef OMPCNN_IDX_H
#define OMPCNN_IDX_H

#include "ompcnn/common.h"

typedef struct idx_array {
    uint8_t *data;
    int ndim;
    uint32_t dims[4];
    size_t count; /* product of dims */
} idx_array;

/* Reads an unsigned-byte IDX file of 1 to 4 dimensions, checking the magic number, the element
 * type and that the dimensions match the file's length exactly. */
int idx_load(idx_array *out, const char *path, errbuf *err);
/* The same checks on the file's bytes, already in memory: buf (malloc'd, len bytes) becomes the
 * array's data, or is freed on error. path names the file in messages. */
int idx_parse(idx_array *out, uint8_t *buf, size_t len, const char *path, errbuf *err);
void idx_free(idx_array *a);

typedef struct dataset {
    uint8_t *pixels; /* n x h x w x c */
    uint8_t *labels; /* n */
    int n, h, w, c;
} dataset;

/* Loads images and labels, keeps the first `limit` samples (limit < 0: all), and checks that the
 * counts match, that limit does not exceed them and that every label is below n_classes. */
int dataset_load(dataset *ds, const char *images_path, const char *labels_path, long limit,
                 int n_classes, errbuf *err);
/* Checks that every used label is below n_classes; the message names labels_path. */
int dataset_check_labels(const dataset *ds, const char *labels_path, int n_classes, errbuf *err);
void dataset_free(dataset *ds);

/* pixel/255 for sample i, written as floats into out (h*w*c values). */
void dataset_sample(const dataset *ds, int i, float *out);

#endif
