/* kern_cpu: the reference backend (plain C + OpenMP). It is the ground truth the CUDA backend is
 * tested against, so it favours the obvious arithmetic of kcpu.h over cleverness. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include "calib.h"
#include "kcpu.h"
#include "kcpu_state.h"

static kcpu_state *state_of(kern_backend *b) { return (kcpu_state *)b->impl; }

static int cpu_moments(kern_backend *b, const float *x, int64_t n, int H, int D, int normalize,
                       double *C, sq_err *e) {
  if (n < 1 || H < 1 || D < 1)
    return sq_fail(e, SQ_EINPUT, "moments: need rows, heads and dims (got n=%lld H=%d D=%d)",
                   (long long)n, H, D);
#pragma omp parallel for num_threads(state_of(b)->threads) schedule(dynamic, 1)
  for (int h = 0; h < H; h++)
    calib_moment(x + (int64_t)h * D, n, (int64_t)H * D, D, normalize, C + (int64_t)h * D * D);
  return SQ_OK;
}

/* One GSL decomposition per head (calib_eigh allocates its own workspace, so the heads run in
 * parallel without sharing any); the first failing head (lowest index) is reported. */
static int cpu_eigh(kern_backend *b, const double *C, int H, int D, double *eigval, double *evec,
                    sq_err *e) {
  if (kern_check_moments(C, H, D, e)) return SQ_EINPUT;
  int *status = sq_xcalloc((size_t)H, sizeof(int));
  sq_err *errs = sq_xcalloc((size_t)H, sizeof(sq_err));
#pragma omp parallel for num_threads(state_of(b)->threads) schedule(dynamic, 1)
  for (int h = 0; h < H; h++)
    status[h] = calib_eigh(C + (int64_t)h * D * D, D, eigval + (int64_t)h * D,
                           evec + (int64_t)h * D * D, &errs[h]);
  int rc = SQ_OK;
  for (int h = 0; h < H && !rc; h++)
    if (status[h]) rc = sq_fail(e, status[h], "eigh: head %d: %s", h, errs[h].msg);
  free(status);
  free(errs);
  return rc;
}

static int cpu_encode(kern_backend *b, const plan_side *p, const cb_table *cb, const float *x,
                      int64_t n, int64_t stride, uint8_t *codes, sq_err *e) {
  kcpu_layout lay;
  if (kcpu_layout_of(p, &lay, e)) return sq_wrap(e, "encode: ");
#pragma omp parallel for num_threads(state_of(b)->threads) schedule(static)
  for (int64_t i = 0; i < n; i++) kcpu_encode_row(p, &lay, cb, x + i * stride, codes + i * lay.bytes);
  return SQ_OK;
}

static int cpu_decode(kern_backend *b, const plan_side *p, const cb_table *cb, const uint8_t *codes,
                      int64_t n, float *xhat, sq_err *e) {
  kcpu_layout lay;
  if (kcpu_layout_of(p, &lay, e)) return sq_wrap(e, "decode: ");
#pragma omp parallel for num_threads(state_of(b)->threads) schedule(static)
  for (int64_t i = 0; i < n; i++) kcpu_decode_row(p, &lay, cb, codes + i * lay.bytes, xhat + i * p->D);
  return SQ_OK;
}

static void drop_reference(kcpu_state *st) {
  free(st->o_ref);
  free(st->topk_ref);
  free(st->probs_off);
  free(st->probs_ref);
  free(st->randq_ref);
  free(st->tok_seq);
  free(st->blk_off);
  free(st->blk_ld);
  free(st->blk_seq);
  free(st->blk_t0);
  free(st->blk_t1);
  st->tok_seq = st->blk_seq = NULL;
  st->blk_off = st->blk_ld = st->blk_t0 = st->blk_t1 = NULL;
  st->o_ref = st->probs_ref = st->randq_ref = NULL;
  st->topk_ref = NULL;
  st->probs_off = NULL;
  st->loaded = 0;
}

/* Split every sequence's query rows into blocks of ~KCPU_BLOCK_PAIRS causal pairs: row r has
 * r + 1 keys, so block k of m ends near len * sqrt(k / m). */
static void split_rows(kcpu_state *st) {
  const kern_layer *L = &st->L;
  int64_t total = 0;
  int64_t *parts = sq_xmalloc((size_t)L->n_seq * sizeof *parts);
  for (int s = 0; s < L->n_seq; s++) {
    int64_t len = L->seq_off[s + 1] - L->seq_off[s], pairs = len * (len + 1) / 2;
    parts[s] = (pairs + KCPU_BLOCK_PAIRS - 1) / KCPU_BLOCK_PAIRS;
    if (parts[s] > len) parts[s] = len;
    total += parts[s];
  }
  st->n_blk = total;
  st->blk_seq = sq_xmalloc((size_t)total * sizeof *st->blk_seq);
  st->blk_t0 = sq_xmalloc((size_t)total * sizeof *st->blk_t0);
  st->blk_t1 = sq_xmalloc((size_t)total * sizeof *st->blk_t1);
  int64_t b = 0;
  for (int s = 0; s < L->n_seq; s++) {
    int64_t len = L->seq_off[s + 1] - L->seq_off[s], t0 = 0;
    for (int64_t k = 1; k <= parts[s]; k++) {
      int64_t t1 = k == parts[s] ? len : (int64_t)((double)len * sqrt((double)k / (double)parts[s]));
      if (t1 <= t0) continue; /* never an empty block */
      st->blk_seq[b] = s, st->blk_t0[b] = t0, st->blk_t1[b] = t1;
      b++, t0 = t1;
    }
  }
  st->n_blk = b;
  free(parts);
}

