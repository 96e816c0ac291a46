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
};
const int exp_count = (int)(sizeof exp_table / sizeof exp_table[0]);

const experiment *exp_find(const char *name) {
  for (int i = 0; i < exp_count; i++)
    if (!strcmp(exp_table[i].name, name)) return &exp_table[i];
  return NULL;
}
