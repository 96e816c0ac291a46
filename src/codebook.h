/* codebook: Lloyd-Max scalar quantizers (methods.md §2). One table holds, for b = 1..8,
 * the unit-variance Gaussian codebook and the TurboQuant codebook for the exact coordinate
 * density of a rotated unit vector in dimension D. Built once per run and shared (read-only) by
 * every plan and both backends. */
#ifndef SQEXP_CODEBOOK_H
#define SQEXP_CODEBOOK_H
#include "err.h"

#define CB_MAX_BITS 8
enum { CB_GAUSS = 0, CB_BETA = 1, CB_NFAM = 2 };

typedef struct {
  int D;                                     /* dimension of the beta family */
  /* centroid[f][b][i], i < 2^b, ascending; boundary[f][b][i], i < 2^b - 1: midpoints.
   * Quantize t: idx = #{i : t > boundary[i]} (ties go to the lower index). */
  float centroid[CB_NFAM][CB_MAX_BITS + 1][256];
  float boundary[CB_NFAM][CB_MAX_BITS + 1][256];
  double mse[CB_NFAM][CB_MAX_BITS + 1];      /* expected squared error under the family's density */
} cb_table;

/* Lloyd-Max for N(0,1) at b bits, iterated to |delta| < 1e-12 with exact Gaussian integrals.
 * centroid/boundary as above (double), returns mse. */
int cb_lloyd_gauss(int bits, double *centroid, double *boundary, double *mse, sq_err *e);
/* Lloyd-Max for f(x) = G(D/2)/(sqrt(pi) G((D-1)/2)) (1-x^2)^((D-3)/2) on [-1,1]. */
int cb_lloyd_beta(int D, int bits, double *centroid, double *boundary, double *mse, sq_err *e);
/* Build the whole table for dimension D. */
int cb_table_build(cb_table *t, int D, sq_err *e);
/* Callable from CUDA kernels too (kernels/cuda), so that every backend searches the same way. */
#ifdef __CUDACC__
#define CB_HOST_DEVICE __host__ __device__
#else
#define CB_HOST_DEVICE
#endif

/* Nearest-centroid index (boundaries search), shared by the CPU and CUDA kernels. */
static inline CB_HOST_DEVICE int cb_quantize(const float *boundary, int bits, float t) {
  int lo = 0, n = (1 << bits) - 1; /* number of boundaries */
  /* binary search for #{i : t > boundary[i]} */
  int hi = n;
  while (lo < hi) {
    int mid = (lo + hi) >> 1;
    if (t > boundary[mid]) lo = mid + 1; else hi = mid;
  }
  return lo;
}

#endif
