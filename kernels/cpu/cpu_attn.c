/* cpu_attn: attention rows and the full-precision reference of a loaded layer (computed once per
 * load_layer, reused by every eval). Memory stays O(n_tok * H * D): rows are computed one query
 * at a time, never a T x T matrix. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kcpu_state.h"

double kcpu_attend(const float *s, int64_t n, const float *V, int64_t vstride, int D, float *e,
                   float *o) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
  float c = 1.0f / sqrtf((float)D);
  double sum = 0.0;
  for (int64_t j = 0; j < n; j++) {
    e[j] = expf((s[j] - mx) * c);
    sum += e[j];
  }
  for (int d = 0; d < D; d++) o[d] = 0.0f;
  for (int64_t j = 0; j < n; j++) {
    const float *v = V + j * vstride;
    float w = e[j];
#pragma omp simd
    for (int d = 0; d < D; d++) o[d] += w * v[d];
  }
  float inv = (float)(1.0 / sum);
  for (int d = 0; d < D; d++) o[d] *= inv;
  return sum;
}

/* Scores of 32 keys at a time: 32 accumulators stay in registers while d runs, and the D x 32
 * block of keys stays in L1 while the nq queries (a GQA group) take their turn. */
void kcpu_scores_t(const float *Q, int nq, const float *KT, int64_t ld, int64_t n, int D, float *S,
                   int64_t lds) {
  int64_t j0 = 0;
  for (; j0 + 32 <= n; j0 += 32)
    for (int g = 0; g < nq; g++) {
      const float *q = Q + (int64_t)g * D;
      float acc[32] = {0};
      for (int d = 0; d < D; d++) {
        const float *kt = KT + d * ld + j0;
        float qd = q[d];
#pragma omp simd
        for (int jj = 0; jj < 32; jj++) acc[jj] += qd * kt[jj];
      }
      memcpy(S + g * lds + j0, acc, sizeof acc);
    }
  if (j0 == n) return;
  int rest = (int)(n - j0);
  for (int g = 0; g < nq; g++) {
    const float *q = Q + (int64_t)g * D;
    float *sj = S + g * lds + j0;
    for (int jj = 0; jj < rest; jj++) sj[jj] = 0.0f;
    for (int d = 0; d < D; d++) {
      const float *kt = KT + d * ld + j0;
      float qd = q[d];
      for (int jj = 0; jj < rest; jj++) sj[jj] += qd * kt[jj];
    }
  }
}

/* sum_j e_j v_j as 16 independent partial sums (one running sum would be add-latency bound). */
static float dot16(const float *e, const float *v, int64_t n) {
  float part[16] = {0};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
#pragma omp simd
    for (int jj = 0; jj < 16; jj++) part[jj] += e[j + jj] * v[j + jj];
  float acc = 0.0f;
  for (; j < n; j++) acc += e[j] * v[j];
  for (int jj = 0; jj < 16; jj++) acc += part[jj];
  return acc;
}

void kcpu_attend_t(const float *S, int nq, int64_t lds, int64_t n, const float *VT, int64_t ld, int D,
                   float *E, float *O, double *sum) {
  float c = 1.0f / sqrtf((float)D);
  for (int g = 0; g < nq; g++) {
    const float *s = S + g * lds;
    float *e = E + g * lds, mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    double sm = 0.0;
    for (int64_t j = 0; j < n; j++) {
      e[j] = expf((s[j] - mx) * c);
      sm += e[j];
    }
    sum[g] = sm;
  }
  for (int d = 0; d < D; d++) /* row d of V^T stays in L1 for the whole group */
    for (int g = 0; g < nq; g++) O[g * D + d] = dot16(E + g * lds, VT + d * ld, n) * (float)(1.0 / sum[g]);
}

void kcpu_topk(const float *s, int64_t n, int k, int32_t *idx) {
  float val[64];
  int cnt = 0;
  if (k > 64) k = 64; /* the config caps topk well below this */
  for (int64_t j = 0; j < n; j++) {
    float v = s[j];
    if (cnt == k && !(v > val[k - 1])) continue; /* equal values keep the earlier index */
    int pos = cnt < k ? cnt++ : k - 1;
    while (pos > 0 && v > val[pos - 1]) {
      val[pos] = val[pos - 1];
      idx[pos] = idx[pos - 1];
      pos--;
    }
    val[pos] = v;
    idx[pos] = (int32_t)j;
  }
  for (int i = cnt; i < k; i++) idx[i] = -1;
}

