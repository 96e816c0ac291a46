/* sweep_extra: execution of the shift (calibrate on one domain, evaluate on another) and stability
 * (calibration budget) experiments, on the run flow's machinery (sweep_internal.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sweep_internal.h"
#include "ortho.h"

static void sweep_sub_dir(const sweep_state *s, const char *name, char *buf, size_t n) {
  snprintf(buf, n, "%s/%s", s->out_dir, name);
}

/* A shallow copy of s that calibrates on cal's tokens and evaluates on ev's sequences. */
static void sweep_use_sel(sweep_state *t, const sweep_sel *cal, const sweep_sel *ev) {
  t->calib_seq = cal->calib_seq;
  t->n_calib_seq = cal->n_calib_seq;
  t->calib_len = cal->calib_len;
  t->n_calib_tok = cal->n_calib_tok;
  t->eval_seq = ev->eval_seq;
  t->n_eval_seq = ev->n_eval_seq;
  t->eval_off = ev->eval_off;
}

static void sweep_sel_of(sweep_sel *sel, const sweep_state *s) {
  sel->calib_seq = s->calib_seq;
  sel->n_calib_seq = s->n_calib_seq;
  sel->calib_len = s->calib_len;
  sel->n_calib_tok = s->n_calib_tok;
  sel->eval_seq = s->eval_seq;
  sel->n_eval_seq = s->n_eval_seq;
  sel->eval_off = s->eval_off;
}

/* Per selected domain, the selection a run with `[run] domains = <that domain>` would make: the
 * in-domain shift rows are then exactly that run's grid rows. */
int sweep_extra_prepare(sweep_state *s, sq_err *e) {
  if (s->n_xgrid > 0) { /* check the grid the experiments use even when `grid` is not run */
    int n = s->n_grid;
    s->n_grid = s->n_xgrid;
    int rc = sweep_check_plans(s, e);
    s->n_grid = n;
    if (rc) return rc;
  }
  if (!s->do_shift) return SQ_OK;
  const dump_t *d = &s->dump;
  s->dom = sq_xmalloc((size_t)d->n_domains * sizeof *s->dom);
  s->dom_sel = sq_xcalloc((size_t)d->n_domains, sizeof *s->dom_sel);
  for (int j = 0; j < d->n_domains; j++) {
    int used = 0;
    for (int q = 0; q < d->n_seq && !used; q++) used = d->domain[q] == j && sweep_domain_selected(s, q);
    if (!used) continue;
    sweep_state *t = sq_xmalloc(sizeof *t);
    memcpy(t, s, sizeof *t);
    t->cfg.run.domains.n = 1;
    snprintf(t->cfg.run.domains.v[0], sizeof t->cfg.run.domains.v[0], "%s", d->domain_names[j]);
    t->n_calib_seq = t->n_eval_seq = 0;
    t->n_calib_tok = 0;
    int rc = sweep_select_tokens(t, e);
    sweep_sel_of(&s->dom_sel[s->n_dom], t);
    s->dom[s->n_dom++] = j; /* owned by s from here (freed with it, also on failure) */
    free(t);
    if (rc) return sq_wrap(e, "shift: domain '%s': ", d->domain_names[j]);
  }
  return SQ_OK;
}

int sweep_extra_check(const sweep_state *s, int fresh, sq_err *e) {
  char dir[1100];
  if (s->do_shift && s->n_dom >= 2) {
    sweep_sub_dir(s, "shift", dir, sizeof dir);
    if (store_check(dir, &s->id, fresh, e)) return e->code;
  }
  if (s->do_stability) {
    sweep_sub_dir(s, "stability", dir, sizeof dir);
    if (store_check(dir, &s->id, fresh, e)) return e->code;
  }
  return SQ_OK;
}

/* The points of s->grid[0..n_xgrid) whose arm is (want = 1) or is not (want = 0) `arm`, into out. */
static int sweep_pick_arm(const sweep_state *s, int arm, int want, plan_knobs *out) {
  int n = 0;
  for (int g = 0; g < s->n_xgrid; g++)
    if ((s->grid[g].arm == arm) == want) {
      if (out) out[n] = s->grid[g];
      n++;
    }
  return n;
}

