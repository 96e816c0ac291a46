/* kcuda_attn: fused attention rows on the GPU. One warp owns one query row; its lanes take 32
 * keys at a time (each lane a whole dot product), an online softmax folds them in, and the lanes
 * then own output dimensions for the weighted sum of values. No T x T matrix exists anywhere:
 * per row the state is the running max, the normaliser, D/32 output values per lane, the logit
 * sums and a top-k list kept across the lanes. Modes:
 *   REF_ATTN   reference (dump K, V): o_ref and the reference top-k of every (token, query head)
 *   REF_RANDQ  reference outputs of the random queries (no mask, whole sequence)
 *   EVAL_ATTN  per (token, query head of the KV head) and plan: cos(o_ref, o^), top-k recall,
 *              and the sums of s^-s, s, s^, s^2, s*s^ over its causal keys
 *   EVAL_RANDQ per (sequence, random query) and plan: cos(o_ref, o^)
 * plus k_probs (three passes per row: maxima, normalisers, products of the weights). */
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
  const int want_topk = MODE == KC_REF_ATTN || MODE == KC_EVAL_ATTN;
  topk_list TL;
  topk_init(&TL);
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
    if (want_topk) {
      float tl = TL.cnt == a.topk ? topk_last(&TL, a.topk) : -INFINITY;
      topk_offer(&TL, a.topk, valid && (TL.cnt < a.topk || sh > tl), sh, (int)(j - kb));
    }
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
  /* top-k recall: reference entries found in this plan's list */
  const int32_t *ref = a.topk_ref + (t * a.Hq + g) * a.topk;
  int hits = 0;
  for (int i = 0; i < a.topk; i++) {
    int r = ref[i];
    if (r < 0) continue;
    hits += (lane < TL.cnt && TL.i0 == r) + (lane + 32 < TL.cnt && TL.i1 == r);
  }
  for (int o2 = 16; o2 > 0; o2 >>= 1) hits += __shfl_xor_sync(0xffffffffu, hits, o2);
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

/* EVAL_ATTN with the GQA group in one warp (opt-in: SQEXP_CUDA_ATTN=gqa; G == GG, D <= 128). One
 * warp owns token t and all GG query heads of the KV head, so each key row and value row read from
 * shared memory serves GG queries (GG x fewer shared-memory reads per pair than k_rows). Every dot
 * product, softmax step and weighted sum is done in the same order as in k_rows, so the per-row
 * results are the same; the pair sums of the group are added before they are written (into the
 * row of gi = 0; the column sums over rows are unchanged up to double rounding). */
