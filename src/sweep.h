/* sweep: the run flow of `sqexp run` (validate everything, then per layer: read, calibrate,
 * plan, evaluate, append rows; then the reports) and the shared report entry point. */
#ifndef SQEXP_SWEEP_H
#define SQEXP_SWEEP_H
#include <stdio.h>
#include "cfg.h"
#include "err.h"

typedef struct {
  const char *config_path;
  const char *const *overrides;  /* "section.key=value" from --set */
  int n_overrides;
  const char *backend;           /* --backend auto|cpu|cuda, NULL = config's */
  const char *out;               /* --out DIR, NULL = config's */
  int dry_run, fresh, quiet;
} sweep_opts;

/* The whole `sqexp run`: returns the exit status (0, 1, 2, or 130 when interrupted) after printing
 * its own messages as "sqexp run: ...". */
int sweep_run(const sweep_opts *o);
/* Reports of a results directory (tables, figures; the main table to `out` when non-NULL); prints
 * where they are and any warning; returns the exit status. `cmd` names the command in messages. */
int sweep_report(const char *dir, FILE *out, const char *cmd);

/* The randq queries of (layer, head): n = n_seq * n_randq * D normals in (sequence, query, dim)
 * order from one generator seeded rng_head_seed(seed, layer, head) ^ RNG_RANDQ_SALT (rng.h says
 * why the salt: independence from the plans' QJL sketches). */
void sweep_draw_randq(uint64_t seed, int layer, int head, int64_t n, float *dst);

#endif
