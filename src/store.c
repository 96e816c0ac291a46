/* store: append-only JSONL result store with whole-line atomicity (see store.h). */
#include "prov.h"
#include "store.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "bgthread.h"

/* ---- a set of strings (open addressing, FNV-1a), for the finished (key, layer, head) ---- */
typedef struct {
  char **slot;
  size_t cap, n;
} store_set;

static uint64_t store_fnv(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static int store_set_has(const store_set *set, const char *s) {
  if (!set->cap) return 0;
  for (size_t i = store_fnv(s) & (set->cap - 1);; i = (i + 1) & (set->cap - 1)) {
    if (!set->slot[i]) return 0;
    if (!strcmp(set->slot[i], s)) return 1;
  }
}

static void store_set_add(store_set *set, const char *s) {
  if (store_set_has(set, s)) return;
  if (2 * (set->n + 1) > set->cap) { /* keep the load factor under 1/2 */
    store_set old = *set;
    set->cap = old.cap ? 2 * old.cap : 256;
    set->slot = sq_xcalloc(set->cap, sizeof *set->slot);
    set->n = 0;
    for (size_t i = 0; i < old.cap; i++)
      if (old.slot[i]) {
        size_t j = store_fnv(old.slot[i]) & (set->cap - 1);
        while (set->slot[j]) j = (j + 1) & (set->cap - 1);
        set->slot[j] = old.slot[i];
        set->n++;
      }
    free(old.slot);
  }
  size_t j = store_fnv(s) & (set->cap - 1);
  while (set->slot[j]) j = (j + 1) & (set->cap - 1);
  set->slot[j] = strdup(s);
  set->n++;
}

static void store_set_free(store_set *set) {
  for (size_t i = 0; i < set->cap; i++) free(set->slot[i]);
  free(set->slot);
  memset(set, 0, sizeof *set);
}

static void store_row_id(char *buf, size_t n, const char *key, int layer, int head) {
  snprintf(buf, n, "%s|%d|%d", key, layer, head);
}

/* ---- one append-only JSONL file ---- */
typedef struct {
  int fd;
  char path[1200];
  store_set done;
  int64_t n_lines;
} store_file;

/* The store's background thread, started on first use: it writes the rows that store_append_row
 * queues (JSON formatting and write() are the costly part of an append, and the caller is the
 * sweep's critical path) and runs the fsyncs of store_sync_async. One thread, so rows.jsonl gets
 * the rows in queue order, which is append order. mu guards everything below th; th, started and
 * failed belong to the store's (one) caller. The queue is a bounded ring of row copies (store_row
 * holds no pointers): q[head], ..., q[head + n - 1] wait to be written, and rows keep their slots
 * (stay counted in n) until the thread has written them, so the caller never overwrites one in
 * use. */
#define STORE_QUEUE_ROWS 512 /* ~300 KiB: a few GPU batches of slack for a slow write or fsync */

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t wake;       /* to the thread: a queued row, an fsync request, quit */
  pthread_cond_t idle;       /* to the caller: a slot freed, an fsync finished */
  pthread_t th;
  int started, failed;       /* failed: pthread_create did not work; the store writes in line */
  store_row *q;
  int head, n;
  int64_t queued, written;   /* rows ever queued / taken off the queue (written, or dropped) */
  int pending, busy, quit;   /* pending: an fsync is asked for rows [0, sync_upto); busy: running */
  int64_t sync_upto;
  sq_err err;                /* the thread's first write or fsync failure (code SQ_OK: none); sticky */
} store_bg;

struct store {
  char dir[1024];
  int lock_fd;               /* DIR/.lock, write-locked while this store is open */
  store_file rows, spectra;
  store_bg bg;
};

/* One writer per directory: a POSIX record lock on DIR/.lock (released by the kernel when the
 * process dies, so a killed run never leaves a stale lock). */
static int store_lock(store *s, sq_err *e) {
  char path[1200];
  snprintf(path, sizeof path, "%s/.lock", s->dir);
  s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (s->lock_fd < 0) return sq_fail(e, SQ_EFAIL, "cannot open %s: %s", path, strerror(errno));
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(s->lock_fd, F_SETLK, &fl) == 0) return SQ_OK;
  int err = errno;
  struct flock who;
  memset(&who, 0, sizeof who);
  who.l_type = F_WRLCK;
  who.l_whence = SEEK_SET;
  if ((err == EACCES || err == EAGAIN) && fcntl(s->lock_fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK)
    return sq_fail(e, SQ_EINPUT, "%s is in use by another sqexp run (pid %ld); wait for it or choose another --out",
                   s->dir, (long)who.l_pid);
  return sq_fail(e, SQ_EFAIL, "cannot lock %s: %s", path, strerror(err));
}

/* Read a whole file; *len = size. NULL + errno when it cannot be read. */
static char *store_slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  struct stat st; /* the size as a hint: one allocation, no copies while growing (a 12 MB rows.jsonl) */
  size_t cap = fstat(fileno(f), &st) == 0 && st.st_size > 0 ? (size_t)st.st_size + 1 : 1 << 16, n = 0;
  char *buf = sq_xmalloc(cap + 1);
  size_t got;
  while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      cap *= 2;
      char *nb = realloc(buf, cap + 1);
      if (!nb) { free(buf); fclose(f); errno = ENOMEM; return NULL; }
      buf = nb;
    }
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) { free(buf); errno = EIO; return NULL; }
  buf[n] = '\0';
  *len = n;
  return buf;
}

/* Call fn on every complete line (ending in '\n') of path; a torn tail is left alone.
 * *complete_len = bytes up to and including the last '\n'. A missing file has no lines. */
typedef int (*store_line_fn)(json_t *obj, void *ctx, const char *path, int64_t line, sq_err *e);

