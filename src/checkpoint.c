/*
 * Writing and reading checkpoints (see include/ompcnn/checkpoint.h for what they hold).
 */
#include "ompcnn/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ompcnn/npz.h"
#include "fileio.h"
#include "json.h"

#define CHECKPOINT_FORMAT "ompcnn-checkpoint"
#define CHECKPOINT_VERSION 1

int checkpoint_save(const char *path, const trainer *t, int epoch, const char *metrics_csv,
                    errbuf *err) {
    char *config_text = cJSON_Print(t->cfg->json);
    char *model_text = model_json(&t->net, t->cfg->base_dir);
    char *base_dir = realpath(t->cfg->base_dir, NULL); /* so --resume works from any folder */
    cJSON *state = cJSON_CreateObject();
    int ok = config_text && model_text && state &&
             cJSON_AddStringToObject(state, "format", CHECKPOINT_FORMAT) &&
             cJSON_AddNumberToObject(state, "version", CHECKPOINT_VERSION) &&
             cJSON_AddNumberToObject(state, "epoch", epoch) &&
             cJSON_AddNumberToObject(state, "position", t->pos.position) &&
             cJSON_AddNumberToObject(state, "loss_sum", t->pos.loss_sum) &&
             cJSON_AddNumberToObject(state, "correct", (double)t->pos.correct) &&
             cJSON_AddNumberToObject(state, "seconds", t->pos.seconds) &&
             cJSON_AddNumberToObject(state, "step", (double)t->pos.step) &&
             cJSON_AddStringToObject(state, "base_dir", base_dir ? base_dir : t->cfg->base_dir);
    /* cJSON prints doubles with up to 17 significant digits: they read back exactly. */
    char *state_text = ok ? cJSON_Print(state) : NULL;
    int rc;
    if (!state_text) {
        rc = oomf(err, "%s: out of memory while encoding the checkpoint", path);
    } else {
        npz_member extra[4] = {{"config.json", config_text, strlen(config_text)},
                               {"model.json", model_text, strlen(model_text)},
                               {"state.json", state_text, strlen(state_text)},
                               {"metrics.csv", metrics_csv ? metrics_csv : "",
                                metrics_csv ? strlen(metrics_csv) : 0}};
        size_t state = (size_t)optimizer_state_count(t->cfg->optimizer.kind) * t->net.n_params;
        npz_array arrays[1] = {{"optimizer_state", state, t->opt_state}};
        rc = npz_save(path, &t->net, t->params, arrays, state ? 1 : 0, extra, 4, err);
    }
    cJSON_free(config_text);
    cJSON_free(model_text);
    cJSON_free(state_text);
    free(base_dir);
    cJSON_Delete(state);
    return rc;
}

/* A number of state.json in [min, max], a whole one when `whole`. */
static int get_number(const cJSON *state, const char *key, double min, double max, int whole,
                      double *out, const char *path, errbuf *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(state, key);
    if (!cJSON_IsNumber(item) || !(item->valuedouble >= min && item->valuedouble <= max) ||
        (whole && item->valuedouble != floor(item->valuedouble)))
        return errorf(err, "%s: state.json: %s is missing or out of range (damaged checkpoint?)",
                      path, key);
    *out = item->valuedouble;
    return 0;
}

int checkpoint_read(const char *path, checkpoint_meta *meta, errbuf *err) {
    memset(meta, 0, sizeof *meta);
    /* One read: every member comes from the same snapshot of the file, even while another run
     * is replacing it. */
    if (read_input(path, &meta->bytes, &meta->len, err)) return -1;
    char *state_text = NULL;
    size_t size;
    if (npz_read_member_buffer(meta->bytes, meta->len, path, "state.json", &state_text, &size,
                               err) != 0 ||
        npz_read_member_buffer(meta->bytes, meta->len, path, "config.json", &meta->config_text,
                               &size, err) != 0 ||
        npz_read_member_buffer(meta->bytes, meta->len, path, "metrics.csv", &meta->metrics_csv,
                               &size, err) != 0) {
        free(state_text);
        checkpoint_meta_free(meta);
        return -1;
    }
    int rc = checkpoint_parse_state(state_text, path, meta, err);
    free(state_text);
    if (rc) checkpoint_meta_free(meta);
    return rc;
}

int checkpoint_parse_state(const char *state_text, const char *path, checkpoint_meta *meta,
                           errbuf *err) {
    cJSON *state = cJSON_Parse(state_text);
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(state, "format");
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(state, "base_dir");
    double version = 0, epoch = 0, position = 0, loss_sum = 0, correct = 0, seconds = 0, step = 0;
    errbuf inner;
    int rc = -1;
    if (!state || !cJSON_IsString(format) || strcmp(format->valuestring, CHECKPOINT_FORMAT) != 0)
        errorf(err, "%s: state.json is not an ompcnn checkpoint state", path);
    else if (json_check_duplicates(state, &inner))
        errorf(err, "%s: state.json: %s", path, inner.msg);
    else if (get_number(state, "version", 1, 1, 1, &version, path, err) ||
             get_number(state, "epoch", 0, 1e6, 1, &epoch, path, err) ||
             get_number(state, "position", 0, 2147483647.0, 1, &position, path, err) ||
             get_number(state, "loss_sum", 0, HUGE_VAL, 0, &loss_sum, path, err) ||
             get_number(state, "correct", 0, position, 1, &correct, path, err) ||
             get_number(state, "seconds", 0, HUGE_VAL, 0, &seconds, path, err) ||
             get_number(state, "step", 0, 9e15, 1, &step, path, err))
        ;
    else if (!cJSON_IsString(base))
        errorf(err, "%s: state.json: base_dir is missing (damaged checkpoint?)", path);
    else if (!(meta->base_dir = strdup(base->valuestring)))
        oomf(err, "out of memory");
    else {
        meta->epoch = (int)epoch;
        meta->pos = (train_position){(int)position, loss_sum, (long)correct, seconds, (long)step};
        rc = 0;
    }
    cJSON_Delete(state);
    return rc;
}

void checkpoint_meta_free(checkpoint_meta *meta) {
    free(meta->bytes);
    free(meta->config_text);
    free(meta->base_dir);
    free(meta->metrics_csv);
    memset(meta, 0, sizeof *meta);
}
