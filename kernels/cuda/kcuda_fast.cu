/* kcuda_fast: the fused tensor-core encoder (see kcuda_fast.cuh for the pipeline). Why this
 * shape: at D = 128 the projection is 64 FLOP per input byte, more than fp32 FFMA can feed at
 * HBM speed, so it runs on the fp16 tensor cores; everything else (norm, quantise, pack) stays in
 * registers and shared memory so that each input byte is read from HBM once and only the packed
 * codes are written back.
 * One block per SM, persistent over a contiguous range of tiles of 64 rows: the tiles stream
 * into a ring of STAGES stages (one 2-D TMA copy each, completing on the stage's mbarrier), and
 * NWG warpgroups take the tiles in turn, each a whole tile on its own (its own operand and
 * bit-stream buffers and named barrier) and each refilling the stage it has just read, so one
 * warpgroup's MMA, quantisation and stores overlap the others' loads and arithmetic and no phase
 * waits for the whole block. Per tile a warpgroup: norms and fp16 unit rows into its operand
 * buffer (the 128-byte swizzle layout wgmma reads), refills the stage, issues y = U rot^T
 * (wgmma, fp32 accumulators in registers, kcuda_wgmma.cuh), packs and writes the previous tile
 * while the tensor cores run (each warp its own 16 rows: red.shared into its words, 16-byte
 * stores), waits, and quantises in the registers through the cell tables into chunks of
 * adjacent fields (the rotation's rows are permuted so that a lane's coordinates are adjacent,
 * kf_coord), which the next tile's MMA window packs. The block-wide tables (rotation,
 * cells, per-coordinate parameters) change only at a segment boundary, where all warps meet at a
 * barrier after packing their last tile. */
#include <string.h>
#include <cudaTypedefs.h>
#include "kcuda_fast.cuh"
#include "kcuda_wgmma.cuh"
extern "C" {
#include "cb_cells.h"
}

#define KF_TM 64 /* rows per tile = the wgmma's M */
#define KF_LO_SCALE 2048.0f
#define KF_UCELLS 128 /* the uniform table's entries (>= CB_CELLS(KF_UNI_MAXB) = 65) */
/* Quantisation without a search: the cell tables of src/cb_cells.h (the argument for their
 * exactness is there; tests/test_cb_cells.c checks it on the host with the same functions). */
/* What a coordinate's field holds, and how: its meta word (S.par[i].w as bits), laid out so that
 * KF_LUT's two table parameters take one instruction each (kf_meta_base, kf_meta_hi): 0-11 the
 * offset of its table's last cell in the stacked tables, 12-13 the kind, 14-18 b, 20-31 the
 * offset of its table (b's cells). */
enum { KF_DROP = 0, KF_LUT = 1, KF_SEARCH = 2, KF_HALF = 3 };
__device__ __forceinline__ uint32_t kf_meta_kind(uint32_t meta) { return (meta >> 12) & 3u; }
__device__ __forceinline__ uint32_t kf_meta_last(uint32_t meta) { return (meta & 0xfffu) - (meta >> 20); }
/* How a segment's coordinates are quantised (kf_load_segment): the cell table with the same
 * parameters for every coordinate (tq), the cell table per coordinate (sq), or any kind. As
 * bits (table, same), so that each coordinate can AND its own into the segment's. */
enum { KF_Q_ANY = 0, KF_Q_LUT = 1, KF_Q_UNIFORM = 3 };

/* wgmma's operands must be 1024-byte aligned (kcuda_wgmma.cuh); the carve rounds every buffer. */
__host__ __device__ constexpr size_t kf_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

template <int D, int PASSES>
struct kf_cfg {
  static constexpr int P3 = PASSES == 3;
  static constexpr int NWG = P3 ? 1 : 3;                        /* warpgroups (passes 3: its lo operands take the memory) */
  static constexpr int THREADS = NWG * 128;                     /* the block: its warpgroups */
  static constexpr int REGS = 65536 / THREADS / 8 * 8 > 255 ? 255 : 65536 / THREADS / 8 * 8; /* all of the SM's */
  static constexpr int STAGES = D == 64 ? 6 : P3 ? 2 : 3;       /* input tiles in flight (TMA) */
  static constexpr int V4 = D / 4;                              /* float4 per row */
  static constexpr int NACC = D / 2;                            /* accumulators per thread (m64nD) */
  static constexpr int MAX_CODE = 2 + D;                        /* bytes: fp16 norm + D fields of <= 8 bits */
  static constexpr size_t CW_BYTES = kf_up((size_t)KF_TM * MAX_CODE + 8, 16); /* a tile's bit stream, + 1 word */
  static constexpr size_t STAGE_BYTES = (size_t)KF_TM * D * 4;
  static constexpr size_t R_BYTES = (size_t)D * D * 2;          /* one fp16 rotation, swizzled */
  static constexpr size_t A_BYTES = (size_t)KF_TM * D * 2;      /* one fp16 operand tile, swizzled */
  static constexpr size_t WG_BYTES = A_BYTES * (P3 ? 2 : 1);  /* a warpgroup's operand: hi (and lo) */
  static constexpr size_t TAB_BYTES = CB_CELLS_ALL * 5 + KF_UCELLS * 8 + D * 16 + D / 4 * 16 + D / 2 * 8 +
                                      NWG * KF_TM * 8 + 3 * 16 * 4 + 16 + STAGES * 16;
  static constexpr size_t SMEM = 1024 + STAGES * STAGE_BYTES + R_BYTES * (P3 ? 2 : 1) + NWG * (WG_BYTES + CW_BYTES) +
                                 kf_up(TAB_BYTES, 16);
  static_assert(SMEM <= 232448, "shared memory of one block per SM");
  static_assert(D % 64 == 0, "whole 128-byte swizzle chunks");
  /* Tile j waits on its stage's mbarrier with parity (j / STAGES) & 1, which is only meaningful
   * once the stage's previous tile, j - STAGES, has landed (else the "preceding phase" reads as
   * complete). With NWG | STAGES that tile is the same warpgroup's, already consumed. (NWG 4
   * with 3 stages broke exactly so: the fourth warpgroup read its first stage early.) */
  static_assert(STAGES % NWG == 0, "a warpgroup's stages must be its own");
};

/* The stream offset of a segment's fp16 norm, or -1 when its plan stores none. */
__device__ __forceinline__ int kf_norm_off(const kc_fast_seg *g) { return g->side.normalize ? g->side.norm_off : -1; }

/* The segment of tile t by bisection (the last segment whose first tile is <= t; tiles are in
 * segment order, and empty segments share their successor's tile0). */
