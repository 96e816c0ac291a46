/* kcuda_quant: the encode/decode pipeline of one plan_side on the GPU, step for step the CPU
 * reference's arithmetic (kernels/cpu/kcpu.h):
 *   norm n = sqrt(sum x^2) (double), u = (float)(x/n)      k_prep (warp per row)
 *   y = (float)(rot . u) accumulated in double               cublasDgemm (fp64: exact products)
 *   idx / yh per coordinate                                   k_quant
 *   xh = (float)(nh * rot^T yh) in double                     cublasDgemm + k_finish
 *   r = x - xh, |r| (double -> fp16), signs of S r (double)   k_finish, cublasDgemm, k_signs
 *   keff = (float)(xh + qjl_coef*|r|^*S^T signs)              cublasDgemm + k_keff
 * fp64 GEMMs are chosen over fp32/TF32 because a float32 float-order sum flips quantisation
 * indices at boundaries (measured in `sqexp bench`, docs/cuda.md) while the products of two
 * floats are exact in double, so only the summation order differs from the CPU. */
#include <cuda_fp16.h>
#include <math.h>
#include "kcuda.cuh"

extern "C" {
#include "cpu/kcpu.h"
#include "f16.h"
}

int kc_buf_need(kc_buf *b, size_t bytes, sq_err *e) {
  if (bytes <= b->cap && b->p) return SQ_OK;
  if (b->p) cudaFree(b->p);
  b->p = NULL;
  b->cap = 0;
  size_t want = bytes + bytes / 4 + 256;
  cudaCheck(cudaMalloc(&b->p, want));
  b->cap = want;
  return SQ_OK;
}

void kc_buf_free(kc_buf *b) {
  if (b->p) cudaFree(b->p);
  b->p = NULL;
  b->cap = 0;
}

void kc_work_free(kc_work *w) {
  kc_buf *all[] = {&w->xin, &w->u, &w->y, &w->r, &w->z, &w->norm, &w->rnorm,
                   &w->idx, &w->sg, &w->mats, &w->codes, &w->xhat};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kc_buf_free(all[i]);
}

/* The layout (and its validation) is the CPU reference's, kcpu_layout_of; only the per-coordinate
 * bit positions are added for the kernels. */
int kc_side_of(const plan_side *p, kc_side *o, sq_err *e) {
  kcpu_layout lay;
  tryCheck(kcpu_layout_of(p, &lay, e));
  memset(o, 0, sizeof *o);
  o->D = p->D;
  o->normalize = p->normalize;
  o->family = p->family;
  o->m = p->qjl_rows;
  o->has_rot = p->rot != NULL;
  o->qjl_coef = p->qjl_coef;
  o->norm_off = lay.norm_off;
  o->idx_off = lay.idx_off;
  o->sign_off = lay.sign_off;
  o->rnorm_off = lay.rnorm_off;
  o->code_bits = lay.bits;
  o->code_bytes = lay.bytes;
  for (int i = 0, pos = lay.idx_off; i < p->D; pos += p->bits[i], i++) {
    o->bits[i] = p->bits[i];
    o->scale[i] = p->scale[i];
    o->bitpos[i] = pos;
  }
  return SQ_OK;
}

__global__ void k_f2d(const float *src, double *dst, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) dst[i] = (double)src[i];
}

int kc_f2d(const float *src, double *dst, int64_t n, sq_err *e) {
  if (n <= 0) return SQ_OK;
  k_f2d<<<(unsigned)((n + 255) / 256), 256>>>(src, dst, n);
  launchCheck();
  return SQ_OK;
}

