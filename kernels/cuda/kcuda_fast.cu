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

template <int D, int PASSES, int PROBE>
__global__ void __launch_bounds__(KF_THREADS, PASSES == 3 ? 1 : 2)
k_encode_fast(const kc_fast_seg *segs, int nseg, int64_t ntiles, const float *cb_boundary) {
  typedef kf_cfg<D, PASSES> C;
  extern __shared__ __align__(128) unsigned char sm[];
  __half *Rh = (__half *)sm;
  __half *Rl = (__half *)(sm + C::R_BYTES);                   /* used when PASSES == 3 */
  unsigned char *buf = sm + C::R_BYTES * (PASSES == 3 ? 2 : 1);
  __half *Uh = (__half *)buf, *Ul = Uh + KF_TM * C::LDH;       /* aliased by Y after the MMA */
  float *Y = (float *)buf;
  uint32_t *cw = (uint32_t *)(buf + C::BUF_BYTES);
  float *bnd = (float *)(cw + C::CODE_WORDS);
  float *inv_scale = bnd + (CB_MAX_BITS + 1) * 256;
  int *bitpos = (int *)(inv_scale + D);
  int *bits = bitpos + D;
  float *nscale = (float *)(bits + D);                        /* y multiplier per row */
  uint32_t *norm16 = (uint32_t *)(nscale + KF_TM);            /* fp16 norm bits per row */
  float *lut_T = (float *)(norm16 + KF_TM), *lut_iw = lut_T + CB_MAX_BITS + 1;
  int *lut_ok = (int *)(lut_iw + CB_MAX_BITS + 1);
  uint8_t *lut = (uint8_t *)(lut_ok + CB_MAX_BITS + 1);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  int64_t per = (ntiles + gridDim.x - 1) / gridDim.x;
  int64_t t_begin = blockIdx.x * per, t_end = min(ntiles, t_begin + per);
  if (t_begin >= t_end) return;

  float4 xr[C::NLOAD];
  int cur = -1;
  /* load the rows of tile t into xr (zeros past the segment's end) */
  auto load_tile = [&](int64_t t, int hint) {
    int s = kf_seg_of(segs, nseg, t, hint);
    const kc_fast_seg *g = &segs[s];
    int64_t row0 = (t - g->tile0) * KF_TM;
#pragma unroll
    for (int k = 0; k < C::NLOAD; k++) {
      int q = tid + k * KF_THREADS, row = q / C::V4, c4 = q % C::V4;
      int64_t gr = row0 + row;
      xr[k] = gr < g->n ? __ldcs((const float4 *)(g->x + gr * g->stride) + c4) : make_float4(0, 0, 0, 0);
    }
  };
  load_tile(t_begin, 0);

  for (int64_t t = t_begin; t < t_end; t++) {
    int s = kf_seg_of(segs, nseg, t, cur);
    const kc_fast_seg *g = &segs[s];
    const int normalize = g->side.normalize, has_rot = g->rh != NULL;
    const int code_bytes = g->side.code_bytes, norm_off = g->side.norm_off;
    const int64_t row0 = (t - g->tile0) * KF_TM;
    const int nrows = (int)min((int64_t)KF_TM, g->n - row0);
    if (s != cur) { /* new segment: its rotation, codebook boundaries and per-coordinate fields */
      __syncthreads();
      if (has_rot) {
        for (int q = tid; q < D * D / 8; q += KF_THREADS) {
          int i = q / (D / 8), j8 = (q % (D / 8)) * 8;
          *(uint4 *)(Rh + i * C::LDH + j8) = *(const uint4 *)(g->rh + i * D + j8);
          if (PASSES == 3) *(uint4 *)(Rl + i * C::LDH + j8) = *(const uint4 *)(g->rl + i * D + j8);
        }
      }
      const float *bsrc = cb_boundary + g->side.family * (CB_MAX_BITS + 1) * 256;
      for (int q = tid; q < (CB_MAX_BITS + 1) * 256; q += KF_THREADS) {
        int b = q >> 8, k = q & 255;
        bnd[q] = b >= 1 && k == (1 << b) - 1 ? INFINITY : bsrc[q]; /* sentinel after the last */
      }
      __syncthreads();
      if (tid <= CB_MAX_BITS) {
        int b = tid, nb = (1 << b) - 1;
        float T = b >= 1 ? fmaxf(fabsf(bnd[b * 256]), fabsf(bnd[b * 256 + nb - 1])) : 1.0f;
        T = T * 1.001f + 1e-6f;
        lut_T[b] = T;
        lut_iw[b] = KF_LUT_CELLS(b) / (2.0f * T);
        lut_ok[b] = 1;
      }
      __syncthreads();
      for (int b = 1; b <= CB_MAX_BITS; b++) /* cell c starts at -T + c w: count boundaries below */
        for (int c = tid; c < KF_LUT_CELLS(b); c += KF_THREADS) {
          float edge = -lut_T[b] + c / lut_iw[b];
          int lo = 0, hi = (1 << b) - 1;
          while (lo < hi) {
            int mid = (lo + hi) >> 1;
            if (bnd[b * 256 + mid] < edge) lo = mid + 1; else hi = mid;
          }
          lut[KF_LUT_OFF(b) + c] = (uint8_t)lo;
        }
      __syncthreads();
      for (int b = 1; b <= CB_MAX_BITS; b++)
        for (int c = tid; c + 1 < KF_LUT_CELLS(b); c += KF_THREADS)
          if (lut[KF_LUT_OFF(b) + c + 1] - lut[KF_LUT_OFF(b) + c] > 1) lut_ok[b] = 0;
      for (int i = tid; i < D; i += KF_THREADS) {
        int b = g->side.bits[i];
        bits[i] = b;
        bitpos[i] = g->side.bitpos[i];
        inv_scale[i] = (b >= 1 && b <= CB_MAX_BITS) ? 1.0f / g->side.scale[i] : 0.0f;
      }
      cur = s;
    }
    /* A: norms, unit rows in fp16 (or straight to Y without a rotation); clear the bit stream */
#pragma unroll
    for (int k = 0; k < C::NLOAD; k++) {
      int q = tid + k * KF_THREADS, row = q / C::V4, c4 = q % C::V4;
      float4 v = xr[k];
      float ss = v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w; /* fp32: the norm is stored in fp16 */
#pragma unroll
      for (int o = C::V4 / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
      float nrm = sqrtf(ss), inv = nrm > 0.0f ? 1.0f / nrm : 0.0f;
      float u[4] = {v.x * inv, v.y * inv, v.z * inv, v.w * inv};
      if (c4 == 0) {
        nscale[row] = normalize ? 1.0f : nrm;
        norm16[row] = __half_as_ushort(__float2half_rn(nrm));
      }
      if (!has_rot) { /* identity: y is the (unit) row itself, in fp32 */
        float m = normalize ? 1.0f : nrm;
        *(float4 *)(Y + row * C::LDY + c4 * 4) = make_float4(u[0] * m, u[1] * m, u[2] * m, u[3] * m);
        if (c4 == 0) nscale[row] = 1.0f;
        continue;
      }
      __half h[4], l[4];
#pragma unroll
      for (int c = 0; c < 4; c++) {
        h[c] = __float2half_rn(u[c]);
        l[c] = __float2half_rn((u[c] - __half2float(h[c])) * KF_LO_SCALE);
      }
      *(uint2 *)(Uh + row * C::LDH + c4 * 4) =
          make_uint2(__half_as_ushort(h[0]) | ((uint32_t)__half_as_ushort(h[1]) << 16),
                     __half_as_ushort(h[2]) | ((uint32_t)__half_as_ushort(h[3]) << 16));
      if (PASSES == 3)
        *(uint2 *)(Ul + row * C::LDH + c4 * 4) =
            make_uint2(__half_as_ushort(l[0]) | ((uint32_t)__half_as_ushort(l[1]) << 16),
                       __half_as_ushort(l[2]) | ((uint32_t)__half_as_ushort(l[3]) << 16));
    }
    for (int q = tid; q < (KF_TM * code_bytes + 3) / 4 + 1; q += KF_THREADS) cw[q] = 0;
    if (t + 1 < t_end) load_tile(t + 1, s); /* in flight during the projection and the packing */
    __syncthreads();
    /* B: Y = U . rot^T on the tensor cores; warp: row tile (warp & 3), CT column tiles */
    if (has_rot && !(PROBE & 1)) {
      const int rt = warp & 3, ct0 = (warp >> 2) * C::CT;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[C::CT], cor[C::CT];
#pragma unroll
      for (int c = 0; c < C::CT; c++) {
        wmma::fill_fragment(acc[c], 0.0f);
        if (PASSES == 3) wmma::fill_fragment(cor[c], 0.0f);
      }
#pragma unroll
      for (int k = 0; k < D / 16; k++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a, al;
        wmma::load_matrix_sync(a, Uh + rt * 16 * C::LDH + k * 16, C::LDH);
        if (PASSES == 3) wmma::load_matrix_sync(al, Ul + rt * 16 * C::LDH + k * 16, C::LDH);
#pragma unroll
        for (int c = 0; c < C::CT; c++) {
          /* B[j][i] = rot[i][j]: rot row-major is B column-major */
          wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
          wmma::load_matrix_sync(b, Rh + (ct0 + c) * 16 * C::LDH + k * 16, C::LDH);
          wmma::mma_sync(acc[c], a, b, acc[c]);
          if (PASSES == 3) {
            wmma::mma_sync(cor[c], al, b, cor[c]);
            wmma::load_matrix_sync(b, Rl + (ct0 + c) * 16 * C::LDH + k * 16, C::LDH);
            wmma::mma_sync(cor[c], a, b, cor[c]);
          }
        }
      }
      __syncthreads(); /* every warp has read U: Y may overwrite it */
#pragma unroll
      for (int c = 0; c < C::CT; c++) {
        if (PASSES == 3)
          for (int q = 0; q < acc[c].num_elements; q++) acc[c].x[q] += cor[c].x[q] * (1.0f / KF_LO_SCALE);
        wmma::store_matrix_sync(Y + rt * 16 * C::LDY + (ct0 + c) * 16, acc[c], C::LDY, wmma::mem_row_major);
      }
    }
    __syncthreads();
    /* C: quantise and pack; warp: rows warp, warp+8, ...; lane: coordinates lane*CPL .. +CPL-1,
     * whose fields are adjacent in the stream, so they are OR-ed in as one 64-bit run */
    const int i0 = lane * C::CPL, p0 = bitpos[i0];
    int qb[C::CPL], qsh[C::CPL], qok[C::CPL];   /* this lane's coordinates: row-independent */
    float qis[C::CPL], qT[C::CPL], qiw[C::CPL];
#pragma unroll
    for (int c = 0; c < C::CPL; c++) {
      int b = bits[i0 + c], q = b >= 1 && b <= CB_MAX_BITS;
      qb[c] = b;
      qsh[c] = bitpos[i0 + c] - p0;
      qis[c] = inv_scale[i0 + c];
      qT[c] = q ? lut_T[b] : 0.0f;
      qiw[c] = q ? lut_iw[b] : 0.0f;
      qok[c] = q ? lut_ok[b] : 0;
    }
    for (int row = warp; row < ((PROBE & 2) ? 0 : nrows); row += KF_THREADS / 32) {
      uint64_t run = 0;
      float m = nscale[row], yv[C::CPL];
      if constexpr (C::CPL == 4) {
        float4 y4 = *(const float4 *)(Y + row * C::LDY + i0);
        yv[0] = y4.x, yv[1] = y4.y, yv[2] = y4.z, yv[3] = y4.w;
      } else {
#pragma unroll
        for (int c = 0; c < C::CPL; c++) yv[c] = Y[row * C::LDY + i0 + c];
      }
#pragma unroll
      for (int c = 0; c < C::CPL; c++) {
        int b = qb[c];
        float y = yv[c] * m;
        uint32_t v;
        if (b == 0) continue;
        if (b == PLAN_BITS_FP16) {
          v = __half_as_ushort(__float2half_rn(y));
        } else {
          const float *bd = bnd + b * 256;
          float tq = y * qis[c];
          int lo;
          if (qok[c]) {
            int cell = min(max(__float2int_rd((tq + qT[c]) * qiw[c]), 0), KF_LUT_CELLS(b) - 1);
            int L = lut[KF_LUT_OFF(b) + cell];
            float prev = L > 0 ? bd[L - 1] : -INFINITY;
            lo = L + (tq > bd[L]) - !(tq > prev);
          } else {
            lo = 0;
            int hi = (1 << b) - 1;
            while (lo < hi) {
              int mid = (lo + hi) >> 1;
              if (tq > bd[mid]) lo = mid + 1; else hi = mid;
            }
          }
          v = (uint32_t)lo;
        }
        run |= (uint64_t)v << qsh[c];
      }
      int64_t base = (int64_t)row * code_bytes * 8 + p0;
      int w0 = (int)(base >> 5), sh = (int)(base & 31);
      uint64_t low = run << sh;
      uint32_t top = sh ? (uint32_t)(run >> (64 - sh)) : 0u;
      if ((uint32_t)low) atomicOr(&cw[w0], (uint32_t)low);
      if ((uint32_t)(low >> 32)) atomicOr(&cw[w0 + 1], (uint32_t)(low >> 32));
      if (top) atomicOr(&cw[w0 + 2], top);
      if (lane == 0 && normalize && norm_off >= 0) {
        int64_t nb = (int64_t)row * code_bytes * 8 + norm_off;
        uint64_t f = (uint64_t)norm16[row] << (nb & 31);
        if ((uint32_t)f) atomicOr(&cw[nb >> 5], (uint32_t)f);
        if ((uint32_t)(f >> 32)) atomicOr(&cw[(nb >> 5) + 1], (uint32_t)(f >> 32));
      }
    }
    __syncthreads();
    /* D: the tile's rows are contiguous in codes: one coalesced write */
    {
      int64_t nbytes = (int64_t)nrows * code_bytes;
      uint8_t *dst = g->codes + row0 * code_bytes;
      if (PROBE & 4) {
      } else if (((uintptr_t)dst & 3) == 0) {
        for (int64_t q = tid; q < nbytes / 4; q += KF_THREADS) __stcs((unsigned int *)dst + q, cw[q]);
        for (int64_t q = (nbytes & ~(int64_t)3) + tid; q < nbytes; q += KF_THREADS)
          dst[q] = ((const uint8_t *)cw)[q];
      } else {
        for (int64_t q = tid; q < nbytes; q += KF_THREADS) dst[q] = ((const uint8_t *)cw)[q];
      }
    }
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
