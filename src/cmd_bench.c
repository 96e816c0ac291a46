/* cmd_bench.c: `sqexp bench` — per-kernel time and bandwidth against the copy bandwidth measured
 * in the same run, on Mistral-shaped synthetic data (8 KV heads, 32 query heads, D = 128).
 *   CUDA (a GPU visible): copy bandwidth; encode / decode of a layer batch of >= 1 GiB per plan
 *     kind with achieved GB/s (bytes read + written) as a fraction of copy; the projection's
 *     precision table (fp64 vs fp32 vs TF32); moments; the reference attention (load_layer) and
 *     eval (fused attention + metrics) per (plan, KV head) with causal pairs per second; the
 *     throughput this implies for configs/mistral.ini's grid.
 *   CPU (no GPU, or --backend cpu): the same API-level numbers from the reference backend, on a
 *     smaller default size, labelled as CPU numbers.
 * The table goes to stdout and to FILE (default bench/bench-<host>.txt), written whole at the end
 * (FILE.partial until then). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "calib.h"
#include "cfg.h"
#include "cmd.h"
#include "codebook.h"
#include "kern.h"
#include "plan.h"
#include "rng.h"
#if SQEXP_HAVE_CUDA
#include "cuda/kcuda_bench.cuh"
#endif
#include "sqexp_git.h" /* SQEXP_GIT: generated at build time */

#define HKV 8
#define HQ 32
#define DIM 128
#define NPLAN 6

typedef struct {
  const char *out;
  int64_t tokens;      /* eval tokens of the synthetic layer (and per layer of the encode batch) */
  int layers;          /* layers of the encode batch */
  int64_t seq_len;
  int backend;
  int encode_only;     /* --only encode: copy bandwidth and the encoders, nothing else */
} bench_opts;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: sqexp bench [--out FILE] [--tokens N] [--layers N] [--seq-len N] [--backend auto|cpu|cuda]\n"
          "                   [--only encode]\n"
          "  Times the kernels on Mistral-shaped synthetic data and writes the table to stdout and FILE\n"
          "  (default bench/bench-<host>.txt).\n"
          "  --tokens N   evaluation tokens of the synthetic layer, also tokens per layer of the encode\n"
          "               batch (default 16384 with CUDA, 1024 on the CPU)\n"
          "  --layers N   layers in the encode batch (default 16: 16 x 16384 x 8 x 128 floats = 1 GiB)\n"
          "  --seq-len N  tokens per evaluation sequence (default 2048, capped at --tokens)\n"
          "  --backend B  auto (CUDA when a GPU is visible) | cpu | cuda\n"
          "  --only encode  GPU: the copy bandwidth and the encoders (exact and fast) alone, no decode,\n"
          "               precision table or eval (quick runs while tuning the fast encoder)\n");
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (!*s || *end || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_args(int argc, char **argv, bench_opts *o) {
  char msg[512];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int64_t v;
    if (i + 1 >= argc) {
      snprintf(msg, sizeof msg, "'%s' is not an option or needs a value (see sqexp bench --help)", a);
      return cmd_error("bench", 2, msg);
    }
    const char *val = argv[++i];
    if (!strcmp(a, "--out")) o->out = val;
    else if (!strcmp(a, "--backend")) {
      if (!strcmp(val, "auto")) o->backend = CFG_BACKEND_AUTO;
      else if (!strcmp(val, "cpu")) o->backend = CFG_BACKEND_CPU;
      else if (!strcmp(val, "cuda")) o->backend = CFG_BACKEND_CUDA;
      else {
        snprintf(msg, sizeof msg, "--backend '%s' (expected auto, cpu or cuda)", val);
        return cmd_error("bench", 2, msg);
      }
    } else if (!strcmp(a, "--tokens") || !strcmp(a, "--layers") || !strcmp(a, "--seq-len")) {
      if (parse_i64(val, 1, (int64_t)1 << 22, &v)) {
        snprintf(msg, sizeof msg, "%s '%s' (expected an integer 1..4194304)", a, val);
        return cmd_error("bench", 2, msg);
      }
      if (!strcmp(a, "--tokens")) o->tokens = v;
      else if (!strcmp(a, "--layers")) o->layers = (int)v;
      else o->seq_len = v;
    } else if (!strcmp(a, "--only")) {
      if (strcmp(val, "encode")) {
        snprintf(msg, sizeof msg, "--only '%s' (expected encode)", val);
        return cmd_error("bench", 2, msg);
      }
      o->encode_only = 1;
    } else {
      snprintf(msg, sizeof msg, "unknown option '%s' (see sqexp bench --help)", a);
      return cmd_error("bench", 2, msg);
    }
  }
  return 0;
}