static int cpu_load_layer(kern_backend *b, const kern_layer *L, sq_err *e) {
  kcpu_state *st = state_of(b);
  drop_reference(st);
  if (kern_check_layer(L, 64, e)) return SQ_EINPUT;
  st->L = *L;
  st->G = L->n_q_heads / L->n_kv_heads;
  st->attn_on = (L->protocols & PROTO_ATTN) && L->q;
  st->probs_on = (L->protocols & PROTO_PROBS) && L->q && L->probs_last > 0;
  st->randq_on = (L->protocols & PROTO_RANDQ) && L->n_randq > 0;
  st->max_len = 0;
  for (int s = 0; s < L->n_seq; s++)
    if (L->seq_off[s + 1] - L->seq_off[s] > st->max_len) st->max_len = L->seq_off[s + 1] - L->seq_off[s];
  int64_t D = L->head_dim, Hq = L->n_q_heads;
  st->tok_seq = sq_xmalloc((size_t)L->n_tok * sizeof *st->tok_seq);
  for (int s = 0; s < L->n_seq; s++)
    for (int64_t t = L->seq_off[s]; t < L->seq_off[s + 1]; t++) st->tok_seq[t] = s;
  st->blk_off = sq_xmalloc((size_t)L->n_seq * sizeof(int64_t));
  st->blk_ld = sq_xmalloc((size_t)L->n_seq * sizeof(int64_t));
  st->blk_total = 0;
  for (int s = 0; s < L->n_seq; s++) {
    int64_t len = L->seq_off[s + 1] - L->seq_off[s], lines = (len + 15) / 16;
    st->blk_ld[s] = 16 * (lines | 1); /* an odd number of 64-byte lines */
    st->blk_off[s] = st->blk_total;
    st->blk_total += D * st->blk_ld[s];
  }
  split_rows(st);
  if (st->attn_on) {
    st->o_ref = sq_xmalloc((size_t)(L->n_tok * Hq * D) * sizeof(float));
    st->topk_ref = sq_xmalloc((size_t)(L->n_tok * Hq * L->topk) * sizeof(int32_t));
  }
  if (st->probs_on) {
    st->probs_off = sq_xmalloc((size_t)L->n_seq * sizeof(int64_t));
    int64_t tot = 0;
    for (int s = 0; s < L->n_seq; s++) {
      int64_t len = L->seq_off[s + 1] - L->seq_off[s];
      st->probs_off[s] = tot;
      tot += kcpu_probs_rows(L, len) * Hq * len;
    }
    st->probs_ref = sq_xmalloc((size_t)tot * sizeof(float));
  }
  if (st->randq_on)
    st->randq_ref = sq_xmalloc((size_t)((int64_t)L->n_kv_heads * L->n_seq * L->n_randq * D) * sizeof(float));
  kcpu_reference(st);
  st->loaded = 1;
  return SQ_OK;
}

static int cpu_eval(kern_backend *b, int head, int n, const plan_pair *const *plans,
                    const cb_table *cb, kern_metrics *out, sq_err *e) {
  kcpu_state *st = state_of(b);
  if (!st->loaded) return sq_fail(e, SQ_EFAIL, "eval: no layer loaded");
  return kcpu_eval(st, head, n, plans, cb, out, e);
}

static void cpu_destroy(kern_backend *b) {
  if (!b) return;
  drop_reference(state_of(b));
  free(b->impl);
  free(b);
}

int kern_cpu_create(kern_backend **out, int threads, sq_err *e) {
  if (threads < 0) return sq_fail(e, SQ_EINPUT, "cpu backend: threads %d < 0", threads);
  kern_backend *b = sq_xcalloc(1, sizeof *b);
  kcpu_state *st = sq_xcalloc(1, sizeof *st);
  st->threads = threads > 0 ? threads : omp_get_max_threads();
  b->name = "cpu";
  b->impl = st;
  b->moments = cpu_moments;
  b->load_layer = cpu_load_layer;
  b->eval = cpu_eval;
  b->encode = cpu_encode;
  b->decode = cpu_decode;
  b->destroy = cpu_destroy;
  b->eigh = cpu_eigh;
  b->eval_batch = 8;
  *out = b;
  return SQ_OK;
}
