/*
 * The config reader: the shipped configs parse to what they say; every kind of mistake gives one
 * message naming the file and the JSON path; overrides reach any value.
 */
#include "ompcnn/net.h"
#include "testutil.h"

/* A minimal valid config with `network` and `training` spliced in. */
static char *make_text(const char *network, const char *training) {
    static char text[8192];
    snprintf(text, sizeof text,
             "{\"data\": {\"train\": {\"images\": \"a\", \"labels\": \"b\"}},\n"
             " \"network\": %s,\n \"training\": %s}\n",
             network, training);
    return text;
}

static const char *good_net = "[{\"type\":\"dense\",\"units\":10},{\"type\":\"softmax\"}]";

static void expect_error(const char *text, const char *const *overrides, int n, const char *want) {
    config cfg;
    errbuf err;
    ck_assert_msg(config_parse_text(&cfg, text, "my.json", ".", overrides, n, &err) != 0,
                  "accepted but should fail with: %s", want);
    ck_assert_msg(strncmp(err.msg, "my.json", 7) == 0 || strncmp(err.msg, "--set", 5) == 0,
                  "message does not start with the file: %s", err.msg);
    ck_assert_msg(strstr(err.msg, want) != NULL, "expected \"%s\" in: %s", want, err.msg);
    ck_assert_msg(strchr(err.msg, '\n') == NULL, "message is not one line: %s", err.msg);
}

START_TEST(test_report_config) {
    config cfg;
    parse_config_or_die(&cfg, SRC_PATH("config/report.json"), NULL, 0);
    ck_assert_int_eq(cfg.epochs, 50);
    ck_assert_int_eq(cfg.batch_size, 1);
    ck_assert_double_eq(cfg.learning_rate, 0.01);
    ck_assert_int_eq(cfg.shuffle, 0);
    ck_assert_int_eq(cfg.init, INIT_REPORT);
    ck_assert_int_eq(cfg.n_layers, 7);
    ck_assert_int_eq(cfg.train.limit, 1000);
    ck_assert_int_eq(cfg.test.limit, 1000);
    /* Data paths resolve against the config file's folder. */
    ck_assert_str_eq(cfg.train.images, OMPCNN_SOURCE_DIR "/config/../data/mnist/train-images-idx3-ubyte.gz");
    net n;
    errbuf err;
    ck_assert_msg(net_build(&n, &cfg, (shape3){28, 28, 1}, &err) == 0, "%s", err.msg);
    /* 8*3*3 + 1352*20 + 20 + 20*10 + 10, the report's parameter count. */
    ck_assert_uint_eq(n.n_params, 27342);
    ck_assert_int_eq(n.layers[2].out.h, 13);
    ck_assert_int_eq(n.n_classes, 10);
    net_free(&n);
    config_free(&cfg);
}
END_TEST

START_TEST(test_all_shipped_configs_parse) {
    const char *files[] = {"config/report.json",         "config/report-published.json",
                           "config/mnist.json",          "config/mnist-small.json",
                           "config/fashion.json",        "config/bench/report-b1.json",
                           "config/bench/lenet-b32.json", "config/bench/kann-b64.json",
                           "config/bench/cnn-b64.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        config cfg;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", OMPCNN_SOURCE_DIR, files[i]);
        parse_config_or_die(&cfg, path, NULL, 0);
        net n;
        errbuf err;
        ck_assert_msg(net_build(&n, &cfg, (shape3){28, 28, 1}, &err) == 0, "%s", err.msg);
        net_free(&n);
        config_free(&cfg);
    }
}
END_TEST

