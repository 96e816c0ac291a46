/* codes_sched: the grouped code phase's operations (codes_sched.h). */
#include "codes_sched.h"
#include <stdlib.h>
#include <string.h>
#include "err.h"

/* (c->op holds csched_build's upper bound of operations) */
static csched_op *sched_push(csched *c, csched_kind kind, int side, int64_t row0, int64_t rows) {
  csched_op *o = &c->op[c->n_op++];
  memset(o, 0, sizeof *o);
  o->kind = kind, o->side = side, o->row0 = row0, o->rows = rows, o->y = -1;
  return o;
}

/* The distinct rotations, ordered by (side, normalize): each such range is one strided-batched
 * projection. rix[s][j]: plan sides[s].idx[j]'s entry, -1 without a rotation. */
static void sched_rotations(csched *c, const csched_side sides[2], int *rix[2]) {
  const int m = sides[0].m + sides[1].m;
  c->rot = sq_xmalloc((size_t)(m > 0 ? m : 1) * sizeof *c->rot);
  c->rot_nz = sq_xmalloc((size_t)(m > 0 ? m : 1) * sizeof *c->rot_nz);
  c->rot_side = sq_xmalloc((size_t)(m > 0 ? m : 1) * sizeof *c->rot_side);
  for (int s = 0; s < 2; s++)
    for (int nz = 0; nz < 2; nz++) {
      const int beg = c->n_rot;
      for (int j = 0; j < sides[s].m; j++) {
        const plan_side *p = sides[s].ps[sides[s].idx[j]];
        if (!!p->normalize != nz) continue;
        if (!p->rot) {
          rix[s][j] = -1;
          continue;
        }
        int r = beg;
        while (r < c->n_rot && c->rot[r] != p->rot) r++;
        if (r == c->n_rot) c->rot[r] = p->rot, c->rot_nz[r] = nz, c->rot_side[r] = s, c->n_rot++;
        rix[s][j] = r;
      }
    }
}

/* Positions j of a side's plans by rotation entry (stable), the unrotated (-1) first. */
static void sched_order(int m, const int *rix, int *ord) {
  for (int j = 0; j < m; j++) {
    int k = j;
    for (; k > 0 && rix[ord[k - 1]] > rix[j]; k--) ord[k] = ord[k - 1];
    ord[k] = j;
  }
}

/* One group (positions g0 .. g1 - 1 of ord) of one row chunk. */
static void sched_group(csched *c, const csched_side *sd, int s, const int *rix, const int *ord, int g0,
                        int g1, int64_t row0, int64_t rows) {
  int ra = -1, rb = -1; /* the group's rotation entries, ra .. rb (contiguous: ord is by entry) */
  for (int k = g0; k < g1; k++)
    if (rix[ord[k]] >= 0) {
      if (ra < 0) ra = rix[ord[k]];
      rb = rix[ord[k]];
    }
  for (int r = ra; ra >= 0 && r <= rb;) { /* one projection batch per normalize flag */
    int r1 = r;
    while (r1 + 1 <= rb && c->rot_nz[r1 + 1] == c->rot_nz[r]) r1++;
    csched_op *o = sched_push(c, CSCHED_PROJ, s, row0, rows);
    o->nz = c->rot_nz[r], o->rot0 = r, o->n_rot = r1 - r + 1, o->y = r - ra;
    r = r1 + 1;
  }
  for (int k = g0; k < g1; k++) {
    const int j = ord[k], i = sd->idx[j];
    csched_op *o = sched_push(c, CSCHED_QUANT, s, row0, rows);
    o->plan = i, o->nz = !!sd->ps[i]->normalize, o->y = rix[j] >= 0 ? rix[j] - ra : -1, o->slot = k - g0;
  }
  for (int k = g0; k < g1;) { /* one reconstruction per run of a rotation */
    int k1 = k;
    while (k1 + 1 < g1 && rix[ord[k1 + 1]] == rix[ord[k]]) k1++;
    if (rix[ord[k]] >= 0) {
      csched_op *o = sched_push(c, CSCHED_RECON, s, row0, rows);
      o->rot0 = rix[ord[k]], o->n_rot = 1, o->slot = k - g0, o->n_slot = k1 - k + 1;
    }
    k = k1 + 1;
  }
  for (int k = g0; k < g1; k++) {
    const int j = ord[k], i = sd->idx[j];
    csched_op *o = sched_push(c, CSCHED_FINISH, s, row0, rows);
    o->plan = i, o->nz = !!sd->ps[i]->normalize, o->slot = k - g0, o->from_acc = rix[j] >= 0;
  }
}

void csched_build(csched *c, const csched_side sides[2], int64_t n_tok, int D, int64_t max_rows,
                  int64_t max_bytes) {
  memset(c, 0, sizeof *c);
  const int m = sides[0].m + sides[1].m;
  c->chunk = n_tok < max_rows ? n_tok : max_rows;
  int64_t g = c->chunk > 0 ? max_bytes / (3 * c->chunk * D * (int64_t)sizeof(double)) : 1;
  c->gmax = g < 1 ? 1 : g > 64 ? 64 : (int)g;
  if (n_tok <= 0 || m <= 0) return;
  int64_t bound = 0; /* per side and chunk: 2 PREP, per group 2 PROJ, and 3 per plan at most */
  for (int s = 0; s < 2; s++)
    bound += (n_tok + c->chunk - 1) / c->chunk * (2 + 2 * ((sides[s].m + c->gmax - 1) / c->gmax) + 3 * sides[s].m);
  c->op = sq_xmalloc((size_t)bound * sizeof *c->op);
  int *ints = sq_xmalloc((size_t)(2 * m) * sizeof *ints);
  int *rix[2] = {ints, ints + sides[0].m}, *ord[2] = {ints + m, ints + m + sides[0].m};
  sched_rotations(c, sides, rix);
  for (int s = 0; s < 2; s++) {
    const csched_side *sd = &sides[s];
    if (sd->m <= 0) continue;
    sched_order(sd->m, rix[s], ord[s]);
    for (int64_t row0 = 0; row0 < n_tok; row0 += c->chunk) {
      const int64_t rows = n_tok - row0 < c->chunk ? n_tok - row0 : c->chunk;
      for (int nz = 0; nz < 2; nz++) /* the unit rows the side's plans use */
        for (int j = 0; j < sd->m; j++)
          if (!!sd->ps[sd->idx[j]]->normalize == nz) {
            sched_push(c, CSCHED_PREP, s, row0, rows)->nz = nz;
            break;
          }
      for (int g0 = 0; g0 < sd->m; g0 += c->gmax)
        sched_group(c, sd, s, rix[s], ord[s], g0, g0 + c->gmax < sd->m ? g0 + c->gmax : sd->m, row0, rows);
    }
  }
  free(ints);
}

void csched_free(csched *c) {
  free(c->rot);
  free(c->rot_nz);
  free(c->rot_side);
  free(c->op);
  memset(c, 0, sizeof *c);
}
