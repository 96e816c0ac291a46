/* kcuda_attn_dev: what the attention kernels share (kcuda_attn.cu: k_rows, k_probs and the
 * dispatch; kcuda_attn_gqa.cu: the group-per-warp kernels k_attn_gqa and k_ref_gqa;
 * kcuda_attn_tc.cu: k_attn_tc on tensor cores): warp reductions, the reference top-k list, the
 * rank slots of top-k recall, cp.async tile staging and the group kernels' per-token steps.
 * Device functions only (each translation unit inlines its own copies), plus the launchers the
 * dispatch calls. */
#ifndef SQEXP_KCUDA_ATTN_DEV_CUH
#define SQEXP_KCUDA_ATTN_DEV_CUH
#include <math.h>
#include "kcuda_attn.cuh"

#define ROW_WARPS 8
#define NDL_MAX (PLAN_MAX_D / 32)

__device__ __forceinline__ float warp_max_f(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum_f(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum_dd(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
/* cos(x, y) from this lane's parts of <x, y>, |x|^2, |y|^2 (summed over the warp): 1 when both
 * vectors are 0, 0 when one is. */
__device__ __forceinline__ double warp_cos(double dot, double n1, double n2) {
  dot = warp_sum_dd(dot);
  n1 = warp_sum_dd(n1);
  n2 = warp_sum_dd(n2);
  return (n1 == 0.0 && n2 == 0.0) ? 1.0 : (n1 == 0.0 || n2 == 0.0) ? 0.0 : dot / sqrt(n1 * n2);
}

/* s + x . y, one fmaf per component in order x, y, z, w: the fp32 chain every score uses (the
 * CPU's kcpu_dot), so that scores from different kernels are bit-identical. */
__device__ __forceinline__ float fma4(float4 x, float4 y, float s) {
  s = fmaf(x.x, y.x, s);
  s = fmaf(x.y, y.y, s);
  s = fmaf(x.z, y.z, s);
  return fmaf(x.w, y.w, s);
}

/* q (shared memory) . row (global), float accumulation as the CPU's kcpu_dot. */
__device__ __forceinline__ float dotf(const float *__restrict__ q, const float *__restrict__ row, int D) {
  float s = 0.0f;
  if ((D & 3) == 0) {
    const float4 *a = (const float4 *)q, *b = (const float4 *)row;
#pragma unroll 4
    for (int j = 0; j < (D >> 2); j++) {
      float4 x = a[j], y = __ldg(b + j);
      s = fma4(x, y, s);
    }
  } else {
    for (int j = 0; j < D; j++) s = fmaf(q[j], row[j], s);
  }
  return s;
}

__device__ __forceinline__ int64_t seq_of(const int64_t *off, int n_seq, int64_t t) {
  int lo = 0, hi = n_seq - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (off[mid] <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

/* A top-k list of (value, index) kept sorted (value descending, index ascending on ties) across
 * the warp: slot i lives in lane i % 32, half i / 32. Keys arrive in increasing index order. */
typedef struct {
  float v0, v1;
  int i0, i1;
  int cnt;
} topk_list;

__device__ __forceinline__ void topk_init(topk_list *L) {
  L->v0 = L->v1 = -INFINITY;
  L->i0 = L->i1 = -1;
  L->cnt = 0;
}

__device__ __forceinline__ float topk_last(const topk_list *L, int K) {
  int s = K - 1;
  float a = __shfl_sync(0xffffffffu, L->v0, s & 31), b = __shfl_sync(0xffffffffu, L->v1, s & 31);
  return s < 32 ? a : b;
}

/* Offer this lane's (v, j) when `want`; candidates enter in lane (= index) order. */
__device__ __forceinline__ void topk_offer(topk_list *L, int K, int want, float v, int j) {
  int lane = threadIdx.x & 31;
  uint32_t mask = __ballot_sync(0xffffffffu, want);
  while (mask) {
    int src = __ffs(mask) - 1;
    mask &= mask - 1;
    float cv = __shfl_sync(0xffffffffu, v, src);
    int cj = __shfl_sync(0xffffffffu, j, src);
    if (L->cnt == K && !(cv > topk_last(L, K))) continue;
    int s0 = lane, s1 = lane + 32;
    int ge = (s0 < L->cnt && L->v0 >= cv) + (s1 < L->cnt && L->v1 >= cv);
    int pos = ge;
    for (int o = 16; o > 0; o >>= 1) pos += __shfl_xor_sync(0xffffffffu, pos, o);
    /* shift slots >= pos up by one */
    float up0 = __shfl_up_sync(0xffffffffu, L->v0, 1), up1 = __shfl_up_sync(0xffffffffu, L->v1, 1);
    int ui0 = __shfl_up_sync(0xffffffffu, L->i0, 1), ui1 = __shfl_up_sync(0xffffffffu, L->i1, 1);
    float top0 = __shfl_sync(0xffffffffu, L->v0, 31);
    int topi0 = __shfl_sync(0xffffffffu, L->i0, 31);
    if (lane == 0) {
      up1 = top0;
      ui1 = topi0;
    }
    if (s0 > pos && s0 < K) { L->v0 = up0; L->i0 = ui0; }
    if (s1 > pos && s1 < K) { L->v1 = up1; L->i1 = ui1; }
    if (s0 == pos) { L->v0 = cv; L->i0 = cj; }
    if (s1 == pos) { L->v1 = cv; L->i1 = cj; }
    L->cnt = L->cnt < K ? L->cnt + 1 : K;
  }
}

__device__ __forceinline__ float warp_min_f(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* Top-k recall without the plan's own top-k list (EVAL_ATTN). The compressed list is the first K
 * keys in the order (s^ descending, lower index first on ties) -- topk_offer's and kcpu_topk's
 * order -- so reference key r is in it iff
 *   rank(r) = #{causal keys j != r : s^_j > s^_r, or s^_j == s^_r and j < r} < K.
 * Each reference slot (slot i in lane i % 32, half i / 32, as in topk_list) holds s^_r, computed
 * before the key loop (k_attn_wg: before the kernel, k_wg_slot_scores) with exactly the fmaf chain
 * the loop uses for s^_j (so ties are ties), and counts the keys that come before r. A slot whose
 * count reached K is out for good, so only keys with s^_j >= thr = min s^ over the slots still in
 * can change a count: those are ballotted and broadcast one at a time. hits = slots still in at the
 * end of the row. */
typedef struct {
  float v0, v1;   /* s^ of the slot's reference key (+inf for an empty slot) */
  int r0, r1;     /* sequence-local index of the reference key, -1 = empty */
  int c0, c1;     /* keys seen that come before it in the compressed order (K for an empty slot) */
  float thr;      /* warp-uniform: min v over the slots with c < K (+inf when none) */
} rank_slots;

/* two: K > 32 (the second half of the slots is in use); a constant in k_attn_gqa. */
__device__ __forceinline__ void rank_set_thr(rank_slots *R, int K, int two) {
  float m0 = R->c0 < K ? R->v0 : INFINITY, m1 = two && R->c1 < K ? R->v1 : INFINITY;
  R->thr = warp_min_f(fminf(m0, m1));
}

/* Offer this lane's key (s^ v, sequence-local index base + lane) when `cand`. */
__device__ __forceinline__ void rank_offer(rank_slots *R, int K, int two, int cand, float v, int base) {
  uint32_t mask = __ballot_sync(0xffffffffu, cand);
  if (!mask) return;
  do {
    int src = __ffs(mask) - 1;
    mask &= mask - 1;
    float cv = __shfl_sync(0xffffffffu, v, src);
    int cj = base + src;
    R->c0 += cj != R->r0 && (cv > R->v0 || (cv == R->v0 && cj < R->r0));
    if (two) R->c1 += cj != R->r1 && (cv > R->v1 || (cv == R->v1 && cj < R->r1));
  } while (mask);
  rank_set_thr(R, K, two);
}

__device__ __forceinline__ int rank_hits(const rank_slots *R, int K, int two) {
  int h = __popc(__ballot_sync(0xffffffffu, R->c0 < K));
  return two ? h + __popc(__ballot_sync(0xffffffffu, R->c1 < K)) : h;
}

/* cp.async: 16-byte copies global -> shared memory that skip the registers (and L1), so the next
 * tile's loads are in flight while the current one is computed. */
__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
  unsigned s = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all(void) { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
/* Wait until at most N of this thread's commit groups are still in flight. */
template <int N>
__device__ __forceinline__ void cp_async_wait_group(void) {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* Key tiles: TILE keys of the block's union key range are staged in shared memory once per block
 * (coalesced 16-byte loads) and read by all its warps; a lane then reads its key's row from shared
 * memory (rows padded by 4 floats: conflict-free float4 reads). */
#define TILE 32
#define KPAD 4

__device__ __forceinline__ float dot_sm(const float *__restrict__ q, const float *__restrict__ row, int D) {
  float s = 0.0f;
  const float4 *a = (const float4 *)q, *b = (const float4 *)row;
#pragma unroll 8
  for (int j = 0; j < (D >> 2); j++) {
    float4 x = a[j], y = b[j];
    s = fma4(x, y, s);
  }
  return s;
}

/* The block's threads over the n * per_row float4 copies of n rows: copy(row, float4 of the row).
 * When per_row is a power of two (D = 64, 128) the index splits with a shift and a mask, not a
 * division per copy. */
template <class F>
__device__ __forceinline__ void tile_copies(int n, int per_row, F copy) {
  if (!(per_row & (per_row - 1))) {
    const int sh = __ffs(per_row) - 1;
    for (int i = threadIdx.x; i < n * per_row; i += blockDim.x) copy(i >> sh, i & (per_row - 1));
    return;
  }
  for (int i = threadIdx.x; i < n * per_row; i += blockDim.x) {
    const int r = i / per_row;
    copy(r, i - r * per_row);
  }
}

/* Copy rows j0..j0+n-1 (row j at src + j*stride) into dst [TILE][ld] (D floats per row). */
__device__ __forceinline__ void load_tile(float *dst, int ld, const float *src, int64_t stride, int64_t j0,
                                          int n, int D) {
  tile_copies(n, D >> 2, [&](int r, int c) {
    *(float4 *)(dst + r * ld + 4 * c) = __ldg((const float4 *)(src + (j0 + r) * stride) + c);
  });
}

/* load_tile with cp.async (the caller commits and waits). */
__device__ __forceinline__ void load_tile_async(float *dst, int ld, const float *src, int64_t stride, int64_t j0,
                                                int n, int D) {
  tile_copies(n, D >> 2, [&](int r, int c) { cp_async16(dst + r * ld + 4 * c, src + (j0 + r) * stride + 4 * c); });
}

/* What an eval stage reads: the plan's effective keys and decoded values (pitch D), the dump's
 * keys of the evaluated KV head (pitch Hkv D). */
struct eval_src {
  const float *Kh, *V, *Kref;
  int64_t kref_stride;
};
__device__ __forceinline__ eval_src eval_src_of(const kc_attn_args &a, int plan, int D) {
  eval_src s;
  s.Kh = a.keff + plan * a.plan_stride;
  s.V = a.vhat + plan * a.plan_stride;
  s.Kref = a.k + (int64_t)a.head * D;
  s.kref_stride = (int64_t)a.Hkv * D;
  return s;
}

/* An eval stage: keys j0..j0+n-1 of the plan's effective keys (pitch ldk), the dump's keys (pitch
 * ldk) and the plan's decoded values (pitch ldv), cp.async into dst (keff, k, v back to back). */
__device__ __forceinline__ void eval_stage_tile(float *dst, int ldk, int ldv, const eval_src &s, int64_t j0, int n,
                                                int D) {
  load_tile_async(dst, ldk, s.Kh, D, j0, n, D);
  load_tile_async(dst + TILE * ldk, ldk, s.Kref, s.kref_stride, j0, n, D);
  load_tile_async(dst + 2 * TILE * ldk, ldv, s.V, D, j0, n, D);
}

/* The double-buffered walk over the key tiles of [KB, KE) that the group kernels share. stage(dst,
 * j0, n) issues the cp.async copies of keys j0..j0+n-1 into one stage (stage_floats floats; two
 * stages back to back at stages). */
__device__ __forceinline__ int tile_len(int64_t KE, int64_t j0) { return KE - j0 < TILE ? (int)(KE - j0) : TILE; }
__device__ __forceinline__ int64_t tile_count(int64_t KB, int64_t KE) {
  return KE > KB ? (KE - KB + TILE - 1) / TILE : 0;
}
/* Tile 0 into the first stage; the caller may work while it is in flight. */
template <class F>
__device__ __forceinline__ void tiles_start(int64_t ntile, int64_t KB, int64_t KE, float *stages, F stage) {
  if (ntile > 0) {
    stage(stages, KB, tile_len(KE, KB));
    cp_async_commit();
  }
}
/* Step it (tile it starts at key j0): tile it has landed and every warp is done with tile it-1's
 * stage (one barrier), then tile it+1 goes into that stage. Returns tile it's number of keys. */
template <class F>
__device__ __forceinline__ int tiles_next(int64_t it, int64_t ntile, int64_t j0, int64_t KE, float *stages,
                                          int stage_floats, F stage) {
  int nt = tile_len(KE, j0);
  cp_async_wait_all();
  __syncthreads();
  if (it + 1 < ntile) {
    int64_t j1 = j0 + TILE;
    int n1 = tile_len(KE, j1);
    float *nx = stages + ((it + 1) & 1) * stage_floats;
    stage(nx, j1, n1);
    cp_async_commit();
  }
  return nt;
}

/* Row coordinates of a mode: the query, the key range [kb, ke), the KV head, (t, g) for outputs. */
template <int MODE>
__device__ __forceinline__ void row_coords(const kc_attn_args &a, int64_t row, int h_blk, const float **q,
                                           int64_t *kb, int64_t *ke, int64_t *t, int *g) {
  if (MODE == KC_REF_ATTN || MODE == KC_EVAL_ATTN) {
    int h = MODE == KC_REF_ATTN ? h_blk : a.head;
    *t = row / a.G;
    *g = h * a.G + (int)(row % a.G);
    int64_t s = seq_of(a.seq_off, a.n_seq, *t);
    *kb = a.seq_off[s];
    *ke = *t + 1;
    *q = a.q + (*t * a.Hq + *g) * a.D;
  } else {
    int h = MODE == KC_REF_RANDQ ? h_blk : a.head;
    int64_t slot = (int64_t)h * a.n_seq * a.n_randq + row;
    int64_t s = row / a.n_randq;
    *kb = a.seq_off[s];
    *ke = a.seq_off[s + 1];
    *q = a.randq + slot * a.D;
    *g = h * a.G;
    *t = slot;
  }
}

#define GQA_NDL 4
#define GQA_WARPS 16 /* tokens per block: 141 KB of shared memory at D = 128, one block per SM */
#define GQA_MINB 1

/* A group kernel's warp: the GG query heads of KV head h for token t (adjacent rows of q) into
 * qs [GG][D]. */
template <int GG>
__device__ __forceinline__ void gqa_load_queries(const kc_attn_args &a, int64_t t, int h, int D, int lane, float *qs) {
  for (int gi = 0; gi < GG; gi++) {
    const float *q = a.q + (t * a.Hq + h * GG + gi) * D;
    for (int j = lane; j < D; j += 32) qs[gi * D + j] = q[j];
  }
}

/* The group kernels' key range: the union of the block's W tokens' causal ranges [kb, ke) (dead
 * warps add nothing); one barrier. */
template <int W>
__device__ __forceinline__ void gqa_union_range(int live, int64_t kb, int64_t ke, int64_t *blk_kb, int64_t *blk_ke,
                                                int64_t *KB, int64_t *KE) {
  const int warp = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) {
    blk_kb[warp] = live ? kb : INT64_MAX;
    blk_ke[warp] = live ? ke : INT64_MIN;
  }
  __syncthreads();
  *KB = INT64_MAX, *KE = INT64_MIN;
  for (int w = 0; w < W; w++) {
    *KB = blk_kb[w] < *KB ? blk_kb[w] : *KB;
    *KE = blk_ke[w] > *KE ? blk_ke[w] : *KE;
  }
}

/* A token's 4 heads before the first key: no max yet, empty normalisers and outputs. */
__device__ __forceinline__ void gqa_state_init(float (&o)[4][GQA_NDL], float (&m)[4], float (&l)[4]) {
#pragma unroll
  for (int gi = 0; gi < 4; gi++) {
    m[gi] = -INFINITY;
    l[gi] = 0.0f;
#pragma unroll
    for (int i = 0; i < GQA_NDL; i++) o[gi][i] = 0.0f;
  }
}

/* One tile of the online softmax for the 4 heads (lane = key, sc its scores): the running max
 * moves only when a key of the tile beats it (one vote; otherwise the tile's max would leave it
 * unchanged and the rescale factor be exactly 1); each lane keeps its part of the normaliser
 * (summed over the warp at the end). p: this lane's weights. */
__device__ __forceinline__ void gqa_softmax_step(const float (&sc)[4], int valid, float c, float (&m)[4],
                                                 float (&l)[4], float (&o)[4][GQA_NDL], float (&p)[4]) {
#pragma unroll
  for (int gi = 0; gi < 4; gi++) {
    if (__any_sync(0xffffffffu, sc[gi] > m[gi])) {
      float mnew = fmaxf(m[gi], warp_max_f(sc[gi]));
      float alpha = expf((m[gi] - mnew) * c);
      l[gi] *= alpha;
#pragma unroll
      for (int i = 0; i < GQA_NDL; i++) o[gi][i] *= alpha;
      m[gi] = mnew;
    }
    p[gi] = valid ? expf((sc[gi] - m[gi]) * c) : 0.0f;
    l[gi] += p[gi];
  }
}

/* The weighted sum of a tile's values for the 4 heads of a token: the weights p (lane = key) go to
 * the warp's ps as one float4 per key, then lane accumulates its 4 output dimensions over the
 * tile's causal keys lo..hi-1 (one contiguous range; masked keys add nothing): per key one
 * broadcast float4 of weights and one float4 of the value row (pitch ldv), 16 FMAs. */
__device__ __forceinline__ void gqa_weighted_sum(float (&o)[4][GQA_NDL], const float (&p)[4], float4 *ps,
                                                 const float *tv, int ldv, int lo, int hi, int D) {
  const int lane = threadIdx.x & 31;
  ps[lane] = make_float4(p[0], p[1], p[2], p[3]);
  __syncwarp();
  if (4 * lane < D) {
    const float *vb = tv + 4 * lane;
#pragma unroll 4
    for (int jj = lo; jj < hi; jj++) {
      float4 w = ps[jj], vv = *(const float4 *)(vb + jj * ldv);
      const float wg[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int g = 0; g < 4; g++) {
        o[g][0] = fmaf(wg[g], vv.x, o[g][0]);
        o[g][1] = fmaf(wg[g], vv.y, o[g][1]);
        o[g][2] = fmaf(wg[g], vv.z, o[g][2]);
        o[g][3] = fmaf(wg[g], vv.w, o[g][3]);
      }
    }
  }
  __syncwarp(); /* ps is rewritten by the next tile */
}

/* The group kernels' end: per query head gi of token t, the cosine of the plan's output (o: this
 * lane's GQA_NDL dimensions, l: its part of the normaliser) with the reference output, the top-k
 * recall from the rank slots, and in gi = 0's row the group's pair sums (sb, s, s^, s^2, s s^);
 * with EXT the sums are not written there (k_wg_split wrote them, kcuda_logit) and sums unused. */
template <int GG, int TWO, int EXT = 0>
__device__ __forceinline__ void gqa_write_rows(const kc_attn_args &a, int plan, int64_t t, int64_t avail, int K,
                                               const float (&o)[GG][GQA_NDL], const float (&l)[GG],
                                               const rank_slots (&R)[GG], double sums[5]) {
  const int D = a.D, lane = threadIdx.x & 31;
  if (!EXT)
    for (int i = 0; i < 5; i++) sums[i] = warp_sum_dd(sums[i]);
#pragma unroll
  for (int gi = 0; gi < GG; gi++) {
    int g = a.head * GG + gi;
    float inv = 1.0f / warp_sum_f(l[gi]);
    const float *oref = a.o_ref + (t * a.Hq + g) * D;
    double dot = 0, n1 = 0, n2 = 0;
    if (4 * lane < D) {
#pragma unroll
      for (int i = 0; i < GQA_NDL; i++) {
        double x = oref[4 * lane + i], y = o[gi][i] * inv;
        dot += x * y;
        n1 += x * x;
        n2 += y * y;
      }
    }
    double cs = warp_cos(dot, n1, n2);
    int hits = rank_hits(&R[gi], K, TWO);
    double *out = a.rows_out + ((int64_t)plan * a.n_rows + t * GG + gi) * a.n_fields;
    if (lane == 0) {
      out[0] = cs;
      out[1] = (double)hits / (double)(avail < K ? avail : K);
      if (!EXT || gi != 0)
        for (int i = 0; i < 5; i++) out[2 + i] = gi == 0 ? sums[i] : 0.0;
      out[7] = gi == 0 ? (double)(avail * GG) : 0.0;
    }
  }
}

/* s^ of one key row (global memory): the key loop's chain, operand for operand. */
__device__ __forceinline__ float gqa_score(const float4 *q4, const float4 *kr, int D4) {
  float sh = 0.0f;
  for (int jd = 0; jd < D4; jd++) {
    float4 x = q4[jd], y = __ldg(kr + jd);
    sh = fma4(x, y, sh);
  }
  return sh;
}

/* gqa_score with the query in global memory too: the same chain, operand for operand. */
__device__ __forceinline__ float gqa_score_g(const float4 *q4, const float4 *kr, int D4) {
  float sh = 0.0f;
  for (int jd = 0; jd < D4; jd++) {
    float4 x = __ldg(q4 + jd), y = __ldg(kr + jd);
    sh = fma4(x, y, sh);
  }
  return sh;
}

/* The end of a rank-slot initialisation: without TWO the second half empty, then the thresholds. */
template <int GG, int TWO>
__device__ __forceinline__ void rank_slots_close(rank_slots (&R)[GG], int K) {
#pragma unroll
  for (int gi = 0; gi < GG; gi++) {
    if (!TWO) R[gi].r1 = -1, R[gi].v1 = INFINITY, R[gi].c1 = K;
    rank_set_thr(&R[gi], K, TWO);
  }
}

/* The reference slots of token t's GG heads: lane i holds slots i (and i + 32 when TWO) with the
 * reference key's index and its s^ by the key loop's fmaf chain (so every rank decision compares
 * values of one chain); the s^ are computed spread over all lanes ((head, slot) pairs through scr,
 * GG x 32 floats of shared memory), then each slot's owner lane takes its own. QGLOBAL: q4 is in
 * global memory (gqa_score_g, the same chain). */
template <int GG, int TWO, int QGLOBAL>
__device__ __forceinline__ void gqa_rank_init(const kc_attn_args &a, int64_t t, int64_t kb, const float4 *q4,
                                              const float *Kh, int D4, float *scr, rank_slots (&R)[GG]) {
  const int K = a.topk, lane = threadIdx.x & 31, D = 4 * D4;
  for (int h = 0; h < (TWO ? 2 : 1); h++) {
    int nh = K - 32 * h < 32 ? K - 32 * h : 32;
    for (int p = lane; p < GG * nh; p += 32) {
      int gi = p / nh, sl = 32 * h + p - gi * nh;
      int r = a.topk_ref[(t * a.Hq + a.head * GG + gi) * K + sl];
      const float4 *kr = (const float4 *)(Kh + (kb + r) * D);
      scr[p] = r < 0 ? INFINITY : QGLOBAL ? gqa_score_g(q4 + gi * D4, kr, D4) : gqa_score(q4 + gi * D4, kr, D4);
    }
    __syncwarp();
#pragma unroll
    for (int gi = 0; gi < GG; gi++) {
      int own = lane < nh;
      int r = own ? a.topk_ref[(t * a.Hq + a.head * GG + gi) * K + 32 * h + lane] : -1;
      float v = own ? scr[gi * nh + lane] : INFINITY;
      if (h) R[gi].r1 = r, R[gi].v1 = v, R[gi].c1 = r >= 0 ? 0 : K;
      else R[gi].r0 = r, R[gi].v0 = v, R[gi].c0 = r >= 0 ? 0 : K;
    }
    __syncwarp();
  }
  rank_slots_close<GG, TWO>(R, K);
}

/* gqa_rank_init with the s^_r computed before the kernel (k_attn_wg: k_wg_slot_scores, the same
 * gqa_score_g chain operand for operand, so the same bits): ss holds token t's [GG][K] values,
 * INFINITY for an empty slot. Lane i takes slots i (and i + 32 when TWO) as gqa_rank_init does. */
template <int GG, int TWO>
__device__ __forceinline__ void gqa_rank_init_from(const kc_attn_args &a, int64_t t, const float *ss,
                                                   rank_slots (&R)[GG]) {
  const int K = a.topk, lane = threadIdx.x & 31;
  const int32_t *ref = a.topk_ref + (t * a.Hq + a.head * GG) * K;
#pragma unroll
  for (int h = 0; h < (TWO ? 2 : 1); h++) {
    const int sl = 32 * h + lane, own = sl < K;
#pragma unroll
    for (int gi = 0; gi < GG; gi++) {
      int r = own ? __ldg(ref + gi * K + sl) : -1;
      float v = own ? __ldg(ss + gi * K + sl) : INFINITY;
      if (h) R[gi].r1 = r, R[gi].v1 = v, R[gi].c1 = r >= 0 ? 0 : K;
      else R[gi].r0 = r, R[gi].v0 = v, R[gi].c0 = r >= 0 ? 0 : K;
    }
  }
  rank_slots_close<GG, TWO>(R, K);
}

/* A reference row's outputs (k_ref_gqa, k_ref_wg): o_out row orow = o / (the warp's sum of l),
 * lane i its 4 dimensions from 4 i, and the row's top-k list (lane i: slots i and i + 32). */
__device__ __forceinline__ void ref_put_row(const kc_attn_args &a, int64_t orow, const float (&o)[GQA_NDL], float l,
                                            const topk_list &tl, int K, int D, int lane) {
  float inv = 1.0f / warp_sum_f(l);
  if (4 * lane < D)
    *(float4 *)(a.o_out + orow * D + 4 * lane) = make_float4(o[0] * inv, o[1] * inv, o[2] * inv, o[3] * inv);
  int32_t *tkp = a.topk_out + orow * K;
  if (lane < K) tkp[lane] = tl.i0;
  if (lane + 32 < K) tkp[lane + 32] = tl.i1;
}

/* Launchers of the other translation units (a valid shape is the caller's check). */
int kca_launch_gqa(const kc_attn_args *a, int n_y, sq_err *e);     /* EVAL_ATTN, k_attn_gqa */
int kca_launch_ref_gqa(const kc_attn_args *a, int n_y, sq_err *e); /* REF_ATTN, k_ref_gqa */
int kca_launch_tc(const kc_attn_args *a, int n_y, sq_err *e);      /* EVAL_ATTN, k_attn_tc (tc / tcpv) */
int kca_launch_wg(const kc_attn_args *a, int n_y, sq_err *e);      /* EVAL_ATTN, k_attn_wg (sm_90a) */
/* REF_ATTN, k_ref_wg (sm_90a); done = 0 when a value is beyond fp16's range (nothing computed) */
int kca_launch_ref_wg(const kc_attn_args *a, int n_y, int *done, sq_err *e);

#endif
