/* codebook: Lloyd-Max quantizers for N(0,1) and for one coordinate of a uniformly random unit
 * vector in R^D (methods.md §2).
 *
 * Both densities are symmetric, and 2^b is even, so only the K = 2^(b-1) positive centroids are
 * unknowns; the negative half is their mirror image (exact symmetry by construction) and the
 * middle boundary is exactly 0. The positive cells are [t_i, t_{i+1}] with t_0 = 0,
 * t_i = (c_{i-1} + c_i)/2 and t_K = the end of the support. Each density supplies, in closed
 * form, its pdf f, its upper tail Q(x) = P(X > x) and G(x) = int_x^end t f(t) dt, so that a cell
 * has mass Q(a) - Q(b) and first moment G(a) - G(b). The Lloyd map c_i <- E[X | cell i] is
 * iterated a few times and then solved by Newton's method on c = T(c) (the Jacobian of T is
 * tridiagonal in closed form), which turns thousands of slow Lloyd steps at b = 8 into a handful. */
#include "codebook.h"

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_sf_gamma.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CB_TOL 1e-12        /* convergence: max |Lloyd step| (methods.md §2) */
#define CB_LLOYD_WARM 30    /* plain Lloyd steps before Newton */
#define CB_MAX_ITER 20000

typedef struct {
  int beta;           /* 0: N(0,1); 1: coordinate of a unit vector in R^D */
  double D;
  double a;           /* beta: (D-1)/2, the exponent of (1-x^2) in G */
  double log_c;       /* beta: log of the normaliser G(D/2)/(sqrt(pi) G((D-1)/2)) */
  double log_beta_a;  /* beta: log B((D-1)/2, 1/2) */
  double end;         /* support end: inf or 1 */
  double second;      /* E[X^2]: 1 or 1/D */
} cb_density;

static double dens_pdf(const cb_density *d, double x) {
  if (!d->beta) return exp(-0.5 * x * x) * 0.39894228040143267794;
  if (x >= 1.0) return 0.0;
  return exp(d->log_c + (d->a - 1.0) * log1p(-x * x));
}

/* I_y(a, 1/2) for the beta family, 0 where it would underflow (GSL would call its error handler,
 * which aborts by default; a tail below 1e-280 is 0 for every purpose here). */
static double beta_tail_reg(const cb_density *d, double y) {
  if (y <= 0.0) return 0.0;
  if (y >= 1.0) return 1.0;
  double ln_pre = d->a * log(y) + 0.5 * log1p(-y) - d->log_beta_a;
  if (ln_pre < -640.0) return 0.0;
  gsl_sf_result r;
  if (gsl_sf_beta_inc_e(d->a, 0.5, y, &r) != 0) return 0.0;
  return r.val;
}

/* Q(x) = P(X > x), x >= 0. Beta: X^2 ~ Beta(1/2, (D-1)/2), so P(X > x) = I_{1-x^2}((D-1)/2, 1/2) / 2. */
static double dens_upper(const cb_density *d, double x) {
  if (!d->beta) return 0.5 * erfc(x * 0.70710678118654752440);
  if (x >= 1.0) return 0.0;
  return 0.5 * beta_tail_reg(d, (1.0 - x) * (1.0 + x));
}

/* G(x) = int_x^end t f(t) dt: phi(x) for N(0,1); c/(D-1) (1-x^2)^((D-1)/2) for the beta family. */
static double dens_g(const cb_density *d, double x) {
  if (!d->beta) return dens_pdf(d, x);
  if (x >= 1.0) return 0.0;
  return exp(d->log_c - log(d->D - 1.0) + d->a * log1p(-x * x));
}

static void dens_init(cb_density *d, int beta, int D) {
  memset(d, 0, sizeof *d);
  d->beta = beta;
  d->D = D;
  if (!beta) {
    d->end = INFINITY;
    d->second = 1.0;
    return;
  }
  d->a = 0.5 * (D - 1);
  /* c = G(D/2)/(sqrt(pi) G((D-1)/2)) = 1/B(1/2, (D-1)/2); lnbeta keeps full precision at
   * large D where a difference of two lngamma values would lose ~D*eps */
  d->log_beta_a = gsl_sf_lnbeta(d->a, 0.5);
  d->log_c = -d->log_beta_a;
  d->end = 1.0;
  d->second = 1.0 / D;
}

/* Positive cell boundaries t[0..K] from positive centroids c[0..K). */
static void cells(const cb_density *d, const double *c, int K, double *t) {
  t[0] = 0.0;
  for (int i = 1; i < K; i++) t[i] = 0.5 * (c[i - 1] + c[i]);
  t[K] = d->end;
}

