/* codes_sched: the order of operations of eval's grouped code phase (the CUDA backend's default,
 * kernels/cuda/kcuda_codes.cu) as data. The CUDA side maps each operation to one cuBLAS call or
 * kernel; tests/test_codes_sched.c runs the same list with plain loops on the CPU and compares
 * every decoded row with the CPU reference's, so the grouping (which projection a plan quantises,
 * which slots a reconstruction reads, which row chunk) is checked on any machine.
 *
 * Per side (keys, then values) and row chunk: the unit rows for each normalize flag in use
 * (PREP), then the handled plans in groups of at most gmax, ordered by rotation (the unrotated
 * first): the group's rotations' projections, one strided batch per normalize flag (PROJ); each
 * plan's quantisation into its slot (QUANT); one reconstruction per run of plans sharing a
 * rotation (RECON, slots slot .. slot + n_slot - 1); each plan's decoded rows and statistics
 * (FINISH). A group's projections, quantised projections and reconstructions take gmax slots of
 * rows x D doubles each. */
#ifndef SQEXP_CODES_SCHED_H
#define SQEXP_CODES_SCHED_H
#include <stdint.h>
#include "plan.h"

typedef enum { CSCHED_PREP, CSCHED_PROJ, CSCHED_QUANT, CSCHED_RECON, CSCHED_FINISH } csched_kind;

typedef struct {
  csched_kind kind;
  int side;            /* 0 keys, 1 values */
  int64_t row0, rows;  /* the row chunk */
  int nz;              /* PREP: the unit rows made (normalised or not); QUANT, FINISH: the ones used */
  int rot0, n_rot;     /* PROJ: rotation entries rot0 .. rot0 + n_rot - 1 (one normalize flag);
                          RECON: the rotation (n_rot 1) */
  int y;               /* PROJ: the y slot of rot0 (then consecutive); QUANT: the y slot read, or
                          -1: the unit rows nz (a plan without rotation) */
  int plan;            /* QUANT, FINISH: the plan's index in the batch */
  int slot, n_slot;    /* QUANT: the yh slot written; RECON: yh slots read, acc slots written;
                          FINISH: the slot read (acc, or yh when from_acc is 0) */
  int from_acc;        /* FINISH: the plan has a rotation */
} csched_op;

/* One side's input: the plans of the batch it handles (idx[0 .. m-1] into ps). */
typedef struct {
  int m;
  const int *idx;
  const plan_side *const *ps;
} csched_side;

typedef struct {
  int n_rot;               /* the batch's distinct (rotation, normalize, side), in upload order */
  const float **rot;       /* [n_rot] the plans' host matrices */
  int *rot_nz, *rot_side;  /* [n_rot] */
  int n_op;
  csched_op *op;
  int gmax;                /* plans per group = slots of y, yh, acc */
  int64_t chunk;           /* rows per chunk */
} csched;

/* The schedule of sides[0] (keys) and sides[1] (values) over n_tok rows of head_dim D, with at
 * most max_bytes of fp64 intermediates per group (3 gmax chunk D doubles) and max_rows rows per
 * chunk. Zero *c first; csched_free releases it. */
void csched_build(csched *c, const csched_side sides[2], int64_t n_tok, int D, int64_t max_rows,
                  int64_t max_bytes);
void csched_free(csched *c);

#endif
