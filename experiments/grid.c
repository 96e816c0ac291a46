/* grid: the main sweep's tables and figures (docs/results.md lists every column). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "experiments.h"
#include "plot.h"

static void grid_bits_cell(rep_table *t, int row, int col, const store_row *r) {
  if (r->total_bits >= 0) rep_table_set(t, row, col, "%d", r->total_bits);
  else rep_table_set(t, row, col, "-");
}

static void grid_worst_cell(rep_table *t, int row, int col, const rep_point *p) {
  if (p->worst_layer >= 0) rep_table_set(t, row, col, "L%d/H%d", p->worst_layer, p->worst_head);
  else rep_table_set(t, row, col, "-");
}

/* (1) per-arm summary at each bit budget. */
static int grid_summary(exp_ctx *x, const rep_point *pts, int np, sq_err *e) {
  rep_table *t = rep_table_new("summary", "Per-arm summary at each bit budget (all layers and KV heads)");
  static const char *const cols[] = {"arm", "knobs", "bits", "K bits/tok", "V bits/tok", "ratio honest",
                                     "ratio seed (1st head)", "ratio seed (avg)", "ratio paper",
                                     "attn cos", "worst head", "worst at", "p5 attn", "randq cos",
                                     "probs cos", "k cos", "v cos", "logit bias", "logit slope",
                                     "top-8 recall", "rows"};
  for (int c = 0; c < 21; c++) rep_table_col(t, cols[c], c == 0 || c == 1 || c == 11 ? REP_TEXT : c == 9 ? REP_PM : REP_NUM);
  char label[160];
  for (int i = 0; i < np; i++) {
    const rep_point *p = &pts[i];
    int r = rep_table_row(t);
    rep_table_set(t, r, 0, "%s", p->first->arm);
    rep_label(p->first, label, sizeof label);
    rep_table_set(t, r, 1, "%s", label);
    grid_bits_cell(t, r, 2, p->first);
    rep_table_num(t, r, 3, "%.1f", p->bits_honest_k);
    rep_table_num(t, r, 4, "%.1f", p->bits_honest_v);
    rep_table_num(t, r, 5, "%.2f", p->ratio_honest);
    rep_table_num(t, r, 6, "%.2f", p->ratio_seed_first);
    rep_table_num(t, r, 7, "%.2f", p->ratio_seed_avg);
    rep_table_num(t, r, 8, "%.2f", p->ratio_paper);
    rep_table_pm(t, r, 9, "%.4f", p->attn.mean, p->attn.std);
    rep_table_num(t, r, 10, "%.4f", p->attn.min);
    grid_worst_cell(t, r, 11, p);
    rep_table_num(t, r, 12, "%.4f", p->attn.p5);
    rep_table_num(t, r, 13, "%.4f", p->randq.mean);
    rep_table_num(t, r, 14, "%.4f", p->probs.mean);
    rep_table_num(t, r, 15, "%.4f", p->k_cos);
    rep_table_num(t, r, 16, "%.4f", p->v_cos);
    rep_table_num(t, r, 17, "%.4f", p->logit_bias);
    rep_table_num(t, r, 18, "%.4f", p->logit_slope);
    rep_table_num(t, r, 19, "%.4f", p->topk);
    rep_table_set(t, r, 20, "%d", p->n);
  }
  snprintf(t->note, sizeof t->note,
           "Ratios are 2·16·D / (K bits + V bits) per token and KV head. honest: the packed layout's "
           "exact bits; seed: the published SpectralQuant engine's formula, for its first head only "
           "(as it prints) and over all heads (2·16·D over the mean bits: the whole cache's ratio, not a "
           "mean of per-head ratios); paper: each paper's own formula. attn cos: mean ± "
           "sample std over (layer, head); worst head and p5 over the same.");
  return exp_table_emit(x, t, 0, e);
}

