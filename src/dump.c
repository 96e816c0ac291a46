/* dump.c: the HDF5 activation-dump reader (docs/dump-format.md). dump_open validates every
 * attribute, the sequence table and every layer dataset's shape and dtype (metadata only, cheap);
 * dump_read_layer streams one layer, converting to float32 chunk by chunk and refusing non-finite
 * values unless allowed. Every HDF5 failure becomes a message naming the file and the object. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "dump.h"
#include "dump_internal.h"
#include "f16_rows.h"

typedef struct {
  hid_t file;
} dump_h5;

static hid_t file_of(const dump_t *d) { return ((const dump_h5 *)d->h5)->file; }

/* ---------- shared helpers (declared in dump_internal.h) ---------- */

void dump_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef struct {
  char desc[512];
  int io;
} walk_state;

static herr_t walk_cb(unsigned n, const H5E_error2_t *err, void *data) {
  walk_state *s = data;
  (void)n;
  if (err->desc && err->desc[0]) snprintf(s->desc, sizeof s->desc, "%s", err->desc);
  if (err->maj_num == H5E_IO) s->io = 1;
  return 0;
}

int dump_h5_summary(char *buf, size_t n) {
  walk_state s = {"unknown HDF5 error", 0};
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_cb, &s);
  snprintf(buf, n, "%s", s.desc);
  return s.io;
}

hid_t dump_h5_half_type(void) {
  hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  H5Tset_fields(t, 15, 10, 5, 0, 10);
  H5Tset_size(t, 2);
  H5Tset_ebias(t, 15);
  return t;
}

static const char *const dtype_names[] = {"float16", "bfloat16", "float32"};

const char *dump_dtype_name(int dtype) {
  return (dtype >= 0 && dtype <= DUMP_F32) ? dtype_names[dtype] : NULL;
}

int dump_dtype_parse(const char *s) {
  for (int i = 0; i <= DUMP_F32; i++)
    if (!strcmp(s, dtype_names[i])) return i;
  return -1;
}

static int check_model(const dump_t *d, sq_err *e) {
  const char *p = d->path;
  if (d->n_layers < 1) return sq_fail(e, SQ_EINPUT, "%s: attribute n_layers = %d (expected >= 1)", p, d->n_layers);
  if (d->n_q_heads < 1 || d->n_kv_heads < 1 || d->n_q_heads % d->n_kv_heads)
    return sq_fail(e, SQ_EINPUT, "%s: attributes n_q_heads = %d, n_kv_heads = %d (expected both >= 1 and n_q_heads "
                   "a multiple of n_kv_heads)", p, d->n_q_heads, d->n_kv_heads);
  if (d->head_dim < 2 || d->head_dim > 256 || d->head_dim % 2)
    return sq_fail(e, SQ_EINPUT, "%s: attribute head_dim = %d (expected an even number in [2, 256])", p, d->head_dim);
  if (strcmp(d->rope, "rope") && strcmp(d->rope, "none"))
    return sq_fail(e, SQ_EINPUT, "%s: attribute rope = \"%s\" (expected \"rope\" or \"none\")", p, d->rope);
  if (d->kq_post_rope != 0 && d->kq_post_rope != 1)
    return sq_fail(e, SQ_EINPUT, "%s: attribute kq_post_rope = %d (expected 0 or 1)", p, d->kq_post_rope);
  if (!dump_dtype_name(d->dtype)) return sq_fail(e, SQ_EINPUT, "%s: unsupported dtype code %d", p, d->dtype);
  if (d->n_dump_layers < 1) return sq_fail(e, SQ_EINPUT, "%s: attribute layers is empty (expected >= 1 layer)", p);
  for (int i = 0; i < d->n_dump_layers; i++) {
    int l = d->layers[i];
    if (l < 0 || l >= d->n_layers)
      return sq_fail(e, SQ_EINPUT, "%s: attribute layers[%d] = %d is outside [0, n_layers=%d)", p, i, l, d->n_layers);
    if (i > 0 && l <= d->layers[i - 1])
      return sq_fail(e, SQ_EINPUT, "%s: attribute layers is not strictly increasing (layers[%d] = %d after %d)", p, i,
                     l, d->layers[i - 1]);
  }
  return SQ_OK;
}

