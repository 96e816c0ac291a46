/* kcuda_fast: the fused tensor-core encoder (see kcuda_fast.cuh for the pipeline). Why this
 * shape: at D = 128 the projection is 64 FLOP per input byte, more than fp32 FFMA can feed at
 * HBM speed, so it runs on the fp16 tensor cores; everything else (norm, quantise, pack) stays in
 * registers and shared memory so that each input byte is read from HBM once and only the packed
 * codes are written back. Blocks are persistent over a contiguous range of tiles, so a block
 * reloads a rotation only when its range crosses into the next segment, and the next tile's
 * rows are loaded into registers while the current tile is projected and packed. */
#include <mma.h>
#include "kcuda_fast.cuh"

using namespace nvcuda;

#define KF_TM 64         /* rows per tile */
#define KF_THREADS 256   /* 8 warps */
#define KF_LO_SCALE 2048.0f
/* Quantisation without a search: for b bits the range [-T, T] (T just past the outermost
 * boundary) is cut into 4 * 2^b equal cells, narrower than the closest two boundaries of every
 * Lloyd-Max table (the finest, gauss b = 8, needs 520 cells), so a cell holds at most one
 * boundary; lut[cell] = #{boundaries below the cell}. idx = lut + (t > next) - (t <= previous)
 * then equals the search's #{k : t > boundary[k]}, also when float rounding puts t one cell off.
 * A table where some cell holds two boundaries is marked and searched instead. */
#define KF_LUT_CELLS(b) (4 << (b))
#define KF_LUT_OFF(b) (4 * ((1 << (b)) - 2))
#define KF_LUT_BYTES (4 * ((1 << (CB_MAX_BITS + 1)) - 2))

template <int D, int PASSES>
struct kf_cfg {
  static constexpr int LDH = D + 8;                           /* fp16 row pitch (halves) */
  static constexpr int LDY = D + 4;                           /* fp32 row pitch (floats) */
  static constexpr int V4 = D / 4;                            /* float4 per row */
  static constexpr int NLOAD = KF_TM * V4 / KF_THREADS;       /* float4 each thread loads */
  static constexpr int CPL = D / 32;                          /* coordinates per lane in pack */
  static constexpr int CT = (KF_TM / 16) * (D / 16) / 8;      /* 16x16 output tiles per warp */
  static constexpr int MAX_CODE = 2 + 2 * D;                  /* bytes: fp16 norm + D fp16 coords */
  static constexpr int CODE_WORDS = ((KF_TM * MAX_CODE + 3) / 4 + 1 + 3) / 4 * 4; /* keeps 16-B alignment */
  static constexpr size_t R_BYTES = (size_t)D * LDH * 2;
  static constexpr size_t U_BYTES = (size_t)KF_TM * LDH * 2 * (PASSES == 3 ? 2 : 1);
  static constexpr size_t Y_BYTES = (size_t)KF_TM * LDY * 4;
  static constexpr size_t BUF_BYTES = U_BYTES > Y_BYTES ? U_BYTES : Y_BYTES;
  static constexpr size_t SMEM = R_BYTES * (PASSES == 3 ? 2 : 1) + BUF_BYTES + CODE_WORDS * 4 +
                                 (CB_MAX_BITS + 1) * 256 * 4 + D * 12 + KF_TM * 8 +
                                 (CB_MAX_BITS + 1) * 12 + KF_LUT_BYTES;
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
  __half *Rh, *Rl;        /* rotation hi (and lo x 2^11) [D][LDH] */
  __half *Uh, *Ul;        /* unit rows hi (and lo x 2^11) [TM][LDH] ... */
  float *Y;               /* ... aliased by the projections [TM][LDY] after the MMA */
  uint32_t *cw;           /* the tile's bit stream */
  float *bnd;             /* the family's boundaries [b][256], +inf after the last */
  float *inv_scale;       /* [D] */
  int *bitpos, *bits;     /* [D] */
  float *nscale;          /* [TM] y multiplier per row (|x| when the plan does not normalise) */
  uint32_t *norm16;       /* [TM] fp16 bits of |x| */
  float *lut_T, *lut_iw;  /* [b] cell table range and 1 / cell width */
  int *lut_ok;            /* [b] no cell holds two boundaries */
  uint8_t *lut;           /* cells, KF_LUT_OFF(b) + cell */
};

