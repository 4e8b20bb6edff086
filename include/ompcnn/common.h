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

/* A failure's message, always one line, and the exit code it calls for. */
typedef struct errbuf {
    char msg[1024];
    int code; /* EXIT_INPUT, or EXIT_RUNTIME for oomf's failures */
} errbuf;

/* Formats a message into err (if not NULL) and returns -1, so callers can `return errorf(...)`.
 * The message is bad input's (code EXIT_INPUT). Control characters in it (a newline in a key
 * or a file name) are written as escapes, so it stays one line. */
int errorf(errbuf *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for memory that ran out (code EXIT_RUNTIME). */
int oomf(errbuf *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with the given exit code (EXIT_RUNTIME: a file could not be written). */
int failf(errbuf *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* An activation of one sample: height x width x channels, stored channels-last (HWC), so a
 * flattened activation is in (row, column, channel) order, as the report's numpy arrays are. */
typedef struct shape3 {
    int h, w, c;
} shape3;

static inline size_t shape_size(shape3 s) {
    return (size_t)s.h * (size_t)s.w * (size_t)s.c;
}

/* The memory this process can still take: the machine's available memory (MemAvailable), or
 * less under a cgroup limit; 0 when unknown. */
double memory_available(void);
/* Before a large allocation: fails with EXIT_RUNTIME and a message giving the estimate when
 * `need` bytes exceed `limit`, or when no limit is set (0), the memory available. */
int memory_check(double need, double limit, errbuf *err);

/* total[i] = rows[0][i] + rows[1][i] + ... in row order (n_rows rows of width doubles): the
 * lane-ordered sum of batch statistics, the same on one process as on many. */
void sum_rows_in_order(const double *rows, int n_rows, size_t width, double *total);

/* Allocation of float arrays aligned for vector loads; free with aligned_free(). */
float *floats_alloc(size_t n);
void aligned_free(void *p);

#endif
