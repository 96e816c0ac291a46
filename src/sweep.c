/* sweep: the run flow (see sweep.h). */
#include "sweep.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "bgthread.h"
#include "calib.h"
#include "codebook.h"
#include "dump.h"
#include "experiments.h"
#include "kern.h"
#include "plan.h"
#include "progress.h"
#include "prov.h"
#include "report.h"
#include "rng.h"
#include "store.h"
#include "sweep_internal.h"

int sweep_report(const char *dir, FILE *out, const char *cmd) {
  rep_outputs *made = sq_xcalloc(1, sizeof *made);
  sq_err e;
  sq_err_clear(&e);
  int rc = report_dir(dir, out, made, &e);
  if (rc) {
    fprintf(stderr, "sqexp %s: %s\n", cmd, e.msg);
    free(made);
    return rc == SQ_EINPUT ? 2 : 1;
  }
  int n_tables = 0, n_figures = 0;
  for (int i = 0; i < made->n; i++) {
    const char *p = made->path[i];
    size_t len = strlen(p);
    if (len > 4 && !strcmp(p + len - 4, ".csv")) n_tables++;
    if (len > 4 && !strcmp(p + len - 4, ".png")) n_figures++;
  }
  if (made->gnuplot_missing)
    fprintf(stderr, "sqexp %s: warning: gnuplot not found; figures skipped (their .gp/.dat files are written)\n", cmd);
  for (int i = 0; i < made->n_warn; i++) fprintf(stderr, "sqexp %s: warning: %s\n", cmd, made->warn[i]);
  if (out) fprintf(out, "\ntables: %s/tables/ (%d tables as csv, md, tex)   figures: %s/figures/ (%d figures as png, pdf, gp)\n",
                   dir, n_tables, dir, n_figures);
  int status = made->n_warn ? 1 : 0; /* a failed gnuplot script is a failure; no gnuplot is not */
  free(made);
  return status;
}

/* ======================================================================================== */
/* The run flow.                                                                             */

/* SIGINT/SIGTERM set this; the loop checks it between row batches and stops cleanly. A signal
 * handler can only communicate through a global of this type, so it is the one mutable global. */
static volatile sig_atomic_t sweep_stop_signal = 0;

static void sweep_on_signal(int sig) { sweep_stop_signal = sig; }

int sweep_stopping(void) { return sweep_stop_signal != 0; }

static void sweep_state_free(sweep_state *s) {
  if (s->dump_opened) dump_close(&s->dump);
  if (s->cfg_loaded) cfg_free(&s->cfg);
  free(s->grid);
  free(s->layer_idx);
  free(s->heads);
  free(s->calib_seq);
  free(s->calib_len);
  free(s->eval_seq);
  free(s->eval_off);
  free(s->id_text);
  for (int i = 0; s->dom_sel && i < s->n_dom; i++) {
    free(s->dom_sel[i].calib_seq);
    free(s->dom_sel[i].calib_len);
    free(s->dom_sel[i].eval_seq);
    free(s->dom_sel[i].eval_off);
  }
  free(s->dom_sel);
  free(s->dom);
}

int sweep_domain_selected(const sweep_state *s, int seq) {
  const cfg_slist *dom = &s->cfg.run.domains;
  if (dom->n == 0) return 1;
  const char *name = s->dump.domain_names[s->dump.domain[seq]];
  for (int i = 0; i < dom->n; i++)
    if (!strcmp(dom->v[i], name)) return 1;
  return 0;
}

/* Layers and heads: every configured one must exist in the dump. */
static int sweep_select_layers(sweep_state *s, sq_err *e) {
  const dump_t *d = &s->dump;
  const cfg_ilist *L = &s->cfg.run.layers, *H = &s->cfg.run.heads;
  s->n_layers = L->n ? L->n : d->n_dump_layers;
  s->layer_idx = sq_xmalloc((size_t)s->n_layers * sizeof *s->layer_idx);
  for (int i = 0; i < s->n_layers; i++) {
    int idx = L->n ? dump_find_layer(d, L->v[i]) : i;
    if (idx < 0) {
      char have[512] = "";
      size_t k = 0;
      for (int j = 0; j < d->n_dump_layers && k < sizeof have - 16; j++)
        k += (size_t)snprintf(have + k, sizeof have - k, "%s%d", j ? "," : "", d->layers[j]);
      return sq_fail(e, SQ_EINPUT, "%s: [run] layers: layer %d is not in the dump %s (it holds layers %s)",
                     s->cfg.path, L->v[i], d->path, have);
    }
    s->layer_idx[i] = idx;
  }
  s->n_heads = H->n ? H->n : d->n_kv_heads;
  s->heads = sq_xmalloc((size_t)s->n_heads * sizeof *s->heads);
  for (int i = 0; i < s->n_heads; i++) {
    s->heads[i] = H->n ? H->v[i] : i;
    if (s->heads[i] < 0 || s->heads[i] >= d->n_kv_heads)
      return sq_fail(e, SQ_EINPUT, "%s: [run] heads: KV head %d does not exist (the dump %s has %d KV heads)",
                     s->cfg.path, s->heads[i], d->path, d->n_kv_heads);
  }
  return SQ_OK;
}

/* Calibration = split-0 sequences of the selected domains, in order, truncated to
 * max_calib_tokens; evaluation = split-1 sequences, whole, in order, until the next one would
 * exceed max_eval_tokens (at least one). */
int sweep_select_tokens(sweep_state *s, sq_err *e) {
  const dump_t *d = &s->dump;
  const cfg_run *r = &s->cfg.run;
  for (int i = 0; i < r->domains.n; i++) {
    int found = 0;
    for (int j = 0; j < d->n_domains; j++) found |= !strcmp(r->domains.v[i], d->domain_names[j]);
    if (!found)
      return sq_fail(e, SQ_EINPUT, "%s: [run] domains: '%s' is not a domain of the dump %s", s->cfg.path,
                     r->domains.v[i], d->path);
  }
  s->calib_seq = sq_xmalloc((size_t)d->n_seq * sizeof *s->calib_seq);
  s->calib_len = sq_xmalloc((size_t)d->n_seq * sizeof *s->calib_len);
  s->eval_seq = sq_xmalloc((size_t)d->n_seq * sizeof *s->eval_seq);
  s->eval_off = sq_xmalloc((size_t)(d->n_seq + 1) * sizeof *s->eval_off);
  s->eval_off[0] = 0;
  int eval_full = 0;
  for (int q = 0; q < d->n_seq; q++) {
    if (!sweep_domain_selected(s, q)) continue;
    int64_t len = d->seq_off[q + 1] - d->seq_off[q];
    if (d->split[q] == DUMP_SPLIT_CALIB) {
      int64_t room = r->max_calib_tokens > 0 ? r->max_calib_tokens - s->n_calib_tok : len;
      if (room <= 0) continue;
      s->calib_seq[s->n_calib_seq] = q;
      s->calib_len[s->n_calib_seq++] = len < room ? len : room;
      s->n_calib_tok += len < room ? len : room;
    } else if (!eval_full) {
      int64_t have = s->eval_off[s->n_eval_seq];
      if (s->n_eval_seq > 0 && r->max_eval_tokens > 0 && have + len > r->max_eval_tokens) {
        eval_full = 1;
        continue;
      }
      s->eval_seq[s->n_eval_seq] = q;
      s->eval_off[s->n_eval_seq + 1] = have + len;
      s->n_eval_seq++;
    }
  }
  if (s->n_calib_tok < 1)
    return sq_fail(e, SQ_EINPUT, "%s: no calibration tokens (split 0) in the selected domains of %s", s->cfg.path,
                   d->path);
  if (s->n_eval_seq < 1)
    return sq_fail(e, SQ_EINPUT, "%s: no evaluation sequences (split 1) in the selected domains of %s", s->cfg.path,
                   d->path);
  s->use_queries = (s->needs_rows || s->do_shift || s->do_stability) && (r->protocols & (PROTO_ATTN | PROTO_PROBS));
  for (int i = 0; s->use_queries && i < s->n_eval_seq; i++) {
    int q = s->eval_seq[i];
    if (d->q_off[q + 1] - d->q_off[q] != d->seq_off[q + 1] - d->seq_off[q])
      return sq_fail(e, SQ_EINPUT,
                     "%s: evaluation sequence %d has no stored queries, which the attn/probs protocols need "
                     "(set [run] protocols = randq, or use a dump with queries)",
                     d->path, q);
  }
  return SQ_OK;
}

