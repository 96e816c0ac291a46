/* cpu_pack: encode / decode / score of one token under a plan_side (the arithmetic is spelled out
 * in kcpu.h; the CUDA backend reproduces it). */
#include <math.h>
#include <string.h>
#include "f16.h"
#include "kcpu.h"

int kcpu_layout_of(const plan_side *p, kcpu_layout *out, sq_err *e) {
  if (p->D < 1 || p->D > PLAN_MAX_D)
    return sq_fail(e, SQ_EINPUT, "plan: head_dim %d outside 1..%d", p->D, PLAN_MAX_D);
  if (p->qjl_rows < 0 || p->qjl_rows > 4 * PLAN_MAX_D || (p->qjl_rows > 0 && !p->qjl))
    return sq_fail(e, SQ_EINPUT, "plan: qjl_rows %d without a sketch matrix (or out of range)",
                   p->qjl_rows);
  if (p->family < 0 || p->family >= CB_NFAM)
    return sq_fail(e, SQ_EINPUT, "plan: codebook family %d (expected 0..%d)", p->family, CB_NFAM - 1);
  int pos = 0;
  out->norm_off = p->normalize ? 0 : -1;
  if (p->normalize) pos += 16;
  out->idx_off = pos;
  for (int i = 0; i < p->D; i++) {
    int b = p->bits[i];
    if (!(b <= CB_MAX_BITS || b == PLAN_BITS_FP16))
      return sq_fail(e, SQ_EINPUT, "plan: coordinate %d has %d bits (expected 0..%d or 16)", i, b,
                     CB_MAX_BITS);
    if (b >= 1 && b <= CB_MAX_BITS && !(p->scale[i] > 0.0f && isfinite(p->scale[i])))
      return sq_fail(e, SQ_EINPUT, "plan: coordinate %d has scale %g (expected > 0)", i,
                     (double)p->scale[i]);
    pos += b;
  }
  out->sign_off = pos;
  pos += p->qjl_rows;
  out->rnorm_off = p->qjl_rows > 0 ? pos : -1;
  if (p->qjl_rows > 0) pos += 16;
  out->bits = pos;
  out->bytes = (pos + 7) / 8;
  return SQ_OK;
}

/* sum_j a_j b_j in double, as 8 interleaved partial sums (vectorisable, and not bound by the
 * latency of one running sum), then added in order. */
static double ddot(const float *a, const float *b, int D) {
  double part[8] = {0};
  int j = 0;
  for (; j + 8 <= D; j += 8)
#pragma omp simd
    for (int k = 0; k < 8; k++) part[k] += (double)a[j + k] * b[j + k];
  double s = 0.0;
  for (; j < D; j++) s += (double)a[j] * b[j];
  for (int k = 0; k < 8; k++) s += part[k];
  return s;
}

double kcpu_cos(double dot, double nx, double ny) {
  if (nx == 0.0 && ny == 0.0) return 1.0;
  if (nx == 0.0 || ny == 0.0) return 0.0;
  return dot / sqrt(nx * ny);
}

void kcpu_project(const plan_side *p, const float *x, float *y, double *norm) {
  int D = p->D;
  float u[PLAN_MAX_D];
  double n = 1.0;
  if (p->normalize) {
    double ss = 0.0;
    for (int j = 0; j < D; j++) ss += (double)x[j] * x[j];
    n = sqrt(ss);
    for (int j = 0; j < D; j++) u[j] = n > 0.0 ? (float)((double)x[j] / n) : 0.0f;
  } else {
    memcpy(u, x, (size_t)D * sizeof *u);
  }
  *norm = n;
  if (!p->rot) {
    memcpy(y, u, (size_t)D * sizeof *y);
    return;
  }
  for (int i = 0; i < D; i++) {
    const float *row = p->rot + (size_t)i * D;
    y[i] = (float)ddot(row, u, D);
  }
}

/* The indices / raw values of every coordinate, written at lay->idx_off. */
static void pack_coords(const plan_side *p, const kcpu_layout *lay, const cb_table *cb,
                        const float *y, uint8_t *code) {
  int64_t pos = lay->idx_off;
  for (int i = 0; i < p->D; i++) {
    int b = p->bits[i];
    if (b == 0) continue;
    uint32_t v;
    if (b == PLAN_BITS_FP16) v = f32_to_f16(y[i]);
    else v = (uint32_t)cb_quantize(cb->boundary[p->family][b], b, y[i] / p->scale[i]);
    kcpu_put_bits(code, pos, v, b);
    pos += b;
  }
}

