/* Reports from a fabricated store: the aggregates in tables/<name>.csv are checked against numbers
 * worked out here by hand (mean, sample std, worst head, 5th percentile by sorting, ratios). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report.h"
#include "store.h"
#include "util/tu_tmp.h"

static char dir[300];

static void fab_row(store_row *r, const char *arm, const char *key, int layer, int head, double attn, double bk,
                    double bv) {
  store_row_init(r);
  snprintf(r->arm, sizeof r->arm, "%s", arm);
  snprintf(r->key, sizeof r->key, "%s", key);
  snprintf(r->backend, sizeof r->backend, "cpu");
  r->layer = layer;
  r->head = head;
  r->head_dim = 64;
  r->total_bits = 3;
  if (!strcmp(arm, "sq")) {
    r->noise_bits = -1;
    r->d_eff_variance = 0.9;
    r->use_water_fill = 1;
    r->use_qjl = 0;
  } else {
    r->tq_variant = r->tq_rotation = r->tq_codebook = r->tq_shared_rotation = 0;
  }
  r->m.attn_cos = attn;
  r->m.randq_cos = attn - 0.01;
  r->m.probs_cos = attn - 0.02;
  r->m.k_cos = 0.9;
  r->m.v_cos = 0.8;
  r->m.k_rel_mse = r->m.v_rel_mse = 0.1;
  r->m.logit_bias = 0;
  r->m.logit_slope = 1;
  r->m.topk_recall = 0.5;
  r->m.n_attn = r->m.n_randq = r->m.n_probs = r->m.n_pairs = 10;
  r->bits_honest_k = bk;
  r->bits_honest_v = bv;
  r->bits_seed_k = bk + 32; /* seed accounting charges more on keys */
  r->bits_seed_v = bv;
  r->bits_paper_k = bk + 16;
  r->bits_paper_v = bv;
  r->ratio_honest = 2048.0 / (bk + bv);
}

/* sq: 2 layers x 3 heads with these cosines and per-head bits; tq: constant. */
static const double sq_attn[6] = {0.91, 0.95, 0.80, 0.99, 0.93, 0.97};
static const double sq_bits_k[6] = {200, 210, 220, 230, 240, 250};
static const int layer_of[6] = {2, 2, 2, 5, 5, 5}, head_of[6] = {0, 1, 2, 0, 1, 2};

static void build_store(void) {
  cr_assert_not_null(tu_mkdtemp(dir, sizeof dir, "report"));
  store_identity id;
  memset(&id, 0, sizeof id);
  snprintf(id.config_hash, sizeof id.config_hash, "cafe");
  snprintf(id.dump_fp, sizeof id.dump_fp, "beef");
  id.config_text = "";
  id.dump_path = "x.h5";
  id.model_id = "fabricated";
  id.experiments = "grid,spectrum";
  store *s;
  sq_err e = {0};
  cr_assert_eq(store_open(&s, dir, &id, 0, &e), SQ_OK, "%s", e.msg);
  /* rows in a scrambled order: the report must not depend on it */
  static const int order[6] = {4, 1, 5, 0, 3, 2};
  for (int k = 0; k < 6; k++) {
    int i = order[k];
    store_row r;
    fab_row(&r, "sq", "sq:b=3,nb=none,vnb=none,tau=0.90,wf=1,qjl=0", layer_of[i], head_of[i], sq_attn[i], sq_bits_k[i],
            192);
    cr_assert_eq(store_append_row(s, &r, &e), SQ_OK);
    fab_row(&r, "tq", "tq:b=3,prod,haar,beta,rot=head", layer_of[i], head_of[i], 0.9, 224, 208);
    cr_assert_eq(store_append_row(s, &r, &e), SQ_OK);
  }
  for (int i = 0; i < 6; i++) {
    store_spectrum sp;
    memset(&sp, 0, sizeof sp);
    sp.layer = layer_of[i];
    sp.head = head_of[i];
    sp.head_dim = 64;
    sp.n_tau = 1;
    sp.tau[0] = 0.9;
    sp.pr[0] = 3 + i;         /* keys: 3..8, mean 5.5 */
    sp.pr[1] = 40 + 2 * i;    /* values: 40..50, mean 45 */
    sp.pr_int[0] = 3 + i;
    sp.pr_int[1] = 40 + 2 * i;
    sp.kappa[0] = i + 1;      /* 1..6: median 3.5 */
    sp.kappa[1] = 1;
    sp.d_eff[0][0] = 10;
    sp.d_eff[1][0] = 50;
    for (int j = 0; j < 64; j++) sp.eigval[0][j] = sp.eigval[1][j] = 1.0 / (j + 1);
    cr_assert_eq(store_append_spectrum(s, &sp, &e), SQ_OK);
  }
  store_close(s);
}