template <int D, int PASSES>
__device__ __forceinline__ kf_smem<D, PASSES> kf_carve(unsigned char *sm) {
  typedef kf_cfg<D, PASSES> C;
  kf_smem<D, PASSES> S;
  S.Rh = (__half *)sm;
  S.Rl = (__half *)(sm + C::R_BYTES);
  unsigned char *buf = sm + C::R_BYTES * (PASSES == 3 ? 2 : 1);
  S.Uh = (__half *)buf;
  S.Ul = S.Uh + KF_TM * C::LDH;
  S.Y = (float *)buf;
  S.cw = (uint32_t *)(buf + C::BUF_BYTES);
  S.bnd = (float *)(S.cw + C::CODE_WORDS);
  S.inv_scale = S.bnd + (CB_MAX_BITS + 1) * 256;
  S.bitpos = (int *)(S.inv_scale + D);
  S.bits = S.bitpos + D;
  S.nscale = (float *)(S.bits + D);
  S.norm16 = (uint32_t *)(S.nscale + KF_TM);
  S.lut_T = (float *)(S.norm16 + KF_TM);
  S.lut_iw = S.lut_T + CB_MAX_BITS + 1;
  S.lut_ok = (int *)(S.lut_iw + CB_MAX_BITS + 1);
  S.lut = (uint8_t *)(S.lut_ok + CB_MAX_BITS + 1);
  return S;
}

/* The rows of tile t into xr (zeros past the segment's end): streaming 16-byte loads. */
template <int D>
__device__ __forceinline__ void kf_load_tile(const kc_fast_seg *segs, int nseg, int64_t t, int hint,
                                             float4 *xr) {
  constexpr int V4 = D / 4, NLOAD = KF_TM * V4 / KF_THREADS;
  const kc_fast_seg *g = &segs[kf_seg_of(segs, nseg, t, hint)];
  int64_t row0 = (t - g->tile0) * KF_TM;
#pragma unroll
  for (int k = 0; k < NLOAD; k++) {
    int q = threadIdx.x + k * KF_THREADS, row = q / V4, c4 = q % V4;
    int64_t gr = row0 + row;
    xr[k] = gr < g->n ? __ldcs((const float4 *)(g->x + gr * g->stride) + c4) : make_float4(0, 0, 0, 0);
  }
}

/* The codebook's cell table (see KF_LUT_CELLS) from the boundaries in S.bnd. */
template <int D, int PASSES>
__device__ void kf_build_lut(const kf_smem<D, PASSES> &S) {
  const int tid = threadIdx.x;
  if (tid <= CB_MAX_BITS) {
    int b = tid, nb = (1 << b) - 1;
    float T = b >= 1 ? fmaxf(fabsf(S.bnd[b * 256]), fabsf(S.bnd[b * 256 + nb - 1])) : 1.0f;
    T = T * 1.001f + 1e-6f;
    S.lut_T[b] = T;
    S.lut_iw[b] = KF_LUT_CELLS(b) / (2.0f * T);
    S.lut_ok[b] = 1;
  }
  __syncthreads();
  for (int b = 1; b <= CB_MAX_BITS; b++) /* cell c starts at -T + c w: #{boundaries < edge} */
    for (int c = tid; c < KF_LUT_CELLS(b); c += KF_THREADS) {
      float edge = -S.lut_T[b] + c / S.lut_iw[b];
      S.lut[KF_LUT_OFF(b) + c] = (uint8_t)cb_quantize(S.bnd + b * 256, b, edge);
    }
  __syncthreads();
  for (int b = 1; b <= CB_MAX_BITS; b++)
    for (int c = tid; c + 1 < KF_LUT_CELLS(b); c += KF_THREADS)
      if (S.lut[KF_LUT_OFF(b) + c + 1] - S.lut[KF_LUT_OFF(b) + c] > 1) S.lut_ok[b] = 0;
}

