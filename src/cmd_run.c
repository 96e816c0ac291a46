/* sqexp run CONFIG: the sweep a config defines (sweep.c does the work). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cmd.h"
#include "sweep.h"

static void run_usage(FILE *f) {
  fprintf(f,
          "usage: sqexp run CONFIG [--dry-run] [--fresh] [--set section.key=value]... [--backend auto|cpu|cuda]\n"
          "                 [--out DIR] [--quiet]\n\n"
          "Run the sweep CONFIG defines (docs/config.md) on its dump: every arm at every knob value, on\n"
          "every selected layer and KV head; one row per (grid point, layer, head) is appended to\n"
          "DIR/rows.jsonl, then the tables and figures are written (docs/results.md). Everything is\n"
          "validated before anything is written. An interrupted run (Ctrl-C, a kill, a crash) resumes\n"
          "where it stopped when the same command is run again.\n\n"
          "  --dry-run          print the resolved config and the grid size, write nothing\n"
          "  --fresh            start over: an existing run in DIR is moved to DIR/old-<time>/\n"
          "  --set S.K=V        override one config key (repeatable), e.g. --set sq.total_bits=2,3\n"
          "  --backend B        auto (CUDA when a GPU is usable), cpu or cuda\n"
          "  --out DIR          results directory (default: the config's [run] out)\n"
          "  --quiet            no progress bar or per-layer lines (the final table is still printed)\n\n"
          "exit status: 0 done, 1 failure during work, 2 bad input (nothing written), 130 interrupted\n");
}

int cmd_run(int argc, char **argv) {
  if (cmd_wants_help(argc, argv)) {
    run_usage(stdout);
    return 0;
  }
  sweep_opts o;
  memset(&o, 0, sizeof o);
  const char **sets = calloc((size_t)argc + 1, sizeof *sets);
  if (!sets) return cmd_error("run", 1, "out of memory");
  int status = -1;
  for (int i = 1; i < argc && status < 0; i++) {
    const char *a = argv[i];
    const char **val = NULL;
    if (!strcmp(a, "--dry-run")) o.dry_run = 1;
    else if (!strcmp(a, "--fresh")) o.fresh = 1;
    else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) o.quiet = 1;
    else if (!strncmp(a, "--set=", 6)) sets[o.n_overrides++] = a + 6;
    else if (!strncmp(a, "--backend=", 10)) o.backend = a + 10;
    else if (!strncmp(a, "--out=", 6)) o.out = a + 6;
    else if (!strcmp(a, "--set")) val = &sets[o.n_overrides++];
    else if (!strcmp(a, "--backend")) val = &o.backend;
    else if (!strcmp(a, "--out") || !strcmp(a, "-o")) val = &o.out;
    else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "sqexp run: unknown option '%s'\n", a);
      status = 2;
    } else if (!o.config_path) o.config_path = a;
    else {
      fprintf(stderr, "sqexp run: one CONFIG expected, got '%s' too\n", a);
      status = 2;
    }
    if (val) {
      if (i + 1 >= argc) {
        fprintf(stderr, "sqexp run: %s needs a value\n", a);
        status = 2;
      } else *val = argv[++i];
    }
  }
  if (status < 0 && o.backend && strcmp(o.backend, "auto") && strcmp(o.backend, "cpu") && strcmp(o.backend, "cuda")) {
    fprintf(stderr, "sqexp run: --backend must be auto, cpu or cuda (got '%s')\n", o.backend);
    status = 2;
  }
  if (status < 0 && !o.config_path) {
    run_usage(stderr);
    status = 2;
  }
  if (status < 0) {
    o.overrides = sets;
    status = sweep_run(&o);
  }
  free(sets);
  return status;
}
