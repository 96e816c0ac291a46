/* cmd_inspect.c: `sqexp inspect DUMP` — validate an activation dump and print what it holds,
 * streaming one layer at a time (peak memory = one layer in float32 + one read slab). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "cmd.h"
#include "dump.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: sqexp inspect DUMP [--allow-nonfinite] [--layers SPEC]\n"
          "\n"
          "Validate an activation dump (docs/dump-format.md) and print its model attributes, provenance,\n"
          "shapes, dtype, sequence/split/domain counts, and per stored layer the mean and max L2 norm of\n"
          "the K, V and Q vectors and the count of non-finite values. Reads one layer at a time.\n"
          "\n"
          "  --allow-nonfinite   count NaN/Inf instead of refusing the dump\n"
          "  --layers SPEC       model layers to read (start:stop[:step] and/or a list); default all\n"
          "\n"
          "exit status: 0 valid, 1 read failure (I/O), 2 invalid dump or bad options\n");
}

typedef struct {
  double sum, max;
  int64_t n_vec, n_nonfinite;
} norm_stat;

/* L2 norms of n vectors of length D; vectors holding NaN/Inf are counted, not averaged. */
static norm_stat norms(const float *x, int64_t n, int D) {
  norm_stat s = {0, 0, 0, 0};
  for (int64_t i = 0; i < n; i++) {
    const float *v = x + i * D;
    double ss = 0;
    int64_t bad = 0;
    for (int j = 0; j < D; j++) {
      if (!isfinite(v[j])) bad++;
      else ss += (double)v[j] * v[j];
    }
    s.n_nonfinite += bad;
    if (bad) continue;
    double nrm = sqrt(ss);
    s.sum += nrm;
    if (nrm > s.max) s.max = nrm;
    s.n_vec++;
  }
  return s;
}

static void print_provenance(const char *text) {
  json_error_t err;
  json_t *j = json_loads(text ? text : "", 0, &err);
  char *pretty = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12)) : NULL;
  const char *out = pretty ? pretty : text;
  printf("provenance%s\n", pretty ? "" : " (not valid JSON, printed as stored)");
  for (const char *line = out; line && *line;) {
    const char *nl = strchr(line, '\n');
    int len = nl ? (int)(nl - line) : (int)strlen(line);
    printf("  %.*s\n", len, line);
    line = nl ? nl + 1 : line + len;
  }
  free(pretty);
  json_decref(j);
}

static void print_header(const dump_t *d) {
  struct stat st;
  double gib = stat(d->path, &st) == 0 ? (double)st.st_size / (1024.0 * 1024 * 1024) : 0;
  printf("file          %s (%.3f GiB)\n", d->path, gib);
  printf("format        %s, version %d\n", DUMP_FORMAT_NAME, DUMP_FORMAT_VERSION);
  printf("model_id      %s\n", d->model_id);
  printf("model         %d layers, %d query heads, %d KV heads (GQA group %d), head_dim %d\n", d->n_layers,
         d->n_q_heads, d->n_kv_heads, d->n_q_heads / d->n_kv_heads, d->head_dim);
  printf("rope          %s (k, q stored %s RoPE)%s\n", d->rope, d->kq_post_rope ? "after" : "before",
         d->has_pre_rope ? "; pre-RoPE k_pre/q_pre present" : "");
  printf("dtype         %s\n", dump_dtype_name(d->dtype));
  printf("stored layers %d:", d->n_dump_layers);
  for (int i = 0; i < d->n_dump_layers; i++) printf("%s%d", i ? "," : " ", d->layers[i]);
  printf("\n");
  int64_t tok[2] = {0, 0}, qrows[2] = {0, 0};
  int nseq[2] = {0, 0};
  for (int s = 0; s < d->n_seq; s++) {
    nseq[d->split[s]]++;
    tok[d->split[s]] += d->seq_off[s + 1] - d->seq_off[s];
    qrows[d->split[s]] += d->q_off[s + 1] - d->q_off[s];
  }
  printf("sequences     %d: %d calibration (%lld tokens, %lld query rows), %d evaluation (%lld tokens, %lld query "
         "rows)\n", d->n_seq, nseq[0], (long long)tok[0], (long long)qrows[0], nseq[1], (long long)tok[1],
         (long long)qrows[1]);
  printf("tokens        T = %lld, query rows T_q = %lld\n", (long long)d->n_tokens, (long long)d->n_q_rows);
  printf("domains       %d:", d->n_domains);
  for (int k = 0; k < d->n_domains; k++) {
    int ns = 0;
    int64_t nt = 0;
    for (int s = 0; s < d->n_seq; s++)
      if (d->domain[s] == k) ns++, nt += d->seq_off[s + 1] - d->seq_off[s];
    printf("%s %s (%d sequences, %lld tokens)", k ? "," : "", d->domain_names[k], ns, (long long)nt);
  }
  printf("\n");
  printf("datasets      k, v [%lld, %d, %d]   q [%lld, %d, %d]   (per stored layer, /layers/<L>/)\n",
         (long long)d->n_tokens, d->n_kv_heads, d->head_dim, (long long)d->n_q_rows, d->n_q_heads, d->head_dim);
  print_provenance(d->provenance);
}

