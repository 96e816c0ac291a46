/* The shift and stability experiments, end to end through $SQEXP_BIN on small synthetic dumps:
 * row counts worked out by hand, the in-domain shift rows against the grid rows of runs restricted
 * to one domain (a separate code path: the ordinary sweep), the subspace overlap (1 at N = all,
 * in [0, 1] otherwise), the single-domain notice, --dry-run, and SIGKILL + rerun. */
#include "util/tu_proc.h"
#include "util/tu_rows.h"
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "util/tu_tmp.h"

static char root[256];

/* Start `sqexp args...` in root with stdout+stderr to root/<log>; returns the pid. */
static pid_t start(const char *log, const char *const *args) {
  char path[400];
  snprintf(path, sizeof path, "%s/%s", root, log);
  return tu_sqexp_start(&(tu_proc_opts){.log = path, .truncate_log = 1, .cwd = root}, args);
}

static int run(const char *log, const char *const *args) { return tu_exit_code(tu_wait_status(start(log, args))); }

static char *slurp(const char *rel) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = '\0';
  fclose(f);
  return s;
}

static int exists(const char *rel) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  return access(path, F_OK) == 0;
}

/* The rows of a JSONL file under the test's root, in file order, without timing. */
static tu_rows load(const char *rel) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  return tu_rows_load(path, 0);
}

