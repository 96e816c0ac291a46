/* synth.c: synthetic activation dumps (see synth.h for the model of the content). */
#include "synth.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dump_internal.h"
#include "rng.h"
#include "ortho.h"

#define ROPE_THETA 10000.0
/* Salts keep the synthetic data's generators apart from the experiments' draws, which use
 * rng_head_seed(seed, layer, head) unsalted (randq queries, rotations): same --seed, no overlap. */
#define SALT_K 0x6B65797353594E54ull
#define SALT_V 0x76616C7353594E54ull
#define SALT_Q 0x717279735359454Eull

static const synth_shape shapes[] = {
    {"mistral-7b", 32, 32, 8, 128},
    {"qwen2.5-1.5b", 28, 12, 2, 128},
    {"smollm2-135m", 30, 9, 3, 64},
};

int synth_find_shape(const char *name, synth_shape *out) {
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    if (!strcmp(name, shapes[i].name)) {
      *out = shapes[i];
      return 0;
    }
  return -1;
}

const char *synth_shape_names(void) { return "mistral-7b, qwen2.5-1.5b, smollm2-135m"; }

/* ---------- header ---------- */

static int count_calib(const synth_opts *o, int n_seq) {
  int n = (int)llround(o->calib_frac * n_seq);
  if (n_seq >= 2 && o->calib_frac > 0 && n < 1) n = 1;            /* something to calibrate on */
  if (n_seq >= 2 && o->calib_frac < 1 && n > n_seq - 1) n = n_seq - 1; /* something to evaluate */
  return n < 0 ? 0 : n > n_seq ? n_seq : n;
}

int synth_header(const synth_opts *o, const char *path, const char *provenance, dump_t *h, sq_err *e) {
  memset(h, 0, sizeof *h);
  if (o->n_tokens < 1 || o->seq_len < 1) return sq_fail(e, SQ_EINPUT, "--tokens and --seq-len must be >= 1");
  if (!(o->calib_frac >= 0 && o->calib_frac <= 1)) return sq_fail(e, SQ_EINPUT, "--calib-frac must be in [0, 1]");
  if (o->n_domains < 1 || o->n_domains > 1000) return sq_fail(e, SQ_EINPUT, "--domains must be in [1, 1000]");
  int64_t n_seq = (o->n_tokens + o->seq_len - 1) / o->seq_len;
  if (n_seq > (1 << 24)) return sq_fail(e, SQ_EINPUT, "%lld sequences is too many (raise --seq-len)", (long long)n_seq);
  snprintf(h->path, sizeof h->path, "%s", path);
  snprintf(h->model_id, sizeof h->model_id, "synthetic:%s", o->shape.name);
  h->n_layers = o->shape.n_layers;
  h->n_q_heads = o->shape.n_q_heads;
  h->n_kv_heads = o->shape.n_kv_heads;
  h->head_dim = o->shape.head_dim;
  snprintf(h->rope, sizeof h->rope, "rope");
  h->kq_post_rope = 1;
  h->dtype = o->dtype;
  h->gzip_level = o->gzip_level;
  h->n_dump_layers = o->layers ? o->n_sel_layers : o->shape.n_layers;
  h->layers = sq_xmalloc((size_t)h->n_dump_layers * sizeof(int));
  for (int i = 0; i < h->n_dump_layers; i++) h->layers[i] = o->layers ? o->layers[i] : i;
  h->provenance = strdup(provenance ? provenance : "{}");
  h->n_seq = (int)n_seq;
  h->seq_off = sq_xmalloc((size_t)(n_seq + 1) * sizeof(int64_t));
  h->q_off = sq_xmalloc((size_t)(n_seq + 1) * sizeof(int64_t));
  h->split = sq_xmalloc((size_t)n_seq);
  h->domain = sq_xmalloc((size_t)n_seq * sizeof(int));
  int n_calib = count_calib(o, h->n_seq);
  h->seq_off[0] = h->q_off[0] = 0;
  for (int s = 0; s < h->n_seq; s++) {
    int64_t end = (int64_t)(s + 1) * o->seq_len;
    h->seq_off[s + 1] = end < o->n_tokens ? end : o->n_tokens;
    h->split[s] = s < n_calib ? DUMP_SPLIT_CALIB : DUMP_SPLIT_EVAL;
    int with_q = o->queries_all || h->split[s] == DUMP_SPLIT_EVAL;
    h->q_off[s + 1] = h->q_off[s] + (with_q ? h->seq_off[s + 1] - h->seq_off[s] : 0);
    h->domain[s] = s % o->n_domains;
  }
  h->n_tokens = o->n_tokens;
  h->n_q_rows = h->q_off[h->n_seq];
  h->n_domains = o->n_domains;
  h->domain_names = sq_xmalloc((size_t)o->n_domains * sizeof(char *));
  for (int i = 0; i < o->n_domains; i++) {
    char name[32];
    snprintf(name, sizeof name, "domain%d", i);
    h->domain_names[i] = strdup(name);
  }
  int rc = dump_check_header(h, e);
  if (rc) synth_header_free(h);
  return rc;
}

