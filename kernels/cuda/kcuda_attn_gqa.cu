/* kcuda_attn_gqa: the group-per-warp attention kernels (a warp per token and its GQA group of 4
 * query heads, so each key and value row read from shared memory serves 4 queries): k_attn_gqa
 * (EVAL_ATTN with SQEXP_CUDA_ATTN=gqa, or where the tensor-core kernel's shape does not fit) and
 * k_ref_gqa (REF_ATTN for G = 4 unless SQEXP_CUDA_ATTN=rows). docs/cuda.md, "The attention rows". */
#include "kcuda_attn_dev.cuh"

/* EVAL_ATTN with the GQA group in one warp (SQEXP_CUDA_ATTN=gqa, and for kc_gqa_shape layers
 * that kc_tc_shape excludes; SQEXP_CUDA_ATTN=rows turns it off). A block of W warps owns W consecutive tokens; warp w owns
 * token t and all GG query heads of the KV head, so each key and value row read from shared
 * memory serves GG queries. Per tile of TILE keys of the block's union key range:
 *   - the effective keys, the reference keys and the decoded values are staged in shared memory
 *     by cp.async, double-buffered: tile i+1 is in flight while tile i is computed (one barrier
 *     per tile);
 *   - lane = key: s^ = q.keff and s = q.k for the GG heads (fmaf chains in dimension order, as in
 *     k_rows; no score is kept beyond its tile, so nothing T x T exists); the double logit sums,
 *     the reference keys' ranks (rank_offer), the online softmax;
 *   - the tile's weights go to shared memory as one float4 per key (the GG heads' p), and each lane
 *     accumulates 4 adjacent output dimensions: per key one broadcast float4 of weights and one
 *     float4 of the value row, 16 FMAs.
 * The pair sums of the group are added before they are written (into the row of gi = 0; the column
 * sums over rows are unchanged up to double rounding). TWO: K > 32. */
template <int GG, int W, int MINB, int TWO>
__global__ void __launch_bounds__(W * 32, MINB) k_attn_gqa(kc_attn_args a) {
  static_assert(GG == 4, "the weights of a key are one float4");
  extern __shared__ float4 sm4[];
  float *sm = (float *)sm4;
  const int D = a.D, ldk = D + KPAD, D4 = D >> 2, stage = 2 * TILE * ldk + TILE * D;
  float *qs_all = sm;                                /* [W][GG][D] */
  float *stages = qs_all + W * GG * D;               /* 2 x (keff [TILE][ldk], k [TILE][ldk], v [TILE][D]) */
  float4 *ps = (float4 *)(stages + 2 * stage) + (threadIdx.x >> 5) * TILE; /* [W][TILE] weights */
  __shared__ int64_t blk_kb[W], blk_ke[W];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  /* blocks in reverse token order: the long rows (late in their sequence) start first */
  int64_t n_tok = a.n_rows / GG, t = (int64_t)(gridDim.x - 1 - blockIdx.x) * W + warp;
  int plan = blockIdx.y, live = t < n_tok;
  int64_t kb = 0, ke = 0;
  float *qs = qs_all + warp * GG * D;
  if (live) {
    int64_t s = seq_of(a.seq_off, a.n_seq, t);
    kb = a.seq_off[s];
    ke = t + 1;
    gqa_load_queries<GG>(a, t, a.head, D, lane, qs);
  }
  int64_t KB, KE;
  gqa_union_range<W>(live, kb, ke, blk_kb, blk_ke, &KB, &KE);
  const eval_src src = eval_src_of(a, plan, D);
  const float *Kh = src.Kh;
  const int64_t ntile = tile_count(KB, KE);
  auto stage_eval = [=](float *dst, int64_t j0, int n) { eval_stage_tile(dst, ldk, D, src, j0, n, D); };
  tiles_start(ntile, KB, KE, stages, stage_eval); /* tile 0 is in flight while the reference keys are scored */
  const int K = a.topk;
  const float4 *q4 = (const float4 *)qs;
  rank_slots R[GG];
  if (live) gqa_rank_init<GG, TWO, 0>(a, t, kb, q4, Kh, D4, (float *)ps, R);
  const float c = 1.0f / sqrtf((float)D);
  float o[GG][GQA_NDL], m[GG], l[GG];
  gqa_state_init(o, m, l);
  double sb = 0, ss_ = 0, ssh = 0, s2 = 0, sxh = 0;
  for (int64_t it = 0; it < ntile; it++) {
    const int64_t j0 = KB + it * TILE;
    const int nt = tiles_next(it, ntile, j0, KE, stages, stage, stage_eval);
    if (!live || j0 + nt <= kb || j0 >= ke) continue; /* warp-uniform */
    const float *tk = stages + (it & 1) * stage, *tr = tk + TILE * ldk, *tv = tr + TILE * ldk;
    int64_t j = j0 + lane;
    int valid = lane < nt && j >= kb && j < ke;
    float sh[GG], sr[GG];
#pragma unroll
    for (int gi = 0; gi < GG; gi++) sh[gi] = sr[gi] = 0.0f;
    if (valid) { /* s^ = q.keff and s = q.k, each an fmaf chain in dimension order (as k_rows) */
      const float4 *kr = (const float4 *)(tk + lane * ldk), *rr = (const float4 *)(tr + lane * ldk);
#pragma unroll 4
      for (int jd = 0; jd < D4; jd++) {
        float4 y = kr[jd], yr = rr[jd];
#pragma unroll
        for (int gi = 0; gi < GG; gi++) {
          float4 x = q4[gi * D4 + jd];
          sh[gi] = fma4(x, y, sh[gi]);
          sr[gi] = fma4(x, yr, sr[gi]);
        }
      }
#pragma unroll
      for (int gi = 0; gi < GG; gi++) {
        sb += (double)sh[gi] - (double)sr[gi];
        ss_ += sr[gi];
        ssh += sh[gi];
        s2 += (double)sr[gi] * sr[gi];
        sxh += (double)sr[gi] * sh[gi];
      }
    } else {
#pragma unroll
      for (int gi = 0; gi < GG; gi++) sh[gi] = -INFINITY;
    }
    int base = (int)(j0 - kb);
#pragma unroll
    for (int gi = 0; gi < GG; gi++) rank_offer(&R[gi], K, TWO, valid && sh[gi] >= R[gi].thr, sh[gi], base);
    float p[GG];
    gqa_softmax_step(sh, valid, c, m, l, o, p);
    gqa_weighted_sum(o, p, ps, tv, D, j0 < kb ? (int)(kb - j0) : 0, j0 + nt > ke ? (int)(ke - j0) : nt, D);
  }
  if (!live) return;
  double sums[5] = {sb, ss_, ssh, s2, sxh};
  gqa_write_rows<GG, TWO>(a, plan, t, ke - kb, K, o, l, R, sums);
}

