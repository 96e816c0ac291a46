/* kcuda_eigh: the eigendecomposition step of calibration on the GPU (kern.h's eigh): all H
 * second moments of a layer in one cusolverDnXsyevBatched call (fp64 in, fp64 compute, fp64 out).
 *
 * Layout: C[h] is symmetric, so its row-major storage is also its column-major storage and the
 * solver reads the lower triangle as is. The solver overwrites A[h] with the eigenvectors as
 * COLUMNS of a column-major matrix (column i contiguous) -- which, read row-major, is exactly
 * kern.h's layout (row i = eigenvector i): no transpose is needed. Eigenvalues come back in
 * ascending order with their vectors. Sorting, clamping and the sign convention are left to
 * calib_from_eig, the path the CPU uses too.
 *
 * The cuSOLVER handle lives as long as the backend (created on the first call); the device and
 * host buffers are allocated per call (one call per layer and side, a few MB). */
#include <cusolverDn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kcuda.cuh"

static const char *cusolver_status_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_INVALID_WORKSPACE: return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default: return "cusolver status (see cusolver_common.h)";
  }
}

/* As cudaCheck / cublasCheck (kcuda.cuh): file:line, the call and the status into e. */
#define cusolverCheck(call)                                                                     \
  do {                                                                                          \
    cusolverStatus_t cs_ = (call);                                                              \
    if (cs_ != CUSOLVER_STATUS_SUCCESS)                                                         \
      return sq_fail(e, SQ_EFAIL, "%s:%d: %s: %s (%d)", __FILE__, __LINE__, #call,              \
                     cusolver_status_name(cs_), (int)cs_);                                      \
  } while (0)

struct kc_solver {
  cusolverDnHandle_t h;
  cusolverDnParams_t params;
};

void kc_solver_free(kc_solver *s) {
  if (!s) return;
  if (s->params) cusolverDnDestroyParams(s->params);
  if (s->h) cusolverDnDestroy(s->h);
  free(s);
}

/* The backend's solver, created on first use (a half-made one is released, not kept). */
static int solver_create(kc_solver *s, sq_err *e) {
  cusolverCheck(cusolverDnCreate(&s->h));
  cusolverCheck(cusolverDnCreateParams(&s->params));
  return SQ_OK;
}

static int get_solver(kern_backend *b, kc_solver **out, sq_err *e) {
  kc_solver **slot = kc_solver_slot(b);
  if (!*slot) {
    kc_solver *s = (kc_solver *)sq_xcalloc(1, sizeof *s);
    if (solver_create(s, e)) {
      kc_solver_free(s);
      return SQ_EFAIL;
    }
    *slot = s;
  }
  *out = *slot;
  return SQ_OK;
}

/* Everything one call uses; the buffers are released by eigh_release whatever step failed (the
 * handle and params are the backend's, borrowed). */
typedef struct {
  cusolverDnHandle_t h;
  cusolverDnParams_t params;
  double *A, *W;
  int *info;
  void *dwork, *hwork;
  int *info_host;
} eigh_res;

static void eigh_release(eigh_res *r) {
  if (r->A) cudaFree(r->A);
  if (r->W) cudaFree(r->W);
  if (r->info) cudaFree(r->info);
  if (r->dwork) cudaFree(r->dwork);
  free(r->hwork);
  free(r->info_host);
}

