/* report: aggregation and table writers (see report.h). */
#include "report.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "experiments.h"
#include "plot.h"

/* ---- statistics ---- */
static int rep_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void rep_stat_of(const double *x, int n, rep_stat *s) {
  memset(s, 0, sizeof *s);
  s->mean = s->std = s->min = s->max = s->p5 = NAN;
  s->argmin = -1;
  double *sorted = sq_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *sorted);
  double sum = 0;
  for (int i = 0; i < n; i++) {
    if (isnan(x[i])) continue;
    if (s->argmin < 0 || x[i] < s->min) { s->min = x[i]; s->argmin = i; }
    if (s->n == 0 || x[i] > s->max) s->max = x[i];
    sorted[s->n++] = x[i];
    sum += x[i];
  }
  if (s->n > 0) {
    s->mean = sum / s->n;
    double ss = 0;
    for (int i = 0; i < s->n; i++) ss += (sorted[i] - s->mean) * (sorted[i] - s->mean);
    s->std = s->n > 1 ? sqrt(ss / (s->n - 1)) : 0.0;
    qsort(sorted, (size_t)s->n, sizeof *sorted, rep_cmp_double);
    double pos = 0.05 * (s->n - 1);
    int lo = (int)floor(pos);
    int hi = lo + 1 < s->n ? lo + 1 : lo;
    s->p5 = sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
  }
  free(sorted);
}

/* ---- grid points ---- */
int rep_arm_rank(const char *arm) {
  static const char *const order[] = {"tq", "sq", "sq_paper_v1", "lowrank"};
  for (int i = 0; i < 4; i++)
    if (!strcmp(arm, order[i])) return i;
  return 4;
}

static int rep_cmp_row_ptr(const void *a, const void *b) {
  const store_row *x = *(const store_row *const *)a, *y = *(const store_row *const *)b;
  int c = rep_arm_rank(x->arm) - rep_arm_rank(y->arm);
  if (c) return c;
  if (x->total_bits != y->total_bits) return x->total_bits - y->total_bits;
  if (x->rank != y->rank) return x->rank - y->rank;
  c = strcmp(x->key, y->key);
  if (c) return c;
  if (x->layer != y->layer) return x->layer - y->layer;
  return x->head - y->head;
}

static double rep_mean_of(const store_row *const *g, int n, size_t offset) {
  double s = 0;
  int k = 0;
  for (int i = 0; i < n; i++) {
    double v = *(const double *)((const char *)g[i] + offset);
    if (!isnan(v)) { s += v; k++; }
  }
  return k ? s / k : NAN;
}

static void rep_point_of(const store_row *const *g, int n, rep_point *p) {
  memset(p, 0, sizeof *p);
  p->first = g[0]; /* g is sorted by (layer, head) inside a key */
  p->n = n;
  p->head_dim = g[0]->head_dim;
  double *x = sq_xmalloc((size_t)n * sizeof *x);
  for (int i = 0; i < n; i++) x[i] = g[i]->m.attn_cos;
  rep_stat_of(x, n, &p->attn);
  p->worst_layer = p->attn.argmin >= 0 ? g[p->attn.argmin]->layer : -1;
  p->worst_head = p->attn.argmin >= 0 ? g[p->attn.argmin]->head : -1;
  for (int i = 0; i < n; i++) x[i] = g[i]->m.randq_cos;
  rep_stat_of(x, n, &p->randq);
  for (int i = 0; i < n; i++) x[i] = g[i]->m.probs_cos;
  rep_stat_of(x, n, &p->probs);
  free(x);
#define REP_MEAN(field) rep_mean_of(g, n, offsetof(store_row, field))
  p->k_cos = REP_MEAN(m.k_cos);
  p->v_cos = REP_MEAN(m.v_cos);
  p->k_rel_mse = REP_MEAN(m.k_rel_mse);
  p->v_rel_mse = REP_MEAN(m.v_rel_mse);
  p->logit_bias = REP_MEAN(m.logit_bias);
  p->logit_slope = REP_MEAN(m.logit_slope);
  p->topk = REP_MEAN(m.topk_recall);
  p->bits_honest_k = REP_MEAN(bits_honest_k);
  p->bits_honest_v = REP_MEAN(bits_honest_v);
  double fp16 = 2.0 * 16.0 * p->head_dim;
  p->ratio_honest = fp16 / (p->bits_honest_k + p->bits_honest_v);
  p->ratio_seed_avg = fp16 / (REP_MEAN(bits_seed_k) + REP_MEAN(bits_seed_v));
  p->ratio_paper = fp16 / (REP_MEAN(bits_paper_k) + REP_MEAN(bits_paper_v));
  p->ratio_seed_first = fp16 / (g[0]->bits_seed_k + g[0]->bits_seed_v);
#undef REP_MEAN
  double dk = 0, dv = 0;
  for (int i = 0; i < n; i++) { dk += g[i]->d_eff_k; dv += g[i]->d_eff_v; }
  p->d_eff_k = dk / n;
  p->d_eff_v = dv / n;
}

