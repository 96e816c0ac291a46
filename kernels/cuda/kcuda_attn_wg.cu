/* kcuda_attn_wg: k_attn_wg, the default EVAL_ATTN kernel for G = 4 and D = 64, 128 (sm_90a;
 * SQEXP_CUDA_ATTN=wg or unset): k_attn_tc's blocks and phase B with the two matrix products on
 * Hopper's warpgroup MMA (wgmma) in 3xfp16 (kcuda_attn_wg.cuh has the block's layout, the split
 * operands and the phases). On top of that layout --
 *   - the reference slots' exact s^_r come from k_wg_slot_scores, a separate kernel at full
 *     occupancy, instead of the block's prologue (13 % of the stall samples when it was one, with
 *     one block per SM and the tensor cores idle);
 *   - phase C of tile it (O += P V) runs during phase B of tile it + 1: issued after the first
 *     barrier, waited for at the next tile's (P double-buffered, four stages);
 *   - the weighted sums in one accumulator: P and V split with unscaled lo parts (wg_issue3x1),
 *     no correction accumulator, no fold;
 *   - with top-k <= 8 the rank slots transposed, one per lane (wg_tslots, below).
 * Measured against the kernel it replaced (three stages, the slots' scores in the prologue, two
 * accumulators; 698eefb), on one H100 in one call (bench/e2e-h100-25c90d3.txt): the Mistral grid's
 * attention phase 6.92 -> 6.56 s, its tables identical to the digit; gpu_agree 7/7.
 * docs/cuda.md, "The attention rows". */
#include <stdlib.h>
#include <string.h>
#include "kcuda_attn_wg.cuh"

/* The split operands of one launch (n plans, nt tokens, top-k K): wg_ops (the values' lo
 * unscaled), then the rank slots' scores ([n][nt][4][K], k_wg_slot_scores' s^_r, 4-byte aligned
 * after wg_ops' norms). */
struct wg_eval_ops : wg_ops {
  float *slot_s;
};
static size_t wg_eval_ops_bytes(int n, int64_t nt, int D, int K) {
  return wg_ops_bytes(n, nt, D) + (size_t)n * nt * 4 * K * sizeof(float);
}
static wg_eval_ops wg_eval_ops_at(void *buf, int n, int64_t nt, int D) {
  wg_eval_ops o;
  *(wg_ops *)&o = wg_ops_at(buf, n, nt, D);
  o.slot_s = (float *)((unsigned char *)buf + wg_ops_bytes(n, nt, D));
  return o;
}

/* The reference slots' s^_r for k_attn_wg's rank slots, computed before it: with one block per SM
 * a prologue in the kernel (gqa_rank_init: dependent fmaf chains over keys gathered from global
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

/* The rank slots transposed (top-k <= 8, k_attn_wg's TR): lane 8 gi + sl holds slot sl of head gi,
 * one slot per lane instead of one per lane and head. A candidate key of the tile then costs one
 * step for the four heads together (its score read from the tile's score row, each lane deciding
 * for its own slot) instead of a shuffled step per head, and the thresholds one segmented minimum
 * instead of one warp minimum per head. Every decision is tc_phase_b's (rank_offer_tc): the same
 * candidates, the same margin TC_EPS |q| |k_j| + 1e-30, the chain's value where the tensor-core
 * score is within it of a live slot's (the lane rescores it itself: another slot's decision with
 * the tensor-core value is the chain's, outside the margin), the same count and tie-break. */
struct wg_tslots {
  int r, c;        /* the reference key (sequence-local, -1: no slot) and its count (K: out) */
  float v;         /* its s^ (k_wg_slot_scores) */
  float thr[4];    /* warp-uniform, per head: min v over its slots still in (+inf when none) */
};

__device__ __forceinline__ void wg_tslots_thr(wg_tslots &T, int K) {
  float m = T.c < K ? T.v : INFINITY;
  m = fminf(m, __shfl_xor_sync(0xffffffffu, m, 4));
  m = fminf(m, __shfl_xor_sync(0xffffffffu, m, 2));
  m = fminf(m, __shfl_xor_sync(0xffffffffu, m, 1));
#pragma unroll
  for (int gi = 0; gi < 4; gi++) T.thr[gi] = __shfl_sync(0xffffffffu, m, 8 * gi);
}

/* gqa_rank_init_from's slots, transposed; ss: token t's [4][K] scores. */
__device__ __forceinline__ void wg_tslots_init(const kc_attn_args &a, int64_t t, const float *ss, int live,
                                                wg_tslots &T) {
  const int K = a.topk, lane = threadIdx.x & 31, gi = lane >> 3, sl = lane & 7, own = live && sl < K;
  T.r = own ? __ldg(a.topk_ref + (t * a.Hq + a.head * 4 + gi) * K + sl) : -1;
  T.v = own ? __ldg(ss + gi * K + sl) : INFINITY;
  T.c = T.r >= 0 ? 0 : K;
  wg_tslots_thr(T, K);
}

