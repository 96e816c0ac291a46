/* sweep_internal: what the run flow (sweep.c) and the shift/stability experiments'
 * execution (sweep_extra.c) share. Not for other modules: sweep.h is the public interface. */
#ifndef SQEXP_SWEEP_INTERNAL_H
#define SQEXP_SWEEP_INTERNAL_H
#include <pthread.h>
#include <stdint.h>
#include "calib.h"
#include "codebook.h"
#include "dump.h"
#include "kern.h"
#include "plan.h"
#include "progress.h"
#include "prov.h"
#include "store.h"

typedef struct {
  cfg_t cfg;
  int cfg_loaded;
  dump_t dump;
  int dump_opened;
  plan_knobs *grid;
  int n_grid;
  int needs_rows;               /* some selected experiment evaluates grid points */
  int *layer_idx, n_layers;     /* indices into dump.layers */
  int *heads, n_heads;
  int *calib_seq, n_calib_seq;  /* split-0 sequences used, in order */
  int64_t *calib_len;           /* tokens used of each (the last may be truncated) */
  int64_t n_calib_tok;
  int *eval_seq, n_eval_seq;
  int64_t *eval_off;            /* [n_eval_seq+1] offsets into the eval token buffers */
  int use_queries;              /* attn or probs: real queries needed */
  double taus[STORE_MAX_TAU];
  int n_tau;
  char *id_text;                /* resolved config text that was hashed */
  store_identity id;
  char experiments[512];
  char out_dir[1024];
  char dump_fp[65];
  int64_t dump_size;
  /* the shift and stability experiments (sweep_extra.c) */
  int do_shift, do_stability;
  int n_xgrid;                  /* grid points they use: s->grid[0..n_xgrid) (n_grid may be 0) */
  int *dom, n_dom;              /* shift: selected domain indices that have calib and eval tokens */
  struct sweep_sel *dom_sel;    /* [n_dom] each domain's calibration/evaluation selection */
} sweep_state;

/* A calibration/evaluation selection (the fields sweep_select_tokens fills). */
typedef struct sweep_sel {
  int *calib_seq, n_calib_seq;
  int64_t *calib_len, n_calib_tok;
  int *eval_seq, n_eval_seq;
  int64_t *eval_off;
} sweep_sel;

/* One layer's working set, reused across layers. */
typedef struct {
  dump_layer raw;
  float *calib;       /* [n_calib_tok][H][D] keys, then values, when not adjacent in the dump */
  double *C;          /* [2][H][D*D] second moments of keys, then values */
  calib_head *ck, *cv; /* [n_heads] */
  float *ek, *ev, *eq; /* evaluation tokens [n_tok][H][D], queries [n_tok][H_q][D], when not adjacent */
  float *randq;       /* [H][n_seq][n_randq][D] */
  uint64_t preload_id; /* nonzero: raw's evaluation rows were preloaded under this id (kern.h) */
} sweep_layer_buf;

typedef struct {
  sweep_state *s;
  kern_backend *be;
  store *st;
  cb_table *cb;
  progress prog;
  prov_info prov;
  int64_t done;          /* rows of the selection that exist */
  int64_t computed;      /* rows computed in this session */
  int quiet;
  int layer_header;      /* the per-layer legend line was printed */
  const char *key_prefix; /* shift/stability: prepended to every row key ("" or NULL: none) */
  int no_spectra;        /* shift/stability: calibrations are not the run's spectra */
} sweep_run_ctx;

/* Per-arm running means of attn cos for the per-layer line. */
typedef struct {
  double sum[ARM_COUNT];
  int n[ARM_COUNT];
} sweep_layer_sum;

/* ---- reading the next layer in the background ----
 * While layer i is calibrated and evaluated, one thread reads the next layer that has work
 * (HDF5 read, single-threaded inside HDF5, + fp16 -> fp32 by src/f16_rows.c) into a second
 * buffer: two layers are resident at most. HDF5 1.10 from Debian is built without thread-safety,
 * so while that thread runs it is the ONLY HDF5 caller: every other HDF5 call (reading a layer,
 * dump_close) comes after sweep_pf_join. Its error surfaces as the usual sq_err when that layer is
 * taken. SQEXP_PREFETCH=0 reads every layer in line instead (the serial reference).
 * With `calib` set (the main grid, sweep_layers), the thread then also calibrates what it read
 * (sweep_calib_compute: the backend's moments and eigh, which kern.h allows on one other thread
 * while the main thread evaluates) into its own calibration buffers, swapped in on take; the
 * spectra are recorded by the main thread (the store is not shared). */
typedef struct {
  dump_t *d;
  int enabled;      /* SQEXP_PREFETCH is not "0" */
  int running;      /* a thread was started and not joined yet */
  int held;         /* joined: buf holds stored layer idx (unless rc), not yet taken */
  int idx;          /* stored layer number the thread reads */
  dump_layer buf;   /* what it reads into; swapped with the consumer's buffer on take */
  int rc;
  sq_err err;
  double work_s;    /* seconds the thread spent reading (dump_read_layer, and the preload's copy) */
  pthread_t th;
  sweep_run_ctx *calib; /* set: calibrate after reading (the context's state and backend) */
  pthread_mutex_t calib_lock; /* one calibration at a time (the thread's, or one in line) */
  sweep_layer_buf cb;   /* the thread's calibration buffers (calib, C, ck, cv) */
  int calibrated;       /* cb holds the calibration of buf */
  double calib_s;       /* seconds the thread spent calibrating */
  uint64_t preload_id;  /* nonzero: the backend holds buf's evaluation rows under this id */
} sweep_pf;

/* sweep.c */
int sweep_stopping(void); /* a SIGINT/SIGTERM arrived: stop after the current row batch */
int sweep_calibrate(sweep_run_ctx *r, sweep_layer_buf *b, int layer, sq_err *e);
int sweep_calib_compute(sweep_run_ctx *r, const dump_layer *raw, sweep_layer_buf *b, int layer, sq_err *e);
int sweep_calib_record(sweep_run_ctx *r, sweep_layer_buf *b, int layer, sq_err *e);
void sweep_calib_alloc(const sweep_state *s, sweep_layer_buf *b);
int sweep_check_plans(sweep_state *s, sq_err *e);
int sweep_domain_selected(const sweep_state *s, int seq);
int sweep_heads(sweep_run_ctx *r, sweep_layer_buf *b, int layer, sweep_layer_sum *ls, sq_err *e);
void sweep_layer_buf_free(sweep_layer_buf *b, int n_heads);
int sweep_load_eval(sweep_run_ctx *r, sweep_layer_buf *b, int layer, sq_err *e);
void sweep_pf_done(sweep_pf *p, sweep_run_ctx *r);
void sweep_pf_init(sweep_pf *p, dump_t *d);
int sweep_pf_calibrate(sweep_pf *p, sweep_run_ctx *r, sweep_layer_buf *b, int layer, sq_err *e);
int sweep_read_at(sweep_run_ctx *r, sweep_pf *p, const int *want, int li, dump_layer *out, sq_err *e);
int sweep_select_tokens(sweep_state *s, sq_err *e);

/* sweep_extra.c: the shift and stability experiments */
int sweep_extra_prepare(sweep_state *s, sq_err *e);
int sweep_extra_check(const sweep_state *s, int fresh, sq_err *e);
void sweep_extra_dry_run(const sweep_state *s);
int sweep_shift(sweep_run_ctx *r, int fresh, sq_err *e);
int sweep_stability(sweep_run_ctx *r, int fresh, sq_err *e);

#endif
