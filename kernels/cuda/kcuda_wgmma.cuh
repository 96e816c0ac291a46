/* kcuda_wgmma: the Hopper warpgroup MMA (wgmma.mma_async, sm_90a) as the fast encoder and
 * k_attn_wg use it: D[64 x N] (+)= A[64 x 16] . B[16 x N], fp16 operands read from shared memory
 * through matrix descriptors, fp32 accumulators in registers. Both operands are K-major (row r of
 * A and row n of B hold their 16 k-values contiguously; B may be MN-major instead, TB = 1, kw_lo)
 * in the 128-byte swizzle layout that TMA's SWIZZLE_128B
 * writes: 8-row atoms of 128-byte rows, the 16-byte unit u of row r stored at unit u ^ (r & 7)
 * (kw_swz). The accumulator layout is the m16n8 one per 8 columns: d[4j + 0..3] hold rows
 * r = 16 (warp % 4) + lane / 4 and r + 8, columns 8 j + 2 (lane % 4) + {0, 1}, as
 * {(r, c), (r, c + 1), (r + 8, c), (r + 8, c + 1)}.
 * The PTX is in the ISA's "Asynchronous Warpgroup Level Matrix Multiply-Accumulate" section. */
#ifndef SQEXP_KCUDA_WGMMA_CUH
#define SQEXP_KCUDA_WGMMA_CUH
#include <stdint.h>

/* Byte offset of element (r, k) (fp16) of a K-major operand of `rows` rows in the 128-byte
 * swizzle layout: k in chunks of 64 (128 bytes), each chunk `rows` x 128 bytes. */
__host__ __device__ __forceinline__ uint32_t kw_swz(int rows, int r, int k) {
  return (uint32_t)((((k >> 6) * rows + r) << 7) + ((((k & 63) >> 3) ^ (r & 7)) << 4) + ((k & 7) << 1));
}

/* The descriptor of a 64- or N-row operand at shared address `addr`, for k-step ks (16 fp16):
 * start address >> 4 (bits 0-13), leading offset 16 B (unused with swizzling, bits 16-29), stride
 * offset 1024 B between 8-row atoms (bits 32-45), 128-byte swizzle (bits 62-63 = 1). The k-step
 * moves 32 bytes inside the 128-byte row (the next 64 k are the next rows x 128 bytes); the
 * hardware applies the XOR on the address bits, so each operand must start 1024-byte aligned.
 * A k-step only adds to the start address field (kw_desc_step): shared addresses are below 2^18,
 * so it never carries out of bits 0-13, and a loop can add constants to the step-0 descriptor. */
__host__ __device__ constexpr uint64_t kw_desc_step(int rows, int ks) {
  return (uint64_t)(((ks >> 2) * rows * 128 + (ks & 3) * 32) >> 4);
}
/* d advanced by a step: in the low word only (no carry, above), so that it is one 32-bit add. */
__device__ __forceinline__ uint64_t kw_desc_add(uint64_t d, uint64_t step) {
  return (d & 0xFFFFFFFF00000000ull) | (uint32_t)((uint32_t)d + (uint32_t)step);
}
/* The step-0 descriptor of the operand at shared address addr. */
__device__ __forceinline__ uint64_t kw_desc(uint32_t addr) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}

/* The same descriptors as two 32-bit words: lo = start address >> 4 | leading offset >> 4 << 16
 * (the only part that moves), hi = stride offset >> 4 | the swizzle mode (KW_HI: 1024 B, 128-byte
 * swizzle). A kernel that keeps lo in a warp-uniform value lets the compiler hold it in a uniform
 * register and advance it with one uniform add per k-step. The leading offset matters only for
 * an MN-major operand (TB = 1: row k of 128 bytes holds 64 consecutive n, i.e. element (k, n) at
 * kw_swz(rows, k, n) of a row-major [rows = K][N] tile): the next 64 n, rows x 128 B (CUTLASS's
 * canonical Swizzle<3,4,3> o ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))); a k-step of 16 is 16 rows. */
#define KW_HI (uint32_t)((1024 >> 4) | (1u << 30))
__device__ __forceinline__ uint32_t kw_lo(uint32_t addr, uint32_t lead_bytes) {
  return ((addr & 0x3FFFF) >> 4) | (lead_bytes >> 4) << 16;
}
__device__ __forceinline__ uint64_t kw_mk(uint32_t lo, uint32_t hi) {
  uint64_t d;
  asm("mov.b64 %0, {%1, %2};" : "=l"(d) : "r"(lo), "r"(hi));
  return d;
}

__device__ __forceinline__ void kw_fence(void) { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void kw_commit(void) { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
/* Wait until at most N committed groups are still in flight. */
template <int N>
__device__ __forceinline__ void kw_wait(void) { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
/* The compiler must not move accesses of these accumulators across the wait (it cannot see that
 * the wgmma writes them asynchronously): an empty asm that "changes" each one. */
template <int N>
__device__ __forceinline__ void kw_fence_regs(float *d) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(d[i])::"memory");
}
/* Generic-proxy writes to shared memory (st.shared) become visible to wgmma's reads. */
__device__ __forceinline__ void kw_fence_proxy(void) { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

/* The accumulator operand lists ("+f"(d[b]) .. "+f"(d[b + n - 1])) of the shapes below. */
#define KW_ACC4(b) "+f"(d[b]), "+f"(d[b + 1]), "+f"(d[b + 2]), "+f"(d[b + 3])
#define KW_ACC8(b) KW_ACC4(b), KW_ACC4(b + 4)
#define KW_ACC16(b) KW_ACC8(b), KW_ACC8(b + 8)
#define KW_ACC32(b) KW_ACC16(b), KW_ACC16(b + 16)
#define KW_ACC64(b) KW_ACC32(b), KW_ACC32(b + 32)

/* D[64 x N] (+)= A . B for N = 128, 64 (the fast encoder), 32, 16 (the attention, k_attn_wg):
 * N / 2 accumulators per thread; accumulate = 0 overwrites d. TB = 1: B is MN-major (kw_lo).
 * KW_MMA(N, accumulator list, operand numbers of da, db, accumulate, TB, accumulator operands)
 * writes kw_mma_nN: the PTX needs the operand numbers as literal text. */
#define KW_MMA(N, DREGS, OA, OB, OP, OT, ACC)                                                            \
  template <int TB = 0>                                                                                \
  __device__ __forceinline__ void kw_mma_n##N(float *d, uint64_t da, uint64_t db, int accumulate) {   \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " OP ", 0;\n"                                        \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32.f16.f16 " DREGS ", " OA ", " OB           \
                 ", p, 1, 1, 0, " OT ";\n}\n"                                                            \
                 : ACC(0)                                                                              \
                 : "l"(da), "l"(db), "r"(accumulate), "n"(TB));                                        \
  }
KW_MMA(128,
       "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
       "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
       "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
       "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}",
       "%64", "%65", "%66", "%67", KW_ACC64)
KW_MMA(64,
       "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
       "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}",
       "%32", "%33", "%34", "%35", KW_ACC32)
KW_MMA(32, "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}", "%16", "%17", "%18", "%19", KW_ACC16)
KW_MMA(16, "{%0,%1,%2,%3,%4,%5,%6,%7}", "%8", "%9", "%10", "%11", KW_ACC8)
#undef KW_MMA

#endif
