/* calib: per-(layer, KV head) spectrum of keys or values (methods.md §1). */
#ifndef SQEXP_CALIB_H
#define SQEXP_CALIB_H
#include <stdint.h>
#include "err.h"

typedef struct {
  int D;
  int64_t n;            /* calibration rows used */
  double *eigval;       /* [D] descending, clamped >= 0 */
  float *basis;         /* [D*D] row i = eigenvector i (so y = basis . x); largest-|.| component > 0 */
  double pr;            /* participation ratio (sum l)^2 / sum l^2, 1 when sum l^2 < 1e-12 */
  int pr_int;           /* clamp(round(pr), 2, D-2): the paper's "d_eff" */
  double kappa;         /* min(l[d-1] / max(l[d], 1e-10), 1e6), d = pr_int */
} calib_head;

/* Uncentred second moment C = X^T X / n in double (rows x_i at x + i*stride, D floats each);
 * rows divided by (|x| + 1e-8) first when normalize. Writes C [D*D]. */
void calib_moment(const float *x, int64_t n, int64_t stride, int D, int normalize, double *C);
/* From a second moment C: eigendecomposition (GSL), clamping, sign convention, PR, kappa. */
int calib_from_moment(const double *C, int D, int64_t n, calib_head *out, sq_err *e);
/* The eigendecomposition alone (GSL, one matrix, thread-safe): eigval[D] in GSL's (unspecified)
 * order and evec_rows[D*D] with row i = the unit eigenvector of eigval[i]. */
int calib_eigh(const double *C, int D, double *eigval, double *evec_rows, sq_err *e);
/* Everything calib_from_moment does after the decomposition: sort descending (ties keep GSL's
 * sort order), clamp >= 0, float basis rows, calib_fix_signs, PR, pr_int, kappa. Inputs as
 * calib_eigh writes them (any order; row i pairs with eigval i); they are not modified.
 * calib_from_moment = calib_eigh + calib_from_eig, so both backends share this one path. */
int calib_from_eig(const double *eigval_any_order, const double *evec_rows, int D, int64_t n,
                   calib_head *out, sq_err *e);
/* Both steps. */
int calib_compute(const float *x, int64_t n, int64_t stride, int D, int normalize, calib_head *out,
                  sq_err *e);
/* Variance-coverage dimension d_eff(tau) = clamp(#{i: cumsum(l)_i/sum(l) < tau} + 1, 2, D-2). */
int calib_deff(const calib_head *c, double tau);
/* Apply the sign convention to row vectors in place (exported for the CUDA backend). */
void calib_fix_signs(float *basis, int D);
void calib_head_free(calib_head *c);

#endif
