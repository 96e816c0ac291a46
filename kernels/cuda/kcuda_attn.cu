/* kcuda_attn: fused attention rows on the GPU. One warp owns one query row (k_rows) or one token
 * and its GQA group (k_attn_gqa); its lanes take 32 keys at a time (each lane a whole dot
 * product), an online softmax folds them in, and the lanes then own output dimensions for the
 * weighted sum of values. k_attn_tc (the default EVAL_ATTN for G = 4) keeps k_attn_gqa's layout
 * but computes the scores (and with PVTC the weighted sums) of a block's 64 rows on tensor cores.
 * No T x T matrix exists anywhere: per row the state is the running max,
 * the normaliser, the output values spread over the lanes, the logit sums and the top-k state.
 * Modes:
 *   REF_ATTN   reference (dump K, V): o_ref and the reference top-k list of every (token, query head)
 *              (k_ref_gqa in the group layout for G = 4, else k_rows)
 *   REF_RANDQ  reference outputs of the random queries (no mask, whole sequence)
 *   EVAL_ATTN  per (token, query head of the KV head) and plan: cos(o_ref, o^), top-k recall,
 *              and the sums of s^-s, s, s^, s^2, s*s^ over its causal keys
 *   EVAL_RANDQ per (sequence, random query) and plan: cos(o_ref, o^)
 * plus k_probs (a block per row, three passes: maxima, normalisers, products of the weights). */
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

