/* kcpu: the CPU reference backend's row-level pieces (one token of one plan_side), shared by the
 * backend (kern_cpu.c, cpu_eval.c) and the tests. Everything here executes plan.h's layout:
 *
 *   [fp16 |x| if normalize][idx of coord 0..D-1, bits[i] each][m QJL sign bits][fp16 |r| if m>0]
 *
 * packed LSB-first into a bit stream (stream bit k = bit k%8 of byte k/8; a field of n bits
 * puts its bit 0 first), padded with zero bits to a whole byte. A QJL sign bit is 1 when
 * (S r)_j < 0 and 0 otherwise (so sign(0) = +1). Arithmetic (the CUDA backend follows it):
 *   encode: n = sqrt(sum x_j^2) in double; u_j = (float)(x_j / n) (u = 0 when n = 0), or u = x;
 *           y_i = (float) sum_j rot[i][j] u_j in double (y = u when rot is NULL; the CPU sums
 *           8 interleaved partial sums, so the order differs from a plain loop in the last bits);
 *           bits 1..8: idx = cb_quantize(boundary[family][b], b, y_i / scale_i) (float division);
 *           bits 16: the fp16 of y_i; bits 0: nothing.
 *   decode: yh_i = scale_i * centroid[family][b][idx] (float), f16 value, or 0;
 *           xh_j = (float)(nh * sum_i rot[i][j] yh_i) in double, nh = the fp16-rounded norm (1
 *           when !normalize).
 *   QJL:    r = x - xh (float, xh exactly as decoded); |r| in double, stored fp16;
 *           sign bit of row j from sum_k S[j][k] r_k in double.
 *   score:  s^ = q.xh + qjl_coef * |r|^ * <S q, signs>; the backend uses the algebraically equal
 *           effective key keff = xh + qjl_coef * |r|^ * S^T signs, so s^ = q.keff. */
#ifndef SQEXP_KCPU_H
#define SQEXP_KCPU_H
#include <stdint.h>
#include "codebook.h"
#include "err.h"
#include "plan.h"

/* Bit offsets of the fields of one packed token. */
typedef struct {
  int norm_off;   /* fp16 norm, -1 when !normalize */
  int idx_off;    /* first index bit (coordinate 0) */
  int sign_off;   /* first QJL sign bit (= end of the indices) */
  int rnorm_off;  /* fp16 |r|, -1 when qjl_rows == 0 */
  int bits;       /* exact bits per token */
  int bytes;      /* ceil(bits / 8) */
} kcpu_layout;

/* Validate p (D in 1..PLAN_MAX_D, bits in 0..8 or 16, positive finite scales of quantized coords,
 * qjl matrix present when qjl_rows > 0) and compute its layout. SQ_EINPUT with a reason. */
int kcpu_layout_of(const plan_side *p, kcpu_layout *out, sq_err *e);

static inline void kcpu_put_bits(uint8_t *buf, int64_t pos, uint32_t v, int n) {
  for (int k = 0; k < n; k++, pos++)
    if ((v >> k) & 1u) buf[pos >> 3] |= (uint8_t)(1u << (pos & 7));
}

static inline uint32_t kcpu_get_bits(const uint8_t *buf, int64_t pos, int n) {
  uint32_t v = 0;
  for (int k = 0; k < n; k++, pos++) v |= (uint32_t)((buf[pos >> 3] >> (pos & 7)) & 1u) << k;
  return v;
}

/* y = rot . (x/|x| or x) as above; *norm = |x| (double, before fp16 rounding; 1 if !normalize). */
void kcpu_project(const plan_side *p, const float *x, float *y, double *norm);
/* Encode one row into code[lay->bytes] (overwritten entirely). */
void kcpu_encode_row(const plan_side *p, const kcpu_layout *lay, const cb_table *cb, const float *x,
                     uint8_t *code);
/* Decode one row to xhat[D] (the mse reconstruction; QJL is not a reconstruction). */
void kcpu_decode_row(const plan_side *p, const kcpu_layout *lay, const cb_table *cb,
                     const uint8_t *code, float *xhat);
/* The stored field of every coordinate: the index (bits 1..8), the raw fp16 bits (16), 0 (0). */
void kcpu_unpack_indices(const plan_side *p, const kcpu_layout *lay, const uint8_t *code,
                         uint32_t *idx);
/* Effective key for scoring: keff = xhat + qjl_coef * |r|^ * S^T signs (keff = xhat when m == 0).
 * xhat must be kcpu_decode_row's output for the same code; keff may alias xhat. */
void kcpu_effective_key(const plan_side *p, const kcpu_layout *lay, const uint8_t *code,
                        const float *xhat, float *keff);
/* The score estimate of one query against one code, computed the direct way (for tests):
 * q.xhat + qjl_coef * |r|^ * <S q, signs>, in double. */
double kcpu_score_row(const plan_side *p, const kcpu_layout *lay, const cb_table *cb,
                      const uint8_t *code, const float *q);

/* Cosine with the kern.h convention: both zero -> 1, one zero -> 0. */
double kcpu_cos(double dot, double nx, double ny);

#endif