static void sweep_add_tau(sweep_state *s, double t) {
  for (int i = 0; i < s->n_tau; i++)
    if (fabs(s->taus[i] - t) < 1e-12) return;
  if (s->n_tau < STORE_MAX_TAU) s->taus[s->n_tau++] = t;
  for (int i = s->n_tau - 1; i > 0 && s->taus[i] < s->taus[i - 1]; i--) {
    double x = s->taus[i]; s->taus[i] = s->taus[i - 1]; s->taus[i - 1] = x;
  }
}

/* Build every grid point's plan once on a made-up spectrum: catches infeasible points (a
 * Hadamard rotation for a D that is not a power of two, a rank above D, ...) before any output. */
int sweep_check_plans(sweep_state *s, sq_err *e) {
  int D = s->dump.head_dim;
  if (D > PLAN_MAX_D) return sq_fail(e, SQ_EINPUT, "%s: head_dim %d exceeds %d", s->dump.path, D, PLAN_MAX_D);
  calib_head c;
  memset(&c, 0, sizeof c);
  c.D = D;
  c.n = 1000;
  c.eigval = sq_xmalloc((size_t)D * sizeof *c.eigval);
  c.basis = sq_xcalloc((size_t)D * D, sizeof *c.basis);
  double sum = 0, sq = 0;
  for (int i = 0; i < D; i++) {
    c.eigval[i] = 1.0 / ((i + 1.0) * (i + 1.0));
    c.basis[(size_t)i * D + i] = 1.0f;
    sum += c.eigval[i];
    sq += c.eigval[i] * c.eigval[i];
  }
  c.pr = sum * sum / sq;
  c.pr_int = (int)fmin(fmax(round(c.pr), 2), D - 2);
  c.kappa = c.eigval[c.pr_int - 1] / c.eigval[c.pr_int];
  int rc = SQ_OK;
  for (int g = 0; g < s->n_grid && !rc; g++) {
    plan_pair p;
    rc = plan_build(&p, &s->grid[g], &c, &c, s->dump.layers[s->layer_idx[0]], s->heads[0], s->cfg.run.seed, e);
    if (rc) sq_wrap(e, "%s: grid point infeasible for this dump: ", s->cfg.path);
    else plan_pair_free(&p);
  }
  free(c.eigval);
  free(c.basis);
  return rc;
}

static void sweep_join(const cfg_slist *l, char *buf, size_t n) {
  size_t k = 0;
  buf[0] = '\0';
  for (int i = 0; i < l->n && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? "," : "", l->v[i]);
}

/* Everything that can be checked before a byte is written. */
static int sweep_prepare(const sweep_opts *o, sweep_state *s, sq_err *e) {
  if (cfg_load(&s->cfg, o->config_path, e)) return e->code;
  s->cfg_loaded = 1;
  /* All --set at once: order-independent (--set sq.total_bits=3 --set run.arms=sq works), and the
   * config is unchanged unless every assignment is valid. Messages name "--set section.key". */
  if (o->n_overrides && cfg_override_all(&s->cfg, o->n_overrides, o->overrides, e))
    return e->code;
  if (o->backend) {
    char set[64];
    snprintf(set, sizeof set, "run.backend=%s", o->backend);
    if (cfg_override(&s->cfg, set, e)) return sq_wrap(e, "--backend: ");
  }
  if (o->out) {
    if (strlen(o->out) >= sizeof s->cfg.run.out) return sq_fail(e, SQ_EINPUT, "--out: path too long");
    snprintf(s->cfg.run.out, sizeof s->cfg.run.out, "%s", o->out);
  }
  snprintf(s->out_dir, sizeof s->out_dir, "%s", s->cfg.run.out);
  for (int i = 0; i < s->cfg.experiments.n; i++) {
    const experiment *x = exp_find(s->cfg.experiments.v[i]);
    if (!x) {
      char known[256] = "";
      for (int j = 0; j < exp_count; j++) {
        strncat(known, j ? ", " : "", sizeof known - strlen(known) - 1);
        strncat(known, exp_table[j].name, sizeof known - strlen(known) - 1);
      }
      return sq_fail(e, SQ_EINPUT, "%s: [run] experiments: unknown experiment '%s' (known: %s)", s->cfg.path,
                     s->cfg.experiments.v[i], known);
    }
    s->needs_rows |= x->needs_rows;
  }
  s->do_shift = cfg_has_experiment(&s->cfg, "shift");
  s->do_stability = cfg_has_experiment(&s->cfg, "stability");
  sweep_join(&s->cfg.experiments, s->experiments, sizeof s->experiments);
  if (s->cfg.run.backend == CFG_BACKEND_CUDA && !kern_cuda_available())
    return sq_fail(e, SQ_EINPUT, "backend cuda requested but %s",
                   SQEXP_HAVE_CUDA ? "no usable GPU is visible" : "this sqexp was built without CUDA");
  if (dump_open(&s->dump, s->cfg.run.dump, s->cfg.run.allow_nonfinite, e)) return e->code;
  s->dump_opened = 1;
  if (plan_grid(&s->cfg, &s->grid, &s->n_grid, e)) return sq_wrap(e, "%s: ", s->cfg.path);
  if (s->needs_rows && s->n_grid == 0)
    return sq_fail(e, SQ_EINPUT, "%s: the grid is empty ([run] arms selects no arm)", s->cfg.path);
  s->n_xgrid = s->do_shift || s->do_stability ? s->n_grid : 0;
  if (!s->needs_rows) s->n_grid = 0;
  if (sweep_select_layers(s, e) || sweep_select_tokens(s, e) || sweep_check_plans(s, e)) return e->code;
  if (sweep_extra_prepare(s, e)) return e->code;
  sweep_add_tau(s, 0.90);
  sweep_add_tau(s, 0.95);
  for (int i = 0; i < s->cfg.sq.d_eff_variance.n; i++) sweep_add_tau(s, s->cfg.sq.d_eff_variance.v[i]);
  for (int i = 0; i < s->cfg.lowrank.d_eff_variance.n; i++) sweep_add_tau(s, s->cfg.lowrank.d_eff_variance.v[i]);
  s->id_text = prov_config_identity(&s->cfg, s->id.config_hash);
  if (prov_dump_fingerprint(&s->dump, s->dump_fp, &s->dump_size, e)) return e->code;
  s->id.config_text = s->id_text;
  memcpy(s->id.dump_fp, s->dump_fp, sizeof s->dump_fp);
  s->id.dump_path = s->dump.path;
  s->id.dump_size = s->dump_size;
  s->id.model_id = s->dump.model_id;
  s->id.experiments = s->experiments;
  return SQ_OK;
}