static const char *str(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }
static long long num(const json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }
static double real(const json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

static const json_t *find(const tu_rows *r, const char *key, long long layer, long long head) {
  for (size_t i = 0; i < r->n; i++)
    if (!strcmp(str(r->v[i], "key"), key) && num(r->v[i], "layer") == layer && num(r->v[i], "head") == head)
      return r->v[i];
  return NULL;
}

static int count_prefix(const tu_rows *r, const char *prefix, const char *arm) {
  int n = 0;
  for (size_t i = 0; i < r->n; i++)
    n += !strncmp(str(r->v[i], "key"), prefix, strlen(prefix)) && (!arm || !strcmp(str(r->v[i], "arm"), arm));
  return n;
}

/* The dumps: 2 layers x 3 KV heads (smollm2 shape), 2 domains round-robin over 16 sequences of
 * 64 tokens (a third calibration); and a single-domain twin. The config: tq 3 bits (1 point), sq 3
 * bits with and without water-fill (2 points), sq_paper_v1 3 bits (1 point). */
enum { LAYERS = 2, HEADS = 3, DOMAINS = 2, N_TQ = 1, N_CAL = 3, BUDGETS = 3 };

static void setup(void) {
  cr_assert_not_null(tu_mkdtemp(root, sizeof root, "experiments"));
  const char *s2[] = {"synth", "--shape", "smollm2-135m", "-o", "d2.h5", "--tokens", "1024", "--seq-len", "64",
                      "--layers", "0,10", "--domains", "2", NULL};
  cr_assert_eq(run("synth2.log", s2), 0, "synth failed (see %s/synth2.log)", root);
  const char *s1[] = {"synth", "--shape", "smollm2-135m", "-o", "d1.h5", "--tokens", "512", "--seq-len", "64",
                      "--layers", "0", NULL};
  cr_assert_eq(run("synth1.log", s1), 0, "synth failed (see %s/synth1.log)", root);
  char path[400];
  snprintf(path, sizeof path, "%s/c.ini", root);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fprintf(f, "[run]\ndump = d2.h5\nout = out\nbackend = cpu\nthreads = 1\narms = tq, sq, sq_paper_v1\n"
             "max_calib_tokens = 128\nmax_eval_tokens = 128\nexperiments = grid, spectrum, shift, stability\n"
             "[tq]\ntotal_bits = 3\n[sq]\ntotal_bits = 3\nuse_water_fill = true, false\n[sq_paper_v1]\ntotal_bits = 3\n"
             "[stability]\ncalib_tokens = 32, 64, all\n");
  fclose(f);
}

static void teardown_ok(void) {
  cr_expect_eq(tu_rmtree(root), 0);
}

/* Every field equal (eval_s dropped) except the key, which carries the shift prefix. */
static void expect_same_row(const json_t *grid, const json_t *shift, const char *what) {
  json_t *a = json_deep_copy(grid), *b = json_deep_copy(shift);
  json_object_del(a, "key");
  json_object_del(b, "key");
  char *ta = json_dumps(a, JSON_SORT_KEYS | JSON_COMPACT), *tb = json_dumps(b, JSON_SORT_KEYS | JSON_COMPACT);
  cr_expect(json_equal(a, b), "%s: grid row %s\n  != shift row %s", what, ta, tb);
  free(ta);
  free(tb);
  json_decref(a);
  json_decref(b);
}

Test(experiments, shift_and_stability, .init = setup, .timeout = 600) {
  const char *dry[] = {"run", "c.ini", "--dry-run", NULL};
  cr_assert_eq(run("dry.log", dry), 0);
  cr_assert(!exists("out"), "--dry-run wrote out/");
  char *log = slurp("dry.log");
  cr_expect(strstr(log, "; shift: 2 domains") != NULL, "dry run: %s", log);
  cr_expect(strstr(log, "; stability: 3 calibration budgets (32,64,all)") != NULL, "dry run: %s", log);
  free(log);

  const char *full[] = {"run", "c.ini", "--quiet", NULL};
  cr_assert_eq(run("full.log", full), 0, "run failed (see %s/full.log)", root);
  tu_rows grid = load("out/rows.jsonl"), shift = load("out/shift/rows.jsonl"), stab = load("out/stability/rows.jsonl");
  /* by hand: grid 4 points; shift = tq once per eval domain + calibrated arms per ordered pair */
  cr_expect_eq(grid.n, (N_TQ + N_CAL) * LAYERS * HEADS);
  cr_expect_eq(shift.n, (DOMAINS * N_TQ + DOMAINS * DOMAINS * N_CAL) * LAYERS * HEADS);
  cr_expect_eq(count_prefix(&shift, "eval=domain0|tq:", "tq"), N_TQ * LAYERS * HEADS);
  cr_expect_eq(count_prefix(&shift, "calib=domain1|eval=domain0|", NULL), N_CAL * LAYERS * HEADS);
  cr_expect_eq(count_prefix(&shift, "calib=domain0|eval=domain0|sq:", "sq"), 2 * LAYERS * HEADS);
  /* stability: per budget one spectral row and one row of the first sq point per (layer, head) */
  cr_expect_eq(stab.n, BUDGETS * 2 * LAYERS * HEADS);
  cr_expect_eq(count_prefix(&stab, "N=all|", "stability"), LAYERS * HEADS);
  cr_expect_eq(count_prefix(&stab, "N=32|sq:b=3,", "sq"), LAYERS * HEADS);
  for (size_t i = 0; i < stab.n; i++) {
    const json_t *o = stab.v[i];
    if (strcmp(str(o, "arm"), "stability")) continue;
    double ok = real(o, "k_cos"), ov = real(o, "v_cos");
    if (!strncmp(str(o, "key"), "N=all|", 6)) {
      cr_expect(fabs(ok - 1) < 1e-9 && fabs(ov - 1) < 1e-9, "overlap at all: %.17g %.17g", ok, ov);
      cr_expect_eq(real(o, "k_rel_mse"), 0.0);
    } else {
      cr_expect(ok >= 0 && ok <= 1 + 1e-12 && ov >= 0 && ov <= 1 + 1e-12, "%s: overlap %.17g %.17g", str(o, "key"), ok,
                ov);
      cr_expect(ok < 1 - 1e-6, "%s L%lld H%lld: 32/64 of 128 tokens should move the key subspace (%.17g)",
                str(o, "key"), num(o, "layer"), num(o, "head"), ok);
    }
  }
  /* the sq row at N = all is the main grid's sq row (same calibration, same evaluation) */
  int same = 0;
  for (size_t i = 0; i < grid.n; i++) {
    const json_t *g = grid.v[i];
    char key[400];
    if (strcmp(str(g, "arm"), "sq")) continue;
    snprintf(key, sizeof key, "N=all|%s", str(g, "key"));
    const json_t *s = find(&stab, key, num(g, "layer"), num(g, "head"));
    if (s) expect_same_row(g, s, key), same++;
  }
  cr_expect_eq(same, LAYERS * HEADS, "the N=all sq rows should be the first sq point's grid rows");
  cr_expect_eq(count_prefix(&stab, "N=all|sq:", "sq"), LAYERS * HEADS);

  /* in-domain shift rows = the grid rows of a run restricted to that domain */
  static const char *const doms[] = {"domain0", "domain1"};
  for (int d = 0; d < DOMAINS; d++) {
    char set_dom[64], set_out[64], logn[96], dir[128];
    snprintf(set_dom, sizeof set_dom, "run.domains=%s", doms[d]);
    snprintf(set_out, sizeof set_out, "only_%s", doms[d]);
    snprintf(logn, sizeof logn, "%s.log", set_out);
    const char *one[] = {"run", "c.ini", "--quiet", "--set", set_dom, "--set", "run.experiments=grid", "--out",
                         set_out, NULL};
    cr_assert_eq(run(logn, one), 0, "restricted run failed (see %s/%s)", root, logn);
    snprintf(dir, sizeof dir, "%s/rows.jsonl", set_out);
    tu_rows only = load(dir);
    cr_expect_eq(only.n, (N_TQ + N_CAL) * LAYERS * HEADS);
    for (size_t i = 0; i < only.n; i++) {
      const json_t *g = only.v[i];
      char key[400];
      if (!strcmp(str(g, "arm"), "tq")) snprintf(key, sizeof key, "eval=%s|%s", doms[d], str(g, "key"));
      else snprintf(key, sizeof key, "calib=%s|eval=%s|%s", doms[d], doms[d], str(g, "key"));
      const json_t *s = find(&shift, key, num(g, "layer"), num(g, "head"));
      cr_expect_not_null(s, "no shift row %s L%lld H%lld", key, num(g, "layer"), num(g, "head"));
      if (s) expect_same_row(g, s, key);
    }
    tu_rows_free(&only);
  }
  /* and a cross-domain row is not an in-domain row in disguise */
  const json_t *in = find(&shift, "calib=domain0|eval=domain0|sq:b=3,nb=none,vnb=none,tau=0.90,wf=1,qjl=0", 0, 0);
  const json_t *cross = find(&shift, "calib=domain1|eval=domain0|sq:b=3,nb=none,vnb=none,tau=0.90,wf=1,qjl=0", 0, 0);
  cr_assert(in && cross, "sq rows for layer 0 head 0 missing");
  cr_expect_neq(real(in, "attn_cos"), real(cross, "attn_cos"));
  cr_expect(exists("out/tables/shift.csv") && exists("out/tables/stability.csv") && exists("out/figures/stability.gp") &&
            exists("out/figures/shift.gp"));

  /* SIGKILL during the shift/stability phases, rerun: the same rows, none twice */
  for (int k = 0; k < 2; k++) {
    const char *again[] = {"run", "c.ini", "--quiet", "--out", "killed", NULL};
    pid_t pid = start("killed.log", again);
    const char *watch = k == 0 ? "killed/shift/rows.jsonl" : "killed/stability/rows.jsonl";
    for (int waited = 0; waited < 3000; waited++) { /* until a few rows of that phase exist */
      char *t = slurp(watch);
      int lines = 0;
      for (char *p = t; p && *p; p++) lines += *p == '\n';
      free(t);
      if (lines >= 5) break;
      nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    kill(pid, SIGKILL);
    cr_assert_eq(tu_exit_code(tu_wait_status(pid)), 128 + SIGKILL);
  }
  const char *resume[] = {"run", "c.ini", "--quiet", "--out", "killed", NULL};
  cr_assert_eq(run("resume.log", resume), 0, "rerun failed (see %s/resume.log)", root);
  static const char *const files[] = {"shift/rows.jsonl", "stability/rows.jsonl", "rows.jsonl"};
  for (int f = 0; f < 3; f++) {
    char a[64], b[64];
    snprintf(a, sizeof a, "out/%s", files[f]);
    snprintf(b, sizeof b, "killed/%s", files[f]);
    tu_rows x = load(a), y = load(b);
    cr_expect_eq(y.n, x.n, "%s: %d rows after kill + rerun, %d uninterrupted", files[f], y.n, x.n);
    for (size_t i = 0; i < x.n; i++) {
      const json_t *o = find(&y, str(x.v[i], "key"), num(x.v[i], "layer"), num(x.v[i], "head"));
      cr_expect_not_null(o, "%s: row %s missing after rerun", files[f], str(x.v[i], "key"));
      if (o) cr_expect(json_equal(x.v[i], (json_t *)o), "%s: row %s differs after rerun", files[f], str(x.v[i], "key"));
    }
    tu_rows_free(&x);
    tu_rows_free(&y);
  }
  tu_rows_free(&grid);
  tu_rows_free(&shift);
  tu_rows_free(&stab);

  /* one domain: a one-line notice, no shift store, not an error */
  const char *single[] = {"run", "c.ini", "--quiet", "--set", "run.dump=d1.h5", "--set",
                          "run.experiments=shift", "--out", "single", NULL};
  cr_assert_eq(run("single.log", single), 0, "single-domain run failed (see %s/single.log)", root);
  log = slurp("single.log");
  cr_expect(strstr(log, "shift: the dump has a single domain ('domain0'); nothing to compare, no shift rows written\n"),
            "%s", log);
  free(log);
  cr_expect(!exists("single/shift"), "a single-domain run wrote single/shift");
  teardown_ok();
}