static int store_each_line(const char *path, store_line_fn fn, void *ctx, size_t *complete_len,
                           sq_err *e) {
  size_t len = 0;
  *complete_len = 0;
  char *buf = store_slurp(path, &len);
  if (!buf) {
    if (errno == ENOENT) return SQ_OK;
    return sq_fail(e, SQ_EFAIL, "%s: cannot read: %s", path, strerror(errno));
  }
  int rc = SQ_OK;
  int64_t line_no = 0;
  char *p = buf, *end = buf + len;
  while (p < end) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) break; /* torn trailing line: not a row */
    line_no++;
    *nl = '\0';
    if (nl > p) {
      json_error_t je;
      json_t *obj = json_loadb(p, (size_t)(nl - p), 0, &je);
      if (!obj || !json_is_object(obj)) {
        json_decref(obj);
        rc = sq_fail(e, SQ_EFAIL, "%s:%lld: not a JSON object (%s); the file is corrupt", path,
                     (long long)line_no, obj ? "not an object" : je.text);
        break;
      }
      rc = fn(obj, ctx, path, line_no, e);
      json_decref(obj);
      if (rc) break;
    }
    p = nl + 1;
    *complete_len = (size_t)(p - buf);
  }
  free(buf);
  return rc;
}

/* ---- JSON helpers: NaN/Inf are written as null and read back as NaN ---- */
static void store_set_real(json_t *o, const char *k, double v) {
  json_object_set_new(o, k, isfinite(v) ? json_real(v) : json_null());
}
static double store_get_real(const json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : NAN;
}
static int store_get_int(const json_t *o, const char *k, int dflt) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? (int)json_integer_value(v) : dflt;
}
static void store_get_str(const json_t *o, const char *k, char *dst, size_t n) {
  const char *s = json_string_value(json_object_get(o, k));
  snprintf(dst, n, "%s", s ? s : "");
}

static const char *const store_variant_names[] = {"prod", "mse"};
static const char *const store_rotation_names[] = {"haar", "hadamard"};
static const char *const store_codebook_names[] = {"beta", "gaussian"};

static void store_set_enum(json_t *o, const char *k, int v, const char *const *names, int n) {
  if (v >= 0 && v < n) json_object_set_new(o, k, json_string(names[v]));
}
static int store_get_enum(const json_t *o, const char *k, const char *const *names, int n) {
  const char *s = json_string_value(json_object_get(o, k));
  for (int i = 0; s && i < n; i++)
    if (!strcmp(s, names[i])) return i;
  return -1;
}
/* noise_bits: "none" | integer; absent = the arm does not own it (-2 in the struct is never used:
 * absent and none both read back as CFG_NONE, which is what plan_knobs holds for non-sq arms). */
static void store_set_noise(json_t *o, const char *k, int v) {
  json_object_set_new(o, k, v < 0 ? json_string("none") : json_integer(v));
}

void store_row_init(store_row *r) {
  memset(r, 0, sizeof *r);
  r->total_bits = r->noise_bits = r->value_noise_bits = -1;
  r->use_water_fill = r->use_qjl = -1;
  r->tq_variant = r->tq_rotation = r->tq_codebook = r->tq_shared_rotation = -1;
  r->rank = -1;
  r->d_eff_variance = NAN;
  kern_metrics *m = &r->m;
  m->attn_cos = m->randq_cos = m->probs_cos = m->k_cos = m->v_cos = NAN;
  m->k_rel_mse = m->v_rel_mse = m->logit_bias = m->logit_slope = m->topk_recall = NAN;
}

/* Which knobs each arm owns (the ones written to its rows). */
static int store_arm_is(const store_row *r, const char *name) { return !strcmp(r->arm, name); }

void *store_row_to_json(const store_row *r) {
  json_t *o = json_object();
  json_object_set_new(o, "key", json_string(r->key));
  json_object_set_new(o, "arm", json_string(r->arm));
  json_object_set_new(o, "layer", json_integer(r->layer));
  json_object_set_new(o, "head", json_integer(r->head));
  json_object_set_new(o, "head_dim", json_integer(r->head_dim));
  if (!store_arm_is(r, "lowrank")) json_object_set_new(o, "total_bits", json_integer(r->total_bits));
  if (store_arm_is(r, "sq")) {
    store_set_noise(o, "noise_bits", r->noise_bits);
    store_set_noise(o, "value_noise_bits", r->value_noise_bits);
    store_set_real(o, "d_eff_variance", r->d_eff_variance);
    json_object_set_new(o, "use_water_fill", json_integer(r->use_water_fill));
    json_object_set_new(o, "use_qjl", json_integer(r->use_qjl));
  }
  if (store_arm_is(r, "tq")) {
    store_set_enum(o, "tq_variant", r->tq_variant, store_variant_names, 2);
    store_set_enum(o, "tq_rotation", r->tq_rotation, store_rotation_names, 2);
    store_set_enum(o, "tq_codebook", r->tq_codebook, store_codebook_names, 2);
    json_object_set_new(o, "tq_shared_rotation", json_integer(r->tq_shared_rotation));
  }
  if (store_arm_is(r, "lowrank")) {
    json_object_set_new(o, "rank", json_integer(r->rank));
    store_set_real(o, "d_eff_variance", r->d_eff_variance);
  }
  const kern_metrics *m = &r->m;
  store_set_real(o, "attn_cos", m->n_attn ? m->attn_cos : NAN);
  store_set_real(o, "randq_cos", m->n_randq ? m->randq_cos : NAN);
  store_set_real(o, "probs_cos", m->n_probs ? m->probs_cos : NAN);
  store_set_real(o, "k_cos", m->k_cos);
  store_set_real(o, "v_cos", m->v_cos);
  store_set_real(o, "k_rel_mse", m->k_rel_mse);
  store_set_real(o, "v_rel_mse", m->v_rel_mse);
  store_set_real(o, "logit_bias", m->n_pairs ? m->logit_bias : NAN);
  store_set_real(o, "logit_slope", m->n_pairs ? m->logit_slope : NAN);
  store_set_real(o, "topk_recall", m->n_attn ? m->topk_recall : NAN);
  json_object_set_new(o, "n_attn", json_integer(m->n_attn));
  json_object_set_new(o, "n_randq", json_integer(m->n_randq));
  json_object_set_new(o, "n_probs", json_integer(m->n_probs));
  json_object_set_new(o, "n_pairs", json_integer(m->n_pairs));
  json_object_set_new(o, "d_eff_k", json_integer(r->d_eff_k));
  json_object_set_new(o, "d_eff_v", json_integer(r->d_eff_v));
  store_set_real(o, "pr_k", r->pr_k);
  store_set_real(o, "pr_v", r->pr_v);
  json_object_set_new(o, "pr_int_k", json_integer(r->pr_int_k));
  json_object_set_new(o, "pr_int_v", json_integer(r->pr_int_v));
  store_set_real(o, "kappa_k", r->kappa_k);
  store_set_real(o, "kappa_v", r->kappa_v);
  store_set_real(o, "bits_honest_k", r->bits_honest_k);
  store_set_real(o, "bits_honest_v", r->bits_honest_v);
  store_set_real(o, "bits_seed_k", r->bits_seed_k);
  store_set_real(o, "bits_seed_v", r->bits_seed_v);
  store_set_real(o, "bits_paper_k", r->bits_paper_k);
  store_set_real(o, "bits_paper_v", r->bits_paper_v);
  store_set_real(o, "ratio_honest", r->ratio_honest);
  store_set_real(o, "ratio_seed", r->ratio_seed);
  store_set_real(o, "ratio_paper", r->ratio_paper);
  json_object_set_new(o, "backend", json_string(r->backend));
  store_set_real(o, "eval_s", r->eval_s);
  return o;
}

