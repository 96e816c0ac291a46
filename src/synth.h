/* synth: deterministic synthetic activation dumps with the structure of real ones (`sqexp synth`).
 *
 * Per (layer, KV head): keys = a few (3..6, by layer) dominant directions of large variance plus a
 * power-law tail, in a random orthonormal basis whose dominant directions lie in the lowest-
 * frequency RoPE pairs (as in real models, so the low-rank structure survives RoPE); values = a
 * much flatter spectrum in their own random basis; the GQA query heads of the group = per-head
 * fixed mixtures of the keys' dominant directions + per-token jitter + isotropic noise. Keys and
 * queries are then rotated by real RoPE (pairs (i, i+D/2), angle pos*theta^(-2i/D), theta 10000,
 * pos = position within the sequence). Everything is drawn from rng.h generators seeded per
 * (seed, layer, head), so a layer's content depends only on (seed, shape, sequence table, layer). */
#ifndef SQEXP_SYNTH_H
#define SQEXP_SYNTH_H
#include <stdint.h>
#include "dump.h"
#include "err.h"

typedef struct {
  const char *name;      /* "mistral-7b" | "qwen2.5-1.5b" | "smollm2-135m" */
  int n_layers, n_q_heads, n_kv_heads, head_dim;
} synth_shape;

/* 0 and *out filled when name is a known shape, else -1. synth_shape_names() lists them. */
int synth_find_shape(const char *name, synth_shape *out);
const char *synth_shape_names(void);

typedef struct {
  synth_shape shape;
  int64_t n_tokens;      /* total tokens T */
  int seq_len;           /* tokens per sequence (the last one may be shorter) */
  double calib_frac;     /* fraction of sequences (the first ones) that are calibration */
  int *layers;           /* stored model layers, increasing; NULL = all */
  int n_sel_layers;
  int dtype;             /* DUMP_F16 | DUMP_BF16 | DUMP_F32 */
  uint64_t seed;
  int queries_all;       /* 0: queries for evaluation sequences only; 1: for every sequence */
  int n_domains;         /* sequences labelled round-robin domain0..; >= 1 */
  int gzip_level;        /* dump_t.gzip_level: 0 = default (4), -1 = uncompressed, 1..9 */
} synth_opts;

/* Fill a dump header (sequence table, split, domains, model attributes; path and provenance
 * copied) for these options. Free with synth_header_free. SQ_EINPUT on impossible options. */
int synth_header(const synth_opts *o, const char *path, const char *provenance, dump_t *hdr, sq_err *e);
void synth_header_free(dump_t *hdr);

/* Generate model layer `layer` for header hdr into out (buffers allocated, reused when already
 * the right size; free with dump_layer_free). Deterministic given (o->seed, hdr, layer). */
void synth_layer(const synth_opts *o, const dump_t *hdr, int layer, dump_layer *out);

/* Whole pipeline: header, then generate+write one layer at a time (memory: one layer), rename on
 * success. progress (may be NULL) is called before the first layer with (0, total) and after each
 * layer with (done, total). */
int synth_write(const synth_opts *o, const char *path, const char *provenance,
                void (*progress)(void *ctx, int done, int total), void *ctx, sq_err *e);

/* RoPE in place on one D-vector at position pos: pairs (i, i+D/2), angle pos*theta^(-2i/D). */
void synth_rope(float *x, int head_dim, int64_t pos, double theta);

#endif
