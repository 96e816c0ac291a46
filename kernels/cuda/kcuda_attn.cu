/* kcuda_attn: fused attention rows on the GPU. One warp owns one query row (k_rows) or one token
 * and its GQA group (k_attn_gqa); its lanes take 32 keys at a time (each lane a whole dot
 * product), an online softmax folds them in, and the lanes then own output dimensions for the
 * weighted sum of values. k_attn_tc and k_attn_wg (the default EVAL_ATTN for G = 4) keep
 * k_attn_gqa's layout but compute the scores and the weighted sums of a block's 64 rows on tensor
 * cores (mma.sync in 3xTF32; wgmma in 3xfp16).
 * No T x T matrix exists anywhere: per row the state is the running max,
 * the normaliser, the output values spread over the lanes, the logit sums and the top-k state.
 * Modes:
 *   REF_ATTN   reference (dump K, V): o_ref and the reference top-k list of every (token, query head)
 *              (k_ref_gqa in the group layout for G = 4, else k_rows)
 *   REF_RANDQ  reference outputs of the random queries (no mask, whole sequence)
 *   EVAL_ATTN  per (token, query head of the KV head) and plan: cos(o_ref, o^), top-k recall,
 *              and the sums of s^-s, s, s^, s^2, s*s^ over its causal keys
 *   EVAL_RANDQ per (sequence, random query) and plan: cos(o_ref, o^)
 * plus k_probs (a block per row, three passes: maxima, normalisers, products of the weights) and
 * k_probs_seq (the same passes, a block per sequence and a warp per row).
 * This file: k_rows, k_probs, k_probs_seq and the dispatch (kc_attn_launch); the group kernels
 * are in kcuda_attn_gqa.cu, kcuda_attn_tc.cu and kcuda_attn_wg.cu, what they share in
 * kcuda_attn_dev.cuh and kcuda_attn_tcb.cuh. */
#include "kcuda_attn_dev.cuh"

/* Grid: x = row blocks, y = KV head (reference modes) or plan (eval modes). Rows per y:
 *   REF_ATTN / EVAL_ATTN: n_tok * G, row = t*G + (g - h*G);   *_RANDQ: n_seq * n_randq. */
