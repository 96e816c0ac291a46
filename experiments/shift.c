/* shift: distribution shift. Tables from DIR/shift/rows.jsonl (written by the run flow, sweep.c):
 * keys "calib=A|eval=B|<grid key>" for the calibrated arms and "eval=B|<grid key>" for tq, which
 * needs no calibration and is the reference line. For every point and evaluation domain B the
 * attention cosine calibrated in-domain (A = B) is set beside every cross-domain A and the drop. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "experiments.h"
#include "plot.h"

/* One line of the shift summary, kept for the figure. */
typedef struct {
  const store_row *first;
  char eval[32];
  double in, cross;
} shift_entry;

/* Split "calib=A|eval=B|rest" into its parts (calib "" for tq rows); 0 when the key is not one. */
static int shift_parse(const char *key, char *calib, char *eval, const char **rest) {
  calib[0] = eval[0] = '\0';
  const char *p = key;
  if (!strncmp(p, "calib=", 6)) {
    const char *bar = strchr(p, '|');
    if (!bar || bar - p - 6 > 31) return 0;
    snprintf(calib, 32, "%.*s", (int)(bar - p - 6), p + 6);
    p = bar + 1;
  }
  if (strncmp(p, "eval=", 5)) return 0;
  const char *bar = strchr(p, '|');
  if (!bar || bar - p - 5 > 31) return 0;
  snprintf(eval, 32, "%.*s", (int)(bar - p - 5), p + 5);
  *rest = bar + 1;
  return 1;
}

/* The aggregated point with calib domain `calib` (or "" for tq), eval `eval`, grid key `rest`. */
static const rep_point *shift_find(const rep_point *pts, int np, const char *calib, const char *eval,
                                   const char *rest) {
  char c[32], v[32];
  const char *r;
  for (int i = 0; i < np; i++)
    if (shift_parse(pts[i].first->key, c, v, &r) && !strcmp(c, calib) && !strcmp(v, eval) && !strcmp(r, rest))
      return &pts[i];
  return NULL;
}

static void shift_row(rep_table *t, const rep_point *p, const rep_point *in, const char *calib, const char *eval) {
  char label[256];
  rep_label(p->first, label, sizeof label);
  int r = rep_table_row(t), c = 0;
  rep_table_set(t, r, c++, "%s", p->first->arm);
  rep_table_set(t, r, c++, "%s", label);
  if (p->first->total_bits >= 0) rep_table_set(t, r, c++, "%d", p->first->total_bits);
  else rep_table_set(t, r, c++, "–");
  rep_table_set(t, r, c++, "%s", calib[0] ? calib : "– (none)");
  rep_table_set(t, r, c++, "%s", eval);
  rep_table_pm(t, r, c++, "%.4f", p->attn.mean, p->attn.std);
  rep_table_num(t, r, c++, "%.4f", in ? in->attn.mean : NAN);
  rep_table_num(t, r, c++, "%+.4f", in ? in->attn.mean - p->attn.mean : NAN);
  rep_table_num(t, r, c++, "%.4f", p->attn.min);
  rep_table_num(t, r, c++, "%.4f", p->randq.mean);
  rep_table_num(t, r, c++, "%.2f", p->ratio_honest);
  rep_table_set(t, r, c++, "%d", p->n);
}

/* Per point and eval domain B: in-domain (calibrated on B) vs cross-domain (calibrated on any other
 * domain: mean of those points' means; with two domains, the other one) and the drop. */
