/* tu_plans: every plan kind the harness builds, as knobs, for the tests that run them all
 * (gpu_agree, test_codes_sched): tq prod/mse x haar/hadamard x beta/gaussian at 3 bits, b = 1, a
 * shared rotation at 4 bits; sq at 3 bits with / without water-filling and QJL, noise bits 1
 * (with QJL), value noise bits 2; sq_paper_v1; lowrank with a fixed rank (8) and rank = d_eff. */
#ifndef SQEXP_TU_PLANS_H
#define SQEXP_TU_PLANS_H
#include "plan.h"

int tu_all_knobs(plan_knobs *out);

#endif
