/* Lloyd-Max codebooks against numbers from outside the code:
 *  - Max (1960), "Quantizing for minimum distortion", Table I (unit Gaussian, as quoted in
 *    methods.md §2): centroids for b = 1..3 and the MSE for b = 1..4;
 *  - the TurboQuant paper's D_mse for D = 128 (0.36, 0.117, 0.03, 0.009; arXiv 2504.19874);
 *  - the N(0, 1/D) limit of the beta density (large D) and a Monte-Carlo estimate from random
 *    unit vectors drawn in the test;
 *  - the centroid condition checked by numerical quadrature (GSL qags) of the density formula
 *    written out in the test, not the code's closed forms. */
#include <criterion/criterion.h>
#include <gsl/gsl_integration.h>
#include <gsl/gsl_sf_gamma.h>
#include <math.h>
#include <string.h>

#include "codebook.h"
#include "rng.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static const double max_c1[] = {0.7979};
static const double max_c2[] = {0.4528, 1.5104};
static const double max_c3[] = {0.2451, 0.7560, 1.3439, 2.1519};
static const double max_mse[] = {0.3634, 0.1175, 0.03455, 0.009497};

Test(codebook, gauss_matches_max_table) {
  const double *tab[] = {max_c1, max_c2, max_c3};
  double c[256], b[256], mse;
  sq_err e = {0};
  for (int bits = 1; bits <= 3; bits++) {
    cr_assert_eq(cb_lloyd_gauss(bits, c, b, &mse, &e), SQ_OK, "%s", e.msg);
    int K = 1 << (bits - 1);
    for (int i = 0; i < K; i++) {
      cr_expect(fabs(c[K + i] - tab[bits - 1][i]) < 1e-4, "b=%d c+%d = %.6f, Max %.4f", bits, i, c[K + i],
                tab[bits - 1][i]);
      cr_expect(fabs(c[K - 1 - i] + tab[bits - 1][i]) < 1e-4, "b=%d c-%d = %.6f", bits, i, c[K - 1 - i]);
    }
  }
  for (int bits = 1; bits <= 4; bits++) {
    cr_assert_eq(cb_lloyd_gauss(bits, c, b, &mse, &e), SQ_OK, "%s", e.msg);
    cr_expect(fabs(mse - max_mse[bits - 1]) < 1e-4, "b=%d mse %.6f, Max %.6f", bits, mse, max_mse[bits - 1]);
  }
}

/* Symmetric, strictly increasing, boundaries the midpoints, middle boundary exactly 0. */
static void check_shape(const double *c, const double *b, int bits, const char *what) {
  int N = 1 << bits;
  for (int i = 0; i < N; i++) cr_expect(c[i] == -c[N - 1 - i], "%s b=%d: asymmetric at %d", what, bits, i);
  for (int i = 1; i < N; i++) cr_expect(c[i] > c[i - 1], "%s b=%d: not increasing at %d", what, bits, i);
  for (int i = 0; i + 1 < N; i++)
    cr_expect(fabs(b[i] - 0.5 * (c[i] + c[i + 1])) < 1e-15, "%s b=%d: boundary %d not a midpoint", what, bits, i);
  cr_expect(b[N / 2 - 1] == 0.0, "%s b=%d: middle boundary %g", what, bits, b[N / 2 - 1]);
}

Test(codebook, shapes_gauss_and_beta) {
  double c[256], b[256], mse;
  sq_err e = {0};
  for (int bits = 1; bits <= CB_MAX_BITS; bits++) {
    cr_assert_eq(cb_lloyd_gauss(bits, c, b, &mse, &e), SQ_OK, "%s", e.msg);
    check_shape(c, b, bits, "gauss");
    cr_assert_eq(cb_lloyd_beta(128, bits, c, b, &mse, &e), SQ_OK, "%s", e.msg);
    check_shape(c, b, bits, "beta128");
    cr_expect(c[(1 << bits) - 1] < 1.0, "beta centroids stay in [-1, 1]");
    cr_assert_eq(cb_lloyd_beta(4, bits, c, b, &mse, &e), SQ_OK, "%s", e.msg);
    check_shape(c, b, bits, "beta4");
    cr_expect(c[(1 << bits) - 1] < 1.0, "beta centroids stay in [-1, 1]");
  }
}

/* Gaussian MSE halves in log4 steps: the high-rate limit is sqrt(3) pi / 2 * 4^-b (Panter-Dite). */
Test(codebook, gauss_high_rate_limit) {
  double c[256], b[256], mse;
  sq_err e = {0};
  cr_assert_eq(cb_lloyd_gauss(8, c, b, &mse, &e), SQ_OK, "%s", e.msg);
  double pd = sqrt(3.0) * M_PI / 2.0 * pow(4.0, -8);
  cr_expect(fabs(mse / pd - 1.0) < 0.02, "b=8 mse %.4g vs Panter-Dite %.4g", mse, pd);
}

