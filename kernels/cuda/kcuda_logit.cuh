/* kcuda_logit: the logit sums of the attn protocol without the true scores in the eval kernel.
 *
 * The metrics' logit bias and slope need, per plan, sums over every causal (query row, key) pair
 * of s (true score q.k), s^ (the plan's q.k^), s^2 and s s^. Only s^ depends on the plan, and it
 * enters linearly, so with, per key j of a KV head (the group's G query heads at the tokens
 * t >= j of j's sequence),
 *     A_j = sum_t,g q_tg              W_j = sum_t,g (q_tg . k_j) q_tg
 * the sums are sum_j k^_j . A_j (s^), sum_j k^_j . W_j (s s^), sum_j k_j . A_j (s) and
 * sum_j k_j . W_j (s^2): one dot product per key and plan instead of a second score per pair.
 * A and W are computed once per layer in double (kc_logit_prep, from load_layer); k_attn_wg's
 * operand split adds the plan's two dot products per key (k_wg_split), so the eval kernel
 * computes s^ only. W_j = B_>tau k_j + the pairs of j's own tile, where B_>tau is the sum of
 * q q^T over the tiles of 64 tokens after j's tile in its sequence (a D x D matrix per tile).
 * docs/cuda.md, "The logit sums". */
#ifndef SQEXP_KCUDA_LOGIT_CUH
#define SQEXP_KCUDA_LOGIT_CUH
#include "kcuda.cuh"

typedef struct {
  kc_buf a, w;   /* double [Hkv][n_tok][D]: A_j, W_j */
  kc_buf s;      /* double [Hkv][n_tok][2]: k_j . A_j, k_j . W_j */
  kc_buf b;      /* double [n_tiles][D][D] of one head: its tiles' sum of q q^T, then B_>tau */
  kc_buf tiles;  /* int64 [n_tiles][2] token ranges, then [n_seq + 1] each sequence's first tile */
  int ready;     /* computed for the loaded layer */
} kc_logit;

/* A, W and the per-key sums of the loaded layer: q [n_tok][Hq][D], k [n_tok][Hkv][D] and
 * seq_off_dev [n_seq + 1] on the device, seq_off the host copy; G = Hq / Hkv. */
int kc_logit_prep(kc_logit *lg, const float *q, const float *k, const int64_t *seq_off, const int64_t *seq_off_dev,
                  int n_seq, int64_t n_tok, int Hq, int Hkv, int D, sq_err *e);

#endif
