/* f16_rows: whole arrays of a dump's stored elements (fp16, bf16, fp32) to float32, counting the
 * non-finite ones (NaN/Inf) on the way. The dump reader spent 3/4 of a layer read in the
 * per-element f16_to_f32; these produce the same bits as f16.h's f16_to_f32 / bf16_to_f32 for
 * every input, only faster (F16C on x86-64 where the CPU has it, chosen at run time).
 *
 * Each returns the number of non-finite elements among src[0..n) and, when there is at least
 * one, stores the index of the first in *first (left untouched otherwise). */
#ifndef SQEXP_F16_ROWS_H
#define SQEXP_F16_ROWS_H
#include <stdint.h>

int64_t f16_rows_to_f32(const uint16_t *src, float *dst, int64_t n, int64_t *first);
int64_t bf16_rows_to_f32(const uint16_t *src, float *dst, int64_t n, int64_t *first);
/* float32 storage needs no conversion: only the count (x may be the array read in place). */
int64_t f32_rows_nonfinite(const float *x, int64_t n, int64_t *first);

/* The portable fp16 path (scalar f16_to_f32), which f16_rows_to_f32 falls back to on CPUs
 * without F16C; exported so that the tests can hold both paths to the reference. */
int64_t f16_rows_to_f32_portable(const uint16_t *src, float *dst, int64_t n, int64_t *first);
/* 1 when f16_rows_to_f32 takes the F16C path on this CPU. */
int f16_rows_have_f16c(void);
#endif
