/* kcuda_bench: device-level numbers for `sqexp bench`. Every time is CUDA events around device
 * work only (inputs already on the GPU), 1 warm-up then the median of 5 repeats; bandwidth counts
 * the bytes a kernel must read plus write (inputs once, outputs once), against a device-to-device
 * cudaMemcpy of 4 GiB measured in the same run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kcuda.cuh"
#include "kcuda_bench.cuh"
#include "kcuda_fast.cuh"

#define REPS 5

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

/* Deterministic N(0,1) * (0.1 + exp(-d/16)) fill from a hash of the element index. */
__global__ void k_fill(float *x, int64_t n, int D, uint64_t seed) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  double u1 = ((double)(z >> 11) + 0.5) * 0x1.0p-53;
  double u2 = ((double)(z & 0x1fffff) + 0.5) * 0x1.0p-21;
  int d = (int)(i % D);
  x[i] = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2) * (0.1 + exp(-d / 16.0)));
}

__global__ void k_d2f(const double *a, float *b, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) b[i] = (float)a[i];
}

/* Per row: [#coords whose quantisation index differs, sum (y - yref)^2, sum yref^2]. */
__global__ void k_cmp(kc_side s, const float *cb, const double *yref, const float *y, int64_t n,
                      double *out) {
  int64_t row = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (row >= n) return;
  double mism = 0, err = 0, nn = 0;
  for (int i = 0; i < s.D; i++) {
    double a = yref[row * s.D + i];
    float fa = (float)a, fb = y[row * s.D + i];
    err += (fb - a) * (fb - a);
    nn += a * a;
    int b = s.bits[i];
    if (b < 1 || b > CB_MAX_BITS) continue;
    const float *bd = cb + KC_CB_FLOATS / 2 + (s.family * (CB_MAX_BITS + 1) + b) * 256;
    mism += cb_quantize(bd, b, fa / s.scale[i]) != cb_quantize(bd, b, fb / s.scale[i]);
  }
  out[row * 3 + 0] = mism;
  out[row * 3 + 1] = err;
  out[row * 3 + 2] = nn;
}

typedef struct {
  cudaEvent_t a, b;
} evpair;

static float median(float *t, int n) {
  qsort(t, (size_t)n, sizeof *t, cmp_float);
  return t[n / 2];
}

/* Median over REPS runs (after one warm-up) of work() -> status, timed with CUDA events. */
template <class F>
static int time_median(F work, float *ms, sq_err *e) {
  evpair ev;
  cudaCheck(cudaEventCreate(&ev.a));
  cudaCheck(cudaEventCreate(&ev.b));
  float t[REPS];
  int rc = SQ_OK;
  for (int r = -1; r < REPS && !rc; r++) {
    cudaEventRecord(ev.a);
    rc = work();
    cudaEventRecord(ev.b);
    if (!rc && cudaEventSynchronize(ev.b) != cudaSuccess)
      rc = sq_fail(e, SQ_EFAIL, "%s:%d: %s", __FILE__, __LINE__, cudaGetErrorString(cudaGetLastError()));
    if (!rc && r >= 0) cudaEventElapsedTime(&t[r], ev.a, ev.b);
  }
  cudaEventDestroy(ev.a);
  cudaEventDestroy(ev.b);
  if (!rc) *ms = median(t, REPS);
  return rc;
}

