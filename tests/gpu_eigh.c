/* gpu_eigh: the CUDA backend's eigh (cusolverDnXsyevBatched) against the CPU backend's (GSL per
 * head), the ground truth, and against spectra known by construction. Checked per head:
 *   - the raw CUDA output: eigenvalues ascending (as documented in kern.h), |C v - l v| and
 *     |V V^T - I| below 1e-10 (relative to the largest eigenvalue), by plain loops here;
 *   - known spectra (C = Q^T diag(l) Q, Q a random orthogonal matrix): every eigenvalue within
 *     1e-9 of the largest;
 *   - after calib_from_eig on both backends' output: eigenvalues within 1e-9 relative to the
 *     largest, PR within 1e-9, pr_int equal, kappa within 1e-6 relative, and every float basis
 *     component within 1e-6 (same sign convention) -- except eigenvectors whose eigenvalue is
 *     closer than 1e-8 (relative) to a neighbour: there the basis is not unique, and the CUDA
 *     vector must instead lie in the span of the CPU's vectors of that cluster (1 - |P v|^2 < 1e-6).
 * Cases: D = 64 and 128 with H = 8 (a Mistral layer), D = 128 with H = 64 (one batch of many),
 * D = 128 with a 3-fold eigenvalue in every head (exercises the subspace comparison), and the moments of tests/util/tu_layer rows (anisotropic keys and values, n = 3000).
 * Every case prints one line with its worst errors and where they are (head, index).
 * Without a visible GPU every test is skipped with a message (not passed). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "calib.h"
#include "kern.h"
#include "rng.h"
#include "util/tu_layer.h"

static kern_backend *cpu, *gpu;

static void setup(void) {
  sq_err e = {0};
  if (!kern_cuda_available()) return;
  cr_assert_eq(kern_cpu_create(&cpu, 0, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(kern_cuda_create(&gpu, 0, &e), SQ_OK, "%s", e.msg);
  cr_assert(gpu->eigh != NULL && cpu->eigh != NULL, "both backends must set eigh");
}

static void teardown(void) {
  if (cpu) cpu->destroy(cpu);
  if (gpu) gpu->destroy(gpu);
}

TestSuite(gpu_eigh, .init = setup, .fini = teardown);

static void need_gpu(void) {
  if (!kern_cuda_available()) cr_skip_test("no CUDA GPU visible: CPU-vs-CUDA eigh not checked");
}

/* A random orthogonal D x D matrix (rows orthonormal): Gaussian rows, Gram-Schmidt twice. */
static void random_orthogonal(double *Q, int D, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed);
  for (int i = 0; i < D * D; i++) Q[i] = rng_normal(&r);
  for (int i = 0; i < D; i++)
    for (int pass = 0; pass < 2; pass++) {
      for (int j = 0; j < i; j++) {
        double dot = 0;
        for (int c = 0; c < D; c++) dot += Q[i * D + c] * Q[j * D + c];
        for (int c = 0; c < D; c++) Q[i * D + c] -= dot * Q[j * D + c];
      }
      double nn = 0;
      for (int c = 0; c < D; c++) nn += Q[i * D + c] * Q[i * D + c];
      for (int c = 0; c < D; c++) Q[i * D + c] /= sqrt(nn);
    }
}

/* C_h = Q^T diag(l) Q with l_i = (1 + h) * 0.95^i: distinct, decaying (smallest gap ~1e-4 of
 * the largest at D = 128), exactly symmetric; with `tie`, l_5 = l_6 = l_4 (a 3-fold eigenvalue,
 * whose basis is not unique). Writes l sorted descending to lw [H][D]. */
static void known_spectrum(double *C, double *lw, int H, int D, int tie) {
  double *Q = malloc(sizeof(double) * D * D);
  for (int h = 0; h < H; h++) {
    random_orthogonal(Q, D, 1000 + h);
    double *l = lw + (size_t)h * D, *Ch = C + (size_t)h * D * D;
    for (int i = 0; i < D; i++) l[i] = (1.0 + h) * pow(0.95, i);
    if (tie) l[5] = l[6] = l[4];
    for (int a = 0; a < D; a++)
      for (int b = a; b < D; b++) {
        double s = 0;
        for (int i = 0; i < D; i++) s += l[i] * Q[i * D + a] * Q[i * D + b];
        Ch[a * D + b] = Ch[b * D + a] = s;
      }
  }
  free(Q);
}

