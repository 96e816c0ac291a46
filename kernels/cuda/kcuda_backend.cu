/* kcuda_backend: the kern.h contract on an NVIDIA GPU. A layer's evaluation data live on the
 * device between load_layer and the next; eval encodes/decodes every plan of a batch (fp64 GEMMs,
 * kcuda_quant.cu), runs the fused attention rows (kcuda_attn.cu) over all plans of the batch in one
 * launch per protocol, and reduces the per-row metrics on the device in a fixed order. Only a few
 * sums per plan travel back to the host. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kcuda.cuh"
#include "kcuda_attn.cuh"
#include "kcuda_fast.cuh"
#include "kcuda_logit.cuh"

/* Rows of one side pipeline at a time (bounds the fp64 work buffers: 64k x D x 8 bytes each). */
#define KC_ROW_CHUNK ((int64_t)1 << 16)
#define KC_PROJ_SLOTS 8 /* distinct (rotation, normalize, side) per eval batch with a shared projection */
/* Device bytes a plan batch of eval may take for its decoded keys/values and per-row outputs. */
#define KC_EVAL_BYTES ((int64_t)4 << 30)
/* Rows of calibration data converted to double at once in moments(). */
#define KC_MOM_BYTES ((int64_t)512 << 20)

/* eval's phases on the GPU timeline (SQEXP_EVAL_PHASES=1): CUDA events between the phases of
 * every eval batch, summed, printed to stderr when the backend is destroyed. Host gaps between
 * launches count towards the phase they fall in; that is what a speed-up has to remove. */
enum { KC_PH_CODE, KC_PH_ATTN, KC_PH_PROBS, KC_PH_RANDQ, KC_PH_N };
typedef struct {
  int on;
  cudaEvent_t ev[KC_PH_N + 1];
  double ms[KC_PH_N];
  int64_t batches, plans;
} kc_phases;

struct kc_state {
  int device;
  kc_phases ph;
  int gqa;            /* EVAL_ATTN kernel, KC_ATTN_* from SQEXP_CUDA_ATTN (kc_attn_kind) */
  cublasHandle_t blas;
  cublasHandle_t blas_m; /* moments' own: they may run on another thread during eval (kern.h) */
  int loaded, G, attn_on, probs_on, randq_on;
  kern_layer L;
  kc_buf seq_off, q, k, v, randq, o_ref, topk_ref, randq_ref;
  kc_buf keff, vhat, rows, sums, krec, vrec;
  kc_buf range_flag, wg_scratch; /* k_attn_wg's range check (one int) and split operands */
  kc_logit lg;                   /* k_attn_wg's logit-sum terms of the loaded layer (kcuda_logit.cuh) */
  /* preload (kern.h): the next layer's k, v, q, copied by another thread on pre_stream (which
   * does not wait for the eval's work on the default stream); pre_L says what they hold
   * (preload_id 0: nothing). pre_lock orders the copy and load_layer's taking them. */
  kc_buf pre_k, pre_v, pre_q;
  kern_layer pre_L;
  cudaStream_t pre_stream;
  pthread_mutex_t pre_lock;
  kc_proj proj[KC_PROJ_SLOTS];   /* this eval batch's shared projections (code_side) */
  int codes_grouped;             /* the code phase by kcuda_codes.cu (the default; SQEXP_CUDA_CODES=plan: per plan) */
  int probs_cache;               /* k_probs_seq keeps the scores (the default; SQEXP_CUDA_PROBS=recompute: not) */
  int64_t max_seq;               /* the loaded layer's longest evaluation sequence */
  kc_codes codes;                /* its buffers */
  kc_buf cb;
  cb_table cb_host;
  int cb_valid;
  kc_work wk;
  kc_buf mx, md, mC;
  kc_buf fast_mats, fast_segs; /* kern_cuda_encode_fast: fp16 rotation, segment table */
  kc_solver *solver;  /* eigh's cuSOLVER handle (kcuda_eigh.cu), NULL until first used */
};

static kc_state *state_of(kern_backend *b) { return (kc_state *)b->impl; }

/* Mark the start of phase i (KC_PH_N: the end of the last one). */
static void ph_mark(kc_state *st, int i) {
  if (st->ph.on) cudaEventRecord(st->ph.ev[i]);
}
/* After the batch's final synchronisation: add its phase times. */
static void ph_add(kc_state *st, int n_plans) {
  if (!st->ph.on) return;
  for (int i = 0; i < KC_PH_N; i++) {
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, st->ph.ev[i], st->ph.ev[i + 1]) == cudaSuccess) st->ph.ms[i] += ms;
  }
  st->ph.batches++, st->ph.plans += n_plans;
  cudaGetLastError();
}
static void ph_report(const kc_state *st) {
  const kc_phases *p = &st->ph;
  if (!p->on || !p->plans) return;
  double tot = 0.0;
  for (int i = 0; i < KC_PH_N; i++) tot += p->ms[i];
  fprintf(stderr, "cuda eval phases (GPU timeline, %lld batches, %lld (plan, head)): code K,V %.1f ms, attn %.1f ms, "
          "probs %.1f ms, randq %.1f ms; total %.1f ms = %.3f ms per (plan, head)\n", (long long)p->batches,
          (long long)p->plans, p->ms[KC_PH_CODE], p->ms[KC_PH_ATTN], p->ms[KC_PH_PROBS], p->ms[KC_PH_RANDQ], tot,
          tot / (double)p->plans);
}
cublasHandle_t kc_cublas(kern_backend *b) { return state_of(b)->blas; }
kc_solver **kc_solver_slot(kern_backend *b) { return &state_of(b)->solver; }

extern "C" int kern_cuda_available(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); /* clear the sticky "no device" error */
    return 0;
  }
  return n > 0;
}

