/* ortho: modified Gram-Schmidt on the rows of a small dense matrix, in double, for bases that must
 * be orthonormal to double rounding (synthetic dumps' random bases; the subspace overlaps of the
 * stability experiment, whose float calibration bases are orthonormal only to ~1e-7). */
#ifndef SQEXP_ORTHO_H
#define SQEXP_ORTHO_H
#include <math.h>

/* rows [n][D] in place: each row loses its components along the rows before it (`passes` times:
 * 2 re-orthogonalises), then is scaled to unit norm (a zero row stays zero). */
static inline void ortho_rows(double *rows, int n, int D, int passes) {
  for (int i = 0; i < n; i++) {
    double *b = rows + (size_t)i * D;
    for (int pass = 0; pass < passes; pass++)
      for (int p = 0; p < i; p++) {
        const double *u = rows + (size_t)p * D;
        double dot = 0;
        for (int j = 0; j < D; j++) dot += u[j] * b[j];
        for (int j = 0; j < D; j++) b[j] -= dot * u[j];
      }
    double nrm = 0;
    for (int j = 0; j < D; j++) nrm += b[j] * b[j];
    nrm = sqrt(nrm);
    for (int j = 0; j < D; j++) b[j] = nrm > 0 ? b[j] / nrm : 0;
  }
}

#endif
