/* Plan builders against hand-computed plans (methods.md §4, §5, §7 and the CONVENTIONS
 * decisions). Every expected bit vector below is worked out in the comments, not by the code.
 *
 * The sq head (D = 16):
 *   keys   l = 8, 4, 2, 1, .15 x6, .05 x6        sum 16.2
 *          cumsum/sum = .4938 .7407 .8642 .9259 .9352 .9444 .9537 .9630 ...
 *          d_eff(.90) = #{<.90} + 1 = 3 + 1 = 4;  d_eff(.96) = 7 + 1 = 8
 *   values l = 4 x6, 1 x10                        sum 34
 *          cumsum/sum = 4k/34 (k<=6: up to .7059), then 25/34=.7353 ... 31/34=.9118, 32/34=.9412,
 *          33/34=.9706, 1
 *          d_eff(.90) = 12 + 1 = 13;  d_eff(.96) = 14 + 1 = 15 -> clamp D-2 = 14
 * Water-filling by hand (priority l / 4^b, ties to the lowest index):
 *   keys 8,4,2,1 with 12 bits in [1,5]: start 1,1,1,1 (+8): #0 #1 #0 #2 #1 #3 #0 #2 -> 4,3,3,2
 *   keys 8,4,2,1 with  8 bits in [1,4]: (+4) #0 #1 #0 #2                          -> 3,2,2,1
 *   keys 8,4,2,1,.15x4 with 16 bits in [1,4]: the first 8 extra bits as above      -> 4,3,3,2,1,1,1,1
 *   values 4x6,1x7 (d=13): the 4s are always one "level" ahead of the 1s: +6 to the 4s, then
 *     rounds of 13 (4s first), then the rest to the lowest indices:
 *     52 bits in [1,6] (+39 = 6+13+13+7) -> 5x6, 4, 3x6
 *     39 bits in [1,5] (+26 = 6+13+7)    -> 4x6, 3, 2x6
 *   values 4x6,1x8 (d=14), 42 bits in [1,5] (+28 = 6+14+8) -> 4x6, 3, 3, 2x6 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "cfg.h"
#include "plan.h"
#include "rng.h"

#define D16 16

static double lk[D16] = {8, 4, 2, 1, .15, .15, .15, .15, .15, .15, .05, .05, .05, .05, .05, .05};
static double lv[D16] = {4, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
static float basis_k[D16 * D16], basis_v[D16 * D16];

static calib_head head_of(double *l, float *basis, int D) {
  calib_head h;
  memset(&h, 0, sizeof h);
  h.D = D;
  h.eigval = l;
  h.basis = basis;
  for (int i = 0; i < D; i++) basis[i * D + (i + 3) % D] = 1.0f; /* a permutation: any basis will do */
  return h;
}

static plan_knobs sq_knobs(int b, int nb, int vnb, double tau, int wf, int qjl) {
  plan_knobs k;
  memset(&k, 0, sizeof k);
  k.arm = ARM_SQ;
  k.total_bits = b;
  k.noise_bits = nb;
  k.value_noise_bits = vnb;
  k.d_eff_variance = tau;
  k.use_water_fill = wf;
  k.use_qjl = qjl;
  return k;
}

static void expect_side(const plan_side *s, const int *bits, const float *scale, const char *what) {
  for (int i = 0; i < s->D; i++) {
    cr_expect_eq(s->bits[i], bits[i], "%s: bits[%d] = %d, want %d", what, i, s->bits[i], bits[i]);
    cr_expect(fabsf(s->scale[i] - scale[i]) <= 1e-6f * scale[i], "%s: scale[%d] = %.7g, want %.7g", what, i,
              (double)s->scale[i], (double)scale[i]);
  }
}

/* key tail scales: sqrt(max(l, 1/16)): .15 -> sqrt(.15); .05 -> sqrt(1/16) = .25 */
#define S15 0.3872983346f
#define TAILK_4 S15, S15, S15, S15, S15, S15, .25f, .25f, .25f, .25f, .25f, .25f

