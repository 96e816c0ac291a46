/* Result store: append + read back, torn trailing line recovery, the finished set, identity
 * checks (a different config or dump is refused unless --fresh, naming what changed), row writes
 * and fsyncs on the store's thread (append order kept, nothing lost on close, an error reported
 * by a later call). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "prov.h"
#include "store.h"
#include "util/tu_tmp.h"

static char tmp_root[256];

static void make_root(void) {
  cr_assert_not_null(tu_mkdtemp(tmp_root, sizeof tmp_root, "store"));
}

/* Called at the end of a test: reached only when its assertions held. */
static void remove_root(void) {
  cr_expect_eq(tu_rmtree(tmp_root), 0);
}

/* The identity text starts with the results version (prov.h), as prov_config_identity writes it. */
#define RV_STR2(x) #x
#define RV_STR(x) RV_STR2(x)
#define RV_LINE "results_version = " RV_STR(SQEXP_RESULTS_VERSION) "\n"

static void id_init(store_identity *id, const char *cfg_hash, const char *fp) {
  memset(id, 0, sizeof *id);
  snprintf(id->config_hash, sizeof id->config_hash, "%s", cfg_hash);
  snprintf(id->dump_fp, sizeof id->dump_fp, "%s", fp);
  id->config_text = RV_LINE "[run]\nseed = 42\n[sq]\ntotal_bits = 3\n";
  id->dump_path = "/data/x.h5";
  id->dump_size = 1234;
  id->model_id = "test-model";
  id->experiments = "grid,spectrum";
}

static void row_init(store_row *r, const char *key, int layer, int head, double attn) {
  store_row_init(r);
  snprintf(r->key, sizeof r->key, "%s", key);
  snprintf(r->arm, sizeof r->arm, "sq");
  snprintf(r->backend, sizeof r->backend, "cpu");
  r->layer = layer;
  r->head = head;
  r->head_dim = 64;
  r->total_bits = 3;
  r->noise_bits = -1;
  r->value_noise_bits = 2;
  r->d_eff_variance = 0.9;
  r->use_water_fill = 1;
  r->use_qjl = 0;
  r->m.attn_cos = attn;
  r->m.randq_cos = 0.5 + attn / 3;
  r->m.probs_cos = NAN; /* protocol off */
  r->m.k_cos = 0.1 * layer + 0.01 * head + 1.0 / 3.0;
  r->m.v_cos = 0.7;
  r->m.k_rel_mse = 1e-3 / 7;
  r->m.v_rel_mse = 0.02;
  r->m.logit_bias = -1e-5;
  r->m.logit_slope = 0.987654321;
  r->m.topk_recall = 0.75;
  r->m.n_attn = 100;
  r->m.n_randq = 8;
  r->m.n_probs = 0;
  r->m.n_pairs = 5050;
  r->d_eff_k = 5;
  r->d_eff_v = 40;
  r->pr_k = 4.2;
  r->pr_v = 39.9;
  r->pr_int_k = 4;
  r->pr_int_v = 40;
  r->kappa_k = 3.5;
  r->kappa_v = 1.01;
  r->bits_honest_k = 200;
  r->bits_honest_v = 250;
  r->bits_seed_k = 232;
  r->bits_seed_v = 250;
  r->bits_paper_k = 232;
  r->bits_paper_v = 250;
  r->ratio_honest = 2048.0 / 450;
  r->ratio_seed = 2048.0 / 482;
  r->ratio_paper = 2048.0 / 482;
  r->eval_s = 0.125;
}

