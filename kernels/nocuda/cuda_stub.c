/* Built instead of kernels/cuda/ when nvcc is absent: the CUDA backend reports why it is missing. */
#include "kern.h"

int kern_cuda_available(void) { return 0; }

int kern_cuda_create(kern_backend **out, int device, sq_err *e) {
  (void)device;
  *out = 0;
  return sq_fail(e, SQ_EFAIL, "this sqexp was built without CUDA (nvcc was not found at configure time)");
}

int kern_cuda_encode_fast(kern_backend *b, const plan_side *p, const cb_table *cb, const float *x,
                          int64_t n, int64_t stride, int passes, uint8_t *codes, sq_err *e) {
  (void)b, (void)p, (void)cb, (void)x, (void)n, (void)stride, (void)passes, (void)codes;
  return sq_fail(e, SQ_EFAIL, "this sqexp was built without CUDA (nvcc was not found at configure time)");
}
