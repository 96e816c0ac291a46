/* plan: grid enumeration, canonical keys, code sizes and the build dispatcher. The four arm
 * builders live in plan_arms.c, the random matrices in plan_rand.c. */
#include "plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan_internal.h"

const char *const plan_arm_names[ARM_COUNT] = {"tq", "sq", "sq_paper_v1", "lowrank"};

/* Shortest fixed-point form with at least 2 decimals that reads back as exactly v, so keys are
 * readable ("0.90") and still unique (0.905 does not collapse onto 0.90 or 0.91). */
static void fmt_real(double v, char *buf, size_t n) {
  for (int prec = 2; prec <= 17; prec++) {
    snprintf(buf, n, "%.*f", prec, v);
    if (strtod(buf, NULL) == v) return;
  }
}

static void fmt_opt(int v, char *buf, size_t n) {
  if (v == CFG_NONE) snprintf(buf, n, "none");
  else snprintf(buf, n, "%d", v);
}

plan_knobs plan_knobs_defaults(int arm, int total_bits) {
  plan_knobs k;
  memset(&k, 0, sizeof k);
  k.arm = arm;
  k.total_bits = total_bits;
  k.noise_bits = k.value_noise_bits = CFG_NONE;
  k.d_eff_variance = 0.9;
  k.use_water_fill = 1;
  k.tq_variant = TQ_PROD;
  k.tq_rotation = TQ_HAAR;
  k.tq_codebook = TQ_CB_BETA;
  return k;
}

void plan_knobs_key(const plan_knobs *kn, char *buf, int n) {
  char tau[40], nb[16], vnb[16];
  size_t sz = n > 0 ? (size_t)n : 0;
  switch (kn->arm) {
  case ARM_TQ:
    snprintf(buf, sz, "tq:b=%d,%s,%s,%s,rot=%s", kn->total_bits, kn->tq_variant == TQ_MSE ? "mse" : "prod",
             kn->tq_rotation == TQ_HADAMARD ? "hadamard" : "haar",
             kn->tq_codebook == TQ_CB_GAUSSIAN ? "gaussian" : "beta", kn->tq_shared_rotation ? "shared" : "head");
    return;
  case ARM_SQ:
    fmt_real(kn->d_eff_variance, tau, sizeof tau);
    fmt_opt(kn->noise_bits, nb, sizeof nb);
    fmt_opt(kn->value_noise_bits, vnb, sizeof vnb);
    snprintf(buf, sz, "sq:b=%d,nb=%s,vnb=%s,tau=%s,wf=%d,qjl=%d", kn->total_bits, nb, vnb, tau,
             kn->use_water_fill ? 1 : 0, kn->use_qjl ? 1 : 0);
    return;
  case ARM_SQV1:
    snprintf(buf, sz, "sq_paper_v1:b=%d", kn->total_bits);
    return;
  case ARM_LOWRANK:
    if (kn->rank != 0) {
      snprintf(buf, sz, "lowrank:r=%d", kn->rank);
      return;
    }
    fmt_real(kn->d_eff_variance, tau, sizeof tau);
    snprintf(buf, sz, "lowrank:r=0,tau=%s", tau);
    return;
  default:
    snprintf(buf, sz, "unknown:arm=%d", kn->arm);
  }
}

/* code_bits = 16 normalize + sum bits_i (16 for raw fp16, 0 for dropped) + (m ? m + 16 : 0). */
void plan_side_finalize(plan_side *p) {
  int bits = p->normalize ? 16 : 0;
  for (int i = 0; i < p->D; i++) bits += p->bits[i];
  if (p->qjl_rows > 0) bits += p->qjl_rows + 16;
  p->code_bits = bits;
  p->code_bytes = (bits + 7) / 8;
}

static void side_free(plan_side *s) {
  if (s->owns_rot) free(s->rot);
  if (s->owns_qjl) free(s->qjl);
  s->rot = NULL;
  s->qjl = NULL;
  s->owns_rot = s->owns_qjl = 0;
}

void plan_pair_free(plan_pair *p) {
  if (!p) return;
  side_free(&p->k);
  side_free(&p->v);
}

