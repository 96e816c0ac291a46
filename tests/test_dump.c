/* test_dump: the HDF5 dump writer + reader. A small valid dump is written with the writer into a
 * fresh temporary directory per test, then broken with the raw HDF5 API (or truncate(), or
 * replaced by text) to produce each malformed kind; the reader must refuse each with SQ_EINPUT and
 * a message naming the file and the dataset/attribute. Expected values come from the test's own
 * generator and f16.h's rounding, never from the reader. */
#include <criterion/criterion.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "dump.h"
#include "f16.h"
#include "rng.h"
#include "util/tu_tmp.h"

/* Tiny model: 4 layers (1 and 3 stored), 4 query heads, 2 KV heads, D 8; sequences of 5, 7, 4
 * tokens (T = 16), the first calibration, queries for the two evaluation ones (T_q = 11). */
enum { NL = 4, HQ = 4, HKV = 2, D = 8, T = 16, TQ = 11, S = 3 };
static int64_t seq_off[S + 1] = {0, 5, 12, 16}, q_off[S + 1] = {0, 0, 7, 11};
static uint8_t split[S] = {0, 1, 1};
static int domain[S] = {0, 1, 0}, layers[2] = {1, 3};
static char *dnames[2] = {"prose", "code"};

static char dir[256], file[512];

static void make_dir(void) {
  cr_assert_not_null(tu_mkdtemp(dir, sizeof dir, "dump"));
  snprintf(file, sizeof file, "%s/tiny.h5", dir);
}

static void remove_dir(void) {
  tu_rmtree(dir);
}

static void header(dump_t *h, int dtype) {
  memset(h, 0, sizeof *h);
  snprintf(h->path, sizeof h->path, "%s", file);
  snprintf(h->model_id, sizeof h->model_id, "test:tiny");
  h->n_layers = NL, h->n_q_heads = HQ, h->n_kv_heads = HKV, h->head_dim = D;
  snprintf(h->rope, sizeof h->rope, "rope");
  h->kq_post_rope = 1, h->dtype = dtype;
  h->n_dump_layers = 2, h->layers = layers;
  h->provenance = "{\"tool\": \"test_dump\"}";
  h->n_tokens = T, h->n_q_rows = TQ, h->n_seq = S;
  h->seq_off = seq_off, h->q_off = q_off, h->split = split, h->domain = domain;
  h->n_domains = 2, h->domain_names = dnames;
}

/* Layer content: normals * 3 from a generator seeded by the layer, stored in caller buffers. */
static void fill(dump_layer *l, int layer, float *k, float *v, float *q) {
  rng_t r;
  rng_seed(&r, 777 + (uint64_t)layer);
  for (int i = 0; i < T * HKV * D; i++) k[i] = (float)(3 * rng_normal(&r));
  for (int i = 0; i < T * HKV * D; i++) v[i] = (float)(3 * rng_normal(&r));
  for (int i = 0; i < TQ * HQ * D; i++) q[i] = (float)(3 * rng_normal(&r));
  *l = (dump_layer){.layer = layer, .n_tokens = T, .n_q_rows = TQ, .n_kv_heads = HKV, .n_q_heads = HQ,
                    .head_dim = D, .k = k, .v = v, .q = q};
}

static void write_valid(int dtype) {
  dump_t h;
  header(&h, dtype);
  dump_writer *w = NULL;
  sq_err e;
  sq_err_clear(&e);
  cr_assert_eq(dump_create(&w, &h, &e), SQ_OK, "%s", e.msg);
  for (int i = 0; i < 2; i++) {
    float k[T * HKV * D], v[T * HKV * D], q[TQ * HQ * D];
    dump_layer l;
    fill(&l, layers[i], k, v, q);
    cr_assert_eq(dump_write_layer(w, &l, &e), SQ_OK, "%s", e.msg);
  }
  cr_assert_eq(dump_finish(w, &e), SQ_OK, "%s", e.msg);
}

static float round_to(int dtype, float x) {
  return dtype == DUMP_F16 ? f16_to_f32(f32_to_f16(x)) : dtype == DUMP_BF16 ? bf16_to_f32(f32_to_bf16(x)) : x;
}