/* Buffers for the selection now in r->s: the gathered rows and randq depend on its size. */
static void sweep_buf_reselect(sweep_layer_buf *b, const sweep_state *s) {
  free(b->calib);
  free(b->ek);
  free(b->ev);
  free(b->eq);
  free(b->randq);
  b->calib = b->ek = b->ev = b->eq = NULL;
  int R = (s->cfg.run.protocols & PROTO_RANDQ) ? s->cfg.run.randq_queries : 0;
  const dump_t *d = &s->dump;
  b->randq = R ? sq_xmalloc((size_t)d->n_kv_heads * s->n_eval_seq * R * d->head_dim * sizeof *b->randq) : NULL;
}

static void sweep_buf_init(sweep_layer_buf *b, const sweep_state *s) {
  memset(b, 0, sizeof *b);
  int H = s->dump.n_kv_heads, D = s->dump.head_dim;
  b->C = sq_xmalloc((size_t)2 * H * D * D * sizeof *b->C); /* key, then value moments */
  b->ck = sq_xcalloc((size_t)s->n_heads, sizeof *b->ck);
  b->cv = sq_xcalloc((size_t)s->n_heads, sizeof *b->cv);
}

/* Rows of grid[0..n) with key prefix `pre` missing from r->st for (layer, every head). */
static int64_t sweep_missing(const sweep_run_ctx *r, const char *pre, const plan_knobs *grid, int n, int layer) {
  const sweep_state *s = r->s;
  int64_t miss = 0;
  char key[256];
  for (int g = 0; g < n; g++) {
    size_t at = (size_t)snprintf(key, sizeof key, "%s", pre);
    plan_knobs_key(&grid[g], key + at, (int)(sizeof key - at));
    for (int i = 0; i < s->n_heads; i++) miss += !store_has_row(r->st, key, layer, s->heads[i]);
  }
  return miss;
}

/* Evaluate grid[0..n) under key prefix `pre` for every head of the loaded layer. */
static int sweep_heads_with(sweep_run_ctx *r, sweep_state *t, sweep_layer_buf *b, int layer, const char *pre,
                            plan_knobs *grid, int n, sq_err *e) {
  t->grid = grid;
  t->n_grid = n;
  r->key_prefix = pre;
  sweep_layer_sum ls;
  memset(&ls, 0, sizeof ls);
  return sweep_heads(r, b, layer, &ls, e);
}

/* Open DIR/<name> as a store of its own and make it r's; *main_st keeps the run's. */
static int sweep_sub_open(sweep_run_ctx *r, const char *name, int fresh, store **main_st, sq_err *e) {
  char dir[1100];
  sweep_sub_dir(r->s, name, dir, sizeof dir);
  store *st;
  if (store_open(&st, dir, &r->s->id, fresh, e)) return e->code;
  *main_st = r->st;
  r->st = st;
  r->no_spectra = 1;
  return SQ_OK;
}

static int sweep_sub_close(sweep_run_ctx *r, sweep_state *s, store *main_st, int rc, sq_err *e) {
  sq_err e2;
  if (store_sync(r->st, &e2) && !rc) rc = e2.code, *e = e2;
  store_close(r->st);
  r->st = main_st;
  r->s = s;
  r->key_prefix = NULL;
  r->no_spectra = 0;
  return rc;
}

typedef struct {
  plan_knobs *tq, *cal;  /* tq points (calibration-free) and the calibrated arms' points */
  int n_tq, n_cal;
  char (*pre_tq)[80];    /* [n_dom] "eval=B|" */
  char (*pre)[160];      /* [n_dom * n_dom] "calib=A|eval=B|", index a * n_dom + b */
} sweep_shift_plan;

static int64_t sweep_shift_missing(const sweep_run_ctx *r, const sweep_shift_plan *p, int layer, int a, int bi) {
  const sweep_state *s = r->s;
  int64_t miss = sweep_missing(r, p->pre[a * s->n_dom + bi], p->cal, p->n_cal, layer);
  if (a == bi) miss += sweep_missing(r, p->pre_tq[bi], p->tq, p->n_tq, layer);
  return miss;
}