/* The raw CUDA pairs: ascending, C v = l v, orthonormal. */
static void check_raw(const char *name, const double *C, const double *l, const double *V, int H, int D) {
  double worst_res = 0, worst_orth = 0;
  int rh = 0, ri = 0, oh = 0, oi = 0, oj = 0, order_bad = -1;
  for (int h = 0; h < H; h++) {
    const double *Ch = C + (size_t)h * D * D, *Vh = V + (size_t)h * D * D, *lh = l + (size_t)h * D;
    double lmax = fmax(fabs(lh[0]), fabs(lh[D - 1]));
    for (int i = 0; i < D; i++) {
      if (i > 0 && lh[i] < lh[i - 1] && order_bad < 0) order_bad = h;
      for (int a = 0; a < D; a++) {
        double cv = 0;
        for (int c = 0; c < D; c++) cv += Ch[a * D + c] * Vh[i * D + c];
        double r = fabs(cv - lh[i] * Vh[i * D + a]) / lmax;
        if (r > worst_res) worst_res = r, rh = h, ri = i;
      }
      for (int j = 0; j <= i; j++) {
        double dot = 0;
        for (int c = 0; c < D; c++) dot += Vh[i * D + c] * Vh[j * D + c];
        double o = fabs(dot - (i == j));
        if (o > worst_orth) worst_orth = o, oh = h, oi = i, oj = j;
      }
    }
  }
  fprintf(stderr, "gpu_eigh %s raw cuda: max |Cv-lv|/lmax %.3g (head %d pair %d), max |VV^T-I| %.3g "
          "(head %d, %d.%d)%s\n", name, worst_res, rh, ri, worst_orth, oh, oi, oj,
          order_bad >= 0 ? ", NOT ascending" : "");
  cr_expect(order_bad < 0, "%s: cuda eigenvalues of head %d are not ascending", name, order_bad);
  cr_expect(worst_res < 1e-10, "%s: cuda |Cv-lv|/lmax = %g at head %d pair %d", name, worst_res, rh, ri);
  cr_expect(worst_orth < 1e-10, "%s: cuda |VV^T-I| = %g at head %d (%d, %d)", name, worst_orth, oh, oi, oj);
}

/* Largest |.| difference of one CUDA basis row from the CPU's; for a (near-)degenerate eigenvalue
 * instead 1 - |projection onto the CPU's cluster|^2. */
static double row_error(const calib_head *c, const calib_head *g, int i, int *col, int *degenerate) {
  int D = c->D;
  double l0 = fmax(c->eigval[0], 1e-300), tol = 1e-8 * l0;
  int lo = i, hi = i;
  while (lo > 0 && c->eigval[lo - 1] - c->eigval[lo] < tol) lo--;
  while (hi < D - 1 && c->eigval[hi] - c->eigval[hi + 1] < tol) hi++;
  const float *gi = g->basis + (size_t)i * D;
  *degenerate = hi > lo;
  *col = -1;
  if (hi > lo) {
    double p2 = 0;
    for (int k = lo; k <= hi; k++) {
      double dot = 0;
      for (int j = 0; j < D; j++) dot += (double)c->basis[(size_t)k * D + j] * gi[j];
      p2 += dot * dot;
    }
    return fabs(1.0 - p2);
  }
  double worst = 0;
  for (int j = 0; j < D; j++) {
    double d = fabs((double)c->basis[(size_t)i * D + j] - gi[j]);
    if (d > worst) worst = d, *col = j;
  }
  return worst;
}