/* A Mistral-shaped synthetic layer: per-coordinate scales decaying like post-RoPE keys (a few
 * dominant directions), a key offset, queries correlated with the dominant key directions. */
typedef struct {
  int64_t n_tok;
  int n_seq;
  int64_t *seq_off;
  float *k, *v, *q, *randq;
  kern_layer L;
} syn_layer;

static void syn_make(syn_layer *s, int64_t n_tok, int64_t seq_len) {
  s->n_tok = n_tok;
  s->n_seq = (int)((n_tok + seq_len - 1) / seq_len);
  s->seq_off = sq_xmalloc((size_t)(s->n_seq + 1) * sizeof(int64_t));
  for (int i = 0; i <= s->n_seq; i++) s->seq_off[i] = (int64_t)i * seq_len < n_tok ? (int64_t)i * seq_len : n_tok;
  s->k = sq_xmalloc((size_t)(n_tok * HKV * DIM) * sizeof(float));
  s->v = sq_xmalloc((size_t)(n_tok * HKV * DIM) * sizeof(float));
  s->q = sq_xmalloc((size_t)(n_tok * HQ * DIM) * sizeof(float));
  s->randq = sq_xmalloc((size_t)((int64_t)HKV * s->n_seq * 8 * DIM) * sizeof(float));
  rng_t r;
  rng_seed(&r, 2026);
  double sc[DIM];
  for (int d = 0; d < DIM; d++) sc[d] = 0.08 + 2.5 * exp(-d / 6.0);
  for (int64_t t = 0; t < n_tok; t++) {
    for (int h = 0; h < HKV; h++) {
      float *k = s->k + (t * HKV + h) * DIM, *v = s->v + (t * HKV + h) * DIM;
      for (int d = 0; d < DIM; d++) {
        k[d] = (float)(rng_normal(&r) * sc[d] + (d == 1 ? 1.5 : 0.0));
        v[d] = (float)(rng_normal(&r) * (0.3 + exp(-d / 40.0)));
      }
    }
    for (int g = 0; g < HQ; g++) {
      float *q = s->q + (t * HQ + g) * DIM;
      for (int d = 0; d < DIM; d++) q[d] = (float)(rng_normal(&r) * sc[d]);
    }
  }
  for (int64_t i = 0; i < (int64_t)HKV * s->n_seq * 8 * DIM; i++) s->randq[i] = (float)rng_normal(&r);
  memset(&s->L, 0, sizeof s->L);
  s->L.layer = 0;
  s->L.n_kv_heads = HKV;
  s->L.n_q_heads = HQ;
  s->L.head_dim = DIM;
  s->L.n_seq = s->n_seq;
  s->L.seq_off = s->seq_off;
  s->L.n_tok = n_tok;
  s->L.k = s->k;
  s->L.v = s->v;
  s->L.q = s->q;
  s->L.n_randq = 8;
  s->L.randq = s->randq;
  s->L.protocols = PROTO_ATTN | PROTO_RANDQ | PROTO_PROBS;
  s->L.probs_last = 4;
  s->L.topk = 8;
}

static void syn_free(syn_layer *s) {
  free(s->seq_off), free(s->k), free(s->v), free(s->q), free(s->randq);
}

static plan_knobs knob(int arm, int bits) { return plan_knobs_defaults(arm, bits); }

/* The bench's plan kinds: tq mse, tq prod (QJL), sq, sq + QJL, sq_paper_v1, lowrank. */
static void bench_knobs(plan_knobs *k) {
  k[0] = knob(ARM_TQ, 3), k[0].tq_variant = TQ_MSE;
  k[1] = knob(ARM_TQ, 3);
  k[2] = knob(ARM_SQ, 3);
  k[3] = knob(ARM_SQ, 3), k[3].use_qjl = 1;
  k[4] = knob(ARM_SQV1, 3);
  k[5] = knob(ARM_LOWRANK, 0);
}