static int shift_summary(exp_ctx *x, const rep_point *pts, int np, shift_entry *ent, int *n_ent, sq_err *e) {
  *n_ent = 0;
  rep_table *t = rep_table_new("shift", "Distribution shift: attention cosine calibrated in-domain vs on another "
                                        "domain (mean over layers × KV heads)");
  static const char *const cols[] = {"arm", "knobs", "bits", "eval domain", "in-domain", "cross-domain", "drop",
                                     "in-domain worst", "cross-domain worst", "calib domains"};
  static const int kinds[] = {REP_TEXT, REP_TEXT, REP_NUM, REP_TEXT, REP_NUM, REP_NUM, REP_NUM, REP_NUM, REP_NUM, REP_TEXT};
  for (int c = 0; c < 10; c++) rep_table_col(t, cols[c], kinds[c]);
  for (int i = 0; i < np; i++) {
    char calib[32], eval[32], label[256], others[256] = "";
    const char *rest;
    if (!shift_parse(pts[i].first->key, calib, eval, &rest) || (calib[0] && strcmp(calib, eval))) continue;
    double cross = 0, worst = INFINITY;
    int n_cross = 0;
    for (int j = 0; calib[0] && j < np; j++) {
      char c2[32], v2[32];
      const char *r2;
      if (j == i || !shift_parse(pts[j].first->key, c2, v2, &r2) || strcmp(v2, eval) || strcmp(r2, rest) || !c2[0])
        continue;
      cross += pts[j].attn.mean;
      worst = fmin(worst, pts[j].attn.min);
      size_t at = strlen(others);
      snprintf(others + at, sizeof others - at, "%s%s", n_cross ? "," : "", c2);
      n_cross++;
    }
    rep_label(pts[i].first, label, sizeof label);
    int r = rep_table_row(t), c = 0;
    rep_table_set(t, r, c++, "%s", pts[i].first->arm);
    rep_table_set(t, r, c++, "%s", label);
    if (pts[i].first->total_bits >= 0) rep_table_set(t, r, c++, "%d", pts[i].first->total_bits);
    else rep_table_set(t, r, c++, "–");
    rep_table_set(t, r, c++, "%s", eval);
    rep_table_num(t, r, c++, "%.4f", pts[i].attn.mean);
    /* tq needs no calibration: its cross-domain number is its in-domain one (the reference line) */
    double cr = calib[0] ? (n_cross ? cross / n_cross : NAN) : pts[i].attn.mean;
    rep_table_num(t, r, c++, "%.4f", cr);
    rep_table_num(t, r, c++, "%+.4f", pts[i].attn.mean - cr);
    rep_table_num(t, r, c++, "%.4f", pts[i].attn.min);
    rep_table_num(t, r, c++, "%.4f", calib[0] ? (n_cross ? worst : NAN) : pts[i].attn.min);
    rep_table_set(t, r, c++, "%s", calib[0] ? others : "– (no calibration)");
    shift_entry *en = &ent[(*n_ent)++];
    en->first = pts[i].first;
    snprintf(en->eval, sizeof en->eval, "%s", eval);
    en->in = pts[i].attn.mean;
    en->cross = cr;
  }
  snprintf(t->note, sizeof t->note,
           "in-domain: calibrated on the eval domain's calibration tokens (= a grid run restricted to that domain); "
           "cross-domain: calibrated on another domain's (mean over the calib domains listed); drop = in-domain − "
           "cross-domain (positive = calibration does not transfer); worst = the worst (layer, head). tq needs no "
           "calibration: the reference line. Every pair: shift_pairs.");
  return exp_table_emit(x, t, 1, e);
}

static void shift_tick(const store_row *r, char *tick, size_t n) {
  char label[160];
  rep_label(r, label, sizeof label);
  if (!strcmp(r->arm, "lowrank")) snprintf(tick, n, "lowrank %s", label);
  else if (!strcmp(r->arm, "sq")) {
    char nb[16] = "";
    if (r->noise_bits >= 0) snprintf(nb, sizeof nb, " nb%d", r->noise_bits);
    snprintf(tick, n, "sq %db%s τ%.2f%s%s", r->total_bits, nb, r->d_eff_variance, r->use_water_fill ? " wf" : "",
             r->use_qjl ? " qjl" : "");
  } else snprintf(tick, n, "%s %db", r->arm, r->total_bits);
}

/* Grouped bars, one panel per evaluation domain: in-domain and cross-domain attention cosine of
 * every point (tq: the same bar twice, the reference). */
static int shift_figure(exp_ctx *x, const shift_entry *ent, int n, sq_err *e) {
  char evals[8][32];
  int ne = 0;
  for (int i = 0; i < n; i++) {
    int seen = 0;
    for (int j = 0; j < ne; j++) seen |= !strcmp(evals[j], ent[i].eval);
    if (!seen && ne < 8) snprintf(evals[ne++], sizeof evals[0], "%s", ent[i].eval);
  }
  if (ne == 0) return SQ_OK;
  FILE *f = plot_open_dat(x->figures, "shift.dat", x->made, e);
  if (!f) return e->code;
  int per = 0;
  for (int d = 0; d < ne; d++) {
    fprintf(f, "# eval domain %s: index  in-domain  cross-domain  (attn cos, mean over layers x heads)\n", evals[d]);
    int k = 0;
    for (int i = 0; i < n; i++)
      if (!strcmp(ent[i].eval, evals[d])) fprintf(f, "%d %.8f %.8f\n", ++k, ent[i].in, ent[i].cross);
    per = k > per ? k : per;
    fputs("\n\n", f);
  }
  fclose(f);
  plot_buf b = {0};
  plot_bprintf(&b, "set multiplot layout 1,%d title \"Distribution shift: attention cosine, calibrated in-domain vs "
                   "on another domain\"\n", ne);
  plot_bprintf(&b, "set style fill solid 0.7 border -1\nset boxwidth 0.36\nset key below horizontal\n");
  plot_bprintf(&b, "set ylabel \"attention-output cosine (mean)\"\nset xrange [0.3:%d.7]\nset yrange [*:1]\n", per);
  plot_bprintf(&b, "tick_font = sprintf(\",%%.1f\", %.1f * fscale)\nset xtics rotate by 30 right font tick_font\n",
               per > 8 ? 7.0 : 8.0);
  for (int d = 0; d < ne; d++) {
    char q[600], tick[256];
    plot_quote(evals[d], q, sizeof q);
    plot_bprintf(&b, "set title \"evaluated on %s\"\nset xtics (", q);
    int k = 0;
    for (int i = 0; i < n; i++) {
      if (strcmp(ent[i].eval, evals[d])) continue;
      shift_tick(ent[i].first, tick, sizeof tick);
      plot_quote(tick, q, sizeof q);
      plot_bprintf(&b, "%s\"%s\" %d", k ? ", " : "", q, k + 1);
      k++;
    }
    plot_bprintf(&b, ")\nplot 'shift.dat' index %d using ($1-0.19):2 with boxes ls 1 title \"in-domain\", \\\n"
                     "  '' index %d using ($1+0.19):3 with boxes ls 2 title \"cross-domain\"\n", d, d);
  }
  plot_bprintf(&b, "unset multiplot\n");
  int rc = plot_render(x->figures, "shift", b.s, x->gnuplot, x->made, e);
  plot_buf_free(&b);
  return rc;
}

