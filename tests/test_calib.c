/* Calibration (methods.md §1) on spectra known by construction: C = Q diag(l) Q^T with Q an
 * orthonormal basis built here from Givens rotations, and data X whose rows are sqrt(n l_i) q_i
 * (so X^T X / n = C exactly). PR, d_eff(tau) and kappa are worked out by hand in the comments. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"

#define D8 8

/* A fixed orthonormal basis: the identity rotated by a chain of Givens rotations (rows = vectors). */
static void givens_basis(double *Q, int D) {
  memset(Q, 0, sizeof(double) * D * D);
  for (int i = 0; i < D; i++) Q[i * D + i] = 1.0;
  for (int k = 0; k < 3 * D; k++) {
    int p = k % D, q = (k * 3 + 1) % D;
    if (p == q) continue;
    double th = 0.3 + 0.17 * k, c = cos(th), s = sin(th);
    for (int r = 0; r < D; r++) { /* rotate columns p and q of every row */
      double a = Q[r * D + p], b = Q[r * D + q];
      Q[r * D + p] = c * a - s * b;
      Q[r * D + q] = s * a + c * b;
    }
  }
}

/* The sign convention, written out: largest |.| positive, first index on ties. */
static int sign_of(const double *v, int D) {
  int best = 0;
  for (int i = 1; i < D; i++)
    if (fabs(v[i]) > fabs(v[best])) best = i;
  return v[best] < 0 ? -1 : 1;
}

static void moment_of(const double *Q, const double *l, int D, double *C) {
  for (int a = 0; a < D; a++)
    for (int b = 0; b < D; b++) {
      double s = 0;
      for (int i = 0; i < D; i++) s += l[i] * Q[i * D + a] * Q[i * D + b];
      C[a * D + b] = s;
    }
}