int kc_upload_mats(kc_work *w, const plan_side *p, kc_mats *m, sq_err *e) {
  int64_t D = p->D, nr = p->rot ? D * D : 0, ns = (int64_t)p->qjl_rows * D, tot = nr + ns;
  m->rot = m->S = NULL;
  if (tot == 0) return SQ_OK;
  /* floats staged behind the doubles in the same buffer, converted on the device */
  tryCheck(kc_buf_need(&w->mats, (size_t)tot * (sizeof(double) + sizeof(float)), e));
  double *d = (double *)w->mats.p;
  float *f = (float *)(d + tot);
  if (nr) cudaCheck(cudaMemcpy(f, p->rot, (size_t)nr * sizeof(float), cudaMemcpyHostToDevice));
  if (ns) cudaCheck(cudaMemcpy(f + nr, p->qjl, (size_t)ns * sizeof(float), cudaMemcpyHostToDevice));
  tryCheck(kc_f2d(f, d, tot, e));
  m->rot = nr ? d : NULL;
  m->S = ns ? d + nr : NULL;
  return SQ_OK;
}

__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float f16_round(float x) { return __half2float(__float2half_rn(x)); }

/* Norm and unit rows: u (double of the float u_j) and the fp16-rounded norm. Warp per row. */
__global__ void k_prep(int D, int normalize, const float *x, int64_t stride, int64_t n, double *u,
                       float *norm16) {
  int64_t row = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (row >= n) return;
  const float *xr = x + row * stride;
  double *ur = u + row * D;
  if (!normalize) {
    for (int j = lane; j < D; j += 32) ur[j] = (double)xr[j];
    if (lane == 0) norm16[row] = 1.0f;
    return;
  }
  double ss = 0.0;
  for (int j = lane; j < D; j += 32) ss += (double)xr[j] * xr[j];
  ss = warp_sum_d(ss);
  double nrm = sqrt(ss);
  for (int j = lane; j < D; j += 32) ur[j] = nrm > 0.0 ? (double)(float)((double)xr[j] / nrm) : 0.0;
  if (lane == 0) norm16[row] = f16_round((float)nrm);
}

/* Quantise every coordinate: idx (the stored field) and yh (double) in place of y. */
__global__ void k_quant(kc_side s, const float *cb, const double *y, double *yh, uint16_t *idx,
                        int64_t n) {
  __shared__ uint8_t bits[PLAN_MAX_D];
  __shared__ float scale[PLAN_MAX_D];
  for (int i = threadIdx.x; i < s.D; i += blockDim.x) {
    bits[i] = s.bits[i];
    scale[i] = s.scale[i];
  }
  __syncthreads();
  int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (k >= n * s.D) return;
  int i = (int)(k % s.D), b = bits[i];
  float yv = (float)y[k], out;
  uint32_t v;
  if (b == 0) {
    v = 0;
    out = 0.0f;
  } else if (b == PLAN_BITS_FP16) {
    __half hv = __float2half_rn(yv);
    v = __half_as_ushort(hv);
    out = __half2float(hv);
  } else {
    const float *bd = cb + KC_CB_FLOATS / 2 + (s.family * (CB_MAX_BITS + 1) + b) * 256;
    int lo = cb_quantize(bd, b, yv / scale[i]);
    v = (uint32_t)lo;
    out = scale[i] * cb[(s.family * (CB_MAX_BITS + 1) + b) * 256 + lo];
  }
  if (idx) idx[k] = (uint16_t)v; /* (eval needs only yh) */
  yh[k] = (double)out;
}

/* xh = (float)(nh * acc); with QJL also r = x - xh (double copy) and fp16 |r|. Warp per row. */
__global__ void k_finish(int D, int m, const float *x, int64_t stride, const double *acc,
                         const float *norm16, int64_t n, float *xhat, double *r, float *rnorm16) {
  int64_t row = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (row >= n) return;
  double nh = (double)norm16[row], rr = 0.0;
  for (int j = lane; j < D; j += 32) {
    float xh = (float)(nh * acc[row * D + j]);
    if (xhat) xhat[row * D + j] = xh;
    if (m > 0) {
      float rj = x[row * stride + j] - xh;
      rr += (double)rj * rj;
      r[row * D + j] = (double)rj;
    }
  }
  if (m > 0) {
    rr = warp_sum_d(rr);
    if (lane == 0) rnorm16[row] = f16_round((float)sqrt(rr));
  }
}