void synth_header_free(dump_t *h) {
  free(h->layers);
  free(h->provenance);
  free(h->seq_off);
  free(h->q_off);
  free(h->split);
  free(h->domain);
  for (int i = 0; i < h->n_domains && h->domain_names; i++) free(h->domain_names[i]);
  free(h->domain_names);
  memset(h, 0, sizeof *h);
}

/* ---------- content ---------- */

void synth_rope(float *x, int D, int64_t pos, double theta) {
  int half = D / 2;
  for (int i = 0; i < half; i++) {
    double a = (double)pos * pow(theta, -2.0 * i / D), c = cos(a), s = sin(a);
    double x0 = x[i], x1 = x[i + half];
    x[i] = (float)(x0 * c - x1 * s);
    x[i + half] = (float)(x0 * s + x1 * c);
  }
}

/* RoPE with a precomputed table cs[pos][i] = (cos, sin) of pos*theta^(-2i/D). */
static void rope_table(float *x, int D, const float *cs) {
  int half = D / 2;
  for (int i = 0; i < half; i++) {
    float c = cs[2 * i], s = cs[2 * i + 1], x0 = x[i], x1 = x[i + half];
    x[i] = x0 * c - x1 * s;
    x[i + half] = x0 * s + x1 * c;
  }
}

/* Dominant key directions per layer: 3..6, and the variance of the strongest one. */
static int n_dominant(int layer, int D) {
  int n = 3 + layer % 4;
  int cap = D / 2 > 1 ? D / 2 : 1;
  return n < cap ? n : cap;
}
/* Scaled so that key norms (~15) and value norms (~4) are those of a real small model's dump. */
static double dominant_var(int layer) { return 80.0 + 20.0 * (layer % 7); }

/* Random orthonormal rows B[D][D] (Gram-Schmidt, twice for stability). The first n_low rows are
 * drawn on the lowest-frequency RoPE pairs only (dims i and i+D/2 for i >= D/2 - m), so they
 * rotate little over a sequence and stay dominant after RoPE, as massive key dims do. */
static void random_basis(rng_t *r, int D, int n_low, double *B) {
  int half = D / 2, m = D / 16;
  if (m < (n_low + 1) / 2) m = (n_low + 1) / 2;
  if (m > half) m = half;
  for (int row = 0; row < D; row++)
    for (int j = 0; j < D; j++) {
      int in_low = (j % half) >= half - m;
      double z = rng_normal(r);
      B[row * D + j] = (row >= n_low || in_low) ? z : 0.0;
    }
  ortho_rows(B, D, D, 2);
}

/* x = sum_r z_r * sd_r * B_r with fresh normals z (the basis rows pre-scaled in Bs). */
static void draw_vector(rng_t *r, const float *Bs, int D, float *x) {
  for (int j = 0; j < D; j++) x[j] = 0.0f;
  for (int row = 0; row < D; row++) {
    float z = (float)rng_normal(r);
    const float *b = Bs + row * D;
    for (int j = 0; j < D; j++) x[j] += z * b[j];
  }
}

