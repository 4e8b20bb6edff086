/*
 * libFuzzer target: the config reader, then shape inference of whatever network it accepts, on
 * arbitrary bytes. Any crash, leak or sanitizer report is a bug; errors are fine.
 */
#include <stdlib.h>
#include <string.h>

#include "ompcnn/config.h"
#include "ompcnn/net.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    config cfg;
    errbuf err;
    if (config_parse_text(&cfg, text, "fuzz.json", ".", NULL, 0, &err) == 0) {
        net n;
        if (net_build(&n, &cfg, (shape3){28, 28, 1}, &err) == 0) net_free(&n);
        config_free(&cfg);
    }
    free(text);
    return 0;
}