/* Grid points per (layer, KV head) of configs/mistral.ini, or 0 when it cannot be read. */
static int mistral_grid(void) {
  cfg_t c;
  sq_err e = {0};
  memset(&c, 0, sizeof c);
  if (cfg_load(&c, "configs/mistral.ini", &e)) return 0;
  plan_knobs *kn = NULL;
  int n = 0;
  if (plan_grid(&c, &kn, &n, &e)) n = 0;
  free(kn);
  cfg_free(&c);
  return n;
}

typedef struct {
  FILE *f;
  char path[1100];
} out_t;

/* Everything after the device table: moments, reference, eval, throughput. */
static int api_rows(kern_backend *b, syn_layer *s, const cb_table *cb, FILE *f, sq_err *e) {
  int64_t n_cal = s->n_tok < 8192 ? s->n_tok : 8192;
  double *Ck = sq_xmalloc(sizeof(double) * HKV * DIM * DIM), *Cv = sq_xmalloc(sizeof(double) * HKV * DIM * DIM);
  double t0 = now_s();
  int rc = b->moments(b, s->k, n_cal, HKV, DIM, 0, Ck, e);
  double t_mom = now_s() - t0;
  if (!rc) rc = b->moments(b, s->v, n_cal, HKV, DIM, 0, Cv, e);
  if (rc) goto done;
  double mb = (double)n_cal * HKV * DIM * 4 / 1e6;
  fprintf(f, "moments  %lld tokens x %d heads (API: host data in, C out) %9.2f ms  (%.0f MB in)\n",
          (long long)n_cal, HKV, 1e3 * t_mom, mb);
  calib_head ck[HKV], cv[HKV];
  memset(ck, 0, sizeof ck);
  memset(cv, 0, sizeof cv);
  for (int h = 0; h < HKV && !rc; h++) {
    rc = calib_from_moment(Ck + (int64_t)h * DIM * DIM, DIM, n_cal, &ck[h], e);
    if (!rc) rc = calib_from_moment(Cv + (int64_t)h * DIM * DIM, DIM, n_cal, &cv[h], e);
  }
  plan_knobs kn[NPLAN];
  bench_knobs(kn);
  plan_pair *pp = sq_xcalloc((size_t)HKV * NPLAN, sizeof *pp);
  for (int h = 0; h < HKV && !rc; h++)
    for (int p = 0; p < NPLAN && !rc; p++) rc = plan_build(&pp[h * NPLAN + p], &kn[p], &ck[h], &cv[h], 0, h, 42, e);
  if (!rc) {
    t0 = now_s();
    rc = b->load_layer(b, &s->L, e);
    double t_ref = now_s() - t0;
    double pairs = 0;
    for (int i = 0; i < s->n_seq; i++) {
      double len = (double)(s->seq_off[i + 1] - s->seq_off[i]);
      pairs += len * (len + 1) / 2;
    }
    pairs *= HQ / HKV; /* per KV head: its query heads */
    if (!rc)
      fprintf(f, "reference load_layer  %lld tokens, %d seqs (upload + o_ref + top-k, all %d q heads) %9.2f ms  %.2f G pairs/s\n",
              (long long)s->n_tok, s->n_seq, HQ, 1e3 * t_ref, pairs * HKV / t_ref / 1e9);
    const plan_pair *ptr[NPLAN];
    kern_metrics m[NPLAN];
    double t_eval = 0;
    for (int h = 0; h < HKV && !rc; h++) {
      for (int p = 0; p < NPLAN; p++) ptr[p] = &pp[h * NPLAN + p];
      t0 = now_s();
      rc = b->eval(b, h, NPLAN, ptr, cb, m, e);
      t_eval += now_s() - t0;
      if (!rc && h == 0)
        for (int p = 0; p < NPLAN; p++)
          fprintf(f, "  metrics head 0 %-44s attn %.4f randq %.4f probs %.4f topk %.3f bias %+.4f slope %.4f\n",
                  pp[p].key, m[p].attn_cos, m[p].randq_cos, m[p].probs_cos, m[p].topk_recall,
                  m[p].logit_bias, m[p].logit_slope);
    }
    if (!rc) {
      double per = t_eval / (HKV * NPLAN);
      fprintf(f, "eval     %d plans x %d KV heads (encode+decode K,V; attn+probs+randq; metrics) %9.2f ms per (plan, head)  %.2f G pairs/s\n",
              NPLAN, HKV, 1e3 * per, pairs / per / 1e9);
      int grid = mistral_grid();
      if (grid > 0)
        fprintf(f, "sweep    configs/mistral.ini: %d grid points x 32 layers x %d KV heads at %lld eval tokens: "
                "%.1f s eval + %.1f s reference (projected from the rows above)\n",
                grid, HKV, (long long)s->n_tok, per * grid * 32 * HKV, t_ref * 32);
    }
  }
  for (int i = 0; i < HKV * NPLAN; i++) plan_pair_free(&pp[i]);
  free(pp);
  for (int h = 0; h < HKV; h++) calib_head_free(&ck[h]), calib_head_free(&cv[h]);
done:
  free(Ck), free(Cv);
  return rc;
}

