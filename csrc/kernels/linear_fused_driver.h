// Internal: the ISA-generic body of the float packed matmul of arm/linear_neon.cpp and
// x86/linear_avx2.cpp: the fused small-batch path (m <= kFusedMaxRows), the dequantizer of
// the blocked GEMM's panels and the switch between the two. Written once over ISA traits, in
// the spirit of ggml's simd-mappings.h; each ISA file supplies its traits, its blocked GEMM
// and calls linear_f32_driver<Traits>. Include it after the ISA's intrinsics header, under
// the file's `#pragma GCC target` if it has one; every definition has internal linkage, so
// each ISA gets its own copy.
//
// Fused path: each block of 8 codes (exactly BITS bytes, at a byte boundary) is unpacked in
// registers and converted to float, then multiplied into an MR x NR tile of outputs (MR rows
// of x, NR weight rows) in float vectors; the zero point is folded per group:
//   sum_k x_k (q_k - z) s = s (sum_k x_k q_k - z sum_k x_k)
// with the sums of x over each group (xsum) computed once per call. No dequantized row is
// written. A block whose 8-byte load could pass the end of the packed buffer is copied first
// (fast_blocks); the k % 8 codes after the last block (per-channel rows only) are summed in
// scalar code. The arithmetic for one output element never depends on [n_begin, n_end) or on
// the column tiling, so results do not depend on the thread split.
//
// Streaming: the NR rows of a tile are adjacent in the packed buffer, so a thread walking tiles
// in order reads one contiguous stream. While a tile is multiplied, the same fraction of the
// next tile's bytes is software-prefetched (TilePrefetch), one prefetch per 64-byte line in
// address order, about one tile (at least kPrefetchAhead bytes) ahead. With a.prepared set
// (later chunks of one call on the same thread, see linear_f32_chunks) xsum and x's plane order
// are already in a.xsum / a.scratch and are not recomputed.
//
// T (the ISA traits) provides:
//   Vec, kLanes                  a float vector of kLanes lanes (8 % kLanes == 0);
//   zero(), set1(f), load(p), store(p, v)    (unaligned loads and stores),
//   add(a, b), sub(a, b), mul(a, b), fma(acc, x, w) (acc + x * w, one rounding),
//   reduce(v)                    the sum of v's lanes (in a fixed order);
//   Unpacker<BITS>               the per-width unpack constants, built once per call;
//   codes_f32<BITS>(U, p, safe, w)   the 8 codes of the block at p as 8 / kLanes vectors
//                                (safe: copy the BITS bytes first, p is near the buffer end);
//   kFusedRows                   rows of x per full fused tile (3 or 4; the tile is that x 2);
//   kGemvCols<BITS>              weight rows per tile of a single row of x (4 or 8; each row
//                                is one serial FMA chain);
//   kPlanes<BITS>                whether the fused path reads bit planes for this width; if
//                                so, also permute_x<BITS>(a, xperm) (x's plane order, into
//                                a.scratch) and plane_blocks<BITS, MR, NR>(w, x, g0, gs, acc)
//                                (the group's full plane chunks; returns the 8-code blocks
//                                it covered);
//   gemm<BITS>(a)                the blocked GEMM for m > kFusedMaxRows.
#pragma once

#include <cstdint>

#include "dispatch.h"
#include "packed_code.h"
#include "prefetch_stream.h"
#include "with_bits.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {  // internal linkage: compiled per ISA translation unit

/// Number of leading 8-code blocks of row n whose 8-byte load stays inside the buffer.
inline int64_t fast_blocks(const LinearArgs& a, int64_t n, int64_t row_bytes) {
  const int64_t avail = (a.n_total - n) * row_bytes;
  return avail >= 8 ? (avail - 8) / a.bits + 1 : 0;
}

/// a.xsum[i * groups + g] = sum of x[i] over group g (vector partial sums, then the tail).
template <typename T>
void compute_xsum(const LinearArgs& a) {
  const int64_t groups = a.k / a.group_size;
  for (int64_t i = 0; i < a.m; ++i) {
    const float* xi = a.x + i * a.k;
    for (int64_t g = 0; g < groups; ++g) {
      const float* p = xi + g * a.group_size;
      typename T::Vec acc = T::zero();
      int64_t j = 0;
      for (; j + T::kLanes <= a.group_size; j += T::kLanes) acc = T::add(acc, T::load(p + j));
      float s = T::reduce(acc);
      for (; j < a.group_size; ++j) s += p[j];
      a.xsum[i * groups + g] = s;
    }
  }
}

/// Codes per prefetch span of the plane widths: 64 bytes of each row (512 / BITS codes, a
/// whole number of 16-byte plane chunks).
template <int BITS>
constexpr int64_t kPlaneSpan = 512 / BITS;

