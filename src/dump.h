/* dump: the HDF5 activation dump (docs/dump-format.md). The reader validates everything at
 * open and streams one layer at a time; the writer serves `sqexp synth` and the tests. */
#ifndef SQEXP_DUMP_H
#define SQEXP_DUMP_H
#include <stdint.h>
#include "err.h"

#define DUMP_FORMAT_NAME "sqexp-activations"
#define DUMP_FORMAT_VERSION 1
enum { DUMP_SPLIT_CALIB = 0, DUMP_SPLIT_EVAL = 1 };
enum { DUMP_F16 = 0, DUMP_BF16 = 1, DUMP_F32 = 2 };

typedef struct {
  char path[1024];
  char model_id[256];
  int n_layers, n_q_heads, n_kv_heads, head_dim;
  char rope[16];          /* "rope" | "none" */
  int kq_post_rope;
  int dtype;              /* DUMP_F16 | DUMP_BF16 | DUMP_F32 */
  int n_dump_layers;      /* how many layers are stored */
  int *layers;            /* [n_dump_layers] model layer indices, increasing */
  char *provenance;       /* JSON text (owned) */
  int64_t n_tokens;       /* T */
  int64_t n_q_rows;       /* T_q */
  int n_seq;              /* S */
  int64_t *seq_off;       /* [S+1] */
  int64_t *q_off;         /* [S+1] */
  uint8_t *split;         /* [S] */
  int *domain;            /* [S], all 0 when absent */
  int n_domains;
  char **domain_names;    /* [n_domains], "all" when absent */
  int allow_nonfinite;
  int has_pre_rope;
  int gzip_level;         /* writer only: 1..9, 0 = the default (4), -1 = uncompressed */
  void *h5;               /* private: hid_t of the open file, boxed */
} dump_t;

/* One layer, float32, row-major exactly as stored: k,v [T][H_kv][D], q [T_q][H_q][D]. */
typedef struct {
  int layer;              /* model layer index */
  int64_t n_tokens, n_q_rows;
  int n_kv_heads, n_q_heads, head_dim;
  float *k, *v, *q;
  /* How k, v, q are allocated (set before the first read; NULL: malloc / free). The sweep gives
   * the backend's host_alloc, so that a GPU backend uploads from page-locked memory. */
  void *(*host_alloc)(size_t bytes);
  void (*host_free)(void *p);
} dump_layer;

int dump_open(dump_t *d, const char *path, int allow_nonfinite, sq_err *e);
/* Read stored layer number `idx` (0..n_dump_layers-1, not the model layer index). Validates shape
 * and finiteness. Reuses out's buffers when sizes allow (zero *out before the first call); free
 * with dump_layer_free. */
int dump_read_layer(dump_t *d, int idx, dump_layer *out, sq_err *e);
void dump_layer_free(dump_layer *l);
void dump_close(dump_t *d);
/* Index into d->layers of model layer `layer`, or -1. */
int dump_find_layer(const dump_t *d, int layer);
/* "float16" | "bfloat16" | "float32" for DUMP_F16.. (NULL for anything else), and back (-1). */
const char *dump_dtype_name(int dtype);
int dump_dtype_parse(const char *s);
/* Parse a layer selection: "0:32:4" (start:stop:step, stop exclusive), "4:8" (step 1), "3", or a
 * comma-separated mix ("0,8:12"). Result: a malloc'ed, strictly increasing list of layers in
 * [0, n_model_layers) (duplicates merged). `what` names the option in messages ("--layers"). */
int dump_parse_layers(const char *spec, int n_model_layers, const char *what, int **layers, int *n, sq_err *e);

/* Writer. Fill a dump_t header (path, model fields, layers, sequences, provenance), then
 * dump_create, then dump_write_layer for each stored layer in order, then dump_finish. The file is
 * written under "<path>.partial" and renamed on finish, so a failed write leaves nothing. */
typedef struct dump_writer dump_writer;
int dump_create(dump_writer **w, const dump_t *hdr, sq_err *e);
int dump_write_layer(dump_writer *w, const dump_layer *l, sq_err *e);
int dump_finish(dump_writer *w, sq_err *e);
void dump_abort(dump_writer *w);

#endif