/* The table printed at the end of `sqexp run`: the summary's most-read columns. */
static void grid_print_main(exp_ctx *x, const rep_point *pts, int np) {
  if (!x->out || np == 0) return;
  char title[512];
  snprintf(title, sizeof title, "Main summary (%s; %d grid points, all layers and KV heads)",
           x->model_id && x->model_id[0] ? x->model_id : "dump", np);
  rep_table *t = rep_table_new("main", title);
  static const char *const cols[] = {"arm", "knobs", "bits", "ratio honest", "ratio paper", "attn cos",
                                     "worst", "p5", "randq cos", "probs cos", "top-8"};
  for (int c = 0; c < 11; c++) rep_table_col(t, cols[c], c < 2 ? REP_TEXT : c == 5 ? REP_PM : REP_NUM);
  char label[160];
  for (int i = 0; i < np; i++) {
    const rep_point *p = &pts[i];
    int r = rep_table_row(t);
    rep_table_set(t, r, 0, "%s", p->first->arm);
    rep_label(p->first, label, sizeof label);
    rep_table_set(t, r, 1, "%s", label);
    grid_bits_cell(t, r, 2, p->first);
    rep_table_num(t, r, 3, "%.2f", p->ratio_honest);
    rep_table_num(t, r, 4, "%.2f", p->ratio_paper);
    rep_table_pm(t, r, 5, "%.4f", p->attn.mean, p->attn.std);
    rep_table_num(t, r, 6, "%.4f", p->attn.min);
    rep_table_num(t, r, 7, "%.4f", p->attn.p5);
    rep_table_num(t, r, 8, "%.4f", p->randq.mean);
    rep_table_num(t, r, 9, "%.4f", p->probs.mean);
    rep_table_num(t, r, 10, "%.4f", p->topk);
  }
  rep_table_print(t, x->out);
  rep_table_free(t);
}

static int grid_cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* Distinct total_bits over the given arms (mask of rep_arm_rank bits), ascending. */
static int grid_bit_budgets(const rep_point *pts, int np, int arm_mask, int *out) {
  int n = 0;
  for (int i = 0; i < np; i++) {
    int b = pts[i].first->total_bits;
    if (b < 0 || !(arm_mask & (1 << rep_arm_rank(pts[i].first->arm)))) continue;
    int seen = 0;
    for (int j = 0; j < n; j++) seen |= out[j] == b;
    if (!seen && n < 64) out[n++] = b;
  }
  qsort(out, (size_t)n, sizeof *out, grid_cmp_int);
  return n;
}

/* (3) main comparison at matched bits: TQ vs SQ vs sq_paper_v1, both protocols, both accountings. */
static int grid_main_comparison(exp_ctx *x, const rep_point *pts, int np, sq_err *e) {
  int budgets[64], nb = grid_bit_budgets(pts, np, 1 | 2 | 4, budgets);
  if (nb == 0) return SQ_OK;
  rep_table *t = rep_table_new("main_comparison",
                               "Main comparison at matched bits: attn (real queries, causal) and randq "
                               "(the SpectralQuant v1 protocol) side by side");
  static const char *const cols[] = {"bits", "arm", "knobs", "ratio (paper's accounting)",
                                     "ratio (seed, 1st head)", "ratio honest", "attn cos", "randq cos",
                                     "probs cos", "k cos", "v cos"};
  for (int c = 0; c < 11; c++) rep_table_col(t, cols[c], c == 1 || c == 2 ? REP_TEXT : c == 6 ? REP_PM : REP_NUM);
  char label[160];
  for (int b = 0; b < nb; b++)
    for (int i = 0; i < np; i++) {
      const rep_point *p = &pts[i];
      if (p->first->total_bits != budgets[b] || rep_arm_rank(p->first->arm) > 2) continue;
      int r = rep_table_row(t);
      rep_table_set(t, r, 0, "%d", budgets[b]);
      rep_table_set(t, r, 1, "%s", p->first->arm);
      rep_label(p->first, label, sizeof label);
      rep_table_set(t, r, 2, "%s", label);
      rep_table_num(t, r, 3, "%.2f", p->ratio_paper);
      rep_table_num(t, r, 4, "%.2f", p->ratio_seed_first);
      rep_table_num(t, r, 5, "%.2f", p->ratio_honest);
      rep_table_pm(t, r, 6, "%.4f", p->attn.mean, p->attn.std);
      rep_table_num(t, r, 7, "%.4f", p->randq.mean);
      rep_table_num(t, r, 8, "%.4f", p->probs.mean);
      rep_table_num(t, r, 9, "%.4f", p->k_cos);
      rep_table_num(t, r, 10, "%.4f", p->v_cos);
    }
  snprintf(t->note, sizeof t->note,
           "Paper's accounting: TurboQuant b·D+16 bits for K and for V (ignores the QJL norm); "
           "SpectralQuant the seed engine's formula; sq_paper_v1 its packed size. The honest ratio "
           "counts every stored bit. sq_paper_v1 is the arm the SpectralQuant v1 paper actually "
           "measured (normalised keys in the key basis, (b-1)-bit keys, b-bit values, no QJL).");
  return exp_table_emit(x, t, 0, e);
}

