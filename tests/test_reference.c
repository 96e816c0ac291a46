/* The CPU executor's metrics against a slow, obvious implementation written here: double
 * precision everywhere, no packing (rotate, brute-force nearest centroid, reconstruct), the QJL
 * estimator evaluated directly as q.x^ + coef |r| <S q, sign(S r)>, attention by direct loops.
 * Small synthetic layer: 5 sequences of 17, 40, 9, 3 and 260 tokens, 2 KV heads, 4 query heads, D = 16;
 * plans of four arms built by plan_build from calib_compute on calibration rows. Every metric of
 * kern.h must agree to 1e-5, and the counts exactly. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "calib.h"
#include "codebook.h"
#include "f16.h"
#include "kern.h"
#include "plan.h"
#include "util/tu_layer.h"

#define DIM 16
#define HKV 2
#define HQ 4
#define NSEQ 5
#define NPLAN 5
#define MAXTOK 512
/* 3 is shorter than probs_last; 260 has more causal pairs than one of the executor's row blocks */
static const int LENS[NSEQ] = {17, 40, 9, 3, 260};

static double f16r(double v) { return f16_to_f32(f32_to_f16((float)v)); }

/* ---- the obvious implementation ------------------------------------------------------------ */

typedef struct {
  double xh[DIM];      /* reconstruction */
  double sgn[PLAN_MAX_D];
  double rn;           /* fp16-rounded |x - xh| */
} ref_code;

static void ref_encode(const plan_side *p, const cb_table *cb, const float *x, ref_code *c) {
  double n = 0, u[DIM], y[DIM], yh[DIM];
  for (int j = 0; j < DIM; j++) n += (double)x[j] * x[j];
  n = sqrt(n);
  double nh = p->normalize ? f16r(n) : 1;
  for (int j = 0; j < DIM; j++) u[j] = p->normalize ? (n > 0 ? x[j] / n : 0) : x[j];
  for (int i = 0; i < DIM; i++) {
    y[i] = 0;
    for (int j = 0; j < DIM; j++) y[i] += (p->rot ? p->rot[i * DIM + j] : (i == j)) * u[j];
  }
  for (int i = 0; i < DIM; i++) {
    int b = p->bits[i];
    if (b == 0) yh[i] = 0;
    else if (b == 16) yh[i] = f16r(y[i]);
    else {
      const float *cent = cb->centroid[p->family][b];
      double t = y[i] / p->scale[i];
      int best = 0;
      for (int k = 1; k < (1 << b); k++)
        if (fabs(t - cent[k]) < fabs(t - cent[best])) best = k;
      yh[i] = p->scale[i] * (double)cent[best];
    }
  }
  double rr = 0;
  for (int j = 0; j < DIM; j++) {
    c->xh[j] = 0;
    for (int i = 0; i < DIM; i++) c->xh[j] += (p->rot ? p->rot[i * DIM + j] : (i == j)) * yh[i];
    c->xh[j] *= nh;
    rr += (x[j] - c->xh[j]) * (x[j] - c->xh[j]);
  }
  c->rn = f16r(sqrt(rr));
  for (int k = 0; k < p->qjl_rows; k++) {
    double sr = 0;
    for (int j = 0; j < DIM; j++) sr += p->qjl[k * DIM + j] * (x[j] - c->xh[j]);
    c->sgn[k] = sr < 0 ? -1 : 1;
  }
}

/* S q of one query (computed once per query, used against every key). */
static void ref_sketch(const plan_side *p, const float *q, double *Sq) {
  for (int k = 0; k < p->qjl_rows; k++) {
    Sq[k] = 0;
    for (int j = 0; j < DIM; j++) Sq[k] += p->qjl[k * DIM + j] * q[j];
  }
}

static double ref_score(const plan_side *p, const ref_code *c, const float *q, const double *Sq) {
  double s = 0;
  for (int j = 0; j < DIM; j++) s += q[j] * c->xh[j];
  double sk = 0;
  for (int k = 0; k < p->qjl_rows; k++) sk += Sq[k] * c->sgn[k];
  return s + p->qjl_coef * c->rn * sk;
}

