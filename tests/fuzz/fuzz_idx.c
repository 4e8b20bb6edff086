/*
 * libFuzzer target: the IDX reader's checks (magic, type, dimensions, length) on arbitrary bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "ompcnn/idx.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    idx_array a;
    errbuf err;
    if (idx_parse(&a, buf, size, "fuzz.idx", &err) == 0) idx_free(&a);
    return 0;
}