/* Sign bits of z = S r (bit 1 when z < 0) and z replaced by the +-1 it stands for. */
__global__ void k_signs(int m, double *z, uint32_t *sg, int64_t n) {
  int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int words = (m + 31) / 32;
  if (k >= n * words) return;
  int64_t row = k / words;
  int w = (int)(k % words);
  uint32_t bitsv = 0;
  for (int b = 0; b < 32 && w * 32 + b < m; b++) {
    double *zz = z + row * m + w * 32 + b;
    if (*zz < 0.0) bitsv |= 1u << b;
    *zz = *zz < 0.0 ? -1.0 : 1.0;
  }
  sg[k] = bitsv;
}

__global__ void k_keff(int D, double coef, const float *xh, const double *zk, const float *rnorm16,
                       int64_t n, float *keff) {
  int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (k >= n * D) return;
  double c = coef * (double)rnorm16[k / D];
  keff[k] = (float)((double)xh[k] + c * zk[k]);
}

static unsigned blocks_for(int64_t threads, int per) { return (unsigned)((threads + per - 1) / per); }

int kc_prep(const kc_side *s, const float *x, int64_t stride, int64_t n, double *u, float *norm16,
            sq_err *e) {
  k_prep<<<blocks_for(n * 32, 256), 256>>>(s->D, s->normalize, x, stride, n, u, norm16);
  launchCheck();
  return SQ_OK;
}

/* Work buffers for n rows of side s. */
static int work_need(kc_work *w, const kc_side *s, int64_t n, sq_err *e) {
  size_t D = (size_t)s->D, m = (size_t)s->m, dm = D > m ? D : m;
  tryCheck(kc_buf_need(&w->u, n * D * sizeof(double), e));
  tryCheck(kc_buf_need(&w->y, n * D * sizeof(double), e));
  tryCheck(kc_buf_need(&w->norm, n * sizeof(float), e));
  tryCheck(kc_buf_need(&w->idx, n * D * sizeof(uint16_t), e));
  tryCheck(kc_buf_need(&w->xhat, n * D * sizeof(float), e));
  if (m) {
    tryCheck(kc_buf_need(&w->r, n * dm * sizeof(double), e));
    tryCheck(kc_buf_need(&w->z, n * m * sizeof(double), e));
    tryCheck(kc_buf_need(&w->rnorm, n * sizeof(float), e));
    tryCheck(kc_buf_need(&w->sg, n * ((m + 31) / 32) * sizeof(uint32_t), e));
  }
  return SQ_OK;
}

/* acc = rot^T yh (or yh itself), then xh and the residual. */
static int reconstruct(cublasHandle_t h, const kc_side *s, const kc_mats *mt, kc_work *w,
                       const float *x, int64_t stride, int64_t n, float *xhat, sq_err *e) {
  const double one = 1.0, zero = 0.0;
  int D = s->D;
  double *yh = (double *)w->u.p, *acc = yh;
  if (s->has_rot) {
    acc = (double *)w->y.p;
    cublasCheck(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, D, (int)n, D, &one, mt->rot, D, yh, D,
                            &zero, acc, D));
  }
  k_finish<<<blocks_for(n * 32, 256), 256>>>(D, x ? s->m : 0, x, stride, acc, (float *)w->norm.p,
                                             n, xhat, (double *)w->r.p, (float *)w->rnorm.p);
  launchCheck();
  return SQ_OK;
}

/* The projection y = rot . u (u the unit rows) into y, norms into w->norm; from / into pj when
 * given (kc_proj). Returns the projection's address through proj. */
