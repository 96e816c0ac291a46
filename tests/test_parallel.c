/* The host-side parallelism of `sqexp run` (plans and eigendecompositions built on OpenMP threads,
 * the next layer read by a background thread) changes no number: the same small config (grid,
 * spectrum, shift and stability experiments, three layers) run with OMP_NUM_THREADS=1 and 4 and
 * with the prefetch on and off (SQEXP_PREFETCH=0) and with plans built a head ahead on a thread
 * (SQEXP_PLAN_AHEAD=1, the CUDA backend's default) gives the same rows, line for line, timing
 * fields ignored. Also: a read error found by the prefetch thread surfaces when that layer is
 * reached (exit 2, the earlier layers' rows written); SIGINT while the prefetch thread runs
 * exits 130 cleanly (under ASan: no leak report) and a rerun completes to the same rows. */
#include "util/tu_proc.h"
#include "util/tu_rows.h"
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "util/tu_tmp.h"

static char root[256], dump_path[400], cfg_path[400];

/* Reached only when every assertion before it held: a failing test keeps its files for a look. */
static void remove_root(void) {
  cr_expect_eq(tu_rmtree(root), 0);
}

/* Start `sqexp args...` with OMP_NUM_THREADS=omp, SQEXP_PREFETCH=prefetch and
 * SQEXP_PLAN_AHEAD=ahead (NULL: unset), output appended to root/log; returns the pid. */
static pid_t start_ahead(const char *const *args, const char *omp, const char *prefetch, const char *ahead) {
  char log[400];
  snprintf(log, sizeof log, "%s/log", root);
  return tu_sqexp_start(&(tu_proc_opts){.log = log, .omp = omp, .prefetch = prefetch, .plan_ahead = ahead}, args);
}

static pid_t start(const char *const *args, const char *omp, const char *prefetch) {
  return start_ahead(args, omp, prefetch, NULL);
}

static int run_env(const char *const *args, const char *omp, const char *prefetch) {
  return tu_exit_code(tu_wait_status(start(args, omp, prefetch)));
}

/* A 3-layer, 2-domain dump (uncompressed, so the test can poke a value into it) and a config
 * with every arm and the experiments that read layers (grid, shift, stability). threads = 0: the
 * thread count comes from OMP_NUM_THREADS. */
static void setup(void) {
  cr_assert_not_null(tu_mkdtemp(root, sizeof root, "parallel"));
  snprintf(dump_path, sizeof dump_path, "%s/small.h5", root);
  const char *synth[] = {"synth", "--shape", "smollm2-135m", "-o", dump_path, "--tokens", "1024", "--seq-len", "128",
                         "--layers", "0,5,10", "--domains", "2", "--compress", "0", NULL};
  cr_assert_eq(run_env(synth, NULL, NULL), 0, "sqexp synth failed (see %s/log)", root);
  snprintf(cfg_path, sizeof cfg_path, "%s/small.ini", root);
  FILE *f = fopen(cfg_path, "w");
  cr_assert_not_null(f);
  fprintf(f,
          "[run]\ndump = %s\nout = %s/default_out\nbackend = cpu\nthreads = 0\n"
          "arms = tq, sq, sq_paper_v1, lowrank\nmax_calib_tokens = 256\nmax_eval_tokens = 256\n"
          "experiments = grid, spectrum, shift, stability\n"
          "[tq]\ntotal_bits = 2, 3\n[sq]\ntotal_bits = 3\nuse_water_fill = true, false\n"
          "[sq_paper_v1]\ntotal_bits = 3\n[lowrank]\nrank = 0, 8\n[stability]\ncalib_tokens = 64, all\n",
          dump_path, root);
  fclose(f);
}

/* The lines of DIR/name in file order (parallel runs must write the same order) without timing. */
static tu_rows load_rows(const char *dir, const char *name) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return tu_rows_load(path, 0);
}

/* Row i of a equals row i of b exactly (JSON numbers are printed with 17 digits: equal text is
 * equal doubles). `sorted`: compare as sets of lines (a resumed run appends in another order). */
