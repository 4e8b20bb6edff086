/*
 * The trainer's subcommands besides training (src/cli_tools.c). Each takes the arguments after
 * its name and returns the exit code.
 */
#ifndef OMPCNN_CLI_H
#define OMPCNN_CLI_H

int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);

#endif
