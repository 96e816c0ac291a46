/* kcuda_fast: the fused tensor-core encoder (see kcuda_fast.cuh for the pipeline). Why this
 * shape: at D = 128 the projection is 64 FLOP per input byte, more than fp32 FFMA can feed at
 * HBM speed, so it runs on the fp16 tensor cores; everything else (norm, quantise, pack) stays in
 * registers and shared memory so that each input byte is read from HBM once and only the packed
 * codes are written back. One block per SM, persistent over a contiguous range of tiles, so a
 * block reloads a rotation only when its range crosses into the next segment, and the input
 * streams in through a ring of STAGES tiles filled by 2-D TMA copies (one per tile), so HBM
 * stays busy while a tile is coded.
 * The projection's results stay in the MMA's registers and are quantised there. */
#include <string.h>
#include <cudaTypedefs.h>
#include "kcuda_fast.cuh"
extern "C" {
#include "cb_cells.h"
}

#define KF_TM 64         /* rows per tile */
#define KF_THREADS 512   /* 16 warps: warp w projects rows 16 (w & 3) .. +15, columns (w >> 2) D/4 .. +D/4-1 */
#define KF_LO_SCALE 2048.0f
/* Quantisation without a search: the cell tables of src/cb_cells.h (the argument for their
 * exactness is there; tests/test_cb_cells.c checks it on the host with the same functions). */
/* What a coordinate's field holds (S.par[i].w as bits: 0-1 the kind, 2-6 b, 7-17 the last cell,
 * 18-29 the offset of b's cells in the table). */
enum { KF_DROP = 0, KF_LUT = 1, KF_SEARCH = 2, KF_HALF = 3 };

template <int D, int PASSES>
struct kf_cfg {
  static constexpr int LDH = D + 8;                           /* fp16 row pitch (halves): ldmatrix without conflicts */
  static constexpr int V4 = D / 4;                            /* float4 per row */
  static constexpr int NLOAD = KF_TM * V4 / KF_THREADS;       /* float4 each thread copies per tile */
  static constexpr int CPL = D / 32;                          /* coordinates per lane in pack */
  static constexpr int WCOLS = D / 4;                         /* output columns per warp */
  static constexpr int NT = WCOLS / 8;                        /* n8 tiles per warp */
  static constexpr int STAGES = PASSES == 3 ? 2 : 4;          /* tiles of input in flight (TMA bulk copies) */
  static constexpr int MAX_CODE = 2 + 2 * D;                  /* bytes: fp16 norm + D fp16 coords */
  static constexpr int CODE_WORDS = ((KF_TM * MAX_CODE + 3) / 4 + 1 + 3) / 4 * 4; /* keeps 16-B alignment */
  static constexpr size_t STAGE_BYTES = (size_t)KF_TM * D * 4;
  static constexpr size_t R_BYTES = (size_t)D * LDH * 2;
  static constexpr size_t U_BYTES = (size_t)KF_TM * LDH * 2; /* also the indices [TM][LDH] u16 after the MMA */
  static constexpr size_t SMEM = STAGES * STAGE_BYTES + (R_BYTES + U_BYTES) * (PASSES == 3 ? 2 : 1) +
                                 CODE_WORDS * 4 + CB_CELLS_ALL * 8 + (CB_MAX_BITS + 1) * 256 * 4 + D * 16 +
                                 D * 8 + KF_TM * 12 + 3 * 16 * 4 + STAGES * 8;
  static_assert(NLOAD * KF_THREADS == KF_TM * V4, "whole tiles per thread");
};

/* The segment of tile t, scanning on from hint (tiles are in segment order). */
__device__ __forceinline__ int kf_seg_of(const kc_fast_seg *segs, int nseg, int64_t t, int hint) {
  int s = hint < 0 ? 0 : hint;
  while (s + 1 < nseg && t >= segs[s + 1].tile0) s++;
  return s;
}

/* The block's shared memory, carved once. */
template <int D, int PASSES>
struct kf_smem {
  float *stage;           /* [STAGES][TM][D] input rows (TMA) */
  __half *Rh, *Rl;        /* rotation hi (and lo x 2^11) [D][LDH], row n = output coordinate n */
  __half *Uh, *Ul;        /* unit rows hi (and lo x 2^11) [TM][LDH] ... */
  uint16_t *idx;          /* ... aliased by the fields [TM][LDH] after the MMA */
  uint32_t *cw;           /* the tile's bit stream */
  uint2 *lut;             /* cells: {boundary inside (float bits) or +inf, #{boundaries below}} */
  float *bnd;             /* the family's boundaries [b][256], +inf after the last */
  float4 *par;            /* [D] {1/scale, iw/scale, T iw, meta} */
  int *bitpos, *bits;     /* [D] */
  float *nscale, *rinv;   /* [TM] y multiplier (|x| when the plan does not normalise); 1/|x| or 1 */
  uint32_t *norm16;       /* [TM] fp16 bits of |x| */
  float *lut_iw, *lut_Tiw;/* [b] 1 / cell width, T / cell width */
  int *lut_ok;            /* [b] the table is usable */
  uint64_t *full;         /* [STAGES] mbarriers: the stage's rows have landed */
};

