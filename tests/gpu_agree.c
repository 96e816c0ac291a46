/* gpu_agree: the CUDA backend against the CPU reference (the ground truth, kernels/cpu), on a
 * small synthetic layer (tests/util/tu_layer: 3 sequences, 2 KV heads, 6 query heads, D = 128)
 * and every plan kind: tq prod/mse x haar/hadamard x beta/gaussian (and b = 1, shared rotation),
 * sq with/without water-filling, noise bits and QJL, sq_paper_v1, lowrank (fixed rank and
 * rank = d_eff). Checked per plan and KV head:
 *   - packed codes: identical bytes. Both backends accumulate the projections in double from
 *     exact float products, so only the summation order differs; a row may differ only when a
 *     projection rounds to float differently, which at these sizes is expected never (the test
 *     allows 1 row in 1000 and prints every difference);
 *   - decode of the CPU's codes: equal to 1e-6 relative;
 *   - every metric of eval (attn, randq, probs protocols, K/V reconstruction, logit bias and
 *     slope, top-k recall) within 1e-4, and the same term counts; the top-k recall to 1e-9 (it is
 *     exact: only the order of its sums differs);
 *   - moments (plain and normalised) equal to 1e-9 relative.
 * A second layer with G = 4 query heads per KV head covers Mistral's grouping (the default
 * wgmma group kernel k_attn_wg; SQEXP_CUDA_ATTN=tcpv, tc, gqa or rows runs the same cases on the
 * others), also with top-k 40 (two reference slots per lane), with keys repeated in runs of 3
 * (exact ties in s^ and s, so the top-k order's tie-break decides memberships), and with one
 * value row beyond fp16's range (k_attn_wg must hand the launch to k_attn_tc).
 * Without a visible GPU every test is skipped with a message (not passed). */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "calib.h"
#include "cfg.h"
#include "codebook.h"
#include "kern.h"
#include "plan.h"
#include "util/tu_layer.h"
#include "util/tu_plans.h"

#define D 128
#define HKV 2
#define HQ 6
#define NCAL 3000

static kern_backend *cpu, *gpu;
static cb_table cb;
static tu_layer lay;
static calib_head ck[HKV], cv[HKV];

static void need_gpu(void) {
  if (!kern_cuda_available()) cr_skip_test("no CUDA GPU visible: CPU-vs-CUDA agreement not checked");
}

