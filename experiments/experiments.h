/* experiments: the one registration table of experiment kinds (design.md). An experiment turns
 * what the run stored (rows.jsonl, spectra.jsonl) into its tables and figures; `needs_rows` says
 * whether the run must evaluate grid points for it (every run stores the spectra, which are a
 * by-product of calibration). `[run] experiments = grid,spectrum` selects them; `sqexp report`
 * reruns the ones recorded in run.json. */
#ifndef SQEXP_EXPERIMENTS_H
#define SQEXP_EXPERIMENTS_H
#include <stdint.h>
#include <stdio.h>
#include "err.h"
#include "report.h"
#include "store.h"

typedef struct {
  const char *dir;              /* results directory */
  char tables[1200], figures[1200]; /* DIR/tables, DIR/figures (exist) */
  const store_row *rows;
  int64_t n_rows;
  const store_spectrum *spectra;
  int64_t n_spectra;
  const char *model_id;
  int gnuplot;                  /* 1: draw figures (else only their .gp/.dat are written) */
  FILE *out;                    /* where the main summary table goes (NULL: nowhere) */
  rep_outputs *made;            /* every file written, and warnings */
} exp_ctx;

typedef struct {
  const char *name;
  int (*fn)(exp_ctx *x, sq_err *e);
  const char *summary;
  int needs_rows;
} experiment;

extern const experiment exp_table[];
extern const int exp_count;
const experiment *exp_find(const char *name);
/* A finished table: written to DIR/tables (csv, md, tex), also printed to x->out when `print`
 * and x->out is set, then freed (whatever the write returned). */
int exp_table_emit(exp_ctx *x, rep_table *t, int print, sq_err *e);

int exp_grid(exp_ctx *x, sq_err *e);
int exp_spectrum(exp_ctx *x, sq_err *e);
/* These two read their own stores, DIR/shift and DIR/stability (the run flow writes them). */
int exp_shift(exp_ctx *x, sq_err *e);
int exp_stability(exp_ctx *x, sq_err *e);

#endif
