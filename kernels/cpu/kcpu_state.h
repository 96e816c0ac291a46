/* kcpu_state: internals of the CPU backend shared by kern_cpu.c (create, moments, codes,
 * load_layer), cpu_attn.c (attention rows, the reference) and cpu_eval.c (eval). */
#ifndef SQEXP_KCPU_STATE_H
#define SQEXP_KCPU_STATE_H
#include <stdint.h>
#include "kern.h"

typedef struct {
  int threads;              /* OpenMP threads, >= 1 */
  int loaded;
  kern_layer L;             /* the caller's layer (its pointers stay valid until the next load) */
  int G;                    /* query heads per KV head */
  int attn_on, probs_on, randq_on;
  int64_t max_len;          /* longest sequence */
  float *o_ref;             /* [n_tok][Hq][D] full-precision attention outputs (attn_on) */
  int32_t *topk_ref;        /* [n_tok][Hq][topk] reference top-k keys (seq-local, -1 = none) */
  int64_t *probs_off;       /* [n_seq] offsets into probs_ref (probs_on) */
  float *probs_ref;         /* per seq: [P_s][Hq][L_s] causal weights of its last P_s positions */
  float *randq_ref;         /* [Hkv][n_seq][n_randq][D] randq reference outputs (randq_on) */
  int32_t *tok_seq;         /* [n_tok] sequence of every eval token */
  /* eval keeps decoded K/V per sequence transposed: a [D][ld] block at blk_off[s]; ld is padded
   * to an odd number of cache lines so the D rows do not collide in the same cache sets. */
  int64_t *blk_off, *blk_ld;  /* [n_seq] */
  int64_t blk_total;          /* floats per plan */
  /* Query rows split into blocks of about equal causal work (a long sequence would otherwise be
   * one task per query head and leave threads idle). Blocks run in sequence order, rows in order
   * inside; the split depends only on the lengths, so results do not depend on threads. */
  int64_t n_blk;
  int32_t *blk_seq;           /* [n_blk] sequence of the block */
  int64_t *blk_t0, *blk_t1;   /* [n_blk] its rows [t0, t1) within the sequence */
} kcpu_state;

/* Causal (query, key) pairs per row block that the split aims at. */
#define KCPU_BLOCK_PAIRS 32768

/* Query positions of sequence s that enter probs: the last probs_last (or all). */
static inline int64_t kcpu_probs_rows(const kern_layer *L, int64_t len) {
  return len < L->probs_last ? len : L->probs_last;
}

static inline float kcpu_dot(const float *a, const float *b, int D) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int j = 0; j < D; j++) s += a[j] * b[j];
  return s;
}

/* Softmax-weighted sum over n keys: e_j = exp((s_j - max s) / sqrt(D)) into e, o = sum e_j v_j /
 * sum e_j (v_j at V + j*vstride). Returns sum e_j (so callers can form p_j = e_j / sum). */
double kcpu_attend(const float *s, int64_t n, const float *V, int64_t vstride, int D, float *e,
                   float *o);
/* The same over keys/values stored transposed, one sequence block: K^T / V^T [D][ld] (element
 * (d, j) at X[d * ld + j]); used by eval, whose decoded K/V are kept in this layout so that the
 * inner loops run along keys. Both take nq queries at once (a GQA group, or the randq
 * queries of a sequence: rows of D floats at Q) so each block of keys is read once per group.
 * kcpu_scores_t: S[g * lds + j] = q_g . k_j for j < n.
 * kcpu_attend_t: E[g * lds + j] = exp((S - max) / sqrt(D)), sum[g] = sum_j E, O[g * D + d] =
 * sum_j E v_j[d] / sum[g]. */
void kcpu_scores_t(const float *Q, int nq, const float *KT, int64_t ld, int64_t n, int D, float *S,
                   int64_t lds);
void kcpu_attend_t(const float *S, int nq, int64_t lds, int64_t n, const float *VT, int64_t ld, int D,
                   float *E, float *O, double *sum);
/* Indices of the k largest s_j (j < n), ties to the lower index; fills k slots, -1 past n. */
void kcpu_topk(const float *s, int64_t n, int k, int32_t *idx);
/* |a & b| of two index lists of length k (entries -1 ignored). */
int kcpu_overlap(const int32_t *a, const int32_t *b, int k);
/* Compute the reference of the loaded layer (st->L set, flags set). */
void kcpu_reference(kcpu_state *st);
/* The metrics of n plans of KV head `head`. */
int kcpu_eval(kcpu_state *st, int head, int n, const plan_pair *const *plans, const cb_table *cb,
              kern_metrics *out, sq_err *e);

#endif