static int upload_cb(kc_state *st, const cb_table *cb, sq_err *e) {
  if (st->cb_valid && !memcmp(st->cb_host.centroid, cb->centroid, sizeof cb->centroid) &&
      !memcmp(st->cb_host.boundary, cb->boundary, sizeof cb->boundary))
    return SQ_OK;
  tryCheck(kc_buf_need(&st->cb, KC_CB_FLOATS * sizeof(float), e));
  float *d = (float *)st->cb.p;
  cudaCheck(cudaMemcpy(d, cb->centroid, sizeof cb->centroid, cudaMemcpyHostToDevice));
  cudaCheck(cudaMemcpy(d + KC_CB_FLOATS / 2, cb->boundary, sizeof cb->boundary, cudaMemcpyHostToDevice));
  memcpy(st->cb_host.centroid, cb->centroid, sizeof cb->centroid);
  memcpy(st->cb_host.boundary, cb->boundary, sizeof cb->boundary);
  st->cb_valid = 1;
  return SQ_OK;
}

/* ---- moments ---- */

/* Rows of [n][H][D] floats -> doubles, each (row, head) divided by (|x| + 1e-8) when normalize. */
__global__ void k_mom_prep(const float *x, int64_t nrows, int D, int normalize, double *xd) {
  int64_t row = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; /* (token, head) */
  int lane = threadIdx.x & 31;
  if (row >= nrows) return;
  const float *xr = x + row * D;
  double inv = 1.0;
  if (normalize) {
    double ss = 0.0;
    for (int j = lane; j < D; j += 32) ss += (double)xr[j] * xr[j];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    inv = 1.0 / (sqrt(ss) + 1e-8);
  }
  for (int j = lane; j < D; j += 32) xd[row * D + j] = normalize ? (double)xr[j] * inv : (double)xr[j];
}

static int cuda_moments(kern_backend *b, const float *x, int64_t n, int H, int D, int normalize,
                        double *C, sq_err *e) {
  kc_state *st = state_of(b);
  if (n < 1 || H < 1 || D < 1)
    return sq_fail(e, SQ_EINPUT, "moments: need rows, heads and dims (got n=%lld H=%d D=%d)",
                   (long long)n, H, D);
  int64_t row_bytes = (int64_t)H * D * (sizeof(double) + sizeof(float));
  int64_t chunk = KC_MOM_BYTES / row_bytes;
  if (chunk < 1) chunk = 1;
  if (chunk > n) chunk = n;
  tryCheck(kc_buf_need(&st->mx, (size_t)(chunk * H * D) * sizeof(float), e));
  tryCheck(kc_buf_need(&st->md, (size_t)(chunk * H * D) * sizeof(double), e));
  tryCheck(kc_buf_need(&st->mC, (size_t)H * D * D * sizeof(double), e));
  double *Cd = (double *)st->mC.p, *xd = (double *)st->md.p;
  const double one = 1.0, zero = 0.0;
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    int64_t nc = n - r0 < chunk ? n - r0 : chunk;
    cudaCheck(cudaMemcpy(st->mx.p, x + r0 * H * D, (size_t)(nc * H * D) * sizeof(float),
                         cudaMemcpyHostToDevice));
    int64_t nrows = nc * H;
    k_mom_prep<<<(unsigned)((nrows * 32 + 255) / 256), 256>>>((const float *)st->mx.p, nrows, D,
                                                              normalize, xd);
    launchCheck();
    /* column-major view: head h is D x nc with leading dimension H*D; C_h = X_h X_h^T (lower) */
    for (int h = 0; h < H; h++)
      cublasCheck(cublasDsyrk(st->blas_m, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, D, (int)nc, &one,
                              xd + (int64_t)h * D, H * D, r0 == 0 ? &zero : &one,
                              Cd + (int64_t)h * D * D, D));
  }
  cudaCheck(cudaMemcpy(C, Cd, (size_t)H * D * D * sizeof(double), cudaMemcpyDeviceToHost));
  /* the lower triangle (column-major) is the row-major upper one: scale and mirror as the CPU */
  double inv_n = 1.0 / (double)n;
  for (int h = 0; h < H; h++) {
    double *Ch = C + (int64_t)h * D * D;
    for (int i = 0; i < D; i++)
      for (int j = i; j < D; j++) {
        double v = Ch[(int64_t)i * D + j] * inv_n;
        Ch[(int64_t)i * D + j] = v;
        Ch[(int64_t)j * D + i] = v;
      }
  }
  return SQ_OK;
}

/* ---- encode / decode of host rows ---- */

/* Host rows through the device in chunks of KC_ROW_CHUNK: up as compact rows (stride D), coded by
 * code_chunk(device rows, nc, device codes) -> status, the codes down. Shared by both encoders. */
template <class F>
static int encode_host_rows(kc_state *st, const float *x, int64_t n, int64_t stride, int D, int code_bytes,
                            uint8_t *codes, F code_chunk, sq_err *e) {
  for (int64_t r0 = 0; r0 < n; r0 += KC_ROW_CHUNK) {
    int64_t nc = n - r0 < KC_ROW_CHUNK ? n - r0 : KC_ROW_CHUNK;
    tryCheck(kc_buf_need(&st->wk.xin, (size_t)(nc * D) * sizeof(float), e));
    tryCheck(kc_buf_need(&st->wk.codes, (size_t)(nc * code_bytes), e));
    cudaCheck(cudaMemcpy2D(st->wk.xin.p, D * sizeof(float), x + r0 * stride, stride * sizeof(float),
                           D * sizeof(float), nc, cudaMemcpyHostToDevice));
    tryCheck(code_chunk((const float *)st->wk.xin.p, nc, (uint8_t *)st->wk.codes.p));
    cudaCheck(cudaMemcpy(codes + r0 * code_bytes, st->wk.codes.p, (size_t)(nc * code_bytes),
                         cudaMemcpyDeviceToHost));
  }
  return SQ_OK;
}

