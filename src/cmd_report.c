/* sqexp report DIR: tables and figures from a results directory's store, no recomputation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cmd.h"
#include "report.h"
#include "sweep.h"

static void report_usage(FILE *f) {
  fprintf(f,
          "usage: sqexp report DIR [--quiet]\n\n"
          "Rewrite DIR/tables/*.{csv,md,tex} and DIR/figures/*.{gp,dat,png,pdf} from DIR/rows.jsonl and\n"
          "DIR/spectra.jsonl (what `sqexp run` stored); nothing is recomputed. Prints the main summary\n"
          "table unless --quiet. Without gnuplot the tables and the .gp/.dat files are still written.\n");
}

int cmd_report(int argc, char **argv) {
  if (cmd_wants_help(argc, argv)) {
    report_usage(stdout);
    return 0;
  }
  const char *dir = NULL;
  int quiet = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) quiet = 1;
    else if (argv[i][0] == '-') {
      fprintf(stderr, "sqexp report: unknown option '%s'\n", argv[i]);
      report_usage(stderr);
      return 2;
    } else if (!dir) dir = argv[i];
    else {
      fprintf(stderr, "sqexp report: one results directory expected, got '%s' too\n", argv[i]);
      return 2;
    }
  }
  if (!dir) {
    report_usage(stderr);
    return 2;
  }
  return sweep_report(dir, quiet ? NULL : stdout, "report");
}
