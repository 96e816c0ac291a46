/* plan: the one representation every method compiles to (design.md). A plan_side says how one
 * vector (a key or a value of one layer/KV head) is stored:
 *   [fp16 norm if normalize] [index of every coordinate y_i of y = rot.x (or of x/|x|),
 *    bits[i] bits each, LSB-first; 16 = raw fp16, 0 = dropped] [m QJL sign bits] [fp16 |r| if m>0]
 * padded to a whole byte per token. Reconstruction: y^_i = scale[i] * centroid[family][bits[i]][idx],
 * x^ = (normalize ? n^ : 1) * rot^T y^. QJL: r = x - x^, signs = sign(S r) (sign(0) = +1), and the
 * score estimate q.x^ + qjl_coef * |r|^ * <S q, signs>. Plan builders (tq, sq, sq_paper_v1,
 * lowrank) only fill this struct; the kernels only execute it. */
#ifndef SQEXP_PLAN_H
#define SQEXP_PLAN_H
#include <stdint.h>
#include "calib.h"
#include "cfg.h"
#include "codebook.h"
#include "err.h"

#define PLAN_MAX_D 256
#define PLAN_BITS_FP16 16

typedef struct {
  int D;
  float *rot;              /* [D*D] row-major, rows = basis vectors: y = rot . x; NULL = identity */
  int owns_rot;            /* free rot with the plan (0 when it points into a calib_head) */
  int normalize;           /* store |x| as fp16, quantize x/|x| */
  int family;              /* CB_GAUSS | CB_BETA: which unit codebooks bits[i] index */
  uint8_t bits[PLAN_MAX_D];
  float scale[PLAN_MAX_D];  /* > 0 where bits is 1..8; ignored where bits is 0 (dropped) or 16 (fp16) */
  int qjl_rows;            /* m; 0 = no QJL */
  float *qjl;              /* [m*D] i.i.d. N(0,1) rows, applied in the original coordinates */
  int owns_qjl;
  double qjl_coef;         /* sqrt(pi/2)/m */
  int code_bits;           /* exact stored bits per token (set by plan_side_finalize) */
  int code_bytes;          /* ceil(code_bits / 8) */
} plan_side;

enum { ARM_TQ = 0, ARM_SQ = 1, ARM_SQV1 = 2, ARM_LOWRANK = 3, ARM_COUNT = 4 };
extern const char *const plan_arm_names[ARM_COUNT]; /* "tq", "sq", "sq_paper_v1", "lowrank" */

/* One grid point: an arm and the knob values it owns (others are ignored; -1 / CFG_NONE = none). */
typedef struct {
  int arm;
  int total_bits;
  int noise_bits;          /* sq: CFG_NONE or >= 0 */
  int value_noise_bits;    /* sq: CFG_NONE = follow noise_bits */
  double d_eff_variance;   /* sq, lowrank (rank 0) */
  int use_water_fill, use_qjl;            /* sq */
  int tq_variant, tq_rotation, tq_codebook, tq_shared_rotation; /* tq */
  int rank;                /* lowrank: r, or 0 = d_eff(d_eff_variance) */
} plan_knobs;

typedef struct {
  plan_knobs knobs;
  char key[256];           /* canonical grid-point key, e.g. "sq:b=3,nb=none,vnb=none,tau=0.90,wf=1,qjl=0" */
  int layer, head;
  plan_side k, v;
  int d_eff_k, d_eff_v;    /* the dimension the plan used (sq: d_eff(tau); lowrank: the ranks kept;
                            * tq, sq_paper_v1: 0) */
  /* bits per token for K and V under each accounting (methods.md §4-5, §7):
   * honest = code_bits; seed = the published engine's formula; paper = the paper's formula. */
  double bits_honest_k, bits_honest_v, bits_seed_k, bits_seed_v, bits_paper_k, bits_paper_v;
} plan_pair;

/* Enumerate the grid of a config: each enabled arm x only the knobs it owns. *out is malloc'd. */
int plan_grid(const cfg_t *c, plan_knobs **out, int *n, sq_err *e);
void plan_knobs_key(const plan_knobs *kn, char *buf, int n);
/* A grid point with every knob at the config's default (noise bits none, tau 0.90, water-filled,
 * no QJL; tq prod, Haar, beta, per-head rotation; lowrank rank d_eff(tau)): for benches and tests. */
plan_knobs plan_knobs_defaults(int arm, int total_bits);

/* Build the plan of one grid point for (layer, head) from its key and value calibrations. */
int plan_build(plan_pair *out, const plan_knobs *kn, const calib_head *ck, const calib_head *cv,
               int layer, int head, uint64_t seed, sq_err *e);
/* Compute code_bits/code_bytes from the fields above. */
void plan_side_finalize(plan_side *p);
void plan_pair_free(plan_pair *p);

/* Helpers the builders share (exported for tests and the bench). */
void plan_haar(float *rot, int D, uint64_t seed);          /* Q of QR(N(0,1)^{DxD}), signs of diag(R) folded */
int plan_hadamard(float *rot, int D, uint64_t seed, sq_err *e); /* H diag(+-1)/sqrt(D); D a power of 2 */
void plan_gaussian(float *m, int rows, int D, uint64_t seed);   /* first `rows` rows of a DxD N(0,1) draw */

#endif