static int cuda_encode(kern_backend *b, const plan_side *p, const cb_table *cb, const float *x,
                       int64_t n, int64_t stride, uint8_t *codes, sq_err *e) {
  kc_state *st = state_of(b);
  kc_side s;
  kc_mats mt;
  if (kc_side_of(p, &s, e)) return sq_wrap(e, "encode: ");
  tryCheck(upload_cb(st, cb, e));
  tryCheck(kc_upload_mats(&st->wk, p, &mt, e));
  return encode_host_rows(st, x, n, stride, s.D, s.code_bytes, codes,
                          [&](const float *xd, int64_t nc, uint8_t *cd) {
                            tryCheck(kc_side_run(st->blas, &s, &mt, (const float *)st->cb.p, &st->wk, xd, nc,
                                                 s.D, NULL, NULL, NULL, e));
                            return kc_pack(&s, &st->wk, nc, cd, e);
                          }, e);
}

/* The fused tensor-core encoder on host rows (kern.h): one launch per chunk. */
extern "C" int kern_cuda_encode_fast(kern_backend *b, const plan_side *p, const cb_table *cb, const float *x,
                                     int64_t n, int64_t stride, int passes, uint8_t *codes, sq_err *e) {
  if (!b || strcmp(b->name, "cuda") != 0)
    return sq_fail(e, SQ_EINPUT, "fast encode: needs the cuda backend (got %s)", b ? b->name : "none");
  kc_state *st = state_of(b);
  kc_fast_seg seg;
  memset(&seg, 0, sizeof seg);
  if (kc_fast_prepare(p, passes, &st->fast_mats, &seg, e)) return sq_wrap(e, "encode_fast: ");
  if (n < 0 || (n > 0 && stride < p->D))
    return sq_fail(e, SQ_EINPUT, "fast encode: %lld rows with stride %lld (< head_dim %d)", (long long)n,
                   (long long)stride, p->D);
  tryCheck(upload_cb(st, cb, e));
  return encode_host_rows(st, x, n, stride, p->D, seg.side.code_bytes, codes,
                          [&](const float *xd, int64_t nc, uint8_t *cd) {
                            seg.x = xd;
                            seg.stride = p->D;
                            seg.n = nc;
                            seg.codes = cd;
                            return kc_fast_encode(&seg, 1, (const float *)st->cb.p + KC_CB_FLOATS / 2, passes,
                                                  &st->fast_segs, e);
                          }, e);
}

static int cuda_decode(kern_backend *b, const plan_side *p, const cb_table *cb, const uint8_t *codes,
                       int64_t n, float *xhat, sq_err *e) {
  kc_state *st = state_of(b);
  kc_side s;
  kc_mats mt;
  if (kc_side_of(p, &s, e)) return sq_wrap(e, "decode: ");
  tryCheck(upload_cb(st, cb, e));
  tryCheck(kc_upload_mats(&st->wk, p, &mt, e));
  for (int64_t r0 = 0; r0 < n; r0 += KC_ROW_CHUNK) {
    int64_t nc = n - r0 < KC_ROW_CHUNK ? n - r0 : KC_ROW_CHUNK;
    tryCheck(kc_buf_need(&st->wk.codes, (size_t)(nc * s.code_bytes), e));
    tryCheck(kc_buf_need(&st->wk.xin, (size_t)(nc * s.D) * sizeof(float), e));
    cudaCheck(cudaMemcpy(st->wk.codes.p, codes + r0 * s.code_bytes, (size_t)(nc * s.code_bytes),
                         cudaMemcpyHostToDevice));
    float *xo = (float *)st->wk.xin.p;
    tryCheck(kc_unpack_decode(st->blas, &s, &mt, (const float *)st->cb.p, &st->wk,
                              (const uint8_t *)st->wk.codes.p, nc, xo, e));
    cudaCheck(cudaMemcpy(xhat + r0 * s.D, xo, (size_t)(nc * s.D) * sizeof(float), cudaMemcpyDeviceToHost));
  }
  return SQ_OK;
}

/* ---- load_layer: upload and compute the reference ---- */

static int upload(kc_buf *b, const void *src, size_t bytes, sq_err *e) {
  tryCheck(kc_buf_need(b, bytes, e));
  cudaCheck(cudaMemcpy(b->p, src, bytes, cudaMemcpyHostToDevice));
  return SQ_OK;
}

static void buf_swap(kc_buf *a, kc_buf *b) {
  kc_buf t = *a;
  *a = *b, *b = t;
}

/* The copies of a preload, waited for (pre_lock held). */
static int pre_copy(kc_state *st, const kern_layer *L, sq_err *e) {
  const size_t kv = (size_t)(L->n_tok * L->n_kv_heads * L->head_dim) * sizeof(float);
  const size_t qb = L->q ? (size_t)(L->n_tok * L->n_q_heads * L->head_dim) * sizeof(float) : 0;
  if (!st->pre_stream) cudaCheck(cudaStreamCreateWithFlags(&st->pre_stream, cudaStreamNonBlocking));
  tryCheck(kc_buf_need(&st->pre_k, kv, e));
  tryCheck(kc_buf_need(&st->pre_v, kv, e));
  if (qb) tryCheck(kc_buf_need(&st->pre_q, qb, e));
  cudaCheck(cudaMemcpyAsync(st->pre_k.p, L->k, kv, cudaMemcpyHostToDevice, st->pre_stream));
  cudaCheck(cudaMemcpyAsync(st->pre_v.p, L->v, kv, cudaMemcpyHostToDevice, st->pre_stream));
  if (qb) cudaCheck(cudaMemcpyAsync(st->pre_q.p, L->q, qb, cudaMemcpyHostToDevice, st->pre_stream));
  cudaCheck(cudaStreamSynchronize(st->pre_stream));
  return SQ_OK;
}

static int cuda_preload(kern_backend *b, const kern_layer *L, sq_err *e) {
  kc_state *st = state_of(b);
  if (!L->preload_id || !L->k || !L->v) return SQ_OK;
  pthread_mutex_lock(&st->pre_lock);
  st->pre_L.preload_id = 0;
  int rc = pre_copy(st, L, e);
  if (!rc) st->pre_L = *L;
  pthread_mutex_unlock(&st->pre_lock);
  return rc;
}

