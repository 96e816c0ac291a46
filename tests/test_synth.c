/* test_synth: synthetic dumps are deterministic and have the structure of real ones: keys
 * concentrated on a few directions (top-5 eigenvalue share measured with GSL's symmetric
 * eigensolver, not our code), values much flatter, queries aligned with their KV head's dominant
 * key directions, RoPE a norm-preserving rotation that composes additively in position. */
#include <sys/stat.h>
#include <criterion/criterion.h>
#include <gsl/gsl_eigen.h>
#include <gsl/gsl_matrix.h>
#include <gsl/gsl_sort_vector.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "dump.h"
#include "synth.h"
#include "util/tu_tmp.h"

static synth_opts small_opts(uint64_t seed) {
  synth_opts o;
  memset(&o, 0, sizeof o);
  cr_assert_eq(synth_find_shape("smollm2-135m", &o.shape), 0);
  o.n_tokens = 1000, o.seq_len = 256, o.calib_frac = 0.33, o.dtype = DUMP_F32, o.seed = seed, o.n_domains = 2;
  return o;
}

static int same_layer(const dump_layer *a, const dump_layer *b) {
  size_t kv = (size_t)(a->n_tokens * a->n_kv_heads * a->head_dim), q = (size_t)(a->n_q_rows * a->n_q_heads * a->head_dim);
  return a->n_tokens == b->n_tokens && a->n_q_rows == b->n_q_rows && !memcmp(a->k, b->k, kv * 4) &&
         !memcmp(a->v, b->v, kv * 4) && !memcmp(a->q, b->q, q * 4);
}

Test(synth, shapes) {
  synth_shape s;
  cr_assert_eq(synth_find_shape("mistral-7b", &s), 0);
  cr_expect(s.n_layers == 32 && s.n_q_heads == 32 && s.n_kv_heads == 8 && s.head_dim == 128);
  cr_assert_eq(synth_find_shape("qwen2.5-1.5b", &s), 0);
  cr_expect(s.n_layers == 28 && s.n_q_heads == 12 && s.n_kv_heads == 2 && s.head_dim == 128);
  cr_assert_eq(synth_find_shape("smollm2-135m", &s), 0);
  cr_expect(s.n_layers == 30 && s.n_q_heads == 9 && s.n_kv_heads == 3 && s.head_dim == 64);
  cr_expect_eq(synth_find_shape("llama", &s), -1);
}

