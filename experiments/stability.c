/* stability: calibration stability. Tables and a figure from DIR/stability/rows.jsonl (written by
 * the run flow, sweep.c). Per budget N ("N=<n>|" or "N=all|" key prefix) two kinds of rows per
 * (layer, KV head): arm "stability" holds the spectral comparison with the full calibration
 * (k_cos/v_cos = subspace overlap, k_rel_mse/v_rel_mse = relative change of the top-d eigenvalue
 * mass, d_eff_k/v = d_eff(tau) at N, pr_k/v = PR at N; docs/results.md), arm "sq" the first sq
 * grid point calibrated at N. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "experiments.h"
#include "plot.h"

enum { STAB_MAX_BUDGET = 80 };

typedef struct {
  long long n;            /* budget; 0 = all */
  rep_stat ovl[2], mass[2], deff[2], pr[2], attn;
  double tau;
} stab_budget;

/* The budget of a key "N=<n>|..." (0 for all); -1 when the key is not one. */
static long long stab_budget_of(const char *key) {
  if (strncmp(key, "N=", 2)) return -1;
  if (!strncmp(key + 2, "all|", 4)) return 0;
  char *end;
  long long v = strtoll(key + 2, &end, 10);
  return *end == '|' && v > 0 ? v : -1;
}

static int stab_cmp(const void *a, const void *b) {
  long long x = ((const stab_budget *)a)->n, y = ((const stab_budget *)b)->n;
  if (!x) x = (long long)9e18; /* all last */
  if (!y) y = (long long)9e18;
  return (x > y) - (x < y);
}

static void stab_collect(const store_row *rows, int64_t n, stab_budget *b) {
  double *v[9];
  for (int k = 0; k < 9; k++) v[k] = sq_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(double));
  int m = 0, ms = 0;
  b->tau = 0.90;
  for (int64_t i = 0; i < n; i++) {
    const store_row *r = &rows[i];
    if (stab_budget_of(r->key) != b->n) continue;
    if (!strcmp(r->arm, "stability")) {
      v[0][m] = r->m.k_cos, v[1][m] = r->m.v_cos;
      v[2][m] = r->m.k_rel_mse, v[3][m] = r->m.v_rel_mse;
      v[4][m] = r->d_eff_k, v[5][m] = r->d_eff_v;
      v[6][m] = r->pr_k, v[7][m] = r->pr_v;
      m++;
    } else if (!strcmp(r->arm, "sq")) {
      v[8][ms++] = r->m.n_attn ? r->m.attn_cos : NAN;
      b->tau = r->d_eff_variance; /* d uses the sq point's tau (0.90 without sq) */
    }
  }
  for (int s = 0; s < 2; s++) {
    rep_stat_of(v[0 + s], m, &b->ovl[s]);
    rep_stat_of(v[2 + s], m, &b->mass[s]);
    rep_stat_of(v[4 + s], m, &b->deff[s]);
    rep_stat_of(v[6 + s], m, &b->pr[s]);
  }
  rep_stat_of(v[8], ms, &b->attn);
  for (int k = 0; k < 9; k++) free(v[k]);
}

static int stab_budgets(const store_row *rows, int64_t n, stab_budget *b) {
  int nb = 0;
  for (int64_t i = 0; i < n; i++) {
    long long N = stab_budget_of(rows[i].key);
    int seen = N < 0;
    for (int j = 0; j < nb && !seen; j++) seen = b[j].n == N;
    if (!seen && nb < STAB_MAX_BUDGET) b[nb++].n = N;
  }
  qsort(b, (size_t)nb, sizeof *b, stab_cmp);
  for (int j = 0; j < nb; j++) stab_collect(rows, n, &b[j]);
  return nb;
}

static int stab_table(exp_ctx *x, const stab_budget *b, int nb, const char *sq_label, sq_err *e) {
  char title[512];
  snprintf(title, sizeof title, "Calibration stability: the first N calibration tokens vs all (τ = %.2f; mean over "
           "layers × KV heads)", b[nb - 1].tau);
  rep_table *t = rep_table_new("stability", title);
  static const char *const cols[] = {"N", "K overlap", "V overlap", "K overlap min", "V overlap min",
                                     "K top-d mass Δ", "V top-d mass Δ", "K d_eff(τ)", "V d_eff(τ)", "K PR", "V PR",
                                     "sq attn cos", "heads"};
  for (int c = 0; c < 13; c++) rep_table_col(t, cols[c], c == 0 ? REP_TEXT : c == 11 ? REP_PM : REP_NUM);
  for (int j = 0; j < nb; j++) {
    int r = rep_table_row(t), c = 0;
    if (b[j].n) rep_table_set(t, r, c++, "%lld", b[j].n);
    else rep_table_set(t, r, c++, "all");
    rep_table_num(t, r, c++, "%.4f", b[j].ovl[0].mean);
    rep_table_num(t, r, c++, "%.4f", b[j].ovl[1].mean);
    rep_table_num(t, r, c++, "%.4f", b[j].ovl[0].min);
    rep_table_num(t, r, c++, "%.4f", b[j].ovl[1].min);
    rep_table_num(t, r, c++, "%+.4f", b[j].mass[0].mean);
    rep_table_num(t, r, c++, "%+.4f", b[j].mass[1].mean);
    rep_table_num(t, r, c++, "%.2f", b[j].deff[0].mean);
    rep_table_num(t, r, c++, "%.2f", b[j].deff[1].mean);
    rep_table_num(t, r, c++, "%.2f", b[j].pr[0].mean);
    rep_table_num(t, r, c++, "%.2f", b[j].pr[1].mean);
    rep_table_pm(t, r, c++, "%.4f", b[j].attn.mean, b[j].attn.std);
    rep_table_set(t, r, c++, "%d", b[j].ovl[0].n);
  }
  snprintf(t->note, sizeof t->note,
           "Each (layer, KV head) calibrated on its first N calibration tokens (N above the calibration size = "
           "all). overlap = ||E_N[:d]^T E_all[:d]||_F^2 / d of the top-d eigenvectors, d = d_eff(τ) of the full "
           "calibration (1 = same subspace); top-d mass Δ = (Σ_{i<d} λ_i at N − at all) / at all; d_eff(τ), "
           "PR at N; sq attn cos: %s calibrated at N.", sq_label);
  return exp_table_emit(x, t, 1, e);
}

