/* kcuda_attn_wg.cuh: what k_attn_wg (kcuda_attn_wg.cu) and k_ref_wg (kcuda_ref_wg.cu) share --
 * the block's shared-memory layout, the split operands, the staging of key / value tiles, the
 * wgmma issue helpers. docs/cuda.md, "The attention rows". */
#ifndef SQEXP_KCUDA_ATTN_WG_CUH
#define SQEXP_KCUDA_ATTN_WG_CUH
#include <cuda_fp16.h>
#include "kcuda_attn_tcb.cuh"
#include "kcuda_wgmma.cuh"

/* The operands are split once per launch (k_wg_split), not per block: every x becomes fp16 hi +
 * lo x 2^-11 (the fast encoder's split: hi = x rounded to fp16, lo = (x - hi) 2^11 rounded, so
 * x = hi + lo 2^-11 to ~2^-22 relative) in row-major arrays: the plans' effective keys and
 * decoded values (their lo unscaled: one accumulator, wg_issue3x1), plus the effective keys' norms (the recall margins) and, from the same pass
 * over the effective keys, the logit sums' per-key terms (kcuda_logit.cuh: the kernel computes
 * s^ only, never the true scores). A key is used by every later block of its sequence (~32 at
 * Mistral's 1,024-token sequences), so splitting it in the kernel cost each block-tile ~230
 * instructions per thread (measured: 1,350 per warp and tile in all, at 1.61 ms per (plan, head)).
 *
 * Per tile of 32 keys, with the block's 64 query rows (16 tokens x 4 heads; row 4 w + gi = token
 * w, head gi; their queries split once per block) and 4 warpgroups:
 *   - staging (cp.async, four stages): the four hi / lo tiles straight into the 128-byte swizzle
 *     layout wgmma reads (16-byte unit u of key row r at unit u ^ (r & 7)): K-major for the keys
 *     (Q K^T) and, the same layout read MN-major (wgmma's transposed B), for the values;
 *   - phase A: warpgroup g < WG_AS computes S^ for the tile's keys: Q hi . K hi into one
 *     accumulator, Q hi . K lo + Q lo . K hi into another, added x 2^-11 (the lo . lo term, ~2^-22,
 *     is dropped): as accurate as k_attn_tc's 3xTF32 (fp16 and tf32 both keep 11 significant
 *     bits, and hi here is rounded, not truncated), so TC_EPS stays its margin. Phase A of tile
 *     it + 1 is issued before phase B of tile it and runs during it (scores double-buffered; the
 *     reference slots' s^_r come from k_wg_slot_scores, launched before the kernel);
 *   - phase B (all warps): tc_phase_b (k_attn_tc's, without the logit sums), the weights split
 *     into P hi | lo (A operand: k 0..31 hi, 32..63 lo of one 128-byte row; P double-buffered);
 *   - phase C: warpgroup g: O[:, D/4 g ..] = alpha O + P V, 3xfp16 into one accumulator (O rescaled
 *     only when some row's max moved: the barrier before it is a __syncthreads_or), issued after
 *     tile it's first barrier and waited for at tile it + 1's, so it runs during phase B of it + 1.
 *     Two barriers per tile.
 * (k_ref_wg, the reference rows, has the block's 64 query rows and phase C, on the dump's values
 * with lo scaled, two accumulators and a fold (wg_issue3x, wg_fold); its scores are fp32 fmaf
 * chains, no phase A.)
 * Measured on the H200 (the bench's 48 (plan, head), attention GPU time): the in-kernel split 77.3
 * ms, split once per launch 65.9, with the staging, descriptor and phase B trims 56.5, phase A on
 * two warpgroups (S and S^) 51.4, s^ only 44.1-44.4 (k_attn_tc: 93.0); then, for the whole grid on
 * an H100, the slot scores moved out, phase C overlapped and one accumulator: 6.92 -> 6.56 s
 * (kcuda_attn_wg.cu). docs/cuda.md has what was
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
#define WG_NP 2  /* weight buffers: P of tile it is written while C(it - 1) reads the other */