int store_row_from_json(const void *json, store_row *r, sq_err *e) {
  const json_t *o = json;
  store_row_init(r);
  if (!json_is_string(json_object_get(o, "key")) || !json_is_integer(json_object_get(o, "layer")) ||
      !json_is_integer(json_object_get(o, "head")) || !json_is_string(json_object_get(o, "arm")))
    return sq_fail(e, SQ_EINPUT, "row lacks key/arm/layer/head");
  store_get_str(o, "key", r->key, sizeof r->key);
  store_get_str(o, "arm", r->arm, sizeof r->arm);
  store_get_str(o, "backend", r->backend, sizeof r->backend);
  r->layer = store_get_int(o, "layer", -1);
  r->head = store_get_int(o, "head", -1);
  r->head_dim = store_get_int(o, "head_dim", 0);
  r->total_bits = store_get_int(o, "total_bits", -1);
  r->noise_bits = store_get_int(o, "noise_bits", -1);
  r->value_noise_bits = store_get_int(o, "value_noise_bits", -1);
  r->d_eff_variance = store_get_real(o, "d_eff_variance");
  r->use_water_fill = store_get_int(o, "use_water_fill", -1);
  r->use_qjl = store_get_int(o, "use_qjl", -1);
  r->tq_variant = store_get_enum(o, "tq_variant", store_variant_names, 2);
  r->tq_rotation = store_get_enum(o, "tq_rotation", store_rotation_names, 2);
  r->tq_codebook = store_get_enum(o, "tq_codebook", store_codebook_names, 2);
  r->tq_shared_rotation = store_get_int(o, "tq_shared_rotation", -1);
  r->rank = store_get_int(o, "rank", -1);
  kern_metrics *m = &r->m;
  m->attn_cos = store_get_real(o, "attn_cos");
  m->randq_cos = store_get_real(o, "randq_cos");
  m->probs_cos = store_get_real(o, "probs_cos");
  m->k_cos = store_get_real(o, "k_cos");
  m->v_cos = store_get_real(o, "v_cos");
  m->k_rel_mse = store_get_real(o, "k_rel_mse");
  m->v_rel_mse = store_get_real(o, "v_rel_mse");
  m->logit_bias = store_get_real(o, "logit_bias");
  m->logit_slope = store_get_real(o, "logit_slope");
  m->topk_recall = store_get_real(o, "topk_recall");
  m->n_attn = store_get_int(o, "n_attn", 0);
  m->n_randq = store_get_int(o, "n_randq", 0);
  m->n_probs = store_get_int(o, "n_probs", 0);
  m->n_pairs = (int64_t)store_get_real(o, "n_pairs");
  r->d_eff_k = store_get_int(o, "d_eff_k", 0);
  r->d_eff_v = store_get_int(o, "d_eff_v", 0);
  r->pr_k = store_get_real(o, "pr_k");
  r->pr_v = store_get_real(o, "pr_v");
  r->pr_int_k = store_get_int(o, "pr_int_k", 0);
  r->pr_int_v = store_get_int(o, "pr_int_v", 0);
  r->kappa_k = store_get_real(o, "kappa_k");
  r->kappa_v = store_get_real(o, "kappa_v");
  r->bits_honest_k = store_get_real(o, "bits_honest_k");
  r->bits_honest_v = store_get_real(o, "bits_honest_v");
  r->bits_seed_k = store_get_real(o, "bits_seed_k");
  r->bits_seed_v = store_get_real(o, "bits_seed_v");
  r->bits_paper_k = store_get_real(o, "bits_paper_k");
  r->bits_paper_v = store_get_real(o, "bits_paper_v");
  r->ratio_honest = store_get_real(o, "ratio_honest");
  r->ratio_seed = store_get_real(o, "ratio_seed");
  r->ratio_paper = store_get_real(o, "ratio_paper");
  r->eval_s = store_get_real(o, "eval_s");
  return SQ_OK;
}