static int check_sequences(const dump_t *d, sq_err *e) {
  const char *p = d->path;
  if (d->n_seq < 1) return sq_fail(e, SQ_EINPUT, "%s: /sequences: no sequences (expected S >= 1)", p);
  if (d->seq_off[0] != 0)
    return sq_fail(e, SQ_EINPUT, "%s: /sequences/offsets[0] = %lld (expected 0)", p, (long long)d->seq_off[0]);
  if (d->q_off[0] != 0)
    return sq_fail(e, SQ_EINPUT, "%s: /sequences/q_offsets[0] = %lld (expected 0)", p, (long long)d->q_off[0]);
  for (int s = 0; s < d->n_seq; s++) {
    int64_t len = d->seq_off[s + 1] - d->seq_off[s], qlen = d->q_off[s + 1] - d->q_off[s];
    if (len < 1)
      return sq_fail(e, SQ_EINPUT, "%s: /sequences/offsets: sequence %d is empty or offsets decrease (offsets[%d] = %lld, "
                     "offsets[%d] = %lld; expected strictly increasing)", p, s, s, (long long)d->seq_off[s], s + 1,
                     (long long)d->seq_off[s + 1]);
    if (qlen != 0 && qlen != len)
      return sq_fail(e, SQ_EINPUT, "%s: /sequences/q_offsets: sequence %d has %lld query rows (expected 0 or its length "
                     "%lld)", p, s, (long long)qlen, (long long)len);
    if (d->split[s] != DUMP_SPLIT_CALIB && d->split[s] != DUMP_SPLIT_EVAL)
      return sq_fail(e, SQ_EINPUT, "%s: /sequences/split[%d] = %d (expected 0 = calibration or 1 = evaluation)", p, s,
                     d->split[s]);
    if (d->domain && (d->domain[s] < 0 || d->domain[s] >= d->n_domains))
      return sq_fail(e, SQ_EINPUT, "%s: /sequences/domain[%d] = %d (expected an index into the %d domain_names)", p, s,
                     d->domain[s], d->n_domains);
  }
  if (d->seq_off[d->n_seq] != d->n_tokens)
    return sq_fail(e, SQ_EINPUT, "%s: /sequences/offsets[S=%d] = %lld but the layers hold T = %lld tokens", p, d->n_seq,
                   (long long)d->seq_off[d->n_seq], (long long)d->n_tokens);
  if (d->q_off[d->n_seq] != d->n_q_rows)
    return sq_fail(e, SQ_EINPUT, "%s: /sequences/q_offsets[S=%d] = %lld but the layers hold T_q = %lld query rows", p,
                   d->n_seq, (long long)d->q_off[d->n_seq], (long long)d->n_q_rows);
  return SQ_OK;
}

int dump_check_header(const dump_t *d, sq_err *e) {
  int rc = check_model(d, e);
  return rc ? rc : check_sequences(d, e);
}

/* ---------- attributes ---------- */

static int h5_fail(const dump_t *d, sq_err *e, const char *what) {
  char sum[512];
  int io = dump_h5_summary(sum, sizeof sum);
  return sq_fail(e, io ? SQ_EFAIL : SQ_EINPUT, "%s: %s (%s)", d->path, what, sum);
}

/* Opens attribute `name` of loc (an object whose path is `obj`), or fails naming it. */
static hid_t attr_open(const dump_t *d, hid_t loc, const char *obj, const char *name, sq_err *e) {
  htri_t ok = H5Aexists(loc, name);
  if (ok <= 0) {
    sq_fail(e, SQ_EINPUT, "%s: %s: attribute '%s' is missing (see docs/dump-format.md)", d->path, obj, name);
    return -1;
  }
  hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
  if (a < 0) {
    char what[256];
    snprintf(what, sizeof what, "%s: cannot open attribute '%s'", obj, name);
    h5_fail(d, e, what);
  }
  return a;
}

