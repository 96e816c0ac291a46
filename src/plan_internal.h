/* plan_internal: the arm builders behind plan_build (plan_arms.c). Private to the plan module:
 * each fills out->k / out->v (everything but code_bits/code_bytes) and, for tq and sq, the
 * seed/paper accountings; plan_build finalizes and fills the honest accounting. */
#ifndef SQEXP_PLAN_INTERNAL_H
#define SQEXP_PLAN_INTERNAL_H
#include "plan.h"

int plan_build_tq(plan_pair *out, const plan_knobs *kn, int D, int layer, int head, uint64_t seed, sq_err *e);
int plan_build_sq(plan_pair *out, const plan_knobs *kn, const calib_head *ck, const calib_head *cv, int layer,
                  int head, uint64_t seed, sq_err *e);
int plan_build_sqv1(plan_pair *out, const plan_knobs *kn, const calib_head *ck, sq_err *e);
int plan_build_lowrank(plan_pair *out, const plan_knobs *kn, const calib_head *ck, const calib_head *cv,
                       sq_err *e);
/* Python's round(): halves to even (the seed engine's round(total_bits - d/D)). */
double plan_round_half_even(double x);

#endif