static int grid_is_default_tq(const store_row *r) {
  return r->tq_variant == 0 && r->tq_rotation == 0 && r->tq_codebook == 0 && r->tq_shared_rotation == 0;
}

/* Same sq knobs except use_water_fill? */
static int grid_sq_twin(const store_row *a, const store_row *b) {
  return a->total_bits == b->total_bits && a->noise_bits == b->noise_bits &&
         a->value_noise_bits == b->value_noise_bits && a->use_qjl == b->use_qjl &&
         fabs(a->d_eff_variance - b->d_eff_variance) < 1e-12;
}

/* (4) the three-way table: TQ, SQ without water-fill, SQ with it, under probs and attn. */
static int grid_three_way(exp_ctx *x, const rep_point *pts, int np, sq_err *e) {
  rep_table *t = rep_table_new("three_way", "Three-way comparison: TurboQuant, SpectralQuant without "
                                            "water-filling, SpectralQuant with it (probs and attn protocols)");
  static const char *const cols[] = {"bits", "sq knobs (besides wf)", "TQ ratio", "SQ ratio (no wf)",
                                     "SQ ratio (wf)", "TQ probs", "SQ probs (no wf)", "SQ probs (wf)",
                                     "TQ attn", "SQ attn (no wf)", "SQ attn (wf)"};
  for (int c = 0; c < 11; c++) rep_table_col(t, cols[c], c == 1 ? REP_TEXT : REP_NUM);
  for (int i = 0; i < np; i++) {
    const rep_point *off = &pts[i];
    if (strcmp(off->first->arm, "sq") || off->first->use_water_fill != 0) continue;
    const rep_point *on = NULL, *tq = NULL;
    for (int j = 0; j < np; j++) {
      const store_row *r = pts[j].first;
      if (!strcmp(r->arm, "sq") && r->use_water_fill == 1 && grid_sq_twin(r, off->first)) on = &pts[j];
      if (!strcmp(r->arm, "tq") && r->total_bits == off->first->total_bits &&
          (!tq || (grid_is_default_tq(r) && !grid_is_default_tq(tq->first))))
        tq = &pts[j];
    }
    if (!on) continue;
    int r = rep_table_row(t);
    char label[160], nb[16];
    if (off->first->noise_bits < 0) snprintf(nb, sizeof nb, "none");
    else snprintf(nb, sizeof nb, "%d", off->first->noise_bits);
    snprintf(label, sizeof label, "nb=%s tau=%.2f qjl=%d", nb, off->first->d_eff_variance, off->first->use_qjl);
    rep_table_set(t, r, 0, "%d", off->first->total_bits);
    rep_table_set(t, r, 1, "%s", label);
    rep_table_num(t, r, 2, "%.2f", tq ? tq->ratio_honest : NAN);
    rep_table_num(t, r, 3, "%.2f", off->ratio_honest);
    rep_table_num(t, r, 4, "%.2f", on->ratio_honest);
    rep_table_num(t, r, 5, "%.4f", tq ? tq->probs.mean : NAN);
    rep_table_num(t, r, 6, "%.4f", off->probs.mean);
    rep_table_num(t, r, 7, "%.4f", on->probs.mean);
    rep_table_num(t, r, 8, "%.4f", tq ? tq->attn.mean : NAN);
    rep_table_num(t, r, 9, "%.4f", off->attn.mean);
    rep_table_num(t, r, 10, "%.4f", on->attn.mean);
  }
  snprintf(t->note, sizeof t->note,
           "Ratios honest. TQ: the default TurboQuant point (prod, haar, beta, per-head rotation) at the "
           "same total_bits. Rows appear where the config has both use_water_fill = 0 and 1.");
  if (!t->n_rows) {
    rep_table_free(t);
    return SQ_OK;
  }
  return exp_table_emit(x, t, 0, e);
}

