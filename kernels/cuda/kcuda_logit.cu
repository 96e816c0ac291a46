/* kcuda_logit: A_j, W_j and the per-key sums k_j . A_j, k_j . W_j of a layer (kcuda_logit.cuh
 * says what they are for). Everything in double, in a fixed order: deterministic run to run. */
#include <stdlib.h>
#include "kcuda_logit.cuh"

#define LG_BT 64    /* tokens per tile */
#define LG_VEC 32   /* query vectors staged per step of k_lg_tile_b */

__device__ __forceinline__ double lg_warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* A_j: per (sequence, KV head), thread d scans the sequence backwards summing the group's queries
 * (the G heads added first, in order). */
__global__ void k_lg_qsum(const float *__restrict__ q, const int64_t *__restrict__ seq_off, int Hq, int G, int D,
                          int64_t nt, double *__restrict__ A) {
  const int s = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
  if (d >= D) return;
  const int64_t b = seq_off[s];
  double acc = 0.0;
#pragma unroll 4
  for (int64_t t = seq_off[s + 1] - 1; t >= b; t--) {
    const float *qt = q + (t * Hq + (int64_t)h * G) * D + d;
    double x = 0.0;
    for (int g = 0; g < G; g++) x += (double)qt[g * D];
    acc += x;
    A[((int64_t)h * nt + t) * D + d] = acc;
  }
}

/* One tile's sum of q q^T over its tokens and the group's heads (vectors in token, head order):
 * thread (r0 + R i, c) owns entries (r0 + R i, c), R = 512 / D, of the D x D matrix. */
template <int D>
__global__ void __launch_bounds__(512) k_lg_tile_b(const float *__restrict__ q, const int64_t *__restrict__ tiles,
                                                   int Hq, int G, int h, double *__restrict__ B) {
  constexpr int R = 512 / D, PER = D / R;
  __shared__ double qs[LG_VEC][D];
  const int tau = blockIdx.x, c = threadIdx.x % D, r0 = threadIdx.x / D;
  const int64_t t0 = tiles[2 * tau];
  const int nvec = (int)(tiles[2 * tau + 1] - t0) * G;
  double acc[PER];
#pragma unroll
  for (int i = 0; i < PER; i++) acc[i] = 0.0;
  for (int v0 = 0; v0 < nvec; v0 += LG_VEC) {
    __syncthreads();
    for (int i = threadIdx.x; i < LG_VEC * D; i += 512) {
      const int v = v0 + i / D, d = i % D;
      qs[i / D][d] = v < nvec ? (double)q[((t0 + v / G) * Hq + (int64_t)h * G + v % G) * D + d] : 0.0;
    }
    __syncthreads();
    const int nv = nvec - v0 < LG_VEC ? nvec - v0 : LG_VEC;
    for (int v = 0; v < nv; v++) {
      const double qc = qs[v][c];
#pragma unroll
      for (int i = 0; i < PER; i++) acc[i] = fma(qs[v][r0 + R * i], qc, acc[i]);
    }
  }
  double *out = B + (int64_t)tau * D * D;
#pragma unroll
  for (int i = 0; i < PER; i++) out[(r0 + R * i) * D + c] = acc[i];
}

/* B_tau -> B_>tau (the sum over the later tiles of the same sequence), element by element. */
__global__ void k_lg_tile_suffix(double *B, const int64_t *__restrict__ seq_tile, int DD) {
  const int el = blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
  if (el >= DD) return;
  double run = 0.0;
  for (int64_t tau = seq_tile[s + 1] - 1; tau >= seq_tile[s]; tau--) {
    double *p = B + tau * DD + el;
    const double x = *p;
    *p = run;
    run += x;
  }
}

/* W_j = B_>tau k_j (B symmetric: lane reads row e, coalesced) + sum over the tile's tokens
 * t >= j and the group's heads of (q . k_j) q; then k_j . A_j and k_j . W_j. A warp per key. */
template <int D>
__global__ void k_lg_w(const float *__restrict__ q, const float *__restrict__ k, const int64_t *__restrict__ tiles,
                       int Hq, int Hkv, int G, int h, int64_t nt, const double *__restrict__ B,
                       const double *__restrict__ A, double *__restrict__ W, double *__restrict__ s12) {
  constexpr int NL = D / 32;
  const int tau = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  const int64_t t0 = tiles[2 * tau], t1 = tiles[2 * tau + 1];
  const double *Bt = B + (int64_t)tau * D * D;
  for (int64_t j = t0 + warp; j < t1; j += nw) {
    const float *kj = k + (j * Hkv + h) * D;
    double kl[NL], acc[NL];
#pragma unroll
    for (int i = 0; i < NL; i++) kl[i] = kj[lane + 32 * i], acc[i] = 0.0;
#pragma unroll
    for (int i = 0; i < NL; i++)
      for (int src = 0; src < 32; src++) {
        const double ke = __shfl_sync(0xffffffffu, kl[i], src);
        const double *row = Bt + (int64_t)(32 * i + src) * D + lane;
#pragma unroll
        for (int m = 0; m < NL; m++) acc[m] = fma(row[32 * m], ke, acc[m]);
      }
    for (int64_t t = j; t < t1; t++)
      for (int g = 0; g < G; g++) {
        const float *qt = q + (t * Hq + (int64_t)h * G + g) * D + lane;
        double qv[NL], dot = 0.0;
#pragma unroll
        for (int i = 0; i < NL; i++) qv[i] = qt[32 * i], dot = fma(qv[i], kl[i], dot);
        dot = lg_warp_sum(dot);
#pragma unroll
        for (int i = 0; i < NL; i++) acc[i] = fma(dot, qv[i], acc[i]);
      }
    const int64_t row = (int64_t)h * nt + j;
    double s1 = 0.0, s2 = 0.0;
#pragma unroll
    for (int i = 0; i < NL; i++) {
      W[row * D + lane + 32 * i] = acc[i];
      s1 = fma(kl[i], A[row * D + lane + 32 * i], s1);
      s2 = fma(kl[i], acc[i], s2);
    }
    s1 = lg_warp_sum(s1);
    s2 = lg_warp_sum(s2);
    if (lane == 0) s12[2 * row] = s1, s12[2 * row + 1] = s2;
  }
}

