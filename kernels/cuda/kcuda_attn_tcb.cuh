/* kcuda_attn_tcb: what the tensor-core eval kernels share (k_attn_tc, mma.sync in 3xTF32, and
 * k_attn_wg, wgmma in 3xfp16): the score tiles' layout, the recall margin and phase B -- per
 * tile, with lane = key, the logit sums, the rank counts and the online softmax from the score
 * tiles the tensor cores wrote. docs/cuda.md, "The attention rows". */
#ifndef SQEXP_KCUDA_ATTN_TCB_CUH
#define SQEXP_KCUDA_ATTN_TCB_CUH
#include "kcuda_attn_dev.cuh"

#define TC_LDS 40        /* score tile row stride (floats): conflict-free float2 stores */
#define TC_EPS 6e-5f     /* margin / (|q| |k|): ~2x the worst-case 3xTF32-vs-chain bound */

/* rank_offer for tensor-core scores: v = tc s^ of this lane's key, err its margin; q4 the head's
 * query and kh0 the plan's effective key of sequence-local index 0 (global memory). */
template <int TWO>
__device__ __forceinline__ void rank_offer_tc(rank_slots *R, int K, int cand, float v, float err, int base,
                                              const float4 *q4, const float *kh0, int D) {
  uint32_t mask = __ballot_sync(0xffffffffu, cand);
  if (!mask) return;
  do {
    int src = __ffs(mask) - 1;
    mask &= mask - 1;
    float cv = __shfl_sync(0xffffffffu, v, src), ce = __shfl_sync(0xffffffffu, err, src);
    int cj = base + src;
    int amb = (R->c0 < K && cj != R->r0 && fabsf(cv - R->v0) <= ce) ||
              (TWO && R->c1 < K && cj != R->r1 && fabsf(cv - R->v1) <= ce);
    if (__any_sync(0xffffffffu, amb)) /* too close to call: the chain's own value */
      cv = gqa_score_g(q4, (const float4 *)(kh0 + (int64_t)cj * D), D >> 2);
    R->c0 += cj != R->r0 && (cv > R->v0 || (cv == R->v0 && cj < R->r0));
    if (TWO) R->c1 += cj != R->r1 && (cv > R->v1 || (cv == R->v1 && cj < R->r1));
  } while (mask);
  rank_set_thr(R, K, TWO);
}

/* A warp's token (its 4 heads: rows 4 warp + gi of the tile) in one key tile. */
struct tc_row_state {
  float m[4], l[4];   /* running max and this lane's part of the normaliser, per head */
  float qn[4];        /* |q| per head (the recall margins) */
  double sums[5];     /* this lane's logit sums: s^ - s, s, s^, s^2, s s^ */
  rank_slots R[4];
};

/* The online softmax of one tile for a warp's 4 heads (lane = key, scores sh, -inf off the causal
 * range): the max moves only when a key beats it, by one vote (otherwise the rescale factor would be
 * exactly 1); the weights as exp2 of the logit times c log2 e, within ~2 ulp of expf. */
__device__ __forceinline__ void tc_softmax_step(tc_row_state &S, const float (&sh)[4], int valid, float c,
                                                float (&p)[4], float (&alpha)[4]) {
  const int GG = 4;
  unsigned up = 0;
#pragma unroll
  for (int gi = 0; gi < GG; gi++) up |= (unsigned)(sh[gi] > S.m[gi]) << gi;
  up = __reduce_or_sync(0xffffffffu, up);
  const float c2 = c * 1.4426950408889634f; /* exp(x c) = exp2(x c log2 e) */
#pragma unroll
  for (int gi = 0; gi < GG; gi++) {
    if (up >> gi & 1) {
      float mnew = fmaxf(S.m[gi], warp_max_f(sh[gi]));
      alpha[gi] = exp2f((S.m[gi] - mnew) * c2);
      S.l[gi] *= alpha[gi];
      S.m[gi] = mnew;
    }
    p[gi] = valid ? exp2f((sh[gi] - S.m[gi]) * c2) : 0.0f;
    S.l[gi] += p[gi];
  }
}

/* Phase B for one warp and tile (keys j0 .. j0 + nt - 1; the token's causal range [kb, ke)): with
 * lane = key, its scores from sc ([2][64][TC_LDS]: s^, then s; s only read when SUMS), knl its
 * effective key's norm; the logit sums (when SUMS: k_attn_wg has them from kcuda_logit), the
 * rank counts and the online softmax (k_attn_gqa's: the max moves only when a key
 * beats it, by one vote; otherwise the rescale factor is exactly 1; the weights as exp2 of the
 * logit times c log2 e, within ~2 ulp of expf). p: this lane's weights (0 for
 * a key outside the causal range), alpha: the rows' rescale factors. Returns 0 (p = 0, alpha = 1)
 * when the tile holds no causal key of the token. q4: the token's queries, Kh: the plan's effective
 * keys (global memory), for the recall's exact rescoring. */
