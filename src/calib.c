/* calib: the spectrum of one (layer, KV head)'s keys or values (methods.md §1). */
#include "calib.h"

#include <gsl/gsl_eigen.h>
#include <gsl/gsl_matrix.h>
#include <gsl/gsl_vector.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Row t of x as doubles, divided by (|x| + 1e-8) when normalize. */
static void load_row(const float *xt, int D, int normalize, double *row) {
  double norm2 = 0.0;
  for (int i = 0; i < D; i++) {
    row[i] = xt[i];
    norm2 += row[i] * row[i];
  }
  if (normalize) {
    double inv = 1.0 / (sqrt(norm2) + 1e-8);
    for (int i = 0; i < D; i++) row[i] *= inv;
  }
}

#define CALIB_BLOCK 4 /* rows per update: C is read and written once per block, not per row */

void calib_moment(const float *x, int64_t n, int64_t stride, int D, int normalize, double *C) {
  memset(C, 0, sizeof(double) * (size_t)D * (size_t)D);
  double *rows = sq_xcalloc((size_t)CALIB_BLOCK * (size_t)D, sizeof(double));
  for (int64_t t0 = 0; t0 < n; t0 += CALIB_BLOCK) {
    int nb = n - t0 < CALIB_BLOCK ? (int)(n - t0) : CALIB_BLOCK;
    for (int k = 0; k < CALIB_BLOCK; k++) /* a short last block is padded with zero rows */
      if (k < nb) load_row(x + (t0 + k) * stride, D, normalize, rows + (size_t)k * D);
      else memset(rows + (size_t)k * D, 0, sizeof(double) * (size_t)D);
    const double *r0 = rows, *r1 = rows + D, *r2 = rows + 2 * D, *r3 = rows + 3 * D;
    /* upper triangle only; mirrored below (half the work, and C stays exactly symmetric) */
    for (int i = 0; i < D; i++) {
      double a0 = r0[i], a1 = r1[i], a2 = r2[i], a3 = r3[i];
      double *Ci = C + (size_t)i * D;
      for (int j = i; j < D; j++) Ci[j] += a0 * r0[j] + a1 * r1[j] + a2 * r2[j] + a3 * r3[j];
    }
  }
  double inv_n = n > 0 ? 1.0 / (double)n : 0.0;
  for (int i = 0; i < D; i++)
    for (int j = i; j < D; j++) {
      double v = C[(size_t)i * D + j] * inv_n;
      C[(size_t)i * D + j] = v;
      C[(size_t)j * D + i] = v;
    }
  free(rows);
}

void calib_fix_signs(float *basis, int D) {
  for (int r = 0; r < D; r++) {
    float *v = basis + (size_t)r * D;
    int best = 0; /* first index wins ties of |.| */
    for (int i = 1; i < D; i++)
      if (fabsf(v[i]) > fabsf(v[best])) best = i;
    if (v[best] < 0.0f)
      for (int i = 0; i < D; i++) v[i] = -v[i];
  }
}

int calib_eigh(const double *C, int D, double *eigval, double *evec_rows, sq_err *e) {
  gsl_matrix *A = gsl_matrix_alloc((size_t)D, (size_t)D);
  gsl_matrix *V = gsl_matrix_alloc((size_t)D, (size_t)D);
  gsl_vector *w = gsl_vector_alloc((size_t)D);
  gsl_eigen_symmv_workspace *ws = gsl_eigen_symmv_alloc((size_t)D);
  int st = SQ_OK;
  if (!A || !V || !w || !ws) {
    st = sq_fail(e, SQ_EFAIL, "calibration: out of memory for a %dx%d eigendecomposition", D, D);
  } else {
    memcpy(A->data, C, sizeof(double) * (size_t)D * D); /* gsl_matrix_alloc: tda == D */
    int gs = gsl_eigen_symmv(A, w, V, ws);
    if (gs != 0) {
      st = sq_fail(e, SQ_EFAIL, "calibration: eigendecomposition failed (GSL status %d)", gs);
    } else {
      for (int i = 0; i < D; i++) { /* GSL: column i of V = eigenvector i; ours: row i */
        eigval[i] = gsl_vector_get(w, (size_t)i);
        for (int j = 0; j < D; j++) evec_rows[(size_t)i * D + j] = gsl_matrix_get(V, (size_t)j, (size_t)i);
      }
    }
  }
  if (A) gsl_matrix_free(A);
  if (V) gsl_matrix_free(V);
  if (w) gsl_vector_free(w);
  if (ws) gsl_eigen_symmv_free(ws);
  return st;
}

/* Python's round() (halves to even), as the published engine rounds PR. */
static double round_half_even(double x) {
  double r = round(x);
  if (fabs(x - trunc(x)) == 0.5) r = 2.0 * round(x / 2.0);
  return r;
}

