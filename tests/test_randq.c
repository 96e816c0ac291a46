/* The randq protocol's random queries must be independent of every random matrix a plan draws:
 * the QJL estimator is unbiased only for queries independent of its sketch S. methods.md seeds
 * both with seed + 1000*layer + head; drawn literally, the queries would BE S_sem's rows (and the
 * rows of TurboQuant's pre-QR Gaussian), which biased sq+QJL's randq cosine by ~0.03 on the
 * shipped dump. Independent N(0, I) vectors in D = 64 have |cos| ~ 0.13; the largest of 16 x 64
 * pairs stays far below 0.9, while a shared stream gives exactly 1. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include "plan.h"
#include "rng.h"
#include "sweep.h"

static double max_abs_cos(const float *a, int na, const float *b, int nb, int D) {
  double worst = 0.0;
  for (int i = 0; i < na; i++)
    for (int j = 0; j < nb; j++) {
      double dot = 0, ea = 0, eb = 0;
      for (int k = 0; k < D; k++) {
        dot += (double)a[i * D + k] * b[j * D + k];
        ea += (double)a[i * D + k] * a[i * D + k];
        eb += (double)b[j * D + k] * b[j * D + k];
      }
      worst = fmax(worst, fabs(dot) / sqrt(ea * eb));
    }
  return worst;
}

Test(randq, independent_of_plan_sketches) {
  enum { D = 64, NQ = 16 };
  float q[NQ * D], s_sem[D * D];
  for (int layer = 0; layer < 3; layer++)
    for (int head = 0; head < 3; head++) {
      sweep_draw_randq(42, layer, head, NQ * D, q);
      /* SpectralQuant's S_sem and the normals TurboQuant's Haar QR starts from */
      plan_gaussian(s_sem, D, D, rng_head_seed(42, layer, head));
      double c = max_abs_cos(q, NQ, s_sem, D, D);
      cr_expect_lt(c, 0.9, "layer %d head %d: a randq query matches a sketch row (|cos| %.3f)", layer, head, c);
    }
}

Test(randq, deterministic_and_per_head) {
  enum { D = 64, N = 8 * D };
  float a[N], b[N], c[N];
  sweep_draw_randq(7, 2, 1, N, a);
  sweep_draw_randq(7, 2, 1, N, b);
  sweep_draw_randq(7, 2, 2, N, c);
  for (int i = 0; i < N; i++) cr_assert_eq(a[i], b[i], "same (seed, layer, head) must give the same queries");
  cr_expect_lt(max_abs_cos(a, 8, c, 8, D), 0.9, "two heads share queries");
}