/* The opening of a warp's phase B, shared by tc_phase_b and k_attn_wg's wg_phase_b_tr: p = 0 and
 * alpha = 1; 0 when the tile holds no causal key of the token (warp-uniform), else 1 with valid
 * (this lane's key, j0 + lane, is one), sh (its s^ for the four heads, -inf when not valid) and,
 * when SUMS, sr (its s, from the 64 rows after s^'s; 0 when not valid or not SUMS). */
template <int SUMS>
__device__ __forceinline__ int tc_tile_open(const float *sc, int warp, int live, int64_t j0, int nt, int64_t kb,
                                            int64_t ke, float (&p)[4], float (&alpha)[4], int &valid,
                                            float (&sh)[4], float (&sr)[4]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int gi = 0; gi < 4; gi++) p[gi] = 0.0f, alpha[gi] = 1.0f;
  if (!(live && j0 + nt > kb && j0 < ke)) return 0; /* warp-uniform */
  int64_t j = j0 + lane;
  valid = lane < nt && j >= kb && j < ke;
  const float *row = sc + 4 * warp * TC_LDS + lane; /* this lane's key in rows 4 warp + gi */
#pragma unroll
  for (int gi = 0; gi < 4; gi++) {
    sh[gi] = valid ? row[gi * TC_LDS] : -INFINITY;
    sr[gi] = SUMS && valid ? row[(64 + gi) * TC_LDS] : 0.0f;
  }
  return 1;
}

template <int TWO, int SUMS = 1>
__device__ __forceinline__ int tc_phase_b(tc_row_state &S, const float *sc, float knl, int warp, int live,
                                          int64_t j0, int nt, int64_t kb, int64_t ke, int K, const float4 *q4,
                                          const float *Kh, int D, float c, float (&p)[4], float (&alpha)[4]) {
  const int GG = 4;
  int valid;
  float sh[GG], sr[GG];
  if (!tc_tile_open<SUMS>(sc, warp, live, j0, nt, kb, ke, p, alpha, valid, sh, sr)) return 0;
  if (SUMS && valid) {
#pragma unroll
    for (int gi = 0; gi < GG; gi++) {
      S.sums[0] += (double)sh[gi] - (double)sr[gi];
      S.sums[1] += sr[gi];
      S.sums[2] += sh[gi];
      S.sums[3] += (double)sr[gi] * sr[gi];
      S.sums[4] += (double)sr[gi] * sh[gi];
    }
  }
  /* the four heads' votes at once: most tiles of a row offer no candidate and move no max */
  int cand[GG], any_cand = 0;
  float err[GG];
#pragma unroll
  for (int gi = 0; gi < GG; gi++) {
    err[gi] = TC_EPS * S.qn[gi] * knl + 1e-30f;
    cand[gi] = valid && sh[gi] >= S.R[gi].thr - err[gi];
    any_cand |= cand[gi];
  }
  if (__any_sync(0xffffffffu, any_cand)) {
    const int base = (int)(j0 - kb);
#pragma unroll
    for (int gi = 0; gi < GG; gi++)
      rank_offer_tc<TWO>(&S.R[gi], K, cand[gi], sh[gi], err[gi], base, q4 + gi * (D >> 2), Kh + kb * D, D);
  }
  tc_softmax_step(S, sh, valid, c, p, alpha);
  return 1;
}

/* The end of the tensor-core kernels: warp w's token's 4 output rows (4 w + gi of osm, [64][D])
 * back to k_attn_gqa's layout, lane = 4 adjacent dimensions, for gqa_write_rows. */
__device__ __forceinline__ void tc_gather_rows(const float *osm, int warp, int D, float (&o)[4][GQA_NDL]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int gi = 0; gi < 4; gi++)
    if (4 * lane < D) {
      float4 x = *(const float4 *)(osm + (4 * warp + gi) * D + 4 * lane);
      o[gi][0] = x.x, o[gi][1] = x.y, o[gi][2] = x.z, o[gi][3] = x.w;
    }
}

/* Before the key loop: no max, empty normalisers and sums (the rank slots are gqa_rank_init's). */
__device__ __forceinline__ void tc_row_init(tc_row_state &S) {
#pragma unroll
  for (int gi = 0; gi < 4; gi++) S.m[gi] = -INFINITY, S.l[gi] = 0.0f;
#pragma unroll
  for (int i = 0; i < 5; i++) S.sums[i] = 0.0;
}

#endif
