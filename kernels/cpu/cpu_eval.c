/* cpu_eval: the metrics of n plan pairs for one KV head of the loaded layer (kern.h's header
 * defines them). Three phases per chunk of plans:
 *   1. code: encode + decode every eval token's K and V (tokens in parallel) -> effective keys
 *      (decoded key + QJL correction, so s^ = q.keff) and decoded values, plus K/V statistics;
 *   2. attn/probs: row blocks in parallel; each query row takes the G query heads of the group
 *      together, computes their true scores once and then every plan's s^, softmax, o^, logit
 *      sums, top-k, probs (the group shares the keys, so each key block is read once per row);
 *   3. randq: sequences in parallel, their n_randq queries together.
 * Every task writes its own partial sums; they are reduced in task order afterwards, so the
 * results do not depend on the number of threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kcpu.h"
#include "kcpu_state.h"

/* Plans decoded at once are capped so their K/V copies stay under this many floats. */
#define EVAL_CHUNK_FLOATS ((int64_t)32 << 20)

typedef struct {
  double cos, topk, bias, s, sh, ss, ssh;  /* sums over rows / pairs */
  int64_t rows, pairs;
  double p_dot, p_nn, p_hh;                /* probs: <p, p^>, |p|^2, |p^|^2 */
} attn_part;

typedef struct { double cos, err, nn; } rec_part; /* per token: cos(x, x^), |x-x^|^2, |x|^2 */

typedef struct {
  int n;                       /* plans in this chunk */
  const plan_side *ks[64], *vs[64];
  kcpu_layout kl[64], vl[64];
  float *keff, *vhat;          /* [n][blk_total]: per sequence a [D][ld] block (kcpu_state) */
  rec_part *krec, *vrec;       /* [n][n_tok] */
} chunk_t;

/* Encode + decode one token; dst[d * ld] receives coordinate d (the transposed block). */
static void code_token(const plan_side *p, const kcpu_layout *lay, const cb_table *cb,
                       const float *x, int is_key, float *dst, int64_t ld, rec_part *rec) {
  uint8_t code[2048];
  float xh[PLAN_MAX_D];
  int D = p->D;
  kcpu_encode_row(p, lay, cb, x, code);
  kcpu_decode_row(p, lay, cb, code, xh);
  double dot = 0, nx = 0, nh = 0, err = 0;
  for (int j = 0; j < D; j++) {
    dot += (double)x[j] * xh[j];
    nx += (double)x[j] * x[j];
    nh += (double)xh[j] * xh[j];
    err += ((double)x[j] - xh[j]) * ((double)x[j] - xh[j]);
  }
  rec->cos = kcpu_cos(dot, nx, nh);
  rec->err = err;
  rec->nn = nx;
  if (is_key) kcpu_effective_key(p, lay, code, xh, xh);
  for (int d = 0; d < D; d++) dst[d * ld] = xh[d];
}

static void phase_code(kcpu_state *st, int head, const cb_table *cb, chunk_t *c) {
  const kern_layer *L = &st->L;
  int64_t D = L->head_dim, nt = L->n_tok, kstride = (int64_t)L->n_kv_heads * D;
#pragma omp parallel for collapse(2) schedule(static) num_threads(st->threads)
  for (int i = 0; i < c->n; i++)
    for (int64_t t = 0; t < nt; t++) {
      int s = st->tok_seq[t];
      int64_t ld = st->blk_ld[s], src = t * kstride + (int64_t)head * D, rec = (int64_t)i * nt + t;
      int64_t dst = (int64_t)i * st->blk_total + st->blk_off[s] + (t - L->seq_off[s]);
      code_token(c->ks[i], &c->kl[i], cb, L->k + src, 1, c->keff + dst, ld, c->krec + rec);
      code_token(c->vs[i], &c->vl[i], cb, L->v + src, 0, c->vhat + dst, ld, c->vrec + rec);
    }
}

/* Per-thread scratch of the attention phases: G rows of max_len for the true scores, the
 * estimated scores and the softmax numerators; G outputs. */
typedef struct {
  float *srow, *shrow, *e, *o;
  double *sum;
  int64_t lds;
} scratch_t;

static scratch_t scratch_new(const kcpu_state *st, int rows) {
  scratch_t w = {.lds = st->max_len};
  w.srow = sq_xmalloc((size_t)(rows * w.lds) * sizeof(float));
  w.shrow = sq_xmalloc((size_t)(rows * w.lds) * sizeof(float));
  w.e = sq_xmalloc((size_t)(rows * w.lds) * sizeof(float));
  w.o = sq_xmalloc((size_t)rows * st->L.head_dim * sizeof(float));
  w.sum = sq_xmalloc((size_t)rows * sizeof(double));
  return w;
}