template <int MODE>
__global__ void __launch_bounds__(ROW_WARPS * 32) k_rows(kc_attn_args a) {
  extern __shared__ float4 sm4[];
  float *sm = (float *)sm4;
  const int D = a.D, ldk = D + KPAD;
  float *qs_all = sm;                              /* [ROW_WARPS][D] */
  float *tk = qs_all + ROW_WARPS * D;              /* [TILE][ldk] keys the scores use */
  float *tr = tk + TILE * ldk;                     /* [TILE][ldk] reference keys (EVAL_ATTN) */
  float *tv = tr + (MODE == KC_EVAL_ATTN ? TILE * ldk : 0); /* [TILE][D] values */
  __shared__ int64_t blk_kb[ROW_WARPS], blk_ke[ROW_WARPS];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int64_t row = (int64_t)blockIdx.x * ROW_WARPS + warp;
  const int ref_mode = MODE == KC_REF_ATTN || MODE == KC_REF_RANDQ;
  int plan = ref_mode ? 0 : blockIdx.y, h_blk = ref_mode ? blockIdx.y : a.head;
  int live = row < a.n_rows;
  const float *q = NULL;
  int64_t kb = 0, ke = 0, t = 0;
  int g = 0;
  if (live) row_coords<MODE>(a, row, h_blk, &q, &kb, &ke, &t, &g);
  float *qs = qs_all + warp * D;
  if (live)
    for (int j = lane; j < D; j += 32) qs[j] = q[j];
  if (lane == 0) {
    blk_kb[warp] = live ? kb : INT64_MAX;
    blk_ke[warp] = live ? ke : INT64_MIN;
  }
  __syncthreads();
  int64_t KB = INT64_MAX, KE = INT64_MIN;
  for (int w = 0; w < ROW_WARPS; w++) {
    KB = blk_kb[w] < KB ? blk_kb[w] : KB;
    KE = blk_ke[w] > KE ? blk_ke[w] : KE;
  }
  const float *Kh, *V, *Kref = NULL;
  int64_t kh_stride, kref_stride = (int64_t)a.Hkv * D;
  if (ref_mode) {
    Kh = a.k + (int64_t)h_blk * D;
    V = a.v + (int64_t)h_blk * D;
    kh_stride = kref_stride;
  } else {
    Kh = a.keff + plan * a.plan_stride;
    V = a.vhat + plan * a.plan_stride;
    kh_stride = D;
    if (MODE == KC_EVAL_ATTN) Kref = a.k + (int64_t)a.head * D;
  }
  const float c = 1.0f / sqrtf((float)D);
  float o[NDL_MAX];
#pragma unroll
  for (int i = 0; i < NDL_MAX; i++) o[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  double sb = 0, ss_ = 0, ssh = 0, s2 = 0, sxh = 0;
  topk_list TL; /* REF_ATTN: the reference top-k list */
  topk_init(&TL);
  rank_slots R;  /* EVAL_ATTN: the reference keys' ranks in the plan's order */
  const int two = a.topk > 32;
  if (MODE == KC_EVAL_ATTN && live) {
    const int32_t *ref = a.topk_ref + (t * a.Hq + g) * a.topk;
    R.r0 = lane < a.topk ? ref[lane] : -1;
    R.r1 = lane + 32 < a.topk ? ref[lane + 32] : -1;
    /* dot_sm is the loop's own chain for s^, so a reference key's s^ here is bit-identical */
    R.v0 = R.r0 >= 0 ? dot_sm(qs, Kh + (kb + R.r0) * kh_stride, D) : INFINITY;
    R.v1 = R.r1 >= 0 ? dot_sm(qs, Kh + (kb + R.r1) * kh_stride, D) : INFINITY;
    R.c0 = R.r0 >= 0 ? 0 : a.topk;
    R.c1 = R.r1 >= 0 ? 0 : a.topk;
    rank_set_thr(&R, a.topk, two);
  }
  for (int64_t j0 = KB; j0 < KE; j0 += TILE) {
    const int nt = tile_len(KE, j0);
    __syncthreads(); /* the previous tile is no longer read */
    load_tile(tk, ldk, Kh, kh_stride, j0, nt, D);
    if (MODE == KC_EVAL_ATTN) load_tile(tr, ldk, Kref, kref_stride, j0, nt, D);
    load_tile(tv, D, V, ref_mode ? kref_stride : D, j0, nt, D);
    __syncthreads();
    if (!live || j0 + nt <= kb || j0 >= ke) continue; /* warp-uniform */
    int64_t j = j0 + lane;
    int valid = lane < nt && j >= kb && j < ke;
    float sh = -INFINITY, sr = 0.0f;
    if (valid) {
      sh = dot_sm(qs, tk + lane * ldk, D);
      if (MODE == KC_EVAL_ATTN) {
        sr = dot_sm(qs, tr + lane * ldk, D);
        sb += (double)sh - (double)sr;
        ss_ += sr;
        ssh += sh;
        s2 += (double)sr * sr;
        sxh += (double)sr * sh;
      }
    }
    float mnew = fmaxf(m, warp_max_f(sh));
    float alpha = expf((m - mnew) * c);
    float p = valid ? expf((sh - mnew) * c) : 0.0f;
    l = l * alpha + warp_sum_f(p);
#pragma unroll
    for (int i = 0; i < NDL_MAX; i++) o[i] *= alpha;
    for (int jj = 0; jj < nt; jj++) {
      float pj = __shfl_sync(0xffffffffu, p, jj);
      if (pj == 0.0f) continue; /* masked (warp-uniform) */
      const float *vr = tv + jj * D;
#pragma unroll
      for (int i = 0; i < NDL_MAX; i++)
        if (lane + 32 * i < D) o[i] = fmaf(pj, vr[lane + 32 * i], o[i]);
    }
    m = mnew;
    if (MODE == KC_REF_ATTN) {
      float tl = TL.cnt == a.topk ? topk_last(&TL, a.topk) : -INFINITY;
      topk_offer(&TL, a.topk, valid && (TL.cnt < a.topk || sh > tl), sh, (int)(j - kb));
    }
    if (MODE == KC_EVAL_ATTN) rank_offer(&R, a.topk, two, valid && sh >= R.thr, sh, (int)(j0 - kb));
  }
  if (!live) return;
  float inv = 1.0f / l;
  if (ref_mode) {
    int64_t orow = MODE == KC_REF_ATTN ? t * a.Hq + g : (int64_t)h_blk * a.n_seq * a.n_randq + row;
    float *out = a.o_out + orow * D;
#pragma unroll
    for (int i = 0; i < NDL_MAX; i++)
      if (lane + 32 * i < D) out[lane + 32 * i] = o[i] * inv;
    if (MODE == KC_REF_ATTN) {
      int32_t *tkp = a.topk_out + (t * a.Hq + g) * a.topk;
      if (lane < a.topk) tkp[lane] = TL.i0;
      if (lane + 32 < a.topk) tkp[lane + 32] = TL.i1;
    }
    return;
  }
  /* cos(o_ref, o^) */
  const float *oref = MODE == KC_EVAL_ATTN ? a.o_ref + (t * a.Hq + g) * D
                                           : a.randq_ref + (a.head * (int64_t)a.n_seq * a.n_randq + row) * D;
  double dot = 0, n1 = 0, n2 = 0;
#pragma unroll
  for (int i = 0; i < NDL_MAX; i++)
    if (lane + 32 * i < D) {
      double x = oref[lane + 32 * i], y = o[i] * inv;
      dot += x * y;
      n1 += x * x;
      n2 += y * y;
    }
  double cs = warp_cos(dot, n1, n2);
  double *out = a.rows_out + ((int64_t)plan * a.n_rows + row) * a.n_fields;
  if (MODE == KC_EVAL_RANDQ) {
    if (lane == 0) out[0] = cs;
    return;
  }
  /* top-k recall: reference keys whose rank in this plan's order is < K */
  int hits = rank_hits(&R, a.topk, two);
  sb = warp_sum_dd(sb);
  ss_ = warp_sum_dd(ss_);
  ssh = warp_sum_dd(ssh);
  s2 = warp_sum_dd(s2);
  sxh = warp_sum_dd(sxh);
  if (lane == 0) {
    int64_t avail = ke - kb;
    out[0] = cs;
    out[1] = (double)hits / (double)(avail < a.topk ? avail : a.topk);
    out[2] = sb;
    out[3] = ss_;
    out[4] = ssh;
    out[5] = s2;
    out[6] = sxh;
    out[7] = (double)avail;
  }
}

/* Block-wide max / sum (every thread gets the result); scr holds ROW_WARPS values. */
__device__ __forceinline__ float block_max_f(float v, float *scr) {
  v = warp_max_f(v);
  if ((threadIdx.x & 31) == 0) scr[threadIdx.x >> 5] = v;
  __syncthreads();
  v = scr[0];
  for (int w = 1; w < ROW_WARPS; w++) v = fmaxf(v, scr[w]);
  __syncthreads();
  return v;
}
__device__ __forceinline__ double block_sum_dd(double v, double *scr) {
  v = warp_sum_dd(v);
  if ((threadIdx.x & 31) == 0) scr[threadIdx.x >> 5] = v;
  __syncthreads();
  v = 0;
  for (int w = 0; w < ROW_WARPS; w++) v += scr[w];
  __syncthreads();
  return v;
}

/* probs rows: one block per (sequence, one of its last probs_last positions, query head of the
 * group); its ROW_WARPS warps split the row's keys (a row per warp left most SMs idle: probs has
 * only n_seq x probs_last x G rows). Three passes, like the CPU's two-pass softmax: maxima,
 * normalisers, products of the weights. Outputs <p, p^>, |p|^2, |p^|^2 (zeros for rows past a
 * short sequence's length). Rows of up to PROBS_CACHE keys keep their two scores, then their two
 * exponentials, in shared memory, so each score is computed once instead of three times (the
 * dot products were the kernel's time); the values and their order are the recomputing path's, so
 * longer rows, which recompute, give the same results. */
#ifndef PROBS_CACHE /* (a test build sets it small, to run the recomputing path on short rows) */
#define PROBS_CACHE 2048
#endif
__device__ __forceinline__ void probs_scores(const float *qs, const float *K, int64_t ks, const float *Kh, int D,
                                             int64_t j, float *s, float *sh) {
  *s = dotf(qs, K + j * ks, D);
  *sh = dotf(qs, Kh + j * D, D);
}
/* The passes' arithmetic, shared with k_probs_seq: a key's two weights before normalising (the
 * scores x, xh against the row's maxima), then its terms of <p, p^>, |p|^2 and |p^|^2. */
__device__ __forceinline__ float2 probs_exp(float x, float xh, float mx, float mh, float c) {
  return make_float2(expf((x - mx) * c), expf((xh - mh) * c));
}
__device__ __forceinline__ void probs_add(float2 ex, double sx, double shh, double *pd, double *pn, double *ph2) {
  const float p = (float)((double)ex.x / sx);
  const double ph = (double)ex.y / shh;
  *pd += ph * p;
  *pn += (double)p * p;
  *ph2 += ph * ph;
}
__global__ void __launch_bounds__(ROW_WARPS * 32) k_probs(kc_attn_args a) {
  extern __shared__ float qs[]; /* [D] */
  __shared__ float fscr[ROW_WARPS];
  __shared__ double dscr[ROW_WARPS];
  __shared__ float2 cache[PROBS_CACHE]; /* (s, s^), then (e, e^) of key kb + i */
  const int D = a.D, nth = ROW_WARPS * 32;
  int64_t row = blockIdx.x;
  int plan = blockIdx.y;
  double *out = a.rows_out + ((int64_t)plan * a.n_rows + row) * a.n_fields;
  int64_t s = row / ((int64_t)a.probs_last * a.G);
  int i = (int)((row / a.G) % a.probs_last), g = a.head * a.G + (int)(row % a.G);
  int64_t kb = a.seq_off[s], len = a.seq_off[s + 1] - kb, P = len < a.probs_last ? len : a.probs_last;
  if (i >= P) { /* block-uniform */
    if (threadIdx.x == 0) out[0] = out[1] = out[2] = 0.0;
    return;
  }
  int64_t t = kb + len - P + i, ke = t + 1;
  const int cached = ke - kb <= PROBS_CACHE; /* block-uniform */
  const float *q = a.q + (t * a.Hq + g) * D;
  for (int j = threadIdx.x; j < D; j += nth) qs[j] = q[j];
  __syncthreads();
  const float *K = a.k + (int64_t)a.head * D, *Kh = a.keff + plan * a.plan_stride;
  int64_t ks = (int64_t)a.Hkv * D;
  const float c = 1.0f / sqrtf((float)D);
  float mx = -INFINITY, mh = -INFINITY;
  for (int64_t j = kb + threadIdx.x; j < ke; j += nth) {
    float x, xh;
    probs_scores(qs, K, ks, Kh, D, j, &x, &xh);
    if (cached) cache[j - kb] = make_float2(x, xh);
    mx = fmaxf(mx, x);
    mh = fmaxf(mh, xh);
  }
  mx = block_max_f(mx, fscr);
  mh = block_max_f(mh, fscr);
  double sx = 0, shh = 0;
  for (int64_t j = kb + threadIdx.x; j < ke; j += nth) { /* (a thread reads back only its own keys) */
    float2 x;
    if (cached) x = cache[j - kb];
    else probs_scores(qs, K, ks, Kh, D, j, &x.x, &x.y);
    float2 ex = probs_exp(x.x, x.y, mx, mh, c);
    if (cached) cache[j - kb] = ex;
    sx += (double)ex.x;
    shh += (double)ex.y;
  }
  sx = block_sum_dd(sx, dscr);
  shh = block_sum_dd(shh, dscr);
  double pd = 0, pn = 0, ph2 = 0;
  for (int64_t j = kb + threadIdx.x; j < ke; j += nth) {
    float2 ex;
    if (cached) ex = cache[j - kb];
    else {
      float2 x;
      probs_scores(qs, K, ks, Kh, D, j, &x.x, &x.y);
      ex = probs_exp(x.x, x.y, mx, mh, c);
    }
    probs_add(ex, sx, shh, &pd, &pn, &ph2);
  }
  pd = block_sum_dd(pd, dscr);
  pn = block_sum_dd(pn, dscr);
  ph2 = block_sum_dd(ph2, dscr);
  if (threadIdx.x == 0) {
    out[0] = pd;
    out[1] = pn;
    out[2] = ph2;
  }
}

/* probs rows, a block per (sequence, plan) when the sequence's probs rows fit one block
 * (probs_last x G <= PROBS_SEQ_ROWS, D <= 128): warp r owns row r (position r / G of the last
 * probs_last, head r % G), and the block stages each tile of 32 keys (the dump's and the plan's
 * effective keys) once for all its rows, instead of every row's block reading every key from L2
 * (k_probs: 16 blocks per sequence read the same keys). The same three passes, each over all
 * tiles; lane = key; the scores are the fmaf chain of k_probs (dotf: fma4 in dimension order),
 * so every score and exponential is k_probs's; the row sums are summed in another order.
 * CACHE (the default; SQEXP_CUDA_PROBS=recompute turns it off; a.probs_cache = the layer's longest
 * sequence, when its rows' scores fit beside the stages): pass 0 keeps each key's two scores in
 * shared memory and passes 1 and 2 read them back instead of staging every tile and computing both
 * chains again -- each lane its own keys in the same order, so every sum is bit for bit the
 * uncached kernel's. At Mistral's 1,024-token sequences that is 128 KB of cache, 204 KB in all:
 * one block per SM instead of two, for a third of the chains and of the staging. */
#define PROBS_SEQ_ROWS 32
#define PROBS_SEQ_SMEM_MAX (227 * 1024) /* Hopper's largest dynamic shared memory per block */
template <int CACHE>
__global__ void k_probs_seq(kc_attn_args a) {
  extern __shared__ float4 sm4[];
  const int D = a.D, ldk = D + KPAD, D4 = D >> 2, R = a.probs_last * a.G, stage = 2 * TILE * ldk;
  float *qs = (float *)sm4, *stages = qs + R * D; /* [R][D] queries; 2 x (k, keff) [TILE][ldk] */
  float2 *cache = (float2 *)(stages + 2 * stage);  /* CACHE: [R][a.probs_cache] (s, s^) of key kb + i */
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, plan = blockIdx.y;
  const int64_t s = blockIdx.x, kb = a.seq_off[s], len = a.seq_off[s + 1] - kb;
  const int64_t P = len < a.probs_last ? len : a.probs_last;
  const int i = warp / a.G, live = i < P;
  const int64_t t = kb + len - P + i, ke = live ? t + 1 : kb, KE = kb + len;
  double *out = a.rows_out + ((int64_t)plan * a.n_rows + s * R + warp) * a.n_fields;
  if (live)
    for (int d = lane; d < D; d += 32) qs[warp * D + d] = a.q[(t * a.Hq + a.head * a.G + warp % a.G) * D + d];
  const float *K = a.k + (int64_t)a.head * D, *Kh = a.keff + plan * a.plan_stride;
  const int64_t kst = (int64_t)a.Hkv * D, ntile = tile_count(kb, KE);
  auto stage_keys = [=](float *dst, int64_t j0, int n) {
    load_tile_async(dst, ldk, K, kst, j0, n, D);
    load_tile_async(dst + TILE * ldk, ldk, Kh, D, j0, n, D);
  };
  const float4 *q4 = (const float4 *)(qs + warp * D);
  const float c = 1.0f / sqrtf((float)D);
  float mx = -INFINITY, mh = -INFINITY;
  double sx = 0, shh = 0, pd = 0, pn = 0, ph2 = 0;
  for (int pass = 0; pass < 3; pass++) { /* maxima, normalisers, products of the weights */
    if (CACHE && pass > 0) { /* the scores pass 0 kept, each lane its keys in the same order */
      for (int64_t j = kb + lane; live && j < ke; j += TILE) {
        const float2 xx = cache[(int64_t)warp * a.probs_cache + (j - kb)];
        const float2 ex = probs_exp(xx.x, xx.y, mx, mh, c);
        if (pass == 1) sx += (double)ex.x, shh += (double)ex.y;
        else probs_add(ex, sx, shh, &pd, &pn, &ph2);
      }
      if (pass == 1) sx = warp_sum_dd(sx), shh = warp_sum_dd(shh);
      continue;
    }
    tiles_start(ntile, kb, KE, stages, stage_keys); /* (the previous pass ended on a barrier) */
    for (int64_t it = 0; it < ntile; it++) {
      const int64_t j0 = kb + it * TILE, j = j0 + lane;
      tiles_next(it, ntile, j0, KE, stages, stage, stage_keys);
      if (!live || j0 >= ke) continue; /* warp-uniform */
      if (j >= ke) continue;
      const float *tk = stages + (it & 1) * stage;
      const float4 *kr = (const float4 *)(tk + lane * ldk), *hr = (const float4 *)(tk + (TILE + lane) * ldk);
      float x = 0.0f, xh = 0.0f;
#pragma unroll 4
      for (int d = 0; d < D4; d++) {
        float4 qq = q4[d];
        x = fma4(qq, kr[d], x);
        xh = fma4(qq, hr[d], xh);
      }
      if (pass == 0) {
        mx = fmaxf(mx, x);
        mh = fmaxf(mh, xh);
        if (CACHE) cache[(int64_t)warp * a.probs_cache + (j - kb)] = make_float2(x, xh);
        continue;
      }
      const float2 ex = probs_exp(x, xh, mx, mh, c);
      if (pass == 1) {
        sx += (double)ex.x;
        shh += (double)ex.y;
        continue;
      }
      probs_add(ex, sx, shh, &pd, &pn, &ph2);
    }
    if (pass == 0) mx = warp_max_f(mx), mh = warp_max_f(mh);
    if (pass == 1) sx = warp_sum_dd(sx), shh = warp_sum_dd(shh);
    __syncthreads(); /* every warp is done with the stages before the next pass refills them */
  }
  pd = warp_sum_dd(pd), pn = warp_sum_dd(pn), ph2 = warp_sum_dd(ph2);
  if (lane == 0) {
    out[0] = live ? pd : 0.0;
    out[1] = live ? pn : 0.0;
    out[2] = live ? ph2 : 0.0;
  }
}

static int launch_probs(const kc_attn_args *a, int n_y, sq_err *e) {
  const int R = a->probs_last * a->G;
  if (R <= PROBS_SEQ_ROWS && a->D <= 128 && (int64_t)a->n_seq * R == a->n_rows) {
    const size_t smem = ((size_t)R * a->D + 2 * 2 * (size_t)TILE * (a->D + KPAD)) * sizeof(float);
    const size_t cache = (size_t)R * (size_t)(a->probs_cache > 0 ? a->probs_cache : 0) * sizeof(float2);
    if (a->probs_cache > 0 && smem + cache <= PROBS_SEQ_SMEM_MAX) { /* (SQEXP_CUDA_PROBS unset or not "recompute") */
      cudaCheck(cudaFuncSetAttribute(k_probs_seq<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(smem + cache)));
      k_probs_seq<1><<<dim3((unsigned)a->n_seq, (unsigned)n_y), R * 32, smem + cache>>>(*a);
    } else {
      cudaCheck(cudaFuncSetAttribute(k_probs_seq<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
      k_probs_seq<0><<<dim3((unsigned)a->n_seq, (unsigned)n_y), R * 32, smem>>>(*a);
    }
  } else {
    k_probs<<<dim3((unsigned)a->n_rows, (unsigned)n_y), ROW_WARPS * 32, (size_t)a->D * sizeof(float)>>>(*a);
  }
  launchCheck();
  return SQ_OK;
}

static size_t rows_smem(int mode, int D) {
  size_t f = (size_t)ROW_WARPS * D + (size_t)TILE * (D + KPAD) + (size_t)TILE * D;
  if (mode == KC_EVAL_ATTN) f += (size_t)TILE * (D + KPAD);
  return f * sizeof(float);
}

template <int MODE>
static int launch_rows(const kc_attn_args *a, dim3 grid, sq_err *e) {
  size_t smem = rows_smem(MODE, a->D);
  cudaCheck(cudaFuncSetAttribute(k_rows<MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  k_rows<MODE><<<grid, ROW_WARPS * 32, smem>>>(*a);
  launchCheck();
  return SQ_OK;
}

#ifdef SQEXP_CUDA_SM90A
/* k_attn_wg, checked: 1 when it computed every row, 0 when an operand exceeded fp16's range (the
 * rows are then incomplete and the caller recomputes them). */
static int launch_wg_checked(const kc_attn_args *a, int n_y, int *done, sq_err *e) {
  int over = 0;
  cudaCheck(cudaMemsetAsync(a->range_flag, 0, sizeof(int)));
  tryCheck(kca_launch_wg(a, n_y, e));
  cudaCheck(cudaMemcpy(&over, a->range_flag, sizeof over, cudaMemcpyDeviceToHost));
  *done = !over;
  return SQ_OK;
}
#endif

static int launch_eval_attn(const kc_attn_args *a, int n_y, dim3 grid, sq_err *e) {
#ifdef SQEXP_CUDA_SM90A
  if (a->gqa == KC_ATTN_WG && kc_wg_shape(a->G, a->D) && a->range_flag && a->wg_scratch && a->lg_a) {
    int done = 0;
    tryCheck(launch_wg_checked(a, n_y, &done, e));
    if (done) return SQ_OK;
  }
#endif
  if (a->gqa >= KC_ATTN_TC && kc_tc_shape(a->G, a->D)) return kca_launch_tc(a, n_y, e);
  if (a->gqa != KC_ATTN_ROWS && kc_gqa_shape(a->G, a->D)) return kca_launch_gqa(a, n_y, e);
  return launch_rows<KC_EVAL_ATTN>(a, grid, e);
}

int kc_attn_launch(int mode, const kc_attn_args *a, int n_y, sq_err *e) {
  if (a->n_rows <= 0) return SQ_OK;
  if (a->D % 4)
    return sq_fail(e, SQ_EINPUT, "cuda backend: head_dim %d is not a multiple of 4", a->D);
  dim3 grid((unsigned)((a->n_rows + ROW_WARPS - 1) / ROW_WARPS), (unsigned)n_y);
  switch (mode) {
  case KC_REF_ATTN:
#ifdef SQEXP_CUDA_SM90A
    if (a->gqa == KC_ATTN_WG && kc_wg_shape(a->G, a->D) && a->topk <= 64 && a->range_flag && a->wg_scratch) {
      int done = 0;
      tryCheck(kca_launch_ref_wg(a, n_y, &done, e));
      if (done) return SQ_OK;
    }
#endif
    if (a->gqa != KC_ATTN_ROWS && kc_gqa_shape(a->G, a->D) && a->topk <= 64) return kca_launch_ref_gqa(a, n_y, e);
    return launch_rows<KC_REF_ATTN>(a, grid, e);
  case KC_REF_RANDQ: return launch_rows<KC_REF_RANDQ>(a, grid, e);
  case KC_EVAL_ATTN: return launch_eval_attn(a, n_y, grid, e);
  case KC_EVAL_RANDQ: return launch_rows<KC_EVAL_RANDQ>(a, grid, e);
  case KC_EVAL_PROBS: return launch_probs(a, n_y, e);
  default: return sq_fail(e, SQ_EFAIL, "%s:%d: unknown attention mode %d", __FILE__, __LINE__, mode);
  }
}