/* One layer of the shift experiment: every (eval domain B, calib domain A) with missing rows. */
static int sweep_shift_layer(sweep_run_ctx *r, sweep_state *s, sweep_layer_buf *b, const sweep_shift_plan *p,
                             int layer, sq_err *e) {
  int rc = SQ_OK;
  sweep_state *t = sq_xmalloc(sizeof *t);
  for (int bi = 0; bi < s->n_dom && !rc && !sweep_stopping(); bi++)
    for (int a = 0; a < s->n_dom && !rc && !sweep_stopping(); a++) {
      r->s = s;
      if (!sweep_shift_missing(r, p, layer, a, bi)) continue;
      memcpy(t, s, sizeof *t);
      sweep_use_sel(t, &s->dom_sel[a], &s->dom_sel[bi]);
      r->s = t;
      sweep_buf_reselect(b, t);
      rc = sweep_calibrate(r, b, layer, e);
      if (!rc) rc = sweep_load_eval(r, b, layer, e);
      /* tq with the in-domain calibration: its rows' spectrum fields (pr, kappa) are eval B's own,
       * as in a run restricted to B */
      if (!rc && a == bi) rc = sweep_heads_with(r, t, b, layer, p->pre_tq[bi], p->tq, p->n_tq, e);
      if (!rc) rc = sweep_heads_with(r, t, b, layer, p->pre[a * s->n_dom + bi], p->cal, p->n_cal, e);
    }
  r->s = s;
  free(t);
  return rc;
}

/* shift: calibrate on domain A's calibration tokens, evaluate on domain B's evaluation
 * sequences, for every ordered pair (A = B included); tq (no calibration) once per B. */
int sweep_shift(sweep_run_ctx *r, int fresh, sq_err *e) {
  sweep_state *s = r->s;
  const dump_t *d = &s->dump;
  if (s->n_dom < 2) {
    printf("shift: %s a single domain ('%s'); nothing to compare, no shift rows written\n",
           s->cfg.run.domains.n ? "[run] domains selects" : "the dump has", d->domain_names[s->dom[0]]);
    return SQ_OK;
  }
  sweep_shift_plan p;
  p.tq = sq_xmalloc((size_t)(s->n_xgrid + 1) * sizeof *p.tq);
  p.cal = sq_xmalloc((size_t)(s->n_xgrid + 1) * sizeof *p.cal);
  p.n_tq = sweep_pick_arm(s, ARM_TQ, 1, p.tq);
  p.n_cal = sweep_pick_arm(s, ARM_TQ, 0, p.cal);
  p.pre_tq = sq_xmalloc((size_t)s->n_dom * sizeof *p.pre_tq);
  p.pre = sq_xmalloc((size_t)s->n_dom * s->n_dom * sizeof *p.pre);
  for (int bi = 0; bi < s->n_dom; bi++) {
    snprintf(p.pre_tq[bi], sizeof p.pre_tq[bi], "eval=%s|", d->domain_names[s->dom[bi]]);
    for (int a = 0; a < s->n_dom; a++)
      snprintf(p.pre[a * s->n_dom + bi], sizeof p.pre[0], "calib=%s|eval=%s|", d->domain_names[s->dom[a]],
               d->domain_names[s->dom[bi]]);
  }
  store *main_st = NULL;
  int rc = sweep_sub_open(r, "shift", fresh, &main_st, e);
  if (rc) goto out;
  int64_t total = (int64_t)s->n_layers * s->n_heads * (s->n_dom * p.n_tq + (int64_t)s->n_dom * s->n_dom * p.n_cal);
  int64_t missing = 0;
  for (int li = 0; li < s->n_layers; li++)
    for (int bi = 0; bi < s->n_dom; bi++)
      for (int a = 0; a < s->n_dom; a++) missing += sweep_shift_missing(r, &p, d->layers[s->layer_idx[li]], a, bi);
  int64_t saved_done = r->done;
  r->done = total - missing;
  progress_init(&r->prog, stderr, !r->quiet, total, r->done);
  if (!r->quiet)
    printf("shift: %d domains, %lld rows (%lld to compute) in %s/shift\n", s->n_dom, (long long)total,
           (long long)missing, s->out_dir);
  sweep_layer_buf b;
  sweep_buf_init(&b, s);
  int *want = sq_xcalloc((size_t)s->n_layers, sizeof *want);
  for (int li = 0; li < s->n_layers; li++)
    for (int bi = 0; bi < s->n_dom; bi++)
      for (int a = 0; a < s->n_dom; a++) want[li] |= sweep_shift_missing(r, &p, d->layers[s->layer_idx[li]], a, bi) > 0;
  sweep_pf pf;
  sweep_pf_init(&pf, &s->dump);
  for (int li = 0; li < s->n_layers && !rc && !sweep_stopping() && missing > 0; li++) {
    int layer = d->layers[s->layer_idx[li]];
    if (want[li]) rc = sweep_read_at(r, &pf, want, li, &b.raw, e);
    if (want[li] && !rc) rc = sweep_shift_layer(r, s, &b, &p, layer, e);
    progress_layer(&r->prog, layer, li, s->n_layers);
  }
  sweep_pf_done(&pf, r);
  free(want);
  progress_finish(&r->prog);
  sweep_layer_buf_free(&b, s->n_heads);
  r->done = saved_done;
  rc = sweep_sub_close(r, s, main_st, rc, e);
out:
  free(p.tq);
  free(p.cal);
  free(p.pre_tq);
  free(p.pre);
  return rc;
}

