/*
 * libFuzzer target: the checkpoint reader. The bytes are read as an .npz of the network of
 * tests/bad/base.json, which the seed files in tests/fuzz/corpus/npz/ were saved from (zip
 * directory, CRCs, deflate, .npy headers, shapes), and, for the state, as state.json text.
 */
#include <stdlib.h>
#include <string.h>

#include "ompcnn/checkpoint.h"
#include "ompcnn/npz.h"

static const char small_config[] =
    "{\"data\":{\"train\":{\"images\":\"x\",\"labels\":\"y\"}},\"network\":["
    "{\"type\":\"conv2d\",\"filters\":4,\"kernel\":3},{\"type\":\"relu\"},"
    "{\"type\":\"maxpool\",\"size\":2},{\"type\":\"dense\",\"units\":10},"
    "{\"type\":\"softmax\"}]}";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    static config cfg;
    static net n;
    static float *params;
    errbuf err;
    if (!params) {
        if (config_parse_text(&cfg, small_config, "fuzz", ".", NULL, 0, &err) ||
            net_build(&n, &cfg, (shape3){28, 28, 1}, &err))
            abort();
        params = floats_alloc(n.n_params);
    }
    params_load_buffer(data, size, "fuzz.npz", &n, params, &err);
    char *member = NULL;
    size_t member_size;
    if (npz_read_member_buffer(data, size, "fuzz.npz", "state.json", &member, &member_size,
                               &err) == 0)
        free(member);
    npz_load_array_buffer(data, size, "fuzz.npz", "optimizer_state", params, n.n_params, &err);
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    checkpoint_meta meta = {0};
    checkpoint_parse_state(text, "fuzz.npz", &meta, &err);
    checkpoint_meta_free(&meta);
    free(text);
    return 0;
}
