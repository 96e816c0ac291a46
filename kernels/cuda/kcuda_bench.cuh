/* kcuda_bench: device-level measurements for `sqexp bench` (C-callable; src/cmd_bench.c). */
#ifndef SQEXP_KCUDA_BENCH_CUH
#define SQEXP_KCUDA_BENCH_CUH
#include <stdint.h>
#include <stdio.h>
#include "codebook.h"
#include "err.h"
#include "kern.h"
#include "plan.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int64_t tokens;      /* tokens per layer of the synthetic batch */
  int layers;          /* layers in the batch (batch bytes = layers*tokens*H*D*4) */
  int H, D;            /* KV heads, head_dim */
  int n_plans;         /* plans to encode the batch with (one per head each: plans[p][h]) */
  const char *const *plan_names;
  const plan_side *const *sides; /* [n_plans][H]: the side (K) of plan p for head h */
  int encode_only;     /* copy bandwidth and the encoders alone (no decode, precision table) */
  double copy_gbs;     /* out: measured copy bandwidth (bytes read + written per second / 1e9) */
} kc_bench_opts;

/* Copy bandwidth, then per plan the encode and decode of the whole batch on the device (CUDA
 * events, 1 warm-up, median of 5), the projection precision table (fp64 vs fp32 vs TF32) and the
 * moments kernel. Writes table rows to f; copy_gbs is filled for the caller's later rows. */
int kc_bench_device(kern_backend *gpu, const cb_table *cb, kc_bench_opts *o, FILE *f, sq_err *e);

#ifdef __cplusplus
}
#endif
#endif
