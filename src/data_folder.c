/*
 * Data sets stored as folders of PNG files, one folder per class (root/CLASS/NAME.png), as
 * torchvision's ImageFolder reads them. Classes are the sub-folders of root, sorted by name
 * (bytewise); a class's label is its place in that order. The files of each class are sorted by
 * name and dealt out in turn: the first file of every class, then the second of every class,
 * and so on, so that a prefix (data.*.limit) and the held-out end (data.validation) hold every
 * class. Files are read and decoded in parallel over the threads; the pixels stay in memory as
 * bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "fileio.h"
#include "ompcnn/data.h"
#include "ompcnn/png.h"

#define MAX_CLASSES 256 /* labels are bytes */

/* A growing list of strings. */
typedef struct names {
    char **items;
    size_t n, cap;
} names;

/* Appends s, which the list then owns (freed here when it cannot be added). */
static int names_take(names *l, char *s) {
    if (!s) return -1;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **grown = realloc(l->items, cap * sizeof *grown);
        if (!grown) {
            free(s);
            return -1;
        }
        l->items = grown;
        l->cap = cap;
    }
    l->items[l->n++] = s;
    return 0;
}

static void names_free(names *l) {
    for (size_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int has_png_suffix(const char *name) {
    size_t n = strlen(name);
    return n > 4 && strcasecmp(name + n - 4, ".png") == 0;
}

/* The entries of dir that are not hidden, sorted: the names of its sub-folders (want_dirs), or
 * the paths (dir/name) of its .png files. */
static int list_dir(const char *dir, int want_dirs, names *out, errbuf *err) {
    DIR *d = opendir(dir);
    if (!d) return errorf(err, "%s: cannot open the folder (%s)", dir, strerror(errno));
    int rc = 0;
    for (struct dirent *e; rc == 0 && (errno = 0, e = readdir(d));) {
        if (e->d_name[0] == '.') continue; /* ., .. and hidden files */
        if (!want_dirs) {
            if (has_png_suffix(e->d_name) && names_take(out, join(dir, e->d_name)))
                rc = oomf(err, "%s: out of memory listing the folder", dir);
            continue;
        }
        char *path = join(dir, e->d_name);
        struct stat st;
        if (!path) {
            rc = oomf(err, "%s: out of memory listing the folder", dir);
        } else if (stat(path, &st) != 0) {
            rc = errorf(err, "%s: cannot read (%s)", path, strerror(errno));
        } else if (S_ISDIR(st.st_mode) && names_take(out, strdup(e->d_name))) {
            rc = oomf(err, "%s: out of memory listing the folder", dir);
        }
        free(path);
    }
    if (rc == 0 && errno != 0)
        rc = errorf(err, "%s: cannot list the folder (%s)", dir, strerror(errno));
    closedir(d);
    if (rc == 0 && out->n > 1) qsort(out->items, out->n, sizeof *out->items, by_name);
    return rc;
}

/* The files of every class, dealt out in turn; labels[i] is files[i]'s class. */
static int list_samples(const char *root, names *classes, names *files, uint8_t **labels,
                        errbuf *err) {
    struct stat st;
    if (stat(root, &st) != 0)
        return errorf(err, "%s: cannot open the folder (%s)", root, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return errorf(err, "%s: not a folder (the folder format reads ROOT/CLASS/*.png)", root);
    if (list_dir(root, 1, classes, err)) return -1;
    if (classes->n == 0)
        return errorf(err, "%s: no class folders (the folder format reads ROOT/CLASS/*.png)", root);
    if (classes->n > MAX_CLASSES)
        return errorf(err, "%s: %zu class folders, at most %d are supported", root, classes->n,
                      MAX_CLASSES);
    names *per_class = calloc(classes->n, sizeof *per_class);
    if (!per_class) return oomf(err, "%s: out of memory", root);
    int rc = 0;
    size_t total = 0, longest = 0;
    for (size_t k = 0; rc == 0 && k < classes->n; k++) {
        char *dir = join(root, classes->items[k]);
        if (!dir) {
            rc = oomf(err, "%s: out of memory", root);
            break;
        }
        rc = list_dir(dir, 0, &per_class[k], err);
        if (rc == 0 && per_class[k].n == 0)
            rc = errorf(err, "%s: a class folder with no .png files", dir);
        free(dir);
        total += per_class[k].n;
        if (per_class[k].n > longest) longest = per_class[k].n;
    }
    if (rc == 0 && total > 0x7fffffff) rc = errorf(err, "%s: more than 2^31 files", root);
    if (rc == 0 && !(*labels = malloc(total))) rc = oomf(err, "%s: out of memory", root);
    for (size_t j = 0; rc == 0 && j < longest; j++)
        for (size_t k = 0; rc == 0 && k < classes->n; k++) {
            if (j >= per_class[k].n) continue;
            if (names_take(files, per_class[k].items[j])) rc = oomf(err, "%s: out of memory", root);
            else (*labels)[files->n - 1] = (uint8_t)k;
            per_class[k].items[j] = NULL; /* files owns it now */
        }
    for (size_t k = 0; k < classes->n; k++) names_free(&per_class[k]);
    free(per_class);
    return rc;
}

/* Reads and decodes one file into out, which holds an image of `want`'s shape; first names the
 * file that set the shape. */
static int load_one(const char *path, const pngimg_shape *want, const char *first, uint8_t *out,
                    errbuf *err) {
    unsigned char *bytes;
    size_t len;
    pngimg_shape got;
    if (read_input(path, &bytes, &len, err)) return -1;
    int rc = pngimg_decode(bytes, len, path, want, out, &got, err);
    if (rc == 1)
        rc = errorf(err,
                    "%s: a %dx%d image with %d channel%s; the first image, %s, is %dx%d with "
                    "%d (all must be alike)",
                    path, got.w, got.h, got.c, got.c == 1 ? "" : "s", first, want->w, want->h,
                    want->c);
    free(bytes);
    return rc;
}

int dataset_load_folder(dataset *ds, const split_config *s, const load_options *opt, errbuf *err) {
    names classes = {0}, files = {0};
    uint8_t *labels = NULL;
    memset(ds, 0, sizeof *ds);
    if (list_samples(s->images, &classes, &files, &labels, err)) {
        names_free(&classes);
        names_free(&files);
        free(labels);
        return -1;
    }
    int rc = 0;
    long n = (long)files.n;
    if (s->limit > n)
        rc = errorf(err, "%s: limit %ld is larger than the %ld images in the folder", s->images,
                    s->limit, n);
    if (s->limit >= 0) n = s->limit < n ? s->limit : n;
    /* The first image sets the shape every other must have. */
    pngimg_shape shape = {0, 0, 0};
    uint8_t *first = NULL;
    if (rc == 0) rc = pngimg_load(files.items[0], &first, &shape, err);
    const size_t image = (size_t)shape.h * shape.w * shape.c;
    if (rc == 0 && !(ds->pixels = malloc((size_t)n * image + 1)))
        rc = oomf(err, "%s: out of memory for %ld images of %dx%dx%d", s->images, n, shape.h,
                  shape.w, shape.c);
    if (rc == 0) {
        memcpy(ds->pixels, first, image);
        const int threads = opt && opt->threads > 0 ? opt->threads : omp_get_max_threads();
        long bad = n, done = 1; /* the first failing file (the lowest index), files decoded */
        errbuf bad_err = {"", 0};
        double last = omp_get_wtime();
        void (*progress)(void *, const char *, long, long) = opt ? opt->progress : NULL;
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads)
        for (long i = 1; i < n; i++) {
            long stop;
#pragma omp atomic read
            stop = bad;
            if (i > stop) continue; /* an earlier file failed: its message is the one */
            errbuf e;
            if (load_one(files.items[i], &shape, files.items[0], ds->pixels + (size_t)i * image,
                         &e)) {
#pragma omp critical(folder_failure)
                if (i < bad) {
                    bad_err = e;
#pragma omp atomic write
                    bad = i;
                }
            }
            long now_done;
#pragma omp atomic capture
            now_done = ++done;
            if (progress && omp_get_thread_num() == 0 && omp_get_wtime() - last > 0.25) {
                last = omp_get_wtime();
                progress(opt->ctx, opt->what, now_done, n);
            }
        }
        if (progress) progress(opt->ctx, opt->what, n, n);
        if (bad < n) {
            *err = bad_err;
            rc = -1;
        }
    }
    free(first);
    if (rc == 0) {
        ds->labels = labels;
        labels = NULL;
        ds->n = (int)n;
        ds->h = shape.h, ds->w = shape.w, ds->c = shape.c;
        ds->class_names = classes.items;
        ds->n_class_names = (int)classes.n;
        classes.items = NULL;
        classes.n = 0;
    } else {
        free(ds->pixels);
        ds->pixels = NULL;
    }
    free(labels);
    names_free(&classes);
    names_free(&files);
    return rc;
}
