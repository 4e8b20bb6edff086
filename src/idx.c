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
