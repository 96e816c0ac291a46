/* waterfill: greedy reverse water-filling of bits over eigen-coordinates (methods.md §3). */
#ifndef SQEXP_WATERFILL_H
#define SQEXP_WATERFILL_H
#include "err.h"

/* bits[i] for i < d: start at min_bits, then give (budget - d*min_bits) single bits, each to
 * argmax_i max(lambda_i,1e-12) / 4^bits_i among i with bits_i < max_bits (ties: lowest index).
 * Refuses (SQ_EINPUT) negative lambda, budget < d*min_bits or budget > d*max_bits, d < 1. */
int wf_allocate(const double *lambda, int d, int budget, int min_bits, int max_bits, int *bits,
                sq_err *e);

#endif
