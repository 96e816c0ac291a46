/* waterfill: greedy reverse water-filling (methods.md §3). One more bit on coordinate i divides
 * its Gaussian high-rate distortion ~ lambda_i 4^{-b_i} by 4, so each bit goes where the
 * current distortion is largest. */
#include "waterfill.h"

#include <math.h>

int wf_allocate(const double *lambda, int d, int budget, int min_bits, int max_bits, int *bits,
                sq_err *e) {
  if (d < 1) return sq_fail(e, SQ_EINPUT, "water-fill: dimension d = %d (need d >= 1)", d);
  if (min_bits < 0 || max_bits < min_bits)
    return sq_fail(e, SQ_EINPUT, "water-fill: bit bounds [%d, %d] are invalid (need 0 <= min <= max)",
                   min_bits, max_bits);
  for (int i = 0; i < d; i++)
    if (!(lambda[i] >= 0.0)) /* also catches NaN */
      return sq_fail(e, SQ_EINPUT, "water-fill: eigenvalue %d is %g (need >= 0)", i, lambda[i]);
  if ((long long)budget < (long long)d * min_bits || (long long)budget > (long long)d * max_bits)
    return sq_fail(e, SQ_EINPUT, "water-fill: budget %d bits is outside [d*min, d*max] = [%lld, %lld] (d = %d)",
                   budget, (long long)d * min_bits, (long long)d * max_bits, d);
  for (int i = 0; i < d; i++) bits[i] = min_bits;
  for (int left = budget - d * min_bits; left > 0; left--) {
    int best = -1;
    double best_v = -1.0;
    for (int i = 0; i < d; i++) {
      if (bits[i] >= max_bits) continue;
      /* ldexp scales by an exact power of two, so equal lambdas at equal bits tie exactly */
      double v = ldexp(fmax(lambda[i], 1e-12), -2 * bits[i]);
      if (v > best_v) best = i, best_v = v; /* strict: ties go to the lowest index */
    }
    bits[best] += 1; /* budget <= d*max_bits guarantees a coordinate below max */
  }
  return SQ_OK;
}
