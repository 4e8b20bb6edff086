/*
 * A driver for a model exported by `trainer export --c --name test_model`: classifies the first
 * COUNT images of an uncompressed IDX file and prints "INDEX CLASS P0 P1 ..." per image, the
 * probabilities with 9 significant digits (tests/check_export.sh compares them with `trainer
 * predict`). Built with the model under cc -std=c99 -Wall -Wextra -pedantic -Werror.
 */
#include <stdio.h>
#include <stdlib.h>

int test_model_predict(const float *image, float *probs);

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: export_driver IMAGES.idx COUNT PIXELS CLASSES\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    const long count = atol(argv[2]), size = atol(argv[3]), classes = atol(argv[4]);
    unsigned char head[4];
    if (!f || fread(head, 1, 4, f) != 4 || fseek(f, 4 + 4L * head[3], SEEK_SET) != 0) {
        fprintf(stderr, "export_driver: cannot read %s\n", argv[1]);
        return 1;
    }
    unsigned char *pixels = malloc((size_t)size);
    float *image = malloc((size_t)size * sizeof *image);
    float *probs = malloc((size_t)classes * sizeof *probs);
    if (!pixels || !image || !probs) return 1;
    for (long i = 0; i < count; i++) {
        if (fread(pixels, 1, (size_t)size, f) != (size_t)size) {
            fprintf(stderr, "export_driver: %s ends at image %ld\n", argv[1], i);
            return 1;
        }
        for (long k = 0; k < size; k++) image[k] = (float)pixels[k];
        int best = test_model_predict(image, probs);
        printf("%ld %d", i, best);
        for (long c = 0; c < classes; c++) printf(" %.9g", probs[c]);
        printf("\n");
    }
    free(pixels);
    free(image);
    free(probs);
    fclose(f);
    return 0;
}