/* A new segment: its rotation, codebook boundaries and cell table, per-coordinate fields. */
template <int D, int PASSES>
__device__ void kf_load_segment(const kc_fast_seg *g, const float *cb_boundary, const kf_smem<D, PASSES> &S) {
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
  for (int i = tid; i < D; i += KF_THREADS) {
    int b = g->side.bits[i];
    S.bits[i] = b;
    S.bitpos[i] = g->side.bitpos[i];
    S.inv_scale[i] = (b >= 1 && b <= CB_MAX_BITS) ? 1.0f / g->side.scale[i] : 0.0f;
  }
}

/* A: norms (fp32: the norm is stored in fp16) and unit rows in fp16 (hi, lo) — or straight to Y
 * in fp32 when the plan has no rotation. A row's float4s sit in V4 adjacent lanes. */
template <int D, int PASSES>
__device__ __forceinline__ void kf_prep_rows(const float4 *xr, int normalize, int has_rot,
                                             const kf_smem<D, PASSES> &S) {
  typedef kf_cfg<D, PASSES> C;
#pragma unroll
  for (int k = 0; k < C::NLOAD; k++) {
    int q = threadIdx.x + k * KF_THREADS, row = q / C::V4, c4 = q % C::V4;
    float4 v = xr[k];
    float ss = v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
#pragma unroll
    for (int o = C::V4 / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    float nrm = sqrtf(ss), inv = nrm > 0.0f ? 1.0f / nrm : 0.0f;
    float u[4] = {v.x * inv, v.y * inv, v.z * inv, v.w * inv};
    if (c4 == 0) {
      S.nscale[row] = normalize || !has_rot ? 1.0f : nrm;
      S.norm16[row] = __half_as_ushort(__float2half_rn(nrm));
    }
    if (!has_rot) { /* identity: y is the (unit) row itself */
      float m = normalize ? 1.0f : nrm;
      *(float4 *)(S.Y + row * C::LDY + c4 * 4) = make_float4(u[0] * m, u[1] * m, u[2] * m, u[3] * m);
      continue;
    }
    uint32_t h[4], l[4];
#pragma unroll
    for (int c = 0; c < 4; c++) {
      __half hc = __float2half_rn(u[c]);
      h[c] = __half_as_ushort(hc);
      l[c] = __half_as_ushort(__float2half_rn((u[c] - __half2float(hc)) * KF_LO_SCALE));
    }
    *(uint2 *)(S.Uh + row * C::LDH + c4 * 4) = make_uint2(h[0] | h[1] << 16, h[2] | h[3] << 16);
    if (PASSES == 3) *(uint2 *)(S.Ul + row * C::LDH + c4 * 4) = make_uint2(l[0] | l[1] << 16, l[2] | l[3] << 16);
  }
}

/* B: Y = U . rot^T on the tensor cores; warp: row tile (warp & 3), CT column tiles. Ends with
 * Y written (it overwrites U, so every warp's reads are fenced first). */
template <int D, int PASSES>
__device__ __forceinline__ void kf_project(const kf_smem<D, PASSES> &S) {
  typedef kf_cfg<D, PASSES> C;
  const int warp = threadIdx.x >> 5, rt = warp & 3, ct0 = (warp >> 2) * C::CT;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[C::CT], cor[C::CT];
#pragma unroll
  for (int c = 0; c < C::CT; c++) {
    wmma::fill_fragment(acc[c], 0.0f);
    if (PASSES == 3) wmma::fill_fragment(cor[c], 0.0f);
  }
#pragma unroll
  for (int k = 0; k < D / 16; k++) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a, al;
    wmma::load_matrix_sync(a, S.Uh + rt * 16 * C::LDH + k * 16, C::LDH);
    if (PASSES == 3) wmma::load_matrix_sync(al, S.Ul + rt * 16 * C::LDH + k * 16, C::LDH);
#pragma unroll
    for (int c = 0; c < C::CT; c++) {
      /* B[j][i] = rot[i][j]: rot row-major is B column-major */
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
      wmma::load_matrix_sync(b, S.Rh + (ct0 + c) * 16 * C::LDH + k * 16, C::LDH);
      wmma::mma_sync(acc[c], a, b, acc[c]);
      if (PASSES == 3) {
        wmma::mma_sync(cor[c], al, b, cor[c]);
        wmma::load_matrix_sync(b, S.Rl + (ct0 + c) * 16 * C::LDH + k * 16, C::LDH);
        wmma::mma_sync(cor[c], a, b, cor[c]);
      }
    }
  }
  __syncthreads(); /* every warp has read U: Y may overwrite it */
#pragma unroll
  for (int c = 0; c < C::CT; c++) {
    if (PASSES == 3)
      for (int q = 0; q < acc[c].num_elements; q++) acc[c].x[q] += cor[c].x[q] * (1.0f / KF_LO_SCALE);
    wmma::store_matrix_sync(S.Y + rt * 16 * C::LDY + (ct0 + c) * 16, acc[c], C::LDY, wmma::mem_row_major);
  }
}

