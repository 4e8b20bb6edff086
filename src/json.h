/*
 * Typed readers for the keys of a JSON config object (src/json.c); config.c and the layer
 * files read every value through them, so every message has the same form.
 */
#ifndef OMPCNN_JSON_H
#define OMPCNN_JSON_H

#include <cjson/cJSON.h>

#include "ompcnn/common.h"

/* Each reads obj's `key`: absent, it gives `def` (INT_MIN for an int: the key is required);
 * present but wrong, it fails with a message naming path.key, what was expected and what was
 * written. */
int json_get_int(const cJSON *obj, const char *key, int def, int min, int max, const char *path,
                 int *out, errbuf *err);
int json_get_bool(const cJSON *obj, const char *key, int def, const char *path, int *out,
                  errbuf *err);
/* A number in [min, max] (or (min, max] with min_exclusive). */
int json_get_double(const cJSON *obj, const char *key, double def, double min, double max,
                    int min_exclusive, const char *path, double *out, errbuf *err);
/* A string key that must be one of the NULL-terminated choices; *out is the index. */
int json_get_choice(const cJSON *obj, const char *key, int def, const char *const *choices,
                    const char *path, int *out, errbuf *err);

/* Fails when an object anywhere in root gives a key twice (JSON parsers disagree on which one
 * counts); the message names the key's path, e.g. training.epochs. */
int json_check_duplicates(const cJSON *root, errbuf *err);

#endif
