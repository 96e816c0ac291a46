/* plan_arms: the four plan builders (methods.md §4, §5, §7; CONVENTIONS decisions). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plan_internal.h"
#include "rng.h"
#include "waterfill.h"

#define SQRT_HALF_PI 1.25331413731550025121 /* sqrt(pi/2) */
#define TQ_QJL_SALT 0x9E3779B97F4A7C15ull     /* tq's S is drawn apart from its rotation */

double plan_round_half_even(double x) {
  double r = round(x); /* halves away from zero ... */
  if (fabs(x - trunc(x)) == 0.5) r = 2.0 * round(0.5 * x); /* ... except exact halves: to even */
  return r;
}

static void side_uniform(plan_side *s, int D, int normalize, int family, int bits, float scale) {
  s->D = D;
  s->normalize = normalize;
  s->family = family;
  for (int i = 0; i < D; i++) {
    s->bits[i] = (uint8_t)bits;
    s->scale[i] = scale;
  }
}

/* ---- tq: TurboQuant (Zandieh et al. Algorithm 2) -------------------------------------------- */

int plan_build_tq(plan_pair *out, const plan_knobs *kn, int D, int layer, int head, uint64_t seed, sq_err *e) {
  int b = kn->total_bits;
  if (b < 1 || b > CB_MAX_BITS) return sq_fail(e, SQ_EINPUT, "total_bits %d out of range 1..%d", b, CB_MAX_BITS);
  uint64_t head_seed = rng_head_seed(seed, layer, head);
  uint64_t rot_seed = kn->tq_shared_rotation ? seed : head_seed;
  float *rot = sq_xmalloc(sizeof(float) * (size_t)D * D);
  if (kn->tq_rotation == TQ_HADAMARD) {
    int st = plan_hadamard(rot, D, rot_seed, e);
    if (st != SQ_OK) {
      free(rot);
      return st;
    }
  } else {
    plan_haar(rot, D, rot_seed);
  }
  /* beta: the exact codebook of a unit vector's coordinate (scale 1); gaussian: N(0, 1/D) */
  int family = kn->tq_codebook == TQ_CB_GAUSSIAN ? CB_GAUSS : CB_BETA;
  float scale = family == CB_GAUSS ? (float)(1.0 / sqrt((double)D)) : 1.0f;
  int prod = kn->tq_variant != TQ_MSE;
  side_uniform(&out->k, D, 1, family, prod ? b - 1 : b, scale);
  out->k.rot = rot;
  out->k.owns_rot = 1;
  if (prod) { /* 1-bit QJL on the residual of the (b-1)-bit mse stage: D sketch rows */
    out->k.qjl_rows = D;
    out->k.qjl = sq_xmalloc(sizeof(float) * (size_t)D * D);
    out->k.owns_qjl = 1;
    plan_gaussian(out->k.qjl, D, D, head_seed ^ TQ_QJL_SALT);
    out->k.qjl_coef = SQRT_HALF_PI / D;
  }
  side_uniform(&out->v, D, 1, family, b, scale);
  out->v.rot = sq_xmalloc(sizeof(float) * (size_t)D * D); /* own copy: each side frees its own */
  memcpy(out->v.rot, rot, sizeof(float) * (size_t)D * D);
  out->v.owns_rot = 1;
  /* The papers' formula: b bits per coordinate plus one fp16 norm, for keys and values alike. */
  out->bits_seed_k = out->bits_paper_k = out->bits_seed_v = out->bits_paper_v = (double)b * D + 16;
  return SQ_OK;
}

/* ---- sq: SpectralQuant, the seed engine's semantics (methods.md §4) ------------------------- */

/* One side in its eigenbasis: the semantic block [0, d) at sem_bits (water-filled over
 * lambda[0..d) with bounds [1, sem_bits + 2] when wf and d > 1), the tail at tail_bits. */
static int sq_side(plan_side *s, const calib_head *c, int d, int sem_bits, int tail_bits, int wf, const char *what,
                   sq_err *e) {
  int D = c->D;
  s->D = D;
  s->rot = c->basis;
  s->owns_rot = 0;
  s->normalize = 0;
  s->family = CB_GAUSS;
  int bits[PLAN_MAX_D];
  if (wf && d > 1) {
    int st = wf_allocate(c->eigval, d, d * sem_bits, 1, sem_bits + 2, bits, e);
    if (st != SQ_OK) return sq_wrap(e, "%s water-fill: ", what);
    for (int i = 0; i < d; i++) s->scale[i] = (float)sqrt(fmax(c->eigval[i], 1e-8));
  } else {
    double mean = 0.0;
    for (int i = 0; i < d; i++) mean += c->eigval[i];
    float sigma_hi = (float)sqrt(fmax(mean / d, 1e-8));
    for (int i = 0; i < d; i++) bits[i] = sem_bits, s->scale[i] = sigma_hi;
  }
  for (int i = d; i < D; i++) {
    bits[i] = tail_bits;
    s->scale[i] = (float)sqrt(fmax(c->eigval[i], 1.0 / D));
  }
  for (int i = 0; i < D; i++) {
    if (bits[i] > CB_MAX_BITS)
      return sq_fail(e, SQ_EINPUT, "%s coordinate %d needs %d bits (codebooks go to %d): lower total_bits or noise_bits",
                     what, i, bits[i], CB_MAX_BITS);
    s->bits[i] = (uint8_t)bits[i];
  }
  return SQ_OK;
}

