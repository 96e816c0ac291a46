/* f16_rows.c: array conversions for the dump reader (f16_rows.h). A value is non-finite exactly
 * when its exponent field is all ones, so the check reads the stored bits (one AND + compare per
 * element, vectorisable) instead of the converted float; the exact count and the first position
 * are worked out only in the rare block that has one. */
#include "f16_rows.h"
#include <string.h>
#include "f16.h"
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

enum { F16_EXP = 0x7c00, BF16_EXP = 0x7f80 };
#define F32_EXP 0x7f800000u
/* Elements per any-test in the plain loops: long enough that the test costs nothing, short
 * enough that a block is still in L1 when it has to be scanned again. */
enum { BLOCK = 256 };

/* The non-finite patterns among src[0..n) (exponent field `expo` all ones): their count; the
 * first one's index (+ base) goes to *first unless `had` were counted before this stretch. */
static int64_t count_bad16(const uint16_t *src, int64_t n, uint16_t expo, int64_t base, int64_t had,
                           int64_t *first) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++)
    if ((src[i] & expo) == expo && had + bad++ == 0) *first = base + i;
  return bad;
}

int64_t f16_rows_to_f32_portable(const uint16_t *src, float *dst, int64_t n, int64_t *first) {
  for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32(src[i]);
  return count_bad16(src, n, F16_EXP, 0, 0, first);
}

#if defined(__x86_64__)
/* The scalar reference for the non-finite elements of a stretch the fast loop converted, and
 * their count as count_bad16: vcvtph2ps quiets signalling NaNs (sets the quiet bit), which
 * f16_to_f32 passes through unchanged. */
static int64_t redo_bad_f16(const uint16_t *src, float *dst, int64_t n, int64_t base, int64_t had, int64_t *first) {
  for (int64_t i = 0; i < n; i++)
    if ((src[i] & F16_EXP) == F16_EXP) dst[i] = f16_to_f32(src[i]);
  return count_bad16(src, n, F16_EXP, base, had, first);
}

/* 8 halves per step: vcvtph2ps is exact for every finite half (subnormals become normal floats),
 * and the exponent test on the same 8 raw halves (SSE2) sends the rare step with an Inf or NaN
 * to redo_bad_f16. The < 8 left at the end go through the scalar reference. */
__attribute__((target("f16c,avx"))) static int64_t f16_rows_f16c(const uint16_t *src, float *dst, int64_t n,
                                                                  int64_t *first) {
  const __m128i expo = _mm_set1_epi16((short)F16_EXP);
  int64_t bad = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    if (_mm_movemask_epi8(_mm_cmpeq_epi16(_mm_and_si128(h, expo), expo)))
      bad += redo_bad_f16(src + i, dst + i, 8, i, bad, first);
  }
  for (int64_t j = i; j < n; j++) dst[j] = f16_to_f32(src[j]);
  return bad + count_bad16(src + i, n - i, F16_EXP, i, bad, first);
}
#endif

int f16_rows_have_f16c(void) {
#if defined(__x86_64__)
  /* "avx" is reported only when the OS also saves the YMM registers; F16C is read from CPUID
   * because older clangs do not know __builtin_cpu_supports("f16c"). */
  unsigned a, b, c, d;
  return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
#else
  return 0;
#endif
}

int64_t f16_rows_to_f32(const uint16_t *src, float *dst, int64_t n, int64_t *first) {
#if defined(__x86_64__)
  if (f16_rows_have_f16c()) return f16_rows_f16c(src, dst, n, first);
#endif
  return f16_rows_to_f32_portable(src, dst, n, first);
}

/* bf16 is the top half of a float32: a shift, exact for every pattern (NaN payloads too). The
 * plain loop is there for the compiler to vectorise, the shift and the exponent test together. */
int64_t bf16_rows_to_f32(const uint16_t *src, float *dst, int64_t n, int64_t *first) {
  int64_t bad = 0;
  for (int64_t b = 0; b < n; b += BLOCK) {
    int64_t m = n - b < BLOCK ? n - b : BLOCK;
    int hit = 0;
    for (int64_t i = 0; i < m; i++) {
      uint32_t w = (uint32_t)src[b + i] << 16;
      memcpy(dst + b + i, &w, 4);
      hit |= (src[b + i] & BF16_EXP) == BF16_EXP;
    }
    if (hit) bad += count_bad16(src + b, m, BF16_EXP, b, bad, first);
  }
  return bad;
}

int64_t f32_rows_nonfinite(const float *x, int64_t n, int64_t *first) {
  int64_t bad = 0;
  for (int64_t b = 0; b < n; b += BLOCK) {
    int64_t m = n - b < BLOCK ? n - b : BLOCK;
    int hit = 0;
    for (int64_t i = 0; i < m; i++) {
      uint32_t w;
      memcpy(&w, x + b + i, 4);
      hit |= (w & F32_EXP) == F32_EXP;
    }
    for (int64_t i = 0; hit && i < m; i++) { /* the rare block: count and locate */
      uint32_t w;
      memcpy(&w, x + b + i, 4);
      if ((w & F32_EXP) == F32_EXP && bad++ == 0) *first = b + i;
    }
  }
  return bad;
}