__device__ __forceinline__ int kf_seg_find(const kc_fast_seg *segs, int nseg, int64_t t) {
  int lo = 0, hi = nseg - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (segs[mid].tile0 <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

/* The segment of tile t, scanning on from hint (tiles are in segment order). */
__device__ __forceinline__ int kf_seg_of(const kc_fast_seg *segs, int nseg, int64_t t, int hint) {
  int s = hint < 0 ? 0 : hint;
  while (s + 1 < nseg && t >= segs[s + 1].tile0) s++;
  return s;
}

/* The output coordinates' order. The MMA leaves column n = 8 j + 2 q + e (e = 0, 1) in lane q
 * of a quad (kcuda_wgmma.cuh); with the rotation's rows permuted so that column n is coordinate
 * kf_coord(n) = (D / 4) q + 2 j + e, each lane holds D / 4 adjacent coordinates of its rows,
 * whose fields are adjacent in the stream: it joins them into chunks of up to 32 bits in the
 * registers, and the lanes of a quad write disjoint quarters of a row. */
template <int D>
__host__ __device__ constexpr int kf_coord(int n) { return D / 4 * ((n & 7) >> 1) + 2 * (n >> 3) + (n & 1); }

/* The per-coordinate tables (S.par, and the chunk tables S.grp4, S.grp2 per group) hold entry
 * k of each lane's range at 4 k + q, so that a quad's four lanes (ranges D/4 apart) read
 * adjacent entries, not one bank four times. n = entries of the table, q's range = n/4. */
__host__ __device__ constexpr int kf_lane_major(int i, int n) { return i % (n / 4) * 4 + i / (n / 4); }

/* Both maps must be permutations (every coordinate, every table entry exactly once): checked at
 * compile time for the supported D and table sizes. */
template <int N, class F>
constexpr bool kf_is_permutation(F f) {
  bool seen[N] = {};
  for (int i = 0; i < N; i++) {
    const int v = f(i);
    if (v < 0 || v >= N || seen[v]) return false;
    seen[v] = true;
  }
  return true;
}
static_assert(kf_is_permutation<128>([](int n) { return kf_coord<128>(n); }), "kf_coord<128>");
static_assert(kf_is_permutation<64>([](int n) { return kf_coord<64>(n); }), "kf_coord<64>");
static_assert(kf_is_permutation<128>([](int i) { return kf_lane_major(i, 128); }) &&
                  kf_is_permutation<64>([](int i) { return kf_lane_major(i, 64); }) &&
                  kf_is_permutation<32>([](int i) { return kf_lane_major(i, 32); }) &&
                  kf_is_permutation<16>([](int i) { return kf_lane_major(i, 16); }),
              "kf_lane_major (par, grp2 and grp4 at D = 128 and 64)");

/* Fields per chunk (KF_Q_*): 8 of <= 4 bits (uniform), 4 of <= 8 bits (cell tables), 2 of <= 16
 * bits (any kind: fp16 fields). */
template <int MODE>
__host__ __device__ constexpr int kf_group() { return MODE == KF_Q_UNIFORM ? 8 : MODE == KF_Q_LUT ? 4 : 2; }

/* KF_Q_UNIFORM's widest field: 8 fields in a 32-bit chunk. */
#define KF_UNI_MAXB (32 / kf_group<KF_Q_UNIFORM>())
static_assert(CB_CELLS(KF_UNI_MAXB) <= KF_UCELLS, "the uniform table holds the widest uniform field's cells");

/* The block's shared memory, carved once. */
template <int D, int PASSES>
struct kf_smem {
  float *stage;           /* [STAGES][TM][D] input rows (TMA) */
  __half *Rh, *Rl;        /* rotation hi (and lo x 2^11), swizzled K-major: row n = output coordinate n */
  unsigned char *wg;      /* [NWG][WG_BYTES]: a warpgroup's unit rows hi (and lo) */
  uint32_t *cw;           /* [NWG][CW_BYTES / 4]: a warpgroup's bit stream (the previous tile's, during the MMA) */
  float *lut;             /* cells: the boundary inside or +inf ... */
  uint8_t *lutb;          /* ... and #{boundaries below} (two arrays: a lookup of 4 + 1 bytes has
                           * about half the bank conflicts of one of 8) */
  float *ucell;           /* KF_Q_UNIFORM: its b's cells again, at offset 0: [KF_UCELLS] inside, then
                           * [KF_UCELLS] below as uint32 (one address for both lookups) */
  float4 *par;            /* [D] {1/scale, iw/scale, T iw, meta}, in kf_lane_major order */
  uint4 *grp4;            /* [D/4] coordinates 4i .. 4i + 3: {stream offset of field 4i, 2^(offset of field
                           * 4i + k in the group), k = 1, 2, 3} (KF_Q_LUT's chunks) */
  uint2 *grp2;            /* [D/2] the same for pairs 2i, 2i + 1 (KF_Q_ANY's chunks); both kf_lane_major */
  int *uni;               /* KF_Q_UNIFORM: {stream offset of field 0, bits per field} */
  float *rowmul;          /* [NWG][TM] y multiplier: |x| (rotated, not normalised), 1/|x| (identity, normalised) or 1 */
  uint32_t *norm16;       /* [NWG][TM] fp16 bits of |x| */
  float *lut_iw, *lut_Tiw;/* [b] 1 / cell width, T / cell width */
  int *lut_ok;            /* [b] the table is usable */
  int *flags;             /* the segment's quantisation mode (KF_Q_*) */
  uint64_t *full;         /* [STAGES] mbarriers: the stage's rows have landed */
};

template <int D, int PASSES>
__device__ __forceinline__ kf_smem<D, PASSES> kf_carve(unsigned char *raw) {
  typedef kf_cfg<D, PASSES> C;
  kf_smem<D, PASSES> S;
  uint32_t a = (uint32_t)__cvta_generic_to_shared(raw);
  unsigned char *sm = raw + (kf_up(a, 1024) - a);
  S.stage = (float *)sm;
  sm += C::STAGES * C::STAGE_BYTES;
  S.Rh = (__half *)sm;
  S.Rl = (__half *)(sm + C::R_BYTES);
  sm += C::R_BYTES * (C::P3 ? 2 : 1);
  S.wg = sm;
  sm += C::NWG * C::WG_BYTES;
  S.cw = (uint32_t *)sm;
  sm += C::NWG * C::CW_BYTES;
  S.lut = (float *)sm;
  S.ucell = S.lut + CB_CELLS_ALL;
  S.par = (float4 *)(S.ucell + 2 * KF_UCELLS);
  S.grp4 = (uint4 *)(S.par + D);
  S.grp2 = (uint2 *)(S.grp4 + D / 4);
  S.rowmul = (float *)(S.grp2 + D / 2);
  S.norm16 = (uint32_t *)(S.rowmul + C::NWG * KF_TM);
  S.lut_iw = (float *)(S.norm16 + C::NWG * KF_TM);
  S.lut_Tiw = S.lut_iw + 16;
  S.lut_ok = (int *)(S.lut_Tiw + 16);
  S.flags = S.lut_ok + 16;
  S.uni = S.flags + 1;
  S.lutb = (uint8_t *)(S.flags + 4);
  S.full = (uint64_t *)kf_up((size_t)(S.lutb + CB_CELLS_ALL), 8);
  return S;
}

/* Named barriers: 1 for the whole block (segment changes), 2 + w for warpgroup w alone. */
template <int NTHREADS>
__device__ __forceinline__ void kf_bar_sync(int id) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(NTHREADS) : "memory");
}

/* The input ring: one TMA copy per tile that completes on the stage's mbarrier. The warpgroup
 * that consumed a stage refills it (with the tile STAGES further on) as soon as all its threads
 * are past reading it, so no warp waits to produce. */
