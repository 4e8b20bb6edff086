/*
 * The PGM reader: the header (magic, width, height, maxval, with # comments anywhere between
 * them), then the samples, binary (P5) or decimal (P2). The file is read whole and every token
 * checked: a number ends at white space or a comment, and nothing but white space and comments
 * follows the last sample (P2) or the file is exactly as long as its samples (P5). Every
 * message names the file.
 */
#include "ompcnn/pgm.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

typedef struct cursor {
    const unsigned char *p, *end;
} cursor;

/* Skips white space and comments. */
static void skip_blank(cursor *c) {
    while (c->p < c->end) {
        if (*c->p == '#')
            while (c->p < c->end && *c->p != '\n') c->p++;
        else if (isspace(*c->p))
            c->p++;
        else
            break;
    }
}

/* Reads a decimal number after white space and comments: -1 when there is none, -2 when the
 * token is not a whole number (1.9, 12x) or is too large. */
static long next_number(cursor *c) {
    skip_blank(c);
    if (c->p == c->end || !isdigit(*c->p)) return c->p == c->end ? -1 : -2;
    long v = 0;
    while (c->p < c->end && isdigit(*c->p)) {
        v = v * 10 + (*c->p++ - '0');
        if (v > 1000000) return -2;
    }
    if (c->p < c->end && !isspace(*c->p) && *c->p != '#') return -2;
    return v;
}

/* The samples after the header, into pixels (n of them). */
static int read_samples(cursor *c, int binary, long maxval, uint8_t *pixels, size_t n,
                        const char *path, errbuf *err) {
    if (binary) {
        /* Exactly one white space character separates maxval from the binary samples. */
        if (c->p == c->end || !isspace(*c->p))
            return errorf(err, "%s: truncated PGM: no samples after the header", path);
        c->p++;
        size_t have = (size_t)(c->end - c->p);
        if (have != n)
            return errorf(err, "%s: %s PGM: %zu bytes of samples, the header says %zu", path,
                          have < n ? "truncated" : "trailing data in the", have, n);
        memcpy(pixels, c->p, n);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        long v = next_number(c);
        if (v == -1) return errorf(err, "%s: truncated PGM: fewer than %zu samples", path, n);
        if (v < 0) return errorf(err, "%s: PGM sample %zu is not a whole number", path, i);
        if (v > maxval)
            return errorf(err, "%s: PGM sample %zu is %ld, above maxval %ld", path, i, v, maxval);
        pixels[i] = (uint8_t)v;
    }
    skip_blank(c);
    if (c->p != c->end)
        return errorf(err, "%s: text after the last of the PGM's %zu samples", path, n);
    return 0;
}

int pgm_load(const char *path, uint8_t **pixels, int *width, int *height, errbuf *err) {
    unsigned char *data;
    size_t len;
    *pixels = NULL;
    if (read_input(path, &data, &len, err)) return -1;
    cursor c = {data, data + len};
    int rc = -1;
    if (len < 2 || data[0] != 'P' || (data[1] != '2' && data[1] != '5')) {
        errorf(err, "%s: not a PGM image (expected P2 or P5)", path);
        goto done;
    }
    c.p += 2;
    if (c.p < c.end && !isspace(*c.p) && *c.p != '#') {
        errorf(err, "%s: not a PGM image (expected P2 or P5)", path);
        goto done;
    }
    long w = next_number(&c), h = next_number(&c), maxval = next_number(&c);
    if (w <= 0 || h <= 0 || w > 65536 || h > 65536) {
        errorf(err, "%s: bad PGM width or height", path);
        goto done;
    }
    if (maxval < 0) {
        errorf(err, "%s: the PGM maxval is missing or not a whole number", path);
        goto done;
    }
    if (maxval == 0 || maxval > 255) {
        errorf(err, "%s: PGM maxval %ld is not supported (1 to 255)", path, maxval);
        goto done;
    }
    size_t n = (size_t)w * (size_t)h;
    *pixels = malloc(n);
    if (!*pixels) {
        oomf(err, "%s: out of memory", path);
        goto done;
    }
    if (read_samples(&c, data[1] == '5', maxval, *pixels, n, path, err)) goto done;
    if (maxval != 255)
        for (size_t i = 0; i < n; i++) {
            if ((*pixels)[i] > maxval) {
                errorf(err, "%s: PGM sample %zu is above maxval %ld", path, i, maxval);
                goto done;
            }
            (*pixels)[i] = (uint8_t)(((*pixels)[i] * 255 + maxval / 2) / maxval);
        }
    *width = (int)w;
    *height = (int)h;
    rc = 0;
done:
    free(data);
    if (rc) {
        free(*pixels);
        *pixels = NULL;
    }
    return rc;
}
