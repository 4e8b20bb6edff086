/*
 * The trainer's subcommands besides training (src/cli_tools.c). Each takes the arguments after
 * its name and returns the exit code.
 */
#ifndef OMPCNN_CLI_H
#define OMPCNN_CLI_H

#include <stddef.h>

#include "ompcnn/common.h"

int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);

/* Turns the value of --threads into the override "training.threads=N" in buf; on a bad value
 * prints "PROGRAM: --threads: ..." and returns -1. */
int threads_option(const char *program, const char *value, char *buf, size_t size);

/* Fails early, before any work, when an output file's folder does not exist or is not
 * writable; the message names the option. */
int check_output_dir(const char *option, const char *path, errbuf *err);

#endif