typedef struct {
  int D, T, n_seq_len_max;
  int64_t *pos;        /* [T] position of each token within its sequence */
  int64_t *q_tok;      /* [T_q] token of each query row */
  float *rope_cs;      /* [max_len][D/2][2] */
} synth_geom;

static void geom_init(const dump_t *h, synth_geom *g) {
  int D = h->head_dim;
  int64_t max_len = 1;
  g->pos = sq_xmalloc((size_t)h->n_tokens * sizeof(int64_t));
  g->q_tok = sq_xmalloc((size_t)(h->n_q_rows ? h->n_q_rows : 1) * sizeof(int64_t));
  for (int s = 0; s < h->n_seq; s++) {
    int64_t len = h->seq_off[s + 1] - h->seq_off[s];
    if (len > max_len) max_len = len;
    for (int64_t i = 0; i < len; i++) g->pos[h->seq_off[s] + i] = i;
    for (int64_t i = 0; i < h->q_off[s + 1] - h->q_off[s]; i++) g->q_tok[h->q_off[s] + i] = h->seq_off[s] + i;
  }
  g->rope_cs = sq_xmalloc((size_t)max_len * (size_t)D * sizeof(float));
  for (int64_t p = 0; p < max_len; p++)
    for (int i = 0; i < D / 2; i++) {
      double a = (double)p * pow(ROPE_THETA, -2.0 * i / D);
      g->rope_cs[(p * (D / 2) + i) * 2] = (float)cos(a);
      g->rope_cs[(p * (D / 2) + i) * 2 + 1] = (float)sin(a);
    }
}

static void geom_free(synth_geom *g) {
  free(g->pos);
  free(g->q_tok);
  free(g->rope_cs);
}

/* Keys and values of KV head kh; returns the key basis (unscaled) in Bk for the queries. */
static void gen_kv(const synth_opts *o, const dump_t *h, const synth_geom *g, int layer, int kh, double *Bk,
                   dump_layer *out) {
  int D = h->head_dim, H = h->n_kv_heads, nd = n_dominant(layer, D);
  double A = dominant_var(layer);
  double *Bv = sq_xmalloc((size_t)D * D * sizeof(double));
  float *Bs = sq_xmalloc((size_t)D * D * sizeof(float));
  rng_t rk, rv;
  rng_seed(&rk, rng_head_seed(o->seed, layer, kh) ^ SALT_K);
  rng_seed(&rv, rng_head_seed(o->seed, layer, kh) ^ SALT_V);
  random_basis(&rk, D, nd, Bk);
  random_basis(&rv, D, 0, Bv);
  /* keys: A*0.55^r on the dominant directions, a 10 * j^-1.1 power-law tail after them */
  for (int r = 0; r < D; r++) {
    double var = r < nd ? A * pow(0.55, r) : 10.0 * pow(r - nd + 1, -1.1);
    for (int j = 0; j < D; j++) Bs[r * D + j] = (float)(sqrt(var) * Bk[r * D + j]);
  }
  for (int64_t t = 0; t < h->n_tokens; t++) {
    float *x = out->k + (t * H + kh) * D;
    draw_vector(&rk, Bs, D, x);
    rope_table(x, D, g->rope_cs + g->pos[t] * D);
  }
  /* values: a flatter (r+1)^-0.6 spectrum (top-5 share ~0.2-0.25 against ~0.8 for keys) */
  for (int r = 0; r < D; r++) {
    double sd = sqrt(pow(r + 1, -0.6));
    for (int j = 0; j < D; j++) Bs[r * D + j] = (float)(sd * Bv[r * D + j]);
  }
  for (int64_t t = 0; t < h->n_tokens; t++) draw_vector(&rv, Bs, D, out->v + (t * H + kh) * D);
  free(Bs);
  free(Bv);
}

/* Query head qh: fixed per-head weights on its KV head's dominant key directions, per-row
 * jitter on them, isotropic noise, then RoPE at the token's position. The scales give attention
 * logits q.k/sqrt(D) with a standard deviation of about 2-3, as in the shipped SmolLM2 dump. */
