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

/// Scratch floats of one x86 tile: the dequantized weight panel (co_block rounded up to mr
/// rows of kConvKc) and the im2col panels (px_block rounded up to nr pixels, kConvKc deep),
/// plus room to align both to 64 bytes.
inline int64_t conv2d_x86_scratch_floats(int64_t co_block, int64_t px_block, int64_t mr,
                                         int64_t nr) {
  const int64_t rows = (co_block + mr - 1) / mr * mr;
  const int64_t px = (px_block + nr - 1) / nr * nr;
  return (rows + px) * kConvKc + 32;
}

#if defined(__x86_64__)
/// Direct NCHW tile kernels: y[co, p] = sum_k W[co, k] cols[k, p] (+ bias), K blocked by
/// kConvKc, partial sums through y in a fixed order. `scratch` holds
/// conv2d_x86_scratch_floats(co_block, px_block, mr, nr) floats for the plan's block sizes.
void conv2d_tile_avx2(const Conv2dArgs& a, const Conv2dTile& t, float* scratch);
void conv2d_tile_avx512(const Conv2dArgs& a, const Conv2dTile& t, float* scratch);
#endif

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
