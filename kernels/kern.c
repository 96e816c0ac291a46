/* kern_create: pick a backend from the config's choice. */
#include "kern.h"
#include "cfg.h"

int kern_create(kern_backend **out, int choice, int threads, sq_err *e) {
  if (choice == CFG_BACKEND_CPU) return kern_cpu_create(out, threads, e);
  if (choice == CFG_BACKEND_CUDA) return kern_cuda_create(out, 0, e);
  if (kern_cuda_available()) return kern_cuda_create(out, 0, e);
  return kern_cpu_create(out, threads, e);
}
