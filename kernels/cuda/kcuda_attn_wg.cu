/* kcuda_attn_wg: k_attn_wg, the default EVAL_ATTN kernel for G = 4 and D = 64, 128
 * (SQEXP_CUDA_ATTN=wg or unset): k_attn_tc's blocks and phase B with the two matrix products on
 * Hopper's warpgroup MMA (wgmma, sm_90a) in 3xfp16. docs/cuda.md, "The attention rows". */
#include <cuda_fp16.h>
#include "kcuda_attn_tcb.cuh"
#include "kcuda_wgmma.cuh"

/* The operands are split once per launch (k_wg_split), not per block: every x becomes fp16 hi +
 * lo x 2^-11 (the fast encoder's split: hi = x rounded to fp16, lo = (x - hi) 2^11 rounded, so
 * x = hi + lo 2^-11 to ~2^-22 relative) in row-major arrays: the plans' effective keys and
 * decoded values, plus the effective keys' norms (the recall margins) and, from the same pass
 * over the effective keys, the logit sums' per-key terms (kcuda_logit.cuh: the kernel computes
 * s^ only, never the true scores). A key is used by every later block of its sequence (~32 at
 * Mistral's 1,024-token sequences), so splitting it in the kernel cost each block-tile ~230
 * instructions per thread (measured: 1,350 per warp and tile in all, at 1.61 ms per (plan, head)).
 * After the split, k_wg_slot_scores computes the rank slots' s^_r (top-k recall) for every (plan,
 * token, head, slot) -- the fmaf chain gqa_rank_init ran in this kernel's prologue, same function,
 * same operands, so the same bits -- and the kernel only loads them (gqa_rank_init_from): with one
 * block per SM that prologue's dependent chains over gathered keys had 13 % of the stall samples
 * while the tensor cores idled. Not yet measured on a GPU.
 *
 * Per tile of 32 keys, with the block's 64 query rows (16 tokens x 4 heads; row 4 w + gi = token
 * w, head gi; their queries split once per block) and 4 warpgroups:
 *   - staging (cp.async, three stages): the four hi / lo tiles straight into the 128-byte swizzle
 *     layout wgmma reads (16-byte unit u of key row r at unit u ^ (r & 7)): K-major for the keys
 *     (Q K^T) and, the same layout read MN-major (wgmma's transposed B), for the values;
 *   - phase A: warpgroup g < WG_AS computes S^ for the tile's keys: Q hi . K hi into one
 *     accumulator, Q hi . K lo + Q lo . K hi into another, added x 2^-11 (the lo . lo term, ~2^-22,
 *     is dropped): as accurate as k_attn_tc's 3xTF32 (fp16 and tf32 both keep 11 significant
 *     bits, and hi here is rounded, not truncated), so TC_EPS stays its margin. Phase A of tile
 *     it + 1 is issued before phase B of tile it and runs during it (scores double-buffered);
 *   - phase B (all warps): tc_phase_b (k_attn_tc's, without the logit sums), the weights split
 *     into P hi | lo (A operand: k 0..31 hi, 32..63 lo of one 128-byte row);
 *   - phase C: warpgroup g: O[:, D/4 g ..] = alpha O + P V, 3xfp16 likewise (O rescaled only when
 *     some row's max moved: the barrier before it is a __syncthreads_or). Two barriers per tile.
 * Measured on the H200 (the bench's 48 (plan, head), attention GPU time): the in-kernel split 77.3
 * ms, split once per launch 65.9, with the staging, descriptor and phase B trims 56.5, phase A on
 * two warpgroups (S and S^) 51.4, s^ only 44.1-44.4 (k_attn_tc: 93.0). docs/cuda.md has what was
 * tried and dropped (warp specialisation among it).
 * fp16's range is the price: k_wg_split, or the block for its queries, raises a.range_flag when
 * an operand would not fit (|x| >= 65520 rounds to infinity), and the launcher recomputes the
 * launch with k_attn_tc (real activations are far below). */
#define WG_LO_SCALE 2048.0f
#define WG_HALF_INF 65520.0f /* |x| from here rounds to an infinite fp16 */
#define WG_NARR 4            /* staged tiles: keff hi, keff lo, v hi, v lo */
#define WG_VARR 2            /* the first value tile among them */
#ifndef WG_AS
#define WG_AS 1 /* warpgroups in phase A: 1 (a 64 x 32 block; measured 3% faster overall), or 2 (64 x 16 each) */
#endif
#define WG_NA (TILE / WG_AS) /* phase A's block width */
#define WG_NST 4 /* stages: C(it - 1) and A(it + 1) in flight during tile it, it + 2 landing (a power of 2) */

template <int D>
struct wg_cfg {
  static_assert(D == 64 || D == 128, "whole 128-byte swizzle rows of dimensions");
  enum : int {
    NK = D / 8,                      /* 16-byte units (8 fp16) per row */
    NPV = D / 4,                     /* output dimensions per warpgroup */
    Q_BYTES = 64 * D * 2,            /* the queries' hi (then lo) */
    T_BYTES = TILE * D * 2,          /* one staged tile */
    STAGE = WG_NARR * T_BYTES,
    P_BYTES = 64 * 128,              /* the weights: 64 rows of hi | lo (two buffers) */
    OFF_QH = 0,
    OFF_QL = Q_BYTES,
    OFF_STAGE = 2 * Q_BYTES,         /* WG_NST stages of WG_NARR tiles */
    OFF_P = OFF_STAGE + WG_NST * STAGE,
    OFF_SC = OFF_P + 2 * P_BYTES,    /* [2][64][TC_LDS] scores of tiles it, it + 1 */
    OFF_ALPHA = OFF_SC + 2 * 64 * TC_LDS * 4, /* [2][64] rescale factors (with P's buffers) */
    OFF_RANGE = OFF_ALPHA + 2 * 64 * 4,       /* int64 [2][GQA_WARPS]: the warps' key ranges */
    SMEM = OFF_RANGE + 2 * GQA_WARPS * 8
  };
  static_assert(Q_BYTES % 1024 == 0 && T_BYTES % 1024 == 0 && OFF_P % 1024 == 0,
                "wgmma operands start 1024-byte aligned (the swizzle is on address bits)");
  static_assert(2 * Q_BYTES >= 64 * D * 4, "the outputs reuse the queries' space");
};

