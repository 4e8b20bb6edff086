/*
 * The IDX reader. The whole file is read once (and decompressed when it is gzip, never past the
 * size its header declares) and then checked: magic, element type, dimensions against the real
 * length. Every message names the file and what is wrong with it.
 */
#include "ompcnn/idx.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fileio.h"

#define IDX_MAX_BYTES ((size_t)1 << 32) /* 4 GiB of decompressed data is more than any IDX set */

static uint32_t read_be32(const uint8_t *p);

/* The bytes the IDX header at the start of buf declares, header included, once its len bytes
 * hold the whole header; 0 while they do not yet; SIZE_MAX when the header is not a valid one
 * or declares more than IDX_MAX_BYTES (idx_parse then says what is wrong). */
static size_t declared_size(const uint8_t *buf, size_t len) {
    if (len < 4) return 0;
    if (buf[0] != 0 || buf[1] != 0 || buf[2] != 0x08 || buf[3] < 1 || buf[3] > 4) return SIZE_MAX;
    const size_t header = 4 + 4 * (size_t)buf[3];
    if (len < header) return 0;
    size_t count = 1;
    for (int d = 0; d < buf[3]; d++) {
        uint32_t dim = read_be32(buf + 4 + 4 * d);
        if (dim != 0 && count > IDX_MAX_BYTES / dim) return SIZE_MAX;
        count *= dim;
    }
    return header + count;
}

/* Decompresses the gzip stream src into *out. The output never grows past what the IDX header
 * declares (a forged or bombed file is refused as soon as it says more), and nothing may follow
 * the stream's end. */
static int gunzip(const char *path, const uint8_t *src, size_t src_len, uint8_t **out,
                  size_t *out_len, errbuf *err) {
    if (src_len > UINT_MAX) return errorf(err, "%s: larger than 4 GiB compressed", path);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 15 + 16) != Z_OK) return oomf(err, "%s: out of memory", path);
    zs.next_in = (Bytef *)src;
    zs.avail_in = (uInt)src_len;
    size_t cap = 1 << 16, len = 0, limit = 0; /* limit: the declared size, once known */
    uint8_t *buf = malloc(cap);
    int rc = buf ? Z_OK : Z_MEM_ERROR;
    while (rc == Z_OK) {
        if (len == cap) {
            size_t grown_cap = cap * 2;
            if (limit && grown_cap > limit) grown_cap = limit + 1; /* room to see one byte more */
            if (grown_cap > IDX_MAX_BYTES + 1) grown_cap = IDX_MAX_BYTES + 1;
            uint8_t *grown = grown_cap > cap ? realloc(buf, grown_cap) : NULL;
            if (!grown) {
                rc = grown_cap > cap ? Z_MEM_ERROR : Z_DATA_ERROR;
                break;
            }
            buf = grown;
            cap = grown_cap;
        }
        size_t room = cap - len;
        zs.next_out = buf + len;
        zs.avail_out = room > (1u << 30) ? 1u << 30 : (uInt)room;
        const uInt offered = zs.avail_out;
        rc = inflate(&zs, Z_NO_FLUSH);
        len += offered - zs.avail_out;
        if (!limit) {
            size_t d = declared_size(buf, len);
            if (d == SIZE_MAX) break; /* not an IDX header: idx_parse says so */
            const double avail = memory_available();
            if (d && avail > 0 && (double)d > avail) {
                free(buf);
                inflateEnd(&zs);
                return failf(err, EXIT_RUNTIME, "%s: its header declares %zu bytes, more than the "
                             "memory available", path, d);
            }
            limit = d;
        }
        if (limit && len > limit) {
            free(buf);
            inflateEnd(&zs);
            return errorf(err, "%s: decompresses to more than the %zu bytes its header declares",
                          path, limit);
        }
        if (rc == Z_BUF_ERROR && zs.avail_in == 0) rc = Z_DATA_ERROR; /* ended early */
        else if (rc == Z_BUF_ERROR) rc = Z_OK;
    }
    const char *msg = zs.msg;
    const uInt left = zs.avail_in;
    inflateEnd(&zs);
    if (rc == Z_MEM_ERROR) {
        free(buf);
        return oomf(err, "%s: out of memory", path);
    }
    if (rc != Z_OK && rc != Z_STREAM_END) {
        free(buf);
        if (len == cap && cap > IDX_MAX_BYTES)
            return errorf(err, "%s: larger than %zu bytes once decompressed", path,
                          (size_t)IDX_MAX_BYTES);
        return errorf(err, "%s: corrupt compressed data: %s", path,
                      msg ? msg : "the stream ends early");
    }
    if (rc == Z_STREAM_END && left > 0) {
        free(buf);
        return errorf(
            err,
            "%s: %u bytes follow the end of its gzip stream (another stream, or trailing data)",
            path, left);
    }
    *out = buf;
    *out_len = len;
    return 0;
}

/* The file's bytes, decompressed when it is gzip. */
static int read_all(const char *path, uint8_t **out, size_t *out_len, errbuf *err) {
    uint8_t *raw;
    size_t len;
    if (read_input(path, &raw, &len, err)) return -1;
    if (len < 2 || raw[0] != 0x1f || raw[1] != 0x8b) {
        *out = raw;
        *out_len = len;
        return 0;
    }
    int rc = gunzip(path, raw, len, out, out_len, err);
    free(raw);
    return rc;
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