#if SQEXP_HAVE_CUDA
/* Device table: K sides of tq mse, tq prod, sq for every head (the calibration of head h from the
 * synthetic layer's own keys). */
static int device_rows(kern_backend *b, syn_layer *s, const cb_table *cb, const bench_opts *o, FILE *f,
                       sq_err *e) {
  int64_t n_cal = s->n_tok < 8192 ? s->n_tok : 8192;
  calib_head ck[HKV], cv[HKV];
  memset(ck, 0, sizeof ck);
  memset(cv, 0, sizeof cv);
  int rc = SQ_OK;
  for (int h = 0; h < HKV && !rc; h++) {
    rc = calib_compute(s->k + h * DIM, n_cal, HKV * DIM, DIM, 0, &ck[h], e);
    if (!rc) rc = calib_compute(s->v + h * DIM, n_cal, HKV * DIM, DIM, 0, &cv[h], e);
  }
  plan_knobs kn[NPLAN];
  bench_knobs(kn);
  int use[3] = {0, 1, 2};
  plan_pair pp[3][HKV];
  memset(pp, 0, sizeof pp);
  const plan_side *sides[3 * HKV];
  const char *names[3];
  for (int p = 0; p < 3 && !rc; p++)
    for (int h = 0; h < HKV && !rc; h++) {
      rc = plan_build(&pp[p][h], &kn[use[p]], &ck[h], &cv[h], 0, h, 42, e);
      sides[p * HKV + h] = &pp[p][h].k;
      names[p] = p == 0 ? "tq mse b3 (K)" : p == 1 ? "tq prod b3 (K, QJL)" : "sq b3 wf (K)";
    }
  if (!rc) {
    kc_bench_opts bo = {.tokens = o->tokens, .layers = o->layers, .H = HKV, .D = DIM, .n_plans = 3,
                        .plan_names = names, .sides = sides, .encode_only = o->encode_only};
    rc = kc_bench_device(b, cb, &bo, f, e);
  }
  for (int p = 0; p < 3; p++)
    for (int h = 0; h < HKV; h++) plan_pair_free(&pp[p][h]);
  for (int h = 0; h < HKV; h++) calib_head_free(&ck[h]), calib_head_free(&cv[h]);
  return rc;
}
#endif

/* CPU: encode/decode of one layer's keys through the API, wall clock. */
static int cpu_codec_rows(kern_backend *b, syn_layer *s, const cb_table *cb, FILE *f, sq_err *e) {
  calib_head ck, cv;
  int64_t n_cal = s->n_tok < 8192 ? s->n_tok : 8192;
  int rc = calib_compute(s->k, n_cal, HKV * DIM, DIM, 0, &ck, e);
  if (!rc) rc = calib_compute(s->v, n_cal, HKV * DIM, DIM, 0, &cv, e);
  if (rc) return rc;
  plan_knobs kn[NPLAN];
  bench_knobs(kn);
  for (int p = 0; p < 3 && !rc; p++) {
    plan_pair pp;
    rc = plan_build(&pp, &kn[p], &ck, &cv, 0, 0, 42, e);
    if (rc) break;
    int64_t n = s->n_tok * HKV;
    uint8_t *codes = sq_xmalloc((size_t)(n * pp.k.code_bytes));
    float *xh = sq_xmalloc((size_t)(n * DIM) * sizeof(float));
    double t0 = now_s();
    rc = b->encode(b, &pp.k, cb, s->k, n, DIM, codes, e);
    double te = now_s() - t0;
    t0 = now_s();
    if (!rc) rc = b->decode(b, &pp.k, cb, codes, n, xh, e);
    double td = now_s() - t0;
    double bytes = (double)n * (DIM * 4 + pp.k.code_bytes);
    if (!rc)
      fprintf(f, "encode/decode %-44s %6.1f MB: encode %8.2f ms %6.2f GB/s, decode %8.2f ms %6.2f GB/s\n",
              pp.key, (double)n * DIM * 4 / 1e6, 1e3 * te, bytes / te / 1e9, 1e3 * td, bytes / td / 1e9);
    free(codes), free(xh);
    plan_pair_free(&pp);
  }
  calib_head_free(&ck), calib_head_free(&cv);
  return rc;
}