static void setup(void) {
  sq_err e = {0};
  if (!kern_cuda_available()) return;
  cr_assert_eq(kern_cpu_create(&cpu, 0, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(kern_cuda_create(&gpu, 0, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(cb_table_build(&cb, D, &e), SQ_OK, "%s", e.msg);
  int lens[3] = {96, 161, 57};
  tu_layer_make(&lay, lens, 3, HKV, HQ, D, 8, 7);
  float *kr, *vr;
  tu_rows(&kr, NCAL, HKV, D, 0, 7);
  tu_rows(&vr, NCAL, HKV, D, 1, 7);
  for (int h = 0; h < HKV; h++) {
    cr_assert_eq(calib_compute(kr + h * D, NCAL, HKV * D, D, 0, &ck[h], &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(calib_compute(vr + h * D, NCAL, HKV * D, D, 0, &cv[h], &e), SQ_OK, "%s", e.msg);
  }
  free(kr);
  free(vr);
}

static void teardown(void) {
  if (!cpu) return;
  for (int h = 0; h < HKV; h++) {
    calib_head_free(&ck[h]);
    calib_head_free(&cv[h]);
  }
  tu_layer_free(&lay);
  cpu->destroy(cpu);
  gpu->destroy(gpu);
}

TestSuite(gpu_agree, .init = setup, .fini = teardown);

static void build_all(plan_pair *pp, const plan_knobs *kn, int n, int head) {
  sq_err e = {0};
  for (int i = 0; i < n; i++)
    cr_assert_eq(plan_build(&pp[i], &kn[i], &ck[head], &cv[head], 0, head, 42, &e), SQ_OK, "%s", e.msg);
}

/* Codes and decodes of one side over the layer's rows of `head`. */
static int check_side(const plan_side *p, const char *what, const float *x, int64_t n) {
  sq_err e = {0};
  int64_t stride = HKV * D;
  uint8_t *c1 = malloc((size_t)(n * p->code_bytes)), *c2 = malloc((size_t)(n * p->code_bytes));
  float *x1 = malloc((size_t)(n * D) * sizeof(float)), *x2 = malloc((size_t)(n * D) * sizeof(float));
  memset(c2, 0xA5, (size_t)(n * p->code_bytes)); /* poisoned: every byte must be written */
  cr_assert_eq(cpu->encode(cpu, p, &cb, x, n, stride, c1, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(gpu->encode(gpu, p, &cb, x, n, stride, c2, &e), SQ_OK, "%s", e.msg);
  int bad_rows = 0;
  for (int64_t i = 0; i < n; i++)
    if (memcmp(c1 + i * p->code_bytes, c2 + i * p->code_bytes, (size_t)p->code_bytes)) {
      bad_rows++;
      fprintf(stderr, "gpu_agree: %s row %lld: packed codes differ\n", what, (long long)i);
    }
  cr_expect_leq(bad_rows, (int)(n / 1000), "%s: %d of %lld rows differ", what, bad_rows, (long long)n);
  for (int64_t i = 0; i < n * D; i++) x2[i] = NAN;
  cr_assert_eq(cpu->decode(cpu, p, &cb, c1, n, x1, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(gpu->decode(gpu, p, &cb, c1, n, x2, &e), SQ_OK, "%s", e.msg);
  double worst = 0;
  for (int64_t i = 0; i < n * D; i++) {
    double d = fabs((double)x1[i] - x2[i]) / (fabs((double)x1[i]) + 1e-6);
    if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
  }
  cr_expect_leq(worst, 1e-6, "%s: decode differs by %g (relative)", what, worst);
  free(c1), free(c2), free(x1), free(x2);
  return bad_rows;
}

Test(gpu_agree, codes) {
  need_gpu();
  plan_knobs kn[32];
  int n = tu_all_knobs(kn), total_bad = 0;
  for (int h = 0; h < HKV; h++) {
    plan_pair pp[32];
    build_all(pp, kn, n, h);
    for (int i = 0; i < n; i++) {
      char what[300];
      snprintf(what, sizeof what, "%s head %d K", pp[i].key, h);
      total_bad += check_side(&pp[i].k, what, lay.k + h * D, lay.n_tok);
      snprintf(what, sizeof what, "%s head %d V", pp[i].key, h);
      total_bad += check_side(&pp[i].v, what, lay.v + h * D, lay.n_tok);
      plan_pair_free(&pp[i]);
    }
  }
  fprintf(stderr, "gpu_agree: %d plans x %d heads x K,V x %lld rows: %d rows with differing codes\n",
          n, HKV, (long long)lay.n_tok, total_bad);
}

static void expect_close(double a, double b, const char *name, const char *key) {
  if ((isnan(a) && isnan(b)) || a == b) return; /* (a == b: the same infinity too) */
  cr_expect(fabs(a - b) <= 1e-4, "%s %s: cpu %.9g cuda %.9g", key, name, a, b);
}

/* The CPU on layer Lc, the GPU on Lg (the same data, unless a test says otherwise). */
static void eval_pair(const kern_layer *Lc, const kern_layer *Lg, const char *tag) {
  sq_err e = {0};
  cr_assert_eq(cpu->load_layer(cpu, Lc, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(gpu->load_layer(gpu, Lg, &e), SQ_OK, "%s", e.msg);
  plan_knobs kn[32];
  int n = tu_all_knobs(kn);
  for (int h = 0; h < HKV; h++) {
    plan_pair pp[32];
    const plan_pair *ptr[32];
    kern_metrics m1[32], m2[32];
    build_all(pp, kn, n, h);
    for (int i = 0; i < n; i++) ptr[i] = &pp[i];
    cr_assert_eq(cpu->eval(cpu, h, n, ptr, &cb, m1, &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(gpu->eval(gpu, h, n, ptr, &cb, m2, &e), SQ_OK, "%s", e.msg);
    for (int i = 0; i < n; i++) {
      char key[320];
      snprintf(key, sizeof key, "[%s head %d] %s", tag, h, pp[i].key);
      const kern_metrics *a = &m1[i], *b = &m2[i];
      expect_close(a->attn_cos, b->attn_cos, "attn_cos", key);
      expect_close(a->randq_cos, b->randq_cos, "randq_cos", key);
      expect_close(a->probs_cos, b->probs_cos, "probs_cos", key);
      expect_close(a->k_cos, b->k_cos, "k_cos", key);
      expect_close(a->v_cos, b->v_cos, "v_cos", key);
      expect_close(a->k_rel_mse, b->k_rel_mse, "k_rel_mse", key);
      expect_close(a->v_rel_mse, b->v_rel_mse, "v_rel_mse", key);
      expect_close(a->logit_bias, b->logit_bias, "logit_bias", key);
      expect_close(a->logit_slope, b->logit_slope, "logit_slope", key);
      expect_close(a->topk_recall, b->topk_recall, "topk_recall", key);
      /* the recall is exact (every rank decision on the chain's value), not merely close: one
       * wrong slot in this layer's ~1,900 rows would move it by ~7e-5, inside the 1e-4 above */
      if (!(isnan(a->topk_recall) && isnan(b->topk_recall)))
        cr_expect(fabs(a->topk_recall - b->topk_recall) <= 1e-9, "%s topk_recall: cpu %.12g cuda %.12g (exact)", key,
                  a->topk_recall, b->topk_recall);
      if (strstr(tag, "range")) /* the reference's own numbers must be finite for the case to mean anything */
        cr_expect(isfinite(a->attn_cos) && isfinite(a->v_rel_mse), "%s: cpu attn_cos %g v_rel_mse %g", key,
                  a->attn_cos, a->v_rel_mse);
      cr_expect_eq(a->n_attn, b->n_attn, "%s n_attn", key);
      cr_expect_eq(a->n_randq, b->n_randq, "%s n_randq", key);
      cr_expect_eq(a->n_probs, b->n_probs, "%s n_probs", key);
      cr_expect_eq(a->n_pairs, b->n_pairs, "%s n_pairs", key);
      if (i == 0 || i == n - 1)
        fprintf(stderr, "gpu_agree: %s attn %.6f/%.6f randq %.6f/%.6f probs %.6f/%.6f topk %.4f/%.4f\n",
                key, a->attn_cos, b->attn_cos, a->randq_cos, b->randq_cos, a->probs_cos,
                b->probs_cos, a->topk_recall, b->topk_recall);
      plan_pair_free(&pp[i]);
    }
  }
}

static void eval_both(const kern_layer *L, const char *tag) { eval_pair(L, L, tag); }

Test(gpu_agree, eval_all_protocols) {
  need_gpu();
  eval_both(&lay.L, "all");
}

Test(gpu_agree, eval_protocol_subsets) {
  need_gpu();
  kern_layer L = lay.L;
  L.protocols = PROTO_PROBS;
  L.probs_last = 200; /* longer than two of the sequences: every position counts */
  eval_both(&L, "probs-long");
  L = lay.L;
  L.protocols = PROTO_ATTN | PROTO_RANDQ;
  L.topk = 40;        /* more than one slot per lane on the GPU, more than some rows' keys */
  eval_both(&L, "attn-topk40");
}

Test(gpu_agree, eval_gqa_group_of_4) {
  /* G = 4 (Mistral's grouping): the shape the group kernels (k_attn_tc, k_attn_gqa) serve */
  need_gpu();
  tu_layer l4;
  int lens[3] = {70, 131, 40};
  tu_layer_make(&l4, lens, 3, HKV, 4 * HKV, D, 8, 9);
  eval_both(&l4.L, "gqa4");
  kern_layer L = l4.L;
  L.protocols = PROTO_ATTN;
  L.topk = 40; /* two reference slots per lane in the group-per-warp kernel, more than some rows' keys */
  eval_both(&L, "gqa4-topk40");
  /* Exact ties in s^ and s: every key repeats the first of its run of 3 within its sequence
   * (identical rows code to identical effective keys), so the top-k order's tie-break (lower
   * index first) decides many memberships, for the reference list and the plans' ranks alike. */
  size_t row = (size_t)HKV * D;
  float *kt = malloc((size_t)l4.n_tok * row * sizeof(float));
  cr_assert_not_null(kt);
  for (int s = 0; s < l4.n_seq; s++)
    for (int64_t j = l4.seq_off[s]; j < l4.seq_off[s + 1]; j++) {
      int64_t src = l4.seq_off[s] + (j - l4.seq_off[s]) / 3 * 3;
      memcpy(kt + j * row, l4.k + src * row, row * sizeof(float));
    }
  L.k = kt;
  L.topk = 8;
  eval_both(&L, "gqa4-ties");
  L.topk = 40;
  eval_both(&L, "gqa4-ties-topk40");
  free(kt);
  /* A value at the edge of fp16's range: token 5's value row of head 0 is 65000 e_0 (its norm,
   * which the codes store in fp16, stays finite), so the plans' decoded values have a coordinate
   * near 65000, above k_attn_wg's limit (6e4) and, for some plans, above fp16's largest finite
   * 65504. k_attn_wg must notice and have k_attn_tc recompute the launch: it writes no rows when
   * it finds such an operand, so a missing fallback leaves stale rows, and a missing check an
   * infinite hi part (NaN outputs). */
  float *vt = malloc((size_t)l4.n_tok * row * sizeof(float));
  cr_assert_not_null(vt);
  memcpy(vt, l4.v, (size_t)l4.n_tok * row * sizeof(float));
  for (int d = 0; d < D; d++) vt[5 * row + d] = d == 0 ? 65000.0f : 0.0f;
  L = l4.L;
  L.protocols = PROTO_ATTN;
  L.v = vt;
  eval_both(&L, "gqa4-fp16-range");
  free(vt);
  tu_layer_free(&l4);
}

Test(gpu_agree, moments) {
  need_gpu();
  sq_err e = {0};
  float *x;
  int64_t n = 5000;
  tu_rows(&x, n, HKV, D, 0, 11);
  double *c1 = malloc(sizeof(double) * HKV * D * D), *c2 = malloc(sizeof(double) * HKV * D * D);
  for (int norm = 0; norm < 2; norm++) {
    cr_assert_eq(cpu->moments(cpu, x, n, HKV, D, norm, c1, &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(gpu->moments(gpu, x, n, HKV, D, norm, c2, &e), SQ_OK, "%s", e.msg);
    double mx = 0, worst = 0;
    for (int64_t i = 0; i < HKV * D * D; i++) mx = fmax(mx, fabs(c1[i]));
    for (int64_t i = 0; i < HKV * D * D; i++) worst = fmax(worst, fabs(c1[i] - c2[i]) / mx);
    cr_expect_leq(worst, 1e-9, "moments (normalize=%d) differ by %g relative", norm, worst);
    /* and the calibration built from each is the same spectrum */
    calib_head a, b;
    cr_assert_eq(calib_from_moment(c1, D, n, &a, &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(calib_from_moment(c2, D, n, &b, &e), SQ_OK, "%s", e.msg);
    for (int i = 0; i < D; i++)
      cr_expect(fabs(a.eigval[i] - b.eigval[i]) <= 1e-9 * (a.eigval[0] + 1e-30), "eigval %d", i);
    cr_expect_eq(a.pr_int, b.pr_int);
    calib_head_free(&a);
    calib_head_free(&b);
  }
  free(x), free(c1), free(c2);
}

Test(gpu_agree, bad_input_is_an_error_not_a_crash) {
  need_gpu();
  sq_err e = {0};
  kern_layer L = lay.L;
  L.topk = 0;
  cr_expect_eq(gpu->load_layer(gpu, &L, &e), SQ_EINPUT);
  plan_knobs k = plan_knobs_defaults(ARM_TQ, 3);
  plan_pair pp;
  cr_assert_eq(plan_build(&pp, &k, &ck[0], &cv[0], 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  pp.k.bits[3] = 11; /* not a valid width */
  uint8_t codes[4096];
  cr_expect_eq(gpu->encode(gpu, &pp.k, &cb, lay.k, 1, D, codes, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "coordinate 3") != NULL, "message: %s", e.msg);
  plan_pair_free(&pp);
}

/* kern.h's preload: the GPU's k, v, q copied ahead from another thread (as the sweep's prefetch
 * thread does), then taken by load_layer. To prove they are taken and not copied again, the
 * GPU's host copy of k is zeroed between the preload and load_layer: the metrics agree with the
 * CPU's (on the real keys) only if load_layer used the preloaded ones. Then a preload under
 * another id than the layer's is not taken (the zeroed keys are copied: the metrics differ). */
typedef struct {
  const kern_layer *L;
  int rc;
  sq_err e;
} preload_job;
static void *preload_main(void *arg) {
  preload_job *j = arg;
  j->rc = gpu->preload(gpu, j->L, &j->e);
  return NULL;
}

Test(gpu_agree, eval_after_preload) {
  need_gpu();
  if (!gpu->preload) cr_skip_test("this backend offers no preload");
  tu_layer l4;
  int lens[3] = {70, 131, 40};
  tu_layer_make(&l4, lens, 3, HKV, 4 * HKV, D, 8, 9);
  size_t bytes = (size_t)l4.n_tok * HKV * D * sizeof(float);
  float *kg = malloc(bytes);
  cr_assert_not_null(kg);
  memcpy(kg, l4.k, bytes);
  kern_layer Lg = l4.L;
  Lg.k = kg;
  Lg.preload_id = 77;
  preload_job j = {&Lg, 0, {0}};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, preload_main, &j), 0);
  pthread_join(th, NULL);
  cr_assert_eq(j.rc, SQ_OK, "preload: %s", j.e.msg);
  memset(kg, 0, bytes);
  eval_pair(&l4.L, &Lg, "gqa4-preloaded");
  /* another id: not taken */
  memcpy(kg, l4.k, bytes);
  Lg.preload_id = 78;
  cr_assert_eq(gpu->preload(gpu, &Lg, &j.e), SQ_OK, "preload: %s", j.e.msg);
  memset(kg, 0, bytes);
  Lg.preload_id = 79;
  sq_err e = {0};
  cr_assert_eq(gpu->load_layer(gpu, &Lg, &e), SQ_OK, "%s", e.msg);
  plan_knobs kn[32];
  tu_all_knobs(kn);
  plan_pair pp;
  build_all(&pp, kn, 1, 0);
  const plan_pair *ptr = &pp;
  kern_metrics m;
  cr_assert_eq(gpu->eval(gpu, 0, 1, &ptr, &cb, &m, &e), SQ_OK, "%s", e.msg);
  /* zero keys: every s and s^ is 0, so the bias is 0 and the slope undefined (NaN); the real keys
   * give neither */
  cr_expect(m.n_attn > 0 && m.logit_bias == 0.0 && isnan(m.logit_slope),
            "zeroed keys were not what load_layer used: bias %g slope %g", m.logit_bias, m.logit_slope);
  plan_pair_free(&pp);
  free(kg);
  tu_layer_free(&l4);
}
