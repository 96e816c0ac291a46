/* kcuda_attn_wg: k_attn_wg, the default EVAL_ATTN kernel for G = 4 and D = 64, 128
 * (SQEXP_CUDA_ATTN=wg or unset): k_attn_tc's blocks and phase B with the two matrix products on
 * Hopper's warpgroup MMA (wgmma, sm_90a) in 3xfp16. docs/cuda.md, "The attention rows". */
#include "kcuda_attn_wg.cuh"

#define WG_NST 3 /* stages: phase A of tile it + 1 and phase C of tile it in flight, it + 2 landing */

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
  const int64_t ntile = tile_count(KB, KE);
  const wg_stager<D> stager;
  auto stage_at = [&](int64_t i) { return stages + (int)(i % WG_NST) * C::STAGE; };
  for (int64_t i = 0; i < 2 && i < ntile; i++) { /* tiles 0, 1: one commit group each */
    stager.run(stage_at(i), src, KB + i * TILE, tile_len(KE, KB + i * TILE));
    cp_async_commit();
  }
  const int K = a.topk;
  const float4 *q4 = (const float4 *)qg;
  if (live) gqa_rank_init<GG, TWO, 1>(a, t, kb, q4, Kh, D / 4, sc + warp * GG * 32, S.R);
  const float c = 1.0f / sqrtf((float)D);
  float o[NPV / 2]; /* O[64][D]: warpgroup wg's dimensions NPV wg .. in the accumulator layout */
#pragma unroll
  for (int i = 0; i < NPV / 2; i++) o[i] = 0.0f;
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
  const uint32_t t_off = C::T_BYTES >> 4, s_off = C::STAGE >> 4;
  const uint32_t p_lo = (uint32_t)kw_desc_step(64, 2); /* P's lo: k-steps 2, 3 of its rows */
  /* this lane's weights in P (kw_swz(64, 4 warp + gi, lane) and (.., 32 + lane), unrolled: the
   * row's low 3 bits are 4 (warp & 1) + gi) */
  const uint32_t p_base = C::OFF_P + 4 * warp * 128 + (lane & 7) * 2, p_x = (lane >> 3) ^ (4 * (warp & 1));
  const int r0 = 16 * wq + gid; /* this thread's accumulator rows: r0, r0 + 8 */
  /* phase A of tile i (its stage i % 3): this warpgroup's 64 x WG_NA block of S^, issued */
  auto issue_a = [&](float *s16, float *cor, int64_t i) {
    const uint32_t bh = dkh0 + (uint32_t)(i % WG_NST) * s_off;
    wg_issue3x<WG_NA, 0, D / 16>(s16, cor, 0, dqh, dql, q_step, bh, bh + t_off, k_step);
  };
  auto put_scores = [&](const float *s16, int64_t i) { /* into sc[i & 1] */
    float *out = sc + (int)(i & 1) * 64 * TC_LDS + r0 * TC_LDS + WG_NA * half + 2 * tig;
#pragma unroll
    for (int j = 0; j < WG_NA / 8; j++) {
      *(float2 *)(out + 8 * j) = make_float2(s16[4 * j], s16[4 * j + 1]);
      *(float2 *)(out + 8 * TC_LDS + 8 * j) = make_float2(s16[4 * j + 2], s16[4 * j + 3]);
    }
  };
  /* The pipeline: phase A of tile it + 1 runs on the tensor cores while every warp runs phase B of
   * tile it (its scores already in sc[it & 1]); then phase C of tile it, and the A(it + 1) scores go
   * to sc[(it + 1) & 1]. Tile it + 2 is staged during tile it. Two barriers per tile. */
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
  for (int64_t it = 0; it < ntile; it++) {
    const int64_t j0 = KB + it * TILE;
    const int nt = tile_len(KE, j0), more = it + 1 < ntile;
    float s16[WG_NA / 2], cor[WG_NA / 2]; /* A(it + 1), in flight through phase B (warpgroups < WG_AS) */
    if (more && wg < WG_AS) {
      kw_fence();
      issue_a(s16, cor, it + 1);
      kw_commit();
    }
    if (it + 2 < ntile) { /* into the stage tile it - 1 used (its phase C is done: last barrier) */
      stager.run(stage_at(it + 2), src, j0 + 2 * TILE, tile_len(KE, j0 + 2 * TILE));
      cp_async_commit();
    }
    const float kn_next = more ? kn_g[j0 + TILE + lane] : 0.0f;
    float p[GG], alpha[GG];
    tc_phase_b<TWO, 0>(S, sc + (int)(it & 1) * 64 * TC_LDS, knl, warp, live, j0, nt, kb, ke, K, q4, Kh, D, c, p,
                       alpha);
    int moved = 0;
#pragma unroll
    for (int gi = 0; gi < GG; gi++) { /* the weights as P hi | lo (zeros without causal keys) */
      __half h = __float2half_rn(p[gi]);
      __half l = __float2half_rn((p[gi] - __half2float(h)) * WG_LO_SCALE);
      *(__half *)(sm + p_base + gi * 128 + ((p_x ^ gi) << 4)) = h;
      *(__half *)(sm + p_base + gi * 128 + ((p_x ^ 4 ^ gi) << 4)) = l;
      if (lane == 0) alpha_s[4 * warp + gi] = alpha[gi];
      moved |= alpha[gi] != 1.0f;
    }
    /* the weights and rescale factors are in, sc[it & 1] is read; rescale only when a max moved */
    const int rescale = __syncthreads_or(moved);
    { /* phase C: O = alpha O + P V for this warpgroup's dimensions (V read MN-major) */
      if (rescale) {
        const float a0 = alpha_s[r0], a1 = alpha_s[r0 + 8];
#pragma unroll
        for (int i = 0; i < NPV / 2; i += 4) o[i] *= a0, o[i + 1] *= a0, o[i + 2] *= a1, o[i + 3] *= a1;
      }
      const uint32_t vh = dvh0 + (uint32_t)(it % WG_NST) * s_off;
      float corc[NPV / 2];
      kw_fence();
      wg_issue3x<NPV, 1, TILE / 16>(o, corc, 1, dph, dph + p_lo, q_step, vh, vh + t_off, v_step);
      kw_commit();
      kw_wait<0>();
      wg_fold<NPV>(o, corc);
      if (more && wg < WG_AS) { /* A(it + 1)'s scores to sc[(it + 1) & 1] */
        wg_fold<WG_NA>(s16, cor);
        put_scores(s16, it + 1);
      }
    }
    knl = kn_next;
    if (it + 2 < ntile) {
      cp_async_wait_all(); /* tile it + 2, for A(it + 2) at the next tile's start */
      kw_fence_proxy();
    }
    __syncthreads(); /* sc[(it + 1) & 1] is complete; P and stage it % 3 are free */
  }
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
  k_wg_split<1><<<blocks(n * nt), threads>>>(a->keff, n * nt, D, (int)D, ops.keff_h, ops.keff_l, ops.keff_norm,
                                          a->range_flag, lg);
  launchCheck();
  wg_lg none = {};
  k_wg_split<1><<<blocks(n * nt), threads>>>(a->vhat, n * nt, D, (int)D, ops.vhat_h, ops.vhat_l, NULL, a->range_flag,
                                          none);
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

