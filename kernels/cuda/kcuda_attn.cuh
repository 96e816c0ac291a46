/* kcuda_attn: the fused attention-row kernels (kcuda_attn.cu). */
#ifndef SQEXP_KCUDA_ATTN_CUH
#define SQEXP_KCUDA_ATTN_CUH
#include <string.h>
#include "kcuda.cuh"

enum { KC_REF_ATTN = 0, KC_REF_RANDQ = 1, KC_EVAL_ATTN = 2, KC_EVAL_RANDQ = 3, KC_EVAL_PROBS = 4 };
/* Per-row output fields of the eval modes. */
enum { KC_ATTN_FIELDS = 8, KC_RANDQ_FIELDS = 1, KC_PROBS_FIELDS = 3 };

typedef struct {
  int D, G, Hq, Hkv, head, n_seq, topk, n_randq, probs_last, n_fields;
  int64_t n_rows;            /* rows per plan (eval) or per KV head (reference) */
  const int64_t *seq_off;    /* [n_seq+1] device */
  const float *q, *k, *v;    /* layer arrays (device) */
  const float *randq;        /* [Hkv][n_seq][n_randq][D] */
  const float *keff, *vhat;  /* [plan][n_tok][D] */
  int64_t plan_stride;       /* n_tok * D */
  const float *o_ref;        /* [n_tok][Hq][D] */
  const int32_t *topk_ref;   /* [n_tok][Hq][topk] sequence-local */
  const float *randq_ref;    /* [Hkv][n_seq][n_randq][D] */
  float *o_out;              /* reference modes */
  int32_t *topk_out;
  double *rows_out;          /* eval modes: [plan][n_rows][n_fields] */
  int gqa;                   /* EVAL_ATTN kernel: KC_ATTN_* (kc_attn_kind) */
  int *range_flag;           /* device int for k_attn_wg's range check (NULL: k_attn_wg is not used) */
  void *wg_scratch;          /* k_attn_wg's split operands and slot scores, kca_wg_scratch bytes (NULL: unused) */
  size_t wg_scratch_bytes;
  const double *lg_a, *lg_w, *lg_s; /* this head's logit-sum terms (kcuda_logit.cuh; NULL: k_attn_wg is not used) */
  int64_t probs_cache;       /* > 0: k_probs_seq keeps every row's scores in shared memory when the
                                layer's longest sequence (this many keys) fits (0: SQEXP_CUDA_PROBS=recompute) */
} kc_attn_args;

/* The scratch k_attn_wg needs for a launch of n_plans plans over n_tok tokens of head_dim D with
 * the layer's top-k (the split operands and the rank slots' scores), and k_ref_wg for a layer's
 * reference rows (its values split). */
size_t kca_wg_scratch(int n_plans, int64_t n_tok, int D, int topk);
size_t kca_ref_wg_scratch(int64_t n_tok, int Hkv, int D);

/* The group-per-warp EVAL_ATTN kernel's shape. */
static inline int kc_gqa_shape(int G, int D) { return G == 4 && D <= 128 && D % 4 == 0; }
/* The tensor-core EVAL_ATTN kernel's shape (k-steps of 8 dimensions). */
static inline int kc_tc_shape(int G, int D) { return G == 4 && D <= 128 && D % 8 == 0; }

/* The wgmma EVAL_ATTN kernel's shape (whole 128-byte swizzle rows of fp16 dimensions). */
static inline int kc_wg_shape(int G, int D) { return G == 4 && (D == 64 || D == 128); }

/* EVAL_ATTN kernels: k_rows everywhere; k_attn_gqa where kc_gqa_shape (else k_rows); k_attn_tc
 * (scores on tensor cores in 3xTF32; TCPV: the weighted sum of values too) where kc_tc_shape
 * (else as GQA); k_attn_wg (both products on wgmma in 3xfp16) where kc_wg_shape in an sm_90a
 * build (else as TCPV, and TCPV recomputes a launch whose operands exceed fp16's range). */
enum { KC_ATTN_ROWS = 0, KC_ATTN_GQA = 1, KC_ATTN_TC = 2, KC_ATTN_TCPV = 3, KC_ATTN_WG = 4 };

/* SQEXP_CUDA_ATTN's value (NULL when unset): rows, gqa, tc, tcpv, wg; anything else is the
 * default, wg (docs/cuda.md, "The attention rows"). */
static inline int kc_attn_kind(const char *env) {
  if (env && !strcmp(env, "rows")) return KC_ATTN_ROWS;
  if (env && !strcmp(env, "gqa")) return KC_ATTN_GQA;
  if (env && !strcmp(env, "tc")) return KC_ATTN_TC;
  if (env && !strcmp(env, "tcpv")) return KC_ATTN_TCPV;
  return KC_ATTN_WG;
}

/* n_y: KV heads (REF_* modes: n_rows per head) or plans (EVAL_* modes, a.head fixed). */
int kc_attn_launch(int mode, const kc_attn_args *a, int n_y, sq_err *e);

#endif
