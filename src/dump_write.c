/* dump_write.c: the HDF5 activation-dump writer (docs/dump-format.md). Writes "<path>.partial",
 * one layer at a time, chunked [min(rows, 4096), H, D] with shuffle + gzip 4, and renames it to
 * <path> only in dump_finish, so a failed or interrupted write leaves no file under <path>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "dump.h"
#include "dump_internal.h"
#include "f16.h"

#define CHUNK_ROWS 4096

struct dump_writer {
  char path[1024], partial[1100];
  hid_t file;
  int n_q_heads, n_kv_heads, head_dim, dtype;
  int gzip_level;           /* -1 = uncompressed */
  int64_t n_tokens, n_q_rows;
  int n_dump_layers, next;  /* layers written so far */
  int *layers;
};

static int wfail(dump_writer *w, sq_err *e, const char *what) {
  char sum[512];
  dump_h5_summary(sum, sizeof sum);
  return sq_fail(e, SQ_EFAIL, "%s: %s (%s)", w->partial, what, sum);
}

/* Strings are scalar variable-length UTF-8, which h5py reads as str. */
static int put_string(hid_t loc, const char *name, const char *value) {
  hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
  int ok = a >= 0 && H5Awrite(a, t, &value) >= 0;
  if (a >= 0) H5Aclose(a);
  H5Sclose(sp);
  H5Tclose(t);
  return ok ? 0 : -1;
}

static int put_ints(hid_t loc, const char *name, const int *v, int n, int scalar) {
  hsize_t dim = (hsize_t)n;
  hid_t sp = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL);
  hid_t a = H5Acreate2(loc, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
  int ok = a >= 0 && H5Awrite(a, H5T_NATIVE_INT, v) >= 0;
  if (a >= 0) H5Aclose(a);
  H5Sclose(sp);
  return ok ? 0 : -1;
}

static int put_int(hid_t loc, const char *name, int v) { return put_ints(loc, name, &v, 1, 1); }