int kcpu_overlap(const int32_t *a, const int32_t *b, int k) {
  int c = 0;
  for (int i = 0; i < k; i++) {
    if (a[i] < 0) continue;
    for (int j = 0; j < k; j++)
      if (a[i] == b[j]) { c++; break; }
  }
  return c;
}

/* Reference rows of one (sequence, query head): attention outputs, top-k, probs weights. */
static void reference_task(kcpu_state *st, int64_t blk, int g, float *srow, float *e) {
  const kern_layer *L = &st->L;
  int D = L->head_dim, Hq = L->n_q_heads, Hkv = L->n_kv_heads, h = g / st->G;
  int64_t s = st->blk_seq[blk];
  int64_t off = L->seq_off[s], len = L->seq_off[s + 1] - off, P = kcpu_probs_rows(L, len);
  int64_t kstride = (int64_t)Hkv * D;
  const float *K = L->k + off * kstride + (int64_t)h * D, *V = L->v + off * kstride + (int64_t)h * D;
  float o[PLAN_MAX_D];
  int64_t t0 = st->blk_t0[blk], t1 = st->blk_t1[blk];
  if (!st->attn_on && t0 < len - P) t0 = len - P;
  for (int64_t t = t0; t < t1; t++) {
    const float *q = L->q + ((off + t) * Hq + g) * D;
    for (int64_t j = 0; j <= t; j++) srow[j] = kcpu_dot(q, K + j * kstride, D);
    double sum = kcpu_attend(srow, t + 1, V, kstride, D, e, o);
    if (st->attn_on) {
      memcpy(st->o_ref + ((off + t) * Hq + g) * D, o, (size_t)D * sizeof *o);
      kcpu_topk(srow, t + 1, L->topk, st->topk_ref + ((off + t) * Hq + g) * L->topk);
    }
    if (st->probs_on && t >= len - P) {
      float *p = st->probs_ref + st->probs_off[s] + ((t - (len - P)) * Hq + g) * len;
      for (int64_t j = 0; j < len; j++) p[j] = j <= t ? (float)(e[j] / sum) : 0.0f;
    }
  }
}

/* randq reference outputs of one (KV head, sequence, query). */
static void reference_randq(kcpu_state *st, int h, int64_t s, int r, float *srow, float *e) {
  const kern_layer *L = &st->L;
  int D = L->head_dim, Hkv = L->n_kv_heads;
  int64_t off = L->seq_off[s], len = L->seq_off[s + 1] - off, kstride = (int64_t)Hkv * D;
  const float *K = L->k + off * kstride + (int64_t)h * D, *V = L->v + off * kstride + (int64_t)h * D;
  int64_t slot = ((int64_t)h * L->n_seq + s) * L->n_randq + r;
  const float *q = L->randq + slot * D;
  for (int64_t j = 0; j < len; j++) srow[j] = kcpu_dot(q, K + j * kstride, D);
  kcpu_attend(srow, len, V, kstride, D, e, st->randq_ref + slot * D);
}

void kcpu_reference(kcpu_state *st) {
  const kern_layer *L = &st->L;
  int64_t n_task = st->n_blk * L->n_q_heads;
  if (st->attn_on || st->probs_on) {
#pragma omp parallel num_threads(st->threads)
    {
      float *srow = sq_xmalloc((size_t)st->max_len * sizeof *srow);
      float *e = sq_xmalloc((size_t)st->max_len * sizeof *e);
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < n_task; task++)
        reference_task(st, task / L->n_q_heads, (int)(task % L->n_q_heads), srow, e);
      free(srow);
      free(e);
    }
  }
  if (st->randq_on) {
    int64_t n_rq = (int64_t)L->n_kv_heads * L->n_seq * L->n_randq;
#pragma omp parallel num_threads(st->threads)
    {
      float *srow = sq_xmalloc((size_t)st->max_len * sizeof *srow);
      float *e = sq_xmalloc((size_t)st->max_len * sizeof *e);
#pragma omp for schedule(dynamic, 4)
      for (int64_t i = 0; i < n_rq; i++) {
        int64_t per_head = (int64_t)L->n_seq * L->n_randq;
        int h = (int)(i / per_head);
        int64_t rest = i % per_head;
        reference_randq(st, h, rest / L->n_randq, (int)(rest % L->n_randq), srow, e);
      }
      free(srow);
      free(e);
    }
  }
}