int rep_points(const store_row *rows, int64_t n, int layer, rep_point **pts, int *np) {
  const store_row **sel = sq_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *sel);
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++)
    if (layer < 0 || rows[i].layer == layer) sel[m++] = &rows[i];
  qsort(sel, (size_t)m, sizeof *sel, rep_cmp_row_ptr);
  rep_point *out = sq_xmalloc((size_t)(m > 0 ? m : 1) * sizeof *out);
  int k = 0;
  for (int64_t i = 0; i < m;) {
    int64_t j = i;
    while (j < m && !strcmp(sel[j]->key, sel[i]->key)) j++;
    rep_point_of(sel + i, (int)(j - i), &out[k++]);
    i = j;
  }
  free(sel);
  *pts = out;
  *np = k;
  return SQ_OK;
}

void rep_label(const store_row *r, char *buf, size_t n) {
  static const char *const var[] = {"prod", "mse"}, *const rot[] = {"haar", "hadamard"},
                           *const cbk[] = {"beta", "gaussian"};
  char nb[16], vnb[16];
  if (!strcmp(r->arm, "tq")) {
    snprintf(buf, n, "%s %s %s%s", r->tq_variant >= 0 ? var[r->tq_variant & 1] : "?",
             r->tq_rotation >= 0 ? rot[r->tq_rotation & 1] : "?",
             r->tq_codebook >= 0 ? cbk[r->tq_codebook & 1] : "?", r->tq_shared_rotation == 1 ? " shared" : "");
  } else if (!strcmp(r->arm, "sq")) {
    if (r->noise_bits < 0) snprintf(nb, sizeof nb, "none");
    else snprintf(nb, sizeof nb, "%d", r->noise_bits);
    vnb[0] = '\0'; /* value_noise_bits shown only when it does not follow noise_bits */
    if (r->value_noise_bits >= 0) snprintf(vnb, sizeof vnb, " vnb=%d", r->value_noise_bits);
    snprintf(buf, n, "nb=%s%s tau=%.2f wf=%d qjl=%d", nb, vnb, r->d_eff_variance, r->use_water_fill, r->use_qjl);
  } else if (!strcmp(r->arm, "lowrank")) {
    if (r->rank == 0) snprintf(buf, n, "r=d_eff(%.2f)", r->d_eff_variance);
    else snprintf(buf, n, "r=%d", r->rank);
  } else {
    snprintf(buf, n, "key basis");
  }
}

