/* kern: what both backends share: the backend choice and the validation of their inputs. */
#include <math.h>
#include "kern.h"
#include "cfg.h"

int kern_create(kern_backend **out, int choice, int threads, sq_err *e) {
  if (choice == CFG_BACKEND_CPU) return kern_cpu_create(out, threads, e);
  if (choice == CFG_BACKEND_CUDA) return kern_cuda_create(out, 0, e);
  if (kern_cuda_available()) return kern_cuda_create(out, 0, e);
  return kern_cpu_create(out, threads, e);
}

/* Both backends refuse the same malformed layers with the same messages. */
int kern_check_layer(const kern_layer *L, int topk_max, sq_err *e) {
  if (L->n_kv_heads < 1 || L->n_q_heads < L->n_kv_heads || L->n_q_heads % L->n_kv_heads)
    return sq_fail(e, SQ_EINPUT, "layer %d: %d query heads is not a multiple of %d KV heads",
                   L->layer, L->n_q_heads, L->n_kv_heads);
  if (L->head_dim < 1 || L->head_dim > PLAN_MAX_D)
    return sq_fail(e, SQ_EINPUT, "layer %d: head_dim %d outside 1..%d", L->layer, L->head_dim,
                   PLAN_MAX_D);
  if (L->n_seq < 1 || !L->seq_off || L->seq_off[0] != 0 || L->seq_off[L->n_seq] != L->n_tok)
    return sq_fail(e, SQ_EINPUT, "layer %d: sequence offsets must run from 0 to n_tok=%lld",
                   L->layer, (long long)L->n_tok);
  for (int s = 0; s < L->n_seq; s++)
    if (L->seq_off[s + 1] <= L->seq_off[s])
      return sq_fail(e, SQ_EINPUT, "layer %d: evaluation sequence %d is empty or out of order",
                     L->layer, s);
  if (!L->k || !L->v) return sq_fail(e, SQ_EINPUT, "layer %d: no keys or values", L->layer);
  if (L->topk < 1 || L->topk > topk_max)
    return sq_fail(e, SQ_EINPUT, "layer %d: topk %d outside 1..%d", L->layer, L->topk, topk_max);
  if (L->probs_last < 0 || L->n_randq < 0)
    return sq_fail(e, SQ_EINPUT, "layer %d: negative probs_last or n_randq", L->layer);
  if ((L->protocols & PROTO_RANDQ) && L->n_randq > 0 && !L->randq)
    return sq_fail(e, SQ_EINPUT, "layer %d: randq enabled but no random queries given", L->layer);
  return SQ_OK;
}

/* Both backends refuse the same malformed second moments with the same messages. */
int kern_check_moments(const double *C, int H, int D, sq_err *e) {
  if (H < 1 || D < 1) return sq_fail(e, SQ_EINPUT, "eigh: need heads and dims (got H=%d D=%d)", H, D);
  for (int h = 0; h < H; h++)
    for (int64_t i = 0; i < (int64_t)D * D; i++)
      if (!isfinite(C[(int64_t)h * D * D + i]))
        return sq_fail(e, SQ_EINPUT, "eigh: head %d has a non-finite entry at (%lld, %lld)", h,
                       (long long)(i / D), (long long)(i % D));
  return SQ_OK;
}