void sweep_layer_buf_free(sweep_layer_buf *b, int n_heads) {
  dump_layer_free(&b->raw);
  free(b->calib);
  free(b->C);
  for (int i = 0; b->ck && i < n_heads; i++) {
    calib_head_free(&b->ck[i]);
    calib_head_free(&b->cv[i]);
  }
  free(b->ck);
  free(b->cv);
  free(b->ek);
  free(b->ev);
  free(b->eq);
  free(b->randq);
}

/* Copy whole token ranges of `seqs` from src [T][H][D] into dst, contiguously. */
static void sweep_gather(const float *src, const int64_t *off, const int *seqs, const int64_t *lens, int n,
                         int64_t row, float *dst) {
  int64_t at = 0;
  for (int i = 0; i < n; i++) {
    int64_t len = lens ? lens[i] : off[seqs[i] + 1] - off[seqs[i]];
    memcpy(dst + at * row, src + off[seqs[i]] * row, (size_t)(len * row) * sizeof *dst);
    at += len;
  }
}

/* The rows of `seqs` in src when they are already adjacent there (the usual layout, calibration
 * sequences then evaluation ones), else NULL. */
static const float *sweep_rows_in_place(const float *src, const int64_t *off, const int *seqs, const int64_t *lens,
                                        int n, int64_t row) {
  for (int i = 0; i + 1 < n; i++) {
    int64_t len = lens ? lens[i] : off[seqs[i] + 1] - off[seqs[i]];
    if (off[seqs[i]] + len != off[seqs[i + 1]]) return NULL;
  }
  return src + off[seqs[0]] * row;
}

/* The rows of `seqs` as one [total][row] block: sweep_rows_in_place, else a copy in *buf
 * (allocated on first need, reused for later layers). */
static const float *sweep_rows(const float *src, const int64_t *off, const int *seqs, const int64_t *lens, int n,
                               int64_t row, int64_t total, float **buf) {
  const float *at = sweep_rows_in_place(src, off, seqs, lens, n, row);
  if (at) return at;
  if (!*buf) *buf = sq_xmalloc((size_t)(total * row) * sizeof **buf);
  sweep_gather(src, off, seqs, lens, n, row, *buf);
  return *buf;
}

/* Threads for the host-side parallel loops (plan building, eigendecompositions): [run] threads
 * when set, else the OpenMP default (OMP_NUM_THREADS or the core count), like the CPU backend. */
static int sweep_threads(const sweep_state *s) {
  return s->cfg.run.threads > 0 ? s->cfg.run.threads : omp_get_max_threads();
}

/* The eigendecompositions of keys (j < n_heads) and values (j >= n_heads) of every selected head:
 * one call of the backend's eigh for all 2 x n_heads moments of the layer (cuda: one batched
 * cuSOLVER call; cpu: GSL per head, bit for bit calib_from_moment), then the shared
 * post-processing (calib_from_eig: sort, clamp, sign convention, PR, kappa) in parallel, each head
 * touching only its own output, so the results do not depend on the thread count. The error
 * reported is the first in the serial order. C holds the key moments [H][D*D], then the values'. */
static int sweep_eigen_heads(sweep_run_ctx *r, sweep_layer_buf *b, int layer, int64_t n, sq_err *e) {
  const sweep_state *s = r->s;
  int H = s->dump.n_kv_heads, D = s->dump.head_dim, nj = 2 * s->n_heads;
  int64_t DD = (int64_t)D * D;
  double *C = sq_xmalloc((size_t)nj * DD * sizeof *C);   /* the selected heads' moments, packed */
  for (int j = 0; j < nj; j++)
    memcpy(C + j * DD, b->C + ((int64_t)(j >= s->n_heads) * H + s->heads[j % s->n_heads]) * DD,
           (size_t)DD * sizeof *C);
  double *val = sq_xmalloc((size_t)nj * D * sizeof *val), *vec = sq_xmalloc((size_t)nj * DD * sizeof *vec);
  int status = r->be->eigh(r->be, C, nj, D, val, vec, e);
  if (status)
    status = sq_wrap(e, "layer %d eigendecomposition (matrices 0..%d: keys of the selected heads, then values): ",
                     layer, nj - 1);
  int *rc = sq_xcalloc((size_t)nj, sizeof *rc);
  sq_err *errs = sq_xmalloc((size_t)nj * sizeof *errs);
  if (!status) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(sweep_threads(s))
    for (int j = 0; j < nj; j++) {
      calib_head *c = j >= s->n_heads ? &b->cv[j % s->n_heads] : &b->ck[j % s->n_heads];
      calib_head_free(c);
      rc[j] = calib_from_eig(val + (int64_t)j * D, vec + j * DD, D, n, c, &errs[j]);
    }
  }
  for (int j = 0; j < nj && !status; j++)
    if (rc[j]) {
      *e = errs[j];
      status = sq_wrap(e, "layer %d head %d %s calibration: ", layer, s->heads[j % s->n_heads],
                       j >= s->n_heads ? "value" : "key");
    }
  free(rc);
  free(errs);
  free(C);
  free(val);
  free(vec);
  return status;
}

/* The calibration buffers (moments, per-head calibrations) of a sweep_layer_buf. */
void sweep_calib_alloc(const sweep_state *s, sweep_layer_buf *b) {
  const dump_t *d = &s->dump;
  b->C = sq_xmalloc((size_t)2 * d->n_kv_heads * d->head_dim * d->head_dim * sizeof *b->C); /* keys, then values */
  b->ck = sq_xcalloc((size_t)s->n_heads, sizeof *b->ck);
  b->cv = sq_xcalloc((size_t)s->n_heads, sizeof *b->cv);
}

/* Calibrate keys and values of every selected head of a layer (raw: its data) into b's C, ck, cv
 * (b->calib for gathering rows). Touches only b and the backend's moments / eigh, so it may run
 * on the prefetch thread while the main thread evaluates the previous layer. */
int sweep_calib_compute(sweep_run_ctx *r, const dump_layer *raw, sweep_layer_buf *b, int layer, sq_err *e) {
  const sweep_state *s = r->s;
  const dump_t *d = &s->dump;
  int H = d->n_kv_heads, D = d->head_dim;
  int64_t row = (int64_t)H * D, n = s->n_calib_tok;
  for (int side = 0; side < 2; side++) {
    const float *x = sweep_rows(side ? raw->v : raw->k, d->seq_off, s->calib_seq, s->calib_len, s->n_calib_seq,
                                row, n, &b->calib);
    if (r->be->moments(r->be, x, n, H, D, s->cfg.run.calib_normalize, b->C + (int64_t)side * H * D * D, e))
      return sq_wrap(e, "layer %d: %s moments: ", layer, side ? "value" : "key");
  }
  return sweep_eigen_heads(r, b, layer, n, e);
}

/* Calibrate in line (sweep_calib_compute on b->raw), then record the spectra. */
int sweep_calibrate(sweep_run_ctx *r, sweep_layer_buf *b, int layer, sq_err *e) {
  if (sweep_calib_compute(r, &b->raw, b, layer, e)) return e->code;
  return sweep_calib_record(r, b, layer, e);
}

