/*
 * Exporting a trained network so that it runs without the trainer (`trainer export`):
 *   - ONNX (opset 13, float32), written with protobuf-c from Debian's onnx.proto;
 *   - one dependency-free C99 source file.
 * Both take what the trainer's data takes: pixel values 0..255 as floats, channels last
 * (N x H x W x C for ONNX, H x W x C for C), and scale them as training did (pixel / 255, then
 * data.normalize's mean and std); both give the softmax's probabilities. Dropout is the identity,
 * as in evaluation; the report's training quirks (the double sigmoid backward, the pooling index
 * bug) change training only and export as the plain layers. Writes are atomic.
 */
#ifndef OMPCNN_EXPORT_H
#define OMPCNN_EXPORT_H

#include "ompcnn/config.h"
#include "ompcnn/net.h"

/* Whether this build can write ONNX (it needs protobuf-c and onnx.proto at build time). */
int export_onnx_available(void);
/* Writes the net with its parameters as an ONNX model: input "pixels" [N, H, W, C], output
 * "probabilities" [N, classes]; the class names (if any) in the metadata as "class_names". */
int export_onnx(const char *path, const net *n, const float *params, const config *cfg,
                errbuf *err);
/* Writes the net as one C99 file defining NAME_predict(image, probs) (see the file's head);
 * name must be a C identifier. */
int export_c(const char *path, const net *n, const float *params, const config *cfg,
             const char *name, errbuf *err);

#endif
