/* tu_layer: see tu_layer.h. */
#include "util/tu_layer.h"
#include <math.h>
#include <stdlib.h>
#include "err.h"
#include "rng.h"

/* One vector: per-coordinate scale a_j = amp * exp(-j / 3) + floor, Householder mix with the
 * head's unit vector w, plus offset mu (keys only). Scales are chosen so that attention is
 * neither uniform nor one-hot at D = 16..128. */
static void draw_vec(rng_t *r, const float *w, int D, double amp, double floor_, double mu, float *x) {
  double z[512], dot = 0.0;
  for (int j = 0; j < D; j++) {
    z[j] = rng_normal(r) * (amp * exp(-j / 3.0) + floor_) + (j == 1 ? mu : 0.0);
    dot += z[j] * w[j];
  }
  for (int j = 0; j < D; j++) x[j] = (float)(z[j] - 2.0 * dot * w[j]);
}

/* The mixing vector of head h (kind 0 keys/queries, 1 values). */
static void head_dir(uint64_t seed, int h, int kind, int D, float *w) {
  rng_t r;
  rng_seed(&r, seed * 7919u + (uint64_t)h * 31u + (uint64_t)kind + 1u);
  double n = 0.0, tmp[512];
  for (int j = 0; j < D; j++) tmp[j] = rng_normal(&r), n += tmp[j] * tmp[j];
  for (int j = 0; j < D; j++) w[j] = (float)(tmp[j] / sqrt(n));
}

static void fill(float *x, int64_t n, int H, int D, int kind, double amp, double floor_, double mu,
                 int h_div, uint64_t seed, uint64_t stream) {
  rng_t r;
  rng_seed(&r, seed ^ (stream * 0x9E3779B97F4A7C15ull));
  float *w = sq_xmalloc((size_t)H * D * sizeof *w);
  for (int h = 0; h < H; h++) head_dir(seed, h / h_div, kind, D, w + (int64_t)h * D);
  for (int64_t i = 0; i < n; i++)
    for (int h = 0; h < H; h++) draw_vec(&r, w + (int64_t)h * D, D, amp, floor_, mu, x + (i * H + h) * D);
  free(w);
}

void tu_rows(float **out, int64_t n, int H, int D, int values, uint64_t seed) {
  *out = sq_xmalloc((size_t)(n * H * D) * sizeof(float));
  if (values) fill(*out, n, H, D, 1, 1.0, 0.3, 0.0, 1, seed, 11);
  else fill(*out, n, H, D, 0, 2.0, 0.2, 1.5, 1, seed, 12);
}

void tu_layer_make(tu_layer *t, const int *lens, int n_seq, int n_kv_heads, int n_q_heads, int D,
                   int n_randq, uint64_t seed) {
  t->n_seq = n_seq, t->n_kv_heads = n_kv_heads, t->n_q_heads = n_q_heads, t->head_dim = D;
  t->n_randq = n_randq;
  t->seq_off = sq_xmalloc((size_t)(n_seq + 1) * sizeof *t->seq_off);
  t->seq_off[0] = 0;
  for (int s = 0; s < n_seq; s++) t->seq_off[s + 1] = t->seq_off[s] + lens[s];
  t->n_tok = t->seq_off[n_seq];
  int64_t nt = t->n_tok;
  t->k = sq_xmalloc((size_t)(nt * n_kv_heads * D) * sizeof(float));
  t->v = sq_xmalloc((size_t)(nt * n_kv_heads * D) * sizeof(float));
  t->q = sq_xmalloc((size_t)(nt * n_q_heads * D) * sizeof(float));
  fill(t->k, nt, n_kv_heads, D, 0, 2.0, 0.2, 1.5, 1, seed, 1);
  fill(t->v, nt, n_kv_heads, D, 1, 1.0, 0.3, 0.0, 1, seed, 2);
  /* queries share their KV head's directions, so q.k has a real spread */
  fill(t->q, nt, n_q_heads, D, 0, 1.5, 0.2, 0.5, n_q_heads / n_kv_heads, seed, 3);
  t->randq = sq_xmalloc((size_t)((int64_t)n_kv_heads * n_seq * (n_randq ? n_randq : 1) * D) * sizeof(float));
  for (int h = 0; h < n_kv_heads; h++) {
    rng_t r;
    rng_seed(&r, rng_head_seed(seed, 0, h));
    for (int64_t i = 0; i < (int64_t)n_seq * n_randq * D; i++)
      t->randq[(int64_t)h * n_seq * n_randq * D + i] = (float)rng_normal(&r);
  }
  kern_layer L = {.layer = 0, .n_kv_heads = n_kv_heads, .n_q_heads = n_q_heads, .head_dim = D,
                  .n_seq = n_seq, .seq_off = t->seq_off, .n_tok = nt, .k = t->k, .v = t->v,
                  .q = t->q, .n_randq = n_randq, .randq = t->randq,
                  .protocols = PROTO_ATTN | PROTO_RANDQ | PROTO_PROBS, .probs_last = 4, .topk = 8};
  t->L = L;
}

void tu_layer_free(tu_layer *t) {
  free(t->seq_off);
  free(t->k);
  free(t->v);
  free(t->q);
  free(t->randq);
}
