/* The registration table: the CLI, the run flow and the report all read this. */
#include "experiments.h"
#include <string.h>

const experiment exp_table[] = {
    {"grid", exp_grid,
     "the main sweep: per-arm summary, matched-bits comparison, three-way table, per-layer "
     "breakdowns; Pareto, heatmap and per-head box-plot figures",
     1},
    {"spectrum", exp_spectrum,
     "per-layer/per-head eigen-spectra of keys and values: PR, d_eff(tau), kappa; the d_eff and "
     "KV-asymmetry tables, per-layer d_eff and sample-spectrum figures",
     0},
    {"shift", exp_shift,
     "distribution shift: calibrate on one domain, evaluate on another (every ordered pair; tq once per "
     "eval domain); the shift table (rows in DIR/shift)",
     0},
    {"stability", exp_stability,
     "calibration stability: the first N calibration tokens vs all (subspace overlap, top-d mass, d_eff, PR, "
     "sq attention cosine); the stability table and figure (rows in DIR/stability)",
     0},
};
const int exp_count = (int)(sizeof exp_table / sizeof exp_table[0]);

const experiment *exp_find(const char *name) {
  for (int i = 0; i < exp_count; i++)
    if (!strcmp(exp_table[i].name, name)) return &exp_table[i];
  return NULL;
}

int exp_table_emit(exp_ctx *x, rep_table *t, int print, sq_err *e) {
  int rc = rep_table_write(t, x->tables, x->made, e);
  if (!rc && print && x->out) {
    fputc('\n', x->out);
    rep_table_print(t, x->out);
  }
  rep_table_free(t);
  return rc;
}
