/* The acceptance test of issue 5: `sqexp run` killed with SIGKILL at 10 random moments and rerun
 * after each kill ends with exactly the rows of an uninterrupted run (sorted by key/layer/head,
 * timing fields ignored, numbers equal exactly). Also: bad input writes nothing; a changed config
 * is refused; --dry-run writes nothing. Uses $SQEXP_BIN (synth + run) on a small synthetic dump. */
#include "util/tu_proc.h"
#include "util/tu_rows.h"
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rng.h"
#include "util/tu_tmp.h"

static char root[256], dump_path[400], cfg_path[400];

/* Reached only when every assertion before it held: a failing test keeps its files for a look. */
static void remove_root(void) {
  cr_expect_eq(tu_rmtree(root), 0);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Start `sqexp args...` with output appended to root/log. */
static pid_t start(const char *const *args) {
  char log[400];
  snprintf(log, sizeof log, "%s/log", root);
  return tu_sqexp_start(&(tu_proc_opts){.log = log}, args);
}

static int run_to_end(const char *const *args) { return tu_exit_code(tu_wait_status(start(args))); }

static void setup_dump_and_config(void) {
  cr_assert_not_null(tu_mkdtemp(root, sizeof root, "resume"));
  snprintf(dump_path, sizeof dump_path, "%s/small.h5", root);
  const char *synth[] = {"synth", "--shape", "smollm2-135m", "-o", dump_path, "--tokens", "1024", "--seq-len", "128",
                         "--layers", "0,10", NULL};
  cr_assert_eq(run_to_end(synth), 0, "sqexp synth failed (see %s/log)", root);
  snprintf(cfg_path, sizeof cfg_path, "%s/small.ini", root);
  FILE *f = fopen(cfg_path, "w");
  cr_assert_not_null(f);
  fprintf(f,
          "[run]\ndump = %s\nout = %s/default_out\nbackend = cpu\nthreads = 1\narms = tq, sq, sq_paper_v1\n"
          "max_calib_tokens = 256\nmax_eval_tokens = 256\n"
          "[tq]\ntotal_bits = 2, 3\n[sq]\ntotal_bits = 3\nuse_water_fill = true, false\n[sq_paper_v1]\ntotal_bits = 3\n",
          dump_path, root);
  fclose(f);
}

static tu_rows load_rows(const char *dir, const char *name) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  return tu_rows_load(path, 1);
}

static void expect_same_rows(const char *a, const char *b, const char *name) {
  tu_rows x = load_rows(a, name), y = load_rows(b, name);
  cr_assert_eq(x.n, y.n, "%s: %zu rows uninterrupted vs %zu after kills", name, x.n, y.n);
  for (size_t i = 0; i < x.n; i++) {
    if (i > 0) cr_expect_neq(tu_rows_cmp(&y.v[i - 1], &y.v[i]), 0, "%s: duplicate row after resume", name);
    if (!json_equal(x.v[i], y.v[i])) {
      char *sx = json_dumps(x.v[i], JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
      char *sy = json_dumps(y.v[i], JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
      cr_expect_fail("%s row %zu differs:\n  uninterrupted %s\n  resumed       %s", name, i, sx, sy);
      free(sx);
      free(sy);
    }
  }
  tu_rows_free(&x);
  tu_rows_free(&y);
}

Test(resume, sigkill_ten_times_equals_uninterrupted, .timeout = 600) {
  setup_dump_and_config();
  char ref[400], out[400];
  snprintf(ref, sizeof ref, "%s/uninterrupted", root);
  snprintf(out, sizeof out, "%s/killed", root);
  const char *ref_args[] = {"run", cfg_path, "--out", ref, "--quiet", NULL};
  double t0 = now_s();
  cr_assert_eq(run_to_end(ref_args), 0, "uninterrupted run failed (see %s/log)", root);
  double T = now_s() - t0;

  uint64_t seed = getenv("SQEXP_TEST_SEED") ? strtoull(getenv("SQEXP_TEST_SEED"), NULL, 10)
                                            : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
  cr_log_info("kill delays drawn with seed %llu (set SQEXP_TEST_SEED to repeat); full run %.2f s",
              (unsigned long long)seed, T);
  rng_t g;
  rng_seed(&g, seed);
  const char *args[] = {"run", cfg_path, "--out", out, "--quiet", NULL};
  int killed_mid_run = 0;
  for (int k = 0; k < 10; k++) {
    /* spread over the run: each rerun gets a random 2%..20% of a full run's time, so the kills
     * land in reading, calibration, evaluation and appending at different points */
    double delay = T * (0.02 + 0.18 * rng_uniform(&g));
    pid_t pid = start(args);
    struct timespec ts = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    kill(pid, SIGKILL);
    int st = tu_wait_status(pid);
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) killed_mid_run++;
    else cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "kill %d: a rerun failed (see %s/log)", k, root);
  }
  cr_log_info("%d of 10 kills interrupted a running sqexp", killed_mid_run);
  cr_expect_geq(killed_mid_run, 1, "no kill landed while sqexp was running");
  cr_assert_eq(run_to_end(args), 0, "final resumed run failed (see %s/log)", root);
  expect_same_rows(ref, out, "rows.jsonl");
  expect_same_rows(ref, out, "spectra.jsonl");
  /* the rerun after completion recomputes nothing and changes nothing */
  char before[600];
  snprintf(before, sizeof before, "%s/rows.jsonl", out);
  struct stat s1, s2;
  cr_assert_eq(stat(before, &s1), 0);
  cr_assert_eq(run_to_end(args), 0);
  cr_assert_eq(stat(before, &s2), 0);
  cr_expect_eq(s1.st_size, s2.st_size, "a finished run grew on rerun");
  remove_root();
}