static char *path_in(const char *dir, const char *name) {
  static char buf[512];
  snprintf(buf, sizeof buf, "%s/%s", dir, name);
  return buf;
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* The store's background error is sticky: store_append_row (when r is given), store_sync_async
 * and store_sync each fail with the same message as the first report, `first`. */
static void expect_sticky(store *s, const char *first_msg, const store_row *r) {
  char first[sizeof ((sq_err *)0)->msg];
  snprintf(first, sizeof first, "%s", first_msg);
  sq_err e1 = {0}, e2 = {0}, e3 = {0};
  if (r) {
    cr_expect_eq(store_append_row(s, r, &e1), SQ_EFAIL, "sticky");
    cr_expect_str_eq(e1.msg, first);
  }
  cr_expect_eq(store_sync_async(s, &e2), SQ_EFAIL, "sticky");
  cr_expect_str_eq(e2.msg, first);
  cr_expect_eq(store_sync(s, &e3), SQ_EFAIL, "sticky");
  cr_expect_str_eq(e3.msg, first);
}

/* The common start of a test: a fresh root, dir = ROOT/run and its identity id in scope; with
 * OPEN_RUN_STORE also a store s opened there (and e). */
#define RUN_DIR_AND_ID()                                                                           \
  make_root();                                                                                     \
  char dir[300];                                                                                   \
  snprintf(dir, sizeof dir, "%s/run", tmp_root);                                                   \
  store_identity id;                                                                               \
  id_init(&id, "aaaa", "ffff")
#define OPEN_RUN_STORE()                                                                           \
  RUN_DIR_AND_ID();                                                                                \
  store *s;                                                                                        \
  sq_err e = {0};                                                                                  \
  cr_assert_eq(store_open(&s, dir, &id, 0, &e), SQ_OK, "%s", e.msg)

Test(store, append_and_read_back) {
  OPEN_RUN_STORE();
  store_row in[3];
  row_init(&in[0], "sq:b=3,x", 0, 0, 0.91);
  row_init(&in[1], "sq:b=3,x", 0, 1, 0.95);
  row_init(&in[2], "tq:b=3,y", 4, 2, 0.8123456789012345);
  for (int i = 0; i < 3; i++) cr_assert_eq(store_append_row(s, &in[i], &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(store_sync(s, &e), SQ_OK);
  cr_expect_eq(store_n_rows(s), 3);
  store_close(s);

  store_row *out;
  int64_t n;
  cr_assert_eq(store_read_rows(dir, &out, &n, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(n, 3);
  for (int i = 0; i < 3; i++) {
    cr_expect_str_eq(out[i].key, in[i].key);
    cr_expect_eq(out[i].layer, in[i].layer);
    cr_expect_eq(out[i].head, in[i].head);
    /* 17 significant digits: doubles come back bit-exact */
    cr_expect_eq(out[i].m.attn_cos, in[i].m.attn_cos);
    cr_expect_eq(out[i].m.k_cos, in[i].m.k_cos);
    cr_expect_eq(out[i].m.k_rel_mse, in[i].m.k_rel_mse);
    cr_expect_eq(out[i].ratio_honest, in[i].ratio_honest);
    cr_expect(isnan(out[i].m.probs_cos), "a protocol that was off reads back as NaN");
    cr_expect_eq(out[i].noise_bits, -1, "noise_bits none");
    cr_expect_eq(out[i].value_noise_bits, 2);
    cr_expect_eq(out[i].use_water_fill, 1);
    cr_expect_eq(out[i].m.n_pairs, 5050);
    cr_expect_str_eq(out[i].backend, "cpu");
  }
  free(out);
  /* one line per row, each a complete JSON object */
  FILE *f = fopen(path_in(dir, STORE_ROWS_FILE), "r");
  cr_assert_not_null(f);
  char line[8192];
  int lines = 0;
  while (fgets(line, sizeof line, f)) {
    cr_expect(line[strlen(line) - 1] == '\n');
    json_error_t je;
    json_t *o = json_loads(line, 0, &je);
    cr_expect(json_is_object(o), "line %d: %s", lines + 1, je.text);
    json_decref(o);
    lines++;
  }
  fclose(f);
  cr_expect_eq(lines, 3);
  remove_root();
}

Test(store, skip_set_survives_reopen) {
  OPEN_RUN_STORE();
  store_row r;
  row_init(&r, "sq:b=3,x", 2, 1, 0.9);
  cr_assert_eq(store_append_row(s, &r, &e), SQ_OK);
  store_spectrum sp;
  memset(&sp, 0, sizeof sp);
  sp.layer = 2;
  sp.head = 1;
  sp.head_dim = 4;
  sp.n_tau = 1;
  sp.tau[0] = 0.9;
  sp.eigval[0][0] = 3;
  sp.eigval[1][0] = 2;
  cr_assert_eq(store_append_spectrum(s, &sp, &e), SQ_OK);
  cr_expect(store_has_row(s, "sq:b=3,x", 2, 1));
  store_close(s);
  cr_assert_eq(store_open(&s, dir, &id, 0, &e), SQ_OK, "%s", e.msg);
  cr_expect(store_has_row(s, "sq:b=3,x", 2, 1));
  cr_expect(!store_has_row(s, "sq:b=3,x", 2, 0), "other head");
  cr_expect(!store_has_row(s, "sq:b=3,x", 1, 1), "other layer");
  cr_expect(!store_has_row(s, "sq:b=2,x", 2, 1), "other key");
  cr_expect(!store_has_row(s, "sq:b=3,x|2", 1, 1), "no confusion through the separator");
  cr_expect(store_has_spectrum(s, 2, 1));
  cr_expect(!store_has_spectrum(s, 2, 0));
  /* many keys: the set grows */
  for (int i = 0; i < 1000; i++) {
    char key[64];
    snprintf(key, sizeof key, "k%d", i);
    row_init(&r, key, i % 7, i % 3, 0.5);
    cr_assert_eq(store_append_row(s, &r, &e), SQ_OK);
  }
  for (int i = 0; i < 1000; i++) {
    char key[64];
    snprintf(key, sizeof key, "k%d", i);
    cr_expect(store_has_row(s, key, i % 7, i % 3));
    cr_expect(!store_has_row(s, key, i % 7, 3));
  }
  store_close(s);
  store_spectrum *sps;
  int64_t n;
  cr_assert_eq(store_read_spectra(dir, &sps, &n, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(n, 1);
  cr_expect_eq(sps[0].eigval[0][0], 3);
  cr_expect_eq(sps[0].eigval[1][0], 2);
  cr_expect_eq(sps[0].tau[0], 0.9);
  free(sps);
  remove_root();
}

Test(store, torn_line_is_truncated) {
  OPEN_RUN_STORE();
  store_row r;
  for (int i = 0; i < 3; i++) {
    row_init(&r, "sq:b=3,x", 0, i, 0.9);
    cr_assert_eq(store_append_row(s, &r, &e), SQ_OK);
  }
  store_close(s);
  const char *rows = path_in(dir, STORE_ROWS_FILE);
  long whole = file_size(rows);
  /* a write cut short by a kill: half a row, no newline */
  FILE *f = fopen(rows, "a");
  fputs("{\"key\":\"sq:b=3,x\",\"arm\":\"sq\",\"layer\":0,\"head\":3,\"attn_c", f);
  fclose(f);
  cr_assert_gt(file_size(rows), whole);
  /* readers ignore it */
  store_row *out;
  int64_t n;
  cr_assert_eq(store_read_rows(dir, &out, &n, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(n, 3);
  free(out);
  /* opening for append cuts it off, and the torn row is not counted as done */
  cr_assert_eq(store_open(&s, dir, &id, 0, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(file_size(rows), whole);
  cr_expect_eq(store_n_rows(s), 3);
  cr_expect(!store_has_row(s, "sq:b=3,x", 0, 3));
  row_init(&r, "sq:b=3,x", 0, 3, 0.9);
  cr_assert_eq(store_append_row(s, &r, &e), SQ_OK);
  store_close(s);
  cr_assert_eq(store_read_rows(dir, &out, &n, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(n, 4);
  cr_expect_eq(out[3].head, 3);
  free(out);
  remove_root();
}

Test(store, corrupt_middle_line_is_an_error) {
  OPEN_RUN_STORE();
  store_close(s);
  FILE *f = fopen(path_in(dir, STORE_ROWS_FILE), "a");
  fputs("{\"key\":\"a\",\"arm\":\"sq\",\"layer\":0,\"head\":0}\nnot json\n", f);
  fclose(f);
  cr_expect_eq(store_open(&s, dir, &id, 0, &e), SQ_EFAIL);
  cr_expect(strstr(e.msg, "rows.jsonl:2") != NULL, "names the line: %s", e.msg);
  remove_root();
}

Test(store, identity_mismatch_refused) {
  make_root();
  char dir[300];
  snprintf(dir, sizeof dir, "%s/run", tmp_root);
  store_identity id, other_cfg, other_dump;
  id_init(&id, "aaaa", "ffff");
  id_init(&other_cfg, "bbbb", "ffff");
  other_cfg.config_text = RV_LINE "[run]\nseed = 42\n[sq]\ntotal_bits = 2,3\n";
  id_init(&other_dump, "aaaa", "eeee");
  sq_err e = {0};
  /* checking a directory that does not exist writes nothing */
  cr_assert_eq(store_check(dir, &id, 0, &e), SQ_OK, "%s", e.msg);
  cr_expect_neq(access(dir, F_OK), 0, "store_check created %s", dir);
  store *s;
  cr_assert_eq(store_open(&s, dir, &id, 0, &e), SQ_OK, "%s", e.msg);
  store_row r;
  row_init(&r, "sq:b=3,x", 0, 0, 0.9);
  cr_assert_eq(store_append_row(s, &r, &e), SQ_OK);
  store_close(s);
  long rows_before = file_size(path_in(dir, STORE_ROWS_FILE));

  cr_expect_eq(store_check(dir, &other_cfg, 0, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "different config") && strstr(e.msg, "total_bits = 2,3") && strstr(e.msg, "[sq]"),
            "names the changed line: %s", e.msg);
  cr_expect_eq(store_open(&s, dir, &other_cfg, 0, &e), SQ_EINPUT);
  cr_expect_eq(store_check(dir, &other_dump, 0, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "different dump") != NULL, "%s", e.msg);
  cr_expect_eq(file_size(path_in(dir, STORE_ROWS_FILE)), rows_before, "a refused open touched the rows");
  cr_expect_eq(store_check(dir, &id, 0, &e), SQ_OK, "the same identity resumes: %s", e.msg);

  /* --fresh: the old run is moved aside, not deleted, and the new one starts empty */
  cr_assert_eq(store_open(&s, dir, &other_cfg, 1, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(store_n_rows(s), 0);
  cr_expect(!store_has_row(s, "sq:b=3,x", 0, 0));
  store_close(s);
  void *run;
  cr_assert_eq(store_read_run(dir, &run, &e), SQ_OK);
  cr_expect_str_eq(json_string_value(json_object_get(run, "config_hash")), "bbbb");
  json_decref(run);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "test $(cat %s/old-*/rows.jsonl | wc -l) -eq 1", dir);
  cr_expect_eq(system(cmd), 0, "old rows kept under old-*/");
  remove_root();
}

/* Rows made by code whose numbers differ (an older results version) are refused as such. */
Test(store, older_results_version_refused) {
  make_root();
  char dir[300];
  snprintf(dir, sizeof dir, "%s/run", tmp_root);
  store_identity old, now;
  id_init(&old, "aaaa", "ffff");
  old.config_text = "results_version = 1\n[run]\nseed = 42\n[sq]\ntotal_bits = 3\n";
  id_init(&now, "cccc", "ffff");
  sq_err e = {0};
  store *s;
  cr_assert_eq(store_open(&s, dir, &old, 0, &e), SQ_OK, "%s", e.msg);
  store_close(s);
  cr_expect_eq(store_check(dir, &now, 0, &e), SQ_EINPUT);
  char want[64];
  snprintf(want, sizeof want, "results version 1, now %d", SQEXP_RESULTS_VERSION);
  cr_expect(strstr(e.msg, want) != NULL, "names the results versions: %s", e.msg);
  remove_root();
}

Test(store, rows_without_run_json_refused) {
  make_root();
  char dir[300];
  snprintf(dir, sizeof dir, "%s/run", tmp_root);
  mkdir(dir, 0777);
  FILE *f = fopen(path_in(dir, STORE_ROWS_FILE), "w");
  fputs("{\"key\":\"a\",\"arm\":\"sq\",\"layer\":0,\"head\":0}\n", f);
  fclose(f);
  store_identity id;
  id_init(&id, "aaaa", "ffff");
  sq_err e = {0};
  cr_expect_eq(store_check(dir, &id, 0, &e), SQ_EINPUT);
  cr_expect_eq(store_check(dir, &id, 1, &e), SQ_OK);
  /* a plain file where the directory should be */
  char file[300];
  snprintf(file, sizeof file, "%s/afile", tmp_root);
  fclose(fopen(file, "w"));
  cr_expect_eq(store_check(file, &id, 0, &e), SQ_EINPUT);
  remove_root();
}

Test(store, one_writer_per_directory) {
  RUN_DIR_AND_ID();
  int ready[2], done[2];
  cr_assert_eq(pipe(ready), 0);
  cr_assert_eq(pipe(done), 0);
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) { /* the other writer: hold the store open until told to go */
    store *s;
    sq_err e = {0};
    char c = store_open(&s, dir, &id, 0, &e) == SQ_OK ? 'y' : 'n';
    if (write(ready[1], &c, 1) != 1) _exit(1);
    if (read(done[0], &c, 1) != 1) _exit(1);
    _exit(0);
  }
  char c = 0;
  cr_assert_eq(read(ready[0], &c, 1), 1);
  cr_assert_eq(c, 'y');
  store *s;
  sq_err e = {0};
  cr_expect_eq(store_open(&s, dir, &id, 0, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "in use by another sqexp run") != NULL, "%s", e.msg);
  cr_expect_eq(store_open(&s, dir, &id, 1, &e), SQ_EINPUT, "--fresh must not move a running writer's files");
  cr_assert_eq(write(done[1], "x", 1), 1);
  int st;
  waitpid(pid, &st, 0);
  cr_assert_eq(store_open(&s, dir, &id, 0, &e), SQ_OK, "free again once the writer is gone: %s", e.msg);
  store_close(s);
  remove_root();
}

/* store_sync_async: rows appended before, between and after background fsyncs (many requests,
 * merged while one is pending) are all there after store_close and a reopen. */
Test(store, sync_async_keeps_every_row) {
  OPEN_RUN_STORE();
  store_row r;
  enum { HEADS = 64, PER = 5 };
  for (int h = 0; h < HEADS; h++) {
    for (int i = 0; i < PER; i++) {
      row_init(&r, i % 2 ? "sq:b=3,x" : "tq:b=3,y", h / 8, h % 8 + 8 * i, 0.5 + h / 1000.0);
      cr_assert_eq(store_append_row(s, &r, &e), SQ_OK, "%s", e.msg);
    }
    cr_assert_eq(store_sync_async(s, &e), SQ_OK, "%s", e.msg);
    if (h == HEADS / 2) cr_assert_eq(store_sync(s, &e), SQ_OK, "blocking sync amid async ones: %s", e.msg);
  }
  row_init(&r, "last", 99, 0, 0.25); /* after the last request: store_close must not lose it */
  cr_assert_eq(store_append_row(s, &r, &e), SQ_OK, "%s", e.msg);
  store_close(s);

  cr_assert_eq(store_open(&s, dir, &id, 0, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(store_n_rows(s), HEADS * PER + 1);
  for (int h = 0; h < HEADS; h++)
    for (int i = 0; i < PER; i++)
      cr_expect(store_has_row(s, i % 2 ? "sq:b=3,x" : "tq:b=3,y", h / 8, h % 8 + 8 * i), "head %d row %d", h, i);
  cr_expect(store_has_row(s, "last", 99, 0));
  cr_assert_eq(store_sync_async(s, &e), SQ_OK, "%s", e.msg); /* a request, then close at once */
  store_close(s);
  store_row *out;
  int64_t n;
  cr_assert_eq(store_read_rows(dir, &out, &n, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(n, HEADS * PER + 1);
  cr_expect_eq(out[0].m.attn_cos, 0.5);
  cr_expect_str_eq(out[n - 1].key, "last");
  free(out);
  remove_root();
}

/* A failing background fsync (the spectra file is a link to /dev/null, whose fsync is EINVAL)
 * is reported by the next call that takes an sq_err, naming the file, and by every later one. */
Test(store, sync_async_error_reported_later) {
  OPEN_RUN_STORE();
  store_close(s);
  const char *spectra = path_in(dir, STORE_SPECTRA_FILE);
  cr_assert_eq(unlink(spectra), 0);
  cr_assert_eq(symlink("/dev/null", spectra), 0);
  cr_assert_eq(store_open(&s, dir, &id, 0, &e), SQ_OK, "%s", e.msg);
  store_row r;
  row_init(&r, "sq:b=3,x", 0, 0, 0.9);
  cr_assert_eq(store_append_row(s, &r, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(store_sync_async(s, &e), SQ_OK, "the request itself succeeds: %s", e.msg);
  /* appends go on until the thread's failure is seen (bounded: 10 s) */
  int rc = SQ_OK;
  for (int i = 1; i < 10000 && rc == SQ_OK; i++) {
    row_init(&r, "sq:b=3,x", 0, i, 0.9);
    rc = store_append_row(s, &r, &e);
    if (rc == SQ_OK) nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  cr_assert_eq(rc, SQ_EFAIL, "the background fsync error was never reported");
  cr_expect(strstr(e.msg, "fsync ") && strstr(e.msg, spectra), "message names the file: %s", e.msg);
  cr_expect(strstr(e.msg, "Invalid argument"), "%s", e.msg);
  expect_sticky(s, e.msg, NULL);
  store_close(s);
  remove_root();
}

/* Rows go through the store's queue to its thread: many more than the queue holds come back in
 * append order, and each is counted and in the finished set as soon as store_append_row returns. */
Test(store, many_rows_in_append_order) {
  OPEN_RUN_STORE();
  enum { N = 5000 };
  store_row r;
  for (int i = 0; i < N; i++) {
    char key[64];
    snprintf(key, sizeof key, "sq:b=3,i=%d", i % 45);
    row_init(&r, key, i / 360, (i / 45) % 8, i / (double)N);
    cr_assert_eq(store_append_row(s, &r, &e), SQ_OK, "row %d: %s", i, e.msg);
    cr_assert(store_has_row(s, key, i / 360, (i / 45) % 8), "row %d not in the finished set at once", i);
    cr_assert_eq(store_n_rows(s), i + 1);
    if (i % 45 == 44) cr_assert_eq(store_sync_async(s, &e), SQ_OK, "%s", e.msg);
  }
  cr_assert_eq(store_sync(s, &e), SQ_OK, "%s", e.msg);
  cr_expect_eq(file_size(path_in(dir, STORE_ROWS_FILE)) > 0, 1);
  store_close(s);
  store_row *out;
  int64_t n;
  cr_assert_eq(store_read_rows(dir, &out, &n, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(n, N);
  for (int i = 0; i < N; i++) {
    char key[64];
    snprintf(key, sizeof key, "sq:b=3,i=%d", i % 45);
    cr_assert_str_eq(out[i].key, key, "line %d", i + 1);
    cr_assert_eq(out[i].layer, i / 360, "line %d", i + 1);
    cr_assert_eq(out[i].head, (i / 45) % 8, "line %d", i + 1);
    cr_assert_eq(out[i].m.attn_cos, i / (double)N, "line %d", i + 1);
  }
  free(out);
  remove_root();
}

/* store_close writes what is still queued: one row, and a burst larger than the queue, each
 * closed at once after the last append (no store_sync). */
Test(store, close_right_after_append_loses_nothing) {
  RUN_DIR_AND_ID();
  store *s;
  sq_err e = {0};
  store_row r;
  cr_assert_eq(store_open(&s, dir, &id, 0, &e), SQ_OK, "%s", e.msg);
  row_init(&r, "only", 0, 0, 0.5);
  cr_assert_eq(store_append_row(s, &r, &e), SQ_OK, "%s", e.msg);
  store_close(s);
  store_row *out;
  int64_t n;
  cr_assert_eq(store_read_rows(dir, &out, &n, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(n, 1);
  cr_expect_str_eq(out[0].key, "only");
  free(out);

  cr_assert_eq(store_open(&s, dir, &id, 0, &e), SQ_OK, "%s", e.msg);
  for (int i = 0; i < 2000; i++) {
    row_init(&r, "burst", i / 8, i % 8, i);
    cr_assert_eq(store_append_row(s, &r, &e), SQ_OK, "%s", e.msg);
  }
  store_close(s);
  cr_assert_eq(store_read_rows(dir, &out, &n, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(n, 2001);
  for (int i = 0; i < 2000; i++) cr_assert_eq(out[1 + i].m.attn_cos, i, "line %d", i + 2);
  free(out);
  remove_root();
}

/* A failing row write on the store's thread (the file size limit, RLIMIT_FSIZE, cuts a line short
 * and then refuses writes with EFBIG) is reported by the next call, naming the file, and by every
 * later one; the file keeps whole lines only (the short write is cut off again), and the rows
 * after the failure are not written (no gap followed by later rows). */
Test(store, row_write_error_reported_later) {
  OPEN_RUN_STORE();
  const char *rows = path_in(dir, STORE_ROWS_FILE);
  char rows_path[512];
  snprintf(rows_path, sizeof rows_path, "%s", rows);
  cr_assert_eq(file_size(rows_path), 0);
  /* this test runs in its own process: the limit and the ignored SIGXFSZ stay in it */
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit old, lim;
  cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
  lim = old;
  lim.rlim_cur = 5000;
  cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
  store_row r;
  int rc = SQ_OK, appended = 0;
  for (int i = 0; i < 100 && rc == SQ_OK; i++) {
    row_init(&r, "sq:b=3,x", 0, i, 0.9);
    rc = store_append_row(s, &r, &e); /* may already report it, if the thread is that quick */
    appended += rc == SQ_OK;
  }
  if (rc == SQ_OK) rc = store_sync(s, &e);
  cr_assert_eq(rc, SQ_EFAIL, "the write error was never reported");
  cr_expect(strstr(e.msg, "cannot append to ") && strstr(e.msg, rows_path), "message names the file: %s", e.msg);
  expect_sticky(s, e.msg, &r);
  store_close(s);
  cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);

  long size = file_size(rows_path);
  cr_expect(size > 0 && size <= 5000, "size %ld", size);
  store_row *out;
  int64_t n;
  cr_assert_eq(store_read_rows(dir, &out, &n, &e), SQ_OK, "%s", e.msg);
  cr_expect(n > 0 && n < appended, "%lld rows of %d", (long long)n, appended);
  for (int64_t i = 0; i < n; i++) cr_expect_eq(out[i].head, i, "the rows before the failure, in order");
  free(out);
  /* whole lines only: the last byte is a newline */
  FILE *f = fopen(rows_path, "rb");
  cr_assert_not_null(f);
  cr_assert_eq(fseek(f, -1, SEEK_END), 0);
  cr_expect_eq(fgetc(f), '\n');
  fclose(f);
  remove_root();
}

/* The readers parse lines in parallel; what they return and the error they report are a serial
 * read's: rows in file order, empty lines skipped but counted in line numbers, a torn tail
 * ignored, and of several bad lines the first one named, with its own message and code. */
static void rewrite_lines(const char *path, int n, const char *const *replace, const int *at, int k) {
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  char **line = calloc((size_t)n, sizeof *line);
  for (int i = 0; i < n; i++) {
    size_t cap = 0;
    cr_assert_gt(getline(&line[i], &cap, f), 0);
  }
  fclose(f);
  f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs("\n", f); /* line 1: empty */
  for (int i = 0; i < n; i++) {
    const char *text = line[i];
    for (int j = 0; j < k; j++)
      if (at[j] == i + 2) text = replace[j]; /* file line numbers count the empty first line */
    fputs(text, f);
    free(line[i]);
  }
  fputs("{\"key\":\"torn", f);
  fclose(f);
  free(line);
}

Test(store, reader_reports_the_first_bad_line) {
  OPEN_RUN_STORE();
  enum { N = 1000 };
  store_row r;
  for (int i = 0; i < N; i++) {
    row_init(&r, "sq:b=3,x", i / 8, i % 8, i);
    cr_assert_eq(store_append_row(s, &r, &e), SQ_OK, "%s", e.msg);
  }
  store_close(s);
  char rows[512];
  snprintf(rows, sizeof rows, "%s", path_in(dir, STORE_ROWS_FILE));
  char backup[600];
  snprintf(backup, sizeof backup, "%s.orig", rows);
  char cmd[1300];
  snprintf(cmd, sizeof cmd, "cp %s %s", rows, backup);
  cr_assert_eq(system(cmd), 0);

  /* an empty first line and a torn tail: every row, in order */
  rewrite_lines(rows, N, NULL, NULL, 0);
  store_row *out = NULL;
  int64_t n;
  cr_assert_eq(store_read_rows(dir, &out, &n, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(n, N);
  for (int i = 0; i < N; i++) cr_assert_eq(out[i].m.attn_cos, i, "row %d", i);
  free(out);

  /* line 300 lacks head (a row error), line 700 is not JSON: line 300 is the one reported */
  static const char *const bad[2] = {"{\"key\":\"a\",\"arm\":\"sq\",\"layer\":0}\n", "not json\n"};
  static const int at[2] = {300, 700};
  snprintf(cmd, sizeof cmd, "cp %s %s", backup, rows);
  cr_assert_eq(system(cmd), 0);
  rewrite_lines(rows, N, bad, at, 2);
  out = NULL;
  cr_expect_eq(store_read_rows(dir, &out, &n, &e), SQ_EINPUT);
  cr_expect(strstr(e.msg, "rows.jsonl:300: row lacks key/arm/layer/head") != NULL, "%s", e.msg);
  cr_expect_null(out);
  /* with line 300 whole again, line 700 is reported, as a corrupt file */
  cr_assert_eq(system(cmd), 0);
  rewrite_lines(rows, N, bad + 1, at + 1, 1);
  cr_expect_eq(store_read_rows(dir, &out, &n, &e), SQ_EFAIL);
  cr_expect(strstr(e.msg, "rows.jsonl:700: not a JSON object (") && strstr(e.msg, "the file is corrupt"), "%s", e.msg);
  remove_root();
}