/* ---- stability ---- */

/* The first d rows of a float basis [D][D] orthonormalised in double into q [d][D]: the float rows
 * are orthonormal only to ~1e-7, and the overlap of a subspace with itself must be 1 to double
 * rounding. */
static void sweep_orthonormal(const float *basis, int d, int D, double *q) {
  for (size_t i = 0; i < (size_t)d * D; i++) q[i] = basis[i];
  ortho_rows(q, d, D, 1);
}

/* ||E_a[:d]^T E_b[:d]||_F^2 / d: the mean squared cosine of the principal angles, in [0, 1]. */
static double sweep_overlap(const calib_head *a, const calib_head *b, int d) {
  int D = a->D;
  double *qa = sq_xmalloc((size_t)d * D * sizeof *qa), *qb = sq_xmalloc((size_t)d * D * sizeof *qb);
  sweep_orthonormal(a->basis, d, D, qa);
  sweep_orthonormal(b->basis, d, D, qb);
  double sum = 0;
  for (int i = 0; i < d; i++)
    for (int j = 0; j < d; j++) {
      double dot = 0;
      for (int k = 0; k < D; k++) dot += qa[(size_t)i * D + k] * qb[(size_t)j * D + k];
      sum += dot * dot;
    }
  free(qa);
  free(qb);
  return sum / d;
}

/* (sum of the top-d eigenvalues at N - the same at all) / the same at all. */
static double sweep_mass_change(const calib_head *n, const calib_head *all, int d) {
  double mn = 0, ma = 0;
  for (int i = 0; i < d; i++) mn += n->eigval[i], ma += all->eigval[i];
  return ma > 0 ? (mn - ma) / ma : NAN;
}

typedef struct {
  int n_budget;
  int64_t *budget;       /* tokens; 0 = all (always the last) */
  char (*pre)[48];       /* "N=<n>|" or "N=all|" */
  calib_head *ck, *cv;   /* [n_budget][n_heads] calibrations of the current layer */
  plan_knobs sq;         /* the sq point evaluated at each budget (the first sq point) */
  int has_sq;
  double tau;            /* d = d_eff(tau) of the full calibration */
} sweep_stab_plan;