/* (5) per-layer breakdowns. */
static int grid_per_layer(exp_ctx *x, sq_err *e) {
  rep_table *t = rep_table_new("per_layer", "Per-layer breakdown (over the layer's KV heads)");
  static const char *const cols[] = {"layer", "arm", "knobs", "bits", "ratio honest", "attn cos",
                                     "worst head", "p5 attn", "randq cos", "probs cos", "k cos",
                                     "v cos", "d_eff K", "d_eff V"};
  for (int c = 0; c < 14; c++) rep_table_col(t, cols[c], c == 1 || c == 2 ? REP_TEXT : c == 5 ? REP_PM : REP_NUM);
  int layers[1024], nl = 0;
  for (int64_t i = 0; i < x->n_rows; i++) {
    int seen = 0;
    for (int j = 0; j < nl; j++) seen |= layers[j] == x->rows[i].layer;
    if (!seen && nl < 1024) layers[nl++] = x->rows[i].layer;
  }
  qsort(layers, (size_t)nl, sizeof *layers, grid_cmp_int);
  char label[160];
  for (int l = 0; l < nl; l++) {
    rep_point *pts;
    int np;
    rep_points(x->rows, x->n_rows, layers[l], &pts, &np);
    for (int i = 0; i < np; i++) {
      const rep_point *p = &pts[i];
      int r = rep_table_row(t);
      rep_table_set(t, r, 0, "%d", layers[l]);
      rep_table_set(t, r, 1, "%s", p->first->arm);
      rep_label(p->first, label, sizeof label);
      rep_table_set(t, r, 2, "%s", label);
      grid_bits_cell(t, r, 3, p->first);
      rep_table_num(t, r, 4, "%.2f", p->ratio_honest);
      rep_table_pm(t, r, 5, "%.4f", p->attn.mean, p->attn.std);
      rep_table_num(t, r, 6, "%.4f", p->attn.min);
      rep_table_num(t, r, 7, "%.4f", p->attn.p5);
      rep_table_num(t, r, 8, "%.4f", p->randq.mean);
      rep_table_num(t, r, 9, "%.4f", p->probs.mean);
      rep_table_num(t, r, 10, "%.4f", p->k_cos);
      rep_table_num(t, r, 11, "%.4f", p->v_cos);
      /* tq and sq_paper_v1 plans use no d_eff: a dash, not a 0 that reads like a measurement */
      int has_deff = !strcmp(p->first->arm, "sq") || !strcmp(p->first->arm, "lowrank");
      rep_table_num(t, r, 12, "%.2f", has_deff ? p->d_eff_k : NAN);
      rep_table_num(t, r, 13, "%.2f", has_deff ? p->d_eff_v : NAN);
    }
    free(pts);
  }
  return exp_table_emit(x, t, 0, e);
}

