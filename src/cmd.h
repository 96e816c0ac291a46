/* cmd: the subcommands. Each is cmd_<name>(argc, argv) with argv[0] = the command name, returns the
 * exit status (0 ok, 1 failure during work, 2 bad input or usage), prints its own errors to stderr
 * as "sqexp <cmd>: <message>", and answers --help / -h with its usage on stdout (status 0). */
#ifndef SQEXP_CMD_H
#define SQEXP_CMD_H

int cmd_run(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* Shared by the commands: print "sqexp <cmd>: msg" and return code. */
int cmd_error(const char *cmd, int code, const char *msg);
/* 1 when argv holds -h or --help. */
int cmd_wants_help(int argc, char **argv);

#endif
