/* kcuda_ref_wg: k_ref_wg, the REF_ATTN kernel for G = 4 and D = 64, 128 on sm_90a: the reference
 * rows (exact scores, top-k lists, o_ref) with k_attn_wg's block layout and its weighted sums on
 * wgmma (kcuda_attn_wg.cuh). docs/cuda.md, "The attention rows". */
#include "kcuda_attn_wg.cuh"

/* k_ref_wg: REF_ATTN for G = 4 and D = 64, 128 (sm_90a; SQEXP_CUDA_ATTN=wg or unset, top-k <= 64):
 * k_ref_gqa's scores and top-k lists with k_attn_wg's blocks and phase C. Per tile of 32 keys,
 * lane = key, each warp scores its token's 4 heads with k_rows' fmaf chain from the staged fp32
 * key rows and offers them to topk_offer in index order, so the top-k lists are k_rows' (and the
 * CPU's) to the bit, as k_ref_gqa's; the online softmax is k_ref_gqa's (expf, a max that moves by
 * one vote). The weighted sum of the dump's values, k_ref_gqa's float4 FMA loop, runs on wgmma in
 * 3xfp16 as k_attn_wg's phase C, but with lo scaled and a correction accumulator (the values split
 * once per layer by k_wg_split<1>), so o_ref differs
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
    for (int gi = 0; gi < GG; gi++) { /* the weights as P hi | lo x 2^11 (k_attn_wg's lo is unscaled) */
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
  for (int gi = 0; gi < GG; gi++) ref_put_row(a, t * a.Hq + h * GG + gi, og[gi], l[gi], TL[gi], K, D, lane);
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
