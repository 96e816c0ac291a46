/* kcuda_attn_tc: k_attn_tc, the default EVAL_ATTN kernel for G = 4 (SQEXP_CUDA_ATTN=tcpv or unset;
 * tc = scores only): k_attn_gqa's layout with a block's 64 query rows on tensor cores in 3xTF32.
 * docs/cuda.md, "The attention rows". */
#include "kcuda_attn_tcb.cuh"

/* EVAL_ATTN with the scores on tensor cores (SQEXP_CUDA_ATTN=tc, and =tcpv, the default, with
 * PVTC; same shape as k_attn_gqa with D % 8 == 0). The block and warp layout, the cp.async double
 * buffer, the online softmax, the weighted sum of values (without PVTC) and the logit sums are
 * k_attn_gqa's. Per tile,
 * with the block's 64 query rows (16 tokens x 4 heads; row 4w + gi = token w, head gi):
 *   - phase A (all warps): S^ = Q keff^T and S = Q k^T (64 x 32 each) with
 *     mma.sync.m16n8k8.tf32 in 3xTF32: every fp32 operand x is split x = hi + lo (hi = x with its
 *     13 low mantissa bits cleared, lo = the same of x - hi) and s = sum hi*hi' + sum (lo*hi' +
 *     hi*lo') (two accumulators; the dropped lo*lo' and the truncations are ~2^-20 relative per
 *     product), so the scores are fp32-accurate: |tc - fmaf chain| <= ~3e-5 |q| |k| in the worst
 *     case (truncating tensor-core sums plus the chain's own rounding), far less in practice.
 *     Warp w computes a 16 x 16 block (matrix w / 8, m-tile (w / 2) % 4, keys 16 (w % 2) ..) from
 *     the queries (split and stored once per block in A-fragment order, hi and lo) and the staged key
 *     rows (B fragments straight from the padded rows: conflict-free); the two score tiles go to
 *     shared memory, and each warp also writes the norms of two effective keys of the tile;
 *   - one barrier, then phase B as in k_attn_gqa with lane = key, reading its 4 rows' s^ and s.
 * Top-k recall keeps its exact semantics: the reference slots' s^_r are gqa_score's fmaf chain
 * (as in k_attn_gqa), and a key's rank decisions must use that same chain. A tensor-core s^_j
 * within TC_EPS |q| |k_j| of the chain's value decides "s^_j > s^_r" correctly whenever
 * |s^_j(tc) - s^_r| > TC_EPS |q| |k_j|; so keys are candidates when s^_j(tc) >= thr - margin, and a
 * candidate within the margin of a slot still in (other than its own key) is scored again with
 * the chain (gqa_score from global memory, every lane alike) before any slot compares it. Exact
 * ties (repeated keys) thus go through the chain and the tie-break, as in k_attn_gqa.
 * PVTC: the weighted sum of values on tensor cores too (3xTF32; phase C after a third barrier: O
 * = alpha O + P V, P in A-fragment order from phase B, the value rows padded to TC_VPAD). */
#define TC_VPAD 8        /* value rows (PVTC): conflict-free B fragments */

__device__ __forceinline__ void tf32_split(float x, uint32_t *hi, uint32_t *lo) {
  uint32_t h = __float_as_uint(x) & 0xffffe000u;
  *hi = h;
  *lo = __float_as_uint(x - __uint_as_float(h)) & 0xffffe000u;
}
/* The four elements of an A fragment's float4, split as tf32_split. */
__device__ __forceinline__ void tf32_split4(float4 f, uint32_t hi[4], uint32_t lo[4]) {
  tf32_split(f.x, &hi[0], &lo[0]);
  tf32_split(f.y, &hi[1], &lo[1]);
  tf32_split(f.z, &hi[2], &lo[2]);
  tf32_split(f.w, &hi[3], &lo[3]);
}

/* Four already split tf32 parts (a float4 of qf or qlo) as mma operand registers. */
__device__ __forceinline__ void tf32_bits4(float4 f, uint32_t r[4]) {
  r[0] = __float_as_uint(f.x), r[1] = __float_as_uint(f.y), r[2] = __float_as_uint(f.z), r[3] = __float_as_uint(f.w);
}

