/* cb_cells: quantisation through a cell table instead of a search (the CUDA fast encoder's;
 * docs/cuda.md "Fast encode"). For b bits the range [-T, T] (T just past the outermost
 * boundary) is cut into 4 * 2^b equal cells, narrower than the closest two boundaries of every
 * Lloyd-Max table (the finest, gauss b = 8, needs 520 cells), so a cell holds at most one
 * boundary; the grid is shifted by half a cell (one more cell in the table) so that the middle
 * boundary of a symmetric codebook, 0, sits mid-cell. T is nudged until every boundary lies at
 * least CB_CELLS_EDGE cells from a cell edge. The cell of t, floor(t iw + T iw + 1/2) computed in
 * fp32 (as fmaf(y, (1/scale) iw, Tiw) for t = y (1/scale)), is then off by far less than
 * CB_CELLS_EDGE (<= 2.5e-4 cells at 1,025 cells), so with entry = {the boundary inside the cell or
 * +inf, #{boundaries below the cell}}, idx = below + (t > inside) equals cb_quantize's
 * #{k : t > boundary[k]} for every float t (tests/test_cb_cells.c checks it). The functions are
 * shared by the host (tests) and the kernel, so both do the same arithmetic. */
#ifndef SQEXP_CB_CELLS_H
#define SQEXP_CB_CELLS_H
#include <math.h>
#include "codebook.h"

#define CB_CELLS(b) ((4 << (b)) + 1)                       /* entries of the b-bit table */
#define CB_CELLS_OFF(b) (4 * ((1 << (b)) - 2) + (b) - 1)    /* its offset when b = 1.. are stacked */
#define CB_CELLS_ALL CB_CELLS_OFF(CB_MAX_BITS + 1)          /* entries of all b = 1..8 */
#define CB_CELLS_EDGE 1e-3
#define CB_CELLS_TRIES 32

/* Attempt `k` of the T search for the boundaries bnd[0 .. 2^b - 2]: 1 / cell width and the
 * offset, as floats (the kernel's operands). */
static inline CB_HOST_DEVICE void cb_cells_try(const float *bnd, int bits, int k, float *iw, float *Tiw) {
  int nb = (1 << bits) - 1;
  float T0 = fmaxf(fabsf(bnd[0]), fabsf(bnd[nb - 1])) * 1.001f + 1e-6f;
  float T = T0 * (1.0f + 0.00377f * (float)k);
  *iw = (float)(CB_CELLS(bits) - 1) / (2.0f * T);
  *Tiw = T * *iw + 0.5f;
}

/* Boundary i is unusable with (iw, Tiw): within CB_CELLS_EDGE of a cell edge, or in the same cell
 * as boundary i - 1. */
static inline CB_HOST_DEVICE int cb_cells_bad(const float *bnd, int i, float iw, float Tiw) {
  double pos = (double)bnd[i] * iw + Tiw, fr = pos - floor(pos);
  if (fr < CB_CELLS_EDGE || fr > 1.0 - CB_CELLS_EDGE) return 1;
  return i > 0 && floor((double)bnd[i - 1] * iw + Tiw) == floor(pos);
}

/* Entry c of the b-bit table (iw, Tiw from an attempt without a bad boundary). */
static inline CB_HOST_DEVICE void cb_cells_entry(const float *bnd, int bits, float iw, float Tiw, int c,
                                                 float *inside, unsigned *below) {
  int lo = 0, hi = (1 << bits) - 1; /* first boundary at or past the cell's lower edge */
  while (lo < hi) {
    int mid = (lo + hi) >> 1;
    if ((double)bnd[mid] * iw + Tiw < c) lo = mid + 1; else hi = mid;
  }
  *below = (unsigned)lo;
  *inside = lo < (1 << bits) - 1 && (double)bnd[lo] * iw + Tiw < c + 1 ? bnd[lo] : INFINITY;
}

/* The cell of position cf = t iw + T iw + 1/2: floor, saturating (negatives and NaN -> 0), then
 * clamped to the last cell. The device takes the floor by adding 2^23 rounding down; the host
 * spells out the same function. */
static inline CB_HOST_DEVICE unsigned cb_cells_index(float cf, unsigned last) {
#ifdef __CUDA_ARCH__
  /* x + 2^23 rounded down holds floor(x) in its mantissa for 0 <= x < 2^23, and is >= 2^24 past
   * it (clamped below); fmaxf maps NaN and negatives to 0. FP32 pipe at full rate, where the
   * conversion instruction (F2I) runs at an eighth. */
  unsigned c = __float_as_uint(__fadd_rd(fmaxf(cf, 0.0f), 8388608.0f)) - 0x4B000000u;
#else
  unsigned c = cf > 0.0f ? (cf < 4294967040.0f ? (unsigned)floorf(cf) : 4294967295u) : 0u;
#endif
  return c < last ? c : last;
}

/* The lookup's cell, as the kernel computes it: y the projection, qis_iw = (1 / scale) iw. */
static inline CB_HOST_DEVICE unsigned cb_cells_cell(float y, float qis_iw, float Tiw, int bits) {
  return cb_cells_index(fmaf(y, qis_iw, Tiw), (unsigned)(CB_CELLS(bits) - 1));
}

#endif