int cmd_bench(int argc, char **argv) {
  if (cmd_wants_help(argc, argv)) {
    usage(stdout);
    return 0;
  }
  bench_opts o = {.out = NULL, .tokens = 0, .layers = 16, .seq_len = 2048, .backend = CFG_BACKEND_AUTO,
                  .encode_only = 0};
  int rc = parse_args(argc, argv, &o);
  if (rc) return rc;
  sq_err e = {0};
  kern_backend *b = NULL;
  if (kern_create(&b, o.backend, 0, &e)) return cmd_error("bench", 1, e.msg);
  int cuda = !strcmp(b->name, "cuda");
  if (!o.tokens) o.tokens = cuda ? 16384 : 1024;
  if (o.seq_len > o.tokens) o.seq_len = o.tokens;
  char host[256] = "unknown", defpath[512];
  gethostname(host, sizeof host - 1);
  snprintf(defpath, sizeof defpath, "bench/bench-%s.txt", host);
  out_t out;
  snprintf(out.path, sizeof out.path, "%s.partial", o.out ? o.out : defpath);
  out.f = fopen(out.path, "w");
  if (!out.f) {
    b->destroy(b);
    char msg[1300];
    snprintf(msg, sizeof msg, "cannot write %s", out.path);
    return cmd_error("bench", 2, msg);
  }
  /* every row goes to the file; the file is printed to stdout at the end */
  time_t now = time(NULL);
  char when[64];
  strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
  const char *attn = getenv("SQEXP_CUDA_ATTN");
  fprintf(out.f, "sqexp bench  %s (git %s)  host %s  %s\nbackend %s%s%s%s\n", SQEXP_VERSION, SQEXP_GIT, host,
          when, b->name, cuda ? "" : "  (CPU reference numbers: no CUDA GPU used)",
          cuda && attn ? "  SQEXP_CUDA_ATTN=" : "", cuda && attn ? attn : "");
  fprintf(out.f, "synthetic Mistral-shaped layer: %lld eval tokens, seq_len %lld, %d KV / %d q heads, D %d\n",
          (long long)o.tokens, (long long)o.seq_len, HKV, HQ, DIM);
  cb_table *cb = sq_xmalloc(sizeof *cb);
  syn_layer s;
  rc = cb_table_build(cb, DIM, &e);
  syn_make(&s, o.tokens, o.seq_len);
#if SQEXP_HAVE_CUDA
  if (!rc && cuda) rc = device_rows(b, &s, cb, &o, out.f, &e);
#endif
  if (!rc && !cuda) rc = cpu_codec_rows(b, &s, cb, out.f, &e);
  if (!rc && !(cuda && o.encode_only)) rc = api_rows(b, &s, cb, out.f, &e);
  syn_free(&s);
  free(cb);
  b->destroy(b);
  fclose(out.f);
  if (rc) {
    remove(out.path);
    return cmd_error("bench", 1, e.msg);
  }
  char final[1100];
  snprintf(final, sizeof final, "%s", o.out ? o.out : defpath);
  if (rename(out.path, final)) return cmd_error("bench", 1, "cannot rename the output into place");
  FILE *f = fopen(final, "r");
  if (f) {
    char line[1024];
    while (fgets(line, sizeof line, f)) fputs(line, stdout);
    fclose(f);
  }
  fprintf(stderr, "sqexp bench: wrote %s\n", final);
  return 0;
}