/* One Lloyd map T(c): conditional means of the cells. Also the cell masses. */
static void lloyd_map(const cb_density *d, const double *t, const double *c, int K, double *Tc,
                      double *mass) {
  double q_lo = dens_upper(d, t[0]), g_lo = dens_g(d, t[0]);
  for (int i = 0; i < K; i++) {
    double q_hi = i + 1 < K ? dens_upper(d, t[i + 1]) : 0.0;
    double g_hi = i + 1 < K ? dens_g(d, t[i + 1]) : 0.0;
    mass[i] = q_lo - q_hi;
    Tc[i] = mass[i] > 0.0 ? (g_lo - g_hi) / mass[i] : c[i]; /* a cell of underflowed mass stays */
    q_lo = q_hi, g_lo = g_hi;
  }
}

/* Solve the tridiagonal system (lower l, diagonal dg, upper u) x = r in place (Thomas). */
static int tridiag_solve(double *l, double *dg, double *u, double *r, int K) {
  for (int i = 1; i < K; i++) {
    if (dg[i - 1] == 0.0) return -1;
    double w = l[i] / dg[i - 1];
    dg[i] -= w * u[i - 1];
    r[i] -= w * r[i - 1];
  }
  if (dg[K - 1] == 0.0) return -1;
  r[K - 1] /= dg[K - 1];
  for (int i = K - 2; i >= 0; i--) r[i] = (r[i] - u[i] * r[i + 1]) / dg[i];
  return 0;
}

/* Newton step for F(c) = T(c) - c = 0: (I - J) delta = T(c) - c, J tridiagonal:
 * dm/da = f(a)(m - a)/M0, dm/db = f(b)(b - m)/M0 for a cell [a,b] with mean m and mass M0, and
 * da/dc_{i-1} = da/dc_i = 1/2 (a = t_i), likewise for b = t_{i+1}. */
static int newton_step(const cb_density *d, const double *t, const double *Tc, const double *mass,
                       const double *c, int K, double *delta) {
  double l[128], dg[128], u[128];
  for (int i = 0; i < K; i++) {
    double da = 0.0, db = 0.0;
    if (mass[i] > 0.0) {
      if (i > 0) da = dens_pdf(d, t[i]) * (Tc[i] - t[i]) / mass[i];
      if (i + 1 < K) db = dens_pdf(d, t[i + 1]) * (t[i + 1] - Tc[i]) / mass[i];
    }
    l[i] = -0.5 * da;
    u[i] = -0.5 * db;
    dg[i] = 1.0 - 0.5 * (da + db);
    delta[i] = Tc[i] - c[i];
  }
  return tridiag_solve(l, dg, u, delta, K);
}

static double max_abs_diff(const double *a, const double *b, int K) {
  double m = 0.0;
  for (int i = 0; i < K; i++) m = fmax(m, fabs(a[i] - b[i]));
  return m;
}

/* Strictly increasing inside (0, end)? */
static int ordered(const cb_density *d, const double *c, int K) {
  if (!(c[0] > 0.0)) return 0;
  for (int i = 1; i < K; i++)
    if (!(c[i] > c[i - 1])) return 0;
  return c[K - 1] < d->end;
}

/* Initial centroids at the quantiles (K + i + 1/2) / 2K of the density (bisection on Q). */
static void init_quantiles(const cb_density *d, int K, double *c) {
  for (int i = 0; i < K; i++) {
    double p = (K - i - 0.5) / (2.0 * K); /* upper-tail probability */
    if (!d->beta) {
      c[i] = gsl_cdf_ugaussian_Qinv(p);
      continue;
    }
    double lo = 0.0, hi = 1.0;
    for (int it = 0; it < 60; it++) {
      double mid = 0.5 * (lo + hi);
      if (dens_upper(d, mid) > p) lo = mid; else hi = mid;
    }
    c[i] = 0.5 * (lo + hi);
  }
}

/* Expected squared error of the symmetric codebook: E[X^2] - 2 sum c_i M1_i + sum c_i^2 M0_i
 * (exact for any c, doubled for the negative half). */
static double codebook_mse(const cb_density *d, const double *t, const double *c, int K) {
  double s = 0.0;
  for (int i = 0; i < K; i++) {
    double m0 = dens_upper(d, t[i]) - (i + 1 < K ? dens_upper(d, t[i + 1]) : 0.0);
    double m1 = dens_g(d, t[i]) - (i + 1 < K ? dens_g(d, t[i + 1]) : 0.0);
    s += c[i] * c[i] * m0 - 2.0 * c[i] * m1;
  }
  return d->second + 2.0 * s;
}