static void sweep_stab_plan_init(sweep_stab_plan *p, const sweep_state *s) {
  const cfg_ilist *l = &s->cfg.stability.calib_tokens;
  p->budget = sq_xmalloc((size_t)(l->n + 1) * sizeof *p->budget);
  p->n_budget = 0;
  for (int i = 0; i < l->n; i++)
    if (l->v[i] != CFG_ALL_ITEM) p->budget[p->n_budget++] = l->v[i];
  for (int i = 1; i < p->n_budget; i++) /* ascending */
    for (int j = i; j > 0 && p->budget[j] < p->budget[j - 1]; j--) {
      int64_t x = p->budget[j]; p->budget[j] = p->budget[j - 1]; p->budget[j - 1] = x;
    }
  p->budget[p->n_budget++] = 0; /* all: the reference, computed whether listed or not */
  p->pre = sq_xmalloc((size_t)p->n_budget * sizeof *p->pre);
  for (int i = 0; i < p->n_budget; i++) {
    if (p->budget[i]) snprintf(p->pre[i], sizeof p->pre[i], "N=%lld|", (long long)p->budget[i]);
    else snprintf(p->pre[i], sizeof p->pre[i], "N=all|");
  }
  p->ck = sq_xcalloc((size_t)p->n_budget * s->n_heads, sizeof *p->ck);
  p->cv = sq_xcalloc((size_t)p->n_budget * s->n_heads, sizeof *p->cv);
  p->has_sq = sweep_pick_arm(s, ARM_SQ, 1, NULL) > 0;
  if (p->has_sq) {
    for (int g = 0; g < s->n_xgrid; g++)
      if (s->grid[g].arm == ARM_SQ) { p->sq = s->grid[g]; break; }
  }
  p->tau = s->cfg.sq.enabled && s->cfg.sq.d_eff_variance.n ? s->cfg.sq.d_eff_variance.v[0] : 0.90;
}

static void sweep_stab_plan_free(sweep_stab_plan *p, int n_heads) {
  for (int i = 0; i < p->n_budget * n_heads; i++) calib_head_free(&p->ck[i]), calib_head_free(&p->cv[i]);
  free(p->ck);
  free(p->cv);
  free(p->budget);
  free(p->pre);
}

static int64_t sweep_stab_missing(const sweep_run_ctx *r, const sweep_stab_plan *p, int layer) {
  const sweep_state *s = r->s;
  int64_t miss = 0;
  char key[128];
  for (int ni = 0; ni < p->n_budget; ni++) {
    snprintf(key, sizeof key, "%sstability", p->pre[ni]);
    for (int i = 0; i < s->n_heads; i++) miss += !store_has_row(r->st, key, layer, s->heads[i]);
    if (p->has_sq) miss += sweep_missing(r, p->pre[ni], &p->sq, 1, layer);
  }
  return miss;
}

/* Calibrate the loaded layer on the first budget[ni] calibration tokens into p->ck/cv[ni]. */
static int sweep_stab_calibrate(sweep_run_ctx *r, sweep_state *s, sweep_layer_buf *b, sweep_stab_plan *p, int ni,
                                int layer, sq_err *e) {
  sweep_state *t = sq_xmalloc(sizeof *t);
  memcpy(t, s, sizeof *t);
  t->calib_len = sq_xmalloc((size_t)(s->n_calib_seq + 1) * sizeof *t->calib_len);
  t->n_calib_seq = 0;
  t->n_calib_tok = 0;
  int64_t cap = p->budget[ni] ? p->budget[ni] : s->n_calib_tok;
  for (int i = 0; i < s->n_calib_seq && t->n_calib_tok < cap; i++) {
    int64_t len = s->calib_len[i] < cap - t->n_calib_tok ? s->calib_len[i] : cap - t->n_calib_tok;
    t->calib_len[t->n_calib_seq++] = len;
    t->n_calib_tok += len;
  }
  r->s = t;
  sweep_buf_reselect(b, t);
  int rc = sweep_calibrate(r, b, layer, e);
  r->s = s;
  for (int i = 0; i < s->n_heads && !rc; i++) { /* move the calibrations out of b */
    calib_head *dk = &p->ck[(size_t)ni * s->n_heads + i], *dv = &p->cv[(size_t)ni * s->n_heads + i];
    calib_head_free(dk);
    calib_head_free(dv);
    *dk = b->ck[i];
    *dv = b->cv[i];
    memset(&b->ck[i], 0, sizeof b->ck[i]);
    memset(&b->cv[i], 0, sizeof b->cv[i]);
  }
  free(t->calib_len);
  free(t);
  return rc;
}