__device__ __forceinline__ void mma_tf32(float *c, const uint32_t *a, const uint32_t *b) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* PVTC: weight p of row 4 w + gi and key `lane` of the tile into its A-fragment slot (as the
 * queries': m-tile, k-step, lane of the fragment, register). */
__device__ __forceinline__ void tc_put_weight(float4 *pf, int warp, int gi, int lane, float p) {
  int rr = (4 * warp + gi) & 15, ks = lane >> 3, c = lane & 7;
  float *f = (float *)(pf + ((warp >> 2) * 4 + ks) * 32 + (rr & 7) * 4 + (c & 3));
  f[(rr >> 3) + 2 * (c >> 2)] = p;
}

template <int TWO, int PVTC>
__global__ void __launch_bounds__(GQA_WARPS * 32, 1) k_attn_tc(kc_attn_args a) {
  enum { GG = 4, W = GQA_WARPS };
  static_assert(W == 16, "64 query rows: 4 m-tiles x 2 n-halves x 2 matrices = one 16x16 block per warp");
  extern __shared__ float4 sm4[];
  float *sm = (float *)sm4;
  const int D = a.D, ldk = D + KPAD, ldv = PVTC ? D + TC_VPAD : D, D4 = D >> 2, NKS = D >> 3;
  const int stage = 2 * TILE * ldk + TILE * ldv;
  float4 *qf = sm4;                                  /* [4 m-tiles][NKS][32 lanes] A fragments; PVTC:
                                                        the outputs [64][D] at the end */
  float *stages = sm + W * GG * D;                   /* 2 x (keff [TILE][ldk], k [TILE][ldk], v [TILE][ldv]) */
  float4 *ps_all = (float4 *)(stages + 2 * stage);   /* [W][TILE] weights; PVTC: [4 m-tiles][4 k-steps][32
                                                        lanes] A fragments of the weights */
  float *sc = (float *)(ps_all + W * TILE);          /* [2][64][TC_LDS] s^ and s of the tile */
  float *kn = sc + 2 * 64 * TC_LDS;                  /* [TILE] |keff_j| of the tile */
  float *alpha_s = kn + TILE;                        /* [64] PVTC: the rows' rescale factors of the tile */
  float4 *qlo = (float4 *)(alpha_s + 64);            /* [4 m-tiles][NKS][32 lanes]: the lo parts of qf (qf
                                                        holds the hi parts), split once per block */
  __shared__ int64_t blk_kb[W], blk_ke[W];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  float4 *ps = ps_all + warp * TILE;
  int64_t n_tok = a.n_rows / GG, t = (int64_t)(gridDim.x - 1 - blockIdx.x) * W + warp;
  int plan = blockIdx.y, live = t < n_tok;
  int64_t kb = 0, ke = 0;
  const float *qg = a.q + (t * a.Hq + a.head * GG) * D; /* the 4 heads' queries, adjacent rows */
  tc_row_state S;
  tc_row_init(S);
  {
    /* rows 4w + gi into A-fragment order: a0 (r, c), a1 (r + 8, c), a2 (r, c + 4), a3 (r + 8, c + 4)
     * with r = lane / 4, c = lane % 4 of the 16 x 8 block (m-tile, k-step) */
    float *qff = (float *)qf, *qfl = (float *)qlo;
    if (live) {
      int64_t s = seq_of(a.seq_off, a.n_seq, t);
      kb = a.seq_off[s];
      ke = t + 1;
    }
#pragma unroll
    for (int gi = 0; gi < GG; gi++) {
      int r = 4 * warp + gi, mt = r >> 4, rr = r & 15;
      float ss = 0.0f;
      for (int d = lane; d < D; d += 32) {
        float x = live ? qg[gi * D + d] : 0.0f;
        ss = fmaf(x, x, ss);
        int ks = d >> 3, c = d & 7;
        const int at = ((mt * NKS + ks) * 32 + (rr & 7) * 4 + (c & 3)) * 4 + (rr >> 3) + 2 * (c >> 2);
        uint32_t hi, lo; /* tf32_split once here, not in every tile's phase A */
        tf32_split(x, &hi, &lo);
        qff[at] = __uint_as_float(hi), qfl[at] = __uint_as_float(lo);
      }
      S.qn[gi] = sqrtf(warp_sum_f(ss));
    }
  }
  if (lane == 0) {
    blk_kb[warp] = live ? kb : INT64_MAX;
    blk_ke[warp] = live ? ke : INT64_MIN;
  }
  if (PVTC) /* every weight times a value row enters the products: rows past a short tile must be
             * finite (stale rows of earlier tiles are), so never-written value rows are zeros */
    for (int i = threadIdx.x; i < TILE * ldv; i += blockDim.x)
      stages[2 * TILE * ldk + i] = stages[stage + 2 * TILE * ldk + i] = 0.0f;
  __syncthreads(); /* (gqa_union_range's steps, with the zeroing before its barrier) */
  int64_t KB = INT64_MAX, KE = INT64_MIN;
  for (int w = 0; w < W; w++) {
    KB = blk_kb[w] < KB ? blk_kb[w] : KB;
    KE = blk_ke[w] > KE ? blk_ke[w] : KE;
  }
  const eval_src src = eval_src_of(a, plan, D);
  const float *Kh = src.Kh;
  const int64_t ntile = tile_count(KB, KE);
  auto stage_eval = [=](float *dst, int64_t j0, int n) { eval_stage_tile(dst, ldk, ldv, src, j0, n, D); };
  tiles_start(ntile, KB, KE, stages, stage_eval); /* tile 0 is in flight while the reference keys are scored */
  const int K = a.topk;
  const float4 *q4 = (const float4 *)qg;
  if (live) gqa_rank_init<GG, TWO, 1>(a, t, kb, q4, Kh, D4, (float *)ps, S.R);
  const float c = 1.0f / sqrtf((float)D);
  float o[GG][GQA_NDL];
#pragma unroll
  for (int gi = 0; gi < GG; gi++)
#pragma unroll
    for (int i = 0; i < GQA_NDL; i++) o[gi][i] = 0.0f;
  const int mat = warp >> 3, mt = (warp >> 1) & 3, nb = (warp & 1) * 16;
  for (int64_t it = 0; it < ntile; it++) {
    const int64_t j0 = KB + it * TILE;
    /* (its barrier also means every warp is done with tile it-1's scores and norms) */
    const int nt = tiles_next(it, ntile, j0, KE, stages, stage, stage_eval);
    const float *tk = stages + (it & 1) * stage, *tv = tk + 2 * TILE * ldk;
    { /* phase A: this warp's 16 x 16 block of S^ (mat 0) or S (mat 1). Rows of keys past nt hold
       * stale (or never written) data: their columns are never read as valid keys. */
      /* the hi*hi products and the two small cross terms in separate accumulators: four
       * independent mma chains per warp instead of two, added at the end */
      float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
      float acs[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
      const float4 *qa = qf + mt * NKS * 32 + lane, *qal = qlo + mt * NKS * 32 + lane;
      const float *kt = tk + mat * TILE * ldk + (nb + gid) * ldk + tig;
#pragma unroll 4
      for (int ks = 0; ks < NKS; ks++) {
        uint32_t ah[4], al[4];
        tf32_bits4(qa[ks * 32], ah);
        tf32_bits4(qal[ks * 32], al);
#pragma unroll
        for (int n = 0; n < 2; n++) {
          const float *kr = kt + n * 8 * ldk + 8 * ks;
          uint32_t bh[2], bl[2];
          tf32_split(kr[0], &bh[0], &bl[0]);
          tf32_split(kr[4], &bh[1], &bl[1]);
          mma_tf32(acs[n], al, bh);
          mma_tf32(acs[n], ah, bl);
          mma_tf32(acc[n], ah, bh);
        }
      }
#pragma unroll
      for (int n = 0; n < 2; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[n][i] += acs[n][i];
      float *so = sc + mat * 64 * TC_LDS + (mt * 16 + gid) * TC_LDS + nb + 2 * tig;
#pragma unroll
      for (int n = 0; n < 2; n++) {
        *(float2 *)(so + 8 * n) = make_float2(acc[n][0], acc[n][1]);
        *(float2 *)(so + 8 * TC_LDS + 8 * n) = make_float2(acc[n][2], acc[n][3]);
      }
      /* norms of effective keys 2w and 2w + 1 (the recall margins) */
#pragma unroll
      for (int i = 0; i < 2; i++) {
        float ss = 0.0f;
        if (4 * lane < D) {
          float4 y = *(const float4 *)(tk + (2 * warp + i) * ldk + 4 * lane);
          ss = y.x * y.x + y.y * y.y + y.z * y.z + y.w * y.w;
        }
        ss = warp_sum_f(ss);
        if (lane == 0) kn[2 * warp + i] = sqrtf(ss);
      }
    }
    __syncthreads(); /* the score tiles and norms are complete */
    float p[GG], alpha[GG];
    const int act = tc_phase_b<TWO>(S, sc, kn[lane], warp, live, j0, nt, kb, ke, K, q4, Kh, D, c, p, alpha);
    if (PVTC) { /* the weights in A-fragment order (zeros when the tile holds no causal key) */
#pragma unroll
      for (int gi = 0; gi < GG; gi++) {
        tc_put_weight(ps_all, warp, gi, lane, p[gi]);
        if (lane == 0) alpha_s[4 * warp + gi] = alpha[gi];
      }
    } else if (act) { /* k_attn_gqa's weighted sum of values (alpha is exactly 1 where the max stayed) */
#pragma unroll
      for (int gi = 0; gi < GG; gi++)
#pragma unroll
        for (int i = 0; i < GQA_NDL; i++) o[gi][i] *= alpha[gi];
      gqa_weighted_sum(o, p, ps, tv, ldv, j0 < kb ? (int)(kb - j0) : 0, j0 + nt > ke ? (int)(ke - j0) : nt, D);
    }
    if (PVTC) { /* phase C: O (64 x D) = alpha O + P V on tensor cores (3xTF32); warp w owns rows
                 * 16 (w / 4) .. and dimensions 32 (w % 4) .. (4 n-tiles in o[n][]) */
      __syncthreads(); /* the weights and rescale factors of every row are in */
      const int pmt = warp >> 2, nq = (warp & 3) * 32;
      float a0 = alpha_s[pmt * 16 + gid], a1 = alpha_s[pmt * 16 + gid + 8];
#pragma unroll
      for (int n = 0; n < 4; n++) {
        o[n][0] *= a0;
        o[n][1] *= a0;
        o[n][2] *= a1;
        o[n][3] *= a1;
      }
      const float4 *pa = ps_all + pmt * 4 * 32 + lane;
      const float *vt = tv + tig * ldv + nq + gid;
#pragma unroll
      for (int ks = 0; ks < 4; ks++) {
        float4 af = pa[ks * 32];
        uint32_t ah[4], al[4];
        tf32_split4(af, ah, al);
#pragma unroll
        for (int n = 0; n < 4; n++) {
          if (nq + 8 * n >= D) continue; /* warp-uniform */
          const float *vr = vt + 8 * ks * ldv + 8 * n;
          uint32_t bh[2], bl[2];
          tf32_split(vr[0], &bh[0], &bl[0]);
          tf32_split(vr[4 * ldv], &bh[1], &bl[1]);
          mma_tf32(o[n], al, bh);
          mma_tf32(o[n], ah, bl);
          mma_tf32(o[n], ah, bh);
        }
      }
    }
  }
  if (PVTC) { /* the outputs through shared memory (the queries' space), back to one warp per token */
    __syncthreads(); /* every warp is done with the queries and the last tile */
    float *osm = (float *)qf;
    const int pmt = warp >> 2, nq = (warp & 3) * 32;
#pragma unroll
    for (int n = 0; n < 4; n++) {
      if (nq + 8 * n >= D) continue;
      float *orow = osm + (pmt * 16 + gid) * D + nq + 8 * n + 2 * tig;
      *(float2 *)orow = make_float2(o[n][0], o[n][1]);
      *(float2 *)(orow + 8 * D) = make_float2(o[n][2], o[n][3]);
    }
    __syncthreads();
    tc_gather_rows(osm, warp, D, o);
  }
  if (!live) return;
  gqa_write_rows<GG, TWO>(a, plan, t, ke - kb, K, o, S.l, S.R, S.sums);
}

/* k_attn_tc's shared memory: the queries (A fragments, hi), k_attn_gqa's stages (PVTC: padded
 * value rows) and weights, the two score tiles, the tile's key norms, (PVTC) the rescale factors
 * and the queries' lo parts. */
static size_t tc_smem(int D, int pvtc) {
  size_t ldv = pvtc ? (size_t)D + TC_VPAD : (size_t)D;
  size_t f = (size_t)GQA_WARPS * 4 * D + 2 * (2 * (size_t)TILE * (D + KPAD) + (size_t)TILE * ldv) +
             (size_t)GQA_WARPS * TILE * 4 + 2 * 64 * TC_LDS + TILE + 64 + (size_t)GQA_WARPS * 4 * D;
  return f * sizeof(float);
}

template <int TWO, int PVTC>
static int launch_tc(const kc_attn_args *a, int n_y, sq_err *e) {
  size_t smem = tc_smem(a->D, PVTC);
  dim3 grid((unsigned)((a->n_rows / 4 + GQA_WARPS - 1) / GQA_WARPS), (unsigned)n_y);
  cudaCheck(cudaFuncSetAttribute(k_attn_tc<TWO, PVTC>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  k_attn_tc<TWO, PVTC><<<grid, GQA_WARPS * 32, smem>>>(*a);
  launchCheck();
  return SQ_OK;
}

int kca_launch_tc(const kc_attn_args *a, int n_y, sq_err *e) {
  int pv = a->gqa != KC_ATTN_TC; /* tcpv, and wg's fallback */
  if (a->topk > 32) return pv ? launch_tc<1, 1>(a, n_y, e) : launch_tc<1, 0>(a, n_y, e);
  return pv ? launch_tc<0, 1>(a, n_y, e) : launch_tc<0, 0>(a, n_y, e);
}