__device__ __forceinline__ uint32_t kf_smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void kf_bar_init(uint64_t *bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(kf_smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void kf_bar_expect(uint64_t *bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(kf_smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void kf_bar_wait(uint64_t *bar, uint32_t parity) {
  uint32_t a = kf_smem_addr(bar), done = 0;
  while (!done)
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done) : "r"(a), "r"(parity) : "memory");
}
/* Start the copy of tile t's 64 rows into dst: one TMA op on the segment's 2-D tensor map (rows
 * past the segment's end arrive as zeros and count towards the bytes). */
template <int D>
__device__ __forceinline__ void kf_issue_tile(const kc_fast_seg *g, int64_t t, float *dst, uint64_t *bar) {
  int row0 = (int)((t - g->tile0) * KF_TM);
  kf_bar_expect(bar, (uint32_t)(KF_TM * D * 4));
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
               ::"r"(kf_smem_addr(dst)), "l"(&g->tmap), "r"(0), "r"(row0), "r"(kf_smem_addr(bar)) : "memory");
}

/* Stage st is free again (its warpgroup is past reading tile t): start tile t + STAGES (whose
 * segment is hint, t's, or a later one: the scan is short). */
template <int D, int PASSES>
__device__ __forceinline__ void kf_refill(const kc_fast_seg *segs, int nseg, int hint, int64_t t, int st, int64_t t_end,
                                          const kf_smem<D, PASSES> &S) {
  typedef kf_cfg<D, PASSES> C;
  const int64_t tn = t + C::STAGES;
  if (tn >= t_end) return;
  kw_fence_proxy(); /* the generic reads of the stage before the async-proxy write */
  kf_issue_tile<D>(&segs[kf_seg_of(segs, nseg, tn, hint)], tn, S.stage + (size_t)st * KF_TM * D, &S.full[st]);
}

/* The codebook's cell tables (cb_cells.h) from the family's boundaries bnd ([b][256], global):
 * warp (b-1) mod nwarps finds T for b bits (its lanes check the boundaries of each attempt), then
 * all warps fill the cells. */
template <int D, int PASSES>
__device__ void kf_build_lut(const float *bnd, const kf_smem<D, PASSES> &S) {
  typedef kf_cfg<D, PASSES> C;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  for (int b = warp + 1; b <= CB_MAX_BITS; b += C::THREADS / 32) { /* one warp (4 with passes 3) may do several */
    int nb = (1 << b) - 1, ok = 0;
    const float *bd = bnd + b * 256;
    float iw = 0.0f, Tiw = 0.0f;
    for (int att = 0; att < CB_CELLS_TRIES && !ok; att++) {
      cb_cells_try(bd, b, att, &iw, &Tiw);
      int bad = 0;
      for (int k = lane; k < nb; k += 32) bad |= cb_cells_bad(bd, k, iw, Tiw);
      ok = !__any_sync(0xffffffffu, bad);
    }
    if (lane == 0) {
      S.lut_iw[b] = iw;
      S.lut_Tiw[b] = Tiw;
      S.lut_ok[b] = ok;
    }
  }
  kf_bar_sync<C::THREADS>(1);
  for (int b = 1; b <= CB_MAX_BITS; b++) {
    if (!S.lut_ok[b]) continue;
    for (int c = tid; c < CB_CELLS(b); c += C::THREADS) {
      float inside;
      unsigned below;
      cb_cells_entry(bnd + b * 256, b, S.lut_iw[b], S.lut_Tiw[b], c, &inside, &below);
      S.lut[CB_CELLS_OFF(b) + c] = inside;
      S.lutb[CB_CELLS_OFF(b) + c] = (uint8_t)below;
    }
  }
}

/* The multiplier that puts a field sh bits into its chunk (0 where no chunk reaches: sh >= 32
 * only in groups that their mode does not use). */
__device__ __forceinline__ uint32_t kf_mul(int sh) { return sh < 32 ? 1u << sh : 0u; }

/* A new segment (the whole block): its rotation (swizzled for wgmma), codebook tables and
 * per-coordinate parameters. Returns (in every thread) the segment's quantisation mode. */
template <int D, int PASSES>
__device__ int kf_load_segment(const kc_fast_seg *g, const float *cb_boundary, const kf_smem<D, PASSES> &S) {
  typedef kf_cfg<D, PASSES> C;
  const int tid = threadIdx.x;
  kf_bar_sync<C::THREADS>(1); /* the previous segment's tables are no longer read */
  if (g->rh) /* B's row n is the rotation's row kf_coord(n) */
    for (int q = tid; q < D * D / 8; q += C::THREADS) {
      int n = q / (D / 8), k8 = (q % (D / 8)) * 8, src = kf_coord<D>(n) * D + k8;
      uint32_t off = kw_swz(D, n, k8);
      *(uint4 *)((unsigned char *)S.Rh + off) = *(const uint4 *)(g->rh + src);
      if (C::P3) *(uint4 *)((unsigned char *)S.Rl + off) = *(const uint4 *)(g->rl + src);
    }
  if (tid == 0) *S.flags = KF_Q_UNIFORM;
  kw_fence_proxy(); /* the rotation is read by wgmma */
  kf_bar_sync<C::THREADS>(1);
  kf_build_lut(cb_boundary + g->side.family * (CB_MAX_BITS + 1) * 256, S);
  kf_bar_sync<C::THREADS>(1);
  const int b0 = g->side.bits[0];
  if (b0 >= 1 && b0 <= KF_UNI_MAXB && tid < CB_CELLS(b0)) { /* the uniform table (used only if the segment is) */
    S.ucell[tid] = S.lut[CB_CELLS_OFF(b0) + tid];
    ((uint32_t *)S.ucell)[KF_UCELLS + tid] = S.lutb[CB_CELLS_OFF(b0) + tid];
  }
  if (tid < D) {
    int b = g->side.bits[tid], q = b >= 1 && b <= CB_MAX_BITS;
    int kind = b == 0 ? KF_DROP : b == PLAN_BITS_FP16 ? KF_HALF : q && S.lut_ok[b] ? KF_LUT : KF_SEARCH;
    float qis = q ? 1.0f / g->side.scale[tid] : 0.0f, iw = kind == KF_LUT ? S.lut_iw[b] : 0.0f;
    uint32_t off = kind == KF_LUT ? (uint32_t)CB_CELLS_OFF(b) : 0u, last = kind == KF_LUT ? (uint32_t)CB_CELLS(b) - 1 : 0u;
    uint32_t meta = (off + last) | (uint32_t)kind << 12 | (uint32_t)b << 14 | off << 20;
    S.par[kf_lane_major(tid, D)] =
        make_float4(qis, qis * iw, kind == KF_LUT ? S.lut_Tiw[b] : 0.0f, __uint_as_float(meta));
  }
  /* the chunks' offsets and multipliers (fields are adjacent in coordinate order, kc_side_of) */
  const int32_t *bp = g->side.bitpos;
  if (tid < D / 4) {
    const int32_t *f = bp + 4 * tid;
    S.grp4[kf_lane_major(tid, D / 4)] =
        make_uint4((uint32_t)f[0], kf_mul(f[1] - f[0]), kf_mul(f[2] - f[0]), kf_mul(f[3] - f[0]));
  }
  if (tid < D / 2) S.grp2[kf_lane_major(tid, D / 2)] = make_uint2((uint32_t)bp[2 * tid], kf_mul(bp[2 * tid + 1] - bp[2 * tid]));
  if (tid == 0) S.uni[0] = bp[0], S.uni[1] = b0;
  kf_bar_sync<C::THREADS>(1);
  if (tid < D) { /* KF_Q_UNIFORM: every field the same, of <= KF_UNI_MAXB bits */
    float4 p = S.par[tid], p0 = S.par[0];
    int same = p.x == p0.x && p.y == p0.y && p.z == p0.z && __float_as_uint(p.w) == __float_as_uint(p0.w) &&
               b0 <= KF_UNI_MAXB;
    if (kf_meta_kind(__float_as_uint(p.w)) != KF_LUT) atomicAnd(S.flags, 0);
    else if (!same) atomicAnd(S.flags, KF_Q_LUT);
  }
  kf_bar_sync<C::THREADS>(1);
  return *S.flags;
}

/* |x| and 1/|x| from the sum of squares without sqrtf's and the division's special-case branches
 * (one MUFU.RSQ; a Newton step takes |x| to within about an ulp of sqrtf's; 1/|x| is the rsqrt's,
 * ~2 ulp, far inside the fp16 rounding of the unit row it scales). Rows with ss < 2^-100 (|x| <
 * 1e-15, far below any activation) count as zero rows: u = 0, |x| = 0. */
__device__ __forceinline__ void kf_norm(float ss, float *nrm, float *inv) {
  float rs;
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(rs) : "f"(ss));
  const float n0 = ss * rs;
  const bool pos = ss >= 0x1p-100f;
  *nrm = pos ? fmaf(fmaf(-n0, n0, ss), 0.5f * rs, n0) : 0.0f;
  *inv = pos ? rs : 0.0f;
}

/* A: norms (fp32: the norm is stored in fp16) and the unit rows in fp16 (hi, and lo for passes
 * 3) into the warpgroup's operand buffer. Eight adjacent lanes hold a row (float4 f + 8 m). */