int plan_build_sq(plan_pair *out, const plan_knobs *kn, const calib_head *ck, const calib_head *cv, int layer,
                  int head, uint64_t seed, sq_err *e) {
  int D = ck->D, b = kn->total_bits;
  if (b < 1 || b > CB_MAX_BITS) return sq_fail(e, SQ_EINPUT, "total_bits %d out of range 1..%d", b, CB_MAX_BITS);
  if (!(kn->d_eff_variance > 0.0 && kn->d_eff_variance < 1.0))
    return sq_fail(e, SQ_EINPUT, "d_eff_variance %g out of range (0, 1)", kn->d_eff_variance);
  if ((kn->noise_bits != CFG_NONE && kn->noise_bits < 0) ||
      (kn->value_noise_bits != CFG_NONE && kn->value_noise_bits < 0))
    return sq_fail(e, SQ_EINPUT, "noise_bits/value_noise_bits must be none or >= 0");
  int d = calib_deff(ck, kn->d_eff_variance), dv = calib_deff(cv, kn->d_eff_variance);
  int b_low, b_low_v, b_high;
  if (kn->noise_bits != CFG_NONE) {
    int vnb = kn->value_noise_bits == CFG_NONE ? kn->noise_bits : kn->value_noise_bits;
    b_low = kn->noise_bits > 1 ? kn->noise_bits : 1;
    b_low_v = vnb > 1 ? vnb : 1;
    b_high = b + 1;
  } else {
    int r = (int)plan_round_half_even(b - (double)d / D);
    b_low = b_low_v = r > 1 ? r : 1;
    b_high = b_low + 1;
  }
  int mse_bits_high = b_high - 1 > 1 ? b_high - 1 : 1; /* one bit of b_high is the QJL sign's */
  int wf = kn->use_water_fill != 0;
  int st = sq_side(&out->k, ck, d, mse_bits_high, b_low, wf, "key", e);
  if (st == SQ_OK) st = sq_side(&out->v, cv, dv, b_high, b_low_v, wf, "value", e);
  if (st != SQ_OK) return st;
  if (kn->use_qjl) { /* S_sem: the first d rows of a DxD N(0,1) draw from the head's seed */
    out->k.qjl_rows = d;
    out->k.qjl = sq_xmalloc(sizeof(float) * (size_t)d * D);
    out->k.owns_qjl = 1;
    plan_gaussian(out->k.qjl, d, D, rng_head_seed(seed, layer, head));
    out->k.qjl_coef = SQRT_HALF_PI / d;
  }
  out->d_eff_k = d;
  out->d_eff_v = dv;
  /* Seed accounting: keys sum(bits) + (qjl ? d : 0) + 32, the semantic block charged d*b_high
   * when not water-filled; values sum(bits). */
  int tail_k = 0, sem_k = 0, sum_v = 0;
  for (int i = 0; i < D; i++) {
    if (i < d) sem_k += out->k.bits[i]; else tail_k += out->k.bits[i];
    sum_v += out->v.bits[i];
  }
  if (!(wf && d > 1)) sem_k = d * b_high;
  out->bits_seed_k = out->bits_paper_k = sem_k + tail_k + (kn->use_qjl ? d : 0) + 32;
  out->bits_seed_v = out->bits_paper_v = sum_v;
  return SQ_OK;
}

/* ---- sq_paper_v1: what the SpectralQuant paper's main table ran (methods.md §7) ------------- */

int plan_build_sqv1(plan_pair *out, const plan_knobs *kn, const calib_head *ck, sq_err *e) {
  int D = ck->D, b = kn->total_bits;
  if (b < 2 || b > CB_MAX_BITS)
    return sq_fail(e, SQ_EINPUT, "total_bits %d out of range 2..%d (keys use total_bits - 1 >= 1)", b, CB_MAX_BITS);
  float scale = (float)(1.0 / sqrt((double)D)); /* TurboQuant's N(0, 1/D) codebook */
  side_uniform(&out->k, D, 1, CB_GAUSS, b - 1, scale);
  side_uniform(&out->v, D, 1, CB_GAUSS, b, scale);
  out->k.rot = out->v.rot = ck->basis; /* values too are rotated into the KEY eigenbasis */
  return SQ_OK;
}

/* ---- lowrank: top-r eigen-coordinates in fp16, the rest dropped ----------------------------- */

static void lowrank_side(plan_side *s, const calib_head *c, int r) {
  s->D = c->D;
  s->rot = c->basis;
  s->family = CB_GAUSS;
  for (int i = 0; i < c->D; i++) {
    s->bits[i] = i < r ? PLAN_BITS_FP16 : 0;
    s->scale[i] = i < r ? 1.0f : 0.0f;
  }
}

int plan_build_lowrank(plan_pair *out, const plan_knobs *kn, const calib_head *ck, const calib_head *cv,
                       sq_err *e) {
  int D = ck->D;
  if (kn->rank < 0 || kn->rank > D) return sq_fail(e, SQ_EINPUT, "rank %d out of range 0..%d", kn->rank, D);
  if (kn->rank == 0 && !(kn->d_eff_variance > 0.0 && kn->d_eff_variance < 1.0))
    return sq_fail(e, SQ_EINPUT, "rank 0 needs d_eff_variance in (0, 1), got %g", kn->d_eff_variance);
  int rk = kn->rank ? kn->rank : calib_deff(ck, kn->d_eff_variance);
  int rv = kn->rank ? kn->rank : calib_deff(cv, kn->d_eff_variance);
  lowrank_side(&out->k, ck, rk);
  lowrank_side(&out->v, cv, rv);
  out->d_eff_k = rk;
  out->d_eff_v = rv;
  return SQ_OK;
}