template <int D, int PASSES>
__device__ __forceinline__ kf_smem<D, PASSES> kf_carve(unsigned char *sm) {
  typedef kf_cfg<D, PASSES> C;
  const int p3 = PASSES == 3;
  kf_smem<D, PASSES> S;
  S.stage = (float *)sm;
  sm += C::STAGES * C::STAGE_BYTES;
  S.Rh = (__half *)sm;
  S.Rl = (__half *)(sm + C::R_BYTES);
  sm += C::R_BYTES * (p3 ? 2 : 1);
  S.Uh = (__half *)sm;
  S.Ul = (__half *)(sm + C::U_BYTES);
  S.idx = (uint16_t *)sm;
  sm += C::U_BYTES * (p3 ? 2 : 1);
  S.cw = (uint32_t *)sm;
  S.lut = (uint2 *)(S.cw + C::CODE_WORDS);
  S.bnd = (float *)(S.lut + CB_CELLS_ALL);
  S.par = (float4 *)(S.bnd + (CB_MAX_BITS + 1) * 256);
  S.bitpos = (int *)(S.par + D);
  S.bits = S.bitpos + D;
  S.nscale = (float *)(S.bits + D);
  S.rinv = S.nscale + KF_TM;
  S.norm16 = (uint32_t *)(S.rinv + KF_TM);
  S.lut_iw = (float *)(S.norm16 + KF_TM);
  S.lut_Tiw = S.lut_iw + 16;
  S.lut_ok = (int *)(S.lut_Tiw + 16);
  S.full = (uint64_t *)(S.lut_ok + 16);
  return S;
}

/* The input ring: one TMA copy per tile that completes on the stage's mbarrier. Unlike
 * per-thread loads (or cp.async) it does not hold the block's warps while HBM delivers. */
__device__ __forceinline__ uint32_t kf_smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void kf_bar_init(uint64_t *bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(kf_smem_addr(bar)));
}
__device__ __forceinline__ void kf_bar_expect(uint64_t *bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(kf_smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void kf_bar_wait(uint64_t *bar, uint32_t parity) {
  uint32_t a = kf_smem_addr(bar), done = 0;
  while (!done)
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done) : "r"(a), "r"(parity) : "memory");
}
/* Thread 0 starts the copy of tile t's 64 rows into dst: one TMA op on the segment's 2-D tensor
 * map (rows past the segment's end arrive as zeros and count towards the bytes). */
template <int D>
__device__ __forceinline__ void kf_issue_tile(const kc_fast_seg *segs, int nseg, int64_t t, int hint, float *dst,
                                              uint64_t *bar) {
  const kc_fast_seg *g = &segs[kf_seg_of(segs, nseg, t, hint)];
  int row0 = (int)((t - g->tile0) * KF_TM);
  kf_bar_expect(bar, (uint32_t)(KF_TM * D * 4));
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
               ::"r"(kf_smem_addr(dst)), "l"(&g->tmap), "r"(0), "r"(row0), "r"(kf_smem_addr(bar)) : "memory");
}

/* The codebook's cell tables (cb_cells.h) from the boundaries in S.bnd: warp b-1 finds T for b
 * bits (its lanes check the boundaries of each attempt), then all threads fill the cells. */
template <int D, int PASSES>
__device__ void kf_build_lut(const kf_smem<D, PASSES> &S) {
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  if (warp < CB_MAX_BITS) {
    int b = warp + 1, nb = (1 << b) - 1, ok = 0;
    const float *bd = S.bnd + b * 256;
    float iw = 0.0f, Tiw = 0.0f;
    for (int att = 0; att < CB_CELLS_TRIES && !ok; att++) {
      cb_cells_try(bd, b, att, &iw, &Tiw);
      int bad = 0;
      for (int k = lane; k < nb; k += 32) bad |= cb_cells_bad(bd, k, iw, Tiw);
      ok = !__any_sync(0xffffffffu, bad);
    }
    if (lane == 0) {
      S.lut_iw[b] = iw;
      S.lut_Tiw[b] = Tiw;
      S.lut_ok[b] = ok;
    }
  }
  __syncthreads();
  for (int b = 1; b <= CB_MAX_BITS; b++) {
    if (!S.lut_ok[b]) continue;
    for (int c = tid; c < CB_CELLS(b); c += KF_THREADS) {
      float inside;
      unsigned below;
      cb_cells_entry(S.bnd + b * 256, b, S.lut_iw[b], S.lut_Tiw[b], c, &inside, &below);
      S.lut[CB_CELLS_OFF(b) + c] = make_uint2(__float_as_uint(inside), below);
    }
  }
}