/* REF_ATTN in the group layout (kc_gqa_shape layers unless SQEXP_CUDA_ATTN=rows): k_attn_gqa's
 * blocks (W tokens, a warp per token and its GG query heads, cp.async double-buffered key and value
 * tiles of the dump's K and V; grid.y = KV head) computing the reference rows: o_ref and the
 * reference top-k list of every (token, query head). The scores are k_rows' fmaf chain (dot_sm's
 * order) and the lists its topk_offer, so the top-k lists are k_rows' to the bit; o_ref differs
 * from k_rows' in summation order only (the lazily moving max, per-lane normalisers, float4
 * weighted sums). Each key and value row read from shared memory serves GG queries instead of
 * one. */
#define REF_WARPS 8 /* 86 KB of shared memory at D = 128: two blocks per SM */
template <int GG, int W>
__global__ void __launch_bounds__(W * 32, 2) k_ref_gqa(kc_attn_args a) {
  static_assert(GG == 4, "the weights of a key are one float4");
  extern __shared__ float4 sm4[];
  float *sm = (float *)sm4;
  const int D = a.D, ldk = D + KPAD, D4 = D >> 2, stage = TILE * ldk + TILE * D, K = a.topk;
  float *qs_all = sm;                                /* [W][GG][D] */
  float *stages = qs_all + W * GG * D;               /* 2 x (k [TILE][ldk], v [TILE][D]) */
  float4 *ps = (float4 *)(stages + 2 * stage) + (threadIdx.x >> 5) * TILE; /* [W][TILE] weights */
  __shared__ int64_t blk_kb[W], blk_ke[W];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, h = blockIdx.y;
  int64_t n_tok = a.n_rows / GG, t = (int64_t)(gridDim.x - 1 - blockIdx.x) * W + warp;
  int live = t < n_tok;
  int64_t kb = 0, ke = 0;
  float *qs = qs_all + warp * GG * D;
  if (live) {
    int64_t s = seq_of(a.seq_off, a.n_seq, t);
    kb = a.seq_off[s];
    ke = t + 1;
    gqa_load_queries<GG>(a, t, h, D, lane, qs);
  }
  int64_t KB, KE;
  gqa_union_range<W>(live, kb, ke, blk_kb, blk_ke, &KB, &KE);
  const int64_t kst = (int64_t)a.Hkv * D;
  const float *Kd = a.k + (int64_t)h * D, *Vd = a.v + (int64_t)h * D;
  const int64_t ntile = tile_count(KB, KE);
  auto stage_kv = [=](float *dst, int64_t j0, int n) {
    load_tile_async(dst, ldk, Kd, kst, j0, n, D);
    load_tile_async(dst + TILE * ldk, D, Vd, kst, j0, n, D);
  };
  tiles_start(ntile, KB, KE, stages, stage_kv);
  const float4 *q4 = (const float4 *)qs;
  const float c = 1.0f / sqrtf((float)D);
  float o[GG][GQA_NDL], m[GG], l[GG];
  topk_list TL[GG];
#pragma unroll
  for (int gi = 0; gi < GG; gi++) {
    m[gi] = -INFINITY;
    l[gi] = 0.0f;
    topk_init(&TL[gi]);
#pragma unroll
    for (int i = 0; i < GQA_NDL; i++) o[gi][i] = 0.0f;
  }
  for (int64_t it = 0; it < ntile; it++) {
    const int64_t j0 = KB + it * TILE;
    const int nt = tiles_next(it, ntile, j0, KE, stages, stage, stage_kv);
    if (!live || j0 + nt <= kb || j0 >= ke) continue; /* warp-uniform */
    const float *tk = stages + (it & 1) * stage, *tv = tk + TILE * ldk;
    int64_t j = j0 + lane;
    int valid = lane < nt && j >= kb && j < ke;
    float sc[GG];
#pragma unroll
    for (int gi = 0; gi < GG; gi++) sc[gi] = 0.0f;
    if (valid) { /* dot_sm's chain: s = fmaf(q, k, s) in dimension order */
      const float4 *kr = (const float4 *)(tk + lane * ldk);
#pragma unroll 4
      for (int jd = 0; jd < D4; jd++) {
        float4 y = kr[jd];
#pragma unroll
        for (int gi = 0; gi < GG; gi++) {
          float4 x = q4[gi * D4 + jd];
          sc[gi] = fma4(x, y, sc[gi]);
        }
      }
    } else {
#pragma unroll
      for (int gi = 0; gi < GG; gi++) sc[gi] = -INFINITY;
    }
#pragma unroll
    for (int gi = 0; gi < GG; gi++) { /* k_rows' list, key for key */
      float tl = TL[gi].cnt == K ? topk_last(&TL[gi], K) : -INFINITY;
      topk_offer(&TL[gi], K, valid && (TL[gi].cnt < K || sc[gi] > tl), sc[gi], (int)(j - kb));
    }
    float p[GG];
    gqa_softmax_step(sc, valid, c, m, l, o, p);
    gqa_weighted_sum(o, p, ps, tv, D, j0 < kb ? (int)(kb - j0) : 0, j0 + nt > ke ? (int)(ke - j0) : nt, D);
  }
  if (!live) return;
#pragma unroll
  for (int gi = 0; gi < GG; gi++) ref_put_row(a, t * a.Hq + h * GG + gi, o[gi], l[gi], TL[gi], K, D, lane);
}

