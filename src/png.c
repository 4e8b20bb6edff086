/*
 * PNG images (see include/ompcnn/png.h): libpng decodes from the file's bytes in memory; its
 * errors come back through a longjmp into one message that names the file.
 */
#include "ompcnn/png.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

#define PNG_MAX_SIDE 4096 /* the trainer's limit on an image's height and width */

/* The bytes being decoded and the message of libpng's error, if one happens. */
typedef struct png_source {
    const unsigned char *bytes;
    size_t len, pos;
    char msg[200];
} png_source;

static void read_bytes(png_structp png, png_bytep out, size_t n) {
    png_source *src = png_get_io_ptr(png);
    if (n > src->len - src->pos) png_error(png, "the file ends early (truncated)");
    memcpy(out, src->bytes + src->pos, n);
    src->pos += n;
}

static void on_error(png_structp png, png_const_charp msg) {
    png_source *src = png_get_error_ptr(png);
    snprintf(src->msg, sizeof src->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    (void)png, (void)msg; /* a damaged ancillary chunk, say: the pixels are still good */
}

int pngimg_is_png(const unsigned char *bytes, size_t len) {
    return len >= 8 && png_sig_cmp(bytes, 0, 8) == 0;
}

/* Reads the header into *shape; then, when out is given and the shape is want's, sets the
 * transformations to 8-bit grey or RGB and decodes into out (h * w * c bytes). Returns 1, with
 * nothing decoded, for a shape other than want's. */
static int decode(const unsigned char *bytes, size_t len, const char *path, pngimg_shape *shape,
                  const pngimg_shape *want, uint8_t *out, errbuf *err) {
    if (!pngimg_is_png(bytes, len))
        return errorf(err, "%s: not a PNG file (no PNG signature)", path);
    /* The header's size, before libpng sees it: a message that says what is wrong. */
    if (len >= 24 && memcmp(bytes + 12, "IHDR", 4) == 0) {
        const uint32_t w = (uint32_t)bytes[16] << 24 | (uint32_t)bytes[17] << 16 |
                           (uint32_t)bytes[18] << 8 | bytes[19];
        const uint32_t h = (uint32_t)bytes[20] << 24 | (uint32_t)bytes[21] << 16 |
                           (uint32_t)bytes[22] << 8 | bytes[23];
        if (w > PNG_MAX_SIDE || h > PNG_MAX_SIDE)
            return errorf(err, "%s: a %ux%u image, beyond the %d pixels a side the trainer reads",
                          path, w, h, PNG_MAX_SIDE);
    }
    png_source src = {bytes, len, 0, ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return oomf(err, "%s: out of memory for the PNG decoder", path);
    }
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return errorf(err, "%s: a damaged PNG file: %s", path, src.msg);
    }
    png_set_read_fn(png, &src, read_bytes);
    png_set_user_limits(png, PNG_MAX_SIDE, PNG_MAX_SIDE);
    png_read_info(png, info);
    const int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    const int h = (int)png_get_image_height(png, info), w = (int)png_get_image_width(png, info);
    const int c = (type & PNG_COLOR_MASK_COLOR) || type == PNG_COLOR_TYPE_PALETTE ? 3 : 1;
    *shape = (pngimg_shape){h, w, c};
    const int other = want && (h != want->h || w != want->w || c != want->c);
    if (out && !other) {
        if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
        if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (depth == 16) png_set_scale_16(png);
        png_set_strip_alpha(png);
        png_set_interlace_handling(png);
        png_read_update_info(png, info);
        if (png_get_rowbytes(png, info) != (size_t)w * c || png_get_channels(png, info) != c)
            png_error(png, "an unexpected pixel layout after conversion to 8 bits");
        rows = malloc((size_t)h * sizeof *rows);
        if (!rows) png_error(png, "out of memory");
        for (int y = 0; y < h; y++) rows[y] = out + (size_t)y * w * c;
        png_read_image(png, rows);
        free(rows);
        rows = NULL;
    }
    png_destroy_read_struct(&png, &info, NULL);
    return other;
}

int pngimg_shape_of(const unsigned char *bytes, size_t len, const char *path, pngimg_shape *shape,
                    errbuf *err) {
    return decode(bytes, len, path, shape, NULL, NULL, err);
}

int pngimg_decode(const unsigned char *bytes, size_t len, const char *path,
                  const pngimg_shape *want, uint8_t *out, pngimg_shape *got, errbuf *err) {
    return decode(bytes, len, path, got, want, out, err);
}

int pngimg_load(const char *path, uint8_t **pixels, pngimg_shape *shape, errbuf *err) {
    unsigned char *bytes;
    size_t len;
    *pixels = NULL;
    if (read_input(path, &bytes, &len, err)) return -1;
    int rc = pngimg_shape_of(bytes, len, path, shape, err);
    if (rc == 0) {
        *pixels = malloc((size_t)shape->h * shape->w * shape->c);
        pngimg_shape same;
        rc = *pixels ? pngimg_decode(bytes, len, path, shape, *pixels, &same, err)
                     : oomf(err, "%s: out of memory for a %dx%d image", path, shape->w, shape->h);
        if (rc) {
            free(*pixels);
            *pixels = NULL;
        }
    }
    free(bytes);
    return rc;
}
