/*
 * The small shared helpers: error formatting and aligned float allocation.
 */
#include "ompcnn/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Formats into err->msg, writing control characters as escapes (\n, \t, \xHH). */
static void format_line(errbuf *err, const char *fmt, va_list ap) {
    char raw[sizeof err->msg];
    vsnprintf(raw, sizeof raw, fmt, ap);
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)raw; *c && o + 5 < sizeof err->msg; c++) {
        if (*c >= 0x20 && *c != 0x7f) err->msg[o++] = (char)*c;
        else if (*c == '\n') o += (size_t)snprintf(err->msg + o, 3, "\\n");
        else if (*c == '\t') o += (size_t)snprintf(err->msg + o, 3, "\\t");
        else o += (size_t)snprintf(err->msg + o, 5, "\\x%02x", *c);
    }
    err->msg[o] = '\0';
}

static int vfail(errbuf *err, int code, const char *fmt, va_list ap) {
    if (err) {
        format_line(err, fmt, ap);
        err->code = code;
    }
    return -1;
}

int errorf(errbuf *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, EXIT_INPUT, fmt, ap);
    va_end(ap);
    return -1;
}

int oomf(errbuf *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, EXIT_RUNTIME, fmt, ap);
    va_end(ap);
    return -1;
}

int failf(errbuf *err, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, code, fmt, ap);
    va_end(ap);
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

/* A number from a one-line file such as /sys/fs/cgroup/memory.max; -1 when absent or "max". */
static double read_number_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    double v = -1;
    if (fscanf(f, "%lf", &v) != 1) v = -1;
    fclose(f);
    return v;
}

double memory_available(void) {
    double avail = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %lf kB", &avail) == 1) {
                avail *= 1024;
                break;
            }
        fclose(f);
    }
    const double limit = read_number_file("/sys/fs/cgroup/memory.max");
    const double used = read_number_file("/sys/fs/cgroup/memory.current");
    if (limit > 0 && used >= 0 && (avail == 0 || limit - used < avail)) avail = limit - used;
    return avail > 0 ? avail : 0;
}

/* A byte count for messages: "3.2 GB" or "120 MB". */
static void human_bytes(double bytes, char *buf, size_t size) {
    const double mb = 1024.0 * 1024.0;
    if (bytes >= 1024.0 * mb) snprintf(buf, size, "%.1f GB", bytes / (1024.0 * mb));
    else snprintf(buf, size, "%.0f MB", bytes / mb < 1 ? 1 : bytes / mb);
}

int memory_check(double need, double limit, errbuf *err) {
    char need_s[32], have_s[32];
    human_bytes(need, need_s, sizeof need_s);
    if (limit > 0) {
        human_bytes(limit, have_s, sizeof have_s);
        if (need > limit)
            return failf(err, EXIT_RUNTIME,
                         "this network needs about %s of memory for its parameters and "
                         "workspaces, more than the --max-memory limit of %s",
                         need_s, have_s);
        return 0;
    }
    const double avail = memory_available();
    human_bytes(avail, have_s, sizeof have_s);
    if (avail > 0 && need > avail)
        return failf(err, EXIT_RUNTIME,
                     "this network needs about %s of memory for its parameters and workspaces, "
                     "more than the %s this machine has available (use a smaller batch, fewer "
                     "lanes or threads; --max-memory SIZE sets the limit instead)",
                     need_s, have_s);
    return 0;
}

void sum_rows_in_order(const double *rows, int n_rows, size_t width, double *total) {
    for (size_t i = 0; i < width; i++) {
        double sum = rows[i];
        for (int r = 1; r < n_rows; r++) sum += rows[(size_t)r * width + i];
        total[i] = sum;
    }
}