template <int D, int PASSES>
__device__ __forceinline__ void kf_prep_rows(const float *__restrict__ X, int normalize, int has_rot,
                                             unsigned char *__restrict__ A, float *rowmul, uint32_t *norm16) {
  typedef kf_cfg<D, PASSES> C;
  constexpr int NR = KF_TM / 16, NM = C::V4 / 8;
  const int wt = threadIdx.x & 127, f = wt & 7;
  /* Lanes of odd rows take the row's float4s in rotated order (mm), so that the four rows of a
   * warp's store split over both halves of the 128-byte swizzle row: 2 wavefronts, not 4. */
  const int rot = (wt >> 3) & 1;
  float4 v[NR][NM]; /* every load first, so that they are in flight together */
#pragma unroll
  for (int rr = 0; rr < NR; rr++)
#pragma unroll
    for (int m = 0; m < NM; m++)
      v[rr][m] = *(const float4 *)(X + (rr * 16 + (wt >> 3)) * D + 4 * (f + 8 * ((m + rot) % NM)));
#pragma unroll
  for (int rr = 0; rr < NR; rr++) {
    const int row = rr * 16 + (wt >> 3);
    float ss = 0.0f;
#pragma unroll
    for (int m = 0; m < NM; m++)
      ss += v[rr][m].x * v[rr][m].x + v[rr][m].y * v[rr][m].y + v[rr][m].z * v[rr][m].z + v[rr][m].w * v[rr][m].w;
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    float nrm, inv;
    kf_norm(ss, &nrm, &inv);
    if (f == 0) {
      rowmul[row] = has_rot ? (normalize ? 1.0f : nrm) : (normalize ? inv : 1.0f);
      norm16[row] = __half_as_ushort(__float2half_rn(nrm));
    }
    if (!has_rot) continue; /* the identity reads the staged rows itself */
#pragma unroll
    for (int m = 0; m < NM; m++) {
      float2 u01 = make_float2(v[rr][m].x * inv, v[rr][m].y * inv), u23 = make_float2(v[rr][m].z * inv, v[rr][m].w * inv);
      __half2 h01 = __float22half2_rn(u01), h23 = __float22half2_rn(u23);
      uint32_t off = kw_swz(KF_TM, row, 4 * (f + 8 * ((m + rot) % NM)));
      *(uint2 *)(A + off) = make_uint2(*(uint32_t *)&h01, *(uint32_t *)&h23);
      if (PASSES == 3) {
        float2 f01 = __half22float2(h01), f23 = __half22float2(h23);
        __half2 l01 = __float22half2_rn(make_float2((u01.x - f01.x) * KF_LO_SCALE, (u01.y - f01.y) * KF_LO_SCALE));
        __half2 l23 = __float22half2_rn(make_float2((u23.x - f23.x) * KF_LO_SCALE, (u23.y - f23.y) * KF_LO_SCALE));
        *(uint2 *)(A + C::A_BYTES + off) = make_uint2(*(uint32_t *)&l01, *(uint32_t *)&l23);
      }
    }
  }
}

/* B: y = U rot^T for the warpgroup's 64 rows, all D columns, on the tensor cores (wgmma, fp32
 * accumulation; passes 3 adds (U_lo rot_hi + U_hi rot_lo) / 2^11 from a second accumulator). */
template <int D>
__device__ __forceinline__ void kf_mma(float *d, uint64_t da, uint64_t db, int acc) {
  if constexpr (D == 128) kw_mma_n128(d, da, db, acc);
  else kw_mma_n64(d, da, db, acc);
}
/* d (+)= A . B^T over all D / 16 k-steps, A (64 rows) and B (D rows) given by their step-0
 * descriptors: a step's descriptor is the first's plus a constant (kw_desc_add). */
template <int D>
__device__ __forceinline__ void kf_mma_all(float *d, uint64_t a, uint64_t b, bool accumulate) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ks++)
    kf_mma<D>(d, kw_desc_add(a, kw_desc_step(KF_TM, ks)), kw_desc_add(b, kw_desc_step(D, ks)), accumulate || ks > 0);
}
template <int D, int PASSES>
__device__ __forceinline__ void kf_project_issue(const unsigned char *A, const kf_smem<D, PASSES> &S, float *acc,
                                                 float *cor) {
  typedef kf_cfg<D, PASSES> C;
  const uint64_t ah = kw_desc(kf_smem_addr(A)), rh = kw_desc(kf_smem_addr(S.Rh));
  kw_fence();
  kf_mma_all<D>(acc, ah, rh, false);
  if constexpr (PASSES == 3) {
    const uint64_t al = kw_desc(kf_smem_addr(A + C::A_BYTES)), rl = kw_desc(kf_smem_addr(S.Rl));
    kf_mma_all<D>(cor, al, rh, false);
    kf_mma_all<D>(cor, ah, rl, true);
  }
  kw_commit();
}
/* The MMAs are done: y in acc (plus the lo terms' correction for passes 3). */
template <int D, int PASSES>
__device__ __forceinline__ void kf_project_wait(float *acc, float *cor) {
  typedef kf_cfg<D, PASSES> C;
  kw_wait<0>();
  kw_fence_regs<C::NACC>(acc);
  if constexpr (PASSES == 3) {
    kw_fence_regs<C::NACC>(cor);
#pragma unroll
    for (int i = 0; i < C::NACC; i++) acc[i] += cor[i] * (1.0f / KF_LO_SCALE);
  }
}

/* B without a rotation: y is the staged row itself (scaled by rowmul when quantised), in the
 * MMA's layout and coordinate order (kf_coord). */
template <int D>
__device__ __forceinline__ void kf_identity(const float *X, int ra, int q, float *acc) {
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    int c = kf_coord<D>(8 * j + 2 * q);
    float2 xa = *(const float2 *)(X + ra * D + c), xb = *(const float2 *)(X + (ra + 8) * D + c);
    acc[4 * j] = xa.x, acc[4 * j + 1] = xa.y, acc[4 * j + 2] = xb.x, acc[4 * j + 3] = xb.y;
  }
}

/* The field of y through the cell table (cb_cells.h): cell = floor(y (iw / scale) + T iw + 1/2)
 * clamped to the table, cb_cells_index's arithmetic with the table's offset folded into its
 * subtraction (`base` = the offset - the bits of 2^23) and clamp, so that c indexes the stacked
 * tables directly (the u8 lookup is then [c + the table's address]); hi = the offset
 * of the table's last cell. The index is below + (t > inside) with t = y / scale: the sign bit of
 * inside - y (1/scale) from one FFMA. That rounds once where t > inside rounds the product
 * first: they differ only when fl(y (1/scale)) equals the boundary exactly while the product is
 * above it (then this is the exact answer for the product). */
__device__ __forceinline__ uint32_t kf_q_cell(float y, float qis, float qis_iw, float Tiw, uint32_t base, uint32_t hi,
                                              const float *lut, const uint8_t *lutb) {
  const uint32_t c = min(__float_as_uint(__fadd_rd(fmaxf(fmaf(y, qis_iw, Tiw), 0.0f), 8388608.0f)) + base, hi);
  return lutb[c] + (__float_as_uint(fmaf(-y, qis, lut[c])) >> 31);
}
/* KF_Q_UNIFORM's lookup: the same with the segment's table at offset 0 of ucell, so that the cell
 * is cb_cells_index's itself, and below beside inside, so that both loads take one address. */