static void calib_summaries(calib_head *c) {
  int D = c->D;
  double s = 0.0, s2 = 0.0;
  for (int i = 0; i < D; i++) {
    s += c->eigval[i];
    s2 += c->eigval[i] * c->eigval[i];
  }
  c->pr = s2 < 1e-12 ? 1.0 : s * s / s2;
  double r = round_half_even(c->pr);
  int d = r < 2.0 ? 2 : r > (double)(D - 2) ? D - 2 : (int)r;
  c->pr_int = d;
  double k = c->eigval[d - 1] / fmax(c->eigval[d], 1e-10);
  c->kappa = k < 1e6 ? k : 1e6;
}

/* GSL's gsl_eigen_symmv_sort(GSL_EIGEN_SORT_VAL_DESC), written out: a selection sort (strict >,
 * so the first of equal values is taken) swapping whole rows, so that calib_from_moment orders
 * tied eigenvalues exactly as it did when it called GSL's sort. */
static void sort_desc(double *l, double *V, int D) {
  for (int i = 0; i < D - 1; i++) {
    int k = i;
    for (int j = i + 1; j < D; j++)
      if (l[j] > l[k]) k = j;
    if (k == i) continue;
    double t = l[i];
    l[i] = l[k], l[k] = t;
    for (int c = 0; c < D; c++) {
      double v = V[(size_t)i * D + c];
      V[(size_t)i * D + c] = V[(size_t)k * D + c], V[(size_t)k * D + c] = v;
    }
  }
}

int calib_from_eig(const double *eigval_any_order, const double *evec_rows, int D, int64_t n,
                   calib_head *out, sq_err *e) {
  memset(out, 0, sizeof *out);
  if (D < 4)
    return sq_fail(e, SQ_EINPUT, "calibration: head_dim %d is too small (need >= 4: d_eff is clamped to [2, D-2])", D);
  for (size_t i = 0; i < (size_t)D * D; i++)
    if (!isfinite(evec_rows[i]) || (i < (size_t)D && !isfinite(eigval_any_order[i])))
      return sq_fail(e, SQ_EINPUT, "calibration: eigendecomposition has a non-finite entry (row %zu, column %zu)",
                     i / (size_t)D, i % (size_t)D);
  double *l = sq_xmalloc(sizeof(double) * (size_t)D);
  double *V = sq_xmalloc(sizeof(double) * (size_t)D * D);
  memcpy(l, eigval_any_order, sizeof(double) * (size_t)D);
  memcpy(V, evec_rows, sizeof(double) * (size_t)D * D);
  sort_desc(l, V, D);
  out->D = D;
  out->n = n;
  out->eigval = sq_xmalloc(sizeof(double) * (size_t)D);
  out->basis = sq_xmalloc(sizeof(float) * (size_t)D * D);
  for (int i = 0; i < D; i++) {
    out->eigval[i] = l[i] > 0.0 ? l[i] : 0.0; /* round-off makes tiny negatives; C is PSD */
    for (int j = 0; j < D; j++) out->basis[(size_t)i * D + j] = (float)V[(size_t)i * D + j];
  }
  free(l);
  free(V);
  calib_fix_signs(out->basis, D);
  calib_summaries(out);
  return SQ_OK;
}

int calib_from_moment(const double *C, int D, int64_t n, calib_head *out, sq_err *e) {
  memset(out, 0, sizeof *out);
  if (D < 4)
    return sq_fail(e, SQ_EINPUT, "calibration: head_dim %d is too small (need >= 4: d_eff is clamped to [2, D-2])", D);
  for (size_t i = 0; i < (size_t)D * D; i++)
    if (!isfinite(C[i]))
      return sq_fail(e, SQ_EINPUT, "calibration: second moment has a non-finite entry at (%zu, %zu)",
                     i / (size_t)D, i % (size_t)D);
  double *l = sq_xmalloc(sizeof(double) * (size_t)D);
  double *V = sq_xmalloc(sizeof(double) * (size_t)D * D);
  int st = calib_eigh(C, D, l, V, e);
  if (st == SQ_OK) st = calib_from_eig(l, V, D, n, out, e);
  free(l);
  free(V);
  return st;
}

int calib_compute(const float *x, int64_t n, int64_t stride, int D, int normalize, calib_head *out,
                  sq_err *e) {
  memset(out, 0, sizeof *out);
  if (n < 1) return sq_fail(e, SQ_EINPUT, "calibration: no calibration rows");
  if (D < 4) return sq_fail(e, SQ_EINPUT, "calibration: head_dim %d is too small (need >= 4)", D);
  double *C = sq_xmalloc(sizeof(double) * (size_t)D * D);
  calib_moment(x, n, stride, D, normalize, C);
  int st = calib_from_moment(C, D, n, out, e);
  free(C);
  return st;
}

int calib_deff(const calib_head *c, double tau) {
  int D = c->D;
  double total = 0.0;
  for (int i = 0; i < D; i++) total += c->eigval[i];
  if (total <= 1e-12) return 2;
  int count = 0;
  double cum = 0.0;
  for (int i = 0; i < D; i++) {
    cum += c->eigval[i];
    if (cum / total < tau) count++;
  }
  int d = count + 1;
  return d < 2 ? 2 : d > D - 2 ? D - 2 : d;
}

void calib_head_free(calib_head *c) {
  if (!c) return;
  free(c->eigval);
  free(c->basis);
  c->eigval = NULL;
  c->basis = NULL;
}
