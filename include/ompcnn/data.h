/*
 * Datasets: images and their labels, read from IDX, CSV or CIFAR files or from folders of PNG
 * files, and what is done to a sample on its way into the network (scaling, normalisation,
 * augmentation). Images stay uint8 in memory; a sample becomes floats only when it is used.
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
    char **class_names; /* a folder's classes, by label (n_class_names of them); NULL: unnamed */
    int n_class_names;
    const float *table; /* a pixel's input value: table[channel * 256 + pixel] (pixel_table);
                           NULL: pixel / 255. Not owned. */
} dataset;

/* How a data set is loaded: threads for decoding PNG files (0: OpenMP's default), and a
 * progress report while it runs (progress may be NULL; `what` names the data set in it). */
typedef struct load_options {
    int threads;
    const char *what;
    void (*progress)(void *ctx, const char *what, long done, long total);
    void *ctx;
} load_options;

/* Loads images and labels, keeps the first `limit` samples (limit < 0: all), and checks that the
 * counts match, that limit does not exceed them and that every label is below n_classes. */
int dataset_load(dataset *ds, const char *images_path, const char *labels_path, long limit,
                 int n_classes, errbuf *err);
/* The same for a split of the config in any format (IDX, CSV, CIFAR, folder); messages name its
 * file and, for CSV, the line and field. opt may be NULL. */
int dataset_load_split(dataset *ds, const split_config *s, int n_classes, const load_options *opt,
                       errbuf *err);
/* A folder of PNG files per class (src/data_folder.c); labels are below n_class_names. */
int dataset_load_folder(dataset *ds, const split_config *s, const load_options *opt,
                        errbuf *err);
/* Checks that every used label is below n_classes; the message names labels_path. */
int dataset_check_labels(const dataset *ds, const char *labels_path, int n_classes, errbuf *err);
void dataset_free(dataset *ds);

/* The input values of the pixels of images with c channels: table[ch * 256 + v] is
 * (v / 255 - mean[ch]) / std[ch] with data.normalize, else v / 255, all in float. Fails when
 * data.normalize has neither one value nor c of them (the message names data.normalize and
 * `source`, what set the channel count). Free with free(). */
float *pixel_table(const config *cfg, int c, const char *source, errbuf *err);
/* Sample i as the network's input (ds->table, or pixel / 255), written into out (h*w*c). */
void dataset_sample(const dataset *ds, int i, float *out);
/* The same for n pixels of an image of c channels. */
void pixels_to_input(const uint8_t *px, size_t n, int c, const float *table, float *out);

/* Moves an h x w x c image by (dy, dx) pixels in place, filling with zeros (augmentation);
 * tmp holds h * w * c floats. */
void image_shift(float *img, float *tmp, int h, int w, int c, int dy, int dx);
/* Mirrors an h x w x c image left to right in place (augmentation). */
void image_flip(float *img, int h, int w, int c);
/* Rotates an h x w x c image in place by `degrees` (counterclockwise as displayed, rows going
 * down) about its centre ((h - 1) / 2, (w - 1) / 2): each pixel takes the bilinear interpolation
 * of the source point it comes from, 0 outside the image. tmp holds h * w * c floats. */
void image_rotate(float *img, float *tmp, int h, int w, int c, double degrees);
/* The same rotation with the image also scaled by `zoom` about its centre (2 doubles its
 * content's size, 0.5 halves it; 1 is image_rotate's result, bit for bit). */
void image_transform(float *img, float *tmp, int h, int w, int c, double degrees, double zoom);

#endif