int exp_shift(exp_ctx *x, sq_err *e) {
  char dir[1200];
  snprintf(dir, sizeof dir, "%s/shift", x->dir);
  store_row *rows = NULL;
  int64_t n = 0;
  if (store_read_rows(dir, &rows, &n, e)) return e->code;
  if (n == 0) { /* a single domain (the run said so) or nothing computed yet */
    free(rows);
    return SQ_OK;
  }
  rep_point *pts = NULL;
  int np = 0;
  if (rep_points(rows, n, -1, &pts, &np)) {
    free(rows);
    return sq_fail(e, SQ_EFAIL, "%s: cannot aggregate the shift rows", dir);
  }
  shift_entry *ent = sq_xmalloc((size_t)(np > 0 ? np : 1) * sizeof *ent);
  int n_ent = 0;
  int rc = shift_summary(x, pts, np, ent, &n_ent, e);
  if (!rc) rc = shift_figure(x, ent, n_ent, e);
  free(ent);
  if (rc) {
    free(pts);
    free(rows);
    return rc;
  }
  rep_table *t = rep_table_new("shift_pairs", "Distribution shift, every (calibration domain, evaluation domain) "
                                              "pair: attention cosine (mean ± std over layers × KV heads)");
  static const char *const cols[] = {"arm", "knobs", "bits", "calib domain", "eval domain", "attn cos",
                                     "in-domain attn cos", "drop", "worst head", "randq cos", "ratio (honest)", "rows"};
  static const int kinds[] = {REP_TEXT, REP_TEXT, REP_NUM, REP_TEXT, REP_TEXT, REP_PM, REP_NUM, REP_NUM, REP_NUM, REP_NUM,
                              REP_NUM, REP_NUM};
  for (int c = 0; c < 12; c++) rep_table_col(t, cols[c], kinds[c]);
  /* rep_points sorts by arm, bits, key: the key starts with calib=/eval=, so group by eval
   * domain here: for every point and eval domain, the in-domain row first, then the others */
  for (int i = 0; i < np; i++) {
    char calib[32], eval[32];
    const char *rest;
    if (!shift_parse(pts[i].first->key, calib, eval, &rest)) continue;
    if (calib[0] && strcmp(calib, eval)) continue; /* cross rows follow their in-domain row */
    const rep_point *in = &pts[i];
    shift_row(t, in, in, calib, eval);
    for (int j = 0; calib[0] && j < np; j++) {
      char c2[32], v2[32];
      const char *r2;
      if (j == i || !shift_parse(pts[j].first->key, c2, v2, &r2) || strcmp(v2, eval) || strcmp(r2, rest) || !c2[0])
        continue;
      shift_row(t, &pts[j], shift_find(pts, np, eval, eval, rest), c2, v2);
    }
  }
  snprintf(t->note, sizeof t->note,
           "Each calibrated point is calibrated on the calibration (split-0) tokens of the calib domain and "
           "evaluated on the evaluation (split-1) sequences of the eval domain; in-domain = calibrated on the "
           "eval domain itself (the same numbers as a grid run restricted to that domain); drop = in-domain − "
           "this row. tq needs no calibration and is evaluated once per eval domain (the reference line).");
  rc = exp_table_emit(x, t, 0, e);
  free(pts);
  free(rows);
  return rc;
}