static json_t *store_spectrum_to_json(const store_spectrum *sp) {
  json_t *o = json_object();
  json_object_set_new(o, "layer", json_integer(sp->layer));
  json_object_set_new(o, "head", json_integer(sp->head));
  json_object_set_new(o, "head_dim", json_integer(sp->head_dim));
  json_object_set_new(o, "n_calib", json_integer(sp->n_calib));
  json_t *taus = json_array();
  for (int t = 0; t < sp->n_tau; t++) json_array_append_new(taus, json_real(sp->tau[t]));
  json_object_set_new(o, "taus", taus);
  static const char *const side[2] = {"k", "v"};
  for (int s = 0; s < 2; s++) {
    char name[32];
    snprintf(name, sizeof name, "pr_%s", side[s]);
    store_set_real(o, name, sp->pr[s]);
    snprintf(name, sizeof name, "pr_int_%s", side[s]);
    json_object_set_new(o, name, json_integer(sp->pr_int[s]));
    snprintf(name, sizeof name, "kappa_%s", side[s]);
    store_set_real(o, name, sp->kappa[s]);
    json_t *d = json_array(), *ev = json_array();
    for (int t = 0; t < sp->n_tau; t++) json_array_append_new(d, json_integer(sp->d_eff[s][t]));
    for (int i = 0; i < sp->head_dim; i++) json_array_append_new(ev, json_real(sp->eigval[s][i]));
    snprintf(name, sizeof name, "d_eff_%s", side[s]);
    json_object_set_new(o, name, d);
    snprintf(name, sizeof name, "eigval_%s", side[s]);
    json_object_set_new(o, name, ev);
  }
  return o;
}

static int store_spectrum_from_json(const json_t *o, store_spectrum *sp, sq_err *e) {
  memset(sp, 0, sizeof *sp);
  sp->layer = store_get_int(o, "layer", -1);
  sp->head = store_get_int(o, "head", -1);
  sp->head_dim = store_get_int(o, "head_dim", 0);
  sp->n_calib = (int64_t)store_get_real(o, "n_calib");
  if (sp->layer < 0 || sp->head < 0 || sp->head_dim < 1 || sp->head_dim > 256)
    return sq_fail(e, SQ_EINPUT, "spectrum lacks layer/head/head_dim");
  json_t *taus = json_object_get(o, "taus");
  sp->n_tau = (int)json_array_size(taus);
  if (sp->n_tau > STORE_MAX_TAU) sp->n_tau = STORE_MAX_TAU;
  for (int t = 0; t < sp->n_tau; t++) sp->tau[t] = json_number_value(json_array_get(taus, (size_t)t));
  static const char *const side[2] = {"k", "v"};
  for (int s = 0; s < 2; s++) {
    char name[32];
    snprintf(name, sizeof name, "pr_%s", side[s]);
    sp->pr[s] = store_get_real(o, name);
    snprintf(name, sizeof name, "pr_int_%s", side[s]);
    sp->pr_int[s] = store_get_int(o, name, 0);
    snprintf(name, sizeof name, "kappa_%s", side[s]);
    sp->kappa[s] = store_get_real(o, name);
    snprintf(name, sizeof name, "d_eff_%s", side[s]);
    json_t *d = json_object_get(o, name);
    for (int t = 0; t < sp->n_tau; t++) sp->d_eff[s][t] = (int)json_integer_value(json_array_get(d, (size_t)t));
    snprintf(name, sizeof name, "eigval_%s", side[s]);
    json_t *ev = json_object_get(o, name);
    for (int i = 0; i < sp->head_dim; i++) {
      json_t *x = json_array_get(ev, (size_t)i);
      sp->eigval[s][i] = json_is_number(x) ? json_number_value(x) : NAN;
    }
  }
  return SQ_OK;
}

/* ---- run.json ---- */
static void store_path(char *buf, size_t n, const char *dir, const char *name) {
  snprintf(buf, n, "%s/%s", dir, name);
}

int store_read_run(const char *dir, void **run_json, sq_err *e) {
  char path[1200];
  store_path(path, sizeof path, dir, STORE_RUN_FILE);
  json_error_t je;
  json_t *o = json_load_file(path, 0, &je);
  if (!o) {
    if (access(path, F_OK) != 0) return sq_fail(e, SQ_EINPUT, "%s: no such file (not a results directory?)", path);
    return sq_fail(e, SQ_EINPUT, "%s:%d: %s", path, je.line, je.text);
  }
  if (!json_is_object(o)) {
    json_decref(o);
    return sq_fail(e, SQ_EINPUT, "%s: not a JSON object", path);
  }
  *run_json = o;
  return SQ_OK;
}

/* The first line where two config texts differ, as "section key: 'old' -> 'new'". */
static void store_config_diff(const char *old_text, const char *new_text, char *buf, size_t n) {
  const char *a = old_text, *b = new_text;
  char section[128] = "";
  while (*a || *b) {
    size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
    if (la != lb || memcmp(a, b, la)) {
      snprintf(buf, n, "%s '%.*s' -> '%.*s'", section, (int)(la > 200 ? 200 : la), a,
               (int)(lb > 200 ? 200 : lb), b);
      return;
    }
    if (la > 1 && a[0] == '[') snprintf(section, sizeof section, "in %.*s", (int)(la > 100 ? 100 : la), a);
    a += la + (a[la] == '\n');
    b += lb + (b[lb] == '\n');
  }
  snprintf(buf, n, "(texts equal, hashes differ)");
}