__device__ __forceinline__ uint32_t kf_q_cellu(float y, float qis, float qis_iw, float Tiw, uint32_t last,
                                               const float *ucell) {
  const uint32_t c = cb_cells_index(fmaf(y, qis_iw, Tiw), last);
  return ((const uint32_t *)ucell)[c + KF_UCELLS] + (__float_as_uint(fmaf(-y, qis, ucell[c])) >> 31);
}
/* The cell table parameters of a coordinate from its meta word (kf_load_segment). */
__device__ __forceinline__ uint32_t kf_meta_base(uint32_t meta) { return (meta >> 20) - 0x4B000000u; }
__device__ __forceinline__ uint32_t kf_meta_hi(uint32_t meta) { return meta & 0xfffu; }
__device__ __forceinline__ uint32_t kf_q_lut(float y, float4 p, const float *lut, const uint8_t *lutb) {
  const uint32_t meta = __float_as_uint(p.w);
  return kf_q_cell(y, p.x, p.y, p.z, kf_meta_base(meta), kf_meta_hi(meta), lut, lutb);
}
/* Any field kind: dropped, fp16, cell table, or the search. */
__device__ __forceinline__ uint32_t kf_q_any(float y, float4 p, const float *lut, const uint8_t *lutb,
                                             const float *bnd) {
  uint32_t meta = __float_as_uint(p.w), kind = kf_meta_kind(meta);
  if (kind == KF_LUT) return kf_q_lut(y, p, lut, lutb);
  if (kind == KF_DROP) return 0u;
  if (kind == KF_HALF) return __half_as_ushort(__float2half_rn(y));
  int b = (int)((meta >> 14) & 31u);
  return (uint32_t)cb_quantize(bnd + b * 256, b, y * p.x);
}

/* OR a chunk of <= 32 bits (bit 0 first) into the stream at bit `pos`. Unconditional (ORing 0
 * is harmless; rows past the tile's end land in words that are not written out) because ptxas
 * wraps a conditional atomic in a divergent branch (BSSY/BRA/BSYNC), which costs more. */
__device__ __forceinline__ void kf_or32(uint32_t *cw, int pos, uint32_t chunk) {
  uint32_t a = kf_smem_addr(cw) + 4u * (uint32_t)(pos >> 5);
  int sh = pos & 31;
  asm volatile("red.shared.or.b32 [%0], %1;\n" ::"r"(a), "r"(chunk << sh) : "memory");
  asm volatile("red.shared.or.b32 [%0], %1;\n" ::"r"(a + 4u), "r"(__funnelshift_l(chunk, 0u, sh)) : "memory");
}

/* C1: quantise this thread's coordinates (as the MMA left them: rows ra, ra + 8, coordinates
 * (D / 4) q + 2 j + {0, 1} in acc[4 j ..], kf_coord) and join each row's fields into chunks of G
 * adjacent fields (kf_group: <= 32 bits), ch[g] for row ra and ch[NCH + g] for ra + 8, the
 * field k of a chunk times its multiplier 2^(offset in the chunk) (the fields do not overlap:
 * + is |). No stores here, so the compiler can keep several columns' table lookups in flight;
 * MODE is a template argument so that the loop has no branch; without SCALE the row multipliers
 * are 1 (rotated, normalised rows) and are not applied. PROBE bit 2 (bench) leaves the
 * quantisation out. */
template <int D, int PASSES, int PROBE, int MODE, bool SCALE>
__device__ __forceinline__ void kf_quantise(const kf_smem<D, PASSES> &S, const float *bnd, const float *acc, int q,
                                            float ma, float mb, uint32_t *ch) {
  constexpr int QC = D / 4, G = kf_group<MODE>(), NCH = QC / G;
  const float *__restrict__ lut = S.lut;
  const uint8_t *__restrict__ lutb = S.lutb;
  const float4 *__restrict__ par = S.par;
  const float4 pu = par[0]; /* KF_Q_UNIFORM: every coordinate's parameters */
  const uint32_t lastu = kf_meta_last(__float_as_uint(pu.w));
  const float *__restrict__ ucell = S.ucell;
  uint32_t mu[G]; /* KF_Q_UNIFORM: 2^(k b) */
  if (MODE == KF_Q_UNIFORM)
#pragma unroll
    for (int k = 0; k < G; k++) mu[k] = 1u << (k * S.uni[1]);
  uint4 gm = make_uint4(0u, 0u, 0u, 0u); /* the chunk's multipliers (KF_Q_LUT, KF_Q_ANY) */
#pragma unroll
  for (int j = 0; j < D / 8; j++) {
    const int g = 2 * j / G, k = 2 * j % G; /* acc[4 j] is coordinate QC q + 2 j, field k of chunk g */
    const float ya0 = SCALE ? acc[4 * j] * ma : acc[4 * j], ya1 = SCALE ? acc[4 * j + 1] * ma : acc[4 * j + 1];
    const float yb0 = SCALE ? acc[4 * j + 2] * mb : acc[4 * j + 2], yb1 = SCALE ? acc[4 * j + 3] * mb : acc[4 * j + 3];
    uint32_t a0, a1, b0, b1, m0, m1;
    if (PROBE & 2) {
      a0 = __float_as_uint(ya0) >> 31 | 1u, a1 = __float_as_uint(ya1) >> 31 | 1u;
      b0 = __float_as_uint(yb0) >> 31 | 1u, b1 = __float_as_uint(yb1) >> 31 | 1u;
    } else if (MODE == KF_Q_UNIFORM) {
      a0 = kf_q_cellu(ya0, pu.x, pu.y, pu.z, lastu, ucell), a1 = kf_q_cellu(ya1, pu.x, pu.y, pu.z, lastu, ucell);
      b0 = kf_q_cellu(yb0, pu.x, pu.y, pu.z, lastu, ucell), b1 = kf_q_cellu(yb1, pu.x, pu.y, pu.z, lastu, ucell);
    } else {
      const float4 p0 = par[8 * j + q], p1 = par[8 * j + 4 + q]; /* its two coordinates (kf_lane_major) */
      if (MODE == KF_Q_LUT) {
        a0 = kf_q_lut(ya0, p0, lut, lutb), a1 = kf_q_lut(ya1, p1, lut, lutb);
        b0 = kf_q_lut(yb0, p0, lut, lutb), b1 = kf_q_lut(yb1, p1, lut, lutb);
      } else {
        a0 = kf_q_any(ya0, p0, lut, lutb, bnd), a1 = kf_q_any(ya1, p1, lut, lutb, bnd);
        b0 = kf_q_any(yb0, p0, lut, lutb, bnd), b1 = kf_q_any(yb1, p1, lut, lutb, bnd);
      }
    }
    if (MODE == KF_Q_UNIFORM) m0 = mu[k], m1 = mu[k + 1];
    else {
      if (k == 0) {
        if (MODE == KF_Q_LUT) gm = S.grp4[4 * g + q]; /* the lane's group g (kf_lane_major) */
        else gm = make_uint4(0u, S.grp2[4 * g + q].y, 0u, 0u);
      }
      m0 = k == 0 ? 1u : gm.z, m1 = k == 0 ? gm.y : gm.w;
    }
    if (k == 0) ch[g] = a0 + a1 * m1, ch[NCH + g] = b0 + b1 * m1;
    else ch[g] += a0 * m0 + a1 * m1, ch[NCH + g] += b0 * m0 + b1 * m1;
  }
}

/* C2: OR the chunks into the bit stream (rows past the tile's end too: those words are not
 * written out). One instruction's lanes write 8 rows x 4 disjoint quarters of a row. PROBE bit 8
 * (bench) leaves the packing out. */
template <int D, int PASSES, int PROBE, int MODE>
__device__ __forceinline__ void kf_pack(const kf_smem<D, PASSES> &S, const uint32_t *ch, int ra, int q, int code_bits,
                                        uint32_t *cw) {
  constexpr int QC = D / 4, G = kf_group<MODE>(), NCH = QC / G;
  const int p1 = ra * code_bits, p2 = (ra + 8) * code_bits;
  const int b = S.uni[1], posu = S.uni[0] + QC * q * b; /* KF_Q_UNIFORM: the lane's first field */
#pragma unroll
  for (int g = 0; g < NCH; g++) {
    const int pos = MODE == KF_Q_UNIFORM ? posu + G * g * b
                    : MODE == KF_Q_LUT   ? (int)S.grp4[4 * g + q].x /* kf_lane_major */
                                         : (int)S.grp2[4 * g + q].x;
    if (PROBE & 8) { /* keep the chunks live */
      if ((ch[g] ^ ch[NCH + g]) == 0xdeadbeefu) cw[0] = 1u;
      continue;
    }
    kf_or32(cw, p1 + pos, ch[g]);
    kf_or32(cw, p2 + pos, ch[NCH + g]);
  }
}