/* The split operands of one launch (n plans, nt tokens, top-k K), fp16 [rows][D] each, and the
 * rank slots' s^_r. Every array starts 16-byte aligned: the fp16 arrays are whole rows of D >= 64
 * halves, the slot scores 4 K floats per token. */
struct wg_ops {
  __half *keff_h, *keff_l, *vhat_h, *vhat_l; /* [n * nt][D] */
  float *slot_s;                             /* [n][nt][4][K]: k_wg_slot_scores' s^_r */
  float *keff_norm;                          /* [n * nt], then 2 TILE floats that the lanes past the
                                                keys read a tile ahead (and do not use) */
};
static size_t wg_ops_bytes(int n, int64_t nt, int D, int K) {
  return (size_t)(4 * n) * (size_t)nt * D * sizeof(__half) + (size_t)n * nt * 4 * K * sizeof(float) +
         ((size_t)n * nt + 2 * TILE) * sizeof(float);
}
static wg_ops wg_ops_at(void *buf, int n, int64_t nt, int D, int K) {
  wg_ops o;
  __half *h = (__half *)buf;
  size_t one = (size_t)n * nt * D;
  o.keff_h = h, o.keff_l = h + one, o.vhat_h = h + 2 * one, o.vhat_l = h + 3 * one;
  o.slot_s = (float *)(h + 4 * one);
  o.keff_norm = o.slot_s + (size_t)n * nt * 4 * K;
  return o;
}

/* The logit sums' per-key terms (kcuda_logit.cuh) that k_wg_split adds for the plans' effective
 * keys: row t of plan p gets, in fields 2..6 of its rows_out row (p, t G) (the token's first query
 * head), s^ - s, s, s^, s^2, s s^ summed over the causal pairs of key t: k^.A - k.A, k.A, k^.A,
 * k.W, k^.W. a = NULL: not wanted (the values). */
struct wg_lg {
  const double *a, *w, *s12; /* the head's A_j, W_j [nt][D] and k_j . A_j, k_j . W_j [nt][2] */
  double *rows;
  int64_t nt, n_rows;
  int G, n_fields;
};