static double cosine(const double *a, const double *b, int n) {
  double d = 0, na = 0, nb = 0;
  for (int i = 0; i < n; i++) d += a[i] * b[i], na += a[i] * a[i], nb += b[i] * b[i];
  if (na == 0 && nb == 0) return 1;
  if (na == 0 || nb == 0) return 0;
  return d / sqrt(na * nb);
}

/* softmax(s / sqrt(D)) of n scores into p; o = sum p_j v_j. */
static void softmax_out(const double *s, int n, const double (*v)[DIM], double *p, double *o) {
  double mx = -INFINITY, sum = 0;
  for (int j = 0; j < n; j++) mx = fmax(mx, s[j]);
  for (int j = 0; j < n; j++) sum += p[j] = exp((s[j] - mx) / sqrt((double)DIM));
  for (int d = 0; d < DIM; d++) o[d] = 0;
  for (int j = 0; j < n; j++) {
    p[j] /= sum;
    for (int d = 0; d < DIM; d++) o[d] += p[j] * v[j][d];
  }
}

/* Is key j among the k largest of s[0..n)? (ties: the lower index ranks first) */
static int in_topk(const double *s, int n, int j, int k) {
  int above = 0;
  for (int i = 0; i < n; i++)
    if (s[i] > s[j] || (s[i] == s[j] && i < j)) above++;
  return above < k;
}

static void reference(const tu_layer *t, int h, const plan_pair *pp, const cb_table *cb, kern_metrics *m) {
  const kern_layer *L = &t->L;
  static ref_code kc[MAXTOK], vc[MAXTOK];
  double kcos = 0, kerr = 0, knn = 0, vcos = 0, verr = 0, vnn = 0;
  for (int64_t i = 0; i < t->n_tok; i++) {
    const float *k = t->k + (i * HKV + h) * DIM, *v = t->v + (i * HKV + h) * DIM;
    ref_encode(&pp->k, cb, k, &kc[i]);
    ref_encode(&pp->v, cb, v, &vc[i]);
    double kd[DIM], vd[DIM];
    for (int j = 0; j < DIM; j++) {
      kd[j] = k[j], vd[j] = v[j];
      kerr += (k[j] - kc[i].xh[j]) * (k[j] - kc[i].xh[j]), knn += kd[j] * kd[j];
      verr += (v[j] - vc[i].xh[j]) * (v[j] - vc[i].xh[j]), vnn += vd[j] * vd[j];
    }
    kcos += cosine(kd, kc[i].xh, DIM);
    vcos += cosine(vd, vc[i].xh, DIM);
  }
  m->k_cos = kcos / t->n_tok, m->v_cos = vcos / t->n_tok;
  m->k_rel_mse = kerr / knn, m->v_rel_mse = verr / vnn;

  int G = HQ / HKV;
  double acos = 0, topk = 0, bias = 0, S = 0, Sh = 0, SS = 0, SSh = 0, probs = 0, rq = 0;
  int64_t rows = 0, pairs = 0;
  for (int s = 0; s < NSEQ; s++) {
    int64_t off = t->seq_off[s];
    int len = LENS[s], P = len < L->probs_last ? len : L->probs_last;
    double V[MAXTOK][DIM], Vh[MAXTOK][DIM];
    for (int j = 0; j < len; j++)
      for (int d = 0; d < DIM; d++) V[j][d] = t->v[((off + j) * HKV + h) * DIM + d], Vh[j][d] = vc[off + j].xh[d];
    double pd = 0, pn = 0, ph = 0;
    for (int g = h * G; g < (h + 1) * G; g++)
      for (int r = 0; r < len; r++) {
        const float *q = t->q + ((off + r) * HQ + g) * DIM;
        double sc[MAXTOK], sh[MAXTOK], p[MAXTOK], pq[MAXTOK], o[DIM], oh[DIM], Sq[PLAN_MAX_D];
        ref_sketch(&pp->k, q, Sq);
        for (int j = 0; j <= r; j++) {
          sc[j] = 0;
          for (int d = 0; d < DIM; d++) sc[j] += (double)q[d] * t->k[((off + j) * HKV + h) * DIM + d];
          sh[j] = ref_score(&pp->k, &kc[off + j], q, Sq);
          bias += sh[j] - sc[j], S += sc[j], Sh += sh[j], SS += sc[j] * sc[j], SSh += sc[j] * sh[j];
        }
        pairs += r + 1;
        softmax_out(sc, r + 1, (const double(*)[DIM])V, p, o);
        softmax_out(sh, r + 1, (const double(*)[DIM])Vh, pq, oh);
        acos += cosine(o, oh, DIM);
        rows++;
        int k = L->topk, both = 0;
        for (int j = 0; j <= r; j++) both += in_topk(sc, r + 1, j, k) && in_topk(sh, r + 1, j, k);
        topk += (double)both / (r + 1 < k ? r + 1 : k);
        if (r >= len - P)
          for (int j = 0; j <= r; j++) pd += p[j] * pq[j], pn += p[j] * p[j], ph += pq[j] * pq[j];
      }
    probs += pd / sqrt(pn * ph);
    for (int i = 0; i < L->n_randq; i++) {
      const float *q = t->randq + (((int64_t)h * NSEQ + s) * L->n_randq + i) * DIM;
      double sc[MAXTOK], sh[MAXTOK], p[MAXTOK], o[DIM], oh[DIM], Sq[PLAN_MAX_D];
      ref_sketch(&pp->k, q, Sq);
      for (int j = 0; j < len; j++) {
        sc[j] = 0;
        for (int d = 0; d < DIM; d++) sc[j] += (double)q[d] * t->k[((off + j) * HKV + h) * DIM + d];
        sh[j] = ref_score(&pp->k, &kc[off + j], q, Sq);
      }
      softmax_out(sc, len, (const double(*)[DIM])V, p, o);
      softmax_out(sh, len, (const double(*)[DIM])Vh, p, oh);
      rq += cosine(o, oh, DIM);
    }
  }
  m->attn_cos = acos / rows, m->topk_recall = topk / rows, m->n_attn = rows;
  m->logit_bias = bias / pairs, m->n_pairs = pairs;
  m->logit_slope = (pairs * SSh - S * Sh) / (pairs * SS - S * S);
  m->probs_cos = probs / NSEQ, m->n_probs = NSEQ;
  m->randq_cos = rq / (NSEQ * L->n_randq), m->n_randq = NSEQ * L->n_randq;
}