int plan_build(plan_pair *out, const plan_knobs *kn, const calib_head *ck, const calib_head *cv,
               int layer, int head, uint64_t seed, sq_err *e) {
  memset(out, 0, sizeof *out);
  out->knobs = *kn;
  plan_knobs_key(kn, out->key, (int)sizeof out->key);
  out->layer = layer;
  out->head = head;
  int needs_cv = kn->arm == ARM_SQ || kn->arm == ARM_LOWRANK;
  int st;
  if (!ck || (needs_cv && !cv))
    st = sq_fail(e, SQ_EINPUT, "missing %s calibration", !ck ? "key" : "value");
  else if (ck->D < 4 || ck->D > PLAN_MAX_D)
    st = sq_fail(e, SQ_EINPUT, "head_dim %d out of range 4..%d", ck->D, PLAN_MAX_D);
  else if (needs_cv && cv->D != ck->D)
    st = sq_fail(e, SQ_EINPUT, "key and value calibrations disagree on head_dim (%d vs %d)", ck->D, cv->D);
  else {
    switch (kn->arm) {
    case ARM_TQ: st = plan_build_tq(out, kn, ck->D, layer, head, seed, e); break;
    case ARM_SQ: st = plan_build_sq(out, kn, ck, cv, layer, head, seed, e); break;
    case ARM_SQV1: st = plan_build_sqv1(out, kn, ck, e); break;
    case ARM_LOWRANK: st = plan_build_lowrank(out, kn, ck, cv, e); break;
    default: st = sq_fail(e, SQ_EINPUT, "unknown arm %d", kn->arm);
    }
  }
  if (st != SQ_OK) {
    plan_pair_free(out);
    sq_wrap(e, "plan %s (layer %d, head %d): ", out->key, layer, head);
    return st;
  }
  plan_side_finalize(&out->k);
  plan_side_finalize(&out->v);
  out->bits_honest_k = out->k.code_bits;
  out->bits_honest_v = out->v.code_bits;
  if (kn->arm == ARM_SQV1 || kn->arm == ARM_LOWRANK) { /* their published formulas are exact */
    out->bits_seed_k = out->bits_paper_k = out->bits_honest_k;
    out->bits_seed_v = out->bits_paper_v = out->bits_honest_v;
  }
  return SQ_OK;
}

/* ---- grid ---------------------------------------------------------------------------------- */

static plan_knobs knobs_none(int arm) {
  plan_knobs k;
  memset(&k, 0, sizeof k);
  k.arm = arm;
  k.total_bits = -1;
  k.noise_bits = k.value_noise_bits = CFG_NONE;
  k.d_eff_variance = -1.0;
  k.use_water_fill = k.use_qjl = -1;
  k.tq_variant = k.tq_rotation = k.tq_codebook = k.tq_shared_rotation = -1;
  k.rank = -1;
  return k;
}

typedef struct {
  plan_knobs *v;
  int n, cap;
} knob_vec;

static void push(knob_vec *g, plan_knobs k) {
  if (g->n == g->cap) {
    g->cap = g->cap ? 2 * g->cap : 64;
    plan_knobs *nv = sq_xmalloc(sizeof *nv * (size_t)g->cap);
    if (g->n) memcpy(nv, g->v, sizeof *nv * (size_t)g->n);
    free(g->v);
    g->v = nv;
  }
  g->v[g->n++] = k;
}

/* Every value of list `l` in [lo, hi] (or CFG_NONE when none_ok); an enabled arm needs values. */
static int check_ilist(const cfg_ilist *l, const char *name, int lo, int hi, int none_ok, sq_err *e) {
  if (l->n < 1) return sq_fail(e, SQ_EINPUT, "config: %s is empty (give at least one value)", name);
  for (int i = 0; i < l->n; i++) {
    int v = l->v[i];
    if (none_ok && v == CFG_NONE) continue;
    if (v < lo || v > hi)
      return sq_fail(e, SQ_EINPUT, "config: %s value %d out of range %d..%d%s", name, v, lo, hi,
                     none_ok ? " or none" : "");
  }
  return SQ_OK;
}

static int check_tau(const cfg_dlist *l, const char *name, sq_err *e) {
  if (l->n < 1) return sq_fail(e, SQ_EINPUT, "config: %s is empty (give at least one value)", name);
  for (int i = 0; i < l->n; i++)
    if (!(l->v[i] > 0.0 && l->v[i] < 1.0))
      return sq_fail(e, SQ_EINPUT, "config: %s value %g out of range (0, 1)", name, l->v[i]);
  return SQ_OK;
}

static int grid_tq(const cfg_tq *c, knob_vec *g, sq_err *e) {
  int st = check_ilist(&c->total_bits, "[tq] total_bits", 1, 8, 0, e);
  if (!st) st = check_ilist(&c->variant, "[tq] variant", TQ_PROD, TQ_MSE, 0, e);
  if (!st) st = check_ilist(&c->rotation, "[tq] rotation", TQ_HAAR, TQ_HADAMARD, 0, e);
  if (!st) st = check_ilist(&c->codebook, "[tq] codebook", TQ_CB_BETA, TQ_CB_GAUSSIAN, 0, e);
  if (!st) st = check_ilist(&c->shared_rotation, "[tq] shared_rotation", 0, 1, 0, e);
  if (st) return st;
  plan_knobs k = knobs_none(ARM_TQ);
  for (int a = 0; a < c->total_bits.n; a++)
    for (int b = 0; b < c->variant.n; b++)
      for (int r = 0; r < c->rotation.n; r++)
        for (int cb = 0; cb < c->codebook.n; cb++)
          for (int s = 0; s < c->shared_rotation.n; s++) {
            k.total_bits = c->total_bits.v[a];
            k.tq_variant = c->variant.v[b];
            k.tq_rotation = c->rotation.v[r];
            k.tq_codebook = c->codebook.v[cb];
            k.tq_shared_rotation = c->shared_rotation.v[s];
            push(g, k);
          }
  return SQ_OK;
}