/* The spectral row of (budget ni, head i): see docs/results.md for which field holds what. */
static int sweep_stab_row(sweep_run_ctx *r, const sweep_stab_plan *p, int ni, int i, int layer, sq_err *e) {
  const sweep_state *s = r->s;
  store_row row;
  store_row_init(&row);
  snprintf(row.key, sizeof row.key, "%sstability", p->pre[ni]);
  if (store_has_row(r->st, row.key, layer, s->heads[i])) return SQ_OK;
  const calib_head *k = &p->ck[(size_t)ni * s->n_heads + i], *v = &p->cv[(size_t)ni * s->n_heads + i];
  const calib_head *ka = &p->ck[(size_t)(p->n_budget - 1) * s->n_heads + i];
  const calib_head *va = &p->cv[(size_t)(p->n_budget - 1) * s->n_heads + i];
  int dk = calib_deff(ka, p->tau), dv = calib_deff(va, p->tau);
  snprintf(row.arm, sizeof row.arm, "stability");
  row.layer = layer;
  row.head = s->heads[i];
  row.head_dim = k->D;
  row.m.k_cos = sweep_overlap(k, ka, dk);
  row.m.v_cos = sweep_overlap(v, va, dv);
  row.m.k_rel_mse = sweep_mass_change(k, ka, dk);
  row.m.v_rel_mse = sweep_mass_change(v, va, dv);
  row.d_eff_k = calib_deff(k, p->tau);
  row.d_eff_v = calib_deff(v, p->tau);
  row.pr_k = k->pr;
  row.pr_v = v->pr;
  row.pr_int_k = k->pr_int;
  row.pr_int_v = v->pr_int;
  row.kappa_k = k->kappa;
  row.kappa_v = v->kappa;
  snprintf(row.backend, sizeof row.backend, "%s", r->be->name);
  int rc = store_append_row(r->st, &row, e);
  if (!rc) r->done++, r->computed++;
  return rc;
}

static int sweep_stab_layer(sweep_run_ctx *r, sweep_state *s, sweep_layer_buf *b, sweep_stab_plan *p, int layer,
                            sq_err *e) {
  int rc = SQ_OK;
  for (int ni = 0; ni < p->n_budget && !rc; ni++) rc = sweep_stab_calibrate(r, s, b, p, ni, layer, e);
  for (int ni = 0; ni < p->n_budget && !rc; ni++)
    for (int i = 0; i < s->n_heads && !rc; i++) rc = sweep_stab_row(r, p, ni, i, layer, e);
  if (!rc) rc = store_sync(r->st, e);
  if (rc || !p->has_sq || sweep_stopping()) return rc;
  sweep_state *t = sq_xmalloc(sizeof *t);
  memcpy(t, s, sizeof *t);
  r->s = t;
  sweep_buf_reselect(b, t);
  rc = sweep_load_eval(r, b, layer, e);
  calib_head *bk = b->ck, *bv = b->cv;
  for (int ni = 0; ni < p->n_budget && !rc && !sweep_stopping(); ni++) {
    b->ck = &p->ck[(size_t)ni * s->n_heads];
    b->cv = &p->cv[(size_t)ni * s->n_heads];
    rc = sweep_heads_with(r, t, b, layer, p->pre[ni], &p->sq, 1, e);
  }
  b->ck = bk;
  b->cv = bv;
  r->s = s;
  free(t);
  return rc;
}