START_TEST(test_value_errors) {
    expect_error(make_text("[{\"type\":\"conv2d\",\"filters\":8,\"kernel\":3},{\"type\":\"relu\"},"
                           "{\"type\":\"maxpool\"},{\"type\":\"dense\",\"units\":-4},"
                           "{\"type\":\"softmax\"}]",
                           "{}"),
                 NULL, 0, "my.json: network[3].units: expected a positive integer, got -4");
    expect_error(make_text(good_net, "{\"epochs\": \"ten\"}"), NULL, 0,
                 "training.epochs: expected a positive integer, got \"ten\"");
    expect_error(make_text(good_net, "{\"epochs\": 2.5}"), NULL, 0, "training.epochs");
    expect_error(make_text(good_net, "{\"learning_rate\": 0}"), NULL, 0,
                 "training.learning_rate: expected a positive number, got 0");
    expect_error(make_text(good_net, "{\"shuffle\": 1}"), NULL, 0,
                 "training.shuffle: expected true or false, got 1");
    expect_error(make_text(good_net, "{\"seed\": -1}"), NULL, 0, "training.seed");
    expect_error(make_text(good_net, "{\"init\": \"glorot\"}"), NULL, 0,
                 "training.init: expected one of \"report\", \"he\", \"xavier\", got \"glorot\"");
    expect_error(make_text(good_net, "{\"threads\": 5000}"), NULL, 0,
                 "training.threads: expected an integer no larger than 1024, got 5000");
    expect_error(make_text(good_net, "{\"lanes\": 0}"), NULL, 0,
                 "training.lanes: expected a positive integer, got 0");
    expect_error(make_text(good_net, "{\"lanes\": 257}"), NULL, 0, "training.lanes");
    expect_error(make_text(good_net, "[]"), NULL, 0, "training: expected an object");
    expect_error(make_text("[{\"type\":\"maxpool\",\"ties\":\"any\"},{\"type\":\"softmax\"}]", "{}"),
                 NULL, 0, "network[0].ties: expected one of \"all\", \"first\"");
}
END_TEST

START_TEST(test_key_errors) {
    expect_error(make_text(good_net, "{\"epoch\": 3}"), NULL, 0,
                 "training.epoch: unknown key (did you mean \"epochs\"?)");
    expect_error(make_text(good_net, "{\"zzz\": 3}"), NULL, 0,
                 "training.zzz: unknown key (expected one of: epochs, batch_size");
    expect_error(make_text("[{\"type\":\"dense\",\"unit\":10},{\"type\":\"softmax\"}]", "{}"), NULL,
                 0, "network[0].unit: unknown key (did you mean \"units\"?)");
    expect_error(make_text("[{\"type\":\"dense\"},{\"type\":\"softmax\"}]", "{}"), NULL, 0,
                 "network[0].units: missing");
    expect_error(make_text("[{\"type\":\"dens\",\"units\":3},{\"type\":\"softmax\"}]", "{}"), NULL,
                 0, "network[0].type: unknown layer type \"dens\" (did you mean \"dense\"?)");
    expect_error(make_text("[{\"units\":3}]", "{}"), NULL, 0, "network[0].type: missing");
    expect_error(make_text("[{\"type\":\"relu\",\"alpha\":0.1},{\"type\":\"softmax\"}]", "{}"), NULL,
                 0, "network[0].alpha: unknown key (this object takes no keys besides \"type\")");
    expect_error("{\"data\": {\"train\": {\"images\": \"a\", \"labels\": \"b\"}}, \"netwrk\": []}",
                 NULL, 0, "netwrk: unknown key (did you mean \"network\"?)");
    expect_error("{\"network\": [{\"type\":\"softmax\"}]}", NULL, 0, "data: missing");
    expect_error("{\"data\": {\"train\": {\"images\": \"a\"}}, \"network\": []}", NULL, 0,
                 "data.train.labels: missing");
}
END_TEST

START_TEST(test_structure_errors) {
    expect_error(make_text("[{\"type\":\"dense\",\"units\":10}]", "{}"), NULL, 0,
                 "network[0]: the network must end with a softmax layer");
    expect_error(make_text("[{\"type\":\"softmax\"},{\"type\":\"dense\",\"units\":3},"
                           "{\"type\":\"softmax\"}]",
                           "{}"),
                 NULL, 0, "network[0]: softmax must be the last layer");
    expect_error(make_text("[]", "{}"), NULL, 0, "network: expected a non-empty list");
    expect_error("[1, 2]", NULL, 0, "the top level must be a JSON object");
}
END_TEST

