/* store: the append-only result store of one results directory (docs/results.md).
 *   DIR/run.json       the run's identity: resolved-config hash + dump fingerprint (and texts)
 *   DIR/rows.jsonl     one JSON object per (grid point, layer, KV head): knobs, metrics, bits
 *   DIR/spectra.jsonl  one JSON object per (layer, KV head): key and value eigen-spectra
 * Every line is written with ONE write() of the complete line (rows on the store's thread, in
 * append order), and the files are fsync'd after each (layer, head) batch (store_sync, or
 * store_sync_async on the store's thread), so a killed run leaves whole lines plus at most one
 * torn trailing line, which store_open truncates away.
 * Finished (key, layer, head) are remembered so a resumed run skips them. */
#ifndef SQEXP_STORE_H
#define SQEXP_STORE_H
#include <stdint.h>
#include "err.h"
#include "kern.h"

#define STORE_ROWS_FILE "rows.jsonl"
#define STORE_SPECTRA_FILE "spectra.jsonl"
#define STORE_RUN_FILE "run.json"
#define STORE_MAX_TAU 16

/* One result row. Knobs the arm does not own are -1 (ints) / NaN (tau) and are not written. */
typedef struct {
  char key[256];             /* canonical grid-point key (plan_knobs_key) */
  char arm[32];              /* "tq" | "sq" | "sq_paper_v1" | "lowrank" */
  int layer, head, head_dim;
  int total_bits, noise_bits, value_noise_bits; /* noise: CFG_NONE (-1) = none */
  double d_eff_variance;
  int use_water_fill, use_qjl;
  int tq_variant, tq_rotation, tq_codebook, tq_shared_rotation;
  int rank;
  kern_metrics m;            /* a metric whose count is 0 (protocol off) is NaN / written null */
  int d_eff_k, d_eff_v;      /* the dimension the plan used (0 when the arm uses none) */
  double pr_k, pr_v;         /* participation ratios of the calibration spectra */
  int pr_int_k, pr_int_v;
  double kappa_k, kappa_v;
  double bits_honest_k, bits_honest_v, bits_seed_k, bits_seed_v, bits_paper_k, bits_paper_v;
  double ratio_honest, ratio_seed, ratio_paper; /* 2*16*D / (bits_k + bits_v) */
  char backend[16];
  double eval_s;             /* timing; the only field that may differ between identical runs */
} store_row;

/* One spectrum record: keys (index 0) and values (index 1) of one (layer, KV head). */
typedef struct {
  int layer, head, head_dim;
  int64_t n_calib;
  double pr[2], kappa[2];
  int pr_int[2];
  int n_tau;
  double tau[STORE_MAX_TAU];
  int d_eff[2][STORE_MAX_TAU];
  double eigval[2][256];
} store_spectrum;

/* The identity a results directory is bound to. */
typedef struct {
  char config_hash[65];      /* sha256 of config_text */
  const char *config_text;   /* the resolved config that was hashed (cfg_print minus excluded keys) */
  char dump_fp[65];          /* dump fingerprint (sweep.c: size + header + sampled blocks) */
  const char *dump_path;
  int64_t dump_size;
  const char *model_id;
  const char *experiments;   /* comma-separated experiment names, for `sqexp report` */
} store_identity;

typedef struct store store;

/* Validation only, writes nothing: SQ_EINPUT (naming what changed: the first differing config
 * line, or the dump) when DIR holds a run of another identity and !fresh, or DIR is not a
 * directory, or DIR holds rows without a run.json. */
int store_check(const char *dir, const store_identity *id, int fresh, sq_err *e);
/* Create DIR, move an old run into DIR/old-<UTC time>/ when fresh, write run.json, recover torn
 * trailing lines and load the finished sets. */
int store_open(store **out, const char *dir, const store_identity *id, int fresh, sq_err *e);
int store_has_row(const store *s, const char *key, int layer, int head);
int store_has_spectrum(const store *s, int layer, int head);
int64_t store_n_rows(const store *s);
/* Counted and added to the finished set at once (store_has_row sees it); the line itself is
 * formatted and written, in append order, by the store's thread (started on first use; in line
 * if it cannot start) through a bounded queue, so the caller does not wait for it. A failed write
 * is reported, naming the file, by the next store_* call that takes an sq_err, and by every later
 * one (the rows queued after it are dropped). A killed process loses the queued rows: they were
 * not on disk yet and a resumed run computes them again. */
int store_append_row(store *s, const store_row *r, sq_err *e);
int store_append_spectrum(store *s, const store_spectrum *sp, sq_err *e);
/* Wait until every queued row is written, then fsync both files on the caller's thread: when this
 * returns SQ_OK every line appended before it is on disk. A request of store_sync_async not yet
 * started is dropped (this fsync covers it) and one in progress is waited for, so the background
 * error, if any, is reported here. */
int store_sync(store *s, sq_err *e);
/* Ask the store's thread to fsync both files once the rows appended before this call are written,
 * and return at once: for the per-(layer, head) syncs, whose fsyncs need not stall the caller
 * (only the final store_sync must wait). Requests made while one is pending merge into it. A
 * failure of the thread's fsync is reported, naming the file, by the next store_* call that takes
 * an sq_err (append, sync, sync_async) and by every later one: lines may be lost. */
int store_sync_async(store *s, sq_err *e);
/* Writes the queued rows and finishes a pending background fsync, then closes. Reports nothing:
 * call store_sync first when the result matters. */
void store_close(store *s);

/* Readers (no writes; a torn trailing line is ignored). *rows / *sp are malloc'd. */
int store_read_rows(const char *dir, store_row **rows, int64_t *n, sq_err *e);
int store_read_spectra(const char *dir, store_spectrum **sp, int64_t *n, sq_err *e);
/* Parse DIR/run.json into a jansson object (void* to keep jansson out of this header);
 * json_decref it. SQ_EINPUT when absent. */
int store_read_run(const char *dir, void **run_json, sq_err *e);

/* Row <-> JSON (jansson json_t*), exported for tests and tools. */
void *store_row_to_json(const store_row *r);
int store_row_from_json(const void *json, store_row *r, sq_err *e);
void store_row_init(store_row *r);  /* every knob -1/NaN, metrics NaN, strings empty */

#endif
