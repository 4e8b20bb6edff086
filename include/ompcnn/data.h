/*
 * Datasets: images and their labels, read from IDX files, and what is done to a sample on its
 * way into the network (scaling, augmentation). Images stay uint8 in memory; a sample is scaled
 * to float only when it is used.
 */
#ifndef OMPCNN_DATA_H
#define OMPCNN_DATA_H

#include "ompcnn/common.h"
#include "ompcnn/config.h"
#include "ompcnn/idx.h"

typedef struct dataset {
    uint8_t *pixels; /* n x h x w x c */
    uint8_t *labels; /* n */
    int n, h, w, c;
} dataset;

/* Loads images and labels, keeps the first `limit` samples (limit < 0: all), and checks that the
 * counts match, that limit does not exceed them and that every label is below n_classes. */
int dataset_load(dataset *ds, const char *images_path, const char *labels_path, long limit,
                 int n_classes, errbuf *err);
/* The same for a split of the config in any format (IDX, CSV, CIFAR); messages name its file
 * and, for CSV, the line and field. */
int dataset_load_split(dataset *ds, const split_config *s, int n_classes, errbuf *err);
/* Checks that every used label is below n_classes; the message names labels_path. */
int dataset_check_labels(const dataset *ds, const char *labels_path, int n_classes, errbuf *err);
void dataset_free(dataset *ds);

/* pixel/255 for sample i, written as floats into out (h*w*c values). */
void dataset_sample(const dataset *ds, int i, float *out);

/* Moves an h x w x c image by (dy, dx) pixels in place, filling with zeros (augmentation);
 * tmp holds h * w * c floats. */
void image_shift(float *img, float *tmp, int h, int w, int c, int dy, int dx);
/* Mirrors an h x w x c image left to right in place (augmentation). */
void image_flip(float *img, int h, int w, int c);

#endif