/* ---- tables ---- */
rep_table *rep_table_new(const char *name, const char *title) {
  rep_table *t = sq_xcalloc(1, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  snprintf(t->title, sizeof t->title, "%s", title);
  return t;
}

void rep_table_col(rep_table *t, const char *head, int kind) {
  if (t->n_cols >= 32) return;
  snprintf(t->head[t->n_cols], sizeof t->head[0], "%s", head);
  t->kind[t->n_cols++] = kind;
}

int rep_table_row(rep_table *t) {
  if (t->n_rows == t->cap_rows) {
    t->cap_rows = t->cap_rows ? 2 * t->cap_rows : 32;
    void *nc = realloc(t->cell, (size_t)t->cap_rows * sizeof *t->cell);
    if (!nc) { fprintf(stderr, "out of memory growing a table\n"); abort(); }
    t->cell = nc;
  }
  memset(t->cell[t->n_rows], 0, sizeof t->cell[0]);
  return t->n_rows++;
}

void rep_table_set(rep_table *t, int row, int col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->cell[row][col][0], sizeof t->cell[0][0][0], fmt, ap);
  va_end(ap);
}

void rep_table_num(rep_table *t, int row, int col, const char *fmt, double v) {
  if (!isfinite(v)) snprintf(t->cell[row][col][0], sizeof t->cell[0][0][0], "-");
  else snprintf(t->cell[row][col][0], sizeof t->cell[0][0][0], fmt, v);
}

void rep_table_pm(rep_table *t, int row, int col, const char *fmt, double mean, double std) {
  rep_table_num(t, row, col, fmt, mean);
  if (isfinite(mean)) {
    if (!isfinite(std)) snprintf(t->cell[row][col][1], sizeof t->cell[0][0][1], "-");
    else snprintf(t->cell[row][col][1], sizeof t->cell[0][0][1], fmt, std);
  }
}

void rep_table_free(rep_table *t) {
  if (!t) return;
  free(t->cell);
  free(t);
}

void rep_outputs_add(rep_outputs *made, const char *path) {
  if (!made || made->n >= (int)(sizeof made->path / sizeof made->path[0])) return;
  snprintf(made->path[made->n++], sizeof made->path[0], "%s", path);
}

void rep_outputs_warn(rep_outputs *made, const char *fmt, ...) {
  if (!made || made->n_warn >= (int)(sizeof made->warn / sizeof made->warn[0])) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(made->warn[made->n_warn++], sizeof made->warn[0], fmt, ap);
  va_end(ap);
}

static void rep_csv_field(FILE *f, const char *s) {
  if (!strpbrk(s, ",\"\n")) { fputs(s, f); return; }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

static void rep_write_csv(const rep_table *t, FILE *f) {
  for (int c = 0; c < t->n_cols; c++) {
    if (c) fputc(',', f);
    rep_csv_field(f, t->head[c]);
    if (t->kind[c] == REP_PM) { fputc(',', f); fputs(t->head[c], f); fputs(" std", f); }
  }
  fputc('\n', f);
  for (int r = 0; r < t->n_rows; r++) {
    for (int c = 0; c < t->n_cols; c++) {
      if (c) fputc(',', f);
      const char *v = t->cell[r][c][0];
      rep_csv_field(f, strcmp(v, "-") ? v : "");
      if (t->kind[c] == REP_PM) { fputc(',', f); rep_csv_field(f, strcmp(t->cell[r][c][1], "-") ? t->cell[r][c][1] : ""); }
    }
    fputc('\n', f);
  }
}

/* "a ± b" for a REP_PM cell, else the value. */
static void rep_cell_text(const rep_table *t, int r, int c, char *buf, size_t n, const char *pm) {
  if (t->kind[c] == REP_PM && t->cell[r][c][1][0])
    snprintf(buf, n, "%s%s%s", t->cell[r][c][0], pm, t->cell[r][c][1]);
  else
    snprintf(buf, n, "%s", t->cell[r][c][0]);
}

static void rep_write_md(const rep_table *t, FILE *f) {
  fprintf(f, "**%s**\n\n|", t->title);
  for (int c = 0; c < t->n_cols; c++) fprintf(f, " %s |", t->head[c]);
  fputs("\n|", f);
  for (int c = 0; c < t->n_cols; c++) fputs(t->kind[c] == REP_TEXT ? "---|" : "---:|", f);
  fputc('\n', f);
  char buf[128];
  for (int r = 0; r < t->n_rows; r++) {
    fputc('|', f);
    for (int c = 0; c < t->n_cols; c++) {
      rep_cell_text(t, r, c, buf, sizeof buf, " ± ");
      fprintf(f, " %s |", buf);
    }
    fputc('\n', f);
  }
  if (t->note[0]) fprintf(f, "\n%s\n", t->note);
}

static void rep_tex_escape(FILE *f, const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (strchr("_%&#$", ch)) { fputc('\\', f); fputc(ch, f); }
    else if (ch == '~') fputs("\\textasciitilde{}", f);
    else if (ch == '^') fputs("\\textasciicircum{}", f);
    else if (!strncmp(s, "τ", strlen("τ"))) { fputs("$\\tau$", f); s += strlen("τ") - 1; }
    else if (!strncmp(s, "κ", strlen("κ"))) { fputs("$\\kappa$", f); s += strlen("κ") - 1; }
    else if (!strncmp(s, "±", strlen("±"))) { fputs("$\\pm$", f); s += strlen("±") - 1; }
    else if (!strncmp(s, "×", strlen("×"))) { fputs("$\\times$", f); s += strlen("×") - 1; }
    else fputc(ch, f);
  }
}