static void scratch_free(scratch_t *w) {
  free(w->srow), free(w->shrow), free(w->e), free(w->o), free(w->sum);
}

/* attn metrics of query head g (group member gi) at row t for one plan, from w's rows. */
static void attn_metrics(const kcpu_state *st, int64_t tok, int g, int64_t t, const scratch_t *w,
                         int gi, attn_part *a) {
  const kern_layer *L = &st->L;
  int D = L->head_dim, k = L->topk;
  const float *o = w->o + gi * D, *oref = st->o_ref + (tok * L->n_q_heads + g) * D;
  const float *srow = w->srow + gi * w->lds, *shrow = w->shrow + gi * w->lds;
  double dot = 0, n1 = 0, n2 = 0;
  for (int d = 0; d < D; d++) {
    dot += (double)o[d] * oref[d];
    n1 += (double)oref[d] * oref[d];
    n2 += (double)o[d] * o[d];
  }
  a->cos += kcpu_cos(dot, n1, n2);
  a->rows++;
  double bias = 0, ssum = 0, shsum = 0, ss = 0, ssh = 0;
#pragma omp simd reduction(+ : bias, ssum, shsum, ss, ssh)
  for (int64_t j = 0; j <= t; j++) {
    double sj = srow[j], hj = shrow[j];
    bias += hj - sj;
    ssum += sj;
    shsum += hj;
    ss += sj * sj;
    ssh += sj * hj;
  }
  a->bias += bias, a->s += ssum, a->sh += shsum, a->ss += ss, a->ssh += ssh;
  a->pairs += t + 1;
  int32_t top[64];
  kcpu_topk(shrow, t + 1, k, top);
  int64_t kk = t + 1 < k ? t + 1 : k;
  a->topk += (double)kcpu_overlap(st->topk_ref + (tok * L->n_q_heads + g) * k, top, k) / (double)kk;
}

/* probs partial sums of query head g at row t (one of the sequence's last P rows). */
static void probs_metrics(const kcpu_state *st, int64_t s, int g, int64_t t, const scratch_t *w,
                          int gi, attn_part *a) {
  const kern_layer *L = &st->L;
  int64_t len = L->seq_off[s + 1] - L->seq_off[s], P = kcpu_probs_rows(L, len);
  const float *pref = st->probs_ref + st->probs_off[s] + ((t - (len - P)) * L->n_q_heads + g) * len;
  const float *e = w->e + gi * w->lds;
  double sum = w->sum[gi];
  for (int64_t j = 0; j <= t; j++) {
    double ph = e[j] / sum;
    a->p_dot += ph * pref[j];
    a->p_nn += (double)pref[j] * pref[j];
    a->p_hh += ph * ph;
  }
}

/* Query row t of sequence s, all G query heads of KV head `head`, against every plan. */
static void attn_row(const kcpu_state *st, const chunk_t *c, int head, int64_t s, int64_t t,
                     scratch_t *w, attn_part *part) {
  const kern_layer *L = &st->L;
  int D = L->head_dim, G = st->G, g0 = head * G;
  int64_t off = L->seq_off[s], len = L->seq_off[s + 1] - off, tok = off + t;
  int64_t kstride = (int64_t)L->n_kv_heads * D;
  const float *Q = L->q + (tok * L->n_q_heads + g0) * D; /* the group's queries are adjacent */
  const float *K = L->k + off * kstride + (int64_t)head * D;
  if (st->attn_on) /* true scores, shared by every plan */
    for (int gi = 0; gi < G; gi++)
      for (int64_t j = 0; j <= t; j++) w->srow[gi * w->lds + j] = kcpu_dot(Q + gi * D, K + j * kstride, D);
  int probs_row = st->probs_on && t >= len - kcpu_probs_rows(L, len);
  int64_t ld = st->blk_ld[s];
  for (int i = 0; i < c->n; i++) {
    int64_t blk = (int64_t)i * st->blk_total + st->blk_off[s];
    kcpu_scores_t(Q, G, c->keff + blk, ld, t + 1, D, w->shrow, w->lds);
    kcpu_attend_t(w->shrow, G, w->lds, t + 1, c->vhat + blk, ld, D, w->e, w->o, w->sum);
    for (int gi = 0; gi < G; gi++) {
      if (st->attn_on) attn_metrics(st, tok, g0 + gi, t, w, gi, part + i);
      if (probs_row) probs_metrics(st, s, g0 + gi, t, w, gi, part + i);
    }
  }
}

