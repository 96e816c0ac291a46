/* cmd_synth.c: `sqexp synth` — write a deterministic synthetic activation dump (synth.h). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cmd.h"
#include "dump.h"
#include "synth.h"
#include "sqexp_git.h" /* SQEXP_GIT: generated at build time */

static void usage(FILE *f) {
  fprintf(f,
          "usage: sqexp synth --shape NAME -o PATH [options]\n"
          "\n"
          "Write a deterministic synthetic activation dump (docs/dump-format.md) with the structure of\n"
          "a real one: keys with a few dominant directions and a power-law tail, values with a flatter\n"
          "spectrum, GQA queries correlated with their keys, RoPE applied to keys and queries.\n"
          "Generated and written one layer at a time; progress is shown when stderr is a terminal.\n"
          "\n"
          "  --shape NAME        %s\n"
          "  -o, --output PATH   file to write (written as PATH.partial, renamed when complete)\n"
          "  --tokens N          total tokens, all sequences (default 8192)\n"
          "  --seq-len L         tokens per sequence; the last may be shorter (default 1024)\n"
          "  --calib-frac F      fraction of sequences, the first ones, that are calibration (default 0.33)\n"
          "  --layers SPEC       stored layers: start:stop[:step] and/or a list, e.g. 0:32:4 or 0,5,9\n"
          "                      (default all)\n"
          "  --dtype T           float16 | bfloat16 | float32 (default float16)\n"
          "  --seed N            default 42\n"
          "  --queries WHICH     eval (queries for evaluation sequences, default) | all\n"
          "  --domains N         label sequences round-robin with N domains (default 1)\n"
          "  --compress LEVEL    gzip level 1..9, or 0 for none (default 4; gzip runs on one core,\n"
          "                      so multi-GB benchmark dumps are written faster with 0)\n"
          "\n"
          "exit status: 0 written, 1 failure while writing, 2 bad options\n",
          synth_shape_names());
}

typedef struct {
  const char *shape, *out, *layers, *dtype, *queries;
  const char *tokens, *seq_len, *calib_frac, *seed, *domains, *compress;
} synth_args;

/* Takes "--name value" or "--name=value"; returns 1 and advances *i when argv[*i] is `name`. */
static int take(int argc, char **argv, int *i, const char *name, const char *alias, const char **val, int *missing) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (!strncmp(a, name, n) && a[n] == '=') {
    *val = a + n + 1;
    return 1;
  }
  if (strcmp(a, name) && !(alias && !strcmp(a, alias))) return 0;
  if (*i + 1 >= argc) *missing = 1;
  else *val = argv[++*i];
  return 1;
}

static int parse_args(int argc, char **argv, synth_args *a, char *msg, size_t n) {
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    if (take(argc, argv, &i, "--shape", NULL, &a->shape, &missing) ||
        take(argc, argv, &i, "--output", "-o", &a->out, &missing) ||
        take(argc, argv, &i, "--tokens", NULL, &a->tokens, &missing) ||
        take(argc, argv, &i, "--seq-len", NULL, &a->seq_len, &missing) ||
        take(argc, argv, &i, "--calib-frac", NULL, &a->calib_frac, &missing) ||
        take(argc, argv, &i, "--layers", NULL, &a->layers, &missing) ||
        take(argc, argv, &i, "--dtype", NULL, &a->dtype, &missing) ||
        take(argc, argv, &i, "--seed", NULL, &a->seed, &missing) ||
        take(argc, argv, &i, "--queries", NULL, &a->queries, &missing) ||
        take(argc, argv, &i, "--domains", NULL, &a->domains, &missing) ||
        take(argc, argv, &i, "--compress", NULL, &a->compress, &missing)) {
      if (missing) {
        snprintf(msg, n, "%s needs a value (see sqexp synth --help)", argv[i]);
        return 2;
      }
      continue;
    }
    snprintf(msg, n, "unknown option '%s' (see sqexp synth --help)", argv[i]);
    return 2;
  }
  return 0;
}

static int parse_i64(const char *s, const char *opt, int64_t lo, int64_t hi, int64_t *out, char *msg, size_t n) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    snprintf(msg, n, "%s: '%s' is not an integer in [%lld, %lld]", opt, s, (long long)lo, (long long)hi);
    return 2;
  }
  *out = v;
  return 0;
}

