/* kcuda_fast: the fused tensor-core encoder (kern.h's kern_cuda_encode_fast; docs/cuda.md
 * "Fast encode"). One launch encodes a whole batch of segments — each segment is n rows of one
 * (layer, head) with its own plan side — so a layer batch of any size is one kernel:
 *   per tile of 64 rows: a TMA copy into a ring of stages -> norm (fp32) -> u = x/|x| in fp16
 *   (hi, and lo = the rounding error x 2^11 for passes 3) in wgmma's swizzled layout -> y = u rot^T
 *   by wgmma (fp32 accumulators in registers; passes 3 adds rot_hi.u_lo + rot_lo.u_hi; the
 *   rotation's rows permuted so that each lane holds D/4 adjacent coordinates), during which the
 *   previous tile is packed and written -> y x |x| when the plan does not normalise -> quantise in
 *   the registers (t = y * (1/scale) through src/cb_cells.h's cell tables instead of a search)
 *   into chunks of adjacent fields -> the next tile's MMA.
 * Only plans without QJL, codes of at most 2 + D bytes, D in {64, 128}, an sm_90a build on a
 * compute capability 9.0 GPU. */
#ifndef SQEXP_KCUDA_FAST_CUH
#define SQEXP_KCUDA_FAST_CUH
#include <cuda.h>
#include <cuda_fp16.h>
#include "kcuda.cuh"

/* 128-byte aligned, as CUDA 13 declares CUtensorMap (the TMA instruction needs 64): arrays of
 * segments on the host come from aligned_alloc(128, ...), on the device from cudaMalloc. */
typedef struct __align__(128) {
  CUtensorMap tmap;   /* the rows as a 2-D tensor for TMA (filled by kc_fast_setup) */
  const float *x;     /* device: row i at x + i*stride */
  int64_t stride, n;
  uint8_t *codes;     /* device [n][side.code_bytes], 16-byte aligned */
  const __half *rh;   /* device [D][D] rot rounded to fp16; NULL = identity (no projection) */
  const __half *rl;   /* device [D][D] (rot - rh) * 2^11 in fp16 (passes 3), else NULL */
  int64_t tile0;      /* first tile of this segment in the launch (filled by kc_fast_encode) */
  kc_side side;
} kc_fast_seg;

/* Check that p can take the fast path (no QJL, D 64 or 128, passes 1 or 3), fill seg->side and
 * upload rot as fp16 hi (and lo) into mats (grown as needed). seg->x, stride, n, codes are the
 * caller's. SQ_EINPUT with a reason otherwise. */
int kc_fast_prepare(const plan_side *p, int passes, kc_buf *mats, kc_fast_seg *seg, sq_err *e);
/* Encode every segment in one launch (all segments must share D; cb_boundary = the device
 * codebook table's boundary half, [CB_NFAM][CB_MAX_BITS+1][256]). segs_dev is a work buffer for
 * the segment table. Asynchronous on the default stream; errors of the launch are returned. */
int kc_fast_encode(kc_fast_seg *segs, int nseg, const float *cb_boundary, int passes, kc_buf *segs_dev,
                   sq_err *e);

/* The two halves of kc_fast_encode, for the bench (which times the launch alone): check the build
 * and the GPU (sm_90a), number the tiles and upload the segment table; then launch. probe != 0 (bench only, D 128 and passes 1)
 * leaves phases out to time the rest: 1 the projection, 2 the quantisation, 4 the write of the
 * codes, 8 the packing. */
int kc_fast_setup(kc_fast_seg *segs, int nseg, kc_buf *segs_dev, int64_t *ntiles, sq_err *e);
int kc_fast_run(const kc_buf *segs_dev, int nseg, int64_t ntiles, int D, const float *cb_boundary, int passes,
                int probe, sq_err *e);

#endif
