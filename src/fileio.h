/*
 * Atomic file writes (src/fileio.c), for every file the trainer writes: parameters,
 * checkpoints, metrics and profile tables, confusion matrices.
 */
#ifndef OMPCNN_FILEIO_H
#define OMPCNN_FILEIO_H

#include <stddef.h>

#include "ompcnn/common.h"

/* Writes size bytes to path atomically: path holds the old content or all of the new. */
int write_file_atomic(const char *path, const void *data, size_t size, errbuf *err);

#endif