/* Write the spectra of b's calibrations not yet stored (main thread: the store is not shared). */
int sweep_calib_record(sweep_run_ctx *r, sweep_layer_buf *b, int layer, sq_err *e) {
  const sweep_state *s = r->s;
  int D = s->dump.head_dim;
  int64_t n = s->n_calib_tok;
  for (int i = 0; i < s->n_heads; i++) {
    if (r->no_spectra || store_has_spectrum(r->st, layer, s->heads[i])) continue;
    store_spectrum sp;
    memset(&sp, 0, sizeof sp);
    sp.layer = layer;
    sp.head = s->heads[i];
    sp.head_dim = D;
    sp.n_calib = n;
    sp.n_tau = s->n_tau;
    memcpy(sp.tau, s->taus, sizeof sp.tau);
    for (int side = 0; side < 2; side++) {
      const calib_head *c = side ? &b->cv[i] : &b->ck[i];
      sp.pr[side] = c->pr;
      sp.pr_int[side] = c->pr_int;
      sp.kappa[side] = c->kappa;
      for (int t = 0; t < s->n_tau; t++) sp.d_eff[side][t] = calib_deff(c, s->taus[t]);
      memcpy(sp.eigval[side], c->eigval, (size_t)D * sizeof(double));
    }
    if (store_append_spectrum(r->st, &sp, e)) return e->code;
  }
  return store_sync_async(r->st, e); /* (the fsync on the store's thread; the run ends with store_sync) */
}

void sweep_draw_randq(uint64_t seed, int layer, int head, int64_t n, float *dst) {
  rng_t g;
  rng_seed(&g, rng_head_seed(seed, layer, head) ^ RNG_RANDQ_SALT);
  for (int64_t i = 0; i < n; i++) dst[i] = (float)rng_normal(&g);
}

/* Evaluation tokens, their queries, and the host-drawn randq queries; then load_layer. */
/* The evaluation sequences' rows of src: in place when adjacent; else copied into *buf, or NULL
 * when buf is NULL. */
static const float *sweep_eval_rows_of(const sweep_state *s, const float *src, const int64_t *off, int64_t row,
                                       float **buf) {
  if (!buf) return sweep_rows_in_place(src, off, s->eval_seq, NULL, s->n_eval_seq, row);
  return sweep_rows(src, off, s->eval_seq, NULL, s->n_eval_seq, row, s->eval_off[s->n_eval_seq], buf);
}

/* A kern_layer's shape and evaluation rows k, v, q of a layer (raw: its data), the rest zero. With
 * b, rows not adjacent in raw are copied into b's gather buffers; without (the prefetch thread's
 * preload, which takes rows in place only) they are NULL. */
static void sweep_eval_layer(const sweep_state *s, const dump_layer *raw, int layer, sweep_layer_buf *b,
                             kern_layer *L) {
  const dump_t *d = &s->dump;
  int H = d->n_kv_heads, Hq = d->n_q_heads, D = d->head_dim;
  memset(L, 0, sizeof *L);
  L->layer = layer;
  L->n_kv_heads = H;
  L->n_q_heads = Hq;
  L->head_dim = D;
  L->n_seq = s->n_eval_seq;
  L->seq_off = s->eval_off;
  L->n_tok = s->eval_off[s->n_eval_seq];
  L->k = sweep_eval_rows_of(s, raw->k, d->seq_off, (int64_t)H * D, b ? &b->ek : NULL);
  L->v = sweep_eval_rows_of(s, raw->v, d->seq_off, (int64_t)H * D, b ? &b->ev : NULL);
  L->q = s->use_queries ? sweep_eval_rows_of(s, raw->q, d->q_off, (int64_t)Hq * D, b ? &b->eq : NULL) : NULL;
}

int sweep_load_eval(sweep_run_ctx *r, sweep_layer_buf *b, int layer, sq_err *e) {
  sweep_state *s = r->s;
  const dump_t *d = &s->dump;
  int H = d->n_kv_heads, D = d->head_dim;
  int R = (s->cfg.run.protocols & PROTO_RANDQ) ? s->cfg.run.randq_queries : 0;
  for (int h = 0; R > 0 && h < H; h++)
    sweep_draw_randq(s->cfg.run.seed, layer, h, (int64_t)s->n_eval_seq * R * D,
                     b->randq + (int64_t)h * s->n_eval_seq * R * D);
  kern_layer L;
  sweep_eval_layer(s, &b->raw, layer, b, &L);
  L.preload_id = b->preload_id; /* (the prefetch thread's copy of exactly these rows, if any) */
  b->preload_id = 0;
  L.n_randq = R;
  L.randq = R > 0 ? b->randq : NULL;
  L.protocols = s->cfg.run.protocols;
  if (!s->use_queries) L.protocols &= ~(PROTO_ATTN | PROTO_PROBS);
  L.probs_last = s->cfg.run.probs_last;
  L.topk = s->cfg.run.topk;
  if (r->be->load_layer(r->be, &L, e)) return sq_wrap(e, "layer %d: ", layer);
  return SQ_OK;
}

static void sweep_fill_row(store_row *row, const plan_pair *p, const kern_metrics *m, const calib_head *ck,
                           const calib_head *cv, int D, const char *backend, double eval_s) {
  store_row_init(row);
  snprintf(row->key, sizeof row->key, "%s", p->key);
  snprintf(row->arm, sizeof row->arm, "%s", plan_arm_names[p->knobs.arm]);
  row->layer = p->layer;
  row->head = p->head;
  row->head_dim = D;
  const plan_knobs *k = &p->knobs;
  switch (k->arm) {
  case ARM_TQ:
    row->total_bits = k->total_bits;
    row->tq_variant = k->tq_variant;
    row->tq_rotation = k->tq_rotation;
    row->tq_codebook = k->tq_codebook;
    row->tq_shared_rotation = k->tq_shared_rotation;
    break;
  case ARM_SQ:
    row->total_bits = k->total_bits;
    row->noise_bits = k->noise_bits;
    row->value_noise_bits = k->value_noise_bits;
    row->d_eff_variance = k->d_eff_variance;
    row->use_water_fill = k->use_water_fill;
    row->use_qjl = k->use_qjl;
    break;
  case ARM_SQV1: row->total_bits = k->total_bits; break;
  case ARM_LOWRANK:
    row->rank = k->rank;
    if (k->rank == 0) row->d_eff_variance = k->d_eff_variance;
    break;
  }
  row->m = *m;
  row->d_eff_k = p->d_eff_k;
  row->d_eff_v = p->d_eff_v;
  row->pr_k = ck->pr;
  row->pr_v = cv->pr;
  row->pr_int_k = ck->pr_int;
  row->pr_int_v = cv->pr_int;
  row->kappa_k = ck->kappa;
  row->kappa_v = cv->kappa;
  row->bits_honest_k = p->bits_honest_k;
  row->bits_honest_v = p->bits_honest_v;
  row->bits_seed_k = p->bits_seed_k;
  row->bits_seed_v = p->bits_seed_v;
  row->bits_paper_k = p->bits_paper_k;
  row->bits_paper_v = p->bits_paper_v;
  double fp16 = 2.0 * 16.0 * D;
  row->ratio_honest = fp16 / (p->bits_honest_k + p->bits_honest_v);
  row->ratio_seed = fp16 / (p->bits_seed_k + p->bits_seed_v);
  row->ratio_paper = fp16 / (p->bits_paper_k + p->bits_paper_v);
  snprintf(row->backend, sizeof row->backend, "%s", backend);
  row->eval_s = eval_s;
}

enum { SWEEP_BATCH = 64 }; /* the most plans per eval call (the backend's eval_batch, at most this) */