/* Reads a string attribute stored as a fixed- or variable-length string; *out is malloc'ed. */
static int attr_string(const dump_t *d, hid_t loc, const char *obj, const char *name, char **out, sq_err *e) {
  *out = NULL;
  hid_t a = attr_open(d, loc, obj, name, e);
  if (a < 0) return e->code;
  hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
  int rc = SQ_OK;
  if (H5Tget_class(t) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1) {
    rc = sq_fail(e, SQ_EINPUT, "%s: %s: attribute '%s' is not a single string", d->path, obj, name);
  } else if (H5Tis_variable_str(t) > 0) {
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5Tget_cset(t));
    char *s = NULL;
    if (H5Aread(a, mt, &s) < 0 || !s) rc = sq_fail(e, SQ_EINPUT, "%s: %s: cannot read attribute '%s'", d->path, obj, name);
    else {
      *out = strdup(s);
      H5free_memory(s);
    }
    H5Tclose(mt);
  } else {
    size_t n = H5Tget_size(t);
    char *s = sq_xcalloc(n + 1, 1);
    if (H5Aread(a, t, s) < 0) {
      free(s);
      rc = sq_fail(e, SQ_EINPUT, "%s: %s: cannot read attribute '%s'", d->path, obj, name);
    } else *out = s;
  }
  H5Sclose(sp);
  H5Tclose(t);
  H5Aclose(a);
  return rc;
}

static int attr_string_buf(const dump_t *d, hid_t loc, const char *obj, const char *name, char *buf, size_t n,
                           sq_err *e) {
  char *s = NULL;
  int rc = attr_string(d, loc, obj, name, &s, e);
  if (rc) return rc;
  if (strlen(s) >= n) rc = sq_fail(e, SQ_EINPUT, "%s: %s: attribute '%s' is longer than %zu bytes", d->path, obj, name, n - 1);
  else snprintf(buf, n, "%s", s);
  free(s);
  return rc;
}

/* Reads an integer attribute of any integer type and rank <= 1 into ints; *out malloc'ed. */
static int attr_ints(const dump_t *d, hid_t loc, const char *obj, const char *name, int **out, int *n, sq_err *e) {
  *out = NULL;
  hid_t a = attr_open(d, loc, obj, name, e);
  if (a < 0) return e->code;
  hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
  hssize_t np = H5Sget_simple_extent_npoints(sp);
  int rank = H5Sget_simple_extent_ndims(sp), rc = SQ_OK;
  if (H5Tget_class(t) != H5T_INTEGER || rank > 1 || np < 0 || np > (1 << 20)) {
    rc = sq_fail(e, SQ_EINPUT, "%s: %s: attribute '%s' is not an integer %s", d->path, obj, name,
                 rank > 1 ? "vector (rank > 1)" : "or integer vector");
  } else {
    *out = sq_xcalloc((size_t)np, sizeof(int));
    *n = (int)np;
    if (np > 0 && H5Aread(a, H5T_NATIVE_INT, *out) < 0) {
      rc = sq_fail(e, SQ_EINPUT, "%s: %s: attribute '%s' does not fit a 32-bit integer", d->path, obj, name);
      free(*out);
      *out = NULL;
    }
  }
  H5Sclose(sp);
  H5Tclose(t);
  H5Aclose(a);
  return rc;
}

static int attr_int(const dump_t *d, hid_t loc, const char *obj, const char *name, int *out, sq_err *e) {
  int *v = NULL, n = 0;
  int rc = attr_ints(d, loc, obj, name, &v, &n, e);
  if (rc) return rc;
  if (n != 1) rc = sq_fail(e, SQ_EINPUT, "%s: %s: attribute '%s' has %d values (expected one integer)", d->path, obj, name, n);
  else *out = v[0];
  free(v);
  return rc;
}

/* ---------- datasets ---------- */

/* 1 when every component of the absolute path exists (H5Lexists fails on a missing parent). */
static int path_exists(hid_t file, const char *path) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *c = buf + 1;; c++) {
    if (*c == '/' || *c == '\0') {
      char save = *c;
      *c = '\0';
      if (H5Lexists(file, buf, H5P_DEFAULT) <= 0) return 0;
      *c = save;
      if (!save) return 1;
    }
  }
}

static hid_t ds_open(const dump_t *d, const char *path, sq_err *e) {
  if (!path_exists(file_of(d), path)) {
    sq_fail(e, SQ_EINPUT, "%s: %s: dataset is missing (see docs/dump-format.md)", d->path, path);
    return -1;
  }
  hid_t ds = H5Dopen2(file_of(d), path, H5P_DEFAULT);
  if (ds < 0) {
    char what[600];
    snprintf(what, sizeof what, "%s: is not a readable dataset", path);
    h5_fail(d, e, what);
  }
  return ds;
}

