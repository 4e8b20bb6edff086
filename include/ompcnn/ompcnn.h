/*
 * ompcnn's library API: run a network trained by `trainer` from a C program.
 *
 *   #include <ompcnn/ompcnn.h>           cc prog.c $(pkg-config --cflags --libs ompcnn)
 *
 *   char error[256];
 *   ompcnn_net *net = ompcnn_open("w.npz", error, sizeof error);      NULL: error says why
 *   int h, w, c;
 *   ompcnn_input_shape(net, &h, &w, &c);
 *   float pixels[h * w * c], probs[ompcnn_classes(net)];
 *   ompcnn_read_image("digit.png", net, pixels, error, sizeof error);  or fill pixels yourself
 *   int k = ompcnn_classify(net, pixels, probs);                       the most probable class
 *   printf("%d %s %f\n", k, ompcnn_class_name(net, k), probs[k]);
 *   ompcnn_close(net);
 *
 * Pixels are values from 0 to 255 as floats, row by row, channels last (h x w x c), scaled as
 * training scaled them (/ 255, then the config's data.normalize). The file must be one that
 * `trainer --save` or `--checkpoint` wrote (it carries its config and input shape). A net is
 * used by one thread at a time; ompcnn_classify runs on the threads OpenMP gives it
 * (OMP_NUM_THREADS) and its answer does not depend on how many. Every function that can fail
 * writes one line into `error` (when it is not NULL) and returns NULL or -1.
 */
#ifndef OMPCNN_OMPCNN_H
#define OMPCNN_OMPCNN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ompcnn_net ompcnn_net;

/* Loads a parameter file or checkpoint written by the trainer. */
ompcnn_net *ompcnn_open(const char *npz_path, char *error, size_t error_size);
/* The input the net takes: height, width and channels. */
void ompcnn_input_shape(const ompcnn_net *net, int *height, int *width, int *channels);
/* The number of classes (the size of probs). */
int ompcnn_classes(const ompcnn_net *net);
/* Class k's name (a folder data set's class), or NULL when the classes have no names. */
const char *ompcnn_class_name(const ompcnn_net *net, int k);
/* Classifies one image (height x width x channels pixel values); writes the probability of
 * every class into probs (may be NULL) and returns the most probable class. */
int ompcnn_classify(ompcnn_net *net, const float *pixels, float *probs);
/* Reads a PNG or PGM image of the net's input shape into pixels; -1 (and error) when it cannot
 * be read or has another shape. */
int ompcnn_read_image(const char *path, const ompcnn_net *net, float *pixels, char *error,
                      size_t error_size);
void ompcnn_close(ompcnn_net *net);
/* The library's version, like "0.1.0". */
const char *ompcnn_version(void);

#ifdef __cplusplus
}
#endif

#endif
