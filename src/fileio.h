/*
 * The user's files (src/fileio.c): inputs opened only when they are regular files, the check of
 * a run's outputs against its inputs and each other, and atomic writes.
 */
#ifndef OMPCNN_FILEIO_H
#define OMPCNN_FILEIO_H

#include <stddef.h>

#include "ompcnn/common.h"

/* Opens path for reading; refuses a folder, a device, a FIFO or a socket. Returns the file
 * descriptor, or -1 with the reason in err. */
int open_input(const char *path, errbuf *err);
/* Reads a whole input file (open_input) into *data (malloc'd, a NUL after its *len bytes). */
int read_input(const char *path, unsigned char **data, size_t *len, errbuf *err);

/* One file a run reads or writes: `what` names it in messages ("--save", "the config file"). */
typedef struct file_use {
    const char *what;
    const char *path; /* NULL: not used this run */
    int output;
    int may_share; /* two uses that both set this may be one file (--resume and the checkpoint) */
} file_use;

#define FILE_USES_MAX 32

/* Before anything is written: every output is a regular file or a new name in a writable
 * folder, and no output is the same file as another output or as an input (same device and
 * inode). The message names both uses. */
int check_file_uses(const file_use *uses, int n, errbuf *err);

/* Writes size bytes to path atomically: path holds the old content or all of the new. A
 * symbolic link stays and its file is replaced; a path that is not a regular file is refused. */
int write_file_atomic(const char *path, const void *data, size_t size, errbuf *err);

#endif