__device__ __forceinline__ uint32_t wg_smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* fp16 hi and lo x ls of two floats as half2 bits (ls: WG_LO_SCALE for the score operands, 1 for
 * the weighted sum's, wg_issue3x1). */
__device__ __forceinline__ void wg_split2(float x, float y, uint32_t *hi, uint32_t *lo, float ls = WG_LO_SCALE) {
  __half2 h = __floats2half2_rn(x, y);
  float2 b = __half22float2(h);
  __half2 l = __floats2half2_rn((x - b.x) * ls, (y - b.y) * ls);
  *hi = *(uint32_t *)&h;
  *lo = *(uint32_t *)&l;
}

/* One warp per row: rows r of src (row r at src + r * stride, D floats) into hi / lo [r][D];
 * norm[r] = |row| when norm is set; flag when an element does not fit fp16; lg's terms (plan
 * r / nt, key r % nt) when lg.a is set. */
__global__ void k_wg_split(const float *src, int64_t rows, int64_t stride, int D, __half *hi, __half *lo,
                           float lo_scale, float *norm, int *flag, wg_lg lg) {
  const int lane = threadIdx.x & 31;
  int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (r >= rows) return;
  const float *x = src + r * stride;
  const int64_t t = lg.a ? r % lg.nt : 0;
  float ss = 0.0f, mx = 0.0f;
  double da = 0.0, dw = 0.0;
  for (int d = 4 * lane; d < D; d += 128) {
    float4 v = *(const float4 *)(x + d);
    if (lg.a) {
      const double *ar = lg.a + t * D + d, *wr = lg.w + t * D + d;
      da = fma((double)v.x, ar[0], da), dw = fma((double)v.x, wr[0], dw);
      da = fma((double)v.y, ar[1], da), dw = fma((double)v.y, wr[1], dw);
      da = fma((double)v.z, ar[2], da), dw = fma((double)v.z, wr[2], dw);
      da = fma((double)v.w, ar[3], da), dw = fma((double)v.w, wr[3], dw);
    }
    uint2 h, l;
    wg_split2(v.x, v.y, &h.x, &l.x, lo_scale);
    wg_split2(v.z, v.w, &h.y, &l.y, lo_scale);
    *(uint2 *)(hi + r * D + d) = h;
    *(uint2 *)(lo + r * D + d) = l;
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    mx = fmaxf(mx, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
  }
  if (mx >= WG_HALF_INF) atomicOr(flag, 1);
  if (norm) {
    ss = warp_sum_f(ss);
    if (lane == 0) norm[r] = sqrtf(ss);
  }
  if (lg.a) {
    da = warp_sum_dd(da);
    dw = warp_sum_dd(dw);
    if (lane == 0) {
      const double s1 = lg.s12[2 * t], s2 = lg.s12[2 * t + 1];
      double *f = lg.rows + ((r / lg.nt) * lg.n_rows + t * lg.G) * lg.n_fields + 2;
      f[0] = da - s1, f[1] = s1, f[2] = da, f[3] = s2, f[4] = dw;
    }
  }
}

/* The reference slots' s^_r for k_attn_wg's rank slots, computed before it: with one block per SM
 * the kernel's own prologue (gqa_rank_init: dependent fmaf chains over keys gathered from global
 * memory) left the tensor cores idle (13 % of its stall samples). Here the chains run at full
 * occupancy: one warp per (plan blockIdx.y, token), lane = one of the token's 4 K (head, slot)
 * chains (looping when K > 8), WG_SS_WARPS consecutive tokens per block, whose top-k lists share
 * most keys (L1 hits). out [n][nt][4][K] gets exactly gqa_rank_init's value -- gqa_score_g, the
 * key loop's chain operand for operand, INFINITY for an empty slot -- so every rank decision
 * still compares values of one chain. */
#define WG_SS_WARPS 8
template <int D>
__global__ void __launch_bounds__(WG_SS_WARPS * 32) k_wg_slot_scores(kc_attn_args a, float *out) {
  enum { GG = 4, D4 = D / 4 };
  const int K = a.topk, lane = threadIdx.x & 31;
  const int64_t nt = a.n_rows / GG, t = (int64_t)blockIdx.x * WG_SS_WARPS + (threadIdx.x >> 5);
  if (t >= nt) return;
  const int plan = blockIdx.y;
  const int64_t kb = a.seq_off[seq_of(a.seq_off, a.n_seq, t)];
  const float4 *q4 = (const float4 *)(a.q + (t * a.Hq + a.head * GG) * D); /* k_attn_wg's qg */
  const float *Kh = a.keff + plan * a.plan_stride;
  const int32_t *ref = a.topk_ref + (t * a.Hq + a.head * GG) * K; /* [GG][K]: chain p = gi K + slot */
  float *o = out + ((int64_t)plan * nt + t) * GG * K;
  for (int p = lane; p < GG * K; p += 32) {
    const int gi = p / K, r = ref[p];
    o[p] = r < 0 ? INFINITY : gqa_score_g(q4 + gi * D4, (const float4 *)(Kh + (kb + r) * D), D4);
  }
}

/* The queries of warp w's token (rows 4 w + gi) into Q hi / lo (K-major, 128-byte swizzle); qn:
 * their norms; m: the largest |q|. */
template <int D>
__device__ __forceinline__ void wg_split_queries(const float *qg, int live, unsigned char *sm, float (&qn)[4],
                                                 float *m) {
  typedef wg_cfg<D> C;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int gi = 0; gi < 4; gi++) {
    const int r = 4 * warp + gi;
    float ss = 0.0f;
    for (int d = 2 * lane; d < D; d += 64) {
      float x = live ? qg[gi * D + d] : 0.0f, y = live ? qg[gi * D + d + 1] : 0.0f;
      ss = fmaf(x, x, ss);
      ss = fmaf(y, y, ss);
      *m = fmaxf(*m, fmaxf(fabsf(x), fabsf(y)));
      uint32_t hi, lo;
      wg_split2(x, y, &hi, &lo);
      *(uint32_t *)(sm + C::OFF_QH + kw_swz(64, r, d)) = hi;
      *(uint32_t *)(sm + C::OFF_QL + kw_swz(64, r, d)) = lo;
    }
    qn[gi] = sqrtf(warp_sum_f(ss));
  }
}

/* This thread's share of staging a tile: the six split arrays (pitch D) x TILE rows x NK 16-byte
 * units are PER = TILE NK units per array, one per thread when PER is the block (D = 128), or half
 * the arrays each when it is half (D = 64). Its unit's row, shared-memory offset (the swizzle
 * layout) and element offset are fixed for the kernel: a tile costs a predicate, an add and a
 * cp.async per array. */
template <int D>
struct wg_stager {
  enum { PER = TILE * (D / 8), T = GQA_WARPS * 32, NPT = WG_NARR * PER / T };
  static_assert(PER == T || 2 * PER == T, "one or two threads' worth of units per array");
  int r, a0;
  uint32_t soff;
  int64_t goff;
  __device__ __forceinline__ wg_stager() {
    const int u = threadIdx.x % PER, c = u % (D / 8);
    r = u / (D / 8);
    a0 = threadIdx.x / PER;
    soff = kw_swz(TILE, r, 8 * c) + a0 * wg_cfg<D>::T_BYTES;
    goff = (int64_t)r * D + 8 * c;
  }
  /* keys j0 .. j0 + n - 1 into stage (rows past n keep what they held) */
  __device__ __forceinline__ void run(unsigned char *stage, const __half *const (&src)[WG_NARR], int64_t j0,
                                      int n) const {
    if (r >= n) return;
    const int64_t off = j0 * D + goff;
#pragma unroll
    for (int k = 0; k < NPT; k++) {
      const __half *base = PER == T ? src[k] : (a0 ? src[2 * k + 1] : src[2 * k]);
      cp_async16(stage + soff + (PER == T ? k : 2 * k) * wg_cfg<D>::T_BYTES, base + off);
    }
  }
};

/* D[64 x N] (+)= A . B (one k-step) for the two widths the kernel uses. */
template <int N, int TB>
__device__ __forceinline__ void wg_mma(float *d, uint64_t da, uint64_t db, int acc) {
  if constexpr (N == 32) kw_mma_n32<TB>(d, da, db, acc);
  else kw_mma_n16<TB>(d, da, db, acc);
}

/* 3xfp16 over NKS k-steps, issued (the caller fences before and commits, waits and folds after):
 * d (+)= Ah Bh, cor = Ah Bl + Al Bh (then d += cor 2^-11, wg_fold). Operands by their
 * descriptors' low words at k-step 0 (kw_lo; the high word is KW_HI), sa(ks) / sb(ks) the low
 * word's advance at k-step ks. */
template <int N, int TB, int NKS, class FA, class FB>
__device__ __forceinline__ void wg_issue3x(float *d, float *cor, int acc, uint32_t ah, uint32_t al, FA sa, uint32_t bh,
                                           uint32_t bl, FB sb) {
#pragma unroll
  for (int ks = 0; ks < NKS; ks++) {
    const uint32_t oa = sa(ks), ob = sb(ks);
    wg_mma<N, TB>(d, kw_mk(ah + oa, KW_HI), kw_mk(bh + ob, KW_HI), acc || ks > 0);
    wg_mma<N, TB>(cor, kw_mk(ah + oa, KW_HI), kw_mk(bl + ob, KW_HI), ks > 0);
    wg_mma<N, TB>(cor, kw_mk(al + oa, KW_HI), kw_mk(bh + ob, KW_HI), 1);
  }
}
/* 3xfp16 into one accumulator, for the weighted sums: d (+)= Ah Bh + Ah Bl + Al Bh with the lo
 * parts unscaled (x = hi + lo; split with ls = 1). Their products then need no correction
 * accumulator, no fold and no registers beyond d: a lo below fp16's normal range (|x| < 2^-3 or
 * so) is a subnormal, exact to 2^-25 absolutely -- for weights in [0, 1] and the values' scale,
 * within fp32's own rounding of the larger elements (docs/cuda.md, "Precision choices"). */
template <int N, int TB, int NKS, class FA, class FB>
__device__ __forceinline__ void wg_issue3x1(float *d, int acc, uint32_t ah, uint32_t al, FA sa, uint32_t bh,
                                            uint32_t bl, FB sb) {
#pragma unroll
  for (int ks = 0; ks < NKS; ks++) {
    const uint32_t oa = sa(ks), ob = sb(ks);
    wg_mma<N, TB>(d, kw_mk(ah + oa, KW_HI), kw_mk(bh + ob, KW_HI), acc || ks > 0);
    wg_mma<N, TB>(d, kw_mk(ah + oa, KW_HI), kw_mk(bl + ob, KW_HI), 1);
    wg_mma<N, TB>(d, kw_mk(al + oa, KW_HI), kw_mk(bh + ob, KW_HI), 1);
  }
}
/* The weights of a lane's key for its token's 4 heads as P hi | lo (lo unscaled, wg_issue3x1) at
 * p (the P buffer) + p_base, rows 4 warp + gi: kw_swz(64, row, lane) and (.., 32 + lane), unrolled
 * (the row's low 3 bits are 4 (warp & 1) + gi, p_x = (lane >> 3) ^ 4 (warp & 1)). */
__device__ __forceinline__ void wg_put_weights(unsigned char *p, uint32_t p_base, uint32_t p_x, const float (&w)[4]) {
#pragma unroll
  for (int gi = 0; gi < 4; gi++) {
    __half h = __float2half_rn(w[gi]);
    __half l = __float2half_rn(w[gi] - __half2float(h));
    *(__half *)(p + p_base + gi * 128 + ((p_x ^ gi) << 4)) = h;
    *(__half *)(p + p_base + gi * 128 + ((p_x ^ 4 ^ gi) << 4)) = l;
  }
}
template <int N>
__device__ __forceinline__ void wg_fold(float *d, float *cor) {
  kw_fence_regs<N / 2>(d);
  kw_fence_regs<N / 2>(cor);
#pragma unroll
  for (int i = 0; i < N / 2; i++) d[i] += cor[i] * (1.0f / WG_LO_SCALE);
}

/* Warpgroup wg's part of O (the accumulator layout: rows r0 and r0 + 8, dimensions NPV wg + 8 j +
 * 2 tig, + 1) into osm [64][D], for the gather back to one warp per token. */
template <int D, int NPV>
__device__ __forceinline__ void wg_put_outputs(float *osm, const float *o, int r0, int wg, int tig) {
#pragma unroll
  for (int j = 0; j < NPV / 8; j++) {
    float *orow = osm + r0 * D + NPV * wg + 8 * j + 2 * tig;
    *(float2 *)orow = make_float2(o[4 * j], o[4 * j + 1]);
    *(float2 *)(orow + 8 * D) = make_float2(o[4 * j + 2], o[4 * j + 3]);
  }
}

template <int D, int TWO>
__global__ void __launch_bounds__(GQA_WARPS * 32, 1) k_attn_wg(kc_attn_args a, wg_ops ops) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  typedef wg_cfg<D> C;
  enum { GG = 4, W = GQA_WARPS, NPV = C::NPV };
  static_assert(W == 16, "64 query rows, 4 warpgroups");
  extern __shared__ __align__(1024) unsigned char sm[];
  unsigned char *stages = sm + C::OFF_STAGE;
  float *sc = (float *)(sm + C::OFF_SC), *alpha_s = (float *)(sm + C::OFF_ALPHA);
  int64_t *blk_kb = (int64_t *)(sm + C::OFF_RANGE), *blk_ke = blk_kb + W;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  /* the warpgroup through a shuffle: the compiler then treats it, and the descriptors made from
   * it, as warp-uniform (uniform registers, as CUTLASS's canonical_warp_group_idx) */
  const int wg = __shfl_sync(0xffffffffu, (int)threadIdx.x >> 7, 0), wq = warp & 3;
  const int64_t nt_all = a.n_rows / GG;
  int64_t t = (int64_t)(gridDim.x - 1 - blockIdx.x) * W + warp;
  int plan = blockIdx.y, live = t < nt_all;
  int64_t kb = 0, ke = 0;
  if (live) {
    kb = a.seq_off[seq_of(a.seq_off, a.n_seq, t)];
    ke = t + 1;
  }
  const float *qg = a.q + (t * a.Hq + a.head * GG) * D; /* the 4 heads' queries, adjacent rows */
  float mx = 0.0f;                                      /* the largest |q| this thread split */
  tc_row_state S;
  tc_row_init(S);
  wg_split_queries<D>(qg, live, sm, S.qn, &mx);
  /* never-written value rows must be finite: P (zero there) times them enters the products */
  for (int i = threadIdx.x; i < 2 * C::T_BYTES / 16; i += blockDim.x)
    for (int s = 0; s < WG_NST; s++)
      ((uint4 *)(stages + s * C::STAGE + WG_VARR * C::T_BYTES))[i] = make_uint4(0, 0, 0, 0);
  int64_t KB, KE;
  gqa_union_range<W>(live, kb, ke, blk_kb, blk_ke, &KB, &KE); /* (its barrier) */
  const int64_t po = (int64_t)plan * nt_all * D;
  const __half *const src[WG_NARR] = {ops.keff_h + po, ops.keff_l + po, ops.vhat_h + po, ops.vhat_l + po};
  const float *kn_g = ops.keff_norm + (int64_t)plan * nt_all; /* (padded: lanes past the keys read it) */
  const float *Kh = a.keff + plan * a.plan_stride; /* fp32, for the recall's exact rescoring */
  const int ntile = (int)tile_count(KB, KE);
  const wg_stager<D> stager;
  auto stage_at = [&](int i) { return stages + (i & (WG_NST - 1)) * C::STAGE; };
  for (int i = 0; i < 2 && i < ntile; i++) { /* tiles 0, 1: one commit group each */
    stager.run(stage_at(i), src, KB + i * TILE, tile_len(KE, KB + i * TILE));
    cp_async_commit();
  }
  const int K = a.topk;
  const float4 *q4 = (const float4 *)qg;
  if (live) gqa_rank_init_from<GG, TWO>(a, t, ops.slot_s + ((int64_t)plan * nt_all + t) * GG * K, S.R);
  const float c = 1.0f / sqrtf((float)D);
  float o[NPV / 2]; /* O[64][D]: warpgroup wg's dimensions NPV wg .. in the accumulator layout */
#pragma unroll
  for (int i = 0; i < NPV / 2; i++) o[i] = 0.0f;
  /* zeroed here, once: left to the compiler, the zeros were also written on the no-tile path
   * after the loop, and ptxas, seeing them between C's issue and the final wait, serialised every
   * wgmma of the kernel (C7515) */
  kw_fence_regs<NPV / 2>(o);
  /* descriptors' low words (kw_lo; high word KW_HI), and their k-step advances: K-major operands
   * move 32 B inside a 128-byte row, then to the next 64-k chunk (kw_desc_step); the values
   * (MN-major) 16 rows of 128 B */
  const uint32_t sb = wg_smem_addr(sm);
  const uint32_t dqh = kw_lo(sb + C::OFF_QH, 16), dql = kw_lo(sb + C::OFF_QL, 16);
  auto q_step = [](int ks) { return (uint32_t)kw_desc_step(64, ks); };
  auto k_step = [](int ks) { return (uint32_t)kw_desc_step(TILE, ks); };
  auto v_step = [](int ks) { return (uint32_t)(ks * 16 * 128 >> 4); };
  /* phase A: warpgroup wg < WG_AS computes S^ for keys WG_NA wg .. (the true scores' sums come
   * from kcuda_logit) */
  const int half = wg % WG_AS;
  /* stage 0's operands; stage s is s STAGE bytes on */
  const uint32_t dkh0 = kw_lo(sb + C::OFF_STAGE + half * WG_NA * 128, 16);
  const uint32_t dvh0 = kw_lo(sb + C::OFF_STAGE + WG_VARR * C::T_BYTES + (NPV * wg >> 6) * TILE * 128 +
                                  (NPV * wg & 63) * 2,
                              TILE * 128);
  const uint32_t dph = kw_lo(sb + C::OFF_P, 16);
  const uint32_t t_off = C::T_BYTES >> 4, s_off = C::STAGE >> 4, pb_off = C::P_BYTES >> 4;
  const uint32_t p_lo = (uint32_t)kw_desc_step(64, 2); /* P's lo: k-steps 2, 3 of its rows */
  const uint32_t p_base = C::OFF_P + 4 * warp * 128 + (lane & 7) * 2, p_x = (lane >> 3) ^ (4 * (warp & 1));
  const int r0 = 16 * wq + gid; /* this thread's accumulator rows: r0, r0 + 8 */
  /* phase A of tile i (its stage): this warpgroup's 64 x WG_NA block of S^, issued */
  auto issue_a = [&](float *s16, float *cor, int i) {
    const uint32_t bh = dkh0 + (uint32_t)(i & (WG_NST - 1)) * s_off;
    wg_issue3x<WG_NA, 0, D / 16>(s16, cor, 0, dqh, dql, q_step, bh, bh + t_off, k_step);
  };
  auto put_scores = [&](const float *s16, int i) { /* into sc[i & 1] */
    float *out = sc + (i & 1) * 64 * TC_LDS + r0 * TC_LDS + WG_NA * half + 2 * tig;
#pragma unroll
    for (int j = 0; j < WG_NA / 8; j++) {
      *(float2 *)(out + 8 * j) = make_float2(s16[4 * j], s16[4 * j + 1]);
      *(float2 *)(out + 8 * TC_LDS + 8 * j) = make_float2(s16[4 * j + 2], s16[4 * j + 3]);
    }
  };
  /* The pipeline: during phase B of tile it (every warp; its scores already in sc[it & 1]) the
   * tensor cores run phase A of tile it + 1 (warpgroup 0) and phase C of tile it - 1 (every
   * warpgroup, issued at the end of tile it - 1). After the first barrier each warpgroup waits for
   * both, rescales O and issues C(it) from P[it & 1] without waiting; the A(it + 1) scores go to
   * sc[(it + 1) & 1]. Tile it + 2 is staged during tile it into the stage tile it - 2 used
   * (its C was waited for during tile it - 1). Two barriers per tile. */
  float knl = 0.0f; /* this lane's key's |keff| in the tile (the recall margins), loaded a tile ahead */
  if (ntile > 0) {
    if (ntile > 1) cp_async_wait_group<1>();
    else cp_async_wait_all();
    kw_fence_proxy(); /* the tile's bytes, written through the generic proxy, before wgmma reads them */
    __syncthreads();
    if (wg < WG_AS) {
      float s16[WG_NA / 2], cor[WG_NA / 2];
      kw_fence();
      issue_a(s16, cor, 0);
      kw_commit();
      kw_wait<0>();
      wg_fold<WG_NA>(s16, cor);
      put_scores(s16, 0);
    }
    knl = kn_g[KB + lane];
    cp_async_wait_all(); /* tile 1 */
    kw_fence_proxy();
    __syncthreads(); /* tile 0's scores are complete, tile 1 has landed */
  }
  for (int it = 0; it < ntile; it++) {
    const int64_t j0 = KB + (int64_t)it * TILE;
    const int nt = tile_len(KE, j0), more = it + 1 < ntile, buf = it & 1;
    float s16[WG_NA / 2], cor[WG_NA / 2]; /* A(it + 1), in flight through phase B (warpgroups < WG_AS) */
    if (more && wg < WG_AS) {
      kw_fence();
      issue_a(s16, cor, it + 1);
      kw_commit();
    }
    if (it + 2 < ntile) { /* into the stage of tile it - 2 (its C was waited for in tile it - 1) */
      stager.run(stage_at(it + 2), src, j0 + 2 * TILE, tile_len(KE, j0 + 2 * TILE));
      cp_async_commit();
    }
    const float kn_next = more ? kn_g[j0 + TILE + lane] : 0.0f;
    float p[GG], alpha[GG];
    tc_phase_b<TWO, 0>(S, sc + buf * 64 * TC_LDS, knl, warp, live, j0, nt, kb, ke, K, q4, Kh, D, c, p, alpha);
    wg_put_weights(sm + buf * C::P_BYTES, p_base, p_x, p); /* P[buf]: C(it - 2) read it, waited for */
    int moved = 0;
#pragma unroll
    for (int gi = 0; gi < GG; gi++) {
      if (lane == 0) alpha_s[buf * 64 + 4 * warp + gi] = alpha[gi];
      moved |= alpha[gi] != 1.0f;
    }
    /* the weights and rescale factors are in, sc[buf] is read; rescale only when a max moved */
    const int rescale = __syncthreads_or(moved);
    /* C(it - 1) and A(it + 1) done (both ran during phase B; waiting for only the older one, with
     * wait_group 1, made ptxas serialise every wgmma of the kernel, C7514) */
    kw_wait<0>();
    kw_fence_regs<NPV / 2>(o);
    if (more && wg < WG_AS) { /* A(it + 1)'s scores to sc[(it + 1) & 1], before C(it) is issued (ptxas
                                 serialises wgmma when an accumulator is touched inside the stage, C7515) */
      wg_fold<WG_NA>(s16, cor);
      put_scores(s16, it + 1);
    }
    if (rescale) {
      const float a0 = alpha_s[buf * 64 + r0], a1 = alpha_s[buf * 64 + r0 + 8];
#pragma unroll
      for (int i = 0; i < NPV / 2; i += 4) o[i] *= a0, o[i + 1] *= a0, o[i + 2] *= a1, o[i + 3] *= a1;
    }
    { /* phase C(it): O += P V for this warpgroup's dimensions (V read MN-major), left running */
      const uint32_t vh = dvh0 + (uint32_t)(it & (WG_NST - 1)) * s_off, ph = dph + (uint32_t)buf * pb_off;
      kw_fence();
      wg_issue3x1<NPV, 1, TILE / 16>(o, 1, ph, ph + p_lo, q_step, vh, vh + t_off, v_step);
      kw_commit();
    }
    knl = kn_next;
    if (it + 2 < ntile) {
      cp_async_wait_all(); /* tile it + 2, for A(it + 2) at the next tile's start */
      kw_fence_proxy();
    }
    __syncthreads(); /* sc[(it + 1) & 1] is complete */
  }
  kw_wait<0>(); /* C(ntile - 1) (the outputs below overwrite the queries, which no C reads) */
  kw_fence_regs<NPV / 2>(o);
  float *osm = (float *)sm; /* the outputs [64][D] in the queries' space, back to one warp per token */
  wg_put_outputs<D, NPV>(osm, o, r0, wg, tig);
  if (__syncthreads_or(mx >= WG_HALF_INF)) { /* a query beyond fp16: k_attn_tc recomputes the launch */
    if (threadIdx.x == 0) atomicOr(a.range_flag, 1);
    return;
  }
  float og[GG][GQA_NDL];
  tc_gather_rows(osm, warp, D, og);
  if (!live) return;
  gqa_write_rows<GG, TWO, 1>(a, plan, t, ke - kb, K, og, S.l, S.R, S.sums);
#endif
}