/* load_layer's k, v, q from the preload when it holds exactly L's (then it is used up). */
static int take_preload(kc_state *st, const kern_layer *L) {
  pthread_mutex_lock(&st->pre_lock);
  const kern_layer *P = &st->pre_L;
  const int ok = L->preload_id && P->preload_id == L->preload_id && P->k == L->k && P->v == L->v &&
                 P->q == L->q && P->n_tok == L->n_tok && P->n_kv_heads == L->n_kv_heads &&
                 P->n_q_heads == L->n_q_heads && P->head_dim == L->head_dim;
  if (ok) {
    buf_swap(&st->k, &st->pre_k);
    buf_swap(&st->v, &st->pre_v);
    if (L->q) buf_swap(&st->q, &st->pre_q);
    st->pre_L.preload_id = 0;
  }
  pthread_mutex_unlock(&st->pre_lock);
  return ok;
}

/* k_attn_wg (and k_ref_wg) serve the loaded layer: chosen (SQEXP_CUDA_ATTN) and of their shape.
 * They need k_ref_wg's split values, and the logit-sum terms (kcuda_logit). */
static int wg_on(const kc_state *st) { return st->gqa == KC_ATTN_WG && kc_wg_shape(st->G, st->L.head_dim); }
/* The scratch of k_attn_wg's launch of n plans on the loaded layer. */
static size_t wg_scratch_of(const kc_state *st, int n) {
  return kca_wg_scratch(n, st->L.n_tok, st->L.head_dim, st->L.topk);
}

static kc_attn_args base_args(const kc_state *st) {
  const kern_layer *L = &st->L;
  kc_attn_args a;
  memset(&a, 0, sizeof a);
  a.D = L->head_dim;
  a.G = st->G;
  a.Hq = L->n_q_heads;
  a.Hkv = L->n_kv_heads;
  a.n_seq = L->n_seq;
  a.topk = L->topk;
  a.n_randq = L->n_randq;
  a.probs_last = L->probs_last;
  a.seq_off = (const int64_t *)st->seq_off.p;
  a.q = (const float *)st->q.p;
  a.k = (const float *)st->k.p;
  a.v = (const float *)st->v.p;
  a.randq = (const float *)st->randq.p;
  a.o_ref = (const float *)st->o_ref.p;
  a.topk_ref = (const int32_t *)st->topk_ref.p;
  a.randq_ref = (const float *)st->randq_ref.p;
  a.range_flag = (int *)st->range_flag.p;
  a.gqa = st->gqa; /* (the reference rows' kernel too: without it they ran k_rows, KC_ATTN_ROWS = 0) */
  return a;
}

static int cuda_load_layer(kern_backend *b, const kern_layer *L, sq_err *e) {
  kc_state *st = state_of(b);
  st->loaded = 0;
  st->lg.ready = 0;
  if (kern_check_layer(L, KC_TOPK_MAX, e)) return SQ_EINPUT;
  st->L = *L;
  st->G = L->n_q_heads / L->n_kv_heads;
  st->attn_on = (L->protocols & PROTO_ATTN) && L->q;
  st->probs_on = (L->protocols & PROTO_PROBS) && L->q && L->probs_last > 0;
  st->randq_on = (L->protocols & PROTO_RANDQ) && L->n_randq > 0;
  int64_t D = L->head_dim, Hq = L->n_q_heads, Hkv = L->n_kv_heads, nt = L->n_tok;
  st->max_seq = 0;
  for (int s = 0; s < L->n_seq; s++)
    if (L->seq_off[s + 1] - L->seq_off[s] > st->max_seq) st->max_seq = L->seq_off[s + 1] - L->seq_off[s];
  tryCheck(upload(&st->seq_off, L->seq_off, (size_t)(L->n_seq + 1) * sizeof(int64_t), e));
  if (!take_preload(st, L)) {
    tryCheck(upload(&st->k, L->k, (size_t)(nt * Hkv * D) * sizeof(float), e));
    tryCheck(upload(&st->v, L->v, (size_t)(nt * Hkv * D) * sizeof(float), e));
    if (st->attn_on || st->probs_on) tryCheck(upload(&st->q, L->q, (size_t)(nt * Hq * D) * sizeof(float), e));
  }
  size_t nrq = (size_t)(Hkv * L->n_seq * L->n_randq * D);
  if (st->randq_on) tryCheck(upload(&st->randq, L->randq, nrq * sizeof(float), e));
  if (st->attn_on) {
    tryCheck(kc_buf_need(&st->o_ref, (size_t)(nt * Hq * D) * sizeof(float), e));
    tryCheck(kc_buf_need(&st->range_flag, sizeof(int), e));
    tryCheck(kc_buf_need(&st->topk_ref, (size_t)(nt * Hq * L->topk) * sizeof(int32_t), e));
    kc_attn_args a = base_args(st);
    a.n_rows = nt * st->G;
    if (wg_on(st)) { /* k_ref_wg's split values */
      a.wg_scratch_bytes = kca_ref_wg_scratch(nt, (int)Hkv, (int)D);
      tryCheck(kc_buf_need(&st->wg_scratch, a.wg_scratch_bytes, e));
      a.wg_scratch = st->wg_scratch.p;
    }
    a.o_out = (float *)st->o_ref.p;
    a.topk_out = (int32_t *)st->topk_ref.p;
    tryCheck(kc_attn_launch(KC_REF_ATTN, &a, (int)Hkv, e));
  }
  if (st->attn_on && wg_on(st))
    tryCheck(kc_logit_prep(&st->lg, (const float *)st->q.p, (const float *)st->k.p, L->seq_off,
                           (const int64_t *)st->seq_off.p, L->n_seq, nt, (int)Hq, (int)Hkv, (int)D, e));
  if (st->randq_on) {
    tryCheck(kc_buf_need(&st->randq_ref, nrq * sizeof(float), e));
    kc_attn_args a = base_args(st);
    a.n_rows = (int64_t)L->n_seq * L->n_randq;
    a.o_out = (float *)st->randq_ref.p;
    tryCheck(kc_attn_launch(KC_REF_RANDQ, &a, (int)Hkv, e));
  }
  cudaCheck(cudaDeviceSynchronize());
  st->loaded = 1;
  return SQ_OK;
}