/* Storage dtype of a layer dataset: DUMP_F16/BF16/F32, or -1 (unsupported). */
static int ds_dtype(hid_t ds) {
  hid_t t = H5Dget_type(ds);
  H5T_class_t cls = H5Tget_class(t);
  size_t sz = H5Tget_size(t);
  int r = -1;
  if (cls == H5T_FLOAT && sz == 4) r = DUMP_F32;
  else if (cls == H5T_FLOAT && sz == 2) {
    size_t spos, epos, esize, mpos, msize;
    H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize);
    if (spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(t) == 15) r = DUMP_F16;
  } else if (cls == H5T_INTEGER && sz == 2 && H5Tget_sign(t) == H5T_SGN_NONE && H5Aexists(ds, "bfloat16") > 0) {
    r = DUMP_BF16;
  }
  H5Tclose(t);
  return r;
}

static void fmt_dims(char *buf, size_t n, int rank, const hsize_t *dims) {
  size_t used = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < rank && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
  if (used < n) snprintf(buf + used, n - used, "]");
}

/* Checks a layer dataset: rank 3, shape [rows, heads, D], dtype = the root dtype. names[] are
 * the dimension names printed in the expected shape ("T", "H_kv", "D"). */
static int ds_check3(const dump_t *d, hid_t ds, const char *path, int64_t rows, int heads, const char *rname,
                     const char *hname, sq_err *e) {
  hid_t sp = H5Dget_space(ds);
  hsize_t dims[8] = {0};
  int rank = H5Sget_simple_extent_ndims(sp);
  if (rank >= 0 && rank <= 8) H5Sget_simple_extent_dims(sp, dims, NULL);
  H5Sclose(sp);
  if (rank != 3 || (int64_t)dims[0] != rows || (int64_t)dims[1] != heads || (int64_t)dims[2] != d->head_dim) {
    char found[160];
    if (rank >= 0 && rank <= 8) fmt_dims(found, sizeof found, rank, dims);
    else snprintf(found, sizeof found, "an unreadable dataspace");
    const char *hint = rank == 3 && (int64_t)dims[0] != rows
                           ? (rname[1] ? " (T_q is /sequences/q_offsets[S])" : " (T is /sequences/offsets[S])")
                           : "";
    return sq_fail(e, SQ_EINPUT, "%s: %s: expected shape [%s=%lld, %s=%d, D=%d], found %s%s", d->path, path, rname,
                   (long long)rows, hname, heads, d->head_dim, found, hint);
  }
  int dt = ds_dtype(ds);
  if (dt < 0)
    return sq_fail(e, SQ_EINPUT, "%s: %s: unsupported storage type (expected IEEE float16, float32, or uint16 with "
                   "attribute bfloat16 = 1)", d->path, path);
  if (dt != d->dtype)
    return sq_fail(e, SQ_EINPUT, "%s: %s: stored as %s but the root attribute dtype says %s", d->path, path,
                   dump_dtype_name(dt), dump_dtype_name(d->dtype));
  return SQ_OK;
}

/* Reads a rank-1 integer dataset of n elements (n < 0: any length, returned in *n_out) as
 * `mem` (H5T_NATIVE_INT64 or H5T_NATIVE_INT) into a malloc'ed buffer. */