/* stability: per (layer, head), calibrations on the first N calibration tokens against all. */
int sweep_stability(sweep_run_ctx *r, int fresh, sq_err *e) {
  sweep_state *s = r->s;
  const dump_t *d = &s->dump;
  sweep_stab_plan p;
  sweep_stab_plan_init(&p, s);
  store *main_st = NULL;
  int rc = sweep_sub_open(r, "stability", fresh, &main_st, e);
  if (rc) {
    sweep_stab_plan_free(&p, s->n_heads);
    return rc;
  }
  int64_t total = (int64_t)s->n_layers * s->n_heads * p.n_budget * (1 + p.has_sq), missing = 0;
  for (int li = 0; li < s->n_layers; li++) missing += sweep_stab_missing(r, &p, d->layers[s->layer_idx[li]]);
  int64_t saved_done = r->done;
  r->done = total - missing;
  progress_init(&r->prog, stderr, !r->quiet, total, r->done);
  if (!r->quiet)
    printf("stability: %d calibration budgets, %lld rows (%lld to compute) in %s/stability\n", p.n_budget,
           (long long)total, (long long)missing, s->out_dir);
  sweep_layer_buf b;
  sweep_buf_init(&b, s);
  int *want = sq_xmalloc((size_t)s->n_layers * sizeof *want);
  for (int li = 0; li < s->n_layers; li++) want[li] = sweep_stab_missing(r, &p, d->layers[s->layer_idx[li]]) > 0;
  sweep_pf pf;
  sweep_pf_init(&pf, &s->dump);
  for (int li = 0; li < s->n_layers && !rc && !sweep_stopping() && missing > 0; li++) {
    int layer = d->layers[s->layer_idx[li]];
    if (!want[li]) continue;
    rc = sweep_read_at(r, &pf, want, li, &b.raw, e);
    if (!rc) rc = sweep_stab_layer(r, s, &b, &p, layer, e);
    progress_layer(&r->prog, layer, li, s->n_layers);
  }
  sweep_pf_done(&pf, r);
  free(want);
  progress_finish(&r->prog);
  sweep_layer_buf_free(&b, s->n_heads);
  sweep_stab_plan_free(&p, s->n_heads);
  r->done = saved_done;
  return sweep_sub_close(r, s, main_st, rc, e);
}

void sweep_extra_dry_run(const sweep_state *s) {
  if (s->do_shift) {
    if (s->n_dom < 2) printf("; shift: a single domain selected; nothing to run\n");
    else {
      int n_tq = 0;
      for (int g = 0; g < s->n_xgrid; g++) n_tq += s->grid[g].arm == ARM_TQ;
      long long rows = (long long)s->n_layers * s->n_heads * (s->n_dom * n_tq + (long long)s->n_dom * s->n_dom * (s->n_xgrid - n_tq));
      printf("; shift: %d domains (%d x %d calib/eval pairs x %d calibrated points + %d x %d tq points) x %d layers x "
             "%d KV heads = %lld rows in %s/shift\n", s->n_dom, s->n_dom, s->n_dom, s->n_xgrid - n_tq, s->n_dom, n_tq,
             s->n_layers, s->n_heads, rows, s->out_dir);
      for (int i = 0; i < s->n_dom; i++)
        printf(";   domain %s: calibration %lld tokens of %d sequences; evaluation %lld tokens of %d sequences\n",
               s->dump.domain_names[s->dom[i]], (long long)s->dom_sel[i].n_calib_tok, s->dom_sel[i].n_calib_seq,
               (long long)s->dom_sel[i].eval_off[s->dom_sel[i].n_eval_seq], s->dom_sel[i].n_eval_seq);
    }
  }
  if (s->do_stability) {
    sweep_stab_plan p;
    sweep_stab_plan_init(&p, s);
    printf("; stability: %d calibration budgets (", p.n_budget);
    for (int i = 0; i < p.n_budget; i++) printf("%s%.*s", i ? "," : "", (int)strlen(p.pre[i]) - 3, p.pre[i] + 2);
    printf(") x (1 spectral row%s) x %d layers x %d KV heads = %lld rows in %s/stability\n",
           p.has_sq ? " + 1 sq row" : "", s->n_layers, s->n_heads,
           (long long)p.n_budget * (1 + p.has_sq) * s->n_layers * s->n_heads, s->out_dir);
    sweep_stab_plan_free(&p, s->n_heads);
  }
}
