/* sweep: the run flow (see sweep.h). */
#include "sweep.h"
#include <stdlib.h>
#include <string.h>
#include "report.h"

int sweep_report(const char *dir, FILE *out, const char *cmd) {
  rep_outputs *made = sq_xcalloc(1, sizeof *made);
  sq_err e;
  sq_err_clear(&e);
  int rc = report_dir(dir, out, made, &e);
  if (rc) {
    fprintf(stderr, "sqexp %s: %s\n", cmd, e.msg);
    free(made);
    return rc == SQ_EINPUT ? 2 : 1;
  }
  int n_tables = 0, n_figures = 0;
  for (int i = 0; i < made->n; i++) {
    const char *p = made->path[i];
    size_t len = strlen(p);
    if (len > 4 && !strcmp(p + len - 4, ".csv")) n_tables++;
    if (len > 4 && !strcmp(p + len - 4, ".png")) n_figures++;
  }
  if (made->gnuplot_missing)
    fprintf(stderr, "sqexp %s: warning: gnuplot not found; figures skipped (their .gp/.dat files are written)\n", cmd);
  for (int i = 0; i < made->n_warn; i++) fprintf(stderr, "sqexp %s: warning: %s\n", cmd, made->warn[i]);
  if (out) fprintf(out, "\ntables: %s/tables/ (%d tables as csv, md, tex)   figures: %s/figures/ (%d figures as png, pdf, gp)\n",
                   dir, n_tables, dir, n_figures);
  int status = made->n_warn ? 1 : 0; /* a failed gnuplot script is a failure; no gnuplot is not */
  free(made);
  return status;
}