static int build_opts(const synth_args *a, synth_opts *o, char *msg, size_t n) {
  memset(o, 0, sizeof *o);
  if (!a->shape || !a->out) {
    snprintf(msg, n, "--shape and -o are required (see sqexp synth --help)");
    return 2;
  }
  if (synth_find_shape(a->shape, &o->shape)) {
    snprintf(msg, n, "--shape: unknown shape '%s' (known: %s)", a->shape, synth_shape_names());
    return 2;
  }
  int64_t v;
  o->n_tokens = 8192, o->seq_len = 1024, o->calib_frac = 0.33, o->seed = 42, o->n_domains = 1;
  if (a->tokens) { if (parse_i64(a->tokens, "--tokens", 1, (int64_t)1 << 32, &v, msg, n)) return 2; o->n_tokens = v; }
  if (a->seq_len) { if (parse_i64(a->seq_len, "--seq-len", 1, 1 << 20, &v, msg, n)) return 2; o->seq_len = (int)v; }
  if (a->domains) { if (parse_i64(a->domains, "--domains", 1, 1000, &v, msg, n)) return 2; o->n_domains = (int)v; }
  if (a->compress) { if (parse_i64(a->compress, "--compress", 0, 9, &v, msg, n)) return 2; o->gzip_level = v ? (int)v : -1; }
  if (a->seed) { if (parse_i64(a->seed, "--seed", 0, INT64_MAX, &v, msg, n)) return 2; o->seed = (uint64_t)v; }
  if (a->calib_frac) {
    char *end;
    o->calib_frac = strtod(a->calib_frac, &end);
    if (end == a->calib_frac || *end || !(o->calib_frac >= 0 && o->calib_frac <= 1)) {
      snprintf(msg, n, "--calib-frac: '%s' is not a number in [0, 1]", a->calib_frac);
      return 2;
    }
  }
  o->dtype = a->dtype ? dump_dtype_parse(a->dtype) : DUMP_F16;
  if (o->dtype < 0) {
    snprintf(msg, n, "--dtype: '%s' is not float16, bfloat16 or float32", a->dtype);
    return 2;
  }
  if (a->queries && strcmp(a->queries, "eval") && strcmp(a->queries, "all")) {
    snprintf(msg, n, "--queries: '%s' is not eval or all", a->queries);
    return 2;
  }
  o->queries_all = a->queries && !strcmp(a->queries, "all");
  if (a->layers) {
    sq_err e;
    sq_err_clear(&e);
    if (dump_parse_layers(a->layers, o->shape.n_layers, "--layers", &o->layers, &o->n_sel_layers, &e)) {
      snprintf(msg, n, "%s", e.msg);
      return 2;
    }
  }
  return 0;
}

static char *provenance_json(const synth_opts *o, int argc, char **argv) {
  json_t *args = json_array();
  for (int i = 0; i < argc; i++) json_array_append_new(args, json_string(argv[i]));
  char when[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:i, s:i, s:i, s:i}, s:I, s:I, s:i, s:f, s:s, s:o}",
                        "tool", "sqexp synth", "version", SQEXP_VERSION, "git", SQEXP_GIT, "created", when,
                        "shape", "name", o->shape.name, "n_layers", o->shape.n_layers, "n_q_heads",
                        o->shape.n_q_heads, "n_kv_heads", o->shape.n_kv_heads, "head_dim", o->shape.head_dim,
                        "seed", (json_int_t)o->seed, "tokens", (json_int_t)o->n_tokens, "seq_len", o->seq_len,
                        "calib_frac", o->calib_frac, "queries", o->queries_all ? "all" : "eval", "args", args);
  char *s = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
  json_decref(j);
  return s;
}

/* Bad -o is bad input (exit 2), found before any work rather than as an HDF5 create failure. */
static int output_dir_unwritable(const char *out, char *msg, size_t n) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", out);
  char *slash = strrchr(dir, '/');
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == dir) dir[1] = '\0';
  else *slash = '\0';
  if (access(dir, W_OK) == 0) return 0;
  snprintf(msg, n, "-o %s: cannot write into directory %s (%s)", out, dir, strerror(errno));
  return 2;
}

typedef struct {
  struct timespec start;
} progress_ctx;

static void show_progress(void *vctx, int done, int total) {
  progress_ctx *c = vctx;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  double el = (double)(now.tv_sec - c->start.tv_sec) + 1e-9 * (double)(now.tv_nsec - c->start.tv_nsec);
  if (done == 0) {
    fprintf(stderr, "\rsqexp synth: generating layer 1/%d ...", total);
    return;
  }
  double eta = el * (total - done) / done;
  fprintf(stderr, "\rsqexp synth: layer %d/%d written, %.0fs elapsed, ETA %.0fs   ", done, total, el, eta);
  if (done == total) fprintf(stderr, "\n");
}

int cmd_synth(int argc, char **argv) {
  if (cmd_wants_help(argc, argv)) {
    usage(stdout);
    return 0;
  }
  synth_args a;
  memset(&a, 0, sizeof a);
  synth_opts o;
  char msg[sizeof(sq_err)];
  if (parse_args(argc, argv, &a, msg, sizeof msg) || build_opts(&a, &o, msg, sizeof msg)) {
    free(o.layers);
    return cmd_error("synth", 2, msg);
  }
  if (output_dir_unwritable(a.out, msg, sizeof msg)) {
    free(o.layers);
    return cmd_error("synth", 2, msg);
  }
  char *prov = provenance_json(&o, argc, argv);
  progress_ctx pc;
  clock_gettime(CLOCK_MONOTONIC, &pc.start);
  sq_err e;
  sq_err_clear(&e);
  int rc = synth_write(&o, a.out, prov, isatty(STDERR_FILENO) ? show_progress : NULL, &pc, &e);
  free(prov);
  free(o.layers);
  if (rc) return cmd_error("synth", rc == SQ_EINPUT ? 2 : 1, e.msg);
  return 0;
}