static int store_dir_state(const char *dir, int *exists, sq_err *e) {
  struct stat st;
  *exists = 0;
  if (stat(dir, &st) != 0) {
    if (errno == ENOENT) return SQ_OK;
    return sq_fail(e, SQ_EINPUT, "%s: %s", dir, strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return sq_fail(e, SQ_EINPUT, "%s: exists and is not a directory", dir);
  *exists = 1;
  return SQ_OK;
}

/* The results_version a stored identity text starts with (prov.h); 1 for runs made before the
 * line existed. */
static int store_results_version(const char *text) {
  const char *rv = "results_version = ";
  if (!text || strncmp(text, rv, strlen(rv))) return 1;
  return atoi(text + strlen(rv));
}

int store_check(const char *dir, const store_identity *id, int fresh, sq_err *e) {
  int exists;
  if (store_dir_state(dir, &exists, e)) return e->code;
  if (!exists || fresh) return SQ_OK;
  char path[1200];
  store_path(path, sizeof path, dir, STORE_RUN_FILE);
  if (access(path, F_OK) != 0) {
    store_path(path, sizeof path, dir, STORE_ROWS_FILE);
    if (access(path, F_OK) == 0)
      return sq_fail(e, SQ_EINPUT, "%s: rows without a run.json; refusing to append (use --fresh)", dir);
    return SQ_OK;
  }
  json_t *run = NULL;
  if (store_read_run(dir, (void **)&run, e)) return e->code;
  const char *old_hash = json_string_value(json_object_get(run, "config_hash"));
  const char *old_text = json_string_value(json_object_get(run, "config_resolved"));
  const char *old_fp = json_string_value(json_object_get(run, "dump_fingerprint"));
  const char *old_dump = json_string_value(json_object_get(run, "dump_path"));
  int rc = SQ_OK;
  if (!old_hash || strcmp(old_hash, id->config_hash)) {
    char diff[600];
    store_config_diff(old_text ? old_text : "", id->config_text ? id->config_text : "", diff, sizeof diff);
    int old_version = store_results_version(old_text);
    if (old_version != SQEXP_RESULTS_VERSION)
      rc = sq_fail(e, SQ_EINPUT,
                   "%s holds rows computed by an sqexp whose numbers differ from this one's (results "
                   "version %d, now %d: docs/results.md); rerun with --fresh to recompute (the old "
                   "rows are moved to %s/old-<time>/) or choose another --out",
                   dir, old_version, SQEXP_RESULTS_VERSION, dir);
    else
      rc = sq_fail(e, SQ_EINPUT,
                 "%s holds a run of a different config (first difference %s); rerun with --fresh "
                 "to start over (the old rows are moved to %s/old-<time>/) or choose another --out",
                 dir, diff, dir);
  } else if (!old_fp || strcmp(old_fp, id->dump_fp)) {
    rc = sq_fail(e, SQ_EINPUT,
                 "%s holds a run on a different dump (was %s, fingerprint %.12s; now %s, fingerprint "
                 "%.12s); rerun with --fresh to start over or choose another --out",
                 dir, old_dump ? old_dump : "?", old_fp ? old_fp : "?", id->dump_path, id->dump_fp);
  }
  json_decref(run);
  return rc;
}

static int store_mkdirs(const char *dir, sq_err *e) {
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", dir);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
      return sq_fail(e, SQ_EFAIL, "cannot create %s: %s", buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0777) != 0 && errno != EEXIST)
    return sq_fail(e, SQ_EFAIL, "cannot create %s: %s", buf, strerror(errno));
  return SQ_OK;
}

/* --fresh: move the old run's files aside rather than deleting anybody's results. */
static int store_move_old(const char *dir, sq_err *e) {
  static const char *const names[] = {STORE_RUN_FILE, STORE_ROWS_FILE, STORE_SPECTRA_FILE,
                                      "provenance.json"};
  char old_dir[1200], from[1300], to[1400];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  snprintf(old_dir, sizeof old_dir, "%s/old-%s", dir, stamp);
  int made = 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    store_path(from, sizeof from, dir, names[i]);
    if (access(from, F_OK) != 0) continue;
    if (!made && mkdir(old_dir, 0777) != 0 && errno != EEXIST)
      return sq_fail(e, SQ_EFAIL, "cannot create %s: %s", old_dir, strerror(errno));
    made = 1;
    snprintf(to, sizeof to, "%s/%s", old_dir, names[i]);
    if (rename(from, to) != 0) return sq_fail(e, SQ_EFAIL, "cannot move %s to %s: %s", from, to, strerror(errno));
  }
  return SQ_OK;
}