static void gen_q(const synth_opts *o, const dump_t *h, const synth_geom *g, int layer, int qh, const double *Bk,
                  dump_layer *out) {
  int D = h->head_dim, Hq = h->n_q_heads, nd = n_dominant(layer, D);
  rng_t rq;
  rng_seed(&rq, rng_head_seed(o->seed, layer, qh) ^ SALT_Q);
  double w[256];
  for (int r = 0; r < nd; r++) w[r] = 1.3 * rng_normal(&rq);
  for (int64_t row = 0; row < h->n_q_rows; row++) {
    float *x = out->q + (row * Hq + qh) * D;
    for (int j = 0; j < D; j++) x[j] = (float)(0.5 * rng_normal(&rq));
    for (int r = 0; r < nd; r++) {
      double c = w[r] + 0.5 * rng_normal(&rq);
      for (int j = 0; j < D; j++) x[j] += (float)(c * Bk[r * D + j]);
    }
    rope_table(x, D, g->rope_cs + g->pos[g->q_tok[row]] * D);
  }
}

static void ensure(float **buf, size_t have, size_t need) {
  if (*buf && have >= need) return;
  free(*buf);
  *buf = sq_xmalloc((need ? need : 1) * sizeof(float));
}

static void layer_alloc(const dump_t *h, int layer, dump_layer *out) {
  size_t kv_have = (size_t)(out->n_tokens * out->n_kv_heads * out->head_dim);
  size_t q_have = (size_t)(out->n_q_rows * out->n_q_heads * out->head_dim);
  ensure(&out->k, kv_have, (size_t)(h->n_tokens * h->n_kv_heads * h->head_dim));
  ensure(&out->v, kv_have, (size_t)(h->n_tokens * h->n_kv_heads * h->head_dim));
  ensure(&out->q, q_have, (size_t)(h->n_q_rows * h->n_q_heads * h->head_dim));
  out->layer = layer;
  out->n_tokens = h->n_tokens;
  out->n_q_rows = h->n_q_rows;
  out->n_kv_heads = h->n_kv_heads;
  out->n_q_heads = h->n_q_heads;
  out->head_dim = h->head_dim;
}

void synth_layer(const synth_opts *o, const dump_t *h, int layer, dump_layer *out) {
  layer_alloc(h, layer, out);
  synth_geom g;
  geom_init(h, &g);
  int D = h->head_dim, Hkv = h->n_kv_heads, group = h->n_q_heads / h->n_kv_heads;
  double *Bk = sq_xmalloc((size_t)Hkv * D * D * sizeof(double));
  /* Heads are independent generators, so the result does not depend on the thread count. */
#pragma omp parallel for schedule(dynamic, 1)
  for (int kh = 0; kh < Hkv; kh++) gen_kv(o, h, &g, layer, kh, Bk + (size_t)kh * D * D, out);
#pragma omp parallel for schedule(dynamic, 1)
  for (int qh = 0; qh < h->n_q_heads; qh++) gen_q(o, h, &g, layer, qh, Bk + (size_t)(qh / group) * D * D, out);
  free(Bk);
  geom_free(&g);
}

int synth_write(const synth_opts *o, const char *path, const char *provenance,
                void (*progress)(void *ctx, int done, int total), void *ctx, sq_err *e) {
  dump_t h;
  int rc = synth_header(o, path, provenance, &h, e);
  if (rc) return rc;
  dump_writer *w = NULL;
  rc = dump_create(&w, &h, e);
  dump_layer l;
  memset(&l, 0, sizeof l);
  if (!rc && progress) progress(ctx, 0, h.n_dump_layers);
  for (int i = 0; !rc && i < h.n_dump_layers; i++) {
    synth_layer(o, &h, h.layers[i], &l);
    rc = dump_write_layer(w, &l, e);
    if (!rc && progress) progress(ctx, i + 1, h.n_dump_layers);
  }
  if (w) {
    if (rc) dump_abort(w);
    else rc = dump_finish(w, e);
  }
  dump_layer_free(&l);
  synth_header_free(&h);
  return rc;
}
