/*
 * The IDX reader. The whole file is read (through zlib, which passes uncompressed files through
 * unchanged) and then checked: magic, element type, dimensions against the real length. Every
 * message names the file and what is wrong with it.
 */
#include "ompcnn/idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define IDX_MAX_BYTES ((size_t)1 << 32) /* 4 GiB of decompressed data is more than any IDX set */

/* The size the file will have once read: the gzip trailer's ISIZE (the length mod 2^32) for a
 * gzip file, else its size on disk; 0 when unknown. Allocating that at once keeps the peak
 * memory of loading at one copy of the data instead of a doubling buffer's two. */
static size_t expected_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char head[2] = {0, 0}, tail[4];
    size_t size = 0;
    if (fread(head, 1, 2, f) == 2 && fseek(f, 0, SEEK_END) == 0) {
        long end = ftell(f);
        if (head[0] == 0x1f && head[1] == 0x8b) {
            if (end >= 4 && fseek(f, -4, SEEK_END) == 0 && fread(tail, 1, 4, f) == 4)
                size = (size_t)tail[0] | ((size_t)tail[1] << 8) | ((size_t)tail[2] << 16) |
                       ((size_t)tail[3] << 24);
        } else if (end > 0) {
            size = (size_t)end;
        }
    }
    fclose(f);
    return size;
}

static int read_all(const char *path, uint8_t **out, size_t *out_len, errbuf *err) {
    gzFile f = gzopen(path, "rb");
    if (!f) return errorf(err, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
    /* One byte more than expected, so that reaching the end needs no growth. */
    size_t cap = expected_size(path) + 1, len = 0;
    if (cap < 4096) cap = 4096;
    if (cap > IDX_MAX_BYTES) cap = IDX_MAX_BYTES;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        gzclose(f);
        return errorf(err, "%s: out of memory", path);
    }
    for (;;) {
        if (len == cap) {
            if (cap >= IDX_MAX_BYTES) {
                free(buf);
                gzclose(f);
                return errorf(err, "%s: larger than %zu bytes once decompressed", path,
                            (size_t)IDX_MAX_BYTES);
            }
            size_t grown_cap = cap * 2 < IDX_MAX_BYTES ? cap * 2 : IDX_MAX_BYTES;
            uint8_t *grown = realloc(buf, grown_cap);
            if (!grown) {
                free(buf);
                gzclose(f);
                return errorf(err, "%s: out of memory", path);
            }
            buf = grown;
            cap = grown_cap;
        }
        size_t want = cap - len;
        if (want > (1u << 30)) want = 1u << 30;
        int got = gzread(f, buf + len, (unsigned)want);
        if (got < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            errorf(err, "%s: corrupt compressed data: %s", path,
                 code == Z_ERRNO ? strerror(errno) : msg);
            free(buf);
            gzclose(f);
            return -1;
        }
        if (got == 0) {
            /* zlib reports a truncated gzip stream as an error only once the data runs out. */
            int code;
            const char *msg = gzerror(f, &code);
            if (code != Z_OK && code != Z_STREAM_END) {
                errorf(err, "%s: corrupt compressed data: %s", path, msg);
                free(buf);
                gzclose(f);
                return -1;
            }
            break;
        }
        len += (size_t)got;
    }
    gzclose(f);
    *out = buf;
    *out_len = len;
    return 0;
}

static uint32_t read_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int idx_load(idx_array *out, const char *path, errbuf *err) {
    memset(out, 0, sizeof *out);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (read_all(path, &buf, &len, err)) return -1;
    return idx_parse(out, buf, len, path, err);
}

int idx_parse(idx_array *out, uint8_t *buf, size_t len, const char *path, errbuf *err) {
    memset(out, 0, sizeof *out);
    if (len < 4) {
        free(buf);
        return errorf(err, "%s: not an IDX file: only %zu bytes", path, len);
    }
    if (buf[0] != 0 || buf[1] != 0) {
        errorf(err, "%s: not an IDX file: magic bytes %02x %02x, expected 00 00", path, buf[0],
             buf[1]);
        free(buf);
        return -1;
    }
    if (buf[2] != 0x08) {
        errorf(err, "%s: IDX element type 0x%02x is not supported (only 0x08, unsigned byte)", path,
             buf[2]);
        free(buf);
        return -1;
    }
    int ndim = buf[3];
    if (ndim < 1 || ndim > 4) {
        errorf(err, "%s: IDX file with %d dimensions (expected 1 to 4)", path, ndim);
        free(buf);
        return -1;
    }
    size_t header = 4 + 4 * (size_t)ndim;
    if (len < header) {
        errorf(err, "%s: truncated header: %zu bytes, the %d dimensions need %zu", path, len, ndim,
             header);
        free(buf);
        return -1;
    }
    size_t count = 1;
    for (int d = 0; d < ndim; d++) {
        out->dims[d] = read_be32(buf + 4 + 4 * d);
        if (out->dims[d] != 0 && count > IDX_MAX_BYTES / out->dims[d]) {
            errorf(err, "%s: dimensions too large", path);
            free(buf);
            return -1;
        }
        count *= out->dims[d];
    }
    if (len - header != count) {
        errorf(err, "%s: %s: the header's dimensions need %zu data bytes, the file has %zu", path,
             len - header < count ? "truncated" : "trailing data", count, len - header);
        free(buf);
        return -1;
    }
    memmove(buf, buf + header, count);
    out->data = buf;
    out->ndim = ndim;
    out->count = count;
    return 0;
}

void idx_free(idx_array *a) {
    free(a->data);
    memset(a, 0, sizeof *a);
}

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