START_TEST(test_syntax_error_names_line_and_column) {
    expect_error("{\n  \"data\": {\n    \"train\": [1, 2,, 3]\n  }\n}\n", NULL, 0,
                 "my.json:3:20: invalid JSON: expected a value");
    expect_error("{\n  \"a\": 1\n", NULL, 0, "my.json:3:1: invalid JSON: the text ends early");
    expect_error("{\"a\": 1} trailing", NULL, 0, "my.json:1:10: invalid JSON: unexpected text");
    expect_error("{\n  \"data\": 3,\n}", NULL, 0, "my.json:3:1: invalid JSON: trailing comma");
    expect_error("{\"a\": [1 2]}", NULL, 0, "my.json:1:10: invalid JSON: expected ',' or ']'");
    expect_error("{\"a\" 1}", NULL, 0, "my.json:1:6: invalid JSON: expected ':' after the key");
    expect_error("{a: 1}", NULL, 0, "my.json:1:2: invalid JSON: expected a key in double quotes");
    expect_error("{\"a\": tru}", NULL, 0, "my.json:1:7: invalid JSON: expected a value");
    expect_error("{\"a\": \"x\\q\"}", NULL, 0, "my.json:1:10: invalid JSON: bad escape");
    expect_error("{\"a\": 01}", NULL, 0, "my.json:1:8: invalid JSON: expected ',' or '}'");
    expect_error("", NULL, 0, "my.json:1:1: invalid JSON: the text ends early");
}
END_TEST