static int project(cublasHandle_t h, const kc_side *s, const kc_mats *mt, kc_work *w, const float *x, int64_t n,
                   int64_t stride, kc_proj *pj, const double **proj, sq_err *e) {
  const double one = 1.0, zero = 0.0;
  const int D = s->D;
  double *u = (double *)w->u.p, *y = (double *)w->y.p;
  if (pj && pj->have_y) {
    cudaCheck(cudaMemcpyAsync(w->norm.p, pj->norm.p, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice));
    *proj = (const double *)pj->y.p;
    return SQ_OK;
  }
  k_prep<<<blocks_for(n * 32, 256), 256>>>(D, s->normalize, x, stride, n, u, (float *)w->norm.p);
  launchCheck();
  *proj = u;
  if (!s->has_rot) return SQ_OK;
  if (pj) {
    tryCheck(kc_buf_need(&pj->y, (size_t)n * D * sizeof(double), e));
    tryCheck(kc_buf_need(&pj->norm, (size_t)n * sizeof(float), e));
    y = (double *)pj->y.p;
  }
  cublasCheck(cublasDgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, D, (int)n, D, &one, mt->rot, D, u, D, &zero, y, D));
  if (pj) {
    cudaCheck(cudaMemcpyAsync(pj->norm.p, w->norm.p, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice));
    pj->have_y = 1;
  }
  *proj = y;
  return SQ_OK;
}

int kc_side_run(cublasHandle_t h, const kc_side *s, const kc_mats *mt, const float *cb_dev,
                kc_work *w, const float *x, int64_t n, int64_t stride, float *xhat_out,
                float *keff_out, kc_proj *pj, sq_err *e) {
  const double one = 1.0, zero = 0.0;
  int D = s->D, m = s->m;
  if (n <= 0) return SQ_OK;
  if (n > INT32_MAX / PLAN_MAX_D) return sq_fail(e, SQ_EINPUT, "cuda: %lld rows in one chunk", (long long)n);
  tryCheck(work_need(w, s, n, e));
  double *u = (double *)w->u.p;
  const double *proj;
  tryCheck(project(h, s, mt, w, x, n, stride, s->has_rot ? pj : NULL, &proj, e));
  k_quant<<<blocks_for(n * D, 256), 256>>>(*s, cb_dev, proj, u, (uint16_t *)w->idx.p, n);
  launchCheck();
  float *xh = xhat_out ? xhat_out : (float *)w->xhat.p;
  if (m == 0 && !xhat_out && !keff_out) return SQ_OK; /* encode without QJL needs no reconstruction */
  tryCheck(reconstruct(h, s, mt, w, x, stride, n, xh, e));
  if (m > 0) {
    double *r = (double *)w->r.p, *z = (double *)w->z.p;
    cublasCheck(cublasDgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, m, (int)n, D, &one, mt->S, D, r, D, &zero,
                            z, m));
    k_signs<<<blocks_for(n * ((m + 31) / 32), 256), 256>>>(m, z, (uint32_t *)w->sg.p, n);
    launchCheck();
    if (keff_out) {
      cublasCheck(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, D, (int)n, m, &one, mt->S, D, z, m,
                              &zero, r, D));
      k_keff<<<blocks_for(n * D, 256), 256>>>(D, s->qjl_coef, xh, r, (float *)w->rnorm.p, n,
                                              keff_out);
      launchCheck();
    }
  } else if (keff_out && keff_out != xh) {
    cudaCheck(cudaMemcpy(keff_out, xh, (size_t)n * D * sizeof(float), cudaMemcpyDeviceToDevice));
  }
  return SQ_OK;
}

__device__ __forceinline__ void put_bits(uint32_t *words, int pos, uint32_t v, int nb) {
  int w = pos >> 5, off = pos & 31;
  atomicOr(&words[w], v << off);
  if (off + nb > 32) atomicOr(&words[w + 1], v >> (32 - off));
}

#define KC_PACK_WORDS ((16 + PLAN_MAX_D * 16 + 4 * PLAN_MAX_D + 16) / 32 + 2)

