/*
 * The small shared helpers: error formatting and aligned float allocation.
 */
#include "ompcnn/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int errorf(errbuf *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

float *floats_alloc(size_t n) {
    /* 64-byte alignment: a cache line, and enough for any vector width. Zero-filled. */
    size_t bytes = n * sizeof(float);
    if (n != 0 && bytes / sizeof(float) != n) return NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    float *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void aligned_free(void *p) {
    free(p);
}