/* ---- fixture ------------------------------------------------------------------------------- */

typedef struct {
  tu_layer t;
  cb_table *cb;
  calib_head ck[HKV], cv[HKV];
  plan_pair plans[HKV][NPLAN];
} fixture;

static plan_knobs knobs(int arm, int b) {
  plan_knobs k = {.arm = arm, .total_bits = b, .noise_bits = CFG_NONE, .value_noise_bits = CFG_NONE,
                  .d_eff_variance = 0.9, .use_water_fill = 1};
  return k;
}

static void fixture_init(fixture *f) {
  sq_err e = {0};
  tu_layer_make(&f->t, LENS, NSEQ, HKV, HQ, DIM, 8, 5);
  f->cb = malloc(sizeof *f->cb);
  cr_assert_eq(cb_table_build(f->cb, DIM, &e), SQ_OK, "%s", e.msg);
  float *rk, *rv;
  tu_rows(&rk, 1500, HKV, DIM, 0, 5);
  tu_rows(&rv, 1500, HKV, DIM, 1, 5);
  plan_knobs kn[NPLAN] = {knobs(ARM_TQ, 3), knobs(ARM_SQ, 3), knobs(ARM_SQV1, 3), knobs(ARM_LOWRANK, 0),
                          knobs(ARM_TQ, 2)};
  kn[1].use_qjl = 1, kn[1].noise_bits = 1;           /* sq with QJL and noise bits */
  kn[4].tq_variant = TQ_MSE, kn[4].tq_rotation = TQ_HADAMARD, kn[4].tq_codebook = TQ_CB_GAUSSIAN;
  for (int h = 0; h < HKV; h++) {
    cr_assert_eq(calib_compute(rk + h * DIM, 1500, HKV * DIM, DIM, 0, &f->ck[h], &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(calib_compute(rv + h * DIM, 1500, HKV * DIM, DIM, 0, &f->cv[h], &e), SQ_OK, "%s", e.msg);
    for (int i = 0; i < NPLAN; i++)
      cr_assert_eq(plan_build(&f->plans[h][i], &kn[i], &f->ck[h], &f->cv[h], 0, h, 42, &e), SQ_OK, "%s", e.msg);
  }
  free(rk), free(rv);
}

static void fixture_free(fixture *f) {
  for (int h = 0; h < HKV; h++) {
    for (int i = 0; i < NPLAN; i++) plan_pair_free(&f->plans[h][i]);
    calib_head_free(&f->ck[h]), calib_head_free(&f->cv[h]);
  }
  tu_layer_free(&f->t);
  free(f->cb);
}

static void eval_all(fixture *f, int threads, const kern_layer *L, kern_metrics out[HKV][NPLAN]) {
  kern_backend *be;
  sq_err e = {0};
  cr_assert_eq(kern_cpu_create(&be, threads, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(be->load_layer(be, L, &e), SQ_OK, "%s", e.msg);
  for (int h = 0; h < HKV; h++) {
    const plan_pair *pp[NPLAN];
    for (int i = 0; i < NPLAN; i++) pp[i] = &f->plans[h][i];
    cr_assert_eq(be->eval(be, h, NPLAN, pp, f->cb, out[h], &e), SQ_OK, "%s", e.msg);
  }
  be->destroy(be);
}

#define NEAR(field, tol)                                                                         \
  do {                                                                                           \
    worst = fmax(worst, fabs(got->field - want.field));                                          \
    cr_expect(fabs(got->field - want.field) <= (tol), "head %d %s: " #field " %.9f, reference %.9f", \
              h, pp->key, got->field, want.field);                                               \
  } while (0)

TestSuite(reference, .timeout = 300);

Test(reference, every_metric_matches_slow_implementation) {
  fixture f;
  fixture_init(&f);
  kern_metrics out[HKV][NPLAN];
  double worst = 0;
  eval_all(&f, 2, &f.t.L, out);
  for (int h = 0; h < HKV; h++)
    for (int i = 0; i < NPLAN; i++) {
      const plan_pair *pp = &f.plans[h][i];
      const kern_metrics *got = &out[h][i];
      kern_metrics want;
      reference(&f.t, h, pp, f.cb, &want);
      cr_log_info("h%d %-48s attn %.6f randq %.6f probs %.6f kcos %.6f bias %+.5f slope %.4f top8 %.4f", h,
                  pp->key, want.attn_cos, want.randq_cos, want.probs_cos, want.k_cos, want.logit_bias,
                  want.logit_slope, want.topk_recall);
      NEAR(attn_cos, 1e-5);
      NEAR(randq_cos, 1e-5);
      NEAR(probs_cos, 1e-5);
      NEAR(k_cos, 1e-5);
      NEAR(v_cos, 1e-5);
      NEAR(k_rel_mse, 1e-5);
      NEAR(v_rel_mse, 1e-5);
      NEAR(logit_bias, 1e-5 * fmax(1, fabs(want.logit_bias)));
      NEAR(logit_slope, 1e-5);
      NEAR(topk_recall, 1e-5);
      cr_expect_eq(got->n_attn, want.n_attn);
      cr_expect_eq(got->n_pairs, want.n_pairs);
      cr_expect_eq(got->n_probs, want.n_probs);
      cr_expect_eq(got->n_randq, want.n_randq);
    }
  cr_log_info("largest |executor - reference| over all metrics: %.2e", worst);
  fixture_free(&f);
}

Test(reference, same_numbers_for_any_thread_count) {
  fixture f;
  fixture_init(&f);
  kern_metrics one[HKV][NPLAN], two[HKV][NPLAN];
  eval_all(&f, 1, &f.t.L, one);
  eval_all(&f, 3, &f.t.L, two);
  cr_assert_eq(memcmp(one, two, sizeof one), 0, "metrics differ between 1 and 3 threads");
  fixture_free(&f);
}

Test(reference, protocols_off_or_without_queries_are_nan) {
  fixture f;
  fixture_init(&f);
  kern_metrics all[HKV][NPLAN], part[HKV][NPLAN];
  eval_all(&f, 2, &f.t.L, all);
  kern_layer L = f.t.L;
  L.q = NULL; /* no queries: attn and probs (and the attn-derived logit/top-k) are undefined */
  eval_all(&f, 2, &L, part);
  for (int h = 0; h < HKV; h++)
    for (int i = 0; i < NPLAN; i++) {
      const kern_metrics *m = &part[h][i];
      cr_expect(isnan(m->attn_cos) && isnan(m->probs_cos) && isnan(m->logit_bias) &&
                isnan(m->logit_slope) && isnan(m->topk_recall));
      cr_expect(m->n_attn == 0 && m->n_probs == 0 && m->n_pairs == 0);
      cr_expect_eq(m->randq_cos, all[h][i].randq_cos);
      cr_expect_eq(m->k_cos, all[h][i].k_cos);
    }
  L = f.t.L;
  L.protocols = PROTO_PROBS; /* probs alone still equals its value in the full run */
  eval_all(&f, 2, &L, part);
  for (int h = 0; h < HKV; h++)
    for (int i = 0; i < NPLAN; i++) {
      cr_expect(isnan(part[h][i].attn_cos) && isnan(part[h][i].randq_cos) && part[h][i].n_randq == 0);
      cr_expect_eq(part[h][i].probs_cos, all[h][i].probs_cos);
    }
  fixture_free(&f);
}

/* moments(): per head C = sum x x^T / n in double, rows normalised by |x| + 1e-8 on request. */
Test(reference, moments_per_head) {
  const int n = 50, H = 3;
  float *x;
  tu_rows(&x, n, H, DIM, 0, 9);
  kern_backend *be;
  sq_err e = {0};
  cr_assert_eq(kern_cpu_create(&be, 2, &e), SQ_OK);
  double *C = malloc(sizeof(double) * H * DIM * DIM);
  for (int norm = 0; norm < 2; norm++) {
    cr_assert_eq(be->moments(be, x, n, H, DIM, norm, C, &e), SQ_OK, "%s", e.msg);
    for (int h = 0; h < H; h++)
      for (int a = 0; a < DIM; a++)
        for (int b = 0; b < DIM; b++) {
          double want = 0;
          for (int i = 0; i < n; i++) {
            const float *r = x + (i * H + h) * DIM;
            double nn = 0;
            for (int j = 0; j < DIM; j++) nn += (double)r[j] * r[j];
            double sc = norm ? 1 / (sqrt(nn) + 1e-8) : 1;
            want += r[a] * sc * r[b] * sc;
          }
          want /= n;
          cr_assert(fabs(C[(h * DIM + a) * DIM + b] - want) <= 1e-12 * (1 + fabs(want)),
                    "norm %d head %d C[%d][%d] = %g, want %g", norm, h, a, b, C[(h * DIM + a) * DIM + b], want);
        }
  }
  cr_expect_eq(be->moments(be, x, 0, H, DIM, 0, C, &e), SQ_EINPUT);
  free(C), free(x);
  be->destroy(be);
}

Test(reference, bad_input_is_refused) {
  fixture f;
  fixture_init(&f);
  kern_backend *be;
  sq_err e = {0};
  cr_assert_eq(kern_cpu_create(&be, 1, &e), SQ_OK);
  kern_layer L = f.t.L;
  L.n_q_heads = 3;
  cr_expect_eq(be->load_layer(be, &L, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "multiple") != NULL, "%s", e.msg);
  const plan_pair *pp = &f.plans[0][0];
  kern_metrics m;
  cr_expect_eq(be->eval(be, 0, 1, &pp, f.cb, &m, &e), SQ_EFAIL); /* nothing loaded */
  cr_assert_eq(be->load_layer(be, &f.t.L, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(be->eval(be, HKV, 1, &pp, f.cb, &m, &e), SQ_EINPUT);
  plan_pair bad = f.plans[0][0];
  bad.k.code_bits += 1;
  const plan_pair *pb = &bad;
  cr_expect_eq(be->eval(be, 0, 1, &pb, f.cb, &m, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "bits") != NULL, "%s", e.msg);
  be->destroy(be);
  fixture_free(&f);
}