static int copy_bandwidth(double *gbs, sq_err *e) {
  size_t bytes = (size_t)4 << 30;
  void *a = NULL, *b = NULL;
  cudaCheck(cudaMalloc(&a, bytes));
  cudaCheck(cudaMalloc(&b, bytes));
  cudaCheck(cudaMemset(a, 1, bytes));
  float ms = 0;
  int rc = time_median([&]() -> int {
    cudaCheck(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    return SQ_OK;
  }, &ms, e);
  if (!rc) *gbs = 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
  cudaFree(a);
  cudaFree(b);
  return rc;
}

typedef struct {
  kern_backend *gpu;
  const float *cbd;
  const kc_bench_opts *o;
  const float *x;    /* [layers][tokens][H][D] */
  uint8_t *codes;    /* [layers][H][tokens][code_bytes max] */
  float *xhat;       /* [layers][H][tokens][D] */
  kc_work *w;        /* shared pipeline buffers */
  kc_work *mw;       /* per head: matrices only */
  kc_mats *mats;     /* per head */
  kc_side *sides;    /* per head */
  int64_t cbytes;    /* code bytes per row (max over heads) */
} batch_ctx;

/* Encode (or decode) the whole batch once. */
static int run_batch(batch_ctx *c, int decode, sq_err *e) {
  const kc_bench_opts *o = c->o;
  int64_t N = o->tokens, stride = (int64_t)o->H * o->D;
  for (int l = 0; l < o->layers; l++)
    for (int h = 0; h < o->H; h++) {
      const kc_side *s = &c->sides[h];
      uint8_t *codes = c->codes + ((int64_t)l * o->H + h) * N * c->cbytes;
      if (!decode) {
        const float *x = c->x + (int64_t)l * N * stride + (int64_t)h * o->D;
        tryCheck(kc_side_run(kc_cublas(c->gpu), s, &c->mats[h], c->cbd, c->w, x, N, stride, NULL, NULL, NULL, e));
        tryCheck(kc_pack(s, c->w, N, codes, e));
      } else {
        float *xh = c->xhat + ((int64_t)l * o->H + h) * N * o->D;
        tryCheck(kc_unpack_decode(kc_cublas(c->gpu), s, &c->mats[h], c->cbd, c->w, codes, N, xh, e));
      }
    }
  return SQ_OK;
}

static int time_batch(batch_ctx *c, int decode, float *ms, sq_err *e) {
  return time_median([&] { return run_batch(c, decode, e); }, ms, e);
}

/* fp64 vs fp32 vs TF32 projection of one head's rows: error, index flips, GEMM time. */
static int precision_rows(batch_ctx *c, FILE *f, const char *name, sq_err *e) {
  const kc_bench_opts *o = c->o;
  const kc_side *s = &c->sides[0];
  if (!s->has_rot) return SQ_OK;
  int64_t N = o->tokens, D = o->D;
  cublasHandle_t h = kc_cublas(c->gpu);
  kc_buf uf = {0}, rf = {0}, yf = {0}, rows = {0}, sums = {0};
  tryCheck(kc_side_run(h, s, &c->mats[0], c->cbd, c->w, c->x, N, (int64_t)o->H * D, NULL, NULL, NULL, e));
  /* re-create u and y = rot.u in double (kc_side_run overwrote u with yh) */
  tryCheck(kc_buf_need(&uf, (size_t)(N * D) * sizeof(float), e));
  tryCheck(kc_buf_need(&rf, (size_t)(D * D) * sizeof(float), e));
  tryCheck(kc_buf_need(&yf, (size_t)(N * D) * sizeof(float), e));
  tryCheck(kc_buf_need(&rows, (size_t)N * 3 * sizeof(double), e));
  tryCheck(kc_buf_need(&sums, 3 * sizeof(double), e));
  double *u = (double *)c->w->u.p, *y = (double *)c->w->y.p;
  tryCheck(kc_prep(s, c->x, (int64_t)o->H * D, N, u, (float *)c->w->norm.p, e));
  const double one = 1.0, zero = 0.0;
  const float onef = 1.0f, zerof = 0.0f;
  k_d2f<<<(unsigned)((N * D + 255) / 256), 256>>>(u, (float *)uf.p, N * D);
  k_d2f<<<(unsigned)((D * D + 255) / 256), 256>>>(c->mats[0].rot, (float *)rf.p, D * D);
  launchCheck();
  const char *label[3] = {"fp64 (DGEMM, chosen)", "fp32 (SGEMM)", "tf32 (tensor cores)"};
  for (int mode = 0; mode < 3; mode++) {
    cublasCheck(cublasSetMathMode(h, mode == 2 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
    float ms = 0;
    tryCheck(time_median([&]() -> int {
      if (mode == 0)
        cublasCheck(cublasDgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)D, (int)N, (int)D, &one, c->mats[0].rot,
                                (int)D, u, (int)D, &zero, y, (int)D));
      else
        cublasCheck(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)D, (int)N, (int)D, &onef,
                                (const float *)rf.p, (int)D, (const float *)uf.p, (int)D, &zerof,
                                (float *)yf.p, (int)D));
      return SQ_OK;
    }, &ms, e));
    double hs[3] = {0, 0, 0};
    if (mode > 0) {
      k_cmp<<<(unsigned)((N + 127) / 128), 128>>>(*s, c->cbd, y, (const float *)yf.p, N, (double *)rows.p);
      launchCheck();
      tryCheck(kc_colsum((const double *)rows.p, 1, N, 3, (double *)sums.p, e));
      cudaCheck(cudaMemcpy(hs, sums.p, sizeof hs, cudaMemcpyDeviceToHost));
    }
    fprintf(f, "proj %-22s %-28s %9.3f ms  rel_rms_err %.2e  index_flips %.2e (%lld of %lld)\n", name,
            label[mode], ms, hs[2] > 0 ? sqrt(hs[1] / hs[2]) : 0.0, hs[0] / (double)(N * D),
            (long long)hs[0], (long long)(N * D));
  }
  cublasCheck(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  kc_buf_free(&uf), kc_buf_free(&rf), kc_buf_free(&yf), kc_buf_free(&rows), kc_buf_free(&sums);
  return SQ_OK;
}