static int cmp_text(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void expect_same(const char *a, const char *b, const char *name, int sorted) {
  tu_rows x = load_rows(a, name), y = load_rows(b, name);
  cr_assert_eq(x.n, y.n, "%s: %zu rows in %s vs %zu in %s", name, x.n, a, y.n, b);
  cr_assert_gt(x.n, 0, "%s/%s is empty", a, name);
  char **tx = malloc(x.n * sizeof *tx), **ty = malloc(y.n * sizeof *ty);
  for (size_t i = 0; i < x.n; i++) {
    tx[i] = json_dumps(x.v[i], JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    ty[i] = json_dumps(y.v[i], JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
  }
  if (sorted) {
    qsort(tx, x.n, sizeof *tx, cmp_text);
    qsort(ty, y.n, sizeof *ty, cmp_text);
  }
  for (size_t i = 0; i < x.n; i++) {
    cr_expect_str_eq(tx[i], ty[i], "%s row %zu differs:\n  %s: %s\n  %s: %s", name, i, a, tx[i], b, ty[i]);
    free(tx[i]);
    free(ty[i]);
  }
  free(tx);
  free(ty);
  tu_rows_free(&x);
  tu_rows_free(&y);
}

static const char *const stores[] = {"rows.jsonl", "spectra.jsonl", "shift/rows.jsonl", "stability/rows.jsonl"};

static void expect_same_run(const char *ref, const char *out, int sorted) {
  for (size_t i = 0; i < sizeof stores / sizeof *stores; i++) expect_same(ref, out, stores[i], sorted);
}

static void out_dir(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", root, name); }

Test(parallel, thread_count_and_prefetch_change_no_row, .timeout = 900) {
  setup();
  char ref[400];
  out_dir(ref, sizeof ref, "serial");
  const char *serial[] = {"run", cfg_path, "--out", ref, "--quiet", NULL};
  cr_assert_eq(run_env(serial, "1", "0"), 0, "serial run failed (see %s/log)", root);
  const struct {
    const char *omp, *prefetch, *ahead, *name;
  } runs[] = {{"4", NULL, NULL, "omp4_prefetch"}, {"4", "0", NULL, "omp4_inline"}, /* against (1, inline): both factors */
              {"4", NULL, "1", "omp4_plan_ahead"}}; /* plans built a head ahead on a thread (the CUDA default) */
  for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) {
    char out[400];
    out_dir(out, sizeof out, runs[k].name);
    const char *args[] = {"run", cfg_path, "--out", out, "--quiet", NULL};
    int rc = tu_exit_code(tu_wait_status(start_ahead(args, runs[k].omp, runs[k].prefetch, runs[k].ahead)));
    cr_assert_eq(rc, 0, "%s failed (see %s/log)", runs[k].name, root);
    expect_same_run(ref, out, 0);
  }
  /* provenance: read is the read work, read_wait the part waited for (<= read, up to rounding) */
  char prov[600];
  snprintf(prov, sizeof prov, "%s/omp4_prefetch/provenance.json", root);
  json_error_t je;
  json_t *p = json_load_file(prov, 0, &je);
  cr_assert_not_null(p, "%s: %s", prov, je.text);
  json_t *ph = json_object_get(json_object_get(p, "latest"), "phase_s");
  cr_assert(json_is_real(json_object_get(ph, "read")) && json_is_real(json_object_get(ph, "read_wait")),
            "phase_s has read and read_wait");
  cr_expect_leq(json_real_value(json_object_get(ph, "read_wait")), json_real_value(json_object_get(ph, "read")) + 0.05);
  json_decref(p);
  /* the same for plan building: plan is the work, plan_wait the part waited for */
  snprintf(prov, sizeof prov, "%s/omp4_plan_ahead/provenance.json", root);
  p = json_load_file(prov, 0, &je);
  cr_assert_not_null(p, "%s: %s", prov, je.text);
  ph = json_object_get(json_object_get(p, "latest"), "phase_s");
  cr_assert(json_is_real(json_object_get(ph, "plan")) && json_is_real(json_object_get(ph, "plan_wait")),
            "phase_s has plan and plan_wait");
  cr_expect_gt(json_real_value(json_object_get(ph, "plan")), 0.0);
  cr_expect_leq(json_real_value(json_object_get(ph, "plan_wait")), json_real_value(json_object_get(ph, "plan")) + 0.05);
  json_decref(p);
  remove_root();
}

/* Overwrite key (token 0, head 0, dim 0) of /layers/<layer>/k with an fp16 NaN, through the
 * dataset's own file type (the dump is fp16 and uncompressed). */
static void poison_layer(const char *path, int layer) {
  hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
  cr_assert_geq(f, 0);
  char ds_path[64];
  snprintf(ds_path, sizeof ds_path, "/layers/%d/k", layer);
  hid_t ds = H5Dopen2(f, ds_path, H5P_DEFAULT);
  cr_assert_geq(ds, 0);
  hid_t ft = H5Dget_type(ds);
  cr_assert_eq(H5Tget_size(ft), 2, "the synthetic dump is fp16");
  hid_t fsp = H5Dget_space(ds);
  hsize_t start[3] = {0, 0, 0}, count[3] = {1, 1, 1};
  H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL);
  hid_t msp = H5Screate_simple(3, count, NULL);
  unsigned short nan16 = 0x7E00;
  cr_assert_geq(H5Dwrite(ds, ft, msp, fsp, H5P_DEFAULT, &nan16), 0);
  H5Sclose(msp);
  H5Sclose(fsp);
  H5Tclose(ft);
  H5Dclose(ds);
  H5Fclose(f);
}

Test(parallel, prefetch_error_surfaces_at_its_layer, .timeout = 600) {
  setup();
  poison_layer(dump_path, 10);
  char out[400];
  out_dir(out, sizeof out, "bad");
  const char *args[] = {"run", cfg_path, "--out", out, "--quiet", "--set", "run.experiments=grid", NULL};
  cr_assert_eq(run_env(args, "2", NULL), 2, "a non-finite value is bad input (see %s/log)", root);
  char cmd[1600];
  snprintf(cmd, sizeof cmd, "grep -q 'layers/10/k: 1 non-finite' %s/log", root);
  cr_expect_eq(system(cmd), 0, "the message names the dataset (see %s/log)", root);
  /* layers 0 and 5 were computed before layer 10 (read in the background) was reached */
  tu_rows r = load_rows(out, "rows.jsonl");
  int n_layer[11] = {0};
  for (size_t i = 0; i < r.n; i++) {
    json_int_t l = json_integer_value(json_object_get(r.v[i], "layer"));
    cr_assert(l == 0 || l == 5, "a row of layer %lld was written", (long long)l);
    n_layer[l]++;
  }
  cr_expect_gt(n_layer[0], 0);
  cr_expect_eq(n_layer[0], n_layer[5], "layer 5 is complete before the error");
  tu_rows_free(&r);
  remove_root();
}

static long file_lines(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  long n = 0;
  for (int c; (c = fgetc(f)) != EOF;) n += c == '\n';
  fclose(f);
  return n;
}

Test(parallel, sigint_with_prefetch_running_then_resume, .timeout = 900) {
  setup();
  char ref[400], out[400], rows[600];
  out_dir(ref, sizeof ref, "serial");
  out_dir(out, sizeof out, "interrupted");
  snprintf(rows, sizeof rows, "%s/rows.jsonl", out);
  const char *serial[] = {"run", cfg_path, "--out", ref, "--quiet", NULL};
  cr_assert_eq(run_env(serial, "1", "0"), 0, "serial run failed (see %s/log)", root);
  const char *args[] = {"run", cfg_path, "--out", out, "--quiet", NULL};
  /* SIGINT as soon as layer 0 has rows: the thread reading layer 5 was started before them */
  pid_t pid = start(args, "4", NULL);
  int st = 0, exited = 0;
  for (int i = 0; i < 60000 && !exited; i++) {
    if (waitpid(pid, &st, WNOHANG) == pid) exited = 1;
    else if (file_lines(rows) > 0) break;
    else nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  cr_assert(!exited, "the run ended before it could be interrupted (see %s/log)", root);
  kill(pid, SIGINT);
  st = tu_wait_status(pid);
  cr_expect_eq(tu_exit_code(st), 130, "SIGINT exits 130 (under ASan, another code = a leak report; see %s/log)", root);
  char cmd[1600];
  snprintf(cmd, sizeof cmd, "! grep -q 'Sanitizer' %s/log", root);
  cr_expect_eq(system(cmd), 0, "no sanitizer report (see %s/log)", root);
  cr_assert_eq(run_env(args, "4", NULL), 0, "the resumed run failed (see %s/log)", root);
  expect_same_run(ref, out, 1);
  remove_root();
}
