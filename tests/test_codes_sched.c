/* test_codes_sched: the grouped code phase's schedule (kernels/codes_sched.c), the CUDA backend's
 * default code phase (SQEXP_CUDA_CODES=plan: per plan instead; kernels/cuda/kcuda_codes.cu maps
 * each operation to one cuBLAS call or kernel), executed here with plain loops in the same buffers and the same
 * arithmetic (unit rows and projections in double, the quantiser, rot^T yh in double, fp16 norms),
 * for every plan kind the harness builds, with the limits the backend uses and with limits small
 * enough for several row chunks and plan groups. Every decoded row must be the CPU reference's
 * (kcpu_encode_row + kcpu_decode_row) and every row's statistics k_rec's: a wrong slot, rotation,
 * normalize flag or chunk offset anywhere in the schedule decodes another plan's or another
 * row's data. The schedule's own invariants are checked too. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "calib.h"
#include "codebook.h"
#include "codes_sched.h"
#include "cpu/kcpu.h"
#include "f16.h"
#include "plan.h"
#include "util/tu_layer.h"
#include "util/tu_plans.h"

#define D 64
#define HKV 2
#define NCAL 2000
#define NTOK 301
#define MAXP 32

static cb_table cb;
static calib_head ck, cv;
static float *xk, *xv; /* [NTOK][HKV][D]: the rows of head 0 are coded */
static plan_pair pp[MAXP];
static int np;

