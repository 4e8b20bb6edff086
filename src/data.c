/*
 * Datasets (see include/ompcnn/data.h): loading images and labels, checking them, and turning a
 * sample into the network's input.
 */
#include "ompcnn/data.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

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
    for (int k = 0; k < ds->n_class_names; k++) free(ds->class_names[k]);
    free(ds->class_names);
    memset(ds, 0, sizeof *ds);
}

float *pixel_table(const config *cfg, int c, const char *source, errbuf *err) {
    const int n = cfg->n_normalize;
    if (n > 1 && n != c) {
        errorf(err, "%s: data.normalize has %d values per list, but %s has %d channel%s "
               "(give one value, or one per channel)", cfg->file, n, source, c,
               c == 1 ? "" : "s");
        return NULL;
    }
    float *table = malloc((size_t)c * 256 * sizeof *table);
    if (!table) {
        oomf(err, "out of memory");
        return NULL;
    }
    for (int ch = 0; ch < c; ch++)
        for (int v = 0; v < 256; v++) {
            /* The report divides by 255 (in double); a float division rounds the same
             * quotient. */
            float x = (float)v / 255.0f;
            const int k = n > 1 ? ch : 0;
            if (n) x = (x - cfg->normalize_mean[k]) / cfg->normalize_std[k];
            table[ch * 256 + v] = x;
        }
    return table;
}

void pixels_to_input(const uint8_t *px, size_t n, int c, const float *table, float *out) {
    if (!table) {
        for (size_t k = 0; k < n; k++) out[k] = (float)px[k] / 255.0f;
    } else if (c == 1) {
        for (size_t k = 0; k < n; k++) out[k] = table[px[k]];
    } else {
        for (size_t k = 0; k < n; k += (size_t)c)
            for (int ch = 0; ch < c; ch++) out[k + ch] = table[ch * 256 + px[k + ch]];
    }
}

void dataset_sample(const dataset *ds, int i, float *out) {
    size_t size = (size_t)ds->h * ds->w * ds->c;
    pixels_to_input(ds->pixels + (size_t)i * size, size, ds->c, ds->table, out);
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

void image_rotate(float *img, float *tmp, int h, int w, int c, double degrees) {
    image_transform(img, tmp, h, w, c, degrees, 1.0);
}

void image_transform(float *img, float *tmp, int h, int w, int c, double degrees, double zoom) {
    const size_t size = (size_t)h * w * c;
    memcpy(tmp, img, size * sizeof *img);
    const double angle = degrees * (3.14159265358979323846 / 180.0);
    const double cs = cos(angle), sn = sin(angle), cy = (h - 1) / 2.0, cx = (w - 1) / 2.0;
    /* The source of (y, x) is the point rotated back by the angle and scaled back by the zoom,
     * sy = (cy + dy cs / zoom) + dx sn / zoom and sx = (cx - dy sn / zoom) + dx cs / zoom
     * (dividing by 1 changes nothing, so image_rotate's sums are the same). The columns' terms
     * are divided once for a block of columns, the rows' once per row: the same sums, with two
     * divisions a row instead of four a pixel. */
    enum { COLUMNS = 64 };
    double col_y[COLUMNS], col_x[COLUMNS];
    for (int x_first = 0; x_first < w; x_first += COLUMNS) {
        const int n = w - x_first < COLUMNS ? w - x_first : COLUMNS;
        for (int i = 0; i < n; i++) {
            const double dx = x_first + i - cx;
            col_y[i] = dx * sn / zoom;
            col_x[i] = dx * cs / zoom;
        }
        for (int y = 0; y < h; y++) {
            const double dy = y - cy;
            const double row_y = cy + dy * cs / zoom, row_x = cx - dy * sn / zoom;
            for (int i = 0; i < n; i++) {
                const double sy = row_y + col_y[i], sx = row_x + col_x[i];
                const double fy = floor(sy), fx = floor(sx);
                const int y0 = (int)fy, x0 = (int)fx;
                const float wy = (float)(sy - fy), wx = (float)(sx - fx);
                const float weight[4] = {(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx),
                                         wy * wx};
                float *out = img + ((size_t)y * w + x_first + i) * c;
                /* The corners that lie in the image and weigh something, in the order
                 * (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1). */
                const float *src[4];
                float wt[4];
                int corners = 0;
                for (int corner = 0; corner < 4; corner++) {
                    const int py = y0 + corner / 2, px = x0 + corner % 2;
                    if (py < 0 || py >= h || px < 0 || px >= w || weight[corner] == 0.0f)
                        continue;
                    src[corners] = tmp + ((size_t)py * w + px) * c;
                    wt[corners++] = weight[corner];
                }
                for (int k = 0; k < c; k++) {
                    float v = 0.0f;
                    for (int j = 0; j < corners; j++) v += wt[j] * src[j][k];
                    out[k] = v;
                }
            }
        }
    }
}

/* ---- CSV: rows of "label,pixel,...,pixel" ---- */

/* Reads one integer field ending at ',' or the end of the line; -1 when it is not a whole number
 * from 0 to 255 (pixels and labels are bytes). */
static long csv_field(const char **p, const char *end) {
    const char *c = *p;
    while (c < end && (*c == ' ' || *c == '\t')) c++;
    if (c == end || !isdigit((unsigned char)*c)) return -1;
    long v = 0;
    while (c < end && isdigit((unsigned char)*c)) {
        v = v * 10 + (*c++ - '0');
        if (v > 255) return -1;
    }
    while (c < end && (*c == ' ' || *c == '\t')) c++;
    *p = c;
    return v;
}

static int csv_load(dataset *ds, const split_config *s, errbuf *err) {
    unsigned char *text;
    size_t len;
    if (read_input(s->images, &text, &len, err)) return -1;
    const size_t image = shape_size(s->shape);
    size_t rows = 0;
    for (size_t i = 0; i < len; i++) rows += text[i] == '\n';
    rows += len > 0 && text[len - 1] != '\n';
    ds->pixels = malloc(rows * image + 1);
    ds->labels = malloc(rows + 1);
    if (!ds->pixels || !ds->labels) {
        free(text);
        return oomf(err, "%s: out of memory for %zu rows", s->images, rows);
    }
    const char *p = (const char *)text, *end = p + len;
    long n = 0, line = 0;
    while (p < end && (s->limit < 0 || n < s->limit)) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *row_end = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        line++;
        if (row_end == p) { /* an empty line: only the last one may be */
            if (eol != end && eol + 1 != end) {
                free(text);
                return errorf(err, "%s: line %ld is empty", s->images, line);
            }
            break;
        }
        const char *c = p;
        long label = csv_field(&c, row_end);
        if (label < 0 && line == 1 && !isdigit((unsigned char)*p)) { /* a header row */
            p = eol + (eol < end);
            continue;
        }
        size_t fields = 1;
        int bad = label < 0;
        for (size_t k = 0; !bad && k < image; k++) {
            long v = c < row_end && *c == ',' ? (c++, csv_field(&c, row_end)) : -2;
            if (v < 0) bad = v == -2 ? 2 : 1;
            else ds->pixels[(size_t)n * image + k] = (uint8_t)v;
            fields += v >= 0;
        }
        if (!bad && c != row_end) bad = 3;
        if (bad) {
            free(text);
            if (bad == 2 || bad == 3)
                return errorf(err, "%s: line %ld: %s fields, expected %zu (a label and %dx%dx%d "
                              "pixels)", s->images, line, bad == 2 ? "fewer" : "more",
                              image + 1, s->shape.h, s->shape.w, s->shape.c);
            return errorf(err, "%s: line %ld, field %zu: expected an integer from 0 to 255",
                          s->images, line, fields + 1);
        }
        ds->labels[n++] = (uint8_t)label;
        p = eol + (eol < end);
    }
    free(text);
    if (n == 0) return errorf(err, "%s: holds no rows", s->images);
    if (s->limit > n)
        return errorf(err, "%s: limit %ld is larger than the %ld rows in the file", s->images,
                      s->limit, n);
    ds->n = (int)n;
    return 0;
}

