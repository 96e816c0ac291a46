/* spectrum: the paper's d_eff table (keys and values side by side = the KV-asymmetry table),
 * per-layer d_eff and sample eigen-spectra figures, all from spectra.jsonl. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "experiments.h"
#include "plot.h"

static int spec_cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* Mean/median statistics of one side (0 keys, 1 values) over the spectra of a layer (< 0: all). */
typedef struct {
  int n;
  double pr_mean, int_mean, kappa_mean, kappa_median, d_over_D, pr_min, pr_max;
  double deff_mean[STORE_MAX_TAU];
} spec_side;

static int spec_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void spec_side_of(const exp_ctx *x, int layer, int s, spec_side *o) {
  memset(o, 0, sizeof *o);
  double *kap = sq_xmalloc((size_t)(x->n_spectra > 0 ? x->n_spectra : 1) * sizeof *kap);
  int D = 0;
  o->pr_min = INFINITY;
  o->pr_max = -INFINITY;
  for (int64_t i = 0; i < x->n_spectra; i++) {
    const store_spectrum *sp = &x->spectra[i];
    if (layer >= 0 && sp->layer != layer) continue;
    o->pr_mean += sp->pr[s];
    o->int_mean += sp->pr_int[s];
    o->kappa_mean += sp->kappa[s];
    o->pr_min = fmin(o->pr_min, sp->pr[s]);
    o->pr_max = fmax(o->pr_max, sp->pr[s]);
    for (int t = 0; t < sp->n_tau; t++) o->deff_mean[t] += sp->d_eff[s][t];
    kap[o->n++] = sp->kappa[s];
    D = sp->head_dim;
  }
  if (o->n) {
    o->pr_mean /= o->n;
    o->int_mean /= o->n;
    o->kappa_mean /= o->n;
    for (int t = 0; t < STORE_MAX_TAU; t++) o->deff_mean[t] /= o->n;
    qsort(kap, (size_t)o->n, sizeof *kap, spec_cmp_double);
    o->kappa_median = o->n % 2 ? kap[o->n / 2] : 0.5 * (kap[o->n / 2 - 1] + kap[o->n / 2]);
    o->d_over_D = o->int_mean / D;
  }
  free(kap);
}

static int spec_layers(const exp_ctx *x, int *layers, int cap) {
  int n = 0;
  for (int64_t i = 0; i < x->n_spectra; i++) {
    int seen = 0;
    for (int j = 0; j < n; j++) seen |= layers[j] == x->spectra[i].layer;
    if (!seen && n < cap) layers[n++] = x->spectra[i].layer;
  }
  qsort(layers, (size_t)n, sizeof *layers, spec_cmp_int);
  return n;
}

