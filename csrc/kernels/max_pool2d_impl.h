// Internal: the float max pool (qpart_kernels.h) written once over ISA traits. Not installed,
// not stable.
//
// A plane is pooled output row by output row: the horizontal maxima of the input rows its
// window covers (computed once each, kept in a ring of w_out-float rows: consecutive windows
// share rows when stride_h < kh), then their vertical maximum in row order. Traits
// supply the two row loops:
//   static void hrow(const MaxPool2dShape& s, const float* row, int64_t j_begin, int64_t j_end,
//                    float* out);   // out[j] = first max of row[j*sw - pw + t], t = 0..kw-1,
//                                   // for j in [j_begin, j_end) (whole windows only)
//   static void hrow_edge(...same...);  // the same for columns whose windows may reach into
//                                   // the padding (taps outside the row are left out)
//   static void vmax(const float* const* rows, int64_t n, int64_t w, float* out);
//                                   // out[j] = first max of rows[0][j], ..., rows[n-1][j]
// The left edge is at least 8 columns wide when the row has that many, so the interior
// vectors start where it ends and every vector of a row is stored once, at the offsets vmax
// loads (a load that spans two earlier stores waits for them to reach the cache).
// A row's slot in the ring is its index modulo a power of two >= kh: the rows of one window
// are kh consecutive rows, so they never share a slot.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace detail {

/// ATen's update: v replaces the running maximum if it is greater or NaN (so the first of
/// equal values, e.g. of -0.0 and +0.0, stays, and a NaN sticks: nothing is greater than it).
/// Selected with a bit mask, not a branch: the comparison is data-dependent, and a branch on
/// it mispredicts often (compilers turn the plain `?:` into one).
inline float pool_take(float acc, float v) {
  const uint32_t pick = 0u - static_cast<uint32_t>((v > acc) | (v != v));
  uint32_t a, b;
  std::memcpy(&a, &acc, sizeof a);
  std::memcpy(&b, &v, sizeof b);
  const uint32_t r = (b & pick) | (a & ~pick);
  float out;
  std::memcpy(&out, &r, sizeof out);
  return out;
}

/// Output columns [lo, hi) whose windows lie inside the row (no padding taps).
struct PoolSpan {
  int64_t lo, hi;
};

inline PoolSpan pool_inner_span(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad) {
  const int64_t lo = (pad + stride - 1) / stride;  // first j with j * stride - pad >= 0
  const int64_t room = in + pad - k;               // last start j * stride - pad <= in - k
  int64_t hi = room < 0 ? 0 : room / stride + 1;
  hi = hi < out ? hi : out;
  return {lo, hi > lo ? hi : lo};
}

/// out[j] for one column whose window may be cut by the padding (scalar, clipped taps).
inline float hrow_clipped(const MaxPool2dShape& s, const float* row, int64_t j) {
  const int64_t start = j * s.stride_w - s.pad_w;
  const int64_t t0 = start < 0 ? -start : 0;
  const int64_t t1 = start + s.kw > s.w_in ? s.w_in - start : s.kw;
  float acc = -INFINITY;
  for (int64_t t = t0; t < t1; ++t) acc = pool_take(acc, row[start + t]);
  return acc;
}

/// One plane-major call: `planes` planes of x into y, scratch: max_pool2d_scratch_floats.
/// Rows of the ring of horizontal maxima: kh rounded up to a power of two (a mask, no
/// division, picks a row's slot).
inline int64_t pool_ring_rows(int64_t kh) {
  int64_t n = 1;
  while (n < kh) n *= 2;
  return n;
}

template <typename Traits>
void max_pool2d_planes_impl(const MaxPool2dShape& s, const float* x, int64_t planes, float* scratch,
                            float* y) {
  const int64_t ho = s.h_out(), wo = s.w_out(), mask = pool_ring_rows(s.kh) - 1;
  const PoolSpan cols = pool_inner_span(s.w_in, wo, s.kw, s.stride_w, s.pad_w);
  const float* rows[64];  // kh <= 64 rows per call of vmax; more are folded in batches
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * s.h_in * s.w_in;
    float* yp = y + p * ho * wo;
    int64_t next = 0;  // first input row whose horizontal maximum is not in the ring yet
    for (int64_t i = 0; i < ho; ++i) {
      const int64_t start = i * s.stride_h - s.pad_h;
      const int64_t r0 = start < 0 ? 0 : start;
      const int64_t r1 = start + s.kh < s.h_in ? start + s.kh : s.h_in;
      for (int64_t r = next > r0 ? next : r0; r < r1; ++r) {
        const float* row = xp + r * s.w_in;
        float* h = scratch + (r & mask) * wo;
        const int64_t jl = cols.lo > 0 ? std::min(wo, std::max<int64_t>(cols.lo, 8)) : 0;
        if (jl > 0) Traits::hrow_edge(s, row, 0, jl, h);
        if (cols.hi > jl) Traits::hrow(s, row, jl, cols.hi, h);
        if (cols.hi < wo) Traits::hrow_edge(s, row, std::max(jl, std::min(cols.hi, wo - 8)), wo, h);
      }
      next = r1 > next ? r1 : next;
      float* out = yp + i * wo;
      // Folding in batches keeps the row order: out is the first maximum of the rows so far.
      for (int64_t r = r0; r < r1;) {
        int64_t n = 0;
        if (r > r0) rows[n++] = out;
        for (; r < r1 && n < 64; ++r) rows[n++] = scratch + (r & mask) * wo;
        Traits::vmax(rows, n, wo, out);
      }
    }
  }
}

#if defined(__x86_64__)
/// AVX2 rows (x86/max_pool2d_avx2.cpp).
void max_pool2d_planes_avx2(const MaxPool2dShape& s, const float* x, int64_t planes, float* scratch,
                            float* y);
#endif
#if defined(__aarch64__)
/// NEON rows (arm/max_pool2d_neon.cpp).
void max_pool2d_planes_neon(const MaxPool2dShape& s, const float* x, int64_t planes, float* scratch,
                            float* y);
#endif

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