/* Per row of one segment: [#quantised coordinates whose index differs, #differing by more than
 * one, #rows whose other fields (norm, fp16 coordinates) differ] between two code sets. */
__global__ void k_code_diff(kc_side s, const uint8_t *a, const uint8_t *b, int64_t n, double *out) {
  int64_t row = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (row >= n) return;
  const uint8_t *ra = a + row * s.code_bytes, *rb = b + row * s.code_bytes;
  double flips = 0, far = 0, other = 0;
  if (s.norm_off >= 0 && kc_get_bits(ra, s.norm_off, 16) != kc_get_bits(rb, s.norm_off, 16)) other = 1;
  for (int i = 0; i < s.D; i++) {
    int nb = s.bits[i];
    if (nb == 0) continue;
    uint32_t va = kc_get_bits(ra, s.bitpos[i], nb), vb = kc_get_bits(rb, s.bitpos[i], nb);
    if (nb == PLAN_BITS_FP16) {
      if (va != vb) other = 1;
      continue;
    }
    flips += va != vb;
    far += (va > vb ? va - vb : vb - va) > 1;
  }
  out[row * 3 + 0] = flips;
  out[row * 3 + 1] = far;
  out[row * 3 + 2] = other;
}

static int time_fast(const kc_buf *segs_dev, int nseg, int64_t ntiles, int D, const float *cbb, int passes, int probe,
                     float *ms, sq_err *e) {
  return time_median([&] { return kc_fast_run(segs_dev, nseg, ntiles, D, cbb, passes, probe, e); }, ms, e);
}

/* The fused tensor-core encoder over the whole batch (every (layer, head) one segment, one
 * launch): time, bandwidth, and its codes against the exact path's (c->codes, from the last
 * run_batch encode). */