/* The stored key of a grid point: the run's key prefix (shift/stability) + plan_knobs_key. */
static void sweep_row_key(const sweep_run_ctx *r, const plan_knobs *kn, char *key, size_t n) {
  size_t at = (size_t)snprintf(key, n, "%s", r->key_prefix ? r->key_prefix : "");
  if (at < n) plan_knobs_key(kn, key + at, (int)(n - at));
}

/* Build plans[i] for the grid points idx[0..n) of (layer, head), in parallel. plan_build keeps no
 * static state: its random matrices come from generators seeded per call (rng_head_seed), GSL's
 * QR is reentrant and its error goes to its own sq_err, so each plan is the same whatever the
 * thread count or the order of building. On failure every built plan is freed and the error is
 * the one a serial build would have hit first (the lowest failing index). */
static int sweep_build_plans(const sweep_state *s, const int *idx, int n, const calib_head *ck, const calib_head *cv,
                             int layer, int head, plan_pair *plans, sq_err *e) {
  int *rc = sq_xcalloc((size_t)(n > 0 ? n : 1), sizeof *rc);
  sq_err *errs = sq_xmalloc((size_t)(n > 0 ? n : 1) * sizeof *errs);
#pragma omp parallel for schedule(dynamic, 1) num_threads(sweep_threads(s))
  for (int i = 0; i < n; i++)
    rc[i] = plan_build(&plans[i], &s->grid[idx[i]], ck, cv, layer, head, s->cfg.run.seed, &errs[i]);
  int first = -1;
  for (int i = 0; i < n && first < 0; i++)
    if (rc[i]) first = i;
  int status = SQ_OK;
  if (first >= 0) {
    for (int i = 0; i < n; i++)
      if (!rc[i]) plan_pair_free(&plans[i]); /* a failed plan_build freed itself */
    *e = errs[first];
    status = rc[first];
  }
  free(rc);
  free(errs);
  return status;
}

/* The plans of one (layer, head): its pending grid points (read from the store on the main
 * thread, before any row of this head can be appended), built together (in parallel: a batch of
 * 8 would leave most of a 16-core host idle during the tq QRs), in line or by a thread while the
 * backend evaluates the previous head (plan ahead: with the CUDA backend the host cores would
 * otherwise wait on the GPU). Plans are the same either way (sweep_build_plans). */
typedef struct {
  const sweep_state *s;
  const calib_head *ck, *cv;
  int layer, head, np, rc;
  int async, running; /* built on a thread (started), which has not been joined yet */
  int *pending;
  plan_pair *plans;
  sq_err err;
  double work_s;
  pthread_t th;
} sweep_plans;

/* Plan ahead unless SQEXP_PLAN_AHEAD=0: by default with the CUDA backend only (the CPU backend's
 * eval uses the same cores); SQEXP_PLAN_AHEAD=1 forces it (tests run it on the CPU backend). */
static int sweep_plan_ahead(const sweep_run_ctx *r) {
  const char *env = getenv("SQEXP_PLAN_AHEAD");
  if (env && *env) return strcmp(env, "0") != 0;
  return !strcmp(r->be->name, "cuda");
}

static void sweep_plans_init(sweep_run_ctx *r, sweep_layer_buf *b, int layer, int hi, sweep_plans *p) {
  const sweep_state *s = r->s;
  memset(p, 0, sizeof *p);
  p->s = s, p->ck = &b->ck[hi], p->cv = &b->cv[hi], p->layer = layer, p->head = s->heads[hi];
  p->pending = sq_xmalloc((size_t)(s->n_grid > 0 ? s->n_grid : 1) * sizeof *p->pending);
  for (int g = 0; g < s->n_grid; g++) {
    char key[256];
    sweep_row_key(r, &s->grid[g], key, sizeof key);
    if (!store_has_row(r->st, key, layer, p->head)) p->pending[p->np++] = g;
  }
  p->plans = sq_xmalloc((size_t)(p->np > 0 ? p->np : 1) * sizeof *p->plans);
}

static void *sweep_plans_main(void *arg) {
  sweep_plans *p = arg;
  double t0 = prov_mono();
  p->rc = sweep_build_plans(p->s, p->pending, p->np, p->ck, p->cv, p->layer, p->head, p->plans, &p->err);
  if (p->rc) p->np = 0; /* nothing built, nothing to free */
  p->work_s = prov_mono() - t0;
  return NULL;
}

/* Build on a thread (async) or in line (also when the thread cannot start). */
static void sweep_plans_start(sweep_plans *p, int async) {
  p->async = p->running = async && bgthread_start(&p->th, sweep_plans_main, p);
  if (!p->async) sweep_plans_main(p);
}

/* The plans, built: their building counts as plan work, what the run waited for it as
 * plan_wait (the join, or all of it when built in line). */
static int sweep_plans_take(sweep_plans *p, sweep_run_ctx *r, sq_err *e) {
  double t0 = prov_mono();
  if (p->running) pthread_join(p->th, NULL), p->running = 0;
  r->prov.phase_s[PROV_PLAN] += p->work_s;
  r->prov.phase_s[PROV_PLAN_WAIT] += p->async ? prov_mono() - t0 : p->work_s;
  if (p->rc) *e = p->err;
  return p->rc;
}

/* Every exit path: no thread outlives its plans. */
static void sweep_plans_free(sweep_plans *p) {
  if (p->running) pthread_join(p->th, NULL), p->running = 0;
  for (int i = 0; i < p->np; i++) plan_pair_free(&p->plans[i]);
  free(p->plans);
  free(p->pending);
  p->plans = NULL, p->pending = NULL, p->np = 0;
}

/* The built plans of head hi evaluated in batches of the backend's eval_batch (<= SWEEP_BATCH); rows
 * appended after each batch. */
static int sweep_head_eval(sweep_run_ctx *r, sweep_layer_buf *b, int layer, int hi, const sweep_plans *p,
                           sweep_layer_sum *ls, sq_err *e) {
  const sweep_state *s = r->s;
  int head = p->head, D = s->dump.head_dim, rc = SQ_OK;
  const plan_pair *ptrs[SWEEP_BATCH];
  kern_metrics met[SWEEP_BATCH];
  const int batch = r->be->eval_batch > 0 && r->be->eval_batch < SWEEP_BATCH ? r->be->eval_batch : SWEEP_BATCH;
  for (int at = 0; at < p->np && !rc && !sweep_stop_signal; at += batch) {
    int n = p->np - at < batch ? p->np - at : batch;
    for (int i = 0; i < n; i++) ptrs[i] = &p->plans[at + i];
    double t1 = prov_mono();
    char what[128];
    snprintf(what, sizeof what, "layer %d head %d", layer, head);
    progress_set(&r->prog, r->done, what);
    rc = r->be->eval(r->be, head, n, ptrs, r->cb, met, e);
    if (rc) sq_wrap(e, "layer %d head %d: eval: ", layer, head);
    double t2 = prov_mono();
    r->prov.phase_s[PROV_EVAL] += t2 - t1;
    for (int i = 0; i < n && !rc; i++) {
      const plan_pair *pp = &p->plans[at + i];
      store_row row;
      sweep_fill_row(&row, pp, &met[i], &b->ck[hi], &b->cv[hi], D, r->be->name, (t2 - t1) / n);
      sweep_row_key(r, &pp->knobs, row.key, sizeof row.key);
      rc = store_append_row(r->st, &row, e);
      if (!rc && isfinite(met[i].attn_cos) && met[i].n_attn > 0) {
        ls->sum[pp->knobs.arm] += met[i].attn_cos;
        ls->n[pp->knobs.arm]++;
      }
      if (!rc) r->done++, r->computed++;
    }
    if (!rc) progress_set(&r->prog, r->done, NULL);
    r->prov.phase_s[PROV_WRITE] += prov_mono() - t2;
  }
  double t3 = prov_mono();
  if (!rc) rc = store_sync_async(r->st, e); /* the head's rows reach the disk while the next head runs */
  r->prov.phase_s[PROV_WRITE] += prov_mono() - t3;
  return rc;
}