/* ---- figures ---- */
static const char *const grid_arm_title[] = {"TurboQuant", "SpectralQuant", "SQ paper v1", "low-rank", "other"};

static int grid_fig_pareto(exp_ctx *x, const rep_point *pts, int np, sq_err *e) {
  FILE *f = plot_open_dat(x->figures, "pareto.dat", x->made, e);
  if (!f) return e->code;
  int present[5] = {0};
  char label[160];
  for (int a = 0; a < 5; a++) {
    int any = 0;
    for (int i = 0; i < np; i++) {
      if (rep_arm_rank(pts[i].first->arm) != a || !isfinite(pts[i].attn.mean)) continue;
      if (!any) fprintf(f, "# arm %s: ratio_honest attn_cos_mean attn_cos_std total_bits knobs\n", pts[i].first->arm);
      rep_label(pts[i].first, label, sizeof label);
      fprintf(f, "%.6f %.8f %.8f %d \"%s\"\n", pts[i].ratio_honest, pts[i].attn.mean, pts[i].attn.std,
              pts[i].first->total_bits, label);
      any = 1;
    }
    if (!any) fprintf(f, "# arm %d: no points\nNaN NaN NaN 0 \"\"\n", a);
    fprintf(f, "\n\n");
    present[a] = any;
  }
  fclose(f);
  /* Frontier: points no other point beats on both ratio and cosine; walk by ratio descending. */
  int *ord = sq_xmalloc((size_t)(np > 0 ? np : 1) * sizeof *ord), n = 0;
  for (int i = 0; i < np; i++)
    if (isfinite(pts[i].attn.mean) && isfinite(pts[i].ratio_honest)) ord[n++] = i;
  for (int i = 1; i < n; i++) /* insertion sort by ratio descending, then cosine descending */
    for (int j = i; j > 0; j--) {
      const rep_point *a = &pts[ord[j - 1]], *b = &pts[ord[j]];
      if (a->ratio_honest > b->ratio_honest ||
          (a->ratio_honest == b->ratio_honest && a->attn.mean >= b->attn.mean)) break;
      int tmp = ord[j]; ord[j] = ord[j - 1]; ord[j - 1] = tmp;
    }
  f = plot_open_dat(x->figures, "pareto_frontier.dat", x->made, e);
  if (!f) { free(ord); return e->code; }
  fprintf(f, "# Pareto frontier (higher ratio and higher cosine are better): ratio_honest attn_cos_mean\n");
  double best = -INFINITY;
  for (int i = 0; i < n; i++)
    if (pts[ord[i]].attn.mean > best) {
      best = pts[ord[i]].attn.mean;
      fprintf(f, "%.6f %.8f\n", pts[ord[i]].ratio_honest, pts[ord[i]].attn.mean);
    }
  fclose(f);
  free(ord);
  plot_buf b = {0};
  plot_bprintf(&b, "set title \"Compression vs attention fidelity%s%s\"\n", x->model_id && x->model_id[0] ? ": " : "",
               x->model_id ? x->model_id : "");
  plot_bprintf(&b, "set xlabel \"compression ratio vs fp16 (honest bits, ×)\"\n");
  plot_bprintf(&b, "set ylabel \"attention-output cosine (mean over heads)\"\n");
  plot_bprintf(&b, "set key outside right top vertical\nset format y \"%%.3f\"\nset autoscale fix\nset offsets graph 0.05, graph 0.05, graph 0.05, graph 0.05\n");
  plot_bprintf(&b, "plot \\\n");
  int first = 1;
  for (int a = 0; a < 5; a++) {
    if (!present[a]) continue;
    plot_bprintf(&b, "%s  'pareto.dat' index %d using 1:2 with points ls %d title \"%s\"", first ? "" : ", \\\n", a,
                 a + 1, grid_arm_title[a]);
    first = 0;
  }
  plot_bprintf(&b, "%s  'pareto_frontier.dat' using 1:2 with linespoints ls 7 title \"frontier\"\n",
               first ? "" : ", \\\n");
  int rc = plot_render(x->figures, "pareto", b.s, x->gnuplot, x->made, e);
  plot_buf_free(&b);
  return rc;
}

