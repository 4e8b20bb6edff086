/*
 * PGM images (netpbm P2 ascii and P5 binary, maxval up to 255) for `trainer predict`.
 */
#ifndef OMPCNN_PGM_H
#define OMPCNN_PGM_H

#include "ompcnn/common.h"

/* Reads a PGM into a malloc'd width*height buffer of bytes scaled to 0..255. */
int pgm_load(const char *path, uint8_t **pixels, int *width, int *height, errbuf *err);

#endif