/* Assemble each row's bit stream in shared memory (warp per row), then write its bytes. */
__global__ void k_pack(kc_side s, const uint16_t *idx, const float *norm16, const uint32_t *sg,
                       const float *rnorm16, int64_t n, uint8_t *codes) {
  extern __shared__ uint32_t sm[];
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int64_t row = blockIdx.x * (int64_t)(blockDim.x >> 5) + warp;
  if (row >= n) return;
  uint32_t *words = sm + warp * KC_PACK_WORDS;
  int nw = (s.code_bits + 31) / 32 + 1;
  for (int i = lane; i < nw; i += 32) words[i] = 0;
  __syncwarp();
  if (lane == 0 && s.normalize) put_bits(words, s.norm_off, __half_as_ushort(__float2half_rn(norm16[row])), 16);
  for (int i = lane; i < s.D; i += 32) {
    int b = s.bits[i];
    if (b) put_bits(words, s.bitpos[i], idx[row * s.D + i], b);
  }
  if (s.m > 0) {
    int words_m = (s.m + 31) / 32;
    for (int w = lane; w < words_m; w += 32) {
      int nb = s.m - 32 * w < 32 ? s.m - 32 * w : 32;
      put_bits(words, s.sign_off + 32 * w, sg[row * words_m + w], nb);
    }
    if (lane == 0) put_bits(words, s.rnorm_off, __half_as_ushort(__float2half_rn(rnorm16[row])), 16);
  }
  __syncwarp();
  uint8_t *out = codes + row * s.code_bytes;
  for (int b = lane; b < s.code_bytes; b += 32) out[b] = (uint8_t)(words[b >> 2] >> (8 * (b & 3)));
}

int kc_pack(const kc_side *s, kc_work *w, int64_t n, uint8_t *codes, sq_err *e) {
  int warps = 8;
  size_t smem = (size_t)warps * KC_PACK_WORDS * sizeof(uint32_t);
  k_pack<<<blocks_for(n, warps), warps * 32, smem>>>(*s, (const uint16_t *)w->idx.p,
                                                     (const float *)w->norm.p,
                                                     (const uint32_t *)w->sg.p,
                                                     (const float *)w->rnorm.p, n, codes);
  launchCheck();
  return SQ_OK;
}

/* Decode fields: yh (double) per coordinate and the row norm. Thread per (row, coordinate). */
__global__ void k_unpack(kc_side s, const float *cb, const uint8_t *codes, int64_t n, double *yh,
                         float *norm16) {
  __shared__ uint8_t bits[PLAN_MAX_D];
  __shared__ float scale[PLAN_MAX_D];
  __shared__ int32_t bitpos[PLAN_MAX_D];
  for (int i = threadIdx.x; i < s.D; i += blockDim.x) {
    bits[i] = s.bits[i];
    scale[i] = s.scale[i];
    bitpos[i] = s.bitpos[i];
  }
  __syncthreads();
  int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (k >= n * s.D) return;
  int64_t row = k / s.D;
  int i = (int)(k % s.D), b = bits[i];
  const uint8_t *code = codes + row * s.code_bytes;
  float out = 0.0f;
  if (b == PLAN_BITS_FP16) out = __half2float(__ushort_as_half((unsigned short)kc_get_bits(code, bitpos[i], 16)));
  else if (b > 0) out = scale[i] * cb[(s.family * (CB_MAX_BITS + 1) + b) * 256 + kc_get_bits(code, bitpos[i], b)];
  yh[k] = (double)out;
  if (i == 0)
    norm16[row] = s.normalize ? __half2float(__ushort_as_half((unsigned short)kc_get_bits(code, s.norm_off, 16))) : 1.0f;
}

int kc_unpack_decode(cublasHandle_t h, const kc_side *s, const kc_mats *mt, const float *cb_dev,
                     kc_work *w, const uint8_t *codes, int64_t n, float *xhat, sq_err *e) {
  if (n <= 0) return SQ_OK;
  tryCheck(work_need(w, s, n, e));
  k_unpack<<<blocks_for(n * s->D, 256), 256>>>(*s, cb_dev, codes, n, (double *)w->u.p,
                                               (float *)w->norm.p);
  launchCheck();
  return reconstruct(h, s, mt, w, NULL, 0, n, xhat, e);
}

/* A row's reconstruction statistics, accumulated by the lanes of its warp: x . xh, |x|^2, |xh|^2,
 * |x - xh|^2 (double, each lane its dimensions in order), then summed over the warp and written by
 * lane 0 as cos(x, xh) (kern.h convention), |x - xh|^2, |x|^2. */