Test(codebook, beta_d128_near_gaussian_and_paper) {
  double c[256], b[256], mse, gm;
  sq_err e = {0};
  static const double paper[] = {0.36, 0.117, 0.03, 0.009}; /* TurboQuant D_mse, rounded */
  for (int bits = 1; bits <= CB_MAX_BITS; bits++) {
    cr_assert_eq(cb_lloyd_beta(128, bits, c, b, &mse, &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(cb_lloyd_gauss(bits, c, b, &gm, &e), SQ_OK, "%s", e.msg);
    double rel = mse * 128 / gm - 1.0;
    cr_expect(fabs(rel) < 0.04, "b=%d: beta mse*D %.5g vs gauss %.5g (%.2f%%)", bits, mse * 128, gm, 100 * rel);
    if (bits <= 4) /* the paper rounds: 0.03 stands for ~0.034, 0.009 for ~0.0093 */
      cr_expect(fabs(mse * 128 / paper[bits - 1] - 1.0) < 0.14, "b=%d: D_mse %.4g vs paper %.3g", bits,
                mse * 128, paper[bits - 1]);
  }
}

Test(codebook, beta_large_d_is_gaussian_limit) {
  double c[256], b[256], mse, gm, gc[256];
  sq_err e = {0};
  for (int bits = 1; bits <= CB_MAX_BITS; bits++) {
    cr_assert_eq(cb_lloyd_beta(4096, bits, c, b, &mse, &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(cb_lloyd_gauss(bits, gc, b, &gm, &e), SQ_OK, "%s", e.msg);
    cr_expect(fabs(mse * 4096 / gm - 1.0) < 1e-3, "b=%d: beta mse*D %.6g vs gauss %.6g", bits, mse * 4096, gm);
    int N = 1 << bits;
    cr_expect(fabs(c[N - 1] * 64.0 / gc[N - 1] - 1.0) < 2e-3, "b=%d: top centroid %.6g vs %.6g / 64", bits,
              c[N - 1], gc[N - 1]);
  }
}

/* The density written out from methods.md §2, integrated numerically. */
typedef struct { double D, logc, power; } beta_par;
static double beta_moment(double x, void *p) {
  const beta_par *bp = p;
  return pow(x, bp->power) * exp(bp->logc + 0.5 * (bp->D - 3.0) * log1p(-x * x));
}

Test(codebook, beta_centroids_are_cell_means_by_quadrature) {
  const int D = 16, bits = 3, N = 1 << bits;
  double c[256], b[256], mse;
  sq_err e = {0};
  cr_assert_eq(cb_lloyd_beta(D, bits, c, b, &mse, &e), SQ_OK, "%s", e.msg);
  beta_par bp = {D, gsl_sf_lngamma(D / 2.0) - gsl_sf_lngamma((D - 1) / 2.0) - 0.5 * log(M_PI), 0};
  gsl_integration_workspace *w = gsl_integration_workspace_alloc(1000);
  gsl_function F = {beta_moment, &bp};
  double total, err, mse_q = 0.0;
  gsl_integration_qags(&F, -1, 1, 1e-14, 1e-13, 1000, w, &total, &err);
  cr_expect(fabs(total - 1.0) < 1e-10, "density integrates to %.12f", total);
  for (int i = 0; i < N; i++) {
    double lo = i ? b[i - 1] : -1.0, hi = i + 1 < N ? b[i] : 1.0, m0, m1, m2;
    bp.power = 0, gsl_integration_qags(&F, lo, hi, 1e-15, 1e-13, 1000, w, &m0, &err);
    bp.power = 1, gsl_integration_qags(&F, lo, hi, 1e-15, 1e-13, 1000, w, &m1, &err);
    bp.power = 2, gsl_integration_qags(&F, lo, hi, 1e-15, 1e-13, 1000, w, &m2, &err);
    cr_expect(fabs(m1 / m0 - c[i]) < 1e-9, "cell %d: mean %.12f, centroid %.12f", i, m1 / m0, c[i]);
    mse_q += m2 - 2 * c[i] * m1 + c[i] * c[i] * m0;
  }
  cr_expect(fabs(mse_q - mse) < 1e-10, "mse %.12g, by quadrature %.12g", mse, mse_q);
  gsl_integration_workspace_free(w);
}

/* Every coordinate of a uniformly random unit vector follows the beta density, so the mean
 * squared quantization error over all coordinates of many vectors estimates mse. */
Test(codebook, beta_mse_monte_carlo) {
  const int D = 128, nvec = 20000;
  static cb_table t;
  sq_err e = {0};
  cr_assert_eq(cb_table_build(&t, D, &e), SQ_OK, "%s", e.msg);
  double x[128], err[CB_MAX_BITS + 1] = {0};
  rng_t r;
  rng_seed(&r, 12345);
  for (int v = 0; v < nvec; v++) {
    double ss = 0;
    for (int j = 0; j < D; j++) x[j] = rng_normal(&r), ss += x[j] * x[j];
    for (int j = 0; j < D; j++) {
      float u = (float)(x[j] / sqrt(ss));
      for (int bits = 1; bits <= 4; bits++) {
        int idx = cb_quantize(t.boundary[CB_BETA][bits], bits, u);
        double d = u - t.centroid[CB_BETA][bits][idx];
        err[bits] += d * d;
      }
    }
  }
  for (int bits = 1; bits <= 4; bits++) {
    double mc = err[bits] / ((double)nvec * D);
    cr_expect(fabs(mc / t.mse[CB_BETA][bits] - 1.0) < 0.02, "b=%d: Monte-Carlo %.5g vs mse %.5g", bits, mc,
              t.mse[CB_BETA][bits]);
  }
}

Test(codebook, gauss_mse_monte_carlo) {
  static cb_table t;
  sq_err e = {0};
  cr_assert_eq(cb_table_build(&t, 64, &e), SQ_OK, "%s", e.msg);
  rng_t r;
  rng_seed(&r, 777);
  const int n = 400000;
  double err[5] = {0};
  for (int i = 0; i < n; i++) {
    float g = (float)rng_normal(&r);
    for (int bits = 1; bits <= 4; bits++) {
      double d = g - t.centroid[CB_GAUSS][bits][cb_quantize(t.boundary[CB_GAUSS][bits], bits, g)];
      err[bits] += d * d;
    }
  }
  for (int bits = 1; bits <= 4; bits++)
    cr_expect(fabs(err[bits] / n / max_mse[bits - 1] - 1.0) < 0.02, "b=%d: Monte-Carlo %.5g vs Max %.5g", bits,
              err[bits] / n, max_mse[bits - 1]);
}

Test(codebook, table_holds_float_copies) {
  static cb_table t;
  sq_err e = {0};
  cr_assert_eq(cb_table_build(&t, 128, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(t.D, 128);
  double c[256], b[256], mse;
  for (int bits = 1; bits <= CB_MAX_BITS; bits++) {
    int N = 1 << bits;
    cb_lloyd_gauss(bits, c, b, &mse, &e);
    for (int i = 0; i < N; i++) cr_expect_eq(t.centroid[CB_GAUSS][bits][i], (float)c[i]);
    for (int i = 0; i + 1 < N; i++) cr_expect_eq(t.boundary[CB_GAUSS][bits][i], (float)b[i]);
    cr_expect_eq(t.mse[CB_GAUSS][bits], mse);
    cb_lloyd_beta(128, bits, c, b, &mse, &e);
    for (int i = 0; i < N; i++) cr_expect_eq(t.centroid[CB_BETA][bits][i], (float)c[i]);
    cr_expect_eq(t.mse[CB_BETA][bits], mse);
  }
}

/* Nearest centroid = count of boundaries strictly below t: a value exactly on a boundary goes
 * to the lower cell. Checked against a linear scan written here. */
Test(codebook, quantize_ties_go_low) {
  static cb_table t;
  sq_err e = {0};
  cr_assert_eq(cb_table_build(&t, 128, &e), SQ_OK, "%s", e.msg);
  for (int bits = 1; bits <= CB_MAX_BITS; bits++) {
    const float *bd = t.boundary[CB_GAUSS][bits];
    int N = 1 << bits;
    for (int j = 0; j + 1 < N; j++) {
      cr_expect_eq(cb_quantize(bd, bits, bd[j]), j, "b=%d: t on boundary %d", bits, j);
      cr_expect_eq(cb_quantize(bd, bits, nextafterf(bd[j], INFINITY)), j + 1);
    }
    cr_expect_eq(cb_quantize(bd, bits, -1e30f), 0);
    cr_expect_eq(cb_quantize(bd, bits, 1e30f), N - 1);
    rng_t r;
    rng_seed(&r, (uint64_t)bits);
    for (int k = 0; k < 2000; k++) {
      float x = (float)(3.0 * rng_normal(&r));
      int best = 0;
      for (int i = 1; i < N; i++) /* nearest, lower index on exact ties */
        if (fabsf(x - t.centroid[CB_GAUSS][bits][i]) < fabsf(x - t.centroid[CB_GAUSS][bits][best])) best = i;
      int q = cb_quantize(bd, bits, x);
      float dq = fabsf(x - t.centroid[CB_GAUSS][bits][q]), db = fabsf(x - t.centroid[CB_GAUSS][bits][best]);
      cr_expect(q == best || dq == db, "b=%d x=%g: quantize %d, nearest %d", bits, x, q, best);
    }
  }
  cr_expect_eq(cb_quantize(t.boundary[CB_BETA][1], 1, 0.0f), 0, "0 sits on the middle boundary");
}

Test(codebook, bad_input) {
  double c[256], b[256], mse;
  sq_err e = {0};
  cr_expect_eq(cb_lloyd_gauss(0, c, b, &mse, &e), SQ_EINPUT);
  cr_expect_eq(cb_lloyd_gauss(9, c, b, &mse, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "bits") != NULL, "%s", e.msg);
  cr_expect_eq(cb_lloyd_beta(2, 3, c, b, &mse, &e), SQ_EINPUT);
  static cb_table t;
  cr_expect_eq(cb_table_build(&t, 1, &e), SQ_EINPUT);
}
