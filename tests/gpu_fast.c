/* gpu_fast: kern_cuda_encode_fast (fp16 tensor-core projection, passes 1 or 3) against the CPU
 * reference encode (kern_cpu_create), on the rows of a synthetic layer (tests/util/tu_layer:
 * 3001 tokens in 3 sequences, 2 KV heads, D = 128; the rows of head h are lay.k + h*D with
 * stride HKV*D, so n is odd and the stride exceeds D) and of a second layer at D = 64.
 * Plans (every side without QJL; a side with qjl_rows > 0 is skipped): tq mse b = 1, 3, 4, 6
 * (haar/beta, hadamard/gaussian; b = 6 takes the per-coordinate path of the kernel), the value side of tq prod, sq b = 2, 3, 4 water-filled
 * (normalize = 0: raw rows are projected), sq without water-fill, sq with noise_bits 0,
 * sq_paper_v1 b = 3, lowrank rank 8 (8 fp16 coordinates, 120 dropped ones).
 * Checked per (plan, head, side, passes):
 *   - SQ_OK, and every byte written: the output is poisoned with 0xA5 and, in a second run,
 *     with 0x5A; both runs must give the same bytes, and the zero padding after the last field
 *     must be zero as the CPU's is;
 *   - the fp16 norm (normalize plans): a differing norm is one fp16 ulp away and |x| (double)
 *     lies within (D + 4) 2^-24 |x| (the worst case of an fp32 sum of D squares, plus sqrt) of
 *     the midpoint between the two halves, i.e. the difference is fp32 vs double rounding; and at
 *     most ceil(n/200) rows differ (a CPU emulation with a sequential fp32 sum gave 5 of 3001, so
 *     the n/1000 first planned was too tight; a biased norm of ~4e-6 relative would exceed it);
 *   - bits 1..8: a differing index differs by exactly 1, and only where the CPU's exact
 *     t = y_i / scale_i lies within tol of the boundary between the two indices (below);
 *   - the flip rate (differing indices / quantised coordinates) <= 2e-3 (passes 1), <= 5e-5
 *     (passes 3) over the full-size runs, times the mean #boundaries / 15 where that is > 1;
 *   - bits 16 (lowrank): the two fp16 values within max(1e-3 |y|, 1e-6) (or the model bound);
 *   - bits 0: nothing stored; since the norm, every index field and the padding are compared,
 *     any stray byte shows up (and rows that differ bytewise must be rows with a field diff).
 *     A tq side with mixed widths (one 2-bit, one dropped coordinate: 4 padding bits) runs with
 *     n = 1000, 1, 63, 65 next to tq, sq and lowrank (the other plans fill whole bytes);
 * Tolerances. fp16 has a 10-bit mantissa: passes = 1 rounds both operands of every product to
 * fp16, each with relative error <= 2^-11, so y/|x| is off by ~2^-11 sqrt(2/3) |rot_i o u|_2
 * (RMS) and at most 2^-10 sum_j |rot_ij u_j| <= 2^-10. In t units (scale 1 for beta, 1/sqrt(D)
 * for gaussian-family unit vectors) the brief's tol = 2e-3 max(1, |t|) is ~2x the worst case
 * for beta and ~4 RMS for the gaussian family. passes = 3 adds the hi/lo products: what remains
 * is the lo*lo term and the rounding of the lo parts (~2^-22 relative) and fp32 accumulation,
 * ~2^-21 overall, so tol = 2e-5 max(1, |t|) is a generous multiple for |t| ~ 1. The error is
 * relative to |x| (the fast encoder projects x/|x|), not to y_i, so for normalize = 0 plans (sq,
 * lowrank) a low-variance coordinate (small scale_i) sees |x|/scale_i times more error in t:
 * there the test uses a per-coordinate model bound instead when it is larger,
 *   6 |x| (c_round |rot_i o u|_2 + c_acc sum_j |rot_ij u_j| + c_abs |(rot_i, u)|_2) / scale_i
 *   + 2^-20 |t|,
 * with c_round = 2^-11 (passes 1) / 2^-22 (passes 3), c_acc = k D 2^-24 for k products per
 * term (fp32 accumulation, truncating on tensor cores), c_abs = 2^-25 (fp16 subnormal spacing
 * of the lo parts and of tiny u_j), and 2^-20 |t| for y * (1/scale) and the final float roundings.
 * Without a visible GPU every test is skipped with a message (not passed). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "calib.h"
#include "cfg.h"
#include "codebook.h"
#include "cpu/kcpu.h"
#include "f16.h"
#include "kern.h"
#include "plan.h"
#include "util/tu_layer.h"

#define HKV 2
#define HQ 4
#define NCAL 3000
#define MODEL_SAFETY 6.0

typedef struct {
  int D;
  cb_table cb;
  tu_layer lay;
  calib_head ck[HKV], cv[HKV];
} fixture;

typedef struct {
  int64_t coords;       /* quantised coordinates compared (bits 1..8) */
  int64_t flips;        /* of them, indices that differ */
  int64_t norm_rows;    /* rows whose fp16 norm differs */
  int64_t diff_rows;    /* rows whose bytes differ */
  double worst_flip;    /* max over flips of |t - boundary| / tol (must stay <= 1) */
  double worst16;       /* max over fp16 coordinates of |a - b| / tol16 */
} fast_stats;