/* The index of t = y / scale in b bits: the cell table, or the search when the table is marked. */
__device__ __forceinline__ int kf_quantise(float tq, int b, int ok, float T, float iw, const float *bd,
                                           const uint8_t *lut) {
  if (ok) {
    int cell = min(max(__float2int_rd((tq + T) * iw), 0), KF_LUT_CELLS(b) - 1);
    int L = lut[KF_LUT_OFF(b) + cell];
    float prev = L > 0 ? bd[L - 1] : -INFINITY;
    return L + (tq > bd[L]) - !(tq > prev);
  }
  return cb_quantize(bd, b, tq);
}

/* OR a run of <= 64 bits (bit 0 first) into the stream at bit `pos`. */
__device__ __forceinline__ void kf_or_bits(uint32_t *cw, int64_t pos, uint64_t run) {
  int w0 = (int)(pos >> 5), sh = (int)(pos & 31);
  uint64_t low = run << sh;
  uint32_t top = sh ? (uint32_t)(run >> (64 - sh)) : 0u;
  if ((uint32_t)low) atomicOr(&cw[w0], (uint32_t)low);
  if ((uint32_t)(low >> 32)) atomicOr(&cw[w0 + 1], (uint32_t)(low >> 32));
  if (top) atomicOr(&cw[w0 + 2], top);
}

/* C: quantise and pack; warp: rows warp, warp+8, ...; lane: coordinates lane*CPL .. +CPL-1,
 * whose fields are adjacent in the stream, so they are OR-ed in as one run of <= 64 bits. */