/* Overlap (K, V) and sq attention cosine vs N on a log x axis; all is drawn at the calibration size. */
static int stab_figure(exp_ctx *x, const stab_budget *b, int nb, long long n_all, sq_err *e) {
  FILE *f = plot_open_dat(x->figures, "stability.dat", x->made, e);
  if (!f) return e->code;
  fprintf(f, "# N(tokens, all = %lld)  K_overlap V_overlap K_overlap_min V_overlap_min  sq_attn_cos sq_attn_std\n",
          n_all);
  for (int j = 0; j < nb; j++) {
    long long N = b[j].n && b[j].n < n_all ? b[j].n : n_all;
    fprintf(f, "%lld %.8f %.8f %.8f %.8f %.8f %.8f\n", N, b[j].ovl[0].mean, b[j].ovl[1].mean, b[j].ovl[0].min,
            b[j].ovl[1].min, b[j].attn.mean, b[j].attn.std);
  }
  fclose(f);
  plot_buf pb = {0};
  plot_bprintf(&pb, "set multiplot layout 1,2 title \"Calibration stability%s%s\"\n",
               x->model_id && x->model_id[0] ? ", " : "", x->model_id ? x->model_id : "");
  long long n_min = b[0].n && b[0].n < n_all ? b[0].n : n_all;
  plot_bprintf(&pb, "set logscale x 2\nset xlabel \"calibration tokens N (log; all = %lld)\"\n", n_all);
  plot_bprintf(&pb, "set xrange [%g:%g]\n", n_min / 1.3, n_all * 1.3);
  plot_bprintf(&pb, "set key bottom right\nset title \"top-d subspace overlap with the full calibration\"\n");
  plot_bprintf(&pb, "set ylabel \"||E_N^T E_{all}||_F^2 / d\"\nset yrange [0:1.05]\n");
  plot_bprintf(&pb, "plot 'stability.dat' using 1:2 with linespoints ls 1 title \"keys (mean)\", \\\n"
                    "  '' using 1:3 with linespoints ls 2 title \"values (mean)\", \\\n"
                    "  '' using 1:4 with lines ls 1 dt 2 title \"keys (worst head)\", \\\n"
                    "  '' using 1:5 with lines ls 2 dt 2 title \"values (worst head)\"\n");
  plot_bprintf(&pb, "set title \"sq attention cosine, calibrated on N tokens\"\nset ylabel \"attention cosine\"\n"
                    "set autoscale y\n");
  plot_bprintf(&pb, "plot 'stability.dat' using 1:6:7 with yerrorlines ls 2 title \"sq (mean ± std)\"\n");
  plot_bprintf(&pb, "unset multiplot\n");
  int rc = plot_render(x->figures, "stability", pb.s, x->gnuplot, x->made, e);
  plot_buf_free(&pb);
  return rc;
}

int exp_stability(exp_ctx *x, sq_err *e) {
  char dir[1200];
  snprintf(dir, sizeof dir, "%s/stability", x->dir);
  store_row *rows = NULL;
  int64_t n = 0;
  if (store_read_rows(dir, &rows, &n, e)) return e->code;
  stab_budget *b = sq_xcalloc(STAB_MAX_BUDGET, sizeof *b);
  int nb = n ? stab_budgets(rows, n, b) : 0;
  int rc = SQ_OK;
  if (nb > 0 && b[nb - 1].n == 0) {
    char sq_label[256] = "no sq arm in the run";
    for (int64_t i = 0; i < n; i++)
      if (!strcmp(rows[i].arm, "sq")) {
        char l[200];
        rep_label(&rows[i], l, sizeof l);
        snprintf(sq_label, sizeof sq_label, "the sq point b=%d %s", rows[i].total_bits, l);
        break;
      }
    long long n_all = x->n_spectra ? (long long)x->spectra[0].n_calib : 0;
    rc = stab_table(x, b, nb, sq_label, e);
    if (!rc && n_all > 0) rc = stab_figure(x, b, nb, n_all, e);
  }
  free(b);
  free(rows);
  return rc;
}