/* ---- eval ---- */

static void empty_metrics(kern_metrics *m) {
  m->attn_cos = m->randq_cos = m->probs_cos = NAN;
  m->k_cos = m->v_cos = m->k_rel_mse = m->v_rel_mse = NAN;
  m->logit_bias = m->logit_slope = m->topk_recall = NAN;
  m->n_attn = m->n_randq = m->n_probs = m->n_pairs = 0;
}

static int check_plan(const kc_state *st, const plan_side *p, int i, const char *kv, kc_side *s,
                      sq_err *e) {
  if (p->D != st->L.head_dim)
    return sq_fail(e, SQ_EINPUT, "eval: plan %d %s has D=%d but layer %d has head_dim %d", i, kv,
                   p->D, st->L.layer, st->L.head_dim);
  if (kc_side_of(p, s, e)) return sq_wrap(e, "eval: plan %d %s: ", i, kv);
  if (p->code_bits != s->code_bits || p->code_bytes != s->code_bytes)
    return sq_fail(e, SQ_EINPUT, "eval: plan %d %s says %d bits / %d bytes, layout has %d / %d", i,
                   kv, p->code_bits, p->code_bytes, s->code_bits, s->code_bytes);
  return SQ_OK;
}

/* Does another plan of the batch project this side (K: is_key) with the same rotation? Only those
 * sides take a kc_proj slot: a rotation used once (TurboQuant's, one per plan) would only fill
 * the slots that later SpectralQuant plans of the batch could share. */
static int side_shared(const plan_pair *const *plans, int n, int i, int is_key) {
  const plan_side *p = is_key ? &plans[i]->k : &plans[i]->v;
  for (int j = 0; j < n; j++) {
    const plan_side *q = is_key ? &plans[j]->k : &plans[j]->v;
    if (j != i && q->rot == p->rot && q->normalize == p->normalize) return 1;
  }
  return 0;
}

/* The shared-projection slot of a rotated plan side in this eval batch (kc_proj), when `shared`
 * (side_shared): the one with its rotation, normalize flag and side, else a free one (claimed),
 * else NULL (computed alone). */
static kc_proj *proj_slot(kc_state *st, const plan_side *p, int is_key, int shared) {
  if (!shared || !p->rot || st->L.n_tok > KC_ROW_CHUNK) return NULL; /* (one chunk: all rows' projection) */
  for (int i = 0; i < KC_PROJ_SLOTS; i++) {
    kc_proj *s = &st->proj[i];
    if (!s->rot_host) {
      s->rot_host = p->rot, s->normalize = p->normalize, s->is_key = is_key, s->have_y = 0;
      return s;
    }
    if (s->rot_host == p->rot && s->normalize == p->normalize && s->is_key == is_key) return s;
  }
  return NULL;
}

/* The device matrices of p: a shared slot's copy of the rotation when it has one and p has no
 * QJL matrix, else uploaded (and the rotation kept in a fresh slot). */
static int side_mats(kc_state *st, const plan_side *p, kc_proj *pj, kc_mats *mt, sq_err *e) {
  const size_t rot_bytes = (size_t)p->D * p->D * sizeof(double);
  if (pj && pj->have_y && p->qjl_rows == 0) {
    mt->rot = (double *)pj->rot.p;
    mt->S = NULL;
    return SQ_OK;
  }
  tryCheck(kc_upload_mats(&st->wk, p, mt, e));
  if (pj && !pj->have_y) {
    tryCheck(kc_buf_need(&pj->rot, rot_bytes, e));
    cudaCheck(cudaMemcpyAsync(pj->rot.p, mt->rot, rot_bytes, cudaMemcpyDeviceToDevice));
  }
  return SQ_OK;
}

/* Decode one side of plan i over all eval tokens of `head`: keff (keys) or vhat (values) and the
 * per-token reconstruction statistics. */
static int code_side(kc_state *st, const plan_side *p, const kc_side *s, int head, int is_key, int shared,
                     float *dst, double *rec, sq_err *e) {
  const kern_layer *L = &st->L;
  int64_t D = L->head_dim, stride = (int64_t)L->n_kv_heads * D;
  const float *x = (const float *)(is_key ? st->k.p : st->v.p) + (int64_t)head * D;
  kc_proj *pj = proj_slot(st, p, is_key, shared);
  kc_mats mt;
  tryCheck(side_mats(st, p, pj, &mt, e));
  for (int64_t r0 = 0; r0 < L->n_tok; r0 += KC_ROW_CHUNK) {
    int64_t nc = L->n_tok - r0 < KC_ROW_CHUNK ? L->n_tok - r0 : KC_ROW_CHUNK;
    const float *xr = x + r0 * stride;
    float *xh_out = is_key ? NULL : dst + r0 * D;
    tryCheck(kc_side_run(st->blas, s, &mt, (const float *)st->cb.p, &st->wk, xr, nc, stride, xh_out,
                         is_key ? dst + r0 * D : NULL, pj, e));
    const float *xh = is_key ? (const float *)st->wk.xhat.p : xh_out;
    tryCheck(kc_rec_stats(xr, stride, xh, nc, (int)D, rec + r0 * 3, e));
  }
  return SQ_OK;
}

/* The batch's code phase grouped (the default; SQEXP_CUDA_CODES=plan: per plan; docs/cuda.md):
 * every plan's effective keys / decoded values and their statistics, the sides without QJL through
 * kc_codes_batch (kcuda_codes.cu: uploads, projections and reconstructions grouped by rotation),
 * those with QJL through code_side. */
