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
int cmd_export(int argc, char **argv);

/* Turns the value of --threads into the override "training.threads=N" in buf; on a bad value
 * prints the one-line message and returns -1. */
int threads_option(const char *value, char *buf, size_t size);
/* Reads a size like 8G, 512M, 64k or 1000000 (bytes; K, M, G, T are powers of 1024) into
 * *bytes; on a bad value prints the one-line message and returns -1. */
int size_option(const char *value, double *bytes);
/* Prints the one-line message for getopt_long's answer c (':' a missing value, else an unknown
 * option) about the argument arg, of the subcommand `command` ("" for training). */
void option_error(const char *command, int c, const char *arg);

#endif