size_t kca_wg_scratch(int n_plans, int64_t n_tok, int D) { return wg_ops_bytes(n_plans, n_tok, D); }

int kca_launch_wg(const kc_attn_args *a, int n_y, sq_err *e) {
  const int64_t nt = a->n_rows / 4;
  if (!a->wg_scratch || a->wg_scratch_bytes < wg_ops_bytes(n_y, nt, a->D))
    return sq_fail(e, SQ_EFAIL, "%s:%d: k_attn_wg: scratch of %zu bytes, %zu needed", __FILE__, __LINE__,
                   a->wg_scratch_bytes, wg_ops_bytes(n_y, nt, a->D));
  const wg_ops ops = wg_ops_at(a->wg_scratch, n_y, nt, a->D);
  tryCheck(wg_split_all(a, n_y, ops, e));
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
#pragma unroll
    for (int gi = 0; gi < GG; gi++) { /* the weights as P hi | lo, as k_attn_wg */
      __half hh = __float2half_rn(p[gi]);
      __half ll = __float2half_rn((p[gi] - __half2float(hh)) * WG_LO_SCALE);
      *(__half *)(sm + p_base + gi * 128 + ((p_x ^ gi) << 4)) = hh;
      *(__half *)(sm + p_base + gi * 128 + ((p_x ^ 4 ^ gi) << 4)) = ll;
      if (lane == 0) alpha_s[4 * warp + gi] = alpha[gi];
    }
    kw_fence_proxy();
    __syncthreads(); /* the weights and rescale factors of every row are in */
    const float a0 = alpha_s[r0], a1 = alpha_s[r0 + 8];
#pragma unroll
    for (int i = 0; i < NPV / 2; i += 4) o[i] *= a0, o[i + 1] *= a0, o[i + 2] *= a1, o[i + 3] *= a1;
    const uint32_t vhd = dvh0 + (uint32_t)((it & 1) * 2 * C::T_BYTES >> 4);
    float corc[NPV / 2];
    kw_fence();
    wg_issue3x<NPV, 1, TILE / 16>(o, corc, 1, dph, dph + p_lo, p_step, vhd, vhd + t_off, v_step);
    kw_commit();
    kw_wait<0>();
    wg_fold<NPV>(o, corc);
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
  k_wg_split<1><<<(unsigned)((rows + 7) / 8), 256>>>(a->v, rows, a->D, a->D, vh, vl, NULL, a->range_flag, wg_lg{});
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