static int spec_deff_table(exp_ctx *x, const int *layers, int nl, sq_err *e) {
  const store_spectrum *s0 = &x->spectra[0];
  int ntau = s0->n_tau < 6 ? s0->n_tau : 6;
  char title[512];
  snprintf(title, sizeof title, "Effective dimension of keys and values%s%s (D = %d; mean over KV heads)",
           x->model_id && x->model_id[0] ? ", " : "", x->model_id ? x->model_id : "", s0->head_dim);
  rep_table *t = rep_table_new("d_eff", title);
  rep_table_col(t, "layer", REP_TEXT);
  rep_table_col(t, "heads", REP_NUM);
  char h[64];
  static const char *const side[2] = {"K", "V"};
  for (int s = 0; s < 2; s++) {
    snprintf(h, sizeof h, "%s PR d_eff", side[s]); rep_table_col(t, h, REP_NUM);
    snprintf(h, sizeof h, "%s d_eff (int)", side[s]); rep_table_col(t, h, REP_NUM);
    snprintf(h, sizeof h, "%s κ mean", side[s]); rep_table_col(t, h, REP_NUM);
    snprintf(h, sizeof h, "%s κ median", side[s]); rep_table_col(t, h, REP_NUM);
    snprintf(h, sizeof h, "%s d_eff/D", side[s]); rep_table_col(t, h, REP_NUM);
    for (int k = 0; k < ntau; k++) {
      snprintf(h, sizeof h, "%s d_eff(%.2f)", side[s], s0->tau[k]);
      rep_table_col(t, h, REP_NUM);
    }
  }
  rep_table_col(t, "V/K (PR)", REP_NUM);
  for (int l = -1; l < nl; l++) {
    spec_side sd[2];
    int layer = l < 0 ? -1 : layers[l];
    spec_side_of(x, layer, 0, &sd[0]);
    spec_side_of(x, layer, 1, &sd[1]);
    int r = rep_table_row(t), c = 0;
    if (l < 0) rep_table_set(t, r, c++, "all");
    else rep_table_set(t, r, c++, "%d", layer);
    rep_table_set(t, r, c++, "%d", sd[0].n);
    for (int s = 0; s < 2; s++) {
      rep_table_num(t, r, c++, "%.2f", sd[s].pr_mean);
      rep_table_num(t, r, c++, "%.2f", sd[s].int_mean);
      rep_table_num(t, r, c++, sd[s].kappa_mean >= 1e4 ? "%.3g" : "%.2f", sd[s].kappa_mean);
      rep_table_num(t, r, c++, sd[s].kappa_median >= 1e4 ? "%.3g" : "%.2f", sd[s].kappa_median);
      rep_table_num(t, r, c++, "%.3f", sd[s].d_over_D);
      for (int k = 0; k < ntau; k++) rep_table_num(t, r, c++, "%.2f", sd[s].deff_mean[k]);
    }
    rep_table_num(t, r, c++, "%.2f", sd[1].pr_mean / sd[0].pr_mean);
  }
  snprintf(t->note, sizeof t->note,
           "PR d_eff: participation ratio (Σλ)²/Σλ² (float mean); d_eff (int): clamp(round(PR), 2, D-2), "
           "the paper's d_eff, mean of the integers; κ = λ[d-1]/λ[d] at that d (capped at 1e6); "
           "d_eff(τ): variance-coverage dimension. First row: all layers. Values beside keys: the "
           "KV asymmetry.");
  int rc = exp_table_emit(x, t, 0, e);
  if (rc) return rc;
  /* the compact KV-asymmetry table */
  t = rep_table_new("kv_asymmetry", "KV asymmetry: effective dimension of values vs keys (mean over KV heads)");
  static const char *const cols[] = {"layer", "K PR d_eff", "V PR d_eff", "V/K", "K d_eff (int)", "V d_eff (int)",
                                     "K κ median", "V κ median"};
  for (int c = 0; c < 8; c++) rep_table_col(t, cols[c], c ? REP_NUM : REP_TEXT);
  for (int l = -1; l < nl; l++) {
    spec_side sd[2];
    int layer = l < 0 ? -1 : layers[l];
    spec_side_of(x, layer, 0, &sd[0]);
    spec_side_of(x, layer, 1, &sd[1]);
    int r = rep_table_row(t);
    if (l < 0) rep_table_set(t, r, 0, "all");
    else rep_table_set(t, r, 0, "%d", layer);
    rep_table_num(t, r, 1, "%.2f", sd[0].pr_mean);
    rep_table_num(t, r, 2, "%.2f", sd[1].pr_mean);
    rep_table_num(t, r, 3, "%.2f", sd[1].pr_mean / sd[0].pr_mean);
    rep_table_num(t, r, 4, "%.2f", sd[0].int_mean);
    rep_table_num(t, r, 5, "%.2f", sd[1].int_mean);
    rep_table_num(t, r, 6, sd[0].kappa_median >= 1e4 ? "%.3g" : "%.2f", sd[0].kappa_median);
    rep_table_num(t, r, 7, sd[1].kappa_median >= 1e4 ? "%.3g" : "%.2f", sd[1].kappa_median);
  }
  return exp_table_emit(x, t, 0, e);
}

static int spec_fig_layers(exp_ctx *x, const int *layers, int nl, sq_err *e) {
  FILE *f = plot_open_dat(x->figures, "d_eff_layers.dat", x->made, e);
  if (!f) return e->code;
  fprintf(f, "# layer  K_pr_mean K_pr_min K_pr_max  V_pr_mean V_pr_min V_pr_max  (over KV heads)\n");
  for (int l = 0; l < nl; l++) {
    spec_side k, v;
    spec_side_of(x, layers[l], 0, &k);
    spec_side_of(x, layers[l], 1, &v);
    fprintf(f, "%d %.6f %.6f %.6f %.6f %.6f %.6f\n", layers[l], k.pr_mean, k.pr_min, k.pr_max, v.pr_mean, v.pr_min,
            v.pr_max);
  }
  fclose(f);
  int D = x->spectra[0].head_dim;
  plot_buf b = {0};
  plot_bprintf(&b, "set title \"Effective dimension per layer\\n{/*0.75 %s%smean over KV heads, bars: min–max}\"\n",
               x->model_id ? x->model_id : "", x->model_id && x->model_id[0] ? "; " : "");
  plot_bprintf(&b, "set xlabel \"layer\"\nset ylabel \"participation ratio (Σλ)^2/Σλ^2  (dims, log scale)\"\n");
  plot_bprintf(&b, "set logscale y\nset yrange [1:%d]\nset key outside right top\n", D * 2);
  plot_bprintf(&b, "set xrange [%d:%d]\n", layers[0] - 1, layers[nl - 1] + 1);
  plot_bprintf(&b, "plot 'd_eff_layers.dat' using 1:2:3:4 with yerrorlines ls 1 title \"keys\", \\\n"
                   "  '' using 1:5:6:7 with yerrorlines ls 2 title \"values\", \\\n"
                   "  %d with lines ls 8 dt 2 lw 2 title \"D = %d\"\n", D, D);
  int rc = plot_render(x->figures, "d_eff_layers", b.s, x->gnuplot, x->made, e);
  plot_buf_free(&b);
  return rc;
}