static int store_write_run(const char *dir, const store_identity *id, sq_err *e) {
  char path[1200], tmp[1300];
  store_path(path, sizeof path, dir, STORE_RUN_FILE);
  if (access(path, F_OK) == 0) return SQ_OK; /* same identity (store_check passed) */
  json_t *o = json_object();
  json_object_set_new(o, "format", json_string("sqexp-results"));
  json_object_set_new(o, "format_version", json_integer(1));
  json_object_set_new(o, "config_hash", json_string(id->config_hash));
  json_object_set_new(o, "config_resolved", json_string(id->config_text ? id->config_text : ""));
  json_object_set_new(o, "dump_fingerprint", json_string(id->dump_fp));
  json_object_set_new(o, "dump_path", json_string(id->dump_path ? id->dump_path : ""));
  json_object_set_new(o, "dump_size", json_integer(id->dump_size));
  json_object_set_new(o, "model_id", json_string(id->model_id ? id->model_id : ""));
  json_object_set_new(o, "experiments", json_string(id->experiments ? id->experiments : ""));
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int bad = json_dump_file(o, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
  json_decref(o);
  if (bad || rename(tmp, path) != 0) {
    unlink(tmp);
    return sq_fail(e, SQ_EFAIL, "cannot write %s: %s", path, strerror(errno));
  }
  return SQ_OK;
}

static int store_row_seen(json_t *o, void *ctx, const char *path, int64_t line, sq_err *e) {
  store_file *f = ctx;
  const char *key = json_string_value(json_object_get(o, "key"));
  json_t *layer = json_object_get(o, "layer"), *head = json_object_get(o, "head");
  if (!key || !json_is_integer(layer) || !json_is_integer(head))
    return sq_fail(e, SQ_EFAIL, "%s:%lld: row lacks key/layer/head", path, (long long)line);
  char id[320];
  store_row_id(id, sizeof id, key, (int)json_integer_value(layer), (int)json_integer_value(head));
  store_set_add(&f->done, id);
  f->n_lines++;
  return SQ_OK;
}

static int store_spectrum_seen(json_t *o, void *ctx, const char *path, int64_t line, sq_err *e) {
  store_file *f = ctx;
  json_t *layer = json_object_get(o, "layer"), *head = json_object_get(o, "head");
  if (!json_is_integer(layer) || !json_is_integer(head))
    return sq_fail(e, SQ_EFAIL, "%s:%lld: spectrum lacks layer/head", path, (long long)line);
  char id[64];
  store_row_id(id, sizeof id, "spectrum", (int)json_integer_value(layer), (int)json_integer_value(head));
  store_set_add(&f->done, id);
  f->n_lines++;
  return SQ_OK;
}

/* Open for appending: drop a torn trailing line (a write cut short by a kill), load the set. */
static int store_file_open(store_file *f, const char *dir, const char *name, store_line_fn seen, sq_err *e) {
  store_path(f->path, sizeof f->path, dir, name);
  f->fd = -1;
  size_t complete = 0;
  if (store_each_line(f->path, seen, f, &complete, e)) return e->code;
  f->fd = open(f->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (f->fd < 0) return sq_fail(e, SQ_EFAIL, "cannot open %s: %s", f->path, strerror(errno));
  struct stat st;
  if (fstat(f->fd, &st) == 0 && (size_t)st.st_size > complete) {
    if (ftruncate(f->fd, (off_t)complete) != 0 || fsync(f->fd) != 0)
      return sq_fail(e, SQ_EFAIL, "cannot truncate the torn last line of %s: %s", f->path, strerror(errno));
  }
  return SQ_OK;
}

int store_open(store **out, const char *dir, const store_identity *id, int fresh, sq_err *e) {
  *out = NULL;
  if (store_check(dir, id, fresh, e)) return e->code;
  if (store_mkdirs(dir, e)) return e->code;
  store *s = sq_xcalloc(1, sizeof *s);
  snprintf(s->dir, sizeof s->dir, "%s", dir);
  s->rows.fd = s->spectra.fd = -1;
  /* lock first: --fresh must not move files from under a running writer; and check again under
   * the lock, since another run may have written run.json in between */
  if (store_lock(s, e) || store_check(dir, id, fresh, e) || (fresh && store_move_old(dir, e)) ||
      store_write_run(dir, id, e)) {
    store_close(s);
    return e->code;
  }
  if (store_file_open(&s->rows, dir, STORE_ROWS_FILE, store_row_seen, e) ||
      store_file_open(&s->spectra, dir, STORE_SPECTRA_FILE, store_spectrum_seen, e)) {
    store_close(s);
    return e->code;
  }
  *out = s;
  return SQ_OK;
}

int store_has_row(const store *s, const char *key, int layer, int head) {
  char id[320];
  store_row_id(id, sizeof id, key, layer, head);
  return store_set_has(&s->rows.done, id);
}

int store_has_spectrum(const store *s, int layer, int head) {
  char id[64];
  store_row_id(id, sizeof id, "spectrum", layer, head);
  return store_set_has(&s->spectra.done, id);
}

int64_t store_n_rows(const store *s) { return s->rows.n_lines; }

/* The whole line, newline included, in one write(): a kill leaves it whole or torn at the end. */
static int store_write_line(store_file *f, json_t *o, sq_err *e) {
  char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
  if (!text) return sq_fail(e, SQ_EFAIL, "%s: cannot serialise a row", f->path);
  size_t n = strlen(text);
  char *line = sq_xmalloc(n + 2);
  memcpy(line, text, n);
  line[n] = '\n';
  free(text);
  ssize_t w = write(f->fd, line, n + 1);
  free(line);
  if (w != (ssize_t)(n + 1)) {
    int err = errno;
    if (w > 0) { /* short write (disk full): cut it off again so the file stays whole lines */
      struct stat st;
      if (fstat(f->fd, &st) == 0 && ftruncate(f->fd, st.st_size - w) != 0) err = errno;
    }
    return sq_fail(e, SQ_EFAIL, "cannot append to %s: %s", f->path, w < 0 ? strerror(err) : "short write");
  }
  return SQ_OK;
}

static int store_write_row(store_file *f, const store_row *r, sq_err *e) {
  json_t *o = store_row_to_json(r);
  int rc = store_write_line(f, o, e);
  json_decref(o);
  return rc;
}

static int store_fsync_files(store *s, sq_err *e) {
  if (fsync(s->rows.fd) != 0) return sq_fail(e, SQ_EFAIL, "fsync %s: %s", s->rows.path, strerror(errno));
  if (fsync(s->spectra.fd) != 0) return sq_fail(e, SQ_EFAIL, "fsync %s: %s", s->spectra.path, strerror(errno));
  return SQ_OK;
}

/* ---- the background thread: queued row writes and fsyncs ---- */

/* The background thread's error, if it met one: copied into e. Sticky: after a failed write the
 * rest of the queue is dropped, and after a failed fsync the kernel may have dropped the dirty
 * pages, so a later success proves nothing about the lost lines; every later call fails too. */
static int store_bg_error(store *s, sq_err *e) {
  if (!s->bg.started) return SQ_OK; /* no thread: nothing could have been recorded */
  pthread_mutex_lock(&s->bg.mu);
  int rc = s->bg.err.code;
  if (rc) *e = s->bg.err;
  pthread_mutex_unlock(&s->bg.mu);
  return rc;
}

/* Write the n rows queued now (mu held on entry and exit; unlocked meanwhile, so the caller keeps
 * queueing behind them: one lock per batch, not per row, keeps the caller's lock uncontended),
 * then free their slots. After an error the rest are dropped: the file must not get rows after a
 * gap. */
static void store_bg_write(store *s) {
  store_bg *b = &s->bg;
  int first = b->head, k = b->n, dropping = b->err.code != SQ_OK;
  pthread_mutex_unlock(&b->mu);
  sq_err e;
  int rc = SQ_OK;
  for (int i = 0; i < k && !dropping; i++) {
    rc = store_write_row(&s->rows, &b->q[(first + i) % STORE_QUEUE_ROWS], &e);
    dropping = rc != SQ_OK;
  }
  pthread_mutex_lock(&b->mu);
  if (rc && !b->err.code) b->err = e;
  b->head = (first + k) % STORE_QUEUE_ROWS;
  b->n -= k;
  b->written += k;
  pthread_cond_broadcast(&b->idle);
}

/* fsync both files (mu held on entry and exit; unlocked meanwhile). */
static void store_bg_fsync(store *s) {
  store_bg *b = &s->bg;
  b->pending = 0, b->busy = 1;
  pthread_mutex_unlock(&b->mu);
  sq_err e;
  int rc = store_fsync_files(s, &e);
  pthread_mutex_lock(&b->mu);
  if (rc && !b->err.code) b->err = e;
  b->busy = 0;
  pthread_cond_broadcast(&b->idle);
}

/* An fsync request waits only for the rows queued before it, so a steady stream of appends
 * cannot postpone it; on quit the queue and a pending request are finished first (close drains). */
static void *store_bg_main(void *arg) {
  store *s = arg;
  store_bg *b = &s->bg;
  pthread_mutex_lock(&b->mu);
  for (;;) {
    if (b->pending && b->written >= b->sync_upto) store_bg_fsync(s);
    else if (b->n) store_bg_write(s);
    else if (b->quit) break;
    else pthread_cond_wait(&b->wake, &b->mu);
  }
  pthread_mutex_unlock(&b->mu);
  return NULL;
}

/* The queue and the synchronisation of a thread that ended (or never started). */
static void store_bg_release(store_bg *b) {
  pthread_cond_destroy(&b->idle), pthread_cond_destroy(&b->wake), pthread_mutex_destroy(&b->mu);
  free(b->q), b->q = NULL;
}

/* Start the thread (bgthread_start: the sweep's SIGINT/SIGTERM handler stays on the main thread). */
static void store_bg_start(store *s) {
  store_bg *b = &s->bg;
  pthread_mutex_init(&b->mu, NULL);
  pthread_cond_init(&b->wake, NULL);
  pthread_cond_init(&b->idle, NULL);
  b->q = sq_xmalloc(STORE_QUEUE_ROWS * sizeof *b->q);
  b->started = bgthread_start(&b->th, store_bg_main, s);
  if (b->started) return;
  b->failed = 1;
  store_bg_release(b);
}

/* 1 if the thread runs (started now if it never was); 0: the store does its work in line. */
static int store_bg_running(store *s) {
  if (!s->bg.started && !s->bg.failed) store_bg_start(s);
  return s->bg.started;
}

/* Queue a copy of r, waiting for a slot when the thread is that far behind (bounded memory), or
 * return the thread's sticky error: one critical section for both, as this is the caller's cost. */
static int store_bg_push(store_bg *b, const store_row *r, sq_err *e) {
  pthread_mutex_lock(&b->mu);
  while (b->n == STORE_QUEUE_ROWS) pthread_cond_wait(&b->idle, &b->mu);
  int rc = b->err.code;
  if (rc) {
    *e = b->err;
  } else {
    b->q[(b->head + b->n) % STORE_QUEUE_ROWS] = *r;
    b->n++;
    b->queued++;
    pthread_cond_signal(&b->wake);
  }
  pthread_mutex_unlock(&b->mu);
  return rc;
}

/* Wait until every queued row is written and drop an fsync request not yet started (the caller's
 * own fsync is about to cover it), waiting out one in progress: once this returns the thread is
 * idle until the next append or request. */
static void store_bg_drain(store *s) {
  store_bg *b = &s->bg;
  if (!b->started) return;
  pthread_mutex_lock(&b->mu);
  b->pending = 0;
  while (b->n || b->busy) pthread_cond_wait(&b->idle, &b->mu);
  pthread_mutex_unlock(&b->mu);
}

int store_sync(store *s, sq_err *e) {
  store_bg_drain(s);
  if (store_bg_error(s, e)) return e->code;
  return store_fsync_files(s, e);
}

int store_sync_async(store *s, sq_err *e) {
  if (store_bg_error(s, e)) return e->code;
  if (!store_bg_running(s)) return store_sync(s, e); /* no thread: in line */
  pthread_mutex_lock(&s->bg.mu);
  s->bg.pending = 1;
  s->bg.sync_upto = s->bg.queued; /* merges with a pending request: it now covers these rows too */
  pthread_cond_signal(&s->bg.wake);
  pthread_mutex_unlock(&s->bg.mu);
  return SQ_OK;
}

/* Let the thread finish the queue and a pending request (close must not lose them), then end it. */
static void store_bg_stop(store *s) {
  store_bg *b = &s->bg;
  if (!b->started) return;
  pthread_mutex_lock(&b->mu);
  b->quit = 1;
  pthread_cond_signal(&b->wake);
  pthread_mutex_unlock(&b->mu);
  pthread_join(b->th, NULL);
  store_bg_release(b);
  b->started = 0;
}

/* The caller-visible effects happen here and now (the done set, the count) so that
 * store_has_row and resume counting see the row at once; the line itself is written by the
 * thread, in append order. */
int store_append_row(store *s, const store_row *r, sq_err *e) {
  int rc = store_bg_running(s) ? store_bg_push(&s->bg, r, e)
                                : store_write_row(&s->rows, r, e); /* no thread: in line */
  if (rc) return rc;
  char id[320];
  store_row_id(id, sizeof id, r->key, r->layer, r->head);
  store_set_add(&s->rows.done, id);
  s->rows.n_lines++;
  return SQ_OK;
}

/* Written in line: a few hundred per run, so not worth a queue of their own. */
int store_append_spectrum(store *s, const store_spectrum *sp, sq_err *e) {
  if (store_bg_error(s, e)) return e->code;
  json_t *o = store_spectrum_to_json(sp);
  int rc = store_write_line(&s->spectra, o, e);
  json_decref(o);
  if (rc == SQ_OK) {
    char id[64];
    store_row_id(id, sizeof id, "spectrum", sp->layer, sp->head);
    store_set_add(&s->spectra.done, id);
    s->spectra.n_lines++;
  }
  return rc;
}

void store_close(store *s) {
  if (!s) return;
  store_bg_stop(s); /* before the files it writes and syncs are closed */
  if (s->lock_fd > 0) close(s->lock_fd); /* releases the lock */
  if (s->rows.fd >= 0) close(s->rows.fd);
  if (s->spectra.fd >= 0) close(s->spectra.fd);
  store_set_free(&s->rows.done);
  store_set_free(&s->spectra.done);
  free(s);
}

/* ---- readers: the lines are parsed in parallel (11,520 rows of a full Mistral run took most of
 * `sqexp report`'s time with one thread), each into its own slot, so the result does not depend on
 * the thread count; the error reported is the first in file order, as a serial read reports it. */
typedef int (*store_from_json_fn)(const json_t *o, void *dst, sq_err *e);

static int store_row_from_obj(const json_t *o, void *dst, sq_err *e) { return store_row_from_json(o, dst, e); }
static int store_spectrum_from_obj(const json_t *o, void *dst, sq_err *e) {
  return store_spectrum_from_json(o, dst, e);
}

typedef struct {
  const char *p;
  size_t len;        /* without the '\n' */
  int64_t line_no;   /* 1-based, empty lines counted */
} store_line;

/* The non-empty complete lines of buf (store_each_line's: a torn tail without '\n' is none). */
static store_line *store_lines(const char *buf, size_t len, int64_t *n) {
  int64_t cap = 0, k = 0, line_no = 0;
  for (const char *q = buf; (q = memchr(q, '\n', (size_t)(buf + len - q))); q++) cap++;
  store_line *ln = sq_xmalloc((size_t)(cap ? cap : 1) * sizeof *ln);
  for (const char *p = buf, *nl; (nl = memchr(p, '\n', (size_t)(buf + len - p))); p = nl + 1) {
    line_no++;
    if (nl > p) ln[k++] = (store_line){p, (size_t)(nl - p), line_no};
  }
  *n = k;
  return ln;
}

/* One line into dst; on failure, the message a serial read (store_each_line) gives for it. */
static int store_parse_line(const char *path, const store_line *l, store_from_json_fn fn, void *dst, sq_err *e) {
  json_error_t je;
  json_t *obj = json_loadb(l->p, l->len, 0, &je);
  if (!obj || !json_is_object(obj)) {
    json_decref(obj);
    return sq_fail(e, SQ_EFAIL, "%s:%lld: not a JSON object (%s); the file is corrupt", path,
                   (long long)l->line_no, obj ? "not an object" : je.text);
  }
  int rc = fn(obj, dst, e);
  json_decref(obj);
  return rc ? sq_wrap(e, "%s:%lld: ", path, (long long)l->line_no) : SQ_OK;
}

/* Every complete line of path as an elem-sized record in *out (NULL when none; a missing file has
 * none). Failures are only marked in the parallel pass (an sq_err per line would be 2 KiB each);
 * the first is parsed again, serially, for its message. */
static int store_read_all(const char *path, store_from_json_fn fn, size_t elem, void **out, int64_t *n_out,
                          sq_err *e) {
  *out = NULL;
  *n_out = 0;
  size_t len = 0;
  char *buf = store_slurp(path, &len);
  if (!buf) {
    if (errno == ENOENT) return SQ_OK;
    return sq_fail(e, SQ_EFAIL, "%s: cannot read: %s", path, strerror(errno));
  }
  int64_t n;
  store_line *ln = store_lines(buf, len, &n);
  char *dst = n ? sq_xmalloc((size_t)n * elem) : NULL;
  unsigned char *bad = sq_xcalloc((size_t)(n ? n : 1), 1);
#pragma omp parallel for schedule(static) if (n >= 256)
  for (int64_t i = 0; i < n; i++) {
    sq_err le;
    bad[i] = store_parse_line(path, &ln[i], fn, dst + i * elem, &le) != SQ_OK;
  }
  int rc = SQ_OK;
  for (int64_t i = 0; i < n && !rc; i++)
    if (bad[i]) rc = store_parse_line(path, &ln[i], fn, dst + i * elem, e);
  free(bad);
  free(ln);
  free(buf);
  if (rc) { free(dst); return rc; }
  *out = dst;
  *n_out = n;
  return SQ_OK;
}

int store_read_rows(const char *dir, store_row **rows, int64_t *n, sq_err *e) {
  char path[1200];
  store_path(path, sizeof path, dir, STORE_ROWS_FILE);
  void *out;
  int rc = store_read_all(path, store_row_from_obj, sizeof **rows, &out, n, e);
  if (!rc) *rows = out;
  return rc;
}

int store_read_spectra(const char *dir, store_spectrum **sp, int64_t *n, sq_err *e) {
  char path[1200];
  store_path(path, sizeof path, dir, STORE_SPECTRA_FILE);
  void *out;
  int rc = store_read_all(path, store_spectrum_from_obj, sizeof **sp, &out, n, e);
  if (!rc) *sp = out;
  return rc;
}