/// y[i0 .. i0 + MR) x [n0 .. n0 + NR) of the fused path (xsum, and x's plane order for plane
/// widths, already computed).
template <typename T, int BITS, int MR, int NR>
void fused_tile(const LinearArgs& a, const typename T::template Unpacker<BITS>& U, int64_t i0,
                int64_t n0, TilePrefetch& pf) {
  using Vec = typename T::Vec;
  constexpr int kVecs = 8 / T::kLanes;  // vectors per block of 8 codes
  constexpr bool kPlanes = T::template kPlanes<BITS>;
  const int64_t k = a.k, gs = a.group_size, groups = k / gs;
  const int64_t row_bytes = packed_row_bytes(k, BITS);
  const int64_t kblocks = k / 8;
  const int64_t nfast = fast_blocks(a, n0 + NR - 1, row_bytes);
  // Prefetch position: this tile's progress (bytes of each row done, times NR) plus `ahead`.
  const int64_t ahead = NR * row_bytes > kPrefetchAhead ? NR * row_bytes : kPrefetchAhead;
  const uint8_t* const pf_base = a.packed + n0 * row_bytes + ahead;
  const uint8_t* w[NR];
#pragma GCC unroll 16
  for (int j = 0; j < NR; ++j) w[j] = a.packed + (n0 + j) * row_bytes;
  const float* x[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) x[i] = (kPlanes ? a.scratch : a.x) + (i0 + i) * k;
  float out[MR][NR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) out[i][j] = 0.0f;

  for (int64_t g = 0; g < groups; ++g) {
    Vec acc[MR][NR][kVecs];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j)
#pragma GCC unroll 2
        for (int v = 0; v < kVecs; ++v) acc[i][j][v] = T::zero();
    int64_t b0 = g * gs / 8;
    const int64_t b1 = (g + 1) * gs / 8;
    if constexpr (kPlanes) {
      // The group's full plane chunks, one 64-byte-per-row span at a time (prefetching the
      // matching lines first), then the chunks of a shorter last span.
      constexpr int64_t S = kPlaneSpan<BITS>;
      const int64_t g0 = g * gs, spans = gs / S;
      for (int64_t sp = 0; sp < spans; ++sp) {
        pf.upto(pf_base + (g0 + (sp + 1) * S) * BITS / 8 * NR);
        b0 += T::template plane_blocks<BITS, MR, NR>(w, x, g0 + sp * S, S, acc);
      }
      pf.upto(pf_base + (g0 + gs) * BITS / 8 * NR);
      b0 += T::template plane_blocks<BITS, MR, NR>(w, x, g0 + spans * S, gs - spans * S, acc);
    }
    auto body = [&](int64_t blk, bool safe) {
      if ((blk & 7) == 0) pf.upto(pf_base + (blk + 8) * BITS * NR);
      if constexpr (MR == 1) {  // one row of x: unpack and multiply one weight row at a time
        Vec xv[kVecs];
#pragma GCC unroll 2
        for (int v = 0; v < kVecs; ++v) xv[v] = T::load(x[0] + blk * 8 + v * T::kLanes);
#pragma GCC unroll 16
        for (int j = 0; j < NR; ++j) {
          Vec wv[kVecs];
          T::template codes_f32<BITS>(U, w[j] + blk * BITS, safe, wv);
#pragma GCC unroll 2
          for (int v = 0; v < kVecs; ++v) acc[0][j][v] = T::fma(acc[0][j][v], xv[v], wv[v]);
        }
        return;
      }
      Vec wv[NR][kVecs];
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) T::template codes_f32<BITS>(U, w[j] + blk * BITS, safe, wv[j]);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        Vec xv[kVecs];
#pragma GCC unroll 2
        for (int v = 0; v < kVecs; ++v) xv[v] = T::load(x[i] + blk * 8 + v * T::kLanes);
#pragma GCC unroll 16
        for (int j = 0; j < NR; ++j)
#pragma GCC unroll 2
          for (int v = 0; v < kVecs; ++v) acc[i][j][v] = T::fma(acc[i][j][v], xv[v], wv[j][v]);
      }
    };
    const int64_t mid = b1 < nfast ? b1 : (b0 > nfast ? b0 : nfast);
    for (int64_t blk = b0; blk < mid; ++blk) body(blk, false);
    for (int64_t blk = mid; blk < b1; ++blk) body(blk, true);
    float tail[MR][NR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) tail[i][j] = 0.0f;
    if (g == groups - 1) {
      for (int64_t kk = kblocks * 8; kk < k; ++kk) {  // k % 8 codes (per-channel only)
#pragma GCC unroll 16
        for (int j = 0; j < NR; ++j) {
          const float q = static_cast<float>(code_at(w[j], kk, BITS));
#pragma GCC unroll 16
          for (int i = 0; i < MR; ++i) tail[i][j] += x[i][kk] * q;
        }
      }
    }
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) {
      // An out-of-line conversion on purpose: inlined (F16C), GCC contracted this epilogue
      // differently per tile width, so results depended on the column split.
      const float s = half_bits_to_float(a.scale_bits[(n0 + j) * groups + g]);
      const float z = static_cast<float>(a.zeros[(n0 + j) * groups + g]);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        Vec sum = acc[i][j][0];
#pragma GCC unroll 2
        for (int v = 1; v < kVecs; ++v) sum = T::add(sum, acc[i][j][v]);
        const float dot = T::reduce(sum) + tail[i][j];
        out[i][j] += s * (dot - z * a.xsum[(i0 + i) * groups + g]);
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) {
      const float b = a.bias ? a.bias[n0 + j] : 0.0f;
      a.y[(i0 + i) * a.n_total + n0 + j] = out[i][j] + b;
    }
  }
}