static kern_backend *cpu, *gpu;
static fixture f128, f64;
static int ready;

static void need_gpu(void) {
  if (!kern_cuda_available()) cr_skip_test("no CUDA GPU visible: the fast encoder is not checked");
}

static void fixture_make(fixture *f, int D, const int *lens, int n_seq, uint64_t seed) {
  sq_err e = {0};
  f->D = D;
  cr_assert_eq(cb_table_build(&f->cb, D, &e), SQ_OK, "%s", e.msg);
  tu_layer_make(&f->lay, lens, n_seq, HKV, HQ, D, 0, seed);
  float *kr, *vr;
  tu_rows(&kr, NCAL, HKV, D, 0, seed);
  tu_rows(&vr, NCAL, HKV, D, 1, seed);
  for (int h = 0; h < HKV; h++) {
    cr_assert_eq(calib_compute(kr + h * D, NCAL, HKV * D, D, 0, &f->ck[h], &e), SQ_OK, "%s", e.msg);
    cr_assert_eq(calib_compute(vr + h * D, NCAL, HKV * D, D, 0, &f->cv[h], &e), SQ_OK, "%s", e.msg);
  }
  free(kr);
  free(vr);
}

static void fixture_free(fixture *f) {
  for (int h = 0; h < HKV; h++) {
    calib_head_free(&f->ck[h]);
    calib_head_free(&f->cv[h]);
  }
  tu_layer_free(&f->lay);
}