Test(calib, recovers_known_spectrum_and_basis) {
  double Q[D8 * D8], C[D8 * D8];
  double l[D8] = {8, 4, 2, 1, 0.5, 0.25, 0.125, 0.0625};
  givens_basis(Q, D8);
  moment_of(Q, l, D8, C);
  calib_head h;
  sq_err e = {0};
  cr_assert_eq(calib_from_moment(C, D8, 100, &h, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(h.D, D8);
  cr_expect_eq(h.n, 100);
  for (int i = 0; i < D8; i++) {
    cr_expect(fabs(h.eigval[i] - l[i]) < 1e-12, "eigval %d = %.15g, want %g", i, h.eigval[i], l[i]);
    int s = sign_of(Q + i * D8, D8);
    for (int j = 0; j < D8; j++)
      cr_expect(fabs(h.basis[i * D8 + j] - s * Q[i * D8 + j]) < 1e-6, "basis[%d][%d] = %g, want %g", i, j,
                h.basis[i * D8 + j], s * Q[i * D8 + j]);
  }
  /* PR = (sum l)^2 / sum l^2 = 15.9375^2 / (64+16+4+1+1/4+1/16+1/64+1/256) = 254.00390625 / 85.33203125 */
  cr_expect(fabs(h.pr - 254.00390625 / 85.33203125) < 1e-12, "pr %.15g", h.pr);
  cr_expect_eq(h.pr_int, 3); /* 2.9766 -> 3 */
  cr_expect(fabs(h.kappa - 2.0) < 1e-9, "kappa = l[2]/l[3] = 2, got %g", h.kappa);
  calib_head_free(&h);
}

Test(calib, from_data_rows_with_stride) {
  enum { D = 6, STRIDE = 9 };
  double Q[D * D], l[D] = {5, 3, 1, 0.5, 0.1, 0.0};
  givens_basis(Q, D);
  /* rows +-sqrt(D l_i) q_i, n = 2D: X^T X / n = sum_i 2 D l_i q_i q_i^T / 2D = C */
  int n = 2 * D;
  float *x = calloc((size_t)n * STRIDE, sizeof(float));
  for (int i = 0; i < D; i++)
    for (int j = 0; j < D; j++) {
      x[i * STRIDE + j] = (float)(sqrt(D * l[i]) * Q[i * D + j]);
      x[(D + i) * STRIDE + j] = -x[i * STRIDE + j];
      x[i * STRIDE + D] = 1e9f; /* junk between rows must be ignored */
    }
  calib_head h;
  sq_err e = {0};
  cr_assert_eq(calib_compute(x, n, STRIDE, D, 0, &h, &e), SQ_OK, "%s", e.msg);
  for (int i = 0; i < D; i++) cr_expect(fabs(h.eigval[i] - l[i]) < 1e-5, "eigval %d = %g", i, h.eigval[i]);
  cr_expect(h.eigval[D - 1] >= 0.0);
  for (int i = 0; i < 4; i++) {
    int s = sign_of(Q + i * D, D);
    for (int j = 0; j < D; j++) cr_expect(fabs(h.basis[i * D + j] - s * Q[i * D + j]) < 1e-4);
  }
  calib_head_free(&h);
  free(x);
}

Test(calib, moment_by_hand_and_normalisation) {
  /* rows (1,2,0,0) and (3,4,0,0): C = [[1+9, 2+12],[2+12, 4+16]]/2 = [[5,7],[7,10]];
   * normalised, the rows are (1,2)/sqrt5 and (3,4)/5: C = ([[.2,.4],[.4,.8]] + [[.36,.48],[.48,.64]])/2 */
  float x[8] = {1, 2, 0, 0, 3, 4, 0, 0};
  double C[16];
  calib_moment(x, 2, 4, 4, 0, C);
  double want[4] = {5, 7, 7, 10};
  for (int a = 0; a < 2; a++)
    for (int b = 0; b < 2; b++) cr_expect(fabs(C[a * 4 + b] - want[a * 2 + b]) < 1e-12);
  for (int k = 2; k < 4; k++) cr_expect_eq(C[k], 0.0);
  calib_moment(x, 2, 4, 4, 1, C);
  double wantn[4] = {0.28, 0.44, 0.44, 0.72};
  for (int a = 0; a < 2; a++)
    for (int b = 0; b < 2; b++)
      cr_expect(fabs(C[a * 4 + b] - wantn[a * 2 + b]) < 1e-7, "C[%d][%d] = %.10f", a, b, C[a * 4 + b]);
  /* option through calib_compute: scaling a row does not change the normalised result */
  calib_head h1, h2;
  sq_err e = {0};
  float xx[8] = {1, 2, 0, 0.5f, 3, 4, 0, 0}, yy[8] = {10, 20, 0, 5, 0.3f, 0.4f, 0, 0};
  cr_assert_eq(calib_compute(xx, 2, 4, 4, 1, &h1, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(calib_compute(yy, 2, 4, 4, 1, &h2, &e), SQ_OK, "%s", e.msg);
  for (int i = 0; i < 4; i++) cr_expect(fabs(h1.eigval[i] - h2.eigval[i]) < 1e-7);
  double tr = 0;
  for (int i = 0; i < 4; i++) tr += h1.eigval[i];
  cr_expect(fabs(tr - 1.0) < 1e-7, "normalised rows: trace of C = 1, got %g", tr);
  calib_head_free(&h1);
  calib_head_free(&h2);
}

static calib_head diag_head(const double *l, int D) {
  double *C = calloc((size_t)D * D, sizeof(double));
  for (int i = 0; i < D; i++) C[i * D + i] = l[i];
  calib_head h;
  sq_err e = {0};
  cr_assert_eq(calib_from_moment(C, D, 1, &h, &e), SQ_OK, "%s", e.msg);
  free(C);
  return h;
}

Test(calib, deff_by_hand) {
  /* l = 4,2,1,1,0,0,0,0 (sum 8): cumsum/sum = .5, .75, .875, 1, 1, 1, 1, 1 */
  double l[D8] = {4, 2, 1, 1, 0, 0, 0, 0};
  calib_head h = diag_head(l, D8);
  cr_expect_eq(calib_deff(&h, 0.50), 2); /* #{<.5} = 0 -> 1 -> clamp 2 */
  cr_expect_eq(calib_deff(&h, 0.60), 2); /* {.5} -> 2 */
  cr_expect_eq(calib_deff(&h, 0.80), 3); /* {.5,.75} -> 3 */
  cr_expect_eq(calib_deff(&h, 0.90), 4); /* {.5,.75,.875} -> 4 */
  cr_expect_eq(calib_deff(&h, 0.99), 4); /* 1 is not < .99 */
  /* PR = 64 / (16+4+1+1) = 2.909 -> 3; kappa = l[2]/l[3] = 1 */
  cr_expect(fabs(h.pr - 64.0 / 22.0) < 1e-12);
  cr_expect_eq(h.pr_int, 3);
  cr_expect(fabs(h.kappa - 1.0) < 1e-12);
  calib_head_free(&h);
  /* flat spectrum: cumsum/sum = k/8 */
  double f[D8] = {1, 1, 1, 1, 1, 1, 1, 1};
  h = diag_head(f, D8);
  cr_expect_eq(calib_deff(&h, 0.50), 4); /* {1/8, 2/8, 3/8} -> 4 */
  cr_expect_eq(calib_deff(&h, 0.70), 6); /* up to 5/8 -> 6 */
  cr_expect_eq(calib_deff(&h, 0.90), 6); /* 7 below -> 8 -> clamp D-2 = 6 */
  cr_expect(fabs(h.pr - 8.0) < 1e-12);
  cr_expect_eq(h.pr_int, 6);             /* clamp(8, 2, 6) */
  calib_head_free(&h);
  /* zero spectrum: d_eff = 2, PR = 1 -> 2, kappa = 0 / 1e-10 = 0 */
  double z[D8] = {0};
  h = diag_head(z, D8);
  cr_expect_eq(calib_deff(&h, 0.9), 2);
  cr_expect_eq(h.pr, 1.0);
  cr_expect_eq(h.pr_int, 2);
  cr_expect_eq(h.kappa, 0.0);
  calib_head_free(&h);
  /* 9, 1, 0...: PR = 100/82 = 1.22 -> 1 -> clamp 2; kappa = 1/max(0, 1e-10) -> capped at 1e6 */
  double g[D8] = {9, 1, 0, 0, 0, 0, 0, 0};
  h = diag_head(g, D8);
  cr_expect_eq(h.pr_int, 2);
  cr_expect_eq(h.kappa, 1e6);
  cr_expect_eq(calib_deff(&h, 0.95), 2); /* {.9} -> 2 */
  calib_head_free(&h);
}

Test(calib, pr_rounds_half_to_even) {
  /* l = 6,1,1,1,1: sum 10, sum of squares 40, PR = 2.5 exactly -> 2 (half to even, like Python);
   * l = 6,3,3,1,1: sum 14, sum of squares 56, PR = 3.5 exactly -> 4. */
  double a[D8] = {6, 1, 1, 1, 1, 0, 0, 0}, b[D8] = {6, 3, 3, 1, 1, 0, 0, 0};
  calib_head h = diag_head(a, D8);
  cr_assert_eq(h.pr, 2.5, "pr %.17g", h.pr);
  cr_expect_eq(h.pr_int, 2, "2.5 rounds to even");
  cr_expect(fabs(h.kappa - 1.0) < 1e-12, "d = 2: kappa = l[1] / l[2] = 1, got %g", h.kappa);
  calib_head_free(&h);
  h = diag_head(b, D8);
  cr_assert_eq(h.pr, 3.5, "pr %.17g", h.pr);
  cr_expect_eq(h.pr_int, 4, "3.5 rounds to even");
  cr_expect(fabs(h.kappa - 1.0) < 1e-12, "d = 4: kappa = l[3] / l[4] = 1, got %g", h.kappa);
  calib_head_free(&h);
}

Test(calib, clamps_negative_eigenvalues_and_sorts) {
  double l[D8] = {0.5, 3, -1e-3, 2, 0, 1, 0.25, 0.125}; /* not PSD, not sorted */
  calib_head h = diag_head(l, D8);
  double want[D8] = {3, 2, 1, 0.5, 0.25, 0.125, 0, 0};
  for (int i = 0; i < D8; i++) cr_expect(fabs(h.eigval[i] - want[i]) < 1e-12, "eigval %d = %g", i, h.eigval[i]);
  /* row 0 is e_1 (the eigenvector of 3), made positive */
  cr_expect(fabs(h.basis[0 * D8 + 1] - 1.0f) < 1e-6);
  calib_head_free(&h);
}

Test(calib, fix_signs_rule) {
  /* rows: largest |.| negative -> flipped; ties in |.| -> the first index decides */
  float b[16] = {0.1f, -0.9f, 0.3f, 0.2f,   /* flip */
                 0.5f, -0.5f, 0.5f, -0.5f,  /* tie, first positive: keep */
                 -0.5f, 0.5f, 0.5f, 0.5f,   /* tie, first negative: flip */
                 0.0f, 0.0f, 0.7f, -0.7f};  /* tie at 2 and 3, first (+) wins: keep */
  float want[16] = {-0.1f, 0.9f, -0.3f, -0.2f, 0.5f, -0.5f, 0.5f, -0.5f,
                    0.5f, -0.5f, -0.5f, -0.5f, 0.0f, 0.0f, 0.7f, -0.7f};
  calib_fix_signs(b, 4);
  for (int i = 0; i < 16; i++) cr_expect_eq(b[i], want[i], "entry %d: %g, want %g", i, b[i], want[i]);
}

Test(calib, bad_input) {
  double C[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, NAN};
  calib_head h;
  sq_err e = {0};
  cr_expect_eq(calib_from_moment(C, 4, 1, &h, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "non-finite") != NULL, "%s", e.msg);
  cr_expect_eq(calib_from_moment(C, 3, 1, &h, &e), SQ_EINPUT, "D < 4");
  float x[4] = {1, 2, 3, 4};
  cr_expect_eq(calib_compute(x, 0, 4, 4, 0, &h, &e), SQ_EINPUT, "no rows");
  calib_head_free(&h); /* freeing a failed head is safe */
}

/* The blocked accumulation against the textbook double loop, for row counts that are not a
 * multiple of the block, with and without normalisation. */
Test(calib, moment_matches_naive_sum) {
  enum { D = 5, STRIDE = 7 };
  float x[11 * STRIDE];
  for (int i = 0; i < 11 * STRIDE; i++) x[i] = (float)sin(1.7 * i + 0.3) * (float)(1 + i % 3);
  for (int n = 1; n <= 11; n++)
    for (int norm = 0; norm < 2; norm++) {
      double C[D * D], want[D * D] = {0};
      calib_moment(x, n, STRIDE, D, norm, C);
      for (int t = 0; t < n; t++) {
        double r[D], ss = 0;
        for (int i = 0; i < D; i++) r[i] = x[t * STRIDE + i], ss += r[i] * r[i];
        for (int i = 0; i < D; i++) r[i] /= norm ? sqrt(ss) + 1e-8 : 1.0;
        for (int a = 0; a < D; a++)
          for (int b = 0; b < D; b++) want[a * D + b] += r[a] * r[b] / n;
      }
      for (int k = 0; k < D * D; k++)
        cr_expect(fabs(C[k] - want[k]) < 1e-12, "n=%d norm=%d C[%d] = %.15g, want %.15g", n, norm, k, C[k], want[k]);
    }
}

/* ---- calib_from_eig: the one post-processing path of both backends ---- */

#include <gsl/gsl_eigen.h>
#include "kern.h"

/* What calib_from_moment computed before calib_from_eig existed, written out with GSL's own sort:
 * eigval desc clamped >= 0, basis rows = float eigenvectors, signs fixed. */
static void gsl_reference(const double *C, int D, double *eigval, float *basis) {
  gsl_matrix *A = gsl_matrix_alloc(D, D), *V = gsl_matrix_alloc(D, D);
  gsl_vector *w = gsl_vector_alloc(D);
  gsl_eigen_symmv_workspace *ws = gsl_eigen_symmv_alloc(D);
  memcpy(A->data, C, sizeof(double) * D * D);
  cr_assert_eq(gsl_eigen_symmv(A, w, V, ws), 0);
  cr_assert_eq(gsl_eigen_symmv_sort(w, V, GSL_EIGEN_SORT_VAL_DESC), 0);
  for (int i = 0; i < D; i++) {
    double l = gsl_vector_get(w, i);
    eigval[i] = l > 0 ? l : 0;
    for (int j = 0; j < D; j++) basis[i * D + j] = (float)gsl_matrix_get(V, j, i);
  }
  calib_fix_signs(basis, D);
  gsl_matrix_free(A), gsl_matrix_free(V), gsl_vector_free(w), gsl_eigen_symmv_free(ws);
}

static void expect_same_head(const calib_head *a, const calib_head *b, const char *what) {
  cr_assert_eq(a->D, b->D, "%s: D", what);
  cr_expect_eq(a->n, b->n, "%s: n", what);
  int D = a->D;
  cr_expect_eq(memcmp(a->eigval, b->eigval, sizeof(double) * D), 0, "%s: eigval differ", what);
  cr_expect_eq(memcmp(a->basis, b->basis, sizeof(float) * D * D), 0, "%s: basis differs", what);
  cr_expect_eq(a->pr, b->pr, "%s: pr %.17g vs %.17g", what, a->pr, b->pr);
  cr_expect_eq(a->pr_int, b->pr_int, "%s: pr_int", what);
  cr_expect_eq(a->kappa, b->kappa, "%s: kappa %.17g vs %.17g", what, a->kappa, b->kappa);
}

/* Deterministic rows with a decaying spectrum: x_j = g * (1 + j)^-0.7 rotated by the Givens basis. */
static float *decaying_rows(int n, int H, int D, unsigned seed) {
  double *Q = malloc(sizeof(double) * D * D);
  givens_basis(Q, D);
  float *x = malloc(sizeof(float) * n * H * D);
  unsigned s = seed;
  for (int t = 0; t < n * H; t++) {
    double z[64];
    for (int i = 0; i < D; i++) {
      s = s * 1664525u + 1013904223u; /* LCG: uniform in [-1, 1) is enough for a moment */
      z[i] = ((double)(s >> 8) / (1 << 24) * 2.0 - 1.0) * pow(1.0 + i, -0.7);
    }
    for (int j = 0; j < D; j++) {
      double acc = 0;
      for (int i = 0; i < D; i++) acc += z[i] * Q[i * D + j];
      x[(size_t)t * D + j] = (float)acc;
    }
  }
  free(Q);
  return x;
}

Test(calib, from_eig_is_the_path_of_from_moment) {
  enum { D = 16 };
  float *x = decaying_rows(200, 1, D, 11);
  double C[D * D];
  calib_moment(x, 200, D, D, 0, C);
  free(x);
  /* a spectrum with ties and a negative value, in no order: the tie order must be GSL's */
  double T[D * D] = {0};
  double lt[D] = {1, 3, 3, -1e-9, 2, 3, 1, 0.5, 0, 2, 0.25, 0.125, 1, 3, 0, 0.0625};
  for (int i = 0; i < D; i++) T[i * D + i] = lt[i];
  const double *mats[2] = {C, T};
  for (int m = 0; m < 2; m++) {
    double want_l[D];
    float want_b[D * D];
    gsl_reference(mats[m], D, want_l, want_b);
    calib_head hm, he;
    sq_err e = {0};
    cr_assert_eq(calib_from_moment(mats[m], D, 200, &hm, &e), SQ_OK, "%s", e.msg);
    cr_expect_eq(memcmp(hm.eigval, want_l, sizeof want_l), 0, "matrix %d: eigval != GSL's sorted", m);
    cr_expect_eq(memcmp(hm.basis, want_b, sizeof want_b), 0, "matrix %d: basis != GSL's sorted", m);
    double s = 0, s2 = 0;
    for (int i = 0; i < D; i++) s += want_l[i], s2 += want_l[i] * want_l[i];
    cr_expect_eq(hm.pr, s * s / s2, "matrix %d: pr", m);
    /* calib_eigh's unsorted output through calib_from_eig: the same head, bit for bit */
    double l[D], V[D * D];
    cr_assert_eq(calib_eigh(mats[m], D, l, V, &e), SQ_OK, "%s", e.msg);
    double l0[D], V0[D * D];
    memcpy(l0, l, sizeof l), memcpy(V0, V, sizeof V);
    cr_assert_eq(calib_from_eig(l, V, D, 200, &he, &e), SQ_OK, "%s", e.msg);
    cr_expect_eq(memcmp(l, l0, sizeof l) | memcmp(V, V0, sizeof V), 0, "inputs must not be modified");
    expect_same_head(&he, &hm, m ? "ties" : "decaying");
    calib_head_free(&hm);
    calib_head_free(&he);
  }
}

/* The CPU backend's eigh (per-head GSL in parallel) + calib_from_eig = calib_compute, bit for bit;
 * and the raw pairs satisfy C v = l v with orthonormal rows (checked here by plain loops). */
Test(calib, cpu_backend_eigh_matches_calib_compute) {
  enum { H = 5, D = 32, N = 300 };
  float *x = decaying_rows(N, H, D, 5);
  kern_backend *b;
  sq_err e = {0};
  cr_assert_eq(kern_cpu_create(&b, 3, &e), SQ_OK, "%s", e.msg);
  double *C = malloc(sizeof(double) * H * D * D), *l = malloc(sizeof(double) * H * D);
  double *V = malloc(sizeof(double) * H * D * D);
  cr_assert_eq(b->moments(b, x, N, H, D, 0, C, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(b->eigh(b, C, H, D, l, V, &e), SQ_OK, "%s", e.msg);
  for (int h = 0; h < H; h++) {
    const double *Ch = C + h * D * D, *Vh = V + h * D * D;
    for (int i = 0; i < D; i++) {
      double res = 0;
      for (int a = 0; a < D; a++) {
        double cv = 0;
        for (int c = 0; c < D; c++) cv += Ch[a * D + c] * Vh[i * D + c];
        res = fmax(res, fabs(cv - l[h * D + i] * Vh[i * D + a]));
      }
      cr_expect(res < 1e-12, "head %d pair %d: |C v - l v| = %g", h, i, res);
      for (int j = 0; j <= i; j++) {
        double dot = 0;
        for (int c = 0; c < D; c++) dot += Vh[i * D + c] * Vh[j * D + c];
        cr_expect(fabs(dot - (i == j)) < 1e-12, "head %d: v%d . v%d = %g", h, i, j, dot);
      }
    }
    calib_head got, want;
    cr_assert_eq(calib_from_eig(l + h * D, Vh, D, N, &got, &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(calib_compute(x + h * D, N, H * D, D, 0, &want, &e), SQ_OK, "%s", e.msg);
    expect_same_head(&got, &want, "cpu eigh vs calib_compute");
    calib_head_free(&got);
    calib_head_free(&want);
  }
  C[3 * D * D + 2 * D + 7] = NAN;
  cr_expect_eq(b->eigh(b, C, H, D, l, V, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "head 3") && strstr(e.msg, "(2, 7)"), "%s", e.msg);
  cr_expect_eq(b->eigh(b, C, 0, D, l, V, &e), SQ_EINPUT);
  b->destroy(b);
  free(C), free(l), free(V), free(x);
}