Test(resume, bad_input_writes_nothing, .timeout = 300) {
  setup_dump_and_config();
  char out[400], set_layer[64];
  snprintf(out, sizeof out, "%s/never", root);
  snprintf(set_layer, sizeof set_layer, "run.layers=7");
  const char *bad_layer[] = {"run", cfg_path, "--out", out, "--set", set_layer, NULL};
  cr_expect_eq(run_to_end(bad_layer), 2, "a layer missing from the dump is bad input");
  const char *bad_key[] = {"run", cfg_path, "--out", out, "--set", "sq.no_such_key=1", NULL};
  cr_expect_eq(run_to_end(bad_key), 2);
  const char *bad_backend[] = {"run", cfg_path, "--out", out, "--backend", "tpu", NULL};
  cr_expect_eq(run_to_end(bad_backend), 2);
  const char *dry[] = {"run", cfg_path, "--out", out, "--dry-run", NULL};
  cr_expect_eq(run_to_end(dry), 0);
  cr_expect_neq(access(out, F_OK), 0, "%s was created by a run that should write nothing", out);
  char missing_dump[600];
  snprintf(missing_dump, sizeof missing_dump, "run.dump=%s/nope.h5", root);
  const char *no_dump[] = {"run", cfg_path, "--out", out, "--set", missing_dump, NULL};
  cr_expect_eq(run_to_end(no_dump), 2);
  cr_expect_neq(access(out, F_OK), 0);
  remove_root();
}

Test(resume, changed_config_refused_unless_fresh, .timeout = 300) {
  setup_dump_and_config();
  char out[400];
  snprintf(out, sizeof out, "%s/res", root);
  const char *one[] = {"run", cfg_path, "--out", out, "--quiet", "--set", "run.arms=sq_paper_v1", NULL};
  cr_assert_eq(run_to_end(one), 0, "see %s/log", root);
  const char *changed[] = {"run", cfg_path, "--out", out, "--quiet", "--set", "run.arms=sq_paper_v1",
                           "--set", "sq_paper_v1.total_bits=2", NULL};
  cr_expect_eq(run_to_end(changed), 2);
  char cmd[1600];
  snprintf(cmd, sizeof cmd, "grep -q 'different config' %s/log", root);
  cr_expect_eq(system(cmd), 0, "the refusal says the config changed");
  const char *fresh[] = {"run", cfg_path, "--out", out, "--quiet", "--fresh", "--set", "run.arms=sq_paper_v1",
                         "--set", "sq_paper_v1.total_bits=2", NULL};
  cr_expect_eq(run_to_end(fresh), 0);
  snprintf(cmd, sizeof cmd, "ls -d %s/old-* >/dev/null && grep -q 'sq_paper_v1:b=2' %s/rows.jsonl && ! grep -q 'sq_paper_v1:b=3' %s/rows.jsonl",
           out, out, out);
  cr_expect_eq(system(cmd), 0, "--fresh moved the old rows aside and started over");
  remove_root();
}