Test(synth, header_sequences) {
  synth_opts o = small_opts(1);
  o.n_tokens = 2500, o.seq_len = 250, o.n_domains = 3; /* 10 sequences: 3 calibration, 7 evaluation */
  dump_t h;
  sq_err e;
  cr_assert_eq(synth_header(&o, "/tmp/unused.h5", "{}", &h, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(h.n_seq, 10);
  for (int s = 0; s < 10; s++) {
    cr_expect_eq(h.seq_off[s + 1] - h.seq_off[s], 250);
    cr_expect_eq(h.split[s], s < 3 ? DUMP_SPLIT_CALIB : DUMP_SPLIT_EVAL, "sequence %d", s);
    cr_expect_eq(h.q_off[s + 1] - h.q_off[s], s < 3 ? 0 : 250, "sequence %d", s);
    cr_expect_eq(h.domain[s], s % 3);
  }
  cr_expect_eq(h.n_q_rows, 1750);
  cr_expect_eq(h.n_dump_layers, 30);
  synth_header_free(&h);
  o.queries_all = 1, o.n_tokens = 1001; /* last sequence has 1 token */
  cr_assert_eq(synth_header(&o, "/tmp/unused.h5", "{}", &h, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(h.n_seq, 5);
  cr_expect_eq(h.seq_off[5] - h.seq_off[4], 1);
  cr_expect_eq(h.n_q_rows, 1001);
  synth_header_free(&h);
}

Test(synth, deterministic_given_seed) {
  synth_opts o = small_opts(7), o2 = small_opts(8);
  dump_t h;
  sq_err e;
  cr_assert_eq(synth_header(&o, "/tmp/unused.h5", "{}", &h, &e), SQ_OK, "%s", e.msg);
  dump_layer a, b, c;
  memset(&a, 0, sizeof a), memset(&b, 0, sizeof b), memset(&c, 0, sizeof c);
  synth_layer(&o, &h, 5, &a);
  synth_layer(&o, &h, 5, &b);
  synth_layer(&o2, &h, 5, &c);
  cr_expect(same_layer(&a, &b), "same seed, different data");
  cr_expect(!same_layer(&a, &c), "different seeds, same data");
  synth_layer(&o, &h, 6, &c);
  cr_expect(!same_layer(&a, &c), "layers 5 and 6 identical");
  dump_layer_free(&a), dump_layer_free(&b), dump_layer_free(&c);
  synth_header_free(&h);
}

/* Top-5 eigenvalue share of the uncentred second moment of rows x[t][head][:] (GSL eigensolver). */
static double top5_share(const float *x, int64_t n, int H, int head, int D) {
  gsl_matrix *C = gsl_matrix_calloc((size_t)D, (size_t)D);
  for (int64_t t = 0; t < n; t++) {
    const float *v = x + (t * H + head) * D;
    for (int i = 0; i < D; i++)
      for (int j = 0; j < D; j++) *gsl_matrix_ptr(C, (size_t)i, (size_t)j) += (double)v[i] * v[j];
  }
  gsl_vector *ev = gsl_vector_alloc((size_t)D);
  gsl_eigen_symm_workspace *w = gsl_eigen_symm_alloc((size_t)D);
  gsl_eigen_symm(C, ev, w);
  gsl_sort_vector(ev);
  double total = 0, top = 0;
  for (int i = 0; i < D; i++) total += gsl_vector_get(ev, (size_t)i);
  for (int i = D - 5; i < D; i++) top += gsl_vector_get(ev, (size_t)i);
  gsl_eigen_symm_free(w);
  gsl_vector_free(ev);
  gsl_matrix_free(C);
  return top / total;
}

Test(synth, keys_concentrated_values_flat) {
  synth_opts o = small_opts(42);
  o.n_tokens = 2048, o.seq_len = 1024;
  dump_t h;
  sq_err e;
  cr_assert_eq(synth_header(&o, "/tmp/unused.h5", "{}", &h, &e), SQ_OK, "%s", e.msg);
  dump_layer l;
  memset(&l, 0, sizeof l);
  for (int layer = 0; layer < 30; layer += 9) {
    synth_layer(&o, &h, layer, &l);
    for (int kh = 0; kh < h.n_kv_heads; kh++) {
      double ks = top5_share(l.k, l.n_tokens, h.n_kv_heads, kh, h.head_dim);
      double vs = top5_share(l.v, l.n_tokens, h.n_kv_heads, kh, h.head_dim);
      /* isotropic data in D = 64 would give 5/64 = 0.08 */
      cr_expect_gt(ks, 0.6, "layer %d head %d: keys' top-5 share %.3f", layer, kh, ks);
      cr_expect_lt(vs, 0.35, "layer %d head %d: values' top-5 share %.3f", layer, kh, vs);
      cr_expect_gt(ks, 2.5 * vs, "layer %d head %d: keys %.3f vs values %.3f", layer, kh, ks, vs);
    }
  }
  dump_layer_free(&l);
  synth_header_free(&h);
}

/* Share of the queries' energy inside the top-6 eigen-subspace of their KV head's keys. */
Test(synth, queries_follow_their_keys) {
  synth_opts o = small_opts(3);
  o.n_tokens = 1024, o.seq_len = 512, o.calib_frac = 0.5;
  dump_t h;
  sq_err e;
  cr_assert_eq(synth_header(&o, "/tmp/unused.h5", "{}", &h, &e), SQ_OK, "%s", e.msg);
  dump_layer l;
  memset(&l, 0, sizeof l);
  synth_layer(&o, &h, 3, &l);
  int D = h.head_dim, group = h.n_q_heads / h.n_kv_heads;
  for (int qh = 0; qh < h.n_q_heads; qh++) {
    int kh = qh / group;
    gsl_matrix *C = gsl_matrix_calloc((size_t)D, (size_t)D);
    for (int64_t t = 0; t < l.n_tokens; t++) {
      const float *v = l.k + (t * h.n_kv_heads + kh) * D;
      for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) *gsl_matrix_ptr(C, (size_t)i, (size_t)j) += (double)v[i] * v[j];
    }
    gsl_vector *ev = gsl_vector_alloc((size_t)D);
    gsl_matrix *U = gsl_matrix_alloc((size_t)D, (size_t)D);
    gsl_eigen_symmv_workspace *w = gsl_eigen_symmv_alloc((size_t)D);
    gsl_eigen_symmv(C, ev, U, w);
    gsl_eigen_symmv_sort(ev, U, GSL_EIGEN_SORT_VAL_DESC);
    double in = 0, all = 0;
    for (int64_t r = 0; r < l.n_q_rows; r++) {
      const float *q = l.q + (r * h.n_q_heads + qh) * D;
      for (int j = 0; j < D; j++) all += (double)q[j] * q[j];
      for (int c = 0; c < 6; c++) {
        double p = 0;
        for (int j = 0; j < D; j++) p += gsl_matrix_get(U, (size_t)j, (size_t)c) * q[j];
        in += p * p;
      }
    }
    /* random directions would put 6/64 = 0.09 of the energy there */
    cr_expect_gt(in / all, 0.2, "query head %d: %.3f of its energy in its keys' top-6 subspace", qh, in / all);
    gsl_eigen_symmv_free(w);
    gsl_matrix_free(U);
    gsl_vector_free(ev);
    gsl_matrix_free(C);
  }
  dump_layer_free(&l);
  synth_header_free(&h);
}

Test(synth, rope_is_a_rotation_additive_in_position) {
  enum { D = 16 };
  float x[D], a[D], b[D];
  for (int i = 0; i < D; i++) x[i] = (float)(i % 5) - 1.5f + 0.1f * i;
  memcpy(a, x, sizeof x);
  synth_rope(a, D, 0, 10000.0);
  for (int i = 0; i < D; i++) cr_expect_eq(a[i], x[i], "position 0 must be the identity");
  /* pair (0, D/2) turns by exactly pos radians (theta^0 = 1) */
  float u[D] = {0};
  u[0] = 1;
  synth_rope(u, D, 1, 10000.0);
  cr_expect_float_eq(u[0], cosf(1.0f), 1e-6);
  cr_expect_float_eq(u[D / 2], sinf(1.0f), 1e-6);
  memcpy(a, x, sizeof x);
  synth_rope(a, D, 37, 10000.0);
  memcpy(b, x, sizeof x);
  synth_rope(b, D, 12, 10000.0);
  synth_rope(b, D, 25, 10000.0);
  double n0 = 0, n1 = 0;
  for (int i = 0; i < D; i++) {
    cr_expect_float_eq(a[i], b[i], 1e-4, "rope(37) != rope(25)∘rope(12) at %d", i);
    n0 += (double)x[i] * x[i], n1 += (double)a[i] * a[i];
  }
  cr_expect_float_eq(n0, n1, 1e-4);
}

static char dir[256];
static void make_dir(void) {
  cr_assert_not_null(tu_mkdtemp(dir, sizeof dir, "synth"));
}
static void remove_dir(void) {
  tu_rmtree(dir);
}

/* Written files: same seed -> same data through the writer and reader; a layer's content does not
 * depend on which other layers were selected. */
Test(synth, files_deterministic, .init = make_dir, .fini = remove_dir) {
  synth_opts o = small_opts(11);
  o.dtype = DUMP_F16;
  int sel[2] = {4, 9};
  o.layers = sel, o.n_sel_layers = 2;
  char p1[400], p2[400];
  snprintf(p1, sizeof p1, "%s/a.h5", dir);
  snprintf(p2, sizeof p2, "%s/b.h5", dir);
  sq_err e;
  cr_assert_eq(synth_write(&o, p1, "{\"run\": 1}", NULL, NULL, &e), SQ_OK, "%s", e.msg);
  int only9[1] = {9};
  o.layers = only9, o.n_sel_layers = 1;
  cr_assert_eq(synth_write(&o, p2, "{\"run\": 2}", NULL, NULL, &e), SQ_OK, "%s", e.msg);
  dump_t a, b;
  cr_assert_eq(dump_open(&a, p1, 0, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(dump_open(&b, p2, 0, &e), SQ_OK, "%s", e.msg);
  cr_expect_str_eq(a.model_id, "synthetic:smollm2-135m");
  cr_expect_eq(a.n_dump_layers, 2);
  dump_layer la, lb;
  memset(&la, 0, sizeof la), memset(&lb, 0, sizeof lb);
  cr_assert_eq(dump_read_layer(&a, 1, &la, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(dump_read_layer(&b, 0, &lb, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(la.layer, 9);
  cr_expect(same_layer(&la, &lb), "layer 9 differs between the two files");
  dump_layer_free(&la), dump_layer_free(&lb);
  dump_close(&a), dump_close(&b);
}

/* --compress 0 writes the same numbers without the gzip filter, so the file is larger. */
Test(synth, uncompressed_same_data, .init = make_dir, .fini = remove_dir) {
  synth_opts o = small_opts(5);
  o.dtype = DUMP_F16;
  char pz[400], pu[400];
  snprintf(pz, sizeof pz, "%s/z.h5", dir);
  snprintf(pu, sizeof pu, "%s/u.h5", dir);
  sq_err e;
  cr_assert_eq(synth_write(&o, pz, "{}", NULL, NULL, &e), SQ_OK, "%s", e.msg);
  o.gzip_level = -1;
  cr_assert_eq(synth_write(&o, pu, "{}", NULL, NULL, &e), SQ_OK, "%s", e.msg);
  struct stat sz, su;
  cr_assert_eq(stat(pz, &sz), 0);
  cr_assert_eq(stat(pu, &su), 0);
  cr_expect_gt(su.st_size, sz.st_size, "uncompressed %lld <= gzip'd %lld bytes", (long long)su.st_size,
               (long long)sz.st_size);
  dump_t a, b;
  cr_assert_eq(dump_open(&a, pz, 0, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(dump_open(&b, pu, 0, &e), SQ_OK, "%s", e.msg);
  dump_layer la, lb;
  memset(&la, 0, sizeof la), memset(&lb, 0, sizeof lb);
  for (int i = 0; i < a.n_dump_layers; i++) {
    cr_assert_eq(dump_read_layer(&a, i, &la, &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(dump_read_layer(&b, i, &lb, &e), SQ_OK, "%s", e.msg);
    cr_expect(same_layer(&la, &lb), "stored layer %d differs", i);
  }
  dump_layer_free(&la), dump_layer_free(&lb);
  dump_close(&a), dump_close(&b);
}

static int run_synth(const char *args, char *err, size_t n) {
  const char *bin = getenv("SQEXP_BIN");
  if (!bin) {
    remove_dir(); /* a skipped test does not reach .fini */
    cr_skip_test("SQEXP_BIN is not set (ctest sets it)");
  }
  char cmd[2048], r[600];
  snprintf(r, sizeof r, "%s/stderr.txt", dir);
  snprintf(cmd, sizeof cmd, "cd '%s' && '%s' synth %s >/dev/null 2>'%s'", dir, bin, args, r);
  int st = system(cmd);
  FILE *f = fopen(r, "r");
  size_t got = f ? fread(err, 1, n - 1, f) : 0;
  err[got] = '\0';
  if (f) fclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(synth, cli, .init = make_dir, .fini = remove_dir) {
  char err[4096];
  cr_expect_eq(run_synth("--help", err, sizeof err), 0);
  cr_expect_eq(run_synth("--shape gpt5 -o x.h5", err, sizeof err), 2);
  cr_expect(strstr(err, "gpt5"), "%s", err);
  cr_expect_eq(run_synth("--shape smollm2-135m -o x.h5 --dtype float8", err, sizeof err), 2);
  cr_expect(strstr(err, "--dtype"), "%s", err);
  cr_expect_eq(run_synth("--shape smollm2-135m -o x.h5 --tokens 0", err, sizeof err), 2);
  cr_expect_eq(run_synth("--shape smollm2-135m -o x.h5 --layers 0:31", err, sizeof err), 2);
  cr_expect(strstr(err, "--layers"), "%s", err);
  cr_expect_eq(run_synth("--shape smollm2-135m -o no/such/dir/x.h5", err, sizeof err), 2);
  char p[400];
  snprintf(p, sizeof p, "%s/x.h5", dir);
  cr_expect_eq(access(p, F_OK), -1, "a refused synth must write nothing");
  cr_assert_eq(run_synth("--shape smollm2-135m -o x.h5 --tokens 300 --seq-len 100 --layers 0,29 --dtype bfloat16 "
                         "--queries all --domains 2 --seed 5", err, sizeof err), 0, "%s", err);
  dump_t d;
  sq_err e;
  cr_assert_eq(dump_open(&d, p, 0, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(d.dtype, DUMP_BF16);
  cr_expect_eq(d.n_dump_layers, 2);
  cr_expect_eq(d.layers[1], 29);
  cr_expect_eq(d.n_seq, 3);
  cr_expect_eq(d.n_q_rows, 300);
  cr_expect_eq(d.n_domains, 2);
  cr_expect(strstr(d.provenance, "\"seed\":5"), "%s", d.provenance);
  dump_close(&d);
}