/* q (shared memory) . row (global), float accumulation as the CPU's kcpu_dot. */
__device__ __forceinline__ float dotf(const float *__restrict__ q, const float *__restrict__ row, int D) {
  float s = 0.0f;
  if ((D & 3) == 0) {
    const float4 *a = (const float4 *)q, *b = (const float4 *)row;
#pragma unroll 4
    for (int j = 0; j < (D >> 2); j++) {
      float4 x = a[j], y = __ldg(b + j);
      s = fmaf(x.x, y.x, s);
      s = fmaf(x.y, y.y, s);
      s = fmaf(x.z, y.z, s);
      s = fmaf(x.w, y.w, s);
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
 * before the key loop with exactly the fmaf chain the loop uses for s^_j (so ties are ties), and
 * counts the keys that come before r. A slot whose count reached K is out for good, so only keys
 * with s^_j >= thr = min s^ over the slots still in can change a count: those are ballotted and
 * broadcast one at a time. hits = slots still in at the end of the row. */
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
    s = fmaf(x.x, y.x, s);
    s = fmaf(x.y, y.y, s);
    s = fmaf(x.z, y.z, s);
    s = fmaf(x.w, y.w, s);
  }
  return s;
}

/* Copy rows j0..j0+n-1 (row j at src + j*stride) into dst [TILE][ld] (D floats per row). */
__device__ __forceinline__ void load_tile(float *dst, int ld, const float *src, int64_t stride, int64_t j0,
                                          int n, int D) {
  int per_row = D >> 2;
  for (int i = threadIdx.x; i < n * per_row; i += blockDim.x) {
    int r = i / per_row, c = i % per_row;
    *(float4 *)(dst + r * ld + 4 * c) = __ldg((const float4 *)(src + (j0 + r) * stride) + c);
  }
}

/* load_tile with cp.async (the caller commits and waits). */
__device__ __forceinline__ void load_tile_async(float *dst, int ld, const float *src, int64_t stride, int64_t j0,
                                                int n, int D) {
  int per_row = D >> 2;
  for (int i = threadIdx.x; i < n * per_row; i += blockDim.x) {
    int r = i / per_row, c = i - r * per_row;
    cp_async16(dst + r * ld + 4 * c, src + (j0 + r) * stride + 4 * c);
  }
}

/* An eval stage: keys j0..j0+n-1 of the plan's effective keys (pitch ldk), the dump's keys (pitch
 * ldk) and the plan's decoded values (pitch ldv), cp.async into dst (keff, k, v back to back). */
__device__ __forceinline__ void eval_stage_tile(float *dst, int ldk, int ldv, const float *Kh, const float *Kref,
                                                int64_t kref_stride, const float *V, int64_t j0, int n, int D) {
  load_tile_async(dst, ldk, Kh, D, j0, n, D);
  load_tile_async(dst + TILE * ldk, ldk, Kref, kref_stride, j0, n, D);
  load_tile_async(dst + 2 * TILE * ldk, ldv, V, D, j0, n, D);
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
    int nt = KE - j0 < TILE ? (int)(KE - j0) : TILE;
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
  dot = warp_sum_dd(dot);
  n1 = warp_sum_dd(n1);
  n2 = warp_sum_dd(n2);
  double cs = (n1 == 0.0 && n2 == 0.0) ? 1.0 : (n1 == 0.0 || n2 == 0.0) ? 0.0 : dot / sqrt(n1 * n2);
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
#define GQA_NDL 4
#define GQA_WARPS 16 /* tokens per block: 141 KB of shared memory at D = 128, one block per SM */
#define GQA_MINB 1

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
 * recall from the rank slots, and in gi = 0's row the group's pair sums (sb, s, s^, s^2, s s^). */
template <int GG, int TWO>
__device__ __forceinline__ void gqa_write_rows(const kc_attn_args &a, int plan, int64_t t, int64_t avail, int K,
                                               const float (&o)[GG][GQA_NDL], const float (&l)[GG],
                                               const rank_slots (&R)[GG], double sums[5]) {
  const int D = a.D, lane = threadIdx.x & 31;
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
    dot = warp_sum_dd(dot);
    n1 = warp_sum_dd(n1);
    n2 = warp_sum_dd(n2);
    double cs = (n1 == 0.0 && n2 == 0.0) ? 1.0 : (n1 == 0.0 || n2 == 0.0) ? 0.0 : dot / sqrt(n1 * n2);
    int hits = rank_hits(&R[gi], K, TWO);
    double *out = a.rows_out + ((int64_t)plan * a.n_rows + t * GG + gi) * a.n_fields;
    if (lane == 0) {
      out[0] = cs;
      out[1] = (double)hits / (double)(avail < K ? avail : K);
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
    sh = fmaf(x.x, y.x, sh);
    sh = fmaf(x.y, y.y, sh);
    sh = fmaf(x.z, y.z, sh);
    sh = fmaf(x.w, y.w, sh);
  }
  return sh;
}

/* gqa_score with the query in global memory too: the same chain, operand for operand. */
__device__ __forceinline__ float gqa_score_g(const float4 *q4, const float4 *kr, int D4) {
  float sh = 0.0f;
  for (int jd = 0; jd < D4; jd++) {
    float4 x = __ldg(q4 + jd), y = __ldg(kr + jd);
    sh = fmaf(x.x, y.x, sh);
    sh = fmaf(x.y, y.y, sh);
    sh = fmaf(x.z, y.z, sh);
    sh = fmaf(x.w, y.w, sh);
  }
  return sh;
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
#pragma unroll
  for (int gi = 0; gi < GG; gi++) {
    if (!TWO) R[gi].r1 = -1, R[gi].v1 = INFINITY, R[gi].c1 = K;
    rank_set_thr(&R[gi], K, TWO);
  }
}

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
    for (int gi = 0; gi < GG; gi++) {
      const float *q = a.q + (t * a.Hq + a.head * GG + gi) * D;
      for (int j = lane; j < D; j += 32) qs[gi * D + j] = q[j];
    }
  }
  int64_t KB, KE;
  gqa_union_range<W>(live, kb, ke, blk_kb, blk_ke, &KB, &KE);
  const float *Kh = a.keff + plan * a.plan_stride, *V = a.vhat + plan * a.plan_stride;
  const float *Kref = a.k + (int64_t)a.head * D;
  const int64_t kref_stride = (int64_t)a.Hkv * D;
  int64_t ntile = KE > KB ? (KE - KB + TILE - 1) / TILE : 0;
  if (ntile > 0) { /* tile 0 is in flight while the reference keys are scored */
    int nt = KE - KB < TILE ? (int)(KE - KB) : TILE;
    eval_stage_tile(stages, ldk, D, Kh, Kref, kref_stride, V, KB, nt, D);
    cp_async_commit();
  }
  const int K = a.topk;
  const float4 *q4 = (const float4 *)qs;
  rank_slots R[GG];
  if (live) gqa_rank_init<GG, TWO, 0>(a, t, kb, q4, Kh, D4, (float *)ps, R);
  const float c = 1.0f / sqrtf((float)D);
  float o[GG][GQA_NDL], m[GG], l[GG];
  gqa_state_init(o, m, l);
  double sb = 0, ss_ = 0, ssh = 0, s2 = 0, sxh = 0;
  for (int64_t it = 0; it < ntile; it++) {
    int64_t j0 = KB + it * TILE;
    int nt = KE - j0 < TILE ? (int)(KE - j0) : TILE;
    cp_async_wait_all();
    __syncthreads(); /* tile it has landed, and every warp is done with tile it-1's stage */
    if (it + 1 < ntile) {
      int64_t j1 = j0 + TILE;
      int n1 = KE - j1 < TILE ? (int)(KE - j1) : TILE;
      float *nx = stages + ((it + 1) & 1) * stage;
      eval_stage_tile(nx, ldk, D, Kh, Kref, kref_stride, V, j1, n1, D);
      cp_async_commit();
    }
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
          sh[gi] = fmaf(x.x, y.x, sh[gi]);
          sh[gi] = fmaf(x.y, y.y, sh[gi]);
          sh[gi] = fmaf(x.z, y.z, sh[gi]);
          sh[gi] = fmaf(x.w, y.w, sh[gi]);
          sr[gi] = fmaf(x.x, yr.x, sr[gi]);
          sr[gi] = fmaf(x.y, yr.y, sr[gi]);
          sr[gi] = fmaf(x.z, yr.z, sr[gi]);
          sr[gi] = fmaf(x.w, yr.w, sr[gi]);
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
    for (int gi = 0; gi < GG; gi++) {
      const float *q = a.q + (t * a.Hq + h * GG + gi) * D;
      for (int j = lane; j < D; j += 32) qs[gi * D + j] = q[j];
    }
  }
  int64_t KB, KE;
  gqa_union_range<W>(live, kb, ke, blk_kb, blk_ke, &KB, &KE);
  const int64_t kst = (int64_t)a.Hkv * D;
  const float *Kd = a.k + (int64_t)h * D, *Vd = a.v + (int64_t)h * D;
  const int64_t ntile = KE > KB ? (KE - KB + TILE - 1) / TILE : 0;
  if (ntile > 0) {
    int nt = KE - KB < TILE ? (int)(KE - KB) : TILE;
    load_tile_async(stages, ldk, Kd, kst, KB, nt, D);
    load_tile_async(stages + TILE * ldk, D, Vd, kst, KB, nt, D);
    cp_async_commit();
  }
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
    int64_t j0 = KB + it * TILE;
    int nt = KE - j0 < TILE ? (int)(KE - j0) : TILE;
    cp_async_wait_all();
    __syncthreads(); /* tile it has landed, and every warp is done with tile it-1's stage */
    if (it + 1 < ntile) {
      int64_t j1 = j0 + TILE;
      int n1 = KE - j1 < TILE ? (int)(KE - j1) : TILE;
      float *nx = stages + ((it + 1) & 1) * stage;
      load_tile_async(nx, ldk, Kd, kst, j1, n1, D);
      load_tile_async(nx + TILE * ldk, D, Vd, kst, j1, n1, D);
      cp_async_commit();
    }
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
          sc[gi] = fmaf(x.x, y.x, sc[gi]);
          sc[gi] = fmaf(x.y, y.y, sc[gi]);
          sc[gi] = fmaf(x.z, y.z, sc[gi]);
          sc[gi] = fmaf(x.w, y.w, sc[gi]);
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
  for (int gi = 0; gi < GG; gi++) {
    int64_t orow = t * a.Hq + h * GG + gi;
    float inv = 1.0f / warp_sum_f(l[gi]);
    if (4 * lane < D)
      *(float4 *)(a.o_out + orow * D + 4 * lane) =
          make_float4(o[gi][0] * inv, o[gi][1] * inv, o[gi][2] * inv, o[gi][3] * inv);
    int32_t *tkp = a.topk_out + orow * K;
    if (lane < K) tkp[lane] = TL[gi].i0;
    if (lane + 32 < K) tkp[lane + 32] = TL[gi].i1;
  }
}

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
 *     the queries (stored once per block in A-fragment order, split on the fly) and the staged key
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
#define TC_LDS 40        /* score tile row stride (floats): conflict-free float2 stores */
#define TC_VPAD 8        /* value rows (PVTC): conflict-free B fragments */
#define TC_EPS 6e-5f     /* margin / (|q| |k|): ~2x the worst-case 3xTF32-vs-chain bound */