/* C: what a piece of tiles is compiled for: the segment's quantisation mode, whether it has a
 * rotation, and whether the row multipliers apply (not for rotated, normalised rows: they are
 * 1). Every branch between issuing the MMA and waiting for it must be one the compiler can
 * resolve, or ptxas serialises the wgmma (C7518), so these are template arguments. */
template <int MODE_, bool ROT_, bool SCALE_>
struct kf_kind {
  static constexpr int MODE = MODE_;
  static constexpr bool ROT = ROT_, SCALE = SCALE_;
};

/* D: a warp's 16 rows are contiguous in codes (16-byte aligned, kc_fast_setup), and in the
 * stream they take whole words: the warp writes its own nbytes with 16-byte stores. Fixed trip
 * counts and predicated stores, no branches: this runs while the MMA is in flight. */
template <int D>
__device__ __forceinline__ void kf_write_rows(const uint32_t *cw, uint8_t *dst, int nbytes, int lane) {
  constexpr int MAXV = (16 * (2 + D) + 15) / 16; /* uint4 of 16 rows */
  const int nv = nbytes >> 4;
#pragma unroll
  for (int k = 0; k < (MAXV + 31) / 32; k++) {
    const int v = lane + 32 * k;
    if (v < nv) __stcs((uint4 *)dst + v, ((const uint4 *)cw)[v]);
  }
  const int tb = (nv << 4) + lane; /* the tail of a short last tile */
  if (tb < nbytes) dst[tb] = ((const uint8_t *)cw)[tb];
}

/* A warpgroup's tile whose fields (the chunks, in registers) are still to be packed and written:
 * that happens while the tensor cores project the next tile. Per warp: its rows 16 w4 .. + 15. */
struct kf_pend {
  uint8_t *dst;  /* the warp's rows in codes */
  int nbytes;    /* of them (0: nothing pending) */
  uint32_t norm; /* lane < 16: fp16 |x| of row 16 w4 + lane */
};

/* What a tile needs of its segment, read once per piece (the segment table is in global memory,
 * and loads across the tile's barriers and asm are not hoisted). */
struct kf_segv {
  uint8_t *codes;
  int64_t tile0, n;
  int code_bytes, norm_off, normalize, index;
};

/* C2 + D of the pending tile, by each warp alone: its 16 rows take whole words of the stream
 * (a row has 8 code_bytes bits), so it zeroes, ORs and writes its own words. (An OR past a
 * row's end into the next warp's first word carries only zeros.) Straight-line code: it runs
 * between the MMA's issue and its wait. Without a pending tile (nbytes 0: a warpgroup's first
 * tile of a piece) it ORs the zeroed chunks and writes nothing. */
template <int D, int PASSES, int PROBE, class K>
__device__ __forceinline__ void kf_flush(const kf_pend &pd, const kf_segv &sv, const uint32_t *ch,
                                         const kf_smem<D, PASSES> &S) {
  typedef kf_cfg<D, PASSES> C;
  const int code_bytes = sv.code_bytes, norm_off = sv.norm_off;
  const int wg = threadIdx.x >> 7, w4 = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int cb = code_bytes * 8, wpw = 4 * code_bytes; /* stream bits per row, words per warp */
  uint32_t *cw = S.cw + (size_t)wg * (C::CW_BYTES / 4), *cww = cw + w4 * wpw;
  __syncwarp(); /* the warp's previous write has read cww */
#pragma unroll
  for (int k = 0; k < (C::MAX_CODE + 31) / 32; k++) /* 16 rows = code_bytes uint4 (16-byte aligned) */
    if (lane + 32 * k < code_bytes) ((uint4 *)cww)[lane + 32 * k] = make_uint4(0u, 0u, 0u, 0u);
  __syncwarp();
  kf_pack<D, PASSES, PROBE, K::MODE>(S, ch, 16 * w4 + (lane >> 2), lane & 3, cb, cw);
  if (!(PROBE & 8)) { /* lanes 0..15: the norms of rows 16 w4 + lane; the others OR zeros */
    const int no = norm_off >= 0 ? norm_off : 0;
    kf_or32(cw, (16 * w4 + (lane & 15)) * cb + no, lane < 16 && norm_off >= 0 ? pd.norm : 0u);
  }
  __syncwarp();
  if (!(PROBE & 4)) kf_write_rows<D>(cww, pd.dst, pd.nbytes, lane);
}

/* Where a warpgroup's tile sits in the ring: its stage and the mbarrier parity it waits for
 * (tile i: i % STAGES, (i / STAGES) & 1), advanced NWG tiles at a time without a division
 * (NWG <= STAGES: a step wraps at most once). */
struct kf_ring {
  int st;
  uint32_t ph;
};
template <int STAGES, int NWG>
__device__ __forceinline__ void kf_ring_next(kf_ring &r) {
  r.st += NWG;
  const bool wrap = r.st >= STAGES;
  r.st -= wrap ? STAGES : 0;
  r.ph ^= wrap ? 1u : 0u;
}

/* One tile t (at ring position rg) by warpgroup wg: norms and operand, the MMA issued, the
 * previous tile's packing and writing (pd, ch) while it runs, then this tile's quantisation into
 * ch and pd. */
template <int D, int PASSES, int PROBE, class K>
__device__ __forceinline__ void kf_tile(const kc_fast_seg *segs, int nseg, const kf_segv &sv, int64_t t, kf_ring rg,
                                        int64_t t_end, const float *bnd, const kf_smem<D, PASSES> &S, kf_pend &pd,
                                        uint32_t *ch) {
  typedef kf_cfg<D, PASSES> C;
  const int wg = threadIdx.x >> 7, w4 = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int64_t row0 = (t - sv.tile0) * KF_TM;
  const int nrows = (int)min((int64_t)KF_TM, sv.n - row0);
  const float *X = S.stage + (size_t)rg.st * KF_TM * D;
  unsigned char *A = S.wg + (size_t)wg * C::WG_BYTES;
  float *rowmul = S.rowmul + wg * KF_TM;
  uint32_t *norm16 = S.norm16 + wg * KF_TM;
  kf_bar_sync<128>(2 + wg); /* every warp's MMA of the previous tile is complete: U may be rewritten */
  kf_bar_wait(&S.full[rg.st], rg.ph);
  kf_prep_rows<D, PASSES>(X, sv.normalize, K::ROT, A, rowmul, norm16);
  kw_fence_proxy();
  kf_bar_sync<128>(2 + wg);
  const int ra = 16 * w4 + (lane >> 2), q = lane & 3;
  float acc[C::NACC], cor[PASSES == 3 ? C::NACC : 1];
  constexpr bool MMA = K::ROT && !(PROBE & 1);
  if constexpr (K::ROT) {
    if ((threadIdx.x & 127) == 0) kf_refill<D>(segs, nseg, sv.index, t, rg.st, t_end, S);
  } else {
    kf_identity<D>(X, ra, q, acc);
    kf_bar_sync<128>(2 + wg); /* X is read */
    if ((threadIdx.x & 127) == 0) kf_refill<D>(segs, nseg, sv.index, t, rg.st, t_end, S);
  }
  if constexpr (MMA) {
    kf_project_issue<D, PASSES>(A, S, acc, cor);
  } else if constexpr (K::ROT) {
#pragma unroll
    for (int k = 0; k < C::NACC; k++) acc[k] = 0.0f;
  }
  kf_flush<D, PASSES, PROBE, K>(pd, sv, ch, S); /* while the MMA runs */
  if constexpr (MMA) kf_project_wait<D, PASSES>(acc, cor);
  kf_quantise<D, PASSES, PROBE, K::MODE, K::SCALE>(S, bnd, acc, q, rowmul[ra], rowmul[ra + 8], ch);
  const int wrows = min(16, nrows - 16 * w4);
  pd.dst = sv.codes + (row0 + 16 * w4) * sv.code_bytes;
  pd.nbytes = wrows > 0 ? wrows * sv.code_bytes : 0;
  pd.norm = norm16[16 * w4 + (lane & 15)];
}

