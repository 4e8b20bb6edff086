/*
 * IDX files (the MNIST format), raw or gzip-compressed.
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

#endif