/* Normalised eigenvalue spectra λ_i/Σλ of up to 4 sample heads: first, middle and last layer
 * (head 0) and the last layer's last head. */
static int spec_fig_spectra(exp_ctx *x, const int *layers, int nl, sq_err *e) {
  int want_layer[4] = {layers[0], layers[nl / 2], layers[nl - 1], layers[nl - 1]};
  int max_head = 0;
  for (int64_t i = 0; i < x->n_spectra; i++)
    if (x->spectra[i].layer == layers[nl - 1] && x->spectra[i].head > max_head) max_head = x->spectra[i].head;
  int want_head[4] = {0, 0, 0, max_head};
  const store_spectrum *pick[4];
  int n = 0;
  for (int k = 0; k < 4; k++) {
    const store_spectrum *found = NULL;
    for (int64_t i = 0; i < x->n_spectra && !found; i++)
      if (x->spectra[i].layer == want_layer[k] && x->spectra[i].head == want_head[k]) found = &x->spectra[i];
    if (!found) {
      for (int64_t i = 0; i < x->n_spectra && !found; i++)
        if (x->spectra[i].layer == want_layer[k]) found = &x->spectra[i];
    }
    int dup = 0;
    for (int j = 0; j < n; j++) dup |= pick[j] == found;
    if (found && !dup) pick[n++] = found;
  }
  FILE *f = plot_open_dat(x->figures, "spectra.dat", x->made, e);
  if (!f) return e->code;
  for (int k = 0; k < n; k++) {
    fprintf(f, "# layer %d head %d: index  lambda_k/sum  lambda_v/sum\n", pick[k]->layer, pick[k]->head);
    double sk = 0, sv = 0;
    for (int i = 0; i < pick[k]->head_dim; i++) { sk += pick[k]->eigval[0][i]; sv += pick[k]->eigval[1][i]; }
    for (int i = 0; i < pick[k]->head_dim; i++) {
      double a = sk > 0 ? pick[k]->eigval[0][i] / sk : 0, c = sv > 0 ? pick[k]->eigval[1][i] / sv : 0;
      /* zeros are printed as NaN so the log axis skips them */
      fprintf(f, "%d %.6e %.6e\n", i + 1, a > 0 ? a : NAN, c > 0 ? c : NAN);
    }
    fputs("\n\n", f);
  }
  fclose(f);
  plot_buf b = {0};
  plot_bprintf(&b, "set multiplot layout 1,2 title \"Eigenvalue spectra of sample heads%s%s\"\n",
               x->model_id && x->model_id[0] ? ", " : "", x->model_id ? x->model_id : "");
  plot_bprintf(&b, "set logscale y\nset format y \"10^{%%L}\"\nset xlabel \"eigen-index i\"\n");
  plot_bprintf(&b, "set ylabel \"λ_i / Σλ (log scale)\"\nset key top right\nset xrange [0:%d]\n",
               pick[0]->head_dim + 1);
  for (int s = 0; s < 2; s++) {
    plot_bprintf(&b, "set title \"%s\"\nplot \\\n", s ? "values" : "keys");
    for (int k = 0; k < n; k++)
      plot_bprintf(&b, "%s  'spectra.dat' index %d using 1:%d with lines ls %d title \"L%d H%d\"", k ? ", \\\n" : "", k,
                   s + 2, k + 1, pick[k]->layer, pick[k]->head);
    plot_bprintf(&b, "\n");
  }
  plot_bprintf(&b, "unset multiplot\n");
  int rc = plot_render(x->figures, "spectra", b.s, x->gnuplot, x->made, e);
  plot_buf_free(&b);
  return rc;
}

int exp_spectrum(exp_ctx *x, sq_err *e) {
  if (x->n_spectra == 0) return SQ_OK;
  int layers[1024], nl = spec_layers(x, layers, 1024);
  int rc = spec_deff_table(x, layers, nl, e);
  if (!rc) rc = spec_fig_layers(x, layers, nl, e);
  if (!rc) rc = spec_fig_spectra(x, layers, nl, e);
  return rc;
}