/* Warpgroup wg's tiles of a piece (first, first + NWG, ... < piece_end), packing each tile while
 * the next one's MMA runs, and the last one before the piece ends (the next segment's tables
 * replace these). */
template <int D, int PASSES, int PROBE, class K>
__device__ __forceinline__ void kf_piece(const kc_fast_seg *segs, int nseg, const kc_fast_seg *g, int64_t first,
                                      int64_t piece_end, int64_t t_begin, int64_t t_end, const float *bnd,
                                      const kf_smem<D, PASSES> &S) {
  typedef kf_cfg<D, PASSES> C;
  const kf_segv sv = {g->codes, g->tile0, g->n, g->side.code_bytes, kf_norm_off(g), g->side.normalize,
                      (int)(g - segs)};
  const int64_t i0 = first - t_begin; /* the tile's index in the block's range: its ring position */
  kf_ring rg = {(int)(i0 % C::STAGES), (uint32_t)((i0 / C::STAGES) & 1)};
  constexpr int NCH2 = 2 * D / 4 / kf_group<K::MODE>();
  uint32_t ch[NCH2]; /* chunks of the warpgroup's pending tile (zeros before the first: a piece
                      * without a tile for this warpgroup flushes them, writing nothing) */
#pragma unroll
  for (int k = 0; k < NCH2; k++) ch[k] = 0u;
  kf_pend pd = {g->codes, 0, 0u};
  for (int64_t u = first; u < piece_end; u += C::NWG) {
    kf_tile<D, PASSES, PROBE, K>(segs, nseg, sv, u, rg, t_end, bnd, S, pd, ch);
    kf_ring_next<C::STAGES, C::NWG>(rg);
  }
  kf_flush<D, PASSES, PROBE, K>(pd, sv, ch, S);
}

/* The block's work: per piece of its range inside one segment, load the segment's tables
 * (all warps), then warpgroup w takes the piece's tiles i = w, w + NWG, ... of the range,
 * in the code compiled for the segment's kind. */
template <int D, int PASSES, int PROBE>
__device__ void kf_consume(const kc_fast_seg *segs, int nseg, int64_t ntiles, const float *cb_boundary,
                           int64_t t_begin, int64_t t_end, const kf_smem<D, PASSES> &S) {
  typedef kf_cfg<D, PASSES> C;
  const int wg = threadIdx.x >> 7;
  int s = kf_seg_find(segs, nseg, t_begin);
  for (int64_t t = t_begin; t < t_end;) {
    s = kf_seg_of(segs, nseg, t, s);
    const kc_fast_seg *g = &segs[s];
    const int64_t piece_end = min(t_end, s + 1 < nseg ? segs[s + 1].tile0 : ntiles);
    const int mode = kf_load_segment(g, cb_boundary, S);
    const float *bnd = cb_boundary + g->side.family * (CB_MAX_BITS + 1) * 256; /* the search's (KF_Q_ANY) */
    const int64_t first = t + (((wg - (t - t_begin)) % C::NWG) + C::NWG) % C::NWG;
    const bool rot = g->rh != NULL, unit = rot && g->side.normalize;
#define KF_PIECE(M, R, SC) kf_piece<D, PASSES, PROBE, kf_kind<M, R, SC>>(segs, nseg, g, first, piece_end, t_begin, t_end, bnd, S)
    if (mode == KF_Q_UNIFORM && unit) KF_PIECE(KF_Q_UNIFORM, true, false);
    else if (mode == KF_Q_UNIFORM && rot) KF_PIECE(KF_Q_UNIFORM, true, true);
    else if (mode == KF_Q_UNIFORM) KF_PIECE(KF_Q_UNIFORM, false, true);
    else if (mode == KF_Q_LUT && rot) KF_PIECE(KF_Q_LUT, true, true);
    else if (mode == KF_Q_LUT) KF_PIECE(KF_Q_LUT, false, true);
    else if (rot) KF_PIECE(KF_Q_ANY, true, true);
    else KF_PIECE(KF_Q_ANY, false, true);
#undef KF_PIECE
    t = piece_end;
  }
}

/* One persistent block per SM over a contiguous range of tiles. PROBE (bench only) leaves phases
 * out: 1 the projection, 2 the quantisation, 4 the write, 8 the packing. The body needs sm_90a
 * (wgmma); other targets compile an empty kernel that the host never launches (kc_fast_run). */
template <int D, int PASSES, int PROBE>
__global__ void __maxnreg__((kf_cfg<D, PASSES>::REGS))
k_encode_fast(const kc_fast_seg *segs, int nseg, int64_t ntiles, const float *cb_boundary) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  typedef kf_cfg<D, PASSES> C;
  extern __shared__ __align__(1024) unsigned char sm[];
  const kf_smem<D, PASSES> S = kf_carve<D, PASSES>(sm);
  int64_t per = (ntiles + gridDim.x - 1) / gridDim.x;
  int64_t t_begin = blockIdx.x * per, t_end = min(ntiles, t_begin + per);
  if (t_begin >= t_end) return;
  if (threadIdx.x == 0) {
    for (int k = 0; k < C::STAGES; k++) kf_bar_init(&S.full[k], 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    const int s0 = kf_seg_find(segs, nseg, t_begin);
    for (int64_t t = t_begin; t < t_end && t < t_begin + C::STAGES; t++)
      kf_issue_tile<D>(&segs[kf_seg_of(segs, nseg, t, s0)], t, S.stage + (size_t)(t - t_begin) * KF_TM * D,
                       &S.full[t - t_begin]);
  }
  __syncthreads();
  kf_consume<D, PASSES, PROBE>(segs, nseg, ntiles, cb_boundary, t_begin, t_end, S);
#endif
}

__global__ void k_split_rot(const float *rot, __half *rh, __half *rl, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  __half h = __float2half_rn(rot[i]);
  rh[i] = h;
  if (rl) rl[i] = __float2half_rn((rot[i] - __half2float(h)) * KF_LO_SCALE);
}