/* Both backends on the same H matrices; `known` [H][D] descending or NULL. */
static int compare(const char *name, const double *C, int H, int D, const double *known) {
  sq_err e = {0};
  size_t nv = (size_t)H * D, nm = nv * D;
  double *lc = malloc(nv * sizeof(double)), *Vc = malloc(nm * sizeof(double));
  double *lg = malloc(nv * sizeof(double)), *Vg = malloc(nm * sizeof(double));
  cr_assert_eq(cpu->eigh(cpu, C, H, D, lc, Vc, &e), SQ_OK, "%s: cpu eigh: %s", name, e.msg);
  cr_assert_eq(gpu->eigh(gpu, C, H, D, lg, Vg, &e), SQ_OK, "%s: cuda eigh: %s", name, e.msg);
  check_raw(name, C, lg, Vg, H, D);
  double w_known = 0, w_eig = 0, w_vec = 0, w_deg = 0, w_pr = 0, w_kappa = 0;
  int kh = 0, ki = 0, eh = 0, ei = 0, vh = 0, vi = 0, vj = 0, n_deg = 0, pr_int_bad = -1;
  for (int h = 0; h < H; h++) {
    calib_head hc, hg;
    cr_assert_eq(calib_from_eig(lc + (size_t)h * D, Vc + (size_t)h * nm / H, D, 1, &hc, &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(calib_from_eig(lg + (size_t)h * D, Vg + (size_t)h * nm / H, D, 1, &hg, &e), SQ_OK, "%s", e.msg);
    double l0 = fmax(hc.eigval[0], 1e-300);
    for (int i = 0; i < D; i++) {
      double d = fabs(hg.eigval[i] - hc.eigval[i]) / l0;
      if (d > w_eig) w_eig = d, eh = h, ei = i;
      if (known) {
        double k = fabs(hg.eigval[i] - known[(size_t)h * D + i]) / known[(size_t)h * D];
        if (k > w_known) w_known = k, kh = h, ki = i;
      }
      int col, deg;
      double r = row_error(&hc, &hg, i, &col, &deg);
      if (deg) {
        n_deg++;
        if (r > w_deg) w_deg = r;
      } else if (r > w_vec) {
        w_vec = r, vh = h, vi = i, vj = col;
      }
    }
    w_pr = fmax(w_pr, fabs(hg.pr - hc.pr) / hc.pr);
    w_kappa = fmax(w_kappa, fabs(hg.kappa - hc.kappa) / fmax(hc.kappa, 1e-300));
    if (hg.pr_int != hc.pr_int && pr_int_bad < 0) pr_int_bad = h;
    calib_head_free(&hc);
    calib_head_free(&hg);
  }
  char kn[96] = "no known spectrum";
  if (known) snprintf(kn, sizeof kn, "vs known %.3g (head %d #%d)", w_known, kh, ki);
  fprintf(stderr, "gpu_eigh %s (H=%d D=%d): eigval vs cpu %.3g (head %d #%d), %s; basis %.3g "
          "(head %d row %d col %d); %d degenerate rows, worst 1-|Pv|^2 %.3g; pr %.3g, kappa %.3g\n",
          name, H, D, w_eig, eh, ei, kn, w_vec, vh, vi, vj, n_deg, w_deg, w_pr, w_kappa);
  cr_expect(w_eig < 1e-9, "%s: eigenvalue %d of head %d differs by %g of the largest", name, ei, eh, w_eig);
  cr_expect(w_known < 1e-9, "%s: eigenvalue %d of head %d is %g (of the largest) off the known one",
            name, ki, kh, w_known);
  cr_expect(w_vec < 1e-6, "%s: basis head %d row %d col %d differs by %g", name, vh, vi, vj, w_vec);
  cr_expect(w_deg < 1e-6, "%s: a degenerate eigenvector leaves its CPU cluster by %g", name, w_deg);
  cr_expect(w_pr < 1e-9, "%s: pr differs by %g relative", name, w_pr);
  cr_expect(pr_int_bad < 0, "%s: pr_int of head %d differs", name, pr_int_bad);
  cr_expect(w_kappa < 1e-6, "%s: kappa differs by %g relative", name, w_kappa);
  free(lc), free(Vc), free(lg), free(Vg);
  return n_deg;
}

/* Returns the number of (near-)degenerate rows compare() found. */
static int known_case(const char *name, int H, int D, int tie) {
  double *C = malloc(sizeof(double) * H * D * D), *l = malloc(sizeof(double) * H * D);
  known_spectrum(C, l, H, D, tie);
  int n_deg = compare(name, C, H, D, l);
  free(C), free(l);
  return n_deg;
}

Test(gpu_eigh, known_spectrum_d64_h8) {
  need_gpu();
  cr_expect_eq(known_case("known D64", 8, 64, 0), 0);
}

Test(gpu_eigh, known_spectrum_d128_h8) {
  need_gpu();
  cr_expect_eq(known_case("known D128", 8, 128, 0), 0);
}

Test(gpu_eigh, known_spectrum_d128_h64) {
  need_gpu();
  cr_expect_eq(known_case("known D128 x64", 64, 128, 0), 0);
}

/* A 3-fold eigenvalue in every head: those rows are compared as subspaces. */
Test(gpu_eigh, known_spectrum_with_a_triple_eigenvalue) {
  need_gpu();
  cr_expect_eq(known_case("known D128 triple", 8, 128, 1), 8 * 3, "every head has 3 degenerate rows");
}

/* Second moments of tu_layer-style keys and values (plain and normalised rows), through the
 * CUDA backend's own moments as the sweep would chain them. */
Test(gpu_eigh, tu_layer_moments) {
  need_gpu();
  enum { H = 8, D = 128, N = 3000 };
  sq_err e = {0};
  double *C = malloc(sizeof(double) * H * D * D);
  for (int values = 0; values < 2; values++)
    for (int norm = 0; norm < 2; norm++) {
      float *x;
      tu_rows(&x, N, H, D, values, 7);
      cr_assert_eq(gpu->moments(gpu, x, N, H, D, norm, C, &e), SQ_OK, "%s", e.msg);
      char name[64];
      snprintf(name, sizeof name, "tu %s%s", values ? "values" : "keys", norm ? " normalised" : "");
      compare(name, C, H, D, NULL);
      free(x);
    }
  free(C);
}

Test(gpu_eigh, bad_input_names_the_head) {
  need_gpu();
  enum { H = 3, D = 8 };
  double C[H * D * D] = {0}, l[H * D], V[H * D * D];
  for (int h = 0; h < H; h++)
    for (int i = 0; i < D; i++) C[h * D * D + i * D + i] = 1.0 + i;
  sq_err e = {0};
  cr_assert_eq(gpu->eigh(gpu, C, H, D, l, V, &e), SQ_OK, "%s", e.msg);
  for (int h = 0; h < H; h++)
    for (int i = 0; i < D; i++)
      cr_expect(fabs(l[h * D + i] - (1.0 + i)) < 1e-14, "diag head %d: eigval %d = %g", h, i, l[h * D + i]);
  C[2 * D * D + 5 * D + 1] = INFINITY;
  cr_expect_eq(gpu->eigh(gpu, C, H, D, l, V, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "head 2") && strstr(e.msg, "(5, 1)"), "%s", e.msg);
  cr_expect_eq(gpu->eigh(gpu, C, 0, D, l, V, &e), SQ_EINPUT);
}