/* Head 0's plans of layer `layer` into *p: built on a thread (sweep_plan_ahead) while the caller
 * loads the layer, else in line. The calibration of b is complete. */
static void sweep_heads_first(sweep_run_ctx *r, sweep_layer_buf *b, int layer, sweep_plans *p) {
  sweep_plans_init(r, b, layer, 0, p);
  sweep_plans_start(p, sweep_plan_ahead(r));
}

/* All pending grid points of every selected head of the loaded layer: head hi + 1's plans are
 * built (ahead, sweep_plan_ahead) while head hi is evaluated; head 0's are in *first (from
 * sweep_heads_first; the slot is taken over and freed here). */
static int sweep_heads_from(sweep_run_ctx *r, sweep_layer_buf *b, int layer, sweep_layer_sum *ls,
                            sweep_plans *first, sq_err *e) {
  const sweep_state *s = r->s;
  const int ahead = sweep_plan_ahead(r);
  /* two slots used in turn: a building thread writes into its slot, so slots are swapped by
   * pointer, never copied */
  sweep_plans *cur = first, other, *next = &other;
  int rc = SQ_OK;
  for (int hi = 0; !rc && !sweep_stop_signal; hi++) {
    rc = sweep_plans_take(cur, r, e);
    const int more = !rc && hi + 1 < s->n_heads;
    if (more) sweep_plans_init(r, b, layer, hi + 1, next), sweep_plans_start(next, ahead);
    if (!rc) rc = sweep_head_eval(r, b, layer, hi, cur, ls, e);
    if (!more) break;
    sweep_plans_free(cur);
    sweep_plans *t = cur;
    cur = next, next = t;
  }
  sweep_plans_free(cur); /* the last head's, or (stopped, failed) the next head's: wait, free */
  return rc;
}

int sweep_heads(sweep_run_ctx *r, sweep_layer_buf *b, int layer, sweep_layer_sum *ls, sq_err *e) {
  if (r->s->n_heads < 1) return SQ_OK;
  sweep_plans first;
  sweep_plans_init(r, b, layer, 0, &first);
  sweep_plans_start(&first, 0);
  return sweep_heads_from(r, b, layer, ls, &first, e);
}

/* Does this layer have anything left to do? */
static int sweep_layer_pending(const sweep_run_ctx *r, int layer) {
  const sweep_state *s = r->s;
  for (int i = 0; i < s->n_heads; i++) {
    if (!store_has_spectrum(r->st, layer, s->heads[i])) return 1;
    for (int g = 0; g < s->n_grid; g++) {
      char key[256];
      plan_knobs_key(&s->grid[g], key, (int)sizeof key);
      if (!store_has_row(r->st, key, layer, s->heads[i])) return 1;
    }
  }
  return 0;
}

static void sweep_layer_line(sweep_run_ctx *r, int layer, const sweep_layer_sum *ls, double secs) {
  if (r->quiet) return;
  progress_clear(&r->prog);
  if (!r->layer_header) {
    printf("per layer: mean attention cosine of each arm over the layer's newly computed rows\n");
    r->layer_header = 1;
  }
  printf("layer %3d (%5.1f s):", layer, secs);
  int any = 0;
  for (int a = 0; a < ARM_COUNT; a++)
    if (ls->n[a]) {
      printf("  %s %.4f", plan_arm_names[a], ls->sum[a] / ls->n[a]);
      any = 1;
    }
  printf("%s\n", any ? "" : "  (no grid rows to compute)");
  fflush(stdout);
}

void sweep_pf_init(sweep_pf *p, dump_t *d) {
  memset(p, 0, sizeof *p);
  p->d = d;
  pthread_mutex_init(&p->calib_lock, NULL);
  const char *env = getenv("SQEXP_PREFETCH");
  p->enabled = !(env && !strcmp(env, "0"));
}

/* The evaluation rows of what the thread read, copied to the backend ahead of their load_layer
 * (kern.h preload) when they lie in place in the layer buffer (sweep_load_eval then passes the
 * same pointers and the id). */
static int sweep_pf_preload(sweep_pf *p) {
  static uint64_t seq = 0; /* (only prefetch threads of the main grid preload, one at a time) */
  const sweep_run_ctx *r = p->calib;
  const sweep_state *s = r->s;
  p->preload_id = 0;
  if (!r->be->preload || s->n_grid < 1) return SQ_OK;
  kern_layer L;
  sweep_eval_layer(s, &p->buf, p->buf.layer, NULL, &L);
  if (!L.k || !L.v || (s->use_queries && !L.q)) return SQ_OK; /* gathered rows: load_layer copies them */
  L.preload_id = ++seq;
  int rc = r->be->preload(r->be, &L, &p->err);
  if (!rc) p->preload_id = L.preload_id;
  return rc ? sq_wrap(&p->err, "layer %d: preload: ", L.layer) : SQ_OK;
}

static void *sweep_pf_main(void *arg) {
  sweep_pf *p = arg;
  double t0 = prov_mono();
  p->rc = dump_read_layer(p->d, p->idx, &p->buf, &p->err);
  double t1 = prov_mono();
  p->work_s = t1 - t0;
  p->calibrated = 0, p->calib_s = 0.0;
  if (!p->rc && p->calib) {
    pthread_mutex_lock(&p->calib_lock);
    p->rc = sweep_calib_compute(p->calib, &p->buf, &p->cb, p->buf.layer, &p->err);
    pthread_mutex_unlock(&p->calib_lock);
    p->calibrated = !p->rc;
    double t2 = prov_mono();
    p->calib_s = t2 - t1;
    if (!p->rc) p->rc = sweep_pf_preload(p);
    p->work_s += prov_mono() - t2; /* (the copy to the device of what was read: read work) */
  }
  return NULL;
}

/* Start reading stored layer idx on a thread (bgthread_start). When the thread cannot start,
 * the layer is simply read in line when taken. */
static void sweep_pf_start(sweep_pf *p, int idx) {
  if (!p->enabled || p->running) return;
  p->held = 0;
  p->idx = idx;
  p->rc = SQ_OK;
  sq_err_clear(&p->err);
  p->running = bgthread_start(&p->th, sweep_pf_main, p);
}

/* Wait for the thread (if any); its read counts as read work, its calibration as calibration
 * work, the wait as read_wait. */
static void sweep_pf_join(sweep_pf *p, sweep_run_ctx *r) {
  if (!p->running) return;
  double t0 = prov_mono();
  pthread_join(p->th, NULL);
  p->running = 0;
  p->held = 1;
  r->prov.phase_s[PROV_READ_WAIT] += prov_mono() - t0;
  r->prov.phase_s[PROV_READ] += p->work_s;
  r->prov.phase_s[PROV_CALIB] += p->calib_s;
}

/* After sweep_read_at: when the thread calibrated the layer it handed over, its calibration
 * buffers are swapped into b (returns 1); otherwise the caller calibrates in line. */
