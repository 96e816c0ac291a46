/* kcuda_codes: the code phase of an eval batch -- every plan's decoded keys and values over one
 * head's evaluation tokens, with their per-token reconstruction statistics -- as a few large
 * operations instead of one pipeline of small ones per plan side.
 *
 * The arithmetic is kc_side_run's (kcuda_quant.cu; the CPU's, kcpu.h): unit rows in double,
 * y = rot . u and xh = (float)(nh * rot^T yh) by fp64 GEMMs, the same quantiser. What changes is
 * the grouping. A side's rotations are uploaded once per batch (one copy from page-locked memory,
 * not a synchronous copy per plan); the projections of all rotations that use the same unit rows
 * are one strided-batched DGEMM; the plans are ordered by rotation, so that the reconstructions of
 * every plan sharing one (a head's SpectralQuant plans all use its calibrated basis) are one DGEMM
 * of n_plans x n_tok columns -- a 16,384-column DGEMM at D = 128 filled the H200 to ~16 TFLOPS
 * only --; and the last step writes the decoded rows and their statistics in one pass
 * (kc_finish_rec). A different grouping may change a double sum's order, so a projection may
 * round to another float on an exact tie (as cuBLAS against the CPU already does); docs/cuda.md.
 * Sides with QJL (their keys' residual sketch) stay on kc_side_run. */
#include "kcuda.cuh"


/* A rotation of the batch: its host matrix, the unit rows it projects (normalised or not), its
 * side (0 keys, 1 values). */
typedef struct {
  const float *rot;
  int normalize, side;
} codes_rot;

__global__ void k_codes_f2d(const float *src, double *dst, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) dst[i] = (double)src[i];
}

/* The batch's distinct rotations, ordered by (side, normalize) so that each such range is one
 * strided-batched projection; rix[s][j]: plan sides[s].idx[j]'s entry, -1 without a rotation. */
static int codes_rotations(const kc_codes_side sides[2], codes_rot *rots, int *rix[2]) {
  int nr = 0;
  for (int s = 0; s < 2; s++)
    for (int nz = 0; nz < 2; nz++) {
      const int beg = nr;
      for (int j = 0; j < sides[s].m; j++) {
        const plan_side *p = sides[s].ps[sides[s].idx[j]];
        if (!!p->normalize != nz) continue;
        if (!p->rot) {
          rix[s][j] = -1;
          continue;
        }
        int r = beg;
        while (r < nr && rots[r].rot != p->rot) r++;
        if (r == nr) rots[nr].rot = p->rot, rots[nr].normalize = nz, rots[nr++].side = s;
        rix[s][j] = r;
      }
    }
  return nr;
}

/* Upload the rotations (floats, through the page-locked staging buffer) and widen them to double. */
static int codes_upload(kc_codes *c, const codes_rot *rots, int nr, int D, sq_err *e) {
  const size_t per = (size_t)D * D, bytes = (size_t)nr * per * sizeof(float);
  if (nr == 0) return SQ_OK;
  if (c->staged) cudaCheck(cudaEventSynchronize(c->up_done)); /* the last upload has left the staging */
  if (c->rot_h_bytes < bytes) {
    if (c->rot_h) cudaFreeHost(c->rot_h);
    c->rot_h = NULL, c->rot_h_bytes = 0;
    cudaCheck(cudaMallocHost((void **)&c->rot_h, bytes));
    c->rot_h_bytes = bytes;
  }
  if (!c->up_done) cudaCheck(cudaEventCreateWithFlags(&c->up_done, cudaEventDisableTiming));
  for (int r = 0; r < nr; r++) memcpy(c->rot_h + r * per, rots[r].rot, per * sizeof(float));
  tryCheck(kc_buf_need(&c->rot_f, bytes, e));
  tryCheck(kc_buf_need(&c->rot_d, 2 * bytes, e));
  cudaCheck(cudaMemcpyAsync(c->rot_f.p, c->rot_h, bytes, cudaMemcpyHostToDevice));
  cudaCheck(cudaEventRecord(c->up_done));
  c->staged = 1;
  const int64_t n = (int64_t)nr * (int64_t)per;
  k_codes_f2d<<<(unsigned)((n + 255) / 256), 256>>>((const float *)c->rot_f.p, (double *)c->rot_d.p, n);
  launchCheck();
  return SQ_OK;
}

