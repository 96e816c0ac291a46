/* kcuda: internals of the CUDA backend (kernels/cuda/*.cu). The arithmetic follows the CPU
 * reference exactly as kernels/cpu/kcpu.h spells it out (projections and reconstructions
 * accumulated in double, float at the same points), so packed codes agree bit for bit except
 * where a double sum lands on a float rounding tie (see docs/cuda.md).
 *
 * Checked calls (as llm.c's cudaCheck) turn a failing CUDA / cuBLAS call into an sq_err with
 * file:line and return its code from the enclosing function, which must have `sq_err *e` in
 * scope and return int. Nothing here exits. */
#ifndef SQEXP_KCUDA_CUH
#define SQEXP_KCUDA_CUH
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdint.h>
extern "C" {
#include "codebook.h"
#include "codes_sched.h"
#include "err.h"
#include "kern.h"
#include "plan.h"
#include "prov.h"
}

#define cudaCheck(call)                                                                         \
  do {                                                                                          \
    cudaError_t err_ = (call);                                                                  \
    if (err_ != cudaSuccess)                                                                    \
      return sq_fail(e, SQ_EFAIL, "%s:%d: %s: %s", __FILE__, __LINE__, #call,                   \
                     cudaGetErrorString(err_));                                                 \
  } while (0)
#define cublasCheck(call)                                                                       \
  do {                                                                                          \
    cublasStatus_t st_ = (call);                                                                \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                           \
      return sq_fail(e, SQ_EFAIL, "%s:%d: %s: %s", __FILE__, __LINE__, #call,                   \
                     cublasGetStatusString(st_));                                               \
  } while (0)
/* After a kernel launch: launch errors now, execution errors at the next synchronising call. */
#define launchCheck() cudaCheck(cudaGetLastError())
/* Propagate an int status. */
#define tryCheck(call)                                                                          \
  do {                                                                                          \
    int rc_ = (call);                                                                           \
    if (rc_) return rc_;                                                                        \
  } while (0)

#define KC_TOPK_MAX 64

/* Field of nb <= 24 bits at stream bit pos of a packed code (LSB-first, kcpu.h's layout). */
__device__ __forceinline__ uint32_t kc_get_bits(const uint8_t *code, int64_t pos, int nb) {
  int64_t b0 = pos >> 3, b1 = (pos + nb - 1) >> 3;
  uint32_t v = 0;
  for (int64_t b = b0; b <= b1; b++) v |= (uint32_t)code[b] << (8 * (b - b0));
  return (v >> (pos & 7)) & ((1u << nb) - 1u);
}

/* One plan_side as the kernels see it (passed by value). Bit offsets as in kcpu_layout. */
typedef struct {
  int D, normalize, family, m, has_rot;
  int norm_off, idx_off, sign_off, rnorm_off, code_bits, code_bytes;
  double qjl_coef;
  uint8_t bits[PLAN_MAX_D];
  float scale[PLAN_MAX_D];
  int32_t bitpos[PLAN_MAX_D]; /* stream offset of coordinate i's field */
} kc_side;

/* Device copies of a plan_side's matrices (in double: the projections accumulate in double). */
typedef struct {
  double *rot; /* [D*D] row-major, NULL when identity */
  double *S;   /* [m*D] row-major, NULL when m == 0 */
} kc_mats;

/* Reusable device buffers, grown on demand. */
typedef struct {
  void *p;
  size_t cap;
} kc_buf;

/* Work buffers of one side's pipeline for up to `rows` rows. */
typedef struct {
  kc_buf xin;   /* float [rows][D] compact input rows */
  kc_buf u;     /* double [rows][D]: unit rows, then yh (quantized, scaled) */
  kc_buf y;     /* double [rows][D]: projections, then reconstructions */
  kc_buf r;     /* double [rows][max(D,m)]: residuals, then S^T signs */
  kc_buf z;     /* double [rows][m]: S r */
  kc_buf norm;  /* float [rows] fp16-rounded norm (1 when !normalize) */
  kc_buf rnorm; /* float [rows] fp16-rounded |r| */
  kc_buf idx;   /* uint16 [rows][D] stored field of each coordinate */
  kc_buf sg;    /* uint32 [rows][ceil(m/32)] sign bits (1 = negative) */
  kc_buf mats;  /* double rot + S */
  kc_buf codes; /* uint8 [rows][code_bytes] */
  kc_buf xhat;  /* float [rows][D] */
} kc_work;

/* One input's projection by one rotation (a side of one head's eval rows), kept for the other
 * plans of an eval batch that use the same rotation: the SpectralQuant plans of a head all point
 * at its calibrated basis, so their sides share the device copy of the matrix, the unit rows'
 * norms and y = rot . u, and only quantise and reconstruct on their own. */
typedef struct {
  const float *rot_host; /* the key: the plan's rotation (NULL: an unused slot), its normalize flag */
  int normalize, is_key;
  int have_y;            /* y and norm hold the projection */
  kc_buf rot;            /* double [D*D]: the device copy */
  kc_buf y, norm;        /* double [n][D], float [n] */
} kc_proj;

/* Eval's grouped code phase (kcuda_codes.cu), one side of it: the plans it handles (in: the
 * schedule's input, codes_sched.h; their kc_sides ss, indexed as in.ps), the head's rows (row t at
 * x + t stride), where plan i's decoded rows go (dst + i n_tok D; keys: the effective keys) and its
 * per-token statistics (rec + i n_tok 3, kc_rec_stats' fields). Only sides without QJL. */