/* tc_phase_b without the logit sums, its rank offers on the transposed slots (sc: this tile's
 * scores, [64][TC_LDS]). */
__device__ __forceinline__ int wg_phase_b_tr(tc_row_state &S, wg_tslots &T, const float *sc, float knl, int warp,
                                              int live, int64_t j0, int nt, int64_t kb, int64_t ke, int K,
                                              const float4 *q4, const float *Kh, int D, float c, float (&p)[4],
                                              float (&alpha)[4]) {
  const int lane = threadIdx.x & 31, GG = 4;
  int valid;
  float sh[GG], unused[GG]; /* (no logit sums here: kcuda_logit has them) */
  if (!tc_tile_open<0>(sc, warp, live, j0, nt, kb, ke, p, alpha, valid, sh, unused)) return 0;
  int cand[GG], any_cand = 0;
#pragma unroll
  for (int gi = 0; gi < GG; gi++) {
    const float err = TC_EPS * S.qn[gi] * knl + 1e-30f;
    cand[gi] = valid && sh[gi] >= T.thr[gi] - err;
    any_cand |= cand[gi];
  }
  if (__any_sync(0xffffffffu, any_cand)) {
    uint32_t m[GG];
#pragma unroll
    for (int gi = 0; gi < GG; gi++) m[gi] = __ballot_sync(0xffffffffu, cand[gi]);
    const int hg = lane >> 3, base = (int)(j0 - kb);
    const uint32_t mine = hg == 0 ? m[0] : hg == 1 ? m[1] : hg == 2 ? m[2] : m[3];
    const float qh = hg == 0 ? S.qn[0] : hg == 1 ? S.qn[1] : hg == 2 ? S.qn[2] : S.qn[3];
    const float *myrow = sc + (4 * warp + hg) * TC_LDS;
    uint32_t U = m[0] | m[1] | m[2] | m[3];
    do {
      const int src = __ffs(U) - 1;
      U &= U - 1;
      const float knj = __shfl_sync(0xffffffffu, knl, src); /* (every lane: uniform) */
      if ((mine >> src & 1u) && T.c < K) {
        float cv = myrow[src];
        const float ce = TC_EPS * qh * knj + 1e-30f;
        const int cj = base + src;
        if (cj != T.r && fabsf(cv - T.v) <= ce) /* too close to call: the chain's own value */
          cv = gqa_score_g(q4 + hg * (D >> 2), (const float4 *)(Kh + (kb + cj) * D), D >> 2);
        T.c += cj != T.r && (cv > T.v || (cv == T.v && cj < T.r));
      }
    } while (U);
    wg_tslots_thr(T, K);
  }
  tc_softmax_step(S, sh, valid, c, p, alpha);
  return 1;
}

/* TR (top-k <= 8, TWO 0): the rank slots transposed (wg_tslots); else tc_phase_b's. */
template <int D, int TWO, int TR>
__global__ void __launch_bounds__(GQA_WARPS * 32, 1) k_attn_wg(kc_attn_args a, wg_eval_ops ops) {
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
  wg_tslots T; /* (TR) */
  if (TR) wg_tslots_init(a, t, ops.slot_s + ((int64_t)plan * nt_all + t) * GG * K, live, T);
  else if (live) gqa_rank_init_from<GG, TWO>(a, t, ops.slot_s + ((int64_t)plan * nt_all + t) * GG * K, S.R);
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
    if (TR) wg_phase_b_tr(S, T, sc + buf * 64 * TC_LDS, knl, warp, live, j0, nt, kb, ke, K, q4, Kh, D, c, p, alpha);
    else tc_phase_b<TWO, 0>(S, sc + buf * 64 * TC_LDS, knl, warp, live, j0, nt, kb, ke, K, q4, Kh, D, c, p, alpha);
    wg_put_weights(sm + buf * C::P_BYTES, p_base, p_x, p); /* P[buf]: C(it - 2) read it, waited for */
    kw_fence_proxy(); /* P's generic-proxy stores before C(it)'s wgmma reads them */
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
  if (TR) /* back to one slot per lane and head for the hit counts (lanes 8 and up: no slot) */
#pragma unroll
    for (int gi = 0; gi < GG; gi++) {
      const int cg = __shfl_sync(0xffffffffu, T.c, 8 * gi + (lane & 7));
      S.R[gi].c0 = lane < 8 ? cg : K;
      S.R[gi].c1 = K;
    }
  gqa_write_rows<GG, TWO, 1>(a, plan, t, ke - kb, K, og, S.l, S.R, S.sums);
#endif
}