static int grid_sq(const cfg_sq *c, knob_vec *g, sq_err *e) {
  /* total_bits 8 always needs b_high = 9 bits on the value semantic block: refuse it here, once,
   * rather than at every head's build */
  int st = check_ilist(&c->total_bits, "[sq] total_bits", 1, 7, 0, e);
  if (!st) st = check_ilist(&c->noise_bits, "[sq] noise_bits", 0, 8, 1, e);
  if (!st) st = check_ilist(&c->value_noise_bits, "[sq] value_noise_bits", 0, 8, 1, e);
  if (!st) st = check_tau(&c->d_eff_variance, "[sq] d_eff_variance", e);
  if (!st) st = check_ilist(&c->use_water_fill, "[sq] use_water_fill", 0, 1, 0, e);
  if (!st) st = check_ilist(&c->use_qjl, "[sq] use_qjl", 0, 1, 0, e);
  if (st) return st;
  plan_knobs k = knobs_none(ARM_SQ);
  for (int a = 0; a < c->total_bits.n; a++)
    for (int b = 0; b < c->noise_bits.n; b++)
      for (int v = 0; v < c->value_noise_bits.n; v++) {
        /* With noise_bits = none the value tail follows b_low (methods.md §4): value_noise_bits
         * has no effect, so it is one grid point, keyed vnb=none. */
        int nb = c->noise_bits.v[b], vnb = nb == CFG_NONE ? CFG_NONE : c->value_noise_bits.v[v];
        if (nb == CFG_NONE && v > 0) continue;
        for (int t = 0; t < c->d_eff_variance.n; t++)
          for (int w = 0; w < c->use_water_fill.n; w++)
            for (int q = 0; q < c->use_qjl.n; q++) {
              k.total_bits = c->total_bits.v[a];
              k.noise_bits = nb;
              k.value_noise_bits = vnb;
              k.d_eff_variance = c->d_eff_variance.v[t];
              k.use_water_fill = c->use_water_fill.v[w];
              k.use_qjl = c->use_qjl.v[q];
              push(g, k);
            }
      }
  return SQ_OK;
}

static int grid_sqv1(const cfg_sqv1 *c, knob_vec *g, sq_err *e) {
  int st = check_ilist(&c->total_bits, "[sq_paper_v1] total_bits", 2, 8, 0, e);
  if (st) return st;
  plan_knobs k = knobs_none(ARM_SQV1);
  for (int a = 0; a < c->total_bits.n; a++) {
    k.total_bits = c->total_bits.v[a];
    push(g, k);
  }
  return SQ_OK;
}

static int grid_lowrank(const cfg_lowrank *c, knob_vec *g, sq_err *e) {
  int st = check_ilist(&c->rank, "[lowrank] rank", 0, PLAN_MAX_D, 0, e), any0 = 0;
  for (int i = 0; i < c->rank.n; i++) any0 |= c->rank.v[i] == 0;
  if (!st && any0) st = check_tau(&c->d_eff_variance, "[lowrank] d_eff_variance", e);
  if (st) return st;
  plan_knobs k = knobs_none(ARM_LOWRANK);
  for (int a = 0; a < c->rank.n; a++) {
    k.rank = c->rank.v[a];
    if (k.rank != 0) { /* tau only matters for rank 0 */
      k.d_eff_variance = -1.0;
      push(g, k);
      continue;
    }
    for (int t = 0; t < c->d_eff_variance.n; t++) {
      k.d_eff_variance = c->d_eff_variance.v[t];
      push(g, k);
    }
  }
  return SQ_OK;
}

int plan_grid(const cfg_t *c, plan_knobs **out, int *n, sq_err *e) {
  knob_vec g = {0};
  int st = SQ_OK;
  if (c->tq.enabled) st = grid_tq(&c->tq, &g, e);
  if (st == SQ_OK && c->sq.enabled) st = grid_sq(&c->sq, &g, e);
  if (st == SQ_OK && c->sqv1.enabled) st = grid_sqv1(&c->sqv1, &g, e);
  if (st == SQ_OK && c->lowrank.enabled) st = grid_lowrank(&c->lowrank, &g, e);
  if (st != SQ_OK) {
    free(g.v);
    *out = NULL;
    *n = 0;
    return st;
  }
  *out = g.v ? g.v : sq_xmalloc(sizeof(plan_knobs));
  *n = g.n;
  return SQ_OK;
}
