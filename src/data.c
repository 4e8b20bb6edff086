/*
 * Datasets (see include/ompcnn/data.h): loading images and labels, checking them, and turning a
 * sample into the network's input.
 */
#include "ompcnn/data.h"

#include <stdlib.h>
#include <string.h>

int dataset_load(dataset *ds, const char *images_path, const char *labels_path, long limit,
                 int n_classes, errbuf *err) {
    memset(ds, 0, sizeof *ds);
    idx_array images, labels;
    if (idx_load(&images, images_path, err)) return -1;
    if (images.ndim != 3 && images.ndim != 4) {
        errorf(err, "%s: images need 3 dimensions (count, rows, columns) or 4 (with channels), got %d",
             images_path, images.ndim);
        idx_free(&images);
        return -1;
    }
    if (idx_load(&labels, labels_path, err)) {
        idx_free(&images);
        return -1;
    }
    int rc = -1;
    uint32_t n = images.dims[0];
    if (n == 0) {
        errorf(err, "%s: holds no images", images_path);
    } else if (labels.ndim != 1) {
        errorf(err, "%s: labels need 1 dimension, got %d", labels_path, labels.ndim);
    } else if (labels.dims[0] != n) {
        errorf(err, "%s: %u labels for the %u images of %s", labels_path, labels.dims[0], n,
               images_path);
    } else if (images.dims[1] == 0 || images.dims[2] == 0 ||
               (images.ndim == 4 && images.dims[3] == 0)) {
        errorf(err, "%s: images of size zero", images_path);
    } else if (images.dims[1] > 4096 || images.dims[2] > 4096 ||
               (images.ndim == 4 && images.dims[3] > 4096) || n > 0x7fffffffu) {
        errorf(err, "%s: dimensions %u x %u x %u are beyond what the trainer handles", images_path,
             n, images.dims[1], images.dims[2]);
    } else if (limit > (long)n) {
        errorf(err, "%s: limit %ld is larger than the %u samples in the file", images_path, limit, n);
    } else {
        ds->n = limit < 0 ? (int)n : (int)limit;
        if ((uint32_t)ds->n < n) { /* keep only the samples used */
            size_t image = images.count / n;
            uint8_t *kept = realloc(images.data, (size_t)ds->n * image);
            if (kept) images.data = kept;
        }
        ds->h = (int)images.dims[1];
        ds->w = (int)images.dims[2];
        ds->c = images.ndim == 4 ? (int)images.dims[3] : 1;
        ds->pixels = images.data;
        ds->labels = labels.data;
        if (dataset_check_labels(ds, labels_path, n_classes, err) == 0) return 0;
        memset(ds, 0, sizeof *ds);
    }
    idx_free(&images);
    idx_free(&labels);
    return rc;
}

int dataset_check_labels(const dataset *ds, const char *labels_path, int n_classes, errbuf *err) {
    for (int i = 0; i < ds->n; i++)
        if (ds->labels[i] >= n_classes)
            return errorf(err, "%s: label %u of sample %d is out of range for %d classes",
                        labels_path, ds->labels[i], i, n_classes);
    return 0;
}

void dataset_free(dataset *ds) {
    free(ds->pixels);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

void dataset_sample(const dataset *ds, int i, float *out) {
    size_t size = (size_t)ds->h * ds->w * ds->c;
    const uint8_t *px = ds->pixels + (size_t)i * size;
    /* The report divides by 255 (in double); a float division rounds the same quotient. */
    for (size_t k = 0; k < size; k++) out[k] = (float)px[k] / 255.0f;
}

void image_shift(float *img, float *tmp, int h, int w, int c, int dy, int dx) {
    const size_t size = (size_t)h * w * c;
    memcpy(tmp, img, size * sizeof *img);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int sy = y - dy, sx = x - dx;
            int inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
            for (int k = 0; k < c; k++)
                img[((size_t)y * w + x) * c + k] = inside ? tmp[((size_t)sy * w + sx) * c + k] : 0.0f;
        }
}

void image_flip(float *img, int h, int w, int c) {
    for (int y = 0; y < h; y++) {
        float *row = img + (size_t)y * w * c;
        for (int x = 0; x < w / 2; x++)
            for (int k = 0; k < c; k++) {
                float *a = row + (size_t)x * c + k, *b = row + (size_t)(w - 1 - x) * c + k;
                const float keep = *a;
                *a = *b;
                *b = keep;
            }
    }
}