/* Every plan kind (tu_plans; the keys with QJL are left to the per-plan path, as in the backend). */
static void setup(void) {
  sq_err e = {0};
  cr_assert_eq(cb_table_build(&cb, D, &e), SQ_OK, "%s", e.msg);
  float *kr, *vr;
  tu_rows(&kr, NCAL, HKV, D, 0, 11);
  tu_rows(&vr, NCAL, HKV, D, 1, 11);
  cr_assert_eq(calib_compute(kr, NCAL, HKV * D, D, 0, &ck, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(calib_compute(vr, NCAL, HKV * D, D, 0, &cv, &e), SQ_OK, "%s", e.msg);
  free(kr);
  free(vr);
  tu_rows(&xk, NTOK, HKV, D, 0, 12); /* (other draws than the calibration's) */
  tu_rows(&xv, NTOK, HKV, D, 1, 12);
  plan_knobs kn[MAXP];
  const int n = tu_all_knobs(kn);
  for (int i = 0; i < n; i++)
    cr_assert_eq(plan_build(&pp[i], &kn[i], &ck, &cv, 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  np = n;
}

static void teardown(void) {
  for (int i = 0; i < np; i++) plan_pair_free(&pp[i]);
  calib_head_free(&ck);
  calib_head_free(&cv);
  free(xk);
  free(xv);
}

TestSuite(codes_sched, .init = setup, .fini = teardown);

/* The executor's buffers, as the CUDA backend's (kc_codes): u, norm [2][chunk], y, yh, acc
 * [gmax][chunk][D]; and per side the decoded rows [np][NTOK][D] and statistics [np][NTOK][3]. */
typedef struct {
  double *u, *y, *yh, *acc;
  float *norm;
  float *dst[2];
  double *rec[2];
} exec_bufs;

static const float *side_x(int s) { return s ? xv : xk; }
static const plan_side *side_of(int i, int s) { return s ? &pp[i].v : &pp[i].k; }

/* The schedule's input as the backend builds it: every plan's side, those without QJL handled. */
typedef struct {
  const plan_side *ps[2][MAXP];
  int idx[2 * MAXP], m[2];
  csched_side in[2];
} sched_inputs;

static void sched_inputs_make(sched_inputs *I) {
  for (int s = 0; s < 2; s++) {
    I->m[s] = 0;
    for (int i = 0; i < np; i++) {
      I->ps[s][i] = side_of(i, s);
      if (I->ps[s][i]->qjl_rows == 0) I->idx[s * MAXP + I->m[s]++] = i; /* the backend's selection */
    }
    I->in[s] = (csched_side){I->m[s], I->idx + s * MAXP, I->ps[s]};
  }
}

/* k_quant: one coordinate's decoded projection. */
static double quant(const plan_side *p, int i, double yd) {
  const float yv = (float)yd;
  const int b = p->bits[i];
  if (b == 0) return 0.0;
  if (b == PLAN_BITS_FP16) return (double)f16_to_f32(f32_to_f16(yv));
  int k = cb_quantize(cb.boundary[p->family][b], b, yv / p->scale[i]);
  return (double)(p->scale[i] * cb.centroid[p->family][b][k]);
}

static void exec_op(const csched *c, const csched_op *o, exec_bufs *B) {
  const int64_t ch = c->chunk;
  const float *x = side_x(o->side) + o->row0 * HKV * D; /* head 0's rows, stride HKV D */
  double *u = B->u + (int64_t)o->nz * ch * D;
  float *norm = B->norm + (int64_t)o->nz * ch;
  for (int64_t t = 0; t < o->rows; t++) {
    const float *xr = x + t * HKV * D;
    switch (o->kind) {
    case CSCHED_PREP: {
      double ss = 0.0, n = 1.0;
      if (o->nz) {
        for (int j = 0; j < D; j++) ss += (double)xr[j] * xr[j];
        n = sqrt(ss);
      }
      for (int j = 0; j < D; j++)
        u[t * D + j] = o->nz ? (n > 0.0 ? (double)(float)((double)xr[j] / n) : 0.0) : (double)xr[j];
      norm[t] = o->nz ? f16_to_f32(f32_to_f16((float)n)) : 1.0f;
      break;
    }
    case CSCHED_PROJ:
      for (int r = 0; r < o->n_rot; r++) {
        const float *rot = c->rot[o->rot0 + r];
        double *y = B->y + ((int64_t)(o->y + r) * o->rows + t) * D;
        for (int i = 0; i < D; i++) {
          double a = 0.0;
          for (int j = 0; j < D; j++) a += (double)rot[i * D + j] * u[t * D + j];
          y[i] = a;
        }
      }
      break;
    case CSCHED_QUANT: {
      const plan_side *p = side_of(o->plan, o->side);
      const double *y = o->y >= 0 ? B->y + ((int64_t)o->y * o->rows + t) * D : u + t * D;
      double *yh = B->yh + ((int64_t)o->slot * o->rows + t) * D;
      for (int i = 0; i < D; i++) yh[i] = quant(p, i, y[i]);
      break;
    }
    case CSCHED_RECON:
      for (int k = 0; k < o->n_slot; k++) {
        const float *rot = c->rot[o->rot0];
        const double *yh = B->yh + ((int64_t)(o->slot + k) * o->rows + t) * D;
        double *acc = B->acc + ((int64_t)(o->slot + k) * o->rows + t) * D;
        for (int j = 0; j < D; j++) acc[j] = 0.0;
        for (int i = 0; i < D; i++)
          for (int j = 0; j < D; j++) acc[j] += (double)rot[i * D + j] * yh[i];
      }
      break;
    case CSCHED_FINISH: {
      const double *a = (o->from_acc ? B->acc : B->yh) + ((int64_t)o->slot * o->rows + t) * D;
      float *xh = B->dst[o->side] + ((int64_t)o->plan * NTOK + o->row0 + t) * D;
      double *rec = B->rec[o->side] + ((int64_t)o->plan * NTOK + o->row0 + t) * 3;
      double dot = 0, nx = 0, nh = 0, err = 0;
      for (int j = 0; j < D; j++) {
        xh[j] = (float)((double)norm[t] * a[j]);
        double xa = xr[j], xb = xh[j];
        dot += xa * xb, nx += xa * xa, nh += xb * xb, err += (xa - xb) * (xa - xb);
      }
      rec[0] = kcpu_cos(dot, nx, nh), rec[1] = err, rec[2] = nx;
      break;
    }
    }
  }
}

/* The schedule's invariants: per side and chunk every handled plan is quantised and finished
 * exactly once; slots and projection slots inside gmax; rows inside the layer. */
static void check_invariants(const csched *c, const int *idx, const int m[2]) {
  for (int s = 0; s < 2; s++)
    for (int64_t row0 = 0; row0 < NTOK; row0 += c->chunk) {
      int nq[MAXP] = {0}, nf[MAXP] = {0};
      for (int i = 0; i < c->n_op; i++) {
        const csched_op *o = &c->op[i];
        if (o->side != s || o->row0 != row0) continue;
        cr_assert(o->rows > 0 && o->row0 + o->rows <= NTOK, "op %d rows %lld + %lld", i, (long long)o->row0,
                  (long long)o->rows);
        if (o->kind == CSCHED_QUANT) {
          nq[o->plan]++;
          cr_assert(o->slot < c->gmax && o->y < c->gmax);
        }
        if (o->kind == CSCHED_FINISH) {
          nf[o->plan]++;
          cr_assert(o->slot < c->gmax);
        }
        if (o->kind == CSCHED_PROJ) cr_assert(o->n_rot >= 1 && o->y + o->n_rot <= c->gmax);
        if (o->kind == CSCHED_RECON) cr_assert(o->n_slot >= 1 && o->slot + o->n_slot <= c->gmax);
      }
      for (int j = 0; j < m[s]; j++) {
        const int p = idx[s * MAXP + j];
        cr_assert_eq(nq[p], 1, "side %d chunk %lld plan %d quantised %d times", s, (long long)row0, p, nq[p]);
        cr_assert_eq(nf[p], 1, "side %d chunk %lld plan %d finished %d times", s, (long long)row0, p, nf[p]);
      }
    }
}

/* Build the schedule with these limits, run it, compare with the CPU reference. */
static void run_case(int64_t max_rows, int64_t max_bytes, int want_chunks_gt1, int want_groups_gt1) {
  sched_inputs I;
  sched_inputs_make(&I);
  csched c;
  csched_build(&c, I.in, NTOK, D, max_rows, max_bytes);
  cr_assert(c.chunk >= 1 && c.gmax >= 1);
  if (want_chunks_gt1) cr_assert_lt(c.chunk, NTOK, "chunk %lld", (long long)c.chunk);
  if (want_groups_gt1) cr_assert_lt(c.gmax, I.m[0], "gmax %d", c.gmax);
  check_invariants(&c, I.idx, I.m);
  exec_bufs B;
  B.u = calloc((size_t)(2 * c.chunk * D), sizeof(double));
  B.norm = calloc((size_t)(2 * c.chunk), sizeof(float));
  B.y = calloc((size_t)(c.gmax * c.chunk * D), sizeof(double));
  B.yh = calloc((size_t)(c.gmax * c.chunk * D), sizeof(double));
  B.acc = calloc((size_t)(c.gmax * c.chunk * D), sizeof(double));
  for (int s = 0; s < 2; s++) {
    B.dst[s] = malloc((size_t)(np * NTOK * D) * sizeof(float));
    B.rec[s] = malloc((size_t)(np * NTOK * 3) * sizeof(double));
    for (int64_t i = 0; i < (int64_t)np * NTOK * D; i++) B.dst[s][i] = NAN; /* every handled row written */
  }
  for (int i = 0; i < c.n_op; i++) exec_op(&c, &c.op[i], &B);
  int bad_rows = 0, checked = 0;
  for (int s = 0; s < 2; s++)
    for (int j = 0; j < I.m[s]; j++) {
      const int p = I.idx[s * MAXP + j];
      const plan_side *side = I.ps[s][p];
      sq_err e = {0};
      kcpu_layout lay;
      cr_assert_eq(kcpu_layout_of(side, &lay, &e), SQ_OK, "%s", e.msg);
      uint8_t *code = malloc((size_t)lay.bytes);
      for (int64_t t = 0; t < NTOK; t++) {
        const float *x = side_x(s) + t * HKV * D;
        float ref[D];
        kcpu_encode_row(side, &lay, &cb, x, code);
        kcpu_decode_row(side, &lay, &cb, code, ref);
        const float *got = B.dst[s] + ((int64_t)p * NTOK + t) * D;
        int bad = 0;
        for (int d = 0; d < D; d++)
          if (!(fabs((double)got[d] - ref[d]) <= 1e-6 * (fabs((double)ref[d]) + 1e-6))) bad = 1;
        double dot = 0, nx = 0, nh = 0, err = 0;
        for (int d = 0; d < D; d++) {
          double a = x[d], b = ref[d];
          dot += a * b, nx += a * a, nh += b * b, err += (a - b) * (a - b);
        }
        const double *rec = B.rec[s] + ((int64_t)p * NTOK + t) * 3;
        if (!bad && !(fabs(rec[0] - kcpu_cos(dot, nx, nh)) <= 1e-12 && fabs(rec[1] - err) <= 1e-9 * (err + 1e-12) &&
                      rec[2] == nx))
          bad = 1;
        if (bad && bad_rows++ < 5)
          fprintf(stderr, "test_codes_sched: side %d plan %d (%s) row %lld differs from the CPU's decode\n", s, p,
                  pp[p].key, (long long)t);
        checked++;
      }
      free(code);
    }
  /* both compute the projections in double from exact products, in this order or kcpu's: a row
   * may differ only where a projection lands on a float rounding tie (expected never here) */
  cr_expect_leq(bad_rows, checked / 1000, "%d of %d rows differ (chunk %lld, gmax %d)", bad_rows, checked,
                (long long)c.chunk, c.gmax);
  cr_expect_gt(checked, 0);
  free(B.u), free(B.norm), free(B.y), free(B.yh), free(B.acc);
  for (int s = 0; s < 2; s++) free(B.dst[s]), free(B.rec[s]);
  csched_free(&c);
}

/* The backend's limits at this size: one chunk, one group per side. */
Test(codes_sched, default_limits) { run_case((int64_t)1 << 16, (int64_t)2 << 30, 0, 0); }

/* Rows in chunks of 37 (the last one short), groups of 2 plans: runs of a rotation split across
 * groups, projections made again per group and chunk. */
Test(codes_sched, small_chunks_and_groups) { run_case(37, 3 * 2 * 37 * D * (int64_t)sizeof(double), 1, 1); }

/* One plan per group, one row per chunk. */
Test(codes_sched, one_plan_one_row) { run_case(1, 1, 1, 1); }

/* Rotations: one entry per (matrix, normalize flag, side), keys before values, each side's
 * unnormalised before normalised; the SpectralQuant plans of a side share one. */
Test(codes_sched, rotation_entries) {
  sched_inputs I;
  sched_inputs_make(&I);
  csched c;
  csched_build(&c, I.in, NTOK, D, (int64_t)1 << 16, (int64_t)2 << 30);
  for (int r = 0; r < c.n_rot; r++) {
    for (int q = 0; q < r; q++)
      cr_assert(!(c.rot[q] == c.rot[r] && c.rot_nz[q] == c.rot_nz[r] && c.rot_side[q] == c.rot_side[r]),
                "entries %d and %d are the same rotation", q, r);
    if (r > 0)
      cr_assert(c.rot_side[r] > c.rot_side[r - 1] ||
                    (c.rot_side[r] == c.rot_side[r - 1] && c.rot_nz[r] >= c.rot_nz[r - 1]),
                "entry %d out of (side, normalize) order", r);
  }
  int distinct = 0; /* at most one entry per distinct matrix pointer of a side and flag */
  for (int s = 0; s < 2; s++)
    for (int j = 0; j < I.m[s]; j++) {
      const plan_side *p = I.ps[s][I.idx[s * MAXP + j]];
      int first = 1;
      for (int k = 0; k < j; k++) {
        const plan_side *q = I.ps[s][I.idx[s * MAXP + k]];
        if (q->rot == p->rot && !!q->normalize == !!p->normalize) first = 0;
      }
      distinct += first && p->rot;
    }
  cr_assert_eq(c.n_rot, distinct);
  csched_free(&c);
}
