// Internal: the pieces of packed conv2d shared by conv2d.cpp and the per-ISA tile kernels
// (x86/conv2d_avx2.cpp, x86/conv2d_avx512.cpp). Not installed, not stable.
#pragma once

#include <cstdint>

#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace detail {

/// Everything one tile needs (pointers to whole tensors; the tile picks its part).
struct Conv2dArgs {
  const float* x;
  const Conv2dShape* s;
  const uint8_t* packed;
  const uint16_t* scale_bits;
  const uint8_t* zeros;
  const float* bias;
  int64_t group_size;
  int bits;
  float* y;
};

/// One work item: output channels [co0, co0 + co_n) (absolute) of group `group` of image
/// `image`, output pixels [p0, p0 + p_n) of each of those planes.
struct Conv2dTile {
  int64_t image, group, co0, co_n, p0, p_n;
};

/// Depth (k) block of the x86 tile kernels: the weight panel row and the im2col panel height.
constexpr int64_t kConvKc = 128;

/// Most output pixels in one tile (Conv2dPlan::px_block never exceeds it).
constexpr int64_t kConvPxMax = 192;

/// x86 register tiles: kMr output channels x kNr pixels (AVX-512: 8 x 48 = 24 zmm
/// accumulators; AVX2: 6 x 16 = 12 ymm accumulators).
constexpr int64_t kConvAvx512Mr = 8, kConvAvx512Nr = 48;
constexpr int64_t kConvAvx2Mr = 6, kConvAvx2Nr = 16;

/// Row tiles. For stride 1 an x86 tile covers whole output rows and computes every column of
/// the padded width (w_in + 2 * pad_w; the (kw - 1) * dil_w columns past w_out are computed
/// and dropped), so that every depth row is the zero-padded input rows at a fixed offset:
/// the micro-kernel reads them directly (no im2col, no per-pixel bounds).
constexpr int64_t kConvRowTileMaxWidth = 1024;
inline int64_t conv2d_padded_width(const Conv2dShape& s) { return s.w_in + 2 * s.pad_w; }
inline bool conv2d_row_tiles(const Conv2dShape& s) {
  return s.stride_h == 1 && s.stride_w == 1 && conv2d_padded_width(s) <= kConvRowTileMaxWidth;
}

/// Scratch floats of one x86 tile with the plan's block sizes: the dequantized weight panel
/// (co_block rounded up to mr rows of kConvKc), then either the im2col panels (kConvKc deep)
/// or, for row tiles, the padded input rows of the channels one depth block touches (plus
/// read slack for the last panel) and the [co_block, padded pixels] accumulator. 16 floats
/// per region cover the 64-byte alignment.
inline int64_t conv2d_x86_scratch_floats(const Conv2dShape& s, int64_t co_block,
                                         int64_t px_block, int64_t mr, int64_t nr) {
  const int64_t weights = (co_block + mr - 1) / mr * mr * kConvKc;
  if (!conv2d_row_tiles(s)) return weights + (px_block + nr - 1) / nr * nr * kConvKc + 32;
  const int64_t wp = conv2d_padded_width(s), rows = px_block / s.w_out();
  const int64_t computed = (rows * wp + nr - 1) / nr * nr;
  const int64_t channels = kConvKc / (s.kh * s.kw) + 2;
  const int64_t padded_in = channels * (rows + (s.kh - 1) * s.dil_h) * wp + nr +
                            (s.kw - 1) * s.dil_w + 16;
  return weights + co_block * computed + padded_in + 48;
}

#if defined(__x86_64__)
/// Direct NCHW tile kernels: y[co, p] = sum_k W[co, k] cols[k, p] (+ bias), K blocked by
/// kConvKc, partial sums in a fixed order. `scratch` holds conv2d_x86_scratch_floats(s, ...)
/// floats for the plan's block sizes; row tiles (conv2d_row_tiles) need t.p0 and t.p_n to be
/// whole output rows.
void conv2d_tile_avx2(const Conv2dArgs& a, const Conv2dTile& t, float* scratch);
void conv2d_tile_avx512(const Conv2dArgs& a, const Conv2dTile& t, float* scratch);
#endif

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