static int select_layers(const dump_t *d, const char *spec, int **idx, int *n, char *msg, size_t mn) {
  if (!spec) {
    *idx = sq_xmalloc((size_t)d->n_dump_layers * sizeof(int));
    for (int i = 0; i < d->n_dump_layers; i++) (*idx)[i] = i;
    *n = d->n_dump_layers;
    return 0;
  }
  sq_err e;
  sq_err_clear(&e);
  int *layers = NULL;
  if (dump_parse_layers(spec, d->n_layers, "--layers", &layers, n, &e)) {
    snprintf(msg, mn, "%s", e.msg);
    return 2;
  }
  *idx = layers; /* reuse the array: map model layer -> stored index in place */
  for (int i = 0; i < *n; i++) {
    int at = dump_find_layer(d, layers[i]);
    if (at < 0) {
      snprintf(msg, mn, "--layers: layer %d is not stored in %s", layers[i], d->path);
      return 2;
    }
    layers[i] = at;
  }
  return 0;
}

static int print_layers(dump_t *d, const int *idx, int n, sq_err *e) {
  printf("\n%5s %10s %10s %10s %10s %10s %10s  %s\n", "layer", "|k| mean", "|k| max", "|v| mean", "|v| max",
         "|q| mean", "|q| max", "non-finite k/v/q");
  dump_layer l;
  memset(&l, 0, sizeof l);
  int rc = SQ_OK;
  for (int i = 0; i < n && !rc; i++) {
    rc = dump_read_layer(d, idx[i], &l, e);
    if (rc) break;
    int D = d->head_dim;
    norm_stat k = norms(l.k, l.n_tokens * l.n_kv_heads, D), v = norms(l.v, l.n_tokens * l.n_kv_heads, D),
              q = norms(l.q, l.n_q_rows * l.n_q_heads, D);
    printf("%5d %10.4f %10.4f %10.4f %10.4f %10.4f %10.4f  %lld/%lld/%lld\n", l.layer, k.n_vec ? k.sum / k.n_vec : 0,
           k.max, v.n_vec ? v.sum / v.n_vec : 0, v.max, q.n_vec ? q.sum / q.n_vec : 0, q.max,
           (long long)k.n_nonfinite, (long long)v.n_nonfinite, (long long)q.n_nonfinite);
    fflush(stdout);
  }
  dump_layer_free(&l);
  return rc;
}

int cmd_inspect(int argc, char **argv) {
  if (cmd_wants_help(argc, argv)) {
    usage(stdout);
    return 0;
  }
  const char *path = NULL, *spec = NULL;
  int allow = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--allow-nonfinite")) allow = 1;
    else if (!strcmp(argv[i], "--layers")) {
      if (i + 1 >= argc) return cmd_error("inspect", 2, "--layers needs a value (see sqexp inspect --help)");
      spec = argv[++i];
    }
    else if (!strncmp(argv[i], "--layers=", 9)) spec = argv[i] + 9;
    else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "sqexp inspect: unknown option '%s' (see sqexp inspect --help)\n", argv[i]);
      return 2;
    } else if (path) return cmd_error("inspect", 2, "give exactly one DUMP (see sqexp inspect --help)");
    else path = argv[i];
  }
  if (!path) return cmd_error("inspect", 2, "missing DUMP (see sqexp inspect --help)");
  dump_t d;
  sq_err e;
  sq_err_clear(&e);
  int rc = dump_open(&d, path, allow, &e);
  if (rc) return cmd_error("inspect", rc == SQ_EINPUT ? 2 : 1, e.msg);
  int *idx = NULL, n = 0;
  char msg[sizeof(sq_err)];
  if (select_layers(&d, spec, &idx, &n, msg, sizeof msg)) {
    free(idx);
    dump_close(&d);
    return cmd_error("inspect", 2, msg);
  }
  print_header(&d);
  rc = print_layers(&d, idx, n, &e);
  free(idx);
  dump_close(&d);
  if (rc) {
    fflush(stdout);
    return cmd_error("inspect", rc == SQ_EINPUT ? 2 : 1, e.msg);
  }
  return 0;
}