/* The tiles: LG_BT tokens from each sequence's start (the last one of a sequence shorter), and
 * each sequence's first tile. Host array [n_tiles][2] then [n_seq + 1]. */
static int64_t *lg_tiles(const int64_t *seq_off, int n_seq, int64_t *n_tiles) {
  int64_t n = 0;
  for (int s = 0; s < n_seq; s++) n += (seq_off[s + 1] - seq_off[s] + LG_BT - 1) / LG_BT;
  int64_t *t = (int64_t *)malloc((size_t)(2 * n + n_seq + 1) * sizeof(int64_t));
  if (!t) return NULL;
  int64_t *first = t + 2 * n, i = 0;
  for (int s = 0; s < n_seq; s++) {
    first[s] = i;
    for (int64_t a = seq_off[s]; a < seq_off[s + 1]; a += LG_BT, i++) {
      t[2 * i] = a;
      t[2 * i + 1] = a + LG_BT < seq_off[s + 1] ? a + LG_BT : seq_off[s + 1];
    }
  }
  first[n_seq] = i;
  *n_tiles = n;
  return t;
}

template <int D>
static int lg_head(kc_logit *lg, const float *q, const float *k, const int64_t *tiles_d, int64_t n_tiles, int n_seq,
                   int64_t nt, int Hq, int Hkv, int h, sq_err *e) {
  const int G = Hq / Hkv;
  double *B = (double *)lg->b.p;
  k_lg_tile_b<D><<<(unsigned)n_tiles, 512>>>(q, tiles_d, Hq, G, h, B);
  launchCheck();
  k_lg_tile_suffix<<<dim3((D * D + 255) / 256, (unsigned)n_seq), 256>>>(B, tiles_d + 2 * n_tiles, D * D);
  launchCheck();
  k_lg_w<D><<<(unsigned)n_tiles, 256>>>(q, k, tiles_d, Hq, Hkv, G, h, nt, B, (const double *)lg->a.p,
                                        (double *)lg->w.p, (double *)lg->s.p);
  launchCheck();
  return SQ_OK;
}

int kc_logit_prep(kc_logit *lg, const float *q, const float *k, const int64_t *seq_off, const int64_t *seq_off_dev,
                  int n_seq, int64_t nt, int Hq, int Hkv, int D, sq_err *e) {
  lg->ready = 0;
  if (D != 64 && D != 128) return sq_fail(e, SQ_EFAIL, "%s:%d: kc_logit_prep: head_dim %d (64 or 128)", __FILE__,
                                          __LINE__, D);
  int64_t n_tiles = 0;
  int64_t *tiles = lg_tiles(seq_off, n_seq, &n_tiles);
  if (!tiles) return sq_fail(e, SQ_EFAIL, "kc_logit_prep: out of memory");
  size_t tb = (size_t)(2 * n_tiles + n_seq + 1) * sizeof(int64_t);
  int rc = kc_buf_need(&lg->tiles, tb, e);
  if (!rc && cudaMemcpy(lg->tiles.p, tiles, tb, cudaMemcpyHostToDevice) != cudaSuccess)
    rc = sq_fail(e, SQ_EFAIL, "%s:%d: kc_logit_prep: tile table upload", __FILE__, __LINE__);
  free(tiles);
  if (rc) return rc;
  tryCheck(kc_buf_need(&lg->a, (size_t)(Hkv * nt * D) * sizeof(double), e));
  tryCheck(kc_buf_need(&lg->w, (size_t)(Hkv * nt * D) * sizeof(double), e));
  tryCheck(kc_buf_need(&lg->s, (size_t)(Hkv * nt * 2) * sizeof(double), e));
  tryCheck(kc_buf_need(&lg->b, (size_t)n_tiles * D * D * sizeof(double), e));
  k_lg_qsum<<<dim3((unsigned)n_seq, (unsigned)Hkv), D>>>(q, seq_off_dev, Hq, Hq / Hkv, D, nt, (double *)lg->a.p);
  launchCheck();
  const int64_t *td = (const int64_t *)lg->tiles.p;
  for (int h = 0; h < Hkv; h++)
    tryCheck(D == 128 ? lg_head<128>(lg, q, k, td, n_tiles, n_seq, nt, Hq, Hkv, h, e)
                      : lg_head<64>(lg, q, k, td, n_tiles, n_seq, nt, Hq, Hkv, h, e));
  lg->ready = 1;
  return SQ_OK;
}