static void phase_attn(kcpu_state *st, int head, const chunk_t *c, attn_part *parts) {
  const kern_layer *L = &st->L;
#pragma omp parallel num_threads(st->threads)
  {
    scratch_t w = scratch_new(st, st->G);
#pragma omp for schedule(dynamic, 1)
    for (int64_t blk = 0; blk < st->n_blk; blk++) {
      int64_t s = st->blk_seq[blk], len = L->seq_off[s + 1] - L->seq_off[s];
      int64_t t0 = st->blk_t0[blk], t1 = st->blk_t1[blk];
      if (!st->attn_on && t0 < len - kcpu_probs_rows(L, len)) t0 = len - kcpu_probs_rows(L, len);
      attn_part *part = parts + blk * c->n;
      memset(part, 0, (size_t)c->n * sizeof *part);
      for (int64_t t = t0; t < t1; t++) attn_row(st, c, head, s, t, &w, part);
    }
    scratch_free(&w);
  }
}

/* randq: cos(o, o^) of every (sequence, random query) and plan, into cosv[(s * R + r) * n + i];
 * a sequence's R queries go through the kernels together. */
static void phase_randq(kcpu_state *st, int head, const chunk_t *c, double *cosv) {
  const kern_layer *L = &st->L;
  int D = L->head_dim, R = L->n_randq;
#pragma omp parallel num_threads(st->threads)
  {
    scratch_t w = scratch_new(st, R);
#pragma omp for schedule(dynamic, 1)
    for (int64_t s = 0; s < L->n_seq; s++) {
      int64_t len = L->seq_off[s + 1] - L->seq_off[s], ld = st->blk_ld[s];
      int64_t slot = ((int64_t)head * L->n_seq + s) * R;
      const float *Q = L->randq + slot * D;
      for (int i = 0; i < c->n; i++) {
        int64_t blk = (int64_t)i * st->blk_total + st->blk_off[s];
        kcpu_scores_t(Q, R, c->keff + blk, ld, len, D, w.shrow, w.lds);
        kcpu_attend_t(w.shrow, R, w.lds, len, c->vhat + blk, ld, D, w.e, w.o, w.sum);
        for (int r = 0; r < R; r++) {
          const float *o = w.o + r * D, *oref = st->randq_ref + (slot + r) * D;
          double dot = 0, n1 = 0, n2 = 0;
          for (int d = 0; d < D; d++) {
            dot += (double)o[d] * oref[d];
            n1 += (double)oref[d] * oref[d];
            n2 += (double)o[d] * o[d];
          }
          cosv[(s * R + r) * c->n + i] = kcpu_cos(dot, n1, n2);
        }
      }
    }
    scratch_free(&w);
  }
}

static void reduce_rec(const rec_part *r, int64_t n, double *cos_mean, double *rel_mse) {
  double c = 0, err = 0, nn = 0;
  for (int64_t t = 0; t < n; t++) {
    c += r[t].cos;
    err += r[t].err;
    nn += r[t].nn;
  }
  *cos_mean = c / (double)n;
  *rel_mse = nn > 0 ? err / nn : (err > 0 ? INFINITY : 0.0);
}

/* Sum the task partials of plan i in task order and fill its attn/probs/logit/topk metrics. */
static void reduce_attn(const kcpu_state *st, const attn_part *parts, int nc, int i, kern_metrics *m) {
  const kern_layer *L = &st->L;
  attn_part a = {0};
  double probs_sum = 0, pd = 0, pn = 0, ph = 0;
  for (int64_t blk = 0; blk < st->n_blk; blk++) {
    const attn_part *p = parts + blk * nc + i;
    a.cos += p->cos, a.topk += p->topk, a.bias += p->bias;
    a.s += p->s, a.sh += p->sh, a.ss += p->ss, a.ssh += p->ssh;
    a.rows += p->rows, a.pairs += p->pairs;
    pd += p->p_dot, pn += p->p_nn, ph += p->p_hh;
    if (blk + 1 == st->n_blk || st->blk_seq[blk + 1] != st->blk_seq[blk]) { /* sequence done */
      probs_sum += kcpu_cos(pd, pn, ph);
      pd = pn = ph = 0;
    }
  }
  if (st->attn_on) {
    m->attn_cos = a.cos / (double)a.rows;
    m->topk_recall = a.topk / (double)a.rows;
    m->logit_bias = a.bias / (double)a.pairs;
    double N = (double)a.pairs, den = N * a.ss - a.s * a.s;
    m->logit_slope = den > 0 ? (N * a.ssh - a.s * a.sh) / den : NAN;
    m->n_attn = a.rows;
    m->n_pairs = a.pairs;
  }
  if (st->probs_on) {
    m->probs_cos = probs_sum / (double)L->n_seq;
    m->n_probs = L->n_seq;
  }
}

static void empty_metrics(kern_metrics *m) {
  m->attn_cos = m->randq_cos = m->probs_cos = NAN;
  m->k_cos = m->v_cos = m->k_rel_mse = m->v_rel_mse = NAN;
  m->logit_bias = m->logit_slope = m->topk_recall = NAN;
  m->n_attn = m->n_randq = m->n_probs = m->n_pairs = 0;
}

