/*
 * What the layer kinds share: the registry that maps a config "type" to its ops, the typed readers
 * for layer keys, and weight initialisation.
 */
#include "ompcnn/layer.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const init_names[] = {"report", "he", "xavier", NULL};

/* The one list of layer kinds: the config's type names, the messages' lists and the "did you
 * mean" hints all come from it. */
static const layer_ops *const all_ops[] = {&conv2d_ops,  &maxpool_ops, &avgpool_ops,
                                           &dense_ops,   &dropout_ops, &sigmoid_ops,
                                           &relu_ops,    &tanh_ops,    &softmax_ops};
enum { N_KINDS = sizeof all_ops / sizeof all_ops[0] };

const layer_ops *layer_find(const char *type) {
    for (size_t i = 0; i < N_KINDS; i++)
        if (strcmp(all_ops[i]->type, type) == 0) return all_ops[i];
    return NULL;
}

const char *const *layer_type_names(void) {
    static const char *names[N_KINDS + 1];
    if (!names[0])
        for (size_t i = 0; i < N_KINDS; i++) names[i] = all_ops[i]->type;
    return names;
}

const char *layer_type_list(void) {
    static char list[256];
    if (!list[0])
        for (size_t i = 0, len = 0; i < N_KINDS; i++)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "",
                                    all_ops[i]->type);
    return list;
}

/* The JSON value as the user wrote it, for "got ..." in messages. */
static void json_repr(const cJSON *item, char *buf, size_t size) {
    char *text = cJSON_PrintUnformatted(item);
    snprintf(buf, size, "%s", text ? text : "?");
    if (text && strlen(text) >= size && size > 4) strcpy(buf + size - 4, "...");
    cJSON_free(text);
}

/* What was expected, said for the way the value missed: "a positive integer", "at most 64". */
static void int_range_phrase(int min, int max, double got, char *buf, size_t size) {
    if (got == floor(got) && got > (double)max)
        snprintf(buf, size, "an integer no larger than %d", max);
    else if (min == 1)
        snprintf(buf, size, "a positive integer");
    else if (min == 0)
        snprintf(buf, size, "a non-negative integer");
    else
        snprintf(buf, size, "an integer from %d to %d", min, max);
}

int json_get_int(const cJSON *obj, const char *key, int def, int min, int max, const char *path,
                 int *out, errbuf *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    char want[64], got[64];
    if (!item) {
        int_range_phrase(min, max, 0.5, want, sizeof want);
        if (def == INT_MIN) return errorf(err, "%s.%s: missing, expected %s", path, key, want);
        *out = def;
        return 0;
    }
    double v = cJSON_IsNumber(item) ? item->valuedouble : 0.5;
    int_range_phrase(min, max, v, want, sizeof want);
    json_repr(item, got, sizeof got);
    if (!cJSON_IsNumber(item) || v != floor(v) || v < (double)min || v > (double)max)
        return errorf(err, "%s.%s: expected %s, got %s", path, key, want, got);
    *out = (int)v;
    return 0;
}

int json_get_double(const cJSON *obj, const char *key, double def, double min, double max,
                    int min_exclusive, const char *path, double *out, errbuf *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!item) {
        *out = def;
        return 0;
    }
    double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!(v >= min && v <= max) || (min_exclusive && v == min)) {
        char got[64];
        json_repr(item, got, sizeof got);
        return errorf(err, "%s.%s: expected a number %s %g and at most %g, got %s", path, key,
                      min_exclusive ? "above" : "from", min, max, got);
    }
    *out = v;
    return 0;
}

int json_get_bool(const cJSON *obj, const char *key, int def, const char *path, int *out,
                  errbuf *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!item) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(item)) {
        char got[64];
        json_repr(item, got, sizeof got);
        return errorf(err, "%s.%s: expected true or false, got %s", path, key, got);
    }
    *out = cJSON_IsTrue(item);
    return 0;
}

int json_get_choice(const cJSON *obj, const char *key, int def, const char *const *choices,
                    const char *path, int *out, errbuf *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!item) {
        *out = def;
        return 0;
    }
    if (cJSON_IsString(item))
        for (int i = 0; choices[i]; i++)
            if (strcmp(item->valuestring, choices[i]) == 0) {
                *out = i;
                return 0;
            }
    char list[256] = "", got[64];
    for (int i = 0; choices[i]; i++) {
        strncat(list, i ? ", \"" : "\"", sizeof list - strlen(list) - 1);
        strncat(list, choices[i], sizeof list - strlen(list) - 1);
        strncat(list, "\"", sizeof list - strlen(list) - 1);
    }
    json_repr(item, got, sizeof got);
    return errorf(err, "%s.%s: expected one of %s, got %s", path, key, list, got);
}

void init_weights(float *w, size_t n, int fan_in, int fan_out, init_kind kind, mt19937 *rng) {
    switch (kind) {
    case INIT_REPORT:
        /* The report: np.random.randn(shape) / fan_in, divided in double, stored as float. */
        for (size_t i = 0; i < n; i++) w[i] = (float)(mt_gauss(rng) / fan_in);
        break;
    case INIT_HE: {
        double scale = sqrt(2.0 / fan_in);
        for (size_t i = 0; i < n; i++) w[i] = (float)(mt_gauss(rng) * scale);
        break;
    }
    case INIT_XAVIER: {
        double a = sqrt(6.0 / (fan_in + fan_out));
        for (size_t i = 0; i < n; i++) w[i] = (float)((2.0 * mt_double(rng) - 1.0) * a);
        break;
    }
    }
}

int layer_same_shape(const void *settings, shape3 in, shape3 *out, const char *path, errbuf *err) {
    (void)settings, (void)path, (void)err;
    *out = in;
    return 0;
}

int layer_no_params(const void *settings, shape3 in, shape3 out, tensor_desc desc[2]) {
    (void)settings, (void)in, (void)out, (void)desc;
    return 0;
}

int pool_window_parse(const cJSON *obj, const char *path, int *size, int *stride, errbuf *err) {
    if (json_get_int(obj, "size", 2, 1, 1024, path, size, err) ||
        json_get_int(obj, "stride", *size, 1, 1024, path, stride, err))
        return -1;
    return 0;
}

int pool_window_shape(int size, int stride, shape3 in, shape3 *out, const char *path,
                      errbuf *err) {
    if (size > in.h || size > in.w)
        return errorf(err, "%s.size: %d is larger than the %dx%d input", path, size, in.h, in.w);
    *out = (shape3){(in.h - size) / stride + 1, (in.w - size) / stride + 1, in.c};
    return 0;
}
