/* tu_layer: a tiny in-memory layer for kernel tests (CPU reference and CUDA agreement tests).
 * Keys, values and queries are anisotropic Gaussians (a few dominant directions, like real
 * post-RoPE keys) mixed by a Householder reflection so no basis is the identity, plus a mean
 * offset on the keys. Everything is deterministic in the seed (rng.h). */
#ifndef SQEXP_TU_LAYER_H
#define SQEXP_TU_LAYER_H
#include <stdint.h>
#include "kern.h"

typedef struct {
  int n_seq, n_kv_heads, n_q_heads, head_dim, n_randq;
  int64_t n_tok;
  int64_t *seq_off;      /* [n_seq+1] */
  float *k, *v;          /* [n_tok][Hkv][D] */
  float *q;              /* [n_tok][Hq][D] */
  float *randq;          /* [Hkv][n_seq][n_randq][D], drawn as methods.md says (seed, layer 0) */
  kern_layer L;          /* points into the arrays above; protocols = all, probs_last 4, topk 8 */
} tu_layer;

/* Build a layer with sequences of the given lengths. */
void tu_layer_make(tu_layer *t, const int *lens, int n_seq, int n_kv_heads, int n_q_heads, int D,
                   int n_randq, uint64_t seed);
/* n calibration rows [n][H][D] from the same distribution as the layer's keys (values when
 * values != 0) of the same seed; *out is malloc'd. */
void tu_rows(float **out, int64_t n, int H, int D, int values, uint64_t seed);
void tu_layer_free(tu_layer *t);

#endif