template <int D, int PASSES>
__device__ __forceinline__ void kf_pack(const kf_smem<D, PASSES> &S, int nrows, int code_bytes, int norm_off) {
  typedef kf_cfg<D, PASSES> C;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i0 = lane * C::CPL, p0 = S.bitpos[i0];
  int qb[C::CPL], qsh[C::CPL], qok[C::CPL]; /* this lane's coordinates: row-independent */
  float qis[C::CPL], qT[C::CPL], qiw[C::CPL];
#pragma unroll
  for (int c = 0; c < C::CPL; c++) {
    int b = S.bits[i0 + c], q = b >= 1 && b <= CB_MAX_BITS;
    qb[c] = b;
    qsh[c] = S.bitpos[i0 + c] - p0;
    qis[c] = S.inv_scale[i0 + c];
    qT[c] = q ? S.lut_T[b] : 0.0f;
    qiw[c] = q ? S.lut_iw[b] : 0.0f;
    qok[c] = q ? S.lut_ok[b] : 0;
  }
  for (int row = warp; row < nrows; row += KF_THREADS / 32) {
    uint64_t run = 0;
    float m = S.nscale[row], yv[C::CPL];
    if constexpr (C::CPL == 4) {
      float4 y4 = *(const float4 *)(S.Y + row * C::LDY + i0);
      yv[0] = y4.x, yv[1] = y4.y, yv[2] = y4.z, yv[3] = y4.w;
    } else {
#pragma unroll
      for (int c = 0; c < C::CPL; c++) yv[c] = S.Y[row * C::LDY + i0 + c];
    }
#pragma unroll
    for (int c = 0; c < C::CPL; c++) {
      int b = qb[c];
      float y = yv[c] * m;
      if (b == 0) continue;
      uint32_t v = b == PLAN_BITS_FP16 ? __half_as_ushort(__float2half_rn(y))
                                       : kf_quantise(y * qis[c], b, qok[c], qT[c], qiw[c], S.bnd + b * 256, S.lut);
      run |= (uint64_t)v << qsh[c];
    }
    kf_or_bits(S.cw, (int64_t)row * code_bytes * 8 + p0, run);
    if (lane == 0 && norm_off >= 0) kf_or_bits(S.cw, (int64_t)row * code_bytes * 8 + norm_off, S.norm16[row]);
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

/* PROBE (bench only) leaves phases out: 1 the projection, 2 the packing, 4 the write. */
template <int D, int PASSES, int PROBE>
__global__ void __launch_bounds__(KF_THREADS, PASSES == 3 ? 1 : 2)
k_encode_fast(const kc_fast_seg *segs, int nseg, int64_t ntiles, const float *cb_boundary) {
  typedef kf_cfg<D, PASSES> C;
  extern __shared__ __align__(128) unsigned char sm[];
  const kf_smem<D, PASSES> S = kf_carve<D, PASSES>(sm);
  int64_t per = (ntiles + gridDim.x - 1) / gridDim.x;
  int64_t t_begin = blockIdx.x * per, t_end = min(ntiles, t_begin + per);
  if (t_begin >= t_end) return;
  float4 xr[C::NLOAD];
  kf_load_tile<D>(segs, nseg, t_begin, 0, xr);
  for (int64_t t = t_begin, cur = -1; t < t_end; t++) {
    int s = kf_seg_of(segs, nseg, t, (int)cur);
    const kc_fast_seg *g = &segs[s];
    const int has_rot = g->rh != NULL, code_bytes = g->side.code_bytes;
    const int norm_off = g->side.normalize ? g->side.norm_off : -1;
    const int64_t row0 = (t - g->tile0) * KF_TM;
    const int nrows = (int)min((int64_t)KF_TM, g->n - row0);
    if (s != cur) kf_load_segment(g, cb_boundary, S);
    cur = s;
    kf_prep_rows(xr, g->side.normalize, has_rot, S);
    for (int q = threadIdx.x; q < (KF_TM * code_bytes + 3) / 4 + 1; q += KF_THREADS) S.cw[q] = 0;
    if (t + 1 < t_end) kf_load_tile<D>(segs, nseg, t + 1, s, xr); /* in flight while this tile is coded */
    __syncthreads();
    if (has_rot && !(PROBE & 1)) kf_project(S);
    __syncthreads();
    if (!(PROBE & 2)) kf_pack(S, nrows, code_bytes, norm_off);
    __syncthreads();
    if (!(PROBE & 4)) kf_write_codes(S.cw, g->codes + row0 * code_bytes, (int64_t)nrows * code_bytes);
    __syncthreads();
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

int kc_fast_setup(kc_fast_seg *segs, int nseg, kc_buf *segs_dev, int64_t *ntiles_out, sq_err *e) {
  *ntiles_out = 0;
  if (nseg < 1) return SQ_OK;
  int D = segs[0].side.D;
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
  if (probe) { /* bench only: phases left out (1 projection, 2 packing, 4 the write), D 128, 1 pass */
    if (D != 128 || passes != 1) return sq_fail(e, SQ_EINPUT, "fast encode probe: D 128, passes 1 only");
    switch (probe) {
    case 1: return launch<128, 1, 1>(sd, nseg, ntiles, cb_boundary, e);
    case 3: return launch<128, 1, 3>(sd, nseg, ntiles, cb_boundary, e);
    case 7: return launch<128, 1, 7>(sd, nseg, ntiles, cb_boundary, e);
    case 6: return launch<128, 1, 6>(sd, nseg, ntiles, cb_boundary, e);
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