int kc_fast_prepare(const plan_side *p, int passes, kc_buf *mats, kc_fast_seg *seg, sq_err *e) {
  if (passes != 1 && passes != 3)
    return sq_fail(e, SQ_EINPUT, "fast encode: passes %d (expected 1 or 3)", passes);
  if (p->qjl_rows > 0)
    return sq_fail(e, SQ_EINPUT, "fast encode: plans with QJL (%d sketch rows) are not supported; use encode",
                   p->qjl_rows);
  if (p->D != 64 && p->D != 128)
    return sq_fail(e, SQ_EINPUT, "fast encode: head_dim %d (supported: 64, 128)", p->D);
  tryCheck(kc_side_of(p, &seg->side, e));
  if (seg->side.code_bytes > 2 + p->D) /* the bit-stream buffers hold 2 + D bytes per row (kf_cfg::MAX_CODE) */
    return sq_fail(e, SQ_EINPUT, "fast encode: codes of %d bytes per row (more than 2 + D = %d: fields wider than "
                   "8 bits on average); use encode", seg->side.code_bytes, 2 + p->D);
  seg->rh = seg->rl = NULL;
  if (!p->rot) return SQ_OK;
  int n = p->D * p->D;
  /* floats staged behind the halves, converted on the device */
  tryCheck(kc_buf_need(mats, (size_t)n * (2 * sizeof(__half) + sizeof(float)), e));
  __half *rh = (__half *)mats->p, *rl = rh + n;
  float *f = (float *)(rl + n);
  cudaCheck(cudaMemcpy(f, p->rot, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
  k_split_rot<<<(n + 255) / 256, 256>>>(f, rh, passes == 3 ? rl : NULL, n);
  launchCheck();
  seg->rh = rh;
  seg->rl = passes == 3 ? rl : NULL;
  return SQ_OK;
}

/* The kernel's body is wgmma code for sm_90a: refuse other builds and GPUs with a reason
 * (kc_fast_setup, before any launch). */
static int kf_check_arch(sq_err *e) {
#ifndef SQEXP_CUDA_SM90A
  return sq_fail(e, SQ_EINPUT, "fast encode: this build has no sm_90a code (configure with CMAKE_CUDA_ARCHITECTURES "
                 "containing 90a)");
#else
  int dev = 0, major = 0, minor = 0;
  cudaCheck(cudaGetDevice(&dev));
  cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  cudaCheck(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  if (major != 9 || minor != 0)
    return sq_fail(e, SQ_EINPUT, "fast encode: needs a compute capability 9.0 GPU (wgmma), this one is %d.%d", major,
                   minor);
  return SQ_OK;
#endif
}

template <int D, int PASSES, int PROBE = 0>
static int launch(const kc_fast_seg *segs_dev, int nseg, int64_t ntiles, const float *cbb, sq_err *e) {
  typedef kf_cfg<D, PASSES> C;
  cudaCheck(cudaFuncSetAttribute(k_encode_fast<D, PASSES, PROBE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)C::SMEM));
  int dev = 0, sms = 0, per_sm = 0;
  cudaCheck(cudaGetDevice(&dev));
  cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_encode_fast<D, PASSES, PROBE>, C::THREADS, C::SMEM));
  if (per_sm < 1) return sq_fail(e, SQ_EFAIL, "fast encode: %zu bytes of shared memory do not fit an SM", C::SMEM);
  int64_t grid = sms; /* one block per SM: the ring and the tables take the SM's shared memory */
  if (grid > ntiles) grid = ntiles;
  k_encode_fast<D, PASSES, PROBE><<<(unsigned)grid, C::THREADS, C::SMEM>>>(segs_dev, nseg, ntiles, cbb);
  launchCheck();
  return SQ_OK;
}

/* The segment's rows as a 2-D fp32 tensor {D, n} with row pitch stride, read in boxes of
 * {D, KF_TM}, by the driver's cuTensorMapEncodeTiled, found through the runtime (no -lcuda). */
typedef PFN_cuTensorMapEncodeTiled_v12000 kf_encode_fn;

/* The driver's cuTensorMapEncodeTiled (looked up per kc_fast_setup: no state kept between calls). */
static int kf_tensor_encoder(kf_encode_fn *out, sq_err *e) {
  cudaDriverEntryPointQueryResult q;
  void *fn = NULL;
  cudaCheck(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
  if (q != cudaDriverEntryPointSuccess || !fn)
    return sq_fail(e, SQ_EFAIL, "%s:%d: the driver has no cuTensorMapEncodeTiled", __FILE__, __LINE__);
  *out = (kf_encode_fn)fn;
  return SQ_OK;
}

static int kf_tensor_map(kf_encode_fn encode, kc_fast_seg *g, int D, sq_err *e) {
  CUtensorMap map;
  cuuint64_t dims[2] = {(cuuint64_t)D, (cuuint64_t)g->n}, pitch[1] = {(cuuint64_t)g->stride * sizeof(float)};
  cuuint32_t box[2] = {(cuuint32_t)D, KF_TM}, estride[2] = {1, 1};
  CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, (void *)g->x, dims, pitch, box, estride,
                      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return sq_fail(e, SQ_EFAIL, "%s:%d: cuTensorMapEncodeTiled failed (%d) for %lld rows of stride %lld", __FILE__,
                   __LINE__, (int)r, (long long)g->n, (long long)g->stride);
  memcpy(&g->tmap, &map, sizeof map);
  return SQ_OK;
}

int kc_fast_setup(kc_fast_seg *segs, int nseg, kc_buf *segs_dev, int64_t *ntiles_out, sq_err *e) {
  *ntiles_out = 0;
  if (nseg < 1) return SQ_OK;
  tryCheck(kf_check_arch(e)); /* here, once per batch, not in the (timed) launch */
  int D = segs[0].side.D;
  kf_encode_fn encode = NULL; /* looked up at the first segment with rows */
  int64_t ntiles = 0;
  for (int s = 0; s < nseg; s++) {
    if (segs[s].side.D != D)
      return sq_fail(e, SQ_EINPUT, "fast encode: segment %d has head_dim %d, segment 0 has %d", s,
                     segs[s].side.D, D);
    if (segs[s].n < 0 || (segs[s].n > 0 && (segs[s].stride < D || ((uintptr_t)segs[s].x & 15) || (segs[s].stride & 3))))
      return sq_fail(e, SQ_EINPUT, "fast encode: segment %d: rows must be 16-byte aligned with a stride >= D "
                     "that is a multiple of 4 floats", s);
    if (segs[s].n > 0 && ((uintptr_t)segs[s].codes & 15))
      return sq_fail(e, SQ_EINPUT, "fast encode: segment %d: codes must be 16-byte aligned", s);
    segs[s].tile0 = ntiles;
    ntiles += (segs[s].n + KF_TM - 1) / KF_TM;
    if (segs[s].n > 0) {
      if (!encode) tryCheck(kf_tensor_encoder(&encode, e));
      tryCheck(kf_tensor_map(encode, &segs[s], D, e));
    }
  }
  tryCheck(kc_buf_need(segs_dev, (size_t)nseg * sizeof *segs, e));
  cudaCheck(cudaMemcpy(segs_dev->p, segs, (size_t)nseg * sizeof *segs, cudaMemcpyHostToDevice));
  *ntiles_out = ntiles;
  return SQ_OK;
}

int kc_fast_run(const kc_buf *segs_dev, int nseg, int64_t ntiles, int D, const float *cb_boundary, int passes,
                int probe, sq_err *e) {
  if (ntiles == 0) return SQ_OK;
  const kc_fast_seg *sd = (const kc_fast_seg *)segs_dev->p;
  if (probe) { /* bench only: phases left out (1 projection, 2 quantisation, 4 write, 8 packing), D 128, 1 pass */
    if (D != 128 || passes != 1) return sq_fail(e, SQ_EINPUT, "fast encode probe: D 128, passes 1 only");
    switch (probe) {
    case 1: return launch<128, 1, 1>(sd, nseg, ntiles, cb_boundary, e);
    case 3: return launch<128, 1, 3>(sd, nseg, ntiles, cb_boundary, e);
    case 9: return launch<128, 1, 9>(sd, nseg, ntiles, cb_boundary, e);
    case 11: return launch<128, 1, 11>(sd, nseg, ntiles, cb_boundary, e);
    case 14: return launch<128, 1, 14>(sd, nseg, ntiles, cb_boundary, e);
    case 15: return launch<128, 1, 15>(sd, nseg, ntiles, cb_boundary, e);
    default: return sq_fail(e, SQ_EINPUT, "fast encode probe %d", probe);
    }
  }
  if (D == 128) return passes == 3 ? launch<128, 3>(sd, nseg, ntiles, cb_boundary, e)
                                   : launch<128, 1>(sd, nseg, ntiles, cb_boundary, e);
  if (D == 64) return passes == 3 ? launch<64, 3>(sd, nseg, ntiles, cb_boundary, e)
                                  : launch<64, 1>(sd, nseg, ntiles, cb_boundary, e);
  return sq_fail(e, SQ_EINPUT, "fast encode: head_dim %d (supported: 64, 128)", D);
}

int kc_fast_encode(kc_fast_seg *segs, int nseg, const float *cb_boundary, int passes, kc_buf *segs_dev,
                   sq_err *e) {
  int64_t ntiles = 0;
  tryCheck(kc_fast_setup(segs, nseg, segs_dev, &ntiles, e));
  return kc_fast_run(segs_dev, nseg, ntiles, nseg ? segs[0].side.D : 0, cb_boundary, passes, 0, e);
}