static void rep_write_tex(const rep_table *t, FILE *f) {
  fprintf(f, "%% written by sqexp report; needs \\usepackage{booktabs,graphicx}\n");
  fprintf(f, "\\begin{table}[t]\n\\centering\n\\caption{");
  rep_tex_escape(f, t->title);
  if (t->note[0]) { fputc(' ', f); rep_tex_escape(f, t->note); }
  fprintf(f, "}\n\\label{tab:%s}\n\\resizebox{\\linewidth}{!}{%%\n\\begin{tabular}{", t->name);
  for (int c = 0; c < t->n_cols; c++) fputc(t->kind[c] == REP_TEXT ? 'l' : 'r', f);
  fputs("}\n\\toprule\n", f);
  for (int c = 0; c < t->n_cols; c++) {
    if (c) fputs(" & ", f);
    rep_tex_escape(f, t->head[c]);
  }
  fputs(" \\\\\n\\midrule\n", f);
  char buf[128];
  for (int r = 0; r < t->n_rows; r++) {
    for (int c = 0; c < t->n_cols; c++) {
      if (c) fputs(" & ", f);
      rep_cell_text(t, r, c, buf, sizeof buf, " ± ");
      rep_tex_escape(f, buf);
    }
    fputs(" \\\\\n", f);
  }
  fputs("\\bottomrule\n\\end{tabular}}\n\\end{table}\n", f);
}

int rep_table_write(const rep_table *t, const char *dir, rep_outputs *made, sq_err *e) {
  static const char *const ext[3] = {"csv", "md", "tex"};
  for (int k = 0; k < 3; k++) {
    char path[1200], tmp[1300];
    snprintf(path, sizeof path, "%s/%s.%s", dir, t->name, ext[k]);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return sq_fail(e, SQ_EFAIL, "cannot write %s: %s", tmp, strerror(errno));
    if (k == 0) rep_write_csv(t, f);
    else if (k == 1) rep_write_md(t, f);
    else rep_write_tex(t, f);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
      return sq_fail(e, SQ_EFAIL, "cannot write %s: %s", path, strerror(errno));
    rep_outputs_add(made, path);
  }
  return SQ_OK;
}

/* Display width of UTF-8 text (counts code points). */
static int rep_width(const char *s) {
  int w = 0;
  for (; *s; s++) w += ((unsigned char)*s & 0xC0) != 0x80;
  return w;
}

