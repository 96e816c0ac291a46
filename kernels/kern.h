/* kern: the one contract both backends implement (kernels/cpu = reference C with OpenMP,
 * kernels/cuda = the same on the GPU). They execute plans; they never decide what a method is.
 *
 * Metric definitions (methods.md §6), per (plan pair, KV head h) over the loaded layer's
 * evaluation sequences; s = q.k (unscaled), weights p = softmax(s / sqrt(D)):
 *   attn_cos    mean over (eval position t, query head g of h's group) of cos(o, o^), causal
 *               inside each sequence, o = sum p_j v_j from the dump's K,V (fp32), o^ from the
 *               compressed K (with the QJL estimator when the plan has one) and decoded V.
 *   randq_cos   8 (n_randq) queries ~ N(0, I) per (sequence, layer, head), no mask, all keys of
 *               the sequence: mean cos(o, o^).
 *   probs_cos   per (sequence): cosine of the flattened softmax weights of the last probs_last
 *               query positions x query heads of the group (causal), mean over sequences.
 *   k_cos/v_cos mean over eval tokens of cos(x, x^);  k/v_rel_mse = sum|x-x^|^2 / sum|x|^2.
 *   logit_bias  mean(s^ - s) over all causal (query, key) pairs of the attn protocol;
 *   logit_slope least-squares slope of s^ on s over the same pairs.
 *   topk_recall mean over (t, g) of |topk(p) & topk(p^)| / min(topk, t+1).
 * A cosine of two zero vectors counts as 1, of one zero vector as 0.
 *
 * Details both backends follow (the CPU reference defines them; kernels/cpu/kcpu.h spells out the
 * per-token arithmetic of encode/decode/score):
 *   - s^ for keys with qjl_rows > 0 includes the QJL term in every protocol; k_cos / k_rel_mse
 *     use the decoded key x^ (the mse reconstruction, without QJL).
 *   - QJL sign bit j is 1 when (S r)_j < 0, 0 otherwise (sign(0) = +1); fields are packed
 *     LSB-first in plan.h's order, zero-padded to whole bytes.
 *   - top-k ranks by score (s, resp. s^), ties to the lower key index; a row with t+1 < topk
 *     keys compares all of them (recall 1 unless scores tie differently).
 *   - probs uses min(probs_last, sequence length) positions; n_probs = number of sequences.
 *   - randq query r of sequence s for KV head h is randq[((h * n_seq + s) * n_randq + r) * D].
 *   - logit_bias, logit_slope and topk_recall belong to the attn protocol: NaN (count 0) when
 *     attn is off or q is NULL, like attn_cos; k_cos, v_cos and the rel_mse are always computed.
 *   - Partial sums are reduced in (sequence, query head) order, so a backend's numbers do not
 *     depend on its thread count.
 *   - eval refuses (SQ_EINPUT) a plan whose code_bits/code_bytes disagree with its layout
 *     (plan_side_finalize not called) or whose D differs from the layer's head_dim. */
#ifndef SQEXP_KERN_H
#define SQEXP_KERN_H
#include <stdint.h>
#include "codebook.h"
#include "err.h"
#include "plan.h"

typedef struct {
  int layer;                 /* model layer index (for messages) */
  int n_kv_heads, n_q_heads, head_dim;
  int n_seq;                 /* evaluation sequences */
  const int64_t *seq_off;    /* [n_seq+1] offsets into the eval token arrays below */
  int64_t n_tok;
  const float *k, *v;        /* [n_tok][n_kv_heads][D] evaluation keys / values */
  const float *q;            /* [n_tok][n_q_heads][D] their queries, NULL if the dump has none */
  int n_randq;               /* queries per (sequence, head) for randq; 0 disables it */
  const float *randq;        /* [n_kv_heads][n_seq][n_randq][D] drawn on the host */
  int protocols;             /* PROTO_* bit set (cfg.h) */
  int probs_last;            /* query positions per sequence for probs */
  int topk;
  uint64_t preload_id;       /* nonzero: the backend's preload of this id copied k, v, q (below) */
} kern_layer;

typedef struct {
  double attn_cos, randq_cos, probs_cos;
  double k_cos, v_cos, k_rel_mse, v_rel_mse;
  double logit_bias, logit_slope, topk_recall;
  int64_t n_attn, n_randq, n_probs, n_pairs;   /* how many terms each mean has */
} kern_metrics;