__device__ __forceinline__ void rec_add(double a, double b, double (&st)[4]) {
  st[0] += a * b;
  st[1] += a * a;
  st[2] += b * b;
  st[3] += (a - b) * (a - b);
}
__device__ __forceinline__ void rec_put(double (&st)[4], int lane, double *rec) {
  for (int i = 0; i < 4; i++) st[i] = warp_sum_d(st[i]);
  const double dot = st[0], nx = st[1], nh = st[2];
  if (lane == 0) {
    rec[0] = (nx == 0.0 && nh == 0.0) ? 1.0 : (nx == 0.0 || nh == 0.0) ? 0.0 : dot / sqrt(nx * nh);
    rec[1] = st[3];
    rec[2] = nx;
  }
}

/* Per row: cos(x, xh) (kern.h convention), |x - xh|^2, |x|^2. Warp per row. */
__global__ void k_rec(const float *x, int64_t stride, const float *xh, int64_t n, int D, double *rec) {
  int64_t row = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (row >= n) return;
  double st[4] = {0, 0, 0, 0};
  for (int j = lane; j < D; j += 32) {
    double a = x[row * stride + j], b = xh[row * D + j];
    rec_add(a, b, st);
  }
  rec_put(st, lane, rec + row * 3);
}

int kc_rec_stats(const float *x, int64_t stride, const float *xh, int64_t n, int D, double *rec,
                 sq_err *e) {
  if (n <= 0) return SQ_OK;
  k_rec<<<blocks_for(n * 32, 256), 256>>>(x, stride, xh, n, D, rec);
  launchCheck();
  return SQ_OK;
}

/* k_finish (no QJL) and k_rec in one pass: xh = (float)(nh * acc) into xhat, and the row's
 * reconstruction statistics from x and that float, in k_rec's order. Warp per row. */
__global__ void k_finish_rec(int D, const float *x, int64_t stride, const double *acc, const float *norm16, int64_t n,
                             float *xhat, double *rec) {
  int64_t row = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (row >= n) return;
  double nhr = (double)norm16[row], st[4] = {0, 0, 0, 0};
  for (int j = lane; j < D; j += 32) {
    float xh = (float)(nhr * acc[row * D + j]);
    xhat[row * D + j] = xh;
    double a = x[row * stride + j], b = xh;
    rec_add(a, b, st);
  }
  rec_put(st, lane, rec + row * 3);
}

int kc_finish_rec(int D, const float *x, int64_t stride, const double *acc, const float *norm16, int64_t n,
                  float *xhat, double *rec, sq_err *e) {
  if (n <= 0) return SQ_OK;
  k_finish_rec<<<blocks_for(n * 32, 256), 256>>>(D, x, stride, acc, norm16, n, xhat, rec);
  launchCheck();
  return SQ_OK;
}

int kc_quant(const kc_side *s, const float *cb_dev, const double *y, double *yh, uint16_t *idx, int64_t n,
             sq_err *e) {
  if (n <= 0) return SQ_OK;
  k_quant<<<blocks_for(n * s->D, 256), 256>>>(*s, cb_dev, y, yh, idx, n);
  launchCheck();
  return SQ_OK;
}

/* One block per (column, batch), fixed summation order (deterministic run to run). */
__global__ void k_colsum(const double *in, int64_t rows, int cols, double *out) {
  __shared__ double part[256];
  int c = blockIdx.x;
  in += (int64_t)blockIdx.y * rows * cols;
  out += (int64_t)blockIdx.y * cols;
  double acc = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) acc += in[r * cols + c];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[c] = part[0];
}

int kc_colsum(const double *in, int batch, int64_t rows, int cols, double *out, sq_err *e) {
  if (rows <= 0 || batch <= 0) return SQ_OK;
  k_colsum<<<dim3(cols, batch), 256>>>(in, rows, cols, out);
  launchCheck();
  return SQ_OK;
}