/// Rows [i0, i0 + MR) over the column range: tiles of NR columns, then single columns.
template <typename T, int BITS, int MR, int NR>
void fused_rows(const LinearArgs& a, const typename T::template Unpacker<BITS>& U, int64_t i0) {
  const int64_t row_bytes = packed_row_bytes(a.k, BITS);
  // The stream starts at the first tile: its lines (and the first `ahead` bytes) are requested
  // as the first blocks are reached.
  TilePrefetch pf{a.packed + a.n_begin * row_bytes, a.packed + a.n_total * row_bytes};
  int64_t n = a.n_begin;
  for (; n + NR <= a.n_end; n += NR) fused_tile<T, BITS, MR, NR>(a, U, i0, n, pf);
  for (; n < a.n_end; ++n) fused_tile<T, BITS, MR, 1>(a, U, i0, n, pf);
}

/// The fused path: full tiles of kFusedRows x 2, then the remaining rows as 3 x 2, 2 x 3 or
/// 1 x kGemvCols tiles.
template <typename T, int BITS>
void fused(const LinearArgs& a) {
  const typename T::template Unpacker<BITS> U;
  if (!a.prepared) {
    compute_xsum<T>(a);
    if constexpr (T::template kPlanes<BITS>) T::template permute_x<BITS>(a, a.scratch);
  }
  constexpr int kRows = T::kFusedRows;
  static_assert(kRows == 3 || kRows == 4, "full fused tiles have 3 or 4 rows");
  int64_t i = 0;
  for (; i + kRows <= a.m; i += kRows) fused_rows<T, BITS, kRows, 2>(a, U, i);
  if constexpr (kRows > 3) {
    if (a.m - i == 3) fused_rows<T, BITS, 3, 2>(a, U, i);
  }
  if (a.m - i == 2) fused_rows<T, BITS, 2, 3>(a, U, i);
  if (a.m - i == 1) fused_rows<T, BITS, 1, T::template kGemvCols<BITS>>(a, U, i);
}

/// Dequantizes codes [k0, k1) of row n (k0 % 8 == 0) into dst, exactly as dequantize_rows:
/// (code - zero) * scale, group by group (for the blocked GEMM's panels).
template <typename T, int BITS>
void dequant_range(const LinearArgs& a, const typename T::template Unpacker<BITS>& U, int64_t n,
                   int64_t k0, int64_t k1, float* dst) {
  using Vec = typename T::Vec;
  constexpr int kVecs = 8 / T::kLanes;
  const int64_t gs = a.group_size, groups = a.k / gs;
  const int64_t row_bytes = packed_row_bytes(a.k, BITS);
  const uint8_t* row = a.packed + n * row_bytes;
  const int64_t nfast = fast_blocks(a, n, row_bytes);
  int64_t kk = k0;
  while (kk < k1) {
    const int64_t g = kk / gs;
    const int64_t gend = (g + 1) * gs < k1 ? (g + 1) * gs : k1;
    const float s = half_bits_to_float(a.scale_bits[n * groups + g]);
    const float z = static_cast<float>(a.zeros[n * groups + g]);
    const Vec sv = T::set1(s), zv = T::set1(z);
    for (; kk + 8 <= gend; kk += 8) {
      const int64_t blk = kk / 8;
      Vec q[kVecs];
      T::template codes_f32<BITS>(U, row + blk * BITS, blk >= nfast, q);
#pragma GCC unroll 2
      for (int v = 0; v < kVecs; ++v)
        T::store(dst + (kk - k0) + v * T::kLanes, T::mul(T::sub(q[v], zv), sv));
    }
    for (; kk < gend; ++kk) dst[kk - k0] = (static_cast<float>(code_at(row, kk, BITS)) - z) * s;
  }
}

/// linear_f32 for the ISA of T: fused for m <= kFusedMaxRows, T's blocked GEMM otherwise.
template <typename T>
void linear_f32_driver(const LinearArgs& a) {
  with_bits(a.bits, [&](auto b) {
    constexpr int BITS = decltype(b)::value;
    if (a.m <= kFusedMaxRows) {
      fused<T, BITS>(a);
    } else {
      T::template gemm<BITS>(a);
    }
  });
}

}  // namespace
}  // namespace detail
}  // namespace kernels
}  // namespace qpart
