/* prov: identity hashing and provenance.json (see prov.h). */
#include "prov.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include "sha256.h"
#include "sqexp_git.h" /* SQEXP_GIT: generated at build time */

const char *const prov_phase_names[PROV_NPHASE] = {"read", "read_wait", "calibrate", "plan", "plan_wait",
                                                        "eval", "write", "report", "calibrate_wait"};

/* Is this cfg_print line one the identity ignores? out and dump are where, not what (the dump has
 * its own fingerprint); threads changes no number (the CPU backend's reductions are thread-count
 * independent, tests/test_parallel.c), so a run may resume with another thread count. */
static int prov_line_ignored(const char *line, size_t len) {
  if (len == 0 || line[0] == ';' || line[0] == '#') return 1;
  static const char *const keys[] = {"out", "dump", "threads"};
  for (int k = 0; k < (int)(sizeof keys / sizeof keys[0]); k++) {
    size_t n = strlen(keys[k]);
    if (len > n && !strncmp(line, keys[k], n) && (line[n] == ' ' || line[n] == '=')) return 1;
  }
  return 0;
}

char *prov_config_identity(const cfg_t *c, char hash[65]) {
  char *full = NULL;
  size_t full_len = 0;
  FILE *f = open_memstream(&full, &full_len);
  if (!f) {
    fprintf(stderr, "out of memory printing the config\n");
    abort();
  }
  cfg_print(c, f);
  fclose(f);
  char head[64];
  size_t n = (size_t)snprintf(head, sizeof head, "results_version = %d\n", SQEXP_RESULTS_VERSION);
  char *text = sq_xmalloc(full_len + n + 1);
  memcpy(text, head, n);
  for (const char *p = full; *p;) {
    size_t len = strcspn(p, "\n");
    if (!prov_line_ignored(p, len)) {
      memcpy(text + n, p, len);
      n += len;
      text[n++] = '\n';
    }
    p += len + (p[len] == '\n');
  }
  text[n] = '\0';
  free(full);
  sha256_buf_hex(text, n, hash);
  return text;
}

static void prov_hash_i64(sha256_ctx *h, int64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)v >> (8 * i));
  sha256_update(h, b, 8);
}

static void prov_hash_str(sha256_ctx *h, const char *s) {
  prov_hash_i64(h, (int64_t)strlen(s));
  sha256_update(h, s, strlen(s));
}

