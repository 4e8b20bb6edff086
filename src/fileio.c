/*
 * The user's files. Outputs are written whole under a temporary name beside them, flushed to disk
 * and renamed into place, so a crash or a full disk leaves the old file or the new one, never half
 * of one. Before a run writes anything, every output is checked against every other file of the
 * run: a device, a FIFO or a folder is never replaced by a file, and no output may be one of the
 * run's inputs or another output, compared by device and inode (so two names of one file, or a
 * link, are caught too). Inputs are opened only when they are regular files: a FIFO would block
 * for ever.
 */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What a file that is not a regular one is, for messages. */
static const char *kind_of(mode_t mode) {
    if (S_ISDIR(mode)) return "a folder";
    if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

int open_input(const char *path, errbuf *err) {
    /* O_NONBLOCK: opening a FIFO with no writer must not wait for one. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return errorf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return errorf(err, "%s: cannot read: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return errorf(err, "%s: is %s, not a file", path, kind_of(st.st_mode));
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

int read_input(const char *path, unsigned char **data, size_t *len, errbuf *err) {
    *data = NULL;
    *len = 0;
    int fd = open_input(path, err);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return errorf(err, "%s: cannot read: %s", path, strerror(errno));
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return oomf(err, "%s: out of memory for its %zu bytes", path, cap - 1);
    }
    for (;;) {
        if (n + 1 == cap) { /* the file grew while being read: read what is there */
            unsigned char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                close(fd);
                return oomf(err, "%s: out of memory", path);
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return errorf(err, "%s: cannot read: %s", path, strerror(e));
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

/* ---- the files of a run ---- */

/* A file's identity: its device and inode if it exists, else its folder's and its name. */
typedef struct file_id {
    dev_t dev;
    ino_t ino;
    const char *name; /* NULL for an existing file */
    int exists;
} file_id;

static int identify(const file_use *u, file_id *id, errbuf *err) {
    struct stat st;
    memset(id, 0, sizeof *id);
    if (stat(u->path, &st) == 0) {
        if (u->output && !S_ISREG(st.st_mode))
            return errorf(err, "%s %s: is %s; an output must be a regular file or a new name",
                          u->what, u->path, kind_of(st.st_mode));
        id->dev = st.st_dev;
        id->ino = st.st_ino;
        id->exists = 1;
        return 0;
    }
    if (!u->output) return 1; /* a missing input: its reader says so */
    const char *slash = strrchr(u->path, '/');
    char dir[PATH_MAX];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == u->path ? 1 : (int)(slash - u->path), u->path);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return errorf(err, "%s %s: the folder %s does not exist", u->what, u->path, dir);
    if (access(dir, W_OK) != 0) /* permissions or a read-only file system: a write failure */
        return failf(err, EXIT_RUNTIME, "%s %s: the folder %s is not writable (%s)", u->what,
                     u->path, dir, strerror(errno));
    id->dev = st.st_dev;
    id->ino = st.st_ino;
    id->name = slash ? slash + 1 : u->path;
    return 0;
}

static int same_file(const file_id *a, const file_id *b) {
    if (a->dev != b->dev || a->ino != b->ino || a->exists != b->exists) return 0;
    return a->exists || strcmp(a->name, b->name) == 0;
}

int check_file_uses(const file_use *uses, int n, errbuf *err) {
    file_id ids[FILE_USES_MAX];
    int known[FILE_USES_MAX];
    if (n > FILE_USES_MAX) return errorf(err, "too many files for one run");
    for (int i = 0; i < n; i++) {
        known[i] = 0;
        if (!uses[i].path) continue;
        int rc = identify(&uses[i], &ids[i], err);
        if (rc < 0) return -1;
        known[i] = rc == 0;
    }
    for (int i = 0; i < n; i++) {
        if (!known[i] || !uses[i].output) continue;
        for (int j = 0; j < n; j++) {
            if (j == i || !known[j] || !same_file(&ids[i], &ids[j])) continue;
            if (uses[j].output && j < i) continue; /* said once, for the first of the two */
            if (uses[j].may_share && uses[i].may_share) continue;
            if (uses[j].output)
                return errorf(err, "%s %s and %s %s are the same file; each output needs its "
                              "own", uses[i].what, uses[i].path, uses[j].what, uses[j].path);
            return errorf(err, "%s %s is also %s (%s); writing it would destroy it",
                          uses[i].what, uses[i].path, uses[j].what, uses[j].path);
        }
    }
    return 0;
}

/* ---- atomic writes ---- */

/* Where a write to path lands: the file a symbolic link points to (the link stays), else path.
 * Refuses a path that exists and is not a regular file. */
static int write_target(const char *path, char *target, size_t size, errbuf *err) {
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        char *real = realpath(path, NULL);
        if (real) {
            snprintf(target, size, "%s", real);
            free(real);
        } else {
            snprintf(target, size, "%s", path); /* a dangling link: replaced by the file */
        }
    } else {
        snprintf(target, size, "%s", path);
    }
    if (stat(target, &st) == 0 && !S_ISREG(st.st_mode))
        return errorf(err, "%s: is %s; an output must be a regular file or a new name", path,
                      kind_of(st.st_mode));
    return 0;
}

/* Opens a new temporary file beside target; its name goes to tmp. */
static int open_temporary(const char *target, char *tmp, size_t size) {
    for (int attempt = 0; attempt < 100; attempt++) {
        snprintf(tmp, size, "%s.tmp.%ld.%d", target, (long)getpid(), attempt);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    errno = EEXIST;
    return -1;
}

/* Flushes the folder holding path, so that the rename itself survives a crash. */
static void sync_folder(const char *path) {
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int write_all(int fd, const unsigned char *p, size_t left) {
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = ENOSPC;
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t size, errbuf *err) {
    char target[PATH_MAX], tmp[PATH_MAX + 32];
    if (write_target(path, target, sizeof target, err)) return -1;
    int fd = open_temporary(target, tmp, sizeof tmp);
    if (fd < 0)
        return failf(err, EXIT_RUNTIME, "%s: cannot create: %s", path, strerror(errno));
    const char *failed = NULL;
    if (write_all(fd, data, size) != 0) failed = "write failed";
    else if (fsync(fd) != 0) failed = "cannot flush to disk";
    int e = errno;
    if (close(fd) != 0 && !failed) {
        failed = "cannot flush to disk";
        e = errno;
    }
    if (!failed && rename(tmp, target) != 0) {
        failed = "cannot rename the finished file into place";
        e = errno;
    }
    if (failed) {
        unlink(tmp);
        return failf(err, EXIT_RUNTIME, "%s: %s: %s", path, failed, strerror(e));
    }
    sync_folder(target);
    return 0;
}