static int code_grouped(kc_state *st, int head, int n, const plan_pair *const *plans, const kc_side *ks,
                      const kc_side *vs, float *keff, float *vhat, double *krec, double *vrec, sq_err *e) {
  const kern_layer *L = &st->L;
  const int64_t D = L->head_dim, stride = (int64_t)L->n_kv_heads * D, nt = L->n_tok;
  const plan_side **ps = (const plan_side **)sq_xmalloc((size_t)(2 * n) * sizeof *ps);
  int *idx = (int *)sq_xmalloc((size_t)(2 * n) * sizeof(int));
  kc_codes_side sd[2];
  for (int side = 0; side < 2; side++) {
    kc_codes_side *c = &sd[side];
    c->x = (const float *)(side ? st->v.p : st->k.p) + (int64_t)head * D;
    c->stride = stride;
    c->in.ps = ps + side * n;
    c->in.idx = idx + side * n;
    c->in.m = 0;
    c->ss = side ? vs : ks;
    c->dst = side ? vhat : keff;
    c->rec = side ? vrec : krec;
    for (int i = 0; i < n; i++) {
      ps[side * n + i] = side ? &plans[i]->v : &plans[i]->k;
      if (ps[side * n + i]->qjl_rows == 0) idx[side * n + c->in.m++] = i;
    }
  }
  int rc = kc_codes_batch(&st->codes, st->blas, (const float *)st->cb.p, nt, (int)D, sd, e);
  for (int i = 0; !rc && i < n; i++)
    for (int side = 0; !rc && side < 2; side++)
      if (ps[side * n + i]->qjl_rows > 0)
        rc = code_side(st, ps[side * n + i], side ? &vs[i] : &ks[i], head, !side, 0,
                       (side ? vhat : keff) + i * nt * D, (side ? vrec : krec) + i * nt * 3, e);
  free(ps);
  free(idx);
  return rc;
}

static void fill_rec(const double *sums, int64_t n_tok, double *cos_mean, double *rel_mse) {
  *cos_mean = sums[0] / (double)n_tok;
  double err = sums[1], nn = sums[2];
  *rel_mse = nn > 0 ? err / nn : (err > 0 ? INFINITY : 0.0);
}