#define GQA_NDL 4
template <int GG>
__global__ void __launch_bounds__(ROW_WARPS * 32) k_attn_gqa(kc_attn_args a) {
  extern __shared__ float4 sm4[];
  float *sm = (float *)sm4;
  const int D = a.D, ldk = D + KPAD;
  float *qs_all = sm;                              /* [ROW_WARPS][GG][D] */
  float *tk = qs_all + ROW_WARPS * GG * D;         /* [TILE][ldk] effective keys */
  float *tr = tk + TILE * ldk;                     /* [TILE][ldk] reference keys */
  float *tv = tr + TILE * ldk;                     /* [TILE][D] decoded values */
  __shared__ int64_t blk_kb[ROW_WARPS], blk_ke[ROW_WARPS];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int64_t n_tok = a.n_rows / GG, t = (int64_t)blockIdx.x * ROW_WARPS + warp;
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
  const float *Kh = a.keff + plan * a.plan_stride, *V = a.vhat + plan * a.plan_stride;
  const float *Kref = a.k + (int64_t)a.head * D;
  int64_t kref_stride = (int64_t)a.Hkv * D;
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
  double sb = 0, ss_ = 0, ssh = 0, s2 = 0, sxh = 0;
  for (int64_t j0 = KB; j0 < KE; j0 += TILE) {
    int nt = KE - j0 < TILE ? (int)(KE - j0) : TILE;
    __syncthreads();
    load_tile(tk, ldk, Kh, D, j0, nt, D);
    load_tile(tr, ldk, Kref, kref_stride, j0, nt, D);
    load_tile(tv, D, V, D, j0, nt, D);
    __syncthreads();
    if (!live || j0 + nt <= kb || j0 >= ke) continue; /* warp-uniform */
    int64_t j = j0 + lane;
    int valid = lane < nt && j >= kb && j < ke;
    float sh[GG], sr[GG];
#pragma unroll
    for (int gi = 0; gi < GG; gi++) sh[gi] = sr[gi] = 0.0f;
    if (valid) {
      const float4 *kr = (const float4 *)(tk + lane * ldk), *rr = (const float4 *)(tr + lane * ldk);
      const float4 *q4 = (const float4 *)qs;
#pragma unroll 4
      for (int jd = 0; jd < (D >> 2); jd++) {
        float4 y = kr[jd], yr = rr[jd];
#pragma unroll
        for (int gi = 0; gi < GG; gi++) {
          float4 x = q4[gi * (D >> 2) + jd];
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
    float p[GG];
#pragma unroll
    for (int gi = 0; gi < GG; gi++) {
      float mnew = fmaxf(m[gi], warp_max_f(sh[gi]));
      float alpha = expf((m[gi] - mnew) * c);
      p[gi] = valid ? expf((sh[gi] - mnew) * c) : 0.0f;
      l[gi] = l[gi] * alpha + warp_sum_f(p[gi]);
#pragma unroll
      for (int i = 0; i < GQA_NDL; i++) o[gi][i] *= alpha;
      m[gi] = mnew;
    }
    for (int jj = 0; jj < nt; jj++) {
      float pj[GG];
      int any = 0;
#pragma unroll
      for (int gi = 0; gi < GG; gi++) {
        pj[gi] = __shfl_sync(0xffffffffu, p[gi], jj);
        any |= pj[gi] != 0.0f;
      }
      if (!any) continue; /* warp-uniform */
      const float *vr = tv + jj * D;
#pragma unroll
      for (int i = 0; i < GQA_NDL; i++)
        if (lane + 32 * i < D) {
          float vv = vr[lane + 32 * i];
#pragma unroll
          for (int gi = 0; gi < GG; gi++) o[gi][i] = fmaf(pj[gi], vv, o[gi][i]);
        }
    }
#pragma unroll
    for (int gi = 0; gi < GG; gi++) {
      float tl = TL[gi].cnt == a.topk ? topk_last(&TL[gi], a.topk) : -INFINITY;
      topk_offer(&TL[gi], a.topk, valid && (TL[gi].cnt < a.topk || sh[gi] > tl), sh[gi], (int)(j - kb));
    }
  }
  if (!live) return;
  sb = warp_sum_dd(sb);
  ss_ = warp_sum_dd(ss_);
  ssh = warp_sum_dd(ssh);
  s2 = warp_sum_dd(s2);
  sxh = warp_sum_dd(sxh);
  int64_t avail = ke - kb;
#pragma unroll
  for (int gi = 0; gi < GG; gi++) {
    int g = a.head * GG + gi;
    float inv = 1.0f / l[gi];
    const float *oref = a.o_ref + (t * a.Hq + g) * D;
    double dot = 0, n1 = 0, n2 = 0;
#pragma unroll
    for (int i = 0; i < GQA_NDL; i++)
      if (lane + 32 * i < D) {
        double x = oref[lane + 32 * i], y = o[gi][i] * inv;
        dot += x * y;
        n1 += x * x;
        n2 += y * y;
      }
    dot = warp_sum_dd(dot);
    n1 = warp_sum_dd(n1);
    n2 = warp_sum_dd(n2);
    double cs = (n1 == 0.0 && n2 == 0.0) ? 1.0 : (n1 == 0.0 || n2 == 0.0) ? 0.0 : dot / sqrt(n1 * n2);
    const int32_t *ref = a.topk_ref + (t * a.Hq + g) * a.topk;
    int hits = 0;
    for (int i = 0; i < a.topk; i++) {
      int r = ref[i];
      if (r < 0) continue;
      hits += (lane < TL[gi].cnt && TL[gi].i0 == r) + (lane + 32 < TL[gi].cnt && TL[gi].i1 == r);
    }
    for (int o2 = 16; o2 > 0; o2 >>= 1) hits += __shfl_xor_sync(0xffffffffu, hits, o2);
    double *out = a.rows_out + ((int64_t)plan * a.n_rows + t * GG + gi) * a.n_fields;
    if (lane == 0) {
      out[0] = cs;
      out[1] = (double)hits / (double)(avail < a.topk ? avail : a.topk);
      out[2] = gi == 0 ? sb : 0.0;
      out[3] = gi == 0 ? ss_ : 0.0;
      out[4] = gi == 0 ? ssh : 0.0;
      out[5] = gi == 0 ? s2 : 0.0;
      out[6] = gi == 0 ? sxh : 0.0;
      out[7] = gi == 0 ? (double)(avail * GG) : 0.0;
    }
  }
}

/* probs rows: (sequence, one of its last probs_last positions, query head of the group).
 * Outputs <p, p^>, |p|^2, |p^|^2 (rows past a short sequence's length write zeros). */
__global__ void __launch_bounds__(ROW_WARPS * 32) k_probs(kc_attn_args a) {
  extern __shared__ float smq[];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, D = a.D;
  int64_t row = (int64_t)blockIdx.x * ROW_WARPS + warp;
  if (row >= a.n_rows) return;
  int plan = blockIdx.y;
  double *out = a.rows_out + ((int64_t)plan * a.n_rows + row) * a.n_fields;
  int64_t s = row / ((int64_t)a.probs_last * a.G);
  int i = (int)((row / a.G) % a.probs_last), g = a.head * a.G + (int)(row % a.G);
  int64_t kb = a.seq_off[s], len = a.seq_off[s + 1] - kb, P = len < a.probs_last ? len : a.probs_last;
  if (i >= P) {
    if (lane == 0) out[0] = out[1] = out[2] = 0.0;
    return;
  }
  int64_t t = kb + len - P + i, ke = t + 1;
  float *qs = smq + warp * D;
  const float *q = a.q + (t * a.Hq + g) * D;
  for (int j = lane; j < D; j += 32) qs[j] = q[j];
  __syncwarp();
  const float *K = a.k + (int64_t)a.head * D, *Kh = a.keff + plan * a.plan_stride;
  int64_t ks = (int64_t)a.Hkv * D;
  const float c = 1.0f / sqrtf((float)D);
  float mx = -INFINITY, mh = -INFINITY;
  for (int64_t j = kb + lane; j < ke; j += 32) {
    mx = fmaxf(mx, dotf(qs, K + j * ks, D));
    mh = fmaxf(mh, dotf(qs, Kh + j * D, D));
  }
  mx = warp_max_f(mx);
  mh = warp_max_f(mh);
  double sx = 0, shh = 0;
  for (int64_t j = kb + lane; j < ke; j += 32) {
    sx += (double)expf((dotf(qs, K + j * ks, D) - mx) * c);
    shh += (double)expf((dotf(qs, Kh + j * D, D) - mh) * c);
  }
  sx = warp_sum_dd(sx);
  shh = warp_sum_dd(shh);
  double pd = 0, pn = 0, ph2 = 0;
  for (int64_t j = kb + lane; j < ke; j += 32) {
    float p = (float)((double)expf((dotf(qs, K + j * ks, D) - mx) * c) / sx);
    double ph = (double)expf((dotf(qs, Kh + j * D, D) - mh) * c) / shh;
    pd += ph * p;
    pn += (double)p * p;
    ph2 += ph * ph;
  }
  pd = warp_sum_dd(pd);
  pn = warp_sum_dd(pn);
  ph2 = warp_sum_dd(ph2);
  if (lane == 0) {
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

int kc_attn_launch(int mode, const kc_attn_args *a, int n_y, sq_err *e) {
  if (a->n_rows <= 0) return SQ_OK;
  if (a->D % 4)
    return sq_fail(e, SQ_EINPUT, "cuda backend: head_dim %d is not a multiple of 4", a->D);
  dim3 grid((unsigned)((a->n_rows + ROW_WARPS - 1) / ROW_WARPS), (unsigned)n_y);
  switch (mode) {
  case KC_REF_ATTN: return launch_rows<KC_REF_ATTN>(a, grid, e);
  case KC_REF_RANDQ: return launch_rows<KC_REF_RANDQ>(a, grid, e);
  case KC_EVAL_ATTN:
    if (a->gqa && a->G == 4 && a->D <= 32 * GQA_NDL) {
      size_t smem = ((size_t)ROW_WARPS * 4 * a->D + 2 * (size_t)TILE * (a->D + KPAD) + (size_t)TILE * a->D) * sizeof(float);
      dim3 g2((unsigned)((a->n_rows / 4 + ROW_WARPS - 1) / ROW_WARPS), (unsigned)n_y);
      cudaCheck(cudaFuncSetAttribute(k_attn_gqa<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
      k_attn_gqa<4><<<g2, ROW_WARPS * 32, smem>>>(*a);
      launchCheck();
      return SQ_OK;
    }
    return launch_rows<KC_EVAL_ATTN>(a, grid, e);
  case KC_EVAL_RANDQ: return launch_rows<KC_EVAL_RANDQ>(a, grid, e);
  case KC_EVAL_PROBS:
    k_probs<<<grid, ROW_WARPS * 32, (size_t)ROW_WARPS * a->D * sizeof(float)>>>(*a);
    launchCheck();
    return SQ_OK;
  default: return sq_fail(e, SQ_EFAIL, "%s:%d: unknown attention mode %d", __FILE__, __LINE__, mode);
  }
}
