/* sqexp: one table of subcommands (as git does); `sqexp help` and `sqexp CMD --help` document them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cmd.h"
#include "prov.h"
#include "sqexp_git.h" /* SQEXP_GIT: generated at build time */

typedef struct {
  const char *name;
  int (*fn)(int, char **);
  const char *summary;
} command;

static const command commands[] = {
    {"run", cmd_run, "run the sweep a config defines; resumes an interrupted run (CONFIG)"},
    {"report", cmd_report, "rewrite tables and figures from a results directory, no recomputation"},
    {"inspect", cmd_inspect, "validate an activation dump and print its shapes, provenance, norms"},
    {"synth", cmd_synth, "write a deterministic synthetic dump with the structure of a real one"},
    {"bench", cmd_bench, "per-kernel time and GB/s against the measured copy bandwidth"},
};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

static void usage(FILE *f) {
  fprintf(f, "usage: sqexp <command> [options]   (sqexp <command> --help for its options)\n\n");
  for (int i = 0; i < n_commands; i++) fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\n  --version  print the version and git commit\n");
}

/* A command; with SQEXP_EVAL_PHASES set, the wall-clock times at which it started and returned go
 * to stderr, so that a caller timing the whole process can tell the start and exit of the process
 * (libraries, CUDA context teardown) from the command's own time. */
static int main_timed(int (*fn)(int, char **), int argc, char **argv) {
  const int timed = prov_phases_on();
  struct timespec t0, t1;
  clock_gettime(CLOCK_REALTIME, &t0);
  int rc = fn(argc, argv);
  clock_gettime(CLOCK_REALTIME, &t1);
  if (timed)
    fprintf(stderr, "sqexp: command ran from %.3f to %.3f (epoch s)\n", (double)t0.tv_sec + 1e-9 * (double)t0.tv_nsec,
            (double)t1.tv_sec + 1e-9 * (double)t1.tv_nsec);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *name = argv[1];
  if (!strcmp(name, "--version") || !strcmp(name, "version")) {
    printf("sqexp %s (git %s)\n", SQEXP_VERSION, SQEXP_GIT);
    return 0;
  }
  if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
    usage(stdout);
    return 0;
  }
  for (int i = 0; i < n_commands; i++)
    if (!strcmp(name, commands[i].name)) return main_timed(commands[i].fn, argc - 1, argv + 1);
  fprintf(stderr, "sqexp: '%s' is not a command\n\n", name);
  usage(stderr);
  return 2;
}