/* The side's handled plans (positions j into idx) by rotation entry, the unrotated ones first. */
static void codes_order(int m, const int *rix, int *ord) {
  for (int j = 0; j < m; j++) {
    int k = j;
    for (; k > 0 && rix[ord[k - 1]] > rix[j]; k--) ord[k] = ord[k - 1];
    ord[k] = j;
  }
}

/* One row chunk (rows r0 .. r0 + nc - 1) of side s: the unit rows, then groups of at most gmax
 * plans (in rotation order): their rotations' projections, quantisation, one reconstruction DGEMM
 * per run of plans sharing a rotation, the decoded rows and statistics. */
static int codes_chunk(kc_codes *c, cublasHandle_t h, const float *cb_dev, const kc_codes_side *sd,
                       const codes_rot *rots, const int *rix, const int *ord, int64_t n_tok, int D, int64_t r0,
                       int64_t nc, int gmax, sq_err *e) {
  const double one = 1.0, zero = 0.0;
  const int64_t rowD = nc * D;
  const float *x = sd->x + r0 * sd->stride;
  double *u = (double *)c->u.p, *y = (double *)c->y.p, *yh = (double *)c->yh.p, *acc = (double *)c->acc.p;
  float *norm = (float *)c->norm.p;
  const double *rot_d = (const double *)c->rot_d.p;
  for (int nz = 0; nz < 2; nz++) /* the unit rows (normalised or not) the side's plans use */
    for (int j = 0; j < sd->m; j++)
      if (!!sd->ps[sd->idx[j]]->normalize == nz) {
        tryCheck(kc_prep(&sd->ss[sd->idx[j]], x, sd->stride, nc, u + nz * rowD, norm + nz * nc, e));
        break;
      }
  for (int g0 = 0; g0 < sd->m; g0 += gmax) {
    const int g1 = g0 + gmax < sd->m ? g0 + gmax : sd->m;
    int ra = -1, rb = -1; /* the group's rotation entries: ra .. rb (ordered, so contiguous) */
    for (int k = g0; k < g1; k++)
      if (rix[ord[k]] >= 0) {
        if (ra < 0) ra = rix[ord[k]];
        rb = rix[ord[k]];
      }
    for (int r = ra; ra >= 0 && r <= rb;) { /* projections: one strided batch per normalize flag */
      int r1 = r;
      while (r1 + 1 <= rb && rots[r1 + 1].normalize == rots[r].normalize) r1++;
      const int64_t cnt = r1 - r + 1;
      cublasCheck(cublasDgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, D, (int)nc, D, &one,
                                            rot_d + (int64_t)r * D * D, D, (int64_t)D * D,
                                            u + rots[r].normalize * rowD, D, 0, &zero, y + (r - ra) * rowD, D,
                                            rowD, (int)cnt));
      r = r1 + 1;
    }
    for (int k = g0; k < g1; k++) {
      const int j = ord[k], i = sd->idx[j], nz = !!sd->ps[i]->normalize;
      const double *proj = rix[j] >= 0 ? y + (rix[j] - ra) * rowD : u + nz * rowD;
      tryCheck(kc_quant(&sd->ss[i], cb_dev, proj, yh + (k - g0) * rowD, NULL, nc, e));
    }
    for (int k = g0; k < g1;) { /* reconstructions: one DGEMM per run of a rotation */
      int k1 = k;
      while (k1 + 1 < g1 && rix[ord[k1 + 1]] == rix[ord[k]]) k1++;
      const int r = rix[ord[k]];
      if (r >= 0)
        cublasCheck(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, D, (int)(nc * (k1 - k + 1)), D, &one,
                                rot_d + (int64_t)r * D * D, D, yh + (k - g0) * rowD, D, &zero,
                                acc + (k - g0) * rowD, D));
      k = k1 + 1;
    }
    for (int k = g0; k < g1; k++) {
      const int j = ord[k], i = sd->idx[j], nz = !!sd->ps[i]->normalize;
      const double *a = (rix[j] >= 0 ? acc : yh) + (k - g0) * rowD;
      tryCheck(kc_finish_rec(D, x, sd->stride, a, norm + nz * nc, nc, sd->dst + (int64_t)i * n_tok * D + r0 * D,
                             sd->rec + (int64_t)i * n_tok * 3 + r0 * 3, e));
    }
  }
  return SQ_OK;
}