/* A new segment: its rotation, codebook tables and per-coordinate parameters. Returns (in all
 * threads) bit 0: every coordinate uses the cell table; bit 1: every field has <= 8 bits. */
template <int D, int PASSES>
__device__ int kf_load_segment(const kc_fast_seg *g, const float *cb_boundary, const kf_smem<D, PASSES> &S) {
  typedef kf_cfg<D, PASSES> C;
  const int tid = threadIdx.x;
  __syncthreads(); /* the previous segment's tables are no longer read */
  if (g->rh)
    for (int q = tid; q < D * D / 8; q += KF_THREADS) {
      int i = q / (D / 8), j8 = (q % (D / 8)) * 8;
      *(uint4 *)(S.Rh + i * C::LDH + j8) = *(const uint4 *)(g->rh + i * D + j8);
      if (PASSES == 3) *(uint4 *)(S.Rl + i * C::LDH + j8) = *(const uint4 *)(g->rl + i * D + j8);
    }
  const float *bsrc = cb_boundary + g->side.family * (CB_MAX_BITS + 1) * 256;
  for (int q = tid; q < (CB_MAX_BITS + 1) * 256; q += KF_THREADS) {
    int b = q >> 8, k = q & 255;
    S.bnd[q] = b >= 1 && k == (1 << b) - 1 ? INFINITY : bsrc[q]; /* sentinel after the last */
  }
  __syncthreads();
  kf_build_lut(S);
  int simple = 1, narrow = 1;
  if (tid < D) {
    int b = g->side.bits[tid], q = b >= 1 && b <= CB_MAX_BITS;
    int kind = b == 0 ? KF_DROP : b == PLAN_BITS_FP16 ? KF_HALF : q && S.lut_ok[b] ? KF_LUT : KF_SEARCH;
    float qis = q ? 1.0f / g->side.scale[tid] : 0.0f, iw = kind == KF_LUT ? S.lut_iw[b] : 0.0f;
    uint32_t meta = kind | (uint32_t)b << 2 | (kind == KF_LUT ? (uint32_t)(CB_CELLS(b) - 1) << 7 | (uint32_t)CB_CELLS_OFF(b) << 18 : 0u);
    S.par[tid] = make_float4(qis, qis * iw, kind == KF_LUT ? S.lut_Tiw[b] : 0.0f, __uint_as_float(meta));
    S.bits[tid] = b;
    S.bitpos[tid] = g->side.bitpos[tid];
    simple = kind == KF_LUT;
    narrow = b <= 8;
  }
  simple = __syncthreads_and(simple);
  narrow = __syncthreads_and(narrow);
  return simple | narrow << 1;
}

/* A: norms (fp32: the norm is stored in fp16) and unit rows in fp16 (hi, lo), from the staged
 * rows. A row's float4s sit in V4 adjacent lanes. */
