/* The packed codes of every arm, checked against an obvious unpacked re-implementation written
 * here: code size = the accounting formulas of methods.md §4-5, §7 and CONVENTIONS (written out
 * below from the knobs, not read from the plan); the bit stream (read by a naive bit reader) holds
 * exactly the fp16 norm, the brute-force nearest-centroid index of every coordinate, the QJL
 * signs of S(x - x^) and fp16 |r|; decode reconstructs x^ from those; raw fp16 round-trips. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "calib.h"
#include "codebook.h"
#include "cpu/kcpu.h"
#include "f16.h"
#include "plan.h"
#include "rng.h"
#include "util/tu_layer.h"

#define DIM 64
#define NTOK 300

typedef struct {
  cb_table *cb;
  calib_head ck, cv;
  float *x[2];          /* [NTOK][DIM] test keys, values */
} fixture;

static void fixture_init(fixture *f) {
  sq_err e = {0};
  f->cb = malloc(sizeof *f->cb);
  cr_assert_eq(cb_table_build(f->cb, DIM, &e), SQ_OK, "%s", e.msg);
  float *cal_k, *cal_v;
  tu_rows(&cal_k, 2000, 1, DIM, 0, 7);
  tu_rows(&cal_v, 2000, 1, DIM, 1, 7);
  cr_assert_eq(calib_compute(cal_k, 2000, DIM, DIM, 0, &f->ck, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(calib_compute(cal_v, 2000, DIM, DIM, 0, &f->cv, &e), SQ_OK, "%s", e.msg);
  free(cal_k), free(cal_v);
  tu_rows(&f->x[0], NTOK, 1, DIM, 0, 99);
  tu_rows(&f->x[1], NTOK, 1, DIM, 1, 99);
}

static void fixture_free(fixture *f) {
  calib_head_free(&f->ck), calib_head_free(&f->cv);
  free(f->cb), free(f->x[0]), free(f->x[1]);
}

static uint32_t naive_bits(const uint8_t *code, int pos, int n) {
  uint32_t v = 0;
  for (int k = 0; k < n; k++) v |= (uint32_t)((code[(pos + k) / 8] >> ((pos + k) % 8)) & 1) << k;
  return v;
}

/* y = rot . (x / |x|), in double. */
static void naive_project(const plan_side *p, const float *x, double *y, double *norm) {
  double n = 1, u[PLAN_MAX_D];
  if (p->normalize) {
    n = 0;
    for (int j = 0; j < DIM; j++) n += (double)x[j] * x[j];
    n = sqrt(n);
  }
  for (int j = 0; j < DIM; j++) u[j] = n > 0 ? x[j] / n : 0;
  for (int i = 0; i < DIM; i++) {
    y[i] = 0;
    for (int j = 0; j < DIM; j++) y[i] += (p->rot ? p->rot[i * DIM + j] : (i == j)) * u[j];
  }
  *norm = n;
}

/* Nearest centroid by brute force; *ambiguous when t sits within 1e-5 of a decision boundary. */
static uint32_t nearest(const float *cent, int bits, double t, int *ambiguous) {
  int best = 0, K = 1 << bits;
  for (int c = 1; c < K; c++)
    if (fabs(t - cent[c]) < fabs(t - cent[best])) best = c;
  *ambiguous = 0;
  for (int c = 0; c + 1 < K; c++)
    if (fabs(t - 0.5 * ((double)cent[c] + cent[c + 1])) < 1e-5) *ambiguous = 1;
  return (uint32_t)best;
}

/* Check one side on every test row; returns the number of ambiguous coordinates skipped. */
static int check_side(const fixture *f, const plan_side *p, const float *X, const char *what) {
  sq_err e = {0};
  kcpu_layout lay;
  cr_assert_eq(kcpu_layout_of(p, &lay, &e), SQ_OK, "%s: %s", what, e.msg);
  int skipped = 0;
  uint8_t code[2048];
  for (int t = 0; t < NTOK; t++) {
    const float *x = X + t * DIM;
    kcpu_encode_row(p, &lay, f->cb, x, code);
    for (int b = lay.bits; b < lay.bytes * 8; b++) cr_assert_eq(naive_bits(code, b, 1), 0u, "%s: padding", what);
    double y[PLAN_MAX_D], n, yh[PLAN_MAX_D];
    naive_project(p, x, y, &n);
    int pos = 0;
    double nh = 1;
    if (p->normalize) {
      uint32_t h = naive_bits(code, 0, 16);
      cr_assert_eq(h, (uint32_t)f32_to_f16((float)n), "%s row %d: stored norm", what, t);
      nh = f16_to_f32((uint16_t)h), pos = 16;
    }
    for (int i = 0; i < DIM; i++) {
      int b = p->bits[i];
      uint32_t got = naive_bits(code, pos, b);
      pos += b;
      if (b == 0) yh[i] = 0;
      else if (b == 16) {
        cr_assert_eq(got, (uint32_t)f32_to_f16((float)y[i]), "%s row %d coord %d: raw fp16", what, t, i);
        yh[i] = f16_to_f32((uint16_t)got);
      } else {
        int amb;
        const float *cent = f->cb->centroid[p->family][b];
        uint32_t want = nearest(cent, b, y[i] / p->scale[i], &amb);
        if (amb) skipped++;
        else cr_assert_eq(got, want, "%s row %d coord %d (%d bits): index %u, nearest %u", what, t, i, b, got, want);
        yh[i] = (double)p->scale[i] * cent[got];
      }
    }
    /* decode = nh * rot^T yh from the stored fields */
    float xh[PLAN_MAX_D];
    double r[PLAN_MAX_D], rr = 0;
    kcpu_decode_row(p, &lay, f->cb, code, xh);
    for (int j = 0; j < DIM; j++) {
      double want = 0;
      for (int i = 0; i < DIM; i++) want += (p->rot ? p->rot[i * DIM + j] : (i == j)) * yh[i];
      want *= nh;
      cr_assert(fabs(xh[j] - want) <= 1e-5 * (1 + fabs(want)), "%s row %d: decode %g vs %g", what, t, xh[j], want);
      r[j] = x[j] - want;
      rr += r[j] * r[j];
    }
    if (p->qjl_rows > 0) {
      for (int k = 0; k < p->qjl_rows; k++) {
        double sr = 0;
        for (int j = 0; j < DIM; j++) sr += p->qjl[k * DIM + j] * r[j];
        if (fabs(sr) < 1e-4 * sqrt(rr)) { skipped++; continue; }
        cr_assert_eq(naive_bits(code, pos + k, 1), sr < 0 ? 1u : 0u, "%s row %d: sign %d", what, t, k);
      }
      pos += p->qjl_rows;
      float rn = f16_to_f32((uint16_t)naive_bits(code, pos, 16));
      cr_assert(fabs(rn - sqrt(rr)) <= 1e-3 * sqrt(rr) + 1e-6, "%s row %d: |r| %g vs %g", what, t, rn, sqrt(rr));
      pos += 16;
    }
    cr_assert_eq(pos, lay.bits, "%s: fields end at %d, layout says %d", what, pos, lay.bits);
  }
  return skipped;
}

static plan_knobs knobs(int arm, int b) {
  plan_knobs k = {.arm = arm, .total_bits = b, .noise_bits = CFG_NONE, .value_noise_bits = CFG_NONE,
                  .d_eff_variance = 0.9, .use_water_fill = 1};
  return k;
}

/* methods.md accounting, from the knobs. */
static void expected_bits(const fixture *f, const plan_knobs *k, int *bk, int *bv) {
  int b = k->total_bits, D = DIM;
  switch (k->arm) {
  case ARM_TQ:
    *bk = k->tq_variant == TQ_PROD ? (b - 1) * D + D + 32 : b * D + 16;
    *bv = b * D + 16;
    break;
  case ARM_SQ: {
    int d = calib_deff(&f->ck, k->d_eff_variance), dv = calib_deff(&f->cv, k->d_eff_variance);
    int lo, lov, hi;
    if (k->noise_bits == CFG_NONE) {
      double r = b - (double)d / D, fl = floor(r);
      int rounded = (int)(r - fl == 0.5 ? (fmod(fl, 2) == 0 ? fl : fl + 1) : floor(r + 0.5));
      lo = lov = rounded > 1 ? rounded : 1, hi = lo + 1;
    } else {
      int vnb = k->value_noise_bits == CFG_NONE ? k->noise_bits : k->value_noise_bits;
      lo = k->noise_bits > 1 ? k->noise_bits : 1, lov = vnb > 1 ? vnb : 1, hi = b + 1;
    }
    int mhi = hi - 1 > 1 ? hi - 1 : 1;
    *bk = d * mhi + (D - d) * lo + (k->use_qjl ? d + 16 : 0);
    *bv = dv * hi + (D - dv) * lov;
    break;
  }
  case ARM_SQV1:
    *bk = (b - 1) * D + 16, *bv = b * D + 16;
    break;
  default: {
    int rk = k->rank ? k->rank : calib_deff(&f->ck, k->d_eff_variance);
    int rv = k->rank ? k->rank : calib_deff(&f->cv, k->d_eff_variance);
    *bk = 16 * rk, *bv = 16 * rv;
  }
  }
}

static void check_arm(fixture *f, plan_knobs k) {
  plan_pair pp;
  sq_err e = {0};
  cr_assert_eq(plan_build(&pp, &k, &f->ck, &f->cv, 3, 1, 42, &e), SQ_OK, "%s", e.msg);
  int bk, bv;
  expected_bits(f, &k, &bk, &bv);
  kcpu_layout lk, lv;
  cr_assert_eq(kcpu_layout_of(&pp.k, &lk, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(kcpu_layout_of(&pp.v, &lv, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(lk.bits, bk, "%s: K layout %d bits, accounting %d", pp.key, lk.bits, bk);
  cr_expect_eq(lv.bits, bv, "%s: V layout %d bits, accounting %d", pp.key, lv.bits, bv);
  cr_expect_eq(pp.k.code_bits, bk, "%s: plan K code_bits %d, accounting %d", pp.key, pp.k.code_bits, bk);
  cr_expect_eq(pp.v.code_bits, bv, "%s: plan V code_bits %d, accounting %d", pp.key, pp.v.code_bits, bv);
  cr_expect_eq(pp.k.code_bytes, (bk + 7) / 8, "%s", pp.key);
  cr_expect_eq(pp.v.code_bytes, (bv + 7) / 8, "%s", pp.key);
  cr_expect_eq(lk.bytes, pp.k.code_bytes);
  cr_expect_eq(pp.bits_honest_k, (double)bk);
  int skipped = check_side(f, &pp.k, f->x[0], pp.key) + check_side(f, &pp.v, f->x[1], pp.key);
  cr_expect_lt(skipped, NTOK * DIM / 100, "%s: %d ambiguous coordinates", pp.key, skipped);
  cr_log_info("%-60s K %4d V %4d bits  (%d ambiguous skipped)", pp.key, bk, bv, skipped);
  plan_pair_free(&pp);
}

TestSuite(pack, .timeout = 300);

Test(pack, tq_every_variant) {
  fixture f;
  fixture_init(&f);
  for (int b = 1; b <= 4; b++)
    for (int var = 0; var < 2; var++)
      for (int rot = 0; rot < 2; rot++)
        for (int cbk = 0; cbk < 2; cbk++) {
          if (b > 2 && (rot || cbk)) continue; /* the full cross at b = 1, 2; defaults above */
          plan_knobs k = knobs(ARM_TQ, b);
          k.tq_variant = var ? TQ_MSE : TQ_PROD, k.tq_rotation = rot ? TQ_HADAMARD : TQ_HAAR;
          k.tq_codebook = cbk ? TQ_CB_GAUSSIAN : TQ_CB_BETA;
          check_arm(&f, k);
        }
  fixture_free(&f);
}

Test(pack, sq_knob_combinations) {
  fixture f;
  fixture_init(&f);
  const int nb[] = {CFG_NONE, 1, 2}, vnb[] = {CFG_NONE, 2};
  for (int b = 2; b <= 4; b++)
    for (int i = 0; i < 3; i++)
      for (int wf = 0; wf < 2; wf++)
        for (int qjl = 0; qjl < 2; qjl++)
          for (int v = 0; v < 2; v++) {
            if (nb[i] == CFG_NONE && v) continue; /* value_noise_bits needs noise_bits */
            plan_knobs k = knobs(ARM_SQ, b);
            k.noise_bits = nb[i], k.value_noise_bits = vnb[v], k.use_water_fill = wf, k.use_qjl = qjl;
            check_arm(&f, k);
          }
  fixture_free(&f);
}

Test(pack, sq_paper_v1_and_lowrank) {
  fixture f;
  fixture_init(&f);
  for (int b = 2; b <= 4; b++) check_arm(&f, knobs(ARM_SQV1, b));
  const int ranks[] = {0, 1, 5, DIM};
  for (int i = 0; i < 4; i++) {
    plan_knobs k = knobs(ARM_LOWRANK, 0);
    k.rank = ranks[i];
    check_arm(&f, k);
  }
  fixture_free(&f);
}

/* A hand-made side mixing every width (0..8, 16) without rotation: fp16-exact inputs come back
 * bit for bit, and the index stream is LSB-first in coordinate order. */
Test(pack, mixed_widths_and_raw_fp16) {
  fixture f;
  fixture_init(&f);
  plan_side p = {.D = DIM, .family = CB_GAUSS};
  for (int i = 0; i < DIM; i++) {
    p.bits[i] = (uint8_t)(i % 5 == 4 ? 16 : i % 10);
    if (p.bits[i] == 9) p.bits[i] = 0;
    p.scale[i] = 0.5f + 0.01f * i;
  }
  plan_side_finalize(&p);
  check_side(&f, &p, f.x[0], "mixed");
  /* raw round trip: every coordinate fp16, values exactly representable */
  plan_side raw = {.D = DIM, .family = CB_GAUSS};
  for (int i = 0; i < DIM; i++) raw.bits[i] = 16, raw.scale[i] = 1;
  plan_side_finalize(&raw);
  kcpu_layout lay;
  sq_err e = {0};
  cr_assert_eq(kcpu_layout_of(&raw, &lay, &e), SQ_OK);
  cr_assert_eq(lay.bytes, 2 * DIM);
  float x[DIM], xh[DIM];
  uint8_t code[2 * DIM];
  for (int i = 0; i < DIM; i++) x[i] = f16_to_f32(f32_to_f16(f.x[0][i] * 100.0f)) * (i == 7 ? 0 : 1);
  kcpu_encode_row(&raw, &lay, f.cb, x, code);
  kcpu_decode_row(&raw, &lay, f.cb, code, xh);
  for (int i = 0; i < DIM; i++) {
    cr_assert_eq(xh[i], x[i], "raw coord %d: %g -> %g", i, x[i], xh[i]);
    cr_assert_eq(code[2 * i] | code[2 * i + 1] << 8, f32_to_f16(x[i]), "little-endian fp16 at coord %d", i);
  }
  /* invalid widths are refused */
  raw.bits[3] = 9;
  cr_assert_eq(kcpu_layout_of(&raw, &lay, &e), SQ_EINPUT);
  fixture_free(&f);
}
