/* test_f16: the dump reader's array conversions (f16_rows.h) against f16.h's scalar reference,
 * bit for bit, over every one of the 65536 fp16 and 65536 bf16 patterns (subnormals, ±0, Inf,
 * quiet and signalling NaNs with their payloads), on the fast path this CPU takes and on the
 * portable one; and their non-finite count and first position, with the bad value at every
 * offset of an 8-wide step and in the scalar tail, for fp16, bf16 and float32. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "f16.h"
#include "f16_rows.h"

#define NPAT 65536

static uint32_t bits_of(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  return b;
}

static uint16_t *all_patterns(void) {
  uint16_t *p = malloc(NPAT * sizeof *p);
  for (int i = 0; i < NPAT; i++) p[i] = (uint16_t)i;
  return p;
}

typedef int64_t (*conv_fn)(const uint16_t *, float *, int64_t, int64_t *);

/* conv over all patterns equals ref element by element; the count and the first non-finite
 * pattern are those of the exponent field `expo` (all ones = Inf or NaN). */
static void check_all(conv_fn conv, float (*ref)(uint16_t), uint16_t expo, const char *what) {
  uint16_t *p = all_patterns();
  float *got = malloc(NPAT * sizeof *got);
  int64_t first = -1, bad = conv(p, got, NPAT, &first);
  int64_t want_bad = 0, want_first = -1, wrong = 0;
  for (int i = 0; i < NPAT; i++) {
    if ((p[i] & expo) == expo && want_bad++ == 0) want_first = i;
    if (bits_of(got[i]) != bits_of(ref(p[i])) && wrong++ < 5)
      cr_log_error("%s: pattern 0x%04x gives 0x%08x, reference 0x%08x", what, (unsigned)i,
                   (unsigned)bits_of(got[i]), (unsigned)bits_of(ref(p[i])));
  }
  cr_expect_eq(wrong, 0, "%s: %lld of 65536 patterns differ from the reference", what, (long long)wrong);
  cr_expect_eq(bad, want_bad, "%s: %lld non-finite, want %lld", what, (long long)bad, (long long)want_bad);
  cr_expect_eq(first, want_first, "%s: first non-finite at %lld, want %lld", what, (long long)first,
               (long long)want_first);
  free(got);
  free(p);
}

Test(f16, every_f16_pattern_fast_path) {
  cr_log_info("F16C path: %s", f16_rows_have_f16c() ? "yes" : "no (portable only)");
  check_all(f16_rows_to_f32, f16_to_f32, 0x7c00, "f16_rows_to_f32");
}

Test(f16, every_f16_pattern_portable) {
  check_all(f16_rows_to_f32_portable, f16_to_f32, 0x7c00, "f16_rows_to_f32_portable");
}

Test(f16, every_bf16_pattern) { check_all(bf16_rows_to_f32, bf16_to_f32, 0x7f80, "bf16_rows_to_f32"); }

/* Also at every misalignment of the source and with every length's tail, so that each lane of
 * the 8-wide step and each element of the scalar tail is checked against the reference. */
Test(f16, every_f16_pattern_misaligned) {
  uint16_t *p = all_patterns();
  float *got = malloc(NPAT * sizeof *got);
  int64_t wrong = 0;
  for (int off = 1; off < 8; off++) {
    int64_t n = NPAT - off - (off * 3) % 8, first;
    f16_rows_to_f32(p + off, got + off, n, &first);
    for (int64_t i = 0; i < n; i++) wrong += bits_of(got[off + i]) != bits_of(f16_to_f32(p[off + i]));
  }
  cr_expect_eq(wrong, 0, "%lld misaligned conversions differ from f16_to_f32", (long long)wrong);
  free(got);
  free(p);
}

/* Non-finite count and first index for a run of finite values with bad ones planted: one at
 * every position of a 37-element array (four 8-wide steps and a tail of 5), then two at once
 * (the first reported, both counted), in each storage type. */
typedef struct {
  const char *name;
  uint16_t fine, bad1, bad2; /* a finite pattern and two non-finite ones */
  conv_fn conv;
} case16;

static void check_positions16(const case16 *c) {
  enum { N = 37 };
  uint16_t src[N];
  float dst[N];
  for (int a = 0; a < N; a++)
    for (int b = a; b < N; b++) {
      for (int i = 0; i < N; i++) src[i] = c->fine;
      src[b] = c->bad2;
      src[a] = c->bad1;
      int64_t first = -1, bad = c->conv(src, dst, N, &first);
      cr_assert_eq(bad, a == b ? 1 : 2, "%s: bad at %d and %d: count %lld", c->name, a, b, (long long)bad);
      cr_assert_eq(first, a, "%s: bad at %d and %d: first %lld", c->name, a, b, (long long)first);
    }
  int64_t first = -7;
  for (int i = 0; i < N; i++) src[i] = c->fine;
  cr_assert_eq(c->conv(src, dst, N, &first), 0, "%s: a finite array has a non-finite value", c->name);
  cr_assert_eq(first, -7, "%s: *first written with nothing to report", c->name);
}

Test(f16, nonfinite_positions) {
  /* f16: 1.0, +Inf, a signalling NaN; bf16: 1.0, -Inf, a NaN with a payload */
  case16 cases[] = {{"f16 fast", 0x3c00, 0x7c00, 0xfc01, f16_rows_to_f32},
                    {"f16 portable", 0x3c00, 0x7c00, 0xfc01, f16_rows_to_f32_portable},
                    {"bf16", 0x3f80, 0xff80, 0x7f81, bf16_rows_to_f32}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_positions16(&cases[i]);
}

/* float32: blocks of 256 are tested for any non-finite value, so 600 elements span three. */
Test(f16, f32_nonfinite_positions) {
  enum { N = 600 };
  float *x = malloc(N * sizeof *x);
  int where[] = {0, 1, 255, 256, 257, 511, 512, 599};
  for (size_t k = 0; k < sizeof where / sizeof where[0]; k++) {
    for (int i = 0; i < N; i++) x[i] = (float)i - 300.0f;
    x[where[k]] = k % 2 ? NAN : -INFINITY;
    if (where[k] + 100 < N) x[where[k] + 100] = INFINITY;
    int64_t first = -1, bad = f32_rows_nonfinite(x, N, &first);
    cr_expect_eq(bad, where[k] + 100 < N ? 2 : 1, "bad at %d: count %lld", where[k], (long long)bad);
    cr_expect_eq(first, where[k], "bad at %d: first %lld", where[k], (long long)first);
  }
  x[0] = FLT_MAX, x[1] = -FLT_MIN / 2, x[2] = -0.0f;
  for (int i = 3; i < N; i++) x[i] = (float)i;
  int64_t first = -7;
  cr_expect_eq(f32_rows_nonfinite(x, N, &first), 0);
  cr_expect_eq(first, -7);
  free(x);
}