static int ds_read_1d(const dump_t *d, const char *path, hid_t mem, size_t elem, int64_t n, void **out,
                      int64_t *n_out, sq_err *e) {
  *out = NULL;
  hid_t ds = ds_open(d, path, e);
  if (ds < 0) return e->code;
  hid_t sp = H5Dget_space(ds), t = H5Dget_type(ds);
  hsize_t dims[8] = {0};
  int rank = H5Sget_simple_extent_ndims(sp), rc = SQ_OK;
  if (rank >= 0 && rank <= 8) H5Sget_simple_extent_dims(sp, dims, NULL);
  if (H5Tget_class(t) != H5T_INTEGER) {
    rc = sq_fail(e, SQ_EINPUT, "%s: %s: expected an integer dataset", d->path, path);
  } else if (rank != 1 || (n >= 0 && (int64_t)dims[0] != n)) {
    char found[160], want[64];
    fmt_dims(found, sizeof found, rank > 0 && rank <= 8 ? rank : 0, dims);
    if (n >= 0) snprintf(want, sizeof want, "shape [%lld]", (long long)n);
    else snprintf(want, sizeof want, "a vector (rank 1)");
    rc = sq_fail(e, SQ_EINPUT, "%s: %s: expected %s, found %s", d->path, path, want, found);
  } else if (dims[0] > (hsize_t)1 << 31) {
    rc = sq_fail(e, SQ_EINPUT, "%s: %s: %llu entries is too many", d->path, path, (unsigned long long)dims[0]);
  } else {
    *out = sq_xcalloc(dims[0] ? dims[0] : 1, elem);
    *n_out = (int64_t)dims[0];
    if (dims[0] && H5Dread(ds, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0) {
      char what[600];
      snprintf(what, sizeof what, "%s: cannot read", path);
      rc = h5_fail(d, e, what);
    }
  }
  H5Tclose(t);
  H5Sclose(sp);
  H5Dclose(ds);
  return rc;
}

/* ---------- open ---------- */

static int read_root_attrs(dump_t *d, sq_err *e) {
  hid_t f = file_of(d);
  char fmt[128];
  int version = 0, n = 0, rc;
  if ((rc = attr_string_buf(d, f, "/", "format", fmt, sizeof fmt, e))) return rc;
  if (strcmp(fmt, DUMP_FORMAT_NAME))
    return sq_fail(e, SQ_EINPUT, "%s: /: attribute format = \"%s\" (expected \"%s\"; not an sqexp activation dump)",
                   d->path, fmt, DUMP_FORMAT_NAME);
  if ((rc = attr_int(d, f, "/", "format_version", &version, e))) return rc;
  if (version != DUMP_FORMAT_VERSION)
    return sq_fail(e, SQ_EINPUT, "%s: /: attribute format_version = %d is not supported (this reader reads version %d)",
                   d->path, version, DUMP_FORMAT_VERSION);
  char dtype[32];
  if ((rc = attr_string_buf(d, f, "/", "model_id", d->model_id, sizeof d->model_id, e)) ||
      (rc = attr_int(d, f, "/", "n_layers", &d->n_layers, e)) ||
      (rc = attr_int(d, f, "/", "n_q_heads", &d->n_q_heads, e)) ||
      (rc = attr_int(d, f, "/", "n_kv_heads", &d->n_kv_heads, e)) ||
      (rc = attr_int(d, f, "/", "head_dim", &d->head_dim, e)) ||
      (rc = attr_string_buf(d, f, "/", "rope", d->rope, sizeof d->rope, e)) ||
      (rc = attr_int(d, f, "/", "kq_post_rope", &d->kq_post_rope, e)) ||
      (rc = attr_string_buf(d, f, "/", "dtype", dtype, sizeof dtype, e)) ||
      (rc = attr_ints(d, f, "/", "layers", &d->layers, &n, e)) ||
      (rc = attr_string(d, f, "/", "provenance", &d->provenance, e)))
    return rc;
  d->n_dump_layers = n;
  d->dtype = dump_dtype_parse(dtype);
  if (d->dtype < 0)
    return sq_fail(e, SQ_EINPUT, "%s: /: attribute dtype = \"%s\" (expected float16, bfloat16 or float32)", d->path, dtype);
  return check_model(d, e);
}

static int split_domain_names(dump_t *d, const char *names) {
  int n = 1;
  for (const char *c = names; *c; c++) n += *c == ',';
  d->domain_names = sq_xcalloc((size_t)n, sizeof(char *));
  d->n_domains = n;
  const char *start = names;
  for (int i = 0; i < n; i++) {
    const char *end = strchr(start, ',');
    size_t len = end ? (size_t)(end - start) : strlen(start);
    d->domain_names[i] = sq_xcalloc(len + 1, 1);
    memcpy(d->domain_names[i], start, len);
    start = end ? end + 1 : start + len;
  }
  return SQ_OK;
}

static int read_sequences(dump_t *d, sq_err *e) {
  int64_t n_off = 0, n = 0;
  void *buf = NULL;
  int rc;
  if ((rc = ds_read_1d(d, "/sequences/offsets", H5T_NATIVE_INT64, 8, -1, (void **)&d->seq_off, &n_off, e))) return rc;
  if (n_off < 2 || n_off - 1 > (1 << 30))
    return sq_fail(e, SQ_EINPUT, "%s: /sequences/offsets: %lld entries (expected S+1 >= 2)", d->path, (long long)n_off);
  d->n_seq = (int)(n_off - 1);
  if ((rc = ds_read_1d(d, "/sequences/q_offsets", H5T_NATIVE_INT64, 8, n_off, (void **)&d->q_off, &n, e))) return rc;
  if ((rc = ds_read_1d(d, "/sequences/split", H5T_NATIVE_INT, sizeof(int), d->n_seq, &buf, &n, e))) return rc;
  d->split = sq_xcalloc((size_t)d->n_seq, 1);
  for (int s = 0; s < d->n_seq; s++) {
    int v = ((int *)buf)[s];
    d->split[s] = (uint8_t)(v == 0 || v == 1 ? v : 255); /* 255: refused by check_sequences */
  }
  free(buf);
  hid_t f = file_of(d);
  if (H5Lexists(f, "/sequences/domain", H5P_DEFAULT) > 0) {
    if ((rc = ds_read_1d(d, "/sequences/domain", H5T_NATIVE_INT, sizeof(int), d->n_seq, (void **)&d->domain, &n, e)))
      return rc;
    hid_t g = H5Gopen2(f, "/sequences", H5P_DEFAULT);
    char *names = NULL;
    rc = attr_string(d, g, "/sequences", "domain_names", &names, e);
    H5Gclose(g);
    if (rc) return rc;
    split_domain_names(d, names);
    free(names);
  } else {
    d->domain = sq_xcalloc((size_t)d->n_seq, sizeof(int));
    split_domain_names(d, "all");
  }
  d->n_tokens = d->seq_off[d->n_seq];
  d->n_q_rows = d->q_off[d->n_seq];
  return SQ_OK;
}

/* Checks k, v, q (and optional k_pre, q_pre) of stored layer idx. */
static int check_layer_meta(dump_t *d, int idx, int *has_pre, sq_err *e) {
  const char *names[] = {"k", "v", "q", "k_pre", "q_pre"};
  int n_pre = 0;
  for (int i = 0; i < 5; i++) {
    char path[128];
    snprintf(path, sizeof path, "/layers/%d/%s", d->layers[idx], names[i]);
    int is_q = names[i][0] == 'q';
    if (i >= 3) {
      if (!path_exists(file_of(d), path)) continue;
      n_pre++;
    }
    hid_t ds = ds_open(d, path, e);
    if (ds < 0) return e->code;
    int rc = ds_check3(d, ds, path, is_q ? d->n_q_rows : d->n_tokens, is_q ? d->n_q_heads : d->n_kv_heads,
                       is_q ? "T_q" : "T", is_q ? "H_q" : "H_kv", e);
    H5Dclose(ds);
    if (rc) return rc;
  }
  *has_pre = n_pre == 2;
  return SQ_OK;
}

int dump_open(dump_t *d, const char *path, int allow_nonfinite, sq_err *e) {
  memset(d, 0, sizeof *d);
  snprintf(d->path, sizeof d->path, "%s", path);
  d->allow_nonfinite = allow_nonfinite;
  dump_h5_quiet();
  if (access(path, R_OK) != 0) return sq_fail(e, SQ_EINPUT, "%s: cannot open (%s)", path, strerror(errno));
  htri_t is = H5Fis_hdf5(path);
  if (is <= 0) return sq_fail(e, SQ_EINPUT, "%s: not an HDF5 file (no HDF5 signature found)", path);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    char sum[512];
    dump_h5_summary(sum, sizeof sum);
    return sq_fail(e, SQ_EINPUT, "%s: %s HDF5 file (%s)", path,
                   strstr(sum, "truncated") ? "truncated" : "unreadable or damaged", sum);
  }
  dump_h5 *box = sq_xmalloc(sizeof *box);
  box->file = f;
  d->h5 = box;
  int rc = read_root_attrs(d, e);
  if (!rc) rc = read_sequences(d, e);
  if (!rc) rc = check_sequences(d, e);
  int all_pre = 1;
  for (int i = 0; !rc && i < d->n_dump_layers; i++) {
    int has_pre = 0;
    rc = check_layer_meta(d, i, &has_pre, e);
    all_pre &= has_pre;
  }
  if (rc) {
    dump_close(d);
    return rc;
  }
  d->has_pre_rope = all_pre;
  return SQ_OK;
}