static int lloyd_solve(const cb_density *d, int bits, double *centroid, double *boundary, double *mse,
                       sq_err *e) {
  if (bits < 1 || bits > CB_MAX_BITS)
    return sq_fail(e, SQ_EINPUT, "codebook: bits %d out of range 1..%d", bits, CB_MAX_BITS);
  int K = 1 << (bits - 1);
  double c[128], Tc[128], mass[128], t[129], delta[128], trial[128], Tt[128], mt[128], tt[129];
  init_quantiles(d, K, c);
  double step = INFINITY, best = INFINITY;
  int it, stalls = 0; /* Newton steps in a row that did not improve on the best residual */
  for (it = 0; it < CB_MAX_ITER; it++) {
    cells(d, c, K, t);
    lloyd_map(d, t, c, K, Tc, mass);
    step = max_abs_diff(Tc, c, K);
    if (step < CB_TOL) break;
    if (step < best) best = step, stalls = 0; else stalls++;
    if (stalls > 200) break; /* at the floating-point floor of the cell integrals: give up */
    /* Newton's first step from a Lloyd warm start often raises the max-norm residual before
     * converging quadratically, so a step is taken when it keeps the centroids ordered and does
     * not blow up; Newton is abandoned (plain Lloyd, which always converges) after 8 steps
     * without a new best. */
    int newton_ok = 0;
    if (it >= CB_LLOYD_WARM && stalls < 8 && newton_step(d, t, Tc, mass, c, K, delta) == 0) {
      for (int i = 0; i < K; i++) trial[i] = c[i] + delta[i];
      if (ordered(d, trial, K)) {
        cells(d, trial, K, tt);
        lloyd_map(d, tt, trial, K, Tt, mt);
        if (max_abs_diff(Tt, trial, K) < 10.0 * step) {
          memcpy(c, trial, sizeof(double) * (size_t)K);
          newton_ok = 1;
        }
      }
    }
    if (!newton_ok) memcpy(c, Tc, sizeof(double) * (size_t)K);
  }
  if (!(step < CB_TOL))
    return sq_fail(e, SQ_EFAIL, "codebook: Lloyd-Max (%s, D=%g, %d bits) did not converge (last step %.3g)",
                   d->beta ? "beta" : "gauss", d->D, bits, step);
  cells(d, c, K, t);
  int N = 2 * K;
  for (int i = 0; i < K; i++) {
    centroid[K + i] = c[i];
    centroid[K - 1 - i] = -c[i];
  }
  for (int i = 0; i < N - 1; i++) boundary[i] = 0.5 * (centroid[i] + centroid[i + 1]);
  boundary[K - 1] = 0.0; /* exactly, whatever the rounding of c - c */
  if (mse) *mse = codebook_mse(d, t, c, K);
  return SQ_OK;
}

int cb_lloyd_gauss(int bits, double *centroid, double *boundary, double *mse, sq_err *e) {
  cb_density d;
  dens_init(&d, 0, 0);
  return lloyd_solve(&d, bits, centroid, boundary, mse, e);
}

int cb_lloyd_beta(int D, int bits, double *centroid, double *boundary, double *mse, sq_err *e) {
  if (D < 3 || D > 1 << 20)
    return sq_fail(e, SQ_EINPUT, "codebook: dimension %d out of range 3..%d for the beta codebook", D, 1 << 20);
  cb_density d;
  dens_init(&d, 1, D);
  return lloyd_solve(&d, bits, centroid, boundary, mse, e);
}

int cb_table_build(cb_table *t, int D, sq_err *e) {
  memset(t, 0, sizeof *t);
  t->D = D;
  double c[256], b[256], mse;
  for (int f = 0; f < CB_NFAM; f++)
    for (int bits = 1; bits <= CB_MAX_BITS; bits++) {
      int st = f == CB_GAUSS ? cb_lloyd_gauss(bits, c, b, &mse, e) : cb_lloyd_beta(D, bits, c, b, &mse, e);
      if (st != SQ_OK) return st;
      int N = 1 << bits;
      for (int i = 0; i < N; i++) t->centroid[f][bits][i] = (float)c[i];
      for (int i = 0; i < N - 1; i++) t->boundary[f][bits][i] = (float)b[i];
      t->mse[f][bits] = mse;
    }
  return SQ_OK;
}