static void remove_dir(void) {
  cr_expect_eq(tu_rmtree(dir), 0);
}

/* The CSV row whose first two fields are (f0, f1), split into fields. */
static int csv_row(const char *file, const char *f0, const char *f1, char fields[40][64]) {
  char path[600], line[4096];
  snprintf(path, sizeof path, "%s/tables/%s", dir, file);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "%s missing", path);
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) {
    int n = 0;
    char *p = line;
    while (n < 40) {
      size_t len = strcspn(p, ",\n");
      snprintf(fields[n++], 64, "%.*s", (int)len, p);
      if (p[len] != ',') break;
      p += len + 1;
    }
    found = !strcmp(fields[0], f0) && (!f1 || !strcmp(fields[1], f1));
  }
  fclose(f);
  return found;
}

static int col_index(const char *file, const char *name) {
  char path[600], line[4096];
  snprintf(path, sizeof path, "%s/tables/%s", dir, file);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  cr_assert_not_null(fgets(line, sizeof line, f));
  fclose(f);
  int i = 0;
  for (char *p = line;; i++) {
    size_t len = strcspn(p, ",\n");
    if (len == strlen(name) && !strncmp(p, name, len)) return i;
    if (p[len] != ',') break;
    p += len + 1;
  }
  cr_assert_fail("column '%s' not in %s", name, file);
  return -1;
}

static void expect_num(const char *file, char fields[40][64], const char *col, double want, double tol) {
  double got = atof(fields[col_index(file, col)]);
  cr_expect(fabs(got - want) <= tol, "%s '%s' = %s, want %.6f", file, col, fields[col_index(file, col)], want);
}

Test(report, stat_matches_obvious_sort) {
  double x[6];
  memcpy(x, sq_attn, sizeof x);
  rep_stat s;
  rep_stat_of(x, 6, &s);
  /* by hand: sorted 0.80 0.91 0.93 0.95 0.97 0.99; mean 5.55/6 */
  double mean = (0.80 + 0.91 + 0.93 + 0.95 + 0.97 + 0.99) / 6;
  double ss = 0;
  for (int i = 0; i < 6; i++) ss += (sq_attn[i] - mean) * (sq_attn[i] - mean);
  cr_expect(fabs(s.mean - mean) < 1e-15);
  cr_expect(fabs(s.std - sqrt(ss / 5)) < 1e-15);
  cr_expect_eq(s.min, 0.80);
  cr_expect_eq(s.argmin, 2);
  cr_expect_eq(s.max, 0.99);
  /* p5 at position 0.05*(6-1) = 0.25 between 0.80 and 0.91 */
  cr_expect(fabs(s.p5 - (0.80 + 0.25 * 0.11)) < 1e-15, "p5 %.17g", s.p5);
  /* NaN entries are skipped */
  double y[3] = {NAN, 2, 4};
  rep_stat_of(y, 3, &s);
  cr_expect_eq(s.n, 2);
  cr_expect_eq(s.mean, 3);
  cr_expect_eq(s.argmin, 1);
}

