// Uniform asymmetric group quantizer with fp16 scales and integer zero points.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dispatch.h"
#include "isa_table.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {

Status group_params(const float* x, int64_t n, int bits, uint16_t* scale_bits, uint8_t* zero) {
  float lo = 0.0f, hi = 0.0f;  // the range always contains 0 so the zero point is a code
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (!std::isfinite(v)) return Status::kNonFinite;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  return detail::group_params_from_range(lo, hi, bits, scale_bits, zero);
}

namespace detail {

Status group_params_from_range(float lo, float hi, int bits, uint16_t* scale_bits, uint8_t* zero) {
  if (hi == lo) {  // all zeros
    *scale_bits = 0;
    *zero = 0;
    return Status::kOk;
  }
  const float qmax = static_cast<float>(max_code(bits));
  const float delta = (hi - lo) / qmax;
  uint16_t h = float_to_half_bits(delta);
  if (half_bits_to_float(h) < delta) h = static_cast<uint16_t>(h + 1);  // round up
  // A non-empty range whose delta underflowed to 0 in fp32 (subnormal inputs) still rounds
  // up to the smallest half; scale 0 is reserved for all-zero groups (and -lo / 0 below
  // would be NaN or Inf).
  if (h == 0) h = 1;
  if (h >= 0x7c00u) return Status::kScaleOverflow;
  const float scale = half_bits_to_float(h);
  const float z = std::min(std::max(std::nearbyint(-lo / scale), 0.0f), qmax);
  *scale_bits = h;
  *zero = static_cast<uint8_t>(z);
  return Status::kOk;
}

}  // namespace detail

Status quantize_rows(const float* x, int64_t row_begin, int64_t row_end, int64_t k,
                     int64_t group_size, int bits, uint8_t* packed, uint16_t* scale_bits,
                     uint8_t* zeros) {
  const int64_t groups = k / group_size;
  const int64_t row_bytes = packed_row_bytes(k, bits);
  const float qmax = static_cast<float>(max_code(bits));
  std::vector<uint8_t> codes(static_cast<size_t>(k));
  if (const auto quantize_group = detail::active_isa_kernels().fn.quantize_group) {
    for (int64_t r = row_begin; r < row_end; ++r) {
      const float* row = x + r * k;
      for (int64_t g = 0; g < groups; ++g) {
        const Status st =
            quantize_group(row + g * group_size, group_size, bits, &scale_bits[r * groups + g],
                           &zeros[r * groups + g], codes.data() + g * group_size);
        if (st != Status::kOk) return st;
      }
      pack_rows(codes.data(), 1, k, bits, packed + r * row_bytes);
    }
    return Status::kOk;
  }
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* row = x + r * k;
    for (int64_t g = 0; g < groups; ++g) {
      const float* src = row + g * group_size;
      uint16_t h;
      uint8_t z;
      const Status st = group_params(src, group_size, bits, &h, &z);
      if (st != Status::kOk) return st;
      scale_bits[r * groups + g] = h;
      zeros[r * groups + g] = z;
      uint8_t* dst = codes.data() + g * group_size;
      if (h == 0) {
        std::fill(dst, dst + group_size, uint8_t{0});
        continue;
      }
      const float scale = half_bits_to_float(h);
      const float zf = static_cast<float>(z);
      for (int64_t i = 0; i < group_size; ++i) {
        const float q = std::nearbyint(src[i] / scale) + zf;
        dst[i] = static_cast<uint8_t>(std::min(std::max(q, 0.0f), qmax));
      }
    }
    pack_rows(codes.data(), 1, k, bits, packed + r * row_bytes);
  }
  return Status::kOk;
}

void dequantize_rows(const uint8_t* packed, const uint16_t* scale_bits, const uint8_t* zeros,
                     int64_t row_begin, int64_t row_end, int64_t k, int64_t group_size, int bits,
                     float* out) {
  const int64_t groups = k / group_size;
  const int64_t row_bytes = packed_row_bytes(k, bits);
  std::vector<uint8_t> codes(static_cast<size_t>(k));
  for (int64_t r = row_begin; r < row_end; ++r) {
    unpack_rows(packed + r * row_bytes, 1, k, bits, codes.data());
    float* dst = out + r * k;
    for (int64_t g = 0; g < groups; ++g) {
      const float scale = half_bits_to_float(scale_bits[r * groups + g]);
      const float zero = static_cast<float>(zeros[r * groups + g]);
      for (int64_t i = g * group_size; i < (g + 1) * group_size; ++i) {
        dst[i] = (static_cast<float>(codes[i]) - zero) * scale;
      }
    }
  }
}

}  // namespace kernels
}  // namespace qpart
