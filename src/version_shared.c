/*
 * The shared library's own object: libompcnn.so is the whole static library (linked in whole,
 * see CMakeLists.txt) plus this file, which only names the build it came from.
 */
#include "ompcnn/common.h"

const char ompcnn_shared_build[] = "ompcnn " OMPCNN_VERSION " shared library";