/* Split the launch's operands (n plans) into ops, the effective keys with their logit-sum terms
 * (a->lg_*); the flag as k_wg_split's. */
static int wg_split_all(const kc_attn_args *a, int n, const wg_ops &ops, sq_err *e) {
  const int64_t nt = a->n_rows / 4, D = a->D;
  const int threads = 256, rows_per_block = threads / 32;
  auto blocks = [&](int64_t rows) { return (unsigned)((rows + rows_per_block - 1) / rows_per_block); };
  wg_lg lg = {a->lg_a, a->lg_w, a->lg_s, a->rows_out, nt, a->n_rows, 4, a->n_fields};
  k_wg_split<<<blocks(n * nt), threads>>>(a->keff, n * nt, D, (int)D, ops.keff_h, ops.keff_l, WG_LO_SCALE, ops.keff_norm,
                                          a->range_flag, lg);
  launchCheck();
  wg_lg none = {};
  k_wg_split<<<blocks(n * nt), threads>>>(a->vhat, n * nt, D, (int)D, ops.vhat_h, ops.vhat_l, 1.0f, NULL, a->range_flag,
                                          none);
  launchCheck();
  return SQ_OK;
}

/* The rank slots' s^_r of the launch (n plans) into ops.slot_s, before k_attn_wg. */
static int wg_slot_scores(const kc_attn_args *a, int n, const wg_ops &ops, sq_err *e) {
  const int64_t nt = a->n_rows / 4;
  if (a->topk <= 0) return SQ_OK;
  dim3 grid((unsigned)((nt + WG_SS_WARPS - 1) / WG_SS_WARPS), (unsigned)n);
  if (a->D == 128) k_wg_slot_scores<128><<<grid, WG_SS_WARPS * 32>>>(*a, ops.slot_s);
  else k_wg_slot_scores<64><<<grid, WG_SS_WARPS * 32>>>(*a, ops.slot_s);
  launchCheck();
  return SQ_OK;
}