static int codes_run(kc_codes *c, cublasHandle_t h, const float *cb_dev, int64_t n_tok, int D,
                     const kc_codes_side sides[2], codes_rot *rots, int *rix[2], int *ord[2], sq_err *e) {
  const int nr = codes_rotations(sides, rots, rix);
  tryCheck(codes_upload(c, rots, nr, D, e));
  const int64_t rows = c->rows > 0 ? c->rows : KC_CODES_ROWS, bytes = c->bytes > 0 ? c->bytes : KC_CODES_BYTES;
  const int64_t chunk = n_tok < rows ? n_tok : rows;
  int64_t gmax = bytes / (3 * chunk * D * (int64_t)sizeof(double));
  gmax = gmax < 1 ? 1 : gmax > 64 ? 64 : gmax;
  const size_t arr = (size_t)gmax * chunk * D * sizeof(double);
  tryCheck(kc_buf_need(&c->y, arr, e));
  tryCheck(kc_buf_need(&c->yh, arr, e));
  tryCheck(kc_buf_need(&c->acc, arr, e));
  tryCheck(kc_buf_need(&c->u, 2 * (size_t)chunk * D * sizeof(double), e));
  tryCheck(kc_buf_need(&c->norm, 2 * (size_t)chunk * sizeof(float), e));
  for (int s = 0; s < 2; s++) {
    codes_order(sides[s].m, rix[s], ord[s]);
    for (int64_t r0 = 0; r0 < n_tok; r0 += chunk) {
      const int64_t nc = n_tok - r0 < chunk ? n_tok - r0 : chunk;
      tryCheck(codes_chunk(c, h, cb_dev, &sides[s], rots, rix[s], ord[s], n_tok, D, r0, nc, (int)gmax, e));
    }
  }
  return SQ_OK;
}

int kc_codes_batch(kc_codes *c, cublasHandle_t h, const float *cb_dev, int64_t n_tok, int D,
                   const kc_codes_side sides[2], sq_err *e) {
  if (n_tok <= 0 || (sides[0].m <= 0 && sides[1].m <= 0)) return SQ_OK;
  const int m = sides[0].m + sides[1].m;
  codes_rot *rots = (codes_rot *)sq_xmalloc((size_t)m * sizeof *rots);
  int *ints = (int *)sq_xmalloc((size_t)(2 * m) * sizeof(int));
  int *rix[2] = {ints, ints + sides[0].m}, *ord[2] = {ints + m, ints + m + sides[0].m};
  int rc = codes_run(c, h, cb_dev, n_tok, D, sides, rots, rix, ord, e);
  free(rots);
  free(ints);
  return rc;
}

void kc_codes_free(kc_codes *c) {
  kc_buf *all[] = {&c->rot_f, &c->rot_d, &c->u, &c->norm, &c->y, &c->yh, &c->acc};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kc_buf_free(all[i]);
  if (c->staged) cudaEventSynchronize(c->up_done);
  if (c->up_done) cudaEventDestroy(c->up_done);
  if (c->rot_h) cudaFreeHost(c->rot_h);
  memset(c, 0, sizeof *c);
}