template <int D, int PASSES>
__device__ __forceinline__ void kf_prep_rows(const float *X, int normalize, int has_rot, const kf_smem<D, PASSES> &S) {
  typedef kf_cfg<D, PASSES> C;
#pragma unroll
  for (int k = 0; k < C::NLOAD; k++) {
    int q = threadIdx.x + k * KF_THREADS, row = q / C::V4, c4 = q % C::V4;
    float4 v = *(const float4 *)(X + row * D + 4 * c4);
    float ss = v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
#pragma unroll
    for (int o = C::V4 / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    float nrm = sqrtf(ss), inv = nrm > 0.0f ? 1.0f / nrm : 0.0f;
    if (c4 == 0) {
      S.nscale[row] = has_rot && !normalize ? nrm : 1.0f;
      S.rinv[row] = normalize ? inv : 1.0f;
      S.norm16[row] = __half_as_ushort(__float2half_rn(nrm));
    }
    if (!has_rot) continue; /* the identity reads the staged rows itself */
    float2 u01 = make_float2(v.x * inv, v.y * inv), u23 = make_float2(v.z * inv, v.w * inv);
    __half2 h01 = __float22half2_rn(u01), h23 = __float22half2_rn(u23);
    *(uint2 *)(S.Uh + row * C::LDH + c4 * 4) = make_uint2(*(uint32_t *)&h01, *(uint32_t *)&h23);
    if (PASSES == 3) {
      float2 f01 = __half22float2(h01), f23 = __half22float2(h23);
      __half2 l01 = __float22half2_rn(make_float2((u01.x - f01.x) * KF_LO_SCALE, (u01.y - f01.y) * KF_LO_SCALE));
      __half2 l23 = __float22half2_rn(make_float2((u23.x - f23.x) * KF_LO_SCALE, (u23.y - f23.y) * KF_LO_SCALE));
      *(uint2 *)(S.Ul + row * C::LDH + c4 * 4) = make_uint2(*(uint32_t *)&l01, *(uint32_t *)&l23);
    }
  }
}

__device__ __forceinline__ void kf_ldsm4(uint32_t r[4], const __half *p) {
  uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void kf_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* B: this warp's 16 x D/4 block of Y = U . rot^T on the tensor cores (mma m16n8k16, fp32
 * accumulation), left in registers: acc[j] holds rows g, g+8 (g = lane / 4) and columns
 * c, c+1 (c = col0 + 8 j + 2 (lane % 4)) as {(g,c), (g,c+1), (g+8,c), (g+8,c+1)}. */
template <int D, int PASSES>
__device__ __forceinline__ void kf_project(const kf_smem<D, PASSES> &S, int rt, int col0, float acc[][4]) {
  typedef kf_cfg<D, PASSES> C;
  const int lane = threadIdx.x & 31, m = lane >> 3, r = lane & 7;
  float cor[C::NT][4];
#pragma unroll
  for (int j = 0; j < C::NT; j++)
#pragma unroll
    for (int q = 0; q < 4; q++) acc[j][q] = cor[j][q] = 0.0f;
  const int arow = (rt * 16 + (m & 1) * 8 + r) * C::LDH + (m >> 1) * 8;
  const int brow = (col0 + (m >> 1) * 8 + r) * C::LDH + (m & 1) * 8;
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++) {
    uint32_t a[4], al[4];
    kf_ldsm4(a, S.Uh + arow + ks * 16);
    if (PASSES == 3) kf_ldsm4(al, S.Ul + arow + ks * 16);
#pragma unroll
    for (int jp = 0; jp < C::NT / 2; jp++) {
      uint32_t b[4];
      kf_ldsm4(b, S.Rh + brow + jp * 16 * C::LDH + ks * 16);
      kf_mma(acc[2 * jp], a, b[0], b[1]);
      kf_mma(acc[2 * jp + 1], a, b[2], b[3]);
      if (PASSES == 3) {
        kf_mma(cor[2 * jp], al, b[0], b[1]);
        kf_mma(cor[2 * jp + 1], al, b[2], b[3]);
        kf_ldsm4(b, S.Rl + brow + jp * 16 * C::LDH + ks * 16);
        kf_mma(cor[2 * jp], a, b[0], b[1]);
        kf_mma(cor[2 * jp + 1], a, b[2], b[3]);
      }
    }
  }
  if (PASSES == 3)
#pragma unroll
    for (int j = 0; j < C::NT; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[j][q] += cor[j][q] * (1.0f / KF_LO_SCALE);
}

/* Where this thread's accumulator elements sit (the m16n8 layout): acc[j] = rows ra, rb = ra + 8,
 * columns col(j), col(j) + 1. */
struct kf_frag {
  int ra, rb, c0;
  __device__ kf_frag(int rt, int col0) {
    int lane = threadIdx.x & 31;
    ra = rt * 16 + (lane >> 2), rb = ra + 8, c0 = col0 + 2 * (lane & 3);
  }
  __device__ int col(int j) const { return c0 + 8 * j; }
};

/* B without a rotation: y is the staged row itself (x / |x| when the plan normalises). */
template <int D, int PASSES>
__device__ __forceinline__ void kf_identity(const float *X, const kf_smem<D, PASSES> &S, int rt, int col0, float acc[][4]) {
  typedef kf_cfg<D, PASSES> C;
  const kf_frag f(rt, col0);
  const float ia = S.rinv[f.ra], ib = S.rinv[f.rb];
#pragma unroll
  for (int j = 0; j < C::NT; j++) {
    int c = f.col(j);
    float2 xa = *(const float2 *)(X + f.ra * D + c), xb = *(const float2 *)(X + f.rb * D + c);
    acc[j][0] = xa.x * ia, acc[j][1] = xa.y * ia, acc[j][2] = xb.x * ib, acc[j][3] = xb.y * ib;
  }
}

/* The field of y through the cell table (cb_cells.h): t = y / scale, cell = floor(y (iw / scale)
 * + T iw + 1/2) clamped (the conversion saturates negatives and NaN to 0). */
__device__ __forceinline__ uint32_t kf_q_lut(float y, float4 p, const uint2 *lut) {
  float t = y * p.x, cf = fmaf(y, p.y, p.z);
  uint32_t meta = __float_as_uint(p.w);
  uint32_t c = cb_cells_index(cf, (meta >> 7) & 0x7ffu) + (meta >> 18);
  uint2 e = lut[c];
  return e.y + (t > __uint_as_float(e.x));
}
/* Any field kind: dropped, fp16, cell table, or the search. */
__device__ __forceinline__ uint32_t kf_q_any(float y, float4 p, const uint2 *lut, const float *bnd) {
  uint32_t meta = __float_as_uint(p.w), kind = meta & 3u;
  if (kind == KF_LUT) return kf_q_lut(y, p, lut);
  if (kind == KF_DROP) return 0u;
  if (kind == KF_HALF) return __half_as_ushort(__float2half_rn(y));
  int b = (int)((meta >> 2) & 31u);
  return (uint32_t)cb_quantize(bnd + b * 256, b, y * p.x);
}

/* C1: quantise this thread's coordinates (held as the MMA left them) into S.idx. */
template <int D, int PASSES>
__device__ __forceinline__ void kf_quantise(const kf_smem<D, PASSES> &S, int rt, int col0, const float acc[][4], int simple) {
  typedef kf_cfg<D, PASSES> C;
  const kf_frag f(rt, col0);
  const float na = S.nscale[f.ra], nb = S.nscale[f.rb];
#pragma unroll
  for (int j = 0; j < C::NT; j++) {
    int c = f.col(j);
    float4 p0 = S.par[c], p1 = S.par[c + 1];
    uint32_t a0, a1, b0, b1;
    if (simple) {
      a0 = kf_q_lut(acc[j][0] * na, p0, S.lut), a1 = kf_q_lut(acc[j][1] * na, p1, S.lut);
      b0 = kf_q_lut(acc[j][2] * nb, p0, S.lut), b1 = kf_q_lut(acc[j][3] * nb, p1, S.lut);
    } else {
      a0 = kf_q_any(acc[j][0] * na, p0, S.lut, S.bnd), a1 = kf_q_any(acc[j][1] * na, p1, S.lut, S.bnd);
      b0 = kf_q_any(acc[j][2] * nb, p0, S.lut, S.bnd), b1 = kf_q_any(acc[j][3] * nb, p1, S.lut, S.bnd);
    }
    *(uint32_t *)(S.idx + f.ra * C::LDH + c) = a0 | a1 << 16;
    *(uint32_t *)(S.idx + f.rb * C::LDH + c) = b0 | b1 << 16;
  }
}

/* OR a run of <= 32 (or <= 64) bits (bit 0 first) into the stream at bit `pos`. */
__device__ __forceinline__ void kf_or32(uint32_t *cw, int64_t pos, uint32_t run) {
  int w0 = (int)(pos >> 5), sh = (int)(pos & 31);
  uint32_t lo = run << sh, hi = __funnelshift_l(run, 0u, sh); /* run >> (32 - sh); 0 for sh = 0 */
  if (lo) atomicOr(&cw[w0], lo);
  if (hi) atomicOr(&cw[w0 + 1], hi);
}
__device__ __forceinline__ void kf_or64(uint32_t *cw, int64_t pos, uint64_t run) {
  int w0 = (int)(pos >> 5), sh = (int)(pos & 31);
  uint64_t low = run << sh;
  uint32_t top = sh ? (uint32_t)(run >> (64 - sh)) : 0u;
  if ((uint32_t)low) atomicOr(&cw[w0], (uint32_t)low);
  if ((uint32_t)(low >> 32)) atomicOr(&cw[w0 + 1], (uint32_t)(low >> 32));
  if (top) atomicOr(&cw[w0 + 2], top);
}

/* C2: pack; warp: rows warp, warp + 16, ...; lane: coordinates lane*CPL .. +CPL-1, whose fields
 * are adjacent in the stream, so they go in as one run (32 bits when every field has <= 8). */
template <int D, int PASSES>
__device__ __forceinline__ void kf_pack(const kf_smem<D, PASSES> &S, int nrows, int code_bytes, int norm_off, int narrow) {
  typedef kf_cfg<D, PASSES> C;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i0 = lane * C::CPL, p0 = S.bitpos[i0];
  int qsh[C::CPL];
  uint32_t mul[C::CPL];
#pragma unroll
  for (int c = 0; c < C::CPL; c++) {
    qsh[c] = S.bitpos[i0 + c] - p0;
    mul[c] = S.bits[i0 + c] ? 1u << (qsh[c] & 31) : 0u;
  }
  for (int row = warp; row < nrows; row += KF_THREADS / 32) {
    const uint16_t *ix = S.idx + row * C::LDH + i0;
    uint32_t v[C::CPL];
    if constexpr (C::CPL == 4) {
      uint2 w = *(const uint2 *)ix;
      v[0] = w.x & 0xffffu, v[1] = w.x >> 16, v[2] = w.y & 0xffffu, v[3] = w.y >> 16;
    } else {
      uint32_t w = *(const uint32_t *)ix;
      v[0] = w & 0xffffu, v[1] = w >> 16;
    }
    int64_t pos = (int64_t)row * code_bytes * 8 + p0;
    if (narrow) {
      uint32_t run = 0;
#pragma unroll
      for (int c = 0; c < C::CPL; c++) run += v[c] * mul[c];
      kf_or32(S.cw, pos, run);
    } else {
      uint64_t run = 0;
#pragma unroll
      for (int c = 0; c < C::CPL; c++)
        if (S.bits[i0 + c]) run |= (uint64_t)v[c] << qsh[c];
      kf_or64(S.cw, pos, run);
    }
    if (lane == 0 && norm_off >= 0) kf_or32(S.cw, (int64_t)row * code_bytes * 8 + norm_off, S.norm16[row]);
  }
}

/* D: the tile's rows are contiguous in codes: one coalesced write. */
__device__ __forceinline__ void kf_write_codes(const uint32_t *cw, uint8_t *dst, int64_t nbytes) {
  const int tid = threadIdx.x;
  if (((uintptr_t)dst & 3) == 0) {
    for (int64_t q = tid; q < nbytes / 4; q += KF_THREADS) __stcs((unsigned int *)dst + q, cw[q]);
    for (int64_t q = (nbytes & ~(int64_t)3) + tid; q < nbytes; q += KF_THREADS) dst[q] = ((const uint8_t *)cw)[q];
  } else {
    for (int64_t q = tid; q < nbytes; q += KF_THREADS) dst[q] = ((const uint8_t *)cw)[q];
  }
}

/* One persistent block per SM over a contiguous range of tiles; up to STAGES-1 tiles of input
 * are in flight (TMA) while a tile is coded. PROBE (bench only) leaves phases out: 1 the
 * projection, 2 the quantisation, 4 the write, 8 the packing. */
template <int D, int PASSES, int PROBE>
__global__ void __launch_bounds__(KF_THREADS, 1)
k_encode_fast(const kc_fast_seg *segs, int nseg, int64_t ntiles, const float *cb_boundary) {
  typedef kf_cfg<D, PASSES> C;
  extern __shared__ __align__(128) unsigned char sm[];
  const kf_smem<D, PASSES> S = kf_carve<D, PASSES>(sm);
  int64_t per = (ntiles + gridDim.x - 1) / gridDim.x;
  int64_t t_begin = blockIdx.x * per, t_end = min(ntiles, t_begin + per);
  if (t_begin >= t_end) return;
  const int warp = threadIdx.x >> 5, rt = warp & 3, col0 = (warp >> 2) * C::WCOLS;
  if (threadIdx.x == 0) {
    for (int k = 0; k < C::STAGES; k++) kf_bar_init(&S.full[k]);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int k = 0; k < C::STAGES - 1 && t_begin + k < t_end; k++)
      kf_issue_tile<D>(segs, nseg, t_begin + k, 0, S.stage + k * KF_TM * D, &S.full[k]);
  int cur = -1, flags = 0;
  for (int64_t t = t_begin; t < t_end; t++) {
    const int64_t i = t - t_begin;
    const int st = (int)(i % C::STAGES), nx = (int)((i + C::STAGES - 1) % C::STAGES);
    if (threadIdx.x == 0 && t + C::STAGES - 1 < t_end) /* into the stage tile t-1 used: every thread is past it */
      kf_issue_tile<D>(segs, nseg, t + C::STAGES - 1, cur, S.stage + nx * KF_TM * D, &S.full[nx]);
    kf_bar_wait(&S.full[st], (uint32_t)((i / C::STAGES) & 1));
    __syncthreads(); /* the previous tile's codes have been written out of cw */
    int s = kf_seg_of(segs, nseg, t, cur);
    const kc_fast_seg *g = &segs[s];
    const int has_rot = g->rh != NULL, code_bytes = g->side.code_bytes;
    const int norm_off = g->side.normalize ? g->side.norm_off : -1;
    const int64_t row0 = (t - g->tile0) * KF_TM;
    const int nrows = (int)min((int64_t)KF_TM, g->n - row0);
    if (s != cur) flags = kf_load_segment(g, cb_boundary, S);
    cur = s;
    const float *X = S.stage + st * KF_TM * D;
    kf_prep_rows(X, g->side.normalize, has_rot, S);
    for (int q = threadIdx.x; q < (KF_TM * code_bytes + 3) / 4 + 1; q += KF_THREADS) S.cw[q] = 0;
    __syncthreads();
    float acc[C::NT][4];
    if (!has_rot) kf_identity(X, S, rt, col0, acc);
    else if (!(PROBE & 1)) kf_project(S, rt, col0, acc);
    else
#pragma unroll
      for (int j = 0; j < C::NT; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    __syncthreads(); /* every warp has read U: the indices may overwrite it */
    if (!(PROBE & 2)) kf_quantise(S, rt, col0, acc, flags & 1);
    __syncthreads();
    if (!(PROBE & 8)) kf_pack(S, nrows, code_bytes, norm_off, flags & 2);
    __syncthreads();
    if (!(PROBE & 4)) kf_write_codes(S.cw, g->codes + row0 * code_bytes, (int64_t)nrows * code_bytes);
  }
}

__global__ void k_split_rot(const float *rot, __half *rh, __half *rl, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  __half h = __float2half_rn(rot[i]);
  rh[i] = h;
  if (rl) rl[i] = __float2half_rn((rot[i] - __half2float(h)) * KF_LO_SCALE);
}

int kc_fast_prepare(const plan_side *p, int passes, kc_buf *mats, kc_fast_seg *seg, sq_err *e) {
  if (passes != 1 && passes != 3)
    return sq_fail(e, SQ_EINPUT, "fast encode: passes %d (expected 1 or 3)", passes);
  if (p->qjl_rows > 0)
    return sq_fail(e, SQ_EINPUT, "fast encode: plans with QJL (%d sketch rows) are not supported; use encode",
                   p->qjl_rows);
  if (p->D != 64 && p->D != 128)
    return sq_fail(e, SQ_EINPUT, "fast encode: head_dim %d (supported: 64, 128)", p->D);
  tryCheck(kc_side_of(p, &seg->side, e));
  seg->rh = seg->rl = NULL;
  if (!p->rot) return SQ_OK;
  int n = p->D * p->D;
  /* floats staged behind the halves, converted on the device */
  tryCheck(kc_buf_need(mats, (size_t)n * (2 * sizeof(__half) + sizeof(float)), e));
  __half *rh = (__half *)mats->p, *rl = rh + n;
  float *f = (float *)(rl + n);
  cudaCheck(cudaMemcpy(f, p->rot, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
  k_split_rot<<<(n + 255) / 256, 256>>>(f, rh, passes == 3 ? rl : NULL, n);
  launchCheck();
  seg->rh = rh;
  seg->rl = passes == 3 ? rl : NULL;
  return SQ_OK;
}

template <int D, int PASSES, int PROBE = 0>
static int launch(const kc_fast_seg *segs_dev, int nseg, int64_t ntiles, const float *cbb, sq_err *e) {
  size_t smem = kf_cfg<D, PASSES>::SMEM;
  cudaCheck(cudaFuncSetAttribute(k_encode_fast<D, PASSES, PROBE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  int dev = 0, sms = 0, per_sm = 0;
  cudaCheck(cudaGetDevice(&dev));
  cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_encode_fast<D, PASSES, PROBE>, KF_THREADS, smem));
  if (per_sm < 1) return sq_fail(e, SQ_EFAIL, "fast encode: %zu bytes of shared memory do not fit an SM", smem);
  int64_t grid = (int64_t)sms * per_sm;
  if (grid > ntiles) grid = ntiles;
  k_encode_fast<D, PASSES, PROBE><<<(unsigned)grid, KF_THREADS, smem>>>(segs_dev, nseg, ntiles, cbb);
  launchCheck();
  return SQ_OK;
}

/* The segment's rows as a 2-D fp32 tensor {D, n} with row pitch stride, read in boxes of
 * {D, KF_TM}, by the driver's cuTensorMapEncodeTiled, found through the runtime (no -lcuda). */
typedef PFN_cuTensorMapEncodeTiled_v12000 kf_encode_fn;

/* The driver's cuTensorMapEncodeTiled (looked up per kc_fast_setup: no state kept between calls). */
static int kf_tensor_encoder(kf_encode_fn *out, sq_err *e) {
  cudaDriverEntryPointQueryResult q;
  void *fn = NULL;
  cudaCheck(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
  if (q != cudaDriverEntryPointSuccess || !fn)
    return sq_fail(e, SQ_EFAIL, "%s:%d: the driver has no cuTensorMapEncodeTiled", __FILE__, __LINE__);
  *out = (kf_encode_fn)fn;
  return SQ_OK;
}

static int kf_tensor_map(kf_encode_fn encode, kc_fast_seg *g, int D, sq_err *e) {
  CUtensorMap map;
  cuuint64_t dims[2] = {(cuuint64_t)D, (cuuint64_t)g->n}, pitch[1] = {(cuuint64_t)g->stride * sizeof(float)};
  cuuint32_t box[2] = {(cuuint32_t)D, KF_TM}, estride[2] = {1, 1};
  CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, (void *)g->x, dims, pitch, box, estride,
                      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return sq_fail(e, SQ_EFAIL, "%s:%d: cuTensorMapEncodeTiled failed (%d) for %lld rows of stride %lld", __FILE__,
                   __LINE__, (int)r, (long long)g->n, (long long)g->stride);
  memcpy(&g->tmap, &map, sizeof map);
  return SQ_OK;
}

int kc_fast_setup(kc_fast_seg *segs, int nseg, kc_buf *segs_dev, int64_t *ntiles_out, sq_err *e) {
  *ntiles_out = 0;
  if (nseg < 1) return SQ_OK;
  int D = segs[0].side.D;
  kf_encode_fn encode = NULL; /* looked up at the first segment with rows */
  int64_t ntiles = 0;
  for (int s = 0; s < nseg; s++) {
    if (segs[s].side.D != D)
      return sq_fail(e, SQ_EINPUT, "fast encode: segment %d has head_dim %d, segment 0 has %d", s,
                     segs[s].side.D, D);
    if (segs[s].n < 0 || (segs[s].n > 0 && (segs[s].stride < D || ((uintptr_t)segs[s].x & 15) || (segs[s].stride & 3))))
      return sq_fail(e, SQ_EINPUT, "fast encode: segment %d: rows must be 16-byte aligned with a stride >= D "
                     "that is a multiple of 4 floats", s);
    segs[s].tile0 = ntiles;
    ntiles += (segs[s].n + KF_TM - 1) / KF_TM;
    if (segs[s].n > 0) {
      if (!encode) tryCheck(kf_tensor_encoder(&encode, e));
      tryCheck(kf_tensor_map(encode, &segs[s], D, e));
    }
  }
  tryCheck(kc_buf_need(segs_dev, (size_t)nseg * sizeof *segs, e));
  cudaCheck(cudaMemcpy(segs_dev->p, segs, (size_t)nseg * sizeof *segs, cudaMemcpyHostToDevice));
  *ntiles_out = ntiles;
  return SQ_OK;
}

int kc_fast_run(const kc_buf *segs_dev, int nseg, int64_t ntiles, int D, const float *cb_boundary, int passes,
                int probe, sq_err *e) {
  if (ntiles == 0) return SQ_OK;
  const kc_fast_seg *sd = (const kc_fast_seg *)segs_dev->p;
  if (probe) { /* bench only: phases left out (1 projection, 2 quantisation, 4 write, 8 packing), D 128, 1 pass */
    if (D != 128 || passes != 1) return sq_fail(e, SQ_EINPUT, "fast encode probe: D 128, passes 1 only");
    switch (probe) {
    case 1: return launch<128, 1, 1>(sd, nseg, ntiles, cb_boundary, e);
    case 3: return launch<128, 1, 3>(sd, nseg, ntiles, cb_boundary, e);
    case 9: return launch<128, 1, 9>(sd, nseg, ntiles, cb_boundary, e);
    case 11: return launch<128, 1, 11>(sd, nseg, ntiles, cb_boundary, e);
    case 14: return launch<128, 1, 14>(sd, nseg, ntiles, cb_boundary, e);
    case 15: return launch<128, 1, 15>(sd, nseg, ntiles, cb_boundary, e);
    default: return sq_fail(e, SQ_EINPUT, "fast encode probe %d", probe);
    }
  }
  if (D == 128) return passes == 3 ? launch<128, 3>(sd, nseg, ntiles, cb_boundary, e)
                                   : launch<128, 1>(sd, nseg, ntiles, cb_boundary, e);
  if (D == 64) return passes == 3 ? launch<64, 3>(sd, nseg, ntiles, cb_boundary, e)
                                  : launch<64, 1>(sd, nseg, ntiles, cb_boundary, e);
  return sq_fail(e, SQ_EINPUT, "fast encode: head_dim %d (supported: 64, 128)", D);
}

int kc_fast_encode(kc_fast_seg *segs, int nseg, const float *cb_boundary, int passes, kc_buf *segs_dev,
                   sq_err *e) {
  int64_t ntiles = 0;
  tryCheck(kc_fast_setup(segs, nseg, segs_dev, &ntiles, e));
  return kc_fast_run(segs_dev, nseg, ntiles, nseg ? segs[0].side.D : 0, cb_boundary, passes, 0, e);
}