typedef struct kern_backend kern_backend;
struct kern_backend {
  const char *name;          /* "cpu" | "cuda" */
  void *impl;
  /* Uncentred second moments of calibration rows x [n][H][D] for every head h:
   * C[h][D*D] = sum_i x x^T / n in double (rows normalised first when normalize).
   * moments and eigh may run on one other thread while load_layer / eval run (the sweep
   * calibrates the next layer on its prefetch thread), never two of them at once. */
  int (*moments)(kern_backend *, const float *x, int64_t n, int H, int D, int normalize, double *C,
                 sq_err *);
  /* Take a layer's evaluation data and compute its reference (full-precision) attention outputs,
   * probabilities and logits once; they are reused by every eval() until the next load_layer.
   * The pointers in L must stay valid until then. */
  int (*load_layer)(kern_backend *, const kern_layer *L, sq_err *);
  /* Optional (NULL: not offered). Copy L's k, v and q to the device ahead of its load_layer, from
   * one other thread while load_layer / eval run (the sweep's prefetch thread, for the next
   * layer); returns when the copy is done. A later load_layer whose L has the same nonzero
   * preload_id, pointers and sizes takes them instead of copying (the host data must not change in
   * between); any other keeps them for its own. */
  int (*preload)(kern_backend *, const kern_layer *L, sq_err *);
  /* Metrics of n plan pairs (all for KV head `head` of the loaded layer). */
  int (*eval)(kern_backend *, int head, int n, const plan_pair *const *plans, const cb_table *cb,
              kern_metrics *out, sq_err *);
  /* Encode n rows (row i at x + i*stride floats) to codes [n][p->code_bytes]; decode back. */
  int (*encode)(kern_backend *, const plan_side *p, const cb_table *cb, const float *x, int64_t n,
                int64_t stride, uint8_t *codes, sq_err *);
  int (*decode)(kern_backend *, const plan_side *p, const cb_table *cb, const uint8_t *codes,
                int64_t n, float *xhat, sq_err *);
  void (*destroy)(kern_backend *);
  /* Eigendecomposition of H symmetric D x D matrices C[h] (row-major, C + h*D*D; only their
   * symmetry is relied on) in double: eigval[h*D + i] and evec[(h*D + i)*D + j] = component j of
   * the unit eigenvector of eigval[h*D + i] (eigenvector i is ROW i). The order of the pairs is
   * the backend's (cuda: ascending as LAPACK; cpu: GSL's unsorted order, so that cpu eigh +
   * calib_from_eig equals calib_compute bit for bit): feed each head to calib_from_eig, which
   * sorts, clamps and fixes the signs. Signs of the raw vectors are arbitrary. SQ_EINPUT for
   * H < 1, D < 1 or a non-finite entry (naming the head); SQ_EFAIL naming the head whose solver
   * did not converge. */
  int (*eigh)(kern_backend *, const double *C, int H, int D, double *eigval, double *evec, sq_err *);
  /* Host buffers for large layer data (NULL: plain malloc / free). cuda: malloc'ed and registered
   * page-locked (cudaHostRegister; left pageable when that fails), so that load_layer's and
   * moments' uploads run at the link's speed; never NULL. host_free takes only host_alloc's. */
  void *(*host_alloc)(size_t bytes);
  void (*host_free)(void *p);
  /* Plans per eval call the sweep should pass (at most; rows are appended after each call): cpu 8
   * (a call takes seconds, so a stop request waits at most that long), cuda 64 (a whole head's
   * grid in one call: shared projections computed once, per-call overheads paid once). */
  int eval_batch;
};

int kern_cpu_create(kern_backend **out, int threads, sq_err *e);
/* SQ_EFAIL with a reason when built without CUDA or no GPU is visible. */
int kern_cuda_create(kern_backend **out, int device, sq_err *e);
int kern_cuda_available(void);
/* The fast encoder (CUDA only; docs/cuda.md "Fast encode"): one fused tensor-core kernel does
 * norm, projection, quantisation and packing and writes encode()'s layout for n rows (row i at
 * x + i*stride floats, host memory) into codes [n][p->code_bytes]. The projection runs on fp16
 * tensor cores with fp32 accumulation, of the row divided by its norm (so fp16 cannot overflow):
 * passes = 1 rounds both operands to fp16 (~2^-11 relative); passes = 3 adds the hi/lo
 * correction products (~2^-21, about fp32's accuracy). It is not bit-exact: a coordinate whose
 * projection lies within that error of a codebook boundary may take the neighbouring index, and
 * y / scale is computed as y * (1/scale). encode() stays the exact path the sweep uses.
 * SQ_EINPUT for plans with QJL (qjl_rows > 0), codes longer than 2 + D bytes, D other than 64 or
 * 128, passes not 1 or 3, and in a build without sm_90a code or on a GPU other than compute
 * capability 9.0 (the projection is Hopper's wgmma). */
int kern_cuda_encode_fast(kern_backend *b, const plan_side *p, const cb_table *cb, const float *x,
                          int64_t n, int64_t stride, int passes, uint8_t *codes, sq_err *e);
/* SQ_EINPUT naming the layer when L is malformed (heads, offsets, buffers, topk in 1..topk_max). */
int kern_check_layer(const kern_layer *L, int topk_max, sq_err *e);
/* SQ_EINPUT naming the head and entry when eigh's input is malformed (H, D < 1, non-finite). */
int kern_check_moments(const double *C, int H, int D, sq_err *e);
/* cfg backend choice -> a backend (auto = cuda when available, else cpu). */
int kern_create(kern_backend **out, int choice, int threads, sq_err *e);

#endif