void rep_table_print(const rep_table *t, FILE *f) {
  int width[32] = {0};
  char buf[128];
  for (int c = 0; c < t->n_cols; c++) {
    width[c] = rep_width(t->head[c]);
    for (int r = 0; r < t->n_rows; r++) {
      rep_cell_text(t, r, c, buf, sizeof buf, "±");
      int w = rep_width(buf);
      if (w > width[c]) width[c] = w;
    }
  }
  fprintf(f, "%s\n", t->title);
  for (int c = 0; c < t->n_cols; c++) {
    int pad = width[c] - rep_width(t->head[c]);
    if (t->kind[c] == REP_TEXT) fprintf(f, "%s%s%*s", c ? "  " : "", t->head[c], pad, "");
    else fprintf(f, "%s%*s%s", c ? "  " : "", pad, "", t->head[c]);
  }
  fputc('\n', f);
  for (int r = 0; r < t->n_rows; r++) {
    for (int c = 0; c < t->n_cols; c++) {
      rep_cell_text(t, r, c, buf, sizeof buf, "±");
      int pad = width[c] - rep_width(buf);
      if (t->kind[c] == REP_TEXT) fprintf(f, "%s%s%*s", c ? "  " : "", buf, pad, "");
      else fprintf(f, "%s%*s%s", c ? "  " : "", pad, "", buf);
    }
    fputc('\n', f);
  }
  if (t->note[0]) fprintf(f, "%s\n", t->note);
}

/* ---- the driver ---- */
static int rep_mkdir(const char *path, sq_err *e) {
  if (mkdir(path, 0777) != 0 && errno != EEXIST)
    return sq_fail(e, SQ_EFAIL, "cannot create %s: %s", path, strerror(errno));
  return SQ_OK;
}

/* Is `name` in the comma-separated list (an empty list selects everything)? */
static int rep_listed(const char *list, const char *name) {
  if (!list || !*list) return 1;
  size_t n = strlen(name);
  for (const char *p = list; *p;) {
    size_t len = strcspn(p, ",");
    if (len == n && !strncmp(p, name, n)) return 1;
    p += len + (p[len] == ',');
  }
  return 0;
}

int report_dir(const char *dir, FILE *out, rep_outputs *made, sq_err *e) {
  json_t *run = NULL;
  if (store_read_run(dir, (void **)&run, e)) return e->code;
  exp_ctx x;
  memset(&x, 0, sizeof x);
  x.dir = dir;
  x.out = out;
  x.made = made;
  char model_id[256], experiments_list[512];
  const char *mid = json_string_value(json_object_get(run, "model_id"));
  const char *exps = json_string_value(json_object_get(run, "experiments"));
  snprintf(model_id, sizeof model_id, "%s", mid ? mid : "");
  snprintf(experiments_list, sizeof experiments_list, "%s", exps ? exps : "");
  json_decref(run);
  x.model_id = model_id;
  store_row *rows = NULL;
  store_spectrum *sp = NULL;
  int rc = store_read_rows(dir, &rows, &x.n_rows, e);
  if (!rc) rc = store_read_spectra(dir, &sp, &x.n_spectra, e);
  x.rows = rows;
  x.spectra = sp;
  snprintf(x.tables, sizeof x.tables, "%s/tables", dir);
  snprintf(x.figures, sizeof x.figures, "%s/figures", dir);
  if (!rc) rc = rep_mkdir(x.tables, e);
  if (!rc) rc = rep_mkdir(x.figures, e);
  char log[1300];
  snprintf(log, sizeof log, "%s/gnuplot.log", x.figures);
  unlink(log); /* gnuplot appends; keep only this report's messages */
  x.gnuplot = plot_available();
  if (!x.gnuplot && made) made->gnuplot_missing = 1;
  for (int i = 0; !rc && i < exp_count; i++)
    if (rep_listed(experiments_list, exp_table[i].name)) rc = exp_table[i].fn(&x, e);
  free(rows);
  free(sp);
  return rc;
}
