/*
 * Shared vocabulary of ompcnn: the error buffer every fallible function fills, the activation
 * shape, exit codes and the version. Errors travel up as values (-1 plus a message in an errbuf);
 * only main() prints them and chooses the exit code.
 */
#ifndef OMPCNN_COMMON_H
#define OMPCNN_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define OMPCNN_VERSION "0.1.0"

/* Exit codes of the trainer, documented in docs/cli.md. */
enum {
    EXIT_OK = 0,
    EXIT_RUNTIME = 1, /* I/O failure while writing, out of memory */
    EXIT_INPUT = 2,   /* bad command line, config, data file or parameter file */
    EXIT_DIVERGED = 3 /* a loss or a weight became NaN or infinite; training stopped */
};

typedef struct errbuf {
    char msg[1024];
} errbuf;

/* Formats a message into err (if not NULL) and returns -1, so callers can `return errorf(...)`. */
int errorf(errbuf *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* An activation of one sample: height x width x channels, stored channels-last (HWC), so a
 * flattened activation is in (row, column, channel) order, as the report's numpy arrays are. */
typedef struct shape3 {
    int h, w, c;
} shape3;

static inline size_t shape_size(shape3 s) {
    return (size_t)s.h * (size_t)s.w * (size_t)s.c;
}

/* Allocation of float arrays aligned for vector loads; free with aligned_free(). */
float *floats_alloc(size_t n);
void aligned_free(void *p);

#endif
