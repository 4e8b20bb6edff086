/*
 * Parameter files as numpy .npz archives, written and read without numpy.
 *
 * Writing: each tensor becomes a version 1.0 .npy member ('<f4', C order) of an uncompressed zip
 * with fixed timestamps, so the same weights always give the same bytes. The file is written to a
 * temporary name beside the target, fsynced and renamed over it, so a crash never leaves a half
 * file where a good one was.
 *
 * Reading accepts what numpy.savez and numpy.savez_compressed write: stored or deflated members,
 * float32 or float64 arrays in C order. Every length, offset and CRC is checked before use.
 */
#include "ompcnn/npz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fileio.h"

#define NPZ_MAX_BYTES ((size_t)1 << 31)

/* ---- little-endian byte buffer ---- */

typedef struct bytes {
    unsigned char *data;
    size_t len, cap;
    int oom;
} bytes;

static void put(bytes *b, const void *src, size_t n) {
    if (b->oom) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        unsigned char *grown = realloc(b->data, cap);
        if (!grown) {
            b->oom = 1;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
}

static void put16(bytes *b, unsigned v) {
    unsigned char le[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    put(b, le, 2);
}

static void put32(bytes *b, uint32_t v) {
    unsigned char le[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                           (unsigned char)(v >> 24)};
    put(b, le, 4);
}

static uint16_t get16(const unsigned char *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* n little-endian float32 (or float64, narrowed) values of an array's data into out. */
static void decode_values(float *out, const unsigned char *data, size_t n, int is_f64) {
    for (size_t i = 0; i < n; i++) {
        if (is_f64) {
            uint64_t bits = (uint64_t)get32(data + 8 * i) | ((uint64_t)get32(data + 8 * i + 4) << 32);
            double v;
            memcpy(&v, &bits, 8);
            out[i] = (float)v;
        } else {
            uint32_t bits = get32(data + 4 * i);
            memcpy(&out[i], &bits, 4);
        }
    }
}

/* ---- writing ---- */

/* The zip member that holds array `name`: "name.npy". */
static void array_member(const char *name, char *buf, size_t size) {
    snprintf(buf, size, "%s.npy", name);
}

/* The member of a layer's tensor: "INDEX_TYPE_TENSOR.npy", e.g. 0_conv2d_weight.npy. */
static void member_name(const net *n, int layer_index, int tensor, char *buf, size_t size) {
    const layer *l = &n->layers[layer_index];
    char name[96];
    snprintf(name, sizeof name, "%d_%s_%s", layer_index, l->ops->type, l->tensors[tensor].name);
    array_member(name, buf, size);
}

/* The .npy bytes of one float32 tensor. */
static void npy_encode(bytes *b, const tensor_desc *t, const float *values) {
    char header[256];
    int len = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int d = 0; d < t->ndim; d++)
        len += snprintf(header + len, sizeof header - (size_t)len, d ? ", %d" : "%d", t->dims[d]);
    len += snprintf(header + len, sizeof header - (size_t)len, t->ndim == 1 ? ",), }" : "), }");
    /* Pad with spaces and a final newline so the data starts on a 64-byte boundary. */
    int total = 10 + len + 1;
    int padded = (total + 63) / 64 * 64;
    put(b, "\x93NUMPY\x01\x00", 8);
    put16(b, (unsigned)(padded - 10));
    put(b, header, (size_t)len);
    for (int i = total; i < padded; i++) put(b, " ", 1);
    put(b, "\n", 1);
    for (size_t i = 0; i < t->size; i++) {
        uint32_t bits;
        memcpy(&bits, &values[i], 4);
        put32(b, bits);
    }
}

/* Appends one stored member (name, data) to the archive and its directory entry. */
static void zip_add(bytes *zip, bytes *dir, const char *name, const void *data, size_t size) {
    uint32_t crc = (uint32_t)crc32(0L, data, (uInt)size);
    uint32_t offset = (uint32_t)zip->len;
    uint16_t name_len = (uint16_t)strlen(name);
    /* Local header: version 2.0, no flags, stored, DOS time 00:00 on 1980-01-01. */
    put32(zip, 0x04034b50);
    put16(zip, 20), put16(zip, 0), put16(zip, 0), put16(zip, 0), put16(zip, 0x21);
    put32(zip, crc), put32(zip, (uint32_t)size), put32(zip, (uint32_t)size);
    put16(zip, name_len), put16(zip, 0);
    put(zip, name, name_len);
    put(zip, data, size);
    /* Central directory entry. */
    put32(dir, 0x02014b50);
    put16(dir, 20), put16(dir, 20), put16(dir, 0), put16(dir, 0), put16(dir, 0);
    put16(dir, 0x21);
    put32(dir, crc), put32(dir, (uint32_t)size), put32(dir, (uint32_t)size);
    put16(dir, name_len), put16(dir, 0), put16(dir, 0), put16(dir, 0), put16(dir, 0);
    put32(dir, 0), put32(dir, offset);
    put(dir, name, name_len);
}

char *model_json(const net *n, const char *base_dir) {
    cJSON *model = cJSON_CreateObject();
    cJSON *input = cJSON_AddArrayToObject(model, "input");
    int dims[3] = {n->input.h, n->input.w, n->input.c};
    for (int d = 0; d < 3 && input; d++) cJSON_AddItemToArray(input, cJSON_CreateNumber(dims[d]));
    cJSON_AddNumberToObject(model, "classes", n->n_classes);
    if (n->class_names) {
        cJSON *names = cJSON_AddArrayToObject(model, "class_names");
        for (int c = 0; c < n->n_class_names && names; c++)
            cJSON_AddItemToArray(names, cJSON_CreateString(n->class_names[c]));
    }
    /* Absolute, so that the carried config's relative data paths resolve from anywhere. */
    char *absolute = realpath(base_dir, NULL);
    cJSON_AddStringToObject(model, "base_dir", absolute ? absolute : base_dir);
    free(absolute);
    char *text = cJSON_Print(model);
    cJSON_Delete(model);
    return text;
}

int model_save(const char *path, const net *n, const float *params, const config *cfg,
               errbuf *err) {
    char *config_text = cJSON_Print(cfg->json), *model_text = model_json(n, cfg->base_dir);
    int rc;
    if (!config_text || !model_text) {
        rc = oomf(err, "%s: out of memory", path);
    } else {
        npz_member extra[2] = {{"config.json", config_text, strlen(config_text)},
                               {"model.json", model_text, strlen(model_text)}};
        rc = npz_save(path, n, params, NULL, 0, extra, 2, err);
    }
    cJSON_free(config_text);
    cJSON_free(model_text);
    return rc;
}

int params_save(const char *path, const net *n, const float *params, errbuf *err) {
    return npz_save(path, n, params, NULL, 0, NULL, 0, err);
}

int npz_save(const char *path, const net *n, const float *params, const npz_array *arrays,
             int n_arrays, const npz_member *extra, int n_extra, errbuf *err) {
    bytes zip = {0}, dir = {0}, npy = {0};
    int entries = 0;
    for (int a = 0; a < n_arrays; a++) {
        tensor_desc desc = {arrays[a].name, 1, {(int)arrays[a].size}, arrays[a].size};
        char name[128];
        array_member(arrays[a].name, name, sizeof name);
        npy.len = 0;
        npy_encode(&npy, &desc, arrays[a].values);
        zip_add(&zip, &dir, name, npy.data, npy.len);
        entries++;
    }
    for (int i = 0; i < n->n_layers; i++) {
        const layer *l = &n->layers[i];
        for (int t = 0; t < l->n_tensors + l->n_buffers; t++) {
            char name[128];
            member_name(n, i, t, name, sizeof name);
            npy.len = 0;
            npy_encode(&npy, &l->tensors[t], params + net_array_offset(n, l, t));
            if (npy.oom) break;
            zip_add(&zip, &dir, name, npy.data, npy.len);
            entries++;
        }
    }
    for (int e = 0; e < n_extra; e++) {
        zip_add(&zip, &dir, extra[e].name, extra[e].data, extra[e].size);
        entries++;
    }
    uint32_t dir_offset = (uint32_t)zip.len;
    put(&zip, dir.data, dir.len);
    put32(&zip, 0x06054b50);
    put16(&zip, 0), put16(&zip, 0), put16(&zip, (unsigned)entries), put16(&zip, (unsigned)entries);
    put32(&zip, (uint32_t)dir.len), put32(&zip, dir_offset), put16(&zip, 0);
    int rc;
    if (zip.oom || dir.oom || npy.oom || zip.len >= NPZ_MAX_BYTES)
        rc = oomf(err, "%s: out of memory while encoding the parameters", path);
    else
        rc = write_file_atomic(path, zip.data, zip.len, err);
    free(zip.data);
    free(dir.data);
    free(npy.data);
    return rc;
}

/* ---- reading ---- */

typedef struct member {
    char name[128];
    const unsigned char *data; /* decompressed .npy bytes (owned when `owned`) */
    size_t size;
    int owned;
} member;

static int read_whole(const char *path, unsigned char **out, size_t *len, errbuf *err) {
    if (read_input(path, out, len, err)) return -1;
    if (*len > NPZ_MAX_BYTES) {
        free(*out);
        return errorf(err, "%s: larger than 2 GiB", path);
    }
    return 0;
}

static int inflate_raw(const unsigned char *src, size_t src_len, unsigned char *dst,
                       size_t dst_len) {
    z_stream zs = {0};
    if (inflateInit2(&zs, -15) != Z_OK) return -1;
    zs.next_in = (unsigned char *)src;
    zs.avail_in = (uInt)src_len;
    zs.next_out = dst;
    zs.avail_out = (uInt)dst_len;
    int rc = inflate(&zs, Z_FINISH);
    size_t produced = zs.total_out;
    inflateEnd(&zs);
    return rc == Z_STREAM_END && produced == dst_len ? 0 : -1;
}

/* Lists the members of a zip held in buf; each member's data is decompressed and CRC-checked. */
static int zip_members(const char *path, const unsigned char *buf, size_t len, member **out,
                       int *count, errbuf *err) {
    *out = NULL;
    *count = 0;
    if (len < 22) return errorf(err, "%s: not an .npz file (too short for a zip archive)", path);
    size_t eocd = len - 22;
    /* The end record is last, possibly followed by a comment of up to 64 KiB. */
    for (;;) {
        if (get32(buf + eocd) == 0x06054b50) break;
        if (eocd == 0 || len - eocd > 22 + 65535)
            return errorf(err, "%s: not an .npz file (no zip directory; truncated?)", path);
        eocd--;
    }
    unsigned entries = get16(buf + eocd + 10);
    uint32_t dir_size = get32(buf + eocd + 12), dir_off = get32(buf + eocd + 16);
    if ((size_t)dir_off + dir_size > eocd)
        return errorf(err, "%s: damaged zip directory (offsets past the end)", path);
    member *members = calloc(entries ? entries : 1, sizeof *members);
    if (!members) return oomf(err, "%s: out of memory", path);
    *out = members; /* the caller frees it, whatever happens below */
    size_t p = dir_off;
    for (unsigned e = 0; e < entries; e++) {
        member *m = &members[e];
        *out = members;
        *count = (int)e + 1; /* so the caller frees what this entry may allocate */
        if (p + 46 > eocd || get32(buf + p) != 0x02014b50)
            return errorf(err, "%s: damaged zip directory entry %u", path, e);
        unsigned method = get16(buf + p + 10);
        uint32_t crc = get32(buf + p + 16), csize = get32(buf + p + 20), usize = get32(buf + p + 24);
        unsigned name_len = get16(buf + p + 28), extra_len = get16(buf + p + 30),
                 comment_len = get16(buf + p + 32);
        uint32_t local = get32(buf + p + 42);
        if (p + 46 + name_len > eocd || name_len == 0 || name_len >= sizeof m->name)
            return errorf(err, "%s: damaged zip directory entry %u", path, e);
        memcpy(m->name, buf + p + 46, name_len);
        m->name[name_len] = '\0';
        p += 46 + (size_t)name_len + extra_len + comment_len;
        if ((size_t)local + 30 > len || get32(buf + local) != 0x04034b50)
            return errorf(err, "%s: %s: damaged local header", path, m->name);
        size_t data_off = (size_t)local + 30 + get16(buf + local + 26) + get16(buf + local + 28);
        if (data_off + csize > len)
            return errorf(err, "%s: %s: data runs past the end of the file (truncated?)", path,
                        m->name);
        if (method == 0) {
            if (csize != usize) return errorf(err, "%s: %s: damaged sizes", path, m->name);
            m->data = buf + data_off;
        } else if (method == 8) {
            if (usize > NPZ_MAX_BYTES) return errorf(err, "%s: %s: too large", path, m->name);
            unsigned char *dst = malloc(usize ? usize : 1);
            if (!dst) return oomf(err, "%s: out of memory", path);
            m->data = dst;
            m->owned = 1;
            if (inflate_raw(buf + data_off, csize, dst, usize))
                return errorf(err, "%s: %s: corrupt compressed data", path, m->name);
        } else {
            return errorf(err, "%s: %s: unsupported zip compression method %u", path, m->name,
                        method);
        }
        m->size = usize;
        if ((uint32_t)crc32(0L, m->data, (uInt)m->size) != crc)
            return errorf(err, "%s: %s: CRC mismatch (the file is damaged)", path, m->name);
    }
    *count = (int)entries;
    return 0;
}

static void free_members(member *members, int count) {
    for (int i = 0; i < count; i++)
        if (members[i].owned) free((void *)members[i].data);
    free(members);
}

/* Parses a .npy header; on success *data points at the array and *is_f64 tells the type. */
static int npy_decode(const member *m, const tensor_desc *want, const char *path,
                      const unsigned char **data, int *is_f64, errbuf *err) {
    const unsigned char *b = m->data;
    if (m->size < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return errorf(err, "%s: %s: not a .npy array", path, m->name);
    size_t header_len, start;
    if (b[6] == 1) {
        header_len = get16(b + 8);
        start = 10;
    } else if ((b[6] == 2 || b[6] == 3) && m->size >= 12) {
        header_len = get32(b + 8);
        start = 12;
    } else {
        return errorf(err, "%s: %s: unsupported .npy version %u", path, m->name, b[6]);
    }
    if (start + header_len > m->size || header_len > 4096)
        return errorf(err, "%s: %s: damaged .npy header", path, m->name);
    char header[4097];
    memcpy(header, b + start, header_len);
    header[header_len] = '\0';
    const char *descr = strstr(header, "'descr':");
    const char *fortran = strstr(header, "'fortran_order':");
    const char *shape = strstr(header, "'shape':");
    if (!descr || !fortran || !shape)
        return errorf(err, "%s: %s: damaged .npy header", path, m->name);
    descr += 8;
    while (*descr == ' ') descr++;
    if (strncmp(descr, "'<f4'", 5) == 0)
        *is_f64 = 0;
    else if (strncmp(descr, "'<f8'", 5) == 0)
        *is_f64 = 1;
    else
        return errorf(err, "%s: %s: element type %.8s is not float32 or float64", path, m->name,
                    descr);
    fortran += 16;
    while (*fortran == ' ') fortran++;
    if (strncmp(fortran, "False", 5) != 0)
        return errorf(err, "%s: %s: Fortran-ordered arrays are not supported", path, m->name);
    shape += 8;
    while (*shape == ' ') shape++;
    if (*shape != '(') return errorf(err, "%s: %s: damaged shape in the .npy header", path, m->name);
    shape++;
    long dims[8];
    int ndim = 0;
    for (;;) {
        while (*shape == ' ' || *shape == ',') shape++;
        if (*shape == ')') break;
        char *end;
        long v = strtol(shape, &end, 10);
        if (end == shape || v < 0 || ndim == 8)
            return errorf(err, "%s: %s: damaged shape in the .npy header", path, m->name);
        dims[ndim++] = v;
        shape = end;
    }
    int same = ndim == want->ndim;
    for (int d = 0; same && d < ndim; d++) same = dims[d] == want->dims[d];
    if (!same) {
        char got[128] = "", expect[128] = "";
        for (int d = 0; d < ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), d ? ", %ld" : "%ld", dims[d]);
        for (int d = 0; d < want->ndim; d++)
            snprintf(expect + strlen(expect), sizeof expect - strlen(expect), d ? ", %d" : "%d",
                     want->dims[d]);
        return errorf(err, "%s: %s has shape (%s), this network needs (%s)", path, m->name, got,
                    expect);
    }
    size_t need = want->size * (*is_f64 ? 8 : 4);
    if (m->size - start - header_len != need)
        return errorf(err, "%s: %s: %zu data bytes, the shape needs %zu", path, m->name,
                    m->size - start - header_len, need);
    *data = b + start + header_len;
    return 0;
}

int params_load(const char *path, const net *n, float *params, errbuf *err) {
    unsigned char *buf = NULL;
    size_t len = 0;
    if (read_whole(path, &buf, &len, err)) return -1;
    int rc = params_load_buffer(buf, len, path, n, params, err);
    free(buf);
    return rc;
}

int params_load_buffer(const unsigned char *buf, size_t len, const char *path, const net *n,
                       float *params, errbuf *err) {
    member *members;
    int count, rc = 0;
    if (zip_members(path, buf, len, &members, &count, err)) {
        free_members(members, count);
        return -1;
    }
    for (int i = 0; i < n->n_layers && rc == 0; i++) {
        const layer *l = &n->layers[i];
        for (int t = 0; t < l->n_tensors + l->n_buffers && rc == 0; t++) {
            char name[128];
            member_name(n, i, t, name, sizeof name);
            const member *m = NULL;
            for (int k = 0; k < count; k++)
                if (strcmp(members[k].name, name) == 0) m = &members[k];
            if (!m) {
                rc = errorf(err, "%s: has no array %.*s (was it saved from another network?)", path,
                          (int)strlen(name) - 4, name);
                break;
            }
            const unsigned char *data;
            int is_f64;
            if (npy_decode(m, &l->tensors[t], path, &data, &is_f64, err)) {
                rc = -1;
                break;
            }
            decode_values(params + net_array_offset(n, l, t), data, l->tensors[t].size, is_f64);
        }
    }
    if (rc == 0) {
        for (int k = 0; k < count; k++) {
            int known = 0;
            for (int i = 0; i < n->n_layers && !known; i++)
                for (int t = 0; t < n->layers[i].n_tensors + n->layers[i].n_buffers; t++) {
                    char name[128];
                    member_name(n, i, t, name, sizeof name);
                    if (strcmp(members[k].name, name) == 0) known = 1;
                }
            size_t len = strlen(members[k].name);
            int is_array = len > 4 && strcmp(members[k].name + len - 4, ".npy") == 0 &&
                           strncmp(members[k].name, "optimizer_", 10) != 0;
            /* Other members (a checkpoint's state and optimizer state) are not parameters. */
            if (!known && is_array) {
                rc = errorf(err, "%s: array %s does not belong to this network", path,
                            members[k].name);
                break;
            }
        }
    }
    free_members(members, count);
    return rc;
}

int npz_read_member_buffer(const unsigned char *buf, size_t len, const char *path,
                           const char *name, char **data, size_t *size, errbuf *err) {
    member *members;
    int count, rc = -1;
    if (zip_members(path, buf, len, &members, &count, err) == 0) {
        errorf(err, "%s: has no %s (is it a checkpoint?)", path, name);
        rc = 1;
        for (int k = 0; k < count; k++)
            if (strcmp(members[k].name, name) == 0) {
                *data = malloc(members[k].size + 1);
                if (!*data) {
                    rc = oomf(err, "%s: out of memory", path);
                    break;
                }
                memcpy(*data, members[k].data, members[k].size);
                (*data)[members[k].size] = '\0';
                *size = members[k].size;
                rc = 0;
                break;
            }
    }
    free_members(members, count);
    return rc;
}

int npz_read_member(const char *path, const char *name, char **data, size_t *size, errbuf *err) {
    unsigned char *buf = NULL;
    size_t len = 0;
    if (read_whole(path, &buf, &len, err)) return -1;
    int rc = npz_read_member_buffer(buf, len, path, name, data, size, err);
    free(buf);
    return rc;
}

int npz_load_array_buffer(const unsigned char *buf, size_t len, const char *path,
                          const char *name, float *out, size_t n, errbuf *err) {
    member *members;
    int count, rc = -1;
    char full[128];
    array_member(name, full, sizeof full);
    if (zip_members(path, buf, len, &members, &count, err) == 0) {
        errorf(err, "%s: has no array %s", path, name);
        for (int k = 0; k < count; k++) {
            if (strcmp(members[k].name, full) != 0) continue;
            tensor_desc want = {name, 1, {(int)n}, n};
            const unsigned char *data;
            int is_f64;
            if (npy_decode(&members[k], &want, path, &data, &is_f64, err)) break;
            decode_values(out, data, n, is_f64);
            rc = 0;
            break;
        }
    }
    free_members(members, count);
    return rc;
}

int npz_load_array(const char *path, const char *name, float *out, size_t n, errbuf *err) {
    unsigned char *buf = NULL;
    size_t len = 0;
    if (read_whole(path, &buf, &len, err)) return -1;
    int rc = npz_load_array_buffer(buf, len, path, name, out, n, err);
    free(buf);
    return rc;
}