static int put_1d(hid_t loc, const char *name, hid_t file_t, hid_t mem_t, const void *v, int64_t n) {
  hsize_t dim = (hsize_t)n;
  hid_t sp = H5Screate_simple(1, &dim, NULL);
  hid_t ds = H5Dcreate2(loc, name, file_t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  int ok = ds >= 0 && H5Dwrite(ds, mem_t, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0;
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(sp);
  return ok ? 0 : -1;
}

static int write_root(dump_writer *w, const dump_t *h) {
  hid_t f = w->file;
  const char *prov = h->provenance ? h->provenance : "{}";
  if (put_string(f, "format", DUMP_FORMAT_NAME) || put_int(f, "format_version", DUMP_FORMAT_VERSION) ||
      put_string(f, "model_id", h->model_id) || put_int(f, "n_layers", h->n_layers) ||
      put_int(f, "n_q_heads", h->n_q_heads) || put_int(f, "n_kv_heads", h->n_kv_heads) ||
      put_int(f, "head_dim", h->head_dim) || put_string(f, "rope", h->rope) ||
      put_int(f, "kq_post_rope", h->kq_post_rope) || put_string(f, "dtype", dump_dtype_name(h->dtype)) ||
      put_ints(f, "layers", h->layers, h->n_dump_layers, 0) || put_string(f, "provenance", prov))
    return -1;
  return 0;
}

static char *join_names(const dump_t *h) {
  size_t n = 1;
  for (int i = 0; i < h->n_domains; i++) n += strlen(h->domain_names[i]) + 1;
  char *s = sq_xcalloc(n, 1);
  for (int i = 0; i < h->n_domains; i++) {
    if (i) strcat(s, ",");
    strcat(s, h->domain_names[i]);
  }
  return s;
}

static int write_sequences(dump_writer *w, const dump_t *h) {
  hid_t g = H5Gcreate2(w->file, "/sequences", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) return -1;
  int64_t n1 = h->n_seq + 1;
  int bad = put_1d(g, "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, h->seq_off, n1) ||
            put_1d(g, "q_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, h->q_off, n1) ||
            put_1d(g, "split", H5T_STD_U8LE, H5T_NATIVE_UINT8, h->split, h->n_seq);
  if (!bad && h->domain && h->domain_names && h->n_domains > 0) {
    char *names = join_names(h);
    bad = put_1d(g, "domain", H5T_STD_I32LE, H5T_NATIVE_INT, h->domain, h->n_seq) ||
          put_string(g, "domain_names", names);
    free(names);
  }
  H5Gclose(g);
  return bad ? -1 : 0;
}

int dump_create(dump_writer **out, const dump_t *h, sq_err *e) {
  *out = NULL;
  if (h->domain && h->domain_names)
    for (int i = 0; i < h->n_domains; i++)
      if (strchr(h->domain_names[i], ','))
        return sq_fail(e, SQ_EINPUT, "%s: domain name \"%s\" contains a comma", h->path, h->domain_names[i]);
  int rc = dump_check_header(h, e);
  if (rc) return rc;
  dump_h5_quiet();
  dump_writer *w = sq_xcalloc(1, sizeof *w);
  snprintf(w->path, sizeof w->path, "%s", h->path);
  snprintf(w->partial, sizeof w->partial, "%s.partial", h->path);
  w->n_q_heads = h->n_q_heads;
  w->n_kv_heads = h->n_kv_heads;
  w->head_dim = h->head_dim;
  w->dtype = h->dtype;
  w->gzip_level = h->gzip_level == 0 ? 4 : h->gzip_level;
  w->n_tokens = h->n_tokens;
  w->n_q_rows = h->n_q_rows;
  w->n_dump_layers = h->n_dump_layers;
  w->layers = sq_xmalloc((size_t)h->n_dump_layers * sizeof(int));
  memcpy(w->layers, h->layers, (size_t)h->n_dump_layers * sizeof(int));
  w->file = H5Fcreate(w->partial, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (w->file < 0) {
    rc = wfail(w, e, "cannot create");
    free(w->layers);
    free(w);
    return rc;
  }
  hid_t g = -1;
  if (write_root(w, h) || write_sequences(w, h) ||
      (g = H5Gcreate2(w->file, "/layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) {
    rc = wfail(w, e, "cannot write the header");
    dump_abort(w);
    return rc;
  }
  H5Gclose(g);
  *out = w;
  return SQ_OK;
}

/* One layer dataset, written in slabs of whole chunks so the conversion buffer stays one chunk. */
static int write_ds(dump_writer *w, hid_t g, const char *name, const float *src, int64_t rows, int heads, sq_err *e) {
  hsize_t dims[3] = {(hsize_t)rows, (hsize_t)heads, (hsize_t)w->head_dim};
  int64_t step = rows < CHUNK_ROWS ? rows : CHUNK_ROWS;
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  if (rows > 0) {
    hsize_t chunk[3] = {(hsize_t)step, dims[1], dims[2]};
    H5Pset_chunk(dcpl, 3, chunk);
    if (w->gzip_level > 0) { /* gzip is single-threaded: large benchmark dumps skip it */
      H5Pset_shuffle(dcpl);
      H5Pset_deflate(dcpl, (unsigned)w->gzip_level);
    }
  }
  hid_t file_t = w->dtype == DUMP_F32 ? H5Tcopy(H5T_IEEE_F32LE)
                 : w->dtype == DUMP_F16 ? dump_h5_half_type() : H5Tcopy(H5T_STD_U16LE);
  hid_t mem_t = w->dtype == DUMP_F32 ? H5Tcopy(H5T_NATIVE_FLOAT)
                : w->dtype == DUMP_F16 ? dump_h5_half_type() : H5Tcopy(H5T_NATIVE_UINT16);
  hid_t fsp = H5Screate_simple(3, dims, NULL);
  hid_t ds = H5Dcreate2(g, name, file_t, fsp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  size_t row_len = (size_t)heads * (size_t)w->head_dim;
  uint16_t *tmp = w->dtype == DUMP_F32 || rows == 0 ? NULL : sq_xmalloc((size_t)step * row_len * 2);
  int rc = ds < 0 ? wfail(w, e, "cannot create a layer dataset") : SQ_OK;
  if (!rc && w->dtype == DUMP_BF16 && put_int(ds, "bfloat16", 1)) rc = wfail(w, e, "cannot write attribute bfloat16");
  for (int64_t r0 = 0; !rc && r0 < rows; r0 += step) {
    int64_t n = rows - r0 < step ? rows - r0 : step;
    const float *x = src + r0 * (int64_t)row_len;
    const void *buf = x;
    if (tmp) {
      for (size_t i = 0; i < (size_t)n * row_len; i++) tmp[i] = w->dtype == DUMP_F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
      buf = tmp;
    }
    hsize_t start[3] = {(hsize_t)r0, 0, 0}, count[3] = {(hsize_t)n, dims[1], dims[2]};
    hid_t msp = H5Screate_simple(3, count, NULL);
    if (H5Sselect_hyperslab(fsp, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dwrite(ds, mem_t, msp, fsp, H5P_DEFAULT, buf) < 0)
      rc = wfail(w, e, "cannot write layer data");
    H5Sclose(msp);
  }
  free(tmp);
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(fsp);
  H5Tclose(mem_t);
  H5Tclose(file_t);
  H5Pclose(dcpl);
  return rc;
}

int dump_write_layer(dump_writer *w, const dump_layer *l, sq_err *e) {
  if (w->next >= w->n_dump_layers)
    return sq_fail(e, SQ_EFAIL, "%s: layer %d written but all %d declared layers are already written", w->path,
                   l->layer, w->n_dump_layers);
  if (l->layer != w->layers[w->next])
    return sq_fail(e, SQ_EFAIL, "%s: layer %d written where layer %d was declared next", w->path, l->layer,
                   w->layers[w->next]);
  if (l->n_tokens != w->n_tokens || l->n_q_rows != w->n_q_rows || l->n_kv_heads != w->n_kv_heads ||
      l->n_q_heads != w->n_q_heads || l->head_dim != w->head_dim)
    return sq_fail(e, SQ_EFAIL, "%s: layer %d has shape T=%lld T_q=%lld H_kv=%d H_q=%d D=%d, the header declares "
                   "T=%lld T_q=%lld H_kv=%d H_q=%d D=%d", w->path, l->layer, (long long)l->n_tokens,
                   (long long)l->n_q_rows, l->n_kv_heads, l->n_q_heads, l->head_dim, (long long)w->n_tokens,
                   (long long)w->n_q_rows, w->n_kv_heads, w->n_q_heads, w->head_dim);
  char gname[64];
  snprintf(gname, sizeof gname, "/layers/%d", l->layer);
  hid_t g = H5Gcreate2(w->file, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) return wfail(w, e, "cannot create a layer group");
  int rc = write_ds(w, g, "k", l->k, l->n_tokens, l->n_kv_heads, e);
  if (!rc) rc = write_ds(w, g, "v", l->v, l->n_tokens, l->n_kv_heads, e);
  if (!rc) rc = write_ds(w, g, "q", l->q, l->n_q_rows, l->n_q_heads, e);
  H5Gclose(g);
  if (!rc) w->next++;
  else sq_wrap(e, "layer %d: ", l->layer);
  return rc;
}

static void writer_free(dump_writer *w) {
  free(w->layers);
  free(w);
}

int dump_finish(dump_writer *w, sq_err *e) {
  if (w->next != w->n_dump_layers) {
    int rc = sq_fail(e, SQ_EFAIL, "%s: finished after %d of %d declared layers", w->path, w->next, w->n_dump_layers);
    dump_abort(w);
    return rc;
  }
  if (H5Fclose(w->file) < 0) {
    int rc = wfail(w, e, "cannot close (disk full?)");
    unlink(w->partial);
    writer_free(w);
    return rc;
  }
  if (rename(w->partial, w->path) != 0) {
    int rc = sq_fail(e, SQ_EFAIL, "%s: cannot rename %s to it", w->path, w->partial);
    unlink(w->partial);
    writer_free(w);
    return rc;
  }
  writer_free(w);
  return SQ_OK;
}

void dump_abort(dump_writer *w) {
  if (!w) return;
  if (w->file >= 0) H5Fclose(w->file);
  unlink(w->partial);
  writer_free(w);
}