int prov_dump_fingerprint(const dump_t *d, char hex[65], int64_t *size, sq_err *e) {
  int fd = open(d->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sq_fail(e, SQ_EINPUT, "%s: %s", d->path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return sq_fail(e, SQ_EINPUT, "%s: %s", d->path, strerror(errno));
  }
  sha256_ctx h;
  sha256_init(&h);
  prov_hash_str(&h, "sqexp-dump-fp-v1");
  prov_hash_i64(&h, st.st_size);
  prov_hash_str(&h, d->model_id);
  int64_t shape[] = {d->n_layers, d->n_q_heads, d->n_kv_heads, d->head_dim, d->kq_post_rope, d->dtype,
                     d->n_dump_layers, d->n_tokens, d->n_q_rows, d->n_seq, d->n_domains};
  for (size_t i = 0; i < sizeof shape / sizeof shape[0]; i++) prov_hash_i64(&h, shape[i]);
  prov_hash_str(&h, d->rope);
  for (int i = 0; i < d->n_dump_layers; i++) prov_hash_i64(&h, d->layers[i]);
  for (int s = 0; s <= d->n_seq; s++) {
    prov_hash_i64(&h, d->seq_off[s]);
    prov_hash_i64(&h, d->q_off[s]);
  }
  for (int s = 0; s < d->n_seq; s++) {
    prov_hash_i64(&h, d->split[s]);
    prov_hash_i64(&h, d->domain[s]);
  }
  for (int i = 0; i < d->n_domains; i++) prov_hash_str(&h, d->domain_names[i]);
  prov_hash_str(&h, d->provenance ? d->provenance : "");
  enum { BLOCKS = 64, BLOCK = 4096 };
  uint8_t buf[BLOCK];
  int64_t span = st.st_size > BLOCK ? st.st_size - BLOCK : 0;
  for (int b = 0; b < BLOCKS; b++) {
    off_t off = (off_t)(span * b / (BLOCKS - 1));
    ssize_t got = pread(fd, buf, BLOCK, off);
    if (got < 0) {
      close(fd);
      return sq_fail(e, SQ_EINPUT, "%s: read failed: %s", d->path, strerror(errno));
    }
    prov_hash_i64(&h, (int64_t)off);
    sha256_update(&h, buf, (size_t)got);
  }
  close(fd);
  uint8_t dg[32];
  sha256_final(&h, dg);
  sha256_hex(dg, hex);
  *size = st.st_size;
  return SQ_OK;
}

double prov_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double prov_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

int prov_phases_on(void) {
  const char *ph = getenv("SQEXP_EVAL_PHASES");
  return ph && *ph && strcmp(ph, "0");
}

static json_t *prov_time(double t) {
  time_t s = (time_t)t;
  struct tm tm;
  gmtime_r(&s, &tm);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return json_string(buf);
}

static json_t *prov_dump_json(const dump_t *d, const char *fp, int64_t size) {
  json_t *o = json_object();
  json_object_set_new(o, "path", json_string(d->path));
  json_object_set_new(o, "fingerprint", json_string(fp));
  json_object_set_new(o, "fingerprint_method", json_string("sha256 of size + validated header + 64 sampled 4 KiB blocks"));
  json_object_set_new(o, "size_bytes", json_integer(size));
  json_object_set_new(o, "model_id", json_string(d->model_id));
  json_object_set_new(o, "n_layers", json_integer(d->n_layers));
  json_object_set_new(o, "n_q_heads", json_integer(d->n_q_heads));
  json_object_set_new(o, "n_kv_heads", json_integer(d->n_kv_heads));
  json_object_set_new(o, "head_dim", json_integer(d->head_dim));
  json_object_set_new(o, "rope", json_string(d->rope));
  json_object_set_new(o, "kq_post_rope", json_integer(d->kq_post_rope));
  static const char *const dtypes[] = {"float16", "bfloat16", "float32"};
  json_object_set_new(o, "dtype", json_string(d->dtype >= 0 && d->dtype < 3 ? dtypes[d->dtype] : "?"));
  json_t *layers = json_array();
  for (int i = 0; i < d->n_dump_layers; i++) json_array_append_new(layers, json_integer(d->layers[i]));
  json_object_set_new(o, "layers", layers);
  json_object_set_new(o, "n_tokens", json_integer(d->n_tokens));
  json_object_set_new(o, "n_sequences", json_integer(d->n_seq));
  json_error_t je;
  json_t *prov = d->provenance ? json_loads(d->provenance, 0, &je) : NULL;
  json_object_set_new(o, "provenance", prov ? prov : json_string(d->provenance ? d->provenance : ""));
  return o;
}

static json_t *prov_session(const prov_info *p) {
  json_t *s = json_object();
  json_object_set_new(s, "status", json_string(p->status));
  json_object_set_new(s, "start", prov_time(p->start_time));
  json_object_set_new(s, "end", prov_time(p->end_time));
  json_object_set_new(s, "wall_s", json_real(p->end_time - p->start_time));
  json_t *ph = json_object();
  for (int i = 0; i < PROV_NPHASE; i++) json_object_set_new(ph, prov_phase_names[i], json_real(p->phase_s[i]));
  json_object_set_new(s, "phase_s", ph);
  json_object_set_new(s, "backend", json_string(p->backend ? p->backend : ""));
  json_object_set_new(s, "rows_computed", json_integer(p->rows_computed));
  json_object_set_new(s, "rows_total", json_integer(p->rows_total));
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  json_object_set_new(s, "host", json_string(host));
  struct utsname u;
  if (uname(&u) == 0) {
    char sys[600];
    snprintf(sys, sizeof sys, "%s %s %s", u.sysname, u.release, u.machine);
    json_object_set_new(s, "system", json_string(sys));
  }
  json_object_set_new(s, "cpus_online", json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
  return s;
}

int prov_write(const char *dir, const prov_info *p, sq_err *e) {
  char path[1200], tmp[1300];
  snprintf(path, sizeof path, "%s/provenance.json", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  json_error_t je;
  json_t *old = json_load_file(path, 0, &je);
  json_t *sessions = old ? json_object_get(old, "sessions") : NULL;
  sessions = json_is_array(sessions) ? json_incref(sessions) : json_array();
  json_decref(old);
  /* A session that is still "running" is replaced by its final state, not duplicated. */
  size_t ns = json_array_size(sessions);
  json_t *last = ns ? json_array_get(sessions, ns - 1) : NULL;
  const char *last_status = last ? json_string_value(json_object_get(last, "status")) : NULL;
  json_t *last_start = last ? json_object_get(last, "start") : NULL;
  json_t *this_start = prov_time(p->start_time);
  if (last_status && !strcmp(last_status, "running") && json_equal(last_start, this_start))
    json_array_remove(sessions, ns - 1);
  json_decref(this_start);
  json_array_append_new(sessions, prov_session(p));

  json_t *o = json_object();
  json_object_set_new(o, "sqexp_version", json_string(SQEXP_VERSION));
  json_object_set_new(o, "git_commit", json_string(SQEXP_GIT));
  json_t *cfg = json_object();
  json_object_set_new(cfg, "path", json_string(p->cfg->path));
  json_object_set_new(cfg, "hash", json_string(p->config_hash));
  json_object_set_new(cfg, "hash_of", json_string("the resolved config (cfg_print) without comments, out and dump"));
  json_object_set_new(cfg, "text", json_string(p->cfg->text ? p->cfg->text : ""));
  json_object_set_new(o, "config", cfg);
  json_object_set_new(o, "dump", prov_dump_json(p->dump, p->dump_fp, p->dump_size));
  json_object_set_new(o, "latest", json_deep_copy(json_array_get(sessions, json_array_size(sessions) - 1)));
  json_object_set_new(o, "sessions", sessions);
  int bad = json_dump_file(o, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
  json_decref(o);
  if (bad || rename(tmp, path) != 0) {
    unlink(tmp);
    return sq_fail(e, SQ_EFAIL, "cannot write %s: %s", path, strerror(errno));
  }
  return SQ_OK;
}