static int eval_batch(kc_state *st, int head, int n, const plan_pair *const *plans,
                      const kc_side *ks, const kc_side *vs, kern_metrics *out, sq_err *e) {
  const kern_layer *L = &st->L;
  int64_t D = L->head_dim, nt = L->n_tok, G = st->G;
  int64_t n_attn = nt * G, n_probs = (int64_t)L->n_seq * L->probs_last * G,
          n_rq = (int64_t)L->n_seq * L->n_randq;
  tryCheck(kc_buf_need(&st->keff, (size_t)(n * nt * D) * sizeof(float), e));
  tryCheck(kc_buf_need(&st->vhat, (size_t)(n * nt * D) * sizeof(float), e));
  tryCheck(kc_buf_need(&st->krec, (size_t)(n * nt * 3) * sizeof(double), e));
  tryCheck(kc_buf_need(&st->vrec, (size_t)(n * nt * 3) * sizeof(double), e));
  int64_t rows_need = n_attn * KC_ATTN_FIELDS;
  if (n_probs * KC_PROBS_FIELDS > rows_need) rows_need = n_probs * KC_PROBS_FIELDS;
  if (n_rq > rows_need) rows_need = n_rq;
  tryCheck(kc_buf_need(&st->rows, (size_t)(n * rows_need) * sizeof(double), e));
  tryCheck(kc_buf_need(&st->sums, (size_t)n * 16 * sizeof(double), e));
  float *keff = (float *)st->keff.p, *vhat = (float *)st->vhat.p;
  double *krec = (double *)st->krec.p, *vrec = (double *)st->vrec.p, *rows = (double *)st->rows.p;
  double *sums = (double *)st->sums.p;
  ph_mark(st, KC_PH_CODE);
  for (int i = 0; i < n; i++) empty_metrics(&out[i]);
  if (st->codes_grouped) {
    tryCheck(code_grouped(st, head, n, plans, ks, vs, keff, vhat, krec, vrec, e));
  } else {
    for (int i = 0; i < KC_PROJ_SLOTS; i++) st->proj[i].rot_host = NULL; /* (proj_slot resets what it claims) */
    for (int i = 0; i < n; i++) {
      tryCheck(code_side(st, &plans[i]->k, &ks[i], head, 1, side_shared(plans, n, i, 1), keff + i * nt * D,
                         krec + i * nt * 3, e));
      tryCheck(code_side(st, &plans[i]->v, &vs[i], head, 0, side_shared(plans, n, i, 0), vhat + i * nt * D,
                         vrec + i * nt * 3, e));
    }
  }
  double *hs = (double *)sq_xmalloc((size_t)n * 16 * sizeof(double));
  tryCheck(kc_colsum(krec, n, nt, 3, sums, e));
  tryCheck(kc_colsum(vrec, n, nt, 3, sums + 3 * n, e));
  cudaCheck(cudaMemcpy(hs, sums, (size_t)n * 6 * sizeof(double), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; i++) {
    fill_rec(hs + 3 * i, nt, &out[i].k_cos, &out[i].k_rel_mse);
    fill_rec(hs + 3 * n + 3 * i, nt, &out[i].v_cos, &out[i].v_rel_mse);
  }
  kc_attn_args a = base_args(st);
  a.head = head;
  a.gqa = st->gqa;
  a.keff = keff;
  a.vhat = vhat;
  a.plan_stride = nt * D;
  a.rows_out = rows;
  a.probs_cache = st->probs_cache ? st->max_seq : 0;
  int rc = SQ_OK;
  if (st->attn_on && wg_on(st)) {
    a.wg_scratch_bytes = wg_scratch_of(st, n);
    rc = kc_buf_need(&st->wg_scratch, a.wg_scratch_bytes, e);
    a.wg_scratch = st->wg_scratch.p;
    if (st->lg.ready) {
      a.lg_a = (const double *)st->lg.a.p + (int64_t)head * nt * D;
      a.lg_w = (const double *)st->lg.w.p + (int64_t)head * nt * D;
      a.lg_s = (const double *)st->lg.s.p + (int64_t)head * nt * 2;
    }
  }
  ph_mark(st, KC_PH_ATTN);
  if (st->attn_on && !rc) {
    a.n_rows = n_attn;
    a.n_fields = KC_ATTN_FIELDS;
    rc = kc_attn_launch(KC_EVAL_ATTN, &a, n, e);
    if (!rc) rc = kc_colsum(rows, n, n_attn, KC_ATTN_FIELDS, sums, e);
    if (!rc && cudaMemcpy(hs, sums, (size_t)n * KC_ATTN_FIELDS * sizeof(double), cudaMemcpyDeviceToHost))
      rc = sq_fail(e, SQ_EFAIL, "%s:%d: copying attention sums back", __FILE__, __LINE__);
    for (int i = 0; !rc && i < n; i++) {
      const double *f = hs + i * KC_ATTN_FIELDS;
      double N = f[7], den = N * f[5] - f[3] * f[3];
      out[i].attn_cos = f[0] / (double)n_attn;
      out[i].topk_recall = f[1] / (double)n_attn;
      out[i].logit_bias = f[2] / N;
      out[i].logit_slope = den > 0 ? (N * f[6] - f[3] * f[4]) / den : NAN;
      out[i].n_attn = n_attn;
      out[i].n_pairs = (int64_t)N;
    }
  }
  ph_mark(st, KC_PH_PROBS);
  if (st->probs_on && !rc) {
    a.n_rows = n_probs;
    a.n_fields = KC_PROBS_FIELDS;
    rc = kc_attn_launch(KC_EVAL_PROBS, &a, n, e);
    size_t bytes = (size_t)(n * n_probs * KC_PROBS_FIELDS) * sizeof(double);
    double *hp = (double *)sq_xmalloc(bytes);
    if (!rc && cudaMemcpy(hp, rows, bytes, cudaMemcpyDeviceToHost))
      rc = sq_fail(e, SQ_EFAIL, "%s:%d: copying probs rows back", __FILE__, __LINE__);
    int64_t per_seq = (int64_t)L->probs_last * G;
    for (int i = 0; !rc && i < n; i++) {
      double acc = 0;
      for (int s = 0; s < L->n_seq; s++) {
        double pd = 0, pn = 0, ph = 0;
        for (int64_t r = 0; r < per_seq; r++) {
          const double *f = hp + ((int64_t)i * n_probs + s * per_seq + r) * KC_PROBS_FIELDS;
          pd += f[0], pn += f[1], ph += f[2];
        }
        acc += (pn == 0 && ph == 0) ? 1.0 : (pn == 0 || ph == 0) ? 0.0 : pd / sqrt(pn * ph);
      }
      out[i].probs_cos = acc / (double)L->n_seq;
      out[i].n_probs = L->n_seq;
    }
    free(hp);
  }
  ph_mark(st, KC_PH_RANDQ);
  if (st->randq_on && !rc) {
    a.n_rows = n_rq;
    a.n_fields = KC_RANDQ_FIELDS;
    rc = kc_attn_launch(KC_EVAL_RANDQ, &a, n, e);
    size_t bytes = (size_t)(n * n_rq) * sizeof(double);
    double *hr = (double *)sq_xmalloc(bytes);
    if (!rc && cudaMemcpy(hr, rows, bytes, cudaMemcpyDeviceToHost))
      rc = sq_fail(e, SQ_EFAIL, "%s:%d: copying randq rows back", __FILE__, __LINE__);
    for (int i = 0; !rc && i < n; i++) {
      double acc = 0;
      for (int64_t r = 0; r < n_rq; r++) acc += hr[(int64_t)i * n_rq + r];
      out[i].randq_cos = acc / (double)n_rq;
      out[i].n_randq = n_rq;
    }
    free(hr);
  }
  free(hs);
  ph_mark(st, KC_PH_N);
  if (!rc) {
    cudaError_t ce = cudaDeviceSynchronize();
    if (ce != cudaSuccess) rc = sq_fail(e, SQ_EFAIL, "%s:%d: eval: %s", __FILE__, __LINE__, cudaGetErrorString(ce));
  }
  if (!rc) ph_add(st, n);
  return rc;
}

static int cuda_eval(kern_backend *b, int head, int n, const plan_pair *const *plans,
                     const cb_table *cb, kern_metrics *out, sq_err *e) {
  kc_state *st = state_of(b);
  if (!st->loaded) return sq_fail(e, SQ_EFAIL, "eval: no layer loaded");
  const kern_layer *L = &st->L;
  if (head < 0 || head >= L->n_kv_heads)
    return sq_fail(e, SQ_EINPUT, "eval: KV head %d outside 0..%d", head, L->n_kv_heads - 1);
  kc_side *ks = (kc_side *)sq_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(kc_side));
  kc_side *vs = (kc_side *)sq_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(kc_side));
  int rc = SQ_OK;
  for (int i = 0; i < n && !rc; i++)
    if (check_plan(st, &plans[i]->k, i, "K", &ks[i], e) || check_plan(st, &plans[i]->v, i, "V", &vs[i], e))
      rc = SQ_EINPUT;
  if (!rc) rc = upload_cb(st, cb, e);
  int64_t nt = L->n_tok, D = L->head_dim;
  /* decoded keys and values, statistics, attention rows, and k_attn_wg's split operands */
  int64_t per_plan = nt * D * 2 * (int64_t)sizeof(float) + nt * 6 * (int64_t)sizeof(double) +
                     nt * st->G * KC_ATTN_FIELDS * (int64_t)sizeof(double) +
                     (int64_t)(wg_scratch_of(st, 2) - wg_scratch_of(st, 1));
  int chunk = (int)(KC_EVAL_BYTES / per_plan);
  chunk = chunk < 1 ? 1 : chunk > 64 ? 64 : chunk;
  for (int i0 = 0; i0 < n && !rc; i0 += chunk) {
    int nc = n - i0 < chunk ? n - i0 : chunk;
    rc = eval_batch(st, head, nc, plans + i0, ks + i0, vs + i0, out + i0, e);
  }
  free(ks);
  free(vs);
  return rc;
}