static int bench_fast(batch_ctx *c, int p, FILE *f, sq_err *e) {
  const kc_bench_opts *o = c->o;
  int64_t N = o->tokens, stride = (int64_t)o->H * o->D, nseg = (int64_t)o->layers * o->H;
  if (c->sides[0].m > 0) {
    fprintf(f, "encode-fast %-17s n/a (plans with QJL take the exact path)\n", o->plan_names[p]);
    return SQ_OK;
  }
  kc_fast_seg *segs = (kc_fast_seg *)aligned_alloc(128, (size_t)nseg * sizeof *segs); /* sizeof is a multiple of 128 */
  if (!segs) return sq_fail(e, SQ_EFAIL, "bench: out of memory for %lld segments", (long long)nseg);
  memset(segs, 0, (size_t)nseg * sizeof *segs);
  kc_buf *mats = (kc_buf *)sq_xcalloc((size_t)o->H * 2, sizeof(kc_buf));
  kc_buf fcodes = {0}, segs_dev = {0}, rows = {0}, sums = {0};
  int rc = kc_buf_need(&fcodes, (size_t)(nseg * N * c->cbytes), e);
  if (!rc) rc = kc_buf_need(&rows, (size_t)N * 3 * sizeof(double), e);
  if (!rc) rc = kc_buf_need(&sums, 3 * sizeof(double), e);
  for (int passes = 1; passes <= 3 && !rc; passes += 2) {
    for (int h = 0; h < o->H && !rc; h++) {
      kc_fast_seg tmpl;
      memset(&tmpl, 0, sizeof tmpl);
      rc = kc_fast_prepare(o->sides[p * o->H + h], passes, &mats[h * 2 + (passes == 3)], &tmpl, e);
      for (int l = 0; l < o->layers && !rc; l++) {
        kc_fast_seg *g = &segs[(int64_t)l * o->H + h];
        *g = tmpl;
        g->x = c->x + (int64_t)l * N * stride + (int64_t)h * o->D;
        g->stride = stride;
        g->n = N;
        g->codes = (uint8_t *)fcodes.p + ((int64_t)l * o->H + h) * N * c->cbytes;
      }
    }
    if (rc) break;
    const float *cbb = c->cbd + KC_CB_FLOATS / 2;
    int64_t ntiles = 0;
    rc = kc_fast_setup(segs, (int)nseg, &segs_dev, &ntiles, e);
    float ms = 0;
    if (!rc) rc = time_fast(&segs_dev, (int)nseg, ntiles, o->D, cbb, passes, 0, &ms, e);
    if (!rc && cudaGetLastError() != cudaSuccess) rc = sq_fail(e, SQ_EFAIL, "bench: fast encode failed on the device");
    if (rc) break;
    double tot[3] = {0, 0, 0};
    for (int64_t sgi = 0; sgi < nseg && !rc; sgi++) {
      const kc_side *s = &c->sides[sgi % o->H];
      int64_t off = sgi * N * c->cbytes;
      k_code_diff<<<(unsigned)((N + 127) / 128), 128>>>(*s, c->codes + off, (const uint8_t *)fcodes.p + off, N,
                                                       (double *)rows.p);
      double hs[3];
      rc = kc_colsum((const double *)rows.p, 1, N, 3, (double *)sums.p, e);
      if (!rc && cudaMemcpy(hs, sums.p, sizeof hs, cudaMemcpyDeviceToHost) != cudaSuccess)
        rc = sq_fail(e, SQ_EFAIL, "bench: code comparison failed on the device");
      for (int k = 0; k < 3 && !rc; k++) tot[k] += hs[k];
    }
    if (rc) break;
    int64_t nrow = nseg * N, quant = 0;
    for (int i = 0; i < o->D; i++) quant += c->sides[0].bits[i] >= 1 && c->sides[0].bits[i] <= CB_MAX_BITS;
    double in_b = (double)nrow * o->D * 4, code_b = (double)nrow * c->sides[0].code_bytes;
    double gbs = (in_b + code_b) / (ms * 1e-3) / 1e9;
    fprintf(f, "encode-fast %-17s passes %d %6.2f GiB in %8.3f ms %7.1f GB/s %5.1f%% of copy  (1 launch, %lld segments); "
            "vs exact: index flips %.2e (%.0f of %lld), off by >1: %.0f, rows with other fields differing %.0f\n",
            o->plan_names[p], passes, in_b / (1 << 30), ms, gbs, 100 * gbs / o->copy_gbs, (long long)nseg,
            quant ? tot[0] / ((double)nrow * quant) : 0.0, tot[0], (long long)(nrow * quant), tot[1], tot[2]);
    if (passes == 1 && o->D == 128 && p == 0) { /* where the time goes: the same launch with phases left out */
      static const int probes[6] = {1, 9, 3, 11, 14, 15};
      static const char *what[6] = {"no projection", "no projection, no packing", "no projection, no quantisation",
                                    "no projection, quantisation, packing", "no quantisation, packing, write",
                                    "load + norm only"};
      for (int k = 0; k < 6 && !rc; k++) {
        float pm = 0;
        rc = time_fast(&segs_dev, (int)nseg, ntiles, o->D, cbb, 1, probes[k], &pm, e);
        if (!rc) fprintf(f, "encode-fast probe (%s) %8.3f ms  %7.1f GB/s of input\n", what[k], pm, in_b / (pm * 1e-3) / 1e9);
      }
    }
    fflush(f);
  }
  for (int i = 0; i < o->H * 2; i++) kc_buf_free(&mats[i]);
  free(mats);
  free(segs);
  kc_buf_free(&fcodes), kc_buf_free(&segs_dev), kc_buf_free(&rows), kc_buf_free(&sums);
  return rc;
}

