// Packed conv2d as im2col + packed matmul, one (image, group) work item at a time.
#include <algorithm>

#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace {

// Writes the patches of group `g` of one image as a row-major [h_out * w_out, k] matrix.
void im2col(const float* image, const Conv2dShape& s, int64_t g, float* cols) {
  const int64_t cg = s.c_in / s.groups;
  const int64_t ho = s.h_out(), wo = s.w_out(), k = s.k();
  for (int64_t oy = 0; oy < ho; ++oy) {
    for (int64_t ox = 0; ox < wo; ++ox) {
      float* col = cols + (oy * wo + ox) * k;
      for (int64_t c = 0; c < cg; ++c) {
        const float* plane = image + (g * cg + c) * s.h_in * s.w_in;
        for (int64_t r = 0; r < s.kh; ++r) {
          const int64_t iy = oy * s.stride_h - s.pad_h + r * s.dil_h;
          for (int64_t q = 0; q < s.kw; ++q) {
            const int64_t ix = ox * s.stride_w - s.pad_w + q * s.dil_w;
            const bool inside = iy >= 0 && iy < s.h_in && ix >= 0 && ix < s.w_in;
            *col++ = inside ? plane[iy * s.w_in + ix] : 0.0f;
          }
        }
      }
    }
  }
}

}  // namespace

int64_t conv2d_scratch_floats(const Conv2dShape& s) {
  // im2col patches + the [pixels, c_out / groups] matmul result of one work item.
  return s.h_out() * s.w_out() * (s.k() + s.c_out / s.groups) + s.k();
}

// Each work item: im2col, then the dispatched packed matmul (linear_f32, so the SIMD GEMM is
// reused) over the group's output channels, then a transpose into the NCHW output planes.
void conv2d_f32(const float* x, const Conv2dShape& s, const uint8_t* packed,
                const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                int64_t group_size, int bits, int64_t item_begin, int64_t item_end,
                float* scratch, float* y) {
  const int64_t k = s.k();
  const int64_t pixels = s.h_out() * s.w_out();
  const int64_t out_per_group = s.c_out / s.groups;
  const int64_t groups = k / group_size;
  const int64_t row_bytes = packed_row_bytes(k, bits);
  float* cols = scratch;
  float* prod = scratch + pixels * k;  // [pixels, out_per_group]
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t b = item / s.groups, g = item % s.groups;
    im2col(x + b * s.c_in * s.h_in * s.w_in, s, g, cols);
    const int64_t co0 = g * out_per_group;
    linear_f32(cols, pixels, k, packed + co0 * row_bytes, scale_bits + co0 * groups,
               zeros + co0 * groups, bias ? bias + co0 : nullptr, out_per_group, group_size,
               bits, 0, out_per_group, prod);
    for (int64_t c = 0; c < out_per_group; ++c) {
      float* out = y + (b * s.c_out + co0 + c) * pixels;
      for (int64_t p = 0; p < pixels; ++p) out[p] = prod[p * out_per_group + c];
    }
  }
}

}  // namespace kernels
}  // namespace qpart