/* Layer buffers page-locked in place: a pageable upload runs through the driver's staging copies
 * (~7 GB/s measured for load_layer's 400 MB on the H200 machine), a registered one at the link's
 * speed. Registration failing (a locked-memory limit) only leaves the buffer pageable. */
static void *kc_host_alloc(size_t bytes) {
  void *p = sq_xmalloc(bytes);
  if (cudaHostRegister(p, bytes, cudaHostRegisterDefault) != cudaSuccess) cudaGetLastError();
  return p;
}
static void kc_host_free(void *p) {
  if (!p) return;
  if (cudaHostUnregister(p) != cudaSuccess) cudaGetLastError(); /* (it was left pageable) */
  free(p);
}

static void cuda_destroy(kern_backend *b) {
  if (!b) return;
  kc_state *st = state_of(b);
  ph_report(st);
  for (int i = 0; st->ph.on && i <= KC_PH_N; i++) cudaEventDestroy(st->ph.ev[i]);
  kc_buf *all[] = {&st->seq_off,    &st->q,          &st->k,    &st->v,    &st->randq,     &st->o_ref,
                   &st->topk_ref,   &st->randq_ref,  &st->keff, &st->vhat, &st->rows,      &st->sums,
                   &st->krec,       &st->vrec,       &st->cb,   &st->mx,   &st->md,        &st->mC,
                   &st->fast_mats,  &st->fast_segs,  &st->range_flag,      &st->wg_scratch,
                   &st->lg.a,       &st->lg.w,       &st->lg.s, &st->lg.b, &st->lg.tiles,
                   &st->pre_k,      &st->pre_v,      &st->pre_q};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) kc_buf_free(all[i]);
  for (int i = 0; i < KC_PROJ_SLOTS; i++) {
    kc_buf_free(&st->proj[i].rot);
    kc_buf_free(&st->proj[i].y);
    kc_buf_free(&st->proj[i].norm);
  }
  kc_codes_free(&st->codes);
  kc_work_free(&st->wk);
  kc_solver_free(st->solver);
  if (st->blas) cublasDestroy(st->blas);
  if (st->blas_m) cublasDestroy(st->blas_m);
  if (st->pre_stream) cudaStreamDestroy(st->pre_stream);
  pthread_mutex_destroy(&st->pre_lock);
  free(st);
  free(b);
}

extern "C" int kern_cuda_create(kern_backend **out, int device, sq_err *e) {
  *out = NULL;
  int n = 0;
  cudaError_t ce = cudaGetDeviceCount(&n);
  if (ce != cudaSuccess || n < 1) {
    cudaGetLastError();
    return sq_fail(e, SQ_EFAIL, "cuda backend: no GPU visible (%s)",
                   ce != cudaSuccess ? cudaGetErrorString(ce) : "0 devices");
  }
  if (device < 0 || device >= n)
    return sq_fail(e, SQ_EINPUT, "cuda backend: device %d outside 0..%d", device, n - 1);
  cudaCheck(cudaSetDevice(device));
  kc_state *st = (kc_state *)sq_xcalloc(1, sizeof *st);
  pthread_mutex_init(&st->pre_lock, NULL);
  st->device = device;
  const char *attn = getenv("SQEXP_CUDA_ATTN");
  /* rows, gqa, tc, tcpv (the default: scores and weighted sums on tensor cores): kcuda_attn.cuh */
  st->gqa = kc_attn_kind(attn);
  /* the code phase grouped over the batch (kcuda_codes.cu) and k_probs_seq's cached passes are the
   * defaults; the per-plan code phase and the recomputing passes stay, to compare against */
  const char *codes = getenv("SQEXP_CUDA_CODES");
  st->codes_grouped = !(codes && !strcmp(codes, "plan"));
  const char *probs = getenv("SQEXP_CUDA_PROBS");
  st->probs_cache = !(probs && !strcmp(probs, "recompute"));
  /* (tests: SQEXP_CUDA_CODES_ROWS / _BYTES small, to run several row chunks and plan groups) */
  const char *crows = getenv("SQEXP_CUDA_CODES_ROWS"), *cbytes = getenv("SQEXP_CUDA_CODES_BYTES");
  st->codes.rows = crows ? atoll(crows) : 0;
  st->codes.bytes = cbytes ? atoll(cbytes) : 0;
  if (prov_phases_on()) { /* timing is optional: without its events, go without it */
    int made = 0;
    while (made <= KC_PH_N && cudaEventCreate(&st->ph.ev[made]) == cudaSuccess) made++;
    st->ph.on = made == KC_PH_N + 1;
    while (!st->ph.on && made > 0) cudaEventDestroy(st->ph.ev[--made]);
    cudaGetLastError();
  }
  cublasStatus_t bs = cublasCreate(&st->blas);
  if (bs == CUBLAS_STATUS_SUCCESS) {
    bs = cublasCreate(&st->blas_m);
    if (bs != CUBLAS_STATUS_SUCCESS) cublasDestroy(st->blas);
  }
  if (bs != CUBLAS_STATUS_SUCCESS) {
    free(st);
    return sq_fail(e, SQ_EFAIL, "%s:%d: cublasCreate: %s", __FILE__, __LINE__, cublasGetStatusString(bs));
  }
  kern_backend *b = (kern_backend *)sq_xcalloc(1, sizeof *b);
  b->name = "cuda";
  b->impl = st;
  b->moments = cuda_moments;
  b->load_layer = cuda_load_layer;
  b->preload = cuda_preload;
  b->eval = cuda_eval;
  b->encode = cuda_encode;
  b->decode = cuda_decode;
  b->destroy = cuda_destroy;
  b->eigh = kc_eigh;
  b->host_alloc = kc_host_alloc;
  b->host_free = kc_host_free;
  b->eval_batch = 64;
  *out = b;
  return SQ_OK;
}
