/*
 * Parameter files in numpy's .npz format: a zip archive of .npy arrays (stored, CRC-32 from zlib),
 * one per tensor, named "<layer index>_<type>_<tensor>", e.g. "0_conv2d_weight". numpy.load opens
 * them. Writes are atomic: a temporary file in the same folder, fsync, rename.
 */
#ifndef OMPCNN_NPZ_H
#define OMPCNN_NPZ_H

#include "ompcnn/net.h"

int params_save(const char *path, const net *n, const float *params, errbuf *err);
/* Loads every tensor of n, its buffers included, into an arena of net_state_size() floats from
 * path, checking names, shapes and types (float32 or float64).
 * Members that are not .npy arrays (a checkpoint's state) and optimizer_* arrays are ignored;
 * a foreign array is not. */
int params_load(const char *path, const net *n, float *params, errbuf *err);
/* The same from the file's bytes in memory; path names it in messages. */
int params_load_buffer(const unsigned char *buf, size_t len, const char *path, const net *n,
                       float *params, errbuf *err);

/* A raw member stored beside the arrays (a checkpoint's JSON state, its metrics). */
typedef struct npz_member {
    const char *name;
    const void *data;
    size_t size;
} npz_member;

/* A one-dimensional float array stored beside the parameters (optimizer state). */
typedef struct npz_array {
    const char *name; /* without ".npy" */
    size_t size;
    const float *values;
} npz_array;

/* params_save with extra arrays first and extra raw members after the parameters. */
int npz_save(const char *path, const net *n, const float *params, const npz_array *arrays,
             int n_arrays, const npz_member *extra, int n_extra, errbuf *err);
/* Reads the one-dimensional array `name` (n floats) of the archive at path. */
int npz_load_array(const char *path, const char *name, float *out, size_t n, errbuf *err);
/* The same from the archive's bytes in memory; path names it in messages. */
int npz_load_array_buffer(const unsigned char *buf, size_t len, const char *path,
                          const char *name, float *out, size_t n, errbuf *err);
/* Parameters plus what is needed to use them alone: config.json (the config, overrides applied)
 * and model.json ({"input": [h, w, c], "classes": k, "base_dir": the absolute folder the config's
 * relative paths resolve against}), for `trainer eval` and `trainer predict`. */
int model_save(const char *path, const net *n, const float *params, const config *cfg,
               errbuf *err);
/* The model.json text (malloc'd by cJSON; free with cJSON_free). */
char *model_json(const net *n, const char *base_dir);

/* Reads member `name` of the archive at path into a NUL-terminated malloc'd buffer. Returns 0,
 * 1 when the archive has no such member, -1 when it cannot be read. */
int npz_read_member(const char *path, const char *name, char **data, size_t *size, errbuf *err);
/* The same from the archive's bytes in memory; path names it in messages. */
int npz_read_member_buffer(const unsigned char *buf, size_t len, const char *path,
                           const char *name, char **data, size_t *size, errbuf *err);


#endif