void dump_close(dump_t *d) {
  if (!d) return;
  if (d->h5) {
    H5Fclose(file_of(d));
    free(d->h5);
  }
  free(d->layers);
  free(d->provenance);
  free(d->seq_off);
  free(d->q_off);
  free(d->split);
  free(d->domain);
  for (int i = 0; i < d->n_domains && d->domain_names; i++) free(d->domain_names[i]);
  free(d->domain_names);
  char path[sizeof d->path];
  memcpy(path, d->path, sizeof path);
  memset(d, 0, sizeof *d);
  memcpy(d->path, path, sizeof path); /* keep the name for messages after close */
}

int dump_find_layer(const dump_t *d, int layer) {
  for (int i = 0; i < d->n_dump_layers; i++)
    if (d->layers[i] == layer) return i;
  return -1;
}

/* ---------- streaming read ---------- */

typedef struct {
  int64_t count;       /* non-finite values seen */
  int64_t row;         /* first: row of the dataset */
  int head, dim;
} nonfinite;

/* Rows per read: a whole number of storage chunks (each chunk is decompressed once) and about
 * 8 MiB of raw data, so the temporary stays small whatever the layer size. */
static int64_t slab_rows(hid_t ds, int64_t rows, size_t row_bytes) {
  hid_t pl = H5Dget_create_plist(ds);
  int64_t chunk = 1;
  hsize_t cd[8];
  if (H5Pget_layout(pl) == H5D_CHUNKED && H5Pget_chunk(pl, 8, cd) == 3) chunk = (int64_t)cd[0];
  H5Pclose(pl);
  int64_t want = (int64_t)((8u << 20) / (row_bytes ? row_bytes : 1));
  int64_t n = want < chunk ? chunk : (want / chunk) * chunk;
  return n < rows ? n : rows;
}