static int sweep_pf_take_calib(sweep_pf *p, sweep_layer_buf *b) {
  b->preload_id = p->calibrated ? p->preload_id : 0;
  p->preload_id = 0;
  if (!p->calibrated) return 0;
  sweep_layer_buf t = p->cb;
  p->cb.calib = b->calib, p->cb.C = b->C, p->cb.ck = b->ck, p->cb.cv = b->cv;
  b->calib = t.calib, b->C = t.C, b->ck = t.ck, b->cv = t.cv;
  p->calibrated = 0;
  return 1;
}

/* Stored layer idx into *out: the prefetched copy when the thread read that one (buffers
 * swapped, no copy), else read here. */
static int sweep_pf_take(sweep_pf *p, sweep_run_ctx *r, int idx, dump_layer *out, sq_err *e) {
  sweep_pf_join(p, r);
  const int had = p->held && p->idx == idx;
  p->held = 0;
  if (!had) p->calibrated = 0; /* (of a layer not taken) */
  if (had) {
    if (p->rc) {
      *e = p->err;
      return p->rc;
    }
    dump_layer t = *out;
    *out = p->buf;
    p->buf = t;
    return SQ_OK;
  }
  double t0 = prov_mono();
  int rc = dump_read_layer(p->d, idx, out, e);
  double dt = prov_mono() - t0;
  r->prov.phase_s[PROV_READ] += dt;
  r->prov.phase_s[PROV_READ_WAIT] += dt;
  return rc;
}

/* Every exit path of a reading loop: no thread outlives it, its buffer is freed. */
void sweep_pf_done(sweep_pf *p, sweep_run_ctx *r) {
  sweep_pf_join(p, r);
  dump_layer_free(&p->buf);
  if (p->calib) sweep_layer_buf_free(&p->cb, p->calib->s->n_heads);
  pthread_mutex_destroy(&p->calib_lock);
}

/* sweep_calibrate in line, never at the same time as the thread's calibration (the backends'
 * moments and eigh are not run concurrently with each other). */
int sweep_pf_calibrate(sweep_pf *p, sweep_run_ctx *r, sweep_layer_buf *b, int layer, sq_err *e) {
  pthread_mutex_lock(&p->calib_lock);
  int rc = sweep_calib_compute(r, &b->raw, b, layer, e);
  pthread_mutex_unlock(&p->calib_lock);
  return rc ? rc : sweep_calib_record(r, b, layer, e);
}

/* Layer li of the selection (want[li] set) into *out, then start reading the next wanted one.
 * want[] is fixed before the loop: working on layer li adds rows of layer li only, so what the
 * later layers need does not change under the loop. */
int sweep_read_at(sweep_run_ctx *r, sweep_pf *p, const int *want, int li, dump_layer *out, sq_err *e) {
  const sweep_state *s = r->s;
  int rc = sweep_pf_take(p, r, s->layer_idx[li], out, e);
  if (rc) return rc;
  for (int nx = li + 1; nx < s->n_layers; nx++)
    if (want[nx]) {
      sweep_pf_start(p, s->layer_idx[nx]);
      break;
    }
  return SQ_OK;
}

/* The main grid, layer by layer. pf: the run's reader, which may already be reading the first
 * selected layer (sweep_execute starts it before creating the backend); it is finished here. */
static int sweep_layers(sweep_run_ctx *r, sweep_pf *pfp, sq_err *e) {
  sweep_state *s = r->s;
  const dump_t *d = &s->dump;
  int H = d->n_kv_heads, D = d->head_dim;
  int R = (s->cfg.run.protocols & PROTO_RANDQ) ? s->cfg.run.randq_queries : 0;
  sweep_layer_buf b;
  memset(&b, 0, sizeof b);
  sweep_calib_alloc(s, &b);
  b.randq = R ? sq_xmalloc((size_t)H * s->n_eval_seq * R * D * sizeof *b.randq) : NULL;
  int *want = sq_xmalloc((size_t)s->n_layers * sizeof *want);
  for (int li = 0; li < s->n_layers; li++) want[li] = sweep_layer_pending(r, d->layers[s->layer_idx[li]]);
  sweep_pf *pf = pfp;
  sweep_pf_join(pf, r); /* the first layer, read while the backend was created (its wait is read_wait) */
  if (pf->held && (!want[0] || pf->rc)) { /* done already (a resume), or failed: read again when wanted */
    dump_layer_free(&pf->buf);
    pf->held = 0;
  }
  /* the layer buffers from the backend's host allocator (page-locked for cuda); the first layer's
   * buffer, read before the backend existed, is plain memory, freed after its layer */
  b.raw.host_alloc = r->be->host_alloc;
  b.raw.host_free = r->be->host_free;
  if (!pf->held) pf->buf.host_alloc = r->be->host_alloc, pf->buf.host_free = r->be->host_free;
  pf->calib = r; /* the thread calibrates the layers it reads (set with no thread running) */
  sweep_calib_alloc(s, &pf->cb);
  int rc = SQ_OK, first = 0;
  while (first < s->n_layers && !want[first]) first++;
  const int timing = prov_phases_on();
  double load_eval_s = 0.0; /* (timing: the layers' load_eval, the reference rows on the critical path) */
  int n_loaded = 0;
  for (int li = 0; li < s->n_layers && !rc && !sweep_stop_signal; li++) {
    int layer = d->layers[s->layer_idx[li]];
    if (!want[li]) {
      progress_layer(&r->prog, layer, li, s->n_layers);
      continue;
    }
    double t0 = prov_mono();
    char what[64];
    snprintf(what, sizeof what, "layer %d: reading", layer);
    progress_set(&r->prog, r->done, what);
    int ahead = 0;
    if (!(rc = sweep_read_at(r, pf, want, li, &b.raw, e))) ahead = sweep_pf_take_calib(pf, &b);
    double t1 = prov_mono();
    if (!rc) rc = ahead ? sweep_calib_record(r, &b, layer, e) : sweep_pf_calibrate(pf, r, &b, layer, e);
    double t2 = prov_mono();
    r->prov.phase_s[PROV_CALIB_WAIT] += t2 - t1;
    if (!ahead) r->prov.phase_s[PROV_CALIB] += t2 - t1;
    sweep_layer_sum ls;
    memset(&ls, 0, sizeof ls);
    double t3 = t2;
    if (!rc && s->n_grid > 0) {
      sweep_plans head0; /* head 0's plans are built while the layer is loaded */
      const int heads = s->n_heads > 0;
      if (heads) sweep_heads_first(r, &b, layer, &head0);
      rc = sweep_load_eval(r, &b, layer, e);
      t3 = prov_mono();
      r->prov.phase_s[PROV_EVAL] += t3 - t2;
      load_eval_s += t3 - t2, n_loaded++;
      if (heads && !rc) rc = sweep_heads_from(r, &b, layer, &ls, &head0, e);
      else if (heads) sweep_plans_free(&head0);
    }
    if (timing && li == first) /* the first layer pays the one-time costs: where */
      fprintf(stderr, "first layer %d: read %.3f s, calibrate %.3f s, load_eval %.3f s, heads %.3f s\n", layer,
              t1 - t0, t2 - t1, t3 - t2, prov_mono() - t3);
    if (!rc && !sweep_stop_signal) {
      sweep_layer_line(r, layer, &ls, prov_mono() - t0);
      progress_layer(&r->prog, layer, li, s->n_layers);
    }
    if (b.raw.host_alloc != r->be->host_alloc) { /* the first layer's plain buffer: the thread's */
      dump_layer_free(&b.raw);                    /* next read into it allocates a page-locked one */
      b.raw.host_alloc = r->be->host_alloc, b.raw.host_free = r->be->host_free;
    }
  }
  sweep_pf_done(pf, r); /* before any other HDF5 call (shift, stability, dump_close) */
  if (timing && n_loaded > 0)
    fprintf(stderr, "load_eval: %.3f s over %d layers (%.1f ms each; part of the eval phase)\n", load_eval_s,
            n_loaded, 1e3 * load_eval_s / n_loaded);
  free(want);
  sweep_layer_buf_free(&b, s->n_heads);
  return rc;
}