/* The shared-memory layout of a k_attn_wg block: WG_NST stages of staged tiles, WG_NP weight buffers. */
template <int D>
struct wg_cfg {
  static_assert(D == 64 || D == 128, "whole 128-byte swizzle rows of dimensions");
  enum : int {
    NK = D / 8,                      /* 16-byte units (8 fp16) per row */
    NPV = D / 4,                     /* output dimensions per warpgroup */
    Q_BYTES = 64 * D * 2,            /* the queries' hi (then lo) */
    T_BYTES = TILE * D * 2,          /* one staged tile */
    STAGE = WG_NARR * T_BYTES,
    P_BYTES = 64 * 128,              /* the weights: 64 rows of hi | lo */
    OFF_QH = 0,
    OFF_QL = Q_BYTES,
    OFF_STAGE = 2 * Q_BYTES,         /* WG_NST stages of WG_NARR tiles */
    OFF_P = OFF_STAGE + WG_NST * STAGE,
    OFF_SC = OFF_P + WG_NP * P_BYTES,        /* [2][64][TC_LDS] scores of tiles it, it + 1; the rank slots'
                                        scratch before tile 0 */
    OFF_ALPHA = OFF_SC + 2 * 64 * TC_LDS * 4, /* WG_NP x 64 rescale factors */
    OFF_RANGE = OFF_ALPHA + WG_NP * 64 * 4,  /* int64 [2][GQA_WARPS]: the warps' key ranges */
    SMEM = OFF_RANGE + 2 * GQA_WARPS * 8
  };
  static_assert(Q_BYTES % 1024 == 0 && T_BYTES % 1024 == 0 && OFF_P % 1024 == 0,
                "wgmma operands start 1024-byte aligned (the swizzle is on address bits)");
  static_assert(2 * Q_BYTES >= 64 * D * 4, "the outputs reuse the queries' space");
  static_assert(GQA_WARPS * 4 * 32 <= 2 * 64 * TC_LDS, "the rank slots' scratch fits the score tiles");
};

/* The split operands of one launch (n plans, nt tokens), fp16 [rows][D] each. */
struct wg_ops {
  __half *keff_h, *keff_l, *vhat_h, *vhat_l; /* [n * nt][D] */
  float *keff_norm;                          /* [n * nt], then 2 TILE floats that the lanes past the
                                                keys read a tile ahead (and do not use) */
};
static inline size_t wg_ops_bytes(int n, int64_t nt, int D) {
  return (size_t)(4 * n) * (size_t)nt * D * sizeof(__half) + ((size_t)n * nt + 2 * TILE) * sizeof(float);
}
static inline wg_ops wg_ops_at(void *buf, int n, int64_t nt, int D) {
  wg_ops o;
  __half *h = (__half *)buf;
  size_t one = (size_t)n * nt * D;
  o.keff_h = h, o.keff_l = h + one, o.vhat_h = h + 2 * one, o.vhat_l = h + 3 * one;
  o.keff_norm = (float *)(h + 4 * one);
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

/* fp16 hi and lo x ls of two floats as half2 bits (ls: WG_LO_SCALE, or 1 for k_attn_wg's weighted
 * sums, wg_issue3x1). */
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
template <int SCALED> /* lo x WG_LO_SCALE (1), or unscaled (0: k_attn_wg's values) */
__global__ void k_wg_split(const float *src, int64_t rows, int64_t stride, int D, __half *hi, __half *lo,
                           float *norm, int *flag, wg_lg lg) {
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
    wg_split2(v.x, v.y, &h.x, &l.x, SCALED ? WG_LO_SCALE : 1.0f);
    wg_split2(v.z, v.w, &h.y, &l.y, SCALED ? WG_LO_SCALE : 1.0f);
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
 * d (+)= Ah Bh, cor = Ah Bl + Al Bh (then d += cor 2^-11, wg_fold), or with cor == d all three
 * into d (wg_issue3x1). Operands by their descriptors' low words at k-step 0 (kw_lo; the high word
 * is KW_HI), sa(ks) / sb(ks) the low word's advance at k-step ks. */
template <int N, int TB, int NKS, class FA, class FB>
__device__ __forceinline__ void wg_issue3x(float *d, float *cor, int acc, uint32_t ah, uint32_t al, FA sa, uint32_t bh,
                                           uint32_t bl, FB sb) {
#pragma unroll
  for (int ks = 0; ks < NKS; ks++) {
    const uint32_t oa = sa(ks), ob = sb(ks);
    wg_mma<N, TB>(d, kw_mk(ah + oa, KW_HI), kw_mk(bh + ob, KW_HI), acc || ks > 0);
    wg_mma<N, TB>(cor, kw_mk(ah + oa, KW_HI), kw_mk(bl + ob, KW_HI), cor == d || ks > 0);
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
  wg_issue3x<N, TB, NKS>(d, d, acc, ah, al, sa, bh, bl, sb);
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

#endif