__device__ __forceinline__ void tf32_split(float x, uint32_t *hi, uint32_t *lo) {
  uint32_t h = __float_as_uint(x) & 0xffffe000u;
  *hi = h;
  *lo = __float_as_uint(x - __uint_as_float(h)) & 0xffffe000u;
}

__device__ __forceinline__ void mma_tf32(float *c, const uint32_t *a, const uint32_t *b) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

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
  __shared__ int64_t blk_kb[W], blk_ke[W];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
  float4 *ps = ps_all + warp * TILE;
  int64_t n_tok = a.n_rows / GG, t = (int64_t)(gridDim.x - 1 - blockIdx.x) * W + warp;
  int plan = blockIdx.y, live = t < n_tok;
  int64_t kb = 0, ke = 0;
  const float *qg = a.q + (t * a.Hq + a.head * GG) * D; /* the 4 heads' queries, adjacent rows */
  float qn[GG];
  {
    /* rows 4w + gi into A-fragment order: a0 (r, c), a1 (r + 8, c), a2 (r, c + 4), a3 (r + 8, c + 4)
     * with r = lane / 4, c = lane % 4 of the 16 x 8 block (m-tile, k-step) */
    float *qff = (float *)qf;
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
        qff[((mt * NKS + ks) * 32 + (rr & 7) * 4 + (c & 3)) * 4 + (rr >> 3) + 2 * (c >> 2)] = x;
      }
      qn[gi] = sqrtf(warp_sum_f(ss));
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
  const float *Kh = a.keff + plan * a.plan_stride, *V = a.vhat + plan * a.plan_stride;
  const float *Kref = a.k + (int64_t)a.head * D;
  const int64_t kref_stride = (int64_t)a.Hkv * D;
  int64_t ntile = KE > KB ? (KE - KB + TILE - 1) / TILE : 0;
  if (ntile > 0) { /* tile 0 is in flight while the reference keys are scored */
    int nt = KE - KB < TILE ? (int)(KE - KB) : TILE;
    eval_stage_tile(stages, ldk, ldv, Kh, Kref, kref_stride, V, KB, nt, D);
    cp_async_commit();
  }
  const int K = a.topk;
  const float4 *q4 = (const float4 *)qg;
  rank_slots R[GG];
  if (live) gqa_rank_init<GG, TWO, 1>(a, t, kb, q4, Kh, D4, (float *)ps, R);
  const float c = 1.0f / sqrtf((float)D);
  float o[GG][GQA_NDL], m[GG], l[GG];
  gqa_state_init(o, m, l);
  double sb = 0, ss_ = 0, ssh = 0, s2 = 0, sxh = 0;
  const int mat = warp >> 3, mt = (warp >> 1) & 3, nb = (warp & 1) * 16;
  for (int64_t it = 0; it < ntile; it++) {
    int64_t j0 = KB + it * TILE;
    int nt = KE - j0 < TILE ? (int)(KE - j0) : TILE;
    cp_async_wait_all();
    __syncthreads(); /* tile it has landed; every warp is done with tile it-1 (stage, scores, norms) */
    if (it + 1 < ntile) {
      int64_t j1 = j0 + TILE;
      int n1 = KE - j1 < TILE ? (int)(KE - j1) : TILE;
      float *nx = stages + ((it + 1) & 1) * stage;
      eval_stage_tile(nx, ldk, ldv, Kh, Kref, kref_stride, V, j1, n1, D);
      cp_async_commit();
    }
    const float *tk = stages + (it & 1) * stage, *tv = tk + 2 * TILE * ldk;
    { /* phase A: this warp's 16 x 16 block of S^ (mat 0) or S (mat 1). Rows of keys past nt hold
       * stale (or never written) data: their columns are never read as valid keys. */
      /* the hi*hi products and the two small cross terms in separate accumulators: four
       * independent mma chains per warp instead of two, added at the end */
      float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
      float acs[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
      const float4 *qa = qf + mt * NKS * 32 + lane;
      const float *kt = tk + mat * TILE * ldk + (nb + gid) * ldk + tig;
#pragma unroll 4
      for (int ks = 0; ks < NKS; ks++) {
        float4 af = qa[ks * 32];
        uint32_t ah[4], al[4];
        tf32_split(af.x, &ah[0], &al[0]);
        tf32_split(af.y, &ah[1], &al[1]);
        tf32_split(af.z, &ah[2], &al[2]);
        tf32_split(af.w, &ah[3], &al[3]);
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
    if (live && j0 + nt > kb && j0 < ke) { /* warp-uniform: the tile holds causal keys of this token */
      int64_t j = j0 + lane;
      int valid = lane < nt && j >= kb && j < ke;
      float sh[GG], sr[GG];
#pragma unroll
      for (int gi = 0; gi < GG; gi++) {
        sh[gi] = valid ? sc[(4 * warp + gi) * TC_LDS + lane] : -INFINITY;
        sr[gi] = valid ? sc[64 * TC_LDS + (4 * warp + gi) * TC_LDS + lane] : 0.0f;
      }
      if (valid) {
#pragma unroll
        for (int gi = 0; gi < GG; gi++) {
          sb += (double)sh[gi] - (double)sr[gi];
          ss_ += sr[gi];
          ssh += sh[gi];
          s2 += (double)sr[gi] * sr[gi];
          sxh += (double)sr[gi] * sh[gi];
        }
      }
      int base = (int)(j0 - kb);
      float knl = kn[lane];
#pragma unroll
      for (int gi = 0; gi < GG; gi++) {
        float err = TC_EPS * qn[gi] * knl + 1e-30f;
        rank_offer_tc<TWO>(&R[gi], K, valid && sh[gi] >= R[gi].thr - err, sh[gi], err, base, q4 + gi * D4,
                           Kh + kb * D, D);
      }
      /* online softmax: k_attn_gqa's */
      float p[GG];
#pragma unroll
      for (int gi = 0; gi < GG; gi++) {
        float alpha = 1.0f;
        if (__any_sync(0xffffffffu, sh[gi] > m[gi])) {
          float mnew = fmaxf(m[gi], warp_max_f(sh[gi]));
          alpha = expf((m[gi] - mnew) * c);
          l[gi] *= alpha;
          if (!PVTC) {
#pragma unroll
            for (int i = 0; i < GQA_NDL; i++) o[gi][i] *= alpha;
          }
          m[gi] = mnew;
        }
        p[gi] = valid ? expf((sh[gi] - m[gi]) * c) : 0.0f;
        l[gi] += p[gi];
        if (PVTC) {
          tc_put_weight(ps_all, warp, gi, lane, p[gi]);
          if (lane == 0) alpha_s[4 * warp + gi] = alpha;
        }
      }
      if (!PVTC) { /* k_attn_gqa's weighted sum of values */
        gqa_weighted_sum(o, p, ps, tv, ldv, j0 < kb ? (int)(kb - j0) : 0, j0 + nt > ke ? (int)(ke - j0) : nt, D);
      }
    } else if (PVTC) { /* no causal key here: weights 0, outputs unscaled */
#pragma unroll
      for (int gi = 0; gi < GG; gi++) {
        tc_put_weight(ps_all, warp, gi, lane, 0.0f);
        if (lane == 0) alpha_s[4 * warp + gi] = 1.0f;
      }
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
        tf32_split(af.x, &ah[0], &al[0]);
        tf32_split(af.y, &ah[1], &al[1]);
        tf32_split(af.z, &ah[2], &al[2]);
        tf32_split(af.w, &ah[3], &al[3]);
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
#pragma unroll
    for (int gi = 0; gi < GG; gi++)
      if (4 * lane < D) {
        float4 x = *(const float4 *)(osm + (4 * warp + gi) * D + 4 * lane);
        o[gi][0] = x.x, o[gi][1] = x.y, o[gi][2] = x.z, o[gi][3] = x.w;
      }
  }
  if (!live) return;
  double sums[5] = {sb, ss_, ssh, s2, sxh};
  gqa_write_rows<GG, TWO>(a, plan, t, ke - kb, K, o, l, R, sums);
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
 * short sequence's length). */
__global__ void __launch_bounds__(ROW_WARPS * 32) k_probs(kc_attn_args a) {
  extern __shared__ float qs[]; /* [D] */
  __shared__ float fscr[ROW_WARPS];
  __shared__ double dscr[ROW_WARPS];
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
  const float *q = a.q + (t * a.Hq + g) * D;
  for (int j = threadIdx.x; j < D; j += nth) qs[j] = q[j];
  __syncthreads();
  const float *K = a.k + (int64_t)a.head * D, *Kh = a.keff + plan * a.plan_stride;
  int64_t ks = (int64_t)a.Hkv * D;
  const float c = 1.0f / sqrtf((float)D);
  float mx = -INFINITY, mh = -INFINITY;
  for (int64_t j = kb + threadIdx.x; j < ke; j += nth) {
    mx = fmaxf(mx, dotf(qs, K + j * ks, D));
    mh = fmaxf(mh, dotf(qs, Kh + j * D, D));
  }
  mx = block_max_f(mx, fscr);
  mh = block_max_f(mh, fscr);
  double sx = 0, shh = 0;
  for (int64_t j = kb + threadIdx.x; j < ke; j += nth) {
    sx += (double)expf((dotf(qs, K + j * ks, D) - mx) * c);
    shh += (double)expf((dotf(qs, Kh + j * D, D) - mh) * c);
  }
  sx = block_sum_dd(sx, dscr);
  shh = block_sum_dd(shh, dscr);
  double pd = 0, pn = 0, ph2 = 0;
  for (int64_t j = kb + threadIdx.x; j < ke; j += nth) {
    float p = (float)((double)expf((dotf(qs, K + j * ks, D) - mx) * c) / sx);
    double ph = (double)expf((dotf(qs, Kh + j * D, D) - mh) * c) / shh;
    pd += ph * p;
    pn += (double)p * p;
    ph2 += ph * ph;
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

/* k_attn_tc's shared memory: the queries (A fragments), k_attn_gqa's stages (PVTC: padded value
 * rows) and weights, the two score tiles, the tile's key norms and (PVTC) the rescale factors. */
static size_t tc_smem(int D, int pvtc) {
  size_t ldv = pvtc ? (size_t)D + TC_VPAD : (size_t)D;
  size_t f = (size_t)GQA_WARPS * 4 * D + 2 * (2 * (size_t)TILE * (D + KPAD) + (size_t)TILE * ldv) +
             (size_t)GQA_WARPS * TILE * 4 + 2 * 64 * TC_LDS + TILE + 64;
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

static int launch_eval_attn(const kc_attn_args *a, int n_y, dim3 grid, sq_err *e) {
  if (a->gqa >= KC_ATTN_TC && kc_tc_shape(a->G, a->D)) {
    int pv = a->gqa == KC_ATTN_TCPV;
    if (a->topk > 32) return pv ? launch_tc<1, 1>(a, n_y, e) : launch_tc<1, 0>(a, n_y, e);
    return pv ? launch_tc<0, 1>(a, n_y, e) : launch_tc<0, 0>(a, n_y, e);
  }
  if (a->gqa != KC_ATTN_ROWS && kc_gqa_shape(a->G, a->D))
    return a->topk > 32 ? launch_gqa<1>(a, n_y, e) : launch_gqa<0>(a, n_y, e);
  return launch_rows<KC_EVAL_ATTN>(a, grid, e);
}

int kc_attn_launch(int mode, const kc_attn_args *a, int n_y, sq_err *e) {
  if (a->n_rows <= 0) return SQ_OK;
  if (a->D % 4)
    return sq_fail(e, SQ_EINPUT, "cuda backend: head_dim %d is not a multiple of 4", a->D);
  dim3 grid((unsigned)((a->n_rows + ROW_WARPS - 1) / ROW_WARPS), (unsigned)n_y);
  switch (mode) {
  case KC_REF_ATTN:
    if (a->gqa != KC_ATTN_ROWS && kc_gqa_shape(a->G, a->D) && a->topk <= 64) {
      size_t smem = ((size_t)REF_WARPS * 4 * a->D + 2 * ((size_t)TILE * (a->D + KPAD) + (size_t)TILE * a->D) +
                     (size_t)REF_WARPS * TILE * 4) * sizeof(float);
      dim3 g2((unsigned)((a->n_rows / 4 + REF_WARPS - 1) / REF_WARPS), (unsigned)n_y);
      cudaCheck(cudaFuncSetAttribute(k_ref_gqa<4, REF_WARPS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
      k_ref_gqa<4, REF_WARPS><<<g2, REF_WARPS * 32, smem>>>(*a);
      launchCheck();
      return SQ_OK;
    }
    return launch_rows<KC_REF_ATTN>(a, grid, e);
  case KC_REF_RANDQ: return launch_rows<KC_REF_RANDQ>(a, grid, e);
  case KC_EVAL_ATTN: return launch_eval_attn(a, n_y, grid, e);
  case KC_EVAL_RANDQ: return launch_rows<KC_EVAL_RANDQ>(a, grid, e);
  case KC_EVAL_PROBS:
    k_probs<<<dim3((unsigned)a->n_rows, (unsigned)n_y), ROW_WARPS * 32, (size_t)a->D * sizeof(float)>>>(*a);
    launchCheck();
    return SQ_OK;
  default: return sq_fail(e, SQ_EFAIL, "%s:%d: unknown attention mode %d", __FILE__, __LINE__, mode);
  }
}