/* k_attn_gqa's shared memory: W warps' queries, two stages of (keff, v) tiles, the weights. */
static size_t gqa_smem(int W, int D) {
  size_t f = (size_t)W * 4 * D + 2 * (2 * (size_t)TILE * (D + KPAD) + (size_t)TILE * D) + (size_t)W * TILE * 4;
  return f * sizeof(float);
}

template <int TWO>
static int launch_gqa(const kc_attn_args *a, int n_y, sq_err *e) {
  size_t smem = gqa_smem(GQA_WARPS, a->D);
  dim3 grid((unsigned)((a->n_rows / 4 + GQA_WARPS - 1) / GQA_WARPS), (unsigned)n_y);
  cudaCheck(cudaFuncSetAttribute(k_attn_gqa<4, GQA_WARPS, GQA_MINB, TWO>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)smem));
  k_attn_gqa<4, GQA_WARPS, GQA_MINB, TWO><<<grid, GQA_WARPS * 32, smem>>>(*a);
  launchCheck();
  return SQ_OK;
}

int kca_launch_gqa(const kc_attn_args *a, int n_y, sq_err *e) {
  return a->topk > 32 ? launch_gqa<1>(a, n_y, e) : launch_gqa<0>(a, n_y, e);
}

int kca_launch_ref_gqa(const kc_attn_args *a, int n_y, sq_err *e) {
  size_t smem = ((size_t)REF_WARPS * 4 * a->D + 2 * ((size_t)TILE * (a->D + KPAD) + (size_t)TILE * a->D) +
                 (size_t)REF_WARPS * TILE * 4) * sizeof(float);
  dim3 grid((unsigned)((a->n_rows / 4 + REF_WARPS - 1) / REF_WARPS), (unsigned)n_y);
  cudaCheck(cudaFuncSetAttribute(k_ref_gqa<4, REF_WARPS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  k_ref_gqa<4, REF_WARPS><<<grid, REF_WARPS * 32, smem>>>(*a);
  launchCheck();
  return SQ_OK;
}