static void setup(void) {
  sq_err e = {0};
  if (!kern_cuda_available()) return;
  cr_assert_eq(kern_cpu_create(&cpu, 0, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(kern_cuda_create(&gpu, 0, &e), SQ_OK, "%s", e.msg);
  int lens128[3] = {1201, 999, 801}; /* 3001 rows: odd, not a multiple of 64 */
  int lens64[2] = {700, 601};
  fixture_make(&f128, 128, lens128, 3, 7);
  fixture_make(&f64, 64, lens64, 2, 13);
  ready = 1;
}

static void teardown(void) {
  if (!ready) return;
  fixture_free(&f128);
  fixture_free(&f64);
  cpu->destroy(cpu);
  gpu->destroy(gpu);
}

TestSuite(gpu_fast, .init = setup, .fini = teardown);

static plan_knobs tq_mse(int bits, int rotation, int codebook) {
  plan_knobs k = plan_knobs_defaults(ARM_TQ, bits);
  k.tq_variant = TQ_MSE;
  k.tq_rotation = rotation;
  k.tq_codebook = codebook;
  return k;
}

/* The D = 128 plan kinds without QJL (tq prod contributes its value side). */
static int knobs_128(plan_knobs *out) {
  int n = 0;
  out[n++] = tq_mse(3, TQ_HAAR, TQ_CB_BETA);
  out[n++] = tq_mse(3, TQ_HADAMARD, TQ_CB_GAUSSIAN);
  out[n++] = tq_mse(1, TQ_HAAR, TQ_CB_BETA);
  out[n++] = tq_mse(4, TQ_HAAR, TQ_CB_BETA);
  out[n++] = tq_mse(6, TQ_HAAR, TQ_CB_BETA); /* one codebook for all, but too wide for the 8-field chunks */
  out[n++] = plan_knobs_defaults(ARM_TQ, 3); /* prod: K has QJL (skipped), V is mse at 3 bits */
  for (int b = 2; b <= 4; b++) out[n++] = plan_knobs_defaults(ARM_SQ, b);
  out[n] = plan_knobs_defaults(ARM_SQ, 3), out[n].use_water_fill = 0, n++;
  out[n] = plan_knobs_defaults(ARM_SQ, 3), out[n].noise_bits = 0, n++;
  out[n++] = plan_knobs_defaults(ARM_SQV1, 3);
  out[n] = plan_knobs_defaults(ARM_LOWRANK, 0), out[n].rank = 8, n++;
  return n;
}

/* The model bound on |t_fast - t_cpu| of coordinate i (see the header comment), in t units. */
static double model_bound(const plan_side *p, const float *x, int i, int passes, float t) {
  int D = p->D;
  double ss = 0.0;
  for (int j = 0; j < D; j++) ss += (double)x[j] * x[j];
  double nx = sqrt(ss);
  if (nx == 0.0) return 0.0;
  double l2 = 0.0, l1 = 0.0, both = 0.0;
  for (int j = 0; j < D; j++) {
    double r = p->rot ? p->rot[(size_t)i * D + j] : (double)(i == j), u = x[j] / nx;
    l2 += r * r * u * u;
    l1 += fabs(r * u);
    both += r * r + u * u;
  }
  double c_round = passes == 1 ? ldexp(1.0, -11) : ldexp(1.0, -22);
  double c_acc = (passes == 1 ? 1.0 : 3.0) * D * ldexp(1.0, -24);
  double err_u = c_round * sqrt(l2) + c_acc * l1 + ldexp(1.0, -25) * sqrt(both);
  double scale = p->bits[i] == PLAN_BITS_FP16 ? 1.0 : p->scale[i];
  return MODEL_SAFETY * nx * err_u / scale + ldexp(1.0, -20) * fabs(t);
}

/* A differing index: must be a neighbour, and t must lie near the boundary between the two. */
static void check_flip(const plan_side *p, const cb_table *cb, const float *x, const float *y, int i,
                       uint32_t a, uint32_t b, int passes, const char *what, int64_t row,
                       fast_stats *st) {
  int bits = p->bits[i];
  cr_expect(a == b + 1 || b == a + 1, "%s row %lld coord %d (%d bits): cpu index %u fast %u", what,
            (long long)row, i, bits, a, b);
  if (!(a == b + 1 || b == a + 1)) return;
  uint32_t lo = a < b ? a : b;
  float t = y[i] / p->scale[i]; /* as the CPU computes it */
  double boundary = cb->boundary[p->family][bits][lo];
  double tol_rel = passes == 1 ? 2e-3 : 2e-5;
  double tol = fmax(tol_rel * fmax(1.0, fabs(t)), model_bound(p, x, i, passes, t));
  double off = fabs(t - boundary);
  st->worst_flip = fmax(st->worst_flip, off / tol);
  cr_expect(off <= tol, "%s row %lld coord %d (%d bits): index %u vs %u but t = %.9g is %.3g from "
            "boundary %.9g (tol %.3g)", what, (long long)row, i, bits, a, b, t, off, boundary, tol);
}

/* A raw fp16 coordinate: the two halves within the projection's error plus one fp16 ulp. */
static void check_fp16(const plan_side *p, const float *x, const float *y, int i, uint32_t a,
                       uint32_t b, int passes, const char *what, int64_t row, fast_stats *st) {
  if (a == b) return;
  double va = f16_to_f32((uint16_t)a), vb = f16_to_f32((uint16_t)b), ay = fabs(y[i]);
  double tol = fmax(fmax(1e-3 * ay, 1e-6), model_bound(p, x, i, passes, y[i]) + ldexp(ay, -10));
  double d = fabs(va - vb);
  if (!(d <= tol)) d = isnan(d) ? INFINITY : d;
  st->worst16 = fmax(st->worst16, d / tol);
  cr_expect(d <= tol, "%s row %lld coord %d (fp16): cpu %.9g fast %.9g (y %.9g, tol %.3g)", what,
            (long long)row, i, va, vb, (double)y[i], tol);
}

/* Compare one row's fields; returns 1 when any field differs. */
static int check_row(const plan_side *p, const kcpu_layout *lay, const cb_table *cb, const float *x,
                     const uint8_t *c1, const uint8_t *c2, int passes, const char *what, int64_t row,
                     fast_stats *st) {
  int D = p->D, differs = 0;
  if (p->normalize) {
    uint32_t n1 = kcpu_get_bits(c1, lay->norm_off, 16), n2 = kcpu_get_bits(c2, lay->norm_off, 16);
    if (n1 != n2) { /* only one ulp apart, and only where |x| sits on fp16's rounding midpoint */
      st->norm_rows++, differs = 1;
      double ss = 0.0, a = f16_to_f32((uint16_t)n1), b = f16_to_f32((uint16_t)n2);
      for (int j = 0; j < D; j++) ss += (double)x[j] * x[j];
      double nx = sqrt(ss), off = fabs(nx - 0.5 * (a + b)), tol = ldexp((double)(D + 4), -24) * nx;
      cr_expect((n1 + 1 == n2 || n2 + 1 == n1) && off <= tol, "%s row %lld: fp16 norm %.9g (cpu) vs "
                "%.9g (fast), |x| = %.9g is %.3g from their midpoint (tol %.3g)", what, (long long)row,
                a, b, nx, off, tol);
    }
  }
  for (int k = lay->bits; k < lay->bytes * 8; k++) {
    int pad_ok = kcpu_get_bits(c2, k, 1) == 0 && kcpu_get_bits(c1, k, 1) == 0;
    differs |= !pad_ok;
    cr_expect(pad_ok, "%s row %lld: padding bit %d is not zero", what, (long long)row, k);
  }
  uint32_t i1[PLAN_MAX_D], i2[PLAN_MAX_D];
  float y[PLAN_MAX_D];
  double norm;
  kcpu_unpack_indices(p, lay, c1, i1);
  kcpu_unpack_indices(p, lay, c2, i2);
  int projected = 0;
  for (int i = 0; i < D; i++) {
    int b = p->bits[i];
    if (b >= 1 && b <= CB_MAX_BITS) st->coords++;
    if (b == 0 || i1[i] == i2[i]) continue;
    differs = 1;
    if (!projected) kcpu_project(p, x, y, &norm), projected = 1;
    if (b == PLAN_BITS_FP16) {
      check_fp16(p, x, y, i, i1[i], i2[i], passes, what, row, st);
    } else {
      st->flips++;
      check_flip(p, cb, x, y, i, i1[i], i2[i], passes, what, row, st);
    }
  }
  return differs;
}

/* Encode n rows of one side with both encoders and check the fast codes against the CPU's. */
static void check_side(const plan_side *p, const cb_table *cb, const float *x, int64_t n, int64_t stride,
                       int passes, const char *what, fast_stats *st) {
  sq_err e = {0};
  kcpu_layout lay;
  cr_assert_eq(kcpu_layout_of(p, &lay, &e), SQ_OK, "%s: %s", what, e.msg);
  cr_assert_eq(lay.bytes, p->code_bytes, "%s: layout %d bytes, plan %d", what, lay.bytes, p->code_bytes);
  size_t sz = (size_t)(n * p->code_bytes);
  uint8_t *c1 = malloc(sz), *c2 = malloc(sz), *c3 = malloc(sz);
  cr_assert_eq(cpu->encode(cpu, p, cb, x, n, stride, c1, &e), SQ_OK, "%s: %s", what, e.msg);
  memset(c2, 0xA5, sz); /* poisoned twice differently: every byte must be written */
  memset(c3, 0x5A, sz);
  cr_assert_eq(kern_cuda_encode_fast(gpu, p, cb, x, n, stride, passes, c2, &e), SQ_OK, "%s: %s", what, e.msg);
  cr_assert_eq(kern_cuda_encode_fast(gpu, p, cb, x, n, stride, passes, c3, &e), SQ_OK, "%s: %s", what, e.msg);
  cr_expect(memcmp(c2, c3, sz) == 0, "%s: bytes left unwritten (or not deterministic): 0xA5 and 0x5A "
            "poisoned outputs differ", what);
  for (int64_t r = 0; r < n; r++) {
    const uint8_t *a = c1 + r * p->code_bytes, *b = c2 + r * p->code_bytes;
    int fields = check_row(p, &lay, cb, x + r * stride, a, b, passes, what, r, st);
    int bytes = memcmp(a, b, (size_t)p->code_bytes) != 0;
    st->diff_rows += bytes;
    cr_expect_eq(bytes, fields, "%s row %lld: bytes %s but the fields %s", what, (long long)r,
                 bytes ? "differ" : "agree", fields ? "differ" : "agree");
  }
  cr_expect_leq(st->norm_rows, (n + 199) / 200, "%s: fp16 norm differs in %lld of %lld rows", what,
                (long long)st->norm_rows, (long long)n);
  free(c1), free(c2), free(c3);
}

static double flip_rate(const fast_stats *s) { return s->coords ? (double)s->flips / (double)s->coords : 0.0; }

/* The flip-rate limits are set for up to 4 bits per coordinate (15 boundaries); a coordinate's
 * chance to lie within the projection error of some boundary grows with their number, so a side
 * whose quantised coordinates have more than 15 boundaries on average (tq b = 6: 63) gets the
 * limit times that mean / 15. */
static double boundary_factor(const plan_side *p) {
  double sum = 0.0;
  int n = 0;
  for (int i = 0; i < p->D; i++)
    if (p->bits[i] >= 1 && p->bits[i] <= CB_MAX_BITS) sum += (1 << p->bits[i]) - 1, n++;
  return n && sum / n > 15.0 ? sum / n / 15.0 : 1.0;
}

/* Every plan of `kn` for every head, side and pass count over the fixture's full rows. */
static void check_plans(fixture *f, const plan_knobs *kn, int nk, const char *tag) {
  sq_err e = {0};
  int64_t flips[4] = {0}, coords[4] = {0};
  int sides = 0;
  for (int h = 0; h < HKV; h++)
    for (int i = 0; i < nk; i++) {
      plan_pair pp;
      cr_assert_eq(plan_build(&pp, &kn[i], &f->ck[h], &f->cv[h], 0, h, 42, &e), SQ_OK, "%s", e.msg);
      for (int s = 0; s < 2; s++) {
        const plan_side *p = s ? &pp.v : &pp.k;
        if (p->qjl_rows > 0) continue; /* the fast encoder refuses QJL (bad_input covers it) */
        const float *x = (s ? f->lay.v : f->lay.k) + h * f->D;
        sides++;
        for (int passes = 1; passes <= 3; passes += 2) {
          char what[320];
          snprintf(what, sizeof what, "[%s] %s head %d %c passes %d", tag, pp.key, h, s ? 'V' : 'K', passes);
          fast_stats st = {0};
          check_side(p, &f->cb, x, f->lay.n_tok, (int64_t)HKV * f->D, passes, what, &st);
          double rate = flip_rate(&st), limit = (passes == 1 ? 2e-3 : 5e-5) * boundary_factor(p);
          fprintf(stderr, "gpu_fast: %s: %lld of %lld indices flipped (rate %.2e, limit %.0e, worst "
                  "margin/tol %.3g), %lld norms, %lld rows differ, fp16 worst/tol %.3g\n", what,
                  (long long)st.flips, (long long)st.coords, rate, limit, st.worst_flip,
                  (long long)st.norm_rows, (long long)st.diff_rows, st.worst16);
          cr_expect_leq(rate, limit, "%s: flip rate %.3e above %.0e", what, rate, limit);
          flips[passes] += st.flips, coords[passes] += st.coords;
        }
      }
      plan_pair_free(&pp);
    }
  for (int passes = 1; passes <= 3; passes += 2)
    fprintf(stderr, "gpu_fast: [%s] summary passes %d: %d sides x %lld rows, %lld of %lld indices flipped "
            "(rate %.2e)\n", tag, passes, sides, (long long)f->lay.n_tok, (long long)flips[passes],
            (long long)coords[passes], coords[passes] ? (double)flips[passes] / (double)coords[passes] : 0.0);
}

Test(gpu_fast, plans_d128) {
  need_gpu();
  plan_knobs kn[16];
  int n = knobs_128(kn);
  check_plans(&f128, kn, n, "D128");
}

Test(gpu_fast, plans_d64) {
  need_gpu();
  plan_knobs kn[2] = {tq_mse(3, TQ_HAAR, TQ_CB_BETA), plan_knobs_defaults(ARM_SQ, 3)};
  check_plans(&f64, kn, 2, "D64");
}

/* Small and odd row counts (a partial last tile, a single row) with the [n][H][D] stride. The
 * last plan mixes widths (tq 3-bit with coordinate 0 at 2 bits and coordinate D-1 dropped: 396
 * bits, so 4 padding bits; every other plan here fills its last byte exactly). */
Test(gpu_fast, odd_row_counts) {
  need_gpu();
  sq_err e = {0};
  plan_knobs kn[4] = {tq_mse(3, TQ_HADAMARD, TQ_CB_GAUSSIAN), plan_knobs_defaults(ARM_SQ, 3),
                      plan_knobs_defaults(ARM_LOWRANK, 0), tq_mse(3, TQ_HAAR, TQ_CB_BETA)};
  kn[2].rank = 8;
  int64_t counts[4] = {1000, 1, 63, 65};
  for (int i = 0; i < 4; i++) {
    plan_pair pp;
    cr_assert_eq(plan_build(&pp, &kn[i], &f128.ck[1], &f128.cv[1], 0, 1, 42, &e), SQ_OK, "%s", e.msg);
    if (i == 3) {
      pp.k.bits[0] = 2;
      pp.k.bits[127] = 0;
      plan_side_finalize(&pp.k);
      cr_assert_eq(pp.k.code_bits % 8, 4, "mixed plan: %d bits", pp.k.code_bits);
    }
    for (int c = 0; c < 4; c++)
      for (int passes = 1; passes <= 3; passes += 2) {
        char what[320];
        snprintf(what, sizeof what, "[n=%lld] %s%s head 1 K passes %d", (long long)counts[c], pp.key,
                 i == 3 ? " (mixed widths)" : "", passes);
        fast_stats st = {0};
        /* rows from the middle of the layer: row 0 of the call is not row 0 of the buffer */
        check_side(&pp.k, &f128.cb, f128.lay.k + (int64_t)17 * HKV * 128 + 128, counts[c],
                   (int64_t)HKV * 128, passes, what, &st);
        fprintf(stderr, "gpu_fast: %s: %lld of %lld indices flipped, %lld rows differ\n", what,
                (long long)st.flips, (long long)st.coords, (long long)st.diff_rows);
      }
    plan_pair_free(&pp);
  }
}

/* Refused input: SQ_EINPUT with a message, and the output left untouched. */
static void expect_refused(const plan_side *p, const cb_table *cb, const float *x, int passes, const char *what) {
  sq_err e = {0};
  uint8_t codes[4 * 1024], poison[4 * 1024];
  cr_assert_leq(4 * p->code_bytes, (int)sizeof codes);
  memset(codes, 0xA5, sizeof codes);
  memset(poison, 0xA5, sizeof poison);
  int st = kern_cuda_encode_fast(gpu, p, cb, x, 4, p->D, passes, codes, &e);
  cr_expect_eq(st, SQ_EINPUT, "%s: status %d (%s)", what, st, e.msg);
  cr_expect(e.msg[0] != '\0', "%s: no message", what);
  cr_expect(memcmp(codes, poison, sizeof codes) == 0, "%s: output written although refused", what);
  fprintf(stderr, "gpu_fast: %s refused: %s\n", what, e.msg);
}

Test(gpu_fast, bad_input_is_an_error_not_a_crash) {
  need_gpu();
  sq_err e = {0};
  plan_pair prod, mse;
  plan_knobs kp = plan_knobs_defaults(ARM_TQ, 3), km = tq_mse(3, TQ_HAAR, TQ_CB_BETA);
  cr_assert_eq(plan_build(&prod, &kp, &f128.ck[0], &f128.cv[0], 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  cr_assert_eq(plan_build(&mse, &km, &f128.ck[0], &f128.cv[0], 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  cr_assert_gt(prod.k.qjl_rows, 0, "tq prod keys should carry QJL");
  expect_refused(&prod.k, &f128.cb, f128.lay.k, 1, "tq prod K (QJL)");
  expect_refused(&mse.k, &f128.cb, f128.lay.k, 2, "passes 2");
  expect_refused(&mse.k, &f128.cb, f128.lay.k, 0, "passes 0");
  plan_pair_free(&prod);
  plan_pair_free(&mse);
  /* D = 96: tq with a Haar rotation builds at any D; the fast kernel serves only 64 and 128 */
  enum { D96 = 96, N96 = 400 };
  static cb_table cb96;
  cr_assert_eq(cb_table_build(&cb96, D96, &e), SQ_OK, "%s", e.msg);
  float *rows;
  tu_rows(&rows, N96, 1, D96, 0, 5);
  calib_head c96;
  cr_assert_eq(calib_compute(rows, N96, D96, D96, 0, &c96, &e), SQ_OK, "%s", e.msg);
  plan_pair p96;
  cr_assert_eq(plan_build(&p96, &km, &c96, &c96, 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  expect_refused(&p96.k, &cb96, rows, 1, "D = 96");
  plan_pair_free(&p96);
  calib_head_free(&c96);
  free(rows);
  /* codes longer than the kernel's bit-stream buffers (2 + D bytes per row): lowrank at rank 100
   * stores 100 fp16 coordinates, 200 bytes */
  plan_knobs kl = plan_knobs_defaults(ARM_LOWRANK, 0);
  kl.rank = 100;
  plan_pair lr;
  cr_assert_eq(plan_build(&lr, &kl, &f128.ck[0], &f128.cv[0], 0, 0, 42, &e), SQ_OK, "%s", e.msg);
  cr_assert_gt(lr.k.code_bytes, 2 + lr.k.D, "lowrank rank 100: %d bytes", lr.k.code_bytes);
  expect_refused(&lr.k, &f128.cb, f128.lay.k, 1, "lowrank rank 100 (codes over 2 + D bytes)");
  plan_pair_free(&lr);
}
