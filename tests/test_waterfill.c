/* Water-filling (methods.md §3) against hand-worked allocations and a brute-force optimum:
 * the greedy of §3 minimises sum_i lambda_i 4^-b_i over allocations with the given budget and
 * bounds (the objective is separable and convex in each b_i), so an exhaustive search written
 * here must reach the same objective value. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "rng.h"
#include "waterfill.h"

static void expect_bits(const int *got, const int *want, int d, const char *what) {
  for (int i = 0; i < d; i++) cr_expect_eq(got[i], want[i], "%s: bits[%d] = %d, want %d", what, i, got[i], want[i]);
}

Test(waterfill, hand_worked) {
  int bits[8];
  sq_err e = {0};
  /* lambda 4, 1, 1/4; budget 6 in [1, 4]: start 1,1,1 (priorities 1, 1/4, 1/16);
   * +1 -> #0 (2,1,1: 1/4, 1/4, 1/16); tie -> #0 (3,1,1: 1/16, 1/4, 1/16); +1 -> #1 (3,2,1). */
  double l1[] = {4, 1, 0.25};
  cr_assert_eq(wf_allocate(l1, 3, 6, 1, 4, bits, &e), SQ_OK, "%s", e.msg);
  expect_bits(bits, (int[]){3, 2, 1}, 3, "4,1,1/4");
  /* equal lambdas: each extra bit goes to the lowest index still at the lowest level */
  double l2[] = {1, 1, 1, 1};
  cr_assert_eq(wf_allocate(l2, 4, 6, 1, 3, bits, &e), SQ_OK, "%s", e.msg);
  expect_bits(bits, (int[]){2, 2, 1, 1}, 4, "ties");
  /* the cap: 100 vs 1 in [1, 3] with budget 5: #0 -> 2 -> 3 (capped), then #1 -> 2 */
  double l3[] = {100, 1};
  cr_assert_eq(wf_allocate(l3, 2, 5, 1, 3, bits, &e), SQ_OK, "%s", e.msg);
  expect_bits(bits, (int[]){3, 2}, 2, "cap");
  /* zeros are clamped to 1e-12 and still tie-break by index */
  double l4[] = {0, 0};
  cr_assert_eq(wf_allocate(l4, 2, 3, 1, 2, bits, &e), SQ_OK, "%s", e.msg);
  expect_bits(bits, (int[]){2, 1}, 2, "zeros");
  /* budget exactly d*min and d*max */
  cr_assert_eq(wf_allocate(l1, 3, 3, 1, 4, bits, &e), SQ_OK);
  expect_bits(bits, (int[]){1, 1, 1}, 3, "min budget");
  cr_assert_eq(wf_allocate(l1, 3, 12, 1, 4, bits, &e), SQ_OK);
  expect_bits(bits, (int[]){4, 4, 4}, 3, "max budget");
  /* the sq key example of test_plan: 8,4,2,1 with 12 bits in [1,5] -> 4,3,3,2 */
  double l5[] = {8, 4, 2, 1};
  cr_assert_eq(wf_allocate(l5, 4, 12, 1, 5, bits, &e), SQ_OK);
  expect_bits(bits, (int[]){4, 3, 3, 2}, 4, "8,4,2,1");
}

static double objective(const double *l, const int *b, int d) {
  double s = 0;
  for (int i = 0; i < d; i++) s += fmax(l[i], 1e-12) * pow(4.0, -b[i]);
  return s;
}

/* Exhaustive minimum of the objective over b in [lo, hi]^d with sum b = budget. */
static double brute(const double *l, int d, int budget, int lo, int hi, int *b, int i) {
  if (i == d - 1) {
    int last = budget;
    if (last < lo || last > hi) return INFINITY;
    b[i] = last;
    return objective(l, b, d);
  }
  double best = INFINITY;
  for (int v = lo; v <= hi && v <= budget; v++) {
    b[i] = v;
    double o = brute(l, d, budget - v, lo, hi, b, i + 1);
    if (o < best) best = o;
  }
  return best;
}

Test(waterfill, random_properties_and_optimality) {
  rng_t r;
  rng_seed(&r, 2024);
  sq_err e = {0};
  for (int trial = 0; trial < 200; trial++) {
    int d = 1 + (int)(rng_next(&r) % 6), lo = (int)(rng_next(&r) % 3), hi = lo + 1 + (int)(rng_next(&r) % 4);
    int budget = d * lo + (int)(rng_next(&r) % (unsigned)(d * (hi - lo) + 1));
    double l[8];
    for (int i = 0; i < d; i++) l[i] = exp(3.0 * rng_normal(&r));
    if (trial % 5 == 0) l[d - 1] = l[0]; /* some ties */
    int bits[8], tmp[8];
    cr_assert_eq(wf_allocate(l, d, budget, lo, hi, bits, &e), SQ_OK, "%s", e.msg);
    int sum = 0, imax = 0;
    for (int i = 0; i < d; i++) {
      sum += bits[i];
      cr_expect(bits[i] >= lo && bits[i] <= hi, "bits[%d] = %d outside [%d, %d]", i, bits[i], lo, hi);
      if (l[i] > l[imax]) imax = i;
    }
    cr_expect_eq(sum, budget, "sum %d != budget %d", sum, budget);
    for (int i = 0; i < d; i++) {
      cr_expect(bits[imax] >= bits[i], "dominant eigenvalue %d got %d bits < %d of #%d", imax, bits[imax], bits[i], i);
      for (int j = 0; j < d; j++)
        if (l[i] > l[j]) cr_expect(bits[i] >= bits[j], "lambda %g > %g but bits %d < %d", l[i], l[j], bits[i], bits[j]);
    }
    double opt = brute(l, d, budget, lo, hi, tmp, 0), got = objective(l, bits, d);
    cr_expect(got <= opt * (1 + 1e-12), "trial %d: greedy %.17g > optimum %.17g", trial, got, opt);
  }
}

Test(waterfill, invalid_input_rejected) {
  int bits[4];
  sq_err e = {0};
  double ok[] = {3, 2, 1}, neg[] = {3, -1e-9, 1}, nan_l[] = {3, NAN, 1};
  cr_expect_eq(wf_allocate(neg, 3, 6, 1, 4, bits, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "eigenvalue 1") != NULL, "%s", e.msg);
  cr_expect_eq(wf_allocate(nan_l, 3, 6, 1, 4, bits, &e), SQ_EINPUT);
  cr_expect_eq(wf_allocate(ok, 3, 2, 1, 4, bits, &e), SQ_EINPUT, "budget below d*min");
  cr_expect(strstr(e.msg, "budget") != NULL, "%s", e.msg);
  cr_expect_eq(wf_allocate(ok, 3, 13, 1, 4, bits, &e), SQ_EINPUT, "budget above d*max");
  cr_expect_eq(wf_allocate(ok, 0, 0, 1, 4, bits, &e), SQ_EINPUT, "d < 1");
  cr_expect_eq(wf_allocate(ok, 3, 6, 3, 2, bits, &e), SQ_EINPUT, "min > max");
}