/* Rows of the selection that the store already holds (for progress). */
static int64_t sweep_count_done(const sweep_run_ctx *r) {
  const sweep_state *s = r->s;
  int64_t n = 0;
  for (int li = 0; li < s->n_layers; li++)
    for (int i = 0; i < s->n_heads; i++)
      for (int g = 0; g < s->n_grid; g++) {
        char key[256];
        plan_knobs_key(&s->grid[g], key, (int)sizeof key);
        n += store_has_row(r->st, key, s->dump.layers[s->layer_idx[li]], s->heads[i]);
      }
  return n;
}

static void sweep_dry_run(const sweep_state *s) {
  cfg_print(&s->cfg, stdout);
  long long rows = (long long)s->n_grid * s->n_layers * s->n_heads;
  printf("\n; grid: %d points x %d layers x %d KV heads = %lld rows\n", s->n_grid, s->n_layers, s->n_heads, rows);
  printf("; dump: %s (%s, D = %d, %d query / %d KV heads)\n", s->dump.path, s->dump.model_id, s->dump.head_dim,
         s->dump.n_q_heads, s->dump.n_kv_heads);
  printf("; calibration: %lld tokens of %d sequences; evaluation: %lld tokens of %d sequences\n",
         (long long)s->n_calib_tok, s->n_calib_seq, (long long)s->eval_off[s->n_eval_seq], s->n_eval_seq);
  printf("; results: %s (identity %.12s / dump %.12s)\n", s->out_dir, s->id.config_hash, s->dump_fp);
  sweep_extra_dry_run(s);
}

static void sweep_signals(int install, struct sigaction *old_int, struct sigaction *old_term) {
  if (install) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sweep_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, old_int);
    sigaction(SIGTERM, &sa, old_term);
  } else {
    sigaction(SIGINT, old_int, NULL);
    sigaction(SIGTERM, old_term, NULL);
  }
}

static int sweep_exit_code(const sq_err *e) { return e->code == SQ_EINPUT ? 2 : 1; }

static int sweep_execute(sweep_state *s, const sweep_opts *o, sq_err *e) {
  sweep_run_ctx r;
  memset(&r, 0, sizeof r);
  r.s = s;
  r.quiet = o->quiet;
  r.prov.cfg = &s->cfg;
  r.prov.dump = &s->dump;
  r.prov.config_hash = s->id.config_hash;
  r.prov.dump_fp = s->dump_fp;
  r.prov.dump_size = s->dump_size;
  r.prov.start_time = prov_now();
  r.prov.status = "running";
  /* The first selected layer is read (HDF5, fp16 -> fp32) while the backend is created: CUDA's
   * start takes a few tenths of a second. Until sweep_layers joins it, the thread is the only HDF5
   * caller (nothing below touches the dump). On resume it may read a layer that is already done. */
  sweep_pf pf;
  sweep_pf_init(&pf, &s->dump);
  if (s->n_layers > 0) sweep_pf_start(&pf, s->layer_idx[0]);
  int pf_open = 1;
  const double t_create = prov_mono();
  int rc = kern_create(&r.be, s->cfg.run.backend, s->cfg.run.threads, e);
  if (!rc && prov_phases_on()) fprintf(stderr, "backend created in %.1f ms\n", (prov_mono() - t_create) * 1e3);
  if (rc) {
    sweep_pf_done(&pf, &r);
    return sweep_exit_code(e);
  }
  r.prov.backend = r.be->name;
  r.cb = sq_xmalloc(sizeof *r.cb);
  rc = cb_table_build(r.cb, s->dump.head_dim, e);
  if (!rc) rc = store_open(&r.st, s->out_dir, &s->id, o->fresh, e);
  struct sigaction old_int, old_term;
  sweep_stop_signal = 0;
  sweep_signals(1, &old_int, &old_term);
  if (!rc) {
    r.prov.end_time = prov_now();
    prov_write(s->out_dir, &r.prov, NULL);
    r.done = sweep_count_done(&r);
    int64_t total = (int64_t)s->n_grid * s->n_layers * s->n_heads;
    progress_init(&r.prog, stderr, !o->quiet, total, r.done);
    if (!o->quiet && r.done > 0)
      fprintf(stderr, "sqexp run: resuming %s: %lld of %lld rows already done\n", s->out_dir, (long long)r.done,
              (long long)total);
    rc = sweep_layers(&r, &pf, e); /* (finishes pf) */
    pf_open = 0;
    progress_finish(&r.prog);
    if (!rc && !sweep_stop_signal && s->do_shift) rc = sweep_shift(&r, o->fresh, e);
    if (!rc && !sweep_stop_signal && s->do_stability) rc = sweep_stability(&r, o->fresh, e);
  }
  if (pf_open) sweep_pf_done(&pf, &r); /* (the store or the codebooks failed before the layers) */
  int status = rc ? sweep_exit_code(e) : 0;
  if (!rc && sweep_stop_signal) status = 130;
  r.prov.rows_computed = r.computed;
  r.prov.rows_total = r.done;
  if (r.st) {
    sq_err e2;
    if (store_sync(r.st, &e2) && !rc) status = 1, *e = e2;
    store_close(r.st);
    if (status == 0) {
      double t = prov_mono();
      status = sweep_report(s->out_dir, stdout, "run");
      r.prov.phase_s[PROV_REPORT] = prov_mono() - t;
    }
    r.prov.status = status == 0 ? "complete" : status == 130 ? "interrupted" : "failed";
    r.prov.end_time = prov_now();
    sq_err e3;
    if (prov_write(s->out_dir, &r.prov, &e3) && status == 0) {
      fprintf(stderr, "sqexp run: %s\n", e3.msg);
      status = 1;
    }
  }
  sweep_signals(0, &old_int, &old_term);
  r.be->destroy(r.be);
  free(r.cb);
  if (status == 130) fprintf(stderr, "sqexp run: interrupted; rerun the same command to resume\n");
  else if (rc) fprintf(stderr, "sqexp run: %s\n", e->msg);
  return status;
}

int sweep_run(const sweep_opts *o) {
  sweep_state s;
  memset(&s, 0, sizeof s);
  sq_err e;
  sq_err_clear(&e);
  int status;
  if (sweep_prepare(o, &s, &e) || store_check(s.out_dir, &s.id, o->fresh, &e) || sweep_extra_check(&s, o->fresh, &e)) {
    fprintf(stderr, "sqexp run: %s\n", e.msg);
    status = sweep_exit_code(&e);
  } else if (o->dry_run) {
    sweep_dry_run(&s);
    status = 0;
  } else {
    status = sweep_execute(&s, o, &e);
  }
  sweep_state_free(&s);
  return status;
}

/* ======================================================================================== */
/* The shift and stability experiments (experiments/shift.c, stability.c make their tables).  */
/* Both reuse the steps above (sweep_calibrate, sweep_load_eval, sweep_heads) on other token    */
/* selections and write to their own stores, DIR/shift and DIR/stability (same identity, same  */
/* whole-line atomicity and resume), with the selection in the row key (docs/results.md).      */
