/* report: tables from the result store alone (no recomputation). Aggregates rows per grid point
 * (and per layer), and writes every table as DIR/tables/<name>.csv, .md and .tex (booktabs).
 * Which tables and figures exist is decided by the experiments (experiments/experiments.h);
 * report_dir runs them. docs/results.md documents every column. */
#ifndef SQEXP_REPORT_H
#define SQEXP_REPORT_H
#include <stdint.h>
#include <stdio.h>
#include "err.h"
#include "store.h"

/* ---- statistics over heads (NaN entries are skipped) ---- */
typedef struct {
  int n;
  double mean, std;   /* std: sample standard deviation (n-1), 0 when n < 2 */
  double min, max;
  double p5;          /* 5th percentile, linear interpolation between order statistics at
                       * position 0.05*(n-1) of the ascending sort (numpy's default) */
  int argmin;         /* index (into the input) of the minimum, -1 when n == 0 */
} rep_stat;
void rep_stat_of(const double *x, int n, rep_stat *s);

/* ---- one grid point, aggregated over the (layer, head) rows it has ---- */
typedef struct {
  const store_row *first;   /* the row of the smallest (layer, head): knobs, and the seed engine's
                             * "first head" ratio */
  int n;                    /* rows (layer x head) */
  int head_dim;
  rep_stat attn, randq, probs;
  int worst_layer, worst_head;             /* of the minimum attn cosine */
  double k_cos, v_cos, k_rel_mse, v_rel_mse, logit_bias, logit_slope, topk;  /* means */
  double bits_honest_k, bits_honest_v;     /* means over rows */
  double ratio_honest;      /* 2*16*D / mean(bits_honest_k + bits_honest_v): the whole cache's ratio */
  double ratio_seed_first;  /* the first head's seed-accounting ratio (what the seed engine prints) */
  double ratio_seed_avg;    /* 2*16*D / mean(bits_seed_k + bits_seed_v) over all heads */
  double ratio_paper;       /* 2*16*D / mean(bits_paper_k + bits_paper_v) */
  double d_eff_k, d_eff_v;  /* means of the plan's d_eff */
} rep_point;

/* Aggregate rows per grid key (layer < 0: all layers; else only that layer). Sorted by arm
 * (tq, sq, sq_paper_v1, lowrank), total_bits, key. *pts malloc'd. */
int rep_points(const store_row *rows, int64_t n, int layer, rep_point **pts, int *np);
/* A short human label of a point's knobs ("prod haar beta", "nb=none tau=0.90 wf=1 qjl=0"). */
void rep_label(const store_row *r, char *buf, size_t n);
/* Arm order used everywhere (tq 0, sq 1, sq_paper_v1 2, lowrank 3, other 4). */
int rep_arm_rank(const char *arm);

/* ---- tables ---- */
enum { REP_TEXT = 0, REP_NUM = 1, REP_PM = 2 /* mean ± std: two values per cell */ };
typedef struct {
  char name[64];            /* file stem */
  char title[512];          /* caption */
  char note[1024];          /* appended to the caption / printed below the table */
  int n_cols;
  char head[32][64];
  int kind[32];
  int n_rows, cap_rows;
  char (*cell)[32][2][48];  /* [row][col][0 = value, 1 = std for REP_PM] */
} rep_table;

rep_table *rep_table_new(const char *name, const char *title);
void rep_table_col(rep_table *t, const char *head, int kind);
int rep_table_row(rep_table *t);  /* append an empty row, return its index */
void rep_table_set(rep_table *t, int row, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void rep_table_num(rep_table *t, int row, int col, const char *fmt, double v); /* NaN -> "–" */
void rep_table_pm(rep_table *t, int row, int col, const char *fmt, double mean, double std);
/* Write DIR/<name>.csv, .md, .tex; each path is added to files. */
typedef struct {
  int n;
  char path[256][1200];
  int gnuplot_missing;      /* figures skipped: no gnuplot */
  int n_warn;
  char warn[16][512];
} rep_outputs;
int rep_table_write(const rep_table *t, const char *dir, rep_outputs *made, sq_err *e);
void rep_table_print(const rep_table *t, FILE *f);  /* aligned plain text */
void rep_table_free(rep_table *t);
void rep_outputs_add(rep_outputs *made, const char *path);
void rep_outputs_warn(rep_outputs *made, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Read DIR's store and run the experiments listed in run.json (all that have data when the
 * list is empty): tables to DIR/tables, figures to DIR/figures. `out`: where the main summary
 * table is printed (NULL = nowhere). */
int report_dir(const char *dir, FILE *out, rep_outputs *made, sq_err *e);

#endif
