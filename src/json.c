/*
 * Typed readers for JSON config values: each checks the type and the range and, when the value
 * is wrong, says so naming the key's path and what was written.
 */
#include "json.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        return errorf(err, "%s.%s: expected a number %s %g %s %g, got %s", path, key,
                      min_exclusive ? "above" : "from", min, min_exclusive ? "and at most" : "to",
                      max, got);
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

/* ---- duplicate keys ---- */

static int compare_keys(const void *a, const void *b) {
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* Checks item and everything inside it; path (size bytes, holding len) names item. */
static int check_duplicates(const cJSON *item, char *path, size_t len, size_t size,
                            errbuf *err) {
    if (!cJSON_IsObject(item) && !cJSON_IsArray(item)) return 0;
    int n = cJSON_GetArraySize(item);
    if (cJSON_IsObject(item) && n > 1) {
        const cJSON **keys = malloc((size_t)n * sizeof *keys);
        if (!keys) return oomf(err, "out of memory");
        int k = 0;
        for (const cJSON *c = item->child; c; c = c->next) keys[k++] = c;
        qsort(keys, (size_t)n, sizeof *keys, compare_keys);
        for (int i = 1; i < n; i++)
            if (strcmp(keys[i - 1]->string, keys[i]->string) == 0) {
                int rc = errorf(err, "%s%s%s: the key is given twice", path, len ? "." : "",
                                keys[i]->string);
                free(keys);
                return rc;
            }
        free(keys);
    }
    int i = 0;
    for (const cJSON *c = item->child; c; c = c->next, i++) {
        int added = cJSON_IsObject(item)
                        ? snprintf(path + len, size - len, "%s%s", len ? "." : "", c->string)
                        : snprintf(path + len, size - len, "[%d]", i);
        size_t child_len = len + (size_t)added < size ? len + (size_t)added : size - 1;
        if (check_duplicates(c, path, child_len, size, err)) return -1;
        path[len] = '\0';
    }
    return 0;
}

int json_check_duplicates(const cJSON *root, errbuf *err) {
    char path[512] = "";
    return check_duplicates(root, path, 0, sizeof path, err);
}