static int eval_chunk(kcpu_state *st, int head, int n, const plan_pair *const *plans,
                      const cb_table *cb, kern_metrics *out, sq_err *e) {
  const kern_layer *L = &st->L;
  int64_t nt = L->n_tok;
  chunk_t c = {.n = n};
  for (int i = 0; i < n; i++) {
    c.ks[i] = &plans[i]->k;
    c.vs[i] = &plans[i]->v;
    empty_metrics(&out[i]);
  }
  c.keff = sq_xcalloc((size_t)(n * st->blk_total), sizeof(float)); /* zero padding */
  c.vhat = sq_xcalloc((size_t)(n * st->blk_total), sizeof(float));
  c.krec = sq_xmalloc((size_t)(n * nt) * sizeof(rec_part));
  c.vrec = sq_xmalloc((size_t)(n * nt) * sizeof(rec_part));
  for (int i = 0; i < n; i++) {
    kcpu_layout_of(c.ks[i], &c.kl[i], e);
    kcpu_layout_of(c.vs[i], &c.vl[i], e);
  }
  phase_code(st, head, cb, &c);
  for (int i = 0; i < n; i++) {
    reduce_rec(c.krec + i * nt, nt, &out[i].k_cos, &out[i].k_rel_mse);
    reduce_rec(c.vrec + i * nt, nt, &out[i].v_cos, &out[i].v_rel_mse);
  }
  if (st->attn_on || st->probs_on) {
    int64_t n_task = st->n_blk;
    attn_part *parts = sq_xmalloc((size_t)(n_task * n) * sizeof *parts);
    phase_attn(st, head, &c, parts);
    for (int i = 0; i < n; i++) reduce_attn(st, parts, n, i, &out[i]);
    free(parts);
  }
  if (st->randq_on) {
    int64_t n_task = (int64_t)L->n_seq * L->n_randq;
    double *cosv = sq_xmalloc((size_t)(n_task * n) * sizeof *cosv);
    phase_randq(st, head, &c, cosv);
    for (int i = 0; i < n; i++) {
      double sum = 0;
      for (int64_t t = 0; t < n_task; t++) sum += cosv[t * n + i];
      out[i].randq_cos = sum / (double)n_task;
      out[i].n_randq = n_task;
    }
    free(cosv);
  }
  free(c.keff);
  free(c.vhat);
  free(c.krec);
  free(c.vrec);
  return SQ_OK;
}

static int check_plan(const kcpu_state *st, const plan_side *p, int i, const char *kv, sq_err *e) {
  kcpu_layout lay;
  if (p->D != st->L.head_dim)
    return sq_fail(e, SQ_EINPUT, "eval: plan %d %s has D=%d but layer %d has head_dim %d", i, kv,
                   p->D, st->L.layer, st->L.head_dim);
  if (kcpu_layout_of(p, &lay, e)) return sq_wrap(e, "eval: plan %d %s: ", i, kv);
  if (p->code_bits != lay.bits || p->code_bytes != lay.bytes)
    return sq_fail(e, SQ_EINPUT, "eval: plan %d %s says %d bits / %d bytes, layout has %d / %d", i,
                   kv, p->code_bits, p->code_bytes, lay.bits, lay.bytes);
  if (lay.bytes > 2048)
    return sq_fail(e, SQ_EINPUT, "eval: plan %d %s: %d bytes per token (max 2048)", i, kv, lay.bytes);
  return SQ_OK;
}

int kcpu_eval(kcpu_state *st, int head, int n, const plan_pair *const *plans, const cb_table *cb,
              kern_metrics *out, sq_err *e) {
  const kern_layer *L = &st->L;
  if (head < 0 || head >= L->n_kv_heads)
    return sq_fail(e, SQ_EINPUT, "eval: KV head %d outside 0..%d", head, L->n_kv_heads - 1);
  for (int i = 0; i < n; i++) {
    if (check_plan(st, &plans[i]->k, i, "K", e) || check_plan(st, &plans[i]->v, i, "V", e))
      return SQ_EINPUT;
  }
  int64_t per_plan = 2 * st->blk_total;
  int chunk = (int)(EVAL_CHUNK_FLOATS / per_plan);
  chunk = chunk < 1 ? 1 : chunk > 64 ? 64 : chunk;
  for (int i0 = 0; i0 < n; i0 += chunk) {
    int nc = n - i0 < chunk ? n - i0 : chunk;
    int rc = eval_chunk(st, head, nc, plans + i0, cb, out + i0, e);
    if (rc) return rc;
  }
  return SQ_OK;
}