/* Heatmap of attn cos over noise_bits x d_eff_variance, one panel per total_bits (sq only).
 * Other sq knobs are fixed at wf=1, qjl=0, vnb=follow where those exist, else averaged. */
static int grid_fig_heatmap(exp_ctx *x, const rep_point *pts, int np, sq_err *e) {
  int nbv[32], nnb = 0, budgets[64], nbud;
  double taus[32];
  int ntau = 0, pref_wf = 0, pref_qjl = 0, pref_vnb = 0;
  for (int i = 0; i < np; i++) {
    const store_row *r = pts[i].first;
    if (strcmp(r->arm, "sq")) continue;
    int seen = 0;
    for (int j = 0; j < nnb; j++) seen |= nbv[j] == r->noise_bits;
    if (!seen && nnb < 32) nbv[nnb++] = r->noise_bits;
    seen = 0;
    for (int j = 0; j < ntau; j++) seen |= fabs(taus[j] - r->d_eff_variance) < 1e-12;
    if (!seen && ntau < 32) taus[ntau++] = r->d_eff_variance;
    pref_wf |= r->use_water_fill == 1;
    pref_qjl |= r->use_qjl == 0;
    pref_vnb |= r->value_noise_bits < 0;
  }
  if (nnb < 2 && ntau < 2) return SQ_OK; /* nothing to map */
  qsort(nbv, (size_t)nnb, sizeof *nbv, grid_cmp_int); /* none (-1) first */
  for (int i = 1; i < ntau; i++)
    for (int j = i; j > 0 && taus[j] < taus[j - 1]; j--) { double t = taus[j]; taus[j] = taus[j - 1]; taus[j - 1] = t; }
  nbud = grid_bit_budgets(pts, np, 2, budgets);
  FILE *f = plot_open_dat(x->figures, "heatmap.dat", x->made, e);
  if (!f) return e->code;
  double lo = 1, hi = 0;
  for (int b = 0; b < nbud; b++) {
    fprintf(f, "# total_bits %d: noise_bits_index d_eff_variance_index attn_cos_mean (blank = absent)\n", budgets[b]);
    for (int xi = 0; xi < nnb; xi++) {
      for (int yi = 0; yi < ntau; yi++) {
        double s = 0;
        int k = 0;
        for (int i = 0; i < np; i++) {
          const store_row *r = pts[i].first;
          if (strcmp(r->arm, "sq") || r->total_bits != budgets[b] || r->noise_bits != nbv[xi] ||
              fabs(r->d_eff_variance - taus[yi]) > 1e-12 || !isfinite(pts[i].attn.mean))
            continue;
          if ((pref_wf && r->use_water_fill != 1) || (pref_qjl && r->use_qjl != 0) ||
              (pref_vnb && r->value_noise_bits >= 0))
            continue;
          s += pts[i].attn.mean;
          k++;
        }
        double v = k ? s / k : NAN;
        if (k) { lo = fmin(lo, v); hi = fmax(hi, v); }
        fprintf(f, "%d %d %s%.8f\n", xi, yi, k ? "" : "NaN #", k ? v : 0.0);
      }
      fputc('\n', f);
    }
    fputs("\n", f);
  }
  fclose(f);
  plot_buf b = {0};
  int cols = nbud < 2 ? nbud : 2, rows = (nbud + cols - 1) / cols;
  plot_bprintf(&b, "set multiplot layout %d,%d title \"SpectralQuant attention cosine over noise\\\\_bits × d\\\\_eff\\\\_variance "
                   "(wf=%s, qjl=%s)\"\n", rows, cols, pref_wf ? "1" : "any", pref_qjl ? "0" : "any");
  plot_bprintf(&b, "set style textbox opaque noborder margins 2,1\n");
  plot_bprintf(&b, "set palette defined (0 '#440154', 0.25 '#3b528b', 0.5 '#21918c', 0.75 '#5ec962', 1 '#fde725')\n");
  plot_bprintf(&b, "set cbrange [%.6f:%.6f]\nset format cb \"%%.3f\"\n", lo,
               hi > lo ? hi : lo + 1e-6);
  plot_bprintf(&b, "set xlabel \"noise\\\\_bits\"\nset ylabel \"d\\\\_eff\\\\_variance τ\"\nunset key\nunset grid\n");
  plot_bprintf(&b, "set xrange [-0.5:%d.5]\nset yrange [-0.5:%d.5]\n", nnb - 1, ntau - 1);
  plot_bprintf(&b, "set xtics (");
  for (int i = 0; i < nnb; i++) {
    if (nbv[i] < 0) plot_bprintf(&b, "%s\"none\" %d", i ? ", " : "", i);
    else plot_bprintf(&b, "%s\"%d\" %d", i ? ", " : "", nbv[i], i);
  }
  plot_bprintf(&b, ")\nset ytics (");
  for (int i = 0; i < ntau; i++) plot_bprintf(&b, "%s\"%.2f\" %d", i ? ", " : "", taus[i], i);
  plot_bprintf(&b, ")\n");
  /* boxxyerror cells (not `with image`, which needs at least two values on each axis); the
   * value labels get the largest font (PDF points) whose "0.9876" fits a cell of the 10 in wide page */
  double cell_in = (10.0 / cols - 2.2) / nnb, label_pt = fmin(11.0, fmax(5.0, 0.8 * cell_in * 72 / 3.4));
  plot_bprintf(&b, "label_font = sprintf(\",%%.1f\", %.1f * fscale)\n", label_pt);
  for (int k = 0; k < nbud; k++) {
    plot_bprintf(&b, "set title \"total\\\\_bits = %d\"\n", budgets[k]);
    plot_bprintf(&b, "plot 'heatmap.dat' index %d using 1:2:(0.5):(0.5):3 with boxxyerror fc palette fs solid 1.0 noborder, "
                     "'' index %d using 1:2:(sprintf(\"%%.4f\", $3)) with labels boxed font label_font\n",
                 k, k);
  }
  plot_bprintf(&b, "unset multiplot\n");
  int rc = plot_render(x->figures, "heatmap", b.s, x->gnuplot, x->made, e);
  plot_buf_free(&b);
  return rc;
}