static int bench_plan(batch_ctx *c, int p, FILE *f, sq_err *e) {
  const kc_bench_opts *o = c->o;
  int64_t cb_max = 0;
  for (int h = 0; h < o->H; h++) {
    const plan_side *ps = o->sides[p * o->H + h];
    tryCheck(kc_side_of(ps, &c->sides[h], e));
    tryCheck(kc_upload_mats(&c->mw[h], ps, &c->mats[h], e));
    if (c->sides[h].code_bytes > cb_max) cb_max = c->sides[h].code_bytes;
  }
  if (cb_max > c->cbytes) return sq_fail(e, SQ_EFAIL, "bench: code buffer too small");
  float enc_ms, dec_ms = 0;
  tryCheck(time_batch(c, 0, &enc_ms, e));
  if (!o->encode_only) tryCheck(time_batch(c, 1, &dec_ms, e));
  int64_t rows = (int64_t)o->layers * o->tokens * o->H;
  double in_b = (double)rows * o->D * 4, code_b = (double)rows * c->sides[0].code_bytes;
  double enc_gbs = (in_b + code_b) / (enc_ms * 1e-3) / 1e9, dec_gbs = (in_b + code_b) / (dec_ms * 1e-3) / 1e9;
  fprintf(f, "encode %-22s %6.2f GiB in  %9.2f ms  %7.1f GB/s  %5.1f%% of copy  (%d B/token)\n",
          o->plan_names[p], in_b / (1 << 30), enc_ms, enc_gbs, 100 * enc_gbs / o->copy_gbs,
          c->sides[0].code_bytes);
  if (!o->encode_only)
    fprintf(f, "decode %-22s %6.2f GiB out %9.2f ms  %7.1f GB/s  %5.1f%% of copy\n", o->plan_names[p],
            in_b / (1 << 30), dec_ms, dec_gbs, 100 * dec_gbs / o->copy_gbs);
  fflush(f);
  tryCheck(bench_fast(c, p, f, e));
  return o->encode_only ? SQ_OK : precision_rows(c, f, o->plan_names[p], e);
}

extern "C" int kc_bench_device(kern_backend *gpu, const cb_table *cb, kc_bench_opts *o, FILE *f,
                               sq_err *e) {
  tryCheck(copy_bandwidth(&o->copy_gbs, e));
  fprintf(f, "copy   device-to-device cudaMemcpy 4 GiB          %7.1f GB/s (read + write)\n", o->copy_gbs);
  fflush(f);
  int64_t n = (int64_t)o->layers * o->tokens * o->H * o->D;
  batch_ctx c;
  memset(&c, 0, sizeof c);
  c.gpu = gpu;
  c.o = o;
  kc_buf x = {0}, codes = {0}, xhat = {0}, cbd = {0};
  tryCheck(kc_buf_need(&x, (size_t)n * sizeof(float), e));
  tryCheck(kc_buf_need(&xhat, (size_t)n * sizeof(float), e));
  c.cbytes = 0;
  for (int p = 0; p < o->n_plans; p++)
    for (int h = 0; h < o->H; h++)
      if (o->sides[p * o->H + h]->code_bytes > c.cbytes) c.cbytes = o->sides[p * o->H + h]->code_bytes;
  tryCheck(kc_buf_need(&codes, (size_t)((int64_t)o->layers * o->tokens * o->H * c.cbytes), e));
  tryCheck(kc_buf_need(&cbd, KC_CB_FLOATS * sizeof(float), e));
  cudaCheck(cudaMemcpy(cbd.p, cb->centroid, sizeof cb->centroid, cudaMemcpyHostToDevice));
  cudaCheck(cudaMemcpy((float *)cbd.p + KC_CB_FLOATS / 2, cb->boundary, sizeof cb->boundary, cudaMemcpyHostToDevice));
  k_fill<<<(unsigned)((n + 255) / 256), 256>>>((float *)x.p, n, o->D, 12345);
  launchCheck();
  c.x = (const float *)x.p;
  c.codes = (uint8_t *)codes.p;
  c.xhat = (float *)xhat.p;
  c.cbd = (const float *)cbd.p;
  kc_work w;
  memset(&w, 0, sizeof w);
  c.w = &w;
  c.mw = (kc_work *)sq_xcalloc((size_t)o->H, sizeof(kc_work));
  c.mats = (kc_mats *)sq_xcalloc((size_t)o->H, sizeof(kc_mats));
  c.sides = (kc_side *)sq_xcalloc((size_t)o->H, sizeof(kc_side));
  int rc = SQ_OK;
  for (int p = 0; p < o->n_plans && !rc; p++) rc = bench_plan(&c, p, f, e);
  for (int h = 0; h < o->H; h++) kc_work_free(&c.mw[h]);
  free(c.mw), free(c.mats), free(c.sides);
  kc_work_free(&w);
  kc_buf_free(&x), kc_buf_free(&codes), kc_buf_free(&xhat), kc_buf_free(&cbd);
  return rc;
}
