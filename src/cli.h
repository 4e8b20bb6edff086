/*
 * The trainer's subcommands besides training (src/cli_tools.c). Each takes the arguments after
 * its name and returns the exit code.
 */
#ifndef OMPCNN_CLI_H
#define OMPCNN_CLI_H

#include <stddef.h>

int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);

/* Turns the value of --threads into the override "training.threads=N" in buf; on a bad value
 * prints "PROGRAM: --threads: ..." and returns -1. */
int threads_option(const char *program, const char *value, char *buf, size_t size);

#endif
