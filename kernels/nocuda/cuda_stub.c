/* Built instead of kernels/cuda/ when nvcc is absent: the CUDA backend reports why it is missing. */
#include "kern.h"

int kern_cuda_available(void) { return 0; }

int kern_cuda_create(kern_backend **out, int device, sq_err *e) {
  (void)device;
  *out = 0;
  return sq_fail(e, SQ_EFAIL, "this sqexp was built without CUDA (nvcc was not found at configure time)");
}