static void check_roundtrip(int dtype) {
  write_valid(dtype);
  dump_t d;
  sq_err e;
  sq_err_clear(&e);
  cr_assert_eq(dump_open(&d, file, 0, &e), SQ_OK, "%s", e.msg);
  cr_expect_str_eq(d.model_id, "test:tiny");
  cr_expect_str_eq(d.provenance, "{\"tool\": \"test_dump\"}");
  cr_expect_eq(d.dtype, dtype);
  cr_expect_eq(d.n_layers, NL);
  cr_expect_eq(d.n_q_heads, HQ);
  cr_expect_eq(d.n_kv_heads, HKV);
  cr_expect_eq(d.head_dim, D);
  cr_expect_str_eq(d.rope, "rope");
  cr_expect_eq(d.kq_post_rope, 1);
  cr_assert_eq(d.n_dump_layers, 2);
  cr_expect_eq(d.layers[0], 1);
  cr_expect_eq(d.layers[1], 3);
  cr_expect_eq(dump_find_layer(&d, 3), 1);
  cr_expect_eq(dump_find_layer(&d, 2), -1);
  cr_assert_eq(d.n_seq, S);
  cr_expect_eq(d.n_tokens, T);
  cr_expect_eq(d.n_q_rows, TQ);
  for (int s = 0; s <= S; s++) cr_expect_eq(d.seq_off[s], seq_off[s]);
  for (int s = 0; s <= S; s++) cr_expect_eq(d.q_off[s], q_off[s]);
  for (int s = 0; s < S; s++) cr_expect_eq(d.split[s], split[s]);
  for (int s = 0; s < S; s++) cr_expect_eq(d.domain[s], domain[s]);
  cr_assert_eq(d.n_domains, 2);
  cr_expect_str_eq(d.domain_names[0], "prose");
  cr_expect_str_eq(d.domain_names[1], "code");
  cr_expect_eq(d.has_pre_rope, 0);
  dump_layer got;
  memset(&got, 0, sizeof got);
  for (int i = 0; i < 2; i++) {
    float k[T * HKV * D], v[T * HKV * D], q[TQ * HQ * D];
    dump_layer want;
    fill(&want, layers[i], k, v, q);
    cr_assert_eq(dump_read_layer(&d, i, &got, &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(got.layer, layers[i]);
    cr_assert_eq(got.n_tokens, T);
    cr_assert_eq(got.n_q_rows, TQ);
    for (int j = 0; j < T * HKV * D; j++) {
      cr_assert_eq(got.k[j], round_to(dtype, k[j]), "k[%d]: %g vs %g", j, got.k[j], round_to(dtype, k[j]));
      cr_assert_eq(got.v[j], round_to(dtype, v[j]), "v[%d]", j);
    }
    for (int j = 0; j < TQ * HQ * D; j++) cr_assert_eq(got.q[j], round_to(dtype, q[j]), "q[%d]", j);
  }
  dump_layer_free(&got);
  dump_close(&d);
}

TestSuite(dump, .init = make_dir, .fini = remove_dir);

Test(dump, roundtrip_float32) { check_roundtrip(DUMP_F32); }
Test(dump, roundtrip_float16) { check_roundtrip(DUMP_F16); }
Test(dump, roundtrip_bfloat16) { check_roundtrip(DUMP_BF16); }

Test(dump, writer_leaves_nothing_until_finish) {
  dump_t h;
  header(&h, DUMP_F32);
  dump_writer *w = NULL;
  sq_err e;
  char partial[600];
  snprintf(partial, sizeof partial, "%s.partial", file);
  cr_assert_eq(dump_create(&w, &h, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(access(file, F_OK), -1, "the final name must not exist before dump_finish");
  cr_expect_eq(access(partial, F_OK), 0);
  dump_abort(w);
  cr_expect_eq(access(file, F_OK), -1);
  cr_expect_eq(access(partial, F_OK), -1, "dump_abort must remove the partial file");
  /* finishing with a layer missing fails and leaves nothing either */
  cr_assert_eq(dump_create(&w, &h, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(dump_finish(w, &e), SQ_EFAIL);
  cr_expect_eq(access(file, F_OK), -1);
  cr_expect_eq(access(partial, F_OK), -1);
}

Test(dump, writer_refuses_bad_header) {
  dump_t h;
  header(&h, DUMP_F32);
  int64_t bad[S + 1] = {0, 5, 5, 16};
  h.seq_off = bad;
  dump_writer *w = NULL;
  sq_err e;
  cr_expect_eq(dump_create(&w, &h, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "/sequences/offsets"), "%s", e.msg);
  cr_expect_null(w);
}

/* ---------- breaking a valid file ---------- */

static hid_t reopen_rw(void) {
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t f = H5Fopen(file, H5F_ACC_RDWR, H5P_DEFAULT);
  cr_assert_geq(f, 0);
  return f;
}

static void set_int_attr(const char *name, int value) {
  hid_t f = reopen_rw();
  if (H5Aexists(f, name) > 0) H5Adelete(f, name);
  hid_t sp = H5Screate(H5S_SCALAR), a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
  long long v = value;
  cr_assert_geq(H5Awrite(a, H5T_NATIVE_LLONG, &v), 0);
  H5Aclose(a);
  H5Sclose(sp);
  H5Fclose(f);
}

static void set_str_attr(const char *name, const char *value) {
  hid_t f = reopen_rw();
  if (H5Aexists(f, name) > 0) H5Adelete(f, name);
  /* fixed-length this time: the reader must take both string kinds */
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, strlen(value) + 1);
  hid_t sp = H5Screate(H5S_SCALAR), a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
  cr_assert_geq(H5Awrite(a, t, value), 0);
  H5Aclose(a);
  H5Sclose(sp);
  H5Tclose(t);
  H5Fclose(f);
}

static void delete_link(const char *path) {
  hid_t f = reopen_rw();
  cr_assert_geq(H5Ldelete(f, path, H5P_DEFAULT), 0);
  H5Fclose(f);
}

static void delete_attr(const char *name) {
  hid_t f = reopen_rw();
  cr_assert_geq(H5Adelete(f, name), 0);
  H5Fclose(f);
}

static void write_i64(const char *path, const int64_t *v) {
  hid_t f = reopen_rw(), ds = H5Dopen2(f, path, H5P_DEFAULT);
  cr_assert_geq(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
  H5Dclose(ds);
  H5Fclose(f);
}

/* Overwrite one element of a layer dataset with *value, whose memory type is mem_t, or (mem_t
 * < 0) the dataset's own type, so that no conversion touches the bits. */
static void poke(const char *path, int64_t row, int head, int dim, hid_t mem_t, const void *value) {
  hid_t f = reopen_rw(), ds = H5Dopen2(f, path, H5P_DEFAULT), sp = H5Dget_space(ds);
  hid_t t = mem_t < 0 ? H5Dget_type(ds) : mem_t;
  hsize_t start[3] = {(hsize_t)row, (hsize_t)head, (hsize_t)dim}, one[3] = {1, 1, 1};
  H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, one, NULL);
  hid_t msp = H5Screate_simple(3, one, NULL);
  cr_assert_geq(H5Dwrite(ds, t, msp, sp, H5P_DEFAULT, value), 0);
  H5Sclose(msp);
  if (mem_t < 0) H5Tclose(t);
  H5Sclose(sp);
  H5Dclose(ds);
  H5Fclose(f);
}

/* One float32 element. */
static void poke_f32(const char *path, int64_t row, int head, int dim, float value) {
  poke(path, row, head, dim, H5T_NATIVE_FLOAT, &value);
}

/* dump_open must refuse with SQ_EINPUT, naming the file and every string in `needles`. */
static void expect_open_refused(const char *const *needles, int n) {
  dump_t d;
  sq_err e;
  sq_err_clear(&e);
  int rc = dump_open(&d, file, 0, &e);
  if (rc == SQ_OK) dump_close(&d);
  cr_assert_eq(rc, SQ_EINPUT, "expected SQ_EINPUT, got %d (%s)", rc, e.msg);
  cr_expect(strstr(e.msg, file), "message does not name the file: %s", e.msg);
  for (int i = 0; i < n; i++) cr_expect(strstr(e.msg, needles[i]), "message lacks '%s': %s", needles[i], e.msg);
}
#define REFUSED(...)                                              \
  do {                                                            \
    const char *const nd_[] = {__VA_ARGS__};                      \
    expect_open_refused(nd_, (int)(sizeof nd_ / sizeof nd_[0])); \
  } while (0)

Test(dump, missing_dataset) {
  write_valid(DUMP_F16);
  delete_link("/layers/3/v");
  REFUSED("/layers/3/v", "missing");
}

Test(dump, missing_layer_group) {
  write_valid(DUMP_F16);
  delete_link("/layers/1");
  REFUSED("/layers/1/k", "missing");
}

Test(dump, missing_sequences) {
  write_valid(DUMP_F16);
  delete_link("/sequences/q_offsets");
  REFUSED("/sequences/q_offsets", "missing");
}

Test(dump, missing_attribute) {
  write_valid(DUMP_F16);
  delete_attr("head_dim");
  REFUSED("'head_dim'", "missing");
}

Test(dump, wrong_shape) {
  write_valid(DUMP_F32);
  delete_link("/layers/1/k");
  hid_t f = reopen_rw();
  hsize_t dims[3] = {T, HKV, 4};
  hid_t sp = H5Screate_simple(3, dims, NULL);
  hid_t ds = H5Dcreate2(f, "/layers/1/k", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dclose(ds);
  H5Sclose(sp);
  H5Fclose(f);
  REFUSED("/layers/1/k: expected shape [T=16, H_kv=2, D=8], found [16, 2, 4]");
}

Test(dump, wrong_dtype) {
  write_valid(DUMP_F32);
  set_str_attr("dtype", "float16");
  REFUSED("/layers/1/k", "stored as float32", "dtype says float16");
}

Test(dump, wrong_version) {
  write_valid(DUMP_F16);
  set_int_attr("format_version", 2);
  REFUSED("format_version = 2", "not supported");
}

Test(dump, wrong_format_name) {
  write_valid(DUMP_F16);
  set_str_attr("format", "some-other-format");
  REFUSED("attribute format", "some-other-format");
}

Test(dump, gqa_mismatch) {
  write_valid(DUMP_F16);
  set_int_attr("n_q_heads", 3);
  REFUSED("n_q_heads = 3", "multiple of n_kv_heads");
}

Test(dump, layers_out_of_range) {
  write_valid(DUMP_F16);
  set_int_attr("n_layers", 3); /* layer 3 is stored */
  REFUSED("layers[1] = 3", "n_layers=3");
}

Test(dump, bad_offsets_decreasing) {
  write_valid(DUMP_F16);
  int64_t bad[S + 1] = {0, 9, 7, 16};
  write_i64("/sequences/offsets", bad);
  REFUSED("/sequences/offsets", "sequence 1");
}

Test(dump, bad_offsets_total) {
  write_valid(DUMP_F16);
  int64_t bad[S + 1] = {0, 5, 12, 15}, bad_q[S + 1] = {0, 0, 7, 10}; /* consistent, but 15 != 16 tokens */
  write_i64("/sequences/offsets", bad);
  write_i64("/sequences/q_offsets", bad_q);
  REFUSED("/layers/1/k", "expected shape [T=15, H_kv=2, D=8], found [16, 2, 8]", "/sequences/offsets");
}

Test(dump, bad_q_offsets) {
  write_valid(DUMP_F16);
  int64_t bad[S + 1] = {0, 2, 7, 11}; /* sequence 0 has 5 tokens: 2 query rows is neither 0 nor 5 */
  write_i64("/sequences/q_offsets", bad);
  REFUSED("/sequences/q_offsets", "sequence 0");
}

Test(dump, bad_split) {
  write_valid(DUMP_F16);
  hid_t f = reopen_rw(), ds = H5Dopen2(f, "/sequences/split", H5P_DEFAULT);
  uint8_t v[S] = {0, 2, 1};
  H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
  H5Dclose(ds);
  H5Fclose(f);
  REFUSED("/sequences/split[1] = 2");
}

/* The finiteness check happens while a layer is read (open stays cheap). */
static void expect_read_refused(int idx, const char *const *needles, int n) {
  dump_t d;
  sq_err e;
  sq_err_clear(&e);
  cr_assert_eq(dump_open(&d, file, 0, &e), SQ_OK, "%s", e.msg);
  dump_layer l;
  memset(&l, 0, sizeof l);
  int rc = dump_read_layer(&d, idx, &l, &e);
  dump_layer_free(&l);
  dump_close(&d);
  cr_assert_eq(rc, SQ_EINPUT, "expected SQ_EINPUT, got %d (%s)", rc, e.msg);
  cr_expect(strstr(e.msg, file), "message does not name the file: %s", e.msg);
  for (int i = 0; i < n; i++) cr_expect(strstr(e.msg, needles[i]), "message lacks '%s': %s", needles[i], e.msg);
}

Test(dump, nan_refused_with_location) {
  write_valid(DUMP_F32);
  poke_f32("/layers/3/k", 9, 1, 5, NAN);
  const char *nd[] = {"/layers/3/k", "1 non-finite", "layer 3, token 9, head 1, dim 5"};
  expect_read_refused(1, nd, 3);
}

Test(dump, inf_in_queries_refused_with_location) {
  write_valid(DUMP_F32);
  poke_f32("/layers/1/q", 3, 2, 0, INFINITY);
  poke_f32("/layers/1/q", 10, 0, 7, -INFINITY);
  /* query row 3 is token 5 + 3 = 8 (the first query rows belong to sequence 1, offset 5) */
  const char *nd[] = {"/layers/1/q", "2 non-finite", "layer 1, query row 3 (token 8), head 2, dim 0"};
  expect_read_refused(0, nd, 3);
}

/* One fp16 or bf16 element, a raw 16-bit pattern in the dataset's own type. */
static void poke_raw16(const char *path, int64_t row, int head, int dim, uint16_t bits) {
  poke(path, row, head, dim, -1, &bits);
}

/* The same locations as the float32 tests above, through the fp16 (F16C where present) and bf16
 * conversions: the first in row-major order is reported, every one counted. */
Test(dump, nan_refused_with_location_float16) {
  write_valid(DUMP_F16);
  poke_raw16("/layers/3/k", 12, 0, 2, 0x7c01); /* signalling NaN, after the first */
  poke_raw16("/layers/3/k", 9, 1, 5, 0xfc00);  /* -Inf */
  poke_raw16("/layers/3/k", 15, 1, 7, 0x7e00); /* the dataset's last element */
  const char *nd[] = {"/layers/3/k", "3 non-finite", "layer 3, token 9, head 1, dim 5"};
  expect_read_refused(1, nd, 3);
}

Test(dump, inf_in_queries_refused_with_location_bfloat16) {
  write_valid(DUMP_BF16);
  poke_raw16("/layers/1/q", 3, 2, 0, 0x7f80);  /* +Inf */
  poke_raw16("/layers/1/q", 10, 0, 7, 0xffc1); /* NaN with a payload */
  const char *nd[] = {"/layers/1/q", "2 non-finite", "layer 1, query row 3 (token 8), head 2, dim 0"};
  expect_read_refused(0, nd, 3);
}

Test(dump, nonfinite_allowed_when_asked) {
  write_valid(DUMP_F16);
  hid_t f = reopen_rw(), ds = H5Dopen2(f, "/layers/1/v", H5P_DEFAULT), sp = H5Dget_space(ds);
  hsize_t start[3] = {4, 0, 3}, one[3] = {1, 1, 1};
  H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, one, NULL);
  hid_t msp = H5Screate_simple(3, one, NULL);
  uint16_t nan16 = 0x7e00; /* float16 quiet NaN, written as raw bits through a uint16 view */
  hid_t t = H5Dget_type(ds);
  cr_assert_geq(H5Dwrite(ds, t, msp, sp, H5P_DEFAULT, &nan16), 0);
  H5Tclose(t);
  H5Sclose(msp);
  H5Sclose(sp);
  H5Dclose(ds);
  H5Fclose(f);
  dump_t d;
  sq_err e;
  cr_assert_eq(dump_open(&d, file, 1, &e), SQ_OK, "%s", e.msg);
  dump_layer l;
  memset(&l, 0, sizeof l);
  cr_assert_eq(dump_read_layer(&d, 0, &l, &e), SQ_OK, "%s", e.msg);
  cr_expect(isnan(l.v[(4 * HKV + 0) * D + 3]));
  dump_layer_free(&l);
  dump_close(&d);
  const char *nd[] = {"/layers/1/v", "token 4, head 0, dim 3"};
  expect_read_refused(0, nd, 2);
}

Test(dump, truncated_file) {
  write_valid(DUMP_F32);
  struct stat st;
  cr_assert_eq(stat(file, &st), 0);
  cr_assert_eq(truncate(file, st.st_size / 2), 0);
  REFUSED("truncated");
}

Test(dump, not_hdf5) {
  FILE *f = fopen(file, "w");
  fputs("format = sqexp-activations\nthis is a text file\n", f);
  fclose(f);
  REFUSED("not an HDF5 file");
}

Test(dump, missing_file) { REFUSED("cannot open", "No such file"); }

Test(dump, layer_index_out_of_range) {
  write_valid(DUMP_F16);
  dump_t d;
  sq_err e;
  cr_assert_eq(dump_open(&d, file, 0, &e), SQ_OK, "%s", e.msg);
  dump_layer l;
  memset(&l, 0, sizeof l);
  cr_expect_eq(dump_read_layer(&d, 2, &l, &e), SQ_EINPUT);
  dump_layer_free(&l);
  dump_close(&d);
}

Test(dump, parse_layers) {
  int *l = NULL, n = 0;
  sq_err e;
  cr_assert_eq(dump_parse_layers("0:32:4", 32, "--layers", &l, &n, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(n, 8);
  for (int i = 0; i < 8; i++) cr_expect_eq(l[i], 4 * i);
  free(l);
  cr_assert_eq(dump_parse_layers("7,2:4,3", 10, "--layers", &l, &n, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(n, 3);
  cr_expect(l[0] == 2 && l[1] == 3 && l[2] == 7);
  free(l);
  const char *bad[] = {"", "a", "3:2", "0:10:0", "1:2:3:4", "5,", "0:40"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_expect_eq(dump_parse_layers(bad[i], 32, "--layers", &l, &n, &e), SQ_EINPUT, "'%s' accepted", bad[i]);
    cr_expect(strstr(e.msg, "--layers"), "%s", e.msg);
  }
}

/* ---------- the CLI ---------- */

/* Runs "$SQEXP_BIN inspect ARGS", returns the exit status; stdout/stderr into files in dir. */
static int run_inspect(const char *args, char *out, size_t n_out, char *err, size_t n_err) {
  const char *bin = getenv("SQEXP_BIN");
  if (!bin) {
    remove_dir(); /* a skipped test does not reach .fini */
    cr_skip_test("SQEXP_BIN is not set (ctest sets it)");
  }
  char cmd[2048], o[600], r[600];
  snprintf(o, sizeof o, "%s/stdout.txt", dir);
  snprintf(r, sizeof r, "%s/stderr.txt", dir);
  snprintf(cmd, sizeof cmd, "'%s' inspect %s >'%s' 2>'%s'", bin, args, o, r);
  int st = system(cmd);
  const char *paths[2] = {o, r};
  char *bufs[2] = {out, err};
  size_t sizes[2] = {n_out, n_err};
  for (int i = 0; i < 2; i++) {
    FILE *f = fopen(paths[i], "r");
    size_t got = f ? fread(bufs[i], 1, sizes[i] - 1, f) : 0;
    bufs[i][got] = '\0';
    if (f) fclose(f);
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(dump, cli_inspect_valid) {
  write_valid(DUMP_F16);
  char out[16384], err[4096], args[700];
  snprintf(args, sizeof args, "'%s'", file);
  cr_assert_eq(run_inspect(args, out, sizeof out, err, sizeof err), 0, "stderr: %s", err);
  cr_expect(strstr(out, "test:tiny"), "%s", out);
  cr_expect(strstr(out, "float16"), "%s", out);
  cr_expect(strstr(out, "3: 1 calibration (5 tokens"), "%s", out);
  cr_expect(strstr(out, "prose (2 sequences, 9 tokens)"), "%s", out);
  cr_expect(strstr(out, "\"tool\": \"test_dump\""), "%s", out);
}

Test(dump, cli_inspect_malformed_exit_2) {
  write_valid(DUMP_F16);
  delete_link("/layers/3/v");
  char out[16384], err[4096], args[700];
  snprintf(args, sizeof args, "'%s'", file);
  cr_assert_eq(run_inspect(args, out, sizeof out, err, sizeof err), 2, "stderr: %s", err);
  cr_expect(strstr(err, "/layers/3/v"), "%s", err);
  cr_expect(strstr(err, file), "%s", err);
}

Test(dump, cli_inspect_nonfinite) {
  write_valid(DUMP_F32);
  poke_f32("/layers/3/k", 2, 0, 1, NAN);
  char out[16384], err[4096], args[700];
  snprintf(args, sizeof args, "'%s'", file);
  cr_assert_eq(run_inspect(args, out, sizeof out, err, sizeof err), 2, "stderr: %s", err);
  cr_expect(strstr(err, "/layers/3/k"), "%s", err);
  cr_expect(strstr(err, "token 2, head 0, dim 1"), "%s", err);
  snprintf(args, sizeof args, "--allow-nonfinite '%s'", file);
  cr_assert_eq(run_inspect(args, out, sizeof out, err, sizeof err), 0, "stderr: %s", err);
  cr_expect(strstr(out, "1/0/0"), "non-finite count column missing: %s", out);
}

Test(dump, cli_inspect_usage) {
  char out[16384], err[4096];
  cr_expect_eq(run_inspect("--help", out, sizeof out, err, sizeof err), 0);
  cr_expect(strstr(out, "usage: sqexp inspect"), "%s", out);
  cr_expect_eq(run_inspect("", out, sizeof out, err, sizeof err), 2);
  cr_expect_eq(run_inspect("--bogus x.h5", out, sizeof out, err, sizeof err), 2);
  cr_expect(strstr(err, "--bogus"), "%s", err);
  write_valid(DUMP_F16);
  char args[700];
  snprintf(args, sizeof args, "'%s' --layers 2", file);
  cr_expect_eq(run_inspect(args, out, sizeof out, err, sizeof err), 2);
  cr_expect(strstr(err, "layer 2 is not stored"), "%s", err);
}

/* The files must open in the standard tools: h5dump, and h5py (strings read back as str,
 * float16 as numpy float16). Skipped where the tool is not installed. */
Test(dump, opens_in_h5dump) {
  if (system("command -v h5dump >/dev/null 2>&1") != 0) cr_skip_test("h5dump not installed");
  write_valid(DUMP_F16);
  char cmd[800];
  snprintf(cmd, sizeof cmd, "h5dump -H '%s' >/dev/null 2>&1", file);
  cr_expect_eq(system(cmd), 0);
}

Test(dump, opens_in_h5py) {
  if (system("python3 -c 'import h5py' >/dev/null 2>&1") != 0) cr_skip_test("python3 h5py not installed");
  write_valid(DUMP_F16);
  char cmd[1600];
  snprintf(cmd, sizeof cmd,
           "python3 -c \"import h5py, numpy as np; f = h5py.File('%s', 'r'); a = f.attrs; "
           "assert a['format'] == 'sqexp-activations' and isinstance(a['provenance'], str); "
           "assert a['dtype'] == 'float16' and int(a['format_version']) == 1; "
           "assert list(a['layers']) == [1, 3]; "
           "assert f['sequences'].attrs['domain_names'] == 'prose,code'; "
           "k = f['layers/3/k']; assert k.dtype == np.float16 and k.shape == (16, 2, 8); "
           "assert k.compression == 'gzip' and k.shuffle; "
           "assert f['layers/1/q'].shape == (11, 4, 8)\" 2>&1",
           file);
  cr_expect_eq(system(cmd), 0, "h5py could not read the file as documented");
}