/* Convert n stored elements to float32 (f16_rows.h: F16C where the CPU has it, bit-identical to
 * f16.h) and count the non-finite ones; the dataset's first is located by its row (row0 is the
 * slab's first), head and dim. For float32, raw is dst (read in place) and only the count runs. */
static void convert_rows(int dtype, const void *raw, float *dst, int64_t n, nonfinite *nf, int64_t row0, int row_len,
                         int D) {
  int64_t first = 0;
  int64_t bad = dtype == DUMP_F32   ? f32_rows_nonfinite(dst, n, &first)
                : dtype == DUMP_F16 ? f16_rows_to_f32((const uint16_t *)raw, dst, n, &first)
                                    : bf16_rows_to_f32((const uint16_t *)raw, dst, n, &first);
  if (bad && nf->count == 0) {
    nf->row = row0 + first / row_len;
    nf->head = (int)((first % row_len) / D);
    nf->dim = (int)(first % D);
  }
  nf->count += bad;
}

/* The sequence token of query row r (query rows follow their sequences' tokens in order). */
static int64_t q_row_token(const dump_t *d, int64_t r) {
  for (int s = 0; s < d->n_seq; s++)
    if (r >= d->q_off[s] && r < d->q_off[s + 1]) return d->seq_off[s] + (r - d->q_off[s]);
  return -1;
}

