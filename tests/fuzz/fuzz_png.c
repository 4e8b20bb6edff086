/*
 * libFuzzer target: the PNG reader (libpng through src/png.c) on arbitrary bytes, from memory
 * and as the one file of a folder data set (root/a/x.png), which also runs the folder loader.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ompcnn/data.h"
#include "ompcnn/png.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    errbuf err;
    pngimg_shape shape;
    if (pngimg_shape_of(data, size, "fuzz.png", &shape, &err) == 0 &&
        (size_t)shape.h * shape.w <= ((size_t)1 << 20)) { /* big images only cost time */
        uint8_t *out = malloc((size_t)shape.h * shape.w * shape.c);
        pngimg_shape got;
        if (out && pngimg_decode(data, size, "fuzz.png", &shape, out, &got, &err) == 0) {
            volatile uint8_t sink = out[0]; /* every byte was written: ASan sees a read of it */
            (void)sink;
        }
        free(out);
        static char root[64], file[96];
        if (!root[0]) {
            snprintf(root, sizeof root, "/tmp/fuzz-png-%ld", (long)getpid());
            snprintf(file, sizeof file, "%s/a/x.png", root);
            mkdir(root, 0700);
            char dir[80];
            snprintf(dir, sizeof dir, "%s/a", root);
            mkdir(dir, 0700);
        }
        FILE *f = fopen(file, "wb");
        if (!f) return 0;
        fwrite(data, 1, size, f);
        fclose(f);
        split_config folder = {DATA_FOLDER, root, NULL, -1, {0, 0, 0}, 0};
        load_options opt = {1, "fuzz", NULL, NULL};
        dataset ds;
        if (dataset_load_split(&ds, &folder, 256, &opt, &err) == 0) dataset_free(&ds);
        unlink(file);
    }
    return 0;
}