Test(report, summary_aggregates) {
  build_store();
  rep_outputs *made = calloc(1, sizeof *made);
  sq_err e = {0};
  FILE *devnull = fopen("/dev/null", "w");
  cr_assert_eq(report_dir(dir, devnull, made, &e), SQ_OK, "%s", e.msg);
  fclose(devnull);
  char f[40][64];
  const char *sum = "summary.csv";
  cr_assert(csv_row(sum, "sq", NULL, f), "no sq row");
  double mean = (0.80 + 0.91 + 0.93 + 0.95 + 0.97 + 0.99) / 6, ss = 0;
  for (int i = 0; i < 6; i++) ss += (sq_attn[i] - mean) * (sq_attn[i] - mean);
  expect_num(sum, f, "attn cos", mean, 5e-5);
  expect_num(sum, f, "attn cos std", sqrt(ss / 5), 5e-5);
  expect_num(sum, f, "worst head", 0.80, 5e-5);
  cr_expect_str_eq(f[col_index(sum, "worst at")], "L2/H2");
  expect_num(sum, f, "p5 attn", 0.8275, 5e-5);
  /* honest: 2*16*64 / mean(bits_k + bits_v) = 2048 / (225 + 192) */
  expect_num(sum, f, "ratio honest", 2048.0 / 417, 5e-3);
  /* seed, first head = layer 2 head 0: 2048 / (200 + 32 + 192); averaged: 2048 / (257 + 192) */
  expect_num(sum, f, "ratio seed (1st head)", 2048.0 / 424, 5e-3);
  expect_num(sum, f, "ratio seed (avg)", 2048.0 / 449, 5e-3);
  expect_num(sum, f, "ratio paper", 2048.0 / 433, 5e-3);
  expect_num(sum, f, "randq cos", mean - 0.01, 5e-5);
  expect_num(sum, f, "K bits/tok", 225, 0.05);
  expect_num(sum, f, "rows", 6, 0);
  cr_assert(csv_row(sum, "tq", NULL, f), "no tq row");
  expect_num(sum, f, "attn cos std", 0, 5e-5);
  expect_num(sum, f, "ratio honest", 2048.0 / 432, 5e-3);

  /* per layer: layer 2 of sq has 0.91, 0.95, 0.80 */
  const char *pl = "per_layer.csv";
  cr_assert(csv_row(pl, "2", "sq", f));
  expect_num(pl, f, "attn cos", (0.91 + 0.95 + 0.80) / 3, 5e-5);
  expect_num(pl, f, "worst head", 0.80, 5e-5);
  cr_assert(csv_row(pl, "5", "sq", f));
  expect_num(pl, f, "attn cos", (0.99 + 0.93 + 0.97) / 3, 5e-5);

  /* matched bits: tq and sq both at 3 bits */
  cr_assert(csv_row("main_comparison.csv", "3", "tq", f));
  cr_assert(csv_row("main_comparison.csv", "3", "sq", f));

  /* d_eff table, all layers: keys PR mean 5.5, kappa median 3.5, int mean/D = 5.5/64 */
  const char *de = "d_eff.csv";
  cr_assert(csv_row(de, "all", NULL, f));
  expect_num(de, f, "K PR d_eff", 5.5, 5e-3);
  expect_num(de, f, "K κ median", 3.5, 5e-3);
  expect_num(de, f, "K κ mean", 3.5, 5e-3);
  expect_num(de, f, "K d_eff/D", 5.5 / 64, 5e-4);
  expect_num(de, f, "V PR d_eff", 45, 5e-3);
  expect_num(de, f, "V/K (PR)", 45 / 5.5, 5e-3);
  cr_assert(csv_row(de, "2", NULL, f));
  expect_num(de, f, "K PR d_eff", 4, 5e-3); /* 3, 4, 5 */

  /* every table in three formats, booktabs in the LaTeX */
  static const char *const names[] = {"summary", "main_comparison", "per_layer", "d_eff", "kv_asymmetry"};
  for (int i = 0; i < 5; i++)
    for (int k = 0; k < 3; k++) {
      char path[600];
      snprintf(path, sizeof path, "%s/tables/%s.%s", dir, names[i], (const char *[]){"csv", "md", "tex"}[k]);
      cr_expect_eq(access(path, F_OK), 0, "%s missing", path);
    }
  char cmd[700];
  snprintf(cmd, sizeof cmd, "grep -q toprule %s/tables/summary.tex && grep -q bottomrule %s/tables/summary.tex", dir, dir);
  cr_expect_eq(system(cmd), 0);
  free(made);
  remove_dir();
}

Test(report, no_gnuplot_still_writes_tables) {
  build_store();
  char *old = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
  setenv("PATH", "/nonexistent", 1);
  rep_outputs *made = calloc(1, sizeof *made);
  sq_err e = {0};
  int rc = report_dir(dir, NULL, made, &e);
  if (old) setenv("PATH", old, 1);
  free(old);
  cr_assert_eq(rc, SQ_OK, "%s", e.msg);
  cr_expect_eq(made->gnuplot_missing, 1);
  char path[600];
  snprintf(path, sizeof path, "%s/tables/summary.csv", dir);
  cr_expect_eq(access(path, F_OK), 0);
  snprintf(path, sizeof path, "%s/figures/pareto.gp", dir);
  cr_expect_eq(access(path, F_OK), 0, "scripts are written for a later `make plots`");
  snprintf(path, sizeof path, "%s/figures/pareto.png", dir);
  cr_expect_neq(access(path, F_OK), 0);
  free(made);
  remove_dir();
}

Test(report, not_a_results_dir) {
  rep_outputs *made = calloc(1, sizeof *made);
  sq_err e = {0};
  cr_expect_eq(report_dir("/nonexistent/dir", NULL, made, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "run.json") != NULL, "%s", e.msg);
  free(made);
}