template <int D, int TWO>
static int launch_wg(const kc_attn_args *a, int n_y, const wg_ops &ops, sq_err *e) {
  const int smem = wg_cfg<D>::SMEM;
  dim3 grid((unsigned)((a->n_rows / 4 + GQA_WARPS - 1) / GQA_WARPS), (unsigned)n_y);
  cudaCheck(cudaFuncSetAttribute(k_attn_wg<D, TWO>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  k_attn_wg<D, TWO><<<grid, GQA_WARPS * 32, smem>>>(*a, ops);
  launchCheck();
  return SQ_OK;
}

size_t kca_wg_scratch(int n_plans, int64_t n_tok, int D, int topk) {
  return wg_ops_bytes(n_plans, n_tok, D, topk);
}

int kca_launch_wg(const kc_attn_args *a, int n_y, sq_err *e) {
  const int64_t nt = a->n_rows / 4;
  const size_t need = wg_ops_bytes(n_y, nt, a->D, a->topk);
  if (!a->wg_scratch || a->wg_scratch_bytes < need)
    return sq_fail(e, SQ_EFAIL, "%s:%d: k_attn_wg: scratch of %zu bytes, %zu needed", __FILE__, __LINE__,
                   a->wg_scratch_bytes, need);
  const wg_ops ops = wg_ops_at(a->wg_scratch, n_y, nt, a->D, a->topk);
  tryCheck(wg_split_all(a, n_y, ops, e));
  tryCheck(wg_slot_scores(a, n_y, ops, e));
  const int two = a->topk > 32;
  if (a->D == 128) return two ? launch_wg<128, 1>(a, n_y, ops, e) : launch_wg<128, 0>(a, n_y, ops, e);
  return two ? launch_wg<64, 1>(a, n_y, ops, e) : launch_wg<64, 0>(a, n_y, ops, e);
}

/* k_ref_wg: REF_ATTN for G = 4 and D = 64, 128 (sm_90a; SQEXP_CUDA_ATTN=wg or unset, top-k <= 64):
 * k_ref_gqa's scores and top-k lists with k_attn_wg's blocks and phase C. Per tile of 32 keys,
 * lane = key, each warp scores its token's 4 heads with k_rows' fmaf chain from the staged fp32
 * key rows and offers them to topk_offer in index order, so the top-k lists are k_rows' (and the
 * CPU's) to the bit, as k_ref_gqa's; the online softmax is k_ref_gqa's (expf, a max that moves by
 * one vote). The weighted sum of the dump's values, k_ref_gqa's float4 FMA loop, runs on wgmma in
 * 3xfp16 as k_attn_wg's phase C (the values split once per layer by k_wg_split), so o_ref differs
 * from k_ref_gqa's by that arithmetic's round-off (~2^-22 relative per product). */
template <int D>
struct wr_cfg {
  enum : int {
    LDK = D + KPAD,
    NPV = D / 4,
    T_BYTES = TILE * D * 2,                                  /* one fp16 value tile */
    OFF_Q = 0,                                               /* fp32 [16 warps][4][D]; the outputs at the end */
    OFF_K = 64 * D * 4,                                      /* 2 fp32 key stages [TILE][LDK] */
    OFF_V = (OFF_K + 2 * TILE * LDK * 4 + 1023) / 1024 * 1024, /* 2 stages x (v hi, v lo) */
    OFF_P = OFF_V + 4 * T_BYTES,
    OFF_ALPHA = OFF_P + 64 * 128,
    OFF_RANGE = OFF_ALPHA + 64 * 4,
    SMEM = OFF_RANGE + 2 * GQA_WARPS * 8
  };
  static_assert(OFF_V % 1024 == 0 && T_BYTES % 1024 == 0 && OFF_P % 1024 == 0, "wgmma operands 1024-aligned");
};

template <int D>
__global__ void __launch_bounds__(GQA_WARPS * 32, 1) k_ref_wg(kc_attn_args a, const __half *vh_g, const __half *vl_g) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  typedef wr_cfg<D> C;
  enum { GG = 4, W = GQA_WARPS, NPV = C::NPV, LDK = C::LDK, D4 = D / 4 };
  extern __shared__ __align__(1024) unsigned char sm[];
  float *qs = (float *)(sm + C::OFF_Q), *kst = (float *)(sm + C::OFF_K), *alpha_s = (float *)(sm + C::OFF_ALPHA);
  int64_t *blk_kb = (int64_t *)(sm + C::OFF_RANGE), *blk_ke = blk_kb + W;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3, h = blockIdx.y;
  const int wg = __shfl_sync(0xffffffffu, (int)threadIdx.x >> 7, 0), wq = warp & 3, K = a.topk;
  const int64_t n_tok = a.n_rows / GG, t = (int64_t)(gridDim.x - 1 - blockIdx.x) * W + warp;
  const int live = t < n_tok;
  int64_t kb = 0, ke = 0;
  if (live) {
    kb = a.seq_off[seq_of(a.seq_off, a.n_seq, t)];
    ke = t + 1;
    gqa_load_queries<GG>(a, t, h, D, lane, qs + warp * GG * D);
  }
  for (int i = threadIdx.x; i < 4 * C::T_BYTES / 16; i += blockDim.x) /* never-written value rows: zeros */
    ((uint4 *)(sm + C::OFF_V))[i] = make_uint4(0, 0, 0, 0);
  int64_t KB, KE;
  gqa_union_range<W>(live, kb, ke, blk_kb, blk_ke, &KB, &KE); /* (its barrier) */
  const int64_t kstride = (int64_t)a.Hkv * D;
  const float *Kd = a.k + (int64_t)h * D;
  const __half *vh = vh_g + (int64_t)h * D, *vl = vl_g + (int64_t)h * D;
  auto stage = [&](int s, int64_t j0, int n) {
    load_tile_async(kst + s * TILE * LDK, LDK, Kd, kstride, j0, n, D);
    unsigned char *dv = sm + C::OFF_V + 2 * s * C::T_BYTES;
    tile_copies(n, D / 8, [&](int r, int c) {
      const int64_t off = (j0 + r) * kstride + 8 * c;
      cp_async16(dv + kw_swz(TILE, r, 8 * c), vh + off);
      cp_async16(dv + C::T_BYTES + kw_swz(TILE, r, 8 * c), vl + off);
    });
    cp_async_commit();
  };
  const int64_t ntile = tile_count(KB, KE);
  if (ntile > 0) stage(0, KB, tile_len(KE, KB));
  const float4 *q4 = (const float4 *)(qs + warp * GG * D);
  const float c = 1.0f / sqrtf((float)D);
  float m[GG], l[GG], o[NPV / 2];
  topk_list TL[GG];
#pragma unroll
  for (int gi = 0; gi < GG; gi++) m[gi] = -INFINITY, l[gi] = 0.0f, topk_init(&TL[gi]);
#pragma unroll
  for (int i = 0; i < NPV / 2; i++) o[i] = 0.0f;
  const uint32_t sb = wg_smem_addr(sm);
  const uint32_t dph = kw_lo(sb + C::OFF_P, 16), p_lo = (uint32_t)kw_desc_step(64, 2);
  const uint32_t dvh0 = kw_lo(sb + C::OFF_V + (NPV * wg >> 6) * TILE * 128 + (NPV * wg & 63) * 2, TILE * 128);
  const uint32_t t_off = C::T_BYTES >> 4;
  auto p_step = [](int ks) { return (uint32_t)kw_desc_step(64, ks); };
  auto v_step = [](int ks) { return (uint32_t)(ks * 16 * 128 >> 4); };
  const uint32_t p_base = C::OFF_P + 4 * warp * 128 + (lane & 7) * 2, p_x = (lane >> 3) ^ (4 * (warp & 1));
  const int r0 = 16 * wq + gid;
  for (int64_t it = 0; it < ntile; it++) {
    const int64_t j0 = KB + it * TILE, j = j0 + lane;
    const int nt = tile_len(KE, j0);
    cp_async_wait_all();
    kw_fence_proxy(); /* the value tiles, written through the generic proxy, before wgmma reads them */
    __syncthreads();  /* tile it is in; every warp is done with tile it-1's stage and weights */
    if (it + 1 < ntile) stage((int)((it + 1) & 1), j0 + TILE, tile_len(KE, j0 + TILE));
    float p[GG], alpha[GG];
#pragma unroll
    for (int gi = 0; gi < GG; gi++) p[gi] = 0.0f, alpha[gi] = 1.0f;
    if (live && j0 + nt > kb && j0 < ke) { /* warp-uniform: the tile holds causal keys of this token */
      const int valid = lane < nt && j >= kb && j < ke;
      float sc[GG];
#pragma unroll
      for (int gi = 0; gi < GG; gi++) sc[gi] = valid ? 0.0f : -INFINITY;
      if (valid) { /* dot_sm's chain: s = fmaf(q, k, s) in dimension order (k_ref_gqa's) */
        const float4 *kr = (const float4 *)(kst + (it & 1) * TILE * LDK + lane * LDK);
#pragma unroll 4
        for (int jd = 0; jd < D4; jd++) {
          float4 y = kr[jd];
#pragma unroll
          for (int gi = 0; gi < GG; gi++) sc[gi] = fma4(q4[gi * D4 + jd], y, sc[gi]);
        }
      }
#pragma unroll
      for (int gi = 0; gi < GG; gi++) { /* k_rows' list, key for key */
        float tl = TL[gi].cnt == K ? topk_last(&TL[gi], K) : -INFINITY;
        topk_offer(&TL[gi], K, valid && (TL[gi].cnt < K || sc[gi] > tl), sc[gi], (int)(j - kb));
      }
#pragma unroll
      for (int gi = 0; gi < GG; gi++) { /* gqa_softmax_step's, without the register outputs */
        if (__any_sync(0xffffffffu, sc[gi] > m[gi])) {
          float mnew = fmaxf(m[gi], warp_max_f(sc[gi]));
          alpha[gi] = expf((m[gi] - mnew) * c);
          l[gi] *= alpha[gi];
          m[gi] = mnew;
        }
        p[gi] = valid ? expf((sc[gi] - m[gi]) * c) : 0.0f;
        l[gi] += p[gi];
      }
    }
    wg_put_weights(sm, p_base, p_x, p); /* as k_attn_wg */
#pragma unroll
    for (int gi = 0; gi < GG; gi++)
      if (lane == 0) alpha_s[4 * warp + gi] = alpha[gi];
    kw_fence_proxy();
    __syncthreads(); /* the weights and rescale factors of every row are in */
    const float a0 = alpha_s[r0], a1 = alpha_s[r0 + 8];
#pragma unroll
    for (int i = 0; i < NPV / 2; i += 4) o[i] *= a0, o[i + 1] *= a0, o[i + 2] *= a1, o[i + 3] *= a1;
    const uint32_t vhd = dvh0 + (uint32_t)((it & 1) * 2 * C::T_BYTES >> 4);
    kw_fence();
    wg_issue3x1<NPV, 1, TILE / 16>(o, 1, dph, dph + p_lo, p_step, vhd, vhd + t_off, v_step);
    kw_commit();
    kw_wait<0>();
    kw_fence_regs<NPV / 2>(o);
  }
  __syncthreads(); /* every warpgroup is done with the queries' space and the last tile */
  float *osm = (float *)sm;
  wg_put_outputs<D, NPV>(osm, o, r0, wg, tig);
  __syncthreads();
  float og[GG][GQA_NDL];
  tc_gather_rows(osm, warp, D, og);
  if (!live) return;
#pragma unroll
  for (int gi = 0; gi < GG; gi++) { /* k_ref_gqa's outputs */
    int64_t orow = t * a.Hq + h * GG + gi;
    float inv = 1.0f / warp_sum_f(l[gi]);
    if (4 * lane < D)
      *(float4 *)(a.o_out + orow * D + 4 * lane) =
          make_float4(og[gi][0] * inv, og[gi][1] * inv, og[gi][2] * inv, og[gi][3] * inv);
    int32_t *tkp = a.topk_out + orow * K;
    if (lane < K) tkp[lane] = TL[gi].i0;
    if (lane + 32 < K) tkp[lane + 32] = TL[gi].i1;
  }
#endif
}

size_t kca_ref_wg_scratch(int64_t n_tok, int Hkv, int D) { return (size_t)2 * n_tok * Hkv * D * sizeof(__half); }

int kca_launch_ref_wg(const kc_attn_args *a, int n_y, int *done, sq_err *e) {
  const int64_t nt = a->n_rows / 4, rows = nt * a->Hkv;
  *done = 0;
  if (!a->wg_scratch || a->wg_scratch_bytes < kca_ref_wg_scratch(nt, a->Hkv, a->D))
    return sq_fail(e, SQ_EFAIL, "%s:%d: k_ref_wg: scratch of %zu bytes, %zu needed", __FILE__, __LINE__,
                   a->wg_scratch_bytes, kca_ref_wg_scratch(nt, a->Hkv, a->D));
  __half *vh = (__half *)a->wg_scratch, *vl = vh + rows * a->D;
  int over = 0;
  cudaCheck(cudaMemsetAsync(a->range_flag, 0, sizeof(int)));
  k_wg_split<<<(unsigned)((rows + 7) / 8), 256>>>(a->v, rows, a->D, a->D, vh, vl, 1.0f, NULL, a->range_flag, wg_lg{});
  launchCheck();
  cudaCheck(cudaMemcpy(&over, a->range_flag, sizeof over, cudaMemcpyDeviceToHost));
  if (over) return SQ_OK; /* a value beyond fp16's range: the caller runs k_ref_gqa */
  dim3 grid((unsigned)((nt + GQA_WARPS - 1) / GQA_WARPS), (unsigned)n_y);
  if (a->D == 128) {
    cudaCheck(cudaFuncSetAttribute(k_ref_wg<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, wr_cfg<128>::SMEM));
    k_ref_wg<128><<<grid, GQA_WARPS * 32, wr_cfg<128>::SMEM>>>(*a, vh, vl);
  } else {
    cudaCheck(cudaFuncSetAttribute(k_ref_wg<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, wr_cfg<64>::SMEM));
    k_ref_wg<64><<<grid, GQA_WARPS * 32, wr_cfg<64>::SMEM>>>(*a, vh, vl);
  }
  launchCheck();
  *done = 1;
  return SQ_OK;
}
