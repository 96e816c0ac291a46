/* cb_cells (the fast encoder's cell tables) against the search it replaces, cb_quantize, on the
 * real Lloyd-Max tables (gauss, and beta at D = 64 and 128; b = 1..8):
 *  - the T search finds a grid for every table, so the kernel never falls back to the slow
 *    search on the shipped codebooks (a fallback is exact, so the GPU tests could not see it);
 *  - every cell holds at most one boundary, and the table counts the boundaries below each cell
 *    as a direct count over the boundaries does;
 *  - the lookup, done as the kernel does it (t = y / scale as y * qis, the cell from
 *    fmaf(y, qis * iw, T iw) with a saturating conversion), gives cb_quantize's index for every
 *    boundary and its 4 float neighbours on each side, a dense grid past both ends, 0, +-huge, NaN,
 *    at scales 1, 1/sqrt(D) and two others. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cb_cells.h"
#include "codebook.h"

typedef struct {
  float iw, Tiw;
  float inside[CB_CELLS(CB_MAX_BITS)];
  unsigned below[CB_CELLS(CB_MAX_BITS)];
} cells;

static int fit(const float *bnd, int bits, cells *c) {
  for (int k = 0; k < CB_CELLS_TRIES; k++) {
    cb_cells_try(bnd, bits, k, &c->iw, &c->Tiw);
    int bad = 0;
    for (int i = 0; i < (1 << bits) - 1; i++) bad |= cb_cells_bad(bnd, i, c->iw, c->Tiw);
    if (bad) continue;
    for (int j = 0; j < CB_CELLS(bits); j++) cb_cells_entry(bnd, bits, c->iw, c->Tiw, j, &c->inside[j], &c->below[j]);
    return 1;
  }
  return 0;
}

static unsigned lookup(const cells *c, int bits, float y, float qis) {
  float t = y * qis;
  unsigned j = cb_cells_cell(y, qis * c->iw, c->Tiw, bits);
  return c->below[j] + (t > c->inside[j]);
}

/* Check one y at one scale; returns 1 on a mismatch (reported once per table). */
static int check(const cells *c, const float *bnd, int bits, float y, float qis, int *reported, const char *what) {
  unsigned got = lookup(c, bits, y, qis), want = (unsigned)cb_quantize(bnd, bits, y * qis);
  if (got == want) return 0;
  if (!(*reported)++)
    cr_log_error("%s b=%d: y=%.9g qis=%.9g t=%.9g: cells %u, search %u", what, bits, (double)y, (double)qis,
                 (double)(y * qis), got, want);
  return 1;
}

static void check_table(const float *bnd, int bits, int D, const char *what) {
  cells *c = malloc(sizeof *c);
  cr_assert(c);
  int nb = (1 << bits) - 1;
  cr_assert(fit(bnd, bits, c), "%s b=%d: no grid in %d tries (the kernel would search)", what, bits, CB_CELLS_TRIES);
  /* structure: at most one boundary per cell, counts below each cell */
  for (int j = 0; j < CB_CELLS(bits); j++) {
    unsigned in = 0, below = 0;
    for (int i = 0; i < nb; i++) {
      double pos = (double)bnd[i] * c->iw + c->Tiw;
      in += pos >= j && pos < j + 1;
      below += pos < j;
    }
    cr_expect(in <= 1, "%s b=%d cell %d holds %u boundaries", what, bits, j, in);
    cr_expect_eq(c->below[j], below, "%s b=%d cell %d: below %u, counted %u", what, bits, j, c->below[j], below);
  }
  const float scales[4] = {1.0f, 1.0f / sqrtf((float)D), 0.37f, 7.9f};
  int bad = 0, reported = 0;
  float T = (c->Tiw - 0.5f) / c->iw;
  for (int s = 0; s < 4; s++) {
    float qis = scales[s];
    for (int i = 0; i < nb; i++) { /* every boundary and its neighbours, as t */
      float t = bnd[i];
      for (int k = 0; k < 4; k++) t = nextafterf(t, -INFINITY);
      for (int k = 0; k < 9; k++, t = nextafterf(t, INFINITY)) {
        bad += check(c, bnd, bits, t / qis, qis, &reported, what);
        bad += check(c, bnd, bits, nextafterf(t / qis, INFINITY), qis, &reported, what);
        bad += check(c, bnd, bits, nextafterf(t / qis, -INFINITY), qis, &reported, what);
      }
    }
    for (int k = -20000; k <= 20000; k++) bad += check(c, bnd, bits, 1.5f * T * (float)k / 20000.0f / qis, qis, &reported, what);
    const float special[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e30f, -1e30f, INFINITY, -INFINITY, NAN};
    for (size_t k = 0; k < sizeof special / sizeof special[0]; k++) bad += check(c, bnd, bits, special[k], qis, &reported, what);
  }
  cr_expect_eq(bad, 0, "%s b=%d: %d lookups differ from the search", what, bits, bad);
  free(c);
}

Test(cb_cells, every_shipped_codebook_has_an_exact_table) {
  static cb_table tab;
  sq_err e = {0};
  const int dims[2] = {64, 128};
  for (int d = 0; d < 2; d++) {
    cr_assert_eq(cb_table_build(&tab, dims[d], &e), SQ_OK, "%s", e.msg);
    for (int bits = 1; bits <= CB_MAX_BITS; bits++) {
      char what[64];
      snprintf(what, sizeof what, "beta D=%d", dims[d]);
      check_table(tab.boundary[CB_BETA][bits], bits, dims[d], what);
      if (d == 1) check_table(tab.boundary[CB_GAUSS][bits], bits, dims[d], "gauss");
    }
  }
}

/* The table is the search, not an approximation of it: a boundary moved by one float must move
 * the lookup's answer for t between the old and the new position. */
Test(cb_cells, the_table_follows_the_boundaries_to_the_last_float) {
  static cb_table tab;
  sq_err e = {0};
  cr_assert_eq(cb_table_build(&tab, 128, &e), SQ_OK, "%s", e.msg);
  float bnd[256];
  for (int i = 0; i < 255; i++) bnd[i] = tab.boundary[CB_GAUSS][3][i];
  cells *c = malloc(sizeof *c);
  cr_assert(c && fit(bnd, 3, c));
  float t = nextafterf(bnd[2], INFINITY); /* just above boundary 2: index 3 */
  cr_expect_eq(lookup(c, 3, t, 1.0f), 3u);
  bnd[2] = t; /* now t == boundary 2: index 2 (ties go to the lower index) */
  cr_assert(fit(bnd, 3, c));
  cr_expect_eq(lookup(c, 3, t, 1.0f), 2u);
  free(c);
}
