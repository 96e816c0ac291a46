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
 * Sides with QJL (their keys' residual sketch) stay on kc_side_run. The order of operations is
 * kernels/codes_sched.c's (checked on the CPU by tests/test_codes_sched.c); this file maps each to
 * one cuBLAS call or kernel. */
#include "kcuda.cuh"

/* Upload the schedule's rotations (floats, through the page-locked staging buffer) and widen
 * them to double. */
static int codes_upload(kc_codes *c, const csched *cs, int D, sq_err *e) {
  const size_t per = (size_t)D * D, bytes = (size_t)cs->n_rot * per * sizeof(float);
  if (cs->n_rot == 0) return SQ_OK;
  if (c->up_done) cudaCheck(cudaEventSynchronize(c->up_done)); /* the last upload has left the staging */
  if (c->rot_h_bytes < bytes) {
    if (c->rot_h) cudaFreeHost(c->rot_h);
    c->rot_h = NULL, c->rot_h_bytes = 0;
    cudaCheck(cudaMallocHost((void **)&c->rot_h, bytes));
    c->rot_h_bytes = bytes;
  }
  if (!c->up_done) cudaCheck(cudaEventCreateWithFlags(&c->up_done, cudaEventDisableTiming));
  for (int r = 0; r < cs->n_rot; r++) memcpy(c->rot_h + r * per, cs->rot[r], per * sizeof(float));
  tryCheck(kc_buf_need(&c->rot_f, bytes, e));
  tryCheck(kc_buf_need(&c->rot_d, 2 * bytes, e));
  cudaCheck(cudaMemcpyAsync(c->rot_f.p, c->rot_h, bytes, cudaMemcpyHostToDevice));
  cudaCheck(cudaEventRecord(c->up_done));
  return kc_f2d((const float *)c->rot_f.p, (double *)c->rot_d.p, (int64_t)cs->n_rot * (int64_t)per, e);
}

/* One operation of the schedule (codes_sched.h) on the device buffers: u and norm [2][chunk],
 * y / yh / acc [gmax][chunk] (slot k of a chunk of `rows` rows at k rows D). */
static int codes_op(kc_codes *c, cublasHandle_t h, const float *cb_dev, const kc_codes_side sides[2],
                    const csched_op *o, int64_t n_tok, int D, int64_t chunk, sq_err *e) {
  const double one = 1.0, zero = 0.0;
  const kc_codes_side *sd = &sides[o->side];
  const int64_t rowD = o->rows * D;
  const float *x = sd->x + o->row0 * sd->stride;
  double *u = (double *)c->u.p + (int64_t)o->nz * chunk * D, *y = (double *)c->y.p, *yh = (double *)c->yh.p,
         *acc = (double *)c->acc.p;
  const float *norm = (const float *)c->norm.p + (int64_t)o->nz * chunk;
  const double *rot_d = (const double *)c->rot_d.p;
  switch (o->kind) {
  case CSCHED_PREP: { /* the unit rows: kc_prep reads D and the normalize flag of a side */
    kc_side s;
    memset(&s, 0, sizeof s);
    s.D = D, s.normalize = o->nz;
    return kc_prep(&s, x, sd->stride, o->rows, u, (float *)norm, e);
  }
  case CSCHED_PROJ: /* y slot (r - rot0 + y) = rot_r . u, for the batch's rotations r */
    cublasCheck(cublasDgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, D, (int)o->rows, D, &one,
                                          rot_d + (int64_t)o->rot0 * D * D, D, (int64_t)D * D, u, D, 0, &zero,
                                          y + (int64_t)o->y * rowD, D, rowD, o->n_rot));
    return SQ_OK;
  case CSCHED_QUANT:
    return kc_quant(&sd->ss[o->plan], cb_dev, o->y >= 0 ? y + (int64_t)o->y * rowD : u, yh + (int64_t)o->slot * rowD,
                    NULL, o->rows, e);
  case CSCHED_RECON: /* acc slots = rot^T yh slots, as one matrix of n_slot x rows columns */
    cublasCheck(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, D, (int)(o->rows * o->n_slot), D, &one,
                            rot_d + (int64_t)o->rot0 * D * D, D, yh + (int64_t)o->slot * rowD, D, &zero,
                            acc + (int64_t)o->slot * rowD, D));
    return SQ_OK;
  case CSCHED_FINISH:
    return kc_finish_rec(D, x, sd->stride, (o->from_acc ? acc : yh) + (int64_t)o->slot * rowD, norm, o->rows,
                         sd->dst + (int64_t)o->plan * n_tok * D + o->row0 * D,
                         sd->rec + (int64_t)o->plan * n_tok * 3 + o->row0 * 3, e);
  }
  return sq_fail(e, SQ_EFAIL, "%s:%d: codes: operation %d", __FILE__, __LINE__, (int)o->kind);
}

static int codes_run(kc_codes *c, cublasHandle_t h, const float *cb_dev, int64_t n_tok, int D,
                     const kc_codes_side sides[2], const csched *cs, sq_err *e) {
  tryCheck(codes_upload(c, cs, D, e));
  const size_t arr = (size_t)cs->gmax * cs->chunk * D * sizeof(double);
  tryCheck(kc_buf_need(&c->y, arr, e));
  tryCheck(kc_buf_need(&c->yh, arr, e));
  tryCheck(kc_buf_need(&c->acc, arr, e));
  tryCheck(kc_buf_need(&c->u, 2 * (size_t)cs->chunk * D * sizeof(double), e));
  tryCheck(kc_buf_need(&c->norm, 2 * (size_t)cs->chunk * sizeof(float), e));
  for (int i = 0; i < cs->n_op; i++) tryCheck(codes_op(c, h, cb_dev, sides, &cs->op[i], n_tok, D, cs->chunk, e));
  return SQ_OK;
}

int kc_codes_batch(kc_codes *c, cublasHandle_t h, const float *cb_dev, int64_t n_tok, int D,
                   const kc_codes_side sides[2], sq_err *e) {
  if (n_tok <= 0 || (sides[0].in.m <= 0 && sides[1].in.m <= 0)) return SQ_OK;
  const csched_side in[2] = {sides[0].in, sides[1].in};
  csched cs;
  csched_build(&cs, in, n_tok, D, c->rows > 0 ? c->rows : KC_CODES_ROWS, c->bytes > 0 ? c->bytes : KC_CODES_BYTES);
  const int rc = codes_run(c, h, cb_dev, n_tok, D, sides, &cs, e);
  csched_free(&cs);
  return rc;
}

void kc_codes_free(kc_codes *c) {
  kc_buf *all[] = {&c->rot_f, &c->rot_d, &c->u, &c->norm, &c->y, &c->yh, &c->acc};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kc_buf_free(all[i]);
  if (c->up_done) cudaEventSynchronize(c->up_done), cudaEventDestroy(c->up_done);
  if (c->rot_h) cudaFreeHost(c->rot_h);
  memset(c, 0, sizeof *c);
}