/* ---- CIFAR-10/100 binary records ---- */

static int cifar_load(dataset *ds, const split_config *s, errbuf *err) {
    unsigned char *bytes;
    size_t len;
    if (read_input(s->images, &bytes, &len, err)) return -1;
    const size_t label_bytes = s->cifar100 ? 2 : 1, plane = (size_t)s->shape.h * s->shape.w,
                 channels = (size_t)s->shape.c, record = label_bytes + channels * plane;
    if (len == 0 || len % record != 0) {
        free(bytes);
        return errorf(err, "%s: %zu bytes are not a whole number of %zu-byte CIFAR-%s records "
                      "(%zu label byte%s and %dx%dx%d pixels)", s->images, len, record,
                      s->cifar100 ? "100" : "10", label_bytes, label_bytes == 1 ? "" : "s",
                      s->shape.h, s->shape.w, s->shape.c);
    }
    size_t n = len / record;
    if (s->limit > (long)n) {
        free(bytes);
        return errorf(err, "%s: limit %ld is larger than the %zu records in the file", s->images,
                      s->limit, n);
    }
    if (s->limit >= 0) n = (size_t)s->limit;
    ds->pixels = malloc(n * channels * plane + 1);
    ds->labels = malloc(n);
    if (!ds->pixels || !ds->labels) {
        free(bytes);
        return oomf(err, "%s: out of memory", s->images);
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned char *r = bytes + i * record;
        ds->labels[i] = r[label_bytes - 1]; /* CIFAR-100: the fine label, after the coarse one */
        for (size_t p = 0; p < plane; p++) /* channels-first on disk, channels-last here */
            for (size_t c = 0; c < channels; c++)
                ds->pixels[(i * plane + p) * channels + c] = r[label_bytes + c * plane + p];
    }
    free(bytes);
    ds->n = (int)n;
    return 0;
}

int dataset_load_split(dataset *ds, const split_config *s, int n_classes, const load_options *opt,
                       errbuf *err) {
    if (s->format == DATA_IDX)
        return dataset_load(ds, s->images, s->labels, s->limit, n_classes, err);
    memset(ds, 0, sizeof *ds);
    int rc;
    if (s->format == DATA_FOLDER) {
        rc = dataset_load_folder(ds, s, opt, err);
    } else {
        rc = s->format == DATA_CSV ? csv_load(ds, s, err) : cifar_load(ds, s, err);
        if (rc == 0) ds->h = s->shape.h, ds->w = s->shape.w, ds->c = s->shape.c;
    }
    if (rc == 0) rc = dataset_check_labels(ds, s->images, n_classes, err);
    if (rc) dataset_free(ds);
    return rc;
}