/* Split the launch's operands (n plans) into ops: the effective keys with their logit-sum terms
 * (a->lg_*), lo scaled (phase A's correction accumulator); the values with unscaled lo (the weighted sums in one
 * accumulator, wg_issue3x1); the flag as k_wg_split's. */
static int wg_split_all(const kc_attn_args *a, int n, const wg_eval_ops &ops, sq_err *e) {
  const int64_t nt = a->n_rows / 4, D = a->D;
  const int threads = 256, rows_per_block = threads / 32;
  auto blocks = [&](int64_t rows) { return (unsigned)((rows + rows_per_block - 1) / rows_per_block); };
  wg_lg lg = {a->lg_a, a->lg_w, a->lg_s, a->rows_out, nt, a->n_rows, 4, a->n_fields};
  k_wg_split<1><<<blocks(n * nt), threads>>>(a->keff, n * nt, D, (int)D, ops.keff_h, ops.keff_l, ops.keff_norm,
                                             a->range_flag, lg);
  launchCheck();
  wg_lg none = {};
  k_wg_split<0><<<blocks(n * nt), threads>>>(a->vhat, n * nt, D, (int)D, ops.vhat_h, ops.vhat_l, NULL,
                                             a->range_flag, none);
  launchCheck();
  return SQ_OK;
}

/* The rank slots' s^_r of the launch (n plans) into ops.slot_s, before k_attn_wg. */
static int wg_slot_scores(const kc_attn_args *a, int n, const wg_eval_ops &ops, sq_err *e) {
  const int64_t nt = a->n_rows / 4;
  if (a->topk <= 0) return SQ_OK;
  dim3 grid((unsigned)((nt + WG_SS_WARPS - 1) / WG_SS_WARPS), (unsigned)n);
  if (a->D == 128) k_wg_slot_scores<128><<<grid, WG_SS_WARPS * 32>>>(*a, ops.slot_s);
  else k_wg_slot_scores<64><<<grid, WG_SS_WARPS * 32>>>(*a, ops.slot_s);
  launchCheck();
  return SQ_OK;
}

template <int D, int TWO, int TR>
static int launch_wg(const kc_attn_args *a, int n_y, const wg_eval_ops &ops, sq_err *e) {
  const int smem = wg_cfg<D>::SMEM;
  dim3 grid((unsigned)((a->n_rows / 4 + GQA_WARPS - 1) / GQA_WARPS), (unsigned)n_y);
  cudaCheck(cudaFuncSetAttribute(k_attn_wg<D, TWO, TR>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  k_attn_wg<D, TWO, TR><<<grid, GQA_WARPS * 32, smem>>>(*a, ops);
  launchCheck();
  return SQ_OK;
}

size_t kca_wg_scratch(int n_plans, int64_t n_tok, int D, int topk) { return wg_eval_ops_bytes(n_plans, n_tok, D, topk); }

int kca_launch_wg(const kc_attn_args *a, int n_y, sq_err *e) {
  const int64_t nt = a->n_rows / 4;
  const size_t need = wg_eval_ops_bytes(n_y, nt, a->D, a->topk);
  if (!a->wg_scratch || a->wg_scratch_bytes < need)
    return sq_fail(e, SQ_EFAIL, "%s:%d: k_attn_wg: scratch of %zu bytes, %zu needed", __FILE__, __LINE__,
                   a->wg_scratch_bytes, need);
  const wg_eval_ops ops = wg_eval_ops_at(a->wg_scratch, n_y, nt, a->D);
  tryCheck(wg_split_all(a, n_y, ops, e));
  tryCheck(wg_slot_scores(a, n_y, ops, e));
  /* SQEXP_CUDA_WG_TR=0 keeps tc_phase_b's slots (to tell the transposed ones from the rest of the
   * kernel, should gpu_agree disagree) */
  static const char *tr_env = getenv("SQEXP_CUDA_WG_TR");
  const int two = a->topk > 32, tr = a->topk <= 8 && !(tr_env && !strcmp(tr_env, "0"));
  if (a->D == 128)
    return two ? launch_wg<128, 1, 0>(a, n_y, ops, e)
               : tr ? launch_wg<128, 0, 1>(a, n_y, ops, e) : launch_wg<128, 0, 0>(a, n_y, ops, e);
  return two ? launch_wg<64, 1, 0>(a, n_y, ops, e)
             : tr ? launch_wg<64, 0, 1>(a, n_y, ops, e) : launch_wg<64, 0, 0>(a, n_y, ops, e);
}