static void build_sq(plan_pair *p, plan_knobs kn, calib_head *ck, calib_head *cv) {
  sq_err e = {0};
  cr_assert_eq(plan_build(p, &kn, ck, cv, 2, 1, 42, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(p->k.rot, ck->basis, "sq keys live in the key eigenbasis");
  cr_expect_eq(p->v.rot, cv->basis, "sq values live in the value eigenbasis");
  cr_expect(!p->k.owns_rot && !p->v.owns_rot);
  cr_expect(!p->k.normalize && !p->v.normalize, "sq stores no norms");
  cr_expect(p->k.family == CB_GAUSS && p->v.family == CB_GAUSS);
  cr_expect_eq(p->k.code_bytes, (p->k.code_bits + 7) / 8);
  cr_expect_eq(p->v.code_bytes, (p->v.code_bits + 7) / 8);
}

/* b=3, noise none, tau .90, water-fill: d = 4, b_low = round(3 - 4/16 = 2.75) = 3, b_high = 4,
 * mse_bits_high = 3. keys: wf(8,4,2,1; 12; [1,5]) = 4,3,3,2 at sqrt(l); tail 3 bits.
 * values: dv = 13, wf(52; [1,6]) = 5x6,4,3x6 at sqrt(l) = 2x6, 1x7; tail 3 bits at 1. */
Test(plan, sq_noise_none_waterfill) {
  calib_head ck = head_of(lk, basis_k, D16), cv = head_of(lv, basis_v, D16);
  plan_pair p;
  build_sq(&p, sq_knobs(3, CFG_NONE, CFG_NONE, 0.90, 1, 0), &ck, &cv);
  cr_expect_eq(p.d_eff_k, 4);
  cr_expect_eq(p.d_eff_v, 13);
  expect_side(&p.k, (int[]){4, 3, 3, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3},
              (float[]){2.8284271f, 2, 1.4142136f, 1, TAILK_4}, "keys");
  expect_side(&p.v, (int[]){5, 5, 5, 5, 5, 5, 4, 3, 3, 3, 3, 3, 3, 3, 3, 3},
              (float[]){2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, "values");
  cr_expect_eq(p.k.qjl_rows, 0);
  /* honest: keys 12 + 12*3 = 48 bits (6 bytes); values 52 + 3*3 = 61 (8 bytes).
   * seed: keys 48 + 32 = 80; values 61. */
  cr_expect_eq(p.k.code_bits, 48);
  cr_expect_eq(p.k.code_bytes, 6);
  cr_expect_eq(p.v.code_bits, 61);
  cr_expect_eq(p.v.code_bytes, 8);
  cr_expect_eq(p.bits_honest_k, 48);
  cr_expect_eq(p.bits_seed_k, 80);
  cr_expect_eq(p.bits_paper_k, 80);
  cr_expect_eq(p.bits_seed_v, 61);
  cr_expect_eq(p.layer, 2);
  cr_expect_eq(p.head, 1);
  cr_expect_str_eq(p.key, "sq:b=3,nb=none,vnb=none,tau=0.90,wf=1,qjl=0");
  plan_pair_free(&p);
}

/* As above without water-fill: keys semantic 3 bits at sigma_hi = sqrt(mean(8,4,2,1)) =
 * sqrt(3.75); values semantic b_high = 4 bits at sqrt((6*4 + 7*1)/13) = sqrt(31/13).
 * seed keys charge d*b_high = 16 for the semantic block: 16 + 36 + 32 = 84. */
Test(plan, sq_noise_none_no_waterfill) {
  calib_head ck = head_of(lk, basis_k, D16), cv = head_of(lv, basis_v, D16);
  plan_pair p;
  build_sq(&p, sq_knobs(3, CFG_NONE, CFG_NONE, 0.90, 0, 0), &ck, &cv);
  float sk = 1.9364917f, sv = 1.5442200f;
  expect_side(&p.k, (int[]){3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}, (float[]){sk, sk, sk, sk, TAILK_4},
              "keys");
  expect_side(&p.v, (int[]){4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 3, 3, 3},
              (float[]){sv, sv, sv, sv, sv, sv, sv, sv, sv, sv, sv, sv, sv, 1, 1, 1}, "values");
  cr_expect_eq(p.k.code_bits, 48);
  cr_expect_eq(p.bits_seed_k, 84);
  cr_expect_eq(p.v.code_bits, 61);
  cr_expect_eq(p.bits_seed_v, 61);
  plan_pair_free(&p);
}

/* b=2, noise_bits 1: b_low = b_low_v = 1, b_high = 3, mse_bits_high = 2.
 * keys wf(8,4,2,1; 8; [1,4]) = 3,2,2,1, tail 1; values wf(d=13; 39; [1,5]) = 4x6,3,2x6, tail 1.
 * honest keys 8 + 12 = 20 bits (3 bytes), seed 52; values 39 + 3 = 42. */
Test(plan, sq_noise_bits_1) {
  calib_head ck = head_of(lk, basis_k, D16), cv = head_of(lv, basis_v, D16);
  plan_pair p;
  build_sq(&p, sq_knobs(2, 1, CFG_NONE, 0.90, 1, 0), &ck, &cv);
  expect_side(&p.k, (int[]){3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
              (float[]){2.8284271f, 2, 1.4142136f, 1, TAILK_4}, "keys");
  expect_side(&p.v, (int[]){4, 4, 4, 4, 4, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1},
              (float[]){2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, "values");
  cr_expect_eq(p.k.code_bits, 20);
  cr_expect_eq(p.k.code_bytes, 3);
  cr_expect_eq(p.bits_seed_k, 52);
  cr_expect_eq(p.v.code_bits, 42);
  cr_expect_str_eq(p.key, "sq:b=2,nb=1,vnb=none,tau=0.90,wf=1,qjl=0");
  plan_pair_free(&p);
}

/* b=3, noise_bits 2, value_noise_bits 1, QJL: b_low 2, b_low_v 1, b_high 4, mse_bits_high 3.
 * keys 4,3,3,2 + 2 x12 and d = 4 sign rows: honest 12 + 24 + 4 + 16 = 56 (7 bytes), seed
 * 12 + 24 + 4 + 32 = 72. values 5x6,4,3x6 + 1 x3: 55. S_sem = first 4 rows of the N(0,1) draw
 * seeded 42 + 1000*2 + 1 = 2043; coef sqrt(pi/2)/4. */
Test(plan, sq_noise_2_value_noise_1_qjl) {
  calib_head ck = head_of(lk, basis_k, D16), cv = head_of(lv, basis_v, D16);
  plan_pair p;
  build_sq(&p, sq_knobs(3, 2, 1, 0.90, 1, 1), &ck, &cv);
  expect_side(&p.k, (int[]){4, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2},
              (float[]){2.8284271f, 2, 1.4142136f, 1, TAILK_4}, "keys");
  expect_side(&p.v, (int[]){5, 5, 5, 5, 5, 5, 4, 3, 3, 3, 3, 3, 3, 1, 1, 1},
              (float[]){2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, "values");
  cr_expect_eq(p.k.code_bits, 56);
  cr_expect_eq(p.k.code_bytes, 7);
  cr_expect_eq(p.bits_seed_k, 72);
  cr_expect_eq(p.v.code_bits, 55);
  cr_expect_eq(p.k.qjl_rows, 4);
  cr_expect(fabs(p.k.qjl_coef - 1.2533141373155 / 4) < 1e-12);
  cr_expect_eq(p.v.qjl_rows, 0);
  rng_t r;
  rng_seed(&r, 2043);
  for (int i = 0; i < 4 * D16; i++) cr_expect_eq(p.k.qjl[i], (float)rng_normal(&r), "S_sem entry %d", i);
  cr_expect_str_eq(p.key, "sq:b=3,nb=2,vnb=1,tau=0.90,wf=1,qjl=1");
  plan_pair_free(&p);
}

/* tau .96: d = 8, b_low = round_half_even(3 - 8/16 = 2.5) = 2 (not 3), b_high 3, msb 2.
 * keys wf(8,4,2,1,.15x4; 16; [1,4]) = 4,3,3,2,1,1,1,1, tail 2 bits (l = .15,.15,.05 x6).
 * values dv = 14 (clamped), wf(4x6,1x8; 42; [1,5]) = 4x6,3,3,2x6, tail 2. */
Test(plan, sq_tau_96_half_even_and_clamp) {
  calib_head ck = head_of(lk, basis_k, D16), cv = head_of(lv, basis_v, D16);
  plan_pair p;
  build_sq(&p, sq_knobs(3, CFG_NONE, CFG_NONE, 0.96, 1, 0), &ck, &cv);
  cr_expect_eq(p.d_eff_k, 8);
  cr_expect_eq(p.d_eff_v, 14);
  expect_side(&p.k, (int[]){4, 3, 3, 2, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2},
              (float[]){2.8284271f, 2, 1.4142136f, 1, S15, S15, S15, S15, S15, S15, .25f, .25f, .25f, .25f, .25f, .25f},
              "keys");
  expect_side(&p.v, (int[]){4, 4, 4, 4, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2},
              (float[]){2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, "values");
  cr_expect_eq(p.k.code_bits, 32);
  cr_expect_eq(p.v.code_bits, 46); /* 42 + 2 tail coordinates x 2 bits */
  cr_expect_str_eq(p.key, "sq:b=3,nb=none,vnb=none,tau=0.96,wf=1,qjl=0");
  plan_pair_free(&p);
}

/* noise_bits 0 means 1 bit (max(1, nb)); value_noise_bits 0 likewise. */
Test(plan, sq_noise_zero_is_one_bit) {
  calib_head ck = head_of(lk, basis_k, D16), cv = head_of(lv, basis_v, D16);
  plan_pair p;
  build_sq(&p, sq_knobs(3, 0, 0, 0.90, 1, 0), &ck, &cv);
  for (int i = 4; i < D16; i++) cr_expect_eq(p.k.bits[i], 1);
  for (int i = 13; i < D16; i++) cr_expect_eq(p.v.bits[i], 1);
  plan_pair_free(&p);
}

/* b=8, noise none: b_low = round(7.75) = 8, b_high 9, keys wf(8,4,2,1; 32; [1,10]) gives the top
 * coordinate 9 bits > 8: refused. Without water-fill the values need b_high = 9: refused too. */
Test(plan, sq_refuses_more_than_8_bits) {
  calib_head ck = head_of(lk, basis_k, D16), cv = head_of(lv, basis_v, D16);
  plan_pair p;
  sq_err e = {0};
  plan_knobs kn = sq_knobs(8, CFG_NONE, CFG_NONE, 0.90, 1, 0);
  cr_expect_eq(plan_build(&p, &kn, &ck, &cv, 0, 0, 42, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "sq:b=8") && strstr(e.msg, "key coordinate 0"), "%s", e.msg);
  kn.use_water_fill = 0;
  cr_expect_eq(plan_build(&p, &kn, &ck, &cv, 0, 0, 42, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "value coordinate") != NULL, "%s", e.msg);
  plan_pair_free(&p); /* safe after a refusal */
}

/* ---- tq ------------------------------------------------------------------------------------- */

static plan_knobs tq_knobs(int b, int variant, int rotation, int codebook, int shared) {
  plan_knobs k;
  memset(&k, 0, sizeof k);
  k.arm = ARM_TQ;
  k.total_bits = b;
  k.tq_variant = variant;
  k.tq_rotation = rotation;
  k.tq_codebook = codebook;
  k.tq_shared_rotation = shared;
  return k;
}

static double max_orth_err(const float *R, int D) {
  double m = 0;
  for (int a = 0; a < D; a++)
    for (int b = 0; b < D; b++) {
      double s = 0;
      for (int i = 0; i < D; i++) s += (double)R[i * D + a] * R[i * D + b];
      m = fmax(m, fabs(s - (a == b)));
    }
  return m;
}

Test(plan, tq_accounting_and_layout) {
  calib_head h = {.D = 128};
  plan_pair p;
  sq_err e = {0};
  plan_knobs kn = tq_knobs(3, TQ_PROD, TQ_HAAR, TQ_CB_BETA, 0);
  cr_assert_eq(plan_build(&p, &kn, &h, &h, 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  /* keys: fp16 norm + 2 bits x128 + 128 signs + fp16 |r| = (b-1)D + D + 32 = 416; values bD+16 = 400 */
  cr_expect_eq(p.k.code_bits, 416);
  cr_expect_eq(p.k.code_bytes, 52);
  cr_expect_eq(p.v.code_bits, 400);
  cr_expect_eq(p.bits_honest_k, 416);
  cr_expect_eq(p.bits_paper_k, 400);
  cr_expect_eq(p.bits_paper_v, 400);
  cr_expect_eq(p.bits_seed_k, 400);
  double ratio = 2.0 * 16 * 128 / (p.bits_paper_k + p.bits_paper_v);
  cr_expect(fabs(ratio - 5.12) < 1e-12, "paper ratio %g", ratio);
  double honest = 2.0 * 16 * 128 / (p.bits_honest_k + p.bits_honest_v);
  cr_expect(fabs(honest - 4096.0 / 816) < 1e-12, "honest ratio %g (methods.md: 5.02)", honest);
  cr_expect(p.k.normalize && p.v.normalize);
  cr_expect(p.k.family == CB_BETA && p.v.family == CB_BETA);
  for (int i = 0; i < 128; i++) {
    cr_expect(p.k.bits[i] == 2 && p.v.bits[i] == 3);
    cr_expect(p.k.scale[i] == 1.0f && p.v.scale[i] == 1.0f);
  }
  cr_expect_eq(p.k.qjl_rows, 128);
  cr_expect(fabs(p.k.qjl_coef - 1.2533141373155 / 128) < 1e-12);
  cr_expect(p.k.owns_rot && p.v.owns_rot && p.k.rot != p.v.rot);
  cr_expect(memcmp(p.k.rot, p.v.rot, sizeof(float) * 128 * 128) == 0, "one rotation for K and V");
  cr_expect(max_orth_err(p.k.rot, 128) < 1e-5, "R^T R = I: %g", max_orth_err(p.k.rot, 128));
  /* S: D*D normals from seed (42 + 0) ^ 0x9E3779B97F4A7C15 */
  rng_t r;
  rng_seed(&r, 42ull ^ 0x9E3779B97F4A7C15ull);
  for (int i = 0; i < 128 * 128; i++) cr_assert_eq(p.k.qjl[i], (float)rng_normal(&r), "S entry %d", i);
  cr_expect_str_eq(p.key, "tq:b=3,prod,haar,beta,rot=head");
  plan_pair_free(&p);

  /* mse variant: keys bD + 16 = 400, no QJL; gaussian codebook: scale 1/sqrt(D) */
  kn = tq_knobs(3, TQ_MSE, TQ_HAAR, TQ_CB_GAUSSIAN, 0);
  cr_assert_eq(plan_build(&p, &kn, &h, &h, 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(p.k.code_bits, 400);
  cr_expect_eq(p.k.qjl_rows, 0);
  cr_expect(p.k.family == CB_GAUSS && fabsf(p.k.scale[5] - 0.08838835f) < 1e-7f);
  cr_expect_str_eq(p.key, "tq:b=3,mse,haar,gaussian,rot=head");
  plan_pair_free(&p);

  /* prod at b = 1: no mse stage (0 bits everywhere), keys = D + 32 = 160 */
  kn = tq_knobs(1, TQ_PROD, TQ_HAAR, TQ_CB_BETA, 0);
  cr_assert_eq(plan_build(&p, &kn, &h, &h, 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(p.k.code_bits, 160);
  for (int i = 0; i < 128; i++) cr_expect_eq(p.k.bits[i], 0);
  cr_expect_eq(p.v.code_bits, 144);
  plan_pair_free(&p);
}

/* Haar = Q of QR(A) with R's diagonal made positive: exactly what Gram-Schmidt on A's columns
 * gives, written here in double. A = D*D normals row-major from seed + 1000 layer + head. */
Test(plan, haar_is_gram_schmidt_of_the_draw) {
  enum { D = 16 };
  float rot[D * D];
  plan_haar(rot, D, 5003);
  double A[D * D], Q[D * D];
  rng_t r;
  rng_seed(&r, 5003);
  for (int i = 0; i < D * D; i++) A[i] = rng_normal(&r);
  for (int j = 0; j < D; j++) {
    double v[D];
    for (int i = 0; i < D; i++) v[i] = A[i * D + j];
    for (int pass = 0; pass < 2; pass++) /* twice is enough (Kahan) */
      for (int k = 0; k < j; k++) {
        double dot = 0;
        for (int i = 0; i < D; i++) dot += Q[i * D + k] * v[i];
        for (int i = 0; i < D; i++) v[i] -= dot * Q[i * D + k];
      }
    double nn = 0;
    for (int i = 0; i < D; i++) nn += v[i] * v[i];
    for (int i = 0; i < D; i++) Q[i * D + j] = v[i] / sqrt(nn);
  }
  for (int i = 0; i < D * D; i++) cr_expect(fabs(rot[i] - Q[i]) < 1e-5, "entry %d: %g vs %g", i, rot[i], Q[i]);
}

Test(plan, tq_rotation_seeding) {
  calib_head h = {.D = 64};
  plan_pair a, b, c, s1, s2;
  sq_err e = {0};
  plan_knobs kn = tq_knobs(2, TQ_PROD, TQ_HAAR, TQ_CB_BETA, 0);
  cr_assert_eq(plan_build(&a, &kn, &h, &h, 1, 2, 7, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(plan_build(&b, &kn, &h, &h, 1, 2, 7, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(plan_build(&c, &kn, &h, &h, 1, 3, 7, &e), SQ_OK, "%s", e.msg);
  cr_expect(memcmp(a.k.rot, b.k.rot, sizeof(float) * 64 * 64) == 0, "deterministic in the seed");
  cr_expect(memcmp(a.k.rot, c.k.rot, sizeof(float) * 64 * 64) != 0, "per-head rotations differ");
  float ref[64 * 64];
  plan_haar(ref, 64, 7 + 1000 + 2);
  cr_expect(memcmp(a.k.rot, ref, sizeof ref) == 0, "per-head seed = seed + 1000 layer + head");
  kn.tq_shared_rotation = 1;
  cr_assert_eq(plan_build(&s1, &kn, &h, &h, 1, 2, 7, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(plan_build(&s2, &kn, &h, &h, 4, 0, 7, &e), SQ_OK, "%s", e.msg);
  plan_haar(ref, 64, 7);
  cr_expect(memcmp(s1.k.rot, ref, sizeof ref) == 0 && memcmp(s2.k.rot, ref, sizeof ref) == 0,
            "shared rotation = the run seed for every head");
  cr_expect(memcmp(s1.k.qjl, s2.k.qjl, sizeof(float) * 64 * 64) != 0, "S stays per head");
  cr_expect_str_eq(s1.key, "tq:b=2,prod,haar,beta,rot=shared");
  plan_pair_free(&a), plan_pair_free(&b), plan_pair_free(&c), plan_pair_free(&s1), plan_pair_free(&s2);
}

/* Hadamard: entries exactly +-(float)(1/sqrt(D)); rot[i][j] = (-1)^popcount(i&j) s_j / sqrt(D) with
 * s_j = -1 for an odd j-th draw; orthogonal; refuses D not a power of two. */
Test(plan, hadamard) {
  enum { D = 32 };
  float rot[D * D];
  sq_err e = {0};
  cr_assert_eq(plan_hadamard(rot, D, 99, &e), SQ_OK, "%s", e.msg);
  rng_t r;
  rng_seed(&r, 99);
  int s[D];
  for (int j = 0; j < D; j++) s[j] = (rng_next(&r) & 1) ? -1 : 1;
  float h = (float)(1.0 / sqrt(32.0));
  for (int i = 0; i < D; i++)
    for (int j = 0; j < D; j++) {
      int par = __builtin_popcount((unsigned)(i & j)) & 1;
      cr_expect_eq(rot[i * D + j], (par ? -h : h) * s[j], "entry (%d,%d)", i, j);
    }
  cr_expect(max_orth_err(rot, D) < 1e-6);
  float big[96 * 96];
  cr_expect_eq(plan_hadamard(big, 96, 1, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "96") != NULL, "%s", e.msg);
  calib_head h96 = {.D = 96};
  plan_pair p;
  plan_knobs kn = tq_knobs(3, TQ_PROD, TQ_HADAMARD, TQ_CB_BETA, 0);
  cr_expect_eq(plan_build(&p, &kn, &h96, &h96, 0, 0, 1, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "tq:b=3,prod,hadamard,beta,rot=head") != NULL, "%s", e.msg);
  plan_pair_free(&p);
}

/* ---- sq_paper_v1 and lowrank ---------------------------------------------------------------- */

Test(plan, sq_paper_v1_accounting) {
  static double l128[128];
  static float b128[128 * 128], bv128[128 * 128];
  for (int i = 0; i < 128; i++) l128[i] = 1.0 / (1 + i);
  calib_head ck = head_of(l128, b128, 128), cv = head_of(l128, bv128, 128);
  plan_knobs kn;
  memset(&kn, 0, sizeof kn);
  kn.arm = ARM_SQV1;
  kn.total_bits = 3;
  plan_pair p;
  sq_err e = {0};
  cr_assert_eq(plan_build(&p, &kn, &ck, &cv, 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  /* keys 16 + 2*128 = 272, values 16 + 3*128 = 400: 4096 / 672 = 6.095 */
  cr_expect_eq(p.k.code_bits, 272);
  cr_expect_eq(p.v.code_bits, 400);
  cr_expect_eq(p.bits_paper_k, 272);
  cr_expect_eq(p.bits_seed_v, 400);
  cr_expect(fabs(4096.0 / (p.bits_paper_k + p.bits_paper_v) - 6.0952380952) < 1e-9);
  cr_expect(p.k.rot == ck.basis && p.v.rot == ck.basis, "values use the KEY basis");
  cr_expect(p.k.normalize && p.v.normalize && p.k.family == CB_GAUSS);
  cr_expect(fabsf(p.v.scale[17] - 0.08838835f) < 1e-7f);
  cr_expect_str_eq(p.key, "sq_paper_v1:b=3");
  plan_pair_free(&p);
  kn.total_bits = 1;
  cr_expect_eq(plan_build(&p, &kn, &ck, &cv, 0, 0, 42, &e), SQ_EINPUT);
}

Test(plan, lowrank) {
  calib_head ck = head_of(lk, basis_k, D16), cv = head_of(lv, basis_v, D16);
  plan_knobs kn;
  memset(&kn, 0, sizeof kn);
  kn.arm = ARM_LOWRANK;
  kn.rank = 5;
  plan_pair p;
  sq_err e = {0};
  cr_assert_eq(plan_build(&p, &kn, &ck, &cv, 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  for (int i = 0; i < D16; i++) cr_expect(p.k.bits[i] == (i < 5 ? 16 : 0) && p.v.bits[i] == (i < 5 ? 16 : 0));
  cr_expect(p.k.code_bits == 80 && p.v.code_bits == 80 && p.bits_seed_k == 80 && p.bits_paper_v == 80);
  cr_expect(p.k.rot == ck.basis && p.v.rot == cv.basis);
  cr_expect_str_eq(p.key, "lowrank:r=5");
  plan_pair_free(&p);
  kn.rank = 0; /* r = d_eff(.9): 4 for keys, 13 for values */
  kn.d_eff_variance = 0.9;
  cr_assert_eq(plan_build(&p, &kn, &ck, &cv, 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  cr_expect(p.k.code_bits == 64 && p.v.code_bits == 208, "%d %d", p.k.code_bits, p.v.code_bits);
  cr_expect_str_eq(p.key, "lowrank:r=0,tau=0.90");
  plan_pair_free(&p);
  kn.rank = 17;
  cr_expect_eq(plan_build(&p, &kn, &ck, &cv, 0, 0, 42, &e), SQ_EINPUT);
}

/* code_bits of every arm = the per-arm formula of methods.md §4-§5, §7 (written out here). */
Test(plan, code_bits_match_methods_formulas) {
  calib_head ck = head_of(lk, basis_k, D16), cv = head_of(lv, basis_v, D16);
  sq_err e = {0};
  plan_pair p;
  for (int b = 1; b <= 8; b++)
    for (int v = 0; v < 2; v++) {
      plan_knobs kn = tq_knobs(b, v, TQ_HADAMARD, TQ_CB_BETA, 0);
      cr_assert_eq(plan_build(&p, &kn, &ck, &cv, 0, 0, 3, &e), SQ_OK, "%s", e.msg);
      int want_k = v == TQ_PROD ? (b - 1) * D16 + D16 + 32 : b * D16 + 16;
      cr_expect_eq(p.k.code_bits, want_k, "tq b=%d v=%d", b, v);
      cr_expect_eq(p.v.code_bits, b * D16 + 16);
      cr_expect_eq(p.k.code_bytes, (want_k + 7) / 8);
      plan_pair_free(&p);
    }
  for (int b = 1; b <= 6; b++)
    for (int q = 0; q < 2; q++) {
      plan_knobs kn = sq_knobs(b, b % 3 == 0 ? CFG_NONE : b % 3, CFG_NONE, 0.9, b % 2, q);
      cr_assert_eq(plan_build(&p, &kn, &ck, &cv, 0, 0, 3, &e), SQ_OK, "%s", e.msg);
      int sk = 0, sv = 0;
      for (int i = 0; i < D16; i++) sk += p.k.bits[i], sv += p.v.bits[i];
      cr_expect_eq(p.k.code_bits, sk + (q ? p.d_eff_k + 16 : 0), "sq b=%d qjl=%d", b, q);
      cr_expect_eq(p.v.code_bits, sv);
      plan_pair_free(&p);
    }
  for (int b = 2; b <= 8; b++) {
    plan_knobs kn = {.arm = ARM_SQV1, .total_bits = b};
    cr_assert_eq(plan_build(&p, &kn, &ck, &cv, 0, 0, 3, &e), SQ_OK, "%s", e.msg);
    cr_expect(p.k.code_bits == 16 + (b - 1) * D16 && p.v.code_bits == 16 + b * D16);
    plan_pair_free(&p);
  }
}

Test(plan, bad_input) {
  calib_head ck = head_of(lk, basis_k, D16), c8 = {.D = 8};
  plan_knobs kn = sq_knobs(3, CFG_NONE, CFG_NONE, 0.9, 1, 0);
  plan_pair p;
  sq_err e = {0};
  cr_expect_eq(plan_build(&p, &kn, &ck, &c8, 0, 0, 1, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "head_dim") != NULL, "%s", e.msg);
  cr_expect_eq(plan_build(&p, &kn, &ck, NULL, 0, 0, 1, &e), SQ_EINPUT);
  kn.d_eff_variance = 1.0;
  cr_expect_eq(plan_build(&p, &kn, &ck, &ck, 0, 0, 1, &e), SQ_EINPUT);
  kn = sq_knobs(3, CFG_NONE, CFG_NONE, 0.9, 1, 0);
  kn.arm = 9;
  cr_expect_eq(plan_build(&p, &kn, &ck, &ck, 0, 0, 1, &e), SQ_EINPUT);
  plan_pair_free(&p);
}

/* ---- keys and grid -------------------------------------------------------------------------- */

Test(plan, keys) {
  char buf[256];
  plan_knobs kn = sq_knobs(4, CFG_NONE, 2, 0.905, 0, 1);
  plan_knobs_key(&kn, buf, sizeof buf);
  cr_expect_str_eq(buf, "sq:b=4,nb=none,vnb=2,tau=0.905,wf=0,qjl=1");
  kn = tq_knobs(2, TQ_MSE, TQ_HADAMARD, TQ_CB_GAUSSIAN, 1);
  plan_knobs_key(&kn, buf, sizeof buf);
  cr_expect_str_eq(buf, "tq:b=2,mse,hadamard,gaussian,rot=shared");
  cr_expect_str_eq(plan_arm_names[ARM_TQ], "tq");
  cr_expect_str_eq(plan_arm_names[ARM_SQ], "sq");
  cr_expect_str_eq(plan_arm_names[ARM_SQV1], "sq_paper_v1");
  cr_expect_str_eq(plan_arm_names[ARM_LOWRANK], "lowrank");
}

static void set_i(cfg_ilist *l, int n, const int *v) {
  l->n = n;
  memcpy(l->v, v, sizeof(int) * (size_t)n);
}

Test(plan, grid_counts_order_and_unique_keys) {
  static cfg_t c;
  memset(&c, 0, sizeof c);
  c.tq.enabled = c.sq.enabled = c.sqv1.enabled = c.lowrank.enabled = 1;
  set_i(&c.tq.total_bits, 3, (int[]){2, 3, 4});
  set_i(&c.tq.variant, 2, (int[]){TQ_PROD, TQ_MSE});
  set_i(&c.tq.rotation, 1, (int[]){TQ_HAAR});
  set_i(&c.tq.codebook, 1, (int[]){TQ_CB_BETA});
  set_i(&c.tq.shared_rotation, 1, (int[]){0});
  set_i(&c.sq.total_bits, 2, (int[]){2, 3});
  set_i(&c.sq.noise_bits, 3, (int[]){CFG_NONE, 1, 2});
  set_i(&c.sq.value_noise_bits, 2, (int[]){CFG_NONE, 1});
  c.sq.d_eff_variance.n = 1, c.sq.d_eff_variance.v[0] = 0.9;
  set_i(&c.sq.use_water_fill, 2, (int[]){1, 0});
  set_i(&c.sq.use_qjl, 1, (int[]){0});
  set_i(&c.sqv1.total_bits, 2, (int[]){2, 3});
  set_i(&c.lowrank.rank, 2, (int[]){0, 8});
  c.lowrank.d_eff_variance.n = 2, c.lowrank.d_eff_variance.v[0] = 0.9, c.lowrank.d_eff_variance.v[1] = 0.95;
  plan_knobs *g = NULL;
  int n = 0;
  sq_err e = {0};
  cr_assert_eq(plan_grid(&c, &g, &n, &e), SQ_OK, "%s", e.msg);
  /* tq 3*2 = 6; sq per total_bits: nb none (vnb collapses) 1 + nb 1 x2 + nb 2 x2 = 5, x wf 2 = 10,
   * x 2 bits = 20; sq_paper_v1 2; lowrank rank 0 x 2 taus + rank 8 = 3. Total 31. */
  cr_assert_eq(n, 31);
  const char *first[] = {"tq:b=2,prod,haar,beta,rot=head", "tq:b=2,mse,haar,beta,rot=head",
                         "tq:b=3,prod,haar,beta,rot=head"};
  char buf[256];
  for (int i = 0; i < 3; i++) {
    plan_knobs_key(&g[i], buf, sizeof buf);
    cr_expect_str_eq(buf, first[i]);
  }
  plan_knobs_key(&g[6], buf, sizeof buf);
  cr_expect_str_eq(buf, "sq:b=2,nb=none,vnb=none,tau=0.90,wf=1,qjl=0");
  plan_knobs_key(&g[7], buf, sizeof buf);
  cr_expect_str_eq(buf, "sq:b=2,nb=none,vnb=none,tau=0.90,wf=0,qjl=0");
  plan_knobs_key(&g[8], buf, sizeof buf);
  cr_expect_str_eq(buf, "sq:b=2,nb=1,vnb=none,tau=0.90,wf=1,qjl=0");
  plan_knobs_key(&g[26], buf, sizeof buf);
  cr_expect_str_eq(buf, "sq_paper_v1:b=2");
  plan_knobs_key(&g[28], buf, sizeof buf);
  cr_expect_str_eq(buf, "lowrank:r=0,tau=0.90");
  plan_knobs_key(&g[30], buf, sizeof buf);
  cr_expect_str_eq(buf, "lowrank:r=8");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < i; j++) {
      char a[256], b[256];
      plan_knobs_key(&g[i], a, sizeof a);
      plan_knobs_key(&g[j], b, sizeof b);
      cr_expect(strcmp(a, b) != 0, "duplicate key %s at %d and %d", a, i, j);
    }
  free(g);
  /* only the enabled arms; an enabled arm with an empty list is refused by name */
  c.tq.enabled = c.lowrank.enabled = c.sqv1.enabled = 0;
  cr_assert_eq(plan_grid(&c, &g, &n, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(n, 20);
  free(g);
  c.sq.use_qjl.n = 0;
  cr_expect_eq(plan_grid(&c, &g, &n, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "[sq] use_qjl") != NULL, "%s", e.msg);
  c.sq.use_qjl.n = 1;
  c.sq.total_bits.v[0] = 9;
  cr_expect_eq(plan_grid(&c, &g, &n, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "[sq] total_bits") != NULL, "%s", e.msg);
}