typedef struct {
  csched_side in;
  const kc_side *ss;
  const float *x;
  int64_t stride;
  float *dst;
  double *rec;
} kc_codes_side;
/* Device bytes of one group's fp64 intermediates (projections, quantised projections,
 * reconstructions), and rows per chunk (a projection covers a whole chunk): the defaults of
 * kc_codes' bytes and rows (a test sets them small: several groups and row chunks). */
#define KC_CODES_BYTES ((int64_t)2 << 30)
#define KC_CODES_ROWS ((int64_t)1 << 16)
/* Its buffers, kept by the backend between batches, and its limits (0: the defaults). */
typedef struct {
  int64_t bytes, rows;
  kc_buf rot_f, rot_d;     /* the batch's rotations: float as uploaded, double [n_rot][D][D] */
  kc_buf u, norm;          /* unit rows (unnormalised, normalised) [2][rows][D], their fp16 norms */
  kc_buf y, yh, acc;       /* a group's projections, quantised projections, reconstructions */
  float *rot_h;            /* page-locked staging of the rotations' upload */
  size_t rot_h_bytes;
  cudaEvent_t up_done;     /* the last upload has read rot_h (created with the first upload) */
} kc_codes;
/* Keys (sides[0]) and values (sides[1]) of a batch: every handled plan's decoded rows and
 * statistics. kc_codes_free releases c (zeroed, reusable). */
int kc_codes_batch(kc_codes *c, cublasHandle_t h, const float *cb_dev, int64_t n_tok, int D,
                   const kc_codes_side sides[2], sq_err *e);
void kc_codes_free(kc_codes *c);

typedef struct kc_state kc_state;

/* Host-side helpers (kcuda_quant.cu). */
int kc_side_of(const plan_side *p, kc_side *out, sq_err *e);
int kc_buf_need(kc_buf *b, size_t bytes, sq_err *e);
void kc_buf_free(kc_buf *b);
void kc_work_free(kc_work *w);
/* dst[i] = (double)src[i], i < n (device arrays). */
int kc_f2d(const float *src, double *dst, int64_t n, sq_err *e);
/* Upload rot/S of p as doubles into w->mats; fills m. */
int kc_upload_mats(kc_work *w, const plan_side *p, kc_mats *m, sq_err *e);

/* The pipeline of one side over n device rows (row i at x + i*stride floats):
 *   project (norm, rot in double) -> quantize (idx, yh) -> reconstruct xhat -> QJL (signs, |r|).
 * Results stay in w: idx, norm, sg, rnorm; xhat (float) when want_xhat; keff (the effective key
 * xhat + c*S^T signs) written to keff when non-NULL (it may equal w->xhat). pj (a rotated side,
 * or NULL): the projection comes from it when it has one, else is stored in it. */
int kc_side_run(cublasHandle_t cb_h, const kc_side *s, const kc_mats *m, const float *cb_dev,
                kc_work *w, const float *x, int64_t n, int64_t stride, float *xhat_out,
                float *keff_out, kc_proj *pj, sq_err *e);
/* Its steps for eval's grouped code phase (kcuda_codes.cu): the unit rows (kc_prep, below);
 * quantise n rows of projections y into yh (idx, the stored fields, when not NULL); and, after
 * the reconstruction acc = rot^T yh, xhat = (float)(norm16 * acc) with the rows' reconstruction
 * statistics (kc_rec_stats' rec [n][3], in its order) in one pass (sides without QJL). */
int kc_quant(const kc_side *s, const float *cb_dev, const double *y, double *yh, uint16_t *idx, int64_t n,
             sq_err *e);
int kc_finish_rec(int D, const float *x, int64_t stride, const double *acc, const float *norm16, int64_t n,
                  float *xhat, double *rec, sq_err *e);
/* The first step alone (norms, unit rows as doubles), for the bench's precision table. */
int kc_prep(const kc_side *s, const float *x, int64_t stride, int64_t n, double *u, float *norm16,
            sq_err *e);
/* Pack / unpack rows between w's fields and codes [n][code_bytes]. */
int kc_pack(const kc_side *s, kc_work *w, int64_t n, uint8_t *codes, sq_err *e);
int kc_unpack_decode(cublasHandle_t cb_h, const kc_side *s, const kc_mats *m, const float *cb_dev,
                     kc_work *w, const uint8_t *codes, int64_t n, float *xhat, sq_err *e);
/* Per-row reconstruction statistics (cos, |x-xh|^2, |x|^2) of n rows into rec [n][3] (double). */
int kc_rec_stats(const float *x, int64_t stride, const float *xh, int64_t n, int D, double *rec,
                 sq_err *e);
/* Deterministic column sums: in [batch][rows][cols] double -> out [batch][cols] (device). */
int kc_colsum(const double *in, int batch, int64_t rows, int cols, double *out, sq_err *e);

/* The codebook table on the device: centroid then boundary, [CB_NFAM][CB_MAX_BITS+1][256] each. */
#define KC_CB_FLOATS (2 * CB_NFAM * (CB_MAX_BITS + 1) * 256)

/* kern.h's eigh on the GPU (kcuda_eigh.cu: cusolverDnXsyevBatched, ascending eigenvalues). Its
 * cuSOLVER handle is created on first use, kept in the backend (kc_solver_slot) and released by
 * the backend's destroy (kc_solver_free, NULL-safe). */
int kc_eigh(kern_backend *b, const double *C, int H, int D, double *eigval, double *evec, sq_err *e);
typedef struct kc_solver kc_solver;
kc_solver **kc_solver_slot(kern_backend *b);
void kc_solver_free(kc_solver *s);

/* Bench hooks (kcuda_bench.cu) use the backend's handles. */
cublasHandle_t kc_cublas(kern_backend *b);

#endif
