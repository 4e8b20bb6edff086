/*
 * The PGM reader: the header (magic, width, height, maxval, with # comments anywhere between
 * them), then the samples, binary (P5) or decimal (P2). Every message names the file.
 */
#include "ompcnn/pgm.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Skips white space and comments, then reads a decimal number; -1 when there is none. */
static long read_number(FILE *f) {
    int c;
    for (;;) {
        c = fgetc(f);
        if (c == '#')
            while (c != '\n' && c != EOF) c = fgetc(f);
        else if (!isspace(c))
            break;
    }
    if (!isdigit(c)) return -1;
    long v = 0;
    while (isdigit(c)) {
        v = v * 10 + (c - '0');
        if (v > 1000000) return -1;
        c = fgetc(f);
    }
    return v;
}

int pgm_load(const char *path, uint8_t **pixels, int *width, int *height, errbuf *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return errorf(err, "%s: cannot open: %s", path, strerror(errno));
    char magic[2];
    int rc = -1;
    *pixels = NULL;
    if (fread(magic, 1, 2, f) != 2 || magic[0] != 'P' || (magic[1] != '2' && magic[1] != '5')) {
        errorf(err, "%s: not a PGM image (expected P2 or P5)", path);
        goto done;
    }
    long w = read_number(f), h = read_number(f), maxval = read_number(f);
    if (w <= 0 || h <= 0 || w > 65536 || h > 65536) {
        errorf(err, "%s: bad PGM width or height", path);
        goto done;
    }
    if (maxval <= 0 || maxval > 255) {
        errorf(err, "%s: PGM maxval %ld is not supported (1 to 255)", path, maxval);
        goto done;
    }
    size_t n = (size_t)w * (size_t)h;
    *pixels = malloc(n);
    if (!*pixels) {
        errorf(err, "%s: out of memory", path);
        goto done;
    }
    if (magic[1] == '5') {
        /* Exactly one white space character separates maxval from the binary samples, and
         * read_number consumed it. */
        if (fread(*pixels, 1, n, f) != n) {
            errorf(err, "%s: truncated PGM: fewer than %zu samples", path, n);
            goto done;
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            long v = read_number(f);
            if (v < 0 || v > maxval) {
                errorf(err, "%s: PGM sample %zu is missing or above maxval %ld", path, i, maxval);
                goto done;
            }
            (*pixels)[i] = (uint8_t)v;
        }
    }
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
    fclose(f);
    if (rc) {
        free(*pixels);
        *pixels = NULL;
    }
    return rc;
}