/* Per-head attention cosine distributions, one box per grid point (best point per arm and
 * budget when there are more than 12). */
static int grid_fig_boxes(exp_ctx *x, const rep_point *pts, int np, sq_err *e) {
  int *pick = sq_xmalloc((size_t)(np > 0 ? np : 1) * sizeof *pick), n = 0;
  for (int i = 0; i < np; i++) {
    if (!isfinite(pts[i].attn.mean)) continue;
    if (np <= 12) { pick[n++] = i; continue; }
    int best = 1; /* keep only the best point of its (arm, bits) */
    for (int j = 0; j < np; j++)
      if (j != i && !strcmp(pts[j].first->arm, pts[i].first->arm) &&
          pts[j].first->total_bits == pts[i].first->total_bits && pts[j].first->rank == pts[i].first->rank &&
          (pts[j].attn.mean > pts[i].attn.mean || (pts[j].attn.mean == pts[i].attn.mean && j < i)))
        best = 0;
    if (best) pick[n++] = i;
  }
  if (n == 0) { free(pick); return SQ_OK; }
  FILE *f = plot_open_dat(x->figures, "boxes.dat", x->made, e);
  if (!f) { free(pick); return e->code; }
  char label[160], q[200];
  for (int k = 0; k < n; k++) {
    const store_row *first = pts[pick[k]].first;
    rep_label(first, label, sizeof label);
    fprintf(f, "# %s %s bits=%d: attn_cos of each (layer, head)\n", first->arm, label, first->total_bits);
    for (int64_t i = 0; i < x->n_rows; i++)
      if (!strcmp(x->rows[i].key, first->key) && isfinite(x->rows[i].m.attn_cos))
        fprintf(f, "%.8f\n", x->rows[i].m.attn_cos);
    fputs("\n\n", f);
  }
  fclose(f);
  plot_buf b = {0};
  plot_bprintf(&b, "set title \"Per-head attention cosine by arm and bit budget%s\"\n",
               np > 12 ? " (best point per arm and budget)" : "");
  plot_bprintf(&b, "set ylabel \"attention-output cosine per (layer, head)\"\nset xlabel \"\"\n");
  plot_bprintf(&b, "set style fill solid 0.35 border\nset style boxplot outliers pointtype 7\nset boxwidth 0.6\n");
  plot_bprintf(&b, "unset key\nset format y \"%%.3f\"\nset xrange [0.3:%d.7]\n", n);
  /* a string variable: `font sprintf(...)` is refused inside the preamble's do-for block */
  plot_bprintf(&b, "tick_font = sprintf(\",%%.1f\", %.1f * fscale)\nset xtics rotate by 30 right font tick_font\n",
               n > 8 ? 7.0 : 8.0);
  plot_bprintf(&b, "set rmargin 3\nset autoscale yfix\nset offsets 0, 0, graph 0.04, graph 0.04\nset xtics (");
  for (int k = 0; k < n; k++) {
    const store_row *first = pts[pick[k]].first;
    char tick[200];
    rep_label(first, label, sizeof label);
    if (!strcmp(first->arm, "lowrank")) snprintf(tick, sizeof tick, "lowrank %s", label);
    else if (!strcmp(first->arm, "sq")) {
      char nb[16];
      if (first->noise_bits < 0) nb[0] = '\0';
      else snprintf(nb, sizeof nb, " nb%d", first->noise_bits);
      snprintf(tick, sizeof tick, "sq %db%s τ%.2f%s%s", first->total_bits, nb, first->d_eff_variance,
               first->use_water_fill ? " wf" : "", first->use_qjl ? " qjl" : "");
    } else snprintf(tick, sizeof tick, "%s %db", first->arm, first->total_bits);
    plot_quote(tick, q, sizeof q);
    plot_bprintf(&b, "%s\"%s\" %d", k ? ", " : "", q, k + 1);
  }
  plot_bprintf(&b, ")\nplot \\\n");
  for (int k = 0; k < n; k++)
    plot_bprintf(&b, "%s  'boxes.dat' index %d using (%d):1 with boxplot ls %d", k ? ", \\\n" : "", k, k + 1,
                 plot_arm_style(pts[pick[k]].first->arm));
  plot_bprintf(&b, "\n");
  int rc = plot_render(x->figures, "boxes", b.s, x->gnuplot, x->made, e);
  plot_buf_free(&b);
  free(pick);
  return rc;
}

int exp_grid(exp_ctx *x, sq_err *e) {
  if (x->n_rows == 0) return SQ_OK;
  rep_point *pts;
  int np;
  rep_points(x->rows, x->n_rows, -1, &pts, &np);
  int rc = grid_summary(x, pts, np, e);
  if (!rc) rc = grid_main_comparison(x, pts, np, e);
  if (!rc) rc = grid_three_way(x, pts, np, e);
  if (!rc) rc = grid_per_layer(x, e);
  if (!rc) rc = grid_fig_pareto(x, pts, np, e);
  if (!rc) rc = grid_fig_heatmap(x, pts, np, e);
  if (!rc) rc = grid_fig_boxes(x, pts, np, e);
  if (!rc) grid_print_main(x, pts, np);
  free(pts);
  return rc;
}
