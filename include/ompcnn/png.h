/*
 * PNG images through libpng, for `format: "folder"` data sets and `trainer predict`. Every PNG
 * colour type and bit depth is read as 8-bit pixels, channels-last:
 *   grey, grey + alpha           -> 1 channel (the alpha is dropped)
 *   RGB, RGBA, palette           -> 3 channels (the alpha is dropped, a palette is looked up)
 *   1, 2 and 4-bit grey          -> scaled to 0..255
 *   16-bit samples               -> rounded to 8 bits (v * 255 / 65535, to nearest)
 * Interlaced files are read too. A file is decoded from its bytes in memory, so a reader never
 * holds a file open while it decodes, and any number of threads may decode at once.
 */
#ifndef OMPCNN_PNG_H
#define OMPCNN_PNG_H

#include "ompcnn/common.h"

/* The size and channel count a PNG's pixels decode to, from its header only. */
typedef struct pngimg_shape {
    int h, w, c;
} pngimg_shape;

/* Reads the header of a PNG held in memory: its decoded size and channels. path names the
 * file in messages. */
int pngimg_shape_of(const unsigned char *bytes, size_t len, const char *path, pngimg_shape *shape,
                 errbuf *err);
/* Decodes a PNG held in memory into out (want's h * w * c bytes) when its decoded shape is
 * want's, reading the file once: returns 0, 1 when the shape is another (*got says which;
 * nothing is decoded and err is untouched) or -1 (err says why). */
int pngimg_decode(const unsigned char *bytes, size_t len, const char *path,
                  const pngimg_shape *want, uint8_t *out, pngimg_shape *got, errbuf *err);
/* Reads and decodes the PNG file at path into a malloc'd buffer. */
int pngimg_load(const char *path, uint8_t **pixels, pngimg_shape *shape, errbuf *err);
/* Whether bytes start with the PNG signature. */
int pngimg_is_png(const unsigned char *bytes, size_t len);

#endif
