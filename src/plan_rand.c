/* plan_rand: the random matrices plans carry (Haar and randomized-Hadamard rotations, Gaussian
 * QJL sketches), all drawn on the host from rng.h so that every backend sees identical plans.
 * Draw orders are fixed by CONVENTIONS (see docs/methods.md). */
#include <gsl/gsl_linalg.h>
#include <gsl/gsl_matrix.h>
#include <math.h>
#include <stdlib.h>

#include "plan.h"
#include "rng.h"

void plan_gaussian(float *m, int rows, int D, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed);
  for (size_t i = 0; i < (size_t)rows * (size_t)D; i++) m[i] = (float)rng_normal(&r);
}

/* A = D*D normals (row-major), A = QR by Householder in double, rot = Q diag(sign(R_ii)):
 * the QR with a positive diagonal R is unique, so this is the Haar draw whatever the QR routine,
 * and rot (rows = basis vectors, y = rot . x) is Q itself. */
void plan_haar(float *rot, int D, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed);
  size_t n = (size_t)D;
  double *buf = sq_xmalloc(sizeof(double) * (3 * n * n + n)); /* A, Q, R, tau */
  gsl_matrix_view A = gsl_matrix_view_array(buf, n, n), Q = gsl_matrix_view_array(buf + n * n, n, n),
                  R = gsl_matrix_view_array(buf + 2 * n * n, n, n);
  gsl_vector_view tau = gsl_vector_view_array(buf + 3 * n * n, n);
  for (size_t i = 0; i < n * n; i++) buf[i] = rng_normal(&r); /* row-major, as drawn */
  gsl_linalg_QR_decomp(&A.matrix, &tau.vector);
  gsl_linalg_QR_unpack(&A.matrix, &tau.vector, &Q.matrix, &R.matrix);
  for (size_t j = 0; j < n; j++) {
    double s = gsl_matrix_get(&R.matrix, j, j) < 0.0 ? -1.0 : 1.0;
    for (size_t i = 0; i < n; i++) rot[i * n + j] = (float)(s * gsl_matrix_get(&Q.matrix, i, j));
  }
  free(buf);
}

static int parity(unsigned x) {
  int p = 0;
  while (x) p ^= 1, x &= x - 1;
  return p;
}

/* rot = H diag(s) / sqrt(D), H the Sylvester Hadamard matrix (H_ij = (-1)^popcount(i&j)),
 * s_j = -1 when the j-th draw is odd: D draws, one per column. */
int plan_hadamard(float *rot, int D, uint64_t seed, sq_err *e) {
  if (D < 1 || (D & (D - 1)) != 0)
    return sq_fail(e, SQ_EINPUT, "hadamard rotation needs head_dim a power of two, got %d (use tq rotation = haar)", D);
  rng_t r;
  rng_seed(&r, seed);
  int *s = sq_xmalloc(sizeof(int) * (size_t)D);
  for (int j = 0; j < D; j++) s[j] = (rng_next(&r) & 1) ? -1 : 1;
  float h = (float)(1.0 / sqrt((double)D));
  for (int i = 0; i < D; i++)
    for (int j = 0; j < D; j++) rot[(size_t)i * D + j] = (parity((unsigned)(i & j)) ? -h : h) * (float)s[j];
  free(s);
  return SQ_OK;
}