/* Layers that do not fit their input are reported with the layer's path by net_build. */
START_TEST(test_layers_that_do_not_fit) {
    struct {
        const char *net, *want;
    } cases[] = {
        {"[{\"type\":\"conv2d\",\"filters\":4,\"kernel\":30},{\"type\":\"softmax\"}]",
         "my.json: network[0].kernel: 30 is larger than the 28x28 input"},
        {"[{\"type\":\"maxpool\",\"size\":29},{\"type\":\"softmax\"}]",
         "my.json: network[0].size: 29 is larger than the 28x28 input"},
        {"[{\"type\":\"conv2d\",\"filters\":4,\"kernel\":3,\"in_channels\":3},{\"type\":\"softmax\"}]",
         "network[0].in_channels: the input has 1 channels, not 3"},
        {"[{\"type\":\"conv2d\",\"filters\":4,\"kernel\":3,\"padding\":3},{\"type\":\"softmax\"}]",
         "network[0].padding: 3 must be smaller than the kernel"},
        {"[{\"type\":\"dense\",\"units\":1},{\"type\":\"softmax\"}]",
         "network[1]: softmax over 1 value needs at least 2 classes"},
        {"[{\"type\":\"conv2d\",\"filters\":65536,\"kernel\":1},{\"type\":\"dense\",\"units\":1000000},"
         "{\"type\":\"softmax\"}]",
         "network[1].units"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config cfg;
        errbuf err;
        ck_assert_msg(config_parse_text(&cfg, make_text(cases[i].net, "{}"), "my.json", ".", NULL,
                                        0, &err) == 0,
                      "%s", err.msg);
        net n;
        ck_assert_msg(net_build(&n, &cfg, (shape3){28, 28, 1}, &err) != 0, "case %zu built", i);
        ck_assert_msg(strstr(err.msg, cases[i].want) != NULL, "expected \"%s\" in: %s",
                      cases[i].want, err.msg);
        config_free(&cfg);
    }
}
END_TEST

START_TEST(test_training_options) {
    const char *const set[] = {"training.optimizer=adam", "training.lr_schedule=cosine",
                               "training.warmup_epochs=0.5", "training.weight_decay=0.0005",
                               "data.validation={\"fraction\":0.1}", "training.augment_shift=2"};
    config cfg;
    errbuf err;
    ck_assert_msg(config_parse_text(&cfg, make_text(good_net, "{}"), "my.json", ".", set, 6,
                                    &err) == 0,
                  "%s", err.msg);
    ck_assert_int_eq(cfg.optimizer.kind, OPT_ADAM);
    ck_assert_int_eq(cfg.schedule.kind, SCHEDULE_COSINE);
    ck_assert_double_eq(cfg.schedule.warmup_epochs, 0.5);
    ck_assert_double_eq(cfg.optimizer.weight_decay, 0.0005);
    ck_assert_double_eq(cfg.validation_fraction, 0.1);
    ck_assert_int_eq(cfg.augment_shift, 2);
    config_free(&cfg);
    expect_error(make_text(good_net, "{\"optimizer\": \"adagrad\"}"), NULL, 0,
                 "training.optimizer: expected one of \"sgd\", \"momentum\", \"nesterov\", \"adam\"");
    expect_error(make_text(good_net, "{\"momentum\": 1.5}"), NULL, 0,
                 "training.momentum: expected a number from 0 to 1, got 1.5");
    expect_error(make_text(good_net, "{\"lr_gamma\": 0}"), NULL, 0,
                 "training.lr_gamma: expected a number above 0 and at most 1, got 0");
    const char *const both[] = {"data.validation={\"last\":5,\"fraction\":0.1}"};
    expect_error(make_text(good_net, "{}"), both, 1, "data.validation: expected exactly one of");
    expect_error(make_text("[{\"type\":\"dropout\"},{\"type\":\"softmax\"}]", "{}"), NULL, 0,
                 "network[0].rate: missing");
    expect_error(make_text("[{\"type\":\"conv2d\",\"filters\":2,\"kernel\":4,\"padding\":\"same\"},"
                           "{\"type\":\"softmax\"}]",
                           "{}"),
                 NULL, 0, "network[0].padding: \"same\" needs an odd kernel, got 4");
}
END_TEST

START_TEST(test_overrides) {
    const char *const set[] = {"training.epochs=7", "network[0].units=12",
                               "training.init=xavier", "training.shuffle=true",
                               "data.train.limit=100"};
    config cfg;
    errbuf err;
    ck_assert_msg(config_parse_text(&cfg, make_text(good_net, "{\"epochs\": 1}"), "my.json", ".",
                                    set, 5, &err) == 0,
                  "%s", err.msg);
    ck_assert_int_eq(cfg.epochs, 7);
    ck_assert_int_eq(cfg.init, INIT_XAVIER);
    ck_assert_int_eq(cfg.shuffle, 1);
    ck_assert_int_eq(cfg.train.limit, 100);
    cJSON *units = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(cfg.json, "network"), 0),
                                       "units");
    ck_assert_int_eq(units->valueint, 12);
    config_free(&cfg);

    /* A new key is created, then rejected if unknown; a list index past the end is an error. */
    const char *const typo[] = {"training.epoch=3"};
    expect_error(make_text(good_net, "{}"), typo, 1, "training.epoch: unknown key");
    const char *const far[] = {"network[5].units=3"};
    expect_error(make_text(good_net, "{}"), far, 1, "index 5 is out of range (the list has 2");
    const char *const no_eq[] = {"training.epochs"};
    expect_error(make_text(good_net, "{}"), no_eq, 1, "expected PATH=VALUE");
    const char *const bad_index[] = {"network[x].units=3"};
    expect_error(make_text(good_net, "{}"), bad_index, 1, "bad array index");
    const char *const wrong_type[] = {"training.epochs=\"many\""};
    expect_error(make_text(good_net, "{}"), wrong_type, 1, "training.epochs: expected");
}
END_TEST

static Suite *config_suite(void) {
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_report_config);
    tcase_add_test(tc, test_all_shipped_configs_parse);
    tcase_add_test(tc, test_value_errors);
    tcase_add_test(tc, test_key_errors);
    tcase_add_test(tc, test_structure_errors);
    tcase_add_test(tc, test_syntax_error_names_line_and_column);
    tcase_add_test(tc, test_layers_that_do_not_fit);
    tcase_add_test(tc, test_overrides);
    tcase_add_test(tc, test_training_options);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(config_suite)