/* QJL part: signs of S r and fp16 |r|, r = x - xhat with xhat decoded from the code so far. */
static void pack_qjl(const plan_side *p, const kcpu_layout *lay, const cb_table *cb, const float *x,
                     uint8_t *code) {
  int D = p->D;
  float xh[PLAN_MAX_D], r[PLAN_MAX_D];
  kcpu_decode_row(p, lay, cb, code, xh);
  double rr = 0.0;
  for (int j = 0; j < D; j++) {
    r[j] = x[j] - xh[j];
    rr += (double)r[j] * r[j];
  }
  for (int k = 0; k < p->qjl_rows; k++) {
    const float *srow = p->qjl + (size_t)k * D;
    if (ddot(srow, r, D) < 0.0) kcpu_put_bits(code, lay->sign_off + k, 1u, 1);
  }
  kcpu_put_bits(code, lay->rnorm_off, f32_to_f16((float)sqrt(rr)), 16);
}

void kcpu_encode_row(const plan_side *p, const kcpu_layout *lay, const cb_table *cb, const float *x,
                     uint8_t *code) {
  float y[PLAN_MAX_D];
  double n;
  memset(code, 0, (size_t)lay->bytes);
  kcpu_project(p, x, y, &n);
  if (p->normalize) kcpu_put_bits(code, lay->norm_off, f32_to_f16((float)n), 16);
  pack_coords(p, lay, cb, y, code);
  if (p->qjl_rows > 0) pack_qjl(p, lay, cb, x, code);
}

void kcpu_unpack_indices(const plan_side *p, const kcpu_layout *lay, const uint8_t *code,
                         uint32_t *idx) {
  int64_t pos = lay->idx_off;
  for (int i = 0; i < p->D; i++) {
    int b = p->bits[i];
    idx[i] = b ? kcpu_get_bits(code, pos, b) : 0u;
    pos += b;
  }
}

void kcpu_decode_row(const plan_side *p, const kcpu_layout *lay, const cb_table *cb,
                     const uint8_t *code, float *xhat) {
  int D = p->D;
  uint32_t idx[PLAN_MAX_D];
  float yh[PLAN_MAX_D];
  kcpu_unpack_indices(p, lay, code, idx);
  for (int i = 0; i < D; i++) {
    int b = p->bits[i];
    if (b == 0) yh[i] = 0.0f;
    else if (b == PLAN_BITS_FP16) yh[i] = f16_to_f32((uint16_t)idx[i]);
    else yh[i] = p->scale[i] * cb->centroid[p->family][b][idx[i]];
  }
  double nh = p->normalize ? (double)f16_to_f32((uint16_t)kcpu_get_bits(code, lay->norm_off, 16)) : 1.0;
  if (!p->rot) {
    for (int j = 0; j < D; j++) xhat[j] = (float)(nh * yh[j]);
    return;
  }
  double acc[PLAN_MAX_D] = {0};
  for (int i = 0; i < D; i++) {
    if (yh[i] == 0.0f) continue; /* dropped coordinates (lowrank) cost nothing */
    const float *row = p->rot + (size_t)i * D;
    double yi = yh[i];
#pragma omp simd
    for (int j = 0; j < D; j++) acc[j] += (double)row[j] * yi;
  }
  for (int j = 0; j < D; j++) xhat[j] = (float)(nh * acc[j]);
}

/* +1 / -1 of QJL sign bit k. */
static inline double qjl_sign(const kcpu_layout *lay, const uint8_t *code, int k) {
  return kcpu_get_bits(code, lay->sign_off + k, 1) ? -1.0 : 1.0;
}

void kcpu_effective_key(const plan_side *p, const kcpu_layout *lay, const uint8_t *code,
                        const float *xhat, float *keff) {
  int D = p->D;
  if (p->qjl_rows == 0) {
    if (keff != xhat) memcpy(keff, xhat, (size_t)D * sizeof *keff);
    return;
  }
  double z[PLAN_MAX_D] = {0};
  for (int k = 0; k < p->qjl_rows; k++) {
    const float *srow = p->qjl + (size_t)k * D;
    double sg = qjl_sign(lay, code, k);
#pragma omp simd
    for (int j = 0; j < D; j++) z[j] += sg * srow[j];
  }
  double c = p->qjl_coef * f16_to_f32((uint16_t)kcpu_get_bits(code, lay->rnorm_off, 16));
  for (int j = 0; j < D; j++) keff[j] = (float)(xhat[j] + c * z[j]);
}

double kcpu_score_row(const plan_side *p, const kcpu_layout *lay, const cb_table *cb,
                      const uint8_t *code, const float *q) {
  int D = p->D;
  float xh[PLAN_MAX_D];
  kcpu_decode_row(p, lay, cb, code, xh);
  double s = 0.0;
  for (int j = 0; j < D; j++) s += (double)q[j] * xh[j];
  if (p->qjl_rows == 0) return s;
  double sk = 0.0;
  for (int k = 0; k < p->qjl_rows; k++) {
    const float *srow = p->qjl + (size_t)k * D;
    double sq = 0.0;
    for (int j = 0; j < D; j++) sq += (double)srow[j] * q[j];
    sk += sq * qjl_sign(lay, code, k);
  }
  return s + p->qjl_coef * f16_to_f32((uint16_t)kcpu_get_bits(code, lay->rnorm_off, 16)) * sk;
}
