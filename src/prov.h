/* prov: run identity and provenance. The identity of a run is the SHA-256 of its resolved config
 * (cfg_print output without comment lines and without `out` and `dump`, which say where things
 * are, not what is computed) plus the dump fingerprint:
 *   sha256( "sqexp-dump-fp-v1" | file size | the header the reader validated (model, shape,
 *           rope, dtype, layers, sequence/split/query tables, domain names, provenance text) |
 *           64 blocks of 4 KiB read at evenly spaced offsets from the first to the last byte )
 * A full hash of a multi-GB dump would cost a minute per run; the header pins the structure and
 * the sampled blocks catch any rewrite of the data (HDF5 chunks are spread over the file).
 * DIR/provenance.json records version, git commit, config path/text/hash, dump path/fingerprint/
 * attributes, host, backend, start/end time and wall time per phase, for every session (a resumed
 * run appends a session). */
#ifndef SQEXP_PROV_H
#define SQEXP_PROV_H
#include <stdint.h>
#include "cfg.h"
#include "dump.h"
#include "err.h"

/* Resolved config text used for the identity (malloc'd) and its hash. */
char *prov_config_identity(const cfg_t *c, char hash[65]);
int prov_dump_fingerprint(const dump_t *d, char hex[65], int64_t *size, sq_err *e);

/* Bumped whenever a code change alters a number a run writes, so that a results directory made by
 * older code is refused (rerun with --fresh) instead of resumed into a mix of old and new rows. It
 * is the first line of the identity text. 2: randq queries drawn from a salted seed (methods §7).
 * 3: the calibration's eigendecomposition runs on the backend (cuda: cuSOLVER on the GPU, whose
 * round-off differs from GSL's; cpu numbers are unchanged). 4: the CUDA eval attention scores on
 * tensor cores in 3xTF32 and sums the softmax normaliser and the probs sums in other orders (CUDA
 * metrics move at the round-off level; cpu numbers are unchanged). 5: the CUDA eval attention on
 * wgmma in 3xfp16 (k_attn_wg) and the softmax weights as exp2 (CUDA metrics move at the round-off
 * level again; cpu numbers are unchanged). 6: the CUDA logit bias and slope from per-key dot
 * products with A_j, W_j (kcuda_logit) instead of per-pair sums (round-off level; cpu unchanged). */
#define SQEXP_RESULTS_VERSION 6

/* PROV_READ is all read work (much of it hidden behind calibration and eval by the prefetch
 * thread); PROV_READ_WAIT is the part the run waited for. PROV_PLAN / PROV_PLAN_WAIT likewise for
 * plan building (built a head ahead, during the previous head's eval, with the CUDA backend), and
 * PROV_CALIB / PROV_CALIB_WAIT for calibration (moments and eigendecompositions of the next layer
 * on the prefetch thread; the main thread's part: recording the spectra, or the whole of a layer
 * calibrated in line). */
enum { PROV_READ, PROV_READ_WAIT, PROV_CALIB, PROV_PLAN, PROV_PLAN_WAIT, PROV_EVAL, PROV_WRITE, PROV_REPORT,
       PROV_CALIB_WAIT, PROV_NPHASE };
extern const char *const prov_phase_names[PROV_NPHASE];

typedef struct {
  const cfg_t *cfg;
  const dump_t *dump;
  const char *config_hash, *dump_fp;
  int64_t dump_size;
  const char *backend;
  double start_time, end_time;   /* seconds since the epoch */
  double phase_s[PROV_NPHASE];
  const char *status;            /* "complete" | "interrupted" | "failed" | "running" */
  int64_t rows_computed, rows_total;
} prov_info;

double prov_now(void);           /* wall clock, seconds since the epoch */
double prov_mono(void);          /* monotonic seconds, for phase timing */
/* SQEXP_EVAL_PHASES is set and not "0": print where a run's time goes (to stderr). */
int prov_phases_on(void);
/* Write DIR/provenance.json (atomically), keeping the sessions of earlier invocations. */
int prov_write(const char *dir, const prov_info *p, sq_err *e);

#endif