static int read_ds(dump_t *d, int layer, const char *name, int64_t rows, int heads, float *dst, sq_err *e) {
  char path[128];
  snprintf(path, sizeof path, "/layers/%d/%s", layer, name);
  int is_q = name[0] == 'q';
  hid_t ds = ds_open(d, path, e);
  if (ds < 0) return e->code;
  int rc = ds_check3(d, ds, path, rows, heads, is_q ? "T_q" : "T", is_q ? "H_q" : "H_kv", e);
  if (rc || rows == 0) {
    H5Dclose(ds);
    return rc;
  }
  int row_len = heads * d->head_dim;
  size_t elem = d->dtype == DUMP_F32 ? 4 : 2;
  int64_t step = slab_rows(ds, rows, (size_t)row_len * elem);
  void *raw = d->dtype == DUMP_F32 ? NULL : sq_xmalloc((size_t)step * (size_t)row_len * elem);
  hid_t mem_t = d->dtype == DUMP_F32 ? H5Tcopy(H5T_NATIVE_FLOAT)
                : d->dtype == DUMP_F16 ? dump_h5_half_type() : H5Tcopy(H5T_NATIVE_UINT16);
  hid_t fsp = H5Dget_space(ds);
  nonfinite nf = {0, 0, 0, 0};
  for (int64_t r0 = 0; r0 < rows && !rc; r0 += step) {
    int64_t n = rows - r0 < step ? rows - r0 : step;
    hsize_t start[3] = {(hsize_t)r0, 0, 0}, count[3] = {(hsize_t)n, (hsize_t)heads, (hsize_t)d->head_dim};
    hid_t msp = H5Screate_simple(3, count, NULL);
    float *out = dst + r0 * row_len;
    void *target = raw ? raw : (void *)out;
    if (H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread(ds, mem_t, msp, fsp, H5P_DEFAULT, target) < 0) {
      char what[256];
      snprintf(what, sizeof what, "%s: read failed at rows %lld..%lld", path, (long long)r0, (long long)(r0 + n - 1));
      rc = h5_fail(d, e, what);
    } else {
      convert_rows(raw ? d->dtype : DUMP_F32, target, out, n * row_len, &nf, r0, row_len, d->head_dim);
    }
    H5Sclose(msp);
  }
  H5Sclose(fsp);
  H5Tclose(mem_t);
  H5Dclose(ds);
  free(raw);
  if (!rc && nf.count && !d->allow_nonfinite) {
    char where[96] = "";
    if (is_q) snprintf(where, sizeof where, " (token %lld)", (long long)q_row_token(d, nf.row));
    rc = sq_fail(e, SQ_EINPUT, "%s: %s: %lld non-finite values (NaN/Inf); first at layer %d, %s %lld%s, head %d, dim %d "
                 "(refused; --allow-nonfinite accepts them)", d->path, path, (long long)nf.count, layer,
                 is_q ? "query row" : "token", (long long)nf.row, where, nf.head, nf.dim);
  }
  return rc;
}

static void layer_free(const dump_layer *l, void *p) {
  if (l->host_free) l->host_free(p);
  else free(p);
}

static void ensure(dump_layer *l, float **buf, size_t have, size_t need) {
  if (*buf && have >= need) return;
  layer_free(l, *buf);
  *buf = l->host_alloc ? (float *)l->host_alloc(need * sizeof(float)) : (float *)sq_xmalloc(need * sizeof(float));
}

int dump_read_layer(dump_t *d, int idx, dump_layer *out, sq_err *e) {
  if (!d->h5) return sq_fail(e, SQ_EFAIL, "%s: dump is not open", d->path);
  if (idx < 0 || idx >= d->n_dump_layers)
    return sq_fail(e, SQ_EINPUT, "%s: stored layer number %d does not exist (the dump stores %d layers)", d->path, idx,
                   d->n_dump_layers);
  size_t kv_have = (size_t)(out->n_tokens * out->n_kv_heads * out->head_dim);
  size_t q_have = (size_t)(out->n_q_rows * out->n_q_heads * out->head_dim);
  size_t kv_need = (size_t)(d->n_tokens * d->n_kv_heads * d->head_dim);
  size_t q_need = (size_t)(d->n_q_rows * d->n_q_heads * d->head_dim);
  ensure(out, &out->k, kv_have, kv_need);
  ensure(out, &out->v, kv_have, kv_need);
  ensure(out, &out->q, q_have, q_need);
  out->layer = d->layers[idx];
  out->n_tokens = d->n_tokens;
  out->n_q_rows = d->n_q_rows;
  out->n_kv_heads = d->n_kv_heads;
  out->n_q_heads = d->n_q_heads;
  out->head_dim = d->head_dim;
  int rc = read_ds(d, out->layer, "k", d->n_tokens, d->n_kv_heads, out->k, e);
  if (!rc) rc = read_ds(d, out->layer, "v", d->n_tokens, d->n_kv_heads, out->v, e);
  if (!rc) rc = read_ds(d, out->layer, "q", d->n_q_rows, d->n_q_heads, out->q, e);
  return rc;
}

void dump_layer_free(dump_layer *l) {
  if (!l) return;
  layer_free(l, l->k);
  layer_free(l, l->v);
  layer_free(l, l->q);
  void *(*ha)(size_t) = l->host_alloc;
  void (*hf)(void *) = l->host_free;
  memset(l, 0, sizeof *l);
  l->host_alloc = ha, l->host_free = hf; /* (the buffer may be filled again) */
}