/* Heads [h0, h0+nb) of C: upload, solve, check every info, download. */
static int eigh_batch(eigh_res *r, const double *C, int h0, int nb, int D, double *eigval,
                      double *evec, sq_err *e) {
  size_t mat = (size_t)D * D;
  cudaCheck(cudaMemcpy(r->A, C + (size_t)h0 * mat, (size_t)nb * mat * sizeof(double),
                       cudaMemcpyHostToDevice));
  size_t dbytes = 0, hbytes = 0;
  cusolverCheck(cusolverDnXsyevBatched_bufferSize(r->h, r->params, CUSOLVER_EIG_MODE_VECTOR,
                                                  CUBLAS_FILL_MODE_LOWER, D, CUDA_R_64F, r->A, D,
                                                  CUDA_R_64F, r->W, CUDA_R_64F, &dbytes, &hbytes,
                                                  nb));
  cudaCheck(cudaMalloc(&r->dwork, dbytes > 0 ? dbytes : 1));
  r->hwork = sq_xmalloc(hbytes > 0 ? hbytes : 1);
  cudaCheck(cudaMemset(r->info, 0, (size_t)nb * sizeof(int)));
  cusolverCheck(cusolverDnXsyevBatched(r->h, r->params, CUSOLVER_EIG_MODE_VECTOR,
                                       CUBLAS_FILL_MODE_LOWER, D, CUDA_R_64F, r->A, D, CUDA_R_64F,
                                       r->W, CUDA_R_64F, r->dwork, dbytes, r->hwork, hbytes,
                                       r->info, nb));
  cudaCheck(cudaDeviceSynchronize()); /* execution errors surface here, naming this file:line */
  cudaCheck(cudaMemcpy(r->info_host, r->info, (size_t)nb * sizeof(int), cudaMemcpyDeviceToHost));
  for (int i = 0; i < nb; i++) {
    int inf = r->info_host[i];
    if (inf < 0)
      return sq_fail(e, SQ_EFAIL, "%s:%d: eigh: cusolverDnXsyevBatched: parameter %d is invalid "
                     "(head %d, D=%d, batch of %d)", __FILE__, __LINE__, -inf, h0 + i, D, nb);
    if (inf > 0)
      return sq_fail(e, SQ_EFAIL, "%s:%d: eigh: head %d: cusolverDnXsyevBatched did not converge "
                     "(info %d, D=%d)", __FILE__, __LINE__, h0 + i, inf, D);
  }
  cudaCheck(cudaMemcpy(eigval + (size_t)h0 * D, r->W, (size_t)nb * D * sizeof(double),
                       cudaMemcpyDeviceToHost));
  /* column-major "column i = eigenvector i" is row-major "row i = eigenvector i" */
  cudaCheck(cudaMemcpy(evec + (size_t)h0 * mat, r->A, (size_t)nb * mat * sizeof(double),
                       cudaMemcpyDeviceToHost));
  cudaFree(r->dwork);
  r->dwork = NULL;
  free(r->hwork);
  r->hwork = NULL;
  return SQ_OK;
}

static int eigh_run(eigh_res *r, const double *C, int H, int D, double *eigval, double *evec,
                    sq_err *e) {
  /* the solver limits n * lda * batch to INT32_MAX: larger layers go in several batches */
  int64_t per = (int64_t)D * D, cap = (int64_t)INT32_MAX / per;
  int batch = (int)(H < cap ? H : cap);
  if (batch < 1)
    return sq_fail(e, SQ_EINPUT, "eigh: D=%d is too large for cusolverDnXsyevBatched", D);
  cudaCheck(cudaMalloc(&r->A, (size_t)batch * per * sizeof(double)));
  cudaCheck(cudaMalloc(&r->W, (size_t)batch * D * sizeof(double)));
  cudaCheck(cudaMalloc(&r->info, (size_t)batch * sizeof(int)));
  r->info_host = (int *)sq_xcalloc((size_t)batch, sizeof(int));
  for (int h0 = 0; h0 < H; h0 += batch) {
    int nb = H - h0 < batch ? H - h0 : batch;
    tryCheck(eigh_batch(r, C, h0, nb, D, eigval, evec, e));
  }
  return SQ_OK;
}

int kc_eigh(kern_backend *b, const double *C, int H, int D, double *eigval, double *evec, sq_err *e) {
  if (kern_check_moments(C, H, D, e)) return SQ_EINPUT;
  eigh_res r;
  memset(&r, 0, sizeof r);
  kc_solver *s;
  tryCheck(get_solver(b, &s, e));
  r.h = s->h;
  r.params = s->params;
  int rc = eigh_run(&r, C, H, D, eigval, evec, e);
  eigh_release(&r);
  return rc;
}
